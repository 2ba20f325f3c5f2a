//! `--model` hub references and `--offline` through the real binary, against a pre-populated
//! Hugging Face cache and a local fake hub (no network).

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use smollm3_hub::fake_hub::{sha256_hex, FakeHub, COMMIT, PROXY_VARS};

const REPO: &str = "test-org/Tiny-GGUF";
/// Nothing listens here: any network use fails fast.
const DEAD_ENDPOINT: &str = "http://127.0.0.1:9";

fn fixture() -> Vec<u8> {
    let path =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fixtures/gguf/smollm3-tiny-q8_0.gguf");
    std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// `HF_HOME` holding `REPO`'s `Tiny-Q8_0.gguf` in the standard layout; returns the snapshot
/// file.
fn populate(hf_home: &Path) -> PathBuf {
    let bytes = fixture();
    let repo_dir = hf_home.join("hub").join("models--test-org--Tiny-GGUF");
    let sha = sha256_hex(&bytes);
    std::fs::create_dir_all(repo_dir.join("blobs")).unwrap();
    std::fs::write(repo_dir.join("blobs").join(&sha), &bytes).unwrap();
    let snapshot = repo_dir.join("snapshots").join(COMMIT);
    std::fs::create_dir_all(&snapshot).unwrap();
    let file = snapshot.join("Tiny-Q8_0.gguf");
    // As Python's huggingface_hub does where symlinks are unavailable: a copy.
    std::fs::write(&file, &bytes).unwrap();
    std::fs::create_dir_all(repo_dir.join("refs")).unwrap();
    std::fs::write(repo_dir.join("refs").join("main"), COMMIT).unwrap();
    file
}

fn smollm3(hf_home: &Path, endpoint: &str, envs: &[(&str, &str)], args: &[&str]) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_smollm3"));
    cmd.args(args)
        .env("HF_HOME", hf_home)
        .env("HF_ENDPOINT", endpoint)
        .env_remove("HF_HUB_CACHE")
        .env_remove("HF_HUB_OFFLINE")
        .env_remove("HF_TOKEN");
    for var in PROXY_VARS {
        cmd.env_remove(var);
    }
    for (k, v) in envs {
        cmd.env(k, v);
    }
    cmd.output().expect("run smollm3")
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn info_reads_a_hub_file_from_the_cache_offline() {
    let home = tempfile::tempdir().unwrap();
    let file = populate(home.path());
    let spec = format!("{REPO}:Tiny-Q8_0.gguf");
    let out = smollm3(
        home.path(),
        DEAD_ENDPOINT,
        &[],
        &["info", "--model", &spec, "--offline", "--json"],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["file"], file.display().to_string());
    assert_eq!(report["architecture"], "smollm3");

    // HF_HUB_OFFLINE=1 instead of --offline, and REPO:QUANT found in the cache.
    let spec = format!("{REPO}:q8_0");
    let out = smollm3(
        home.path(),
        DEAD_ENDPOINT,
        &[("HF_HUB_OFFLINE", "1")],
        &["info", "--model", &spec],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(String::from_utf8_lossy(&out.stdout).contains("Tiny-Q8_0.gguf"));
}

#[test]
fn offline_misses_say_what_where_and_how() {
    let home = tempfile::tempdir().unwrap();
    populate(home.path());
    let spec = format!("{REPO}:Tiny-Q4_K_M.gguf");
    let out = smollm3(
        home.path(),
        DEAD_ENDPOINT,
        &[],
        &["info", "--model", &spec, "--offline"],
    );
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    let dir = home.path().join("hub").join("models--test-org--Tiny-GGUF");
    for needle in [
        "error: ",
        "Tiny-Q4_K_M.gguf",
        REPO,
        &dir.display().to_string(),
        "cargo xtask fetch-weights --repo test-org/Tiny-GGUF --file Tiny-Q4_K_M.gguf",
    ] {
        assert!(err.contains(needle), "{needle:?} not in {err}");
    }
    assert_eq!(err.trim_end().lines().count(), 1, "{err}");

    // No --model: the default SmolLM3-3B Q4_K_M, which is not cached here.
    let out = smollm3(
        home.path(),
        DEAD_ENDPOINT,
        &[("HF_HUB_OFFLINE", "true")],
        &["info"],
    );
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert!(
        err.contains("SmolLM3-Q4_K_M.gguf") && err.contains("ggml-org/SmolLM3-3B-GGUF"),
        "{err}"
    );

    // A missing local file says how else a model can be given.
    let out = smollm3(
        home.path(),
        DEAD_ENDPOINT,
        &[],
        &["info", "--model", "missing.gguf"],
    );
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert!(
        err.contains("missing.gguf not found") && err.contains("REPO:QUANT"),
        "{err}"
    );

    // A --model that is neither a file nor a hub reference.
    let out = smollm3(
        home.path(),
        DEAD_ENDPOINT,
        &[],
        &["info", "--model", "nonsense"],
    );
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("REPO:FILE.gguf"), "{}", stderr(&out));
}

#[test]
fn a_missing_hub_file_is_downloaded_once() {
    let hub = FakeHub::start();
    hub.add(REPO, "Tiny-Q8_0.gguf", fixture());
    let home = tempfile::tempdir().unwrap();
    let spec = format!("{REPO}:Tiny-Q8_0.gguf");
    let args = [
        "tokenize",
        "--model",
        spec.as_str(),
        "--text",
        "Hello world",
    ];
    let out = smollm3(home.path(), &hub.url, &[], &args);
    assert!(out.status.success(), "{}", stderr(&out));
    let first = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        stderr(&out).contains("downloading Tiny-Q8_0.gguf"),
        "{}",
        stderr(&out)
    );
    assert!(home
        .path()
        .join("hub/models--test-org--Tiny-GGUF/snapshots")
        .join(COMMIT)
        .join("Tiny-Q8_0.gguf")
        .exists());
    hub.clear_log();
    let out = smollm3(home.path(), &hub.url, &[], &args);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(String::from_utf8_lossy(&out.stdout), first);
    assert!(!stderr(&out).contains("downloading"));
    assert_eq!(hub.requests(), Vec::<String>::new());
}
