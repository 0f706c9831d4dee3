//! Granted versus used, per identity, over a window ending at a reference time: the `report permissions` JSON
//! contract, the least-privilege policy for one identity, and the findings the alert pipeline raises.
//!
//! "Used" means a successful call (the state counts denied calls apart) whose IAM action was seen in the window:
//! first used no later than the reference time and last used no earlier than the window's start. Actions that
//! CloudTrail never logs (`iam:PassRole`), and data-event actions when the trail does not record data events, are
//! *unknown*, not unused.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use serde::Serialize;

use crate::permissions::effective::{Decision, Grants, Identity, Labels};
use crate::permissions::inventory::{AccessKey, AccountInventory, Inventory, arn_account};
use crate::permissions::policy::{ActionPattern, Actions, Effect};
use crate::time::{Timestamp, format_rfc3339};

const DAY: i64 = 86_400;

/// Data-event actions: CloudTrail logs them only when the trail records data events.
pub const DATA_EVENT_ACTIONS: &[&str] = &[
    "s3:*Object*",
    "s3:ListBucket",
    "s3:ListBucketVersions",
    "s3:ListBucketMultipartUploads",
    "s3:ListMultipartUploadParts",
    "s3:AbortMultipartUpload",
    "lambda:InvokeFunction",
    "lambda:InvokeAsync",
    "lambda:InvokeFunctionUrl",
    "dynamodb:GetItem",
    "dynamodb:PutItem",
    "dynamodb:UpdateItem",
    "dynamodb:DeleteItem",
    "dynamodb:BatchGetItem",
    "dynamodb:BatchWriteItem",
    "dynamodb:Query",
    "dynamodb:Scan",
    "dynamodb:ConditionCheckItem",
    "dynamodb:PartiQL*",
    "dynamodb:GetRecords",
    "dynamodb:GetShardIterator",
];

/// Actions with no CloudTrail event of their own (authorised as part of another call).
pub const NEVER_LOGGED_ACTIONS: &[&str] = &["iam:PassRole"];

pub use crate::detect::catalogue::{
    ACCESS_KEY_NOT_ROTATED, ACCESS_KEY_UNUSED, PASSWORD_UNUSED, UNUSED_IDENTITY, UNUSED_PERMISSIONS,
};

/// One finding about an identity, its key or its password.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PermissionFinding {
    pub rule: &'static str,
    /// The principal, or the access key id.
    pub subject: String,
    pub summary: String,
}

/// `[permissions]` and the command line: the window and what the trail records.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Settings {
    pub as_of: Timestamp,
    pub window_days: i64,
    /// The trail records data events, so their absence means unused.
    pub data_events_logged: bool,
    /// An active key older than this was not rotated.
    pub key_rotation_days: i64,
}

impl Settings {
    fn window_start(&self) -> Timestamp {
        self.as_of - self.window_days * DAY
    }

    /// Whether something first and last used at these times was used in the window.
    fn in_window(&self, first: Option<Timestamp>, last: Option<Timestamp>) -> bool {
        matches!((first, last), (Some(first), Some(last)) if first <= self.as_of && last >= self.window_start())
    }
}

/// One identity's activity, as the state has it.
#[derive(Debug, Clone, Default)]
pub struct Usage {
    pub principal: String,
    /// The state's kind (`IAMUser`, `Role`, `Root`, …).
    pub kind: String,
    pub account_id: String,
    pub first_seen: Timestamp,
    pub last_seen: Timestamp,
    pub console_login_at: Option<Timestamp>,
    /// IAM actions with their first and last successful use (`None`: only denied).
    pub actions: Vec<(String, Option<Timestamp>, Option<Timestamp>)>,
}

