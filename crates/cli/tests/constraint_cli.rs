//! `smollm3 run --json-object / --json-schema / --grammar / --regex`: the answer is held to
//! the constraint whatever the model wanted (replies played back with `--replay`), and bad
//! constraint files are one-line errors naming the file.

mod common;

use std::path::{Path, PathBuf};

use common::{ok, smollm3, tiny};

fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path
}

/// `smollm3 run` with `reply` played back, `extra` flags, thinking off.
fn run(dir: &Path, reply: &str, extra: &[&str]) -> std::process::Output {
    run_replies(dir, &[reply], extra)
}

/// [`run`] with several replies (one per generation: a tool loop's rounds).
fn run_replies(dir: &Path, replies: &[&str], extra: &[&str]) -> std::process::Output {
    let replies = write(
        dir,
        "replies.json",
        &serde_json::to_string(replies).unwrap(),
    );
    let (model, replies) = (tiny(), replies.display().to_string());
    let mut args = vec!["run", "--model", &model, "--replay", &replies, "--no-think"];
    args.extend_from_slice(extra);
    args.push("Hi");
    smollm3(&args)
}

/// A schema whose only value is `{"ok": true}`, written into `dir`; its path.
fn ok_schema(dir: &Path) -> String {
    let schema = r#"{"type": "object", "properties": {"ok": {"enum": [true]}},
                     "required": ["ok"], "additionalProperties": false}"#;
    write(dir, "ok.schema.json", schema).display().to_string()
}

#[test]
fn the_answer_follows_the_schema_not_the_model() {
    let dir = tempfile::tempdir().unwrap();
    let schema = ok_schema(dir.path());
    let out = run(dir.path(), "Sure! Here it is.", &["--json-schema", &schema]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        r#"{"ok": true}"#
    );
    let out = run(dir.path(), "Sure! Here it is.", &["--regex", "(yes|no)!"]);
    let answer = String::from_utf8_lossy(&out.stdout).trim().to_string();
    assert!(answer == "yes!" || answer == "no!", "{answer:?}");
    // Unconstrained, the model's own words.
    let (model, replies) = (tiny(), dir.path().join("replies.json"));
    let replies = replies.display().to_string();
    let plain = ok(&[
        "run",
        "--model",
        &model,
        "--replay",
        &replies,
        "--no-think",
        "Hi",
    ]);
    assert_eq!(plain.trim(), "Sure! Here it is.");
}

#[test]
fn bad_constraints_are_one_line_errors_naming_the_problem() {
    let dir = tempfile::tempdir().unwrap();
    let not_json = write(dir.path(), "broken.json", "{\"type\": ");
    let bad_schema = write(dir.path(), "bad.json", r#"{"type": "strin"}"#);
    let bad_lark = write(dir.path(), "bad.lark", "start: missing_rule");
    let missing = dir.path().join("missing.json");
    let cases: [(Vec<String>, &str); 4] = [
        (
            vec!["--json-schema".into(), not_json.display().to_string()],
            "is not JSON",
        ),
        (
            vec!["--json-schema".into(), bad_schema.display().to_string()],
            "strin",
        ),
        (
            vec!["--grammar".into(), bad_lark.display().to_string()],
            "missing_rule",
        ),
        (
            vec!["--json-schema".into(), missing.display().to_string()],
            "missing.json",
        ),
    ];
    for (flags, needle) in cases {
        let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
        let out = run(dir.path(), "x", &flags);
        assert!(!out.status.success(), "{flags:?}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains(needle), "{flags:?}: {stderr}");
        assert_eq!(stderr.trim().lines().count(), 1, "{flags:?}: {stderr}");
    }
    // Two constraints at once: a usage error.
    let out = run(dir.path(), "x", &["--json-object", "--regex", "a"]);
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn with_tools_calls_stay_possible_and_a_json_constraint_holds_the_text_answer() {
    let dir = tempfile::tempdir().unwrap();
    let schema = ok_schema(dir.path());
    let call =
        "<tool_call>\n{\"name\": \"calculator\", \"arguments\": {\"expression\": \"6*7\"}}\n</tool_call>";
    let out = run_replies(
        dir.path(),
        &[call, "It is 42."],
        &["--builtin-tools", "calculator", "--json-schema", &schema],
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(stderr.contains("-> calculator("), "the call ran: {stderr}");
    // The answer after the call is held to the schema, not the model's words.
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        r#"{"ok": true}"#
    );
    // A regex or a Lark grammar cannot share the answer with calls: one line saying so.
    let out = run(
        dir.path(),
        "x",
        &["--builtin-tools", "calculator", "--regex", "a+"],
    );
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("--regex") && stderr.contains("tools"),
        "{stderr}"
    );
    assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");
}

#[test]
fn every_answer_of_a_chat_is_held_to_the_schema() {
    let dir = tempfile::tempdir().unwrap();
    let schema = ok_schema(dir.path());
    let replies = write(
        dir.path(),
        "replies.json",
        &serde_json::to_string(&["Sure!", "Of course."]).unwrap(),
    );
    let model = tiny();
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_smollm3"))
        .args([
            "chat",
            "--model",
            &model,
            "--no-history",
            "--no-think",
            "--replay",
        ])
        .arg(&replies)
        .arg("--json-schema")
        .arg(&schema)
        .env("NO_COLOR", "1")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write;
    let _ = child.stdin.take().unwrap().write_all(b"First?\nSecond?\n");
    let out = child.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let answers: Vec<&str> = stdout.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(answers, [r#"{"ok": true}"#, r#"{"ok": true}"#], "{stdout}");
}
