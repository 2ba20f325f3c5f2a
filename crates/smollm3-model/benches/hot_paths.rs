//! Criterion benches of the forward pass's hot paths, on SmolLM3-3B's per-layer shapes.
//!
//! The model is written by the bench itself into a temporary directory: two decoder layers with
//! the real 3B shapes (hidden 2048, FFN 11008, 16 query / 4 KV heads of 128), every matrix Q4_K,
//! a 1024-token vocabulary. Weights are random Q4_K blocks (speed does not depend on the
//! values), so setup takes well under a second. The Q4_K matvec 2048x11008 (FFN down) is timed
//! alone too, through `QMatMul` (candle repacks Q4_K into tiles on x86) and through
//! `k_quants::matmul` on the compact GGUF blocks and through our kernels (`kernels::kquant`),
//! for one token (weights streamed from DRAM: GB/s) and for 64 (weights in cache), and the
//! prompt GEMMs at 64 and 512 rows, candle's against ours (multiply-adds per second; Q6_K's
//! too), and the
//! decode attention of a whole 36-layer step over f16 caches at 512 and 4096 positions (cache
//! bytes per second). A full run takes about a minute and a half:
//!
//! ```sh
//! cargo bench -p smollm3-model                   # everything
//! cargo bench -p smollm3-model -- decode         # one group, by name filter
//! ```
//!
//! Threads: candle's kernels read RAYON_NUM_THREADS / CANDLE_NUM_THREADS (default: physical
//! cores). End-to-end numbers on the full 36-layer model come from `cargo xtask bench`.

use std::borrow::Cow;
use std::hint::black_box;
use std::path::Path;
use std::time::Duration;

use candle_core::quantized::gguf_file::{self, Value};
use candle_core::quantized::k_quants::{self, BlockQ4K, GgmlType};
use candle_core::quantized::{GgmlDType, QMatMul, QStorage, QTensor};
use candle_core::{Device, Module, Tensor};
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use smollm3_model::kernels::{self, kquant, kquant_rows, q4_1};
use smollm3_model::Model;

const HIDDEN: usize = 2048;
const FFN: usize = 11008;
const HEADS: usize = 16;
const KV_HEADS: usize = 4;
const HEAD_DIM: usize = HIDDEN / HEADS;
const LAYERS: usize = 2;
const VOCAB: usize = 1024;
const CTX: usize = 4096;
/// Tokens in the cache when one decode step is timed.
const DECODE_CACHE: usize = 512;
const PREFILL: usize = 64;

/// Deterministic 64-bit LCG (Knuth's MMIX constants).
struct Lcg(u64);

impl Lcg {
    fn next_u32(&mut self) -> u32 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (self.0 >> 32) as u32
    }

    /// Uniform in [-1, 1).
    fn next_f32(&mut self) -> f32 {
        (self.next_u32() >> 8) as f32 / (1u32 << 23) as f32 - 1.0
    }
}

/// A `rows x cols` Q4_K matrix filled with random blocks: a pool of 4096 genuinely quantized
/// blocks is cycled with an odd stride, which is as good as fresh random data for timing and
/// avoids quantizing ~150M values at every bench start.
fn random_q4k(rows: usize, cols: usize, pool: &[u8], rng: &mut Lcg) -> QTensor {
    let block = GgmlDType::Q4K.type_size();
    let n_pool = pool.len() / block;
    let n_blocks = rows * cols / GgmlDType::Q4K.block_size();
    let mut bytes = Vec::with_capacity(n_blocks * block);
    let mut i = rng.next_u32() as usize % n_pool;
    for _ in 0..n_blocks {
        bytes.extend_from_slice(&pool[i * block..(i + 1) * block]);
        i = (i + 1031) % n_pool;
    }
    let storage = QStorage::from_data(Cow::Owned(bytes), &Device::Cpu, GgmlDType::Q4K).unwrap();
    QTensor::new(storage, (rows, cols)).unwrap()
}

/// 4096 Q4_K blocks of N(0, ~0.05)-ish uniform values.
fn block_pool(rng: &mut Lcg) -> Vec<u8> {
    let n = 4096 * GgmlDType::Q4K.block_size();
    let data: Vec<f32> = (0..n).map(|_| 0.08 * rng.next_f32()).collect();
    let t = Tensor::from_vec(data, (16, n / 16), &Device::Cpu).unwrap();
    QTensor::quantize(&t, GgmlDType::Q4K)
        .unwrap()
        .data()
        .unwrap()
        .into_owned()
}

