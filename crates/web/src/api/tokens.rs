//! llama-server's tokenizer and template endpoints: `POST /tokenize`, `POST /detokenize` and
//! `POST /apply-template` (the exact prompt a chat request would produce, for template
//! debugging).

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::State;
use axum::Json;
use serde::Deserialize;
use serde_json::{json, Value};
use smollm3_gen::{Backend, Prompt};

use super::error::ApiError;
use super::request::{read_body, ChatCompletionRequest};
use super::AppState;

#[derive(Deserialize)]
struct TokenizeBody {
    content: String,
    /// Parse special-token text (`<|im_start|>`) as special tokens.
    #[serde(default)]
    add_special: bool,
    /// Each id with its text.
    #[serde(default)]
    with_pieces: bool,
}

pub async fn tokenize<B: Backend + Send + 'static>(
    State(app): State<Arc<AppState<B>>>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<Value>, ApiError> {
    let body: TokenizeBody = read_body(body)?;
    let tokenizer = app.scheduler()?.tokenizer();
    let ids = tokenizer
        .encode(&body.content, body.add_special)
        .map_err(|e| ApiError::invalid(e.to_string(), Some("content")))?;
    if !body.with_pieces {
        return Ok(Json(json!({ "tokens": ids })));
    }
    let pieces: Vec<Value> = ids
        .iter()
        .map(|&id| {
            let bytes = tokenizer.token_bytes(id).unwrap_or_default();
            json!({ "id": id, "piece": String::from_utf8_lossy(bytes) })
        })
        .collect();
    Ok(Json(json!({ "tokens": pieces })))
}

#[derive(Deserialize)]
struct DetokenizeBody {
    tokens: Vec<u32>,
}

pub async fn detokenize<B: Backend + Send + 'static>(
    State(app): State<Arc<AppState<B>>>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<Value>, ApiError> {
    let body: DetokenizeBody = read_body(body)?;
    let content = app
        .scheduler()?
        .tokenizer()
        .decode(&body.tokens, false)
        .map_err(|e| ApiError::invalid(e.to_string(), Some("tokens")))?;
    Ok(Json(json!({ "content": content })))
}

pub async fn apply_template<B: Backend + Send + 'static>(
    State(app): State<Arc<AppState<B>>>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<Value>, ApiError> {
    let body = body.map_err(ApiError::from_rejection)?;
    let parsed = ChatCompletionRequest::parse(&body, &app.defaults)?;
    let Prompt::Chat(chat) = &parsed.request.prompt else {
        return Err(ApiError::invalid(
            "messages: a chat is needed",
            Some("messages"),
        ));
    };
    let prompt = app
        .scheduler()?
        .template()
        .render(chat)
        .map_err(|e| ApiError::invalid(e.to_string(), Some("messages")))?;
    Ok(Json(json!({ "prompt": prompt })))
}
