//! `Validator::parse` on arbitrary bytes, under the validators the code
//! builds: the pipeline's (wall clock now, one day of skew), `fit`'s (no
//! future check), the widest a config allows (`future_skew_ms = i64::MAX`),
//! and a tight size limit. Whatever it accepts must satisfy the contract,
//! and wherever the hand-written fast path answers, serde_json must read
//! the same event.
#![no_main]

use churnwatch::event::{EventKind, RejectReason, Validator, DAY_MS, MAX_TS_MS};
use libfuzzer_sys::fuzz_target;

const WALL_NOW_MS: i64 = 1_772_000_000_000; // 2026-02-25

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        assert_ne!(
            churnwatch::event::fast_path_agrees_with_serde(text),
            Some(false),
            "the fast path and serde_json read {text:?} differently"
        );
    }
    let validators = [
        (Validator::default(), WALL_NOW_MS),
        (
            Validator {
                future_skew_ms: i64::MAX / 4,
                ..Validator::default()
            },
            0,
        ),
        (
            Validator {
                future_skew_ms: i64::MAX,
                ..Validator::default()
            },
            WALL_NOW_MS,
        ),
        (
            Validator {
                max_event_bytes: 64,
                future_skew_ms: 0,
            },
            WALL_NOW_MS,
        ),
    ];
    for (v, wall) in &validators {
        match v.parse(data, *wall) {
            Ok(e) => {
                assert!(data.len() <= v.max_event_bytes);
                for id in [&e.event_id, &e.member_id] {
                    assert!(!id.is_empty() && id.chars().count() <= 128, "{id:?}");
                }
                assert!(e.ts_ms >= 0);
                assert!(e.ts_ms <= wall.saturating_add(v.future_skew_ms));
                assert!(e.ts_ms <= MAX_TS_MS, "{}", e.ts_ms);
                assert!(e.amount.is_finite() && e.amount >= 0.0, "{}", e.amount);
                if e.kind != EventKind::Purchase {
                    assert_eq!(e.amount, 0.0);
                }
                assert!(EventKind::parse(e.kind.as_str()) == Some(e.kind));
            }
            Err(r) => {
                assert!(RejectReason::ALL.contains(&r.reason));
                // The message travels as a dead-letter header: bounded.
                let msg = r.to_string();
                assert!(msg.len() <= 512, "{} byte rejection: {msg}", msg.len());
            }
        }
    }
    let _ = DAY_MS;
});
