//! Getting GGUF weights from the Hugging Face hub (cargo feature `hub`).
//!
//! A [`ModelRef`] is what a user types after `--model`: a local file, `REPO:FILE.gguf`,
//! `REPO:QUANT` (e.g. `ggml-org/SmolLM3-3B-GGUF:q8_0`) or just `REPO`. [`resolve`] turns it into a
//! local path: it looks in the standard Hugging Face cache first (the one Python's
//! `huggingface_hub` and `hf-hub` share: `$HF_HUB_CACHE`, else `$HF_HOME/hub`, else
//! `~/.cache/huggingface/hub`) and downloads only on a miss, unless offline (`--offline` or
//! `HF_HUB_OFFLINE=1`), in which case a miss is an error saying what was looked for, where, and
//! how to get it.
//!
//! Downloads go through `hf-hub` (blocking `ureq` client, rustls): the bytes land in
//! `blobs/<etag>.part` and are renamed to `blobs/<etag>` only once complete, then linked from
//! `snapshots/<commit>/<file>`, so an interrupted download never leaves a complete-looking file;
//! the next attempt resumes the `.part` with an HTTP range request. A finished download is also
//! checked against the size the server announced.
//!
//! ```no_run
//! use smollm3_model::hub::{resolve, HubOptions, ModelRef};
//!
//! # fn main() -> Result<(), smollm3_model::hub::HubError> {
//! let model: ModelRef = "ggml-org/SmolLM3-3B-GGUF:q4_k_m".parse()?;
//! let path = resolve(&model, &HubOptions::default())?;
//! # let _ = path;
//! # Ok(())
//! # }
//! ```
//!
//! Nothing here prints: progress is reported through [`HubOptions::progress`].

use std::cell::Cell;
use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use hf_hub::api::sync::{ApiBuilder, ApiError};
use hf_hub::{Cache, Repo};

/// The repository used when no `--model` is given.
pub const DEFAULT_REPO: &str = "ggml-org/SmolLM3-3B-GGUF";

/// A second repository with the same model (its Q4_K_M file is `SmolLM3-3B-Q4_K_M.gguf`).
pub const ALTERNATIVE_REPO: &str = "unsloth/SmolLM3-3B-GGUF";

/// The quantization used when none is given.
pub const DEFAULT_QUANT: &str = "q4_k_m";

/// The Q4_K_M file of [`DEFAULT_REPO`]. From that repository's file list
/// (`https://huggingface.co/ggml-org/SmolLM3-3B-GGUF/resolve/main/SmolLM3-Q4_K_M.gguf`,
/// 1 915 305 312 bytes, as referenced by several public projects), so the default model
/// resolves from the cache by name, without listing the repository.
pub const DEFAULT_FILE: &str = "SmolLM3-Q4_K_M.gguf";

/// The hub used when neither [`HubOptions::endpoint`] nor `HF_ENDPOINT` says otherwise.
pub const DEFAULT_ENDPOINT: &str = "https://huggingface.co";

const ACCEPTED_FORMS: &str = "expected a GGUF file path, REPO:FILE.gguf, REPO:QUANT or REPO \
     (e.g. model.gguf, ggml-org/SmolLM3-3B-GGUF:SmolLM3-Q4_K_M.gguf, \
     ggml-org/SmolLM3-3B-GGUF:q8_0, ggml-org/SmolLM3-3B-GGUF)";

/// Where a model comes from: a local file or a file in a hub repository.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ModelRef {
    /// A GGUF file on disk, used as is.
    Path(PathBuf),
    /// One file of a hub repository (`REPO:FILE.gguf`).
    File {
        /// `owner/name`.
        repo: String,
        /// Path of the file inside the repository.
        file: String,
    },
    /// The GGUF of a repository whose name carries this quantization (`REPO:QUANT`), e.g.
    /// `q4_k_m` finds `SmolLM3-Q4_K_M.gguf`. Matched case-insensitively.
    Quant {
        /// `owner/name`.
        repo: String,
        /// e.g. `q4_k_m`, `q8_0`, `f16`.
        quant: String,
    },
}

