//! `cargo xtask bench-server`: the server under concurrent clients, in-process. One engine and
//! `max(--clients)` sessions behind `smollm3_web::router`, served on a loopback port; for each
//! client count, that many streaming clients (plain HTTP/1.1 over TCP, as any client) ask at
//! once. Per stream: time to first token and tok/s as the client sees them, beside the decode
//! speed the engine reports for the same request (`timings.predicted_per_second`). The
//! difference per token is what HTTP, JSON and SSE cost; it must stay far below a token's
//! time. Medians over the streams and repetitions; the report also goes to
//! `target/bench/server.json`.
//!
//! `--llama-server PATH` runs the same rounds against llama.cpp's server instead, so both
//! engines are measured the same way: started here on a free loopback port with `-np` = the
//! most clients and the same threads, killed at the end; the same prompt rendered by its
//! `/apply-template` from the file's template and streamed from its native `/completion` (see
//! `stream` for why). The report then goes to `target/bench/server-llama.json`.

use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use serde::Serialize;
use serde_json::{json, Value};
use smollm3_gen::{Engine, SamplingParams};
use smollm3_model::LoadOptions;
use smollm3_web::{router, AppState, Scheduler, SchedulerOptions};

use crate::bench::Stat;

/// Options of `cargo xtask bench-server`.
#[derive(Debug, Clone, clap::Args)]
pub struct ServerBenchArgs {
    /// GGUF to serve [default: the synthetic SmolLM3-3B Q4_K_M file in target/bench/, as
    /// `cargo xtask bench` makes it].
    #[arg(long)]
    pub model: Option<PathBuf>,
    /// Concurrent client counts to measure, comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "1,2,4")]
    pub clients: Vec<usize>,
    /// Tokens each stream generates.
    #[arg(long, default_value_t = 32)]
    pub tokens: usize,
    /// Repetitions of each client count.
    #[arg(long, default_value_t = 2)]
    pub reps: usize,
    /// Compute threads (RAYON_NUM_THREADS / CANDLE_NUM_THREADS) [default: all cores].
    #[arg(long)]
    pub threads: Option<usize>,
    /// Each slot's forward passes on their own (as `smollm3-web --no-cont-batching`)
    /// instead of batched with the other slots'.
    #[arg(long)]
    pub no_batching: bool,
    /// Measure llama.cpp's `llama-server` at this path instead of ours, the same way
    /// (continuous batching, one slot per client, 1024 tokens of context each).
    #[arg(long, value_name = "PATH")]
    pub llama_server: Option<PathBuf>,
    /// Print the JSON report instead of the table.
    #[arg(long)]
    pub json: bool,
}

/// What one stream saw.
#[derive(Debug, Clone, Serialize)]
struct StreamReport {
    ttft_ms: f64,
    /// Tokens after the first, per second between the first and the last token received.
    client_tokens_per_second: f64,
    /// The engine's own decode speed for the request (`timings.predicted_per_second`).
    engine_tokens_per_second: f64,
    tokens: usize,
}

#[derive(Debug, Serialize)]
struct Row {
    clients: usize,
    ttft_ms: Stat,
    per_stream_tokens_per_second: Stat,
    engine_tokens_per_second: Stat,
    /// Sum over the streams of one round, tokens per wall-clock second.
    total_tokens_per_second: Stat,
    /// (1 / client tok/s - 1 / engine tok/s) per token, in milliseconds.
    http_cost_per_token_ms: Stat,
}

#[derive(Debug, Serialize)]
struct Report {
    /// `smollm3-web` (in-process) or `llama-server`.
    engine: String,
    model: String,
    cpu: String,
    threads: usize,
    tokens: usize,
    /// Slots' passes batched (`Engine::batched_sessions`), as `smollm3-web` runs by default.
    batching: bool,
    rows: Vec<Row>,
}

