//! Q4_K and Q6_K row products for decode (one activation row), on AVX-512 and AVX2.
//!
//! Why: a decode step reads every weight once, and candle's kernel (ggml's AVX2 code, 32 values
//! per instruction) spent 76% of a 3B decode step (Zen 4, 2 threads) in these two types. On
//! AVX-512 the file's blocks are unpacked in registers, 64 values per instruction: Q4_K's
//! nibbles with one variable shift and one mask; Q6_K's high bits with a per-half variable
//! shift; the scales picked per 16 or 32 values with `vpermw`. On AVX2 the code is ggml's own.
//! Both ask for the weights `PREFETCH_BYTES` ahead (decode on an Intel Xeon went from 68% of
//! a plain streaming read to more than it measured), and both run as one pool job for the matrices
//! that share an input ([`gemv_shared`]), with the activation row quantized once. The integer
//! lanes, float work and reductions are those of ggml's AVX2 `vec_dot_q4_K_q8_K` /
//! `vec_dot_q6_K_q8_K`, so the results are candle's bits (tested on every path); the portable
//! path keeps candle's kernel.

use super::kquant::{
    finish, hsum_float_8, pair_sums, quantize_row, BlockQ4K, BlockQ6K, BlockQ8K, SuperBlock, QK_K,
};

/// Q4_K's eight 6-bit scales and eight mins as bytes, unpacked with ggml's `utmp` word
/// arithmetic (the same values as [`BlockQ4K::scale_min`]).
fn q4k_scales_and_mins(x: &BlockQ4K) -> ([u8; 8], [u8; 8]) {
    const KMASK1: u32 = 0x3f3f3f3f;
    const KMASK2: u32 = 0x0f0f0f0f;
    const KMASK3: u32 = 0x03030303;
    let word = |i: usize| {
        u32::from_le_bytes([
            x.scales[4 * i],
            x.scales[4 * i + 1],
            x.scales[4 * i + 2],
            x.scales[4 * i + 3],
        ])
    };
    let (u0, u1, u2) = (word(0), word(1), word(2));
    let scales_hi = (u2 & KMASK2) | (((u0 >> 6) & KMASK3) << 4);
    let mins_lo = u1 & KMASK1;
    let mins_hi = ((u2 >> 4) & KMASK2) | (((u1 >> 6) & KMASK3) << 4);
    let scales_lo = u0 & KMASK1;
    let mut scales = [0u8; 8];
    let mut mins = [0u8; 8];
    scales[..4].copy_from_slice(&scales_lo.to_le_bytes());
    scales[4..].copy_from_slice(&scales_hi.to_le_bytes());
    mins[..4].copy_from_slice(&mins_lo.to_le_bytes());
    mins[4..].copy_from_slice(&mins_hi.to_le_bytes());
    (scales, mins)
}

/// `h.to_f32()` in one instruction (the same exact conversion): `half` checks the CPU for
/// F16C at every call, a load, two tests and a branch around an out-of-line path, in every
/// super-block of these loops.
///
/// # Safety
/// The CPU must have F16C (every path that runs these kernels checks for it).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "f16c")]
#[inline]
unsafe fn f16_to_f32(h: half::f16) -> f32 {
    use std::arch::x86_64::*;
    _mm_cvtss_f32(_mm_cvtph_ps(_mm_cvtsi32_si128(i32::from(h.to_bits()))))
}