impl ModelRef {
    /// The default model: SmolLM3-3B Q4_K_M from [`DEFAULT_REPO`].
    pub fn default_model() -> Self {
        ModelRef::File {
            repo: DEFAULT_REPO.to_string(),
            file: DEFAULT_FILE.to_string(),
        }
    }

    /// `REPO` at `QUANT`, using the known file name for the default model.
    pub fn quant(repo: &str, quant: &str) -> Self {
        if repo == DEFAULT_REPO && quant.eq_ignore_ascii_case(DEFAULT_QUANT) {
            return Self::default_model();
        }
        ModelRef::Quant {
            repo: repo.to_string(),
            quant: quant.to_string(),
        }
    }

    /// Parses a `--model` value.
    ///
    /// An existing file, or anything that looks like a path to a `.gguf` file, is a local path;
    /// `REPO:FILE.gguf` names one file of a repository; `REPO:QUANT` picks the repository's
    /// GGUF for that quantization; a bare `owner/name` that is not a file on disk is that
    /// repository at [`DEFAULT_QUANT`].
    pub fn parse(s: &str) -> Result<Self, HubError> {
        let bad = |reason: &str| HubError::BadModelRef {
            input: s.to_string(),
            reason: reason.to_string(),
        };
        let trimmed = s.trim();
        if trimmed.is_empty() {
            return Err(bad("it is empty"));
        }
        if Path::new(trimmed).exists() {
            return Ok(ModelRef::Path(PathBuf::from(trimmed)));
        }
        if let Some((repo, rest)) = split_hub_ref(trimmed) {
            if !is_repo_id(repo) {
                return Err(bad(&format!(
                    "{repo:?} is not a repository id (owner/name)"
                )));
            }
            if rest.is_empty() {
                return Err(bad(
                    "nothing after ':' (give a file name or a quantization)",
                ));
            }
            if rest.to_ascii_lowercase().ends_with(".gguf") {
                check_file_name(rest).map_err(|reason| bad(&reason))?;
                return Ok(ModelRef::File {
                    repo: repo.to_string(),
                    file: rest.to_string(),
                });
            }
            if rest.contains(['/', '\\', '.']) {
                return Err(bad(&format!(
                    "{rest:?} is neither a .gguf file name nor a quantization such as q4_k_m"
                )));
            }
            return Ok(Self::quant(repo, rest));
        }
        let looks_like_path = trimmed.to_ascii_lowercase().ends_with(".gguf")
            || trimmed.starts_with(['.', '/', '~', '\\'])
            || trimmed.contains('\\')
            || (trimmed.len() > 1 && trimmed.as_bytes()[1] == b':');
        if looks_like_path {
            return Ok(ModelRef::Path(PathBuf::from(trimmed)));
        }
        if is_repo_id(trimmed) {
            return Ok(Self::quant(trimmed, DEFAULT_QUANT));
        }
        Err(bad("no such file, and not a hub reference"))
    }

    /// The repository, for hub references.
    pub fn repo(&self) -> Option<&str> {
        match self {
            ModelRef::Path(_) => None,
            ModelRef::File { repo, .. } | ModelRef::Quant { repo, .. } => Some(repo),
        }
    }
}

impl FromStr for ModelRef {
    type Err = HubError;
    fn from_str(s: &str) -> Result<Self, HubError> {
        Self::parse(s)
    }
}

impl fmt::Display for ModelRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ModelRef::Path(p) => write!(f, "{}", p.display()),
            ModelRef::File { repo, file } => write!(f, "{repo}:{file}"),
            ModelRef::Quant { repo, quant } => write!(f, "{repo}:{quant}"),
        }
    }
}

