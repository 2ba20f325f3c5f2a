//! Sessions sharing a `Batcher` (a server's slots): their generations running at the same
//! time on their own threads step together in batched forward passes, and every answer is
//! exactly the one the same request gets alone.

mod common;

use common::{chat, fixture, template};
use smollm3_gen::{Engine, GenerateRequest, SamplingParams, Session};
use smollm3_model::LoadOptions;

fn engine() -> Engine {
    // Q4_K_M: the quantized types batched decoding is for (row products for a few rows).
    let mut e = Engine::load(fixture("smollm3-tiny-q4_k_m.gguf"), &LoadOptions::default())
        .expect("fixture model");
    e.template = template();
    e
}

/// Three different conversations, sampled with their own seeds, of different lengths (the
/// shortest leaves the batch while the others go on).
fn requests() -> Vec<GenerateRequest> {
    [
        ("Tell me a story", 3, 30),
        ("Hello there", 4, 12),
        ("What is Rust?", 5, 24),
    ]
    .into_iter()
    .map(|(text, seed, max_tokens)| {
        let mut r = GenerateRequest::chat(chat(text, false));
        r.sampling = SamplingParams {
            temperature: 1.0,
            seed: Some(seed),
            max_tokens: Some(max_tokens),
            ..SamplingParams::default()
        };
        r
    })
    .collect()
}

/// The tokens each session's cache holds after its request.
fn run(session: &mut Session, request: &GenerateRequest) -> Vec<u32> {
    session.generate(request).unwrap().complete().unwrap();
    session.cached_tokens().to_vec()
}

#[test]
fn batched_sessions_answer_exactly_as_sessions_alone() {
    let e = engine();
    let requests = requests();
    let alone: Vec<Vec<u32>> = requests
        .iter()
        .map(|r| run(&mut e.session(256).unwrap(), r))
        .collect();
    let (batcher, mut sessions) = e.batched_sessions(requests.len(), 256).unwrap();
    let together: Vec<Vec<u32>> = std::thread::scope(|scope| {
        let handles: Vec<_> = sessions
            .iter_mut()
            .zip(&requests)
            .map(|(session, request)| scope.spawn(move || run(session, request)))
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    assert_eq!(together, alone);
    let stats = batcher.stats();
    // Every generation left the batch when it ended.
    assert_eq!(stats.active, 0);
    // The sessions stepped together: more sequences than passes (at least one pass of
    // several); about 30 passes for 66 decode steps and 3 prompts when they keep in step.
    assert!(stats.sequences > stats.passes, "no batching: {stats:?}");
    // A second turn on the same sessions reuses their caches as alone.
    let next = requests[1].clone();
    let again = run(&mut sessions[1], &next);
    assert_eq!(again, run(&mut e.session(256).unwrap(), &next));
}

#[test]
fn a_dropped_or_failed_generation_leaves_the_batch() {
    let e = engine();
    let (batcher, mut sessions) = e.batched_sessions(2, 256).unwrap();
    let request = &requests()[0];
    {
        let mut generation = sessions[0].generate(request).unwrap();
        // Its first event needs a forward pass, alone in the batch (after the gather wait).
        generation.next().unwrap().unwrap();
        assert_eq!(batcher.stats().active, 1);
    }
    assert_eq!(batcher.stats().active, 0);
    // A request refused before it starts never joins.
    let mut bad = request.clone();
    bad.sampling.max_tokens = Some(0);
    assert!(sessions[1].generate(&bad).is_err());
    assert_eq!(batcher.stats().active, 0);
    // The session dropped mid-answer still works, from its cached prompt.
    let tokens = run(&mut sessions[0], request);
    assert_eq!(tokens, run(&mut e.session(256).unwrap(), request));
}
