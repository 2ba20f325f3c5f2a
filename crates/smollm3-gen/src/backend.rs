//! What the generation loop needs from a model: append tokens to a cache, get the next-token
//! logits, cut the cache back.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use smollm3_chat::Tokenizer;
use smollm3_model::{KvCache, Model, ModelError};

use crate::batch::Batcher;
use crate::{GenError, Result};

/// A language model together with one conversation's cache.
pub trait Backend {
    /// Positions the cache can hold.
    fn context_size(&self) -> usize;
    /// Vocabulary size (length of the logits).
    fn vocab_size(&self) -> usize;
    /// Tokens currently in the cache.
    fn cached_len(&self) -> usize;
    /// Drops cached positions from `len` on.
    fn truncate(&mut self, len: usize) -> Result<()>;
    /// Appends `tokens` (non-empty) to the cache; returns the logits after the last one.
    fn forward(&mut self, tokens: &[u32]) -> Result<Vec<f32>>;
    /// [`Backend::forward`] that may stop early when `interrupt` says yes (a cancel arriving
    /// during a long prompt chunk): then `Ok(None)`, with the cache as it was before the
    /// call. The default asks once, before the call.
    fn forward_interruptible(
        &mut self,
        tokens: &[u32],
        interrupt: &dyn Fn() -> bool,
    ) -> Result<Option<Vec<f32>>> {
        if interrupt() {
            return Ok(None);
        }
        self.forward(tokens).map(Some)
    }
    /// Appends `tokens` (a token and a draft of the ones after it) and returns the logits
    /// after each, exactly those of feeding them one at a time, or `None` if this backend
    /// does not check drafts in one pass (then nothing was fed). The default: `None`.
    fn forward_verify(&mut self, _tokens: &[u32]) -> Result<Option<Vec<Vec<f32>>>> {
        Ok(None)
    }
    /// Whether the logits after a sequence of tokens depend on those tokens alone, so that a
    /// session may keep the logits after a prompt and start the same prompt again from them
    /// instead of running its last token again (whose logits, computed alone rather than in
    /// its chunk, can round differently and change a sampled answer). A real model: true;
    /// the default is false ([`ScriptedBackend`]'s logits follow its script).
    fn logits_follow_tokens(&self) -> bool {
        false
    }
    /// Called once per generation, before the uncached part of the prompt is fed, with the
    /// full prompt length. [`ScriptedBackend`] starts its next reply; a batched
    /// [`ModelBackend`] joins its batcher's sessions in a generation.
    fn start_generation(&mut self, _prompt_len: usize) {}
    /// Called once when a generation ends, however it ends (done, cancelled, failed, or its
    /// iterator dropped): a batched [`ModelBackend`] leaves the sessions its batcher waits for.
    fn end_generation(&mut self) {}
}

/// A [`Model`] (shared, immutable) and a [`KvCache`] of its own; alone, or with the other
/// sessions of a [`Batcher`], whose forward passes then run together.
pub struct ModelBackend {
    model: Arc<Model>,
    /// Behind a lock so that a batcher's pass, run by another session's thread while this
    /// one waits, can write it.
    cache: Arc<Mutex<KvCache>>,
    batcher: Option<Arc<Batcher>>,
    in_generation: bool,
}

impl ModelBackend {
    /// A backend whose cache holds up to `context` tokens.
    pub fn new(model: Arc<Model>, context: usize) -> Result<Self> {
        let cache = model.new_cache(context)?;
        Ok(ModelBackend {
            model,
            cache: Arc::new(Mutex::new(cache)),
            batcher: None,
            in_generation: false,
        })
    }

    /// A backend whose forward passes go through `batcher` (batched with its other
    /// sessions'), with a cache of up to `context` tokens.
    pub fn batched(batcher: &Arc<Batcher>, context: usize) -> Result<Self> {
        let mut backend = Self::new(batcher.model().clone(), context)?;
        backend.batcher = Some(batcher.clone());
        Ok(backend)
    }

    pub fn model(&self) -> &Arc<Model> {
        &self.model
    }

    /// Bytes currently allocated by the KV cache.
    pub fn cache_bytes(&self) -> usize {
        self.cache().allocated_bytes()
    }

