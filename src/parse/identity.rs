//! Identity keying: one canonical principal per event, so state is kept per identity and never per session.
//!
//! Assumed-role sessions fold into their role (the session name is kept as detail), federated users into the user
//! that issued them, AWS services into `service:<invokedBy>`. See docs/reports.md, "What is counted how".

use crate::parse::record::RawIdentity;

/// The principal an event is attributed to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Principal<'a> {
    pub key: PrincipalKey<'a>,
    /// The identity type of the principal (`IAMUser`, `Role`, `Root`, `AWSService`, ...).
    pub kind: &'a str,
    pub account: Option<&'a str>,
    /// For an assumed role: the role session name.
    pub session: Option<&'a str>,
}

/// A principal's canonical name, kept in borrowed parts so that resolving it allocates nothing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PrincipalKey<'a> {
    /// An ARN used as it is.
    Arn(&'a str),
    /// `arn:<partition>:iam::<account>:root`.
    Root { partition: &'a str, account: &'a str },
    /// `arn:<partition>:iam::<account>:role/<name>`, for a session whose issuer is missing (the path is unknown).
    Role { partition: &'a str, account: &'a str, name: &'a str },
    /// `arn:aws:iam::<account>:user/<name>`, for an IAM user event without an ARN.
    User { account: &'a str, name: &'a str },
    /// `<prefix>:<id>`: `service:`, `account:`, or `principal-id:` when nothing better is known.
    Prefixed { prefix: &'static str, id: &'a str },
}

impl PrincipalKey<'_> {
    /// Appends the canonical principal string to `out` (plain pushes: this runs once per record).
    pub fn write_to(&self, out: &mut String) {
        for part in self.parts() {
            out.push_str(part);
        }
    }

    /// The canonical principal string in pieces, to be appended in order.
    pub fn parts(&self) -> [&str; 7] {
        match *self {
            PrincipalKey::Arn(arn) => [arn, "", "", "", "", "", ""],
            PrincipalKey::Root { partition, account } => ["arn:", partition, ":iam::", account, ":root", "", ""],
            PrincipalKey::Role { partition, account, name } => {
                ["arn:", partition, ":iam::", account, ":role/", name, ""]
            }
            PrincipalKey::User { account, name } => ["arn:aws:iam::", account, ":user/", name, "", "", ""],
            PrincipalKey::Prefixed { prefix, id } => [prefix, ":", id, "", "", "", ""],
        }
    }

    pub fn to_canonical(&self) -> String {
        let mut out = String::new();
        self.write_to(&mut out);
        out
    }
}

/// Account id (fifth field) of an ARN.
pub fn arn_account(arn: &str) -> Option<&str> {
    arn.split(':').nth(4).filter(|a| !a.is_empty())
}

fn arn_partition(arn: &str) -> &str {
    arn.split(':').nth(1).filter(|p| !p.is_empty()).unwrap_or("aws")
}

/// `arn:aws:sts::123:assumed-role/Role/Session` → (`Role`, `Session`).
fn assumed_role_parts(arn: &str) -> Option<(&str, &str)> {
    let resource = arn.splitn(6, ':').nth(5)?;
    let rest = resource.strip_prefix("assumed-role/")?;
    let (role, session) = rest.rsplit_once('/')?;
    // Role names cannot hold `/`, but paths are not in this ARN; take the last role segment to be safe.
    let role = role.rsplit('/').next()?;
    (!role.is_empty() && !session.is_empty()).then_some((role, session))
}

// CloudTrail replaces unknown user names in failed sign-ins with this marker; it names nobody.
const HIDDEN_USER: &str = "HIDDEN_DUE_TO_SECURITY_REASONS";

