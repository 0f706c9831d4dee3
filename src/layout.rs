//! CloudTrail's S3 layout: `[prefix/]AWSLogs/[o-xxxx/]<account>/CloudTrail[-Insight|-Digest]/<region>/YYYY/MM/DD/…`,
//! parsed from keys, and the backfill filters (dates, accounts, regions) that prune a listing.

use crate::time::{Timestamp, parse_date, parse_rfc3339};

/// Where a key sits in CloudTrail's layout.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Layout<'k> {
    pub organization: Option<&'k str>,
    pub account: &'k str,
    /// `CloudTrail`, `CloudTrail-Insight` or `CloudTrail-Digest`.
    pub kind: &'k str,
    pub region: &'k str,
    /// Midnight UTC of the day directory.
    pub day: Timestamp,
}

/// Parses the layout part of a key; `None` for keys outside it.
pub fn parse_key(key: &str) -> Option<Layout<'_>> {
    let mut parts = key.split('/').skip_while(|s| *s != "AWSLogs");
    parts.next()?;
    let mut next = parts.next()?;
    let organization = if next.starts_with("o-") {
        let org = next;
        next = parts.next()?;
        Some(org)
    } else {
        None
    };
    let account = next;
    if account.len() != 12 || !account.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let kind = parts.next().filter(|k| k.starts_with("CloudTrail"))?;
    let region = parts.next().filter(|r| !r.is_empty())?;
    let (year, month, day) = (parts.next()?, parts.next()?, parts.next()?);
    let day = parse_date(&format!("{year}-{month}-{day}"))?;
    Some(Layout { organization, account, kind, region, day })
}

/// The delivery time in a CloudTrail file name (`<account>_CloudTrail_<region>_<YYYYMMDDTHHMMZ>_<id>.json.gz`),
/// as written there (it sorts as text); `None` for other names.
pub fn file_time(key: &str) -> Option<&str> {
    let name = key.rsplit('/').next()?;
    name.split('_').find(|part| is_file_time(part))
}

/// The delivery time in a CloudTrail file name, as a time; `None` for other names.
pub fn delivery_time(key: &str) -> Option<Timestamp> {
    let t = file_time(key)?;
    parse_rfc3339(&format!("{}-{}-{}T{}:{}:00Z", &t[..4], &t[4..6], &t[6..8], &t[9..11], &t[11..13]))
}

/// `YYYYMMDDTHHMMZ`, as in CloudTrail's file names.
fn is_file_time(part: &str) -> bool {
    let b = part.as_bytes();
    b.len() == 14 && b[8] == b'T' && b[13] == b'Z' && b[..8].iter().chain(&b[9..13]).all(u8::is_ascii_digit)
}

/// The file name of `path` if it is a CloudTrail log or Insights file's:
/// `<12 digits>_CloudTrail[-Insight]_<region>_<YYYYMMDDTHHMMZ>_<alphanumeric id>.json[.gz]`. CloudTrail never
/// gives two files one name, which is what lets the ledger know a local file by it (`LedgerKey::local`).
pub fn cloudtrail_log_name(path: &str) -> Option<&str> {
    let name = path.rsplit('/').next()?;
    let stem = name.strip_suffix(".json.gz").or_else(|| name.strip_suffix(".json"))?;
    let mut parts = stem.split('_');
    let (account, kind, region, time, id) = (parts.next()?, parts.next()?, parts.next()?, parts.next()?, parts.next()?);
    let ok = parts.next().is_none()
        && account.len() == 12
        && account.bytes().all(|b| b.is_ascii_digit())
        && (kind == "CloudTrail" || kind == "CloudTrail-Insight")
        && !region.is_empty()
        && region.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && is_file_time(time)
        && !id.is_empty()
        && id.bytes().all(|b| b.is_ascii_alphanumeric());
    ok.then_some(name)
}