/// `owner/name:rest`, with `owner/name` free of path-only characters (so `C:\x` and `./a:b`
/// are not hub references).
fn split_hub_ref(s: &str) -> Option<(&str, &str)> {
    let (repo, rest) = s.split_once(':')?;
    if repo.contains('/') && !repo.starts_with(['.', '/', '~']) && !repo.contains('\\') {
        Some((repo, rest))
    } else {
        None
    }
}

/// `owner/name` with the characters the hub allows.
fn is_repo_id(s: &str) -> bool {
    let mut parts = s.split('/');
    let ok = |p: Option<&str>| {
        p.is_some_and(|p| {
            !p.is_empty()
                && !p.starts_with(['.', '-'])
                && p.chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        })
    };
    ok(parts.next()) && ok(parts.next()) && parts.next().is_none()
}

/// A file path inside a repository: relative, no `..`.
fn check_file_name(file: &str) -> Result<(), String> {
    if file.starts_with(['/', '\\']) || file.split(['/', '\\']).any(|c| c.is_empty() || c == "..") {
        return Err(format!("{file:?} is not a file name inside a repository"));
    }
    Ok(())
}

/// A progress report while a file downloads.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DownloadEvent<'a> {
    /// A download starts (once per file; a resumed download starts at a non-zero position).
    Start {
        /// The file's name inside the repository.
        file: &'a str,
        /// Its size in bytes.
        total: u64,
    },
    /// Bytes on disk so far, out of `total`.
    Progress {
        /// Bytes downloaded, counting a resumed partial file.
        downloaded: u64,
        /// The file's size.
        total: u64,
    },
    /// The transfer ended (successfully or not).
    Finish,
}

/// Options for [`resolve`] and [`fetch`].
#[derive(Default)]
pub struct HubOptions {
    /// Use only the cache: a miss is an error. `HF_HUB_OFFLINE=1` has the same effect.
    pub offline: bool,
    /// The hub's URL; default `$HF_ENDPOINT`, else [`DEFAULT_ENDPOINT`].
    pub endpoint: Option<String>,
    /// The cache directory (the one holding `models--*`); default [`default_cache_dir`].
    pub cache_dir: Option<PathBuf>,
    /// Called as a download progresses. Never called for cache hits.
    #[allow(clippy::type_complexity)]
    pub progress: Option<Box<dyn Fn(DownloadEvent<'_>) + Send + Sync>>,
}

impl fmt::Debug for HubOptions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HubOptions")
            .field("offline", &self.offline)
            .field("endpoint", &self.endpoint)
            .field("cache_dir", &self.cache_dir)
            .field("progress", &self.progress.is_some())
            .finish()
    }
}

/// The result of [`fetch`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Fetched {
    /// The local file (for hub files, `.../snapshots/<commit>/<file>` in the cache).
    pub path: PathBuf,
    /// The repository, for hub files.
    pub repo: Option<String>,
    /// The file name inside the repository (or the local path's file name).
    pub file: String,
    /// Whether bytes were downloaded (false for cache hits and local files).
    pub downloaded: bool,
}

