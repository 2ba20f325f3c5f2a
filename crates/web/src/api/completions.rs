//! `POST /v1/chat/completions` and `POST /v1/completions`, streamed (SSE) or not, in OpenAI's
//! exact shapes: reasoning in `reasoning_content` (never in `content`), tool calls in
//! `tool_calls`, `usage` with `prompt_tokens_details.cached_tokens`, llama.cpp's `timings` on
//! the last chunk, errors before the stream as HTTP 4xx and after it as `data: {"error":
//! ...}`. Each request's outcome is counted in `/metrics`, a dropped client as `cancelled`.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::State;
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::{json, Value};
use smollm3_gen::{Backend, CancelHandle, Completion, Event, FinishReason, Stats};
use tokio::sync::mpsc;

use super::error::ApiError;
use super::metrics::Metrics;
use super::reply::{Delta, Reply};
use super::request::ChatCompletionRequest;
use super::AppState;
use crate::JobEvent;

/// Which API a request came through: the shapes of its responses differ.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Shape {
    /// `chat.completion`: a message with role, content, reasoning and tool calls.
    Chat,
    /// `text_completion`: the text alone.
    Text,
}

impl Shape {
    fn endpoint(self) -> &'static str {
        match self {
            Shape::Chat => "/v1/chat/completions",
            Shape::Text => "/v1/completions",
        }
    }
}

/// What every chunk and response of one request repeats.
struct Meta {
    shape: Shape,
    id: String,
    created: u64,
    model: String,
}

impl Meta {
    fn new(shape: Shape, model: String) -> Self {
        static NEXT: AtomicU64 = AtomicU64::new(1);
        let created = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let prefix = match shape {
            Shape::Chat => "chatcmpl",
            Shape::Text => "cmpl",
        };
        Meta {
            shape,
            id: format!(
                "{prefix}-{created:x}{:06x}",
                NEXT.fetch_add(1, Ordering::Relaxed)
            ),
            created,
            model,
        }
    }

    /// One streamed chunk; a text completion carries the delta's `content` as `text`.
    fn chunk(&self, delta: Value, finish_reason: Option<&str>) -> Value {
        let (object, mut choice) = match self.shape {
            Shape::Text => {
                let text = delta.get("content").and_then(Value::as_str).unwrap_or("");
                ("text_completion", json!({ "index": 0, "text": text }))
            }
            Shape::Chat => (
                "chat.completion.chunk",
                json!({ "index": 0, "delta": delta }),
            ),
        };
        choice["logprobs"] = Value::Null;
        choice["finish_reason"] = finish_reason.into();
        json!({
            "id": self.id,
            "object": object,
            "created": self.created,
            "model": self.model,
            "system_fingerprint": super::FINGERPRINT,
            "choices": [choice],
        })
    }
}

fn usage(stats: &Stats) -> Value {
    json!({
        "prompt_tokens": stats.prompt_tokens,
        "completion_tokens": stats.generated_tokens,
        "total_tokens": stats.prompt_tokens + stats.generated_tokens,
        "prompt_tokens_details": { "cached_tokens": stats.cached_tokens },
    })
}

/// llama-server's `timings`.
fn timings(stats: &Stats) -> Value {
    json!({
        "cache_n": stats.cached_tokens,
        "prompt_n": stats.prefilled_tokens,
        "prompt_ms": stats.prefill_ms,
        "prompt_per_second": stats.prefill_tokens_per_second,
        "predicted_n": stats.generated_tokens,
        "predicted_ms": stats.decode_ms,
        "predicted_per_second": stats.decode_tokens_per_second,
        "draft_n": stats.draft_tokens,
        "draft_n_accepted": stats.draft_accepted,
    })
}

/// Counts one request's outcome in `/metrics` exactly once: when it ends, or as
/// `cancelled` when its response is dropped before (the client went away).
struct Outcome {
    metrics: Arc<Metrics>,
    endpoint: &'static str,
    counted: bool,
}

impl Outcome {
    /// Moves the duty to count into a new value (for the response body, which outlives the
    /// handler); this one then counts nothing.
    fn hand_over(&mut self) -> Outcome {
        Outcome {
            metrics: self.metrics.clone(),
            endpoint: self.endpoint,
            counted: std::mem::replace(&mut self.counted, true),
        }
    }

    fn finished(&mut self, finish_reason: &str, completion: &Completion) {
        if std::mem::replace(&mut self.counted, true) {
            return;
        }
        let outcome = match completion.finish_reason {
            // Cut short by the server's shutdown.
            FinishReason::Cancelled => "cancelled",
            _ => finish_reason,
        };
        self.metrics
            .generation(self.endpoint, outcome, &completion.stats);
    }

    /// Counts a failure, unless the outcome was counted already (an error after the answer
    /// began is counted where it happened, and comes back through the handler too).
    fn failed(&mut self, error: &ApiError) {
        if std::mem::replace(&mut self.counted, true) {
            return;
        }
        let outcome = Metrics::error_outcome(error.status);
        self.metrics.request(self.endpoint, outcome);
    }
}

impl Drop for Outcome {
    fn drop(&mut self) {
        if !self.counted {
            self.metrics.request(self.endpoint, "cancelled");
        }
    }
}

