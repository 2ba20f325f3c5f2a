//! One-token (decode) attention on the pool, one KV head per work item, with candle's bits.
//!
//! Why: candle runs decode attention as two batched `matmul`s and a softmax, each its own
//! parallel op over four tiny problems (4 query rows × 640 positions for a 3B step at a
//! 512-token prompt): 20 ms of a 102 ms step on Zen 4 with 2 threads, four times what reading
//! the f32 K/V cache costs. Here each KV head's scores, softmax and weighted sum of values run
//! together on one thread of our pool, so a step has one job per layer instead of three
//! fork-joins (10 ms).
//!
//! Why the same bits matter: a one-pass kernel of our own summed each dot product in another
//! order, and through the 8-bit rounding of the next layer's activations that flipped a greedy
//! token of SmolLM2 that llama.cpp picks with a margin over 0.1. So:
//! - the weighted sum of values calls the same `gemm` function with the same shapes and
//!   strides as candle's `matmul` does for one batch item (gemm splits work between threads
//!   over output tiles only, never over the summed axis, so `Parallelism::None` gives the bits
//!   of candle's threaded call);
//! - the scores, two thirds of the time in gemm (it repacks K for every call: 66 µs a head
//!   in a step against 26 µs with K in cache), have a kernel of our own where gemm's order is
//!   a plain fused multiply-add chain per score (`scores_avx512`, 12 µs with K in cache),
//!   checked against gemm once per head shape and process (`own_scores`); elsewhere gemm;
//! - the softmax is candle's `softmax_last_dim` row code.
//!
//! With an f16 cache ([`KvSlices::F16`], the default: half the bytes a step reads) there are no
//! candle bits to keep: on AVX-512 and AVX2 `attention_f16` splits each head's positions
//! into spans across the pool (on AVX-512 with the score kernel here, which reads the halves
//! directly) and merges their partial softmaxes; on the portable path a head's keys and
//! values are widened to f32 and go through the f32 code. `tests.rs` compares the f32 bits with candle's own
//! ops, and the f16 results with candle's ops on the same rounded values.

use std::ops::Range;

use candle_core::cpu::kernels::VecOps;
use gemm::{gemm, Parallelism};
use half::f16;
use half::slice::HalfFloatSliceExt;

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

/// One layer's keys and values as the cache stores them, `[kv_heads, capacity, head_dim]` each.
#[derive(Clone, Copy, Debug)]
pub enum KvSlices<'a> {
    /// Exact: the parity tests' cache, candle's bits.
    F32 { k: &'a [f32], v: &'a [f32] },
    /// llama.cpp's default cache type: half the bytes, values rounded to f16 when stored.
    F16 { k: &'a [f16], v: &'a [f16] },
}

impl KvSlices<'_> {
    fn lens(&self) -> (usize, usize) {
        match self {
            KvSlices::F32 { k, v } => (k.len(), v.len()),
            KvSlices::F16 { k, v } => (k.len(), v.len()),
        }
    }
}

/// `out[h]` (`[group, head_dim]` per KV head `h`) = softmax(`q[h]` · `k[h]`ᵀ) · `v[h]`, for
/// queries `q` `[kv_heads, group, head_dim]` already scaled by 1/√head_dim and the cache's
/// `k`, `v` (`[kv_heads, capacity, head_dim]`, the first `positions` rows of each head used).
pub fn decode(s: Shape, q: &[f32], kv: KvSlices, out: &mut [f32]) -> crate::Result<()> {
    let per_head = s.group * s.head_dim;
    let cache_len = (s.kv_heads.saturating_sub(1)) * s.head_stride + s.positions * s.head_dim;
    let (k_len, v_len) = kv.lens();
    if q.len() != s.kv_heads * per_head
        || out.len() != q.len()
        || s.positions == 0
        || s.head_stride < s.positions * s.head_dim
        || k_len < cache_len
        || v_len < cache_len
    {
        return Err(candle_core::Error::Msg(format!(
            "decode attention: {s:?} does not fit q {}, k {k_len}, v {v_len}, out {}",
            q.len(),
            out.len()
        ))
        .into());
    }
    if let KvSlices::F16 { k, v } = kv {
        if super::attention_f16::decode(s, q, k, v, out) {
            return Ok(());
        }
    }
    let out_address = out.as_mut_ptr() as usize;
    super::pool().execute_chunked(s.kv_heads, |heads: Range<usize>| {
        let mut scores = vec![0f32; s.group * s.positions];
        // Without a span kernel (the portable path, other shapes), one head's f16 keys and
        // values widened to f32.
        let mut widened = Vec::new();
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
            let q = &q[h * per_head..(h + 1) * per_head];
            match kv {
                KvSlices::F32 { k, v } => {
                    head(s, q, &k[cache.clone()], &v[cache], &mut scores, out)
                }
                KvSlices::F16 { k, v } => {
                    let n = s.positions * s.head_dim;
                    widened.resize(2 * n, 0f32);
                    let (kf, vf) = widened.split_at_mut(n);
                    k[cache.clone()].convert_to_f32_slice(kf);
                    v[cache].convert_to_f32_slice(vf);
                    head(s, q, kf, vf, &mut scores, out)
                }
            }
        }
    });
    Ok(())
}

