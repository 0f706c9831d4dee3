//! An alert's JSON, written directly: byte for byte what `serde_json` makes of [`Alert`], in about a third of
//! the instructions.
//!
//! Every alert is serialized twice on its way out (the planner stores its body, and a line sink writes it), and
//! most of its kilobyte is strings that need no escaping (ids, ARNs, event ids). `serde_json` checks strings a
//! byte at a time; this checks eight at a time and copies the runs between escapes whole.

use super::Alert;
use crate::time::{RFC3339_LEN, Timestamp, format_rfc3339_wide, write_rfc3339};

impl Alert {
    /// Appends the alert's JSON to `out`: the same bytes as `serde_json::to_writer(out, self)`.
    pub fn write_json(&self, out: &mut Vec<u8>) {
        out.reserve(1024);
        out.extend_from_slice(b"{\"id\":");
        write_str(out, &self.id);
        out.extend_from_slice(b",\"fingerprint\":");
        write_str(out, &self.fingerprint);
        out.extend_from_slice(b",\"rule\":");
        write_str(out, &self.rule);
        out.extend_from_slice(b",\"title\":");
        write_str(out, &self.title);
        out.extend_from_slice(b",\"severity\":\"");
        out.extend_from_slice(self.severity.as_str().as_bytes());
        out.extend_from_slice(b"\",\"principal\":");
        write_str(out, &self.principal);
        out.extend_from_slice(b",\"account_id\":");
        write_opt_str(out, self.account_id.as_deref());
        out.extend_from_slice(b",\"region\":");
        write_opt_str(out, self.region.as_deref());
        out.extend_from_slice(b",\"source_ip\":");
        write_opt_str(out, self.source_ip.as_deref());
        out.extend_from_slice(b",\"user_agent\":");
        write_opt_str(out, self.user_agent.as_deref());
        out.extend_from_slice(b",\"event_ids\":[");
        for (i, id) in self.event_ids.iter().enumerate() {
            if i > 0 {
                out.push(b',');
            }
            write_str(out, id);
        }
        out.extend_from_slice(b"],\"event_time\":");
        write_time(out, self.event_time);
        out.extend_from_slice(b",\"first_seen\":");
        write_time(out, self.first_seen);
        out.extend_from_slice(b",\"count\":");
        write_u64(out, self.count);
        out.extend_from_slice(b",\"summary\":");
        write_str(out, &self.summary);
        out.extend_from_slice(b",\"details\":");
        serde_json::to_writer(&mut *out, &self.details).expect("a JSON value serializes");
        out.push(b'}');
    }
}

fn write_opt_str(out: &mut Vec<u8>, value: Option<&str>) {
    match value {
        Some(value) => write_str(out, value),
        None => out.extend_from_slice(b"null"),
    }
}

fn write_time(out: &mut Vec<u8>, time: Timestamp) {
    let mut text = [0; RFC3339_LEN];
    match write_rfc3339(time, &mut text) {
        Some(text) => {
            out.push(b'"');
            out.extend_from_slice(text.as_bytes());
            out.push(b'"');
        }
        None => write_str(out, &format_rfc3339_wide(time)),
    }
}

