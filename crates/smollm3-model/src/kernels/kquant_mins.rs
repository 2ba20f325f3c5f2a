//! Q4_K's mins term for a prompt's matmul, apart from the integer tiles of [`super::kquant`].
//!
//! A Q4_K value is `d × sc × q − dmin × m`, so a dot product with a Q8_K row is the scaled
//! integer sums minus `Σ_b d_y × dmin × Σ_j m[j] × (the row's sum of sub-block j)`. ggml keeps
//! that second part in four float lanes of its own per (row, column) and adds it only after
//! the main sum's reduction (`sum + m`, see `kquant::finish`), so it can be computed
//! anywhere, in any grouping of (row, column) pairs, as long as each lane sees the same
//! products in the same order: the bits stay ggml's.
//!
//! Why apart: inside the AVX-512 pair kernels it took a vector per (pair, column) and super-
//! block (five instructions, and the accumulators pushed the 3 × 4 tile past the 32 vector
//! registers, so every super-block spilled). The tile alone, one thread, 43 super-blocks
//! (Intel Xeon): 66 GMAC/s with it, 87 without, 84 with this pass beside it; in a 3B
//! prefill about 9% of the samples. Here four columns share a vector (each a 128-bit lane), a row's sums of
//! 32 and `−d_y` are read from a compact array made once per matmul ([`RowSums`], 20 bytes a
//! super-block instead of the 292-byte Q8_K block), and the four columns' mins and `dmin` are
//! arranged once per column tile: about one multiplying instruction per (row, column,
//! super-block), against some 18 for the integer sums. AVX2 takes two columns a vector:
//! there the mins were about a fifth of a tile's instructions (five per (row, column,
//! super-block) beside the 24 of `maddubs`, `madd` and add).

use super::kquant::{BlockQ8K, Unpacked, QK_K};

/// What the mins term needs of one super-block of an activation row.
#[derive(Debug, Clone, Copy, Default)]
#[repr(C)]
pub struct RowSums {
    /// The sums of each 32 activation codes (ggml's `hadd` of the 16-value `bsums`).
    pub sums: [i16; 8],
    /// `−d_y`.
    pub minus_d: f32,
}

impl RowSums {
    pub fn of(block: &BlockQ8K) -> Self {
        Self {
            sums: std::array::from_fn(|j| block.bsums[2 * j].wrapping_add(block.bsums[2 * j + 1])),
            minus_d: -block.d,
        }
    }
}

/// Writes `out[r × stride + c]`: the mins term of activation row `r` (`rows[r × blocks..]`)
/// with weight column `c` (`columns[c × blocks..]`), reduced as ggml reduces it, for every row
/// and every column of `columns` (`cols = columns.len() / blocks`, at most `stride`); the
/// other values of `out` are left as they are.
pub type MinsTile =
    fn(rows: &[RowSums], blocks: usize, columns: &[Unpacked], out: &mut [f32], stride: usize);

fn check(
    rows: &[RowSums],
    blocks: usize,
    columns: &[Unpacked],
    out: &[f32],
    stride: usize,
) -> (usize, usize) {
    assert!(
        blocks > 0 && rows.len().is_multiple_of(blocks) && columns.len().is_multiple_of(blocks),
        "k-quant mins: {} row and {} column super-blocks for {blocks} a row",
        rows.len(),
        columns.len()
    );
    let (m, cols) = (rows.len() / blocks, columns.len() / blocks);
    assert!(
        cols <= stride && (m == 0 || out.len() >= (m - 1) * stride + cols),
        "k-quant mins: no room for {m} × {cols} at a stride of {stride}"
    );
    (m, cols)
}

