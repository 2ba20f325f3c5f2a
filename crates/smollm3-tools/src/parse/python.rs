//! The Python format: `<code>get_weather(city="Copenhagen")</code>`.
//!
//! A small tokenizer and a recursive-descent parser for the subset described in the module
//! documentation of [`super`]: statements that are calls of known tools with literal
//! arguments. The code is only read, never executed.

use serde_json::{Map, Number, Value};

use crate::{ParsedCall, ToolCall, ToolDefinition};

/// Deepest nesting of lists / tuples / dicts in an argument.
const MAX_DEPTH: usize = 64;

/// Parses the content of one closed `<code>` span: one result per statement.
pub(super) fn parse_code(inner: &str, tools: &[ToolDefinition]) -> Vec<ParsedCall> {
    let code = strip_fence(inner);
    let lines = Lines::new(code);
    let tokens = lex(code, &lines);
    let statements = split_statements(&lines, tokens);
    statements
        .into_iter()
        .map(|stmt| {
            let raw = code.get(stmt.start..stmt.end).unwrap_or("").to_string();
            match stmt.error {
                Some(error) => ParsedCall::Malformed { raw, error },
                None => match parse_statement(&stmt.tokens, tools) {
                    Ok(call) => ParsedCall::Ok { call, raw },
                    Err(error) => ParsedCall::Malformed { raw, error },
                },
            }
        })
        .collect()
}

/// Drops a Markdown fence (a first line starting with three backticks, a closing three
/// backticks) around the code, which models sometimes add.
fn strip_fence(inner: &str) -> &str {
    let mut code = inner;
    let start = code.trim_start();
    if start.starts_with("```") {
        code = match start.find('\n') {
            Some(i) => start.get(i + 1..).unwrap_or(""),
            None => "",
        };
    }
    let trimmed = code.trim_end();
    if let Some(stripped) = trimmed.strip_suffix("```") {
        code = stripped;
    }
    code
}

// ---------------------------------------------------------------------------------------
// Tokens

#[derive(Debug, Clone, PartialEq)]
enum Tok {
    Name(String),
    /// A string literal, decoded.
    Str(String),
    /// An integer literal (its sign is a separate `-` token).
    Int(u64),
    Float(f64),
    Op(&'static str),
    Newline,
    /// Something that is not a token of the subset (or an invalid literal): the message.
    Error(String),
}

#[derive(Debug, Clone, PartialEq)]
struct Token {
    tok: Tok,
    /// Byte range in the code.
    start: usize,
    end: usize,
}

/// Longest first.
const OPERATORS: &[&str] = &[
    "**=", "//=", ">>=", "<<=", "...", "**", "//", "==", "!=", "<=", ">=", "->", ":=", "+=", "-=",
    "*=", "/=", "%=", "@=", "&=", "|=", "^=", ">>", "<<", "(", ")", "[", "]", "{", "}", ",", ":",
    ";", "=", ".", "+", "-", "*", "/", "%", "@", "&", "|", "^", "~", "<", ">", "!",
];

const ASSIGNMENTS: &[&str] = &[
    "=", "+=", "-=", "*=", "/=", "//=", "%=", "**=", "@=", "&=", "|=", "^=", ">>=", "<<=",
];

fn is_ident_start(c: char) -> bool {
    c.is_alphabetic() || c == '_'
}

fn is_ident_continue(c: char) -> bool {
    c.is_alphanumeric() || c == '_'
}

/// Where the lines of the code start, to locate positions without rescanning the text.
struct Lines(Vec<usize>);

impl Lines {
    fn new(src: &str) -> Self {
        let mut starts = vec![0];
        starts.extend(src.match_indices('\n').map(|(i, _)| i + 1));
        Lines(starts)
    }

    /// 1-based line number and byte column of `pos`.
    fn locate(&self, pos: usize) -> (usize, usize) {
        let line = self.0.partition_point(|s| *s <= pos).max(1);
        let start = self.0.get(line - 1).copied().unwrap_or(0);
        (line, pos.saturating_sub(start))
    }
}

struct Lexer<'a> {
    src: &'a str,
    lines: &'a Lines,
    pos: usize,
    tokens: Vec<Token>,
}

fn lex<'a>(src: &'a str, lines: &'a Lines) -> Vec<Token> {
    let mut lexer = Lexer {
        src,
        lines,
        pos: 0,
        tokens: Vec::new(),
    };
    lexer.run();
    lexer.tokens
}

