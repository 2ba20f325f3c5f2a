//! Our own quantized kernels, chosen at run time for the CPU at hand.
//!
//! The machines this runs on differ (AVX2-only one day, AVX-512 VNNI the next), so each kernel
//! has a portable path that runs everywhere and SIMD paths picked once per process by feature
//! detection. `SMOLLM3_KERNELS=portable` (or `avx2`) forces a narrower path than the widest
//! the machine has, to compare them (tests compare every path the machine can run with the
//! portable one); [`path_name`] says which is in use (`smollm3 --version`).
//!
//! - [`q4_1`]: Q4_1 weights (SmolLM2's GGUF) × 8-bit activations; candle has only a scalar
//!   loop for this type. AVX2, and on AVX-512 VNNI a grouped kernel with prefetch.
//! - [`q4_1_panels`]: Q4_1 prompts, 16 columns unpacked once per call and multiplied by tiles
//!   of rows: on AVX-512 VNNI one `vpdpbusd` per 4 codes × 16 columns, on AVX2 `maddubs`.
//! - [`pool`]: the thread pool all of them run on (waits yield, idle workers park).
//! - [`ggml`]: candle's dot products for every other block type (and for single rows), in
//!   candle's order, on that pool.
//! - [`kquant`]: Q4_K and Q6_K weights (SmolLM3-3B Q4_K_M) × Q8_K activations for prompts,
//!   each super-block unpacked once per call instead of once per activation row; on AVX-512
//!   two activation rows per vector, and `vpdpbusd` for Q4_K where VNNI exists.
//! - [`kquant_mins`]: Q4_K's mins term for those prompt tiles, in a pass of its own (the SIMD
//!   paths' tiles leave it out; ggml adds it last, so the bits are the same).
//! - [`kquant_rows`]: the same types for one activation row (decode), on AVX-512.
//! - [`q8_0`]: Q8_0 for a few activation rows at a time (each weight block read once).
//! - [`elementwise`]: the feed-forward block's `silu(gate) × up`, one pass on the pool.
//! - [`attention`]: one-token attention, one KV head per work item, with candle's bits;
//!   over the f16 cache on AVX-512 and AVX2 (`attention_f16`), spans of positions across
//!   the pool with their partial softmaxes merged.
//! - [`prompt_attention`]: a prompt's attention, blocks of query rows against the keys they
//!   may see (the causal half), with candle's bits.

/// `run::<R>(args)` for `R` = `rows`, 1 to 8: a const-generic row product's build picked by
/// the number of activation rows (the row kernels' `MAX_ROWS`).
macro_rules! by_rows {
    ($rows:expr, $run:ident($($arg:expr),*)) => {
        match $rows {
            1 => $run::<1>($($arg),*),
            2 => $run::<2>($($arg),*),
            3 => $run::<3>($($arg),*),
            4 => $run::<4>($($arg),*),
            5 => $run::<5>($($arg),*),
            6 => $run::<6>($($arg),*),
            7 => $run::<7>($($arg),*),
            8 => $run::<8>($($arg),*),
            n => unreachable!("{n} activation rows for a row product (1 to 8)"),
        }
    };
}

pub mod attention;
mod attention_f16;
#[cfg(target_arch = "x86_64")]
mod attention_f16_avx2;
pub mod elementwise;
pub mod ggml;
pub mod kquant;
pub mod kquant_gemm;
pub mod kquant_mins;
pub mod kquant_pairs;
pub mod kquant_row_pairs;
pub mod kquant_rows;
pub mod pool;
pub mod prompt_attention;
pub mod q4_1;
pub mod q4_1_panels;
pub mod q8_0;

use std::sync::OnceLock;

type DotQ4_1 = fn(&[q4_1::BlockQ4_1], &[q4_1::BlockQ8]) -> f32;

/// The kernels of one instruction-set path.
#[derive(Clone, Copy)]
pub struct Path {
    pub name: &'static str,
    pub q4_1: DotQ4_1,
    /// A faster Q4_1 row product over activations arranged once per row, with `q4_1`'s bits
    /// (AVX-512 with VNNI and VBMI).
    pub q4_1_grouped: Option<q4_1::DotGrouped>,
    /// Prompts' Q4_1 matmuls a panel of columns at a time, with `q4_1`'s bits (AVX2, AVX-512
    /// VNNI).
    pub q4_1_panel: Option<q4_1_panels::Kernels>,
    /// Tiles of Q8_K activation rows × unpacked Q4_K weight rows.
    pub q4k: kquant::Tiles,
    /// The same for Q6_K.
    pub q6k: kquant::Tiles,
    /// Decode's Q4_K and Q6_K row products; `None`: candle's kernel (the portable path).
    pub rows: Option<kquant_rows::RowKernels>,
}