/// The definition, lane by lane as ggml's AVX2 code has them (`madd` of the mins with the
/// sums of 32: lane `i` takes sub-blocks `2i` and `2i + 1`; then `−d_y × dmin` times that,
/// fused into the lane; at the end lanes 0 + 2 and 1 + 3, then those two).
pub fn mins_portable(
    rows: &[RowSums],
    blocks: usize,
    columns: &[Unpacked],
    out: &mut [f32],
    stride: usize,
) {
    let (m, cols) = check(rows, blocks, columns, out, stride);
    for r in 0..m {
        for c in 0..cols {
            let mut lanes = [0f32; 4];
            for (y, u) in rows[r * blocks..(r + 1) * blocks]
                .iter()
                .zip(&columns[c * blocks..(c + 1) * blocks])
            {
                let scale = y.minus_d * u.dmin;
                for (i, lane) in lanes.iter_mut().enumerate() {
                    let prod = i32::from(u.mins[2 * i]) * i32::from(y.sums[2 * i])
                        + i32::from(u.mins[2 * i + 1]) * i32::from(y.sums[2 * i + 1]);
                    *lane = scale.mul_add(prod as f32, *lane);
                }
            }
            out[r * stride + c] = (lanes[0] + lanes[2]) + (lanes[1] + lanes[3]);
        }
    }
}

/// Per (super-block, group of columns): the group's mins, eight per column (a 128-bit lane
/// each), and each column's `dmin` across its four lanes; zeros past the last column. Sized
/// for AVX-512's groups of four; AVX2's groups of two use the first half.
#[cfg(target_arch = "x86_64")]
#[repr(C, align(64))]
#[derive(Clone, Copy)]
struct Panel {
    mins: [i16; 32],
    dmin: [f32; 16],
}

/// The SIMD passes' shared frame: checks, the panel of `group`-column groups, then `rows_pass`
/// over every row, which returns the row's sixteen column totals (column `c`'s at `c`; zero
/// past the last column). Picking each total out of its group's lanes here, a compare and a
/// scalar copy per column, was a fifth of the pass (Zen 4, one thread).
#[cfg(target_arch = "x86_64")]
fn simd_pass(
    rows: &[RowSums],
    blocks: usize,
    columns: &[Unpacked],
    out: &mut [f32],
    stride: usize,
    group: usize,
    mut rows_pass: impl FnMut(&[RowSums], &[Panel], usize) -> [f32; 16],
) {
    let (m, cols) = check(rows, blocks, columns, out, stride);
    if cols > 16 {
        // Wider than the prompt driver's column tiles: not a case the driver makes.
        return mins_portable(rows, blocks, columns, out, stride);
    }
    let groups = cols.div_ceil(group);
    let mut panel = vec![
        Panel {
            mins: [0; 32],
            dmin: [0.0; 16],
        };
        blocks * groups
    ];
    for b in 0..blocks {
        for g in 0..groups {
            let p = &mut panel[b * groups + g];
            for i in 0..group.min(cols - g * group) {
                let u = &columns[(g * group + i) * blocks + b];
                p.mins[8 * i..8 * i + 8].copy_from_slice(&u.mins);
                p.dmin[4 * i..4 * i + 4].fill(u.dmin);
            }
        }
    }
    for r in 0..m {
        let totals = rows_pass(&rows[r * blocks..(r + 1) * blocks], &panel, groups);
        let out = &mut out[r * stride..r * stride + cols];
        match <&mut [f32; 16]>::try_from(&mut *out) {
            Ok(whole) => *whole = totals,
            Err(_) => out.copy_from_slice(&totals[..cols]),
        }
    }
}