impl<'a> Lexer<'a> {
    fn rest(&self) -> &'a str {
        self.src.get(self.pos..).unwrap_or("")
    }

    fn peek(&self) -> Option<char> {
        self.rest().chars().next()
    }

    fn peek_at(&self, n: usize) -> Option<char> {
        self.rest().chars().nth(n)
    }

    fn push(&mut self, tok: Tok, start: usize) {
        self.tokens.push(Token {
            tok,
            start,
            end: self.pos,
        });
    }

    /// Advances while `pred` holds; returns the position reached.
    fn eat_while(&mut self, pred: impl Fn(char) -> bool) -> usize {
        while let Some(c) = self.peek() {
            if !pred(c) {
                break;
            }
            self.pos += c.len_utf8();
        }
        self.pos
    }

    fn run(&mut self) {
        while let Some(c) = self.peek() {
            let start = self.pos;
            match c {
                ' ' | '\t' | '\r' | '\x0c' => self.pos += 1,
                '\n' => {
                    self.pos += 1;
                    self.push(Tok::Newline, start);
                }
                '#' => {
                    self.eat_while(|c| c != '\n');
                }
                '\\' => {
                    // Explicit line joining.
                    if self.rest().starts_with("\\\n") {
                        self.pos += 2;
                    } else if self.rest().starts_with("\\\r\n") {
                        self.pos += 3;
                    } else {
                        self.pos += 1;
                        self.push(
                            Tok::Error("unexpected `\\` outside a string".to_string()),
                            start,
                        );
                    }
                }
                '"' | '\'' => self.string(start, ""),
                '0'..='9' => self.number(start),
                '.' if self.peek_at(1).is_some_and(|c| c.is_ascii_digit()) => self.number(start),
                c if is_ident_start(c) => {
                    let end = self.eat_while(is_ident_continue);
                    let word = self.src.get(start..end).unwrap_or("");
                    let prefix = word.to_ascii_lowercase();
                    let is_prefix = matches!(
                        prefix.as_str(),
                        "r" | "u" | "f" | "b" | "br" | "rb" | "fr" | "rf"
                    );
                    if is_prefix && matches!(self.peek(), Some('"' | '\'')) {
                        self.string(start, &prefix);
                    } else {
                        self.push(Tok::Name(word.to_string()), start);
                    }
                }
                c => match OPERATORS.iter().find(|op| self.rest().starts_with(**op)) {
                    Some(op) => {
                        self.pos += op.len();
                        self.push(Tok::Op(op), start);
                    }
                    None => {
                        self.pos += c.len_utf8();
                        self.push(Tok::Error(format!("unexpected character {c:?}")), start);
                    }
                },
            }
        }
    }

    /// A string literal at the current position (its quote), `prefix` already consumed.
    fn string(&mut self, start: usize, prefix: &str) {
        let rest = self.rest();
        let quote = if rest.starts_with("\"\"\"") {
            "\"\"\""
        } else if rest.starts_with("'''") {
            "'''"
        } else if rest.starts_with('"') {
            "\""
        } else {
            "'"
        };
        let triple = quote.len() == 3;
        self.pos += quote.len();
        let body_start = self.pos;
        loop {
            let rest = self.rest();
            if rest.starts_with(quote) {
                break;
            }
            match rest.chars().next() {
                None => {
                    self.push(Tok::Error(unterminated(self.lines, start)), start);
                    return;
                }
                Some('\n') if !triple => {
                    // Not consumed: the newline still ends the statement.
                    self.push(Tok::Error(unterminated(self.lines, start)), start);
                    return;
                }
                Some('\\') => {
                    self.pos += 1;
                    if let Some(c) = self.peek() {
                        self.pos += c.len_utf8();
                    }
                }
                Some(c) => self.pos += c.len_utf8(),
            }
        }
        let body = self.src.get(body_start..self.pos).unwrap_or("");
        self.pos += quote.len();
        let tok = if prefix.contains('f') {
            Tok::Error("f-strings are not allowed (arguments must be literals)".to_string())
        } else if prefix.contains('b') {
            Tok::Error("bytes literals are not supported (use a string)".to_string())
        } else if prefix.contains('r') {
            Tok::Str(body.to_string())
        } else {
            match unescape(body) {
                Ok(s) => Tok::Str(s),
                Err(e) => Tok::Error(e),
            }
        };
        self.push(tok, start);
    }

    fn number(&mut self, start: usize) {
        let tok = self.number_tok(start);
        // A number running into a name (`12abc`, `1j`) is not a literal of the subset.
        if let Some(c) = self.peek().filter(|c| is_ident_continue(*c) || *c == '.') {
            let end = self.eat_while(|c| is_ident_continue(c) || c == '.');
            let text = self.src.get(start..end).unwrap_or("");
            let msg = if matches!(c, 'j' | 'J') {
                format!("complex number {text} is not supported")
            } else {
                format!("invalid number literal {text:?}")
            };
            self.push(Tok::Error(msg), start);
            return;
        }
        self.push(tok, start);
    }

    fn number_tok(&mut self, start: usize) -> Tok {
        let radix = match self
            .rest()
            .get(..2)
            .map(|p| p.to_ascii_lowercase())
            .as_deref()
        {
            Some("0x") => 16,
            Some("0o") => 8,
            Some("0b") => 2,
            _ => 10,
        };
        if radix != 10 {
            self.pos += 2;
            let digits_start = self.pos;
            let end = self.eat_while(|c| c.is_digit(radix) || c == '_');
            let digits = self.src.get(digits_start..end).unwrap_or("");
            let text = self.src.get(start..end).unwrap_or("");
            // `0x_ff` is valid Python: an underscore may follow the prefix.
            if digits.is_empty() || digits == "_" || !group_ok(digits.trim_start_matches('_')) {
                return Tok::Error(format!("invalid number literal {text:?}"));
            }
            if digits.starts_with("__") {
                return Tok::Error(format!("invalid number literal {text:?}"));
            }
            return match u64::from_str_radix(&digits.replace('_', ""), radix) {
                Ok(v) => Tok::Int(v),
                Err(_) => Tok::Error(format!("integer literal {text} is too large (64 bits)")),
            };
        }
        let int_end = self.eat_while(|c| c.is_ascii_digit() || c == '_');
        let int_part = self.src.get(start..int_end).unwrap_or("");
        let mut frac_part = None;
        let mut exp_part = None;
        if self.peek() == Some('.') {
            self.pos += 1;
            let frac_start = self.pos;
            let end = self.eat_while(|c| c.is_ascii_digit() || c == '_');
            frac_part = Some(self.src.get(frac_start..end).unwrap_or(""));
        }
        let mut exp_negative = false;
        if matches!(self.peek(), Some('e' | 'E')) {
            let sign = usize::from(matches!(self.peek_at(1), Some('+' | '-')));
            if self.peek_at(1 + sign).is_some_and(|c| c.is_ascii_digit()) {
                exp_negative = self.peek_at(1) == Some('-');
                self.pos += 1 + sign;
                let exp_start = self.pos;
                let end = self.eat_while(|c| c.is_ascii_digit() || c == '_');
                exp_part = Some(self.src.get(exp_start..end).unwrap_or(""));
            }
        }
        let text = self.src.get(start..self.pos).unwrap_or("");
        let groups_ok = (int_part.is_empty() || group_ok(int_part))
            && frac_part.is_none_or(|f| f.is_empty() || group_ok(f))
            && exp_part.is_none_or(group_ok)
            && !(int_part.is_empty() && frac_part.is_none_or(str::is_empty));
        if !groups_ok {
            return Tok::Error(format!("invalid number literal {text:?}"));
        }
        if frac_part.is_none() && exp_part.is_none() {
            let digits = int_part.replace('_', "");
            if digits.len() > 1 && digits.starts_with('0') && digits.bytes().any(|b| b != b'0') {
                return Tok::Error(format!(
                    "leading zeros in the integer literal {text} are not allowed (write a \
                     string for codes like \"007\")"
                ));
            }
            return match digits.parse::<u64>() {
                Ok(v) => Tok::Int(v),
                Err(_) => Tok::Error(format!("integer literal {text} is too large (64 bits)")),
            };
        }
        let mut normalized = String::with_capacity(text.len() + 2);
        normalized.push_str(if int_part.is_empty() { "0" } else { int_part });
        normalized.push('.');
        normalized.push_str(match frac_part {
            Some(f) if !f.is_empty() => f,
            _ => "0",
        });
        if let Some(e) = exp_part {
            normalized.push('e');
            if exp_negative {
                normalized.push('-');
            }
            normalized.push_str(e);
        }
        match normalized.replace('_', "").parse::<f64>() {
            Ok(v) if v.is_finite() => Tok::Float(v),
            _ => Tok::Error(format!("float literal {text} is out of range")),
        }
    }
}

