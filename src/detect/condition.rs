//! Sigma conditions (`selection and not 1 of filter*`), compiled once against a rule's named searches into a tree
//! that evaluates with one lookup per search.
//!
//! Grammar, loosest binding first: `or`, `and`, `not`, then a search name, `( … )`, or a quantifier
//! `1 of P` / `any of P` / `all of P`, where `P` is a name pattern with `*` wildcards or `them` (every search whose
//! name does not start with `_`). Keywords are lowercase, as in the Sigma specification.

/// A compiled condition over searches numbered as in the rule's detection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Condition {
    Search(usize),
    Not(Box<Condition>),
    And(Vec<Condition>),
    Or(Vec<Condition>),
    AnyOf(Vec<usize>),
    AllOf(Vec<usize>),
}

impl Condition {
    /// Evaluates with `matched(i)` telling whether search `i` matched the event.
    pub fn eval(&self, matched: &dyn Fn(usize) -> bool) -> bool {
        match self {
            Condition::Search(i) => matched(*i),
            Condition::Not(c) => !c.eval(matched),
            Condition::And(cs) => cs.iter().all(|c| c.eval(matched)),
            Condition::Or(cs) => cs.iter().any(|c| c.eval(matched)),
            Condition::AnyOf(is) => is.iter().any(|&i| matched(i)),
            Condition::AllOf(is) => is.iter().all(|&i| matched(i)),
        }
    }
}

impl Condition {
    /// [`Condition::eval`] in three-valued (Kleene) logic: `search(i)` is `None` when search `i` is undecided, and
    /// so is the result when the undecided searches decide it.
    pub fn partial(&self, search: &dyn Fn(usize) -> Option<bool>) -> Option<bool> {
        match self {
            Condition::Search(i) => search(*i),
            Condition::Not(c) => c.partial(search).map(|b| !b),
            Condition::And(cs) => all(cs.iter().map(|c| c.partial(search))),
            Condition::Or(cs) => any(cs.iter().map(|c| c.partial(search))),
            Condition::AnyOf(is) => any(is.iter().map(|&i| search(i))),
            Condition::AllOf(is) => all(is.iter().map(|&i| search(i))),
        }
    }
}

/// Three-valued `and`: false if any is false, else undecided if any is undecided, else true.
pub fn all(values: impl IntoIterator<Item = Option<bool>>) -> Option<bool> {
    let mut result = Some(true);
    for value in values {
        match value {
            Some(false) => return Some(false),
            Some(true) => {}
            None => result = None,
        }
    }
    result
}

