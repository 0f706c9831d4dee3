//! UTC timestamps as whole seconds since the Unix epoch: parsing CloudTrail's `eventTime` and RFC 3339 output.
//!
//! CloudTrail writes `2026-10-01T12:00:00Z`; the fast path handles exactly that shape without allocating.
//! Fractional seconds and numeric offsets are accepted too, because hand-written and older files carry them.
//! Anything else is `None`, and the caller counts the record as skipped.

/// Seconds since 1970-01-01T00:00:00Z.
pub type Timestamp = i64;

/// The current time.
pub fn now() -> Timestamp {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs() as i64)
}

/// Parses an RFC 3339 timestamp (`YYYY-MM-DDTHH:MM:SS[.frac](Z|±HH:MM)`) to whole seconds, truncating fractions.
pub fn parse_rfc3339(text: &str) -> Option<Timestamp> {
    parse_date_time(text, false)
}

/// An event's `eventTime`: RFC 3339, or the same without a zone (`2022-11-21 18:06:52`, `…52.000000000`,
/// `2022-11-21T18:06:52`), as SIEMs and data lakes export CloudTrail events; CloudTrail's times are UTC, so a time
/// without a zone is read as UTC.
pub fn parse_event_time(text: &str) -> Option<Timestamp> {
    parse_date_time(text, true)
}

fn parse_date_time(text: &str, zone_optional: bool) -> Option<Timestamp> {
    let b = text.as_bytes();
    if b.len() < 19 || b[4] != b'-' || b[7] != b'-' || !matches!(b[10], b'T' | b't' | b' ') {
        return None;
    }
    if b[13] != b':' || b[16] != b':' {
        return None;
    }
    let year = digits(&b[0..4])?;
    let month = digits(&b[5..7])?;
    let day = digits(&b[8..10])?;
    let hour = digits(&b[11..13])?;
    let minute = digits(&b[14..16])?;
    let second = digits(&b[17..19])?;
    if !(1..=12).contains(&month) || day == 0 || day > days_in_month(year, month) {
        return None;
    }
    // A leap second (`:60`) is folded into the next second, as chrono and time do.
    if hour > 23 || minute > 59 || second > 60 {
        return None;
    }
    let mut rest = &b[19..];
    if let [b'.', tail @ ..] = rest {
        let n = tail.iter().take_while(|c| c.is_ascii_digit()).count();
        if n == 0 {
            return None;
        }
        rest = &tail[n..];
    }
    let offset = match rest {
        [b'Z' | b'z'] => 0,
        [] if zone_optional => 0,
        [sign @ (b'+' | b'-'), h1, h2, b':', m1, m2] => {
            let hours = digits(&[*h1, *h2])?;
            let minutes = digits(&[*m1, *m2])?;
            if hours > 23 || minutes > 59 {
                return None;
            }
            let secs = (hours * 3600 + minutes * 60) as i64;
            if *sign == b'+' { secs } else { -secs }
        }
        _ => return None,
    };
    let days = days_from_civil(year as i64, month, day);
    Some(days * 86_400 + (hour * 3600 + minute * 60 + second) as i64 - offset)
}

/// Formats whole seconds as `YYYY-MM-DDTHH:MM:SSZ`.
pub fn format_rfc3339(ts: Timestamp) -> String {
    let mut out = [0u8; RFC3339_LEN];
    match write_rfc3339(ts, &mut out) {
        Some(text) => text.to_owned(),
        None => format_rfc3339_wide(ts),
    }
}

/// [`format_rfc3339`] with the formatting machinery, for the years [`write_rfc3339`] does not fit.
pub fn format_rfc3339_wide(ts: Timestamp) -> String {
    let (year, month, day, secs) = civil_parts(ts);
    format!("{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z", secs / 3600, secs % 3600 / 60, secs % 60)
}

/// The length of [`write_rfc3339`]'s text.
pub const RFC3339_LEN: usize = 20;

/// Writes `ts` as [`format_rfc3339`] does into `out` without formatting machinery (every alert carries two
/// times); `None` for a year outside 0 to 9999, which does not fit.
pub fn write_rfc3339(ts: Timestamp, out: &mut [u8; RFC3339_LEN]) -> Option<&str> {
    let (year, month, day, secs) = civil_parts(ts);
    let year = u32::try_from(year).ok().filter(|y| *y <= 9999)?;
    let two = |out: &mut [u8], n: u32| {
        out[0] = b'0' + (n / 10) as u8;
        out[1] = b'0' + (n % 10) as u8;
    };
    two(&mut out[0..2], year / 100);
    two(&mut out[2..4], year % 100);
    out[4] = b'-';
    two(&mut out[5..7], month);
    out[7] = b'-';
    two(&mut out[8..10], day);
    out[10] = b'T';
    let secs = secs as u32;
    two(&mut out[11..13], secs / 3600);
    out[13] = b':';
    two(&mut out[14..16], secs % 3600 / 60);
    out[16] = b':';
    two(&mut out[17..19], secs % 60);
    out[19] = b'Z';
    std::str::from_utf8(out).ok()
}

