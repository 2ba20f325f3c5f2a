//! The AVX-512 prompt kernels that take activation rows two at a time: a 512-bit vector holds
//! 32 codes of one row in its low half and the same 32 of the next row in its high half, so
//! its sixteen i32 lanes are ggml's eight AVX2 lanes of each row (see [`super::kquant`] for
//! why those lanes, and the bits, are ggml's).
//!
//! Where the pairs come from ([`PairSource`]): two rows of Q8_K blocks, each chunk of 32 a
//! 256-bit load into each half (`vinserti64x4`, a shuffle-port instruction per pair and chunk),
//! or rows interleaved once per matmul ([`PairQ8K`]: both rows' chunk a single 512-bit load,
//! both rows' `d` a single vector). In the VNNI Q4_K tile the inserts were 6 of 54 vector
//! instructions per 64 values. Interleaved, on the Intel Xeon (AVX-512 VNNI): the 6 × 4 tile
//! alone, one thread, best of 15, 79–83 → 96–98 GMAC/s for Q4_K and 76–77 → 84–88 for Q6_K
//! at 43 super-blocks (FFN down), 87 → 98–100 and 79–83 → 97 at 8; whole 512-row GEMMs on 2
//! threads, min of 15, 10–20% faster in each of four interleaved pairs. The
//! prompt driver interleaves the rows of its full tiles; the lone rows of a tile's edge go in
//! twice from their blocks.

#[cfg(target_arch = "x86_64")]
use super::kquant::hsum_float_8;
use super::kquant::{BlockQ8K, Unpacked, QK_K};

/// Super-block `b` of two activation rows, interleaved for the pair kernels: chunk `s` (values
/// `32s..32s + 32`) of the first row, then the same chunk of the second, for each of the eight
/// chunks; and each row's `d` eight times. The codes are as the kernels take them (plus 128
/// where [`super::kquant::Tiles::unsigned_activations`]).
///
/// Not aligned to a cache line: with `align(64)` the buffers went through `posix_memalign`,
/// whose leftovers fragmented the heap (peak RSS of a 4000-token prefill +199 MB, of a
/// 2000-token one +42 MB), and the unaligned loads cost nothing measurable (prefill @512, three
/// interleaved pairs on the Intel Xeon: 39.6–40.4 against 35.0–43.1 tok/s).
#[derive(Debug, Clone, Copy, PartialEq)]
#[repr(C)]
pub struct PairQ8K {
    pub qs: [u8; 2 * QK_K],
    pub d: [f32; 16],
}

const _: () = assert!(std::mem::size_of::<PairQ8K>() == 576);

impl PairQ8K {
    pub const ZERO: Self = Self {
        qs: [0; 2 * QK_K],
        d: [0.0; 16],
    };

    /// Sets row `half` (0 or 1) of the pair from its block.
    pub fn set_row(&mut self, half: usize, block: &BlockQ8K) {
        for (s, chunk) in block.qs.chunks_exact(32).enumerate() {
            let at = 64 * s + 32 * half;
            for (q, &code) in self.qs[at..at + 32].iter_mut().zip(chunk) {
                *q = code as u8;
            }
        }
        self.d[8 * half..8 * half + 8].fill(block.d);
    }

    /// Rows `2i` and `2i + 1` of `rows` (each `blocks` Q8_K blocks) interleaved, pair after
    /// pair, `blocks` pairs each: what the paired tiles take. A last odd row is left out.
    pub fn interleave(rows: &[BlockQ8K], blocks: usize) -> Vec<PairQ8K> {
        let pairs = rows.len().checked_div(blocks).unwrap_or(0) / 2;
        let mut out = vec![Self::ZERO; pairs * blocks];
        for (i, pair) in out.chunks_exact_mut(blocks.max(1)).enumerate() {
            for (half, row) in rows[2 * i * blocks..(2 * i + 2) * blocks]
                .chunks_exact(blocks)
                .enumerate()
            {
                for (p, block) in pair.iter_mut().zip(row) {
                    p.set_row(half, block);
                }
            }
        }
        out
    }
}

