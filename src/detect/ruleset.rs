//! The loaded rules, compiled once into a matcher over parsed events: rules are indexed by the `eventName`s they
//! require, so an event is tested only against the few rules that could match it.
//!
//! Correlation rules are resolved here against the rules they count; the counting itself happens at commit time
//! (`crate::alert`), since a window spans files and workers.

use std::borrow::Cow;

use rustc_hash::FxHashMap;

use crate::detect::pattern::fold;
use crate::detect::rule::{self, Correlation, Rule, RuleBody};
use crate::detect::search::Fields;
use crate::parse::{Event, Record};
use crate::time::Timestamp;

/// The rules shipped in the binary (`config/rules/`), as (file name, YAML).
pub const BUILTIN: &[(&str, &str)] = &[
    ("root-account-usage.yml", include_str!("../../config/rules/root-account-usage.yml")),
    ("root-access-key-created.yml", include_str!("../../config/rules/root-access-key-created.yml")),
    ("console-login-without-mfa.yml", include_str!("../../config/rules/console-login-without-mfa.yml")),
    ("console-login-failures.yml", include_str!("../../config/rules/console-login-failures.yml")),
    ("unauthorized-api-calls.yml", include_str!("../../config/rules/unauthorized-api-calls.yml")),
    ("cloudtrail-tampering.yml", include_str!("../../config/rules/cloudtrail-tampering.yml")),
    ("security-tooling-disabled.yml", include_str!("../../config/rules/security-tooling-disabled.yml")),
    ("admin-policy-attached.yml", include_str!("../../config/rules/admin-policy-attached.yml")),
    ("user-policy-attached.yml", include_str!("../../config/rules/user-policy-attached.yml")),
    ("access-key-created-for-other-user.yml", include_str!("../../config/rules/access-key-created-for-other-user.yml")),
    (
        "login-profile-changed-for-other-user.yml",
        include_str!("../../config/rules/login-profile-changed-for-other-user.yml"),
    ),
    ("mfa-device-removed.yml", include_str!("../../config/rules/mfa-device-removed.yml")),
    ("password-policy-weakened.yml", include_str!("../../config/rules/password-policy-weakened.yml")),
    ("kms-key-disabled-or-deleted.yml", include_str!("../../config/rules/kms-key-disabled-or-deleted.yml")),
    ("s3-bucket-policy-changed.yml", include_str!("../../config/rules/s3-bucket-policy-changed.yml")),
    ("s3-public-access-block-removed.yml", include_str!("../../config/rules/s3-public-access-block-removed.yml")),
    ("network-config-changed.yml", include_str!("../../config/rules/network-config-changed.yml")),
    ("organizations-changed.yml", include_str!("../../config/rules/organizations-changed.yml")),
    ("pentest-user-agent.yml", include_str!("../../config/rules/pentest-user-agent.yml")),
];

/// A rule that could not be loaded, with where it came from and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoadError {
    pub origin: String,
    /// The rule's id, when the document got as far as having one.
    pub id: Option<String>,
    pub error: String,
}

impl std::fmt::Display for LoadError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.id {
            Some(id) => write!(f, "{}: rule `{id}`: {}", self.origin, self.error),
            None => write!(f, "{}: {}", self.origin, self.error),
        }
    }
}

/// What a rule does when it matches.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Mode {
    /// Raises alerts.
    Live,
    /// Counts matches in metrics and sends nothing.
    DryRun,
}

#[derive(Debug, Default)]
pub struct RuleSet {
    rules: Vec<Rule>,
    modes: Vec<Mode>,
    /// Per rule: whether its own matches raise alerts (false for a rule only counted by correlations).
    alerting: Vec<bool>,
    /// Per rule: the correlations (indices into `rules`) that count its matches.
    feeds: Vec<Vec<u32>>,
    /// Event rules by the case-folded `eventName`s they require.
    by_event_name: FxHashMap<Box<str>, Vec<u32>>,
    /// Event rules that could match any `eventName`.
    unindexed: Vec<u32>,
}

/// Per-worker scratch for matching.
#[derive(Debug, Default)]
pub struct MatchScratch {
    folded: String,
}

impl RuleSet {
    /// Loads the built-in rules (unless `builtin` is false) and every `*.yml`/`*.yaml` file under `dirs`.
    /// A rule that cannot be loaded is returned as an error; the others still make up the set.
    pub fn load(builtin: bool, dirs: &[std::path::PathBuf]) -> (RuleSet, Vec<LoadError>) {
        RuleSet::load_except(builtin, dirs, &[])
    }

