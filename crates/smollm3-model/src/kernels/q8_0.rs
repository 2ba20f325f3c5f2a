//! Q8_0 matmuls (blocks of 32 `i8` codes and an f16 scale) with each weight block read once
//! for up to [`MAX_ROWS`] activation rows.
//!
//! Why: candle's kernel computes one (weight row, activation row) dot product at a time, so a
//! pass of `m` rows reads every weight `m` times. SmolLM2-135M's output head is Q8_0 (49152 ×
//! 576, tied to the embeddings), and a prompt-lookup check asks for its logits at every row:
//! in a profile of `cargo xtask bench-lookup` on SmolLM2 (Zen 4, 2 threads) candle's
//! `vec_dot_q8_0_q8_0` was 17% of all samples. `linear.rs` sends Q8_0 passes of up to 16 rows
//! here (decode, draft checks, short prompts; a SmolLM3 Q8_0 file's every decode matmul).
//!
//! The bits are candle's: activations quantized by candle's `BlockQ8_0::from_float`, and
//! per (weight row, activation row) the lanes, float work and final sum of its AVX2
//! `vec_dot_q8_0_q8_0` (`sign` trick, `maddubs`, `madd` with ones, one fused multiply-add per
//! block, `hsum_float_8`), only with the weight block's load and absolute values shared by
//! the rows (tested against candle's matmul).

/// Values per block.
pub const BLOCK: usize = 32;

/// ggml's `block_q8_0` (the file's layout, candle's too): 32 values `≈ d × q`.
#[derive(Debug, Clone, Copy, PartialEq)]
#[repr(C)]
pub struct BlockQ8_0 {
    pub d: half::f16,
    pub qs: [i8; BLOCK],
}

const _: () = assert!(std::mem::size_of::<BlockQ8_0>() == 34);

impl BlockQ8_0 {
    pub const ZERO: Self = Self {
        d: half::f16::ZERO,
        qs: [0; BLOCK],
    };
}

/// `row` (a multiple of 32 values) as Q8_0 blocks, by candle's own `BlockQ8_0::from_float`
/// (the activations of its matmul), written into our blocks of the same layout.
pub fn quantize_row(row: &[f32], out: &mut [BlockQ8_0]) {
    use candle_core::quantized::k_quants::{self, GgmlType};
    const _: () = assert!(
        std::mem::size_of::<BlockQ8_0>() == std::mem::size_of::<k_quants::BlockQ8_0>()
            && std::mem::align_of::<k_quants::BlockQ8_0>() <= std::mem::align_of::<BlockQ8_0>()
    );
    // SAFETY: both are the 34-byte repr(C) block (f16 scale, 32 i8 codes; size and
    // alignment asserted above), plain data valid for any bits.
    let theirs = unsafe {
        std::slice::from_raw_parts_mut(out.as_mut_ptr() as *mut k_quants::BlockQ8_0, out.len())
    };
    k_quants::BlockQ8_0::from_float(row, theirs);
}

/// The most activation rows one pass over a weight row takes (more go in groups, the weight
/// row then coming from L1).
pub const MAX_ROWS: usize = 8;

