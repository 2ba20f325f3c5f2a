//! A prompt asked again starts from the logits kept when it was read, not from its last token
//! run again alone: a model's logits for one token computed alone can round differently from
//! the same token's in a chunk (seen on an AVX2 CPU, where it changed a sampled tool call), so
//! the same request and seed must not depend on whether the prompt was cached.

mod common;

use common::{template, tokenizer};
use smollm3_gen::{Backend, GenerateRequest, Prompt, SamplingParams, Session};

/// A "model" whose logits point at the token whose id is the length of the call that produced
/// them: as if the rounding of a token's logits depended on the chunk it was computed in.
struct ChunkSized {
    vocab: usize,
    cache: Vec<u32>,
    calls: Vec<usize>,
    follows_tokens: bool,
}

impl Backend for ChunkSized {
    fn context_size(&self) -> usize {
        256
    }
    fn vocab_size(&self) -> usize {
        self.vocab
    }
    fn cached_len(&self) -> usize {
        self.cache.len()
    }
    fn truncate(&mut self, len: usize) -> smollm3_gen::Result<()> {
        self.cache.truncate(len);
        Ok(())
    }
    fn forward(&mut self, tokens: &[u32]) -> smollm3_gen::Result<Vec<f32>> {
        self.cache.extend_from_slice(tokens);
        self.calls.push(tokens.len());
        let mut logits = vec![0.0; self.vocab];
        logits[tokens.len()] = 50.0;
        Ok(logits)
    }
    fn logits_follow_tokens(&self) -> bool {
        self.follows_tokens
    }
}

fn session(follows_tokens: bool) -> Session<ChunkSized> {
    let tokenizer = tokenizer();
    let backend = ChunkSized {
        vocab: tokenizer.vocab_size(),
        cache: Vec::new(),
        calls: Vec::new(),
        follows_tokens,
    };
    Session::with_backend(backend, tokenizer, template())
}

/// The first token drawn for `prompt` (two tokens asked, so the first is fed and cached) and
/// the backend's calls for this request.
fn first_token(s: &mut Session<ChunkSized>, prompt: &[u32]) -> (u32, Vec<usize>) {
    let mut request = GenerateRequest::new(Prompt::Tokens(prompt.to_vec()));
    request.sampling = SamplingParams::greedy();
    request.sampling.max_tokens = Some(2);
    let calls_before = s.backend().calls.len();
    let completion = s.generate(&request).unwrap().complete().unwrap();
    assert_eq!(completion.stats.generated_tokens, 2);
    let first = s.cached_tokens()[prompt.len()];
    (first, s.backend().calls[calls_before..].to_vec())
}

#[test]
fn the_same_prompt_again_starts_from_the_logits_it_was_read_with() {
    let mut s = session(true);
    let prompt = [300, 301, 302, 303, 304];
    // Read as one chunk of 5: the first token is 5, then one step for it.
    assert_eq!(first_token(&mut s, &prompt), (5, vec![5, 1]));
    // Again: nothing of the prompt is run, the same first token.
    let (token, calls) = first_token(&mut s, &prompt);
    assert_eq!((token, calls), (5, vec![1]));
    let again = s
        .generate(&{
            let mut r = GenerateRequest::new(Prompt::Tokens(prompt.to_vec()));
            r.sampling.max_tokens = Some(1);
            r
        })
        .unwrap()
        .complete()
        .unwrap();
    assert_eq!(again.stats.cached_tokens, prompt.len());
    assert_eq!(again.stats.prefilled_tokens, 0);
}

#[test]
fn kept_logits_go_when_their_tokens_leave_the_cache() {
    let mut s = session(true);
    let (p, q) = ([300, 301, 302, 303, 304], [300, 301, 302, 310, 311]);
    assert_eq!(first_token(&mut s, &p).0, 5);
    // Q shares 3 tokens: its other 2 are read as a chunk of 2.
    assert_eq!(first_token(&mut s, &q), (2, vec![2, 1]));
    // P again: its last 2 tokens are read again (the kept logits are Q's now).
    assert_eq!(first_token(&mut s, &p), (2, vec![2, 1]));
    // A prompt that is a prefix of what is cached runs its last token alone.
    assert_eq!(first_token(&mut s, &p[..4]), (1, vec![1, 1]));
}

#[test]
fn a_backend_whose_logits_follow_a_script_runs_the_last_token_again() {
    let mut s = session(false);
    let prompt = [300, 301, 302, 303, 304];
    assert_eq!(first_token(&mut s, &prompt).0, 5);
    assert_eq!(first_token(&mut s, &prompt), (1, vec![1, 1]));
}

#[test]
fn kept_logits_never_answer_for_other_tokens() {
    let mut s = session(true);
    let p = [300, 301, 302, 303, 304];
    assert_eq!(first_token(&mut s, &p).0, 5);
    // A long prompt sharing P's first 3 tokens, dropped after its first chunk.
    let long: Vec<u32> = [300, 301, 302].into_iter().chain(400..600).collect();
    let mut request = GenerateRequest::new(Prompt::Tokens(long.clone()));
    request.sampling = SamplingParams::greedy();
    {
        let mut generation = s.generate(&request).unwrap();
        let first = generation.next().unwrap().unwrap();
        assert!(matches!(first, smollm3_gen::Event::PrefillProgress { .. }));
    }
    assert_eq!(s.cached_tokens().len(), 3 + smollm3_gen::PREFILL_CHUNK);
    // The cache starts with 5 tokens of the long prompt, as long as P: they are not answered
    // with P's logits.
    assert_eq!(first_token(&mut s, &long[..5]), (1, vec![1, 1]));
}
