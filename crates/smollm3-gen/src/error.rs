use thiserror::Error;

/// Everything that can go wrong while preparing or running a generation.
#[derive(Debug, Error)]
pub enum GenError {
    #[error(transparent)]
    Model(#[from] smollm3_model::ModelError),
    #[error(transparent)]
    Chat(#[from] smollm3_chat::Error),
    #[error("invalid sampling settings: {0}")]
    InvalidSampling(String),
    #[error("invalid request: {0}")]
    InvalidRequest(String),
    /// The prompt does not fit: generation needs at least one free position after it.
    #[error(
        "the prompt has {prompt_tokens} tokens but the context holds {context} \
         (at most {} prompt tokens); shorten the conversation, use a larger context, or allow \
         dropping old turns",
        context.saturating_sub(1)
    )]
    PromptTooLong {
        prompt_tokens: usize,
        context: usize,
    },
    #[error("model backend: {0}")]
    Backend(String),
}

pub type Result<T, E = GenError> = std::result::Result<T, E>;
