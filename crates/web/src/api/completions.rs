//! `POST /v1/chat/completions`, streamed (SSE) or not, in OpenAI's exact shapes: reasoning in
//! `reasoning_content` (never in `content`), `usage` with `prompt_tokens_details
//! .cached_tokens`, llama.cpp's `timings` on the last chunk, errors before the stream as HTTP
//! 4xx and after it as `data: {"error": ...}`.

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
use smollm3_gen::{Backend, Completion, Event, FinishReason, Stats};
use tokio::sync::mpsc;

use super::error::ApiError;
use super::request::ChatCompletionRequest;
use super::AppState;
use crate::JobEvent;

/// What every chunk and response of one request repeats.
struct Meta {
    id: String,
    created: u64,
    model: String,
}

impl Meta {
    fn new(model: String) -> Self {
        static NEXT: AtomicU64 = AtomicU64::new(1);
        let created = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        Meta {
            id: format!(
                "chatcmpl-{created:x}{:06x}",
                NEXT.fetch_add(1, Ordering::Relaxed)
            ),
            created,
            model,
        }
    }

    fn chunk(&self, delta: Value, finish_reason: Option<&str>) -> Value {
        json!({
            "id": self.id,
            "object": "chat.completion.chunk",
            "created": self.created,
            "model": self.model,
            "system_fingerprint": super::FINGERPRINT,
            "choices": [{
                "index": 0,
                "delta": delta,
                "logprobs": null,
                "finish_reason": finish_reason,
            }],
        })
    }
}

fn finish_reason(reason: FinishReason) -> &'static str {
    match reason {
        FinishReason::Length => "length",
        FinishReason::ToolCalls => "tool_calls",
        // A cancelled generation only ends a stream nobody reads, or one cut by shutdown.
        FinishReason::Stop | FinishReason::Cancelled => "stop",
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
    })
}

/// The handler.
pub async fn chat_completions<B: Backend + Send + 'static>(
    State(app): State<Arc<AppState<B>>>,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    match answer(&app, body).await {
        Ok(response) => response,
        Err(e) => e.into_response(),
    }
}

async fn answer<B: Backend + Send + 'static>(
    app: &AppState<B>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let body = body.map_err(ApiError::from_rejection)?;
    let parsed = ChatCompletionRequest::parse(&body, &app.defaults)?;
    let meta = Meta::new(parsed.model.clone().unwrap_or_else(|| app.model.clone()));
    let mut ticket = app.scheduler()?.submit(parsed.request)?;
    // Errors that come before any token (a prompt over the context, a template failure) are
    // answered with their HTTP status, not inside a 200 stream.
    let first = match ticket.events.recv().await {
        Some(JobEvent::Failed(e)) => return Err(e.into()),
        Some(JobEvent::Event(event)) => event,
        None => return Err(ApiError::from(crate::SubmitError::Closed)),
    };
    if parsed.stream {
        Ok(stream(meta, first, ticket.events, parsed.include_usage).into_response())
    } else {
        collect(meta, first, ticket.events).await
    }
}

/// The whole answer as one `chat.completion`.
async fn collect(
    meta: Meta,
    first: Event,
    mut events: mpsc::Receiver<JobEvent>,
) -> Result<Response, ApiError> {
    let mut next = Some(first);
    let completion: Completion = loop {
        match next.take() {
            Some(Event::Done(done)) => break *done,
            Some(_) => {}
            None => {}
        }
        next = match events.recv().await {
            Some(JobEvent::Event(event)) => Some(event),
            Some(JobEvent::Failed(e)) => return Err(e.into()),
            None => return Err(ApiError::from(crate::SubmitError::Closed)),
        };
    };
    let mut message = json!({ "role": "assistant", "content": completion.answer });
    if !completion.reasoning.is_empty() {
        message["reasoning_content"] = completion.reasoning.clone().into();
    }
    Ok(Json(json!({
        "id": meta.id,
        "object": "chat.completion",
        "created": meta.created,
        "model": meta.model,
        "system_fingerprint": super::FINGERPRINT,
        "choices": [{
            "index": 0,
            "message": message,
            "logprobs": null,
            "finish_reason": finish_reason(completion.finish_reason),
        }],
        "usage": usage(&completion.stats),
        "timings": timings(&completion.stats),
    }))
    .into_response())
}

/// What the SSE stream still has to send.
struct StreamState {
    meta: Meta,
    events: mpsc::Receiver<JobEvent>,
    /// An event already received (the first one, read before the stream started).
    pending: Option<Event>,
    /// SSE data lines ready to go out, in order.
    out: VecDeque<String>,
    include_usage: bool,
    done: bool,
}

/// The answer as `chat.completion.chunk`s: a first chunk with the role, one per text delta, a
/// finish chunk with `timings`, the usage chunk if asked, then `[DONE]`. Keep-alive comments
/// flow while the prompt is processed.
fn stream(
    meta: Meta,
    first: Event,
    events: mpsc::Receiver<JobEvent>,
    include_usage: bool,
) -> Sse<impl futures_util::Stream<Item = Result<SseEvent, Infallible>>> {
    let opening = meta.chunk(json!({ "role": "assistant", "content": null }), None);
    let state = StreamState {
        meta,
        events,
        pending: Some(first),
        out: VecDeque::from([opening.to_string()]),
        include_usage,
        done: false,
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
                None => match state.events.recv().await {
                    Some(JobEvent::Event(event)) => event,
                    Some(JobEvent::Failed(e)) => {
                        state.out.push_back(ApiError::from(e).body().to_string());
                        state.done = true;
                        continue;
                    }
                    None => {
                        let closed = ApiError::from(crate::SubmitError::Closed);
                        state.out.push_back(closed.body().to_string());
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
        let delta = match event {
            Event::Reasoning { text } => json!({ "reasoning_content": text }),
            Event::Answer { text } => json!({ "content": text }),
            // Tool calls are not offered through the API yet, so any span is plain text.
            Event::ToolCall(span) => json!({ "content": span.raw }),
            Event::PrefillProgress { .. } => return,
            Event::Done(done) => {
                let mut last = self
                    .meta
                    .chunk(json!({}), Some(finish_reason(done.finish_reason)));
                last["timings"] = timings(&done.stats);
                self.out.push_back(last.to_string());
                if self.include_usage {
                    let mut usage_chunk = self.meta.chunk(json!({}), None);
                    usage_chunk["choices"] = json!([]);
                    usage_chunk["usage"] = usage(&done.stats);
                    self.out.push_back(usage_chunk.to_string());
                }
                self.out.push_back("[DONE]".to_string());
                self.done = true;
                return;
            }
        };
        self.out.push_back(self.meta.chunk(delta, None).to_string());
    }
}
