//! `churnwatch fit`: maximum-likelihood BG/NBD (or MBG/NBD) population
//! parameters from the purchase events of an NDJSON file.
//!
//! Summaries follow Fader, Hardie & Lee (2005): time unit weeks, purchases
//! on the same (UTC) day count as one transaction, `x` = transactions after
//! the first, `t_x` = weeks from the first to the last transaction, `T` =
//! weeks from the first transaction to the end of calibration. Members whose
//! first purchase falls after the calibration end are left out.

use std::collections::HashMap;
use std::io::BufRead;

use super::bgnbd::{log_likelihood_weighted, ModelKind, ModelParams, Rfm};
use crate::event::{EventKind, Validator, DAY_MS};

#[derive(Debug, thiserror::Error)]
pub enum FitError {
    #[error("reading the input failed at line {line}: {source}")]
    Read { line: u64, source: std::io::Error },
    #[error("no purchase events before the calibration end")]
    NoPurchases,
    #[error("the optimiser did not reach a finite likelihood")]
    NotFinite,
}

/// What the input held.
#[derive(Debug, Default, Clone)]
pub struct Summary {
    pub lines: u64,
    pub purchases: u64,
    pub ignored_lines: u64,
    pub members: usize,
    pub repeat_buyers: usize,
    pub calibration_end_day: i64,
}

/// Reads purchase events and summarises each member as (x, t_x, T). Lines
/// that are not valid events, and events other than purchases, are ignored
/// (counted in [`Summary::ignored_lines`]).
pub fn summarise(
    input: impl BufRead,
    calibration_end_ms: Option<i64>,
) -> Result<(Vec<Rfm>, Summary), FitError> {
    // Historic files: no future-skew check against today's wall clock.
    let validator = Validator {
        future_skew_ms: i64::MAX / 4,
        ..Validator::default()
    };
    let mut summary = Summary::default();
    let end_day = calibration_end_ms.map(|t| t.div_euclid(DAY_MS));
    let mut per_member: HashMap<String, Vec<i64>> = HashMap::new();
    for (i, line) in input.lines().enumerate() {
        let line = line.map_err(|source| FitError::Read {
            line: i as u64 + 1,
            source,
        })?;
        summary.lines += 1;
        if line.trim().is_empty() {
            continue;
        }
        match validator.parse(line.as_bytes(), 0) {
            Ok(e) if e.kind == EventKind::Purchase => {
                let day = e.ts_ms.div_euclid(DAY_MS);
                if end_day.is_some_and(|end| day > end) {
                    continue;
                }
                summary.purchases += 1;
                per_member
                    .entry(e.member_id.to_string())
                    .or_default()
                    .push(day);
            }
            _ => summary.ignored_lines += 1,
        }
    }
    if per_member.is_empty() {
        return Err(FitError::NoPurchases);
    }
    let end = end_day.unwrap_or_else(|| {
        per_member
            .values()
            .flat_map(|d| d.iter().copied())
            .max()
            .unwrap_or(0)
    });
    summary.calibration_end_day = end;
    let mut out = Vec::with_capacity(per_member.len());
    let mut ids: Vec<_> = per_member.into_iter().collect();
    ids.sort_by(|a, b| a.0.cmp(&b.0)); // deterministic order, deterministic sums
    for (_, mut d) in ids {
        d.sort_unstable();
        d.dedup();
        let first = d[0];
        let last = *d.last().expect("non-empty");
        let rfm = Rfm::new(
            (d.len() - 1) as f64,
            (last - first) as f64 / 7.0,
            (end - first) as f64 / 7.0,
        );
        if rfm.x > 0.0 {
            summary.repeat_buyers += 1;
        }
        out.push(rfm);
    }
    summary.members = out.len();
    Ok((out, summary))
}

/// The fitted parameters and how the fit went.
#[derive(Debug, Clone)]
pub struct FitReport {
    pub kind: ModelKind,
    pub params: ModelParams,
    pub log_likelihood: f64,
    pub iterations: usize,
    /// Asymptotic standard errors from the numerical Hessian, when it is
    /// positive definite.
    pub std_errors: Option<[f64; 4]>,
}

