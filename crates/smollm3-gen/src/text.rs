//! Streaming text processing for the generation loop.
//!
//! The model's detokenized output arrives as arbitrary small chunks (one token's
//! text each: possibly empty, one char, or several chars, and a tag such as
//! `</think>` may be split as `"</"`, `"think"`, `">"`). Two small state
//! machines turn that stream into events:
//!
//! - [`StopMatcher`] finds user stop strings, holding back only the text that
//!   could still turn out to be the beginning of a stop string.
//! - [`OutputSplitter`] classifies the output into reasoning (`<think>` …
//!   `</think>`), answer text and tool-call spans.
//!
//! Both work on `char` boundaries only (never split a UTF-8 sequence) and never
//! panic on any input. Their results do not depend on how the text is chunked:
//! pushing a string in pieces gives the same text (after merging adjacent pieces
//! of the same kind) as pushing it at once.

/// What [`StopMatcher::push`] returns.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StopOutcome {
    /// Text that is safe to emit (may be empty while a possible stop string is held back).
    Emit(String),
    /// A stop string was found: `before` is the not-yet-emitted text before it.
    Stopped { before: String, stop: String },
}

/// Finds user stop strings in a text stream, even across chunk boundaries.
///
/// Every pushed chunk is appended to the held-back text; if a stop string
/// occurs in it, [`StopOutcome::Stopped`] reports the text before it. Otherwise
/// everything except the longest suffix that is a proper prefix of some stop
/// string is emitted, and that suffix is held back (so it is always shorter
/// than the longest stop string).
///
/// When several stop occurrences are present in the same buffer, the one that
/// is *completed first* wins (smallest end position; among equal ends, the
/// earliest start, i.e. the longest stop). This is the only rule that does not
/// depend on chunking: a streaming generator must stop as soon as any stop
/// string is complete. It coincides with "earliest start, longest among equal
/// starts" unless one stop string contains another one strictly inside it.
#[derive(Debug, Clone)]
pub struct StopMatcher {
    /// Non-empty stop strings.
    stops: Vec<String>,
    /// Text received but not emitted yet (a proper prefix of some stop string).
    held: String,
    /// A stop string has been reported; further input is ignored.
    stopped: bool,
}

impl StopMatcher {
    /// Creates a matcher for `stops`; empty strings are ignored, duplicates are harmless.
    pub fn new(stops: &[String]) -> Self {
        let mut list: Vec<String> = Vec::new();
        for stop in stops {
            if !stop.is_empty() && !list.contains(stop) {
                list.push(stop.clone());
            }
        }
        StopMatcher {
            stops: list,
            held: String::new(),
            stopped: false,
        }
    }

    /// Feeds the next chunk of output.
    ///
    /// Returns the text that can no longer be part of a stop string, or
    /// [`StopOutcome::Stopped`] when a stop string is complete. After a stop,
    /// further pushes return `Emit("")`.
    pub fn push(&mut self, text: &str) -> StopOutcome {
        if self.stopped {
            return StopOutcome::Emit(String::new());
        }
        if self.stops.is_empty() {
            return StopOutcome::Emit(text.to_string());
        }
        let mut buf = std::mem::take(&mut self.held);
        buf.push_str(text);

        // The stop completed first: smallest end, then smallest start.
        let mut best: Option<(usize, usize, &str)> = None;
        for stop in &self.stops {
            if let Some(start) = buf.find(stop.as_str()) {
                let end = start + stop.len();
                let better = match best {
                    None => true,
                    Some((b_end, b_start, _)) => (end, start) < (b_end, b_start),
                };
                if better {
                    best = Some((end, start, stop.as_str()));
                }
            }
        }
        if let Some((_, start, stop)) = best {
            let stop = stop.to_string();
            buf.truncate(start);
            self.stopped = true;
            return StopOutcome::Stopped { before: buf, stop };
        }

        let keep_from = partial_suffix_start(&buf, &self.stops);
        self.held = buf.split_off(keep_from);
        StopOutcome::Emit(buf)
    }

    /// Ends the stream without a stop: returns the held-back text (empty after a stop).
    pub fn finish(&mut self) -> String {
        std::mem::take(&mut self.held)
    }
}

/// One classified piece of model output.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Piece {
    /// Text inside the `<think>` … `</think>` block (tags excluded, outer whitespace trimmed).
    Reasoning(String),
    /// Answer text.
    Answer(String),
    /// A tool-call span, from the opening tag through the closing tag inclusive.
    /// `complete` is false when the stream ended before the closing tag.
    ToolCall { raw: String, complete: bool },
}

const THINK_OPEN: &str = "<think>";
const THINK_CLOSE: &str = "</think>";

/// Where the splitter currently is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// Very start of the output (reasoning parsing on): skipping leading
    /// whitespace and waiting to see whether `<think>` comes.
    Start,
    /// Inside reasoning; `at_start` while leading whitespace is still trimmed.
    Reasoning { at_start: bool },
    /// Answer text; `at_start` while leading whitespace is still trimmed.
    Answer { at_start: bool },
    /// Inside a tool-call span opened by the tag pair with this index.
    Tool { tag: usize },
}