/// Three-valued `or`: true if any is true, else undecided if any is undecided, else false.
pub fn any(values: impl IntoIterator<Item = Option<bool>>) -> Option<bool> {
    all(values.into_iter().map(|v| v.map(|b| !b))).map(|b| !b)
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConditionError {
    #[error("empty condition")]
    Empty,
    #[error("unknown search `{0}`")]
    UnknownSearch(String),
    #[error("pattern `{0}` matches no search")]
    NoMatch(String),
    #[error("expected {expected} at `{found}`")]
    Unexpected { expected: &'static str, found: String },
    #[error("unbalanced parentheses")]
    Unbalanced,
    #[error("nested more than {MAX_DEPTH} levels deep (parentheses and `not`)")]
    TooDeep,
}

/// The deepest nesting a condition may have: far beyond any real rule, and shallow enough that compiling and
/// evaluating it (both recursive) cannot exhaust a thread's stack.
pub const MAX_DEPTH: usize = 64;

/// Compiles `text` against the rule's search names (their order gives the numbers).
pub fn compile(text: &str, searches: &[&str]) -> Result<Condition, ConditionError> {
    let tokens = tokenize(text)?;
    if tokens.is_empty() {
        return Err(ConditionError::Empty);
    }
    let mut parser = Parser { tokens: &tokens, at: 0, searches, depth: 0 };
    let condition = parser.or()?;
    match parser.peek() {
        None => Ok(condition),
        Some(Token::Close) => Err(ConditionError::Unbalanced),
        Some(t) => Err(ConditionError::Unexpected { expected: "`and`, `or` or the end", found: t.text() }),
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Token<'t> {
    Open,
    Close,
    Word(&'t str),
}

impl Token<'_> {
    fn text(&self) -> String {
        match self {
            Token::Open => "(".into(),
            Token::Close => ")".into(),
            Token::Word(w) => (*w).into(),
        }
    }
}

fn tokenize(text: &str) -> Result<Vec<Token<'_>>, ConditionError> {
    let mut tokens = Vec::new();
    let mut depth = 0i32;
    let mut rest = text;
    loop {
        rest = rest.trim_start();
        let Some(c) = rest.chars().next() else { break };
        match c {
            '(' => {
                depth += 1;
                tokens.push(Token::Open);
                rest = &rest[1..];
            }
            ')' => {
                depth -= 1;
                if depth < 0 {
                    return Err(ConditionError::Unbalanced);
                }
                tokens.push(Token::Close);
                rest = &rest[1..];
            }
            _ => {
                let end = rest.find(|c: char| c.is_whitespace() || c == '(' || c == ')').unwrap_or(rest.len());
                tokens.push(Token::Word(&rest[..end]));
                rest = &rest[end..];
            }
        }
    }
    if depth != 0 {
        return Err(ConditionError::Unbalanced);
    }
    Ok(tokens)
}

struct Parser<'p, 't> {
    tokens: &'p [Token<'t>],
    at: usize,
    searches: &'p [&'p str],
    /// Parentheses and `not`s around the current token.
    depth: usize,
}

impl<'p, 't> Parser<'p, 't> {
    fn peek(&self) -> Option<&'p Token<'t>> {
        self.tokens.get(self.at)
    }

    fn keyword(&mut self, word: &str) -> bool {
        if self.peek() == Some(&Token::Word(word)) {
            self.at += 1;
            return true;
        }
        false
    }

    fn or(&mut self) -> Result<Condition, ConditionError> {
        let mut terms = vec![self.and()?];
        while self.keyword("or") {
            terms.push(self.and()?);
        }
        Ok(if terms.len() == 1 { terms.pop().expect("one term") } else { Condition::Or(terms) })
    }

    fn and(&mut self) -> Result<Condition, ConditionError> {
        let mut terms = vec![self.not()?];
        while self.keyword("and") {
            terms.push(self.not()?);
        }
        Ok(if terms.len() == 1 { terms.pop().expect("one term") } else { Condition::And(terms) })
    }

    fn not(&mut self) -> Result<Condition, ConditionError> {
        if self.keyword("not") {
            return self.nested(|parser| Ok(Condition::Not(Box::new(parser.not()?))));
        }
        self.primary()
    }

    /// Parses one level deeper, refusing to go past [`MAX_DEPTH`].
    fn nested(
        &mut self,
        parse: impl FnOnce(&mut Self) -> Result<Condition, ConditionError>,
    ) -> Result<Condition, ConditionError> {
        if self.depth == MAX_DEPTH {
            return Err(ConditionError::TooDeep);
        }
        self.depth += 1;
        let parsed = parse(self);
        self.depth -= 1;
        parsed
    }

