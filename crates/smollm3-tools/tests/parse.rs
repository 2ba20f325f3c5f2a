//! Parsing SmolLM3's tool calls: exact cases, the malformed corpus under
//! `fixtures/tool_calls/malformed/`, and property tests (round trips, no panics).

use std::path::PathBuf;

use proptest::prelude::*;
use serde_json::{json, Map, Value};
use smollm3_tools::parse::{parse, parse_python, parse_xml};
use smollm3_tools::{ParsedCall, ToolDefinition, ToolFormat};

fn tools() -> Vec<ToolDefinition> {
    vec![
        ToolDefinition::new(
            "get_weather",
            "Current weather",
            json!({"type": "object", "properties": {
                "city": {"type": "string"}, "unit": {"type": "string"}}, "required": ["city"]}),
        ),
        ToolDefinition::new(
            "get_time",
            "Current time",
            json!({"type": "object", "properties": {"timezone": {"type": "string"}}}),
        ),
    ]
}

fn args(v: Value) -> Map<String, Value> {
    match v {
        Value::Object(m) => m,
        other => panic!("not an object: {other}"),
    }
}

/// The single call of `calls`, which must be Ok: (name, arguments, raw).
fn ok(calls: &[ParsedCall]) -> (&str, &Map<String, Value>, &str) {
    match calls {
        [ParsedCall::Ok { call, raw }] => (&call.name, &call.arguments, raw),
        other => panic!("expected one Ok call, got {other:#?}"),
    }
}

/// The error of the single call of `calls`, which must be Malformed.
fn malformed(calls: &[ParsedCall]) -> (&str, &str) {
    match calls {
        [ParsedCall::Malformed { raw, error }] => (raw, error),
        other => panic!("expected one Malformed call, got {other:#?}"),
    }
}

fn py(code: &str) -> Vec<ParsedCall> {
    parse_python(&format!("<code>{code}</code>"), &tools())
}

fn py_ok(code: &str) -> Map<String, Value> {
    let calls = py(code);
    ok(&calls).1.clone()
}

fn py_err(code: &str) -> String {
    let calls = py(code);
    malformed(&calls).1.to_string()
}

fn assert_py_err(code: &str, expected: &str) {
    let error = py_err(code);
    assert!(
        error.contains(expected),
        "{code}: error {error:?} does not contain {expected:?}"
    );
}

fn xml_err(inner: &str) -> String {
    let calls = parse_xml(&format!("<tool_call>{inner}</tool_call>"));
    malformed(&calls).1.to_string()
}

fn assert_xml_err(inner: &str, expected: &str) {
    let error = xml_err(inner);
    assert!(
        error.contains(expected),
        "{inner}: error {error:?} does not contain {expected:?}"
    );
}

// ---------------------------------------------------------------------------------------
// XML

#[test]
fn xml_spec_example() {
    let text =
        "<tool_call>\n{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Copenhagen\"}}\n</tool_call>";
    let calls = parse_xml(text);
    let (name, arguments, raw) = ok(&calls);
    assert_eq!(name, "get_weather");
    assert_eq!(*arguments, args(json!({"city": "Copenhagen"})));
    assert_eq!(raw, text);
    assert_eq!(parse(text, ToolFormat::Xml, &[]), calls);
}

#[test]
fn xml_two_calls_with_text_around() {
    let text = "<think>\nTwo cities.\n</think>\nChecking both.\n<tool_call>\n\
                {\"name\": \"get_weather\", \"arguments\": {\"city\": \"Paris\"}}\n</tool_call>\n\
                <tool_call>{\"name\": \"get_time\", \"arguments\": {\"timezone\": \"UTC\"}}</tool_call>\n\
                Done.";
    let calls = parse_xml(text);
    assert_eq!(calls.len(), 2);
    assert_eq!(ok(&calls[..1]).0, "get_weather");
    assert_eq!(
        ok(&calls[..1]).2,
        "<tool_call>\n{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Paris\"}}\n</tool_call>"
    );
    assert_eq!(ok(&calls[1..]).0, "get_time");
    assert_eq!(*ok(&calls[1..]).1, args(json!({"timezone": "UTC"})));
}

#[test]
fn xml_no_calls() {
    assert!(parse_xml("The weather in Paris is sunny.").is_empty());
    assert!(parse_xml("").is_empty());
    assert!(parse_xml("stray </tool_call> closing tag").is_empty());
}

#[test]
fn xml_argument_order_is_preserved() {
    let text = r#"<tool_call>{"name": "f", "arguments": {"z": 1, "a": 2, "m": {"y": 1, "b": 2}}}</tool_call>"#;
    let calls = parse_xml(text);
    let (_, arguments, _) = ok(&calls);
    assert_eq!(arguments.keys().collect::<Vec<_>>(), ["z", "a", "m"]);
    assert_eq!(
        serde_json::to_string(arguments).unwrap(),
        r#"{"z":1,"a":2,"m":{"y":1,"b":2}}"#
    );
}

#[test]
fn xml_arguments_as_string() {
    let text = r#"<tool_call>{"name": "get_weather", "arguments": "{\"city\": \"Copenhagen\", \"unit\": \"celsius\"}"}</tool_call>"#;
    let calls = parse_xml(text);
    let (_, arguments, _) = ok(&calls);
    assert_eq!(
        *arguments,
        args(json!({"city": "Copenhagen", "unit": "celsius"}))
    );
}

