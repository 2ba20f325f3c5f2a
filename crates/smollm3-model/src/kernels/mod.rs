//! Our own quantized kernels, chosen at run time for the CPU at hand.
//!
//! The machines this runs on differ (AVX2-only one day, AVX-512 VNNI the next), so each kernel
//! has a portable path that runs everywhere and SIMD paths picked once per process by feature
//! detection. `SMOLLM3_KERNELS=portable` forces the portable path (tests compare every path
//! the machine can run with it); [`path_name`] says which is in use (`smollm3 --version`).
//!
//! - [`q4_1`]: Q4_1 weights (SmolLM2's GGUF) × 8-bit activations; candle has only a scalar
//!   loop for this type.

pub mod q4_1;

use std::sync::OnceLock;

type DotQ4_1 = fn(&[q4_1::BlockQ4_1], &[q4_1::BlockQ8]) -> f32;

/// The kernels of one instruction-set path.
#[derive(Clone, Copy)]
pub struct Path {
    pub name: &'static str,
    pub q4_1: DotQ4_1,
}

const PORTABLE: Path = Path {
    name: "portable",
    q4_1: q4_1::dot_portable,
};

#[cfg(target_arch = "x86_64")]
fn q4_1_avx2(w: &[q4_1::BlockQ4_1], a: &[q4_1::BlockQ8]) -> f32 {
    // SAFETY: this function is only selected after `avx2_available()` said yes.
    unsafe { q4_1::dot_avx2(w, a) }
}

#[cfg(target_arch = "x86_64")]
fn avx2_available() -> bool {
    is_x86_feature_detected!("avx2") && is_x86_feature_detected!("f16c")
}

/// Every path this machine can run, the portable one first.
pub fn available_paths() -> Vec<Path> {
    let mut paths = vec![PORTABLE];
    #[cfg(target_arch = "x86_64")]
    if avx2_available() {
        paths.push(Path {
            name: "avx2",
            q4_1: q4_1_avx2,
        });
    }
    paths
}

/// The path in use: the last (widest) available one, unless `SMOLLM3_KERNELS=portable`.
pub fn path() -> &'static Path {
    static PATH: OnceLock<Path> = OnceLock::new();
    PATH.get_or_init(|| {
        let forced = std::env::var("SMOLLM3_KERNELS").is_ok_and(|v| v == "portable");
        if forced {
            return PORTABLE;
        }
        available_paths().pop().unwrap_or(PORTABLE)
    })
}

/// The name of the path in use (`avx2`, `portable`).
pub fn path_name() -> &'static str {
    path().name
}

fn pool() -> &'static candle_core::utils::BarrierPool {
    candle_core::utils::barrier_pool()
}

#[cfg(test)]
mod tests {
    use half::f16;

    use super::q4_1::{self, BlockQ4_1, BlockQ8, BLOCK};
    use super::*;

    /// A small deterministic generator (no extra dependency; the values only need to be varied).
    struct Lcg(u64);
    impl Lcg {
        fn next(&mut self) -> u32 {
            self.0 = self
                .0
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (self.0 >> 33) as u32
        }
        fn float(&mut self) -> f32 {
            (self.next() as f32 / (1u64 << 31) as f32) * 2.0 - 1.0
        }
    }

    fn random_weights(rng: &mut Lcg, blocks: usize) -> Vec<BlockQ4_1> {
        (0..blocks)
            .map(|_| BlockQ4_1 {
                d: f16::from_f32(rng.float() * 0.1),
                m: f16::from_f32(rng.float() * 0.5),
                qs: std::array::from_fn(|_| rng.next() as u8),
            })
            .collect()
    }

    /// Exact, in f64: the weights' `d × q` times the dequantized activations, plus the
    /// offsets `m` times the activation blocks' sums `s` (ggml's q8_1 definition).
    fn reference(w: &[BlockQ4_1], a: &[BlockQ8]) -> f64 {
        w.iter()
            .zip(a)
            .map(|(w, a)| {
                let offset = f64::from(w.m.to_f32());
                let values = w.dequantize();
                let scaled: f64 = (0..BLOCK)
                    .map(|j| (f64::from(values[j]) - offset) * f64::from(a.d) * f64::from(a.qs[j]))
                    .sum();
                scaled + offset * f64::from(a.s)
            })
            .sum()
    }

    #[test]
    fn every_path_matches_the_dequantized_reference_on_random_blocks() {
        let mut rng = Lcg(7);
        for blocks in [1, 2, 3, 18, 48] {
            for _ in 0..20 {
                let w = random_weights(&mut rng, blocks);
                let x: Vec<f32> = (0..blocks * BLOCK).map(|_| rng.float() * 4.0).collect();
                let mut a = vec![
                    BlockQ8 {
                        d: 0.0,
                        s: 0.0,
                        qs: [0; BLOCK]
                    };
                    blocks
                ];
                q4_1::quantize_row(&x, &mut a);
                let want = reference(&w, &a);
                for path in available_paths() {
                    let got = f64::from((path.q4_1)(&w, &a));
                    let tolerance = 1e-4 * (1.0 + want.abs());
                    assert!(
                        (got - want).abs() <= tolerance,
                        "{}: {got} vs {want} ({blocks} blocks)",
                        path.name
                    );
                }
            }
        }
    }

