//! Test support: tiny SmolLM3-shaped GGUF files written by the tests themselves, so that bad
//! inputs (missing tensors, wrong shapes, odd architectures) can be made on the spot.
#![allow(dead_code)]

use std::path::{Path, PathBuf};

use candle_core::quantized::gguf_file::{self, Value};
use candle_core::quantized::{GgmlDType, QTensor};
use candle_core::{Device, Tensor};

pub struct TinySpec {
    pub arch: String,
    pub vocab: usize,
    pub hidden: usize,
    pub ffn: usize,
    pub layers: usize,
    pub heads: usize,
    pub kv_heads: usize,
    pub ctx: usize,
    pub dtype: GgmlDType,
    pub tied: bool,
    /// Tensor names to leave out.
    pub omit: Vec<String>,
    /// Tensor name -> shape to write instead of the right one.
    pub reshape: Vec<(String, Vec<usize>)>,
    /// Extra or replaced metadata.
    pub metadata: Vec<(String, Value)>,
    pub seed: u64,
}

impl Default for TinySpec {
    fn default() -> Self {
        Self {
            arch: "smollm3".into(),
            vocab: 96,
            hidden: 64,
            ffn: 128,
            layers: 4,
            heads: 4,
            kv_heads: 2,
            ctx: 128,
            dtype: GgmlDType::F32,
            tied: true,
            omit: vec![],
            reshape: vec![],
            metadata: vec![],
            seed: 7,
        }
    }
}

struct Lcg(u64);
impl Lcg {
    fn next(&mut self) -> f32 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        ((self.0 >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
    }
}

impl TinySpec {
    fn tensors(&self) -> Vec<(String, Vec<usize>, bool)> {
        let (h, f, hd) = (self.hidden, self.ffn, self.hidden / self.heads);
        let mut t = vec![
            ("token_embd.weight".to_string(), vec![self.vocab, h], false),
            ("output_norm.weight".to_string(), vec![h], true),
        ];
        if !self.tied {
            t.push(("output.weight".to_string(), vec![self.vocab, h], false));
        }
        for i in 0..self.layers {
            let p = |n: &str| format!("blk.{i}.{n}.weight");
            t.push((p("attn_norm"), vec![h], true));
            t.push((p("ffn_norm"), vec![h], true));
            t.push((p("attn_q"), vec![self.heads * hd, h], false));
            t.push((p("attn_k"), vec![self.kv_heads * hd, h], false));
            t.push((p("attn_v"), vec![self.kv_heads * hd, h], false));
            t.push((p("attn_output"), vec![h, self.heads * hd], false));
            t.push((p("ffn_gate"), vec![f, h], false));
            t.push((p("ffn_up"), vec![f, h], false));
            t.push((p("ffn_down"), vec![h, f], false));
        }
        t
    }

    pub fn write(&self, path: &Path) {
        let a = &self.arch;
        let mut meta: Vec<(String, Value)> = vec![
            ("general.architecture".into(), Value::String(a.clone())),
            (format!("{a}.vocab_size"), Value::U32(self.vocab as u32)),
            (format!("{a}.context_length"), Value::U32(self.ctx as u32)),
            (
                format!("{a}.embedding_length"),
                Value::U32(self.hidden as u32),
            ),
            (
                format!("{a}.feed_forward_length"),
                Value::U32(self.ffn as u32),
            ),
            (format!("{a}.block_count"), Value::U32(self.layers as u32)),
            (
                format!("{a}.attention.head_count"),
                Value::U32(self.heads as u32),
            ),
            (
                format!("{a}.attention.head_count_kv"),
                Value::U32(self.kv_heads as u32),
            ),
            (format!("{a}.rope.freq_base"), Value::F32(10000.0)),
            (
                format!("{a}.rope.dimension_count"),
                Value::U32((self.hidden / self.heads) as u32),
            ),
            (
                format!("{a}.attention.layer_norm_rms_epsilon"),
                Value::F32(1e-6),
            ),
        ];
        for (k, v) in &self.metadata {
            meta.retain(|(key, _)| key != k);
            meta.push((k.clone(), v.clone()));
        }
        let mut rng = Lcg(self.seed);
        let mut tensors = Vec::new();
        for (name, shape, is_norm) in self.tensors() {
            if self.omit.contains(&name) {
                continue;
            }
            let shape = self
                .reshape
                .iter()
                .find(|(n, _)| *n == name)
                .map(|(_, s)| s.clone())
                .unwrap_or(shape);
            let n: usize = shape.iter().product();
            let data: Vec<f32> = (0..n)
                .map(|_| {
                    if is_norm {
                        1.0 + 0.1 * rng.next()
                    } else {
                        0.15 * rng.next()
                    }
                })
                .collect();
            let t = Tensor::from_vec(data, shape.as_slice(), &Device::Cpu).unwrap();
            let dtype = if is_norm { GgmlDType::F32 } else { self.dtype };
            tensors.push((name, QTensor::quantize(&t, dtype).unwrap()));
        }
        let meta_refs: Vec<(&str, &Value)> = meta.iter().map(|(k, v)| (k.as_str(), v)).collect();
        let tensor_refs: Vec<(&str, &QTensor)> =
            tensors.iter().map(|(k, v)| (k.as_str(), v)).collect();
        let mut f = std::fs::File::create(path).unwrap();
        gguf_file::write(&mut f, &meta_refs, &tensor_refs).unwrap();
    }
}

/// A fresh directory for one call: tests run in parallel threads and may use the same name
/// (one writing a model while another reads it), so every call gets its own.
pub fn temp_dir(name: &str) -> PathBuf {
    static CALLS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let call = CALLS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let dir = std::env::temp_dir().join(format!(
        "smollm3-model-{name}-{}-{call}",
        std::process::id()
    ));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Writes `spec` into a temp dir and returns the path.
pub fn write_tiny(name: &str, spec: &TinySpec) -> PathBuf {
    let path = temp_dir(name).join("model.gguf");
    spec.write(&path);
    path
}

pub fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}
