//! Tool definitions in the OpenAI `tools` shape.

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use crate::{Result, ToolsError};

/// A function the model may call: name, description and a JSON-schema for its arguments.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ToolDefinition {
    pub name: String,
    #[serde(default)]
    pub description: String,
    /// JSON schema of the arguments object (`{"type": "object", "properties": {...},
    /// "required": [...]}`); an empty object schema when absent.
    #[serde(default = "empty_object_schema")]
    pub parameters: Value,
}

fn empty_object_schema() -> Value {
    json!({"type": "object", "properties": {}})
}

impl ToolDefinition {
    pub fn new(name: impl Into<String>, description: impl Into<String>, parameters: Value) -> Self {
        ToolDefinition {
            name: name.into(),
            description: description.into(),
            parameters,
        }
    }

    /// Accepts the OpenAI shape `{"type": "function", "function": {...}}` and the bare
    /// `{"name", "description", "parameters"}` shape.
    pub fn from_value(value: &Value) -> Result<Self> {
        let obj = value
            .as_object()
            .ok_or_else(|| ToolsError::Definition(format!("expected an object, got {value}")))?;
        let inner = match obj.get("type").and_then(Value::as_str) {
            Some("function") => obj.get("function").ok_or_else(|| {
                ToolsError::Definition("`type: function` without a `function` object".into())
            })?,
            Some(other) => {
                return Err(ToolsError::Definition(format!(
                    "unsupported tool type {other:?} (only \"function\")"
                )))
            }
            None => value,
        };
        let def: ToolDefinition = serde_json::from_value(inner.clone())
            .map_err(|e| ToolsError::Definition(format!("{e} in {inner}")))?;
        def.check()?;
        Ok(def)
    }

    /// A JSON array of definitions (either shape, mixed).
    pub fn list_from_json(json: &str) -> Result<Vec<Self>> {
        let value: Value = serde_json::from_str(json)
            .map_err(|e| ToolsError::Definition(format!("tools JSON: {e}")))?;
        let items = value
            .as_array()
            .ok_or_else(|| ToolsError::Definition("tools JSON: expected an array".into()))?;
        let defs = items
            .iter()
            .enumerate()
            .map(|(i, v)| {
                Self::from_value(v).map_err(|e| ToolsError::Definition(format!("tool {i}: {e}")))
            })
            .collect::<Result<Vec<_>>>()?;
        for (i, d) in defs.iter().enumerate() {
            if defs[..i].iter().any(|e| e.name == d.name) {
                return Err(ToolsError::Duplicate(d.name.clone()));
            }
        }
        Ok(defs)
    }

    /// The OpenAI shape.
    pub fn to_openai(&self) -> Value {
        json!({"type": "function", "function": self.to_bare()})
    }

    /// The bare shape, as SmolLM3's template shows it to the model.
    pub fn to_bare(&self) -> Value {
        json!({"name": self.name, "description": self.description, "parameters": self.parameters})
    }

    /// Parameter names in the order the schema lists them (positional arguments of Python
    /// calls map onto this order).
    pub fn parameter_names(&self) -> Vec<String> {
        self.parameters
            .get("properties")
            .and_then(Value::as_object)
            .map(|p| p.keys().cloned().collect())
            .unwrap_or_default()
    }

    fn check(&self) -> Result<()> {
        let valid_name = !self.name.is_empty()
            && self.name.len() <= 64
            && self
                .name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-' || c == '.');
        if !valid_name {
            return Err(ToolsError::Definition(format!(
                "invalid tool name {:?} (1-64 of A-Z a-z 0-9 _ - .)",
                self.name
            )));
        }
        if !self.parameters.is_object() {
            return Err(ToolsError::Definition(format!(
                "{}: `parameters` must be a JSON-schema object",
                self.name
            )));
        }
        Ok(())
    }
}
