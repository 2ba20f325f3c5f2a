use thiserror::Error;

/// Errors of this crate. Errors *of a tool call* (unknown tool, invalid arguments, a tool that
/// failed or timed out) are not here: they become a [`crate::ToolOutcome`] sent back to the
/// model.
#[derive(Debug, Error)]
pub enum ToolsError {
    #[error("tool definition: {0}")]
    Definition(String),
    /// A call grammar that cannot be built for these tools.
    #[error("{0}")]
    Grammar(String),
    #[error("a tool named {0:?} is already registered")]
    Duplicate(String),
    #[error(transparent)]
    Generation(#[from] smollm3_gen::GenError),
    #[error(transparent)]
    Chat(#[from] smollm3_chat::Error),
}

pub type Result<T, E = ToolsError> = std::result::Result<T, E>;
