//! Sigma string values: `*` (any run) and `?` (one character) wildcards with `\` escapes, matched case-insensitively
//! unless `cased`, against the whole field value; `contains`, `startswith` and `endswith` open either end.
//!
//! Compiled once per rule value; matching walks the text's characters in place (no allocation per event).

/// Where a value may sit in the field, from the `contains` / `startswith` / `endswith` modifiers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Anchor {
    Whole,
    Contains,
    StartsWith,
    EndsWith,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Atom {
    Char(char),
    AnyRun,
    AnyOne,
}

/// A compiled Sigma string value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pattern {
    atoms: Vec<Atom>,
    cased: bool,
    /// A value without wildcards (the common case) is matched as bytes: equality, prefix, suffix or substring.
    literal: Option<Literal>,
}

/// A wildcard-free value: ASCII when matched case-insensitively, so that byte-wise ASCII folding is exact.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Literal {
    needle: Box<[u8]>,
    anchor: Anchor,
}

/// Case folding used on both sides: one lowercase character per character.
pub fn fold(c: char) -> char {
    if c.is_ascii() { c.to_ascii_lowercase() } else { c.to_lowercase().next().unwrap_or(c) }
}

impl Pattern {
    pub fn new(value: &str, anchor: Anchor, cased: bool) -> Pattern {
        let mut body = Vec::with_capacity(value.len());
        let mut chars = value.chars().peekable();
        while let Some(c) = chars.next() {
            let atom = match c {
                '*' => Atom::AnyRun,
                '?' => Atom::AnyOne,
                // `\*`, `\?` and `\\` are the literal character; any other backslash is itself.
                '\\' => match chars.peek() {
                    Some(&next @ ('*' | '?' | '\\')) => {
                        chars.next();
                        Atom::Char(next)
                    }
                    _ => Atom::Char('\\'),
                },
                c => Atom::Char(c),
            };
            body.push(match atom {
                Atom::Char(c) if !cased => Atom::Char(fold(c)),
                other => other,
            });
        }
        // The literal is read off the value itself, before the anchors' runs are added: a value that is all
        // wildcards (`contains: '*'`) collapses into those runs.
        let text: Option<String> = body.iter().map(|a| if let Atom::Char(c) = a { Some(*c) } else { None }).collect();
        // `contains` of "" is an `AnyRun` alone, which the general path handles.
        let literal = text
            .filter(|t| (cased || t.is_ascii()) && !(t.is_empty() && anchor == Anchor::Contains))
            .map(|t| Literal { needle: t.into_bytes().into_boxed_slice(), anchor });
        let mut atoms = Vec::with_capacity(body.len() + 2);
        if matches!(anchor, Anchor::Contains | Anchor::EndsWith) {
            atoms.push(Atom::AnyRun);
        }
        atoms.append(&mut body);
        if matches!(anchor, Anchor::Contains | Anchor::StartsWith) {
            atoms.push(Atom::AnyRun);
        }
        // Adjacent runs are one run; keeping one makes backtracking cheaper.
        atoms.dedup_by(|a, b| *a == Atom::AnyRun && *b == Atom::AnyRun);
        Pattern { atoms, cased, literal }
    }

    /// The needle of a wildcard-free, case-insensitive `contains` value (folded, ASCII): several of them in one
    /// field test are searched for together.
    pub fn contains_needle(&self) -> Option<&[u8]> {
        self.literal.as_ref().filter(|l| l.anchor == Anchor::Contains && !self.cased).map(|l| &*l.needle)
    }

    pub fn matches(&self, text: &str) -> bool {
        if let Some(literal) = &self.literal {
            return literal.matches(text.as_bytes(), self.cased);
        }
        self.matches_wildcards(text)
    }

    fn matches_wildcards(&self, text: &str) -> bool {
        let (atoms, bytes) = (&self.atoms, text);
        let (mut p, mut t) = (0usize, 0usize);
        // The last `*` seen, and where in the text its run currently ends.
        let mut star: Option<(usize, usize)> = None;
        while t < bytes.len() {
            let c = bytes[t..].chars().next().expect("t is on a character boundary");
            let c_folded = if self.cased { c } else { fold(c) };
            match atoms.get(p) {
                Some(Atom::AnyOne) => {
                    p += 1;
                    t += c.len_utf8();
                    continue;
                }
                Some(Atom::Char(a)) if *a == c_folded => {
                    p += 1;
                    t += c.len_utf8();
                    continue;
                }
                Some(Atom::AnyRun) => {
                    star = Some((p, t));
                    p += 1;
                    continue;
                }
                _ => {}
            }
            // Mismatch: let the last `*` swallow one more character and retry after it.
            let Some((star_p, star_t)) = star else { return false };
            let swallowed = bytes[star_t..].chars().next().expect("star_t < t").len_utf8();
            star = Some((star_p, star_t + swallowed));
            p = star_p + 1;
            t = star_t + swallowed;
        }
        atoms[p..].iter().all(|a| *a == Atom::AnyRun)
    }
}

