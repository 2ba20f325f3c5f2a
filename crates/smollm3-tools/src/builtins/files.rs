//! The `list_files` and `read_file` tools: read-only access to one directory tree.
//!
//! Paths are relative to a root the user names. Absolute paths, `..` components and symlinks
//! anywhere on the path are refused (each component is checked with `symlink_metadata`), so
//! the model can only see regular files and directories inside the root. Files must be UTF-8
//! text; reads are capped.
//!
//! The checks happen before the file is opened: a process that swaps a checked component for
//! a symlink in between could still redirect the read. The tools guard against a model's
//! requests, not against a hostile process with write access to the root.

use std::fs;
use std::io::Read;
use std::path::{Component, Path, PathBuf};
use std::sync::Arc;

use serde_json::{json, Map, Value};

use crate::{Result, Tool, ToolDefinition, ToolsError};

/// How much `read_file` returns when the model does not say.
pub const DEFAULT_MAX_BYTES: u64 = 64 * 1024;
/// The most `read_file` returns however much the model asks for.
pub const MAX_MAX_BYTES: u64 = 1024 * 1024;
/// The most entries `list_files` returns for one directory.
pub const MAX_ENTRIES: usize = 1000;

/// The canonical root directory both tools are confined to.
#[derive(Debug, Clone)]
pub struct FilesRoot {
    root: PathBuf,
}

impl FilesRoot {
    /// Canonicalizes `root`; errors when it does not exist or is not a directory.
    pub fn new(root: &Path) -> Result<Self> {
        let canonical = fs::canonicalize(root)
            .map_err(|e| ToolsError::Definition(format!("files root {}: {e}", root.display())))?;
        if !canonical.is_dir() {
            return Err(ToolsError::Definition(format!(
                "files root {} is not a directory",
                root.display()
            )));
        }
        Ok(FilesRoot { root: canonical })
    }

    /// The canonical root.
    pub fn path(&self) -> &Path {
        &self.root
    }

    /// Maps a path the model gave onto the file system, refusing anything outside the root
    /// or through a symlink. The target must exist.
    pub fn resolve(&self, relative: &str) -> Result<PathBuf, String> {
        if relative.contains('\0') {
            return Err("the path contains a NUL character".into());
        }
        let path = Path::new(relative);
        if path.is_absolute() || path.has_root() {
            return Err(format!(
                "absolute paths are not allowed ({relative:?}); give a path relative to the \
                 files root, e.g. \"notes/todo.txt\""
            ));
        }
        let mut resolved = self.root.clone();
        for component in path.components() {
            match component {
                Component::CurDir => {}
                Component::Normal(part) => {
                    resolved.push(part);
                    let meta = fs::symlink_metadata(&resolved).map_err(|e| {
                        if e.kind() == std::io::ErrorKind::NotFound {
                            format!("no such file or directory: {relative:?}")
                        } else {
                            format!("cannot access {relative:?}: {e}")
                        }
                    })?;
                    if meta.file_type().is_symlink() {
                        return Err(format!(
                            "symlinks are not followed ({:?} is a symlink)",
                            self.display(&resolved)
                        ));
                    }
                }
                Component::ParentDir => {
                    return Err(format!(
                        "path escapes the files root ({relative:?}: \"..\" is not allowed)"
                    ))
                }
                Component::RootDir | Component::Prefix(_) => {
                    return Err(format!(
                        "absolute paths are not allowed ({relative:?}); give a path relative \
                         to the files root"
                    ))
                }
            }
        }
        Ok(resolved)
    }

    /// `resolved` relative to the root, with `/` separators ("." for the root itself).
    fn display(&self, resolved: &Path) -> String {
        let rel = resolved.strip_prefix(&self.root).unwrap_or(resolved);
        let parts: Vec<String> = rel
            .components()
            .map(|c| c.as_os_str().to_string_lossy().into_owned())
            .collect();
        if parts.is_empty() {
            ".".into()
        } else {
            parts.join("/")
        }
    }
}

