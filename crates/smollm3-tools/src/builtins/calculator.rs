//! The `calculator` tool: arithmetic on numbers, nothing else.
//!
//! # Why a hand-written parser
//!
//! The evaluator is a small recursive-descent parser over `f64`, written here rather than
//! taken from a crate. `evalexpr`, the best-kept general candidate, is a small language
//! (variables, assignment, strings, booleans, user functions) that would have to be fenced
//! in, and its integer arithmetic makes `1/2` equal `0`, which is not what a model asking a
//! calculator means; `meval` is unmaintained. The grammar below is about a hundred lines, it
//! can only ever compute a number, and its limits (length, nesting depth) are explicit.
//!
//! ```text
//! expr    := term (('+' | '-') term)*
//! term    := unary (('*' | '/' | '%') unary)*
//! unary   := ('-' | '+') unary | power
//! power   := primary (('**' | '^') unary)?        right-associative; -2**2 = -4
//! primary := number | constant | function '(' expr (',' expr)* ')' | '(' expr ')'
//! ```
//!
//! `%` is the floored remainder (its sign follows the divisor, as in Python). A `math.`
//! prefix on names is accepted (`math.sqrt(2)`).

use serde_json::{json, Map, Number, Value};

use crate::{Tool, ToolDefinition};

/// Longest expression accepted, in characters.
pub const MAX_EXPRESSION_CHARS: usize = 1000;
/// Deepest nesting of parentheses, function calls and unary operators accepted.
pub const MAX_DEPTH: usize = 64;

const FUNCTIONS: &[&str] = &[
    "sqrt", "abs", "round", "floor", "ceil", "ln", "log", "log10", "log2", "exp", "sin", "cos",
    "tan", "asin", "acos", "atan", "min", "max", "pow",
];
const CONSTANTS: &[&str] = &["pi", "e", "tau"];

/// Evaluates arithmetic expressions (see the module docs for the grammar).
pub struct Calculator {
    definition: ToolDefinition,
}

impl Default for Calculator {
    fn default() -> Self {
        Self::new()
    }
}

impl Calculator {
    pub fn new() -> Self {
        Calculator {
            definition: ToolDefinition::new(
                "calculator",
                "Evaluate an arithmetic expression exactly and return the number. Use it for any \
                 calculation instead of doing arithmetic yourself. Supports numbers (42, 3.14, \
                 1.5e-3), + - * / % (remainder), ** or ^ (power), parentheses, the constants pi \
                 and e, and the functions sqrt, abs, round(x) or round(x, digits), floor, ceil, \
                 ln, log10, log2, exp, sin, cos, tan, asin, acos, atan (radians), min(a, b, ...), \
                 max(a, b, ...) and pow(x, y). No variables.",
                json!({
                    "type": "object",
                    "properties": {
                        "expression": {
                            "type": "string",
                            "description": "The expression to evaluate, e.g. \"(17.5 * 3 - 2) / 4\" or \"sqrt(2) * pi\"."
                        }
                    },
                    "required": ["expression"],
                    "additionalProperties": false
                }),
            ),
        }
    }
}

impl Tool for Calculator {
    fn definition(&self) -> &ToolDefinition {
        &self.definition
    }

    fn call(&self, arguments: &Map<String, Value>) -> Result<Value, String> {
        let expression = arguments
            .get("expression")
            .and_then(Value::as_str)
            .ok_or("missing the string argument \"expression\"")?;
        let result = evaluate(expression)?;
        Ok(json!({"expression": expression, "result": number_value(result)}))
    }
}

/// Evaluates `expression`; `Err` is a message for the model.
pub fn evaluate(expression: &str) -> Result<f64, String> {
    let len = expression.chars().count();
    if len > MAX_EXPRESSION_CHARS {
        return Err(format!(
            "the expression is too long ({len} characters; at most {MAX_EXPRESSION_CHARS})"
        ));
    }
    let tokens = tokenize(expression)?;
    if tokens.len() == 1 {
        return Err("the expression is empty".into());
    }
    let mut parser = Parser {
        tokens,
        pos: 0,
        depth: 0,
    };
    let value = parser.expr()?;
    let next = parser.peek();
    if next.kind != Tok::End {
        return Err(syntax_error(
            next,
            "an operator or the end of the expression",
        ));
    }
    check_finite(value)
}

/// Whole numbers that fit a double exactly become JSON integers (`4`, not `4.0`).
fn number_value(x: f64) -> Value {
    const EXACT: f64 = 9_007_199_254_740_992.0; // 2^53
    if x.fract() == 0.0 && x.abs() <= EXACT {
        // `as` is exact here: |x| <= 2^53 and x is whole. Normalises -0 to 0 too.
        return Value::from(x as i64);
    }
    Number::from_f64(x).map_or(Value::Null, Value::Number)
}

