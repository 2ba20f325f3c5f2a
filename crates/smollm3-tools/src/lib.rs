//! SmolLM3 tool calling.
//!
//! - [`ToolDefinition`]: name, description and JSON-schema parameters, in the OpenAI `tools`
//!   shape or bare.
//! - [`Registry`]: tools behind one [`Tool`] trait; arguments are validated against the
//!   schema before a tool runs, each call has a timeout, and every failure becomes a result
//!   sent back to the model rather than an error.
//! - [`parse`]: SmolLM3's two formats, `<tool_call>{json}</tool_call>` and
//!   `<code>tool(arg=...)</code>` (Python call syntax with literal arguments only; nothing is
//!   ever executed).
//! - [`grammar`]: a grammar for the answer so every call parses and matches its tool's schema
//!   ([`call_grammar`]; `tool_choice` as [`CallChoice`]).
//! - [`builtins`]: a calculator, the current time, and read-only files under one directory.
//! - [`agent`]: render with tools, generate, parse, run, feed results back, repeat.
//!
//! The library never prints and never panics on input.

pub mod agent;
pub mod builtins;
mod call;
mod definition;
mod error;
pub mod grammar;
pub mod parse;
mod registry;

pub use call::{ParsedCall, ToolCall, ToolFormat, ToolOutcome};
pub use definition::ToolDefinition;
pub use error::{Result, ToolsError};
pub use grammar::{call_grammar, CallChoice, CallGrammar};
pub use registry::{Registry, Tool};
