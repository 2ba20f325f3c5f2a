//! `GET /metrics`: Prometheus text (OpenMetrics) through `prometheus-client`, whose registry
//! is a value rather than a process-wide global, so every server (and every test) counts on
//! its own.
//!
//! | metric | kind | what |
//! |---|---|---|
//! | `smollm3_requests_total{endpoint, outcome}` | counter | by how each request ended: `stop`, `length`, `tool_calls`, `cancelled` (client gone), `invalid_request` (4xx), `rejected` (503: queue full, loading, shutting down), `error` (5xx) |
//! | `smollm3_prompt_tokens_total`, `_cached_tokens_total`, `_generated_tokens_total` | counter | tokens of finished requests; cached = prompt tokens taken from a slot's cache |
//! | `smollm3_draft_tokens_total`, `_draft_accepted_tokens_total` | counter | prompt-lookup drafts checked, and taken (acceptance rate = taken / checked) |
//! | `smollm3_time_to_first_token_seconds` | histogram | from the request reaching a slot to its first token |
//! | `smollm3_decode_tokens_per_second` | histogram | per request |
//! | `smollm3_queue_depth` | gauge | requests waiting for a slot (scale out on this) |
//! | `smollm3_slots_busy`, `smollm3_slots_total` | gauge | sessions generating / all sessions |
//!
//! `GET /stats` gives the same counters as one JSON object for a person or a script (no
//! Prometheus needed): tokens, drafts checked and taken with the acceptance rate, slots and
//! queue, e.g. `{"generated_tokens": 640, "draft_tokens": 345, "draft_accepted_tokens": 295,
//! "draft_acceptance_rate": 0.855, "slots_busy": 1, "slots_total": 2, "queue_depth": 0, ...}`.

use axum::http::{header, StatusCode};
use prometheus_client::encoding::text::encode;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;
use smollm3_gen::Stats;

use crate::SchedulerStatus;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    endpoint: String,
    outcome: String,
}

/// The server's counters; cheap to update from any handler.
pub struct Metrics {
    registry: Registry,
    requests: Family<RequestLabels, Counter>,
    /// The sum of `requests` over its labels, for `/stats` (a family cannot list its labels).
    all_requests: Counter,
    prompt_tokens: Counter,
    cached_tokens: Counter,
    generated_tokens: Counter,
    draft_tokens: Counter,
    draft_accepted: Counter,
    time_to_first_token: Histogram,
    decode_speed: Histogram,
    queue_depth: Gauge,
    slots_busy: Gauge,
    slots_total: Gauge,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("smollm3");
        let requests = Family::<RequestLabels, Counter>::default();
        let prompt_tokens = Counter::default();
        let cached_tokens = Counter::default();
        let generated_tokens = Counter::default();
        let (draft_tokens, draft_accepted) = (Counter::default(), Counter::default());
        // 10 ms .. 82 s: a cached turn on SmolLM2 up to a long prompt on the 3B model.
        let time_to_first_token = Histogram::new(exponential_buckets(0.01, 2.0, 14));
        // 0.5 .. 256 tok/s: the 3B model on 2 cores is ~5; SmolLM2 is ~20..100.
        let decode_speed = Histogram::new(exponential_buckets(0.5, 2.0, 10));
        let (queue_depth, slots_busy, slots_total) =
            (Gauge::default(), Gauge::default(), Gauge::default());
        registry.register(
            "requests",
            "Requests by endpoint and how they ended",
            requests.clone(),
        );
        registry.register(
            "prompt_tokens",
            "Prompt tokens of finished requests",
            prompt_tokens.clone(),
        );
        registry.register(
            "cached_tokens",
            "Prompt tokens served from a slot's cache",
            cached_tokens.clone(),
        );
        registry.register(
            "generated_tokens",
            "Tokens generated",
            generated_tokens.clone(),
        );
        registry.register(
            "draft_tokens",
            "Tokens guessed by prompt lookup and checked by the model",
            draft_tokens.clone(),
        );
        registry.register(
            "draft_accepted_tokens",
            "Drafted tokens the model agreed with (each saved a decode step)",
            draft_accepted.clone(),
        );
        registry.register(
            "time_to_first_token_seconds",
            "Time from a slot taking a request to its first token",
            time_to_first_token.clone(),
        );
        registry.register(
            "decode_tokens_per_second",
            "Decode speed of each request",
            decode_speed.clone(),
        );
        registry.register(
            "queue_depth",
            "Requests waiting for a slot",
            queue_depth.clone(),
        );
        registry.register("slots_busy", "Slots generating", slots_busy.clone());
        registry.register("slots_total", "Slots (sessions)", slots_total.clone());
        Metrics {
            registry,
            requests,
            all_requests: Counter::default(),
            prompt_tokens,
            cached_tokens,
            generated_tokens,
            draft_tokens,
            draft_accepted,
            time_to_first_token,
            decode_speed,
            queue_depth,
            slots_busy,
            slots_total,
        }
    }
}

