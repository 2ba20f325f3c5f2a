//! The web chat's handlers: small, each reading the conversation file, changing it, and
//! answering with a page (no JavaScript: forms post and redirect) or, for htmx requests, the
//! fragment to swap in. Answers are generated through the scheduler, like API requests.

use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::Arc;

use axum::extract::{Form, Path, Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{Html, IntoResponse, Redirect, Response};
use smollm3_chat::ChatRequest;
use smollm3_gen::{Backend, CancelHandle, GenerateRequest, SETTINGS};

use smollm3_tools::{CallChoice, CallGrammar, ToolDefinition, ToolFormat};

use super::live::{Agent, Live, Started};
use super::store::{AnswerFormat, Conversation, Store, StoreError, Turn};
use super::view::{self, PageParts};
use crate::api::AppState;
use crate::SubmitError;

type App<B> = State<Arc<AppState<B>>>;

/// A page-level failure: a message in a banner, with a status that says whose fault it is.
pub struct PageError {
    status: StatusCode,
    message: String,
}

impl PageError {
    fn new(status: StatusCode, message: impl Into<String>) -> Self {
        PageError {
            status,
            message: message.into(),
        }
    }
}

impl From<StoreError> for PageError {
    fn from(e: StoreError) -> Self {
        let status = match e {
            StoreError::NotFound(_) => StatusCode::NOT_FOUND,
            _ => StatusCode::INTERNAL_SERVER_ERROR,
        };
        PageError::new(status, e.to_string())
    }
}

impl From<crate::ApiError> for PageError {
    fn from(e: crate::ApiError) -> Self {
        PageError::new(e.status, e.message)
    }
}

impl IntoResponse for PageError {
    fn into_response(self) -> Response {
        let body = format!(
            "<!doctype html><meta charset=utf-8><title>SmolLM3</title>\
             <div id=\"banner\" class=\"banner error\" role=\"alert\">{}</div><p><a href=\"/\">Back to the chat</a></p>",
            super::markdown::escape(&self.message)
        );
        let mut response = (self.status, Html(body)).into_response();
        // htmx swaps only 2xx answers by default: show the message in the banner instead.
        response
            .headers_mut()
            .insert("HX-Retarget", header::HeaderValue::from_static("#banner"));
        response
            .headers_mut()
            .insert("HX-Reswap", header::HeaderValue::from_static("outerHTML"));
        // ...taking only the banner out of this small page.
        response
            .headers_mut()
            .insert("HX-Reselect", header::HeaderValue::from_static("#banner"));
        response
    }
}

type PageResult = Result<Response, PageError>;

fn store<B: Backend + Send + 'static>(app: &AppState<B>) -> Result<&Store, PageError> {
    app.chat.store.as_ref().ok_or_else(|| {
        PageError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "The web chat has no data directory (start the server with --data-dir DIR).",
        )
    })
}

fn is_htmx(headers: &HeaderMap) -> bool {
    headers.contains_key("HX-Request")
}

fn context_size<B: Backend + Send + 'static>(app: &AppState<B>) -> usize {
    app.scheduler()
        .ok()
        .and_then(|s| s.status().slots.first().map(|s| s.context))
        .unwrap_or(0)
}

/// The whole page of `conversation`, or just its messages for htmx.
fn respond<B: Backend + Send + 'static>(
    app: &AppState<B>,
    conversation: &Conversation,
    headers: &HeaderMap,
    banner: Option<(&str, String)>,
) -> PageResult {
    let list = store(app)?.list()?;
    let live = app.chat.running.get(&conversation.id).map(|l| l.state());
    let parts = PageParts {
        list: &list,
        live: live.as_ref(),
        context_size: context_size(app),
        defaults: &app.defaults,
        banner,
        tool_names: app.chat.tools.names().join(", "),
        oob: is_htmx(headers),
    };
    let html = if is_htmx(headers) {
        view::messages(conversation, &parts)
    } else {
        view::page(conversation, &parts)
    };
    Ok(Html(html).into_response())
}

/// An empty conversation to start in: the newest one if it has no messages, else a new one.
fn fresh<B: Backend + Send + 'static>(app: &AppState<B>) -> Result<Conversation, PageError> {
    let store = store(app)?;
    if let Some(newest) = store.list()?.into_iter().next() {
        if newest.turns.is_empty() {
            return Ok(newest);
        }
    }
    let conversation = Conversation::new(app.defaults.clone());
    store.save(&conversation)?;
    Ok(conversation)
}

