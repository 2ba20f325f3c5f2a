//! Q4_K and Q6_K row products for decode (one activation row) and for a few rows at once (a
//! batch of sequences, a draft to verify, a short prompt: up to [`MAX_ROWS`] a call), on
//! AVX-512 and AVX2.
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
//!
//! Several activation rows share each weight super-block: it is read and unpacked in
//! registers once, and each row adds only its multiply-adds and float work. On the 3B file
//! (Zen 4, 2 threads) a forward pass of 4 tokens took 141 ms against a 62-66 ms decode step,
//! where the prompt kernel (which unpacks to memory) took 372 ms; see `linear.rs` for where
//! one hands over to the other.

use super::kquant::{
    finish, hsum_float_8, pair_sums, quantize_row, BlockQ4K, BlockQ6K, BlockQ8K, SuperBlock, QK_K,
};
use super::kquant_row_pairs::RowPairs;

/// Q4_K's eight 6-bit scales and eight mins as bytes, unpacked with ggml's `utmp` word
/// arithmetic (the same values as [`BlockQ4K::scale_min`]).
#[inline]
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
pub(super) unsafe fn f16_to_f32(h: half::f16) -> f32 {
    use std::arch::x86_64::*;
    _mm_cvtss_f32(_mm_cvtph_ps(_mm_cvtsi32_si128(i32::from(h.to_bits()))))
}

/// What every Q4_K row product reads of super-block `x` once, whatever the number of
/// activation rows: the weights asked for ahead (144 bytes: three lines cover them wherever
/// they start), the eight scales, the mins widened, and `d` and `dmin` (side by side in the
/// file, widened by one `vcvtph2ps`).
#[cfg(target_arch = "x86_64")]
pub(super) struct Q4kBlock {
    pub(super) scales: [u8; 8],
    pub(super) mins16: std::arch::x86_64::__m128i,
    pub(super) d: f32,
    pub(super) dmin: f32,
}

#[cfg(target_arch = "x86_64")]
impl Q4kBlock {
    /// # Safety
    /// The CPU must have AVX2 and F16C.
    #[target_feature(enable = "avx2,fma,f16c")]
    #[inline]
    pub(super) unsafe fn start(x: &BlockQ4K) -> Self {
        use std::arch::x86_64::*;
        prefetch_ahead(x, 3);
        let both = _mm_cvtph_ps(_mm_cvtsi32_si128(
            i32::from(x.d.to_bits()) | (i32::from(x.dmin.to_bits()) << 16),
        ));
        let (scales, mins) = q4k_scales_and_mins(x);
        Self {
            scales,
            mins16: _mm_cvtepu8_epi16(_mm_loadl_epi64(mins.as_ptr() as *const __m128i)),
            d: _mm_cvtss_f32(both),
            dmin: _mm_cvtss_f32(_mm_movehdup_ps(both)),
        }
    }

    /// For activation row block `y`: ggml's mins term added to `acc_m`, and ggml's
    /// `d = y.d × x.d` returned.
    ///
    /// # Safety
    /// The CPU must have AVX2 and FMA.
    #[target_feature(enable = "avx2,fma,f16c")]
    #[inline]
    unsafe fn row(&self, y: &BlockQ8K, acc_m: &mut std::arch::x86_64::__m128) -> f32 {
        use std::arch::x86_64::*;
        let dmin = -y.d * self.dmin;
        let prod = _mm_madd_epi16(self.mins16, pair_sums(y));
        *acc_m = _mm_fmadd_ps(_mm_set1_ps(dmin), _mm_cvtepi32_ps(prod), *acc_m);
        y.d * self.d
    }
}

