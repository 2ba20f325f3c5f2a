//! Shared helpers for the `smollm3` binary's tests.
#![allow(dead_code)]

use std::process::{Command, Output};

/// Runs the `smollm3` binary built for this test run.
pub fn smollm3(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_smollm3"))
        .args(args)
        .output()
        .expect("run smollm3")
}

/// Runs `smollm3` and returns its stdout, failing the test (with stderr) if it did not succeed.
pub fn ok(args: &[&str]) -> String {
    ok_with_env(args, &[])
}

/// [`ok`] with extra environment variables set for the run.
pub fn ok_with_env(args: &[&str], env: &[(&str, &str)]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_smollm3"))
        .args(args)
        .envs(env.iter().copied())
        .output()
        .expect("run smollm3");
    assert!(
        out.status.success(),
        "smollm3 {args:?} (env {env:?}) failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// The tiny SmolLM3 fixture (random weights, SmolLM3's tokens and template): for tests that
/// play replies back or only need the tokenizer and template.
pub fn tiny() -> String {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../fixtures/gguf/smollm3-tiny-q8_0.gguf")
        .display()
        .to_string()
}
