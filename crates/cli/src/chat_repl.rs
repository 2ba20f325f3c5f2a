//! `smollm3 chat`: an interactive conversation in the style of `ollama run`.
//!
//! One [`Session`] holds the whole conversation, so each turn only processes the new part of
//! the prompt. Answers stream like `smollm3 run` (answer on stdout, reasoning on stderr).
//! Lines come from `rustyline` (editing, persistent history) on a terminal, and plainly from
//! stdin otherwise, so a script of turns and slash commands can be piped in.
//!
//! Ctrl+C: while a line is being read, rustyline gets it as a key (the terminal is in raw
//! mode): it clears a non-empty line and exits at an empty prompt. While an answer is being
//! generated the terminal is in cooked mode, so Ctrl+C is a SIGINT, which the `ctrlc`
//! handler turns into a cancel of that generation only. The handler is installed after the
//! editor is created, because rustyline installs (and on drop restores) a SIGINT handler of
//! its own. An interrupted answer stays in the conversation when some of it was written (the
//! user saw it and may ask to go on); when nothing was, the user's message is dropped too.
//! Lines typed while an answer is written are taken one by one before rustyline starts
//! (see [`typed_ahead_line`]), so none is lost.

use std::io::{BufRead, IsTerminal, Write};
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use clap::Args;
use serde_json::{json, Value};
use smollm3_chat::ChatRequest;
use smollm3_gen::{
    Backend, CancelHandle, Completion, ContextOverflow, Engine, Event, FinishReason,
    GenerateRequest, SamplingParams, Session,
};
use smollm3_tools::agent::{run_agent, AgentFinish, AgentOptions};

use crate::model_args::ModelArgs;
use crate::run_cmd::{
    colour_on_stderr, replay_session, stats_line, AnswerArgs, Printer, ToolArgs, ToolSetup, DIM,
    RESET,
};

#[derive(Args, Debug)]
#[command(after_help = "Examples:
  smollm3 chat --model SmolLM3-3B-Q4_K_M.gguf
  smollm3 chat --model M.gguf --no-think --system \"Answer in French.\"
  smollm3 chat --model M.gguf --builtin-tools calculator,time
  printf 'Hi\\n/stats\\n' | smollm3 chat --model M.gguf     # a script on stdin

Commands (type /help in the chat):
  /think, /no_think          thinking on or off
  /system TEXT               set the system message (/system alone shows it)
  /set PARAM VALUE           temperature, top_p, top_k, min_p, repeat_penalty, repeat_last_n,
                             presence_penalty, frequency_penalty, seed, max_tokens
  /show                      model, context used, settings, system message
  /stats                     last turn: prompt and reused tokens, time to first token, tok/s
  /clear                     forget the conversation
  /save FILE, /load FILE     the conversation as OpenAI-style JSON messages
  /bye                       exit (also Ctrl+D, or Ctrl+C at an empty prompt)
  \"\"\"                        start and end multi-line input
Ctrl+C while an answer is written stops it; the conversation goes on.")]
pub struct ChatArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    #[command(flatten)]
    pub answer: AnswerArgs,
    #[command(flatten)]
    pub tool_args: ToolArgs,
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

const HELP: &str = "\
Available commands:
  /think                 think before answering
  /no_think              answer without thinking
  /system [TEXT]         set the system message (no TEXT: show it; /system clear: remove it)
  /set PARAM VALUE       set a sampling parameter (/set alone lists them)
  /set verbose|quiet     statistics after each answer, or not
  /set hidethinking|showthinking
  /show                  model, context used, settings, system message
  /stats                 statistics of the last turn
  /clear                 forget the conversation (the system message stays)
  /save FILE             save the conversation as OpenAI-style JSON messages
  /load FILE             load a conversation saved with /save
  /help, /?              this help
  /bye                   exit (also Ctrl+D, or Ctrl+C at an empty prompt)
Use \"\"\" to begin and end a multi-line message.
Ctrl+C while an answer is written stops it.";

