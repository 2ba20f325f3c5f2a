//! One-token (decode) attention on the pool, one KV head per work item, with candle's bits.
//!
//! Why: candle runs decode attention as two batched `matmul`s and a softmax, each its own
//! parallel op over four tiny problems (4 query rows × 640 positions for a 3B step at a
//! 512-token prompt): 20 ms of a 102 ms step on Zen 4 with 2 threads, four times what reading
//! the f32 K/V cache costs. Here each KV head's scores, softmax and weighted sum of values run
//! together on one thread of our pool, so a step has one job per layer instead of three
//! fork-joins.
//!
//! Why the same bits matter: a one-pass kernel of our own summed each dot product in another
//! order, and through the 8-bit rounding of the next layer's activations that flipped a greedy
//! token of SmolLM2 that llama.cpp picks with a margin over 0.1. So the two products call the
//! same `gemm` function with the same shapes and strides as candle's `matmul` does for one
//! batch item (gemm splits work between threads over output tiles only, never over the
//! summed axis, so `Parallelism::None` gives the bits of candle's threaded call), and the
//! softmax is candle's `softmax_last_dim` row code. `tests.rs` compares the bits with candle's
//! own ops.

use std::ops::Range;

use candle_core::cpu::kernels::VecOps;
use gemm::{gemm, Parallelism};

/// The shapes of one layer's decode attention.
#[derive(Clone, Copy, Debug)]
pub struct Shape {
    pub kv_heads: usize,
    /// Query heads per KV head.
    pub group: usize,
    pub head_dim: usize,
    /// Cached positions, the new one included.
    pub positions: usize,
    /// Elements between one KV head's rows and the next's in the cache (`capacity × head_dim`).
    pub head_stride: usize,
}

/// `out[h]` (`[group, head_dim]` per KV head `h`) = softmax(`q[h]` · `k[h]`ᵀ) · `v[h]`, for
/// queries `q` `[kv_heads, group, head_dim]` already scaled by 1/√head_dim and the cache's
/// `k`, `v` (`[kv_heads, capacity, head_dim]`, the first `positions` rows of each head used).
pub fn decode(s: Shape, q: &[f32], k: &[f32], v: &[f32], out: &mut [f32]) -> crate::Result<()> {
    let per_head = s.group * s.head_dim;
    let cache_len = (s.kv_heads.saturating_sub(1)) * s.head_stride + s.positions * s.head_dim;
    if q.len() != s.kv_heads * per_head
        || out.len() != q.len()
        || s.positions == 0
        || s.head_stride < s.positions * s.head_dim
        || k.len() < cache_len
        || v.len() < cache_len
    {
        return Err(candle_core::Error::Msg(format!(
            "decode attention: {s:?} does not fit q {}, k {}, v {}, out {}",
            q.len(),
            k.len(),
            v.len(),
            out.len()
        ))
        .into());
    }
    let out_address = out.as_mut_ptr() as usize;
    super::pool().execute_chunked(s.kv_heads, |heads: Range<usize>| {
        let mut scores = vec![0f32; s.group * s.positions];
        for h in heads {
            // SAFETY: each head's output rows are written by exactly one work item, and the
            // lengths were checked above.
            let out = unsafe {
                std::slice::from_raw_parts_mut(
                    (out_address as *mut f32).add(h * per_head),
                    per_head,
                )
            };
            let cache = h * s.head_stride..h * s.head_stride + s.positions * s.head_dim;
            head(
                s,
                &q[h * per_head..(h + 1) * per_head],
                &k[cache.clone()],
                &v[cache],
                &mut scores,
                out,
            );
        }
    });
    Ok(())
}

/// One KV head: `q` `[group, hd]`, `k`/`v` `[positions, hd]`, `out` `[group, hd]`.
fn head(s: Shape, q: &[f32], k: &[f32], v: &[f32], scores: &mut [f32], out: &mut [f32]) {
    let (m, hd, n) = (s.group, s.head_dim, s.positions);
    // SAFETY: every pointer/stride pair stays inside its slice: q is m × hd row-major, k and v
    // are n × hd row-major, scores m × n, out m × hd (lengths checked by the caller). The
    // arguments are those candle's `matmul` passes for one batch item: `q · kᵀ` with kᵀ's
    // column stride hd, then `probs · v`.
    unsafe {
        gemm(
            m,
            n,
            hd,
            scores.as_mut_ptr(),
            1,
            n as isize,
            false,
            q.as_ptr(),
            1,
            hd as isize,
            k.as_ptr(),
            hd as isize,
            1,
            0.0,
            1.0,
            false,
            false,
            false,
            Parallelism::None,
        );
    }
    for row in scores.chunks_exact_mut(n) {
        softmax_row(row);
    }
    // SAFETY: as above.
    unsafe {
        gemm(
            m,
            hd,
            n,
            out.as_mut_ptr(),
            1,
            hd as isize,
            false,
            scores.as_ptr(),
            1,
            n as isize,
            v.as_ptr(),
            1,
            hd as isize,
            0.0,
            1.0,
            false,
            false,
            false,
            Parallelism::None,
        );
    }
}

/// candle-nn's `softmax_last_dim` for one row, in place: the same max, `exp`, vectorised sum
/// and division, so the same bits.
fn softmax_row(row: &mut [f32]) {
    let mut max = f32::NEG_INFINITY;
    // SAFETY: the pointer covers `row.len()` elements.
    unsafe { f32::vec_reduce_max(row.as_ptr(), &mut max, row.len()) };
    for x in row.iter_mut() {
        *x = (*x - max).exp();
    }
    let mut sum = 0f32;
    // SAFETY: as above.
    unsafe { f32::vec_reduce_sum(row.as_ptr(), &mut sum, row.len()) };
    for x in row.iter_mut() {
        *x /= sum;
    }
}
