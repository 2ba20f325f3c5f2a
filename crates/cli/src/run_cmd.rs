//! `smollm3 run`: one question, the answer streamed as it is generated.

use std::io::{IsTerminal, Read, Write};

use anyhow::{bail, Context, Result};
use clap::Args;
use smollm3_chat::ChatRequest;
use smollm3_gen::{
    Backend, CancelHandle, Completion, Engine, Event, FinishReason, GenerateRequest, Prompt,
    SamplingParams, ScriptedBackend, Session,
};
use smollm3_tools::agent::{run_agent, AgentEvent, AgentFinish, AgentOptions};
use smollm3_tools::{builtins, ParsedCall, Registry, ToolDefinition, ToolFormat};

use crate::model_args::ModelArgs;

#[derive(Args, Debug)]
#[command(after_help = "Examples:
  smollm3 run --model SmolLM3-3B-Q4_K_M.gguf \"Why is the sky blue?\"
  smollm3 run --model M.gguf --no-think --temperature 0 \"2+2?\"
  echo \"Summarise: ...\" | smollm3 run --model M.gguf -
  smollm3 run --model M.gguf --json \"Hi\"     # one JSON event per line")]
pub struct RunArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    /// The question; `-` reads it from stdin.
    #[arg(value_name = "PROMPT")]
    pub prompt: String,
    #[command(flatten)]
    pub answer: AnswerArgs,
    /// Treat PROMPT as raw text to continue, without the chat template.
    #[arg(long)]
    pub raw: bool,
    #[command(flatten)]
    pub tool_args: ToolArgs,
    /// Print one JSON event per line instead of text.
    #[arg(long)]
    pub json: bool,
    /// Testing: a JSON array of reply texts played back instead of running the model (the
    /// model file still provides the tokenizer and template).
    #[arg(long, value_name = "replies.json", hide = true)]
    pub replay: Option<std::path::PathBuf>,
    /// Print token counts and speeds at the end (stderr).
    #[arg(long, short = 'v')]
    pub verbose: bool,
}

/// How answers are generated and shown, shared by `run` and `chat`.
#[derive(Args, Debug)]
pub struct AnswerArgs {
    /// A system message.
    #[arg(long, value_name = "TEXT")]
    pub system: Option<String>,
    /// Answer without thinking: the prompt gets an empty think block (in chat, /think and
    /// /no_think switch it).
    #[arg(long)]
    pub no_think: bool,
    /// Don't show the reasoning (it is still generated unless --no-think; on a terminal a
    /// "thought for N s" line stands for it).
    #[arg(long)]
    pub hide_thinking: bool,
    /// Most reasoning tokens before `</think>` is forced (0 = no thinking).
    #[arg(long, value_name = "N")]
    pub reasoning_budget: Option<usize>,
    #[command(flatten)]
    pub sampling: SamplingArgs,
    /// Most tokens per answer (default: until the model stops or the context is full).
    #[arg(long, short = 'n', value_name = "N")]
    pub max_tokens: Option<usize>,
    /// Stop when this text is generated (not printed); repeatable.
    #[arg(long, value_name = "TEXT")]
    pub stop: Vec<String>,
}

/// Tool flags, shared by `run` and `chat`.
#[derive(Args, Debug)]
pub struct ToolArgs {
    /// Tools the model may call, OpenAI-style JSON (a call to one of these ends the run and
    /// is printed for you to handle; see --builtin-tools for tools that run here).
    #[arg(long, value_name = "tools.json")]
    pub tools: Option<std::path::PathBuf>,
    /// Built-in tools that run here, comma-separated: calculator, time, files.
    #[arg(long, value_name = "LIST", value_delimiter = ',')]
    pub builtin_tools: Vec<String>,
    /// Directory the `files` tool may read (read-only; no `..`, no symlinks).
    #[arg(long, value_name = "DIR")]
    pub files_root: Option<std::path::PathBuf>,
    /// How tools are offered and calls parsed: SmolLM3's `<tool_call>` JSON (xml) or
    /// `<code>` Python calls (python).
    #[arg(long, value_enum, default_value_t = ToolFormatArg::Xml)]
    pub tool_format: ToolFormatArg,
    /// Most generations in the tool loop.
    #[arg(long, value_name = "N", default_value_t = 6)]
    pub max_rounds: usize,
    /// Seconds a tool may run before it is abandoned.
    #[arg(long, value_name = "SECONDS", default_value_t = 10.0)]
    pub tool_timeout: f64,
}

#[derive(Clone, Copy, Debug, clap::ValueEnum)]
pub enum ToolFormatArg {
    Xml,
    Python,
}

