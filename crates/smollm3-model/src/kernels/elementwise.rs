//! The feed-forward block's `silu(gate) × up` in one pass on our pool.
//!
//! Why: candle runs `silu` as a unary op, on one thread, into a new tensor, then multiplies
//! by `up` in a second pass (parallel) into a third. At a 512-token prompt of SmolLM3-3B that
//! is 5.6 million `expf` a layer on one core while the other waits, 203 million a prompt
//! (`__expf_fma` was 2% of a 3B prefill's samples, with the second core idle beside it).
//! Here each value is computed once, on every thread, with candle's own arithmetic
//! (`v / (1 + exp(−v))` in f32, the same `expf`, then the product): the same bits. 3B
//! prefill @512 was 15–20% faster in interleaved pairs (Intel Xeon, 2 threads): the single
//! thread cost the wall far more than its share of the samples said.

/// Values per work item: big enough that a one-token step (11,008 values) stays one item on
/// the calling thread, small enough to split a prompt's millions evenly.
const CHUNK: usize = 16 * 1024;

/// candle's `silu` of one value (`candle_core::op::Silu::f32`).
#[inline]
fn silu(v: f32) -> f32 {
    v / (1.0 + (-v).exp())
}

/// `silu(gate[i]) × up[i]` for every `i`, with candle's bits (its `silu` op, then its `mul`).
/// Slices of different lengths are an error naming both.
pub fn silu_times(gate: &[f32], up: &[f32]) -> crate::Result<Vec<f32>> {
    if gate.len() != up.len() {
        return Err(candle_core::Error::Msg(format!(
            "silu × up: {} gate values against {} up values",
            gate.len(),
            up.len()
        ))
        .into());
    }
    let len = gate.len();
    let mut out: Vec<f32> = Vec::with_capacity(len);
    let spare = out.spare_capacity_mut();
    let address = spare.as_mut_ptr() as usize;
    super::pool().execute_chunked(len.div_ceil(CHUNK), |items| {
        let (start, end) = (items.start * CHUNK, (items.end * CHUNK).min(len));
        // SAFETY: `spare` holds `len` values and each range of them is written by one item.
        let dst = unsafe {
            std::slice::from_raw_parts_mut(
                (address as *mut std::mem::MaybeUninit<f32>).add(start),
                end - start,
            )
        };
        for ((d, &g), &u) in dst.iter_mut().zip(&gate[start..end]).zip(&up[start..end]) {
            d.write(silu(g) * u);
        }
    });
    // SAFETY: the pool returns once every item is done, and the items cover `0..len`.
    unsafe { out.set_len(len) };
    Ok(out)
}
