//! The web chat's HTML endpoints through `router(state).oneshot(request)` on a scripted model:
//! escaping of hostile output, the reasoning split, streaming over SSE, stop, regenerate,
//! edit, settings, and conversations that survive a new router on the same data directory.

mod common;

use std::path::Path;
use std::sync::Arc;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use http_body_util::BodyExt;
use smollm3_web::chat::{ChatState, Store};
use smollm3_web::{router, AppState};
use tower::ServiceExt;

fn chat_app(dir: &Path, replies: &[&str]) -> axum::Router {
    let mut state: AppState<_> = common::state(replies);
    state.chat = ChatState::new(Store::open(dir).unwrap());
    router(Arc::new(state))
}

struct Reply {
    status: StatusCode,
    location: Option<String>,
    body: String,
}

async fn call(app: &axum::Router, method: &str, path: &str, form: &str, htmx: bool) -> Reply {
    let mut request = Request::builder()
        .method(method)
        .uri(path)
        .header("content-type", "application/x-www-form-urlencoded");
    if htmx {
        request = request.header("HX-Request", "true");
    }
    let response = app
        .clone()
        .oneshot(request.body(Body::from(form.to_string())).unwrap())
        .await
        .unwrap();
    let status = response.status();
    let location = response
        .headers()
        .get("location")
        .map(|l| l.to_str().unwrap().to_string());
    let bytes = response.into_body().collect().await.unwrap().to_bytes();
    Reply {
        status,
        location,
        body: String::from_utf8_lossy(&bytes).into_owned(),
    }
}

/// `GET /` makes (or finds) a conversation; its id.
async fn open(app: &axum::Router) -> String {
    let r = call(app, "GET", "/", "", false).await;
    assert_eq!(r.status, StatusCode::SEE_OTHER, "{}", r.body);
    let location = r.location.unwrap();
    location.strip_prefix("/c/").unwrap().to_string()
}

fn form(pairs: &[(&str, &str)]) -> String {
    pairs
        .iter()
        .map(|(k, v)| {
            let v: String = v
                .bytes()
                .map(|b| match b {
                    b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' => (b as char).to_string(),
                    _ => format!("%{b:02X}"),
                })
                .collect();
            format!("{k}={v}")
        })
        .collect::<Vec<_>>()
        .join("&")
}

const HOSTILE: &str = "<think>\nDo not run <script>alert(1)</script>.\n</think>\nSee <img src=x onerror=alert(2)> and <script>alert(3)</script>\n\n```html\n<p>a</p></think><script>alert(4)</script>\n```";

#[tokio::test]
async fn a_message_without_javascript_gets_a_safe_rendered_answer_with_its_reasoning() {
    let dir = tempfile::tempdir().unwrap();
    let app = chat_app(dir.path(), &[HOSTILE]);
    let id = open(&app).await;
    let r = call(
        &app,
        "POST",
        &format!("/c/{id}/send"),
        &form(&[("content", "Show me <b>html</b>"), ("thinking", "on")]),
        false,
    )
    .await;
    // Without JavaScript the answer is written first, then the page reloads.
    assert_eq!(r.status, StatusCode::SEE_OTHER, "{}", r.body);
    let page = call(&app, "GET", &format!("/c/{id}"), "", false).await.body;
    let lower = page.to_lowercase();
    for active in ["<script>alert", "<img", "<b>html"] {
        assert!(
            !lower.contains(active),
            "{active} is live in the page:\n{page}"
        );
    }
    // No tag of the page carries an event handler (`onerror=` may only appear as text).
    let handler = regex::Regex::new(r"<[a-zA-Z][^<>]*\son[a-z]+\s*=").unwrap();
    assert!(!handler.is_match(&page), "{:?}", handler.find(&page));
    assert!(
        page.contains("&lt;script&gt;alert(3)&lt;/script&gt;"),
        "{page}"
    );
    // The user's own text is escaped too.
    assert!(page.contains("Show me &lt;b&gt;html&lt;"), "{page}");
    // Reasoning in its own collapsed block, not in the answer.
    let reasoning = page
        .find("<details class=\"reasoning\">")
        .expect("a reasoning block");
    let answer = page.find("<div class=\"content md\">").unwrap();
    assert!(reasoning < answer);
    assert!(page[reasoning..answer].contains("Do not run"), "{page}");
    assert!(!page[answer..].contains("Do not run"));
    assert!(page.contains("Thought for "), "{page}");
    // `</think>` inside a code block stays code: the block's text (highlighting spans
    // removed) holds it, escaped.
    let start = page
        .find("<code class=\"language-html\">")
        .expect("a code block");
    let end = start + page[start..].find("</code>").unwrap();
    let tags = regex::Regex::new("<[^>]*>").unwrap();
    let code_text = tags.replace_all(&page[start..end], "");
    assert!(
        code_text.contains("&lt;/think&gt;&lt;script&gt;alert(4)"),
        "{code_text}"
    );
    // Statistics under the answer.
    assert!(page.contains("tok/s"), "{page}");
    assert!(
        page.contains("<title>Show me &lt;b&gt;html"),
        "the first message titles the chat"
    );
}

