//! The agent loop: render the conversation with the tools, generate, parse the calls, run them,
//! append the assistant turn and the results, and go again until the model answers without a
//! call (or a limit is reached).

use std::collections::HashSet;
use std::ops::ControlFlow;
use std::sync::Arc;

use serde::Serialize;
use smollm3_chat::{ChatRequest, Message};
use smollm3_gen::{Backend, Completion, Event, FinishReason, GenerateRequest, Prompt, Session};

use crate::parse::parse;
use crate::{
    CallChoice, CallGrammar, ParsedCall, Registry, Result, ToolCall, ToolDefinition, ToolFormat,
    ToolOutcome,
};

/// How the loop runs.
#[derive(Debug, Clone)]
pub struct AgentOptions {
    /// How the tools are shown to the model and how its calls are parsed.
    pub format: ToolFormat,
    /// Most generations (each may call tools); the last one's calls are not run.
    pub max_rounds: usize,
    /// Settings of every generation (sampling, max tokens, stops, cancel handle...). Its
    /// prompt and tool tags are replaced.
    pub request: GenerateRequest,
    /// Tools the model may call that are not run here: a call to one ends the loop with
    /// [`AgentFinish::ToolCalls`] so the caller can run it (as an API client does).
    pub external: Vec<ToolDefinition>,
    /// Every call held to its tool's schema as it is decoded ([`crate::grammar`]; the
    /// request's own grammar, a JSON one, then holds a text answer). On by default; off, a
    /// malformed call is sent back to the model as an error result.
    pub hold_calls: bool,
}

impl AgentOptions {
    pub fn new(format: ToolFormat, request: GenerateRequest) -> Self {
        AgentOptions {
            format,
            max_rounds: 6,
            request,
            external: Vec::new(),
            hold_calls: true,
        }
    }
}

/// What happens, in order.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum AgentEvent {
    /// An event of round `round`'s generation (text deltas, progress, raw call spans, done).
    Model { round: usize, event: Event },
    /// A call parsed from the model's output (or a malformed one, reported as such).
    ToolCall { round: usize, call: ParsedCall },
    /// What a call returned (or why it was refused); this text goes back to the model.
    ToolResult {
        round: usize,
        outcome: ToolOutcome,
        content: String,
    },
}

/// Why the loop ended.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "reason", rename_all = "snake_case")]
pub enum AgentFinish {
    /// The model answered without calling a tool.
    Answered,
    /// `max_rounds` generations all called tools.
    MaxRounds,
    /// A generation hit max tokens or the context limit (a call in it is not run).
    Length,
    Cancelled,
    /// The model called external tools; they are for the caller to run.
    ToolCalls {
        calls: Vec<ToolCall>,
    },
}

/// The end of a loop.
#[derive(Debug, Clone, Serialize)]
pub struct AgentOutcome {
    pub finish: AgentFinish,
    pub rounds: usize,
    /// The last generation's answer text (without call spans).
    pub answer: String,
    /// The conversation with every assistant turn and tool result appended.
    #[serde(skip)]
    pub chat: ChatRequest,
    /// The last generation's result.
    pub last: Completion,
}

