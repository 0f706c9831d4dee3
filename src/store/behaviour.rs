//! The store's half of the behavioural rules: what a batch tells that the stored state did not know (new regions,
//! keys' addresses, services first used or enumerated, instance keys' addresses), written in the batch's transaction
//! and compared there. `alert::behaviour` turns the facts into alerts.

use rusqlite::{OptionalExtension, params};

use crate::alert::behaviour::Fact;
use crate::config::BehaviourConfig;
use crate::state::{Delta, PrincipalDelta};
use crate::time::Timestamp;

/// What the batch tells that the store did not know: written first, then compared.
pub(super) fn facts(
    tx: &rusqlite::Transaction<'_>,
    delta: &Delta,
    stored: &[(i64, i64)],
    config: &BehaviourConfig,
) -> rusqlite::Result<Vec<Fact>> {
    let mut facts = Vec::new();
    if config.new_region_learning_days > 0 {
        let mut insert = tx.prepare_cached(
            "INSERT OR IGNORE INTO principal_regions (principal_id, region, first_seen) VALUES (?1, ?2, ?3)",
        )?;
        let mut update = tx.prepare_cached(
            "UPDATE principal_regions SET first_seen = min(first_seen, ?3) WHERE principal_id = ?1 AND region = ?2",
        )?;
        let learning = config.new_region_learning_days * 86_400;
        let mut principals: Vec<(&str, &PrincipalDelta, i64, i64)> =
            delta.principals.iter().zip(stored).map(|((name, p), (id, first))| (&**name, p, *id, *first)).collect();
        principals.sort_unstable_by_key(|(name, ..)| *name);
        for (name, p, id, first_seen) in principals {
            for (region, time) in &p.regions {
                if insert.execute(params![id, &**region, time])? == 1 {
                    // New to the store: worth an alert once the principal is past its learning period.
                    if *time >= first_seen + learning {
                        facts.push(Fact::NewRegion {
                            principal: name.to_owned(),
                            account_id: Some(p.account.clone()).filter(|a| !a.is_empty()),
                            region: region.to_string(),
                            time: *time,
                            known_since: first_seen,
                        });
                    }
                } else {
                    update.execute(params![id, &**region, time])?;
                }
            }
        }
    }
    if config.key_max_source_ips > 0 {
        let mut upsert = tx.prepare_cached(
            "INSERT INTO key_ips (key_id, ip, last_seen) VALUES (?1, ?2, ?3)
             ON CONFLICT (key_id, ip) DO UPDATE SET last_seen = max(last_seen, excluded.last_seen)",
        )?;
        let mut count = tx
            .prepare_cached("SELECT count(*) FROM key_ips WHERE key_id = ?1 AND last_seen >= ?2 AND last_seen <= ?3")?;
        let mut prune = tx.prepare_cached("DELETE FROM key_ips WHERE key_id = ?1 AND last_seen < ?2")?;
        let mut keys: Vec<&str> = delta.access_keys.keys().map(|k| &**k).collect();
        keys.sort_unstable();
        for key in keys {
            let k = &delta.access_keys[key];
            for (ip, time) in &k.ips {
                upsert.execute(params![key, &**ip, time])?;
            }
            let at = k.last_used;
            let ips: i64 = count.query_row(params![key, at - config.key_ips_window_secs, at], |r| r.get(0))?;
            if ips as usize > config.key_max_source_ips {
                let account = delta.principals.get(k.principal.as_str()).map(|p| p.account.clone());
                facts.push(Fact::KeyManyIps {
                    key: key.to_owned(),
                    principal: k.principal.clone(),
                    account_id: account.filter(|a| !a.is_empty()),
                    ips: ips as usize,
                    time: at,
                });
            }
            // A day of history is enough for any window worth configuring, and keeps the table small.
            prune.execute(params![key, at - (config.key_ips_window_secs * 2).max(86_400)])?;
        }
    }
    service_facts(tx, delta, stored, config, &mut facts)?;
    instance_key_facts(tx, delta, config, &mut facts)?;
    Ok(facts)
}

/// Per service (IAM prefix) of one principal's batch: the first successful use and the last inventory read (see [`enumerates`]).
#[derive(Default)]
struct ServiceUse {
    first_used: Option<Timestamp>,
    last_enumerated: Option<Timestamp>,
}

