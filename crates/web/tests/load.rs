//! A bounded load test on loopback against the real binary (tiny fixture model, 2 slots, a
//! queue of 2): 16 clients at once, some reading to the end (streamed or not), some hanging up
//! after the first token. Every request ends in a complete answer, a clean 503 with
//! Retry-After, or a cancel; `/metrics` counts exactly those; no slot stays busy; the server
//! answers afterwards; and its memory is back to the level it had after the same requests
//! warmed it up (nothing kept per request).

mod common;

use std::io::{BufRead, BufReader};
use std::net::TcpStream;
use std::path::Path;
use std::sync::{Arc, Barrier};
use std::time::Duration;

use common::{http, Server};
use serde_json::{json, Value};

const CLIENTS: usize = 16;
const MAX_TOKENS: usize = 300;

#[derive(Debug, PartialEq)]
enum Ending {
    /// A whole answer: the stream's `[DONE]`, or a JSON completion.
    Complete,
    /// 503 with `Retry-After`.
    Busy,
    /// We hung up after the first streamed token.
    HungUp,
}

fn request(stream: bool, user: usize) -> String {
    json!({
        "messages": [{"role": "user", "content": format!("Client {user}: tell a long story.")}],
        "max_tokens": MAX_TOKENS, "temperature": 0.8, "seed": user,
        "reasoning_effort": "none", "stream": stream,
    })
    .to_string()
}

/// Sends a chat request and returns the response to read as it comes (status line first).
fn post_chat(address: &str, body: &str) -> BufReader<TcpStream> {
    BufReader::new(common::post_chat(address, body))
}

/// One client: sends its request and reads the response as an HTTP/1.1 client would.
fn client(address: &str, user: usize, stream: bool, hang_up: bool) -> Ending {
    let mut reader = post_chat(address, &request(stream, user));
    let mut status_line = String::new();
    reader.read_line(&mut status_line).unwrap();
    let mut retry_after = false;
    loop {
        let mut header = String::new();
        reader.read_line(&mut header).unwrap();
        if header.trim().is_empty() {
            break;
        }
        retry_after |= header.to_ascii_lowercase().starts_with("retry-after:");
    }
    match &status_line[9..12] {
        "503" => {
            assert!(retry_after, "a 503 without Retry-After");
            return Ending::Busy;
        }
        "200" => {}
        other => panic!("client {user}: status {other}"),
    }
    let mut all = String::new();
    for line in reader.lines() {
        let line = line.unwrap();
        if hang_up && line.starts_with("data: ") && line.contains("\"content\":\"") {
            return Ending::HungUp; // drops the socket mid-stream
        }
        all.push_str(&line);
        all.push('\n');
        if line == "data: [DONE]" {
            return Ending::Complete;
        }
    }
    if !stream {
        let v: Value = serde_json::from_str(all.trim()).unwrap_or_else(|_| {
            // A chunked body: the JSON is on its own line between the chunk sizes.
            let json = all.lines().find(|l| l.starts_with('{')).unwrap();
            serde_json::from_str(json).unwrap()
        });
        assert!(v["choices"][0]["message"]["content"].is_string(), "{v}");
        return Ending::Complete;
    }
    panic!("client {user}: the stream ended without [DONE]: {all}");
}

#[cfg(target_os = "linux")]
fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}

fn metric(address: &str, name: &str) -> f64 {
    let (_, text) = http(address, "GET", "/metrics", None, "");
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or(0.0)
}

fn wave(address: &str) -> Vec<Ending> {
    let barrier = Arc::new(Barrier::new(CLIENTS));
    let handles: Vec<_> = (0..CLIENTS)
        .map(|i| {
            let (address, barrier) = (address.to_string(), barrier.clone());
            std::thread::spawn(move || {
                barrier.wait();
                // A third hang up, a third read a stream to the end, a third wait for JSON.
                let hang_up = i % 3 == 0;
                if hang_up {
                    // The others ask first, so that the 4 places (2 slots, a queue of 2) are
                    // not all taken by clients that hang up (a CI run saw that once, and
                    // then nothing completed).
                    std::thread::sleep(Duration::from_millis(100));
                }
                client(&address, i, i % 3 != 2, hang_up)
            })
        })
        .collect();
    handles.into_iter().map(|h| h.join().unwrap()).collect()
}

