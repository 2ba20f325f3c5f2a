//! The SmolLM3 / Llama decoder over candle's quantized matmuls.
//!
//! Weights stay in the GGUF's own layout: Q and K rows are in llama.cpp's permuted order, so RoPE
//! is applied to interleaved pairs (`rope_i`), which is exactly HF's half-split RoPE on the
//! un-permuted weights. NoPE layers apply no rotation at all.

use std::ops::Range;
use std::path::Path;

use candle_core::quantized::GgmlDType;
use candle_core::{Device, Tensor};

use crate::cache::{KvCache, KvType};
use crate::config::{Config, RopeScaling};
use crate::error::{ModelError, Result};
use crate::gguf::{GgufFile, WeightSummary};
use crate::linear::{check_usable, dense, with_f32_values, Embedding, QLinear};
use crate::rope::RopeTables;

/// Options that change how a model is loaded.
#[derive(Debug, Clone, Default)]
pub struct LoadOptions {
    /// Replaces the rope scaling stored in the file: `Some(Some(s))` forces `s`,
    /// `Some(None)` turns scaling off, `None` keeps the file's setting.
    pub rope_scaling: Option<Option<RopeScaling>>,
    /// How [`Model::new_cache`] stores keys and values (f16 unless set).
    pub kv_type: KvType,
    /// The most prompt tokens one pass through the layers takes ([`DEFAULT_PROMPT_SLICE`]
    /// unless set; llama.cpp's `--ubatch-size`): a longer prompt runs in slices of this many
    /// tokens, each attending to the cache the slices before it filled.
    pub prompt_slice: Option<usize>,
}

/// Prompt tokens per pass through the layers unless [`LoadOptions::prompt_slice`] says
/// otherwise; llama.cpp's default `n_ubatch` too.
///
/// Why slices: a pass holds its activations as f32, and the FFN's three `[tokens, 11008]`
/// matrices of SmolLM3-3B take 132 MB per 1000 tokens. A 4000-token prompt in one pass
/// peaked at 3028 MB RSS (file 1915 MB, f16 cache 302 MB); in slices of 512, 2358 MB, at
/// 36.0 tok/s against 33.5 (Intel Xeon, 2 threads, `cargo xtask bench --prompt 4000`). The
/// prompt GEMM keeps its speed: it unpacks each tile of 16 weight rows once per call and runs
/// it over every row of the slice, and a slice reads the weights once more than one pass
/// would, 1.9 GB in about 0.1 s against about 10 s of arithmetic.
pub const DEFAULT_PROMPT_SLICE: usize = 512;

/// A loaded model. Immutable during inference: share it (e.g. in an `Arc`) and give each
/// conversation its own [`KvCache`].
pub struct Model {
    config: Config,
    embedding: Embedding,
    layers: Vec<DecoderLayer>,
    output_norm: Tensor,
    lm_head: QLinear,
    rope: RopeTables,
    summary: WeightSummary,
    kv_type: KvType,
    prompt_slice: usize,
}

struct Attention {
    q: QLinear,
    k: QLinear,
    v: QLinear,
    o: QLinear,
    use_rope: bool,
}

struct Mlp {
    gate: QLinear,
    up: QLinear,
    down: QLinear,
}

struct DecoderLayer {
    attn_norm: Tensor,
    attn: Attention,
    ffn_norm: Tensor,
    mlp: Mlp,
}

impl Model {
    /// Loads a GGUF file with default options.
    pub fn load(path: impl AsRef<Path>) -> Result<Self> {
        Self::load_with(path, &LoadOptions::default())
    }

    pub fn load_with(path: impl AsRef<Path>, options: &LoadOptions) -> Result<Self> {
        let gguf = GgufFile::open(path.as_ref())?;
        Self::from_gguf(&gguf, options)
    }

