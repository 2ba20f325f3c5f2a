//! A conversation's session and the generation loop.

use std::collections::VecDeque;
use std::ops::ControlFlow;
use std::sync::Arc;
use std::time::Instant;

use smollm3_chat::{
    encode_chat, ChatRequest, ChatTemplate, Message, Role, StreamDecoder, Tokenizer,
};

use crate::backend::{Backend, ModelBackend};
use crate::constraint::{Constraint, Grammar, SharedGrammars};
use crate::draft::DraftLength;
use crate::events::{Completion, Event, FinishReason, Stats, ToolCallSpan};
use crate::sampling::{Sampler, SamplingParams};
use crate::text::{OutputSplitter, Piece, StopMatcher, StopOutcome};
use crate::{CancelHandle, GenError, Result};

/// Prompt tokens processed per model call, with a progress event after each. Larger chunks
/// spread the cost of unpacking the weights per call over more tokens: on the 3B file (Intel
/// Xeon, AVX-512 VNNI, 2 threads, forward-only prefill, two runs each) 64 tokens went at
/// 40–45 tok/s, 128 at 49–51, 256 at 50–52 and 512 at 49–51. A cancel does not wait for the
/// chunk: the model asks for it before every layer ([`Backend::forward_interruptible`]), so it
/// stops within one layer (about 70 ms of a 128-token chunk there); progress comes every
/// 2.5 s or so.
pub const PREFILL_CHUNK: usize = 128;

/// Text forced into the output when the reasoning budget is spent.
const CLOSE_THINK: &str = "\n</think>\n";

/// What to generate from.
#[derive(Debug, Clone)]
pub enum Prompt {
    /// A conversation, rendered with the session's chat template.
    Chat(ChatRequest),
    /// Raw text for completion (no template; a BOS first if the GGUF asks for one).
    Text(String),
    /// Token ids as they are.
    Tokens(Vec<u32>),
}

impl Prompt {
    /// The prompt's token ids: a chat rendered with `template` and encoded with `tokenizer`
    /// (before any old turns are dropped to fit), text encoded for completion, ids as given.
    pub fn encode(&self, tokenizer: &Tokenizer, template: &ChatTemplate) -> Result<Vec<u32>> {
        match self {
            Prompt::Chat(chat) => Ok(encode_chat(template, tokenizer, chat)?.ids),
            Prompt::Text(text) => Ok(tokenizer.encode_for_completion(text)?),
            Prompt::Tokens(ids) => Ok(ids.clone()),
        }
    }
}

/// What to do when a chat prompt does not fit the context.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ContextOverflow {
    /// Fail with [`GenError::PromptTooLong`] (nothing is dropped silently).
    #[default]
    Error,
    /// Drop the oldest turns (a user message and the replies after it), keeping the system
    /// message and the last user message, until the prompt plus room for the answer fits.
    DropOldestTurns,
}

/// One generation's settings.
#[derive(Debug, Clone)]
pub struct GenerateRequest {
    pub prompt: Prompt,
    /// Sampling settings and `max_tokens` (`None` = until the model stops or the context is
    /// full).
    pub sampling: SamplingParams,
    /// Strings that end generation; they are not part of the output.
    pub stop: Vec<String>,
    /// Most reasoning tokens, after which `</think>` is forced (like llama.cpp's
    /// `--reasoning-budget`). `Some(0)` renders the prompt with thinking off.
    pub reasoning_budget: Option<usize>,
    /// Spans reported as [`Event::ToolCall`]: `(open, close)` tags. `None` picks them from a
    /// chat prompt's tools: `<tool_call>` for `tools` / `xml_tools`, `<code>` for
    /// `python_tools`.
    pub tool_tags: Option<Vec<(String, String)>>,
    /// Text the answer must begin with, forced as tokens rather than sampled as soon as the
    /// answer starts: at once with thinking off, right after `</think>` with it on (the
    /// reasoning stays free). The server forces `<tool_call>` this way for `tool_choice`
    /// `required` or a named function.
    pub answer_prefix: Option<String>,
    pub overflow: ContextOverflow,
    pub cancel: Option<CancelHandle>,
    /// Speculative decoding with drafts looked up in the prompt and the output
    /// ([`crate::draft`]): the same answer, sooner when it repeats text it has seen. On by
    /// default; backends that cannot check a draft in one pass ignore it.
    pub prompt_lookup: bool,
    /// What the answer must match ([`crate::constraint`]): every token is drawn from the
    /// tokens that keep it valid, and the answer ends when it is complete. The reasoning
    /// before `</think>` stays free, except that it may not end the turn (the answer would
    /// never be written).
    pub grammar: Option<Grammar>,
}

