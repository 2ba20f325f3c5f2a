//! Tests of every kernel path this machine can run: against references computed from each
//! format's definition (f64), and against candle's own kernels, bit for bit.

mod tests_support {
    /// A small deterministic generator (no extra dependency; the values only need to be varied).
    pub struct Lcg(pub u64);
    impl Lcg {
        pub fn next(&mut self) -> u32 {
            self.0 = self
                .0
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (self.0 >> 33) as u32
        }
        pub fn float(&mut self) -> f32 {
            (self.next() as f32 / (1u64 << 31) as f32) * 2.0 - 1.0
        }
    }

    /// softmax(`scores`) · `v` by candle's own ops, flattened: the tail of the attention
    /// references.
    pub fn candle_softmax_times(scores: &candle_core::Tensor, v: &candle_core::Tensor) -> Vec<f32> {
        let probs = candle_nn::ops::softmax_last_dim(scores).unwrap();
        probs
            .matmul(v)
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1()
            .unwrap()
    }
}

mod q4_1_tests {
    use half::f16;

    use crate::kernels::q4_1::{self, BlockQ4_1, BlockQ8, BLOCK};

    use super::tests_support::Lcg;

    /// `x` quantized as the Q4_1 kernels take it.
    fn quantized(x: &[f32]) -> Vec<BlockQ8> {
        let zero = BlockQ8 {
            d: 0.0,
            s: 0.0,
            qs: [0; BLOCK],
        };
        let mut a = vec![zero; x.len() / BLOCK];
        q4_1::quantize_row(x, &mut a);
        a
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
        for blocks in [1, 2, 3, 8, 9, 16, 18, 48] {
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
                let portable = q4_1::dot_portable(&w, &a);
                for path in crate::kernels::paths_to_test() {
                    let got = f64::from((path.q4_1)(&w, &a));
                    let tolerance = 1e-4 * (1.0 + want.abs());
                    assert!(
                        (got - want).abs() <= tolerance,
                        "{}: {got} vs {want} ({blocks} blocks)",
                        path.name
                    );
                    // The grouped kernel (whole groups of eight blocks, then the rest): the
                    // portable path's bits.
                    if let Some(grouped) = path.q4_1_grouped {
                        let groups = q4_1::GroupQ8::arrange(&a);
                        assert_eq!(
                            grouped(&w, &groups, &a).to_bits(),
                            portable.to_bits(),
                            "{} grouped, {blocks} blocks",
                            path.name
                        );
                    }
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

    /// The path in use quantizes exactly as the definition (the scalar loop), on values that
    /// land on halves, NaN, infinities, zeros and tiny values.
    #[test]
    fn the_vector_quantizer_gives_the_scalar_ones_bits() {
        let mut rng = Lcg(11);
        const BLOCKS: usize = 8;
        let mut x: Vec<f32> = (0..BLOCKS * BLOCK).map(|_| rng.float() * 7.0).collect();
        // Block 1: products on halves (the maximum 127: the scale is 1).
        x[BLOCK] = 127.0;
        for (i, v) in x[BLOCK + 1..2 * BLOCK].iter_mut().enumerate() {
            *v = i as f32 - 15.5;
        }
        // Block 2: NaN; block 3: an infinity; block 4: zeros; block 5: tiny values; block 6:
        // the largest magnitude negative and last.
        x[2 * BLOCK + 9] = f32::NAN;
        x[3 * BLOCK + 30] = f32::INFINITY;
        x[4 * BLOCK..5 * BLOCK].fill(0.0);
        x[5 * BLOCK..6 * BLOCK].iter_mut().for_each(|v| *v *= 1e-30);
        x[7 * BLOCK - 1] = -100.0;
        let empty = BlockQ8 {
            d: 0.0,
            s: 0.0,
            qs: [0; BLOCK],
        };
        let mut ours = vec![empty; BLOCKS];
        q4_1::quantize_row(&x, &mut ours);
        for (i, (chunk, got)) in x.chunks_exact(BLOCK).zip(&ours).enumerate() {
            let mut want = empty;
            q4_1::quantize_block(chunk, &mut want);
            assert_eq!(got.qs, want.qs, "block {i}");
            assert_eq!(
                (got.d.to_bits(), got.s.to_bits()),
                (want.d.to_bits(), want.s.to_bits()),
                "block {i}"
            );
        }
        // −15.5, −14.5, −13.5: away from zero.
        assert_eq!(ours[1].qs[..4], [127, -16, -15, -14]);
    }

    #[test]
    fn the_matmul_matches_row_by_row_dots() {
        let mut rng = Lcg(11);
        let (m, k, n) = (3, 4 * BLOCK, 37);
        let weights = random_weights(&mut rng, n * k / BLOCK);
        let lhs: Vec<f32> = (0..m * k).map(|_| rng.float()).collect();
        let mut dst = vec![0f32; m * n];
        q4_1::matmul((m, k, n), &lhs, &weights, &mut dst).unwrap();
        for r in 0..m {
            let a = quantized(&lhs[r * k..(r + 1) * k]);
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

    /// Each path's panel layout is the portable one, for a whole panel and for the last
    /// panel of 37 columns (5 real columns, the rest zero).
    #[test]
    fn every_panel_layout_is_the_portable_one() {
        use crate::kernels::q4_1_panels;
        let mut rng = Lcg(31);
        let (blocks, n) = (3, 37);
        let weights = random_weights(&mut rng, n * blocks);
        for path in crate::kernels::paths_to_test() {
            let Some(kernels) = path.q4_1_panel else {
                continue;
            };
            for columns in [0..16, 16..32, 32..37] {
                let (mut want, mut got) = (Vec::new(), Vec::new());
                q4_1_panels::unpack_portable(&weights, blocks, columns.clone(), &mut want);
                (kernels.unpack)(&weights, blocks, columns.clone(), &mut got);
                assert_eq!(got, want, "{} {columns:?}", path.name);
            }
        }
    }

    /// Every path's matmul (the panels on AVX-512 VNNI) gives the portable row products'
    /// bits: row counts below, at and past a tile of 8 (tiles plus single rows), and 37
    /// columns, so the last panel has 5 real columns and 11 of zeros.
    #[test]
    fn every_paths_matmul_gives_the_row_products_bits() {
        let mut rng = Lcg(23);
        // 5 blocks: no whole group of 8; 19: two groups and three blocks past them.
        for (k, m) in [1, 3, 4, 8, 9, 13, 17]
            .into_iter()
            .map(|m| (5 * BLOCK, m))
            .chain([1, 2, 3, 9].into_iter().map(|m| (19 * BLOCK, m)))
        {
            let n = 37;
            let weights = random_weights(&mut rng, n * k / BLOCK);
            let lhs: Vec<f32> = (0..m * k).map(|_| rng.float()).collect();
            let mut want = vec![0f32; m * n];
            for r in 0..m {
                let a = quantized(&lhs[r * k..(r + 1) * k]);
                for c in 0..n {
                    want[r * n + c] =
                        q4_1::dot_portable(&weights[c * k / BLOCK..(c + 1) * k / BLOCK], &a);
                }
            }
            for path in crate::kernels::paths_to_test() {
                let mut got = vec![f32::NAN; m * n];
                q4_1::matmul_on(&path, (m, k, n), &lhs, &weights, &mut got).unwrap();
                for (i, (got, want)) in got.iter().zip(&want).enumerate() {
                    assert_eq!(
                        got.to_bits(),
                        want.to_bits(),
                        "{} m={m}: ({}, {}) {got} vs {want}",
                        path.name,
                        i / n,
                        i % n
                    );
                }
            }
        }
    }
}

mod versus_candle {
    use candle_core::quantized::k_quants;

    use crate::kernels::q4_1::{self, BlockQ4_1, BLOCK};

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
        q4_1::matmul((m, k, n), &lhs, &weights, &mut ours).unwrap();
        assert!(q4_1::matmul((m, k, n + 1), &lhs, &weights, &mut ours).is_err());
        let mut empty = vec![f32::NAN; m * n];
        q4_1::matmul((m, 0, n), &[], &[], &mut empty).unwrap();
        assert!(empty.iter().all(|&v| v == 0.0));
        assert!(q4_1::matmul((m, k + 1, n), &lhs, &weights, &mut ours).is_err());
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
                for path in crate::kernels::paths_to_test() {
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

mod kquant_tests {
    use half::f16;

    use super::tests_support::Lcg;
    use crate::kernels::kquant::{
        self, BlockQ4K, BlockQ6K, BlockQ8K, SuperBlock, Unpacked, MAX_TILE, QK_K,
    };
    use crate::kernels::kquant_rows;

    fn random_q4k(rng: &mut Lcg) -> BlockQ4K {
        BlockQ4K {
            d: f16::from_f32(rng.float() * 0.01),
            dmin: f16::from_f32(rng.float() * 0.01),
            scales: std::array::from_fn(|_| rng.next() as u8),
            qs: std::array::from_fn(|_| rng.next() as u8),
        }
    }

    /// The SIMD unpack the prompt kernels call gives the definition's bytes, field for field,
    /// on random blocks and on the extremes (every code 15, every 6-bit scale and min 63).
    #[test]
    fn the_fast_unpack_is_the_definition() {
        let mut rng = Lcg(77);
        let mut blocks: Vec<BlockQ4K> = (0..64).map(|_| random_q4k(&mut rng)).collect();
        blocks.push(BlockQ4K {
            scales: [0xFF; 12],
            qs: [0xFF; QK_K / 2],
            ..blocks[0]
        });
        for block in &blocks {
            let (mut want, mut got) = (Unpacked::ZERO, Unpacked::ZERO);
            block.unpack(&mut want);
            block.unpack_fast(&mut got);
            assert_eq!(got, want);
        }
    }

    fn random_q6k(rng: &mut Lcg) -> BlockQ6K {
        BlockQ6K {
            ql: std::array::from_fn(|_| rng.next() as u8),
            qh: std::array::from_fn(|_| rng.next() as u8),
            // The whole i8 range, -128 included.
            scales: std::array::from_fn(|_| rng.next() as i8),
            d: f16::from_f32(rng.float() * 0.01),
        }
    }

    fn quantized(x: &[f32]) -> Vec<BlockQ8K> {
        let zero = BlockQ8K {
            d: 0.0,
            qs: [0; QK_K],
            bsums: [0; QK_K / 16],
        };
        let mut out = vec![zero; x.len() / QK_K];
        kquant::quantize_row(x, &mut out);
        out
    }

    /// Activation rows as a path's kernels take them.
    fn as_kernel_takes(rows: &[Vec<BlockQ8K>], tiles: &kquant::Tiles) -> Vec<Vec<BlockQ8K>> {
        let mut rows = rows.to_vec();
        if tiles.unsigned_activations {
            rows.iter_mut().flatten().for_each(kquant::make_unsigned);
        }
        rows
    }

    /// A tile's values as the prompt driver makes them: the kernel's, plus the path's mins
    /// pass where it has one (Q4_K's mins term apart from the kernels).
    /// `kernel` writes the tile's values into its argument; `a` and `w` are its rows and
    /// columns (the mins pass's inputs).
    fn tile_values(
        t: &kquant::Tiles,
        kernel: impl FnOnce(&mut [f32]),
        a: &[&[BlockQ8K]],
        w: &[&[Unpacked]],
        out: &mut [f32],
    ) {
        kernel(out);
        if let Some(mins) = t.mins {
            let blocks = a[0].len();
            let sums: Vec<kquant::RowSums> = a
                .iter()
                .flat_map(|row| row.iter().map(kquant::RowSums::of))
                .collect();
            let columns: Vec<Unpacked> =
                w.iter().flat_map(|c| c[..blocks].iter().copied()).collect();
            let mut m = vec![f32::NAN; a.len() * w.len()];
            mins(&sums, blocks, &columns, &mut m, w.len());
            for (value, m) in out.iter_mut().zip(m) {
                *value += m;
            }
        }
    }

    /// A tile's `r × c` values as `out[r × c + j]`, from a kernel that adds at a stride
    /// ([`kquant::Tile`]): into a wider buffer (a stride of `c + 3`) that starts at −0.0, with
    /// the values between the rows (42.0) to come back untouched; and on 1.5 everywhere, each
    /// value + 1.5 exactly (it adds, as the driver's mins need).
    fn added(r: usize, c: usize, kernel: impl Fn(&mut [f32], usize), out: &mut [f32]) {
        let stride = c + 3;
        let mut wide = vec![42.0f32; r * stride];
        for row in wide.chunks_exact_mut(stride) {
            row[..c].fill(-0.0);
        }
        kernel(&mut wide, stride);
        for (row, out) in wide.chunks_exact(stride).zip(out.chunks_exact_mut(c)) {
            out.copy_from_slice(&row[..c]);
            assert!(
                row[c..].iter().all(|&v| v == 42.0),
                "wrote past its columns"
            );
        }
        let mut on = vec![1.5f32; r * stride];
        kernel(&mut on, stride);
        for (row, out) in on.chunks_exact(stride).zip(out.chunks_exact(c)) {
            for (got, value) in row.iter().zip(out) {
                assert_eq!(got.to_bits(), (value + 1.5).to_bits(), "did not add");
            }
        }
    }

    /// Exact, in f64: the dequantized weights (from each format's definition, not from
    /// `unpack`) times the dequantized activations.
    fn reference<B: SuperBlock>(w: &[B], a: &[BlockQ8K]) -> f64 {
        w.iter()
            .zip(a)
            .map(|(w, a)| {
                w.dequantize()
                    .iter()
                    .zip(a.qs)
                    .map(|(&v, q)| f64::from(v) * f64::from(a.d) * f64::from(q))
                    .sum::<f64>()
            })
            .sum()
    }

    fn check_every_path<B: SuperBlock>(random: fn(&mut Lcg) -> B, seed: u64) {
        let mut rng = Lcg(seed);
        for blocks in [1, 2, 3, 8, 43] {
            for _ in 0..6 {
                // As many weight and activation rows as the largest tile side.
                let rows: Vec<Vec<B>> = (0..MAX_TILE)
                    .map(|_| (0..blocks).map(|_| random(&mut rng)).collect())
                    .collect();
                // Different activation rows: a kernel that mixed up the rows it takes
                // together would not give each row's own bits.
                let xs: Vec<Vec<f32>> = (0..MAX_TILE)
                    .map(|_| (0..blocks * QK_K).map(|_| rng.float() * 3.0).collect())
                    .collect();
                let activations: Vec<Vec<BlockQ8K>> = xs.iter().map(|x| quantized(x)).collect();
                let unpacked: Vec<Vec<Unpacked>> = rows
                    .iter()
                    .map(|row| {
                        row.iter()
                            .map(|b| {
                                let mut u = Unpacked::ZERO;
                                b.unpack(&mut u);
                                u
                            })
                            .collect()
                    })
                    .collect();
                let columns: Vec<&[Unpacked]> = unpacked.iter().map(|u| &u[..]).collect();
                let rows_a: Vec<&[BlockQ8K]> = activations.iter().map(|a| &a[..]).collect();
                let portable = B::tiles(&crate::kernels::PORTABLE);
                let mut want_bits = [[0f32; MAX_TILE]; MAX_TILE];
                for (r, (x, a)) in xs.iter().zip(&activations).enumerate() {
                    for c in 0..MAX_TILE {
                        let mut got = [0f32];
                        let (row, column) = (&rows_a[r..r + 1], &columns[c..c + 1]);
                        added(
                            1,
                            1,
                            |out, s| (portable.single)(row, column, out, s),
                            &mut got,
                        );
                        want_bits[r][c] = got[0];
                        let want = reference(&rows[c], a);
                        let scale: f64 = rows[c]
                            .iter()
                            .flat_map(|b| b.dequantize())
                            .zip(x)
                            .map(|(w, x)| f64::from((w * x).abs()))
                            .sum();
                        let got = f64::from(got[0]);
                        assert!(
                            (got - want).abs() <= 1e-5 * (1.0 + scale),
                            "portable: {got} vs {want} ({blocks} blocks)"
                        );
                    }
                }
                // Every path and tile shape gives the portable single dot product's bits.
                for path in crate::kernels::paths_to_test() {
                    let t = B::tiles(&path);
                    let activations = as_kernel_takes(&activations, &t);
                    let rows_a: Vec<&[BlockQ8K]> = activations.iter().map(|a| &a[..]).collect();
                    let shapes = [
                        (t.full, t.rows, t.cols),
                        (t.row_edge, 1, t.cols),
                        (t.col_edge, t.rows, 1),
                        (t.single, 1, 1),
                    ];
                    let check = |out: &[f32],
                                 (r0, c0): (usize, usize),
                                 (r, c): (usize, usize),
                                 paired: &str| {
                        for (i, got) in out.iter().enumerate() {
                            assert_eq!(
                                got.to_bits(),
                                want_bits[r0 + i / c][c0 + i % c].to_bits(),
                                "{} {r}x{c}{paired} tile at ({r0}, {c0}), value {i}",
                                path.name
                            );
                        }
                    };
                    for (kernel, r, c) in shapes {
                        // The last rows and columns too, so that every row and column of the
                        // inputs meets every slot of each shape.
                        for (r0, c0) in [(0, 0), (MAX_TILE - r, MAX_TILE - c)] {
                            let (a, w) = (&rows_a[r0..r0 + r], &columns[c0..c0 + c]);
                            let mut out = vec![0f32; r * c];
                            let kernel = |out: &mut [f32], s| kernel(a, w, out, s);
                            tile_values(&t, |out| added(r, c, kernel, out), a, w, &mut out);
                            check(&out, (r0, c0), (r, c), "");
                        }
                    }
                    // The same shapes over the rows interleaved in pairs, where the path has them.
                    if let Some(paired) = t.paired {
                        let flat: Vec<BlockQ8K> = activations.iter().flatten().copied().collect();
                        let pairs = kquant::PairQ8K::interleave(&flat, blocks);
                        let pair_rows: Vec<&[kquant::PairQ8K]> = pairs.chunks(blocks).collect();
                        let r = t.rows;
                        for (kernel, c) in [(paired.full, t.cols), (paired.col_edge, 1)] {
                            for (r0, c0) in [(0, 0), (MAX_TILE - r, MAX_TILE - c)] {
                                let (a, w) = (&rows_a[r0..r0 + r], &columns[c0..c0 + c]);
                                let pairs = &pair_rows[r0 / 2..(r0 + r) / 2];
                                let mut out = vec![0f32; r * c];
                                let kernel = |out: &mut [f32], s| kernel(pairs, w, out, s);
                                tile_values(&t, |out| added(r, c, kernel, out), a, w, &mut out);
                                check(&out, (r0, c0), (r, c), " paired");
                            }
                        }
                    }
                }
            }
        }
    }

    /// The mins pass on its own: its definition against the formula in f64, and every SIMD
    /// form against the definition's bits at every column count a column tile can have
    /// (partly filled groups of four) and one past it.
    #[test]
    fn the_mins_pass_is_its_definition() {
        use crate::kernels::kquant_mins::{self, RowSums};
        let mut rng = Lcg(9);
        let blocks = 5;
        let rows = 3;
        let sums: Vec<RowSums> = (0..rows * blocks)
            .map(|_| {
                let x: Vec<f32> = (0..QK_K).map(|_| rng.float() * 3.0).collect();
                RowSums::of(&quantized(&x)[0])
            })
            .collect();
        for cols in (1..=17).chain([20]) {
            let columns: Vec<Unpacked> = (0..cols * blocks)
                .map(|_| {
                    let mut u = Unpacked::ZERO;
                    random_q4k(&mut rng).unpack(&mut u);
                    u
                })
                .collect();
            let mut want = vec![f32::NAN; rows * cols];
            kquant_mins::mins_portable(&sums, blocks, &columns, &mut want, cols);
            for r in 0..rows {
                for c in 0..cols {
                    let exact: f64 = (0..blocks)
                        .map(|b| {
                            let (y, u) = (&sums[r * blocks + b], &columns[c * blocks + b]);
                            let dot: i64 = (0..8)
                                .map(|j| i64::from(u.mins[j]) * i64::from(y.sums[j]))
                                .sum();
                            f64::from(y.minus_d) * f64::from(u.dmin) * dot as f64
                        })
                        .sum();
                    let got = f64::from(want[r * cols + c]);
                    assert!(
                        (got - exact).abs() <= 1e-5 * (1.0 + exact.abs()),
                        "{got} vs {exact}"
                    );
                }
            }
            for path in crate::kernels::paths_to_test() {
                if let Some(mins) = BlockQ4K::tiles(&path).mins {
                    let mut got = vec![f32::NAN; rows * cols];
                    mins(&sums, blocks, &columns, &mut got, cols);
                    let bits = |v: &[f32]| v.iter().map(|v| v.to_bits()).collect::<Vec<_>>();
                    assert_eq!(bits(&got), bits(&want), "{} with {cols} columns", path.name);
                    // At a wider stride (the driver's column tile), the same values in place
                    // and nothing else written.
                    let stride = cols + 5;
                    let mut wide = vec![42.0f32; rows * stride];
                    mins(&sums, blocks, &columns, &mut wide, stride);
                    for (row, want) in wide.chunks_exact(stride).zip(want.chunks_exact(cols)) {
                        assert_eq!(bits(&row[..cols]), bits(want), "{} at a stride", path.name);
                        assert!(row[cols..].iter().all(|&v| v == 42.0), "{}", path.name);
                    }
                }
            }
        }
    }

    #[test]
    fn q4k_every_path_matches_the_dequantized_reference() {
        check_every_path(random_q4k, 5);
    }

    #[test]
    fn q6k_every_path_matches_the_dequantized_reference() {
        check_every_path(random_q6k, 6);
    }

    /// Activations of the largest magnitude (−128 after rounding, the bound the kernels'
    /// no-saturation argument rests on) with the largest codes and scales.
    #[test]
    fn extreme_values_do_not_saturate() {
        let mut x = vec![-1.0f32; 2 * QK_K];
        x[0] = 1.0;
        let a = quantized(&x);
        let q6 = BlockQ6K {
            ql: [0xFF; QK_K / 2],
            qh: [0xFF; QK_K / 4],
            scales: [-128; QK_K / 16],
            d: f16::from_f32(1.0),
        };
        let q4 = BlockQ4K {
            d: f16::from_f32(1.0),
            dmin: f16::from_f32(1.0),
            scales: [0xFF; 12],
            qs: [0xFF; QK_K / 2],
        };
        let w6 = [q6, q6];
        let w4 = [q4, q4];
        for path in crate::kernels::paths_to_test() {
            let mut u6 = [Unpacked::ZERO; 2];
            let mut u4 = [Unpacked::ZERO; 2];
            for i in 0..2 {
                w6[i].unpack(&mut u6[i]);
                w4[i].unpack(&mut u4[i]);
            }
            let (t6, t4) = (BlockQ6K::tiles(&path), BlockQ4K::tiles(&path));
            let a6 = as_kernel_takes(std::slice::from_ref(&a), &t6);
            let a4 = as_kernel_takes(std::slice::from_ref(&a), &t4);
            let (mut got6, mut got4) = ([0f32], [0f32]);
            let (rows, cols) = (&[&a6[0][..]][..], &[&u6[..]][..]);
            tile_values(
                &t6,
                |out| added(1, 1, |out, s| (t6.single)(rows, cols, out, s), out),
                rows,
                cols,
                &mut got6,
            );
            let (rows, cols) = (&[&a4[0][..]][..], &[&u4[..]][..]);
            tile_values(
                &t4,
                |out| added(1, 1, |out, s| (t4.single)(rows, cols, out, s), out),
                rows,
                cols,
                &mut got4,
            );
            let (got6, got4) = (f64::from(got6[0]), f64::from(got4[0]));
            let (want6, want4) = (reference(&w6, &a), reference(&w4, &a));
            assert!(
                (got6 - want6).abs() <= 1e-5 * want6.abs(),
                "{}: {got6} vs {want6}",
                path.name
            );
            assert!(
                (got4 - want4).abs() <= 1e-5 * (1.0 + want4.abs()),
                "{}: {got4} vs {want4}",
                path.name
            );
        }
    }

    /// The activations are quantized as candle quantizes them (same integers, same scale), so
    /// the prompt kernel and candle's single-row kernel agree.
    #[test]
    fn activations_quantize_exactly_as_candles() {
        use candle_core::quantized::k_quants::{self, GgmlType};
        let mut rng = Lcg(9);
        const BLOCKS: usize = 9;
        let mut x: Vec<f32> = (0..BLOCKS * QK_K).map(|_| rng.float() * 7.0).collect();
        x[QK_K..2 * QK_K].fill(0.0);
        x[2 * QK_K + 5] = 2.5 / 127.0 * 40.0;
        // Block 3: the largest magnitude twice with opposite signs (the first one sets the
        // sign of the scale) and products that land exactly on halves (127 / 127 × k.5).
        let block = &mut x[3 * QK_K..4 * QK_K];
        block[7] = -127.0;
        block[200] = 127.0;
        for (i, v) in block.iter_mut().enumerate().skip(8).take(100) {
            *v = (i as f32 - 60.0) + 0.5;
        }
        // Block 4: NaN (skipped by the maximum, 0 as a code) and negative values only.
        x[4 * QK_K..5 * QK_K].iter_mut().for_each(|v| *v = -v.abs());
        x[4 * QK_K + 3] = f32::NAN;
        // Block 5: an infinity; block 6: tiny values; block 7: one value, at the end.
        x[5 * QK_K + 17] = f32::NEG_INFINITY;
        x[6 * QK_K..7 * QK_K].iter_mut().for_each(|v| *v *= 1e-30);
        x[7 * QK_K..8 * QK_K].fill(0.0);
        x[8 * QK_K - 1] = -0.25;
        x[8 * QK_K] = -0.0;
        let ours = quantized(&x);
        let mut theirs = vec![k_quants::BlockQ8K::zeros(); BLOCKS];
        k_quants::BlockQ8K::from_float(&x, &mut theirs);
        // SAFETY: both are 292 bytes of the same `repr(C)` layout (f32, 256 i8, 16 i16).
        let theirs: &[BlockQ8K] =
            unsafe { std::slice::from_raw_parts(theirs.as_ptr() as *const BlockQ8K, BLOCKS) };
        // The definition (the scalar loop other paths use) as well as the path in use.
        let mut scalar = quantized(&x);
        for (xs, y) in x.chunks_exact(QK_K).zip(scalar.iter_mut()) {
            kquant::quantize_block(xs, y);
        }
        for ((o, s), t) in ours.iter().zip(&scalar).zip(theirs) {
            assert_eq!(s.d.to_bits(), t.d.to_bits());
            assert_eq!((s.qs, s.bsums), (t.qs, t.bsums));
            assert_eq!(o.d.to_bits(), t.d.to_bits());
            assert_eq!(o.qs, t.qs);
            assert_eq!(o.bsums, t.bsums);
        }
    }

    /// The row products on the file's Q4_K and Q6_K blocks against candle's: the same bits,
    /// for one activation row (decode) and for several (a batch, a short prompt: up to
    /// `MAX_ROWS` a call, more in groups), through `gemv` (the path in use; the portable one
    /// declines, and candle's kernel is used) and each path's own kernels called row by row.
    #[test]
    fn the_row_products_agree_with_candles() {
        use candle_core::quantized::k_quants::{self, GgmlType};
        use kquant_rows::MAX_ROWS;
        fn check<B: kquant_rows::RowProduct, T: GgmlType>(
            random: fn(&mut Lcg) -> B,
            seed: u64,
            kernel: fn(&kquant_rows::RowKernels) -> kquant_rows::RowKernel<B>,
        ) {
            assert_eq!(std::mem::size_of::<B>(), std::mem::size_of::<T>());
            let mut rng = Lcg(seed);
            for (k, n, m) in [
                (QK_K, 5, 1),
                (8 * QK_K, 37, 1),
                (43 * QK_K, 9, 1),
                (QK_K, 6, 2),
                (2 * QK_K, 7, 3),
                (8 * QK_K, 11, 5),
                (2 * QK_K, 5, MAX_ROWS),
                (3 * QK_K, 13, MAX_ROWS + 3),
                (QK_K, 4, 2 * MAX_ROWS + 1),
                // Weight rows in several runs per work item (more than 16 a matrix).
                (2 * QK_K, 53, MAX_ROWS + 2),
            ] {
                let lhs: Vec<f32> = (0..m * k).map(|_| rng.float() * 2.0).collect();
                let w: Vec<B> = (0..n * k / QK_K).map(|_| random(&mut rng)).collect();
                let mut ours = vec![0f32; m * n];
                // SAFETY: the same repr(C) layout as candle's block (sizes asserted above).
                let theirs_w =
                    unsafe { std::slice::from_raw_parts(w.as_ptr() as *const T, w.len()) };
                let mut theirs = vec![0f32; m * n];
                k_quants::matmul((m, k, n), &lhs, theirs_w, &mut theirs).unwrap();
                let same = |ours: &[f32], how: &str| {
                    assert_eq!(ours.len(), theirs.len());
                    for (i, (a, b)) in ours.iter().zip(&theirs).enumerate() {
                        assert_eq!(
                            a.to_bits(),
                            b.to_bits(),
                            "{} {how} k {k} m {m} [row {}, column {}]: ours {a} candle {b}",
                            B::NAME,
                            i / n,
                            i % n
                        );
                    }
                };
                let a = lhs.chunks_exact(k).map(quantized).collect::<Vec<_>>();
                let a: Vec<&[BlockQ8K]> = a.iter().map(|row| row.as_slice()).collect();
                let mut tested = 0;
                for path in crate::kernels::paths_to_test() {
                    let Some(rows) = path.rows else { continue };
                    let mut by_kernel = vec![0f32; m * n];
                    for (g, group) in a.chunks(MAX_ROWS).enumerate() {
                        let out = by_kernel[g * MAX_ROWS * n..].as_mut_ptr();
                        // SAFETY: `paths_to_test` lists only paths this CPU runs; each row
                        // has as many blocks as the weight rows; 1 to MAX_ROWS rows, each
                        // with its `n` outputs in `by_kernel`.
                        unsafe { kernel(&rows)(&w, group, out, n) };
                    }
                    same(&by_kernel, path.name);
                    tested += 1;
                }
                let with_rows = crate::kernels::available_paths()
                    .iter()
                    .filter(|p| p.rows.is_some())
                    .count();
                assert!(tested >= with_rows, "{tested} paths tested");
                match kquant_rows::gemv(k, &lhs, &w, &mut ours) {
                    None => assert!(crate::kernels::path().rows.is_none()),
                    Some(done) => {
                        done.unwrap();
                        same(&ours, "gemv");
                        let wrong = kquant_rows::gemv(k + 1, &lhs, &w, &mut ours);
                        assert!(wrong.is_some_and(|r| r.is_err()));
                        // Outputs for a row count the activations do not have.
                        let mut short = vec![0f32; m * n + 1];
                        let wrong = kquant_rows::gemv(k, &lhs, &w, &mut short);
                        assert!(wrong.is_some_and(|r| r.is_err()));
                    }
                }
            }
        }
        check::<BlockQ4K, k_quants::BlockQ4K>(random_q4k, 33, |r| r.q4k);
        check::<BlockQ6K, k_quants::BlockQ6K>(random_q6k, 34, |r| r.q6k);
    }

    /// The Q6_K kernels over unsigned activations, called directly for every row count (the
    /// matmul takes them from four rows), against candle's: the same bits.
    #[test]
    fn unsigned_q6k_row_products_agree_with_candles() {
        use candle_core::quantized::k_quants;
        let mut rng = Lcg(36);
        for (k, n, m) in [
            (QK_K, 5, 1),
            (3 * QK_K, 9, 2),
            (2 * QK_K, 7, 3),
            (5 * QK_K, 4, 8),
        ] {
            let lhs: Vec<f32> = (0..m * k).map(|_| rng.float() * 2.0).collect();
            let w: Vec<BlockQ6K> = (0..n * k / QK_K).map(|_| random_q6k(&mut rng)).collect();
            // SAFETY: the same repr(C) layout as candle's block.
            let theirs_w = unsafe {
                std::slice::from_raw_parts(w.as_ptr() as *const k_quants::BlockQ6K, w.len())
            };
            let mut theirs = vec![0f32; m * n];
            k_quants::matmul((m, k, n), &lhs, theirs_w, &mut theirs).unwrap();
            let mut a = lhs.chunks_exact(k).map(quantized).collect::<Vec<_>>();
            a.iter_mut().flatten().for_each(kquant::make_unsigned);
            let a: Vec<&[BlockQ8K]> = a.iter().map(|row| row.as_slice()).collect();
            for path in crate::kernels::paths_to_test() {
                let Some(kernel) = path.rows.and_then(|r| r.q6k_unsigned) else {
                    continue;
                };
                let mut ours = vec![0f32; m * n];
                // SAFETY: a path this CPU runs; rows as long as the weight rows; `ours` m × n.
                unsafe { kernel(&w, &a, ours.as_mut_ptr(), n) };
                let bits = |x: &[f32]| x.iter().map(|v| v.to_bits()).collect::<Vec<_>>();
                assert_eq!(bits(&ours), bits(&theirs), "{} k {k} m {m}", path.name);
            }
        }
    }

    /// The Q4_K kernels of activation rows in pairs, on every path that has them, against
    /// candle's: the same bits, an odd last row (paired with itself) included.
    #[test]
    fn row_products_in_pairs_agree_with_candles() {
        use crate::kernels::kquant_row_pairs::RowPairs;
        use candle_core::quantized::k_quants;
        use kquant_rows::MAX_ROWS;
        let mut rng = Lcg(35);
        for (k, n, m) in [
            (QK_K, 5, 2),
            (3 * QK_K, 9, 3),
            (8 * QK_K, 7, MAX_ROWS),
            (2 * QK_K, 4, 5),
        ] {
            let lhs: Vec<f32> = (0..m * k).map(|_| rng.float() * 2.0).collect();
            let w: Vec<BlockQ4K> = (0..n * k / QK_K).map(|_| random_q4k(&mut rng)).collect();
            // SAFETY: the same repr(C) layout as candle's block.
            let theirs_w = unsafe {
                std::slice::from_raw_parts(w.as_ptr() as *const k_quants::BlockQ4K, w.len())
            };
            let mut theirs = vec![0f32; m * n];
            k_quants::matmul((m, k, n), &lhs, theirs_w, &mut theirs).unwrap();
            let a = lhs.chunks_exact(k).map(quantized).collect::<Vec<_>>();
            let a: Vec<&[BlockQ8K]> = a.iter().map(|row| row.as_slice()).collect();
            let pairs = RowPairs::new(&a, k / QK_K);
            let mut tested = 0;
            for path in crate::kernels::paths_to_test() {
                let Some(kernel) = path.rows.and_then(|r| r.q4k_pairs) else {
                    continue;
                };
                let mut ours = vec![0f32; m * n];
                // SAFETY: a path this CPU runs; rows as long as the pairs; `ours` m × n.
                unsafe { kernel(&w, &pairs, 0..m, ours.as_mut_ptr(), n) };
                let bits = |x: &[f32]| x.iter().map(|v| v.to_bits()).collect::<Vec<_>>();
                assert_eq!(bits(&ours), bits(&theirs), "{} k {k} m {m}", path.name);
                tested += 1;
            }
            let with_pairs = crate::kernels::available_paths()
                .iter()
                .filter(|p| p.rows.is_some_and(|r| r.q4k_pairs.is_some()))
                .count();
            assert!(tested >= with_pairs);
        }
    }

    /// Several matrices over one shared activation row (Q, K, V; gate, up) in one job: each
    /// output has the bits of that matrix's own row product, and shapes that do not fit are
    /// an error, not a panic.
    #[test]
    fn shared_row_products_equal_one_matrix_at_a_time() {
        use kquant_rows::Rows;
        let mut rng = Lcg(41);
        let k = 4 * QK_K;
        let lhs: Vec<f32> = (0..k).map(|_| rng.float() * 3.0).collect();
        let q: Vec<BlockQ4K> = (0..37 * 4).map(|_| random_q4k(&mut rng)).collect();
        let v: Vec<BlockQ6K> = (0..5 * 4).map(|_| random_q6k(&mut rng)).collect();
        let up: Vec<BlockQ4K> = (0..3 * 4).map(|_| random_q4k(&mut rng)).collect();
        let (mut dq, mut dv, mut du) = (vec![0f32; 37], vec![0f32; 5], vec![0f32; 3]);
        let mats = [Rows::Q4K(&q), Rows::Q6K(&v), Rows::Q4K(&up)];
        let Some(done) = kquant_rows::gemv_shared(k, &lhs, &mats, &mut [&mut dq, &mut dv, &mut du])
        else {
            assert!(crate::kernels::path().rows.is_none());
            return;
        };
        done.unwrap();
        let one = |w: Rows<'_>, n: usize| {
            let mut d = vec![0f32; n];
            kquant_rows::gemv_shared(k, &lhs, &[w], &mut [&mut d])
                .unwrap()
                .unwrap();
            d
        };
        let bits = |x: &[f32]| x.iter().map(|v| v.to_bits()).collect::<Vec<_>>();
        assert_eq!(bits(&dq), bits(&one(mats[0], 37)));
        assert_eq!(bits(&dv), bits(&one(mats[1], 5)));
        assert_eq!(bits(&du), bits(&one(mats[2], 3)));
        assert!(dq.iter().chain(&dv).chain(&du).all(|x| *x != 0.0));
        // One output too many for V's rows.
        let mut wrong = vec![0f32; 6];
        let err = kquant_rows::gemv_shared(k, &lhs, &mats, &mut [&mut dq, &mut wrong, &mut du])
            .unwrap()
            .unwrap_err();
        assert!(
            err.to_string().contains("20 super-blocks for 6 outputs"),
            "{err}"
        );
    }

    /// The whole matmul against candle's on the same file blocks: the same bits.
    #[test]
    fn the_matmul_agrees_with_candles() {
        let mut rng = Lcg(21);
        // 19 columns: a full column tile of 16 and a partial one of 3 (2 + 1 on AVX2's 2-column
        // tiles, the one-at-a-time fallback on 4 columns, a column at a time for paired rows).
        // 7 rows: a full group of 6 (4 on AVX2 and portable; interleaved in pairs on AVX-512)
        // and an edge of 1 (3); 14 rows: two groups and an edge of 2 (the row-at-a-time
        // fallback). Every kernel shape and every fallback.
        for m in [7, 14] {
            matmul_agrees_with_candles(m, &mut rng);
        }
    }

    fn matmul_agrees_with_candles(m: usize, rng: &mut Lcg) {
        use candle_core::quantized::k_quants;
        let (k, n) = (3 * QK_K, 19);
        let lhs: Vec<f32> = (0..m * k).map(|_| rng.float()).collect();
        let q4: Vec<BlockQ4K> = (0..n * k / QK_K).map(|_| random_q4k(rng)).collect();
        let q6: Vec<BlockQ6K> = (0..n * k / QK_K).map(|_| random_q6k(rng)).collect();
        // NaN first: a value the kernel failed to write (callers do not zero the output,
        // see `kquant::matmul_uninit`) would stay NaN and differ from candle's.
        let mut ours4 = vec![f32::NAN; m * n];
        let mut ours6 = vec![f32::NAN; m * n];
        kquant::matmul((m, k, n), &lhs, &q4, &mut ours4).unwrap();
        kquant::matmul((m, k, n), &lhs, &q6, &mut ours6).unwrap();
        // Wrong sizes are an error, not a write out of bounds.
        assert!(kquant::matmul((m, k, n + 1), &lhs, &q4, &mut ours4).is_err());
        assert!(kquant::matmul((m, k + 1, n), &lhs, &q4, &mut ours4).is_err());
        // No inputs: every output is an empty sum, 0 (the mins pass has nothing to read).
        let mut empty = vec![f32::NAN; m * n];
        kquant::matmul::<BlockQ4K>((m, 0, n), &[], &[], &mut empty).unwrap();
        assert!(empty.iter().all(|&v| v == 0.0), "{empty:?}");
        // SAFETY: the same `repr(C)` layouts as candle's block types (sizes asserted there
        // and here).
        let (theirs_q4, theirs_q6) = unsafe {
            (
                std::slice::from_raw_parts(q4.as_ptr() as *const k_quants::BlockQ4K, q4.len()),
                std::slice::from_raw_parts(q6.as_ptr() as *const k_quants::BlockQ6K, q6.len()),
            )
        };
        let mut theirs4 = vec![0f32; m * n];
        let mut theirs6 = vec![0f32; m * n];
        k_quants::matmul((m, k, n), &lhs, theirs_q4, &mut theirs4).unwrap();
        k_quants::matmul((m, k, n), &lhs, theirs_q6, &mut theirs6).unwrap();
        for (ours, theirs) in [(&ours4, &theirs4), (&ours6, &theirs6)] {
            for (i, (a, b)) in ours.iter().zip(theirs.iter()).enumerate() {
                assert_eq!(a.to_bits(), b.to_bits(), "{i}: ours {a} candle {b}");
            }
        }
    }
}

mod ggml_tests {
    use candle_core::quantized::k_quants::{self, BlockQ4K, BlockQ6K, BlockQ8_0, GgmlType};

    use super::tests_support::Lcg;

    /// Our pool's split of candle's dot products gives candle's own matmul bits.
    fn same_bits_as_candle<T: GgmlType>(seed: u64) {
        let mut rng = Lcg(seed);
        let k = 2 * T::BLCK_SIZE.max(256);
        for (m, n) in [(1, 9), (1, 64), (3, 6), (20, 13)] {
            let weights: Vec<f32> = (0..n * k).map(|_| rng.float()).collect();
            let mut rhs = vec![T::zeros(); n * k / T::BLCK_SIZE];
            T::from_float(&weights, &mut rhs);
            let lhs: Vec<f32> = (0..m * k).map(|_| rng.float()).collect();
            let (mut ours, mut theirs) = (vec![0f32; m * n], vec![0f32; m * n]);
            crate::kernels::ggml::matmul((m, k, n), &lhs, &rhs, &mut ours).unwrap();
            k_quants::matmul((m, k, n), &lhs, &rhs, &mut theirs).unwrap();
            for (i, (a, b)) in ours.iter().zip(&theirs).enumerate() {
                assert_eq!(a.to_bits(), b.to_bits(), "{:?} ({m}, {n}) [{i}]", T::DTYPE);
            }
            assert!(crate::kernels::ggml::matmul((m, k, n + 1), &lhs, &rhs, &mut ours).is_err());
        }
    }

    #[test]
    fn candles_dot_products_on_our_pool_give_candles_bits() {
        same_bits_as_candle::<BlockQ4K>(1);
        same_bits_as_candle::<BlockQ6K>(2);
        same_bits_as_candle::<BlockQ8_0>(3);
    }
}

mod attention_tests {
    use candle_core::{Device, Tensor};
    use half::f16;

    use super::tests_support::{candle_softmax_times, Lcg};
    use crate::kernels::attention::{decode, KvSlices, Shape};

    /// The shape of a layer whose cache holds `capacity` rows a head, `positions` of them used.
    fn cache_shape(
        (kv_heads, group, head_dim): (usize, usize, usize),
        positions: usize,
        capacity: usize,
    ) -> Shape {
        Shape {
            kv_heads,
            group,
            head_dim,
            positions,
            head_stride: capacity * head_dim,
        }
    }

    /// softmax(`q` · `k`ᵀ) · `v` by candle's own ops, flattened.
    fn candle_attention(q: &Tensor, k: &Tensor, v: &Tensor) -> Vec<f32> {
        candle_softmax_times(&q.matmul(&k.t().unwrap()).unwrap(), v)
    }

    /// Decode attention against candle's own ops on the same cache layout (a view of the first
    /// `positions` rows of a larger buffer, as the KV cache hands out), bit for bit, for
    /// SmolLM3's and SmolLM2's head shapes and contexts from one position to past gemm's
    /// 512-deep blocks.
    #[test]
    fn decode_attention_gives_candles_bits() {
        let mut rng = Lcg(11);
        for (kv_heads, group, head_dim) in [(4, 4, 128), (3, 3, 64), (1, 1, 8)] {
            for positions in [1usize, 2, 7, 64, 65, 86, 100, 300, 513, 577, 1100] {
                let capacity = positions.next_power_of_two().max(256);
                let mut values = |n: usize| -> Vec<f32> { (0..n).map(|_| rng.float()).collect() };
                let q = values(kv_heads * group * head_dim);
                let k = values(kv_heads * capacity * head_dim);
                let v = values(kv_heads * capacity * head_dim);

                let t = |x: &[f32], shape: (usize, usize, usize)| {
                    Tensor::from_vec(x.to_vec(), shape, &Device::Cpu).unwrap()
                };
                let qt = (t(&q, (kv_heads, group, head_dim)) * (1.0 / (head_dim as f64).sqrt()))
                    .unwrap();
                let kt = t(&k, (kv_heads, capacity, head_dim))
                    .narrow(1, 0, positions)
                    .unwrap();
                let vt = t(&v, (kv_heads, capacity, head_dim))
                    .narrow(1, 0, positions)
                    .unwrap();
                let expected = candle_attention(&qt, &kt, &vt);

                let scaled: Vec<f32> = qt.flatten_all().unwrap().to_vec1().unwrap();
                let mut out = vec![0f32; scaled.len()];
                let shape = cache_shape((kv_heads, group, head_dim), positions, capacity);
                decode(shape, &scaled, KvSlices::F32 { k: &k, v: &v }, &mut out).unwrap();
                let same = expected
                    .iter()
                    .zip(&out)
                    .all(|(a, b)| a.to_bits() == b.to_bits());
                assert!(
                    same,
                    "{shape:?}: first values {:?} against candle's {:?}",
                    &out[..4],
                    &expected[..4]
                );
            }
        }
    }

    /// On AVX-512 our score kernel (not gemm) runs for SmolLM3's and SmolLM2's head shapes
    /// past gemm's horizontal-kernel sizes: it passed its check against gemm, so the bits test
    /// above really compared it with candle.
    #[test]
    fn the_own_score_kernel_runs_where_it_matches_gemm() {
        use crate::kernels::attention::own_scores;
        let avx512 = crate::kernels::path().name == "avx512";
        assert_eq!(own_scores(4, 128, 576), avx512);
        assert_eq!(own_scores(3, 64, 300), avx512);
        assert!(
            !own_scores(4, 128, 64),
            "4 x 64 scores take gemm's horizontal kernel"
        );
        assert!(!own_scores(1, 128, 1000), "one query row takes gemm's gemv");
    }

    #[test]
    fn decode_attention_refuses_slices_that_do_not_fit() {
        let shape = Shape {
            kv_heads: 2,
            group: 2,
            head_dim: 4,
            positions: 3,
            head_stride: 16,
        };
        let q = vec![0.5f32; 16];
        let mut out = vec![0f32; 16];
        let short = vec![0f32; 16 + 11];
        let slices = KvSlices::F32 {
            k: &short,
            v: &short,
        };
        let err = decode(shape, &q, slices, &mut out).unwrap_err();
        assert!(err.to_string().contains("does not fit"), "{err}");
        let short = vec![f16::ZERO; 16 + 11];
        let fits = vec![f16::ZERO; 16 + 12];
        let slices = KvSlices::F16 {
            k: &fits,
            v: &short,
        };
        let err = decode(shape, &q, slices, &mut out).unwrap_err();
        assert!(err.to_string().contains("does not fit"), "{err}");
        let fits = vec![0f32; 16 + 12];
        decode(shape, &q, KvSlices::F32 { k: &fits, v: &fits }, &mut out).unwrap();
        assert!(out.iter().all(|&x| x == 0.0));
    }

    /// Decode attention over an f16 cache, on every path the machine can run, against candle's
    /// own ops on the same rounded keys and values widened to f32. Not the same bits (our f16
    /// kernels sum in their own order) but within a few f32 roundings: scores and outputs are
    /// sums of up to 128 products, and the AVX2 kernel sums a score in 8 lanes (candle in one
    /// chain), a difference of a few ulps that the softmax scales by the score (up to about 10
    /// with these unscaled queries): 4e-6 of the largest output is about 40 ulps (observed
    /// up to 2.4e-6 on AVX2, under 2e-6 on AVX-512).
    #[test]
    fn decode_attention_over_an_f16_cache_matches_candle_on_the_rounded_values() {
        let mut rng = Lcg(12);
        let own_path = matches!(crate::kernels::path().name, "avx512" | "avx2");
        // The span kernels of the paths this machine can run, beside the path in use.
        let paths: Vec<&str> = crate::kernels::available_paths()
            .iter()
            .map(|p| p.name)
            .filter(|name| matches!(*name, "avx512" | "avx2"))
            .collect();
        // SmolLM3, SmolLM2, a group past the f16 kernels' rows (and past AVX2's 4-row values
        // kernel), a head dim past 64-value passes, and a shape the kernels do not take.
        for (kv_heads, group, head_dim) in [
            (4, 4, 128),
            (3, 3, 64),
            (2, 8, 48),
            (2, 6, 32),
            (1, 9, 16),
            (1, 1, 8),
        ] {
            assert_eq!(
                crate::kernels::attention_f16::own_half_kernels(group, head_dim),
                own_path && head_dim % 16 == 0 && group <= 8
            );
            // 300 and more: a head's positions split into spans across the pool and merged.
            for positions in [1usize, 2, 17, 300, 577, 1100] {
                let capacity = positions.next_power_of_two().max(256);
                let mut values = |n: usize| -> Vec<f32> { (0..n).map(|_| rng.float()).collect() };
                let q = values(kv_heads * group * head_dim);
                let k: Vec<f16> = values(kv_heads * capacity * head_dim)
                    .into_iter()
                    .map(f16::from_f32)
                    .collect();
                let v: Vec<f16> = values(kv_heads * capacity * head_dim)
                    .into_iter()
                    .map(f16::from_f32)
                    .collect();

                let widened = |x: &[f16]| {
                    let x: Vec<f32> = x.iter().map(|h| h.to_f32()).collect();
                    Tensor::from_vec(x, (kv_heads, capacity, head_dim), &Device::Cpu)
                        .unwrap()
                        .narrow(1, 0, positions)
                        .unwrap()
                };
                let qt =
                    Tensor::from_vec(q.clone(), (kv_heads, group, head_dim), &Device::Cpu).unwrap();
                let expected = candle_attention(&qt, &widened(&k), &widened(&v));

                let shape = cache_shape((kv_heads, group, head_dim), positions, capacity);
                let mut out = vec![f32::NAN; q.len()];
                decode(shape, &q, KvSlices::F16 { k: &k, v: &v }, &mut out).unwrap();
                let mut results = vec![("in use", out)];
                for &path in &paths {
                    let mut out = vec![f32::NAN; q.len()];
                    let attention_f16 = crate::kernels::attention_f16::decode_on;
                    if attention_f16(path, shape, &q, &k, &v, &mut out) {
                        results.push((path, out));
                    }
                }
                let scale = expected.iter().fold(0f32, |m, x| m.max(x.abs()));
                for (path, out) in results {
                    let worst = expected
                        .iter()
                        .zip(&out)
                        .map(|(a, b)| (a - b).abs())
                        .fold(0f32, f32::max);
                    assert!(
                        worst <= 4e-6 * scale,
                        "{path} {shape:?}: off by {worst} (largest value {scale}); first values \
                         {:?} against candle's {:?}",
                        &out[..4],
                        &expected[..4]
                    );
                }
            }
        }
    }
}

/// Checks a vector exponential `exp` (`lanes` values a call) against `f32::exp` on every 37th
/// f32 from −104 to `high` (tens of millions of values): within 2 ulps, except that where
/// `f32::exp` is subnormal a kernel without `subnormals` must give 0; then the edges (±∞, 0,
/// −0, an overflow, NaN).
#[cfg(target_arch = "x86_64")]
fn check_vector_exp(lanes: usize, high: f32, subnormals: bool, exp: impl Fn(&[f32]) -> Vec<f32>) {
    let ulps = |a: f32, b: f32| (a.to_bits() as i64 - b.to_bits() as i64).abs();
    let mut worst = (0, 0f32);
    let negatives = (0x8000_0000..=(-104f32).to_bits()).rev().step_by(37);
    let positives = (0..=high.to_bits()).step_by(37);
    let xs: Vec<f32> = negatives.chain(positives).map(f32::from_bits).collect();
    for chunk in xs.chunks(lanes) {
        let mut x = vec![0f32; lanes];
        x[..chunk.len()].copy_from_slice(chunk);
        for (&x, y) in x.iter().zip(exp(&x)) {
            let want = x.exp();
            if !subnormals && !want.is_normal() {
                assert!(y == 0.0 && want < f32::MIN_POSITIVE, "exp({x}) = {y}");
                continue;
            }
            let e = ulps(y, want);
            if e > worst.0 {
                worst = (e, x);
            }
        }
    }
    assert!(worst.0 <= 2, "{} ulps at x = {}", worst.0, worst.1);
    let mut edges = vec![0f32; lanes];
    edges[..7].copy_from_slice(&[
        f32::NEG_INFINITY,
        -200.0,
        0.0,
        -0.0,
        100.0,
        f32::INFINITY,
        f32::NAN,
    ]);
    let e = exp(&edges);
    assert_eq!(&e[..6], &[0.0, 0.0, 1.0, 1.0, f32::INFINITY, f32::INFINITY]);
    assert!(e[6].is_nan());
}

/// The AVX-512 f16 attention's exponential, 16 lanes at a time (subnormal results kept).
#[cfg(target_arch = "x86_64")]
#[test]
fn exp16_is_within_two_ulps_of_exp() {
    use std::arch::x86_64::*;
    if !is_x86_feature_detected!("avx512f") {
        return;
    }
    check_vector_exp(16, 88.0, true, |x| {
        let mut out = vec![0f32; 16];
        // SAFETY: AVX-512 F was detected above; `x` and `out` hold 16 values.
        unsafe {
            let y = super::attention_f16::exp16(_mm512_loadu_ps(x.as_ptr()));
            _mm512_storeu_ps(out.as_mut_ptr(), y)
        };
        out
    });
}

/// The AVX2 f16 attention's exponential, 8 lanes at a time (0 where only subnormals are lost).
#[cfg(target_arch = "x86_64")]
#[test]
fn exp8_is_within_two_ulps_of_exp() {
    use std::arch::x86_64::*;
    if !(is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma")) {
        return;
    }
    check_vector_exp(8, 88.7, false, |x| {
        let mut out = vec![0f32; 8];
        // SAFETY: AVX2 and FMA were detected above; `x` and `out` hold 8 values.
        unsafe {
            let y = super::attention_f16_avx2::exp8(_mm256_loadu_ps(x.as_ptr()));
            _mm256_storeu_ps(out.as_mut_ptr(), y)
        };
        out
    });
}

mod prompt_attention_tests {
    use candle_core::{Device, Tensor};

    use super::tests_support::{candle_softmax_times, Lcg};
    use crate::kernels::prompt_attention::{prompt, takes, Shape, MIN_SEQ, ONE_BLOCK_KEYS, ROWS};

    /// candle's masked attention, as the model ran it before this kernel: `q` `[kv, group ×
    /// seq, hd]`, `k`/`v` `[kv, total, hd]`, the causal mask broadcast over the group.
    fn candle_masked_attention(s: Shape, q: &[f32], k: &[f32], v: &[f32]) -> Vec<f32> {
        let total = s.start + s.seq;
        let dev = &Device::Cpu;
        let q = Tensor::from_slice(q, (s.kv_heads, s.group * s.seq, s.head_dim), dev).unwrap();
        let k = Tensor::from_slice(k, (s.kv_heads, total, s.head_dim), dev).unwrap();
        let v = Tensor::from_slice(v, (s.kv_heads, total, s.head_dim), dev).unwrap();
        let mask: Vec<f32> = (0..s.seq)
            .flat_map(|i| {
                (0..total).map(move |j| {
                    if j <= s.start + i {
                        0.0
                    } else {
                        f32::NEG_INFINITY
                    }
                })
            })
            .collect();
        let mask = Tensor::from_vec(mask, (s.seq, total), dev).unwrap();
        let scores = q
            .matmul(&k.t().unwrap())
            .unwrap()
            .reshape((s.kv_heads, s.group, s.seq, total))
            .unwrap()
            .broadcast_add(&mask)
            .unwrap()
            .reshape((s.kv_heads, s.group * s.seq, total))
            .unwrap();
        candle_softmax_times(&scores, &v)
    }

    /// Bit for bit candle's masked attention: SmolLM3's and SmolLM2's head shapes, prompts
    /// from position 0 and after cached positions, the shortest prompt it takes, last blocks
    /// of ROWS + 1 to 2 × ROWS − 1 rows, and both sides of `ONE_BLOCK_KEYS` (items that leave
    /// the masked keys out of the weighted sum, and items that read them all).
    #[test]
    fn prompt_attention_gives_candles_bits() {
        let mut rng = Lcg(5);
        let shapes = [
            (4, 4, 128, 70, 0),
            (3, 3, 64, 100, 37),
            (1, 2, 128, ROWS + 1, 0),
            (1, 2, 128, 2 * ROWS - 1, 5),
            (2, 2, 64, 150, ONE_BLOCK_KEYS - 100),
            (1, 1, 64, MIN_SEQ, 0),
            (4, 4, 128, MIN_SEQ + 3, 2),
            (3, 3, 64, 3 * ROWS + 7, 0),
            (1, 4, 128, 40, 1000),
            (3, 3, 64, 20, 600),
            (3, 3, 64, ROWS + 10, 700),
            (4, 4, 128, 2 * ROWS + 5, ONE_BLOCK_KEYS),
        ];
        for (kv_heads, group, head_dim, seq, start) in shapes {
            let s = Shape {
                kv_heads,
                group,
                seq,
                start,
                head_dim,
            };
            assert!(takes(s), "{s:?}");
            let total = start + seq;
            let mut random = |n: usize| -> Vec<f32> { (0..n).map(|_| rng.float()).collect() };
            let q = random(kv_heads * group * seq * head_dim);
            let k = random(kv_heads * total * head_dim);
            let v = random(kv_heads * total * head_dim);
            let want = candle_masked_attention(s, &q, &k, &v);
            let mut got = vec![f32::NAN; q.len()];
            prompt(s, &q, &k, &v, &mut got).unwrap();
            for (i, (got, want)) in got.iter().zip(&want).enumerate() {
                assert_eq!(
                    got.to_bits(),
                    want.to_bits(),
                    "{s:?} at {i}: {got} vs {want}"
                );
            }
        }
    }

    /// The f16 cache's prompt attention (vector exponentials, the causal half of `p·V` at
    /// every context) against candle's masked attention on the same values: within 4e-6 of
    /// the largest output, the f16 decode kernels' bound, on the bits test's shapes (both sides
    /// of `ONE_BLOCK_KEYS`, where the exact kernel reads all keys and this one does not).
    #[test]
    fn rounded_prompt_attention_matches_candle() {
        use crate::kernels::prompt_attention::prompt_rounded;
        let mut rng = Lcg(6);
        for (kv_heads, group, head_dim, seq, start) in [
            (4, 4, 128, 70, 0),
            (3, 3, 64, 3 * ROWS + 7, 0),
            (2, 2, 64, 150, ONE_BLOCK_KEYS - 100),
            (1, 4, 128, 40, 1000),
            (3, 3, 64, ROWS + 10, 700),
            (4, 4, 128, 2 * ROWS + 5, ONE_BLOCK_KEYS),
        ] {
            let s = Shape {
                kv_heads,
                group,
                seq,
                start,
                head_dim,
            };
            let total = start + seq;
            let mut random = |n: usize| -> Vec<f32> { (0..n).map(|_| rng.float()).collect() };
            let q = random(kv_heads * group * seq * head_dim);
            let k = random(kv_heads * total * head_dim);
            let v = random(kv_heads * total * head_dim);
            let want = candle_masked_attention(s, &q, &k, &v);
            let mut got = vec![f32::NAN; q.len()];
            prompt_rounded(s, &q, &k, &v, &mut got).unwrap();
            let scale = want.iter().fold(0f32, |m, x| m.max(x.abs()));
            let worst = got
                .iter()
                .zip(&want)
                .map(|(a, b)| (a - b).abs())
                .fold(0f32, f32::max);
            assert!(
                worst <= 4e-6 * scale,
                "{s:?}: off by {worst} (largest value {scale})"
            );
        }
    }

    /// The shapes left to candle's ops: too short, and SmolLM2's short follow-up prompt on a
    /// long context (gemm's small-matrix path here, its tiled path in candle's call).
    #[test]
    fn short_prompts_and_small_sums_go_to_candle() {
        let s = Shape {
            kv_heads: 3,
            group: 3,
            seq: MIN_SEQ - 1,
            start: 0,
            head_dim: 64,
        };
        assert!(!takes(s));
        assert!(takes(Shape { seq: MIN_SEQ, ..s }));
        assert!(!takes(Shape {
            seq: 30,
            start: 600,
            ..s
        }));
        assert!(takes(Shape {
            seq: 30,
            start: 600,
            head_dim: 128,
            ..s
        }));
    }

    #[test]
    fn prompt_attention_refuses_slices_that_do_not_fit() {
        let s = Shape {
            kv_heads: 1,
            group: 1,
            seq: 2,
            start: 1,
            head_dim: 4,
        };
        let (q, kv) = (vec![0f32; 8], vec![0f32; 12]);
        let mut out = vec![0f32; 8];
        assert!(prompt(s, &q, &kv, &kv, &mut out).is_ok());
        assert!(prompt(s, &q, &kv[..8], &kv, &mut out).is_err());
        assert!(prompt(s, &q[..4], &kv, &kv, &mut out).is_err());
        assert!(prompt(Shape { seq: 0, ..s }, &[], &kv, &kv, &mut []).is_err());
    }
}

mod elementwise_tests {
    use candle_core::{Device, Tensor};

    use super::tests_support::Lcg;
    use crate::kernels::elementwise::silu_times;

    /// Candle's `silu(gate) * up` bit for bit, over lengths that leave a partial work item and
    /// values where `exp` overflows, underflows, or meets a NaN or an infinity.
    #[test]
    fn silu_times_gives_candles_bits() {
        let mut rng = Lcg(41);
        let specials = [
            0.0,
            -0.0,
            1e-40,
            -1e-40,
            88.8,
            -88.8,
            -104.0,
            1e30,
            -1e30,
            f32::INFINITY,
            f32::NEG_INFINITY,
            f32::NAN,
        ];
        for len in [1, 11_008, 3 * 16 * 1024 + 5] {
            let mut gate: Vec<f32> = (0..len).map(|_| rng.float() * 20.0).collect();
            let up: Vec<f32> = (0..len).map(|_| rng.float() * 4.0).collect();
            for (g, &s) in gate.iter_mut().zip(&specials) {
                *g = s;
            }
            let got = silu_times(&gate, &up).unwrap();
            let g = Tensor::from_vec(gate.clone(), len, &Device::Cpu).unwrap();
            let u = Tensor::from_vec(up.clone(), len, &Device::Cpu).unwrap();
            let want = (candle_nn::ops::silu(&g).unwrap() * u)
                .unwrap()
                .to_vec1::<f32>()
                .unwrap();
            assert_eq!(got.len(), len);
            for (i, (a, b)) in got.iter().zip(&want).enumerate() {
                assert_eq!(a.to_bits(), b.to_bits(), "{i} of {len}: {a} vs candle {b}");
            }
        }
    }

    #[test]
    fn silu_times_refuses_slices_of_different_lengths() {
        let err = silu_times(&[1.0, 2.0], &[1.0]).unwrap_err().to_string();
        assert!(err.contains("2 gate values against 1 up values"), "{err}");
    }
}

mod q8_0_tests {
    use super::tests_support::Lcg;
    use crate::kernels::q8_0::{self, BlockQ8_0};
    use candle_core::quantized::k_quants;

    fn random_block(rng: &mut Lcg) -> BlockQ8_0 {
        let mut block = BlockQ8_0::ZERO;
        block.d = half::f16::from_f32(rng.float() / 64.0 + 1e-3);
        for q in block.qs.iter_mut() {
            // Every code, -128 included (`sign` leaves it negative: candle's case too).
            *q = rng.next() as u8 as i8;
        }
        block
    }

    /// Against candle's matmul: the same bits for 1 to 17 rows (groups of `MAX_ROWS`), on
    /// shapes with one block a row and several; a wrong length is an error, not a panic.
    #[test]
    fn q8_0_row_products_agree_with_candles() {
        const _: () =
            assert!(std::mem::size_of::<BlockQ8_0>() == std::mem::size_of::<k_quants::BlockQ8_0>());
        let mut rng = Lcg(81);
        for (m, k, n) in [
            (1, 32, 3),
            (2, 96, 5),
            (3, 576, 7),
            (8, 64, 4),
            (9, 128, 6),
            (17, 32, 2),
        ] {
            let lhs: Vec<f32> = (0..m * k).map(|_| rng.float() * 2.0).collect();
            let w: Vec<BlockQ8_0> = (0..n * k / 32).map(|_| random_block(&mut rng)).collect();
            // SAFETY: the same repr(C) layout as candle's block (sizes asserted above).
            let theirs_w = unsafe {
                std::slice::from_raw_parts(w.as_ptr() as *const k_quants::BlockQ8_0, w.len())
            };
            let mut theirs = vec![0f32; m * n];
            k_quants::matmul((m, k, n), &lhs, theirs_w, &mut theirs).unwrap();
            let mut ours = vec![0f32; m * n];
            let Some(done) = q8_0::matmul((m, k, n), &lhs, &w, &mut ours) else {
                // The portable path, or no AVX2/FMA/F16C: the caller uses candle's kernel.
                assert!(crate::kernels::path().rows.is_none());
                continue;
            };
            done.unwrap();
            for (i, (a, b)) in ours.iter().zip(&theirs).enumerate() {
                assert_eq!(
                    a.to_bits(),
                    b.to_bits(),
                    "({m}, {k}, {n}) [row {}, column {}]: ours {a} candle {b}",
                    i / n,
                    i % n
                );
            }
            let wrong = q8_0::matmul((m, k + 32, n), &lhs, &w, &mut ours).unwrap();
            assert!(wrong.unwrap_err().to_string().contains("q8_0 matmul"));
        }
    }
}
