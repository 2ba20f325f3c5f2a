//! Test support: scripted sessions (no model) with the tiny fixture's tokenizer and the
//! official template on a fixed date.
#![allow(dead_code)]

use std::path::Path;
use std::sync::Arc;

use smollm3_chat::{ChatTemplate, DateTime, FixedClock, Tokenizer};
use smollm3_gen::{ScriptedBackend, Session};
use smollm3_web::{Scheduler, SchedulerOptions};

pub fn tokenizer() -> Arc<Tokenizer> {
    let path =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fixtures/gguf/smollm3-tiny-f32.gguf");
    assert!(
        path.exists(),
        "{} is missing: run `cargo xtask gen-fixtures` first",
        path.display()
    );
    Arc::new(Tokenizer::from_gguf(&path).unwrap())
}

pub fn template() -> Arc<ChatTemplate> {
    let date = DateTime::date(2026, 1, 2).unwrap();
    Arc::new(
        ChatTemplate::with_clock(smollm3_chat::OFFICIAL_TEMPLATE, Arc::new(FixedClock(date)))
            .unwrap(),
    )
}

/// `slots` sessions, each playing back `replies` in turn.
pub fn scheduler(
    slots: usize,
    replies: &[&str],
    options: SchedulerOptions,
) -> Scheduler<ScriptedBackend> {
    let (tok, tmpl) = (tokenizer(), template());
    let sessions = (0..slots)
        .map(|_| {
            let backend = ScriptedBackend::from_texts(&tok, 4096, replies).unwrap();
            Session::with_backend(backend, tok.clone(), tmpl.clone())
        })
        .collect();
    Scheduler::new(sessions, options).unwrap()
}
