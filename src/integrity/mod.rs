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
    #[error("digest s3://{bucket}/{key}: not a CloudTrail digest: {reason}")]
    Format { bucket: String, key: String, reason: String },
    #[error("digest s3://{bucket}/{key}: unsupported signature algorithm `{algorithm}`")]
    Algorithm { bucket: String, key: String, algorithm: String },
    #[error("digest s3://{bucket}/{key}: no public key with fingerprint {fingerprint}")]
    UnknownKey { bucket: String, key: String, fingerprint: String },
    #[error("digest s3://{bucket}/{key}: the signature does not verify")]
    BadSignature { bucket: String, key: String },
    #[error("digest s3://{bucket}/{key}: found at s3://{found_bucket}/{found_key}, which is not where it says it is")]
    Moved { bucket: String, key: String, found_bucket: String, found_key: String },
    #[error("public keys {origin}: {reason}")]
    Keys { origin: String, reason: String },
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
        let key = rsa::PublicKey::from_pkcs1_der(&der)
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
    let (b, k) = (bucket.to_owned(), key.to_owned());
    if digest.digest_s3_bucket != bucket || digest.digest_s3_object != key {
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
    let Some(public) = keys.get(&digest.digest_public_key_fingerprint) else {
        return Err(IntegrityError::UnknownKey {
            bucket: b,
            key: k,
            fingerprint: digest.digest_public_key_fingerprint.clone(),
        });
    };
    let signed = digest.signing_string(&sha256_hex(json));
    let signature = hex::decode(signature_hex.trim())
        .ok()
        .and_then(|bytes| rsa::pkcs1v15::Signature::try_from(bytes.as_slice()).ok());
    match signature {
        Some(signature) if public.key.verify(signed.as_bytes(), &signature).is_ok() => Ok(()),
        _ => Err(IntegrityError::BadSignature { bucket: b, key: k }),
    }
}

#[cfg(test)]
mod tests;
