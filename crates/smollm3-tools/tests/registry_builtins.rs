//! The registry (validation, timeouts, failures) and the built-in tools.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{json, Map, Value};
use smollm3_tools::builtins::{self, Calculator, CurrentTime, ListFiles, ReadFile};
use smollm3_tools::{ParsedCall, Registry, Tool, ToolCall, ToolDefinition, ToolsError};

// ---------------------------------------------------------------------------------------
// helpers

struct TestTool {
    definition: ToolDefinition,
    behaviour: Behaviour,
}

#[derive(Clone, Copy)]
enum Behaviour {
    Echo,
    Sleep(Duration),
    Panic,
}

impl TestTool {
    fn arc(name: &str, parameters: Value, behaviour: Behaviour) -> Arc<dyn Tool> {
        Arc::new(TestTool {
            definition: ToolDefinition::new(name, "a test tool", parameters),
            behaviour,
        })
    }
}

impl Tool for TestTool {
    fn definition(&self) -> &ToolDefinition {
        &self.definition
    }

    fn call(&self, arguments: &Map<String, Value>) -> Result<Value, String> {
        match self.behaviour {
            Behaviour::Echo => Ok(Value::Object(arguments.clone())),
            Behaviour::Sleep(d) => {
                std::thread::sleep(d);
                Ok(json!("slept"))
            }
            Behaviour::Panic => panic!("the test tool panics on purpose"),
        }
    }
}

fn weather_schema() -> Value {
    json!({
        "type": "object",
        "properties": {
            "city": {"type": "string"},
            "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]}
        },
        "required": ["city", "unit"],
        "additionalProperties": false
    })
}

fn call(name: &str, arguments: Value) -> ParsedCall {
    let arguments = match arguments {
        Value::Object(m) => m,
        other => panic!("arguments must be an object, got {other}"),
    };
    ParsedCall::Ok {
        raw: String::new(),
        call: ToolCall {
            name: name.into(),
            arguments,
        },
    }
}

fn registry_with(tools: Vec<Arc<dyn Tool>>) -> Registry {
    let mut registry = Registry::new();
    for tool in tools {
        registry.register(tool).unwrap();
    }
    registry
}

fn weather_registry() -> Registry {
    registry_with(vec![
        TestTool::arc("get_weather", weather_schema(), Behaviour::Echo),
        TestTool::arc(
            "search",
            json!({"type": "object", "properties": {"q": {"type": "string"}}}),
            Behaviour::Echo,
        ),
    ])
}

fn run_err(registry: &Registry, parsed: &ParsedCall) -> String {
    match registry.run(parsed).result {
        Ok(v) => panic!("expected an error, got {v}"),
        Err(e) => e,
    }
}

fn run_ok(registry: &Registry, parsed: &ParsedCall) -> Value {
    match registry.run(parsed).result {
        Ok(v) => v,
        Err(e) => panic!("expected success, got {e}"),
    }
}

// ---------------------------------------------------------------------------------------
// registry

#[test]
fn registry_keeps_registration_order_and_default_timeout() {
    let registry = weather_registry();
    assert_eq!(registry.names(), ["get_weather", "search"]);
    let defs = registry.definitions();
    assert_eq!(defs.len(), 2);
    assert_eq!(defs[0].name, "get_weather");
    assert!(registry.get("search").is_some());
    assert!(registry.get("nope").is_none());
    assert!(!registry.is_empty());
    assert!(Registry::new().is_empty());
    assert_eq!(Registry::new().timeout(), Duration::from_secs(10));
    assert_eq!(Registry::default().timeout(), Duration::from_secs(10));
}

#[test]
fn valid_call_runs_and_keeps_arguments() {
    let registry = weather_registry();
    let parsed = call(
        "get_weather",
        json!({"city": "Copenhagen", "unit": "celsius"}),
    );
    let outcome = registry.run(&parsed);
    assert_eq!(outcome.name, "get_weather");
    assert_eq!(
        outcome.arguments.as_ref().map(|a| Value::Object(a.clone())),
        Some(json!({"city": "Copenhagen", "unit": "celsius"}))
    );
    assert_eq!(
        outcome.result,
        Ok(json!({"city": "Copenhagen", "unit": "celsius"}))
    );
}

#[test]
fn wrong_type_and_missing_required_are_listed_with_paths() {
    let registry = weather_registry();
    let err = run_err(&registry, &call("get_weather", json!({"city": 5})));
    assert_eq!(
        err,
        "invalid arguments for get_weather: /city: 5 is not of type \"string\"; \"unit\" is a \
         required property"
    );
}

