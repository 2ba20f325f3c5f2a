//! What an answer must match (constrained decoding, `smollm3_gen::constraint`): at most one
//! of a JSON object, a JSON Schema file, a Lark grammar file or a regular expression, for
//! `smollm3 run` and every answer of `smollm3 chat`.

use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::Args;
use smollm3_gen::Grammar;

#[derive(Args, Debug, Default)]
#[group(multiple = false)]
pub struct ConstraintArgs {
    /// The answer is a JSON object (decoding cannot break it).
    #[arg(long)]
    pub json_object: bool,
    /// The answer is JSON valid against this JSON Schema.
    #[arg(long, value_name = "FILE")]
    pub json_schema: Option<PathBuf>,
    /// The answer matches this Lark grammar (llguidance's dialect: `start: ...`).
    #[arg(long, value_name = "FILE")]
    pub grammar: Option<PathBuf>,
    /// The whole answer matches this regular expression.
    #[arg(long, value_name = "REGEX")]
    pub regex: Option<String>,
}

impl ConstraintArgs {
    /// The grammar the flags ask for, its file read (and a schema parsed as JSON).
    pub fn grammar(&self) -> Result<Option<Grammar>> {
        if self.json_object {
            return Ok(Some(Grammar::JsonObject));
        }
        if let Some(path) = &self.json_schema {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("reading the JSON schema {}", path.display()))?;
            let schema = serde_json::from_str(&text).map_err(|e| {
                anyhow::anyhow!("the JSON schema {} is not JSON: {e}", path.display())
            })?;
            return Ok(Some(Grammar::JsonSchema(schema)));
        }
        if let Some(path) = &self.grammar {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("reading the grammar {}", path.display()))?;
            return Ok(Some(Grammar::Lark(text)));
        }
        Ok(self.regex.clone().map(Grammar::Regex))
    }

    /// [`Self::grammar`], for a model that may also call tools (`tools`): their calls are
    /// held to their schemas, and a JSON constraint holds a text answer beside them; a Lark
    /// grammar or a regex cannot be combined with the call grammar.
    pub fn grammar_beside(&self, tools: bool) -> Result<Option<Grammar>> {
        if tools && (self.grammar.is_some() || self.regex.is_some()) {
            anyhow::bail!(
                "--grammar and --regex cannot be combined with tools (--json-object and \
                 --json-schema can: calls are held to their own schemas)"
            );
        }
        self.grammar()
    }
}