/// Splits model output into reasoning, answer and tool-call spans.
///
/// Behaviour:
/// - With `parse_reasoning`, an opening `<think>` at the very start of the
///   output (after optional whitespace) starts reasoning, which ends at
///   `</think>`. If the output starts with anything else there is no reasoning
///   and `<think>` tags later on are plain answer text. With
///   `starts_in_reasoning` the output begins inside reasoning (the prompt ended
///   in `<think>`). If the stream ends inside reasoning, it was all reasoning.
/// - Leading whitespace of the reasoning and of the answer is dropped, as is
///   trailing whitespace of the reasoning (held back until a non-whitespace
///   reasoning char follows). Answer whitespace is otherwise kept as is.
/// - Without `parse_reasoning` everything is answer (think tags included,
///   nothing trimmed), apart from tool-call spans.
/// - In answer text, an opening tag of `tool_tags` starts a tool-call span which
///   is buffered (never shown as answer) and emitted whole as
///   [`Piece::ToolCall`] once its closing tag arrives, or with
///   `complete: false` at [`finish`](Self::finish). When one opening tag is a
///   prefix of another, the longest one that matches wins. Pairs with an empty
///   opening or closing tag are ignored. Tool tags are not recognised inside
///   reasoning.
/// - Text that might be the beginning of a tag relevant in the current state is
///   held back until decided; [`finish`](Self::finish) flushes it as text of the
///   current kind.
/// - Within one call, adjacent pieces of the same kind are merged and empty text
///   pieces are never produced.
#[derive(Debug, Clone)]
pub struct OutputSplitter {
    mode: Mode,
    /// Received text not processed yet (a possible partial tag).
    pending: String,
    /// Trailing whitespace inside reasoning, held until non-whitespace follows.
    ws_hold: String,
    /// Raw text of the open tool-call span (opening tag included).
    span: String,
    /// Where the open span's text is in a quoted string (its closing tag does not count
    /// there).
    quotes: QuoteTracker,
    /// Tool-call tag pairs, both non-empty.
    tool_tags: Vec<(String, String)>,
}

impl OutputSplitter {
    /// Creates a splitter; see the type documentation for the rules.
    pub fn new(
        parse_reasoning: bool,
        starts_in_reasoning: bool,
        tool_tags: &[(String, String)],
    ) -> Self {
        let mode = match (parse_reasoning, starts_in_reasoning) {
            (false, _) => Mode::Answer { at_start: false },
            (true, true) => Mode::Reasoning { at_start: true },
            (true, false) => Mode::Start,
        };
        OutputSplitter {
            mode,
            pending: String::new(),
            ws_hold: String::new(),
            span: String::new(),
            quotes: QuoteTracker::default(),
            tool_tags: tool_tags
                .iter()
                .filter(|(open, close)| !open.is_empty() && !close.is_empty())
                .cloned()
                .collect(),
        }
    }

    /// Feeds the next chunk of output and returns the pieces that are decided.
    pub fn push(&mut self, text: &str) -> Vec<Piece> {
        self.pending.push_str(text);
        let mut out = Vec::new();
        self.process(false, &mut out);
        out
    }

    /// Ends the stream: flushes held-back text in the current state's kind and
    /// an unclosed tool-call span as `ToolCall { complete: false }`.
    pub fn finish(&mut self) -> Vec<Piece> {
        let mut out = Vec::new();
        self.process(true, &mut out);
        // Trailing whitespace at the end of the reasoning is dropped.
        self.ws_hold.clear();
        if let Mode::Tool { tag } = self.mode {
            let mut raw = std::mem::take(&mut self.span);
            // The quotes could not be followed (an unterminated or multi-line string): the
            // first closing tag, quoted or not, ends the call after all.
            let close = self
                .tool_tags
                .get(tag)
                .map_or("", |(_, close)| close.as_str());
            let open_len = self.tool_tags.get(tag).map_or(0, |(open, _)| open.len());
            let closed = raw
                .get(open_len..)
                .and_then(|body| body.find(close))
                .filter(|_| !close.is_empty())
                .map(|at| open_len + at + close.len());
            let after = closed.map(|end| raw.split_off(end));
            out.push(Piece::ToolCall {
                raw,
                complete: closed.is_some(),
            });
            if let Some(after) = after.filter(|a| !a.is_empty()) {
                push_piece(&mut out, Piece::Answer(after));
            }
            self.mode = Mode::Answer { at_start: false };
        }
        out
    }

    /// Whether the splitter is currently inside reasoning.
    pub fn in_reasoning(&self) -> bool {
        matches!(self.mode, Mode::Reasoning { .. })
    }