/// What a CloudTrail digest file's name says:
/// `<account>_CloudTrail-Digest_<region>_<trail>_<home region>_<YYYYMMDDTHHMMSSZ>.json[.gz]`. A trail's name may
/// hold underscores, a region's may not; log files' names carry no trail.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DigestName<'n> {
    pub account: &'n str,
    pub region: &'n str,
    pub trail: &'n str,
    /// The end of the hour the digest covers.
    pub end: Timestamp,
}

/// Parses a digest file's name (the last segment of `path`); `None` for any other name.
pub fn cloudtrail_digest_name(path: &str) -> Option<DigestName<'_>> {
    let name = path.rsplit(['/', '\\']).next()?;
    let stem = name.strip_suffix(".json.gz").or_else(|| name.strip_suffix(".json"))?;
    let mut parts = stem.splitn(3, '_');
    let (account, kind, rest) = (parts.next()?, parts.next()?, parts.next()?);
    let (region, rest) = rest.split_once('_')?;
    let mut tail = rest.rsplitn(3, '_');
    let (time, _home_region, trail) = (tail.next()?, tail.next()?, tail.next()?);
    let t = time.as_bytes();
    let ok = account.len() == 12
        && account.bytes().all(|b| b.is_ascii_digit())
        && kind == "CloudTrail-Digest"
        && !region.is_empty()
        && !trail.is_empty()
        && t.len() == 16
        && t[8] == b'T'
        && t[15] == b'Z'
        && t[..8].iter().chain(&t[9..15]).all(u8::is_ascii_digit);
    if !ok {
        return None;
    }
    let text =
        format!("{}-{}-{}T{}:{}:{}Z", &time[..4], &time[4..6], &time[6..8], &time[9..11], &time[11..13], &time[13..15]);
    Some(DigestName { account, region, trail, end: parse_rfc3339(&text)? })
}

/// The order a backfill takes files in: account by account, and within an account by delivery time across its
/// regions, then by key.
///
/// Why: the key order (account, region, day) replays one region's whole day before the next region's, so an
/// identity's calls in two regions would reach the correlation windows and the behavioural state hours apart
/// (and windows only look back an hour for late files). Identities belong to one account, so time order within
/// an account is what they need; keeping accounts apart keeps a unit's files on one account's identities, which
/// is what makes folding a unit cheap (time order across a whole organisation cost 20% of replay throughput).
pub fn delivery_order(key: &str) -> (&str, &str, &str) {
    let name = key.rsplit('/').next().unwrap_or(key);
    let account = parse_key(key).map(|l| l.account).or_else(|| {
        let first = name.split('_').next()?;
        (first.len() == 12 && first.bytes().all(|b| b.is_ascii_digit())).then_some(first)
    });
    (account.unwrap_or(""), file_time(key).unwrap_or(""), key)
}

/// Which files a backfill takes. Empty lists mean all.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Filters {
    /// First day taken (midnight UTC).
    pub since: Option<Timestamp>,
    /// Last day taken (midnight UTC), inclusive.
    pub until: Option<Timestamp>,
    pub accounts: Vec<String>,
    pub regions: Vec<String>,
    /// Take digest files too (log file validation).
    pub digests: bool,
}

impl Filters {
    /// Whether anything narrows the backfill (taking digests too does not).
    pub fn narrows(&self) -> bool {
        self != &Filters { digests: self.digests, ..Filters::default() }
    }

    pub fn account(&self, account: &str) -> bool {
        self.accounts.is_empty() || self.accounts.iter().any(|a| a == account)
    }

    pub fn region(&self, region: &str) -> bool {
        self.regions.is_empty() || self.regions.iter().any(|r| r == region)
    }

    pub fn day(&self, day: Timestamp) -> bool {
        self.since.is_none_or(|s| day >= s) && self.until.is_none_or(|u| day <= u)
    }

