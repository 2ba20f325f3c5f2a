//! Python's `str()` / `repr()` of template values, for Jinja's `| string` filter as HF renders
//! it (`{'name': 'f', 'required': True}`), and Python's `json.dumps` for `| tojson`.

use std::fmt::Write;
use std::sync::OnceLock;

use minijinja::value::{Value, ValueKind};

/// Python's `str(value)`: strings as they are, everything else as `repr`.
pub(crate) fn py_str(v: &Value) -> String {
    match v.as_str() {
        Some(s) if v.kind() == ValueKind::String => s.to_string(),
        _ => {
            let mut out = String::new();
            py_repr(v, &mut out);
            out
        }
    }
}

fn non_printable() -> Option<&'static regex::Regex> {
    static RE: OnceLock<Option<regex::Regex>> = OnceLock::new();
    // Python's str.isprintable() is false for these general categories (and all Z* but space;
    // surrogates, Cs, cannot occur in a Rust string).
    RE.get_or_init(|| regex::Regex::new(r"^[\p{Cc}\p{Cf}\p{Co}\p{Cn}\p{Zl}\p{Zp}\p{Zs}]$").ok())
        .as_ref()
}

/// The escape marker of `prompt.rs` is a private-use character; it stays as is in reprs so
/// that it can be removed after rendering.
pub(crate) const KEEP: char = crate::prompt::ESC;

pub(crate) fn repr_str(s: &str, out: &mut String) {
    let quote = if s.contains('\'') && !s.contains('"') {
        '"'
    } else {
        '\''
    };
    out.push(quote);
    let re = non_printable();
    let mut buf = [0u8; 4];
    for c in s.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if c == quote => {
                out.push('\\');
                out.push(c);
            }
            ' ' | KEEP => out.push(c),
            c if c.is_ascii() && !c.is_ascii_control() => out.push(c),
            c if re.is_some_and(|re| re.is_match(c.encode_utf8(&mut buf))) => {
                let n = c as u32;
                let _ = if n < 0x100 {
                    write!(out, "\\x{n:02x}")
                } else if n < 0x10000 {
                    write!(out, "\\u{n:04x}")
                } else {
                    write!(out, "\\U{n:08x}")
                };
            }
            c => out.push(c),
        }
    }
    out.push(quote);
}

/// Python `repr(float)`: shortest round-trip digits, exponent form below 1e-4 and from 1e16.
pub(crate) fn repr_float(x: f64, out: &mut String) {
    if x.is_nan() {
        out.push_str("nan");
        return;
    }
    if x.is_infinite() {
        out.push_str(if x > 0.0 { "inf" } else { "-inf" });
        return;
    }
    let e = format!("{x:e}"); // e.g. "-1.5e-5", "1e16"
    let (mantissa, exp) = e.split_once('e').unwrap_or((&e, "0"));
    let exp: i32 = exp.parse().unwrap_or(0);
    let (sign, mantissa) = match mantissa.strip_prefix('-') {
        Some(m) => ("-", m),
        None => ("", mantissa),
    };
    let digits: String = mantissa.chars().filter(|c| *c != '.').collect();
    out.push_str(sign);
    if (-4..16).contains(&exp) {
        let n = digits.len() as i32;
        if exp >= 0 {
            let int_len = exp + 1;
            if n <= int_len {
                out.push_str(&digits);
                out.push_str(&"0".repeat((int_len - n) as usize));
                out.push_str(".0");
            } else {
                out.push_str(&digits[..int_len as usize]);
                out.push('.');
                out.push_str(&digits[int_len as usize..]);
            }
        } else {
            out.push_str("0.");
            out.push_str(&"0".repeat((-exp - 1) as usize));
            out.push_str(&digits);
        }
    } else {
        out.push_str(&digits[..1]);
        if digits.len() > 1 {
            out.push('.');
            out.push_str(&digits[1..]);
        }
        let _ = write!(out, "e{}{:02}", if exp < 0 { '-' } else { '+' }, exp.abs());
    }
}

