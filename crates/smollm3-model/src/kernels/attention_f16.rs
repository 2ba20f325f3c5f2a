//! Decode attention over the f16 KV cache on AVX-512 and AVX2: each KV head's positions split
//! into spans across the pool, one pass per span, the spans' partial softmaxes merged. The
//! AVX-512 span kernel is here, the AVX2 one in `attention_f16_avx2`.
//!
//! Why: with one work item per KV head (4 for SmolLM3-3B, 3 for SmolLM2-135M) a head ran its
//! score pass, a softmax of 2 M scalar `expf` a step at 4k positions, then its values pass,
//! one after the other on one thread, so the reads of the cache did not overlap with the
//! arithmetic: 34 ms for the 302 MB a 3B step reads at 4k positions (8.3 GiB/s; criterion
//! `attention` group, Intel Xeon, 2 threads), where the same bytes stream in about 15 ms. And
//! SmolLM2's three heads leave one of two threads idle for a third of the pass. Here a work
//! item is a span of at most [`MAX_SPAN`] positions of one head (keys and values 128 KB for a
//! 3B head, so the values prefetched during the score pass are still in L2), the exponentials
//! are 16 at a time ([`exp16`]), and the spans of a head are merged as in flash-decoding:
//! with `mₛ`, `lₛ`, `oₛ` a span's row maximum, sum of `exp(score − mₛ)` and unnormalised
//! weighted values, `out = Σ exp(mₛ − m) oₛ / Σ exp(mₛ − m) lₛ` with `m` the largest `mₛ`.
//!
//! There are no candle bits to keep here (the keys and values were rounded to f16 when
//! stored; the f32 cache keeps the parity tests' bits): `tests.rs` compares the results with
//! candle's ops on the same rounded values, and `exp16` with `f32::exp`.

use std::ops::Range;

use half::f16;

use super::attention::Shape;

/// Rows of probabilities the values kernel reads: query groups up to this many, padded with
/// zero rows, so that its loops have constant bounds (SmolLM3: 4, SmolLM2-135M: 3).
const HALF_ROWS: usize = 8;

/// Most positions of one head in a work item: a 3B head's 256 keys and values are 128 KB.
const MAX_SPAN: usize = 256;

/// Fewest positions in a work item: below this a span's merge costs more than it spreads.
const MIN_SPAN: usize = 32;

/// A path's kernel for one span of one head (see [`span_avx512`]).
type SpanKernel = unsafe fn(usize, usize, usize, &[f32], &[f16], &[f16], &mut [f32], &mut [f32]);

/// The span kernel of the path named `path` for `group` query rows of `hd` values: AVX-512 or
/// AVX2, whole 16-value vectors, at most [`HALF_ROWS`] rows.
fn span_kernel(path: &str, group: usize, hd: usize) -> Option<SpanKernel> {
    if !(hd.is_multiple_of(16) && (1..=HALF_ROWS).contains(&group)) {
        return None;
    }
    match path {
        #[cfg(target_arch = "x86_64")]
        "avx512" => Some(span_avx512),
        #[cfg(target_arch = "x86_64")]
        "avx2" => Some(super::attention_f16_avx2::span),
        _ => None,
    }
}

/// Whether these kernels take `group` query rows of `hd` values on the path in use.
#[cfg(test)]
pub(super) fn own_half_kernels(group: usize, hd: usize) -> bool {
    span_kernel(super::path().name, group, hd).is_some()
}

/// [`decode`] with the span kernel of the path named `path`, whatever the path in use (for
/// the tests, which compare every path the machine can run); false if the machine cannot run
/// that path or it has no span kernel for this shape.
#[cfg(test)]
pub(super) fn decode_on(
    path: &str,
    s: Shape,
    q: &[f32],
    k: &[f16],
    v: &[f16],
    out: &mut [f32],
) -> bool {
    if !super::available_paths().iter().any(|p| p.name == path) {
        return false;
    }
    match span_kernel(path, s.group, s.head_dim) {
        Some(kernel) => {
            decode_with(kernel, s, q, k, v, out);
            true
        }
        None => false,
    }
}

