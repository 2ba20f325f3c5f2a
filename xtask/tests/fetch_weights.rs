//! `cargo xtask fetch-weights` against a local fake hub (no network).

use std::path::Path;
use std::process::{Command, Output};

use smollm3_hub::fake_hub::{FakeHub, COMMIT, PROXY_VARS};

const REPO: &str = "test-org/Tiny-GGUF";

fn xtask(hf_home: &Path, endpoint: &str, args: &[&str]) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_xtask"));
    for var in PROXY_VARS {
        cmd.env_remove(var);
    }
    cmd.args(args)
        .env("HF_HOME", hf_home)
        .env("HF_ENDPOINT", endpoint)
        .env_remove("HF_HUB_CACHE")
        .env_remove("HF_HUB_OFFLINE")
        .env_remove("HF_TOKEN")
        // Errors must stay one line even so.
        .env("RUST_BACKTRACE", "1")
        .output()
        .expect("run xtask")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[test]
fn fetch_weights_downloads_once_then_finds_the_cache() {
    let hub = FakeHub::start();
    let bytes = b"GGUF fake weights".repeat(1000);
    hub.add(REPO, "Tiny-Q8_0.gguf", bytes.clone());
    hub.add(REPO, "Tiny-Q4_K_M.gguf", b"GGUF other".to_vec());
    let home = tempfile::tempdir().unwrap();
    let expected = home
        .path()
        .join("hub/models--test-org--Tiny-GGUF/snapshots")
        .join(COMMIT)
        .join("Tiny-Q8_0.gguf");

    let args = ["fetch-weights", "--repo", REPO, "--quant", "q8_0"];
    let out = xtask(home.path(), &hub.url, &args);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    assert!(
        stdout.contains("downloaded test-org/Tiny-GGUF:Tiny-Q8_0.gguf"),
        "{stdout}"
    );
    assert!(stdout.contains(&expected.display().to_string()), "{stdout}");
    assert_eq!(std::fs::read(&expected).unwrap(), bytes);

    hub.clear_log();
    let out = xtask(home.path(), &hub.url, &args);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    assert!(stdout.contains("nothing downloaded"), "{stdout}");
    assert!(stdout.contains(&expected.display().to_string()), "{stdout}");
    assert_eq!(hub.requests(), Vec::<String>::new());

    let out = xtask(
        home.path(),
        &hub.url,
        &[
            "fetch-weights",
            "--repo",
            REPO,
            "--file",
            "Tiny-Q8_0.gguf",
            "--offline",
        ],
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
}

#[test]
fn fetch_weights_offline_miss_says_how_to_get_it() {
    let home = tempfile::tempdir().unwrap();
    let out = xtask(
        home.path(),
        "http://127.0.0.1:9",
        &["fetch-weights", "--offline"],
    );
    assert!(!out.status.success());
    let err = text(&out.stderr);
    let dir = home
        .path()
        .join("hub")
        .join("models--ggml-org--SmolLM3-3B-GGUF");
    for needle in [
        "SmolLM3-Q4_K_M.gguf",
        "ggml-org/SmolLM3-3B-GGUF",
        &dir.display().to_string(),
        "cargo xtask fetch-weights --repo ggml-org/SmolLM3-3B-GGUF --file SmolLM3-Q4_K_M.gguf",
    ] {
        assert!(err.contains(needle), "{needle:?} not in {err}");
    }
    // One `error:` line, even with RUST_BACKTRACE set.
    assert!(err.starts_with("error: "), "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
}