pub(crate) fn py_repr(v: &Value, out: &mut String) {
    match v.kind() {
        ValueKind::Undefined | ValueKind::None => out.push_str("None"),
        ValueKind::Bool => out.push_str(if v.is_true() { "True" } else { "False" }),
        ValueKind::Number => {
            if v.is_integer() {
                out.push_str(&v.to_string());
            } else {
                repr_float(f64::try_from(v.clone()).unwrap_or(f64::NAN), out);
            }
        }
        ValueKind::String => repr_str(v.as_str().unwrap_or(""), out),
        ValueKind::Map => {
            out.push('{');
            if let Ok(keys) = v.try_iter() {
                for (i, k) in keys.enumerate() {
                    if i > 0 {
                        out.push_str(", ");
                    }
                    py_repr(&k, out);
                    out.push_str(": ");
                    py_repr(&v.get_item(&k).unwrap_or_default(), out);
                }
            }
            out.push('}');
        }
        ValueKind::Seq | ValueKind::Iterable => {
            out.push('[');
            if let Ok(items) = v.try_iter() {
                for (i, item) in items.enumerate() {
                    if i > 0 {
                        out.push_str(", ");
                    }
                    py_repr(&item, out);
                }
            }
            out.push(']');
        }
        _ => out.push_str(&v.to_string()),
    }
}

/// Python `json.dumps(value, ensure_ascii=False, indent=indent)` (HF's `tojson`).
pub(crate) fn py_json(v: &Value, indent: Option<usize>, level: usize, out: &mut String) {
    let newline = |out: &mut String, level: usize| {
        if let Some(n) = indent {
            out.push('\n');
            out.push_str(&" ".repeat(n * level));
        }
    };
    let item_sep = if indent.is_some() { "," } else { ", " };
    match v.kind() {
        ValueKind::Undefined | ValueKind::None => out.push_str("null"),
        ValueKind::Bool => out.push_str(if v.is_true() { "true" } else { "false" }),
        ValueKind::Number => {
            if v.is_integer() {
                out.push_str(&v.to_string());
            } else {
                let x = f64::try_from(v.clone()).unwrap_or(f64::NAN);
                if x.is_nan() {
                    out.push_str("NaN");
                } else if x.is_infinite() {
                    out.push_str(if x > 0.0 { "Infinity" } else { "-Infinity" });
                } else {
                    repr_float(x, out);
                }
            }
        }
        ValueKind::String => {
            out.push('"');
            for c in v.as_str().unwrap_or("").chars() {
                match c {
                    '"' => out.push_str("\\\""),
                    '\\' => out.push_str("\\\\"),
                    '\n' => out.push_str("\\n"),
                    '\r' => out.push_str("\\r"),
                    '\t' => out.push_str("\\t"),
                    '\u{8}' => out.push_str("\\b"),
                    '\u{c}' => out.push_str("\\f"),
                    c if (c as u32) < 0x20 => {
                        let _ = write!(out, "\\u{:04x}", c as u32);
                    }
                    c => out.push(c),
                }
            }
            out.push('"');
        }
        ValueKind::Map => {
            let keys: Vec<Value> = v.try_iter().map(|i| i.collect()).unwrap_or_default();
            if keys.is_empty() {
                out.push_str("{}");
                return;
            }
            out.push('{');
            for (i, k) in keys.iter().enumerate() {
                if i > 0 {
                    out.push_str(item_sep);
                }
                newline(out, level + 1);
                py_json(&Value::from(py_str(k)), indent, level + 1, out);
                out.push_str(": ");
                py_json(&v.get_item(k).unwrap_or_default(), indent, level + 1, out);
            }
            newline(out, level);
            out.push('}');
        }
        ValueKind::Seq | ValueKind::Iterable => {
            let items: Vec<Value> = v.try_iter().map(|i| i.collect()).unwrap_or_default();
            if items.is_empty() {
                out.push_str("[]");
                return;
            }
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push_str(item_sep);
                }
                newline(out, level + 1);
                py_json(item, indent, level + 1, out);
            }
            newline(out, level);
            out.push(']');
        }
        _ => py_json(&Value::from(v.to_string()), indent, level, out),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn repr(json: &str) -> String {
        let v: Value = serde_json::from_str(json).unwrap();
        py_str(&v)
    }

    #[test]
    fn python_reprs() {
        assert_eq!(
            repr(r#"{"name": "f", "ok": true, "n": null, "x": [1, 2.5, 1e16, 0.0001, 1e-5]}"#),
            "{'name': 'f', 'ok': True, 'n': None, 'x': [1, 2.5, 1e+16, 0.0001, 1e-05]}"
        );
        assert_eq!(
            repr(r#"["it's", "say \"hi\"", "both ' \"", "a\nb\\"]"#),
            r#"["it's", 'say "hi"', 'both \' "', 'a\nb\\']"#
        );
        assert_eq!(
            repr(r#"["\u00a0\u200b\u0001é😀"]"#),
            r"['\xa0\u200b\x01é😀']"
        );
        assert_eq!(
            repr(r#"[100.0, 123456789012345678]"#),
            "[100.0, 123456789012345678]"
        );
    }
}
