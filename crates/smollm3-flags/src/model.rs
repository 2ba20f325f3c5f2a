//! Model-loading flags: which file (`--model`, `--offline`) and how to load it (`--ctx`, rope
//! overrides), for every subcommand and server that reads a model.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::sync::OnceLock;

use anyhow::{anyhow, bail, Context, Result};
use clap::{Args, ValueEnum};
use indicatif::{ProgressBar, ProgressFinish, ProgressStyle};
use smollm3_gen::Engine;
use smollm3_hub::progress::terminal_download_progress;
use smollm3_hub::{HubError, HubOptions, ModelRef, ACCEPTED_FORMS};
use smollm3_model::{Config, GgufFile, KvType, LoadOptions, Model, RopeScaling};

/// Which model file to use: `--model` (a path or a Hugging Face hub reference) and `--offline`.
#[derive(Args, Debug, Default)]
pub struct ModelSource {
    /// The model: a GGUF file, or a file on the Hugging Face hub as REPO:FILE.gguf, REPO:QUANT
    /// (e.g. ggml-org/SmolLM3-3B-GGUF:q8_0) or REPO. Hub files are kept in the Hugging Face
    /// cache and downloaded on first use. [default: ggml-org/SmolLM3-3B-GGUF:SmolLM3-Q4_K_M.gguf]
    #[arg(long, value_name = "FILE.gguf|REPO:FILE|REPO:QUANT")]
    pub model: Option<String>,
    /// Use only the Hugging Face cache, never the network (also HF_HUB_OFFLINE=1).
    #[arg(long)]
    pub offline: bool,
    #[arg(skip)]
    resolved: OnceLock<PathBuf>,
}

impl ModelSource {
    /// The local GGUF file: the path given, or the hub file from the cache, downloaded first
    /// (with a progress bar on a terminal) when it is missing and downloads are allowed.
    pub fn resolve(&self) -> Result<PathBuf> {
        if let Some(path) = self.resolved.get() {
            return Ok(path.clone());
        }
        let model = match &self.model {
            Some(s) => ModelRef::parse(s).map_err(with_flag_hint)?,
            None => ModelRef::default_model(),
        };
        if let ModelRef::Path(path) = &model {
            if !path.exists() {
                bail!(
                    "model file {} not found (--model takes a GGUF file, REPO:FILE.gguf or \
                     REPO:QUANT; without --model the default SmolLM3-3B Q4_K_M is used, \
                     downloaded on first use)",
                    path.display()
                );
            }
        }
        let options = HubOptions {
            offline: self.offline,
            progress: Some(terminal_download_progress()),
            ..HubOptions::default()
        };
        let fetched = smollm3_hub::fetch(&model, &options).map_err(with_flag_hint)?;
        if fetched.downloaded {
            eprintln!("saved {} to {}", model, fetched.path.display());
        }
        Ok(self.resolved.get_or_init(|| fetched.path).clone())
    }
}

/// The library's message in this command's terms (the library names no flag or command): which
/// flag took the value, the flag that turned downloads off, the command that gets a file.
fn with_flag_hint(error: HubError) -> anyhow::Error {
    let hint = match &error {
        HubError::BadModelRef { input, reason } => {
            return anyhow!("cannot use --model {input:?}: {reason}; {ACCEPTED_FORMS}")
        }
        HubError::OfflineMiss { repo, file, .. } => format!(
            " (--offline or HF_HUB_OFFLINE); get it with \
             `cargo xtask fetch-weights --repo {repo} --file {file}` or drop --offline"
        ),
        HubError::OfflineQuantMiss { repo, quant, .. } => format!(
            " (--offline or HF_HUB_OFFLINE); get it with \
             `cargo xtask fetch-weights --repo {repo} --quant {quant}` or drop --offline"
        ),
        HubError::AmbiguousQuant { repo, .. } => {
            format!("; pick one with --model {repo}:FILE.gguf")
        }
        HubError::Download { .. } => " (or use --offline to use only the cache)".to_string(),
        HubError::Incomplete { .. } => ", run the command again".to_string(),
        _ => String::new(),
    };
    anyhow!("{error}{hint}")
}

/// A spinner naming the file while the model is set up, on a terminal only; it clears itself
/// when dropped. Loading maps the file rather than reading it, so this is short when the file
/// is in the page cache, but building the tokenizer of a 128k vocabulary still takes a moment.
fn loading_spinner(gguf: &GgufFile) -> ProgressBar {
    if !std::io::stderr().is_terminal() {
        return ProgressBar::hidden();
    }
    let name = gguf
        .path()
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let style = ProgressStyle::with_template("{spinner} loading {msg} ({elapsed})")
        .unwrap_or_else(|_| ProgressStyle::default_spinner());
    let spinner = ProgressBar::new_spinner()
        .with_style(style)
        .with_message(name)
        .with_finish(ProgressFinish::AndClear);
    spinner.enable_steady_tick(std::time::Duration::from_millis(100));
    spinner
}