/// One Q4_K weight row · `R` Q8_K activation rows straight from the file's blocks: each weight
/// byte is read once and unpacked in registers once, whatever `R` (decode: one row; a batch of
/// sequences or a short prompt: a few), 64 values per instruction. The integer lanes, float
/// work and reductions of each row are those of ggml's AVX2 `vec_dot_q4_K_q8_K`, so every
/// result is candle's bits (tested).
///
/// # Safety
/// The CPU must have AVX-512 F and BW, AVX2 and FMA; `w` as long as every row of `a`, which
/// are all as long.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bw,avx2,fma,f16c")]
#[inline]
pub unsafe fn gemv_q4k_avx512<const R: usize>(w: &[BlockQ4K], a: [&[BlockQ8K]; R]) -> [f32; R] {
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
    let mut acc = [_mm256_setzero_ps(); R];
    let mut acc_m = [_mm_setzero_ps(); R];
    for b in 0..a[0].len() {
        let x = w.get_unchecked(b);
        let block = Q4kBlock::start(x);
        let scales16 = _mm512_broadcast_i32x4(_mm_cvtepu8_epi16(_mm_loadl_epi64(
            block.scales.as_ptr() as *const __m128i,
        )));
        // 32 bytes of nibbles in both halves of each: low nibbles (values 64j..64j+32)
        // below, high nibbles (64j+32..64j+64) above.
        let mut q = [_mm512_setzero_si512(); 4];
        let mut scale = [_mm512_setzero_si512(); 4];
        for j in 0..4 {
            let bytes = _mm512_broadcast_i64x4(_mm256_loadu_si256(
                x.qs.as_ptr().add(32 * j) as *const __m256i
            ));
            q[j] = _mm512_and_si512(_mm512_srlv_epi16(bytes, nibble_shifts), low);
            scale[j] = _mm512_permutexvar_epi16(pick[j], scales16);
        }
        for r in 0..R {
            let y = a[r].get_unchecked(b);
            let d = block.row(y, &mut acc_m[r]);
            let mut wide = _mm512_setzero_si512();
            for j in 0..4 {
                let ys = _mm512_loadu_si512(y.qs.as_ptr().add(64 * j) as *const __m512i);
                wide = _mm512_add_epi32(
                    wide,
                    _mm512_madd_epi16(scale[j], _mm512_maddubs_epi16(q[j], ys)),
                );
            }
            let sumi = _mm256_add_epi32(
                _mm512_castsi512_si256(wide),
                _mm512_extracti64x4_epi64(wide, 1),
            );
            acc[r] = _mm256_fmadd_ps(_mm256_set1_ps(d), _mm256_cvtepi32_ps(sumi), acc[r]);
        }
    }
    std::array::from_fn(|r| finish(acc[r], acc_m[r]))
}

/// Q6_K super-block `x` asked for ahead (210 bytes: four lines) and unpacked: its 256 codes
/// (0..63) as four 64-value vectors, the 64 codes `t` of half `j` at `2j + t`, and its 16
/// scales as i16 in both 256-bit halves.
///
/// # Safety
/// The CPU must have AVX-512 F and BW.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bw,avx2")]
#[inline]
unsafe fn q6k_codes_avx512(
    x: &BlockQ6K,
) -> ([std::arch::x86_64::__m512i; 4], std::arch::x86_64::__m512i) {
    use std::arch::x86_64::*;
    prefetch_ahead(x, 4);
    let low = _mm512_set1_epi8(0x0F);
    let two = _mm512_set1_epi8(3);
    // High bits of values 0..32 / 32..64 of a half: qh shifted by 0 / 2; of 64..96 / 96..128:
    // by 4 / 6 (a 16-bit shift: the bits that cross into a byte are masked off).
    let shifts = |lo: i16, hi: i16| {
        let lanes: [i16; 32] = std::array::from_fn(|l| if l < 16 { lo } else { hi });
        _mm512_loadu_si512(lanes.as_ptr() as *const __m512i)
    };
    let (shift_a, shift_b) = (shifts(0, 2), shifts(4, 6));
    let scales16 = _mm512_broadcast_i64x4(_mm256_cvtepi8_epi16(_mm_loadu_si128(
        x.scales.as_ptr() as *const __m128i
    )));
    let mut q = [_mm512_setzero_si512(); 4];
    for j in 0..2 {
        let ql = _mm512_loadu_si512(x.ql.as_ptr().add(64 * j) as *const __m512i);
        let qh = _mm512_broadcast_i64x4(_mm256_loadu_si256(
            x.qh.as_ptr().add(32 * j) as *const __m256i
        ));
        let high = |shift: __m512i| {
            _mm512_slli_epi16(_mm512_and_si512(_mm512_srlv_epi16(qh, shift), two), 4)
        };
        q[2 * j] = _mm512_or_si512(_mm512_and_si512(ql, low), high(shift_a));
        q[2 * j + 1] = _mm512_or_si512(
            _mm512_and_si512(_mm512_srli_epi16(ql, 4), low),
            high(shift_b),
        );
    }
    (q, scales16)
}

