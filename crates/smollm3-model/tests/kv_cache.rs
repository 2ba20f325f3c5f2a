//! The KV cache is an optimisation only: any way of feeding the same tokens must give the same
//! logits as one prefill.

mod common;

use candle_core::quantized::GgmlDType;
use common::{max_abs_diff, write_tiny, TinySpec};
use smollm3_model::Model;

fn rows(t: smollm3_model::Tensor) -> Vec<Vec<f32>> {
    t.to_vec2().unwrap()
}

fn tokens(n: usize) -> Vec<u32> {
    (0..n as u32).map(|i| (i * 37 + 11) % 96).collect()
}

fn model(name: &str, spec: TinySpec) -> Model {
    Model::load(write_tiny(name, &spec)).unwrap()
}

#[test]
fn step_by_step_decode_equals_prefill() {
    for (name, dtype) in [("f32", GgmlDType::F32), ("q8", GgmlDType::Q8_0)] {
        let m = model(
            &format!("decode-{name}"),
            TinySpec {
                dtype,
                ..Default::default()
            },
        );
        let toks = tokens(20);
        let mut cache = m.new_cache(64).unwrap();
        let prefill = rows(m.forward(&toks, &mut cache).unwrap());
        let mut cache = m.new_cache(64).unwrap();
        for (i, &t) in toks.iter().enumerate() {
            let step: Vec<f32> = m.forward_last(&[t], &mut cache).unwrap().to_vec1().unwrap();
            let d = max_abs_diff(&step, &prefill[i]);
            assert!(
                d < 1e-4,
                "{name} position {i}: decode differs from prefill by {d}"
            );
        }
        assert_eq!(cache.len(), 20);
    }
}

#[test]
fn chunked_prefill_equals_one_prefill() {
    let m = model("chunks", TinySpec::default());
    let toks = tokens(30);
    let mut cache = m.new_cache(64).unwrap();
    let whole = rows(m.forward(&toks, &mut cache).unwrap());
    let mut cache = m.new_cache(64).unwrap();
    let mut got = Vec::new();
    for chunk in [&toks[..7], &toks[7..8], &toks[8..25], &toks[25..]] {
        got.extend(rows(m.forward(chunk, &mut cache).unwrap()));
    }
    for (i, (a, b)) in got.iter().zip(&whole).enumerate() {
        assert!(max_abs_diff(a, b) < 1e-4, "position {i}");
    }
}

#[test]
fn cache_growth_past_initial_capacity_keeps_history() {
    // The cache starts with 256 slots and doubles; cross that boundary mid-decode.
    let m = model(
        "grow",
        TinySpec {
            ctx: 512,
            ..Default::default()
        },
    );
    let toks = tokens(300);
    let mut cache = m.new_cache(512).unwrap();
    let whole = rows(m.forward(&toks, &mut cache).unwrap());
    let mut cache = m.new_cache(512).unwrap();
    m.forward(&toks[..250], &mut cache).unwrap();
    for (i, &t) in toks.iter().enumerate().skip(250) {
        let step: Vec<f32> = m.forward_last(&[t], &mut cache).unwrap().to_vec1().unwrap();
        assert!(max_abs_diff(&step, &whole[i]) < 1e-4, "position {i}");
    }
}

#[test]
fn truncate_then_continue_equals_fresh_run() {
    let m = model("trunc", TinySpec::default());
    let a = tokens(12);
    let mut b = a[..8].to_vec();
    b.extend([5, 6, 7]);
    let mut fresh = m.new_cache(64).unwrap();
    let expected = rows(m.forward(&b, &mut fresh).unwrap());
    let mut cache = m.new_cache(64).unwrap();
    m.forward(&a, &mut cache).unwrap();
    cache.truncate(8).unwrap();
    let got = rows(m.forward(&b[8..], &mut cache).unwrap());
    for (i, row) in got.iter().enumerate() {
        assert!(
            max_abs_diff(row, &expected[8 + i]) < 1e-4,
            "position {}",
            8 + i
        );
    }
    cache.reset();
    assert!(cache.is_empty());
    let again = rows(m.forward(&b, &mut cache).unwrap());
    assert!(max_abs_diff(&again[10], &expected[10]) < 1e-6);
}

