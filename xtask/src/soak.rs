//! `cargo xtask soak --minutes N`: the server under mixed, hostile load for a bounded time,
//! driven from this process over loopback against the real `smollm3-web` binary (its own
//! process, so its memory and its stderr are its own).
//!
//! Clients loop until the time is up, each request one of [`Kind`]: streamed or not read to
//! the end, hung up after the first token or while the prompt is read, read slowly or not at
//! all, or malformed (a list of bad requests, each of which must get an OpenAI-shaped 4xx).
//! A 503 with `Retry-After` (queue full, waited too long) is the server saying so, not a
//! failure. Failures: a 5xx, a complete-looking request without its answer (a stream without
//! `[DONE]` or an error event, a JSON body without a message), a request that hangs, a panic
//! in the server's stderr, a slot still busy at the end, memory that grew beyond `--max-growth-mb`
//! between the end of the warm-up and the end, or a SIGTERM that does not exit 0.
//!
//! The report (requests served by kind and outcome, errors by status, p50/p99 time to first
//! token, the server's memory) is printed and written to `target/soak/report.json`.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};
use serde::Serialize;
use serde_json::{json, Value};

/// Options of `cargo xtask soak`.
#[derive(Debug, Clone, clap::Args)]
pub struct SoakArgs {
    /// How long the load runs, warm-up included.
    #[arg(long, default_value_t = 10.0)]
    pub minutes: f64,
    /// GGUF to serve [default: the tiny fixture, fixtures/gguf/smollm3-tiny-q8_0.gguf].
    #[arg(long)]
    pub model: Option<PathBuf>,
    /// `smollm3-web` to run [default: built here with `cargo build -p smollm3-web`].
    #[arg(long)]
    pub binary: Option<PathBuf>,
    /// Clients sending requests at once.
    #[arg(long, default_value_t = 12)]
    pub clients: usize,
    /// The server's `--parallel` (slots).
    #[arg(long, default_value_t = 2)]
    pub parallel: usize,
    /// The server's `--queue`.
    #[arg(long, default_value_t = 4)]
    pub queue: usize,
    /// Seed of the clients' choices.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Most the server's resident memory may grow between the end of the warm-up (a tenth of
    /// the run, at least 10 s) and the end.
    #[arg(long, default_value_t = 32.0)]
    pub max_growth_mb: f64,
}

/// What a client does with one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
enum Kind {
    /// Streamed and read to `[DONE]`.
    Stream,
    /// Not streamed: one JSON body.
    Json,
    /// Streamed; hangs up at the first token.
    HangUpAtFirstToken,
    /// A long prompt; hangs up within 60 ms of sending it (while the prompt is read).
    HangUpDuringPrompt,
    /// Streamed; waits 0.5–3 s before each of its first 5 reads.
    SlowReader,
    /// Streamed; reads nothing for 4 s, then hangs up.
    NeverReads,
    /// One of [`bad_requests`]: must get its 4xx.
    Malformed,
}

const KINDS: &[(Kind, u32)] = &[
    (Kind::Stream, 30),
    (Kind::Json, 15),
    (Kind::HangUpAtFirstToken, 10),
    (Kind::HangUpDuringPrompt, 10),
    (Kind::SlowReader, 5),
    (Kind::NeverReads, 5),
    (Kind::Malformed, 25),
];

/// How one request ended, as the client saw it.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
enum Ending {
    /// A whole answer (`[DONE]` after a finish chunk, or a JSON message).
    Answered,
    /// The expected 4xx with an OpenAI-shaped error.
    Refused { status: u16 },
    /// 503 with Retry-After: busy.
    Busy,
    /// An error event inside a 200 stream (the answer was stopped and said so).
    StreamError,
    /// We hung up, as planned.
    HungUp,
    /// Anything that must not happen.
    Failure { why: String },
}

/// A small deterministic generator (xorshift64*), one per client.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
}

fn pick_kind(rng: &mut Rng) -> Kind {
    let total: u32 = KINDS.iter().map(|(_, w)| w).sum();
    let mut roll = rng.below(u64::from(total)) as u32;
    for (kind, weight) in KINDS {
        if roll < *weight {
            return *kind;
        }
        roll -= weight;
    }
    Kind::Stream
}

/// A bad request and the status it must get.
struct BadRequest {
    what: &'static str,
    method: &'static str,
    path: &'static str,
    body: Vec<u8>,
    /// A `Content-Length` claimed instead of the body's (nothing of it is sent).
    claimed_length: Option<usize>,
    status: u16,
}