/// The `update` events' data (joined lines) of an SSE body, and whether `done` came.
fn updates(body: &str) -> (Vec<String>, bool) {
    let mut out = Vec::new();
    let mut done = false;
    for event in body.split("\n\n") {
        let mut name = "";
        let mut data = Vec::new();
        for line in event.lines() {
            if let Some(n) = line.strip_prefix("event: ") {
                name = n;
            } else if let Some(d) = line.strip_prefix("data: ") {
                data.push(d);
            } else if line == "data:" {
                data.push("");
            }
        }
        match name {
            "update" => out.push(data.join("\n")),
            "done" => done = true,
            _ => {}
        }
    }
    (out, done)
}

#[tokio::test]
async fn with_htmx_the_answer_streams_as_html_updates_then_done() {
    let dir = tempfile::tempdir().unwrap();
    let app = chat_app(
        dir.path(),
        &["<think>\nHm.\n</think>\nOne **two** three four five"],
    );
    let id = open(&app).await;
    let r = call(
        &app,
        "POST",
        &format!("/c/{id}/send"),
        &form(&[("content", "Count"), ("thinking", "on")]),
        true,
    )
    .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert!(
        r.body.starts_with("<section id=\"messages\">"),
        "{}",
        r.body
    );
    assert!(
        r.body.contains(&format!("sse-connect=\"/c/{id}/stream\"")),
        "{}",
        r.body
    );
    assert!(
        r.body.contains("<div class=\"content\">Count</div>"),
        "{}",
        r.body
    );
    // The title and the sidebar are swapped out of band.
    assert!(
        r.body
            .contains("<h1 id=\"chat-title\" hx-swap-oob=\"true\">Count</h1>"),
        "{}",
        r.body
    );

    let stream = call(&app, "GET", &format!("/c/{id}/stream"), "", true).await;
    let (updates, done) = updates(&stream.body);
    assert!(done, "{}", stream.body);
    let last = updates.last().unwrap();
    assert!(last.contains("<strong>two</strong>"), "{last}");
    assert!(
        !last.contains("streaming"),
        "the last update is the finished answer: {last}"
    );
    assert!(last.contains("tok/s"), "{last}");
    // After the stream, the page holds the saved answer and no live part.
    let page = call(&app, "GET", &format!("/c/{id}"), "", false).await.body;
    assert!(page.contains("<strong>two</strong>"), "{page}");
    assert!(!page.contains("sse-connect"), "{page}");
}

