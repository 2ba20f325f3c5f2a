//! Reading a `POST /v1/chat/completions` body into a [`GenerateRequest`]: the messages through
//! `smollm3_chat::Message`, the sampling fields through `smollm3_gen::SamplingParams` (the one
//! table of settings, with OpenAI's names), the rest here. Every mistake is a 400 naming the
//! field.

use serde::Deserialize;
use serde_json::{Map, Value};
use smollm3_chat::{ChatRequest, Content, Message, Role};
use smollm3_gen::{GenerateRequest, Grammar, SamplingParams};
use smollm3_tools::{CallChoice, CallGrammar, ToolCall, ToolDefinition, ToolFormat};

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
    /// The tools the model was offered, when it may call them (not with `tool_choice:
    /// "none"`): its calls are parsed against them.
    pub tools: Option<OfferedTools>,
}

/// The fields of `POST /v1/completions` besides the sampling settings.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct TextOptions {
    model: Option<String>,
    stream: bool,
    stream_options: Option<StreamOptions>,
    stop: Option<Stop>,
    n: Option<u64>,
    best_of: Option<u64>,
    echo: bool,
    suffix: Option<String>,
    logprobs: Option<Value>,
    /// Ours: `false` decodes without prompt-lookup drafts.
    prompt_lookup: Option<bool>,
    /// As in chat completions (the whole continuation is held to it).
    response_format: Option<ResponseFormat>,
    /// llama-server's `json_schema` for a completion.
    json_schema: Option<Value>,
    /// llama-server's `grammar`, in Lark (llguidance's dialect; GBNF is refused by name).
    grammar: Option<String>,
}

/// `prompt`: a string, a list of one string, or token ids (as llama-server takes them).
#[derive(Debug)]
enum TextPrompt {
    Text(String),
    Tokens(Vec<u32>),
}

impl<'de> Deserialize<'de> for TextPrompt {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let value = Value::deserialize(d)?;
        let err = |what: &str| serde::de::Error::custom(what.to_string());
        match value {
            Value::String(s) => Ok(TextPrompt::Text(s)),
            Value::Array(items) => match items.as_slice() {
                [Value::String(s)] => Ok(TextPrompt::Text(s.clone())),
                [] => Err(err("the prompt is empty")),
                _ if items.iter().all(Value::is_u64) => Ok(TextPrompt::Tokens(
                    items
                        .iter()
                        .filter_map(Value::as_u64)
                        .map(|t| u32::try_from(t).unwrap_or(u32::MAX))
                        .collect(),
                )),
                _ if items.iter().all(Value::is_string) => Err(err(
                    "one prompt per request is supported (a list of several strings was given)",
                )),
                _ => Err(err("expected a string, a list of one string, or token ids")),
            },
            other => Err(err(&format!(
                "expected a string, a list of one string, or token ids, got {other}"
            ))),
        }
    }
}

/// Tools shown to the model, and how its calls are read back.
#[derive(Debug, Clone)]
pub struct OfferedTools {
    pub format: ToolFormat,
    pub definitions: Vec<ToolDefinition>,
    /// `parallel_tool_calls`: several calls in one answer. Off unless asked for, as in
    /// llama-server: a small model that may call again after a call tends to repeat the same
    /// call until the token limit (SmolLM2 did, three identical calls in 60 tokens); off, the
    /// call grammar ends the answer after one call.
    pub parallel: bool,
    /// `tool_choice`: a call must come (of this tool), or the model may answer in text.
    pub choice: CallChoice,
}

impl OfferedTools {
    /// The grammar every answer is held to: calls that parse and match their tool's schema
    /// (`smollm3_tools::grammar`), beside a text answer held to `answer` (a JSON
    /// `response_format`) when the model may answer in text. `tokenizer` says which tags
    /// are special tokens.
    pub fn grammar(
        &self,
        answer: Option<&Grammar>,
        tokenizer: &smollm3_chat::Tokenizer,
    ) -> Result<Grammar, ApiError> {
        let spec = CallGrammar {
            format: self.format,
            tools: &self.definitions,
            choice: self.choice.clone(),
            parallel: self.parallel,
            answer,
        };
        spec.build(tokenizer)
            .map_err(|e| ApiError::invalid(format!("tools: {e}"), Some("tools")))
    }
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
    tools: Option<Vec<Value>>,
    tool_choice: Option<ToolChoice>,
    parallel_tool_calls: Option<bool>,
    response_format: Option<ResponseFormat>,
    /// llama-server's `grammar`, in Lark (llguidance's dialect; GBNF is refused by name).
    grammar: Option<String>,
    /// Ours: `false` decodes without prompt-lookup drafts.
    prompt_lookup: Option<bool>,
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
    /// SmolLM3's own switches: `true` shows the request's `tools` in that format; a list
    /// gives the definitions here instead.
    xml_tools: Option<ToolsKwarg>,
    python_tools: Option<ToolsKwarg>,
}

