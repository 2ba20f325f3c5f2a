//! Q4_1 prompts: weights unpacked a panel of 16 columns at a time, multiplied by tiles of
//! activation rows with one `vpdpbusd` per 4 codes × 16 columns (AVX-512 VNNI).
//!
//! Why: the row kernel ([`super::q4_1::dot_avx512_vnni`]) gathers the nibbles of a row again
//! for every activation row, reduces each block's four partial sums with shuffles and adds its
//! eight block terms one after another. With a 64-token prompt SmolLM2-135M ran at 28 GMAC/s
//! on two Zen 4 cores where the 3B file's k-quant tiles reach 110 (0.81× llama.cpp's prefill;
//! `perf` put 60% of the run in that kernel).
//!
//! Here a panel's codes are laid out once per call ([`PanelBlock`]): for each block, 8 groups
//! of 4 values, each group as 16 columns × 4 codes, one 512-bit vector. An activation row's 4
//! bytes of a group, broadcast to all 16 lanes, meet that vector in one `vpdpbusd`: lane `c`
//! gains column `c`'s 4 products. Eight of them give the 16 columns' exact integer sums of a
//! block, with no reduction across lanes, and a tile of rows shares every vector loaded. The
//! block's float term is then computed for 16 columns at once, in candle's order
//! (`sumi × d_w × d_a + m_w × s_a`, added to the running sum block after block), so the
//! results keep candle's bits.

use super::q4_1::{BlockQ4_1, BlockQ8, BLOCK};

/// Columns of a panel: one i32 lane each of a 512-bit vector.
pub const PANEL: usize = 16;

/// Groups of 4 codes in a block.
const GROUPS: usize = BLOCK / 4;

/// One block of a panel: group `j`'s codes for column `c` are `codes[j][4c..4c + 4]` (values
/// `4j..4j + 4` of the block), then every column's scale and offset. Columns past the
/// matrix's last are zero.
#[derive(Debug, Clone, Copy, PartialEq)]
#[repr(C, align(64))]
pub struct PanelBlock {
    codes: [[u8; 4 * PANEL]; GROUPS],
    d: [f32; PANEL],
    m: [f32; PANEL],
}

impl PanelBlock {
    const ZERO: PanelBlock = PanelBlock {
        codes: [[0; 4 * PANEL]; GROUPS],
        d: [0.0; PANEL],
        m: [0.0; PANEL],
    };
}

/// Lays out columns `columns` (at most [`PANEL`]) of `weights` (rows of `blocks` blocks each)
/// as a panel, into `out` (resized to `blocks`). The reference the SIMD layouts are tested
/// against.
pub fn unpack_portable(
    weights: &[BlockQ4_1],
    blocks: usize,
    columns: std::ops::Range<usize>,
    out: &mut Vec<PanelBlock>,
) {
    out.clear();
    out.resize(blocks, PanelBlock::ZERO);
    for (c, column) in columns.enumerate().take(PANEL) {
        let row = &weights[column * blocks..(column + 1) * blocks];
        for (block, panel) in row.iter().zip(out.iter_mut()) {
            let packed = u128::from_le_bytes(block.qs);
            // Values 0..16 are the low nibbles, 16..32 the high ones, in byte order.
            let low = (packed & 0x0F0F_0F0F_0F0F_0F0F_0F0F_0F0F_0F0F_0F0F).to_le_bytes();
            let high = ((packed >> 4) & 0x0F0F_0F0F_0F0F_0F0F_0F0F_0F0F_0F0F_0F0F).to_le_bytes();
            for j in 0..GROUPS / 2 {
                panel.codes[j][4 * c..4 * c + 4].copy_from_slice(&low[4 * j..4 * j + 4]);
                panel.codes[j + GROUPS / 2][4 * c..4 * c + 4]
                    .copy_from_slice(&high[4 * j..4 * j + 4]);
            }
            panel.d[c] = block.d.to_f32();
            panel.m[c] = block.m.to_f32();
        }
    }
}