/// `GET /`: the newest conversation.
pub async fn index<B: Backend + Send + 'static>(State(app): App<B>) -> PageResult {
    let store = store(&app)?;
    let id = match store.list()?.into_iter().next() {
        Some(newest) => newest.id,
        None => fresh(&app)?.id,
    };
    Ok(Redirect::to(&format!("/c/{id}")).into_response())
}

/// `POST /c`: new chat.
pub async fn new_chat<B: Backend + Send + 'static>(State(app): App<B>) -> PageResult {
    let id = fresh(&app)?.id;
    Ok(Redirect::to(&format!("/c/{id}")).into_response())
}

/// `GET /c/{id}`.
pub async fn show<B: Backend + Send + 'static>(
    State(app): App<B>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> PageResult {
    let conversation = store(&app)?.load(&id)?;
    respond(&app, &conversation, &headers, None)
}

#[derive(serde::Deserialize)]
pub struct SearchQuery {
    #[serde(default)]
    q: String,
}

/// `GET /c?q=`: the sidebar's list, filtered.
pub async fn search<B: Backend + Send + 'static>(
    State(app): App<B>,
    Query(query): Query<SearchQuery>,
) -> PageResult {
    let q = query.q.trim();
    let list: Vec<Conversation> = store(&app)?
        .list()?
        .into_iter()
        .filter(|c| q.is_empty() || c.matches(q))
        .collect();
    Ok(Html(view::sidebar_list(&list, q)).into_response())
}

#[derive(serde::Deserialize)]
pub struct MessageForm {
    content: String,
    /// A checkbox: present ("on") when ticked.
    thinking: Option<String>,
}

/// The generation request for the conversation as it stands (its last turn is the user's,
/// or a tool's result): its messages, settings and, when on, the built-in tools.
fn request_for<B: Backend + Send + 'static>(
    app: &AppState<B>,
    conversation: &Conversation,
    thinking: bool,
    cancel: &CancelHandle,
) -> Result<GenerateRequest, PageError> {
    let mut chat = ChatRequest {
        messages: conversation.messages(),
        add_generation_prompt: true,
        enable_thinking: Some(thinking),
        ..Default::default()
    };
    let mut grammar = conversation.format.grammar();
    if conversation.tools && !app.chat.tools.is_empty() {
        let definitions = app.chat.tools.definitions();
        let listed: Vec<serde_json::Value> =
            definitions.iter().map(ToolDefinition::to_bare).collect();
        chat.xml_tools = Some(minijinja::Value::from_serialize(&listed));
        // Calls held to their tools' schemas; the answer format holds a text answer.
        let tokenizer = app.scheduler()?.tokenizer().clone();
        let spec = CallGrammar {
            format: ToolFormat::Xml,
            tools: &definitions,
            choice: CallChoice::Auto,
            // One call a round, as in the CLI's loop (`smollm3_tools::agent`).
            parallel: false,
            answer: grammar.as_ref(),
        };
        let calls = spec
            .build(&tokenizer)
            .map_err(|e| PageError::new(StatusCode::BAD_REQUEST, e.to_string()))?;
        grammar = Some(calls);
    }
    Ok(GenerateRequest {
        sampling: conversation.sampling.clone(),
        cancel: Some(cancel.clone()),
        prompt_lookup: app.prompt_lookup,
        grammar,
        ..GenerateRequest::chat(chat)
    })
}

fn busy(e: SubmitError) -> PageError {
    match &e {
        SubmitError::QueueFull { limit } => PageError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            format!("The server is busy ({limit} requests are waiting): try again in a moment."),
        ),
        SubmitError::Closed => PageError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "The server is shutting down.",
        ),
        // Only ever sent on a ticket's channel, never by `submit`.
        SubmitError::QueueTimeout { .. } | SubmitError::Stalled { .. } => {
            PageError::new(StatusCode::SERVICE_UNAVAILABLE, e.to_string())
        }
    }
}

