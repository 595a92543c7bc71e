//! `open_rate_drop`: the member's recent email open rate has fallen well below
//! their own baseline.
//!
//! Opens out of sends are binomial, so the rule asks two things: the recent
//! rate is at most `drop_ratio` of the baseline *and* so few opens would be
//! unlikely (`p ≤ max_p_value`) if the member still opened at their baseline
//! rate. With few sends the second test cannot pass, which is the point.
//! The baseline rate is itself an estimate, so the test uses it `baseline_margin_se`
//! standard errors lower (a member whose baseline was lucky is not flagged for it).

use serde::{Deserialize, Serialize};

use super::stats::binomial_cdf;
use super::{Evidence, Finding, Severity, Verdict, WeekWindows};
use crate::state::window::{week_of, week_start_ms};
use crate::state::MemberState;

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Run this detector.
    pub enabled: bool,
    /// Complete weeks in the recent window.
    pub recent_weeks: u32,
    /// Complete weeks of baseline before the recent window (at most 16 minus
    /// `recent_weeks`: the state keeps 16 complete weeks).
    pub baseline_weeks: u32,
    /// Baseline weeks the member must have been known for.
    pub min_baseline_weeks: u32,
    /// Emails sent in the baseline before its rate is trusted.
    pub min_baseline_sends: u32,
    /// Emails sent in the recent window before it is judged.
    pub min_recent_sends: u32,
    /// Members who rarely opened anyway (baseline rate below this) are not judged.
    pub min_baseline_rate: f64,
    /// Fire when the recent rate is at most this fraction of the baseline...
    pub drop_ratio: f64,
    /// ...and the binomial probability of so few opens is at most this.
    pub max_p_value: f64,
    /// The baseline rate is taken this many standard errors below its
    /// estimate, so a member whose baseline was lucky is not flagged for it.
    pub baseline_margin_se: f64,
    /// The episode closes when the recent rate is back to this fraction.
    pub recover_ratio: f64,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            enabled: true,
            recent_weeks: 6,
            baseline_weeks: 10,
            min_baseline_weeks: 8,
            min_baseline_sends: 16,
            min_recent_sends: 4,
            min_baseline_rate: 0.15,
            drop_ratio: 0.5,
            max_p_value: 0.001,
            baseline_margin_se: 2.0,
            recover_ratio: 0.8,
        }
    }
}

pub fn evaluate(m: &MemberState, now_ms: i64, cfg: &Config) -> Verdict {
    if !cfg.enabled || m.sends.is_empty() {
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
    let base_sends = m.sends.sum(w.baseline.0, w.baseline.1);
    let base_opens = m.opens.sum(w.baseline.0, w.baseline.1).min(base_sends);
    let recent_sends = m.sends.sum(w.recent.0, w.recent.1);
    let recent_opens = m.opens.sum(w.recent.0, w.recent.1).min(recent_sends);
    if base_sends < cfg.min_baseline_sends || recent_sends < cfg.min_recent_sends {
        return Verdict::Hold;
    }
    let base_rate = base_opens as f64 / base_sends as f64;
    if base_rate < cfg.min_baseline_rate {
        return Verdict::Hold;
    }
    let recent_rate = recent_opens as f64 / recent_sends as f64;
    // Agresti–Coull: a sane standard error even for 12 opens out of 12.
    let n = base_sends as f64 + 4.0;
    let adjusted = (base_opens as f64 + 2.0) / n;
    let se = (adjusted * (1.0 - adjusted) / n).sqrt();
    let cautious = (adjusted - cfg.baseline_margin_se * se).clamp(0.0, base_rate);
    let p = binomial_cdf(recent_opens, recent_sends, cautious);
    if recent_rate <= cfg.drop_ratio * base_rate && p <= cfg.max_p_value {
        let severity = if recent_opens == 0 {
            Severity::Critical
        } else {
            Severity::Warning
        };
        return Verdict::Fire(Finding {
            severity,
            evidence: Evidence::default()
                .num("recent_open_rate", recent_rate)
                .num("baseline_open_rate", base_rate)
                .num("recent_sends", recent_sends as f64)
                .num("recent_opens", recent_opens as f64)
                .num("baseline_sends", base_sends as f64)
                .num("baseline_opens", base_opens as f64)
                .num("recent_weeks", cfg.recent_weeks as f64)
                .num("p_value", p),
            // The windows are complete weeks: the drop became visible when
            // the last of them closed.
            since_ms: week_start_ms(week_of(now_ms)),
        });
    }
    if recent_rate >= cfg.recover_ratio * base_rate {
        Verdict::Recover
    } else {
        Verdict::Hold
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::detect::testkit::{day, member, Lcg};
    use crate::event::EventKind::{EmailOpen, EmailSend};

    /// Three sends a week for `weeks` weeks, opened with the weekly rates given.
    fn reader(weeks: usize, rate: impl Fn(usize) -> f64, rng: &mut Lcg) -> MemberState {
        let mut evs = Vec::new();
        for w in 0..weeks {
            for s in 0..3 {
                let d = w as f64 * 7.0 + s as f64 * 2.0 + 0.5;
                evs.push((EmailSend, d, 0.0));
                if rng.next() < rate(w) {
                    evs.push((EmailOpen, d + 0.1, 0.0));
                }
            }
        }
        member(&evs)
    }

    #[test]
    fn fires_when_a_regular_reader_stops_opening() {
        let m = reader(17, |w| if w < 11 { 1.0 } else { 0.0 }, &mut Lcg(1));
        let Verdict::Fire(f) = evaluate(&m, day(17.0 * 7.0), &Config::default()) else {
            panic!("expected a finding");
        };
        assert_eq!(f.evidence.get_num("recent_open_rate"), Some(0.0));
        assert_eq!(f.evidence.get_num("baseline_open_rate"), Some(1.0));
        assert_eq!(f.severity, Severity::Critical);
        assert_eq!(f.since_ms, day(17.0 * 7.0));
    }

    #[test]
    fn binomial_noise_around_a_steady_rate_stays_quiet() {
        let mut rng = Lcg(42);
        let mut fired = 0;
        for i in 0..2000 {
            let rate = 0.2 + 0.6 * (i as f64 / 2000.0);
            let m = reader(17, |_| rate, &mut rng);
            if matches!(
                evaluate(&m, day(17.0 * 7.0), &Config::default()),
                Verdict::Fire(_)
            ) {
                fired += 1;
            }
        }
        assert!(fired <= 4, "{fired} of 2000 steady readers flagged");
    }

    #[test]
    fn holds_without_enough_sends_or_history() {
        let m = reader(5, |_| 1.0, &mut Lcg(3));
        assert_eq!(evaluate(&m, day(35.0), &Config::default()), Verdict::Hold);
        let rare = reader(17, |_| 0.05, &mut Lcg(3));
        assert_eq!(
            evaluate(&rare, day(17.0 * 7.0), &Config::default()),
            Verdict::Hold
        );
    }

    #[test]
    fn recovers_when_opens_come_back() {
        let m = reader(17, |_| 0.9, &mut Lcg(5));
        assert_eq!(
            evaluate(&m, day(17.0 * 7.0), &Config::default()),
            Verdict::Recover
        );
    }
}
