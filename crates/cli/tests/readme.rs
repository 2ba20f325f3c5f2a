//! The README's commands, run for real so the README cannot rot: every `smollm3` command in
//! its `sh` blocks runs against a fixture model (the 128k-vocabulary one, so the README's token
//! ids are real; the default model comes from a Hugging Face cache populated with that fixture,
//! offline), with the files it names created in a scratch directory, and must succeed.

use std::path::{Path, PathBuf};
use std::process::Command;

/// The default model's place in the cache (`smollm3_hub` defaults).
const DEFAULT_REPO_DIR: &str = "models--ggml-org--SmolLM3-3B-GGUF";
const DEFAULT_FILE: &str = "SmolLM3-Q4_K_M.gguf";
const COMMIT: &str = "0123456789abcdef0123456789abcdef01234567";

const STRETCH: &str = "--ctx 4096 --rope-scaling yarn --rope-scale 8";

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// Shell commands of the README's ```sh blocks, continuation lines joined, comments removed.
fn readme_commands() -> Vec<String> {
    let readme = std::fs::read_to_string(root().join("README.md")).unwrap();
    let mut commands = Vec::new();
    let mut in_sh = false;
    let mut pending = String::new();
    for line in readme.lines() {
        if line.starts_with("```") {
            in_sh = line.trim() == "```sh";
            continue;
        }
        if !in_sh {
            continue;
        }
        let code = strip_comment(line).trim_end().to_string();
        if let Some(head) = code.strip_suffix('\\') {
            pending.push_str(head);
            pending.push(' ');
            continue;
        }
        pending.push_str(&code);
        let command = std::mem::take(&mut pending).trim().to_string();
        if !command.is_empty() {
            commands.push(command);
        }
    }
    commands
}

/// Drops a `# comment` (a `#` after whitespace, outside quotes).
fn strip_comment(line: &str) -> &str {
    let mut quote = None;
    let mut prev_space = true;
    for (i, c) in line.char_indices() {
        match (quote, c) {
            (None, '"' | '\'') => quote = Some(c),
            (Some(q), c) if c == q => quote = None,
            (None, '#') if prev_space => return &line[..i],
            _ => {}
        }
        prev_space = c.is_whitespace();
    }
    line
}

/// Optional parts written `[--flag value]` in the README are left out.
fn without_optional(command: &str) -> String {
    let mut out = String::new();
    let mut depth = 0;
    for c in command.chars() {
        match c {
            '[' => depth += 1,
            ']' if depth > 0 => depth -= 1,
            _ if depth == 0 => out.push(c),
            _ => {}
        }
    }
    out
}

#[test]
fn readme_commands_run() {
    let scratch = tempfile::tempdir().unwrap();
    let dir = scratch.path();
    let fixture = root().join("fixtures/gguf/smollm3-vocab128k-q8_0.gguf");
    let model = fixture.display().to_string();

    // The default model, offline from the cache.
    let hf_home = dir.join("hf");
    let repo = hf_home.join("hub").join(DEFAULT_REPO_DIR);
    std::fs::create_dir_all(repo.join("snapshots").join(COMMIT)).unwrap();
    std::fs::copy(
        &fixture,
        repo.join("snapshots").join(COMMIT).join(DEFAULT_FILE),
    )
    .unwrap();
    std::fs::create_dir_all(repo.join("refs")).unwrap();
    std::fs::write(repo.join("refs/main"), COMMIT).unwrap();

    // Files the commands name.
    std::fs::write(
        dir.join("conv.json"),
        r#"[{"role": "user", "content": "Hello"}]"#,
    )
    .unwrap();
    std::fs::write(
        dir.join("tools.json"),
        r#"[{"type": "function", "function": {"name": "get_weather", "description": "Weather",
            "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}}]"#,
    )
    .unwrap();
    std::fs::write(
        dir.join("answer.txt"),
        "<tool_call>\n{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Paris\"}}\n</tool_call>",
    )
    .unwrap();
    let notes = dir.join("notes");
    std::fs::create_dir(&notes).unwrap();
    std::fs::write(notes.join("todo.txt"), "buy milk").unwrap();

    let bin = env!("CARGO_BIN_EXE_smollm3");
    let mut ran = 0;
    for command in readme_commands() {
        if !command.contains("smollm3 ") || command.starts_with("cargo ") {
            continue; // cargo build / xtask: covered by CI and xtask's own tests
        }
        let shell = without_optional(&command)
            .replace("./target/release/smollm3", bin)
            .replace("SmolLM3-3B-Q4_K_M.gguf", &model)
            .replace("M.gguf", &model)
            .replace("~/notes", &notes.display().to_string())
            // A bounded answer keeps the run short on the random fixture; YaRN stretches the
            // fixture's 512-token context so the tool definitions fit, as for a real model.
            .replace(" run ", &format!(" run -n 8 {STRETCH} "))
            .replace(" chat ", &format!(" chat --no-history {STRETCH} "));
        let out = Command::new("sh")
            .arg("-c")
            .arg(&shell)
            .current_dir(dir)
            .env("HF_HOME", &hf_home)
            .env("HF_HUB_OFFLINE", "1")
            .env_remove("HF_HUB_CACHE")
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "README command failed: {command}\n(ran: {shell})\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        ran += 1;
    }
    assert!(ran >= 12, "only {ran} README commands found");
}
