//! The real `smollm3-web` binary on loopback with the tiny fixture model: it prints its
//! address (port 0), answers /health, requires the API key, reuses a conversation's cache on
//! its next turn, and exits 0 on SIGTERM.

mod common;

use std::path::Path;

use common::{http, Server};

use serde_json::{json, Value};

fn chat(address: &str, messages: Value) -> Value {
    let body = json!({"messages": messages, "max_tokens": 3, "temperature": 0,
                      "reasoning_effort": "none"});
    let (status, text) = http(
        address,
        "POST",
        "/v1/chat/completions",
        Some("s3cret"),
        &body.to_string(),
    );
    assert_eq!(status, 200, "{text}");
    serde_json::from_str(&text).unwrap()
}

#[test]
fn the_binary_serves_reuses_the_cache_and_stops_on_sigterm() {
    let model =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fixtures/gguf/smollm3-tiny-q8_0.gguf");
    assert!(model.exists(), "run `cargo xtask gen-fixtures` first");
    let mut server = Server::start(&model, &["--parallel", "1", "--api-key", "s3cret"]);
    let address = server.address.clone();
    let (status, body) = http(&address, "GET", "/health", None, "");
    assert_eq!((status, body.as_str()), (200, r#"{"status":"ok"}"#));

    let (status, body) = http(&address, "GET", "/v1/models", Some("wrong"), "");
    assert_eq!(status, 401, "{body}");
    assert!(body.contains("authentication_error"), "{body}");

    let first_turn = json!([{"role": "user", "content": "Name a colour."}]);
    let first = chat(&address, first_turn.clone());
    let answer = first["choices"][0]["message"]["content"]
        .as_str()
        .unwrap()
        .to_string();
    let prompt_tokens = first["usage"]["prompt_tokens"].as_u64().unwrap();
    assert_eq!(first["usage"]["prompt_tokens_details"]["cached_tokens"], 0);
    assert!(first["usage"]["completion_tokens"].as_u64().unwrap() <= 3);
    // The next turn of the conversation processes only its new tokens.
    let second = chat(
        &address,
        json!([{"role": "user", "content": "Name a colour."},
               {"role": "assistant", "content": answer},
               {"role": "user", "content": "Another one."}]),
    );
    let cached = second["usage"]["prompt_tokens_details"]["cached_tokens"]
        .as_u64()
        .unwrap();
    assert!(
        cached >= prompt_tokens,
        "cached {cached} of a first prompt of {prompt_tokens}"
    );
    assert_eq!(second["timings"]["cache_n"].as_u64(), Some(cached));

    #[cfg(unix)]
    {
        server.terminate();
        let status = server.wait_exit();
        assert!(status.success(), "{status:?}");
    }
}

#[test]
fn a_bad_cors_origin_is_one_line_before_anything_starts() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_smollm3-web"))
        .args(["--cors", "localhost:3000", "--port", "0"])
        .env("RUST_BACKTRACE", "1")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        stderr.trim(),
        "error: --cors \"localhost:3000\": expected an origin such as http://localhost:3000, or *"
    );
    assert!(out.stdout.is_empty(), "nothing was served");
}

#[test]
fn a_connection_cap_out_of_range_is_refused_naming_the_flag() {
    for value in ["0", "1000001", "18446744073709551615"] {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_smollm3-web"))
            .args(["--max-connections", value, "--port", "0"])
            .env("RUST_BACKTRACE", "1")
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(2), "{value}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        let first = stderr.lines().next().unwrap_or_default();
        assert!(
            first.starts_with(&format!(
                "error: invalid value '{value}' for '--max-connections"
            )),
            "{stderr}"
        );
        assert!(!stderr.contains("panicked"), "{stderr}");
        assert!(out.stdout.is_empty(), "nothing was served");
    }
}