fn norm(rng: &mut Lcg) -> QTensor {
    let data: Vec<f32> = (0..HIDDEN).map(|_| 1.0 + 0.1 * rng.next_f32()).collect();
    QTensor::quantize(
        &Tensor::from_vec(data, HIDDEN, &Device::Cpu).unwrap(),
        GgmlDType::F32,
    )
    .unwrap()
}

/// Writes the two-layer 3B-shaped model with candle's GGUF writer.
fn write_model(path: &Path) {
    let mut rng = Lcg(0x5eed);
    let pool = block_pool(&mut rng);
    let (nq, nkv) = (HEADS * HEAD_DIM, KV_HEADS * HEAD_DIM);
    let mut tensors: Vec<(String, QTensor)> = vec![(
        "token_embd.weight".into(),
        random_q4k(VOCAB, HIDDEN, &pool, &mut rng),
    )];
    for l in 0..LAYERS {
        let p = |s: &str| format!("blk.{l}.{s}.weight");
        tensors.push((p("attn_norm"), norm(&mut rng)));
        tensors.push((p("attn_q"), random_q4k(nq, HIDDEN, &pool, &mut rng)));
        tensors.push((p("attn_k"), random_q4k(nkv, HIDDEN, &pool, &mut rng)));
        tensors.push((p("attn_v"), random_q4k(nkv, HIDDEN, &pool, &mut rng)));
        tensors.push((p("attn_output"), random_q4k(HIDDEN, nq, &pool, &mut rng)));
        tensors.push((p("ffn_norm"), norm(&mut rng)));
        tensors.push((p("ffn_gate"), random_q4k(FFN, HIDDEN, &pool, &mut rng)));
        tensors.push((p("ffn_up"), random_q4k(FFN, HIDDEN, &pool, &mut rng)));
        tensors.push((p("ffn_down"), random_q4k(HIDDEN, FFN, &pool, &mut rng)));
    }
    tensors.push(("output_norm.weight".into(), norm(&mut rng)));

    let a = "smollm3";
    let u = |x: usize| Value::U32(x as u32);
    let metadata: Vec<(String, Value)> = vec![
        ("general.architecture".into(), Value::String(a.into())),
        (format!("{a}.vocab_size"), u(VOCAB)),
        (format!("{a}.context_length"), u(CTX)),
        (format!("{a}.embedding_length"), u(HIDDEN)),
        (format!("{a}.feed_forward_length"), u(FFN)),
        (format!("{a}.block_count"), u(LAYERS)),
        (format!("{a}.attention.head_count"), u(HEADS)),
        (format!("{a}.attention.head_count_kv"), u(KV_HEADS)),
        (format!("{a}.rope.freq_base"), Value::F32(5_000_000.0)),
        (format!("{a}.rope.dimension_count"), u(HEAD_DIM)),
        (
            format!("{a}.attention.layer_norm_rms_epsilon"),
            Value::F32(1e-6),
        ),
    ];
    let md: Vec<(&str, &Value)> = metadata.iter().map(|(k, v)| (k.as_str(), v)).collect();
    let ts: Vec<(&str, &QTensor)> = tensors.iter().map(|(k, v)| (k.as_str(), v)).collect();
    let mut f = std::io::BufWriter::new(std::fs::File::create(path).unwrap());
    gguf_file::write(&mut f, &md, &ts).unwrap();
}

fn tokens(n: usize, rng: &mut Lcg) -> Vec<u32> {
    (0..n).map(|_| rng.next_u32() % VOCAB as u32).collect()
}

fn model_benches(c: &mut Criterion) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("smollm3-3b-shapes-2-layers-q4k.gguf");
    write_model(&path);
    let model = Model::load(&path).unwrap();
    let mut rng = Lcg(42);

    // One decode step with 512 tokens already cached; truncating back keeps the cache length
    // (and so the attention cost) the same at every iteration.
    let mut cache = model.new_cache(CTX).unwrap();
    model
        .forward_last(&tokens(DECODE_CACHE, &mut rng), &mut cache)
        .unwrap();
    let next = tokens(1, &mut rng);
    let mut g = c.benchmark_group("decode");
    g.throughput(Throughput::Elements(1));
    g.bench_function("forward_last_1_token_512_cached_2_layers", |b| {
        b.iter(|| {
            let logits = model.forward_last(black_box(&next), &mut cache).unwrap();
            cache.truncate(DECODE_CACHE).unwrap();
            logits
        })
    });
    g.finish();

    // Prefill of 64 tokens into an empty cache.
    let prompt = tokens(PREFILL, &mut rng);
    let mut cache = model.new_cache(CTX).unwrap();
    let mut g = c.benchmark_group("prefill");
    g.throughput(Throughput::Elements(PREFILL as u64));
    g.sample_size(10);
    g.bench_function("forward_last_64_tokens_2_layers", |b| {
        b.iter(|| {
            cache.reset();
            model.forward_last(black_box(&prompt), &mut cache).unwrap()
        })
    });
    g.finish();
}

