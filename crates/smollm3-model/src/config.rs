//! Model configuration read from GGUF metadata and validated before any tensor is loaded.

use serde::Serialize;

use crate::error::{ModelError, Result};
use crate::gguf::{invalid, GgufFile};

/// Architectures this engine runs.
pub const SUPPORTED_ARCHITECTURES: &[&str] = &["smollm3", "llama"];

/// llama.cpp hard-codes SmolLM3's NoPE interval (there is no GGUF key for it): every 4th layer
/// (indices 3, 7, ...) skips RoPE.
pub const SMOLLM3_NOPE_INTERVAL: usize = 4;

/// Supported model families.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Architecture {
    SmolLm3,
    Llama,
}

impl Architecture {
    pub fn gguf_name(self) -> &'static str {
        match self {
            Self::SmolLm3 => "smollm3",
            Self::Llama => "llama",
        }
    }
}

/// How RoPE frequencies are stretched beyond the trained context.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
#[serde(tag = "type", rename_all = "lowercase")]
pub enum RopeScaling {
    /// YaRN as in HF transformers' `rope_type: "yarn"` (`_compute_yarn_parameters`).
    Yarn {
        factor: f64,
        original_context_length: usize,
        beta_fast: f64,
        beta_slow: f64,
        /// Multiplies cos and sin; `None` means HF's default `0.1 * ln(factor) + 1`.
        attention_factor: Option<f64>,
    },
    /// Positions divided by `factor` (llama.cpp `--rope-scaling linear`).
    Linear { factor: f64 },
}

impl RopeScaling {
    /// YaRN with HF's default betas and attention factor.
    pub fn yarn(factor: f64, original_context_length: usize) -> Self {
        Self::Yarn {
            factor,
            original_context_length,
            beta_fast: 32.0,
            beta_slow: 1.0,
            attention_factor: None,
        }
    }

    fn validate(&self) -> Result<()> {
        let factor = match self {
            Self::Yarn {
                factor,
                original_context_length,
                beta_fast,
                beta_slow,
                ..
            } => {
                if *original_context_length == 0 {
                    return Err(ModelError::InvalidOption(
                        "YaRN original context length must be positive".into(),
                    ));
                }
                if !(beta_fast.is_finite() && beta_slow.is_finite() && beta_fast > beta_slow) {
                    return Err(ModelError::InvalidOption(format!(
                        "YaRN betas must be finite with beta_fast > beta_slow, got {beta_fast} and {beta_slow}"
                    )));
                }
                *factor
            }
            Self::Linear { factor } => *factor,
        };
        if !(factor.is_finite() && factor >= 1.0) {
            return Err(ModelError::InvalidOption(format!(
                "rope scaling factor must be a finite number >= 1, got {factor}"
            )));
        }
        Ok(())
    }
}

/// Hyper-parameters of a SmolLM3 or Llama model, as read from the GGUF.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Config {
    pub architecture: Architecture,
    pub vocab_size: usize,
    pub hidden_size: usize,
    pub intermediate_size: usize,
    pub num_layers: usize,
    pub num_heads: usize,
    pub num_kv_heads: usize,
    pub head_dim: usize,
    /// Context the model was trained for (`*.context_length`).
    pub context_length: usize,
    pub rope_theta: f64,
    pub rms_norm_eps: f64,
    pub rope_scaling: Option<RopeScaling>,
    /// Layer indices that apply no rotary embedding (SmolLM3's NoPE layers).
    pub nope_layers: Vec<usize>,
    /// The output projection is the token embedding (no `output.weight`).
    pub tied_embeddings: bool,
}

