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
    let out = smollm3(args);
    assert!(
        out.status.success(),
        "smollm3 {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}