#[test]
fn xml_tolerated_argument_forms() {
    for (inner, expected) in [
        (r#"{"name": "get_time"}"#, json!({})),
        (r#"{"name": "get_time", "arguments": null}"#, json!({})),
        (r#"{"name": "get_time", "arguments": ""}"#, json!({})),
        (r#"{"name": "get_time", "arguments": {}}"#, json!({})),
        (
            r#"{"name": "get_time", "parameters": {"timezone": "UTC"}}"#,
            json!({"timezone": "UTC"}),
        ),
        (
            r#"{"name": "get_time", "parameters": "{\"timezone\": \"UTC\"}"}"#,
            json!({"timezone": "UTC"}),
        ),
        (
            "\n\n   {\"arguments\": {\"timezone\": \"UTC\"},\n \"name\": \"get_time\"}  \n",
            json!({"timezone": "UTC"}),
        ),
    ] {
        let calls = parse_xml(&format!("<tool_call>{inner}</tool_call>"));
        let (name, arguments, _) = ok(&calls);
        assert_eq!(name, "get_time", "{inner}");
        assert_eq!(*arguments, args(expected), "{inner}");
    }
}

#[test]
fn xml_rejections() {
    assert_xml_err("", "empty <tool_call>");
    assert_xml_err("\n  \n", "empty <tool_call>");
    assert_xml_err(
        "\n{\"name\": \"f\", \"arguments\": {\"a\": }}\n",
        "invalid JSON inside <tool_call>: expected value at line 2 column 34",
    );
    assert_xml_err("[1, 2]", "got an array");
    assert_xml_err("\"get_time\"", "got a string");
    assert_xml_err(r#"{"arguments": {}}"#, "missing \"name\"");
    assert_xml_err(
        r#"{"name": 3}"#,
        "\"name\" must be a string, got a number (3)",
    );
    assert_xml_err(r#"{"name": null}"#, "\"name\" must be a string, got null");
    assert_xml_err(r#"{"name": "  "}"#, "empty \"name\"");
    assert_xml_err(
        r#"{"name": "f", "arguments": [1]}"#,
        "\"arguments\" must be a JSON object, got an array",
    );
    assert_xml_err(
        r#"{"name": "f", "arguments": 5}"#,
        "\"arguments\" must be a JSON object, got a number (5)",
    );
    assert_xml_err(
        r#"{"name": "f", "parameters": true}"#,
        "\"parameters\" must be a JSON object, got a boolean (true)",
    );
    assert_xml_err(
        r#"{"name": "f", "arguments": "[1, 2]"}"#,
        "\"arguments\" is a string holding an array, not a JSON object",
    );
    assert_xml_err(
        r#"{"name": "f", "arguments": "{\"a\": 1"}"#,
        "\"arguments\" is a string that is not a JSON object: invalid JSON: EOF while parsing",
    );
    assert_xml_err(
        r#"{"name": "f", "arguments": {}, "parameters": {}}"#,
        "both \"arguments\" and \"parameters\" given",
    );
    assert_xml_err(
        r#"{"name": "f", "arguments": {}, "id": "call_1"}"#,
        "unexpected key \"id\"",
    );
    assert_xml_err(
        r#"{"name": "f", "arguments": {}}}"#,
        "trailing text after the JSON object inside <tool_call>: }",
    );
    assert_xml_err(
        r#"{"name": "f", "arguments": {}} and then some"#,
        "trailing text after the JSON object inside <tool_call>: and then some",
    );
}

#[test]
fn xml_truncated_call_keeps_raw_text() {
    let text = "Sure.\n<tool_call>\n{\"name\": \"get_weather\", \"arguments\": {\"ci";
    let calls = parse_xml(text);
    let (raw, error) = malformed(&calls);
    assert_eq!(
        raw,
        "<tool_call>\n{\"name\": \"get_weather\", \"arguments\": {\"ci"
    );
    assert_eq!(
        error,
        "unclosed <tool_call>: no </tool_call> before the end of the output (truncated?)"
    );
    // Even when the JSON itself is complete.
    let calls = parse_xml("<tool_call>{\"name\": \"get_time\"}");
    assert!(malformed(&calls).1.starts_with("unclosed <tool_call>"));
}

#[test]
fn xml_good_call_after_a_bad_one() {
    let text = "<tool_call>{oops}</tool_call><tool_call>{\"name\": \"get_time\"}</tool_call>";
    let calls = parse_xml(text);
    assert_eq!(calls.len(), 2);
    assert!(malformed(&calls[..1]).1.contains("invalid JSON"));
    assert_eq!(malformed(&calls[..1]).0, "<tool_call>{oops}</tool_call>");
    assert_eq!(ok(&calls[1..]).0, "get_time");
}

#[test]
fn xml_deep_nesting_is_an_error_not_a_crash() {
    let deep = format!(
        "{{\"name\": \"f\", \"arguments\": {{\"a\": {}}}}}",
        "[".repeat(100_000)
    );
    assert_xml_err(&deep, "recursion limit exceeded");
}

// ---------------------------------------------------------------------------------------
// Python

#[test]
fn python_spec_example() {
    let text = "<code>get_weather(city=\"Copenhagen\")</code>";
    let calls = parse_python(text, &tools());
    let (name, arguments, raw) = ok(&calls);
    assert_eq!(name, "get_weather");
    assert_eq!(*arguments, args(json!({"city": "Copenhagen"})));
    assert_eq!(raw, "get_weather(city=\"Copenhagen\")");
    assert_eq!(parse(text, ToolFormat::Python, &tools()), calls);
}

#[test]
fn python_no_calls() {
    assert!(parse_python("The weather is sunny.", &tools()).is_empty());
    assert!(parse_python("", &tools()).is_empty());
}

#[test]
fn python_two_calls_and_statement_separators() {
    let text = "Let me check.\n<code>\n# first the weather\n\nget_weather(city='Paris')  # Paris\n\
                get_time(timezone=\"Europe/Paris\"); get_time(\"UTC\")\n</code>\nthen\n\
                <code>get_weather(\n    city=\"Rome\",\n    unit=\"celsius\",\n)</code>";
    let calls = parse_python(text, &tools());
    assert_eq!(calls.len(), 4, "{calls:#?}");
    let (name, a, raw) = ok(&calls[..1]);
    assert_eq!((name, raw), ("get_weather", "get_weather(city='Paris')"));
    assert_eq!(*a, args(json!({"city": "Paris"})));
    assert_eq!(
        *ok(&calls[1..2]).1,
        args(json!({"timezone": "Europe/Paris"}))
    );
    assert_eq!(ok(&calls[2..3]).2, "get_time(\"UTC\")");
    assert_eq!(*ok(&calls[2..3]).1, args(json!({"timezone": "UTC"})));
    assert_eq!(
        *ok(&calls[3..]).1,
        args(json!({"city": "Rome", "unit": "celsius"}))
    );
    assert_eq!(
        ok(&calls[3..]).2,
        "get_weather(\n    city=\"Rome\",\n    unit=\"celsius\",\n)"
    );
}

#[test]
fn python_positional_arguments_follow_the_schema_order() {
    let a = py_ok("get_weather('Paris', 'celsius')");
    assert_eq!(a, args(json!({"city": "Paris", "unit": "celsius"})));
    assert_eq!(a.keys().collect::<Vec<_>>(), ["city", "unit"]);
    let a = py_ok("get_weather('Paris', unit='celsius')");
    assert_eq!(a, args(json!({"city": "Paris", "unit": "celsius"})));
    let a = py_ok("get_weather(unit='celsius', city='Paris')");
    assert_eq!(a.keys().collect::<Vec<_>>(), ["unit", "city"]);
    assert_eq!(py_ok("get_time()"), Map::new());
    assert_eq!(
        py_ok("get_time(timezone='UTC',)"),
        args(json!({"timezone": "UTC"}))
    );
}

#[test]
fn python_print_wrapper_is_the_call() {
    let calls = py("print(get_weather(city=\"Paris\"))");
    let (name, a, raw) = ok(&calls);
    assert_eq!(name, "get_weather");
    assert_eq!(*a, args(json!({"city": "Paris"})));
    assert_eq!(raw, "print(get_weather(city=\"Paris\"))");
    assert_eq!(py_ok("print( get_time() , )"), Map::new());
    assert_py_err(
        "print(\"hello\")",
        "print(...) is only accepted around a single tool call, found a string literal",
    );
    assert_py_err(
        "print(weather)",
        "print(...) is only accepted around a single tool call, found `weather`",
    );
    assert_py_err(
        "print(get_time(), get_time())",
        "print(...) must contain exactly one tool call",
    );
    assert_py_err("print(print(get_time()))", "unknown tool \"print\"");
    // A tool named `print` is just a tool.
    let echo = [ToolDefinition::new(
        "print",
        "",
        json!({"type": "object", "properties": {"text": {}}}),
    )];
    let calls = parse_python("<code>print('hi')</code>", &echo);
    assert_eq!(*ok(&calls).1, args(json!({"text": "hi"})));
}

#[test]
fn python_literals() {
    let a = py_ok(
        r#"get_weather(city=[
            'single', "double", '''triple
line''', """tri"ple""", 'esc\n\t\\\'\"\x41\u00e9\U0001F600\101', r'raw\n\'', R"C:\dir",
            u'unicode', 'adj' "acent"
            'concat', "ünï©ødé 😀",
            0, -7, +3, 1_000_000, 0xFF, 0o17, 0b1010, -9223372036854775808, 18446744073709551615,
            1.5, -2.0, 1e3, 2.5e-3, .5, 5., 1_0.2_5, -0.0,
            True, False, None,
            (), (1,), (1, 2,), ((1)), [], [[]], {}, {'a': {"b": [1, (2, 3)]}, 'c': None,},
        ])"#,
    );
    let expected = json!([
        "single", "double", "triple\nline", "tri\"ple", "esc\n\t\\'\"Aé😀A", "raw\\n\\'",
        "C:\\dir", "unicode", "adjacentconcat", "ünï©ødé 😀",
        0, -7, 3, 1_000_000, 255, 15, 10, i64::MIN, u64::MAX,
        1.5, -2.0, 1000.0, 0.0025, 0.5, 5.0, 10.25, -0.0,
        true, false, null,
        [], [1], [1, 2], 1, [], [[]], {}, {"a": {"b": [1, [2, 3]]}, "c": null}
    ]);
    assert_eq!(a, args(json!({ "city": expected })));
    // Ints stay ints, floats stay floats.
    let Value::Array(items) = &a["city"] else {
        panic!()
    };
    assert!(items[10].is_i64() && items[20].is_f64() && items[21].is_f64());
}

#[test]
fn python_string_edge_cases() {
    assert_eq!(py_ok(r"get_time('\d\w')")["timezone"], json!("\\d\\w"));
    assert_eq!(py_ok("get_time('a\\\nb')")["timezone"], json!("ab"));
    assert_eq!(
        py_ok("get_time(\"\"\"x\n\ny\"\"\")")["timezone"],
        json!("x\n\ny")
    );
    assert_eq!(py_ok("get_time('</code')")["timezone"], json!("</code"));
    assert_eq!(
        py_ok("get_time('#not a comment')")["timezone"],
        json!("#not a comment")
    );
    assert_py_err(r"get_time('\ud83d')", "not a Unicode scalar value");
    assert_py_err(r"get_time('\x4g')", "invalid \\x escape");
    assert_py_err(
        r"get_time('\N{DASH}')",
        "\\N{...} escapes are not supported",
    );
    assert_py_err("get_time(b'UTC')", "bytes literals are not supported");
    assert_py_err("get_time(F'{tz}')", "f-strings are not allowed");
    assert_py_err("get_time(rf'{tz}')", "f-strings are not allowed");
    assert_py_err("get_time('UTC)", "unterminated string literal");
    assert_py_err("get_time('''UTC)", "unterminated string literal");
}

#[test]
fn python_number_edge_cases() {
    assert_py_err("get_time(007)", "leading zeros in the integer literal 007");
    assert_py_err("get_time(18446744073709551616)", "too large");
    assert_py_err("get_time(-9223372036854775809)", "too large");
    assert_py_err("get_time(1e400)", "out of range");
    assert_py_err("get_time(1j)", "complex number 1j is not supported");
    assert_py_err("get_time(1__0)", "invalid number literal");
    assert_py_err("get_time(--1)", "unary `-` is only allowed before a number");
    assert_py_err(
        "get_time(-'a')",
        "unary `-` is only allowed before a number",
    );
    assert_py_err("get_time(inf)", "variable `inf`");
    assert_py_err(
        "get_time(float('nan'))",
        "calls inside arguments are not allowed",
    );
}

#[test]
fn python_tool_names_with_dots_and_dashes() {
    let defs = [
        ToolDefinition::new(
            "web.search",
            "",
            json!({"type": "object", "properties": {"q": {}}}),
        ),
        ToolDefinition::new("get-time", "", json!({"type": "object", "properties": {}})),
    ];
    let calls = parse_python(
        "<code>web.search(q='rust')\nget-time()\nweb.fetch('x')\nget - time()</code>",
        &defs,
    );
    assert_eq!(calls.len(), 4);
    assert_eq!(ok(&calls[..1]).0, "web.search");
    assert_eq!(*ok(&calls[..1]).1, args(json!({"q": "rust"})));
    assert_eq!(ok(&calls[1..2]).0, "get-time");
    assert!(malformed(&calls[2..3])
        .1
        .contains("attribute call `web.fetch(...)`"));
    assert!(malformed(&calls[3..])
        .1
        .contains("expected `(` after `get`, found `-`"));
}

#[test]
fn python_markdown_fence_is_tolerated() {
    let calls = parse_python(
        "<code>\n```python\nget_weather(city=\"Paris\")\n```\n</code>",
        &tools(),
    );
    assert_eq!(*ok(&calls).1, args(json!({"city": "Paris"})));
}

#[test]
fn python_good_and_bad_statements_in_one_span() {
    let text = "<code>\nimport os\nget_weather(city=\"Paris\")\nx = get_time()\n\
                get_weather(city=city)\nget_time(timezone=\"UTC\")\n</code>";
    let calls = parse_python(text, &tools());
    assert_eq!(calls.len(), 5, "{calls:#?}");
    assert_eq!(
        malformed(&calls[..1]),
        (
            "import os",
            "import statements are not allowed (the tools are already available: call them \
             directly)"
        )
    );
    assert_eq!(ok(&calls[1..2]).0, "get_weather");
    assert_eq!(malformed(&calls[2..3]).0, "x = get_time()");
    assert!(malformed(&calls[2..3]).1.contains("assignment to `x`"));
    assert_eq!(malformed(&calls[3..4]).0, "get_weather(city=city)");
    assert_eq!(*ok(&calls[4..]).1, args(json!({"timezone": "UTC"})));
}

#[test]
fn python_rejections() {
    for (code, expected) in [
        ("x = get_time()", "assignment to `x` (`=`) is not allowed"),
        (
            "a, b = get_time(), get_time()",
            "assignment (`=`) is not allowed",
        ),
        ("x += get_time()", "assignment to `x` (`+=`) is not allowed"),
        ("x: str = get_time()", "assignment (`=`) is not allowed"),
        (
            "os.system('ls')",
            "attribute call `os.system(...)` is not allowed",
        ),
        (
            "subprocess.run(['ls'])",
            "attribute call `subprocess.run(...)`",
        ),
        ("get_time().strip()", "unexpected `.` after the call"),
        ("get_time() + get_time()", "unexpected `+` after the call"),
        ("get_time()()", "unexpected `(` after the call"),
        (
            "get_weather(city=x)",
            "variable `x` is not allowed as an argument",
        ),
        (
            "get_weather(city)",
            "variable `city` is not allowed as an argument",
        ),
        (
            "get_weather(city=os.environ)",
            "attribute access (`os.`) is not allowed",
        ),
        (
            "get_weather(city=input())",
            "calls inside arguments are not allowed",
        ),
        (
            "get_weather(1+2)",
            "expressions are not allowed in arguments (found `+` after a literal)",
        ),
        (
            "get_weather('a' * 3)",
            "expressions are not allowed in arguments (found `*`",
        ),
        (
            "get_weather('a'.upper())",
            "expressions are not allowed in arguments (found `.`",
        ),
        (
            "get_weather(['a'][0])",
            "expressions are not allowed in arguments (found `[`",
        ),
        ("get_weather(1 == 1)", "found `==`"),
        (
            "get_weather(1 if True else 2)",
            "conditional expressions are not allowed",
        ),
        (
            "get_weather([c for c in 'ab'])",
            "comprehensions are not allowed",
        ),
        ("get_weather(True and False)", "found `and`"),
        (
            "get_weather(lambda: 1)",
            "lambda expressions are not allowed",
        ),
        (
            "get_weather(city=lambda: 1)",
            "lambda expressions are not allowed",
        ),
        ("lambda: get_time()", "lambda expressions are not allowed"),
        ("import os", "import statements are not allowed"),
        ("from os import system", "import statements are not allowed"),
        ("return get_time()", "`return` statements are not allowed"),
        ("await get_time()", "`await` statements are not allowed"),
        ("if True: get_time()", "`if` statements are not allowed"),
        ("def f():\n    get_time()", "`def` blocks are not allowed"),
        (
            "with open('x') as f:\n  get_time()",
            "`with` blocks are not allowed",
        ),
        (
            "search(q='x')",
            "unknown tool \"search\" (available: get_weather, get_time)",
        ),
        ("exec('get_time()')", "unknown tool \"exec\""),
        ("eval('1')", "unknown tool \"eval\""),
        ("__import__('os')", "unknown tool \"__import__\""),
        ("get_weather(**kw)", "**kwargs unpacking is not allowed"),
        ("get_weather(*a)", "*args unpacking is not allowed"),
        ("get_weather(city=[*a])", "*args unpacking is not allowed"),
        (
            "get_weather(city={**a})",
            "**kwargs unpacking is not allowed",
        ),
        ("get_weather(f'x')", "f-strings are not allowed"),
        (
            "get_weather(city={'a', 'b'})",
            "set literals are not supported",
        ),
        (
            "get_weather(city={1: 'a'})",
            "dict keys must be strings, found 1",
        ),
        (
            "get_weather(city={None: 'a'})",
            "dict keys must be strings, found None",
        ),
        (
            "get_weather(city={(1, 2): 'a'})",
            "dict keys must be strings, found a tuple",
        ),
        (
            "get_weather(city=...)",
            "expected a literal argument, found `...`",
        ),
        (
            "get_weather(city='a' 'b' 1)",
            "expected `,` or `)`, found a number (missing comma?)",
        ),
        (
            "get_weather(city='Paris', 'celsius')",
            "positional argument follows keyword argument",
        ),
        (
            "get_weather(city='a', city='b')",
            "keyword argument \"city\" given twice",
        ),
        (
            "get_weather('a', city='b')",
            "get_weather got multiple values for argument \"city\"",
        ),
        (
            "get_weather('a', 'b', 'c')",
            "get_weather takes at most 2 positional arguments (3 given)",
        ),
        (
            "get_time('a', 'b')",
            "get_time takes at most 1 positional argument (2 given)",
        ),
        (
            "get_weather(city='Paris'",
            "unclosed `(` of get_weather(...): expected `)`",
        ),
        (
            "get_weather(city=['Paris'",
            "unclosed bracket): expected `,` or `]`",
        ),
        (
            "get_weather(city={'a': 1",
            "unclosed bracket): expected `,` or `}`",
        ),
        (
            "get_weather(city=['Paris',",
            "unclosed bracket: expected `]`",
        ),
        ("get_weather(city={", "unclosed bracket: expected `}`"),
        (
            "get_weather(city='Paris']",
            "expected `,` or `)`, found `]`",
        ),
        ("get_weather", "`get_weather` alone is not a tool call"),
        (
            "get_weather 'Paris'",
            "expected `(` after `get_weather`, found a string literal",
        ),
        (
            "'get_weather'",
            "expected a tool call like get_weather(city=\"Paris\"), found a string literal",
        ),
        ("42", "found a number"),
        ("$ get_time()", "unexpected character '$'"),
        ("get_time() \\ x", "unexpected `\\` outside a string"),
        ("get_time(`x`)", "unexpected character '`'"),
        ("get_time() ?", "unexpected character '?'"),
        ("get_time ?", "unexpected character '?'"),
        ("print(?)", "unexpected character '?'"),
        ("print(get_time() ?)", "unexpected character '?'"),
    ] {
        assert_py_err(code, expected);
    }
}

#[test]
fn python_unknown_tool_without_tools() {
    let calls = parse_python("<code>get_time()</code>", &[]);
    assert_eq!(
        malformed(&calls).1,
        "unknown tool \"get_time\" (available: none)"
    );
}

#[test]
fn python_block_takes_its_body() {
    // The body of a rejected block is not run on its own.
    let calls = py("for c in ['Paris']:\n    get_weather(c)\n    get_time()\nget_time()");
    assert_eq!(calls.len(), 2, "{calls:#?}");
    assert_eq!(
        malformed(&calls[..1]).0,
        "for c in ['Paris']:\n    get_weather(c)\n    get_time()"
    );
    assert!(malformed(&calls[..1])
        .1
        .contains("`for` blocks are not allowed"));
    assert_eq!(ok(&calls[1..]).0, "get_time");
}

#[test]
fn python_empty_span_and_truncation() {
    let calls = parse_python("<code>\n\n# nothing\n</code>", &tools());
    assert_eq!(
        malformed(&calls),
        (
            "<code>\n\n# nothing\n</code>",
            "no tool call inside <code>...</code>"
        )
    );
    let calls = parse_python("ok <code>get_weather(city='Pa", &tools());
    assert_eq!(
        malformed(&calls),
        (
            "<code>get_weather(city='Pa",
            "unclosed <code>: no </code> before the end of the output (truncated?)"
        )
    );
}

#[test]
fn python_deep_nesting_is_an_error_not_a_crash() {
    let ok_depth = format!("get_time({}{})", "[".repeat(64), "]".repeat(64));
    assert!(matches!(py(&ok_depth).as_slice(), [ParsedCall::Ok { .. }]));
    let too_deep = format!("get_time({}{})", "[".repeat(65), "]".repeat(65));
    assert_py_err(&too_deep, "nested deeper than 64 levels");
    for open in ["[", "(", "{'a': "] {
        let huge = format!("get_time({})", open.repeat(100_000));
        assert_py_err(&huge, "nested deeper than 64 levels");
    }
    assert!(!py(&"(".repeat(100_000)).is_empty());
}

#[test]
fn large_adversarial_inputs_stay_fast() {
    let start = std::time::Instant::now();
    let opens = "<code><tool_call>".repeat(50_000);
    assert_eq!(parse_xml(&opens).len(), 50_000);
    assert_eq!(parse_python(&opens, &tools()).len(), 50_000);
    let closed = "<code>get_time()</code>".repeat(20_000);
    assert_eq!(parse_python(&closed, &tools()).len(), 20_000);
    let statements = format!("<code>{}</code>", "a:;".repeat(50_000));
    assert!(!parse_python(&statements, &tools()).is_empty());
    let strings = format!("<code>{}</code>", "get_time('\n".repeat(50_000));
    assert!(!parse_python(&strings, &tools()).is_empty());
    let calls = format!("<code>{}</code>", "get_time();".repeat(50_000));
    assert_eq!(parse_python(&calls, &tools()).len(), 50_000);
    assert!(start.elapsed().as_secs() < 20, "{:?}", start.elapsed());
}

// ---------------------------------------------------------------------------------------
// Corpus of malformed model outputs

#[test]
fn malformed_corpus() {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../fixtures/tool_calls/malformed");
    let expected: Map<String, Value> =
        serde_json::from_str(&std::fs::read_to_string(dir.join("expected.json")).unwrap()).unwrap();
    let mut files: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| n.ends_with(".txt"))
        .collect();
    files.sort();
    assert!(files.len() >= 20, "{files:?}");
    for name in &files {
        let substring = expected
            .get(name)
            .and_then(Value::as_str)
            .unwrap_or_else(|| panic!("{name} is not in expected.json"));
        let text = std::fs::read_to_string(dir.join(name)).unwrap();
        let calls = if name.starts_with("xml_") {
            parse_xml(&text)
        } else if name.starts_with("python_") {
            parse_python(&text, &tools())
        } else {
            panic!("{name}: neither xml_ nor python_");
        };
        assert!(!calls.is_empty(), "{name}: no call found");
        let errors: Vec<&str> = calls
            .iter()
            .filter_map(|c| match c {
                ParsedCall::Malformed { raw, error } => {
                    assert!(
                        text.contains(raw.as_str()),
                        "{name}: raw {raw:?} not in the text"
                    );
                    Some(error.as_str())
                }
                ParsedCall::Ok { .. } => None,
            })
            .collect();
        assert!(
            errors.iter().any(|e| e.contains(substring)),
            "{name}: no error contains {substring:?}; got {errors:#?}"
        );
    }
    for name in expected.keys() {
        assert!(
            files.contains(name),
            "expected.json names a missing file {name}"
        );
    }
}

// ---------------------------------------------------------------------------------------
// Property tests

fn arb_string() -> impl Strategy<Value = String> {
    prop::collection::vec(
        prop_oneof![
            3 => any::<char>(),
            2 => prop::sample::select(vec![
                '\'', '"', '\\', '\n', '\r', '\t', '\0', '\u{7f}', 'é', 'ß', '😀', '\u{2028}',
                '\u{feff}', ' ', '#', '<', '>', '{', '}',
            ]),
            3 => prop::char::range('a', 'z'),
        ],
        0..16,
    )
    .prop_map(String::from_iter)
}

/// Floats whose JSON text serde_json (without `float_roundtrip`) reads back exactly.
fn short_float() -> impl Strategy<Value = f64> {
    (any::<i32>(), 0u32..12).prop_map(|(m, k)| format!("{m}e-{k}").parse::<f64>().unwrap())
}

fn any_finite_float() -> impl Strategy<Value = f64> {
    prop_oneof![
        any::<f64>().prop_filter("finite", |f| f.is_finite()),
        short_float(),
        Just(0.0),
        Just(-0.0),
        Just(f64::MAX),
        Just(f64::MIN_POSITIVE),
        Just(5e-324),
    ]
}

fn arb_value(float: BoxedStrategy<f64>) -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        float.prop_map(Value::from),
        arb_string().prop_map(Value::String),
    ];
    leaf.prop_recursive(4, 40, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::vec((arb_string(), inner), 0..6)
                .prop_map(|kv| Value::Object(kv.into_iter().collect())),
        ]
    })
}