/// Positions per work item for `threads` threads: about four items a thread so that the pool's
/// chunks even out, within [`MIN_SPAN`]..=[`MAX_SPAN`], a multiple of 16 (the score kernel's
/// width).
fn span_len(s: Shape, threads: usize) -> usize {
    let even = (s.kv_heads * s.positions).div_ceil(4 * threads.max(1));
    even.next_multiple_of(16).clamp(MIN_SPAN, MAX_SPAN)
}

/// [`super::attention::decode`] for an f16 cache, if the path in use has a span kernel for
/// this shape (returns whether it ran); the caller checked the slices' lengths against `s`.
pub(super) fn decode(s: Shape, q: &[f32], k: &[f16], v: &[f16], out: &mut [f32]) -> bool {
    let Some(kernel) = span_kernel(super::path().name, s.group, s.head_dim) else {
        return false;
    };
    decode_with(kernel, s, q, k, v, out);
    true
}

/// [`decode`] with the span kernel `kernel`, which must be one the machine can run.
fn decode_with(kernel: SpanKernel, s: Shape, q: &[f32], k: &[f16], v: &[f16], out: &mut [f32]) {
    let (group, hd) = (s.group, s.head_dim);
    let pool = super::pool();
    let span = span_len(s, pool.threads());
    let spans = s.positions.div_ceil(span);
    // A span's partial result: the rows' maxima, their sums, then the rows' weighted values.
    let stride = group * (hd + 2);
    let mut parts = vec![
        0f32;
        if spans > 1 {
            s.kv_heads * spans * stride
        } else {
            0
        }
    ];
    let parts_address = parts.as_mut_ptr() as usize;
    let out_address = out.as_mut_ptr() as usize;
    pool.execute_chunked(s.kv_heads * spans, |items: Range<usize>| {
        let mut scores = vec![0f32; HALF_ROWS * span];
        // One span's partial result when a head is a single span (merged straight into `out`).
        let mut alone = vec![0f32; if spans == 1 { stride } else { 0 }];
        for item in items {
            let (h, first) = (item / spans, item % spans * span);
            let len = span.min(s.positions - first);
            let cache = h * s.head_stride + first * hd..h * s.head_stride + (first + len) * hd;
            let part = if spans == 1 {
                &mut alone[..]
            } else {
                // SAFETY: `parts` holds `kv_heads × spans` partial results and each is written
                // by exactly one work item.
                unsafe {
                    std::slice::from_raw_parts_mut(
                        (parts_address as *mut f32).add(item * stride),
                        stride,
                    )
                }
            };
            let scores = &mut scores[..HALF_ROWS * len];
            scores[group * len..].fill(0.0);
            let q = &q[h * group * hd..(h + 1) * group * hd];
            // SAFETY: `span_kernel` gave a kernel of a path the machine runs for this shape;
            // `scores` holds HALF_ROWS × len values with the rows from `group` on zero; `part`
            // holds `stride` values; the caller checked the cache slices.
            unsafe {
                kernel(
                    group,
                    hd,
                    len,
                    q,
                    &k[cache.clone()],
                    &v[cache],
                    scores,
                    part,
                )
            };
            if spans == 1 {
                // SAFETY: each head's output rows are written by exactly one work item.
                let out = unsafe {
                    std::slice::from_raw_parts_mut(
                        (out_address as *mut f32).add(h * group * hd),
                        group * hd,
                    )
                };
                merge(group, hd, part, out);
            }
        }
    });
    if spans > 1 {
        let parts = &parts;
        pool.execute_chunked(s.kv_heads, |heads: Range<usize>| {
            for h in heads {
                // SAFETY: each head's output rows are written by exactly one work item.
                let out = unsafe {
                    std::slice::from_raw_parts_mut(
                        (out_address as *mut f32).add(h * group * hd),
                        group * hd,
                    )
                };
                merge(
                    group,
                    hd,
                    &parts[h * spans * stride..(h + 1) * spans * stride],
                    out,
                );
            }
        });
    }
}

