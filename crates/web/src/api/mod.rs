//! The OpenAI-compatible HTTP API over a [`Scheduler`]: state and small handlers, as in
//! axum's examples. Tested through `router(state).oneshot(request)` on scripted sessions.

mod chat;
mod error;
mod request;
mod tokens;

use std::sync::Arc;

use axum::extract::{DefaultBodyLimit, State};
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::{json, Value};
use smollm3_gen::{Backend, SamplingParams};

pub use error::ApiError;

use crate::Scheduler;

/// `system_fingerprint` of every response: this build.
const FINGERPRINT: &str = concat!("smollm3-rs-", env!("CARGO_PKG_VERSION"));

/// What the handlers share.
pub struct AppState<B: Backend + Send + 'static> {
    pub scheduler: Scheduler<B>,
    /// The model's name in `/v1/models` and in responses that name none.
    pub model: String,
    /// Sampling settings for fields a request leaves out (SmolLM3's defaults, or the server's
    /// flags).
    pub defaults: SamplingParams,
    /// Largest request body in bytes (413 above it).
    pub body_limit: usize,
}

/// The API's routes.
pub fn router<B: Backend + Send + 'static>(state: Arc<AppState<B>>) -> Router {
    let limit = state.body_limit;
    Router::new()
        .route("/health", get(health))
        .route("/v1/models", get(models::<B>))
        .route("/v1/chat/completions", post(chat::chat_completions::<B>))
        .route("/tokenize", post(tokens::tokenize::<B>))
        .route("/detokenize", post(tokens::detokenize::<B>))
        .route("/apply-template", post(tokens::apply_template::<B>))
        .route("/slots", get(slots::<B>))
        .fallback(not_found)
        .layer(DefaultBodyLimit::max(limit))
        .with_state(state)
}

async fn health() -> Json<serde_json::Value> {
    Json(json!({ "status": "ok" }))
}

async fn models<B: Backend + Send + 'static>(
    State(app): State<Arc<AppState<B>>>,
) -> Json<serde_json::Value> {
    let context = app
        .scheduler
        .status()
        .slots
        .first()
        .map_or(0, |s| s.context);
    Json(json!({
        "object": "list",
        "data": [{
            "id": app.model,
            "object": "model",
            "created": 0,
            "owned_by": "smollm3-rs",
            "meta": { "n_ctx": context },
        }],
    }))
}

/// llama-server's `/slots`: each slot, busy or not, and how much it has cached.
async fn slots<B: Backend + Send + 'static>(State(app): State<Arc<AppState<B>>>) -> Json<Value> {
    let status = app.scheduler.status();
    let slots: Vec<Value> = status
        .slots
        .iter()
        .map(|s| {
            json!({
                "id": s.id,
                "is_processing": s.busy,
                "n_ctx": s.context,
                "cached_tokens": s.cached_tokens,
            })
        })
        .collect();
    Json(Value::Array(slots))
}

async fn not_found(uri: axum::http::Uri) -> ApiError {
    ApiError {
        status: StatusCode::NOT_FOUND,
        kind: "not_found_error",
        ..ApiError::invalid(format!("no such endpoint: {}", uri.path()), None)
    }
}
