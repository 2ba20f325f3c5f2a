//! `smollm3 chat`: the REPL driven through piped stdin with a script of turns and slash
//! commands. Replies are played back (`--replay`) so answers are exact; the tiny fixture
//! model provides the real tokenizer and chat template.

mod common;

use std::io::Write;
use std::path::Path;
use std::process::{Command, Output, Stdio};

use common::tiny;

fn replies(dir: &Path, replies: &[&str]) -> String {
    let path = dir.join("replies.json");
    std::fs::write(&path, serde_json::to_string(replies).unwrap()).unwrap();
    path.display().to_string()
}

/// Runs `smollm3 chat --model tiny --replay ... EXTRA` with `script` on stdin.
fn chat(dir: &Path, answers: &[&str], extra: &[&str], script: &str) -> Output {
    let m = tiny();
    let r = replies(dir, answers);
    let mut child = Command::new(env!("CARGO_BIN_EXE_smollm3"))
        .args(["chat", "--model", &m, "--replay", &r, "--no-history"])
        .args(extra)
        .env("NO_COLOR", "1")
        .current_dir(dir)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run smollm3 chat");
    // A run that fails early may not read its input.
    let _ = child.stdin.take().unwrap().write_all(script.as_bytes());
    child.wait_with_output().unwrap()
}

fn text(out: &Output) -> (String, String) {
    (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// The numbers after `label` in `/stats` output, one per `/stats`.
fn stat(stdout: &str, label: &str) -> Vec<u64> {
    stdout
        .lines()
        .filter_map(|l| l.strip_prefix(label))
        .map(|rest| {
            rest.split_whitespace()
                .next()
                .and_then(|n| n.parse().ok())
                .unwrap_or_else(|| panic!("no number in {rest:?}"))
        })
        .collect()
}

fn dir() -> tempfile::TempDir {
    tempfile::tempdir().unwrap()
}

#[test]
fn two_turns_stream_answers_and_the_second_reuses_the_cache() {
    let d = dir();
    let out = chat(
        d.path(),
        &[
            "<think>\nLet me see.\n</think>\nHello there!",
            "Fine, thanks.",
        ],
        &["--seed", "1"],
        "Hi\n/stats\nHow are you?\n/stats\n",
    );
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stderr}");
    assert!(stdout.starts_with("Hello there!\n"), "{stdout}");
    assert!(stdout.contains("\nFine, thanks.\n"), "{stdout}");
    // Reasoning goes to stderr, never into the answer.
    assert!(stderr.contains("Let me see."), "{stderr}");
    assert!(!stdout.contains("Let me see."), "{stdout}");
    let prompt = stat(&stdout, "prompt tokens");
    let reused = stat(&stdout, "reused tokens");
    let processed = stat(&stdout, "processed tokens");
    assert_eq!(reused[0], 0);
    assert!(reused[1] > 0, "{stdout}");
    // Only the new part of the second prompt was processed.
    assert_eq!(processed[1], prompt[1] - reused[1]);
    assert!(processed[1] < prompt[0], "{stdout}");
}

#[test]
fn stats_before_any_answer_and_verbose_after_each() {
    let d = dir();
    let out = chat(d.path(), &["A.", "B."], &["-v"], "/stats\nOne\nTwo\n");
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stderr}");
    assert!(stdout.starts_with("No answer yet.\nA.\nB.\n"), "{stdout}");
    assert_eq!(
        stderr.matches("tok/s | first token after").count(),
        2,
        "{stderr}"
    );
}

