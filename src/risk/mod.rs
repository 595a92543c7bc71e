//! Probabilistic churn risk: Pareto/NBD ([`pareto_nbd`]), BG/NBD and
//! MBG/NBD ([`bgnbd`]) "buy till you die" models and their
//! maximum-likelihood fit ([`fit`], `churnwatch fit`).

pub mod bgnbd;
pub mod fit;
pub mod pareto_nbd;

use serde::{Deserialize, Serialize};

use crate::event::DAY_MS;
use crate::state::member::NEVER;
use crate::state::MemberState;
use bgnbd::{ModelKind, ModelParams, Rfm};

/// `[risk]`: the population parameters of the purchase model (time unit
/// weeks), as `churnwatch fit --output` writes them.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Put `p_alive` and `expected_purchases_90d` into alert evidence and
    /// let `purchase_gap` fire on a low P(alive). `risk_score` uses the model
    /// either way: it is defined as the model's lapse probability.
    pub enabled: bool,
    /// `pareto_nbd`, `mbgnbd` or `bgnbd`.
    pub model: String,
    /// Gamma shape of the purchase rate while alive.
    pub r: f64,
    /// Gamma rate (scale in weeks) of the purchase rate.
    pub alpha: f64,
    /// Beta `a` of the drop-out probability per purchase ((M)BG/NBD).
    pub a: f64,
    /// Beta `b` of the drop-out probability per purchase ((M)BG/NBD).
    pub b: f64,
    /// Gamma shape of the drop-out rate (Pareto/NBD).
    pub s: f64,
    /// Gamma rate (weeks) of the drop-out rate (Pareto/NBD).
    pub beta: f64,
    /// `risk_score` is the probability, in percent, of no purchase within
    /// this many days.
    pub horizon_days: f64,
    /// Calibration of the model's probability (logistic, on its log-odds):
    /// calibrated log-odds = intercept + slope · model log-odds. Defaults
    /// fitted on CDNOW alerts (docs/risk-model.md); 0 and 1 leave the
    /// model's probability as it is.
    pub calibration_intercept: f64,
    pub calibration_slope: f64,
    /// Each open engagement signal (`open_rate_drop`, `visit_decline`,
    /// `checkin_lapse`, `spend_decline`) multiplies the odds of lapsing by
    /// this. Purchase-based signals (`purchase_gap`, `stage_change`) do not:
    /// the purchase model already knows the history they come from.
    pub signal_odds_ratio: f64,
}

impl Default for Config {
    /// Pareto/NBD fitted on CDNOW (the MBG/NBD fit for `a`, `b`). Chosen by
    /// measurement (docs/risk-model.md): ranking who did not buy again in
    /// CDNOW's 39-week holdout by the probability of no purchase in 90
    /// days, Pareto/NBD beats plain recency where MBG/NBD does not, and
    /// BG/NBD's one-time buyers are all "alive". Fit your own programme's
    /// data.
    fn default() -> Self {
        let p = ModelParams::CDNOW_PARETO_NBD;
        let mbg = ModelParams::CDNOW_MBGNBD;
        Config {
            enabled: true,
            model: "pareto_nbd".into(),
            r: p.r,
            alpha: p.alpha,
            a: mbg.a,
            b: mbg.b,
            s: p.a,
            beta: p.b,
            horizon_days: 90.0,
            calibration_intercept: 0.1699,
            calibration_slope: 0.8267,
            signal_odds_ratio: 1.5,
        }
    }
}

impl Config {
    pub fn kind(&self) -> Option<ModelKind> {
        ModelKind::parse(&self.model)
    }

    /// The parameters of the configured model; Pareto/NBD's drop-out rate
    /// travels in `a`, `b` (see [`ModelParams`]).
    pub fn params(&self) -> ModelParams {
        let (a, b) = match self.kind() {
            Some(ModelKind::ParetoNbd) => (self.s, self.beta),
            _ => (self.a, self.b),
        };
        ModelParams {
            r: self.r,
            alpha: self.alpha,
            a,
            b,
        }
    }
}