/// One Q6_K weight row · `R` Q8_K activation rows from the file's blocks, each weight byte
/// read and unpacked once, 64 values per instruction, with the integer lanes, float work and
/// reduction of ggml's AVX2 `vec_dot_q6_K_q8_K` for each row: candle's bits (tested).
///
/// # Safety
/// As [`gemv_q4k_avx512`]'s.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bw,avx2,fma,f16c")]
#[inline]
pub unsafe fn gemv_q6k_avx512<const R: usize>(w: &[BlockQ6K], a: [&[BlockQ8K]; R]) -> [f32; R] {
    use std::arch::x86_64::*;
    let m32 = _mm512_set1_epi8(32);
    // The 16 scales as i16 in both 256-bit halves, picked per 16 values: lane l of the
    // 64 values `t` of half `j` takes scale 8j + 4t + l / 8.
    let pick: [__m512i; 4] = std::array::from_fn(|i| {
        let (j, t) = (i / 2, i % 2);
        let lanes: [i16; 32] = std::array::from_fn(|l| (8 * j + 4 * t + l / 8) as i16);
        _mm512_loadu_si512(lanes.as_ptr() as *const __m512i)
    });
    let mut acc = [_mm256_setzero_ps(); R];
    for b in 0..a[0].len() {
        let x = w.get_unchecked(b);
        let x_d = f16_to_f32(x.d);
        let (q, scales16) = q6k_codes_avx512(x);
        let scale: [__m512i; 4] =
            std::array::from_fn(|i| _mm512_permutexvar_epi16(pick[i], scales16));
        for r in 0..R {
            let y = a[r].get_unchecked(b);
            let d = y.d * x_d;
            let mut wide = _mm512_setzero_si512();
            for i in 0..4 {
                let ys = _mm512_loadu_si512(y.qs.as_ptr().add(64 * i) as *const __m512i);
                let pairs = _mm512_sub_epi16(
                    _mm512_maddubs_epi16(q[i], ys),
                    _mm512_maddubs_epi16(m32, ys),
                );
                wide = _mm512_add_epi32(wide, _mm512_madd_epi16(scale[i], pairs));
            }
            let sumi = _mm256_add_epi32(
                _mm512_castsi512_si256(wide),
                _mm512_extracti64x4_epi64(wide, 1),
            );
            acc[r] = _mm256_fmadd_ps(_mm256_set1_ps(d), _mm256_cvtepi32_ps(sumi), acc[r]);
        }
    }
    std::array::from_fn(|r| hsum_float_8(acc[r]))
}