#[test]
fn system_and_set_show_up_in_show() {
    let d = dir();
    let out = chat(
        d.path(),
        &[],
        &[],
        "/show\n/system You are a pirate.\n/set temperature 0.2\n/set top_k 40\n/set seed 7\n\
         /set max_tokens 99\n/show\n/system\n",
    );
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stderr}");
    let (before, after) = stdout.split_once("Set the system message.").unwrap();
    assert!(before.contains("system             (none)"), "{before}");
    assert!(before.contains("  temperature        0.6"), "{before}");
    assert!(before.contains("thinking           on"), "{before}");
    assert!(before.contains("architecture       smollm3"), "{before}");
    assert!(before.contains("smollm3-tiny-q8_0.gguf"), "{before}");
    assert!(
        before.contains("context            0 tokens used of"),
        "{before}"
    );
    assert!(after.contains("Set temperature to 0.2."), "{after}");
    assert!(
        after.contains("system             You are a pirate."),
        "{after}"
    );
    assert!(after.contains("  temperature        0.2\n"), "{after}");
    assert!(after.contains("  top_k              40\n"), "{after}");
    assert!(after.contains("  seed               7\n"), "{after}");
    assert!(after.contains("  max_tokens         99\n"), "{after}");
    assert!(stdout.ends_with("You are a pirate.\n"), "{stdout}");
}

#[test]
fn the_system_message_reaches_the_prompt() {
    let d = dir();
    let out = chat(
        d.path(),
        &["A.", "B."],
        &[],
        "Hi\n/stats\n/system Be brief.\nHi\n/stats\n/save c.json\n",
    );
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stderr}");
    let prompt = stat(&stdout, "prompt tokens");
    let reused = stat(&stdout, "reused tokens");
    // The system message comes before the first turn (and replaces the default header), so
    // the cache is reused only up to it.
    assert_ne!(prompt[1], prompt[0], "{stdout}");
    assert!(reused[1] < prompt[1].min(prompt[0]), "{stdout}");
    let saved: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(d.path().join("c.json")).unwrap()).unwrap();
    assert_eq!(saved[0]["role"], "system");
    assert_eq!(saved[0]["content"], "Be brief.");
}

#[test]
fn bad_set_values_are_explained_and_the_session_goes_on() {
    let d = dir();
    let out = chat(
        d.path(),
        &["Still here."],
        &[],
        "/set temperature hot\n/set top_p 2\n/set colour blue\n/set top_k -1\n/set seed x\n\
         /set temperature\nHi\n/show\n",
    );
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stderr}");
    assert!(
        stderr.contains("error: invalid value \"hot\" for temperature"),
        "{stderr}"
    );
    assert!(stderr.contains("top_p must be in (0, 1]"), "{stderr}");
    assert!(stderr.contains("unknown parameter \"colour\""), "{stderr}");
    assert!(
        stderr.contains("invalid value \"-1\" for top_k"),
        "{stderr}"
    );
    assert!(stderr.contains("invalid value \"x\" for seed"), "{stderr}");
    assert!(stderr.contains("usage: /set temperature VALUE"), "{stderr}");
    assert!(stdout.starts_with("Still here.\n"), "{stdout}");
    // Nothing was changed by the bad values.
    assert!(stdout.contains("  top_p              0.95\n"), "{stdout}");
    assert!(stdout.contains("  temperature        0.6\n"), "{stdout}");
}

#[test]
fn no_think_changes_the_prompt() {
    let d = dir();
    let out = chat(
        d.path(),
        &["A.", "B.", "C."],
        &["--seed", "3"],
        "Hi\n/stats\n/clear\n/no_think\nHi\n/stats\n/show\n/clear\n/think\nHi\n/stats\n",
    );
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stderr}");
    assert!(stdout.contains("Thinking off."), "{stdout}");
    assert!(stdout.contains("thinking           off"), "{stdout}");
    let prompt = stat(&stdout, "prompt tokens");
    let reused = stat(&stdout, "reused tokens");
    // /no_think renders a different prompt (`/no_think` and an empty think block); /think
    // renders the first one again.
    assert_ne!(prompt[0], prompt[1], "{stdout}");
    assert_eq!(prompt[0], prompt[2], "{stdout}");
    // /clear resets the cache.
    assert_eq!(reused, vec![0, 0, 0], "{stdout}");
}

#[test]
fn no_think_flag_and_hidden_thinking() {
    let d = dir();
    let out = chat(
        d.path(),
        &["<think>\nSecret.\n</think>\nShown."],
        &["--hide-thinking"],
        "Hi\n",
    );
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stderr}");
    assert_eq!(stdout, "Shown.\n");
    assert!(!stderr.contains("Secret."), "{stderr}");

    let out = chat(d.path(), &[], &["--no-think"], "/show\n");
    assert!(text(&out).0.contains("thinking           off"));
}

