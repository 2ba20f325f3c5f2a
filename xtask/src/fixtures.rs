//! Deterministic SmolLM3-architecture GGUF generator (`cargo xtask gen-fixtures`).
//!
//! See `fixtures/README.md` for the list of fixtures. Everything a file contains is a function of
//! its [`FixtureSpec`]: weights come from a seeded, platform-independent generator (see
//! [`rng`]), each tensor from its own stream keyed by (seed, tensor name), so files that share a
//! seed and shapes (tiny f32 / q8_0 / q4_k_m) share the same underlying f32 weights.
//!
//! The same code writes a GGUF with the real SmolLM3-3B shapes ([`smollm3_3b_spec`]) for
//! benchmarks.

pub mod rng;
pub mod vocab;

use std::borrow::Cow;
use std::fs::File;
use std::io::{BufWriter, Read, Write};
use std::path::{Path, PathBuf};

use anyhow::{bail, ensure, Context, Result};
use candle_core::quantized::gguf_file::{self, Value};
use candle_core::quantized::{GgmlDType, QStorage, QTensor};
use candle_core::{Device, Tensor};
use rayon::prelude::*;
use sha2::{Digest, Sha256};

pub use vocab::{build_vocab, Vocab, VocabChoice, SMALL_VOCAB_BASE};

/// The official SmolLM3 chat template that the fixtures store in `tokenizer.chat_template`:
/// `smollm3-chat`'s copy (`OFFICIAL_TEMPLATE`), so there is one. It is verbatim from section 3
/// of the project's SmolLM3 spec (the initial-release template). The spec's code block ends with
/// the line `{%- endif -%}` and no blank line, so the string has NO trailing newline; it ends in
/// `{%- endif -%}`. (A trailing newline would not change any rendering with `trim_blocks`, but
/// the bytes are kept as shown.)
pub const SMOLLM3_CHAT_TEMPLATE: &str = smollm3_chat::OFFICIAL_TEMPLATE;

/// Default output directory, relative to the workspace root.
pub const DEFAULT_OUT_DIR: &str = "fixtures/gguf";

/// Weight format of a fixture.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QuantScheme {
    /// Every tensor F32 (`general.file_type` 0).
    F32,
    /// Matrices and token_embd Q8_0, norms F32 (file_type 7).
    Q8_0,
    /// llama-quantize's Q4_K_M mix (file_type 15).
    Q4KM,
}

impl QuantScheme {
    /// llama.cpp `llama_ftype`.
    pub fn file_type(self) -> u32 {
        match self {
            QuantScheme::F32 => 0,
            QuantScheme::Q8_0 => 7,
            QuantScheme::Q4KM => 15,
        }
    }
}

/// YaRN rope-scaling metadata (`{arch}.rope.scaling.*`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct YarnSpec {
    pub factor: f32,
    pub original_context_length: u32,
}

/// Everything that determines one generated GGUF.
#[derive(Debug, Clone, PartialEq)]
pub struct FixtureSpec {
    /// Output file name, e.g. `smollm3-tiny-f32.gguf`.
    pub file_name: String,
    /// `general.name`.
    pub model_name: String,
    /// `general.architecture` and prefix of the hyper-parameter keys.
    pub arch: String,
    pub vocab: VocabChoice,
    pub hidden: usize,
    pub ffn: usize,
    pub layers: usize,
    pub heads: usize,
    pub kv_heads: usize,
    /// `{arch}.context_length`.
    pub ctx: u32,
    pub rope_theta: f32,
    pub rms_eps: f32,
    /// Tied embeddings: no `output.weight`.
    pub tied: bool,
    pub quant: QuantScheme,
    pub yarn: Option<YarnSpec>,
    pub seed: u64,
}

/// Standard deviation of matrix weights.
pub const WEIGHT_STD: f64 = 0.08;
/// RMSNorm weights are `1 + N(0, NORM_STD)`.
pub const NORM_STD: f64 = 0.1;

impl FixtureSpec {
    /// The common tiny shape (README: 256 / 512 / 8 layers, 8 / 2 heads, ctx 1024).
    pub fn tiny(file_name: &str, quant: QuantScheme, seed: u64) -> Self {
        Self {
            file_name: file_name.to_string(),
            model_name: file_name.trim_end_matches(".gguf").to_string(),
            arch: "smollm3".to_string(),
            vocab: VocabChoice::Small {
                n_base: SMALL_VOCAB_BASE,
            },
            hidden: 256,
            ffn: 512,
            layers: 8,
            heads: 8,
            kv_heads: 2,
            ctx: 1024,
            rope_theta: 10000.0,
            rms_eps: 1e-6,
            tied: true,
            quant,
            yarn: None,
            seed,
        }
    }