fn arb_arguments(
    keys: impl Strategy<Value = String> + 'static,
    float: BoxedStrategy<f64>,
) -> impl Strategy<Value = Map<String, Value>> {
    prop::collection::vec((keys, arb_value(float)), 0..6).prop_map(|kv| kv.into_iter().collect())
}

/// Choices of how to write things, taken from a seed.
struct Style(u64);

impl Style {
    fn pick(&mut self, n: u64) -> u64 {
        // xorshift64
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n
    }
}

/// A Python string literal for `s`, `repr`-like with varied quotes and escapes.
fn py_string(s: &str, style: &mut Style) -> String {
    let quote = ["'", "\"", "'''", "\"\"\""][style.pick(4) as usize];
    let escape_non_ascii = style.pick(2) == 0;
    let triple = quote.len() == 3;
    let mut out = String::from(quote);
    for c in s.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\n' if triple && style.pick(2) == 0 => out.push('\n'),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' if style.pick(2) == 0 => out.push('\t'),
            '\t' => out.push_str("\\t"),
            '\'' if triple || quote == "'" => out.push_str("\\'"),
            '"' if triple || quote == "\"" => out.push_str("\\\""),
            c if (c as u32) < 0x20 || c == '\u{7f}' => {
                out.push_str(&format!("\\x{:02x}", c as u32))
            }
            c if !c.is_ascii() && escape_non_ascii => {
                let v = c as u32;
                match style.pick(2) {
                    _ if v > 0xffff => out.push_str(&format!("\\U{v:08x}")),
                    0 if v <= 0xff => out.push_str(&format!("\\x{v:02x}")),
                    _ => out.push_str(&format!("\\u{v:04X}")),
                }
            }
            c => out.push(c),
        }
    }
    out.push_str(quote);
    out
}

