//! # smollm3-model
//!
//! Runs SmolLM3 (and Llama-architecture, e.g. SmolLM2) models from a single GGUF file on the
//! CPU, with its own forward pass over candle's quantized matmuls: SmolLM3's NoPE layers,
//! grouped-query attention without copying K/V, YaRN context extension and a KV cache that can
//! be truncated to reuse a shared prefix.
//!
//! ```no_run
//! use smollm3_model::Model;
//!
//! # fn main() -> Result<(), smollm3_model::ModelError> {
//! let model = Model::load("SmolLM3-3B-Q4_K_M.gguf")?;
//! let mut cache = model.new_cache(4096)?;
//! // Prefill a prompt in one forward pass, then decode greedily one token at a time.
//! let mut logits = model.forward_last(&[128011, 882, 198], &mut cache)?;
//! for _ in 0..8 {
//!     let next = logits.argmax(0)?.to_scalar::<u32>()?;
//!     logits = model.forward_last(&[next], &mut cache)?;
//! }
//! # Ok(())
//! # }
//! ```
//!
//! The crate never prints and never panics on bad input: every failure is a [`ModelError`]
//! naming the file, key, tensor or token at fault.

mod cache;
mod config;
mod error;
mod gguf;
mod model;
mod rope;

pub use cache::KvCache;
pub use config::{
    Architecture, Config, RopeScaling, SMOLLM3_NOPE_INTERVAL, SUPPORTED_ARCHITECTURES,
};
pub use error::{ModelError, Result};
pub use gguf::{GgufFile, MetadataValue};
pub use model::{LoadOptions, Model, WeightSummary};
pub use rope::RopeTables;

/// Re-exported so callers can handle tensors without depending on candle directly.
pub use candle_core::Tensor;
