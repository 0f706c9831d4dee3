//! A Sigma rule's `detection` block: its named searches and its condition, compiled together.

use serde_json::Value;

use crate::detect::condition::{self, Condition, ConditionError};
use crate::detect::search::{Decided, Fields, Search, SearchError};

#[derive(Debug, Clone)]
pub struct Detection {
    names: Vec<String>,
    searches: Vec<Search>,
    /// Where each search's tests start in a [`Detection::decide`] list (one more entry: the total).
    starts: Vec<usize>,
    condition: Condition,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DetectionError {
    #[error("`detection` must be a map of named searches with a `condition`")]
    Shape,
    #[error("`detection` has no `condition`")]
    NoCondition,
    #[error("search `{name}`: {source}")]
    Search { name: String, source: SearchError },
    #[error("condition `{text}`: {source}")]
    Condition { text: String, source: ConditionError },
    #[error("`timeframe` is not supported: use a correlation rule")]
    Timeframe,
    /// Several of the above, in the order of the detection's keys.
    #[error("{}", .0.iter().map(ToString::to_string).collect::<Vec<_>>().join("; "))]
    Several(Vec<DetectionError>),
}

impl Detection {
    pub fn compile(detection: &Value) -> Result<Detection, DetectionError> {
        let map = detection.as_object().ok_or(DetectionError::Shape)?;
        // Every problem is reported, not only the first: a search that fails is still a name the condition
        // may use.
        let mut problems = Vec::new();
        let mut names = Vec::new();
        let mut searches = Vec::new();
        for (name, value) in map {
            match name.as_str() {
                "condition" => continue,
                "timeframe" => problems.push(DetectionError::Timeframe),
                _ => match Search::compile(value) {
                    Ok(search) => searches.push(search),
                    Err(source) => problems.push(DetectionError::Search { name: name.clone(), source }),
                },
            }
            names.push(name.clone());
        }
        // A list of conditions means any of them.
        let texts: Vec<&str> = match map.get("condition") {
            Some(Value::String(text)) => vec![text],
            Some(Value::Array(items)) if !items.is_empty() && items.iter().all(Value::is_string) => {
                items.iter().filter_map(Value::as_str).collect()
            }
            Some(_) => {
                problems.push(DetectionError::Shape);
                Vec::new()
            }
            None => {
                problems.push(DetectionError::NoCondition);
                Vec::new()
            }
        };
        let refs: Vec<&str> = names.iter().map(String::as_str).collect();
        let mut conditions = Vec::new();
        for text in texts {
            match condition::compile(text, &refs) {
                Ok(condition) => conditions.push(condition),
                Err(source) => problems.push(DetectionError::Condition { text: text.to_owned(), source }),
            }
        }
        match problems.len() {
            0 => {}
            1 => return Err(problems.pop().expect("one")),
            _ => return Err(DetectionError::Several(problems)),
        }
        let condition = if conditions.len() == 1 { conditions.pop().expect("one") } else { Condition::Or(conditions) };
        let mut starts = vec![0];
        for search in &searches {
            starts.push(starts.last().expect("one") + search.test_count());
        }
        Ok(Detection { names, searches, starts, condition })
    }

    /// Whether the event matches; each search is evaluated only if the condition asks for it.
    pub fn matches(&self, event: &dyn Fields) -> bool {
        self.condition.eval(&|i| self.searches[i].matches(event))
    }

    /// Whether an event of which only some fields are known could match (see [`Search::partial`]): `false` only
    /// when the known fields already rule it out.
    pub fn could_match<'v>(&self, known: &dyn Fn(&str) -> Option<Option<&'v str>>) -> bool {
        self.condition.partial(&|i| self.searches[i].partial(known)) != Some(false)
    }

