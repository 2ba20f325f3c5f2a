//! Rendering: the templates beside this file (minijinja, every value HTML-escaped; only the
//! sanitized Markdown is marked safe) and the values they read.

use std::sync::OnceLock;

use minijinja::{context, Environment, Value};
use serde::Serialize;
use smollm3_gen::{SamplingParams, SETTINGS};

use super::live::LiveState;
use super::markdown;
use super::store::{AnswerFormat, Conversation, Turn, TurnStats};

/// The assets' version in their URLs: a hash of their bytes, so a changed file gets a new
/// URL and the old one can be cached for a year.
pub fn asset_version() -> &'static str {
    static VERSION: OnceLock<String> = OnceLock::new();
    VERSION.get_or_init(|| {
        // FNV-1a: stable, dependency-free, and plenty to tell builds' assets apart.
        let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
        for (_, _, bytes) in super::ASSETS {
            for byte in bytes.iter() {
                hash = (hash ^ u64::from(*byte)).wrapping_mul(0x0100_0000_01b3);
            }
        }
        format!("{:012x}", hash & 0xffff_ffff_ffff)
    })
}

fn templates() -> &'static Environment<'static> {
    static ENV: OnceLock<Environment<'static>> = OnceLock::new();
    ENV.get_or_init(|| {
        let mut env = Environment::new();
        // `.html` names are auto-escaped by minijinja's default callback.
        for (name, source) in [
            ("page.html", include_str!("templates/page.html")),
            (
                "sidebar_list.html",
                include_str!("templates/sidebar_list.html"),
            ),
            ("messages.html", include_str!("templates/messages.html")),
            ("answer.html", include_str!("templates/answer.html")),
            ("live.html", include_str!("templates/live.html")),
            ("login.html", include_str!("templates/login.html")),
        ] {
            // The sources are part of the binary and tested; a syntax error is a bug.
            if let Err(e) = env.add_template(name, source) {
                panic!("template {name}: {e}");
            }
        }
        env
    })
}

/// Renders `name`; a template error (a bug, not input) becomes a visible message.
pub fn render(name: &str, ctx: Value) -> String {
    match templates().get_template(name).and_then(|t| t.render(ctx)) {
        Ok(html) => html,
        Err(e) => format!("<p class=\"banner error\">template {name}: {e}</p>"),
    }
}

#[derive(Serialize)]
struct StatsView {
    generated_tokens: usize,
    cached_tokens: usize,
    ttft: String,
    speed: String,
    /// "12 of 15 drafted tokens taken", when there were drafts.
    drafts: String,
    note: &'static str,
}

fn stats_view(stats: &TurnStats) -> StatsView {
    StatsView {
        generated_tokens: stats.generated_tokens,
        cached_tokens: stats.cached_tokens,
        ttft: if stats.time_to_first_token_ms >= 1000.0 {
            format!("{:.1} s", stats.time_to_first_token_ms / 1e3)
        } else {
            format!("{:.0} ms", stats.time_to_first_token_ms)
        },
        speed: format!("{:.1}", stats.decode_tokens_per_second),
        drafts: if stats.draft_tokens > 0 {
            format!(
                "{} of {} drafted tokens taken",
                stats.draft_accepted, stats.draft_tokens
            )
        } else {
            String::new()
        },
        note: match stats.finish_reason.as_str() {
            "cancelled" => "stopped",
            "length" => "cut at the token limit",
            _ => "",
        },
    }
}

/// One message as the templates read it.
#[derive(Serialize, Default)]
pub struct TurnView {
    index: usize,
    user: bool,
    tool: bool,
    tool_name: String,
    /// Earlier rounds of a live answer (tools on).
    earlier: Vec<TurnView>,
    last: bool,
    content: String,
    html: String,
    reasoning_html: String,
    thought_seconds: String,
    thinking: bool,
    tool_calls: Vec<String>,
    stats: Option<StatsView>,
    streaming: bool,
    answer_started: bool,
    started: bool,
    queue_position: usize,
    error: Option<String>,
    /// Once a live answer is done: the context it used, for the meter.
    context_used: usize,
    context_size: usize,
}

/// Splits tool-call spans out of a saved answer so they show as their own blocks.
fn split_tool_calls(content: &str) -> (String, Vec<String>) {
    let mut text = String::new();
    let mut calls = Vec::new();
    let mut rest = content;
    while let Some(start) = rest.find("<tool_call>") {
        text.push_str(&rest[..start]);
        let after = &rest[start..];
        match after.find("</tool_call>") {
            Some(end) => {
                let end = end + "</tool_call>".len();
                calls.push(after[..end].to_string());
                rest = &after[end..];
            }
            None => {
                calls.push(after.to_string());
                rest = "";
            }
        }
    }
    text.push_str(rest);
    (text.trim_end().to_string(), calls)
}

fn turn_view(index: usize, turn: &Turn, last: bool) -> TurnView {
    if turn.is_tool() {
        return TurnView {
            index,
            tool: true,
            tool_name: turn.reasoning.clone(),
            content: turn.content.clone(),
            ..TurnView::default()
        };
    }
    if turn.is_user() {
        return TurnView {
            index,
            user: true,
            content: turn.content.clone(),
            thinking: turn.thinking,
            ..TurnView::default()
        };
    }
    let (text, tool_calls) = split_tool_calls(&turn.content);
    TurnView {
        index,
        last,
        html: markdown::render(&text),
        reasoning_html: markdown::render(&turn.reasoning),
        thought_seconds: format!(
            "{:.1}",
            turn.stats.as_ref().map_or(0.0, |s| s.thought_seconds)
        ),
        thinking: turn.thinking,
        tool_calls,
        stats: turn.stats.as_ref().map(stats_view),
        ..TurnView::default()
    }
}