/// A SIMD pass's entry point, a [`MinsTile`]: [`simd_pass`] with the path's row function
/// and column group. The row functions need CPU features that every path taking the entry
/// point has checked for (`available_paths`).
macro_rules! simd_mins {
    ($(#[$doc:meta])* $name:ident, $row:ident, $group:literal) => {
        $(#[$doc])*
        #[cfg(target_arch = "x86_64")]
        pub fn $name(
            rows: &[RowSums],
            blocks: usize,
            columns: &[Unpacked],
            out: &mut [f32],
            stride: usize,
        ) {
            // SAFETY: a path takes this entry point only on CPUs with the row function's
            // features (see `available_paths`).
            let pass =
                |row: &[RowSums], panel: &[Panel], groups| unsafe { $row(row, panel, groups) };
            simd_pass(rows, blocks, columns, out, stride, $group, pass)
        }
    };
}

simd_mins!(
    /// [`mins_portable`] on AVX-512 (F, BW, FMA): four columns a vector, up to sixteen (the
    /// prompt driver's column tile).
    mins_avx512,
    row_avx512,
    4
);

simd_mins!(
    /// [`mins_portable`] on AVX2 (and FMA): two columns a vector, up to sixteen.
    mins_avx2,
    row_avx2,
    2
);

/// One activation row's totals against every group of four columns.
///
/// # Safety
/// The CPU must have AVX-512 F and BW and FMA; `groups ≤ 4`, `panel` of `row.len() × groups`.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bw,fma")]
unsafe fn row_avx512(row: &[RowSums], panel: &[Panel], groups: usize) -> [f32; 16] {
    use std::arch::x86_64::*;
    let mut acc = [_mm512_setzero_ps(); 4];
    for (y, panels) in row.iter().zip(panel.chunks_exact(groups)) {
        let sums = _mm512_broadcast_i32x4(_mm_loadu_si128(y.sums.as_ptr() as *const __m128i));
        let minus_d = _mm512_set1_ps(y.minus_d);
        for (acc, p) in acc.iter_mut().zip(panels) {
            let prod =
                _mm512_madd_epi16(_mm512_load_si512(p.mins.as_ptr() as *const __m512i), sums);
            let scale = _mm512_mul_ps(minus_d, _mm512_load_ps(p.dmin.as_ptr()));
            *acc = _mm512_fmadd_ps(scale, _mm512_cvtepi32_ps(prod), *acc);
        }
    }
    // ggml's reduction in every 128-bit lane at once: lanes 0 + 2 and 1 + 3, then those.
    let total = acc.map(|acc| {
        let halves = _mm512_add_ps(acc, _mm512_permute_ps::<0b01_00_11_10>(acc));
        _mm512_add_ps(halves, _mm512_permute_ps::<0b10_11_00_01>(halves))
    });
    // Each column's total is lane 0 of its 128-bit lane: columns 0-7, then 8-15, in order.
    let firsts = _mm512_setr_epi32(0, 4, 8, 12, 16, 20, 24, 28, 0, 0, 0, 0, 0, 0, 0, 0);
    let low = _mm512_permutex2var_ps(total[0], firsts, total[1]);
    let high = _mm512_permutex2var_ps(total[2], firsts, total[3]);
    let mut totals = [0f32; 16];
    _mm512_storeu_ps(
        totals.as_mut_ptr(),
        _mm512_shuffle_f32x4::<0b01_00_01_00>(low, high),
    );
    totals
}

/// One activation row's totals against every group of two columns.
///
/// # Safety
/// The CPU must have AVX2 and FMA; `groups ≤ 8`, `panel` of `row.len() × groups`.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn row_avx2(row: &[RowSums], panel: &[Panel], groups: usize) -> [f32; 16] {
    use std::arch::x86_64::*;
    let mut acc = [_mm256_setzero_ps(); 8];
    for (y, panels) in row.iter().zip(panel.chunks_exact(groups)) {
        let sums = _mm256_broadcastsi128_si256(_mm_loadu_si128(y.sums.as_ptr() as *const __m128i));
        let minus_d = _mm256_set1_ps(y.minus_d);
        for (acc, p) in acc.iter_mut().zip(panels) {
            let prod =
                _mm256_madd_epi16(_mm256_load_si256(p.mins.as_ptr() as *const __m256i), sums);
            let scale = _mm256_mul_ps(minus_d, _mm256_load_ps(p.dmin.as_ptr()));
            *acc = _mm256_fmadd_ps(scale, _mm256_cvtepi32_ps(prod), *acc);
        }
    }
    let mut lanes = [[0f32; 8]; 8];
    for (acc, lanes) in acc.iter().zip(&mut lanes) {
        let halves = _mm256_add_ps(*acc, _mm256_permute_ps::<0b01_00_11_10>(*acc));
        let total = _mm256_add_ps(halves, _mm256_permute_ps::<0b10_11_00_01>(halves));
        _mm256_storeu_ps(lanes.as_mut_ptr(), total);
    }
    // Column `c`'s total is lane 0 of its half of group `c / 2`.
    std::array::from_fn(|c| lanes[c / 2][4 * (c % 2)])
}

const _: () = assert!(QK_K == 256);
