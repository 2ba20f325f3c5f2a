//! The OpenAI-compatible HTTP API over a [`Scheduler`]: state and small handlers, as in
//! axum's examples. Tested through `router(state).oneshot(request)` on scripted sessions.

mod completions;
mod error;
mod metrics;
mod reply;
mod request;
mod tokens;

use std::sync::{Arc, OnceLock};

use axum::extract::{DefaultBodyLimit, Request, State};
use axum::http::{header, HeaderValue, Method, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::{json, Value};
use smollm3_gen::{Backend, SamplingParams};
use tower_http::cors::{AllowOrigin, CorsLayer};
use tower_http::timeout::RequestBodyTimeoutLayer;

pub use error::ApiError;
pub use metrics::Metrics;

use crate::Scheduler;

/// `system_fingerprint` of every response: this build.
const FINGERPRINT: &str = concat!("smollm3-rs-", env!("CARGO_PKG_VERSION"));

/// What the handlers share. Created while the model loads (every endpoint but `/health`
/// answers 503 until [`AppState::set_scheduler`]).
pub struct AppState<B: Backend + Send + 'static> {
    scheduler: OnceLock<Scheduler<B>>,
    /// The model's GGUF as loaded: its weights are read from the file's mapping, so every
    /// request first checks that nobody changed the file in place.
    model_file: OnceLock<smollm3_model::FileIdentity>,
    /// The model's name in `/v1/models` and in responses to requests that name none.
    pub model: String,
    /// Sampling settings for fields a request leaves out (SmolLM3's defaults, or the server's
    /// flags).
    pub defaults: SamplingParams,
    /// Largest request body in bytes (413 above it).
    pub body_limit: usize,
    /// Longest a request body may pause between two pieces (408 then).
    pub body_timeout: std::time::Duration,
    /// When set, every endpoint but `/health` needs `Authorization: Bearer KEY` (else 401).
    pub api_key: Option<String>,
    /// Origins whose pages may call the API from a browser (`--cors`); `*` for any. Empty:
    /// no CORS headers, so browsers keep other sites' pages out.
    pub cors_origins: Vec<String>,
    /// Prompt-lookup drafts (speculative decoding) unless a request turns them off
    /// (`prompt_lookup: false`); `--no-prompt-lookup` turns them off for every request.
    pub prompt_lookup: bool,
    /// What `/metrics` reports.
    pub metrics: Arc<Metrics>,
    /// The web chat's conversations and running answers.
    pub chat: crate::chat::ChatState,
}

impl<B: Backend + Send + 'static> AppState<B> {
    /// A server still loading its model; 8 MiB bodies, no API key.
    pub fn new(model: impl Into<String>, defaults: SamplingParams) -> Self {
        AppState {
            scheduler: OnceLock::new(),
            model_file: OnceLock::new(),
            model: model.into(),
            defaults,
            body_limit: 8 << 20,
            body_timeout: std::time::Duration::from_secs(30),
            api_key: None,
            cors_origins: Vec::new(),
            prompt_lookup: true,
            metrics: Arc::default(),
            chat: crate::chat::ChatState::default(),
        }
    }

    /// The same, ready to serve with `scheduler`.
    pub fn with_scheduler(self, scheduler: Scheduler<B>) -> Self {
        let _ = self.scheduler.set(scheduler);
        self
    }

    /// The model is loaded: start serving (a second call is ignored).
    pub fn set_scheduler(&self, scheduler: Scheduler<B>) {
        let _ = self.scheduler.set(scheduler);
    }

    /// Checks the model's file before each request from now on (a second call is ignored).
    pub fn set_model_file(&self, file: smollm3_model::FileIdentity) {
        let _ = self.model_file.set(file);
    }

    /// The scheduler; a 503 while the model loads, and once its file was changed in place
    /// (truncated or overwritten: the weights read from it would be garbage, or the process
    /// would die of SIGBUS touching a truncated page), so `/health` takes the server out of a
    /// load balancer's rotation and every request is told to restart it.
    pub fn scheduler(&self) -> Result<&Scheduler<B>, ApiError> {
        let unavailable = |message: String| ApiError {
            status: StatusCode::SERVICE_UNAVAILABLE,
            kind: "unavailable_error",
            message,
            param: None,
            extra: Vec::new(),
        };
        if let Some(change) = self.model_file.get().and_then(|f| f.changed_in_place()) {
            return Err(unavailable(format!(
                "the model file {change}: restart the server with a complete file"
            )));
        }
        self.scheduler
            .get()
            .ok_or_else(|| unavailable("Loading model".into()))
    }

    /// Stops taking requests; with `cancel`, running generations stop at their next token.
    pub fn close(&self, cancel: bool) {
        if let Some(scheduler) = self.scheduler.get() {
            scheduler.close(cancel);
        }
    }
}