/// A `chat_template_kwargs.xml_tools` / `python_tools` value.
#[derive(Debug)]
enum ToolsKwarg {
    Switch(bool),
    List(Vec<Value>),
}

impl<'de> Deserialize<'de> for ToolsKwarg {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        match Value::deserialize(d)? {
            Value::Bool(on) => Ok(ToolsKwarg::Switch(on)),
            Value::Array(list) => Ok(ToolsKwarg::List(list)),
            other => Err(serde::de::Error::custom(format!(
                "expected true, false or a list of tool definitions, got {other}"
            ))),
        }
    }
}

/// OpenAI's `tool_choice`.
#[derive(Debug)]
enum ToolChoice {
    Auto,
    None,
    Required,
    Named(String),
}

impl<'de> Deserialize<'de> for ToolChoice {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let value = Value::deserialize(d)?;
        match value.as_str() {
            Some("auto") => return Ok(ToolChoice::Auto),
            Some("none") => return Ok(ToolChoice::None),
            Some("required") => return Ok(ToolChoice::Required),
            _ => {}
        }
        let named = value
            .get("function")
            .and_then(|f| f.get("name"))
            .and_then(Value::as_str)
            .filter(|_| value.get("type").and_then(Value::as_str) == Some("function"));
        match named {
            Some(name) => Ok(ToolChoice::Named(name.to_string())),
            None => Err(serde::de::Error::custom(format!(
                "expected \"auto\", \"none\", \"required\" or \
                 {{\"type\": \"function\", \"function\": {{\"name\": ...}}}}, got {value}"
            ))),
        }
    }
}

#[derive(Debug, Deserialize)]
struct ResponseFormat {
    #[serde(rename = "type")]
    kind: String,
    /// OpenAI's `{"type": "json_schema", "json_schema": {"name", "schema", "strict"}}`.
    json_schema: Option<JsonSchemaFormat>,
    /// llama-server's `{"type": "json_object", "schema": {...}}`.
    schema: Option<Value>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct JsonSchemaFormat {
    schema: Option<Value>,
}

impl ResponseFormat {
    /// What the answer must match: `text` nothing, `json_object` any object (or the
    /// `schema` llama-server accepts beside it), `json_schema` its schema. Every schema is
    /// held strictly (as OpenAI's `strict: true`): decoding cannot break it either way.
    fn grammar(self) -> Result<Option<Grammar>, ApiError> {
        let field = Some("response_format");
        match self.kind.as_str() {
            "text" => Ok(None),
            "json_object" => Ok(Some(
                self.schema.map_or(Grammar::JsonObject, Grammar::JsonSchema),
            )),
            "json_schema" => match self.json_schema.and_then(|j| j.schema) {
                Some(schema) => Ok(Some(Grammar::JsonSchema(schema))),
                None => Err(ApiError::invalid(
                    "response_format: json_schema.schema is required for type \"json_schema\"",
                    field,
                )),
            },
            other => Err(ApiError::invalid(
                format!(
                    "response_format: type {other:?} is not one of \"text\", \"json_object\", \"json_schema\""
                ),
                field,
            )),
        }
    }
}

/// OpenAI's `stop`: one string or a list.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum Stop {
    One(String),
    Many(Vec<String>),
}

