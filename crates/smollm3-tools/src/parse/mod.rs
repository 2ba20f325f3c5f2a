//! Finding and parsing SmolLM3's tool calls in the model's output text.
//!
//! Both parsers return one [`ParsedCall`] per call found, in order: [`ParsedCall::Ok`] with the
//! call and its raw text, or [`ParsedCall::Malformed`] with the raw text and a message saying
//! exactly what is wrong (meant to be sent back to the model). Nothing found means no call was
//! attempted; an attempted call is never dropped silently. Text outside the spans is ignored.
//! No input makes them panic, and nothing is ever executed.
//!
//! # XML ([`parse_xml`])
//!
//! Every `<tool_call>` ... `</tool_call>` span holds one JSON object, with any whitespace
//! around it:
//!
//! ```text
//! <tool_call>
//! {"name": "get_weather", "arguments": {"city": "Copenhagen"}}
//! </tool_call>
//! ```
//!
//! Tolerated: `"arguments"` given as a string holding the JSON object
//! (`"arguments": "{\"city\": \"Copenhagen\"}"`), `"parameters"` instead of `"arguments"`, and
//! missing, `null` or empty-string arguments (no arguments). Rejected: invalid JSON (with
//! serde's line and column, counted from just after `<tool_call>`), anything but an object,
//! a missing, non-string or empty `"name"`, arguments that are not an object, keys other than
//! `name` / `arguments` / `parameters`, text after the object inside the tags, and a
//! `<tool_call>` with no `</tool_call>` (output truncated, or a new `<tool_call>` first).
//! The raw text of a call is the whole span, tags included.
//!
//! # Python ([`parse_python`])
//!
//! Every `<code>` ... `</code>` span holds statements separated by newlines or `;` (blank
//! lines and `#` comments ignored, a Markdown fence around the code tolerated), each one a call
//! of one of `tools` with literal arguments:
//!
//! ```text
//! <code>
//! get_weather(city="Copenhagen")
//! get_weather("Paris", unit='celsius')   # positional: the schema's `properties` order
//! print(get_time(timezone="UTC"))        # `print(call)` is taken as `call`
//! </code>
//! ```
//!
//! Literals: strings (`'..'`, `".."`, triple-quoted, `r` raw, `u`, escapes `\n \t \\ \' \"
//! \xNN \uNNNN \UNNNNNNNN` and octal, adjacent strings concatenated), integers (`-12`,
//! `1_000`, `0xff`, `0o17`, `0b101`; 64-bit), floats (`1.5`, `.5`, `1e3`, `-2.0`),
//! `True` / `False` / `None`, lists and tuples (JSON arrays), dicts with string keys (JSON
//! objects), nested up to 64 levels, trailing commas allowed, newlines inside brackets
//! allowed. `print(tool(...))` is accepted as the call itself because models often wrap
//! calls in `print` (unless a tool is itself named `print`). Tool names containing `.` or
//! `-` are matched as written (`web.search(q="x")`).
//!
//! Everything else is one [`ParsedCall::Malformed`] per statement, whose raw text is that
//! statement (other statements of the span still parse): assignments, attribute calls
//! (`os.system(...)`), unknown functions, variables, calls or expressions as arguments,
//! lambdas, comprehensions, `*args` / `**kwargs`, f-strings, bytes, sets, imports and every
//! other kind of statement (a block statement such as `for ...:` takes its indented body
//! along), too many positional arguments, an argument given twice. The raw text of a call is
//! its statement's source text.

mod python;
mod xml;

use smollm3_gen::QuoteTracker;

use crate::{ParsedCall, ToolDefinition, ToolFormat};

/// Every `<tool_call>...</tool_call>` span in `text` (an unclosed one at the end included).
pub fn parse_xml(text: &str) -> Vec<ParsedCall> {
    find_spans(text, ToolFormat::Xml.tags())
        .into_iter()
        .map(|span| match span.unclosed {
            Some(error) => ParsedCall::Malformed {
                raw: span.raw.to_string(),
                error,
            },
            None => xml::parse_span(span.raw, span.inner),
        })
        .collect()
}

/// Every call in every `<code>...</code>` span of `text`.
pub fn parse_python(text: &str, tools: &[ToolDefinition]) -> Vec<ParsedCall> {
    let mut out = Vec::new();
    for span in find_spans(text, ToolFormat::Python.tags()) {
        match span.unclosed {
            Some(error) => out.push(ParsedCall::Malformed {
                raw: span.raw.to_string(),
                error,
            }),
            None => {
                let calls = python::parse_code(span.inner, tools);
                if calls.is_empty() {
                    out.push(ParsedCall::Malformed {
                        raw: span.raw.to_string(),
                        error: "no tool call inside <code>...</code>".to_string(),
                    });
                }
                out.extend(calls);
            }
        }
    }
    out
}

/// Dispatches on the format.
pub fn parse(text: &str, format: ToolFormat, tools: &[ToolDefinition]) -> Vec<ParsedCall> {
    match format {
        ToolFormat::Xml => parse_xml(text),
        ToolFormat::Python => parse_python(text, tools),
    }
}

