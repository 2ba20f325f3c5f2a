//! The memory-bandwidth wall of a decode step, for `cargo xtask bench`.
//!
//! A decode step of one token streams every weight matrix once and the KV cache of every
//! position so far; on a CPU that is bound by memory bandwidth long before it is bound by
//! arithmetic. So the bench measures what the machine can stream ([`measure_read_bandwidth`]:
//! a multi-threaded sum over a buffer far larger than the last-level cache, prefetching as the
//! decode kernels do), counts the
//! bytes one step reads ([`DecodeBytes::of`]), and reports the decode as a share of that wall.

use std::path::Path;
use std::time::Instant;

use anyhow::{ensure, Context, Result};
use candle_core::quantized::GgmlDType;
use serde::Serialize;
use smollm3_model::{Config, GgufFile};

use crate::bench::Stat;

/// Timed passes of the bandwidth measurement; the median is reported.
const WALL_PASSES: usize = 5;

/// Streaming read bandwidth of the machine with a given number of threads.
#[derive(Debug, Clone, Serialize)]
pub struct Bandwidth {
    /// Median over the passes, 10^9 bytes per second.
    pub gb_s: f64,
    pub passes_gb_s: Vec<f64>,
    pub buffer_bytes: u64,
    pub threads: usize,
}

/// How far ahead [`sum_lanes`] asks for the data: the distance of the model's row products
/// (`smollm3_model::kernels::kquant_rows`). On an Intel Xeon (family 6 model 207, 2 vCPUs) the
/// read without these hints measured 8–17 GB/s while the prefetching decode streamed 15–17
/// GB/s: a wall the engine passes is no wall, so the wall is the best read we know how to do.
const PREFETCH_BYTES: usize = 4096;

/// Sums `data` as u64s with eight independent lanes, a loop the compiler turns into SIMD
/// adds, asking for each cache line [`PREFETCH_BYTES`] ahead; wrapping, so the result is
/// well defined for any contents.
fn sum_lanes(data: &[u64]) -> u64 {
    let mut acc = [0u64; 8];
    let mut chunks = data.chunks_exact(8);
    for c in &mut chunks {
        #[cfg(target_arch = "x86_64")]
        {
            use std::arch::x86_64::{_mm_prefetch, _MM_HINT_T0};
            // A prefetch is a hint that never faults: the address (past the end near the end
            // of the buffer) is computed, never read, by this code.
            let ahead = c.as_ptr().cast::<i8>().wrapping_add(PREFETCH_BYTES);
            // SAFETY: SSE is part of x86_64; prefetching any address is defined.
            unsafe { _mm_prefetch::<_MM_HINT_T0>(ahead) };
        }
        for (a, x) in acc.iter_mut().zip(c) {
            *a = a.wrapping_add(*x);
        }
    }
    let tail = chunks
        .remainder()
        .iter()
        .fold(0u64, |a, &x| a.wrapping_add(x));
    acc.iter().fold(tail, |a, &x| a.wrapping_add(x))
}

/// One pass: `threads` threads each sum their contiguous share of `buf`; returns the wrapped
/// total and the wall time from the first spawn to the last join.
fn read_pass(buf: &[u64], threads: usize) -> (u64, f64) {
    let share = buf.len().div_ceil(threads);
    let start = Instant::now();
    let total = std::thread::scope(|s| {
        let handles: Vec<_> = buf
            .chunks(share)
            .map(|part| s.spawn(move || sum_lanes(std::hint::black_box(part))))
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().unwrap_or(0))
            .fold(0u64, u64::wrapping_add)
    });
    (std::hint::black_box(total), start.elapsed().as_secs_f64())
}

