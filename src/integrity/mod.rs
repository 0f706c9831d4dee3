//! CloudTrail log file integrity, the pure part: digest files as CloudTrail writes them, the string a digest's
//! signature covers, the public keys `cloudtrail:ListPublicKeys` gives (and `aws cloudtrail list-public-keys`
//! prints), and the SHA256withRSA check of a digest against them. No I/O: callers hand in bytes.
//!
//! AWS documents the scheme in "CloudTrail digest file structure" and "Validating CloudTrail digest files with
//! custom implementations": the signature, hex in the S3 object's `signature` metadata, is RSA PKCS #1 v1.5 over
//! SHA-256 of `digestEndTime \n digestS3Bucket/digestS3Object \n hex(SHA-256 of the uncompressed digest) \n
//! previousDigestSignature` (the text `null` for a chain's first digest); public keys are DER PKCS #1
//! `RSAPublicKey`s, base64 in the list, chosen by the digest's `digestPublicKeyFingerprint`.

pub mod chain;

use rsa::pkcs1::DecodeRsaPublicKey;
use rsa::signature::Verifier;
use serde::Deserialize;
use sha2::{Digest as _, Sha256};

/// One digest file, the fields validation reads (CloudTrail adds others; unknown ones are ignored).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Digest {
    pub aws_account_id: String,
    pub digest_start_time: String,
    pub digest_end_time: String,
    #[serde(rename = "digestS3Bucket")]
    pub digest_s3_bucket: String,
    #[serde(rename = "digestS3Object")]
    pub digest_s3_object: String,
    pub digest_public_key_fingerprint: String,
    pub digest_signature_algorithm: String,
    #[serde(rename = "previousDigestS3Bucket")]
    pub previous_digest_s3_bucket: Option<String>,
    #[serde(rename = "previousDigestS3Object")]
    pub previous_digest_s3_object: Option<String>,
    pub previous_digest_signature: Option<String>,
    pub log_files: Vec<LogFileEntry>,
}

/// A log file a digest lists: where it is and the SHA-256 of its uncompressed content.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LogFileEntry {
    #[serde(rename = "s3Bucket")]
    pub s3_bucket: String,
    #[serde(rename = "s3Object")]
    pub s3_object: String,
    pub hash_value: String,
    pub hash_algorithm: String,
}

/// Why a digest or a key list is not accepted; each names what was wrong, never a key's bytes.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IntegrityError {
    #[error("digest {}: not a CloudTrail digest: {reason}", at(bucket, key))]
    Format { bucket: String, key: String, reason: String },
    #[error("digest {}: unsupported signature algorithm `{algorithm}`", at(bucket, key))]
    Algorithm { bucket: String, key: String, algorithm: String },
    #[error("digest {}: no public key with fingerprint {fingerprint}", at(bucket, key))]
    UnknownKey { bucket: String, key: String, fingerprint: String },
    #[error("digest {}: the signature does not verify", at(bucket, key))]
    BadSignature { bucket: String, key: String },
    #[error("digest {}: found at {}, which is not where it says it is", at(bucket, key), at(found_bucket, found_key))]
    Moved { bucket: String, key: String, found_bucket: String, found_key: String },
    #[error("public keys {origin}: {reason}")]
    Keys { origin: String, reason: String },
}

/// `s3://bucket/key`, or a local file's path (no bucket).
fn at(bucket: &str, key: &str) -> String {
    chain::Location { bucket: bucket.to_owned(), key: key.to_owned() }.to_string()
}

impl Digest {
    /// Parses a digest's uncompressed JSON, read from `bucket`/`key` (named in the error).
    pub fn parse(json: &[u8], bucket: &str, key: &str) -> Result<Digest, IntegrityError> {
        serde_json::from_slice(json).map_err(|e| IntegrityError::Format {
            bucket: bucket.to_owned(),
            key: key.to_owned(),
            reason: e.to_string(),
        })
    }

    /// The text the digest's signature covers, given the SHA-256 (hex) of the digest's uncompressed bytes.
    pub fn signing_string(&self, digest_sha256_hex: &str) -> String {
        format!(
            "{}\n{}/{}\n{}\n{}",
            self.digest_end_time,
            self.digest_s3_bucket,
            self.digest_s3_object,
            digest_sha256_hex,
            self.previous_digest_signature.as_deref().unwrap_or("null")
        )
    }
}

/// SHA-256 of `bytes`, lowercase hex, as digests write hashes.
pub fn sha256_hex(bytes: &[u8]) -> String {
    // `sha2` uses the CPU's SHA extensions where it has them: 1.2 GB/s here, as fast as aws-lc's assembly.
    hex::encode(Sha256::digest(bytes))
}