const SET_HELP: &str = "\
Parameters for /set:
  temperature F          0 = greedy
  top_p F                in (0, 1]; 1 = off
  top_k N                0 = off
  min_p F                in [0, 1]; 0 = off
  repeat_penalty F       > 0; 1 = off
  repeat_last_n N        tokens the penalties look at
  presence_penalty F     in [-2, 2]
  frequency_penalty F    in [-2, 2]
  seed N|random
  max_tokens N|none";

pub fn run(args: &ChatArgs) -> Result<()> {
    let sampling = args.answer.sampling.params();
    sampling.validate()?;
    if args.answer.max_tokens == Some(0) {
        bail!("--max-tokens must be at least 1");
    }
    let tools = ToolSetup::from_args(&args.tool_args)?;
    let loaded = match &args.load {
        Some(path) => Some(load_conversation(path)?),
        None => None,
    };
    let engine = args.model.load_engine()?;
    let info = ModelInfo::new(&engine);
    match &args.replay {
        Some(path) => {
            let session = replay_session(&engine, path, args.model.ctx)?;
            Repl::new(args, session, tools, info, loaded).run()
        }
        None => {
            let context = args
                .model
                .ctx
                .unwrap_or(engine.model.config().max_context());
            let session = engine.session(context)?;
            Repl::new(args, session, tools, info, loaded).run()
        }
    }
}

/// What `/show` says about the model.
struct ModelInfo {
    file: String,
    architecture: String,
    parameters: u64,
    max_context: usize,
}

impl ModelInfo {
    fn new(engine: &Engine) -> Self {
        let config = engine.model.config();
        ModelInfo {
            file: engine.path().display().to_string(),
            architecture: config.architecture.gguf_name().to_string(),
            parameters: engine.model.weights().parameters,
            max_context: config.max_context(),
        }
    }
}

/// A conversation: the system message apart, then the other messages (OpenAI-style JSON).
#[derive(Debug, Default, Clone, PartialEq)]
struct Conversation {
    system: Option<String>,
    messages: Vec<Value>,
}

/// Reads and checks a conversation saved with `/save`.
fn load_conversation(path: &Path) -> Result<Conversation> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    parse_conversation(&text).with_context(|| format!("{}", path.display()))
}

fn parse_conversation(text: &str) -> Result<Conversation> {
    let value: Value = serde_json::from_str(text).context("not valid JSON")?;
    let Value::Array(items) = value else {
        bail!("expected a JSON array of messages such as [{{\"role\": \"user\", \"content\": \"Hi\"}}]");
    };
    let mut conversation = Conversation::default();
    for (i, m) in items.into_iter().enumerate() {
        let Value::Object(fields) = &m else {
            bail!("message {i} is not an object");
        };
        let role = match fields.get("role") {
            Some(Value::String(r)) => r.as_str(),
            _ => bail!("message {i} has no string \"role\""),
        };
        if !matches!(role, "system" | "user" | "assistant" | "tool") {
            bail!("message {i}: unknown role {role:?} (expected system, user, assistant or tool)");
        }
        let content = match fields.get("content") {
            Some(Value::String(c)) => Some(c.clone()),
            None | Some(Value::Null)
                if role == "assistant" && fields.contains_key("tool_calls") =>
            {
                None
            }
            _ => bail!("message {i} ({role}) has no string \"content\""),
        };
        if role == "system" {
            if i != 0 {
                bail!("message {i}: a system message may only come first");
            }
            conversation.system = content;
        } else {
            conversation.messages.push(m);
        }
    }
    // The template must accept it too.
    ChatRequest::from_messages_json(&serde_json::to_string(&conversation.to_json())?)?;
    Ok(conversation)
}

impl Conversation {
    fn to_json(&self) -> Vec<Value> {
        self.system
            .iter()
            .map(|s| json!({"role": "system", "content": s}))
            .chain(self.messages.iter().cloned())
            .collect()
    }
}

