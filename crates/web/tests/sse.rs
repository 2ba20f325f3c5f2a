//! The SSE writer's inputs: answers of hostile text (line breaks of every kind, quotes,
//! backslashes, NUL and other control characters, U+2028, astral characters, text that looks
//! like SSE fields or `[DONE]`) streamed through the router. Every event is `data: ` and one
//! line of JSON, the stream ends with the finish chunk and `[DONE]`, and the content read
//! back is the answer as the model wrote it, the same as the non-streamed answer.

mod common;

use common::{app, post_json, send};
use proptest::prelude::*;
use serde_json::{json, Value};

/// Pieces an answer is drawn from.
const PIECES: &[&str] = &[
    "plain words",
    " ",
    "\n",
    "\r\n",
    "\r",
    "\n\n",
    "data: [DONE]",
    "event: x",
    "id: 7",
    ": comment",
    "\"",
    "\\",
    "\\n",
    "\u{0}",
    "\u{1b}[31m",
    "\u{7f}",
    "\u{2028}",
    "\u{2029}",
    "\u{feff}",
    "é",
    "😀",
    "\u{10ffff}",
    "{\"a\": 1}",
    "\t",
    "%",
    "}",
    "retry: 1",
];

fn answer() -> impl Strategy<Value = String> {
    proptest::collection::vec(proptest::sample::select(PIECES), 1..12)
        .prop_map(|pieces| format!("start {}", pieces.concat()))
}

/// The `data:` payloads of a raw SSE body, read as a client library reads them: events end
/// at a blank line, each field on its own line.
fn events(body: &str) -> Vec<String> {
    assert!(body.ends_with("\n\n"), "the stream ends with a whole event");
    body.split("\n\n")
        .filter(|event| !event.is_empty())
        .filter_map(|event| {
            let lines: Vec<&str> = event.split('\n').collect();
            assert!(
                lines.iter().all(|l| !l.contains('\r')),
                "a raw CR inside an event: {event:?}"
            );
            // Keep-alive comments aside, an event is one data line.
            if lines.iter().all(|l| l.starts_with(':')) {
                return None;
            }
            assert_eq!(lines.len(), 1, "one line per event: {event:?}");
            Some(
                lines[0]
                    .strip_prefix("data: ")
                    .expect("a data field")
                    .to_string(),
            )
        })
        .collect()
}

fn streamed_content(body: &str) -> String {
    let data = events(body);
    assert_eq!(data.last().map(String::as_str), Some("[DONE]"), "{data:?}");
    let chunks: Vec<Value> = data[..data.len() - 1]
        .iter()
        .map(|d| serde_json::from_str(d).unwrap_or_else(|e| panic!("{e}: {d}")))
        .collect();
    assert_eq!(
        chunks.last().unwrap()["choices"][0]["finish_reason"],
        "stop",
        "the last chunk finishes"
    );
    chunks
        .iter()
        .filter_map(|c| c["choices"][0]["delta"]["content"].as_str())
        .collect()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    #[test]
    fn any_answer_text_streams_as_one_line_json_events_and_reads_back_whole(text in answer()) {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        let request = json!({
            "messages": [{"role": "user", "content": "Say it."}],
            "reasoning_effort": "none",
        });
        let mut streamed = request.clone();
        streamed["stream"] = true.into();
        let (status, body) = runtime.block_on(send(
            app(&[text.as_str()]),
            "POST",
            "/v1/chat/completions",
            &streamed.to_string(),
        ));
        prop_assert_eq!(status.as_u16(), 200, "{}", body);
        prop_assert_eq!(streamed_content(&body), text.clone());
        let (status, whole, raw) = runtime.block_on(post_json(app(&[text.as_str()]), request));
        prop_assert_eq!(status.as_u16(), 200, "{}", raw);
        prop_assert_eq!(whole["choices"][0]["message"]["content"].as_str(), Some(text.as_str()));
    }
}
