//! Pareto/NBD (Schmittlein, Morrison & Colombo 1987, "Counting your
//! customers: who are they and what will they do next?", Management
//! Science 33(1)), in the forms of Fader & Hardie (2005), "A note on deriving
//! the Pareto/NBD model and related expressions".
//!
//! While alive a member buys as a Poisson process with rate λ ~ Gamma(r, α);
//! they drop out at an exponential time with rate μ ~ Gamma(s, β), at any
//! moment, not only right after a purchase as in (M)BG/NBD. On CDNOW that
//! ranks who lapses better than recency where MBG/NBD does not
//! (docs/risk-model.md): MBG/NBD gives repeat buyers silent for 20–40
//! weeks nearly the lapse probability of one-time buyers (0.84 against
//! 0.88 for the 39-week holdout; observed 0.56 against 0.86), Pareto/NBD
//! separates them further (0.82 against 0.92).
//!
//! Parameters arrive as [`ModelParams`] with `a` = s and `b` = β (the shape
//! and rate of the drop-out rate), so the fit and the dispatch in
//! [`super::bgnbd`] stay one code path for all three models.

use super::bgnbd::{hyp2f1, ln_gamma, ModelParams, Rfm};

/// ln(1 + e^y) without overflow.
fn softplus(y: f64) -> f64 {
    y.max(0.0) + (-y.abs()).exp().ln_1p()
}

/// The parameter names of the papers.
struct Params {
    r: f64,
    alpha: f64,
    s: f64,
    beta: f64,
}

impl From<&ModelParams> for Params {
    fn from(p: &ModelParams) -> Params {
        Params {
            r: p.r,
            alpha: p.alpha,
            s: p.a,
            beta: p.b,
        }
    }
}

/// ln of the integral part of the likelihood's second term, as a function
/// of its end point t:
///
/// ```text
/// α ≥ β:  f(t) = ₂F₁(r+s+x, s+1; r+s+x+1; (α−β)/(α+t)) / (α+t)^(r+s+x)
/// α < β:  f(t) = ₂F₁(r+s+x, r+x; r+s+x+1; (β−α)/(β+t)) / (β+t)^(r+s+x)
/// ```
///
/// so that the likelihood's A₀ = f(t_x) − f(T). In the second case the
/// series' `b` is r + x, which for a heavy buyer makes its terms grow to
/// ~(1−z)^−(r+x) before they fall; Euler's transformation
/// ₂F₁(a, b; a+1; z) = (1−z)^(1−b) ₂F₁(1, a+1−b; a+1; z) with
/// a + 1 − b = s + 1 leaves a series bounded by 1/(1−z)^(s+1), and the
/// power goes into the logarithm.
fn ln_f(p: &Params, x: f64, t: f64) -> f64 {
    let a = p.r + p.s + x;
    if p.alpha >= p.beta {
        let z = (p.alpha - p.beta) / (p.alpha + t);
        hyp2f1(a, p.s + 1.0, a + 1.0, z).ln() - a * (p.alpha + t).ln()
    } else {
        let z = (p.beta - p.alpha) / (p.beta + t);
        // 1 − z = (α + t) / (β + t), exactly.
        let ln_one_minus_z = ((p.alpha + t) / (p.beta + t)).ln();
        (1.0 - p.r - x) * ln_one_minus_z + hyp2f1(1.0, p.s + 1.0, a + 1.0, z).ln()
            - a * (p.beta + t).ln()
    }
}

/// Log-odds that the member has dropped out by T, `ln(P(dead) / P(alive))`:
///
/// ```text
/// P(alive) = 1 / (1 + s/(r+s+x) · (α+T)^(r+x) (β+T)^s · A₀)
/// ```
///
/// in logs, with A₀ = f(t_x)·(1 − f(T)/f(t_x)). `ln_f_tx` is f(t_x), which
/// does not depend on T (a search over T computes it once). −∞ when
/// T = t_x: someone seen buying just now is alive. Where the ₂F₁ series
/// does not converge (β ≫ α puts its argument next to 1) the integral A₀
/// stands for is summed instead ([`dropout_log_odds_by_quadrature`]).
fn dropout_log_odds_with(p: &Params, c: &Rfm, ln_f_tx: f64) -> f64 {
    let a = p.r + p.s + c.x;
    let gap = ln_f(p, c.x, c.t) - ln_f_tx;
    if gap.is_nan() {
        return dropout_log_odds_by_quadrature(p, c);
    }
    if gap >= 0.0 {
        return f64::NEG_INFINITY;
    }
    (p.s / a).ln()
        + (p.r + c.x) * (p.alpha + c.t).ln()
        + p.s * (p.beta + c.t).ln()
        + ln_f_tx
        + (-gap.exp_m1()).ln()
}

