//! `visit_decline`: the member's recent visit frequency has fallen well below
//! their own baseline.
//!
//! Visits per week are close to Poisson around the member's own rate, so a
//! decline counts only when the recent count is at most `drop_ratio` of what
//! the baseline predicts *and* that few visits would be unlikely
//! (`p ≤ max_p_value`) at the baseline rate. Members who visit too rarely for
//! that test to ever pass (`min_expected_visits`) are not judged. The
//! baseline rate is an estimate too, so the test uses it
//! `baseline_margin_se` standard errors lower.

use serde::{Deserialize, Serialize};

use super::stats::poisson_cdf;
use super::{Context, Detector, Evidence, Finding, Severity, Signal, Verdict, WeekWindows};
use crate::state::window::{week_of, week_start_ms};
use crate::state::MemberState;

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Run this detector.
    pub enabled: bool,
    /// Complete weeks in the recent window.
    pub recent_weeks: u32,
    /// Complete weeks of baseline before it (recent + baseline ≤ 16).
    pub baseline_weeks: u32,
    /// Baseline weeks the member must have been known for.
    pub min_baseline_weeks: u32,
    /// Visits the baseline must predict for the recent window.
    pub min_expected_visits: f64,
    /// Fire when recent visits are at most this fraction of the expected...
    pub drop_ratio: f64,
    /// ...and the Poisson probability of so few visits is at most this.
    pub max_p_value: f64,
    /// The baseline rate is taken this many standard errors below its
    /// estimate, so a member whose baseline was lucky is not flagged for it.
    pub baseline_margin_se: f64,
    /// The episode closes when recent visits are back to this fraction.
    pub recover_ratio: f64,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            enabled: true,
            recent_weeks: 4,
            baseline_weeks: 12,
            min_baseline_weeks: 8,
            min_expected_visits: 6.0,
            drop_ratio: 0.5,
            max_p_value: 0.001,
            baseline_margin_se: 1.5,
            recover_ratio: 0.8,
        }
    }
}

/// The `visit_decline` detector, as the engine runs it (see [`super::Detector`]).
pub struct VisitDecline;

impl Detector for VisitDecline {
    fn signal(&self) -> Signal {
        Signal::VisitDecline
    }
    fn evaluate(&self, m: &MemberState, now_ms: i64, ctx: &Context<'_>) -> Verdict {
        evaluate(m, now_ms, &ctx.detect.visit_decline)
    }
    fn due_ms(&self, m: &MemberState, now_ms: i64, ctx: &Context<'_>) -> Option<i64> {
        due_ms(m, now_ms, &ctx.detect.visit_decline)
    }
}

/// The first week boundary after `now_ms` at which the member's visits
/// would count as a decline if they made no further visit, or `None` if
/// staying away would never trigger it (too little baseline). Windows are
/// complete weeks, so the condition can only become true as a week closes;
/// any new visit reschedules, which keeps this exact rather than a weekly
/// poll of every member.
pub fn due_ms(m: &MemberState, now_ms: i64, cfg: &Config) -> Option<i64> {
    if !cfg.enabled || m.visits.is_empty() {
        return None;
    }
    let this_week = week_of(now_ms);
    // Past recent + baseline weeks both windows are empty: nothing can fire.
    let horizon = (cfg.recent_weeks + cfg.baseline_weeks) as i32 + 1;
    (1..=horizon)
        .map(|k| week_start_ms(this_week + k))
        .find(|&t| matches!(evaluate(m, t, cfg), Verdict::Fire(_)))
}