/// Everything that can go wrong finding or downloading a model.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum HubError {
    /// The `--model` value is not understood.
    #[error("cannot use --model {input:?}: {reason}; {ACCEPTED_FORMS}")]
    BadModelRef {
        /// What was given.
        input: String,
        /// What is wrong with it.
        reason: String,
    },
    /// Offline, and the file is not in the cache.
    #[error(
        "{file} from {repo} is not in the Hugging Face cache (looked in {}) and downloads are \
         off (--offline or HF_HUB_OFFLINE); get it with `{command}` or drop --offline",
        dir.display()
    )]
    OfflineMiss {
        /// The repository.
        repo: String,
        /// The file that was looked for.
        file: String,
        /// The repository's cache directory that was searched.
        dir: PathBuf,
        /// A command that downloads it.
        command: String,
    },
    /// Offline, and no cached file of the repository has this quantization.
    #[error(
        "no {quant} GGUF of {repo} is in the Hugging Face cache (looked for *{quant}*.gguf in {}) \
         and downloads are off (--offline or HF_HUB_OFFLINE); get it with `{command}` or drop \
         --offline",
        dir.display()
    )]
    OfflineQuantMiss {
        /// The repository.
        repo: String,
        /// The quantization looked for.
        quant: String,
        /// The repository's cache directory that was searched.
        dir: PathBuf,
        /// A command that downloads it.
        command: String,
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
    #[error(
        "{repo} has several GGUF files for {quant:?}: {}; pick one with --model {repo}:FILE.gguf",
        list(candidates)
    )]
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
         is resumed by the next attempt (or use --offline to use only the cache)",
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
    /// The finished file does not have the announced size; it was removed.
    #[error(
        "downloaded {file} from {repo} has {got} bytes, but the server announced {expected}; \
         the file was removed, run the command again"
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

/// Whether `HF_HUB_OFFLINE` asks for offline mode (`1`, `true`, `yes`, `on`; any case).
pub fn offline_from_env() -> bool {
    std::env::var("HF_HUB_OFFLINE").is_ok_and(|v| {
        matches!(
            v.trim().to_ascii_lowercase().as_str(),
            "1" | "true" | "yes" | "on"
        )
    })
}

fn env_nonempty(key: &str) -> Option<String> {
    std::env::var(key).ok().filter(|v| !v.trim().is_empty())
}

/// The Hugging Face cache directory: `$HF_HUB_CACHE`, else `$HF_HOME/hub`, else
/// `~/.cache/huggingface/hub` (the same place Python's `huggingface_hub` uses).
pub fn default_cache_dir() -> Result<PathBuf, HubError> {
    if let Some(dir) = env_nonempty("HF_HUB_CACHE") {
        return Ok(PathBuf::from(dir));
    }
    if let Some(home) = env_nonempty("HF_HOME") {
        return Ok(PathBuf::from(home).join("hub"));
    }
    let home = env_nonempty("HOME")
        .or_else(|| env_nonempty("USERPROFILE"))
        .ok_or(HubError::NoCacheDir)?;
    Ok(PathBuf::from(home)
        .join(".cache")
        .join("huggingface")
        .join("hub"))
}

/// The directory a repository's files are cached in (`<cache>/models--owner--name`).
pub fn repo_cache_dir(cache_dir: &Path, repo: &str) -> PathBuf {
    cache_dir.join(Repo::model(repo.to_string()).folder_name())
}

/// The command that downloads `file` of `repo` into the cache.
pub fn fetch_command(repo: &str, file: &str) -> String {
    format!("cargo xtask fetch-weights --repo {repo} --file {file}")
}

/// Finds `model` in the cache, downloading it first when it is missing and downloads are
/// allowed. Local paths are returned as they are.
pub fn resolve(model: &ModelRef, options: &HubOptions) -> Result<PathBuf, HubError> {
    fetch(model, options).map(|f| f.path)
}

/// As [`resolve`], also saying whether anything was downloaded.
pub fn fetch(model: &ModelRef, options: &HubOptions) -> Result<Fetched, HubError> {
    let local = |path: &PathBuf| Fetched {
        path: path.clone(),
        repo: None,
        file: path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default(),
        downloaded: false,
    };
    let Some(repo) = model.repo() else {
        if let ModelRef::Path(path) = model {
            return Ok(local(path));
        }
        return Err(HubError::BadModelRef {
            input: model.to_string(),
            reason: "no repository".to_string(),
        });
    };
    let hub = Hub::new(repo, options)?;
    let file = match model {
        ModelRef::File { file, .. } => file.clone(),
        ModelRef::Quant { quant, .. } => hub.quant_file(quant)?,
        ModelRef::Path(path) => return Ok(local(path)),
    };
    check_file_name(&file).map_err(|reason| HubError::BadModelRef {
        input: format!("{repo}:{file}"),
        reason,
    })?;
    if let Some(path) = hub.cached(&file)? {
        return Ok(Fetched {
            path,
            repo: Some(repo.to_string()),
            file,
            downloaded: false,
        });
    }
    if hub.offline {
        return Err(HubError::OfflineMiss {
            repo: repo.to_string(),
            command: fetch_command(repo, &file),
            file,
            dir: hub.repo_dir,
        });
    }
    let path = hub.download(&file)?;
    Ok(Fetched {
        path,
        repo: Some(repo.to_string()),
        file,
        downloaded: true,
    })
}

