//! The 0–100 `risk_score`: the estimated probability, in percent, that the
//! member makes no purchase within `risk.horizon_days` of the detection.
//!
//! The number comes from the purchase model (`crate::risk`): P(no purchase
//! in the horizon) under the configured model (Pareto/NBD by default)
//! given the member's repeat purchases, the
//! time of the last one and their age, passed through a logistic
//! calibration fitted on CDNOW, then with the odds multiplied by
//! `risk.signal_odds_ratio` for each open engagement signal. How it was
//! calibrated and how well it ranks: docs/risk-model.md.
//!
//! No stage floors or hand weights: a score is a probability, so a member
//! scored 70 lapses about 70% of the time, whatever the stage.

use crate::detect::Signal;
use crate::risk;
use crate::state::MemberState;

/// Signals about engagement rather than purchases. `purchase_gap` and
/// `stage_change` are left out: they are read off the same purchase
/// history the model already uses, so counting them again would double it.
pub const ENGAGEMENT_SIGNALS: [Signal; 4] = [
    Signal::OpenRateDrop,
    Signal::VisitDecline,
    Signal::CheckinLapse,
    Signal::SpendDecline,
];

/// The member's risk score at `now_ms`, in percent with one decimal.
pub fn risk_score(m: &MemberState, now_ms: i64, cfg: &risk::Config) -> f64 {
    let open = ENGAGEMENT_SIGNALS
        .iter()
        .filter(|s| m.episodes[**s as usize].open)
        .count();
    let p = risk::lapse_probability(m, now_ms, open, cfg);
    if !p.is_finite() {
        return 0.0;
    }
    (p.clamp(0.0, 1.0) * 1000.0).round() / 10.0
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::detect::testkit::{day, member};
    use crate::event::EventKind::{Purchase, Visit};

    fn regular() -> MemberState {
        member(
            &(0..6)
                .map(|i| (Purchase, i as f64 * 14.0, 20.0))
                .collect::<Vec<_>>(),
        )
    }

    #[test]
    fn risk_grows_the_longer_a_regular_buyer_stays_away() {
        let m = regular();
        let cfg = risk::Config::default();
        let scores: Vec<f64> = [72.0, 100.0, 160.0, 250.0]
            .iter()
            .map(|d| risk_score(&m, day(*d), &cfg))
            .collect();
        assert!(scores.windows(2).all(|w| w[0] < w[1]), "{scores:?}");
        assert!(scores[0] < 40.0 && scores[3] > 80.0, "{scores:?}");
    }

    #[test]
    fn an_open_engagement_signal_raises_the_score_a_purchase_signal_does_not() {
        let mut m = regular();
        let cfg = risk::Config::default();
        let base = risk_score(&m, day(90.0), &cfg);
        m.episodes[Signal::PurchaseGap as usize].open = true;
        assert_eq!(risk_score(&m, day(90.0), &cfg), base);
        m.episodes[Signal::VisitDecline as usize].open = true;
        assert!(risk_score(&m, day(90.0), &cfg) > base + 3.0);
    }

    #[test]
    fn a_longer_horizon_means_a_lower_risk_of_not_buying() {
        let m = regular();
        let short = risk::Config::default();
        let long = risk::Config {
            horizon_days: 365.0,
            ..short.clone()
        };
        assert!(risk_score(&m, day(90.0), &long) < risk_score(&m, day(90.0), &short));
    }

    #[test]
    fn members_who_never_bought_get_a_probability_too() {
        let m = member(&[(Visit, 0.0, 0.0)]);
        let s = risk_score(&m, day(10.0), &risk::Config::default());
        assert!((50.0..100.0).contains(&s), "{s}");
    }
}