fn bad_requests() -> Vec<BadRequest> {
    let chat = "/v1/chat/completions";
    let bad = |what, body: Value, status| BadRequest {
        what,
        method: "POST",
        path: chat,
        body: body.to_string().into_bytes(),
        claimed_length: None,
        status,
    };
    let user = |content: &str| json!([{"role": "user", "content": content}]);
    let named = json!({"type": "function", "function": {"name": "nope"}});
    let schema = json!({"type": "json_schema",
        "json_schema": {"name": "x", "schema": {"type": "nonsense"}}});
    vec![
        BadRequest {
            body: b"{\"messages\": [".to_vec(),
            ..bad("not JSON", Value::Null, 400)
        },
        BadRequest {
            body: b"{\"messages\": [{\"role\": \"user\", \"content\": \"\xff\"}]}".to_vec(),
            ..bad("not UTF-8", Value::Null, 400)
        },
        bad("messages not a list", json!({"messages": "hi"}), 400),
        bad("no messages", json!({"messages": []}), 400),
        bad(
            "unknown role",
            json!({"messages": [{"role": "wizard", "content": "x"}]}),
            400,
        ),
        bad(
            "negative max_tokens",
            json!({"messages": user("x"), "max_tokens": -1}),
            400,
        ),
        bad(
            "negative temperature",
            json!({"messages": user("x"), "temperature": -1}),
            400,
        ),
        bad(
            "prompt over the context",
            json!({"messages": user(&"overflow ".repeat(1500))}),
            400,
        ),
        bad(
            "17 stop strings",
            json!({"messages": user("x"), "stop": vec!["s"; 17]}),
            400,
        ),
        bad(
            "tool_choice naming no tool",
            json!({"messages": user("x"), "tool_choice": named}),
            400,
        ),
        bad(
            "a schema that does not compile",
            json!({"messages": user("x"), "response_format": schema}),
            400,
        ),
        BadRequest {
            claimed_length: Some(9 << 20),
            ..bad("a body over the limit", Value::Null, 413)
        },
        BadRequest {
            method: "GET",
            ..bad("GET on a POST endpoint", Value::Null, 405)
        },
        BadRequest {
            method: "GET",
            path: "/v1/nothing",
            ..bad("no such endpoint", Value::Null, 404)
        },
        BadRequest {
            path: "/tokenize",
            ..bad("tokenize without content", json!({}), 400)
        },
    ]
}

/// A request's head and body, sent; the socket to read the answer from.
fn send(address: &str, method: &str, path: &str, body: &[u8]) -> Result<TcpStream> {
    send_claiming(address, method, path, body, body.len())
}

/// [`send`] with `Content-Length: length` whatever the body's length.
fn send_claiming(
    address: &str,
    method: &str,
    path: &str,
    body: &[u8],
    length: usize,
) -> Result<TcpStream> {
    let mut socket = TcpStream::connect(address).context("connecting")?;
    socket.set_read_timeout(Some(Duration::from_secs(120)))?;
    socket.set_nodelay(true)?;
    write!(
        socket,
        "{method} {path} HTTP/1.1\r\nHost: {address}\r\nConnection: close\r\n\
         Content-Type: application/json\r\nContent-Length: {length}\r\n\r\n"
    )?;
    socket.write_all(body)?;
    Ok(socket)
}

/// The status and whether `Retry-After` was among the headers.
fn read_head(reader: &mut impl BufRead) -> Result<(u16, bool)> {
    let mut status_line = String::new();
    reader.read_line(&mut status_line)?;
    let status = status_line
        .get(9..12)
        .and_then(|s| s.parse().ok())
        .with_context(|| format!("no status line: {status_line:?}"))?;
    let mut retry_after = false;
    loop {
        let mut header = String::new();
        if reader.read_line(&mut header)? == 0 {
            break;
        }
        if header.trim().is_empty() {
            break;
        }
        retry_after |= header.to_ascii_lowercase().starts_with("retry-after:");
    }
    Ok((status, retry_after))
}

/// The rest of a response as text, with chunked framing removed if there is one.
fn read_body(reader: &mut impl BufRead) -> Result<String> {
    let mut raw = Vec::new();
    reader.read_to_end(&mut raw)?;
    let text = String::from_utf8_lossy(&raw).into_owned();
    // A chunked body: size lines between the pieces; the JSON is the line that starts with {.
    Ok(match text.lines().find(|l| l.starts_with('{')) {
        Some(json) if !text.starts_with('{') => json.to_string(),
        _ => text,
    })
}