/// [`gemv_q6k_avx512`] with VNNI, over activations made unsigned
/// ([`super::kquant::make_unsigned`]: `y + 128`): `vpdpbusd` of `y + 128` with the signed
/// codes `q − 32` gives each lane's four-value sums in one multiply, two 64-value vectors'
/// sums are packed into the words of one vector so that one `madd` applies both their scales,
/// and the `128 × Σ (q − 32)` the unsigned activations add is taken off once per weight
/// super-block for all the rows: 6 multiplies a row and super-block instead of 12. The same
/// integers in the same lanes, so candle's bits.
///
/// # Safety
/// As [`gemv_q6k_avx512`]'s, the CPU must have AVX-512 VNNI, and every activation block must
/// be made unsigned.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bw,avx512vnni,avx2,fma,f16c")]
#[inline]
pub unsafe fn gemv_q6k_avx512_vnni<const R: usize>(
    w: &[BlockQ6K],
    a: [&[BlockQ8K]; R],
) -> [f32; R] {
    use std::arch::x86_64::*;
    let m32 = _mm512_set1_epi8(32);
    let ones = _mm512_set1_epi8(1);
    // Vectors 2j and 2j + 1 packed: lane l's low word takes vector 2j's scale for its four
    // values (8j + l / 4), its high word vector 2j + 1's (8j + 4 + l / 4).
    let pick: [__m512i; 2] = std::array::from_fn(|j| {
        let words: [i16; 32] = std::array::from_fn(|w| (8 * j + 4 * (w % 2) + w / 8) as i16);
        _mm512_loadu_si512(words.as_ptr() as *const __m512i)
    });
    // Two vectors of four-value sums (each in a word's range) as the words of one.
    let pack = |first: __m512i, second: __m512i| {
        _mm512_mask_blend_epi16(0xAAAA_AAAA, first, _mm512_slli_epi32::<16>(second))
    };
    let mut acc = [_mm256_setzero_ps(); R];
    for b in 0..a[0].len() {
        let x = w.get_unchecked(b);
        let x_d = f16_to_f32(x.d);
        // The codes minus 32 (signed), their packed scales, and what `+ 128` adds:
        // 128 × Σ scale × Σ (q − 32) per lane.
        let (codes, scales16) = q6k_codes_avx512(x);
        let q = codes.map(|codes| _mm512_sub_epi8(codes, m32));
        let mut scale = [_mm512_setzero_si512(); 2];
        let mut offset = _mm512_setzero_si512();
        for j in 0..2 {
            scale[j] = _mm512_permutexvar_epi16(pick[j], scales16);
            let sums = |q: __m512i| _mm512_dpbusd_epi32(_mm512_setzero_si512(), ones, q);
            let packed = pack(sums(q[2 * j]), sums(q[2 * j + 1]));
            offset = _mm512_add_epi32(offset, _mm512_madd_epi16(packed, scale[j]));
        }
        let offset = _mm512_slli_epi32::<7>(offset);
        for r in 0..R {
            let y = a[r].get_unchecked(b);
            let d = y.d * x_d;
            let mut wide = _mm512_sub_epi32(_mm512_setzero_si512(), offset);
            for (j, scale) in scale.iter().enumerate() {
                let sums = |i: usize| {
                    let ys = _mm512_loadu_si512(y.qs.as_ptr().add(64 * i) as *const __m512i);
                    _mm512_dpbusd_epi32(_mm512_setzero_si512(), ys, q[i])
                };
                let packed = pack(sums(2 * j), sums(2 * j + 1));
                wide = _mm512_add_epi32(wide, _mm512_madd_epi16(packed, *scale));
            }
            let sumi = _mm256_add_epi32(
                _mm512_castsi512_si256(wide),
                _mm512_extracti64x4_epi64(wide, 1),
            );
            acc[r] = _mm256_fmadd_ps(_mm256_set1_ps(d), _mm256_cvtepi32_ps(sumi), acc[r]);
        }
    }
    std::array::from_fn(|r| hsum_float_8(acc[r]))
}

/// [`gemv_q4k_avx512`] on AVX2: ggml's `vec_dot_q4_K_q8_K` (32 values per instruction, one
/// scale per `madd`) for each of `R` rows, the weights unpacked once and prefetched.
///
/// # Safety
/// The CPU must have AVX2 and FMA; the slices as for [`gemv_q4k_avx512`].
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma,f16c")]
#[inline]
pub unsafe fn gemv_q4k_avx2<const R: usize>(w: &[BlockQ4K], a: [&[BlockQ8K]; R]) -> [f32; R] {
    use std::arch::x86_64::*;
    let low = _mm256_set1_epi8(0x0F);
    let mut acc = [_mm256_setzero_ps(); R];
    let mut acc_m = [_mm_setzero_ps(); R];
    for b in 0..a[0].len() {
        let x = w.get_unchecked(b);
        let block = Q4kBlock::start(x);
        // Low nibbles: values 64j..64j+32 (scale 2j); high: the next 32 (scale 2j + 1).
        let mut q = [_mm256_setzero_si256(); 8];
        for j in 0..QK_K / 64 {
            let bits = _mm256_loadu_si256(x.qs.as_ptr().add(32 * j) as *const __m256i);
            q[2 * j] = _mm256_and_si256(bits, low);
            q[2 * j + 1] = _mm256_and_si256(_mm256_srli_epi16(bits, 4), low);
        }
        for r in 0..R {
            let y = a[r].get_unchecked(b);
            let d = block.row(y, &mut acc_m[r]);
            let mut sumi = _mm256_setzero_si256();
            for (i, q) in q.iter().enumerate() {
                let ys = _mm256_loadu_si256(y.qs.as_ptr().add(32 * i) as *const __m256i);
                let scale = _mm256_set1_epi16(block.scales[i] as i16);
                sumi =
                    _mm256_add_epi32(sumi, _mm256_madd_epi16(scale, _mm256_maddubs_epi16(*q, ys)));
            }
            acc[r] = _mm256_fmadd_ps(_mm256_set1_ps(d), _mm256_cvtepi32_ps(sumi), acc[r]);
        }
    }
    std::array::from_fn(|r| finish(acc[r], acc_m[r]))
}