fn check_finite(x: f64) -> Result<f64, String> {
    if x.is_nan() {
        Err("the result is not a number (an operation is undefined for its arguments)".into())
    } else if x.is_infinite() {
        Err("the result is not finite (it overflows)".into())
    } else {
        Ok(x)
    }
}

#[derive(Debug, Clone, PartialEq)]
enum Tok {
    Num(f64),
    Ident(String),
    Plus,
    Minus,
    Star,
    Slash,
    Percent,
    Pow,
    LParen,
    RParen,
    Comma,
    End,
}

#[derive(Debug, Clone)]
struct Token {
    kind: Tok,
    /// 1-based character column.
    col: usize,
}

fn describe(tok: &Tok) -> String {
    match tok {
        Tok::Num(x) => format!("the number {x}"),
        Tok::Ident(name) => format!("\"{name}\""),
        Tok::Plus => "\"+\"".into(),
        Tok::Minus => "\"-\"".into(),
        Tok::Star => "\"*\"".into(),
        Tok::Slash => "\"/\"".into(),
        Tok::Percent => "\"%\"".into(),
        Tok::Pow => "a power operator".into(),
        Tok::LParen => "\"(\"".into(),
        Tok::RParen => "\")\"".into(),
        Tok::Comma => "\",\"".into(),
        Tok::End => "the end of the expression".into(),
    }
}

fn syntax_error(tok: &Token, expected: &str) -> String {
    format!(
        "syntax error at column {}: expected {expected}, found {}",
        tok.col,
        describe(&tok.kind)
    )
}

fn tokenize(src: &str) -> Result<Vec<Token>, String> {
    let chars: Vec<char> = src.chars().collect();
    let mut tokens = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        let col = i + 1;
        if c.is_whitespace() {
            i += 1;
            continue;
        }
        let kind = if c.is_ascii_digit() || c == '.' {
            let start = i;
            while i < chars.len() && chars[i].is_ascii_digit() {
                i += 1;
            }
            if i < chars.len() && chars[i] == '.' {
                i += 1;
                while i < chars.len() && chars[i].is_ascii_digit() {
                    i += 1;
                }
            }
            if i < chars.len() && (chars[i] == 'e' || chars[i] == 'E') {
                let mut j = i + 1;
                if j < chars.len() && (chars[j] == '+' || chars[j] == '-') {
                    j += 1;
                }
                if j < chars.len() && chars[j].is_ascii_digit() {
                    while j < chars.len() && chars[j].is_ascii_digit() {
                        j += 1;
                    }
                    i = j;
                } else if !(j == i + 1 && j < chars.len() && is_ident_char(chars[j])) {
                    // `2e`, `2e+`: a broken exponent. (`2ex` falls through to the
                    // identifier check below.)
                    return Err(format!(
                        "syntax error at column {}: malformed number exponent",
                        i + 1
                    ));
                }
            }
            let text: String = chars[start..i].iter().collect();
            match text.parse::<f64>() {
                Ok(x) => Tok::Num(x),
                Err(_) => {
                    return Err(format!(
                        "syntax error at column {col}: malformed number \"{text}\""
                    ))
                }
            }
        } else if c.is_ascii_alphabetic() || c == '_' {
            let start = i;
            while i < chars.len() && (is_ident_char(chars[i]) || chars[i] == '.') {
                i += 1;
            }
            let text: String = chars[start..i].iter().collect();
            let name = text.strip_prefix("math.").unwrap_or(&text).to_string();
            Tok::Ident(name)
        } else {
            i += 1;
            match c {
                '+' => Tok::Plus,
                '-' | '\u{2212}' => Tok::Minus,
                '*' if chars.get(i) == Some(&'*') => {
                    i += 1;
                    Tok::Pow
                }
                '*' | '\u{d7}' => Tok::Star,
                '/' | '\u{f7}' => Tok::Slash,
                '%' => Tok::Percent,
                '^' => Tok::Pow,
                '(' => Tok::LParen,
                ')' => Tok::RParen,
                ',' => Tok::Comma,
                other => {
                    return Err(format!(
                        "syntax error at column {col}: unexpected character {other:?}"
                    ))
                }
            }
        };
        // A number directly followed by a name (`2pi`, `3x`) is not implicit multiplication.
        if let (
            Some(Token {
                kind: Tok::Num(_), ..
            }),
            Tok::Ident(_),
        ) = (tokens.last(), &kind)
        {
            return Err(format!(
                "syntax error at column {col}: expected an operator, found {} (write \"*\" for \
                 multiplication)",
                describe(&kind)
            ));
        }
        tokens.push(Token { kind, col });
    }
    tokens.push(Token {
        kind: Tok::End,
        col: chars.len() + 1,
    });
    Ok(tokens)
}

