//! The built-in rules against matching and non-matching events: each case is a record (a default IAM user call,
//! with the case's top-level fields replacing the defaults) and exactly the rule ids it must match.

use serde_json::{Value, json};

use crate::detect::ruleset::{CandidateCache, RuleSet};
use crate::parse::Parser;

pub(crate) const ALICE: &str = "arn:aws:iam::111111111111:user/alice";

pub(crate) fn record(overrides: Value) -> Value {
    let mut record = json!({
        "eventVersion": "1.09",
        "eventTime": "2026-10-01T12:00:00Z",
        "eventSource": "ec2.amazonaws.com",
        "eventName": "DescribeInstances",
        "awsRegion": "eu-west-1",
        "sourceIPAddress": "198.51.100.7",
        "userAgent": "aws-cli/2.15.0 Python/3.11 Linux/6.1 exe/x86_64",
        "eventID": "00000000-0000-0000-0000-000000000001",
        "eventType": "AwsApiCall",
        "recipientAccountId": "111111111111",
        "userIdentity": {"type": "IAMUser", "arn": ALICE, "accountId": "111111111111", "userName": "alice",
                         "principalId": "AIDAALICE", "accessKeyId": "AKIAALICE"}
    });
    for (key, value) in overrides.as_object().expect("overrides are a map") {
        record[key] = value.clone();
    }
    record
}

/// The ids of the built-in event rules that match `record`.
fn matched(rules: &RuleSet, record: &Value) -> Vec<String> {
    let file = json!({"Records": [record]}).to_string();
    let mut out = Vec::new();
    Parser::default()
        .parse_unpadded(file.as_bytes(), &mut |event, rec| {
            for rule in rules.matching(event, rec, &mut CandidateCache::default()) {
                out.push(rules.rule(rule).id.clone());
            }
        })
        .unwrap_or_else(|e| panic!("{record}: {e}"));
    out.sort();
    out
}

pub(crate) fn root() -> Value {
    json!({"type": "Root", "arn": "arn:aws:iam::111111111111:root", "accountId": "111111111111",
           "principalId": "111111111111"})
}

fn role_session() -> Value {
    json!({"type": "AssumedRole", "arn": "arn:aws:sts::111111111111:assumed-role/deploy/ci-42",
           "accountId": "111111111111", "principalId": "AROADEPLOY:ci-42",
           "sessionContext": {"sessionIssuer": {"type": "Role", "arn": "arn:aws:iam::111111111111:role/deploy",
                                                "accountId": "111111111111", "userName": "deploy"}}})
}