/// The same log-odds from the integral A₀ is: s/(r+s+x)·A₀ =
/// s ∫_{t_x}^T (α+τ)^−(r+x) (β+τ)^−(s+1) dτ, in the variable
/// w = ln((α+τ)/(α+t_x)) (the integrand falls like e^−(r+x)w, so equal
/// steps in w suit light and heavy buyers alike), scaled by its value at
/// t_x, Simpson's rule on 2,000 intervals.
fn dropout_log_odds_by_quadrature(p: &Params, c: &Rfm) -> f64 {
    const INTERVALS: usize = 2_000;
    let tx = t_x(c);
    if c.t <= tx {
        return f64::NEG_INFINITY;
    }
    let rx = p.r + c.x;
    // ln of ((α+T)/(α+τ))^(r+x) ((β+T)/(β+τ))^s / (β+τ) · (α+τ), the last
    // factor being dτ/dw.
    let ln_g = |tau: f64| {
        rx * ((p.alpha + c.t) / (p.alpha + tau)).ln() + p.s * ((p.beta + c.t) / (p.beta + tau)).ln()
            - (p.beta + tau).ln()
            + (p.alpha + tau).ln()
    };
    let top = ln_g(tx);
    let w_end = ((p.alpha + c.t) / (p.alpha + tx)).ln();
    let h = w_end / INTERVALS as f64;
    let g = |i: usize| {
        let tau = ((p.alpha + tx) * (i as f64 * h).exp() - p.alpha).min(c.t);
        (ln_g(tau) - top).exp()
    };
    let mut sum = g(0) + g(INTERVALS);
    for i in 1..INTERVALS {
        sum += if i % 2 == 1 { 4.0 } else { 2.0 } * g(i);
    }
    p.s.ln() + top + (sum * h / 3.0).ln()
}

fn t_x(c: &Rfm) -> f64 {
    // t_x is 0 by definition without repeats; ignore stray values.
    if c.x == 0.0 {
        0.0
    } else {
        c.t_x
    }
}

fn dropout_log_odds(p: &Params, c: &Rfm) -> f64 {
    dropout_log_odds_with(p, c, ln_f(p, c.x, t_x(c)))
}

/// P(alive at T | x, t_x, T). Callers validate the input.
pub(super) fn p_alive(params: &ModelParams, c: &Rfm) -> f64 {
    (-softplus(dropout_log_odds(&params.into(), c))).exp()
}

/// ln L(r, α, s, β | x, t_x, T):
///
/// ```text
/// L = Γ(r+x) α^r β^s / Γ(r) · [ (α+T)^−(r+x) (β+T)^−s + s/(r+s+x) · A₀ ]
/// ```
///
/// = ln(first bracket term) + ln(1 + e^y) with y the drop-out log-odds.
pub(super) fn customer_log_likelihood(params: &ModelParams, c: &Rfm) -> f64 {
    let p = Params::from(params);
    ln_gamma(p.r + c.x) - ln_gamma(p.r) + p.r * p.alpha.ln() + p.s * p.beta.ln()
        - (p.r + c.x) * (p.alpha + c.t).ln()
        - p.s * (p.beta + c.t).ln()
        + softplus(dropout_log_odds(&p, c))
}

