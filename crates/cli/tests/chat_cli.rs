//! `smollm3 tokenize`, `detokenize` and `template`.

mod common;

use common::{ok, smollm3};

use std::path::{Path, PathBuf};

fn fixture(name: &str) -> String {
    let p = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../fixtures/gguf")
        .join(name);
    assert!(p.exists(), "run `cargo xtask gen-fixtures` first");
    p.to_str().unwrap().to_string()
}

fn temp(name: &str, contents: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("smollm3-chat-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let p = dir.join(name);
    std::fs::write(&p, contents).unwrap();
    p
}

#[test]
fn tokenize_and_detokenize_round_trip() {
    let m = fixture("smollm3-vocab128k-q8_0.gguf");
    let text = "Hello world <|im_start|> café 😀";
    let ids = ok(&["tokenize", "--model", &m, "--text", text]);
    let v: Vec<u32> = serde_json::from_str(&ids).unwrap();
    assert!(!v.contains(&128011), "plain by default");
    let special: Vec<u32> = serde_json::from_str(&ok(&[
        "tokenize",
        "--model",
        &m,
        "--text",
        text,
        "--special",
    ]))
    .unwrap();
    assert!(special.contains(&128011));
    let list: Vec<String> = v.iter().map(u32::to_string).collect();
    assert_eq!(
        ok(&["detokenize", "--model", &m, "--tokens", &list.join(",")]),
        text
    );
    let json: serde_json::Value =
        serde_json::from_str(&ok(&["tokenize", "--model", &m, "--text", "Hi", "--json"])).unwrap();
    assert_eq!(json[0]["text"], "Hi");
}

#[test]
fn template_prints_the_prompt_and_its_tokens() {
    let m = fixture("smollm3-vocab128k-q8_0.gguf");
    let conv = temp(
        "conv.json",
        r#"[{"role": "user", "content": "What is 2+2?"}]"#,
    );
    let c = conv.to_str().unwrap();
    let text = ok(&[
        "template",
        "--model",
        &m,
        "--messages",
        c,
        "--no-think",
        "--date",
        "04 September 2026",
    ]);
    assert_eq!(text.chars().count(), 297);
    assert!(text.starts_with("<|im_start|>system\n## Metadata"));
    assert!(text.ends_with("<|im_start|>assistant\n<think>\n\n</think>\n"));
    let ids: Vec<u32> = serde_json::from_str(&ok(&[
        "template",
        "--model",
        &m,
        "--messages",
        c,
        "--no-think",
        "--date",
        "2026-09-04",
        "--tokens",
    ]))
    .unwrap();
    assert_eq!(ids[0], 128011);
    let tools = temp(
        "tools.json",
        r#"[{"type": "function", "function": {"name": "get_weather", "parameters": {}}}]"#,
    );
    let with_tools = ok(&[
        "template",
        "--model",
        &m,
        "--messages",
        c,
        "--tools",
        tools.to_str().unwrap(),
    ]);
    assert!(with_tools.contains("<tools>\n{'name': 'get_weather', 'parameters': {}}\n</tools>"));
}

#[test]
fn bad_input_is_a_clean_error() {
    let m = fixture("smollm3-tiny-f32.gguf");
    let bad = temp("bad.json", "{not json");
    for args in [
        vec![
            "template",
            "--model",
            &m,
            "--messages",
            bad.to_str().unwrap(),
        ],
        vec!["detokenize", "--model", &m, "--tokens", "99999999"],
        vec!["tokenize", "--model", "/nonexistent.gguf", "--text", "x"],
        vec![
            "template",
            "--model",
            &m,
            "--messages",
            bad.to_str().unwrap(),
            "--date",
            "31 February 2026",
        ],
    ] {
        let out = smollm3(&args);
        assert!(!out.status.success(), "{args:?}");
        let err = String::from_utf8(out.stderr).unwrap();
        assert!(
            err.starts_with("error:") && !err.contains("panicked"),
            "{err}"
        );
    }
}

#[test]
fn tokenizer_json_overrides_the_gguf_tokenizer() {
    // Export the small-vocabulary fixture's tokenizer, then use it with the 128k-vocab model:
    // the ids must be the small tokenizer's, not the GGUF's own.
    let small = smollm3_chat::Tokenizer::from_gguf(fixture("smollm3-tiny-f32.gguf")).unwrap();
    let json = temp("small-tokenizer.json", "");
    small.save_tokenizer_json(&json).unwrap();
    let m = fixture("smollm3-vocab128k-q8_0.gguf");
    let text = "Hello world, tokenizers!";
    let own: Vec<u32> =
        serde_json::from_str(&ok(&["tokenize", "--model", &m, "--text", text])).unwrap();
    let overridden: Vec<u32> = serde_json::from_str(&ok(&[
        "tokenize",
        "--model",
        &m,
        "--tokenizer",
        json.to_str().unwrap(),
        "--text",
        text,
    ]))
    .unwrap();
    assert_eq!(overridden, small.encode(text, false).unwrap());
    assert_ne!(overridden, own);
    let out = smollm3(&[
        "tokenize",
        "--model",
        &m,
        "--tokenizer",
        "/nonexistent.json",
        "--text",
        "x",
    ]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("/nonexistent.json"));
}
