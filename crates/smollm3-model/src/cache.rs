//! The key/value cache of one conversation.
//!
//! Kept apart from the model so that one loaded model (immutable, shareable across threads) can
//! serve several conversations, each with its own cache. Storage grows by doubling up to the
//! context size asked for, so a 64k-token context costs memory only once it is used.

use candle_core::{DType, Device, Tensor};

use crate::error::{ModelError, Result};

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
    ) -> Result<Self> {
        let capacity = INITIAL_CAPACITY.min(max_len);
        let layers = (0..num_layers)
            .map(|_| LayerCache::zeros(num_kv_heads, capacity, head_dim))
            .collect::<Result<_>>()?;
        Ok(Self {
            layers,
            len: 0,
            max_len,
            num_kv_heads,
            head_dim,
        })
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
            layer.grow(self.len, new_capacity, self.num_kv_heads, self.head_dim)?;
        }
        Ok(())
    }

    /// Writes `k`, `v` (`[num_kv_heads, seq, head_dim]`) for positions `len..len + seq` of
    /// `layer` and returns views of all keys and values so far (`[num_kv_heads, len + seq,
    /// head_dim]`). The cache length advances in [`KvCache::advance`], once every layer is done.
    pub(crate) fn append(
        &mut self,
        layer: usize,
        k: &Tensor,
        v: &Tensor,
    ) -> Result<(Tensor, Tensor)> {
        let seq = k.dim(1)?;
        let l = &mut self.layers[layer];
        l.k.slice_set(k, 1, self.len)?;
        l.v.slice_set(v, 1, self.len)?;
        let total = self.len + seq;
        Ok((l.k.narrow(1, 0, total)?, l.v.narrow(1, 0, total)?))
    }

    /// Runs `f` on `layer`'s key and value storage as flat slices (`[num_kv_heads, capacity,
    /// head_dim]` each) and the capacity.
    pub(crate) fn with_layer<R>(
        &self,
        layer: usize,
        f: impl FnOnce(&[f32], &[f32], usize) -> R,
    ) -> Result<R> {
        use candle_core::{CpuStorage, Storage};
        let l = &self.layers[layer];
        let (k, k_layout) = l.k.storage_and_layout();
        let (v, v_layout) = l.v.storage_and_layout();
        match (&*k, &*v) {
            (Storage::Cpu(CpuStorage::F32(k)), Storage::Cpu(CpuStorage::F32(v)))
                if k_layout.is_contiguous() && v_layout.is_contiguous() =>
            {
                let (k0, v0) = (k_layout.start_offset(), v_layout.start_offset());
                Ok(f(&k[k0..], &v[v0..], l.capacity()))
            }
            _ => Err(candle_core::Error::Msg(
                "the KV cache is not contiguous f32 CPU storage".to_string(),
            )
            .into()),
        }
    }

    pub(crate) fn advance(&mut self, seq: usize) {
        self.len += seq;
    }
}

impl LayerCache {
    fn zeros(num_kv_heads: usize, capacity: usize, head_dim: usize) -> Result<Self> {
        let shape = (num_kv_heads, capacity, head_dim);
        Ok(Self {
            k: Tensor::zeros(shape, DType::F32, &Device::Cpu)?,
            v: Tensor::zeros(shape, DType::F32, &Device::Cpu)?,
        })
    }

    fn capacity(&self) -> usize {
        self.k.dims()[1]
    }

    fn grow(&mut self, len: usize, capacity: usize, kv: usize, hd: usize) -> Result<()> {
        let new = Self::zeros(kv, capacity, hd)?;
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
