//! `purchase_gap`: the time since the last purchase is well beyond the
//! member's own usual gap, or the gaps keep lengthening.
//!
//! The usual gap is the median of the member's recent gaps (robust to one odd
//! gap). The overdue threshold is `max(gap_multiplier × typical, typical +
//! min_extra_days)`: twice the usual gap absorbs ordinary jitter (±20% is far
//! inside it), and the floor in days keeps weekly shoppers from being flagged
//! for a week off. A buyer who always buys every ~65 days is therefore not
//! flagged before day 130.
//!
//! A second, model-based reason opens the same episode: the member's P(alive)
//! under the purchase model (`[risk]`, see `crate::risk`) falls to
//! `p_alive_below`. It only applies once the rhythm is trusted (`min_gaps`),
//! because with one or two purchases the model knows too little about the
//! member to act on alone. It fires earlier than the gap rule for members
//! whose history says they were frequent buyers, and never for members whose
//! gap rule has not yet had its say when P(alive) is still high.

use serde::{Deserialize, Serialize};

use super::{
    days, Context, Detector, Evidence, Finding, Inputs, NowUse, Severity, Signal, Verdict,
};
use crate::event::{EventKind, DAY_MS};
use crate::risk;
use crate::state::member::PURCHASE_HISTORY;
use crate::state::MemberState;

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Run this detector.
    pub enabled: bool,
    /// Gaps between purchases needed before the member's rhythm is trusted.
    pub min_gaps: u32,
    /// Overdue when the current gap exceeds this multiple of the usual gap...
    pub gap_multiplier: f64,
    /// ...and the usual gap plus this many days.
    pub min_extra_days: f64,
    /// Severity is `critical` from this multiple of the usual gap on.
    pub critical_multiplier: f64,
    /// Lengthening trend: each of the last `trend_gaps` gaps is at least this
    /// multiple of the one before it (severity `info`).
    pub trend_ratio: f64,
    /// Consecutive lengthening steps that make a trend (needs one more gap).
    pub trend_steps: u32,
    /// Purchases closer together than this many hours count as one visit.
    pub same_visit_hours: f64,
    /// Also overdue when the purchase model's P(alive) is at or below this
    /// (members with at least `min_gaps` gaps; 0 turns it off). Needs
    /// `[risk] enabled`.
    pub p_alive_below: f64,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            enabled: true,
            min_gaps: 3,
            gap_multiplier: 2.0,
            min_extra_days: 7.0,
            critical_multiplier: 3.0,
            trend_ratio: 1.25,
            trend_steps: 3,
            same_visit_hours: 12.0,
            p_alive_below: 0.1,
        }
    }
}

/// Gaps in days between the kept purchases, oldest first, without allocating.
fn gaps(m: &MemberState, cfg: &Config, out: &mut [f64; PURCHASE_HISTORY]) -> usize {
    let min_gap = cfg.same_visit_hours * 3_600_000.0;
    let mut n = 0;
    let mut prev: Option<i64> = None;
    for p in m.purchases() {
        if let Some(q) = prev {
            let g = (p.ts_ms - q) as f64;
            if g < min_gap {
                continue;
            }
            out[n] = g / DAY_MS as f64;
            n += 1;
        }
        prev = Some(p.ts_ms);
    }
    n
}

/// The member's usual gap and the overdue threshold, both in days.
pub fn rhythm(m: &MemberState, cfg: &Config) -> Option<(f64, f64, usize)> {
    let mut buf = [0.0; PURCHASE_HISTORY];
    let n = gaps(m, cfg, &mut buf);
    if n == 0 || (n as u32) < cfg.min_gaps {
        return None;
    }
    let typical = super::stats::median(&buf[..n]);
    Some((typical, threshold_days(typical, cfg), n))
}

fn threshold_days(typical: f64, cfg: &Config) -> f64 {
    (typical * cfg.gap_multiplier).max(typical + cfg.min_extra_days)
}

/// The member's usual gap in days, from however many gaps are kept (at least one).
pub fn median_gap_days(m: &MemberState, cfg: &Config) -> Option<f64> {
    let mut buf = [0.0; PURCHASE_HISTORY];
    let n = gaps(m, cfg, &mut buf);
    (n > 0).then(|| super::stats::median(&buf[..n]))
}