/// Where a pair kernel reads a pair of activation rows.
#[cfg(target_arch = "x86_64")]
pub trait PairSource: Copy {
    /// Super-blocks per row.
    fn blocks(&self) -> usize;
    /// The 32 codes at `offset` of super-block `b`: the first row's in the low half, the
    /// second's in the high half.
    ///
    /// # Safety
    /// The CPU must have AVX-512 F; `b < self.blocks()`, `offset + 32 <= 256`.
    unsafe fn codes(&self, b: usize, offset: usize) -> std::arch::x86_64::__m512i;
    /// Super-block `b`'s `d`: the first row's in the low eight lanes, the second's above.
    ///
    /// # Safety
    /// The CPU must have AVX-512 F; `b < self.blocks()`.
    unsafe fn d(&self, b: usize) -> std::arch::x86_64::__m512;
}

/// Two rows of blocks (a lone row goes in twice).
#[cfg(target_arch = "x86_64")]
impl PairSource for [&[BlockQ8K]; 2] {
    fn blocks(&self) -> usize {
        self[0].len()
    }

    #[target_feature(enable = "avx512f")]
    #[inline]
    unsafe fn codes(&self, b: usize, offset: usize) -> std::arch::x86_64::__m512i {
        use std::arch::x86_64::*;
        // No closure here: one in a kernel's body made its intrinsics calls (fourth step).
        let first = self[0].get_unchecked(b).qs.as_ptr().add(offset) as *const __m256i;
        let second = self[1].get_unchecked(b).qs.as_ptr().add(offset) as *const __m256i;
        _mm512_inserti64x4::<1>(
            _mm512_castsi256_si512(_mm256_loadu_si256(first)),
            _mm256_loadu_si256(second),
        )
    }

    #[target_feature(enable = "avx512f")]
    #[inline]
    unsafe fn d(&self, b: usize) -> std::arch::x86_64::__m512 {
        use std::arch::x86_64::*;
        let (y0, y1) = (self[0].get_unchecked(b), self[1].get_unchecked(b));
        _mm512_castpd_ps(_mm512_insertf64x4::<1>(
            _mm512_castpd256_pd512(_mm256_castps_pd(_mm256_set1_ps(y0.d))),
            _mm256_castps_pd(_mm256_set1_ps(y1.d)),
        ))
    }
}

/// Rows interleaved once per matmul: one load each.
#[cfg(target_arch = "x86_64")]
impl PairSource for &[PairQ8K] {
    fn blocks(&self) -> usize {
        self.len()
    }

    #[target_feature(enable = "avx512f")]
    #[inline]
    unsafe fn codes(&self, b: usize, offset: usize) -> std::arch::x86_64::__m512i {
        use std::arch::x86_64::*;
        _mm512_loadu_si512(self.get_unchecked(b).qs.as_ptr().add(2 * offset) as *const __m512i)
    }

    #[target_feature(enable = "avx512f")]
    #[inline]
    unsafe fn d(&self, b: usize) -> std::arch::x86_64::__m512 {
        use std::arch::x86_64::*;
        _mm512_loadu_ps(self.get_unchecked(b).d.as_ptr())
    }
}

/// The body of [`dot_avx512`] and [`dot_avx512_vnni`]: one source for two sets of target
/// features (a function can't take them from a const parameter). `P`, `C` and `Q6` are the
/// calling function's const parameters.
#[cfg(target_arch = "x86_64")]
macro_rules! pairs_kernel {
    ($a:ident, $w:ident) => {{
        let (a, w) = ($a, $w);
        use std::arch::x86_64::*;
        let m32 = _mm512_set1_epi8(32);
        let mut acc = [[_mm512_setzero_ps(); C]; P];
        for b in 0..a[0].blocks() {
            let mut sumi = if Q6 {
                corrected_sums::<P, C>(&w, b)
            } else {
                [[_mm512_setzero_si512(); C]; P]
            };
            for s in 0..QK_K / 32 {
                let mut ys = [_mm512_setzero_si512(); P];
                for p in 0..P {
                    ys[p] = a[p].codes(b, 32 * s);
                }
                for c in 0..C {
                    let u = w[c].get_unchecked(b);
                    let codes = _mm512_broadcast_i64x4(_mm256_load_si256(
                        u.q.as_ptr().add(32 * s) as *const __m256i
                    ));
                    let scales = _mm512_broadcast_i64x4(_mm256_loadu_si256(
                        u.scales.as_ptr().add(16 * s) as *const __m256i,
                    ));
                    // Q6_K: the codes minus 32 (signed) by unsigned activations; Q4_K: the codes
                    // (unsigned) by the signed activations.
                    let signed_codes = _mm512_sub_epi8(codes, m32);
                    for p in 0..P {
                        let products = if Q6 {
                            _mm512_maddubs_epi16(ys[p], signed_codes)
                        } else {
                            _mm512_maddubs_epi16(codes, ys[p])
                        };
                        sumi[p][c] =
                            _mm512_add_epi32(sumi[p][c], _mm512_madd_epi16(scales, products));
                    }
                }
            }
            scale_pairs::<P, C, A>(&a, &w, b, &sumi, &mut acc);
        }
        finish_pairs::<P, C>(&acc)
    }};
}