/// Starts the answer to the conversation as it stands (its last turn is the user's).
fn start<B: Backend + Send + 'static>(
    app: &Arc<AppState<B>>,
    conversation: &Conversation,
    thinking: bool,
) -> Result<Arc<Live>, PageError> {
    let cancel = CancelHandle::default();
    let request = request_for(app, conversation, thinking, &cancel)?;
    let ticket = app.scheduler()?.submit(request).map_err(busy)?;
    let agent = (conversation.tools && !app.chat.tools.is_empty()).then(|| {
        let (app, cancel) = (Arc::clone(app), cancel.clone());
        Agent {
            registry: Arc::clone(&app.chat.tools),
            resubmit: Box::new(move |c: &Conversation| {
                let request = request_for(&app, c, thinking, &cancel).map_err(|e| e.message)?;
                let scheduler = app.scheduler().map_err(|e| e.message)?;
                scheduler.submit(request).map_err(|e| busy(e).message)
            }),
        }
    });
    Ok(app.chat.running.start(Started {
        store: store(app)?.clone(),
        conversation: conversation.id.clone(),
        ticket,
        cancel,
        thinking,
        context_size: context_size(app),
        agent,
    }))
}

/// After a change that starts an answer: the messages for htmx (the answer then streams),
/// or, without JavaScript, the page once the answer is written.
async fn answer_then_respond<B: Backend + Send + 'static>(
    app: &AppState<B>,
    id: &str,
    live: Arc<Live>,
    headers: &HeaderMap,
) -> PageResult {
    if !is_htmx(headers) {
        let (mut changed, _watcher) = live.subscribe();
        while !live.is_done() {
            if changed.changed().await.is_err() {
                break;
            }
        }
        let banner = live.state().error.map(|e| ("error", e));
        let conversation = store(app)?.load(id)?;
        if banner.is_some() {
            return respond(app, &conversation, headers, banner);
        }
        return Ok(Redirect::to(&format!("/c/{id}")).into_response());
    }
    let conversation = store(app)?.load(id)?;
    respond(app, &conversation, headers, None)
}

/// The conversation `id`, refused while an answer is being written in it.
fn idle_conversation<B: Backend + Send + 'static>(
    app: &AppState<B>,
    id: &str,
) -> Result<Conversation, PageError> {
    let conversation = store(app)?.load(id)?;
    match app.chat.running.get(id) {
        Some(_) => Err(PageError::new(
            StatusCode::CONFLICT,
            "An answer is still being written in this chat: stop it first.",
        )),
        None => Ok(conversation),
    }
}

/// Starts the answer to the changed conversation, saves it (only once the scheduler took the
/// request: a refused message is not kept), and responds.
async fn answer<B: Backend + Send + 'static>(
    app: &Arc<AppState<B>>,
    conversation: &mut Conversation,
    thinking: bool,
    headers: &HeaderMap,
) -> PageResult {
    let live = start(app, conversation, thinking)?;
    store(app)?.touch_and_save(conversation)?;
    answer_then_respond(app, &conversation.id, live, headers).await
}

/// `POST /c/{id}/send`.
pub async fn send<B: Backend + Send + 'static>(
    State(app): App<B>,
    Path(id): Path<String>,
    headers: HeaderMap,
    Form(form): Form<MessageForm>,
) -> PageResult {
    let mut conversation = idle_conversation(&app, &id)?;
    if form.content.trim().is_empty() {
        return Err(PageError::new(
            StatusCode::BAD_REQUEST,
            "The message is empty.",
        ));
    }
    let thinking = form.thinking.is_some();
    conversation.turns.push(Turn::user(form.content, thinking));
    conversation.title_from_first_message();
    answer(&app, &mut conversation, thinking, &headers).await
}

/// `POST /c/{id}/regenerate`: the last answer again.
pub async fn regenerate<B: Backend + Send + 'static>(
    State(app): App<B>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> PageResult {
    let mut conversation = idle_conversation(&app, &id)?;
    while conversation.turns.last().is_some_and(|t| !t.is_user()) {
        conversation.turns.pop();
    }
    let Some(last) = conversation.turns.last() else {
        return Err(PageError::new(
            StatusCode::BAD_REQUEST,
            "Nothing to answer yet.",
        ));
    };
    let thinking = last.thinking;
    answer(&app, &mut conversation, thinking, &headers).await
}