/// Whether an IAM action (`service:Action`) reads an inventory, as discovery does: `List*`, `Describe*`, and the
/// account-level `Get*` calls (`GetCallerIdentity`, `GetAccountSummary`, `GetAccountAuthorizationDetails`). Other
/// `Get*` calls read data (`GetObject`, `GetSecretValue`, `GetItem`): an application makes them across many
/// services every minute.
fn enumerates(action: &str) -> bool {
    action.split_once(':').is_some_and(|(_, name)| {
        name.starts_with("List")
            || name.starts_with("Describe")
            || name.starts_with("GetAccount")
            || name == "GetCallerIdentity"
    })
}

/// `sensitive-service-first-use` and `service-enumeration`: each principal's services, merged into
/// `principal_services` (first use: the minimum; last enumeration: the maximum).
fn service_facts(
    tx: &rusqlite::Transaction<'_>,
    delta: &Delta,
    stored: &[(i64, i64)],
    config: &BehaviourConfig,
    facts: &mut Vec<Fact>,
) -> rusqlite::Result<()> {
    let first_use = config.sensitive_service_learning_days > 0 && !config.sensitive_services.is_empty();
    let enumeration = config.enumeration_min_services > 0;
    if !first_use && !enumeration {
        return Ok(());
    }
    let mut read_first =
        tx.prepare_cached("SELECT first_used FROM principal_services WHERE principal_id = ?1 AND service = ?2")?;
    let mut upsert = tx.prepare_cached(
        "INSERT INTO principal_services (principal_id, service, first_used, last_enumerated) VALUES (?1, ?2, ?3, ?4)
         ON CONFLICT (principal_id, service) DO UPDATE SET
             first_used = CASE WHEN first_used IS NULL OR excluded.first_used < first_used
                 THEN excluded.first_used ELSE first_used END,
             last_enumerated = CASE WHEN last_enumerated IS NULL OR excluded.last_enumerated > last_enumerated
                 THEN excluded.last_enumerated ELSE last_enumerated END",
    )?;
    let mut enumerated = tx.prepare_cached(
        "SELECT service FROM principal_services WHERE principal_id = ?1 AND last_enumerated BETWEEN ?2 AND ?3
         ORDER BY service",
    )?;
    let learning = config.sensitive_service_learning_days * 86_400;
    let mut principals: Vec<(&str, &PrincipalDelta, i64, i64)> =
        delta.principals.iter().zip(stored).map(|((name, p), (id, first))| (&**name, p, *id, *first)).collect();
    principals.sort_unstable_by_key(|(name, ..)| *name);
    for (name, p, id, first_seen) in principals {
        // AWS services act for others; their calls are not an identity's behaviour.
        if p.kind == "AWSService" {
            continue;
        }
        let mut services: Vec<(&str, ServiceUse)> = Vec::new();
        for (action, used) in &p.actions {
            let Some((service, _)) = action.split_once(':') else { continue };
            let at = match services.binary_search_by(|(s, _)| (*s).cmp(service)) {
                Ok(at) => at,
                Err(at) => {
                    services.insert(at, (service, ServiceUse::default()));
                    at
                }
            };
            let entry = &mut services[at].1;
            entry.first_used = min_some(entry.first_used, used.first_used);
            if enumerates(action) {
                entry.last_enumerated = entry.last_enumerated.max(used.last_used.max(used.last_denied));
            }
        }
        let account_id = Some(p.account.clone()).filter(|a| !a.is_empty());
        let mut latest_enumeration = None;
        for (service, used) in &services {
            // Only what a rule reads is stored: the first use of a sensitive service, and inventory reads. Data
            // calls to other services (most of the traffic) cost nothing here.
            let sensitive = first_use && config.sensitive_services.iter().any(|s| s == service);
            let first_used = used.first_used.filter(|_| sensitive);
            if let Some(time) = first_used {
                // Never used successfully before (an earlier use read late is no first use).
                let before: Option<Option<Timestamp>> =
                    read_first.query_row(params![id, service], |r| r.get(0)).optional()?;
                if before.flatten().is_none() && time >= first_seen + learning {
                    facts.push(Fact::SensitiveFirstUse {
                        principal: name.to_owned(),
                        account_id: account_id.clone(),
                        service: (*service).to_owned(),
                        time,
                        known_since: first_seen,
                    });
                }
            }
            let last_enumerated = used.last_enumerated.filter(|_| enumeration);
            if first_used.is_some() || last_enumerated.is_some() {
                upsert.execute(params![id, service, first_used, last_enumerated])?;
            }
            latest_enumeration = latest_enumeration.max(last_enumerated);
        }
        if let Some(at) = latest_enumeration {
            let services: Vec<String> = enumerated
                .query_map(params![id, at - config.enumeration_window_secs, at], |r| r.get(0))?
                .collect::<rusqlite::Result<_>>()?;
            // A sweep that starts with who am I and what may I do: monitoring and inventory roles describe the same
            // many services all day, but seldom the identity services.
            let identity = services.iter().any(|s| s == "iam" || s == "sts");
            if services.len() >= config.enumeration_min_services && identity {
                facts.push(Fact::ServiceEnumeration {
                    principal: name.to_owned(),
                    account_id: account_id.clone(),
                    services,
                    time: at,
                });
            }
        }
    }
    Ok(())
}