/// The `purchase_gap` detector, as the engine runs it (see [`super::Detector`]).
pub struct PurchaseGap;

impl Detector for PurchaseGap {
    fn signal(&self) -> Signal {
        Signal::PurchaseGap
    }
    fn evaluate(&self, m: &MemberState, now_ms: i64, ctx: &Context<'_>) -> Verdict {
        evaluate(m, now_ms, &ctx.detect.purchase_gap, ctx.risk)
    }
    fn due_ms(&self, m: &MemberState, _now_ms: i64, ctx: &Context<'_>) -> Option<i64> {
        due_ms(m, &ctx.detect.purchase_gap, ctx.risk)
    }
    fn inputs(&self) -> Inputs {
        // When the member becomes overdue depends on the purchases alone,
        // and until then the verdict (a lengthening trend, or none) does
        // too: the gap rule and P(alive) fire from `due_ms` on.
        Inputs {
            events: &[EventKind::Purchase],
            verdict: NowUse::UntilDue,
            due: NowUse::Ignored,
        }
    }
}

/// When, with no further purchase, the member becomes overdue: by the gap
/// rule or, if sooner, by P(alive).
pub fn due_ms(m: &MemberState, cfg: &Config, model: &risk::Config) -> Option<i64> {
    if !cfg.enabled {
        return None;
    }
    let (_, threshold, _) = rhythm(m, cfg)?;
    let by_gap = m.last_purchase_ms()? + (threshold * DAY_MS as f64).ceil() as i64;
    let by_model = (cfg.p_alive_below > 0.0)
        .then(|| risk::p_alive_falls_to_ms(m, model, cfg.p_alive_below))
        .flatten();
    Some(by_model.map_or(by_gap, |t| t.min(by_gap)))
}