/// Copies of the down projection that one matvec bench cycles through: 8 x 12.7 MB (plus
/// candle's 16.9 MB repacked copy of each) is well past a 32 MB L3, so every call streams its
/// weights from DRAM as in a real decode step, where 1.9 GB of weights pass once per token.
const STREAM_COPIES: usize = 8;

fn matvec_benches(c: &mut Criterion) {
    // The FFN down projection: 2048 outputs over 11008 inputs.
    let mut rng = Lcg(7);
    let pool = block_pool(&mut rng);
    let mut qmatmuls = Vec::new();
    let mut compact = Vec::new();
    for _ in 0..STREAM_COPIES {
        let q = random_q4k(HIDDEN, FFN, &pool, &mut rng);
        compact.push(compact_blocks(&q));
        qmatmuls.push(QMatMul::from_qtensor(q).unwrap());
    }
    let weight_bytes =
        (HIDDEN * FFN / GgmlDType::Q4K.block_size() * GgmlDType::Q4K.type_size()) as u64;

    let mut g = c.benchmark_group("matvec");
    g.measurement_time(Duration::from_secs(3));
    // Bytes of Q4_K weights per call (GGUF size): the roofline of a memory-bound matvec.
    g.throughput(Throughput::Bytes(weight_bytes));
    for m in [1, PREFILL] {
        // One token streams the weights from DRAM (decode); 64 tokens reuse one matrix, which
        // stays in cache, to time the compute (prefill).
        let copies = if m == 1 { STREAM_COPIES } else { 1 };
        let what = if m == 1 { "dram" } else { "cached" };
        let x: Vec<f32> = (0..m * FFN).map(|_| rng.next_f32()).collect();
        let xt = Tensor::from_vec(x.clone(), (m, FFN), &Device::Cpu).unwrap();
        // QMatMul::forward: on x86 with AVX2 candle repacks Q4_K into 16-row tiles on first use
        // (kept next to the original blocks) and runs its tile kernel.
        let mut i = 0;
        g.bench_function(format!("q4k_2048x11008_m{m}_{what}_qmatmul"), |b| {
            b.iter(|| {
                i = (i + 1) % copies;
                qmatmuls[i].forward(black_box(&xt)).unwrap()
            })
        });
        // k_quants::matmul on the compact GGUF blocks (llama.cpp's layout, no repacking).
        let mut dst = vec![0f32; m * HIDDEN];
        g.bench_function(format!("q4k_2048x11008_m{m}_{what}_compact"), |b| {
            b.iter(|| {
                i = (i + 1) % copies;
                k_quants::matmul((m, FFN, HIDDEN), black_box(&x), &compact[i], &mut dst).unwrap();
            })
        });
        // Ours on the same blocks: the path's row product for one row (AVX2 or AVX-512;
        // candle's kernel on the portable path), the prompt tiles for more.
        let ours: Vec<&[kquant::BlockQ4K]> = compact.iter().map(|c| as_ours(c)).collect();
        let decode_path = if m == 1 && kernels::path().rows.is_none() {
            "candle"
        } else {
            kernels::path_name()
        };
        g.bench_function(
            format!("q4k_2048x11008_m{m}_{what}_ours_{decode_path}"),
            |b| {
                b.iter(|| {
                    i = (i + 1) % copies;
                    if m == 1 {
                        if let Some(done) = kquant_rows::gemv(FFN, black_box(&x), ours[i], &mut dst)
                        {
                            return done.unwrap();
                        }
                    }
                    kquant::matmul((m, FFN, HIDDEN), black_box(&x), ours[i], &mut dst).unwrap()
                })
            },
        );
    }
    g.finish();

    // Prompt-sized GEMMs: candle's kernel (re-unpacks each super-block per row) against ours
    // (unpacks once per call). Throughput in multiply-adds: Melem/s here is millions of
    // weight × activation products per second (GFLOP/s = 2 × that / 1000).
    let ours = as_ours(&compact[0]);
    let mut g = c.benchmark_group("gemm");
    g.measurement_time(Duration::from_secs(4));
    g.sample_size(10);
    for m in [PREFILL, 512] {
        g.throughput(Throughput::Elements((m * FFN * HIDDEN) as u64));
        let x: Vec<f32> = (0..m * FFN).map(|_| rng.next_f32()).collect();
        let mut dst = vec![0f32; m * HIDDEN];
        g.bench_function(format!("q4k_2048x11008_m{m}_candle"), |b| {
            b.iter(|| {
                k_quants::matmul((m, FFN, HIDDEN), black_box(&x), &compact[0], &mut dst).unwrap();
            })
        });
        g.bench_function(
            format!("q4k_2048x11008_m{m}_ours_{}", kernels::path_name()),
            |b| b.iter(|| kquant::matmul((m, FFN, HIDDEN), black_box(&x), ours, &mut dst).unwrap()),
        );
    }
    // Q6_K, Q4_K_M's type for half the layers' FFN down and V projections, at the same shape:
    // random codes and scales (speed does not depend on the values).
    let q6k: Vec<kquant::BlockQ6K> = (0..HIDDEN * FFN / kquant::QK_K)
        .map(|_| kquant::BlockQ6K {
            ql: std::array::from_fn(|_| rng.next_u32() as u8),
            qh: std::array::from_fn(|_| rng.next_u32() as u8),
            scales: std::array::from_fn(|_| rng.next_u32() as i8),
            d: half::f16::from_f32(rng.next_f32() / 1024.0),
        })
        .collect();
    let x: Vec<f32> = (0..512 * FFN).map(|_| rng.next_f32()).collect();
    let mut dst = vec![0f32; 512 * HIDDEN];
    g.throughput(Throughput::Elements((512 * FFN * HIDDEN) as u64));
    g.bench_function(
        format!("q6k_2048x11008_m512_ours_{}", kernels::path_name()),
        |b| b.iter(|| kquant::matmul((512, FFN, HIDDEN), black_box(&x), &q6k, &mut dst).unwrap()),
    );
    // The same blocks as the other common shape, 11008 outputs over 2048 inputs (gate and up;
    // Q, K, V and O are as long): a tile's activations then stay in L1 across its columns.
    let x: Vec<f32> = (0..512 * HIDDEN).map(|_| rng.next_f32()).collect();
    let mut dst = vec![0f32; 512 * FFN];
    g.bench_function(
        format!("q4k_11008x2048_m512_ours_{}", kernels::path_name()),
        |b| b.iter(|| kquant::matmul((512, HIDDEN, FFN), black_box(&x), ours, &mut dst).unwrap()),
    );
    // SmolLM2-135M's FFN down projection (1536 -> 576, Q4_1) for its 64-token prompt: the
    // small matrices where a fixed cost per call or per panel shows.
    let (k, n) = (1536, 576);
    let q4_1_weights: Vec<q4_1::BlockQ4_1> = (0..n * k / q4_1::BLOCK)
        .map(|_| q4_1::BlockQ4_1 {
            d: half::f16::from_f32(rng.next_f32() / 64.0),
            m: half::f16::from_f32(-rng.next_f32() / 8.0),
            qs: std::array::from_fn(|_| rng.next_u32() as u8),
        })
        .collect();
    g.throughput(Throughput::Elements((PREFILL * k * n) as u64));
    let x: Vec<f32> = (0..PREFILL * k).map(|_| rng.next_f32()).collect();
    let mut dst = vec![0f32; PREFILL * n];
    g.bench_function(
        format!("q4_1_1536x576_m{PREFILL}_ours_{}", kernels::path_name()),
        |b| {
            b.iter(|| {
                q4_1::matmul((PREFILL, k, n), black_box(&x), &q4_1_weights, &mut dst).unwrap()
            })
        },
    );
    g.finish();

    // Row products for a few activation rows (a batch of sequences, a draft to verify) with
    // the weights in cache: the compute a batched decode step adds per row, which decides how
    // far past the memory wall batching gets. Multiply-adds per second.
    let mut g = c.benchmark_group("rows");
    g.measurement_time(Duration::from_secs(3));
    for m in [1, 2, 4, 8] {
        g.throughput(Throughput::Elements((m * FFN * HIDDEN) as u64));
        let x: Vec<f32> = (0..m * FFN).map(|_| rng.next_f32()).collect();
        let mut dst = vec![0f32; m * HIDDEN];
        let path = kernels::path_name();
        g.bench_function(format!("q4k_2048x11008_m{m}_cached_{path}"), |b| {
            b.iter(|| kquant_rows::gemv(FFN, black_box(&x), ours, &mut dst))
        });
        g.bench_function(format!("q6k_2048x11008_m{m}_cached_{path}"), |b| {
            b.iter(|| kquant_rows::gemv(FFN, black_box(&x), &q6k, &mut dst))
        });
        // The same blocks as gate / up (11008 rows of 2048): a row's activations stay in L1.
        let x: Vec<f32> = (0..m * HIDDEN).map(|_| rng.next_f32()).collect();
        let mut dst = vec![0f32; m * FFN];
        g.bench_function(format!("q4k_11008x2048_m{m}_cached_{path}"), |b| {
            b.iter(|| kquant_rows::gemv(HIDDEN, black_box(&x), ours, &mut dst))
        });
        g.bench_function(format!("q6k_11008x2048_m{m}_cached_{path}"), |b| {
            b.iter(|| kquant_rows::gemv(HIDDEN, black_box(&x), &q6k, &mut dst))
        });
    }
    g.finish();
}

