//! A conversation message in OpenAI's JSON shape: the one type every front end (a `/save`
//! file, `smollm3 template --messages`, an HTTP request body) reads and writes.
//!
//! What the chat template cannot use is refused when the JSON is read, with the path of the
//! field at fault (`messages[2].content[0].type: ...`): an unknown role, a non-text content part
//! (images, audio), a user message without content. Unknown *fields* are ignored, as OpenAI's
//! own API does, so clients that send `refusal` or `annotations` back keep working.
//!
//! Reading is lenient where HF and OpenAI differ: a tool call's `arguments` may be a JSON
//! string (OpenAI) or an object (HF chat templates); it is kept as the string OpenAI sends.

use serde::de::{self, Deserializer};
use serde::{Deserialize, Serialize};

use crate::{Error, Result};

/// Who wrote a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Instructions for the whole conversation (OpenAI's newer `developer` role reads as this).
    System,
    User,
    Assistant,
    /// A tool's result, answering an assistant's tool call.
    Tool,
}

impl Role {
    /// The role's name in OpenAI JSON and in the template (`"user"`).
    pub fn as_str(self) -> &'static str {
        match self {
            Role::System => "system",
            Role::User => "user",
            Role::Assistant => "assistant",
            Role::Tool => "tool",
        }
    }
}

impl<'de> Deserialize<'de> for Role {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let name = String::deserialize(deserializer)?;
        match name.as_str() {
            "system" | "developer" => Ok(Role::System),
            "user" => Ok(Role::User),
            "assistant" => Ok(Role::Assistant),
            "tool" => Ok(Role::Tool),
            other => Err(de::Error::custom(format_args!(
                "unknown role {other:?} (expected system, user, assistant or tool)"
            ))),
        }
    }
}

/// A message's content: a string, or OpenAI's array of text parts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(untagged)]
pub enum Content {
    Text(String),
    Parts(Vec<ContentPart>),
}

/// One part of an array content. Only text can be represented: this model reads no images.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ContentPart {
    Text { text: String },
}

impl Content {
    /// The text the template sees: the string, or the text parts joined by a newline (as
    /// llama.cpp and vLLM flatten parts for templates that take string content).
    pub fn text(&self) -> std::borrow::Cow<'_, str> {
        match self {
            Content::Text(s) => s.as_str().into(),
            Content::Parts(parts) => parts
                .iter()
                .map(|ContentPart::Text { text }| text.as_str())
                .collect::<Vec<_>>()
                .join("\n")
                .into(),
        }
    }
}

impl From<&str> for Content {
    fn from(s: &str) -> Self {
        Content::Text(s.to_string())
    }
}

impl From<String> for Content {
    fn from(s: String) -> Self {
        Content::Text(s)
    }
}

impl<'de> Deserialize<'de> for Content {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        /// Reads a string or an array of parts; parts are checked one by one so the error
        /// names the part (`content[1].type`).
        struct ContentVisitor;

        impl<'de> de::Visitor<'de> for ContentVisitor {
            type Value = Content;

            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a string or an array of text parts")
            }

            fn visit_str<E: de::Error>(self, v: &str) -> Result<Content, E> {
                Ok(Content::Text(v.to_string()))
            }

            fn visit_string<E: de::Error>(self, v: String) -> Result<Content, E> {
                Ok(Content::Text(v))
            }

            fn visit_seq<A: de::SeqAccess<'de>>(self, mut seq: A) -> Result<Content, A::Error> {
                let mut parts = Vec::new();
                while let Some(part) = seq.next_element::<ContentPart>()? {
                    parts.push(part);
                }
                Ok(Content::Parts(parts))
            }
        }

        deserializer.deserialize_any(ContentVisitor)
    }
}

impl<'de> Deserialize<'de> for ContentPart {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        struct RawPart {
            #[serde(rename = "type")]
            kind: String,
            text: Option<String>,
        }
        let raw = RawPart::deserialize(deserializer)?;
        match (raw.kind.as_str(), raw.text) {
            ("text", Some(text)) => Ok(ContentPart::Text { text }),
            ("text", None) => Err(de::Error::missing_field("text")),
            (other, _) => Err(de::Error::custom(format_args!(
                "content part type {other:?} is not supported (this model reads text parts only)"
            ))),
        }
    }
}

/// A tool call made by the assistant, in OpenAI's shape.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ToolCall {
    /// The call's id, which the `tool` message answering it repeats. HF-style histories may
    /// leave it out.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    /// Always `"function"`.
    #[serde(rename = "type", default = "function_kind")]
    pub kind: String,
    pub function: FunctionCall,
}

