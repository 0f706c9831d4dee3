//! Behavioural rules over the per-identity state: `new-region-for-identity` (a principal acts in a region it
//! never used before, once past its learning period) and `access-key-from-many-ips` (a long-term key used from
//! more distinct source IPs than configured within a window: shared or leaked).
//!
//! The store finds the facts while it writes a batch (it alone knows what was already there); this module turns
//! them into alerts. Pure, no I/O.

use crate::alert::{Alert, Derived, bucket};
use crate::config::BehaviourConfig;
use crate::time::{Timestamp, format_rfc3339};

pub use crate::detect::catalogue::{KEY_MANY_IPS, NEW_REGION};

/// What the store noticed while writing a batch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fact {
    NewRegion { principal: String, account_id: Option<String>, region: String, time: Timestamp, known_since: Timestamp },
    KeyManyIps { key: String, principal: String, account_id: Option<String>, ips: usize, time: Timestamp },
}

/// The alert for a fact. New regions fire once per principal and region; a key once per key and window.
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
