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

impl ToolCall {
    /// The call written as the model writes it in `format`, tags included: what an earlier
    /// assistant turn's `tool_calls` become in its text, since SmolLM3's template shows the
    /// model only `content`. XML is JSON with Python's `json.dumps` spacing (the model card's
    /// form); Python is a call with keyword arguments as Python literals. Both parse back to
    /// the same call.
    pub fn to_text(&self, format: ToolFormat) -> String {
        let (open, close) = format.tags();
        let mut body = String::new();
        match format {
            ToolFormat::Xml => {
                body.push_str("{\"name\": ");
                write_json(&Value::String(self.name.clone()), &mut body);
                body.push_str(", \"arguments\": ");
                write_json(&Value::Object(self.arguments.clone()), &mut body);
                body.push('}');
            }
            ToolFormat::Python => {
                body.push_str(&self.name);
                body.push('(');
                for (i, (key, value)) in self.arguments.iter().enumerate() {
                    if i > 0 {
                        body.push_str(", ");
                    }
                    body.push_str(key);
                    body.push('=');
                    write_python(value, &mut body);
                }
                body.push(')');
            }
        }
        format!("{open}\n{body}\n{close}")
    }
}

/// How [`write_literal`] spells the values JSON and Python disagree on.
#[derive(Clone, Copy, PartialEq)]
enum Literal {
    /// JSON with `", "` and `": "` separators, as Python's `json.dumps` writes it.
    Json,
    /// A Python literal (JSON's string escapes are valid Python).
    Python,
}

fn write_json(value: &Value, out: &mut String) {
    write_literal(value, Literal::Json, out);
}

fn write_python(value: &Value, out: &mut String) {
    write_literal(value, Literal::Python, out);
}

/// `value` written as a Python literal.
pub(crate) fn python_text(value: &Value) -> String {
    let mut out = String::new();
    write_python(value, &mut out);
    out
}

fn write_literal(value: &Value, style: Literal, out: &mut String) {
    match value {
        Value::Null if style == Literal::Python => out.push_str("None"),
        Value::Bool(true) if style == Literal::Python => out.push_str("True"),
        Value::Bool(false) if style == Literal::Python => out.push_str("False"),
        Value::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push_str(", ");
                }
                write_literal(item, style, out);
            }
            out.push(']');
        }
        Value::Object(map) => {
            out.push('{');
            for (i, (key, item)) in map.iter().enumerate() {
                if i > 0 {
                    out.push_str(", ");
                }
                out.push_str(&Value::String(key.clone()).to_string());
                out.push_str(": ");
                write_literal(item, style, out);
            }
            out.push('}');
        }
        scalar => out.push_str(&scalar.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::parse::{parse_python, parse_xml};
    use crate::ToolDefinition;

    fn call(arguments: Value) -> ToolCall {
        ToolCall {
            name: "get_weather".into(),
            arguments: arguments.as_object().cloned().unwrap_or_default(),
        }
    }

    #[test]
    fn xml_text_is_the_model_card_form() {
        let c = call(json!({"city": "Copenhagen", "days": [1, 2]}));
        assert_eq!(
            c.to_text(ToolFormat::Xml),
            "<tool_call>\n{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Copenhagen\", \"days\": [1, 2]}}\n</tool_call>"
        );
    }

    #[test]
    fn written_calls_parse_back_to_themselves() {
        let c = call(json!({
            "city": "Saint-\"Étienne\"\n", "n": -1.5, "ok": true, "none": null,
            "list": [1, "a", false], "nested": {"k": [null]}
        }));
        let def = ToolDefinition::new("get_weather", "", json!({"type": "object"}));
        for (format, parsed) in [
            (ToolFormat::Xml, parse_xml(&c.to_text(ToolFormat::Xml))),
            (
                ToolFormat::Python,
                parse_python(&c.to_text(ToolFormat::Python), std::slice::from_ref(&def)),
            ),
        ] {
            match parsed.as_slice() {
                [ParsedCall::Ok { call, .. }] => assert_eq!(call, &c, "{format:?}"),
                other => panic!("{format:?}: {other:?}"),
            }
        }
        assert_eq!(
            c.to_text(ToolFormat::Python).lines().nth(1),
            Some(
                "get_weather(city=\"Saint-\\\"Étienne\\\"\\n\", n=-1.5, ok=True, none=None, \
                 list=[1, \"a\", False], nested={\"k\": [None]})"
            )
        );
    }
}