/// A softmax of `row[..kept]` in place, the rest of `row` set to 0 (the masked positions of a
/// prompt's row): the exponentials 16 or 8 at a time where the path has them.
pub(super) fn softmax_prefix_fast(row: &mut [f32], kept: usize) {
    let (kept, masked) = row.split_at_mut(kept);
    masked.fill(0.0);
    let sum = match super::path().name {
        // SAFETY: the path says the CPU has AVX-512 F; a row sees at least its own position.
        #[cfg(target_arch = "x86_64")]
        "avx512" => unsafe { exp_row(kept) }.1,
        // SAFETY: the AVX2 path means AVX2, FMA and F16C; `kept` is not empty.
        #[cfg(target_arch = "x86_64")]
        "avx2" => unsafe { super::attention_f16_avx2::exp_row(kept) }.1,
        _ => {
            let max = kept.iter().fold(f32::NEG_INFINITY, |m, &x| m.max(x));
            kept.iter_mut().fold(0f32, |sum, x| {
                *x = (*x - max).exp();
                sum + *x
            })
        }
    };
    let inverse = 1.0 / sum;
    for x in kept.iter_mut() {
        *x *= inverse;
    }
}

/// One head's output rows (`group × hd`) from the partial results of its spans, `parts`
/// holding `group` maxima, `group` sums and `group × hd` weighted values per span.
fn merge(group: usize, hd: usize, parts: &[f32], out: &mut [f32]) {
    let stride = group * (hd + 2);
    for (i, row) in out.chunks_exact_mut(hd).enumerate() {
        let max = parts
            .chunks_exact(stride)
            .fold(f32::NEG_INFINITY, |m, part| m.max(part[i]));
        row.fill(0.0);
        let mut sum = 0f32;
        for part in parts.chunks_exact(stride) {
            let weight = (part[i] - max).exp();
            sum += weight * part[group + i];
            let values = &part[2 * group + i * hd..2 * group + (i + 1) * hd];
            for (o, x) in row.iter_mut().zip(values) {
                *o += weight * x;
            }
        }
        let inverse = 1.0 / sum;
        for o in row.iter_mut() {
            *o *= inverse;
        }
    }
}

/// One span of one head: scores straight from the halves, `exp(score − row max)` in place,
/// then one streaming pass over the values; `part` gets the rows' maxima, sums and weighted
/// values (unnormalised).
///
/// # Safety
/// AVX-512 F; `q` holds `group × hd` values, `k` and `v` `len × hd`, `scores` `HALF_ROWS ×
/// len` with the rows from `group` on zero, `part` `group × (hd + 2)`; `hd` a multiple of 16,
/// `group` at most [`HALF_ROWS`].
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
#[allow(clippy::too_many_arguments)]
unsafe fn span_avx512(
    group: usize,
    hd: usize,
    len: usize,
    q: &[f32],
    k: &[f16],
    v: &[f16],
    scores: &mut [f32],
    part: &mut [f32],
) {
    super::attention::scores_avx512(group, hd, len, q, k, v, scores);
    let (stats, values) = part.split_at_mut(2 * group);
    for (i, row) in scores[..group * len].chunks_exact_mut(len).enumerate() {
        let (max, sum) = exp_row(row);
        stats[i] = max;
        stats[group + i] = sum;
    }
    if group <= 4 && hd.is_multiple_of(64) {
        weighted_values_avx512::<4, 4>(group, hd, len, scores, v, values)
    } else {
        weighted_values_avx512::<HALF_ROWS, 1>(group, hd, len, scores, v, values)
    }
}

/// `row[j] = exp(row[j] − max)` in place; returns `(max, Σ row[j])`. A NaN score makes the
/// sum NaN (so the head's output), as candle's softmax would.
///
/// # Safety
/// AVX-512 F; `row` not empty.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn exp_row(row: &mut [f32]) -> (f32, f32) {
    use std::arch::x86_64::*;
    let n = row.len();
    let p = row.as_mut_ptr();
    let mask_at = |j: usize| -> __mmask16 {
        let lanes = (n - j).min(16);
        if lanes == 16 {
            0xFFFF
        } else {
            (1u16 << lanes) - 1
        }
    };
    let mut max = _mm512_set1_ps(f32::NEG_INFINITY);
    for j in (0..n).step_by(16) {
        max = _mm512_max_ps(max, _mm512_mask_loadu_ps(max, mask_at(j), p.add(j)));
    }
    let max = _mm512_reduce_max_ps(max);
    let shift = _mm512_set1_ps(max);
    let mut sum = _mm512_setzero_ps();
    for j in (0..n).step_by(16) {
        let mask = mask_at(j);
        let e = exp16(_mm512_sub_ps(_mm512_maskz_loadu_ps(mask, p.add(j)), shift));
        _mm512_mask_storeu_ps(p.add(j), mask, e);
        sum = _mm512_mask_add_ps(sum, mask, sum, e);
    }
    (max, _mm512_reduce_add_ps(sum))
}

