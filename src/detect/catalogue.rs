//! The catalogue of built-in rules raised from the state rather than matched on events: their ids (part of the
//! contract, like the Sigma rules'), titles and levels, for `rules list`, the configuration's rule checks and the
//! alerts that the behavioural rules and the periodic findings build.

use crate::detect::rule::Severity;

/// Behavioural rules, found as a batch is written.
pub const NEW_REGION: &str = "new-region-for-identity";
pub const KEY_MANY_IPS: &str = "access-key-from-many-ips";
pub const SENSITIVE_FIRST_USE: &str = "sensitive-service-first-use";
pub const SERVICE_ENUMERATION: &str = "service-enumeration";
pub const INSTANCE_CREDENTIALS_ELSEWHERE: &str = "instance-credentials-used-elsewhere";

/// Periodic findings from the state.
pub const INACTIVE_IDENTITY: &str = "inactive-identity";
pub const ACCESS_KEY_UNUSED: &str = "access-key-unused";
/// Periodic permission findings (with an inventory).
pub const UNUSED_PERMISSIONS: &str = "unused-permissions";
pub const UNUSED_IDENTITY: &str = "unused-identity";
pub const ACCESS_KEY_NOT_ROTATED: &str = "access-key-not-rotated";
pub const PASSWORD_UNUSED: &str = "password-unused";

/// Log file validation's findings (`integrity::chain::Finding::rule`).
pub const LOG_FILE_MISSING: &str = "log-file-missing";
pub const LOG_FILE_ALTERED: &str = "log-file-altered";
pub const LOG_FILE_UNLISTED: &str = "log-file-unlisted";
pub const DIGEST_MISSING: &str = "digest-missing";
pub const DIGEST_INVALID: &str = "digest-invalid";
pub const DIGEST_CHAIN_ENDED: &str = "digest-chain-ended";

/// Every rule the periodic findings raise, the permission and integrity findings included: their alerts record
/// that a finding was raised (their ids carry no time bucket), so retention keeps them.
pub const PERIODIC_RULES: [&str; 12] = [
    INACTIVE_IDENTITY,
    ACCESS_KEY_UNUSED,
    UNUSED_PERMISSIONS,
    UNUSED_IDENTITY,
    ACCESS_KEY_NOT_ROTATED,
    PASSWORD_UNUSED,
    LOG_FILE_MISSING,
    LOG_FILE_ALTERED,
    LOG_FILE_UNLISTED,
    DIGEST_MISSING,
    DIGEST_INVALID,
    DIGEST_CHAIN_ENDED,
];

/// A rule raised from the state rather than matched on events: the behavioural rules (found as a batch is
/// written) and the periodic findings (on a timer). `rules list` shows them beside the Sigma rules, and the
/// configuration may name them wherever it names rules.
pub struct StateRule {
    pub id: &'static str,
    pub level: Severity,
    /// `behavioural`, `periodic` or `integrity`.
    pub kind: &'static str,
    pub title: &'static str,
}

pub const STATE_RULES: [StateRule; 17] = {
    const fn rule(id: &'static str, level: Severity, kind: &'static str, title: &'static str) -> StateRule {
        StateRule { id, level, kind, title }
    }
    [
        rule(NEW_REGION, Severity::Medium, "behavioural", "Identity acts in a region it never used"),
        rule(KEY_MANY_IPS, Severity::High, "behavioural", "Access key used from many source IPs"),
        rule(
            SENSITIVE_FIRST_USE,
            Severity::Medium,
            "behavioural",
            "Identity uses a sensitive service for the first time",
        ),
        rule(SERVICE_ENUMERATION, Severity::Medium, "behavioural", "Identity enumerates many services"),
        rule(
            INSTANCE_CREDENTIALS_ELSEWHERE,
            Severity::High,
            "behavioural",
            "EC2 instance credentials used from another address",
        ),
        rule(INACTIVE_IDENTITY, Severity::Low, "periodic", "Inactive identity"),
        rule(ACCESS_KEY_UNUSED, Severity::Medium, "periodic", "Unused access key"),
        rule(UNUSED_IDENTITY, Severity::Low, "periodic", "Unused identity"),
        rule(UNUSED_PERMISSIONS, Severity::Low, "periodic", "Unused permissions"),
        rule(ACCESS_KEY_NOT_ROTATED, Severity::Medium, "periodic", "Access key not rotated"),
        rule(PASSWORD_UNUSED, Severity::Medium, "periodic", "Unused console password"),
        rule(LOG_FILE_MISSING, Severity::High, "integrity", "CloudTrail log file missing"),
        rule(LOG_FILE_ALTERED, Severity::Critical, "integrity", "CloudTrail log file altered"),
        rule(LOG_FILE_UNLISTED, Severity::High, "integrity", "CloudTrail log file not listed in its digest"),
        rule(DIGEST_MISSING, Severity::High, "integrity", "CloudTrail digest file missing"),
        rule(DIGEST_INVALID, Severity::High, "integrity", "CloudTrail digest file invalid"),
        rule(DIGEST_CHAIN_ENDED, Severity::Medium, "integrity", "CloudTrail digests stopped"),
    ]
};

/// The title and level of a rule raised from the state.
pub fn state_rule(id: &str) -> (&'static str, Severity) {
    STATE_RULES.iter().find(|r| r.id == id).map_or(("Permission finding", Severity::Low), |r| (r.title, r.level))
}