/// A group of digits with single underscores between digits only.
fn group_ok(g: &str) -> bool {
    !g.is_empty() && !g.starts_with('_') && !g.ends_with('_') && !g.contains("__")
}

fn unterminated(lines: &Lines, start: usize) -> String {
    let (line, _) = lines.locate(start);
    format!("unterminated string literal (starting on line {line} of the code)")
}

/// Decodes the escapes of a non-raw string body.
fn unescape(body: &str) -> Result<String, String> {
    let mut out = String::with_capacity(body.len());
    let mut chars = body.chars().peekable();
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        let Some(e) = chars.next() else {
            // Cannot happen (the lexer pairs backslashes), kept literal.
            out.push('\\');
            break;
        };
        match e {
            '\n' => {}
            '\r' => {
                if chars.peek() == Some(&'\n') {
                    chars.next();
                }
            }
            '\\' | '\'' | '"' => out.push(e),
            'a' => out.push('\x07'),
            'b' => out.push('\x08'),
            'f' => out.push('\x0c'),
            'n' => out.push('\n'),
            'r' => out.push('\r'),
            't' => out.push('\t'),
            'v' => out.push('\x0b'),
            '0'..='7' => {
                let mut value = e.to_digit(8).unwrap_or(0);
                for _ in 0..2 {
                    match chars.peek().and_then(|c| c.to_digit(8)) {
                        Some(d) => {
                            value = value * 8 + d;
                            chars.next();
                        }
                        None => break,
                    }
                }
                out.push(char::from_u32(value).unwrap_or('\u{fffd}'));
            }
            'x' | 'u' | 'U' => {
                let len = match e {
                    'x' => 2,
                    'u' => 4,
                    _ => 8,
                };
                let mut value: u32 = 0;
                for _ in 0..len {
                    match chars.peek().and_then(|c| c.to_digit(16)) {
                        Some(d) => {
                            value = value * 16 + d;
                            chars.next();
                        }
                        None => {
                            return Err(format!(
                                "invalid \\{e} escape in a string (expected {len} hex digits)"
                            ))
                        }
                    }
                }
                match char::from_u32(value) {
                    Some(c) => out.push(c),
                    None => {
                        return Err(format!(
                            "invalid \\{e}{value:0len$x} escape in a string (not a Unicode \
                             scalar value)"
                        ))
                    }
                }
            }
            'N' => return Err("\\N{...} escapes are not supported".to_string()),
            other => {
                // Python keeps unknown escapes as they are.
                out.push('\\');
                out.push(other);
            }
        }
    }
    Ok(out)
}

