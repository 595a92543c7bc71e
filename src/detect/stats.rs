//! Small exact tail probabilities used as minimum-evidence rules: a decline
//! only counts when ordinary randomness around the member's own rate is an
//! unlikely explanation.

/// P(X <= k) for X ~ Poisson(lambda).
pub fn poisson_cdf(k: u32, lambda: f64) -> f64 {
    if lambda <= 0.0 {
        return 1.0;
    }
    let mut term = (-lambda).exp();
    let mut sum = term;
    for i in 1..=k {
        term *= lambda / i as f64;
        sum += term;
    }
    sum.min(1.0)
}

/// P(X <= k) for X ~ Binomial(n, p), summed in log space so large `n` with
/// small `p` stays accurate.
pub fn binomial_cdf(k: u32, n: u32, p: f64) -> f64 {
    if k >= n || p <= 0.0 {
        return 1.0;
    }
    if p >= 1.0 {
        return 0.0;
    }
    let (lp, lq) = (p.ln(), (1.0 - p).ln());
    let mut log_choose = 0.0f64; // ln C(n, 0)
    let mut sum = 0.0;
    for i in 0..=k {
        if i > 0 {
            log_choose += ((n - i + 1) as f64).ln() - (i as f64).ln();
        }
        sum += (log_choose + i as f64 * lp + (n - i) as f64 * lq).exp();
    }
    sum.min(1.0)
}

/// Median of a small slice (copied into a fixed buffer, no allocation).
pub fn median(xs: &[f64]) -> f64 {
    let mut buf = [0.0f64; 16];
    let n = xs.len().min(16);
    if n == 0 {
        return f64::NAN;
    }
    buf[..n].copy_from_slice(&xs[..n]);
    let s = &mut buf[..n];
    s.sort_by(|a, b| a.total_cmp(b));
    if n % 2 == 1 {
        s[n / 2]
    } else {
        (s[n / 2 - 1] + s[n / 2]) / 2.0
    }
}

/// Mean and sample variance.
pub fn mean_var(xs: impl Iterator<Item = f64>) -> (f64, f64, usize) {
    let (mut n, mut mean, mut m2) = (0usize, 0.0, 0.0);
    for x in xs {
        n += 1;
        let d = x - mean;
        mean += d / n as f64;
        m2 += d * (x - mean);
    }
    let var = if n > 1 { m2 / (n - 1) as f64 } else { 0.0 };
    (mean, var, n)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn poisson_cdf_matches_known_values() {
        assert!((poisson_cdf(0, 2.0) - 0.135_335).abs() < 1e-5);
        assert!((poisson_cdf(4, 8.0) - 0.099_632).abs() < 1e-5);
        assert!((poisson_cdf(100, 3.0) - 1.0).abs() < 1e-12);
    }

    #[test]
    fn binomial_cdf_matches_known_values() {
        assert!((binomial_cdf(0, 10, 0.4) - 0.006_047).abs() < 1e-5);
        assert!((binomial_cdf(3, 10, 0.4) - 0.382_281).abs() < 1e-5);
        assert!((binomial_cdf(2, 2000, 0.01) - 4.196_449e-7).abs() < 1e-12);
        assert_eq!(binomial_cdf(5, 5, 0.3), 1.0);
    }

    #[test]
    fn median_of_even_and_odd_lengths() {
        assert_eq!(median(&[3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(&[4.0, 1.0, 2.0, 3.0]), 2.5);
    }
}