/// `POST /v1/chat/completions`.
pub async fn chat_completions<B: Backend + Send + 'static>(
    State(app): State<Arc<AppState<B>>>,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    respond(&app, Shape::Chat, body).await
}

/// `POST /v1/completions`: a raw prompt, no chat template.
pub async fn completions<B: Backend + Send + 'static>(
    State(app): State<Arc<AppState<B>>>,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    respond(&app, Shape::Text, body).await
}

async fn respond<B: Backend + Send + 'static>(
    app: &AppState<B>,
    shape: Shape,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let mut outcome = Outcome {
        metrics: app.metrics.clone(),
        endpoint: shape.endpoint(),
        counted: false,
    };
    match answer(app, shape, body, &mut outcome).await {
        Ok(response) => response,
        Err(e) => {
            outcome.failed(&e);
            e.into_response()
        }
    }
}

async fn answer<B: Backend + Send + 'static>(
    app: &AppState<B>,
    shape: Shape,
    body: Result<Bytes, BytesRejection>,
    outcome: &mut Outcome,
) -> Result<Response, ApiError> {
    let body = body.map_err(ApiError::from_rejection)?;
    let parsed = match shape {
        Shape::Chat => ChatCompletionRequest::parse(&body, &app.defaults)?,
        Shape::Text => ChatCompletionRequest::parse_text(&body, &app.defaults)?,
    };
    let model = parsed.model.clone().unwrap_or_else(|| app.model.clone());
    let mut parsed = parsed;
    parsed.request.prompt_lookup &= app.prompt_lookup;
    let scheduler = app.scheduler()?;
    if let Some(tools) = &parsed.tools {
        // Every call the model writes is held to its tool's schema.
        let answer = parsed.request.grammar.take();
        parsed.request.grammar = Some(tools.grammar(answer.as_ref(), scheduler.tokenizer())?);
    }
    let meta = Meta::new(shape, model);
    // Held until the answer is out: a client that goes away while its prompt is read stops
    // the model within a layer, not after the chunk or the whole prompt.
    let cancel = CancelOnDrop::new();
    parsed.request.cancel = Some(cancel.0.clone());
    let mut ticket = scheduler.submit(parsed.request)?;
    // Errors that come before any token (a prompt over the context, a template failure) are
    // answered with their HTTP status, not inside a 200 stream.
    let first = next_event(&mut ticket.events).await?;
    let reply = Reply::new(parsed.tools, &meta.id);
    // From here the stream (or the collected answer) counts the outcome.
    let outcome = outcome.hand_over();
    if parsed.stream {
        let stream = stream(
            meta,
            reply,
            outcome,
            first,
            ticket.events,
            parsed.include_usage,
            cancel,
        );
        Ok(stream.into_response())
    } else {
        collect(meta, reply, outcome, first, ticket.events).await
    }
}

/// Cancels a request's generation when dropped: the handler's future (a client that hung up
/// before the first token) or the stream (one that hung up during the answer).
struct CancelOnDrop(CancelHandle);

impl CancelOnDrop {
    fn new() -> Self {
        CancelOnDrop(CancelHandle::new())
    }
}

impl Drop for CancelOnDrop {
    fn drop(&mut self) {
        self.0.cancel();
    }
}

/// The error that ends an answer cut short by the server's shutdown (its generation was
/// cancelled while the client was still reading): never passed off as a complete answer.
fn cut_short(completion: &Completion) -> ApiError {
    ApiError {
        message: format!(
            "the server is shutting down: the answer was cut short after {} tokens",
            completion.stats.generated_tokens
        ),
        ..ApiError::from(crate::SubmitError::Closed)
    }
}

/// The whole answer as one `chat.completion`.
async fn collect(
    meta: Meta,
    mut reply: Reply,
    mut outcome: Outcome,
    first: Event,
    mut events: mpsc::Receiver<JobEvent>,
) -> Result<Response, ApiError> {
    let (mut reasoning, mut content, mut calls) = (String::new(), String::new(), Vec::new());
    let mut next = Some(first);
    let (finish_reason, completion) = 'read: loop {
        if let Some(event) = next.take() {
            for delta in reply.read(event) {
                match delta {
                    Delta::Reasoning(text) => reasoning.push_str(&text),
                    Delta::Content(text) => content.push_str(&text),
                    Delta::ToolCall(call) => calls.push(call.to_json(false)),
                    Delta::Done {
                        finish_reason,
                        completion,
                    } => break 'read (finish_reason, completion),
                }
            }
        }
        match next_event(&mut events).await {
            Ok(event) => next = Some(event),
            Err(error) => return Err(fail(&mut outcome, error)),
        }
    };
    if completion.finish_reason == FinishReason::Cancelled {
        outcome.finished(finish_reason, &completion);
        return Err(cut_short(&completion));
    }
    outcome.finished(finish_reason, &completion);
    let (object, choice) = match meta.shape {
        Shape::Text => (
            "text_completion",
            json!({ "index": 0, "text": content, "logprobs": null, "finish_reason": finish_reason }),
        ),
        Shape::Chat => {
            let mut message = json!({ "role": "assistant", "content": content });
            if !calls.is_empty() {
                // OpenAI's shape: the calls, and content only when the model also wrote text.
                let text = content.trim();
                message["content"] = if text.is_empty() {
                    Value::Null
                } else {
                    text.into()
                };
                message["tool_calls"] = calls.into();
            }
            if !reasoning.is_empty() {
                message["reasoning_content"] = reasoning.into();
            }
            (
                "chat.completion",
                json!({ "index": 0, "message": message, "logprobs": null, "finish_reason": finish_reason }),
            )
        }
    };
    Ok(Json(json!({
        "id": meta.id,
        "object": object,
        "created": meta.created,
        "model": meta.model,
        "system_fingerprint": super::FINGERPRINT,
        "choices": [choice],
        "usage": usage(&completion.stats),
        "timings": timings(&completion.stats),
    }))
    .into_response())
}