    pub fn head_dim(&self) -> usize {
        self.hidden / self.heads
    }

    pub fn vocab_size(&self) -> usize {
        self.vocab.size()
    }

    /// Checks the shapes before anything is written.
    pub fn validate(&self) -> Result<()> {
        let name = &self.file_name;
        ensure!(
            !name.is_empty() && !name.contains('/') && name.ends_with(".gguf"),
            "{name}: file name must be a plain *.gguf name"
        );
        ensure!(!self.arch.is_empty(), "{name}: empty arch");
        ensure!(
            self.hidden > 0
                && self.ffn > 0
                && self.layers > 0
                && self.heads > 0
                && self.kv_heads > 0,
            "{name}: sizes must be positive"
        );
        ensure!(
            self.hidden.is_multiple_of(self.heads),
            "{name}: hidden {} not divisible by heads {}",
            self.hidden,
            self.heads
        );
        ensure!(
            self.heads.is_multiple_of(self.kv_heads),
            "{name}: heads {} not a multiple of kv_heads {}",
            self.heads,
            self.kv_heads
        );
        ensure!(
            self.head_dim().is_multiple_of(2),
            "{name}: head_dim must be even for RoPE"
        );
        ensure!(
            self.ctx > 0 && self.rope_theta > 0.0 && self.rms_eps > 0.0,
            "{name}: bad ctx/theta/eps"
        );
        if let Some(y) = self.yarn {
            ensure!(
                y.factor > 0.0 && y.original_context_length > 0,
                "{name}: bad yarn parameters"
            );
        }
        for t in tensor_plan(self) {
            if let [_, cols] = t.shape[..] {
                let block = t.dtype.block_size();
                ensure!(
                    cols % block == 0,
                    "{name}: {} has {cols} input features, not a multiple of the {:?} block size \
                     {block} (llama-quantize would fall back to another type)",
                    t.name,
                    t.dtype
                );
            }
        }
        Ok(())
    }
}

/// The six fixtures of `fixtures/README.md`.
pub fn fixture_specs() -> Vec<FixtureSpec> {
    let gqa2 = FixtureSpec {
        kv_heads: 4,
        tied: false,
        ..FixtureSpec::tiny("smollm3-tiny-gqa2-f32.gguf", QuantScheme::F32, 2)
    };
    let yarn = FixtureSpec {
        yarn: Some(YarnSpec {
            factor: 4.0,
            original_context_length: 256,
        }),
        ..FixtureSpec::tiny("smollm3-tiny-yarn-f32.gguf", QuantScheme::F32, 3)
    };
    let vocab128k = FixtureSpec {
        vocab: VocabChoice::Full,
        hidden: 64,
        ffn: 128,
        layers: 4,
        heads: 4,
        kv_heads: 1,
        ctx: 512,
        ..FixtureSpec::tiny("smollm3-vocab128k-q8_0.gguf", QuantScheme::Q8_0, 4)
    };
    vec![
        // The three tiny files share seed 1, hence identical f32 weights before quantization.
        FixtureSpec::tiny("smollm3-tiny-f32.gguf", QuantScheme::F32, 1),
        FixtureSpec::tiny("smollm3-tiny-q8_0.gguf", QuantScheme::Q8_0, 1),
        FixtureSpec::tiny("smollm3-tiny-q4_k_m.gguf", QuantScheme::Q4KM, 1),
        gqa2,
        yarn,
        vocab128k,
    ]
}

/// Random weights with the real SmolLM3-3B shapes and Q4_K_M mix (~1.9 GB), for benchmarks.
pub fn smollm3_3b_spec() -> FixtureSpec {
    FixtureSpec {
        vocab: VocabChoice::Full,
        hidden: 2048,
        ffn: 11008,
        layers: 36,
        heads: 16,
        kv_heads: 4,
        ctx: 65536,
        rope_theta: 5_000_000.0,
        ..FixtureSpec::tiny("smollm3-3b-random-q4_k_m.gguf", QuantScheme::Q4KM, 3_000)
    }
}