    /// Builds the model from an open GGUF file, checking every tensor's presence and shape.
    pub fn from_gguf(gguf: &GgufFile, options: &LoadOptions) -> Result<Self> {
        let prompt_slice = options.prompt_slice.unwrap_or(DEFAULT_PROMPT_SLICE);
        if prompt_slice == 0 {
            return Err(ModelError::InvalidOption(
                "the prompt slice must be at least one token".into(),
            ));
        }
        let mut config = Config::from_gguf(gguf)?;
        if let Some(scaling) = options.rope_scaling {
            config.set_rope_scaling(scaling)?;
        }
        let c = &config;
        let (h, hd) = (c.hidden_size, c.head_dim);
        // Every tensor is located (shape and bounds checked) before any is used.
        let matrix = |name: &str, shape: [usize; 2]| -> Result<QLinear> {
            let (dtype, bytes) = gguf.tensor_bytes(name, &shape)?;
            check_usable(name, dtype, "a matrix")?;
            QLinear::new(bytes, dtype, (shape[0], shape[1]))
        };

        let (embd_type, embd) = gguf.tensor_bytes("token_embd.weight", &[c.vocab_size, h])?;
        check_usable("token_embd.weight", embd_type, "the token embedding")?;
        let (embedding, tied_head) = match embd_type {
            GgmlDType::F32 | GgmlDType::F16 | GgmlDType::BF16 => {
                let table = dense(&embd, embd_type, &[c.vocab_size, h])?;
                (Embedding::Dense(table.clone()), QLinear::Dense(table))
            }
            _ => (
                Embedding::Quantized {
                    table: embd.clone(),
                    dtype: embd_type,
                    hidden: h,
                },
                QLinear::new(embd, embd_type, (c.vocab_size, h))?,
            ),
        };
        let lm_head = if c.tied_embeddings {
            tied_head
        } else {
            matrix("output.weight", [c.vocab_size, h])?
        };
        let output_norm = vector(gguf, "output_norm.weight", h)?;

        let mut layers = Vec::with_capacity(c.num_layers);
        for i in 0..c.num_layers {
            let m = |suffix: &str, shape: [usize; 2]| -> Result<QLinear> {
                matrix(&format!("blk.{i}.{suffix}.weight"), shape)
            };
            let attn = Attention {
                q: m("attn_q", [c.num_heads * hd, h])?,
                k: m("attn_k", [c.num_kv_heads * hd, h])?,
                v: m("attn_v", [c.num_kv_heads * hd, h])?,
                o: m("attn_output", [h, c.num_heads * hd])?,
                use_rope: c.uses_rope(i),
            };
            let mlp = Mlp {
                gate: m("ffn_gate", [c.intermediate_size, h])?,
                up: m("ffn_up", [c.intermediate_size, h])?,
                down: m("ffn_down", [h, c.intermediate_size])?,
            };
            layers.push(DecoderLayer {
                attn_norm: vector(gguf, &format!("blk.{i}.attn_norm.weight"), h)?,
                attn,
                ffn_norm: vector(gguf, &format!("blk.{i}.ffn_norm.weight"), h)?,
                mlp,
            });
        }
        let rope = RopeTables::new(&config);
        Ok(Self {
            embedding,
            layers,
            output_norm,
            lm_head,
            rope,
            summary: gguf.weight_summary(),
            config,
            kv_type: options.kv_type,
            prompt_slice,
        })
    }

    pub fn config(&self) -> &Config {
        &self.config
    }

    pub fn weights(&self) -> &WeightSummary {
        &self.summary
    }

    /// The most tokens one pass through the layers takes ([`LoadOptions::prompt_slice`]):
    /// longer prompts run in slices, and a [`Model::forward_batch`] takes at most this many
    /// tokens in all.
    pub fn prompt_slice(&self) -> usize {
        self.prompt_slice
    }

    /// A cache for up to `context` tokens, of the type the model was loaded with
    /// ([`LoadOptions::kv_type`]); `context` must not exceed [`Config::max_context`].
    pub fn new_cache(&self, context: usize) -> Result<KvCache> {
        self.new_cache_of(context, self.kv_type)
    }

    /// [`Model::new_cache`] with keys and values stored as `kv_type`.
    pub fn new_cache_of(&self, context: usize, kv_type: KvType) -> Result<KvCache> {
        let limit = self.config.max_context();
        if context > limit {
            return Err(ModelError::ContextTooLarge {
                requested: context,
                limit,
                hint: if self.config.rope_scaling.is_none() {
                    " (YaRN rope scaling can extend it)"
                } else {
                    ""
                },
            });
        }
        if context == 0 {
            return Err(ModelError::InvalidOption("context must be positive".into()));
        }
        KvCache::new(
            self.config.num_layers,
            self.config.num_kv_heads,
            self.config.head_dim,
            context,
            kv_type,
        )
    }

