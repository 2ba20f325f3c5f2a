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

/// The most tokens drafted at once: with the token being fed, eight rows, the most the row
/// products take in one call.
pub const DRAFT_MAX: usize = 7;

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

/// How many tokens to draft next, from how the last draft went: more after a draft that was
/// taken whole, back to what was taken after one that was not (a rejected guess costs a row
/// of the pass; on free text the drafts shrink to one token).
#[derive(Debug, Clone, Copy)]
pub struct DraftLength(usize);

impl Default for DraftLength {
    fn default() -> Self {
        DraftLength(4)
    }
}

impl DraftLength {
    pub fn get(self) -> usize {
        self.0
    }

    /// After a draft of `drafted` tokens of which `accepted` were taken.
    pub fn update(&mut self, drafted: usize, accepted: usize) {
        self.0 = if accepted == drafted {
            (self.0 + 2).min(DRAFT_MAX)
        } else {
            (accepted + 1).clamp(1, DRAFT_MAX)
        };
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
        d.update(4, 4);
        assert_eq!(d.get(), 6);
        d.update(6, 6);
        assert_eq!(d.get(), DRAFT_MAX);
        d.update(7, 2);
        assert_eq!(d.get(), 3);
        d.update(3, 0);
        assert_eq!(d.get(), 1);
    }
}
