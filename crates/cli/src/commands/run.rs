//! `smollm3 run`: one question, the answer streamed as it is generated.

use std::io::Read;

use anyhow::{bail, Context, Result};
use clap::Args;
use smollm3_chat::{ChatRequest, Message};
use smollm3_gen::{Backend, CancelHandle, FinishReason, GenerateRequest, Prompt, Session};
use smollm3_tools::agent::AgentFinish;

use crate::answer::{answer, Answered};
use crate::args::{AnswerArgs, ConstraintArgs, ModelArgs, ToolArgs, ToolSetup};
use crate::render::{stats_line, Printer};
use crate::replay::replay_session;

#[derive(Args, Debug)]
#[command(after_help = "Examples:
  smollm3 run --model SmolLM3-3B-Q4_K_M.gguf \"Why is the sky blue?\"
  smollm3 run --model M.gguf --no-think --temperature 0 \"2+2?\"
  echo \"Summarise: ...\" | smollm3 run --model M.gguf -
  smollm3 run --model M.gguf --json \"Hi\"     # one JSON event per line
  smollm3 run --model M.gguf --json-schema person.schema.json \"Invent a person\"")]
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
    #[command(flatten)]
    pub constraint: ConstraintArgs,
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

/// Exit status after Ctrl+C, as shells expect (128 + SIGINT).
pub const EXIT_INTERRUPTED: u8 = 130;

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
    let grammar = args.constraint.grammar_beside(tools.is_some())?;
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
            chat.push(Message::system(system));
        }
        chat.push(Message::user(&prompt_text));
        Prompt::Chat(chat)
    };
    let cancel = CancelHandle::new();
    install_ctrl_c(&cancel);
    let request = GenerateRequest {
        sampling,
        stop: args.answer.stop.clone(),
        reasoning_budget: args.answer.reasoning_budget,
        cancel: Some(cancel),
        prompt_lookup: !args.answer.no_prompt_lookup,
        grammar,
        ..GenerateRequest::new(prompt)
    };
    match &args.replay {
        // Testing hook: scripted replies in place of the model, same tokenizer and template.
        Some(path) => {
            let mut session = replay_session(&engine, path, args.model.ctx)?;
            generate(args, &mut session, tools.as_ref(), &request)
        }
        None => generate(
            args,
            &mut engine.session(context)?,
            tools.as_ref(),
            &request,
        ),
    }
}

fn generate<B: Backend>(
    args: &RunArgs,
    session: &mut Session<B>,
    tools: Option<&ToolSetup>,
    request: &GenerateRequest,
) -> Result<bool> {
    let mut printer = Printer::new(args.json, args.answer.hide_thinking);
    let answered = answer(session, tools, request, &mut printer)?;
    Ok(match answered {
        Answered::Plain(completion) => {
            if args.verbose {
                eprintln!("{}", stats_line(&completion));
            }
            completion.finish_reason == FinishReason::Cancelled
        }
        Answered::Tools(outcome) => {
            if args.verbose {
                eprintln!("{} | rounds {}", stats_line(&outcome.last), outcome.rounds);
            }
            outcome.finish == AgentFinish::Cancelled
        }
    })
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