/// An access key as the state saw it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyUse {
    pub principal: String,
    pub first_used: Timestamp,
    pub last_used: Timestamp,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct UnusedAction {
    /// The pattern as written (`s3:Get*`), or `NotAction: a, b` for a `NotAction` statement.
    pub pattern: String,
    pub policy: String,
    /// The statement's `Sid`, or `#<index>`.
    pub statement: String,
    /// It also covers data-event actions, whose use the trail does not record (only the rest is known unused).
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub data_events: bool,
    /// The boundary allows none of it: granted on paper, not in effect.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub outside_boundary: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct UnknownAction {
    pub pattern: String,
    pub policy: String,
    pub statement: String,
    /// `data_event` or `not_logged`.
    pub reason: &'static str,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct KeyReport {
    pub id: String,
    pub created: Option<String>,
    pub last_used: Option<String>,
    /// `Active`, `Inactive`, or `unknown` for a key seen in events but not in the inventory.
    pub status: String,
}

/// One identity in `report permissions --format json` (a contract: change only by adding fields).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PermissionReport {
    pub principal: String,
    /// As `report identities` spells it: `IAMUser` or `Role` from the inventory, otherwise the state's kind.
    pub kind: String,
    pub account_id: Option<String>,
    /// Whether the inventory has the identity (otherwise granted permissions are unknown).
    pub in_inventory: bool,
    /// When IAM created the identity (the inventory's `CreateDate`): one younger than the window has not had the
    /// whole window to use anything, so it is neither unused nor holding unused permissions yet.
    pub created: Option<String>,
    /// The identity's latest activity trailwatch saw (for a role never seen: IAM's `RoleLastUsed`).
    pub last_used: Option<String>,
    pub used_in_window: bool,
    pub granted_services: Vec<String>,
    pub used_services: Vec<String>,
    pub unused_services: Vec<String>,
    pub unused_actions: Vec<UnusedAction>,
    /// Successful calls in the window that no identity policy allows (resource policies, a stale inventory).
    pub used_not_granted: Vec<String>,
    pub unknown: Vec<UnknownAction>,
    pub access_keys: Vec<KeyReport>,
    /// The user has a console password (from the inventory's `LoginProfiles`).
    pub console_password: bool,
    pub last_console_login: Option<String>,
    /// What the alert pipeline raises for this identity (rule ids above).
    pub findings: Vec<PermissionFinding>,
    /// Allow statements that allowed nothing used in the window (`<policy> <statement>`): what a least-privilege
    /// policy removes outright.
    pub unused_statements: Vec<String>,
    /// Attached or boundary policies the inventory lacks: their grants are not counted.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub missing_policies: Vec<String>,
    /// `Deny` statements with a condition or a narrower resource: carried, not applied.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub unevaluated_denies: Vec<String>,
}

fn patterns(list: &[&str]) -> Vec<ActionPattern> {
    list.iter().map(|p| ActionPattern::new(p)).collect()
}

/// Every identity known from the inventory or the state (AWS services and accounts aside), sorted by principal.
pub fn analyse(
    inventory: &Inventory,
    usage: &[Usage],
    keys: &HashMap<String, KeyUse>,
    settings: &Settings,
) -> Vec<PermissionReport> {
    let data = patterns(DATA_EVENT_ACTIONS);
    let never = patterns(NEVER_LOGGED_ACTIONS);
    let by_principal: HashMap<&str, &Usage> = usage.iter().map(|u| (u.principal.as_str(), u)).collect();
    let mut principals: BTreeMap<&str, Option<(&AccountInventory, Identity)>> = BTreeMap::new();
    for account in inventory.accounts.values() {
        principals.extend(account.users.iter().map(|u| (u.arn.as_str(), Some((account, Identity::User(u))))));
        principals.extend(account.roles.iter().map(|r| (r.arn.as_str(), Some((account, Identity::Role(r))))));
    }
    for u in usage.iter().filter(|u| !matches!(u.kind.as_str(), "AWSService" | "AWSAccount")) {
        principals.entry(u.principal.as_str()).or_insert(None);
    }
    let ctx = Context::new(inventory, keys, settings, &data, &never);
    principals
        .into_iter()
        .map(|(principal, known)| ctx.report(principal, known, by_principal.get(principal).copied()))
        .collect()
}

