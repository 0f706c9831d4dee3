//! One named Sigma search of a rule's `detection`: a map of field tests (all must match) or a list of such maps
//! (any must match), compiled from the rule's YAML (as a JSON-shaped value) and evaluated over an event's fields.

use std::borrow::Cow;

use serde_json::Value;

use crate::detect::condition;
use crate::detect::value::{FieldTest, ValueError};

/// Read access to an event's fields by Sigma name (`eventName`, `userIdentity.type`, ...). `None`: absent or null.
/// Strings are borrowed; numbers, booleans, objects and arrays are rendered as text (JSON for containers).
pub trait Fields {
    fn get(&self, field: &str) -> Option<Cow<'_, str>>;
}

/// An event with no fields, for tests that read only the value they are given (suppressions, partial evaluation).
pub struct NoFields;

impl Fields for NoFields {
    fn get(&self, _: &str) -> Option<Cow<'_, str>> {
        None
    }
}

impl Fields for crate::parse::Record<'_, '_> {
    fn get(&self, field: &str) -> Option<Cow<'_, str>> {
        self.field(field)
    }
}

/// What an event's key fields (known before its rules are tested) decide of one field test.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decided {
    Unknown,
    True,
    False,
}

impl Decided {
    fn outcome(self) -> Option<bool> {
        match self {
            Decided::Unknown => None,
            Decided::True => Some(true),
            Decided::False => Some(false),
        }
    }
}

impl From<Option<bool>> for Decided {
    fn from(outcome: Option<bool>) -> Decided {
        match outcome {
            None => Decided::Unknown,
            Some(true) => Decided::True,
            Some(false) => Decided::False,
        }
    }
}

#[derive(Debug, Clone)]
pub enum Search {
    /// Every field test must match.
    AllOf(Vec<(String, FieldTest)>),
    /// Any of the maps must match.
    AnyOf(Vec<Search>),
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SearchError {
    #[error("field `{field}`: {source}")]
    Value { field: String, source: ValueError },
    #[error("field `{0}`: values must be strings, numbers, booleans or null")]
    BadValue(String),
    #[error("keyword searches (a bare list of values) are not supported; name the field")]
    Keywords,
    #[error("a search is a map of fields or a list of such maps")]
    Shape,
}

impl Search {
    pub fn compile(value: &Value) -> Result<Search, SearchError> {
        match value {
            Value::Object(map) => {
                let mut tests = Vec::with_capacity(map.len());
                for (key, values) in map {
                    let mut parts = key.split('|');
                    let field = parts.next().unwrap_or_default().to_owned();
                    let modifiers: Vec<&str> = parts.collect();
                    let scalars = scalars(values).ok_or_else(|| SearchError::BadValue(field.clone()))?;
                    let refs: Vec<Option<&str>> = scalars.iter().map(Option::as_deref).collect();
                    let test = FieldTest::compile(&modifiers, &refs)
                        .map_err(|source| SearchError::Value { field: field.clone(), source })?;
                    tests.push((field, test));
                }
                Ok(Search::AllOf(tests))
            }
            Value::Array(items) if items.iter().all(Value::is_object) && !items.is_empty() => {
                Ok(Search::AnyOf(items.iter().map(Search::compile).collect::<Result<_, _>>()?))
            }
            Value::Array(_) => Err(SearchError::Keywords),
            _ => Err(SearchError::Shape),
        }
    }

    pub fn matches(&self, event: &dyn Fields) -> bool {
        match self {
            Search::AllOf(tests) => tests.iter().all(|(field, test)| test.test(event.get(field).as_deref(), event)),
            Search::AnyOf(maps) => maps.iter().any(|m| m.matches(event)),
        }
    }

    /// Whether the search matches an event of which only some fields are known (`known(field)`: `Some(value)`,
    /// `None` when unknown), in three-valued logic: `None` when the unknown fields decide.
    pub fn partial<'v>(&self, known: &dyn Fn(&str) -> Option<Option<&'v str>>) -> Option<bool> {
        // What `decide` computes, without writing down each test's outcome: this runs for every rule on every
        // new combination of key values, `decide` only for the rules it leaves.
        match self {
            Search::AllOf(tests) => {
                condition::all(tests.iter().map(|(field, test)| known(field).and_then(|value| test.partial(value))))
            }
            Search::AnyOf(maps) => condition::any(maps.iter().map(|map| map.partial(known))),
        }
    }

    /// How many field tests the search holds: the numbering that [`Search::decide`] and
    /// [`Search::matches_decided`] share (in order, depth first).
    pub fn test_count(&self) -> usize {
        match self {
            Search::AllOf(tests) => tests.len(),
            Search::AnyOf(maps) => maps.iter().map(Search::test_count).sum(),
        }
    }

