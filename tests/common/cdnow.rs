//! The CDNOW cohort of Fader, Hardie & Lee (2005) as SPEC §1 events, and
//! the AUC the tests rank customers by.

use std::path::Path;

/// CDNOW_sample.txt (customer, id, YYYYMMDD, quantity, amount) as SPEC §1
/// purchase events, plus a visit line `fit` must ignore.
pub fn cdnow_ndjson(dir: &Path) -> std::path::PathBuf {
    let raw = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/cdnow/CDNOW_sample.txt"),
    )
    .unwrap();
    let mut out = String::new();
    for (i, line) in raw.lines().enumerate() {
        let f: Vec<&str> = line.split_whitespace().collect();
        if f.len() < 5 {
            continue;
        }
        let d = f[2];
        out.push_str(&format!(
            "{{\"event_id\":\"c{i}\",\"member_id\":\"{}\",\"type\":\"purchase\",\"ts\":\"{}-{}-{}T00:00:00Z\",\"amount\":{}}}\n",
            f[0],
            &d[..4],
            &d[4..6],
            &d[6..],
            f[4]
        ));
    }
    out.push_str(
        r#"{"event_id":"v","member_id":"00004","type":"visit","ts":"1997-02-01T00:00:00Z"}"#,
    );
    out.push('\n');
    let path = dir.join("cdnow.ndjson");
    std::fs::write(&path, out).unwrap();
    path
}

/// Mann–Whitney AUC: the probability that a randomly chosen positive scores
/// higher than a randomly chosen negative (ties count half).
pub fn auc(scores: &[(f64, bool)]) -> f64 {
    let mut s: Vec<_> = scores.to_vec();
    s.sort_by(|a, b| a.0.total_cmp(&b.0));
    let (mut rank_sum, mut i) = (0.0, 0);
    while i < s.len() {
        let mut j = i;
        while j < s.len() && s[j].0 == s[i].0 {
            j += 1;
        }
        let mid = (i + j + 1) as f64 / 2.0; // average 1-based rank of the tie group
        rank_sum += s[i..j].iter().filter(|x| x.1).count() as f64 * mid;
        i = j;
    }
    let pos = s.iter().filter(|x| x.1).count() as f64;
    let neg = s.len() as f64 - pos;
    (rank_sum - pos * (pos + 1.0) / 2.0) / (pos * neg)
}

/// Day number (days since 1970-01-01) of a CDNOW `YYYYMMDD` date.
pub fn cdnow_day(d: &str) -> i64 {
    let ts = format!("{}-{}-{}T00:00:00Z", &d[..4], &d[4..6], &d[6..]);
    churnwatch::event::parse_rfc3339_ms(&ts).unwrap() / 86_400_000
}

/// Every CDNOW purchase as (customer, day number, amount), in file order
/// (the file is ordered by customer, not by time).
pub fn cdnow_purchases() -> Vec<(String, i64, f64)> {
    std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/cdnow/CDNOW_sample.txt"),
    )
    .unwrap()
    .lines()
    .filter_map(|line| {
        let f: Vec<&str> = line.split_whitespace().collect();
        (f.len() >= 5).then(|| (f[0].to_string(), cdnow_day(f[2]), f[4].parse().unwrap()))
    })
    .collect()
}

/// The purchases on days up to `last_day` as SPEC §1 events in time order,
/// as a stream would deliver them (a replay of the customer-ordered file
/// would push the clock to 1998 with the first customer and make everyone
/// after them late).
pub fn cdnow_time_sorted(dir: &Path, name: &str, last_day: i64) -> std::path::PathBuf {
    let mut p: Vec<(usize, (String, i64, f64))> = cdnow_purchases()
        .into_iter()
        .enumerate()
        .filter(|(_, (_, d, _))| *d <= last_day)
        .collect();
    p.sort_by_key(|(i, (_, d, _))| (*d, *i));
    let mut out = String::new();
    for (i, (id, d, amount)) in p {
        out.push_str(&format!(
            "{{\"event_id\":\"c{i}\",\"member_id\":\"{id}\",\"type\":\"purchase\",\"ts\":{},\"amount\":{amount}}}\n",
            d * 86_400_000
        ));
    }
    let path = dir.join(name);
    std::fs::write(&path, out).unwrap();
    path
}

/// Calibration table: `rows` (predicted probability 0–1, outcome) sorted by
/// prediction and cut into ten equal groups; per group the mean prediction
/// and the observed rate, in percent. Returns the groups and the mean
/// |predicted − observed| over them, in points.
pub fn deciles(rows: &[(f64, bool)]) -> (Vec<(usize, f64, f64)>, f64) {
    let mut r = rows.to_vec();
    r.sort_by(|a, b| a.0.total_cmp(&b.0));
    let n = r.len();
    let groups: Vec<(usize, f64, f64)> = (0..10)
        .map(|k| {
            let g = &r[k * n / 10..(k + 1) * n / 10];
            let len = g.len() as f64;
            let pred = 100.0 * g.iter().map(|x| x.0).sum::<f64>() / len;
            let obs = 100.0 * g.iter().filter(|x| x.1).count() as f64 / len;
            (g.len(), pred, obs)
        })
        .collect();
    let err = groups.iter().map(|g| (g.1 - g.2).abs()).sum::<f64>() / 10.0;
    (groups, err)
}

/// Logistic regression of the outcome on the log-odds of the prediction
/// (Platt scaling): `(intercept, slope)` by Newton's method.
pub fn platt(rows: &[(f64, bool)]) -> (f64, f64) {
    let logit = |p: f64| {
        let p = p.clamp(1e-6, 1.0 - 1e-6);
        (p / (1.0 - p)).ln()
    };
    let (mut w0, mut w1) = (0.0, 1.0);
    for _ in 0..50 {
        let (mut g0, mut g1, mut h00, mut h01, mut h11) = (0.0, 0.0, 1e-9, 0.0, 1e-9);
        for &(p, y) in rows {
            let x = logit(p);
            let q = 1.0 / (1.0 + (-(w0 + w1 * x)).exp());
            let e = f64::from(u8::from(y)) - q;
            let v = q * (1.0 - q);
            (g0, g1) = (g0 + e, g1 + e * x);
            (h00, h01, h11) = (h00 + v, h01 + v * x, h11 + v * x * x);
        }
        let det = h00 * h11 - h01 * h01;
        w0 += (h11 * g0 - h01 * g1) / det;
        w1 += (h00 * g1 - h01 * g0) / det;
    }
    (w0, w1)
}
