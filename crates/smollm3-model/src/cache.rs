//! The key/value cache of one conversation.
//!
//! Kept apart from the model so that one loaded model (immutable, shareable across threads) can
//! serve several conversations, each with its own cache. Storage grows by doubling up to the
//! context size asked for, so a 64k-token context costs memory only once it is used.
//!
//! Keys and values are stored as f16 by default ([`KvType`]), as llama.cpp does: a 3B decode
//! step at 4k positions reads 302 MB of cache instead of 604 MB (the weights are 1.9 GB), and a
//! 64k context holds in 4.8 GB instead of 9.7 GB. An f16 rounding is a relative 2⁻¹¹ on each
//! stored value; the f32 cache stays for the reference-parity tests, where the engine gives
//! candle's bits.

use std::str::FromStr;

use candle_core::{DType, Device, Tensor};

use crate::error::{ModelError, Result};
use crate::kernels::attention::KvSlices;

/// How the cache stores keys and values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum KvType {
    /// Half the memory and half the bytes a decode step reads (llama.cpp's default too).
    #[default]
    F16,
    /// Exact: the forward pass gives candle's bits (the reference-parity tests use it).
    F32,
}

impl KvType {
    /// `f16` or `f32`, as the flags spell it.
    pub fn name(self) -> &'static str {
        match self {
            KvType::F16 => "f16",
            KvType::F32 => "f32",
        }
    }

    /// Bytes per stored value.
    pub fn bytes(self) -> usize {
        match self {
            KvType::F16 => 2,
            KvType::F32 => 4,
        }
    }

    fn dtype(self) -> DType {
        match self {
            KvType::F16 => DType::F16,
            KvType::F32 => DType::F32,
        }
    }
}

impl FromStr for KvType {
    type Err = ModelError;

    fn from_str(s: &str) -> Result<Self> {
        match s.to_ascii_lowercase().as_str() {
            "f16" => Ok(KvType::F16),
            "f32" => Ok(KvType::F32),
            _ => Err(ModelError::InvalidOption(format!(
                "unknown KV cache type {s:?} (expected f16 or f32)"
            ))),
        }
    }
}

impl std::fmt::Display for KvType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// Keys (after RoPE) and values of every layer for the tokens seen so far.
///
/// Not `Clone`: the storage is written in place, so a shallow copy would alias it.
#[derive(Debug)]
pub struct KvCache {
    layers: Vec<LayerCache>,
    len: usize,
    max_len: usize,
    num_kv_heads: usize,
    head_dim: usize,
    kv_type: KvType,
}

#[derive(Debug)]
struct LayerCache {
    /// `[num_kv_heads, capacity, head_dim]`, rows `0..len` valid.
    k: Tensor,
    v: Tensor,
}

const INITIAL_CAPACITY: usize = 256;

impl KvCache {
    pub(crate) fn new(
        num_layers: usize,
        num_kv_heads: usize,
        head_dim: usize,
        max_len: usize,
        kv_type: KvType,
    ) -> Result<Self> {
        let capacity = INITIAL_CAPACITY.min(max_len);
        let layers = (0..num_layers)
            .map(|_| LayerCache::zeros(num_kv_heads, capacity, head_dim, kv_type))
            .collect::<Result<_>>()?;
        Ok(Self {
            layers,
            len: 0,
            max_len,
            num_kv_heads,
            head_dim,
            kv_type,
        })
    }

    /// How keys and values are stored.
    pub fn kv_type(&self) -> KvType {
        self.kv_type
    }

    /// Tokens currently cached.
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The context size this cache was created for: the most tokens it can ever hold.
    pub fn max_len(&self) -> usize {
        self.max_len
    }

    /// Tokens that can still be added.
    pub fn remaining(&self) -> usize {
        self.max_len - self.len
    }

    /// Forgets every cached token (memory is kept for reuse).
    pub fn reset(&mut self) {
        self.len = 0;
    }

    /// Keeps only the first `len` tokens, so that a conversation can continue from a shared
    /// prefix without recomputing it.
    pub fn truncate(&mut self, len: usize) -> Result<()> {
        if len > self.len {
            return Err(ModelError::TruncateBeyondEnd {
                requested: len,
                len: self.len,
            });
        }
        self.len = len;
        Ok(())
    }

    /// Bytes currently allocated for keys and values.
    pub fn allocated_bytes(&self) -> usize {
        self.layers
            .iter()
            .map(|l| 2 * l.k.elem_count() * l.k.dtype().size_in_bytes())
            .sum()
    }

    pub(crate) fn check_room(&self, new_tokens: usize) -> Result<()> {
        if new_tokens > self.remaining() {
            return Err(ModelError::ContextOverflow {
                needed: new_tokens,
                used: self.len,
                capacity: self.max_len,
            });
        }
        Ok(())
    }