    /// Runs `tokens` after what `cache` holds and returns the logits of every new position,
    /// `[tokens.len(), vocab_size]`.
    pub fn forward(&self, tokens: &[u32], cache: &mut KvCache) -> Result<Tensor> {
        let hidden = self.hidden_states(tokens, cache, Keep::All, &|| false)?;
        self.lm_head.forward(&hidden)
    }

    /// Like [`Model::forward`] but returns only the last position's logits, `[vocab_size]`:
    /// prefill then skips the vocabulary projection for every other position.
    pub fn forward_last(&self, tokens: &[u32], cache: &mut KvCache) -> Result<Tensor> {
        self.forward_last_interruptible(tokens, cache, &|| false)
    }

    /// [`Model::forward_last`] that asks `interrupt` before each layer of each slice and
    /// stops with [`ModelError::Interrupted`] when it says yes, leaving `cache` as it was.
    ///
    /// Why: a long prompt is the one call that takes seconds (512 tokens of SmolLM3-3B take
    /// about 10 s on two cores), so a cancel (a closed connection, Ctrl-C) that waited for the
    /// call to end would wait that long; between layers it waits for one layer, about 1/36
    /// of the call.
    pub fn forward_last_interruptible(
        &self,
        tokens: &[u32],
        cache: &mut KvCache,
        interrupt: &dyn Fn() -> bool,
    ) -> Result<Tensor> {
        let hidden = self.hidden_states(tokens, cache, Keep::Last, interrupt)?;
        let last = hidden.narrow(0, hidden.dim(0)? - 1, 1)?;
        Ok(self.lm_head.forward(&last)?.squeeze(0)?)
    }

    /// `tokens` not empty and every one in the vocabulary.
    fn check_tokens(&self, tokens: &[u32]) -> Result<()> {
        if tokens.is_empty() {
            return Err(ModelError::EmptyInput);
        }
        match tokens
            .iter()
            .find(|&&t| t as usize >= self.config.vocab_size)
        {
            Some(&token) => Err(ModelError::TokenOutOfRange {
                token,
                vocab_size: self.config.vocab_size,
            }),
            None => Ok(()),
        }
    }

    /// The logits of every position of `tokens` (`[tokens.len(), vocab_size]`), each bit for
    /// bit what [`Model::forward_last`] gives when the tokens are fed one at a time: the
    /// matmuls take all the rows at once (each weight read once), but attention runs a row at
    /// a time as a decode step does. For checking a draft of several tokens in one pass
    /// (speculative decoding): the answer is the same as without the draft. At most
    /// [`Model::prompt_slice`] tokens; all or nothing, as [`Model::forward`].
    pub fn forward_verify(&self, tokens: &[u32], cache: &mut KvCache) -> Result<Tensor> {
        let mut logits = self.forward_batch(&mut [BatchItem::verify(tokens, cache)])?;
        logits
            .pop()
            .ok_or_else(|| ModelError::InvalidOption("a draft check returned no logits".into()))
    }

    /// Final-norm hidden states of `tokens` (`[seq, hidden]`, or of the last slice only),
    /// appended to `cache` in slices of `prompt_slice` tokens. All or nothing: a failure (or
    /// `interrupt` saying yes before a layer) leaves `cache` as it was.
    fn hidden_states(
        &self,
        tokens: &[u32],
        cache: &mut KvCache,
        keep: Keep,
        interrupt: &dyn Fn() -> bool,
    ) -> Result<Tensor> {
        self.check_tokens(tokens)?;
        cache.reserve(tokens.len())?;
        let start = cache.len();
        let mut kept = Vec::new();
        for slice in tokens.chunks(self.prompt_slice) {
            match self.slice_hidden_states(slice, cache, interrupt) {
                Ok(hidden) => {
                    if keep == Keep::Last {
                        kept.clear();
                    }
                    kept.push(hidden);
                }
                Err(e) => {
                    cache.truncate(start)?;
                    return Err(e);
                }
            }
        }
        // `cat` of one slice is that slice; the norm is per row, so once over the kept rows.
        let hidden = Tensor::cat(&kept, 0)?;
        let eps = self.config.rms_norm_eps as f32;
        Ok(candle_nn::ops::rms_norm(&hidden, &self.output_norm, eps)?)
    }

