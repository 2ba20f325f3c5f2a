//! The agent loop with a scripted model in place of SmolLM3: exact rounds, calls, results and
//! the conversation fed back.

use std::ops::ControlFlow;
use std::path::Path;
use std::sync::Arc;

use serde_json::{json, Map, Value};
use smollm3_chat::{ChatRequest, ChatTemplate, DateTime, FixedClock, Message, Tokenizer};
use smollm3_gen::{GenerateRequest, Prompt, SamplingParams, ScriptedBackend, Session};
use smollm3_tools::agent::{run_agent, AgentEvent, AgentFinish, AgentOptions};
use smollm3_tools::{ParsedCall, Registry, Tool, ToolDefinition, ToolFormat};

struct Weather(ToolDefinition);

impl Weather {
    fn new() -> Arc<Self> {
        Arc::new(Weather(ToolDefinition::new(
            "get_weather",
            "Current weather in a city",
            json!({
                "type": "object",
                "properties": {
                    "city": {"type": "string"},
                    "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]}
                },
                "required": ["city"],
                "additionalProperties": false
            }),
        )))
    }
}

impl Tool for Weather {
    fn definition(&self) -> &ToolDefinition {
        &self.0
    }
    fn call(&self, arguments: &Map<String, Value>) -> Result<Value, String> {
        Ok(json!({"city": arguments["city"], "temperature": 21}))
    }
}

fn tokenizer() -> Arc<Tokenizer> {
    let path =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fixtures/gguf/smollm3-tiny-f32.gguf");
    Arc::new(Tokenizer::from_gguf(path).expect("fixture tokenizer (cargo xtask gen-fixtures)"))
}

fn session(replies: &[&str]) -> Session<ScriptedBackend> {
    let tok = tokenizer();
    let date = DateTime::date(2026, 1, 2).unwrap();
    let template =
        ChatTemplate::with_clock(smollm3_chat::OFFICIAL_TEMPLATE, Arc::new(FixedClock(date)))
            .unwrap();
    let backend = ScriptedBackend::from_texts(&tok, 16384, replies).unwrap();
    Session::with_backend(backend, tok, Arc::new(template))
}

fn registry() -> Registry {
    let mut r = Registry::new();
    r.register(Weather::new()).unwrap();
    r
}

fn question() -> ChatRequest {
    let mut chat = ChatRequest {
        enable_thinking: Some(false),
        ..Default::default()
    };
    chat.push(Message::user("What's the weather in Paris?"));
    chat
}

fn options(format: ToolFormat) -> AgentOptions {
    let mut request = GenerateRequest::new(Prompt::Tokens(vec![]));
    request.sampling = SamplingParams::greedy();
    request.sampling.max_tokens = Some(200);
    AgentOptions::new(format, request)
}

fn run(
    s: &mut Session<ScriptedBackend>,
    format: ToolFormat,
    tweak: impl FnOnce(&mut AgentOptions),
) -> (smollm3_tools::agent::AgentOutcome, Vec<AgentEvent>) {
    let mut opts = options(format);
    tweak(&mut opts);
    let mut events = Vec::new();
    let outcome = run_agent(s, &registry(), question(), &opts, |e| {
        events.push(e);
        ControlFlow::Continue(())
    })
    .unwrap();
    (outcome, events)
}

fn results(events: &[AgentEvent]) -> Vec<String> {
    events
        .iter()
        .filter_map(|e| match e {
            AgentEvent::ToolResult { content, .. } => Some(content.clone()),
            _ => None,
        })
        .collect()
}

const XML_CALL: &str =
    "<tool_call>\n{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Paris\"}}\n</tool_call>";

