//! Tool calls through the API on scripted sessions: definitions into the prompt, calls out
//! of the model's text into OpenAI `tool_calls` (streamed and not), earlier calls back into
//! the text the model sees, `tool_choice`, `parallel_tool_calls`, and 400s for bad tools.

mod common;

use axum::http::StatusCode;
use common::{app, post_json, send, sse_data};
use serde_json::{json, Value};

const WEATHER_CALL: &str = "<think>\nI need the weather.\n</think>\nLet me check.\n<tool_call>\n{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Paris\"}}\n</tool_call>";

fn tools() -> Value {
    json!([{
        "type": "function",
        "function": {
            "name": "get_weather",
            "description": "Current weather in a city",
            "parameters": {
                "type": "object",
                "properties": {"city": {"type": "string"}},
                "required": ["city"]
            }
        }
    }])
}

fn ask(extra: Value) -> Value {
    let mut body = json!({
        "messages": [{"role": "user", "content": "Weather in Paris?"}],
        "tools": tools(),
    });
    for (k, v) in extra.as_object().unwrap() {
        body[k] = v.clone();
    }
    body
}

#[tokio::test]
async fn a_call_comes_back_as_tool_calls_with_a_json_string_of_arguments() {
    let (status, v, text) = post_json(app(&[WEATHER_CALL]), ask(json!({}))).await;
    assert_eq!(status, StatusCode::OK, "{text}");
    let choice = &v["choices"][0];
    assert_eq!(choice["finish_reason"], "tool_calls", "{text}");
    let message = &choice["message"];
    assert_eq!(message["content"], "Let me check.");
    assert_eq!(message["reasoning_content"], "I need the weather.");
    let calls = message["tool_calls"].as_array().unwrap();
    assert_eq!(calls.len(), 1, "{text}");
    let call = &calls[0];
    assert!(call["id"].as_str().unwrap().starts_with("call_"), "{call}");
    assert_eq!(call["type"], "function");
    assert_eq!(call["function"]["name"], "get_weather");
    // OpenAI sends arguments as a JSON *string*.
    let arguments: Value =
        serde_json::from_str(call["function"]["arguments"].as_str().unwrap()).unwrap();
    assert_eq!(arguments, json!({"city": "Paris"}));
    assert!(
        call.get("index").is_none(),
        "index belongs to stream deltas only"
    );
}

