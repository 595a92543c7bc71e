//! `checkin_lapse`: an established daily check-in habit has broken, or
//! check-ins have fallen well below the member's own rate.
//!
//! A habit is at least `min_habit_checkins` check-in days in the
//! `habit_window_days` before the last check-in. The member's own longest
//! break in the kept history (128 days) sets the tolerance: a lapse is
//! `max(min_lapse_days, break_multiplier × longest_break + 1)` days without a
//! check-in, so a member who skips the odd day is never flagged, and one who
//! habitually skips three days needs a week off before anyone worries.

use serde::{Deserialize, Serialize};

use super::stats::poisson_cdf;
use super::{Context, Detector, Evidence, Finding, Inputs, NowUse, Severity, Signal, Verdict};
use crate::event::{EventKind, DAY_MS};
use crate::state::window::{day_of, BITMAP_DAYS};
use crate::state::MemberState;

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Run this detector.
    pub enabled: bool,
    /// Days before the last check-in that define the habit.
    pub habit_window_days: u32,
    /// Check-in days in that window that make a habit.
    pub min_habit_checkins: u32,
    /// Shortest lapse ever flagged, in days without a check-in.
    pub min_lapse_days: u32,
    /// The lapse must be this multiple of the member's longest break (+1 day).
    pub break_multiplier: f64,
    /// Rate variant: recent window in days...
    pub recent_days: u32,
    /// ...against this many days before it.
    pub baseline_days: u32,
    /// Check-ins the baseline must predict for the recent window.
    pub min_expected_checkins: f64,
    /// Fire when recent check-ins are at most this fraction of the expected...
    pub drop_ratio: f64,
    /// ...and the Poisson probability of so few is at most this.
    pub max_p_value: f64,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            enabled: true,
            habit_window_days: 28,
            min_habit_checkins: 14,
            min_lapse_days: 4,
            break_multiplier: 2.0,
            recent_days: 14,
            baseline_days: 42,
            min_expected_checkins: 7.0,
            drop_ratio: 0.4,
            max_p_value: 0.001,
        }
    }
}

struct Habit {
    last_day: i32,
    window_checkins: u32,
    longest_break: u32,
    lapse_days: u32,
}

fn habit(m: &MemberState, cfg: &Config) -> Option<Habit> {
    if !cfg.enabled || m.checkins.is_empty() {
        return None;
    }
    let last = m.checkins.last_day;
    let window = m
        .checkins
        .count(last - cfg.habit_window_days as i32 + 1, last);
    if window < cfg.min_habit_checkins {
        return None;
    }
    let longest_break = m.checkins.longest_break(last - BITMAP_DAYS + 1, last);
    let lapse = (cfg.break_multiplier * longest_break as f64 + 1.0).ceil() as u32;
    Some(Habit {
        last_day: last,
        window_checkins: window,
        longest_break,
        lapse_days: lapse.max(cfg.min_lapse_days),
    })
}

/// The `checkin_lapse` detector, as the engine runs it (see [`super::Detector`]).
pub struct CheckinLapse;

impl Detector for CheckinLapse {
    fn signal(&self) -> Signal {
        Signal::CheckinLapse
    }
    fn evaluate(&self, m: &MemberState, now_ms: i64, ctx: &Context<'_>) -> Verdict {
        evaluate(m, now_ms, &ctx.detect.checkin_lapse)
    }
    fn due_ms(&self, m: &MemberState, _now_ms: i64, ctx: &Context<'_>) -> Option<i64> {
        due_ms(m, &ctx.detect.checkin_lapse)
    }
    fn inputs(&self) -> Inputs {
        // Days without a check-in count to the millisecond; when the
        // habit counts as broken depends on the check-ins alone.
        Inputs {
            events: &[EventKind::CheckIn],
            verdict: NowUse::Exact,
            due: NowUse::Ignored,
        }
    }
}

/// When, with no further check-in, the habit counts as broken.
pub fn due_ms(m: &MemberState, cfg: &Config) -> Option<i64> {
    let h = habit(m, cfg)?;
    Some((h.last_day as i64 + 1 + h.lapse_days as i64) * DAY_MS)
}

