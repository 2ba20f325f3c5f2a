//! Rotary position embedding tables: plain RoPE, linear scaling and YaRN, computed in f64 and
//! stored as f32 so that long positions keep their precision.

use candle_core::{Device, Tensor};

use crate::config::{Config, RopeScaling};
use crate::error::Result;

/// Inverse frequencies and the factor that multiplies cos and sin.
#[derive(Debug, Clone)]
pub struct RopeTables {
    inv_freq: Vec<f64>,
    attention_factor: f64,
}

impl RopeTables {
    pub fn new(config: &Config) -> Self {
        let dim = config.head_dim;
        let base = config.rope_theta;
        let half = dim / 2;
        let pos_freqs: Vec<f64> = (0..half)
            .map(|i| base.powf((2 * i) as f64 / dim as f64))
            .collect();
        match config.rope_scaling {
            None => Self {
                inv_freq: pos_freqs.iter().map(|p| 1.0 / p).collect(),
                attention_factor: 1.0,
            },
            Some(RopeScaling::Linear { factor }) => Self {
                inv_freq: pos_freqs.iter().map(|p| 1.0 / (p * factor)).collect(),
                attention_factor: 1.0,
            },
            Some(RopeScaling::Yarn {
                factor,
                original_context_length,
                beta_fast,
                beta_slow,
                attention_factor,
            }) => {
                // HF transformers `_compute_yarn_parameters` (truncate = true).
                let orig = original_context_length as f64;
                let correction_dim = |n_rot: f64| {
                    dim as f64 * (orig / (n_rot * 2.0 * std::f64::consts::PI)).ln()
                        / (2.0 * base.ln())
                };
                let low = correction_dim(beta_fast).floor().max(0.0);
                let mut high = correction_dim(beta_slow).ceil().min(dim as f64 - 1.0);
                if low == high {
                    high += 0.001;
                }
                let inv_freq = pos_freqs
                    .iter()
                    .enumerate()
                    .map(|(i, p)| {
                        let extrapolation = 1.0 / p;
                        let interpolation = 1.0 / (factor * p);
                        let ramp = ((i as f64 - low) / (high - low)).clamp(0.0, 1.0);
                        let extrapolation_weight = 1.0 - ramp;
                        interpolation * (1.0 - extrapolation_weight)
                            + extrapolation * extrapolation_weight
                    })
                    .collect();
                let mscale = |s: f64| if s <= 1.0 { 1.0 } else { 0.1 * s.ln() + 1.0 };
                Self {
                    inv_freq,
                    attention_factor: attention_factor.unwrap_or_else(|| mscale(factor)),
                }
            }
        }
    }

    pub fn attention_factor(&self) -> f64 {
        self.attention_factor
    }

    pub fn inv_freq(&self) -> &[f64] {
        &self.inv_freq
    }

    /// cos and sin for positions `start..start + len`, each `[len, head_dim / 2]`.
    pub fn cos_sin(&self, start: usize, len: usize, device: &Device) -> Result<(Tensor, Tensor)> {
        let half = self.inv_freq.len();
        let mut cos = Vec::with_capacity(len * half);
        let mut sin = Vec::with_capacity(len * half);
        for pos in start..start + len {
            for f in &self.inv_freq {
                let angle = pos as f64 * f;
                cos.push((angle.cos() * self.attention_factor) as f32);
                sin.push((angle.sin() * self.attention_factor) as f32);
            }
        }
        Ok((
            Tensor::from_vec(cos, (len, half), device)?,
            Tensor::from_vec(sin, (len, half), device)?,
        ))
    }
}