    /// Processes as much of `pending` as can be decided (all of it when `at_end`).
    fn process(&mut self, at_end: bool, out: &mut Vec<Piece>) {
        let text = std::mem::take(&mut self.pending);
        let mut pos = 0;
        while pos < text.len() {
            let rest = &text[pos..];
            match self.mode {
                Mode::Start => {
                    let trimmed = rest.trim_start();
                    pos += rest.len() - trimmed.len();
                    if trimmed.is_empty() {
                        break;
                    }
                    match match_tags(trimmed, &[THINK_OPEN], at_end) {
                        TagMatch::Full(_) => {
                            pos += THINK_OPEN.len();
                            self.mode = Mode::Reasoning { at_start: true };
                        }
                        TagMatch::Partial => break,
                        TagMatch::None => self.mode = Mode::Answer { at_start: false },
                    }
                }
                Mode::Reasoning { at_start } => {
                    if rest.starts_with('<') {
                        match match_tags(rest, &[THINK_CLOSE], at_end) {
                            TagMatch::Full(_) => {
                                self.ws_hold.clear();
                                pos += THINK_CLOSE.len();
                                self.mode = Mode::Answer { at_start: true };
                                continue;
                            }
                            TagMatch::Partial => break,
                            TagMatch::None => {}
                        }
                    }
                    // Plain reasoning text up to the next possible tag.
                    let end = next_candidate(rest, |c| c == '<');
                    let at_start = self.reasoning_text(&rest[..end], at_start, out);
                    self.mode = Mode::Reasoning { at_start };
                    pos += end;
                }
                Mode::Answer { at_start } => {
                    let rest = if at_start {
                        let trimmed = rest.trim_start();
                        pos += rest.len() - trimmed.len();
                        if trimmed.is_empty() {
                            break;
                        }
                        trimmed
                    } else {
                        rest
                    };
                    if self.is_open_start(rest) {
                        let opens: Vec<&str> =
                            self.tool_tags.iter().map(|(o, _)| o.as_str()).collect();
                        match match_tags(rest, &opens, at_end) {
                            TagMatch::Full(tag) => {
                                self.span = opens[tag].to_string();
                                self.quotes = QuoteTracker::default();
                                pos += opens[tag].len();
                                self.mode = Mode::Tool { tag };
                                continue;
                            }
                            TagMatch::Partial => {
                                self.mode = Mode::Answer { at_start: false };
                                break;
                            }
                            TagMatch::None => {}
                        }
                    }
                    let end = next_candidate(rest, |c| {
                        self.tool_tags.iter().any(|(open, _)| open.starts_with(c))
                    });
                    push_piece(out, Piece::Answer(rest[..end].to_string()));
                    self.mode = Mode::Answer { at_start: false };
                    pos += end;
                }
                Mode::Tool { tag } => {
                    let close = match self.tool_tags.get(tag) {
                        Some((_, close)) => close.as_str(),
                        None => {
                            // Unreachable by construction; recover as answer text.
                            self.mode = Mode::Answer { at_start: false };
                            continue;
                        }
                    };
                    let mut quotes = self.quotes.clone();
                    if let Some((k, _)) = quotes.find(rest, &[close]) {
                        let end = k + close.len();
                        self.span.push_str(&rest[..end]);
                        out.push(Piece::ToolCall {
                            raw: std::mem::take(&mut self.span),
                            complete: true,
                        });
                        self.mode = Mode::Answer { at_start: false };
                        pos += end;
                    } else {
                        // Keep a possible partial closing tag pending.
                        let keep = if at_end {
                            rest.len()
                        } else {
                            partial_suffix_start(rest, &[close])
                        };
                        self.quotes.advance(&rest[..keep]);
                        self.span.push_str(&rest[..keep]);
                        pos += keep;
                        break;
                    }
                }
            }
        }
        self.pending = text[pos..].to_string();
    }

    /// Whether `s` starts with a char that begins some tool opening tag.
    fn is_open_start(&self, s: &str) -> bool {
        match s.chars().next() {
            Some(c) => self.tool_tags.iter().any(|(open, _)| open.starts_with(c)),
            None => false,
        }
    }

    /// Emits reasoning text, trimming leading whitespace (while `at_start`) and
    /// holding back trailing whitespace. Returns the new `at_start`.
    fn reasoning_text(&mut self, chunk: &str, mut at_start: bool, out: &mut Vec<Piece>) -> bool {
        let mut emitted = String::new();
        for c in chunk.chars() {
            if c.is_whitespace() {
                if !at_start {
                    self.ws_hold.push(c);
                }
            } else {
                emitted.push_str(&self.ws_hold);
                self.ws_hold.clear();
                emitted.push(c);
                at_start = false;
            }
        }
        push_piece(out, Piece::Reasoning(emitted));
        at_start
    }
}

/// Finds tags in a tool call's text outside its quoted strings: a JSON or Python string
/// argument may hold a tag's own text (`{"q": "rust <tool_call> tags"}`), which must neither
/// close the call nor open another. Strings are `"..."` or `'...'` with backslash escapes; a
/// quote still open at the end of a line ends there (JSON strings and one-line Python
/// strings cannot span lines), so a stray apostrophe hides a tag for one line at most.
#[derive(Debug, Clone, Default)]
pub struct QuoteTracker {
    quote: Option<char>,
    escaped: bool,
}

