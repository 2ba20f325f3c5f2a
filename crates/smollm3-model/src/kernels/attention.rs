//! Attention of one new token over the cache, in one pass per query head, heads split over
//! the thread pool.
//!
//! Why: a decode step's attention ran as two candle matmuls over a strided view of the cache
//! plus a softmax, all on the calling thread while the pool's other threads spun: about 13% of
//! the main thread's time at 640 tokens on the 3B model (docs/performance.md), growing with the
//! context (the f32 cache is 94 MB per token at 640 positions, 600 MB at 4096). Here each of
//! the 16 query heads reads its KV head's keys once (scores), takes the softmax and reads the
//! values once (weighted sum), and the heads run on every thread of the pool.
//!
//! The arithmetic is candle's: the query is scaled by `1 / √head_dim` first, the softmax
//! subtracts the maximum, exponentiates and divides by the sum, and the output is `Σ p × v`;
//! only the order of the additions inside each dot product differs (eight lanes), within f32
//! rounding (the parity tests' tolerances, and a test here against an f64 reference).

/// The shapes of one layer's attention for a single new token.
#[derive(Debug, Clone, Copy)]
pub struct Shape {
    pub heads: usize,
    pub kv_heads: usize,
    pub head_dim: usize,
    /// Rows allocated per KV head in the cache (`k` and `v` are `[kv_heads, capacity,
    /// head_dim]`).
    pub capacity: usize,
    /// Positions to attend to: the cached ones and the new token's (already written).
    pub len: usize,
}