/// A member's (x, t_x, T) at `now_ms` in weeks, counting purchase days as
/// `churnwatch fit` does; `None` before the first purchase.
pub fn member_rfm(m: &MemberState, now_ms: i64) -> Option<Rfm> {
    if m.purchase_days == 0 || m.first_purchase_ms == NEVER {
        return None;
    }
    let day = |ms: i64| ms.div_euclid(DAY_MS);
    let first = day(m.first_purchase_ms);
    let last = m.last_purchase_ms().map_or(first, day).max(first);
    let now = day(now_ms).max(last);
    let x = (m.purchase_days - 1) as f64;
    Some(Rfm::new(
        x,
        if x > 0.0 {
            (last - first) as f64 / 7.0
        } else {
            0.0
        },
        (now - first) as f64 / 7.0,
    ))
}

/// P(alive) and the expected purchases in the next 90 days for a member.
pub fn assess(m: &MemberState, now_ms: i64, cfg: &Config) -> Option<(f64, f64)> {
    if !cfg.enabled {
        return None;
    }
    let kind = cfg.kind()?;
    let rfm = member_rfm(m, now_ms)?;
    let p = cfg.params();
    let alive = bgnbd::p_alive(kind, &p, &rfm);
    let expected = bgnbd::expected_purchases(kind, &p, &rfm, 90.0 / 7.0);
    (alive.is_finite() && expected.is_finite()).then_some((alive, expected))
}

/// The estimated probability (0–1) that the member makes no purchase in the
/// `horizon_days` after `now_ms`: the purchase model's own probability
/// (members who never bought: the population's purchase rate after the
/// time they have been known without buying), calibrated, then shifted by
/// `open_signals` open engagement signals (counted by the caller: which
/// signals count is the alert layer's business, not the model's).
pub fn lapse_probability(m: &MemberState, now_ms: i64, open_signals: usize, cfg: &Config) -> f64 {
    let params = cfg.params();
    let kind = cfg.kind().unwrap_or(ModelKind::MbgNbd);
    let horizon = cfg.horizon_days / 7.0;
    let raw = match member_rfm(m, now_ms) {
        Some(rfm) => bgnbd::p_no_purchase_within(kind, &params, &rfm, horizon),
        None => {
            let weeks = (now_ms - m.first_seen_ms) as f64 / (7 * DAY_MS) as f64;
            bgnbd::p_no_first_purchase_within(&params, weeks, horizon)
        }
    };
    if !raw.is_finite() {
        return f64::NAN;
    }
    // Log-odds clipped to ±ln(1e6): a model "certainty" of 1e-12 is not one.
    let p = raw.clamp(1e-6, 1.0 - 1e-6);
    let signals = open_signals as f64;
    let z = cfg.calibration_intercept
        + cfg.calibration_slope * (p / (1.0 - p)).ln()
        + signals * cfg.signal_odds_ratio.max(f64::MIN_POSITIVE).ln();
    1.0 / (1.0 + (-z).exp())
}

/// P(alive) alone (no expected purchases, so no 2F1): what the
/// `purchase_gap` detector needs on every evaluation.
pub fn p_alive_at(m: &MemberState, now_ms: i64, cfg: &Config) -> Option<f64> {
    if !cfg.enabled {
        return None;
    }
    let alive = bgnbd::p_alive(cfg.kind()?, &cfg.params(), &member_rfm(m, now_ms)?);
    alive.is_finite().then_some(alive)
}