/// Cephes' `expf`: ln 2 in two parts (the first with few bits, so `n × it` is exact for the
/// `n` of an f32 exponent), and the coefficients of `(eʳ − 1 − r) / r²` on |r| ≤ ln 2 / 2,
/// highest first. [`exp16`] and the AVX2 `exp8` share them.
pub(super) const EXP_LN2: [f32; 2] = [0.693_359_4, -2.121_944_4e-4];
pub(super) const EXP_POLY: [f32; 6] = [
    1.987_569_1e-4,
    1.398_199_9e-3,
    8.333_452e-3,
    4.166_579_6e-2,
    0.166_666_65,
    0.5,
];

/// eˣ in each of 16 lanes: Cephes' `expf` (`x = n ln 2 + r` with ln 2 in two parts, `eʳ` by a
/// degree-5 polynomial in `r`, then `× 2ⁿ` by `vscalefps`, which also gives 0 and infinity
/// where the result leaves f32). Within 2 ulps of `f32::exp` (tested); NaN stays NaN.
///
/// # Safety
/// AVX-512 F.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
#[inline]
pub(super) unsafe fn exp16(x: std::arch::x86_64::__m512) -> std::arch::x86_64::__m512 {
    use std::arch::x86_64::*;
    let c = _mm512_set1_ps;
    // Below −104 the result is 0 in f32; clamping keeps `n` finite (−∞ → 0). `vmaxps` returns
    // its second operand when one is NaN, so NaN stays NaN.
    let x = _mm512_max_ps(c(-104.0), _mm512_min_ps(c(104.0), x));
    let n = _mm512_roundscale_ps::<{ _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC }>(
        _mm512_mul_ps(x, c(std::f32::consts::LOG2_E)),
    );
    let r = _mm512_fnmadd_ps(n, c(EXP_LN2[0]), x);
    let r = _mm512_fnmadd_ps(n, c(EXP_LN2[1]), r);
    let mut poly = c(EXP_POLY[0]);
    for coefficient in &EXP_POLY[1..] {
        poly = _mm512_fmadd_ps(poly, r, c(*coefficient));
    }
    let e = _mm512_fmadd_ps(poly, _mm512_mul_ps(r, r), _mm512_add_ps(r, c(1.0)));
    _mm512_scalef_ps(e, n)
}

/// `out[i] = Σⱼ probs[i][j] · v[j]` for the first `m` of `G` rows of `probs` (`G × n`, rows
/// from `m` on zero) and f16 values `v` (`n × hd`): `C` vectors of 16 values a pass, so one
/// pass reads each value once (3B: 4 rows × 4 vectors, 16 accumulators; two passes of 64
/// values of each 128-value row, two whole cache lines).
///
/// # Safety
/// AVX-512 F; `hd` a multiple of `16 × C`; lengths as above, `out` `m × hd`.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn weighted_values_avx512<const G: usize, const C: usize>(
    m: usize,
    hd: usize,
    n: usize,
    probs: &[f32],
    v: &[f16],
    out: &mut [f32],
) {
    use super::attention::CacheElement;
    use std::arch::x86_64::*;
    debug_assert!(m <= G && hd.is_multiple_of(16 * C) && probs.len() >= G * n);
    for c0 in (0..hd).step_by(16 * C) {
        let mut acc = [[_mm512_setzero_ps(); C]; G];
        for j in 0..n {
            let row = v.as_ptr().add(j * hd + c0);
            let values: [__m512; C] = std::array::from_fn(|c| f16::load16(row.add(16 * c)));
            for (i, acc) in acc.iter_mut().enumerate() {
                let p = _mm512_set1_ps(*probs.get_unchecked(i * n + j));
                for (a, value) in acc.iter_mut().zip(&values) {
                    *a = _mm512_fmadd_ps(p, *value, *a);
                }
            }
        }
        for (i, acc) in acc.iter().enumerate().take(m) {
            for (c, a) in acc.iter().enumerate() {
                _mm512_storeu_ps(out.as_mut_ptr().add(i * hd + c0 + 16 * c), *a);
            }
        }
    }
}