#[test]
fn extra_property_is_refused_when_additional_properties_false() {
    let registry = weather_registry();
    let parsed = call(
        "get_weather",
        json!({"city": "Oslo", "unit": "celsius", "days": 3}),
    );
    let outcome = registry.run(&parsed);
    let err = outcome.result.unwrap_err();
    assert_eq!(
        err,
        "invalid arguments for get_weather: Additional properties are not allowed ('days' was \
         unexpected)"
    );
    assert!(outcome.arguments.is_some(), "arguments are kept");
}

#[test]
fn enum_violation_is_reported() {
    let registry = weather_registry();
    let err = run_err(
        &registry,
        &call("get_weather", json!({"city": "Oslo", "unit": "kelvin"})),
    );
    assert!(
        err.starts_with("invalid arguments for get_weather: /unit: "),
        "{err}"
    );
}

#[test]
fn unknown_tool_lists_available_tools() {
    let registry = weather_registry();
    let outcome = registry.run(&call("get_wether", json!({})));
    assert_eq!(outcome.name, "get_wether");
    assert_eq!(
        outcome.result,
        Err("unknown tool \"get_wether\"; available tools: get_weather, search".into())
    );
}

#[test]
fn malformed_call_becomes_an_error_outcome() {
    let registry = weather_registry();
    let outcome = registry.run(&ParsedCall::Malformed {
        raw: r#"{"name": "get_weather", "arguments": {"city": }"#.into(),
        error: "expected value at line 1 column 48".into(),
    });
    assert_eq!(outcome.name, "get_weather");
    assert_eq!(outcome.arguments, None);
    assert_eq!(
        outcome.result,
        Err("could not parse the tool call: expected value at line 1 column 48".into())
    );

    let outcome = registry.run(&ParsedCall::Malformed {
        raw: "}{".into(),
        error: "garbage".into(),
    });
    assert_eq!(outcome.name, "");
    assert!(outcome.result.is_err());
}

#[test]
fn slow_tool_times_out() {
    let mut registry = registry_with(vec![TestTool::arc(
        "slow",
        json!({"type": "object"}),
        Behaviour::Sleep(Duration::from_secs(2)),
    )]);
    registry.set_timeout(Duration::from_millis(100));
    assert_eq!(registry.timeout(), Duration::from_millis(100));
    let start = Instant::now();
    let outcome = registry.run(&call("slow", json!({})));
    assert!(
        start.elapsed() < Duration::from_secs(1),
        "run waited for the tool"
    );
    assert_eq!(
        outcome.result,
        Err("slow did not finish within 100 ms".into())
    );
}

#[test]
fn fast_tool_finishes_within_timeout() {
    let mut registry = registry_with(vec![TestTool::arc(
        "quick",
        json!({"type": "object"}),
        Behaviour::Sleep(Duration::from_millis(10)),
    )]);
    registry.set_timeout(Duration::from_secs(5));
    assert_eq!(run_ok(&registry, &call("quick", json!({}))), json!("slept"));
}

#[test]
fn panicking_tool_is_a_failure_not_a_crash() {
    let registry = registry_with(vec![TestTool::arc(
        "boom",
        json!({"type": "object"}),
        Behaviour::Panic,
    )]);
    let outcome = registry.run(&call("boom", json!({})));
    assert_eq!(outcome.result, Err("tool boom failed unexpectedly".into()));
    // The registry still works afterwards.
    assert!(registry.run(&call("boom", json!({}))).result.is_err());
}

#[test]
fn duplicate_registration_is_refused() {
    let mut registry = weather_registry();
    let err = registry
        .register(TestTool::arc(
            "search",
            json!({"type": "object"}),
            Behaviour::Echo,
        ))
        .unwrap_err();
    assert!(
        matches!(err, ToolsError::Duplicate(ref n) if n == "search"),
        "{err}"
    );
    assert_eq!(registry.names().len(), 2);
}

