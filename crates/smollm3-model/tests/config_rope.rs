//! Configuration parsing and RoPE tables against the facts in the SmolLM3 spec
//! (`shared/docs/smollm3-spec.md`, sections 1, 5 and 7), not against our own output.

mod common;

use candle_core::quantized::gguf_file::Value;
use common::{write_tiny, TinySpec};
use smollm3_model::{Architecture, Config, GgufFile, RopeScaling, RopeTables};

fn config(name: &str, spec: &TinySpec) -> Config {
    let path = write_tiny(name, spec);
    Config::from_gguf(&GgufFile::open(&path).unwrap()).unwrap()
}

#[test]
fn smollm3_36_layers_skip_rope_on_every_fourth() {
    let c = config(
        "nope36",
        &TinySpec {
            layers: 36,
            ..Default::default()
        },
    );
    assert_eq!(c.architecture, Architecture::SmolLm3);
    let expected: Vec<usize> = (3..36).step_by(4).collect();
    assert_eq!(c.nope_layers, expected);
    assert_eq!(
        c.nope_layers.len(),
        9,
        "SmolLM3-3B has 27 RoPE + 9 NoPE layers"
    );
    assert!(c.uses_rope(0) && c.uses_rope(34) && !c.uses_rope(35));
}

#[test]
fn llama_has_no_nope_layers_and_reads_llama_keys() {
    let c = config(
        "llama",
        &TinySpec {
            arch: "llama".into(),
            ..Default::default()
        },
    );
    assert_eq!(c.architecture, Architecture::Llama);
    assert!(c.nope_layers.is_empty());
    assert_eq!((c.num_heads, c.num_kv_heads, c.head_dim), (4, 2, 16));
}

#[test]
fn tied_and_untied_output() {
    assert!(config("tied", &TinySpec::default()).tied_embeddings);
    assert!(
        !config(
            "untied",
            &TinySpec {
                tied: false,
                ..Default::default()
            }
        )
        .tied_embeddings
    );
}

#[test]
fn yarn_metadata_extends_the_context() {
    let spec = TinySpec {
        metadata: vec![
            (
                "smollm3.rope.scaling.type".into(),
                Value::String("yarn".into()),
            ),
            ("smollm3.rope.scaling.factor".into(), Value::F32(2.0)),
            (
                "smollm3.rope.scaling.original_context_length".into(),
                Value::U32(128),
            ),
        ],
        ..Default::default()
    };
    let c = config("yarnmeta", &spec);
    assert_eq!(c.rope_scaling, Some(RopeScaling::yarn(2.0, 128)));
    assert_eq!(c.max_context(), 256);
}

/// SmolLM3-3B's own numbers: head_dim 128, theta 5e6, YaRN factor 2 over 65536 positions.
fn smollm3_3b(scaling: Option<RopeScaling>) -> Config {
    let mut c = config("real-shape", &TinySpec::default());
    c.head_dim = 128;
    c.rope_theta = 5_000_000.0;
    c.context_length = 65536;
    c.set_rope_scaling(scaling).unwrap();
    c
}

#[test]
fn plain_rope_frequencies() {
    let t = RopeTables::new(&smollm3_3b(None));
    assert_eq!(t.inv_freq().len(), 64);
    for (i, f) in t.inv_freq().iter().enumerate() {
        let want = 1.0 / 5e6f64.powf(2.0 * i as f64 / 128.0);
        assert!((f - want).abs() <= 1e-15 * want.max(1.0), "pair {i}");
    }
    assert_eq!(t.attention_factor(), 1.0);
}

#[test]
fn yarn_matches_the_spec_numbers_for_smollm3() {
    // Spec section 7: low = 24, high = 39; pairs 0-23 unchanged, 39-63 divided by the factor,
    // a linear blend between; attention factor 1 + 0.1 ln 2 = 1.0693147.
    let c = smollm3_3b(Some(RopeScaling::yarn(2.0, 65536)));
    assert_eq!(c.max_context(), 131072);
    let yarn = RopeTables::new(&c);
    let plain = RopeTables::new(&smollm3_3b(None));
    assert!((yarn.attention_factor() - 1.069_314_7).abs() < 1e-7);
    for i in 0..64 {
        let (y, p) = (yarn.inv_freq()[i], plain.inv_freq()[i]);
        if i < 24 {
            assert!((y - p).abs() <= 1e-15 * p, "pair {i} should be unchanged");
        } else if i >= 39 {
            assert!(
                (y - p / 2.0).abs() <= 1e-15 * p,
                "pair {i} should be halved"
            );
        } else {
            let ramp = (i as f64 - 24.0) / 15.0;
            let want = p / 2.0 * ramp + p * (1.0 - ramp);
            assert!((y - want).abs() <= 1e-12 * p, "pair {i} blend");
        }
    }
}

#[test]
fn cos_sin_carry_the_attention_factor() {
    let c = smollm3_3b(Some(RopeScaling::yarn(2.0, 65536)));
    let t = RopeTables::new(&c);
    let (cos, sin) = t.cos_sin(100_000, 2, &candle_core::Device::Cpu).unwrap();
    assert_eq!(cos.dims(), &[2, 64]);
    let cos: Vec<Vec<f32>> = cos.to_vec2().unwrap();
    let sin: Vec<Vec<f32>> = sin.to_vec2().unwrap();
    for (row, pos) in [(0usize, 100_000f64), (1, 100_001.0)] {
        for i in [0usize, 30, 63] {
            let angle = pos * t.inv_freq()[i];
            let f = t.attention_factor();
            assert!((f64::from(cos[row][i]) - angle.cos() * f).abs() < 1e-6);
            assert!((f64::from(sin[row][i]) - angle.sin() * f).abs() < 1e-6);
        }
    }
}

#[test]
fn bad_rope_options_are_rejected() {
    let mut c = config("badrope", &TinySpec::default());
    assert!(c
        .set_rope_scaling(Some(RopeScaling::yarn(0.5, 128)))
        .is_err());
    assert!(c
        .set_rope_scaling(Some(RopeScaling::yarn(f64::NAN, 128)))
        .is_err());
    assert!(c.set_rope_scaling(Some(RopeScaling::yarn(2.0, 0))).is_err());
    assert!(c
        .set_rope_scaling(Some(RopeScaling::Linear { factor: 4.0 }))
        .is_ok());
    assert_eq!(c.max_context(), 512);
}