pub fn evaluate(m: &MemberState, now_ms: i64, cfg: &Config) -> Verdict {
    let Some(h) = habit(m, cfg) else {
        return Verdict::Hold;
    };
    let broken_at = (h.last_day as i64 + 1 + h.lapse_days as i64) * DAY_MS;
    if now_ms >= broken_at {
        let missed = (now_ms - (h.last_day as i64 + 1) * DAY_MS) as f64 / DAY_MS as f64;
        return Verdict::Fire(Finding {
            severity: if missed >= 2.0 * h.lapse_days as f64 {
                Severity::Critical
            } else {
                Severity::Warning
            },
            evidence: Evidence::default()
                .num("days_without_checkin", missed)
                .num("lapse_after_days", h.lapse_days as f64)
                .num("longest_usual_break_days", h.longest_break as f64)
                .num("checkins_in_habit_window", h.window_checkins as f64)
                .num("habit_window_days", cfg.habit_window_days as f64),
            since_ms: broken_at,
        });
    }
    // Still checking in, but much less than before?
    let today = day_of(now_ms);
    let recent_from = today - cfg.recent_days as i32;
    let base_from = recent_from - cfg.baseline_days as i32;
    if base_from > today - BITMAP_DAYS && day_of(m.first_seen_ms) <= base_from {
        let recent = m.checkins.count(recent_from, today - 1);
        let base = m.checkins.count(base_from, recent_from - 1);
        let expected = base as f64 * cfg.recent_days as f64 / cfg.baseline_days as f64;
        if expected >= cfg.min_expected_checkins
            && recent as f64 <= cfg.drop_ratio * expected
            && poisson_cdf(recent, expected) <= cfg.max_p_value
        {
            return Verdict::Fire(Finding {
                severity: Severity::Info,
                evidence: Evidence::default()
                    .num("recent_checkins", recent as f64)
                    .num("expected_checkins", expected)
                    .num("recent_days", cfg.recent_days as f64)
                    .num("p_value", poisson_cdf(recent, expected)),
                since_ms: today as i64 * DAY_MS,
            });
        }
    }
    Verdict::Recover
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::detect::testkit::{day, member, Lcg};
    use crate::event::EventKind::CheckIn;

    fn checker(days: impl Iterator<Item = f64>) -> MemberState {
        let evs: Vec<_> = days.map(|d| (CheckIn, d, 0.0)).collect();
        member(&evs)
    }

    #[test]
    fn fires_when_a_daily_streak_breaks() {
        let m = checker((0..40).map(|d| d as f64 + 0.3));
        assert_eq!(due_ms(&m, &Config::default()), Some(day(44.0)));
        assert_eq!(
            evaluate(&m, day(43.9), &Config::default()),
            Verdict::Recover
        );
        let Verdict::Fire(f) = evaluate(&m, day(44.5), &Config::default()) else {
            panic!("expected a finding");
        };
        assert_eq!(f.since_ms, day(44.0));
        assert_eq!(f.evidence.get_num("days_without_checkin"), Some(4.5));
        assert_eq!(f.evidence.get_num("checkins_in_habit_window"), Some(28.0));
    }

    #[test]
    fn a_rare_missed_day_is_not_a_lapse() {
        let mut rng = Lcg(3);
        for _ in 0..500 {
            // Checks in on ~93% of days.
            let days: Vec<f64> = (0..100)
                .filter(|_| rng.next() < 0.93)
                .map(|d| d as f64 + 0.5)
                .collect();
            let m = checker(days.iter().copied());
            let last = *days.last().unwrap();
            // Two missed days after the last check-in: still a habit.
            let v = evaluate(&m, day(last.floor() + 3.0), &Config::default());
            assert_eq!(v, Verdict::Recover);
        }
    }

    #[test]
    fn an_irregular_checker_gets_a_longer_tolerance() {
        // Every fourth day for months, then daily: the usual three-day breaks
        // stretch the tolerance to 2 x 3 + 1 = 7 days.
        let m = checker(
            (0..30)
                .map(|i| i as f64 * 4.0 + 0.5)
                .chain((0..31).map(|i| 120.0 + i as f64)),
        );
        assert_eq!(due_ms(&m, &Config::default()), Some(day(150.0 + 1.0 + 7.0)));
    }

    #[test]
    fn occasional_checkers_have_no_habit_to_break() {
        let m = checker((0..20).map(|i| i as f64 * 3.0 + 0.5));
        assert_eq!(due_ms(&m, &Config::default()), None);
        assert_eq!(evaluate(&m, day(200.0), &Config::default()), Verdict::Hold);
    }
}