#[test]
fn invalid_schema_is_refused_naming_the_tool() {
    let mut registry = Registry::new();
    let err = registry
        .register(TestTool::arc(
            "bad",
            json!({"type": "object", "properties": {"x": {"type": "strin"}}}),
            Behaviour::Echo,
        ))
        .unwrap_err();
    match err {
        ToolsError::Definition(msg) => {
            assert!(msg.starts_with("bad: invalid parameters schema: "), "{msg}");
            assert!(msg.ends_with("(at /properties/x/type)"), "{msg}");
        }
        other => panic!("expected a definition error, got {other}"),
    }
    assert!(registry.is_empty());

    let err = registry
        .register(TestTool::arc(
            "bad2",
            json!({"type": "object", "required": "x"}),
            Behaviour::Echo,
        ))
        .unwrap_err();
    assert!(
        matches!(err, ToolsError::Definition(ref m) if m.starts_with("bad2: ")),
        "{err}"
    );
}

#[test]
fn message_content_of_an_error_outcome_is_json() {
    let registry = weather_registry();
    let outcome = registry.run(&call("nope", json!({})));
    let content: Value = serde_json::from_str(&outcome.to_message_content()).unwrap();
    assert!(content["error"]
        .as_str()
        .unwrap()
        .starts_with("unknown tool"));
}

// ---------------------------------------------------------------------------------------
// by_names

