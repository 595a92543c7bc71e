//! The 0–100 `risk_score`: how likely the member is to lapse, at detection
//! time.
//!
//! Two parts, combined like independent probabilities
//! (`1 − (1 − recency)(1 − signals)`):
//! - recency: how far past their own usual purchase gap the member is,
//!   `1 − exp(−(overdue ratio − 1) / 1.5)` once overdue (the overdue ratio is
//!   days since the last purchase over the usual gap; members without a gap
//!   history are measured against the `silent` threshold);
//! - signals: each open cooling episode adds its weight
//!   (`1 − Π(1 − w)`): purchase_gap 0.35, stage_change 0.30, visit_decline
//!   0.20, checkin_lapse 0.20, open_rate_drop 0.15, spend_decline 0.15.
//!
//! The stage then sets a floor: `silent` ≥ 60, `churned` ≥ 85.

use crate::detect::{days, purchase_gap, stage_change, Signal};
use crate::state::member::{Stage, NEVER};
use crate::state::MemberState;

const WEIGHTS: [f64; 6] = [0.35, 0.15, 0.20, 0.20, 0.15, 0.30];

/// Weight of 1 − P(alive) in the blend.
const MODEL_WEIGHT: f64 = 0.5;

pub fn risk_score(
    m: &MemberState,
    now_ms: i64,
    stage: Stage,
    gap_cfg: &purchase_gap::Config,
    life: &stage_change::Config,
    p_alive: Option<f64>,
) -> f64 {
    let anchor = m
        .last_purchase_ms()
        .unwrap_or(if m.last_active_ms == NEVER {
            m.first_seen_ms
        } else {
            m.last_active_ms
        });
    let usual = purchase_gap::median_gap_days(m, gap_cfg)
        .unwrap_or(life.silent_days / 2.0)
        .max(1.0);
    let ratio = days(now_ms - anchor) / usual;
    let recency = if ratio > 1.0 {
        1.0 - (-(ratio - 1.0) / 1.5).exp()
    } else {
        0.0
    };
    let mut keep = 1.0;
    for (i, ep) in m.episodes.iter().enumerate() {
        if ep.open {
            keep *= 1.0 - WEIGHTS[i];
        }
    }
    let signals = 1.0 - keep;
    // The purchase model is a third, independent piece of evidence: half
    // its probability of the member having lapsed counts like an open
    // signal of weight 0.5. BG/NBD's P(alive) is 1 for one-time buyers, so
    // they are scored on recency and signals alone.
    let model = p_alive.map_or(0.0, |p| MODEL_WEIGHT * (1.0 - p.clamp(0.0, 1.0)));
    let mut score = 100.0 * (1.0 - (1.0 - recency) * (1.0 - signals) * (1.0 - model));
    score = match stage {
        Stage::Silent => score.max(60.0),
        Stage::Churned => score.max(85.0),
        _ => score,
    };
    (score.clamp(0.0, 100.0) * 10.0).round() / 10.0
}

/// Index of a signal's weight, for the docs and tests.
pub fn weight(signal: Signal) -> f64 {
    WEIGHTS.get(signal as usize).copied().unwrap_or(0.0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::detect::testkit::{day, member};
    use crate::event::EventKind::Purchase;

    #[test]
    fn risk_grows_with_overdue_time_and_open_episodes() {
        let mut m = member(
            &(0..5)
                .map(|i| (Purchase, i as f64 * 10.0, 20.0))
                .collect::<Vec<_>>(),
        );
        let (g, l) = (
            purchase_gap::Config::default(),
            stage_change::Config::default(),
        );
        let on_time = risk_score(&m, day(45.0), Stage::Active, &g, &l, None);
        let late = risk_score(&m, day(80.0), Stage::Cooling, &g, &l, None);
        assert_eq!(on_time, 0.0);
        assert!(late > 80.0, "{late}");
        let quiet = risk_score(&m, day(50.0), Stage::Active, &g, &l, None);
        m.episodes[Signal::VisitDecline as usize].open = true;
        assert!(risk_score(&m, day(50.0), Stage::Cooling, &g, &l, None) > quiet);
        assert_eq!(weight(Signal::PurchaseGap), 0.35);
        assert!(risk_score(&m, day(50.0), Stage::Churned, &g, &l, None) >= 85.0);
    }

    #[test]
    fn a_low_p_alive_raises_the_score_and_a_certain_one_leaves_it() {
        let m = member(
            &(0..5)
                .map(|i| (Purchase, i as f64 * 10.0, 20.0))
                .collect::<Vec<_>>(),
        );
        let (g, l) = (
            purchase_gap::Config::default(),
            stage_change::Config::default(),
        );
        let base = risk_score(&m, day(45.0), Stage::Active, &g, &l, None);
        assert_eq!(
            risk_score(&m, day(45.0), Stage::Active, &g, &l, Some(1.0)),
            base
        );
        assert!(risk_score(&m, day(45.0), Stage::Active, &g, &l, Some(0.1)) > base + 20.0);
    }
}