/// candle's Q4_K blocks as ours (the file's layout both).
fn as_ours(blocks: &[BlockQ4K]) -> &[kquant::BlockQ4K] {
    const _: () =
        assert!(std::mem::size_of::<BlockQ4K>() == std::mem::size_of::<kquant::BlockQ4K>());
    // SAFETY: the same 144-byte repr(C) layout (f16 d, f16 dmin, 12 scale bytes, 128 nibble
    // bytes), and our type's alignment (2) is not stricter than candle's.
    unsafe { std::slice::from_raw_parts(blocks.as_ptr() as *const kquant::BlockQ4K, blocks.len()) }
}

/// The blocks of a Q4_K tensor as a slice, for candle's compact (non-repacked) kernel.
fn compact_blocks(q: &QTensor) -> Vec<BlockQ4K> {
    let bytes = q.data().unwrap();
    let n_blocks = bytes.len() / std::mem::size_of::<BlockQ4K>();
    let mut blocks = vec![BlockQ4K::zeros(); n_blocks];
    // SAFETY: BlockQ4K is repr(C) plain data (f16s and bytes) in the GGUF block layout, and
    // `blocks` has room for exactly `n_blocks` blocks.
    unsafe {
        std::ptr::copy_nonoverlapping(
            bytes.as_ptr(),
            blocks.as_mut_ptr() as *mut u8,
            n_blocks * std::mem::size_of::<BlockQ4K>(),
        )
    };
    blocks
}