    fn primary(&mut self) -> Result<Condition, ConditionError> {
        let token = self.peek().cloned();
        self.at += 1;
        match token {
            Some(Token::Open) => {
                let inner = self.nested(Self::or)?;
                if self.peek() != Some(&Token::Close) {
                    return Err(ConditionError::Unbalanced);
                }
                self.at += 1;
                Ok(inner)
            }
            Some(Token::Word(quantifier @ ("1" | "any" | "all"))) if self.peek() == Some(&Token::Word("of")) => {
                self.at += 1;
                let pattern = match self.peek().cloned() {
                    Some(Token::Word(p)) if !matches!(p, "and" | "or" | "not" | "of") => p,
                    other => {
                        let found = other.map_or_else(|| "the end".to_owned(), |t| t.text());
                        return Err(ConditionError::Unexpected { expected: "a search pattern or `them`", found });
                    }
                };
                self.at += 1;
                let indices: Vec<usize> = self
                    .searches
                    .iter()
                    .enumerate()
                    .filter(|(_, name)| match pattern {
                        "them" => !name.starts_with('_'),
                        p => wildcard_match(p, name),
                    })
                    .map(|(i, _)| i)
                    .collect();
                if indices.is_empty() {
                    return Err(ConditionError::NoMatch(pattern.to_owned()));
                }
                Ok(if quantifier == "all" { Condition::AllOf(indices) } else { Condition::AnyOf(indices) })
            }
            Some(Token::Word(word)) if !matches!(word, "and" | "or" | "not" | "of") => self
                .searches
                .iter()
                .position(|s| *s == word)
                .map(Condition::Search)
                .ok_or_else(|| ConditionError::UnknownSearch(word.to_owned())),
            other => Err(ConditionError::Unexpected {
                expected: "a search, `not`, `(` or a quantifier",
                found: other.map_or_else(|| "the end".to_owned(), |t| t.text()),
            }),
        }
    }
}

/// `*` matches any run of characters; everything else matches itself.
fn wildcard_match(pattern: &str, name: &str) -> bool {
    let Some((first, rest)) = pattern.split_once('*') else { return pattern == name };
    let Some(mut remaining) = name.strip_prefix(first) else { return false };
    let mut parts: Vec<&str> = rest.split('*').collect();
    let last = parts.pop().unwrap_or("");
    for part in parts {
        match remaining.find(part) {
            Some(at) => remaining = &remaining[at + part.len()..],
            None => return false,
        }
    }
    remaining.len() >= last.len() && remaining.ends_with(last)
}

#[cfg(test)]
mod tests {
    use super::*;

    const SEARCHES: &[&str] =
        &["selection", "selection_root", "filter_service", "filter_readonly", "_helper", "keywords"];

    /// Evaluates `condition` with the searches named in `matched` matching, for each case.
    #[track_caller]
    fn check(condition: &str, cases: &[(&[&str], bool)]) {
        let compiled = compile(condition, SEARCHES).unwrap_or_else(|e| panic!("{condition}: {e}"));
        for (matched, expected) in cases {
            let got = compiled.eval(&|i| matched.contains(&SEARCHES[i]));
            assert_eq!(got, *expected, "{condition} with {matched:?} matching");
        }
    }

    #[test]
    fn evaluates_like_the_specification() {
        check("selection", &[(&["selection"], true), (&[], false)]);
        check("selection and not filter_service", &[(&["selection"], true), (&["selection", "filter_service"], false)]);
        // `not` binds tighter than `and`, which binds tighter than `or`.
        check(
            "selection or keywords and not filter_service",
            &[
                (&["selection", "filter_service"], true),
                (&["keywords", "filter_service"], false),
                (&["keywords"], true),
            ],
        );
        check("(selection or keywords) and not filter_service", &[(&["selection", "filter_service"], false)]);
        check("not not selection", &[(&["selection"], true)]);
        check(
            "1 of selection* and not 1 of filter_*",
            &[(&["selection_root"], true), (&["selection_root", "filter_readonly"], false), (&["keywords"], false)],
        );
        check("all of selection*", &[(&["selection"], false), (&["selection", "selection_root"], true)]);
        check("any of filter_*", &[(&["filter_readonly"], true), (&[], false)]);
        // `them` leaves out searches whose names start with `_`.
        check(
            "all of them",
            &[
                (&["selection", "selection_root", "filter_service", "filter_readonly", "keywords"], true),
                (&["selection", "selection_root", "filter_service", "filter_readonly", "_helper"], false),
            ],
        );
        check("1 of them", &[(&["_helper"], false), (&["keywords"], true)]);
        check("((selection))", &[(&["selection"], true)]);
        check("selection and (keywords or not filter_service)", &[(&["selection", "filter_service"], false)]);
    }