/// A cache element the AVX-512 kernels read 16 at a time as f32.
#[cfg(target_arch = "x86_64")]
pub(super) trait CacheElement: Copy {
    /// # Safety
    /// AVX-512 F; 16 elements readable from `p`.
    unsafe fn load16(p: *const Self) -> std::arch::x86_64::__m512;
}

#[cfg(target_arch = "x86_64")]
impl CacheElement for f32 {
    #[inline]
    #[target_feature(enable = "avx512f")]
    unsafe fn load16(p: *const f32) -> std::arch::x86_64::__m512 {
        std::arch::x86_64::_mm512_loadu_ps(p)
    }
}

#[cfg(target_arch = "x86_64")]
impl CacheElement for f16 {
    #[inline]
    #[target_feature(enable = "avx512f")]
    unsafe fn load16(p: *const f16) -> std::arch::x86_64::__m512 {
        use std::arch::x86_64::*;
        _mm512_cvtph_ps(_mm256_loadu_si256(p as *const __m256i))
    }
}

/// One KV head: `q` `[group, hd]`, `k`/`v` `[positions, hd]`, `out` `[group, hd]`.
fn head(s: Shape, q: &[f32], k: &[f32], v: &[f32], scores: &mut [f32], out: &mut [f32]) {
    let (m, hd, n) = (s.group, s.head_dim, s.positions);
    if own_scores(m, hd, n) {
        // SAFETY: `own_scores` checked the path (AVX-512) and the shape; lengths as below.
        #[cfg(target_arch = "x86_64")]
        unsafe {
            scores_avx512(m, hd, n, q, k, v, scores)
        };
    } else {
        // SAFETY: q is m × hd, k n × hd, scores m × n (lengths checked by the caller).
        unsafe { gemm_scores(m, hd, n, q, k, scores) };
    }
    for row in scores.chunks_exact_mut(n) {
        softmax_row(row);
    }
    // SAFETY: probs (`scores`) is m × n row-major, v n × hd row-major, out m × hd (lengths
    // checked by the caller).
    unsafe { candle_gemm((m, hd, n), out, (scores, n), (v, 1, hd)) };
}

/// One batch item of candle's `matmul` (`dst` `m × n` row-major = `lhs` `m × k` with row
/// stride `lhs_rs` times `rhs` `k × n` with column and row strides `rhs_cs`, `rhs_rs`): the same
/// `gemm` call with the same arguments, so the same bits.
///
/// # Safety
/// Every element those strides reach lies inside its slice.
unsafe fn candle_gemm(
    (m, n, k): (usize, usize, usize),
    dst: &mut [f32],
    lhs: (&[f32], usize),
    rhs: (&[f32], usize, usize),
) {
    candle_gemm_strided((m, n, k), (dst, n), lhs, rhs)
}

/// [`candle_gemm`] into rows `dst_rs` apart (the arithmetic does not depend on where the
/// results go).
///
/// # Safety
/// Every element those strides reach lies inside its slice.
pub(super) unsafe fn candle_gemm_strided(
    (m, n, k): (usize, usize, usize),
    (dst, dst_rs): (&mut [f32], usize),
    (lhs, lhs_rs): (&[f32], usize),
    (rhs, rhs_cs, rhs_rs): (&[f32], usize, usize),
) {
    gemm(
        m,
        n,
        k,
        dst.as_mut_ptr(),
        1,
        dst_rs as isize,
        false,
        lhs.as_ptr(),
        1,
        lhs_rs as isize,
        rhs.as_ptr(),
        rhs_cs as isize,
        rhs_rs as isize,
        0.0,
        1.0,
        false,
        false,
        false,
        Parallelism::None,
    );
}

/// `scores = q · kᵀ` exactly as candle's `matmul` computes it for one batch item.
///
/// # Safety
/// `q` holds `m × hd` values, `k` `n × hd`, `scores` `m × n` (row-major).
unsafe fn gemm_scores(m: usize, hd: usize, n: usize, q: &[f32], k: &[f32], scores: &mut [f32]) {
    // kᵀ: column j is position j (stride hd), its rows the head dimension (stride 1).
    candle_gemm((m, n, hd), scores, (q, hd), (k, hd, 1));
}

