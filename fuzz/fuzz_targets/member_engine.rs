//! A member value that decodes but is nonsense (a bit flip, a value written
//! by another build) must not stop the engine either: the quarantine only
//! catches values that fail to decode. Whatever `MemberState::decode`
//! accepts goes through what the engine does with a member at a moment
//! `now`: judge it (every detector, the lifecycle stage), score it, and
//! schedule its timer checks.
//!
//! Input: the stored value, then 8 bytes of `now` (reduced to event times
//! the validator lets through).
//!
//! Values holding times past `MAX_TS` (about year 2248) are skipped: the
//! engine writes such times only with a `time.future_skew_ms` of centuries,
//! and the detectors' arithmetic (`last purchase + threshold`, ...) is not
//! made for them (docs/fuzzing.md, "Still open").
#![no_main]

use churnwatch::config::Config;
use churnwatch::engine::{judge, risk_of, timer_checks, EngineConfig};
use churnwatch::state::window::{day_of, week_of};
use churnwatch::state::MemberState;
use libfuzzer_sys::fuzz_target;
use std::sync::LazyLock;

const MAX_TS: i64 = 1 << 43;

static CFG: LazyLock<EngineConfig> = LazyLock::new(|| Config::default().engine());

fuzz_target!(|data: &[u8]| {
    let Some(split) = data.len().checked_sub(8) else {
        return;
    };
    let (value, now) = data.split_at(split);
    let Ok(mut m) = MemberState::decode(value) else {
        return;
    };
    if !plausible(&m) {
        return;
    }
    let now = (u64::from_le_bytes(now.try_into().unwrap()) % MAX_TS as u64) as i64;
    let mut findings = Vec::new();
    judge(&mut m, now, &CFG, &mut findings);
    let _ = risk_of(&m, now, &CFG);
    let _ = timer_checks(&m, now, &CFG).count();
    let _ = m.to_bytes();
});

/// No time in the value is past `MAX_TS`.
fn plausible(m: &MemberState) -> bool {
    let mut times = vec![
        m.first_seen_ms,
        m.last_event_ms,
        m.last_active_ms,
        m.first_purchase_ms,
        m.timer_due_ms,
    ];
    times.extend(m.purchases().iter().map(|p| p.ts_ms));
    times.extend(m.episodes.iter().map(|e| e.opened_ms));
    times.extend(m.open_alert.map(|a| a.detected_ms));
    times.iter().all(|&t| t <= MAX_TS)
        && m.checkins.last_day <= day_of(MAX_TS)
        && [&m.visits, &m.sends, &m.opens]
            .iter()
            .all(|c| c.newest_week <= week_of(MAX_TS))
}