/// Maximises the likelihood over log-parameters with Nelder–Mead, restarted
/// from its own optimum until it stops improving.
pub fn fit(kind: ModelKind, customers: &[Rfm]) -> Result<FitReport, FitError> {
    // Identical summaries share one likelihood evaluation.
    let mut cells: HashMap<(u64, u64, u64), f64> = HashMap::new();
    for c in customers {
        *cells
            .entry((c.x.to_bits(), c.t_x.to_bits(), c.t.to_bits()))
            .or_default() += 1.0;
    }
    let (rfm, weights): (Vec<Rfm>, Vec<f64>) = cells
        .into_iter()
        .map(|((x, tx, t), w)| {
            (
                Rfm::new(f64::from_bits(x), f64::from_bits(tx), f64::from_bits(t)),
                w,
            )
        })
        .unzip();
    let params = |v: &[f64; 4]| ModelParams {
        r: v[0].exp(),
        alpha: v[1].exp(),
        a: v[2].exp(),
        b: v[3].exp(),
    };
    let objective = |v: &[f64; 4]| {
        let ll = log_likelihood_weighted(kind, &params(v), &rfm, &weights);
        if ll.is_finite() {
            -ll
        } else {
            f64::INFINITY
        }
    };
    let mut best = [0.0f64; 4];
    let mut best_f = objective(&best);
    let mut iterations = 0;
    for _ in 0..6 {
        let (x, f, it) = nelder_mead(&objective, best, 0.5, 1e-12, 5_000);
        iterations += it;
        let improved = best_f - f;
        best = x;
        best_f = f;
        if improved.abs() < 1e-9 {
            break;
        }
    }
    if !best_f.is_finite() {
        return Err(FitError::NotFinite);
    }
    let p = params(&best);
    let std_errors = standard_errors(kind, &p, &rfm, &weights);
    Ok(FitReport {
        kind,
        params: p,
        log_likelihood: -best_f,
        iterations,
        std_errors,
    })
}

/// Nelder–Mead simplex minimisation (standard coefficients). Returns the
/// best point, its value and the iterations used.
fn nelder_mead(
    f: &impl Fn(&[f64; 4]) -> f64,
    start: [f64; 4],
    step: f64,
    tol: f64,
    max_iter: usize,
) -> ([f64; 4], f64, usize) {
    let mut simplex: Vec<([f64; 4], f64)> = (0..5)
        .map(|i| {
            let mut p = start;
            if i > 0 {
                p[i - 1] += step;
            }
            (p, f(&p))
        })
        .collect();
    let lerp = |a: &[f64; 4], b: &[f64; 4], t: f64| -> [f64; 4] {
        std::array::from_fn(|k| a[k] + t * (b[k] - a[k]))
    };
    for it in 0..max_iter {
        simplex.sort_by(|a, b| a.1.total_cmp(&b.1));
        let (lo, hi) = (simplex[0].1, simplex[4].1);
        if (hi - lo).abs() <= tol * (1.0 + lo.abs()) {
            return (simplex[0].0, lo, it);
        }
        let centroid: [f64; 4] =
            std::array::from_fn(|k| simplex[..4].iter().map(|(p, _)| p[k]).sum::<f64>() / 4.0);
        let worst = simplex[4].0;
        let reflected = lerp(&centroid, &worst, -1.0);
        let fr = f(&reflected);
        if fr < simplex[0].1 {
            let expanded = lerp(&centroid, &worst, -2.0);
            let fe = f(&expanded);
            simplex[4] = if fe < fr {
                (expanded, fe)
            } else {
                (reflected, fr)
            };
        } else if fr < simplex[3].1 {
            simplex[4] = (reflected, fr);
        } else {
            let contracted = if fr < simplex[4].1 {
                lerp(&centroid, &reflected, 0.5)
            } else {
                lerp(&centroid, &worst, 0.5)
            };
            let fc = f(&contracted);
            if fc < simplex[4].1.min(fr) {
                simplex[4] = (contracted, fc);
            } else {
                let best = simplex[0].0;
                for s in simplex.iter_mut().skip(1) {
                    s.0 = lerp(&best, &s.0, 0.5);
                    s.1 = f(&s.0);
                }
            }
        }
    }
    simplex.sort_by(|a, b| a.1.total_cmp(&b.1));
    (simplex[0].0, simplex[0].1, max_iter)
}

