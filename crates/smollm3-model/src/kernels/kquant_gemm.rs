//! The prompt GEMM's driver for the k-quants ([`super::kquant`]): quantize the activations
//! once, then, a column tile (16 weight rows) per work item on the pool, unpack the tile's
//! super-blocks once, start the tile's values from Q4_K's mins pass ([`super::kquant_mins`]),
//! add the path's kernel tiles over every activation row to them (ggml's `sum + m`), and write
//! each row's 64 bytes of output at once.
//!
//! Rows of full-height tiles are interleaved in pairs ([`PairQ8K`]) where the path has paired
//! tiles (AVX-512): one load per chunk of both rows instead of two and a shuffle. The rows of
//! a last partial tile stay Q8_K blocks for the edge kernels.

use std::mem::MaybeUninit;

use super::kquant::{
    make_unsigned, quantize_row, BlockQ8K, PairQ8K, PairedTiles, RowSums, SuperBlock, Tiles,
    Unpacked, QK_K,
};

/// Columns unpacked together: each activation row is read once per tile (from L2/L3), and the
/// tile's unpacked rows (16 × 640 bytes per super-block: 440 KB for FFN-down's 11008 inputs)
/// stay in L2 while all rows pass. 16 columns make each row's share of the output one whole
/// cache line (64 bytes) written once: 8 columns wrote each line in two halves, one tile
/// apart, and 3B prefill @512 was 2–15% slower in each of eight interleaved pairs (Intel Xeon,
/// 2 threads; medians 29.2 and 29.6 against 30.8 and 31.2 tok/s).
const TILE_COLUMNS: usize = 16;

/// The largest tile side any path uses.
pub const MAX_TILE: usize = 8;

/// `dst[r × n + c] = lhs row r · weight row c` for `lhs` `[m, k]` and the `n` rows of `k`
/// values in `weights`, on our pool (`super::pool`, the one every other kernel uses). Slices
/// that do not have these sizes (or `k` not a multiple of 256) are an error naming the shapes.
pub fn matmul<B: SuperBlock>(
    mkn: (usize, usize, usize),
    lhs: &[f32],
    weights: &[B],
    dst: &mut [f32],
) -> crate::Result<()> {
    // SAFETY: `MaybeUninit<f32>` has `f32`'s layout, and only initialized values are written.
    let dst = unsafe { &mut *(dst as *mut [f32] as *mut [MaybeUninit<f32>]) };
    matmul_uninit(mkn, lhs, weights, dst)
}

/// [`matmul`] into memory not written yet: on success every one of the `m × n` values has
/// been written, so a caller can allocate the output without zeroing it (`Vec::with_capacity`,
/// then `set_len`). The zeroing was 1.3% of a 3B prefill's samples, all on the calling thread
/// while the pool waited.
pub fn matmul_uninit<B: SuperBlock>(
    (m, k, n): (usize, usize, usize),
    lhs: &[f32],
    weights: &[B],
    dst: &mut [MaybeUninit<f32>],
) -> crate::Result<()> {
    let blocks = k / QK_K;
    // The raw writes below rely on these.
    if !(k.is_multiple_of(QK_K)
        && lhs.len() == m * k
        && weights.len() == n * blocks
        && dst.len() >= m * n)
    {
        return Err(candle_core::Error::Msg(format!(
            "k-quant matmul ({m}, {k}, {n}): got {} activations, {} super-blocks, room for {}",
            lhs.len(),
            weights.len(),
            dst.len()
        ))
        .into());
    }
    let tiles = B::tiles(super::path());
    let activations = Activations::quantize(&tiles, lhs, (m, k));
    let dst_address = dst.as_mut_ptr() as usize;
    thread_local! {
        static UNPACKED: std::cell::RefCell<Vec<Unpacked>> = const { std::cell::RefCell::new(Vec::new()) };
    }
    super::pool().execute_chunked(n.div_ceil(TILE_COLUMNS), |tile_range| {
        UNPACKED.with(|buffer| {
            let mut buffer = buffer.borrow_mut();
            // The column tile's values for every row, written to `dst` a row at a time once
            // the tile is done: 64 contiguous bytes per row instead of scattered 16-byte
            // pieces after every kernel call, whose stores missed (3.4% of prefill @512).
            // It starts as Q4_K's mins (or −0.0), and the kernels' sums are added to it.
            let mut tile_values = vec![0f32; m * TILE_COLUMNS];
            for tile in tile_range {
                let first = tile * TILE_COLUMNS;
                let columns = TILE_COLUMNS.min(n - first);
                buffer.resize(columns * blocks, Unpacked::ZERO);
                for (block, out) in weights[first * blocks..(first + columns) * blocks]
                    .iter()
                    .zip(buffer.iter_mut())
                {
                    block.unpack_fast(out);
                }
                match tiles.mins {
                    Some(mins_pass) if blocks > 0 => mins_pass(
                        &activations.row_sums,
                        blocks,
                        &buffer,
                        &mut tile_values,
                        TILE_COLUMNS,
                    ),
                    // ggml's `sum + m` with nothing to add: `−0.0 + sum` is `sum`, bit for bit.
                    _ => tile_values.fill(-0.0),
                }
                let column = |c: usize| &buffer[c * blocks..(c + 1) * blocks];
                for r0 in (0..m).step_by(tiles.rows) {
                    let rows = activations.tile_rows(&tiles, r0, tiles.rows.min(m - r0));
                    for c0 in (0..columns).step_by(tiles.cols) {
                        let cols = tiles.cols.min(columns - c0);
                        let mut w: [&[Unpacked]; MAX_TILE] = [&[]; MAX_TILE];
                        for (i, c) in (c0..c0 + cols).enumerate() {
                            w[i] = column(c);
                        }
                        let into = &mut tile_values[r0 * TILE_COLUMNS + c0..];
                        run_tile(&tiles, &rows, &w[..cols], into);
                    }
                }
                for (r, values) in tile_values.chunks_exact(TILE_COLUMNS).enumerate() {
                    // SAFETY: `dst` holds `m × n` values (checked above), and each (r, c) is
                    // written by exactly one work item: the pool splits the column tiles.
                    unsafe {
                        store_row(
                            (dst_address as *mut f32).add(r * n + first),
                            &values[..columns],
                        )
                    };
                }
            }
        })
    });
    Ok(())
}

