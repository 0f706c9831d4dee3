//! Text for a terminal: values that come from log files or bucket listings (ARNs, names, object keys) printed with
//! the characters that act on a terminal escaped, so none can move the cursor, rewrite the screen or the window
//! title, start a line of its own, or reorder what is shown around it.

use std::borrow::Cow;
use std::fmt::{self, Write as _};

/// Whether `c` acts on a terminal rather than prints: C0 and C1 controls and DEL (escape sequences, newlines,
/// carriage returns, tabs that break a table's columns), and the bidirectional format characters that reorder text.
fn acts(c: char) -> bool {
    c.is_control()
        || matches!(c, '\u{061C}' | '\u{200E}' | '\u{200F}' | '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}')
}

/// `text` with each character that acts on a terminal written as `\u{…}`; borrowed when there is none (the usual
/// case).
pub fn escape(text: &str) -> Cow<'_, str> {
    if !text.chars().any(acts) {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + 16);
    for c in text.chars() {
        match acts(c) {
            true => write!(out, "\\u{{{:x}}}", u32::from(c)).expect("writing to a String"),
            false => out.push(c),
        }
    }
    Cow::Owned(out)
}

/// A value displayed escaped, keeping the width and alignment of its format (`{:<64}`).
pub struct Shown<'a>(pub &'a str);

impl fmt::Display for Shown<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(&escape(self.0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn what_acts_on_a_terminal_is_escaped_and_nothing_else() {
        let cases = [
            ("arn:aws:iam::111122223333:role/app", "arn:aws:iam::111122223333:role/app"),
            ("ünïcödé 名前 😀", "ünïcödé 名前 😀"),
            ("red\u{1b}[31m", "red\\u{1b}[31m"),
            ("title\u{1b}]0;pwned\u{7}", "title\\u{1b}]0;pwned\\u{7}"),
            ("two\nlines\r", "two\\u{a}lines\\u{d}"),
            ("tab\tdel\u{7f}c1\u{9b}", "tab\\u{9}del\\u{7f}c1\\u{9b}"),
            ("user/\u{202e}gnp.exe", "user/\\u{202e}gnp.exe"),
            ("isolate\u{2066}x\u{2069}", "isolate\\u{2066}x\\u{2069}"),
        ];
        for (text, shown) in cases {
            assert_eq!(escape(text), shown, "{text:?}");
        }
        assert!(matches!(escape("plain"), Cow::Borrowed(_)));
        assert_eq!(format!("[{:<8}]", Shown("a\u{1b}")), "[a\\u{1b} ]");
        assert_eq!(format!("[{:>4}]", Shown("ab")), "[  ab]");
    }
}