    fn cache(&self) -> MutexGuard<'_, KvCache> {
        // A pass that panicked leaves a cache whose length did not move: still consistent.
        self.cache.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl Backend for ModelBackend {
    fn context_size(&self) -> usize {
        self.cache().max_len()
    }

    fn logits_follow_tokens(&self) -> bool {
        true
    }

    fn vocab_size(&self) -> usize {
        self.model.config().vocab_size
    }

    fn cached_len(&self) -> usize {
        self.cache().len()
    }

    fn truncate(&mut self, len: usize) -> Result<()> {
        Ok(self.cache().truncate(len)?)
    }

    fn forward(&mut self, tokens: &[u32]) -> Result<Vec<f32>> {
        if let Some(batcher) = &self.batcher {
            return batcher.forward(tokens, &self.cache);
        }
        let logits = self.model.forward_last(tokens, &mut self.cache())?;
        logits_values(&logits)
    }

    /// Asks `interrupt` before every layer ([`Model::forward_last_interruptible`]); batched,
    /// once before the pass (a pass is shared, so it is not stopped for one session).
    fn forward_interruptible(
        &mut self,
        tokens: &[u32],
        interrupt: &dyn Fn() -> bool,
    ) -> Result<Option<Vec<f32>>> {
        if self.batcher.is_some() {
            if interrupt() {
                return Ok(None);
            }
            return self.forward(tokens).map(Some);
        }
        let outcome = self
            .model
            .forward_last_interruptible(tokens, &mut self.cache(), interrupt);
        match outcome {
            Ok(logits) => logits_values(&logits).map(Some),
            Err(ModelError::Interrupted) => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    /// One pass ([`Model::forward_verify`]); batched, an item of the batch's pass.
    fn forward_verify(&mut self, tokens: &[u32]) -> Result<Option<Vec<Vec<f32>>>> {
        if let Some(batcher) = &self.batcher {
            return batcher.forward_verify(tokens, &self.cache).map(Some);
        }
        let logits = self.model.forward_verify(tokens, &mut self.cache())?;
        let rows = logits
            .to_vec2::<f32>()
            .map_err(|e| GenError::Backend(format!("reading logits: {e}")))?;
        Ok(Some(rows))
    }

    fn start_generation(&mut self, _prompt_len: usize) {
        if let (Some(batcher), false) = (&self.batcher, self.in_generation) {
            batcher.begin_generation();
            self.in_generation = true;
        }
    }

    fn end_generation(&mut self) {
        if let (Some(batcher), true) = (&self.batcher, self.in_generation) {
            batcher.end_generation();
            self.in_generation = false;
        }
    }
}

impl Drop for ModelBackend {
    fn drop(&mut self) {
        self.end_generation();
    }
}

fn logits_values(logits: &smollm3_model::Tensor) -> Result<Vec<f32>> {
    logits
        .to_vec1::<f32>()
        .map_err(|e| GenError::Backend(format!("reading logits: {e}")))
}

/// A stand-in model that "generates" scripted replies, one per generation: it returns logits
/// that put all the weight on the next token of the current reply (then on `end_token`), so
/// the generation loop (sampling, detokenizing, stops, thinking split, tool calls, cache
/// bookkeeping) can be tested exactly without a model.
#[derive(Debug, Clone)]
pub struct ScriptedBackend {
    vocab_size: usize,
    context: usize,
    end_token: u32,
    replies: VecDeque<Vec<u32>>,
    reply: Vec<u32>,
    reply_start: usize,
    tokens: Vec<u32>,
    forward_calls: Vec<usize>,
    /// Time each generated token takes ([`ScriptedBackend::paced`]).
    per_token: Duration,
    /// Time each token of a prompt chunk takes.
    per_prompt_token: Duration,
}

impl ScriptedBackend {
    pub fn new(vocab_size: usize, context: usize, end_token: u32, replies: Vec<Vec<u32>>) -> Self {
        ScriptedBackend {
            vocab_size,
            context,
            end_token,
            replies: replies.into(),
            reply: Vec::new(),
            reply_start: 0,
            tokens: Vec::new(),
            forward_calls: Vec::new(),
            per_token: Duration::ZERO,
            per_prompt_token: Duration::ZERO,
        }
    }

    /// Takes its time like a model: `per_token` for each generated token, `per_prompt_token`
    /// for each token of a prompt chunk (checking for an interrupt between them), so that a
    /// test or a `--replay` server can act mid-prompt or mid-answer.
    pub fn paced(mut self, per_token: Duration, per_prompt_token: Duration) -> Self {
        self.per_token = per_token;
        self.per_prompt_token = per_prompt_token;
        self
    }

    /// Replies given as text, encoded with special tokens parsed (so `<think>` or
    /// `<tool_call>` become their special ids when the vocabulary has them); each reply ends
    /// with `<|im_end|>` (or the tokenizer's end-of-sequence token).
    pub fn from_texts(tokenizer: &Tokenizer, context: usize, replies: &[&str]) -> Result<Self> {
        let end_token = tokenizer
            .special_token("<|im_end|>")
            .or(tokenizer.eos_id())
            .ok_or_else(|| GenError::InvalidRequest("the tokenizer has no end token".into()))?;
        let replies = replies
            .iter()
            .map(|r| tokenizer.encode(r, true))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Self::new(
            tokenizer.vocab_size(),
            context,
            end_token,
            replies,
        ))
    }

    /// Every token fed so far (the cache contents).
    pub fn tokens(&self) -> &[u32] {
        &self.tokens
    }

    /// The number of tokens of each `forward` call, in order.
    pub fn forward_calls(&self) -> &[usize] {
        &self.forward_calls
    }

    /// Adds a reply for a later generation.
    pub fn push_reply(&mut self, reply: Vec<u32>) {
        self.replies.push_back(reply);
    }
}

impl Backend for ScriptedBackend {
    fn context_size(&self) -> usize {
        self.context
    }

    fn vocab_size(&self) -> usize {
        self.vocab_size
    }

    fn cached_len(&self) -> usize {
        self.tokens.len()
    }

    fn truncate(&mut self, len: usize) -> Result<()> {
        self.tokens.truncate(len);
        Ok(())
    }

    fn forward(&mut self, tokens: &[u32]) -> Result<Vec<f32>> {
        if tokens.is_empty() {
            return Err(GenError::Backend("forward of no tokens".into()));
        }
        if tokens.len() == 1 && !self.per_token.is_zero() {
            std::thread::sleep(self.per_token);
        }
        if self.tokens.len() + tokens.len() > self.context {
            return Err(GenError::Backend(
                "scripted backend: context exceeded".into(),
            ));
        }
        self.tokens.extend_from_slice(tokens);
        self.forward_calls.push(tokens.len());
        let produced = self.tokens.len().saturating_sub(self.reply_start);
        let next = self.reply.get(produced).copied().unwrap_or(self.end_token);
        let mut logits = vec![0.0f32; self.vocab_size];
        if let Some(l) = logits.get_mut(next as usize) {
            *l = 100.0;
        }
        Ok(logits)
    }

    fn forward_interruptible(
        &mut self,
        tokens: &[u32],
        interrupt: &dyn Fn() -> bool,
    ) -> Result<Option<Vec<f32>>> {
        if tokens.len() > 1 && !self.per_prompt_token.is_zero() {
            for _ in tokens {
                if interrupt() {
                    return Ok(None);
                }
                std::thread::sleep(self.per_prompt_token);
            }
        }
        if interrupt() {
            return Ok(None);
        }
        self.forward(tokens).map(Some)
    }

    /// One token at a time (exactly the logits of feeding them so), recorded as one call.
    fn forward_verify(&mut self, tokens: &[u32]) -> Result<Option<Vec<Vec<f32>>>> {
        let mut rows = Vec::with_capacity(tokens.len());
        for &token in tokens {
            rows.push(self.forward(&[token])?);
            self.forward_calls.pop();
        }
        self.forward_calls.push(tokens.len());
        Ok(Some(rows))
    }

    fn start_generation(&mut self, prompt_len: usize) {
        self.reply = self.replies.pop_front().unwrap_or_default();
        self.reply_start = prompt_len;
    }
}
