//! Data-driven notification tests: one body per shape, and the objects or skips (or the error) it must yield.

use super::*;

/// `bucket/key[@etag]` for objects, `kind()` for skips: compact expectations that read like the input.
fn render(n: &Notification) -> Vec<String> {
    let objects = n.objects.iter().map(|o| match &o.etag {
        Some(etag) => format!("{}/{}@{etag}", o.bucket, o.key),
        None => format!("{}/{}", o.bucket, o.key),
    });
    let digests = n.digests.iter().map(|o| format!("digest {}/{}", o.bucket, o.key));
    objects.chain(digests).chain(n.skipped.iter().map(|s| s.kind().to_owned())).collect()
}

#[track_caller]
fn check(body: &str, expected: Result<&[&str], BodyError>) {
    let got = parse_body(body).map(|n| render(&n));
    let expected = expected.map(|e| e.iter().map(|s| s.to_string()).collect::<Vec<_>>());
    assert_eq!(got, expected, "body: {body}");
}

fn sns(message: &str) -> String {
    serde_json::json!({
        "Type": "Notification",
        "MessageId": "1b5d5f5e-0000-0000-0000-000000000000",
        "TopicArn": "arn:aws:sns:us-east-1:111111111111:cloudtrail-topic",
        "Subject": "Amazon S3 Notification",
        "Message": message,
        "Timestamp": "2026-10-01T12:00:00.000Z",
        "SignatureVersion": "1",
    })
    .to_string()
}

const S3_EVENT: &str = r#"{"Records":[{"eventVersion":"2.1","eventSource":"aws:s3","awsRegion":"us-east-1","eventTime":"2026-10-01T12:00:00.000Z","eventName":"ObjectCreated:Put","s3":{"s3SchemaVersion":"1.0","configurationId":"ct","bucket":{"name":"trail-bucket","arn":"arn:aws:s3:::trail-bucket"},"object":{"key":"AWSLogs/111111111111/CloudTrail/us-east-1/2026/10/01/111111111111_CloudTrail_us-east-1_20261001T1200Z_abc.json.gz","size":1024,"eTag":"0123abcd","sequencer":"0055AED6DCD90281E5"}}}]}"#;
const CT_KEY: &str =
    "AWSLogs/111111111111/CloudTrail/us-east-1/2026/10/01/111111111111_CloudTrail_us-east-1_20261001T1200Z_abc.json.gz";