#[test]
fn save_and_load_round_trip_as_openai_messages() {
    let d = dir();
    let out = chat(
        d.path(),
        &["<think>\nhm\n</think>\nFour.", "Eight."],
        &["--system", "Be exact."],
        "2+2?\n4+4?\n/save conv.json\n",
    );
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stderr}");
    assert!(
        stdout.contains("Saved 5 messages to conv.json."),
        "{stdout}"
    );
    let saved: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(d.path().join("conv.json")).unwrap())
            .unwrap();
    assert_eq!(
        saved,
        serde_json::json!([
            {"role": "system", "content": "Be exact."},
            {"role": "user", "content": "2+2?"},
            {"role": "assistant", "content": "Four."},
            {"role": "user", "content": "4+4?"},
            {"role": "assistant", "content": "Eight."},
        ])
    );

    // Loaded into a new chat, the conversation continues from it and saves the same.
    let out = chat(
        d.path(),
        &["Sixteen."],
        &[],
        "/load conv.json\n/show\n8+8?\n/save again.json\n",
    );
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stderr}");
    assert!(
        stdout.contains("Loaded 5 messages from conv.json."),
        "{stdout}"
    );
    assert!(stdout.contains("system             Be exact."), "{stdout}");
    assert!(stdout.contains("messages           4"), "{stdout}");
    let again: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(d.path().join("again.json")).unwrap())
            .unwrap();
    let mut expected = saved.as_array().unwrap().clone();
    expected.push(serde_json::json!({"role": "user", "content": "8+8?"}));
    expected.push(serde_json::json!({"role": "assistant", "content": "Sixteen."}));
    assert_eq!(again, serde_json::Value::Array(expected));

    // --load does the same at start.
    let out = chat(d.path(), &[], &["--load", "conv.json"], "/show\n");
    assert!(text(&out).0.contains("messages           4"));
}

#[test]
fn load_rejects_bad_files_clearly() {
    let d = dir();
    std::fs::write(d.path().join("obj.json"), r#"{"role": "user"}"#).unwrap();
    std::fs::write(
        d.path().join("role.json"),
        r#"[{"role": "wizard", "content": "x"}]"#,
    )
    .unwrap();
    std::fs::write(d.path().join("content.json"), r#"[{"role": "user"}]"#).unwrap();
    std::fs::write(d.path().join("broken.json"), "[{").unwrap();
    let out = chat(
        d.path(),
        &["Ok."],
        &[],
        "/load obj.json\n/load role.json\n/load content.json\n/load broken.json\n\
         /load missing.json\n/load\n/save\nHi\n/show\n",
    );
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stderr}");
    let errors: Vec<&str> = stderr.lines().filter(|l| l.starts_with("error:")).collect();
    assert_eq!(errors.len(), 7, "{stderr}");
    assert!(errors[0].contains("obj.json: expected a JSON array of messages"));
    assert!(errors[1].contains("role.json: messages[0].role: unknown role \"wizard\""));
    assert!(errors[2].contains("content.json: messages[0].content: a user message needs content"));
    assert!(errors[3].contains("broken.json: not valid JSON"));
    assert!(errors[4].contains("reading missing.json"));
    assert!(errors[5].contains("usage: /load FILE"));
    assert!(errors[6].contains("usage: /save FILE"));
    // The conversation was not touched: one turn.
    assert!(stdout.starts_with("Ok.\n"), "{stdout}");
    assert!(stdout.contains("messages           2"), "{stdout}");
}

#[test]
fn triple_quotes_make_one_multi_line_message() {
    let d = dir();
    let out = chat(
        d.path(),
        &["Got it.", "Again."],
        &[],
        "\"\"\"First line\n/not a command\n\nlast line\"\"\"\n\"\"\"one line\"\"\"\n/save c.json\n",
    );
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stderr}");
    assert!(!stderr.contains("error"), "{stderr}");
    assert_eq!(
        stdout.lines().take(2).collect::<Vec<_>>(),
        ["Got it.", "Again."]
    );
    let saved: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(d.path().join("c.json")).unwrap()).unwrap();
    assert_eq!(
        saved[0]["content"],
        "First line\n/not a command\n\nlast line"
    );
    assert_eq!(saved[2]["content"], "one line");
}

