//! The flags the `smollm3` binaries share, defined once (ripgrep keeps its flags in one place
//! for the same reason): a new flag, default or hint is written here and every binary has it.
//!
//! - [`ModelSource`] / [`ModelArgs`]: `--model` (a GGUF path or a Hugging Face reference,
//!   downloaded with a progress bar when missing), `--offline`, `--ctx` and the rope
//!   overrides, and loading with a spinner on a terminal.
//! - [`SamplingArgs`]: `--temperature`, `--top-p`, ..., `-n/--max-tokens`, generated from
//!   `smollm3_gen::SETTINGS`.
//! - [`error_line`]: any error as one `error: ...` line, whatever `RUST_BACKTRACE` says.
//! - [`explain_bus_errors`]: a model file truncated under its mapping ends the process with
//!   one line saying so, not "Bus error (core dumped)".
//!
//! For binaries: unlike the library crates, this one draws progress on stderr.
//!
//! ```
//! use clap::Parser;
//! use smollm3_flags::SamplingArgs;
//!
//! #[derive(Parser)]
//! struct Cli {
//!     #[command(flatten)]
//!     sampling: SamplingArgs,
//! }
//!
//! let cli = Cli::parse_from(["prog", "--top-p", "0.5", "-n", "64"]);
//! let params = cli.sampling.params();
//! assert_eq!((params.top_p, params.max_tokens, params.temperature), (0.5, Some(64), 0.6));
//! ```

mod bus_error;
mod model;
mod sampling;

pub use bus_error::explain_bus_errors;
pub use model::{parse_tokens, ModelArgs, ModelSource, RopeScalingKind};
pub use sampling::SamplingArgs;

use smollm3_gen::GenError;

/// The error as one line, whatever `RUST_BACKTRACE` says: the chain of causes, a hint naming
/// the flag to change where the library's message cannot, and nothing of a backtrace (the
/// libraries keep their messages to one line; this is the net under them).
pub fn error_line(e: &anyhow::Error) -> String {
    let text = format!("{e:#}");
    let mut line = text
        .lines()
        .take_while(|l| !is_backtrace_frame(l))
        .map(str::trim)
        .filter(|l| !l.is_empty() && *l != "Stack backtrace:")
        .collect::<Vec<_>>()
        .join(" ");
    let too_long = e
        .chain()
        .any(|c| matches!(c.downcast_ref(), Some(GenError::PromptTooLong { .. })));
    if too_long {
        line.push_str(" (raise --ctx)");
    }
    line
}

/// `   0: std::backtrace::...` or `  12: main`: a line of a printed backtrace.
fn is_backtrace_frame(line: &str) -> bool {
    let t = line.trim_start();
    let digits = t.chars().take_while(char::is_ascii_digit).count();
    digits > 0 && line.len() - t.len() >= 2 && t[digits..].starts_with(": ")
}
