//! End-to-end tests of the fixture generator: files are read back with candle's GGUF reader.

use std::collections::HashMap;
use std::fs::File;
use std::path::Path;

use candle_core::quantized::gguf_file::{Content, Value};
use candle_core::quantized::{GgmlDType, QTensor};
use candle_core::{Device, Tensor};
use xtask::fixtures::{
    self, generate, use_more_bits, write_atomic, FixtureSpec, QuantScheme, VocabChoice,
    SMOLLM3_CHAT_TEMPLATE,
};

fn read(path: &Path) -> (Content, File) {
    let mut f = File::open(path).unwrap();
    let c = Content::read(&mut f).unwrap();
    (c, f)
}

fn spec(name: &str) -> FixtureSpec {
    fixtures::fixture_specs()
        .into_iter()
        .find(|s| s.file_name == name)
        .unwrap()
}

fn dir_entries(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

#[test]
fn generation_is_deterministic() {
    let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    for name in ["smollm3-tiny-q4_k_m.gguf", "smollm3-tiny-gqa2-f32.gguf"] {
        let s = spec(name);
        let pa = generate(&s, a.path()).unwrap();
        let pb = generate(&s, b.path()).unwrap();
        let (ba, bb) = (std::fs::read(&pa).unwrap(), std::fs::read(&pb).unwrap());
        assert!(ba.len() > 1_000_000);
        assert!(ba == bb, "{name} differs between two runs");
    }
    // Only the final files are left behind.
    assert_eq!(
        dir_entries(a.path()),
        ["smollm3-tiny-gqa2-f32.gguf", "smollm3-tiny-q4_k_m.gguf"]
    );
    // Another seed changes the weights.
    let mut s = spec("smollm3-tiny-q4_k_m.gguf");
    s.seed += 100;
    let c = tempfile::tempdir().unwrap();
    let pc = generate(&s, c.path()).unwrap();
    assert_ne!(
        std::fs::read(pc).unwrap(),
        std::fs::read(a.path().join("smollm3-tiny-q4_k_m.gguf")).unwrap()
    );
}

fn expected_q4km(name: &str, n_layers: usize, tied: bool) -> GgmlDType {
    if name.ends_with("_norm.weight") {
        return GgmlDType::F32;
    }
    if name == "output.weight" || (tied && name == "token_embd.weight") {
        return GgmlDType::Q6K;
    }
    if let Some(rest) = name.strip_prefix("blk.") {
        let (layer, tensor) = rest.split_once('.').unwrap();
        let layer: usize = layer.parse().unwrap();
        if (tensor == "attn_v.weight" || tensor == "ffn_down.weight")
            && use_more_bits(layer, n_layers)
        {
            return GgmlDType::Q6K;
        }
    }
    GgmlDType::Q4K
}

#[test]
fn q4_k_m_mix_per_tensor() {
    let dir = tempfile::tempdir().unwrap();
    let tied = spec("smollm3-tiny-q4_k_m.gguf");
    let untied = FixtureSpec {
        file_name: "untied-q4_k_m.gguf".into(),
        tied: false,
        ..tied.clone()
    };
    for s in [tied, untied] {
        let path = generate(&s, dir.path()).unwrap();
        let (c, _) = read(&path);
        assert_eq!(c.metadata["general.file_type"].to_u32().unwrap(), 15);
        let expected_count = 2 + 9 * s.layers + usize::from(!s.tied);
        assert_eq!(c.tensor_infos.len(), expected_count);
        let mut q6 = Vec::new();
        for (name, info) in &c.tensor_infos {
            assert_eq!(
                info.ggml_dtype,
                expected_q4km(name, s.layers, s.tied),
                "{name}"
            );
            if info.ggml_dtype == GgmlDType::Q6K {
                q6.push(name.clone());
            }
        }
        q6.sort();
        // 8 layers: use_more_bits -> layers 0, 3, 6, 7.
        let mut expect: Vec<String> = [0, 3, 6, 7]
            .iter()
            .flat_map(|l| {
                [
                    format!("blk.{l}.attn_v.weight"),
                    format!("blk.{l}.ffn_down.weight"),
                ]
            })
            .collect();
        expect.push(
            if s.tied {
                "token_embd.weight"
            } else {
                "output.weight"
            }
            .to_string(),
        );
        expect.sort();
        assert_eq!(q6, expect);
        if !s.tied {
            assert_eq!(
                c.tensor_infos["token_embd.weight"].ggml_dtype,
                GgmlDType::Q4K
            );
        }
    }
}

#[test]
fn tiny_files_share_weights_and_have_the_readme_layout() {
    let dir = tempfile::tempdir().unwrap();
    let names = ["smollm3-tiny-f32.gguf", "smollm3-tiny-q8_0.gguf"];
    for n in names {
        generate(&spec(n), dir.path()).unwrap();
    }
    let (cf, mut ff) = read(&dir.path().join(names[0]));
    let (cq, mut fq) = read(&dir.path().join(names[1]));
    let dev = Device::Cpu;

    // Shapes (candle order: GGUF dims reversed) and types.
    let shapes: HashMap<&str, Vec<usize>> = [
        ("token_embd.weight", vec![2256, 256]),
        ("blk.0.attn_q.weight", vec![256, 256]),
        ("blk.0.attn_k.weight", vec![64, 256]),
        ("blk.0.attn_v.weight", vec![64, 256]),
        ("blk.0.attn_output.weight", vec![256, 256]),
        ("blk.7.ffn_gate.weight", vec![512, 256]),
        ("blk.7.ffn_up.weight", vec![512, 256]),
        ("blk.7.ffn_down.weight", vec![256, 512]),
        ("blk.7.ffn_norm.weight", vec![256]),
        ("output_norm.weight", vec![256]),
    ]
    .into();
    for (name, shape) in &shapes {
        assert_eq!(cf.tensor_infos[*name].shape.dims(), &shape[..], "{name}");
        assert_eq!(cf.tensor_infos[*name].ggml_dtype, GgmlDType::F32);
        let qt = if shape.len() == 1 {
            GgmlDType::F32
        } else {
            GgmlDType::Q8_0
        };
        assert_eq!(cq.tensor_infos[*name].ggml_dtype, qt, "{name}");
    }
    assert!(!cf.tensor_infos.contains_key("output.weight"));
    assert_eq!(cf.tensor_infos.len(), 2 + 9 * 8);

    // The Q8_0 file holds exactly the f32 file's weights, quantized.
    for name in cf.tensor_infos.keys() {
        let f32t = cf
            .tensor(&mut ff, name, &dev)
            .unwrap()
            .dequantize(&dev)
            .unwrap();
        let q = cq.tensor(&mut fq, name, &dev).unwrap();
        let requant = QTensor::quantize(&f32t, q.dtype()).unwrap();
        assert_eq!(requant.data().unwrap(), q.data().unwrap(), "{name}");
    }

    // Norm weights ~ 1 + N(0, 0.1), matrices ~ N(0, 0.08).
    let stats = |t: Tensor| {
        let v = t.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        let n = v.len() as f64;
        let mean = v.iter().map(|&x| x as f64).sum::<f64>() / n;
        let std = (v.iter().map(|&x| (x as f64 - mean).powi(2)).sum::<f64>() / n).sqrt();
        (mean, std)
    };
    let (m, s) = stats(
        cf.tensor(&mut ff, "blk.3.ffn_up.weight", &dev)
            .unwrap()
            .dequantize(&dev)
            .unwrap(),
    );
    assert!(m.abs() < 0.005 && (s - 0.08).abs() < 0.005, "{m} {s}");
    let mut norms = Vec::new();
    for l in 0..8 {
        let t = cf
            .tensor(&mut ff, &format!("blk.{l}.attn_norm.weight"), &dev)
            .unwrap();
        norms.extend(t.dequantize(&dev).unwrap().to_vec1::<f32>().unwrap());
    }
    let (m, s) = stats(Tensor::new(norms, &dev).unwrap());
    assert!((m - 1.0).abs() < 0.02 && (s - 0.1).abs() < 0.01, "{m} {s}");
}

#[test]
fn metadata_keys_and_types() {
    let dir = tempfile::tempdir().unwrap();
    let yarn = spec("smollm3-tiny-yarn-f32.gguf");
    let (c, _) = read(&generate(&yarn, dir.path()).unwrap());
    let md = &c.metadata;
    let u32_keys = [
        ("general.alignment", 32),
        ("general.file_type", 0),
        ("smollm3.vocab_size", 2256),
        ("smollm3.context_length", 1024),
        ("smollm3.embedding_length", 256),
        ("smollm3.feed_forward_length", 512),
        ("smollm3.block_count", 8),
        ("smollm3.attention.head_count", 8),
        ("smollm3.attention.head_count_kv", 2),
        ("smollm3.rope.dimension_count", 32),
        ("smollm3.rope.scaling.original_context_length", 256),
        ("tokenizer.ggml.bos_token_id", 2000),
        ("tokenizer.ggml.eos_token_id", 2012),
        ("tokenizer.ggml.padding_token_id", 2004),
    ];
    for (k, v) in u32_keys {
        assert!(matches!(md[k], Value::U32(x) if x == v), "{k}: {:?}", md[k]);
    }
    let f32_keys = [
        ("smollm3.rope.freq_base", 10000.0f32),
        ("smollm3.attention.layer_norm_rms_epsilon", 1e-6),
        ("smollm3.rope.scaling.factor", 4.0),
    ];
    for (k, v) in f32_keys {
        assert!(matches!(md[k], Value::F32(x) if x == v), "{k}: {:?}", md[k]);
    }
    let s = |k: &str| md[k].to_string().unwrap().as_str();
    assert_eq!(s("general.architecture"), "smollm3");
    assert_eq!(s("general.name"), "smollm3-tiny-yarn-f32");
    assert_eq!(s("smollm3.rope.scaling.type"), "yarn");
    assert_eq!(s("tokenizer.ggml.model"), "gpt2");
    assert_eq!(s("tokenizer.ggml.pre"), "smaug-bpe");
    assert_eq!(s("tokenizer.chat_template"), SMOLLM3_CHAT_TEMPLATE);
    assert!(matches!(
        md["tokenizer.ggml.add_bos_token"],
        Value::Bool(false)
    ));

    let tokens = md["tokenizer.ggml.tokens"].to_vec().unwrap();
    let types = md["tokenizer.ggml.token_type"].to_vec().unwrap();
    assert_eq!(tokens.len(), 2256);
    assert!(types.iter().all(|t| matches!(t, Value::I32(_))));
    assert_eq!(tokens[2012].to_string().unwrap(), "<|im_end|>");
    assert!(matches!(types[2012], Value::I32(3)));
    assert!(matches!(types[100], Value::I32(1)));
    let merges = md["tokenizer.ggml.merges"].to_vec().unwrap();
    assert_eq!(merges[0].to_string().unwrap(), "Ġ Ġ");

    // Files without YaRN carry no scaling keys.
    let (c, _) = read(&generate(&spec("smollm3-tiny-f32.gguf"), dir.path()).unwrap());
    assert!(!c.metadata.keys().any(|k| k.contains("rope.scaling")));
}

#[test]
fn vocab128k_fixture() {
    let dir = tempfile::tempdir().unwrap();
    let s = spec("smollm3-vocab128k-q8_0.gguf");
    assert_eq!(s.vocab, VocabChoice::Full);
    let (c, _) = read(&generate(&s, dir.path()).unwrap());
    let md = &c.metadata;
    let tokens = md["tokenizer.ggml.tokens"].to_vec().unwrap();
    assert_eq!(tokens.len(), 128_256);
    assert_eq!(md["tokenizer.ggml.merges"].to_vec().unwrap().len(), 280_147);
    for (id, name) in [
        (128_000, "<|begin_of_text|>"),
        (128_011, "<|im_start|>"),
        (128_012, "<|im_end|>"),
    ] {
        assert_eq!(tokens[id].to_string().unwrap(), name);
    }
    assert_eq!(md["tokenizer.ggml.eos_token_id"].to_u32().unwrap(), 128_012);
    assert_eq!(
        c.tensor_infos["token_embd.weight"].shape.dims(),
        &[128_256, 64]
    );
    assert_eq!(
        c.tensor_infos["token_embd.weight"].ggml_dtype,
        GgmlDType::Q8_0
    );
    assert_eq!(
        c.tensor_infos["blk.3.attn_k.weight"].shape.dims(),
        &[16, 64]
    );
    assert_eq!(md["smollm3.rope.dimension_count"].to_u32().unwrap(), 16);
}

#[test]
fn failed_write_leaves_no_file() {
    let dir = tempfile::tempdir().unwrap();
    let target = dir.path().join("x.gguf");

    // Failure midway through writing: nothing under the final name, no temp file left.
    let err = write_atomic(&target, |w| {
        use std::io::Write;
        w.write_all(&[0u8; 4 << 20])?;
        anyhow::bail!("simulated failure")
    });
    assert!(err.is_err());
    assert!(
        dir_entries(dir.path()).is_empty(),
        "{:?}",
        dir_entries(dir.path())
    );

    // An existing file is left untouched by a failed rewrite.
    std::fs::write(&target, b"old").unwrap();
    assert!(write_atomic(&target, |_| anyhow::bail!("fail")).is_err());
    assert_eq!(std::fs::read(&target).unwrap(), b"old");
    assert_eq!(dir_entries(dir.path()), ["x.gguf"]);

    // An invalid spec (Q4_K needs 256-wide rows) fails and writes nothing.
    let bad = FixtureSpec {
        file_name: "bad.gguf".into(),
        hidden: 128,
        heads: 4,
        ..FixtureSpec::tiny("bad.gguf", QuantScheme::Q4KM, 1)
    };
    assert!(generate(&bad, dir.path()).is_err());
    assert_eq!(dir_entries(dir.path()), ["x.gguf"]);

    // A successful write replaces the file.
    write_atomic(&target, |w| {
        use std::io::Write;
        w.write_all(b"new")?;
        Ok(())
    })
    .unwrap();
    assert_eq!(std::fs::read(&target).unwrap(), b"new");
    assert_eq!(dir_entries(dir.path()), ["x.gguf"]);
}
