//! `smollm3-web`: SmolLM3 served to many clients at once. The server core is kept apart from
//! HTTP so that the OpenAI-compatible API and the web chat (next) both go through it:
//!
//! - [`router`] ([`AppState`]): the OpenAI-compatible API (`/v1/chat/completions` and
//!   `/v1/completions` streamed and not, with reasoning and tool calls; `/v1/models`,
//!   `/health`, `/metrics`, `/tokenize`, `/detokenize`, `/apply-template`, `/props`,
//!   `/slots`) with OpenAI-shaped [`ApiError`]s; [`Metrics`] counts what it serves.
//! - [`chat`]: the web chat at `/` (server-rendered HTML, htmx, SSE), its conversations kept
//!   by [`chat::Store`] in the data directory.
//! - [`Scheduler`]: a fixed set of sessions (slots), each with its own KV cache and
//!   generation thread, behind one bounded FIFO queue; a request goes to the idle slot that
//!   already holds the longest prefix of its prompt, and a dropped [`Ticket`] receiver cancels
//!   its generation. [`SchedulerStatus`] feeds `/slots` and `/metrics`.
//! - [`serve`] ([`ServeOptions`]): the HTTP/1.1 accept loop, with deadlines on request heads
//!   and on the shutdown.
//!
//! ```
//! # use smollm3_web::{JobEvent, Scheduler, SchedulerOptions};
//! # use smollm3_gen::{Event, GenerateRequest, Prompt, ScriptedBackend, Session};
//! # use std::sync::Arc;
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! # let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fixtures/gguf/smollm3-tiny-f32.gguf");
//! # if !path.exists() { return Ok(()); } // fixtures come from `cargo xtask gen-fixtures`
//! let tokenizer = Arc::new(smollm3_chat::Tokenizer::from_gguf(&path)?);
//! let template = Arc::new(smollm3_chat::ChatTemplate::official()?);
//! // Two slots whose "model" plays back a scripted reply.
//! let sessions = (0..2)
//!     .map(|_| -> Result<_, smollm3_gen::GenError> {
//!         let backend = ScriptedBackend::from_texts(&tokenizer, 512, &["Hello!"])?;
//!         Ok(Session::with_backend(backend, tokenizer.clone(), template.clone()))
//!     })
//!     .collect::<Result<Vec<_>, _>>()?;
//! let scheduler = Scheduler::new(sessions, SchedulerOptions::default())?;
//! let mut ticket = scheduler.submit(GenerateRequest::new(Prompt::Text("Hi".into())))?;
//! let mut answer = String::new();
//! while let Some(JobEvent::Event(event)) = ticket.events.blocking_recv() {
//!     if let Event::Answer { text } = event {
//!         answer.push_str(&text);
//!     }
//! }
//! assert_eq!(answer, "Hello!");
//! # Ok(())
//! # }
//! ```
//!
//! The library never prints and never panics on input.

mod api;
pub mod chat;
mod scheduler;
mod serve;

pub use api::{router, ApiError, AppState, Metrics};
pub use serve::{serve, ServeOptions};

pub use scheduler::{
    JobEvent, Scheduler, SchedulerOptions, SchedulerStatus, SlotStatus, SubmitError, Ticket,
};
