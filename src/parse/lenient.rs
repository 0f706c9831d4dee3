//! Lenient reading of simd-json's tape: a field of an unexpected JSON type reads as absent.
//!
//! CloudTrail's schema drifts (new fields, `null`s, fields that changed type), and one odd record must never cost us
//! the whole file. So records are read straight off the tape, keeping a value only when it has the expected shape,
//! and any field can still be looked up by a dotted path for the detect stage, without a second parse.

use std::borrow::Cow;
use std::fmt::Write as _;

use simd_json::{Node, StaticNode};

/// A JSON string borrowed from the input; absent for `null` or any other type. An empty string reads as absent
/// through [`Text::get`], as it does everywhere in the state, but is kept: for the detect stage an empty string is a
/// value, and Sigma's `null` means absent only ([`Text::is_empty_string`]).
///
/// simd-json unescapes strings in place, so every string borrows from the buffer (the parse tests check escaped
/// strings).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Text<'a>(pub Option<&'a str>);

impl<'a> Text<'a> {
    pub fn get(&self) -> Option<&'a str> {
        self.0.filter(|s| !s.is_empty())
    }

    /// Whether the field is there as `""`.
    pub fn is_empty_string(&self) -> bool {
        self.0 == Some("")
    }
}

/// A JSON object read as `T`; absent for `null` or any other type.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Obj<T>(pub Option<T>);

impl<T> Default for Obj<T> {
    fn default() -> Self {
        Obj(None)
    }
}

impl<T> Obj<T> {
    pub fn get(&self) -> Option<&T> {
        self.0.as_ref()
    }
}

/// One JSON value on the tape: its header node followed by everything nested in it.
#[derive(Debug, Clone, Copy)]
pub struct Json<'t, 'de>(&'t [Node<'de>]);

impl<'t, 'de> Json<'t, 'de> {
    /// The document's root value; `None` for an empty tape.
    pub fn root(tape: &'t [Node<'de>]) -> Option<Json<'t, 'de>> {
        let len = span(tape.first()?);
        tape.get(..len).map(Json)
    }

    /// A non-empty string.
    pub fn text(self) -> Text<'de> {
        Text(self.str())
    }

    /// Any string, empty included.
    pub fn str(self) -> Option<&'de str> {
        match self.0.first() {
            Some(Node::String(s)) => Some(s),
            _ => None,
        }
    }

    pub fn is_null(self) -> bool {
        matches!(self.0.first(), Some(Node::Static(StaticNode::Null)) | None)
    }

    /// The key/value pairs of an object, in document order; `None` for any other type.
    pub fn entries(self) -> Option<Entries<'t, 'de>> {
        match self.0.first() {
            Some(Node::Object { len, .. }) => Some(Entries { rest: &self.0[1..], left: *len }),
            _ => None,
        }
    }

    /// The elements of an array; `None` for any other type.
    pub fn elements(self) -> Option<Elements<'t, 'de>> {
        match self.0.first() {
            Some(Node::Array { len, .. }) => Some(Elements { rest: &self.0[1..], left: *len }),
            _ => None,
        }
    }

    /// The value of `key` in an object (the last one, if the key repeats).
    pub fn get(self, key: &str) -> Option<Json<'t, 'de>> {
        self.entries()?.filter(|(k, _)| *k == key).last().map(|(_, v)| v)
    }

    /// The value at a dotted path (`userIdentity.sessionContext.sessionIssuer.arn`). A key that itself contains a
    /// dot is found too (`tls.details` as one key): the shortest prefix is tried first, since nested keys are the
    /// common case and each try scans an object's keys.
    pub fn path(self, path: &str) -> Option<Json<'t, 'de>> {
        path.match_indices('.').find_map(|(i, _)| self.get(&path[..i])?.path(&path[i + 1..])).or_else(|| self.get(path))
    }

    /// The value as text: a string as it is (borrowed), a number or boolean as written, an object or array as
    /// compact JSON (so that `contains` can search inside `requestParameters`), `None` for null.
    pub fn as_text(self) -> Option<Cow<'de, str>> {
        match self.0.first()? {
            Node::String(s) => Some(Cow::Borrowed(s)),
            Node::Static(StaticNode::Null) => None,
            _ => {
                let mut out = String::new();
                self.write_json(&mut out);
                Some(Cow::Owned(out))
            }
        }
    }

    fn write_json(self, out: &mut String) {
        match self.0.first() {
            Some(Node::String(s)) => write_string(s, out),
            Some(Node::Static(value)) => {
                let _ = match value {
                    StaticNode::I64(n) => write!(out, "{n}"),
                    StaticNode::U64(n) => write!(out, "{n}"),
                    StaticNode::F64(n) => write!(out, "{n}"),
                    StaticNode::Bool(b) => write!(out, "{b}"),
                    StaticNode::Null => write!(out, "null"),
                };
            }
            Some(Node::Object { .. }) => {
                out.push('{');
                for (i, (key, value)) in self.entries().into_iter().flatten().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    write_string(key, out);
                    out.push(':');
                    value.write_json(out);
                }
                out.push('}');
            }
            Some(Node::Array { .. }) => {
                out.push('[');
                for (i, value) in self.elements().into_iter().flatten().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    value.write_json(out);
                }
                out.push(']');
            }
            None => out.push_str("null"),
        }
    }
}

fn write_string(s: &str, out: &mut String) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

/// Nodes a value occupies on the tape, its header included.
fn span(node: &Node<'_>) -> usize {
    match node {
        Node::Object { count, .. } | Node::Array { count, .. } => count + 1,
        _ => 1,
    }
}

/// Splits the next value off the front of `rest`. A tape simd-json validated always has it; a short one ends the
/// walk instead of panicking.
fn next_value<'t, 'de>(rest: &mut &'t [Node<'de>]) -> Option<Json<'t, 'de>> {
    let len = span(rest.first()?);
    let (value, tail) = rest.split_at_checked(len)?;
    *rest = tail;
    Some(Json(value))
}

pub struct Entries<'t, 'de> {
    rest: &'t [Node<'de>],
    left: usize,
}

impl<'t, 'de> Iterator for Entries<'t, 'de> {
    type Item = (&'de str, Json<'t, 'de>);

    fn next(&mut self) -> Option<Self::Item> {
        if self.left == 0 {
            return None;
        }
        self.left -= 1;
        let key = match self.rest.first()? {
            Node::String(key) => *key,
            _ => return None,
        };
        self.rest = &self.rest[1..];
        Some((key, next_value(&mut self.rest)?))
    }
}

pub struct Elements<'t, 'de> {
    rest: &'t [Node<'de>],
    left: usize,
}

impl<'t, 'de> Iterator for Elements<'t, 'de> {
    type Item = Json<'t, 'de>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.left == 0 {
            return None;
        }
        self.left -= 1;
        next_value(&mut self.rest)
    }
}