impl Config {
    /// Reads and validates the configuration of `gguf`. Tensor shapes are checked later, at load.
    pub fn from_gguf(gguf: &GgufFile) -> Result<Self> {
        let arch_name = gguf.require_string("general.architecture")?;
        let architecture = match arch_name {
            "smollm3" => Architecture::SmolLm3,
            "llama" => Architecture::Llama,
            other => {
                return Err(ModelError::UnsupportedArchitecture {
                    found: other.to_string(),
                    supported: SUPPORTED_ARCHITECTURES,
                })
            }
        };
        let key = |k: &str| format!("{arch_name}.{k}");
        let hidden_size = gguf.require_usize(&key("embedding_length"))?;
        let num_heads = gguf.require_usize(&key("attention.head_count"))?;
        let num_kv_heads = gguf
            .get_usize(&key("attention.head_count_kv"))?
            .unwrap_or(num_heads);
        if num_heads == 0 || num_kv_heads == 0 {
            return Err(ModelError::InvalidConfig(format!(
                "head counts must be positive (heads {num_heads}, kv heads {num_kv_heads})"
            )));
        }
        if hidden_size % num_heads != 0 {
            return Err(ModelError::InvalidConfig(format!(
                "hidden size {hidden_size} is not divisible by the head count {num_heads}"
            )));
        }
        if num_heads % num_kv_heads != 0 {
            return Err(ModelError::InvalidConfig(format!(
                "head count {num_heads} is not a multiple of the KV head count {num_kv_heads}"
            )));
        }
        let head_dim = gguf
            .get_usize(&key("attention.key_length"))?
            .unwrap_or(hidden_size / num_heads);
        if let Some(v) = gguf.get_usize(&key("attention.value_length"))? {
            if v != head_dim {
                return Err(ModelError::InvalidConfig(format!(
                    "value head size {v} differs from key head size {head_dim}"
                )));
            }
        }
        if head_dim == 0 || head_dim % 2 != 0 {
            return Err(ModelError::InvalidConfig(format!(
                "head dimension {head_dim} must be even and positive for RoPE"
            )));
        }
        let rope_dim = gguf
            .get_usize(&key("rope.dimension_count"))?
            .unwrap_or(head_dim);
        if rope_dim != head_dim {
            return Err(invalid(
                &key("rope.dimension_count"),
                format!("partial rotary embeddings are not supported: rope dimension {rope_dim}, head dimension {head_dim}"),
            ));
        }
        let num_layers = gguf.require_usize(&key("block_count"))?;
        if num_layers == 0 {
            return Err(invalid(
                &key("block_count"),
                "a model needs at least one layer".into(),
            ));
        }
        // Each layer has tensors of its own: a count beyond the file's tensors is refused
        // before anything is sized by it (2^32 layers aborted the process on an allocation).
        let tensors = gguf.content().tensor_infos.len();
        if num_layers > tensors {
            return Err(invalid(
                &key("block_count"),
                format!("{num_layers} layers, but the file has only {tensors} tensors"),
            ));
        }
        let context_length = gguf.require_usize(&key("context_length"))?;
        if context_length == 0 {
            return Err(invalid(&key("context_length"), "must be positive".into()));
        }
        let rope_theta = gguf.get_f64(&key("rope.freq_base"))?.unwrap_or(10_000.0);
        if rope_theta <= 1.0 {
            return Err(invalid(
                &key("rope.freq_base"),
                format!("{rope_theta} must be > 1"),
            ));
        }
        let rms_norm_eps = gguf
            .get_f64(&key("attention.layer_norm_rms_epsilon"))?
            .ok_or_else(|| crate::gguf::missing(&key("attention.layer_norm_rms_epsilon")))?;
        if rms_norm_eps <= 0.0 {
            return Err(invalid(
                &key("attention.layer_norm_rms_epsilon"),
                format!("{rms_norm_eps} must be positive"),
            ));
        }
        let intermediate_size = gguf.require_usize(&key("feed_forward_length"))?;
        let vocab_size = match gguf.get_usize(&key("vocab_size"))? {
            Some(v) => v,
            None => gguf.tensor_info("token_embd.weight")?.1[0],
        };
        let rope_scaling = rope_scaling_from_gguf(gguf, arch_name, context_length)?;
        let nope_layers = match architecture {
            Architecture::SmolLm3 => (0..num_layers)
                .filter(|i| (i + 1) % SMOLLM3_NOPE_INTERVAL == 0)
                .collect(),
            Architecture::Llama => Vec::new(),
        };
        let config = Self {
            architecture,
            vocab_size,
            hidden_size,
            intermediate_size,
            num_layers,
            num_heads,
            num_kv_heads,
            head_dim,
            context_length,
            rope_theta,
            rms_norm_eps,
            rope_scaling,
            nope_layers,
            tied_embeddings: !gguf.has_tensor("output.weight"),
        };
        if let Some(s) = &config.rope_scaling {
            s.validate()?;
        }
        Ok(config)
    }

    /// The longest context this configuration supports: the trained context, or the
    /// YaRN/linear-extended one when rope scaling is on.
    pub fn max_context(&self) -> usize {
        match self.rope_scaling {
            Some(RopeScaling::Yarn {
                factor,
                original_context_length,
                ..
            }) => self
                .context_length
                .max((original_context_length as f64 * factor).floor() as usize),
            Some(RopeScaling::Linear { factor }) => self
                .context_length
                .max((self.context_length as f64 * factor).floor() as usize),
            None => self.context_length,
        }
    }

    /// Replaces the rope scaling read from the file (a load option such as
    /// `--rope-scaling yarn`).
    pub fn set_rope_scaling(&mut self, scaling: Option<RopeScaling>) -> Result<()> {
        if let Some(s) = &scaling {
            s.validate()?;
        }
        self.rope_scaling = scaling;
        Ok(())
    }

    pub fn uses_rope(&self, layer: usize) -> bool {
        !self.nope_layers.contains(&layer)
    }

    /// Query heads that share one KV head.
    pub fn gqa_group(&self) -> usize {
        self.num_heads / self.num_kv_heads
    }
}

fn rope_scaling_from_gguf(
    gguf: &GgufFile,
    arch: &str,
    context_length: usize,
) -> Result<Option<RopeScaling>> {
    let type_key = format!("{arch}.rope.scaling.type");
    let factor_key = format!("{arch}.rope.scaling.factor");
    let kind = gguf.get_string(&type_key)?;
    let factor = gguf.get_f64(&factor_key)?;
    match kind {
        None | Some("none") => Ok(None),
        Some("yarn") => {
            let factor = factor.ok_or_else(|| crate::gguf::missing(&factor_key))?;
            let orig = gguf
                .get_usize(&format!("{arch}.rope.scaling.original_context_length"))?
                .unwrap_or(context_length);
            let beta_fast = gguf
                .get_f64(&format!("{arch}.rope.scaling.yarn_beta_fast"))?
                .unwrap_or(32.0);
            let beta_slow = gguf
                .get_f64(&format!("{arch}.rope.scaling.yarn_beta_slow"))?
                .unwrap_or(1.0);
            Ok(Some(RopeScaling::Yarn {
                factor,
                original_context_length: orig,
                beta_fast,
                beta_slow,
                // llama.cpp's `rope.scaling.attn_factor` is a multiplier on top of YaRN's own
                // scale, not HF's replacement for it, so the HF default applies here.
                attention_factor: None,
            }))
        }
        Some("linear") => {
            let factor = factor.ok_or_else(|| crate::gguf::missing(&factor_key))?;
            Ok(Some(RopeScaling::Linear { factor }))
        }
        Some(other) => Err(invalid(
            &type_key,
            format!("rope scaling {other:?} is not supported (supported: none, linear, yarn)"),
        )),
    }
}