/// `out[h × head_dim ..]` = attention of query head `h` (`q` is `[heads × head_dim]`, before
/// scaling) over the first `len` keys and values of its KV head. Shapes that do not fit the
/// slices are an error naming them.
pub fn one_token(
    shape: Shape,
    q: &[f32],
    k: &[f32],
    v: &[f32],
    out: &mut [f32],
) -> Result<(), String> {
    let Shape {
        heads,
        kv_heads,
        head_dim,
        capacity,
        len,
    } = shape;
    let cache = kv_heads * capacity * head_dim;
    if kv_heads == 0
        || heads % kv_heads != 0
        || len == 0
        || len > capacity
        || q.len() != heads * head_dim
        || out.len() != heads * head_dim
        || k.len() < cache
        || v.len() < cache
    {
        return Err(format!(
            "one-token attention: {shape:?} does not fit q {}, k {}, v {}, out {}",
            q.len(),
            k.len(),
            v.len(),
            out.len()
        ));
    }
    let group = heads / kv_heads;
    // As candle's `q * (1 / √d)`: an f64 factor applied in f32.
    let scale = (1.0 / (head_dim as f64).sqrt()) as f32;
    let avx2 = super::path().name != "portable";
    let out_address = out.as_mut_ptr() as usize;
    super::pool().execute_chunked(heads, |range| {
        let mut scores = vec![0f32; len];
        for h in range {
            let base = (h / group) * capacity * head_dim;
            let keys = &k[base..base + len * head_dim];
            let values = &v[base..base + len * head_dim];
            let query: Vec<f32> = q[h * head_dim..(h + 1) * head_dim]
                .iter()
                .map(|&x| x * scale)
                .collect();
            // SAFETY: `out` holds `heads × head_dim` values (checked above) and each head's
            // slice is written by exactly one work item.
            let dst = unsafe {
                std::slice::from_raw_parts_mut(
                    (out_address as *mut f32).add(h * head_dim),
                    head_dim,
                )
            };
            #[cfg(target_arch = "x86_64")]
            if avx2 {
                // SAFETY: a path other than the portable one is chosen only on CPUs with AVX2
                // and FMA (`kernels::available_paths`).
                unsafe { head_avx2(&query, keys, values, &mut scores, dst) };
                continue;
            }
            let _ = avx2;
            head(&query, keys, values, &mut scores, dst);
        }
    });
    Ok(())
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn head_avx2(q: &[f32], k: &[f32], v: &[f32], scores: &mut [f32], out: &mut [f32]) {
    head(q, k, v, scores, out)
}

/// One head: scores, softmax, weighted sum. Inlined into the AVX2 copy so the compiler
/// vectorizes it there with 256-bit registers and fused multiply-adds.
#[inline(always)]
fn head(q: &[f32], k: &[f32], v: &[f32], scores: &mut [f32], out: &mut [f32]) {
    let d = q.len();
    let mut max = f32::NEG_INFINITY;
    for (score, key) in scores.iter_mut().zip(k.chunks_exact(d)) {
        *score = dot(q, key);
        max = max.max(*score);
    }
    let mut sum = 0f32;
    for score in scores.iter_mut() {
        *score = (*score - max).exp();
        sum += *score;
    }
    out.fill(0.0);
    for (&score, value) in scores.iter().zip(v.chunks_exact(d)) {
        let p = score / sum;
        for (o, &x) in out.iter_mut().zip(value) {
            *o += p * x;
        }
    }
}

/// Eight independent partial sums, so the compiler can keep them in one vector register.
#[inline(always)]
fn dot(a: &[f32], b: &[f32]) -> f32 {
    let mut lanes = [0f32; 8];
    let (a8, b8) = (a.chunks_exact(8), b.chunks_exact(8));
    let (a_rest, b_rest) = (a8.remainder(), b8.remainder());
    for (x, y) in a8.zip(b8) {
        for i in 0..8 {
            lanes[i] += x[i] * y[i];
        }
    }
    let mut sum = ((lanes[0] + lanes[4]) + (lanes[1] + lanes[5]))
        + ((lanes[2] + lanes[6]) + (lanes[3] + lanes[7]));
    for (x, y) in a_rest.iter().zip(b_rest) {
        sum += x * y;
    }
    sum
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_an_f64_reference_with_grouped_heads() {
        let mut state = 5u64;
        let mut next = || {
            state = state
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ((state >> 33) as f32 / (1u64 << 31) as f32) * 2.0 - 1.0
        };
        let shape = Shape {
            heads: 6,
            kv_heads: 2,
            head_dim: 20,
            capacity: 40,
            len: 33,
        };
        let cache = shape.kv_heads * shape.capacity * shape.head_dim;
        let q: Vec<f32> = (0..shape.heads * shape.head_dim)
            .map(|_| 3.0 * next())
            .collect();
        let k: Vec<f32> = (0..cache).map(|_| next()).collect();
        let v: Vec<f32> = (0..cache).map(|_| next()).collect();
        let mut out = vec![0f32; q.len()];
        one_token(shape, &q, &k, &v, &mut out).unwrap();
        let d = shape.head_dim;
        for h in 0..shape.heads {
            let base = (h / 3) * shape.capacity * d;
            let scores: Vec<f64> = (0..shape.len)
                .map(|j| {
                    (0..d)
                        .map(|i| f64::from(q[h * d + i]) * f64::from(k[base + j * d + i]))
                        .sum::<f64>()
                        / (d as f64).sqrt()
                })
                .collect();
            let max = scores.iter().cloned().fold(f64::MIN, f64::max);
            let e: Vec<f64> = scores.iter().map(|s| (s - max).exp()).collect();
            let sum: f64 = e.iter().sum();
            for i in 0..d {
                let want: f64 = (0..shape.len)
                    .map(|j| e[j] / sum * f64::from(v[base + j * d + i]))
                    .sum();
                let got = f64::from(out[h * d + i]);
                assert!((got - want).abs() < 1e-5, "head {h} [{i}]: {got} vs {want}");
            }
        }
        // Shapes that do not fit the slices are an error, not a read out of bounds.
        let too_long = Shape { len: 41, ..shape };
        assert!(one_token(too_long, &q, &k, &v, &mut out).is_err());
        let short_cache = Shape {
            capacity: 60,
            ..shape
        };
        assert!(one_token(short_cache, &q, &k, &v, &mut out).is_err());
    }
}
