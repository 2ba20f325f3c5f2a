//! Tool calls under their grammar ([`smollm3_tools::call_grammar`]), drawn from random logits
//! over SmolLM3's real 128k vocabulary at temperature 1.0 (logits that never write a call by
//! themselves): every answer parses with the format's own parser, calls only offered (or the
//! named) tools, and its arguments validate against the tool's schema.

use std::path::PathBuf;
use std::sync::Arc;

use rand::{Rng, SeedableRng};
use serde_json::{json, Value};
use smollm3_chat::Tokenizer;
use smollm3_gen::{Constraint, Grammar, Grammars, Sampler, SamplingParams};
use smollm3_tools::parse::parse;
use smollm3_tools::{
    call_grammar, CallChoice, CallGrammar, ParsedCall, ToolCall, ToolDefinition, ToolFormat,
};

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../fixtures/gguf")
        .join(name)
}

fn tokenizer() -> Arc<Tokenizer> {
    Arc::new(Tokenizer::from_gguf(fixture("smollm3-vocab128k-q8_0.gguf")).expect("fixture"))
}

fn tools() -> Vec<ToolDefinition> {
    vec![
        ToolDefinition::new(
            "get_weather",
            "Current weather in a city",
            json!({
                "type": "object",
                "properties": {
                    "city": {"type": "string", "maxLength": 12},
                    "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]},
                    "days": {"type": "integer", "minimum": 1, "maximum": 7}
                },
                "required": ["city"],
                "additionalProperties": false
            }),
        ),
        ToolDefinition::new(
            "book",
            "Books a table",
            json!({
                "type": "object",
                "properties": {
                    "when": {"$ref": "#/$defs/slot"},
                    "party": {"type": "array", "items": {"type": "string", "maxLength": 8}},
                    "vip": {"type": "boolean"},
                    "note": {"type": ["string", "null"], "maxLength": 10}
                },
                "required": ["when", "vip"],
                "additionalProperties": false,
                "$defs": {
                    "slot": {
                        "type": "object",
                        "properties": {"day": {"enum": ["mon", "tue"]}, "hour": {"type": "integer", "minimum": 0, "maximum": 23}},
                        "required": ["day", "hour"],
                        "additionalProperties": false
                    }
                }
            }),
        ),
        ToolDefinition::new(
            "now",
            "The time",
            json!({"type": "object", "properties": {}}),
        ),
    ]
}

/// Draws an answer from random logits through `grammar`: its text, and whether it ended
/// (the end token, or nothing more allowed) within 400 tokens.
fn draw(
    tokenizer: &Tokenizer,
    grammars: &Grammars,
    grammar: &Grammar,
    seed: u64,
) -> (String, bool) {
    let constraint = grammars
        .compile(grammar)
        .expect("the call grammar compiles");
    draw_after(tokenizer, constraint, seed)
}

/// As [`draw`], from a constraint already part-way through. Tokens of closing punctuation
/// and the end of the turn are likelier than chance, as a model's would be: otherwise
/// strings and numbers run on to the limit (random logits pick one of ~100k tokens that
/// continue a string over the one that closes it).
fn draw_after(tokenizer: &Tokenizer, mut constraint: Constraint, seed: u64) -> (String, bool) {
    let end = tokenizer.special_token("<|im_end|>").expect("end token");
    let closing: Vec<bool> = (0..tokenizer.vocab_size() as u32)
        .map(|id| {
            let text = tokenizer.decode(&[id], false).unwrap_or_default();
            !text.is_empty() && text.chars().all(|c| "\"')]},".contains(c))
        })
        .collect();
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    let mut sampler = Sampler::new(&SamplingParams {
        temperature: 1.0,
        top_p: 1.0,
        top_k: 0,
        min_p: 0.0,
        seed: Some(seed),
        ..SamplingParams::default()
    })
    .unwrap();
    let mut tokens = Vec::new();
    for _ in 0..400 {
        if constraint.is_finished() {
            return (tokenizer.decode(&tokens, false).unwrap(), true);
        }
        let mut logits: Vec<f32> = (0..tokenizer.vocab_size())
            .map(|id| rng.random::<f32>() * 8.0 + if closing[id] { 6.0 } else { 0.0 })
            .collect();
        logits[end as usize] = 12.0;
        constraint.mask(&mut logits).unwrap();
        let token = sampler.sample(&mut logits).unwrap();
        if token == end {
            assert!(constraint.can_end(), "ended before the answer was complete");
            return (tokenizer.decode(&tokens, false).unwrap(), true);
        }
        constraint.accept(token).unwrap();
        tokens.push(token);
    }
    (tokenizer.decode(&tokens, false).unwrap(), false)
}