/// [`gemv_q6k_avx512`] on AVX2: ggml's `vec_dot_q6_K_q8_K` for each of `R` rows, the weights
/// unpacked once and prefetched.
///
/// # Safety
/// As [`gemv_q4k_avx2`]'s.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma,f16c")]
#[inline]
pub unsafe fn gemv_q6k_avx2<const R: usize>(w: &[BlockQ6K], a: [&[BlockQ8K]; R]) -> [f32; R] {
    use std::arch::x86_64::*;
    let low = _mm256_set1_epi8(0x0F);
    let two = _mm256_set1_epi8(3);
    let m32 = _mm256_set1_epi8(32);
    let mut acc = [_mm256_setzero_ps(); R];
    for b in 0..a[0].len() {
        let x = w.get_unchecked(b);
        prefetch_ahead(x, 4);
        let x_d = f16_to_f32(x.d);
        // The eight 32-value quarters, in order: per 128 values `j`, the low nibbles of `ql_a`
        // and `ql_b`, then their high nibbles, each with its two bits of `qh`.
        let mut q = [_mm256_setzero_si256(); 8];
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
            q[4 * j] = _mm256_or_si256(_mm256_and_si256(ql_a, low), high(0));
            q[4 * j + 1] = _mm256_or_si256(_mm256_and_si256(ql_b, low), high(1));
            q[4 * j + 2] =
                _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(ql_a, 4), low), high(2));
            q[4 * j + 3] =
                _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(ql_b, 4), low), high(3));
        }
        for r in 0..R {
            let y = a[r].get_unchecked(b);
            let d = y.d * x_d;
            let mut sumi = _mm256_setzero_si256();
            for (i, q) in q.iter().enumerate() {
                let ys = _mm256_loadu_si256(y.qs.as_ptr().add(32 * i) as *const __m256i);
                let pairs =
                    _mm256_sub_epi16(_mm256_maddubs_epi16(*q, ys), _mm256_maddubs_epi16(m32, ys));
                // Scales 2i (the quarter's first 16 values) and 2i + 1 (the next 16).
                let scale = _mm256_setr_m128i(
                    _mm_set1_epi16(x.scales[2 * i] as i16),
                    _mm_set1_epi16(x.scales[2 * i + 1] as i16),
                );
                sumi = _mm256_add_epi32(sumi, _mm256_madd_epi16(scale, pairs));
            }
            acc[r] = _mm256_fmadd_ps(_mm256_set1_ps(d), _mm256_cvtepi32_ps(sumi), acc[r]);
        }
    }
    std::array::from_fn(|r| hsum_float_8(acc[r]))
}

/// The most activation rows one call of a row product takes: more rows are taken in groups
/// of this many, the weight rows then coming from L1/L2 for the groups after the first.
pub const MAX_ROWS: usize = 8;

/// Row products over a run of weight rows: `out[r × stride + c] = w row c · a row r` for the
/// rows `c` of `w` (each as long as every row of `a`) and 1 to [`MAX_ROWS`] activation rows.
/// One call per run, not per weight row: a decode step has about 1.2 million weight rows of
/// some 100 ns each on two threads, so a few nanoseconds of dispatch per row would show.
///
/// # Safety
/// The CPU must run the kernel; `out` valid for writing every `r × stride + c`.
pub type RowKernel<B> = unsafe fn(w: &[B], a: &[&[BlockQ8K]], out: *mut f32, stride: usize);

/// A [`RowKernel`] over a const-generic row product: the number of rows picks the build, and
/// the loop over the weight rows is built with the kernel's target features so that it
/// inlines.
macro_rules! row_kernel {
    ($name:ident, $kernel:ident, $block:ty, $features:literal) => {
        #[cfg(target_arch = "x86_64")]
        unsafe fn $name(w: &[$block], a: &[&[BlockQ8K]], out: *mut f32, stride: usize) {
            #[target_feature(enable = $features)]
            unsafe fn run<const R: usize>(
                w: &[$block],
                a: &[&[BlockQ8K]],
                out: *mut f32,
                stride: usize,
            ) {
                let a: [&[BlockQ8K]; R] = std::array::from_fn(|r| a[r]);
                for (c, row) in w.chunks_exact(a[0].len().max(1)).enumerate() {
                    for (r, value) in $kernel::<R>(row, a).into_iter().enumerate() {
                        *out.add(r * stride + c) = value;
                    }
                }
            }
            by_rows!(a.len(), run(w, a, out, stride))
        }
    };
}