/// Measures the streaming read bandwidth with `threads` threads over a buffer of `bytes`
/// (which should be much larger than the L3 cache): the buffer is allocated and written first
/// (so every page is really mapped, not the shared zero page), then read [`WALL_PASSES`]
/// times; the median pass is reported.
pub fn measure_read_bandwidth(bytes: usize, threads: usize) -> Result<Bandwidth> {
    ensure!(threads > 0, "bandwidth: at least one thread is needed");
    let words = bytes / 8;
    ensure!(
        words >= 8 * threads,
        "bandwidth: a {bytes}-byte buffer is too small"
    );
    let mut buf: Vec<u64> = Vec::new();
    buf.try_reserve_exact(words)
        .with_context(|| format!("allocating {} MiB for the bandwidth test", bytes >> 20))?;
    buf.resize(words, 0);
    // First touch in parallel, with values that are not all zero.
    let share = words.div_ceil(threads);
    std::thread::scope(|s| {
        for (i, part) in buf.chunks_mut(share).enumerate() {
            s.spawn(move || {
                for (j, w) in part.iter_mut().enumerate() {
                    *w = (i * share + j) as u64;
                }
            });
        }
    });
    read_pass(&buf, threads); // warm-up: TLB and page tables
    let mut passes = Vec::with_capacity(WALL_PASSES);
    for _ in 0..WALL_PASSES {
        let (_, secs) = read_pass(&buf, threads);
        passes.push((words * 8) as f64 / secs / 1e9);
    }
    Ok(Bandwidth {
        gb_s: Stat::of(passes.iter().copied()).median,
        passes_gb_s: passes,
        buffer_bytes: (words * 8) as u64,
        threads,
    })
}

/// What one decode step (one token, `forward_last`) reads from memory.
#[derive(Debug, Clone, Serialize)]
pub struct DecodeBytes {
    /// Every tensor of the file, except `token_embd.weight` when the output projection has
    /// its own `output.weight` (then only one embedding row is read per token, not counted).
    /// A tied embedding is the output projection and is read whole.
    pub weight_bytes: u64,
    pub tied_embeddings: bool,
    /// `token_embd.weight` bytes left out (0 when tied).
    pub embedding_bytes_excluded: u64,
    /// Bytes per cached key or value element: 2 for our default f16 cache, 4 with f32.
    pub kv_elem_bytes: u64,
    /// Keys and values of one position in all layers: layers × 2 × kv heads × head dim ×
    /// `kv_elem_bytes`.
    pub kv_bytes_per_position: u64,
    /// Positions attended to, averaged over the timed decode: a step at position `p` reads
    /// `p + 1` cached positions; the steps run at `prompt .. prompt + gen`.
    pub kv_mean_positions: f64,
    pub kv_bytes: u64,
    pub total_bytes: u64,
}

/// Bytes of a tensor of `dtype` with `dims`, from the type's block size and block bytes.
pub fn tensor_bytes(name: &str, dtype: GgmlDType, dims: &[usize]) -> Result<u64> {
    let elems: usize = dims.iter().product();
    let block = dtype.block_size();
    ensure!(
        elems.is_multiple_of(block),
        "tensor {name}: {elems} elements are not whole {dtype:?} blocks of {block}"
    );
    Ok((elems / block * dtype.type_size()) as u64)
}

/// Mean number of cached positions a decode step reads over `gen` steps after `prompt`
/// tokens: (prompt + 1 + prompt + gen) / 2.
pub fn mean_positions(prompt: usize, gen: usize) -> f64 {
    prompt as f64 + (gen as f64 + 1.0) / 2.0
}

