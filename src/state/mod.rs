//! Stage 5, state: folding events into per-principal, per-action and per-access-key aggregates.
//!
//! Architecture invariant: pure, no I/O. A [`Delta`] is the aggregate of some set of events; merging two deltas is
//! commutative and associative (sums, minimums, maximums, and ties broken by comparing values), so files can be
//! processed on any thread in any order and the result is the same. The durable state in [`store`] applies exactly
//! the same merge in SQL.

use std::cmp::Ordering;

use rustc_hash::FxHashMap;

use crate::parse::{Event, Outcome};
use crate::time::Timestamp;

/// How many recent session names an assumed role keeps as detail.
pub const MAX_SESSIONS: usize = 10;

/// The aggregate of a set of events: one file's, or one commit batch's.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Delta {
    pub principals: FxHashMap<Box<str>, PrincipalDelta>,
    pub access_keys: FxHashMap<Box<str>, KeyDelta>,
    /// Temporary keys of EC2 instance credentials (a role session named after its instance), with the public
    /// addresses they were used from (for `instance-credentials-used-elsewhere`).
    pub instance_keys: FxHashMap<Box<str>, InstanceKeyDelta>,
    /// Events per hour (hours since the epoch, ascending), for the explorer's chart of the organisation's activity.
    pub hours: Vec<(i64, u64)>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PrincipalDelta {
    /// Identity type and account, taken from the earliest event (ties: the smaller value).
    pub kind: String,
    pub account: String,
    pub first_seen: Timestamp,
    pub last_seen: Timestamp,
    pub events: u64,
    pub errors: u64,
    /// Denied calls, counted per action as each action's `denied` is (their sum, kept beside the identity so that
    /// identities sort by it without adding up their actions).
    pub denied: u64,
    /// Source IP, region and user agent of the latest event; ties go to the larger `(ip, region, agent)`.
    /// An empty string means absent.
    pub last_source_ip: String,
    pub last_region: String,
    pub last_user_agent: String,
    /// Latest successful console sign-in and whether it used MFA (ties: MFA wins).
    pub console_login: Option<(Timestamp, bool)>,
    /// Most recent session names with their last use, at most [`MAX_SESSIONS`].
    pub sessions: Vec<(String, Timestamp)>,
    pub actions: FxHashMap<Box<str>, ActionDelta>,
    /// Regions the principal acted in, with the first time (for `new-region-for-identity`).
    pub regions: Vec<(Box<str>, Timestamp)>,
    /// Events per UTC day (days since the epoch, ascending), for the explorer's activity chart.
    pub days: Vec<(i64, u64)>,
}

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct ActionDelta {
    pub first_used: Option<Timestamp>,
    pub last_used: Option<Timestamp>,
    pub uses: u64,
    pub last_denied: Option<Timestamp>,
    pub denied: u64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyDelta {
    /// The principal that used the key first (ties: the smaller principal).
    pub principal: String,
    pub first_used: Timestamp,
    pub last_used: Timestamp,
    /// Source IPs the key was used from, with the last time (for `access-key-from-many-ips`), at most
    /// [`MAX_KEY_IPS`] per delta: past that the key is flagged anyway.
    pub ips: Vec<(Box<str>, Timestamp)>,
}

/// An instance credential's use: the role (canonical principal) and instance it belongs to (ties: the smaller),
/// and the public source addresses it was used from, at most [`MAX_KEY_IPS`] per delta.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InstanceKeyDelta {
    pub principal: String,
    pub instance: String,
    pub ips: Vec<(Box<str>, Timestamp)>,
}

/// Source IPs kept per access key in one delta.
pub const MAX_KEY_IPS: usize = 64;

/// Reusable buffers for [`Delta::apply`], so that applying an event to known keys allocates nothing.
#[derive(Debug, Default)]
pub struct Scratch {
    principal: String,
    action: String,
}

impl Delta {
    pub fn is_empty(&self) -> bool {
        self.principals.is_empty() && self.access_keys.is_empty() && self.instance_keys.is_empty()
    }

    /// Number of principal-action pairs.
    pub fn action_count(&self) -> usize {
        self.principals.values().map(|p| p.actions.len()).sum()
    }

