//! Safe built-in tools.
//!
//! - `calculator` ([`Calculator`]): arithmetic expressions, evaluated by a small parser that
//!   can only compute a number.
//! - `time` ([`CurrentTime`], tool name `get_current_time`): the current date and time in an
//!   IANA time zone.
//! - `files` ([`ListFiles`] and [`ReadFile`], tool names `list_files` and `read_file`):
//!   read-only access to the text files under one directory.

pub mod calculator;
pub mod files;
pub mod time;

use std::path::Path;
use std::sync::Arc;

pub use calculator::Calculator;
pub use files::{FilesRoot, ListFiles, ReadFile};
pub use time::CurrentTime;

use crate::{Result, Tool, ToolsError};

/// The names [`by_names`] accepts.
pub fn all_names() -> &'static [&'static str] {
    &["calculator", "time", "files"]
}

/// Built-in tools by name: `calculator`, `time`, `files` (needs `files_root`).
///
/// A name given twice counts once. Errors ([`ToolsError::Definition`]): an unknown name
/// (the message lists the valid ones), `files` without a root, or a root that is not a
/// directory.
pub fn by_names(names: &[String], files_root: Option<&Path>) -> Result<Vec<Arc<dyn Tool>>> {
    let mut tools: Vec<Arc<dyn Tool>> = Vec::new();
    let mut seen: Vec<&str> = Vec::new();
    for name in names {
        let name = name.trim();
        if seen.contains(&name) {
            continue;
        }
        seen.push(name);
        match name {
            "calculator" => tools.push(Arc::new(Calculator::new())),
            "time" => tools.push(Arc::new(CurrentTime::new())),
            "files" => {
                let root = files_root.ok_or_else(|| {
                    ToolsError::Definition("the files tool needs --files-root DIR".into())
                })?;
                tools.extend(files::tools(root)?);
            }
            other => {
                return Err(ToolsError::Definition(format!(
                    "unknown built-in tool {other:?} (valid: {})",
                    all_names().join(", ")
                )))
            }
        }
    }
    Ok(tools)
}
