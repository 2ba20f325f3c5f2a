//! Talking to the hub through `hf-hub`: the repository's file list, resumable downloads, and
//! hf-hub's errors turned into [`HubError`]s.
//!
//! hf-hub writes the bytes to `blobs/<etag>.part` and renames the file to `blobs/<etag>` only
//! once complete, then links it from `snapshots/<commit>/<file>`, so an interrupted download
//! never leaves a complete-looking file; the next attempt resumes the `.part` with an HTTP range
//! request. A partial file that cannot be resumed is restarted, and a finished file whose size
//! differs from the announced one is removed.

use std::cell::Cell;
use std::path::{Path, PathBuf};

use hf_hub::api::sync::{Api, ApiBuilder, ApiError};

use crate::cache::env_nonempty;
use crate::fetch::Hub;
use crate::HubError;

/// A progress report while a file downloads, passed to
/// [`HubOptions::progress`](crate::HubOptions::progress).
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

impl Hub<'_> {
    fn api(&self) -> Result<Api, HubError> {
        let mut builder = ApiBuilder::from_cache(self.cache())
            .with_endpoint(self.endpoint.clone())
            .with_progress(false)
            .with_user_agent("smollm3-rs", env!("CARGO_PKG_VERSION"));
        if let Some(token) = env_nonempty("HF_TOKEN") {
            builder = builder.with_token(Some(token));
        }
        builder.build().map_err(|e| self.map_error(e, None))
    }

    /// The names of the repository's files, from the hub.
    pub(crate) fn file_list(&self) -> Result<Vec<String>, HubError> {
        let info = self
            .api()?
            .model(self.repo.to_string())
            .info()
            .map_err(|e| self.map_error(e, None))?;
        Ok(info.siblings.into_iter().map(|s| s.rfilename).collect())
    }

    pub(crate) fn download(&self, file: &str) -> Result<PathBuf, HubError> {
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