    /// One pass through the layers: hidden states `[seq, hidden]` of `tokens` before the
    /// final norm (`tokens` checked by the caller), appended to `cache`;
    /// [`ModelError::Interrupted`] if `interrupt` says yes before a layer (the cache's length
    /// has not moved yet).
    fn slice_hidden_states(
        &self,
        tokens: &[u32],
        cache: &mut KvCache,
        interrupt: &dyn Fn() -> bool,
    ) -> Result<Tensor> {
        let segment = self.segment(0..tokens.len(), cache)?;
        self.layers_pass(tokens, &mut [segment], interrupt)
    }

    /// The rows `rows` of a pass as one sequence's new positions after what `cache` holds.
    fn segment<'c>(&self, rows: Range<usize>, cache: &'c mut KvCache) -> Result<Segment<'c>> {
        let (seq, start) = (rows.len(), cache.len());
        let (cos, sin) = self.rope.cos_sin(start, seq, &Device::Cpu)?;
        Ok(Segment {
            rows,
            mask: causal_mask(seq, start)?,
            cache,
            cos,
            sin,
            rows_as_decode: false,
        })
    }

    /// One pass through the layers over the new tokens of one or more sequences
    /// (`tokens[segment.rows]` each), `[tokens, hidden]` before the final norm. The matmuls,
    /// norms and FFN see every row at once (each weight read once for all of them); attention
    /// and the cache are each segment's own. Each segment's cache grows by its rows at the
    /// end, or not at all if `interrupt` says yes before a layer.
    fn layers_pass(
        &self,
        tokens: &[u32],
        segments: &mut [Segment<'_>],
        interrupt: &dyn Fn() -> bool,
    ) -> Result<Tensor> {
        let mut x = self.embedding.lookup(tokens)?; // [tokens, hidden]
        let eps = self.config.rms_norm_eps as f32;
        for (i, layer) in self.layers.iter().enumerate() {
            if interrupt() {
                return Err(ModelError::Interrupted);
            }
            let h = candle_nn::ops::rms_norm(&x, &layer.attn_norm, eps)?;
            let a = layer.attn.forward(&h, &self.config, i, segments)?;
            x = (x + a)?;
            let h = candle_nn::ops::rms_norm(&x, &layer.ffn_norm, eps)?;
            x = (&x + layer.mlp.forward(&h)?)?;
        }
        for segment in segments.iter_mut() {
            segment.cache.advance(segment.rows.len());
        }
        Ok(x)
    }

    /// The next tokens of several sequences in one forward pass, each after what its own
    /// cache holds: the logits of each sequence's last new position, `[vocab_size]` each, in
    /// order (of every position, `[tokens, vocab_size]`, for a draft to check,
    /// [`BatchItem::verify`]). Each weight matrix is read once for the whole batch, so while
    /// decoding (a token a sequence) a batch of a few sequences costs little more than one
    /// ([`kernels::kquant_rows`](crate::kernels::kquant_rows)); a sequence may bring a prompt
    /// chunk while the others bring a token. Every sequence's logits are bit for bit those of
    /// [`Model::forward_last`] on that sequence alone.
    ///
    /// All or nothing: an empty or out-of-vocabulary sequence, a cache without room, or more
    /// than [`LoadOptions::prompt_slice`] tokens in all is an error before any cache moves.
    pub fn forward_batch(&self, batch: &mut [BatchItem<'_>]) -> Result<Vec<Tensor>> {
        if batch.is_empty() {
            return Ok(Vec::new());
        }
        let total: usize = batch.iter().map(|item| item.tokens.len()).sum();
        if total > self.prompt_slice {
            return Err(ModelError::InvalidOption(format!(
                "a batch of {total} tokens in all: at most {} (the prompt slice) a pass",
                self.prompt_slice
            )));
        }
        for item in batch.iter_mut() {
            self.check_tokens(item.tokens)?;
            item.cache.reserve(item.tokens.len())?;
        }
        let starts: Vec<usize> = batch.iter().map(|item| item.cache.len()).collect();
        let result = self.batch_pass(batch, total);
        if result.is_err() {
            for (item, start) in batch.iter_mut().zip(starts) {
                item.cache.truncate(start)?;
            }
        }
        result
    }

    /// [`Model::forward_batch`] once its input is checked and every cache has room.
    fn batch_pass(&self, batch: &mut [BatchItem<'_>], total: usize) -> Result<Vec<Tensor>> {
        let mut tokens = Vec::with_capacity(total);
        let mut segments = Vec::with_capacity(batch.len());
        // The rows that go through the final norm and the vocabulary: each sequence's last,
        // every row of a draft to check; and where each item's start among them.
        let mut kept: Vec<u32> = Vec::with_capacity(batch.len());
        let mut starts = Vec::with_capacity(batch.len());
        for item in batch.iter_mut() {
            let rows = tokens.len()..tokens.len() + item.tokens.len();
            tokens.extend_from_slice(item.tokens);
            starts.push(kept.len());
            if item.verify {
                kept.extend(rows.clone().map(|r| r as u32));
            } else {
                kept.push((rows.end - 1) as u32);
            }
            let mut segment = self.segment(rows, item.cache)?;
            segment.rows_as_decode = item.verify;
            segments.push(segment);
        }
        let hidden = self.layers_pass(&tokens, &mut segments, &|| false)?;
        let count = kept.len();
        let index = Tensor::from_vec(kept, count, &Device::Cpu)?;
        let last = hidden.index_select(&index, 0)?;
        let eps = self.config.rms_norm_eps as f32;
        let normed = candle_nn::ops::rms_norm(&last, &self.output_norm, eps)?;
        let logits = self.lm_head.forward(&normed)?;
        batch
            .iter()
            .zip(starts)
            .map(|(item, start)| {
                Ok(if item.verify {
                    logits.narrow(0, start, item.tokens.len())?
                } else {
                    logits.get(start)?
                })
            })
            .collect()
    }
}

/// One sequence of [`Model::forward_batch`]: its new tokens and its own cache.
pub struct BatchItem<'a> {
    pub tokens: &'a [u32],
    pub cache: &'a mut KvCache,
    /// A token and its draft to check (as [`Model::forward_verify`]): attention a row at a
    /// time as decode runs it, and the logits of every row rather than the last.
    pub verify: bool,
}

impl<'a> BatchItem<'a> {
    /// New tokens; the logits of the last one.
    pub fn new(tokens: &'a [u32], cache: &'a mut KvCache) -> Self {
        BatchItem {
            tokens,
            cache,
            verify: false,
        }
    }

    /// A token and its draft; the logits of every one, bit for bit those of one at a time.
    pub fn verify(tokens: &'a [u32], cache: &'a mut KvCache) -> Self {
        BatchItem {
            tokens,
            cache,
            verify: true,
        }
    }
}

/// One sequence's rows of a pass through the layers ([`Model::layers_pass`]): where they
/// are, its cache, and the RoPE tables and causal mask of its positions.
struct Segment<'c> {
    rows: Range<usize>,
    cache: &'c mut KvCache,
    cos: Tensor,
    sin: Tensor,
    mask: Option<Tensor>,
    /// Attention a row at a time, each as a one-token decode step at its position would
    /// run it ([`Model::forward_verify`]), instead of the prompt's attention over all rows.
    rows_as_decode: bool,
}

