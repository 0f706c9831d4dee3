//! One Sigma rule file → compiled rules: the metadata an alert carries (`id`, `title`, `level`), and either an event
//! detection or a correlation over other rules (Sigma's `event_count`, `value_count`, `temporal`).
//!
//! A file may hold several YAML documents (a correlation and the rules it counts); each document compiles on its
//! own, so one broken rule is reported with its reason and the others still load.

use serde_json::Value;

use crate::detect::detection::{Detection, DetectionError};

/// Sigma's `level`, lowest first. Bounded: a metric label.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    Informational,
    Low,
    Medium,
    High,
    Critical,
}

impl Severity {
    pub const ALL: [Severity; 5] =
        [Severity::Informational, Severity::Low, Severity::Medium, Severity::High, Severity::Critical];

    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Informational => "informational",
            Severity::Low => "low",
            Severity::Medium => "medium",
            Severity::High => "high",
            Severity::Critical => "critical",
        }
    }

    pub fn parse(text: &str) -> Option<Severity> {
        Severity::ALL.into_iter().find(|s| s.as_str() == text)
    }
}

#[derive(Debug, Clone)]
pub struct Rule {
    pub id: String,
    /// Sigma's `name`, by which correlations may refer to a rule besides its id.
    pub name: Option<String>,
    pub title: String,
    pub description: String,
    pub level: Severity,
    /// Where the rule came from: `builtin` or the file's path.
    pub origin: String,
    pub body: RuleBody,
}

