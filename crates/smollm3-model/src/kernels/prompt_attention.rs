//! Prompt (prefill) attention on the pool: blocks of query rows, each against only the keys
//! its rows may see, with candle's bits ([`prompt`], the f32 cache) or, for the keys and
//! values an f16 cache rounded, with vector exponentials ([`prompt_rounded`]).
//!
//! Why: candle computes a prompt's attention as two batched `matmul`s over every (query, key)
//! pair and then hides the future with a mask, so half of the multiply-adds are thrown away,
//! and its `matmul`s run on rayon's threads while our pool's worker waits. On the 3B file
//! that was 6.5% of a 512-token prefill (Zen 4, 2 threads, `perf`) and grows with the square
//! of the prompt: at 4,000 tokens attention is as much work as a third of the weights.
//!
//! Here a work item is one KV head, one query head of its group and [`ROWS`] query rows; the
//! items are spread over our pool. An item's scores cover keys `0..start + last row + 1`
//! (the causal triangle, block by block), and its weighted sum of values reads only those.
//!
//! The same bits as candle's masked `attend` (the tests compare them bit for bit): each score
//! comes from the same `gemm` call as candle's for one batch item (gemm sums a score over the
//! head dimension alone, whatever the rows and columns it is given); the softmax runs over the
//! whole row, masked positions at zero, so its vectorized sum adds the same terms in the same
//! lanes; and a masked position's probability is exactly zero, so leaving it out of the
//! weighted sum of values changes nothing as long as gemm sums candle's keys in one block,
//! which it does up to [`ONE_BLOCK_KEYS`] keys of context. Past that, gemm splits the sum
//! into blocks whose sizes depend on the length, so longer contexts read all keys in every
//! item (still on our pool, still the causal half of the scores).

use super::attention::{candle_gemm_strided, softmax_prefix};

/// Query rows per work item (the last item of a head takes up to twice as many): 96 rows ×
/// 512 keys of scores is 192 KB, within L2, and a 512-token prompt of the 3B model gives
/// 4 × 4 × 5 = 80 items for 2 threads. More than 64, so that the weighted sum of values never
/// takes gemm's path for small matrices (at most 64 × 64) where candle's call does not: that
/// path cuts long sums into other blocks.
pub const ROWS: usize = 96;

/// Prompts shorter than this go to candle's ops: with fewer rows than 17 an item's scores can
/// be small enough (rows × keys ≤ 256) for gemm's horizontal kernel, whose order differs from
/// the tiled one candle's larger call takes.
pub const MIN_SEQ: usize = 17;

/// Whether [`prompt`] gives candle's bits for this shape, so the model may call it instead of
/// candle's ops: at least [`MIN_SEQ`] rows, and not the one case where gemm would cut the
/// weighted sum of values into other blocks than for candle's call (a head dimension of at
/// most 64, a context over [`ONE_BLOCK_KEYS`], and a prompt of at most 64 rows that candle
/// stacks into more than 64 with the rest of the group).
pub fn takes(s: Shape) -> bool {
    let small_here = s.seq <= 64 && s.head_dim <= 64;
    let small_in_candle = s.group * s.seq <= 64 && s.head_dim <= 64;
    s.seq >= MIN_SEQ && (s.start + s.seq <= ONE_BLOCK_KEYS || small_here == small_in_candle)
}

/// Context lengths (cached plus new positions) up to which gemm takes candle's weighted sum of
/// values in one block, so an item may leave out its trailing zero probabilities and keep the
/// bits. Past it gemm splits the sum into blocks whose sizes depend on the length (562 keys
/// went as two of 281), so every item reads all keys. The tests check both sides.
pub const ONE_BLOCK_KEYS: usize = 512;

/// The shapes of one layer's prompt attention.
#[derive(Clone, Copy, Debug)]
pub struct Shape {
    pub kv_heads: usize,
    /// Query heads per KV head.
    pub group: usize,
    /// The prompt's tokens in this pass.
    pub seq: usize,
    /// Positions cached before them.
    pub start: usize,
    pub head_dim: usize,
}

