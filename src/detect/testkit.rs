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
/// pulling an RNG into every detector test. The LCG state is passed through
/// the SplitMix64 finaliser: raw LCG outputs are serially correlated enough
/// that Poisson draws by multiplying uniforms came out in runs of busy and
/// quiet weeks, which no steady member has.
pub struct Lcg(pub u64);

impl Lcg {
    pub fn next(&mut self) -> f64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58476d1ce4e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d049bb133111eb);
        z ^= z >> 31;
        (z >> 11) as f64 / (1u64 << 53) as f64
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

/// The holidays of the "steady member" tests: two two-week breaks, the
/// first starting in weeks 2–21, the second 14–29 weeks after it. Says
/// whether week `w` falls in one.
pub fn two_breaks(rng: &mut Lcg) -> impl Fn(usize) -> bool {
    let first = 2 + (rng.next() * 20.0) as usize;
    let breaks = [first, first + 14 + (rng.next() * 16.0) as usize];
    move |w| breaks.iter().any(|b| (*b..b + 2).contains(&w))
}

/// One cell of a detection-power table: members whose rate fell to `to`
/// times their long-run `rate` for `weeks` weeks.
#[derive(Debug, Clone, Copy)]
pub struct PowerCell {
    pub rate: f64,
    pub to: f64,
    pub weeks: usize,
    pub fired: usize,
    pub members: usize,
    /// The drop carries enough evidence to be told apart from noise at the
    /// detector's threshold (expected log-likelihood ratio at least twice
    /// the threshold), so at least 95% of such members must be caught.
    pub detectable: bool,
}

/// Prints a power table and returns the cells that must fire but where
/// fewer than 95% of the members did.
pub fn report_power(name: &str, cells: &[PowerCell]) -> Vec<PowerCell> {
    println!("{name}: detection by long-run rate, drop and duration");
    println!("  rate  drop_to  weeks  fired/members  must_fire");
    for c in cells {
        println!(
            "  {:>4.2}  {:>7.2}  {:>5}  {:>6}/{:<6}  {}",
            c.rate, c.to, c.weeks, c.fired, c.members, c.detectable
        );
    }
    cells
        .iter()
        .filter(|c| c.detectable && c.fired * 20 < c.members * 19)
        .copied()
        .collect()
}

/// Replays `events` (`(kind, day, amount)`, any order) into a member week
/// by week, as the engine would see them, and evaluates `eval` at every
/// week start in `weeks`; says whether any evaluation fired.
pub fn fires_in(
    events: &[(EventKind, f64, f64)],
    weeks: std::ops::Range<usize>,
    eval: impl Fn(&MemberState, i64) -> crate::detect::Verdict,
) -> bool {
    let mut evs = events.to_vec();
    evs.sort_by(|a, b| a.1.total_cmp(&b.1));
    let first = evs.first().map_or(T0, |e| day(e.1));
    let mut m = MemberState::new(first);
    let mut next = 0;
    for w in weeks {
        let t = day(w as f64 * 7.0);
        while next < evs.len() && day(evs[next].1) < t {
            let (kind, d, amount) = evs[next];
            m.apply(&event(kind, day(d), amount));
            next += 1;
        }
        if matches!(eval(&m, t), crate::detect::Verdict::Fire(_)) {
            return true;
        }
    }
    false
}
