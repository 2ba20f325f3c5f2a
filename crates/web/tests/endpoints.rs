//! `/v1/completions`, `/metrics` and CORS through `router(state).oneshot(request)` on
//! scripted sessions.

mod common;

use std::sync::Arc;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use common::{app, post_json, send, sse_data, state};
use serde_json::{json, Value};
use smollm3_web::router;
use tower::ServiceExt;

async fn complete(app: axum::Router, body: Value) -> (StatusCode, Value, String) {
    let (status, text) = send(app, "POST", "/v1/completions", &body.to_string()).await;
    (
        status,
        serde_json::from_str(&text).unwrap_or(Value::Null),
        text,
    )
}

#[tokio::test]
async fn a_text_completion_continues_the_raw_prompt() {
    let (status, v, text) = complete(
        app(&["a time there was a fox"]),
        json!({"prompt": "Once upon", "model": "m"}),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{text}");
    assert_eq!(v["object"], "text_completion");
    assert!(v["id"].as_str().unwrap().starts_with("cmpl-"));
    assert_eq!(v["model"], "m");
    let choice = &v["choices"][0];
    assert_eq!(choice["text"], "a time there was a fox");
    assert_eq!(choice["finish_reason"], "stop");
    assert!(choice.get("message").is_none());
    // No template: the prompt is the text itself (a few tokens, no system block).
    let prompt_tokens = v["usage"]["prompt_tokens"].as_u64().unwrap();
    assert!((1..=4).contains(&prompt_tokens), "{text}");

    let (_, v, text) = complete(
        app(&["one two three"]),
        json!({"prompt": ["Count:"], "max_tokens": 1}),
    )
    .await;
    assert_eq!(v["choices"][0]["finish_reason"], "length", "{text}");
}

#[tokio::test]
async fn a_streamed_text_completion_sends_text_chunks_then_done() {
    let (status, text) = send(
        app(&["a time there was"]),
        "POST",
        "/v1/completions",
        &json!({"prompt": "Once upon", "stream": true}).to_string(),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{text}");
    let data = sse_data(&text);
    assert_eq!(data.last(), Some(&"[DONE]"));
    let chunks: Vec<Value> = data[..data.len() - 1]
        .iter()
        .map(|d| serde_json::from_str(d).unwrap())
        .collect();
    assert!(chunks.len() > 2, "the text streams in pieces: {text}");
    assert!(chunks.iter().all(|c| c["object"] == "text_completion"));
    let joined: String = chunks
        .iter()
        .filter_map(|c| c["choices"][0]["text"].as_str())
        .collect();
    assert_eq!(joined, "a time there was");
    assert_eq!(
        chunks.last().unwrap()["choices"][0]["finish_reason"],
        "stop"
    );
}

#[tokio::test]
async fn text_completion_options_it_cannot_honour_are_400s() {
    for (body, param) in [
        (json!({}), "prompt"),
        (json!({"prompt": ["a", "b"]}), "prompt"),
        (json!({"prompt": "a", "echo": true}), "echo"),
        (json!({"prompt": "a", "suffix": "z"}), "suffix"),
        (json!({"prompt": "a", "n": 2}), "n"),
        (json!({"prompt": "a", "logprobs": 3}), "logprobs"),
        (json!({"prompt": "a", "top_p": 7}), "top_p"),
    ] {
        let (status, v, text) = complete(app(&["x"]), body).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{text}");
        assert_eq!(v["error"]["param"], param, "{text}");
    }
}

/// The value of the sample `name` (with its labels, as written) in Prometheus text.
fn sample(text: &str, name: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
}

#[tokio::test]
async fn metrics_count_outcomes_tokens_and_report_the_slots() {
    let app = app(&["Hello there", "Hi"]);
    let ok = json!({"messages": [{"role": "user", "content": "Hi"}], "reasoning_effort": "none"});
    let (status, v, _) = post_json(app.clone(), ok.clone()).await;
    assert_eq!(status, StatusCode::OK);
    let generated = v["usage"]["completion_tokens"].as_f64().unwrap();
    let prompt = v["usage"]["prompt_tokens"].as_f64().unwrap();
    let (status, _, _) = post_json(app.clone(), json!({"messages": []})).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let (status, _) = send(
        app.clone(),
        "POST",
        "/v1/completions",
        &json!({"prompt": "x", "max_tokens": 1}).to_string(),
    )
    .await;
    assert_eq!(status, StatusCode::OK);

    // A slot is handed back just after its last event: wait for it to be idle.
    for _ in 0..500 {
        let (_, slots) = send(app.clone(), "GET", "/slots", "").await;
        if !slots.contains("\"is_processing\":true") {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
    let (status, text) = send(app, "GET", "/metrics", "").await;
    assert_eq!(status, StatusCode::OK, "{text}");
    let chat = r#"smollm3_requests_total{endpoint="/v1/chat/completions","#;
    assert_eq!(
        sample(&text, &format!(r#"{chat}outcome="stop"}}"#)),
        Some(1.0),
        "{text}"
    );
    assert_eq!(
        sample(&text, &format!(r#"{chat}outcome="invalid_request"}}"#)),
        Some(1.0),
        "{text}"
    );
    assert_eq!(
        sample(
            &text,
            r#"smollm3_requests_total{endpoint="/v1/completions",outcome="length"}"#
        ),
        Some(1.0),
        "{text}"
    );
    assert_eq!(
        sample(&text, "smollm3_generated_tokens_total"),
        Some(generated + 1.0)
    );
    assert!(sample(&text, "smollm3_prompt_tokens_total").unwrap() >= prompt + 1.0);
    assert_eq!(
        sample(&text, "smollm3_time_to_first_token_seconds_count"),
        Some(2.0)
    );
    assert_eq!(sample(&text, "smollm3_queue_depth"), Some(0.0));
    assert_eq!(sample(&text, "smollm3_slots_busy"), Some(0.0));
    assert_eq!(sample(&text, "smollm3_slots_total"), Some(1.0));
    assert!(text.ends_with("# EOF\n"), "{text}");
}

#[tokio::test]
async fn cors_preflights_are_answered_for_listed_origins_only() {
    let preflight = |origin: &str| {
        Request::builder()
            .method("OPTIONS")
            .uri("/v1/chat/completions")
            .header("origin", origin)
            .header("access-control-request-method", "POST")
            .header(
                "access-control-request-headers",
                "authorization, content-type",
            )
            .body(Body::empty())
            .unwrap()
    };
    let mut s = state(&["x"]);
    s.api_key = Some("k".into());
    s.cors_origins = vec!["http://localhost:3000".into()];
    let app = router(Arc::new(s));
    let response = app
        .clone()
        .oneshot(preflight("http://localhost:3000"))
        .await
        .unwrap();
    assert!(response.status().is_success(), "{:?}", response.status());
    let headers = response.headers();
    assert_eq!(
        headers["access-control-allow-origin"],
        "http://localhost:3000"
    );
    let allowed = headers["access-control-allow-headers"].to_str().unwrap();
    assert!(allowed.contains("authorization"), "{allowed}");
    let response = app.oneshot(preflight("http://evil.test")).await.unwrap();
    assert!(response
        .headers()
        .get("access-control-allow-origin")
        .is_none());

    // No --cors: no CORS headers at all.
    let response = common::app(&["x"])
        .oneshot(preflight("http://localhost:3000"))
        .await
        .unwrap();
    assert!(response
        .headers()
        .get("access-control-allow-origin")
        .is_none());
}

#[tokio::test]
async fn a_text_completion_takes_a_schema_too() {
    let schema = json!({"type": "object", "properties": {"n": {"enum": [7]}}, "required": ["n"],
                        "additionalProperties": false});
    for extra in [
        json!({"response_format": {"type": "json_schema", "json_schema": {"schema": schema}}}),
        json!({"json_schema": schema}),
        // llama-server's `grammar`, in Lark (with llama.cpp's llguidance marker or without).
        json!({"grammar": "start: \"{\\\"n\\\": 7}\""}),
        json!({"grammar": "%llguidance {}\nstart: \"{\\\"n\\\": 7}\""}),
    ] {
        let mut body = json!({"prompt": "Data:", "max_tokens": 20});
        body.as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        let (status, v, text) = complete(app(&["no json here"]), body).await;
        assert_eq!(status, StatusCode::OK, "{text}");
        assert_eq!(v["choices"][0]["text"], r#"{"n": 7}"#, "{text}");
    }
    let (status, v, text) = complete(
        app(&["x"]),
        json!({"prompt": "Data:", "json_schema": schema,
               "response_format": {"type": "json_object"}}),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{text}");
    assert_eq!(v["error"]["param"], "json_schema", "{text}");
    // GBNF, llama.cpp's own grammar language, is refused by name.
    let (status, v, text) = complete(
        app(&["x"]),
        json!({"prompt": "Data:", "grammar": "root ::= \"yes\" | \"no\""}),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{text}");
    assert_eq!(v["error"]["param"], "grammar", "{text}");
    assert!(
        v["error"]["message"].as_str().unwrap().contains("GBNF"),
        "{text}"
    );
}
