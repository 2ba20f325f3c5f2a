//! Untrusted HTTP bodies through the web API's request parsing (`ChatCompletionRequest::parse`
//! for `/v1/chat/completions`, `parse_text` for `/v1/completions`, the first input byte picks
//! which), via the public router on a server whose model is still loading: the body is parsed
//! first and then answered 503, so nothing is generated. Invariant: no panic, and the answer
//! is a 4xx for a bad body or 503 for a good one, never a 500.
#![no_main]

use std::sync::{Arc, OnceLock};

use axum::body::Body;
use axum::http::{header, Request, StatusCode};
use axum::Router;
use libfuzzer_sys::fuzz_target;
use smollm3_gen::{SamplingParams, ScriptedBackend};
use smollm3_web::{router, AppState};
use tower::ServiceExt;

fn app() -> &'static (tokio::runtime::Runtime, Router) {
    static APP: OnceLock<(tokio::runtime::Runtime, Router)> = OnceLock::new();
    APP.get_or_init(|| {
        // With timers, as the router needs them (its request-body timeout).
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .expect("runtime");
        let state = AppState::<ScriptedBackend>::new("smollm3-fuzz", SamplingParams::default());
        (runtime, router(Arc::new(state)))
    })
}

fuzz_target!(|data: &[u8]| {
    let (runtime, router) = app();
    let Some((&which, body)) = data.split_first() else {
        return;
    };
    let uri = if which & 1 == 0 {
        "/v1/chat/completions"
    } else {
        "/v1/completions"
    };
    let request = Request::post(uri)
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from(body.to_vec()))
        .expect("request");
    let response = runtime
        .block_on(router.clone().oneshot(request))
        .expect("the router is infallible");
    let status = response.status();
    assert!(
        status.is_client_error() || status == StatusCode::SERVICE_UNAVAILABLE,
        "{uri}: status {status} for body {:?}",
        String::from_utf8_lossy(body)
    );
});