/// [`unpack_portable`] with AVX-512 gathers: per block, four gathers of one 4-byte word from
/// each of the 16 columns give eight groups (low and high nibbles), a fifth gives the scales
/// and offsets. Laying out a panel the portable way took a third as long as multiplying it by
/// 64 rows (SmolLM2, `perf`).
///
/// # Panics
/// If `columns` is not within `weights`' rows; the caller selects this only on a CPU with
/// AVX-512 F and BW and F16C.
#[cfg(target_arch = "x86_64")]
pub fn unpack_avx512(
    weights: &[BlockQ4_1],
    blocks: usize,
    columns: std::ops::Range<usize>,
    out: &mut Vec<PanelBlock>,
) {
    let count = columns.len().min(PANEL);
    assert!(
        blocks > 0 && (columns.start + count) * blocks <= weights.len(),
        "q4_1 panel: columns {columns:?} of {blocks} blocks past {} blocks",
        weights.len()
    );
    assert!(
        PANEL * blocks * std::mem::size_of::<BlockQ4_1>() < i32::MAX as usize,
        "q4_1 panel: rows too long for 32-bit gather offsets"
    );
    out.clear();
    out.resize(blocks, PanelBlock::ZERO);
    // SAFETY: the gathers read, for each of the `count` columns, one word of each of its
    // `blocks` blocks, all inside `weights` (asserted above); the CPU has the features.
    unsafe { unpack_gathers(&weights[columns.start * blocks..], blocks, count, out) }
}

/// # Safety
/// `first` holds `count` rows of `blocks` blocks, `out` holds `blocks` panel blocks, and the
/// CPU has AVX-512 F and BW.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bw,f16c")]
unsafe fn unpack_gathers(first: &[BlockQ4_1], blocks: usize, count: usize, out: &mut [PanelBlock]) {
    use std::arch::x86_64::*;
    let row_bytes = (blocks * std::mem::size_of::<BlockQ4_1>()) as i32;
    let offsets = _mm512_mullo_epi32(
        _mm512_set_epi32(15, 14, 13, 12, 11, 10, 9, 8, 7, 6, 5, 4, 3, 2, 1, 0),
        _mm512_set1_epi32(row_bytes),
    );
    let present: __mmask16 = if count >= PANEL {
        0xFFFF
    } else {
        (1u16 << count) - 1
    };
    let nibbles = _mm512_set1_epi8(0x0F);
    let zero = _mm512_setzero_si512();
    for (b, panel) in out.iter_mut().enumerate() {
        let block = first.as_ptr().add(b) as *const u8;
        for j in 0..GROUPS / 2 {
            let words = _mm512_mask_i32gather_epi32::<1>(
                zero,
                present,
                offsets,
                block.add(4 + 4 * j) as *const _,
            );
            let low = _mm512_and_si512(words, nibbles);
            let high = _mm512_and_si512(_mm512_srli_epi16(words, 4), nibbles);
            _mm512_store_si512(panel.codes[j].as_mut_ptr() as *mut _, low);
            _mm512_store_si512(panel.codes[j + GROUPS / 2].as_mut_ptr() as *mut _, high);
        }
        // `d` in each word's low half, `m` in its high half.
        let scales = _mm512_mask_i32gather_epi32::<1>(zero, present, offsets, block as *const _);
        let d = _mm512_cvtph_ps(_mm512_cvtepi32_epi16(scales));
        let m = _mm512_cvtph_ps(_mm512_cvtepi32_epi16(_mm512_srli_epi32(scales, 16)));
        _mm512_store_ps(panel.d.as_mut_ptr(), d);
        _mm512_store_ps(panel.m.as_mut_ptr(), m);
    }
}

/// A panel layout: [`unpack_portable`] or a SIMD one with its results.
pub type Unpack = fn(&[BlockQ4_1], usize, std::ops::Range<usize>, &mut Vec<PanelBlock>);

/// The two halves of a path's prompt kernel.
#[derive(Clone, Copy)]
pub struct Kernels {
    pub unpack: Unpack,
    pub tile: PanelTile,
}

