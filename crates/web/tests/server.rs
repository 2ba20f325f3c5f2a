//! The real `smollm3-web` binary on loopback with the tiny fixture model: it prints its
//! address (port 0), answers /health, requires the API key, reuses a conversation's cache on
//! its next turn, and exits 0 on SIGTERM.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

/// Kills the server if a test fails before it stops it.
struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// One HTTP/1.1 request; the status and the body (responses here carry a Content-Length).
fn http(address: &str, method: &str, path: &str, key: Option<&str>, body: &str) -> (u16, String) {
    let mut stream = TcpStream::connect(address).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(60)))
        .unwrap();
    let auth = key
        .map(|k| format!("Authorization: Bearer {k}\r\n"))
        .unwrap_or_default();
    write!(
        stream,
        "{method} {path} HTTP/1.1\r\nHost: {address}\r\nConnection: close\r\n{auth}\
         Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    let status = response[9..12].parse().unwrap();
    let body = response
        .split_once("\r\n\r\n")
        .map_or("", |(_, b)| b)
        .to_string();
    (status, body)
}

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
    let child = Command::new(env!("CARGO_BIN_EXE_smollm3-web"))
        .args([
            "--model",
            model.to_str().unwrap(),
            "--port",
            "0",
            "--parallel",
            "1",
        ])
        .args(["--api-key", "s3cret"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut server = Server(child);
    let mut line = String::new();
    BufReader::new(server.0.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let address = line
        .trim()
        .strip_prefix("smollm3-web listening on http://")
        .unwrap_or_else(|| panic!("unexpected first line: {line:?}"))
        .to_string();

    let start = Instant::now();
    loop {
        let (status, body) = http(&address, "GET", "/health", None, "");
        if status == 200 {
            assert_eq!(body, r#"{"status":"ok"}"#);
            break;
        }
        assert_eq!(status, 503, "{body}");
        assert!(body.contains("Loading model"), "{body}");
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "the model never loaded"
        );
        std::thread::sleep(Duration::from_millis(20));
    }

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
        // SAFETY: sending a signal to our own child process.
        unsafe { libc::kill(server.0.id() as libc::pid_t, libc::SIGTERM) };
        let start = Instant::now();
        let status = loop {
            if let Some(status) = server.0.try_wait().unwrap() {
                break status;
            }
            assert!(
                start.elapsed() < Duration::from_secs(20),
                "no exit after SIGTERM"
            );
            std::thread::sleep(Duration::from_millis(20));
        };
        assert!(status.success(), "{status:?}");
    }
}
