//! Messages from untrusted JSON rendered by the official SmolLM3 chat template and encoded
//! (`encode_chat`) with the tokenizer of `fixtures/gguf/smollm3-tiny-f32.gguf`.
//!
//! Input: one byte of switches (generation prompt, thinking on/off/unset, kept reasoning, tool
//! definitions), then an OpenAI-style `messages` JSON array; text that is not one becomes the
//! content of a single user message. Rendering must not panic, and caller text never turns into
//! the template's markers: at most one `<|im_start|>` per message plus the system turn the
//! template adds and the generation prompt.
#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use smollm3_chat::{encode_chat, ChatRequest, ChatTemplate, Message, Segment, Tokenizer};

const TOOLS: &str = r#"[{"type": "function", "function": {"name": "get_weather",
  "description": "Current weather in a city.", "parameters": {"type": "object",
  "properties": {"city": {"type": "string"}}, "required": ["city"]}}}]"#;

fn fixtures() -> &'static (ChatTemplate, Tokenizer) {
    static FIXTURES: OnceLock<(ChatTemplate, Tokenizer)> = OnceLock::new();
    FIXTURES.get_or_init(|| {
        let path = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../fixtures/gguf/smollm3-tiny-f32.gguf"
        );
        let tokenizer = Tokenizer::from_gguf(path)
            .unwrap_or_else(|e| panic!("{path}: {e} (run `cargo xtask gen-fixtures`)"));
        (
            ChatTemplate::official().expect("official template"),
            tokenizer,
        )
    })
}

fuzz_target!(|data: &[u8]| {
    let (template, tokenizer) = fixtures();
    let Some((&flags, rest)) = data.split_first() else {
        return;
    };
    let text = String::from_utf8_lossy(rest);
    let mut chat = ChatRequest::from_messages_json(&text).unwrap_or_else(|_| ChatRequest {
        messages: vec![Message::user(text.as_ref())],
        ..Default::default()
    });
    chat.add_generation_prompt = flags & 1 != 0;
    chat.enable_thinking = match (flags >> 1) & 3 {
        0 => None,
        1 => Some(true),
        _ => Some(false),
    };
    chat.keep_reasoning = flags & 8 != 0;
    if flags & 16 != 0 {
        chat.tools_from_json(TOOLS).expect("fixed tools");
    }

    let Ok(rendered) = template.render(&chat) else {
        return;
    };
    let Ok(encoded) = encode_chat(template, tokenizer, &chat) else {
        return;
    };
    assert_eq!(
        encoded.text, rendered,
        "encode_chat's text differs from render"
    );
    let turns = encoded
        .segments
        .iter()
        .filter(|s| matches!(s, Segment::Special { text, .. } if text == "<|im_start|>"))
        .count();
    assert!(
        turns <= chat.messages.len() + 2,
        "{turns} <|im_start|> markers for {} messages: caller text became a marker\n{rendered}",
        chat.messages.len()
    );
    let specials = encoded
        .ids
        .iter()
        .filter(|&&id| tokenizer.is_special(id))
        .count();
    let markers = encoded
        .segments
        .iter()
        .filter(|s| matches!(s, Segment::Special { .. }))
        .count();
    assert_eq!(
        specials, markers,
        "a special id outside the template's markers"
    );
});
