//! Token sampling: turns one row of logits into the next token id.
//!
//! The steps run in the order of llama.cpp's default sampler chain (`common/sampling.cpp`:
//! penalties, top-k, top-p, min-p, then the draw), except that the temperature scales the logits
//! before top-p and min-p rather than last, as in Hugging Face transformers and vLLM, whose
//! behaviour SmolLM3's recommended settings (temperature 0.6, top-p 0.95) were chosen with:
//!
//! 1. penalties over the last `repeat_last_n` accepted tokens (each distinct token once):
//!    repetition (`logit > 0 ? logit / penalty : logit * penalty`), then
//!    `logit -= count * frequency_penalty + presence_penalty`;
//! 2. temperature 0: the argmax (ties go to the lowest id), nothing else runs;
//! 3. top-k, softmax with the temperature, top-p (the smallest set of most likely tokens whose
//!    probability reaches `top_p`), min-p (drop tokens below `min_p` times the best one),
//!    renormalisation and one draw from a seeded ChaCha8 generator.
//!
//! We deliberately do not use candle-transformers' `LogitsProcessor`: its top-p argsorts the whole
//! vocabulary for every token (128k entries for SmolLM3) and it has neither min-p nor penalties.
//! Here nothing sorts the vocabulary: the row gets one max pass and, without top-k, one
//! branch-free (vectorised) exp pass; top-k is a streaming selection, top-p a weighted
//! quickselect over the tokens above a probability floor, and only the small surviving set is
//! ever sorted. The scratch buffers live in the [`Sampler`] and are reused from token to token.
//! On a 128k-entry row a call takes tens to a few hundred microseconds (see
//! `benches/sampling.rs`).
//!
//! Logits that are NaN or infinite are never candidates; a row with no finite logit, or an empty
//! row, is an [`GenError::InvalidSampling`] error, never a panic.

use std::cmp::Ordering;
use std::collections::VecDeque;
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering as AtomicOrdering};
use std::time::{SystemTime, UNIX_EPOCH};

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::{GenError, Result};

pub use crate::params::SamplingParams;

/// A candidate token: `w` holds its logit during top-k, then its unnormalised probability.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Cand {
    w: f32,
    id: u32,
}

/// Most likely first; equal values by lowest id, so every selection is deterministic.
/// (Candidates are finite and not NaN, so this is a total order; -0 and +0 tie.)
fn by_rank(a: &Cand, b: &Cand) -> Ordering {
    b.w.partial_cmp(&a.w)
        .unwrap_or(Ordering::Equal)
        .then(a.id.cmp(&b.id))
}

/// Probability floors (relative to the best token) tried in turn to find a candidate set that
/// holds the top-p nucleus; the last one takes every token with a non-zero probability.
const TOP_P_FLOORS: [f32; 4] = [1e-4, 1e-8, 1e-16, 0.0];

/// Below this size the nucleus search just sorts.
const SMALL_SORT: usize = 64;

/// Samples one token at a time.
///
/// Holds the settings, the seeded generator, the recent tokens for the penalties and scratch
/// buffers that are reused from call to call. Use one per generation.
pub struct Sampler {
    params: SamplingParams,
    seed: u64,
    rng: ChaCha8Rng,
    /// The last `repeat_last_n` accepted tokens, oldest first.
    recent: VecDeque<u32>,
    /// Scratch: `recent`, sorted, to count repeats.
    sorted_recent: Vec<u32>,
    /// Scratch: one unnormalised probability per vocabulary entry.
    weights: Vec<f32>,
    /// Scratch: the candidates that survive top-k / the probability floor.
    cands: Vec<Cand>,
}

impl fmt::Debug for Sampler {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Sampler")
            .field("params", &self.params)
            .field("seed", &self.seed)
            .field("recent", &self.recent)
            .finish_non_exhaustive()
    }
}

impl Sampler {
    /// Validates `params` and seeds the generator from `params.seed`, or, when it is `None`,
    /// from the system time and a process-wide counter (see [`Sampler::seed`]).
    pub fn new(params: &SamplingParams) -> Result<Self> {
        params.validate()?;
        let seed = params.seed.unwrap_or_else(fresh_seed);
        Ok(Sampler {
            params: params.clone(),
            seed,
            rng: ChaCha8Rng::seed_from_u64(seed),
            recent: VecDeque::with_capacity(params.repeat_last_n.min(4096)),
            sorted_recent: Vec::new(),
            weights: Vec::new(),
            cands: Vec::new(),
        })
    }

    /// The seed in use: passing it back as `SamplingParams::seed`, with the same settings and the
    /// same logits, reproduces the same tokens.
    pub fn seed(&self) -> u64 {
        self.seed
    }