#[derive(Debug, Clone)]
pub enum RuleBody {
    Event(Detection),
    Correlation(Correlation),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Correlation {
    pub kind: CorrelationKind,
    /// The rules correlated, by id or name.
    pub rules: Vec<String>,
    pub group_by: Vec<String>,
    pub timespan_secs: i64,
    /// For `event_count` and `value_count`; `temporal` needs every rule to match.
    pub threshold: Option<Threshold>,
    /// For `value_count`: the field whose distinct values are counted.
    pub field: Option<String>,
    /// Whether the correlated rules raise alerts of their own as well (Sigma's `generate`, default false).
    pub generate: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CorrelationKind {
    EventCount,
    ValueCount,
    Temporal,
}

/// `gte: 5` and friends; a range (`gte` and `lte`) holds both bounds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Threshold {
    pub min: Option<u64>,
    pub max: Option<u64>,
}

impl Threshold {
    pub fn holds(&self, n: u64) -> bool {
        self.min.is_none_or(|min| n >= min) && self.max.is_none_or(|max| n <= max)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RuleError {
    #[error("invalid yaml: {0}")]
    Yaml(String),
    #[error("a rule is a yaml map")]
    NotAMap,
    #[error("missing `{0}`")]
    Missing(&'static str),
    #[error("`{0}` must be a string")]
    NotAString(&'static str),
    #[error("unknown level `{0}`")]
    Level(String),
    #[error("logsource is not aws cloudtrail (product `{product}`, service `{service}`)")]
    NotCloudTrail { product: String, service: String },
    #[error("{0}")]
    Detection(#[from] DetectionError),
    #[error("correlation: {0}")]
    Correlation(String),
    /// Several of the above, in the order they were found.
    #[error("{}", .0.iter().map(ToString::to_string).collect::<Vec<_>>().join("; "))]
    Several(Vec<RuleError>),
}

/// Compiles every YAML document of a rule file. `origin` names the file in the rules and in errors.
pub fn load(text: &str, origin: &str) -> Vec<Result<Rule, RuleError>> {
    // YAML's parser takes time quadratic in the nesting of flow collections before it refuses them (100,000 `[`
    // took 69 s): refuse them first.
    if let Err(err) = check_nesting(text) {
        return vec![Err(err)];
    }
    let mut out = Vec::new();
    for document in documents(text) {
        let value = match serde_yaml_ng::from_str::<Value>(document) {
            Ok(Value::Null) => continue,
            Ok(value) => value,
            Err(err) => {
                out.push(Err(RuleError::Yaml(err.to_string())));
                continue;
            }
        };
        match compile(&value, origin) {
            Ok(rules) => out.extend(rules.into_iter().map(Ok)),
            Err(err) => out.push(Err(err)),
        }
    }
    out
}

/// The deepest nesting of YAML flow collections (`[`, `{`) a rule file may have; real rules use two or three.
pub const MAX_FLOW_NESTING: usize = 64;

/// Refuses text whose flow collections nest deeper than [`MAX_FLOW_NESTING`], counting brackets outside quotes
/// and comments (a quoted or commented bracket is text).
fn check_nesting(text: &str) -> Result<(), RuleError> {
    let (mut depth, mut quote, mut comment) = (0usize, None, false);
    let mut previous = b'\n';
    for &b in text.as_bytes() {
        match (quote, b) {
            // A quote or a comment ends with its line here: a stray apostrophe (`don't`) must not hide brackets.
            (_, b'\n') => (comment, quote) = (false, None),
            _ if comment => {}
            (Some(q), _) if b == q => quote = None,
            (Some(_), _) => {}
            (None, b'"' | b'\'') => quote = Some(b),
            (None, b'#') if previous.is_ascii_whitespace() => comment = true,
            (None, b'[' | b'{') => {
                depth += 1;
                if depth > MAX_FLOW_NESTING {
                    return Err(RuleError::Yaml(format!(
                        "collections nested more than {MAX_FLOW_NESTING} levels deep"
                    )));
                }
            }
            (None, b']' | b'}') => depth = depth.saturating_sub(1),
            _ => {}
        }
        previous = b;
    }
    Ok(())
}

/// The YAML documents of a file, split at `---` lines, so that a syntax error in one (from which YAML's parser
/// cannot resume) does not hide the problems of the next. Line numbers in errors count from the document's start.
fn documents(text: &str) -> impl Iterator<Item = &str> {
    let mut rest = text;
    std::iter::from_fn(move || {
        if rest.is_empty() {
            return None;
        }
        let mut at = 0;
        for line in rest.split_inclusive('\n') {
            let marker =
                line.strip_prefix("---").is_some_and(|tail| tail.trim().is_empty() || tail.starts_with([' ', '#']));
            if marker && at > 0 {
                let (document, tail) = rest.split_at(at);
                rest = tail;
                return Some(document);
            }
            at += line.len();
        }
        Some(std::mem::take(&mut rest))
    })
}

/// Compiles one rule document (as a JSON-shaped value). A Sigma 1 aggregation (`condition: selection | count()
/// by userIdentity.arn > 20` with `timeframe`) becomes two rules: the selection as an event rule with the id
/// `<id>#events`, and an `event_count` (or, for `count(field)`, `value_count`) correlation over it with the rule's
/// own id, so that its alerts carry the id the rule was written with.
pub fn compile(doc: &Value, origin: &str) -> Result<Vec<Rule>, RuleError> {
    let map = doc.as_object().ok_or(RuleError::NotAMap)?;
    let text = |key: &'static str| string(map, key);
    // The metadata's problems are reported together with the body's.
    let mut problems = Vec::new();
    let mut required = |key: &'static str| match text(key).and_then(|t| t.ok_or(RuleError::Missing(key))) {
        Ok(value) => value,
        Err(err) => {
            problems.push(err);
            String::new()
        }
    };
    let (title, id) = (required("title"), required("id"));
    let level = match text("level") {
        Ok(None) => Severity::Medium,
        Ok(Some(level)) => Severity::parse(&level).unwrap_or_else(|| {
            problems.push(RuleError::Level(level));
            Severity::Medium
        }),
        Err(err) => {
            problems.push(err);
            Severity::Medium
        }
    };
    match compile_body(map, origin, title, id, level) {
        Ok(rules) if problems.is_empty() => Ok(rules),
        Ok(_) => Err(several(problems)),
        Err(err) => {
            problems.push(err);
            Err(several(problems))
        }
    }
}

/// A string-valued key of a rule; absent or null is `None`.
fn string(map: &serde_json::Map<String, Value>, key: &'static str) -> Result<Option<String>, RuleError> {
    match map.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(_) => Err(RuleError::NotAString(key)),
    }
}

fn several(mut problems: Vec<RuleError>) -> RuleError {
    match problems.len() {
        1 => problems.pop().expect("one"),
        _ => RuleError::Several(problems),
    }
}

/// The rule's detection or correlation, compiled into rules with the given metadata.
fn compile_body(
    map: &serde_json::Map<String, Value>,
    origin: &str,
    title: String,
    id: String,
    level: Severity,
) -> Result<Vec<Rule>, RuleError> {
    let text = |key: &'static str| string(map, key);
    let rule = |id: String, name: Option<String>, body: RuleBody| -> Result<Rule, RuleError> {
        Ok(Rule {
            id,
            name,
            title: title.clone(),
            description: text("description")?.unwrap_or_default().trim().to_owned(),
            level,
            origin: origin.to_owned(),
            body,
        })
    };
    if let Some(correlation) = map.get("correlation") {
        let body = RuleBody::Correlation(compile_correlation(correlation).map_err(RuleError::Correlation)?);
        return Ok(vec![rule(id, text("name")?, body)?]);
    }
    let logsource = map.get("logsource").ok_or(RuleError::Missing("logsource"))?;
    let part = |key: &str| logsource.get(key).and_then(Value::as_str).unwrap_or("").to_owned();
    let (product, service) = (part("product"), part("service"));
    if !product.eq_ignore_ascii_case("aws") || !service.eq_ignore_ascii_case("cloudtrail") {
        return Err(RuleError::NotCloudTrail { product, service });
    }
    let mut detection = map.get("detection").ok_or(RuleError::Missing("detection"))?.clone();
    // `timeframe` sits in `detection` or beside it.
    let timeframe =
        detection.as_object_mut().and_then(|d| d.remove("timeframe")).or_else(|| map.get("timeframe").cloned());
    let aggregation = match detection.get("condition") {
        Some(Value::String(condition)) if condition.contains('|') => {
            let (base, aggregation) = condition.split_once('|').expect("contains `|`");
            let aggregation = aggregation.trim().to_owned();
            detection["condition"] = Value::String(base.trim().to_owned());
            Some(aggregation)
        }
        _ => None,
    };
    let Some(aggregation) = aggregation else {
        if timeframe.is_some() {
            return Err(RuleError::Correlation("`timeframe` without an aggregation in `condition`".into()));
        }
        return Ok(vec![rule(id, text("name")?, RuleBody::Event(Detection::compile(&detection)?))?]);
    };
    let timespan_secs = match &timeframe {
        None => DEFAULT_AGGREGATION_SECS,
        Some(Value::String(t)) => {
            parse_timespan(t).ok_or_else(|| RuleError::Correlation(format!("invalid timeframe `{t}`")))?
        }
        Some(_) => return Err(RuleError::Correlation("`timeframe` must be a string such as 5m".into())),
    };
    let (field, group_by, threshold) = parse_aggregation(&aggregation).map_err(RuleError::Correlation)?;
    let base_id = format!("{id}#events");
    let correlation = Correlation {
        kind: if field.is_some() { CorrelationKind::ValueCount } else { CorrelationKind::EventCount },
        rules: vec![base_id.clone()],
        group_by,
        timespan_secs,
        threshold: Some(threshold),
        field,
        generate: false,
    };
    Ok(vec![
        rule(base_id, None, RuleBody::Event(Detection::compile(&detection)?))?,
        rule(id, text("name")?, RuleBody::Correlation(correlation))?,
    ])
}

/// The window of a Sigma 1 aggregation that gives no `timeframe`.
pub const DEFAULT_AGGREGATION_SECS: i64 = 3600;

/// `count() by userIdentity.arn > 20`, `count(eventName) by userIdentity.arn >= 6`, `count() > 100`.
fn parse_aggregation(text: &str) -> Result<(Option<String>, Vec<String>, Threshold), String> {
    let unsupported = || format!("unsupported aggregation `{text}` (only `count([field]) [by field] > n`)");
    let rest = text.strip_prefix("count(").ok_or_else(unsupported)?;
    let (field, rest) = rest.split_once(')').ok_or_else(unsupported)?;
    let field = Some(field.trim()).filter(|f| !f.is_empty()).map(str::to_owned);
    let rest = rest.trim();
    let (group_by, rest) = match rest.strip_prefix("by ") {
        Some(rest) => {
            let at = rest.find(['<', '>', '=']).ok_or_else(unsupported)?;
            let groups = rest[..at].split(',').map(|g| g.trim().to_owned()).filter(|g| !g.is_empty()).collect();
            (groups, &rest[at..])
        }
        None => (Vec::new(), rest),
    };
    let (op, n) = ["<=", ">=", "<", ">", "="]
        .iter()
        .find_map(|op| rest.strip_prefix(op).map(|n| (*op, n.trim())))
        .ok_or_else(unsupported)?;
    let n: u64 = n.parse().map_err(|_| unsupported())?;
    let threshold = match op {
        ">" => Threshold { min: Some(n + 1), max: None },
        ">=" => Threshold { min: Some(n), max: None },
        "=" => Threshold { min: Some(n), max: Some(n) },
        _ => return Err(format!("`{op}` in `{text}`: only lower bounds are supported (an absence needs a timer)")),
    };
    Ok((field, group_by, threshold))
}

fn compile_correlation(value: &Value) -> Result<Correlation, String> {
    let map = value.as_object().ok_or("`correlation` must be a map")?;
    let strings = |key: &str| -> Result<Vec<String>, String> {
        match map.get(key) {
            None => Ok(Vec::new()),
            Some(Value::String(s)) => Ok(vec![s.clone()]),
            Some(Value::Array(items)) => items
                .iter()
                .map(|i| i.as_str().map(str::to_owned).ok_or_else(|| format!("`{key}` must list strings")))
                .collect(),
            Some(_) => Err(format!("`{key}` must be a string or a list of strings")),
        }
    };
    let kind = match map.get("type").and_then(Value::as_str) {
        Some("event_count") => CorrelationKind::EventCount,
        Some("value_count") => CorrelationKind::ValueCount,
        Some("temporal") => CorrelationKind::Temporal,
        Some(other) => return Err(format!("unsupported type `{other}`")),
        None => return Err("missing `type`".into()),
    };
    if map.contains_key("aliases") {
        return Err("`aliases` is not supported".into());
    }
    let rules = strings("rules")?;
    if rules.is_empty() {
        return Err("`rules` lists no rule".into());
    }
    let timespan = map.get("timespan").and_then(Value::as_str).ok_or("missing `timespan`")?;
    let timespan_secs = parse_timespan(timespan).ok_or_else(|| format!("invalid timespan `{timespan}`"))?;
    let (threshold, field) = match (kind, map.get("condition")) {
        (CorrelationKind::Temporal, None) => (None, None),
        (_, None) => return Err("missing `condition`".into()),
        (_, Some(condition)) => {
            let condition = condition.as_object().ok_or("`condition` must be a map")?;
            let mut threshold = Threshold { min: None, max: None };
            let mut field = None;
            for (op, value) in condition {
                if op == "field" {
                    field = Some(value.as_str().ok_or("`condition.field` must be a string")?.to_owned());
                    continue;
                }
                let n = value.as_u64().ok_or_else(|| format!("`condition.{op}` must be a whole number"))?;
                match op.as_str() {
                    "gte" => threshold.min = Some(n),
                    "gt" => threshold.min = Some(n + 1),
                    "lte" => threshold.max = Some(n),
                    "lt" => threshold.max = Some(n.checked_sub(1).ok_or("`condition.lt: 0` never holds")?),
                    "eq" => (threshold.min, threshold.max) = (Some(n), Some(n)),
                    other => return Err(format!("unsupported condition `{other}`")),
                }
            }
            if threshold.min.is_none_or(|min| min == 0) {
                return Err("`condition` needs a lower bound (gte, gt, eq): an absence needs a timer".into());
            }
            (Some(threshold), field)
        }
    };
    if kind == CorrelationKind::ValueCount && field.is_none() {
        return Err("`value_count` needs `condition.field`".into());
    }
    let generate = match map.get("generate") {
        None => false,
        Some(Value::Bool(b)) => *b,
        Some(_) => return Err("`generate` must be true or false".into()),
    };
    Ok(Correlation { kind, rules, group_by: strings("group-by")?, timespan_secs, threshold, field, generate })
}

/// `30s`, `10m`, `1h`, `2d` → seconds.
pub fn parse_timespan(text: &str) -> Option<i64> {
    let unit = text.chars().last()?;
    let n: i64 = text[..text.len() - unit.len_utf8()].parse().ok().filter(|n| *n > 0)?;
    let scale = match unit {
        's' => 1,
        'm' => 60,
        'h' => 3600,
        'd' => 86_400,
        'w' => 7 * 86_400,
        _ => return None,
    };
    n.checked_mul(scale)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_file_of_documents_loads_rule_by_rule() {
        let file = r#"
title: Failed console logins
id: failed-login
name: failed_login
logsource: {product: aws, service: cloudtrail}
detection:
    selection:
        eventName: ConsoleLogin
        responseElements.ConsoleLogin: Failure
    condition: selection
---
title: Many failed console logins
id: many-failed-logins
level: high
correlation:
    type: event_count
    rules: failed_login
    group-by: [userIdentity.arn]
    timespan: 10m
    condition: {gte: 5}
---
title: Windows rule
id: win
logsource: {product: windows, service: security}
detection: {selection: {EventID: 4625}, condition: selection}
---
title: Broken
id: broken
logsource: {product: aws, service: cloudtrail}
detection: {selection: {eventName|base64: x}, condition: selection}
---
title: No level given
id: plain
logsource: {product: aws, service: cloudtrail}
detection: {selection: {eventName: [StopLogging, DeleteTrail]}, condition: selection}
"#;
        let rules = load(file, "rules/aws.yml");
        let summary: Vec<String> = rules
            .iter()
            .map(|r| match r {
                Ok(rule) => format!("{} {} {:?}", rule.id, rule.level.as_str(), rule.name),
                Err(err) => format!("error: {err}"),
            })
            .collect();
        assert_eq!(
            summary,
            [
                "failed-login medium Some(\"failed_login\")",
                "many-failed-logins high None",
                "error: logsource is not aws cloudtrail (product `windows`, service `security`)",
                "error: search `selection`: field `eventName`: unsupported modifier `base64`",
                "plain medium None",
            ]
        );
        let Ok(Rule { body: RuleBody::Correlation(c), .. }) = &rules[1] else { panic!("a correlation") };
        assert_eq!(
            *c,
            Correlation {
                kind: CorrelationKind::EventCount,
                rules: vec!["failed_login".into()],
                group_by: vec!["userIdentity.arn".into()],
                timespan_secs: 600,
                threshold: Some(Threshold { min: Some(5), max: None }),
                field: None,
                generate: false,
            }
        );
        let Ok(Rule { body: RuleBody::Event(d), .. }) = &rules[4] else { panic!("an event rule") };
        let known = |name: &'static str| move |field: &str| (field == "eventName").then_some(Some(name));
        assert!(d.could_match(&known("DeleteTrail")) && d.could_match(&known("stoplogging")));
        assert!(!d.could_match(&known("StartLogging")));
    }

    #[test]
    fn sigma_1_aggregations_become_correlations() {
        let file = r#"
title: Secret harvesting
id: harvest
logsource: {product: aws, service: cloudtrail}
detection:
    selection: {eventSource: secretsmanager.amazonaws.com, eventName: GetSecretValue}
    condition: selection | count() by userIdentity.arn > 20
    timeframe: 5m
---
title: Discovery
id: discovery
logsource: {product: aws, service: cloudtrail}
detection:
    selection: {eventName|startswith: Describe}
    condition: selection | count(eventName) by userIdentity.arn >= 6
"#;
        let rules: Vec<Rule> = load(file, "t.yml").into_iter().map(Result::unwrap).collect();
        let ids: Vec<&str> = rules.iter().map(|r| r.id.as_str()).collect();
        assert_eq!(ids, ["harvest#events", "harvest", "discovery#events", "discovery"]);
        let correlation = |r: &Rule| match &r.body {
            RuleBody::Correlation(c) => c.clone(),
            RuleBody::Event(_) => panic!("{} is an event rule", r.id),
        };
        assert_eq!(
            correlation(&rules[1]),
            Correlation {
                kind: CorrelationKind::EventCount,
                rules: vec!["harvest#events".into()],
                group_by: vec!["userIdentity.arn".into()],
                timespan_secs: 300,
                threshold: Some(Threshold { min: Some(21), max: None }),
                field: None,
                generate: false,
            }
        );
        let discovery = correlation(&rules[3]);
        assert_eq!(
            (discovery.kind, discovery.field.as_deref(), discovery.timespan_secs, discovery.threshold),
            (
                CorrelationKind::ValueCount,
                Some("eventName"),
                DEFAULT_AGGREGATION_SECS,
                Some(Threshold { min: Some(6), max: None })
            )
        );
        for (condition, want) in [
            ("selection | count() by a < 5", "only lower bounds"),
            ("selection | sum(bytes) by a > 5", "unsupported aggregation"),
            ("selection | count() by a > many", "unsupported aggregation"),
        ] {
            let text = format!(
                "title: t\nid: x\nlogsource: {{product: aws, service: cloudtrail}}\ndetection:\n  selection: {{a: b}}\n  condition: {condition}\n"
            );
            let err = load(&text, "t.yml").remove(0).err().map(|e| e.to_string()).unwrap_or_default();
            assert!(err.contains(want), "{condition}: {err}");
        }
    }

    #[test]
    fn broken_rules_say_why() {
        let cases = [
            ("title: [unclosed", "invalid yaml: "),
            ("- a\n- b", "a rule is a yaml map"),
            ("id: x", "missing `title`"),
            ("title: t", "missing `id`"),
            ("title: t\nid: x\nlevel: urgent", "unknown level `urgent`"),
            ("title: t\nid: x\ndetection: {}", "missing `logsource`"),
            (
                "title: t\nid: x\ncorrelation: {type: event_count, rules: [a], timespan: 5x, condition: {gte: 2}}",
                "correlation: invalid timespan `5x`",
            ),
            (
                "title: t\nid: x\ncorrelation: {type: value_count, rules: [a], timespan: 5m, condition: {gte: 2}}",
                "correlation: `value_count` needs `condition.field`",
            ),
            (
                "title: t\nid: x\ncorrelation: {type: ordered, rules: [a], timespan: 5m}",
                "correlation: unsupported type `ordered`",
            ),
        ];
        for (text, want) in cases {
            let got = load(text, "t.yml");
            let err = got[0].as_ref().err().map(ToString::to_string).unwrap_or_default();
            assert!(err.starts_with(want), "{text}: got `{err}`, want `{want}`");
        }
        assert_eq!(parse_timespan("90s"), Some(90));
        assert_eq!(parse_timespan("2d"), Some(172_800));
        assert_eq!(parse_timespan("0m"), None);
    }
}
