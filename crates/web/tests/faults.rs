//! Faults on the real binary (`--replay`: scripted answers paced like a model's, so that a
//! fault can land in the middle of a prompt or an answer): a client that vanishes while its
//! prompt is read, SIGTERM while an answer streams.

mod common;

use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::{http, Server};
use serde_json::{json, Value};

fn fixture() -> PathBuf {
    let model =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fixtures/gguf/smollm3-tiny-q8_0.gguf");
    assert!(model.exists(), "run `cargo xtask gen-fixtures` first");
    model
}

/// A server playing back `replies`, with `args` (pacing) after.
fn replay_server(replies: &[&str], args: &[&str]) -> (Server, tempfile::NamedTempFile) {
    let mut file = tempfile::NamedTempFile::new().unwrap();
    write!(file, "{}", serde_json::to_string(replies).unwrap()).unwrap();
    let mut all = vec!["--parallel", "1", "--replay", file.path().to_str().unwrap()];
    all.extend_from_slice(args);
    (Server::start(&fixture(), &all), file)
}

/// Sends a streamed chat request and returns the connection, unread.
fn post_stream(address: &str, content: &str) -> TcpStream {
    let body = json!({
        "messages": [{"role": "user", "content": content}],
        "stream": true, "reasoning_effort": "none",
    });
    common::post_chat(address, &body.to_string())
}

fn slot(address: &str) -> Value {
    let (status, body) = http(address, "GET", "/slots", None, "");
    assert_eq!(status, 200, "{body}");
    let slots: Value = serde_json::from_str(&body).unwrap();
    slots[0].clone()
}

#[test]
fn a_client_that_vanishes_during_its_prompt_stops_the_model_within_the_chunk() {
    // 20 ms a prompt token: the first 128-token chunk of this prompt takes 2.5 s.
    let (server, _replies) = replay_server(&["never sent"], &["--replay-prefill-ms", "20"]);
    let address = server.address.clone();
    let socket = post_stream(&address, &"many words of a long question ".repeat(40));
    let start = Instant::now();
    while !slot(&address)["is_processing"].as_bool().unwrap() {
        assert!(start.elapsed() < Duration::from_secs(10), "never started");
        std::thread::sleep(Duration::from_millis(5));
    }
    std::thread::sleep(Duration::from_millis(200));
    drop(socket);
    while slot(&address)["is_processing"].as_bool().unwrap() {
        assert!(start.elapsed() < Duration::from_secs(20), "never stopped");
        std::thread::sleep(Duration::from_millis(5));
    }
    // Stopped inside the first chunk: nothing of it was cached. (Without the cancel on
    // hang-up the chunk ran to its end, 128 tokens cached, and the hang-up was only seen
    // when its progress could not be sent.)
    assert_eq!(slot(&address)["cached_tokens"], 0, "{}", slot(&address));
    let (_, metrics) = http(&address, "GET", "/metrics", None, "");
    assert!(
        metrics.contains(
            r#"smollm3_requests_total{endpoint="/v1/chat/completions",outcome="cancelled"} 1"#
        ),
        "{metrics}"
    );
}

