//! Model-loading flags shared by every subcommand that runs a model.

use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use clap::{Args, ValueEnum};
use smollm3_gen::Engine;
use smollm3_model::{Config, GgufFile, LoadOptions, Model, RopeScaling};

#[derive(Args, Debug)]
pub struct ModelArgs {
    /// Path to a GGUF model file.
    #[arg(long, value_name = "FILE.gguf")]
    pub model: PathBuf,
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
}

#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum RopeScalingKind {
    None,
    Linear,
    Yarn,
}

impl ModelArgs {
    pub fn load(&self) -> Result<Model> {
        let gguf = self.open()?;
        let options = self.load_options(&gguf)?;
        Model::from_gguf(&gguf, &options).with_context(|| self.loading())
    }

    /// The model with its tokenizer and chat template (the GGUF is read once).
    pub fn load_engine(&self) -> Result<Engine> {
        let gguf = self.open()?;
        let options = self.load_options(&gguf)?;
        Engine::from_gguf(&gguf, &options).with_context(|| self.loading())
    }

    fn loading(&self) -> String {
        format!("loading {}", self.model.display())
    }

    fn open(&self) -> Result<GgufFile> {
        GgufFile::open(&self.model).with_context(|| self.loading())
    }

    /// The rope override from the flags; YaRN's default original context comes from the
    /// already-open header.
    fn load_options(&self, gguf: &GgufFile) -> Result<LoadOptions> {
        let mut options = LoadOptions::default();
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
