#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::sync::Arc;

use smollm3_chat::{ChatRequest, ChatTemplate, DateTime, FixedClock, Message, Tokenizer};
use smollm3_gen::{Event, Generation, Result};

pub fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../fixtures/gguf")
        .join(name)
}

/// The tiny SmolLM3 fixture's tokenizer (SmolLM3 special tokens, Llama-3 BPE subset).
pub fn tokenizer() -> Arc<Tokenizer> {
    Arc::new(Tokenizer::from_gguf(fixture("smollm3-tiny-f32.gguf")).expect("fixture tokenizer"))
}

/// The official template with a fixed date, so prompts are the same on every run.
pub fn template() -> Arc<ChatTemplate> {
    let date = DateTime::date(2026, 1, 2).expect("valid date");
    Arc::new(
        ChatTemplate::with_clock(smollm3_chat::OFFICIAL_TEMPLATE, Arc::new(FixedClock(date)))
            .expect("official template"),
    )
}

pub fn chat(user: &str, thinking: bool) -> ChatRequest {
    let mut chat = ChatRequest {
        add_generation_prompt: true,
        enable_thinking: Some(thinking),
        ..Default::default()
    };
    chat.push(Message::user(user));
    chat
}

/// Collects all events (panics on an error: tests expect none).
pub fn events<B: smollm3_gen::Backend>(generation: Generation<'_, B>) -> Vec<Event> {
    generation
        .collect::<Result<Vec<_>>>()
        .expect("generation failed")
}

pub fn done(events: &[Event]) -> &smollm3_gen::Completion {
    match events.last() {
        Some(Event::Done(c)) => c,
        other => panic!("last event is not Done: {other:?}"),
    }
}

pub fn texts(events: &[Event]) -> (String, String) {
    let mut reasoning = String::new();
    let mut answer = String::new();
    for e in events {
        match e {
            Event::Reasoning { text } => reasoning.push_str(text),
            Event::Answer { text } => answer.push_str(text),
            _ => {}
        }
    }
    (reasoning, answer)
}

/// SmolLM2-135M-Instruct's GGUF (`SMOLLM2_GGUF`); without it the test skips (says so and
/// returns), unless `SMOLLM3_REQUIRE_SMOLLM2` is set (CI), which makes it a failure.
pub fn smollm2_gguf() -> Option<std::ffi::OsString> {
    let gguf = std::env::var_os("SMOLLM2_GGUF");
    if gguf.is_none() {
        assert!(
            std::env::var_os("SMOLLM3_REQUIRE_SMOLLM2").is_none(),
            "SMOLLM3_REQUIRE_SMOLLM2 is set but SMOLLM2_GGUF is not"
        );
        eprintln!("SKIPPED: SMOLLM2_GGUF is not set");
    }
    gguf
}