// ---------------------------------------------------------------------------------------
// Statements

struct Statement {
    tokens: Vec<Token>,
    start: usize,
    end: usize,
    /// Set when the statement is rejected before parsing (a block with its body).
    error: Option<String>,
}

/// Splits at newlines and `;` outside brackets; drops the newlines inside brackets. A block
/// header (`for x in y:`) takes the more indented statements after it along.
fn split_statements(lines: &Lines, tokens: Vec<Token>) -> Vec<Statement> {
    let mut raw_statements: Vec<Vec<Token>> = Vec::new();
    let mut current = Vec::new();
    let mut depth = 0usize;
    for t in tokens {
        match t.tok {
            Tok::Newline if depth > 0 => {}
            Tok::Newline | Tok::Op(";") if depth == 0 => {
                if !current.is_empty() {
                    raw_statements.push(std::mem::take(&mut current));
                }
            }
            Tok::Op("(" | "[" | "{") => {
                depth += 1;
                current.push(t);
            }
            Tok::Op(")" | "]" | "}") => {
                depth = depth.saturating_sub(1);
                current.push(t);
            }
            _ => current.push(t),
        }
    }
    if !current.is_empty() {
        raw_statements.push(current);
    }

    let mut out: Vec<Statement> = Vec::new();
    let mut iter = raw_statements.into_iter().peekable();
    while let Some(tokens) = iter.next() {
        let (Some(first), Some(last)) = (tokens.first(), tokens.last()) else {
            continue;
        };
        let start = first.start;
        let mut end = last.end;
        let mut error = None;
        if last.tok == Tok::Op(":") {
            let indent = lines.locate(start).1;
            while let Some(next) = iter.peek() {
                match next.first() {
                    Some(t) if lines.locate(t.start).1 > indent => {
                        end = next.last().map_or(end, |t| t.end);
                        iter.next();
                    }
                    _ => break,
                }
            }
            let what = match &first.tok {
                Tok::Name(n) if is_keyword(n) => format!("`{n}` blocks are"),
                _ => "blocks (`...:`) are".to_string(),
            };
            error = Some(format!(
                "{what} not allowed; write each tool call as a statement of its own"
            ));
        }
        out.push(Statement {
            tokens,
            start,
            end,
            error,
        });
    }
    out
}

fn is_keyword(word: &str) -> bool {
    matches!(
        word,
        "False"
            | "None"
            | "True"
            | "and"
            | "as"
            | "assert"
            | "async"
            | "await"
            | "break"
            | "class"
            | "continue"
            | "def"
            | "del"
            | "elif"
            | "else"
            | "except"
            | "finally"
            | "for"
            | "from"
            | "global"
            | "if"
            | "import"
            | "in"
            | "is"
            | "lambda"
            | "nonlocal"
            | "not"
            | "or"
            | "pass"
            | "raise"
            | "return"
            | "try"
            | "while"
            | "with"
            | "yield"
            | "match"
            | "case"
    )
}

fn describe(tok: Option<&Tok>) -> String {
    match tok {
        None | Some(Tok::Newline) => "the end of the statement".to_string(),
        Some(Tok::Name(n)) => format!("`{n}`"),
        Some(Tok::Str(_)) => "a string literal".to_string(),
        Some(Tok::Int(_) | Tok::Float(_)) => "a number".to_string(),
        Some(Tok::Op(op)) => format!("`{op}`"),
        Some(Tok::Error(e)) => e.clone(),
    }
}