impl Literal {
    fn matches(&self, text: &[u8], cased: bool) -> bool {
        let n = self.needle.len();
        let eq = |a: &[u8]| if cased { a == &*self.needle } else { a.eq_ignore_ascii_case(&self.needle) };
        match self.anchor {
            Anchor::Whole => text.len() == n && eq(text),
            Anchor::StartsWith => text.get(..n).is_some_and(eq),
            Anchor::EndsWith => text.len() >= n && eq(&text[text.len() - n..]),
            Anchor::Contains if cased => memchr::memmem::find(text, &self.needle).is_some(),
            Anchor::Contains => {
                // Candidates are the positions of the first byte in either case.
                let first = self.needle[0];
                let last_start = text.len().saturating_sub(n);
                memchr::memchr2_iter(first.to_ascii_lowercase(), first.to_ascii_uppercase(), text)
                    .take_while(|&i| i <= last_start)
                    .any(|i| text.len() >= i + n && eq(&text[i..i + n]))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_like_sigma() {
        use Anchor::*;
        let cases: &[(&str, Anchor, bool, &str, bool)] = &[
            // Whole-value match, case-insensitive by default.
            ("StopLogging", Whole, false, "StopLogging", true),
            ("StopLogging", Whole, false, "stoplogging", true),
            ("StopLogging", Whole, false, "StopLoggingNow", false),
            ("StopLogging", Whole, true, "stoplogging", false),
            ("", Whole, false, "", true),
            ("", Whole, false, "x", false),
            // Wildcards.
            ("*FullAccess", Whole, false, "AmazonS3FullAccess", true),
            ("*FullAccess", Whole, false, "FullAccessPolicy", false),
            ("Delete*Trail", Whole, false, "DeleteTrail", true),
            ("Delete*Trail", Whole, false, "DeleteMyOtherTrail", true),
            ("a?c", Whole, false, "abc", true),
            ("a?c", Whole, false, "ac", false),
            ("a*b*c", Whole, false, "aXXbYYbZZc", true),
            ("a*b*c", Whole, false, "aXXbYYcZZ", false),
            ("*", Whole, false, "", true),
            // Escapes: literal `*`, `?`, `\`; a lone backslash is itself.
            (r"a\*b", Whole, false, "a*b", true),
            (r"a\*b", Whole, false, "aXb", false),
            (r"a\?", Whole, false, "a?", true),
            (r"C:\\Windows", Whole, false, r"C:\Windows", true),
            (r"C:\Windows", Whole, false, r"C:\windows", true),
            // Modifiers open the ends; the value's own wildcards still apply.
            ("kali", Contains, false, "Mozilla/5.0 (X11; Kali Linux)", true),
            ("kali", Contains, false, "Mozilla/5.0 (X11; Linux)", false),
            ("AccessDenied", StartsWith, false, "AccessDeniedException", true),
            ("AccessDenied", StartsWith, false, "NotAccessDenied", false),
            ("UnauthorizedOperation", EndsWith, false, "Client.UnauthorizedOperation", true),
            ("UnauthorizedOperation", EndsWith, false, "UnauthorizedOperation.X", false),
            ("Admin*Access", Contains, false, "arn:aws:iam::aws:policy/AdministratorAccess", true),
            // Non-ASCII text and case folding.
            ("ÉTÉ", Whole, false, "été", true),
            ("é?", Whole, false, "éx", true),
            ("x", Contains, false, "ñañaxñ", true),
            // A value that is all wildcards collapses into the modifiers' runs (SigmaHQ writes `contains: '*'` for
            // "has any value"); every anchor then matches any text, even the empty one.
            ("*", Contains, false, "Failure", true),
            ("*", Contains, false, "", true),
            ("*", StartsWith, false, "x", true),
            ("*", EndsWith, false, "x", true),
            ("**", Contains, false, "x", true),
            ("?", Contains, false, "", false),
            ("?", Contains, false, "x", true),
        ];
        for (value, anchor, cased, text, expected) in cases {
            let pattern = Pattern::new(value, *anchor, *cased);
            assert_eq!(pattern.matches(text), *expected, "{value:?} {anchor:?} cased={cased} vs {text:?}");
            // The literal fast path and the general matcher agree.
            assert_eq!(pattern.matches_wildcards(text), *expected, "general path: {value:?} {anchor:?} vs {text:?}");
        }
    }

    #[test]
    fn backtracking_stays_linear_enough() {
        // Classic worst case for naive backtracking: many stars against a long near-miss.
        let pattern = Pattern::new("*a*a*a*a*a*a*b", Anchor::Whole, false);
        let text = "a".repeat(10_000);
        assert!(!pattern.matches(&text));
    }
}