fn failure(why: impl Into<String>) -> Ending {
    Ending::Failure { why: why.into() }
}

fn chat_body(rng: &mut Rng, stream: bool, content: &str) -> String {
    json!({
        "messages": [{"role": "user", "content": content}],
        "max_tokens": 16 + rng.below(180), "temperature": 0.8, "seed": rng.below(1000),
        "reasoning_effort": "none", "stream": stream,
    })
    .to_string()
}

/// One request of `kind`; the ending and, for a stream read to its first token, the time to
/// it.
fn one_request(address: &str, kind: Kind, rng: &mut Rng) -> (Ending, Option<f64>) {
    match run_request(address, kind, rng) {
        Ok(result) => result,
        Err(e) => (failure(format!("{e:#}")), None),
    }
}

fn run_request(address: &str, kind: Kind, rng: &mut Rng) -> Result<(Ending, Option<f64>)> {
    let chat = "/v1/chat/completions";
    if kind == Kind::Malformed {
        let requests = bad_requests();
        let bad = &requests[rng.below(requests.len() as u64) as usize];
        let (what, expected) = (bad.what, bad.status);
        let socket = match bad.claimed_length {
            Some(length) => send_claiming(address, bad.method, bad.path, &[], length)?,
            None => send(address, bad.method, bad.path, &bad.body)?,
        };
        let mut reader = BufReader::new(socket);
        let (status, retry_after) = read_head(&mut reader)?;
        let text = read_body(&mut reader)?;
        if status == 503 && retry_after {
            return Ok((Ending::Busy, None));
        }
        if status != expected {
            return Ok((
                failure(format!("{what}: {status} instead of {expected}: {text}")),
                None,
            ));
        }
        let error: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
        if !error["error"]["message"].is_string() {
            return Ok((
                failure(format!("{what}: not an OpenAI error: {text}")),
                None,
            ));
        }
        return Ok((Ending::Refused { status }, None));
    }
    let stream = kind != Kind::Json;
    let prompt = if kind == Kind::HangUpDuringPrompt {
        "a long question to read before any answer ".repeat(20)
    } else {
        format!("Tell story number {}.", rng.below(1000))
    };
    let started = Instant::now();
    let socket = send(
        address,
        "POST",
        chat,
        chat_body(rng, stream, &prompt).as_bytes(),
    )?;
    if kind == Kind::HangUpDuringPrompt {
        std::thread::sleep(Duration::from_millis(rng.below(60)));
        return Ok((Ending::HungUp, None));
    }
    if kind == Kind::NeverReads {
        std::thread::sleep(Duration::from_secs(4));
        return Ok((Ending::HungUp, None));
    }
    let mut reader = BufReader::new(socket);
    let (status, retry_after) = read_head(&mut reader)?;
    if status == 503 && retry_after {
        return Ok((Ending::Busy, None));
    }
    if status != 200 {
        let text = read_body(&mut reader)?;
        return Ok((failure(format!("{kind:?}: status {status}: {text}")), None));
    }
    if !stream {
        let text = read_body(&mut reader)?;
        let answer: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
        if !answer["choices"][0]["message"]["content"].is_string()
            || !answer["choices"][0]["finish_reason"].is_string()
        {
            return Ok((
                failure(format!("a JSON answer without its message: {text}")),
                None,
            ));
        }
        return Ok((Ending::Answered, None));
    }
    let mut ttft = None;
    let mut finished = false;
    let mut slow_reads = 0;
    let mut line = String::new();
    loop {
        line.clear();
        if reader.read_line(&mut line)? == 0 {
            let why = if finished {
                "no [DONE] after the finish chunk"
            } else {
                "the stream ended without [DONE] or an error"
            };
            return Ok((failure(why), ttft));
        }
        let Some(data) = line.trim_end().strip_prefix("data: ") else {
            continue;
        };
        if data == "[DONE]" {
            return Ok(if finished {
                (Ending::Answered, ttft)
            } else {
                (failure("[DONE] without a finish chunk"), ttft)
            });
        }
        let Ok(chunk) = serde_json::from_str::<Value>(data) else {
            return Ok((
                failure(format!("a data line that is not JSON: {data}")),
                ttft,
            ));
        };
        if chunk["error"]["message"].is_string() {
            return Ok((Ending::StreamError, ttft));
        }
        let delta = &chunk["choices"][0]["delta"];
        if ttft.is_none()
            && (delta["content"].is_string() || delta["reasoning_content"].is_string())
        {
            ttft = Some(started.elapsed().as_secs_f64() * 1e3);
            if kind == Kind::HangUpAtFirstToken {
                return Ok((Ending::HungUp, ttft));
            }
        }
        finished |= chunk["choices"][0]["finish_reason"].is_string();
        if kind == Kind::SlowReader && slow_reads < 5 {
            slow_reads += 1;
            std::thread::sleep(Duration::from_millis(500 + rng.below(2500)));
        }
    }
}

