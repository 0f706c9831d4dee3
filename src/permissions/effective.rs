//! Effective identity-based permissions of one user or role: the statements in force (inline, attached managed,
//! and for a user those of its groups), `Deny` over `Allow`, intersected with the permissions boundary.
//!
//! Action level only, as the policy module says: a `Deny` with a `Condition` or a narrower `Resource` is carried
//! (reported as not evaluated) but does not take the action away, since it may not apply to every call; an
//! `Allow` grants its actions whatever its resource or condition, since some call may pass it.

use crate::permissions::inventory::{AccountInventory, InlinePolicy, Role, User};
use crate::permissions::policy::{Effect, Statement};

/// A statement in force, with the policy it came from.
#[derive(Debug, Clone, Copy)]
pub struct Granted<'a> {
    /// The managed policy's ARN, or `<owner>:<name> (inline)`.
    pub policy: &'a str,
    pub statement: &'a Statement,
}

/// A user or a role of an inventory.
#[derive(Debug, Clone, Copy)]
pub enum Identity<'a> {
    User(&'a User),
    Role(&'a Role),
}

impl Identity<'_> {
    /// As `report identities` spells it (CloudTrail's `userIdentity.type`; an assumed role's sessions are its role).
    pub fn kind(&self) -> &'static str {
        match self {
            Identity::User(_) => "IAMUser",
            Identity::Role(_) => "Role",
        }
    }
}

/// What an identity's policies say about one action.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    Allowed,
    /// No statement allows it.
    NotAllowed,
    /// An unconditional, all-resource `Deny` names it.
    Denied,
    /// Allowed by the identity's policies but not by its boundary.
    OutsideBoundary,
}

#[derive(Debug, Default)]
pub struct Grants<'a> {
    pub statements: Vec<Granted<'a>>,
    /// The boundary's statements, when a boundary is set and the inventory has its policy.
    pub boundary: Option<Vec<Granted<'a>>>,
    /// Attached or boundary policies the inventory does not have (their grants are unknown).
    pub missing: Vec<&'a str>,
}

/// Policy labels for inline policies are built once per identity and kept here, so `Granted` can borrow them.
#[derive(Debug, Default)]
pub struct Labels {
    labels: Vec<String>,
}

impl<'a> Grants<'a> {
    /// The grants of the user or role with this ARN, if the account's inventory has it.
    pub fn of(inventory: &'a AccountInventory, arn: &str, labels: &'a mut Labels) -> Option<Grants<'a>> {
        let identity = match inventory.users.iter().find(|u| u.arn == arn) {
            Some(user) => Identity::User(user),
            None => Identity::Role(inventory.roles.iter().find(|r| r.arn == arn)?),
        };
        Some(Grants::of_identity(inventory, identity, labels))
    }

    /// The grants of an identity of `inventory` (found by the caller, who may have indexed them).
    pub fn of_identity(inventory: &'a AccountInventory, identity: Identity<'a>, labels: &'a mut Labels) -> Grants<'a> {
        // Labels first (they need `&mut`), then borrow them for the grants.
        let mut inline: Vec<(String, &'a InlinePolicy)> = Vec::new();
        let mut attached: Vec<&'a str> = Vec::new();
        let boundary_arn = match identity {
            Identity::User(user) => {
                inline.extend(user.inline.iter().map(|p| (format!("{}:{} (inline)", user.name, p.name), p)));
                attached.extend(user.attached.iter().map(String::as_str));
                for name in &user.groups {
                    if let Some(group) = inventory.groups.get(name) {
                        inline.extend(
                            group.inline.iter().map(|p| (format!("group/{}:{} (inline)", group.name, p.name), p)),
                        );
                        attached.extend(group.attached.iter().map(String::as_str));
                    }
                }
                user.boundary.as_deref()
            }
            Identity::Role(role) => {
                inline.extend(role.inline.iter().map(|p| (format!("{}:{} (inline)", role.name, p.name), p)));
                attached.extend(role.attached.iter().map(String::as_str));
                role.boundary.as_deref()
            }
        };
        attached.sort_unstable();
        attached.dedup();
        labels.labels = inline.iter().map(|(label, _)| label.clone()).collect();
        let labels: &'a Labels = labels;
        let labels = &labels.labels;
        let mut grants = Grants::default();
        for ((_, policy), label) in inline.iter().zip(labels) {
            grants
                .statements
                .extend(policy.document.statements.iter().map(|statement| Granted { policy: label, statement }));
        }
        for arn in attached {
            match inventory.policy(arn) {
                Some(policy) => grants.statements.extend(
                    policy.document.statements.iter().map(|statement| Granted { policy: &policy.arn, statement }),
                ),
                None => grants.missing.push(arn),
            }
        }
        if let Some(arn) = boundary_arn {
            match inventory.policy(arn) {
                Some(policy) => {
                    grants.boundary = Some(
                        policy
                            .document
                            .statements
                            .iter()
                            .map(|statement| Granted { policy: &policy.arn, statement })
                            .collect(),
                    )
                }
                None => grants.missing.push(arn),
            }
        }
        grants
    }

    /// Allow statements in force.
    pub fn allows(&self) -> impl Iterator<Item = &Granted<'a>> {
        self.statements.iter().filter(|g| g.statement.effect == Effect::Allow)
    }

    /// Deny statements with a condition or a narrower resource: carried, not applied.
    pub fn scoped_denies(&self) -> impl Iterator<Item = &Granted<'a>> {
        self.statements
            .iter()
            .chain(self.boundary.iter().flatten())
            .filter(|g| g.statement.effect == Effect::Deny && !certain(g.statement))
    }

    pub fn decide(&self, action: &str) -> Decision {
        if denies(&self.statements, action) || self.boundary.as_deref().is_some_and(|b| denies(b, action)) {
            return Decision::Denied;
        }
        if !allows(&self.statements, action) {
            return Decision::NotAllowed;
        }
        match &self.boundary {
            Some(boundary) if !allows(boundary, action) => Decision::OutsideBoundary,
            _ => Decision::Allowed,
        }
    }
}