/// One line of input, or why there is none.
enum Line {
    Text(String),
    /// Ctrl+C at an empty prompt.
    Interrupted,
    Eof,
}

/// Where lines come from: rustyline on a terminal, plain stdin otherwise.
enum Input {
    Editor {
        editor: Box<rustyline::DefaultEditor>,
        history: Option<PathBuf>,
    },
    Plain(std::io::StdinLock<'static>),
}

/// Ctrl+C in the line editor: clear the line, or (empty line) interrupt.
struct CtrlC;

impl rustyline::ConditionalEventHandler for CtrlC {
    fn handle(
        &self,
        _evt: &rustyline::Event,
        _n: rustyline::RepeatCount,
        _positive: bool,
        ctx: &rustyline::EventContext,
    ) -> Option<rustyline::Cmd> {
        if ctx.line().is_empty() {
            Some(rustyline::Cmd::Interrupt)
        } else {
            Some(rustyline::Cmd::Kill(rustyline::Movement::WholeBuffer))
        }
    }
}

/// `$XDG_STATE_HOME/smollm3/history`, else `~/.local/state/smollm3/history`.
fn history_path() -> Option<PathBuf> {
    let non_empty = |k: &str| {
        std::env::var_os(k)
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
    };
    let state = non_empty("XDG_STATE_HOME")
        .or_else(|| non_empty("HOME").map(|h| h.join(".local/state")))?;
    Some(state.join("smollm3").join("history"))
}

impl Input {
    fn new(no_history: bool) -> Self {
        if !std::io::stdin().is_terminal() {
            return Input::Plain(std::io::stdin().lock());
        }
        let config = rustyline::Config::builder()
            .auto_add_history(false)
            .max_history_size(2000)
            .and_then(|b| b.history_ignore_dups(true))
            .map(|b| b.build())
            .unwrap_or_default();
        let mut editor = match rustyline::DefaultEditor::with_config(config) {
            Ok(e) => e,
            // A terminal rustyline cannot drive: read plainly.
            Err(_) => return Input::Plain(std::io::stdin().lock()),
        };
        editor.bind_sequence(
            rustyline::KeyEvent::ctrl('C'),
            rustyline::EventHandler::Conditional(Box::new(CtrlC)),
        );
        let history = if no_history { None } else { history_path() };
        if let Some(path) = &history {
            // A missing or unreadable history is not an error.
            let _ = editor.load_history(path);
        }
        Input::Editor {
            editor: Box::new(editor),
            history,
        }
    }

    fn is_terminal(&self) -> bool {
        matches!(self, Input::Editor { .. })
    }

    fn read(&mut self, prompt: &str) -> Result<Line> {
        match self {
            Input::Editor { editor, .. } => {
                if let Some(line) = typed_ahead_line() {
                    // The terminal echoed it amid the answer; show it where it belongs.
                    println!("{prompt}{line}");
                    return Ok(Line::Text(line));
                }
                match editor.readline(prompt) {
                    Ok(line) => Ok(Line::Text(line)),
                    Err(rustyline::error::ReadlineError::Interrupted) => Ok(Line::Interrupted),
                    Err(rustyline::error::ReadlineError::Eof) => Ok(Line::Eof),
                    Err(e) => Err(e).context("reading input"),
                }
            }
            Input::Plain(stdin) => {
                let mut line = String::new();
                if stdin.read_line(&mut line).context("reading stdin")? == 0 {
                    return Ok(Line::Eof);
                }
                let len = line.trim_end_matches(['\n', '\r']).len();
                line.truncate(len);
                Ok(Line::Text(line))
            }
        }
    }