/// What both Q4_K row products do first for super-block `x` · `y`: ask for the weights ahead
/// (144 bytes: three lines cover them wherever they start), add ggml's mins term to `acc_m`,
/// and return the eight scales and ggml's `d = y.d × x.d` (the block's `d` and `dmin`, side by
/// side in the file, widened by one `vcvtph2ps`).
///
/// # Safety
/// The CPU must have AVX2 and FMA.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma,f16c")]
#[inline]
unsafe fn q4k_block_start(
    x: &BlockQ4K,
    y: &BlockQ8K,
    acc_m: &mut std::arch::x86_64::__m128,
) -> ([u8; 8], f32) {
    use std::arch::x86_64::*;
    prefetch_ahead(x, 3);
    let both = _mm_cvtph_ps(_mm_cvtsi32_si128(
        i32::from(x.d.to_bits()) | (i32::from(x.dmin.to_bits()) << 16),
    ));
    let (x_d, x_dmin) = (_mm_cvtss_f32(both), _mm_cvtss_f32(_mm_movehdup_ps(both)));
    let dmin = -y.d * x_dmin;
    let (scales, mins) = q4k_scales_and_mins(x);
    let mins16 = _mm_cvtepu8_epi16(_mm_loadl_epi64(mins.as_ptr() as *const __m128i));
    let prod = _mm_madd_epi16(mins16, pair_sums(y));
    *acc_m = _mm_fmadd_ps(_mm_set1_ps(dmin), _mm_cvtepi32_ps(prod), *acc_m);
    (scales, y.d * x_d)
}

/// One Q4_K weight row · one Q8_K activation row straight from the file's blocks (decode: each
/// weight byte is read once, so nothing is unpacked to memory), 64 values per instruction.
/// The integer lanes, float work and reductions are those of ggml's AVX2
/// `vec_dot_q4_K_q8_K`, so the result is candle's bits (tested).
///
/// # Safety
/// The CPU must have AVX-512 F and BW, AVX2 and FMA; `w` as long as `a`.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bw,avx2,fma,f16c")]
pub unsafe fn gemv_q4k_avx512(w: &[BlockQ4K], a: &[BlockQ8K]) -> f32 {
    use std::arch::x86_64::*;
    let low = _mm512_set1_epi8(0x0F);
    // For the 64 values of chunk j, lanes 0-15 of the `maddubs` output take scale 2j and
    // lanes 16-31 scale 2j + 1.
    let pick: [__m512i; 4] = std::array::from_fn(|j| {
        let lanes: [i16; 32] = std::array::from_fn(|l| (2 * j + l / 16) as i16);
        _mm512_loadu_si512(lanes.as_ptr() as *const __m512i)
    });
    // The low half's words shifted by 0, the high half's by 4: both nibbles of the 32 bytes
    // in one variable shift (a shift, a blend and the mask took one more instruction, and
    // the blend went to the shuffle port).
    let nibble_shifts = {
        let lanes: [i16; 32] = std::array::from_fn(|l| if l < 16 { 0 } else { 4 });
        _mm512_loadu_si512(lanes.as_ptr() as *const __m512i)
    };
    let mut acc = _mm256_setzero_ps();
    let mut acc_m = _mm_setzero_ps();
    for (b, y) in a.iter().enumerate() {
        let x = w.get_unchecked(b);
        let (scales, d) = q4k_block_start(x, y, &mut acc_m);
        let scales16 = _mm512_broadcast_i32x4(_mm_cvtepu8_epi16(_mm_loadl_epi64(
            scales.as_ptr() as *const __m128i
        )));
        let mut wide = _mm512_setzero_si512();
        for (j, pick) in pick.iter().enumerate() {
            // 32 bytes of nibbles in both halves: low nibbles (values 64j..64j+32) below,
            // high nibbles (64j+32..64j+64) above.
            let bytes = _mm512_broadcast_i64x4(_mm256_loadu_si256(
                x.qs.as_ptr().add(32 * j) as *const __m256i
            ));
            let q = _mm512_and_si512(_mm512_srlv_epi16(bytes, nibble_shifts), low);
            let ys = _mm512_loadu_si512(y.qs.as_ptr().add(64 * j) as *const __m512i);
            let scale = _mm512_permutexvar_epi16(*pick, scales16);
            wide = _mm512_add_epi32(wide, _mm512_madd_epi16(scale, _mm512_maddubs_epi16(q, ys)));
        }
        let sumi = _mm256_add_epi32(
            _mm512_castsi512_si256(wide),
            _mm512_extracti64x4_epi64(wide, 1),
        );
        acc = _mm256_fmadd_ps(_mm256_set1_ps(d), _mm256_cvtepi32_ps(sumi), acc);
    }
    finish(acc, acc_m)
}