/// Resolves the principal of a record's `userIdentity`; `None` when nothing identifies anyone.
pub fn resolve<'a>(identity: &RawIdentity<'a>, recipient_account: Option<&'a str>) -> Option<Principal<'a>> {
    let kind = identity.kind.get();
    let arn = identity.arn.get();
    let account = identity.account_id.get().or_else(|| arn.and_then(arn_account));
    let issuer = identity.session_context.get().and_then(|c| c.session_issuer.get());
    let principal = |key, kind, account| Some(Principal { key, kind, account, session: None });
    match kind {
        Some("IAMUser") => match (arn, account, identity.user_name.get()) {
            (Some(arn), _, _) => principal(PrincipalKey::Arn(arn), "IAMUser", arn_account(arn).or(account)),
            (None, Some(account), Some(name)) if name != HIDDEN_USER => {
                principal(PrincipalKey::User { account, name }, "IAMUser", Some(account))
            }
            _ => fallback(identity, "IAMUser", account),
        },
        Some("AssumedRole") => {
            let session = arn.and_then(assumed_role_parts).map(|(_, s)| s);
            let resolved = match issuer.and_then(|i| i.arn.get()) {
                Some(role_arn) => Principal {
                    key: PrincipalKey::Arn(role_arn),
                    kind: "Role",
                    account: arn_account(role_arn).or(account),
                    session,
                },
                None => match (arn, arn.and_then(assumed_role_parts), arn.and_then(arn_account)) {
                    (Some(arn), Some((name, session)), Some(acct)) => Principal {
                        key: PrincipalKey::Role { partition: arn_partition(arn), account: acct, name },
                        kind: "Role",
                        account: Some(acct),
                        session: Some(session),
                    },
                    _ => return fallback(identity, "Role", account),
                },
            };
            Some(resolved)
        }
        Some("Root") => match (arn, account) {
            (Some(arn), _) => principal(PrincipalKey::Arn(arn), "Root", arn_account(arn).or(account)),
            (None, Some(account)) => principal(PrincipalKey::Root { partition: "aws", account }, "Root", Some(account)),
            (None, None) => None,
        },
        Some("FederatedUser") => match issuer.and_then(|i| i.arn.get()) {
            Some(issuer_arn) => {
                let issuer_kind = issuer.and_then(|i| i.kind.get()).unwrap_or("IAMUser");
                principal(PrincipalKey::Arn(issuer_arn), issuer_kind, arn_account(issuer_arn).or(account))
            }
            None => match arn {
                Some(arn) => principal(PrincipalKey::Arn(arn), "FederatedUser", account),
                None => fallback(identity, "FederatedUser", account),
            },
        },
        Some("AWSService") => service(identity),
        Some("AWSAccount") => match account.or(recipient_account) {
            Some(id) => principal(PrincipalKey::Prefixed { prefix: "account", id }, "AWSAccount", Some(id)),
            None => fallback(identity, "AWSAccount", None),
        },
        Some(other) => match arn {
            // IdentityCenterUser, SAMLUser, WebIdentityUser and types AWS adds later: their ARN when they have one.
            Some(arn) => principal(PrincipalKey::Arn(arn), other, arn_account(arn).or(account)),
            // SAML and web-identity users carry no account: they act in the account that logged the event.
            None => fallback(identity, other, account.or(recipient_account)),
        },
        // Service events often carry a `userIdentity` with `invokedBy` but no `type`.
        None if identity.invoked_by.get().is_some() => service(identity),
        None => match arn {
            Some(arn) => principal(PrincipalKey::Arn(arn), "Unknown", arn_account(arn).or(account)),
            None => fallback(identity, "Unknown", account),
        },
    }
}

fn service<'a>(identity: &RawIdentity<'a>) -> Option<Principal<'a>> {
    let id = identity.invoked_by.get().or_else(|| identity.principal_id.get())?;
    // A service acts across accounts, so a service principal belongs to none.
    Some(Principal {
        key: PrincipalKey::Prefixed { prefix: "service", id },
        kind: "AWSService",
        account: None,
        session: None,
    })
}