fn write_u64(out: &mut Vec<u8>, mut n: u64) {
    let mut digits = [0u8; 20];
    let mut at = digits.len();
    loop {
        at -= 1;
        digits[at] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    out.extend_from_slice(&digits[at..]);
}

/// `text` as a JSON string, escaped as `serde_json` escapes it: `"` and `\`, the short forms `\b \f \n \r \t`,
/// and `\u00xx` for the other control characters; everything else (non-ASCII included) as it is.
fn write_str(out: &mut Vec<u8>, text: &str) {
    let bytes = text.as_bytes();
    out.push(b'"');
    let mut run = 0;
    while let Some(at) = next_escape(bytes, run) {
        out.extend_from_slice(&bytes[run..at]);
        let byte = bytes[at];
        match byte {
            b'"' => out.extend_from_slice(b"\\\""),
            b'\\' => out.extend_from_slice(b"\\\\"),
            0x08 => out.extend_from_slice(b"\\b"),
            0x0c => out.extend_from_slice(b"\\f"),
            b'\n' => out.extend_from_slice(b"\\n"),
            b'\r' => out.extend_from_slice(b"\\r"),
            b'\t' => out.extend_from_slice(b"\\t"),
            _ => {
                const HEX: &[u8; 16] = b"0123456789abcdef";
                out.extend_from_slice(&[
                    b'\\',
                    b'u',
                    b'0',
                    b'0',
                    HEX[usize::from(byte >> 4)],
                    HEX[usize::from(byte & 15)],
                ]);
            }
        }
        run = at + 1;
    }
    out.extend_from_slice(&bytes[run..]);
    out.push(b'"');
}

/// The first byte at or after `from` that a JSON string must escape.
fn next_escape(bytes: &[u8], from: usize) -> Option<usize> {
    const ONES: u64 = u64::from_ne_bytes([0x01; 8]);
    const HIGH: u64 = u64::from_ne_bytes([0x80; 8]);
    let mut at = from;
    while let Some(word) = bytes.get(at..at + 8) {
        let w = u64::from_le_bytes(word.try_into().expect("eight bytes"));
        // Bytes below 0x20, or equal to `"` or `\` (zero after xor). Each test flags its lowest true byte
        // exactly (a borrow only ever flags bytes above a true one), so the lowest flag of all is a true one.
        let below_space = w.wrapping_sub(ONES * 0x20) & !w;
        let quote = (w ^ (ONES * u64::from(b'"'))).wrapping_sub(ONES) & !(w ^ (ONES * u64::from(b'"')));
        let backslash = (w ^ (ONES * u64::from(b'\\'))).wrapping_sub(ONES) & !(w ^ (ONES * u64::from(b'\\')));
        let flags = (below_space | quote | backslash) & HIGH;
        if flags != 0 {
            return Some(at + (flags.trailing_zeros() / 8) as usize);
        }
        at += 8;
    }
    bytes[at..].iter().position(|&b| b < 0x20 || b == b'"' || b == b'\\').map(|i| at + i)
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::alert::EventIds;
    use crate::detect::rule::Severity;

    fn alert(text: &str) -> Alert {
        Alert {
            id: "0123456789abcdef0123456789abcdef".into(),
            fingerprint: "fedcba9876543210fedcba9876543210".into(),
            rule: text.into(),
            title: format!("title {text}"),
            severity: Severity::High,
            principal: format!("arn:aws:iam::123456789012:user/{text}"),
            account_id: Some("123456789012".into()),
            region: None,
            source_ip: Some(text.into()),
            user_agent: None,
            event_ids: EventIds::smallest([text, "a", "b"].into_iter().filter(|id| !id.contains('\0'))),
            event_time: 1_790_000_000,
            first_seen: 1_789_990_000,
            count: 42,
            summary: text.into(),
            details: json!({"event_name": text, "n": 3, "list": [1, "x", null]}),
        }
    }

    fn same_as_serde(alert: &Alert) {
        let mut out = Vec::new();
        alert.write_json(&mut out);
        assert_eq!(String::from_utf8(out).unwrap(), serde_json::to_string(alert).unwrap());
    }

    #[test]
    fn writes_what_serde_writes_for_every_escape_at_every_position_in_a_word() {
        let specials: Vec<char> =
            (0u8..0x20).map(char::from).chain(['"', '\\', '\u{7f}', 'é', '\u{2028}', '😀', '/']).collect();
        for special in specials {
            for at in 0..18 {
                let text: String =
                    (0..at).map(|i| char::from(b'a' + (i % 26) as u8)).chain([special]).chain("tail".chars()).collect();
                same_as_serde(&alert(&text));
            }
        }
    }

    #[test]
    fn writes_what_serde_writes_for_random_text_and_edge_values() {
        // A fixed-seed generator over an alphabet that is mostly plain, with escapes and non-ASCII mixed in.
        let alphabet: Vec<char> = "abcXYZ09:/-_. \"\\\n\t\r\u{1}\u{1f}\u{7f}éß中😀".chars().collect();
        let mut seed = 0x9e37_79b9_7f4a_7c15u64;
        for len in 0..300 {
            let text: String = (0..len % 40)
                .map(|_| {
                    seed = seed.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1_442_695_040_888_963_407);
                    alphabet[(seed >> 33) as usize % alphabet.len()]
                })
                .collect();
            same_as_serde(&alert(&text));
        }
        let mut edges = alert("");
        edges.count = u64::MAX;
        edges.event_time = 253_402_300_800; // past 9999-12-31: the wide format
        edges.first_seen = -62_167_219_201;
        edges.event_ids = EventIds::default();
        edges.details = serde_json::Value::Null;
        same_as_serde(&edges);
        edges.count = 0;
        same_as_serde(&edges);
    }
}
