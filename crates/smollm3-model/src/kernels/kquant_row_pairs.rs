//! Q4_K row products for a few activation rows (2 to [`super::kquant_rows::MAX_ROWS`]: a batch
//! of sequences, a draft to verify) on AVX-512, the rows taken two at a time.
//!
//! Why: the one-row kernel ([`super::kquant_rows::gemv_q4k_avx512`]) run for each row spends
//! about half its instructions per row on float work (`d`, the mins term, converting, folding
//! the two halves of its 512-bit sums): 25 vector instructions per row and super-block, of
//! which 11 multiply. Here a 512-bit vector holds 32 values of one row in its low half and
//! the same 32 of the next row in its high half (as the prompt tiles do,
//! [`super::kquant_pairs`]), against the weights' 32 broadcast to both halves, so the float
//! work and the mins term run once per pair, on vectors already in ggml's lane order, and no
//! halves are folded: about 12 instructions per row and super-block. The weights are still
//! read once and unpacked in registers once for all the rows.
//!
//! Each row's integer lanes, float work and final reduction are ggml's AVX2
//! `vec_dot_q4_K_q8_K`'s (the lanes are the AVX2 kernel's, the `d`, `dmin` products and the
//! fused multiply-adds per lane the same operations), so every result is candle's bits
//! (tested against candle's kernel).

use super::kquant::{BlockQ4K, BlockQ8K, QK_K};
use super::kquant_pairs::PairQ8K;

/// What the mins term of a pair of rows reads per super-block: both rows' ggml pair sums of
/// `bsums` (`bsums[2i] + bsums[2i + 1]`, eight each), and `−d` of each row four times.
#[derive(Debug, Clone, Copy, PartialEq)]
#[repr(C)]
pub struct PairMins {
    pub sums: [i16; 16],
    pub neg_d: [f32; 8],
}

impl PairMins {
    pub const ZERO: Self = Self {
        sums: [0; 16],
        neg_d: [0.0; 8],
    };

    /// Sets row `half` (0 or 1) of the pair from its block.
    pub fn set_row(&mut self, half: usize, block: &BlockQ8K) {
        for (i, sum) in self.sums[8 * half..8 * half + 8].iter_mut().enumerate() {
            // `hadd_epi16`'s wrapping sum (16 codes of at most 127 each: no wrap here).
            *sum = block.bsums[2 * i].wrapping_add(block.bsums[2 * i + 1]);
        }
        self.neg_d[4 * half..4 * half + 4].fill(-block.d);
    }
}

/// Activation rows as the pair kernels take them: rows `2i` and `2i + 1` interleaved (a last
/// odd row paired with itself), block by block.
pub struct RowPairs {
    pub blocks: usize,
    pub pairs: Vec<PairQ8K>,
    pub mins: Vec<PairMins>,
}

impl RowPairs {
    /// `rows` (each `blocks` Q8_K blocks) in pairs.
    pub fn new(rows: &[&[BlockQ8K]], blocks: usize) -> Self {
        let count = rows.len().div_ceil(2);
        let mut pairs = vec![PairQ8K::ZERO; count * blocks];
        let mut mins = vec![PairMins::ZERO; count * blocks];
        for (i, (pairs, mins)) in pairs
            .chunks_exact_mut(blocks.max(1))
            .zip(mins.chunks_exact_mut(blocks.max(1)))
            .enumerate()
        {
            for half in 0..2 {
                let row = rows[(2 * i + half).min(rows.len() - 1)];
                for ((pair, min), block) in pairs.iter_mut().zip(mins.iter_mut()).zip(row) {
                    pair.set_row(half, block);
                    min.set_row(half, block);
                }
            }
        }
        RowPairs {
            blocks,
            pairs,
            mins,
        }
    }

    /// Pair `p`'s blocks.
    pub fn pair(&self, p: usize) -> (&[PairQ8K], &[PairMins]) {
        let range = p * self.blocks..(p + 1) * self.blocks;
        (&self.pairs[range.clone()], &self.mins[range])
    }
}

