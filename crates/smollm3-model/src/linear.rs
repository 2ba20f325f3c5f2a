//! Quantized linear layers that compute straight from the GGUF's own blocks.
//!
//! candle's `QMatMul` repacks Q4_K/Q6_K/Q8_0 weights into wider x86 tiles on first use and keeps
//! the tiles beside the originals: on a 3B Q4_K_M model that is ~1.9 GB of extra memory, and on
//! AVX2 machines the tiles (3072 bytes per 16 rows x 256 values against 2304 for Q4_K) make the
//! memory-bound decode step read 33% more bytes. `QLinear` instead runs on the original blocks,
//! read in place from the memory-mapped file (weights exist once, in the page cache; loading
//! copies nothing; decode reads exactly the file's bytes), with the kernels of
//! [`crate::kernels`]: Q4_K/Q6_K prompt tiles and AVX2/AVX-512 decode row products, Q4_1, and
//! candle's own dot products for everything else, all on our thread pool.

use candle_core::quantized::ggml_file::qtensor_from_ggml;
use candle_core::quantized::k_quants::{
    BlockQ2K, BlockQ3K, BlockQ4K, BlockQ4_0, BlockQ4_1, BlockQ5K, BlockQ5_0, BlockQ5_1, BlockQ6K,
    BlockQ8_0, GgmlType,
};
use candle_core::quantized::GgmlDType;
use candle_core::{DType, Device, Tensor};

use crate::error::{ModelError, Result};
use crate::gguf::TensorBytes;
use crate::kernels::{kquant, kquant_rows};

/// Runs `$body` with `$T` bound to the block type of `$dtype` (every GGUF quantization that
/// can hold weights), or returns an error naming the unsupported type.
macro_rules! with_block_type {
    ($dtype:expr, $T:ident => $body:expr, $role:literal) => {
        match $dtype {
            GgmlDType::Q4K => {
                type $T = BlockQ4K;
                $body
            }
            GgmlDType::Q6K => {
                type $T = BlockQ6K;
                $body
            }
            GgmlDType::Q8_0 => {
                type $T = BlockQ8_0;
                $body
            }
            GgmlDType::Q5K => {
                type $T = BlockQ5K;
                $body
            }
            GgmlDType::Q4_0 => {
                type $T = BlockQ4_0;
                $body
            }
            GgmlDType::Q4_1 => {
                type $T = BlockQ4_1;
                $body
            }
            GgmlDType::Q5_0 => {
                type $T = BlockQ5_0;
                $body
            }
            GgmlDType::Q5_1 => {
                type $T = BlockQ5_1;
                $body
            }
            GgmlDType::Q3K => {
                type $T = BlockQ3K;
                $body
            }
            GgmlDType::Q2K => {
                type $T = BlockQ2K;
                $body
            }
            other => {
                return Err(candle_core::Error::Msg(format!(
                    "{other:?} tensors cannot be used in {}",
                    $role
                ))
                .into())
            }
        }
    };
}

/// Whether `with_block_type!` has kernels for `dtype` (the float types are handled apart).
fn has_block_kernels(dtype: GgmlDType) -> bool {
    use GgmlDType as D;
    matches!(
        dtype,
        D::Q4K
            | D::Q6K
            | D::Q8_0
            | D::Q5K
            | D::Q4_0
            | D::Q4_1
            | D::Q5_0
            | D::Q5_1
            | D::Q3K
            | D::Q2K
    )
}

/// At load: the tensor `name` of type `dtype` can be used as `role` (a float type, or a block
/// type with kernels), else an error naming the tensor, so a file with an exotic type fails
/// when it is opened rather than at the first forward pass.
pub(crate) fn check_usable(name: &str, dtype: GgmlDType, role: &'static str) -> Result<()> {
    let float = matches!(dtype, GgmlDType::F32 | GgmlDType::F16 | GgmlDType::BF16);
    if float || has_block_kernels(dtype) {
        return Ok(());
    }
    Err(ModelError::UnsupportedTensorType {
        name: name.to_string(),
        dtype: format!("{dtype:?}"),
        role,
    })
}

/// From this many activation rows on, Q4_K and Q6_K matmuls use our unpack-once kernel
/// ([`kquant`]) where the row products ([`ROW_PRODUCT_MAX_ROWS`]) do not take them (the
/// portable path has no row products); below it candle's fused single-row kernel, which reads
/// each weight byte once and unpacks it in registers, is the faster.
const KQUANT_MIN_ROWS: usize = 4;