/// A Python literal for `v`, possibly split into adjacent string literals, lists or tuples,
/// trailing commas and newlines.
fn py_literal(v: &Value, style: &mut Style) -> String {
    let sep = |style: &mut Style| if style.pick(4) == 0 { ",\n  " } else { ", " };
    let trailing = |style: &mut Style, n: usize| {
        if n > 0 && style.pick(3) == 0 {
            ","
        } else {
            ""
        }
    };
    match v {
        Value::Null => "None".to_string(),
        Value::Bool(true) => "True".to_string(),
        Value::Bool(false) => "False".to_string(),
        Value::Number(n) => match n.as_f64() {
            Some(f) if n.is_f64() => format!("{f:?}"),
            _ => n.to_string(),
        },
        Value::String(s) => {
            let split = if style.pick(3) == 0 {
                s.char_indices().nth(s.chars().count() / 2).map(|(i, _)| i)
            } else {
                None
            };
            match split {
                Some(i) => {
                    let (a, b) = s.split_at(i);
                    let gap = if style.pick(2) == 0 { " " } else { "\n" };
                    format!("{}{gap}{}", py_string(a, style), py_string(b, style))
                }
                None => py_string(s, style),
            }
        }
        Value::Array(items) => {
            let tuple = style.pick(2) == 0;
            let parts: Vec<String> = items.iter().map(|i| py_literal(i, style)).collect();
            let mut body = String::new();
            for (i, p) in parts.iter().enumerate() {
                if i > 0 {
                    body.push_str(sep(style));
                }
                body.push_str(p);
            }
            if tuple {
                let comma = if parts.len() == 1 {
                    ","
                } else {
                    trailing(style, parts.len())
                };
                format!("({body}{comma})")
            } else {
                format!("[{body}{}]", trailing(style, parts.len()))
            }
        }
        Value::Object(map) => {
            let mut body = String::new();
            for (i, (k, v)) in map.iter().enumerate() {
                if i > 0 {
                    body.push_str(sep(style));
                }
                body.push_str(&py_string(k, style));
                body.push_str(": ");
                body.push_str(&py_literal(v, style));
            }
            format!("{{{body}{}}}", trailing(style, map.len()))
        }
    }
}