/// The activation rows quantized as the path's kernels take them.
struct Activations {
    blocks: usize,
    /// Rows `0..paired_rows` (the full-height tiles' where the path has paired tiles),
    /// interleaved in pairs: `paired_rows / 2 × blocks`.
    pairs: Vec<PairQ8K>,
    paired_rows: usize,
    /// Rows `paired_rows..m` as Q8_K blocks.
    lone: Vec<BlockQ8K>,
    /// What the mins pass reads of every row's super-blocks, where the path has one.
    row_sums: Vec<RowSums>,
}

/// The activation rows of one kernel tile.
enum TileRows<'a> {
    /// Interleaved pairs and the path's kernels for them.
    Pairs(PairedTiles, [&'a [PairQ8K]; MAX_TILE / 2], usize),
    Blocks([&'a [BlockQ8K]; MAX_TILE], usize),
}

impl Activations {
    /// `lhs` (`m × k`) quantized with candle's arithmetic (made unsigned where the path's
    /// kernels take them so), on the pool: an item per pair of paired rows, then per other row.
    fn quantize(tiles: &Tiles, lhs: &[f32], (m, k): (usize, usize)) -> Self {
        let blocks = k / QK_K;
        let zero = BlockQ8K {
            d: 0.0,
            qs: [0; QK_K],
            bsums: [0; QK_K / 16],
        };
        let paired_rows = match tiles.paired {
            Some(_) => m - m % tiles.rows,
            None => 0,
        };
        let mut this = Self {
            blocks,
            pairs: vec![PairQ8K::ZERO; paired_rows / 2 * blocks],
            paired_rows,
            lone: vec![zero; (m - paired_rows) * blocks],
            row_sums: vec![RowSums::default(); if tiles.mins.is_some() { m * blocks } else { 0 }],
        };
        let pairs_address = this.pairs.as_mut_ptr() as usize;
        let lone_address = this.lone.as_mut_ptr() as usize;
        let row_sums_address = this.row_sums.as_mut_ptr() as usize;
        super::pool().execute_chunked(paired_rows / 2 + (m - paired_rows), |items| {
            // A paired row's blocks before they are interleaved.
            let mut scratch = vec![zero; if paired_rows > 0 { blocks } else { 0 }];
            for item in items {
                let rows = if item < paired_rows / 2 {
                    2 * item..2 * item + 2
                } else {
                    item + paired_rows / 2..item + paired_rows / 2 + 1
                };
                for r in rows {
                    // SAFETY (each `rows_of`): the buffers hold what `this` was made with, and
                    // each row (each pair) is written by the one item that owns it.
                    let row = if r < paired_rows {
                        &mut scratch[..]
                    } else {
                        unsafe { rows_of::<BlockQ8K>(lone_address, r - paired_rows, blocks) }
                    };
                    quantize_row(&lhs[r * k..(r + 1) * k], row);
                    if tiles.mins.is_some() {
                        let sums = unsafe { rows_of::<RowSums>(row_sums_address, r, blocks) };
                        for (sums, block) in sums.iter_mut().zip(&*row) {
                            *sums = RowSums::of(block);
                        }
                    }
                    if tiles.unsigned_activations {
                        row.iter_mut().for_each(make_unsigned);
                    }
                    if r < paired_rows {
                        let pairs = unsafe { rows_of::<PairQ8K>(pairs_address, r / 2, blocks) };
                        for (pair, block) in pairs.iter_mut().zip(&*row) {
                            pair.set_row(r % 2, block);
                        }
                    }
                }
            }
        });
        this
    }

    /// Rows `r0..r0 + rows` as the kernels take them: pairs where they were interleaved.
    fn tile_rows(&self, tiles: &Tiles, r0: usize, rows: usize) -> TileRows<'_> {
        let blocks = self.blocks;
        if let Some(paired) = tiles.paired.filter(|_| r0 < self.paired_rows) {
            let mut a: [&[PairQ8K]; MAX_TILE / 2] = [&[]; MAX_TILE / 2];
            for (i, a) in a[..rows / 2].iter_mut().enumerate() {
                *a = &self.pairs[(r0 / 2 + i) * blocks..][..blocks];
            }
            TileRows::Pairs(paired, a, rows)
        } else {
            let mut a: [&[BlockQ8K]; MAX_TILE] = [&[]; MAX_TILE];
            for (i, a) in a[..rows].iter_mut().enumerate() {
                *a = &self.lone[(r0 + i - self.paired_rows) * blocks..][..blocks];
            }
            TileRows::Blocks(a, rows)
        }
    }
}

/// Row `row` (`len` items) of the buffer of `T` at `address`, for the pool's items to fill
/// their own rows of one buffer.
///
/// # Safety
/// The buffer must hold `(row + 1) × len` items, and no other reference to that row may live.
unsafe fn rows_of<'a, T>(address: usize, row: usize, len: usize) -> &'a mut [T] {
    std::slice::from_raw_parts_mut((address as *mut T).add(row * len), len)
}

/// One kernel tile's `rows × w.len()` values added to `into[r × TILE_COLUMNS + c]` (which
/// holds the mins or −0.0): the shape's kernel, or for an odd edge a column (or a row, or a
/// value) at a time.
fn run_tile(tiles: &Tiles, rows: &TileRows<'_>, w: &[&[Unpacked]], into: &mut [f32]) {
    let cols = w.len();
    match rows {
        TileRows::Pairs(paired, a, rows) => {
            // Only full-height tiles are paired (see `Activations`).
            let a = &a[..rows / 2];
            if cols == tiles.cols {
                return (paired.full)(a, w, into, TILE_COLUMNS);
            }
            // A partial column tile: a column at a time.
            for c in 0..cols {
                (paired.col_edge)(a, &w[c..c + 1], &mut into[c..], TILE_COLUMNS);
            }
        }
        TileRows::Blocks(a, rows) => {
            let a = &a[..*rows];
            let kernel = match (*rows, cols) {
                shape if shape == (tiles.rows, tiles.cols) => Some(tiles.full),
                shape if shape == (1, tiles.cols) => Some(tiles.row_edge),
                shape if shape == (tiles.rows, 1) => Some(tiles.col_edge),
                (1, 1) => Some(tiles.single),
                _ => None,
            };
            if let Some(kernel) = kernel {
                return kernel(a, w, into, TILE_COLUMNS);
            }
            // An odd edge (say the last 2 rows of 512 under 6-row tiles): a row at a time,
            // and for a partial column tile too, one dot product at a time.
            for r in 0..*rows {
                let row = &mut into[r * TILE_COLUMNS..];
                if cols == tiles.cols {
                    (tiles.row_edge)(&a[r..r + 1], w, row, TILE_COLUMNS);
                    continue;
                }
                for c in 0..cols {
                    (tiles.single)(&a[r..r + 1], &w[c..c + 1], &mut row[c..], TILE_COLUMNS);
                }
            }
        }
    }
}

/// Writes `values` at `dst`, a whole tile's row as one fixed-size move: `copy_from_slice` of a
/// run-time length calls `memcpy`, millions of times per matmul (in a 3B prefill's samples
/// `memmove` went 5.6% → 1.2% with fixed-size moves, Intel Xeon).
///
/// # Safety
/// `dst` must be valid for writing `values.len()` floats (initialized or not).
#[inline(always)]
unsafe fn store_row(dst: *mut f32, values: &[f32]) {
    match <&[f32; TILE_COLUMNS]>::try_from(values) {
        Ok(whole) => (dst as *mut [f32; TILE_COLUMNS]).write_unaligned(*whole),
        Err(_) => std::ptr::copy_nonoverlapping(values.as_ptr(), dst, values.len()),
    }
}
