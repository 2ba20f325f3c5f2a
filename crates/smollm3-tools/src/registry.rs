//! Tools by name: argument validation against each tool's JSON schema, and a timeout per
//! call.
//!
//! Every way a call can go wrong (malformed, unknown tool, invalid arguments, a tool that
//! fails, panics or runs too long) becomes a [`ToolOutcome`] whose `result` is an error
//! message for the model; [`Registry::run`] itself never fails and never panics.

use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::Arc;
use std::thread;
use std::time::Duration;

use serde_json::{Map, Value};

use crate::{ParsedCall, Result, ToolCall, ToolDefinition, ToolOutcome, ToolsError};

/// A tool implementation.
pub trait Tool: Send + Sync {
    fn definition(&self) -> &ToolDefinition;
    /// Runs the tool on arguments already validated against the schema. `Err` is a message
    /// for the model.
    fn call(&self, arguments: &Map<String, Value>) -> Result<Value, String>;
}

/// The per-call timeout a new [`Registry`] starts with.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);

struct Entry {
    tool: Arc<dyn Tool>,
    /// The tool's `parameters` schema, compiled once at registration.
    validator: Arc<jsonschema::Validator>,
}

/// Tools by name, with argument validation and a timeout per call.
///
/// Tools are kept in registration order, which is the order [`Registry::definitions`] and
/// [`Registry::names`] report (and so the order the model sees them in).
pub struct Registry {
    tools: Vec<Entry>,
    timeout: Duration,
}

impl Default for Registry {
    fn default() -> Self {
        Registry {
            tools: Vec::new(),
            timeout: DEFAULT_TIMEOUT,
        }
    }
}

impl std::fmt::Debug for Registry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Registry")
            .field("tools", &self.names())
            .field("timeout", &self.timeout)
            .finish()
    }
}

impl Registry {
    /// An empty registry with the default timeout of 10 s per call.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a tool, compiling its `parameters` JSON schema.
    ///
    /// Errors: [`ToolsError::Definition`] when the name is empty or the schema is not a valid
    /// JSON schema (the message names the tool and the problem); [`ToolsError::Duplicate`]
    /// when a tool of that name is already registered.
    pub fn register(&mut self, tool: Arc<dyn Tool>) -> Result<()> {
        let def = tool.definition();
        if def.name.is_empty() {
            return Err(ToolsError::Definition("a tool has an empty name".into()));
        }
        if self.position(&def.name).is_some() {
            return Err(ToolsError::Duplicate(def.name.clone()));
        }
        let validator = jsonschema::validator_for(&def.parameters).map_err(|e| {
            let at = e.instance_path().as_str();
            let at = if at.is_empty() {
                String::new()
            } else {
                format!(" (at {at})")
            };
            ToolsError::Definition(format!("{}: invalid parameters schema: {e}{at}", def.name))
        })?;
        self.tools.push(Entry {
            tool,
            validator: Arc::new(validator),
        });
        Ok(())
    }

    /// The definitions of all tools, in registration order.
    pub fn definitions(&self) -> Vec<ToolDefinition> {
        self.tools
            .iter()
            .map(|e| e.tool.definition().clone())
            .collect()
    }

    /// The tool registered under `name`.
    pub fn get(&self, name: &str) -> Option<Arc<dyn Tool>> {
        self.position(name).map(|i| Arc::clone(&self.tools[i].tool))
    }

    /// The names of all tools, in registration order.
    pub fn names(&self) -> Vec<String> {
        self.tools
            .iter()
            .map(|e| e.tool.definition().name.clone())
            .collect()
    }

    pub fn is_empty(&self) -> bool {
        self.tools.is_empty()
    }

    /// How long [`Registry::run`] waits for one call.
    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    pub fn set_timeout(&mut self, timeout: Duration) {
        self.timeout = timeout;
    }

    /// Runs one call and reports what came back; every failure is an `Err` message in the
    /// outcome, meant for the model.
    ///
    /// The tool runs on a thread of its own and is waited for at most [`Registry::timeout`].
    /// A thread cannot be killed safely, so a tool that overruns the timeout is *left
    /// running* in the background: its eventual result is discarded, and it keeps whatever
    /// resources it holds until it returns. Tools should therefore bound their own work
    /// (the built-in ones do). A tool that panics is reported as failed; the panic does not
    /// reach the caller (the default panic hook still reports it on stderr).
    pub fn run(&self, call: &ParsedCall) -> ToolOutcome {
        let (call, _raw) = match call {
            ParsedCall::Malformed { raw, error } => {
                return ToolOutcome {
                    name: guess_name(raw),
                    arguments: None,
                    result: Err(format!("could not parse the tool call: {error}")),
                }
            }
            ParsedCall::Ok { call, raw } => (call, raw),
        };
        let outcome = |result| ToolOutcome {
            name: call.name.clone(),
            arguments: Some(call.arguments.clone()),
            result,
        };

        let Some(index) = self.position(&call.name) else {
            let available = if self.tools.is_empty() {
                "none".to_string()
            } else {
                self.names().join(", ")
            };
            return outcome(Err(format!(
                "unknown tool {:?}; available tools: {available}",
                call.name
            )));
        };
        let entry = &self.tools[index];
        if let Err(problems) = self.validate(call) {
            return outcome(Err(problems));
        }

        outcome(run_with_timeout(
            Arc::clone(&entry.tool),
            call.name.clone(),
            call.arguments.clone(),
            self.timeout,
        ))
    }

