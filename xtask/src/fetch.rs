//! `cargo xtask fetch-weights`: download a SmolLM3 GGUF into the standard Hugging Face cache.

use std::io::IsTerminal;
use std::sync::Mutex;

use anyhow::Result;
use clap::Args;
use indicatif::{HumanBytes, ProgressBar, ProgressStyle};
use smollm3_model::hub::{self, DownloadEvent, HubOptions, ModelRef, DEFAULT_QUANT, DEFAULT_REPO};

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
    let model = ModelRef::parse(&spec)?;
    let options = HubOptions {
        offline: args.offline,
        progress: Some(download_progress()),
        ..HubOptions::default()
    };
    let fetched = hub::fetch(&model, &options)?;
    let name = format!("{}:{}", args.repo, fetched.file);
    if fetched.downloaded {
        println!("downloaded {name}");
    } else {
        println!("{name} is already in the Hugging Face cache: nothing downloaded");
    }
    println!("{}", fetched.path.display());
    Ok(())
}

/// One line naming the file, then a progress bar on stderr when it is a terminal.
fn download_progress() -> Box<dyn Fn(DownloadEvent<'_>) + Send + Sync> {
    let bar: Mutex<Option<ProgressBar>> = Mutex::new(None);
    Box::new(move |event| {
        let Ok(mut bar) = bar.lock() else { return };
        match event {
            DownloadEvent::Start { file, total } => {
                eprintln!("downloading {file} ({})", HumanBytes(total));
                let pb = if std::io::stderr().is_terminal() {
                    let style = ProgressStyle::with_template(
                        "[{elapsed_precise}] [{wide_bar}] {bytes}/{total_bytes} {bytes_per_sec} ({eta})",
                    )
                    .unwrap_or_else(|_| ProgressStyle::default_bar());
                    ProgressBar::new(total).with_style(style)
                } else {
                    ProgressBar::hidden()
                };
                *bar = Some(pb);
            }
            DownloadEvent::Progress { downloaded, .. } => {
                if let Some(pb) = bar.as_ref() {
                    pb.set_position(downloaded);
                }
            }
            DownloadEvent::Finish => {
                if let Some(pb) = bar.take() {
                    pb.finish_and_clear();
                }
            }
        }
    })
}