/// The calls in `text`, each checked against its tool's schema.
fn valid_calls(text: &str, format: ToolFormat, tools: &[ToolDefinition]) -> Vec<ToolCall> {
    let mut calls = Vec::new();
    for parsed in parse(text, format, tools) {
        match parsed {
            ParsedCall::Ok { call, .. } => {
                let tool = tools
                    .iter()
                    .find(|t| t.name == call.name)
                    .unwrap_or_else(|| panic!("{text:?} calls an unknown tool"));
                let validator = jsonschema::validator_for(&tool.parameters).unwrap();
                let arguments = Value::Object(call.arguments.clone());
                if let Err(e) = validator.validate(&arguments) {
                    panic!("{text:?}: arguments {arguments} do not validate: {e}");
                }
                calls.push(call);
            }
            ParsedCall::Malformed { raw, error } => panic!("{text:?}: malformed {raw:?}: {error}"),
        }
    }
    calls
}

fn grammar(
    format: ToolFormat,
    choice: CallChoice,
    parallel: bool,
    tokenizer: &Tokenizer,
) -> Grammar {
    let tools = tools();
    let spec = CallGrammar {
        format,
        tools: &tools,
        choice,
        parallel,
        answer: None,
    };
    spec.build(tokenizer).expect("grammar")
}

#[test]
fn required_calls_always_parse_and_validate_in_both_formats() {
    let tokenizer = tokenizer();
    let grammars = Grammars::new(tokenizer.clone()).unwrap();
    let tools = tools();
    for format in [ToolFormat::Xml, ToolFormat::Python] {
        for parallel in [false, true] {
            let grammar = grammar(format, CallChoice::Required, parallel, &tokenizer);
            let mut names = std::collections::BTreeSet::new();
            for seed in 0..12 {
                let (text, ended) = draw(&tokenizer, &grammars, &grammar, seed);
                assert!(ended, "{format:?}: no end in 400 tokens: {text:?}");
                let calls = valid_calls(&text, format, &tools);
                assert!(!calls.is_empty(), "{format:?}: no call in {text:?}");
                assert!(parallel || calls.len() == 1, "{format:?}: {text:?}");
                let (open, close) = format.tags();
                assert!(text.starts_with(open) && text.ends_with(close), "{text:?}");
                names.extend(calls.into_iter().map(|c| c.name));
            }
            assert!(
                names.len() > 1,
                "{format:?}: only {names:?} were ever called"
            );
        }
    }
}

#[test]
fn a_named_tool_is_the_only_one_called() {
    let tokenizer = tokenizer();
    let grammars = Grammars::new(tokenizer.clone()).unwrap();
    let tools = tools();
    for format in [ToolFormat::Xml, ToolFormat::Python] {
        let grammar = grammar(format, CallChoice::Named("book".into()), true, &tokenizer);
        for seed in 0..8 {
            let (text, _) = draw(&tokenizer, &grammars, &grammar, seed);
            let calls = valid_calls(&text, format, &tools);
            assert!(
                !calls.is_empty() && calls.iter().all(|c| c.name == "book"),
                "{text:?}"
            );
        }
    }
}

