//! `cargo xtask fetch-weights`: download a SmolLM3 GGUF into the standard Hugging Face cache.

use anyhow::{anyhow, Result};
use clap::Args;
use smollm3_hub::progress::terminal_download_progress;
use smollm3_hub::{HubError, HubOptions, ModelRef, DEFAULT_QUANT, DEFAULT_REPO};

#[derive(Args)]
#[command(after_help = "Examples:
  cargo xtask fetch-weights                                  # SmolLM3-3B Q4_K_M (ggml-org)
  cargo xtask fetch-weights --quant q8_0
  cargo xtask fetch-weights --repo unsloth/SmolLM3-3B-GGUF --file SmolLM3-3B-Q4_K_M.gguf
  HF_HOME=/data/hf cargo xtask fetch-weights                 # another cache")]
pub struct FetchArgs {
    /// Quantization: the repository's GGUF whose name carries it (q4_k_m, q8_0, f16, ...).
    #[arg(long, default_value = DEFAULT_QUANT)]
    quant: String,
    /// Hugging Face repository (unsloth/SmolLM3-3B-GGUF has the same model).
    #[arg(long, default_value = DEFAULT_REPO, value_name = "ID")]
    repo: String,
    /// Exact file name in the repository (instead of --quant).
    #[arg(long, value_name = "NAME", conflicts_with = "quant")]
    file: Option<String>,
    /// Only look in the cache; never download (also HF_HUB_OFFLINE=1).
    #[arg(long)]
    offline: bool,
}

pub fn run(args: FetchArgs) -> Result<()> {
    let spec = match &args.file {
        Some(file) => format!("{}:{file}", args.repo),
        None => format!("{}:{}", args.repo, args.quant),
    };
    let model = ModelRef::parse(&spec).map_err(with_hint)?;
    let options = HubOptions {
        offline: args.offline,
        progress: Some(terminal_download_progress()),
        ..HubOptions::default()
    };
    let fetched = smollm3_hub::fetch(&model, &options).map_err(with_hint)?;
    let name = format!("{}:{}", args.repo, fetched.file);
    if fetched.downloaded {
        println!("downloaded {name}");
    } else {
        println!("{name} is already in the Hugging Face cache: nothing downloaded");
    }
    println!("{}", fetched.path.display());
    Ok(())
}

/// The library's message, plus what to do about it in this command's terms (the library names
/// no flag or command): drop `--offline`, or pick a file with `--file`.
fn with_hint(error: HubError) -> anyhow::Error {
    let command =
        |repo: &str, what: &str| format!("cargo xtask fetch-weights --repo {repo} {what}");
    let hint = match &error {
        HubError::OfflineMiss { repo, file, .. } => {
            offline_hint(&command(repo, &format!("--file {file}")))
        }
        HubError::OfflineQuantMiss { repo, quant, .. } => {
            offline_hint(&command(repo, &format!("--quant {quant}")))
        }
        HubError::AmbiguousQuant { .. } => "; pick one with --file NAME".to_string(),
        HubError::Download { .. } => " (or use --offline to use only the cache)".to_string(),
        HubError::Incomplete { .. } => ", run the command again".to_string(),
        _ => String::new(),
    };
    anyhow!("{error}{hint}")
}

fn offline_hint(command: &str) -> String {
    format!(" (--offline or HF_HUB_OFFLINE); get it with `{command}` or drop --offline")
}