impl QuoteTracker {
    /// The byte offset in `text` of the first of `tags` that starts outside a string, and
    /// which tag it is; the state moves over the text before it (all of it when none).
    pub fn find(&mut self, text: &str, tags: &[&str]) -> Option<(usize, usize)> {
        for (i, c) in text.char_indices() {
            if self.quote.is_none() {
                if let Some(tag) = tags.iter().position(|t| text[i..].starts_with(t)) {
                    return Some((i, tag));
                }
            }
            self.step(c);
        }
        None
    }

    /// Moves the state over `text`.
    pub fn advance(&mut self, text: &str) {
        text.chars().for_each(|c| self.step(c));
    }

    fn step(&mut self, c: char) {
        match self.quote {
            Some(_) if self.escaped => self.escaped = false,
            Some(_) if c == '\\' => self.escaped = true,
            Some(q) if c == q || c == '\n' => self.quote = None,
            Some(_) => {}
            None if c == '"' || c == '\'' => self.quote = Some(c),
            None => {}
        }
    }
}

/// Result of matching tags at the beginning of a text.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum TagMatch {
    /// The text starts with this tag (the longest that can match).
    Full(usize),
    /// Undecided: the whole text is a proper prefix of some tag.
    Partial,
    /// No tag starts here.
    None,
}

/// Matches `tags` at the beginning of `s`, the longest tag winning. Unless
/// `at_end`, waits ([`TagMatch::Partial`]) while a longer tag could still match.
fn match_tags(s: &str, tags: &[&str], at_end: bool) -> TagMatch {
    let mut best: Option<(usize, usize)> = None;
    let mut could_extend = false;
    for (i, tag) in tags.iter().enumerate() {
        if s.starts_with(tag) {
            if best.is_none_or(|(_, len)| tag.len() > len) {
                best = Some((i, tag.len()));
            }
        } else if tag.starts_with(s) {
            could_extend = true;
        }
    }
    if could_extend && !at_end {
        TagMatch::Partial
    } else if let Some((i, _)) = best {
        TagMatch::Full(i)
    } else {
        TagMatch::None
    }
}

/// Byte length of the prefix of `s` before the next char (after the first one)
/// that satisfies `is_candidate`, or `s.len()`.
fn next_candidate(s: &str, is_candidate: impl Fn(char) -> bool) -> usize {
    s.char_indices()
        .skip(1)
        .find(|&(_, c)| is_candidate(c))
        .map_or(s.len(), |(i, _)| i)
}

/// Start of the longest suffix of `s` that is a proper prefix of one of
/// `tags` (a char boundary), or `s.len()` when there is none.
fn partial_suffix_start<T: AsRef<str>>(s: &str, tags: &[T]) -> usize {
    let longest = tags.iter().map(|t| t.as_ref().len()).max().unwrap_or(0);
    let mut from = s.len().saturating_sub(longest.saturating_sub(1));
    while !s.is_char_boundary(from) {
        from += 1;
    }
    for (i, _) in s[from..].char_indices() {
        let suffix = &s[from + i..];
        if tags.iter().any(|t| {
            let t = t.as_ref();
            t.len() > suffix.len() && t.starts_with(suffix)
        }) {
            return from + i;
        }
    }
    s.len()
}