#[test]
fn every_notification_shape() {
    let ct_object = format!("trail-bucket/{CT_KEY}");
    let ct_object_etag = format!("trail-bucket/{CT_KEY}@0123abcd");
    // S3 event notification, raw and in SNS.
    check(S3_EVENT, Ok(&[&ct_object_etag]));
    check(&sns(S3_EVENT), Ok(&[&ct_object_etag]));
    // CloudTrail's own SNS notification: list or single string, raw or in SNS; keys are not URL-encoded.
    let ct_list =
        format!(r#"{{"s3Bucket":"trail-bucket","s3ObjectKey":["{CT_KEY}","AWSLogs/1/CloudTrail/x+y%20z.json.gz"]}}"#);
    check(&ct_list, Ok(&[&ct_object, "trail-bucket/AWSLogs/1/CloudTrail/x+y%20z.json.gz"]));
    check(&sns(&ct_list), Ok(&[&ct_object, "trail-bucket/AWSLogs/1/CloudTrail/x+y%20z.json.gz"]));
    let ct_single = format!(r#"{{"s3Bucket":"trail-bucket","s3ObjectKey":"{CT_KEY}"}}"#);
    check(&sns(&ct_single), Ok(&[&ct_object]));
    // EventBridge "Object Created"; other detail types are skipped.
    let eventbridge = format!(
        r#"{{"version":"0","id":"17793124","detail-type":"Object Created","source":"aws.s3","account":"111111111111","time":"2026-10-01T12:00:00Z","region":"us-east-1","resources":["arn:aws:s3:::trail-bucket"],"detail":{{"version":"0","bucket":{{"name":"trail-bucket"}},"object":{{"key":"{CT_KEY}","size":5,"etag":"0123abcd","sequencer":"617f08299329d189"}},"request-id":"N4N7","requester":"111111111111","reason":"PutObject"}}}}"#
    );
    check(&eventbridge, Ok(&[&ct_object_etag]));
    check(&eventbridge.replace("Object Created", "Object Deleted"), Ok(&["not_object_created"]));
    // Test and validation messages are handled (deleted), not errors.
    check(
        r#"{"Service":"Amazon S3","Event":"s3:TestEvent","Time":"2026-10-01T12:00:00.000Z","Bucket":"trail-bucket","RequestId":"X","HostId":"Y"}"#,
        Ok(&["s3_test_event"]),
    );
    check(&sns(r#"{"Service":"Amazon S3","Event":"s3:TestEvent"}"#), Ok(&["s3_test_event"]));
    check("CloudTrail validation message.", Ok(&["cloudtrail_validation_message"]));
    check(&sns("CloudTrail validation message."), Ok(&["cloudtrail_validation_message"]));
    check(
        r#"{"Type":"SubscriptionConfirmation","TopicArn":"arn:aws:sns:us-east-1:1:t","Message":"You have chosen to subscribe"}"#,
        Ok(&["sns_control_message"]),
    );
}

#[test]
fn s3_event_details() {
    // Keys are form-URL-encoded: `+` is a space, then percent-decoding (also of multi-byte UTF-8).
    let encoded = S3_EVENT.replace(CT_KEY, "AWSLogs%2Fmy+trail%2B%C3%A9/CloudTrail/f.json.gz");
    check(&encoded, Ok(&["trail-bucket/AWSLogs/my trail+é/CloudTrail/f.json.gz@0123abcd"]));
    // Only ObjectCreated:* names objects; other records of the same message are skipped, not errors.
    let removed = S3_EVENT.replace("ObjectCreated:Put", "ObjectRemoved:Delete");
    check(&removed, Ok(&["not_object_created"]));
    let two = format!(
        r#"{{"Records":[{},{}]}}"#,
        &S3_EVENT[12..S3_EVENT.len() - 2],
        &removed[12..removed.len() - 2].replace("abc.json.gz", "def.json.gz")
    );
    check(&two, Ok(&[&format!("trail-bucket/{CT_KEY}@0123abcd"), "not_object_created"]));
    // Digest files are recognised by path (fetched only for log file validation); Insight files are fetched like
    // log files.
    let digest = S3_EVENT.replace("/CloudTrail/", "/CloudTrail-Digest/");
    check(&digest, Ok(&[&format!("digest trail-bucket/{}", CT_KEY.replace("/CloudTrail/", "/CloudTrail-Digest/"))]));
    let insight = S3_EVENT.replace("/CloudTrail/", "/CloudTrail-Insight/");
    check(
        &insight,
        Ok(&[&format!("trail-bucket/{}@0123abcd", CT_KEY.replace("/CloudTrail/", "/CloudTrail-Insight/"))]),
    );
    // Moto omits most fields; bucket and key suffice. Quoted ETags are normalised.
    check(
        r#"{"Records":[{"eventVersion":"2.0","eventName":"ObjectCreated:Copy","s3":{"bucket":{"name":"b"},"object":{"key":"k.json.gz","eTag":"\"q\""}}}]}"#,
        Ok(&["b/k.json.gz@q"]),
    );
}

#[test]
fn odd_bodies_are_typed_errors() {
    check("", Err(BodyError::NotJson));
    check("hello", Err(BodyError::NotJson));
    check("{\"Records\":[", Err(BodyError::NotJson));
    check("[1,2,3]", Err(BodyError::UnknownShape));
    check(r#"{"hello":"world"}"#, Err(BodyError::UnknownShape));
    check(&S3_EVENT.replace("\"2.1\"", "\"3.0\""), Err(BodyError::UnsupportedEventVersion("3.0".to_owned())));
    check(
        r#"{"Records":[{"eventVersion":"2.1","eventName":"ObjectCreated:Put","s3":{}}]}"#,
        Err(BodyError::IncompleteS3Event),
    );
    check(&S3_EVENT.replace(CT_KEY, "bad%zzkey"), Err(BodyError::BadKeyEncoding("bad%zzkey".to_owned())));
    check(&S3_EVENT.replace(CT_KEY, "bad%ff"), Err(BodyError::BadKeyEncoding("bad%ff".to_owned())));
    check(&S3_EVENT.replace(CT_KEY, "bad%+1"), Err(BodyError::BadKeyEncoding("bad%+1".to_owned())));
    check(r#"{"Type":"Notification","TopicArn":"t","Message":7}"#, Err(BodyError::BadSnsEnvelope));
    check(&sns("not json either"), Err(BodyError::NotJson));
    check(r#"{"s3Bucket":"b"}"#, Err(BodyError::IncompleteCloudTrailNotification));
    check(r#"{"s3Bucket":"b","s3ObjectKey":[]}"#, Err(BodyError::IncompleteCloudTrailNotification));
    check(
        r#"{"source":"aws.s3","detail-type":"Object Created","detail":{}}"#,
        Err(BodyError::IncompleteEventBridgeEvent),
    );
}

#[test]
fn keys_are_classified_by_path() {
    let cases = [
        ("AWSLogs/1/CloudTrail/us-east-1/2026/10/01/f.json.gz", KeyKind::LogFile),
        ("prefix/AWSLogs/o-abc/1/CloudTrail/us-east-1/2026/10/01/f.json.gz", KeyKind::LogFile),
        ("AWSLogs/1/CloudTrail-Insight/us-east-1/2026/10/01/f.json.gz", KeyKind::Insight),
        ("AWSLogs/1/CloudTrail-Digest/us-east-1/2026/10/01/f.json.gz", KeyKind::Digest),
        ("AWSLogs/1/Config/us-east-1/f.json.gz", KeyKind::Other),
        ("CloudTrailish/f.json", KeyKind::Other),
    ];
    for (key, kind) in cases {
        assert_eq!(classify_key(key), kind, "{key}");
    }
}
