//! `smollm3 chat`: flags, loading, then the REPL (`crate::repl`).

use std::path::PathBuf;

use anyhow::Result;
use clap::Args;

use crate::args::{AnswerArgs, ConstraintArgs, ModelArgs, ToolArgs, ToolSetup};
use crate::repl::{Conversation, ModelInfo, Repl, ReplOptions};
use crate::replay::replay_session;

#[derive(Args, Debug)]
#[command(after_help = after_help())]
pub struct ChatArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    #[command(flatten)]
    pub answer: AnswerArgs,
    #[command(flatten)]
    pub tool_args: ToolArgs,
    #[command(flatten)]
    pub constraint: ConstraintArgs,
    /// Start from a conversation saved with /save.
    #[arg(long, value_name = "FILE.json")]
    pub load: Option<PathBuf>,
    /// Don't read or write the input history file.
    #[arg(long)]
    pub no_history: bool,
    /// Testing: a JSON array of reply texts played back instead of running the model.
    #[arg(long, value_name = "replies.json", hide = true)]
    pub replay: Option<PathBuf>,
    /// Print token counts and speeds after each answer (stderr).
    #[arg(long, short = 'v')]
    pub verbose: bool,
}

/// Examples and the chat's commands; the `/set` parameters come from the settings table.
fn after_help() -> String {
    let names: Vec<&str> = smollm3_gen::SETTINGS.iter().map(|s| s.name).collect();
    format!(
        "Examples:
  smollm3 chat --model SmolLM3-3B-Q4_K_M.gguf
  smollm3 chat --model M.gguf --no-think --system \"Answer in French.\"
  smollm3 chat --model M.gguf --builtin-tools calculator,time
  smollm3 chat --model M.gguf --json-schema record.json    # every answer a valid record
  printf 'Hi\\n/stats\\n' | smollm3 chat --model M.gguf     # a script on stdin

Commands (type /help in the chat):
  /think, /no_think          thinking on or off
  /system TEXT               set the system message (/system alone shows it)
  /set PARAM VALUE           {}
  /show                      model, context used, settings, system message
  /stats                     last turn: prompt and reused tokens, time to first token, tok/s
  /clear                     forget the conversation
  /save FILE, /load FILE     the conversation as OpenAI-style JSON messages
  /bye                       exit (also Ctrl+D, or Ctrl+C at an empty prompt)
  \"\"\"                        start and end multi-line input
Ctrl+C while an answer is written stops it; the conversation goes on.",
        names.join(", ")
    )
}

pub fn run(args: &ChatArgs) -> Result<()> {
    args.answer.sampling.params().validate()?;
    let tools = ToolSetup::from_args(&args.tool_args)?;
    let grammar = args.constraint.grammar_beside(tools.is_some())?;
    let loaded = match &args.load {
        Some(path) => Some(Conversation::load(path)?),
        None => None,
    };
    let engine = args.model.load_engine()?;
    let info = ModelInfo::new(&engine);
    let options = ReplOptions {
        answer: &args.answer,
        grammar,
        verbose: args.verbose,
        no_history: args.no_history,
        loaded,
    };
    match &args.replay {
        Some(path) => {
            let session = replay_session(&engine, path, args.model.ctx)?;
            Repl::new(options, session, tools, info).run()
        }
        None => {
            let context = args
                .model
                .ctx
                .unwrap_or(engine.model.config().max_context());
            let session = engine.session(context)?;
            Repl::new(options, session, tools, info).run()
        }
    }
}
