//! `smollm3-web`: the OpenAI-compatible server. Binds first (so `/health` answers 503 while
//! the model loads), loads the model on a blocking thread, then serves until Ctrl+C or
//! SIGTERM: it stops accepting, cancels what is running, and exits 0.

use std::net::IpAddr;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::{bail, Context, Result};
use clap::Parser;
use smollm3_flags::{error_line, ModelArgs, SamplingArgs};
use smollm3_gen::{Backend, ModelBackend, ScriptedBackend, Session};
use smollm3_web::{router, AppState, Scheduler, SchedulerOptions, ServeOptions};

#[derive(Parser)]
#[command(
    name = "smollm3-web",
    version,
    about = "Serve SmolLM3 over an OpenAI-compatible HTTP API",
    after_help = "Examples:
  smollm3-web --model SmolLM3-3B-Q4_K_M.gguf
  smollm3-web --port 0 --parallel 1           # any free port; the address is printed
  smollm3-web --host 0.0.0.0 --api-key \"$KEY\"  # reachable from other machines
Then: curl http://127.0.0.1:8080/v1/chat/completions -H 'Content-Type: application/json' \\
        -d '{\"messages\": [{\"role\": \"user\", \"content\": \"Hi\"}]}'"
)]
struct Args {
    #[command(flatten)]
    model: ModelArgs,
    /// Default sampling settings; each request's fields of the same names override them.
    #[command(flatten)]
    sampling: SamplingArgs,
    /// Address to listen on (127.0.0.1: this machine only).
    #[arg(long, default_value = "127.0.0.1")]
    host: IpAddr,
    /// Port to listen on; 0 takes a free one (the address is printed).
    #[arg(long, default_value_t = 8080)]
    port: u16,
    /// Conversations generated at once, each with its own KV cache of up to --ctx tokens.
    #[arg(long, value_name = "N", default_value_t = 2)]
    parallel: usize,
    /// Run each slot's forward passes on their own instead of in one batched pass with the
    /// other slots' (continuous batching is on by default: with 4 answers at once the total
    /// speed is about twice one answer's).
    #[arg(long)]
    no_cont_batching: bool,
    /// Decode without prompt-lookup drafts (speculative decoding that guesses the next tokens
    /// from the prompt and the answer so far: the same answer, sooner when it repeats text;
    /// a request's `prompt_lookup: false` turns it off for that request).
    #[arg(long)]
    no_prompt_lookup: bool,
    /// Requests that may wait for a free slot; more get a 503 with Retry-After.
    #[arg(long, value_name = "N", default_value_t = 16)]
    queue: usize,
    /// Longest a request may wait for a slot, in seconds (0: no limit); then it gets a 503
    /// with Retry-After.
    #[arg(long, value_name = "SECS", default_value_t = 600)]
    queue_timeout: u64,
    /// Seconds a client may leave its answer unread (connection open, nothing read, a few
    /// hundred tokens waiting) before its generation is stopped and its slot freed.
    #[arg(long, value_name = "SECS", default_value_t = 60,
          value_parser = clap::value_parser!(u64).range(1..))]
    stall_timeout: u64,
    /// HTTP connections open at once (1 to 1000000); more wait to be taken until one
    /// closes (an idle one closes after 30 s).
    #[arg(long, value_name = "N", default_value_t = 512,
          value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    max_connections: u32,
    /// Require `Authorization: Bearer KEY` on every endpoint but /health.
    #[arg(
        long,
        value_name = "KEY",
        env = "SMOLLM3_API_KEY",
        hide_env_values = true
    )]
    api_key: Option<String>,
    /// The model's name in /v1/models and responses (default: --model as given).
    #[arg(long, value_name = "NAME")]
    alias: Option<String>,
    /// Let web pages from ORIGIN (e.g. http://localhost:3000, or * for any) call the API from
    /// a browser; repeat for more. Without it browsers keep other sites' pages out.
    #[arg(long, value_name = "ORIGIN")]
    cors: Vec<String>,
    /// Where the web chat keeps its conversations [default: $XDG_DATA_HOME/smollm3, else
    /// ~/.local/share/smollm3].
    #[arg(long, value_name = "DIR")]
    data_dir: Option<std::path::PathBuf>,
    /// Let the web chat's tools read the text files under DIR (read-only; the calculator and
    /// the time are always there). A chat switches tools on in its settings.
    #[arg(long, value_name = "DIR")]
    files_root: Option<std::path::PathBuf>,
    /// Testing: a JSON array of reply texts played back instead of running the model (the
    /// model file still provides the tokenizer and template), as `smollm3 run --replay`.
    #[arg(long, value_name = "replies.json", hide = true)]
    replay: Option<std::path::PathBuf>,
    /// Testing: with --replay, wait this long per token, as a real model would.
    #[arg(long, value_name = "MS", hide = true, default_value_t = 0)]
    replay_token_ms: u64,
    /// Testing: with --replay, read the prompt at this many milliseconds a token (a cancel
    /// is seen between tokens, as the model sees it between layers).
    #[arg(long, value_name = "MS", hide = true, default_value_t = 0)]
    replay_prefill_ms: u64,
}