    #[test]
    fn quantized_activations_stay_close_to_the_floats() {
        let mut rng = Lcg(3);
        let x: Vec<f32> = (0..4 * BLOCK).map(|_| rng.float() * 10.0).collect();
        let mut a = vec![
            BlockQ8 {
                d: 0.0,
                s: 0.0,
                qs: [0; BLOCK]
            };
            4
        ];
        q4_1::quantize_row(&x, &mut a);
        for (chunk, block) in x.chunks(BLOCK).zip(&a) {
            let sum: i32 = block.qs.iter().map(|&q| i32::from(q)).sum();
            // Scales are kept at f16 precision (as ggml's q8_1).
            assert!((block.s - block.d * sum as f32).abs() < 2e-3 * (1.0 + block.s.abs()));
            for (v, q) in chunk.iter().zip(block.qs) {
                assert!((v - block.d * f32::from(q)).abs() <= block.d / 2.0 + 2e-3 * v.abs());
            }
        }
        // Halves round away from zero, as ggml's scalar quantizer (and candle) do.
        let mut halves = vec![a[0]];
        let mut x = [0f32; BLOCK];
        x[0] = 127.0;
        x[1] = 2.5;
        x[2] = 3.5;
        x[3] = -2.5;
        q4_1::quantize_row(&x, &mut halves);
        assert_eq!(&halves[0].qs[..4], &[127, 3, 4, -3]);
        // All zeros quantize to zeros, not NaN.
        let mut zero = a[..1].to_vec();
        q4_1::quantize_row(&[0.0; BLOCK], &mut zero);
        assert_eq!(zero[0].d, 0.0);
        assert!(zero[0].qs.iter().all(|&q| q == 0));
    }

    #[test]
    fn the_matmul_matches_row_by_row_dots() {
        let mut rng = Lcg(11);
        let (m, k, n) = (3, 4 * BLOCK, 37);
        let weights = random_weights(&mut rng, n * k / BLOCK);
        let lhs: Vec<f32> = (0..m * k).map(|_| rng.float()).collect();
        let mut dst = vec![0f32; m * n];
        q4_1::matmul((m, k, n), &lhs, &weights, &mut dst);
        for r in 0..m {
            let mut a = vec![
                BlockQ8 {
                    d: 0.0,
                    s: 0.0,
                    qs: [0; BLOCK]
                };
                k / BLOCK
            ];
            q4_1::quantize_row(&lhs[r * k..(r + 1) * k], &mut a);
            for c in 0..n {
                let w = &weights[c * k / BLOCK..(c + 1) * k / BLOCK];
                // Against dequantized floats too: within the 8-bit activation error.
                let exact: f32 = w
                    .iter()
                    .flat_map(|b| b.dequantize())
                    .zip(&lhs[r * k..(r + 1) * k])
                    .map(|(w, x)| w * x)
                    .sum();
                let got = dst[r * n + c];
                assert_eq!(got, q4_1::dot(w, &a), "({r}, {c})");
                assert!(
                    (got - exact).abs() < 0.05 * (1.0 + exact.abs()),
                    "{got} vs {exact}"
                );
            }
        }
    }
}

#[cfg(test)]
mod versus_candle {
    use candle_core::quantized::k_quants;

    use super::q4_1::{self, BlockQ4_1, BLOCK};

    /// Our Q4_1 matmul against candle's on the same blocks: the same bits, on every path.
    #[test]
    fn our_q4_1_matmul_agrees_with_candles() {
        let (m, k, n) = (2, 576, 64);
        let mut state = 99u64;
        let mut next = || {
            state = state.wrapping_mul(6364136223846793005).wrapping_add(1);
            (state >> 33) as u32
        };
        let weights: Vec<BlockQ4_1> = (0..n * k / BLOCK)
            .map(|_| BlockQ4_1 {
                d: half::f16::from_f32((next() % 1000) as f32 / 20000.0),
                m: half::f16::from_f32(-((next() % 1000) as f32) / 5000.0),
                qs: std::array::from_fn(|_| next() as u8),
            })
            .collect();
        let lhs: Vec<f32> = (0..m * k)
            .map(|_| (next() % 2000) as f32 / 1000.0 - 1.0)
            .collect();
        let mut ours = vec![0f32; m * n];
        q4_1::matmul((m, k, n), &lhs, &weights, &mut ours);
        // The portable path too, dot by dot.
        let blocks = k / BLOCK;
        let mut a = vec![
            q4_1::BlockQ8 {
                d: 0.0,
                s: 0.0,
                qs: [0; BLOCK]
            };
            blocks
        ];
        for r in 0..m {
            q4_1::quantize_row(&lhs[r * k..(r + 1) * k], &mut a);
            for c in 0..n {
                let w = &weights[c * blocks..(c + 1) * blocks];
                for path in super::available_paths() {
                    assert_eq!(
                        (path.q4_1)(w, &a).to_bits(),
                        ours[r * n + c].to_bits(),
                        "{}",
                        path.name
                    );
                }
            }
        }
        // SAFETY: both block types are 20 bytes of the same layout (f16 d, f16 m, 16 bytes).
        let theirs_blocks: &[k_quants::BlockQ4_1] = unsafe {
            std::slice::from_raw_parts(
                weights.as_ptr() as *const k_quants::BlockQ4_1,
                weights.len(),
            )
        };
        let mut theirs = vec![0f32; m * n];
        k_quants::matmul((m, k, n), &lhs, theirs_blocks, &mut theirs).unwrap();
        let worst = ours
            .iter()
            .zip(&theirs)
            .map(|(a, b)| (a - b).abs() / (1e-3 + b.abs()))
            .fold(0f32, f32::max);
        assert_eq!(worst, 0.0);
        for (i, (a, b)) in ours.iter().zip(&theirs).enumerate() {
            assert_eq!(a.to_bits(), b.to_bits(), "{i}: ours {a} candle {b}");
        }
    }
}
