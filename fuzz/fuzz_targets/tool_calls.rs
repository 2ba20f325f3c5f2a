//! Model output text through both tool-call parsers (`parse_xml`, `parse_python` with two fixed
//! tools). They are pure parsers: no input may make them panic, and each call found is either a
//! call of a known tool or `Malformed`, with raw text taken from the input.
#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use smollm3_tools::parse::{parse_python, parse_xml};
use smollm3_tools::{ParsedCall, ToolDefinition};

fn tools() -> &'static [ToolDefinition] {
    static TOOLS: OnceLock<Vec<ToolDefinition>> = OnceLock::new();
    TOOLS.get_or_init(|| {
        serde_json::from_value(serde_json::json!([
            {
                "name": "get_weather",
                "description": "Current weather in a city.",
                "parameters": {
                    "type": "object",
                    "properties": {
                        "city": {"type": "string"},
                        "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]}
                    },
                    "required": ["city"]
                }
            },
            {
                "name": "web.search",
                "parameters": {
                    "type": "object",
                    "properties": {"q": {"type": "string"}, "n": {"type": "integer"}}
                }
            }
        ]))
        .expect("fixed tool definitions")
    })
}

fn check(text: &str, calls: &[ParsedCall], known: Option<&[ToolDefinition]>) {
    for call in calls {
        match call {
            ParsedCall::Ok { call, raw } => {
                assert!(
                    text.contains(raw.as_str()),
                    "raw text {raw:?} not in the input"
                );
                if let Some(tools) = known {
                    assert!(
                        tools.iter().any(|t| t.name == call.name),
                        "call of unknown tool {:?}",
                        call.name
                    );
                }
            }
            ParsedCall::Malformed { raw, .. } => {
                assert!(
                    text.contains(raw.as_str()),
                    "raw text {raw:?} not in the input"
                );
            }
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let xml = parse_xml(&text);
    check(&text, &xml, None);
    let python = parse_python(&text, tools());
    check(&text, &python, Some(tools()));
});