    /// [`Search::partial`], also appending to `decided` what `known` decides of each field test, so that
    /// [`Search::matches_decided`] need not test those again.
    pub fn decide<'v>(
        &self,
        known: &dyn Fn(&str) -> Option<Option<&'v str>>,
        decided: &mut Vec<Decided>,
    ) -> Option<bool> {
        match self {
            // Every test is decided, even past one that settles the search: the numbering must hold.
            Search::AllOf(tests) => {
                let start = decided.len();
                decided.extend(
                    tests.iter().map(|(field, test)| Decided::from(known(field).and_then(|value| test.partial(value)))),
                );
                condition::all(decided[start..].iter().map(|d| d.outcome()))
            }
            Search::AnyOf(maps) => {
                let outcomes: Vec<Option<bool>> = maps.iter().map(|map| map.decide(known, decided)).collect();
                condition::any(outcomes)
            }
        }
    }

    /// [`Search::matches`] taking the tests that `decided` (this search's part of it) already settles as settled.
    pub fn matches_decided(&self, decided: &[Decided], event: &dyn Fields) -> bool {
        match self {
            Search::AllOf(tests) => tests.iter().zip(decided).all(|((field, test), decided)| match decided {
                Decided::True => true,
                Decided::False => false,
                Decided::Unknown => test.test(event.get(field).as_deref(), event),
            }),
            Search::AnyOf(maps) => {
                let mut at = 0;
                maps.iter().any(|map| {
                    let n = map.test_count();
                    let matched = map.matches_decided(&decided[at..at + n], event);
                    at += n;
                    matched
                })
            }
        }
    }

    /// Every field name the search reads, those its `fieldref` tests compare with included.
    pub fn fields<'s>(&'s self, out: &mut Vec<&'s str>) {
        match self {
            Search::AllOf(tests) => {
                for (field, test) in tests {
                    out.push(field);
                    test.referenced_fields(out);
                }
            }
            Search::AnyOf(maps) => maps.iter().for_each(|m| m.fields(out)),
        }
    }
}

/// A value or list of values as strings (`None` for null); YAML numbers and booleans compare as their text.
fn scalars(value: &Value) -> Option<Vec<Option<String>>> {
    let one = |v: &Value| match v {
        Value::Null => Some(None),
        Value::String(s) => Some(Some(s.clone())),
        Value::Number(n) => Some(Some(n.to_string())),
        Value::Bool(b) => Some(Some(b.to_string())),
        _ => None,
    };
    match value {
        Value::Array(items) => items.iter().map(one).collect(),
        other => one(other).map(|v| vec![v]),
    }
}

/// An event as a plain map of field values, for the detect stage's tests.
#[cfg(test)]
pub(crate) struct FieldMap(pub(crate) std::collections::HashMap<&'static str, &'static str>);

#[cfg(test)]
impl Fields for FieldMap {
    fn get(&self, field: &str) -> Option<Cow<'_, str>> {
        self.0.get(field).map(|v| Cow::Borrowed(*v))
    }
}

#[cfg(test)]
pub(crate) fn event(fields: &[(&'static str, &'static str)]) -> FieldMap {
    FieldMap(fields.iter().copied().collect())
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn maps_and_lists_of_maps() {
        // A CIS-style root usage selection: all fields of the map must hold.
        let root = Search::compile(&json!({
            "userIdentity.type": "Root",
            "userIdentity.invokedBy": null,
            "eventType|cased": ["AwsApiCall", "AwsConsoleSignIn"]
        }))
        .unwrap();
        let cases = [
            (event(&[("userIdentity.type", "Root"), ("eventType", "AwsApiCall")]), true),
            (event(&[("userIdentity.type", "root"), ("eventType", "AwsConsoleSignIn")]), true),
            (event(&[("userIdentity.type", "Root"), ("eventType", "awsapicall")]), false),
            (
                event(&[
                    ("userIdentity.type", "Root"),
                    ("userIdentity.invokedBy", "s3.amazonaws.com"),
                    ("eventType", "AwsApiCall"),
                ]),
                false,
            ),
            (event(&[("userIdentity.type", "IAMUser"), ("eventType", "AwsApiCall")]), false),
        ];
        for (e, expected) in &cases {
            assert_eq!(root.matches(e), *expected, "{:?}", e.0);
        }
        // A list of maps: any map.
        let tampering = Search::compile(&json!([
            {"eventSource": "cloudtrail.amazonaws.com", "eventName": ["StopLogging", "DeleteTrail"]},
            {"eventSource": "config.amazonaws.com", "eventName|startswith": "Delete"}
        ]))
        .unwrap();
        assert!(
            tampering.matches(&event(&[("eventSource", "cloudtrail.amazonaws.com"), ("eventName", "DeleteTrail")]))
        );
        assert!(
            tampering.matches(&event(&[("eventSource", "config.amazonaws.com"), ("eventName", "DeleteConfigRule")]))
        );
        assert!(!tampering.matches(&event(&[("eventSource", "config.amazonaws.com"), ("eventName", "PutConfigRule")])));
        let mut fields = Vec::new();
        tampering.fields(&mut fields);
        assert_eq!(
            fields,
            ["eventName", "eventSource", "eventName|startswith".split('|').next().unwrap(), "eventSource"]
        );
        // Numbers and booleans compare as text.
        let numeric = Search::compile(&json!({"requestParameters.maxResults": [100, 50], "readOnly": true})).unwrap();
        assert!(numeric.matches(&event(&[("requestParameters.maxResults", "50"), ("readOnly", "true")])));
    }

    #[test]
    fn rejects_shapes_it_cannot_honour() {
        let cases = [
            (json!(["kali", "parrot"]), SearchError::Keywords),
            (json!("eventName"), SearchError::Shape),
            (json!([]), SearchError::Keywords),
            (json!({"eventName": {"nested": 1}}), SearchError::BadValue("eventName".into())),
            (
                json!({"eventName|base64": "x"}),
                SearchError::Value {
                    field: "eventName".into(),
                    source: ValueError::UnsupportedModifier("base64".into()),
                },
            ),
        ];
        for (value, expected) in cases {
            assert_eq!(Search::compile(&value).err(), Some(expected), "{value}");
        }
    }
}
