//! Tool calls valid by construction: a grammar for the answer of a request with tools
//! ([`smollm3_gen::Grammar::Lark`], run by [`smollm3_gen::constraint`]), so every call the
//! model writes parses, names an offered tool, and has arguments of that tool's schema.
//!
//! - XML format: `<tool_call>\n{"name": ..., "arguments": ...}\n</tool_call>`, the JSON held
//!   to a schema per tool (`name` a `const`, `arguments` the tool's `parameters`, its
//!   `$defs` lifted to the root so `#/$defs/...` references still resolve): the engine's JSON
//!   Schema support does the rest (types, `enum`, `required`, bounds, `pattern`, ...).
//! - Python format: `<code>name(key=literal, ...)</code>`, a grammar written here from each
//!   parameter schema: keyword arguments in the schema's order (the required ones first,
//!   then the optional ones, each skippable), literals of the declared types (`"str"`, `int`,
//!   `float`, `True` / `False`, `None`, lists, dicts with the declared keys), `enum` /
//!   `const` as their literals, `anyOf` / `oneOf` / type lists as alternatives, local
//!   `$ref`s (recursive ones too), string lengths up to 4096, integer ranges of up to 256
//!   values, `maxItems` up to 16; anything else any literal. Other bounds (wider ones,
//!   fractional ranges, `pattern`, `minItems`, ...) are not held here; the
//!   [`crate::Registry`] still checks them before a tool runs.
//! - [`CallChoice`]: `Required` or `Named`: the answer is calls and nothing else. `Auto`: the
//!   answer is free text, or text then calls, and nothing is constrained until the model
//!   opens a call; with an `answer` grammar (a JSON `response_format`) the answer is either
//!   text held to that grammar or calls.
//!
//! A tag that is one special token of the vocabulary (`<tool_call>` in SmolLM3's) is allowed
//! only as that token, as the model was trained to write it; its text spelling is kept out of
//! free text, so a call can never open unconstrained.

use serde_json::{json, Value};
use smollm3_chat::Tokenizer;
use smollm3_gen::constraint::json_schema_lark;
use smollm3_gen::Grammar;

use crate::{Result, ToolDefinition, ToolFormat, ToolsError};

/// Which calls the answer must or may hold (OpenAI's `tool_choice`, less `none`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CallChoice {
    /// Text, or calls (the model decides); a call, once opened, is constrained.
    Auto,
    /// One or more calls of any offered tool, nothing else.
    Required,
    /// Calls of this tool only.
    Named(String),
}

/// What [`call_grammar`] builds a grammar for.
#[derive(Debug, Clone)]
pub struct CallGrammar<'a> {
    pub format: ToolFormat,
    pub tools: &'a [ToolDefinition],
    pub choice: CallChoice,
    /// More than one call in an answer (`parallel_tool_calls`).
    pub parallel: bool,
    /// With [`CallChoice::Auto`]: what a text answer must match (JSON only).
    pub answer: Option<&'a Grammar>,
}

impl CallGrammar<'_> {
    /// The grammar for a model with `tokenizer` ([`call_grammar`] asking it which tags are
    /// special tokens).
    pub fn build(&self, tokenizer: &Tokenizer) -> Result<Grammar> {
        call_grammar(self, &|tag| tokenizer.special_token(tag).is_some())
    }
}