#[test]
fn forward_last_is_the_last_row_of_forward() {
    let m = model(
        "last",
        TinySpec {
            tied: false,
            ..Default::default()
        },
    );
    let toks = tokens(9);
    let all = rows(m.forward(&toks, &mut m.new_cache(16).unwrap()).unwrap());
    let last: Vec<f32> = m
        .forward_last(&toks, &mut m.new_cache(16).unwrap())
        .unwrap()
        .to_vec1()
        .unwrap();
    assert!(max_abs_diff(&last, &all[8]) < 1e-6);
}

#[test]
fn positions_matter_on_rope_layers() {
    // Same tokens after a different prefix: a model ignoring positions would not notice.
    let m = model("pos", TinySpec::default());
    let x = rows(
        m.forward(&[3, 4, 5], &mut m.new_cache(16).unwrap())
            .unwrap(),
    );
    let y = rows(
        m.forward(&[3, 3, 4, 5], &mut m.new_cache(16).unwrap())
            .unwrap(),
    );
    assert!(max_abs_diff(&x[2], &y[3]) > 1e-3);
}

/// The default f16 cache takes half the f32 cache's memory and moves the logits by about an
/// f16 rounding of the keys and values, no more; f32 stays available for exact results.
#[test]
fn an_f16_cache_halves_the_memory_and_stays_close_to_f32() {
    use smollm3_model::KvType;
    let m = model("f16-vs-f32", TinySpec::default());
    let toks = tokens(40);
    let mut half = m.new_cache(64).unwrap();
    assert_eq!(half.kv_type(), KvType::F16);
    let mut full = m.new_cache_of(64, KvType::F32).unwrap();
    assert_eq!(full.kv_type(), KvType::F32);
    let (h, f) = (
        rows(m.forward(&toks, &mut half).unwrap()),
        rows(m.forward(&toks, &mut full).unwrap()),
    );
    assert_eq!(2 * half.allocated_bytes(), full.allocated_bytes());
    let scale = f.iter().flatten().fold(0f32, |a, x| a.max(x.abs()));
    let worst = h
        .iter()
        .zip(&f)
        .map(|(a, b)| max_abs_diff(a, b))
        .fold(0f32, f32::max);
    assert!(worst > 0.0, "the f16 cache rounds, so something must move");
    assert!(worst < 5e-3 * scale, "f16 vs f32: {worst} of {scale}");
}

#[test]
fn cache_types_parse_from_their_flag_names() {
    use smollm3_model::KvType;
    assert_eq!("f16".parse::<KvType>().unwrap(), KvType::F16);
    assert_eq!("F32".parse::<KvType>().unwrap(), KvType::F32);
    assert_eq!(KvType::F16.to_string(), "f16");
    let err = "q8_0".parse::<KvType>().unwrap_err().to_string();
    assert!(err.contains("q8_0") && err.contains("f16 or f32"), "{err}");
}

/// An interrupt asked for before a layer of the second slice (slices of 8 tokens, 4 layers
/// each) stops the pass with `Interrupted` and leaves the cache as it was, although the first
/// slice was already in it; the same call uninterrupted then gives the logits of a plain
/// prefill.
#[test]
fn an_interrupted_prompt_leaves_the_cache_as_it_was() {
    use smollm3_model::{LoadOptions, ModelError};
    use std::cell::Cell;
    let path = write_tiny("interrupt", &TinySpec::default());
    let options = LoadOptions {
        prompt_slice: Some(8),
        ..Default::default()
    };
    let m = Model::load_with(&path, &options).unwrap();
    let layers = m.config().num_layers;
    let toks = tokens(20);
    let mut cache = m.new_cache(64).unwrap();
    m.forward(&toks[..3], &mut cache).unwrap();

    let asked = Cell::new(0);
    let interrupt = || {
        asked.set(asked.get() + 1);
        asked.get() > layers + 1
    };
    let e = m
        .forward_last_interruptible(&toks[3..], &mut cache, &interrupt)
        .unwrap_err();
    assert!(matches!(e, ModelError::Interrupted), "{e:?}");
    assert_eq!(
        asked.get(),
        layers + 2,
        "asked before every layer, stopped at once"
    );
    assert_eq!(cache.len(), 3);

    let last: Vec<f32> = m
        .forward_last_interruptible(&toks[3..], &mut cache, &|| false)
        .unwrap()
        .to_vec1()
        .unwrap();
    let mut fresh = m.new_cache(64).unwrap();
    let whole = rows(m.forward(&toks, &mut fresh).unwrap());
    assert!(max_abs_diff(&last, &whole[19]) < 1e-4);
    assert_eq!(cache.len(), 20);
}
