//! What a constraint adds to each token: `Constraint::mask` (which tokens keep the output
//! valid, over the real 128k SmolLM3 vocabulary) and `Constraint::accept`, through a whole
//! JSON answer of a small schema drawn from random logits, against a 3B decode step (~60 ms).
//!
//! Run: `cargo bench -p smollm3-gen --bench constraint`. Each iteration of
//! `json_schema_answer` compiles the schema and draws one complete answer (its length is
//! printed once): divide by it for the cost per token, all in (mask, accept, sampling the
//! masked row, copying the row). `compile_schema` is the compile alone. (Sampling the same
//! rows unmasked is no baseline: a near-uniform row's nucleus is most of the vocabulary.)

use std::hint::black_box;
use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use criterion::{criterion_group, criterion_main, Criterion};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use smollm3_chat::Tokenizer;
use smollm3_gen::{Grammar, Grammars, Sampler, SamplingParams};

fn tokenizer() -> Arc<Tokenizer> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../fixtures/gguf/smollm3-vocab128k-q8_0.gguf");
    Arc::new(Tokenizer::from_gguf(path).expect("run `cargo xtask gen-fixtures` first"))
}

fn schema() -> Grammar {
    Grammar::JsonSchema(serde_json::json!({
        "type": "object",
        "properties": {
            "name": {"type": "string", "maxLength": 12},
            "age": {"type": "integer", "minimum": 0, "maximum": 120},
            "email": {"type": "string", "maxLength": 24},
            "tags": {"type": "array", "items": {"enum": ["a", "b", "c"]}, "maxItems": 4},
        },
        "required": ["name", "age", "email", "tags"],
        "additionalProperties": false,
    }))
}

/// One answer: mask, sample, accept until the grammar is complete; the tokens drawn.
fn answer(grammars: &Grammars, rows: &[Vec<f32>], end: u32) -> usize {
    let mut constraint = grammars.compile(&schema()).expect("schema");
    let mut sampler = Sampler::new(&SamplingParams {
        temperature: 1.0,
        seed: Some(3),
        ..SamplingParams::default()
    })
    .expect("sampler");
    for (i, row) in rows.iter().enumerate() {
        if constraint.is_finished() {
            return i;
        }
        let mut logits = row.clone();
        constraint.mask(&mut logits).expect("mask");
        let token = sampler.sample(&mut logits).expect("sample");
        if token == end {
            return i + 1;
        }
        constraint.accept(token).expect("accept");
    }
    rows.len()
}

fn bench_constraint(c: &mut Criterion) {
    let tokenizer = tokenizer();
    let end = tokenizer.special_token("<|im_end|>").expect("end token");
    let started = Instant::now();
    let grammars = Grammars::new(tokenizer.clone()).expect("engine");
    eprintln!(
        "engine for {} tokens built in {:?}",
        tokenizer.vocab_size(),
        started.elapsed()
    );
    let mut rng = ChaCha8Rng::seed_from_u64(7);
    let rows: Vec<Vec<f32>> = (0..200)
        .map(|_| {
            (0..tokenizer.vocab_size())
                .map(|_| rng.random::<f32>() * 8.0)
                .collect()
        })
        .collect();
    let tokens = answer(&grammars, &rows, end);
    eprintln!("one answer: {tokens} tokens");
    let mut group = c.benchmark_group("constraint_128k");
    group.bench_function("json_schema_answer", |b| {
        b.iter(|| black_box(answer(&grammars, &rows, end)))
    });
    group.bench_function("compile_schema", |b| {
        b.iter(|| black_box(grammars.compile(&schema()).is_ok()))
    });
    group.finish();
}

criterion_group!(benches, bench_constraint);
criterion_main!(benches);
