//! The chat template, rendered with minijinja configured as Hugging Face configures Jinja2 in
//! `transformers.apply_chat_template`.

use std::sync::Arc;

use minijinja::value::{Kwargs, Value, ValueKind};
use minijinja::{Environment, ErrorKind};

use crate::gguf_meta::read_content;
use crate::message::{Message, Role};
use crate::pyrepr::{py_json, py_str};
use crate::time::{Clock, SystemClock};
use crate::{Error, Result, TemplateError};

/// The official SmolLM3 chat template (initial release), verbatim.
pub const OFFICIAL_TEMPLATE: &str = include_str!("smollm3_chat_template.jinja");

pub(crate) const RAISE_MARKER: &str = "raise_exception: ";

/// Everything a chat template reads.
#[derive(Debug, Clone, Default)]
pub struct ChatRequest {
    /// The conversation, in order.
    pub messages: Vec<Message>,
    /// End the prompt with the assistant header (`<|im_start|>assistant\n...`).
    pub add_generation_prompt: bool,
    /// `enable_thinking`; `None` leaves it undefined (the template defaults to thinking).
    pub enable_thinking: Option<bool>,
    /// SmolLM3's `xml_tools` (function definitions).
    pub xml_tools: Option<Value>,
    /// SmolLM3's `python_tools`.
    pub python_tools: Option<Value>,
    /// An OpenAI-style `tools` list, passed to the template as `tools` (as HF does) and,
    /// unless `xml_tools` is set, also as `xml_tools`, each `{"type": "function", "function":
    /// F}` unwrapped to `F` (the form of SmolLM3's model card).
    pub tools: Option<Value>,
    /// Keep `<think>...</think>` reasoning in assistant turns before the last user message
    /// (by default it is stripped, as chat clients do).
    pub keep_reasoning: bool,
    /// Other template variables (e.g. `bos_token`).
    pub extra: Vec<(String, Value)>,
}

fn json_value(json: &str, what: &str) -> Result<Value> {
    serde_json::from_str::<Value>(json).map_err(|e| Error::Messages(format!("{what}: {e}")))
}

impl ChatRequest {
    /// Messages from an OpenAI-style JSON array (`[{"role": "user", "content": "hi"}]`); see
    /// [`Message::list_from_json`].
    pub fn from_messages_json(json: &str) -> Result<Self> {
        Ok(ChatRequest {
            messages: Message::list_from_json(json)?,
            ..Default::default()
        })
    }

    /// Sets `tools` from an OpenAI-style JSON array.
    pub fn tools_from_json(&mut self, json: &str) -> Result<()> {
        let v = json_value(json, "tools JSON")?;
        if v.kind() != ValueKind::Seq {
            return Err(Error::Messages("tools: expected a JSON array".into()));
        }
        self.tools = Some(v);
        Ok(())
    }

    /// Adds one message.
    pub fn push(&mut self, message: Message) {
        self.messages.push(message);
    }

    /// The messages as the template sees them (the one place where [`Message`]s become
    /// template values): content as a string (text parts joined), reasoning stripped from
    /// earlier assistant turns unless `keep_reasoning`, other fields only when present.
    fn template_messages(&self) -> Vec<Value> {
        let last_user = self.messages.iter().rposition(|m| m.role == Role::User);
        self.messages
            .iter()
            .enumerate()
            .map(|(i, m)| {
                let earlier_assistant =
                    m.role == Role::Assistant && last_user.is_some_and(|u| i < u);
                let content = m.content.as_ref().map(|c| {
                    let text = c.text();
                    match text.rsplit_once("</think>") {
                        Some((_, after)) if earlier_assistant && !self.keep_reasoning => {
                            after.trim_start_matches('\n').to_string()
                        }
                        _ => text.into_owned(),
                    }
                });
                template_message(m, content)
            })
            .collect()
    }
    fn xml_tools(&self) -> Option<Value> {
        if self.xml_tools.is_some() {
            return self.xml_tools.clone();
        }
        let tools = self.tools.as_ref()?;
        let unwrapped: Vec<Value> = tools
            .try_iter()
            .ok()?
            .map(|t| {
                let is_fn =
                    t.get_attr("type").ok().as_ref().and_then(Value::as_str) == Some("function");
                match t.get_attr("function") {
                    Ok(f) if is_fn && f.kind() == ValueKind::Map => f,
                    _ => t,
                }
            })
            .collect();
        Some(Value::from(unwrapped))
    }

    /// All template variables, in a fixed order.
    pub(crate) fn variables(&self) -> Vec<(String, Value)> {
        let mut vars = vec![
            (
                "messages".to_string(),
                Value::from(self.template_messages()),
            ),
            (
                "tools".to_string(),
                self.tools.clone().unwrap_or(Value::from(())),
            ),
            ("documents".to_string(), Value::from(())),
            (
                "add_generation_prompt".to_string(),
                Value::from(self.add_generation_prompt),
            ),
        ];
        if let Some(t) = self.enable_thinking {
            vars.push(("enable_thinking".into(), Value::from(t)));
        }
        if let Some(x) = self.xml_tools() {
            vars.push(("xml_tools".into(), x));
        }
        if let Some(p) = &self.python_tools {
            vars.push(("python_tools".into(), p.clone()));
        }
        vars.extend(self.extra.iter().cloned());
        vars
    }
}

