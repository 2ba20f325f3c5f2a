//! The web chat at `/`: pages rendered on the server (minijinja templates beside the
//! handlers, Markdown made safe by ammonia), htmx for sending and for streaming answers over
//! SSE, conversations kept as files under the data directory. It generates through the same
//! scheduler as the API, so browsers and API clients share the slots fairly.
//!
//! - `store.rs`: conversation files, written atomically.
//! - `live.rs`: answers being written, watched by any number of page streams; a closed tab
//!   cancels, a reconnecting one resumes.
//! - `markdown.rs`: model output to safe, highlighted HTML.
//! - `view.rs` + `templates/`: the HTML.
//! - `pages.rs`: the handlers.
//! - `assets/` (beside `src/`): htmx and its SSE extension (pinned, from npm, with their
//!   licences), the stylesheet, a small script, the PWA manifest, icons and service worker,
//!   all embedded in the binary and served with a versioned URL and a year of caching.

mod live;
pub mod markdown;
mod pages;
pub mod store;
mod view;

use std::sync::Arc;

use axum::extract::Path;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use smollm3_gen::Backend;
use smollm3_tools::{builtins, Registry};

pub use live::ORPHAN_GRACE;
pub use store::{Conversation, Store, StoreError, Turn, TurnStats};

use crate::api::AppState;

/// What the web chat keeps between requests.
#[derive(Default)]
pub struct ChatState {
    /// Where conversations are kept; `None` turns the chat pages into a clear 503.
    pub store: Option<Store>,
    /// The built-in tools a conversation can switch on (run by the server; calculator and
    /// time by default, read-only files when the server was given a directory).
    pub tools: Arc<Registry>,
    running: Arc<live::Running>,
}

impl ChatState {
    /// Conversations in `store`; the calculator and the time as tools.
    pub fn new(store: Store) -> Self {
        let mut tools = Registry::new();
        for tool in
            builtins::by_names(&["calculator".into(), "time".into()], None).unwrap_or_default()
        {
            // Two distinct built-in names: registering cannot clash.
            let _ = tools.register(tool);
        }
        ChatState {
            store: Some(store),
            tools: Arc::new(tools),
            running: Arc::default(),
        }
    }
}

/// The cookie that carries `--api-key` for a browser (set by `/login`).
pub const KEY_COOKIE: &str = "smollm3_key";

/// Paths served without the key: the login page and the static files (no data in them).
pub fn is_public(path: &str) -> bool {
    path == "/login"
        || path.starts_with("/assets/")
        || path == "/manifest.webmanifest"
        || path == "/sw.js"
}

/// The chat's routes, merged into the API router.
pub fn routes<B: Backend + Send + 'static>() -> Router<Arc<AppState<B>>> {
    Router::new()
        .route("/", get(pages::index::<B>))
        .route("/c", get(pages::search::<B>).post(pages::new_chat::<B>))
        .route("/c/{id}", get(pages::show::<B>))
        .route("/c/{id}/send", post(pages::send::<B>))
        .route("/c/{id}/stream", get(pages::stream::<B>))
        .route("/c/{id}/stop", post(pages::stop::<B>))
        .route("/c/{id}/regenerate", post(pages::regenerate::<B>))
        .route("/c/{id}/edit/{index}", post(pages::edit::<B>))
        .route("/c/{id}/rename", post(pages::rename::<B>))
        .route("/c/{id}/delete", post(pages::delete::<B>))
        .route("/c/{id}/settings", post(pages::settings::<B>))
        .route("/login", get(pages::login_page).post(pages::login::<B>))
        .route("/assets/{version}/{file}", get(asset))
        .route(
            "/manifest.webmanifest",
            get(|| asset_named("manifest.webmanifest", false)),
        )
        // The service worker must come from the root to control the whole site.
        .route("/sw.js", get(|| asset_named("sw.js", false)))
}

/// The embedded static files: name, media type, bytes.
pub(crate) const ASSETS: &[(&str, &str, &[u8])] = &[
    (
        "htmx.min.js",
        "text/javascript",
        include_bytes!("../../assets/htmx.min.js"),
    ),
    (
        "htmx-ext-sse.js",
        "text/javascript",
        include_bytes!("../../assets/htmx-ext-sse.js"),
    ),
    (
        "app.js",
        "text/javascript",
        include_bytes!("../../assets/app.js"),
    ),
    (
        "app.css",
        "text/css",
        include_bytes!("../../assets/app.css"),
    ),
    (
        "icon.svg",
        "image/svg+xml",
        include_bytes!("../../assets/icon.svg"),
    ),
    (
        "icon-192.png",
        "image/png",
        include_bytes!("../../assets/icon-192.png"),
    ),
    (
        "icon-512.png",
        "image/png",
        include_bytes!("../../assets/icon-512.png"),
    ),
    (
        "manifest.webmanifest",
        "application/manifest+json",
        include_bytes!("../../assets/manifest.webmanifest"),
    ),
    (
        "sw.js",
        "text/javascript",
        include_bytes!("../../assets/sw.js"),
    ),
];

async fn asset(Path((version, file)): Path<(String, String)>) -> Response {
    // An old version's URL still answers (a page open across an upgrade), uncached.
    asset_named(&file, version == view::asset_version()).await
}

async fn asset_named(file: &str, immutable: bool) -> Response {
    let Some((_, media_type, bytes)) = ASSETS.iter().find(|(name, _, _)| *name == file) else {
        return StatusCode::NOT_FOUND.into_response();
    };
    let cache = if immutable {
        "public, max-age=31536000, immutable"
    } else {
        "no-cache"
    };
    let headers = [
        (header::CONTENT_TYPE, *media_type),
        (header::CACHE_CONTROL, cache),
    ];
    // The service worker and the manifest name the versioned asset URLs.
    if matches!(file, "sw.js" | "manifest.webmanifest") {
        let text =
            String::from_utf8_lossy(bytes).replace("__ASSET_VERSION__", view::asset_version());
        return (headers, text).into_response();
    }
    (headers, *bytes).into_response()
}