/// How a tensor's values are drawn.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TensorKind {
    /// RMSNorm weight: `1 + N(0, NORM_STD)`.
    Norm,
    /// Weight matrix `N(0, WEIGHT_STD)`, generated in HF layout; `Some(n)` = rows are then
    /// permuted with llama.cpp's `permute(w, n, n)` (Q: n = heads, K: n = kv_heads).
    Matrix { permute_heads: Option<usize> },
}

/// One tensor of the file: name, candle shape (`(out, in)` for matrices; GGUF stores the dims
/// reversed), value kind and storage type.
#[derive(Debug, Clone, PartialEq)]
pub struct TensorPlan {
    pub name: String,
    pub shape: Vec<usize>,
    pub kind: TensorKind,
    pub dtype: GgmlDType,
}

/// llama-quantize's `use_more_bits(i_layer, n_layers)`.
pub fn use_more_bits(i: usize, n: usize) -> bool {
    i < n / 8 || i >= 7 * n / 8 || (i as i64 - (n / 8) as i64) % 3 == 2
}

/// The storage type of a matrix under `scheme`, following llama-quantize for Q4_K_M.
fn matrix_dtype(spec: &FixtureSpec, name: &str, layer: Option<usize>) -> GgmlDType {
    match spec.quant {
        QuantScheme::F32 => GgmlDType::F32,
        QuantScheme::Q8_0 => GgmlDType::Q8_0,
        QuantScheme::Q4KM => {
            let is_output = name == "output.weight" || (spec.tied && name == "token_embd.weight");
            let more_bits = |l: usize| use_more_bits(l, spec.layers);
            match layer {
                _ if is_output => GgmlDType::Q6K,
                Some(l)
                    if (name.ends_with(".attn_v.weight") || name.ends_with(".ffn_down.weight"))
                        && more_bits(l) =>
                {
                    GgmlDType::Q6K
                }
                _ => GgmlDType::Q4K,
            }
        }
    }
}

/// All tensors of the file, in file order (token_embd, blocks, output_norm, [output]).
pub fn tensor_plan(spec: &FixtureSpec) -> Vec<TensorPlan> {
    let (h, f, hd) = (spec.hidden, spec.ffn, spec.head_dim());
    let (nq, nkv) = (spec.heads * hd, spec.kv_heads * hd);
    let norm = |name: String| TensorPlan {
        name,
        shape: vec![h],
        kind: TensorKind::Norm,
        dtype: GgmlDType::F32,
    };
    let matrix =
        |name: String, rows: usize, cols: usize, permute: Option<usize>, layer: Option<usize>| {
            let dtype = matrix_dtype(spec, &name, layer);
            TensorPlan {
                name,
                shape: vec![rows, cols],
                kind: TensorKind::Matrix {
                    permute_heads: permute,
                },
                dtype,
            }
        };
    let mut plan = vec![matrix(
        "token_embd.weight".into(),
        spec.vocab_size(),
        h,
        None,
        None,
    )];
    for l in 0..spec.layers {
        let p = |s: &str| format!("blk.{l}.{s}.weight");
        plan.push(norm(p("attn_norm")));
        plan.push(matrix(p("attn_q"), nq, h, Some(spec.heads), Some(l)));
        plan.push(matrix(p("attn_k"), nkv, h, Some(spec.kv_heads), Some(l)));
        plan.push(matrix(p("attn_v"), nkv, h, None, Some(l)));
        plan.push(matrix(p("attn_output"), h, nq, None, Some(l)));
        plan.push(norm(p("ffn_norm")));
        plan.push(matrix(p("ffn_gate"), f, h, None, Some(l)));
        plan.push(matrix(p("ffn_up"), f, h, None, Some(l)));
        plan.push(matrix(p("ffn_down"), h, f, None, Some(l)));
    }
    plan.push(norm("output_norm.weight".into()));
    if !spec.tied {
        plan.push(matrix(
            "output.weight".into(),
            spec.vocab_size(),
            h,
            None,
            None,
        ));
    }
    plan
}