impl From<ToolFormatArg> for ToolFormat {
    fn from(f: ToolFormatArg) -> Self {
        match f {
            ToolFormatArg::Xml => ToolFormat::Xml,
            ToolFormatArg::Python => ToolFormat::Python,
        }
    }
}

/// Sampling flags, named as in llama.cpp.
#[derive(Args, Debug, Clone)]
pub struct SamplingArgs {
    /// Sampling temperature; 0 = greedy.
    #[arg(long, value_name = "T", default_value_t = 0.6)]
    pub temperature: f32,
    /// Keep only the K most likely tokens (0 = off).
    #[arg(long, value_name = "K", default_value_t = 0)]
    pub top_k: usize,
    /// Nucleus sampling (1 = off).
    #[arg(long, value_name = "P", default_value_t = 0.95)]
    pub top_p: f32,
    /// Drop tokens below this fraction of the top probability (0 = off).
    #[arg(long, value_name = "P", default_value_t = 0.0)]
    pub min_p: f32,
    /// Penalise repeating the last --repeat-last-n tokens (1 = off).
    #[arg(long, value_name = "R", default_value_t = 1.0)]
    pub repeat_penalty: f32,
    /// How many recent tokens the penalties look at.
    #[arg(long, value_name = "N", default_value_t = 64)]
    pub repeat_last_n: usize,
    /// OpenAI presence penalty (-2..2).
    #[arg(long, value_name = "X", default_value_t = 0.0)]
    pub presence_penalty: f32,
    /// OpenAI frequency penalty (-2..2).
    #[arg(long, value_name = "X", default_value_t = 0.0)]
    pub frequency_penalty: f32,
    /// Random seed (default: a new one each run, shown with --verbose).
    #[arg(long, value_name = "N")]
    pub seed: Option<u64>,
}

impl SamplingArgs {
    pub fn params(&self) -> SamplingParams {
        SamplingParams {
            temperature: self.temperature,
            top_k: self.top_k,
            top_p: self.top_p,
            min_p: self.min_p,
            repeat_penalty: self.repeat_penalty,
            presence_penalty: self.presence_penalty,
            frequency_penalty: self.frequency_penalty,
            repeat_last_n: self.repeat_last_n,
            seed: self.seed,
        }
    }
}

/// Exit status after Ctrl+C, as shells expect (128 + SIGINT).
pub const EXIT_INTERRUPTED: u8 = 130;

/// Whether colours may be used on stderr (a terminal, and `NO_COLOR` unset).
pub fn colour_on_stderr() -> bool {
    std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty())
}

pub const DIM: &str = "\x1b[2m";
pub const RESET: &str = "\x1b[0m";

/// Runs the command; returns whether it was interrupted.
pub fn run(args: &RunArgs) -> Result<bool> {
    let prompt_text = if args.prompt == "-" {
        let mut s = String::new();
        std::io::stdin()
            .read_to_string(&mut s)
            .context("reading the prompt from stdin")?;
        s
    } else {
        args.prompt.clone()
    };
    if prompt_text.trim().is_empty() {
        bail!("the prompt is empty");
    }
    if args.raw && (args.answer.system.is_some() || args.answer.no_think) {
        bail!("--raw takes no chat options (--system, --no-think)");
    }
    let sampling = args.answer.sampling.params();
    sampling.validate()?;

    let tools = ToolSetup::from_args(&args.tool_args)?;
    if tools.is_some() && args.raw {
        bail!("--raw cannot be combined with tools");
    }
    let engine = args.model.load_engine()?;
    let context = args
        .model
        .ctx
        .unwrap_or(engine.model.config().max_context());
    let prompt = if args.raw {
        Prompt::Text(prompt_text)
    } else {
        let mut chat = ChatRequest {
            add_generation_prompt: true,
            enable_thinking: Some(!args.answer.no_think),
            ..Default::default()
        };
        if let Some(system) = &args.answer.system {
            chat.push("system", system);
        }
        chat.push("user", &prompt_text);
        Prompt::Chat(chat)
    };
    let cancel = CancelHandle::new();
    install_ctrl_c(&cancel);
    let request = GenerateRequest {
        sampling,
        max_tokens: args.answer.max_tokens,
        stop: args.answer.stop.clone(),
        reasoning_budget: args.answer.reasoning_budget,
        cancel: Some(cancel),
        ..GenerateRequest::new(prompt)
    };
    match &args.replay {
        // Testing hook: scripted replies in place of the model, same tokenizer and template.
        Some(path) => {
            let mut session = replay_session(&engine, path, args.model.ctx)?;
            generate(args, &mut session, tools, &request)
        }
        None => generate(args, &mut engine.session(context)?, tools, &request),
    }
}

