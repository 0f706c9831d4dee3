//! SQS message bodies → the S3 objects they announce. Every shape CloudTrail setups produce, recognised without
//! configuration.
//!
//! Shapes: S3 event notifications (`Records[].s3`, event version 2.x, `ObjectCreated:*` only), the same inside an
//! SNS envelope, CloudTrail's own SNS notification (`{"s3Bucket", "s3ObjectKey": [..] | ".."}`, raw or in SNS),
//! EventBridge "Object Created" events, S3's `s3:TestEvent` and CloudTrail's `CloudTrail validation message.`.
//! Only S3 event notification keys are URL-encoded (form encoding: `+` is a space); CloudTrail's and EventBridge's
//! keys are used as they are.
//!
//! Architecture invariant: pure. A body that is not understood is an error with a bounded `kind()`: the consumer
//! leaves such a message for the queue's redrive policy, never deletes it silently.

use serde_json::Value;

/// An S3 object a notification announces.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectRef {
    pub bucket: String,
    pub key: String,
    /// Size and ETag when the notification carries them (S3 events, EventBridge), so that an object already in the
    /// ledger is recognised before it is fetched.
    pub size: Option<u64>,
    pub etag: Option<String>,
}

/// What a notification named that is not to be fetched; counted by `kind()` and the message deleted as handled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Skip {
    /// `s3:TestEvent`, sent when a bucket notification is configured.
    TestEvent,
    /// `CloudTrail validation message.`, sent when a trail's SNS topic is set.
    ValidationMessage,
    /// An S3 or EventBridge event other than object creation.
    NotObjectCreated,
    /// A CloudTrail digest file (`CloudTrail-Digest/`): integrity data, not events.
    DigestFile,
    /// An SNS message that is not a `Notification` (subscription control messages).
    SnsControl,
}

impl Skip {
    pub fn kind(self) -> &'static str {
        match self {
            Skip::TestEvent => "s3_test_event",
            Skip::ValidationMessage => "cloudtrail_validation_message",
            Skip::NotObjectCreated => "not_object_created",
            Skip::DigestFile => "digest_file",
            Skip::SnsControl => "sns_control_message",
        }
    }
}

/// A message body's content.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Notification {
    pub objects: Vec<ObjectRef>,
    /// Digest files: fetched when log file validation is on, else skipped (`digest_file`).
    pub digests: Vec<ObjectRef>,
    pub skipped: Vec<Skip>,
}

/// Why a body could not be understood. Bounded: these are metric labels.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BodyError {
    #[error("body is not json")]
    NotJson,
    #[error("sns envelope without a string `Message`")]
    BadSnsEnvelope,
    #[error("s3 event version {0} is not supported (2.x is)")]
    UnsupportedEventVersion(String),
    #[error("s3 event record without bucket name or object key")]
    IncompleteS3Event,
    #[error("object key is not valid url encoding of utf-8: {0}")]
    BadKeyEncoding(String),
    #[error("cloudtrail notification without `s3Bucket` or `s3ObjectKey`")]
    IncompleteCloudTrailNotification,
    #[error("eventbridge event without bucket name or object key")]
    IncompleteEventBridgeEvent,
    #[error("json of no known notification shape")]
    UnknownShape,
}

impl BodyError {
    pub fn kind(&self) -> &'static str {
        match self {
            BodyError::NotJson => "not_json",
            BodyError::BadSnsEnvelope => "bad_sns_envelope",
            BodyError::UnsupportedEventVersion(_) => "unsupported_event_version",
            BodyError::IncompleteS3Event => "incomplete_s3_event",
            BodyError::BadKeyEncoding(_) => "bad_key_encoding",
            BodyError::IncompleteCloudTrailNotification => "incomplete_cloudtrail_notification",
            BodyError::IncompleteEventBridgeEvent => "incomplete_eventbridge_event",
            BodyError::UnknownShape => "unknown_shape",
        }
    }
}

const VALIDATION_MESSAGE: &str = "CloudTrail validation message.";

/// Reads one SQS message body.
pub fn parse_body(body: &str) -> Result<Notification, BodyError> {
    if body.trim() == VALIDATION_MESSAGE {
        return Ok(Notification { objects: Vec::new(), digests: Vec::new(), skipped: vec![Skip::ValidationMessage] });
    }
    let value: Value = serde_json::from_str(body).map_err(|_| BodyError::NotJson)?;
    // An SNS envelope: its `Message` is one of the other shapes, as a string.
    if let Some(kind) = value.get("Type").and_then(Value::as_str)
        && (value.get("TopicArn").is_some() || value.get("Message").is_some())
    {
        if kind != "Notification" {
            return Ok(Notification { objects: Vec::new(), digests: Vec::new(), skipped: vec![Skip::SnsControl] });
        }
        let message = value.get("Message").and_then(Value::as_str).ok_or(BodyError::BadSnsEnvelope)?;
        if message.trim() == VALIDATION_MESSAGE {
            return Ok(Notification {
                objects: Vec::new(),
                digests: Vec::new(),
                skipped: vec![Skip::ValidationMessage],
            });
        }
        let inner: Value = serde_json::from_str(message).map_err(|_| BodyError::NotJson)?;
        return parse_value(&inner);
    }
    parse_value(&value)
}

