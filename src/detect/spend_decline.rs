//! `spend_decline`: the member's recent order values have fallen well below
//! their own baseline.
//!
//! The last `recent_orders` orders are compared with the kept orders before
//! them. Order values are roughly log-normal, so the comparison is on log
//! amounts: it fires when the recent geometric mean is at most `drop_ratio`
//! of the baseline's and a pooled-variance t statistic on the logs is at
//! least `min_t_statistic`. One small basket among large ones, or naturally
//! erratic baskets, do not count.

use serde::{Deserialize, Serialize};

use super::stats::mean_var;
use super::{Evidence, Finding, Severity, Verdict};
use crate::state::MemberState;

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Run this detector.
    pub enabled: bool,
    /// Newest orders forming the recent window.
    pub recent_orders: u32,
    /// Older orders needed for a baseline (at most 10 minus `recent_orders`
    /// are kept).
    pub min_baseline_orders: u32,
    /// Fire when the recent (geometric) mean order value is at most this fraction of the baseline's...
    pub drop_ratio: f64,
    /// ...and the t statistic of the difference in log amounts is at least this.
    pub min_t_statistic: f64,
    /// The episode closes when the recent mean is back to this fraction.
    pub recover_ratio: f64,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            enabled: true,
            recent_orders: 3,
            min_baseline_orders: 4,
            drop_ratio: 0.5,
            min_t_statistic: 4.0,
            recover_ratio: 0.8,
        }
    }
}

pub fn evaluate(m: &MemberState, _now_ms: i64, cfg: &Config) -> Verdict {
    let ps = m.purchases();
    let k = cfg.recent_orders as usize;
    if !cfg.enabled || k == 0 || ps.len() < k + cfg.min_baseline_orders as usize {
        return Verdict::Hold;
    }
    let (base, recent) = ps.split_at(ps.len() - k);
    let ln = |p: &crate::state::member::Purchase| (p.amount as f64).max(0.01).ln();
    let (bm, bv, bn) = mean_var(base.iter().map(ln));
    let (rm, rv, rn) = mean_var(recent.iter().map(ln));
    let pooled = (((bn - 1) as f64 * bv + (rn - 1) as f64 * rv) / (bn + rn - 2) as f64)
        // Near-identical baskets must not make a trivial difference significant.
        .max(0.05f64.powi(2));
    let t = (bm - rm) / (pooled * (1.0 / bn as f64 + 1.0 / rn as f64)).sqrt();
    let ratio = (rm - bm).exp();
    let avg = |ps: &[crate::state::member::Purchase]| {
        ps.iter().map(|p| p.amount as f64).sum::<f64>() / ps.len() as f64
    };
    if ratio <= cfg.drop_ratio && t >= cfg.min_t_statistic {
        return Verdict::Fire(Finding {
            severity: if ratio <= 0.25 {
                Severity::Critical
            } else {
                Severity::Warning
            },
            evidence: Evidence::default()
                .num("recent_avg_order_value", avg(recent))
                .num("baseline_avg_order_value", avg(base))
                .num("recent_to_baseline_ratio", ratio)
                .num("recent_orders", rn as f64)
                .num("baseline_orders", bn as f64)
                .num("t_statistic", t),
            since_ms: recent[rn - 1].ts_ms,
        });
    }
    if ratio >= cfg.recover_ratio {
        Verdict::Recover
    } else {
        Verdict::Hold
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::detect::testkit::{day, member, Lcg};
    use crate::event::EventKind::Purchase;

    fn orders(amounts: &[f64]) -> MemberState {
        let evs: Vec<_> = amounts
            .iter()
            .enumerate()
            .map(|(i, a)| (Purchase, i as f64 * 10.0, *a))
            .collect();
        member(&evs)
    }

    #[test]
    fn fires_when_baskets_shrink() {
        let m = orders(&[120.0, 95.0, 110.0, 105.0, 130.0, 100.0, 30.0, 25.0, 35.0]);
        let Verdict::Fire(f) = evaluate(&m, day(90.0), &Config::default()) else {
            panic!("expected a finding");
        };
        assert_eq!(f.evidence.get_num("recent_avg_order_value"), Some(30.0));
        assert!(f.evidence.get_num("t_statistic").unwrap() >= 4.0);
        assert_eq!(f.evidence.get_num("baseline_orders"), Some(6.0));
        assert_eq!(f.since_ms, day(80.0));
    }

    #[test]
    fn erratic_baskets_stay_quiet() {
        let mut rng = Lcg(17);
        let mut fired = 0;
        for _ in 0..3000 {
            let mean = 20.0 + 200.0 * rng.next();
            // Log-normal-ish spend, sigma about 0.4.
            let amounts: Vec<f64> = (0..10)
                .map(|_| mean * (0.4 * (rng.next() + rng.next() + rng.next() - 1.5) * 2.0).exp())
                .collect();
            if matches!(
                evaluate(&orders(&amounts), day(100.0), &Config::default()),
                Verdict::Fire(_)
            ) {
                fired += 1;
            }
        }
        assert!(fired <= 6, "{fired} of 3000 steady spenders flagged");
    }

    #[test]
    fn one_small_basket_is_not_a_decline() {
        let m = orders(&[100.0, 110.0, 90.0, 105.0, 95.0, 100.0, 100.0, 20.0]);
        assert_ne!(
            evaluate(&m, day(90.0), &Config::default()),
            Verdict::Recover
        );
        assert!(!matches!(
            evaluate(&m, day(90.0), &Config::default()),
            Verdict::Fire(_)
        ));
    }
}