    /// Folds one event in.
    pub fn apply(&mut self, event: &Event<'_>, scratch: &mut Scratch) {
        scratch.principal.clear();
        event.principal.key.write_to(&mut scratch.principal);
        let principal = match self.principals.get_mut(scratch.principal.as_str()) {
            Some(p) => p,
            None => self
                .principals
                .entry(scratch.principal.as_str().into())
                .or_insert_with(|| PrincipalDelta::new(event.time)),
        };
        principal.apply(event, &mut scratch.action);
        add_count(&mut self.hours, event.time.div_euclid(3600), 1);
        if let Some(key) = event.access_key {
            let k = match self.access_keys.get_mut(key) {
                Some(k) => {
                    k.merge(KeyDelta::borrowed(&scratch.principal, event.time));
                    k
                }
                None => self
                    .access_keys
                    .entry(key.into())
                    .or_insert_with(|| KeyDelta::borrowed(&scratch.principal, event.time).owned()),
            };
            if let Some(ip) = event.source_ip {
                note_last(&mut k.ips, ip, event.time);
            }
        }
        if let (Some(session), Some(key), Some(ip)) = (event.principal.session, event.access_key_id, event.source_ip)
            && is_instance_id(session)
            && key.starts_with("ASIA")
            && is_public_address(ip)
        {
            let k = match self.instance_keys.get_mut(key) {
                Some(k) => k,
                None => self.instance_keys.entry(key.into()).or_insert_with(|| InstanceKeyDelta {
                    principal: scratch.principal.clone(),
                    instance: session.to_owned(),
                    ips: Vec::new(),
                }),
            };
            k.merge_owner(&scratch.principal, session);
            note_last(&mut k.ips, ip, event.time);
        }
    }

    /// Merges `other` into `self`; the result does not depend on the order of merges.
    pub fn merge(&mut self, other: Delta) {
        for (name, p) in other.principals {
            match self.principals.get_mut(&name) {
                Some(mine) => mine.merge(p),
                None => {
                    self.principals.insert(name, p);
                }
            }
        }
        for (id, k) in other.access_keys {
            match self.access_keys.get_mut(&id) {
                Some(mine) => {
                    mine.merge(KeyDelta::borrowed(&k.principal, k.first_used).with_last(k.last_used));
                    for (ip, time) in k.ips {
                        note_last(&mut mine.ips, &ip, time);
                    }
                }
                None => {
                    self.access_keys.insert(id, k);
                }
            }
        }
        for (hour, events) in other.hours {
            add_count(&mut self.hours, hour, events);
        }
        for (id, k) in other.instance_keys {
            match self.instance_keys.get_mut(&id) {
                Some(mine) => {
                    mine.merge_owner(&k.principal, &k.instance);
                    for (ip, time) in k.ips {
                        note_last(&mut mine.ips, &ip, time);
                    }
                }
                None => {
                    self.instance_keys.insert(id, k);
                }
            }
        }
    }
}

impl InstanceKeyDelta {
    /// Keeps the smaller (principal, instance): one key belongs to one instance, but a forged record may say
    /// otherwise, and the result must not depend on the order.
    fn merge_owner(&mut self, principal: &str, instance: &str) {
        if (principal, instance) < (self.principal.as_str(), self.instance.as_str()) {
            set(&mut self.principal, principal);
            set(&mut self.instance, instance);
        }
    }
}

/// Whether a role session name is an EC2 instance id (`i-` and 8 or 17 lowercase hex digits): the session name
/// EC2 gives the credentials of an instance profile.
pub fn is_instance_id(session: &str) -> bool {
    session.strip_prefix("i-").is_some_and(|hex| {
        matches!(hex.len(), 8 | 17) && hex.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    })
}

/// Whether a source address is a public IP: not a service name (`ec2.amazonaws.com`), nor a private, shared,
/// loopback or link-local address (calls through a VPC endpoint show the instance's private address).
pub fn is_public_address(ip: &str) -> bool {
    match ip.parse::<std::net::IpAddr>() {
        Ok(std::net::IpAddr::V4(v4)) => {
            // 100.64.0.0/10 (carrier-grade NAT) is shared, not public; `Ipv4Addr::is_shared` is not stable yet.
            let [a, b, ..] = v4.octets();
            let shared = a == 100 && (64..128).contains(&b);
            !(v4.is_private()
                || v4.is_loopback()
                || v4.is_link_local()
                || v4.is_unspecified()
                || v4.is_broadcast()
                || shared)
        }
        Ok(std::net::IpAddr::V6(v6)) => {
            !(v6.is_loopback() || v6.is_unspecified() || v6.is_unique_local() || v6.is_unicast_link_local())
        }
        Err(_) => false,
    }
}