/// The f32 values of a tensor as stored in the file (after the Q/K permutation, before
/// quantization). Row-major in the candle shape.
pub fn tensor_values(spec: &FixtureSpec, t: &TensorPlan) -> Vec<f32> {
    let n: usize = t.shape.iter().product();
    let mut data = vec![0f32; n];
    let key = rng::tensor_key(spec.seed, &t.name);
    match t.kind {
        TensorKind::Norm => rng::fill_normal(&mut data, key, 1.0, NORM_STD),
        TensorKind::Matrix { permute_heads } => {
            rng::fill_normal(&mut data, key, 0.0, WEIGHT_STD);
            if let Some(n_head) = permute_heads {
                data = rng::permute_qk(&data, t.shape[0], t.shape[1], n_head);
            }
        }
    }
    data
}

/// Rows per parallel quantization job (quantized blocks never cross rows, so quantizing row
/// ranges separately gives the same bytes as quantizing the whole matrix).
const QUANT_JOB_ELEMS: usize = 1 << 20;

/// Quantizes (or wraps, for F32) row-major `data` of `shape` into a QTensor.
pub fn quantize(data: Vec<f32>, shape: &[usize], dtype: GgmlDType) -> Result<QTensor> {
    let dev = Device::Cpu;
    let rows = if shape.len() == 2 { shape[0] } else { 1 };
    let cols = data.len() / rows.max(1);
    if dtype == GgmlDType::F32 || data.len() <= QUANT_JOB_ELEMS || shape.len() != 2 {
        let t = Tensor::from_vec(data, shape, &dev)?;
        return Ok(QTensor::quantize(&t, dtype)?);
    }
    let rows_per_job = (QUANT_JOB_ELEMS / cols).max(1);
    let parts: Vec<Vec<u8>> = data
        .par_chunks(rows_per_job * cols)
        .map(|chunk| -> Result<Vec<u8>> {
            let t = Tensor::from_slice(chunk, (chunk.len() / cols, cols), &dev)?;
            Ok(QTensor::quantize(&t, dtype)?.data()?.into_owned())
        })
        .collect::<Result<_>>()?;
    drop(data);
    let bytes = parts.concat();
    drop(parts);
    let storage = QStorage::from_data(Cow::Owned(bytes), &dev, dtype)?;
    Ok(QTensor::new(storage, shape)?)
}

/// GGUF metadata in file order.
pub fn metadata(spec: &FixtureSpec, vocab: &Vocab) -> Vec<(String, Value)> {
    let a = &spec.arch;
    let u32v = |x: usize| Value::U32(u32::try_from(x).expect("hyper-parameter exceeds u32"));
    let mut md: Vec<(String, Value)> = vec![
        ("general.architecture".into(), Value::String(a.clone())),
        (
            "general.name".into(),
            Value::String(spec.model_name.clone()),
        ),
        ("general.alignment".into(), Value::U32(32)),
        (
            "general.file_type".into(),
            Value::U32(spec.quant.file_type()),
        ),
        ("general.quantization_version".into(), Value::U32(2)),
        (format!("{a}.vocab_size"), u32v(spec.vocab_size())),
        (format!("{a}.context_length"), Value::U32(spec.ctx)),
        (format!("{a}.embedding_length"), u32v(spec.hidden)),
        (format!("{a}.feed_forward_length"), u32v(spec.ffn)),
        (format!("{a}.block_count"), u32v(spec.layers)),
        (format!("{a}.attention.head_count"), u32v(spec.heads)),
        (format!("{a}.attention.head_count_kv"), u32v(spec.kv_heads)),
        (format!("{a}.rope.freq_base"), Value::F32(spec.rope_theta)),
        (format!("{a}.rope.dimension_count"), u32v(spec.head_dim())),
        (
            format!("{a}.attention.layer_norm_rms_epsilon"),
            Value::F32(spec.rms_eps),
        ),
    ];
    if let Some(y) = spec.yarn {
        md.push((
            format!("{a}.rope.scaling.type"),
            Value::String("yarn".into()),
        ));
        md.push((format!("{a}.rope.scaling.factor"), Value::F32(y.factor)));
        md.push((
            format!("{a}.rope.scaling.original_context_length"),
            Value::U32(y.original_context_length),
        ));
    }
    let strings = |v: &[String]| Value::Array(v.iter().map(|s| Value::String(s.clone())).collect());
    md.extend([
        ("tokenizer.ggml.model".into(), Value::String("gpt2".into())),
        (
            "tokenizer.ggml.pre".into(),
            Value::String("smaug-bpe".into()),
        ),
        ("tokenizer.ggml.tokens".into(), strings(&vocab.tokens)),
        (
            "tokenizer.ggml.token_type".into(),
            Value::Array(vocab.token_types.iter().map(|&t| Value::I32(t)).collect()),
        ),
        ("tokenizer.ggml.merges".into(), strings(&vocab.merges)),
        (
            "tokenizer.ggml.bos_token_id".into(),
            Value::U32(vocab.bos_id),
        ),
        (
            "tokenizer.ggml.eos_token_id".into(),
            Value::U32(vocab.eos_id),
        ),
        (
            "tokenizer.ggml.padding_token_id".into(),
            Value::U32(vocab.pad_id),
        ),
        ("tokenizer.ggml.add_bos_token".into(), Value::Bool(false)),
        (
            "tokenizer.chat_template".into(),
            Value::String(SMOLLM3_CHAT_TEMPLATE.into()),
        ),
    ]);
    md
}

