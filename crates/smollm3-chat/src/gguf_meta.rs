//! The tokenizer part of a GGUF file's metadata, read with candle's GGUF reader.

use std::collections::HashMap;
use std::path::Path;

use candle_core::quantized::gguf_file::{Content, Value};

use crate::{Error, Result};

/// `tokenizer.*` metadata of one GGUF file.
#[derive(Debug, Clone)]
pub(crate) struct TokenizerMeta {
    pub model: String,
    pub pre: Option<String>,
    pub tokens: Vec<String>,
    pub token_types: Vec<i32>,
    pub merges: Vec<String>,
    pub bos: Option<u32>,
    pub eos: Option<u32>,
    pub pad: Option<u32>,
    pub add_bos: bool,
}

pub(crate) fn read_content(path: &Path) -> Result<Content> {
    let mut file = std::fs::File::open(path).map_err(|source| Error::Io {
        path: path.to_path_buf(),
        source,
    })?;
    let mut reader = std::io::BufReader::new(&mut file);
    Content::read(&mut reader).map_err(|e| Error::Gguf {
        path: path.to_path_buf(),
        // Without the backtrace candle appends when RUST_BACKTRACE is set: one line.
        message: match e {
            candle_core::Error::WithBacktrace { inner, .. } => inner.to_string(),
            other => other.to_string(),
        },
    })
}

fn meta_err(key: &str, problem: impl Into<String>) -> Error {
    Error::Metadata {
        key: key.to_string(),
        problem: problem.into(),
    }
}

fn get_string(md: &HashMap<String, Value>, key: &str) -> Result<Option<String>> {
    match md.get(key) {
        None => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(v) => Err(meta_err(
            key,
            format!("expected a string, found {:?}", v.value_type()),
        )),
    }
}

fn get_id(md: &HashMap<String, Value>, key: &str) -> Result<Option<u32>> {
    let Some(v) = md.get(key) else {
        return Ok(None);
    };
    let id = match v {
        Value::U8(x) => Some(u64::from(*x)),
        Value::U16(x) => Some(u64::from(*x)),
        Value::U32(x) => Some(u64::from(*x)),
        Value::U64(x) => Some(*x),
        Value::I8(x) => u64::try_from(*x).ok(),
        Value::I16(x) => u64::try_from(*x).ok(),
        Value::I32(x) => u64::try_from(*x).ok(),
        Value::I64(x) => u64::try_from(*x).ok(),
        _ => return Err(meta_err(key, "expected an integer token id")),
    };
    id.and_then(|x| u32::try_from(x).ok())
        .map(Some)
        .ok_or_else(|| meta_err(key, "token id out of range"))
}

fn get_strings(md: &HashMap<String, Value>, key: &str) -> Result<Option<Vec<String>>> {
    match md.get(key) {
        None => Ok(None),
        Some(Value::Array(items)) => items
            .iter()
            .enumerate()
            .map(|(i, v)| match v {
                Value::String(s) => Ok(s.clone()),
                _ => Err(meta_err(key, format!("item {i} is not a string"))),
            })
            .collect::<Result<Vec<_>>>()
            .map(Some),
        Some(_) => Err(meta_err(key, "expected an array of strings")),
    }
}

impl TokenizerMeta {
    pub(crate) fn from_content(content: &Content) -> Result<Self> {
        let md = &content.metadata;
        let model = get_string(md, "tokenizer.ggml.model")?
            .ok_or_else(|| meta_err("tokenizer.ggml.model", "missing"))?;
        let tokens = get_strings(md, "tokenizer.ggml.tokens")?
            .ok_or_else(|| meta_err("tokenizer.ggml.tokens", "missing"))?;
        let token_types = match md.get("tokenizer.ggml.token_type") {
            None => vec![1; tokens.len()],
            Some(Value::Array(items)) => items
                .iter()
                .enumerate()
                .map(|(i, v)| match v {
                    Value::I32(x) => Ok(*x),
                    Value::U32(x) => i32::try_from(*x)
                        .map_err(|_| meta_err("tokenizer.ggml.token_type", format!("item {i}"))),
                    _ => Err(meta_err(
                        "tokenizer.ggml.token_type",
                        format!("item {i} is not an integer"),
                    )),
                })
                .collect::<Result<Vec<_>>>()?,
            Some(_) => return Err(meta_err("tokenizer.ggml.token_type", "expected an array")),
        };
        if token_types.len() != tokens.len() {
            return Err(meta_err(
                "tokenizer.ggml.token_type",
                format!("{} entries for {} tokens", token_types.len(), tokens.len()),
            ));
        }
        let merges = get_strings(md, "tokenizer.ggml.merges")?.unwrap_or_default();
        let add_bos = matches!(
            md.get("tokenizer.ggml.add_bos_token"),
            Some(Value::Bool(true))
        );
        let meta = TokenizerMeta {
            model,
            pre: get_string(md, "tokenizer.ggml.pre")?,
            tokens,
            token_types,
            merges,
            bos: get_id(md, "tokenizer.ggml.bos_token_id")?,
            eos: get_id(md, "tokenizer.ggml.eos_token_id")?,
            pad: get_id(md, "tokenizer.ggml.padding_token_id")?,
            add_bos,
        };
        for (key, id) in [
            ("tokenizer.ggml.bos_token_id", meta.bos),
            ("tokenizer.ggml.eos_token_id", meta.eos),
            ("tokenizer.ggml.padding_token_id", meta.pad),
        ] {
            if let Some(id) = id {
                if id as usize >= meta.tokens.len() {
                    return Err(meta_err(
                        key,
                        format!("id {id} is past the {} tokens", meta.tokens.len()),
                    ));
                }
            }
        }
        Ok(meta)
    }
}

/// The chat template stored in a GGUF file, if any.
pub(crate) fn chat_template(content: &Content) -> Result<Option<String>> {
    get_string(&content.metadata, "tokenizer.chat_template")
}
