//! Prompt-lookup drafts for speculative decoding: the next tokens guessed by finding the
//! sequence's last few tokens earlier in the prompt or the output and copying what followed
//! them there (no second model). Answers that quote their prompt (a summary, an edited file,
//! a numbered copy of a paragraph) repeat long runs, and each guessed token the model agrees
//! with costs a fraction of a step: the model checks a whole draft in one pass
//! (`Model::forward_verify`), whose weights it reads once.
//!
//! A draft changes no answer: every position is still sampled from the model's own logits,
//! exactly those of feeding the tokens one at a time, and the draft is kept only as far as
//! the sampled tokens equal it. (For a guess that is a single token, accepting it when the
//! sample equals it is the standard speculative-sampling rule: accept with probability
//! `p(guess)`, else sample from `p` without the guess.)

/// The longest and shortest suffix looked up, longest first: a 1-token match is too weak a
/// hint (common tokens recur everywhere), and longer ones than 4 add little.
pub const NGRAM_MAX: usize = 4;
pub const NGRAM_MIN: usize = 2;

/// The most tokens drafted at once: with the token being fed, sixteen rows, two calls of the
/// row products (the weights read once). SmolLM2-135M quoting a paragraph (greedy, Zen 4):
/// 1.48x the plain decode speed with at most 7, 1.57x with 15; free text 1.00x and 0.96x.
pub const DRAFT_MAX: usize = 15;

/// Up to `max` tokens that followed the most recent earlier occurrence of the last `n` tokens
/// of `sequence` (`n` from [`NGRAM_MAX`] down to [`NGRAM_MIN`]); empty if there is none.
pub fn lookup(sequence: &[u32], max: usize) -> Vec<u32> {
    if max == 0 {
        return Vec::new();
    }
    for n in (NGRAM_MIN..=NGRAM_MAX).rev() {
        if sequence.len() <= n {
            continue;
        }
        let suffix = &sequence[sequence.len() - n..];
        // Earlier occurrences only, the most recent first; it must be followed by something.
        let found = (0..sequence.len() - n)
            .rev()
            .find(|&start| &sequence[start..start + n] == suffix);
        if let Some(start) = found {
            let from = start + n;
            let to = (from + max).min(sequence.len());
            return sequence[from..to].to_vec();
        }
    }
    Vec::new()
}

/// How many tokens to draft next, from how the last drafts went: more after a draft that was
/// taken whole, back to what was taken after one that was not; and after a draft that did
/// not pay (its pass took longer than the plain steps for the tokens it gave would have),
/// none for a while (1, 2, 4 ... 32 tokens). What a row of a pass costs depends on the model:
/// on the 3B file about a quarter of a decode step, on SmolLM2-135M, which is not bound by
/// memory, nearly a whole one (a 2-token check 14.7 ms against a 7.5 ms step, Zen 4), so
/// drafts that half the text takes pay on the first and lose on the second.
#[derive(Debug, Clone, Copy)]
pub struct DraftLength {
    next: usize,
    /// Drafts in a row of which nothing was taken.
    misses: u32,
    /// Tokens to decode without a draft before the next one.
    pause: usize,
}

impl Default for DraftLength {
    fn default() -> Self {
        DraftLength {
            next: 4,
            misses: 0,
            pause: 0,
        }
    }
}

impl DraftLength {
    /// The next draft's length, or 0 while paused (each call is a decode step).
    pub fn get(&mut self) -> usize {
        if self.pause > 0 {
            self.pause -= 1;
            return 0;
        }
        self.next
    }

    /// After a draft of `drafted` tokens of which `accepted` were taken; `paid`: whether its
    /// pass gave its tokens sooner than plain steps would have.
    pub fn update(&mut self, drafted: usize, accepted: usize, paid: bool) {
        self.next = if accepted == drafted {
            (self.next + 2).min(DRAFT_MAX)
        } else {
            (accepted + 1).clamp(1, DRAFT_MAX)
        };
        if paid {
            self.misses = 0;
        } else {
            self.pause = 1 << self.misses.min(5);
            self.misses += 1;
        }
    }
}

/// Whether a draft's pass paid: `pass_secs` for the `accepted + 1` tokens it gave, against
/// `step_secs`, a plain one-token step (a running average). Without a step measured yet, or
/// with steps so short that timing them says little (under a millisecond: a scripted
/// backend), a draft pays when any of it was taken.
pub fn paid(accepted: usize, pass_secs: f64, step_secs: Option<f64>) -> bool {
    match step_secs {
        Some(step) if step >= 1e-3 => pass_secs <= (accepted + 1) as f64 * step,
        _ => accepted > 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_most_recent_longest_match_is_copied() {
        // "a b c d | x a b c e | a b c" -> after the last "a b c", "e" followed most recently.
        let s = [1, 2, 3, 4, 9, 1, 2, 3, 5, 1, 2, 3];
        assert_eq!(lookup(&s, 3), vec![5, 1, 2]);
        // A 4-token suffix beats a more recent 2-token one.
        let s = [7, 1, 2, 3, 4, 5, 6, 3, 4, 8, 7, 1, 2, 3, 4];
        assert_eq!(lookup(&s, 2), vec![5, 6]);
        // The copy stops at the end of the sequence.
        let s = [1, 2, 3, 1, 2];
        assert_eq!(lookup(&s, 5), vec![3, 1, 2]);
    }

    #[test]
    fn nothing_without_a_long_enough_earlier_match() {
        assert!(lookup(&[1, 2, 3, 4], 4).is_empty());
        // A single repeated token is not enough.
        assert!(lookup(&[5, 1, 6, 1], 4).is_empty());
        assert!(lookup(&[], 4).is_empty());
        assert!(lookup(&[1, 2, 1, 2], 0).is_empty());
    }

    #[test]
    fn draft_length_grows_on_success_and_shrinks_on_rejection() {
        let mut d = DraftLength::default();
        assert_eq!(d.get(), 4);
        d.update(4, 4, true);
        assert_eq!(d.get(), 6);
        for _ in 0..DRAFT_MAX {
            d.update(6, 6, true);
        }
        assert_eq!(d.get(), DRAFT_MAX);
        d.update(DRAFT_MAX, 2, true);
        assert_eq!(d.get(), 3);
    }

    #[test]
    fn a_draft_pays_when_its_pass_beats_the_plain_steps() {
        // 3 tokens from a 25 ms pass against 10 ms steps: paid; from a 35 ms pass: not.
        assert!(paid(2, 0.025, Some(0.010)));
        assert!(!paid(2, 0.035, Some(0.010)));
        // No step measured, or steps too short to time: anything taken pays.
        assert!(paid(1, 1.0, None));
        assert!(!paid(0, 0.0, None));
        assert!(paid(1, 0.5, Some(1e-6)));
    }

    #[test]
    fn drafts_that_do_not_pay_pause_drafting_longer_each_time() {
        let mut d = DraftLength::default();
        let paused = |d: &mut DraftLength| (0..100).take_while(|_| d.get() == 0).count();
        d.update(4, 0, false);
        assert_eq!(paused(&mut d), 1);
        d.update(1, 0, false);
        assert_eq!(paused(&mut d), 2);
        d.update(1, 0, false);
        assert_eq!(paused(&mut d), 4);
        for _ in 0..10 {
            d.update(1, 0, false);
        }
        assert_eq!(paused(&mut d), 32);
        // Something taken: no pause, and the next miss pauses one step again.
        d.update(3, 1, true);
        assert_eq!(paused(&mut d), 0);
        d.update(2, 0, false);
        assert_eq!(paused(&mut d), 1);
    }
}