/// Both file tools over one root.
pub fn tools(root: &Path) -> Result<Vec<Arc<dyn Tool>>> {
    let root = FilesRoot::new(root)?;
    Ok(vec![
        Arc::new(ListFiles::with_root(root.clone())),
        Arc::new(ReadFile::with_root(root)),
    ])
}

/// `list_files`: the entries of a directory under the root.
pub struct ListFiles {
    definition: ToolDefinition,
    root: FilesRoot,
}

impl ListFiles {
    pub fn new(root: &Path) -> Result<Self> {
        Ok(Self::with_root(FilesRoot::new(root)?))
    }

    pub fn with_root(root: FilesRoot) -> Self {
        ListFiles {
            definition: ToolDefinition::new(
                "list_files",
                "List the files and directories in a directory of the user's files (read-only). \
                 Paths are relative to the files root; \".\" is the root itself. Returns each \
                 entry's name, type (file, directory, symlink or other) and size in bytes, \
                 sorted by name.",
                json!({
                    "type": "object",
                    "properties": {
                        "path": {
                            "type": "string",
                            "description": "Directory to list, relative to the files root, e.g. \"docs\". Defaults to \".\"."
                        }
                    },
                    "additionalProperties": false
                }),
            ),
            root,
        }
    }

    fn list(&self, relative: &str) -> Result<Value, String> {
        let dir = self.root.resolve(relative)?;
        let shown = self.root.display(&dir);
        if !dir.is_dir() {
            return Err(format!(
                "{shown:?} is not a directory (use read_file to read a file)"
            ));
        }
        let reader = fs::read_dir(&dir).map_err(|e| format!("cannot list {shown:?}: {e}"))?;
        let mut entries = Vec::new();
        for entry in reader {
            let entry = entry.map_err(|e| format!("cannot list {shown:?}: {e}"))?;
            let name = entry.file_name().to_string_lossy().into_owned();
            // `DirEntry::metadata` does not follow symlinks.
            let (kind, size) = match entry.metadata() {
                Ok(meta) => {
                    let ft = meta.file_type();
                    if ft.is_symlink() {
                        ("symlink", None)
                    } else if ft.is_dir() {
                        ("directory", None)
                    } else if ft.is_file() {
                        ("file", Some(meta.len()))
                    } else {
                        ("other", None)
                    }
                }
                Err(_) => ("other", None),
            };
            entries.push((name, kind, size));
        }
        entries.sort_by(|a, b| a.0.cmp(&b.0));
        let total = entries.len();
        let truncated = total > MAX_ENTRIES;
        let entries: Vec<Value> = entries
            .into_iter()
            .take(MAX_ENTRIES)
            .map(|(name, kind, size)| {
                let mut obj = Map::new();
                obj.insert("name".into(), name.into());
                obj.insert("type".into(), kind.into());
                if let Some(size) = size {
                    obj.insert("size".into(), size.into());
                }
                Value::Object(obj)
            })
            .collect();
        let mut out = json!({"path": shown, "entries": entries});
        if truncated {
            out["truncated"] = true.into();
            out["note"] = format!("showing the first {MAX_ENTRIES} of {total} entries").into();
        }
        Ok(out)
    }
}

impl Tool for ListFiles {
    fn definition(&self) -> &ToolDefinition {
        &self.definition
    }

    fn call(&self, arguments: &Map<String, Value>) -> Result<Value, String> {
        let path = match arguments.get("path") {
            None | Some(Value::Null) => ".",
            Some(Value::String(s)) if s.is_empty() => ".",
            Some(Value::String(s)) => s.as_str(),
            Some(other) => return Err(format!("path must be a string, got {other}")),
        };
        self.list(path)
    }
}

/// `read_file`: the text of a file under the root, capped.
pub struct ReadFile {
    definition: ToolDefinition,
    root: FilesRoot,
}

impl ReadFile {
    pub fn new(root: &Path) -> Result<Self> {
        Ok(Self::with_root(FilesRoot::new(root)?))
    }