/// One Q6_K weight row · one Q8_K activation row from the file's blocks (decode), 64 values
/// per instruction, with the integer lanes, float work and reduction of ggml's AVX2
/// `vec_dot_q6_K_q8_K`: candle's bits (tested).
///
/// # Safety
/// The CPU must have AVX-512 F and BW, AVX2 and FMA; `w` as long as `a`.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bw,avx2,fma,f16c")]
pub unsafe fn gemv_q6k_avx512(w: &[BlockQ6K], a: &[BlockQ8K]) -> f32 {
    use std::arch::x86_64::*;
    let low = _mm512_set1_epi8(0x0F);
    let two = _mm512_set1_epi8(3);
    let m32 = _mm512_set1_epi8(32);
    // High bits of values 0..32 / 32..64 of a half: qh shifted by 0 / 2; of 64..96 / 96..128:
    // by 4 / 6 (a 16-bit shift: the bits that cross into a byte are masked off).
    let shifts = |lo: i16, hi: i16| {
        let lanes: [i16; 32] = std::array::from_fn(|l| if l < 16 { lo } else { hi });
        _mm512_loadu_si512(lanes.as_ptr() as *const __m512i)
    };
    let (shift_a, shift_b) = (shifts(0, 2), shifts(4, 6));
    // The 16 scales as i16 in both 256-bit halves, picked per 16 values: lane l of the
    // 64 values `t` of half `j` takes scale 8j + 4t + l / 8.
    let pick: [__m512i; 4] = std::array::from_fn(|i| {
        let (j, t) = (i / 2, i % 2);
        let lanes: [i16; 32] = std::array::from_fn(|l| (8 * j + 4 * t + l / 8) as i16);
        _mm512_loadu_si512(lanes.as_ptr() as *const __m512i)
    });
    let mut acc = _mm256_setzero_ps();
    for (b, y) in a.iter().enumerate() {
        let x = w.get_unchecked(b);
        // 210 bytes: four lines.
        prefetch_ahead(x, 4);
        let d = y.d * f16_to_f32(x.d);
        let scales16 = _mm512_broadcast_i64x4(_mm256_cvtepi8_epi16(_mm_loadu_si128(
            x.scales.as_ptr() as *const __m128i,
        )));
        let mut wide = _mm512_setzero_si512();
        for j in 0..2 {
            let ql = _mm512_loadu_si512(x.ql.as_ptr().add(64 * j) as *const __m512i);
            let qh = _mm512_broadcast_i64x4(_mm256_loadu_si256(
                x.qh.as_ptr().add(32 * j) as *const __m256i
            ));
            let high = |shift: __m512i| {
                _mm512_slli_epi16(_mm512_and_si512(_mm512_srlv_epi16(qh, shift), two), 4)
            };
            let codes = [
                _mm512_or_si512(_mm512_and_si512(ql, low), high(shift_a)),
                _mm512_or_si512(
                    _mm512_and_si512(_mm512_srli_epi16(ql, 4), low),
                    high(shift_b),
                ),
            ];
            for (t, q) in codes.into_iter().enumerate() {
                let ys = _mm512_loadu_si512(y.qs.as_ptr().add(128 * j + 64 * t) as *const __m512i);
                let pairs =
                    _mm512_sub_epi16(_mm512_maddubs_epi16(q, ys), _mm512_maddubs_epi16(m32, ys));
                let scale = _mm512_permutexvar_epi16(pick[2 * j + t], scales16);
                wide = _mm512_add_epi32(wide, _mm512_madd_epi16(scale, pairs));
            }
        }
        let sumi = _mm256_add_epi32(
            _mm512_castsi512_si256(wide),
            _mm512_extracti64x4_epi64(wide, 1),
        );
        acc = _mm256_fmadd_ps(_mm256_set1_ps(d), _mm256_cvtepi32_ps(sumi), acc);
    }
    hsum_float_8(acc)
}