#[derive(Debug, Default, Serialize)]
struct Tally {
    /// Requests by kind, then by ending.
    by_kind: BTreeMap<String, BTreeMap<String, u64>>,
    /// Refusals by status.
    refused_by_status: BTreeMap<u16, u64>,
    failures: Vec<String>,
    ttft_ms: Vec<f64>,
    requests: u64,
}

impl Tally {
    fn add(&mut self, kind: Kind, ending: &Ending, ttft: Option<f64>) {
        self.requests += 1;
        let name = match ending {
            Ending::Answered => "answered",
            Ending::Refused { status } => {
                *self.refused_by_status.entry(*status).or_default() += 1;
                "refused"
            }
            Ending::Busy => "busy",
            Ending::StreamError => "stream_error",
            Ending::HungUp => "hung_up",
            Ending::Failure { why } => {
                if self.failures.len() < 20 {
                    self.failures.push(format!("{kind:?}: {why}"));
                }
                "failure"
            }
        };
        let kind = serde_json::to_value(kind)
            .ok()
            .and_then(|v| v.as_str().map(String::from))
            .unwrap_or_default();
        *self
            .by_kind
            .entry(kind)
            .or_default()
            .entry(name.into())
            .or_default() += 1;
        if let Some(ms) = ttft {
            self.ttft_ms.push(ms);
        }
    }
}

#[derive(Debug, Serialize)]
struct Report {
    cpu: String,
    model: String,
    minutes: f64,
    clients: usize,
    parallel: usize,
    queue: usize,
    requests: u64,
    answered: u64,
    failures: Vec<String>,
    by_kind: BTreeMap<String, BTreeMap<String, u64>>,
    refused_by_status: BTreeMap<u16, u64>,
    ttft_p50_ms: f64,
    ttft_p99_ms: f64,
    rss_loaded_mb: f64,
    rss_warm_mb: f64,
    rss_end_mb: f64,
    rss_peak_mb: f64,
    panics: usize,
    exit_on_sigterm: String,
}

fn percentile(values: &[f64], p: f64) -> f64 {
    if values.is_empty() {
        return f64::NAN;
    }
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    let rank = ((p / 100.0) * (v.len() - 1) as f64).round() as usize;
    v[rank.min(v.len() - 1)]
}

/// `VmRSS` or `VmHWM` of a process, in MB (Linux).
fn memory_mb(pid: u32, field: &str) -> Result<f64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .with_context(|| format!("reading /proc/{pid}/status"))?;
    let kib: f64 = status
        .lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .with_context(|| format!("no {field} in /proc/{pid}/status"))?;
    Ok(kib / 1024.0)
}

/// The server's binary: `--binary`, or `smollm3-web` built here in the dev profile (CI passes
/// the one its test build made: this build shares few of its dependencies).
fn server_binary(args: &SoakArgs, workspace: &Path) -> Result<PathBuf> {
    if let Some(binary) = &args.binary {
        return Ok(binary.clone());
    }
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let status = Command::new(cargo)
        .current_dir(workspace)
        .args(["build", "--quiet", "-p", "smollm3-web"])
        .status()
        .context("running cargo build -p smollm3-web")?;
    ensure!(status.success(), "cargo build -p smollm3-web failed");
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace.join("target"));
    Ok(target.join("debug/smollm3-web"))
}

