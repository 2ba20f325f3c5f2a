//! candle's quantized matmul (`k_quants::matmul`), the same dot products in the same order, on
//! our thread pool.
//!
//! Why: every block type and single-row (decode) matmul that has no kernel of ours still runs
//! candle's dot products (ggml's AVX2 code; for one row it reads each weight byte once, which
//! is what decode needs). Calling `k_quants::matmul` would run them on candle's barrier pool, a
//! second set of threads spinning beside ours (and its caller never yields: see [`super::pool`]).
//! Here the work is split exactly as candle splits it (quads of columns through `vec_dot_4`,
//! then pairs and singles; tiles of 16 rows for prompts), so the results are candle's bits.

use candle_core::quantized::k_quants::GgmlType;

use crate::error::Result;

/// Rows of a prompt per work item, as candle's `MATMUL_ROW_TILE`: a tile of quantized rows
/// stays in L1 while a quad of weight rows passes.
const ROW_TILE: usize = 16;

/// `dst[r × n + c] = lhs row r · weight row c` for `lhs` `[m, k]` and the `n` rows of `k`
/// values in `rhs`. Slices that do not have these sizes are an error naming them.
pub fn matmul<T: GgmlType>(
    (m, k, n): (usize, usize, usize),
    lhs: &[f32],
    rhs: &[T],
    dst: &mut [f32],
) -> Result<()> {
    let blocks = k / T::BLCK_SIZE;
    if !(k % T::BLCK_SIZE == 0
        && lhs.len() == m * k
        && rhs.len() == n * blocks
        && dst.len() >= m * n)
    {
        return Err(candle_core::Error::Msg(format!(
            "{:?} matmul ({m}, {k}, {n}): got {} activations, {} blocks, room for {}",
            T::DTYPE,
            lhs.len(),
            rhs.len(),
            dst.len()
        ))
        .into());
    }
    let mut quantized = vec![T::VecDotType::zeros(); m * blocks];
    for (row, out) in lhs.chunks_exact(k).zip(quantized.chunks_exact_mut(blocks)) {
        T::VecDotType::from_float(row, out);
    }
    let quantized = &quantized;
    let lhs_row = |r: usize| &quantized[r * blocks..(r + 1) * blocks];
    let rhs_row = |c: usize| &rhs[c * blocks..(c + 1) * blocks];
    let dst_address = dst.as_mut_ptr() as usize;
    // SAFETY (for every write below): `dst` holds `m × n` values (checked above) and each
    // (r, c) is written by exactly one work item.
    let write = |r: usize, c: usize, value: f32| unsafe {
        *(dst_address as *mut f32).add(r * n + c) = value;
    };
    let quads = n / 4;
    let dot_quad = |r: usize, c: usize| {
        let (d0, d1, d2, d3) = T::vec_dot_4(
            k,
            rhs_row(c),
            rhs_row(c + 1),
            rhs_row(c + 2),
            rhs_row(c + 3),
            lhs_row(r),
        );
        write(r, c, d0);
        write(r, c + 1, d1);
        write(r, c + 2, d2);
        write(r, c + 3, d3);
    };
    let tail = |r: usize| {
        let mut c = 4 * quads;
        if n - c >= 2 {
            let (d0, d1) = T::vec_dot_2(k, rhs_row(c), rhs_row(c + 1), lhs_row(r));
            write(r, c, d0);
            write(r, c + 1, d1);
            c += 2;
        }
        if c < n {
            write(r, c, T::vec_dot(k, rhs_row(c), lhs_row(r)));
        }
    };
    let pool = super::pool();
    if m == 1 {
        pool.execute_chunked(quads, |range| range.for_each(|q| dot_quad(0, 4 * q)));
    } else {
        let tiles = m.div_ceil(ROW_TILE);
        pool.execute_chunked(tiles * quads, |range| {
            for item in range {
                let first = (item / quads) * ROW_TILE;
                for r in first..m.min(first + ROW_TILE) {
                    dot_quad(r, 4 * (item % quads));
                }
            }
        });
    }
    if n % 4 != 0 {
        (0..m).for_each(tail);
    }
    Ok(())
}