/// One identity's report, as [`analyse`] gives it, without analysing the others (the explorer's identity page and
/// policy download): `usage` is its activity and `keys` the keys it used. `None` for an identity that neither the
/// inventory nor the state knows, or an AWS service or account.
pub fn analyse_one(
    inventory: &Inventory,
    principal: &str,
    usage: Option<&Usage>,
    keys: &HashMap<String, KeyUse>,
    settings: &Settings,
) -> Option<PermissionReport> {
    let known = inventory.accounts.values().find_map(|account| {
        let user = account.users.iter().find(|u| u.arn == principal).map(Identity::User);
        user.or_else(|| account.roles.iter().find(|r| r.arn == principal).map(Identity::Role)).map(|i| (account, i))
    });
    let seen = usage.filter(|u| !matches!(u.kind.as_str(), "AWSService" | "AWSAccount"));
    if known.is_none() && seen.is_none() {
        return None;
    }
    let (data, never) = (patterns(DATA_EVENT_ACTIONS), patterns(NEVER_LOGGED_ACTIONS));
    Some(Context::new(inventory, keys, settings, &data, &never).report(principal, known, usage))
}

impl<'a> Context<'a> {
    fn new(
        inventory: &'a Inventory,
        keys: &'a HashMap<String, KeyUse>,
        settings: &'a Settings,
        data: &'a [ActionPattern],
        never: &'a [ActionPattern],
    ) -> Context<'a> {
        // Keys by the principal the state saw them used by, and the inventory's keys by user, built once: looking
        // them up per identity by scanning would be identities × keys.
        let mut state_keys: HashMap<&str, Vec<(&str, &KeyUse)>> = HashMap::new();
        for (id, key) in keys {
            state_keys.entry(key.principal.as_str()).or_default().push((id.as_str(), key));
        }
        let mut inventory_keys: HashMap<(&str, &str), Vec<&AccessKey>> = HashMap::new();
        for account in inventory.accounts.values() {
            for key in &account.access_keys {
                inventory_keys.entry((account.account_id.as_str(), key.user.as_str())).or_default().push(key);
            }
        }
        Context { inventory, keys, state_keys, inventory_keys, settings, data, never, classes: Default::default() }
    }
}

struct Context<'a> {
    inventory: &'a Inventory,
    keys: &'a HashMap<String, KeyUse>,
    /// `keys` by principal.
    state_keys: HashMap<&'a str, Vec<(&'a str, &'a KeyUse)>>,
    /// The inventory's keys by account and user name.
    inventory_keys: HashMap<(&'a str, &'a str), Vec<&'a AccessKey>>,
    settings: &'a Settings,
    data: &'a [ActionPattern],
    never: &'a [ActionPattern],
    /// Per pattern text: how it relates to unlogged and data-event actions. Policies are shared between
    /// identities, so each pattern's glob algebra is done once.
    classes: std::cell::RefCell<HashMap<String, PatternClass>>,
}

/// How a granted pattern relates to what CloudTrail logs.
#[derive(Debug, Clone, Copy)]
struct PatternClass {
    /// Only actions CloudTrail never logs (`iam:PassRole`).
    never_logged: bool,
    /// Only data-event actions.
    data_only: bool,
    /// Some data-event actions among others.
    data_overlap: bool,
}

