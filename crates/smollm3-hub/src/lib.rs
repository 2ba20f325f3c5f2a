//! # smollm3-hub
//!
//! Getting GGUF weights from the Hugging Face hub: what a user types to name a model, finding it
//! in the standard Hugging Face cache (the one Python's `huggingface_hub` and `hf-hub` share:
//! `$HF_HUB_CACHE`, else `$HF_HOME/hub`, else `~/.cache/huggingface/hub`), and downloading it on
//! a miss, resumably.
//!
//! | item | what it is |
//! |---|---|
//! | [`ModelRef`] | a local file, `REPO:FILE.gguf`, `REPO:QUANT` (e.g. `ggml-org/SmolLM3-3B-GGUF:q8_0`) or `REPO`; [`ModelRef::default_model`] is SmolLM3-3B Q4_K_M |
//! | [`resolve`], [`fetch`] | a [`ModelRef`] to a local path: the cache first, a download on a miss unless offline; [`Fetched`] says whether bytes were downloaded |
//! | [`HubOptions`] | offline, endpoint, cache directory, progress callback |
//! | [`DownloadEvent`] | what the progress callback is told: start, bytes so far, finish |
//! | [`HubError`] | every failure, naming the file, repository, directory or URL at fault |
//! | [`default_cache_dir`], [`repo_cache_dir`], [`offline_from_env`] | where the cache is; whether `HF_HUB_OFFLINE` is set |
//! | [`DEFAULT_REPO`], [`DEFAULT_FILE`], [`DEFAULT_QUANT`], [`ALTERNATIVE_REPO`], [`DEFAULT_ENDPOINT`], [`ACCEPTED_FORMS`] | the default model and hub, and the reference forms for messages |
//! | `progress::terminal_download_progress` | (feature `progress-bar`) a progress bar on stderr, for binaries |
//! | `fake_hub::FakeHub` | (feature `test-support`) a local stand-in for the hub, for tests without network |
//!
//! ```
//! use smollm3_hub::{repo_cache_dir, HubError, ModelRef};
//!
//! # fn main() -> Result<(), HubError> {
//! let model: ModelRef = "unsloth/SmolLM3-3B-GGUF:q8_0".parse()?;
//! assert_eq!(model.repo(), Some("unsloth/SmolLM3-3B-GGUF"));
//! assert_eq!(
//!     model,
//!     ModelRef::Quant { repo: "unsloth/SmolLM3-3B-GGUF".into(), quant: "q8_0".into() }
//! );
//! // A bare repository is its Q4_K_M file; the default one is known by name.
//! let default: ModelRef = "ggml-org/SmolLM3-3B-GGUF".parse()?;
//! assert_eq!(default, ModelRef::default_model());
//! assert_eq!(default.to_string(), "ggml-org/SmolLM3-3B-GGUF:SmolLM3-Q4_K_M.gguf");
//! // Hub files are cached in the standard layout.
//! let dir = repo_cache_dir("/home/me/.cache/huggingface/hub".as_ref(), "ggml-org/SmolLM3-3B-GGUF");
//! assert!(dir.ends_with("models--ggml-org--SmolLM3-3B-GGUF"));
//! // Anything else is an error that says which forms are accepted.
//! let err = ModelRef::parse("not a model").unwrap_err();
//! assert!(matches!(err, HubError::BadModelRef { .. }));
//! assert!(err.to_string().contains("REPO:FILE.gguf"));
//! # Ok(())
//! # }
//! ```
//!
//! Getting the file (this one needs the network, or the file in the cache):
//!
//! ```no_run
//! use smollm3_hub::{resolve, HubOptions, ModelRef};
//!
//! # fn main() -> Result<(), smollm3_hub::HubError> {
//! let options = HubOptions { offline: false, ..HubOptions::default() };
//! let path = resolve(&ModelRef::default_model(), &options)?;
//! println!("{}", path.display());
//! # Ok(())
//! # }
//! ```
//!
//! Downloads go through `hf-hub` (blocking `ureq` client, rustls, no tokio). An interrupted
//! download never leaves a complete-looking file and the next attempt resumes it; a finished
//! one is checked against the size the server announced. Offline (`HubOptions::offline` or
//! `HF_HUB_OFFLINE=1`, which hf-hub itself ignores), a miss is an error saying what was looked
//! for and where.
//!
//! The library never prints (progress goes to the [`HubOptions::progress`] callback), and its
//! messages never name a front end's flags or commands: a binary adds those by matching the
//! [`HubError`] variant.

mod cache;
mod download;
mod error;
mod fetch;
mod model_ref;

#[cfg(feature = "test-support")]
pub mod fake_hub;
#[cfg(feature = "progress-bar")]
pub mod progress;

pub use cache::{default_cache_dir, offline_from_env, repo_cache_dir};
pub use download::DownloadEvent;
pub use error::HubError;
pub use fetch::{fetch, resolve, Fetched, HubOptions, DEFAULT_ENDPOINT};
pub use model_ref::{
    ModelRef, ACCEPTED_FORMS, ALTERNATIVE_REPO, DEFAULT_FILE, DEFAULT_QUANT, DEFAULT_REPO,
};