    /// Adds an entry to the history (and its file; failures to write it are ignored).
    fn remember(&mut self, entry: &str) {
        if let Input::Editor { editor, history } = self {
            if editor.add_history_entry(entry).unwrap_or(false) {
                if let Some(path) = history {
                    if let Some(dir) = path.parent() {
                        let _ = std::fs::create_dir_all(dir);
                    }
                    let _ = editor.append_history(path);
                }
            }
        }
    }
}

/// What one read produced.
enum Message {
    Text(String),
    /// A single line starting with `/`.
    Command(String),
    /// Nothing to do (an empty line, an abandoned multi-line block).
    Nothing,
    Exit,
}

struct Repl<B: Backend> {
    session: Session<B>,
    conversation: Conversation,
    tools: Option<ToolSetup>,
    info: ModelInfo,
    thinking: bool,
    hide_thinking: bool,
    verbose: bool,
    sampling: SamplingParams,
    max_tokens: Option<usize>,
    stop: Vec<String>,
    reasoning_budget: Option<usize>,
    last: Option<Completion>,
    cancel: CancelHandle,
    no_history: bool,
}

impl<B: Backend> Repl<B> {
    fn new(
        args: &ChatArgs,
        session: Session<B>,
        tools: Option<ToolSetup>,
        info: ModelInfo,
        loaded: Option<Conversation>,
    ) -> Self {
        let mut conversation = loaded.unwrap_or_default();
        if args.answer.system.is_some() {
            conversation.system = args.answer.system.clone();
        }
        Repl {
            session,
            conversation,
            tools,
            info,
            thinking: !args.answer.no_think,
            hide_thinking: args.answer.hide_thinking,
            verbose: args.verbose,
            sampling: args.answer.sampling.params(),
            max_tokens: args.answer.max_tokens,
            stop: args.answer.stop.clone(),
            reasoning_budget: args.answer.reasoning_budget,
            last: None,
            cancel: CancelHandle::new(),
            no_history: args.no_history,
        }
    }

    fn run(mut self) -> Result<()> {
        let mut input = Input::new(self.no_history);
        // After the editor: rustyline replaces the SIGINT handler when it is created.
        let cancel = self.cancel.clone();
        // Failing to install only loses graceful cancellation.
        let _ = ctrlc::set_handler(move || cancel.cancel());
        if input.is_terminal() {
            self.note("Type /? for help; Ctrl+D or /bye to exit.");
        }
        loop {
            let result = match self.read_message(&mut input)? {
                Message::Exit => return Ok(()),
                Message::Nothing => continue,
                Message::Command(line) => match self.command(&line) {
                    Ok(true) => return Ok(()),
                    Ok(false) => Ok(()),
                    Err(e) => Err(e),
                },
                Message::Text(text) => {
                    let result = self.turn(&text);
                    if input.is_terminal() {
                        // A blank line between an answer and the next prompt.
                        println!();
                    }
                    result
                }
            };
            if let Err(e) = result {
                if is_broken_pipe(&e) {
                    return Err(e);
                }
                eprintln!("error: {e:#}");
            }
        }
    }

    fn note(&self, text: &str) {
        if colour_on_stderr() {
            eprintln!("{DIM}{text}{RESET}");
        } else {
            eprintln!("{text}");
        }
    }

    /// Reads one message: a line, or a `"""` block of lines.
    fn read_message(&self, input: &mut Input) -> Result<Message> {
        let (prompt, more) = if input.is_terminal() {
            (">>> ", "... ")
        } else {
            ("", "")
        };
        let line = match input.read(prompt)? {
            Line::Text(l) => l,
            Line::Interrupted | Line::Eof => return Ok(Message::Exit),
        };
        let trimmed = line.trim();
        let Some(rest) = trimmed.strip_prefix("\"\"\"") else {
            if trimmed.is_empty() {
                return Ok(Message::Nothing);
            }
            input.remember(trimmed);
            return Ok(if trimmed.starts_with('/') {
                Message::Command(trimmed.to_string())
            } else {
                Message::Text(trimmed.to_string())
            });
        };
        let text = if let Some(one) = rest.strip_suffix("\"\"\"") {
            one.to_string()
        } else {
            let mut lines = vec![rest.to_string()];
            loop {
                match input.read(more)? {
                    Line::Text(l) => match l.trim_end().strip_suffix("\"\"\"") {
                        Some(last) => {
                            lines.push(last.to_string());
                            break;
                        }
                        None => lines.push(l),
                    },
                    // Ctrl+C abandons the block.
                    Line::Interrupted => return Ok(Message::Nothing),
                    Line::Eof => return Ok(Message::Exit),
                }
            }
            lines.join("\n")
        };
        let text = text.trim_matches('\n').to_string();
        if text.trim().is_empty() {
            return Ok(Message::Nothing);
        }
        input.remember(&format!("\"\"\"{text}\"\"\""));
        // A block is always a message, even if it starts with `/`.
        Ok(Message::Text(text))
    }