#[test]
fn by_names_builds_the_built_ins() {
    let dir = tempfile::tempdir().unwrap();
    let names: Vec<String> = ["calculator", "time", "files", "calculator"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    let tools = builtins::by_names(&names, Some(dir.path())).unwrap();
    let tool_names: Vec<&str> = tools.iter().map(|t| t.definition().name.as_str()).collect();
    assert_eq!(
        tool_names,
        ["calculator", "get_current_time", "list_files", "read_file"]
    );
    // All their schemas compile.
    let registry = registry_with(tools);
    assert_eq!(registry.names().len(), 4);
    assert_eq!(builtins::all_names(), ["calculator", "time", "files"]);
}

#[test]
fn by_names_errors() {
    let by_names_err = |names: &[&str], root: Option<&Path>| -> ToolsError {
        let names: Vec<String> = names.iter().map(|s| s.to_string()).collect();
        match builtins::by_names(&names, root) {
            Ok(_) => panic!("expected an error for {names:?}"),
            Err(e) => e,
        }
    };
    let err = by_names_err(&["files"], None);
    assert!(
        matches!(err, ToolsError::Definition(ref m) if m == "the files tool needs --files-root DIR"),
        "{err}"
    );
    let err = by_names_err(&["calculator", "weather"], None);
    assert!(
        matches!(err, ToolsError::Definition(ref m) if m.contains("\"weather\"") && m.contains("calculator, time, files")),
        "{err}"
    );
    let file = tempfile::NamedTempFile::new().unwrap();
    let err = by_names_err(&["files"], Some(file.path()));
    assert!(
        matches!(err, ToolsError::Definition(ref m) if m.contains("not a directory")),
        "{err}"
    );
    let err = by_names_err(&["files"], Some(Path::new("/no/such/dir/x")));
    assert!(matches!(err, ToolsError::Definition(_)), "{err}");
}

// ---------------------------------------------------------------------------------------
// calculator

fn calc(expression: &str) -> Result<Value, String> {
    let registry = registry_with(vec![Arc::new(Calculator::new())]);
    registry
        .run(&call("calculator", json!({"expression": expression})))
        .result
}

fn calc_result(expression: &str) -> Value {
    match calc(expression) {
        Ok(v) => {
            assert_eq!(v["expression"], expression);
            v["result"].clone()
        }
        Err(e) => panic!("{expression}: {e}"),
    }
}

#[test]
fn calculator_precedence_and_associativity() {
    assert_eq!(calc_result("2 + 3 * 4"), json!(14));
    assert_eq!(calc_result("(2 + 3) * 4"), json!(20));
    assert_eq!(calc_result("2 ** 3 ** 2"), json!(512));
    assert_eq!(calc_result("2 ^ 3 ^ 2"), json!(512));
    assert_eq!(calc_result("-2 ** 2"), json!(-4));
    assert_eq!(calc_result("10 - 2 - 3"), json!(5));
    assert_eq!(calc_result("8 / 4 / 2"), json!(1));
    assert_eq!(calc_result("7 / 2"), json!(3.5));
    assert_eq!(calc_result("17 % 5"), json!(2));
    assert_eq!(calc_result("1.5e2 + 2.5E-1"), json!(150.25));
    assert_eq!(calc_result("-(3 - 5)"), json!(2));
}

#[test]
fn calculator_functions_and_constants() {
    assert_eq!(calc_result("sqrt(144) + abs(-1)"), json!(13));
    assert_eq!(calc_result("max(1, 7, 3) - min(4, 2)"), json!(5));
    assert_eq!(calc_result("pow(2, 10)"), json!(1024));
    assert_eq!(calc_result("round(sqrt(2), 2)"), json!(1.41));
    assert_eq!(calc_result("floor(2.7) + ceil(2.1)"), json!(5));
    assert_eq!(calc_result("log10(1000) + log2(8) + ln(e)"), json!(7));
    assert_eq!(calc_result("exp(0) + cos(0) + sin(0) + tan(0)"), json!(2));
    assert_eq!(calc_result("atan(1) * 4"), json!(std::f64::consts::PI));
    assert_eq!(calc_result("asin(1) * 2"), json!(std::f64::consts::PI));
    assert_eq!(calc_result("acos(-1)"), json!(std::f64::consts::PI));
}

#[test]
fn calculator_errors() {
    assert_eq!(calc("1 / (2 - 2)"), Err("division by zero".into()));
    let err = calc("frobnicate(2)").unwrap_err();
    assert!(err.starts_with("unknown function \"frobnicate\""), "{err}");
    let err = calc("3 + ").unwrap_err();
    assert!(err.starts_with("syntax error at column 5"), "{err}");
    let err = calc("sqrt(-4)").unwrap_err();
    assert!(err.contains("sqrt"), "{err}");
    let err = calc("10 ** 1000").unwrap_err();
    assert!(err.contains("not finite"), "{err}");
    let err = calc(&"1 + ".repeat(300)).unwrap_err();
    assert!(err.contains("too long"), "{err}");
    let err = calc(&format!("{}1{}", "(".repeat(200), ")".repeat(200))).unwrap_err();
    assert!(err.contains("nested too deeply"), "{err}");
    let err = calc("import os").unwrap_err();
    assert!(err.starts_with("unknown name \"import\""), "{err}");
    let err = calc("__import__('os')").unwrap_err();
    assert!(err.contains("unexpected character"), "{err}");
}

#[test]
fn calculator_schema_requires_a_string_expression() {
    let registry = registry_with(vec![Arc::new(Calculator::new())]);
    let err = run_err(&registry, &call("calculator", json!({"expression": 5})));
    assert!(
        err.contains("/expression: 5 is not of type \"string\""),
        "{err}"
    );
    let err = run_err(&registry, &call("calculator", json!({})));
    assert!(
        err.contains("\"expression\" is a required property"),
        "{err}"
    );
}

// ---------------------------------------------------------------------------------------
// time

#[test]
fn time_with_a_fixed_clock_in_two_zones() {
    // 2026-11-23T19:51:07Z: Copenhagen is on winter time (+01:00).
    let tool = CurrentTime::at_unix_seconds(1_795_463_467).unwrap();
    let registry = registry_with(vec![Arc::new(tool)]);
    let out = run_ok(
        &registry,
        &call("get_current_time", json!({"timezone": "Europe/Copenhagen"})),
    );
    assert_eq!(
        out,
        json!({
            "timezone": "Europe/Copenhagen",
            "datetime": "2026-11-23T20:51:07+01:00",
            "date": "2026-11-23",
            "time": "20:51:07",
            "weekday": "Monday",
            "utc_offset": "+01:00"
        })
    );
    let out = run_ok(
        &registry,
        &call("get_current_time", json!({"timezone": "America/New_York"})),
    );
    assert_eq!(out["datetime"], "2026-11-23T14:51:07-05:00");
    assert_eq!(out["utc_offset"], "-05:00");
    assert_eq!(out["weekday"], "Monday");

    let out = run_ok(&registry, &call("get_current_time", json!({})));
    assert_eq!(out["timezone"], "UTC");
    assert_eq!(out["datetime"], "2026-11-23T19:51:07+00:00");
    assert_eq!(out["utc_offset"], "+00:00");
}

#[test]
fn time_in_summer_uses_the_dst_offset() {
    // 2026-07-15T10:00:00Z: Copenhagen on summer time (+02:00), New York on EDT (-04:00).
    let tool = CurrentTime::at_unix_seconds(1_784_109_600).unwrap();
    let cph = tool.report("Europe/Copenhagen").unwrap();
    assert_eq!(cph["datetime"], "2026-07-15T12:00:00+02:00");
    assert_eq!(cph["utc_offset"], "+02:00");
    assert_eq!(cph["weekday"], "Wednesday");
    let ny = tool.report("America/New_York").unwrap();
    assert_eq!(ny["datetime"], "2026-07-15T06:00:00-04:00");
    assert_eq!(ny["utc_offset"], "-04:00");
}

#[test]
fn time_unknown_zone_is_named() {
    let registry = registry_with(vec![Arc::new(CurrentTime::new())]);
    let err = run_err(
        &registry,
        &call("get_current_time", json!({"timezone": "Europe/Atlantis"})),
    );
    assert!(
        err.contains("unknown time zone \"Europe/Atlantis\""),
        "{err}"
    );
}

#[test]
fn time_with_the_real_clock_is_well_formed() {
    let out = CurrentTime::new().report("UTC").unwrap();
    let datetime = out["datetime"].as_str().unwrap();
    assert_eq!(
        datetime.len(),
        "2026-11-23T19:51:07+00:00".len(),
        "{datetime}"
    );
    assert!(datetime.ends_with("+00:00"));
}

// ---------------------------------------------------------------------------------------
// files

/// root/
///   a.txt        "hello\n"
///   b.bin        non-UTF-8 bytes
///   big.txt      100 KiB of 'x'
///   sub/
///     c.txt      "inner"
fn files_fixture() -> (tempfile::TempDir, Registry) {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    std::fs::write(root.join("a.txt"), "hello\n").unwrap();
    std::fs::write(root.join("b.bin"), [0xff, 0xfe, 0x00, 0x41]).unwrap();
    std::fs::write(root.join("big.txt"), "x".repeat(100 * 1024)).unwrap();
    std::fs::create_dir(root.join("sub")).unwrap();
    std::fs::write(root.join("sub").join("c.txt"), "inner").unwrap();
    let registry = registry_with(vec![
        Arc::new(ListFiles::new(root).unwrap()),
        Arc::new(ReadFile::new(root).unwrap()),
    ]);
    (dir, registry)
}

#[test]
fn files_list_root_and_subdirectory() {
    let (_dir, registry) = files_fixture();
    let out = run_ok(&registry, &call("list_files", json!({})));
    assert_eq!(
        out,
        json!({
            "path": ".",
            "entries": [
                {"name": "a.txt", "type": "file", "size": 6},
                {"name": "b.bin", "type": "file", "size": 4},
                {"name": "big.txt", "type": "file", "size": 102400},
                {"name": "sub", "type": "directory"}
            ]
        })
    );
    let out = run_ok(&registry, &call("list_files", json!({"path": "sub"})));
    assert_eq!(
        out,
        json!({"path": "sub", "entries": [{"name": "c.txt", "type": "file", "size": 5}]})
    );
    let err = run_err(&registry, &call("list_files", json!({"path": "a.txt"})));
    assert!(err.contains("is not a directory"), "{err}");
}

#[test]
fn files_read_text() {
    let (_dir, registry) = files_fixture();
    let out = run_ok(&registry, &call("read_file", json!({"path": "a.txt"})));
    assert_eq!(
        out,
        json!({"path": "a.txt", "size": 6, "truncated": false, "content": "hello\n"})
    );
    let out = run_ok(
        &registry,
        &call("read_file", json!({"path": "./sub/c.txt"})),
    );
    assert_eq!(out["content"], "inner");
    assert_eq!(out["path"], "sub/c.txt");
    let err = run_err(&registry, &call("read_file", json!({"path": "sub"})));
    assert!(err.contains("is a directory"), "{err}");
    let err = run_err(
        &registry,
        &call("read_file", json!({"path": "missing.txt"})),
    );
    assert!(err.contains("no such file or directory"), "{err}");
}

#[test]
fn files_read_is_truncated_at_64_kib_by_default() {
    let (_dir, registry) = files_fixture();
    let out = run_ok(&registry, &call("read_file", json!({"path": "big.txt"})));
    assert_eq!(out["truncated"], true);
    assert_eq!(out["size"], 102400);
    assert_eq!(out["content"].as_str().unwrap().len(), 64 * 1024);
    assert!(out["note"].as_str().unwrap().contains("truncated"));

    let out = run_ok(
        &registry,
        &call("read_file", json!({"path": "a.txt", "max_bytes": 3})),
    );
    assert_eq!(out["content"], "hel");
    assert_eq!(out["truncated"], true);

    let err = run_err(
        &registry,
        &call("read_file", json!({"path": "a.txt", "max_bytes": 0})),
    );
    assert!(
        err.starts_with("invalid arguments for read_file: /max_bytes"),
        "{err}"
    );
}

#[test]
fn files_truncation_does_not_split_a_character() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("u.txt"), "aé").unwrap(); // 'é' is 2 bytes
    let tool = ReadFile::new(dir.path()).unwrap();
    let mut args = Map::new();
    args.insert("path".into(), json!("u.txt"));
    args.insert("max_bytes".into(), json!(2));
    let out = tool.call(&args).unwrap();
    assert_eq!(out["content"], "a");
    assert_eq!(out["truncated"], true);
}

