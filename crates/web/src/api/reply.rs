//! A generation's events turned into what an OpenAI client reads: reasoning and content text as
//! it is written, and tool calls parsed by `smollm3-tools` into `tool_calls` entries, each
//! released whole when its closing tag arrives (text around a call still streams). The
//! streamed and the non-streamed answers are both built from these deltas, so they cannot
//! disagree.

use serde_json::{json, Value};
use smollm3_gen::{Completion, Event, FinishReason, ToolCallSpan};
use smollm3_tools::parse::parse;
use smollm3_tools::ParsedCall;

use super::request::OfferedTools;

/// One piece of the answer.
#[derive(Debug, Clone, PartialEq)]
pub enum Delta {
    Reasoning(String),
    Content(String),
    /// A complete, well-formed call of an offered tool.
    ToolCall(ToolCallDelta),
    Done {
        finish_reason: &'static str,
        completion: Box<Completion>,
    },
}

#[derive(Debug, Clone, PartialEq)]
pub struct ToolCallDelta {
    /// Position among this answer's calls (the delta's `index`).
    pub index: usize,
    pub id: String,
    pub name: String,
    /// The arguments object as a JSON string, as OpenAI sends it.
    pub arguments: String,
}

impl ToolCallDelta {
    /// The `tool_calls` entry: in a stream the call comes in one fragment, so it carries
    /// `index` with `id`, `type` and the name as a first fragment does.
    pub fn to_json(&self, with_index: bool) -> Value {
        let call = json!({
            "id": self.id,
            "type": "function",
            "function": { "name": self.name, "arguments": self.arguments },
        });
        if !with_index {
            return call;
        }
        let mut indexed = serde_json::Map::from_iter([("index".to_string(), self.index.into())]);
        indexed.extend(call.as_object().cloned().unwrap_or_default());
        Value::Object(indexed)
    }
}

/// Reads one generation's events.
pub struct Reply {
    tools: Option<OfferedTools>,
    /// Prefix of the calls' ids (the completion's id), so ids are unique per server.
    id_prefix: String,
    calls: usize,
}

impl Reply {
    pub fn new(tools: Option<OfferedTools>, completion_id: &str) -> Self {
        Reply {
            tools,
            id_prefix: completion_id.trim_start_matches("chatcmpl-").to_string(),
            calls: 0,
        }
    }

    /// The deltas one event gives (none for progress events).
    pub fn read(&mut self, event: Event) -> Vec<Delta> {
        match event {
            Event::Reasoning { text } => vec![Delta::Reasoning(text)],
            Event::Answer { text } => vec![Delta::Content(text)],
            Event::ToolCall(span) => self.calls_in(span),
            Event::PrefillProgress { .. } => Vec::new(),
            Event::Done(completion) => {
                let finish_reason = match completion.finish_reason {
                    FinishReason::Length => "length",
                    _ if self.calls > 0 => "tool_calls",
                    // A cancelled generation only ends a stream nobody reads, or one cut
                    // short by shutdown.
                    FinishReason::Stop | FinishReason::ToolCalls | FinishReason::Cancelled => {
                        "stop"
                    }
                };
                vec![Delta::Done {
                    finish_reason,
                    completion,
                }]
            }
        }
    }

    /// A call span: each well-formed call of an offered tool becomes a `tool_calls` entry;
    /// anything else (malformed, an unknown tool, a truncated span) stays in the content as
    /// the model wrote it, so nothing is lost and nothing invalid is passed off as a call.
    fn calls_in(&mut self, span: ToolCallSpan) -> Vec<Delta> {
        let Some(tools) = &self.tools else {
            return vec![Delta::Content(span.raw)];
        };
        if !span.complete {
            return vec![Delta::Content(span.raw)];
        }
        let mut deltas = Vec::new();
        for parsed in parse(&span.raw, tools.format, &tools.definitions) {
            match parsed {
                ParsedCall::Ok { call, raw }
                    if !tools.definitions.iter().any(|d| d.name == call.name) =>
                {
                    deltas.push(Delta::Content(raw));
                }
                // One call when the client asked for no parallel calls; later ones are calls
                // too, not text, so they are left out.
                ParsedCall::Ok { .. } if !tools.parallel && self.calls > 0 => {}
                ParsedCall::Ok { call, .. } => {
                    deltas.push(Delta::ToolCall(ToolCallDelta {
                        index: self.calls,
                        id: format!("call_{}_{}", self.id_prefix, self.calls),
                        name: call.name,
                        arguments: Value::Object(call.arguments).to_string(),
                    }));
                    self.calls += 1;
                }
                ParsedCall::Malformed { raw, .. } => deltas.push(Delta::Content(raw)),
            }
        }
        deltas
    }
}
