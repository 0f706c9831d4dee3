//! The inventory of granted permissions: one account's `GetAccountAuthorizationDetails` output (users, groups,
//! roles, managed policies with their default version), read from the JSON AWS returns or the CLI prints.
//!
//! Two further lists may sit beside it in the same object, each in the exact shape AWS returns it, because the
//! authorization details leave them out: `AccessKeyMetadata` (`aws iam list-access-keys`, for every user) and
//! `LoginProfiles` (`aws iam get-login-profile`'s `LoginProfile`, one per user with a console password). The IAM
//! fetcher writes both; a hand-made file may omit them, and then key and password findings have nothing to say.
//!
//! Pure: text in, inventory out. A policy document that cannot be read is a problem reported with its name; the
//! rest of the account still loads.

use std::collections::BTreeMap;

use serde::Deserialize;
use serde_json::Value;

use crate::permissions::policy::{PolicyDocument, PolicyError};
use crate::time::{Timestamp, parse_rfc3339};

/// Every account's inventory, by account id.
#[derive(Debug, Default)]
pub struct Inventory {
    pub accounts: BTreeMap<String, AccountInventory>,
}

impl Inventory {
    /// Adds an account (a later load of the same account replaces it).
    pub fn insert(&mut self, account: AccountInventory) {
        self.accounts.insert(account.account_id.clone(), account);
    }

    pub fn account(&self, account_id: &str) -> Option<&AccountInventory> {
        self.accounts.get(account_id)
    }
}

#[derive(Debug, Default)]
pub struct AccountInventory {
    pub account_id: String,
    pub users: Vec<User>,
    pub groups: BTreeMap<String, Group>,
    pub roles: Vec<Role>,
    /// Managed policies (customer and AWS) by ARN, at their default version.
    pub policies: BTreeMap<String, ManagedPolicy>,
    pub access_keys: Vec<AccessKey>,
    /// Users with a console password, by user name: when the password was set.
    pub login_profiles: BTreeMap<String, Option<Timestamp>>,
    /// What could not be read (a policy document, a list), with where it was.
    pub problems: Vec<String>,
}

/// A policy attached to an identity inline.
#[derive(Debug, Clone)]
pub struct InlinePolicy {
    pub name: String,
    pub document: PolicyDocument,
}

#[derive(Debug, Clone)]
pub struct User {
    pub name: String,
    pub arn: String,
    pub created: Option<Timestamp>,
    pub inline: Vec<InlinePolicy>,
    /// Attached managed policies' ARNs.
    pub attached: Vec<String>,
    pub groups: Vec<String>,
    /// The permissions boundary's policy ARN.
    pub boundary: Option<String>,
}

#[derive(Debug, Clone)]
pub struct Group {
    pub name: String,
    pub arn: String,
    pub inline: Vec<InlinePolicy>,
    pub attached: Vec<String>,
}

#[derive(Debug, Clone)]
pub struct Role {
    pub name: String,
    pub arn: String,
    pub created: Option<Timestamp>,
    pub inline: Vec<InlinePolicy>,
    pub attached: Vec<String>,
    pub boundary: Option<String>,
    /// `RoleLastUsed.LastUsedDate`, as IAM tracks it (used when trailwatch has never seen the role).
    pub last_used: Option<Timestamp>,
}

