//! Flags shared by several subcommands, defined once: which model and how to load it
//! ([`ModelArgs`]), how answers are generated ([`AnswerArgs`], with the sampling flags built
//! from `smollm3_gen::SETTINGS`), and which tools the model may call ([`ToolArgs`]).

mod answer;
mod model;
mod sampling;
mod tools;

pub use answer::AnswerArgs;
pub use model::{parse_tokens, ModelArgs, ModelSource};
pub use tools::{read_tool_definitions, ToolArgs, ToolFormatArg, ToolSetup};