/// The running server; killed if the soak ends early.
struct Server {
    child: Child,
    address: String,
    stderr_path: PathBuf,
    _data_dir: tempfile::TempDir,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start_server(args: &SoakArgs, binary: &Path, model: &Path, out_dir: &Path) -> Result<Server> {
    let data_dir = tempfile::tempdir()?;
    let stderr_path = out_dir.join("server-stderr.txt");
    let stderr = std::fs::File::create(&stderr_path)?;
    let mut child = Command::new(binary)
        .arg("--model")
        .arg(model)
        .args([
            "--port",
            "0",
            "--ctx",
            "1024",
            "--stall-timeout",
            "3",
            "--queue-timeout",
            "20",
        ])
        .args([
            "--parallel",
            &args.parallel.to_string(),
            "--queue",
            &args.queue.to_string(),
        ])
        .arg("--data-dir")
        .arg(data_dir.path())
        .stdout(Stdio::piped())
        .stderr(stderr)
        .spawn()
        .with_context(|| format!("starting {}", binary.display()))?;
    let mut line = String::new();
    BufReader::new(child.stdout.take().context("no stdout")?).read_line(&mut line)?;
    let address = line
        .trim()
        .strip_prefix("smollm3-web listening on http://")
        .with_context(|| format!("unexpected first line from the server: {line:?}"))?
        .to_string();
    let server = Server {
        child,
        address,
        stderr_path,
        _data_dir: data_dir,
    };
    let start = Instant::now();
    loop {
        let socket = send(&server.address, "GET", "/health", b"")?;
        if read_head(&mut BufReader::new(socket))?.0 == 200 {
            return Ok(server);
        }
        ensure!(
            start.elapsed() < Duration::from_secs(120),
            "the model did not load in 2 minutes"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The server's `/slots`, as JSON.
fn slots(address: &str) -> Result<Value> {
    let socket = send(address, "GET", "/slots", b"")?;
    let mut reader = BufReader::new(socket);
    read_head(&mut reader)?;
    Ok(serde_json::from_str(&read_body(&mut reader)?)?)
}

pub fn run(args: SoakArgs, workspace: &Path) -> Result<()> {
    ensure!(args.minutes > 0.0, "--minutes must be more than 0");
    ensure!(args.clients > 0, "--clients must be at least 1");
    let model = args
        .model
        .clone()
        .unwrap_or_else(|| workspace.join("fixtures/gguf/smollm3-tiny-q8_0.gguf"));
    ensure!(
        model.exists(),
        "{} does not exist (run `cargo xtask gen-fixtures`)",
        model.display()
    );
    let out_dir = workspace.join("target/soak");
    std::fs::create_dir_all(&out_dir)?;
    let binary = server_binary(&args, workspace)?;
    let mut server = start_server(&args, &binary, &model, &out_dir)?;
    let pid = server.child.id();
    let rss_loaded = memory_mb(pid, "VmRSS")?;
    let total = Duration::from_secs_f64(args.minutes * 60.0);
    let warm_up = (total / 10).max(Duration::from_secs(10)).min(total / 2);
    let started = Instant::now();
    let deadline = started + total;
    eprintln!(
        "soak: {} clients on {} ({} slots, queue {}) for {:.1} min; warm-up {:.0} s",
        args.clients,
        server.address,
        args.parallel,
        args.queue,
        args.minutes,
        warm_up.as_secs_f64()
    );
    let tally = Arc::new(Mutex::new(Tally::default()));
    let clients: Vec<_> = (0..args.clients)
        .map(|i| {
            let (address, tally) = (server.address.clone(), tally.clone());
            // Odd, so never the generator's fixed point 0.
            let mut rng =
                Rng(args.seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ ((i as u64) << 17) | 1);
            std::thread::spawn(move || {
                while Instant::now() < deadline {
                    let kind = pick_kind(&mut rng);
                    let (ending, ttft) = one_request(&address, kind, &mut rng);
                    let busy = ending == Ending::Busy;
                    tally
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .add(kind, &ending, ttft);
                    if busy {
                        // As a client honouring Retry-After would, a little sooner.
                        std::thread::sleep(Duration::from_millis(200 + rng.below(300)));
                    }
                }
            })
        })
        .collect();
    std::thread::sleep(warm_up);
    let rss_warm = memory_mb(pid, "VmRSS")?;
    let mut last_progress = Instant::now();
    while Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(500));
        if server.child.try_wait()?.is_some() {
            bail!(
                "the server exited during the soak; its stderr is in {}",
                server.stderr_path.display()
            );
        }
        if last_progress.elapsed() >= Duration::from_secs(60) {
            last_progress = Instant::now();
            let t = tally.lock().unwrap_or_else(|e| e.into_inner());
            eprintln!(
                "  {:.0} s: {} requests, {} failures, RSS {:.1} MB",
                started.elapsed().as_secs_f64(),
                t.requests,
                t.failures.len(),
                memory_mb(pid, "VmRSS").unwrap_or(f64::NAN)
            );
        }
    }
    for client in clients {
        let _ = client.join();
    }
    let mut tally = std::mem::take(&mut *tally.lock().unwrap_or_else(|e| e.into_inner()));
    // Every slot idle again once the last hung-up requests are noticed.
    let settle = Instant::now();
    loop {
        let slots = slots(&server.address)?;
        let busy = slots.as_array().map_or(0, |s| {
            s.iter().filter(|s| s["is_processing"] == true).count()
        });
        if busy == 0 {
            break;
        }
        if settle.elapsed() > Duration::from_secs(30) {
            tally.failures.push(format!(
                "{busy} slot(s) still busy 30 s after the last request: {slots}"
            ));
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let rss_end = memory_mb(pid, "VmRSS")?;
    let rss_peak = memory_mb(pid, "VmHWM")?;
    let _ = Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status();
    let exit = {
        let stop = Instant::now();
        loop {
            if let Some(status) = server.child.try_wait()? {
                break status.to_string();
            }
            if stop.elapsed() > Duration::from_secs(30) {
                break "still running 30 s after SIGTERM".to_string();
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    };
    if exit != "exit status: 0" {
        tally.failures.push(format!("SIGTERM: {exit}"));
    }
    let stderr = std::fs::read_to_string(&server.stderr_path).unwrap_or_default();
    let panics = stderr.matches("panicked").count();
    if panics > 0 {
        tally.failures.push(format!(
            "{panics} panic(s) in the server's stderr ({})",
            server.stderr_path.display()
        ));
    }
    if rss_end - rss_warm > args.max_growth_mb {
        tally.failures.push(format!(
            "memory grew {:.1} MB after the warm-up ({rss_warm:.1} -> {rss_end:.1} MB), more than --max-growth-mb {}",
            rss_end - rss_warm,
            args.max_growth_mb
        ));
    }
    let answered = tally
        .by_kind
        .values()
        .filter_map(|e| e.get("answered"))
        .sum();
    let report = Report {
        cpu: crate::bench::cpu_model_name(),
        model: model.display().to_string(),
        minutes: started.elapsed().as_secs_f64() / 60.0,
        clients: args.clients,
        parallel: args.parallel,
        queue: args.queue,
        requests: tally.requests,
        answered,
        failures: tally.failures.clone(),
        by_kind: tally.by_kind.clone(),
        refused_by_status: tally.refused_by_status.clone(),
        ttft_p50_ms: percentile(&tally.ttft_ms, 50.0),
        ttft_p99_ms: percentile(&tally.ttft_ms, 99.0),
        rss_loaded_mb: rss_loaded,
        rss_warm_mb: rss_warm,
        rss_end_mb: rss_end,
        rss_peak_mb: rss_peak,
        panics,
        exit_on_sigterm: exit,
    };
    let path = out_dir.join("report.json");
    std::fs::write(&path, serde_json::to_string_pretty(&report)?)?;
    print_report(&report);
    println!("report: {}", path.display());
    drop(server);
    if !report.failures.is_empty() {
        bail!("the soak failed: {}", report.failures.join("; "));
    }
    Ok(())
}

fn print_report(r: &Report) {
    println!(
        "soak on {} ({:.1} min, {} clients, {} slots, queue {}): {} requests, {} answered, {} failures",
        r.cpu,
        r.minutes,
        r.clients,
        r.parallel,
        r.queue,
        r.requests,
        r.answered,
        r.failures.len()
    );
    for (kind, endings) in &r.by_kind {
        let endings: Vec<String> = endings.iter().map(|(e, n)| format!("{e} {n}")).collect();
        println!("  {kind:<24} {}", endings.join(", "));
    }
    let refused: Vec<String> = r
        .refused_by_status
        .iter()
        .map(|(s, n)| format!("{s}: {n}"))
        .collect();
    println!("  refused by status: {}", refused.join(", "));
    println!(
        "  time to first token: p50 {:.0} ms, p99 {:.0} ms",
        r.ttft_p50_ms, r.ttft_p99_ms
    );
    println!(
        "  server RSS: loaded {:.1} MB, after warm-up {:.1} MB, end {:.1} MB, peak {:.1} MB",
        r.rss_loaded_mb, r.rss_warm_mb, r.rss_end_mb, r.rss_peak_mb
    );
    println!("  panics: {}; SIGTERM: {}", r.panics, r.exit_on_sigterm);
    for failure in &r.failures {
        println!("  FAILURE {failure}");
    }
}
