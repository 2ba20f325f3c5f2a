//! Generation on the tiny SmolLM3 fixture models: seeds, cache reuse equal to a fresh run,
//! cancellation from another thread.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::{chat, fixture, template};
use smollm3_chat::{ChatRequest, Message};
use smollm3_gen::{
    CancelHandle, Engine, Event, FinishReason, GenerateRequest, Prompt, SamplingParams, Session,
};
use smollm3_model::LoadOptions;

fn engine() -> Engine {
    let mut e = Engine::load(fixture("smollm3-tiny-f32.gguf"), &LoadOptions::default())
        .expect("fixture model");
    // Fixed date in the system prompt, so renders are the same on every run.
    e.template = template();
    e
}

fn request(prompt: ChatRequest, sampling: SamplingParams, max_tokens: usize) -> GenerateRequest {
    let mut r = GenerateRequest::chat(prompt);
    r.sampling = sampling;
    r.sampling.max_tokens = Some(max_tokens);
    r
}

/// Generated token ids: what the cache holds after the prompt, plus the last one.
fn generated(session: &Session, prompt_tokens: usize) -> Vec<u32> {
    session.cached_tokens()[prompt_tokens..].to_vec()
}

#[test]
fn the_same_seed_gives_the_same_tokens() {
    let e = engine();
    let sampling = SamplingParams {
        temperature: 1.0,
        top_p: 0.9,
        seed: Some(7),
        ..SamplingParams::default()
    };
    let run = |sampling: &SamplingParams| {
        let mut s = e.session(256).unwrap();
        let c = s
            .generate(&request(
                chat("Tell me a story", false),
                sampling.clone(),
                24,
            ))
            .unwrap()
            .complete()
            .unwrap();
        (generated(&s, c.stats.prompt_tokens), c)
    };
    let (a, ca) = run(&sampling);
    let (b, cb) = run(&sampling);
    assert_eq!(a, b);
    assert_eq!(ca.answer, cb.answer);
    assert_eq!(ca.stats.seed, 7);
    let other = SamplingParams {
        seed: Some(8),
        ..sampling
    };
    let (c, _) = run(&other);
    assert_ne!(
        a, c,
        "a different seed should sample differently on a random model"
    );
}

#[test]
fn greedy_generation_equals_the_models_argmax() {
    let e = engine();
    let mut s = e.session(256).unwrap();
    let c = s
        .generate(&request(chat("Hello", false), SamplingParams::greedy(), 6))
        .unwrap()
        .complete()
        .unwrap();
    let prompt: Vec<u32> = s.cached_tokens()[..c.stats.prompt_tokens].to_vec();
    let out = generated(&s, c.stats.prompt_tokens);
    // Re-run the model by hand: each generated token is the argmax after its prefix.
    let mut cache = e.model.new_cache(256).unwrap();
    let mut logits = e.model.forward_last(&prompt, &mut cache).unwrap();
    for &token in &out {
        let v: Vec<f32> = logits.to_vec1().unwrap();
        let argmax = v
            .iter()
            .enumerate()
            .fold((0, f32::NEG_INFINITY), |best, (i, &x)| {
                if x > best.1 {
                    (i, x)
                } else {
                    best
                }
            })
            .0;
        assert_eq!(token as usize, argmax);
        logits = e.model.forward_last(&[token], &mut cache).unwrap();
    }
    assert_eq!(c.stats.generated_tokens, 6);
    assert_eq!(c.finish_reason, FinishReason::Length);
}

#[test]
fn second_turn_reuses_the_cache_and_equals_a_fresh_run() {
    let e = engine();
    let mut s = e.session(512).unwrap();
    let mut conversation = chat("What is the capital of France?", false);
    let first = s
        .generate(&request(conversation.clone(), SamplingParams::greedy(), 12))
        .unwrap()
        .complete()
        .unwrap();
    conversation.push(Message::assistant(&first.answer));
    conversation.push(Message::user("And of Italy?"));
    let turn2 = request(conversation, SamplingParams::greedy(), 12);

    let second = s.generate(&turn2).unwrap().complete().unwrap();
    let st = &second.stats;
    assert!(st.cached_tokens > first.stats.prompt_tokens / 2, "{st:?}");
    assert_eq!(st.prefilled_tokens, st.prompt_tokens - st.cached_tokens);
    let reused = generated(&s, 0);

    let mut fresh = e.session(512).unwrap();
    let fresh_out = fresh.generate(&turn2).unwrap().complete().unwrap();
    assert_eq!(fresh_out.stats.cached_tokens, 0);
    assert_eq!(fresh_out.answer, second.answer);
    assert_eq!(generated(&fresh, 0), reused);
}

