//! Digest signatures with the test key pair in `tests/data/integrity` (made with OpenSSL; the private keys are
//! for tests only): a signed digest verifies, and each change to what the signature covers does not.

use rsa::pkcs8::DecodePrivateKey;
use rsa::signature::{SignatureEncoding, Signer};

use super::*;

fn data(name: &str) -> Vec<u8> {
    std::fs::read(std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/integrity").join(name)).unwrap()
}

fn keys(name: &str) -> PublicKeys {
    PublicKeys::from_list_json(&data(name), name).unwrap()
}

/// Signs as CloudTrail does: the signing string of the digest's bytes, with the key `private` (a PKCS #8 file).
fn sign(json: &[u8], private: &str) -> String {
    let digest = Digest::parse(json, "b", "k").unwrap();
    let key = rsa::PrivateKey::from_pkcs8_der(&data(private)).unwrap();
    let signer = rsa::pkcs1v15::SigningKey::<Sha256>::new(key);
    hex::encode(signer.sign(digest.signing_string(&sha256_hex(json)).as_bytes()).to_bytes())
}

const FINGERPRINT: &str = "e97a99ae14a55d18157976cc203bf57c";
const KEY: &str = "AWSLogs/111122223333/CloudTrail-Digest/us-east-1/2026/10/01/111122223333_CloudTrail-Digest_us-east-1_main_us-east-1_20261001T013000Z.json.gz";

fn digest_json(previous_signature: Option<&str>, fingerprint: &str) -> Vec<u8> {
    serde_json::to_vec(&serde_json::json!({
        "awsAccountId": "111122223333",
        "digestStartTime": "2026-10-01T00:30:00Z",
        "digestEndTime": "2026-10-01T01:30:00Z",
        "digestS3Bucket": "trail-bucket",
        "digestS3Object": KEY,
        "digestPublicKeyFingerprint": fingerprint,
        "digestSignatureAlgorithm": "SHA256withRSA",
        "newestEventTime": "2026-10-01T01:29:00Z",
        "oldestEventTime": "2026-10-01T00:31:00Z",
        "previousDigestS3Bucket": previous_signature.map(|_| "trail-bucket"),
        "previousDigestS3Object": previous_signature.map(|_| "AWSLogs/111122223333/CloudTrail-Digest/us-east-1/2026/10/01/prev.json.gz"),
        "previousDigestHashValue": previous_signature.map(|_| "00"),
        "previousDigestHashAlgorithm": previous_signature.map(|_| "SHA-256"),
        "previousDigestSignature": previous_signature,
        "logFiles": [{
            "s3Bucket": "trail-bucket",
            "s3Object": "AWSLogs/111122223333/CloudTrail/us-east-1/2026/10/01/111122223333_CloudTrail_us-east-1_20261001T0035Z_abc.json.gz",
            "hashValue": sha256_hex(b"{\"Records\":[]}"),
            "hashAlgorithm": "SHA-256",
            "newestEventTime": "2026-10-01T00:34:00Z",
            "oldestEventTime": "2026-10-01T00:31:00Z"
        }]
    }))
    .unwrap()
}

#[test]
fn the_signing_string_is_the_documented_one() {
    let first = Digest::parse(&digest_json(None, FINGERPRINT), "trail-bucket", KEY).unwrap();
    assert_eq!(first.signing_string("ab12"), format!("2026-10-01T01:30:00Z\ntrail-bucket/{KEY}\nab12\nnull"));
    let linked = Digest::parse(&digest_json(Some("cafe"), FINGERPRINT), "trail-bucket", KEY).unwrap();
    assert!(linked.signing_string("ab12").ends_with("\nab12\ncafe"));
    assert_eq!(linked.log_files.len(), 1);
    assert_eq!(linked.previous_digest_s3_bucket.as_deref(), Some("trail-bucket"));
}

/// A digest signed with the listed key verifies; each change to what the signature covers, another key, an
/// unknown fingerprint, another algorithm or another place does not, each with its own error.
#[test]
fn signatures_verify_as_cloudtrail_signs_them() {
    let keys = keys("public-keys.json");
    let json = digest_json(Some("cafe"), FINGERPRINT);
    let signature = sign(&json, "test-key.pk8.der");
    let digest = Digest::parse(&json, "trail-bucket", KEY).unwrap();
    let check = |json: &[u8], bucket: &str, key: &str, signature: &str, keys: &PublicKeys| {
        let digest = Digest::parse(json, bucket, key).unwrap();
        verify(&digest, json, bucket, key, signature, keys)
    };
    assert_eq!(verify(&digest, &json, "trail-bucket", KEY, &signature, &keys), Ok(()));

    let bad = |bucket: &str| IntegrityError::BadSignature { bucket: bucket.into(), key: KEY.into() };
    // The digest's bytes changed (a log file's hash rewritten): the hash in the signing string differs.
    let rewritten = String::from_utf8(json.clone()).unwrap().replace("00:34:00Z", "00:35:00Z").into_bytes();
    assert_eq!(check(&rewritten, "trail-bucket", KEY, &signature, &keys), Err(bad("trail-bucket")));
    // Another previous signature: the chain link is covered too.
    let relinked = digest_json(Some("beef"), FINGERPRINT);
    assert_eq!(check(&relinked, "trail-bucket", KEY, &signature, &keys), Err(bad("trail-bucket")));
    // Signed with another key that claims the listed fingerprint.
    let forged = sign(&json, "other-key.pk8.der");
    assert_eq!(check(&json, "trail-bucket", KEY, &forged, &keys), Err(bad("trail-bucket")));
    // Not hex, or empty.
    assert_eq!(check(&json, "trail-bucket", KEY, "zz", &keys), Err(bad("trail-bucket")));
    assert_eq!(check(&json, "trail-bucket", KEY, "", &keys), Err(bad("trail-bucket")));
    // A key trailwatch does not have.
    let other_keys = self::keys("other-public-keys.json");
    assert_eq!(
        check(&json, "trail-bucket", KEY, &signature, &other_keys),
        Err(IntegrityError::UnknownKey {
            bucket: "trail-bucket".into(),
            key: KEY.into(),
            fingerprint: FINGERPRINT.into()
        })
    );
    // Copied elsewhere: it says where it belongs.
    let moved = check(&json, "other-bucket", KEY, &signature, &keys);
    assert!(matches!(moved, Err(IntegrityError::Moved { ref found_bucket, .. }) if found_bucket == "other-bucket"));
    // Another algorithm.
    let md5 = String::from_utf8(json.clone()).unwrap().replace("SHA256withRSA", "MD5withRSA").into_bytes();
    assert!(matches!(check(&md5, "trail-bucket", KEY, &signature, &keys), Err(IntegrityError::Algorithm { .. })));
}

#[test]
fn key_lists_and_digests_that_do_not_parse_say_why() {
    assert!(matches!(
        PublicKeys::from_list_json(br#"{"PublicKeyList":[{"Value":"bm90IGEga2V5","Fingerprint":"f"}]}"#, "k.json"),
        Err(IntegrityError::Keys { ref origin, ref reason }) if origin == "k.json" && reason.contains("not a DER RSA public key")
    ));
    assert!(matches!(PublicKeys::from_list_json(b"[]", "k.json"), Err(IntegrityError::Keys { .. })));
    assert!(matches!(Digest::parse(b"{\"logFiles\": 3}", "b", "k"), Err(IntegrityError::Format { .. })));
    // The AWS CLI's unit tests use this public key (PKCS #1 DER, as ListPublicKeys returns keys): it parses.
    let aws_cli_test_key = "MIIBCgKCAQEAn11L2YZ9h7onug2ILi1MWyHiMRsTQjfWE+pHVRLk1QjfWhirG+lpOa8NrwQ/r7Ah5bNL6HepznOU9XTDSfmmnP97mqyc7z/upfZdS/AHhYcGaz7n6Wc/RRBU6VmiPCrAUojuSk6/GjvA8iOPFsYDuBtviXarvuLPlrT9kAd4Lb+rFfR5peEgBEkhlzc5HuWO7S0y+KunqxX6jQBnXGMtxmPBPP0FylgWGNdFtks/4YSKcgqwH0YDcawP9GGGDAeCIqPWIXDLG1jOjRRzWfCmD0iJUkz8vTsn4hq/5ZxRFE7UBAUiVcGbdnDdvVfhF9C3dQiDq3k7adQIziLT0cShgQIDAQAB";
    assert!(PublicKey::from_base64_der(aws_cli_test_key, "aws-cli").is_ok());
}

/// A digest that does not parse, or is too large to be one, is still recorded (at the time its name gives) as
/// invalid, with the reason; one whose place and name put it in no chain is not recorded.
#[test]
fn digests_intake_cannot_use_are_recorded_invalid() {
    let found = chain::Location { bucket: "trail-bucket".into(), key: KEY.into() };
    let mut huge = digest_json(None, FINGERPRINT);
    huge.resize(MAX_DIGEST_BYTES + 1, b' ');
    let cases: [(&[u8], &str); 3] = [
        (b"{\"logFiles\": 3}", "not a CloudTrail digest"),
        (b"not json", "not a CloudTrail digest"),
        (&huge, "over the 16777216 a digest may take"),
    ];
    for (json, reason) in cases {
        let intake = intake_digest(json, found.clone(), Some("00")).unwrap();
        match &intake.record.check {
            chain::DigestCheck::Invalid(why) => assert!(why.contains(reason), "{why}"),
            other => panic!("{other:?}"),
        }
        assert_eq!(intake.record.end_time, crate::time::parse_rfc3339("2026-10-01T01:30:00Z").unwrap());
        assert_eq!(intake.pending, None);
    }
    let nowhere = chain::Location { bucket: "trail-bucket".into(), key: "elsewhere/digest.json.gz".into() };
    assert_eq!(intake_digest(b"not json", nowhere, None), None);
    // Well formed and signed: its signature waits for its key.
    let intake = intake_digest(&digest_json(None, FINGERPRINT), found, Some("00")).unwrap();
    assert_eq!((intake.record.check, intake.pending.is_some()), (chain::DigestCheck::Unverified, true));
}