    /// [`RuleSet::load`] leaving out the rules whose ids are in `disabled`.
    pub fn load_except(builtin: bool, dirs: &[std::path::PathBuf], disabled: &[String]) -> (RuleSet, Vec<LoadError>) {
        let mut rules = Vec::new();
        let mut errors = Vec::new();
        let add = |text: &str, origin: &str, rules: &mut Vec<Rule>, errors: &mut Vec<LoadError>| {
            for result in rule::load(text, origin) {
                match result {
                    Ok(rule) => rules.push(rule),
                    Err(err) => errors.push(LoadError { origin: origin.to_owned(), id: None, error: err.to_string() }),
                }
            }
        };
        if builtin {
            for (name, text) in BUILTIN {
                add(text, &format!("builtin:{name}"), &mut rules, &mut errors);
            }
        }
        for dir in dirs {
            let mut files = Vec::new();
            if let Err(err) = rule_files(dir, &mut files) {
                errors.push(LoadError { origin: dir.display().to_string(), id: None, error: err.to_string() });
            }
            files.sort();
            for path in files {
                let origin = path.display().to_string();
                match std::fs::read_to_string(&path) {
                    Ok(text) => add(&text, &origin, &mut rules, &mut errors),
                    Err(err) => errors.push(LoadError { origin, id: None, error: format!("unreadable: {err}") }),
                }
            }
        }
        rules.retain(|r| !disabled.contains(&r.id));
        let (set, more) = RuleSet::build(rules);
        errors.extend(more);
        (set, errors)
    }

    /// Indexes compiled rules; resolves correlations. Duplicate ids and correlations over unknown rules are
    /// errors (the first rule with an id wins).
    pub fn build(rules: Vec<Rule>) -> (RuleSet, Vec<LoadError>) {
        let mut errors = Vec::new();
        let mut kept: Vec<Rule> = Vec::with_capacity(rules.len());
        for rule in rules {
            if kept.iter().any(|k| k.id == rule.id) {
                errors.push(LoadError {
                    origin: rule.origin.clone(),
                    id: Some(rule.id.clone()),
                    error: "duplicate rule id (the first one loaded is kept)".into(),
                });
                continue;
            }
            kept.push(rule);
        }
        // Correlations whose references do not all resolve to event rules are dropped, with the reason.
        let find = |kept: &[Rule], reference: &str| {
            kept.iter().position(|r| {
                matches!(r.body, RuleBody::Event(_)) && (r.id == reference || r.name.as_deref() == Some(reference))
            })
        };
        let mut resolved: Vec<Option<Vec<usize>>> = Vec::with_capacity(kept.len());
        for rule in &kept {
            resolved.push(match &rule.body {
                RuleBody::Event(_) => None,
                RuleBody::Correlation(c) => {
                    let targets: Result<Vec<usize>, &String> =
                        c.rules.iter().map(|r| find(&kept, r).ok_or(r)).collect();
                    match targets {
                        Ok(targets) => Some(targets),
                        Err(missing) => {
                            errors.push(LoadError {
                                origin: rule.origin.clone(),
                                id: Some(rule.id.clone()),
                                error: format!("correlation: no event rule with id or name `{missing}`"),
                            });
                            Some(Vec::new())
                        }
                    }
                }
            });
        }
        let mut rules = Vec::new();
        let mut targets_of = Vec::new();
        let mut renumber = vec![usize::MAX; kept.len()];
        for (i, (rule, targets)) in kept.into_iter().zip(resolved).enumerate() {
            if targets.as_ref().is_some_and(Vec::is_empty) {
                continue;
            }
            renumber[i] = rules.len();
            rules.push(rule);
            targets_of.push(targets);
        }
        let n = rules.len();
        let mut set = RuleSet {
            modes: vec![Mode::Live; n],
            alerting: vec![true; n],
            feeds: vec![Vec::new(); n],
            ..RuleSet::default()
        };
        for (c, targets) in targets_of.iter().enumerate() {
            let Some(targets) = targets else { continue };
            let RuleBody::Correlation(correlation) = &rules[c].body else {
                unreachable!("targets imply a correlation")
            };
            for &t in targets {
                let t = renumber[t];
                set.feeds[t].push(c as u32);
                if !correlation.generate {
                    set.alerting[t] = false;
                }
            }
        }
        for (i, rule) in rules.iter().enumerate() {
            let RuleBody::Event(detection) = &rule.body else { continue };
            match detection.required_values("eventName") {
                Some(names) => {
                    for name in names {
                        set.by_event_name.entry(name.into_boxed_str()).or_default().push(i as u32);
                    }
                }
                None => set.unindexed.push(i as u32),
            }
        }
        set.rules = rules;
        (set, errors)
    }