/// The first moment (start of a day, as P(alive) is computed per day) at
/// which the member's P(alive) is at most `p` if they buy nothing more.
pub fn p_alive_falls_to_ms(m: &MemberState, cfg: &Config, p: f64) -> Option<i64> {
    if !cfg.enabled {
        return None;
    }
    let rfm = member_rfm(m, m.last_purchase_ms()?)?;
    let weeks = age_when_p_alive_falls_to(cfg.kind()?, &cfg.params(), &rfm, p)?;
    let first_day = m.first_purchase_ms.div_euclid(DAY_MS);
    // The tolerance keeps a whole number of days (Pareto/NBD's search
    // returns days / 7) from rounding up to the next one.
    let days = (weeks * 7.0 - 1e-6).ceil();
    (days < 1e7).then(|| (first_day + days as i64) * DAY_MS)
}

/// [`bgnbd::age_when_p_alive_falls_to`], remembered. It is a root search
/// over P(alive) (for Pareto/NBD a ₂F₁ series at every step) that depends
/// only on the model and the purchase history, which only a purchase
/// changes, while every event reschedules its member's timer and asks
/// again. A pure function, so the memo changes no result; per thread, and
/// cleared when full, so it needs no lock and stays small.
fn age_when_p_alive_falls_to(
    kind: bgnbd::ModelKind,
    params: &bgnbd::ModelParams,
    rfm: &bgnbd::Rfm,
    p: f64,
) -> Option<f64> {
    use std::cell::RefCell;
    // foldhash, not SipHash: the key is no one's input to attack, and it is
    // looked up on every purchase-model evaluation.
    use hashbrown::HashMap;
    const MEMO_ENTRIES: usize = 1 << 14;
    thread_local! {
        static MEMO: RefCell<HashMap<[u64; 9], Option<f64>>> = RefCell::new(HashMap::new());
    }
    let key = [
        kind as u64,
        params.r.to_bits(),
        params.alpha.to_bits(),
        params.a.to_bits(),
        params.b.to_bits(),
        rfm.x.to_bits(),
        rfm.t_x.to_bits(),
        rfm.t.to_bits(),
        p.to_bits(),
    ];
    MEMO.with_borrow_mut(|memo| {
        if let Some(weeks) = memo.get(&key) {
            return *weeks;
        }
        if memo.len() >= MEMO_ENTRIES {
            memo.clear();
        }
        let weeks = bgnbd::age_when_p_alive_falls_to(kind, params, rfm, p);
        memo.insert(key, weeks);
        weeks
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::detect::testkit::{day, member};
    use crate::event::EventKind::Purchase;

    #[test]
    fn a_lapsed_regular_buyer_is_less_likely_alive_than_an_active_one() {
        let m = member(
            &(0..8)
                .map(|i| (Purchase, i as f64 * 14.0, 20.0))
                .collect::<Vec<_>>(),
        );
        let cfg = Config::default();
        let (fresh, e_fresh) = assess(&m, day(7.0 * 14.0 + 7.0), &cfg).unwrap();
        let (lapsed, e_lapsed) = assess(&m, day(7.0 * 14.0 + 200.0), &cfg).unwrap();
        assert!(fresh > 0.8, "{fresh}");
        assert!(lapsed < 0.3, "{lapsed}");
        assert!(e_fresh > e_lapsed);
    }

    #[test]
    fn p_alive_falls_to_the_threshold_on_the_predicted_day() {
        let m = member(
            &(0..6)
                .map(|i| (Purchase, i as f64 * 10.0, 20.0))
                .collect::<Vec<_>>(),
        );
        let cfg = Config::default();
        let due = p_alive_falls_to_ms(&m, &cfg, 0.2).unwrap();
        assert!(p_alive_at(&m, due, &cfg).unwrap() <= 0.2);
        assert!(p_alive_at(&m, due - DAY_MS, &cfg).unwrap() > 0.2);
        assert!(due > m.last_purchase_ms().unwrap());
    }

    #[test]
    fn members_without_purchases_are_not_assessed() {
        let m = member(&[(crate::event::EventKind::Visit, 0.0, 0.0)]);
        assert_eq!(assess(&m, day(10.0), &Config::default()), None);
    }
}