impl Metrics {
    /// A request on `endpoint` ended with `outcome` (see the module table).
    pub fn request(&self, endpoint: &str, outcome: &str) {
        self.requests
            .get_or_create(&RequestLabels {
                endpoint: endpoint.to_string(),
                outcome: outcome.to_string(),
            })
            .inc();
        self.all_requests.inc();
    }

    /// A generation finished (or was cancelled) with these figures.
    pub fn generation(&self, endpoint: &str, outcome: &str, stats: &Stats) {
        self.request(endpoint, outcome);
        self.prompt_tokens.inc_by(stats.prompt_tokens as u64);
        self.cached_tokens.inc_by(stats.cached_tokens as u64);
        self.generated_tokens.inc_by(stats.generated_tokens as u64);
        self.draft_tokens.inc_by(stats.draft_tokens as u64);
        self.draft_accepted.inc_by(stats.draft_accepted as u64);
        if stats.generated_tokens > 0 {
            self.time_to_first_token
                .observe(stats.time_to_first_token_ms / 1e3);
        }
        if stats.generated_tokens > 1 {
            self.decode_speed.observe(stats.decode_tokens_per_second);
        }
    }

    /// The outcome label of an error response.
    pub fn error_outcome(status: StatusCode) -> &'static str {
        match status.as_u16() {
            503 => "rejected",
            400..=499 => "invalid_request",
            _ => "error",
        }
    }

    /// `GET /stats`: the counters as JSON, the acceptance rate of drafts (`null` before any
    /// draft) and the slots and queue from `status` (absent while loading).
    pub fn stats(&self, status: Option<&SchedulerStatus>) -> serde_json::Value {
        let (drafted, accepted) = (self.draft_tokens.get(), self.draft_accepted.get());
        serde_json::json!({
            "requests": self.all_requests.get(),
            "prompt_tokens": self.prompt_tokens.get(),
            "cached_tokens": self.cached_tokens.get(),
            "generated_tokens": self.generated_tokens.get(),
            "draft_tokens": drafted,
            "draft_accepted_tokens": accepted,
            "draft_acceptance_rate": (drafted > 0).then(|| accepted as f64 / drafted as f64),
            "slots_busy": status.map(|s| s.slots.iter().filter(|s| s.busy).count()),
            "slots_total": status.map(|s| s.slots.len()),
            "queue_depth": status.map(|s| s.queued),
        })
    }

    /// The text a scrape gets, with the gauges read from `status` (absent while loading).
    pub fn render(&self, status: Option<&SchedulerStatus>) -> axum::response::Response {
        use axum::response::IntoResponse;
        if let Some(status) = status {
            let busy = status.slots.iter().filter(|s| s.busy).count();
            self.queue_depth.set(status.queued as i64);
            self.slots_busy.set(busy as i64);
            self.slots_total.set(status.slots.len() as i64);
        }
        let mut text = String::new();
        if encode(&mut text, &self.registry).is_err() {
            return StatusCode::INTERNAL_SERVER_ERROR.into_response();
        }
        (
            [(
                header::CONTENT_TYPE,
                "application/openmetrics-text; version=1.0.0; charset=utf-8",
            )],
            text,
        )
            .into_response()
    }
}
