//! `smollm3 parse-tool-calls`: the tool-call parser on its own, for debugging model output.

use std::io::{Read, Write};
use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::Args;
use smollm3_tools::{parse, ParsedCall, ToolFormat};

use crate::args::{read_tool_definitions, ToolFormatArg};

#[derive(Args, Debug)]
#[command(after_help = "Examples:
  echo '<tool_call>{\"name\": \"f\", \"arguments\": {\"x\": 1}}</tool_call>' | smollm3 parse-tool-calls
  smollm3 parse-tool-calls --format python --tools tools.json < answer.txt")]
pub struct ParseToolCallsArgs {
    /// Which format to look for.
    #[arg(long, value_enum, default_value_t = ToolFormatArg::Xml)]
    pub format: ToolFormatArg,
    /// Tool definitions (OpenAI-style JSON): Python calls must name one of them, and their
    /// positional arguments are mapped by the schema's parameter order.
    #[arg(long, value_name = "tools.json")]
    pub tools: Option<PathBuf>,
}

/// Reads model output on stdin and prints one JSON object per call found (`status` is `ok`
/// or `malformed`). Exits with status 1 when any call is malformed.
pub fn run(args: &ParseToolCallsArgs) -> Result<bool> {
    let tools = match &args.tools {
        Some(path) => read_tool_definitions(path)?,
        None => Vec::new(),
    };
    let format: ToolFormat = args.format.into();
    if format == ToolFormat::Python && tools.is_empty() {
        anyhow::bail!("--format python needs --tools tools.json (calls must name a known tool)");
    }
    let mut text = String::new();
    std::io::stdin()
        .read_to_string(&mut text)
        .context("reading stdin")?;
    let calls = parse::parse(&text, format, &tools);
    let mut out = std::io::stdout().lock();
    for call in &calls {
        writeln!(out, "{}", serde_json::to_string(call)?)?;
    }
    Ok(calls
        .iter()
        .any(|c| matches!(c, ParsedCall::Malformed { .. })))
}