/// Appends `piece`, merging it into the previous piece of the same text kind and
/// dropping empty text.
fn push_piece(out: &mut Vec<Piece>, piece: Piece) {
    match piece {
        Piece::Reasoning(s) | Piece::Answer(s) if s.is_empty() => {}
        Piece::Reasoning(s) => match out.last_mut() {
            Some(Piece::Reasoning(last)) => last.push_str(&s),
            _ => out.push(Piece::Reasoning(s)),
        },
        Piece::Answer(s) => match out.last_mut() {
            Some(Piece::Answer(last)) => last.push_str(&s),
            _ => out.push(Piece::Answer(s)),
        },
        piece => out.push(piece),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    // ---------- StopMatcher ----------

    fn matcher(stops: &[&str]) -> StopMatcher {
        let stops: Vec<String> = stops.iter().map(|s| s.to_string()).collect();
        StopMatcher::new(&stops)
    }

    fn emit(s: &str) -> StopOutcome {
        StopOutcome::Emit(s.to_string())
    }

    fn stopped(before: &str, stop: &str) -> StopOutcome {
        StopOutcome::Stopped {
            before: before.to_string(),
            stop: stop.to_string(),
        }
    }

    #[test]
    fn stop_without_stops_passes_through() {
        let mut m = matcher(&[]);
        assert_eq!(m.push("abc"), emit("abc"));
        assert_eq!(m.push(""), emit(""));
        assert_eq!(m.finish(), "");
        let mut m = matcher(&["", ""]);
        assert_eq!(m.push("a<b"), emit("a<b"));
        assert_eq!(m.finish(), "");
    }

    #[test]
    fn stop_inside_one_chunk() {
        let mut m = matcher(&["STOP"]);
        assert_eq!(m.push("hello STOP world"), stopped("hello ", "STOP"));
        assert_eq!(m.push("more"), emit(""));
        assert_eq!(m.finish(), "");
    }

    #[test]
    fn stop_across_chunks() {
        let mut m = matcher(&["</s>"]);
        assert_eq!(m.push("ab</"), emit("ab"));
        assert_eq!(m.push("s"), emit(""));
        assert_eq!(m.push(">tail"), stopped("", "</s>"));
    }

    #[test]
    fn stop_across_chunks_reports_held_text_before_the_stop() {
        let mut m = matcher(&["xyz"]);
        assert_eq!(m.push("ax"), emit("a"));
        assert_eq!(m.push("xy"), emit("x"));
        assert_eq!(m.push("z"), stopped("", "xyz"));
    }

    #[test]
    fn held_prefix_released_when_not_a_stop() {
        let mut m = matcher(&["###"]);
        assert_eq!(m.push("a##"), emit("a"));
        assert_eq!(m.held, "##");
        assert_eq!(m.push("b#"), emit("##b"));
        assert_eq!(m.finish(), "#");
    }

    #[test]
    fn stop_at_start_of_stream() {
        let mut m = matcher(&["ab"]);
        assert_eq!(m.push("ab"), stopped("", "ab"));
    }

    #[test]
    fn stop_earliest_start_and_longest_on_same_end() {
        let mut m = matcher(&["c", "ab"]);
        assert_eq!(m.push("xabc"), stopped("x", "ab"));
        let mut m = matcher(&["bc", "abc"]);
        assert_eq!(m.push("xabc"), stopped("x", "abc"));
    }

    #[test]
    fn stop_first_completed_wins_for_nested_stops() {
        // "c" is complete before "abcd" could be, whatever the chunking.
        let mut m = matcher(&["abcd", "c"]);
        assert_eq!(m.push("abcd"), stopped("ab", "c"));
        let mut m = matcher(&["abcd", "c"]);
        assert_eq!(m.push("ab"), emit(""));
        assert_eq!(m.push("c"), stopped("ab", "c"));
        // A stop that is a prefix of another one completes first.
        let mut m = matcher(&["abc", "ab"]);
        assert_eq!(m.push("abc"), stopped("", "ab"));
    }

    #[test]
    fn stop_multibyte() {
        let mut m = matcher(&["。", "😀!"]);
        assert_eq!(m.push("日本"), emit("日本"));
        assert_eq!(m.push("語😀"), emit("語"));
        assert_eq!(m.held, "😀");
        assert_eq!(m.push("?é。x"), stopped("😀?é", "。"));

        let mut m = matcher(&["é😀é"]);
        assert_eq!(m.push("aé"), emit("a"));
        assert_eq!(m.push("😀"), emit(""));
        assert_eq!(m.push("ü"), emit("é😀ü"));
        assert_eq!(m.finish(), "");
    }

    #[test]
    fn stop_duplicates_are_harmless() {
        let mut m = matcher(&["x", "x", ""]);
        assert_eq!(m.push("abxc"), stopped("ab", "x"));
    }

    /// Reference: the stop completed first in the whole input (smallest end;
    /// among equal ends the longest stop), as (before, stop).
    fn reference_stop(input: &str, stops: &[String]) -> Option<(String, String)> {
        let ends = input.char_indices().map(|(i, c)| i + c.len_utf8());
        for end in ends {
            let prefix = &input[..end];
            let best = stops
                .iter()
                .filter(|s| !s.is_empty() && prefix.ends_with(s.as_str()))
                .max_by_key(|s| s.len());
            if let Some(stop) = best {
                return Some((input[..end - stop.len()].to_string(), stop.clone()));
            }
        }
        None
    }

    /// Splits `s` at the given char positions (may produce empty chunks).
    fn chunks(s: &str, cuts: &[usize]) -> Vec<String> {
        let bounds: Vec<usize> = s.char_indices().map(|(i, _)| i).chain([s.len()]).collect();
        let mut cuts: Vec<usize> = cuts.iter().map(|&c| bounds[c % bounds.len()]).collect();
        cuts.sort_unstable();
        let mut out = Vec::new();
        let mut prev = 0;
        for c in cuts {
            out.push(s[prev..c].to_string());
            prev = c;
        }
        out.push(s[prev..].to_string());
        out
    }

    const STOP_ALPHABET: &[&str] = &["a", "b", "c", "é", "。", "😀", " "];

    fn alpha_string(max: usize) -> impl Strategy<Value = String> {
        prop::collection::vec(prop::sample::select(STOP_ALPHABET), 0..max).prop_map(|v| v.concat())
    }

    proptest! {
        #[test]
        fn stop_matcher_is_chunking_invariant(
            input in alpha_string(24),
            stops in prop::collection::vec(alpha_string(4), 0..4),
            cuts in prop::collection::vec(0usize..64, 0..12),
        ) {
            let longest = stops.iter().map(|s| s.len()).max().unwrap_or(0);
            let mut m = StopMatcher::new(&stops);
            let mut out = String::new();
            let mut stop_seen = None;
            for chunk in chunks(&input, &cuts) {
                match m.push(&chunk) {
                    StopOutcome::Emit(s) => out.push_str(&s),
                    StopOutcome::Stopped { before, stop } => {
                        out.push_str(&before);
                        stop_seen = Some(stop);
                        break;
                    }
                }
                prop_assert!(m.held.len() <= longest.saturating_sub(1));
            }
            if stop_seen.is_none() {
                out.push_str(&m.finish());
            }
            match reference_stop(&input, &stops) {
                Some((before, stop)) => {
                    prop_assert_eq!(out, before);
                    prop_assert_eq!(stop_seen, Some(stop));
                }
                None => {
                    prop_assert_eq!(out, input);
                    prop_assert_eq!(stop_seen, None);
                }
            }
        }
    }

    // ---------- OutputSplitter ----------

    fn tool_tags() -> Vec<(String, String)> {
        vec![("<tool_call>".to_string(), "</tool_call>".to_string())]
    }

    fn r(s: &str) -> Piece {
        Piece::Reasoning(s.to_string())
    }

    fn a(s: &str) -> Piece {
        Piece::Answer(s.to_string())
    }

    fn call(raw: &str, complete: bool) -> Piece {
        Piece::ToolCall {
            raw: raw.to_string(),
            complete,
        }
    }

    /// Merges adjacent text pieces of the same kind.
    fn merged(pieces: Vec<Piece>) -> Vec<Piece> {
        let mut out = Vec::new();
        for p in pieces {
            push_piece(&mut out, p);
        }
        out
    }

    /// Pushes each chunk, then finishes; returns the merged pieces.
    fn run(sp: &mut OutputSplitter, chunks: &[&str]) -> Vec<Piece> {
        let mut all = Vec::new();
        for c in chunks {
            all.extend(sp.push(c));
        }
        all.extend(sp.finish());
        merged(all)
    }

    fn split_whole(parse: bool, starts: bool, text: &str) -> Vec<Piece> {
        run(
            &mut OutputSplitter::new(parse, starts, &tool_tags()),
            &[text],
        )
    }

    fn split_chars(parse: bool, starts: bool, text: &str) -> Vec<Piece> {
        let chars: Vec<String> = text.chars().map(String::from).collect();
        let refs: Vec<&str> = chars.iter().map(String::as_str).collect();
        run(&mut OutputSplitter::new(parse, starts, &tool_tags()), &refs)
    }

    /// Checks the result both pushed whole and char by char.
    fn check(parse: bool, starts: bool, text: &str, expected: &[Piece]) {
        assert_eq!(
            split_whole(parse, starts, text),
            expected,
            "whole: {text:?}"
        );
        assert_eq!(
            split_chars(parse, starts, text),
            expected,
            "chars: {text:?}"
        );
    }

    #[test]
    fn think_block_with_newlines() {
        check(
            true,
            false,
            "<think>\na\nb\n</think>\nHi",
            &[r("a\nb"), a("Hi")],
        );
    }

    #[test]
    fn think_block_single_push_is_already_merged() {
        let mut sp = OutputSplitter::new(true, false, &[]);
        assert_eq!(
            sp.push("<think>\na\nb\n</think>\nHi"),
            vec![r("a\nb"), a("Hi")]
        );
        assert_eq!(sp.finish(), vec![]);
    }

    #[test]
    fn tags_split_across_chunks() {
        let mut sp = OutputSplitter::new(true, false, &[]);
        assert!(!sp.in_reasoning());
        assert_eq!(sp.push("<"), vec![]);
        assert_eq!(sp.push("think"), vec![]);
        assert!(!sp.in_reasoning());
        assert_eq!(sp.push(">"), vec![]);
        assert!(sp.in_reasoning());
        assert_eq!(sp.push("\n"), vec![]);
        assert_eq!(sp.push("x y"), vec![r("x y")]);
        assert_eq!(sp.push("\n"), vec![]);
        assert_eq!(sp.push("</"), vec![]);
        assert_eq!(sp.push("think"), vec![]);
        assert!(sp.in_reasoning());
        assert_eq!(sp.push(">"), vec![]);
        assert!(!sp.in_reasoning());
        assert_eq!(sp.push("\n"), vec![]);
        assert_eq!(sp.push("ok"), vec![a("ok")]);
        assert_eq!(sp.push(" "), vec![a(" ")]);
        assert_eq!(sp.finish(), vec![]);
    }

    #[test]
    fn reasoning_trailing_whitespace_held_until_text_follows() {
        let mut sp = OutputSplitter::new(true, false, &[]);
        assert_eq!(sp.push("<think>a \n"), vec![r("a")]);
        assert_eq!(sp.push("b"), vec![r(" \nb")]);
        assert_eq!(sp.push("  "), vec![]);
        assert_eq!(sp.push("</think>"), vec![]);
        assert_eq!(sp.push("c"), vec![a("c")]);
    }

    #[test]
    fn unclosed_think_is_all_reasoning() {
        check(
            true,
            false,
            "<think>\nstill thinking\n",
            &[r("still thinking")],
        );
        check(true, false, "<think>\nabc</thi", &[r("abc</thi")]);
        check(true, false, "<think>", &[]);
    }

    #[test]
    fn no_think_at_start_is_all_answer() {
        check(
            true,
            false,
            "Hello <think>x</think> world\n",
            &[a("Hello <think>x</think> world\n")],
        );
        check(true, false, "<thing>", &[a("<thing>")]);
        check(true, false, "  <thi", &[a("<thi")]);
    }

    #[test]
    fn leading_whitespace_before_think() {
        check(true, false, " \n<think>x</think>y", &[r("x"), a("y")]);
    }

    #[test]
    fn starts_in_reasoning() {
        let sp = OutputSplitter::new(true, true, &tool_tags());
        assert!(sp.in_reasoning());
        check(
            true,
            true,
            "\nplan\n</think>\n\nAnswer",
            &[r("plan"), a("Answer")],
        );
        check(true, true, "only thoughts", &[r("only thoughts")]);
    }

    #[test]
    fn parse_reasoning_off_passes_tags_through() {
        let text = "<think>\na\n</think>\nb";
        check(false, false, text, &[a(text)]);
        check(false, true, "\n</think>x", &[a("\n</think>x")]);
        assert!(!OutputSplitter::new(false, true, &[]).in_reasoning());
    }

    #[test]
    fn empty_think_block() {
        check(true, false, "<think>\n\n</think>\nHello", &[a("Hello")]);
    }

    #[test]
    fn one_tool_call_with_text_around() {
        let text = "Sure.\n<tool_call>\n{\"name\": \"f\"}\n</tool_call>\nDone ";
        check(
            true,
            false,
            text,
            &[
                a("Sure.\n"),
                call("<tool_call>\n{\"name\": \"f\"}\n</tool_call>", true),
                a("\nDone "),
            ],
        );
    }

    #[test]
    fn two_tool_calls_after_reasoning() {
        let text = "<think>\nneed tools\n</think>\n<tool_call>{1}</tool_call>\n<tool_call>{2}</tool_call>end";
        check(
            true,
            false,
            text,
            &[
                r("need tools"),
                call("<tool_call>{1}</tool_call>", true),
                a("\n"),
                call("<tool_call>{2}</tool_call>", true),
                a("end"),
            ],
        );
        // Back to back, no text between.
        check(
            false,
            false,
            "<tool_call>1</tool_call><tool_call>2</tool_call>",
            &[
                call("<tool_call>1</tool_call>", true),
                call("<tool_call>2</tool_call>", true),
            ],
        );
    }

    #[test]
    fn truncated_tool_call_at_finish() {
        check(
            true,
            false,
            "x<tool_call>{\"a\": 1}</tool_",
            &[a("x"), call("<tool_call>{\"a\": 1}</tool_", false)],
        );
        check(true, false, "<tool_call>", &[call("<tool_call>", false)]);
        // A partial opening tag at the end is answer text.
        check(true, false, "x <tool_ca", &[a("x <tool_ca")]);
    }

    #[test]
    fn tool_call_pieces_while_streaming() {
        let mut sp = OutputSplitter::new(false, false, &tool_tags());
        assert_eq!(sp.push("a <tool"), vec![a("a ")]);
        assert_eq!(sp.push("_call>{}</tool"), vec![]);
        assert_eq!(
            sp.push("_call> b"),
            vec![call("<tool_call>{}</tool_call>", true), a(" b")]
        );
        assert_eq!(sp.finish(), vec![]);
    }

    #[test]
    fn lone_angle_brackets_are_answer() {
        check(true, false, "a < b", &[a("a < b")]);
        check(true, false, "x<y>", &[a("x<y>")]);
        check(
            false,
            false,
            "<<tool_call>>",
            &[a("<"), call("<tool_call>>", false)],
        );
        check(
            true,
            false,
            "<think>1 < 2 </thin></think>ok",
            &[r("1 < 2 </thin>"), a("ok")],
        );
    }

    #[test]
    fn tool_tags_inside_reasoning_stay_reasoning() {
        check(
            true,
            false,
            "<think>call <tool_call>{}</tool_call>?</think>no",
            &[r("call <tool_call>{}</tool_call>?"), a("no")],
        );
    }

    #[test]
    fn multibyte_chars_around_tags() {
        check(
            true,
            false,
            "<think>é😀\n</think>日本<tool_call>ü</tool_call>。",
            &[
                r("é😀"),
                a("日本"),
                call("<tool_call>ü</tool_call>", true),
                a("。"),
            ],
        );
        check(true, false, "é<think>", &[a("é<think>")]);
    }

    #[test]
    fn other_tool_tags_and_longest_open_wins() {
        let tags = vec![
            ("<code>".to_string(), "</code>".to_string()),
            ("<tool>".to_string(), "</tool>".to_string()),
            ("<tool_call>".to_string(), "</tool_call>".to_string()),
            (String::new(), "x".to_string()),
        ];
        let text = "a<code>print(1)</code>b<tool>t</tool><tool_call>c</tool_call>";
        let expected = vec![
            a("a"),
            call("<code>print(1)</code>", true),
            a("b"),
            call("<tool>t</tool>", true),
            call("<tool_call>c</tool_call>", true),
        ];
        let mut sp = OutputSplitter::new(false, false, &tags);
        assert_eq!(run(&mut sp, &[text]), expected);
        let chars: Vec<String> = text.chars().map(String::from).collect();
        let refs: Vec<&str> = chars.iter().map(String::as_str).collect();
        let mut sp = OutputSplitter::new(false, false, &tags);
        assert_eq!(run(&mut sp, &refs), expected);
    }

    #[test]
    fn tags_inside_a_calls_strings_are_text() {
        // A JSON argument holding the tags' own text, then a Python one; whole and char by char.
        let text = "<tool_call>{\"q\": \"rust <tool_call> and </tool_call> tags\", \
                    \"r\": \"it\\\"s </tool_call>\"}</tool_call> done";
        let raw = &text[..text.len() - " done".len()];
        check(false, false, text, &[call(raw, true), a(" done")]);
        let tags = vec![("<code>".to_string(), "</code>".to_string())];
        let text = "<code>search(q='a </code> b', r=\"c</code>\")</code>!";
        let mut sp = OutputSplitter::new(false, false, &tags);
        let mut pieces = sp.push(text);
        pieces.extend(sp.finish());
        assert_eq!(pieces, [call(&text[..text.len() - 1], true), a("!")]);
        // A stray apostrophe hides a tag until the end of its line only, and at the end of
        // the output an unfollowable quote gives way to the first closing tag.
        let text = "<tool_call>it's\n</tool_call>x";
        check(
            false,
            false,
            text,
            &[call("<tool_call>it's\n</tool_call>", true), a("x")],
        );
        let text = "<tool_call>{\"a\": \"b</tool_call> c";
        check(
            false,
            false,
            text,
            &[call("<tool_call>{\"a\": \"b</tool_call>", true), a(" c")],
        );
    }

    #[test]
    fn empty_pushes_emit_nothing() {
        let mut sp = OutputSplitter::new(true, false, &tool_tags());
        assert_eq!(sp.push(""), vec![]);
        assert_eq!(sp.finish(), vec![]);
    }

    const FRAGMENTS: &[&str] = &[
        "<think>",
        "</think>",
        "<tool_call>",
        "</tool_call>",
        "<tool>",
        "</tool>",
        "<code>",
        "</code>",
        "\n",
        " ",
        "abc",
        "é",
        "😀",
        "<",
        "</",
        "think",
        "tool_call",
        ">",
        "_",
    ];

    fn fragment_string() -> impl Strategy<Value = String> {
        prop::collection::vec(prop::sample::select(FRAGMENTS), 0..30).prop_map(|v| v.concat())
    }

    fn tag_sets() -> impl Strategy<Value = Vec<(String, String)>> {
        let pairs = [
            ("<tool_call>", "</tool_call>"),
            ("<tool>", "</tool>"),
            ("<code>", "</code>"),
        ];
        prop::sample::subsequence(pairs.to_vec(), 0..=3).prop_map(|v| {
            v.into_iter()
                .map(|(o, c)| (o.to_string(), c.to_string()))
                .collect()
        })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]
        #[test]
        fn output_splitter_is_chunking_invariant(
            input in fragment_string(),
            parse in any::<bool>(),
            starts in any::<bool>(),
            tags in tag_sets(),
            cuts in prop::collection::vec(0usize..256, 0..16),
        ) {
            let mut whole = OutputSplitter::new(parse, starts, &tags);
            let mut expected = whole.push(&input);
            // One push already merges adjacent pieces and has no empty text.
            prop_assert_eq!(&merged(expected.clone()), &expected);
            expected.extend(whole.finish());
            let expected = merged(expected);

            let mut sp = OutputSplitter::new(parse, starts, &tags);
            let mut all = Vec::new();
            for chunk in chunks(&input, &cuts) {
                let pieces = sp.push(&chunk);
                prop_assert_eq!(&merged(pieces.clone()), &pieces);
                all.extend(pieces);
            }
            let fin = sp.finish();
            prop_assert_eq!(&merged(fin.clone()), &fin);
            all.extend(fin);
            prop_assert_eq!(merged(all), expected.clone());

            // Tool calls are whole spans; without reasoning parsing no text is lost.
            for p in &expected {
                if let Piece::ToolCall { raw, complete } = p {
                    let pair = tags.iter().find(|(o, _)| raw.starts_with(o.as_str()));
                    prop_assert!(pair.is_some());
                    if let Some((_, close)) = pair {
                        prop_assert_eq!(*complete, raw.ends_with(close.as_str()));
                    }
                }
            }
            if !parse {
                let text: String = expected
                    .iter()
                    .map(|p| match p {
                        Piece::Answer(s) | Piece::ToolCall { raw: s, .. } => s.as_str(),
                        Piece::Reasoning(_) => "",
                    })
                    .collect();
                prop_assert_eq!(text, input);
            }
        }
    }
}
