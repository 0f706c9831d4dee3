//! IAM policy documents as trailwatch reads them: statements with their effect and `Action`/`NotAction` patterns,
//! and the glob algebra on action patterns (match, overlap, containment) that effective permissions need.
//!
//! `Resource`/`NotResource` and `Condition` are carried along (a statement says whether it has them) but not
//! evaluated: trailwatch answers "which actions may this identity call at all", which is what unused-permission
//! analysis needs, and says so in its reports.

use serde_json::Value;

/// `Allow` or `Deny`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "PascalCase")]
pub enum Effect {
    Allow,
    Deny,
}

/// One action pattern (`s3:Get*`, `*`), kept as written and matched case-insensitively, as IAM does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ActionPattern {
    pub text: String,
    /// Lowercase, for matching.
    folded: Vec<u8>,
}

impl ActionPattern {
    pub fn new(text: &str) -> ActionPattern {
        ActionPattern { text: text.to_owned(), folded: text.to_ascii_lowercase().into_bytes() }
    }

    /// The service prefix (`s3`), or `*` when the prefix itself has a wildcard.
    pub fn service(&self) -> &str {
        match self.text.split_once(':') {
            Some((service, _)) if !service.contains(['*', '?']) => service,
            _ => "*",
        }
    }

    pub fn has_wildcard(&self) -> bool {
        self.folded.iter().any(|b| matches!(b, b'*' | b'?'))
    }

    /// Whether `action` (`service:Name`, any case) matches.
    pub fn matches(&self, action: &str) -> bool {
        glob_match(&self.folded, action.as_bytes())
    }

    /// Whether some action matches both patterns.
    pub fn overlaps(&self, other: &ActionPattern) -> bool {
        glob_overlap(&self.folded, &other.folded)
    }

    /// Whether every action `other` matches, this pattern matches too (sound: `true` only when certain).
    pub fn contains(&self, other: &ActionPattern) -> bool {
        glob_contains(&self.folded, &other.folded)
    }
}

/// `*` matches any run of characters, `?` one character; literal bytes compare ASCII-case-insensitively
/// (`pattern` is already lowercase).
fn glob_match(pattern: &[u8], text: &[u8]) -> bool {
    let (mut p, mut t) = (0, 0);
    let mut backtrack: Option<(usize, usize)> = None;
    while t < text.len() {
        if p < pattern.len() && (pattern[p] == b'?' || pattern[p] == text[t].to_ascii_lowercase()) {
            p += 1;
            t += 1;
        } else if p < pattern.len() && pattern[p] == b'*' {
            backtrack = Some((p, t));
            p += 1;
        } else if let Some((star, from)) = backtrack {
            p = star + 1;
            t = from + 1;
            backtrack = Some((star, from + 1));
        } else {
            return false;
        }
    }
    pattern[p..].iter().all(|&b| b == b'*')
}

/// Whether two globs share a matching string (dynamic programming over both positions).
fn glob_overlap(a: &[u8], b: &[u8]) -> bool {
    // reach[i][j]: the prefixes a[..i] and b[..j] can produce the same string.
    let mut reach = vec![vec![false; b.len() + 1]; a.len() + 1];
    reach[0][0] = true;
    for i in 0..=a.len() {
        for j in 0..=b.len() {
            if !reach[i][j] {
                continue;
            }
            // A star matches the empty string.
            if i < a.len() && a[i] == b'*' {
                reach[i + 1][j] = true;
            }
            if j < b.len() && b[j] == b'*' {
                reach[i][j + 1] = true;
            }
            if i < a.len() && j < b.len() {
                let (x, y) = (a[i], b[j]);
                if x == b'*' || y == b'*' {
                    // A star takes one more character of the other side (and stays, or is used up).
                    if x == b'*' {
                        reach[i][j + 1] = true;
                    }
                    if y == b'*' {
                        reach[i + 1][j] = true;
                    }
                } else if x == b'?' || y == b'?' || x == y {
                    reach[i + 1][j + 1] = true;
                }
            }
        }
    }
    reach[a.len()][b.len()]
}