impl GenerateRequest {
    pub fn new(prompt: Prompt) -> Self {
        GenerateRequest {
            prompt,
            sampling: SamplingParams::default(),
            stop: Vec::new(),
            reasoning_budget: None,
            tool_tags: None,
            answer_prefix: None,
            overflow: ContextOverflow::Error,
            cancel: None,
            prompt_lookup: true,
            grammar: None,
        }
    }

    pub fn chat(request: ChatRequest) -> Self {
        Self::new(Prompt::Chat(request))
    }
}

/// One conversation: a backend with its cache, and the tokens that cache holds.
pub struct Session<B: Backend = ModelBackend> {
    backend: B,
    tokenizer: Arc<Tokenizer>,
    template: Arc<ChatTemplate>,
    /// Exactly the tokens in the backend's cache, in order.
    history: Vec<u32>,
    /// The logits after the first `len` tokens of `history`, kept from the end of the last
    /// prompt read (only when [`Backend::logits_follow_tokens`]): the same prompt asked
    /// again then starts from them, so a request and its seed give the same answer whether
    /// or not its prompt was in the cache. A vocabulary of logits: 0.5 MB for SmolLM3.
    prompt_logits: Option<(usize, Vec<f32>)>,
    grammars: SharedGrammars,
}

impl Session<ModelBackend> {
    /// A session over a loaded model whose cache holds up to `context` tokens.
    pub fn new(
        model: Arc<smollm3_model::Model>,
        tokenizer: Arc<Tokenizer>,
        template: Arc<ChatTemplate>,
        context: usize,
    ) -> Result<Self> {
        let backend = ModelBackend::new(model, context)?;
        Ok(Self::with_backend(backend, tokenizer, template))
    }
}

impl<B: Backend> Session<B> {
    pub fn with_backend(
        backend: B,
        tokenizer: Arc<Tokenizer>,
        template: Arc<ChatTemplate>,
    ) -> Self {
        Session {
            backend,
            tokenizer,
            template,
            history: Vec::new(),
            prompt_logits: None,
            grammars: SharedGrammars::default(),
        }
    }

    /// This session compiles its requests' grammars with `grammars`, shared with other
    /// sessions of the same tokenizer (built once, on first use).
    pub fn with_grammars(mut self, grammars: SharedGrammars) -> Self {
        self.grammars = grammars;
        self
    }

    pub fn backend(&self) -> &B {
        &self.backend
    }

    pub fn tokenizer(&self) -> &Arc<Tokenizer> {
        &self.tokenizer
    }

    pub fn template(&self) -> &Arc<ChatTemplate> {
        &self.template
    }

    /// The tokens the cache holds (prompt and generated tokens of the last generation).
    pub fn cached_tokens(&self) -> &[u32] {
        &self.history
    }

    pub fn context_size(&self) -> usize {
        self.backend.context_size()
    }

    /// Empties the cache.
    pub fn reset(&mut self) -> Result<()> {
        self.backend.truncate(0)?;
        self.history.clear();
        self.prompt_logits = None;
        Ok(())
    }

    /// Renders and encodes a chat request as this session would (for `--show-prompt` style
    /// debugging and context meters). Returns the prompt's token ids.
    pub fn encode_prompt(&self, prompt: &Prompt) -> Result<Vec<u32>> {
        prompt.encode(&self.tokenizer, &self.template)
    }