#[test]
fn builtin_rules_match_exactly_what_they_describe() {
    let (rules, errors) = RuleSet::load(true, &[]);
    assert_eq!(errors, [], "built-in rules load");
    let iam = |name: &str, params: Value| json!({"eventSource": "iam.amazonaws.com", "eventName": name, "requestParameters": params});
    let cases: Vec<(Value, &[&str])> = vec![
        // Clean traffic.
        (json!({}), &[]),
        (json!({"eventSource": "s3.amazonaws.com", "eventName": "GetObject"}), &[]),
        // root-account-usage
        (json!({"userIdentity": root()}), &["root-account-usage"]),
        (
            json!({"userIdentity": {"type": "Root", "accountId": "111111111111", "invokedBy": "support.amazonaws.com"}}),
            &[],
        ),
        (json!({"userIdentity": root(), "eventType": "AwsServiceEvent"}), &[]),
        // root-access-key-created
        (
            json!({"userIdentity": root(), "eventSource": "iam.amazonaws.com", "eventName": "CreateAccessKey"}),
            &["root-access-key-created", "root-account-usage"],
        ),
        (
            json!({"userIdentity": root(), "eventSource": "iam.amazonaws.com", "eventName": "CreateAccessKey",
                   "errorCode": "LimitExceeded"}),
            &["root-account-usage"],
        ),
        (
            json!({"userIdentity": root(), "eventSource": "iam.amazonaws.com", "eventName": "CreateAccessKey",
                   "requestParameters": {"userName": "bob"}}),
            &["access-key-created-for-other-user", "root-account-usage"],
        ),
        // console-login-without-mfa
        (
            json!({"eventSource": "signin.amazonaws.com", "eventName": "ConsoleLogin",
                   "responseElements": {"ConsoleLogin": "Success"}, "additionalEventData": {"MFAUsed": "No"}}),
            &["console-login-without-mfa"],
        ),
        (
            json!({"eventSource": "signin.amazonaws.com", "eventName": "ConsoleLogin", "userIdentity": root(),
                   "responseElements": {"ConsoleLogin": "Success"}}),
            &["console-login-without-mfa", "root-account-usage"],
        ),
        (
            json!({"eventSource": "signin.amazonaws.com", "eventName": "ConsoleLogin",
                   "responseElements": {"ConsoleLogin": "Success"}, "additionalEventData": {"MFAUsed": "Yes"}}),
            &[],
        ),
        (
            json!({"eventSource": "signin.amazonaws.com", "eventName": "ConsoleLogin", "userIdentity": role_session(),
                   "responseElements": {"ConsoleLogin": "Success"}, "additionalEventData": {"MFAUsed": "No"}}),
            &[],
        ),
        // console-login-failure (the base of console-login-failures)
        (
            json!({"eventSource": "signin.amazonaws.com", "eventName": "ConsoleLogin",
                   "responseElements": {"ConsoleLogin": "Failure"}, "errorMessage": "Failed authentication"}),
            &["console-login-failure"],
        ),
        // unauthorized-api-call (the base of unauthorized-api-calls)
        (json!({"errorCode": "Client.UnauthorizedOperation"}), &["unauthorized-api-call"]),
        (json!({"errorCode": "AccessDenied"}), &["unauthorized-api-call"]),
        (json!({"errorCode": "AccessDeniedException"}), &["unauthorized-api-call"]),
        (json!({"errorCode": "ThrottlingException"}), &[]),
        // cloudtrail-tampering
        (json!({"eventSource": "cloudtrail.amazonaws.com", "eventName": "StopLogging"}), &["cloudtrail-tampering"]),
        (
            json!({"eventSource": "cloudtrail.amazonaws.com", "eventName": "PutEventSelectors"}),
            &["cloudtrail-tampering"],
        ),
        (json!({"eventSource": "cloudtrail.amazonaws.com", "eventName": "StartLogging"}), &[]),
        (json!({"eventSource": "cloudtrail.amazonaws.com", "eventName": "LookupEvents"}), &[]),
        // security-tooling-disabled
        (
            json!({"eventSource": "guardduty.amazonaws.com", "eventName": "DeleteDetector"}),
            &["security-tooling-disabled"],
        ),
        (
            json!({"eventSource": "guardduty.amazonaws.com", "eventName": "UpdateDetector",
                   "requestParameters": {"detectorId": "d1", "enable": false}}),
            &["security-tooling-disabled"],
        ),
        (
            json!({"eventSource": "guardduty.amazonaws.com", "eventName": "UpdateDetector",
                   "requestParameters": {"detectorId": "d1", "enable": true}}),
            &[],
        ),
        (
            json!({"eventSource": "config.amazonaws.com", "eventName": "StopConfigurationRecorder"}),
            &["security-tooling-disabled"],
        ),
        (
            json!({"eventSource": "securityhub.amazonaws.com", "eventName": "DisableSecurityHub"}),
            &["security-tooling-disabled"],
        ),
        (json!({"eventSource": "ec2.amazonaws.com", "eventName": "DeleteFlowLogs"}), &["security-tooling-disabled"]),
        (json!({"eventSource": "macie2.amazonaws.com", "eventName": "DisableMacie"}), &["security-tooling-disabled"]),
        (json!({"eventSource": "config.amazonaws.com", "eventName": "PutConfigRule"}), &[]),
        // admin-policy-attached, user-policy-attached
        (
            iam(
                "AttachRolePolicy",
                json!({"roleName": "r", "policyArn": "arn:aws:iam::aws:policy/AdministratorAccess"}),
            ),
            &["admin-policy-attached"],
        ),
        (
            iam(
                "AttachGroupPolicy",
                json!({"groupName": "g", "policyArn": "arn:aws:iam::aws:policy/AmazonS3FullAccess"}),
            ),
            &["admin-policy-attached"],
        ),
        (
            iam(
                "AttachUserPolicy",
                json!({"userName": "bob", "policyArn": "arn:aws:iam::aws:policy/AdministratorAccess"}),
            ),
            &["admin-policy-attached", "user-policy-attached"],
        ),
        (iam("AttachRolePolicy", json!({"roleName": "r", "policyArn": "arn:aws:iam::aws:policy/ReadOnlyAccess"})), &[]),
        (
            iam(
                "PutRolePolicy",
                json!({"roleName": "r", "policyName": "p",
                "policyDocument": "{\n  \"Version\": \"2012-10-17\",\n  \"Statement\": [{\"Effect\": \"Allow\", \"Action\": \"*\", \"Resource\": [\"*\"]}]\n}"}),
            ),
            &["admin-policy-attached"],
        ),
        (
            iam(
                "PutRolePolicy",
                json!({"roleName": "r", "policyName": "p",
                "policyDocument": "{\"Statement\":[{\"Effect\":\"Allow\",\"Action\":\"s3:*\",\"Resource\":\"*\"}]}"}),
            ),
            &[],
        ),
        (
            iam(
                "PutUserPolicy",
                json!({"userName": "bob", "policyName": "p",
                "policyDocument": "{\"Statement\":[{\"Effect\":\"Allow\",\"Action\":\"s3:GetObject\",\"Resource\":\"*\"}]}"}),
            ),
            &["user-policy-attached"],
        ),
        // access-key-created-for-other-user, login-profile-changed-for-other-user
        (iam("CreateAccessKey", json!({"userName": "bob"})), &["access-key-created-for-other-user"]),
        (iam("CreateAccessKey", json!({"userName": "alice"})), &[]),
        (iam("CreateAccessKey", json!(null)), &[]),
        (iam("UpdateLoginProfile", json!({"userName": "bob"})), &["login-profile-changed-for-other-user"]),
        (iam("UpdateLoginProfile", json!({"userName": "alice"})), &[]),
        (
            json!({"eventSource": "iam.amazonaws.com", "eventName": "CreateLoginProfile", "userIdentity": role_session(),
                   "requestParameters": {"userName": "alice"}}),
            &["login-profile-changed-for-other-user"],
        ),
        // mfa-device-removed
        (
            iam("DeactivateMFADevice", json!({"userName": "bob", "serialNumber": "arn:aws:iam::1:mfa/bob"})),
            &["mfa-device-removed"],
        ),
        (iam("DeleteVirtualMFADevice", json!({"serialNumber": "arn:aws:iam::1:mfa/bob"})), &["mfa-device-removed"]),
        (iam("EnableMFADevice", json!({"userName": "bob"})), &[]),
        // password-policy-weakened
        (iam("DeleteAccountPasswordPolicy", json!(null)), &["password-policy-weakened"]),
        (
            iam(
                "UpdateAccountPasswordPolicy",
                json!({"minimumPasswordLength": 8, "requireSymbols": true,
                "requireNumbers": true, "requireUppercaseCharacters": true, "requireLowercaseCharacters": true}),
            ),
            &["password-policy-weakened"],
        ),
        (
            iam(
                "UpdateAccountPasswordPolicy",
                json!({"minimumPasswordLength": 14, "requireSymbols": false,
                "requireNumbers": true, "requireUppercaseCharacters": true, "requireLowercaseCharacters": true}),
            ),
            &["password-policy-weakened"],
        ),
        (
            iam(
                "UpdateAccountPasswordPolicy",
                json!({"minimumPasswordLength": 16, "requireSymbols": true,
                "requireNumbers": true, "requireUppercaseCharacters": true, "requireLowercaseCharacters": true}),
            ),
            &[],
        ),
        // kms-key-disabled-or-deleted
        (
            json!({"eventSource": "kms.amazonaws.com", "eventName": "ScheduleKeyDeletion"}),
            &["kms-key-disabled-or-deleted"],
        ),
        (json!({"eventSource": "kms.amazonaws.com", "eventName": "DisableKey"}), &["kms-key-disabled-or-deleted"]),
        (json!({"eventSource": "kms.amazonaws.com", "eventName": "Decrypt"}), &[]),
        // s3-bucket-policy-changed, s3-public-access-block-removed
        (json!({"eventSource": "s3.amazonaws.com", "eventName": "PutBucketPolicy"}), &["s3-bucket-policy-changed"]),
        (
            json!({"eventSource": "s3.amazonaws.com", "eventName": "DeleteBucketReplication"}),
            &["s3-bucket-policy-changed"],
        ),
        (json!({"eventSource": "s3.amazonaws.com", "eventName": "GetBucketPolicy"}), &[]),
        (
            json!({"eventSource": "s3.amazonaws.com", "eventName": "DeleteBucketPublicAccessBlock"}),
            &["s3-public-access-block-removed"],
        ),
        (
            json!({"eventSource": "s3.amazonaws.com", "eventName": "PutBucketPublicAccessBlock", "requestParameters":
                {"bucketName": "b", "PublicAccessBlockConfiguration": {"BlockPublicAcls": true, "IgnorePublicAcls": true,
                 "BlockPublicPolicy": false, "RestrictPublicBuckets": true}}}),
            &["s3-public-access-block-removed"],
        ),
        (
            json!({"eventSource": "s3.amazonaws.com", "eventName": "PutBucketPublicAccessBlock", "requestParameters":
                {"bucketName": "b", "PublicAccessBlockConfiguration": {"BlockPublicAcls": true, "IgnorePublicAcls": true,
                 "BlockPublicPolicy": true, "RestrictPublicBuckets": true}}}),
            &[],
        ),
        // network-config-changed
        (json!({"eventName": "AuthorizeSecurityGroupIngress"}), &["network-config-changed"]),
        (json!({"eventName": "CreateRoute"}), &["network-config-changed"]),
        (json!({"eventName": "ModifyVpcAttribute"}), &["network-config-changed"]),
        (json!({"eventName": "AuthorizeSecurityGroupIngress", "errorCode": "InvalidPermission.Duplicate"}), &[]),
        (json!({"eventName": "DescribeSecurityGroups"}), &[]),
        // organizations-changed
        (
            json!({"eventSource": "organizations.amazonaws.com", "eventName": "LeaveOrganization"}),
            &["organizations-changed"],
        ),
        (json!({"eventSource": "organizations.amazonaws.com", "eventName": "DescribeOrganization"}), &[]),
        (json!({"eventSource": "iam.amazonaws.com", "eventName": "CreatePolicy"}), &[]),
        // pentest-user-agent
        (
            json!({"userAgent": "Boto3/1.34.1 Python/3.11 Linux/6.6.9-amd64-kali Botocore/1.34.1"}),
            &["pentest-user-agent"],
        ),
        (json!({"userAgent": "aws-sdk-go/1.44 (go1.21; linux; amd64) Pacu"}), &["pentest-user-agent"]),
        (json!({"userAgent": "TruffleHog"}), &["pentest-user-agent"]),
        (json!({"userAgent": "Mozilla/5.0 (Macintosh) console.aws.amazon.com"}), &[]),
    ];
    let mut covered = std::collections::BTreeSet::new();
    for (overrides, want) in &cases {
        let record = record(overrides.clone());
        assert_eq!(matched(&rules, &record), *want, "{overrides}");
        covered.extend(want.iter().copied());
    }
    // Every built-in event rule has a positive case here (correlations are tested in the alert stage).
    for rule in rules.rules() {
        if matches!(rule.body, crate::detect::rule::RuleBody::Event(_)) {
            assert!(covered.contains(rule.id.as_str()), "no matching case for `{}`", rule.id);
        }
    }
}

