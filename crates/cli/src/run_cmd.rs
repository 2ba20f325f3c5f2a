//! `smollm3 run`: one question, the answer streamed as it is generated.

use std::io::{IsTerminal, Read, Write};

use anyhow::{bail, Context, Result};
use clap::Args;
use smollm3_chat::ChatRequest;
use smollm3_gen::{
    CancelHandle, Completion, Event, FinishReason, GenerateRequest, Prompt, SamplingParams,
};

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
    /// A system message.
    #[arg(long, value_name = "TEXT")]
    pub system: Option<String>,
    /// Answer without thinking (the prompt gets an empty think block).
    #[arg(long)]
    pub no_think: bool,
    /// Don't show the reasoning (it is still generated unless --no-think).
    #[arg(long)]
    pub hide_thinking: bool,
    /// Most reasoning tokens before `</think>` is forced (0 = no thinking).
    #[arg(long, value_name = "N")]
    pub reasoning_budget: Option<usize>,
    #[command(flatten)]
    pub sampling: SamplingArgs,
    /// Most tokens to generate (default: until the model stops or the context is full).
    #[arg(long, short = 'n', value_name = "N")]
    pub max_tokens: Option<usize>,
    /// Stop when this text is generated (not printed); repeatable.
    #[arg(long, value_name = "TEXT")]
    pub stop: Vec<String>,
    /// Treat PROMPT as raw text to continue, without the chat template.
    #[arg(long)]
    pub raw: bool,
    /// Print one JSON event per line instead of text.
    #[arg(long)]
    pub json: bool,
    /// Print token counts and speeds at the end (stderr).
    #[arg(long, short = 'v')]
    pub verbose: bool,
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
    if args.raw && (args.system.is_some() || args.no_think) {
        bail!("--raw takes no chat options (--system, --no-think)");
    }
    let sampling = args.sampling.params();
    sampling.validate()?;

    let engine = args.model.load_engine()?;
    let context = args
        .model
        .ctx
        .unwrap_or(engine.model.config().max_context());
    let mut session = engine.session(context)?;

    let prompt = if args.raw {
        Prompt::Text(prompt_text)
    } else {
        let mut chat = ChatRequest {
            add_generation_prompt: true,
            enable_thinking: Some(!args.no_think),
            ..Default::default()
        };
        if let Some(system) = &args.system {
            chat.push("system", system);
        }
        chat.push("user", &prompt_text);
        Prompt::Chat(chat)
    };
    let cancel = CancelHandle::new();
    install_ctrl_c(&cancel);
    let request = GenerateRequest {
        sampling,
        max_tokens: args.max_tokens,
        stop: args.stop.clone(),
        reasoning_budget: args.reasoning_budget,
        cancel: Some(cancel),
        ..GenerateRequest::new(prompt)
    };
    let mut printer = Printer::new(args.json, args.hide_thinking);
    let mut completion = None;
    for event in session.generate(&request)? {
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

    fn close_reasoning(&mut self) -> Result<()> {
        if !self.in_reasoning {
            return Ok(());
        }
        self.in_reasoning = false;
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
