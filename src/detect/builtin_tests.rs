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
    let mut cases: Vec<(Value, &[&str])> = vec![
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
            json!({"eventSource": "organizations.amazonaws.com", "eventName": "AttachPolicy"}),
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
    cases.extend(attack_cases());
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

/// The attack-technique rules against events shaped as AWS documents them for each API (request parameters as
/// CloudTrail records them), matching and not, and the failed-attempt policy: a denied attempt at tampering,
/// persistence, escalation, exposure or execution raises the rule's alert (beside `unauthorized-api-call`); a call
/// that failed otherwise (not found, invalid, duplicate) raises nothing; a denied read raises only
/// `unauthorized-api-call`.
fn attack_cases() -> Vec<(Value, &'static [&'static str])> {
    let call = |source: &str, name: &str, params: Value| json!({"eventSource": format!("{source}.amazonaws.com"), "eventName": name, "requestParameters": params});
    let denied = |mut event: Value| {
        event["errorCode"] = json!("AccessDenied");
        event["errorMessage"] = json!("User: arn:aws:iam::111111111111:user/alice is not authorized");
        event
    };
    let failed = |mut event: Value, code: &str| {
        event["errorCode"] = json!(code);
        event
    };
    let trust = |principal: Value| {
        json!({"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Principal": principal,
               "Action": "sts:AssumeRole"}]})
        .to_string()
    };
    let external = trust(json!({"AWS": "arn:aws:iam::222222222222:root"}));
    let own = trust(json!({"AWS": "arn:aws:iam::111111111111:role/admin"}));
    let service = trust(json!({"Service": "ec2.amazonaws.com"}));
    let bucket_policy = |principal: Value| {
        json!({"bucketName": "b", "bucketPolicy": {"Version": "2012-10-17", "Statement": [{"Effect": "Allow",
               "Principal": principal, "Action": "s3:GetObject", "Resource": "arn:aws:s3:::b/*"}]}, "policy": [""]})
    };
    let instance = |instance_type: &str| {
        call(
            "ec2",
            "RunInstances",
            json!({"instancesSet": {"items": [{"imageId": "ami-1", "minCount": 1, "maxCount": 1}]},
            "instanceType": instance_type, "blockDeviceMapping": {}, "monitoring": {"enabled": false},
            "disableApiTermination": false}),
        )
    };
    vec![
        // secret-value-read (the base of secrets-read-in-bulk), secrets-batch-retrieved
        (call("secretsmanager", "GetSecretValue", json!({"secretId": "prod/db"})), &["secret-value-read"]),
        (denied(call("secretsmanager", "GetSecretValue", json!({"secretId": "prod/db"}))), &["unauthorized-api-call"]),
        (call("secretsmanager", "DescribeSecret", json!({"secretId": "prod/db"})), &[]),
        (
            call("secretsmanager", "BatchGetSecretValue", json!({"filters": [{"key": "name", "values": ["prod"]}]})),
            &["secrets-batch-retrieved"],
        ),
        (
            denied(call("secretsmanager", "BatchGetSecretValue", json!({"secretIdList": ["a"]}))),
            &["unauthorized-api-call"],
        ),
        // ssm-parameter-decrypted (the base of ssm-parameters-read-in-bulk)
        (
            call("ssm", "GetParameters", json!({"names": ["/a", "/b"], "withDecryption": true})),
            &["ssm-parameter-decrypted"],
        ),
        (call("ssm", "GetParameter", json!({"name": "/a", "withDecryption": true})), &["ssm-parameter-decrypted"]),
        (
            call("ssm", "GetParametersByPath", json!({"path": "/", "recursive": true, "withDecryption": true})),
            &["ssm-parameter-decrypted"],
        ),
        (call("ssm", "GetParameter", json!({"name": "/a", "withDecryption": false})), &[]),
        (call("ssm", "GetParameter", json!({"name": "/a"})), &[]),
        // ec2-password-or-user-data-read
        (
            call("ec2", "GetPasswordData", json!({"instanceId": "i-0123456789abcdef0"})),
            &["ec2-password-or-user-data-read"],
        ),
        (
            failed(
                call("ec2", "GetPasswordData", json!({"instanceId": "i-0123456789abcdef0"})),
                "Client.UnauthorizedOperation",
            ),
            &["ec2-password-or-user-data-read", "unauthorized-api-call"],
        ),
        (
            call(
                "ec2",
                "DescribeInstanceAttribute",
                json!({"instanceId": "i-0123456789abcdef0", "attribute": "userData"}),
            ),
            &["ec2-password-or-user-data-read"],
        ),
        (
            call(
                "ec2",
                "DescribeInstanceAttribute",
                json!({"instanceId": "i-0123456789abcdef0", "attribute": "instanceType"}),
            ),
            &[],
        ),
        (failed(call("ec2", "GetPasswordData", json!({"instanceId": "i-0"})), "InvalidInstanceID.NotFound"), &[]),
        // role-trusts-other-account
        (
            call("iam", "UpdateAssumeRolePolicy", json!({"roleName": "ops", "policyDocument": external})),
            &["role-trusts-other-account"],
        ),
        (
            call(
                "iam",
                "UpdateAssumeRolePolicy",
                json!({"roleName": "ops", "policyDocument": trust(json!({"AWS": "*"}))}),
            ),
            &["role-trusts-other-account"],
        ),
        (
            call(
                "iam",
                "UpdateAssumeRolePolicy",
                json!({"roleName": "ops",
                "policyDocument": trust(json!({"AWS": ["arn:aws:iam::111111111111:root", "*"]}))}),
            ),
            &["role-trusts-other-account"],
        ),
        (
            call(
                "iam",
                "UpdateAssumeRolePolicy",
                json!({"roleName": "ops",
                "policyDocument": "{\n  \"Statement\": [{\"Effect\": \"Allow\",\n    \"Principal\": {\"AWS\": \"222222222222\"},\n    \"Action\": \"sts:AssumeRole\"}]\n}"}),
            ),
            &["role-trusts-other-account"],
        ),
        (call("iam", "UpdateAssumeRolePolicy", json!({"roleName": "ops", "policyDocument": own})), &[]),
        (call("iam", "UpdateAssumeRolePolicy", json!({"roleName": "ops", "policyDocument": service})), &[]),
        (
            call("iam", "CreateRole", json!({"roleName": "backdoor", "assumeRolePolicyDocument": external})),
            &["role-trusts-other-account"],
        ),
        (call("iam", "CreateRole", json!({"roleName": "app", "assumeRolePolicyDocument": service})), &[]),
        (
            denied(call("iam", "UpdateAssumeRolePolicy", json!({"roleName": "ops", "policyDocument": external}))),
            &["role-trusts-other-account", "unauthorized-api-call"],
        ),
        (
            failed(
                call("iam", "UpdateAssumeRolePolicy", json!({"roleName": "ops", "policyDocument": external})),
                "NoSuchEntity",
            ),
            &[],
        ),
        // policy-version-set-as-default
        (
            call(
                "iam",
                "CreatePolicyVersion",
                json!({"policyArn": "arn:aws:iam::111111111111:policy/p",
                "policyDocument": "{}", "setAsDefault": true}),
            ),
            &["policy-version-set-as-default"],
        ),
        (
            call(
                "iam",
                "CreatePolicyVersion",
                json!({"policyArn": "arn:aws:iam::111111111111:policy/p",
                "policyDocument": "{}", "setAsDefault": false}),
            ),
            &[],
        ),
        (
            call(
                "iam",
                "SetDefaultPolicyVersion",
                json!({"policyArn": "arn:aws:iam::111111111111:policy/p", "versionId": "v1"}),
            ),
            &["policy-version-set-as-default"],
        ),
        // permissions-boundary-removed
        (call("iam", "DeleteRolePermissionsBoundary", json!({"roleName": "r"})), &["permissions-boundary-removed"]),
        (call("iam", "PutRolePermissionsBoundary", json!({"roleName": "r", "permissionsBoundary": "arn"})), &[]),
        // lambda-made-public
        (
            call(
                "lambda",
                "AddPermission20150331v2",
                json!({"functionName": "f", "statementId": "s",
                "action": "lambda:InvokeFunction", "principal": "*"}),
            ),
            &["lambda-made-public"],
        ),
        (
            call(
                "lambda",
                "AddPermission20150331v2",
                json!({"functionName": "f", "statementId": "s",
                "action": "lambda:InvokeFunction", "principal": "s3.amazonaws.com", "sourceAccount": "111111111111"}),
            ),
            &[],
        ),
        (
            call("lambda", "CreateFunctionUrlConfig20211031", json!({"functionName": "f", "authType": "NONE"})),
            &["lambda-made-public"],
        ),
        (call("lambda", "CreateFunctionUrlConfig20211031", json!({"functionName": "f", "authType": "AWS_IAM"})), &[]),
        (
            call(
                "lambda",
                "AddLayerVersionPermission20181031",
                json!({"layerName": "l", "versionNumber": 1,
                "statementId": "s", "action": "lambda:GetLayerVersion", "principal": "*"}),
            ),
            &["lambda-made-public"],
        ),
        // roles-anywhere-trust-anchor-created
        (
            call(
                "rolesanywhere",
                "CreateTrustAnchor",
                json!({"name": "ta", "enabled": true,
                "source": {"sourceType": "CERTIFICATE_BUNDLE", "sourceData": {"x509CertificateData": "..."}}}),
            ),
            &["roles-anywhere-trust-anchor-created"],
        ),
        (call("rolesanywhere", "ListTrustAnchors", json!(null)), &[]),
        // federation-token-issued
        (
            call("sts", "GetFederationToken", json!({"name": "backdoor", "durationSeconds": 129600})),
            &["federation-token-issued"],
        ),
        (call("sts", "GetSessionToken", json!(null)), &[]),
        // identity-center-changed
        (
            call(
                "sso",
                "CreateAccountAssignment",
                json!({"instanceArn": "arn:aws:sso:::instance/ssoins-1",
                "targetId": "111111111111", "targetType": "AWS_ACCOUNT", "permissionSetArn": "arn", "principalType": "USER",
                "principalId": "u-1"}),
            ),
            &["identity-center-changed"],
        ),
        (
            call("identitystore", "CreateGroupMembership", json!({"identityStoreId": "d-1", "groupId": "g"})),
            &["identity-center-changed"],
        ),
        (call("sso", "ListPermissionSets", json!({"instanceArn": "arn"})), &[]),
        // eks-access-granted
        (
            call(
                "eks",
                "CreateAccessEntry",
                json!({"clusterName": "c", "principalArn": "arn:aws:iam::222222222222:role/x"}),
            ),
            &["eks-access-granted"],
        ),
        (call("eks", "DescribeCluster", json!({"name": "c"})), &[]),
        // dns-query-logging-removed, bedrock-invocation-logging-removed, cloudwatch-logs-deleted
        (
            call(
                "route53resolver",
                "DisassociateResolverQueryLogConfig",
                json!({"resolverQueryLogConfigId": "rqlc-1",
                "resourceId": "vpc-1"}),
            ),
            &["dns-query-logging-removed"],
        ),
        (call("route53resolver", "ListResolverQueryLogConfigs", json!(null)), &[]),
        (
            call("bedrock", "DeleteModelInvocationLoggingConfiguration", json!(null)),
            &["bedrock-invocation-logging-removed"],
        ),
        (call("bedrock", "PutModelInvocationLoggingConfiguration", json!({"loggingConfig": {}})), &[]),
        (call("logs", "DeleteLogGroup", json!({"logGroupName": "/vpc/flow"})), &["cloudwatch-logs-deleted"]),
        (
            denied(call("logs", "DeleteLogStream", json!({"logGroupName": "/g", "logStreamName": "s"}))),
            &["cloudwatch-logs-deleted", "unauthorized-api-call"],
        ),
        (failed(call("logs", "DeleteLogGroup", json!({"logGroupName": "/g"})), "ResourceNotFoundException"), &[]),
        (call("logs", "CreateLogGroup", json!({"logGroupName": "/g"})), &[]),
        // s3-logging-disabled
        (
            call(
                "s3",
                "PutBucketLogging",
                json!({"bucketName": "b", "BucketLoggingStatus":
                {"xmlns": "http://s3.amazonaws.com/doc/2006-03-01/"}, "logging": ""}),
            ),
            &["s3-logging-disabled"],
        ),
        (
            call(
                "s3",
                "PutBucketLogging",
                json!({"bucketName": "b", "BucketLoggingStatus":
                {"xmlns": "http://s3.amazonaws.com/doc/2006-03-01/", "LoggingEnabled": {"TargetBucket": "logs",
                 "TargetPrefix": "b/"}}, "logging": ""}),
            ),
            &[],
        ),
        // guardduty-findings-suppressed
        (
            call(
                "guardduty",
                "CreateFilter",
                json!({"detectorId": "d", "name": "quiet", "action": "ARCHIVE",
                "findingCriteria": {"criterion": {}}}),
            ),
            &["guardduty-findings-suppressed"],
        ),
        (
            call(
                "guardduty",
                "CreateFilter",
                json!({"detectorId": "d", "name": "note", "action": "NOOP",
                "findingCriteria": {"criterion": {}}}),
            ),
            &[],
        ),
        (
            call(
                "guardduty",
                "UpdateIPSet",
                json!({"detectorId": "d", "ipSetId": "i", "location": "s3://b/ips.txt",
                "activate": true}),
            ),
            &["guardduty-findings-suppressed"],
        ),
        (call("guardduty", "ListFindings", json!({"detectorId": "d"})), &[]),
        // organization-left: a denied attempt raises it
        (call("organizations", "LeaveOrganization", json!(null)), &["organization-left"]),
        (
            failed(call("organizations", "LeaveOrganization", json!(null)), "AccessDeniedException"),
            &["organization-left", "unauthorized-api-call"],
        ),
        (failed(call("organizations", "LeaveOrganization", json!(null)), "ConstraintViolationException"), &[]),
        (
            call("organizations", "CreateOrganizationalUnit", json!({"parentId": "r-1", "name": "x"})),
            &["organizations-changed"],
        ),
        // encryption-by-default-disabled
        (call("ec2", "DisableEbsEncryptionByDefault", json!(null)), &["encryption-by-default-disabled"]),
        (call("ec2", "EnableEbsEncryptionByDefault", json!(null)), &[]),
        // snapshot-or-image-shared
        (
            call(
                "ec2",
                "ModifyImageAttribute",
                json!({"imageId": "ami-1", "launchPermission":
                {"add": {"items": [{"userId": "222222222222"}]}}, "attributeType": "launchPermission"}),
            ),
            &["snapshot-or-image-shared"],
        ),
        (
            call(
                "ec2",
                "ModifyImageAttribute",
                json!({"imageId": "ami-1", "launchPermission":
                {"remove": {"items": [{"group": "all"}]}}, "attributeType": "launchPermission"}),
            ),
            &[],
        ),
        (
            call(
                "ec2",
                "ModifySnapshotAttribute",
                json!({"snapshotId": "snap-1", "createVolumePermission":
                {"add": {"items": [{"group": "all"}]}}, "attributeType": "CREATE_VOLUME_PERMISSION"}),
            ),
            &["snapshot-or-image-shared"],
        ),
        (
            call(
                "rds",
                "ModifyDBSnapshotAttribute",
                json!({"dBSnapshotIdentifier": "s", "attributeName": "restore",
                "valuesToAdd": ["all"]}),
            ),
            &["snapshot-or-image-shared"],
        ),
        (
            call(
                "rds",
                "ModifyDBClusterSnapshotAttribute",
                json!({"dBClusterSnapshotIdentifier": "s",
                "attributeName": "restore", "valuesToRemove": ["222222222222"]}),
            ),
            &[],
        ),
        // s3-bucket-opened (s3-bucket-policy-changed fires on each as well)
        (call("s3", "PutBucketPolicy", bucket_policy(json!("*"))), &["s3-bucket-opened", "s3-bucket-policy-changed"]),
        (
            call("s3", "PutBucketPolicy", bucket_policy(json!({"AWS": "arn:aws:iam::222222222222:root"}))),
            &["s3-bucket-opened", "s3-bucket-policy-changed"],
        ),
        (
            call("s3", "PutBucketPolicy", bucket_policy(json!({"AWS": "arn:aws:iam::111111111111:role/reader"}))),
            &["s3-bucket-policy-changed"],
        ),
        (
            call("s3", "PutBucketPolicy", bucket_policy(json!({"Service": "cloudtrail.amazonaws.com"}))),
            &["s3-bucket-policy-changed"],
        ),
        (
            call(
                "s3",
                "PutBucketAcl",
                json!({"bucketName": "b", "AccessControlPolicy": {"AccessControlList": {"Grant":
                [{"Grantee": {"xsi:type": "Group", "URI": "http://acs.amazonaws.com/groups/global/AllUsers"},
                  "Permission": "READ"}]}}, "acl": ""}),
            ),
            &["s3-bucket-opened", "s3-bucket-policy-changed"],
        ),
        (
            call("s3", "PutBucketAcl", json!({"bucketName": "b", "x-amz-acl": ["private"], "acl": ""})),
            &["s3-bucket-policy-changed"],
        ),
        (
            call(
                "s3",
                "PutBucketReplication",
                json!({"bucketName": "b", "ReplicationConfiguration": {"Role": "arn",
                "Rule": {"Status": "Enabled", "Destination": {"Bucket": "arn:aws:s3:::x", "Account": "222222222222"}}}}),
            ),
            &["s3-bucket-opened", "s3-bucket-policy-changed"],
        ),
        (
            call(
                "s3",
                "PutBucketReplication",
                json!({"bucketName": "b", "ReplicationConfiguration": {"Role": "arn",
                "Rule": {"Status": "Enabled", "Destination": {"Bucket": "arn:aws:s3:::x"}}}}),
            ),
            &["s3-bucket-policy-changed"],
        ),
        // ssm-command-or-session, ec2-ssh-key-pushed, instance-user-data-modified
        (
            call(
                "ssm",
                "SendCommand",
                json!({"instanceIds": ["i-1"], "documentName": "AWS-RunShellScript",
                "parameters": "HIDDEN_DUE_TO_SECURITY_REASONS"}),
            ),
            &["ssm-command-or-session"],
        ),
        (
            call(
                "ssm",
                "SendCommand",
                json!({"targets": [{"key": "tag:Patch", "values": ["yes"]}],
                "documentName": "AWS-RunPatchBaseline"}),
            ),
            &[],
        ),
        (
            json!({"eventSource": "ssm.amazonaws.com", "eventName": "StartSession", "requestParameters": {"target": "i-1"},
                   "userIdentity": {"type": "AWSService", "invokedBy": "ssm.amazonaws.com"}}),
            &[],
        ),
        (call("ssm", "StartSession", json!({"target": "i-1"})), &["ssm-command-or-session"]),
        (call("ssm", "DescribeInstanceInformation", json!(null)), &[]),
        (
            call(
                "ec2-instance-connect",
                "SendSSHPublicKey",
                json!({"instanceId": "i-1", "instanceOSUser": "ec2-user",
                "sSHPublicKey": "ssh-ed25519 AAAA"}),
            ),
            &["ec2-ssh-key-pushed"],
        ),
        (
            call(
                "ec2-instance-connect",
                "SendSerialConsoleSSHPublicKey",
                json!({"instanceId": "i-1", "serialPort": 0}),
            ),
            &["ec2-ssh-key-pushed"],
        ),
        (
            call("ec2", "ModifyInstanceAttribute", json!({"instanceId": "i-1", "userData": "<sensitiveDataRemoved>"})),
            &["instance-user-data-modified"],
        ),
        (
            call("ec2", "ModifyInstanceAttribute", json!({"instanceId": "i-1", "instanceType": {"value": "t3.large"}})),
            &[],
        ),
        // unusual-instance-type-launched, instance-launched (the base of instance-launch-burst)
        (instance("p4d.24xlarge"), &["instance-launched", "unusual-instance-type-launched"]),
        (instance("g5.xlarge"), &["instance-launched", "unusual-instance-type-launched"]),
        (instance("m5.metal"), &["instance-launched", "unusual-instance-type-launched"]),
        (instance("c5.24xlarge"), &["instance-launched", "unusual-instance-type-launched"]),
        (instance("t3.micro"), &["instance-launched"]),
        (instance("m5.12xlarge"), &["instance-launched"]),
        (instance("gp3.large"), &["instance-launched"]),
        (
            denied(instance("p3.16xlarge")),
            &["instance-launched", "unauthorized-api-call", "unusual-instance-type-launched"],
        ),
        (failed(instance("t3.micro"), "InsufficientInstanceCapacity"), &[]),
        (
            json!({"eventSource": "ec2.amazonaws.com", "eventName": "RunInstances", "requestParameters": {"instanceType": "t3.micro"},
                   "userIdentity": {"type": "AssumedRole", "arn": "arn:aws:sts::111111111111:assumed-role/AWSServiceRoleForAutoScaling/AutoScaling",
                                    "invokedBy": "autoscaling.amazonaws.com"}}),
            &[],
        ),
    ]
}

#[test]
fn every_rule_file_is_built_in() {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/config/rules");
    let mut files: Vec<String> =
        std::fs::read_dir(dir).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
    files.sort();
    let mut built_in: Vec<&str> = crate::detect::ruleset::BUILTIN.iter().map(|(name, _)| *name).collect();
    built_in.sort();
    assert_eq!(files, built_in);
}