fn parse_value(value: &Value) -> Result<Notification, BodyError> {
    if value.get("Event").and_then(Value::as_str) == Some("s3:TestEvent") {
        return Ok(Notification { objects: Vec::new(), digests: Vec::new(), skipped: vec![Skip::TestEvent] });
    }
    if let Some(records) = value.get("Records").and_then(Value::as_array) {
        return s3_event(records);
    }
    if value.get("s3Bucket").is_some() || value.get("s3ObjectKey").is_some() {
        return cloudtrail_notification(value);
    }
    if value.get("source").and_then(Value::as_str) == Some("aws.s3") && value.get("detail").is_some() {
        return eventbridge_event(value);
    }
    Err(BodyError::UnknownShape)
}

fn s3_event(records: &[Value]) -> Result<Notification, BodyError> {
    let mut out = Notification::default();
    for record in records {
        let version = record.get("eventVersion").and_then(Value::as_str).unwrap_or("");
        if version.split('.').next() != Some("2") {
            return Err(BodyError::UnsupportedEventVersion(version.to_owned()));
        }
        let event_name = record.get("eventName").and_then(Value::as_str).unwrap_or("");
        if !event_name.starts_with("ObjectCreated:") {
            out.skipped.push(Skip::NotObjectCreated);
            continue;
        }
        let s3 = record.get("s3");
        let bucket = s3.and_then(|s| s.pointer("/bucket/name")).and_then(Value::as_str);
        let object = s3.and_then(|s| s.get("object"));
        let key = object.and_then(|o| o.get("key")).and_then(Value::as_str);
        let (Some(bucket), Some(key)) = (bucket, key) else {
            return Err(BodyError::IncompleteS3Event);
        };
        let key = form_url_decode(key).ok_or_else(|| BodyError::BadKeyEncoding(key.to_owned()))?;
        let size = object.and_then(|o| o.get("size")).and_then(Value::as_u64);
        let etag = object.and_then(|o| o.get("eTag")).and_then(Value::as_str).map(normalize_etag);
        push_object(&mut out, ObjectRef { bucket: bucket.to_owned(), key, size, etag });
    }
    Ok(out)
}

fn cloudtrail_notification(value: &Value) -> Result<Notification, BodyError> {
    let bucket = value.get("s3Bucket").and_then(Value::as_str).ok_or(BodyError::IncompleteCloudTrailNotification)?;
    // A list of keys, or (as AWS Config's variant sends) a single string.
    let keys: Vec<&str> = match value.get("s3ObjectKey") {
        Some(Value::String(key)) => vec![key],
        Some(Value::Array(keys)) => keys.iter().filter_map(Value::as_str).collect(),
        _ => return Err(BodyError::IncompleteCloudTrailNotification),
    };
    if keys.is_empty() {
        return Err(BodyError::IncompleteCloudTrailNotification);
    }
    let mut out = Notification::default();
    for key in keys {
        push_object(&mut out, ObjectRef { bucket: bucket.to_owned(), key: key.to_owned(), size: None, etag: None });
    }
    Ok(out)
}

fn eventbridge_event(value: &Value) -> Result<Notification, BodyError> {
    if value.get("detail-type").and_then(Value::as_str) != Some("Object Created") {
        return Ok(Notification { objects: Vec::new(), digests: Vec::new(), skipped: vec![Skip::NotObjectCreated] });
    }
    let bucket = value.pointer("/detail/bucket/name").and_then(Value::as_str);
    let key = value.pointer("/detail/object/key").and_then(Value::as_str);
    let (Some(bucket), Some(key)) = (bucket, key) else {
        return Err(BodyError::IncompleteEventBridgeEvent);
    };
    let size = value.pointer("/detail/object/size").and_then(Value::as_u64);
    let etag = value.pointer("/detail/object/etag").and_then(Value::as_str).map(normalize_etag);
    let mut out = Notification::default();
    push_object(&mut out, ObjectRef { bucket: bucket.to_owned(), key: key.to_owned(), size, etag });
    Ok(out)
}

fn push_object(out: &mut Notification, object: ObjectRef) {
    match classify_key(&object.key) {
        KeyKind::Digest => out.digests.push(object),
        KeyKind::LogFile | KeyKind::Insight | KeyKind::Other => out.objects.push(object),
    }
}

/// What a key is, by CloudTrail's layout.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyKind {
    /// `…/CloudTrail/…`
    LogFile,
    /// `…/CloudTrail-Insight/…`: Insight events, handled like log files.
    Insight,
    /// `…/CloudTrail-Digest/…`: fetched for log file validation, else skipped.
    Digest,
    /// Anything else: fetched, and rejected with a typed reason if it is not a log file.
    Other,
}

pub fn classify_key(key: &str) -> KeyKind {
    let mut kind = KeyKind::Other;
    for segment in key.split('/') {
        match segment {
            "CloudTrail-Digest" => return KeyKind::Digest,
            "CloudTrail-Insight" => kind = KeyKind::Insight,
            "CloudTrail" if kind == KeyKind::Other => kind = KeyKind::LogFile,
            _ => {}
        }
    }
    kind
}

/// S3 ETags arrive quoted from GetObject and unquoted in notifications; the ledger keeps them unquoted.
pub fn normalize_etag(etag: &str) -> String {
    etag.trim_matches('"').to_owned()
}

/// `application/x-www-form-urlencoded` decoding: `+` → space, then `%XX` → byte; the result must be UTF-8.
pub fn form_url_decode(text: &str) -> Option<String> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' => {
                let hex = bytes.get(i + 1..i + 3)?;
                let digit = |c: u8| (c as char).to_digit(16);
                out.push((digit(hex[0])? * 16 + digit(hex[1])?) as u8);
                i += 2;
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8(out).ok()
}

#[cfg(test)]
mod tests;