/// Probability of a purchase in (T, T + τ] for someone alive at T: the
/// first purchase must come before both τ and the drop-out, so with the
/// posteriors λ ~ Gamma(r+x, α+T) and μ ~ Gamma(s, β+T) (independent given
/// alive)
///
/// ```text
/// P = ∫₀^τ E[λ e^−λu] E[e^−μu] du
///   = ∫₀^τ (r+x)/(α+T+u) · q(u) · m(u) du,   q(u) = ((α+T)/(α+T+u))^(r+x),
///                                              m(u) = ((β+T)/(β+T+u))^s
///   = ∫₀^V e^−v m(u(v)) dv,   V = (r+x) ln(1 + τ/(α+T))
/// ```
///
/// substituting q = e^−v (dq = −(r+x)/(α+T+u) q du): the last integrand is
/// smooth, in [0, 1] and falls at least as fast as e^−v, however heavy the
/// buyer (the first form is a spike at 0 for them). Summed by 20-point
/// Gauss–Legendre on panels of width at most 3 in v, up to v = 40
/// (e^−40 ≈ 4e-18); one panel for most members. Without drop-out (m = 1)
/// it is exactly 1 − e^−V.
fn buys_if_alive(p: &Params, c: &Rfm, horizon: f64) -> f64 {
    const PANEL: f64 = 3.0;
    let rx = p.r + c.x;
    let end = (rx * (horizon / (p.alpha + c.t)).ln_1p()).min(40.0);
    // A zero horizon, or NaN from invalid input: nothing bought.
    if end.is_nan() || end <= 0.0 {
        return 0.0;
    }
    let integrand = |v: f64| -> f64 {
        // u(v) = (α+T)(e^(v/(r+x)) − 1).
        let u = (p.alpha + c.t) * (v / rx).exp_m1();
        (-v - p.s * (u / (p.beta + c.t)).ln_1p()).exp()
    };
    let panels = (end / PANEL).ceil() as usize;
    let width = end / panels as f64;
    let mut sum = 0.0;
    for k in 0..panels {
        let (mid, half) = ((k as f64 + 0.5) * width, width / 2.0);
        sum += half
            * gauss_legendre_20()
                .iter()
                .map(|&(node, weight)| weight * integrand(mid + half * node))
                .sum::<f64>();
    }
    sum.clamp(0.0, 1.0)
}

/// Nodes and weights of 20-point Gauss–Legendre quadrature on [−1, 1],
/// computed once by Newton's method on the Legendre polynomial P₂₀.
fn gauss_legendre_20() -> &'static [(f64, f64); 20] {
    static RULE: std::sync::OnceLock<[(f64, f64); 20]> = std::sync::OnceLock::new();
    RULE.get_or_init(|| {
        const N: usize = 20;
        let mut rule = [(0.0, 0.0); N];
        for (i, slot) in rule.iter_mut().enumerate() {
            let mut x = (std::f64::consts::PI * (i as f64 + 0.75) / (N as f64 + 0.5)).cos();
            let mut derivative = 0.0;
            for _ in 0..100 {
                // P_n(x) and P_{n-1}(x) by the three-term recurrence.
                let (mut p0, mut p1) = (1.0, x);
                for k in 2..=N {
                    let k = k as f64;
                    (p0, p1) = (p1, ((2.0 * k - 1.0) * x * p1 - (k - 1.0) * p0) / k);
                }
                derivative = N as f64 * (x * p1 - p0) / (x * x - 1.0);
                let step = p1 / derivative;
                x -= step;
                if step.abs() < 1e-15 {
                    break;
                }
            }
            *slot = (x, 2.0 / ((1.0 - x * x) * derivative * derivative));
        }
        rule
    })
}

/// P(no purchase in (T, T + τ]) = P(dead) + P(alive) · (1 − P(buys | alive)).
pub(super) fn p_no_purchase_within(params: &ModelParams, c: &Rfm, horizon: f64) -> f64 {
    let p = Params::from(params);
    let alive = (-softplus(dropout_log_odds(&p, c))).exp();
    (1.0 - alive * buys_if_alive(&p, c, horizon)).clamp(0.0, 1.0)
}

/// E[Y(τ) | x, t_x, T] (Schmittlein et al. 1987, eq. 22):
///
/// ```text
/// E = P(alive) · (r+x)/(α+T) · (β+T)/(s−1) · [1 − ((β+T)/(β+T+τ))^(s−1)]
/// ```
///
/// with the bracket over (s − 1) taken as (β+T) ln(1 + τ/(β+T)) at s = 1.
pub(super) fn expected_purchases(params: &ModelParams, c: &Rfm, horizon: f64) -> f64 {
    let p = Params::from(params);
    let alive = (-softplus(dropout_log_odds(&p, c))).exp();
    let w = (horizon / (p.beta + c.t)).ln_1p();
    let k = p.s - 1.0;
    let lifetime = if k.abs() < 1e-9 {
        (p.beta + c.t) * w
    } else {
        (p.beta + c.t) * -(-k * w).exp_m1() / k
    };
    alive * (p.r + c.x) / (p.alpha + c.t) * lifetime
}