    /// Runs a slash command; returns whether to exit.
    fn command(&mut self, line: &str) -> Result<bool> {
        let (name, rest) = match line.split_once(char::is_whitespace) {
            Some((n, r)) => (n, r.trim()),
            None => (line, ""),
        };
        let mut out = std::io::stdout().lock();
        match name {
            "/bye" | "/exit" | "/quit" => return Ok(true),
            "/help" | "/?" => writeln!(out, "{HELP}")?,
            "/think" => {
                self.thinking = true;
                writeln!(out, "Thinking on.")?;
            }
            "/no_think" | "/nothink" => {
                self.thinking = false;
                writeln!(out, "Thinking off.")?;
            }
            "/system" => self.system(rest)?,
            "/set" => self.set(rest)?,
            "/show" => self.show()?,
            "/stats" => match &self.last {
                Some(c) => writeln!(out, "{}", turn_stats(c))?,
                None => writeln!(out, "No answer yet.")?,
            },
            "/clear" => {
                self.conversation.messages.clear();
                self.session.reset()?;
                self.last = None;
                writeln!(out, "Cleared the conversation.")?;
            }
            "/save" => {
                if rest.is_empty() {
                    bail!("usage: /save FILE");
                }
                let json = serde_json::to_string_pretty(&self.conversation.to_json())?;
                std::fs::write(rest, json + "\n").with_context(|| format!("writing {rest}"))?;
                writeln!(
                    out,
                    "Saved {} messages to {rest}.",
                    self.conversation.to_json().len()
                )?;
            }
            "/load" => {
                if rest.is_empty() {
                    bail!("usage: /load FILE");
                }
                let loaded = load_conversation(Path::new(rest))?;
                let n = loaded.to_json().len();
                self.conversation = loaded;
                self.last = None;
                writeln!(out, "Loaded {n} messages from {rest}.")?;
            }
            _ => bail!("unknown command {name}; type /help for the list"),
        }
        Ok(false)
    }

    fn system(&mut self, text: &str) -> Result<()> {
        let mut out = std::io::stdout().lock();
        match text {
            "" => match &self.conversation.system {
                Some(s) => writeln!(out, "{s}")?,
                None => writeln!(out, "No system message.")?,
            },
            "clear" | "none" => {
                self.conversation.system = None;
                writeln!(out, "Removed the system message.")?;
            }
            _ => {
                self.conversation.system = Some(text.to_string());
                writeln!(out, "Set the system message.")?;
            }
        }
        Ok(())
    }