/// Up to this many activation rows, Q4_K and Q6_K matmuls use the row products
/// ([`kquant_rows`]: each weight read and unpacked in registers once for all the rows), from
/// it on the unpack-once prompt kernel, whose unpacking to memory costs about a third of a
/// second per forward pass on the 3B file, whatever the rows. Forward passes of `m` tokens
/// (Zen 4, 2 threads, `bench-child --prompt m`; a decode step is 62-66 ms): row products
/// 88 / 141 / 231 / 334 / 500 / 544 / 661 ms at 2 / 4 / 8 / 12 / 16 / 20 / 24 rows, the
/// prompt kernel (and candle's below 4) 144 / 372 / 398 / 378 / 564 / 565 / 568 ms. This is
/// what makes a few tokens at once (a batch of sequences, a draft to verify, a short chat
/// turn) cost little more than one.
const ROW_PRODUCT_MAX_ROWS: usize = 16;

/// `y = x W^T` with `W` `[out_features, in_features]` kept in its stored type.
pub(crate) enum QLinear {
    Quantized {
        weight: TensorBytes,
        dtype: GgmlDType,
        out_features: usize,
        in_features: usize,
    },
    /// F32 / F16 / BF16 weights, held as an f32 `[out, in]` tensor.
    Dense(Tensor),
}

impl QLinear {
    /// A layer over `weight`, a `[out_features, in_features]` tensor of type `dtype`.
    pub(crate) fn new(
        weight: TensorBytes,
        dtype: GgmlDType,
        shape: (usize, usize),
    ) -> Result<Self> {
        let (out_features, in_features) = shape;
        Ok(match dtype {
            GgmlDType::F32 | GgmlDType::F16 | GgmlDType::BF16 => {
                Self::Dense(dense(&weight, dtype, &[out_features, in_features])?)
            }
            _ => Self::Quantized {
                weight,
                dtype,
                out_features,
                in_features,
            },
        })
    }

    /// `[layer.forward(x) for layer in layers]`, with one activation quantization and one pool
    /// job for all of them when `x` has at most [`ROW_PRODUCT_MAX_ROWS`] rows and every layer
    /// has a row product on this path ([`kquant_rows::gemv_shared`]; the same bits as one by
    /// one).
    pub(crate) fn forward_shared<const N: usize>(
        layers: [&QLinear; N],
        x: &Tensor,
    ) -> Result<[Tensor; N]> {
        if let Some(outputs) = Self::try_gemv_shared(&layers, x)? {
            return Ok(outputs);
        }
        let mut outputs = Vec::with_capacity(N);
        for layer in layers {
            outputs.push(layer.forward(x)?);
        }
        Ok(outputs
            .try_into()
            .unwrap_or_else(|_| unreachable!("one output per layer")))
    }

    fn try_gemv_shared<const N: usize>(
        layers: &[&QLinear; N],
        x: &Tensor,
    ) -> Result<Option<[Tensor; N]>> {
        let (m, k) = x.dims2()?;
        if m == 0 || m > ROW_PRODUCT_MAX_ROWS || !k.is_multiple_of(kquant::QK_K) {
            return Ok(None);
        }
        let mut mats = Vec::with_capacity(N);
        let mut dsts: Vec<Vec<f32>> = Vec::with_capacity(N);
        for layer in layers {
            let Self::Quantized {
                weight,
                dtype,
                out_features,
                in_features,
            } = layer
            else {
                return Ok(None);
            };
            if *in_features != k {
                return Ok(None);
            }
            let count = out_features * k / kquant::QK_K;
            let bytes = weight.bytes();
            mats.push(match dtype {
                GgmlDType::Q4K => kquant_rows::Rows::Q4K(blocks(bytes, count, *dtype)?),
                GgmlDType::Q6K => kquant_rows::Rows::Q6K(blocks(bytes, count, *dtype)?),
                _ => return Ok(None),
            });
            dsts.push(vec![0f32; m * *out_features]);
        }
        let mut views: Vec<&mut [f32]> = dsts.iter_mut().map(|d| d.as_mut_slice()).collect();
        match with_f32_values(x, |lhs| kquant_rows::gemv_shared(k, lhs, &mats, &mut views))? {
            None => return Ok(None),
            Some(done) => done?,
        }
        let mut outputs = Vec::with_capacity(N);
        for dst in dsts {
            let n = dst.len() / m;
            outputs.push(Tensor::from_vec(dst, (m, n), &Device::Cpu)?);
        }
        Ok(Some(
            outputs
                .try_into()
                .unwrap_or_else(|_| unreachable!("one output per layer")),
        ))
    }