/// `dst[r × n + c] = lhs row r · weight row c` for `lhs` `[m, k]` and the `n` rows of `k / 32`
/// blocks in `weights`, on the pool. `None` on the portable path or where the CPU lacks AVX2,
/// FMA or F16C (the caller then uses candle's kernel, which gives the same bits).
pub fn matmul(
    (m, k, n): (usize, usize, usize),
    lhs: &[f32],
    weights: &[BlockQ8_0],
    dst: &mut [f32],
) -> Option<crate::Result<()>> {
    #[cfg(target_arch = "x86_64")]
    {
        // The paths with row products have AVX2, FMA and F16C; the portable path
        // (`SMOLLM3_KERNELS=portable`) keeps candle's kernel.
        super::path().rows?;
        let blocks = k / BLOCK;
        if !(k.is_multiple_of(BLOCK)
            && lhs.len() == m * k
            && weights.len() == n * blocks
            && dst.len() >= m * n)
        {
            return Some(Err(candle_core::Error::Msg(format!(
                "q8_0 matmul ({m}, {k}, {n}): got {} activations, {} blocks, room for {}",
                lhs.len(),
                weights.len(),
                dst.len()
            ))
            .into()));
        }
        if k == 0 || m == 0 {
            dst[..m * n].fill(0.0);
            return Some(Ok(()));
        }
        let mut quantized = vec![BlockQ8_0::ZERO; m * blocks];
        for (row, out) in lhs.chunks_exact(k).zip(quantized.chunks_exact_mut(blocks)) {
            quantize_row(row, out);
        }
        let rows: Vec<&[BlockQ8_0]> = quantized.chunks_exact(blocks).collect();
        let rows = &rows;
        let dst_address = dst.as_mut_ptr() as usize;
        super::pool().execute_chunked(n, |columns| {
            for c in columns {
                let w = &weights[c * blocks..(c + 1) * blocks];
                for g in (0..m).step_by(MAX_ROWS) {
                    let group = &rows[g..(g + MAX_ROWS).min(m)];
                    // SAFETY: the path has AVX2, FMA and F16C (above); every row has `blocks`
                    // blocks; each output `r × n + c` (r < m, c < n, within `dst`, checked
                    // above) is written by exactly one work item.
                    unsafe { dot_rows(w, group, (dst_address as *mut f32).add(g * n + c), n) };
                }
            }
        });
        Some(Ok(()))
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        let _ = ((m, k, n), lhs, weights, dst);
        None
    }
}

/// `out[r × stride] = w · a[r]` for 1 to [`MAX_ROWS`] rows.
///
/// # Safety
/// The CPU must have AVX2, FMA and F16C; every row as long as `w`; `out` valid for every
/// write.
#[cfg(target_arch = "x86_64")]
unsafe fn dot_rows(w: &[BlockQ8_0], a: &[&[BlockQ8_0]], out: *mut f32, stride: usize) {
    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn run<const R: usize>(
        w: &[BlockQ8_0],
        a: &[&[BlockQ8_0]],
        out: *mut f32,
        stride: usize,
    ) {
        let a: [&[BlockQ8_0]; R] = std::array::from_fn(|r| a[r]);
        for (r, value) in dot_avx2::<R>(w, a).into_iter().enumerate() {
            *out.add(r * stride) = value;
        }
    }
    by_rows!(a.len(), run(w, a, out, stride))
}

/// One Q8_0 weight row · `R` Q8_0 activation rows: candle's AVX2 `vec_dot_q8_0_q8_0` for each
/// row, the weight block loaded (and its absolute values taken) once for all of them.
///
/// # Safety
/// The CPU must have AVX2, FMA and F16C; every row of `a` as long as `w`.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma,f16c")]
#[inline]
unsafe fn dot_avx2<const R: usize>(w: &[BlockQ8_0], a: [&[BlockQ8_0]; R]) -> [f32; R] {
    use std::arch::x86_64::*;
    let ones = _mm256_set1_epi16(1);
    let mut acc = [_mm256_setzero_ps(); R];
    for (b, x) in w.iter().enumerate() {
        let x_d = super::kquant_rows::f16_to_f32(x.d);
        let bx = _mm256_loadu_si256(x.qs.as_ptr() as *const __m256i);
        let ax = _mm256_sign_epi8(bx, bx);
        for r in 0..R {
            let y = a[r].get_unchecked(b);
            let d = _mm256_set1_ps(x_d * super::kquant_rows::f16_to_f32(y.d));
            let by = _mm256_loadu_si256(y.qs.as_ptr() as *const __m256i);
            let dot = _mm256_maddubs_epi16(ax, _mm256_sign_epi8(by, bx));
            let q = _mm256_cvtepi32_ps(_mm256_madd_epi16(ones, dot));
            acc[r] = _mm256_fmadd_ps(d, q, acc[r]);
        }
    }
    std::array::from_fn(|r| super::kquant::hsum_float_8(acc[r]))
}
