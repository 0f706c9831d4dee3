//! Data-driven parse tests: a file's JSON in, the events and counts (or the rejection) out.

use super::*;

/// A compact rendering of an event, for expectations that read like the input.
fn render(e: &Event<'_>) -> String {
    let actions: Vec<String> = e
        .actions
        .iter()
        .flatten()
        .map(|a| {
            let mut s = String::new();
            a.write_to(&mut s);
            s
        })
        .collect();
    format!(
        "{} {} {:?} {} err={} login={:?} key={:?} ip={:?} region={:?} actions={}",
        crate::time::format_rfc3339(e.time),
        e.principal.key.to_canonical(),
        e.outcome,
        e.principal.kind,
        e.is_error(),
        e.console_login.map(|l| (l.success, l.mfa_used)),
        e.access_key,
        e.source_ip,
        e.region,
        actions.join(","),
    )
}

/// The rendered events and the non-zero counts a file must yield.
type Expected<'a> = Result<(&'a [&'a str], &'a [(&'a str, u64)]), ParseError>;

#[track_caller]
fn check(json: &str, expected: Expected<'_>) {
    let mut events = Vec::new();
    let got = Parser::default().parse_unpadded(json.as_bytes(), &mut |e, _| events.push(render(e)));
    match (got, expected) {
        (Ok(counts), Ok((want_events, want_counts))) => {
            assert_eq!(events, want_events, "events of {json}");
            let mut got_counts = vec![("records", counts.records), ("insights", counts.insights)];
            for reason in SkipReason::ALL {
                let n = counts.skipped[reason as usize];
                if n > 0 {
                    got_counts.push((reason.kind(), n));
                }
            }
            assert_eq!(got_counts, want_counts, "counts of {json}");
        }
        (got, want) => assert_eq!(got.map(|_| ()), want.map(|_| ()), "{json}"),
    }
}

const USER: &str = r#""userIdentity":{"type":"IAMUser","arn":"arn:aws:iam::111111111111:user/alice","accountId":"111111111111","accessKeyId":"AKIAALICE"}"#;

#[test]
fn records_become_events() {
    let file = format!(
        r#"{{"Records":[
        {{"eventTime":"2026-10-01T12:00:00Z","eventSource":"s3.amazonaws.com","eventName":"HeadObject",{USER},"sourceIPAddress":"198.51.100.1","awsRegion":"eu-west-1","newField":{{"x":[1,2]}}}},
        {{"eventTime":"2026-10-01T12:00:01Z","eventSource":"ec2.amazonaws.com","eventName":"RunInstances",{USER},"errorCode":"Client.UnauthorizedOperation"}},
        {{"eventTime":"2026-10-01T12:00:02Z","eventSource":"ec2.amazonaws.com","eventName":"RunInstances",{USER},"errorCode":"ThrottlingException"}},
        {{"eventTime":"2026-10-01T12:00:03Z","eventSource":"iam.amazonaws.com","eventName":"GetUser",{USER},"errorCode":"AccessDenied"}},
        {{"eventTime":"2026-10-01T12:00:04Z","eventSource":"signin.amazonaws.com","eventName":"ConsoleLogin",{USER},"responseElements":{{"ConsoleLogin":"Success"}},"additionalEventData":{{"MFAUsed":"No"}}}},
        {{"eventTime":"2026-10-01T12:00:05Z","eventSource":"signin.amazonaws.com","eventName":"ConsoleLogin",{USER},"responseElements":{{"ConsoleLogin":"Failure"}},"errorMessage":"Failed authentication"}},
        {{"eventTime":"2026-10-01T12:00:06Z","eventSource":"kms.amazonaws.com","eventName":"Decrypt","eventType":"AwsServiceEvent","userIdentity":{{"accountId":"1","invokedBy":"kms.amazonaws.com"}}}}
    ]}}"#
    );
    check(
        &file,
        Ok((
            &[
                r#"2026-10-01T12:00:00Z arn:aws:iam::111111111111:user/alice Used IAMUser err=false login=None key=Some("AKIAALICE") ip=Some("198.51.100.1") region=Some("eu-west-1") actions=s3:GetObject"#,
                r#"2026-10-01T12:00:01Z arn:aws:iam::111111111111:user/alice Denied IAMUser err=true login=None key=Some("AKIAALICE") ip=None region=None actions=ec2:RunInstances"#,
                r#"2026-10-01T12:00:02Z arn:aws:iam::111111111111:user/alice Used IAMUser err=true login=None key=Some("AKIAALICE") ip=None region=None actions=ec2:RunInstances"#,
                r#"2026-10-01T12:00:03Z arn:aws:iam::111111111111:user/alice Denied IAMUser err=true login=None key=Some("AKIAALICE") ip=None region=None actions=iam:GetUser"#,
                r#"2026-10-01T12:00:04Z arn:aws:iam::111111111111:user/alice Used IAMUser err=false login=Some((true, false)) key=Some("AKIAALICE") ip=None region=None actions="#,
                r#"2026-10-01T12:00:05Z arn:aws:iam::111111111111:user/alice FailedSignIn IAMUser err=true login=Some((false, false)) key=Some("AKIAALICE") ip=None region=None actions="#,
                r#"2026-10-01T12:00:06Z service:kms.amazonaws.com Used AWSService err=false login=None key=None ip=None region=None actions="#,
            ],
            &[("records", 7), ("insights", 0)],
        )),
    );
}