#[test]
fn clear_forgets_the_conversation() {
    let d = dir();
    let out = chat(
        d.path(),
        &["A.", "B."],
        &["--system", "S"],
        "Hi\n/clear\n/show\n/save c.json\nHi\n/stats\n",
    );
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stderr}");
    assert!(stdout.contains("Cleared the conversation."), "{stdout}");
    assert!(
        stdout.contains("context            0 tokens used"),
        "{stdout}"
    );
    assert!(stdout.contains("messages           0"), "{stdout}");
    // The system message stays.
    let saved: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(d.path().join("c.json")).unwrap()).unwrap();
    assert_eq!(
        saved,
        serde_json::json!([{"role": "system", "content": "S"}])
    );
    assert_eq!(stat(&stdout, "reused tokens"), vec![0]);
}

#[test]
fn bye_and_end_of_input_exit_with_status_0() {
    let d = dir();
    let out = chat(d.path(), &["A.", "B."], &[], "Hi\n/bye\nNot read\n");
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stderr}");
    assert_eq!(stdout, "A.\n");

    let out = chat(d.path(), &["A."], &[], "Hi");
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(text(&out).0, "A.\n");

    let out = chat(d.path(), &[], &[], "");
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(text(&out).0, "");
}

#[test]
fn unknown_commands_point_to_help() {
    let d = dir();
    let out = chat(d.path(), &["A."], &[], "/frobnicate now\n/help\nHi\n");
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stderr}");
    assert!(
        stderr.contains("error: unknown command /frobnicate; type /help for the list"),
        "{stderr}"
    );
    assert!(stdout.contains("/no_think"), "{stdout}");
    assert!(stdout.contains("\"\"\""), "{stdout}");
    assert!(stdout.ends_with("A.\n"), "{stdout}");
}

#[test]
fn old_turns_are_dropped_when_the_context_is_full() {
    let d = dir();
    let long = "word ".repeat(40);
    let out = chat(
        d.path(),
        &[&long, &long, &long, "Short."],
        &["--ctx", "640", "-n", "60"],
        "One\nTwo\nThree\nFour\n/save c.json\n",
    );
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stderr}");
    assert!(stdout.contains("\nShort.\n"), "{stdout}");
    assert!(stderr.contains("oldest messages were dropped"), "{stderr}");
    let saved: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(d.path().join("c.json")).unwrap()).unwrap();
    let saved = saved.as_array().unwrap();
    // The last turn is kept, the first is gone.
    assert_eq!(saved.last().unwrap()["content"], "Short.");
    assert_ne!(saved[0]["content"], "One");
}

#[test]
fn bad_flags_fail_before_the_chat_starts() {
    let d = dir();
    let out = chat(d.path(), &[], &["--temperature=-1"], "Hi\n");
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out).1.contains("temperature"));
    let out = chat(d.path(), &[], &["--load", "nope.json"], "");
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out).1.contains("reading nope.json"));
    let out = chat(d.path(), &[], &["--bogus"], "");
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn builtin_tools_run_in_each_turn() {
    let d = dir();
    let call =
        r#"<tool_call>{"name": "calculator", "arguments": {"expression": "6*7"}}</tool_call>"#;
    let out = chat(
        d.path(),
        &[call, "It is 42."],
        &["--builtin-tools", "calculator"],
        "What is 6*7?\n/save c.json\n",
    );
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stderr}");
    assert_eq!(stdout.lines().next(), Some("It is 42."), "{stdout}");
    assert!(stderr.contains("-> calculator("), "{stderr}");
    assert!(
        stderr.contains("<- {\"expression\":\"6*7\",\"result\":42}"),
        "{stderr}"
    );
    let saved: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(d.path().join("c.json")).unwrap()).unwrap();
    let roles: Vec<&str> = saved
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["role"].as_str().unwrap())
        .collect();
    assert_eq!(roles, ["user", "assistant", "tool", "assistant"]);
    assert_eq!(saved[3]["content"], "It is 42.");
}