fn tool_list(tools: &[ToolDefinition]) -> String {
    if tools.is_empty() {
        "none".to_string()
    } else {
        tools
            .iter()
            .map(|t| t.name.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    }
}

fn parse_statement(tokens: &[Token], tools: &[ToolDefinition]) -> Result<ToolCall, String> {
    // The first lexer error, if it comes before anything the parser would object to, is found
    // by the parser itself; assignments are checked first since they are the most common.
    let mut depth = 0usize;
    for (i, t) in tokens.iter().enumerate() {
        match &t.tok {
            Tok::Op("(" | "[" | "{") => depth += 1,
            Tok::Op(")" | "]" | "}") => depth = depth.saturating_sub(1),
            Tok::Op(op) if depth == 0 && ASSIGNMENTS.contains(op) => {
                let target = match tokens.get(..i) {
                    Some(
                        [Token {
                            tok: Tok::Name(n), ..
                        }],
                    ) => format!(" to `{n}`"),
                    _ => String::new(),
                };
                return Err(format!(
                    "assignment{target} (`{op}`) is not allowed; write the tool call alone, \
                     e.g. get_weather(city=\"Paris\")"
                ));
            }
            _ => {}
        }
    }
    let mut p = Parser { tokens, pos: 0 };
    if let Some(Tok::Name(word)) = p.peek() {
        if is_keyword(word) && !matches!(word.as_str(), "True" | "False" | "None") {
            return Err(keyword_error(word));
        }
    }
    let call = p.call(tools, true)?;
    if let Some(Tok::Error(e)) = p.peek() {
        return Err(e.clone());
    }
    if let Some(t) = p.peek() {
        return Err(format!(
            "unexpected {} after the call (a statement must be a single tool call)",
            describe(Some(t))
        ));
    }
    Ok(call)
}

fn keyword_error(word: &str) -> String {
    match word {
        "import" | "from" => "import statements are not allowed (the tools are already \
                              available: call them directly)"
            .to_string(),
        "def" | "class" => format!("`{word}` definitions are not allowed; call the tools directly"),
        "lambda" => "lambda expressions are not allowed".to_string(),
        _ => format!(
            "`{word}` statements are not allowed; only tool calls with literal arguments are, \
             e.g. get_weather(city=\"Paris\")"
        ),
    }
}

struct Parser<'t> {
    tokens: &'t [Token],
    pos: usize,
}