#[test]
fn cancel_from_another_thread_then_continue() {
    let e = engine();
    let mut s = e.session(1024).unwrap();
    let cancel = CancelHandle::new();
    let mut r = request(chat("Go on forever", false), SamplingParams::greedy(), 900);
    r.cancel = Some(cancel.clone());
    // The generating thread asks another thread to cancel and waits until it has.
    let (ask, asked) = std::sync::mpsc::channel::<()>();
    let (ack, acked) = std::sync::mpsc::channel::<()>();
    let canceller = {
        let cancel = cancel.clone();
        std::thread::spawn(move || {
            asked.recv().unwrap();
            std::thread::sleep(Duration::from_millis(20));
            cancel.cancel();
            ack.send(()).unwrap();
        })
    };
    let mut tokens_when_cancelled = None;
    let mut completion = None;
    let mut prefill_done = false;
    for event in s.generate(&r).unwrap() {
        match event.unwrap() {
            Event::PrefillProgress { processed, total } => prefill_done = processed == total,
            Event::Answer { .. } | Event::Reasoning { .. } if tokens_when_cancelled.is_none() => {
                assert!(prefill_done);
                ask.send(()).unwrap();
                acked.recv().unwrap();
                tokens_when_cancelled = Some(());
            }
            Event::Done(c) => completion = Some(*c),
            _ => {}
        }
    }
    canceller.join().unwrap();
    let c = completion.expect("a Done event");
    assert_eq!(c.finish_reason, FinishReason::Cancelled);
    assert!(c.stats.generated_tokens < 20, "{:?}", c.stats);
    assert_eq!(
        s.cached_tokens().len(),
        c.stats.prompt_tokens + c.stats.generated_tokens - 1
    );

    // Usable afterwards, and equal to a fresh session.
    cancel.reset();
    let again = request(chat("Short one", false), SamplingParams::greedy(), 5);
    let a = s.generate(&again).unwrap().complete().unwrap();
    let b = e
        .session(1024)
        .unwrap()
        .generate(&again)
        .unwrap()
        .complete()
        .unwrap();
    assert_eq!(a.answer, b.answer);
    assert_eq!(a.finish_reason, FinishReason::Length);
}

#[test]
fn raw_text_and_token_prompts_stream_answer_text() {
    let e = engine();
    let mut s = e.session(128).unwrap();
    let mut r = GenerateRequest::new(Prompt::Text("Once upon a time".into()));
    r.sampling = SamplingParams::greedy();
    r.sampling.max_tokens = Some(5);
    let events: Vec<Event> = s.generate(&r).unwrap().map(Result::unwrap).collect();
    assert!(matches!(events[0], Event::PrefillProgress { .. }));
    assert!(!events.iter().any(|e| matches!(e, Event::Reasoning { .. })));
    let ids = e
        .tokenizer
        .encode_for_completion("Once upon a time")
        .unwrap();
    let mut r2 = GenerateRequest::new(Prompt::Tokens(ids));
    r2.sampling = SamplingParams::greedy();
    r2.sampling.max_tokens = Some(5);
    let a = s.generate(&r).unwrap().complete().unwrap();
    let b = s.generate(&r2).unwrap().complete().unwrap();
    assert_eq!(a.answer, b.answer);
    // The same prompt again starts from the logits it was read with (none of it is run).
    assert_eq!(b.stats.cached_tokens, b.stats.prompt_tokens);
}

#[test]
fn sessions_share_one_model_across_threads() {
    let e = Arc::new(engine());
    let handles: Vec<_> = (0..2)
        .map(|_| {
            let e = e.clone();
            std::thread::spawn(move || {
                let mut s = e.session(128).unwrap();
                s.generate(&request(chat("Hi", false), SamplingParams::greedy(), 4))
                    .unwrap()
                    .complete()
                    .unwrap()
                    .answer
            })
        })
        .collect();
    let answers: Vec<String> = handles.into_iter().map(|h| h.join().unwrap()).collect();
    assert_eq!(answers[0], answers[1]);
}

/// The server pattern: the session moves to a worker thread, events go through a channel, and
/// a receiver that goes away (a disconnected client) cancels the generation.
#[test]
fn a_dropped_receiver_cancels_a_generation_on_a_worker_thread() {
    let e = engine();
    let session = e.session(1024).unwrap();
    let (tx, rx) = std::sync::mpsc::sync_channel::<Event>(4);
    let worker = std::thread::spawn(move || {
        let mut session = session;
        let request = request(chat("Go on", false), SamplingParams::greedy(), 900);
        let completion = session
            .generate_with(&request, |event| match tx.send(event) {
                Ok(()) => std::ops::ControlFlow::Continue(()),
                Err(_) => std::ops::ControlFlow::Break(()),
            })
            .unwrap();
        (completion, session.cached_tokens().len())
    });
    let mut answers = 0;
    for event in rx.iter() {
        if matches!(event, Event::Answer { .. }) {
            answers += 1;
            if answers == 3 {
                break;
            }
        }
    }
    drop(rx);
    let (completion, cached) = worker.join().unwrap();
    assert_eq!(completion.finish_reason, FinishReason::Cancelled);
    assert!(completion.stats.generated_tokens < 900);
    assert_eq!(
        cached,
        completion.stats.prompt_tokens + completion.stats.generated_tokens - 1
    );
}