impl PrincipalDelta {
    fn new(time: Timestamp) -> Self {
        PrincipalDelta {
            kind: String::new(),
            account: String::new(),
            first_seen: time,
            last_seen: Timestamp::MIN,
            events: 0,
            errors: 0,
            denied: 0,
            last_source_ip: String::new(),
            last_region: String::new(),
            last_user_agent: String::new(),
            console_login: None,
            sessions: Vec::new(),
            actions: FxHashMap::default(),
            regions: Vec::new(),
            days: Vec::new(),
        }
    }

    fn apply(&mut self, event: &Event<'_>, action_buf: &mut String) {
        let account = event.principal.account.unwrap_or("");
        if (self.events == 0)
            || (event.time, event.principal.kind, account)
                < (self.first_seen, self.kind.as_str(), self.account.as_str())
        {
            set(&mut self.kind, event.principal.kind);
            set(&mut self.account, account);
        }
        self.first_seen = self.first_seen.min(event.time);
        self.events += 1;
        self.errors += u64::from(event.is_error());
        add_count(&mut self.days, event.time.div_euclid(86_400), 1);
        let last =
            (event.time, event.source_ip.unwrap_or(""), event.region.unwrap_or(""), event.user_agent.unwrap_or(""));
        if last > (self.last_seen, &*self.last_source_ip, &*self.last_region, &*self.last_user_agent) {
            self.last_seen = event.time;
            set(&mut self.last_source_ip, last.1);
            set(&mut self.last_region, last.2);
            set(&mut self.last_user_agent, last.3);
        }
        if let Some(login) = event.console_login.filter(|l| l.success) {
            merge_console_login(&mut self.console_login, Some((event.time, login.mfa_used)));
        }
        if let Some(session) = event.principal.session {
            note_session(&mut self.sessions, session, event.time);
        }
        if let Some(region) = event.region {
            note_first(&mut self.regions, region, event.time);
        }
        for action in event.actions.iter().flatten() {
            action_buf.clear();
            action.write_to(action_buf);
            let stats = match self.actions.get_mut(action_buf.as_str()) {
                Some(s) => s,
                None => self.actions.entry(action_buf.as_str().into()).or_default(),
            };
            match event.outcome {
                Outcome::Denied => {
                    stats.merge(ActionDelta::denied_at(event.time));
                    self.denied += 1;
                }
                Outcome::Used | Outcome::FailedSignIn => stats.merge(ActionDelta::used_at(event.time)),
            }
        }
    }

    fn merge(&mut self, other: PrincipalDelta) {
        if (other.first_seen, &*other.kind, &*other.account) < (self.first_seen, &*self.kind, &*self.account) {
            self.kind = other.kind;
            self.account = other.account;
        }
        self.first_seen = self.first_seen.min(other.first_seen);
        self.events += other.events;
        self.errors += other.errors;
        self.denied += other.denied;
        let theirs = (other.last_seen, &*other.last_source_ip, &*other.last_region, &*other.last_user_agent);
        if theirs > (self.last_seen, &*self.last_source_ip, &*self.last_region, &*self.last_user_agent) {
            self.last_seen = other.last_seen;
            self.last_source_ip = other.last_source_ip;
            self.last_region = other.last_region;
            self.last_user_agent = other.last_user_agent;
        }
        merge_console_login(&mut self.console_login, other.console_login);
        for (name, time) in other.sessions {
            note_session(&mut self.sessions, &name, time);
        }
        for (region, time) in other.regions {
            note_first(&mut self.regions, &region, time);
        }
        for (day, events) in other.days {
            add_count(&mut self.days, day, events);
        }
        for (name, a) in other.actions {
            match self.actions.get_mut(&name) {
                Some(mine) => mine.merge(a),
                None => {
                    self.actions.insert(name, a);
                }
            }
        }
    }
}

/// Keeps the earliest time per name, sorted by name so that the result does not depend on merge order.
fn note_first(list: &mut Vec<(Box<str>, Timestamp)>, name: &str, time: Timestamp) {
    match list.binary_search_by(|(n, _)| (**n).cmp(name)) {
        Ok(i) => list[i].1 = list[i].1.min(time),
        Err(i) => list.insert(i, (name.into(), time)),
    }
}