    /// Picks the next token from `logits` (modified in place).
    ///
    /// The penalties are applied to `logits` themselves; everything after works on scratch
    /// buffers. Greedy sampling draws no random number; any other setting draws exactly one.
    /// Errors: an empty row, a row with no finite logit, or more than `u32::MAX` entries.
    pub fn sample(&mut self, logits: &mut [f32]) -> Result<u32> {
        if logits.is_empty() {
            return Err(GenError::InvalidSampling(
                "cannot sample from an empty logits row".into(),
            ));
        }
        u32::try_from(logits.len()).map_err(|_| {
            GenError::InvalidSampling(format!(
                "logits row has {} entries, more than token ids can address",
                logits.len()
            ))
        })?;
        self.apply_penalties(logits);

        // The best finite logit; greedy takes the lowest id that has it.
        let max = finite_max(logits);
        if max == f32::NEG_INFINITY {
            return Err(GenError::InvalidSampling(
                "no finite logit to sample from (all are NaN or infinite)".into(),
            ));
        }
        let inv_t = 1.0 / self.params.temperature;
        // Temperature 0 is greedy; so is one so small that 1/T overflows.
        if self.params.temperature == 0.0 || !inv_t.is_finite() {
            return first_equal(logits, max).ok_or_else(no_candidate);
        }
        let top_p = self.params.top_p;
        let min_p = self.params.min_p;
        let top_k = self.params.top_k;

        if top_k > 0 && top_k < logits.len() {
            // Small candidate set: the k best finite logits (fewer if there are not k of them),
            // turned into weights in place.
            collect_top_k(&mut self.cands, logits, top_k);
            for c in self.cands.iter_mut() {
                c.w = exp_nonpositive((c.w - max) * inv_t);
            }
            let z = sum_cands(&self.cands);
            if min_p > 0.0 {
                // The best token has weight e^0 = 1, so min-p is a plain threshold.
                self.cands.retain(|c| c.w >= min_p);
            }
            if top_p < 1.0 {
                let kept = nucleus(&mut self.cands, f64::from(top_p) * z);
                self.cands.truncate(kept);
            }
        } else {
            // Every finite logit is a candidate: one exp per entry into the scratch buffer.
            self.weights.resize(logits.len(), 0.0);
            for (w, &l) in self.weights.iter_mut().zip(logits.iter()) {
                let e = exp_nonpositive((l - max) * inv_t);
                *w = if l.is_finite() { e } else { 0.0 };
            }
            let z = sum_f32(&self.weights);
            if top_p >= 1.0 && min_p <= 0.0 {
                return draw_weights(&mut self.rng, &self.weights, z).ok_or_else(no_candidate);
            }
            let target = (top_p < 1.0).then(|| f64::from(top_p) * z);
            // Top-p and min-p each keep a prefix of the tokens ranked by probability, so the
            // kept set is the shorter prefix, whatever the order they are applied in. Gather the
            // tokens above a floor (at least `min_p`): if they hold the top-p mass, the nucleus
            // is among them; otherwise lower the floor.
            for floor in TOP_P_FLOORS {
                let cut = if target.is_some() {
                    floor.max(min_p)
                } else {
                    min_p
                };
                collect_at_least(&mut self.cands, &self.weights, cut);
                if cut <= min_p || target.is_none_or(|t| sum_cands(&self.cands) >= t) {
                    break;
                }
            }
            if let Some(target) = target {
                let kept = nucleus(&mut self.cands, target);
                self.cands.truncate(kept);
            }
        }
        let total = sum_cands(&self.cands);
        draw_cands(&mut self.rng, &self.cands, total).ok_or_else(no_candidate)
    }

    /// Records a token that became part of the output (sampled or forced), for the penalties.
    ///
    /// Only the last `repeat_last_n` accepted tokens count; with `repeat_last_n` 0 nothing is
    /// recorded.
    pub fn accept(&mut self, token: u32) {
        let window = self.params.repeat_last_n;
        if window == 0 {
            return;
        }
        while self.recent.len() >= window {
            self.recent.pop_front();
        }
        self.recent.push_back(token);
    }

    /// Applies the repetition, frequency and presence penalties to `logits`, once per distinct
    /// recent token (tokens outside the row are ignored).
    fn apply_penalties(&mut self, logits: &mut [f32]) {
        let p = &self.params;
        if self.recent.is_empty() || !p.has_penalties() {
            return;
        }
        self.sorted_recent.clear();
        self.sorted_recent.extend(self.recent.iter().copied());
        self.sorted_recent.sort_unstable();
        for run in self.sorted_recent.chunk_by(|a, b| a == b) {
            let Some(&token) = run.first() else { continue };
            let Some(logit) = usize::try_from(token).ok().and_then(|i| logits.get_mut(i)) else {
                continue;
            };
            if *logit > 0.0 {
                *logit /= p.repeat_penalty;
            } else {
                *logit *= p.repeat_penalty;
            }
            // As llama.cpp: count * frequency + presence, subtracted in one step.
            let count = run.len() as f32;
            *logit -= count * p.frequency_penalty + p.presence_penalty;
        }
    }
}

fn no_candidate() -> GenError {
    GenError::InvalidSampling("no candidate token with a non-zero probability".into())
}

/// A seed that differs between calls and between runs: the system time, the process id and a
/// process-wide counter, mixed.
fn fresh_seed() -> u64 {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let count = COUNTER.fetch_add(1, AtomicOrdering::Relaxed);
    let time = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs().wrapping_mul(1_000_000_000) ^ u64::from(d.subsec_nanos()))
        .unwrap_or(0);
    splitmix64(splitmix64(time ^ u64::from(std::process::id()).rotate_left(32)) ^ count)
}

