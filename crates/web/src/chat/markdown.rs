//! Model output to safe HTML: Markdown by pulldown-cmark (tables, strikethrough, task
//! lists), code blocks highlighted by syntect into `hl-*` classes, and the result cleaned by
//! ammonia. HTML that the model writes is shown as text, not interpreted (a `<script>` or an
//! `<img onerror>` in an answer is something to read, never something that runs); ammonia
//! then removes whatever could still be active, as a second wall.
//!
//! A partial answer is rendered the same way while it streams: an unclosed code fence is a
//! code block up to the end of the text, so it looks right as it grows.

use std::sync::OnceLock;

use pulldown_cmark::{CodeBlockKind, Event, Options, Parser, Tag, TagEnd};
use syntect::html::{ClassStyle, ClassedHTMLGenerator};
use syntect::parsing::SyntaxSet;
use syntect::util::LinesWithEndings;

fn syntaxes() -> &'static SyntaxSet {
    static SET: OnceLock<SyntaxSet> = OnceLock::new();
    SET.get_or_init(SyntaxSet::load_defaults_newlines)
}

fn sanitizer() -> &'static ammonia::Builder<'static> {
    static CLEAN: OnceLock<ammonia::Builder<'static>> = OnceLock::new();
    CLEAN.get_or_init(|| {
        let mut b = ammonia::Builder::default();
        // Highlighting and the language of a block are classes; nothing else is added.
        b.add_tag_attributes("span", ["class"])
            .add_tag_attributes("code", ["class"])
            .add_tag_attributes("pre", ["class"])
            .add_tag_attributes("input", ["type", "checked", "disabled"])
            .add_tags(["input"])
            .link_rel(Some("noopener noreferrer nofollow"));
        b
    })
}

/// Markdown `text` as sanitized HTML.
pub fn render(text: &str) -> String {
    let options = Options::ENABLE_TABLES
        | Options::ENABLE_STRIKETHROUGH
        | Options::ENABLE_TASKLISTS
        | Options::ENABLE_FOOTNOTES;
    let mut events = Vec::new();
    let mut code: Option<(String, String)> = None; // (language, text)
    for event in Parser::new_ext(text, options) {
        match (&mut code, event) {
            (None, Event::Start(Tag::CodeBlock(kind))) => {
                let language = match kind {
                    CodeBlockKind::Fenced(info) => {
                        info.split_whitespace().next().unwrap_or("").to_string()
                    }
                    CodeBlockKind::Indented => String::new(),
                };
                code = Some((language, String::new()));
            }
            (Some((_, body)), Event::Text(t)) => body.push_str(&t),
            (Some(_), Event::End(TagEnd::CodeBlock)) => {
                if let Some((language, body)) = code.take() {
                    events.push(Event::Html(code_block(&language, &body).into()));
                }
            }
            // The model's own HTML is text to read.
            (None, Event::Html(html) | Event::InlineHtml(html)) => events.push(Event::Text(html)),
            (None, event) => events.push(event),
            (Some(_), _) => {}
        }
    }
    // A fence still open at the end (a streaming answer): show what there is.
    if let Some((language, body)) = code.take() {
        events.push(Event::Html(code_block(&language, &body).into()));
    }
    let mut html = String::with_capacity(text.len() * 2);
    pulldown_cmark::html::push_html(&mut html, events.into_iter());
    sanitizer().clean(&html).to_string()
}

/// A `<pre><code>` block, highlighted when the language is known.
fn code_block(language: &str, body: &str) -> String {
    let class = language
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '+' | '#'))
        .collect::<String>();
    let highlighted = highlight(&class, body).unwrap_or_else(|| escape(body));
    if class.is_empty() {
        format!("<pre><code>{highlighted}</code></pre>")
    } else {
        format!("<pre><code class=\"language-{class}\">{highlighted}</code></pre>")
    }
}

fn highlight(language: &str, body: &str) -> Option<String> {
    if language.is_empty() {
        return None;
    }
    let set = syntaxes();
    let syntax = set
        .find_syntax_by_token(language)
        .or_else(|| set.find_syntax_by_extension(language))?;
    let mut generator = ClassedHTMLGenerator::new_with_class_style(
        syntax,
        set,
        ClassStyle::SpacedPrefixed { prefix: "hl-" },
    );
    for line in LinesWithEndings::from(body) {
        generator
            .parse_html_for_line_which_includes_newline(line)
            .ok()?;
    }
    Some(generator.finalize())
}

/// Text as HTML text.
pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '&' => out.push_str("&amp;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::render;

    #[test]
    fn hostile_html_is_shown_as_text_and_never_active() {
        let handler = regex::Regex::new(r"<[a-z][^<>]*\son[a-z]+\s*=").unwrap();
        for hostile in [
            "<script>alert(1)</script>",
            "Look: <img src=x onerror=alert(1)>",
            "[click](javascript:alert(1))",
            "<a href=\"x\" onclick=\"alert(1)\">x</a>",
            "```html\n<script>alert(1)</script>\n```",
            "<iframe src=\"https://example.com\"></iframe>",
        ] {
            let html = render(hostile);
            let lower = html.to_lowercase();
            for active in ["<script", "<img", "<iframe", "href=\"javascript:"] {
                assert!(!lower.contains(active), "{hostile:?} -> {html}");
            }
            // Handlers may remain as text, never as attributes of a tag.
            assert!(!handler.is_match(&lower), "{hostile:?} -> {html}");
        }
        assert!(render("<script>alert(1)</script>").contains("&lt;script&gt;"));
    }

    #[test]
    fn markdown_and_code_render_and_an_open_fence_still_shows() {
        let html = render("# Title\n\n**bold** and `x`\n\n| a | b |\n|---|---|\n| 1 | 2 |");
        assert!(html.contains("<h1>Title</h1>"), "{html}");
        assert!(html.contains("<strong>bold</strong>"), "{html}");
        assert!(html.contains("<table>"), "{html}");
        let code = render("```rust\nfn main() { let s = \"</think>\"; }\n```");
        assert!(
            code.contains("<pre><code class=\"language-rust\">"),
            "{code}"
        );
        assert!(code.contains("hl-"), "highlighted: {code}");
        assert!(code.contains("&lt;/think&gt;"), "{code}");
        let open = render("Here:\n```python\nprint(1)\n");
        assert!(
            open.contains("<pre><code class=\"language-python\">"),
            "{open}"
        );
        assert!(open.contains("print"), "{open}");
    }
}