/// One message as a template value: `role`, `content` (a string, or none), then the optional
/// fields that are set. Tool-call arguments are given as objects when they hold one, the form
/// HF chat templates iterate over.
fn template_message(m: &Message, content: Option<String>) -> Value {
    let mut fields: Vec<(&str, Value)> = vec![
        ("role", Value::from(m.role.as_str())),
        ("content", content.map_or(Value::from(()), Value::from)),
    ];
    if let Some(r) = &m.reasoning_content {
        fields.push(("reasoning_content", Value::from(r.as_str())));
    }
    if let Some(calls) = &m.tool_calls {
        let calls: Vec<Value> = calls
            .iter()
            .map(|c| {
                let arguments =
                    match serde_json::from_str::<serde_json::Value>(&c.function.arguments) {
                        Ok(v @ serde_json::Value::Object(_)) => Value::from_serialize(&v),
                        _ => Value::from(c.function.arguments.as_str()),
                    };
                let function = Value::from_iter([
                    ("name", Value::from(c.function.name.as_str())),
                    ("arguments", arguments),
                ]);
                let mut call = Vec::new();
                if let Some(id) = &c.id {
                    call.push(("id", Value::from(id.as_str())));
                }
                call.push(("type", Value::from(c.kind.as_str())));
                call.push(("function", function));
                Value::from_iter(call)
            })
            .collect();
        fields.push(("tool_calls", Value::from(calls)));
    }
    if let Some(id) = &m.tool_call_id {
        fields.push(("tool_call_id", Value::from(id.as_str())));
    }
    if let Some(name) = &m.name {
        fields.push(("name", Value::from(name.as_str())));
    }
    Value::from_iter(fields)
}

/// HF's `{% generation %}...{% endgeneration %}` (assistant-mask tracking) renders its body:
/// rewrite the tags as an always-true `if` with the same whitespace control, keeping lines.
fn rewrite_generation_tags(source: &str) -> String {
    let re = regex::Regex::new(r"\{%([-+]?)\s*(end)?generation\s*([-+]?)%\}");
    match re {
        Ok(re) => re
            .replace_all(source, |c: &regex::Captures| {
                let body = if c.get(2).is_some() {
                    "endif"
                } else {
                    "if true"
                };
                format!("{{%{} {body} {}%}}", &c[1], &c[3])
            })
            .into_owned(),
        Err(_) => source.to_string(),
    }
}

/// A compiled chat template.
#[derive(Clone)]
pub struct ChatTemplate {
    source: String,
    env: Arc<Environment<'static>>,
}

impl std::fmt::Debug for ChatTemplate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChatTemplate")
            .field("source_len", &self.source.len())
            .finish()
    }
}

impl ChatTemplate {
    /// Compiles a template; syntax errors name the line.
    pub fn new(source: &str) -> Result<Self> {
        Self::with_clock(source, Arc::new(SystemClock))
    }

    /// The official SmolLM3 template built into the crate.
    pub fn official() -> Result<Self> {
        Self::new(OFFICIAL_TEMPLATE)
    }

    /// The template stored in a GGUF file (`tokenizer.chat_template`), or the official one
    /// when the file has none.
    pub fn from_gguf(path: impl AsRef<std::path::Path>) -> Result<Self> {
        Self::from_gguf_content(&read_content(path.as_ref())?)
    }

    /// Like [`ChatTemplate::from_gguf`], from already-read GGUF metadata.
    pub fn from_gguf_content(content: &candle_core::quantized::gguf_file::Content) -> Result<Self> {
        match crate::gguf_meta::chat_template(content)? {
            Some(t) => Self::new(&t),
            None => Self::official(),
        }
    }

    /// Compiles a template whose `strftime_now` reads `clock`.
    pub fn with_clock(source: &str, clock: Arc<dyn Clock>) -> Result<Self> {
        let mut env = Environment::new();
        env.set_trim_blocks(true);
        env.set_lstrip_blocks(true);
        env.set_keep_trailing_newline(false);
        env.set_unknown_method_callback(minijinja_contrib::pycompat::unknown_method_callback);
        env.add_function(
            "raise_exception",
            |msg: String| -> Result<Value, minijinja::Error> {
                Err(minijinja::Error::new(
                    ErrorKind::InvalidOperation,
                    format!("{RAISE_MARKER}{msg}"),
                ))
            },
        );
        let c = clock;
        env.add_function("strftime_now", move |format: String| {
            c.now().strftime(&format)
        });
        env.add_filter("string", |v: Value| py_str(&v));
        env.add_filter(
            "tojson",
            |v: Value, kwargs: Kwargs| -> Result<String, minijinja::Error> {
                let indent: Option<usize> = kwargs.get("indent")?;
                let _: Option<bool> = kwargs.get("ensure_ascii")?;
                let _: Option<bool> = kwargs.get("sort_keys")?;
                kwargs.assert_all_used()?;
                let mut out = String::new();
                py_json(&v, indent, 0, &mut out);
                Ok(out)
            },
        );
        let rewritten = rewrite_generation_tags(source);
        env.add_template_owned("chat_template", rewritten)
            .map_err(|e| TemplateError::from_minijinja(&e, source))?;
        Ok(ChatTemplate {
            source: source.to_string(),
            env: Arc::new(env),
        })
    }

    /// The same template with another clock.
    pub fn set_clock(&mut self, clock: Arc<dyn Clock>) -> Result<()> {
        *self = Self::with_clock(&self.source, clock)?;
        Ok(())
    }

    /// The template source as given.
    pub fn source(&self) -> &str {
        &self.source
    }

    /// Renders a conversation to the prompt text.
    pub fn render(&self, request: &ChatRequest) -> Result<String> {
        self.render_vars(request.variables())
    }

    pub(crate) fn render_vars(&self, vars: Vec<(String, Value)>) -> Result<String> {
        let tmpl = self
            .env
            .get_template("chat_template")
            .map_err(|e| TemplateError::from_minijinja(&e, &self.source))?;
        let ctx = Value::from_iter(vars);
        tmpl.render(ctx)
            .map_err(|e| TemplateError::from_minijinja(&e, &self.source).into())
    }
}
