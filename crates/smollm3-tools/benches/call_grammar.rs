//! What holding an answer to a grammar costs per token.
//!
//! Run: `cargo bench -p smollm3-tools --bench call_grammar`.
//!
//! - `call_grammar_128k/*`: the constraint alone over the real 128k SmolLM3 vocabulary
//!   (`Constraint::mask` + `accept` per token, the row copied as the generation loop does):
//!   `auto_free_text` follows 63 tokens of English under the `tool_choice: auto` grammar
//!   (the mask of free text allows nearly every token, the engine's worst case);
//!   `required_call` draws one whole call from random logits. Divide by the token counts
//!   printed once.
//! - With `SMOLLM3_BENCH_GGUF=<file.gguf>`, `generation/*`: decode time per generated token
//!   through a real model (drafts off, 32 tokens at most, thinking off), without a grammar,
//!   with a JSON schema, with tools (`auto`, mostly free text) and with a required call: the
//!   figure criterion reports is the time per token (`iter_custom` returns decode time over
//!   generated tokens).

use std::hint::black_box;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, Criterion, SamplingMode};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde_json::json;
use smollm3_chat::{ChatRequest, Message, Tokenizer};
use smollm3_gen::{Engine, GenerateRequest, Grammar, Grammars, Sampler, SamplingParams, Session};
use smollm3_tools::{CallChoice, CallGrammar, ToolDefinition, ToolFormat};

fn tokenizer() -> Arc<Tokenizer> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../fixtures/gguf/smollm3-vocab128k-q8_0.gguf");
    Arc::new(Tokenizer::from_gguf(path).expect("run `cargo xtask gen-fixtures` first"))
}

fn tools() -> Vec<ToolDefinition> {
    vec![ToolDefinition::new(
        "get_weather",
        "Current weather in a city",
        json!({
            "type": "object",
            "properties": {
                "city": {"type": "string", "maxLength": 20},
                "days": {"type": "integer", "minimum": 1, "maximum": 7}
            },
            "required": ["city", "days"],
            "additionalProperties": false
        }),
    )]
}

fn grammar(choice: CallChoice, tokenizer: &Tokenizer) -> Grammar {
    let tools = tools();
    let spec = CallGrammar {
        format: ToolFormat::Xml,
        tools: &tools,
        choice,
        parallel: true,
        answer: None,
    };
    spec.build(tokenizer).expect("grammar")
}

const TEXT: &str = "The weather in Paris this week looks mild: highs around eighteen degrees, \
    a little rain on Tuesday and Wednesday, then sunshine from Thursday on. Take an umbrella \
    for the first days and a light jacket for the evenings, which stay cool. By the weekend \
    the wind turns to the south and the nights get warmer again.";

fn bench_constraint(c: &mut Criterion) {
    let tokenizer = tokenizer();
    let grammars = Grammars::new(tokenizer.clone()).expect("engine");
    let mut rng = ChaCha8Rng::seed_from_u64(7);
    let rows: Vec<Vec<f32>> = (0..200)
        .map(|_| {
            (0..tokenizer.vocab_size())
                .map(|_| rng.random::<f32>() * 8.0)
                .collect()
        })
        .collect();
    let text: Vec<u32> = tokenizer.encode(TEXT, true).expect("text");
    let auto = grammar(CallChoice::Auto, &tokenizer);
    let follow = || {
        let mut constraint = grammars.compile(&auto).expect("auto grammar");
        for (row, &token) in rows.iter().zip(&text) {
            let mut logits = row.clone();
            constraint.mask(&mut logits).expect("mask");
            constraint.accept(token).expect("accept");
        }
    };
    let required = grammar(CallChoice::Required, &tokenizer);
    let end = tokenizer.special_token("<|im_end|>").expect("end");
    let call = || {
        let mut constraint = grammars.compile(&required).expect("required grammar");
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
    };
    eprintln!(
        "auto_free_text: {} tokens; required_call: {} tokens",
        text.len(),
        call()
    );
    let mut group = c.benchmark_group("call_grammar_128k");
    group.bench_function("auto_free_text", |b| b.iter(follow));
    group.bench_function("required_call", |b| b.iter(|| black_box(call())));
    group.finish();
}

/// Decode time per generated token for `grammar` (None: unconstrained).
/// (The session keeps the prompt cached between runs: only the decode is measured.)
fn per_token(session: &mut Session, grammar: Option<Grammar>, choice_tools: bool) -> Duration {
    let mut chat = ChatRequest {
        messages: vec![Message::user(
            "What is the weather in Paris this week? Answer as a user record if you cannot.",
        )],
        add_generation_prompt: true,
        enable_thinking: Some(false),
        ..Default::default()
    };
    if choice_tools {
        let listed: Vec<_> = tools().iter().map(ToolDefinition::to_bare).collect();
        chat.xml_tools = Some(minijinja::Value::from_serialize(&listed));
    }
    let request = GenerateRequest {
        sampling: SamplingParams {
            temperature: 0.7,
            seed: Some(5),
            max_tokens: Some(32),
            ..SamplingParams::default()
        },
        prompt_lookup: false,
        grammar,
        ..GenerateRequest::chat(chat)
    };
    let done = session
        .generate(&request)
        .expect("generate")
        .complete()
        .expect("complete");
    let steps = done.stats.generated_tokens.saturating_sub(1).max(1);
    Duration::from_secs_f64(done.stats.decode_ms / 1e3 / steps as f64)
}

fn bench_generation(c: &mut Criterion) {
    let Some(path) = std::env::var_os("SMOLLM3_BENCH_GGUF") else {
        eprintln!("generation/*: set SMOLLM3_BENCH_GGUF to a GGUF file to measure");
        return;
    };
    let engine = Engine::load(&path, &Default::default()).expect("model");
    let tokenizer = engine.tokenizer.clone();
    let schema = Grammar::JsonSchema(json!({
        "type": "object",
        "properties": {"name": {"type": "string"}, "age": {"type": "integer"}},
        "required": ["name", "age"], "additionalProperties": false,
    }));
    let cases = [
        ("plain", None, false),
        ("json_schema", Some(schema), false),
        (
            "tools_auto",
            Some(grammar(CallChoice::Auto, &tokenizer)),
            true,
        ),
        (
            "tools_required",
            Some(grammar(CallChoice::Required, &tokenizer)),
            true,
        ),
    ];
    let mut group = c.benchmark_group("generation");
    // Ten generations a case: criterion sees only the decode time, so it must not size its
    // runs from it (a 3B file's prompt alone takes seconds the first time).
    group
        .sample_size(10)
        .sampling_mode(SamplingMode::Flat)
        .warm_up_time(Duration::from_millis(1))
        .measurement_time(Duration::from_millis(1));
    for (name, grammar, tools) in cases {
        let mut session = engine.session(1024).expect("session");
        group.bench_function(name, |b| {
            b.iter_custom(|iters| {
                (0..iters)
                    .map(|_| per_token(&mut session, grammar.clone(), tools))
                    .sum()
            })
        });
    }
    group.finish();
}

criterion_group!(benches, bench_constraint, bench_generation);
criterion_main!(benches);