#[derive(Args, Debug)]
pub struct ModelArgs {
    #[command(flatten)]
    pub source: ModelSource,
    /// Context size in tokens (default: what the command needs, at most the model's).
    #[arg(long, value_name = "N")]
    pub ctx: Option<usize>,
    /// Override the file's rope scaling (llama.cpp's flag).
    #[arg(long, value_enum, value_name = "KIND")]
    pub rope_scaling: Option<RopeScalingKind>,
    /// Rope scaling factor (with --rope-scaling yarn|linear).
    #[arg(long, value_name = "F")]
    pub rope_scale: Option<f64>,
    /// Context the model was trained on before YaRN (default: the file's context length).
    #[arg(long, value_name = "N")]
    pub yarn_orig_ctx: Option<usize>,
    /// How the KV cache stores keys and values: f16 (half the memory and the bytes each token
    /// reads, llama.cpp's default) or f32 (exact, what the reference-parity tests use).
    #[arg(long, value_name = "f16|f32", default_value_t = KvType::F16, alias = "cache-type")]
    pub kv_cache: KvType,
    /// Prompt tokens per pass through the layers (llama.cpp's flag; default 512): a longer
    /// prompt runs in slices of this many, so its activations stay at one slice's size.
    #[arg(long, value_name = "N", alias = "ub")]
    pub ubatch_size: Option<std::num::NonZeroUsize>,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum RopeScalingKind {
    None,
    Linear,
    Yarn,
}

impl ModelArgs {
    pub fn load(&self) -> Result<Model> {
        self.load_with(Model::from_gguf)
    }

    /// The model with its tokenizer and chat template (the GGUF is read once).
    pub fn load_engine(&self) -> Result<Engine> {
        self.load_with(Engine::from_gguf)
    }

    /// Opens the file (downloading it if need be), then builds from it under a spinner.
    fn load_with<T, E>(&self, build: fn(&GgufFile, &LoadOptions) -> Result<T, E>) -> Result<T>
    where
        E: std::error::Error + Send + Sync + 'static,
    {
        let gguf = self.open()?;
        let options = self.load_options(&gguf)?;
        let _spinner = loading_spinner(&gguf);
        build(&gguf, &options).with_context(|| self.loading())
    }

    /// The local model file (see [`ModelSource::resolve`]).
    pub fn path(&self) -> Result<PathBuf> {
        self.source.resolve()
    }

    fn loading(&self) -> String {
        match self.source.resolved.get() {
            Some(path) => format!("loading {}", path.display()),
            None => "loading the model".to_string(),
        }
    }

    fn open(&self) -> Result<GgufFile> {
        let path = self.path()?;
        GgufFile::open(&path).with_context(|| self.loading())
    }

    /// The rope override from the flags; YaRN's default original context comes from the
    /// already-open header.
    fn load_options(&self, gguf: &GgufFile) -> Result<LoadOptions> {
        let mut options = LoadOptions {
            kv_type: self.kv_cache,
            prompt_slice: self.ubatch_size.map(usize::from),
            ..LoadOptions::default()
        };
        if let Some(kind) = self.rope_scaling {
            let factor = || -> Result<f64> {
                self.rope_scale
                    .context("--rope-scaling yarn|linear needs --rope-scale F")
            };
            options.rope_scaling = Some(match kind {
                RopeScalingKind::None => None,
                RopeScalingKind::Linear => Some(RopeScaling::Linear { factor: factor()? }),
                RopeScalingKind::Yarn => {
                    let orig = match self.yarn_orig_ctx {
                        Some(n) => n,
                        None => {
                            Config::from_gguf(gguf)
                                .with_context(|| self.loading())?
                                .context_length
                        }
                    };
                    Some(RopeScaling::yarn(factor()?, orig))
                }
            });
        } else if self.rope_scale.is_some() || self.yarn_orig_ctx.is_some() {
            bail!("--rope-scale and --yarn-orig-ctx need --rope-scaling yarn|linear");
        }
        Ok(options)
    }

    /// The context to allocate: `--ctx`, or just what `needed` tokens take.
    pub fn context(&self, model: &Model, needed: usize) -> Result<usize> {
        let ctx = self
            .ctx
            .unwrap_or(needed.min(model.config().max_context()).max(1));
        if needed > ctx {
            bail!("{needed} tokens do not fit in a context of {ctx} (raise --ctx)");
        }
        Ok(ctx)
    }
}

/// Parses `"1,2,3"` into token ids.
pub fn parse_tokens(s: &str) -> Result<Vec<u32>> {
    let tokens = s
        .split(',')
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .map(|t| {
            t.parse::<u32>().with_context(|| {
                format!("invalid token id {t:?} in --tokens (expected e.g. 1,2,3)")
            })
        })
        .collect::<Result<Vec<_>>>()?;
    if tokens.is_empty() {
        bail!("--tokens is empty: give at least one token id, e.g. --tokens 1,2,3");
    }
    Ok(tokens)
}
