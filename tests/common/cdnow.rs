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