pub fn evaluate(m: &MemberState, now_ms: i64, cfg: &Config, model: &risk::Config) -> Verdict {
    if !cfg.enabled {
        return Verdict::Hold;
    }
    let mut buf = [0.0; PURCHASE_HISTORY];
    let n = gaps(m, cfg, &mut buf);
    let (Some(last), true) = (m.last_purchase_ms(), n > 0 && n as u32 >= cfg.min_gaps) else {
        return Verdict::Hold;
    };
    let typical = super::stats::median(&buf[..n]);
    let threshold = threshold_days(typical, cfg);
    let since_last = days(now_ms - last);
    // Overdue from the millisecond `due_ms` names, so that the verdict
    // changes exactly when the timer says it does.
    let overdue_at = last + (threshold * DAY_MS as f64).ceil() as i64;
    if now_ms >= overdue_at {
        let severity = if since_last >= cfg.critical_multiplier * typical {
            Severity::Critical
        } else {
            Severity::Warning
        };
        return Verdict::Fire(Finding {
            severity,
            evidence: Evidence::default()
                .num("days_since_purchase", since_last)
                .num("typical_gap_days", typical)
                .num("overdue_after_days", threshold)
                .num("gaps_observed", n as f64),
            since_ms: overdue_at,
        });
    }
    // P(alive) is judged at the start of each day and only falls while the
    // member buys nothing, so it is at or below the threshold now exactly
    // when now is on or after the first day it is: the day the timer waits
    // for (`due_ms`, a remembered root search). Judging by that day keeps
    // the verdict and the timer in step, and costs a lookup where P(alive)
    // at now costs a ₂F₁ series on every event.
    let low_p_alive = cfg.p_alive_below > 0.0
        && risk::p_alive_falls_to_ms(m, model, cfg.p_alive_below).is_some_and(|t| now_ms >= t);
    if low_p_alive {
        // The alert adds `p_alive` itself (with the expected purchases), so
        // the evidence here names the rule.
        return Verdict::Fire(Finding {
            severity: Severity::Warning,
            evidence: Evidence::default()
                .text("trigger", "p_alive")
                .num("p_alive_threshold", cfg.p_alive_below)
                .num("days_since_purchase", since_last)
                .num("typical_gap_days", typical)
                .num("overdue_after_days", threshold)
                .num("gaps_observed", n as f64),
            since_ms: now_ms,
        });
    }
    let steps = cfg.trend_steps as usize;
    if steps > 0 && n > steps {
        let recent = &buf[n - steps - 1..n];
        if recent.windows(2).all(|w| w[1] >= cfg.trend_ratio * w[0]) {
            return Verdict::Fire(Finding {
                severity: Severity::Info,
                evidence: Evidence::default()
                    .num("last_gap_days", recent[steps])
                    .num("gap_before_trend_days", recent[0])
                    .num("lengthening_steps", steps as f64)
                    .num("typical_gap_days", typical)
                    .num("days_since_purchase", since_last),
                since_ms: last,
            });
        }
    }
    Verdict::Recover
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::detect::testkit::{day, member, Lcg};
    use crate::event::EventKind::Purchase;

    fn buyer(purchase_days: &[f64]) -> MemberState {
        let evs: Vec<_> = purchase_days.iter().map(|d| (Purchase, *d, 40.0)).collect();
        member(&evs)
    }

    #[test]
    fn fires_purchase_gap_when_member_goes_silent() {
        let m = buyer(&[0.0, 14.0, 28.0, 42.0, 56.0]);
        assert_eq!(
            evaluate(&m, day(70.0), &Config::default(), &risk::Config::default()),
            Verdict::Recover
        );
        let Verdict::Fire(f) =
            evaluate(&m, day(90.0), &Config::default(), &risk::Config::default())
        else {
            panic!("expected a finding");
        };
        assert_eq!(f.severity, Severity::Warning);
        assert_eq!(f.evidence.get_num("typical_gap_days"), Some(14.0));
        assert_eq!(f.evidence.get_num("overdue_after_days"), Some(28.0));
        assert_eq!(f.since_ms, day(84.0));
        assert_eq!(
            due_ms(&m, &Config::default(), &risk::Config::default()),
            Some(day(84.0))
        );
        let Verdict::Fire(f) =
            evaluate(&m, day(100.0), &Config::default(), &risk::Config::default())
        else {
            panic!()
        };
        assert_eq!(f.severity, Severity::Critical);
    }

    #[test]
    fn low_frequency_buyer_is_not_cooling_at_day_50() {
        let m = buyer(&[0.0, 65.0, 130.0, 195.0]);
        assert_eq!(
            evaluate(
                &m,
                day(195.0 + 50.0),
                &Config::default(),
                &risk::Config::default()
            ),
            Verdict::Recover
        );
        assert_eq!(
            evaluate(
                &m,
                day(195.0 + 100.0),
                &Config::default(),
                &risk::Config::default()
            ),
            Verdict::Recover
        );
        assert!(matches!(
            evaluate(
                &m,
                day(195.0 + 131.0),
                &Config::default(),
                &risk::Config::default()
            ),
            Verdict::Fire(_)
        ));
    }

    #[test]
    fn ordinary_jitter_never_fires() {
        let mut rng = Lcg(7);
        for _ in 0..2000 {
            let gap = 7.0 + rng.next() * 60.0;
            let mut t = 0.0;
            let mut ds = vec![t];
            for _ in 0..9 {
                t += gap * (0.8 + 0.4 * rng.next());
                ds.push(t);
            }
            let m = buyer(&ds);
            // Evaluated at every moment up to 1.2x the usual gap after the last
            // purchase: the member is merely on schedule.
            let now = day(t + gap * 1.2);
            assert_eq!(
                evaluate(&m, now, &Config::default(), &risk::Config::default()),
                Verdict::Recover,
                "gap {gap}"
            );
        }
    }

    #[test]
    fn fires_info_on_steadily_lengthening_gaps() {
        let m = buyer(&[0.0, 10.0, 20.0, 30.0, 43.0, 60.0, 82.0]);
        let Verdict::Fire(f) =
            evaluate(&m, day(83.0), &Config::default(), &risk::Config::default())
        else {
            panic!("expected a trend finding");
        };
        assert_eq!(f.severity, Severity::Info);
        assert_eq!(f.evidence.get_num("last_gap_days"), Some(22.0));
    }

    #[test]
    fn needs_enough_gaps_and_counts_same_visit_orders_once() {
        let m = buyer(&[0.0, 20.0, 20.1, 40.0]);
        assert_eq!(
            evaluate(&m, day(400.0), &Config::default(), &risk::Config::default()),
            Verdict::Hold
        );
        assert_eq!(
            due_ms(&m, &Config::default(), &risk::Config::default()),
            None
        );
    }
}