/// The API's routes. Serve them on a Tokio runtime with timers enabled (the request-body
/// timeout sleeps).
pub fn router<B: Backend + Send + 'static>(state: Arc<AppState<B>>) -> Router {
    let limit = state.body_limit;
    Router::new()
        .route("/health", get(health::<B>))
        .route("/v1/models", get(models::<B>))
        .route(
            "/v1/chat/completions",
            post(completions::chat_completions::<B>),
        )
        .route("/v1/completions", post(completions::completions::<B>))
        .route("/metrics", get(metrics::<B>))
        .route("/stats", get(stats::<B>))
        .route("/tokenize", post(tokens::tokenize::<B>))
        .route("/detokenize", post(tokens::detokenize::<B>))
        .route("/apply-template", post(tokens::apply_template::<B>))
        .route("/slots", get(slots::<B>))
        .route("/props", get(props::<B>))
        .merge(crate::chat::routes::<B>())
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(middleware::from_fn_with_state(
            state.clone(),
            require_key::<B>,
        ))
        .layer(DefaultBodyLimit::max(limit))
        .layer(middleware::from_fn_with_state(limit, refuse_oversized))
        // A body that stops arriving (a client gone quiet mid-upload, or one holding a
        // connection open on purpose) ends in a 408, not a handler waiting for ever.
        .layer(RequestBodyTimeoutLayer::new(state.body_timeout))
        // Outermost, so that browsers' preflight requests are answered without a key.
        .layer(cors(&state.cors_origins))
        .with_state(state)
}

/// A body whose `Content-Length` is over the limit gets its 413 at once, before any of it is
/// read (the body-limit layer alone would wait for bytes that a client claiming gigabytes may
/// never send).
async fn refuse_oversized(State(limit): State<usize>, request: Request, next: Next) -> Response {
    let declared = request
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
    match declared {
        Some(length) if length > limit as u64 => ApiError {
            status: StatusCode::PAYLOAD_TOO_LARGE,
            ..ApiError::invalid(
                format!("the request body is {length} bytes, more than the limit of {limit}"),
                None,
            )
        }
        .into_response(),
        _ => next.run(request).await,
    }
}

/// `--cors`: which origins' pages may read the API's answers (tower-http's `CorsLayer`).
fn cors(origins: &[String]) -> CorsLayer {
    if origins.is_empty() {
        return CorsLayer::new();
    }
    let allow = if origins.iter().any(|o| o == "*") {
        AllowOrigin::any()
    } else {
        AllowOrigin::list(origins.iter().filter_map(|o| HeaderValue::from_str(o).ok()))
    };
    CorsLayer::new()
        .allow_origin(allow)
        .allow_methods([Method::GET, Method::POST])
        .allow_headers([header::AUTHORIZATION, header::CONTENT_TYPE])
        .max_age(std::time::Duration::from_secs(3600))
}