/// The answer being written, as the templates read it.
pub fn live_view(state: &LiveState) -> TurnView {
    let earlier = state
        .earlier
        .iter()
        .map(|t| turn_view(0, t, false))
        .collect();
    if let Some(done) = &state.done {
        let mut view = turn_view(0, done, false);
        view.earlier = earlier;
        view.started = true;
        view.context_used = done
            .stats
            .as_ref()
            .map_or(0, |s| s.prompt_tokens + s.generated_tokens);
        view.context_size = state.context_size;
        return view;
    }
    TurnView {
        html: markdown::render(&state.answer),
        reasoning_html: markdown::render(&state.reasoning),
        thought_seconds: format!("{:.1}", state.thought_seconds),
        tool_calls: state.tool_calls.clone(),
        streaming: state.error.is_none(),
        answer_started: !state.answer.is_empty() || !state.tool_calls.is_empty(),
        started: state.started,
        queue_position: state.queue_position,
        error: state.error.clone(),
        thinking: state.thinking,
        earlier,
        ..TurnView::default()
    }
}

/// The inner HTML of the live answer (what each stream update swaps in).
pub fn live_html(state: &LiveState) -> String {
    render("live.html", context! { t => live_view(state) })
}

#[derive(Serialize)]
struct ConversationItem {
    id: String,
    title: String,
    active: bool,
}

#[derive(Serialize)]
struct SettingView {
    name: &'static str,
    help: &'static str,
    value: String,
    default: String,
}

/// What a page needs besides the conversation.
pub struct PageParts<'a> {
    pub list: &'a [Conversation],
    pub live: Option<&'a LiveState>,
    pub context_size: usize,
    pub defaults: &'a SamplingParams,
    pub banner: Option<(&'a str, String)>,
    /// The built-in tools a conversation may switch on, by name (empty: none).
    pub tool_names: String,
    /// Also update the title and the sidebar (htmx fragments swap only the messages).
    pub oob: bool,
}

/// The settings shown in the panel, from the one table of settings.
const PANEL: [&str; 5] = ["temperature", "top_p", "top_k", "max_tokens", "seed"];

fn context_for(conversation: &Conversation, parts: &PageParts) -> Value {
    let last = conversation
        .turns
        .iter()
        .rposition(|t| !t.is_user() && !t.is_tool());
    let turns: Vec<TurnView> = conversation
        .turns
        .iter()
        .enumerate()
        .map(|(i, t)| turn_view(i, t, Some(i) == last && parts.live.is_none()))
        .collect();
    let used = conversation
        .turns
        .iter()
        .rev()
        .find_map(|t| t.stats.as_ref())
        .map_or(0, |s| s.prompt_tokens + s.generated_tokens);
    let settings: Vec<SettingView> = SETTINGS
        .iter()
        .filter(|s| PANEL.contains(&s.name))
        .map(|s| SettingView {
            name: s.name,
            help: s.help,
            value: s.show(&conversation.sampling),
            default: s.show(parts.defaults),
        })
        .collect();
    context! {
        version => asset_version(),
        conversation => context! {
            id => conversation.id.clone(),
            title => conversation.title.clone(),
            system => conversation.system.clone(),
            thinking => conversation.thinking,
            format => conversation.format.kind(),
            schema => match &conversation.format {
                AnswerFormat::JsonSchema { schema } => schema.clone(),
                _ => String::new(),
            },
        },
        conversations => list_items(parts.list, Some(&conversation.id)),
        turns => turns,
        live => parts.live.is_some(),
        oob => parts.oob,
        tool_names => parts.tool_names.clone(),
        t => parts.live.map(live_view),
        settings => settings,
        context => context! { used => used, size => parts.context_size },
        banner => parts.banner.as_ref().map(|(kind, text)| context! { kind => *kind, text => text.clone() }),
    }
}

fn list_items(list: &[Conversation], active: Option<&str>) -> Vec<ConversationItem> {
    list.iter()
        .map(|c| ConversationItem {
            id: c.id.clone(),
            title: c.title.clone(),
            active: Some(c.id.as_str()) == active,
        })
        .collect()
}

pub fn page(conversation: &Conversation, parts: &PageParts) -> String {
    render("page.html", context_for(conversation, parts))
}

pub fn messages(conversation: &Conversation, parts: &PageParts) -> String {
    render("messages.html", context_for(conversation, parts))
}

pub fn sidebar_list(list: &[Conversation], query: &str) -> String {
    render(
        "sidebar_list.html",
        context! { conversations => list_items(list, None), query => query },
    )
}

#[cfg(test)]
mod tests {
    use super::split_tool_calls;

    #[test]
    fn tool_call_spans_are_taken_out_of_the_text() {
        let (text, calls) = split_tool_calls(
            "Let me look.\n<tool_call>\n{\"name\": \"t\"}\n</tool_call>\nDone <tool_call>x",
        );
        assert_eq!(text, "Let me look.\n\nDone");
        assert_eq!(calls.len(), 2);
        assert_eq!(calls[1], "<tool_call>x");
    }
}