fn config() -> Criterion {
    Criterion::default()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(5))
}

/// Decode attention of a whole 3B step: 36 layers' f16 caches (each its own memory, so the
/// keys and values stream from DRAM as in a real step: 302 MB at 4k positions), 4 query rows
/// per KV head, at the bench's 512 positions and at 4k. Throughput: cache bytes read.
fn attention_benches(c: &mut Criterion) {
    use half::f16;
    use kernels::attention::{self, KvSlices, Shape};
    const STEP_LAYERS: usize = 36;
    let mut rng = Lcg(11);
    let per_layer = KV_HEADS * CTX * HEAD_DIM;
    let mut random_half =
        |n: usize| -> Vec<f16> { (0..n).map(|_| f16::from_f32(rng.next_f32())).collect() };
    let caches: Vec<(Vec<f16>, Vec<f16>)> = (0..STEP_LAYERS)
        .map(|_| (random_half(per_layer), random_half(per_layer)))
        .collect();
    let q: Vec<f32> = (0..HEADS * HEAD_DIM)
        .map(|_| rng.next_f32() / (HEAD_DIM as f32).sqrt())
        .collect();
    let mut out = vec![0f32; HEADS * HEAD_DIM];
    let mut g = c.benchmark_group("attention");
    g.sample_size(20);
    for positions in [DECODE_CACHE, CTX] {
        let shape = Shape {
            kv_heads: KV_HEADS,
            group: HEADS / KV_HEADS,
            head_dim: HEAD_DIM,
            positions,
            head_stride: CTX * HEAD_DIM,
        };
        g.throughput(Throughput::Bytes(
            (STEP_LAYERS * 2 * KV_HEADS * positions * HEAD_DIM * 2) as u64,
        ));
        g.bench_function(format!("decode_f16_{positions}_positions_36_layers"), |b| {
            b.iter(|| {
                for (k, v) in &caches {
                    attention::decode(shape, black_box(&q), KvSlices::F16 { k, v }, &mut out)
                        .unwrap();
                }
            })
        });
    }
    g.finish();
}

criterion_group! {
    name = benches;
    config = config();
    targets = matvec_benches, model_benches, attention_benches
}
criterion_main!(benches);