fn function_kind() -> String {
    "function".to_string()
}

/// The function a [`ToolCall`] names and its arguments.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FunctionCall {
    pub name: String,
    /// The arguments as a JSON text (OpenAI's form); an object is accepted on input and kept
    /// as its JSON text.
    #[serde(deserialize_with = "arguments_text")]
    pub arguments: String,
}

fn arguments_text<'de, D: Deserializer<'de>>(deserializer: D) -> Result<String, D::Error> {
    match serde_json::Value::deserialize(deserializer)? {
        serde_json::Value::String(s) => Ok(s),
        v @ serde_json::Value::Object(_) => Ok(v.to_string()),
        other => Err(de::Error::custom(format_args!(
            "expected a JSON object or a string holding one, got {other}"
        ))),
    }
}

/// One message of a conversation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(expecting = "a message object such as {\"role\": \"user\", \"content\": \"Hi\"}")]
pub struct Message {
    pub role: Role,
    /// `null` only for an assistant message that makes tool calls.
    #[serde(default)]
    pub content: Option<Content>,
    /// An assistant turn's reasoning (the `<think>` block), as OpenAI-compatible servers
    /// return it. The official template drops it from earlier turns.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reasoning_content: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool_calls: Option<Vec<ToolCall>>,
    /// On a `tool` message: the id of the call it answers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool_call_id: Option<String>,
    /// A participant's name, or on a `tool` message the tool's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
}

impl Message {
    /// A message with text content and nothing else.
    pub fn new(role: Role, content: impl Into<String>) -> Self {
        Message {
            role,
            content: Some(Content::Text(content.into())),
            reasoning_content: None,
            tool_calls: None,
            tool_call_id: None,
            name: None,
        }
    }

    pub fn system(content: impl Into<String>) -> Self {
        Self::new(Role::System, content)
    }

    pub fn user(content: impl Into<String>) -> Self {
        Self::new(Role::User, content)
    }

    pub fn assistant(content: impl Into<String>) -> Self {
        Self::new(Role::Assistant, content)
    }

    /// A tool's result.
    pub fn tool(content: impl Into<String>) -> Self {
        Self::new(Role::Tool, content)
    }

    /// The content as the template sees it (`""` when there is none).
    pub fn text(&self) -> std::borrow::Cow<'_, str> {
        self.content.as_ref().map_or("".into(), Content::text)
    }

    /// Reads an OpenAI-style JSON array of messages and checks each (see
    /// [`Message::check`]); an error names the field, e.g. `messages[1].role: unknown
    /// variant "bot", expected one of ...`.
    pub fn list_from_json(json: &str) -> Result<Vec<Message>> {
        let mut de = serde_json::Deserializer::from_str(json);
        let messages: Vec<Message> = serde_path_to_error::deserialize(&mut de)
            .map_err(|e| Error::Messages(field_error("messages", &e)))?;
        de.end()
            .map_err(|e| Error::Messages(format!("not valid JSON: {e}")))?;
        Self::checked(messages)
    }

    /// Like [`Message::list_from_json`], from already-parsed JSON (an HTTP request body's
    /// `messages` field), without printing and re-reading it.
    pub fn list_from_value(value: serde_json::Value) -> Result<Vec<Message>> {
        let messages: Vec<Message> = serde_path_to_error::deserialize(value)
            .map_err(|e| Error::Messages(field_error("messages", &e)))?;
        Self::checked(messages)
    }

    /// `messages` after [`Message::check`] on each, the error naming its index.
    fn checked(messages: Vec<Message>) -> Result<Vec<Message>> {
        for (i, m) in messages.iter().enumerate() {
            m.check()
                .map_err(|e| Error::Messages(format!("messages[{i}].{e}")))?;
        }
        Ok(messages)
    }

    /// What serde cannot say: content is required except on an assistant message with tool
    /// calls. The error starts with the field's name.
    pub fn check(&self) -> std::result::Result<(), String> {
        let has_calls = self.tool_calls.as_ref().is_some_and(|c| !c.is_empty());
        match (&self.content, self.role) {
            (None, Role::Assistant) if has_calls => Ok(()),
            (None, Role::Assistant) => {
                Err("content: an assistant message needs content or tool_calls".into())
            }
            (None, role) => Err(format!(
                "content: a {} message needs content",
                role.as_str()
            )),
            (Some(_), _) => Ok(()),
        }
    }
}