/// A [`kquant::Tiles`] from one generic kernel wrapper: `rows × cols`, its edges and 1 × 1.
macro_rules! tiles {
    ($kernel:ident, $rows:literal x $cols:literal, $q6:literal) => {
        kquant::Tiles {
            unsigned_activations: false,
            rows: $rows,
            cols: $cols,
            full: $kernel::<$rows, $cols, $q6>,
            row_edge: $kernel::<1, $cols, $q6>,
            col_edge: $kernel::<$rows, 1, $q6>,
            single: $kernel::<1, 1, $q6>,
            mins: None,
            paired: None,
        }
    };
}

/// The paired forms ([`kquant::PairedTiles`]) of an AVX-512 pair kernel's tiles.
macro_rules! paired_tiles {
    ($kernel:ident, $cols:literal, $q6:literal) => {
        Some(kquant::PairedTiles {
            full: $kernel::<$cols, $q6>,
            col_edge: $kernel::<1, $q6>,
        })
    };
}

/// A tile kernel's slices as the arrays its SIMD code indexes without bounds checks: the shape
/// must be the kernel's own and every row as long as the first activation row.
fn tile_args<'a, T, const R: usize, const C: usize>(
    a: &[&'a [T]],
    w: &[&'a [kquant::Unpacked]],
) -> ([&'a [T]; R], [&'a [kquant::Unpacked]; C]) {
    assert!(
        a.len() == R && w.len() == C,
        "k-quant tile: {} × {} rows for an {R} × {C} kernel",
        a.len(),
        w.len()
    );
    let blocks = a[0].len();
    assert!(
        a.iter().all(|a| a.len() == blocks) && w.iter().all(|w| w.len() >= blocks),
        "k-quant tile: rows of different lengths"
    );
    (std::array::from_fn(|r| a[r]), std::array::from_fn(|c| w[c]))
}

/// Adds a tile's values to `out[r × stride + c]` ([`kquant::Tile`]); a row past the end of
/// `out` panics before anything is written to it.
fn add_rows<const R: usize, const C: usize>(values: [[f32; C]; R], out: &mut [f32], stride: usize) {
    for (r, values) in values.iter().enumerate() {
        let row = &mut out[r * stride..][..C];
        for (sum, value) in row.iter_mut().zip(values) {
            *sum += value; // ggml's `sum + m`: the same bits either way round
        }
    }
}

fn portable_tile<const R: usize, const C: usize, const Q6: bool>(
    a: &[&[kquant::BlockQ8K]],
    w: &[&[kquant::Unpacked]],
    out: &mut [f32],
    stride: usize,
) {
    let (a, w) = tile_args::<_, R, C>(a, w);
    add_rows::<R, C>(
        std::array::from_fn(|r| std::array::from_fn(|c| kquant::dot_portable::<Q6>(a[r], w[c]))),
        out,
        stride,
    );
}

const PORTABLE: Path = Path {
    name: "portable",
    q4_1: q4_1::dot_portable,
    q4_1_grouped: None,
    q4_1_panel: None,
    q4k: tiles!(portable_tile, 4 x 4, false),
    q6k: tiles!(portable_tile, 4 x 4, true),
    rows: None,
};

#[cfg(target_arch = "x86_64")]
fn q4_1_avx2(w: &[q4_1::BlockQ4_1], a: &[q4_1::BlockQ8]) -> f32 {
    // SAFETY: this function is only selected after `avx2_available()` said yes.
    unsafe { q4_1::dot_avx2(w, a) }
}

#[cfg(target_arch = "x86_64")]
fn avx2_tile<const R: usize, const C: usize, const Q6: bool>(
    a: &[&[kquant::BlockQ8K]],
    w: &[&[kquant::Unpacked]],
    out: &mut [f32],
    stride: usize,
) {
    let (a, w) = tile_args::<_, R, C>(a, w);
    // SAFETY: selected only after `avx2_available()` said yes; lengths checked above.
    add_rows::<R, C>(unsafe { kquant::dot_avx2::<R, C, Q6>(a, w) }, out, stride);
}

/// An AVX-512 tile wrapper for a kernel that takes activation rows in pairs (a lone row goes
/// in twice and half the answer is kept). Three pairs: each weight vector loaded from L2
/// serves six rows (with two pairs, 4 rows × 4 columns, prefill @512 was 17% slower; four
/// pairs measured the same as three).
macro_rules! avx512_pairs_tile {
    ($name:ident, $kernel:ident) => {
        #[cfg(target_arch = "x86_64")]
        fn $name<const R: usize, const C: usize, const Q6: bool>(
            a: &[&[kquant::BlockQ8K]],
            w: &[&[kquant::Unpacked]],
            out: &mut [f32],
            stride: usize,
        ) {
            let (a, w) = tile_args::<_, R, C>(a, w);
            // SAFETY (each call): a path takes this kernel only after checking the CPU for its
            // features (`available_paths`); lengths checked above.
            match R {
                1 => {
                    let [[values, _]] = unsafe { $kernel::<1, C, Q6, _>([[a[0], a[0]]], w) };
                    add_rows::<1, C>([values], out, stride);
                }
                6 => {
                    let pairs = [[a[0], a[1]], [a[2], a[3]], [a[4], a[5]]];
                    let [[v0, v1], [v2, v3], [v4, v5]] =
                        unsafe { $kernel::<3, C, Q6, _>(pairs, w) };
                    add_rows::<6, C>([v0, v1, v2, v3, v4, v5], out, stride);
                }
                _ => unreachable!("the avx512 tiles have 6 rows or 1"),
            }
        }
    };
}

/// An AVX-512 tile of three interleaved pairs of rows ([`kquant_pairs::PairQ8K`]) for a pair
/// kernel: the prompt driver's full tiles and their column edges.
macro_rules! avx512_paired_tile {
    ($name:ident, $kernel:ident) => {
        #[cfg(target_arch = "x86_64")]
        fn $name<const C: usize, const Q6: bool>(
            a: &[&[kquant_pairs::PairQ8K]],
            w: &[&[kquant::Unpacked]],
            out: &mut [f32],
            stride: usize,
        ) {
            let (a, w) = tile_args::<_, 3, C>(a, w);
            // SAFETY: as in `avx512_pairs_tile`.
            let [[v0, v1], [v2, v3], [v4, v5]] = unsafe { $kernel::<3, C, Q6, _>(a, w) };
            add_rows::<6, C>([v0, v1, v2, v3, v4, v5], out, stride);
        }
    };
}

#[cfg(target_arch = "x86_64")]
use kquant_pairs::{dot_avx512, dot_avx512_vnni};
avx512_pairs_tile!(avx512_tile, dot_avx512);
avx512_pairs_tile!(avx512_q4k_vnni_tile, q4k_vnni);
avx512_pairs_tile!(avx512_vnni_tile, dot_avx512_vnni);
avx512_paired_tile!(avx512_paired, dot_avx512);
avx512_paired_tile!(avx512_q4k_vnni_paired, q4k_vnni);
avx512_paired_tile!(avx512_vnni_paired, dot_avx512_vnni);

/// [`kquant_pairs::dot_avx512_q4k_vnni`] in the shape of the other pair kernels (Q4_K only).
///
/// # Safety
/// As that kernel's.
#[cfg(target_arch = "x86_64")]
unsafe fn q4k_vnni<const P: usize, const C: usize, const Q6: bool, A: kquant_pairs::PairSource>(
    a: [A; P],
    w: [&[kquant::Unpacked]; C],
) -> [[[f32; C]; 2]; P] {
    const { assert!(!Q6, "the VNNI pair kernel is Q4_K's") };
    kquant_pairs::dot_avx512_q4k_vnni::<P, C, A>(a, w)
}

#[cfg(target_arch = "x86_64")]
fn avx2_available() -> bool {
    is_x86_feature_detected!("avx2")
        && is_x86_feature_detected!("f16c")
        && is_x86_feature_detected!("fma")
}

#[cfg(target_arch = "x86_64")]
fn q4_1_avx512_vnni(w: &[q4_1::BlockQ4_1], groups: &[q4_1::GroupQ8], a: &[q4_1::BlockQ8]) -> f32 {
    assert!(
        w.len() == a.len() && groups.len() == a.len() / 8,
        "q4_1: {} weight blocks, {} groups for {} activation blocks",
        w.len(),
        groups.len(),
        a.len()
    );
    // SAFETY: selected only after `vnni_available()` said yes; lengths checked above.
    unsafe { q4_1::dot_avx512_vnni(w, groups, a) }
}

/// AVX-512 with VNNI and VBMI (Zen 4, Ice Lake and later), for the grouped Q4_1 kernel.
#[cfg(target_arch = "x86_64")]
fn vnni_available() -> bool {
    avx512_available()
        && is_x86_feature_detected!("avx512vnni")
        && is_x86_feature_detected!("avx512vbmi")
}

#[cfg(target_arch = "x86_64")]
fn avx512_available() -> bool {
    avx2_available() && is_x86_feature_detected!("avx512f") && is_x86_feature_detected!("avx512bw")
}

/// Every path this machine can run, the portable one first.
pub fn available_paths() -> Vec<Path> {
    let mut paths = vec![PORTABLE];
    #[cfg(target_arch = "x86_64")]
    if avx2_available() {
        paths.push(Path {
            name: "avx2",
            q4_1: q4_1_avx2,
            q4_1_grouped: None,
            q4_1_panel: Some(q4_1_panels::Kernels {
                unpack: q4_1_panels::unpack_portable,
                tile: q4_1_panels::tile_avx2,
            }),
            // 4 × 2: eight accumulators, four activation and two weight vectors fit AVX2's
            // sixteen registers.
            q4k: kquant::Tiles {
                mins: Some(kquant_mins::mins_avx2),
                ..tiles!(avx2_tile, 4 x 2, false)
            },
            q6k: tiles!(avx2_tile, 4 x 2, true),
            rows: Some(kquant_rows::AVX2),
        });
    }
    #[cfg(target_arch = "x86_64")]
    if avx512_available() {
        paths.push(avx512_path(vnni_available()));
    }
    paths
}

/// The AVX-512 path, with its VNNI kernels (Q4_1 grouped, Q4_K prompt tiles) where `vnni`.
#[cfg(target_arch = "x86_64")]
fn avx512_path(vnni: bool) -> Path {
    Path {
        name: "avx512",
        // Q4_1's blocks are 32 values: one AVX2 register already holds a whole block.
        q4_1: q4_1_avx2,
        q4_1_grouped: vnni.then_some(q4_1_avx512_vnni as q4_1::DotGrouped),
        q4_1_panel: Some(if vnni {
            q4_1_panels::Kernels {
                unpack: q4_1_panels::unpack_avx512,
                tile: q4_1_panels::tile_avx512_vnni,
            }
        } else {
            q4_1_panels::Kernels {
                unpack: q4_1_panels::unpack_avx512,
                tile: q4_1_panels::tile_avx2,
            }
        }),
        // 6 × 4: three pairs of rows × four columns (see `kquant_pairs::dot_avx512`).
        // Their mins term apart, four columns a vector (see `kquant_mins`).
        q4k: if vnni {
            kquant::Tiles {
                unsigned_activations: true,
                mins: Some(kquant_mins::mins_avx512),
                paired: paired_tiles!(avx512_q4k_vnni_paired, 4, false),
                ..tiles!(avx512_q4k_vnni_tile, 6 x 4, false)
            }
        } else {
            kquant::Tiles {
                mins: Some(kquant_mins::mins_avx512),
                paired: paired_tiles!(avx512_paired, 4, false),
                ..tiles!(avx512_tile, 6 x 4, false)
            }
        },
        // Q6_K takes unsigned activations (see `kquant_pairs::dot_avx512`); with VNNI the same
        // kernel built to fuse `madd` and `add`.
        q6k: if vnni {
            kquant::Tiles {
                unsigned_activations: true,
                paired: paired_tiles!(avx512_vnni_paired, 4, true),
                ..tiles!(avx512_vnni_tile, 6 x 4, true)
            }
        } else {
            kquant::Tiles {
                unsigned_activations: true,
                paired: paired_tiles!(avx512_paired, 4, true),
                ..tiles!(avx512_tile, 6 x 4, true)
            }
        },
        rows: Some(if vnni {
            kquant_rows::AVX512_VNNI
        } else {
            kquant_rows::AVX512
        }),
    }
}

/// Every path the tests check: [`available_paths`], plus on a VNNI machine the AVX-512 path
/// as a machine without VNNI runs it (no other way reaches those kernels here).
#[cfg(test)]
pub(crate) fn paths_to_test() -> Vec<Path> {
    #[allow(unused_mut)]
    let mut paths = available_paths();
    #[cfg(target_arch = "x86_64")]
    if vnni_available() {
        paths.push(avx512_path(false));
    }
    paths
}

/// The path in use: the last (widest) available one, unless `SMOLLM3_KERNELS` names another
/// available path (a name this machine cannot run is ignored: the widest path is used).
pub fn path() -> &'static Path {
    static PATH: OnceLock<Path> = OnceLock::new();
    PATH.get_or_init(|| {
        let mut paths = available_paths();
        let forced = std::env::var("SMOLLM3_KERNELS").ok();
        if let Some(chosen) = paths.iter().find(|p| forced.as_deref() == Some(p.name)) {
            return *chosen;
        }
        paths.pop().unwrap_or(PORTABLE)
    })
}

/// The name of the path in use (`avx512`, `avx2`, `portable`).
pub fn path_name() -> &'static str {
    path().name
}

fn pool() -> &'static pool::Pool {
    pool::Pool::global()
}

#[cfg(test)]
mod tests;