impl Context<'_> {
    fn class(&self, pattern: &ActionPattern) -> PatternClass {
        if let Some(class) = self.classes.borrow().get(&pattern.text) {
            return *class;
        }
        let class = PatternClass {
            never_logged: self.never.iter().any(|n| n.contains(pattern)),
            data_only: self.data.iter().any(|d| d.contains(pattern)),
            data_overlap: self.data.iter().any(|d| d.overlaps(pattern)),
        };
        self.classes.borrow_mut().insert(pattern.text.clone(), class);
        class
    }

    fn report(
        &self,
        principal: &str,
        known: Option<(&AccountInventory, Identity<'_>)>,
        usage: Option<&Usage>,
    ) -> PermissionReport {
        let settings = self.settings;
        // Actions that need no permission are evidence of nothing granted, and never "used, not granted".
        let used: BTreeSet<&str> = usage
            .map(|u| {
                u.actions
                    .iter()
                    .filter(|(a, f, l)| settings.in_window(*f, *l) && crate::action::needs_permission(a))
                    .map(|(a, _, _)| a.as_str())
                    .collect()
            })
            .unwrap_or_default();
        let used_services: BTreeSet<&str> = used.iter().filter_map(|a| a.split_once(':').map(|(s, _)| s)).collect();
        let account_id = usage
            .map(|u| u.account_id.clone())
            .filter(|a| !a.is_empty())
            .or_else(|| arn_account(principal).map(str::to_owned));
        let mut report = PermissionReport {
            principal: principal.to_owned(),
            kind: known.map_or_else(|| usage.map_or(String::new(), |u| u.kind.clone()), |(_, id)| id.kind().to_owned()),
            account_id,
            in_inventory: known.is_some(),
            created: known
                .and_then(|(_, identity)| match identity {
                    Identity::User(user) => user.created,
                    Identity::Role(role) => role.created,
                })
                .map(format_rfc3339),
            last_used: usage.map(|u| format_rfc3339(u.last_seen)),
            used_in_window: usage.is_some_and(|u| settings.in_window(Some(u.first_seen), Some(u.last_seen))),
            granted_services: Vec::new(),
            used_services: used_services.iter().map(|s| (*s).to_owned()).collect(),
            unused_services: Vec::new(),
            unused_actions: Vec::new(),
            used_not_granted: Vec::new(),
            unknown: Vec::new(),
            access_keys: Vec::new(),
            console_password: false,
            last_console_login: usage.and_then(|u| u.console_login_at).map(format_rfc3339),
            findings: Vec::new(),
            unused_statements: Vec::new(),
            missing_policies: Vec::new(),
            unevaluated_denies: Vec::new(),
        };
        match known {
            Some((account, identity)) => {
                let mut labels = Labels::default();
                let grants = Grants::of_identity(account, identity, &mut labels);
                self.compare(&grants, &used, &mut report);
                if matches!(identity, Identity::Role(_)) && report.last_used.is_none() {
                    // Never seen by trailwatch (a region or account the trail does not cover): IAM's own record.
                    let last = match identity {
                        Identity::Role(role) => role.last_used,
                        Identity::User(_) => None,
                    };
                    report.last_used = last.map(format_rfc3339);
                    report.used_in_window = settings.in_window(last, last);
                }
                if matches!(identity, Identity::User(_)) {
                    let name = principal.rsplit('/').next().unwrap_or(principal);
                    report.console_password = account.login_profiles.contains_key(name);
                    let listed = self.inventory_keys.get(&(account.account_id.as_str(), name));
                    for key in listed.into_iter().flatten() {
                        report.access_keys.push(KeyReport {
                            id: key.id.clone(),
                            created: key.created.map(format_rfc3339),
                            last_used: self.keys.get(&key.id).map(|k| format_rfc3339(k.last_used)),
                            status: key.status.clone(),
                        });
                    }
                }
            }
            None => {
                // The account's inventory exists but lacks the identity: deleted since, or a stale inventory;
                // every call it made is then used without a grant trailwatch knows of.
                let account_known = report.account_id.as_deref().is_some_and(|a| self.inventory.account(a).is_some());
                if account_known && report.kind != "Root" {
                    report.used_not_granted = used.iter().map(|a| (*a).to_owned()).collect();
                }
            }
        }
        for (id, key) in self.state_keys.get(principal).into_iter().flatten() {
            if !report.access_keys.iter().any(|k| k.id == *id) {
                report.access_keys.push(KeyReport {
                    id: (*id).to_owned(),
                    created: None,
                    last_used: Some(format_rfc3339(key.last_used)),
                    status: "unknown".into(),
                });
            }
        }
        report.access_keys.sort_by(|a, b| a.id.cmp(&b.id));
        if let Some((account, _)) = known {
            report.findings = self.findings(&report, account);
        }
        report
    }

    /// The findings of an identity in the inventory.
    fn findings(&self, r: &PermissionReport, account: &AccountInventory) -> Vec<PermissionFinding> {
        let settings = self.settings;
        let (start, days) = (settings.window_start(), settings.window_days);
        let time = |t: &Option<String>| t.as_deref().and_then(crate::time::parse_rfc3339);
        let mut out = Vec::new();
        let mut finding = |rule, subject: &str, summary: String| {
            out.push(PermissionFinding { rule, subject: subject.to_owned(), summary })
        };
        // Not yet as old as the window (a new identity): not unused, and its grants not yet unused either.
        let whole_window = time(&r.created).is_none_or(|created| created <= start);
        if whole_window && !r.used_in_window {
            let when = r.last_used.as_deref().map_or("never used".to_owned(), |t| format!("last used {t}"));
            let kind = match r.kind.as_str() {
                "IAMUser" => "user",
                "Role" => "role",
                other => other,
            };
            finding(UNUSED_IDENTITY, &r.principal, format!("{kind} {} not used in {days} days ({when})", r.principal));
        } else if whole_window && (!r.unused_actions.is_empty() || !r.unused_services.is_empty()) {
            finding(
                UNUSED_PERMISSIONS,
                &r.principal,
                format!(
                    "{} has {} unused action pattern(s) and {} unused service(s) in {days} days",
                    r.principal,
                    r.unused_actions.len(),
                    r.unused_services.len()
                ),
            );
        }
        for key in r.access_keys.iter().filter(|k| k.status == "Active") {
            let created = time(&key.created);
            let last = time(&key.last_used);
            // A key counts as unused once it has existed for the whole window without a use in it.
            if last.or(created).is_some_and(|t| t < start) {
                let when = key.last_used.as_deref().map_or("never used".to_owned(), |t| format!("last used {t}"));
                finding(
                    ACCESS_KEY_UNUSED,
                    &key.id,
                    format!("access key {} of {} unused in {days} days ({when})", key.id, r.principal),
                );
            }
            if let Some(created) = created
                && created < settings.as_of - settings.key_rotation_days * DAY
            {
                let age = (settings.as_of - created) / DAY;
                finding(
                    ACCESS_KEY_NOT_ROTATED,
                    &key.id,
                    format!(
                        "access key {} of {} is {age} days old (rotate every {} days)",
                        key.id, r.principal, settings.key_rotation_days
                    ),
                );
            }
        }
        if r.console_password {
            let name = r.principal.rsplit('/').next().unwrap_or(&r.principal);
            let set = account.login_profiles.get(name).copied().flatten();
            let login = time(&r.last_console_login);
            if login.or(set).is_none_or(|t| t < start) {
                let when = r.last_console_login.as_deref().map_or("never".to_owned(), str::to_owned);
                finding(
                    PASSWORD_UNUSED,
                    &r.principal,
                    format!(
                        "{} has a console password and no console login in {days} days (last: {when})",
                        r.principal
                    ),
                );
            }
        }
        out
    }

    /// Fills the granted-versus-used parts of `report` for an identity in the inventory.
    fn compare(&self, grants: &Grants<'_>, used: &BTreeSet<&str>, report: &mut PermissionReport) {
        let logged = self.settings.data_events_logged;
        let mut granted_services = BTreeSet::new();
        // Per explicit service: whether a pattern of it was found unused (not merely unknown).
        let mut unused_in_service: BTreeMap<&str, bool> = BTreeMap::new();
        let boundary_allows = |pattern: &ActionPattern| match &grants.boundary {
            None => true,
            Some(boundary) => boundary.iter().any(|g| {
                g.statement.effect == Effect::Allow
                    && match &g.statement.actions {
                        Actions::Only(list) => list.iter().any(|b| b.overlaps(pattern)),
                        Actions::AllBut(_) => true,
                    }
            }),
        };
        for granted in grants.allows() {
            let (policy, statement) = (granted.policy.to_owned(), granted.statement.label());
            if !used.iter().any(|a| granted.statement.actions.matches(a)) {
                report.unused_statements.push(format!("{policy} {statement}"));
            }
            match &granted.statement.actions {
                Actions::Only(list) => {
                    for pattern in list {
                        let service = pattern.service();
                        granted_services.insert(service.to_owned());
                        if used.iter().any(|a| pattern.matches(a)) {
                            continue;
                        }
                        let unknown = |reason| UnknownAction {
                            pattern: pattern.text.clone(),
                            policy: policy.clone(),
                            statement: statement.clone(),
                            reason,
                        };
                        let class = self.class(pattern);
                        if class.never_logged {
                            report.unknown.push(unknown("not_logged"));
                        } else if !logged && class.data_only {
                            report.unknown.push(unknown("data_event"));
                        } else {
                            if service != "*" {
                                unused_in_service.insert(service, true);
                            }
                            report.unused_actions.push(UnusedAction {
                                pattern: pattern.text.clone(),
                                policy: policy.clone(),
                                statement: statement.clone(),
                                data_events: !logged && class.data_overlap,
                                outside_boundary: !boundary_allows(pattern),
                            });
                        }
                        unused_in_service.entry(service).or_insert(false);
                    }
                }
                Actions::AllBut(list) => {
                    granted_services.insert("*".to_owned());
                    if used.iter().any(|a| granted.statement.actions.matches(a)) {
                        continue;
                    }
                    let text = list.iter().map(|p| p.text.as_str()).collect::<Vec<_>>().join(", ");
                    report.unused_actions.push(UnusedAction {
                        pattern: format!("NotAction: {text}"),
                        policy,
                        statement,
                        data_events: !logged,
                        outside_boundary: false,
                    });
                }
            }
        }
        report.granted_services = granted_services.into_iter().collect();
        report.unused_services = unused_in_service
            .into_iter()
            .filter(|(service, unused)| {
                *unused && !used.iter().any(|a| a.split_once(':').is_some_and(|(s, _)| s.eq_ignore_ascii_case(service)))
            })
            .map(|(service, _)| service.to_owned())
            .collect();
        if report.kind != "Root" {
            report.used_not_granted =
                used.iter().filter(|a| grants.decide(a) != Decision::Allowed).map(|a| (*a).to_owned()).collect();
        }
        report.missing_policies = grants.missing.iter().map(|m| (*m).to_owned()).collect();
        report.unevaluated_denies =
            grants.scoped_denies().map(|g| format!("{} {}", g.policy, g.statement.label())).collect();
    }
}

