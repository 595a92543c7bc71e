//! `spend_decline`: the member's order values have fallen well below their
//! own long-run level, over enough orders to be sure.
//!
//! Order values are roughly log-normal, so the test works on log amounts. A
//! sequential test lets the evidence accumulate for as long as the decline
//! lasts: for every possible first order of a change among the kept orders,
//! the orders since then are weighed as a Gaussian likelihood ratio, "the
//! member now spends `drop_ratio` of their level" against "they still spend
//! at their level", where their level is the mean log amount of every order
//! before that one, long-run totals included (`older_log_spend`). The best
//! start wins (a CUSUM on log spend per order); the baseline ends where the
//! suspected change begins, so the change never becomes its own baseline.
//!
//! Minimum evidence: `min_recent_orders` orders in the decline (one small
//! basket is not a decline), `min_baseline_orders` before it, a spread of
//! at least `min_log_sd` (near-identical baskets must not make a trivial
//! difference certain), and the level taken `baseline_margin_se` standard
//! errors low.

use serde::{Deserialize, Serialize};

use super::stats::mean_var;
use super::{Context, Detector, Evidence, Finding, Inputs, NowUse, Severity, Signal, Verdict};
use crate::event::EventKind;
use crate::state::member::{log_amount, Purchase};
use crate::state::MemberState;

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Run this detector.
    pub enabled: bool,
    /// Orders a decline must span before it counts.
    pub min_recent_orders: u32,
    /// Orders before the decline needed for a baseline.
    pub min_baseline_orders: u32,
    /// The decline tested for: orders now worth this fraction of the usual.
    pub drop_ratio: f64,
    /// Fire when the log-likelihood ratio of the decline reaches this.
    pub threshold: f64,
    /// Smallest standard deviation of log order values assumed: ten kept
    /// orders estimate a spread poorly, and an underestimate would make
    /// ordinary noise look like certainty.
    pub min_log_sd: f64,
    /// The baseline level is taken this many standard errors low.
    pub baseline_margin_se: f64,
    /// The episode closes when the last `min_recent_orders` orders are back
    /// to this fraction of the long-run level.
    pub recover_ratio: f64,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            enabled: true,
            min_recent_orders: 3,
            min_baseline_orders: 4,
            drop_ratio: 0.5,
            threshold: 12.0,
            min_log_sd: 0.35,
            baseline_margin_se: 1.0,
            recover_ratio: 0.8,
        }
    }
}

struct Decline {
    llr: f64,
    orders: usize,
    baseline_orders: u32,
    level: f64,
    recent_level: f64,
}

fn best_decline(m: &MemberState, cfg: &Config) -> Option<Decline> {
    let ps = m.purchases();
    let older = m.older_purchases();
    let logs: Vec<f64> = ps.iter().map(|p| log_amount(p.amount)).collect();
    let min_recent = cfg.min_recent_orders.max(1) as usize;
    let delta = cfg.drop_ratio.ln();
    let mut best: Option<Decline> = None;
    for k in 0..=logs.len().saturating_sub(min_recent) {
        let nb = older + k as u32;
        if nb < cfg.min_baseline_orders.max(1) {
            continue;
        }
        let (base, recent) = logs.split_at(k);
        let level = (m.older_log_spend as f64 + base.iter().sum::<f64>()) / nb as f64;
        // Spread within the kept orders on each side of the change.
        let (_, bv, bn) = mean_var(base.iter().copied());
        let (rm, rv, rn) = mean_var(recent.iter().copied());
        let df = bn.saturating_sub(1) + rn.saturating_sub(1);
        let var = if df > 0 {
            (bn.saturating_sub(1) as f64 * bv + (rn - 1) as f64 * rv) / df as f64
        } else {
            0.0
        }
        .max(cfg.min_log_sd.powi(2));
        let mu0 = level - cfg.baseline_margin_se * (var / nb as f64).sqrt();
        // Gaussian, shift δ = ln(drop_ratio): Σ (δ(x − μ0) − δ²/2) / σ².
        let llr = recent
            .iter()
            .map(|x| (delta * (x - mu0) - delta * delta / 2.0) / var)
            .sum::<f64>();
        if best.as_ref().is_none_or(|b| llr > b.llr) {
            best = Some(Decline {
                llr,
                orders: rn,
                baseline_orders: nb,
                level,
                recent_level: rm,
            });
        }
    }
    best
}

/// The `spend_decline` detector, as the engine runs it (see [`super::Detector`]).
pub struct SpendDecline;

impl Detector for SpendDecline {
    fn signal(&self) -> Signal {
        Signal::SpendDecline
    }
    fn evaluate(&self, m: &MemberState, now_ms: i64, ctx: &Context<'_>) -> Verdict {
        evaluate(m, now_ms, &ctx.detect.spend_decline)
    }
    fn inputs(&self) -> Inputs {
        // Order values alone: the time plays no part.
        Inputs {
            events: &[EventKind::Purchase],
            verdict: NowUse::Ignored,
            due: NowUse::Ignored,
        }
    }
}

