//! The XML format: `<tool_call>{"name": ..., "arguments": {...}}</tool_call>`.

use serde_json::{Map, Value};

use crate::{ParsedCall, ToolCall};

/// Parses the content of one closed `<tool_call>` span; `raw` is the span with its tags.
pub(super) fn parse_span(raw: &str, inner: &str) -> ParsedCall {
    match parse_inner(inner) {
        Ok(call) => ParsedCall::Ok {
            call,
            raw: raw.to_string(),
        },
        Err(error) => ParsedCall::Malformed {
            raw: raw.to_string(),
            error,
        },
    }
}

fn parse_inner(inner: &str) -> Result<ToolCall, String> {
    let mut stream = serde_json::Deserializer::from_str(inner).into_iter::<Value>();
    let value = match stream.next() {
        None => {
            return Err("empty <tool_call> (expected a JSON object {\"name\": ..., \
                        \"arguments\": {...}})"
                .to_string())
        }
        Some(Err(e)) => return Err(format!("invalid JSON inside <tool_call>: {e}")),
        Some(Ok(v)) => v,
    };
    let rest = inner.get(stream.byte_offset()..).unwrap_or("").trim();
    if !rest.is_empty() {
        return Err(format!(
            "trailing text after the JSON object inside <tool_call>: {} (one call per \
             <tool_call>)",
            excerpt(rest)
        ));
    }
    let Value::Object(mut obj) = value else {
        return Err(format!(
            "expected a JSON object {{\"name\": ..., \"arguments\": {{...}}}} inside \
             <tool_call>, got {}",
            kind(&value)
        ));
    };
    if let Some(key) = obj
        .keys()
        .find(|k| !matches!(k.as_str(), "name" | "arguments" | "parameters"))
    {
        return Err(format!(
            "unexpected key {key:?} in the tool call (expected only \"name\" and \"arguments\")"
        ));
    }
    let name = match obj.remove("name") {
        None => return Err("missing \"name\" in the tool call".to_string()),
        Some(Value::String(s)) => s,
        Some(other) => {
            return Err(format!(
                "\"name\" must be a string, got {}",
                kind_with_value(&other)
            ))
        }
    };
    if name.trim().is_empty() {
        return Err("empty \"name\" in the tool call".to_string());
    }
    let (key, args) = match (obj.remove("arguments"), obj.remove("parameters")) {
        (Some(_), Some(_)) => {
            return Err(
                "both \"arguments\" and \"parameters\" given (use only \"arguments\")".to_string(),
            )
        }
        (Some(a), None) => ("arguments", Some(a)),
        (None, Some(p)) => ("parameters", Some(p)),
        (None, None) => ("arguments", None),
    };
    let arguments = match args {
        None | Some(Value::Null) => Map::new(),
        Some(Value::Object(m)) => m,
        Some(Value::String(s)) => arguments_from_string(key, &s)?,
        Some(other) => {
            return Err(format!(
                "{key:?} must be a JSON object, got {}",
                kind_with_value(&other)
            ))
        }
    };
    Ok(ToolCall { name, arguments })
}

/// `"arguments": "{\"city\": \"Copenhagen\"}"`: the object serialized into a string.
fn arguments_from_string(key: &str, s: &str) -> Result<Map<String, Value>, String> {
    if s.trim().is_empty() {
        return Ok(Map::new());
    }
    match serde_json::from_str::<Value>(s) {
        Ok(Value::Object(m)) => Ok(m),
        Ok(other) => Err(format!(
            "{key:?} is a string holding {}, not a JSON object",
            kind_with_value(&other)
        )),
        Err(e) => Err(format!(
            "{key:?} is a string that is not a JSON object: invalid JSON: {e}"
        )),
    }
}

fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

fn kind_with_value(v: &Value) -> String {
    match v {
        Value::Array(_) | Value::Object(_) => kind(v).to_string(),
        _ => format!("{} ({})", kind(v), excerpt(&v.to_string())),
    }
}

/// At most 60 characters of `s`, for error messages.
fn excerpt(s: &str) -> String {
    const MAX: usize = 60;
    match s.char_indices().nth(MAX) {
        Some((i, _)) => format!("{}...", s.get(..i).unwrap_or(s)),
        None => s.to_string(),
    }
}
