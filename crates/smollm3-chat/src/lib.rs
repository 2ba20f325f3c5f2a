//! SmolLM3's tokenizer, built from a GGUF file's metadata, and its chat template, rendered byte
//! for byte as Hugging Face `transformers.apply_chat_template` renders it.
//!
//! - [`Tokenizer`]: a `tokenizers::Tokenizer` assembled from `tokenizer.ggml.*` (byte-level BPE,
//!   the pre-tokenizer named by `tokenizer.ggml.pre`, added tokens from the token types), or
//!   loaded from a user-provided `tokenizer.json`. Special tokens are found by their text.
//! - [`StreamDecoder`]: incremental decoding for streaming; never emits a broken UTF-8 sequence.
//! - [`Message`] ([`Role`], [`Content`], [`ToolCall`]): one conversation message in OpenAI's
//!   JSON shape, read with errors that name the field.
//! - [`ChatRequest`]: the messages and the template's switches (thinking, tools);
//!   [`ChatTemplate`]: the GGUF's `tokenizer.chat_template` (or the built-in official SmolLM3
//!   template) rendered with minijinja in HF's configuration.
//! - [`encode_chat`]: renders a conversation and encodes it so that only the markers the template
//!   itself emits become special tokens; text from users and tools is always plain text.
//!
//! ```
//! use smollm3_chat::{ChatRequest, ChatTemplate, Message};
//!
//! let mut chat = ChatRequest::from_messages_json(r#"[{"role": "user", "content": "Hi"}]"#)?;
//! chat.push(Message::assistant("Hello!"));
//! chat.push(Message::user("How are you?"));
//! chat.add_generation_prompt = true;
//! chat.enable_thinking = Some(false);
//! let prompt = ChatTemplate::official()?.render(&chat)?;
//! assert!(prompt.ends_with(
//!     "<|im_start|>user\nHow are you?<|im_end|>\n<|im_start|>assistant\n<think>\n\n</think>\n"
//! ));
//! # Ok::<(), smollm3_chat::Error>(())
//! ```
//!
//! The library never prints and never panics on input: every failure is an [`Error`].

mod error;
mod gguf_meta;
mod message;
mod prompt;
mod pyrepr;
mod template;
mod time;
mod tokenizer;

pub use error::{Error, Result, TemplateError};
pub use message::{Content, ContentPart, FunctionCall, Message, Role, ToolCall};
pub use prompt::{encode_chat, EncodedPrompt, Segment};
pub use template::{ChatRequest, ChatTemplate, OFFICIAL_TEMPLATE};
pub use time::{Clock, DateTime, FixedClock, SystemClock};
pub use tokenizer::{PreTokenizerKind, StreamDecoder, Tokenizer};