pub fn evaluate(m: &MemberState, now_ms: i64, cfg: &Config) -> Verdict {
    if !cfg.enabled || m.visits.is_empty() {
        return Verdict::Hold;
    }
    let Some(w) = WeekWindows::at(
        m,
        now_ms,
        cfg.recent_weeks,
        cfg.baseline_weeks,
        cfg.min_baseline_weeks,
    ) else {
        return Verdict::Hold;
    };
    let base = m.visits.sum(w.baseline.0, w.baseline.1);
    let recent = m.visits.sum(w.recent.0, w.recent.1);
    let weekly = base as f64 / w.baseline_weeks as f64;
    let expected = weekly * cfg.recent_weeks as f64;
    if expected < cfg.min_expected_visits {
        return Verdict::Hold;
    }
    let base_cautious = (base as f64 - cfg.baseline_margin_se * (base as f64).sqrt()).max(0.0);
    let cautious = base_cautious / w.baseline_weeks as f64 * cfg.recent_weeks as f64;
    let p = poisson_cdf(recent, cautious);
    if (recent as f64) <= cfg.drop_ratio * expected && p <= cfg.max_p_value {
        let severity = if recent == 0 {
            Severity::Critical
        } else {
            Severity::Warning
        };
        return Verdict::Fire(Finding {
            severity,
            evidence: Evidence::default()
                .num("recent_visits", recent as f64)
                .num("expected_visits", expected)
                .num("recent_weeks", cfg.recent_weeks as f64)
                .num("baseline_visits_per_week", weekly)
                .num("baseline_weeks", w.baseline_weeks as f64)
                .num("p_value", p),
            since_ms: week_start_ms(week_of(now_ms)),
        });
    }
    if recent as f64 >= cfg.recover_ratio * expected {
        Verdict::Recover
    } else {
        Verdict::Hold
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::detect::testkit::{day, member, Lcg};
    use crate::event::EventKind::Visit;

    fn visitor(weeks: usize, per_week: impl Fn(usize) -> f64, rng: &mut Lcg) -> MemberState {
        let mut evs = vec![(Visit, 0.0, 0.0)];
        for w in 0..weeks {
            let n = rng.poisson(per_week(w));
            for i in 0..n {
                evs.push((
                    Visit,
                    w as f64 * 7.0 + (i as f64 + 0.5) * 7.0 / (n as f64 + 1.0),
                    0.0,
                ));
            }
        }
        member(&evs)
    }

    #[test]
    fn fires_when_visits_thin_out() {
        let m = visitor(17, |w| if w < 13 { 4.0 } else { 0.3 }, &mut Lcg(9));
        let Verdict::Fire(f) = evaluate(&m, day(17.0 * 7.0), &Config::default()) else {
            panic!("expected a finding");
        };
        assert!(f.evidence.get_num("expected_visits").unwrap() > 12.0);
        assert!(f.evidence.get_num("recent_visits").unwrap() < 5.0);
        assert_eq!(f.since_ms, day(17.0 * 7.0));
    }

    #[test]
    fn poisson_noise_around_a_steady_rate_stays_quiet() {
        let mut rng = Lcg(11);
        let mut fired = 0;
        for i in 0..2000 {
            let rate = 0.5 + 5.0 * (i as f64 / 2000.0);
            let m = visitor(17, |_| rate, &mut rng);
            if matches!(
                evaluate(&m, day(17.0 * 7.0), &Config::default()),
                Verdict::Fire(_)
            ) {
                fired += 1;
            }
        }
        assert!(fired <= 4, "{fired} of 2000 steady visitors flagged");
    }

    #[test]
    fn schedules_the_first_week_a_silent_visitor_would_count_as_declined() {
        let cfg = Config::default();
        let m = visitor(14, |_| 4.0, &mut Lcg(5));
        let now = m.last_event_ms;
        let due = due_ms(&m, now, &cfg).expect("a steady visitor who stops must be due");
        assert!(matches!(evaluate(&m, due, &cfg), Verdict::Fire(_)));
        assert!(due > now);
        let week_before = week_start_ms(week_of(due) - 1);
        assert!(week_before <= now || !matches!(evaluate(&m, week_before, &cfg), Verdict::Fire(_)));
    }

    #[test]
    fn never_schedules_a_member_too_rare_to_judge() {
        let m = visitor(14, |_| 0.5, &mut Lcg(3));
        assert_eq!(due_ms(&m, m.last_event_ms, &Config::default()), None);
    }

    #[test]
    fn rare_visitors_are_not_judged() {
        let m = visitor(17, |w| if w < 13 { 0.5 } else { 0.0 }, &mut Lcg(2));
        assert_eq!(
            evaluate(&m, day(17.0 * 7.0), &Config::default()),
            Verdict::Hold
        );
    }
}