/// Whether [`scores_avx512`] gives gemm's bits for `m` query rows of `hd` values against `n`
/// positions. gemm sums each score as one fused multiply-add chain on its tiled path; for
/// `m × n ≤ 256` it takes a horizontal kernel (another order), and with one query row a
/// matrix-vector one, so those stay with gemm. The chain also assumes gemm does not split the
/// head dimension into blocks (its block depth comes from the cache sizes), so each
/// `(m, hd)` is checked once per process against gemm itself on 300 positions.
pub(super) fn own_scores(m: usize, hd: usize, n: usize) -> bool {
    use std::sync::Mutex;
    static CHECKED: Mutex<Vec<((usize, usize), bool)>> = Mutex::new(Vec::new());
    if super::path().name != "avx512" || !hd.is_multiple_of(16) || !(2..=8).contains(&m) {
        return false;
    }
    if m * n <= 256 {
        return false;
    }
    let mut checked = CHECKED.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(&(_, same)) = checked.iter().find(|(shape, _)| *shape == (m, hd)) {
        return same;
    }
    let positions = 300;
    let values = |count: usize, seed: usize| -> Vec<f32> {
        (0..count)
            .map(|i| ((i * 7919 + seed * 104_729) % 2003) as f32 / 1001.0 - 1.0)
            .collect()
    };
    let (q, k) = (values(m * hd, 1), values(positions * hd, 2));
    let (mut ours, mut theirs) = (vec![0f32; m * positions], vec![0f32; m * positions]);
    // SAFETY: the path is avx512 and the lengths match the shapes.
    #[cfg(target_arch = "x86_64")]
    unsafe {
        scores_avx512::<f32>(m, hd, positions, &q, &k, &[], &mut ours);
        gemm_scores(m, hd, positions, &q, &k, &mut theirs);
    }
    let same = ours
        .iter()
        .zip(&theirs)
        .all(|(a, b)| a.to_bits() == b.to_bits());
    checked.push(((m, hd), same));
    same
}

/// candle-nn's `softmax_last_dim` for one row, in place: the same max, `exp`, vectorised sum
/// and division, so the same bits.
/// [`softmax_row`] of a row whose positions from `seen` on are masked (minus infinity in
/// candle's masked scores): only the first `seen` values are read, the rest become the zeros
/// candle's softmax makes of them, and the sum runs over the whole row as candle's does, so
/// the bits are the same.
pub(super) fn softmax_prefix(row: &mut [f32], seen: usize) {
    let (kept, masked) = row.split_at_mut(seen);
    let mut max = f32::NEG_INFINITY;
    // SAFETY: the pointer covers `kept.len()` elements (at least one: a row sees its own
    // position).
    unsafe { f32::vec_reduce_max(kept.as_ptr(), &mut max, kept.len()) };
    for x in kept.iter_mut() {
        *x = (*x - max).exp();
    }
    masked.fill(0.0);
    let mut sum = 0f32;
    // SAFETY: the pointer covers `row.len()` elements.
    unsafe { f32::vec_reduce_sum(row.as_ptr(), &mut sum, row.len()) };
    for x in &mut row[..seen] {
        *x /= sum;
    }
}

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

/// A 16 × 16 block transposed in registers: `rows[r]` lane `c` becomes `out[c]` lane `r`.
///
/// # Safety
/// The CPU must have AVX-512 F.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn transpose16(r: [std::arch::x86_64::__m512; 16]) -> [std::arch::x86_64::__m512; 16] {
    use std::arch::x86_64::*;
    // Pairs of rows interleaved within each 128-bit lane.
    let t: [__m512; 16] = std::array::from_fn(|i| {
        let (a, b) = (r[i & !1], r[i | 1]);
        if i % 2 == 0 {
            _mm512_unpacklo_ps(a, b)
        } else {
            _mm512_unpackhi_ps(a, b)
        }
    });
    // Four rows' values of one column in each 128-bit lane.
    let u: [__m512; 16] = std::array::from_fn(|i| {
        let g = i / 4 * 4;
        let (a, b) = (t[g + (i % 4) / 2], t[g + 2 + (i % 4) / 2]);
        if i % 2 == 0 {
            _mm512_shuffle_ps::<0x44>(a, b)
        } else {
            _mm512_shuffle_ps::<0xEE>(a, b)
        }
    });
    // 128-bit lanes gathered across groups of four rows, twice.
    let v: [__m512; 16] = std::array::from_fn(|i| {
        let g = i / 8 * 8;
        let (a, b) = (u[g + i % 4], u[g + 4 + i % 4]);
        if i % 8 < 4 {
            _mm512_shuffle_f32x4::<0x88>(a, b)
        } else {
            _mm512_shuffle_f32x4::<0xDD>(a, b)
        }
    });
    std::array::from_fn(|i| {
        let (a, b) = (v[i % 8], v[8 + i % 8]);
        if i < 8 {
            _mm512_shuffle_f32x4::<0x88>(a, b)
        } else {
            _mm512_shuffle_f32x4::<0xDD>(a, b)
        }
    })
}