    /// `x`: `[m, in_features]` -> `[m, out_features]`.
    pub(crate) fn forward(&self, x: &Tensor) -> Result<Tensor> {
        match self {
            Self::Dense(w) => Ok(x.matmul(&w.t()?)?),
            Self::Quantized {
                weight,
                dtype,
                out_features,
                in_features,
            } => {
                let (m, k) = x.dims2()?;
                if k != *in_features {
                    return Err(candle_core::Error::Msg(format!(
                        "quantized matmul: input has {k} features, weight expects {in_features}"
                    ))
                    .into());
                }
                if let Some([y]) = Self::try_gemv_shared(&[self], x)? {
                    // Decode and a few rows: our row products (candle's bits, prefetched).
                    return Ok(y);
                }
                let mkn = (m, k, *out_features);
                let dst =
                    with_f32_values(x, |lhs| matmul_values(mkn, lhs, weight.bytes(), *dtype))??;
                Ok(Tensor::from_vec(dst, (m, *out_features), &Device::Cpu)?)
            }
        }
    }
}

/// `lhs` `[m, k]` times the `n` rows of `k` quantized weights in `bytes`, by the kernel for
/// `dtype` and `m`.
fn matmul_values(
    mkn: (usize, usize, usize),
    lhs: &[f32],
    bytes: &[u8],
    dtype: GgmlDType,
) -> Result<Vec<f32>> {
    let (m, k, n) = mkn;
    if dtype == GgmlDType::Q4_1 && k % crate::kernels::q4_1::BLOCK == 0 {
        // Our own kernel: candle has only a scalar loop for Q4_1.
        let count = n * k / crate::kernels::q4_1::BLOCK;
        let weights = blocks::<crate::kernels::q4_1::BlockQ4_1>(bytes, count, dtype)?;
        let mut dst = vec![0f32; m * n];
        crate::kernels::q4_1::matmul(mkn, lhs, weights, &mut dst)?;
        return Ok(dst);
    }
    if dtype == GgmlDType::Q8_0 && k % crate::kernels::q8_0::BLOCK == 0 && m <= ROW_PRODUCT_MAX_ROWS
    {
        // Our own rows for decode, draft checks and short prompts: candle's kernel reads the
        // weights once per activation row. (Longer prompts stay on candle's: ours re-reads
        // all the activation rows for every weight row, not measured at prompt sizes.)
        let count = n * k / crate::kernels::q8_0::BLOCK;
        let weights = blocks::<crate::kernels::q8_0::BlockQ8_0>(bytes, count, dtype)?;
        let mut dst = vec![0f32; m * n];
        if let Some(done) = crate::kernels::q8_0::matmul(mkn, lhs, weights, &mut dst) {
            done?;
            return Ok(dst);
        }
    }
    if m >= KQUANT_MIN_ROWS && k % kquant::QK_K == 0 {
        // Our own prompt kernel: each super-block unpacked once, not once per row.
        let count = n * k / kquant::QK_K;
        match dtype {
            GgmlDType::Q4K => {
                return kquant_values(mkn, lhs, blocks::<kquant::BlockQ4K>(bytes, count, dtype)?)
            }
            GgmlDType::Q6K => {
                return kquant_values(mkn, lhs, blocks::<kquant::BlockQ6K>(bytes, count, dtype)?)
            }
            _ => {}
        }
    }
    let mut dst = vec![0f32; m * n];
    with_block_type!(dtype, T => run::<T>(mkn, lhs, bytes, &mut dst)?, "a matmul");
    Ok(dst)
}

/// [`matmul_values`] by our prompt kernel for k-quant blocks, into an output that is not
/// zeroed first: the kernel writes every value (`kquant::matmul_uninit`).
fn kquant_values<B: kquant::SuperBlock>(
    mkn: (usize, usize, usize),
    lhs: &[f32],
    weights: &[B],
) -> Result<Vec<f32>> {
    let (m, _, n) = mkn;
    let mut dst = Vec::with_capacity(m * n);
    kquant::matmul_uninit(mkn, lhs, weights, &mut dst.spare_capacity_mut()[..m * n])?;
    // SAFETY: `matmul_uninit` returned Ok, so it wrote all `m × n` values.
    unsafe { dst.set_len(m * n) };
    Ok(dst)
}