    /// Checks a call's arguments against its tool's schema without running it; `Err` lists
    /// every problem with its JSON pointer (or says the tool is unknown).
    pub fn validate(&self, call: &ToolCall) -> Result<(), String> {
        let Some(index) = self.position(&call.name) else {
            return Err(format!("unknown tool {:?}", call.name));
        };
        let instance = Value::Object(call.arguments.clone());
        let mut problems: Vec<(bool, String)> = self.tools[index]
            .validator
            .iter_errors(&instance)
            .map(|e| {
                let path = e.instance_path().as_str();
                if path.is_empty() {
                    (true, e.to_string())
                } else {
                    (false, format!("{path}: {e}"))
                }
            })
            .collect();
        if problems.is_empty() {
            return Ok(());
        }
        // Problems with a given argument first, then those of the object as a whole
        // (missing or extra properties); otherwise in the validator's order.
        problems.sort_by_key(|(whole, _)| *whole);
        let problems: Vec<String> = problems.into_iter().map(|(_, p)| p).collect();
        Err(format!(
            "invalid arguments for {}: {}",
            call.name,
            problems.join("; ")
        ))
    }

    fn position(&self, name: &str) -> Option<usize> {
        self.tools
            .iter()
            .position(|e| e.tool.definition().name == name)
    }
}

/// Runs `tool` on a thread of its own and waits at most `timeout` for its result. On timeout
/// the thread is detached and left to finish on its own; its result goes into a channel
/// nobody reads any more.
fn run_with_timeout(
    tool: Arc<dyn Tool>,
    name: String,
    arguments: Map<String, Value>,
    timeout: Duration,
) -> Result<Value, String> {
    let (tx, rx) = mpsc::channel();
    let spawned = thread::Builder::new()
        .name(format!("tool {name}"))
        .spawn(move || {
            // A panic unwinds past this point and drops `tx` unsent, which the receiver
            // sees as a disconnect.
            let result = tool.call(&arguments);
            // The receiver is gone if the call timed out; nothing to do then.
            let _ = tx.send(result);
        });
    let handle = match spawned {
        Ok(handle) => handle,
        Err(e) => return Err(format!("could not start tool {name}: {e}")),
    };
    match rx.recv_timeout(timeout) {
        Ok(result) => {
            // The thread has sent its result and is about to return; reap it.
            let _ = handle.join();
            result
        }
        Err(RecvTimeoutError::Disconnected) => {
            let _ = handle.join();
            Err(format!("tool {name} failed unexpectedly"))
        }
        Err(RecvTimeoutError::Timeout) => {
            // Dropping the handle detaches the thread.
            Err(format!(
                "{name} did not finish within {}",
                format_duration(timeout)
            ))
        }
    }
}

/// `10 s`, `1.5 s`, `100 ms`.
fn format_duration(d: Duration) -> String {
    if d.as_secs() == 0 {
        format!("{} ms", d.as_millis())
    } else if d.subsec_millis() == 0 {
        format!("{} s", d.as_secs())
    } else {
        format!("{:.1} s", d.as_secs_f64())
    }
}

/// The tool name a malformed call most likely meant, or "": the string after `"name":` in
/// the JSON format, or the identifier before `(` in the Python format.
fn guess_name(raw: &str) -> String {
    let text = raw.trim();
    let text = ["<tool_call>", "<code>"]
        .iter()
        .find_map(|tag| text.strip_prefix(tag))
        .unwrap_or(text)
        .trim_start();

    if let Some(pos) = text.find("\"name\"") {
        let rest = text[pos + "\"name\"".len()..].trim_start();
        if let Some(rest) = rest.strip_prefix(':') {
            if let Some(rest) = rest.trim_start().strip_prefix('"') {
                let name: String = rest.chars().take_while(|&c| c != '"').collect();
                if is_name(&name) {
                    return name;
                }
            }
        }
        return String::new();
    }

    let ident: String = text.chars().take_while(|&c| is_name_char(c)).collect();
    let after = text[ident.len()..].trim_start();
    if is_name(&ident) && after.starts_with('(') {
        ident
    } else {
        String::new()
    }
}

fn is_name_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_' || c == '-' || c == '.'
}

fn is_name(s: &str) -> bool {
    !s.is_empty() && s.len() <= 64 && s.chars().all(is_name_char)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn guesses_names_of_malformed_calls() {
        assert_eq!(
            guess_name(r#"<tool_call>{"name": "get_weather", "arguments": {"#),
            "get_weather"
        );
        assert_eq!(guess_name(r#"{"name":"x""#), "x");
        assert_eq!(guess_name("<code>get_weather(city=</code>"), "get_weather");
        assert_eq!(guess_name("get_weather (1,"), "get_weather");
        assert_eq!(guess_name("{oops"), "");
        assert_eq!(guess_name(r#"{"name": 5}"#), "");
        assert_eq!(guess_name(""), "");
        assert_eq!(guess_name("résumé("), "");
    }

    #[test]
    fn formats_durations() {
        assert_eq!(format_duration(Duration::from_secs(10)), "10 s");
        assert_eq!(format_duration(Duration::from_millis(100)), "100 ms");
        assert_eq!(format_duration(Duration::from_millis(1500)), "1.5 s");
    }
}
