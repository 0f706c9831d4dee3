//! Stage 3, decode: raw file bytes → JSON bytes. Gzip (also multi-member) or plain JSON, told apart by magic bytes.
//!
//! Architecture invariant: pure and synchronous; it never panics on input and never trusts a size the input claims,
//! so a gzip bomb stops at the configured decompressed-size cap.

use std::io::Read;

use flate2::read::MultiGzDecoder;

/// Why bytes could not be decoded. `kind()` is the bounded metric label.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum DecodeError {
    #[error("empty file")]
    Empty,
    #[error("unknown format: neither gzip nor JSON (first byte 0x{0:02x})")]
    UnknownFormat(u8),
    #[error("truncated gzip stream")]
    Truncated,
    #[error("corrupt gzip stream: {0}")]
    Corrupt(String),
    #[error("decompressed size exceeds the cap of {cap} bytes")]
    TooLarge { cap: u64 },
}

impl DecodeError {
    pub fn kind(&self) -> &'static str {
        match self {
            DecodeError::Empty => "empty",
            DecodeError::UnknownFormat(_) => "unknown_format",
            DecodeError::Truncated => "truncated_gzip",
            DecodeError::Corrupt(_) => "corrupt_gzip",
            DecodeError::TooLarge { .. } => "too_large",
        }
    }
}

/// What the input turned out to be.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Encoding {
    Gzip,
    Json,
}

const GZIP_MAGIC: [u8; 2] = [0x1f, 0x8b];

/// Decodes `input` into `out` (cleared first, its allocation reused), refusing more than `max_decoded_bytes`.
pub fn decode_into(input: &[u8], out: &mut Vec<u8>, max_decoded_bytes: u64) -> Result<Encoding, DecodeError> {
    out.clear();
    if input.starts_with(&GZIP_MAGIC) {
        gunzip_into(input, out, max_decoded_bytes)?;
        return Ok(Encoding::Gzip);
    }
    let first = input.iter().copied().find(|b| !b.is_ascii_whitespace());
    match first {
        None => Err(DecodeError::Empty),
        Some(b'{' | b'[') => {
            if input.len() as u64 > max_decoded_bytes {
                return Err(DecodeError::TooLarge { cap: max_decoded_bytes });
            }
            out.extend_from_slice(input);
            Ok(Encoding::Json)
        }
        // A UTF-8 byte order mark before the JSON is tolerated, as most JSON readers do.
        Some(0xef) if input.starts_with(b"\xef\xbb\xbf") => decode_into(&input[3..], out, max_decoded_bytes),
        Some(other) => Err(DecodeError::UnknownFormat(other)),
    }
}

