//! `smollm3 chat`'s loop, in the style of `ollama run`: read a line (or a `"""` block), run a
//! slash command or answer it, repeat.
//!
//! One [`Session`] holds the whole conversation, so each turn only processes the new part of
//! the prompt. Answers stream like `smollm3 run` (answer on stdout, reasoning on stderr).
//!
//! Ctrl+C: while a line is being read, rustyline gets it as a key (the terminal is in raw
//! mode): it clears a non-empty line and exits at an empty prompt. While an answer is being
//! generated the terminal is in cooked mode, so Ctrl+C is a SIGINT, which the `ctrlc`
//! handler turns into a cancel of that generation only. The handler is installed after the
//! editor is created, because rustyline installs (and on drop restores) a SIGINT handler of
//! its own. An interrupted answer stays in the conversation when some of it was written (the
//! user saw it and may ask to go on); when nothing was, the user's message is dropped too.
//! Lines typed while an answer is written are taken one by one before rustyline starts
//! (see `input::typed_ahead_line`), so none is lost.

mod commands;
mod conversation;
mod input;

use anyhow::Result;
use smollm3_chat::Message;
use smollm3_gen::{
    Backend, CancelHandle, Completion, ContextOverflow, Engine, FinishReason, GenerateRequest,
    Grammar, SamplingParams, Session,
};
use smollm3_tools::agent::AgentFinish;

use crate::answer::{answer, Answered};
use crate::args::{AnswerArgs, ToolSetup};
use crate::render::{colour_on_stderr, stats_line, Printer, DIM, RESET};
pub use conversation::Conversation;
use input::{Input, Line};
use smollm3_flags::error_line;

/// What `/show` says about the model.
pub struct ModelInfo {
    file: String,
    architecture: String,
    parameters: u64,
    max_context: usize,
}

impl ModelInfo {
    pub fn new(engine: &Engine) -> Self {
        let config = engine.model.config();
        ModelInfo {
            file: engine.path().display().to_string(),
            architecture: config.architecture.gguf_name().to_string(),
            parameters: engine.model.weights().parameters,
            max_context: config.max_context(),
        }
    }
}

/// What one read produced.
enum Entry {
    Text(String),
    /// A single line starting with `/`.
    Command(String),
    /// Nothing to do (an empty line, an abandoned multi-line block).
    Nothing,
    Exit,
}

/// The chat's state: the session (and its cache), the conversation and the settings that
/// slash commands change.
pub struct Repl<B: Backend> {
    session: Session<B>,
    conversation: Conversation,
    tools: Option<ToolSetup>,
    info: ModelInfo,
    thinking: bool,
    hide_thinking: bool,
    verbose: bool,
    /// Sampling settings and max_tokens (`/set`).
    sampling: SamplingParams,
    prompt_lookup: bool,
    stop: Vec<String>,
    reasoning_budget: Option<usize>,
    /// What every answer is held to (`--json-schema` and the like), if anything.
    grammar: Option<Grammar>,
    last: Option<Completion>,
    cancel: CancelHandle,
    no_history: bool,
}

/// How the chat starts.
pub struct ReplOptions<'a> {
    pub answer: &'a AnswerArgs,
    /// What every answer is held to.
    pub grammar: Option<Grammar>,
    pub verbose: bool,
    pub no_history: bool,
    /// A conversation loaded with `--load`.
    pub loaded: Option<Conversation>,
}

impl<B: Backend> Repl<B> {
    pub fn new(
        options: ReplOptions<'_>,
        session: Session<B>,
        tools: Option<ToolSetup>,
        info: ModelInfo,
    ) -> Self {
        let answer = options.answer;
        let mut conversation = options.loaded.unwrap_or_default();
        if answer.system.is_some() {
            conversation.system = answer.system.clone();
        }
        Repl {
            session,
            conversation,
            tools,
            info,
            thinking: !answer.no_think,
            hide_thinking: answer.hide_thinking,
            verbose: options.verbose,
            sampling: answer.sampling.params(),
            prompt_lookup: !answer.no_prompt_lookup,
            stop: answer.stop.clone(),
            reasoning_budget: answer.reasoning_budget,
            grammar: options.grammar,
            last: None,
            cancel: CancelHandle::new(),
            no_history: options.no_history,
        }
    }