#[test]
fn with_auto_the_text_is_free_and_an_opened_call_is_valid() {
    let tokenizer = tokenizer();
    let grammars = Grammars::new(tokenizer.clone()).unwrap();
    let tools = tools();
    let (open, _) = ToolFormat::Xml.tags();
    for format in [ToolFormat::Xml, ToolFormat::Python] {
        let grammar = grammar(format, CallChoice::Auto, true, &tokenizer);
        let mut constraint = grammars.compile(&grammar).unwrap();
        // Free text is free: any first token but the end.
        let mut logits = vec![0.0; tokenizer.vocab_size()];
        constraint.mask(&mut logits).unwrap();
        let allowed = logits.iter().filter(|l| l.is_finite()).count();
        assert!(
            allowed > 100_000,
            "{format:?}: only {allowed} tokens may start the answer"
        );
        // Text, then a call opened: from there the answer is held to the tools.
        let prefix = match format {
            ToolFormat::Xml => vec!["Let me check.\n".to_string(), open.to_string()],
            ToolFormat::Python => vec!["Let me check.\n<code>".to_string()],
        };
        let mut opened = Vec::new();
        for piece in &prefix {
            opened.extend(tokenizer.encode(piece, true).unwrap());
        }
        for seed in 0..8 {
            let mut constraint = grammars.compile(&grammar).unwrap();
            for &t in &opened {
                constraint.accept(t).unwrap();
            }
            let mut logits = vec![0.0; tokenizer.vocab_size()];
            constraint.mask(&mut logits).unwrap();
            let end = tokenizer.special_token("<|im_end|>").unwrap() as usize;
            assert!(
                logits[end].is_infinite(),
                "{format:?}: an opened call may end the answer"
            );
            let mut text = tokenizer.decode(&opened, false).unwrap();
            let (rest, ended) = draw_after(&tokenizer, constraint, seed);
            text.push_str(&rest);
            assert!(ended, "{text:?}");
            let calls = valid_calls(&text, format, &tools);
            assert!(!calls.is_empty(), "{format:?}: {text:?}");
        }
    }
}

#[test]
fn the_special_tag_is_the_only_way_to_open_a_call() {
    let tokenizer = tokenizer();
    let grammars = Grammars::new(tokenizer.clone()).unwrap();
    let open = tokenizer
        .special_token("<tool_call>")
        .expect("<tool_call> is one token");
    let grammar = grammar(ToolFormat::Xml, CallChoice::Auto, true, &tokenizer);
    let mut constraint = grammars.compile(&grammar).unwrap();
    let mut logits = vec![0.0; tokenizer.vocab_size()];
    constraint.mask(&mut logits).unwrap();
    assert!(logits[open as usize].is_finite());
    // Its text spelled out is refused at the closing `>`.
    for t in tokenizer.encode("Hi <tool_call", true).unwrap() {
        constraint.accept(t).unwrap();
    }
    let mut logits = vec![0.0; tokenizer.vocab_size()];
    constraint.mask(&mut logits).unwrap();
    let gt = tokenizer.encode(">", true).unwrap();
    assert_eq!(gt.len(), 1);
    assert!(logits[gt[0] as usize].is_infinite());
}

#[test]
fn a_json_answer_format_holds_the_text_answer_beside_the_calls() {
    let tokenizer = tokenizer();
    let grammars = Grammars::new(tokenizer.clone()).unwrap();
    let tools = tools();
    let schema = json!({"type": "object", "properties": {"answer": {"type": "string", "maxLength": 5}}, "required": ["answer"], "additionalProperties": false});
    let answer = Grammar::JsonSchema(schema.clone());
    let spec = CallGrammar {
        format: ToolFormat::Xml,
        tools: &tools,
        choice: CallChoice::Auto,
        parallel: false,
        answer: Some(&answer),
    };
    let grammar = spec.build(&tokenizer).unwrap();
    let (mut answers, mut calls) = (0, 0);
    for seed in 0..16 {
        let (text, ended) = draw(&tokenizer, &grammars, &grammar, seed);
        assert!(ended, "{text:?}");
        if text.starts_with('{') {
            let value: Value =
                serde_json::from_str(&text).unwrap_or_else(|e| panic!("{text:?}: {e}"));
            assert!(jsonschema::is_valid(&schema, &value), "{text:?}");
            answers += 1;
        } else {
            assert_eq!(
                valid_calls(&text, ToolFormat::Xml, &tools).len(),
                1,
                "{text:?}"
            );
            calls += 1;
        }
    }
    assert!(answers > 0 && calls > 0, "{answers} answers, {calls} calls");
}