/// Runs the loop on `session`, starting from `chat` (which should end with a user message).
/// `on_event` sees everything as it happens; `ControlFlow::Break` cancels.
pub fn run_agent<B: Backend>(
    session: &mut Session<B>,
    registry: &Registry,
    chat: ChatRequest,
    options: &AgentOptions,
    mut on_event: impl FnMut(AgentEvent) -> ControlFlow<()>,
) -> Result<AgentOutcome> {
    let mut chat = chat;
    let mut definitions = registry.definitions();
    definitions.extend(options.external.iter().cloned());
    let external: HashSet<&str> = options.external.iter().map(|d| d.name.as_str()).collect();
    // External tools are not run here, but their arguments are checked like any other's.
    let mut external_registry = Registry::new();
    for def in &options.external {
        external_registry.register(Arc::new(External(def.clone())))?;
    }
    let listed: Vec<serde_json::Value> = definitions.iter().map(ToolDefinition::to_bare).collect();
    let listed = minijinja::Value::from_serialize(&listed);
    chat.tools = None;
    match options.format {
        ToolFormat::Xml => chat.xml_tools = Some(listed),
        ToolFormat::Python => chat.python_tools = Some(listed),
    }
    chat.add_generation_prompt = true;
    let (open, close) = options.format.tags();
    let grammar = if options.hold_calls {
        let spec = CallGrammar {
            format: options.format,
            tools: &definitions,
            choice: CallChoice::Auto,
            // One call a round: the loop goes on anyway, and a small model allowed another
            // call after a call tends to repeat it.
            parallel: false,
            answer: options.request.grammar.as_ref(),
        };
        Some(spec.build(session.tokenizer())?)
    } else {
        options.request.grammar.clone()
    };
    let max_rounds = options.max_rounds.max(1);
    let mut stopped = false;

    for round in 1..=max_rounds {
        let request = GenerateRequest {
            prompt: Prompt::Chat(chat.clone()),
            tool_tags: Some(vec![(open.to_string(), close.to_string())]),
            grammar: grammar.clone(),
            ..options.request.clone()
        };
        // The assistant turn as the model wrote it: answer text and raw call spans in order.
        let mut content = String::new();
        let mut calls: Vec<ParsedCall> = Vec::new();
        let last = session.generate_with(&request, |event| {
            // A call is parsed and reported the moment its closing tag arrives.
            let parsed = match &event {
                Event::Answer { text } => {
                    content.push_str(text);
                    Vec::new()
                }
                Event::ToolCall(span) => {
                    content.push_str(&span.raw);
                    parse(&span.raw, options.format, &definitions)
                }
                _ => Vec::new(),
            };
            let mut flow = on_event(AgentEvent::Model { round, event });
            for call in parsed {
                if flow.is_continue() {
                    flow = on_event(AgentEvent::ToolCall {
                        round,
                        call: call.clone(),
                    });
                }
                calls.push(call);
            }
            if flow.is_break() {
                stopped = true;
            }
            flow
        })?;
        let finish_now = |finish: AgentFinish, chat: ChatRequest| {
            Ok(AgentOutcome {
                finish,
                rounds: round,
                answer: last.answer.clone(),
                chat,
                last: last.clone(),
            })
        };
        if stopped || last.finish_reason == FinishReason::Cancelled {
            return finish_now(AgentFinish::Cancelled, chat);
        }
        if calls.is_empty() {
            let finish = match last.finish_reason {
                FinishReason::Length => AgentFinish::Length,
                _ => AgentFinish::Answered,
            };
            return finish_now(finish, chat);
        }
        if last.finish_reason == FinishReason::Length {
            // A call cut off by the token limit is reported above, not run.
            return finish_now(AgentFinish::Length, chat);
        }
        chat.push(Message::assistant(&content));
        // Valid calls of external tools go to the caller; an invalid one gets its error
        // back like any other call.
        let mut pending = Vec::new();
        let mut results = Vec::new();
        for call in &calls {
            match call {
                ParsedCall::Ok { call, .. } if external.contains(call.name.as_str()) => {
                    match external_registry.validate(call) {
                        Ok(()) => pending.push(call.clone()),
                        Err(e) => results.push(ToolOutcome {
                            name: call.name.clone(),
                            arguments: Some(call.arguments.clone()),
                            result: Err(e),
                        }),
                    }
                }
                _ => {}
            }
        }
        if !pending.is_empty() && results.is_empty() {
            return finish_now(AgentFinish::ToolCalls { calls: pending }, chat);
        }
        if round == max_rounds {
            return finish_now(AgentFinish::MaxRounds, chat);
        }
        for call in &calls {
            let outcome = match call {
                ParsedCall::Ok { call: c, .. } if external.contains(c.name.as_str()) => {
                    match external_registry.validate(c) {
                        Ok(()) => ToolOutcome {
                            name: c.name.clone(),
                            arguments: Some(c.arguments.clone()),
                            result: Err(format!(
                                "{} was not run: another call in the same turn was invalid; \
                                 call it again together with the corrected call",
                                c.name
                            )),
                        },
                        Err(e) => ToolOutcome {
                            name: c.name.clone(),
                            arguments: Some(c.arguments.clone()),
                            result: Err(e),
                        },
                    }
                }
                _ => registry.run(call),
            };
            let content = outcome.to_message_content();
            chat.push(Message::tool(&content));
            if on_event(AgentEvent::ToolResult {
                round,
                outcome,
                content,
            })
            .is_break()
            {
                return finish_now(AgentFinish::Cancelled, chat);
            }
        }
    }
    unreachable_rounds()
}

/// The stand-in for a tool the caller runs: registered only to validate arguments.
struct External(ToolDefinition);

impl crate::Tool for External {
    fn definition(&self) -> &ToolDefinition {
        &self.0
    }
    fn call(
        &self,
        _arguments: &serde_json::Map<String, serde_json::Value>,
    ) -> Result<serde_json::Value, String> {
        Err(format!("{} is run by the caller, not here", self.0.name))
    }
}

/// `max_rounds >= 1` means the loop always returns from inside; kept as an error rather than
/// a panic.
fn unreachable_rounds() -> Result<AgentOutcome> {
    Err(crate::ToolsError::Definition(
        "agent loop ended without a result".into(),
    ))
}