impl Parser<'_> {
    fn peek(&self) -> Option<&Tok> {
        self.tokens.get(self.pos).map(|t| &t.tok)
    }

    fn peek_at(&self, n: usize) -> Option<&Tok> {
        self.tokens.get(self.pos + n).map(|t| &t.tok)
    }

    fn next(&mut self) -> Option<&Tok> {
        let t = self.tokens.get(self.pos).map(|t| &t.tok);
        if t.is_some() {
            self.pos += 1;
        }
        t
    }

    fn eat(&mut self, op: &'static str) -> bool {
        if self.peek() == Some(&Tok::Op(op)) {
            self.pos += 1;
            true
        } else {
            false
        }
    }

    /// A callee: a name, or names joined by `.` / `-` written without spaces (tool names may
    /// contain those characters).
    fn callee(&mut self) -> Result<String, String> {
        let mut name = match self.peek() {
            Some(Tok::Name(n)) => n.clone(),
            Some(Tok::Error(e)) => return Err(e.clone()),
            other => {
                return Err(format!(
                    "expected a tool call like get_weather(city=\"Paris\"), found {}",
                    describe(other)
                ))
            }
        };
        self.pos += 1;
        while let Some([prev, op, next]) = self.tokens.get(self.pos.saturating_sub(1)..self.pos + 2)
        {
            let (Tok::Op(sep @ ("." | "-")), Tok::Name(part)) = (&op.tok, &next.tok) else {
                break;
            };
            if prev.end != op.start || op.end != next.start {
                break;
            }
            name.push_str(sep);
            name.push_str(part);
            self.pos += 2;
        }
        Ok(name)
    }

    /// `name(args)`, or `print(name(args))` when `allow_print`.
    fn call(&mut self, tools: &[ToolDefinition], allow_print: bool) -> Result<ToolCall, String> {
        let name = self.callee()?;
        let tool = tools.iter().find(|t| t.name == name);
        if self.peek() != Some(&Tok::Op("(")) {
            return Err(match self.peek() {
                None => format!("`{name}` alone is not a tool call (expected {name}(...))"),
                Some(Tok::Error(e)) => e.clone(),
                other => format!(
                    "expected `(` after `{name}`, found {} (only tool calls with literal \
                     arguments are allowed)",
                    describe(other)
                ),
            });
        }
        let Some(tool) = tool else {
            if name == "print" && allow_print {
                return self.print_wrapper(tools);
            }
            if name.contains('.') {
                return Err(format!(
                    "attribute call `{name}(...)` is not allowed; call a tool by its name \
                     (available: {})",
                    tool_list(tools)
                ));
            }
            return Err(format!(
                "unknown tool {name:?} (available: {})",
                tool_list(tools)
            ));
        };
        self.pos += 1;
        let (positional, keywords) = self.arguments(&name)?;
        let params = tool.parameter_names();
        if positional.len() > params.len() {
            let n = params.len();
            return Err(format!(
                "{name} takes at most {n} positional argument{} ({} given)",
                if n == 1 { "" } else { "s" },
                positional.len()
            ));
        }
        let mut arguments = Map::new();
        for (param, value) in params.into_iter().zip(positional) {
            arguments.insert(param, value);
        }
        for (key, value) in keywords {
            if arguments.contains_key(&key) {
                return Err(format!(
                    "{name} got multiple values for argument {key:?} (positional and keyword)"
                ));
            }
            arguments.insert(key, value);
        }
        Ok(ToolCall { name, arguments })
    }

    /// After `print`: `(tool(...))`.
    fn print_wrapper(&mut self, tools: &[ToolDefinition]) -> Result<ToolCall, String> {
        self.pos += 1; // `(`
        if let Some(Tok::Error(e)) = self.peek() {
            return Err(e.clone());
        }
        let inner_is_call = matches!(self.peek(), Some(Tok::Name(_)))
            && matches!(self.peek_at(1), Some(Tok::Op("(" | "." | "-")));
        if !inner_is_call {
            return Err(format!(
                "print(...) is only accepted around a single tool call, found {}",
                describe(self.peek())
            ));
        }
        let call = self.call(tools, false)?;
        self.eat(",");
        if let Some(Tok::Error(e)) = self.peek() {
            return Err(e.clone());
        }
        if !self.eat(")") {
            return Err(format!(
                "print(...) must contain exactly one tool call, found {} after it",
                describe(self.peek())
            ));
        }
        Ok(call)
    }

    /// After `(`: the arguments and the `)`.
    #[allow(clippy::type_complexity)]
    fn arguments(&mut self, name: &str) -> Result<(Vec<Value>, Vec<(String, Value)>), String> {
        let mut positional = Vec::new();
        let mut keywords: Vec<(String, Value)> = Vec::new();
        loop {
            match self.peek() {
                Some(Tok::Op(")")) => {
                    self.pos += 1;
                    break;
                }
                Some(Tok::Op("*")) => {
                    return Err("*args unpacking is not allowed in a tool call".to_string())
                }
                Some(Tok::Op("**")) => {
                    return Err("**kwargs unpacking is not allowed in a tool call".to_string())
                }
                None => return Err(format!("unclosed `(` of {name}(...): expected `)`")),
                _ => {}
            }
            if let (Some(Tok::Name(key)), Some(Tok::Op("="))) = (self.peek(), self.peek_at(1)) {
                let key = key.clone();
                self.pos += 2;
                let value = self.value(0)?;
                if keywords.iter().any(|(k, _)| *k == key) {
                    return Err(format!("keyword argument {key:?} given twice"));
                }
                keywords.push((key, value));
            } else {
                if !keywords.is_empty() {
                    return Err("positional argument follows keyword argument".to_string());
                }
                positional.push(self.value(0)?);
            }
            match self.peek() {
                Some(Tok::Op(",")) => self.pos += 1,
                Some(Tok::Op(")")) => {}
                None => return Err(format!("unclosed `(` of {name}(...): expected `)`")),
                other => return Err(after_value_error(other, "`,` or `)`")),
            }
        }
        Ok((positional, keywords))
    }

    /// A literal.
    fn value(&mut self, depth: usize) -> Result<Value, String> {
        if depth >= MAX_DEPTH {
            return Err(format!(
                "arguments nested deeper than {MAX_DEPTH} levels are not allowed"
            ));
        }
        let tok = self.next().cloned();
        match tok {
            Some(Tok::Str(s)) => {
                let mut s = s;
                while let Some(Tok::Str(more)) = self.peek() {
                    s.push_str(more);
                    self.pos += 1;
                }
                Ok(Value::String(s))
            }
            Some(Tok::Int(v)) => Ok(Value::from(v)),
            Some(Tok::Float(v)) => float(v),
            Some(Tok::Op(sign @ ("-" | "+"))) => match self.next().cloned() {
                Some(Tok::Int(v)) if sign == "+" => Ok(Value::from(v)),
                Some(Tok::Int(v)) => {
                    let v = i64::try_from(-i128::from(v))
                        .map_err(|_| format!("integer literal -{v} is too large (64 bits)"))?;
                    Ok(Value::from(v))
                }
                Some(Tok::Float(v)) => float(if sign == "-" { -v } else { v }),
                Some(Tok::Error(e)) => Err(e),
                other => Err(format!(
                    "unary `{sign}` is only allowed before a number, found {} (expressions \
                     are not allowed)",
                    describe(other.as_ref())
                )),
            },
            Some(Tok::Name(n)) => match n.as_str() {
                "True" => Ok(Value::Bool(true)),
                "False" => Ok(Value::Bool(false)),
                "None" => Ok(Value::Null),
                "lambda" => Err("lambda expressions are not allowed".to_string()),
                _ => Err(match self.peek() {
                    Some(Tok::Op("(")) => format!(
                        "calls inside arguments are not allowed (found `{n}(...)`); arguments \
                         must be literals"
                    ),
                    Some(Tok::Name(word)) if word == "for" => {
                        "comprehensions are not allowed; arguments must be literals".to_string()
                    }
                    Some(Tok::Op(".")) => format!(
                        "attribute access (`{n}.`) is not allowed in arguments; arguments \
                         must be literals"
                    ),
                    _ => format!(
                        "variable `{n}` is not allowed as an argument; arguments must be \
                         literals (strings, numbers, True/False/None, lists, tuples, dicts)"
                    ),
                }),
            },
            Some(Tok::Op("[")) => {
                let items = self.sequence("]", depth)?;
                Ok(Value::Array(items))
            }
            Some(Tok::Op("(")) => {
                if self.eat(")") {
                    return Ok(Value::Array(Vec::new()));
                }
                let first = self.value(depth + 1)?;
                if self.eat(")") {
                    // Parenthesized, not a tuple.
                    return Ok(first);
                }
                if !self.eat(",") {
                    return Err(after_value_error(self.peek(), "`,` or `)`"));
                }
                let mut items = vec![first];
                items.extend(self.sequence(")", depth)?);
                Ok(Value::Array(items))
            }
            Some(Tok::Op("{")) => self.dict(depth),
            Some(Tok::Op("*")) => Err("*args unpacking is not allowed".to_string()),
            Some(Tok::Op("**")) => Err("**kwargs unpacking is not allowed".to_string()),
            Some(Tok::Error(e)) => Err(e),
            other => Err(format!(
                "expected a literal argument, found {}",
                describe(other.as_ref())
            )),
        }
    }

    /// Items up to `close` (consumed), trailing comma allowed.
    fn sequence(&mut self, close: &'static str, depth: usize) -> Result<Vec<Value>, String> {
        let mut items = Vec::new();
        loop {
            if self.eat(close) {
                return Ok(items);
            }
            if self.peek().is_none() {
                return Err(format!("unclosed bracket: expected `{close}`"));
            }
            items.push(self.value(depth + 1)?);
            if self.eat(",") {
                continue;
            }
            if self.peek() != Some(&Tok::Op(close)) {
                return Err(after_value_error(self.peek(), &format!("`,` or `{close}`")));
            }
        }
    }

    /// After `{`.
    fn dict(&mut self, depth: usize) -> Result<Value, String> {
        let mut map = Map::new();
        loop {
            if self.eat("}") {
                return Ok(Value::Object(map));
            }
            if self.peek().is_none() {
                return Err("unclosed bracket: expected `}`".to_string());
            }
            if self.peek() == Some(&Tok::Op("**")) {
                return Err("**kwargs unpacking is not allowed".to_string());
            }
            let key = self.value(depth + 1)?;
            if !self.eat(":") {
                return Err(match self.peek() {
                    Some(Tok::Op("," | "}")) => {
                        "set literals are not supported (use a list)".to_string()
                    }
                    other => after_value_error(other, "`:`"),
                });
            }
            let Value::String(key) = key else {
                return Err(format!(
                    "dict keys must be strings, found {}",
                    match key {
                        Value::Null => "None".to_string(),
                        Value::Bool(true) => "True".to_string(),
                        Value::Bool(false) => "False".to_string(),
                        Value::Array(_) => "a tuple".to_string(),
                        other => other.to_string(),
                    }
                ));
            };
            let value = self.value(depth + 1)?;
            map.insert(key, value);
            if self.eat(",") {
                continue;
            }
            if self.peek() != Some(&Tok::Op("}")) {
                return Err(after_value_error(self.peek(), "`,` or `}`"));
            }
        }
    }
}