fn main() -> ExitCode {
    smollm3_flags::explain_bus_errors();
    smollm3_model::candle_pool::shorten_idle_spin();
    smollm3_model::allocator::keep_freed_tensor_memory();
    let args = Args::parse();
    match run(args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {}", error_line(&e));
            ExitCode::FAILURE
        }
    }
}

fn run(mut args: Args) -> Result<()> {
    if args.parallel == 0 {
        bail!("--parallel must be at least 1");
    }
    let defaults = args.sampling.params();
    defaults.validate()?;
    for origin in &mut args.cors {
        // Browsers send `Origin` without a trailing slash; one copied from the address bar
        // has it.
        let trimmed = origin.trim_end_matches('/');
        let valid = origin == "*"
            || (trimmed.starts_with("http://") || trimmed.starts_with("https://"))
                && !trimmed.contains(char::is_whitespace)
                && axum::http::HeaderValue::from_str(trimmed).is_ok();
        if !valid {
            bail!("--cors {origin:?}: expected an origin such as http://localhost:3000, or *");
        }
        *origin = trimmed.to_string();
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    if args.replay.is_some() {
        runtime.block_on(serve(args, defaults, load_replay))
    } else {
        runtime.block_on(serve(args, defaults, load))
    }
}

async fn serve<B: Backend + Send + 'static>(
    args: Args,
    defaults: smollm3_gen::SamplingParams,
    load: fn(&Args) -> Result<Loaded<B>>,
) -> Result<()> {
    let listener = tokio::net::TcpListener::bind((args.host, args.port))
        .await
        .with_context(|| format!("cannot listen on {}:{}", args.host, args.port))?;
    let address = listener.local_addr()?;
    println!("smollm3-web listening on http://{address}");
    eprintln!("web chat: http://{address}/");
    if !args.host.is_loopback() && args.api_key.is_none() {
        eprintln!(
            "warning: listening on {} without --api-key: anyone who can reach this machine can \
             use the model",
            args.host
        );
    }
    let name = args
        .alias
        .clone()
        .or_else(|| args.model.source.model.clone())
        .unwrap_or_else(|| "SmolLM3-3B".to_string());
    let data_dir = args
        .data_dir
        .clone()
        .or_else(smollm3_web::chat::Store::default_dir)
        .context("no data directory: set --data-dir (HOME is not set)")?;
    let store = smollm3_web::chat::Store::open(&data_dir)?;
    let mut state = AppState::new(name, defaults);
    let mut chat = smollm3_web::chat::ChatState::new(store);
    if let Some(root) = &args.files_root {
        let names = ["calculator", "time", "files"].map(String::from);
        let mut tools = smollm3_tools::Registry::new();
        for tool in smollm3_tools::builtins::by_names(&names, Some(root))
            .with_context(|| format!("--files-root {}", root.display()))?
        {
            tools.register(tool)?;
        }
        chat.tools = Arc::new(tools);
    }
    state.chat = chat;
    state.api_key = args.api_key.clone();
    state.prompt_lookup = !args.no_prompt_lookup;
    state.cors_origins = args.cors.clone();
    let state = Arc::new(state);
    let state_for_router = state.clone();
    let max_connections = args.max_connections;

    // Load on a blocking thread while /health answers 503; a failure ends the server.
    let (failed_tx, failed_rx) = tokio::sync::oneshot::channel::<anyhow::Error>();
    let loading = state.clone();
    tokio::task::spawn_blocking(move || match load(&args) {
        Ok((scheduler, file)) => {
            loading.set_model_file(file);
            loading.set_scheduler(scheduler);
            eprintln!("model loaded; serving");
        }
        Err(e) => {
            let _ = failed_tx.send(e);
        }
    });
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<Option<anyhow::Error>>();
    tokio::spawn(async move {
        let reason = tokio::select! {
            () = shutdown_signal() => None,
            Ok(e) = failed_rx => Some(e),
        };
        let _ = stop_tx.send(reason);
    });
    let (reason_tx, reason_rx) = tokio::sync::oneshot::channel();
    let shutdown = async move {
        let reason = stop_rx.await.ok().flatten();
        // Running generations stop at their next token, so their streams end.
        state.close(true);
        let _ = reason_tx.send(reason);
    };
    smollm3_web::serve(
        listener,
        router(state_for_router),
        shutdown,
        ServeOptions {
            max_connections: max_connections as usize,
            ..ServeOptions::default()
        },
    )
    .await;
    match reason_rx.await.ok().flatten() {
        Some(e) => Err(e),
        None => Ok(()),
    }
}