impl DecodeBytes {
    /// The bytes of a decode step of `path` after `prompt` tokens, over `gen` steps, with
    /// `kv_elem_bytes` per cached value.
    pub fn of(path: &Path, prompt: usize, gen: usize, kv_elem_bytes: u64) -> Result<Self> {
        let gguf = GgufFile::open(path).with_context(|| format!("opening {}", path.display()))?;
        let config = Config::from_gguf(&gguf)
            .with_context(|| format!("reading the configuration of {}", path.display()))?;
        let mut weight_bytes = 0;
        let mut embedding_bytes_excluded = 0;
        for (name, dtype, dims) in gguf.tensor_infos() {
            let bytes = tensor_bytes(&name, dtype, &dims)?;
            if name == "token_embd.weight" && !config.tied_embeddings {
                embedding_bytes_excluded = bytes;
            } else {
                weight_bytes += bytes;
            }
        }
        let kv_bytes_per_position = config.num_layers as u64
            * 2
            * config.num_kv_heads as u64
            * config.head_dim as u64
            * kv_elem_bytes;
        let kv_mean_positions = mean_positions(prompt, gen);
        let kv_bytes = (kv_bytes_per_position as f64 * kv_mean_positions).round() as u64;
        Ok(Self {
            weight_bytes,
            tied_embeddings: config.tied_embeddings,
            embedding_bytes_excluded,
            kv_elem_bytes,
            kv_bytes_per_position,
            kv_mean_positions,
            kv_bytes,
            total_bytes: weight_bytes + kv_bytes,
        })
    }

    /// The same step with another KV element size and mean position (llama.cpp: f16 cache).
    pub fn with_kv(&self, elem_bytes: u64, mean_positions: f64) -> u64 {
        let per_position = self.kv_bytes_per_position / self.kv_elem_bytes * elem_bytes;
        self.weight_bytes + (per_position as f64 * mean_positions).round() as u64
    }
}

/// The decode against the wall, in the report.
#[derive(Debug, Clone, Serialize)]
pub struct WallReport {
    /// Absent with `--wall-mib 0`.
    pub bandwidth: Option<Bandwidth>,
    pub decode_bytes: DecodeBytes,
    /// Per run: decode tok/s × bytes per step, 10^9 bytes per second.
    pub decode_gb_s: Stat,
    /// Per run: that as a percentage of the measured wall.
    pub decode_pct_of_wall: Option<Stat>,
}

impl WallReport {
    pub fn new(bandwidth: Option<Bandwidth>, bytes: DecodeBytes, decode_tok_s: &[f64]) -> Self {
        let gb_s: Vec<f64> = decode_tok_s
            .iter()
            .map(|t| t * bytes.total_bytes as f64 / 1e9)
            .collect();
        Self {
            decode_pct_of_wall: bandwidth
                .as_ref()
                .map(|b| Stat::of(gb_s.iter().map(|g| g / b.gb_s * 100.0))),
            decode_gb_s: Stat::of(gb_s),
            bandwidth,
            decode_bytes: bytes,
        }
    }

    /// "decode: X tok/s = Y GB/s = Z% of the wall (W GB/s measured)".
    pub fn headline(&self, decode_tok_s: f64) -> String {
        let gb_s = decode_tok_s * self.decode_bytes.total_bytes as f64 / 1e9;
        match &self.bandwidth {
            Some(b) => format!(
                "decode: {decode_tok_s:.2} tok/s = {gb_s:.2} GB/s = {:.0}% of the wall \
                 ({:.2} GB/s measured, {} threads)",
                gb_s / b.gb_s * 100.0,
                b.gb_s,
                b.threads
            ),
            None => format!(
                "decode: {decode_tok_s:.2} tok/s = {gb_s:.2} GB/s (wall not measured: --wall-mib 0)"
            ),
        }
    }

