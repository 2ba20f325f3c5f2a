//! Reading a `POST /v1/chat/completions` body into a [`GenerateRequest`]: the messages through
//! `smollm3_chat::Message`, the sampling fields through `smollm3_gen::SamplingParams` (the one
//! table of settings, with OpenAI's names), the rest here. Every mistake is a 400 naming the
//! field.

use serde::Deserialize;
use serde_json::{Map, Value};
use smollm3_chat::{ChatRequest, Message};
use smollm3_gen::{GenerateRequest, SamplingParams};

use super::error::ApiError;

/// A parsed chat request and how to answer it.
#[derive(Debug)]
pub struct ChatCompletionRequest {
    pub request: GenerateRequest,
    /// The `model` the client named (any value is accepted and echoed).
    pub model: Option<String>,
    pub stream: bool,
    /// `stream_options.include_usage`: a last chunk with `usage` and no choices.
    pub include_usage: bool,
}

/// The fields that are neither messages nor sampling settings.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct Options {
    model: Option<String>,
    stream: bool,
    stream_options: Option<StreamOptions>,
    stop: Option<Stop>,
    n: Option<u64>,
    chat_template_kwargs: Option<TemplateKwargs>,
    reasoning_effort: Option<String>,
    tools: Option<Value>,
    response_format: Option<ResponseFormat>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct StreamOptions {
    include_usage: bool,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct TemplateKwargs {
    enable_thinking: Option<bool>,
}

#[derive(Debug, Deserialize)]
struct ResponseFormat {
    #[serde(rename = "type")]
    kind: String,
}

/// OpenAI's `stop`: one string or a list.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum Stop {
    One(String),
    Many(Vec<String>),
}

/// A JSON body read into `T`, or a 400 (413 over the size limit) naming the field.
pub fn read_body<T: serde::de::DeserializeOwned>(
    body: Result<axum::body::Bytes, axum::extract::rejection::BytesRejection>,
) -> Result<T, ApiError> {
    let body = body.map_err(ApiError::from_rejection)?;
    let value: Value = serde_json::from_slice(&body)
        .map_err(|e| ApiError::invalid(format!("the request body is not valid JSON: {e}"), None))?;
    read(value, "body")
}

/// `T` from `value`, or a 400 naming the field (`top_p`, `stream_options.include_usage`).
fn read<T: serde::de::DeserializeOwned>(value: Value, what: &str) -> Result<T, ApiError> {
    serde_path_to_error::deserialize(value).map_err(|e| {
        let path = e.path().to_string();
        let param = if path == "." { what.to_string() } else { path };
        ApiError::invalid(format!("{param}: {}", e.inner()), Some(&param))
    })
}

impl ChatCompletionRequest {
    /// Parses a request body; `defaults` are the server's sampling settings, which the
    /// request's fields override.
    pub fn parse(body: &[u8], defaults: &SamplingParams) -> Result<Self, ApiError> {
        let value: Value = serde_json::from_slice(body).map_err(|e| {
            ApiError::invalid(format!("the request body is not valid JSON: {e}"), None)
        })?;
        let Value::Object(mut fields) = value else {
            return Err(ApiError::invalid(
                "the request body must be a JSON object",
                None,
            ));
        };
        let messages = fields.remove("messages").ok_or_else(|| {
            ApiError::invalid("messages: this field is required", Some("messages"))
        })?;
        let messages = Message::list_from_value(messages)
            .map_err(|e| ApiError::invalid(e.to_string(), Some("messages")))?;
        if messages.is_empty() {
            return Err(ApiError::invalid(
                "messages: at least one message is needed",
                Some("messages"),
            ));
        }
        let sampling = sampling(&fields, defaults)?;
        let options: Options = read(Value::Object(fields), "body")?;
        if options.n.is_some_and(|n| n != 1) {
            return Err(ApiError::invalid(
                "n: only one choice per request is supported (n = 1)",
                Some("n"),
            ));
        }
        if options.tools.as_ref().is_some_and(|t| !t.is_null()) {
            return Err(ApiError::invalid(
                "tools: tool calling through the API is not supported yet",
                Some("tools"),
            ));
        }
        if let Some(format) = &options.response_format {
            if format.kind != "text" {
                return Err(ApiError::invalid(
                    format!(
                        "response_format: {:?} is not supported yet (only \"text\")",
                        format.kind
                    ),
                    Some("response_format"),
                ));
            }
        }
        let mut enable_thinking = options.chat_template_kwargs.and_then(|k| k.enable_thinking);
        match options.reasoning_effort.as_deref() {
            Some("none") => enable_thinking = Some(false),
            Some("low" | "medium" | "high") | None => {}
            Some(other) => {
                return Err(ApiError::invalid(
                    format!("reasoning_effort: {other:?} is not one of none, low, medium, high"),
                    Some("reasoning_effort"),
                ))
            }
        }
        let chat = ChatRequest {
            messages,
            add_generation_prompt: true,
            enable_thinking,
            ..Default::default()
        };
        let stop = match options.stop {
            None => Vec::new(),
            Some(Stop::One(s)) => vec![s],
            Some(Stop::Many(list)) => list,
        };
        Ok(ChatCompletionRequest {
            request: GenerateRequest {
                sampling,
                stop,
                ..GenerateRequest::chat(chat)
            },
            model: options.model,
            stream: options.stream,
            include_usage: options.stream_options.is_some_and(|o| o.include_usage),
        })
    }
}

/// The sampling settings: the server's defaults, overridden by the request's fields of the
/// same names (a `null` keeps the default), range-checked.
fn sampling(
    fields: &Map<String, Value>,
    defaults: &SamplingParams,
) -> Result<SamplingParams, ApiError> {
    let mut merged = match serde_json::to_value(defaults) {
        Ok(Value::Object(map)) => map,
        _ => Map::new(),
    };
    for (key, value) in fields {
        let Some(setting) = SamplingParams::setting(key) else {
            continue;
        };
        if !value.is_null() {
            merged.insert(setting.name.to_string(), value.clone());
        }
    }
    let params: SamplingParams = read(Value::Object(merged), "body")?;
    params.validate().map_err(ApiError::from)?;
    Ok(params)
}
