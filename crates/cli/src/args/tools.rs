//! The tool flags `run` and `chat` share, and the tool set they describe.

use std::path::Path;

use anyhow::{bail, Context, Result};
use clap::Args;
use smollm3_tools::{builtins, Registry, ToolDefinition, ToolFormat};

/// Tool flags, shared by `run` and `chat`.
#[derive(Args, Debug)]
pub struct ToolArgs {
    /// Tools the model may call, OpenAI-style JSON (a call to one of these ends the run and
    /// is printed for you to handle; see --builtin-tools for tools that run here).
    #[arg(long, value_name = "tools.json")]
    pub tools: Option<std::path::PathBuf>,
    /// Built-in tools that run here, comma-separated: calculator, time, files.
    #[arg(long, value_name = "LIST", value_delimiter = ',')]
    pub builtin_tools: Vec<String>,
    /// Directory the `files` tool may read (read-only; no `..`, no symlinks).
    #[arg(long, value_name = "DIR")]
    pub files_root: Option<std::path::PathBuf>,
    /// How tools are offered and calls parsed: SmolLM3's `<tool_call>` JSON (xml) or
    /// `<code>` Python calls (python).
    #[arg(long, value_enum, default_value_t = ToolFormatArg::Xml)]
    pub tool_format: ToolFormatArg,
    /// Most generations in the tool loop.
    #[arg(long, value_name = "N", default_value_t = 6)]
    pub max_rounds: usize,
    /// Seconds a tool may run before it is abandoned.
    #[arg(long, value_name = "SECONDS", default_value_t = 10.0)]
    pub tool_timeout: f64,
}

#[derive(Clone, Copy, Debug, clap::ValueEnum)]
pub enum ToolFormatArg {
    Xml,
    Python,
}

impl From<ToolFormatArg> for ToolFormat {
    fn from(f: ToolFormatArg) -> Self {
        match f {
            ToolFormatArg::Xml => ToolFormat::Xml,
            ToolFormatArg::Python => ToolFormat::Python,
        }
    }
}

/// The tools of a run: built-ins that run here, and definitions from --tools that the caller
/// handles.
pub struct ToolSetup {
    pub registry: Registry,
    pub external: Vec<ToolDefinition>,
    pub format: ToolFormat,
    pub max_rounds: usize,
}

impl ToolSetup {
    /// `None` when no tools were asked for.
    pub fn from_args(args: &ToolArgs) -> Result<Option<Self>> {
        if args.tools.is_none() && args.builtin_tools.is_empty() {
            if args.files_root.is_some() {
                bail!("--files-root needs --builtin-tools files");
            }
            return Ok(None);
        }
        if !(args.tool_timeout.is_finite() && args.tool_timeout > 0.0) {
            bail!("--tool-timeout must be a positive number of seconds");
        }
        let mut registry = Registry::new();
        registry.set_timeout(std::time::Duration::from_secs_f64(args.tool_timeout));
        let names: Vec<String> = args
            .builtin_tools
            .iter()
            .map(|n| n.trim().to_string())
            .filter(|n| !n.is_empty())
            .collect();
        if !names.is_empty() {
            for tool in builtins::by_names(&names, args.files_root.as_deref())? {
                registry.register(tool)?;
            }
        } else if args.files_root.is_some() {
            bail!("--files-root needs --builtin-tools files");
        }
        let external = match &args.tools {
            Some(path) => read_tool_definitions(path)?,
            None => Vec::new(),
        };
        if let Some(clash) = external.iter().find(|d| registry.get(&d.name).is_some()) {
            bail!(
                "tool {:?} in {} is also a built-in tool",
                clash.name,
                args.tools
                    .as_deref()
                    .map(|p| p.display().to_string())
                    .unwrap_or_default()
            );
        }
        Ok(Some(ToolSetup {
            registry,
            external,
            format: args.tool_format.into(),
            max_rounds: args.max_rounds.max(1),
        }))
    }
}

/// The tool definitions in an OpenAI-style JSON file (`--tools`), errors naming the file.
pub fn read_tool_definitions(path: &Path) -> Result<Vec<ToolDefinition>> {
    let json =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    ToolDefinition::list_from_json(&json).with_context(|| format!("tools in {}", path.display()))
}