/// Whether `outer` matches everything `inner` does: `inner`'s wildcards may only be absorbed by `outer`'s `*`
/// (and a `?` in `inner` by a `?` in `outer`).
fn glob_contains(outer: &[u8], inner: &[u8]) -> bool {
    let mut reach = vec![vec![false; inner.len() + 1]; outer.len() + 1];
    reach[0][0] = true;
    for i in 0..=outer.len() {
        for j in 0..=inner.len() {
            if !reach[i][j] {
                continue;
            }
            if i < outer.len() && outer[i] == b'*' {
                reach[i + 1][j] = true;
                if j < inner.len() {
                    reach[i][j + 1] = true;
                }
            }
            if i < outer.len() && j < inner.len() && outer[i] != b'*' {
                let (x, y) = (outer[i], inner[j]);
                let ok = match y {
                    b'*' => false,
                    b'?' => x == b'?',
                    _ => x == b'?' || x == y,
                };
                if ok {
                    reach[i + 1][j + 1] = true;
                }
            }
        }
    }
    reach[outer.len()][inner.len()]
}

/// Which actions a statement names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Actions {
    /// `Action`: these patterns.
    Only(Vec<ActionPattern>),
    /// `NotAction`: everything but these patterns.
    AllBut(Vec<ActionPattern>),
}