/// The request's next event, or the error that ends it: the generation failed, the
/// scheduler dropped it, or the scheduler is gone (shutdown).
async fn next_event(events: &mut mpsc::Receiver<JobEvent>) -> Result<Event, ApiError> {
    match events.recv().await {
        Some(JobEvent::Event(event)) => Ok(event),
        Some(JobEvent::Failed(e)) => Err(e.into()),
        Some(JobEvent::Dropped(e)) => Err(e.into()),
        None => Err(crate::SubmitError::Closed.into()),
    }
}

/// Counts `error` as this request's outcome and hands it back.
fn fail(outcome: &mut Outcome, error: ApiError) -> ApiError {
    outcome.failed(&error);
    error
}

/// What the SSE stream still has to send.
struct StreamState {
    meta: Meta,
    reply: Reply,
    outcome: Outcome,
    events: mpsc::Receiver<JobEvent>,
    /// An event already received (the first one, read before the stream started).
    pending: Option<Event>,
    /// SSE data lines ready to go out, in order.
    out: VecDeque<String>,
    include_usage: bool,
    done: bool,
    /// Cancels the generation when the stream is dropped (the client went away).
    _cancel: CancelOnDrop,
}

/// The answer as `chat.completion.chunk`s: a first chunk with the role, one per text delta, a
/// finish chunk with `timings`, the usage chunk if asked, then `[DONE]`. Keep-alive comments
/// flow while the prompt is processed.
fn stream(
    meta: Meta,
    reply: Reply,
    outcome: Outcome,
    first: Event,
    events: mpsc::Receiver<JobEvent>,
    include_usage: bool,
    cancel: CancelOnDrop,
) -> Sse<impl futures_util::Stream<Item = Result<SseEvent, Infallible>>> {
    let mut out = VecDeque::new();
    if meta.shape == Shape::Chat {
        out.push_back(
            meta.chunk(json!({ "role": "assistant", "content": null }), None)
                .to_string(),
        );
    }
    let state = StreamState {
        meta,
        reply,
        outcome,
        events,
        pending: Some(first),
        out,
        include_usage,
        done: false,
        _cancel: cancel,
    };
    let stream = futures_util::stream::unfold(state, |mut state| async move {
        loop {
            if let Some(data) = state.out.pop_front() {
                return Some((Ok(SseEvent::default().data(data)), state));
            }
            if state.done {
                return None;
            }
            let event = match state.pending.take() {
                Some(event) => event,
                None => match next_event(&mut state.events).await {
                    Ok(event) => event,
                    Err(error) => {
                        // An error event ends the stream: no finish chunk, no `[DONE]`.
                        let error = fail(&mut state.outcome, error);
                        state.out.push_back(error.body().to_string());
                        state.done = true;
                        continue;
                    }
                },
            };
            state.push(event);
        }
    });
    Sse::new(stream).keep_alive(KeepAlive::default())
}

impl StreamState {
    fn push(&mut self, event: Event) {
        for delta in self.reply.read(event) {
            let delta = match delta {
                Delta::Reasoning(text) => json!({ "reasoning_content": text }),
                Delta::Content(text) => json!({ "content": text }),
                Delta::ToolCall(call) => json!({ "tool_calls": [call.to_json(true)] }),
                Delta::Done {
                    finish_reason,
                    completion,
                } => {
                    self.outcome.finished(finish_reason, &completion);
                    self.done = true;
                    if completion.finish_reason == FinishReason::Cancelled {
                        // No finish chunk, no [DONE]: the client must not take it as whole.
                        self.out
                            .push_back(cut_short(&completion).body().to_string());
                        return;
                    }
                    let mut last = self.meta.chunk(json!({}), Some(finish_reason));
                    last["timings"] = timings(&completion.stats);
                    self.out.push_back(last.to_string());
                    if self.include_usage {
                        let mut usage_chunk = self.meta.chunk(json!({}), None);
                        usage_chunk["choices"] = json!([]);
                        usage_chunk["usage"] = usage(&completion.stats);
                        self.out.push_back(usage_chunk.to_string());
                    }
                    self.out.push_back("[DONE]".to_string());
                    return;
                }
            };
            self.out.push_back(self.meta.chunk(delta, None).to_string());
        }
    }
}
