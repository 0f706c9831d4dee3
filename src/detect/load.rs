//! Loading rules: the built-in rule files compiled into the binary, and `*.yml`/`*.yaml` files under directories,
//! read with a size cap and a walk that follows no symlink loop. The only file I/O in `detect`, done at start.

use crate::detect::rule::{self, Rule};
use crate::detect::ruleset::RuleSet;

/// Includes each named file of `config/rules/`, as (file name, YAML).
macro_rules! builtin_rules {
    ($($name:literal),* $(,)?) => { &[$(($name, include_str!(concat!("../../config/rules/", $name)))),*] };
}

/// The rules shipped in the binary (`config/rules/`), as (file name, YAML); a test checks that every file there
/// is listed.
pub const BUILTIN: &[(&str, &str)] = builtin_rules![
    "root-account-usage.yml",
    "root-access-key-created.yml",
    "console-login-without-mfa.yml",
    "console-login-failures.yml",
    "unauthorized-api-calls.yml",
    "cloudtrail-tampering.yml",
    "security-tooling-disabled.yml",
    "admin-policy-attached.yml",
    "user-policy-attached.yml",
    "access-key-created-for-other-user.yml",
    "login-profile-changed-for-other-user.yml",
    "mfa-device-removed.yml",
    "password-policy-weakened.yml",
    "kms-key-disabled-or-deleted.yml",
    "s3-bucket-policy-changed.yml",
    "s3-public-access-block-removed.yml",
    "network-config-changed.yml",
    "organizations-changed.yml",
    "pentest-user-agent.yml",
    "secrets-read-in-bulk.yml",
    "secrets-batch-retrieved.yml",
    "ssm-parameters-read-in-bulk.yml",
    "ec2-secrets-read.yml",
    "role-trusts-other-account.yml",
    "policy-version-set-as-default.yml",
    "permissions-boundary-removed.yml",
    "lambda-made-public.yml",
    "roles-anywhere-trust-anchor-created.yml",
    "federation-token-issued.yml",
    "identity-center-changed.yml",
    "eks-access-granted.yml",
    "dns-query-logging-removed.yml",
    "bedrock-invocation-logging-removed.yml",
    "cloudwatch-logs-deleted.yml",
    "s3-logging-disabled.yml",
    "guardduty-findings-suppressed.yml",
    "organization-left.yml",
    "encryption-by-default-disabled.yml",
    "snapshot-or-image-shared.yml",
    "s3-bucket-opened.yml",
    "ssm-command-or-session.yml",
    "ec2-ssh-key-pushed.yml",
    "instance-user-data-modified.yml",
    "unusual-instance-type-launched.yml",
    "instance-launch-burst.yml",
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

/// The largest rule file read; SigmaHQ's largest rule is a few kilobytes.
pub const MAX_RULE_FILE_BYTES: u64 = 1 << 20;

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
                match read_rule_file(&path) {
                    Ok(text) => add(&text, &origin, &mut rules, &mut errors),
                    Err(error) => errors.push(LoadError { origin, id: None, error }),
                }
            }
        }
        rules.retain(|r| !disabled.contains(&r.id));
        let (set, more) = RuleSet::build(rules);
        errors.extend(more);
        (set, errors)
    }
}

/// A rule file's text: a regular file (a FIFO would block loading, a device like `/dev/zero` never end) of at
/// most [`MAX_RULE_FILE_BYTES`], read no further than that whatever it claims.
fn read_rule_file(path: &std::path::Path) -> Result<String, String> {
    use std::io::Read;
    let meta = std::fs::metadata(path).map_err(|e| format!("unreadable: {}", e.to_string().to_lowercase()))?;
    if !meta.is_file() {
        return Err("not a regular file".into());
    }
    if meta.len() > MAX_RULE_FILE_BYTES {
        return Err(format!("larger than {MAX_RULE_FILE_BYTES} bytes"));
    }
    let file = std::fs::File::open(path).map_err(|e| format!("unreadable: {}", e.to_string().to_lowercase()))?;
    let mut text = String::new();
    file.take(MAX_RULE_FILE_BYTES + 1)
        .read_to_string(&mut text)
        .map_err(|e| format!("unreadable: {}", e.to_string().to_lowercase()))?;
    if text.len() as u64 > MAX_RULE_FILE_BYTES {
        return Err(format!("larger than {MAX_RULE_FILE_BYTES} bytes"));
    }
    Ok(text)
}

/// The `*.yml` and `*.yaml` files under `dir`, at any depth; a directory reached twice (a symlink loop) is read
/// once.
fn rule_files(dir: &std::path::Path, out: &mut Vec<std::path::PathBuf>) -> std::io::Result<()> {
    fn walk(
        dir: &std::path::Path,
        seen: &mut Vec<std::path::PathBuf>,
        out: &mut Vec<std::path::PathBuf>,
    ) -> std::io::Result<()> {
        let canonical = std::fs::canonicalize(dir)?;
        if seen.contains(&canonical) {
            return Ok(());
        }
        seen.push(canonical);
        for entry in std::fs::read_dir(dir)? {
            let path = entry?.path();
            if path.is_dir() {
                walk(&path, seen, out)?;
            } else if path.extension().is_some_and(|e| e == "yml" || e == "yaml") {
                out.push(path);
            }
        }
        Ok(())
    }
    walk(dir, &mut Vec::new(), out)
}