/// AVX-512 (BW): the AVX2 kernel's lanes for two activation rows at once. A 512-bit vector
/// holds 32 values of row `2p` in its low half and the same 32 of row `2p + 1` in its high
/// half, against the weights' 32 broadcast to both halves, so its sixteen i32 lanes are the
/// eight AVX2 lanes of each row, with no folding, and the float work per super-block (convert,
/// scale) runs once per pair of rows instead of once per row. `P` pairs of rows (a lone row
/// goes in twice). Q4_K's mins term is left out: the driver adds [`super::kquant::Tiles::mins`]' value.
///
/// Q6_K (`Q6`) takes the activations made unsigned ([`super::kquant::make_unsigned`]): `maddubs` of the
/// activations plus 128 (unsigned) by the codes minus 32 (signed, −32..31: two products sum
/// to at most 2 × 255 × 32 = 16320, no saturation), then `madd` with the scales, and what the
/// `+ 128` adds to each lane (`Unpacked::unsigned_correction`) starts the lane's sum negative.
/// ggml (and the AVX2 and portable paths here) takes 32 off in i16 after a second `maddubs` of
/// the activations by 32 and a subtraction: three and a quarter multiplying instructions per
/// (pair, column) and chunk of 32 where this takes two (Intel Xeon, prefill @512: Q6_K's
/// share of the samples 12.5% → 11.0–11.5%). Exact integers in ggml's lanes either way, so
/// the float work and the bits are ggml's.
///
/// Registers: the inner loop holds one integer sum per (pair, column), the pairs' activations
/// and a weight and a scale vector (3 pairs × 4 columns: 12 + 3 + 2 of AVX-512's 32); the
/// float sums, touched once per super-block, may live on the stack. Three pairs rather than
/// two: each weight vector fetched from L2 then serves six rows (prefill @512 +17%, four pairs
/// no better). The kernel this replaced kept one accumulator per (row, column) in each kind,
/// 48 vectors for 4 × 4, and spilled inside its inner loop.
///
/// # Safety
/// The CPU must have AVX-512 F and BW, AVX2 and FMA; every `w[c]` and every row of `a` as
/// long as `a[0]`'s; for Q6_K the activations made unsigned.
///
/// [`dot_avx512_vnni`] is the same source built with VNNI, where the compiler fuses each
/// `madd` and its `add` into one `vpdpwssd` (the same wrapping i32 sums): Q6_K's kernel there.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bw,avx2,fma")]
pub unsafe fn dot_avx512<const P: usize, const C: usize, const Q6: bool, A: PairSource>(
    a: [A; P],
    w: [&[Unpacked]; C],
) -> [[[f32; C]; 2]; P] {
    pairs_kernel!(a, w)
}

/// [`dot_avx512`] on a CPU with VNNI: `madd` + `add` become one `vpdpwssd` (three instructions
/// per (pair, column) and chunk of 32 become two). Q6_K's prompt kernel there: 18% faster
/// alone (Intel Xeon, one thread, 512 × 11008 → 2048, min of 7).
///
/// # Safety
/// As [`dot_avx512`]'s, and the CPU must have AVX-512 VNNI.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bw,avx512vnni,avx2,fma")]
pub unsafe fn dot_avx512_vnni<const P: usize, const C: usize, const Q6: bool, A: PairSource>(
    a: [A; P],
    w: [&[Unpacked]; C],
) -> [[[f32; C]; 2]; P] {
    pairs_kernel!(a, w)
}