/// `out` = softmax(`q` · `k`ᵀ + causal mask) · `v` per KV head: `q` `[kv_heads, group × seq,
/// head_dim]` (already scaled by 1/√head_dim, query heads of a group stacked along the rows),
/// `k` and `v` `[kv_heads, start + seq, head_dim]`, `out` shaped as `q`. Query row `i` of a
/// head sees keys `0..=start + i`. Candle's bits where [`takes`] says so (other shapes meet
/// other gemm paths than candle's call; the model gives them to candle's ops).
pub fn prompt(s: Shape, q: &[f32], k: &[f32], v: &[f32], out: &mut [f32]) -> crate::Result<()> {
    prompt_with(s, q, k, v, out, true)
}

/// [`prompt`] for keys and values an f16 cache rounded (the model's default): no candle bits
/// to keep there, so the exponentials are 16 (AVX-512) or 8 (AVX2) at a time and the weighted
/// sum of values reads only the keys a block may see at every context length (at 4000
/// positions, candle's blocks made every item read all of them: twice the work on average).
/// Within a few f32 roundings of candle's ops (tested).
pub fn prompt_rounded(
    s: Shape,
    q: &[f32],
    k: &[f32],
    v: &[f32],
    out: &mut [f32],
) -> crate::Result<()> {
    prompt_with(s, q, k, v, out, false)
}

fn prompt_with(
    s: Shape,
    q: &[f32],
    k: &[f32],
    v: &[f32],
    out: &mut [f32],
    candle_bits: bool,
) -> crate::Result<()> {
    let total = s.start + s.seq;
    let hd = s.head_dim;
    if s.seq == 0
        || hd == 0
        || q.len() != s.kv_heads * s.group * s.seq * hd
        || out.len() != q.len()
        || k.len() != s.kv_heads * total * hd
        || v.len() != k.len()
    {
        return Err(candle_core::Error::Msg(format!(
            "prompt attention: {s:?} does not fit q {}, k {}, v {}, out {}",
            q.len(),
            k.len(),
            v.len(),
            out.len()
        ))
        .into());
    }
    // Whole blocks of ROWS rows, the last taking the rest (up to 2 × ROWS − 1 rows): a block
    // of one row would go down gemm's matrix-vector path, one of a few rows its horizontal
    // kernel, each with another order than candle's call.
    let blocks = (s.seq / ROWS).max(1);
    let items = s.kv_heads * s.group * blocks;
    let out_address = out.as_mut_ptr() as usize;
    super::pool().execute_chunked(items, |range| {
        let mut scores = vec![0f32; (2 * ROWS - 1).min(s.seq) * total];
        for item in range {
            let (head, rest) = (item / (s.group * blocks), item % (s.group * blocks));
            let (member, block) = (rest / blocks, rest % blocks);
            let first = block * ROWS;
            let rows = if block + 1 == blocks {
                s.seq - first
            } else {
                ROWS
            };
            // The block's last row sees this many keys. The weighted sum of values reads only
            // those where candle's own call sums all keys in one block (or there are no
            // candle bits to keep), else all of them.
            let seen = s.start + first + rows;
            let summed = if total <= ONE_BLOCK_KEYS || !candle_bits {
                seen
            } else {
                total
            };
            let q_at = ((head * s.group + member) * s.seq + first) * hd;
            let kv = head * total * hd..(head + 1) * total * hd;
            let (k, v) = (&k[kv.clone()], &v[kv]);
            let scores = &mut scores[..rows * total];
            // SAFETY: q holds `rows × hd` values from `q_at` (the shape was checked above), k
            // `seen × hd`, and `scores` `rows` rows of `total ≥ seen` values.
            unsafe {
                candle_gemm_strided(
                    (rows, seen, hd),
                    (scores, total),
                    (&q[q_at..q_at + rows * hd], hd),
                    (k, hd, 1),
                )
            };
            for (r, row) in scores.chunks_exact_mut(total).enumerate() {
                let kept = s.start + first + r + 1;
                if candle_bits {
                    softmax_prefix(row, kept);
                } else {
                    super::attention_f16::softmax_prefix_fast(&mut row[..summed], kept);
                }
            }
            // SAFETY: each item writes its own `rows × hd` output values (items split the
            // heads and rows), inside `out` (checked above).
            let out = unsafe {
                std::slice::from_raw_parts_mut((out_address as *mut f32).add(q_at), rows * hd)
            };
            // SAFETY: probabilities `rows × summed` with row stride `total`, values
            // `summed × hd`, out `rows × hd`.
            unsafe {
                candle_gemm_strided((rows, hd, summed), (out, hd), (scores, total), (v, 1, hd))
            };
        }
    });
    Ok(())
}
