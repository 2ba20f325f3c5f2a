use std::path::PathBuf;

/// Every way this crate can fail.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: not a readable GGUF file: {message}")]
    Gguf { path: PathBuf, message: String },
    #[error("GGUF metadata `{key}`: {problem}")]
    Metadata { key: String, problem: String },
    #[error("unsupported tokenizer: {0}")]
    Unsupported(String),
    #[error("tokenizer: {0}")]
    Tokenizer(String),
    #[error("token id {id} is out of range (the vocabulary has {vocab} tokens)")]
    TokenOutOfRange { id: u32, vocab: usize },
    #[error("{0}")]
    Template(#[from] TemplateError),
    #[error("chat template: {0}")]
    UnsafeTemplate(String),
    /// Messages (or tools) that cannot be read; the text names the field, e.g.
    /// `messages[2].role: unknown role "bot" ...`.
    #[error("{0}")]
    Messages(String),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// A chat template that failed to compile or render, with the template line at fault.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TemplateError {
    /// What went wrong, e.g. "syntax error", "raise_exception", "undefined value".
    pub kind: String,
    /// The message (for `raise_exception`, the template's own message).
    pub message: String,
    /// 1-based line in the template source, when known.
    pub line: Option<usize>,
    /// The text of that line, trimmed.
    pub source_line: Option<String>,
}

impl std::fmt::Display for TemplateError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "chat template")?;
        if let Some(line) = self.line {
            write!(f, " line {line}")?;
        }
        write!(f, ": {}: {}", self.kind, self.message)?;
        if let Some(src) = &self.source_line {
            write!(f, " (in `{src}`)")?;
        }
        Ok(())
    }
}

impl std::error::Error for TemplateError {}

impl TemplateError {
    pub(crate) fn from_minijinja(e: &minijinja::Error, source: &str) -> Self {
        use minijinja::ErrorKind as K;
        let kind = match e.kind() {
            K::SyntaxError => "syntax error",
            K::UndefinedError => "undefined value",
            K::InvalidOperation
                if e.detail()
                    .is_some_and(|d| d.starts_with(crate::template::RAISE_MARKER)) =>
            {
                "raise_exception"
            }
            K::UnknownFunction => "unknown function",
            K::UnknownFilter => "unknown filter",
            K::UnknownTest => "unknown test",
            K::UnknownMethod => "unknown method",
            K::MissingArgument | K::TooManyArguments | K::InvalidOperation => "invalid operation",
            _ => "render error",
        }
        .to_string();
        let message = e
            .detail()
            .map(|d| {
                d.trim_start_matches(crate::template::RAISE_MARKER)
                    .to_string()
            })
            .unwrap_or_else(|| e.kind().to_string());
        let line = e.line();
        let source_line = line
            .and_then(|l| source.lines().nth(l.saturating_sub(1)))
            .map(|s| s.trim().chars().take(160).collect());
        TemplateError {
            kind,
            message,
            line,
            source_line,
        }
    }
}