fn splitmix64(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// Entries per block in the loops below that skip blocks without a candidate.
const BLOCK: usize = 16;

/// Lanes of the vectorisable reductions.
const LANES: usize = 16;

/// A token id from a row index. `sample` has checked that the row length fits in a `u32`, so
/// the fallback is unreachable; it only avoids a silent truncation or a panic.
fn token_id(index: usize) -> u32 {
    u32::try_from(index).unwrap_or(u32::MAX)
}

/// The largest finite value of `xs`, or negative infinity if there is none, in one pass of
/// per-lane maxima (so that it vectorises).
fn finite_max(xs: &[f32]) -> f32 {
    let mut lanes = [f32::NEG_INFINITY; LANES];
    let mut chunks = xs.chunks_exact(LANES);
    for chunk in &mut chunks {
        for (m, &x) in lanes.iter_mut().zip(chunk) {
            *m = if x.is_finite() && x > *m { x } else { *m };
        }
    }
    lanes
        .iter()
        .chain(chunks.remainder())
        .fold(f32::NEG_INFINITY, |m, &x| {
            if x.is_finite() && x > m {
                x
            } else {
                m
            }
        })
}

/// The lowest id whose value equals `target`.
fn first_equal(xs: &[f32], target: f32) -> Option<u32> {
    for (b, block) in xs.chunks(BLOCK).enumerate() {
        if block.iter().fold(false, |hit, &x| hit | (x == target)) {
            let j = block.iter().position(|&x| x == target)?;
            return Some(token_id(b * BLOCK + j));
        }
    }
    None
}

/// Whether any value of a block is at least `cut` (NaN is not); an or-reduction that vectorises.
fn any_at_least(block: &[f32], cut: f32) -> bool {
    block.iter().fold(false, |hit, &x| hit | (x >= cut))
}

/// Whether any value of a block is above `threshold` (NaN is not).
fn any_above(block: &[f32], threshold: f32) -> bool {
    block.iter().fold(false, |hit, &x| hit | (x > threshold))
}

/// Fills `cands` with the entries of `weights` that are at least `cut` and above 0.
fn collect_at_least(cands: &mut Vec<Cand>, weights: &[f32], cut: f32) {
    cands.clear();
    let mut buf = [Cand { w: 0.0, id: 0 }; BLOCK];
    for (b, block) in weights.chunks(BLOCK).enumerate() {
        if !any_at_least(block, cut) {
            continue;
        }
        // Branch-free compaction: write every entry, advance only past the kept ones.
        let mut kept = 0;
        for (j, &w) in block.iter().enumerate() {
            if let Some(slot) = buf.get_mut(kept) {
                *slot = Cand {
                    w,
                    id: token_id(b * BLOCK + j),
                };
            }
            kept += usize::from(w >= cut && w > 0.0);
        }
        cands.extend_from_slice(buf.get(..kept).unwrap_or_default());
    }
}

/// Fills `cands` with the `k` best finite logits (ranked by [`by_rank`]), in no particular order,
/// in one pass: a buffer of up to about 2k entries is cut back to k whenever it fills, and only
/// logits above the current k-th best enter it (blocks without one are skipped with a
/// vectorised test). Requires `k > 0`.
fn collect_top_k(cands: &mut Vec<Cand>, logits: &[f32], k: usize) {
    cands.clear();
    let cap = k.saturating_mul(2).max(k.saturating_add(256));
    let mut threshold = f32::NEG_INFINITY;
    for (b, block) in logits.chunks(BLOCK).enumerate() {
        if !any_above(block, threshold) {
            continue;
        }
        for (j, &w) in block.iter().enumerate() {
            // Ties with the k-th best lose: they come later, so they have a higher id.
            if w > threshold && w.is_finite() {
                cands.push(Cand {
                    w,
                    id: token_id(b * BLOCK + j),
                });
                if cands.len() >= cap {
                    threshold = truncate_to_best(cands, k);
                }
            }
        }
    }
    if cands.len() > k {
        truncate_to_best(cands, k);
    }
}

/// Keeps the `k` best of `cands` (0 < k < len) and returns the worst kept value.
fn truncate_to_best(cands: &mut Vec<Cand>, k: usize) -> f32 {
    let (_, kth, _) = cands.select_nth_unstable_by(k.saturating_sub(1), by_rank);
    let threshold = kth.w;
    cands.truncate(k);
    threshold
}

/// How many of the best candidates form the top-p nucleus: the smallest count whose weights sum
/// to at least `target` (all of them if they never do). Reorders `cands` so that those come
/// first. A weighted quickselect: expected linear time, and only small slices get sorted.
fn nucleus(cands: &mut [Cand], target: f64) -> usize {
    let mut lo = 0;
    let mut hi = cands.len();
    let mut need = target;
    // Invariant: cands[..lo] are the lo best, with a total weight below target (need is what is
    // still missing), and the answer lies in lo+1..=hi.
    loop {
        let Some(rest) = cands.get_mut(lo..hi) else {
            return hi;
        };
        if rest.len() <= SMALL_SORT {
            rest.sort_unstable_by(by_rank);
            let mut acc = 0.0f64;
            for (i, c) in rest.iter().enumerate() {
                acc += f64::from(c.w);
                if acc >= need {
                    return lo + i + 1;
                }
            }
            return hi;
        }
        let mid = rest.len() / 2;
        let (better, pivot, _) = rest.select_nth_unstable_by(mid, by_rank);
        let mass = sum_cands(better) + f64::from(pivot.w);
        if mass >= need {
            hi = lo + mid + 1;
        } else {
            need -= mass;
            lo += mid + 1;
        }
    }
}

/// e^x for x <= 0, branch-free so that loops over it vectorise (the libm call does not):
/// Cephes' `expf` reduction and polynomial, within a few ulp of the exact value, exactly 1 at
/// 0, and 0 below -87 (where e^x leaves the normal range). NaN gives an unspecified value.
#[inline(always)]
fn exp_nonpositive(x: f32) -> f32 {
    const LN2_HI: f32 = 0.693_359_4;
    const LN2_LO: f32 = -2.121_944_4e-4;
    // Adding 1.5 * 2^23 rounds to an integer, which then sits in the low mantissa bits.
    const ROUND: f32 = 12_582_912.0;
    let underflow = x < -87.0;
    let x = if underflow { -87.0 } else { x };
    let t = x * std::f32::consts::LOG2_E + ROUND;
    let n = t - ROUND;
    let r = x - n * LN2_HI - n * LN2_LO;
    let p = 1.987_569_1e-4_f32;
    let p = p * r + 1.398_199_9e-3;
    let p = p * r + 8.333_452e-3;
    let p = p * r + 4.166_579_6e-2;
    let p = p * r + 1.666_666_5e-1;
    let p = p * r + 0.5;
    let y = p * (r * r) + r + 1.0;
    // 2^n for n in [-126, 0]: the biased exponent n + 127, built from t's low bits.
    let scale = f32::from_bits(t.to_bits().wrapping_sub(ROUND.to_bits()).wrapping_add(127) << 23);
    if underflow {
        0.0
    } else {
        y * scale
    }
}

/// Sum in f64 with independent accumulators (vectorises; precise enough for 128k terms).
fn sum_f32(xs: &[f32]) -> f64 {
    let mut acc = [0.0f64; 8];
    let mut chunks = xs.chunks_exact(8);
    for chunk in &mut chunks {
        for (a, &x) in acc.iter_mut().zip(chunk) {
            *a += f64::from(x);
        }
    }
    let tail: f64 = chunks.remainder().iter().map(|&x| f64::from(x)).sum();
    acc.iter().sum::<f64>() + tail
}

fn sum_cands(cands: &[Cand]) -> f64 {
    cands.iter().map(|c| f64::from(c.w)).sum()
}

/// Entries per block when drawing from the whole row.
const DRAW_BLOCK: usize = 256;

/// Draws an index of `weights` with probability proportional to its weight (`total` is their
/// sum): finds the block by block sums, then the entry inside it.
fn draw_weights(rng: &mut ChaCha8Rng, weights: &[f32], total: f64) -> Option<u32> {
    if !(total > 0.0 && total.is_finite()) {
        return None;
    }
    let u = rng.random::<f64>() * total;
    // (block index, block, mass before it) of the block u falls in, or of the last block with
    // any mass if rounding left u past the end.
    let mut chosen = None;
    let mut acc = 0.0f64;
    for (b, block) in weights.chunks(DRAW_BLOCK).enumerate() {
        let mass = sum_f32(block);
        if mass <= 0.0 {
            continue;
        }
        chosen = Some((b, block, acc));
        if u < acc + mass {
            break;
        }
        acc += mass;
    }
    let (b, block, mut acc) = chosen?;
    // The entry u falls on, or, past the end of the block by rounding, its last candidate.
    let mut pick = None;
    for (j, &w) in block.iter().enumerate() {
        if w > 0.0 {
            acc += f64::from(w);
            pick = Some(j);
            if u < acc {
                break;
            }
        }
    }
    pick.map(|j| token_id(b * DRAW_BLOCK + j))
}

/// Draws one of `cands` with probability proportional to its weight.
fn draw_cands(rng: &mut ChaCha8Rng, cands: &[Cand], total: f64) -> Option<u32> {
    if !(total > 0.0 && total.is_finite()) {
        return None;
    }
    let u = rng.random::<f64>() * total;
    let mut acc = 0.0f64;
    let mut last = None;
    for c in cands {
        if c.w > 0.0 {
            acc += f64::from(c.w);
            if u < acc {
                return Some(c.id);
            }
            last = Some(c.id);
        }
    }
    last
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn sampler(params: SamplingParams) -> Sampler {
        match Sampler::new(&params) {
            Ok(s) => s,
            Err(e) => panic!("valid params rejected: {e}"),
        }
    }

    fn sample(s: &mut Sampler, logits: &[f32]) -> u32 {
        let mut row = logits.to_vec();
        match s.sample(&mut row) {
            Ok(id) => id,
            Err(e) => panic!("sample failed: {e}"),
        }
    }

    fn params(temperature: f32, seed: u64) -> SamplingParams {
        SamplingParams {
            temperature,
            top_p: 1.0,
            seed: Some(seed),
            ..Default::default()
        }
    }

    /// Frequencies of each id over `draws` samples.
    fn frequencies(p: SamplingParams, logits: &[f32], draws: usize) -> Vec<f64> {
        let mut s = sampler(p);
        let mut counts = vec![0usize; logits.len()];
        for _ in 0..draws {
            counts[sample(&mut s, logits) as usize] += 1;
        }
        counts.iter().map(|&c| c as f64 / draws as f64).collect()
    }

    fn ln_probs(p: &[f32]) -> Vec<f32> {
        p.iter().map(|x| x.ln()).collect()
    }

    #[test]
    fn defaults_and_greedy() {
        let d = SamplingParams::default();
        assert_eq!(d.temperature, 0.6);
        assert_eq!(d.top_p, 0.95);
        assert_eq!((d.top_k, d.min_p, d.repeat_penalty), (0, 0.0, 1.0));
        assert_eq!((d.presence_penalty, d.frequency_penalty), (0.0, 0.0));
        assert_eq!((d.repeat_last_n, d.seed), (64, None));
        assert!(d.validate().is_ok());
        let g = SamplingParams::greedy();
        assert_eq!(g.temperature, 0.0);
        assert_eq!(g.top_p, 0.95);
        // serde(default): a partial object fills in the rest.
        let p: SamplingParams = serde_json::from_str(r#"{"top_k": 40}"#).unwrap();
        assert_eq!(p.top_k, 40);
        assert_eq!(p.temperature, 0.6);
    }

    #[test]
    fn greedy_picks_argmax_lowest_id_on_ties() {
        let mut s = sampler(SamplingParams::greedy());
        assert_eq!(sample(&mut s, &[0.1, 2.0, -1.0, 1.9]), 1);
        assert_eq!(sample(&mut s, &[1.0, 3.0, 0.0, 3.0, 3.0]), 1);
        assert_eq!(sample(&mut s, &[5.0, 5.0]), 0);
        // NaN and infinite entries are skipped.
        assert_eq!(
            sample(
                &mut s,
                &[f32::NAN, f32::INFINITY, -1.0, f32::NEG_INFINITY, -0.5]
            ),
            4
        );
    }

    #[test]
    fn repeat_penalty_divides_positive_and_multiplies_negative() {
        let mut p = SamplingParams::greedy();
        p.repeat_penalty = 2.0;
        let mut s = sampler(p);
        s.accept(0);
        // 3.0 / 2 = 1.5 < 2.0: the pick moves to id 1.
        let mut row = vec![3.0, 2.0];
        assert_eq!(s.sample(&mut row).unwrap(), 1);
        assert_eq!(row, vec![1.5, 2.0]);
        // -1.0 * 2 = -2.0 < -1.5 (dividing would give -0.5 and keep id 0).
        let mut row = vec![-1.0, -1.5];
        assert_eq!(s.sample(&mut row).unwrap(), 1);
        assert_eq!(row, vec![-2.0, -1.5]);
        // A penalty below 1 boosts instead.
        let mut p = SamplingParams::greedy();
        p.repeat_penalty = 0.5;
        let mut s = sampler(p);
        s.accept(1);
        let mut row = vec![3.0, 2.0];
        assert_eq!(s.sample(&mut row).unwrap(), 1);
        assert_eq!(row, vec![3.0, 4.0]);
    }

    #[test]
    fn presence_and_frequency_arithmetic() {
        let mut p = SamplingParams::greedy();
        p.repeat_penalty = 2.0;
        p.frequency_penalty = 0.5;
        p.presence_penalty = 0.25;
        let mut s = sampler(p);
        for t in [0, 1, 1, 7] {
            s.accept(t); // 7 is outside the row: ignored
        }
        let mut row = vec![2.0, -2.0, 1.0, 0.75];
        assert_eq!(s.sample(&mut row).unwrap(), 2);
        // id 0: 2/2 - (1*0.5 + 0.25); id 1: -2*2 - (2*0.5 + 0.25).
        assert_eq!(row, vec![0.25, -5.25, 1.0, 0.75]);

        // Presence alone: 1.0 - 0.25 = 0.75 < 0.875.
        let mut p = SamplingParams::greedy();
        p.presence_penalty = 0.25;
        let mut s = sampler(p);
        s.accept(0);
        s.accept(0);
        let mut row = vec![1.0, 0.875];
        assert_eq!(s.sample(&mut row).unwrap(), 1);
        assert_eq!(row, vec![0.75, 0.875]);

        // Frequency alone scales with the count: 2 repeats keep id 0, 3 do not.
        let mut p = SamplingParams::greedy();
        p.frequency_penalty = 0.125;
        let mut s = sampler(p);
        s.accept(0);
        s.accept(0);
        let mut row = vec![1.0, 0.7];
        assert_eq!(s.sample(&mut row).unwrap(), 0);
        assert_eq!(row, vec![0.75, 0.7]);
        s.accept(0);
        let mut row = vec![1.0, 0.7];
        assert_eq!(s.sample(&mut row).unwrap(), 1);
        assert_eq!(row, vec![0.625, 0.7]);

        // Negative values reward repeats.
        let mut p = SamplingParams::greedy();
        p.presence_penalty = -0.5;
        let mut s = sampler(p);
        s.accept(1);
        let mut row = vec![1.0, 0.75];
        assert_eq!(s.sample(&mut row).unwrap(), 1);
        assert_eq!(row, vec![1.0, 1.25]);
    }

    #[test]
    fn penalties_only_see_the_last_n_tokens() {
        let mut p = SamplingParams::greedy();
        p.presence_penalty = 1.0;
        p.repeat_last_n = 3;
        let mut s = sampler(p);
        s.accept(0);
        assert_eq!(sample(&mut s, &[1.0, 0.5, 0.0, 0.0]), 1);
        for t in [2, 3, 2] {
            s.accept(t);
        }
        // Token 0 left the window.
        let mut row = vec![1.0, 0.5, 0.0, 0.0];
        assert_eq!(s.sample(&mut row).unwrap(), 0);
        assert_eq!(row, vec![1.0, 0.5, -1.0, -1.0]);

        let mut p = SamplingParams::greedy();
        p.presence_penalty = 1.0;
        p.repeat_last_n = 0;
        let mut s = sampler(p);
        s.accept(0);
        let mut row = vec![1.0, 0.5];
        assert_eq!(s.sample(&mut row).unwrap(), 0);
        assert_eq!(row, vec![1.0, 0.5]);
    }

    #[test]
    fn cutoffs_that_leave_only_the_argmax() {
        let logits = [0.3, 1.2, 1.1, -0.4, 1.19, 0.9];
        let tied = [0.3, 1.2, 1.1, -0.4, 1.2, 0.9];
        for (i, seed) in (0..300).enumerate() {
            let mut p = params(1.5, seed);
            match i % 3 {
                0 => p.top_k = 1,
                1 => p.top_p = 1e-6,
                _ => p.min_p = 1.0,
            }
            let mut s = sampler(p);
            for _ in 0..5 {
                assert_eq!(sample(&mut s, &logits), 1, "case {}", i % 3);
                // top-k 1 and a tiny top-p break ties like greedy; min-p 1 keeps every
                // token as likely as the best.
                let id = sample(&mut s, &tied);
                if i % 3 == 2 {
                    assert!(id == 1 || id == 4, "{id}");
                } else {
                    assert_eq!(id, 1, "case {}", i % 3);
                }
            }
        }
    }

    #[test]
    fn same_seed_same_sequence_different_seed_different_sequence() {
        let flat = vec![0.0f32; 1000];
        let run = |seed: Option<u64>| {
            let mut s = sampler(SamplingParams {
                seed,
                ..Default::default()
            });
            let seq: Vec<u32> = (0..200).map(|_| sample(&mut s, &flat)).collect();
            (s.seed(), seq)
        };
        let (_, a) = run(Some(7));
        let (_, b) = run(Some(7));
        let (_, c) = run(Some(8));
        assert_eq!(a, b);
        assert_ne!(a, c);
        // A picked seed is reported and reproduces the run; two picked seeds differ.
        let (seed1, d) = run(None);
        let (seed2, _) = run(None);
        assert_ne!(seed1, seed2);
        assert_eq!(run(Some(seed1)).1, d);
        // Other paths (top-k, min-p) are reproducible too.
        let logits: Vec<f32> = (0..500).map(|i| ((i * 37) % 101) as f32 / 10.0).collect();
        let run2 = |seed| {
            let mut s = sampler(SamplingParams {
                top_k: 50,
                min_p: 0.05,
                seed: Some(seed),
                ..Default::default()
            });
            (0..100)
                .map(|_| sample(&mut s, &logits))
                .collect::<Vec<_>>()
        };
        assert_eq!(run2(3), run2(3));
        assert_ne!(run2(3), run2(4));
    }

    #[test]
    fn draws_follow_the_probabilities() {
        let logits = ln_probs(&[0.5, 0.3, 0.2]);
        let f = frequencies(params(1.0, 1), &logits, 20_000);
        for (got, want) in f.iter().zip([0.5, 0.3, 0.2]) {
            assert!((got - want).abs() < 0.02, "{f:?}");
        }
        // Temperature sharpens: at T = 0.5 the probabilities are squared and renormalised.
        let f = frequencies(params(0.5, 2), &logits, 20_000);
        for (got, want) in f.iter().zip([25.0 / 38.0, 9.0 / 38.0, 4.0 / 38.0]) {
            assert!((got - want).abs() < 0.02, "{f:?}");
        }
    }

    #[test]
    fn top_p_keeps_the_nucleus() {
        let logits = ln_probs(&[0.5, 0.3, 0.2]);
        let mut p = params(1.0, 3);
        p.top_p = 0.75;
        let f = frequencies(p, &logits, 20_000);
        assert_eq!(f[2], 0.0, "{f:?}");
        assert!((f[0] - 0.625).abs() < 0.02, "{f:?}");
        assert!((f[1] - 0.375).abs() < 0.02, "{f:?}");
        // Ids in another order: the nucleus is by probability, not by id.
        let logits = ln_probs(&[0.2, 0.3, 0.5]);
        let mut p = params(1.0, 4);
        p.top_p = 0.75;
        let f = frequencies(p, &logits, 5_000);
        assert_eq!(f[0], 0.0, "{f:?}");
    }

    #[test]
    fn min_p_drops_unlikely_tokens() {
        let logits = ln_probs(&[0.5, 0.3, 0.2]);
        let mut p = params(1.0, 5);
        p.min_p = 0.5;
        let f = frequencies(p, &logits, 20_000);
        assert_eq!(f[2], 0.0, "{f:?}");
        assert!((f[0] - 0.625).abs() < 0.02, "{f:?}");
        // With top-k on as well (the top-k path).
        let mut p = params(1.0, 6);
        p.min_p = 0.5;
        p.top_k = 3;
        let f = frequencies(p, &ln_probs(&[0.5, 0.3, 0.2, 1e-4]), 20_000);
        assert_eq!((f[2], f[3]), (0.0, 0.0), "{f:?}");
        assert!((f[0] - 0.625).abs() < 0.02, "{f:?}");
    }

    #[test]
    fn top_k_keeps_the_k_best() {
        let logits = [0.0, 3.0, 1.0, 2.9, 2.8, -5.0];
        let mut p = params(5.0, 9);
        p.top_k = 3;
        let f = frequencies(p, &logits, 5_000);
        for id in [0, 2, 5] {
            assert_eq!(f[id], 0.0, "{f:?}");
        }
        for id in [1, 3, 4] {
            assert!(f[id] > 0.25, "{f:?}");
        }
    }

    #[test]
    fn large_vocabulary_paths() {
        // 128k entries: one clear favourite, a few plausible ones and a long flat tail whose mass
        // exceeds the first probability floor, so the nucleus search has to widen.
        let mut logits = vec![0.0f32; 128_256];
        logits[500] = 10.0;
        for id in [1000, 2000, 3000] {
            logits[id] = 9.0;
        }
        let mut p = params(1.0, 11);
        p.top_p = 0.5;
        let mut s = sampler(p.clone());
        let mut tail = 0;
        for _ in 0..300 {
            let id = sample(&mut s, &logits);
            if ![500, 1000, 2000, 3000].contains(&id) {
                tail += 1;
            }
        }
        // Total mass: e^10 + 3e^9 + 128252 ~ 22026 + 24309 + 128252; half of it needs the tail.
        assert!(tail > 0);
        // top_p 0.25 is reached by the four favourites alone.
        p.top_p = 0.25;
        let mut s = sampler(p.clone());
        for _ in 0..300 {
            let id = sample(&mut s, &logits);
            assert!([500, 1000, 2000, 3000].contains(&id), "{id}");
        }
        // Greedy and top-k on the big row.
        let mut s = sampler(SamplingParams::greedy());
        assert_eq!(sample(&mut s, &logits), 500);
        p.top_k = 2;
        p.top_p = 1.0;
        let mut s = sampler(p);
        for _ in 0..100 {
            assert!([500, 1000].contains(&sample(&mut s, &logits)));
        }
    }

    #[test]
    fn validate_names_the_bad_field() {
        type Edit = fn(&mut SamplingParams);
        let cases: &[(&str, Edit)] = &[
            ("temperature", |p| p.temperature = -0.1),
            ("temperature", |p| p.temperature = f32::NAN),
            ("temperature", |p| p.temperature = f32::INFINITY),
            ("top_p", |p| p.top_p = 0.0),
            ("top_p", |p| p.top_p = 1.5),
            ("top_p", |p| p.top_p = f32::NAN),
            ("min_p", |p| p.min_p = -0.1),
            ("min_p", |p| p.min_p = 1.01),
            ("min_p", |p| p.min_p = f32::NAN),
            ("repeat_penalty", |p| p.repeat_penalty = 0.0),
            ("repeat_penalty", |p| p.repeat_penalty = -1.0),
            ("repeat_penalty", |p| p.repeat_penalty = f32::INFINITY),
            ("presence_penalty", |p| p.presence_penalty = 2.5),
            ("presence_penalty", |p| p.presence_penalty = f32::NAN),
            ("frequency_penalty", |p| p.frequency_penalty = -2.01),
            ("frequency_penalty", |p| {
                p.frequency_penalty = f32::NEG_INFINITY
            }),
        ];
        for &(field, set) in cases {
            let mut p = SamplingParams::default();
            set(&mut p);
            let err = match p.validate() {
                Err(GenError::InvalidSampling(msg)) => msg,
                other => panic!("{field}: expected an error, got {other:?}"),
            };
            assert!(err.starts_with(field), "{field}: {err}");
            assert!(Sampler::new(&p).is_err(), "{field}");
        }
        // Edges of the valid ranges.
        let ok = SamplingParams {
            temperature: 0.0,
            top_p: 1.0,
            min_p: 1.0,
            repeat_penalty: 0.01,
            presence_penalty: -2.0,
            frequency_penalty: 2.0,
            top_k: usize::MAX,
            repeat_last_n: 0,
            seed: Some(u64::MAX),
            max_tokens: Some(1),
        };
        assert!(ok.validate().is_ok());
        let err = SamplingParams {
            temperature: -1.0,
            ..Default::default()
        }
        .validate()
        .unwrap_err()
        .to_string();
        assert!(err.contains("-1"), "{err}");
    }

    #[test]
    fn bad_rows_are_errors() {
        for p in [SamplingParams::greedy(), SamplingParams::default()] {
            let mut s = sampler(p);
            assert!(matches!(
                s.sample(&mut []),
                Err(GenError::InvalidSampling(_))
            ));
            assert!(matches!(
                s.sample(&mut [f32::NAN; 5]),
                Err(GenError::InvalidSampling(_))
            ));
            assert!(matches!(
                s.sample(&mut [f32::NAN, f32::NEG_INFINITY, f32::INFINITY]),
                Err(GenError::InvalidSampling(_))
            ));
            // One finite entry among NaNs is the answer.
            assert_eq!(sample(&mut s, &[f32::NAN, f32::NAN, -3.0, f32::NAN]), 2);
        }
    }

    #[test]
    fn extreme_values_do_not_break_sampling() {
        // A temperature so small that 1/T overflows behaves as greedy.
        let mut s = sampler(params(1e-45, 1));
        assert_eq!(sample(&mut s, &[0.0, 1.0, 0.5]), 1);
        let mut s = sampler(params(1e30, 1));
        let id = sample(&mut s, &[f32::MAX, -f32::MAX, 0.0]);
        assert!(id < 3);
        let mut s = sampler(params(0.01, 1));
        assert_eq!(sample(&mut s, &[-f32::MAX, f32::MAX, 0.0]), 1);
    }

    #[test]
    fn fast_exp_matches_std() {
        assert_eq!(exp_nonpositive(0.0), 1.0);
        assert_eq!(exp_nonpositive(-0.0), 1.0);
        assert_eq!(exp_nonpositive(-87.5), 0.0);
        assert_eq!(exp_nonpositive(f32::NEG_INFINITY), 0.0);
        let mut worst = 0.0f64;
        for i in 0..=870_000 {
            let x = -(i as f32) * 1e-4;
            let want = f64::from(x).exp();
            let got = f64::from(exp_nonpositive(x));
            worst = worst.max((got - want).abs() / want);
        }
        assert!(worst < 3e-7, "worst relative error {worst}");
    }

    #[test]
    fn draw_from_the_whole_row_follows_the_weights() {
        // Blocks of weights, some empty: every draw lands on a positive weight, in proportion.
        let mut weights = vec![0.0f32; 1000];
        weights[3] = 1.0;
        weights[255] = 1.0;
        weights[256] = 2.0;
        weights[999] = 4.0;
        let total = sum_f32(&weights);
        let mut rng = ChaCha8Rng::seed_from_u64(5);
        let mut counts = [0usize; 1000];
        for _ in 0..16_000 {
            let id = draw_weights(&mut rng, &weights, total).unwrap() as usize;
            counts[id] += 1;
        }
        for (id, want) in [(3, 1.0 / 8.0), (255, 1.0 / 8.0), (256, 0.25), (999, 0.5)] {
            let got = counts[id] as f64 / 16_000.0;
            assert!((got - want).abs() < 0.02, "{id}: {got}");
        }
        assert_eq!(counts.iter().sum::<usize>(), 16_000);
        assert_eq!(counts[3] + counts[255] + counts[256] + counts[999], 16_000);
        // A total slightly above the real sum (rounding) still yields the last candidate.
        for _ in 0..100 {
            let id = draw_weights(&mut rng, &weights, total * 2.0).unwrap();
            assert!([3, 255, 256, 999].contains(&id));
        }
        assert_eq!(draw_weights(&mut rng, &[0.0; 10], 0.0), None);
    }

    /// Reference for `nucleus`: sort everything, walk the prefix.
    fn nucleus_by_sorting(cands: &[Cand], target: f64) -> Vec<Cand> {
        let mut sorted = cands.to_vec();
        sorted.sort_by(by_rank);
        let mut acc = 0.0;
        for (i, c) in sorted.iter().enumerate() {
            acc += f64::from(c.w);
            if acc >= target {
                sorted.truncate(i + 1);
                return sorted;
            }
        }
        sorted
    }

    fn cand_sets() -> impl Strategy<Value = Vec<Cand>> {
        // Few distinct values, so ties are common.
        prop::collection::vec(0u8..20, 1..600).prop_map(|ws| {
            (0u32..)
                .zip(ws)
                .map(|(id, w)| Cand {
                    w: f32::from(w) / 4.0,
                    id,
                })
                .collect()
        })
    }

    fn logit_rows() -> impl Strategy<Value = Vec<f32>> {
        let entry = prop_oneof![
            8 => -30.0f32..30.0,
            1 => Just(f32::NAN),
            1 => Just(f32::NEG_INFINITY),
            1 => Just(f32::INFINITY),
            1 => (-3i8..3).prop_map(f32::from),
        ];
        (
            prop::collection::vec(entry, 1..300),
            -5.0f32..5.0,
            any::<prop::sample::Index>(),
        )
            .prop_map(|(mut row, v, at)| {
                // At least one finite logit.
                let i = at.index(row.len());
                row[i] = v;
                row
            })
    }

    fn sampling_params() -> impl Strategy<Value = SamplingParams> {
        (
            prop_oneof![1 => Just(0.0f32), 4 => 0.01f32..3.0],
            prop_oneof![Just(0usize), 1usize..10],
            prop_oneof![Just(1.0f32), 0.01f32..1.0],
            prop_oneof![Just(0.0f32), 0.0f32..=1.0],
            0.5f32..2.0,
            -2.0f32..=2.0,
            -2.0f32..=2.0,
            0usize..10,
            any::<u64>(),
        )
            .prop_map(
                |(temperature, top_k, top_p, min_p, rp, pp, fp, last_n, seed)| SamplingParams {
                    temperature,
                    top_k,
                    top_p,
                    min_p,
                    repeat_penalty: rp,
                    presence_penalty: pp,
                    frequency_penalty: fp,
                    repeat_last_n: last_n,
                    seed: Some(seed),
                    max_tokens: None,
                },
            )
    }

    proptest! {
        #[test]
        fn sampled_token_is_a_valid_candidate(
            row in logit_rows(),
            p in sampling_params(),
            accepted in prop::collection::vec(0u32..320, 0..20),
        ) {
            let mut s = Sampler::new(&p).unwrap();
            for &t in &accepted {
                s.accept(t);
            }
            let original = row.clone();
            let mut seen = row;
            let id = s.sample(&mut seen).unwrap() as usize;
            prop_assert!(id < seen.len());
            prop_assert!(original[id].is_finite());
            prop_assert!(seen[id].is_finite());
            let max = seen.iter().copied().filter(|l| l.is_finite()).fold(f32::MIN, f32::max);
            if p.temperature == 0.0 {
                prop_assert_eq!(seen[id], max);
            }
            if p.top_k > 0 {
                let better = seen.iter().filter(|&&l| l.is_finite() && l > seen[id]).count();
                prop_assert!(better < p.top_k, "{} better logits, top_k {}", better, p.top_k);
            }
            if p.min_p > 0.0 && p.temperature > 0.0 {
                let floor = max + p.temperature * p.min_p.ln();
                prop_assert!(seen[id] >= floor - 1e-3, "{} < {}", seen[id], floor);
            }
        }

        #[test]
        fn kept_set_matches_a_sort_everything_reference(
            // Spread-out rows, and rows with a few spikes over a long flat tail (whose mass
            // makes the nucleus search lower its probability floor); `spiky` rows get scaled by
            // the temperature, so the tail's probabilities sit between e^-10.5 and e^-9.3.
            (spiky, row) in prop_oneof![
                (
                    Just(false),
                    prop::collection::vec(
                        prop_oneof![
                            10 => -4.0f32..4.0,
                            1 => Just(f32::NAN),
                            1 => Just(f32::NEG_INFINITY),
                        ],
                        1..3000,
                    ),
                ),
                (
                    Just(true),
                    prop::collection::vec(
                        prop_oneof![500 => -0.05f32..0.05, 1 => 9.3f32..10.5],
                        100..3000,
                    ),
                ),
            ],
            temperature in 0.05f32..4.0,
            top_k in prop_oneof![Just(0usize), 1usize..200],
            top_p in prop_oneof![1 => Just(1.0f32), 1 => 0.01f32..1.0, 2 => 0.95f32..1.0],
            min_p in prop_oneof![Just(0.0f32), 0.0f32..=1.0],
        ) {
            let row: Vec<f32> = if spiky {
                row.iter().map(|&l| l * temperature).collect()
            } else {
                row
            };
            prop_assume!(row.iter().any(|l| l.is_finite()));
            // (Otherwise the draw is straight from the whole row, without a candidate list.)
            prop_assume!((top_k > 0 && top_k < row.len()) || top_p < 1.0 || min_p > 0.0);
            let p = SamplingParams { temperature, top_k, top_p, min_p, seed: Some(1), ..Default::default() };
            let mut s = Sampler::new(&p).unwrap();
            let mut seen = row.clone();
            let id = s.sample(&mut seen).unwrap();
            let mut got: Vec<u32> = s.cands.iter().filter(|c| c.w > 0.0).map(|c| c.id).collect();
            got.sort_unstable();
            prop_assert!(got.binary_search(&id).is_ok());

            // Reference: rank every finite logit, cut, and walk the prefix.
            let max = row.iter().copied().filter(|l| l.is_finite()).fold(f32::MIN, f32::max);
            let mut all: Vec<Cand> = (0u32..)
                .zip(row.iter())
                .filter(|(_, l)| l.is_finite())
                .map(|(id, &w)| Cand { w, id })
                .collect();
            all.sort_by(by_rank);
            if top_k > 0 {
                all.truncate(top_k);
            }
            for c in all.iter_mut() {
                c.w = exp_nonpositive((c.w - max) * (1.0 / temperature));
            }
            let z = sum_cands(&all);
            all.sort_by(by_rank);
            all.retain(|c| c.w > 0.0 && (min_p <= 0.0 || c.w >= min_p));
            if top_p < 1.0 {
                let kept = nucleus_by_sorting(&all, f64::from(top_p) * z).len();
                all.truncate(kept);
            }
            let mut want: Vec<u32> = all.iter().map(|c| c.id).collect();
            want.sort_unstable();
            prop_assert_eq!(got, want);
        }

        #[test]
        fn nucleus_matches_full_sort(cands in cand_sets(), frac in 0.0f64..1.1) {
            let total = sum_cands(&cands);
            let target = frac * total;
            let want = nucleus_by_sorting(&cands, target);
            let mut got = cands.clone();
            let kept = nucleus(&mut got, target);
            got.truncate(kept);
            got.sort_by(by_rank);
            prop_assert_eq!(got, want);
        }

        #[test]
        fn top_k_matches_full_sort(row in logit_rows(), k in 1usize..400) {
            let mut got = Vec::new();
            collect_top_k(&mut got, &row, k);
            got.sort_by(by_rank);
            let mut want: Vec<Cand> = (0u32..)
                .zip(row.iter())
                .filter(|(_, l)| l.is_finite())
                .map(|(id, &w)| Cand { w, id })
                .collect();
            want.sort_by(by_rank);
            want.truncate(k);
            prop_assert_eq!(got, want);
        }
    }
}