    /// Starts a generation. Errors about the request (bad sampling settings, a prompt over
    /// the context, a template failure) come here, before any event; the returned iterator
    /// then yields events until [`Event::Done`].
    pub fn generate(&mut self, request: &GenerateRequest) -> Result<Generation<'_, B>> {
        let started = Instant::now();
        if let Some(0) = request.sampling.max_tokens {
            return Err(GenError::InvalidRequest(
                "max_tokens must be at least 1".into(),
            ));
        }
        let sampler = Sampler::new(&request.sampling)?;
        let constraint = match &request.grammar {
            Some(grammar) => Some(self.grammars.get(&self.tokenizer)?.compile(grammar)?),
            None => None,
        };
        let context = self.backend.context_size();
        let vocab = self.backend.vocab_size();

        let mut parse_reasoning = false;
        let mut starts_in_reasoning = false;
        let mut dropped_messages = 0;
        let mut tool_tags = request.tool_tags.clone().unwrap_or_default();
        let prompt: Vec<u32> = match &request.prompt {
            Prompt::Chat(chat) => {
                let mut chat = chat.clone();
                if request.reasoning_budget == Some(0) {
                    chat.enable_thinking = Some(false);
                }
                if request.tool_tags.is_none() {
                    tool_tags = default_tool_tags(&chat);
                }
                let reserve = request
                    .sampling
                    .max_tokens
                    .unwrap_or(1)
                    .clamp(1, (context / 2).max(1));
                let (encoded, dropped) =
                    self.encode_fitting(&mut chat, request.overflow, context, reserve)?;
                dropped_messages = dropped;
                let rendered = encoded.text.trim_end();
                parse_reasoning = chat.enable_thinking != Some(false);
                starts_in_reasoning = parse_reasoning && rendered.ends_with("<think>");
                if rendered.ends_with("</think>") {
                    // The prompt already holds the (empty) think block.
                    parse_reasoning = false;
                }
                encoded.ids
            }
            Prompt::Text(text) => self.tokenizer.encode_for_completion(text)?,
            Prompt::Tokens(ids) => ids.clone(),
        };
        if prompt.is_empty() {
            return Err(GenError::InvalidRequest("the prompt is empty".into()));
        }
        if let Some(&bad) = prompt.iter().find(|&&t| t as usize >= vocab) {
            return Err(GenError::InvalidRequest(format!(
                "prompt token {bad} is outside the vocabulary (size {vocab})"
            )));
        }
        if prompt.len() >= context {
            return Err(GenError::PromptTooLong {
                prompt_tokens: prompt.len(),
                context,
            });
        }

        // Reuse the longest common prefix. The logits after the prompt are needed: kept from
        // when this very prompt was read, or else its last token is run again.
        let common = self
            .history
            .iter()
            .zip(&prompt)
            .take_while(|(a, b)| a == b)
            .count();
        let kept_logits = match &self.prompt_logits {
            Some((len, logits)) if *len == prompt.len() && common >= *len => Some(logits.clone()),
            _ => None,
        };
        let keep = if kept_logits.is_some() {
            prompt.len()
        } else {
            common.min(prompt.len() - 1)
        };
        if self
            .prompt_logits
            .as_ref()
            .is_some_and(|(len, _)| keep < *len)
        {
            // The tokens they follow leave the cache.
            self.prompt_logits = None;
        }
        self.backend.truncate(keep)?;
        self.history.truncate(keep);

