//! CloudTrail `eventSource` + `eventName` → IAM action(s): the one table that knows where the two naming schemes differ.
//!
//! Three kinds of difference (landscape.md, "Identity and permission mapping"): the service prefix is not always the
//! event source's host (`monitoring` → `cloudwatch`), event names can carry an API version suffix
//! (`ListFunctions20150331`), and S3 names many calls after its REST API, not its IAM actions (`HeadObject` →
//! `s3:GetObject`). A few calls need two actions (`CopyObject`). Sign-in events have no IAM action.

/// An IAM action, `service:Name`, in borrowed parts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct IamAction<'a> {
    pub service: &'a str,
    pub name: &'a str,
}

impl IamAction<'_> {
    /// Appends `service:Name` to `out`.
    pub fn write_to(&self, out: &mut String) {
        out.push_str(self.service);
        out.push(':');
        out.push_str(self.name);
    }
}

/// Up to two IAM actions for one call.
pub type IamActions<'a> = [Option<IamAction<'a>>; 2];

/// The IAM service prefix of an event source host, where the two differ (a `match`, so the common case of no
/// exception costs a length check rather than a table scan).
fn prefix_exception(host: &str) -> Option<&'static str> {
    Some(match host {
        "monitoring" => "cloudwatch",
        "email" => "ses",
        "appstream2" => "appstream",
        "models.lex" | "runtime.lex" => "lex",
        "mturk-requester" => "mechanicalturk",
        "streams.dynamodb" => "dynamodb",
        "tagging" => "tag",
        "runtime.sagemaker" | "api.sagemaker" => "sagemaker",
        "data.mediastore" => "mediastore",
        "api.pricing" => "pricing",
        "api.ecr" => "ecr",
        "bedrock-runtime" => "bedrock",
        "api.mediatailor" => "mediatailor",
        "iot-data" | "data.iot" => "iot",
        _ => return None,
    })
}

/// Event sources that carry no IAM action at all.
const NO_ACTION_SOURCES: &[&str] = &["signin"];

/// `(service prefix, event name)` pairs renamed to IAM actions; one or two actions each.
const RENAMES: &[(&str, &str, &str, Option<&str>)] = &[
    ("s3", "ListBuckets", "ListAllMyBuckets", None),
    ("s3", "HeadObject", "GetObject", None),
    ("s3", "HeadBucket", "ListBucket", None),
    ("s3", "ListObjects", "ListBucket", None),
    ("s3", "ListObjectsV2", "ListBucket", None),
    ("s3", "ListObjectVersions", "ListBucketVersions", None),
    ("s3", "CopyObject", "PutObject", Some("GetObject")),
    ("s3", "UploadPart", "PutObject", None),
    ("s3", "UploadPartCopy", "PutObject", Some("GetObject")),
    ("s3", "CreateMultipartUpload", "PutObject", None),
    ("s3", "CompleteMultipartUpload", "PutObject", None),
    ("s3", "DeleteObjects", "DeleteObject", None),
    ("s3", "GetBucketEncryption", "GetEncryptionConfiguration", None),
    ("s3", "PutBucketEncryption", "PutEncryptionConfiguration", None),
    ("s3", "DeleteBucketEncryption", "PutEncryptionConfiguration", None),
    ("s3", "GetBucketLifecycle", "GetLifecycleConfiguration", None),
    ("s3", "GetBucketLifecycleConfiguration", "GetLifecycleConfiguration", None),
    ("s3", "PutBucketLifecycle", "PutLifecycleConfiguration", None),
    ("s3", "PutBucketLifecycleConfiguration", "PutLifecycleConfiguration", None),
    ("s3", "DeleteBucketLifecycle", "PutLifecycleConfiguration", None),
    ("s3", "GetBucketReplication", "GetReplicationConfiguration", None),
    // trailscraper maps this to DeleteReplicationConfiguration, which is wrong.
    ("s3", "PutBucketReplication", "PutReplicationConfiguration", None),
    ("s3", "DeleteBucketReplication", "PutReplicationConfiguration", None),
    ("s3", "DeleteBucketTagging", "PutBucketTagging", None),
    ("s3", "GetBucketCors", "GetBucketCORS", None),
    ("s3", "PutBucketCors", "PutBucketCORS", None),
    ("s3", "DeleteBucketCors", "PutBucketCORS", None),
    ("s3", "ListMultipartUploads", "ListBucketMultipartUploads", None),
    ("s3", "ListParts", "ListMultipartUploadParts", None),
    ("s3", "GetBucketNotificationConfiguration", "GetBucketNotification", None),
    ("s3", "PutBucketNotificationConfiguration", "PutBucketNotification", None),
    ("s3", "GetBucketAccelerateConfiguration", "GetAccelerateConfiguration", None),
    ("s3", "PutBucketAccelerateConfiguration", "PutAccelerateConfiguration", None),
    ("s3", "GetBucketAnalyticsConfiguration", "GetAnalyticsConfiguration", None),
    ("s3", "PutBucketAnalyticsConfiguration", "PutAnalyticsConfiguration", None),
    ("s3", "DeleteBucketAnalyticsConfiguration", "PutAnalyticsConfiguration", None),
    ("s3", "ListBucketAnalyticsConfigurations", "GetAnalyticsConfiguration", None),
    ("s3", "GetBucketInventoryConfiguration", "GetInventoryConfiguration", None),
    ("s3", "PutBucketInventoryConfiguration", "PutInventoryConfiguration", None),
    ("s3", "DeleteBucketInventoryConfiguration", "PutInventoryConfiguration", None),
    ("s3", "ListBucketInventoryConfigurations", "GetInventoryConfiguration", None),
    ("s3", "GetBucketMetricsConfiguration", "GetMetricsConfiguration", None),
    ("s3", "PutBucketMetricsConfiguration", "PutMetricsConfiguration", None),
    ("s3", "DeleteBucketMetricsConfiguration", "PutMetricsConfiguration", None),
    ("s3", "ListBucketMetricsConfigurations", "GetMetricsConfiguration", None),
    ("s3", "DeleteBucketPublicAccessBlock", "PutBucketPublicAccessBlock", None),
    ("s3", "DeleteBucketOwnershipControls", "PutBucketOwnershipControls", None),
    ("kms", "ReEncrypt", "ReEncryptFrom", Some("ReEncryptTo")),
];