#[test]
fn bad_records_are_skipped_and_counted() {
    let file = format!(
        r#"{{"Records":[
        7, null, "x", [],
        {{"eventSource":"s3.amazonaws.com","eventName":"GetObject",{USER}}},
        {{"eventTime":"ThisIsAWrongEventTime","eventSource":"s3.amazonaws.com","eventName":"GetObject",{USER}}},
        {{"eventTime":12345,"eventSource":"s3.amazonaws.com","eventName":"GetObject",{USER}}},
        {{"eventTime":"2026-10-01T12:00:00Z","eventName":"GetObject",{USER}}},
        {{"eventTime":"2026-10-01T12:00:00Z","eventSource":"s3.amazonaws.com","eventName":"",{USER}}},
        {{"eventTime":"2026-10-01T12:00:00Z","eventSource":"s3.amazonaws.com","eventName":"GetObject"}},
        {{"eventTime":"2026-10-01T12:00:00Z","eventSource":"s3.amazonaws.com","eventName":"GetObject","userIdentity":"root"}},
        {{"eventVersion":null,"eventTime":null,"eventSource":null,"eventName":null,"userIdentity":null,"errorCode":null}},
        {{"eventType":"AwsCloudTrailInsight","eventTime":"2026-10-01T12:00:00Z","insightDetails":{{"state":"Start"}}}}
    ]}}"#
    );
    check(
        &file,
        Ok((
            &[],
            &[
                ("records", 13),
                ("insights", 1),
                ("not_an_object", 4),
                ("missing_event_time", 3),
                ("invalid_event_time", 1),
                ("missing_event_source", 1),
                ("missing_event_name", 1),
                ("no_identity", 2),
            ],
        )),
    );
}

