//! `MemberState::decode` on arbitrary bytes. What it accepts must encode
//! to a value that decodes to the same state, and must survive the engine
//! folding events into it (a value that decodes but then panics would be a
//! poison pill the quarantine never sees).
//!
//! Input: the stored value, then `n * 13` bytes of events (kind, ts, amount)
//! with `n` the last byte (mod 8).
#![no_main]

use std::borrow::Cow;

use churnwatch::event::{Event, EventKind};
use churnwatch::state::member::{DEDUP_SLOTS, PURCHASE_HISTORY};
use churnwatch::state::MemberState;
use libfuzzer_sys::fuzz_target;

const EVENT: usize = 13;
/// Event times the validator lets through with a sane config: 1970 up to
/// about 2248 (the pipeline's skew is one day past the wall clock).
const MAX_TS: u64 = 1 << 43;

fuzz_target!(|data: &[u8]| {
    // Whole input as a value first: the plain decoder target.
    check(data);
    let Some((&n, rest)) = data.split_last() else {
        return;
    };
    let n = (n % 8) as usize;
    if rest.len() < n * EVENT {
        return;
    }
    let (value, events) = rest.split_at(rest.len() - n * EVENT);
    let Some(mut m) = check(value) else { return };
    for (i, e) in events.chunks_exact(EVENT).enumerate() {
        let kind = EventKind::ALL[e[0] as usize % EventKind::ALL.len()];
        let ts_ms = (u64::from_le_bytes(e[1..9].try_into().unwrap()) % MAX_TS) as i64;
        let amount = f32::from_le_bytes(e[9..13].try_into().unwrap());
        let amount = if amount.is_finite() {
            amount.abs() as f64
        } else {
            0.0
        };
        let id = i as u32 ^ u32::from_le_bytes(e[1..5].try_into().unwrap());
        if m.remember_event(id) {
            m.apply(&Event {
                event_id: Cow::Borrowed("e"),
                member_id: Cow::Borrowed("m"),
                kind,
                ts_ms,
                amount,
                categories: 0,
            });
        }
        assert!(m.seen_event(id));
        let bytes = m.to_bytes();
        let again = MemberState::decode(&bytes).expect("an encoded member decodes");
        assert_eq!(again.to_bytes(), bytes);
    }
});

fn check(value: &[u8]) -> Option<MemberState> {
    let m = MemberState::decode(value).ok()?;
    assert!(m.purchases().len() <= PURCHASE_HISTORY);
    assert!((m.recent_next as usize) < DEDUP_SLOTS);
    let bytes = m.to_bytes();
    assert!(
        bytes.len() <= 512,
        "encoded member is {} bytes",
        bytes.len()
    );
    let again = MemberState::decode(&bytes).expect("an encoded member decodes");
    // Bytes, not `==`: a NaN spend is kept as is but never equals itself.
    assert_eq!(again.to_bytes(), bytes);
    let _ = m.last_purchase_ms();
    Some(m)
}