/// `f` on a tensor's f32 values, read in place where they are contiguous (a prompt's
/// activations: 22.5 MB for the FFN's down projection at 512 tokens, which a copy moved on one
/// thread before every matmul), from a copy otherwise.
pub(crate) fn with_f32_values<R>(t: &Tensor, f: impl FnOnce(&[f32]) -> R) -> Result<R> {
    use candle_core::{CpuStorage, Storage};
    {
        let (storage, layout) = t.storage_and_layout();
        if let (Storage::Cpu(CpuStorage::F32(values)), Some((start, end))) =
            (&*storage, layout.contiguous_offsets())
        {
            return Ok(f(&values[start..end]));
        }
    }
    Ok(f(&t.flatten_all()?.to_vec1::<f32>()?))
}

fn run<T: GgmlType>(
    mkn: (usize, usize, usize),
    lhs: &[f32],
    bytes: &[u8],
    dst: &mut [f32],
) -> Result<()> {
    let (_, k, n) = mkn;
    let blocks = blocks::<T>(bytes, n * k / T::BLCK_SIZE, T::DTYPE)?;
    crate::kernels::ggml::matmul(mkn, lhs, blocks, dst)
}

/// Views a QTensor's bytes as its blocks. The bytes come from candle's own `Vec<T>` storage, so
/// size and alignment hold; both are checked anyway rather than trusted.
fn blocks<T>(bytes: &[u8], count: usize, dtype: GgmlDType) -> Result<&[T]> {
    let size = std::mem::size_of::<T>();
    if bytes.len() != count * size
        || !(bytes.as_ptr() as usize).is_multiple_of(std::mem::align_of::<T>())
    {
        return Err(candle_core::Error::Msg(format!(
            "quantized weight storage of {} bytes does not hold {count} {dtype:?} blocks",
            bytes.len(),
        ))
        .into());
    }
    // SAFETY: length and alignment were checked above, and every block type used here
    // (candle's, `kernels::q4_1::BlockQ4_1` and `kernels::q8_0::BlockQ8_0`) is plain
    // old data (integers and f16 only), valid for any bit pattern.
    Ok(unsafe { std::slice::from_raw_parts(bytes.as_ptr() as *const T, count) })
}

/// A float tensor copied out of the file as f32 (norm weights, F32/F16/BF16 matrices).
pub(crate) fn dense(bytes: &TensorBytes, dtype: GgmlDType, shape: &[usize]) -> Result<Tensor> {
    let q = qtensor_from_ggml(dtype, bytes.bytes(), shape.to_vec(), &Device::Cpu)?;
    Ok(q.dequantize(&Device::Cpu)?.to_dtype(DType::F32)?)
}

/// A token-embedding table kept in its stored type: rows are dequantized at lookup, never the
/// whole table (a dense f32 copy of SmolLM3's 128k x 2048 table would take 1 GB).
pub(crate) enum Embedding {
    Quantized {
        table: TensorBytes,
        dtype: GgmlDType,
        hidden: usize,
    },
    Dense(Tensor),
}

impl Embedding {
    /// Rows of `ids` (all `< vocab`, checked by the caller): `[ids.len(), hidden]`.
    pub(crate) fn lookup(&self, ids: &[u32]) -> Result<Tensor> {
        match self {
            Self::Dense(t) => Ok(t.embedding(&Tensor::new(ids, &Device::Cpu)?)?),
            Self::Quantized {
                table,
                dtype,
                hidden,
            } => {
                let mut out = vec![0f32; ids.len() * hidden];
                let bytes = table.bytes();
                let h = *hidden;
                with_block_type!(*dtype, T => rows::<T>(bytes, ids, h, &mut out)?, "an embedding");
                Ok(Tensor::from_vec(out, (ids.len(), h), &Device::Cpu)?)
            }
        }
    }
}

fn rows<T: GgmlType>(bytes: &[u8], ids: &[u32], hidden: usize, out: &mut [f32]) -> Result<()> {
    let per_row = hidden / T::BLCK_SIZE;
    let all = blocks::<T>(bytes, bytes.len() / std::mem::size_of::<T>(), T::DTYPE)?;
    for (&id, dst) in ids.iter().zip(out.chunks_exact_mut(hidden)) {
        let start = id as usize * per_row;
        let row = all.get(start..start + per_row).ok_or_else(|| {
            candle_core::Error::Msg(format!("token {id} is outside the embedding table"))
        })?;
        T::to_float(row, dst);
    }
    Ok(())
}