#[test]
fn xml_call_runs_and_the_result_goes_back_to_the_model() {
    let mut s = session(&[
        &format!("Let me check.\n{XML_CALL}"),
        "It is 21 degrees in Paris.",
    ]);
    let (outcome, events) = run(&mut s, ToolFormat::Xml, |_| {});
    assert_eq!(outcome.finish, AgentFinish::Answered);
    assert_eq!(outcome.rounds, 2);
    assert_eq!(outcome.answer, "It is 21 degrees in Paris.");
    assert_eq!(
        results(&events),
        vec![r#"{"city":"Paris","temperature":21}"#]
    );
    // Order: round-1 text, the parsed call, its result, then round-2 text.
    let kinds: Vec<&str> = events
        .iter()
        .filter_map(|e| match e {
            AgentEvent::ToolCall { .. } => Some("call"),
            AgentEvent::ToolResult { .. } => Some("result"),
            AgentEvent::Model {
                round: 2,
                event: smollm3_gen::Event::Answer { .. },
            } => Some("answer2"),
            _ => None,
        })
        .collect();
    assert_eq!(kinds.first(), Some(&"call"));
    assert_eq!(kinds.get(1), Some(&"result"));
    assert!(kinds[2..].iter().all(|k| *k == "answer2"));
    match &events
        .iter()
        .find(|e| matches!(e, AgentEvent::ToolCall { .. }))
    {
        Some(AgentEvent::ToolCall {
            call: ParsedCall::Ok { call, .. },
            ..
        }) => {
            assert_eq!(call.name, "get_weather");
            assert_eq!(
                Value::Object(call.arguments.clone()),
                json!({"city": "Paris"})
            );
        }
        other => panic!("{other:?}"),
    }
    // The conversation holds the raw call as the assistant turn and the result as a tool turn.
    let msgs = serde_json::to_value(&outcome.chat.messages).unwrap();
    assert_eq!(msgs[1]["role"], "assistant");
    assert_eq!(msgs[1]["content"], format!("Let me check.\n{XML_CALL}"));
    assert_eq!(msgs[2]["role"], "tool");
    // The model really saw the tool list and the result: both are in the cached prompt.
    let seen = tokenizer().decode(s.cached_tokens(), false).unwrap();
    assert!(
        seen.contains("<tools>") && seen.contains("\"get_weather\""),
        "{seen}"
    );
    assert!(seen.contains(r#"{"city":"Paris","temperature":21}"#));
}

#[test]
fn python_call_with_positional_argument() {
    let mut s = session(&[
        "<code>get_weather(\"Paris\", unit=\"celsius\")</code>",
        "Sunny.",
    ]);
    // Unheld, as a model may write it (the call grammar writes keywords only).
    let (outcome, events) = run(&mut s, ToolFormat::Python, |o| o.hold_calls = false);
    assert_eq!(outcome.finish, AgentFinish::Answered);
    assert_eq!(
        results(&events),
        vec![r#"{"city":"Paris","temperature":21}"#]
    );
    let seen = tokenizer().decode(s.cached_tokens(), false).unwrap();
    assert!(
        seen.contains("Python code between '<code>' and '</code>'"),
        "python_tools prompt"
    );
}

#[test]
fn invalid_arguments_go_back_as_an_error_and_the_model_retries() {
    let bad =
        "<tool_call>\n{\"name\": \"get_weather\", \"arguments\": {\"city\": 5}}\n</tool_call>";
    let mut s = session(&[bad, XML_CALL, "Done."]);
    let (outcome, events) = run(&mut s, ToolFormat::Xml, |o| o.hold_calls = false);
    assert_eq!(outcome.finish, AgentFinish::Answered);
    assert_eq!(outcome.rounds, 3);
    let r = results(&events);
    assert_eq!(r.len(), 2);
    let err: Value = serde_json::from_str(&r[0]).unwrap();
    let msg = err["error"].as_str().unwrap();
    assert!(
        msg.contains("invalid arguments") && msg.contains("city"),
        "{msg}"
    );
    assert_eq!(r[1], r#"{"city":"Paris","temperature":21}"#);
}

#[test]
fn unknown_tool_and_malformed_call_are_reported_not_dropped() {
    let unknown = "<tool_call>\n{\"name\": \"launch_rocket\", \"arguments\": {}}\n</tool_call>";
    let broken =
        "<tool_call>\n{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Par\n</tool_call>";
    let mut s = session(&[&format!("{unknown}\n{broken}"), "Sorry."]);
    let (outcome, events) = run(&mut s, ToolFormat::Xml, |o| o.hold_calls = false);
    assert_eq!(outcome.finish, AgentFinish::Answered);
    let r = results(&events);
    assert_eq!(r.len(), 2);
    assert!(
        r[0].contains("unknown tool") && r[0].contains("launch_rocket"),
        "{}",
        r[0]
    );
    assert!(r[1].contains("could not parse"), "{}", r[1]);
    assert!(events.iter().any(|e| matches!(
        e,
        AgentEvent::ToolCall {
            call: ParsedCall::Malformed { .. },
            ..
        }
    )));
}

#[test]
fn max_rounds_stops_a_model_that_keeps_calling() {
    let mut s = session(&[XML_CALL, XML_CALL, XML_CALL, "never reached"]);
    let (outcome, events) = run(&mut s, ToolFormat::Xml, |o| o.max_rounds = 2);
    assert_eq!(outcome.finish, AgentFinish::MaxRounds);
    assert_eq!(outcome.rounds, 2);
    // Calls of the last round are reported but not run.
    assert_eq!(results(&events).len(), 1);
}

#[test]
fn external_tools_are_returned_to_the_caller() {
    let call =
        "<tool_call>\n{\"name\": \"send_email\", \"arguments\": {\"to\": \"a@b.c\"}}\n</tool_call>";
    let mut s = session(&[call]);
    let external = ToolDefinition::new(
        "send_email",
        "Send an email",
        json!({"type": "object", "properties": {"to": {"type": "string"}}}),
    );
    let (outcome, events) = run(&mut s, ToolFormat::Xml, |o| {
        o.external = vec![external];
        o.hold_calls = false;
    });
    match outcome.finish {
        AgentFinish::ToolCalls { calls } => {
            assert_eq!(calls.len(), 1);
            assert_eq!(calls[0].name, "send_email");
        }
        other => panic!("{other:?}"),
    }
    assert!(results(&events).is_empty());
}

#[test]
fn a_call_cut_off_by_max_tokens_is_reported_and_not_run() {
    let mut s = session(&[XML_CALL]);
    let (outcome, events) = run(&mut s, ToolFormat::Xml, |o| {
        o.request.sampling.max_tokens = Some(8)
    });
    assert_eq!(outcome.finish, AgentFinish::Length);
    assert!(results(&events).is_empty());
    assert!(events.iter().any(|e| matches!(
        e,
        AgentEvent::ToolCall {
            call: ParsedCall::Malformed { .. },
            ..
        }
    )));
}

#[test]
fn breaking_from_the_callback_cancels() {
    let mut s = session(&[
        &format!("Let me check the weather for you now.\n{XML_CALL}"),
        "x",
    ]);
    let mut seen = 0;
    let outcome = run_agent(
        &mut s,
        &registry(),
        question(),
        &options(ToolFormat::Xml),
        |e| {
            if matches!(
                e,
                AgentEvent::Model {
                    event: smollm3_gen::Event::Answer { .. },
                    ..
                }
            ) {
                seen += 1;
                if seen == 2 {
                    return ControlFlow::Break(());
                }
            }
            ControlFlow::Continue(())
        },
    )
    .unwrap();
    assert_eq!(outcome.finish, AgentFinish::Cancelled);
    assert_eq!(outcome.rounds, 1);
}

#[test]
fn external_calls_are_validated_before_they_are_returned() {
    let bad = "<tool_call>\n{\"name\": \"send_email\", \"arguments\": {\"to\": 42}}\n</tool_call>";
    let good =
        "<tool_call>\n{\"name\": \"send_email\", \"arguments\": {\"to\": \"a@b.c\"}}\n</tool_call>";
    let mut s = session(&[bad, good]);
    let external = ToolDefinition::new(
        "send_email",
        "Send an email",
        json!({"type": "object", "properties": {"to": {"type": "string"}}, "required": ["to"]}),
    );
    let (outcome, events) = run(&mut s, ToolFormat::Xml, |o| {
        o.external = vec![external];
        o.hold_calls = false;
    });
    let r = results(&events);
    assert_eq!(r.len(), 1);
    assert!(
        r[0].contains("invalid arguments for send_email") && r[0].contains("/to"),
        "{}",
        r[0]
    );
    match outcome.finish {
        AgentFinish::ToolCalls { calls } => {
            assert_eq!(
                Value::Object(calls[0].arguments.clone()),
                json!({"to": "a@b.c"})
            );
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(outcome.rounds, 2);
}

#[test]
fn a_call_is_reported_when_its_closing_tag_arrives() {
    let mut s = session(&[
        &format!("Checking.\n{XML_CALL}\nOne moment please."),
        "Done.",
    ]);
    // Unheld: the call grammar ends the answer at the call, with no text after it.
    let (_, events) = run(&mut s, ToolFormat::Xml, |o| o.hold_calls = false);
    let call = events
        .iter()
        .position(|e| matches!(e, AgentEvent::ToolCall { .. }))
        .unwrap();
    // Text after the call (" One moment please.") streams after the call was reported.
    let later_text = events
        .iter()
        .rposition(|e| {
            matches!(
                e,
                AgentEvent::Model {
                    round: 1,
                    event: smollm3_gen::Event::Answer { .. }
                }
            )
        })
        .unwrap();
    assert!(
        call < later_text,
        "the call waited for the end of the generation"
    );
}

/// A tool whose one argument is a choice from a list (a scripted model held to a grammar it
/// was not scripted for would write one character forever in a free string).
struct Pick(ToolDefinition);

impl Tool for Pick {
    fn definition(&self) -> &ToolDefinition {
        &self.0
    }
    fn call(&self, arguments: &Map<String, Value>) -> Result<Value, String> {
        Ok(json!({"picked": arguments["choice"]}))
    }
}

#[test]
fn held_calls_are_valid_even_from_a_model_that_writes_broken_ones() {
    let xml = "<tool_call>\n{\"name\": \"launch_rocket\", \"arguments\": {}}\n</tool_call>\n\
               <tool_call>\n{\"name\": \"pick\", \"arguments\": {\"choice\": 5\n</tool_call>";
    let python = "<code>launch_rocket()\npick(choice=5</code>";
    for (format, script) in [(ToolFormat::Xml, xml), (ToolFormat::Python, python)] {
        let mut s = session(&[script, "Done."]);
        let mut registry = Registry::new();
        registry
            .register(Arc::new(Pick(ToolDefinition::new(
                "pick",
                "Picks one",
                json!({"type": "object", "properties": {"choice": {"enum": ["a", "b"]}},
                       "required": ["choice"], "additionalProperties": false}),
            ))))
            .unwrap();
        let mut events = Vec::new();
        let outcome = run_agent(&mut s, &registry, question(), &options(format), |e| {
            events.push(e);
            ControlFlow::Continue(())
        })
        .unwrap();
        assert_eq!(
            outcome.finish,
            AgentFinish::Answered,
            "{format:?}: {events:?}"
        );
        let r = results(&events);
        assert!(!r.is_empty(), "{format:?}: {events:?}");
        for result in r {
            let value: Value = serde_json::from_str(&result).unwrap();
            assert!(
                ["a", "b"].contains(&value["picked"].as_str().unwrap()),
                "{result}"
            );
        }
        assert!(!events.iter().any(|e| matches!(
            e,
            AgentEvent::ToolCall {
                call: ParsedCall::Malformed { .. },
                ..
            }
        )));
    }
}