impl Stop {
    /// The stop strings, within [`MAX_STOPS`] and [`MAX_STOP_BYTES`] (each is matched
    /// against every token's text: unbounded, a client could make every token slow).
    fn into_list(self) -> Result<Vec<String>, ApiError> {
        let list = match self {
            Stop::One(s) => vec![s],
            Stop::Many(list) => list,
        };
        if list.len() > MAX_STOPS {
            return Err(ApiError::invalid(
                format!("stop: {} strings, at most {MAX_STOPS}", list.len()),
                Some("stop"),
            ));
        }
        if let Some(long) = list.iter().find(|s| s.len() > MAX_STOP_BYTES) {
            return Err(ApiError::invalid(
                format!(
                    "stop: a string of {} bytes, at most {MAX_STOP_BYTES}",
                    long.len()
                ),
                Some("stop"),
            ));
        }
        Ok(list)
    }
}

/// Most stop strings a request may give (OpenAI takes 4).
pub const MAX_STOPS: usize = 16;
/// Longest stop string, in bytes.
pub const MAX_STOP_BYTES: usize = 512;
/// Most messages in a chat request (its prompt must fit the context anyway; this bounds the
/// work of rendering one that does not).
pub const MAX_MESSAGES: usize = 4096;
/// Most tools a request may offer (OpenAI's limit): each one is shown to the model and
/// compiled into the call grammar.
pub const MAX_TOOLS: usize = 128;

/// A JSON body read into `T`, or a 400 (413 over the size limit) naming the field.
pub fn read_body<T: serde::de::DeserializeOwned>(
    body: Result<axum::body::Bytes, axum::extract::rejection::BytesRejection>,
) -> Result<T, ApiError> {
    let body = body.map_err(ApiError::from_rejection)?;
    let value: Value = serde_json::from_slice(&body)
        .map_err(|e| ApiError::invalid(format!("the request body is not valid JSON: {e}"), None))?;
    read(value, "body")
}

