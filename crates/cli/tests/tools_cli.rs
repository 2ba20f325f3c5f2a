//! `smollm3 parse-tool-calls` and `smollm3 run` with tools. The tool loop runs with replies
//! played back (`--replay`, a hidden testing flag) so every call and result is exact.

mod common;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use common::{smollm3, tiny};
use serde_json::{json, Value};

fn with_stdin(args: &[&str], input: &str) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_smollm3"))
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // The process may exit before reading (a usage error): a closed pipe is fine.
    let _ = child.stdin.take().unwrap().write_all(input.as_bytes());
    child.wait_with_output().unwrap()
}

fn lines(out: &Output) -> Vec<Value> {
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{l:?}: {e}")))
        .collect()
}

fn write(dir: &Path, name: &str, content: &str) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, content).unwrap();
    p
}

const WEATHER_TOOLS: &str = r#"[{"type": "function", "function": {"name": "get_weather",
  "description": "Weather", "parameters": {"type": "object",
  "properties": {"city": {"type": "string"}, "unit": {"type": "string"}}, "required": ["city"]}}}]"#;

#[test]
fn parse_tool_calls_reads_a_tag_inside_a_string_as_text() {
    // Issue 16's example: the tag's text inside a JSON string argument.
    let text =
        r#"<tool_call>{"name": "search", "arguments": {"q": "rust <tool_call> tags"}}</tool_call>"#;
    let out = with_stdin(&["parse-tool-calls"], text);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let calls = lines(&out);
    assert_eq!(
        calls,
        [
            json!({"status": "ok", "call": {"name": "search", "arguments": {"q": "rust <tool_call> tags"}},
                "raw": text})
        ]
    );
}

#[test]
fn parse_tool_calls_prints_each_call() {
    let text = "Sure.\n<tool_call>\n{\"name\": \"a\", \"arguments\": {\"x\": 1}}\n</tool_call>\n\
                <tool_call>{\"name\": \"b\", \"arguments\": \"{\\\"y\\\": [true, null]}\"}</tool_call>";
    let out = with_stdin(&["parse-tool-calls"], text);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let calls = lines(&out);
    assert_eq!(calls.len(), 2);
    assert_eq!(calls[0]["status"], "ok");
    assert_eq!(
        calls[0]["call"],
        json!({"name": "a", "arguments": {"x": 1}})
    );
    assert_eq!(
        calls[1]["call"],
        json!({"name": "b", "arguments": {"y": [true, null]}})
    );
}

#[test]
fn parse_tool_calls_python_maps_positional_arguments() {
    let dir = tempfile::tempdir().unwrap();
    let tools = write(dir.path(), "tools.json", WEATHER_TOOLS);
    let tools = tools.display().to_string();
    let out = with_stdin(
        &["parse-tool-calls", "--format", "python", "--tools", &tools],
        "<code>get_weather('Paris', unit=\"celsius\")\nprint(get_weather(city='Rome'))</code>",
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let calls = lines(&out);
    assert_eq!(
        calls[0]["call"]["arguments"],
        json!({"city": "Paris", "unit": "celsius"})
    );
    assert_eq!(calls[1]["call"]["arguments"], json!({"city": "Rome"}));
}

#[test]
fn parse_tool_calls_reports_malformed_calls_and_fails() {
    let dir = tempfile::tempdir().unwrap();
    let tools = write(dir.path(), "tools.json", WEATHER_TOOLS);
    let tools = tools.display().to_string();
    let out = with_stdin(
        &["parse-tool-calls", "--format", "python", "--tools", &tools],
        "<code>import os\nos.system('rm -rf /')\nget_weather('Oslo')</code>",
    );
    assert_eq!(out.status.code(), Some(1));
    let calls = lines(&out);
    assert_eq!(calls.len(), 3);
    assert_eq!(calls[0]["status"], "malformed");
    assert_eq!(calls[1]["status"], "malformed");
    assert!(calls[1]["error"].as_str().unwrap().contains("os.system"));
    assert_eq!(calls[2]["status"], "ok");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("malformed"), "{stderr}");

    let truncated = with_stdin(&["parse-tool-calls"], "<tool_call>{\"name\": \"a\", \"argu");
    assert_eq!(truncated.status.code(), Some(1));
    assert!(lines(&truncated)[0]["error"]
        .as_str()
        .unwrap()
        .contains("unclosed"));

    let no_tools = with_stdin(
        &["parse-tool-calls", "--format", "python"],
        "<code>f()</code>",
    );
    assert_eq!(no_tools.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&no_tools.stderr).contains("--tools"));
}

fn replay(dir: &Path, replies: &[&str]) -> String {
    write(
        dir,
        "replies.json",
        &serde_json::to_string(replies).unwrap(),
    )
    .display()
    .to_string()
}

