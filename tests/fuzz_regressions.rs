//! Inputs the fuzz targets (`fuzz/`, docs/fuzzing.md) found a bug with,
//! replayed through the same steps as the target that found them. Each file
//! under `tests/fuzz-regressions/<target>/` is one input, named after what
//! it broke.

use std::borrow::Cow;
use std::path::Path;

use churnwatch::config::Config;
use churnwatch::engine::{judge, risk_of, timer_checks};
use churnwatch::event::{Event, EventKind};
use churnwatch::state::MemberState;

fn inputs(target: &str) -> Vec<(String, Vec<u8>)> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fuzz-regressions")
        .join(target);
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .map(|d| d.map(|e| e.unwrap().path()).collect())
        .unwrap_or_default();
    files.sort();
    files
        .into_iter()
        .map(|p| {
            let name = p.file_name().unwrap().to_string_lossy().into_owned();
            (name, std::fs::read(&p).unwrap())
        })
        .collect()
}

/// `fuzz_targets/member_state.rs`: the value, then `n * 13` bytes of events
/// (kind, ts, amount) with `n` the last byte (mod 8), folded into what it
/// decoded to.
#[test]
fn member_state() {
    const EVENT: usize = 13;
    let found = inputs("member_state");
    assert!(!found.is_empty());
    for (name, data) in found {
        let (&n, rest) = data.split_last().unwrap();
        let n = (n % 8) as usize;
        let (value, events) = rest.split_at(rest.len() - n * EVENT);
        let mut m = MemberState::decode(value).unwrap_or_else(|e| panic!("{name}: {e}"));
        for e in events.chunks_exact(EVENT) {
            let id = u32::from_le_bytes(e[1..5].try_into().unwrap());
            let ts_ms = (u64::from_le_bytes(e[1..9].try_into().unwrap()) % (1 << 43)) as i64;
            let amount = f32::from_le_bytes(e[9..13].try_into().unwrap());
            if m.remember_event(id) {
                m.apply(&Event {
                    event_id: Cow::Borrowed("e"),
                    member_id: Cow::Borrowed("m"),
                    kind: EventKind::ALL[e[0] as usize % EventKind::ALL.len()],
                    ts_ms,
                    amount: if amount.is_finite() {
                        amount.abs() as f64
                    } else {
                        0.0
                    },
                    categories: 0,
                });
            }
            let bytes = m.to_bytes();
            assert_eq!(MemberState::decode(&bytes).unwrap().to_bytes(), bytes);
        }
    }
}

/// `fuzz_targets/member_engine.rs`: the value, then 8 bytes of `now`; the
/// engine judges, scores and schedules what it decoded to, or the value is
/// refused (and would be quarantined).
#[test]
fn member_engine() {
    let cfg = Config::default().engine();
    let found = inputs("member_engine");
    assert!(!found.is_empty());
    for (_, data) in found {
        let (value, now) = data.split_at(data.len() - 8);
        let Ok(mut m) = MemberState::decode(value) else {
            continue;
        };
        let now = (u64::from_le_bytes(now.try_into().unwrap()) % (1 << 43)) as i64;
        let mut findings = Vec::new();
        judge(&mut m, now, &cfg, &mut findings);
        let _ = risk_of(&m, now, &cfg);
        let _ = timer_checks(&m, now, &cfg).count();
    }
}

/// `fuzz_targets/config_load.rs`: TOML text, parsed and validated; what
/// validates holds the bounds the detectors rely on.
#[test]
fn config_load() {
    let found = inputs("config_load");
    assert!(!found.is_empty());
    for (name, data) in found {
        let Ok(cfg) = Config::parse(std::str::from_utf8(&data).unwrap()) else {
            continue;
        };
        if cfg.validate().is_err() {
            continue;
        }
        let c = &cfg.detect.checkin_lapse;
        assert!(
            c.recent_days as u64 + c.baseline_days as u64 <= 127,
            "{name}: {} + {} days validated",
            c.recent_days,
            c.baseline_days
        );
    }
}