/// Super-block `b`'s float work for the pair kernels ([`dot_avx512`],
/// [`dot_avx512_q4k_vnni`]): each pair's sixteen integer lanes times `d_y × d` (row by row,
/// as ggml multiplies them: the product commutes exactly) into its accumulator. Q4_K's mins
/// are left to [`super::kquant_mins`] (ggml adds them only at the end).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bw,avx2,fma")]
#[inline]
unsafe fn scale_pairs<const P: usize, const C: usize, A: PairSource>(
    a: &[A; P],
    w: &[&[Unpacked]; C],
    b: usize,
    sumi: &[[std::arch::x86_64::__m512i; C]; P],
    acc: &mut [[std::arch::x86_64::__m512; C]; P],
) {
    use std::arch::x86_64::*;
    for p in 0..P {
        let dy = a[p].d(b);
        for c in 0..C {
            let u = w[c].get_unchecked(b);
            let d = _mm512_mul_ps(dy, _mm512_set1_ps(u.d));
            acc[p][c] = _mm512_fmadd_ps(d, _mm512_cvtepi32_ps(sumi[p][c]), acc[p][c]);
        }
    }
}

/// ggml's final reduction of each row of each pair (`hsum_float_8`): the low half of a
/// pair's accumulator is its first row's, the high half its second's. No mins term: the
/// pair kernels leave Q4_K's to [`super::kquant_mins`], whose values the driver's column tile
/// starts from (the tile wrappers add these sums to them).
///
/// Four columns (the full tiles) are reduced together, eight sums in the 128-bit lanes of
/// two vectors: ggml's three steps (the halves added, then lanes 0 + 2 and 1 + 3, then those
/// two; additions commute exactly, so the same bits) in 16 instructions a pair instead of
/// some 50 one sum at a time. With the stores after it, the one-at-a-time form was 6.8% of a
/// 512 × 2048 → 11008 Q4_K GEMM's samples on one thread (Zen 4).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bw,avx2,fma")]
#[inline]
unsafe fn finish_pairs<const P: usize, const C: usize>(
    acc: &[[std::arch::x86_64::__m512; C]; P],
) -> [[[f32; C]; 2]; P] {
    use std::arch::x86_64::*;
    let mut out = [[[0f32; C]; 2]; P];
    if C == 4 {
        // Lane 0 of each 128-bit lane after `halves_of`: [row 0 of column a, row 1 of a,
        // row 0 of column b, row 1 of b].
        let halves_of = |a: __m512, b: __m512| {
            let r = _mm512_add_ps(
                _mm512_shuffle_f32x4::<0b10_00_10_00>(a, b),
                _mm512_shuffle_f32x4::<0b11_01_11_01>(a, b),
            );
            let r = _mm512_add_ps(r, _mm512_permute_ps::<0b11_10_11_10>(r));
            _mm512_add_ps(r, _mm512_movehdup_ps(r))
        };
        // Row 0's four columns, then row 1's.
        let gather = _mm512_setr_epi32(0, 8, 16, 24, 4, 12, 20, 28, 0, 0, 0, 0, 0, 0, 0, 0);
        for p in 0..P {
            let first = halves_of(acc[p][0], acc[p][1]);
            let second = halves_of(acc[p][2], acc[p][3]);
            let rows = _mm512_permutex2var_ps(first, gather, second);
            // `out[p]` is `[[f32; 4]; 2]` here: eight floats, row 0's then row 1's.
            _mm256_storeu_ps(
                out[p].as_mut_ptr() as *mut f32,
                _mm512_castps512_ps256(rows),
            );
        }
        return out;
    }
    for p in 0..P {
        for c in 0..C {
            let acc = acc[p][c];
            out[p][0][c] = hsum_float_8(_mm512_castps512_ps256(acc));
            out[p][1][c] = hsum_float_8(_mm256_castpd_ps(_mm512_extractf64x4_pd::<1>(
                _mm512_castps_pd(acc),
            )));
        }
    }
    out
}