/// One `open ... close` span of the text.
#[derive(Debug, PartialEq)]
struct Span<'a> {
    /// The span, tags included (up to the end of the text, or to the next opening tag, when
    /// unclosed).
    raw: &'a str,
    /// Between the tags.
    inner: &'a str,
    /// `Some(error)` when there is no closing tag.
    unclosed: Option<String>,
}

/// Every `open ... close` span of `text`. Inside a span, tags in quoted strings are text
/// (a JSON or Python string may hold them: `{"q": "rust <tool_call> tags"}`), as the
/// generation's streaming splitter reads them ([`QuoteTracker`]); when no tag is found
/// outside quotes, the first one anywhere (an unterminated string then gets its own error).
fn find_spans<'a>(text: &'a str, (open, close): (&str, &str)) -> Vec<Span<'a>> {
    let mut spans = Vec::new();
    let mut pos = 0;
    while let Some(found) = text.get(pos..).and_then(|rest| rest.find(open)) {
        let start = pos + found;
        let content = start + open.len();
        let rest = text.get(content..).unwrap_or("");
        // Where the quotes cannot be followed (an unterminated or multi-line string), the
        // first tag in the text, quoted or not, as before quotes were read.
        let next = QuoteTracker::default()
            .find(rest, &[close, open])
            .or_else(|| first_tag(rest, &[close, open]));
        match next {
            Some((i, 0)) => {
                let (c, end) = (content + i, content + i + close.len());
                spans.push(Span {
                    raw: text.get(start..end).unwrap_or(""),
                    inner: text.get(content..c).unwrap_or(""),
                    unclosed: None,
                });
                pos = end;
            }
            Some((i, _)) => {
                let n = content + i;
                spans.push(Span {
                    raw: text.get(start..n).unwrap_or("").trim_end(),
                    inner: text.get(content..n).unwrap_or(""),
                    unclosed: Some(format!(
                        "unclosed {open}: a new {open} starts before {close}"
                    )),
                });
                pos = n;
            }
            None => {
                spans.push(Span {
                    raw: text.get(start..).unwrap_or(""),
                    inner: rest,
                    unclosed: Some(format!(
                        "unclosed {open}: no {close} before the end of the output (truncated?)"
                    )),
                });
                pos = text.len();
            }
        }
    }
    spans
}

/// The first of `tags` in `text`: its byte offset and which tag.
fn first_tag(text: &str, tags: &[&str]) -> Option<(usize, usize)> {
    tags.iter()
        .enumerate()
        .filter_map(|(which, tag)| text.find(tag).map(|at| (at, which)))
        .min()
}

#[cfg(test)]
mod tests {
    use super::*;

    const XML: (&str, &str) = ("<tool_call>", "</tool_call>");

    #[test]
    fn spans_closed_unclosed_and_interrupted() {
        let text = "a <tool_call>x</tool_call> b <tool_call>y <tool_call>z</tool_call><tool_call>w";
        let spans = find_spans(text, XML);
        assert_eq!(spans.len(), 4);
        assert_eq!(spans[0].raw, "<tool_call>x</tool_call>");
        assert_eq!(spans[0].inner, "x");
        assert!(spans[0].unclosed.is_none());
        assert_eq!(spans[1].raw, "<tool_call>y");
        assert!(spans[1]
            .unclosed
            .as_deref()
            .unwrap()
            .contains("a new <tool_call>"));
        assert_eq!(spans[2].inner, "z");
        assert_eq!(spans[3].raw, "<tool_call>w");
        assert!(spans[3].unclosed.as_deref().unwrap().contains("truncated"));
    }

    #[test]
    fn tags_inside_an_arguments_strings_are_text() {
        // The issue's example, then a closing tag in a string, then Python's quotes.
        let text = r#"<tool_call>{"name": "search", "arguments": {"q": "rust <tool_call> tags"}}</tool_call>"#;
        match parse_xml(text).as_slice() {
            [ParsedCall::Ok { call, raw }] => {
                assert_eq!(call.arguments["q"], "rust <tool_call> tags");
                assert_eq!(raw, text);
            }
            other => panic!("{other:?}"),
        }
        let text = "<tool_call>\n{\"name\": \"s\", \"arguments\": {\"q\": \"</tool_call>\"}}\n</tool_call>";
        assert!(matches!(
            parse_xml(text).as_slice(),
            [ParsedCall::Ok { .. }]
        ));
        let tools = [ToolDefinition::new(
            "s",
            "",
            serde_json::json!({"type": "object"}),
        )];
        let text = "<code>s(q='</code>', r=\"<code>\")</code>";
        match parse_python(text, &tools).as_slice() {
            [ParsedCall::Ok { call, .. }] => {
                assert_eq!(call.arguments["q"], "</code>");
                assert_eq!(call.arguments["r"], "<code>");
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn spans_ignore_stray_closing_tags_and_multibyte_text() {
        let text = "é</tool_call>ü<tool_call>ß</tool_call>";
        let spans = find_spans(text, XML);
        assert_eq!(spans.len(), 1);
        assert_eq!(spans[0].inner, "ß");
        assert!(find_spans("no calls here", XML).is_empty());
    }
}
