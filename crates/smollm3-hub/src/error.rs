//! [`HubError`]: everything that can go wrong finding or downloading a model.
//!
//! Messages describe the problem (the file, repository, directory or URL at fault) and what
//! the environment can change (`HF_TOKEN`, `HF_ENDPOINT`, `HF_HOME`); they never name a front
//! end's flags or commands. A binary adds those by matching the variant, e.g. after
//! [`HubError::OfflineMiss`] the CLI says which command downloads the file.

use std::path::PathBuf;

use crate::ACCEPTED_FORMS;

/// Everything that can go wrong finding or downloading a model.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum HubError {
    /// The model reference is not understood (see [`ACCEPTED_FORMS`]).
    #[error("cannot use {input:?} as a model: {reason}; {ACCEPTED_FORMS}")]
    BadModelRef {
        /// What was given.
        input: String,
        /// What is wrong with it.
        reason: String,
    },
    /// Offline ([`HubOptions::offline`](crate::HubOptions::offline) or `HF_HUB_OFFLINE`), and
    /// the file is not in the cache.
    #[error(
        "{file} from {repo} is not in the Hugging Face cache (looked in {}) and downloads are off",
        dir.display()
    )]
    OfflineMiss {
        /// The repository.
        repo: String,
        /// The file that was looked for.
        file: String,
        /// The repository's cache directory that was searched.
        dir: PathBuf,
    },
    /// Offline, and no cached file of the repository has this quantization.
    #[error(
        "no {quant} GGUF of {repo} is in the Hugging Face cache (looked for *{quant}*.gguf in {}) \
         and downloads are off",
        dir.display()
    )]
    OfflineQuantMiss {
        /// The repository.
        repo: String,
        /// The quantization looked for.
        quant: String,
        /// The repository's cache directory that was searched.
        dir: PathBuf,
    },
    /// The repository has no GGUF for this quantization.
    #[error(
        "{repo} has no GGUF file for quantization {quant:?} (its GGUF files: {})",
        list(available)
    )]
    NoSuchQuant {
        /// The repository.
        repo: String,
        /// The quantization asked for.
        quant: String,
        /// The repository's GGUF files.
        available: Vec<String>,
    },
    /// Several files match the quantization.
    #[error("{repo} has several GGUF files for {quant:?}: {}", list(candidates))]
    AmbiguousQuant {
        /// The repository.
        repo: String,
        /// The quantization asked for.
        quant: String,
        /// The matching files.
        candidates: Vec<String>,
    },
    /// The hub says the file does not exist.
    #[error("{file} was not found in {repo} on {endpoint} (HTTP 404): check the file name")]
    FileNotFound {
        /// The repository.
        repo: String,
        /// The file.
        file: String,
        /// The hub's URL.
        endpoint: String,
    },
    /// The repository does not exist or needs a token.
    #[error(
        "{repo} was not found on {endpoint} or needs authorisation (HTTP {status}): check the \
         name, or set HF_TOKEN for a private or gated repository"
    )]
    RepoNotFound {
        /// The repository.
        repo: String,
        /// The hub's URL.
        endpoint: String,
        /// 401, 403 or 404.
        status: u16,
    },
    /// Any other HTTP error status.
    #[error("{url} answered HTTP {status}")]
    Http {
        /// The URL asked.
        url: String,
        /// The status.
        status: u16,
    },
    /// The server answered without what a Hugging Face hub sends.
    #[error("unexpected answer from {endpoint} for {repo}:{file}: {detail} (is HF_ENDPOINT a Hugging Face hub?)")]
    BadResponse {
        /// The hub's URL.
        endpoint: String,
        /// The repository.
        repo: String,
        /// The file.
        file: String,
        /// What was wrong.
        detail: String,
    },
    /// The connection failed or broke off; what was downloaded is kept and resumed next time.
    #[error(
        "downloading {file} from {repo} ({endpoint}) failed: {detail}; the partial download in {} \
         is resumed by the next attempt",
        dir.display()
    )]
    Download {
        /// The repository.
        repo: String,
        /// The file.
        file: String,
        /// The hub's URL.
        endpoint: String,
        /// The repository's cache directory.
        dir: PathBuf,
        /// The underlying error.
        detail: String,
    },
    /// The finished file does not have the announced size; it was removed, so the next attempt
    /// downloads it again.
    #[error(
        "downloaded {file} from {repo} has {got} bytes, but the server announced {expected}; \
         the file was removed"
    )]
    Incomplete {
        /// The repository.
        repo: String,
        /// The file.
        file: String,
        /// The announced size.
        expected: u64,
        /// The size on disk.
        got: u64,
    },
    /// Another process holds the download lock.
    #[error("another process is downloading into {} (lock {}); wait for it and retry", dir.display(), lock.display())]
    Locked {
        /// The repository's cache directory.
        dir: PathBuf,
        /// The lock file.
        lock: PathBuf,
    },
    /// No cache directory could be determined.
    #[error("cannot find the Hugging Face cache: set HF_HOME (or HOME)")]
    NoCacheDir,
    /// A file system error in the cache.
    #[error("{action} {}: {source}", path.display())]
    Io {
        /// What was being done.
        action: &'static str,
        /// The path involved.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
}

fn list(names: &[String]) -> String {
    if names.is_empty() {
        "none".to_string()
    } else {
        names.join(", ")
    }
}