row_kernel!(
    q4k_avx512,
    gemv_q4k_avx512,
    BlockQ4K,
    "avx512f,avx512bw,avx2,fma,f16c"
);
row_kernel!(
    q6k_avx512,
    gemv_q6k_avx512,
    BlockQ6K,
    "avx512f,avx512bw,avx2,fma,f16c"
);
row_kernel!(
    q6k_avx512_vnni,
    gemv_q6k_avx512_vnni,
    BlockQ6K,
    "avx512f,avx512bw,avx512vnni,avx2,fma,f16c"
);
row_kernel!(q4k_avx2, gemv_q4k_avx2, BlockQ4K, "avx2,fma,f16c");
row_kernel!(q6k_avx2, gemv_q6k_avx2, BlockQ6K, "avx2,fma,f16c");

/// Q4_K row products over activation rows in pairs ([`RowPairs`]): `out[r × stride + c] = w
/// row c · activation row r` for the rows `c` of `w` and the activation rows `rows` (an even
/// start, at most [`MAX_ROWS`]).
///
/// # Safety
/// The CPU must run the kernel; every weight row as long as the pairs; `out` valid for every
/// write.
pub type PairKernel = unsafe fn(
    w: &[BlockQ4K],
    a: &RowPairs,
    rows: std::ops::Range<usize>,
    out: *mut f32,
    stride: usize,
);

/// One instruction-set path's row products ([`super::Path::rows`]).
#[derive(Clone, Copy)]
pub struct RowKernels {
    pub q4k: RowKernel<BlockQ4K>,
    pub q6k: RowKernel<BlockQ6K>,
    /// Q4_K for two or more activation rows, where the path has a kernel of pairs.
    pub q4k_pairs: Option<PairKernel>,
    /// Q6_K over activations made unsigned ([`super::kquant::make_unsigned`]), used instead
    /// of `q6k` where the path has it.
    pub q6k_unsigned: Option<RowKernel<BlockQ6K>>,
}

/// A [`PairKernel`]: `P` pairs per call, the loop over the weight rows built with the
/// kernel's target features. (A VNNI build, one `vpdpwssd` for each `madd` and its `add`,
/// measured no faster on Zen 4: LLVM split most of them back into the two.)
macro_rules! pair_kernel {
    ($name:ident, $kernel:ident, $features:literal) => {
        #[cfg(target_arch = "x86_64")]
        unsafe fn $name(
            w: &[BlockQ4K],
            a: &RowPairs,
            rows: std::ops::Range<usize>,
            out: *mut f32,
            stride: usize,
        ) {
            #[target_feature(enable = $features)]
            unsafe fn run<const P: usize>(
                w: &[BlockQ4K],
                a: &RowPairs,
                rows: std::ops::Range<usize>,
                out: *mut f32,
                stride: usize,
            ) {
                let first = rows.start / 2;
                let pairs: [_; P] = std::array::from_fn(|p| a.pair(first + p));
                for (c, row) in w.chunks_exact(a.blocks.max(1)).enumerate() {
                    let values = super::kquant_row_pairs::$kernel::<P>(row, pairs);
                    for (r, value) in values.iter().flatten().take(rows.len()).enumerate() {
                        *out.add(r * stride + c) = *value;
                    }
                }
            }
            match rows.len().div_ceil(2) {
                1 => run::<1>(w, a, rows, out, stride),
                2 => run::<2>(w, a, rows, out, stride),
                3 => run::<3>(w, a, rows, out, stride),
                4 => run::<4>(w, a, rows, out, stride),
                n => unreachable!("{n} pairs of activation rows (1 to MAX_ROWS / 2)"),
            }
        }
    };
}

pair_kernel!(
    q4k_pairs_avx512,
    gemv_q4k_pairs,
    "avx512f,avx512bw,avx2,fma,f16c"
);
pair_kernel!(
    q4k_pairs_avx512_vnni,
    gemv_q4k_pairs_vnni,
    "avx512f,avx512bw,avx512vnni,avx2,fma,f16c"
);