/// `POST /c/{id}/edit/{index}`: a user message changed; the conversation goes on from it.
pub async fn edit<B: Backend + Send + 'static>(
    State(app): App<B>,
    Path((id, index)): Path<(String, usize)>,
    headers: HeaderMap,
    Form(form): Form<MessageForm>,
) -> PageResult {
    let mut conversation = idle_conversation(&app, &id)?;
    if !conversation.turns.get(index).is_some_and(Turn::is_user) {
        return Err(PageError::new(
            StatusCode::BAD_REQUEST,
            format!("Message {index} is not one of yours."),
        ));
    }
    if form.content.trim().is_empty() {
        return Err(PageError::new(
            StatusCode::BAD_REQUEST,
            "The message is empty.",
        ));
    }
    let thinking = form.thinking.is_some();
    conversation.turns.truncate(index);
    conversation.turns.push(Turn::user(form.content, thinking));
    answer(&app, &mut conversation, thinking, &headers).await
}

/// `POST /c/{id}/stop`: the answer stops before its next token; what was written stays.
pub async fn stop<B: Backend + Send + 'static>(
    State(app): App<B>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Response {
    if let Some(live) = app.chat.running.get(&id) {
        live.stop();
    }
    if is_htmx(&headers) {
        StatusCode::NO_CONTENT.into_response()
    } else {
        Redirect::to(&format!("/c/{id}")).into_response()
    }
}

/// `GET /c/{id}/stream`: the answer being written, as SSE events of HTML (`update`), then
/// `done`. A reconnecting page joins the same generation.
pub async fn stream<B: Backend + Send + 'static>(
    State(app): App<B>,
    Path(id): Path<String>,
) -> Response {
    let Some(live) = app.chat.running.get(&id) else {
        // Nothing running (it finished while the page loaded): the page reloads the saved
        // answer.
        let done = futures_util::stream::iter([Ok::<_, Infallible>(
            SseEvent::default().event("done").data("finished"),
        )]);
        return Sse::new(done).into_response();
    };
    let (changed, watcher) = live.subscribe();
    let events = futures_util::stream::unfold(
        (live, changed, watcher, Phase::First),
        |(live, mut changed, watcher, phase)| async move {
            match phase {
                Phase::Closed => return None,
                Phase::Final => {
                    let done = SseEvent::default().event("done").data("finished");
                    return Some((
                        Ok::<_, Infallible>(done),
                        (live, changed, watcher, Phase::Closed),
                    ));
                }
                // The sender lives in `live`, which this stream holds: it cannot go away.
                Phase::Next => {
                    let _ = changed.changed().await;
                }
                Phase::First => {}
            }
            let state = live.state();
            let finished = state.done.is_some() || state.error.is_some();
            let event = SseEvent::default()
                .event("update")
                .data(view::live_html(&state));
            let next = if finished { Phase::Final } else { Phase::Next };
            Some((Ok(event), (live, changed, watcher, next)))
        },
    );
    Sse::new(events)
        .keep_alive(KeepAlive::default())
        .into_response()
}

/// Where a page stream is: the current state first, then one update per change, the final
/// state, then `done` (which closes the page's connection).
enum Phase {
    First,
    Next,
    Final,
    Closed,
}

#[derive(serde::Deserialize)]
pub struct RenameForm {
    title: String,
}

/// `POST /c/{id}/rename`.
pub async fn rename<B: Backend + Send + 'static>(
    State(app): App<B>,
    Path(id): Path<String>,
    Form(form): Form<RenameForm>,
) -> PageResult {
    let store = store(&app)?;
    let mut conversation = store.load(&id)?;
    let title: String = form.title.trim().chars().take(120).collect();
    if title.is_empty() {
        return Err(PageError::new(
            StatusCode::BAD_REQUEST,
            "The title is empty.",
        ));
    }
    conversation.title = title;
    store.save(&conversation)?;
    Ok(Redirect::to(&format!("/c/{id}")).into_response())
}

/// `POST /c/{id}/delete`.
pub async fn delete<B: Backend + Send + 'static>(
    State(app): App<B>,
    Path(id): Path<String>,
) -> PageResult {
    if let Some(live) = app.chat.running.get(&id) {
        live.stop();
    }
    store(&app)?.delete(&id)?;
    Ok(Redirect::to("/").into_response())
}