        let close_think = if parse_reasoning && request.reasoning_budget.is_some() {
            self.tokenizer.encode(CLOSE_THINK, true)?
        } else {
            Vec::new()
        };
        // With thinking on, the answer may open with a think block, which the grammar does
        // not cover: its first token may also be `<think>`.
        let think_first = (constraint.is_some() && parse_reasoning && !starts_in_reasoning)
            .then(|| self.tokenizer.special_token("<think>"))
            .flatten();
        let eog: Vec<u32> = self.tokenizer.eog_ids();
        let tag_tokens: Vec<u32> = ["<think>", "</think>"]
            .into_iter()
            .chain(tool_tags.iter().flat_map(|(o, c)| [o.as_str(), c.as_str()]))
            .filter_map(|t| self.tokenizer.special_token(t))
            .collect();
        let mut answer_prefix = match &request.answer_prefix {
            Some(prefix) if !prefix.is_empty() => self.tokenizer.encode(prefix, true)?,
            _ => Vec::new(),
        };
        let mut forced = VecDeque::new();
        if !parse_reasoning {
            forced.extend(answer_prefix.drain(..));
        }
        let seed = sampler.seed();
        let prompt_tokens = prompt.len();
        // Last before the iterator exists, whose drop ends the generation: nothing fails
        // in between.
        self.backend.start_generation(prompt.len());
        Ok(Generation {
            stop: StopMatcher::new(&request.stop),
            splitter: OutputSplitter::new(parse_reasoning, starts_in_reasoning, &tool_tags),
            decoder: StreamDecoder::new(false),
            session: self,
            sampler,
            prompt,
            prefilled: keep,
            logits: kept_logits,
            unfed: None,
            forced,
            answer_prefix,
            close_think,
            budget_spent: false,
            eog,
            tag_tokens,
            max_tokens: request.sampling.max_tokens,
            reasoning_budget: request.reasoning_budget,
            cancel: request.cancel.clone(),
            draft: VecDeque::new(),
            draft_length: DraftLength::default(),
            draft_taken: (0, 0),
            draft_pass_secs: 0.0,
            step_secs: None,
            prompt_lookup: request.prompt_lookup,
            constraint,
            think_first,
            events: VecDeque::new(),
            finished: false,
            started,
            prefill_started: None,
            first_token_at: None,
            completion: Completion {
                finish_reason: FinishReason::Stop,
                stopped_by: None,
                reasoning: String::new(),
                answer: String::new(),
                tool_calls: Vec::new(),
                stats: Stats {
                    prompt_tokens,
                    cached_tokens: keep,
                    dropped_messages,
                    seed,
                    ..Stats::default()
                },
            },
        })
    }

    /// Runs a generation to the end, handing each event to `on_event`; returning
    /// `ControlFlow::Break` from it cancels the generation (e.g. when the receiving end of a
    /// channel is gone because an HTTP client disconnected). This is the shape a server uses:
    /// move the session into a blocking task, forward events into a channel, and a dropped
    /// receiver stops the model at the next token.
    pub fn generate_with(
        &mut self,
        request: &GenerateRequest,
        mut on_event: impl FnMut(Event) -> ControlFlow<()>,
    ) -> Result<Completion> {
        let cancel = request.cancel.clone().unwrap_or_default();
        let request = GenerateRequest {
            cancel: Some(cancel.clone()),
            ..request.clone()
        };
        let mut completion = None;
        for event in self.generate(&request)? {
            let event = event?;
            if let Event::Done(c) = &event {
                completion = Some((**c).clone());
            }
            if on_event(event).is_break() {
                cancel.cancel();
            }
        }
        completion.ok_or_else(|| GenError::Backend("generation ended without a result".into()))
    }

    /// Encodes `chat`, dropping old turns if allowed until the prompt and `reserve` tokens fit.
    fn encode_fitting(
        &self,
        chat: &mut ChatRequest,
        overflow: ContextOverflow,
        context: usize,
        reserve: usize,
    ) -> Result<(smollm3_chat::EncodedPrompt, usize)> {
        let mut dropped = 0;
        loop {
            let encoded = encode_chat(&self.template, &self.tokenizer, chat)?;
            let fits = match overflow {
                ContextOverflow::Error => encoded.ids.len() < context,
                ContextOverflow::DropOldestTurns => encoded.ids.len() + reserve <= context,
            };
            if fits {
                return Ok((encoded, dropped));
            }
            let removable = match overflow {
                ContextOverflow::Error => None,
                ContextOverflow::DropOldestTurns => oldest_turn(&chat.messages),
            };
            match removable {
                Some(range) => {
                    dropped += range.len();
                    chat.messages.drain(range);
                }
                // Nothing more to drop: fail if it does not fit at all, else run with less
                // room for the answer than asked.
                None if encoded.ids.len() < context => return Ok((encoded, dropped)),
                None => {
                    return Err(GenError::PromptTooLong {
                        prompt_tokens: encoded.ids.len(),
                        context,
                    })
                }
            }
        }
    }
}