pub fn run(args: ServerBenchArgs, workspace: &Path) -> Result<()> {
    if args.clients.is_empty() || args.clients.contains(&0) {
        bail!("--clients: give one or more counts of at least 1, e.g. 1,2,4");
    }
    let threads = args.threads.unwrap_or_else(|| {
        std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get)
    });
    // The engine reads these when its thread pool starts (before the model loads).
    std::env::set_var("RAYON_NUM_THREADS", threads.to_string());
    std::env::set_var("CANDLE_NUM_THREADS", threads.to_string());
    let bench_dir = workspace.join("target/bench");
    let model = crate::bench::model_or_synthetic(args.model.as_deref(), workspace)?;
    let slots = args.clients.iter().copied().max().unwrap_or(1);
    let context = 1024;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()?;
    // Kept alive to the end: dropping it stops llama-server.
    let mut llama = None;
    let address = match &args.llama_server {
        Some(binary) => {
            let server = LlamaServer::start(binary, &model, slots, context, threads, &bench_dir)?;
            let address = server.address.clone();
            llama = Some(server);
            address
        }
        None => {
            eprintln!("loading {}", model.display());
            let engine = Engine::load(&model, &LoadOptions::default())
                .with_context(|| format!("loading {}", model.display()))?;
            let sessions = if args.no_batching {
                (0..slots)
                    .map(|_| engine.session(context))
                    .collect::<Result<Vec<_>, _>>()?
            } else {
                engine.batched_sessions(slots, context)?.1
            };
            let scheduler = Scheduler::new(sessions, SchedulerOptions::default())?;
            let state = Arc::new(
                AppState::new("bench", SamplingParams::default()).with_scheduler(scheduler),
            );
            let listener = runtime.block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))?;
            let address = listener.local_addr()?.to_string();
            runtime.spawn(async move {
                let _ = axum::serve(listener, router(state)).await;
            });
            address
        }
    };

    // One warm-up stream per slot: first-call costs and cache growth are not measured.
    let llama_mode = llama.is_some();
    round(&address, slots, args.tokens, 1000, llama_mode)?;
    let mut rows = Vec::new();
    for (i, &clients) in args.clients.iter().enumerate() {
        let mut streams = Vec::new();
        let mut totals = Vec::new();
        for rep in 0..args.reps {
            // A different prompt each round, so no stream finds its prompt cached.
            let seed = 2000 + 100 * i + 10 * rep;
            let started = Instant::now();
            let round_streams = round(&address, clients, args.tokens, seed, llama_mode)?;
            let wall = started.elapsed().as_secs_f64();
            let tokens: usize = round_streams.iter().map(|s| s.tokens).sum();
            totals.push(tokens as f64 / wall);
            streams.extend(round_streams);
        }
        rows.push(Row {
            clients,
            ttft_ms: Stat::of(streams.iter().map(|s| s.ttft_ms)),
            per_stream_tokens_per_second: Stat::of(
                streams.iter().map(|s| s.client_tokens_per_second),
            ),
            engine_tokens_per_second: Stat::of(streams.iter().map(|s| s.engine_tokens_per_second)),
            total_tokens_per_second: Stat::of(totals),
            http_cost_per_token_ms: Stat::of(
                streams
                    .iter()
                    .map(|s| 1e3 / s.client_tokens_per_second - 1e3 / s.engine_tokens_per_second),
            ),
        });
    }
    let engine = if llama.is_some() {
        "llama-server"
    } else {
        "smollm3-web"
    };
    let report = Report {
        engine: engine.to_string(),
        model: model.display().to_string(),
        cpu: crate::bench::cpu_model_name(),
        threads,
        tokens: args.tokens,
        batching: !args.no_batching,
        rows,
    };
    drop(llama);
    std::fs::create_dir_all(&bench_dir)?;
    let json = serde_json::to_string_pretty(&report)?;
    let name = if args.llama_server.is_some() {
        "server-llama.json"
    } else {
        "server.json"
    };
    std::fs::write(bench_dir.join(name), &json)?;
    if args.json {
        println!("{json}");
    } else {
        print_table(&report);
    }
    runtime.shutdown_timeout(Duration::from_secs(5));
    Ok(())
}