impl Actions {
    pub fn matches(&self, action: &str) -> bool {
        match self {
            Actions::Only(patterns) => patterns.iter().any(|p| p.matches(action)),
            Actions::AllBut(patterns) => !patterns.iter().any(|p| p.matches(action)),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Statement {
    /// Position in the document (0-based), for reports.
    pub index: usize,
    pub sid: Option<String>,
    pub effect: Effect,
    pub actions: Actions,
    /// The statement's `Resource` is narrower than `*`, or it uses `NotResource` (not evaluated).
    pub resource_scoped: bool,
    /// The statement has a `Condition` (not evaluated).
    pub conditional: bool,
}

impl Statement {
    /// How reports name the statement: its `Sid`, or its position.
    pub fn label(&self) -> String {
        self.sid.clone().unwrap_or_else(|| format!("#{}", self.index))
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct PolicyDocument {
    pub statements: Vec<Statement>,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PolicyError {
    #[error("policy document is not json: {0}")]
    Json(String),
    #[error("policy document is not url-encoded utf-8")]
    Encoding,
    #[error("statement {0}: {1}")]
    Statement(usize, String),
}

impl PolicyDocument {
    /// A document as IAM returns it: an object, or a string holding JSON, URL-encoded (`%7B%22Version…`) or raw.
    pub fn from_value(value: &Value) -> Result<PolicyDocument, PolicyError> {
        match value {
            Value::String(text) => PolicyDocument::parse(text),
            other => PolicyDocument::from_json(other),
        }
    }

    pub fn parse(text: &str) -> Result<PolicyDocument, PolicyError> {
        let trimmed = text.trim_start();
        let decoded;
        let json = if trimmed.starts_with('{') {
            trimmed
        } else {
            decoded = percent_decode(trimmed).ok_or(PolicyError::Encoding)?;
            &decoded
        };
        let value: Value = serde_json::from_str(json).map_err(|e| PolicyError::Json(e.to_string().to_lowercase()))?;
        PolicyDocument::from_json(&value)
    }

    fn from_json(value: &Value) -> Result<PolicyDocument, PolicyError> {
        let statements = match value.get("Statement") {
            Some(Value::Array(list)) => list.iter().collect(),
            Some(one @ Value::Object(_)) => vec![one],
            Some(_) => return Err(PolicyError::Json("`Statement` is neither an object nor a list".into())),
            None => Vec::new(),
        };
        let statements = statements
            .into_iter()
            .enumerate()
            .map(|(index, s)| statement(index, s).map_err(|reason| PolicyError::Statement(index, reason)))
            .collect::<Result<_, _>>()?;
        Ok(PolicyDocument { statements })
    }
}

fn strings(value: Option<&Value>) -> Result<Option<Vec<&str>>, String> {
    match value {
        None => Ok(None),
        Some(Value::String(s)) => Ok(Some(vec![s])),
        Some(Value::Array(items)) => items
            .iter()
            .map(|v| v.as_str().ok_or_else(|| "a list holds a non-string".to_owned()))
            .collect::<Result<_, _>>()
            .map(Some),
        Some(_) => Err("expected a string or a list of strings".into()),
    }
}

fn statement(index: usize, s: &Value) -> Result<Statement, String> {
    let effect = match s.get("Effect").and_then(Value::as_str) {
        Some("Allow") => Effect::Allow,
        Some("Deny") => Effect::Deny,
        other => return Err(format!("`Effect` is {other:?}, not Allow or Deny")),
    };
    let patterns = |list: Vec<&str>| list.into_iter().map(ActionPattern::new).collect::<Vec<_>>();
    let actions = match (strings(s.get("Action"))?, strings(s.get("NotAction"))?) {
        (Some(list), None) => Actions::Only(patterns(list)),
        (None, Some(list)) => Actions::AllBut(patterns(list)),
        (Some(_), Some(_)) => return Err("both `Action` and `NotAction`".into()),
        (None, None) => return Err("neither `Action` nor `NotAction`".into()),
    };
    let resource_scoped = match (strings(s.get("Resource"))?, s.get("NotResource")) {
        (_, Some(_)) => true,
        (Some(list), None) => !list.contains(&"*"),
        (None, None) => false,
    };
    Ok(Statement {
        index,
        sid: s.get("Sid").and_then(Value::as_str).filter(|s| !s.is_empty()).map(str::to_owned),
        effect,
        actions,
        resource_scoped,
        conditional: s.get("Condition").is_some_and(|c| c.as_object().is_none_or(|o| !o.is_empty())),
    })
}

/// `%XX` escapes and `+` as space; `None` when the result is not UTF-8 or an escape is malformed.
pub fn percent_decode(text: &str) -> Option<String> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' => {
                let hex = std::str::from_utf8(bytes.get(i + 1..i + 3)?).ok()?;
                out.push(u8::from_str_radix(hex, 16).ok()?);
                i += 3;
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8(out).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn action_patterns_match_as_iam_does() {
        // (pattern, action, matches)
        let cases = [
            ("s3:Get*", "s3:GetObject", true),
            ("s3:get*", "s3:GetObject", true),
            ("S3:GETOBJECT", "s3:GetObject", true),
            ("s3:Get*", "s3:PutObject", false),
            ("s3:Get*", "s3-outposts:GetObject", false),
            ("*", "iam:CreateUser", true),
            ("iam:*User", "iam:CreateUser", true),
            ("iam:*User", "iam:CreateUserGroup", false),
            ("ec2:Describe?pcs", "ec2:DescribeVpcs", true),
            ("ec2:Describe?pcs", "ec2:DescribeVVpcs", false),
            ("s3:*Object*", "s3:PutObjectAcl", true),
            ("kms:*", "kms:Decrypt", true),
            ("", "kms:Decrypt", false),
        ];
        for (pattern, action, expected) in cases {
            assert_eq!(ActionPattern::new(pattern).matches(action), expected, "{pattern} ~ {action}");
        }
    }

    #[test]
    fn overlap_and_containment_are_decided_on_the_patterns() {
        // (a, b, overlap, a contains b)
        let cases = [
            ("s3:*", "s3:GetObject", true, true),
            ("s3:Get*", "s3:*Object", true, false),
            ("s3:Get*", "s3:Put*", false, false),
            ("*", "iam:*", true, true),
            ("iam:*", "*", true, false),
            ("s3:*Object*", "s3:GetObject*", true, true),
            ("s3:*Object*", "s3:ListBucket", false, false),
            ("s3:GetObject?cl", "s3:GetObjectAcl", true, true),
            ("s3:GetObjectAcl", "s3:GetObject?cl", true, false),
            ("lambda:Invoke*", "lambda:InvokeFunction", true, true),
            ("ec2:*", "ec2:*", true, true),
        ];
        for (a, b, overlap, contains) in cases {
            let (pa, pb) = (ActionPattern::new(a), ActionPattern::new(b));
            assert_eq!(pa.overlaps(&pb), overlap, "{a} overlaps {b}");
            assert_eq!(pb.overlaps(&pa), overlap, "{b} overlaps {a}");
            assert_eq!(pa.contains(&pb), contains, "{a} contains {b}");
        }
    }

    #[test]
    fn documents_are_read_raw_url_encoded_or_as_objects() {
        let raw = r#"{"Version":"2012-10-17","Statement":[{"Sid":"Read","Effect":"Allow","Action":["s3:Get*","s3:List*"],"Resource":"*"},{"Effect":"Deny","NotAction":"iam:*","Resource":"arn:aws:s3:::b/*","Condition":{"Bool":{"aws:MultiFactorAuthPresent":"false"}}}]}"#;
        let encoded = "%7B%22Version%22%3A%222012-10-17%22%2C%22Statement%22%3A%5B%7B%22Sid%22%3A%22Read%22%2C%22Effect%22%3A%22Allow%22%2C%22Action%22%3A%5B%22s3%3AGet%2A%22%2C%22s3%3AList%2A%22%5D%2C%22Resource%22%3A%22%2A%22%7D%2C%7B%22Effect%22%3A%22Deny%22%2C%22NotAction%22%3A%22iam%3A%2A%22%2C%22Resource%22%3A%22arn%3Aaws%3As3%3A%3A%3Ab%2F%2A%22%2C%22Condition%22%3A%7B%22Bool%22%3A%7B%22aws%3AMultiFactorAuthPresent%22%3A%22false%22%7D%7D%7D%5D%7D";
        let object: Value = serde_json::from_str(raw).unwrap();
        let docs = [
            PolicyDocument::parse(raw).unwrap(),
            PolicyDocument::parse(encoded).unwrap(),
            PolicyDocument::from_value(&object).unwrap(),
            PolicyDocument::from_value(&Value::String(encoded.into())).unwrap(),
        ];
        for doc in &docs {
            assert_eq!(doc, &docs[0]);
        }
        let [read, deny] = &docs[0].statements[..] else { panic!("two statements") };
        assert_eq!(
            (read.label(), read.effect, read.resource_scoped, read.conditional),
            ("Read".into(), Effect::Allow, false, false)
        );
        assert_eq!(
            (deny.label(), deny.effect, deny.resource_scoped, deny.conditional),
            ("#1".into(), Effect::Deny, true, true)
        );
        assert!(deny.actions.matches("s3:GetObject") && !deny.actions.matches("iam:CreateUser"));
    }

    #[test]
    fn malformed_documents_say_what_is_wrong() {
        let cases = [
            ("{", "policy document is not json"),
            ("%7", "policy document is not url-encoded utf-8"),
            (r#"{"Statement":[{"Effect":"Permit","Action":"*"}]}"#, "statement 0: `Effect` is Some(\"Permit\")"),
            (r#"{"Statement":[{"Effect":"Allow","Action":"*","NotAction":"s3:*"}]}"#, "statement 0: both"),
            (r#"{"Statement":[{"Effect":"Allow"}]}"#, "statement 0: neither"),
            (r#"{"Statement":[{"Effect":"Allow","Action":[1]}]}"#, "statement 0: a list holds"),
        ];
        for (text, expected) in cases {
            let err = PolicyDocument::parse(text).unwrap_err().to_string();
            assert!(err.starts_with(expected), "{text}: {err}");
        }
    }
}