/// How far ahead of the block being read the score kernel asks for the keys: 4 KiB, the next
/// 16 rows of a 3B head's f16 keys. It used to ask for the next 16 rows' lines at every step
/// (each line twice, and 16 prefetches in a row that stalled on full fill buffers: 30% of the
/// f16 attention's samples); once per line, spread over the steps, the 4k-position attention
/// of a 3B step went from 23.7 to 20.8 ms (criterion `attention`, Intel Xeon, 2 threads).
/// Distances of 8 and 16 KiB, and prefetching past a span's end, were within the noise.
const KEYS_PREFETCH_BYTES: usize = 4096;

/// `scores[i][j] = q[i] · k[j]` (`q` `[group, hd]`, `k` `[positions, hd]`) as one fused
/// multiply-add chain per score from 0 over the head dimension in order, which is what gemm's
/// tiled path computes (one accumulator per output, the summed axis in one block). 16
/// positions per instruction: K is read row by row, 16 × 16 blocks transposed in registers.
/// Needs `hd` a multiple of 16 and a group of at most 8.
///
/// The cache comes from memory (85 MB a 3B step), and 16 rows read a line at a time are more
/// streams than the hardware prefetchers follow (6 GB/s a thread measured), so each step
/// prefetches a share of the keys [`KEYS_PREFETCH_BYTES`] ahead, and a share of `then` (the
/// values the caller reads next) into L2.
///
/// # Safety
/// The CPU must have AVX-512 F; `q` holds `group × hd` values, `k` `positions × hd`, `scores`
/// `group × positions`.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
pub(super) unsafe fn scores_avx512<E: CacheElement>(
    group: usize,
    hd: usize,
    positions: usize,
    q: &[f32],
    k: &[E],
    then: &[E],
    scores: &mut [f32],
) {
    use std::arch::x86_64::*;
    debug_assert!(hd.is_multiple_of(16) && group <= 8);
    // Lines of `then` to prefetch per step so that all are asked for by the last one.
    let steps = positions.div_ceil(16) * (hd / 16);
    let k_bytes = std::mem::size_of_val(k);
    let step_lines = (16 * 16 * std::mem::size_of::<E>()).div_ceil(64);
    let ahead = KEYS_PREFETCH_BYTES;
    let then_lines = std::mem::size_of_val(then).div_ceil(64);
    let per_step = then_lines.div_ceil(steps.max(1));
    let mut next_then = 0;
    let mut j0 = 0;
    while j0 < positions {
        let lanes = (positions - j0).min(16);
        let mask: __mmask16 = if lanes == 16 {
            0xFFFF
        } else {
            (1u16 << lanes) - 1
        };
        let mut acc = [_mm512_setzero_ps(); 8];
        let base = k.as_ptr().add(j0 * hd);
        for d0 in (0..hd).step_by(16) {
            // Prefetching never faults; the addresses stay inside `k` and `then`. Each line of
            // the keys `ahead` bytes on is asked for once: the 16 rows of a block are
            // contiguous, and a step reads 16 × 16 of them.
            let first = (j0 * hd + d0 * 16) * std::mem::size_of::<E>() + ahead;
            for line in 0..step_lines {
                let at = first + 64 * line;
                if at < k_bytes {
                    _mm_prefetch::<_MM_HINT_T0>((k.as_ptr() as *const i8).add(at));
                }
            }
            for _ in 0..per_step {
                if next_then < then_lines {
                    _mm_prefetch::<_MM_HINT_T1>((then.as_ptr() as *const i8).add(64 * next_then));
                    next_then += 1;
                }
            }
            let rows: [__m512; 16] = std::array::from_fn(|r| {
                if r < lanes {
                    E::load16(base.add(r * hd + d0))
                } else {
                    _mm512_setzero_ps()
                }
            });
            let columns = transpose16(rows);
            for (dd, column) in columns.iter().enumerate() {
                for (i, a) in acc.iter_mut().enumerate().take(group) {
                    let qv = _mm512_set1_ps(*q.get_unchecked(i * hd + d0 + dd));
                    *a = _mm512_fmadd_ps(qv, *column, *a);
                }
            }
        }
        for (i, a) in acc.iter().enumerate().take(group) {
            _mm512_mask_storeu_ps(scores.as_mut_ptr().add(i * positions + j0), mask, *a);
        }
        j0 += 16;
    }
}