#[test]
fn what_cannot_be_built_is_an_error_naming_it() {
    let tools = tools();
    let spec = |choice| CallGrammar {
        format: ToolFormat::Python,
        tools: &tools,
        choice,
        parallel: true,
        answer: None,
    };
    let err = call_grammar(&spec(CallChoice::Named("nope".into())), &|_| false).unwrap_err();
    assert!(err.to_string().contains("\"nope\""), "{err}");
    let odd = [ToolDefinition::new(
        "f",
        "",
        json!({"type": "object", "properties": {"a-b": {"type": "string"}}}),
    )];
    let err = call_grammar(
        &CallGrammar {
            tools: &odd,
            ..spec(CallChoice::Required)
        },
        &|_| false,
    )
    .unwrap_err();
    assert!(err.to_string().contains("\"a-b\""), "{err}");
    let regex = Grammar::Regex("a+".into());
    let err = call_grammar(
        &CallGrammar {
            answer: Some(&regex),
            ..spec(CallChoice::Auto)
        },
        &|_| false,
    )
    .unwrap_err();
    assert!(err.to_string().contains("JSON"), "{err}");
}

/// Tools with random parameter schemas (nested objects and lists of booleans, nulls, bounded
/// integers and strings, enums of strings and numbers, optional and required keys), in both
/// formats, each answer drawn with a random seed: every call parses and validates.
mod random_tools {
    use std::sync::{Arc, OnceLock};

    use proptest::prelude::*;
    use serde_json::{json, Map, Value};
    use smollm3_chat::Tokenizer;
    use smollm3_gen::Grammars;
    use smollm3_tools::{CallChoice, CallGrammar, ToolDefinition, ToolFormat};

    use super::{draw, tokenizer, valid_calls};

    fn engine() -> &'static (Arc<Tokenizer>, Grammars) {
        static ENGINE: OnceLock<(Arc<Tokenizer>, Grammars)> = OnceLock::new();
        ENGINE.get_or_init(|| {
            let tokenizer = tokenizer();
            let grammars = Grammars::new(tokenizer.clone()).unwrap();
            (tokenizer, grammars)
        })
    }

    fn leaf() -> impl Strategy<Value = Value> {
        prop_oneof![
            Just(json!({"type": "boolean"})),
            Just(json!({"type": "null"})),
            (-60i64..60, 0i64..40).prop_map(
                |(low, span)| json!({"type": "integer", "minimum": low, "maximum": low + span})
            ),
            (0u64..6).prop_map(|n| json!({"type": "string", "maxLength": n})),
            prop::collection::vec(
                prop_oneof![
                    "[a-z \"']{1,4}".prop_map(Value::from),
                    (-9i64..99).prop_map(Value::from)
                ],
                1..4
            )
            .prop_map(|values| json!({"enum": values})),
        ]
    }

    fn object(fields: Vec<Value>, mask: u8) -> Value {
        let mut properties = Map::new();
        let mut required = Vec::new();
        for (i, field) in fields.into_iter().enumerate() {
            let key = format!("k{i}");
            if mask & (1 << i) != 0 {
                required.push(Value::from(key.clone()));
            }
            properties.insert(key, field);
        }
        json!({"type": "object", "properties": properties, "required": required,
               "additionalProperties": false})
    }

    pub(super) fn parameters() -> impl Strategy<Value = Value> {
        let value = leaf().prop_recursive(2, 12, 3, |inner| {
            prop_oneof![
                (inner.clone(), 0u64..3)
                    .prop_map(|(items, n)| json!({"type": "array", "items": items, "maxItems": n})),
                (prop::collection::vec(inner, 1..4), any::<u8>())
                    .prop_map(|(fields, mask)| object(fields, mask)),
            ]
        });
        (prop::collection::vec(value, 0..4), any::<u8>())
            .prop_map(|(fields, mask)| object(fields, mask))
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(48))]
        #[test]
        fn every_call_parses_and_validates(
            first in parameters(),
            second in parameters(),
            python in any::<bool>(),
            seed in any::<u64>(),
        ) {
            let (tokenizer, grammars) = engine();
            let tools = [
                ToolDefinition::new("first", "", first),
                ToolDefinition::new("second", "", second),
            ];
            let format = if python { ToolFormat::Python } else { ToolFormat::Xml };
            let spec = CallGrammar {
                format,
                tools: &tools,
                choice: CallChoice::Required,
                parallel: false,
                answer: None,
            };
            let grammar = spec.build(tokenizer).unwrap();
            let (text, ended) = draw(tokenizer, grammars, &grammar, seed);
            prop_assert!(ended, "no end within 400 tokens: {text:?}");
            prop_assert_eq!(valid_calls(&text, format, &tools).len(), 1, "{:?}", text);
        }
    }
}