/// A tile of activation rows × one panel, into `out[r]` (16 columns a row).
pub type PanelTile = fn(panel: &[PanelBlock], rows: &[&[BlockQ8]], out: &mut [[f32; PANEL]]);

/// Rows of activations a tile kernel takes at once: eight rows' accumulators and sums, 16
/// vectors, leave room for the weights and scales in AVX-512's 32 registers.
pub const TILE_ROWS: usize = 8;

/// [`PanelTile`] on AVX-512 VNNI: tiles of [`TILE_ROWS`] rows, then single rows.
///
/// # Panics
/// If a row's length is not the panel's or `out` is shorter than `rows`; the caller selects
/// this only on a CPU with AVX-512 F, BW and VNNI.
#[cfg(target_arch = "x86_64")]
pub fn tile_avx512_vnni(panel: &[PanelBlock], rows: &[&[BlockQ8]], out: &mut [[f32; PANEL]]) {
    in_tiles::<TILE_ROWS>(
        panel,
        rows,
        out,
        // SAFETY (both): `in_tiles` checked the lengths; selected only on a CPU with the
        // kernel's features.
        |tile| unsafe { rows_avx512_vnni(panel, tile) },
        |one| unsafe { rows_avx512_vnni(panel, one) },
    )
}

/// A tile driver: `T` rows at a time through `tile`, the rest one at a time through `one`.
///
/// # Panics
/// If a row's length is not the panel's or `out` is shorter than `rows`.
fn in_tiles<const T: usize>(
    panel: &[PanelBlock],
    rows: &[&[BlockQ8]],
    out: &mut [[f32; PANEL]],
    tile: impl Fn([&[BlockQ8]; T]) -> [[f32; PANEL]; T],
    one: impl Fn([&[BlockQ8]; 1]) -> [[f32; PANEL]; 1],
) {
    assert!(
        rows.iter().all(|r| r.len() == panel.len()) && out.len() >= rows.len(),
        "q4_1 panel: rows of {} blocks for a panel of {}",
        rows.first().map_or(0, |r| r.len()),
        panel.len()
    );
    let mut done = 0;
    while done < rows.len() {
        if rows.len() - done >= T {
            let values = tile(std::array::from_fn(|r| rows[done + r]));
            out[done..done + T].copy_from_slice(&values);
            done += T;
        } else {
            [out[done]] = one([rows[done]]);
            done += 1;
        }
    }
}

/// `R` activation rows × the panel's 16 columns.
///
/// # Safety
/// The CPU must have AVX-512 F, BW and VNNI; every row as long as `panel`.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
unsafe fn rows_avx512_vnni<const R: usize>(
    panel: &[PanelBlock],
    rows: [&[BlockQ8]; R],
) -> [[f32; PANEL]; R] {
    use std::arch::x86_64::*;
    let mut sums = [_mm512_setzero_ps(); R];
    for (b, block) in panel.iter().enumerate() {
        let mut sumi = [_mm512_setzero_si512(); R];
        for j in 0..GROUPS {
            let codes = _mm512_load_si512(block.codes[j].as_ptr() as *const _);
            for (sumi, row) in sumi.iter_mut().zip(&rows) {
                let a = row.get_unchecked(b);
                let four = std::ptr::read_unaligned(a.qs.as_ptr().add(4 * j) as *const i32);
                *sumi = _mm512_dpbusd_epi32(*sumi, codes, _mm512_set1_epi32(four));
            }
        }
        let d = _mm512_load_ps(block.d.as_ptr());
        let m = _mm512_load_ps(block.m.as_ptr());
        for ((sum, sumi), row) in sums.iter_mut().zip(&sumi).zip(&rows) {
            let a = row.get_unchecked(b);
            // candle's `sumi as f32 * w.d * a.d + w.m * a.s`, then `sum += term`.
            let term = _mm512_add_ps(
                _mm512_mul_ps(
                    _mm512_mul_ps(_mm512_cvtepi32_ps(*sumi), d),
                    _mm512_set1_ps(a.d),
                ),
                _mm512_mul_ps(m, _mm512_set1_ps(a.s)),
            );
            *sum = _mm512_add_ps(*sum, term);
        }
    }
    let mut out = [[0f32; PANEL]; R];
    for (out, sum) in out.iter_mut().zip(sums) {
        _mm512_storeu_ps(out.as_mut_ptr(), sum);
    }
    out
}