fn float(v: f64) -> Result<Value, String> {
    Number::from_f64(v)
        .map(Value::Number)
        .ok_or_else(|| format!("float literal {v} is out of range"))
}

/// Something other than a separator after an argument value.
fn after_value_error(found: Option<&Tok>, expected: &str) -> String {
    match found {
        Some(Tok::Error(e)) => e.clone(),
        Some(Tok::Name(n)) if n == "for" => {
            "comprehensions are not allowed; arguments must be literals".to_string()
        }
        Some(Tok::Name(n)) if n == "if" => {
            "conditional expressions are not allowed; arguments must be literals".to_string()
        }
        Some(Tok::Name(n)) if matches!(n.as_str(), "and" | "or" | "not" | "in" | "is") => {
            format!("expressions are not allowed in arguments (found `{n}`); arguments must be literals")
        }
        Some(Tok::Op(op)) if !matches!(*op, "," | ")" | "]" | "}" | ":") => format!(
            "expressions are not allowed in arguments (found `{op}` after a literal); \
             arguments must be literals"
        ),
        Some(Tok::Str(_)) | Some(Tok::Int(_)) | Some(Tok::Float(_)) | Some(Tok::Name(_)) => {
            format!(
                "expected {expected}, found {} (missing comma?)",
                describe(found)
            )
        }
        None | Some(Tok::Newline) => {
            format!("unexpected end of the statement (unclosed bracket): expected {expected}")
        }
        other => format!("expected {expected}, found {}", describe(other)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn toks(src: &str) -> Vec<Tok> {
        lex(src, &Lines::new(src))
            .into_iter()
            .map(|t| t.tok)
            .collect()
    }

    #[test]
    fn lexes_numbers() {
        assert_eq!(toks("12"), [Tok::Int(12)]);
        assert_eq!(toks("1_000"), [Tok::Int(1000)]);
        assert_eq!(toks("0xff"), [Tok::Int(255)]);
        assert_eq!(toks("0x_ff"), [Tok::Int(255)]);
        assert_eq!(toks("0o17"), [Tok::Int(15)]);
        assert_eq!(toks("0b101"), [Tok::Int(5)]);
        assert_eq!(toks("0"), [Tok::Int(0)]);
        assert_eq!(toks("00"), [Tok::Int(0)]);
        assert_eq!(toks("1.5"), [Tok::Float(1.5)]);
        assert_eq!(toks("1."), [Tok::Float(1.0)]);
        assert_eq!(toks(".5"), [Tok::Float(0.5)]);
        assert_eq!(toks("1e3"), [Tok::Float(1000.0)]);
        assert_eq!(toks("1.e3"), [Tok::Float(1000.0)]);
        assert_eq!(toks("2.5E-3"), [Tok::Float(0.0025)]);
        assert_eq!(toks("1e+2"), [Tok::Float(100.0)]);
        assert_eq!(toks("1_0.2_5"), [Tok::Float(10.25)]);
        assert_eq!(toks("18446744073709551615"), [Tok::Int(u64::MAX)]);
        for bad in [
            "1__0",
            "1_",
            "0x",
            "0x_",
            "007",
            "1j",
            "12abc",
            "1e999",
            "1.5.2",
            "0xfg",
            "18446744073709551616",
        ] {
            let t = toks(bad);
            assert!(matches!(t.as_slice(), [Tok::Error(_)]), "{bad}: {t:?}");
        }
    }

    #[test]
    fn lexes_strings() {
        assert_eq!(toks(r#""a\nb""#), [Tok::Str("a\nb".into())]);
        assert_eq!(toks(r"'\x41\u00e9\U0001F600'"), [Tok::Str("Aé😀".into())]);
        assert_eq!(toks(r"'\101\0'"), [Tok::Str("A\0".into())]);
        assert_eq!(toks(r"'\d'"), [Tok::Str("\\d".into())]);
        assert_eq!(toks(r#"r'\n\''"#), [Tok::Str(r"\n\'".into())]);
        assert_eq!(toks("'''a\n'b'\n'''"), [Tok::Str("a\n'b'\n".into())]);
        assert_eq!(toks("'a\\\nb'"), [Tok::Str("ab".into())]);
        assert!(matches!(toks("'abc").as_slice(), [Tok::Error(e)] if e.contains("unterminated")));
        assert!(matches!(
            toks("'abc\nf()").as_slice(),
            [
                Tok::Error(_),
                Tok::Newline,
                Tok::Name(_),
                Tok::Op("("),
                Tok::Op(")")
            ]
        ));
        assert!(matches!(toks(r"'\ud800'").as_slice(), [Tok::Error(e)] if e.contains("\\ud800")));
        assert!(matches!(toks(r"'\x4'").as_slice(), [Tok::Error(e)] if e.contains("\\x")));
        assert!(matches!(toks("f'x'").as_slice(), [Tok::Error(e)] if e.contains("f-string")));
        assert!(matches!(toks("b'x'").as_slice(), [Tok::Error(e)] if e.contains("bytes")));
    }

    #[test]
    fn lexes_operators_comments_and_odd_characters() {
        assert_eq!(
            toks("a ** b # c ( \n;"),
            [
                Tok::Name("a".into()),
                Tok::Op("**"),
                Tok::Name("b".into()),
                Tok::Newline,
                Tok::Op(";")
            ]
        );
        assert!(matches!(toks("$").as_slice(), [Tok::Error(_)]));
        assert!(matches!(
            toks("é€").as_slice(),
            [Tok::Name(_), Tok::Error(_)]
        ));
    }

    #[test]
    fn fences_are_stripped() {
        assert_eq!(strip_fence("```python\nf()\n```\n"), "f()\n");
        assert_eq!(strip_fence("\nf()\n"), "\nf()\n");
        assert_eq!(strip_fence("```"), "");
        assert_eq!(strip_fence("\n ```py\nf()```"), "f()");
    }

    #[test]
    fn blocks_take_their_body() {
        let code = "for c in ['a']:\n    get(c)\n    get(c)\nget('x')";
        let lines = Lines::new(code);
        let stmts = split_statements(&lines, lex(code, &lines));
        assert_eq!(stmts.len(), 2);
        assert_eq!(
            code.get(stmts[0].start..stmts[0].end),
            Some("for c in ['a']:\n    get(c)\n    get(c)")
        );
        assert!(stmts[0].error.as_deref().unwrap().contains("`for` blocks"));
        assert!(stmts[1].error.is_none());
    }
}