/// Adds `n` to the count of `at` in a list sorted by it. Times within a file mostly ascend, so the last entry is
/// looked at first.
fn add_count(list: &mut Vec<(i64, u64)>, at: i64, n: u64) {
    if let Some(last) = list.last_mut()
        && last.0 == at
    {
        last.1 += n;
        return;
    }
    match list.binary_search_by_key(&at, |(t, _)| *t) {
        Ok(i) => list[i].1 += n,
        Err(i) => list.insert(i, (at, n)),
    }
}

/// Keeps the latest time per name, sorted by name, and at most [`MAX_KEY_IPS`] names: the smallest ones, so that
/// the kept set does not depend on merge order either.
fn note_last(list: &mut Vec<(Box<str>, Timestamp)>, name: &str, time: Timestamp) {
    match list.binary_search_by(|(n, _)| (**n).cmp(name)) {
        Ok(i) => list[i].1 = list[i].1.max(time),
        Err(i) if list.len() < MAX_KEY_IPS => list.insert(i, (name.into(), time)),
        Err(i) if i < MAX_KEY_IPS => {
            list.pop();
            list.insert(i, (name.into(), time));
        }
        Err(_) => {}
    }
}

fn set(field: &mut String, value: &str) {
    if field != value {
        field.clear();
        field.push_str(value);
    }
}

fn merge_console_login(mine: &mut Option<(Timestamp, bool)>, theirs: Option<(Timestamp, bool)>) {
    if theirs > *mine {
        *mine = theirs;
    }
}

/// Session order: most recent first, ties by name descending. The kept set is the first [`MAX_SESSIONS`].
pub fn session_order(a: (&str, Timestamp), b: (&str, Timestamp)) -> Ordering {
    (b.1, b.0).cmp(&(a.1, a.0))
}

fn note_session(sessions: &mut Vec<(String, Timestamp)>, name: &str, time: Timestamp) {
    if let Some(s) = sessions.iter_mut().find(|(n, _)| n == name) {
        s.1 = s.1.max(time);
        return;
    }
    if sessions.len() < MAX_SESSIONS {
        sessions.push((name.to_owned(), time));
        return;
    }
    // Replace the oldest when the new one sorts before it; reuse its allocation (and compare it in place: this
    // runs for most events of a busy role, whose sessions are always full).
    let (idx, newer) = sessions
        .iter()
        .enumerate()
        .max_by(|(_, a), (_, b)| session_order((&a.0, a.1), (&b.0, b.1)))
        .map(|(i, oldest)| (i, session_order((name, time), (&oldest.0, oldest.1)) == Ordering::Less))
        .expect("sessions is full, so not empty");
    if newer {
        let slot = &mut sessions[idx];
        set(&mut slot.0, name);
        slot.1 = time;
    }
}

impl ActionDelta {
    pub fn used_at(time: Timestamp) -> Self {
        ActionDelta { first_used: Some(time), last_used: Some(time), uses: 1, ..Default::default() }
    }

    pub fn denied_at(time: Timestamp) -> Self {
        ActionDelta { last_denied: Some(time), denied: 1, ..Default::default() }
    }

    pub fn merge(&mut self, other: ActionDelta) {
        self.first_used = min_opt(self.first_used, other.first_used);
        self.last_used = self.last_used.max(other.last_used);
        self.uses += other.uses;
        self.last_denied = self.last_denied.max(other.last_denied);
        self.denied += other.denied;
    }
}

fn min_opt(a: Option<Timestamp>, b: Option<Timestamp>) -> Option<Timestamp> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

/// A key use in borrowed form, to merge without allocating.
struct KeyUse<'a> {
    principal: &'a str,
    first_used: Timestamp,
    last_used: Timestamp,
}

impl KeyDelta {
    fn borrowed(principal: &str, time: Timestamp) -> KeyUse<'_> {
        KeyUse { principal, first_used: time, last_used: time }
    }

    fn merge(&mut self, other: KeyUse<'_>) {
        if (other.first_used, other.principal) < (self.first_used, self.principal.as_str()) {
            set(&mut self.principal, other.principal);
        }
        self.first_used = self.first_used.min(other.first_used);
        self.last_used = self.last_used.max(other.last_used);
    }
}

impl KeyUse<'_> {
    fn with_last(mut self, last_used: Timestamp) -> Self {
        self.last_used = last_used;
        self
    }

    fn owned(&self) -> KeyDelta {
        KeyDelta {
            principal: self.principal.to_owned(),
            first_used: self.first_used,
            last_used: self.last_used,
            ips: Vec::new(),
        }
    }
}

#[cfg(test)]
pub(crate) mod tests;