/// An IAM policy document as `report policy` prints it (fields in IAM's usual order).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct PolicyOut {
    pub version: &'static str,
    pub statement: Vec<StatementOut>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct StatementOut {
    pub sid: String,
    pub effect: &'static str,
    pub action: Vec<String>,
    pub resource: &'static str,
}

/// The least-privilege policy for one identity: exactly the actions it used in the window, one statement per
/// service (sorted), and the granted statements that allow none of them (what adopting it removes outright).
pub fn least_privilege(
    report: &PermissionReport,
    usage: Option<&Usage>,
    settings: &Settings,
) -> (PolicyOut, Vec<String>) {
    let mut by_service: BTreeMap<String, BTreeSet<&str>> = BTreeMap::new();
    for (action, first, last) in usage.map(|u| u.actions.as_slice()).unwrap_or_default() {
        if settings.in_window(*first, *last)
            && crate::action::needs_permission(action)
            && let Some((service, _)) = action.split_once(':')
        {
            by_service.entry(service.to_ascii_lowercase()).or_default().insert(action);
        }
    }
    let statement = by_service
        .into_iter()
        .map(|(service, actions)| StatementOut {
            // Sids are alphanumeric.
            sid: format!("Used{service}").chars().filter(char::is_ascii_alphanumeric).collect(),
            effect: "Allow",
            action: actions.into_iter().map(str::to_owned).collect(),
            resource: "*",
        })
        .collect();
    (PolicyOut { version: "2012-10-17", statement }, report.unused_statements.clone())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// One role granted `pattern`, never used: where does the pattern land?
    fn classify(pattern: &str, used: &[&str], logged: bool) -> (&'static str, bool) {
        let text = format!(
            r#"{{"RoleDetailList": [{{"RoleName": "r", "Arn": "arn:aws:iam::111122223333:role/r",
                "RolePolicyList": [{{"PolicyName": "p", "PolicyDocument": {{"Statement": [{{"Effect": "Allow", "Action": "{pattern}", "Resource": "*"}}]}}}}]}}]}}"#
        );
        let mut inventory = Inventory::default();
        inventory.insert(AccountInventory::from_json(&text, "t").unwrap());
        let usage = Usage {
            principal: "arn:aws:iam::111122223333:role/r".into(),
            kind: "Role".into(),
            account_id: "111122223333".into(),
            first_seen: 1_000,
            last_seen: 2_000,
            actions: used.iter().map(|a| ((*a).to_owned(), Some(1_000), Some(2_000))).collect(),
            ..Usage::default()
        };
        let settings = Settings { as_of: 3_000, window_days: 90, data_events_logged: logged, key_rotation_days: 90 };
        let reports = analyse(&inventory, &[usage], &HashMap::new(), &settings);
        let r = &reports[0];
        match (r.unused_actions.first(), r.unknown.first()) {
            (Some(u), None) => ("unused", u.data_events),
            (None, Some(u)) => (u.reason, false),
            (None, None) => ("used", false),
            (Some(_), Some(_)) => panic!("{pattern}: both unused and unknown"),
        }
    }

    #[test]
    fn data_event_and_unlogged_actions_are_unknown_not_unused() {
        // (pattern, used, data events logged, landed as, data-event part)
        let cases: &[(&str, &[&str], bool, &str, bool)] = &[
            ("s3:GetObject", &[], false, "data_event", false),
            ("s3:GetObject*", &[], false, "data_event", false),
            ("s3:GetObject", &[], true, "unused", false),
            ("s3:Get*", &[], false, "unused", true),
            ("s3:Get*", &[], true, "unused", false),
            ("s3:ListAllMyBuckets", &[], false, "unused", false),
            ("s3:ListBucket", &[], false, "data_event", false),
            ("lambda:InvokeFunction", &[], false, "data_event", false),
            ("lambda:Invoke*", &[], false, "unused", true),
            ("dynamodb:PartiQLSelect", &[], false, "data_event", false),
            ("dynamodb:DescribeTable", &[], false, "unused", false),
            ("iam:PassRole", &[], true, "not_logged", false),
            ("iam:Pass*", &[], false, "unused", false),
            ("s3:*", &["s3:GetObject"], false, "used", false),
            ("*", &[], false, "unused", true),
        ];
        for (pattern, used, logged, landed, data) in cases {
            assert_eq!(classify(pattern, used, *logged), (*landed, *data), "{pattern} used={used:?} logged={logged}");
        }
    }

    /// One role in the inventory, created `created_days_ago`, granted `grants`, having used `used` an hour before
    /// the reference time: its report.
    fn role_report(created_days_ago: i64, grants: &str, used: &[&str]) -> PermissionReport {
        let as_of = 400 * DAY;
        let created = format_rfc3339(as_of - created_days_ago * DAY);
        let text = format!(
            r#"{{"RoleDetailList": [{{"RoleName": "r", "Arn": "arn:aws:iam::111122223333:role/r", "CreateDate": "{created}",
                "RolePolicyList": [{{"PolicyName": "p", "PolicyDocument": {{"Statement": [{{"Effect": "Allow", "Action": {grants}, "Resource": "*"}}]}}}}]}}]}}"#
        );
        let mut inventory = Inventory::default();
        inventory.insert(AccountInventory::from_json(&text, "t").unwrap());
        let at = Some(as_of - 3_600);
        let usage = (!used.is_empty()).then(|| Usage {
            principal: "arn:aws:iam::111122223333:role/r".into(),
            kind: "Role".into(),
            account_id: "111122223333".into(),
            first_seen: as_of - 3_600,
            last_seen: as_of - 3_600,
            actions: used.iter().map(|a| ((*a).to_owned(), at, at)).collect(),
            ..Usage::default()
        });
        let settings = Settings { as_of, window_days: 90, data_events_logged: false, key_rotation_days: 90 };
        analyse(&inventory, usage.as_slice(), &HashMap::new(), &settings).remove(0)
    }

    /// An identity younger than the window has not had the window to use anything: neither it nor its grants are
    /// unused yet. From the window's age on, they are.
    #[test]
    fn an_identity_younger_than_the_window_is_not_unused() {
        let rules = |r: &PermissionReport| r.findings.iter().map(|f| f.rule).collect::<Vec<_>>();
        // (created days ago, used, findings)
        let cases: &[(i64, &[&str], &[&str])] = &[
            (0, &[], &[]),
            (89, &[], &[]),
            (90, &[], &[UNUSED_IDENTITY]),
            (400, &[], &[UNUSED_IDENTITY]),
            (1, &["s3:ListAllMyBuckets"], &[]),
            (91, &["s3:ListAllMyBuckets"], &[UNUSED_PERMISSIONS]),
        ];
        for (days, used, findings) in cases {
            let report = role_report(*days, r#"["s3:ListAllMyBuckets", "ec2:DescribeInstances"]"#, used);
            assert_eq!(rules(&report), *findings, "created {days} days ago, used {used:?}");
        }
    }

    /// `sts:GetCallerIdentity` needs no permission: it neither makes `sts` a used service nor is "used, not
    /// granted", and the least-privilege policy leaves it out.
    #[test]
    fn actions_that_need_no_permission_are_no_evidence() {
        let report = role_report(400, r#"["s3:ListAllMyBuckets", "sts:AssumeRole"]"#, &["sts:GetCallerIdentity"]);
        assert_eq!(report.used_services, Vec::<String>::new());
        assert_eq!(report.unused_services, ["s3", "sts"]);
        assert_eq!(report.used_not_granted, Vec::<String>::new());
        let report = role_report(400, r#""s3:*""#, &["sts:GetCallerIdentity", "sts:GetSessionToken", "s3:ListBucket"]);
        assert_eq!(report.used_not_granted, Vec::<String>::new());
        assert_eq!(report.used_services, ["s3"]);
        let usage = Usage {
            actions: vec![
                ("sts:GetCallerIdentity".into(), Some(1), Some(1)),
                ("s3:ListBucket".into(), Some(1), Some(1)),
            ],
            ..Usage::default()
        };
        let settings = Settings { as_of: 2, window_days: 90, data_events_logged: false, key_rotation_days: 90 };
        let (policy, _) = least_privilege(&report, Some(&usage), &settings);
        let actions: Vec<&str> = policy.statement.iter().flat_map(|s| s.action.iter().map(String::as_str)).collect();
        assert_eq!(actions, ["s3:ListBucket"]);
    }
}
