//! The Hugging Face cache on disk: where it is, and finding a repository's files in it.
//!
//! The layout is the one Python's `huggingface_hub` and `hf-hub` share:
//! `<cache>/models--owner--name/refs/main` holds a commit, `snapshots/<commit>/<file>` links to
//! `blobs/<etag>`.

use std::path::{Path, PathBuf};

use hf_hub::{Cache, Repo};

use crate::fetch::Hub;
use crate::HubError;

/// Whether `HF_HUB_OFFLINE` asks for offline mode (`1`, `true`, `yes`, `on`; any case).
pub fn offline_from_env() -> bool {
    std::env::var("HF_HUB_OFFLINE").is_ok_and(|v| {
        matches!(
            v.trim().to_ascii_lowercase().as_str(),
            "1" | "true" | "yes" | "on"
        )
    })
}

/// An environment variable, unless unset or blank.
pub(crate) fn env_nonempty(key: &str) -> Option<String> {
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

impl Hub<'_> {
    pub(crate) fn cache(&self) -> Cache {
        Cache::new(self.cache_dir.clone())
    }

    /// The cached file: from the `refs/main` snapshot, else from the newest other snapshot
    /// that has it (a later download of another file may have moved `refs/main` to a newer
    /// commit; the file from the older one is still the same repository's file). A dangling
    /// snapshot link (its blob was deleted) is removed so that a download can replace it.
    pub(crate) fn cached(&self, file: &str) -> Result<Option<PathBuf>, HubError> {
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

    /// A cached GGUF for `quant`: the `refs/main` snapshot first, then the others.
    pub(crate) fn cached_quant(&self, quant: &str) -> Result<Option<String>, HubError> {
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
}

/// The one file in `files` whose name carries `quant` as a `-`/`.`-separated part (e.g.
/// `SmolLM3-Q4_K_M.gguf` for `q4_k_m`), else the one containing it anywhere; several matches
/// are an error.
pub(crate) fn pick_quant(
    repo: &str,
    quant: &str,
    files: &[String],
) -> Result<Option<String>, HubError> {
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

#[cfg(test)]
mod tests {
    use super::*;

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
        let err = pick_quant("r/r", "q4_k", &files).unwrap_err();
        assert!(matches!(err, HubError::AmbiguousQuant { .. }), "{err:?}");
        // Which flag picks one file is the front end's to say.
        let msg = err.to_string();
        assert!(
            msg.contains("SmolLM3-Q4_K_M.gguf, SmolLM3-Q4_K_S.gguf") && !msg.contains("--"),
            "{msg}"
        );
    }
}