/// Runs `write` on a temporary file in the directory of `path` and renames it to `path` only
/// if `write` succeeded; on error the temporary file is removed and `path` is left untouched.
pub fn write_atomic<F>(path: &Path, write: F) -> Result<()>
where
    F: FnOnce(&mut BufWriter<&File>) -> Result<()>,
{
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let file_name = path
        .file_name()
        .with_context(|| format!("{}: no file name", path.display()))?
        .to_string_lossy();
    let tmp = tempfile::Builder::new()
        .prefix(&format!(".{file_name}."))
        .suffix(".tmp")
        .tempfile_in(dir)
        .with_context(|| format!("creating a temporary file in {}", dir.display()))?;
    {
        let mut w = BufWriter::with_capacity(1 << 20, tmp.as_file());
        write(&mut w)?;
        w.flush()?;
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        tmp.as_file()
            .set_permissions(std::fs::Permissions::from_mode(0o644))?;
    }
    tmp.as_file().sync_all()?;
    tmp.persist(path)
        .with_context(|| format!("renaming the temporary file to {}", path.display()))?;
    Ok(())
}

/// Generates the GGUF for `spec` into `out_dir`, returning its path.
pub fn generate(spec: &FixtureSpec, out_dir: &Path) -> Result<PathBuf> {
    spec.validate()?;
    let vocab =
        build_vocab(spec.vocab).with_context(|| format!("{}: vocabulary", spec.file_name))?;
    let md = metadata(spec, &vocab);
    drop(vocab);
    let plan = tensor_plan(spec);
    let path = out_dir.join(&spec.file_name);
    write_atomic(&path, |w| {
        // Tensors are generated one at a time; only the (quantized) results are kept until
        // candle's writer, which needs them all at once, has written them.
        let mut tensors = Vec::with_capacity(plan.len());
        for t in &plan {
            let q = quantize(tensor_values(spec, t), &t.shape, t.dtype)
                .with_context(|| format!("{}: quantizing {}", spec.file_name, t.name))?;
            tensors.push((t.name.as_str(), q));
        }
        let md_refs: Vec<(&str, &Value)> = md.iter().map(|(k, v)| (k.as_str(), v)).collect();
        let t_refs: Vec<(&str, &QTensor)> = tensors.iter().map(|(n, q)| (*n, q)).collect();
        gguf_file::write(w, &md_refs, &t_refs)
            .with_context(|| format!("{}: writing GGUF", spec.file_name))?;
        Ok(())
    })?;
    Ok(path)
}

/// Name, size and sha256 of a generated file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileDigest {
    pub path: PathBuf,
    pub size: u64,
    pub sha256: String,
}

pub fn digest_file(path: &Path) -> Result<FileDigest> {
    let mut f = File::open(path).with_context(|| format!("opening {}", path.display()))?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut size = 0u64;
    loop {
        let n = f.read(&mut buf)?;
        if n == 0 {
            break;
        }
        size += n as u64;
        hasher.update(&buf[..n]);
    }
    let sha256 = hasher
        .finalize()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    Ok(FileDigest {
        path: path.to_path_buf(),
        size,
        sha256,
    })
}

