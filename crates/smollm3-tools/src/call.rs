//! What the model asked for, and what came back.

use serde::Serialize;
use serde_json::{Map, Value};

/// The two calling conventions SmolLM3's template offers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ToolFormat {
    /// `<tool_call>{"name": ..., "arguments": {...}}</tool_call>` (template variable
    /// `xml_tools`).
    Xml,
    /// `<code>get_weather(city="Copenhagen")</code>` (template variable `python_tools`).
    Python,
}

impl ToolFormat {
    /// The span tags the generation loop reports as tool calls.
    pub fn tags(self) -> (&'static str, &'static str) {
        match self {
            ToolFormat::Xml => ("<tool_call>", "</tool_call>"),
            ToolFormat::Python => ("<code>", "</code>"),
        }
    }
}

/// A well-formed call: a tool name and its arguments object.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ToolCall {
    pub name: String,
    pub arguments: Map<String, Value>,
}

/// One call found in the model's output: parsed, or malformed with the reason and the raw
/// text kept (never dropped silently).
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum ParsedCall {
    Ok { call: ToolCall, raw: String },
    Malformed { raw: String, error: String },
}

/// The result of running (or refusing to run) one call; it is sent back to the model either
/// way.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ToolOutcome {
    pub name: String,
    pub arguments: Option<Map<String, Value>>,
    /// `Ok(output)` or `Err(message for the model)`.
    pub result: Result<Value, String>,
}

impl ToolOutcome {
    /// The text of the `tool` message: the output (strings as they are, other values as
    /// JSON), or `{"error": "..."}`.
    pub fn to_message_content(&self) -> String {
        match &self.result {
            Ok(Value::String(s)) => s.clone(),
            Ok(v) => v.to_string(),
            Err(e) => serde_json::json!({ "error": e }).to_string(),
        }
    }
}