fn is_ident_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_'
}

struct Parser {
    tokens: Vec<Token>,
    pos: usize,
    depth: usize,
}

impl Parser {
    fn peek(&self) -> &Token {
        // The token list always ends with `End`, and `pos` never moves past it.
        &self.tokens[self.pos.min(self.tokens.len() - 1)]
    }

    fn bump(&mut self) -> Token {
        let tok = self.peek().clone();
        if tok.kind != Tok::End {
            self.pos += 1;
        }
        tok
    }

    fn enter(&mut self) -> Result<(), String> {
        self.depth += 1;
        if self.depth > MAX_DEPTH {
            Err(format!(
                "the expression is nested too deeply (more than {MAX_DEPTH} levels)"
            ))
        } else {
            Ok(())
        }
    }

    fn leave(&mut self) {
        self.depth -= 1;
    }

    fn expr(&mut self) -> Result<f64, String> {
        let mut acc = self.term()?;
        loop {
            match self.peek().kind {
                Tok::Plus => {
                    self.bump();
                    acc += self.term()?;
                }
                Tok::Minus => {
                    self.bump();
                    acc -= self.term()?;
                }
                _ => return Ok(acc),
            }
        }
    }

    fn term(&mut self) -> Result<f64, String> {
        let mut acc = self.unary()?;
        loop {
            match self.peek().kind {
                Tok::Star => {
                    self.bump();
                    acc *= self.unary()?;
                }
                Tok::Slash => {
                    self.bump();
                    let divisor = self.unary()?;
                    if divisor == 0.0 {
                        return Err("division by zero".into());
                    }
                    acc /= divisor;
                }
                Tok::Percent => {
                    self.bump();
                    let divisor = self.unary()?;
                    if divisor == 0.0 {
                        return Err("division by zero (in %)".into());
                    }
                    let r = acc % divisor;
                    acc = if r != 0.0 && (r < 0.0) != (divisor < 0.0) {
                        r + divisor
                    } else {
                        r
                    };
                }
                _ => return Ok(acc),
            }
        }
    }

    fn unary(&mut self) -> Result<f64, String> {
        match self.peek().kind {
            Tok::Minus | Tok::Plus => {
                let negate = self.bump().kind == Tok::Minus;
                self.enter()?;
                let x = self.unary()?;
                self.leave();
                Ok(if negate { -x } else { x })
            }
            _ => self.power(),
        }
    }

    fn power(&mut self) -> Result<f64, String> {
        let base = self.primary()?;
        if self.peek().kind != Tok::Pow {
            return Ok(base);
        }
        self.bump();
        self.enter()?;
        let exponent = self.unary()?;
        self.leave();
        pow(base, exponent)
    }

    fn primary(&mut self) -> Result<f64, String> {
        let tok = self.bump();
        match tok.kind {
            Tok::Num(x) => Ok(x),
            Tok::LParen => {
                self.enter()?;
                let x = self.expr()?;
                self.leave();
                self.expect_rparen("\")\"")?;
                Ok(x)
            }
            Tok::Ident(name) => {
                if self.peek().kind == Tok::LParen {
                    self.bump();
                    self.enter()?;
                    let mut args = vec![self.expr()?];
                    while self.peek().kind == Tok::Comma {
                        self.bump();
                        args.push(self.expr()?);
                    }
                    self.leave();
                    self.expect_rparen("\",\" or \")\"")?;
                    apply(&name, &args)
                } else {
                    constant(&name)
                }
            }
            _ => Err(syntax_error(&tok, "a number, a name or \"(\"")),
        }
    }

    fn expect_rparen(&mut self, expected: &str) -> Result<(), String> {
        let tok = self.bump();
        if tok.kind == Tok::RParen {
            Ok(())
        } else {
            Err(syntax_error(&tok, expected))
        }
    }
}

fn constant(name: &str) -> Result<f64, String> {
    match name {
        "pi" => Ok(std::f64::consts::PI),
        "e" => Ok(std::f64::consts::E),
        "tau" => Ok(std::f64::consts::TAU),
        _ if FUNCTIONS.contains(&name) => Err(format!(
            "{name} is a function: call it with parentheses, e.g. {name}(2)"
        )),
        _ => Err(format!(
            "unknown name \"{name}\" (there are no variables; constants: {})",
            CONSTANTS.join(", ")
        )),
    }
}