/// The oldest droppable turn: from the first non-system message up to the next user message
/// after it; `None` when only the last user turn is left.
fn oldest_turn(messages: &[Message]) -> Option<std::ops::Range<usize>> {
    let start = messages.iter().position(|m| m.role != Role::System)?;
    let last_user = messages.iter().rposition(|m| m.role == Role::User)?;
    if start >= last_user {
        return None;
    }
    let end = messages[start + 1..]
        .iter()
        .position(|m| m.role == Role::User)
        .map_or(messages.len(), |i| start + 1 + i);
    Some(start..end.min(last_user))
}

fn default_tool_tags(chat: &ChatRequest) -> Vec<(String, String)> {
    let mut tags = Vec::new();
    if chat.tools.is_some() || chat.xml_tools.is_some() {
        tags.push(("<tool_call>".to_string(), "</tool_call>".to_string()));
    }
    if chat.python_tools.is_some() {
        tags.push(("<code>".to_string(), "</code>".to_string()));
    }
    tags
}

/// A running generation: an iterator of [`Event`]s ending with [`Event::Done`]. Dropping it
/// early is fine: the session's cache keeps what was processed.
pub struct Generation<'s, B: Backend> {
    session: &'s mut Session<B>,
    sampler: Sampler,
    /// The request's grammar, applied to the answer's sampled tokens.
    constraint: Option<Constraint>,
    /// `<think>`, allowed beside the grammar's tokens as the first token (thinking on).
    think_first: Option<u32>,
    stop: StopMatcher,
    splitter: OutputSplitter,
    decoder: StreamDecoder,
    prompt: Vec<u32>,
    /// Prompt tokens in the cache so far.
    prefilled: usize,
    /// Logits for the next token, once the prompt is processed.
    logits: Option<Vec<f32>>,
    /// A generated token not yet run through the model.
    unfed: Option<u32>,
    /// Tokens to emit instead of sampling (the forced `</think>`).
    forced: VecDeque<u32>,
    /// [`GenerateRequest::answer_prefix`] while the reasoning is still being written: forced
    /// once it closes.
    answer_prefix: Vec<u32>,
    close_think: Vec<u32>,
    budget_spent: bool,
    eog: Vec<u32>,
    /// Special tokens whose text is a tag the splitter needs (`<think>`, tool-call tags).
    tag_tokens: Vec<u32>,
    max_tokens: Option<usize>,
    reasoning_budget: Option<usize>,
    cancel: Option<CancelHandle>,
    /// Drafted tokens in the cache beyond `history`, each with the logits after it.
    draft: VecDeque<(u32, Vec<f32>)>,
    draft_length: DraftLength,
    /// The pending draft's length and how many of it were taken so far.
    draft_taken: (usize, usize),
    /// Seconds of the pending draft's pass, and a running average of a plain one-token step:
    /// whether drafts pay on this model and machine.
    draft_pass_secs: f64,
    step_secs: Option<f64>,
    /// Off for this generation: not asked for, or the backend cannot verify a draft.
    prompt_lookup: bool,
    events: VecDeque<Event>,
    finished: bool,
    started: Instant,
    prefill_started: Option<Instant>,
    first_token_at: Option<Instant>,
    completion: Completion,
}

impl<B: Backend> Drop for Generation<'_, B> {
    fn drop(&mut self) {
        self.session.backend.end_generation();
    }
}

impl<B: Backend> Iterator for Generation<'_, B> {
    type Item = Result<Event>;

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            if let Some(event) = self.events.pop_front() {
                return Some(Ok(event));
            }
            if self.finished {
                return None;
            }
            if let Err(e) = self.step() {
                self.finished = true;
                self.events.clear();
                return Some(Err(e));
            }
        }
    }
}

