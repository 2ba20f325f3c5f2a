//! Streaming text generation for SmolLM3 (and the Llama-architecture models `smollm3-model`
//! runs): one [`Session`] per conversation keeps its token history and KV cache, and each
//! [`Session::generate`] call returns a [`Generation`], an iterator of [`Event`]s:
//!
//! - [`Event::PrefillProgress`] while the prompt is processed (in chunks, so it can be
//!   cancelled),
//! - [`Event::Reasoning`] / [`Event::Answer`] text deltas (the `<think>...</think>` block is
//!   split from the answer, even when a tag is cut across tokens),
//! - [`Event::ToolCall`] once a `<tool_call>...</tool_call>` (or `<code>...</code>`) span is
//!   complete, with its raw text for the tools crate to parse,
//! - [`Event::Done`] last, with the [`FinishReason`] and [`Stats`].
//!
//! Sampling and max tokens ([`SamplingParams`], whose settings are listed once in
//! [`SETTINGS`] for every front end), stop strings, the context limit, a reasoning budget and
//! cancellation ([`CancelHandle`]) are per request ([`GenerateRequest`]). A new
//! turn reuses the longest common token prefix with what the session already processed.
//!
//! The iterator is synchronous: an async server drives it on a blocking thread and forwards
//! the events through a channel. The model sits behind the [`Backend`] trait, so the loop can
//! be tested exactly with a [`ScriptedBackend`].
//!
//! Two ways to more tokens per second, neither changing an answer: [`draft`] (prompt-lookup
//! speculative decoding: the next tokens guessed from the prompt and output, checked in one
//! pass; on by default, [`GenerateRequest::prompt_lookup`], counted in [`Stats`]) and
//! [`Batcher`] (a server's sessions made by [`Engine::batched_sessions`] step together in
//! one batched pass).
//!
//! [`constraint`] compiles a JSON Schema, a regular expression or a Lark grammar into a
//! [`Constraint`] that masks the logits before each draw, so an output cannot break it
//! (llguidance over our tokenizer; [`GenerateRequest::grammar`] applies one to an answer).
//!
//! ```no_run
//! use smollm3_chat::{ChatRequest, Message};
//! use smollm3_gen::{Engine, Event, GenerateRequest, SamplingParams};
//!
//! # fn main() -> Result<(), smollm3_gen::GenError> {
//! let engine = Engine::load("SmolLM3-3B-Q4_K_M.gguf", &Default::default())?;
//! let mut session = engine.session(8192)?; // one per conversation; keeps its cache
//! let mut chat = ChatRequest { add_generation_prompt: true, ..Default::default() };
//! chat.push(Message::user("Why is the sky blue?"));
//! let request = GenerateRequest {
//!     sampling: SamplingParams { seed: Some(1), max_tokens: Some(512), ..Default::default() },
//!     ..GenerateRequest::chat(chat)
//! };
//! for event in session.generate(&request)? {
//!     match event? {
//!         Event::Reasoning { text } => eprint!("{text}"),
//!         Event::Answer { text } => print!("{text}"),
//!         Event::Done(done) => println!("\n[{}] {:?}", done.finish_reason.as_str(), done.stats),
//!         _ => {}
//!     }
//! }
//! # Ok(())
//! # }
//! ```
//!
//! The library never prints and never panics on input: every failure is a [`GenError`].

mod backend;
mod batch;
mod cancel;
pub mod constraint;
pub mod draft;
mod engine;
mod error;
mod events;
mod params;
pub mod sampling;
mod session;
mod text;

pub use backend::{Backend, ModelBackend, ScriptedBackend};
pub use batch::{BatchStats, Batcher, GATHER, PASS_SHARE, PROMPT_GATHER};
pub use cancel::CancelHandle;
pub use constraint::{Constraint, Grammar, Grammars, SharedGrammars};
pub use engine::Engine;
pub use error::{GenError, Result};
pub use events::{Completion, Event, FinishReason, Stats, ToolCallSpan};
pub use params::{Setting, SETTINGS};
pub use sampling::{Sampler, SamplingParams};
pub use session::{ContextOverflow, GenerateRequest, Generation, Prompt, Session, PREFILL_CHUNK};
pub use text::{OutputSplitter, Piece, QuoteTracker, StopMatcher, StopOutcome};