/// Whether `grammar` allows `text` as the start of an answer, tokenized as the tokenizer
/// would (the engine holds a forced stretch such as `])` to the tokenizer's own tokens).
fn allows(grammars: &Grammars, grammar: &Grammar, tokenizer: &Tokenizer, text: &str) -> bool {
    let mut constraint = grammars.compile(grammar).unwrap();
    for token in tokenizer.encode(text, true).unwrap() {
        let mut logits = vec![0.0; tokenizer.vocab_size()];
        constraint.mask(&mut logits).unwrap();
        if logits[token as usize].is_infinite() {
            return false;
        }
        constraint.accept(token).unwrap();
    }
    true
}

#[test]
fn python_arguments_hold_lengths_ranges_and_list_sizes() {
    let tokenizer = tokenizer();
    let grammars = Grammars::new(tokenizer.clone()).unwrap();
    let tools = [ToolDefinition::new(
        "f",
        "",
        json!({"type": "object", "properties": {
            "flags": {"type": "array", "items": {"type": "boolean"}, "maxItems": 2},
            "name": {"type": "string", "maxLength": 3},
            "day": {"type": "integer", "minimum": 1, "maximum": 7}
        }, "required": ["flags", "name", "day"]}),
    )];
    let spec = CallGrammar {
        format: ToolFormat::Python,
        tools: &tools,
        choice: CallChoice::Required,
        parallel: false,
        answer: None,
    };
    let grammar = call_grammar(&spec, &|_| false).unwrap();
    let ok = |text: &str| allows(&grammars, &grammar, &tokenizer, text);
    assert!(ok(
        "<code>f(flags=[True, False], name=\"abc\", day=7)</code>"
    ));
    assert!(ok("<code>\nf(flags=[], name=\"\", day=1)\n</code>"));
    assert!(
        !ok("<code>f(flags=[True, False, True"),
        "a third item past maxItems 2"
    );
    assert!(
        !ok("<code>f(flags=[], name=\"abcd"),
        "a fourth character past maxLength 3"
    );
    assert!(
        !ok("<code>f(flags=[], name=\"\", day=8"),
        "8 is past the maximum 7"
    );
    assert!(
        !ok("<code>f(name="),
        "the arguments come in the schema's order"
    );
    assert!(!ok("<code>f(flags=[true"), "JSON's true is not Python");
    assert!(!ok("<code>g("), "g is no tool");
}

/// Random tools through models at temperature 1.0, `tool_choice: required`, both formats:
/// the 128k fixture (random weights) and SmolLM2 (trained; `SMOLLM2_GGUF`). Every answer
/// ends in calls, and every call parses and validates.
mod random_tools_through_models {
    use std::sync::{Mutex, OnceLock};

    use proptest::prelude::*;
    use serde_json::Value;
    use smollm3_chat::{ChatRequest, Message};
    use smollm3_gen::{Engine, FinishReason, GenerateRequest, SamplingParams, Session};
    use smollm3_tools::{CallChoice, CallGrammar, ToolDefinition, ToolFormat};

    use super::random_tools::parameters;
    use super::{fixture, valid_calls};

    /// `list`: the tools are shown in the prompt (the fixture's 512-token context has no
    /// room for them, and its random weights do not read them anyway).
    fn calls(
        session: &Mutex<Session>,
        tools: &[ToolDefinition],
        format: ToolFormat,
        seed: u64,
        list: bool,
    ) -> Result<(), TestCaseError> {
        let mut session = session.lock().unwrap_or_else(|e| e.into_inner());
        let listed: Vec<Value> = tools.iter().map(ToolDefinition::to_bare).collect();
        let listed = minijinja::Value::from_serialize(&listed);
        let mut chat = ChatRequest {
            messages: vec![Message::user("Call a tool.")],
            add_generation_prompt: true,
            enable_thinking: Some(false),
            ..Default::default()
        };
        match format {
            _ if !list => {}
            ToolFormat::Xml => chat.xml_tools = Some(listed),
            ToolFormat::Python => chat.python_tools = Some(listed),
        }
        let tokenizer = session.tokenizer().clone();
        let (open, close) = format.tags();
        let spec = CallGrammar {
            format,
            tools,
            choice: CallChoice::Required,
            parallel: false,
            answer: None,
        };
        let grammar = spec.build(&tokenizer).unwrap();
        let request = GenerateRequest {
            sampling: SamplingParams {
                temperature: 1.0,
                seed: Some(seed),
                max_tokens: Some(400),
                ..SamplingParams::default()
            },
            grammar: Some(grammar),
            tool_tags: Some(vec![(open.to_string(), close.to_string())]),
            ..GenerateRequest::chat(chat)
        };
        let done = session.generate(&request).unwrap().complete().unwrap();
        prop_assert_eq!(
            done.finish_reason,
            FinishReason::ToolCalls,
            "{:?}",
            done.tool_calls
        );
        let text: Vec<&str> = done.tool_calls.iter().map(|c| c.raw.as_str()).collect();
        prop_assert_eq!(
            valid_calls(&text.join("\n"), format, tools).len(),
            1,
            "{:?}",
            text
        );
        Ok(())
    }

