//! [`resolve`] and [`fetch`]: a [`ModelRef`] to a local file, from the cache or downloaded.

use std::fmt;
use std::path::PathBuf;

use crate::cache::{default_cache_dir, env_nonempty, offline_from_env, pick_quant, repo_cache_dir};
use crate::model_ref::check_file_name;
use crate::{DownloadEvent, HubError, ModelRef};

/// The hub used when neither [`HubOptions::endpoint`] nor `HF_ENDPOINT` says otherwise.
pub const DEFAULT_ENDPOINT: &str = "https://huggingface.co";

/// Options for [`resolve`] and [`fetch`].
#[derive(Default)]
pub struct HubOptions {
    /// Use only the cache: a miss is an error. `HF_HUB_OFFLINE=1` has the same effect.
    pub offline: bool,
    /// The hub's URL; default `$HF_ENDPOINT`, else [`DEFAULT_ENDPOINT`].
    pub endpoint: Option<String>,
    /// The cache directory (the one holding `models--*`); default
    /// [`default_cache_dir`](crate::default_cache_dir).
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

/// One repository in one cache, with the options that apply. Its cache lookups are in
/// `cache.rs`, its network calls in `download.rs`.
pub(crate) struct Hub<'a> {
    pub(crate) repo: &'a str,
    pub(crate) cache_dir: PathBuf,
    pub(crate) repo_dir: PathBuf,
    pub(crate) endpoint: String,
    pub(crate) offline: bool,
    pub(crate) options: &'a HubOptions,
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
            });
        }
        let ggufs: Vec<String> = self
            .file_list()?
            .into_iter()
            .filter(|f| f.to_ascii_lowercase().ends_with(".gguf"))
            .collect();
        pick_quant(self.repo, quant, &ggufs)?.ok_or_else(|| HubError::NoSuchQuant {
            repo: self.repo.to_string(),
            quant: quant.to_string(),
            available: ggufs.clone(),
        })
    }
}