/// Super-block `b`'s integer sums before any product, for kernels that take the activations
/// plus 128: minus each column's `unsigned_correction`, in both rows of every pair.
///
/// # Safety
/// The CPU must have AVX-512 F and AVX2; every `w[c]` holds super-block `b`.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx2")]
#[inline]
unsafe fn corrected_sums<const P: usize, const C: usize>(
    w: &[&[Unpacked]; C],
    b: usize,
) -> [[std::arch::x86_64::__m512i; C]; P] {
    use std::arch::x86_64::*;
    let mut starts = [_mm512_setzero_si512(); C];
    for (start, column) in starts.iter_mut().zip(w) {
        let correction = column.get_unchecked(b).unsigned_correction.as_ptr();
        *start = _mm512_sub_epi32(
            _mm512_setzero_si512(),
            _mm512_broadcast_i64x4(_mm256_loadu_si256(correction as *const __m256i)),
        );
    }
    [starts; P]
}

/// Q4_K on AVX-512 VNNI, with [`dot_avx512`]'s pairs of rows: three multiplying instructions
/// per two chunks of 32 where `maddubs` + `madd` take four. `vpdpbusd` sums four products
/// into an i32 lane, but Q4_K's scale changes every 32 values, so two chunks' sums share
/// one lane as two 16-bit words (`madd` with both scales then gives the AVX2 lane):
/// the second chunk's sums shifted up 16 bits are the first `vpdpbusd`'s accumulator.
/// That needs the first chunk's sums non-negative and below 2^15, so the activations go in
/// plus 128 (unsigned; at most 4 × 255 × 15 = 15300 a word), and what that adds to each lane
/// (`Unpacked::unsigned_correction`) starts the lane's sum negative. Exact integers in the
/// same lanes: the float work and the bits are ggml's.
///
/// # Safety
/// The CPU must have AVX-512 F, BW and VNNI, AVX2 and FMA; every `w[c]` and every row of `a`
/// as long as `a[0]`'s, the activations made unsigned ([`super::kquant::make_unsigned`]).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bw,avx512vnni,avx2,fma")]
pub unsafe fn dot_avx512_q4k_vnni<const P: usize, const C: usize, A: PairSource>(
    a: [A; P],
    w: [&[Unpacked]; C],
) -> [[[f32; C]; 2]; P] {
    use std::arch::x86_64::*;
    let mut acc = [[_mm512_setzero_ps(); C]; P];
    for b in 0..a[0].blocks() {
        let mut sumi = corrected_sums::<P, C>(&w, b);
        for t in 0..QK_K / 64 {
            let mut ys = [[_mm512_setzero_si512(); 2]; P];
            for p in 0..P {
                for (h, y) in ys[p].iter_mut().enumerate() {
                    *y = a[p].codes(b, 64 * t + 32 * h);
                }
            }
            for c in 0..C {
                let u = w[c].get_unchecked(b);
                let q0 = _mm512_broadcast_i64x4(_mm256_load_si256(
                    u.q.as_ptr().add(64 * t) as *const __m256i
                ));
                let q1 = _mm512_broadcast_i64x4(_mm256_load_si256(
                    u.q.as_ptr().add(64 * t + 32) as *const __m256i
                ));
                // Both chunks' scales, the first in the low word of every lane.
                let scales = _mm512_set1_epi32(std::ptr::read_unaligned(
                    u.sub_scales.as_ptr().add(2 * t) as *const i32,
                ));
                for p in 0..P {
                    let second = _mm512_dpbusd_epi32(_mm512_setzero_si512(), ys[p][1], q1);
                    let words = _mm512_dpbusd_epi32(_mm512_slli_epi32::<16>(second), ys[p][0], q0);
                    sumi[p][c] = _mm512_add_epi32(sumi[p][c], _mm512_madd_epi16(words, scales));
                }
            }
        }
        scale_pairs::<P, C, A>(&a, &w, b, &sumi, &mut acc);
    }
    finish_pairs::<P, C>(&acc)
}