#[derive(Debug, Clone)]
pub struct ManagedPolicy {
    pub name: String,
    pub arn: String,
    pub document: PolicyDocument,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccessKey {
    pub id: String,
    pub user: String,
    /// `Active` or `Inactive`.
    pub status: String,
    pub created: Option<Timestamp>,
}

#[derive(Debug, thiserror::Error)]
pub enum InventoryError {
    #[error("{origin}: not an authorization-details document: {reason}")]
    Shape { origin: String, reason: String },
    #[error("{origin}: no user, group or role names an account; cannot tell which account this is")]
    NoAccount { origin: String },
}

// The wire shapes, as AWS names them; unknown fields are ignored (AWS adds fields over time).
#[derive(Deserialize, Default)]
#[serde(rename_all = "PascalCase", default)]
struct Details {
    user_detail_list: Vec<UserDetail>,
    group_detail_list: Vec<GroupDetail>,
    role_detail_list: Vec<RoleDetail>,
    policies: Vec<PolicyDetail>,
    access_key_metadata: Vec<AccessKeyDetail>,
    login_profiles: Vec<LoginProfileDetail>,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct NamedDocument {
    policy_name: String,
    policy_document: Value,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct Attached {
    policy_arn: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct Boundary {
    permissions_boundary_arn: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct UserDetail {
    user_name: String,
    arn: String,
    create_date: Option<String>,
    #[serde(default)]
    user_policy_list: Vec<NamedDocument>,
    #[serde(default)]
    group_list: Vec<String>,
    #[serde(default)]
    attached_managed_policies: Vec<Attached>,
    permissions_boundary: Option<Boundary>,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct GroupDetail {
    group_name: String,
    arn: String,
    #[serde(default)]
    group_policy_list: Vec<NamedDocument>,
    #[serde(default)]
    attached_managed_policies: Vec<Attached>,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct RoleLastUsed {
    last_used_date: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct RoleDetail {
    role_name: String,
    arn: String,
    create_date: Option<String>,
    #[serde(default)]
    role_policy_list: Vec<NamedDocument>,
    #[serde(default)]
    attached_managed_policies: Vec<Attached>,
    permissions_boundary: Option<Boundary>,
    role_last_used: Option<RoleLastUsed>,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct PolicyVersion {
    document: Value,
    #[serde(default)]
    is_default_version: bool,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct PolicyDetail {
    /// Some emulators leave it out; the ARN's last part is the name.
    policy_name: Option<String>,
    arn: String,
    #[serde(default)]
    policy_version_list: Vec<PolicyVersion>,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct AccessKeyDetail {
    user_name: String,
    access_key_id: String,
    #[serde(default)]
    status: String,
    create_date: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct LoginProfileDetail {
    user_name: String,
    create_date: Option<String>,
}

/// The account id in an IAM ARN (`arn:aws:iam::123456789012:user/x`); `None` for AWS-managed policies.
pub fn arn_account(arn: &str) -> Option<&str> {
    let account = arn.split(':').nth(4)?;
    (account.len() == 12 && account.bytes().all(|b| b.is_ascii_digit())).then_some(account)
}

impl AccountInventory {
    /// Reads one account's authorization details; `origin` names the source in messages.
    pub fn from_json(text: &str, origin: &str) -> Result<AccountInventory, InventoryError> {
        let shape = |reason: String| InventoryError::Shape { origin: origin.to_owned(), reason };
        if !text.trim_start().starts_with('{') {
            return Err(shape("expected a json object".into()));
        }
        let details: Details = serde_json::from_str(text).map_err(|e| shape(e.to_string().to_lowercase()))?;
        let account_id = details
            .user_detail_list
            .iter()
            .map(|u| &u.arn)
            .chain(details.role_detail_list.iter().map(|r| &r.arn))
            .chain(details.group_detail_list.iter().map(|g| &g.arn))
            .find_map(|arn| arn_account(arn))
            .ok_or_else(|| InventoryError::NoAccount { origin: origin.to_owned() })?
            .to_owned();
        let mut problems = Vec::new();
        let mut inline = |owner: &str, list: Vec<NamedDocument>| -> Vec<InlinePolicy> {
            list.into_iter()
                .filter_map(|p| match PolicyDocument::from_value(&p.policy_document) {
                    Ok(document) => Some(InlinePolicy { name: p.policy_name, document }),
                    Err(err) => {
                        problems.push(problem(origin, &format!("{owner} inline policy {}", p.policy_name), &err));
                        None
                    }
                })
                .collect()
        };
        let arns = |list: Vec<Attached>| list.into_iter().map(|a| a.policy_arn).collect();
        let time = |t: Option<String>| t.as_deref().and_then(parse_rfc3339);
        let users: Vec<User> = details
            .user_detail_list
            .into_iter()
            .map(|u| User {
                inline: inline(&u.arn, u.user_policy_list),
                name: u.user_name,
                arn: u.arn,
                created: time(u.create_date),
                attached: arns(u.attached_managed_policies),
                groups: u.group_list,
                boundary: u.permissions_boundary.map(|b| b.permissions_boundary_arn),
            })
            .collect();
        let groups = details
            .group_detail_list
            .into_iter()
            .map(|g| {
                let group = Group {
                    inline: inline(&g.arn, g.group_policy_list),
                    name: g.group_name,
                    arn: g.arn,
                    attached: arns(g.attached_managed_policies),
                };
                (group.name.clone(), group)
            })
            .collect();
        let roles = details
            .role_detail_list
            .into_iter()
            .map(|r| Role {
                inline: inline(&r.arn, r.role_policy_list),
                name: r.role_name,
                arn: r.arn,
                created: time(r.create_date),
                attached: arns(r.attached_managed_policies),
                boundary: r.permissions_boundary.map(|b| b.permissions_boundary_arn),
                last_used: r.role_last_used.and_then(|l| time(l.last_used_date)),
            })
            .collect();
        let mut policies = BTreeMap::new();
        for p in details.policies {
            // The default version is the one in force; a listing without the flag has one version.
            let version = p.policy_version_list.iter().find(|v| v.is_default_version).or(p.policy_version_list.first());
            let Some(version) = version else {
                problems.push(format!("{origin}: managed policy {} has no version", p.arn));
                continue;
            };
            match PolicyDocument::from_value(&version.document) {
                Ok(document) => {
                    let name = p.policy_name.unwrap_or_else(|| p.arn.rsplit('/').next().unwrap_or(&p.arn).to_owned());
                    policies.insert(p.arn.clone(), ManagedPolicy { name, arn: p.arn, document });
                }
                Err(err) => problems.push(problem(origin, &format!("managed policy {}", p.arn), &err)),
            }
        }
        let access_keys = details
            .access_key_metadata
            .into_iter()
            .map(|k| AccessKey {
                id: k.access_key_id,
                user: k.user_name,
                status: k.status,
                created: time(k.create_date),
            })
            .collect();
        let login_profiles = details.login_profiles.into_iter().map(|l| (l.user_name, time(l.create_date))).collect();
        Ok(AccountInventory { account_id, users, groups, roles, policies, access_keys, login_profiles, problems })
    }

    /// The managed policy with this ARN, if the inventory has it.
    pub fn policy(&self, arn: &str) -> Option<&ManagedPolicy> {
        self.policies.get(arn)
    }
}

fn problem(origin: &str, what: &str, err: &PolicyError) -> String {
    format!("{origin}: {what}: {err}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_cli_output_with_both_document_encodings() {
        let text = r#"{
          "UserDetailList": [{"UserName": "alice", "Arn": "arn:aws:iam::111122223333:user/alice", "CreateDate": "2024-01-02T03:04:05+00:00",
            "GroupList": ["devs"], "UserPolicyList": [{"PolicyName": "inline", "PolicyDocument": "%7B%22Statement%22%3A%5B%7B%22Effect%22%3A%22Allow%22%2C%22Action%22%3A%22s3%3AListAllMyBuckets%22%2C%22Resource%22%3A%22%2A%22%7D%5D%7D"}],
            "AttachedManagedPolicies": [{"PolicyName": "ReadOnly", "PolicyArn": "arn:aws:iam::aws:policy/ReadOnlyAccess"}],
            "PermissionsBoundary": {"PermissionsBoundaryType": "Policy", "PermissionsBoundaryArn": "arn:aws:iam::111122223333:policy/boundary"}}],
          "GroupDetailList": [{"GroupName": "devs", "Arn": "arn:aws:iam::111122223333:group/devs", "GroupPolicyList": [], "AttachedManagedPolicies": []}],
          "RoleDetailList": [{"RoleName": "app", "Arn": "arn:aws:iam::111122223333:role/svc/app", "RolePolicyList": [{"PolicyName": "bad", "PolicyDocument": {"Statement": {"Effect": "Maybe", "Action": "*"}}}],
            "RoleLastUsed": {"LastUsedDate": "2026-09-01T00:00:00Z", "Region": "eu-west-1"}}],
          "Policies": [{"PolicyName": "boundary", "Arn": "arn:aws:iam::111122223333:policy/boundary", "PolicyVersionList": [
              {"Document": {"Statement": [{"Effect": "Allow", "Action": "s3:*", "Resource": "*"}]}, "VersionId": "v2", "IsDefaultVersion": true},
              {"Document": {"Statement": [{"Effect": "Allow", "Action": "*", "Resource": "*"}]}, "VersionId": "v1", "IsDefaultVersion": false}]}],
          "AccessKeyMetadata": [{"UserName": "alice", "AccessKeyId": "AKIAEXAMPLE1", "Status": "Active", "CreateDate": "2025-01-01T00:00:00Z"}],
          "LoginProfiles": [{"UserName": "alice", "CreateDate": "2024-01-02T03:04:05Z", "PasswordResetRequired": false}]
        }"#;
        let inv = AccountInventory::from_json(text, "account.json").unwrap();
        assert_eq!(inv.account_id, "111122223333");
        let alice = &inv.users[0];
        assert_eq!(
            (alice.name.as_str(), alice.groups.clone(), alice.created),
            ("alice", vec!["devs".to_owned()], Some(1_704_164_645))
        );
        assert!(alice.inline[0].document.statements[0].actions.matches("s3:ListAllMyBuckets"));
        assert_eq!(alice.boundary.as_deref(), Some("arn:aws:iam::111122223333:policy/boundary"));
        // The default version is read, not the first listed.
        let boundary = inv.policy("arn:aws:iam::111122223333:policy/boundary").unwrap();
        assert!(!boundary.document.statements[0].actions.matches("iam:CreateUser"));
        // The unreadable inline policy is reported and left out; the role still loads.
        assert_eq!(inv.roles[0].inline.len(), 0);
        assert_eq!(inv.roles[0].last_used, parse_rfc3339("2026-09-01T00:00:00Z"));
        assert_eq!(inv.problems.len(), 1, "{:?}", inv.problems);
        assert!(
            inv.problems[0]
                .starts_with("account.json: arn:aws:iam::111122223333:role/svc/app inline policy bad: statement 0")
        );
        assert_eq!(inv.access_keys[0].status, "Active");
        assert!(inv.login_profiles.contains_key("alice"));
    }

    #[test]
    fn documents_that_are_not_authorization_details_are_refused() {
        let cases = [
            ("[]", "x.json: not an authorization-details document"),
            (r#"{"UserDetailList": 3}"#, "x.json: not an authorization-details document"),
            (r#"{"Policies": []}"#, "x.json: no user, group or role names an account"),
        ];
        for (text, expected) in cases {
            let err = AccountInventory::from_json(text, "x.json").unwrap_err().to_string();
            assert!(err.starts_with(expected), "{text}: {err}");
        }
    }
}