    /// Whether a listed key is taken: log and Insight files within the filters, and digests when asked for.
    pub fn keeps(&self, key: &str) -> bool {
        match parse_key(key) {
            Some(l) => {
                (self.digests || l.kind != "CloudTrail-Digest")
                    && self.account(l.account)
                    && self.region(l.region)
                    && self.day(l.day)
            }
            // Outside the layout: only taken when nothing narrows the backfill.
            None => !self.narrows() && !key.ends_with('/'),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_times_come_from_cloudtrail_names_only() {
        let cases = [
            (
                "AWSLogs/111122223333/CloudTrail/eu-west-1/2026/10/01/111122223333_CloudTrail_eu-west-1_20261001T0020Z_Gw1.json.gz",
                Some("20261001T0020Z"),
            ),
            (
                "s3://b/AWSLogs/o-abc/111122223333/CloudTrail/us_gov_x/2026/10/01/111122223333_CloudTrail_us_gov_x_20261001T2359Z_x.json.gz",
                Some("20261001T2359Z"),
            ),
            ("/spool/111122223333_CloudTrail_eu-west-1_20261001T002Z_Gw1.json.gz", None),
            ("/spool/events.json", None),
            ("/spool/20261001T0020Z/x.json", None),
        ];
        for (key, expected) in cases {
            assert_eq!(file_time(key), expected, "{key}");
        }
        let mut keys = [
            "AWSLogs/222222222222/CloudTrail/us-east-1/2026/10/01/222222222222_CloudTrail_us-east-1_20261001T0000Z_d.json.gz",
            "AWSLogs/111111111111/CloudTrail/us-east-1/2026/10/01/111111111111_CloudTrail_us-east-1_20261001T0005Z_a.json.gz",
            "AWSLogs/111111111111/CloudTrail/eu-west-1/2026/10/01/111111111111_CloudTrail_eu-west-1_20261001T0010Z_b.json.gz",
            "AWSLogs/111111111111/CloudTrail/eu-west-1/2026/10/01/111111111111_CloudTrail_eu-west-1_20261001T0000Z_c.json.gz",
            "/spool/111111111111_CloudTrail_eu-west-1_20261001T0007Z_e.json.gz",
            "other/readme.json",
        ];
        keys.sort_by(|a, b| delivery_order(a).cmp(&delivery_order(b)));
        assert_eq!(
            keys.iter().map(|k| &k[k.len() - 9..]).collect::<Vec<_>>(),
            ["adme.json", "c.json.gz", "a.json.gz", "e.json.gz", "b.json.gz", "d.json.gz"]
        );
    }

    /// A digest's name gives its account, region, trail (underscores and all) and end; log files' names and
    /// names missing a part are not digests'.
    #[test]
    fn digest_names_say_account_region_trail_and_end() {
        let digest = |account, region, trail, end| Some(DigestName { account, region, trail, end });
        let cases = [
            (
                "AWSLogs/111122223333/CloudTrail-Digest/eu-west-1/2026/10/01/111122223333_CloudTrail-Digest_eu-west-1_org_us-east-1_20261001T013015Z.json.gz",
                digest("111122223333", "eu-west-1", "org", 1_790_818_215),
            ),
            (
                "/spool/111122223333_CloudTrail-Digest_eu-west-1_data_events_2_us-east-1_20261001T010000Z.json",
                digest("111122223333", "eu-west-1", "data_events_2", 1_790_816_400),
            ),
            ("111122223333_CloudTrail-Digest_eu-west-1_20261001T010000Z.json.gz", None),
            ("111122223333_CloudTrail_eu-west-1_20261001T0100Z_Gw1.json.gz", None),
            ("111122223333_CloudTrail-Digest_eu-west-1_org_us-east-1_20261001T0100Z.json.gz", None),
            ("11112222333_CloudTrail-Digest_eu-west-1_org_us-east-1_20261001T010000Z.json.gz", None),
        ];
        for (path, expected) in cases {
            assert_eq!(cloudtrail_digest_name(path), expected, "{path}");
        }
    }

    /// (organisation, account, kind, region, day) of a key.
    type Parts<'a> = (Option<&'a str>, &'a str, &'a str, &'a str, Timestamp);

    #[test]
    fn parses_keys() {
        let day = |s| parse_date(s).unwrap();
        let cases: &[(&str, Option<Parts<'_>>)] = &[
            (
                "AWSLogs/111111111111/CloudTrail/us-east-1/2026/10/01/111111111111_CloudTrail_us-east-1_20261001T1200Z_a.json.gz",
                Some((None, "111111111111", "CloudTrail", "us-east-1", day("2026-10-01"))),
            ),
            (
                "trails/AWSLogs/o-abc123/222222222222/CloudTrail-Insight/eu-west-1/2026/01/31/f.json.gz",
                Some((Some("o-abc123"), "222222222222", "CloudTrail-Insight", "eu-west-1", day("2026-01-31"))),
            ),
            ("AWSLogs/111111111111/CloudTrail-Digest/us-east-1/2026/10/01/d.json.gz", {
                Some((None, "111111111111", "CloudTrail-Digest", "us-east-1", day("2026-10-01")))
            }),
            ("AWSLogs/111111111111/Config/us-east-1/2026/10/01/x.json.gz", None),
            ("AWSLogs/12345/CloudTrail/us-east-1/2026/10/01/x.json.gz", None),
            ("AWSLogs/111111111111/CloudTrail/us-east-1/2026/13/01/x.json.gz", None),
            ("other/key.json.gz", None),
        ];
        for (key, want) in cases {
            let got = parse_key(key).map(|l| (l.organization, l.account, l.kind, l.region, l.day));
            assert_eq!(got, *want, "{key}");
        }
    }

    #[test]
    fn filters_prune_by_day_account_and_region() {
        let filters = Filters {
            since: parse_date("2026-10-01"),
            until: parse_date("2026-10-02"),
            accounts: vec!["111111111111".into()],
            regions: vec!["us-east-1".into(), "eu-west-1".into()],
            digests: false,
        };
        let key = |acct: &str, kind: &str, region: &str, date: &str| {
            format!("AWSLogs/{acct}/{kind}/{region}/{date}/f.json.gz")
        };
        assert!(filters.keeps(&key("111111111111", "CloudTrail", "us-east-1", "2026/10/01")));
        assert!(filters.keeps(&key("111111111111", "CloudTrail-Insight", "eu-west-1", "2026/10/02")));
        assert!(!filters.keeps(&key("111111111111", "CloudTrail", "us-east-1", "2026/09/30")));
        assert!(!filters.keeps(&key("111111111111", "CloudTrail", "us-east-1", "2026/10/03")));
        assert!(!filters.keeps(&key("222222222222", "CloudTrail", "us-east-1", "2026/10/01")));
        assert!(!filters.keeps(&key("111111111111", "CloudTrail", "ap-south-1", "2026/10/01")));
        assert!(!filters.keeps(&key("111111111111", "CloudTrail-Digest", "us-east-1", "2026/10/01")));
        assert!(!filters.keeps("elsewhere/f.json.gz"));
        assert!(Filters::default().keeps("elsewhere/f.json.gz"));
        assert!(!Filters::default().keeps(&key("111111111111", "CloudTrail-Digest", "us-east-1", "2026/10/01")));
        // Validation takes digests within the same filters; asking for them narrows nothing.
        let validating = Filters { digests: true, ..filters };
        assert!(validating.keeps(&key("111111111111", "CloudTrail-Digest", "us-east-1", "2026/10/01")));
        assert!(!validating.keeps(&key("111111111111", "CloudTrail-Digest", "us-east-1", "2026/09/30")));
        let everything = Filters { digests: true, ..Filters::default() };
        assert!(!everything.narrows() && everything.keeps("elsewhere/f.json.gz"));
    }
}
