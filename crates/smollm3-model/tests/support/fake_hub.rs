//! A tiny stand-in for the Hugging Face hub, for tests without network: an HTTP/1.1 server on
//! 127.0.0.1 serving files in the hub's URL layout, with the headers `hf-hub` 0.4 reads.
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
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::{Arc, Mutex};

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

pub struct FakeHub {
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

impl FakeHub {
    pub fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
        let url = format!("http://{}", listener.local_addr().unwrap());
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

    pub fn add(&self, repo: &str, file: &str, bytes: Vec<u8>) {
        let mut s = self.state.lock().unwrap();
        s.repos
            .entry(repo.to_string())
            .or_default()
            .insert(file.to_string(), bytes);
    }

    pub fn requests(&self) -> Vec<String> {
        self.state.lock().unwrap().log.clone()
    }

    pub fn clear_log(&self) {
        self.state.lock().unwrap().log.clear();
    }

    pub fn cut_next_body_at(&self, n: usize) {
        self.state.lock().unwrap().cut_next_body_at = Some(n);
    }

    pub fn short_next_body(&self) {
        self.state.lock().unwrap().short_next_body = true;
    }

    pub fn omit_commit_header(&self, omit: bool) {
        self.state.lock().unwrap().omit_commit = omit;
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
    let mut s = state.lock().unwrap();
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
            .map(|f| format!("{{\"rfilename\":\"{f}\"}}"))
            .collect();
        let body = format!(
            "{{\"id\":\"{repo}\",\"sha\":\"{COMMIT}\",\"siblings\":[{}]}}",
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
        let (start, end) = match range.as_deref().and_then(parse_range) {
            Some((a, b)) => (
                a,
                b.unwrap_or(len.saturating_sub(1))
                    .min(len.saturating_sub(1)),
            ),
            None => (0, len.saturating_sub(1)),
        };
        if range.is_some() && start >= len {
            headers.push(("Content-Range", format!("bytes */{len}")));
            return respond(&mut out, "416 Range Not Satisfiable", &headers, b"");
        }
        let body = &bytes[start..=end];
        let is_metadata = range.as_deref() == Some("bytes=0-0");
        if range.is_some() {
            headers.push(("Content-Range", format!("bytes {start}-{end}/{len}")));
        }
        let status = if range.is_some() {
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