/// Replaces what changes between runs (ids, times, speeds) or with tuning (draft counts) so
/// the raw bytes can be compared.
fn normalize(sse: &str) -> String {
    let re = |p: &str| regex::Regex::new(p).unwrap();
    let s = re(r#""id":"chatcmpl-[0-9a-f]+""#).replace_all(sse, r#""id":"chatcmpl-ID""#);
    let s = re(r#""id":"call_[0-9a-f]+_(\d+)""#).replace_all(&s, r#""id":"call_ID_$1""#);
    let s = re(r#""created":\d+"#).replace_all(&s, r#""created":0"#);
    let s = re(r#""(prompt_ms|prompt_per_second|predicted_ms|predicted_per_second)":[0-9.e+-]+"#)
        .replace_all(&s, r#""$1":0"#);
    // Draft counts follow the drafting policy's tuning, not the protocol (tests/api.rs
    // checks them).
    let s = re(r#""(draft_n|draft_n_accepted)":\d+"#).replace_all(&s, r#""$1":0"#);
    s.into_owned()
}

/// The raw SSE bytes of a streamed answer with reasoning, text and a tool call, against a
/// golden file. The file was written from the protocol (`../shared/docs/api-and-ux.md`) and
/// checked line by line: `data: ` + one JSON object + a blank line per event; the role chunk
/// first; reasoning in `reasoning_content`, text in `content`, token by token; the call in one
/// `tool_calls` delta carrying `index`, `id`, `type` and the name with the whole arguments
/// string; `finish_reason: "tool_calls"` with `timings` on an empty delta; the usage chunk
/// with no choices; `[DONE]`. Set `UPDATE_GOLDEN=1` to rewrite it after a deliberate change,
/// and review the diff.
#[tokio::test]
async fn a_streamed_tool_call_matches_the_golden_sse_bytes() {
    let body = ask(json!({"stream": true, "stream_options": {"include_usage": true}}));
    let (status, text) = send(
        app(&[WEATHER_CALL]),
        "POST",
        "/v1/chat/completions",
        &body.to_string(),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{text}");
    let got = normalize(&text);
    let path =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden/tool_call_stream.sse");
    if std::env::var_os("UPDATE_GOLDEN").is_some() {
        std::fs::write(&path, &got).unwrap();
    }
    let want = std::fs::read_to_string(&path).unwrap();
    assert_eq!(got, want, "raw SSE differs from {}", path.display());

    // The same facts, independently of the file.
    let data = sse_data(&text);
    let chunks: Vec<Value> = data[..data.len() - 1]
        .iter()
        .map(|d| serde_json::from_str(d).unwrap())
        .collect();
    let call_deltas: Vec<&Value> = chunks
        .iter()
        .filter_map(|c| c["choices"][0]["delta"].get("tool_calls"))
        .collect();
    assert_eq!(call_deltas.len(), 1);
    let call = &call_deltas[0][0];
    assert_eq!(call["index"], 0);
    assert_eq!(call["type"], "function");
    assert_eq!(call["function"]["name"], "get_weather");
    assert_eq!(call["function"]["arguments"], r#"{"city":"Paris"}"#);
    let content: String = chunks
        .iter()
        .filter_map(|c| c["choices"][0]["delta"]["content"].as_str())
        .collect();
    assert_eq!(
        content, "Let me check.\n",
        "no call text leaks into content"
    );
    assert_eq!(
        chunks[chunks.len() - 2]["choices"][0]["finish_reason"],
        "tool_calls"
    );
}

#[tokio::test]
async fn calls_of_unknown_tools_or_malformed_ones_cannot_be_written() {
    // The scripted model calls a tool nobody offered, then writes a call with its arguments
    // cut off; the call grammar holds every call to the offered tools and their schemas.
    let reply = "<tool_call>\n{\"name\": \"launch_rockets\", \"arguments\": {}}\n</tool_call>\n<tool_call>\n{\"name\": \"get_weather\", \"arguments\": {\"city\": \n</tool_call>";
    let body = ask_closed(json!({"reasoning_effort": "none", "max_tokens": 300}));
    let (_, v, text) = post_json(app(&[reply]), body).await;
    assert!(!text.contains("launch_rockets"), "{text}");
    assert_weather_calls(&v, &text);
}

#[tokio::test]
async fn without_tools_or_with_tool_choice_none_tags_are_plain_text() {
    for body in [
        json!({"messages": [{"role": "user", "content": "Hi"}], "reasoning_effort": "none"}),
        ask(json!({"tool_choice": "none", "reasoning_effort": "none"})),
    ] {
        let (_, v, text) = post_json(app(&[WEATHER_CALL]), body.clone()).await;
        assert_eq!(v["choices"][0]["finish_reason"], "stop", "{text}");
        assert!(
            v["choices"][0]["message"].get("tool_calls").is_none(),
            "{text}"
        );
        // The call's text stays in the content (its tags are control tokens, which print
        // nothing when they are not tool-call tags, as in llama.cpp).
        assert!(v["choices"][0]["message"]["content"]
            .as_str()
            .unwrap()
            .contains("{\"name\": \"get_weather\""));
        // And the model was not shown the tools.
        let (_, text) = send(app(&["x"]), "POST", "/apply-template", &body.to_string()).await;
        assert!(!text.contains("get_weather"), "{text}");
    }
    let (_, text) = send(
        app(&["x"]),
        "POST",
        "/apply-template",
        &ask(json!({})).to_string(),
    )
    .await;
    let prompt: Value = serde_json::from_str(&text).unwrap();
    let prompt = prompt["prompt"].as_str().unwrap();
    assert!(
        prompt.contains("<tools>\n{'name': 'get_weather'"),
        "{prompt}"
    );
    assert!(
        prompt.contains("within <tool_call></tool_call> XML tags"),
        "{prompt}"
    );
}

#[tokio::test]
async fn a_named_tool_choice_allows_calls_of_that_tool_only() {
    // The scripted model calls another offered tool; the call grammar allows only the named
    // one, and its arguments are held to its schema.
    let reply = "<tool_call>\n{\"name\": \"get_time\", \"arguments\": {}}\n</tool_call>";
    let mut body = ask_closed(json!({
        "tool_choice": {"type": "function", "function": {"name": "get_weather"}},
        "reasoning_effort": "none",
        "max_tokens": 100,
    }));
    body["tools"]
        .as_array_mut()
        .unwrap()
        .push(json!({"type": "function", "function": {"name": "get_time"}}));
    let (status, v, text) = post_json(app(&[reply]), body.clone()).await;
    assert_eq!(status, StatusCode::OK, "{text}");
    let calls = v["choices"][0]["message"]["tool_calls"]
        .as_array()
        .expect(&text);
    assert!(!calls.is_empty(), "{text}");
    for call in calls {
        assert_eq!(call["function"]["name"], "get_weather", "{text}");
    }
    assert_eq!(v["choices"][0]["finish_reason"], "tool_calls");
    // With `auto`, the model's own call.
    body["tool_choice"] = json!("auto");
    let (_, v, text) = post_json(app(&[reply]), body).await;
    let call = &v["choices"][0]["message"]["tool_calls"][0];
    assert_eq!(call["function"]["name"], "get_time", "{text}");
}

#[tokio::test]
async fn parallel_calls_come_only_when_asked_for() {
    let two = "<tool_call>\n{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Paris\"}}\n</tool_call>\n<tool_call>\n{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Rome\"}}\n</tool_call>";
    let (_, v, text) = post_json(
        app(&[two]),
        ask(json!({"reasoning_effort": "none", "parallel_tool_calls": true})),
    )
    .await;
    let calls = v["choices"][0]["message"]["tool_calls"].as_array().unwrap();
    assert_eq!(calls.len(), 2, "{text}");
    assert_ne!(calls[0]["id"], calls[1]["id"]);
    assert_eq!(calls[1]["function"]["arguments"], r#"{"city":"Rome"}"#);
    assert_eq!(v["choices"][0]["message"]["content"], Value::Null);
    // By default (as llama-server), one call: the answer ends after it, and says so.
    let (_, v, text) = post_json(app(&[two]), ask(json!({"reasoning_effort": "none"}))).await;
    let calls = v["choices"][0]["message"]["tool_calls"].as_array().unwrap();
    assert_eq!(calls.len(), 1, "{text}");
    assert_eq!(calls[0]["function"]["arguments"], r#"{"city":"Paris"}"#);
    assert_eq!(v["choices"][0]["finish_reason"], "tool_calls", "{text}");
    assert!(
        !text.contains("Rome"),
        "the second call was never written: {text}"
    );
}

#[tokio::test]
async fn python_tools_are_offered_and_parsed_in_smollm3s_code_format() {
    let reply = "<code>get_weather(city=\"Paris\")</code>";
    let body = ask(json!({
        "reasoning_effort": "none",
        "chat_template_kwargs": {"python_tools": true},
    }));
    let (_, v, text) = post_json(app(&[reply]), body.clone()).await;
    let call = &v["choices"][0]["message"]["tool_calls"][0];
    assert_eq!(call["function"]["name"], "get_weather", "{text}");
    assert_eq!(call["function"]["arguments"], r#"{"city":"Paris"}"#);
    let (_, text) = send(app(&["x"]), "POST", "/apply-template", &body.to_string()).await;
    assert!(text.contains("stateful Jupyter notebook"), "{text}");
}

#[tokio::test]
async fn earlier_calls_are_written_into_the_assistant_text_the_model_sees() {
    let body = json!({
        "tools": tools(),
        "messages": [
            {"role": "user", "content": "Weather in Paris?"},
            {"role": "assistant", "content": null, "tool_calls": [{
                "id": "call_1", "type": "function",
                "function": {"name": "get_weather", "arguments": "{\"city\": \"Paris\"}"}
            }]},
            {"role": "tool", "tool_call_id": "call_1", "content": "sunny, 21 C"},
        ],
    });
    let (status, text) = send(app(&["x"]), "POST", "/apply-template", &body.to_string()).await;
    assert_eq!(status, StatusCode::OK, "{text}");
    let prompt: Value = serde_json::from_str(&text).unwrap();
    let prompt = prompt["prompt"].as_str().unwrap();
    assert!(
        prompt.contains(
            "<|im_start|>assistant\n<tool_call>\n{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Paris\"}}\n</tool_call><|im_end|>\n<|im_start|>user\nsunny, 21 C<|im_end|>"
        ),
        "{prompt}"
    );
}

#[tokio::test]
async fn bad_tools_and_tool_choices_get_400s_naming_the_field() {
    let user = json!([{"role": "user", "content": "Hi"}]);
    for (body, param, needle) in [
        (
            json!({"messages": user, "tools": [{"type": "function", "function": {"name": "no spaces"}}]}),
            "tools[0]",
            "invalid tool name",
        ),
        (
            json!({"messages": user, "tools": "get_weather"}),
            "tools",
            "invalid type",
        ),
        (
            json!({"messages": user, "tools": [tools()[0], tools()[0]]}),
            "tools[1]",
            "a second tool named",
        ),
        (
            json!({"messages": user, "tools": tools(), "tool_choice": "sometimes"}),
            "tool_choice",
            "expected \"auto\"",
        ),
        (
            json!({"messages": user, "tools": tools(),
                   "tool_choice": {"type": "function", "function": {"name": "fly"}}}),
            "tool_choice.function.name",
            "no tool named \"fly\"",
        ),
        (
            json!({"messages": user, "tool_choice": "required"}),
            "tool_choice",
            "no tools are given",
        ),
        (
            json!({"messages": [
                {"role": "user", "content": "Hi"},
                {"role": "assistant", "tool_calls": [{"type": "function",
                    "function": {"name": "get_weather", "arguments": "[1]"}}]}
            ]}),
            "messages[1].tool_calls[0].function.arguments",
            "not a JSON object",
        ),
        (
            json!({"messages": user, "chat_template_kwargs": {"python_tools": "yes"}}),
            "chat_template_kwargs.python_tools",
            "expected true, false or a list",
        ),
    ] {
        let (status, v, text) = post_json(app(&["x"]), body).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{text}");
        assert_eq!(v["error"]["param"], param, "{text}");
        assert_eq!(v["error"]["type"], "invalid_request_error");
        assert!(
            v["error"]["message"].as_str().unwrap().contains(needle),
            "{text}"
        );
    }
}

/// A body asking for the weather with `city` one of a list and no other keys (a scripted
/// model held to a grammar it was not scripted for writes one character forever in a free
/// string; a real model closes it).
fn ask_closed(extra: Value) -> Value {
    let mut body = ask(extra);
    let parameters = &mut body["tools"][0]["function"]["parameters"];
    parameters["properties"]["city"] = json!({"enum": ["Oslo", "Paris"]});
    parameters["additionalProperties"] = json!(false);
    body
}

/// The answer is calls of `get_weather` only (at least one), each with a city of
/// [`ask_closed`]'s list, and says so in `finish_reason`.
fn assert_weather_calls(v: &Value, text: &str) {
    let calls = v["choices"][0]["message"]["tool_calls"]
        .as_array()
        .expect(text);
    assert!(!calls.is_empty(), "{text}");
    for call in calls {
        assert_eq!(call["function"]["name"], "get_weather", "{text}");
        let arguments: Value =
            serde_json::from_str(call["function"]["arguments"].as_str().unwrap()).unwrap();
        assert!(
            ["Oslo", "Paris"].contains(&arguments["city"].as_str().unwrap()),
            "{text}"
        );
    }
    assert_eq!(v["choices"][0]["finish_reason"], "tool_calls", "{text}");
}

#[tokio::test]
async fn a_required_call_comes_even_from_a_model_that_wanted_to_chat() {
    for (kwargs, open) in [
        (json!({}), "<tool_call>"),
        (json!({"python_tools": true}), "<code>"),
    ] {
        let body = ask_closed(json!({
            "tool_choice": "required",
            "reasoning_effort": "none",
            "chat_template_kwargs": kwargs,
            "max_tokens": 100,
        }));
        let (status, v, text) = post_json(app(&["Sure, it is sunny there!"]), body).await;
        assert_eq!(status, StatusCode::OK, "{open}: {text}");
        assert_weather_calls(&v, &text);
        assert!(!text.contains("sunny"), "{text}");
    }
}

#[tokio::test]
async fn a_json_response_format_holds_the_text_answer_and_calls_stay_possible() {
    let schema = json!({"type": "object", "properties": {"ok": {"enum": [true]}},
                        "required": ["ok"], "additionalProperties": false});
    let format = json!({"type": "json_schema", "json_schema": {"name": "ok", "schema": schema}});
    let body = ask_closed(json!({"response_format": format, "reasoning_effort": "none"}));
    // A model that chats answers in the schema...
    let (status, v, text) = post_json(app(&["Sure! Here you go."]), body.clone()).await;
    assert_eq!(status, StatusCode::OK, "{text}");
    assert_eq!(
        v["choices"][0]["message"]["content"], r#"{"ok": true}"#,
        "{text}"
    );
    assert_eq!(v["choices"][0]["finish_reason"], "stop", "{text}");
    // ...and a model that calls a tool still calls it.
    let call = "<tool_call>\n{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Oslo\"}}\n</tool_call>";
    let (_, v, text) = post_json(app(&[call]), body).await;
    let calls = v["choices"][0]["message"]["tool_calls"]
        .as_array()
        .expect(&text);
    assert_eq!(
        calls[0]["function"]["arguments"], r#"{"city":"Oslo"}"#,
        "{text}"
    );
    assert_eq!(v["choices"][0]["finish_reason"], "tool_calls", "{text}");
}

#[tokio::test]
async fn tools_whose_schema_cannot_be_held_are_a_400_naming_them() {
    let mut body = ask(json!({}));
    body["tools"][0]["function"]["parameters"]["properties"]["city"] = json!({"type": "strin"});
    let (status, v, text) = post_json(app(&["x"]), body).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{text}");
    let message = v["error"]["message"].as_str().unwrap();
    assert!(message.contains("strin"), "{text}");
    let mut body = ask(json!({"chat_template_kwargs": {"python_tools": true}}));
    body["tools"][0]["function"]["parameters"]["properties"] =
        json!({"the-city": {"type": "string"}});
    let (status, v, text) = post_json(app(&["x"]), body).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{text}");
    assert_eq!(v["error"]["param"], "tools", "{text}");
    assert!(
        v["error"]["message"].as_str().unwrap().contains("the-city"),
        "{text}"
    );
}