/// Generates every spec in `specs` into `out_dir`.
pub fn generate_all(specs: &[FixtureSpec], out_dir: &Path) -> Result<Vec<FileDigest>> {
    let mut names: Vec<&str> = specs.iter().map(|s| s.file_name.as_str()).collect();
    names.sort_unstable();
    if names.windows(2).any(|w| w[0] == w[1]) {
        bail!("duplicate fixture file names");
    }
    specs
        .iter()
        .map(|s| generate(s, out_dir).and_then(|p| digest_file(&p)))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn use_more_bits_matches_llama_quantize() {
        // n = 8: n/8 = 1, 7n/8 = 7 -> layers 0, 7 and (i-1)%3 == 2 -> 3, 6.
        let v: Vec<usize> = (0..8).filter(|&i| use_more_bits(i, 8)).collect();
        assert_eq!(v, [0, 3, 6, 7]);
        // n = 36 (SmolLM3-3B): 0..4, 31..36 and (i-4)%3 == 2.
        let v: Vec<usize> = (0..36).filter(|&i| use_more_bits(i, 36)).collect();
        assert_eq!(
            v,
            [0, 1, 2, 3, 6, 9, 12, 15, 18, 21, 24, 27, 30, 31, 32, 33, 34, 35]
        );
    }

    #[test]
    fn quantize_in_row_jobs_equals_whole_tensor() {
        let rows = 4096 + 3;
        let cols = 512;
        let mut data = vec![0f32; rows * cols];
        rng::fill_normal(&mut data, 7, 0.0, 0.08);
        assert!(data.len() > QUANT_JOB_ELEMS);
        for dtype in [GgmlDType::Q8_0, GgmlDType::Q4K, GgmlDType::Q6K] {
            let whole = QTensor::quantize(
                &Tensor::from_vec(data.clone(), (rows, cols), &Device::Cpu).unwrap(),
                dtype,
            )
            .unwrap();
            let jobs = quantize(data.clone(), &[rows, cols], dtype).unwrap();
            assert_eq!(jobs.dtype(), dtype);
            assert_eq!(jobs.shape().dims(), &[rows, cols]);
            assert_eq!(whole.data().unwrap(), jobs.data().unwrap(), "{dtype:?}");
        }
    }

    #[test]
    fn chat_template_is_verbatim_without_trailing_newline() {
        let t = SMOLLM3_CHAT_TEMPLATE;
        assert!(
            t.starts_with("{# ───── defaults ───── #}\n{%- if enable_thinking is not defined -%}")
        );
        assert!(t.ends_with("{%- endif -%}\n{%- endif -%}"));
        assert!(!t.ends_with('\n'));
        assert!(!t.contains('\r'));
        assert!(t.contains("{% generation %}"));
        assert!(t.contains("Knowledge Cutoff Date: June 2025"));
    }

    #[test]
    fn specs_are_valid_and_match_readme() {
        let specs = fixture_specs();
        let names: Vec<&str> = specs.iter().map(|s| s.file_name.as_str()).collect();
        assert_eq!(
            names,
            [
                "smollm3-tiny-f32.gguf",
                "smollm3-tiny-q8_0.gguf",
                "smollm3-tiny-q4_k_m.gguf",
                "smollm3-tiny-gqa2-f32.gguf",
                "smollm3-tiny-yarn-f32.gguf",
                "smollm3-vocab128k-q8_0.gguf",
            ]
        );
        for s in &specs {
            s.validate().unwrap();
        }
        smollm3_3b_spec().validate().unwrap();
        assert_eq!(specs[0].head_dim(), 32);
        assert_eq!(specs[5].head_dim(), 16);
        assert_eq!(specs[5].vocab_size(), 128_256);
        // tiny f32 / q8_0 / q4_k_m share weights; the others use other seeds.
        assert!(specs[..3].iter().all(|s| s.seed == specs[0].seed));
        assert!(specs[3..].iter().all(|s| s.seed != specs[0].seed));
        assert!(!specs[3].tied && specs.iter().filter(|s| !s.tied).count() == 1);
    }

    #[test]
    fn invalid_specs_are_rejected() {
        let ok = FixtureSpec::tiny("x.gguf", QuantScheme::Q4KM, 1);
        ok.validate().unwrap();
        // Q4_K needs rows of 256 values.
        assert!(FixtureSpec {
            hidden: 128,
            heads: 4,
            ..ok.clone()
        }
        .validate()
        .is_err());
        assert!(FixtureSpec {
            kv_heads: 3,
            ..ok.clone()
        }
        .validate()
        .is_err());
        assert!(FixtureSpec {
            heads: 7,
            ..ok.clone()
        }
        .validate()
        .is_err());
        assert!(FixtureSpec {
            file_name: "../x.gguf".into(),
            ..ok.clone()
        }
        .validate()
        .is_err());
    }
}