/// The body as a JSON object, or a 400.
fn json_object(body: &[u8]) -> Result<Map<String, Value>, ApiError> {
    match serde_json::from_slice(body) {
        Ok(Value::Object(fields)) => Ok(fields),
        Ok(_) => Err(ApiError::invalid(
            "the request body must be a JSON object",
            None,
        )),
        Err(e) => Err(ApiError::invalid(
            format!("the request body is not valid JSON: {e}"),
            None,
        )),
    }
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
    /// Parses a `POST /v1/completions` body: a raw prompt, no template, no reasoning split.
    pub fn parse_text(body: &[u8], defaults: &SamplingParams) -> Result<Self, ApiError> {
        let mut fields = json_object(body)?;
        let prompt = fields
            .remove("prompt")
            .ok_or_else(|| ApiError::invalid("prompt: this field is required", Some("prompt")))?;
        let prompt: TextPrompt = read(prompt, "prompt")?;
        let sampling = sampling(&fields, defaults)?;
        let options: TextOptions = read(Value::Object(fields), "body")?;
        let unsupported = [
            ("n", options.n.is_some_and(|n| n != 1), "only n = 1"),
            (
                "best_of",
                options.best_of.is_some_and(|n| n > 1),
                "only best_of = 1",
            ),
            ("echo", options.echo, "echo is not supported"),
            (
                "suffix",
                options.suffix.is_some(),
                "suffix (insertion) is not supported",
            ),
            (
                "logprobs",
                options.logprobs.as_ref().is_some_and(|l| !l.is_null()),
                "logprobs are not supported yet",
            ),
        ];
        if let Some((param, _, why)) = unsupported.iter().find(|(_, bad, _)| *bad) {
            return Err(ApiError::invalid(format!("{param}: {why}"), Some(param)));
        }
        let prompt = match prompt {
            TextPrompt::Text(text) => smollm3_gen::Prompt::Text(text),
            TextPrompt::Tokens(ids) => smollm3_gen::Prompt::Tokens(ids),
        };
        let stop = options.stop.map_or(Ok(Vec::new()), Stop::into_list)?;
        let grammar = constraint(
            options.response_format,
            options.json_schema,
            options.grammar,
        )?;
        Ok(ChatCompletionRequest {
            request: GenerateRequest {
                sampling,
                stop,
                tool_tags: Some(Vec::new()),
                prompt_lookup: options.prompt_lookup.unwrap_or(true),
                grammar,
                ..GenerateRequest::new(prompt)
            },
            model: options.model,
            stream: options.stream,
            include_usage: options.stream_options.is_some_and(|o| o.include_usage),
            tools: None,
        })
    }

    /// Parses a request body; `defaults` are the server's sampling settings, which the
    /// request's fields override.
    pub fn parse(body: &[u8], defaults: &SamplingParams) -> Result<Self, ApiError> {
        let mut fields = json_object(body)?;
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
        if messages.len() > MAX_MESSAGES {
            return Err(ApiError::invalid(
                format!(
                    "messages: {} messages, at most {MAX_MESSAGES}",
                    messages.len()
                ),
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
        let grammar = constraint(options.response_format, None, options.grammar)?;
        let kwargs = options.chat_template_kwargs.unwrap_or_default();
        let mut enable_thinking = kwargs.enable_thinking;
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
        let (format, definitions) = tool_definitions(options.tools, kwargs)?;
        let choice = options.tool_choice.unwrap_or(ToolChoice::Auto);
        let messages = write_calls_into_content(messages, format)?;
        let mut chat = ChatRequest {
            messages,
            add_generation_prompt: true,
            enable_thinking,
            ..Default::default()
        };
        let stop = options.stop.map_or(Ok(Vec::new()), Stop::into_list)?;
        let mut request = GenerateRequest {
            sampling,
            stop,
            prompt_lookup: options.prompt_lookup.unwrap_or(true),
            grammar,
            ..GenerateRequest::chat(ChatRequest::default())
        };
        let offered = match (&choice, definitions.is_empty()) {
            (ToolChoice::None, _) | (ToolChoice::Auto, true) => {
                // Nothing to call: any tag the model writes stays text.
                request.tool_tags = Some(Vec::new());
                None
            }
            (_, true) => {
                return Err(ApiError::invalid(
                    "tool_choice: a tool call is required but no tools are given",
                    Some("tool_choice"),
                ))
            }
            (choice, false) => {
                let choice = match choice {
                    ToolChoice::Required => CallChoice::Required,
                    ToolChoice::Named(name) => {
                        if !definitions.iter().any(|d| &d.name == name) {
                            return Err(ApiError::invalid(
                                format!(
                                    "tool_choice.function.name: no tool named {name:?} in tools"
                                ),
                                Some("tool_choice.function.name"),
                            ));
                        }
                        CallChoice::Named(name.clone())
                    }
                    ToolChoice::Auto | ToolChoice::None => CallChoice::Auto,
                };
                let listed: Vec<Value> = definitions.iter().map(ToolDefinition::to_bare).collect();
                let listed = minijinja::Value::from_serialize(&listed);
                match format {
                    ToolFormat::Xml => chat.xml_tools = Some(listed),
                    ToolFormat::Python => chat.python_tools = Some(listed),
                }
                Some(OfferedTools {
                    format,
                    definitions,
                    parallel: options.parallel_tool_calls.unwrap_or(false),
                    choice,
                })
            }
        };
        request.prompt = smollm3_gen::Prompt::Chat(chat);
        Ok(ChatCompletionRequest {
            request,
            model: options.model,
            stream: options.stream,
            include_usage: options.stream_options.is_some_and(|o| o.include_usage),
            tools: offered,
        })
    }
}

/// What the answer is held to: `response_format` (OpenAI's), `json_schema` (llama-server's,
/// completions only) or `grammar` (llama-server's field, in Lark: llguidance's dialect, which
/// llama.cpp also takes when a grammar starts with `%llguidance`); at most one of them.
fn constraint(
    response_format: Option<ResponseFormat>,
    json_schema: Option<Value>,
    grammar: Option<String>,
) -> Result<Option<Grammar>, ApiError> {
    let given = [
        response_format.is_some().then_some("response_format"),
        json_schema.is_some().then_some("json_schema"),
        grammar.is_some().then_some("grammar"),
    ];
    let given: Vec<&str> = given.into_iter().flatten().collect();
    if let [_, second, ..] = given.as_slice() {
        return Err(ApiError::invalid(
            format!("{second}: give one of {}, not several", given.join(", ")),
            Some(second),
        ));
    }
    if let Some(format) = response_format {
        return format.grammar();
    }
    if let Some(schema) = json_schema {
        return Ok(Some(Grammar::JsonSchema(schema)));
    }
    match grammar {
        Some(text) if text.contains("::=") => Err(ApiError::invalid(
            "grammar: GBNF grammars are not supported; write it in Lark (llguidance's dialect, \
             as llama.cpp's %llguidance grammars), or give a json_schema or response_format",
            Some("grammar"),
        )),
        Some(text) if text.trim().is_empty() => Ok(None),
        Some(text) => Ok(Some(Grammar::Lark(text))),
        None => Ok(None),
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

/// The tools offered and their format: `tools` (OpenAI's field) in SmolLM3's XML format
/// unless `chat_template_kwargs.python_tools` asks for the Python one; lists given under
/// `chat_template_kwargs.xml_tools` / `python_tools` are added, as HF's `apply_chat_template`
/// takes them.
fn tool_definitions(
    tools: Option<Vec<Value>>,
    kwargs: TemplateKwargs,
) -> Result<(ToolFormat, Vec<ToolDefinition>), ApiError> {
    let mut listed: Vec<(String, Value)> = tools
        .unwrap_or_default()
        .into_iter()
        .enumerate()
        .map(|(i, t)| (format!("tools[{i}]"), t))
        .collect();
    let on = |kwarg: &Option<ToolsKwarg>| {
        matches!(kwarg, Some(ToolsKwarg::List(_) | ToolsKwarg::Switch(true)))
    };
    let format = match (on(&kwargs.xml_tools), on(&kwargs.python_tools)) {
        (true, true) => {
            return Err(ApiError::invalid(
                "chat_template_kwargs: give xml_tools or python_tools, not both",
                Some("chat_template_kwargs"),
            ))
        }
        (_, true) => ToolFormat::Python,
        _ => ToolFormat::Xml,
    };
    for (name, kwarg) in [
        ("xml_tools", kwargs.xml_tools),
        ("python_tools", kwargs.python_tools),
    ] {
        if let Some(ToolsKwarg::List(list)) = kwarg {
            listed.extend(
                list.into_iter()
                    .enumerate()
                    .map(|(i, t)| (format!("chat_template_kwargs.{name}[{i}]"), t)),
            );
        }
    }
    if listed.len() > MAX_TOOLS {
        return Err(ApiError::invalid(
            format!("tools: {} tools, at most {MAX_TOOLS}", listed.len()),
            Some("tools"),
        ));
    }
    let mut definitions: Vec<ToolDefinition> = Vec::with_capacity(listed.len());
    for (param, value) in listed {
        let definition = ToolDefinition::from_value(&value)
            .map_err(|e| ApiError::invalid(format!("{param}: {e}"), Some(&param)))?;
        if definitions.iter().any(|d| d.name == definition.name) {
            return Err(ApiError::invalid(
                format!("{param}: a second tool named {:?}", definition.name),
                Some(&param),
            ));
        }
        definitions.push(definition);
    }
    Ok((format, definitions))
}

/// Earlier assistant turns' `tool_calls` written into their `content` the way the model
/// writes calls: SmolLM3's template shows the model only `content`, so without this the model
/// would see results of calls it never made. A turn whose content already holds the call
/// text (a client that sends back the raw output) is left as it is.
fn write_calls_into_content(
    mut messages: Vec<Message>,
    format: ToolFormat,
) -> Result<Vec<Message>, ApiError> {
    let (open, _) = format.tags();
    for (i, message) in messages.iter_mut().enumerate() {
        let Some(calls) = message.tool_calls.as_ref().filter(|c| !c.is_empty()) else {
            continue;
        };
        if message.role != Role::Assistant || message.text().contains(open) {
            continue;
        }
        let mut text = message.text().trim_end().to_string();
        for (j, call) in calls.iter().enumerate() {
            let param = format!("messages[{i}].tool_calls[{j}].function.arguments");
            let arguments = match serde_json::from_str::<Value>(&call.function.arguments) {
                Ok(Value::Object(map)) => map,
                Ok(_) if call.function.arguments.trim().is_empty() => Map::new(),
                _ => {
                    return Err(ApiError::invalid(
                        format!("{param}: not a JSON object"),
                        Some(&param),
                    ))
                }
            };
            let written = ToolCall {
                name: call.function.name.clone(),
                arguments,
            }
            .to_text(format);
            if !text.is_empty() {
                text.push('\n');
            }
            text.push_str(&written);
        }
        message.content = Some(Content::Text(text));
    }
    Ok(messages)
}
