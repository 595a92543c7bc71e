//! `churnwatch fit` on the CDNOW cohort of Fader, Hardie & Lee (2005): the
//! fit must reproduce the published BG/NBD estimates, and its output must be
//! a config file the engine accepts.

mod common;

use std::path::Path;

use common::cdnow::{auc, cdnow_ndjson};
use common::*;

fn value(stdout: &str, name: &str) -> f64 {
    stdout
        .lines()
        .find_map(|l| l.strip_prefix(&format!("{name} = ")))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no `{name} = ` in:\n{stdout}"))
}

#[test]
fn fit_reproduces_the_published_cdnow_bgnbd_estimates() {
    let dir = tempfile::tempdir().unwrap();
    let input = cdnow_ndjson(dir.path());
    let params = dir.path().join("risk.toml");
    let out = churnwatch(&[
        "fit",
        "--input",
        input.to_str().unwrap(),
        "--calibration-end",
        "1997-09-30T00:00:00Z",
        "--output",
        params.to_str().unwrap(),
    ]);
    let stdout = String::from_utf8(out.stdout).unwrap();
    println!("{stdout}");
    assert!(stdout.contains("members = 2357"), "{stdout}");
    // Fader, Hardie & Lee (2005): r = 0.243, α = 4.414, a = 0.793, b = 2.426,
    // ln L = −9582.4.
    for (name, published) in [("r", 0.243), ("alpha", 4.414), ("a", 0.793), ("b", 2.426)] {
        let got = value(&stdout, name);
        assert!(
            (got / published - 1.0).abs() < 0.01,
            "{name} = {got}, published {published}"
        );
    }
    assert!((value(&stdout, "log-likelihood") + 9582.4).abs() < 0.1);

    // The written section is a valid config: replay accepts it and puts the
    // model's numbers into the evidence.
    let alerts = dir.path().join("alerts.ndjson");
    churnwatch(&[
        "replay",
        "--input",
        input.to_str().unwrap(),
        "--output",
        alerts.to_str().unwrap(),
        "--until",
        "1998-06-30T00:00:00Z",
        "--config",
        params.to_str().unwrap(),
        "-q",
    ]);
    let alerts = read_json_lines(&alerts);
    let with_model: Vec<_> = alerts
        .iter()
        .filter(|a| a["evidence"]["p_alive"].is_number())
        .collect();
    assert!(!with_model.is_empty());
    for a in with_model {
        let p = a["evidence"]["p_alive"].as_f64().unwrap();
        assert!((0.0..=1.0).contains(&p));
        assert!(a["evidence"]["expected_purchases_90d"].as_f64().unwrap() >= 0.0);
    }
}

#[test]
fn fit_runs_the_modified_model_too() {
    let dir = tempfile::tempdir().unwrap();
    let input = cdnow_ndjson(dir.path());
    let out = churnwatch(&[
        "fit",
        "--input",
        input.to_str().unwrap(),
        "--calibration-end",
        "1997-09-30T00:00:00Z",
        "--model",
        "mbgnbd",
    ]);
    let stdout = String::from_utf8(out.stdout).unwrap();
    // Same data, one more way to drop out: at least as good a fit.
    assert!(value(&stdout, "log-likelihood") >= -9582.5, "{stdout}");
    assert!(value(&stdout, "a") > 0.0 && value(&stdout, "b") > 0.0);
}

/// Which score ranks the customers who did not buy again in the 39-week
/// holdout (1997-10-01 … 1998-06-30) best? Prints the measurement behind the
/// default model choice in docs/risk-model.md.
#[test]
fn measures_how_well_each_score_ranks_lapsed_cdnow_customers() {
    use churnwatch::risk::bgnbd::{p_alive, ModelKind, ModelParams, Rfm};
    use std::collections::BTreeMap;
    let raw = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/cdnow/CDNOW_sample.txt"),
    )
    .unwrap();
    let day = |d: &str| {
        let (y, m, dd) = (&d[..4], &d[4..6], &d[6..]);
        churnwatch::event::parse_rfc3339_ms(&format!("{y}-{m}-{dd}T00:00:00Z")).unwrap()
            / 86_400_000
    };
    let cal_end = day("19970930");
    let mut cal: BTreeMap<&str, Vec<i64>> = BTreeMap::new();
    let mut came_back: BTreeMap<&str, bool> = BTreeMap::new();
    for line in raw.lines() {
        let f: Vec<&str> = line.split_whitespace().collect();
        if f.len() < 5 {
            continue;
        }
        let d = day(f[2]);
        if d <= cal_end {
            cal.entry(f[0]).or_default().push(d);
        } else {
            came_back.insert(f[0], true);
        }
    }
    let bg = ModelParams::CDNOW_BGNBD;
    let mbg = ModelParams::CDNOW_MBGNBD;
    let (mut s_bg, mut s_mbg, mut s_rec) = (Vec::new(), Vec::new(), Vec::new());
    for (id, mut days) in cal {
        days.sort_unstable();
        days.dedup();
        let (first, last) = (days[0], *days.last().unwrap());
        let x = (days.len() - 1) as f64;
        let rfm = Rfm::new(
            x,
            (last - first) as f64 / 7.0,
            (cal_end - first) as f64 / 7.0,
        );
        let lapsed = !came_back.contains_key(id);
        s_bg.push((1.0 - p_alive(ModelKind::BgNbd, &bg, &rfm), lapsed));
        s_mbg.push((1.0 - p_alive(ModelKind::MbgNbd, &mbg, &rfm), lapsed));
        s_rec.push(((cal_end - last) as f64, lapsed));
    }
    let (a_bg, a_mbg, a_rec) = (auc(&s_bg), auc(&s_mbg), auc(&s_rec));
    println!(
        "AUC for lapsed in the holdout: 1-P(alive) BG/NBD {a_bg:.3}, MBG/NBD {a_mbg:.3}, recency {a_rec:.3}"
    );
    // The blind spot the issue warns about: one-time buyers all get
    // P(alive) = 1 under BG/NBD.
    assert!(a_mbg > a_bg, "MBG/NBD {a_mbg} should beat BG/NBD {a_bg}");
    assert!(a_rec > 0.5);
}