#[tokio::test]
async fn stop_keeps_what_was_written_and_marks_the_answer_stopped() {
    let dir = tempfile::tempdir().unwrap();
    let long = "word ".repeat(3000);
    let app = chat_app(dir.path(), &[long.as_str()]);
    let id = open(&app).await;
    let r = call(
        &app,
        "POST",
        &format!("/c/{id}/send"),
        &form(&[("content", "Go")]),
        true,
    )
    .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    let stop = call(&app, "POST", &format!("/c/{id}/stop"), "", true).await;
    assert_eq!(stop.status, StatusCode::NO_CONTENT);
    let stream = call(&app, "GET", &format!("/c/{id}/stream"), "", true).await;
    assert!(updates(&stream.body).1, "the stream ends after a stop");
    let store = Store::open(dir.path()).unwrap();
    let conversation = store.load(&id).unwrap();
    let answer = conversation.turns.last().unwrap();
    assert_eq!(answer.stats.as_ref().unwrap().finish_reason, "cancelled");
    assert!(answer.stats.as_ref().unwrap().generated_tokens < 3000);
    let page = call(&app, "GET", &format!("/c/{id}"), "", false).await.body;
    assert!(page.contains("stopped"), "{page}");
}

#[tokio::test]
async fn regenerate_replaces_the_last_answer_and_edit_continues_from_the_edited_message() {
    let dir = tempfile::tempdir().unwrap();
    let app = chat_app(
        dir.path(),
        &[
            "First answer.",
            "Second answer.",
            "Third answer.",
            "After the edit.",
        ],
    );
    let id = open(&app).await;
    let send = |text: &'static str| {
        let app = app.clone();
        let id = id.clone();
        async move {
            call(
                &app,
                "POST",
                &format!("/c/{id}/send"),
                &form(&[("content", text)]),
                false,
            )
            .await
        }
    };
    send("One").await;
    let r = call(&app, "POST", &format!("/c/{id}/regenerate"), "", false).await;
    assert_eq!(r.status, StatusCode::SEE_OTHER, "{}", r.body);
    let store = Store::open(dir.path()).unwrap();
    let turns = store.load(&id).unwrap().turns;
    assert_eq!(turns.len(), 2);
    assert_eq!(turns[1].content, "Second answer.");
    send("Two").await;
    assert_eq!(store.load(&id).unwrap().turns.len(), 4);
    let r = call(
        &app,
        "POST",
        &format!("/c/{id}/edit/0"),
        &form(&[("content", "One, edited")]),
        false,
    )
    .await;
    assert_eq!(r.status, StatusCode::SEE_OTHER, "{}", r.body);
    let turns = store.load(&id).unwrap().turns;
    let texts: Vec<&str> = turns.iter().map(|t| t.content.as_str()).collect();
    assert_eq!(texts, ["One, edited", "After the edit."]);
    // Editing an answer (not a user message) is refused.
    let r = call(
        &app,
        "POST",
        &format!("/c/{id}/edit/1"),
        &form(&[("content", "x")]),
        false,
    )
    .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn conversations_survive_a_new_router_and_can_be_renamed_searched_and_deleted() {
    let dir = tempfile::tempdir().unwrap();
    let id = {
        let app = chat_app(dir.path(), &["Paris."]);
        let id = open(&app).await;
        call(
            &app,
            "POST",
            &format!("/c/{id}/send"),
            &form(&[("content", "Capital of France?")]),
            false,
        )
        .await;
        id
    };
    // A new server on the same directory.
    let app = chat_app(dir.path(), &["x"]);
    let page = call(&app, "GET", &format!("/c/{id}"), "", false).await.body;
    assert!(
        page.contains("Capital of France?") && page.contains("Paris."),
        "{page}"
    );
    assert_eq!(open(&app).await, id, "/ opens the newest conversation");
    let r = call(
        &app,
        "POST",
        &format!("/c/{id}/rename"),
        &form(&[("title", "Geography <1>")]),
        false,
    )
    .await;
    assert_eq!(r.status, StatusCode::SEE_OTHER);
    let found = call(&app, "GET", "/c?q=france", "", true).await.body;
    assert!(found.contains("Geography &lt;1&gt;"), "{found}");
    let none = call(&app, "GET", "/c?q=zebra", "", true).await.body;
    assert!(none.contains("No chats"), "{none}");
    let r = call(&app, "POST", &format!("/c/{id}/delete"), "", false).await;
    assert_eq!(r.status, StatusCode::SEE_OTHER);
    assert_eq!(
        call(&app, "GET", &format!("/c/{id}"), "", false)
            .await
            .status,
        StatusCode::NOT_FOUND
    );
    // Ids that are not ours are not paths.
    assert_eq!(
        call(&app, "GET", "/c/..%2F..%2Fetc%2Fpasswd", "", false)
            .await
            .status,
        StatusCode::NOT_FOUND
    );
}