/// Maps one CloudTrail call to its IAM action(s); `[None, None]` for calls that have none.
pub fn iam_actions<'a>(event_source: &'a str, event_name: &'a str) -> IamActions<'a> {
    let Some(service) = service_prefix(event_source) else {
        return [None, None];
    };
    // Only S3 and KMS have renames; skip the table scan for every other service.
    if matches!(service, "s3" | "kms")
        && let Some(&(_, _, first, second)) = RENAMES.iter().find(|(s, n, _, _)| *s == service && *n == event_name)
    {
        return [Some(IamAction { service, name: first }), second.map(|name| IamAction { service, name })];
    }
    [Some(IamAction { service, name: strip_version_suffix(event_name) }), None]
}

/// `s3.amazonaws.com` → `s3`, with the exceptions above; `None` for sources without IAM actions.
pub fn service_prefix(event_source: &str) -> Option<&str> {
    let host = event_source.strip_suffix(".amazonaws.com").unwrap_or(event_source);
    if host.is_empty() || NO_ACTION_SOURCES.contains(&host) {
        return None;
    }
    Some(prefix_exception(host).unwrap_or(host))
}

/// Strips an API version stamp: `ListFunctions20150331` → `ListFunctions`, `GetFunction20150331v2` → `GetFunction`,
/// CloudFront's `CreateDistribution2020_05_31` → `CreateDistribution`.
///
/// Only a date-shaped stamp (eight digits, or `YYYY_MM_DD`, optionally followed by `v` and digits) is removed, so
/// names that merely end in a digit or `V2` (`ListObjectsV2`, `AssignIpv6Addresses`) stay intact.
pub fn strip_version_suffix(name: &str) -> &str {
    let b = name.as_bytes();
    let mut end = b.len();
    // Optional `v<digits>`.
    let digits_end = end;
    while end > 0 && b[end - 1].is_ascii_digit() {
        end -= 1;
    }
    if end < digits_end && end > 0 && b[end - 1] == b'v' {
        end -= 1;
    } else {
        end = digits_end;
    }
    let stamp_end = end;
    let is_digits = |range: std::ops::Range<usize>| b[range].iter().all(u8::is_ascii_digit);
    let start = if stamp_end >= 8 && is_digits(stamp_end - 8..stamp_end) {
        stamp_end - 8
    } else if stamp_end >= 10
        && b[stamp_end - 3] == b'_'
        && b[stamp_end - 6] == b'_'
        && is_digits(stamp_end - 10..stamp_end - 6)
        && is_digits(stamp_end - 5..stamp_end - 3)
        && is_digits(stamp_end - 2..stamp_end)
    {
        stamp_end - 10
    } else {
        return name;
    };
    // Keep the name when the stamp would be all of it, or when more digits precede it (not a date).
    if start == 0 || b[start - 1].is_ascii_digit() {
        return name;
    }
    &name[..start]
}