const CALC_CALL: &str =
    "<tool_call>\n{\"name\": \"calculator\", \"arguments\": {\"expression\": \"6*7\"}}\n</tool_call>";

#[test]
fn run_with_builtin_calculator_shows_call_result_and_answer() {
    let dir = tempfile::tempdir().unwrap();
    let replies = replay(dir.path(), &[CALC_CALL, "The answer is 42."]);
    let m = tiny();
    let args = [
        "run",
        "--model",
        &m,
        "--replay",
        &replies,
        "--builtin-tools",
        "calculator",
        "--no-think",
        "What is 6 times 7?",
    ];
    let out = smollm3(&args);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert_eq!(String::from_utf8_lossy(&out.stdout), "The answer is 42.\n");
    assert!(
        stderr.contains(r#"-> calculator({"expression":"6*7"})"#),
        "{stderr}"
    );
    assert!(stderr.contains("<- ") && stderr.contains("42"), "{stderr}");

    let mut json_args = args.to_vec();
    json_args.insert(1, "--json");
    let events = lines(&smollm3(&json_args));
    let types: Vec<&str> = events.iter().map(|e| e["type"].as_str().unwrap()).collect();
    let call = types.iter().position(|t| *t == "tool_call").unwrap();
    let result = types.iter().position(|t| *t == "tool_result").unwrap();
    assert!(call < result);
    assert_eq!(events[call]["call"]["call"]["name"], "calculator");
    assert_eq!(events[result]["outcome"]["result"]["Ok"]["result"], 42);
    let done = events.last().unwrap();
    assert_eq!(done["type"], "done");
    assert_eq!(done["finish_reason"], "stop");
    assert_eq!(done["rounds"], 2);
    assert_eq!(done["answer"], "The answer is 42.");
}

#[test]
fn run_with_external_tools_prints_the_calls_for_the_caller() {
    let dir = tempfile::tempdir().unwrap();
    let tools = write(dir.path(), "tools.json", WEATHER_TOOLS)
        .display()
        .to_string();
    let call = "<tool_call>\n{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Paris\"}}\n</tool_call>";
    let replies = replay(dir.path(), &[call]);
    let m = tiny();
    let out = smollm3(&[
        "run", "--model", &m, "--replay", &replies, "--tools", &tools, "Weather?",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let printed = lines(&out);
    assert_eq!(
        printed,
        vec![json!({"name": "get_weather", "arguments": {"city": "Paris"}})]
    );
}

#[test]
fn run_with_files_tool_reads_inside_the_root_only() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("notes");
    std::fs::create_dir(&root).unwrap();
    write(&root, "todo.txt", "buy milk");
    let read = |path: &str| {
        format!("<tool_call>\n{{\"name\": \"read_file\", \"arguments\": {{\"path\": \"{path}\"}}}}\n</tool_call>")
    };
    let (a, b) = (read("todo.txt"), read("../replies.json"));
    let replies = replay(dir.path(), &[&a, &b, "Done."]);
    let m = tiny();
    let root_arg = root.display().to_string();
    let out = smollm3(&[
        "run",
        "--model",
        &m,
        "--replay",
        &replies,
        "--builtin-tools",
        "files",
        "--files-root",
        &root_arg,
        "--json",
        "Read my notes",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let results: Vec<Value> = lines(&out)
        .into_iter()
        .filter(|e| e["type"] == "tool_result")
        .collect();
    assert_eq!(results.len(), 2);
    assert!(results[0]["content"].as_str().unwrap().contains("buy milk"));
    let refused = results[1]["outcome"]["result"]["Err"].as_str().unwrap();
    assert!(refused.contains(".."), "{refused}");
}

#[test]
fn bad_tool_flags_are_clear_errors() {
    let dir = tempfile::tempdir().unwrap();
    let bad_json = write(dir.path(), "bad.json", "[{\"type\": \"function\"")
        .display()
        .to_string();
    let m = tiny();
    let cases: &[(&[&str], &str)] = &[
        (
            &["run", "--model", &m, "--builtin-tools", "shell", "Hi"],
            "calculator",
        ),
        (
            &["run", "--model", &m, "--builtin-tools", "files", "Hi"],
            "--files-root",
        ),
        (
            &["run", "--model", &m, "--files-root", "/tmp", "Hi"],
            "--builtin-tools files",
        ),
        (
            &["run", "--model", &m, "--tools", &bad_json, "Hi"],
            "bad.json",
        ),
        (
            &["run", "--model", &m, "--tools", "/missing/tools.json", "Hi"],
            "/missing/tools.json",
        ),
    ];
    for (args, needle) in cases {
        let out = smollm3(args);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{args:?}: {stderr}");
        assert!(stderr.contains(needle), "{args:?}: {stderr}");
    }
}