/// One repository in one cache, with the options that apply.
struct Hub<'a> {
    repo: &'a str,
    cache_dir: PathBuf,
    repo_dir: PathBuf,
    endpoint: String,
    offline: bool,
    options: &'a HubOptions,
}

impl<'a> Hub<'a> {
    fn new(repo: &'a str, options: &'a HubOptions) -> Result<Self, HubError> {
        let cache_dir = match &options.cache_dir {
            Some(dir) => dir.clone(),
            None => default_cache_dir()?,
        };
        let endpoint = options
            .endpoint
            .clone()
            .or_else(|| env_nonempty("HF_ENDPOINT"))
            .unwrap_or_else(|| DEFAULT_ENDPOINT.to_string())
            .trim_end_matches('/')
            .to_string();
        Ok(Hub {
            repo,
            repo_dir: repo_cache_dir(&cache_dir, repo),
            cache_dir,
            endpoint,
            offline: options.offline || offline_from_env(),
            options,
        })
    }

    fn cache(&self) -> Cache {
        Cache::new(self.cache_dir.clone())
    }

    /// The cached file: from the `refs/main` snapshot, else from the newest other snapshot
    /// that has it (a later download of another file may have moved `refs/main` to a newer
    /// commit; the file from the older one is still the same repository's file). A dangling
    /// snapshot link (its blob was deleted) is removed so that a download can replace it.
    fn cached(&self, file: &str) -> Result<Option<PathBuf>, HubError> {
        if let Some(path) = self.cache().model(self.repo.to_string()).get(file) {
            return Ok(Some(path));
        }
        if let Some(commit) = self.main_commit() {
            let link = self.repo_dir.join("snapshots").join(commit).join(file);
            if link.symlink_metadata().is_ok() && !link.exists() {
                std::fs::remove_file(&link).map_err(|source| HubError::Io {
                    action: "removing the broken link",
                    path: link.clone(),
                    source,
                })?;
            }
        }
        Ok(self
            .snapshot_dirs()
            .into_iter()
            .map(|dir| dir.join(file))
            .find(|path| path.is_file()))
    }

    /// The snapshot directories: `refs/main`'s first, then the others, newest first.
    fn snapshot_dirs(&self) -> Vec<PathBuf> {
        let snapshots = self.repo_dir.join("snapshots");
        let mut dirs: Vec<PathBuf> = Vec::new();
        if let Some(commit) = self.main_commit() {
            dirs.push(snapshots.join(commit));
        }
        if let Ok(entries) = std::fs::read_dir(&snapshots) {
            let mut others: Vec<(std::time::SystemTime, PathBuf)> = entries
                .flatten()
                .map(|e| {
                    let modified = e
                        .metadata()
                        .and_then(|m| m.modified())
                        .unwrap_or(std::time::UNIX_EPOCH);
                    (modified, e.path())
                })
                .filter(|(_, d)| !dirs.contains(d))
                .collect();
            others.sort_by(|a, b| b.cmp(a));
            dirs.extend(others.into_iter().map(|(_, d)| d));
        }
        dirs
    }

    fn main_commit(&self) -> Option<String> {
        let commit = std::fs::read_to_string(self.repo_dir.join("refs").join("main")).ok()?;
        let commit = commit.trim();
        (!commit.is_empty() && !commit.contains(['/', '\\', '.'])).then(|| commit.to_string())
    }