    /// Makes room for `new_tokens` more tokens in every layer.
    pub(crate) fn reserve(&mut self, new_tokens: usize) -> Result<()> {
        self.check_room(new_tokens)?;
        let needed = self.len + new_tokens;
        let capacity = self.layers.first().map_or(0, |l| l.capacity());
        if needed <= capacity {
            return Ok(());
        }
        let mut new_capacity = capacity.max(1);
        while new_capacity < needed {
            new_capacity *= 2;
        }
        let new_capacity = new_capacity.min(self.max_len);
        for layer in &mut self.layers {
            let shape = (self.num_kv_heads, new_capacity, self.head_dim);
            layer.grow(self.len, shape, self.kv_type)?;
        }
        Ok(())
    }

    /// Writes `k`, `v` (f32, `[num_kv_heads, seq, head_dim]`) for positions `len..len + seq` of
    /// `layer`, rounded to the cache's type, and returns the positions cached in that layer,
    /// the new ones included. The cache length advances in [`KvCache::advance`], once every
    /// layer is done.
    pub(crate) fn append(&mut self, layer: usize, k: &Tensor, v: &Tensor) -> Result<usize> {
        let seq = k.dim(1)?;
        let dtype = self.kv_type.dtype();
        let l = &mut self.layers[layer];
        l.k.slice_set(&k.to_dtype(dtype)?, 1, self.len)?;
        l.v.slice_set(&v.to_dtype(dtype)?, 1, self.len)?;
        Ok(self.len + seq)
    }

    /// The first `positions` keys and values of `layer` as f32 (`[num_kv_heads, positions,
    /// head_dim]`): views of an f32 cache, widened copies of an f16 one. Prompts read them,
    /// the new positions' included, so that a prompt sees the same rounded values as the
    /// tokens decoded after it.
    pub(crate) fn keys_values(&self, layer: usize, positions: usize) -> Result<(Tensor, Tensor)> {
        let l = &self.layers[layer];
        let (k, v) = (l.k.narrow(1, 0, positions)?, l.v.narrow(1, 0, positions)?);
        Ok((k.to_dtype(DType::F32)?, v.to_dtype(DType::F32)?))
    }

    /// Runs `f` on `layer`'s key and value storage as flat slices (`[num_kv_heads, capacity,
    /// head_dim]` each) and the capacity.
    pub(crate) fn with_layer<R>(
        &self,
        layer: usize,
        f: impl FnOnce(KvSlices, usize) -> R,
    ) -> Result<R> {
        use candle_core::{CpuStorage, Storage};
        let l = &self.layers[layer];
        let (k, k_layout) = l.k.storage_and_layout();
        let (v, v_layout) = l.v.storage_and_layout();
        if !k_layout.is_contiguous() || !v_layout.is_contiguous() {
            return Err(candle_core::Error::Msg("the KV cache is not contiguous".into()).into());
        }
        let (k0, v0) = (k_layout.start_offset(), v_layout.start_offset());
        let slices = match (&*k, &*v) {
            (Storage::Cpu(CpuStorage::F32(k)), Storage::Cpu(CpuStorage::F32(v))) => KvSlices::F32 {
                k: &k[k0..],
                v: &v[v0..],
            },
            (Storage::Cpu(CpuStorage::F16(k)), Storage::Cpu(CpuStorage::F16(v))) => KvSlices::F16 {
                k: &k[k0..],
                v: &v[v0..],
            },
            _ => {
                return Err(candle_core::Error::Msg(
                    "the KV cache is not f32 or f16 CPU storage".into(),
                )
                .into())
            }
        };
        Ok(f(slices, l.capacity()))
    }

    pub(crate) fn advance(&mut self, seq: usize) {
        self.len += seq;
    }
}

impl LayerCache {
    fn zeros(num_kv_heads: usize, capacity: usize, head_dim: usize, kv: KvType) -> Result<Self> {
        let shape = (num_kv_heads, capacity, head_dim);
        Ok(Self {
            k: Tensor::zeros(shape, kv.dtype(), &Device::Cpu)?,
            v: Tensor::zeros(shape, kv.dtype(), &Device::Cpu)?,
        })
    }

    fn capacity(&self) -> usize {
        self.k.dims()[1]
    }

    fn grow(
        &mut self,
        len: usize,
        (heads, capacity, hd): (usize, usize, usize),
        kv: KvType,
    ) -> Result<()> {
        let new = Self::zeros(heads, capacity, hd, kv)?;
        if len > 0 {
            new.k
                .slice_set(&self.k.narrow(1, 0, len)?.contiguous()?, 1, 0)?;
            new.v
                .slice_set(&self.v.narrow(1, 0, len)?.contiguous()?, 1, 0)?;
        }
        *self = new;
        Ok(())
    }
}