    /// For events of which only some fields are known: whether they match (three-valued, as
    /// [`Detection::could_match`]), and what the known fields decide of each field test, for
    /// [`Detection::matches_decided`] to test only the rest.
    pub fn decide<'v>(&self, known: &dyn Fn(&str) -> Option<Option<&'v str>>) -> (Option<bool>, Box<[Decided]>) {
        let mut decided = Vec::with_capacity(*self.starts.last().expect("one"));
        let outcomes: Vec<Option<bool>> = self.searches.iter().map(|s| s.decide(known, &mut decided)).collect();
        (self.condition.partial(&|i| outcomes[i]), decided.into_boxed_slice())
    }

    /// [`Detection::matches`] for an event whose known fields gave `decided` (from [`Detection::decide`]).
    pub fn matches_decided(&self, decided: &[Decided], event: &dyn Fields) -> bool {
        self.condition.eval(&|i| self.searches[i].matches_decided(&decided[self.starts[i]..self.starts[i + 1]], event))
    }

    /// Every field the detection reads.
    pub fn fields(&self) -> Vec<&str> {
        let mut out = Vec::new();
        for search in &self.searches {
            search.fields(&mut out);
        }
        out.sort_unstable();
        out.dedup();
        out
    }

    pub fn search_names(&self) -> &[String] {
        &self.names
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::detect::search::event;

    #[test]
    fn root_account_usage_as_cis_defines_it() {
        let detection = Detection::compile(&json!({
            "selection": {"userIdentity.type": "Root"},
            "filter_service": {"userIdentity.invokedBy|exists": true},
            "filter_event": {"eventType": "AwsServiceEvent"},
            "condition": "selection and not 1 of filter_*"
        }))
        .unwrap();
        assert!(detection.matches(&event(&[("userIdentity.type", "Root"), ("eventType", "AwsApiCall")])));
        assert!(
            !detection
                .matches(&event(&[("userIdentity.type", "Root"), ("userIdentity.invokedBy", "s3.amazonaws.com")]))
        );
        assert!(!detection.matches(&event(&[("userIdentity.type", "Root"), ("eventType", "AwsServiceEvent")])));
        assert!(!detection.matches(&event(&[("userIdentity.type", "IAMUser")])));
        assert_eq!(detection.fields(), ["eventType", "userIdentity.invokedBy", "userIdentity.type"]);
        // A list of conditions is their `or`.
        let either = Detection::compile(&json!({
            "a": {"eventName": "StopLogging"}, "b": {"eventName": "DeleteTrail"}, "condition": ["a", "b"]
        }))
        .unwrap();
        assert!(either.matches(&event(&[("eventName", "DeleteTrail")])));
    }

    #[test]
    fn tests_decided_by_known_fields_are_not_needed_again() {
        let detections = [
            // SigmaHQ's management-account rule: a name prefix list settled by the name alone.
            json!({
                "selection": {"eventName|startswith": ["Create", "Delete", "Put"]},
                "filter_gitops": {"userAgent|contains": "terraform"},
                "filter_service": {"userIdentity.type": "Service"},
                "condition": "selection and not 1 of filter_*"
            }),
            // A list of maps, null, exists and a field reference.
            json!({
                "sel": [
                    {"eventSource": "iam.amazonaws.com", "eventName": "UpdateLoginProfile"},
                    {"eventName": "CreateAccessKey", "errorCode": null}
                ],
                "f_ref": {"userIdentity.arn|fieldref|endswith": "requestParameters.userName"},
                "f_ua": {"userAgent|exists": false},
                "condition": "sel and not (f_ref or f_ua)"
            }),
            json!({"a": {"eventName": "ConsoleLogin"}, "b": {"userAgent": "x"}, "condition": "all of them or not a"}),
        ];
        let events = [
            event(&[("eventName", "CreateUser"), ("userAgent", "aws-cli"), ("userIdentity.type", "IAMUser")]),
            event(&[("eventName", "PutObject"), ("userAgent", "Terraform/1.5"), ("userIdentity.type", "AssumedRole")]),
            event(&[("eventName", "ListBuckets"), ("userIdentity.type", "Service")]),
            event(&[("eventName", "CreateBucket"), ("userIdentity.type", "Service")]),
            event(&[
                ("eventSource", "iam.amazonaws.com"),
                ("eventName", "UpdateLoginProfile"),
                ("userAgent", "console"),
                ("userIdentity.arn", "arn:aws:iam::1:user/alice"),
                ("requestParameters.userName", "bob"),
            ]),
            event(&[
                ("eventSource", "iam.amazonaws.com"),
                ("eventName", "UpdateLoginProfile"),
                ("userAgent", "console"),
                ("userIdentity.arn", "arn:aws:iam::1:user/bob"),
                ("requestParameters.userName", "bob"),
            ]),
            event(&[("eventName", "CreateAccessKey"), ("errorCode", "AccessDenied"), ("userAgent", "x")]),
            event(&[("eventName", "CreateAccessKey"), ("userAgent", "x")]),
            event(&[("eventName", "ConsoleLogin"), ("userAgent", "x")]),
            event(&[("eventName", "ConsoleLogin"), ("userAgent", "y")]),
        ];
        // Which fields are known before the rules are tested: none, the event's key fields, or all its fields.
        let known_sets: [&[&str]; 4] = [
            &[],
            &["eventSource", "eventName", "userIdentity.type", "errorCode"],
            &["eventName"],
            &["eventName", "userAgent", "userIdentity.type", "errorCode", "eventSource", "userIdentity.arn"],
        ];
        let mut decided_some = 0;
        for value in &detections {
            let detection = Detection::compile(value).unwrap();
            for e in &events {
                let expected = detection.matches(e);
                for known_fields in known_sets {
                    let known = |field: &str| known_fields.contains(&field).then(|| e.0.get(field).copied());
                    let (outcome, decided) = detection.decide(&known);
                    assert_eq!(decided.len(), detection.starts[detection.searches.len()]);
                    assert!(outcome.is_none_or(|o| o == expected), "{value} {:?} {known_fields:?}", e.0);
                    assert_eq!(detection.could_match(&known), outcome != Some(false));
                    assert_eq!(detection.matches_decided(&decided, e), expected, "{value} {:?} {known_fields:?}", e.0);
                    decided_some += decided.iter().filter(|d| **d != Decided::Unknown).count();
                }
            }
        }
        assert!(decided_some > 0);
    }

    #[test]
    fn broken_detections_say_why() {
        let cases = [
            (json!("selection"), DetectionError::Shape),
            (json!({"selection": {"a": "b"}}), DetectionError::NoCondition),
            (json!({"selection": {"a": "b"}, "condition": 3}), DetectionError::Shape),
            (json!({"selection": {"a": "b"}, "timeframe": "5m", "condition": "selection"}), DetectionError::Timeframe),
            (
                json!({"selection": {"a": "b"}, "condition": "selection and filter"}),
                DetectionError::Condition {
                    text: "selection and filter".into(),
                    source: ConditionError::UnknownSearch("filter".into()),
                },
            ),
            (
                json!({"keywords": ["kali"], "condition": "keywords"}),
                DetectionError::Search { name: "keywords".into(), source: SearchError::Keywords },
            ),
        ];
        for (value, expected) in cases {
            assert_eq!(Detection::compile(&value).err(), Some(expected), "{value}");
        }
    }
}