/// The AVX-512 row products (F and BW).
#[cfg(target_arch = "x86_64")]
pub const AVX512: RowKernels = RowKernels {
    q4k: q4k_avx512,
    q6k: q6k_avx512,
    q4k_pairs: Some(q4k_pairs_avx512),
    q6k_unsigned: None,
};

/// The AVX-512 row products with VNNI (two vectors' scales in one `madd`: Q4_K pairs, and
/// Q6_K over unsigned activations).
#[cfg(target_arch = "x86_64")]
pub const AVX512_VNNI: RowKernels = RowKernels {
    q4k_pairs: Some(q4k_pairs_avx512_vnni),
    q6k_unsigned: Some(q6k_avx512_vnni),
    ..AVX512
};

/// The AVX2 row products.
#[cfg(target_arch = "x86_64")]
pub const AVX2: RowKernels = RowKernels {
    q4k: q4k_avx2,
    q6k: q6k_avx2,
    q4k_pairs: None,
    q6k_unsigned: None,
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

/// The activation rows in the forms some kernels take besides plain Q8_K blocks.
#[derive(Clone, Copy)]
struct OtherForms<'a> {
    /// In pairs, for the path's Q4_K pair kernel.
    pairs: Option<&'a RowPairs>,
    /// Made unsigned, for the path's unsigned Q6_K kernel.
    unsigned: Option<&'a [&'a [BlockQ8K]]>,
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

    /// Rows `columns` (of `blocks` super-blocks each) · the activation rows `group` of `a`
    /// (or of `other`'s forms of them, for the path's kernels that take those), by `kernels`, into
    /// `out[r × stride + c − columns.start]`.
    ///
    /// # Safety
    /// The CPU must run `kernels`; the rows must exist, `group` be 1 to [`MAX_ROWS`] rows of
    /// `a` (of `blocks` blocks) starting at a multiple of [`MAX_ROWS`], and `out` be valid
    /// for every write.
    unsafe fn rows(
        &self,
        kernels: &RowKernels,
        columns: std::ops::Range<usize>,
        blocks: usize,
        (a, group, other): (&[&[BlockQ8K]], std::ops::Range<usize>, OtherForms<'_>),
        (out, stride): (*mut f32, usize),
    ) {
        let range = columns.start * blocks..columns.end * blocks;
        match (self, kernels.q4k_pairs, other.pairs) {
            (Rows::Q4K(w), Some(kernel), Some(pairs)) => {
                kernel(w.get_unchecked(range), pairs, group, out, stride)
            }
            (Rows::Q4K(w), ..) => (kernels.q4k)(w.get_unchecked(range), &a[group], out, stride),
            (Rows::Q6K(w), ..) => match (kernels.q6k_unsigned, other.unsigned) {
                (Some(kernel), Some(unsigned)) => {
                    kernel(w.get_unchecked(range), &unsigned[group], out, stride)
                }
                _ => (kernels.q6k)(w.get_unchecked(range), &a[group], out, stride),
            },
        }
    }
}

/// `dst[r × n + c] = lhs row r · weight row c` for a few activation rows (`lhs` `[m, k]`: one
/// in decode, a handful for a batch of sequences or a short prompt) over the `n` Q4_K or Q6_K
/// rows of `weights`, with the path's row products on the pool: each weight row is read from
/// memory once for all `m` rows. `None` on the portable path (the caller then uses candle's
/// kernel, which gives the same bits).
pub fn gemv<B: RowProduct>(
    k: usize,
    lhs: &[f32],
    weights: &[B],
    dst: &mut [f32],
) -> Option<crate::Result<()>> {
    gemv_shared(k, lhs, &[B::rows(weights)], &mut [dst])
}