pub fn evaluate(m: &MemberState, _now_ms: i64, cfg: &Config) -> Verdict {
    if !cfg.enabled || m.purchases().is_empty() {
        return Verdict::Hold;
    }
    let ps = m.purchases();
    if let Some(d) = best_decline(m, cfg).filter(|d| d.llr >= cfg.threshold) {
        let ratio = (d.recent_level - d.level).exp();
        let recent = &ps[ps.len() - d.orders..];
        let avg =
            |ps: &[Purchase]| ps.iter().map(|p| p.amount as f64).sum::<f64>() / ps.len() as f64;
        return Verdict::Fire(Finding {
            severity: if ratio <= 0.25 {
                Severity::Critical
            } else {
                Severity::Warning
            },
            evidence: Evidence::default()
                .num("log_likelihood_ratio", d.llr)
                .num("log_likelihood_ratio_threshold", cfg.threshold)
                .num("recent_orders", d.orders as f64)
                .num("recent_avg_order_value", avg(recent))
                .num("baseline_typical_order_value", d.level.exp())
                .num("recent_to_baseline_ratio", ratio)
                .num("baseline_orders", d.baseline_orders as f64),
            since_ms: recent[recent.len() - 1].ts_ms,
        });
    }
    let k = cfg.min_recent_orders.max(1) as usize;
    let nb = m.purchase_count.saturating_sub(k as u32);
    if ps.len() < k || nb == 0 {
        return Verdict::Hold;
    }
    let (base, recent) = ps.split_at(ps.len() - k);
    let level = (m.older_log_spend as f64 + base.iter().map(|p| log_amount(p.amount)).sum::<f64>())
        / nb as f64;
    let recent_level = recent.iter().map(|p| log_amount(p.amount)).sum::<f64>() / k as f64;
    if recent_level - level >= cfg.recover_ratio.ln() {
        Verdict::Recover
    } else {
        Verdict::Hold
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::detect::testkit::{day, event, member, report_power, Lcg, PowerCell};
    use crate::event::EventKind::Purchase;

    fn orders(amounts: &[f64]) -> MemberState {
        let evs: Vec<_> = amounts
            .iter()
            .enumerate()
            .map(|(i, a)| (Purchase, i as f64 * 10.0, *a))
            .collect();
        member(&evs)
    }

    /// Log-normal-ish noise with a standard deviation of about `sd`.
    fn noise(rng: &mut Lcg, sd: f64) -> f64 {
        (sd * 2.0 * (rng.next() + rng.next() + rng.next() - 1.5)).exp()
    }

    #[test]
    fn fires_when_baskets_shrink_and_names_the_evidence() {
        let m = orders(&[120.0, 95.0, 110.0, 105.0, 130.0, 100.0, 30.0, 25.0, 35.0]);
        let Verdict::Fire(f) = evaluate(&m, day(90.0), &Config::default()) else {
            panic!("expected a finding");
        };
        assert_eq!(f.evidence.get_num("recent_avg_order_value"), Some(30.0));
        assert!(f.evidence.get_num("log_likelihood_ratio").unwrap() >= 12.0);
        assert_eq!(f.evidence.get_num("baseline_orders"), Some(6.0));
        assert_eq!(f.since_ms, day(80.0));
    }

    /// Orders at 0.2–0.8 a day (Poisson) with log-normal spend, an unlucky
    /// stretch of four weeks at 60% of the usual basket, then baskets at a
    /// quarter or a twentieth ("nothing") for 3, 5 or 8 weeks.
    #[test]
    fn spend_drops_lasting_three_to_eight_weeks_fire() {
        let cfg = Config::default();
        let mut rng = Lcg(15);
        let mut cells = Vec::new();
        for rate in [0.2, 0.35, 0.5, 0.65, 0.8] {
            for to in [0.05, 0.25] {
                for weeks in [3, 5, 8] {
                    let (pre, n) = (20, 40);
                    let fired = (0..n)
                        .filter(|_| {
                            let mut m = MemberState::new(day(0.0));
                            let mut fired = false;
                            for w in 0..pre + 4 + weeks {
                                let level = if w < pre {
                                    100.0
                                } else if w < pre + 4 {
                                    60.0
                                } else {
                                    100.0 * to
                                };
                                for i in 0..rng.poisson(rate * 7.0) {
                                    let t = day(w as f64 * 7.0 + i as f64 * 0.1);
                                    let amount = level * noise(&mut rng, 0.3);
                                    m.apply(&event(Purchase, t, amount));
                                    if w >= pre + 4 {
                                        fired |= matches!(evaluate(&m, t, &cfg), Verdict::Fire(_));
                                    }
                                }
                            }
                            fired
                        })
                        .count();
                    // Enough orders within the drop to tell it from noise.
                    let detectable = rate * 7.0 * weeks as f64 >= 8.0;
                    cells.push(PowerCell {
                        rate,
                        to,
                        weeks,
                        fired,
                        members: n,
                        detectable,
                    });
                }
            }
        }
        let missed = report_power("spend_decline", &cells);
        assert!(missed.is_empty(), "missed: {missed:#?}");
    }

    /// Steady spenders (σ ≈ 0.4 on log amounts) over a year of orders at
    /// 0.15–0.8 a day, with a two-week break now and then.
    #[test]
    fn steady_spenders_stay_quiet_over_a_year() {
        let cfg = Config::default();
        let mut rng = Lcg(17);
        let n = 1000;
        let mut flagged = 0;
        for i in 0..n {
            let rate = 0.15 + 0.65 * (i as f64 / n as f64);
            let mean = 20.0 + 200.0 * rng.next();
            let pause = (rng.next() * 50.0) as usize;
            let mut m = MemberState::new(day(0.0));
            let mut fired = false;
            for w in 0..52 {
                if (pause..pause + 2).contains(&w) {
                    continue;
                }
                for j in 0..rng.poisson(rate * 7.0) {
                    let t = day(w as f64 * 7.0 + j as f64 * 0.1);
                    m.apply(&event(Purchase, t, mean * noise(&mut rng, 0.4)));
                    fired |= matches!(evaluate(&m, t, &cfg), Verdict::Fire(_));
                }
            }
            flagged += fired as usize;
        }
        println!("spend_decline: {flagged} of {n} steady spenders flagged in a year");
        assert!(
            flagged * 200 <= n,
            "{flagged} of {n} steady spenders flagged"
        );
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