/// `POST /c/{id}/settings`: the system prompt, thinking and the sampling settings of the
/// panel (an empty field takes the server's default), checked by the same table as the CLI.
pub async fn settings<B: Backend + Send + 'static>(
    State(app): App<B>,
    Path(id): Path<String>,
    headers: HeaderMap,
    Form(form): Form<HashMap<String, String>>,
) -> PageResult {
    let store = store(&app)?;
    let mut conversation = store.load(&id)?;
    conversation.tools = form.contains_key("tools");
    let mut sampling = conversation.sampling.clone();
    for setting in SETTINGS.iter() {
        let Some(value) = form.get(setting.name).map(|v| v.trim()) else {
            continue; // not in the panel: kept as it was
        };
        // Left empty: the server's default.
        let value = if value.is_empty() {
            setting.show(&app.defaults)
        } else {
            value.to_string()
        };
        setting.set(&mut sampling, &value).map_err(|e| {
            PageError::new(StatusCode::BAD_REQUEST, format!("{}: {e}", setting.name))
        })?;
    }
    sampling
        .validate()
        .map_err(|e| PageError::new(StatusCode::BAD_REQUEST, e.to_string()))?;
    conversation.sampling = sampling;
    conversation.system = form.get("system").cloned().unwrap_or_default();
    conversation.thinking = form.contains_key("thinking");
    conversation.format = answer_format(&form)?;
    store.save(&conversation)?;
    if is_htmx(&headers) {
        return respond(&app, &conversation, &headers, None);
    }
    Ok(Redirect::to(&format!("/c/{id}")).into_response())
}

/// The panel's answer format: `format` (`text`, `json_object`, `json_schema`) and, for a
/// schema, `schema`, which must be a JSON object.
fn answer_format(form: &HashMap<String, String>) -> Result<AnswerFormat, PageError> {
    let bad = |message: String| PageError::new(StatusCode::BAD_REQUEST, message);
    match form.get("format").map(String::as_str) {
        None | Some("text") => Ok(AnswerFormat::Text),
        Some("json_object") => Ok(AnswerFormat::JsonObject),
        Some("json_schema") => {
            let schema = form.get("schema").map_or("", |s| s.trim());
            match serde_json::from_str::<serde_json::Value>(schema) {
                Ok(serde_json::Value::Object(_)) => Ok(AnswerFormat::JsonSchema {
                    schema: schema.to_string(),
                }),
                Ok(_) => Err(bad("JSON schema: a schema is a JSON object".into())),
                Err(e) => Err(bad(format!("JSON schema: not JSON ({e})"))),
            }
        }
        Some(other) => Err(bad(format!(
            "answer format: {other:?} is not one of text, json_object, json_schema"
        ))),
    }
}

/// `GET /login`: with `--api-key`, a browser gives the key once; it is kept in a cookie.
pub async fn login_page() -> Html<String> {
    Html(view::render(
        "login.html",
        minijinja::context! { version => view::asset_version(), failed => false },
    ))
}

#[derive(serde::Deserialize)]
pub struct LoginForm {
    key: String,
}

/// `POST /login`: a right key sets the cookie (HttpOnly, same-site only) and opens the chat.
pub async fn login<B: Backend + Send + 'static>(
    State(app): App<B>,
    Form(form): Form<LoginForm>,
) -> Response {
    let right = app
        .api_key
        .as_deref()
        .is_none_or(|k| crate::api::same_bytes(k.as_bytes(), form.key.as_bytes()));
    if !right || form.key.contains(|c: char| c == ';' || c.is_control()) {
        let html = view::render(
            "login.html",
            minijinja::context! { version => view::asset_version(), failed => true },
        );
        return (StatusCode::UNAUTHORIZED, Html(html)).into_response();
    }
    let cookie = format!(
        "{}={}; Path=/; HttpOnly; SameSite=Strict; Max-Age=31536000",
        super::KEY_COOKIE,
        form.key
    );
    let mut response = Redirect::to("/").into_response();
    if let Ok(value) = header::HeaderValue::from_str(&cookie) {
        response.headers_mut().insert(header::SET_COOKIE, value);
    }
    response
}