/// [`gemv`] for several matrices that read the same activation rows (a layer's Q, K and V
/// projections; gate and up): `dsts[i][r × n_i + c] = lhs row r · row c of mats[i]`. The rows
/// are quantized once and all the matrices' rows are one pool job, so the small K and V
/// projections (0.6 MB each on the 3B model, 10-15 GB/s alone: job start and end cost as much
/// as their reads) ride along with Q. `None` on the portable path.
pub fn gemv_shared(
    k: usize,
    lhs: &[f32],
    mats: &[Rows<'_>],
    dsts: &mut [&mut [f32]],
) -> Option<crate::Result<()>> {
    let kernels = super::path().rows?;
    let blocks = k / QK_K;
    let m = lhs.len().checked_div(k).unwrap_or(0);
    let fits = mats.len() == dsts.len()
        && mats
            .iter()
            .zip(dsts.iter())
            .all(|(w, d)| m > 0 && d.len() % m == 0 && w.blocks() == d.len() / m * blocks);
    if !(k.is_multiple_of(QK_K) && k > 0 && m > 0 && lhs.len() == m * k && fits) {
        let shapes: Vec<String> = mats
            .iter()
            .zip(dsts.iter())
            .map(|(w, d)| format!("{} super-blocks for {} outputs", w.blocks(), d.len()))
            .collect();
        return Some(Err(candle_core::Error::Msg(format!(
            "row product: {} activations ({k} a row expected), {}",
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
    let mut a = vec![zero; m * blocks];
    for (row, out) in lhs.chunks_exact(k).zip(a.chunks_exact_mut(blocks)) {
        quantize_row(row, out);
    }
    let a: Vec<&[BlockQ8K]> = a.chunks_exact(blocks).collect();
    let a = &a;
    // The same rows in pairs, for the path's Q4_K pair kernel.
    let uses_pairs =
        m >= 2 && kernels.q4k_pairs.is_some() && mats.iter().any(|w| matches!(w, Rows::Q4K(_)));
    let pairs = uses_pairs.then(|| RowPairs::new(a, blocks));
    // The same rows unsigned, for the path's unsigned Q6_K kernel: from four rows, as its
    // offset per weight super-block and the copy cost about a row (`rows/q6k`, weights in
    // cache, Zen 4: 1 row 13-15% slower than the signed kernel, 2 rows 4% slower, 4 rows 9%
    // faster, 8 rows 17-19% faster).
    let uses_unsigned =
        m >= 4 && kernels.q6k_unsigned.is_some() && mats.iter().any(|w| matches!(w, Rows::Q6K(_)));
    let unsigned: Option<Vec<BlockQ8K>> = uses_unsigned.then(|| {
        let mut unsigned = a.concat();
        unsigned.iter_mut().for_each(super::kquant::make_unsigned);
        unsigned
    });
    let unsigned: Option<Vec<&[BlockQ8K]>> =
        unsigned.as_ref().map(|u| u.chunks_exact(blocks).collect());
    let other = OtherForms {
        pairs: pairs.as_ref(),
        unsigned: unsigned.as_deref(),
    };
    // Output rows of all matrices, numbered one after the other.
    let mut starts = Vec::with_capacity(dsts.len() + 1);
    starts.push(0);
    for d in dsts.iter() {
        starts.push(starts[starts.len() - 1] + d.len() / m);
    }
    let addresses: Vec<usize> = dsts.iter_mut().map(|d| d.as_mut_ptr() as usize).collect();
    let (starts, addresses) = (&starts, &addresses);
    super::pool().execute_chunked(starts[mats.len()], |items| {
        for (i, w) in mats.iter().enumerate() {
            let n = starts[i + 1] - starts[i];
            let (first, end) = (items.start.max(starts[i]), items.end.min(starts[i + 1]));
            if first >= end {
                continue;
            }
            let mine = first - starts[i]..end - starts[i];
            // Runs of weight rows that stay in L2 while every group of activation rows
            // passes (one group, the whole run, in decode).
            let run = if m > MAX_ROWS { 16 } else { mine.len() };
            for c0 in mine.clone().step_by(run) {
                let columns = c0..(c0 + run).min(mine.end);
                for g in (0..m).step_by(MAX_ROWS) {
                    let group = g..(g + MAX_ROWS).min(m);
                    let out = (addresses[i] as *mut f32).wrapping_add(g * n + c0);
                    // SAFETY: the kernels are the path's (the CPU runs them), matrix i has
                    // `blocks` blocks per output row and `dsts[i]` `m × n` values (checked
                    // above), and each output is written by exactly one work item.
                    unsafe {
                        w.rows(
                            &kernels,
                            columns.clone(),
                            blocks,
                            (a, group, other),
                            (out, n),
                        )
                    };
                }
            }
        }
    });
    Some(Ok(()))
}