/// Actions AWS documents as needing no IAM permission: a policy can neither grant nor deny them, so a call says
/// nothing about what the caller is allowed to do (`sts:GetCallerIdentity` answers even under an explicit deny;
/// `sts:GetSessionToken` authenticates with MFA, which policies cannot control).
pub const NEEDS_NO_PERMISSION: [&str; 2] = ["sts:GetCallerIdentity", "sts:GetSessionToken"];

/// Whether calling `action` takes a permission; see [`NEEDS_NO_PERMISSION`].
pub fn needs_permission(action: &str) -> bool {
    !NEEDS_NO_PERMISSION.iter().any(|a| a.eq_ignore_ascii_case(action))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[track_caller]
    fn check(source: &str, name: &str, expected: &[&str]) {
        let got: Vec<String> = iam_actions(source, name)
            .iter()
            .flatten()
            .map(|a| {
                let mut s = String::new();
                a.write_to(&mut s);
                s
            })
            .collect();
        assert_eq!(got, expected, "{source} {name}");
    }

    #[test]
    fn maps_cloudtrail_calls_to_iam_actions() {
        let cases: &[(&str, &str, &[&str])] = &[
            ("iam.amazonaws.com", "CreateUser", &["iam:CreateUser"]),
            ("ec2.amazonaws.com", "AssignIpv6Addresses", &["ec2:AssignIpv6Addresses"]),
            ("monitoring.amazonaws.com", "PutMetricData", &["cloudwatch:PutMetricData"]),
            ("email.amazonaws.com", "SendEmail", &["ses:SendEmail"]),
            ("appstream2.amazonaws.com", "CreateFleet", &["appstream:CreateFleet"]),
            ("streams.dynamodb.amazonaws.com", "GetRecords", &["dynamodb:GetRecords"]),
            ("tagging.amazonaws.com", "GetResources", &["tag:GetResources"]),
            ("models.lex.amazonaws.com", "GetBot", &["lex:GetBot"]),
            ("mturk-requester.amazonaws.com", "ListHITs", &["mechanicalturk:ListHITs"]),
            ("lambda.amazonaws.com", "ListFunctions20150331", &["lambda:ListFunctions"]),
            ("lambda.amazonaws.com", "GetFunction20150331v2", &["lambda:GetFunction"]),
            ("lambda.amazonaws.com", "UpdateFunctionCode20150331v2", &["lambda:UpdateFunctionCode"]),
            ("lambda.amazonaws.com", "Invoke", &["lambda:Invoke"]),
            ("cloudfront.amazonaws.com", "CreateDistribution2020_05_31", &["cloudfront:CreateDistribution"]),
            ("s3.amazonaws.com", "HeadObject", &["s3:GetObject"]),
            ("s3.amazonaws.com", "ListObjects", &["s3:ListBucket"]),
            ("s3.amazonaws.com", "ListObjectsV2", &["s3:ListBucket"]),
            ("s3.amazonaws.com", "HeadBucket", &["s3:ListBucket"]),
            ("s3.amazonaws.com", "ListBuckets", &["s3:ListAllMyBuckets"]),
            ("s3.amazonaws.com", "CopyObject", &["s3:PutObject", "s3:GetObject"]),
            ("s3.amazonaws.com", "PutBucketReplication", &["s3:PutReplicationConfiguration"]),
            ("s3.amazonaws.com", "DeleteObjects", &["s3:DeleteObject"]),
            ("s3.amazonaws.com", "GetObject", &["s3:GetObject"]),
            ("kms.amazonaws.com", "ReEncrypt", &["kms:ReEncryptFrom", "kms:ReEncryptTo"]),
            ("signin.amazonaws.com", "ConsoleLogin", &[]),
            ("", "Anything", &[]),
            ("sts.amazonaws.com", "AssumeRole", &["sts:AssumeRole"]),
        ];
        for (source, name, expected) in cases {
            check(source, name, expected);
        }
    }

    #[test]
    fn strips_only_date_stamps() {
        let cases = [
            ("ListFunctions20150331", "ListFunctions"),
            ("GetFunction20150331v2", "GetFunction"),
            ("AddPermission20150331v12", "AddPermission"),
            ("CreateDistribution2020_05_31", "CreateDistribution"),
            ("ListObjectsV2", "ListObjectsV2"),
            ("DescribeVolumesV2", "DescribeVolumesV2"),
            ("Foo123", "Foo123"),
            ("20150331", "20150331"),
            ("Foo120150331", "Foo120150331"),
            ("v2", "v2"),
            ("", ""),
        ];
        for (input, expected) in cases {
            assert_eq!(strip_version_suffix(input), expected, "{input}");
        }
    }
}