    /// The file name for `quant`: from the cache first, else from the repository's file list.
    fn quant_file(&self, quant: &str) -> Result<String, HubError> {
        if let Some(file) = self.cached_quant(quant)? {
            return Ok(file);
        }
        if self.offline {
            return Err(HubError::OfflineQuantMiss {
                repo: self.repo.to_string(),
                quant: quant.to_string(),
                dir: self.repo_dir.clone(),
                command: format!(
                    "cargo xtask fetch-weights --repo {} --quant {quant}",
                    self.repo
                ),
            });
        }
        let api = self.api()?;
        let info = api
            .model(self.repo.to_string())
            .info()
            .map_err(|e| self.map_error(e, None))?;
        let ggufs: Vec<String> = info
            .siblings
            .into_iter()
            .map(|s| s.rfilename)
            .filter(|f| f.to_ascii_lowercase().ends_with(".gguf"))
            .collect();
        pick_quant(self.repo, quant, &ggufs)?.ok_or_else(|| HubError::NoSuchQuant {
            repo: self.repo.to_string(),
            quant: quant.to_string(),
            available: ggufs.clone(),
        })
    }

    /// A cached GGUF for `quant`: the `refs/main` snapshot first, then the others.
    fn cached_quant(&self, quant: &str) -> Result<Option<String>, HubError> {
        for dir in self.snapshot_dirs() {
            let Ok(entries) = std::fs::read_dir(&dir) else {
                continue;
            };
            let files: Vec<String> = entries
                .flatten()
                .filter(|e| e.path().is_file())
                .filter_map(|e| e.file_name().into_string().ok())
                .filter(|f| f.to_ascii_lowercase().ends_with(".gguf"))
                .collect();
            if let Some(file) = pick_quant(self.repo, quant, &files)? {
                return Ok(Some(file));
            }
        }
        Ok(None)
    }

    fn api(&self) -> Result<hf_hub::api::sync::Api, HubError> {
        let mut builder = ApiBuilder::from_cache(self.cache())
            .with_endpoint(self.endpoint.clone())
            .with_progress(false)
            .with_user_agent("smollm3-rs", env!("CARGO_PKG_VERSION"));
        if let Some(token) = env_nonempty("HF_TOKEN") {
            builder = builder.with_token(Some(token));
        }
        builder.build().map_err(|e| self.map_error(e, None))
    }

    fn download(&self, file: &str) -> Result<PathBuf, HubError> {
        let api = self.api()?;
        let repo = api.model(self.repo.to_string());
        let mut restarted = false;
        loop {
            let total = Cell::new(0u64);
            let progress = Reporter {
                callback: self.options.progress.as_deref(),
                file,
                total: &total,
                downloaded: 0,
                started: false,
            };
            match repo.download_with_progress(file, progress) {
                Ok(path) => {
                    self.check_size(file, &path, total.get())?;
                    return Ok(path);
                }
                // A partial file that cannot be resumed (longer than the file, or already
                // complete so the server refuses the range): start again, once.
                Err(e) if !restarted && is_stale_partial(&e) => {
                    restarted = true;
                    self.remove_partials()?;
                }
                Err(e) => return Err(self.map_error(e, Some(file))),
            }
        }
    }

    /// A finished file must have the announced size; otherwise it is removed (blob and link).
    fn check_size(&self, file: &str, path: &Path, expected: u64) -> Result<(), HubError> {
        let got = std::fs::metadata(path)
            .map_err(|source| HubError::Io {
                action: "reading",
                path: path.to_path_buf(),
                source,
            })?
            .len();
        if expected == 0 || got == expected {
            return Ok(());
        }
        if let Ok(blob) = std::fs::canonicalize(path) {
            let _ = std::fs::remove_file(blob);
        }
        let _ = std::fs::remove_file(path);
        Err(HubError::Incomplete {
            repo: self.repo.to_string(),
            file: file.to_string(),
            expected,
            got,
        })
    }

