//! HTML out: one escaping function for text and attribute values, and the page frame every page shares.
//!
//! Everything a page shows came from a log file (ARNs, user agents, session names, request parameters), so no
//! page writes a value except through [`esc`]; the pages hold no script at all, so a value that slipped through
//! would still meet a Content-Security-Policy that runs nothing.

use std::fmt::Write;

/// `text` with `& < > " '` replaced by entities: safe in element content and in a quoted attribute value.
pub fn esc(text: &str) -> std::borrow::Cow<'_, str> {
    if !text.bytes().any(|b| matches!(b, b'&' | b'<' | b'>' | b'"' | b'\'')) {
        return std::borrow::Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + 16);
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    std::borrow::Cow::Owned(out)
}

/// `text` percent-encoded for a URL path segment or a query value: everything but unreserved characters (RFC
/// 3986), so that an ARN's `/`, `:` and `+` survive a round trip and nothing in it can end the attribute.
pub fn url_encode(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 8);
    for b in text.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b as char);
        } else {
            let _ = write!(out, "%{b:02X}");
        }
    }
    out
}

/// The navigation entries: path and label.
const NAV: [(&str, &str); 3] = [("/", "Overview"), ("/identities", "Identities"), ("/alerts", "Alerts and findings")];

/// A page under construction: the frame's head is written on creation, [`Page::finish`] closes it.
pub struct Page {
    pub out: String,
}

impl Page {
    /// Opens a page titled `title` (escaped) with `current` the navigation entry to mark.
    pub fn new(title: &str, current: &str) -> Page {
        let mut out = String::with_capacity(16 * 1024);
        let _ = write!(
            out,
            "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
             <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
             <title>{} · trailwatch</title><link rel=\"stylesheet\" href=\"/assets/style.css\"></head>\
             <body><header><span class=\"brand\">trailwatch</span><nav>",
            esc(title)
        );
        for (path, label) in NAV {
            let mark = if path == current { " aria-current=\"page\"" } else { "" };
            let _ = write!(out, "<a href=\"{path}\"{mark}>{label}</a>");
        }
        let _ = write!(out, "</nav></header><main><h1>{}</h1>", esc(title));
        Page { out }
    }

    /// Closes the frame; times are said to be UTC once, at the bottom of every page.
    pub fn finish(mut self) -> String {
        self.out
            .push_str("</main><footer>Times are UTC. Read-only view of the trailwatch state.</footer></body></html>\n");
        self.out
    }

    /// Writes `text`, escaped.
    pub fn text(&mut self, text: &str) {
        self.out.push_str(&esc(text));
    }

    /// Writes markup that holds no outside value (tags and constants of the page).
    pub fn raw(&mut self, markup: &str) {
        self.out.push_str(markup);
    }

    /// A heading (`<h3>`) and a list of texts, escaped; nothing when there are none.
    pub fn list<'t>(&mut self, heading: &str, items: impl IntoIterator<Item = &'t str>) {
        let mut items = items.into_iter().peekable();
        if items.peek().is_none() {
            return;
        }
        self.raw("<h3>");
        self.text(heading);
        self.raw("</h3><ul>");
        for item in items {
            self.raw("<li>");
            self.text(item);
            self.raw("</li>");
        }
        self.raw("</ul>");
    }

    /// A table's opening and header row.
    pub fn table_head(&mut self, class: &str, headers: &[&str]) {
        let _ = write!(self.out, "<table class=\"{class}\"><thead><tr>");
        for header in headers {
            let _ = write!(self.out, "<th>{header}</th>");
        }
        self.out.push_str("</tr></thead><tbody>");
    }

    /// One cell holding `text`, escaped.
    pub fn cell(&mut self, text: &str) {
        let _ = write!(self.out, "<td>{}</td>", esc(text));
    }

    /// One right-aligned cell holding a number.
    pub fn number(&mut self, n: u64) {
        let _ = write!(self.out, "<td class=\"num\">{n}</td>");
    }

    /// One cell holding a link to `href` (built by the page from [`url_encode`]d parts) showing `text`.
    pub fn link_cell(&mut self, href: &str, text: &str) {
        let _ = write!(self.out, "<td><a href=\"{}\">{}</a></td>", esc(href), esc(text));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What a log file may carry comes out as text: no tag, no attribute break, in either context.
    #[test]
    fn hostile_values_are_escaped() {
        let cases = [
            ("<script>alert(1)</script>", "&lt;script&gt;alert(1)&lt;/script&gt;"),
            ("\"><img src=x onerror=alert(1)>", "&quot;&gt;&lt;img src=x onerror=alert(1)&gt;"),
            ("a' onmouseover='x", "a&#39; onmouseover=&#39;x"),
            ("AT&T", "AT&amp;T"),
            ("plain", "plain"),
        ];
        for (input, escaped) in cases {
            assert_eq!(esc(input), escaped, "{input}");
        }
    }

    #[test]
    fn urls_keep_only_unreserved_characters() {
        assert_eq!(
            url_encode("arn:aws:sts::1:assumed-role/r/s\"><x"),
            "arn%3Aaws%3Asts%3A%3A1%3Aassumed-role%2Fr%2Fs%22%3E%3Cx"
        );
        assert_eq!(crate::permissions::policy::percent_decode(&url_encode("a/b c+é")).as_deref(), Some("a/b c+é"));
    }
}
