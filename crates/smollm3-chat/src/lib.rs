//! SmolLM3's tokenizer, built from a GGUF file's metadata, and its chat template, rendered byte
//! for byte as Hugging Face `transformers.apply_chat_template` renders it.
//!
//! - [`Tokenizer`]: a `tokenizers::Tokenizer` assembled from `tokenizer.ggml.*` (byte-level BPE,
//!   the pre-tokenizer named by `tokenizer.ggml.pre`, added tokens from the token types), or
//!   loaded from a user-provided `tokenizer.json`. Special tokens are found by their text.
//! - [`Detokenizer`]: incremental decoding for streaming; never emits a broken UTF-8 sequence.
//! - [`ChatTemplate`]: the GGUF's `tokenizer.chat_template` (or the built-in official SmolLM3
//!   template) rendered with minijinja in HF's configuration.
//! - [`encode_chat`]: renders a conversation and encodes it so that only the markers the template
//!   itself emits become special tokens; text from users and tools is always plain text.
//!
//! The library never prints and never panics on input: every failure is an [`Error`].

mod error;
mod gguf_meta;
mod prompt;
mod pyrepr;
mod template;
mod time;
mod tokenizer;

pub use error::{Error, Result, TemplateError};
pub use prompt::{encode_chat, EncodedPrompt, Segment};
pub use template::{ChatRequest, ChatTemplate, OFFICIAL_TEMPLATE};
pub use time::{Clock, DateTime, FixedClock, SystemClock};
pub use tokenizer::{Detokenizer, PreTokenizerKind, StreamDecoder, Tokenizer};
