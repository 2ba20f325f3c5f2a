//! Q4_K and Q6_K row products for decode (one activation row), on AVX-512.
//!
//! Why: a decode step reads every weight once, and candle's kernel (ggml's AVX2 code, 32 values
//! per instruction) spent 76% of a 3B decode step (Zen 4, 2 threads) in these two types. Here
//! the file's blocks are unpacked in registers, 64 values per instruction: Q4_K's nibbles with
//! one shift, one blend and one mask; Q6_K's high bits with a per-half variable shift; the
//! scales picked per 16 or 32 values with `vpermw`. The integer lanes, float work and
//! reductions are those of ggml's AVX2 `vec_dot_q4_K_q8_K` / `vec_dot_q6_K_q8_K`, so the
//! results are candle's bits (tested); machines without AVX-512 keep candle's kernel.

use super::kquant::{
    finish, pair_sums, quantize_row, BlockQ4K, BlockQ6K, BlockQ8K, SuperBlock, QK_K,
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

/// One Q4_K weight row · one Q8_K activation row straight from the file's blocks (decode: each
/// weight byte is read once, so nothing is unpacked to memory), 64 values per instruction.
/// The integer lanes, float work and reductions are those of ggml's AVX2
/// `vec_dot_q4_K_q8_K`, so the result is candle's bits (tested).
///
/// # Safety
/// The CPU must have AVX-512 F and BW, AVX2 and FMA; `w` as long as `a`.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bw,avx2,fma")]
pub unsafe fn gemv_q4k_avx512(w: &[BlockQ4K], a: &[BlockQ8K]) -> f32 {
    use std::arch::x86_64::*;
    let low = _mm512_set1_epi8(0x0F);
    // For the 64 values of chunk j, lanes 0-15 of the `maddubs` output take scale 2j and
    // lanes 16-31 scale 2j + 1.
    let pick: [__m512i; 4] = std::array::from_fn(|j| {
        let lanes: [i16; 32] = std::array::from_fn(|l| (2 * j + l / 16) as i16);
        _mm512_loadu_si512(lanes.as_ptr() as *const __m512i)
    });
    let mut acc = _mm256_setzero_ps();
    let mut acc_m = _mm_setzero_ps();
    for (b, y) in a.iter().enumerate() {
        let x = w.get_unchecked(b);
        let d = y.d * x.d.to_f32();
        let dmin = -y.d * x.dmin.to_f32();
        let (scales, mins) = q4k_scales_and_mins(x);
        let scales16 = _mm512_broadcast_i32x4(_mm_cvtepu8_epi16(_mm_loadl_epi64(
            scales.as_ptr() as *const __m128i
        )));
        let mins16 = _mm_cvtepu8_epi16(_mm_loadl_epi64(mins.as_ptr() as *const __m128i));
        let prod = _mm_madd_epi16(mins16, pair_sums(y));
        acc_m = _mm_fmadd_ps(_mm_set1_ps(dmin), _mm_cvtepi32_ps(prod), acc_m);
        let mut wide = _mm512_setzero_si512();
        for (j, pick) in pick.iter().enumerate() {
            // 32 bytes of nibbles in both halves: low nibbles (values 64j..64j+32) below,
            // high nibbles (64j+32..64j+64) above.
            let bytes = _mm512_broadcast_i64x4(_mm256_loadu_si256(
                x.qs.as_ptr().add(32 * j) as *const __m256i
            ));
            let q = _mm512_and_si512(
                _mm512_mask_blend_epi64(0xF0, bytes, _mm512_srli_epi16(bytes, 4)),
                low,
            );
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
    finish(acc, acc_m, false)
}

/// One Q6_K weight row · one Q8_K activation row from the file's blocks (decode), 64 values
/// per instruction, with the integer lanes, float work and reduction of ggml's AVX2
/// `vec_dot_q6_K_q8_K`: candle's bits (tested).
///
/// # Safety
/// The CPU must have AVX-512 F and BW, AVX2 and FMA; `w` as long as `a`.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bw,avx2,fma")]
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
        let d = y.d * x.d.to_f32();
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
    finish(acc, _mm_setzero_ps(), true)
}

/// A weight type with an AVX-512 row product of its own for decode.
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

    /// Row `c` (of `blocks` super-blocks) · `a`.
    ///
    /// # Safety
    /// As [`gemv_q4k_avx512`]; row `c` must exist.
    unsafe fn row(&self, c: usize, blocks: usize, a: &[BlockQ8K]) -> f32 {
        match self {
            Rows::Q4K(w) => gemv_q4k_avx512(w.get_unchecked(c * blocks..(c + 1) * blocks), a),
            Rows::Q6K(w) => gemv_q6k_avx512(w.get_unchecked(c * blocks..(c + 1) * blocks), a),
        }
    }
}

/// `dst[c] = lhs · weight row c` for one activation row (decode) over Q4_K or Q6_K rows, with
/// their AVX-512 row product on the pool. `None` when this CPU has no AVX-512 (the caller then
/// uses candle's kernel, which gives the same bits).
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
/// along with Q. `None` when this CPU has no AVX-512.
pub fn gemv_shared(
    k: usize,
    lhs: &[f32],
    mats: &[Rows<'_>],
    dsts: &mut [&mut [f32]],
) -> Option<crate::Result<()>> {
    if super::path().name != "avx512" {
        return None;
    }
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
                // SAFETY: the path is avx512 (checked above), matrix i has `blocks` blocks per
                // output row, and each output is written by exactly one work item.
                unsafe {
                    let value = w.row(c, blocks, a);
                    *(addresses[i] as *mut f32).add(c) = value;
                }
            }
        }
    });
    Some(Ok(()))
}
