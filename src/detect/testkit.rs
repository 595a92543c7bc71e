//! Builders for detector unit tests: a member fed with synthetic events.

use std::borrow::Cow;

use crate::event::{Event, EventKind, DAY_MS};
use crate::state::MemberState;

/// A Monday at 00:00 UTC (2024-01-01): weeks start on Mondays, so week
/// arithmetic in tests is exact.
pub const T0: i64 = 1_704_067_200_000;

pub fn day(d: f64) -> i64 {
    T0 + (d * DAY_MS as f64) as i64
}

pub fn event(kind: EventKind, ts_ms: i64, amount: f64) -> Event<'static> {
    Event {
        event_id: Cow::Owned(format!("{}-{ts_ms}", kind.as_str())),
        member_id: Cow::Borrowed("m-test"),
        kind,
        ts_ms,
        amount,
        categories: 0,
    }
}

/// A member built from `(kind, day, amount)` triples.
pub fn member(events: &[(EventKind, f64, f64)]) -> MemberState {
    let first = events.iter().map(|e| day(e.1)).min().unwrap_or(T0);
    let mut m = MemberState::new(first);
    for &(kind, d, amount) in events {
        m.apply(&event(kind, day(d), amount));
    }
    m
}

/// Deterministic pseudo-random numbers in [0, 1) for noise tests, without
/// pulling an RNG into every detector test.
pub struct Lcg(pub u64);

impl Lcg {
    pub fn next(&mut self) -> f64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (self.0 >> 11) as f64 / (1u64 << 53) as f64
    }

    /// Poisson sample by inversion (small means only).
    pub fn poisson(&mut self, mean: f64) -> u32 {
        let (mut k, mut p, l) = (0u32, 1.0f64, (-mean).exp());
        loop {
            p *= self.next();
            if p <= l {
                return k;
            }
            k += 1;
        }
    }
}