impl<B: Backend> Generation<'_, B> {
    /// Runs to the end and returns the collected output.
    pub fn complete(mut self) -> Result<Completion> {
        for event in self.by_ref() {
            if let Event::Done(completion) = event? {
                return Ok(*completion);
            }
        }
        Err(GenError::Backend(
            "generation ended without a result".into(),
        ))
    }

    /// Prompt length in tokens.
    pub fn prompt_tokens(&self) -> usize {
        self.prompt.len()
    }

    fn cancelled(&self) -> bool {
        self.cancel.as_ref().is_some_and(CancelHandle::is_cancelled)
    }

    fn step(&mut self) -> Result<()> {
        if self.cancelled() {
            self.finish(FinishReason::Cancelled, None, true);
            return Ok(());
        }
        if let Some(token) = self.unfed.take() {
            if self.feed_with_draft(token)? {
                return Ok(());
            }
            let start = Instant::now();
            let logits = self.session.backend.forward(&[token])?;
            let secs = start.elapsed().as_secs_f64();
            self.step_secs = Some(self.step_secs.map_or(secs, |s| 0.7 * s + 0.3 * secs));
            self.session.history.push(token);
            self.logits = Some(logits);
            return Ok(());
        }
        match self.logits.take() {
            None => self.prefill_chunk(),
            Some(logits) => self.decode_one(logits),
        }
    }

    /// Feeds `token` with a draft of the tokens after it ([`crate::draft::lookup`]) in one
    /// pass when there is one and the backend checks drafts; false if it fed nothing.
    fn feed_with_draft(&mut self, token: u32) -> Result<bool> {
        if !self.prompt_lookup || !self.forced.is_empty() {
            return Ok(false);
        }
        let history = &self.session.history;
        // Never past what may still be generated or cached: a token beyond would be wasted.
        let left_to_generate = self.max_tokens.map_or(usize::MAX, |m| {
            m.saturating_sub(self.completion.stats.generated_tokens)
        });
        let room = self
            .session
            .backend
            .context_size()
            .saturating_sub(history.len() + 1);
        let max = self.draft_length.get().min(left_to_generate).min(room);
        let mut sequence = Vec::with_capacity(history.len() + 1);
        sequence.extend_from_slice(history);
        sequence.push(token);
        let draft = crate::draft::lookup(&sequence, max);
        if draft.is_empty() {
            return Ok(false);
        }
        let mut fed = Vec::with_capacity(draft.len() + 1);
        fed.push(token);
        fed.extend_from_slice(&draft);
        let start = Instant::now();
        let Some(mut logits) = self.session.backend.forward_verify(&fed)? else {
            // The backend checks no drafts: not again in this generation.
            self.prompt_lookup = false;
            return Ok(false);
        };
        if logits.len() != fed.len() {
            return Err(GenError::Backend(format!(
                "a draft of {} tokens got {} rows of logits",
                fed.len(),
                logits.len()
            )));
        }
        self.draft_pass_secs = start.elapsed().as_secs_f64();
        self.session.history.push(token);
        let after_drafts = logits.split_off(1);
        self.logits = logits.pop();
        self.draft = draft.into_iter().zip(after_drafts).collect();
        self.draft_taken = (self.draft.len(), 0);
        self.completion.stats.draft_tokens += self.draft.len();
        Ok(true)
    }

    /// `token`, just sampled or forced, against the draft's next token: the same, and the
    /// drafted token is taken with the logits after it; otherwise what was drafted leaves the
    /// cache. False when there was no draft to take it from.
    fn take_draft(&mut self, token: u32) -> Result<bool> {
        let Some((drafted, logits)) = self.draft.pop_front() else {
            return Ok(false);
        };
        if drafted == token {
            self.session.history.push(token);
            self.completion.stats.draft_accepted += 1;
            self.draft_taken.1 += 1;
            self.logits = Some(logits);
            if self.draft.is_empty() {
                self.draft_ended();
            }
            return Ok(true);
        }
        self.draft.clear();
        self.draft_ended();
        self.session.backend.truncate(self.session.history.len())?;
        Ok(false)
    }

    /// Sizes the next draft from how this one went.
    fn draft_ended(&mut self) {
        let (drafted, accepted) = self.draft_taken;
        let paid = crate::draft::paid(accepted, self.draft_pass_secs, self.step_secs);
        self.draft_length.update(drafted, accepted, paid);
    }

    fn prefill_chunk(&mut self) -> Result<()> {
        let start = *self.prefill_started.get_or_insert_with(Instant::now);
        let end = (self.prefilled + PREFILL_CHUNK).min(self.prompt.len());
        let chunk = &self.prompt[self.prefilled..end];
        let cancel = self.cancel.clone();
        let interrupt = || cancel.as_ref().is_some_and(CancelHandle::is_cancelled);
        let Some(logits) = self
            .session
            .backend
            .forward_interruptible(chunk, &interrupt)?
        else {
            // Cancelled during the chunk: nothing of it was cached.
            self.finish(FinishReason::Cancelled, None, true);
            return Ok(());
        };
        self.session.history.extend_from_slice(chunk);
        self.completion.stats.prefilled_tokens += chunk.len();
        self.prefilled = end;
        self.events.push_back(Event::PrefillProgress {
            processed: end,
            total: self.prompt.len(),
        });
        if end == self.prompt.len() {
            let stats = &mut self.completion.stats;
            stats.prefill_ms = start.elapsed().as_secs_f64() * 1e3;
            stats.prefill_tokens_per_second = per_second(stats.prefilled_tokens, stats.prefill_ms);
            if self.session.backend.logits_follow_tokens() {
                self.session.prompt_logits = Some((end, logits.clone()));
            }
            self.logits = Some(logits);
        }
        Ok(())
    }

    fn decode_one(&mut self, mut logits: Vec<f32>) -> Result<()> {
        // The grammar holds the answer's sampled tokens: not the reasoning, not the tokens
        // forced after it (`</think>`, an answer prefix).
        let constrained = self.forced.is_empty() && !self.splitter.in_reasoning();
        let think_first = if constrained {
            self.think_first.take()
        } else {
            None
        };
        let token = match self.forced.pop_front() {
            Some(t) => t,
            None => {
                if constrained {
                    self.mask_answer(&mut logits, think_first)?;
                } else if self.constraint.is_some() {
                    // In the reasoning of a constrained answer: it may not end the turn
                    // there, or the answer the grammar holds would never be written.
                    for &end in &self.eog {
                        if let Some(logit) = logits.get_mut(end as usize) {
                            *logit = f32::NEG_INFINITY;
                        }
                    }
                }
                self.sampler.sample(&mut logits)?
            }
        };
        self.sampler.accept(token);
        let mut grammar_complete = false;
        if let (Some(constraint), true) = (self.constraint.as_mut(), constrained) {
            if !self.eog.contains(&token) && think_first != Some(token) {
                constraint.accept(token)?;
                grammar_complete = constraint.is_finished();
            }
        }
        if self.first_token_at.is_none() {
            self.first_token_at = Some(Instant::now());
            self.completion.stats.time_to_first_token_ms =
                self.started.elapsed().as_secs_f64() * 1e3;
        }
        let stats = &mut self.completion.stats;
        stats.generated_tokens += 1;
        if self.splitter.in_reasoning() {
            stats.reasoning_tokens += 1;
        }
        if self.eog.contains(&token) {
            let text = self.session.tokenizer.decode(&[token], false)?;
            self.finish(FinishReason::Stop, Some(text), true);
            return Ok(());
        }
        // Control tokens print nothing (as in llama.cpp), except the tags the splitter reads.
        let tokenizer = &self.session.tokenizer;
        let text = if tokenizer.is_special(token) && !self.tag_tokens.contains(&token) {
            String::new()
        } else {
            self.decoder.push(tokenizer, token)?
        };
        let was_reasoning = self.splitter.in_reasoning();
        if let Some(stop) = self.emit(&text) {
            self.finish(FinishReason::Stop, Some(stop), false);
            return Ok(());
        }
        if was_reasoning && !self.splitter.in_reasoning() {
            // The reasoning just closed: the answer starts here (after any forced `</think>`).
            self.forced.extend(self.answer_prefix.drain(..));
        }
        if grammar_complete {
            // Nothing may follow: the answer is complete (as if the model ended its turn).
            self.finish(FinishReason::Stop, None, true);
            return Ok(());
        }
        if let Some(budget) = self.reasoning_budget {
            let spent = self.completion.stats.reasoning_tokens >= budget;
            if spent && !self.budget_spent && self.splitter.in_reasoning() {
                self.budget_spent = true;
                self.forced.extend(self.close_think.iter().copied());
            }
        }
        if self
            .max_tokens
            .is_some_and(|m| self.completion.stats.generated_tokens >= m)
        {
            self.finish(FinishReason::Length, None, true);
            return Ok(());
        }
        // The token must go into the cache to get the next logits.
        if self.session.history.len() >= self.session.backend.context_size() {
            self.finish(FinishReason::Length, None, true);
            return Ok(());
        }
        // A drafted token the model agrees with is in the cache already, with its logits.
        if self.take_draft(token)? {
            return Ok(());
        }
        // Fed on the next step, so its text reaches the caller before the model runs again.
        self.unfed = Some(token);
        Ok(())
    }

    /// The request's grammar applied to `logits`, if it has one; `think_first` (`<think>`)
    /// keeps its logit, as the answer may open with a think block the grammar does not cover.
    fn mask_answer(&mut self, logits: &mut [f32], think_first: Option<u32>) -> Result<()> {
        let Some(constraint) = self.constraint.as_mut() else {
            return Ok(());
        };
        let think = think_first.and_then(|t| Some((t as usize, *logits.get(t as usize)?)));
        constraint.mask(logits)?;
        if let Some((think, logit)) = think {
            logits[think] = logit;
        }
        Ok(())
    }

    /// Passes text through the stop matcher and the splitter; returns the stop string if one
    /// was found.
    fn emit(&mut self, text: &str) -> Option<String> {
        if text.is_empty() {
            return None;
        }
        match self.stop.push(text) {
            StopOutcome::Emit(safe) => {
                let pieces = self.splitter.push(&safe);
                self.push_pieces(pieces);
                None
            }
            StopOutcome::Stopped { before, stop } => {
                let pieces = self.splitter.push(&before);
                self.push_pieces(pieces);
                Some(stop)
            }
        }
    }

    fn push_pieces(&mut self, pieces: Vec<Piece>) {
        for piece in pieces {
            let event = match piece {
                Piece::Reasoning(text) => {
                    self.completion.reasoning.push_str(&text);
                    Event::Reasoning { text }
                }
                Piece::Answer(text) => {
                    self.completion.answer.push_str(&text);
                    Event::Answer { text }
                }
                Piece::ToolCall { raw, complete } => {
                    let span = ToolCallSpan { raw, complete };
                    self.completion.tool_calls.push(span.clone());
                    Event::ToolCall(span)
                }
            };
            self.events.push_back(event);
        }
    }

    /// Ends the generation. `flush` emits the text still held back (partial UTF-8, a
    /// possible stop-string start); after a stop string it is dropped instead.
    fn finish(&mut self, reason: FinishReason, stopped_by: Option<String>, flush: bool) {
        // Drafted tokens not taken leave the cache, which must hold exactly the history. (A
        // truncation to less than the cache holds cannot fail.)
        if !self.draft.is_empty() || self.session.backend.cached_len() > self.session.history.len()
        {
            self.draft.clear();
            let _ = self.session.backend.truncate(self.session.history.len());
        }
        let mut reason = reason;
        let mut stopped_by = stopped_by;
        if flush {
            let tail = self.decoder.finish();
            if let Some(stop) = self.emit(&tail) {
                reason = FinishReason::Stop;
                stopped_by = Some(stop);
            } else {
                let held = self.stop.finish();
                let pieces = self.splitter.push(&held);
                self.push_pieces(pieces);
            }
        }
        let pieces = self.splitter.finish();
        self.push_pieces(pieces);
        if reason == FinishReason::Stop && self.completion.tool_calls.iter().any(|c| c.complete) {
            reason = FinishReason::ToolCalls;
        }
        let now = Instant::now();
        let stats = &mut self.completion.stats;
        if let Some(first) = self.first_token_at {
            stats.decode_ms = now.duration_since(first).as_secs_f64() * 1e3;
            stats.decode_tokens_per_second =
                per_second(stats.generated_tokens.saturating_sub(1), stats.decode_ms);
        }
        self.completion.finish_reason = reason;
        self.completion.stopped_by = stopped_by;
        self.events
            .push_back(Event::Done(Box::new(self.completion.clone())));
        self.finished = true;
    }
}

fn per_second(tokens: usize, ms: f64) -> f64 {
    if ms > 0.0 {
        tokens as f64 * 1e3 / ms
    } else {
        0.0
    }
}