    /// Reads and answers until `/bye`, Ctrl+D or the end of the input.
    pub fn run(mut self) -> Result<()> {
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
                Entry::Exit => return Ok(()),
                Entry::Nothing => continue,
                Entry::Command(line) => match self.command(&line) {
                    Ok(true) => return Ok(()),
                    Ok(false) => Ok(()),
                    Err(e) => Err(e),
                },
                Entry::Text(text) => {
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
                eprintln!("error: {}", error_line(&e));
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

    /// Reads one entry: a line, or a `"""` block of lines.
    fn read_message(&self, input: &mut Input) -> Result<Entry> {
        let (prompt, more) = if input.is_terminal() {
            (">>> ", "... ")
        } else {
            ("", "")
        };
        let line = match input.read(prompt)? {
            Line::Text(l) => l,
            Line::Interrupted | Line::Eof => return Ok(Entry::Exit),
        };
        let trimmed = line.trim();
        let Some(rest) = trimmed.strip_prefix("\"\"\"") else {
            if trimmed.is_empty() {
                return Ok(Entry::Nothing);
            }
            input.remember(trimmed);
            return Ok(if trimmed.starts_with('/') {
                Entry::Command(trimmed.to_string())
            } else {
                Entry::Text(trimmed.to_string())
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
                    Line::Interrupted => return Ok(Entry::Nothing),
                    Line::Eof => return Ok(Entry::Exit),
                }
            }
            lines.join("\n")
        };
        let text = text.trim_matches('\n').to_string();
        if text.trim().is_empty() {
            return Ok(Entry::Nothing);
        }
        input.remember(&format!("\"\"\"{text}\"\"\""));
        // A block is always a message, even if it starts with `/`.
        Ok(Entry::Text(text))
    }

    /// One user message and its answer.
    fn turn(&mut self, text: &str) -> Result<()> {
        let before = self.conversation.messages.clone();
        self.conversation.messages.push(Message::user(text));
        let result = self.generate();
        if result.is_err() {
            self.conversation.messages = before;
        }
        result
    }

    fn generate(&mut self) -> Result<()> {
        let chat = self.conversation.chat_request(self.thinking);
        self.cancel.reset();
        let request = GenerateRequest {
            sampling: self.sampling.clone(),
            prompt_lookup: self.prompt_lookup,
            stop: self.stop.clone(),
            reasoning_budget: if self.thinking {
                self.reasoning_budget
            } else {
                None
            },
            overflow: ContextOverflow::DropOldestTurns,
            cancel: Some(self.cancel.clone()),
            grammar: self.grammar.clone(),
            ..GenerateRequest::chat(chat)
        };
        let mut printer = Printer::new(false, self.hide_thinking);
        let answered = answer(
            &mut self.session,
            self.tools.as_ref(),
            &request,
            &mut printer,
        )?;
        let (completion, answer, finish_note) = match answered {
            Answered::Plain(completion) => {
                let answer = completion.answer.clone();
                (*completion, answer, None)
            }
            Answered::Tools(outcome) => {
                // The conversation with the tool rounds (calls and results) in it.
                let mut messages = outcome.chat.messages;
                if self.conversation.system.is_some() && !messages.is_empty() {
                    messages.remove(0);
                }
                self.conversation.messages = messages;
                match outcome.finish {
                    AgentFinish::ToolCalls { .. } => (
                        outcome.last,
                        String::new(),
                        Some(
                            "the model called your tools (printed above); their results cannot \
                             be given back in the chat",
                        ),
                    ),
                    _ => (outcome.last, outcome.answer, None),
                }
            }
        };
        let cancelled = completion.finish_reason == FinishReason::Cancelled;
        if !answer.trim().is_empty() {
            self.conversation.messages.push(Message::assistant(answer));
        } else if cancelled {
            // Nothing was written: the turn did not happen.
            if self.conversation.ends_with_user() {
                self.conversation.messages.pop();
            }
        } else if self.conversation.ends_with_user() {
            // An empty answer still takes its place, so turns keep alternating.
            self.conversation.messages.push(Message::assistant(""));
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

fn is_broken_pipe(e: &anyhow::Error) -> bool {
    e.downcast_ref::<std::io::Error>()
        .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
}