#[tokio::test]
async fn settings_come_from_the_sampling_table_and_bad_values_are_named() {
    let dir = tempfile::tempdir().unwrap();
    let app = chat_app(dir.path(), &["x"]);
    let id = open(&app).await;
    let page = call(&app, "GET", &format!("/c/{id}"), "", false).await.body;
    for name in ["temperature", "top_p", "top_k", "max_tokens", "seed"] {
        assert!(page.contains(&format!("name=\"{name}\"")), "{name}: {page}");
    }
    let r = call(
        &app,
        "POST",
        &format!("/c/{id}/settings"),
        &form(&[("temperature", "hot")]),
        false,
    )
    .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert!(
        r.body.contains("temperature: expected a number"),
        "{}",
        r.body
    );
    let r = call(
        &app,
        "POST",
        &format!("/c/{id}/settings"),
        &form(&[
            ("system", "Be brief."),
            ("temperature", "0.2"),
            ("max_tokens", "64"),
            ("seed", ""),
        ]),
        false,
    )
    .await;
    assert_eq!(r.status, StatusCode::SEE_OTHER, "{}", r.body);
    let saved = Store::open(dir.path()).unwrap().load(&id).unwrap();
    assert_eq!(saved.system, "Be brief.");
    assert_eq!(saved.sampling.temperature, 0.2);
    assert_eq!(saved.sampling.max_tokens, Some(64));
    assert!(!saved.thinking, "the unticked box turns thinking off");
}

#[tokio::test]
async fn with_tools_on_the_server_runs_the_calls_and_the_model_answers_with_the_results() {
    let dir = tempfile::tempdir().unwrap();
    let call = "<tool_call>\n{\"name\": \"calculator\", \"arguments\": {\"expression\": \"6*7\"}}\n</tool_call>";
    let app = chat_app(dir.path(), &[call, "It is 42."]);
    let id = open(&app).await;
    let page = call_page(&app, &id).await;
    assert!(
        page.contains("Tools: calculator, get_current_time"),
        "{page}"
    );
    let r = call_form(&app, &format!("/c/{id}/settings"), &[("tools", "on")]).await;
    assert_eq!(r.status, StatusCode::SEE_OTHER, "{}", r.body);
    let r = call_form(
        &app,
        &format!("/c/{id}/send"),
        &[("content", "What is 6 times 7?")],
    )
    .await;
    assert_eq!(r.status, StatusCode::SEE_OTHER, "{}", r.body);
    let turns = Store::open(dir.path()).unwrap().load(&id).unwrap().turns;
    let roles: Vec<&str> = turns.iter().map(|t| t.role.as_str()).collect();
    assert_eq!(roles, ["user", "assistant", "tool", "assistant"]);
    assert!(turns[1].content.contains("\"expression\": \"6*7\""));
    assert_eq!(
        turns[2].content, r#"{"expression":"6*7","result":42}"#,
        "the calculator ran on the server"
    );
    assert_eq!(turns[3].content, "It is 42.");
    let page = call_page(&app, &id).await;
    assert!(
        page.contains("<summary>Result of calculator</summary>"),
        "{page}"
    );
    assert!(page.contains("<summary>Tool call</summary>"), "{page}");
    assert!(page.contains("It is 42."), "{page}");
}

async fn call_page(app: &axum::Router, id: &str) -> String {
    call(app, "GET", &format!("/c/{id}"), "", false).await.body
}

async fn call_form(app: &axum::Router, path: &str, pairs: &[(&str, &str)]) -> Reply {
    call(app, "POST", path, &form(pairs), false).await
}