/// `clients` streams started together; each one's report.
fn round(
    address: &str,
    clients: usize,
    tokens: usize,
    seed: usize,
    llama: bool,
) -> Result<Vec<StreamReport>> {
    let barrier = Arc::new(Barrier::new(clients));
    let handles: Vec<_> = (0..clients)
        .map(|i| {
            let (address, barrier) = (address.to_string(), barrier.clone());
            std::thread::spawn(move || {
                barrier.wait();
                stream(&address, tokens, seed + i, llama)
            })
        })
        .collect();
    handles
        .into_iter()
        .map(|h| {
            h.join()
                .map_err(|_| anyhow::anyhow!("a client thread panicked"))?
        })
        .collect()
}

/// One streamed request of exactly `tokens` tokens (no end-of-turn: `ignore_eos` is not
/// offered, so the prompt asks for a long answer and max_tokens cuts it).
fn stream(address: &str, tokens: usize, seed: usize, llama: bool) -> Result<StreamReport> {
    let messages = json!([{"role": "user", "content":
        format!("Request {seed}: write a long story about a lighthouse keeper.")}]);
    let (path, body) = if llama {
        // The same prompt through the file's template (`/apply-template`), then to the
        // native `/completion`, held to printable ASCII by a grammar: llama-server parses
        // every output (for SmolLM3's reasoning and tool calls, or as UTF-8 content), and
        // random weights' byte tokens (half a character) fail that with a 500. The grammar
        // measured free (one stream: 12.9 / 13.6 tok/s without, 12.8 / 13.6 with).
        let rendered = post_json(
            address,
            "/apply-template",
            &json!({"messages": messages, "chat_template_kwargs": {"enable_thinking": false}}),
        )?;
        let Some(prompt) = rendered["prompt"].as_str() else {
            bail!("llama-server's /apply-template gave no prompt: {rendered}");
        };
        let body = json!({
            "prompt": prompt, "n_predict": tokens, "temperature": 1.0, "seed": seed,
            "stream": true, "grammar": "root ::= [ -~]*",
        });
        ("/completion", body)
    } else {
        let body = json!({
            "messages": messages,
            "max_tokens": tokens, "temperature": 1.0, "seed": seed, "reasoning_effort": "none",
            "stream": true, "stream_options": {"include_usage": true},
        });
        ("/v1/chat/completions", body)
    };
    let started = Instant::now();
    let socket = post(address, path, &body, Duration::from_secs(600))?;
    let (mut first, mut last) = (None, None);
    let (mut engine_speed, mut generated) = (0.0, 0);
    for line in BufReader::new(socket).lines() {
        let line = line?;
        let Some(data) = line.strip_prefix("data: ") else {
            continue;
        };
        if data == "[DONE]" {
            break;
        }
        let chunk: Value = serde_json::from_str(data)?;
        if let Some(error) = chunk.get("error") {
            bail!("the server answered with an error: {error}");
        }
        let choice = &chunk["choices"][0];
        let delta = &choice["delta"];
        let text = delta["content"].is_string()
            || delta["reasoning_content"].is_string()
            || chunk["stop"] == json!(false);
        if text {
            let now = Instant::now();
            first.get_or_insert(now);
            last = Some(now);
        }
        if let Some(speed) = chunk["timings"]["predicted_per_second"].as_f64() {
            engine_speed = speed;
        }
        if let Some(n) = chunk["usage"]["completion_tokens"]
            .as_u64()
            .or(chunk["tokens_predicted"].as_u64())
        {
            generated = n as usize;
        }
    }
    let (Some(first), Some(last)) = (first, last) else {
        bail!("a stream ended without text");
    };
    let decode_s = last.duration_since(first).as_secs_f64();
    let client_speed = generated.saturating_sub(1) as f64 / decode_s.max(1e-9);
    Ok(StreamReport {
        ttft_ms: first.duration_since(started).as_secs_f64() * 1e3,
        client_tokens_per_second: client_speed,
        engine_tokens_per_second: engine_speed,
        tokens: generated,
    })
}