/// `--api-key`: a request without `Authorization: Bearer KEY` gets OpenAI's 401; `/health`
/// stays open for load balancers.
async fn require_key<B: Backend + Send + 'static>(
    State(app): State<Arc<AppState<B>>>,
    request: Request,
    next: Next,
) -> Response {
    let Some(key) = &app.api_key else {
        return next.run(request).await;
    };
    let headers = request.headers();
    let bearer = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    // A browser cannot send a bearer token: the web chat's login sets this cookie.
    let cookie = headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .find_map(|c| {
            c.trim()
                .strip_prefix(crate::chat::KEY_COOKIE)?
                .strip_prefix('=')
        });
    let matches = [bearer, cookie]
        .into_iter()
        .flatten()
        .any(|g| same_bytes(g.as_bytes(), key.as_bytes()));
    let path = request.uri().path();
    if matches || path == "/health" || crate::chat::is_public(path) {
        return next.run(request).await;
    }
    let wants_page = request.method() == axum::http::Method::GET
        && headers
            .get(header::ACCEPT)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.contains("text/html"));
    if wants_page {
        return axum::response::Redirect::to("/login").into_response();
    }
    ApiError {
        status: StatusCode::UNAUTHORIZED,
        kind: "authentication_error",
        message: "Invalid API Key".into(),
        param: None,
        extra: Vec::new(),
    }
    .into_response()
}

/// Compares in a time that does not depend on where the first difference is, so a client
/// cannot find the key a byte at a time by timing 401s.
pub(crate) fn same_bytes(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Prometheus text; the queue and slot gauges are read at each scrape.
async fn metrics<B: Backend + Send + 'static>(State(app): State<Arc<AppState<B>>>) -> Response {
    let status = app.scheduler().ok().map(Scheduler::status);
    app.metrics.render(status.as_ref())
}

/// The counters of `/metrics` as one JSON object (see `metrics.rs`).
async fn stats<B: Backend + Send + 'static>(State(app): State<Arc<AppState<B>>>) -> Json<Value> {
    let status = app.scheduler().ok().map(Scheduler::status);
    Json(app.metrics.stats(status.as_ref()))
}

/// 200 `{"status":"ok"}` when requests can be served, 503 while the model loads.
async fn health<B: Backend + Send + 'static>(
    State(app): State<Arc<AppState<B>>>,
) -> Result<Json<Value>, ApiError> {
    app.scheduler()?;
    Ok(Json(json!({ "status": "ok" })))
}

async fn models<B: Backend + Send + 'static>(
    State(app): State<Arc<AppState<B>>>,
) -> Result<Json<Value>, ApiError> {
    let context = app
        .scheduler()?
        .status()
        .slots
        .first()
        .map_or(0, |s| s.context);
    Ok(Json(json!({
        "object": "list",
        "data": [{
            "id": app.model,
            "object": "model",
            "created": 0,
            "owned_by": "smollm3-rs",
            "meta": { "n_ctx": context },
        }],
    })))
}

/// llama-server's `/props`: the model, the slots and their context, the default sampling
/// settings (the same table as the request fields) and the build.
async fn props<B: Backend + Send + 'static>(
    State(app): State<Arc<AppState<B>>>,
) -> Result<Json<Value>, ApiError> {
    let scheduler = app.scheduler()?;
    let status = scheduler.status();
    Ok(Json(json!({
        "model": app.model,
        "total_slots": status.slots.len(),
        "n_ctx": status.slots.first().map_or(0, |s| s.context),
        "default_generation_settings": app.defaults,
        "chat_template": scheduler.template().source(),
        "build_info": FINGERPRINT,
    })))
}

/// llama-server's `/slots`: each slot, busy or not, and how much it has cached.
async fn slots<B: Backend + Send + 'static>(
    State(app): State<Arc<AppState<B>>>,
) -> Result<Json<Value>, ApiError> {
    let status = app.scheduler()?.status();
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
    Ok(Json(Value::Array(slots)))
}

async fn method_not_allowed(method: Method, uri: axum::http::Uri) -> ApiError {
    ApiError {
        status: StatusCode::METHOD_NOT_ALLOWED,
        kind: "invalid_request_error",
        ..ApiError::invalid(format!("{} does not take {method}", uri.path()), None)
    }
}

async fn not_found(uri: axum::http::Uri) -> ApiError {
    ApiError {
        status: StatusCode::NOT_FOUND,
        kind: "not_found_error",
        ..ApiError::invalid(format!("no such endpoint: {}", uri.path()), None)
    }
}
