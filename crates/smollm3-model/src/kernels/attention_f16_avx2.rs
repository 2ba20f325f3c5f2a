//! The f16 decode attention's span kernel on AVX2 (with FMA and F16C): what
//! [`super::attention_f16`] runs on machines without AVX-512 (the AVX2-only EPYCs this
//! project lands on).
//!
//! Why: there a head's f16 keys and values were widened to f32 and went through the f32
//! cache's per-head code (gemm, candle's scalar softmax): a 3B step's attention took 10.6 ms at
//! 512 positions and 93 ms at 4096 (criterion `attention` with `SMOLLM3_KERNELS=avx2` on an
//! Intel Xeon, 2 threads), as long as reading all the weights. Here a span's scores are dot
//! products of each key row with the group's query rows (8 values an instruction, the keys
//! converted by `vcvtph2ps`), the exponentials 8 at a time ([`exp8`]), and the weighted values
//! one pass over the span's values per 16 columns.

use half::f16;

use super::attention_f16::{EXP_LN2, EXP_POLY};

/// One span of one head, as [`super::attention_f16`]'s AVX-512 kernel: scores, `exp(score −
/// row max)` in place, then the unnormalised weighted values; `part` gets the rows' maxima,
/// sums and weighted values.
///
/// # Safety
/// AVX2, FMA and F16C; `q` holds `group × hd` values, `k` and `v` `len × hd`, `scores`
/// `rows × len` (`rows` at least 8, the rows from `group` on zero), `part` `group × (hd + 2)`;
/// `hd` a multiple of 16, `group` in 1..=8.
#[allow(clippy::too_many_arguments)]
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) unsafe fn span(
    group: usize,
    hd: usize,
    len: usize,
    q: &[f32],
    k: &[f16],
    v: &[f16],
    scores: &mut [f32],
    part: &mut [f32],
) {
    match group {
        1 => scores_rows::<1>(hd, len, q, k, v, scores),
        2 => scores_rows::<2>(hd, len, q, k, v, scores),
        3 => scores_rows::<3>(hd, len, q, k, v, scores),
        4 => scores_rows::<4>(hd, len, q, k, v, scores),
        5 => scores_rows::<5>(hd, len, q, k, v, scores),
        6 => scores_rows::<6>(hd, len, q, k, v, scores),
        7 => scores_rows::<7>(hd, len, q, k, v, scores),
        _ => scores_rows::<8>(hd, len, q, k, v, scores),
    }
    let (stats, values) = part.split_at_mut(2 * group);
    for (i, row) in scores[..group * len].chunks_exact_mut(len).enumerate() {
        let (max, sum) = exp_row(row);
        stats[i] = max;
        stats[group + i] = sum;
    }
    if group <= 4 {
        weighted_values::<4, 2>(group, hd, len, scores, v, values)
    } else {
        weighted_values::<8, 1>(group, hd, len, scores, v, values)
    }
}

/// `scores[i][j] = q[i] · k[j]` for the `G` query rows: one key row at a time, `G`
/// accumulators of 8, each reduced once per key; the keys' lines asked for 4 KiB ahead and
/// the values (read next) into L2 along the way.
///
/// # Safety
/// As [`span`], with `G` the group.
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn scores_rows<const G: usize>(
    hd: usize,
    len: usize,
    q: &[f32],
    k: &[f16],
    then: &[f16],
    scores: &mut [f32],
) {
    use std::arch::x86_64::*;
    const AHEAD: usize = 4096;
    let (k_bytes, then_bytes) = (std::mem::size_of_val(k), std::mem::size_of_val(then));
    let row_bytes = 2 * hd;
    for j in 0..len {
        // Prefetching never faults; the addresses stay inside `k` and `then`.
        for line in (0..row_bytes).step_by(64) {
            let at = j * row_bytes + line;
            if at + AHEAD < k_bytes {
                _mm_prefetch::<_MM_HINT_T0>((k.as_ptr() as *const i8).add(at + AHEAD));
            }
            if at < then_bytes {
                _mm_prefetch::<_MM_HINT_T1>((then.as_ptr() as *const i8).add(at));
            }
        }
        let row = k.as_ptr().add(j * hd);
        let mut acc = [_mm256_setzero_ps(); G];
        for d0 in (0..hd).step_by(8) {
            let key = _mm256_cvtph_ps(_mm_loadu_si128(row.add(d0) as *const __m128i));
            for (i, a) in acc.iter_mut().enumerate() {
                let qv = _mm256_loadu_ps(q.as_ptr().add(i * hd + d0));
                *a = _mm256_fmadd_ps(qv, key, *a);
            }
        }
        for (i, a) in acc.iter().enumerate() {
            *scores.get_unchecked_mut(i * len + j) = sum8(*a);
        }
    }
}

/// The sum of a vector's 8 lanes.
#[target_feature(enable = "avx2")]
#[inline]
unsafe fn sum8(x: std::arch::x86_64::__m256) -> f32 {
    use std::arch::x86_64::*;
    let s = _mm_add_ps(_mm256_castps256_ps128(x), _mm256_extractf128_ps::<1>(x));
    let s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    _mm_cvtss_f32(_mm_add_ss(s, _mm_movehdup_ps(s)))
}

