//! A tiny stand-in for the Hugging Face hub, for tests without network (cargo feature
//! `test-support`): an HTTP/1.1 server on 127.0.0.1 serving files in the hub's URL layout, with
//! the headers `hf-hub` 0.4 reads.
//!
//! - `GET /{owner}/{name}/resolve/{revision}/{file}`: the file, honouring `Range: bytes=a-[b]`
//!   (206 + `Content-Range`, 416 past the end), with `x-repo-commit`, `etag` and
//!   `x-linked-etag` (the SHA-256 of the content, as for LFS files); 404 for an unknown file
//!   (`x-error-code: EntryNotFound`), 401 for an unknown repository (as the real hub).
//! - `GET /api/models/{owner}/{name}[/revision/{revision}]`: `{"sha", "siblings"}`.
//!
//! Every request is logged (`"GET /path bytes=a-b"`) so tests can assert that a cache hit makes
//! none. Faults can be injected: cut the next file body after N bytes (the connection closes
//! with the announced length unsent), serve a short body whose length matches its own
//! `Content-Length` but not the announced size, or leave out `x-repo-commit`.
//!
//! ```
//! use smollm3_hub::fake_hub::FakeHub;
//! use smollm3_hub::{resolve, HubOptions, ModelRef};
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! # // As the tests do: no proxy for 127.0.0.1, and online.
//! # for var in smollm3_hub::fake_hub::PROXY_VARS.iter().chain(&["HF_HUB_OFFLINE"]) {
//! #     std::env::remove_var(var);
//! # }
//! let hub = FakeHub::start();
//! hub.add("test-org/Tiny-GGUF", "Tiny-Q8_0.gguf", b"GGUF...".to_vec());
//! let cache = std::env::temp_dir().join(format!("fake-hub-doctest-{}", std::process::id()));
//! let options = HubOptions {
//!     endpoint: Some(hub.url.clone()),
//!     cache_dir: Some(cache.clone()),
//!     ..HubOptions::default()
//! };
//! let path = resolve(&"test-org/Tiny-GGUF:q8_0".parse::<ModelRef>()?, &options)?;
//! assert_eq!(std::fs::read(&path)?, b"GGUF...");
//! # std::fs::remove_dir_all(&cache)?;
//! # Ok(())
//! # }
//! ```
//!
//! It is test support: [`FakeHub::start`] panics when it cannot listen on 127.0.0.1, which a
//! test cannot go on without. Requests it cannot parse get a 404 or a dropped connection, never
//! a panic, and a test that panicked while holding the state does not poison it for the others.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use sha2::{Digest, Sha256};

/// The proxy variables ureq 2 reads (it ignores `NO_PROXY`): a child process talking to the
/// fake hub must not have them, or its requests to 127.0.0.1 would go to the proxy.
pub const PROXY_VARS: [&str; 6] = [
    "ALL_PROXY",
    "all_proxy",
    "HTTPS_PROXY",
    "https_proxy",
    "HTTP_PROXY",
    "http_proxy",
];

/// The commit every file of the fake hub is served at (`x-repo-commit`, and the `sha` of a
/// listing): the name of the snapshot directory downloads land in.
pub const COMMIT: &str = "0123456789abcdef0123456789abcdef01234567";

#[derive(Default)]
struct State {
    /// repo -> file -> bytes
    repos: BTreeMap<String, BTreeMap<String, Vec<u8>>>,
    log: Vec<String>,
    cut_next_body_at: Option<usize>,
    short_next_body: bool,
    omit_commit: bool,
}

/// A running fake hub. Its server threads live as long as the test process.
pub struct FakeHub {
    /// Its address, `http://127.0.0.1:PORT`: the endpoint to give to
    /// [`HubOptions::endpoint`](crate::HubOptions::endpoint) or `HF_ENDPOINT`.
    pub url: String,
    state: Arc<Mutex<State>>,
}