#[tokio::test]
async fn a_full_queue_and_a_full_context_are_clear_banners() {
    // No room in the queue: the page says the server is busy (htmx swaps it into the banner).
    let dir = tempfile::tempdir().unwrap();
    let options = smollm3_web::SchedulerOptions {
        queue_limit: 0,
        ..Default::default()
    };
    let mut state = AppState::new("t", smollm3_gen::SamplingParams::greedy())
        .with_scheduler(common::scheduler(1, &["x"], options));
    state.chat = ChatState::new(Store::open(dir.path()).unwrap());
    let busy = router(Arc::new(state));
    let id = open(&busy).await;
    let request = Request::builder()
        .method("POST")
        .uri(format!("/c/{id}/send"))
        .header("content-type", "application/x-www-form-urlencoded")
        .header("HX-Request", "true")
        .body(Body::from(form(&[("content", "Hi")])))
        .unwrap();
    let response = busy.oneshot(request).await.unwrap();
    assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(response.headers()["HX-Retarget"], "#banner");
    let body = response.into_body().collect().await.unwrap().to_bytes();
    let body = String::from_utf8_lossy(&body);
    assert!(body.contains("The server is busy"), "{body}");
    // The refused message was not saved.
    assert!(Store::open(dir.path())
        .unwrap()
        .load(&id)
        .unwrap()
        .turns
        .is_empty());

    // A prompt over the context: the page says so with the numbers; nothing is cut silently.
    let dir = tempfile::tempdir().unwrap();
    let app = chat_app(dir.path(), &["x"]);
    let id = open(&app).await;
    let long = "word ".repeat(5000);
    let r = call_form(
        &app,
        &format!("/c/{id}/send"),
        &[("content", long.as_str())],
    )
    .await;
    assert_eq!(r.status, StatusCode::OK, "the page with its banner");
    assert!(
        r.body.contains("too long for the context") && r.body.contains("the context holds 4096"),
        "{}",
        r.body
    );
}

#[tokio::test]
async fn the_answer_format_switch_holds_the_answers_to_a_schema() {
    let dir = tempfile::tempdir().unwrap();
    let app = chat_app(dir.path(), &["Sure! Here you go.", "Sure! Here you go."]);
    let id = open(&app).await;
    let page = call_page(&app, &id).await;
    assert!(
        page.contains("name=\"format\"") && page.contains("name=\"schema\""),
        "{page}"
    );
    // A schema that is not JSON is named, and nothing is saved.
    let r = call_form(
        &app,
        &format!("/c/{id}/settings"),
        &[("format", "json_schema"), ("schema", "{\"type\": ")],
    )
    .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert!(r.body.contains("JSON schema: not JSON"), "{}", r.body);
    let schema = r#"{"type": "object", "properties": {"ok": {"enum": [true]}},
                     "required": ["ok"], "additionalProperties": false}"#;
    let r = call_form(
        &app,
        &format!("/c/{id}/settings"),
        &[("format", "json_schema"), ("schema", schema)],
    )
    .await;
    assert_eq!(r.status, StatusCode::SEE_OTHER, "{}", r.body);
    let page = call_page(&app, &id).await;
    assert!(
        page.contains("value=\"json_schema\" selected"),
        "the switch shows it"
    );
    let r = call_form(&app, &format!("/c/{id}/send"), &[("content", "Hi")]).await;
    assert_eq!(r.status, StatusCode::SEE_OTHER, "{}", r.body);
    let turns = Store::open(dir.path()).unwrap().load(&id).unwrap().turns;
    assert_eq!(turns[1].content, r#"{"ok": true}"#, "held to the schema");
    // Back to text: the model's own words.
    let r = call_form(&app, &format!("/c/{id}/settings"), &[("format", "text")]).await;
    assert_eq!(r.status, StatusCode::SEE_OTHER, "{}", r.body);
    call_form(&app, &format!("/c/{id}/send"), &[("content", "Again")]).await;
    let turns = Store::open(dir.path()).unwrap().load(&id).unwrap().turns;
    assert_eq!(turns[3].content, "Sure! Here you go.");
}