    fn set(&mut self, rest: &str) -> Result<()> {
        let (key, value) = match rest.split_once(char::is_whitespace) {
            Some((k, v)) => (k, v.trim()),
            None => (rest, ""),
        };
        let mut out = std::io::stdout().lock();
        match key {
            "" => {
                writeln!(out, "{SET_HELP}")?;
                return Ok(());
            }
            "system" => return self.system(value),
            "think" => self.thinking = true,
            "nothink" | "no_think" => self.thinking = false,
            "verbose" => self.verbose = true,
            "quiet" => self.verbose = false,
            "hidethinking" => self.hide_thinking = true,
            "showthinking" | "nohidethinking" => self.hide_thinking = false,
            _ => {
                if value.is_empty() {
                    bail!("usage: /set {key} VALUE (/set alone lists the parameters)");
                }
                let mut sampling = self.sampling.clone();
                let mut max_tokens = self.max_tokens;
                let key = key.replace('-', "_");
                match key.as_str() {
                    "temperature" => sampling.temperature = parse_num(&key, value)?,
                    "top_p" => sampling.top_p = parse_num(&key, value)?,
                    "top_k" => sampling.top_k = parse_num(&key, value)?,
                    "min_p" => sampling.min_p = parse_num(&key, value)?,
                    "repeat_penalty" => sampling.repeat_penalty = parse_num(&key, value)?,
                    "repeat_last_n" => sampling.repeat_last_n = parse_num(&key, value)?,
                    "presence_penalty" => sampling.presence_penalty = parse_num(&key, value)?,
                    "frequency_penalty" => sampling.frequency_penalty = parse_num(&key, value)?,
                    "seed" => {
                        sampling.seed = match value {
                            "random" | "none" => None,
                            v => Some(parse_num(&key, v)?),
                        }
                    }
                    "max_tokens" | "num_predict" => {
                        max_tokens = match value {
                            "none" | "0" => None,
                            v => Some(parse_num(&key, v)?),
                        }
                    }
                    _ => bail!("unknown parameter {key:?} (/set alone lists them)"),
                }
                sampling.validate()?;
                self.sampling = sampling;
                self.max_tokens = max_tokens;
                writeln!(out, "Set {key} to {value}.")?;
                return Ok(());
            }
        }
        writeln!(out, "Set {key}.")?;
        Ok(())
    }

    fn show(&self) -> Result<()> {
        let mut out = std::io::stdout().lock();
        let i = &self.info;
        let s = &self.sampling;
        let opt = |v: Option<String>, none: &str| v.unwrap_or_else(|| none.to_string());
        writeln!(out, "model              {}", i.file)?;
        writeln!(
            out,
            "architecture       {}, {:.2} B parameters",
            i.architecture,
            i.parameters as f64 / 1e9
        )?;
        writeln!(
            out,
            "context            {} tokens used of {} (model maximum {})",
            self.session.cached_tokens().len(),
            self.session.context_size(),
            i.max_context
        )?;
        writeln!(
            out,
            "messages           {}",
            self.conversation.messages.len()
        )?;
        writeln!(
            out,
            "thinking           {}{}",
            if self.thinking { "on" } else { "off" },
            if self.hide_thinking { " (hidden)" } else { "" }
        )?;
        writeln!(
            out,
            "system             {}",
            opt(self.conversation.system.clone(), "(none)")
        )?;
        if let Some(tools) = &self.tools {
            let mut names: Vec<String> = tools
                .registry
                .definitions()
                .into_iter()
                .map(|d| d.name)
                .collect();
            names.extend(tools.external.iter().map(|d| format!("{} (yours)", d.name)));
            writeln!(out, "tools              {}", names.join(", "))?;
        }
        writeln!(out, "parameters")?;
        writeln!(out, "  temperature        {}", s.temperature)?;
        writeln!(out, "  top_p              {}", s.top_p)?;
        writeln!(out, "  top_k              {}", s.top_k)?;
        writeln!(out, "  min_p              {}", s.min_p)?;
        writeln!(out, "  repeat_penalty     {}", s.repeat_penalty)?;
        writeln!(out, "  repeat_last_n      {}", s.repeat_last_n)?;
        writeln!(out, "  presence_penalty   {}", s.presence_penalty)?;
        writeln!(out, "  frequency_penalty  {}", s.frequency_penalty)?;
        writeln!(
            out,
            "  seed               {}",
            opt(s.seed.map(|v| v.to_string()), "random")
        )?;
        writeln!(
            out,
            "  max_tokens         {}",
            opt(self.max_tokens.map(|v| v.to_string()), "none")
        )?;
        if !self.stop.is_empty() {
            writeln!(out, "  stop               {:?}", self.stop)?;
        }
        Ok(())
    }