fn gunzip_into(input: &[u8], out: &mut Vec<u8>, cap: u64) -> Result<(), DecodeError> {
    // The trailer's ISIZE (size mod 2^32 of the last member) is only a hint: it sizes the buffer, never the cap.
    if input.len() >= 18 {
        let tail = &input[input.len() - 4..];
        let hint = u32::from_le_bytes([tail[0], tail[1], tail[2], tail[3]]) as u64;
        // The extra 64 bytes leave room for the parser's padding without a reallocation.
        out.reserve(hint.min(cap).min(input.len() as u64 * 64) as usize + 64);
    }
    let mut decoder = MultiGzDecoder::new(input);
    // Grown by hand rather than by `read_to_end`, whose doubling can allocate up to twice the cap: the buffer never
    // holds more than the cap plus one byte (to tell "exactly the cap" from "more") and the parser's padding.
    let limit = usize::try_from(cap.saturating_add(1)).unwrap_or(usize::MAX);
    loop {
        if out.len() >= limit {
            out.clear();
            return Err(DecodeError::TooLarge { cap });
        }
        if out.len() == out.capacity() {
            let grown = out.capacity().max(1 << 16).saturating_mul(2).min(limit.saturating_add(64));
            out.reserve_exact(grown - out.len());
        }
        // Read into zeroed space a chunk at a time, so that each byte is zeroed once.
        let start = out.len();
        let end = out.capacity().min(limit).min(start + (256 << 10));
        out.resize(end, 0);
        let read = decoder.read(&mut out[start..]).map_err(|err| match err.kind() {
            std::io::ErrorKind::UnexpectedEof => DecodeError::Truncated,
            _ => DecodeError::Corrupt(err.to_string().to_lowercase()),
        });
        let n = match read {
            Ok(n) => n,
            Err(err) => {
                out.truncate(start);
                return Err(err);
            }
        };
        out.truncate(start + n);
        if n == 0 {
            return Ok(());
        }
    }
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use flate2::{Compression, write::GzEncoder};

    use super::*;

    fn gzip(data: &[u8]) -> Vec<u8> {
        let mut enc = GzEncoder::new(Vec::new(), Compression::fast());
        enc.write_all(data).unwrap();
        enc.finish().unwrap()
    }

    #[track_caller]
    fn check(input: &[u8], cap: u64, expected: Result<(Encoding, &[u8]), DecodeError>) {
        let mut out = Vec::new();
        let got = decode_into(input, &mut out, cap).map(|enc| (enc, out.as_slice()));
        assert_eq!(got, expected);
    }

    #[test]
    fn decodes_by_magic_not_name() {
        let json = br#"{"Records":[]}"#;
        let mut multi = gzip(br#"{"Records":"#);
        multi.extend(gzip(b"[]}"));
        let mut trailing_garbage = gzip(json);
        trailing_garbage.extend_from_slice(b"garbage!");
        let truncated = gzip(json);
        let truncated = &truncated[..truncated.len() - 6];
        let mut corrupt = gzip(&[b'x'; 1000]);
        corrupt[12] ^= 0xff;
        check(json, 100, Ok((Encoding::Json, json)));
        check(b"  \n{}", 100, Ok((Encoding::Json, b"  \n{}")));
        check(b"\xef\xbb\xbf{}", 100, Ok((Encoding::Json, b"{}")));
        check(&gzip(json), 100, Ok((Encoding::Gzip, json)));
        check(&multi, 100, Ok((Encoding::Gzip, json)));
        check(b"", 100, Err(DecodeError::Empty));
        check(b"   ", 100, Err(DecodeError::Empty));
        check(b"PK\x03\x04", 100, Err(DecodeError::UnknownFormat(b'P')));
        check(truncated, 100, Err(DecodeError::Truncated));
        check(&gzip(&[b' '; 101]), 100, Err(DecodeError::TooLarge { cap: 100 }));
        check(&gzip(&[b' '; 100]), 100, Ok((Encoding::Gzip, &[b' '; 100])));
        check(&[b'{'; 101], 100, Err(DecodeError::TooLarge { cap: 100 }));
        let mut out = Vec::new();
        assert!(matches!(decode_into(&corrupt, &mut out, 10_000), Err(DecodeError::Corrupt(_))));
        assert!(decode_into(&trailing_garbage, &mut out, 10_000).is_err());
    }

    #[test]
    fn bomb_stops_at_the_cap() {
        let bomb = gzip(&vec![b'a'; 50 << 20]);
        let mut out = Vec::new();
        assert_eq!(decode_into(&bomb, &mut out, 1 << 20), Err(DecodeError::TooLarge { cap: 1 << 20 }));
        assert!(out.capacity() < 4 << 20, "the size hint must not allocate past the cap");
    }

    /// The buffer never grows past the cap (plus the parser's padding), whatever the cap: doubling would reach
    /// almost twice the cap.
    #[test]
    fn the_buffer_stays_within_the_cap() {
        let json = vec![b' '; 3 << 20];
        let gz = gzip(&json);
        for cap in [(1 << 20) + 1, 3 << 20, (3 << 20) + 7, 5 << 20] {
            let mut out = Vec::new();
            let res = decode_into(&gz, &mut out, cap);
            assert!(out.capacity() as u64 <= cap + 1 + 64, "cap {cap}: capacity {}", out.capacity());
            assert_eq!(res.is_ok(), cap >= 3 << 20, "cap {cap}");
        }
    }
}