/// A loaded model's slots, and its file as it was loaded (checked before each request).
type Loaded<B> = (Scheduler<B>, smollm3_model::FileIdentity);

/// Resolves and loads the model, and starts one session per `--parallel` slot.
fn load(args: &Args) -> Result<Loaded<ModelBackend>> {
    let engine = args.model.load_engine()?;
    let context = args
        .model
        .ctx
        .unwrap_or(engine.model.config().max_context());
    // One slot alone keeps the unbatched path, whose prompt can be cancelled layer by layer.
    let sessions = if args.no_cont_batching || args.parallel == 1 {
        (0..args.parallel)
            .map(|_| engine.session(context))
            .collect::<Result<Vec<_>, _>>()?
    } else {
        engine.batched_sessions(args.parallel, context)?.1
    };
    let scheduler = Scheduler::new(sessions, scheduler_options(args))?;
    Ok((scheduler, engine.file().clone()))
}

/// The queue's bounds and the stalled-client timeout from the flags.
fn scheduler_options(args: &Args) -> SchedulerOptions {
    SchedulerOptions {
        queue_limit: args.queue,
        queue_timeout: (args.queue_timeout > 0)
            .then(|| std::time::Duration::from_secs(args.queue_timeout)),
        stall_timeout: std::time::Duration::from_secs(args.stall_timeout),
        ..SchedulerOptions::default()
    }
}

/// `--replay`: scripted sessions that play back the given replies, paced by
/// `--replay-token-ms` (for browser tests, which need an answer that takes its time).
fn load_replay(args: &Args) -> Result<Loaded<ScriptedBackend>> {
    let path = args.replay.as_deref().context("--replay is not set")?;
    let text =
        std::fs::read_to_string(path).with_context(|| format!("--replay {}", path.display()))?;
    let replies: Vec<String> = serde_json::from_str(&text).with_context(|| {
        format!(
            "--replay {}: expected a JSON array of strings",
            path.display()
        )
    })?;
    let replies: Vec<&str> = replies.iter().map(String::as_str).collect();
    let engine = args.model.load_engine()?;
    let context = args.model.ctx.unwrap_or(65_536);
    let sessions = (0..args.parallel)
        .map(|_| -> Result<Session<ScriptedBackend>> {
            let backend = ScriptedBackend::from_texts(&engine.tokenizer, context, &replies)?;
            let paced = backend.paced(
                std::time::Duration::from_millis(args.replay_token_ms),
                std::time::Duration::from_millis(args.replay_prefill_ms),
            );
            Ok(
                Session::with_backend(paced, engine.tokenizer.clone(), engine.template.clone())
                    .with_grammars(engine.grammars()),
            )
        })
        .collect::<Result<Vec<_>>>()?;
    let scheduler = Scheduler::new(sessions, scheduler_options(args))?;
    Ok((scheduler, engine.file().clone()))
}

/// Ctrl+C, or SIGTERM (what Kubernetes and systemd send).
async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {}
        () = terminate => {}
    }
}