/// `row[j] = exp(row[j] − max)` in place; returns `(max, Σ row[j])` (a NaN score makes the sum
/// NaN). The tail past a multiple of 8 goes through a padded copy.
///
/// # Safety
/// AVX2 and FMA; `row` not empty.
#[target_feature(enable = "avx2,fma")]
pub(super) unsafe fn exp_row(row: &mut [f32]) -> (f32, f32) {
    use std::arch::x86_64::*;
    let (body, tail) = row.split_at_mut(row.len() / 8 * 8);
    let mut max = _mm256_set1_ps(f32::NEG_INFINITY);
    for chunk in body.chunks_exact(8) {
        max = _mm256_max_ps(max, _mm256_loadu_ps(chunk.as_ptr()));
    }
    let mut lanes = [0f32; 8];
    _mm256_storeu_ps(lanes.as_mut_ptr(), max);
    let max = lanes
        .iter()
        .chain(tail.iter())
        .fold(f32::NEG_INFINITY, |m, &x| m.max(x));
    let shift = _mm256_set1_ps(max);
    let mut sum = _mm256_setzero_ps();
    for chunk in body.chunks_exact_mut(8) {
        let e = exp8(_mm256_sub_ps(_mm256_loadu_ps(chunk.as_ptr()), shift));
        _mm256_storeu_ps(chunk.as_mut_ptr(), e);
        sum = _mm256_add_ps(sum, e);
    }
    if !tail.is_empty() {
        // Padding at −∞ gives 0, which adds nothing to the sum.
        let mut padded = [f32::NEG_INFINITY; 8];
        padded[..tail.len()].copy_from_slice(tail);
        let e = exp8(_mm256_sub_ps(_mm256_loadu_ps(padded.as_ptr()), shift));
        _mm256_storeu_ps(padded.as_mut_ptr(), e);
        tail.copy_from_slice(&padded[..tail.len()]);
        sum = _mm256_add_ps(sum, e);
    }
    (max, sum8(sum))
}

/// eˣ in each of 8 lanes: the same Cephes `expf` as the AVX-512 `exp16`, with `2ⁿ` built in
/// the exponent bits (in two factors, so that `n` from −126 to 128 stays in range). Within 2
/// ulps of `f32::exp` where the result is a normal f32 (tested); 0 where `f32::exp` gives a
/// subnormal or 0 (x below −87.34, nothing a softmax can see); NaN stays NaN.
///
/// # Safety
/// AVX2 and FMA.
#[target_feature(enable = "avx2,fma")]
#[inline]
pub(super) unsafe fn exp8(x: std::arch::x86_64::__m256) -> std::arch::x86_64::__m256 {
    use std::arch::x86_64::*;
    let c = _mm256_set1_ps;
    // The smallest normal f32 is e^−87.3365.
    let low = c(-87.336_55);
    let below = _mm256_cmp_ps::<_CMP_LT_OQ>(x, low);
    // `min`/`max` return their second operand when one is NaN, so NaN stays NaN.
    let x = _mm256_max_ps(low, _mm256_min_ps(c(88.8), x));
    let n = _mm256_round_ps::<{ _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC }>(_mm256_mul_ps(
        x,
        c(std::f32::consts::LOG2_E),
    ));
    let r = _mm256_fnmadd_ps(n, c(EXP_LN2[0]), x);
    let r = _mm256_fnmadd_ps(n, c(EXP_LN2[1]), r);
    let mut poly = c(EXP_POLY[0]);
    for coefficient in &EXP_POLY[1..] {
        poly = _mm256_fmadd_ps(poly, r, c(*coefficient));
    }
    let e = _mm256_fmadd_ps(poly, _mm256_mul_ps(r, r), _mm256_add_ps(r, c(1.0)));
    // 2ⁿ = 2^(n/2) · 2^(n − n/2), each a normal f32 for n in −126..=128.
    let n = _mm256_cvtps_epi32(n);
    let half = _mm256_srai_epi32::<1>(n);
    let power = |m: __m256i| {
        _mm256_castsi256_ps(_mm256_slli_epi32::<23>(_mm256_add_epi32(
            m,
            _mm256_set1_epi32(127),
        )))
    };
    let y = _mm256_mul_ps(
        _mm256_mul_ps(e, power(half)),
        power(_mm256_sub_epi32(n, half)),
    );
    _mm256_andnot_ps(below, y)
}

/// `out[i] = Σⱼ probs[i][j] · v[j]` for the first `m` of `G` rows of `probs` (`G × n`, rows
/// from `m` on zero) and f16 values `v` (`n × hd`): `C` vectors of 8 values a pass (3B: 4
/// rows × 2 vectors, 8 accumulators in AVX2's 16 registers; 8 passes over the span's values,
/// which the score pass brought into L2).
///
/// # Safety
/// AVX2, FMA and F16C; `hd` a multiple of `8 × C`; lengths as above, `out` `m × hd`.
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn weighted_values<const G: usize, const C: usize>(
    m: usize,
    hd: usize,
    n: usize,
    probs: &[f32],
    v: &[f16],
    out: &mut [f32],
) {
    use std::arch::x86_64::*;
    debug_assert!(m <= G && hd.is_multiple_of(8 * C) && probs.len() >= G * n);
    for c0 in (0..hd).step_by(8 * C) {
        let mut acc = [[_mm256_setzero_ps(); C]; G];
        for j in 0..n {
            let row = v.as_ptr().add(j * hd + c0);
            let values: [__m256; C] = std::array::from_fn(|c| {
                _mm256_cvtph_ps(_mm_loadu_si128(row.add(8 * c) as *const __m128i))
            });
            for (i, acc) in acc.iter_mut().enumerate() {
                let p = _mm256_set1_ps(*probs.get_unchecked(i * n + j));
                for (a, value) in acc.iter_mut().zip(&values) {
                    *a = _mm256_fmadd_ps(p, *value, *a);
                }
            }
        }
        for (i, acc) in acc.iter().enumerate().take(m) {
            for (c, a) in acc.iter().enumerate() {
                _mm256_storeu_ps(out.as_mut_ptr().add(i * hd + c0 + 8 * c), *a);
            }
        }
    }
}
