//! Testing hook (`--replay replies.json`, hidden): a session whose "model" plays back scripted
//! replies, with the real tokenizer and template, so CLI tests are exact.

use anyhow::{Context, Result};
use smollm3_gen::{Engine, ScriptedBackend, Session};

/// A session that answers with the replies in `path` (a JSON array of strings), in turn.
pub fn replay_session(
    engine: &Engine,
    path: &std::path::Path,
    ctx: Option<usize>,
) -> Result<Session<ScriptedBackend>> {
    let json =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let replies: Vec<String> = serde_json::from_str(&json)
        .with_context(|| format!("{}: expected a JSON array of strings", path.display()))?;
    let replies: Vec<&str> = replies.iter().map(String::as_str).collect();
    // No model runs, so the context is not limited by it.
    let context = ctx.unwrap_or(1 << 16);
    let backend = ScriptedBackend::from_texts(&engine.tokenizer, context, &replies)?;
    Ok(Session::with_backend(
        backend,
        engine.tokenizer.clone(),
        engine.template.clone(),
    ))
}