/// The age T (weeks since the first purchase, a whole number of days) from
/// which P(alive) is at most `p` if nothing more is bought. P(alive) falls
/// as T grows but has no closed-form inverse here, so: doubling, then
/// bisection over whole days (P(alive) is only ever evaluated at day
/// boundaries: `risk::member_rfm`). `None` beyond ~27,000 years.
pub(super) fn age_when_p_alive_falls_to(params: &ModelParams, c: &Rfm, p: f64) -> Option<f64> {
    let pp = Params::from(params);
    let tx = t_x(c);
    let ln_f_tx = ln_f(&pp, c.x, tx);
    let needed = ((1.0 - p) / p).ln();
    let start = (c.t * 7.0).round() as i64;
    let falls = |day: i64| {
        let rfm = Rfm::new(c.x, tx, (day as f64 / 7.0).max(tx));
        dropout_log_odds_with(&pp, &rfm, ln_f_tx) >= needed
    };
    if falls(start) {
        return Some(start as f64 / 7.0);
    }
    let (mut lo, mut step) = (start, 1i64);
    let mut hi = loop {
        let d = start + step;
        if falls(d) {
            break d;
        }
        lo = d;
        if step > 10_000_000 {
            return None;
        }
        step *= 2;
    };
    while hi - lo > 1 {
        let mid = lo + (hi - lo) / 2;
        if falls(mid) {
            hi = mid;
        } else {
            lo = mid;
        }
    }
    Some(hi as f64 / 7.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The published Pareto/NBD estimates for CDNOW (Fader, Hardie & Lee
    /// 2005): r 0.55, α 10.58, s 0.61, β 11.67.
    const CDNOW: ModelParams = ModelParams {
        r: 0.55,
        alpha: 10.58,
        a: 0.61,
        b: 11.67,
    };

    /// Simpson's rule on `n` intervals.
    fn simpson(f: impl Fn(f64) -> f64, a: f64, b: f64, n: usize) -> f64 {
        let h = (b - a) / n as f64;
        let mut s = f(a) + f(b);
        for i in 1..n {
            s += if i % 2 == 1 { 4.0 } else { 2.0 } * f(a + i as f64 * h);
        }
        s * h / 3.0
    }

    /// The same P(alive) from its definition, without ₂F₁:
    /// s/(r+s+x)·A₀ = s ∫_{t_x}^T (α+τ)^−(r+x) (β+τ)^−(s+1) dτ, so
    /// P(alive) = 1 / (1 + s ∫ ((α+T)/(α+τ))^(r+x) ((β+T)/(β+τ))^s / (β+τ) dτ).
    fn p_alive_by_quadrature(p: &ModelParams, c: &Rfm) -> f64 {
        let (r, alpha, s, beta) = (p.r, p.alpha, p.a, p.b);
        let integral = simpson(
            |tau| {
                ((r + c.x) * ((alpha + c.t) / (alpha + tau)).ln()
                    + s * ((beta + c.t) / (beta + tau)).ln())
                .exp()
                    / (beta + tau)
            },
            c.t_x,
            c.t,
            200_000,
        );
        1.0 / (1.0 + s * integral)
    }

    #[test]
    fn p_alive_agrees_with_the_integral_it_is_defined_by() {
        let swapped = ModelParams {
            alpha: 11.67,
            b: 10.58,
            ..CDNOW
        };
        for params in [CDNOW, swapped] {
            for c in [
                Rfm::new(0.0, 0.0, 38.0),
                Rfm::new(1.0, 2.0, 30.0),
                Rfm::new(4.0, 20.0, 39.0),
                Rfm::new(12.0, 30.0, 60.0),
                Rfm::new(40.0, 50.0, 52.0),
            ] {
                let (closed, numeric) = (p_alive(&params, &c), p_alive_by_quadrature(&params, &c));
                assert!(
                    (closed - numeric).abs() < 1e-7,
                    "{c:?} α={} β={}: {closed} vs {numeric}",
                    params.alpha,
                    params.b
                );
            }
        }
    }

    #[test]
    fn p_alive_is_summed_where_the_series_cannot_converge() {
        // β ≫ α puts the ₂F₁ argument within 1e-8 of 1.
        let long_lived = ModelParams { b: 1e9, ..CDNOW };
        for c in [Rfm::new(0.0, 0.0, 38.0), Rfm::new(4.0, 20.0, 39.0)] {
            let p = Params::from(&long_lived);
            let (series, summed) = (
                dropout_log_odds(&p, &c),
                dropout_log_odds_by_quadrature(&p, &c),
            );
            assert!(
                (series - summed).abs() < 1e-6,
                "{c:?}: {series} vs {summed}"
            );
            let near = ModelParams { b: 1e3, ..CDNOW };
            let p = Params::from(&near);
            let (series, summed) = (
                dropout_log_odds(&p, &c),
                dropout_log_odds_by_quadrature(&p, &c),
            );
            assert!(
                (series - summed).abs() < 1e-6,
                "{c:?}: {series} vs {summed}"
            );
        }
    }

    #[test]
    fn heavy_buyers_stay_finite() {
        // x in the hundreds overflows the textbook form ((α+T)^(r+x)).
        for c in [
            Rfm::new(500.0, 300.0, 310.0),
            Rfm::new(2000.0, 400.0, 900.0),
        ] {
            let alive = p_alive(&CDNOW, &c);
            assert!((0.0..=1.0).contains(&alive), "{c:?}: {alive}");
            assert!(customer_log_likelihood(&CDNOW, &c).is_finite());
            assert!(p_no_purchase_within(&CDNOW, &c, 13.0).is_finite());
        }
        let just_bought = Rfm::new(30.0, 52.0, 52.0);
        assert_eq!(p_alive(&CDNOW, &just_bought), 1.0);
    }

    #[test]
    fn a_purchase_within_the_horizon_is_the_integral_of_the_first_purchase_before_drop_out() {
        let p = Params::from(&CDNOW);
        for c in [
            Rfm::new(0.0, 0.0, 30.0),
            Rfm::new(3.0, 10.0, 20.0),
            Rfm::new(25.0, 40.0, 41.0),
        ] {
            for horizon in [1.0, 13.0, 52.0] {
                let rx = p.r + c.x;
                let direct = simpson(
                    |u| {
                        rx / (p.alpha + c.t + u)
                            * (-rx * (u / (p.alpha + c.t)).ln_1p()).exp()
                            * (-p.s * (u / (p.beta + c.t)).ln_1p()).exp()
                    },
                    0.0,
                    horizon,
                    400_000,
                );
                let fast = buys_if_alive(&p, &c, horizon);
                assert!(
                    (fast - direct).abs() < 1e-9,
                    "{c:?} τ={horizon}: {fast} vs {direct}"
                );
            }
        }
    }

    #[test]
    fn expected_purchases_are_the_rate_times_the_expected_remaining_lifetime() {
        // Without drop-out risk (β huge: lifetimes far longer than τ), E
        // tends to P(alive) · τ · (r+x)/(α+T), the alive member's mean rate.
        let c = Rfm::new(2.0, 10.0, 20.0);
        let p = ModelParams { b: 1e9, ..CDNOW };
        let e = expected_purchases(&p, &c, 13.0);
        let rate = (p.r + c.x) / (p.alpha + c.t);
        let alive = p_alive(&p, &c);
        assert!(alive > 0.99, "{alive}");
        assert!((e / (alive * 13.0 * rate) - 1.0).abs() < 1e-6, "{e}");
        let at_s_one = ModelParams { a: 1.0, ..CDNOW };
        let near = ModelParams {
            a: 1.0 + 1e-6,
            ..CDNOW
        };
        let (e1, e2) = (
            expected_purchases(&at_s_one, &c, 13.0),
            expected_purchases(&near, &c, 13.0),
        );
        assert!((e1 - e2).abs() < 1e-5, "{e1} vs {e2}");
    }

    #[test]
    fn p_alive_falls_to_the_threshold_on_the_day_found() {
        for c in [Rfm::new(0.0, 0.0, 0.0), Rfm::new(5.0, 20.0, 20.0)] {
            let weeks = age_when_p_alive_falls_to(&CDNOW, &c, 0.3).unwrap();
            let day = (weeks * 7.0).round();
            let at = |d: f64| p_alive(&CDNOW, &Rfm::new(c.x, c.t_x, d / 7.0));
            assert!(at(day) <= 0.3, "{c:?}: {}", at(day));
            assert!(at(day - 1.0) > 0.3, "{c:?}: {}", at(day - 1.0));
        }
    }
}