/// The grammar for `spec`; `is_special(tag)` says whether a tag's text is one special token
/// of the vocabulary the grammar will run over.
pub fn call_grammar(spec: &CallGrammar<'_>, is_special: &dyn Fn(&str) -> bool) -> Result<Grammar> {
    let tools: Vec<&ToolDefinition> = match &spec.choice {
        CallChoice::Named(name) => {
            let named: Vec<_> = spec.tools.iter().filter(|t| &t.name == name).collect();
            if named.is_empty() {
                return Err(ToolsError::Grammar(format!(
                    "no tool named {name:?} among the tools offered"
                )));
            }
            named
        }
        _ => spec.tools.iter().collect(),
    };
    if tools.is_empty() {
        return Err(ToolsError::Grammar(
            "a tool call is asked for but no tools are offered".into(),
        ));
    }
    let (open, close) = spec.format.tags();
    let tag = |text: &str| {
        if is_special(text) {
            text.to_string()
        } else {
            quoted(text)
        }
    };
    let mut lark = Vec::new();
    // Around the call's body, a newline or none, as the model likes: the model card writes
    // them for XML and not for Python, `to_text` writes them for both, the parsers take any
    // whitespace, and forcing one the model did not want only pushes it off its course.
    let rest = format!(r#""\n"? body "\n"? {}"#, tag(close));
    lark.push(format!("call: {} {rest}", tag(open)));
    let more = if spec.parallel {
        r#" ("\n" call)*"#
    } else {
        ""
    };
    lark.push(format!("calls: call{more}"));
    match (&spec.choice, spec.answer) {
        (CallChoice::Auto, Some(answer)) => {
            lark.push("start: answer | calls".into());
            lark.push(format!("answer: {}", answer_item(answer)?));
        }
        (CallChoice::Auto, None) => {
            // Free text never holds the opening tag's text: a call opens only where the
            // grammar takes over.
            let inside = escape_regex(open);
            lark.push(format!(r"FREE: /(.|\n)+/ & ~/(.|\n)*{inside}(.|\n)*/"));
            if is_special(open) {
                lark.push("start: FREE | FREE? calls".into());
            } else {
                // The tag is text: the text before a call ends at the first opening tag.
                lark.push(format!(r"before[lazy]: /(.|\n)*/ {}", quoted(open)));
                lark.push(format!("start: FREE | before {rest}{more}"));
            }
        }
        _ => lark.push("start: calls".into()),
    }
    let mut python = PythonRules::default();
    let mut bodies = Vec::new();
    for (i, tool) in tools.iter().enumerate() {
        let rule = format!("tool_{i}");
        let body = match spec.format {
            ToolFormat::Xml => json_schema_lark(&call_schema(tool)),
            ToolFormat::Python => python.call(tool)?,
        };
        lark.push(format!("{rule}: {body}"));
        bodies.push(rule);
    }
    lark.push(format!("body: {}", bodies.join(" | ")));
    if spec.format == ToolFormat::Python {
        lark.extend(python.rules);
        lark.push(PYTHON_LITERALS.trim().to_string());
    }
    Ok(Grammar::Lark(lark.join("\n")))
}

/// The JSON inside `<tool_call>` for `tool`: its name, and arguments of its schema.
fn call_schema(tool: &ToolDefinition) -> Value {
    let mut parameters = tool.parameters.clone();
    let mut schema = json!({
        "type": "object",
        "properties": {"name": {"const": tool.name}},
        "required": ["name", "arguments"],
        "additionalProperties": false,
    });
    if let Some(definitions) = parameters.as_object_mut() {
        for key in ["$defs", "definitions"] {
            if let Some(defs) = definitions.remove(key) {
                schema[key] = defs;
            }
        }
    }
    schema["properties"]["arguments"] = parameters;
    schema
}

/// A JSON answer grammar as an item of the call grammar.
fn answer_item(answer: &Grammar) -> Result<String> {
    match answer {
        Grammar::JsonObject => Ok(json_schema_lark(&json!({"type": "object"}))),
        Grammar::JsonSchema(schema) => Ok(json_schema_lark(schema)),
        Grammar::Regex(_) | Grammar::Lark(_) => Err(ToolsError::Grammar(
            "only a JSON answer format can be combined with tools".into(),
        )),
    }
}

/// `text` as a Lark string literal (JSON's escapes, which the engine reads).
fn quoted(text: &str) -> String {
    Value::String(text.to_string()).to_string()
}

/// `text` matched literally inside a `/regex/`.
fn escape_regex(text: &str) -> String {
    let mut out = String::new();
    for c in text.chars() {
        if r"\.+*?()|[]{}^$/&~".contains(c) {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// Python literals every Python call grammar shares (what `parse_python` reads: double-quoted
/// strings with the escapes it knows, decimal numbers, `True` / `False` / `None`, lists and
/// dicts with string keys).
const PYTHON_LITERALS: &str = r#"
py_any: py_str | py_num | py_bool | py_none | py_list | py_dict
py_list: "[" (py_any (", " py_any)*)? "]"
py_dict: "{" (py_str ": " py_any (", " py_str ": " py_any)*)? "}"
py_str: PY_STR
py_int: PY_INT
py_num: PY_NUM
py_bool: "True" | "False"
py_none: "None"
PY_STR: /"([^"\\\x00-\x1f]|\\["\\nt])*"/
PY_INT: /-?(0|[1-9][0-9]*)/
PY_NUM: /-?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?/
"#;

/// Integer ranges up to this size are written out as their literals (`"days": 1..7`); wider
/// ones are any integer.
const SMALL_RANGE: i64 = 256;

/// String lengths up to this are held; longer bounds are not.
const LONG_STRING: u64 = 4096;

/// Lists of up to this many items are held to their `maxItems`; longer bounds are not.
const SMALL_LIST: u64 = 16;

/// The rules written for the tools' parameter schemas in the Python format.
#[derive(Default)]
struct PythonRules {
    rules: Vec<String>,
    /// The parameters schema being written, which `#/...` references point into.
    root: Value,
    /// References already written, and their rules (a recursive schema refers to itself).
    references: Vec<(String, String)>,
}

impl PythonRules {
    /// `name(key=value, ...)` for `tool`.
    fn call(&mut self, tool: &ToolDefinition) -> Result<String> {
        let mut arguments = Vec::new();
        self.root = tool.parameters.clone();
        self.references.clear();
        let required = required_keys(&tool.parameters);
        if let Some(properties) = tool.parameters.get("properties").and_then(Value::as_object) {
            for (key, schema) in properties {
                if !is_identifier(key) {
                    return Err(ToolsError::Grammar(format!(
                        "tool {:?}: parameter {key:?} cannot be a Python keyword argument",
                        tool.name
                    )));
                }
                let value = self.value(schema);
                arguments.push((
                    format!("{} {value}", quoted(&format!("{key}="))),
                    required.contains(key),
                ));
            }
        }
        let opening = quoted(&format!("{}(", tool.name));
        Ok(format!("{opening} {} \")\"", sequence(arguments)))
    }

    /// The literal of `schema`'s values, as a rule name or an inline alternation.
    fn value(&mut self, schema: &Value) -> String {
        let Some(object) = schema.as_object() else {
            return "py_any".into();
        };
        if let Some(Value::String(reference)) = object.get("$ref") {
            return self.reference(reference);
        }
        if let Some(constant) = object.get("const") {
            return python_literal(constant);
        }
        if let Some(Value::Array(options)) = object.get("enum") {
            if !options.is_empty() {
                let literals: Vec<String> = options.iter().map(python_literal).collect();
                return format!("({})", literals.join(" | "));
            }
        }
        for key in ["anyOf", "oneOf"] {
            if let Some(Value::Array(options)) = object.get(key) {
                if !options.is_empty() {
                    let values: Vec<String> = options.iter().map(|o| self.value(o)).collect();
                    return format!("({})", values.join(" | "));
                }
            }
        }
        match object.get("type") {
            Some(Value::String(kind)) => self.typed(kind, schema),
            Some(Value::Array(kinds)) if !kinds.is_empty() => {
                let values: Vec<String> = kinds
                    .iter()
                    .map(|k| self.typed(k.as_str().unwrap_or(""), schema))
                    .collect();
                format!("({})", values.join(" | "))
            }
            _ if object.contains_key("properties") => self.typed("object", schema),
            _ if object.contains_key("items") => self.typed("array", schema),
            _ => "py_any".into(),
        }
    }

    fn typed(&mut self, kind: &str, schema: &Value) -> String {
        match kind {
            "string" => {
                let bound = |key| schema.get(key).and_then(Value::as_u64);
                match (bound("minLength"), bound("maxLength")) {
                    (None, None) => "py_str".into(),
                    // Longer bounds would make a large automaton for little gain.
                    (min, max) if min.max(max).is_some_and(|n| n > LONG_STRING) => "py_str".into(),
                    (min, max) => {
                        let max = max.map_or(String::new(), |m| m.to_string());
                        let min = min.unwrap_or(0);
                        self.rule(format!(r#"/"([^"\\\x00-\x1f]|\\["\\nt]){{{min},{max}}}"/"#))
                    }
                }
            }
            "integer" => {
                let bound = |key| schema.get(key).and_then(Value::as_i64);
                match (bound("minimum"), bound("maximum")) {
                    (Some(min), Some(max))
                        if max
                            .checked_sub(min)
                            .is_some_and(|d| (0..SMALL_RANGE).contains(&d)) =>
                    {
                        let literals: Vec<String> =
                            (min..=max).map(|n| quoted(&n.to_string())).collect();
                        format!("({})", literals.join(" | "))
                    }
                    _ => "py_int".into(),
                }
            }
            "number" => "py_num".into(),
            "boolean" => "py_bool".into(),
            "null" => "py_none".into(),
            "array" => match schema.get("items") {
                Some(items) if items.is_object() => {
                    let item = self.value(items);
                    let listed = match schema.get("maxItems").and_then(Value::as_u64) {
                        // Up to n items: (x (", " x (", " x)?)?)?
                        Some(0) => String::new(),
                        Some(n) if n <= SMALL_LIST => {
                            let mut more = String::new();
                            for _ in 1..n {
                                more = format!(r#"(", " {item} {more})?"#);
                            }
                            format!("({item} {more})?")
                        }
                        _ => format!(r#"({item} (", " {item})*)?"#),
                    };
                    self.rule(format!(r#""[" {listed} "]""#))
                }
                _ => "py_list".into(),
            },
            "object" => match schema.get("properties").and_then(Value::as_object) {
                Some(properties) if !properties.is_empty() => {
                    let required = required_keys(schema);
                    let mut entries = Vec::new();
                    for (key, property) in properties {
                        let value = self.value(property);
                        let key_text = format!("{}: ", Value::String(key.clone()));
                        entries.push((
                            format!("{} {value}", quoted(&key_text)),
                            required.contains(key),
                        ));
                    }
                    self.rule(format!(r#""{{" {} "}}""#, sequence(entries)))
                }
                _ => "py_dict".into(),
            },
            _ => "py_any".into(),
        }
    }

    /// The rule for a local reference (`#/$defs/slot`); any literal for others.
    fn reference(&mut self, reference: &str) -> String {
        if let Some((_, rule)) = self.references.iter().find(|(r, _)| r == reference) {
            return rule.clone();
        }
        let Some(target) = reference
            .strip_prefix('#')
            .and_then(|pointer| self.root.pointer(pointer))
            .cloned()
        else {
            return "py_any".into();
        };
        // Named before it is written, so that a schema that refers to itself ends.
        let name = format!("value_{}", self.rules.len());
        self.rules.push(String::new());
        self.references.push((reference.to_string(), name.clone()));
        let index = self.rules.len() - 1;
        let value = self.value(&target);
        self.rules[index] = format!("{name}: {value}");
        name
    }

    /// A new rule for `expansion`; its name.
    fn rule(&mut self, expansion: String) -> String {
        let name = format!("value_{}", self.rules.len());
        self.rules.push(format!("{name}: {expansion}"));
        name
    }
}

/// `items` joined by `", "`: the required ones in order, then the optional ones in order,
/// each of those skippable (the first one written takes no comma).
fn sequence(items: Vec<(String, bool)>) -> String {
    let (required, optional): (Vec<_>, Vec<_>) = items.into_iter().partition(|(_, r)| *r);
    let required: Vec<String> = required.into_iter().map(|(item, _)| item).collect();
    let optional: Vec<String> = optional.into_iter().map(|(item, _)| item).collect();
    let then = |rest: &[String]| -> String {
        rest.iter()
            .map(|item| format!(r#"(", " {item})?"#))
            .collect::<Vec<_>>()
            .join(" ")
    };
    if !required.is_empty() {
        return format!("{} {}", required.join(r#" ", " "#), then(&optional));
    }
    if optional.is_empty() {
        return String::new();
    }
    let starts: Vec<String> = (0..optional.len())
        .map(|i| format!("{} {}", optional[i], then(&optional[i + 1..])))
        .collect();
    format!("({})?", starts.join(" | "))
}

fn required_keys(schema: &Value) -> Vec<String> {
    schema
        .get("required")
        .and_then(Value::as_array)
        .map(|keys| {
            keys.iter()
                .filter_map(Value::as_str)
                .map(String::from)
                .collect()
        })
        .unwrap_or_default()
}

fn is_identifier(key: &str) -> bool {
    let mut chars = key.chars();
    chars.next().is_some_and(|c| c.is_alphabetic() || c == '_')
        && chars.all(|c| c.is_alphanumeric() || c == '_')
}

/// `value` as Python writes it, as a Lark string literal.
fn python_literal(value: &Value) -> String {
    quoted(&crate::call::python_text(value))
}