/// One public key CloudTrail signed with during its validity.
#[derive(Debug, Clone)]
pub struct PublicKey {
    pub fingerprint: String,
    key: rsa::pkcs1v15::VerifyingKey<Sha256>,
}

/// The `list-public-keys` shape.
#[derive(Deserialize)]
struct KeyList {
    #[serde(rename = "PublicKeyList")]
    public_key_list: Vec<KeyEntry>,
}

#[derive(Deserialize)]
struct KeyEntry {
    #[serde(rename = "Value")]
    value: String,
    #[serde(rename = "Fingerprint")]
    fingerprint: String,
}

/// Public keys by fingerprint.
#[derive(Debug, Clone, Default)]
pub struct PublicKeys(Vec<PublicKey>);

impl PublicKeys {
    /// Reads what `aws cloudtrail list-public-keys` prints (`PublicKeyList[]` with base64 `Value` and
    /// `Fingerprint`); `origin` names the source in errors. Every key must parse.
    pub fn from_list_json(json: &[u8], origin: &str) -> Result<PublicKeys, IntegrityError> {
        let bad = |reason: String| IntegrityError::Keys { origin: origin.to_owned(), reason };
        let list: KeyList = serde_json::from_slice(json).map_err(|e| bad(e.to_string()))?;
        let mut keys = Vec::with_capacity(list.public_key_list.len());
        for entry in list.public_key_list {
            keys.push(PublicKey::from_base64_der(&entry.value, &entry.fingerprint).map_err(bad)?);
        }
        Ok(PublicKeys(keys))
    }

    pub fn push(&mut self, key: PublicKey) {
        self.0.push(key);
    }

    /// Adds `other`'s keys.
    pub fn extend(&mut self, other: PublicKeys) {
        self.0.extend(other.0);
    }

    pub fn get(&self, fingerprint: &str) -> Option<&PublicKey> {
        self.0.iter().find(|k| k.fingerprint == fingerprint)
    }
}

impl PublicKey {
    /// A key from its base64 DER PKCS #1 `RSAPublicKey`, as `ListPublicKeys` returns it.
    pub fn from_base64_der(value: &str, fingerprint: &str) -> Result<PublicKey, String> {
        use base64::Engine as _;
        let der = base64::engine::general_purpose::STANDARD
            .decode(value.trim())
            .map_err(|e| format!("key {fingerprint}: not base64: {e}"))?;
        PublicKey::from_der(&der, fingerprint)
    }

    /// A key from its DER PKCS #1 `RSAPublicKey` (the SDK hands `ListPublicKeys`' values over decoded).
    pub fn from_der(der: &[u8], fingerprint: &str) -> Result<PublicKey, String> {
        let key = rsa::PublicKey::from_pkcs1_der(der)
            .map_err(|e| format!("key {fingerprint}: not a DER RSA public key: {e}"))?;
        Ok(PublicKey { fingerprint: fingerprint.to_owned(), key: rsa::pkcs1v15::VerifyingKey::new(key) })
    }
}

/// Checks `digest` (parsed from `json`, found at `bucket`/`key`) against its signature (hex, from the object's
/// metadata) and `keys`: where it says it is, the algorithm, the key, the signature over the signing string.
pub fn verify(
    digest: &Digest,
    json: &[u8],
    bucket: &str,
    key: &str,
    signature_hex: &str,
    keys: &PublicKeys,
) -> Result<(), IntegrityError> {
    let found = chain::Location { bucket: bucket.to_owned(), key: key.to_owned() };
    signature_to_check(digest, json, &found, signature_hex)?.verify(keys)
}

/// What a digest's signature covers and the signature, checked by [`PendingSignature::verify`] once the key its
/// fingerprint names is at hand (intake has no keys: with `public_keys = "api"` they are fetched later).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PendingSignature {
    /// Where the digest was found, for errors.
    pub found: chain::Location,
    pub fingerprint: String,
    /// The signing string.
    pub signed: String,
    /// Hex, as in the object's `signature` metadata.
    pub signature: String,
}

impl PendingSignature {
    pub fn verify(&self, keys: &PublicKeys) -> Result<(), IntegrityError> {
        let Some(public) = keys.get(&self.fingerprint) else {
            let (bucket, key) = (self.found.bucket.clone(), self.found.key.clone());
            return Err(IntegrityError::UnknownKey { bucket, key, fingerprint: self.fingerprint.clone() });
        };
        self.verify_with(public)
    }

