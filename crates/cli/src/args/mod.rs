//! Flags shared by several subcommands, defined once: which model and how to load it
//! ([`ModelArgs`], from `smollm3-flags`, which `smollm3-web` shares), how answers are generated
//! ([`AnswerArgs`], with the sampling flags of `smollm3-flags`), what an answer must match
//! ([`ConstraintArgs`]), and which tools the model may call ([`ToolArgs`]).

mod answer;
mod constraint;
mod tools;

pub use answer::AnswerArgs;
pub use constraint::ConstraintArgs;
pub use smollm3_flags::{parse_tokens, ModelArgs, ModelSource};
pub use tools::{read_tool_definitions, ToolArgs, ToolFormatArg, ToolSetup};