    fn session(path: std::path::PathBuf, context: usize) -> Mutex<Session> {
        let engine = Engine::load(path, &Default::default()).unwrap();
        Mutex::new(engine.session(context).unwrap())
    }

    fn fixture_session() -> &'static Mutex<Session> {
        static SESSION: OnceLock<Mutex<Session>> = OnceLock::new();
        SESSION.get_or_init(|| session(fixture("smollm3-vocab128k-q8_0.gguf"), 512))
    }

    fn smollm2_session() -> Option<&'static Mutex<Session>> {
        static SESSION: OnceLock<Option<Mutex<Session>>> = OnceLock::new();
        SESSION
            .get_or_init(|| {
                let Some(gguf) = std::env::var_os("SMOLLM2_GGUF") else {
                    assert!(
                        std::env::var_os("SMOLLM3_REQUIRE_SMOLLM2").is_none(),
                        "SMOLLM3_REQUIRE_SMOLLM2 is set but SMOLLM2_GGUF is not"
                    );
                    eprintln!("SKIPPED: SMOLLM2_GGUF is not set");
                    return None;
                };
                Some(session(gguf.into(), 2048))
            })
            .as_ref()
    }

    fn tools(first: Value, second: Value) -> [ToolDefinition; 2] {
        [
            ToolDefinition::new("first", "The first tool", first),
            ToolDefinition::new("second", "The second tool", second),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(32))]
        #[test]
        fn the_fixture_model_calls_every_tool_validly(
            first in parameters(),
            second in parameters(),
            python in any::<bool>(),
            seed in any::<u64>(),
        ) {
            let format = if python { ToolFormat::Python } else { ToolFormat::Xml };
            calls(fixture_session(), &tools(first, second), format, seed, false)?;
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(16))]
        #[test]
        fn smollm2_calls_every_tool_validly(
            first in parameters(),
            second in parameters(),
            python in any::<bool>(),
            seed in any::<u64>(),
        ) {
            if let Some(session) = smollm2_session() {
                let format = if python { ToolFormat::Python } else { ToolFormat::Xml };
                calls(session, &tools(first, second), format, seed, true)?;
            }
        }
    }
}

#[test]
fn extreme_bounds_in_a_python_schema_build_a_grammar_without_trouble() {
    let tokenizer = tokenizer();
    let grammars = Grammars::new(tokenizer.clone()).unwrap();
    let tools = [ToolDefinition::new(
        "f",
        "",
        json!({"type": "object", "properties": {
            "wide": {"type": "integer", "minimum": i64::MIN, "maximum": i64::MAX},
            "long": {"type": "string", "maxLength": u64::MAX},
            "upside_down": {"type": "integer", "minimum": 5, "maximum": -5},
            "many": {"type": "array", "items": {"type": "boolean"}, "maxItems": 1_000_000}
        }, "required": ["wide", "long", "upside_down", "many"]}),
    )];
    let spec = CallGrammar {
        format: ToolFormat::Python,
        tools: &tools,
        choice: CallChoice::Required,
        parallel: false,
        answer: None,
    };
    let grammar = call_grammar(&spec, &|_| false).unwrap();
    let ok = |text: &str| allows(&grammars, &grammar, &tokenizer, text);
    assert!(ok(
        "<code>f(wide=-99999999999, long=\"a long string\", upside_down=3, many=[True])</code>"
    ));
}
