//! The web chat in a real browser: headless Chromium (Debian's package, installed by
//! `.ci/run`) driven by playwright-core (from npm; `SMOLLM3_PLAYWRIGHT` names the directory
//! holding its `node_modules`), against the real binary with scripted replies
//! (`tests/browser.cjs`): send with Enter, the answer streams, the reasoning collapses and
//! opens, code is highlighted, a reload while an answer is written joins the same
//! generation, Esc stops it on the server, a closed tab cancels its answer, a reload finds
//! the conversation, the manifest and service worker (PWA), the theme toggle, a phone-sized
//! drawer, sending and reading with JavaScript off, the settings' answer format holding an
//! answer to a JSON schema, no console errors and no request to any other host. With
//! `SMOLLM3_SCREENSHOT=PATH` it also saves a screenshot of the finished answer.

mod common;

use std::path::Path;
use std::process::Command;

use common::Server;

#[test]
fn the_web_chat_works_in_headless_chromium() {
    let required = std::env::var_os("SMOLLM3_REQUIRE_BROWSER").is_some();
    let playwright = std::env::var_os("SMOLLM3_PLAYWRIGHT");
    let chromium = Path::new("/usr/bin/chromium");
    let Some(playwright) = playwright.filter(|_| chromium.exists()) else {
        assert!(
            !required,
            "SMOLLM3_REQUIRE_BROWSER is set but SMOLLM3_PLAYWRIGHT or /usr/bin/chromium is missing"
        );
        eprintln!("SKIPPED: no Chromium / playwright-core (set SMOLLM3_PLAYWRIGHT)");
        return;
    };
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let model = root.join("../../fixtures/gguf/smollm3-vocab128k-q8_0.gguf");
    assert!(model.exists(), "run `cargo xtask gen-fixtures` first");
    let scratch = tempfile::tempdir().unwrap();
    let replies = scratch.path().join("replies.json");
    let counting = format!(
        "Counting: {}",
        "one two three four five six seven eight nine ten ".repeat(100)
    );
    let answer = "<think>\nThe user wants a tiny Rust program. I will show one and say how to \
                  run it.\n</think>\nHere is a **Rust** program:\n\n```rust\nfn main() {\n    \
                  println!(\"Hello, SmolLM3!\");\n}\n```\n\nRun it with `cargo run`.";
    std::fs::write(
        &replies,
        serde_json::to_string(&[
            answer,
            counting.as_str(),
            counting.as_str(),
            "A short answer, written before the page came back.",
            "Sure! Here is some prose, not JSON.",
        ])
        .unwrap(),
    )
    .unwrap();
    let server = Server::start(
        &model,
        &[
            "--parallel",
            "1",
            "--replay",
            replies.to_str().unwrap(),
            "--replay-token-ms",
            "15",
        ],
    );
    let mut node = Command::new("node");
    node.arg(root.join("tests/browser.cjs"))
        .arg(format!("http://{}", server.address))
        .env("NODE_PATH", Path::new(&playwright).join("node_modules"));
    if let Some(shot) = std::env::var_os("SMOLLM3_SCREENSHOT") {
        node.arg(shot);
    }
    let output = node.output().unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stdout}\n{stderr}");
    assert!(stdout.contains("ok: browser checks passed"), "{stdout}");
}