    pub fn with_root(root: FilesRoot) -> Self {
        ReadFile {
            definition: ToolDefinition::new(
                "read_file",
                "Read a UTF-8 text file from the user's files (read-only). The path is relative \
                 to the files root (use list_files to find it). Returns the content, the file's \
                 size in bytes, and whether the content was cut at max_bytes.",
                json!({
                    "type": "object",
                    "properties": {
                        "path": {
                            "type": "string",
                            "description": "File to read, relative to the files root, e.g. \"notes/todo.txt\"."
                        },
                        "max_bytes": {
                            "type": "integer",
                            "minimum": 1,
                            "maximum": MAX_MAX_BYTES,
                            "description": "Read at most this many bytes. Defaults to 65536."
                        }
                    },
                    "required": ["path"],
                    "additionalProperties": false
                }),
            ),
            root,
        }
    }

    fn read(&self, relative: &str, max_bytes: u64) -> Result<Value, String> {
        let path = self.root.resolve(relative)?;
        let shown = self.root.display(&path);
        let meta =
            fs::symlink_metadata(&path).map_err(|e| format!("cannot read {shown:?}: {e}"))?;
        if meta.is_dir() {
            return Err(format!(
                "{shown:?} is a directory (use list_files to list it)"
            ));
        }
        if !meta.is_file() {
            return Err(format!("{shown:?} is not a regular file"));
        }
        let file = fs::File::open(&path).map_err(|e| format!("cannot read {shown:?}: {e}"))?;
        let mut bytes = Vec::new();
        // One byte past the cap tells whether there is more.
        file.take(max_bytes.saturating_add(1))
            .read_to_end(&mut bytes)
            .map_err(|e| format!("cannot read {shown:?}: {e}"))?;
        let limit = usize::try_from(max_bytes).unwrap_or(usize::MAX);
        let truncated = bytes.len() > limit;
        bytes.truncate(limit);

        let text = match std::str::from_utf8(&bytes) {
            Ok(text) => text,
            // Cut in the middle of a character at the cap: drop the partial character.
            Err(e) if truncated && e.error_len().is_none() => {
                std::str::from_utf8(&bytes[..e.valid_up_to()]).map_err(|_| binary(&shown))?
            }
            Err(_) => return Err(binary(&shown)),
        };
        if text.contains('\0') {
            return Err(binary(&shown));
        }
        let size = meta.len().max(bytes.len() as u64);
        let mut out = json!({
            "path": shown,
            "size": size,
            "truncated": truncated,
            "content": text,
        });
        if truncated {
            out["note"] = format!(
                "truncated: showing the first {} of {size} bytes; pass a larger max_bytes (up \
                 to {MAX_MAX_BYTES}) to read more",
                text.len()
            )
            .into();
        }
        Ok(out)
    }
}

fn binary(shown: &str) -> String {
    format!("{shown:?} is a binary file (not UTF-8 text); only text files can be read")
}

impl Tool for ReadFile {
    fn definition(&self) -> &ToolDefinition {
        &self.definition
    }

    fn call(&self, arguments: &Map<String, Value>) -> Result<Value, String> {
        let path = match arguments.get("path") {
            Some(Value::String(s)) => s.as_str(),
            Some(other) => return Err(format!("path must be a string, got {other}")),
            None => return Err("missing the argument \"path\"".into()),
        };
        let max_bytes = match arguments.get("max_bytes") {
            None | Some(Value::Null) => DEFAULT_MAX_BYTES,
            Some(v) => match v.as_u64().or_else(|| {
                v.as_f64()
                    .filter(|x| x.fract() == 0.0 && *x >= 1.0 && *x <= MAX_MAX_BYTES as f64)
                    .map(|x| x as u64)
            }) {
                Some(n) if (1..=MAX_MAX_BYTES).contains(&n) => n,
                _ => {
                    return Err(format!(
                        "max_bytes must be a whole number from 1 to {MAX_MAX_BYTES}, got {v}"
                    ))
                }
            },
        };
        self.read(path, max_bytes)
    }
}