/// Square roots of the diagonal of the inverse Hessian of −ln L in the
/// natural parameters (central differences).
fn standard_errors(
    kind: ModelKind,
    p: &ModelParams,
    rfm: &[Rfm],
    weights: &[f64],
) -> Option<[f64; 4]> {
    let base = [p.r, p.alpha, p.a, p.b];
    let nll = |v: &[f64; 4]| {
        -log_likelihood_weighted(
            kind,
            &ModelParams {
                r: v[0],
                alpha: v[1],
                a: v[2],
                b: v[3],
            },
            rfm,
            weights,
        )
    };
    let h: [f64; 4] = std::array::from_fn(|i| base[i] * 1e-4);
    let mut hess = [[0.0f64; 4]; 4];
    for i in 0..4 {
        for j in 0..4 {
            let at = |di: f64, dj: f64| {
                let mut v = base;
                v[i] += di * h[i];
                v[j] += dj * h[j];
                nll(&v)
            };
            hess[i][j] = (at(1.0, 1.0) - at(1.0, -1.0) - at(-1.0, 1.0) + at(-1.0, -1.0))
                / (4.0 * h[i] * h[j]);
        }
    }
    let inv = invert(hess)?;
    let se: [f64; 4] = std::array::from_fn(|i| inv[i][i].sqrt());
    se.iter().all(|v| v.is_finite() && *v > 0.0).then_some(se)
}

/// Gauss–Jordan inverse with partial pivoting.
fn invert(mut m: [[f64; 4]; 4]) -> Option<[[f64; 4]; 4]> {
    let mut inv = [[0.0; 4]; 4];
    for (i, row) in inv.iter_mut().enumerate() {
        row[i] = 1.0;
    }
    for col in 0..4 {
        let pivot = (col..4).max_by(|a, b| m[*a][col].abs().total_cmp(&m[*b][col].abs()))?;
        if m[pivot][col].abs() < 1e-300 {
            return None;
        }
        m.swap(col, pivot);
        inv.swap(col, pivot);
        let d = m[col][col];
        for k in 0..4 {
            m[col][k] /= d;
            inv[col][k] /= d;
        }
        for r in 0..4 {
            if r != col {
                let factor = m[r][col];
                for k in 0..4 {
                    m[r][k] -= factor * m[col][k];
                    inv[r][k] -= factor * inv[col][k];
                }
            }
        }
    }
    Some(inv)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn summarises_same_day_purchases_as_one_transaction() {
        let lines = [
            r#"{"event_id":"1","member_id":"m","type":"purchase","ts":"1997-01-01T10:00:00Z","amount":1}"#,
            r#"{"event_id":"2","member_id":"m","type":"purchase","ts":"1997-01-01T18:00:00Z","amount":1}"#,
            r#"{"event_id":"3","member_id":"m","type":"purchase","ts":"1997-01-15T10:00:00Z","amount":1}"#,
            r#"{"event_id":"4","member_id":"m","type":"visit","ts":"1997-01-20T10:00:00Z"}"#,
            r#"not json"#,
            r#"{"event_id":"5","member_id":"late","type":"purchase","ts":"1997-03-01T10:00:00Z","amount":1}"#,
        ]
        .join("\n");
        let end = crate::event::parse_rfc3339_ms("1997-01-29T00:00:00Z");
        let (rfm, s) = summarise(lines.as_bytes(), end).unwrap();
        assert_eq!(rfm, vec![Rfm::new(1.0, 2.0, 4.0)]);
        assert_eq!((s.members, s.repeat_buyers, s.ignored_lines), (1, 1, 2));
    }

    #[test]
    fn recovers_the_parameters_it_is_given_from_their_own_expected_data() {
        // Maximising over data equal to a known fit's cells must return a
        // higher likelihood than a clearly wrong parameter set.
        let data: Vec<Rfm> = (0..300)
            .map(|i| {
                let x = (i % 5) as f64;
                let t = 30.0 + (i % 9) as f64;
                Rfm::new(
                    x,
                    if x > 0.0 {
                        t * (i % 7) as f64 / 7.0
                    } else {
                        0.0
                    },
                    t,
                )
            })
            .collect();
        let fitted = fit(ModelKind::BgNbd, &data).unwrap();
        let wrong = ModelParams {
            r: 2.0,
            alpha: 1.0,
            a: 3.0,
            b: 0.5,
        };
        let weights = vec![1.0; data.len()];
        let ll_wrong = log_likelihood_weighted(ModelKind::BgNbd, &wrong, &data, &weights);
        assert!(fitted.log_likelihood > ll_wrong);
        assert!(fitted.params.is_valid());
    }
}