fn identifier() -> impl Strategy<Value = String> {
    "[a-z_][a-z0-9_]{0,8}"
}

fn fragment_soup() -> impl Strategy<Value = String> {
    prop::collection::vec(
        prop_oneof![
            prop::sample::select(vec![
                "<code>",
                "</code>",
                "<tool_call>",
                "</tool_call>",
                "get_weather",
                "print",
                "(",
                ")",
                "[",
                "]",
                "{",
                "}",
                ",",
                ":",
                ";",
                "=",
                "**",
                "*",
                "'",
                "\"",
                "'''",
                "\"\"\"",
                "\\",
                "\\x",
                "\\u12",
                "\\U0010ffff",
                "\\N",
                "r'",
                "f\"",
                "0x",
                "1e",
                "1_",
                ".",
                "-",
                "+",
                "\n",
                "    ",
                "#",
                "```",
                "for x in y:",
                "import",
                "lambda",
                "\"name\"",
                "\"arguments\"",
                "null",
                "True",
                "é",
                "😀",
                "\u{0}",
            ])
            .prop_map(str::to_string),
            arb_string(),
        ],
        0..40,
    )
    .prop_map(|v| v.concat())
}

fn check_raw_in_text(text: &str, calls: &[ParsedCall]) {
    for c in calls {
        let raw = match c {
            ParsedCall::Ok { raw, .. } | ParsedCall::Malformed { raw, .. } => raw,
        };
        assert!(text.contains(raw.as_str()), "raw {raw:?} not in {text:?}");
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn xml_round_trip(
        name in identifier(),
        arguments in arb_arguments(arb_string(), short_float().boxed()),
        pretty in any::<bool>(),
        as_string in any::<bool>(),
        alias in any::<bool>(),
        before in "[^<]{0,20}",
        after in "[^<]{0,20}",
    ) {
        let key = if alias { "parameters" } else { "arguments" };
        let args_value = if as_string {
            Value::String(serde_json::to_string(&arguments).unwrap())
        } else {
            Value::Object(arguments.clone())
        };
        let mut object = Map::new();
        object.insert("name".into(), Value::String(name.clone()));
        object.insert(key.into(), args_value);
        let object = Value::Object(object);
        let json = if pretty {
            serde_json::to_string_pretty(&object).unwrap()
        } else {
            serde_json::to_string(&object).unwrap()
        };
        let span = format!("<tool_call>\n{json}\n</tool_call>");
        let text = format!("{before}{span}{after}{span}");
        let calls = parse_xml(&text);
        prop_assert_eq!(calls.len(), 2);
        for c in &calls {
            let ParsedCall::Ok { call, raw } = c else {
                return Err(TestCaseError::fail(format!("{c:?}")));
            };
            prop_assert_eq!(raw, &span);
            prop_assert_eq!(&call.name, &name);
            prop_assert_eq!(&call.arguments, &arguments);
            prop_assert_eq!(
                serde_json::to_string(&call.arguments).unwrap(),
                serde_json::to_string(&arguments).unwrap()
            );
        }
    }

    #[test]
    fn python_round_trip(
        arguments in arb_arguments(identifier(), any_finite_float().boxed()),
        positional_seed in any::<usize>(),
        seed in 1u64..,
        wrap_print in any::<bool>(),
        comment in any::<bool>(),
    ) {
        let mut style = Style(seed);
        let names: Vec<&String> = arguments.keys().collect();
        let positional = positional_seed % (names.len() + 1);
        let properties: Map<String, Value> =
            names.iter().map(|n| ((*n).clone(), json!({}))).collect();
        let tool = ToolDefinition::new(
            "render_tool",
            "",
            json!({"type": "object", "properties": properties}),
        );
        let mut parts = Vec::new();
        for (i, (k, v)) in arguments.iter().enumerate() {
            let lit = py_literal(v, &mut style);
            parts.push(if i < positional { lit } else { format!("{k}={lit}") });
        }
        let joiner = if style.pick(2) == 0 { ",\n    " } else { ", " };
        let mut call = format!("render_tool({})", parts.join(joiner));
        if wrap_print {
            call = format!("print({call})");
        }
        let code = if comment {
            format!("\n# calling the tool\n{call}  # done\n")
        } else {
            call.clone()
        };
        let text = format!("Sure.<code>{code}</code>");
        let calls = parse_python(&text, std::slice::from_ref(&tool));
        prop_assert_eq!(calls.len(), 1, "{}", text);
        let ParsedCall::Ok { call: parsed, raw } = &calls[0] else {
            return Err(TestCaseError::fail(format!("{text}\n{:?}", calls[0])));
        };
        prop_assert_eq!(raw, &call);
        prop_assert_eq!(&parsed.name, "render_tool");
        prop_assert_eq!(&parsed.arguments, &arguments, "{}", text);
        prop_assert_eq!(
            serde_json::to_string(&parsed.arguments).unwrap(),
            serde_json::to_string(&arguments).unwrap(),
            "{}", text
        );
    }

    #[test]
    fn arbitrary_text_never_panics(text in any::<String>()) {
        let xml = parse_xml(&text);
        check_raw_in_text(&text, &xml);
        let py = parse_python(&text, &tools());
        check_raw_in_text(&text, &py);
        let wrapped = format!("<code>{text}</code>");
        check_raw_in_text(&wrapped, &parse_python(&wrapped, &tools()));
        let wrapped = format!("<tool_call>{text}</tool_call>");
        let calls = parse_xml(&wrapped);
        prop_assert!(!calls.is_empty());
        check_raw_in_text(&wrapped, &calls);
    }

    #[test]
    fn fragment_soup_never_panics(text in fragment_soup()) {
        check_raw_in_text(&text, &parse_xml(&text));
        check_raw_in_text(&text, &parse_python(&text, &tools()));
        let wrapped = format!("<code>get_weather({text})</code>");
        check_raw_in_text(&wrapped, &parse_python(&wrapped, &tools()));
        let wrapped = format!("<code>{text}");
        check_raw_in_text(&wrapped, &parse_python(&wrapped, &tools()));
    }
}