/// The SHA-256 of `bytes` as lowercase hex (the blob name hf-hub uses for LFS files).
pub fn sha256_hex(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// The state, even after a test thread panicked while holding it (the data stays usable).
fn lock(state: &Mutex<State>) -> MutexGuard<'_, State> {
    state.lock().unwrap_or_else(PoisonError::into_inner)
}

impl FakeHub {
    /// Starts a server on a free port of 127.0.0.1, serving nothing yet.
    ///
    /// # Panics
    ///
    /// When no port of 127.0.0.1 can be listened on: test setup that cannot go on.
    pub fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").expect("fake hub: listen on 127.0.0.1");
        let addr = listener
            .local_addr()
            .expect("fake hub: the address it listens on");
        let url = format!("http://{addr}");
        let state = Arc::new(Mutex::new(State::default()));
        let shared = Arc::clone(&state);
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(stream) = stream else { continue };
                let state = Arc::clone(&shared);
                std::thread::spawn(move || {
                    let _ = handle(stream, &state);
                });
            }
        });
        FakeHub { url, state }
    }

    /// Serves `bytes` as `file` of `repo` (`owner/name`), creating the repository.
    pub fn add(&self, repo: &str, file: &str, bytes: Vec<u8>) {
        lock(&self.state)
            .repos
            .entry(repo.to_string())
            .or_default()
            .insert(file.to_string(), bytes);
    }

    /// The requests so far, oldest first: `"GET /path"`, with the range if one was asked
    /// (`"GET /path bytes=100-"`).
    pub fn requests(&self) -> Vec<String> {
        lock(&self.state).log.clone()
    }

    /// Forgets the requests so far.
    pub fn clear_log(&self) {
        lock(&self.state).log.clear();
    }

    /// The next file body (not a `bytes=0-0` metadata request) stops after `n` bytes and the
    /// connection closes, with the full length announced.
    pub fn cut_next_body_at(&self, n: usize) {
        lock(&self.state).cut_next_body_at = Some(n);
    }

    /// The next file body is half the file, with a `Content-Length` that matches the half: a
    /// transfer that looks complete but is not the announced size.
    pub fn short_next_body(&self) {
        lock(&self.state).short_next_body = true;
    }

    /// Leaves `x-repo-commit` out of file responses (as a server that is not a hub would).
    pub fn omit_commit_header(&self, omit: bool) {
        lock(&self.state).omit_commit = omit;
    }
}