    /// Checks the signature with `public` (the key its fingerprint names).
    pub fn verify_with(&self, public: &PublicKey) -> Result<(), IntegrityError> {
        let (bucket, key) = (self.found.bucket.clone(), self.found.key.clone());
        let signature = hex::decode(self.signature.trim())
            .ok()
            .and_then(|bytes| rsa::pkcs1v15::Signature::try_from(bytes.as_slice()).ok());
        match signature {
            Some(signature) if public.key.verify(self.signed.as_bytes(), &signature).is_ok() => Ok(()),
            _ => Err(IntegrityError::BadSignature { bucket, key }),
        }
    }
}

/// The checks a digest's own bytes allow (where it says it is, the algorithm), and what its signature covers.
///
/// An S3 object must be where it says it is; a local file (empty bucket) must carry the name of the object it
/// says it is, since copies lose their bucket and prefix.
pub fn signature_to_check(
    digest: &Digest,
    json: &[u8],
    found: &chain::Location,
    signature_hex: &str,
) -> Result<PendingSignature, IntegrityError> {
    let (b, k) = (found.bucket.clone(), found.key.clone());
    let moved = match found.bucket.is_empty() {
        true => chain::file_name(&digest.digest_s3_object) != found.name(),
        false => digest.digest_s3_bucket != found.bucket || digest.digest_s3_object != found.key,
    };
    if moved {
        return Err(IntegrityError::Moved {
            bucket: digest.digest_s3_bucket.clone(),
            key: digest.digest_s3_object.clone(),
            found_bucket: b,
            found_key: k,
        });
    }
    if !digest.digest_signature_algorithm.eq_ignore_ascii_case("SHA256withRSA") {
        return Err(IntegrityError::Algorithm {
            bucket: b,
            key: k,
            algorithm: digest.digest_signature_algorithm.clone(),
        });
    }
    Ok(PendingSignature {
        found: found.clone(),
        fingerprint: digest.digest_public_key_fingerprint.clone(),
        signed: digest.signing_string(&sha256_hex(json)),
        signature: signature_hex.trim().to_owned(),
    })
}

/// A digest file as intake took it: its record for the chain, and its signature when one came with it and the
/// digest passed the checks its bytes allow.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DigestIntake {
    pub record: chain::DigestRecord,
    pub pending: Option<PendingSignature>,
}

/// The most a digest's JSON may take. One lists an account's and region's log files of an hour, a few hundred
/// bytes each: a few dozen kilobytes for a busy trail. Parsed, a digest takes a few times its size in strings,
/// beyond what a worker's memory budget counts for log files, so a larger one is refused (`digest-invalid`).
pub const MAX_DIGEST_BYTES: usize = 16 << 20;

/// Takes a digest file's uncompressed bytes found at `found`, with its signature (hex) if one came with it.
/// A digest that does not parse is still recorded (`Invalid`), at the time its name gives, so that the report
/// names it; `None` when neither its place nor its name puts it in a chain.
pub fn intake_digest(json: &[u8], found: chain::Location, signature: Option<&str>) -> Option<DigestIntake> {
    use chain::{DigestCheck, DigestRecord};
    let invalid = |found: chain::Location, reason: String| {
        let chain = chain::ChainId::of(&found.bucket, &found.key)?;
        let time = crate::layout::cloudtrail_digest_name(found.name())?.end;
        let record = DigestRecord {
            location: found,
            chain,
            start_time: time - 3600,
            end_time: time,
            previous: None,
            log_files: Vec::new(),
            check: DigestCheck::Invalid(reason),
        };
        Some(DigestIntake { record, pending: None })
    };
    if json.len() > MAX_DIGEST_BYTES {
        return invalid(found, format!("{} bytes, over the {MAX_DIGEST_BYTES} a digest may take", json.len()));
    }
    let digest = match Digest::parse(json, &found.bucket, &found.key) {
        Ok(digest) => digest,
        Err(err) => return invalid(found.clone(), err.to_string()),
    };
    let (check, pending) = match signature.map(|s| signature_to_check(&digest, json, &found, s)) {
        None => (DigestCheck::Unsigned, None),
        Some(Ok(pending)) => (DigestCheck::Unverified, Some(pending)),
        Some(Err(err)) => (DigestCheck::Invalid(err.to_string()), None),
    };
    match DigestRecord::of(&digest, found.clone(), check) {
        Some(record) => Some(DigestIntake { record, pending }),
        None => invalid(found, "its times are not RFC 3339".to_owned()),
    }
}

#[cfg(test)]
mod tests;
