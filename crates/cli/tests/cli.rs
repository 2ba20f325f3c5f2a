//! The `smollm3` binary's test surface: `info`, `logits`, `greedy`, and clean failures.

mod common;

use std::path::{Path, PathBuf};

use common::{ok, ok_with_env, smollm3};
use serde_json::Value;

fn fixture(name: &str) -> PathBuf {
    let p = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../fixtures/gguf")
        .join(name);
    assert!(
        p.exists(),
        "{} is missing: run `cargo xtask gen-fixtures` first",
        p.display()
    );
    p
}

fn fails(args: &[&str]) -> String {
    let out = smollm3(args);
    assert!(!out.status.success(), "smollm3 {args:?} should fail");
    let err = String::from_utf8(out.stderr).unwrap();
    assert!(
        !err.contains("panicked"),
        "smollm3 {args:?} panicked: {err}"
    );
    assert!(err.starts_with("error:"), "unexpected stderr: {err}");
    err
}

fn temp(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("smollm3-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir.join(name)
}

#[test]
fn info_json_describes_the_fixture() {
    let m = fixture("smollm3-tiny-q4_k_m.gguf");
    let v: Value =
        serde_json::from_str(&ok(&["info", "--model", m.to_str().unwrap(), "--json"])).unwrap();
    assert_eq!(v["architecture"], "smollm3");
    assert_eq!(v["config"]["num_layers"], 8);
    assert_eq!(v["config"]["num_heads"], 8);
    assert_eq!(v["config"]["num_kv_heads"], 2);
    assert_eq!(v["config"]["nope_layers"], serde_json::json!([3, 7]));
    assert_eq!(v["config"]["tied_embeddings"], true);
    assert!(v["tensor_types"]["Q4K"].as_u64().unwrap() > 0);
    assert!(v["tensor_types"]["Q6K"].as_u64().unwrap() > 0);
    assert_eq!(v["tokenizer"]["model"], "gpt2");
    assert_eq!(v["tokenizer"]["pre"], "smaug-bpe");
    assert_eq!(v["tokenizer"]["eos"]["text"], "<|im_end|>");
    assert_eq!(v["tokenizer"]["chat_template"], true);
    let text = ok(&["info", "--model", m.to_str().unwrap()]);
    assert!(text.contains("NoPE layers   [3, 7]"), "{text}");
}

/// `smollm3 logits` on the q8_0 fixture, one parsed JSON object per output line.
fn logits_lines(extra: &[&str]) -> Vec<Value> {
    let m = fixture("smollm3-tiny-q8_0.gguf");
    let mut args = vec!["logits", "--model", m.to_str().unwrap()];
    args.extend(["--tokens", "5,17,300,42", "--top", "7"]);
    args.extend(extra);
    ok(&args)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

#[test]
fn logits_prints_one_sorted_line_per_position() {
    let lines = logits_lines(&[]);
    assert_eq!(lines.len(), 4);
    for (i, line) in lines.iter().enumerate() {
        assert_eq!(line["pos"], i);
        let top = line["top"].as_array().unwrap();
        assert_eq!(top.len(), 7);
        let logits: Vec<f64> = top.iter().map(|p| p[1].as_f64().unwrap()).collect();
        assert!(
            logits.windows(2).all(|w| w[0] >= w[1]),
            "not sorted: {logits:?}"
        );
    }
    // Feeding the tokens one by one through the cache gives the same ranking.
    let step = logits_lines(&["--step"]);
    for (a, b) in lines.iter().zip(&step) {
        assert_eq!(a["top"][0][0], b["top"][0][0]);
    }
    // So does the prompt in slices of 3 (`--ubatch-size`): positions 3.. attend to the cache.
    let sliced = logits_lines(&["--ubatch-size", "3"]);
    assert_eq!(sliced.len(), 4);
    for (a, b) in lines.iter().zip(&sliced) {
        assert_eq!(a["top"][0][0], b["top"][0][0]);
    }
}

/// Every kernel path this machine can run (forced with `SMOLLM3_KERNELS`) prints the same
/// logits for a prompt (the Q4_K/Q6_K prompt tiles) and the same greedy tokens (one-row
/// products in decode) on the Q4_K_M fixture: with the f32 KV cache the kernels keep candle's
/// bits on every path (the f16 cache's own kernels sum in their own order).
#[test]
fn every_kernel_path_gives_the_same_numbers() {
    let m = fixture("smollm3-tiny-q4_k_m.gguf");
    let m = m.to_str().unwrap();
    let tokens = "5,17,300,42,7,99,1000,3,250,64,12,8";
    let run = |path: &str, args: &[&str]| ok_with_env(args, &[("SMOLLM3_KERNELS", path)]);
    let exact = ["--kv-cache", "f32"];
    let logits = [
        "logits", "--model", m, "--tokens", tokens, "--top", "50", exact[0], exact[1],
    ];
    let greedy = [
        "greedy", "--model", m, "--tokens", tokens, "-n", "24", exact[0], exact[1],
    ];
    let version = ok(&["--version"]);
    let widest = run("", &logits);
    let widest_greedy = run("", &greedy);
    assert_eq!(widest.lines().count(), 12);
    for path in ["portable", "avx2"] {
        assert_eq!(run(path, &logits), widest, "{path} logits ({version})");
        assert_eq!(
            run(path, &greedy),
            widest_greedy,
            "{path} greedy ({version})"
        );
    }
}

#[test]
fn greedy_prints_n_token_ids_that_follow_the_logits() {
    let m = fixture("smollm3-tiny-f32.gguf");
    let m = m.to_str().unwrap();
    let ids: Vec<u32> = serde_json::from_str(&ok(&[
        "greedy", "--model", m, "--tokens", "1,2,3", "-n", "5",
    ]))
    .unwrap();
    assert_eq!(ids.len(), 5);
    // The first generated token is the argmax of the prompt's last position.
    let logits = ok(&["logits", "--model", m, "--tokens", "1,2,3", "--top", "1"]);
    let last: Value = serde_json::from_str(logits.lines().last().unwrap()).unwrap();
    assert_eq!(last["top"][0][0].as_u64().unwrap(), u64::from(ids[0]));
    // And the second is the argmax after appending the first.
    let with_first = format!("1,2,3,{}", ids[0]);
    let logits = ok(&[
        "logits",
        "--model",
        m,
        "--tokens",
        &with_first,
        "--top",
        "1",
    ]);
    let last: Value = serde_json::from_str(logits.lines().last().unwrap()).unwrap();
    assert_eq!(last["top"][0][0].as_u64().unwrap(), u64::from(ids[1]));
}

#[test]
fn bad_inputs_fail_with_a_named_error() {
    let m = fixture("smollm3-tiny-q8_0.gguf");
    let m = m.to_str().unwrap();

    let err = fails(&["logits", "--model", m, "--tokens", "1,999999"]);
    assert!(err.contains("token id 999999 is out of range"), "{err}");

    let err = fails(&["logits", "--model", m, "--tokens", "1,x"]);
    assert!(err.contains("invalid token id \"x\""), "{err}");

    let err = fails(&[
        "greedy", "--model", m, "--tokens", "1", "-n", "4", "--ctx", "100000",
    ]);
    assert!(err.contains("exceeds the model's limit of 1024"), "{err}");

    let err = fails(&[
        "greedy", "--model", m, "--tokens", "1,2,3", "-n", "4", "--ctx", "4",
    ]);
    assert!(err.contains("do not fit in a context of 4"), "{err}");

    let err = fails(&[
        "greedy",
        "--model",
        m,
        "--tokens",
        "1",
        "-n",
        "2",
        "--kv-cache",
        "q8",
    ]);
    assert!(err.contains("\"q8\" (expected f16 or f32)"), "{err}");

    let err = fails(&[
        "logits",
        "--model",
        m,
        "--tokens",
        "1",
        "--ubatch-size",
        "0",
    ]);
    assert!(err.contains("'--ubatch-size <N>'"), "{err}");

    let bytes = std::fs::read(m).unwrap();
    let cut = temp("cut.gguf");
    std::fs::write(&cut, &bytes[..bytes.len() / 3]).unwrap();
    let err = fails(&["logits", "--model", cut.to_str().unwrap(), "--tokens", "1"]);
    assert!(err.contains("truncated or corrupt"), "{err}");
    // `info` still shows what a truncated download holds, names the first tensor past its
    // end, and fails (one line on stderr even with RUST_BACKTRACE=1).
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_smollm3"))
        .args(["info", "--model", cut.to_str().unwrap()])
        .env("RUST_BACKTRACE", "1")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("architecture  smollm3") && stdout.contains("BROKEN"),
        "{stdout}"
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("needs bytes") && stderr.contains("the file ends at"),
        "{stderr}"
    );
    assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");

    let text = temp("notes.txt");
    std::fs::write(&text, "hello").unwrap();
    let err = fails(&["info", "--model", text.to_str().unwrap()]);
    assert!(err.contains("not a GGUF file"), "{err}");

    let err = fails(&["info", "--model", "/nonexistent/model.gguf"]);
    assert!(err.contains("/nonexistent/model.gguf"), "{err}");
}

#[test]
fn yarn_flags_change_the_logits_and_extend_the_context() {
    let m = fixture("smollm3-tiny-f32.gguf");
    let m = m.to_str().unwrap();
    let tokens = (1..40)
        .map(|i| (i * 7).to_string())
        .collect::<Vec<_>>()
        .join(",");
    let plain = ok(&["logits", "--model", m, "--tokens", &tokens, "--top", "3"]);
    let yarn_args = [
        "--rope-scaling",
        "yarn",
        "--rope-scale",
        "4",
        "--yarn-orig-ctx",
        "256",
    ];
    let mut args = vec!["logits", "--model", m, "--tokens", &tokens, "--top", "3"];
    args.extend(yarn_args);
    let yarn = ok(&args);
    assert_ne!(plain, yarn);
    // 4 x 256 = 1024 is within the file's own context; asking for more still fails clearly.
    let mut args = vec![
        "greedy", "--model", m, "--tokens", "1", "-n", "1", "--ctx", "1025",
    ];
    args.extend(yarn_args);
    let err = fails(&args);
    assert!(err.contains("1025"), "{err}");
    let err = fails(&[
        "logits",
        "--model",
        m,
        "--tokens",
        "1",
        "--rope-scaling",
        "yarn",
    ]);
    assert!(err.contains("--rope-scale"), "{err}");
}

#[test]
fn version_names_the_cpu_features_and_every_subcommand_has_examples() {
    let version = common::ok(&["--version"]);
    assert!(
        version.starts_with(&format!("smollm3 {}", env!("CARGO_PKG_VERSION"))),
        "{version}"
    );
    assert!(
        version.contains("cpu features") && version.contains("kernels"),
        "{version}"
    );
    // Our own kernels name the path they chose; forcing the portable one is seen there.
    assert!(version.contains("own kernels: "), "{version}");
    let portable = std::process::Command::new(env!("CARGO_BIN_EXE_smollm3"))
        .arg("--version")
        .env("SMOLLM3_KERNELS", "portable")
        .output()
        .unwrap();
    let portable = String::from_utf8_lossy(&portable.stdout);
    assert!(portable.contains("own kernels: portable"), "{portable}");
    for sub in [
        "run",
        "chat",
        "parse-tool-calls",
        "info",
        "logits",
        "greedy",
        "tokenize",
        "detokenize",
        "template",
    ] {
        let help = common::ok(&[sub, "--help"]);
        assert!(
            help.contains("Example"),
            "{sub} --help has no examples:\n{help}"
        );
    }
    // Usage errors exit with 2, as clap does, runtime errors with 1.
    assert_eq!(
        common::smollm3(&["run", "--no-such-flag"]).status.code(),
        Some(2)
    );
    assert_eq!(common::smollm3(&["nonsense"]).status.code(), Some(2));
}

#[test]
fn errors_stay_one_line_with_rust_backtrace_set() {
    // An unknown GGUF version makes candle build its error with a backtrace when
    // RUST_BACKTRACE is set (its `bail!`); the user still sees one `error:` line, from every
    // command that reads the file.
    let bad = temp("bad-version.gguf");
    let mut bytes = b"GGUF".to_vec();
    bytes.extend_from_slice(&99u32.to_le_bytes()); // no such version
    bytes.extend_from_slice(&[0; 60]);
    std::fs::write(&bad, &bytes).unwrap();
    let bad = bad.to_str().unwrap();
    for args in [
        vec!["info", "--model", bad],
        vec!["tokenize", "--model", bad, "--text", "hi"],
        vec!["run", "--model", bad, "hi"],
    ] {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_smollm3"))
            .args(&args)
            .env("RUST_BACKTRACE", "1")
            .env("RUST_LIB_BACKTRACE", "1")
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(1), "{args:?}");
        let err = String::from_utf8(out.stderr).unwrap();
        assert!(err.starts_with("error: "), "{args:?}: {err}");
        assert!(err.contains(bad), "{args:?} names the file: {err}");
        assert_eq!(
            err.lines().count(),
            1,
            "{args:?} printed more than one line:\n{err}"
        );
    }
    // `-v` asks for the whole story: the backtrace is printed.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_smollm3"))
        .args(["run", "-v", "--model", bad, "hi"])
        .env("RUST_BACKTRACE", "1")
        .output()
        .unwrap();
    let err = String::from_utf8(out.stderr).unwrap();
    assert!(err.lines().count() > 1, "{err}");
}
