//! The terminal printer shared by `run` and `chat`: the answer on stdout, reasoning dimmed on
//! stderr (or a "thought for N s" line when hidden), tool activity on stderr, and the same as
//! JSON lines with `--json`.

use std::io::{IsTerminal, Write};

use anyhow::Result;
use smollm3_gen::{Completion, Event, FinishReason};
use smollm3_tools::agent::{AgentEvent, AgentFinish, AgentOutcome};
use smollm3_tools::ParsedCall;

/// Whether colours may be used on stderr (a terminal, and `NO_COLOR` unset).
pub fn colour_on_stderr() -> bool {
    std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty())
}

pub const DIM: &str = "\x1b[2m";
pub const RESET: &str = "\x1b[0m";

/// One line of statistics, in the style of `ollama run --verbose`.
pub fn stats_line(c: &Completion) -> String {
    let s = &c.stats;
    format!(
        "prompt {} tokens ({} cached) in {:.2} s, {:.1} tok/s | generated {} tokens in {:.2} s, \
         {:.1} tok/s{} | first token after {:.2} s | finish: {}{} | seed {}",
        s.prompt_tokens,
        s.cached_tokens,
        s.prefill_ms / 1e3,
        s.prefill_tokens_per_second,
        s.generated_tokens,
        s.decode_ms / 1e3,
        s.decode_tokens_per_second,
        if s.draft_tokens > 0 {
            format!(
                " ({} of {} drafted tokens taken)",
                s.draft_accepted, s.draft_tokens
            )
        } else {
            String::new()
        },
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

    pub fn agent_end(&mut self, outcome: &AgentOutcome) -> Result<()> {
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