/// An empty string is a value: Sigma's `null` matches an absent field only and `''` the empty string only, for the
/// fields read from the parsed event (a candidate-key field, a remembered one, another) as for any other.
#[test]
fn an_empty_string_is_a_value_not_an_absent_field() {
    let mut yaml = String::new();
    for (id, field, value) in [
        ("null-error", "errorCode", "null"),
        ("empty-error", "errorCode", "''"),
        ("null-agent", "userAgent", "null"),
        ("empty-agent", "userAgent", "''"),
        ("null-id", "eventID", "null"),
        ("empty-id", "eventID", "''"),
        ("null-shared", "sharedEventID", "null"),
        ("empty-shared", "sharedEventID", "''"),
    ] {
        yaml.push_str(&format!(
            "title: {id}\nid: {id}\nlogsource:\n    product: aws\n    service: cloudtrail\ndetection:\n    selection:\n        \
             {field}: {value}\n    condition: selection\nlevel: low\n---\n"
        ));
    }
    let rules = RuleSet::build(crate::detect::rule::load(&yaml, "test").into_iter().map(Result::unwrap).collect()).0;
    let cases = [
        (json!({}), vec!["null-error", "null-shared"]),
        (json!({"errorCode": ""}), vec!["empty-error", "null-shared"]),
        (json!({"errorCode": "AccessDenied"}), vec!["null-shared"]),
        (json!({"userAgent": ""}), vec!["empty-agent", "null-error", "null-shared"]),
        (json!({"userAgent": null}), vec!["null-agent", "null-error", "null-shared"]),
        (json!({"eventID": ""}), vec!["empty-id", "null-error", "null-shared"]),
        (json!({"sharedEventID": ""}), vec!["empty-shared", "null-error"]),
    ];
    for (overrides, want) in cases {
        assert_eq!(matched(&rules, &record(overrides.clone())), want, "{overrides}");
    }
}