/// A statement that applies to every call of its actions.
fn certain(statement: &Statement) -> bool {
    !statement.conditional && !statement.resource_scoped
}

fn denies(statements: &[Granted<'_>], action: &str) -> bool {
    statements
        .iter()
        .any(|g| g.statement.effect == Effect::Deny && certain(g.statement) && g.statement.actions.matches(action))
}

fn allows(statements: &[Granted<'_>], action: &str) -> bool {
    statements.iter().any(|g| g.statement.effect == Effect::Allow && g.statement.actions.matches(action))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An account where each identity exercises one rule of the evaluation.
    pub const ACCOUNT: &str = r#"{
      "UserDetailList": [
        {"UserName": "grouped", "Arn": "arn:aws:iam::111122223333:user/grouped", "GroupList": ["readers", "gone"],
         "UserPolicyList": [{"PolicyName": "own", "PolicyDocument": {"Statement": [{"Effect": "Allow", "Action": "sqs:SendMessage", "Resource": "*"}]}}]},
        {"UserName": "bounded", "Arn": "arn:aws:iam::111122223333:user/bounded",
         "AttachedManagedPolicies": [{"PolicyName": "AdministratorAccess", "PolicyArn": "arn:aws:iam::aws:policy/AdministratorAccess"}],
         "PermissionsBoundary": {"PermissionsBoundaryType": "Policy", "PermissionsBoundaryArn": "arn:aws:iam::111122223333:policy/s3-only"}},
        {"UserName": "lost", "Arn": "arn:aws:iam::111122223333:user/lost",
         "AttachedManagedPolicies": [{"PolicyName": "Deleted", "PolicyArn": "arn:aws:iam::111122223333:policy/deleted"}]}
      ],
      "GroupDetailList": [
        {"GroupName": "readers", "Arn": "arn:aws:iam::111122223333:group/readers",
         "AttachedManagedPolicies": [{"PolicyName": "read", "PolicyArn": "arn:aws:iam::111122223333:policy/read"}]}
      ],
      "RoleDetailList": [
        {"RoleName": "ops", "Arn": "arn:aws:iam::111122223333:role/ops",
         "RolePolicyList": [{"PolicyName": "ops", "PolicyDocument": {"Statement": [
            {"Effect": "Allow", "NotAction": ["iam:*", "organizations:*"], "Resource": "*"},
            {"Effect": "Allow", "Action": "iam:Get*", "Resource": "*"},
            {"Effect": "Deny", "Action": "ec2:TerminateInstances", "Resource": "*"},
            {"Effect": "Deny", "Action": "s3:DeleteBucket", "Resource": "arn:aws:s3:::logs"},
            {"Effect": "Deny", "Action": "kms:*", "Resource": "*", "Condition": {"Bool": {"aws:ViaAWSService": "false"}}}
         ]}}]}
      ],
      "Policies": [
        {"PolicyName": "read", "Arn": "arn:aws:iam::111122223333:policy/read", "PolicyVersionList": [{"IsDefaultVersion": true,
          "Document": {"Statement": [{"Effect": "Allow", "Action": ["s3:Get*", "s3:List*"], "Resource": "*"}]}}]},
        {"PolicyName": "AdministratorAccess", "Arn": "arn:aws:iam::aws:policy/AdministratorAccess", "PolicyVersionList": [{"IsDefaultVersion": true,
          "Document": {"Statement": [{"Effect": "Allow", "Action": "*", "Resource": "*"}]}}]},
        {"PolicyName": "s3-only", "Arn": "arn:aws:iam::111122223333:policy/s3-only", "PolicyVersionList": [{"IsDefaultVersion": true,
          "Document": {"Statement": [{"Effect": "Allow", "Action": "s3:*", "Resource": "*"}, {"Effect": "Deny", "Action": "s3:DeleteBucket", "Resource": "*"}]}}]}
      ]
    }"#;

    #[test]
    fn decisions_follow_groups_notaction_deny_and_boundaries() {
        let inv = AccountInventory::from_json(ACCOUNT, "t").unwrap();
        let user = |name: &str| format!("arn:aws:iam::111122223333:user/{name}");
        let role = "arn:aws:iam::111122223333:role/ops".to_owned();
        use Decision::*;
        // (identity, action, decision)
        let cases = [
            // Group inheritance: the group's managed policy and the user's own inline policy.
            (user("grouped"), "s3:GetObject", Allowed),
            (user("grouped"), "s3:ListAllMyBuckets", Allowed),
            (user("grouped"), "sqs:SendMessage", Allowed),
            (user("grouped"), "s3:PutObject", NotAllowed),
            // Boundary: `*` attached, `s3:*` minus DeleteBucket in the boundary.
            (user("bounded"), "s3:PutObject", Allowed),
            (user("bounded"), "iam:CreateUser", OutsideBoundary),
            (user("bounded"), "s3:DeleteBucket", Denied),
            // A policy missing from the inventory grants nothing known.
            (user("lost"), "s3:GetObject", NotAllowed),
            // NotAction grants everything else; a second statement adds part of what it left out.
            (role.clone(), "ec2:RunInstances", Allowed),
            (role.clone(), "iam:CreateUser", NotAllowed),
            (role.clone(), "iam:GetRole", Allowed),
            (role.clone(), "organizations:ListAccounts", NotAllowed),
            // Deny over Allow, unless the Deny is scoped or conditional (not evaluated).
            (role.clone(), "ec2:TerminateInstances", Denied),
            (role.clone(), "s3:DeleteBucket", Allowed),
            (role.clone(), "kms:Decrypt", Allowed),
        ];
        for (arn, action, expected) in cases {
            let mut labels = Labels::default();
            let grants = Grants::of(&inv, &arn, &mut labels).unwrap();
            assert_eq!(grants.decide(action), expected, "{arn} {action}");
        }
        let mut labels = Labels::default();
        let ops = Grants::of(&inv, &role, &mut labels).unwrap();
        assert_eq!(ops.scoped_denies().count(), 2);
        let mut labels = Labels::default();
        let lost = Grants::of(&inv, &user("lost"), &mut labels).unwrap();
        assert_eq!(lost.missing, ["arn:aws:iam::111122223333:policy/deleted"]);
        let mut labels = Labels::default();
        assert!(Grants::of(&inv, "arn:aws:iam::111122223333:user/nobody", &mut labels).is_none());
    }
}