/// [`gemv_q4k_avx512`] on AVX2: ggml's `vec_dot_q4_K_q8_K` (32 values per instruction, one
/// scale per `madd`), with the weights prefetched.
///
/// # Safety
/// The CPU must have AVX2 and FMA; `w` as long as `a`.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma,f16c")]
pub unsafe fn gemv_q4k_avx2(w: &[BlockQ4K], a: &[BlockQ8K]) -> f32 {
    use std::arch::x86_64::*;
    let low = _mm256_set1_epi8(0x0F);
    let mut acc = _mm256_setzero_ps();
    let mut acc_m = _mm_setzero_ps();
    for (b, y) in a.iter().enumerate() {
        let x = w.get_unchecked(b);
        let (scales, d) = q4k_block_start(x, y, &mut acc_m);
        let mut sumi = _mm256_setzero_si256();
        for j in 0..QK_K / 64 {
            // Low nibbles: values 64j..64j+32 (scale 2j); high: the next 32 (scale 2j + 1).
            let bits = _mm256_loadu_si256(x.qs.as_ptr().add(32 * j) as *const __m256i);
            let q_low = _mm256_and_si256(bits, low);
            let q_high = _mm256_and_si256(_mm256_srli_epi16(bits, 4), low);
            let y_low = _mm256_loadu_si256(y.qs.as_ptr().add(64 * j) as *const __m256i);
            let y_high = _mm256_loadu_si256(y.qs.as_ptr().add(64 * j + 32) as *const __m256i);
            let scale_low = _mm256_set1_epi16(scales[2 * j] as i16);
            let scale_high = _mm256_set1_epi16(scales[2 * j + 1] as i16);
            let p_low = _mm256_madd_epi16(scale_low, _mm256_maddubs_epi16(q_low, y_low));
            sumi = _mm256_add_epi32(sumi, p_low);
            let p_high = _mm256_madd_epi16(scale_high, _mm256_maddubs_epi16(q_high, y_high));
            sumi = _mm256_add_epi32(sumi, p_high);
        }
        acc = _mm256_fmadd_ps(_mm256_set1_ps(d), _mm256_cvtepi32_ps(sumi), acc);
    }
    finish(acc, acc_m)
}

/// [`gemv_q6k_avx512`] on AVX2: ggml's `vec_dot_q6_K_q8_K`, with the weights prefetched.
///
/// # Safety
/// The CPU must have AVX2 and FMA; `w` as long as `a`.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma,f16c")]
pub unsafe fn gemv_q6k_avx2(w: &[BlockQ6K], a: &[BlockQ8K]) -> f32 {
    use std::arch::x86_64::*;
    let low = _mm256_set1_epi8(0x0F);
    let two = _mm256_set1_epi8(3);
    let m32 = _mm256_set1_epi8(32);
    let mut acc = _mm256_setzero_ps();
    for (b, y) in a.iter().enumerate() {
        let x = w.get_unchecked(b);
        prefetch_ahead(x, 4);
        let d = y.d * f16_to_f32(x.d);
        let mut sumi = _mm256_setzero_si256();
        for j in 0..QK_K / 128 {
            let ql_a = _mm256_loadu_si256(x.ql.as_ptr().add(64 * j) as *const __m256i);
            let ql_b = _mm256_loadu_si256(x.ql.as_ptr().add(64 * j + 32) as *const __m256i);
            let qh = _mm256_loadu_si256(x.qh.as_ptr().add(32 * j) as *const __m256i);
            let high = |t: i32| {
                let shifted = match t {
                    0 => qh,
                    1 => _mm256_srli_epi16(qh, 2),
                    2 => _mm256_srli_epi16(qh, 4),
                    _ => _mm256_srli_epi16(qh, 6),
                };
                _mm256_slli_epi16(_mm256_and_si256(shifted, two), 4)
            };
            // The four 32-value quarters of this 128: low nibbles of `ql_a` and `ql_b`, then
            // their high nibbles, each with its two bits of `qh`.
            let codes = [
                _mm256_or_si256(_mm256_and_si256(ql_a, low), high(0)),
                _mm256_or_si256(_mm256_and_si256(ql_b, low), high(1)),
                _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(ql_a, 4), low), high(2)),
                _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(ql_b, 4), low), high(3)),
            ];
            for (t, q) in codes.into_iter().enumerate() {
                let ys = _mm256_loadu_si256(y.qs.as_ptr().add(128 * j + 32 * t) as *const __m256i);
                let pairs =
                    _mm256_sub_epi16(_mm256_maddubs_epi16(q, ys), _mm256_maddubs_epi16(m32, ys));
                // Scales 8j + 2t (first 16 values) and 8j + 2t + 1 (the next 16).
                let group = 8 * j + 2 * t;
                let scale = _mm256_setr_m128i(
                    _mm_set1_epi16(x.scales[group] as i16),
                    _mm_set1_epi16(x.scales[group + 1] as i16),
                );
                sumi = _mm256_add_epi32(sumi, _mm256_madd_epi16(scale, pairs));
            }
        }
        acc = _mm256_fmadd_ps(_mm256_set1_ps(d), _mm256_cvtepi32_ps(sumi), acc);
    }
    hsum_float_8(acc)
}