/// Testing hook (`--replay`): a session whose "model" plays back the scripted replies in
/// `path` (a JSON array of strings), with the real tokenizer and template.
pub fn replay_session(
    engine: &Engine,
    path: &std::path::Path,
    ctx: Option<usize>,
) -> Result<Session<ScriptedBackend>> {
    let json =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let replies: Vec<String> = serde_json::from_str(&json)
        .with_context(|| format!("{}: expected a JSON array of strings", path.display()))?;
    let replies: Vec<&str> = replies.iter().map(String::as_str).collect();
    // No model runs, so the context is not limited by it.
    let context = ctx.unwrap_or(1 << 16);
    let backend = ScriptedBackend::from_texts(&engine.tokenizer, context, &replies)?;
    Ok(Session::with_backend(
        backend,
        engine.tokenizer.clone(),
        engine.template.clone(),
    ))
}

fn generate<B: Backend>(
    args: &RunArgs,
    session: &mut Session<B>,
    tools: Option<ToolSetup>,
    request: &GenerateRequest,
) -> Result<bool> {
    if let (Some(tools), Prompt::Chat(chat)) = (tools, &request.prompt) {
        return run_tools(args, session, tools, chat.clone(), request.clone());
    }
    let mut printer = Printer::new(args.json, args.answer.hide_thinking);
    let mut completion = None;
    for event in session.generate(request)? {
        let event = event?;
        printer.event(&event)?;
        if let Event::Done(c) = event {
            completion = Some(*c);
        }
    }
    let completion = completion.context("generation ended without a result")?;
    printer.end(&completion)?;
    if args.verbose {
        eprintln!("{}", stats_line(&completion));
    }
    Ok(completion.finish_reason == FinishReason::Cancelled)
}

/// First Ctrl+C cancels the generation; a second one exits at once.
pub fn install_ctrl_c(cancel: &CancelHandle) {
    let cancel = cancel.clone();
    // Failing to install (e.g. a handler already set) only loses graceful cancellation.
    let _ = ctrlc::set_handler(move || {
        if cancel.is_cancelled() {
            std::process::exit(EXIT_INTERRUPTED as i32);
        }
        cancel.cancel();
    });
}

/// One line of statistics, in the style of `ollama run --verbose`.
pub fn stats_line(c: &Completion) -> String {
    let s = &c.stats;
    format!(
        "prompt {} tokens ({} cached) in {:.2} s, {:.1} tok/s | generated {} tokens in {:.2} s, \
         {:.1} tok/s | first token after {:.2} s | finish: {}{} | seed {}",
        s.prompt_tokens,
        s.cached_tokens,
        s.prefill_ms / 1e3,
        s.prefill_tokens_per_second,
        s.generated_tokens,
        s.decode_ms / 1e3,
        s.decode_tokens_per_second,
        s.time_to_first_token_ms / 1e3,
        c.finish_reason.as_str(),
        c.stopped_by
            .as_deref()
            .map(|s| format!(" ({s:?})"))
            .unwrap_or_default(),
        s.seed,
    )
}

/// Writes events as text (answer on stdout, reasoning on stderr, dimmed on a terminal) or as
/// JSON lines on stdout.
pub struct Printer {
    json: bool,
    hide_thinking: bool,
    colour: bool,
    in_reasoning: bool,
    reasoning_started: Option<std::time::Instant>,
    answer_ends_with_newline: bool,
    printed_answer: bool,
    /// The "thought for N s" line was written.
    summarised: bool,
}

impl Printer {
    pub fn new(json: bool, hide_thinking: bool) -> Self {
        Printer {
            json,
            hide_thinking,
            colour: colour_on_stderr(),
            in_reasoning: false,
            reasoning_started: None,
            answer_ends_with_newline: true,
            printed_answer: false,
            summarised: false,
        }
    }