fn pow(base: f64, exponent: f64) -> Result<f64, String> {
    if base == 0.0 && exponent < 0.0 {
        return Err("division by zero (0 raised to a negative power)".into());
    }
    let x = base.powf(exponent);
    if x.is_nan() {
        return Err(format!(
            "{base} ** {exponent} is not a real number (a negative number to a fractional power)"
        ));
    }
    check_finite(x)
}

fn apply(name: &str, args: &[f64]) -> Result<f64, String> {
    let arity = |n: usize| -> Result<(), String> {
        if args.len() == n {
            Ok(())
        } else {
            Err(format!(
                "{name}() takes {n} argument{}, got {}",
                if n == 1 { "" } else { "s" },
                args.len()
            ))
        }
    };
    let domain = |ok: bool, what: &str| -> Result<(), String> {
        if ok {
            Ok(())
        } else {
            Err(format!("{name}() is only defined for {what}"))
        }
    };
    let x = args.first().copied().unwrap_or(f64::NAN);
    let y = match name {
        "sqrt" => {
            arity(1)?;
            domain(x >= 0.0, "numbers >= 0")?;
            x.sqrt()
        }
        "abs" => {
            arity(1)?;
            x.abs()
        }
        "round" => match args {
            [x] => x.round(),
            [x, digits] => {
                if digits.fract() != 0.0 || !(0.0..=15.0).contains(digits) {
                    return Err(
                        "round(x, digits): digits must be a whole number from 0 to 15".into(),
                    );
                }
                let scale = 10f64.powi(*digits as i32);
                (x * scale).round() / scale
            }
            _ => {
                return Err(format!(
                    "round() takes 1 or 2 arguments, got {}",
                    args.len()
                ))
            }
        },
        "floor" => {
            arity(1)?;
            x.floor()
        }
        "ceil" => {
            arity(1)?;
            x.ceil()
        }
        "ln" | "log" if args.len() == 1 => {
            domain(x > 0.0, "numbers > 0")?;
            x.ln()
        }
        "log" => {
            arity(2)?;
            let base = args[1];
            domain(
                x > 0.0 && base > 0.0 && base != 1.0,
                "x > 0 and a base > 0 other than 1",
            )?;
            x.ln() / base.ln()
        }
        "ln" => {
            arity(1)?;
            x
        }
        "log10" => {
            arity(1)?;
            domain(x > 0.0, "numbers > 0")?;
            x.log10()
        }
        "log2" => {
            arity(1)?;
            domain(x > 0.0, "numbers > 0")?;
            x.log2()
        }
        "exp" => {
            arity(1)?;
            x.exp()
        }
        "sin" => {
            arity(1)?;
            x.sin()
        }
        "cos" => {
            arity(1)?;
            x.cos()
        }
        "tan" => {
            arity(1)?;
            x.tan()
        }
        "asin" => {
            arity(1)?;
            domain((-1.0..=1.0).contains(&x), "numbers from -1 to 1")?;
            x.asin()
        }
        "acos" => {
            arity(1)?;
            domain((-1.0..=1.0).contains(&x), "numbers from -1 to 1")?;
            x.acos()
        }
        "atan" => {
            arity(1)?;
            x.atan()
        }
        "min" => args.iter().copied().fold(f64::INFINITY, f64::min),
        "max" => args.iter().copied().fold(f64::NEG_INFINITY, f64::max),
        "pow" => {
            arity(2)?;
            return pow(x, args[1]);
        }
        _ if CONSTANTS.contains(&name) => {
            return Err(format!("{name} is a constant, not a function"));
        }
        _ => {
            return Err(format!(
                "unknown function \"{name}\" (available: {})",
                FUNCTIONS
                    .iter()
                    .filter(|f| **f != "log")
                    .copied()
                    .collect::<Vec<_>>()
                    .join(", ")
            ))
        }
    };
    check_finite(y)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ev(s: &str) -> f64 {
        match evaluate(s) {
            Ok(x) => x,
            Err(e) => panic!("{s}: {e}"),
        }
    }

    fn err(s: &str) -> String {
        match evaluate(s) {
            Ok(x) => panic!("{s} evaluated to {x}"),
            Err(e) => e,
        }
    }

    #[test]
    fn arithmetic() {
        assert_eq!(ev("1 + 2 * 3"), 7.0);
        assert_eq!(ev("(1 + 2) * 3"), 9.0);
        assert_eq!(ev("10 - 4 - 3"), 3.0);
        assert_eq!(ev("100 / 10 / 5"), 2.0);
        assert_eq!(ev("1/2"), 0.5);
        assert_eq!(ev("7 % 3"), 1.0);
        assert_eq!(ev("-7 % 3"), 2.0);
        assert_eq!(ev("7 % -3"), -2.0);
        assert_eq!(ev("2 ** 3 ** 2"), 512.0);
        assert_eq!(ev("2 ^ 3 ^ 2"), 512.0);
        assert_eq!(ev("-2 ** 2"), -4.0);
        assert_eq!(ev("2 ** -1"), 0.5);
        assert_eq!(ev("(-2) ** 2"), 4.0);
        assert_eq!(ev("--3"), 3.0);
        assert_eq!(ev("+3"), 3.0);
        assert_eq!(ev("1.5e3 + .5 + 2E-1"), 1500.7);
        assert_eq!(ev("2 * -3"), -6.0);
    }

    #[test]
    fn functions_and_constants() {
        assert_eq!(ev("sqrt(16)"), 4.0);
        assert_eq!(ev("abs(-3.5)"), 3.5);
        assert_eq!(ev("round(2.5)"), 3.0);
        assert_eq!(ev("round(2.71828, 2)"), 2.72);
        assert_eq!(ev("round(-2.5)"), -3.0);
        assert_eq!(ev("floor(-1.5) + ceil(1.2)"), 0.0);
        assert_eq!(ev("log10(1000)"), 3.0);
        assert_eq!(ev("log2(8)"), 3.0);
        assert_eq!(ev("ln(e)"), 1.0);
        assert_eq!(ev("log(e)"), 1.0);
        assert!((ev("log(8, 2)") - 3.0).abs() < 1e-12);
        assert_eq!(ev("exp(0)"), 1.0);
        assert!((ev("sin(pi / 2)") - 1.0).abs() < 1e-12);
        assert!((ev("cos(pi)") + 1.0).abs() < 1e-12);
        assert!(ev("tan(0)").abs() < 1e-12);
        assert!((ev("asin(1) - pi/2")).abs() < 1e-12);
        assert!((ev("acos(1)")).abs() < 1e-12);
        assert!((ev("atan(1) * 4 - pi")).abs() < 1e-12);
        assert_eq!(ev("min(3, 1, 2)"), 1.0);
        assert_eq!(ev("max(3, 1, 2)"), 3.0);
        assert_eq!(ev("pow(2, 10)"), 1024.0);
        assert_eq!(ev("math.sqrt(4)"), 2.0);
    }

    #[test]
    fn errors() {
        assert_eq!(err("1 / 0"), "division by zero");
        assert!(err("5 % 0").contains("division by zero"));
        assert!(err("0 ** -1").contains("division by zero"));
        assert!(err("foo(1)").starts_with("unknown function \"foo\""));
        assert!(err("x + 1").starts_with("unknown name \"x\""));
        assert_eq!(
            err("1 + * 2"),
            "syntax error at column 5: expected a number, a name or \"(\", found \"*\""
        );
        assert!(err("(1 + 2").starts_with("syntax error at column 7"));
        assert!(err("1 2").starts_with("syntax error at column 3"));
        assert!(err("2pi").starts_with("syntax error at column 2"));
        assert!(err("1 $ 2").starts_with("syntax error at column 3: unexpected character '$'"));
        assert!(err("2e+").contains("malformed number"));
        assert!(err("1..2").starts_with("syntax error at column 3"));
        assert!(err(".").contains("malformed number"));
        assert!(err("sqrt(-1)").contains("sqrt() is only defined"));
        assert!(err("ln(0)").contains("ln() is only defined"));
        assert!(err("(-8) ** (1/3)").contains("not a real number"));
        assert!(err("10 ** 400").contains("not finite"));
        assert!(err("exp(1000)").contains("not finite"));
        assert!(err("sqrt(1, 2)").contains("takes 1 argument"));
        assert!(err("sqrt").contains("is a function"));
        assert_eq!(err(""), "the expression is empty");
        assert_eq!(err("   "), "the expression is empty");
        assert!(err(&"1+".repeat(600)).contains("too long"));
        assert!(err(&format!("{}1{}", "(".repeat(100), ")".repeat(100))).contains("too deeply"));
        assert!(err(&"-".repeat(100)).contains("too deeply"));
        assert!(err(&format!("2{}", "**2".repeat(100))).contains("too deeply"));
    }

    #[test]
    fn integral_results_are_json_integers() {
        assert_eq!(number_value(4.0), json!(4));
        assert_eq!(number_value(-0.0), json!(0));
        assert_eq!(number_value(0.5), json!(0.5));
        assert_eq!(number_value(1e300), json!(1e300));
    }
}