    fn remove_partials(&self) -> Result<(), HubError> {
        let blobs = self.repo_dir.join("blobs");
        let Ok(entries) = std::fs::read_dir(&blobs) else {
            return Ok(());
        };
        for entry in entries.flatten() {
            let path = entry.path();
            if path.extension().is_some_and(|e| e == "part") {
                std::fs::remove_file(&path).map_err(|source| HubError::Io {
                    action: "removing the stale partial download",
                    path: path.clone(),
                    source,
                })?;
            }
        }
        Ok(())
    }

    fn map_error(&self, error: ApiError, file: Option<&str>) -> HubError {
        let file_name = file.unwrap_or("(file list)").to_string();
        match error {
            ApiError::RequestError(e) => match *e {
                ureq::Error::Status(status, response) => match (status, file) {
                    (404, Some(file)) => HubError::FileNotFound {
                        repo: self.repo.to_string(),
                        file: file.to_string(),
                        endpoint: self.endpoint.clone(),
                    },
                    (401 | 403 | 404, _) => HubError::RepoNotFound {
                        repo: self.repo.to_string(),
                        endpoint: self.endpoint.clone(),
                        status,
                    },
                    _ => HubError::Http {
                        url: response.get_url().to_string(),
                        status,
                    },
                },
                transport => self.download_error(file_name, transport.to_string()),
            },
            ApiError::MissingHeader(_)
            | ApiError::InvalidHeader(_)
            | ApiError::ParseIntError(_) => HubError::BadResponse {
                endpoint: self.endpoint.clone(),
                repo: self.repo.to_string(),
                file: file_name,
                detail: error.to_string(),
            },
            ApiError::LockAcquisition(lock) => HubError::Locked {
                dir: self.repo_dir.clone(),
                lock,
            },
            ApiError::IoError(e) => self.download_error(file_name, e.to_string()),
            other => self.download_error(file_name, other.to_string()),
        }
    }

    fn download_error(&self, file: String, detail: String) -> HubError {
        HubError::Download {
            repo: self.repo.to_string(),
            file,
            endpoint: self.endpoint.clone(),
            dir: self.repo_dir.clone(),
            detail,
        }
    }
}

fn is_stale_partial(error: &ApiError) -> bool {
    match error {
        ApiError::InvalidResume => true,
        ApiError::RequestError(e) => matches!(**e, ureq::Error::Status(416, _)),
        _ => false,
    }
}

/// The one file in `files` whose name carries `quant` as a `-`/`.`-separated part (e.g.
/// `SmolLM3-Q4_K_M.gguf` for `q4_k_m`), else the one containing it anywhere; several matches
/// are an error.
fn pick_quant(repo: &str, quant: &str, files: &[String]) -> Result<Option<String>, HubError> {
    let quant_lc = quant.to_ascii_lowercase();
    let base = |f: &String| {
        f.rsplit('/')
            .next()
            .unwrap_or(f.as_str())
            .to_ascii_lowercase()
    };
    let exact: Vec<String> = files
        .iter()
        .filter(|f| {
            let name = base(f);
            let stem = name.strip_suffix(".gguf").unwrap_or(&name).to_string();
            stem.split(['-', '.']).any(|part| part == quant_lc)
        })
        .cloned()
        .collect();
    let matches = if exact.is_empty() {
        files
            .iter()
            .filter(|f| base(f).contains(&quant_lc))
            .cloned()
            .collect()
    } else {
        exact
    };
    match matches.len() {
        0 => Ok(None),
        1 => Ok(matches.into_iter().next()),
        _ => Err(HubError::AmbiguousQuant {
            repo: repo.to_string(),
            quant: quant.to_string(),
            candidates: matches,
        }),
    }
}