    pub fn event(&mut self, event: &Event) -> Result<()> {
        if self.json {
            let mut out = std::io::stdout().lock();
            writeln!(out, "{}", serde_json::to_string(event)?)?;
            return Ok(out.flush()?);
        }
        match event {
            Event::Reasoning { text } => {
                self.reasoning_started
                    .get_or_insert_with(std::time::Instant::now);
                if self.hide_thinking {
                    return Ok(());
                }
                let mut err = std::io::stderr().lock();
                if !self.in_reasoning {
                    self.in_reasoning = true;
                    if self.colour {
                        write!(err, "{DIM}")?;
                    }
                }
                write!(err, "{text}")?;
                err.flush()?;
            }
            Event::Answer { text } => {
                self.close_reasoning()?;
                let mut out = std::io::stdout().lock();
                write!(out, "{text}")?;
                out.flush()?;
                self.printed_answer = true;
                self.answer_ends_with_newline = text.ends_with('\n');
            }
            Event::ToolCall(span) => {
                self.close_reasoning()?;
                let mut out = std::io::stdout().lock();
                write!(out, "{}", span.raw)?;
                out.flush()?;
                self.printed_answer = true;
                self.answer_ends_with_newline = span.raw.ends_with('\n');
            }
            Event::PrefillProgress { .. } | Event::Done(_) => {}
        }
        Ok(())
    }

    pub fn close_reasoning(&mut self) -> Result<()> {
        if !self.in_reasoning {
            // Hidden reasoning still gets its one-line summary on a terminal.
            if let (true, true, false, Some(t)) = (
                self.hide_thinking,
                self.colour,
                self.summarised,
                self.reasoning_started,
            ) {
                self.summarised = true;
                eprintln!(
                    "{DIM}(thought for {:.1} s){RESET}",
                    t.elapsed().as_secs_f64()
                );
            }
            return Ok(());
        }
        self.in_reasoning = false;
        self.summarised = true;
        let mut err = std::io::stderr().lock();
        if self.colour {
            write!(err, "{RESET}")?;
        }
        match self.reasoning_started {
            Some(t) if self.colour => writeln!(
                err,
                "\n{DIM}(thought for {:.1} s){RESET}\n",
                t.elapsed().as_secs_f64()
            )?,
            _ => writeln!(err, "\n")?,
        }
        Ok(())
    }

    pub fn end(&mut self, completion: &Completion) -> Result<()> {
        if self.json {
            return Ok(());
        }
        self.close_reasoning()?;
        if self.printed_answer && !self.answer_ends_with_newline {
            writeln!(std::io::stdout())?;
        }
        let note = match completion.finish_reason {
            FinishReason::Length => Some("answer cut off: max tokens or context reached"),
            FinishReason::Cancelled => Some("interrupted"),
            _ => None,
        };
        if let Some(note) = note {
            if self.colour {
                eprintln!("{DIM}[{note}]{RESET}");
            } else {
                eprintln!("[{note}]");
            }
        }
        Ok(())
    }
}

/// The tools of a run: built-ins that run here, and definitions from --tools that the caller
/// handles.
pub struct ToolSetup {
    pub registry: Registry,
    pub external: Vec<ToolDefinition>,
    pub format: ToolFormat,
    pub max_rounds: usize,
}

impl ToolSetup {
    /// `None` when no tools were asked for.
    pub fn from_args(args: &ToolArgs) -> Result<Option<Self>> {
        if args.tools.is_none() && args.builtin_tools.is_empty() {
            if args.files_root.is_some() {
                bail!("--files-root needs --builtin-tools files");
            }
            return Ok(None);
        }
        if !(args.tool_timeout.is_finite() && args.tool_timeout > 0.0) {
            bail!("--tool-timeout must be a positive number of seconds");
        }
        let mut registry = Registry::new();
        registry.set_timeout(std::time::Duration::from_secs_f64(args.tool_timeout));
        let names: Vec<String> = args
            .builtin_tools
            .iter()
            .map(|n| n.trim().to_string())
            .filter(|n| !n.is_empty())
            .collect();
        if !names.is_empty() {
            for tool in builtins::by_names(&names, args.files_root.as_deref())? {
                registry.register(tool)?;
            }
        } else if args.files_root.is_some() {
            bail!("--files-root needs --builtin-tools files");
        }
        let external = match &args.tools {
            Some(path) => crate::tools_cmd::read_tool_definitions(path)?,
            None => Vec::new(),
        };
        if let Some(clash) = external.iter().find(|d| registry.get(&d.name).is_some()) {
            bail!(
                "tool {:?} in {} is also a built-in tool",
                clash.name,
                args.tools
                    .as_deref()
                    .map(|p| p.display().to_string())
                    .unwrap_or_default()
            );
        }
        Ok(Some(ToolSetup {
            registry,
            external,
            format: args.tool_format.into(),
            max_rounds: args.max_rounds.max(1),
        }))
    }
}