    #[test]
    fn partial_evaluation_decides_only_what_every_completion_agrees_on() {
        // Every assignment of matched / not matched / unknown to the six searches: a decided result must equal
        // the full evaluation of every completion of the unknowns, and a fully known one must be decided.
        let conditions = [
            "selection and not 1 of filter_*",
            "selection or keywords and not filter_service",
            "all of selection* or not (keywords and filter_readonly)",
            "1 of them and not _helper",
            "not not selection",
        ];
        let n = SEARCHES.len();
        for text in conditions {
            let condition = compile(text, SEARCHES).unwrap();
            for code in 0..3usize.pow(n as u32) {
                let state: Vec<Option<bool>> =
                    (0..n).map(|i| [None, Some(false), Some(true)][code / 3usize.pow(i as u32) % 3]).collect();
                let got = condition.partial(&|i| state[i]);
                let unknown: Vec<usize> = (0..n).filter(|&i| state[i].is_none()).collect();
                let outcomes: Vec<bool> = (0..1usize << unknown.len())
                    .map(|bits| {
                        let value = |i: usize| {
                            state[i].unwrap_or_else(|| bits >> unknown.iter().position(|&u| u == i).unwrap() & 1 == 1)
                        };
                        condition.eval(&value)
                    })
                    .collect();
                if let Some(decided) = got {
                    assert!(outcomes.iter().all(|o| *o == decided), "{text} with {state:?}");
                }
                if unknown.is_empty() {
                    assert_eq!(got, Some(outcomes[0]), "{text} with {state:?}");
                }
            }
        }
    }

    #[test]
    fn rejects_broken_conditions() {
        let cases: &[(&str, ConditionError)] = &[
            ("", ConditionError::Empty),
            ("   ", ConditionError::Empty),
            ("selection and nope", ConditionError::UnknownSearch("nope".into())),
            ("1 of nothing*", ConditionError::NoMatch("nothing*".into())),
            ("(selection", ConditionError::Unbalanced),
            ("selection)", ConditionError::Unbalanced),
            (
                "selection keywords",
                ConditionError::Unexpected { expected: "`and`, `or` or the end", found: "keywords".into() },
            ),
            (
                "selection and",
                ConditionError::Unexpected {
                    expected: "a search, `not`, `(` or a quantifier",
                    found: "the end".into(),
                },
            ),
            ("1 of", ConditionError::Unexpected { expected: "a search pattern or `them`", found: "the end".into() }),
            (
                "and selection",
                ConditionError::Unexpected { expected: "a search, `not`, `(` or a quantifier", found: "and".into() },
            ),
        ];
        for (text, expected) in cases {
            assert_eq!(compile(text, SEARCHES).as_ref(), Err(expected), "{text:?}");
        }
    }

    /// Nesting up to [`MAX_DEPTH`] compiles; one level more is refused, however it nests.
    #[test]
    fn nesting_is_bounded() {
        let parens = |n: usize| format!("{}selection{}", "(".repeat(n), ")".repeat(n));
        let nots = |n: usize| format!("{}selection", "not ".repeat(n));
        let mixed = |n: usize| format!("{}selection{}", "not (".repeat(n / 2), ")".repeat(n / 2));
        for text in [parens(MAX_DEPTH), nots(MAX_DEPTH), mixed(MAX_DEPTH)] {
            assert!(compile(&text, SEARCHES).is_ok(), "{text}");
        }
        for text in [parens(MAX_DEPTH + 1), nots(MAX_DEPTH + 1), mixed(MAX_DEPTH + 2), parens(100_000)] {
            assert_eq!(compile(&text, SEARCHES), Err(ConditionError::TooDeep), "{}", &text[..20]);
        }
    }

    #[test]
    fn wildcards() {
        let cases = [
            ("selection*", "selection_root", true),
            ("selection*", "selection", true),
            ("*root", "selection_root", true),
            ("sel*_*t", "selection_root", true),
            ("sel*x", "selection_root", false),
            ("filter", "filter_service", false),
            ("*", "anything", true),
            ("a*a", "a", false),
        ];
        for (pattern, name, expected) in cases {
            assert_eq!(wildcard_match(pattern, name), expected, "{pattern} vs {name}");
        }
    }
}
