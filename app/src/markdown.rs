//! Markdown to safe HTML, on the server. Model output and guidelines are untrusted: raw
//! HTML in the source is shown as text, and the result goes through an allow-list
//! sanitiser (ammonia) that strips scripts, event handlers and `javascript:` links.

use pulldown_cmark::{Event, Options, Parser, html};

pub fn render(source: &str) -> String {
    let options = Options::ENABLE_TABLES | Options::ENABLE_STRIKETHROUGH | Options::ENABLE_TASKLISTS;
    // Raw HTML becomes literal text: a response that *talks about* `<script>` shows it.
    let events = Parser::new_ext(source, options).map(|event| match event {
        Event::Html(raw) | Event::InlineHtml(raw) => Event::Text(raw),
        other => other,
    });
    let mut unsafe_html = String::with_capacity(source.len() * 3 / 2);
    html::push_html(&mut unsafe_html, events);
    ammonia::Builder::default()
        .rm_tags(["img"])
        .add_tag_attributes("code", ["class"])
        .link_rel(Some("noopener noreferrer nofollow"))
        .url_schemes(["http", "https", "mailto"].into())
        .clean(&unsafe_html)
        .to_string()
}

#[cfg(test)]
mod tests {
    use super::render;

    #[test]
    fn code_blocks_and_emphasis_render() {
        let html = render("Use **this**:\n\n```rust\nfn main() {}\n```\n");
        assert!(html.contains("<strong>this</strong>"), "{html}");
        assert!(html.contains("<pre><code class=\"language-rust\">fn main() {}"), "{html}");
    }

    #[test]
    fn raw_html_and_script_urls_stay_inert() {
        let html = render("<script>alert(1)</script>\n\nhi <img src=x onerror=alert(2)> [x](javascript:alert(3))");
        assert!(!html.contains("<script"), "{html}");
        assert!(!html.contains("<img"), "{html}");
        assert!(!html.contains("javascript:"), "{html}");
        assert!(html.contains("&lt;script&gt;alert(1)&lt;/script&gt;"), "{html}");
        assert!(html.contains("&lt;img src=x onerror=alert(2)&gt;"), "{html}");
    }
}