/// `body` POSTed to `path` (one request, `Connection: close`); the socket to read the answer
/// from.
fn post(address: &str, path: &str, body: &Value, timeout: Duration) -> Result<TcpStream> {
    let body = body.to_string();
    let mut socket = TcpStream::connect(address)?;
    socket.set_read_timeout(Some(timeout))?;
    write!(
        socket,
        "POST {path} HTTP/1.1\r\nHost: {address}\r\nConnection: close\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )?;
    Ok(socket)
}

/// A non-streaming POST of `body` to `path`; the answer's JSON.
fn post_json(address: &str, path: &str, body: &Value) -> Result<Value> {
    let mut socket = post(address, path, body, Duration::from_secs(60))?;
    let mut answer = String::new();
    std::io::Read::read_to_string(&mut socket, &mut answer)?;
    let Some((head, json)) = answer.split_once("\r\n\r\n") else {
        bail!("{path}: no HTTP answer");
    };
    if !head.starts_with("HTTP/1.1 200") {
        bail!("{path}: {}", head.lines().next().unwrap_or_default());
    }
    serde_json::from_str(json).with_context(|| format!("{path}: not JSON"))
}

fn print_table(r: &Report) {
    println!(
        "{}, model {}\nCPU {}, {} threads, {} tokens a stream, batching {} (medians, [min..max])",
        r.engine,
        r.model,
        r.cpu,
        r.threads,
        r.tokens,
        if r.batching { "on" } else { "off" }
    );
    println!(
        "{:>7} {:>18} {:>22} {:>18} {:>18} {:>16}",
        "clients", "TTFT ms", "per-stream tok/s", "engine tok/s", "total tok/s", "HTTP ms/token"
    );
    for row in &r.rows {
        println!(
            "{:>7} {:>18} {:>22} {:>18} {:>18} {:>16}",
            row.clients,
            row.ttft_ms.to_string(),
            row.per_stream_tokens_per_second.to_string(),
            row.engine_tokens_per_second.to_string(),
            row.total_tokens_per_second.to_string(),
            format!("{:.3}", row.http_cost_per_token_ms.median),
        );
    }
}

/// llama.cpp's server as a child process, stopped (killed) when dropped.
struct LlamaServer {
    child: std::process::Child,
    address: String,
}

impl LlamaServer {
    /// Starts `binary` on a free loopback port with `slots` slots of `context` tokens and
    /// waits until it answers `/health` (the model loaded).
    fn start(
        binary: &Path,
        model: &Path,
        slots: usize,
        context: usize,
        threads: usize,
        log_dir: &Path,
    ) -> Result<Self> {
        // A free port: the OS picks one for a listener we close at once (llama-server has
        // no way to report a port 0 choice).
        let port = std::net::TcpListener::bind("127.0.0.1:0")?
            .local_addr()?
            .port();
        std::fs::create_dir_all(log_dir)?;
        let log_path = log_dir.join("llama-server.log");
        let log = std::fs::File::create(&log_path)?;
        eprintln!(
            "starting {} on port {port} (log: {})",
            binary.display(),
            log_path.display()
        );
        let child = std::process::Command::new(binary)
            .args(["-m", &model.display().to_string()])
            .args(["-np", &slots.to_string()])
            .args(["-c", &(slots * context).to_string()])
            .args(["-t", &threads.to_string(), "-tb", &threads.to_string()])
            .args(["--host", "127.0.0.1", "--port", &port.to_string()])
            .args(["--jinja", "--skip-chat-parsing"])
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .with_context(|| format!("starting {}", binary.display()))?;
        let mut server = LlamaServer {
            child,
            address: format!("127.0.0.1:{port}"),
        };
        let started = Instant::now();
        while !server.healthy() {
            if let Some(status) = server.child.try_wait()? {
                bail!(
                    "llama-server exited ({status}) before answering; see {}",
                    log_path.display()
                );
            }
            if started.elapsed() > Duration::from_secs(300) {
                bail!(
                    "llama-server did not answer /health within 300 s; see {}",
                    log_path.display()
                );
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        Ok(server)
    }

    fn healthy(&self) -> bool {
        let Ok(mut socket) = TcpStream::connect(&self.address) else {
            return false;
        };
        let request = format!(
            "GET /health HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n\r\n",
            self.address
        );
        if socket.write_all(request.as_bytes()).is_err() {
            return false;
        }
        let mut status = String::new();
        BufReader::new(socket).read_line(&mut status).is_ok() && status.contains(" 200 ")
    }
}

impl Drop for LlamaServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