#[test]
fn sixteen_clients_on_two_slots_end_cleanly_and_leave_nothing_behind() {
    let model =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fixtures/gguf/smollm3-tiny-q8_0.gguf");
    assert!(model.exists(), "run `cargo xtask gen-fixtures` first");
    let server = Server::start(
        &model,
        &["--parallel", "2", "--queue", "2", "--ctx", "1024"],
    );
    let address = server.address.clone();
    let wait_idle = || {
        for _ in 0..2000 {
            let (_, slots) = http(&address, "GET", "/slots", None, "");
            let slots: Value = serde_json::from_str(&slots).unwrap();
            if slots
                .as_array()
                .unwrap()
                .iter()
                .all(|s| s["is_processing"] == false)
            {
                return;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        panic!("a slot stayed busy");
    };

    // Warm-up: both slots' caches grow to this size of request once.
    let warm_up = wave(&address);
    wait_idle();
    #[cfg(target_os = "linux")]
    let warm_rss = rss_kib(server.child.id());
    let counted = |outcome: &str| {
        metric(
            &address,
            &format!(
                "smollm3_requests_total{{endpoint=\"/v1/chat/completions\",outcome=\"{outcome}\"}}"
            ),
        )
    };
    let (stop0, length0, cancelled0, rejected0) = (
        counted("stop"),
        counted("length"),
        counted("cancelled"),
        counted("rejected"),
    );

    let endings = wave(&address);
    wait_idle();
    let count = |e: Ending| endings.iter().filter(|x| **x == e).count() as f64;
    let (complete, busy, hung_up) = (
        count(Ending::Complete),
        count(Ending::Busy),
        count(Ending::HungUp),
    );
    assert_eq!(complete + busy + hung_up, CLIENTS as f64);
    assert!(
        busy > 0.0,
        "16 clients on 2 slots and a queue of 2: {endings:?}"
    );
    assert!(complete > 0.0, "{endings:?}");
    // The server counted exactly what the clients saw.
    let finished = counted("stop") - stop0 + counted("length") - length0;
    assert_eq!(finished, complete, "{endings:?}");
    assert_eq!(counted("rejected") - rejected0, busy);
    // A client that hung up before the end was counted as cancelled (one that was so quick
    // it hung up on its last token may be counted as finished: never more than hung up).
    assert!(counted("cancelled") - cancelled0 <= hung_up);
    assert_eq!(metric(&address, "smollm3_queue_depth"), 0.0);
    assert_eq!(metric(&address, "smollm3_slots_busy"), 0.0);

    // Still serving.
    let (status, text) = http(
        &address,
        "POST",
        "/v1/chat/completions",
        None,
        &json!({"messages": [{"role": "user", "content": "Hi"}], "max_tokens": 4}).to_string(),
    );
    assert_eq!(status, 200, "{text}");
    #[cfg(target_os = "linux")]
    {
        let rss = rss_kib(server.child.id());
        assert!(
            rss <= warm_rss + 16 * 1024,
            "memory grew from {warm_rss} KiB to {rss} KiB over {CLIENTS} requests"
        );
    }
    let _ = warm_up;
}

/// With one slot, a client that hangs up after its first token frees the slot for the next
/// request at once: its generation stops within a few tokens of the hang-up (counted in the
/// slot's cache, not timed), though it was allowed 900, and the next request then runs.
#[test]
fn a_hang_up_frees_the_only_slot_within_a_few_tokens() {
    let model =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fixtures/gguf/smollm3-tiny-q8_0.gguf");
    assert!(model.exists(), "run `cargo xtask gen-fixtures` first");
    let server = Server::start(&model, &["--parallel", "1", "--ctx", "1024"]);
    let address = server.address.as_str();
    let question = |max_tokens: usize, stream: bool| {
        json!({
            "messages": [{"role": "user", "content": "Tell me everything."}],
            "max_tokens": max_tokens, "temperature": 1.0, "seed": 7,
            "reasoning_effort": "none", "stream": stream,
        })
        .to_string()
    };
    let (status, text) = http(
        address,
        "POST",
        "/v1/chat/completions",
        None,
        &question(1, false),
    );
    assert_eq!(status, 200, "{text}");
    let prompt_tokens = serde_json::from_str::<Value>(&text).unwrap()["usage"]["prompt_tokens"]
        .as_u64()
        .unwrap();

    let mut reader = post_chat(address, &question(900, true));
    let mut received = 0;
    for line in (&mut reader).lines() {
        if line.unwrap().contains("\"content\":\"") {
            received += 1;
            break;
        }
    }
    assert_eq!(received, 1);
    drop(reader); // hang up

    // The slot comes back holding the prompt and only the few tokens made before the server
    // saw the closed connection (an event buffer's worth at most), not 900.
    let mut cached = None;
    for _ in 0..2000 {
        let (_, slots) = http(address, "GET", "/slots", None, "");
        let slots: Value = serde_json::from_str(&slots).unwrap();
        if slots[0]["is_processing"] == false {
            cached = slots[0]["cached_tokens"].as_u64();
            break;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    let cached = cached.expect("the slot stayed busy after the hang-up");
    assert!(
        (prompt_tokens..=prompt_tokens + 16).contains(&cached),
        "the slot holds {cached} tokens for a prompt of {prompt_tokens}"
    );
    let (_, text) = http(address, "GET", "/metrics", None, "");
    assert!(
        text.contains(r#"outcome="cancelled"} 1"#),
        "the hang-up is counted as a cancel: {text}"
    );
    // The next request is served by the same slot, from its cache.
    let (status, text) = http(
        address,
        "POST",
        "/v1/chat/completions",
        None,
        &question(2, false),
    );
    assert_eq!(status, 200, "{text}");
    let v: Value = serde_json::from_str(&text).unwrap();
    assert!(
        v["usage"]["prompt_tokens_details"]["cached_tokens"]
            .as_u64()
            .unwrap()
            >= prompt_tokens - 1
    );
}