/// The pair kernels' common body: `$w` (one weight row) · the pairs `$a`, where `$sumi` is a
/// pair's sixteen integer lanes for one super-block from `$block` ([`Q4kBlock`]), `$q` (its
/// eight 32-code chunks, each in both halves) and `$y` (the pair's [`PairQ8K`]).
///
/// [`Q4kBlock`]: super::kquant_rows::Q4kBlock
macro_rules! q4k_pairs {
    ($w:expr, $a:expr, |$block:ident, $q:ident, $y:ident| $sumi:expr) => {{
        use std::arch::x86_64::*;
        let (w, a) = ($w, $a);
        let low = _mm512_set1_epi8(0x0F);
        let mut acc = [_mm512_setzero_ps(); P];
        let mut acc_m = [_mm256_setzero_ps(); P];
        for b in 0..a[0].0.len() {
            let x = w.get_unchecked(b);
            let block = super::kquant_rows::Q4kBlock::start(x);
            let mins = _mm256_broadcastsi128_si256(block.mins16);
            let (x_d, x_dmin) = (_mm512_set1_ps(block.d), _mm256_set1_ps(block.dmin));
            // Chunk s's 32 codes in both halves: the low nibbles of bytes 32j.. for s = 2j,
            // the high ones for s = 2j + 1.
            let mut q = [_mm512_setzero_si512(); 8];
            for j in 0..QK_K / 64 {
                let bytes = _mm512_broadcast_i64x4(_mm256_loadu_si256(
                    x.qs.as_ptr().add(32 * j) as *const __m256i
                ));
                q[2 * j] = _mm512_and_si512(bytes, low);
                q[2 * j + 1] = _mm512_and_si512(_mm512_srli_epi16(bytes, 4), low);
            }
            for p in 0..P {
                let (pairs, pair_mins) = a[p];
                let y = pairs.get_unchecked(b);
                let sumi = {
                    let ($block, $q, $y) = (&block, &q, y);
                    $sumi
                };
                let d = _mm512_mul_ps(_mm512_loadu_ps(y.d.as_ptr()), x_d);
                acc[p] = _mm512_fmadd_ps(d, _mm512_cvtepi32_ps(sumi), acc[p]);
                let m = pair_mins.get_unchecked(b);
                let prod =
                    _mm256_madd_epi16(mins, _mm256_loadu_si256(m.sums.as_ptr() as *const __m256i));
                let dmin = _mm256_mul_ps(_mm256_loadu_ps(m.neg_d.as_ptr()), x_dmin);
                acc_m[p] = _mm256_fmadd_ps(dmin, _mm256_cvtepi32_ps(prod), acc_m[p]);
            }
        }
        std::array::from_fn(|p| {
            let halves = [
                (
                    _mm512_castps512_ps256(acc[p]),
                    _mm256_castps256_ps128(acc_m[p]),
                ),
                (
                    _mm256_castpd_ps(_mm512_extractf64x4_pd::<1>(_mm512_castps_pd(acc[p]))),
                    _mm256_extractf128_ps::<1>(acc_m[p]),
                ),
            ];
            halves.map(|(acc, acc_m)| super::kquant::finish(acc, acc_m))
        })
    }};
}

/// One Q4_K weight row · `P` pairs of activation rows: each pair's two results.
///
/// # Safety
/// The CPU must have AVX-512 F and BW, AVX2, FMA and F16C; `w` and every pair's slices hold
/// the same number of blocks as `a[0].0`.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bw,avx2,fma,f16c")]
#[inline]
pub unsafe fn gemv_q4k_pairs<const P: usize>(
    w: &[BlockQ4K],
    a: [(&[PairQ8K], &[PairMins]); P],
) -> [[f32; 2]; P] {
    q4k_pairs!(w, a, |block, q, y| {
        let mut sumi = _mm512_setzero_si512();
        for (s, q) in q.iter().enumerate() {
            let ys = _mm512_loadu_si512(y.qs.as_ptr().add(64 * s) as *const __m512i);
            let scale = _mm512_set1_epi16(i16::from(block.scales[s]));
            sumi = _mm512_add_epi32(sumi, _mm512_madd_epi16(scale, _mm512_maddubs_epi16(*q, ys)));
        }
        sumi
    })
}

/// [`gemv_q4k_pairs`] with VNNI: two chunks' four-value sums (`vpdpbusd`) packed into the two
/// words of each lane, so that one `madd` applies both chunks' scales: 12 multiplies a pair
/// and super-block instead of 16, the same integers in the same lanes, so the same bits.
/// Zen 4 runs one 512-bit multiply a cycle; `rows/q4k` 2 rows 12% faster, 4 rows 4%.
///
/// # Safety
/// As [`gemv_q4k_pairs`], and the CPU must have AVX-512 VNNI.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bw,avx512vnni,avx2,fma,f16c")]
#[inline]
pub unsafe fn gemv_q4k_pairs_vnni<const P: usize>(
    w: &[BlockQ4K],
    a: [(&[PairQ8K], &[PairMins]); P],
) -> [[f32; 2]; P] {
    q4k_pairs!(w, a, |block, q, y| {
        let mut sumi = _mm512_setzero_si512();
        for j in 0..QK_K / 64 {
            let codes = |s: usize| _mm512_loadu_si512(y.qs.as_ptr().add(64 * s) as *const __m512i);
            // Each lane's four-value sums: at most 4 × 15 × 127 in size, one word.
            let first = _mm512_dpbusd_epi32(_mm512_setzero_si512(), q[2 * j], codes(2 * j));
            let second =
                _mm512_dpbusd_epi32(_mm512_setzero_si512(), q[2 * j + 1], codes(2 * j + 1));
            let words =
                _mm512_mask_blend_epi16(0xAAAA_AAAA, first, _mm512_slli_epi32::<16>(second));
            // Chunk 2j's scale in the low word of every lane, 2j + 1's in the high one.
            let scales =
                u32::from(block.scales[2 * j]) | (u32::from(block.scales[2 * j + 1]) << 16);
            sumi = _mm512_add_epi32(
                sumi,
                _mm512_madd_epi16(words, _mm512_set1_epi32(scales as i32)),
            );
        }
        sumi
    })
}