/// Which hidden states [`Model::hidden_states`] returns.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Keep {
    All,
    /// The last slice's: only the last position's logits are wanted.
    Last,
}

impl Attention {
    /// `x`: `[rows, hidden]` -> `[rows, hidden]`: the projections over every row, attention
    /// over each segment's rows against its own cache.
    fn forward(
        &self,
        x: &Tensor,
        c: &Config,
        layer: usize,
        segments: &mut [Segment<'_>],
    ) -> Result<Tensor> {
        let [q, k, v] = QLinear::forward_shared([&self.q, &self.k, &self.v], x)?;
        let mut outs = Vec::with_capacity(segments.len());
        for segment in segments.iter_mut() {
            let (start, len) = (segment.rows.start, segment.rows.len());
            let rows = |t: &Tensor| t.narrow(0, start, len);
            outs.push(self.attend(c, layer, [rows(&q)?, rows(&k)?, rows(&v)?], segment)?);
        }
        // `cat` of one tensor is that tensor.
        self.o.forward(&Tensor::cat(&outs, 0)?)
    }

    /// One segment's attention: its rows of Q, K and V (`[seq, heads × hd]`, `[seq, kv × hd]`
    /// twice) -> `[seq, heads × hd]`, its keys and values appended to its cache.
    fn attend(
        &self,
        c: &Config,
        layer: usize,
        [q, k, v]: [Tensor; 3],
        segment: &mut Segment<'_>,
    ) -> Result<Tensor> {
        let seq = q.dim(0)?;
        let (heads, kv_heads, hd) = (c.num_heads, c.num_kv_heads, c.head_dim);
        let group = heads / kv_heads;
        let (cache, mask) = (&mut *segment.cache, segment.mask.as_ref());
        // [seq, n * hd] -> [1, n, seq, hd]
        let split = |t: Tensor, n: usize| -> Result<Tensor> {
            Ok(t.reshape((1, seq, n, hd))?.transpose(1, 2)?.contiguous()?)
        };
        let mut q = split(q, heads)?;
        let mut k = split(k, kv_heads)?;
        let v = split(v, kv_heads)?;
        if self.use_rope {
            q = candle_nn::rotary_emb::rope_i(&q, &segment.cos, &segment.sin)?;
            k = candle_nn::rotary_emb::rope_i(&k, &segment.cos, &segment.sin)?;
        }
        let positions = cache.append(layer, &k.squeeze(0)?, &v.squeeze(0)?)?;
        if segment.rows_as_decode && seq > 1 {
            return attend_rows_as_decode(&q, kv_heads, cache, layer, positions - seq);
        }
        // GQA without repeating K/V: the `group` query heads of one KV head are stacked along
        // the row axis, so each KV head is one matmul. [kv, group * seq, hd]
        let q = (q.reshape((kv_heads, group * seq, hd))? * (1.0 / (hd as f64).sqrt()))?;
        let out = match mask {
            None if seq == 1 => attend_one_token(&q, cache, layer, positions)?,
            _ => {
                let (k_all, v_all) = cache.keys_values(layer, positions)?;
                let shape = crate::kernels::prompt_attention::Shape {
                    kv_heads,
                    group,
                    seq,
                    start: positions - seq,
                    head_dim: hd,
                };
                if mask.is_some() && crate::kernels::prompt_attention::takes(shape) {
                    attend_prompt(shape, cache.kv_type(), &q, &k_all, &v_all)?
                } else {
                    attend(&q, &k_all, &v_all, mask)?
                }
            }
        }; // [kv, group * seq, hd]
        Ok(out
            .reshape((heads, seq, hd))?
            .transpose(0, 1)?
            .reshape((seq, heads * hd))?)
    }
}

/// Attention with candle's ops: `q` `[kv, group * seq, hd]` (scaled), `k_all`/`v_all`
/// `[kv, total, hd]`, `mask` `[seq, total]` -> `[kv, group * seq, hd]`.
fn attend(q: &Tensor, k_all: &Tensor, v_all: &Tensor, mask: Option<&Tensor>) -> Result<Tensor> {
    let (kv_heads, rows, _) = q.dims3()?;
    let total = k_all.dim(1)?;
    let scores = q.matmul(&k_all.t()?)?; // [kv, group * seq, total]
    let scores = match mask {
        Some(m) => {
            let seq = m.dim(0)?;
            scores
                .reshape((kv_heads, rows / seq, seq, total))?
                .broadcast_add(m)?
                .reshape((kv_heads, rows, total))?
        }
        None => scores,
    };
    let probs = candle_nn::ops::softmax_last_dim(&scores)?;
    Ok(probs.matmul(v_all)?)
}

/// [`attend`] with the causal mask, on our pool and over the causal half of the scores only
/// ([`crate::kernels::prompt_attention`]): with the same bits for an f32 cache; for an f16 one,
/// whose values carry no candle bits, with vector exponentials and the causal half of `p·V`.
fn attend_prompt(
    shape: crate::kernels::prompt_attention::Shape,
    kv_type: KvType,
    q: &Tensor,
    k_all: &Tensor,
    v_all: &Tensor,
) -> Result<Tensor> {
    let values = |t: &Tensor| -> Result<Vec<f32>> { Ok(t.flatten_all()?.to_vec1::<f32>()?) };
    let (q_values, k, v) = (values(q)?, values(k_all)?, values(v_all)?);
    let mut out = vec![0f32; q_values.len()];
    match kv_type {
        KvType::F32 => {
            crate::kernels::prompt_attention::prompt(shape, &q_values, &k, &v, &mut out)?
        }
        KvType::F16 => {
            crate::kernels::prompt_attention::prompt_rounded(shape, &q_values, &k, &v, &mut out)?
        }
    }
    Ok(Tensor::from_vec(out, q.shape(), &Device::Cpu)?)
}

/// [`attend`] for one new token (no mask) against the first `positions` cached positions of
/// `layer`, one KV head per work item on the kernels' pool, with the same bits
/// ([`crate::kernels::attention`]).
/// A draft's attention ([`Model::forward_verify`]): `q` `[1, heads, seq, hd]` (after RoPE,
/// not scaled), row `i` as the decode step at position `start + i` runs it (scaled as
/// candle's `q * scale` does, `v × scale + 0`, then [`attend_one_token`]'s kernel over
/// positions `0..=start + i`) -> `[seq, heads × hd]`. In plain loops rather than a few candle
/// ops per row: on SmolLM2 (30 layers) those made an 8-token check cost as much as two
/// decode steps.
fn attend_rows_as_decode(
    q: &Tensor,
    kv_heads: usize,
    cache: &KvCache,
    layer: usize,
    start: usize,
) -> Result<Tensor> {
    let (_, heads, seq, head_dim) = q.dims4()?;
    let group = heads / kv_heads;
    let values = q.flatten_all()?.to_vec1::<f32>()?; // [heads, seq, hd]
    let (mul, add) = ((1.0 / (head_dim as f64).sqrt()) as f32, 0f32);
    let width = heads * head_dim;
    let mut out = vec![0f32; seq * width];
    let mut row = vec![0f32; width];
    for (i, out) in out.chunks_exact_mut(width).enumerate() {
        for (h, q) in row.chunks_exact_mut(head_dim).enumerate() {
            let from = &values[(h * seq + i) * head_dim..][..head_dim];
            for (q, v) in q.iter_mut().zip(from) {
                *q = v * mul + add;
            }
        }
        decode_attention(
            cache,
            layer,
            (kv_heads, group, head_dim),
            start + i + 1,
            &row,
            out,
        )?;
    }
    Ok(Tensor::from_vec(out, (seq, width), &Device::Cpu)?)
}

fn attend_one_token(q: &Tensor, cache: &KvCache, layer: usize, positions: usize) -> Result<Tensor> {
    let (kv_heads, group, head_dim) = q.dims3()?;
    let q_values = q.flatten_all()?.to_vec1::<f32>()?;
    let mut out = vec![0f32; q_values.len()];
    let shape = (kv_heads, group, head_dim);
    decode_attention(cache, layer, shape, positions, &q_values, &mut out)?;
    Ok(Tensor::from_vec(out, shape, &Device::Cpu)?)
}

/// One token's attention over the first `positions` cached positions of `layer`
/// ([`crate::kernels::attention::decode`]): `q` and `out` `[kv_heads, group, head_dim]`.
fn decode_attention(
    cache: &KvCache,
    layer: usize,
    (kv_heads, group, head_dim): (usize, usize, usize),
    positions: usize,
    q: &[f32],
    out: &mut [f32],
) -> Result<()> {
    cache.with_layer(layer, |kv, capacity| {
        let shape = crate::kernels::attention::Shape {
            kv_heads,
            group,
            head_dim,
            positions,
            head_stride: capacity * head_dim,
        };
        crate::kernels::attention::decode(shape, q, kv, out)
    })?
}

impl Mlp {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let [gate, up] = QLinear::forward_shared([&self.gate, &self.up], x)?;
        // candle's `silu(gate) * up` with its bits, in one pass on every core (candle's
        // `silu` runs on one thread).
        let product = with_f32_values(&gate, |g| {
            with_f32_values(&up, |u| crate::kernels::elementwise::silu_times(g, u))?
        })??;
        self.down
            .forward(&Tensor::from_vec(product, gate.shape(), &Device::Cpu)?)
    }
}

/// `[seq, start + seq]` additive mask hiding future positions; `None` for a single token.
fn causal_mask(seq: usize, start: usize) -> Result<Option<Tensor>> {
    if seq == 1 {
        return Ok(None);
    }
    let total = start + seq;
    let mask: Vec<f32> = (0..seq)
        .flat_map(|i| {
            (0..total).map(move |j| {
                if j > start + i {
                    f32::NEG_INFINITY
                } else {
                    0.0
                }
            })
        })
        .collect();
    Ok(Some(Tensor::from_vec(mask, (seq, total), &Device::Cpu)?))
}

/// A 1-D float tensor (norm weights), counted in the summary.
fn vector(gguf: &GgufFile, name: &str, len: usize) -> Result<Tensor> {
    let (dtype, bytes) = gguf.tensor_bytes(name, &[len])?;
    dense(&bytes, dtype, &[len])
}
