//! [`ModelRef`]: what a user types to name a model (a local file or a file of a hub repository),
//! and the default model.

use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use crate::HubError;

/// The repository of the default model.
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

/// The forms [`ModelRef::parse`] accepts, with examples; the end of every
/// [`HubError::BadModelRef`] message, and there for a front end to show in its own words.
pub const ACCEPTED_FORMS: &str = "expected a GGUF file path, REPO:FILE.gguf, REPO:QUANT or REPO \
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

    /// Parses a model reference.
    ///
    /// An existing file, or anything that looks like a path to a `.gguf` file, is a local path;
    /// `REPO:FILE.gguf` names one file of a repository; `REPO:QUANT` picks the repository's
    /// GGUF for that quantization; a bare `owner/name` that is not a file on disk is that
    /// repository at [`DEFAULT_QUANT`]. Anything else is a [`HubError::BadModelRef`].
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
pub(crate) fn check_file_name(file: &str) -> Result<(), String> {
    if file.starts_with(['/', '\\']) || file.split(['/', '\\']).any(|c| c.is_empty() || c == "..") {
        return Err(format!("{file:?} is not a file name inside a repository"));
    }
    Ok(())
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
            // The flag that took the value is the front end's to name.
            assert!(!e.contains("--"), "{bad}: {e}");
        }
    }
}