/// A stable id for identities without an ARN: the principal id, or Identity Center's user id.
fn fallback<'a>(identity: &RawIdentity<'a>, kind: &'a str, account: Option<&'a str>) -> Option<Principal<'a>> {
    let id = identity.principal_id.get().or_else(|| identity.on_behalf_of.get().and_then(|o| o.user_id.get()))?;
    Some(Principal { key: PrincipalKey::Prefixed { prefix: "principal-id", id }, kind, account, session: None })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[track_caller]
    fn check(identity_json: &str, expected: Option<(&str, &str, Option<&str>, Option<&str>)>) {
        let mut buf = identity_json.as_bytes().to_vec();
        let tape = simd_json::to_tape(&mut buf).unwrap();
        let record = crate::parse::lenient::Json::root(&tape.0).unwrap();
        let identity = RawIdentity::read(record).unwrap();
        let got = resolve(&identity, Some("999999999999"));
        let got = got.as_ref().map(|p| (p.key.to_canonical(), p.kind, p.account, p.session));
        let expected = expected.map(|(k, kind, acct, sess)| (k.to_owned(), kind, acct, sess));
        assert_eq!(got, expected, "identity {identity_json}");
    }

    #[test]
    fn every_identity_type() {
        check(
            r#"{"type":"IAMUser","principalId":"AIDA1","arn":"arn:aws:iam::111111111111:user/alice","accountId":"111111111111","accessKeyId":"AKIA1","userName":"alice"}"#,
            Some(("arn:aws:iam::111111111111:user/alice", "IAMUser", Some("111111111111"), None)),
        );
        check(
            r#"{"type":"IAMUser","principalId":"AIDA2","accountId":"111111111111","userName":"bob"}"#,
            Some(("arn:aws:iam::111111111111:user/bob", "IAMUser", Some("111111111111"), None)),
        );
        check(
            r#"{"type":"IAMUser","principalId":"AIDA3","accountId":"111111111111","userName":"HIDDEN_DUE_TO_SECURITY_REASONS"}"#,
            Some(("principal-id:AIDA3", "IAMUser", Some("111111111111"), None)),
        );
        check(
            r#"{"type":"AssumedRole","principalId":"AROA1:s1","arn":"arn:aws:sts::222222222222:assumed-role/Deploy/s1","accountId":"222222222222","sessionContext":{"sessionIssuer":{"type":"Role","principalId":"AROA1","arn":"arn:aws:iam::222222222222:role/ci/Deploy","accountId":"222222222222","userName":"Deploy"}}}"#,
            Some(("arn:aws:iam::222222222222:role/ci/Deploy", "Role", Some("222222222222"), Some("s1"))),
        );
        check(
            r#"{"type":"AssumedRole","arn":"arn:aws:sts::222222222222:assumed-role/Deploy/i-0abc"}"#,
            Some(("arn:aws:iam::222222222222:role/Deploy", "Role", Some("222222222222"), Some("i-0abc"))),
        );
        check(
            r#"{"type":"AssumedRole","arn":"arn:aws-cn:sts::222222222222:assumed-role/Deploy/x","sessionContext":null}"#,
            Some(("arn:aws-cn:iam::222222222222:role/Deploy", "Role", Some("222222222222"), Some("x"))),
        );
        check(
            r#"{"type":"Root","principalId":"333333333333","arn":"arn:aws:iam::333333333333:root","accountId":"333333333333"}"#,
            Some(("arn:aws:iam::333333333333:root", "Root", Some("333333333333"), None)),
        );
        check(
            r#"{"type":"Root","accountId":"333333333333"}"#,
            Some(("arn:aws:iam::333333333333:root", "Root", Some("333333333333"), None)),
        );
        check(
            r#"{"type":"FederatedUser","arn":"arn:aws:sts::444444444444:federated-user/carol","accountId":"444444444444","sessionContext":{"sessionIssuer":{"type":"IAMUser","arn":"arn:aws:iam::444444444444:user/carol-issuer"}}}"#,
            Some(("arn:aws:iam::444444444444:user/carol-issuer", "IAMUser", Some("444444444444"), None)),
        );
        check(
            r#"{"type":"FederatedUser","arn":"arn:aws:sts::444444444444:federated-user/carol","accountId":"444444444444"}"#,
            Some(("arn:aws:sts::444444444444:federated-user/carol", "FederatedUser", Some("444444444444"), None)),
        );
        check(
            r#"{"type":"AWSService","invokedBy":"cloudtrail.amazonaws.com"}"#,
            Some(("service:cloudtrail.amazonaws.com", "AWSService", None, None)),
        );
        check(
            r#"{"accountId":"555555555555","invokedBy":"ec2.amazonaws.com"}"#,
            Some(("service:ec2.amazonaws.com", "AWSService", None, None)),
        );
        check(
            r#"{"type":"AWSAccount","principalId":"AIDAX","accountId":"666666666666"}"#,
            Some(("account:666666666666", "AWSAccount", Some("666666666666"), None)),
        );
        check(
            r#"{"type":"AWSAccount","principalId":"AIDAX"}"#,
            Some(("account:999999999999", "AWSAccount", Some("999999999999"), None)),
        );
        check(
            r#"{"type":"IdentityCenterUser","accountId":"777777777777","onBehalfOf":{"userId":"u-123","identityStoreArn":"arn:aws:identitystore::777777777777:identitystore/d-1"},"credentialId":"c"}"#,
            Some(("principal-id:u-123", "IdentityCenterUser", Some("777777777777"), None)),
        );
        check(
            r#"{"type":"SAMLUser","principalId":"SAMLXYZ:dave","userName":"dave","identityProvider":"idp"}"#,
            Some(("principal-id:SAMLXYZ:dave", "SAMLUser", Some("999999999999"), None)),
        );
        check(
            r#"{"type":"WebIdentityUser","principalId":"accounts.google.com:app:sub","userName":"sub","arn":"arn:aws:sts::888888888888:web/x"}"#,
            Some(("arn:aws:sts::888888888888:web/x", "WebIdentityUser", Some("888888888888"), None)),
        );
        check(r#"{"type":"Root"}"#, None);
        check(r#"{}"#, None);
        check(r#"{"type":7,"arn":["x"],"invokedBy":false}"#, None);
    }
}