/// Year, month, day and seconds into the day.
fn civil_parts(ts: Timestamp) -> (i64, u32, u32, i64) {
    let (year, month, day) = civil_from_days(ts.div_euclid(86_400));
    (year, month, day, ts.rem_euclid(86_400))
}

/// Parses a calendar date `YYYY-MM-DD` to the timestamp of its midnight UTC.
pub fn parse_date(text: &str) -> Option<Timestamp> {
    let b = text.as_bytes();
    if b.len() != 10 || b[4] != b'-' || b[7] != b'-' {
        return None;
    }
    let (year, month, day) = (digits(&b[0..4])?, digits(&b[5..7])?, digits(&b[8..10])?);
    if !(1..=12).contains(&month) || day == 0 || day > days_in_month(year, month) {
        return None;
    }
    Some(days_from_civil(year as i64, month, day) * 86_400)
}

fn digits(b: &[u8]) -> Option<u32> {
    b.iter().try_fold(0u32, |acc, c| c.is_ascii_digit().then(|| acc * 10 + u32::from(c - b'0')))
}

fn days_in_month(year: u32, month: u32) -> u32 {
    match month {
        2 if year.is_multiple_of(4) && (!year.is_multiple_of(100) || year.is_multiple_of(400)) => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

// Howard Hinnant's `days_from_civil` and `civil_from_days`: exact over the proleptic Gregorian calendar.
fn days_from_civil(year: i64, month: u32, day: u32) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let m = i64::from(month);
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + i64::from(day) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

/// Wall-clock time in milliseconds since the epoch.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64)
}
#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_formats() {
        let cases: &[(&str, Option<&str>)] = &[
            ("2026-10-01T12:00:00Z", Some("2026-10-01T12:00:00Z")),
            ("1970-01-01T00:00:00Z", Some("1970-01-01T00:00:00Z")),
            ("2024-02-29T23:59:59Z", Some("2024-02-29T23:59:59Z")),
            ("2023-07-10T12:15:03.123456Z", Some("2023-07-10T12:15:03Z")),
            ("2023-07-10T14:15:03+02:00", Some("2023-07-10T12:15:03Z")),
            ("2023-07-10T10:15:03-02:00", Some("2023-07-10T12:15:03Z")),
            ("2023-07-10t12:15:03z", Some("2023-07-10T12:15:03Z")),
            ("2016-12-31T23:59:60Z", Some("2017-01-01T00:00:00Z")),
            ("1969-12-31T23:59:59Z", Some("1969-12-31T23:59:59Z")),
            ("ThisIsAWrongEventTime", None),
            ("2023-02-29T00:00:00Z", None),
            ("2023-13-01T00:00:00Z", None),
            ("2023-07-10T24:00:00Z", None),
            ("2023-07-10T12:15:03", None),
            ("2023-07-10T12:15:03.Z", None),
            ("2023-07-10T12:15:03+0200", None),
            ("", None),
            ("2023-07-10T12:1５:03Z", None),
        ];
        for (input, expected) in cases {
            let got = parse_rfc3339(input).map(format_rfc3339);
            assert_eq!(got.as_deref(), *expected, "input {input:?}");
        }
    }

    #[test]
    fn dates() {
        assert_eq!(parse_date("2026-10-01").map(format_rfc3339).as_deref(), Some("2026-10-01T00:00:00Z"));
        assert_eq!(parse_date("2026-10-32"), None);
        assert_eq!(parse_date("2026-1-01"), None);
    }

    #[test]
    fn formats_without_fmt_as_fmt_does() {
        let fmt = format_rfc3339_wide;
        let edges = [0, -1, 59, 3599, 86_399, 86_400, 951_782_400, 1_790_000_000, 253_402_300_799, -62_167_219_200];
        let steps = (0..20_000i64).map(|i| -3_000_000_000 + i * 13_457_777);
        for ts in edges.into_iter().chain(steps) {
            assert_eq!(format_rfc3339(ts), fmt(ts), "ts {ts}");
        }
        // Years past 9999 and before 0 fall back to the formatter.
        assert_eq!(format_rfc3339(253_402_300_800), "10000-01-01T00:00:00Z");
        assert_eq!(write_rfc3339(253_402_300_800, &mut [0; RFC3339_LEN]), None);
        assert_eq!(write_rfc3339(-62_167_219_201, &mut [0; RFC3339_LEN]), None);
    }

    #[test]
    fn round_trips_every_day_for_centuries() {
        let mut day = days_from_civil(1900, 1, 1);
        while day < days_from_civil(2200, 1, 1) {
            let (y, m, d) = civil_from_days(day);
            assert_eq!(days_from_civil(y, m, d), day);
            day += 1;
        }
    }
}