/// `messages[1].role: unknown role ...`: serde's message after the path of the field; a
/// file that is not JSON, or not an array, is said so first.
fn field_error(top: &str, e: &serde_path_to_error::Error<serde_json::Error>) -> String {
    use serde_json::error::Category;
    let path = e.path().to_string();
    let inner = e.inner();
    match (path.as_str(), inner.classify()) {
        (_, Category::Syntax | Category::Eof | Category::Io) => format!("not valid JSON: {inner}"),
        ("." | "", _) => format!(
            "expected a JSON array of {top} such as [{{\"role\": \"user\", \"content\": \"Hi\"}}] \
             ({inner})"
        ),
        (p, _) if p.starts_with('[') => format!("{top}{p}: {inner}"),
        (p, _) => format!("{top}.{p}: {inner}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(json: &str) -> String {
        Message::list_from_json(json).unwrap_err().to_string()
    }

    #[test]
    fn errors_name_the_field() {
        // Every message starts with what is wrong, so the Display adds no prefix.
        assert!(err("{}").starts_with("expected a JSON array"));
        for (json, expected) in [
            ("{}", "expected a JSON array of messages such as [{\"role\""),
            (
                "[1]",
                "messages[0]: invalid type: integer `1`, expected a message object",
            ),
            (
                "not json",
                "not valid JSON: expected ident at line 1 column 2",
            ),
            (r#"[{"content":"x"}]"#, "messages[0]: missing field `role`"),
            (
                r#"[{"role":"bot","content":"x"}]"#,
                "messages[0].role: unknown role \"bot\" (expected system, user, assistant or tool)",
            ),
            (
                r#"[{"role":"user","content":3}]"#,
                "messages[0].content: invalid type: integer",
            ),
            (
                r#"[{"role":"user","content":"a"},{"role":"user","content":[{"type":"image_url","image_url":{"url":"x"}}]}]"#,
                "messages[1].content[0]: content part type \"image_url\" is not supported",
            ),
            (
                r#"[{"role":"user","content":[{"type":"text"}]}]"#,
                "messages[0].content[0]: missing field `text`",
            ),
            (
                r#"[{"role":"user"}]"#,
                "messages[0].content: a user message needs content",
            ),
            (
                r#"[{"role":"assistant","content":null}]"#,
                "messages[0].content: an assistant message needs content or tool_calls",
            ),
            (
                r#"[{"role":"assistant","content":null,"tool_calls":[{"function":{"name":"f","arguments":3}}]}]"#,
                "messages[0].tool_calls[0].function.arguments: expected a JSON object",
            ),
            ("[] x", "not valid JSON: trailing characters"),
        ] {
            let e = err(json);
            assert!(
                e.contains(expected),
                "{json}\n  got: {e}\n  expected: {expected}"
            );
        }
    }

    #[test]
    fn openai_json_round_trips() {
        let json = r#"[{"role":"system","content":"S"},{"role":"user","content":[{"type":"text","text":"a"},{"type":"text","text":"b"}]},{"role":"assistant","content":null,"tool_calls":[{"id":"call_1","type":"function","function":{"name":"f","arguments":"{\"x\":1}"}}]},{"role":"tool","content":"2","tool_call_id":"call_1","name":"f"},{"role":"assistant","content":"ok","reasoning_content":"hmm"}]"#;
        let messages = Message::list_from_json(json).unwrap();
        assert_eq!(serde_json::to_string(&messages).unwrap(), json);
        assert_eq!(messages[1].text(), "a\nb");
        assert_eq!(messages[2].text(), "");
        assert_eq!(messages[3].role, Role::Tool);
        let value: serde_json::Value = serde_json::from_str(json).unwrap();
        assert_eq!(Message::list_from_value(value).unwrap(), messages);
    }

    #[test]
    fn hf_style_arguments_objects_and_developer_role_are_read() {
        let m = Message::list_from_json(
            r#"[{"role":"developer","content":"S","extra":1},{"role":"assistant","content":null,"tool_calls":[{"type":"function","function":{"name":"f","arguments":{"city":"Oslo"}}}]}]"#,
        )
        .unwrap();
        assert_eq!(m[0].role, Role::System);
        let call = &m[1].tool_calls.as_ref().unwrap()[0];
        assert_eq!(call.id, None);
        assert_eq!(call.function.arguments, r#"{"city":"Oslo"}"#);
    }
}
