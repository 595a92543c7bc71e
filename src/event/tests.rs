use super::*;

const NOW: i64 = 1_780_000_000_000; // 2026-05-28

fn parse(s: &str) -> Result<Event<'_>, Rejection> {
    Validator::default().parse(s.as_bytes(), NOW)
}

fn reason(s: &str) -> RejectReason {
    parse(s).expect_err("event should be rejected").reason
}

#[test]
fn accepts_rfc3339_and_epoch_millis_timestamps() {
    let a = parse(
        r#"{"event_id":"e1","member_id":"m1","type":"visit","ts":"2026-03-01T20:00:00+08:00"}"#,
    )
    .unwrap();
    let b =
        parse(r#"{"event_id":"e1","member_id":"m1","type":"visit","ts":1772366400000}"#).unwrap();
    assert_eq!(a.ts_ms, 1_772_366_400_000);
    assert_eq!(a.ts_ms, b.ts_ms);
    assert_eq!(a.kind, EventKind::Visit);
}

#[test]
fn ignores_unknown_fields_and_keeps_purchase_details() {
    let e = parse(r#"{"event_id":"e1","member_id":"m1","type":"purchase","ts":1772366400000,"amount":12.5,"categories":["a","b"],"currency":"EUR","x-extra":{"deep":[1,2]}}"#).unwrap();
    assert_eq!(e.amount, 12.5);
    assert_eq!(e.categories, 2);
}

#[test]
fn borrows_ids_from_the_payload_when_unescaped() {
    let e = parse(r#"{"event_id":"e1","member_id":"m1","type":"visit","ts":1}"#).unwrap();
    assert!(matches!(e.member_id, Cow::Borrowed("m1")));
}

#[test]
fn rejects_oversize_events() {
    let v = Validator {
        max_event_bytes: 10,
        ..Validator::default()
    };
    let r = v.parse(br#"{"event_id":"e1"}"#, NOW).unwrap_err();
    assert_eq!(r.reason, RejectReason::Oversize);
}

#[test]
fn rejects_invalid_utf8() {
    let r = Validator::default()
        .parse(b"{\"event_id\":\"\xff\"}", NOW)
        .unwrap_err();
    assert_eq!(r.reason, RejectReason::InvalidUtf8);
}

#[test]
fn rejects_invalid_json() {
    assert_eq!(reason(r#"{"event_id":"e1","#), RejectReason::InvalidJson);
    assert_eq!(
        reason(r#"{"event_id":"e1"} trailing"#),
        RejectReason::InvalidJson
    );
}

#[test]
fn rejects_json_that_is_not_an_object() {
    assert_eq!(reason(r#"[1,2,3]"#), RejectReason::NotObject);
    assert_eq!(reason(r#""visit""#), RejectReason::NotObject);
}

#[test]
fn rejects_missing_required_fields_naming_them() {
    for field in ["event_id", "member_id", "type", "ts"] {
        let mut obj = serde_json::json!({"event_id":"e1","member_id":"m1","type":"visit","ts":1});
        obj.as_object_mut().unwrap().remove(field);
        let r = parse(&obj.to_string()).map(|_| ()).unwrap_err();
        assert_eq!(r.reason, RejectReason::MissingField);
        assert!(r.detail.contains(field), "{r}");
    }
    assert_eq!(
        reason(r#"{"event_id":null,"member_id":"m1","type":"visit","ts":1}"#),
        RejectReason::MissingField
    );
}

#[test]
fn rejects_empty_and_overlong_ids() {
    assert_eq!(
        reason(r#"{"event_id":"","member_id":"m1","type":"visit","ts":1}"#),
        RejectReason::EmptyField
    );
    let long = "x".repeat(129);
    let s = format!(r#"{{"event_id":"e","member_id":"{long}","type":"visit","ts":1}}"#);
    assert_eq!(reason(&s), RejectReason::FieldTooLong);
    let ok = "é".repeat(128);
    let s = format!(r#"{{"event_id":"e","member_id":"{ok}","type":"visit","ts":1}}"#);
    assert!(parse(&s).is_ok(), "128 characters (not bytes) is allowed");
    let long = "é".repeat(129);
    let s = format!(r#"{{"event_id":"e","member_id":"{long}","type":"visit","ts":1}}"#);
    assert_eq!(reason(&s), RejectReason::FieldTooLong, "129 characters");
    let ok = "x".repeat(128);
    let s = format!(r#"{{"event_id":"e","member_id":"{ok}","type":"visit","ts":1}}"#);
    assert!(parse(&s).is_ok(), "128 bytes of ASCII");
}

#[test]
fn rejects_wrong_types_naming_the_field() {
    let cases = [
        (
            r#"{"event_id":7,"member_id":"m1","type":"visit","ts":1}"#,
            "event_id",
        ),
        (
            r#"{"event_id":"e","member_id":["m"],"type":"visit","ts":1}"#,
            "member_id",
        ),
        (
            r#"{"event_id":"e","member_id":"m","type":3,"ts":1}"#,
            "type",
        ),
        (
            r#"{"event_id":"e","member_id":"m","type":"visit","ts":true}"#,
            "ts",
        ),
        (
            r#"{"event_id":"e","member_id":"m","type":"purchase","ts":1,"amount":"9.99"}"#,
            "amount",
        ),
        (
            r#"{"event_id":"e","member_id":"m","type":"purchase","ts":1,"amount":1,"categories":[1]}"#,
            "categories",
        ),
        (
            r#"{"event_id":"e","member_id":"m","type":"visit","ts":1,"channel":5}"#,
            "channel",
        ),
        (
            r#"{"event_id":"e","member_id":"m","type":"check_in","ts":1,"points":"ten"}"#,
            "points",
        ),
    ];
    for (s, field) in cases {
        let r = parse(s).map(|_| ()).unwrap_err();
        assert_eq!(r.reason, RejectReason::WrongType, "{s}");
        assert!(r.detail.contains(field), "{r}");
    }
}

#[test]
fn rejects_unknown_event_type() {
    assert_eq!(
        reason(r#"{"event_id":"e","member_id":"m","type":"refund","ts":1}"#),
        RejectReason::UnknownType
    );
}

#[test]
fn rejects_unparsable_timestamps() {
    for ts in [
        r#""2026-03-01""#,
        r#""2026-03-01T12:00:00""#,
        r#""yesterday""#,
        "-5",
        "1.5e3",
    ] {
        let s = format!(r#"{{"event_id":"e","member_id":"m","type":"visit","ts":{ts}}}"#);
        let r = parse(&s).map(|_| ()).unwrap_err();
        assert!(
            matches!(r.reason, RejectReason::BadTs | RejectReason::WrongType),
            "{ts}: {r}"
        );
    }
    assert_eq!(
        reason(r#"{"event_id":"e","member_id":"m","type":"visit","ts":"not a time"}"#),
        RejectReason::BadTs
    );
}

#[test]
fn rejects_timestamps_beyond_the_future_skew() {
    let ok = format!(
        r#"{{"event_id":"e","member_id":"m","type":"visit","ts":{}}}"#,
        NOW + DAY_MS - 1
    );
    assert!(parse(&ok).is_ok());
    let bad = format!(
        r#"{{"event_id":"e","member_id":"m","type":"visit","ts":{}}}"#,
        NOW + DAY_MS + 1
    );
    assert_eq!(reason(&bad), RejectReason::FutureTs);
}

#[test]
fn refuses_times_after_2248_whatever_the_future_skew_allows() {
    // As `fit` reads transaction files: any future time allowed.
    let v = Validator {
        future_skew_ms: i64::MAX / 4,
        ..Validator::default()
    };
    let at = |ts: String| {
        let line = format!(r#"{{"event_id":"e","member_id":"m","type":"visit","ts":{ts}}}"#);
        v.parse(line.as_bytes(), NOW).map(|e| e.ts_ms)
    };
    assert_eq!(at(MAX_TS_MS.to_string()), Ok(MAX_TS_MS));
    for late in [
        (MAX_TS_MS + 1).to_string(),
        i64::MAX.to_string(),
        "\"9999-12-31T23:59:59Z\"".to_string(),
    ] {
        let e = at(late.clone()).expect_err(&late);
        assert_eq!(e.reason, RejectReason::BadTs, "{late}");
        assert!(e.detail.contains("2248-09-26"), "{}", e.detail);
    }
}

#[test]
fn rejects_negative_or_missing_purchase_amount() {
    assert_eq!(
        reason(r#"{"event_id":"e","member_id":"m","type":"purchase","ts":1,"amount":-1}"#),
        RejectReason::NegativeAmount
    );
    assert_eq!(
        reason(r#"{"event_id":"e","member_id":"m","type":"purchase","ts":1}"#),
        RejectReason::MissingAmount
    );
    assert!(
        parse(r#"{"event_id":"e","member_id":"m","type":"purchase","ts":1,"amount":0}"#).is_ok()
    );
}

#[test]
fn rejection_messages_are_lowercase_and_carry_the_reason_label() {
    let r = parse(r#"{"member_id":"m","type":"visit","ts":1}"#)
        .map(|_| ())
        .unwrap_err();
    assert_eq!(
        r.to_string(),
        "missing_field: missing required field `event_id`"
    );
}

#[test]
fn the_fast_parse_reads_what_serde_reads_or_steps_aside() {
    use super::fast;
    use super::raw::parse_with_serde;
    // Events in the shapes producers write them (as `churnwatch simulate`
    // does): every type, ids, epoch and RFC 3339 times, amounts with and
    // without decimals, currencies, order ids, categories, channels.
    let kinds = ["visit", "email_send", "email_open", "check_in", "purchase"];
    let lines: Vec<String> = (0..5_000u64)
        .map(|i| {
            let kind = kinds[(i % 5) as usize];
            let ts = if i % 7 == 0 {
                "\"2026-03-01T12:00:00.250+01:00\"".to_string()
            } else {
                (1_765_000_000_000 + i * 3_600_017).to_string()
            };
            let mut l = format!(
                r#"{{"event_id":"e-{i}","member_id":"member-{:05}","type":"{kind}","ts":{ts}"#,
                i % 700
            );
            if kind == "purchase" {
                let amount = match i % 4 {
                    0 => format!("{}.{:02}", i % 300, i % 100),
                    1 => format!("{}", i % 90),
                    2 => "0.1".to_string(),
                    _ => format!("{}.5e1", i % 9),
                };
                l += &format!(
                    r#","amount":{amount},"currency":"EUR","order_id":"o-{i}","categories":["grocery","home"]"#
                );
            }
            if i % 3 == 0 {
                l += r#","channel":"app","campaign_id":"winback-1","points":12"#;
            }
            l + "}"
        })
        .collect();
    let mut fast_taken = 0;
    for l in &lines {
        let f = fast::parse(l);
        fast_taken += usize::from(f.is_some());
        if let Some(f) = f {
            assert_eq!(Ok(f), parse_with_serde(l), "{l}");
        }
    }
    assert!(
        fast_taken * 100 >= lines.len() * 99,
        "{fast_taken} of {} plain events took the fast path",
        lines.len()
    );
    let edits: &[&str] = &[
        " ",
        "\t",
        "\n",
        "\"",
        "\\",
        "\\\"",
        ",",
        ":",
        "{",
        "}",
        "[",
        "]",
        "[1,[2]]",
        "{\"a\":1}",
        "null",
        "true",
        "false",
        "-",
        "-1",
        "0",
        "00",
        "01",
        "1.",
        ".5",
        "1e5",
        "1E-2",
        "2.50",
        "123456789012345678901234",
        "9223372036854775808",
        "\u{a0}",
        "\u{1}",
        "é",
        "x",
        "\"event_id\":\"dup\",",
        "\"member_id\":null,",
        "\"amount\":1e400,",
        "\"ts\":\"2026-01-01T00:00:00Z\",",
    ];
    let mut seed = 0x1234_5678_9abc_def1u64;
    let mut next = |n: usize| {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        (seed % n as u64) as usize
    };
    let mut answered = 0;
    for l in lines.iter().take(3_000) {
        for _ in 0..8 {
            let mut t = l.clone();
            for _ in 0..1 + next(3) {
                let mut at = next(t.len() + 1);
                while !t.is_char_boundary(at) {
                    at -= 1;
                }
                match next(3) {
                    0 => t.insert_str(at, edits[next(edits.len())]),
                    1 => {
                        let mut end = (at + 1 + next(4)).min(t.len());
                        while !t.is_char_boundary(end) {
                            end += 1;
                        }
                        t.replace_range(at..end, "");
                    }
                    _ => {
                        let mut end = (at + next(12)).min(t.len());
                        while !t.is_char_boundary(end) {
                            end += 1;
                        }
                        let copy = t[at..end].to_string();
                        t.insert_str(at, &copy);
                    }
                }
            }
            if let Some(f) = fast::parse(&t) {
                answered += 1;
                assert_eq!(Ok(f), parse_with_serde(&t), "{t}");
            }
        }
    }
    assert!(
        answered > 1_000,
        "the mangled events barely reached the fast path ({answered})"
    );
}
