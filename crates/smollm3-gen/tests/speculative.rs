//! Speculative decoding with prompt-lookup drafts: the same answer as without it (every
//! event, every token in the cache), drafts checked in one pass and taken as far as the
//! model agrees, and a cache that holds exactly the history however the generation ends.

mod common;

use common::{chat, done, events, template, tokenizer};
use smollm3_gen::{
    Engine, Event, FinishReason, GenerateRequest, SamplingParams, ScriptedBackend, Session,
};
use smollm3_model::LoadOptions;

const PARAGRAPH: &str = "The quick brown fox jumps over the lazy dog while the cat watches \
    from the old stone wall, and the farmer counts his sheep in the morning light.";

fn scripted(replies: &[&str]) -> Session<ScriptedBackend> {
    let tok = tokenizer();
    let backend = ScriptedBackend::from_texts(&tok, 1024, replies).unwrap();
    Session::with_backend(backend, tok, template())
}

fn quoting(prompt_lookup: bool, sampling: SamplingParams) -> GenerateRequest {
    let mut r = GenerateRequest::chat(chat(&format!("Repeat this: {PARAGRAPH}"), false));
    r.sampling = sampling;
    r.prompt_lookup = prompt_lookup;
    r
}

#[test]
fn a_quoting_answer_is_drafted_and_identical() {
    let reply = format!("Sure: {PARAGRAPH} Done.");
    let run = |lookup: bool| {
        let mut s = scripted(&[&reply]);
        let ev = events(
            s.generate(&quoting(lookup, SamplingParams::greedy()))
                .unwrap(),
        );
        let calls = s.backend().forward_calls().to_vec();
        (ev, s.cached_tokens().to_vec(), calls)
    };
    let (plain, plain_cache, plain_calls) = run(false);
    let (drafted, drafted_cache, drafted_calls) = run(true);
    // The same text events and cache; only the stats differ.
    let strip = |ev: &[Event]| -> Vec<Event> {
        ev.iter()
            .filter(|e| !matches!(e, Event::Done(_)))
            .cloned()
            .collect()
    };
    assert_eq!(strip(&drafted), strip(&plain));
    assert_eq!(drafted_cache, plain_cache);
    let (a, b) = (done(&drafted), done(&plain));
    assert_eq!(
        (a.answer.as_str(), a.finish_reason),
        (b.answer.as_str(), b.finish_reason)
    );
    assert_eq!(a.stats.generated_tokens, b.stats.generated_tokens);
    // Most of the quoted paragraph came from drafts, checked several tokens a call.
    assert_eq!(b.stats.draft_tokens, 0);
    let quoted = tokenizer().encode(PARAGRAPH, false).unwrap().len();
    assert!(
        a.stats.draft_accepted * 2 > quoted,
        "{} of {quoted} quoted tokens drafted: {:?}",
        a.stats.draft_accepted,
        a.stats
    );
    assert!(a.stats.draft_accepted <= a.stats.draft_tokens);
    assert!(drafted_calls.len() < plain_calls.len() - quoted / 2);
    assert!(drafted_calls.iter().any(|&n| n > 2), "{drafted_calls:?}");
}

#[test]
fn the_cache_holds_the_history_however_the_generation_ends() {
    let reply = format!("{PARAGRAPH} {PARAGRAPH}");
    // Ended by max_tokens, by a stop string and by the end token, each inside a run of
    // drafted tokens: the next turn reuses the cache as without drafts.
    for (max_tokens, stop) in [(Some(40), None), (None, Some("sheep")), (None, None)] {
        let run = |lookup: bool| {
            let mut s = scripted(&[&reply, "Next."]);
            let mut r = quoting(lookup, SamplingParams::greedy());
            r.sampling.max_tokens = max_tokens;
            r.stop = stop.map(|s| vec![s.to_string()]).unwrap_or_default();
            let c = s.generate(&r).unwrap().complete().unwrap();
            assert_eq!(s.backend().tokens(), s.cached_tokens(), "cache = history");
            let next = GenerateRequest {
                prompt_lookup: lookup,
                ..GenerateRequest::chat(chat("And now?", false))
            };
            let n = s.generate(&next).unwrap().complete().unwrap();
            (
                c.answer,
                c.finish_reason,
                n.answer,
                s.cached_tokens().to_vec(),
            )
        };
        assert_eq!(run(true), run(false), "{max_tokens:?} {stop:?}");
    }
}

/// SmolLM2-135M-Instruct (the real model, `SMOLLM2_GGUF`) asked to repeat a paragraph:
/// greedy and seeded sampling give the same tokens with and without drafts (the draft's
/// logits are bit for bit those of one token at a time), and most of the quote is drafted.
#[test]
fn a_real_model_answers_the_same_with_drafts() {
    let Some(gguf) = common::smollm2_gguf() else {
        return;
    };
    let engine = Engine::load(&gguf, &LoadOptions::default()).unwrap();
    let samplings = [
        SamplingParams::greedy(),
        SamplingParams {
            temperature: 0.7,
            seed: Some(11),
            ..SamplingParams::default()
        },
    ];
    for sampling in samplings {
        let run = |lookup: bool| {
            let mut s = engine.session(1024).unwrap();
            let mut r = quoting(lookup, sampling.clone());
            r.sampling.max_tokens = Some(64);
            let c = s.generate(&r).unwrap().complete().unwrap();
            (s.cached_tokens().to_vec(), c.answer, c.stats)
        };
        let (plain, plain_answer, _) = run(false);
        let (drafted, answer, stats) = run(true);
        assert_eq!(answer, plain_answer, "{sampling:?}");
        assert_eq!(drafted, plain, "{sampling:?}");
        assert!(
            stats.draft_accepted * 3 > stats.generated_tokens,
            "{sampling:?}: {answer:?} {stats:?}"
        );
        // Two batched sessions (a server's slots) quoting at once: drafts are checked as
        // items of the shared passes, and each answer is the one it gets alone.
        let (_batcher, mut sessions) = engine.batched_sessions(2, 1024).unwrap();
        let together: Vec<_> = std::thread::scope(|scope| {
            let handles: Vec<_> = sessions
                .iter_mut()
                .map(|s| {
                    let sampling = sampling.clone();
                    scope.spawn(move || {
                        let mut r = quoting(true, sampling);
                        r.sampling.max_tokens = Some(64);
                        let c = s.generate(&r).unwrap().complete().unwrap();
                        (s.cached_tokens().to_vec(), c.stats.draft_accepted)
                    })
                })
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        });
        for (cached, accepted) in together {
            assert_eq!(cached, plain, "batched {sampling:?}");
            assert!(accepted > 0, "batched {sampling:?}");
        }
    }
}

#[test]
fn an_answer_that_ends_on_a_drafted_token_is_complete() {
    let mut s = scripted(&[PARAGRAPH]);
    let c = s
        .generate(&quoting(true, SamplingParams::greedy()))
        .unwrap()
        .complete()
        .unwrap();
    assert_eq!(c.answer, PARAGRAPH);
    assert_eq!(c.finish_reason, FinishReason::Stop);
}