#[cfg(unix)]
#[test]
fn sigterm_ends_a_running_stream_with_an_error_event_and_exits_0() {
    let long = "word ".repeat(200);
    let (mut server, _replies) = replay_server(&[long.as_str()], &["--replay-token-ms", "20"]);
    let mut reader = BufReader::new(post_stream(&server.address, "Tell a story."));
    let mut lines = Vec::new();
    let mut signalled = false;
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).unwrap() == 0 {
            break;
        }
        if !signalled && line.contains(r#""content":""#) {
            server.terminate();
            signalled = true;
        }
        lines.push(line.trim_end().to_string());
    }
    assert!(signalled, "no answer came: {lines:?}");
    let data: Vec<&str> = lines
        .iter()
        .filter_map(|l| l.strip_prefix("data: "))
        .collect();
    assert!(
        !data.contains(&"[DONE]"),
        "a cut answer passed off as whole"
    );
    let last: Value = serde_json::from_str(data.last().unwrap()).unwrap();
    let message = last["error"]["message"].as_str().unwrap_or_default();
    assert!(message.contains("shutting down"), "{last}");
    assert!(message.contains("cut short"), "{last}");
    assert!(
        data.iter()
            .all(|d| !d.contains(r#""finish_reason":"stop""#)),
        "no finish chunk: {data:?}"
    );
    let status = server.wait_exit();
    assert!(status.success(), "{status:?}");
}

fn ask(address: &str) -> (u16, String) {
    let body = json!({
        "messages": [{"role": "user", "content": "Hi"}],
        "max_tokens": 4, "reasoning_effort": "none",
    });
    http(
        address,
        "POST",
        "/v1/chat/completions",
        None,
        &body.to_string(),
    )
}

#[cfg(unix)]
#[test]
fn a_model_file_truncated_in_place_is_refused_on_every_request_not_read() {
    let dir = tempfile::tempdir().unwrap();
    let model = dir.path().join("model.gguf");
    std::fs::copy(fixture(), &model).unwrap();
    let mut server = Server::start(&model, &["--parallel", "1"]);
    let address = server.address.clone();
    assert_eq!(ask(&address).0, 200);
    let len = std::fs::metadata(&model).unwrap().len();
    std::fs::OpenOptions::new()
        .write(true)
        .open(&model)
        .unwrap()
        .set_len(len / 2)
        .unwrap();
    // Refused before any weight is read (a read past the new end would be a SIGBUS).
    for path in ["/health", "/v1/models"] {
        let (status, body) = http(&address, "GET", path, None, "");
        assert_eq!(status, 503, "{path}: {body}");
        assert!(body.contains("was truncated from"), "{path}: {body}");
    }
    let (status, body) = ask(&address);
    assert_eq!(status, 503, "{body}");
    assert!(body.contains("restart the server"), "{body}");
    assert!(
        server.child.try_wait().unwrap().is_none(),
        "the server died"
    );
    server.terminate();
    assert!(server.wait_exit().success());
}

#[cfg(unix)]
#[test]
fn a_model_file_replaced_by_a_rename_keeps_serving_and_a_fault_under_it_is_one_line() {
    use std::io::Read;
    let dir = tempfile::tempdir().unwrap();
    let model = dir.path().join("model.gguf");
    std::fs::copy(fixture(), &model).unwrap();
    // A second name for the mapped file, to truncate it after the path names another one.
    let mapped = dir.path().join("mapped.gguf");
    std::fs::hard_link(&model, &mapped).unwrap();
    let mut server =
        Server::start_with_stderr(&model, &["--parallel", "1"], std::process::Stdio::piped());
    let address = server.address.clone();
    assert_eq!(ask(&address).0, 200);
    // A new download renamed over the path (as downloaders finish): the mapped file is the
    // old one, intact, and the server goes on with it.
    let fresh = dir.path().join("fresh.gguf");
    std::fs::copy(fixture(), &fresh).unwrap();
    std::fs::rename(&fresh, &model).unwrap();
    let (status, body) = ask(&address);
    assert_eq!(status, 200, "{body}");
    // Now the mapped file itself loses its bytes (nothing at the path shows it): the next
    // answer reads a weight past the end, and the process ends on one line, exit code 1.
    std::fs::OpenOptions::new()
        .write(true)
        .open(&mapped)
        .unwrap()
        .set_len(0)
        .unwrap();
    let mut socket = post_stream(&address, "Hi again");
    let _ = socket.read_to_end(&mut Vec::new());
    let status = server.wait_exit();
    assert_eq!(status.code(), Some(1), "{status:?}");
    let mut stderr = String::new();
    server
        .child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut stderr)
        .unwrap();
    let last = stderr.lines().last().unwrap_or_default();
    assert!(
        last.starts_with("error: the model file was truncated or overwritten while in use"),
        "{stderr}"
    );
}

#[cfg(unix)]
#[test]
fn a_client_stuck_halfway_through_its_headers_does_not_hold_up_sigterm() {
    let mut server = Server::start(&fixture(), &["--parallel", "1"]);
    let mut socket = TcpStream::connect(&server.address).unwrap();
    write!(socket, "POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\n").unwrap();
    std::thread::sleep(Duration::from_millis(200));
    server.terminate();
    // Before: axum::serve's graceful shutdown waited for that head for ever.
    assert!(server.wait_exit().success());
    drop(socket);
}