#[test]
fn files_that_are_not_log_files_are_rejected() {
    check(r#"{"Records":[]}"#, Ok((&[], &[("records", 0), ("insights", 0)])));
    check(r#"{"Records":[],"other":{"a":1}}"#, Ok((&[], &[("records", 0), ("insights", 0)])));
    check(
        r#"{"awsAccountId":"1","digestStartTime":"2026-10-01T12:00:00Z","logFiles":[{"s3Object":"k"}]}"#,
        Err(ParseError::Digest),
    );
    check(r#"{"hello":"world"}"#, Err(ParseError::NotCloudTrail("no `Records` key")));
    check(r#"{"Records":{"a":1}}"#, Err(ParseError::NotCloudTrail("`Records` is not an array")));
    check(r#"[{"eventTime":"x"}]"#, Err(ParseError::NotCloudTrail("top level is not an object")));
    check(r#""Records""#, Err(ParseError::NotCloudTrail("top level is not an object")));
    let mut parser = Parser::default();
    let truncated = br#"{"Records":[{"eventTime":"2026-10-01T12:00:00Z""#;
    assert!(matches!(parser.parse_unpadded(truncated, &mut |_, _| {}), Err(ParseError::InvalidJson(_))));
    assert!(matches!(
        parser.parse_unpadded(b"{\"Records\":[]} trailing", &mut |_, _| {}),
        Err(ParseError::InvalidJson(_))
    ));
    assert_eq!(
        parser.parse_unpadded(br#"{"Records":[{"a":1,}]}"#, &mut |_, _| {}),
        Err(ParseError::InvalidJson("expected object key at byte 19".to_owned()))
    );
    // The parser is reusable after an error.
    assert_eq!(parser.parse_unpadded(br#"{"Records":[]}"#, &mut |_, _| {}).map(|c| c.records), Ok(0));
}

#[test]
fn escaped_strings_are_unescaped() {
    let file = r#"{"Records":[{"eventTime":"2026-10-01T12:00:00Z","eventSource":"iam.amazonaws.com","eventName":"GetUser","userIdentity":{"type":"IAMUser","arn":"arn:aws:iam::1:user/a\u0062c"},"userAgent":"aws-cli/2 \"quoted\""}]}"#;
    let mut got = Vec::new();
    Parser::default()
        .parse_unpadded(file.as_bytes(), &mut |e, _| {
            got.push((e.principal.key.to_canonical(), e.user_agent.map(str::to_owned)))
        })
        .unwrap();
    assert_eq!(got, [("arn:aws:iam::1:user/abc".to_owned(), Some("aws-cli/2 \"quoted\"".to_owned()))]);
}

#[test]
fn counts_keep_the_newest_event_time() {
    let file = format!(
        r#"{{"Records":[
        {{"eventTime":"2026-10-01T12:00:05Z","eventSource":"s3.amazonaws.com","eventName":"GetObject",{USER}}},
        {{"eventTime":"2026-10-01T12:09:00Z","eventSource":"s3.amazonaws.com","eventName":"GetObject",{USER}}},
        {{"eventTime":"2026-10-01T12:03:00Z","eventSource":"s3.amazonaws.com","eventName":"GetObject",{USER}}},
        {{"eventTime":"2026-10-01T13:00:00Z","eventType":"AwsCloudTrailInsight"}}
    ]}}"#
    );
    let counts = Parser::default().parse_unpadded(file.as_bytes(), &mut |_, _| {}).unwrap();
    assert_eq!(counts.newest, crate::time::parse_rfc3339("2026-10-01T12:09:00Z"), "insight events do not count");
    let empty = Parser::default().parse_unpadded(br#"{"Records":[]}"#, &mut |_, _| {}).unwrap();
    assert_eq!(empty.newest, None);
}

#[test]
fn any_field_is_readable_by_its_dotted_path() {
    let file = r#"{"Records":[{"eventTime":"2026-10-01T12:00:00Z","eventSource":"iam.amazonaws.com",
        "eventName":"PutUserPolicy","userIdentity":{"type":"IAMUser","arn":"arn:aws:iam::1:user/a",
        "sessionContext":{"sessionIssuer":{"arn":"arn:aws:iam::1:role/r"}}},"errorMessage":"",
        "requestParameters":{"userName":"bob","policyDocument":"{\"Effect\":\"Allow\"}","maxItems":100,
        "force":true,"tags":["a","b\nc"],"nothing":null},"tls.details":{"v":"1.3"}}]}"#;
    let mut got = Vec::new();
    let fields = [
        "eventName",
        "userIdentity.type",
        "userIdentity.sessionContext.sessionIssuer.arn",
        "requestParameters.userName",
        "requestParameters.policyDocument",
        "requestParameters.maxItems",
        "requestParameters.force",
        "requestParameters.tags",
        "requestParameters.nothing",
        "requestParameters.missing",
        "errorMessage",
        "tls.details.v",
        "requestParameters",
    ];
    Parser::default()
        .parse_unpadded(file.as_bytes(), &mut |_, record| {
            got.extend(fields.iter().map(|f| record.field(f).map(|v| v.into_owned())));
        })
        .unwrap();
    let want = [
        Some("PutUserPolicy"),
        Some("IAMUser"),
        Some("arn:aws:iam::1:role/r"),
        Some("bob"),
        Some(r#"{"Effect":"Allow"}"#),
        Some("100"),
        Some("true"),
        Some(r#"["a","b\nc"]"#),
        None,
        None,
        Some(""),
        Some("1.3"),
        Some(
            r#"{"userName":"bob","policyDocument":"{\"Effect\":\"Allow\"}","maxItems":100,"force":true,"tags":["a","b\nc"],"nothing":null}"#,
        ),
    ];
    assert_eq!(got, want.map(|w| w.map(str::to_owned)));
}

/// An event far from its file's delivery time is skipped and counted (a year-9999 event would make its identity
/// never inactive); without a delivery time, the bounds are 2006 and a day after the clock.
#[test]
fn implausible_event_times_are_skipped() {
    let t = |text: &str| crate::time::parse_rfc3339(text).unwrap();
    let delivered = Some(t("2026-10-01T12:05:00Z"));
    let now = t("2026-12-07T00:00:00Z");
    // (event time, delivered, kept)
    let cases = [
        ("2026-10-01T12:00:00Z", delivered, true),
        ("2026-09-02T00:00:00Z", delivered, true),
        ("2026-08-31T00:00:00Z", delivered, false),
        ("2026-10-02T12:00:00Z", delivered, true),
        ("2026-10-02T12:06:00Z", delivered, false),
        ("9999-12-31T23:59:59Z", delivered, false),
        ("0000-01-01T00:00:00Z", delivered, false),
        ("2014-01-01T00:00:00Z", None, true),
        ("2005-12-31T23:59:59Z", None, false),
        ("2026-12-07T23:00:00Z", None, true),
        ("2026-12-08T00:00:01Z", None, false),
        ("9999-12-31T23:59:59Z", None, false),
    ];
    for (time, delivered, kept) in cases {
        let file = format!(
            r#"{{"Records":[{{"eventTime":"{time}","eventSource":"s3.amazonaws.com","eventName":"GetObject",{USER}}}]}}"#
        );
        let mut parser = Parser::default();
        parser.set_plausible_times(crate::parse::plausible_event_times(delivered, now));
        let counts = parser.parse_unpadded(file.as_bytes(), &mut |_, _| {}).unwrap();
        let skipped = counts.skipped[SkipReason::ImplausibleEventTime as usize];
        assert_eq!((counts.events, skipped), if kept { (1, 0) } else { (0, 1) }, "{time} delivered {delivered:?}");
    }
}

/// Events exported by SIEMs and data lakes carry `eventTime` without a zone; CloudTrail's times are UTC, so they
/// are read as UTC instead of being skipped. A time that is not one (a date alone, a stray suffix) is still skipped.
#[test]
fn event_times_without_a_zone_are_read_as_utc() {
    let cases = [
        ("2022-11-21 18:06:52", Some("2022-11-21T18:06:52Z")),
        ("2022-11-21 18:06:52.000000000", Some("2022-11-21T18:06:52Z")),
        ("2022-11-21T18:06:52", Some("2022-11-21T18:06:52Z")),
        ("2022-11-21T18:06:52Z", Some("2022-11-21T18:06:52Z")),
        ("2022-11-21T20:06:52+02:00", Some("2022-11-21T18:06:52Z")),
        ("2022-11-21", None),
        ("2022-11-21 18:06", None),
        ("2022-11-21 18:06:52 UTC", None),
        ("2022-11-21 18:06:52.", None),
    ];
    for (time, want) in cases {
        let file = format!(
            r#"{{"Records":[{{"eventTime":"{time}","eventSource":"s3.amazonaws.com","eventName":"GetObject",{USER}}}]}}"#
        );
        let mut times = Vec::new();
        let counts = Parser::default().parse_unpadded(file.as_bytes(), &mut |e, _| times.push(e.time)).unwrap();
        let got: Vec<String> = times.into_iter().map(crate::time::format_rfc3339).collect();
        match want {
            Some(want) => assert_eq!(got, [want], "{time}"),
            None => assert_eq!(counts.skipped[SkipReason::InvalidEventTime as usize], 1, "{time}: {got:?}"),
        }
    }
    // Elsewhere (`--as-of`, stored times) a time must say its zone.
    assert_eq!(crate::time::parse_rfc3339("2022-11-21 18:06:52"), None);
}
