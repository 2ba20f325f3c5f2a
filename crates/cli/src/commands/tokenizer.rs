//! `smollm3 tokenize`, `detokenize` and `template`: the tokenizer and chat template of a GGUF.

use std::io::Write;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{bail, Context, Result};
use clap::Args;
use smollm3_chat::{
    encode_chat, ChatRequest, ChatTemplate, Clock, DateTime, FixedClock, SystemClock, Tokenizer,
};

use crate::args::{parse_tokens, ModelSource};

#[derive(Args)]
pub struct TokenizeArgs {
    #[command(flatten)]
    model: ModelSource,
    /// A Hugging Face tokenizer.json to use instead of the GGUF's own tokenizer.
    #[arg(long, value_name = "tokenizer.json")]
    tokenizer: Option<PathBuf>,
    /// Text to tokenize.
    #[arg(long, conflicts_with = "file")]
    text: Option<String>,
    /// File whose contents to tokenize.
    #[arg(long)]
    file: Option<PathBuf>,
    /// Parse special tokens' text (`<|im_start|>`) as special tokens.
    #[arg(long)]
    special: bool,
    /// Print each token's id and text as JSON.
    #[arg(long)]
    json: bool,
}

#[derive(Args)]
pub struct DetokenizeArgs {
    #[command(flatten)]
    model: ModelSource,
    /// A Hugging Face tokenizer.json to use instead of the GGUF's own tokenizer.
    #[arg(long, value_name = "tokenizer.json")]
    tokenizer: Option<PathBuf>,
    /// Comma-separated token ids.
    #[arg(long, value_name = "IDS")]
    tokens: String,
}

#[derive(Args)]
pub struct TemplateArgs {
    #[command(flatten)]
    model: ModelSource,
    /// A Hugging Face tokenizer.json to use instead of the GGUF's own tokenizer.
    #[arg(long, value_name = "tokenizer.json")]
    tokenizer: Option<PathBuf>,
    /// OpenAI-style messages array (JSON file).
    #[arg(long, value_name = "conv.json")]
    messages: PathBuf,
    /// Render with thinking off (`enable_thinking = false`).
    #[arg(long)]
    no_think: bool,
    /// OpenAI-style tools array (JSON file).
    #[arg(long, value_name = "tools.json")]
    tools: Option<PathBuf>,
    /// Date for the template's `strftime_now`, e.g. "04 September 2026" (default: today, UTC).
    #[arg(long)]
    date: Option<String>,
    /// Print the prompt's token ids (JSON) instead of its text.
    #[arg(long)]
    tokens: bool,
    /// Leave out the assistant header at the end.
    #[arg(long)]
    no_generation_prompt: bool,
}

/// The GGUF's tokenizer, or the user's tokenizer.json (keeping the GGUF's bos / eos ids).
fn load_tokenizer(model: &PathBuf, tokenizer_json: Option<&PathBuf>) -> Result<Tokenizer> {
    let from_gguf = Tokenizer::from_gguf(model)?;
    Ok(match tokenizer_json {
        None => from_gguf,
        Some(path) => {
            let (bos, eos) = from_gguf.bos_eos();
            Tokenizer::from_tokenizer_json(path, bos, eos)?
        }
    })
}

fn read(path: &PathBuf) -> Result<String> {
    std::fs::read_to_string(path).with_context(|| format!("{}", path.display()))
}

pub fn tokenize(a: &TokenizeArgs) -> Result<()> {
    let text = match (&a.text, &a.file) {
        (Some(t), None) => t.clone(),
        (None, Some(f)) => read(f)?,
        _ => bail!("give exactly one of --text or --file"),
    };
    let tok = load_tokenizer(&a.model.resolve()?, a.tokenizer.as_ref())?;
    let ids = tok.encode(&text, a.special)?;
    let mut out = std::io::stdout().lock();
    if a.json {
        let items: Vec<_> = ids
            .iter()
            .map(|&id| {
                let bytes = tok.token_bytes(id).unwrap_or_default();
                serde_json::json!({"id": id, "text": String::from_utf8_lossy(bytes)})
            })
            .collect();
        writeln!(out, "{}", serde_json::to_string(&items)?)?;
    } else {
        writeln!(out, "{}", serde_json::to_string(&ids)?)?;
    }
    Ok(())
}

pub fn detokenize(a: &DetokenizeArgs) -> Result<()> {
    let ids = parse_tokens(&a.tokens)?;
    let tok = load_tokenizer(&a.model.resolve()?, a.tokenizer.as_ref())?;
    let text = tok.decode(&ids, false)?;
    let mut out = std::io::stdout().lock();
    write!(out, "{text}")?;
    Ok(())
}

pub fn template(a: &TemplateArgs) -> Result<()> {
    let clock: Arc<dyn Clock> = match &a.date {
        Some(d) => Arc::new(FixedClock(DateTime::parse_date(d).with_context(|| {
            format!("--date {d:?}: expected e.g. \"04 September 2026\" or 2026-09-04")
        })?)),
        None => Arc::new(SystemClock),
    };
    let mut template = ChatTemplate::from_gguf(a.model.resolve()?)?;
    template.set_clock(clock)?;
    let mut req = ChatRequest::from_messages_json(&read(&a.messages)?)?;
    if let Some(t) = &a.tools {
        req.tools_from_json(&read(t)?)?;
    }
    req.add_generation_prompt = !a.no_generation_prompt;
    if a.no_think {
        req.enable_thinking = Some(false);
    }
    let mut out = std::io::stdout().lock();
    if a.tokens {
        let tok = load_tokenizer(&a.model.resolve()?, a.tokenizer.as_ref())?;
        let p = encode_chat(&template, &tok, &req)?;
        writeln!(out, "{}", serde_json::to_string(&p.ids)?)?;
    } else {
        write!(out, "{}", template.render(&req)?)?;
    }
    Ok(())
}
