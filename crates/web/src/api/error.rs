//! OpenAI-shaped errors: `{"error": {"message", "type", "param", "code"}}` with the HTTP status
//! that says whose mistake it is (4xx: the client's, never a 5xx for it).

use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::json;
use smollm3_gen::GenError;

use crate::SubmitError;

/// An error answered to an HTTP client.
#[derive(Debug, Clone, PartialEq)]
pub struct ApiError {
    pub status: StatusCode,
    /// OpenAI's `type`: `invalid_request_error`, `exceed_context_size_error`,
    /// `unavailable_error`, `server_error`.
    pub kind: &'static str,
    pub message: String,
    /// The request field at fault, when one is.
    pub param: Option<String>,
    /// Extra fields (`n_prompt_tokens`, `n_ctx` for a prompt over the context).
    pub extra: Vec<(&'static str, serde_json::Value)>,
}

impl ApiError {
    /// A 400 about the request, naming `param` when known.
    pub fn invalid(message: impl Into<String>, param: Option<&str>) -> Self {
        ApiError {
            status: StatusCode::BAD_REQUEST,
            kind: "invalid_request_error",
            message: message.into(),
            param: param.map(str::to_string),
            extra: Vec::new(),
        }
    }

    /// A body that could not be read: too large (413), paused past the body timeout (408),
    /// or not readable.
    pub fn from_rejection(rejection: axum::extract::rejection::BytesRejection) -> Self {
        let mut cause: Option<&(dyn std::error::Error + 'static)> = Some(&rejection);
        while let Some(e) = cause {
            if e.is::<tower_http::timeout::TimeoutError>() {
                return ApiError {
                    status: StatusCode::REQUEST_TIMEOUT,
                    ..ApiError::invalid("the request body stopped arriving before its end", None)
                };
            }
            cause = e.source();
        }
        ApiError {
            status: rejection.status(),
            ..ApiError::invalid(rejection.body_text(), None)
        }
    }

    /// The body, as sent before a stream starts and as the `data:` of an error mid-stream.
    pub fn body(&self) -> serde_json::Value {
        let mut error = json!({
            "message": self.message,
            "type": self.kind,
            "param": self.param,
            "code": self.status.as_u16(),
        });
        for (key, value) in &self.extra {
            error[*key] = value.clone();
        }
        json!({ "error": error })
    }
}

impl From<GenError> for ApiError {
    fn from(e: GenError) -> Self {
        match e {
            GenError::PromptTooLong {
                prompt_tokens,
                context,
            } => ApiError {
                status: StatusCode::BAD_REQUEST,
                kind: "exceed_context_size_error",
                message: e.to_string(),
                param: Some("messages".into()),
                extra: vec![
                    ("n_prompt_tokens", prompt_tokens.into()),
                    ("n_ctx", context.into()),
                ],
            },
            GenError::InvalidSampling(ref m) => {
                let param = m.split_whitespace().next().map(str::to_string);
                ApiError {
                    param,
                    ..ApiError::invalid(e.to_string(), None)
                }
            }
            GenError::InvalidRequest(_) | GenError::Chat(_) => {
                ApiError::invalid(e.to_string(), None)
            }
            GenError::Model(_) | GenError::Backend(_) => ApiError {
                status: StatusCode::INTERNAL_SERVER_ERROR,
                kind: "server_error",
                message: e.to_string(),
                param: None,
                extra: Vec::new(),
            },
        }
    }
}

impl From<SubmitError> for ApiError {
    fn from(e: SubmitError) -> Self {
        ApiError {
            status: StatusCode::SERVICE_UNAVAILABLE,
            kind: "unavailable_error",
            message: e.to_string(),
            param: None,
            extra: Vec::new(),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut response = (self.status, axum::Json(self.body())).into_response();
        if self.status == StatusCode::SERVICE_UNAVAILABLE {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, header::HeaderValue::from_static("1"));
        }
        response
    }
}
