use std::path::PathBuf;

/// Everything that can go wrong loading or running a model.
///
/// Each variant names the offending file, key, tensor or value so that the message alone tells
/// the user what to fix.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ModelError {
    #[error("cannot open model file {path}: {source}")]
    Open {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path} is not a GGUF file (magic bytes {found:?}, expected \"GGUF\")")]
    NotGguf { path: PathBuf, found: [u8; 4] },
    #[error("{path} is truncated or corrupt: {detail}")]
    Corrupt { path: PathBuf, detail: String },
    #[error("unsupported architecture {found:?} (supported: {})", supported.join(", "))]
    UnsupportedArchitecture {
        found: String,
        supported: &'static [&'static str],
    },
    #[error("GGUF metadata key {key:?} is missing")]
    MissingMetadata { key: String },
    #[error("GGUF metadata key {key:?} is invalid: {reason}")]
    InvalidMetadata { key: String, reason: String },
    #[error("invalid model configuration: {0}")]
    InvalidConfig(String),
    #[error("tensor {name:?} is missing from the model file")]
    MissingTensor { name: String },
    #[error("tensor {name:?} has shape {actual:?}, expected {expected:?}")]
    TensorShape {
        name: String,
        expected: Vec<usize>,
        actual: Vec<usize>,
    },
    #[error("tensor {name:?} has type {dtype}, which this engine cannot use for a {role}")]
    UnsupportedTensorType {
        name: String,
        dtype: String,
        role: &'static str,
    },
    #[error("context of {requested} tokens exceeds the model's limit of {limit} tokens{hint}")]
    ContextTooLarge {
        requested: usize,
        limit: usize,
        hint: &'static str,
    },
    #[error(
        "{needed} tokens do not fit in the context: {used} already cached, capacity {capacity}"
    )]
    ContextOverflow {
        needed: usize,
        used: usize,
        capacity: usize,
    },
    #[error("token id {token} is out of range (vocabulary size {vocab_size})")]
    TokenOutOfRange { token: u32, vocab_size: usize },
    #[error("empty input: at least one token is needed")]
    EmptyInput,
    #[error("cannot truncate the cache to {requested} tokens: it holds only {len}")]
    TruncateBeyondEnd { requested: usize, len: usize },
    #[error("invalid option: {0}")]
    InvalidOption(String),
    /// The caller's interrupt asked the pass to stop ([`crate::Model::forward_last_interruptible`]);
    /// the cache is as it was before the call.
    #[error("the forward pass was interrupted")]
    Interrupted,
    #[error("tensor computation failed: {}", candle_message(.0))]
    Compute(#[from] candle_core::Error),
}

/// A candle error's message without the backtrace candle appends when `RUST_BACKTRACE` is
/// set (`WithBacktrace`), so every message of this crate stays one line.
pub(crate) fn candle_message(e: &candle_core::Error) -> String {
    match e {
        candle_core::Error::WithBacktrace { inner, .. } => candle_message(inner),
        other => other.to_string(),
    }
}

/// Result alias for this crate.
pub type Result<T> = std::result::Result<T, ModelError>;
