//! # smollm3-model
//!
//! Runs SmolLM3 (and Llama-architecture, e.g. SmolLM2) models from a single GGUF file on the
//! CPU, with its own forward pass over candle's quantized matmuls: SmolLM3's NoPE layers,
//! grouped-query attention without copying K/V, YaRN context extension and a KV cache that can
//! be truncated to reuse a shared prefix, stored as f16 by default ([`KvType`]; f32 for exact
//! results).
//!
//! ```
//! use smollm3_model::Model;
//!
//! # fn main() -> Result<(), smollm3_model::ModelError> {
//! # let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../fixtures/gguf/smollm3-tiny-q8_0.gguf");
//! // e.g. "SmolLM3-3B-Q4_K_M.gguf"; this example runs on a test fixture.
//! let model = Model::load(path)?;
//! let mut cache = model.new_cache(256)?;
//! // Prefill the prompt in one forward pass, then decode greedily one token at a time.
//! let mut logits = model.forward_last(&[2011, 882, 198], &mut cache)?;
//! let mut generated = Vec::new();
//! for _ in 0..8 {
//!     let next = logits.argmax(0)?.to_scalar::<u32>()?;
//!     generated.push(next);
//!     logits = model.forward_last(&[next], &mut cache)?;
//! }
//! assert_eq!(cache.len(), 3 + 8);
//!
//! // Start a new turn from the cached 3-token prompt without recomputing it.
//! cache.truncate(3)?;
//! let _ = model.forward_last(&[42], &mut cache)?;
//! # Ok(())
//! # }
//! ```
//!
//! Several tokens in one pass, each weight read once for all of them:
//! [`Model::forward_batch`] (several sequences, each with its own cache: batched decoding)
//! and [`Model::forward_verify`] (a token and a draft of the next ones: speculative
//! decoding); either gives each position the logits it gets alone, bit for bit.
//!
//! [`kernels`] holds the hot path's own code, chosen at run time for the CPU (AVX-512, AVX2 or
//! portable): a thread pool that yields instead of spinning, Q4_K/Q6_K prompt and decode
//! kernels, Q4_1 (prompt panels and rows), prompt and decode attention, the FFN's
//! `silu × up`; with the f32 cache
//! each returns candle's bits, so the
//! reference-parity tests hold on every path (the f16 cache is checked against llama.cpp's).
//!
//! [`allocator::keep_freed_tensor_memory`] is for binaries: it keeps the per-op tensor memory
//! of a prompt's forward pass in the process (8% of a 3B prefill was page faults without it).
//! So is [`candle_pool::shorten_idle_spin`]: candle's idle worker spins far shorter, leaving
//! the core to our pool (SmolLM2's prefill went 1.4× faster).
//!
//! The crate never prints and never panics on bad input: every failure is a [`ModelError`]
//! naming the file, key, tensor or token at fault.

pub mod allocator;
mod cache;
pub mod candle_pool;
mod config;
mod error;
mod gguf;
mod gguf_alignment;
pub mod kernels;
mod linear;
mod model;
mod rope;

pub use cache::{KvCache, KvType};
pub use config::{
    Architecture, Config, RopeScaling, SMOLLM3_NOPE_INTERVAL, SUPPORTED_ARCHITECTURES,
};
pub use error::{ModelError, Result};
pub use gguf::{FileIdentity, GgufFile, MetadataValue, WeightSummary};
pub use model::{BatchItem, LoadOptions, Model, DEFAULT_PROMPT_SLICE};
pub use rope::RopeTables;

/// Re-exported so callers can handle tensors without depending on candle directly.
pub use candle_core::Tensor;