fn run_tools<B: Backend>(
    args: &RunArgs,
    session: &mut Session<B>,
    tools: ToolSetup,
    chat: ChatRequest,
    request: GenerateRequest,
) -> Result<bool> {
    let mut options = AgentOptions::new(tools.format, request);
    options.max_rounds = tools.max_rounds;
    options.external = tools.external;
    let mut printer = Printer::new(args.json, args.answer.hide_thinking);
    let mut failure: Option<anyhow::Error> = None;
    let outcome = run_agent(
        session,
        &tools.registry,
        chat,
        &options,
        |event| match printer.agent_event(&event) {
            Ok(()) => std::ops::ControlFlow::Continue(()),
            Err(e) => {
                failure = Some(e);
                std::ops::ControlFlow::Break(())
            }
        },
    )?;
    if let Some(e) = failure {
        return Err(e);
    }
    printer.agent_end(&outcome)?;
    if args.verbose {
        eprintln!("{} | rounds {}", stats_line(&outcome.last), outcome.rounds);
    }
    Ok(outcome.finish == AgentFinish::Cancelled)
}

impl Printer {
    /// Tool activity goes to stderr (dimmed on a terminal), so stdout keeps only the answer.
    pub fn agent_event(&mut self, event: &AgentEvent) -> Result<()> {
        if self.json {
            let line = match event {
                // The parsed call is printed instead of the raw span.
                AgentEvent::Model {
                    event: Event::ToolCall(_),
                    ..
                } => return Ok(()),
                AgentEvent::Model {
                    round,
                    event: Event::Done(c),
                } => serde_json::json!({
                    "type": "round_done", "round": round,
                    "finish_reason": c.finish_reason, "stats": c.stats,
                }),
                AgentEvent::Model { round, event } => {
                    let mut v = serde_json::to_value(event)?;
                    v["round"] = serde_json::json!(round);
                    v
                }
                other => serde_json::to_value(other)?,
            };
            let mut out = std::io::stdout().lock();
            writeln!(out, "{line}")?;
            return Ok(out.flush()?);
        }
        match event {
            AgentEvent::Model {
                event: Event::ToolCall(_),
                ..
            } => Ok(()),
            AgentEvent::Model { event, .. } => self.event(event),
            AgentEvent::ToolCall { call, .. } => {
                self.close_reasoning()?;
                let line = match call {
                    ParsedCall::Ok { call, .. } => format!(
                        "-> {}({})",
                        call.name,
                        serde_json::Value::Object(call.arguments.clone())
                    ),
                    ParsedCall::Malformed { error, .. } => {
                        format!("-> malformed tool call: {error}")
                    }
                };
                self.note(&line)
            }
            AgentEvent::ToolResult {
                outcome, content, ..
            } => {
                let line = match &outcome.result {
                    Ok(_) => format!("<- {content}"),
                    Err(e) => format!("<- error: {e}"),
                };
                self.note(&line)
            }
        }
    }

    pub fn note(&mut self, line: &str) -> Result<()> {
        let mut err = std::io::stderr().lock();
        if self.colour {
            writeln!(err, "{DIM}{line}{RESET}")?;
        } else {
            writeln!(err, "{line}")?;
        }
        Ok(())
    }

    pub fn agent_end(&mut self, outcome: &smollm3_tools::agent::AgentOutcome) -> Result<()> {
        let (reason, pending) = match &outcome.finish {
            AgentFinish::Answered => ("stop", None),
            AgentFinish::MaxRounds => ("max_rounds", None),
            AgentFinish::Length => ("length", None),
            AgentFinish::Cancelled => ("cancelled", None),
            AgentFinish::ToolCalls { calls } => ("tool_calls", Some(calls)),
        };
        if self.json {
            let line = serde_json::json!({
                "type": "done", "finish_reason": reason, "rounds": outcome.rounds,
                "answer": outcome.answer, "pending_tool_calls": pending, "stats": outcome.last.stats,
            });
            writeln!(std::io::stdout(), "{line}")?;
            return Ok(());
        }
        self.close_reasoning()?;
        if self.printed_answer && !self.answer_ends_with_newline {
            writeln!(std::io::stdout())?;
        }
        match &outcome.finish {
            AgentFinish::ToolCalls { calls } => {
                // Calls for the caller to run: on stdout, one JSON object per line.
                let mut out = std::io::stdout().lock();
                for call in calls {
                    writeln!(out, "{}", serde_json::to_string(call)?)?;
                }
            }
            AgentFinish::MaxRounds => self.note(&format!(
                "[stopped after {} rounds of tool calls]",
                outcome.rounds
            ))?,
            AgentFinish::Length => self.note("[answer cut off: max tokens or context reached]")?,
            AgentFinish::Cancelled => self.note("[interrupted]")?,
            AgentFinish::Answered => {}
        }
        Ok(())
    }
}