fn handle(stream: TcpStream, state: &Mutex<State>) -> std::io::Result<()> {
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut request_line = String::new();
    reader.read_line(&mut request_line)?;
    let mut range = None;
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line)? == 0 || line == "\r\n" || line == "\n" {
            break;
        }
        if let Some((k, v)) = line.split_once(':') {
            if k.trim().eq_ignore_ascii_case("range") {
                range = Some(v.trim().to_string());
            }
        }
    }
    let mut parts = request_line.split_whitespace();
    let method = parts.next().unwrap_or("").to_string();
    let path = parts.next().unwrap_or("").to_string();
    let mut s = lock(state);
    s.log.push(match &range {
        Some(r) => format!("{method} {path} {r}"),
        None => format!("{method} {path}"),
    });
    let mut out = stream;
    let segments: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    // Listing.
    if segments.first() == Some(&"api") && segments.get(1) == Some(&"models") && segments.len() >= 4
    {
        let repo = format!("{}/{}", segments[2], segments[3]);
        let Some(files) = s.repos.get(&repo) else {
            return respond(
                &mut out,
                "401 Unauthorized",
                &[],
                b"{\"error\":\"Repository not found\"}",
            );
        };
        let siblings: Vec<String> = files
            .keys()
            .map(|f| format!("{{\"rfilename\":\"{}\"}}", json_escape(f)))
            .collect();
        let body = format!(
            "{{\"id\":\"{}\",\"sha\":\"{COMMIT}\",\"siblings\":[{}]}}",
            json_escape(&repo),
            siblings.join(",")
        );
        return respond(
            &mut out,
            "200 OK",
            &[("Content-Type", "application/json".into())],
            body.as_bytes(),
        );
    }
    // Files: /{owner}/{name}/resolve/{revision}/{file...}
    if segments.len() >= 5 && segments[2] == "resolve" {
        let repo = format!("{}/{}", segments[0], segments[1]);
        let file = segments[4..].join("/");
        let Some(files) = s.repos.get(&repo) else {
            return respond(
                &mut out,
                "401 Unauthorized",
                &[("x-error-code", "RepoNotFound".into())],
                b"",
            );
        };
        let Some(bytes) = files.get(&file).cloned() else {
            return respond(
                &mut out,
                "404 Not Found",
                &[("x-error-code", "EntryNotFound".into())],
                b"",
            );
        };
        let len = bytes.len();
        let sha = sha256_hex(&bytes);
        let mut headers = vec![
            ("etag", format!("\"weak-{}\"", &sha[..16])),
            ("x-linked-etag", format!("\"{sha}\"")),
            ("Accept-Ranges", "bytes".to_string()),
        ];
        if !s.omit_commit {
            headers.push(("x-repo-commit", COMMIT.to_string()));
        }
        // The bytes asked for, `start..end`; a Range header that does not parse is ignored, as
        // HTTP servers do.
        let asked = range.as_deref().and_then(parse_range);
        let (start, end) = match asked {
            Some((a, b)) => (a, b.map_or(len, |b| b.saturating_add(1)).min(len)),
            None => (0, len),
        };
        if asked.is_some() && start >= end {
            headers.push(("Content-Range", format!("bytes */{len}")));
            return respond(&mut out, "416 Range Not Satisfiable", &headers, b"");
        }
        let body = &bytes[start..end];
        let is_metadata = range.as_deref() == Some("bytes=0-0");
        if asked.is_some() {
            headers.push(("Content-Range", format!("bytes {start}-{}/{len}", end - 1)));
        }
        let status = if asked.is_some() {
            "206 Partial Content"
        } else {
            "200 OK"
        };
        if !is_metadata {
            if let Some(cut) = s.cut_next_body_at.take() {
                // Announce the whole body, send part of it, close the connection.
                write_head(&mut out, status, &headers, body.len())?;
                out.write_all(&body[..cut.min(body.len())])?;
                out.flush()?;
                return out.shutdown(std::net::Shutdown::Both);
            }
            if std::mem::take(&mut s.short_next_body) {
                let short = &body[..body.len() / 2];
                return respond(&mut out, status, &headers, short);
            }
        }
        drop(s);
        return respond(&mut out, status, &headers, body);
    }
    respond(&mut out, "404 Not Found", &[], b"")
}

/// `s` inside a JSON string: quotes and backslashes escaped (file names have no control
/// characters).
fn json_escape(s: &str) -> String {
    s.replace('\\', "\\\\").replace('"', "\\\"")
}

fn parse_range(r: &str) -> Option<(usize, Option<usize>)> {
    let spec = r.strip_prefix("bytes=")?;
    let (a, b) = spec.split_once('-')?;
    let a = a.parse().ok()?;
    let b = if b.is_empty() {
        None
    } else {
        Some(b.parse().ok()?)
    };
    Some((a, b))
}

fn write_head(
    out: &mut TcpStream,
    status: &str,
    headers: &[(&str, String)],
    len: usize,
) -> std::io::Result<()> {
    let mut head = format!("HTTP/1.1 {status}\r\nContent-Length: {len}\r\nConnection: close\r\n");
    for (k, v) in headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str("\r\n");
    out.write_all(head.as_bytes())
}

fn respond(
    out: &mut TcpStream,
    status: &str,
    headers: &[(&str, String)],
    body: &[u8],
) -> std::io::Result<()> {
    write_head(out, status, headers, body.len())?;
    out.write_all(body)?;
    out.flush()
}