#[test]
fn files_binary_file_is_refused() {
    let (_dir, registry) = files_fixture();
    let err = run_err(&registry, &call("read_file", json!({"path": "b.bin"})));
    assert!(err.contains("binary file"), "{err}");
}

#[test]
fn files_traversal_and_absolute_paths_are_refused() {
    let (dir, registry) = files_fixture();
    let err = run_err(&registry, &call("read_file", json!({"path": "../x"})));
    assert!(err.contains("path escapes the files root"), "{err}");
    let err = run_err(
        &registry,
        &call("read_file", json!({"path": "sub/../../x"})),
    );
    assert!(err.contains("path escapes the files root"), "{err}");
    let err = run_err(&registry, &call("list_files", json!({"path": ".."})));
    assert!(err.contains("path escapes the files root"), "{err}");

    let absolute = dir.path().join("a.txt");
    let err = run_err(
        &registry,
        &call("read_file", json!({"path": absolute.to_str().unwrap()})),
    );
    assert!(err.contains("absolute paths are not allowed"), "{err}");
    let err = run_err(
        &registry,
        &call("read_file", json!({"path": "/etc/passwd"})),
    );
    assert!(err.contains("absolute paths are not allowed"), "{err}");
}

#[cfg(unix)]
#[test]
fn files_symlinks_are_not_followed() {
    use std::os::unix::fs::symlink;

    let outside = tempfile::tempdir().unwrap();
    std::fs::write(outside.path().join("secret.txt"), "secret").unwrap();
    let (dir, registry) = files_fixture();
    let root = dir.path();
    // A file symlink inside the root pointing outside it.
    symlink(outside.path().join("secret.txt"), root.join("link.txt")).unwrap();
    // A directory symlink used as a path component.
    symlink(outside.path(), root.join("linkdir")).unwrap();
    // Even a symlink to a file inside the root is refused.
    symlink(root.join("a.txt"), root.join("inner_link.txt")).unwrap();

    let err = run_err(&registry, &call("read_file", json!({"path": "link.txt"})));
    assert!(err.contains("symlinks are not followed"), "{err}");
    let err = run_err(
        &registry,
        &call("read_file", json!({"path": "linkdir/secret.txt"})),
    );
    assert!(err.contains("symlinks are not followed"), "{err}");
    let err = run_err(&registry, &call("list_files", json!({"path": "linkdir"})));
    assert!(err.contains("symlinks are not followed"), "{err}");
    let err = run_err(
        &registry,
        &call("read_file", json!({"path": "inner_link.txt"})),
    );
    assert!(err.contains("symlinks are not followed"), "{err}");

    // Listing shows symlinks as such, without following them.
    let out = run_ok(&registry, &call("list_files", json!({})));
    let entries = out["entries"].as_array().unwrap();
    let link = entries.iter().find(|e| e["name"] == "linkdir").unwrap();
    assert_eq!(link["type"], "symlink");
    assert!(link.get("size").is_none());
}

#[test]
fn files_root_is_canonicalized_and_must_be_a_directory() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("r")).unwrap();
    std::fs::write(dir.path().join("r").join("f.txt"), "ok").unwrap();
    // A root spelled with `..` still works.
    let spelled = dir.path().join("r").join("..").join("r");
    let root = builtins::FilesRoot::new(&spelled).unwrap();
    assert_eq!(
        root.path(),
        std::fs::canonicalize(dir.path().join("r")).unwrap()
    );
    let tool = ReadFile::with_root(root);
    let mut args = Map::new();
    args.insert("path".into(), json!("f.txt"));
    assert_eq!(tool.call(&args).unwrap()["content"], "ok");

    let err = ListFiles::new(&dir.path().join("r").join("f.txt"))
        .err()
        .unwrap();
    assert!(err.to_string().contains("not a directory"), "{err}");
}