/// [`PanelTile`] on AVX2 (machines without AVX-512 VNNI): the same panels as two 256-bit
/// halves of 8 columns, `maddubs` (4 codes × the broadcast activation word, pairs into i16)
/// and `madd` with ones (into i32 lanes) per group, tiles of two rows (AVX2's sixteen
/// registers hold two rows' accumulators and sums for both halves), then single rows.
///
/// # Panics
/// As [`tile_avx512_vnni`]; the caller selects this only on a CPU with AVX2.
#[cfg(target_arch = "x86_64")]
pub fn tile_avx2(panel: &[PanelBlock], rows: &[&[BlockQ8]], out: &mut [[f32; PANEL]]) {
    in_tiles::<2>(
        panel,
        rows,
        out,
        // SAFETY (both): `in_tiles` checked the lengths; selected only on a CPU with AVX2.
        |tile| unsafe { rows_avx2(panel, tile) },
        |one| unsafe { rows_avx2(panel, one) },
    )
}

/// `R` activation rows × the panel's 16 columns, as two halves of 8.
///
/// # Safety
/// The CPU must have AVX2; every row as long as `panel`.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn rows_avx2<const R: usize>(
    panel: &[PanelBlock],
    rows: [&[BlockQ8]; R],
) -> [[f32; PANEL]; R] {
    use std::arch::x86_64::*;
    let ones = _mm256_set1_epi16(1);
    let mut sums = [[_mm256_setzero_ps(); 2]; R];
    for (b, block) in panel.iter().enumerate() {
        let mut sumi = [[_mm256_setzero_si256(); 2]; R];
        for j in 0..GROUPS {
            let codes = [
                _mm256_load_si256(block.codes[j].as_ptr() as *const __m256i),
                _mm256_load_si256(block.codes[j].as_ptr().add(32) as *const __m256i),
            ];
            for (sumi, row) in sumi.iter_mut().zip(&rows) {
                let a = row.get_unchecked(b);
                let four = std::ptr::read_unaligned(a.qs.as_ptr().add(4 * j) as *const i32);
                let four = _mm256_set1_epi32(four);
                for (sumi, codes) in sumi.iter_mut().zip(codes) {
                    // Codes below 16 × activations of at most 128: no i16 saturation.
                    let pairs = _mm256_maddubs_epi16(codes, four);
                    *sumi = _mm256_add_epi32(*sumi, _mm256_madd_epi16(pairs, ones));
                }
            }
        }
        for ((sums, sumi), row) in sums.iter_mut().zip(&sumi).zip(&rows) {
            let a = row.get_unchecked(b);
            for (half, (sum, sumi)) in sums.iter_mut().zip(sumi).enumerate() {
                let d = _mm256_load_ps(block.d.as_ptr().add(8 * half));
                let m = _mm256_load_ps(block.m.as_ptr().add(8 * half));
                // candle's `sumi as f32 * w.d * a.d + w.m * a.s`, then `sum += term`.
                let term = _mm256_add_ps(
                    _mm256_mul_ps(
                        _mm256_mul_ps(_mm256_cvtepi32_ps(*sumi), d),
                        _mm256_set1_ps(a.d),
                    ),
                    _mm256_mul_ps(m, _mm256_set1_ps(a.s)),
                );
                *sum = _mm256_add_ps(*sum, term);
            }
        }
    }
    let mut out = [[0f32; PANEL]; R];
    for (out, sums) in out.iter_mut().zip(sums) {
        _mm256_storeu_ps(out.as_mut_ptr(), sums[0]);
        _mm256_storeu_ps(out.as_mut_ptr().add(8), sums[1]);
    }
    out
}
