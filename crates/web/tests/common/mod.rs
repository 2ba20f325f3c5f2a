//! Test support: scripted sessions (no model) with the tiny fixture's tokenizer and the
//! official template on a fixed date.
#![allow(dead_code)]

use std::path::Path;
use std::sync::Arc;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use http_body_util::BodyExt;
use serde_json::Value;
use smollm3_chat::{ChatTemplate, DateTime, FixedClock, Tokenizer};
use smollm3_gen::{SamplingParams, ScriptedBackend, Session};
use smollm3_web::{router, AppState, Scheduler, SchedulerOptions};
use tower::ServiceExt;

pub fn tokenizer() -> Arc<Tokenizer> {
    let path =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fixtures/gguf/smollm3-tiny-f32.gguf");
    assert!(
        path.exists(),
        "{} is missing: run `cargo xtask gen-fixtures` first",
        path.display()
    );
    Arc::new(Tokenizer::from_gguf(&path).unwrap())
}

pub fn template() -> Arc<ChatTemplate> {
    let date = DateTime::date(2026, 1, 2).unwrap();
    Arc::new(
        ChatTemplate::with_clock(smollm3_chat::OFFICIAL_TEMPLATE, Arc::new(FixedClock(date)))
            .unwrap(),
    )
}

/// `slots` sessions, each playing back `replies` in turn.
pub fn scheduler(
    slots: usize,
    replies: &[&str],
    options: SchedulerOptions,
) -> Scheduler<ScriptedBackend> {
    let (tok, tmpl) = (tokenizer(), template());
    let sessions = (0..slots)
        .map(|_| {
            let backend = ScriptedBackend::from_texts(&tok, 4096, replies).unwrap();
            Session::with_backend(backend, tok.clone(), tmpl.clone())
        })
        .collect();
    Scheduler::new(sessions, options).unwrap()
}

/// A router over one scripted slot that answers with `replies` in turn. Greedy by default:
/// the scripted "model" makes its reply the most likely token, not a certain one.
pub fn app(replies: &[&str]) -> axum::Router {
    router(Arc::new(state(replies)))
}

/// The state behind [`app`], to change before building the router.
pub fn state(replies: &[&str]) -> AppState<ScriptedBackend> {
    let mut state = AppState::new("smollm3-test", SamplingParams::greedy())
        .with_scheduler(scheduler(1, replies, SchedulerOptions::default()));
    state.body_limit = 64 * 1024;
    state
}

pub async fn send(app: axum::Router, method: &str, path: &str, body: &str) -> (StatusCode, String) {
    let request = Request::builder()
        .method(method)
        .uri(path)
        .header("content-type", "application/json")
        .body(Body::from(body.to_string()))
        .unwrap();
    // A clone serves the request: the router (and its scheduler, whose drop cancels what is
    // running) stays alive until the streamed body is read, as in a server.
    let response = app.clone().oneshot(request).await.unwrap();
    let status = response.status();
    let bytes = response.into_body().collect().await.unwrap().to_bytes();
    drop(app);
    (status, String::from_utf8(bytes.to_vec()).unwrap())
}

pub async fn post_json(app: axum::Router, body: Value) -> (StatusCode, Value, String) {
    let (status, text) = send(app, "POST", "/v1/chat/completions", &body.to_string()).await;
    let value = serde_json::from_str(&text).unwrap_or(Value::Null);
    (status, value, text)
}

/// The `data:` payloads of an SSE body, in order (comments and blank lines skipped).
pub fn sse_data(body: &str) -> Vec<&str> {
    assert!(
        body.ends_with("\n\n"),
        "events end with a blank line: {body:?}"
    );
    body.lines()
        .filter_map(|l| l.strip_prefix("data: "))
        .collect()
}

/// The real `smollm3-web` binary, killed if a test fails before it stops it.
pub struct Server {
    pub child: std::process::Child,
    /// `127.0.0.1:PORT`, as the server printed it.
    pub address: String,
    /// The web chat's data directory (a fresh one; never the user's).
    pub data_dir: tempfile::TempDir,
}

impl Server {
    /// Starts the binary on a free loopback port with `model` and `args`, and waits until
    /// `/health` says it can serve (503 "Loading model" until then).
    pub fn start(model: &Path, args: &[&str]) -> Server {
        Self::start_with_stderr(model, args, std::process::Stdio::inherit())
    }

    /// [`Server::start`] with the server's stderr going to `stderr` (e.g. piped, to read what
    /// it said when it died).
    pub fn start_with_stderr(model: &Path, args: &[&str], stderr: std::process::Stdio) -> Server {
        use std::io::{BufRead, BufReader};
        use std::process::{Command, Stdio};
        use std::time::{Duration, Instant};
        let data_dir = tempfile::tempdir().unwrap();
        let mut child = Command::new(env!("CARGO_BIN_EXE_smollm3-web"))
            .args(["--model", model.to_str().unwrap(), "--port", "0"])
            .arg("--data-dir")
            .arg(data_dir.path())
            .args(args)
            .stdout(Stdio::piped())
            .stderr(stderr)
            .spawn()
            .unwrap();
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let address = line
            .trim()
            .strip_prefix("smollm3-web listening on http://")
            .unwrap_or_else(|| panic!("unexpected first line: {line:?}"))
            .to_string();
        let server = Server {
            child,
            address,
            data_dir,
        };
        let start = Instant::now();
        loop {
            let (status, body) = http(&server.address, "GET", "/health", None, "");
            if status == 200 {
                return server;
            }
            assert_eq!(status, 503, "{body}");
            assert!(body.contains("Loading model"), "{body}");
            assert!(
                start.elapsed() < Duration::from_secs(120),
                "the model never loaded"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Server {
    /// Sends SIGTERM, as systemd and Kubernetes do.
    #[cfg(unix)]
    pub fn terminate(&self) {
        // SAFETY: sending a signal to our own child process.
        unsafe { libc::kill(self.child.id() as libc::pid_t, libc::SIGTERM) };
    }

    /// Waits (at most 20 s) for the server to exit.
    pub fn wait_exit(&mut self) -> std::process::ExitStatus {
        use std::time::{Duration, Instant};
        let start = Instant::now();
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(start.elapsed() < Duration::from_secs(20), "no exit");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

/// Sends `POST /v1/chat/completions` with `body` over a raw connection and returns it unread
/// (a client that reads as it likes, or hangs up).
pub fn post_chat(address: &str, body: &str) -> std::net::TcpStream {
    use std::io::Write;
    let mut socket = std::net::TcpStream::connect(address).unwrap();
    socket
        .set_read_timeout(Some(std::time::Duration::from_secs(120)))
        .unwrap();
    write!(
        socket,
        "POST /v1/chat/completions HTTP/1.1\r\nHost: {address}\r\nConnection: close\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    socket
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One HTTP/1.1 request; the status and the body (responses here carry a Content-Length).
pub fn http(
    address: &str,
    method: &str,
    path: &str,
    key: Option<&str>,
    body: &str,
) -> (u16, String) {
    use std::io::{Read, Write};
    use std::net::TcpStream;
    use std::time::Duration;
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