    fn chat_request(&self) -> Result<ChatRequest> {
        let json = serde_json::to_string(&self.conversation.to_json())?;
        let mut chat = ChatRequest::from_messages_json(&json)?;
        chat.add_generation_prompt = true;
        chat.enable_thinking = Some(self.thinking);
        Ok(chat)
    }

    /// One user message and its answer.
    fn turn(&mut self, text: &str) -> Result<()> {
        let before = self.conversation.messages.clone();
        self.conversation
            .messages
            .push(json!({"role": "user", "content": text}));
        let result = self.generate();
        if result.is_err() {
            self.conversation.messages = before;
        }
        result
    }

    fn generate(&mut self) -> Result<()> {
        let chat = self.chat_request()?;
        self.cancel.reset();
        let request = GenerateRequest {
            sampling: self.sampling.clone(),
            max_tokens: self.max_tokens,
            stop: self.stop.clone(),
            reasoning_budget: if self.thinking {
                self.reasoning_budget
            } else {
                None
            },
            overflow: ContextOverflow::DropOldestTurns,
            cancel: Some(self.cancel.clone()),
            ..GenerateRequest::chat(chat.clone())
        };
        let mut printer = Printer::new(false, self.hide_thinking);
        let (completion, answer, finish_note) = match &self.tools {
            None => {
                let mut completion = None;
                for event in self.session.generate(&request)? {
                    let event = event?;
                    printer.event(&event)?;
                    if let Event::Done(c) = event {
                        completion = Some(*c);
                    }
                }
                let completion = completion.context("generation ended without a result")?;
                printer.end(&completion)?;
                let answer = completion.answer.clone();
                (completion, answer, None)
            }
            Some(tools) => {
                let mut options = AgentOptions::new(tools.format, request);
                options.max_rounds = tools.max_rounds;
                options.external = tools.external.clone();
                let mut failure: Option<anyhow::Error> = None;
                let outcome = run_agent(
                    &mut self.session,
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
                // The conversation with the tool rounds (calls and results) in it.
                let mut messages: Vec<Value> = outcome
                    .chat
                    .messages
                    .iter()
                    .map(serde_json::to_value)
                    .collect::<Result<_, _>>()?;
                if self.conversation.system.is_some() && !messages.is_empty() {
                    messages.remove(0);
                }
                self.conversation.messages = messages;
                let note = match outcome.finish {
                    AgentFinish::ToolCalls { .. } => Some(
                        "the model called your tools (printed above); their results cannot be \
                         given back in the chat",
                    ),
                    _ => None,
                };
                let answer = match outcome.finish {
                    AgentFinish::ToolCalls { .. } => String::new(),
                    _ => outcome.answer.clone(),
                };
                (outcome.last, answer, note)
            }
        };
        let cancelled = completion.finish_reason == FinishReason::Cancelled;
        if !answer.trim().is_empty() {
            self.conversation
                .messages
                .push(json!({"role": "assistant", "content": answer}));
        } else if cancelled {
            // Nothing was written: the turn did not happen.
            if let Some(last) = self.conversation.messages.last() {
                if last["role"] == "user" {
                    self.conversation.messages.pop();
                }
            }
        } else if self
            .conversation
            .messages
            .last()
            .is_some_and(|m| m["role"] == "user")
        {
            // An empty answer still takes its place, so turns keep alternating.
            self.conversation
                .messages
                .push(json!({"role": "assistant", "content": ""}));
        }
        let dropped = completion
            .stats
            .dropped_messages
            .min(self.conversation.messages.len());
        if dropped > 0 {
            self.conversation.messages.drain(..dropped);
            self.note(&format!(
                "[the context is full: the {dropped} oldest messages were dropped]"
            ));
        }
        if let Some(note) = finish_note {
            self.note(&format!("[{note}]"));
        }
        if self.verbose {
            eprintln!("{}", stats_line(&completion));
        }
        self.last = Some(completion);
        Ok(())
    }
}

fn parse_num<T: std::str::FromStr>(key: &str, value: &str) -> Result<T> {
    value
        .parse()
        .map_err(|_| anyhow::anyhow!("invalid value {value:?} for {key}"))
}

/// `/stats`: the last turn's figures.
fn turn_stats(c: &Completion) -> String {
    let s = &c.stats;
    format!(
        "prompt tokens      {}\nreused tokens      {} (from the cache)\nprocessed tokens   {}\n\
         generated tokens   {} ({} reasoning)\nfirst token after  {:.3} s\n\
         prefill            {:.1} tok/s\ndecode             {:.1} tok/s\nfinish             {}\n\
         seed               {}",
        s.prompt_tokens,
        s.cached_tokens,
        s.prefilled_tokens,
        s.generated_tokens,
        s.reasoning_tokens,
        s.time_to_first_token_ms / 1e3,
        s.prefill_tokens_per_second,
        s.decode_tokens_per_second,
        c.finish_reason.as_str(),
        s.seed,
    )
}

fn is_broken_pipe(e: &anyhow::Error) -> bool {
    e.downcast_ref::<std::io::Error>()
        .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
}

/// A complete line typed while an answer was being written, if one is waiting.
///
/// Lines typed then wait in the terminal's line buffer. rustyline would read them all at once
/// and keep only the first (kkawakam/rustyline#690), so they are taken here instead, while the
/// terminal is still in line mode, where one `read` returns at most one whole line. A line
/// still being typed is not readable yet and is left for rustyline to edit.
#[cfg(unix)]
fn typed_ahead_line() -> Option<String> {
    use std::os::fd::AsRawFd;
    let fd = std::io::stdin().as_raw_fd();
    // SAFETY: tcgetattr fills a zeroed termios for an open descriptor.
    let mut termios: libc::termios = unsafe { std::mem::zeroed() };
    if unsafe { libc::tcgetattr(fd, &mut termios) } != 0 || termios.c_lflag & libc::ICANON == 0 {
        return None;
    }
    let mut pfd = libc::pollfd {
        fd,
        events: libc::POLLIN,
        revents: 0,
    };
    // SAFETY: one valid pollfd; a zero timeout only looks.
    if unsafe { libc::poll(&mut pfd, 1, 0) } <= 0 || pfd.revents & libc::POLLIN == 0 {
        return None;
    }
    let mut buf = [0u8; 4096];
    // SAFETY: reading into a local buffer of its own size.
    let n = unsafe { libc::read(fd, buf.as_mut_ptr().cast(), buf.len()) };
    if n <= 0 {
        // A Ctrl+D typed ahead on an empty line: rustyline reads the next one.
        return None;
    }
    let line = String::from_utf8_lossy(&buf[..n as usize]);
    Some(line.trim_end_matches(['\n', '\r']).to_string())
}

#[cfg(not(unix))]
fn typed_ahead_line() -> Option<String> {
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn conversations_are_checked() {
        let c = parse_conversation(
            r#"[{"role":"system","content":"S"},{"role":"user","content":"Hi"},
                {"role":"assistant","content":"Hello"}]"#,
        )
        .unwrap();
        assert_eq!(c.system.as_deref(), Some("S"));
        assert_eq!(c.messages.len(), 2);
        assert_eq!(c.to_json().len(), 3);
        for (bad, why) in [
            ("{}", "array"),
            ("[1]", "not an object"),
            (r#"[{"content":"x"}]"#, "role"),
            (r#"[{"role":"bot","content":"x"}]"#, "unknown role"),
            (r#"[{"role":"user"}]"#, "content"),
            (
                r#"[{"role":"user","content":"x"},{"role":"system","content":"S"}]"#,
                "first",
            ),
            ("not json", "JSON"),
        ] {
            let e = format!("{:#}", parse_conversation(bad).unwrap_err());
            assert!(e.contains(why), "{bad}: {e}");
        }
    }
}
