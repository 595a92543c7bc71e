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
//! Values holding times past `MAX_TS_MS` (September 2248) do not decode:
//! no event later than that is taken, and the detectors' arithmetic
//! (`last purchase + threshold`, ...) is not made for them.
#![no_main]

use churnwatch::config::Config;
use churnwatch::engine::{judge, risk_of, timer_checks, EngineConfig};
use churnwatch::event::MAX_TS_MS;
use churnwatch::state::MemberState;
use libfuzzer_sys::fuzz_target;
use std::sync::LazyLock;

static CFG: LazyLock<EngineConfig> = LazyLock::new(|| Config::default().engine());

fuzz_target!(|data: &[u8]| {
    let Some(split) = data.len().checked_sub(8) else {
        return;
    };
    let (value, now) = data.split_at(split);
    let Ok(mut m) = MemberState::decode(value) else {
        return;
    };
    let now = (u64::from_le_bytes(now.try_into().unwrap()) % MAX_TS_MS as u64) as i64;
    let mut findings = Vec::new();
    judge(&mut m, now, &CFG, &mut findings);
    let _ = risk_of(&m, now, &CFG);
    let _ = timer_checks(&m, now, &CFG).count();
    let _ = m.to_bytes();
});