    pub fn print(&self, decode_tok_s: f64) {
        let d = &self.decode_bytes;
        println!("{}", self.headline(decode_tok_s));
        println!(
            "        bytes per step {:.1} MB = weights {:.1} MB ({}) + KV cache {:.2} MB \
             ({:.1} positions on average × {} B)",
            d.total_bytes as f64 / 1e6,
            d.weight_bytes as f64 / 1e6,
            if d.tied_embeddings {
                "tied embedding read whole as the output projection".to_string()
            } else {
                format!(
                    "untied: token_embd {:.1} MB not counted",
                    d.embedding_bytes_excluded as f64 / 1e6
                )
            },
            d.kv_bytes as f64 / 1e6,
            d.kv_mean_positions,
            d.kv_bytes_per_position
        );
        if let Some(b) = &self.bandwidth {
            let passes: Vec<String> = b.passes_gb_s.iter().map(|g| format!("{g:.1}")).collect();
            println!(
                "        wall: {} MiB buffer read by {} threads, passes {} GB/s",
                b.buffer_bytes >> 20,
                b.threads,
                passes.join(" ")
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::fs::File;

    use candle_core::quantized::gguf_file::Content;
    use xtask::fixtures::{self, FixtureSpec};

    use super::*;

    #[test]
    fn the_reduction_sums_every_word() {
        let data: Vec<u64> = (0..1003).collect();
        assert_eq!(sum_lanes(&data), 1002 * 1003 / 2);
        assert_eq!(sum_lanes(&[u64::MAX, 2]), 1);
        let (total, secs) = read_pass(&data, 3);
        assert_eq!(total, 1002 * 1003 / 2);
        assert!(secs >= 0.0);
    }

    #[test]
    fn bandwidth_of_a_small_buffer_is_positive() {
        let b = measure_read_bandwidth(8 << 20, 2).unwrap();
        assert_eq!(b.passes_gb_s.len(), WALL_PASSES);
        assert!(b.gb_s > 0.0 && b.gb_s.is_finite());
        assert_eq!(b.buffer_bytes, 8 << 20);
        assert!(measure_read_bandwidth(16, 4).is_err());
    }

    fn spec(name: &str) -> FixtureSpec {
        fixtures::fixture_specs()
            .into_iter()
            .find(|s| s.file_name == name)
            .unwrap()
    }

    /// Each tensor's size from the file's own layout: the gap to the next tensor's offset (or
    /// the file's end), which is the tensor plus less than one alignment of padding.
    fn gaps_from_offsets(path: &Path) -> (BTreeMap<String, u64>, u64) {
        let mut f = File::open(path).unwrap();
        let len = f.metadata().unwrap().len();
        let content = Content::read(&mut f).unwrap();
        let mut by_offset: Vec<_> = content
            .tensor_infos
            .iter()
            .map(|(n, i)| (i.offset, n.clone()))
            .collect();
        by_offset.sort();
        let data_len = len - content.tensor_data_offset;
        let mut gaps = BTreeMap::new();
        for (k, (offset, name)) in by_offset.iter().enumerate() {
            let end = by_offset.get(k + 1).map_or(data_len, |n| n.0);
            gaps.insert(name.clone(), end - offset);
        }
        (gaps, data_len)
    }

    #[test]
    fn a_tied_f32_model_reads_every_parameter_once() {
        let spec = spec("smollm3-tiny-f32.gguf");
        let dir = tempfile::tempdir().unwrap();
        let path = fixtures::generate(&spec, dir.path()).unwrap();
        let d = DecodeBytes::of(&path, 10, 5, 4).unwrap();
        // Parameters from the architecture, 4 bytes each.
        let (h, hd, v) = (spec.hidden, spec.head_dim(), spec.vocab_size());
        let per_layer = spec.heads * hd * h * 2 // q, o
            + spec.kv_heads * hd * h * 2 // k, v
            + 3 * spec.ffn * h // gate, up, down
            + 2 * h; // two norms
        let params = v * h + spec.layers * per_layer + h;
        assert!(spec.tied);
        assert!(d.tied_embeddings);
        assert_eq!(d.embedding_bytes_excluded, 0);
        assert_eq!(d.weight_bytes, 4 * params as u64);
        // Steps at positions 10..15 read 11..=15 positions: 13 on average.
        assert_eq!(d.kv_mean_positions, 13.0);
        let per_position = (spec.layers * 2 * spec.kv_heads * hd * 4) as u64;
        assert_eq!(d.kv_bytes_per_position, per_position);
        assert_eq!(d.kv_bytes, 13 * per_position);
        assert_eq!(d.total_bytes, d.weight_bytes + d.kv_bytes);
        // llama.cpp's f16 cache at 4 positions on average.
        assert_eq!(d.with_kv(2, 4.0), d.weight_bytes + 2 * per_position);
        // An f16 cache: half the bytes per position.
        let half = DecodeBytes::of(&path, 10, 5, 2).unwrap();
        assert_eq!(half.kv_bytes_per_position, per_position / 2);
        assert_eq!(half.with_kv(4, 13.0), d.total_bytes);
    }

    #[test]
    fn quantized_sizes_match_the_file_layout() {
        let spec = spec("smollm3-tiny-q4_k_m.gguf");
        let dir = tempfile::tempdir().unwrap();
        let path = fixtures::generate(&spec, dir.path()).unwrap();
        let (gaps, data_len) = gaps_from_offsets(&path);
        let gguf = GgufFile::open(&path).unwrap();
        let mut sum = 0;
        for (name, dtype, dims) in gguf.tensor_infos() {
            let bytes = tensor_bytes(&name, dtype, &dims).unwrap();
            let gap = gaps[&name];
            assert!(
                bytes <= gap && gap < bytes + 32,
                "{name}: {bytes} vs gap {gap}"
            );
            sum += bytes;
        }
        // Tied: everything is read, which is the whole data section but its padding.
        let d = DecodeBytes::of(&path, 1, 1, 4).unwrap();
        assert_eq!(d.weight_bytes, sum);
        assert!(d.weight_bytes <= data_len && data_len < d.weight_bytes + 32 * gaps.len() as u64);
    }

    #[test]
    fn an_untied_embedding_table_is_not_counted() {
        let spec = spec("smollm3-tiny-gqa2-f32.gguf");
        assert!(!spec.tied);
        let dir = tempfile::tempdir().unwrap();
        let path = fixtures::generate(&spec, dir.path()).unwrap();
        let (gaps, _) = gaps_from_offsets(&path);
        let d = DecodeBytes::of(&path, 0, 1, 4).unwrap();
        assert!(!d.tied_embeddings);
        // F32 tensors of whole 32-byte multiples: the gaps are the exact sizes.
        let all: u64 = gaps.values().sum();
        let embd = gaps["token_embd.weight"];
        assert_eq!(embd, (spec.vocab_size() * spec.hidden * 4) as u64);
        assert_eq!(d.embedding_bytes_excluded, embd);
        assert_eq!(d.weight_bytes, all - embd);
        assert!(gaps.contains_key("output.weight"));
        // One step at position 0 reads one position.
        assert_eq!(
            d.kv_bytes,
            (spec.layers * 2 * spec.kv_heads * spec.head_dim() * 4) as u64
        );
    }

    #[test]
    fn the_headline_puts_the_decode_against_the_wall() {
        let bytes = DecodeBytes {
            weight_bytes: 900_000_000,
            tied_embeddings: true,
            embedding_bytes_excluded: 0,
            kv_elem_bytes: 4,
            kv_bytes_per_position: 1000,
            kv_mean_positions: 100_000.0,
            kv_bytes: 100_000_000,
            total_bytes: 1_000_000_000,
        };
        let wall = Bandwidth {
            gb_s: 20.0,
            passes_gb_s: vec![20.0],
            buffer_bytes: 1 << 30,
            threads: 2,
        };
        let r = WallReport::new(Some(wall), bytes, &[5.0, 10.0, 15.0]);
        assert_eq!(r.decode_gb_s.median, 10.0);
        assert_eq!(r.decode_pct_of_wall.as_ref().unwrap().median, 50.0);
        assert_eq!(
            r.headline(10.0),
            "decode: 10.00 tok/s = 10.00 GB/s = 50% of the wall (20.00 GB/s measured, 2 threads)"
        );
    }
}
