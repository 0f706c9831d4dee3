//! Behavioural rules over the per-identity state: `new-region-for-identity` (a principal acts in a region it
//! never used before, once past its learning period), `access-key-from-many-ips` (a long-term key used from
//! more distinct source IPs than configured within a window: shared or leaked), `sensitive-service-first-use`
//! (a principal's first successful call to a configured service, once past its learning period),
//! `service-enumeration` (List/Describe calls to many services within a window: discovery) and
//! `instance-credentials-used-elsewhere` (an EC2 instance's temporary key used from more public addresses than
//! configured: copied off the instance).
//!
//! The store finds the facts while it writes a batch (it alone knows what was already there); this module turns
//! them into alerts. Pure, no I/O.

use crate::alert::{Alert, Derived, bucket};
use crate::config::BehaviourConfig;
use crate::time::{Timestamp, format_rfc3339};

pub use crate::detect::catalogue::{
    INSTANCE_CREDENTIALS_ELSEWHERE, KEY_MANY_IPS, NEW_REGION, SENSITIVE_FIRST_USE, SERVICE_ENUMERATION,
};

/// What the store noticed while writing a batch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fact {
    NewRegion {
        principal: String,
        account_id: Option<String>,
        region: String,
        time: Timestamp,
        known_since: Timestamp,
    },
    KeyManyIps {
        key: String,
        principal: String,
        account_id: Option<String>,
        ips: usize,
        time: Timestamp,
    },
    SensitiveFirstUse {
        principal: String,
        account_id: Option<String>,
        service: String,
        time: Timestamp,
        known_since: Timestamp,
    },
    /// `services`: the services enumerated within the window, sorted.
    ServiceEnumeration {
        principal: String,
        account_id: Option<String>,
        services: Vec<String>,
        time: Timestamp,
    },
    /// `ips`: the public addresses the key was used from within the window, sorted.
    InstanceCredentialsElsewhere {
        key: String,
        principal: String,
        account_id: Option<String>,
        instance: String,
        ips: Vec<String>,
        time: Timestamp,
    },
}

/// The alert for a fact. New regions fire once per principal and region, a key once per key and window, a first
/// use once per principal and service, an enumeration once per principal and day, an instance key once.
pub fn to_alert(fact: &Fact, config: &BehaviourConfig) -> Alert {
    let (rule, principal, account_id, subject, time, bucket_key, summary, details) = match fact {
        Fact::NewRegion { principal, account_id, region, time, known_since } => (
            NEW_REGION,
            principal,
            account_id,
            format!("{principal}\u{1f}{region}"),
            *time,
            String::new(),
            format!(
                "Identity acts in a region it never used: {principal} in {region} (known since {})",
                format_rfc3339(*known_since)
            ),
            serde_json::json!({"region": region, "known_since": format_rfc3339(*known_since)}),
        ),
        Fact::KeyManyIps { key, principal, account_id, ips, time } => (
            KEY_MANY_IPS,
            principal,
            account_id,
            key.clone(),
            *time,
            bucket(*time, config.key_ips_window_secs).to_string(),
            format!(
                "Access key used from many source IPs: {key} of {principal} from {ips} addresses within {}s",
                config.key_ips_window_secs
            ),
            serde_json::json!({"access_key": key, "source_ips": ips, "window_secs": config.key_ips_window_secs}),
        ),
        Fact::SensitiveFirstUse { principal, account_id, service, time, known_since } => (
            SENSITIVE_FIRST_USE,
            principal,
            account_id,
            format!("{principal}\u{1f}{service}"),
            *time,
            String::new(),
            format!(
                "Identity uses a sensitive service for the first time: {principal} called {service} (known since {})",
                format_rfc3339(*known_since)
            ),
            serde_json::json!({"service": service, "known_since": format_rfc3339(*known_since)}),
        ),
        Fact::ServiceEnumeration { principal, account_id, services, time } => (
            SERVICE_ENUMERATION,
            principal,
            account_id,
            principal.clone(),
            *time,
            // Once per principal and day: a sweep goes on for a while, and its next windows add nothing.
            bucket(*time, 86_400).to_string(),
            format!(
                "Identity enumerates many services: {principal} listed or described {} services within {}s",
                services.len(),
                config.enumeration_window_secs
            ),
            serde_json::json!({"services": services, "window_secs": config.enumeration_window_secs}),
        ),
        Fact::InstanceCredentialsElsewhere { key, principal, account_id, instance, ips, time } => (
            INSTANCE_CREDENTIALS_ELSEWHERE,
            principal,
            account_id,
            key.clone(),
            *time,
            String::new(),
            format!(
                "EC2 instance credentials used from another address: {key} of {instance} ({principal}) from {} public addresses within {}s",
                ips.len(),
                config.instance_key_ips_window_secs
            ),
            serde_json::json!({"access_key": key, "instance": instance, "source_ips": ips,
                               "window_secs": config.instance_key_ips_window_secs}),
        ),
    };
    let (title, severity) = crate::detect::catalogue::state_rule(rule);
    let mut alert = Alert::derived(Derived {
        rule,
        subject: &subject,
        anchor: &bucket_key,
        title,
        severity,
        principal: principal.clone(),
        account_id: account_id.clone(),
        time,
        summary,
        details,
    });
    if let Fact::NewRegion { region, .. } = fact {
        alert.region = Some(region.clone());
    }
    alert
}