/// A row product: one row's super-blocks · the quantized activation row (the CPU must run it,
/// and the row be as long as the activations).
pub type RowKernel<B> = unsafe fn(&[B], &[BlockQ8K]) -> f32;

/// One instruction-set path's row products ([`super::Path::rows`]).
#[derive(Clone, Copy)]
pub struct RowKernels {
    pub q4k: RowKernel<BlockQ4K>,
    pub q6k: RowKernel<BlockQ6K>,
}

/// The AVX-512 row products (F and BW).
#[cfg(target_arch = "x86_64")]
pub const AVX512: RowKernels = RowKernels {
    q4k: gemv_q4k_avx512,
    q6k: gemv_q6k_avx512,
};

/// The AVX2 row products.
#[cfg(target_arch = "x86_64")]
pub const AVX2: RowKernels = RowKernels {
    q4k: gemv_q4k_avx2,
    q6k: gemv_q6k_avx2,
};

/// How far ahead of the super-block being read the row products ask for the weights: 4 KiB,
/// 28 Q4_K or 19 Q6_K super-blocks, the next row's start at the end of a row (a work item's
/// rows are contiguous in the file). Decode is a stream through 1.9 GB of weights, and on an
/// Intel Xeon (family 6 model 207, 2 vCPUs, AVX-512 VNNI) the hardware prefetchers alone left
/// it at 5.85 tok/s, 68% of a plain streaming read; with these hints 8.5 tok/s, more than that
/// read measured (distance 512 B: 6.1–7.3 tok/s, 2 KiB: 7.7–8.5, 4 and 8 KiB: 8.3–8.6;
/// interleaved `bench-child` runs, prompt 16). A read with the same hints measures 21–26 GB/s
/// there, of which decode streams 67–80%.
const PREFETCH_BYTES: usize = 4096;

/// Asks for the `lines` cache lines [`PREFETCH_BYTES`] past `x` (a hint: it never faults, so
/// the address may lie past the matrix, and is only computed, never read, by this code).
///
/// # Safety
/// The CPU must have SSE (every x86_64 does).
#[cfg(target_arch = "x86_64")]
#[inline(always)]
unsafe fn prefetch_ahead<T>(x: &T, lines: usize) {
    use std::arch::x86_64::{_mm_prefetch, _MM_HINT_T0};
    let ahead = (x as *const T as *const i8).wrapping_add(PREFETCH_BYTES);
    for line in 0..lines {
        _mm_prefetch::<_MM_HINT_T0>(ahead.wrapping_add(64 * line));
    }
}

/// A weight type with row products of its own for decode.
pub trait RowProduct: SuperBlock {
    const NAME: &'static str;
    /// The matrix `w` as [`gemv_shared`] takes it.
    fn rows(w: &[Self]) -> Rows<'_>;
}

impl RowProduct for BlockQ4K {
    const NAME: &'static str = "Q4_K";
    fn rows(w: &[Self]) -> Rows<'_> {
        Rows::Q4K(w)
    }
}

impl RowProduct for BlockQ6K {
    const NAME: &'static str = "Q6_K";
    fn rows(w: &[Self]) -> Rows<'_> {
        Rows::Q6K(w)
    }
}