    pub fn rules(&self) -> &[Rule] {
        &self.rules
    }

    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }

    pub fn rule(&self, index: u32) -> &Rule {
        &self.rules[index as usize]
    }

    pub fn mode(&self, index: u32) -> Mode {
        self.modes[index as usize]
    }

    /// Whether a rule's own matches raise alerts (rather than only feeding correlations).
    pub fn alerting(&self, index: u32) -> bool {
        self.alerting[index as usize]
    }

    pub fn feeds(&self, index: u32) -> &[u32] {
        &self.feeds[index as usize]
    }

    pub fn correlation(&self, index: u32) -> Option<&Correlation> {
        match &self.rules[index as usize].body {
            RuleBody::Correlation(c) => Some(c),
            RuleBody::Event(_) => None,
        }
    }

    pub fn index_of(&self, id: &str) -> Option<u32> {
        self.rules.iter().position(|r| r.id == id).map(|i| i as u32)
    }

    /// Sets rules to dry run (by id); returns the ids that name no loaded rule.
    pub fn set_dry_run<'a>(&mut self, ids: &'a [String]) -> Vec<&'a str> {
        let mut unknown = Vec::new();
        for id in ids {
            match self.index_of(id) {
                Some(i) => self.modes[i as usize] = Mode::DryRun,
                None => unknown.push(id.as_str()),
            }
        }
        unknown
    }

    /// Calls `on_match` with each event rule the event matches, candidates first narrowed by `eventName`.
    pub fn for_each_match(
        &self,
        event_name: &str,
        fields: &dyn Fields,
        scratch: &mut MatchScratch,
        on_match: &mut dyn FnMut(u32),
    ) {
        scratch.folded.clear();
        if event_name.is_ascii() {
            // CloudTrail's event names are ASCII: fold bytes, not characters.
            scratch.folded.push_str(event_name);
            scratch.folded.make_ascii_lowercase();
        } else {
            scratch.folded.extend(event_name.chars().map(fold));
        }
        let indexed = self.by_event_name.get(scratch.folded.as_str()).map(Vec::as_slice).unwrap_or_default();
        for &i in indexed.iter().chain(&self.unindexed) {
            if let RuleBody::Event(detection) = &self.rules[i as usize].body
                && detection.matches(fields)
            {
                on_match(i);
            }
        }
    }

    /// Matches an event and records what an alert will need about it.
    pub fn evaluate(
        &self,
        event: &Event<'_>,
        record: Record<'_, '_>,
        scratch: &mut MatchScratch,
        out: &mut Vec<Match>,
    ) {
        if self.rules.is_empty() {
            return;
        }
        let fields = EventFields { event, record };
        self.for_each_match(event.event_name, &fields, scratch, &mut |rule| {
            let hits = self
                .feeds(rule)
                .iter()
                .map(|&c| {
                    let correlation = self.correlation(c).expect("feeds name correlations");
                    let mut group = String::new();
                    for (i, field) in correlation.group_by.iter().enumerate() {
                        if i > 0 {
                            group.push('\u{1f}');
                        }
                        group.push_str(&group_value(field, event, &record));
                    }
                    let value = correlation.field.as_deref().map(|f| group_value(f, event, &record));
                    CorrelationHit { correlation: c, group, value }
                })
                .collect();
            out.push(Match {
                rule,
                time: event.time,
                event_id: record.field("eventID").map(|v| v.into_owned()),
                event_name: event.event_name.to_owned(),
                principal: event.principal.key.to_canonical(),
                account_id: event
                    .principal
                    .account
                    .or(record.field("recipientAccountId").as_deref())
                    .map(str::to_owned),
                region: event.region.map(str::to_owned),
                source_ip: event.source_ip.map(str::to_owned),
                user_agent: event.user_agent.map(str::to_owned),
                hits,
            });
        });
    }
}

/// An event's fields for rule matching: the common ones from the parsed event (no lookup on the tape), anything
/// else from the record. For the typed fields an empty string reads as absent, as in the rest of trailwatch.
struct EventFields<'a, 't, 'de> {
    event: &'a Event<'de>,
    record: Record<'t, 'de>,
}

impl Fields for EventFields<'_, '_, '_> {
    fn get(&self, field: &str) -> Option<Cow<'_, str>> {
        let typed = match field {
            "eventName" => Some(self.event.event_name),
            "eventSource" => Some(self.event.event_source),
            "errorCode" => self.event.error_code,
            "userAgent" => self.event.user_agent,
            "sourceIPAddress" => self.event.source_ip,
            "awsRegion" => self.event.region,
            "userIdentity.type" => self.event.identity_type,
            "eventType" => self.event.event_type,
            _ => return self.record.field(field),
        };
        typed.map(Cow::Borrowed)
    }
}

/// A group-by value: the canonical principal for `principal` (so that sessions of one role group together),
/// otherwise the event's field, empty when absent.
fn group_value(field: &str, event: &Event<'_>, record: &Record<'_, '_>) -> String {
    if field == "principal" {
        return event.principal.key.to_canonical();
    }
    record.field(field).map(|v| v.into_owned()).unwrap_or_default()
}

fn rule_files(dir: &std::path::Path, out: &mut Vec<std::path::PathBuf>) -> std::io::Result<()> {
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        if path.is_dir() {
            rule_files(&path, out)?;
        } else if path.extension().is_some_and(|e| e == "yml" || e == "yaml") {
            out.push(path);
        }
    }
    Ok(())
}

/// One rule matching one event: what the alert stage needs, owned so that it outlives the file's buffer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Match {
    pub rule: u32,
    pub time: Timestamp,
    pub event_id: Option<String>,
    pub event_name: String,
    pub principal: String,
    pub account_id: Option<String>,
    pub region: Option<String>,
    pub source_ip: Option<String>,
    pub user_agent: Option<String>,
    /// The correlations this match counts towards, with its group.
    pub hits: Vec<CorrelationHit>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CorrelationHit {
    pub correlation: u32,
    /// The group-by values joined by U+001F.
    pub group: String,
    /// For `value_count`: the counted field's value.
    pub value: Option<String>,
}
