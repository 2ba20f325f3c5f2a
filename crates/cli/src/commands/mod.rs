//! One module per subcommand family; each holds its flags and its `run`-like entry points.

pub mod chat;
pub mod inspect;
pub mod run;
pub mod tokenizer;
pub mod tools;