/// The super-blocks of one weight matrix, row after row, for [`gemv_shared`].
#[derive(Clone, Copy)]
pub enum Rows<'a> {
    Q4K(&'a [BlockQ4K]),
    Q6K(&'a [BlockQ6K]),
}

impl Rows<'_> {
    fn blocks(&self) -> usize {
        match self {
            Rows::Q4K(w) => w.len(),
            Rows::Q6K(w) => w.len(),
        }
    }

    /// Row `c` (of `blocks` super-blocks) · `a`, by `kernels`.
    ///
    /// # Safety
    /// The CPU must run `kernels`; row `c` must exist and `a` hold `blocks` blocks.
    unsafe fn row(&self, kernels: &RowKernels, c: usize, blocks: usize, a: &[BlockQ8K]) -> f32 {
        match self {
            Rows::Q4K(w) => (kernels.q4k)(w.get_unchecked(c * blocks..(c + 1) * blocks), a),
            Rows::Q6K(w) => (kernels.q6k)(w.get_unchecked(c * blocks..(c + 1) * blocks), a),
        }
    }
}

/// `dst[c] = lhs · weight row c` for one activation row (decode) over Q4_K or Q6_K rows, with
/// the path's row product on the pool. `None` on the portable path (the caller then uses
/// candle's kernel, which gives the same bits).
pub fn gemv<B: RowProduct>(
    k: usize,
    lhs: &[f32],
    weights: &[B],
    dst: &mut [f32],
) -> Option<crate::Result<()>> {
    gemv_shared(k, lhs, &[B::rows(weights)], &mut [dst])
}

/// [`gemv`] for several matrices that read the same activation row (a layer's Q, K and V
/// projections; gate and up): `dsts[i][c] = lhs · row c of mats[i]`. The row is quantized
/// once and all the matrices' rows are one pool job, so the small K and V projections (0.6 MB
/// each on the 3B model, 10-15 GB/s alone: job start and end cost as much as their reads) ride
/// along with Q. `None` on the portable path.
pub fn gemv_shared(
    k: usize,
    lhs: &[f32],
    mats: &[Rows<'_>],
    dsts: &mut [&mut [f32]],
) -> Option<crate::Result<()>> {
    let kernels = super::path().rows?;
    let blocks = k / QK_K;
    let fits = mats.len() == dsts.len()
        && mats
            .iter()
            .zip(dsts.iter())
            .all(|(w, d)| w.blocks() == d.len() * blocks);
    if !(k.is_multiple_of(QK_K) && lhs.len() == k && fits) {
        let shapes: Vec<String> = mats
            .iter()
            .zip(dsts.iter())
            .map(|(w, d)| format!("{} super-blocks for {} outputs", w.blocks(), d.len()))
            .collect();
        return Some(Err(candle_core::Error::Msg(format!(
            "row product: {} activations ({k} expected), {}",
            lhs.len(),
            shapes.join(", ")
        ))
        .into()));
    }
    let zero = BlockQ8K {
        d: 0.0,
        qs: [0; QK_K],
        bsums: [0; QK_K / 16],
    };
    let mut a = vec![zero; blocks];
    quantize_row(lhs, &mut a);
    let a = &a;
    // Output rows of all matrices, numbered one after the other.
    let mut starts = Vec::with_capacity(dsts.len() + 1);
    starts.push(0);
    for d in dsts.iter() {
        starts.push(starts[starts.len() - 1] + d.len());
    }
    let addresses: Vec<usize> = dsts.iter_mut().map(|d| d.as_mut_ptr() as usize).collect();
    let (starts, addresses) = (&starts, &addresses);
    super::pool().execute_chunked(starts[mats.len()], |items| {
        for (i, w) in mats.iter().enumerate() {
            let mine = items.start.max(starts[i])..items.end.min(starts[i + 1]);
            for item in mine {
                let c = item - starts[i];
                // SAFETY: the kernels are the path's (the CPU runs them), matrix i has
                // `blocks` blocks per output row (checked above), and each output is written
                // by exactly one work item.
                unsafe {
                    let value = w.row(&kernels, c, blocks, a);
                    *(addresses[i] as *mut f32).add(c) = value;
                }
            }
        }
    });
    Some(Ok(()))
}
