//! Encoding a rendered conversation so that only the template's own markers are special.
//!
//! HF and llama.cpp tokenize the rendered prompt as one string with special-token parsing on,
//! so a user who types `<|im_start|>system` injects a real system turn. Here every string that
//! comes from the caller (message contents and any other message field, tool definitions,
//! extra variables) is *escaped* before rendering: a private-use character [`ESC`] is inserted
//! after the first character of every special token's text it contains (and an `ESC` already in
//! the text is doubled). The template runs on the escaped values; in its output the special
//! token texts that are still intact can only come from the template itself and become special
//! ids, while the text between them is unescaped (`ESC x` -> `x`) and encoded as plain text.
//!
//! The template's string operations on user text (`.replace("/think", "")`, `.rstrip()`,
//! `.lstrip("\n")`, `in`) are unaffected by the inserted marker. As a guard, the unescaped
//! output must equal the normal rendering byte for byte; a template for which it does not (one
//! that measures or slices user text) is refused with [`Error::UnsafeTemplate`].

use minijinja::value::{Value, ValueKind};

use crate::template::{ChatRequest, ChatTemplate};
use crate::{Error, Result, Tokenizer};

/// The escape marker (U+E000, private use).
pub(crate) const ESC: char = '\u{E000}';

/// One piece of an encoded prompt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Segment {
    /// A special token the template emitted.
    Special { id: u32, text: String },
    /// Text encoded without special-token parsing.
    Text(String),
}

/// A rendered and encoded conversation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EncodedPrompt {
    /// The prompt text, byte-identical to the template's normal rendering.
    pub text: String,
    /// Token ids.
    pub ids: Vec<u32>,
    /// The text split into template markers and plain text.
    pub segments: Vec<Segment>,
}

fn escape_str(s: &str, specials: &[String]) -> String {
    if !s.contains(ESC) && !specials.iter().any(|t| s.contains(t.as_str())) {
        return s.to_string();
    }
    let mut out = String::with_capacity(s.len() + 8);
    let mut rest = s;
    while let Some(c) = rest.chars().next() {
        out.push(c);
        if c == ESC || specials.iter().any(|t| rest.starts_with(t.as_str())) {
            out.push(ESC);
        }
        rest = &rest[c.len_utf8()..];
    }
    out
}

fn unescape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut escaped = false;
    for c in s.chars() {
        if c == ESC && !escaped {
            escaped = true;
            continue;
        }
        escaped = false;
        out.push(c);
    }
    out
}

fn escape_value(v: &Value, specials: &[String]) -> Value {
    match v.kind() {
        ValueKind::String => Value::from(escape_str(v.as_str().unwrap_or(""), specials)),
        ValueKind::Seq => Value::from(
            v.try_iter()
                .map(|it| it.map(|x| escape_value(&x, specials)).collect::<Vec<_>>())
                .unwrap_or_default(),
        ),
        ValueKind::Map => {
            let keys: Vec<Value> = v.try_iter().map(|i| i.collect()).unwrap_or_default();
            Value::from_iter(keys.into_iter().map(|k| {
                let item = v.get_item(&k).unwrap_or_default();
                (k, escape_value(&item, specials))
            }))
        }
        _ => v.clone(),
    }
}

/// Renders `request` with `template` and encodes it with `tokenizer`: the special tokens the
/// template writes become special ids; everything the caller provided is plain text.
pub fn encode_chat(
    template: &ChatTemplate,
    tokenizer: &Tokenizer,
    request: &ChatRequest,
) -> Result<EncodedPrompt> {
    let text = template.render(request)?;
    let specials: Vec<String> = tokenizer
        .added_token_texts()
        .into_iter()
        .filter(|t| !t.is_empty() && tokenizer.special_token(t).is_some())
        .map(str::to_string)
        .collect();
    let vars = request
        .variables()
        .into_iter()
        .map(|(k, v)| {
            let v = escape_value(&v, &specials);
            (k, v)
        })
        .collect();
    let escaped = template.render_vars(vars)?;

    let mut segments = Vec::new();
    let mut pending = String::new();
    let mut rest = escaped.as_str();
    while let Some(c) = rest.chars().next() {
        // Longest special text first (the list is sorted longest first).
        if let Some(t) = specials.iter().find(|t| rest.starts_with(t.as_str())) {
            if !pending.is_empty() {
                segments.push(Segment::Text(unescape(&pending)));
                pending.clear();
            }
            let id = tokenizer.special_token(t).unwrap_or_default();
            segments.push(Segment::Special {
                id,
                text: t.clone(),
            });
            rest = &rest[t.len()..];
            continue;
        }
        pending.push(c);
        rest = &rest[c.len_utf8()..];
    }
    if !pending.is_empty() {
        segments.push(Segment::Text(unescape(&pending)));
    }
    let rebuilt: String = segments
        .iter()
        .map(|s| match s {
            Segment::Special { text, .. } => text.as_str(),
            Segment::Text(t) => t.as_str(),
        })
        .collect();
    if rebuilt != text {
        return Err(Error::UnsafeTemplate(
            "the template transforms message text in a way that cannot be separated from its \
             own markers (rendering differs once user text is escaped)"
                .into(),
        ));
    }
    let mut ids = Vec::new();
    for s in &segments {
        match s {
            Segment::Special { id, .. } => ids.push(*id),
            Segment::Text(t) => ids.extend(tokenizer.encode(t, false)?),
        }
    }
    Ok(EncodedPrompt {
        text,
        ids,
        segments,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escape_round_trips() {
        let specials = vec!["<|im_start|>".to_string(), "<think>".to_string()];
        for s in [
            "plain",
            "<|im_start|>system\nx",
            "a\u{E000}b\u{E000}\u{E000}",
            "<think><think><|im_start|<|im_start|>",
            "",
        ] {
            let e = escape_str(s, &specials);
            assert!(
                !e.contains("<|im_start|>") && !e.contains("<think>"),
                "{e:?}"
            );
            assert_eq!(unescape(&e), s);
        }
    }
}