fn min_some(a: Option<Timestamp>, b: Option<Timestamp>) -> Option<Timestamp> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

/// `instance-credentials-used-elsewhere`: each instance key's public addresses, merged into `instance_key_ips`
/// (the last use per address) and counted within the window that ends at the key's latest use in the batch.
fn instance_key_facts(
    tx: &rusqlite::Transaction<'_>,
    delta: &Delta,
    config: &BehaviourConfig,
    facts: &mut Vec<Fact>,
) -> rusqlite::Result<()> {
    if config.instance_key_max_source_ips == 0 {
        return Ok(());
    }
    let mut upsert = tx.prepare_cached(
        "INSERT INTO instance_key_ips (key_id, ip, last_seen) VALUES (?1, ?2, ?3)
         ON CONFLICT (key_id, ip) DO UPDATE SET last_seen = max(last_seen, excluded.last_seen)",
    )?;
    let mut within = tx.prepare_cached(
        "SELECT ip FROM instance_key_ips WHERE key_id = ?1 AND last_seen BETWEEN ?2 AND ?3 ORDER BY ip",
    )?;
    let mut prune = tx.prepare_cached("DELETE FROM instance_key_ips WHERE key_id = ?1 AND last_seen < ?2")?;
    let window = config.instance_key_ips_window_secs;
    let mut keys: Vec<&str> = delta.instance_keys.keys().map(|k| &**k).collect();
    keys.sort_unstable();
    for key in keys {
        let k = &delta.instance_keys[key];
        for (ip, time) in &k.ips {
            upsert.execute(params![key, &**ip, time])?;
        }
        let Some(at) = k.ips.iter().map(|(_, t)| *t).max() else { continue };
        let ips: Vec<String> =
            within.query_map(params![key, at - window, at], |r| r.get(0))?.collect::<rusqlite::Result<_>>()?;
        if ips.len() > config.instance_key_max_source_ips {
            let account = delta.principals.get(k.principal.as_str()).map(|p| p.account.clone());
            facts.push(Fact::InstanceCredentialsElsewhere {
                key: key.to_owned(),
                principal: k.principal.clone(),
                account_id: account.filter(|a| !a.is_empty()),
                instance: k.instance.clone(),
                ips,
                time: at,
            });
        }
        // Instance credentials rotate within hours: a day of addresses covers any window worth configuring.
        prune.execute(params![key, at - (window * 2).max(86_400)])?;
    }
    Ok(())
}

/// Fills `principal_services` from the actions already stored, for a state written before the table existed: a
/// service an identity used then is not "first used" now.
pub(super) fn learn_services_from_actions(tx: &rusqlite::Transaction<'_>) -> rusqlite::Result<()> {
    tx.execute_batch(
        "INSERT OR IGNORE INTO principal_services (principal_id, service, first_used, last_enumerated)
         SELECT a.principal_id, substr(n.name, 1, instr(n.name, ':') - 1), min(a.first_used),
             max(CASE WHEN substr(n.name, instr(n.name, ':') + 1) GLOB 'List*'
                        OR substr(n.name, instr(n.name, ':') + 1) GLOB 'Describe*'
                        OR substr(n.name, instr(n.name, ':') + 1) GLOB 'GetAccount*'
                        OR substr(n.name, instr(n.name, ':') + 1) = 'GetCallerIdentity'
                 THEN max(coalesce(a.last_used, 0), coalesce(a.last_denied, 0)) END)
         FROM actions a JOIN action_names n ON n.id = a.action_id
         WHERE instr(n.name, ':') > 1
         GROUP BY a.principal_id, substr(n.name, 1, instr(n.name, ':') - 1)",
    )
}