/// Turns hf-hub's progress calls into [`DownloadEvent`]s and remembers the announced size.
struct Reporter<'a> {
    callback: Option<&'a (dyn Fn(DownloadEvent<'_>) + Send + Sync)>,
    file: &'a str,
    total: &'a Cell<u64>,
    downloaded: u64,
    started: bool,
}

impl hf_hub::api::Progress for Reporter<'_> {
    fn init(&mut self, size: usize, _filename: &str) {
        let total = size as u64;
        self.total.set(total);
        self.downloaded = 0;
        if !self.started {
            self.started = true;
            if let Some(cb) = self.callback {
                cb(DownloadEvent::Start {
                    file: self.file,
                    total,
                });
            }
        }
    }

    fn update(&mut self, size: usize) {
        self.downloaded += size as u64;
        if let Some(cb) = self.callback {
            cb(DownloadEvent::Progress {
                downloaded: self.downloaded,
                total: self.total.get(),
            });
        }
    }

    fn finish(&mut self) {
        if let Some(cb) = self.callback {
            cb(DownloadEvent::Finish);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(s: &str) -> ModelRef {
        ModelRef::parse(s).unwrap()
    }

    #[test]
    fn parses_the_accepted_forms() {
        assert_eq!(
            parse("ggml-org/SmolLM3-3B-GGUF:SmolLM3-Q8_0.gguf"),
            ModelRef::File {
                repo: "ggml-org/SmolLM3-3B-GGUF".into(),
                file: "SmolLM3-Q8_0.gguf".into()
            }
        );
        assert_eq!(
            parse("unsloth/SmolLM3-3B-GGUF:q8_0"),
            ModelRef::Quant {
                repo: "unsloth/SmolLM3-3B-GGUF".into(),
                quant: "q8_0".into()
            }
        );
        assert_eq!(
            parse("ggml-org/SmolLM3-3B-GGUF:Q4_K_M"),
            ModelRef::default_model()
        );
        assert_eq!(parse("ggml-org/SmolLM3-3B-GGUF"), ModelRef::default_model());
        assert_eq!(
            parse("/no/such/model.gguf"),
            ModelRef::Path("/no/such/model.gguf".into())
        );
        assert_eq!(parse("model.gguf"), ModelRef::Path("model.gguf".into()));
        assert_eq!(parse("./a:b"), ModelRef::Path("./a:b".into()));
        assert_eq!(
            parse(env!("CARGO_MANIFEST_DIR")),
            ModelRef::Path(env!("CARGO_MANIFEST_DIR").into())
        );
    }

    #[test]
    fn bad_refs_say_what_is_accepted() {
        for bad in [
            "",
            "nonsense",
            "a/b:",
            "a/b:../x.gguf",
            "a/b/c:q8_0",
            "a/b:x.bin",
        ] {
            let e = ModelRef::parse(bad).unwrap_err().to_string();
            assert!(
                e.contains("REPO:FILE.gguf") && e.contains("REPO:QUANT"),
                "{bad}: {e}"
            );
        }
    }

    #[test]
    fn picks_the_quant_file() {
        let files: Vec<String> = [
            "SmolLM3-Q4_K_M.gguf",
            "SmolLM3-Q4_K_S.gguf",
            "SmolLM3-Q8_0.gguf",
            "SmolLM3-f16.gguf",
        ]
        .map(String::from)
        .to_vec();
        let pick = |q| pick_quant("r/r", q, &files).unwrap();
        assert_eq!(pick("q4_k_m").as_deref(), Some("SmolLM3-Q4_K_M.gguf"));
        assert_eq!(pick("F16").as_deref(), Some("SmolLM3-f16.gguf"));
        assert_eq!(pick("q5_k_m"), None);
        assert!(matches!(
            pick_quant("r/r", "q4_k", &files),
            Err(HubError::AmbiguousQuant { .. })
        ));
    }
}
