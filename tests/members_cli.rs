//! `churnwatch members export` and `churnwatch report` end to end: a
//! replayed simulated population, CDNOW, a synthetic campaign with a known
//! uplift, and the HTML page in headless Chromium.

mod common;

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::process::Command;

use arrow_array::{Array, StringArray};
use common::cdnow::{auc, cdnow_ndjson};
use common::*;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use serde_json::Value;

const DAY_MS: i64 = 86_400_000;

fn ms(v: &Value) -> Option<i64> {
    v.as_str().and_then(churnwatch::event::parse_rfc3339_ms)
}

/// A simulated population replayed into a state directory: (dir, state, alerts).
fn replayed_population() -> (tempfile::TempDir, PathBuf, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let events = dir.path().join("events.ndjson");
    let alerts = dir.path().join("alerts.ndjson");
    let state = dir.path().join("state");
    churnwatch(&[
        "simulate",
        "--members",
        "1500",
        "--days",
        "400",
        "--end",
        "2026-06-01T00:00:00Z",
        "--seed",
        "16",
        "--output",
        events.to_str().unwrap(),
    ]);
    churnwatch(&[
        "replay",
        "--input",
        events.to_str().unwrap(),
        "--output",
        alerts.to_str().unwrap(),
        "--state",
        state.to_str().unwrap(),
        "-q",
    ]);
    (dir, state, alerts)
}

fn export(state: &Path, out: &Path, extra: &[&str]) {
    let mut args = vec![
        "members",
        "export",
        "--state",
        state.to_str().unwrap(),
        "--output",
        out.to_str().unwrap(),
        "-q",
    ];
    args.extend_from_slice(extra);
    churnwatch(&args);
}

#[test]
fn export_at_the_end_of_a_replay_agrees_with_each_members_last_alert() {
    let (dir, state, alerts) = replayed_population();
    let out = dir.path().join("members.ndjson");
    export(&state, &out, &[]);
    let rows = read_json_lines(&out);
    assert!(rows.len() > 1000, "{} rows", rows.len());
    let by_id: HashMap<&str, &Value> = rows
        .iter()
        .map(|r| (r["member_id"].as_str().unwrap(), r))
        .collect();
    let mut last: HashMap<String, Value> = HashMap::new();
    for a in read_json_lines(&alerts) {
        let id = a["member_id"].as_str().unwrap().to_string();
        if last
            .get(&id)
            .is_none_or(|l| ms(&l["detected_at"]) <= ms(&a["detected_at"]))
        {
            last.insert(id, a);
        }
    }
    // Silent and churned are left only by an event (a purchase raises a
    // `reactivated` alert) or for churned (a `stage_change` alert): a
    // member whose last alert put them there and who has had no event since
    // is still there, in the same segment once churned.
    let mut checked = 0;
    for (id, a) in &last {
        let row = by_id[id.as_str()];
        let stage = a["stage"].as_str().unwrap();
        let quiet_since = ms(&row["last_event"]["any"]) <= ms(&a["detected_at"]);
        if !quiet_since || !matches!(stage, "silent" | "churned") {
            continue;
        }
        checked += 1;
        assert_eq!(row["stage"], a["stage"], "{row}\nlast alert {a}");
        if stage == "churned" {
            assert_eq!(row["segment"], a["segment"], "{row}\nlast alert {a}");
        }
        assert_eq!(row["holdout"], a["holdout"]);
    }
    println!("{checked} members checked against their last alert");
    assert!(checked >= 50, "only {checked} members to check");
    // Every open episode names the alert that opened it.
    let alert_ids: std::collections::HashSet<&str> = read_json_lines(&alerts)
        .iter()
        .map(|a| a["alert_id"].as_str().unwrap().to_string())
        .collect::<Vec<_>>()
        .leak()
        .iter()
        .map(String::as_str)
        .collect();
    let clock = rows
        .iter()
        .filter_map(|r| ms(&r["evaluated_at"]))
        .max()
        .unwrap();
    for r in &rows {
        assert_eq!(
            ms(&r["evaluated_at"]),
            Some(clock),
            "one partition, one clock"
        );
        for e in r["open_episodes"].as_array().unwrap() {
            // An episode opened by judging at the clock (not by an event or
            // timer yet) has an alert still to come; the others were raised.
            if ms(&e["since"]).unwrap() < clock - 7 * DAY_MS {
                assert!(
                    alert_ids.contains(e["alert_id"].as_str().unwrap()),
                    "episode without its alert: {r}"
                );
            }
        }
    }
}

#[test]
fn export_at_a_later_time_moves_members_to_silent_and_churned_by_the_thresholds() {
    let (dir, state, _) = replayed_population();
    let now = dir.path().join("now.ndjson");
    export(&state, &now, &[]);
    let clock = read_json_lines(&now)
        .iter()
        .filter_map(|r| ms(&r["evaluated_at"]))
        .max()
        .unwrap();
    let at = churnwatch::event::format_rfc3339_ms(clock + 120 * DAY_MS);
    let later = dir.path().join("later.ndjson");
    export(&state, &later, &["--at", &at]);
    let rows = read_json_lines(&later);
    // The same members judged at the stored clock: 120 more days without a
    // purchase can only raise the estimated chance of no purchase.
    let before: std::collections::BTreeMap<String, f64> = read_json_lines(&now)
        .iter()
        .filter_map(|r| {
            Some((
                r["member_id"].as_str()?.to_string(),
                r["risk_score"].as_f64()?,
            ))
        })
        .collect();
    let (mut silent, mut churned) = (0, 0);
    for r in &rows {
        let Some(p) = ms(&r["last_event"]["purchase"]) else {
            continue;
        };
        let days = (clock + 120 * DAY_MS - p) as f64 / DAY_MS as f64;
        let want = if days > 180.0 {
            churned += 1;
            "churned"
        } else if days > 90.0 {
            silent += 1;
            "silent"
        } else {
            continue;
        };
        assert_eq!(
            r["stage"], want,
            "{days:.1} days since the last purchase: {r}"
        );
        let id = r["member_id"].as_str().unwrap();
        assert!(
            r["risk_score"].as_f64().unwrap() >= before[id] - 0.05,
            "risk fell over 120 silent days ({} at the clock): {r}",
            before[id]
        );
    }
    assert!(
        silent > 50 && churned > 50,
        "silent {silent}, churned {churned}"
    );
    // Not before the stored clock: the state no longer holds the past.
    let early = churnwatch::event::format_rfc3339_ms(clock - DAY_MS);
    let out = Command::new(bin())
        .args(["members", "export", "--state", state.to_str().unwrap()])
        .args(["--output", later.to_str().unwrap(), "--at", &early])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("before the stored clock"));
}

#[test]
fn csv_ndjson_and_parquet_exports_hold_the_same_rows_and_filters_apply() {
    let (dir, state, _) = replayed_population();
    let (nd, csv_path, pq) = (
        dir.path().join("m.ndjson"),
        dir.path().join("m.csv"),
        dir.path().join("m.parquet"),
    );
    export(&state, &nd, &["--format", "ndjson"]);
    export(&state, &csv_path, &[]);
    export(&state, &pq, &["--format", "parquet"]);
    let want: BTreeMap<String, (String, String)> = read_json_lines(&nd)
        .iter()
        .map(|r| {
            (
                r["member_id"].as_str().unwrap().into(),
                (
                    r["stage"].as_str().unwrap().into(),
                    r["risk_score"].to_string(),
                ),
            )
        })
        .collect();

    let mut reader = csv::Reader::from_path(&csv_path).unwrap();
    let headers = reader.headers().unwrap().clone();
    let col = |n: &str| headers.iter().position(|h| h == n).unwrap();
    let (id, stage, risk) = (col("member_id"), col("stage"), col("risk_score"));
    let from_csv: BTreeMap<String, (String, String)> = reader
        .records()
        .map(|r| {
            let r = r.unwrap();
            (
                r[id].to_string(),
                (
                    r[stage].to_string(),
                    r[risk].parse::<f64>().unwrap().to_string(),
                ),
            )
        })
        .collect();
    let want_f: BTreeMap<_, _> = want
        .iter()
        .map(|(k, (s, r))| {
            (
                k.clone(),
                (s.clone(), r.parse::<f64>().unwrap().to_string()),
            )
        })
        .collect();
    assert_eq!(from_csv, want_f);

    let file = std::fs::File::open(&pq).unwrap();
    let reader = ParquetRecordBatchReaderBuilder::try_new(file)
        .unwrap()
        .build()
        .unwrap();
    let mut from_parquet = BTreeMap::new();
    for batch in reader {
        let batch = batch.unwrap();
        let ids = batch
            .column_by_name("member_id")
            .unwrap()
            .as_any()
            .downcast_ref::<StringArray>()
            .unwrap()
            .clone();
        let stages = batch
            .column_by_name("stage")
            .unwrap()
            .as_any()
            .downcast_ref::<StringArray>()
            .unwrap()
            .clone();
        let risks = batch
            .column_by_name("risk_score")
            .unwrap()
            .as_any()
            .downcast_ref::<arrow_array::Float64Array>()
            .unwrap()
            .clone();
        for i in 0..batch.num_rows() {
            assert!(!risks.is_null(i));
            from_parquet.insert(
                ids.value(i).to_string(),
                (stages.value(i).to_string(), risks.value(i).to_string()),
            );
        }
    }
    assert_eq!(from_parquet, want_f);

    let filtered = dir.path().join("f.ndjson");
    export(
        &state,
        &filtered,
        &["--min-risk", "60", "--stage", "silent"],
    );
    let rows = read_json_lines(&filtered);
    assert!(!rows.is_empty());
    assert!(rows
        .iter()
        .all(|r| r["stage"] == "silent" && r["risk_score"].as_f64().unwrap() >= 60.0));
    let expected = want
        .values()
        .filter(|(s, r)| s == "silent" && r.parse::<f64>().unwrap() >= 60.0)
        .count();
    assert_eq!(rows.len(), expected);
}

#[test]
fn cdnow_risk_score_ranks_customers_who_never_buy_again_at_least_as_well_as_recency() {
    let dir = tempfile::tempdir().unwrap();
    let all = cdnow_ndjson(dir.path());
    let cal_end = churnwatch::event::parse_rfc3339_ms("1997-09-30T00:00:00Z").unwrap();
    // The calibration period only; the 39 weeks after it are the outcome.
    let (mut calibration, mut came_back) = (String::new(), std::collections::HashSet::new());
    let mut purchase_days: HashMap<String, std::collections::BTreeSet<i64>> = HashMap::new();
    for line in std::fs::read_to_string(&all).unwrap().lines() {
        let e: Value = serde_json::from_str(line).unwrap();
        if ms(&e["ts"]).unwrap() <= cal_end {
            calibration.push_str(line);
            calibration.push('\n');
            if e["type"] == "purchase" {
                purchase_days
                    .entry(e["member_id"].as_str().unwrap().to_string())
                    .or_default()
                    .insert(ms(&e["ts"]).unwrap() / DAY_MS);
            }
        } else if e["type"] == "purchase" {
            came_back.insert(e["member_id"].as_str().unwrap().to_string());
        }
    }
    let input = dir.path().join("calibration.ndjson");
    std::fs::write(&input, calibration).unwrap();
    let state = dir.path().join("state");
    churnwatch(&[
        "replay",
        "--input",
        input.to_str().unwrap(),
        "--output",
        dir.path().join("alerts.ndjson").to_str().unwrap(),
        "--until",
        "1997-09-30T00:00:00Z",
        "--state",
        state.to_str().unwrap(),
        "-q",
    ]);
    let out = dir.path().join("members.ndjson");
    export(&state, &out, &["--at", "1997-09-30T00:00:00Z"]);
    let (mut risk, mut recency, mut risk_rep, mut recency_rep) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for r in read_json_lines(&out) {
        let id = r["member_id"].as_str().unwrap();
        let lapsed = !came_back.contains(id);
        let last = ms(&r["last_event"]["purchase"]).unwrap();
        let (score, rec) = (
            (r["risk_score"].as_f64().unwrap(), lapsed),
            ((cal_end - last) as f64, lapsed),
        );
        risk.push(score);
        recency.push(rec);
        // Repeat buyers: three purchase days or more, as in issue 15.
        if purchase_days[id].len() >= 3 {
            risk_rep.push(score);
            recency_rep.push(rec);
        }
    }
    assert_eq!(risk.len(), 2357, "every CDNOW customer is exported");
    let (a_risk, a_rec) = (auc(&risk), auc(&recency));
    let (a_risk_rep, a_rec_rep) = (auc(&risk_rep), auc(&recency_rep));
    println!(
        "CDNOW, no purchase in the 39 weeks after 1997-09-30: AUC risk_score {a_risk:.3}, \
         recency {a_rec:.3}; {} repeat buyers: risk_score {a_risk_rep:.3}, recency {a_rec_rep:.3}",
        risk_rep.len()
    );
    assert!(
        a_risk >= a_rec,
        "risk_score AUC {a_risk:.3} < recency {a_rec:.3}"
    );
    assert!(
        a_risk_rep >= a_rec_rep,
        "repeat buyers: risk_score AUC {a_risk_rep:.3} < recency {a_rec_rep:.3}"
    );
}

/// Alerts of a campaign where treated members come back with probability
/// `base + uplift` within 30 days, holdout members with `base`.
fn campaign_alerts(path: &Path, members: usize, base: f64, uplift: f64) {
    use rand::{Rng, SeedableRng};
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(16);
    let t0 = churnwatch::event::parse_rfc3339_ms("2026-01-01T00:00:00Z").unwrap();
    let at = |d: f64| churnwatch::event::format_rfc3339_ms(t0 + (d * DAY_MS as f64) as i64);
    let segments = ["just_dormant", "long_dormant", "low_frequency"];
    let mut out = String::new();
    for i in 0..members {
        let holdout = rng.random_bool(0.1);
        let segment = segments[i % 3];
        let day = rng.random_range(0.0..100.0);
        out.push_str(&format!(
            r#"{{"schema":"churnwatch.alert.v1","alert_id":"a{i}","member_id":"m{i}","signal":"purchase_gap","severity":"warning","risk_score":70.0,"stage":"cooling","segment":"{segment}","evidence":{{}},"recommended_action":"x","holdout":{holdout},"detected_at":"{}","emitted_at":"{}"}}"#,
            at(day),
            at(day)
        ));
        out.push('\n');
        let p = if holdout { base } else { base + uplift };
        let back = if rng.random_bool(p) {
            Some(day + rng.random_range(0.5..29.5))
        } else if rng.random_bool(0.3) {
            Some(day + rng.random_range(31.0..90.0)) // too late to count
        } else {
            None
        };
        if let Some(b) = back {
            out.push_str(&format!(
                r#"{{"schema":"churnwatch.alert.v1","alert_id":"r{i}","member_id":"m{i}","signal":"reactivated","severity":"info","risk_score":10.0,"stage":"active","segment":"{segment}","evidence":{{"horizon_days":30.0}},"recommended_action":"x","holdout":{holdout},"detected_at":"{}","emitted_at":"{}"}}"#,
                at(b),
                at(b)
            ));
            out.push('\n');
        }
    }
    // The stream goes on long enough for every campaign alert to be judged.
    out.push_str(&format!(
        r#"{{"alert_id":"z","member_id":"late","signal":"stage_change","segment":"long_dormant","holdout":false,"detected_at":"{}"}}"#,
        at(200.0)
    ));
    out.push('\n');
    std::fs::write(path, out).unwrap();
}

#[test]
fn report_interval_contains_the_uplift_the_campaign_was_given() {
    let dir = tempfile::tempdir().unwrap();
    let alerts = dir.path().join("alerts.ndjson");
    campaign_alerts(&alerts, 20_000, 0.20, 0.10);
    let out = churnwatch(&["report", "--alerts", alerts.to_str().unwrap(), "--csv"]);
    let mut reader = csv::Reader::from_reader(out.stdout.as_slice());
    let headers = reader.headers().unwrap().clone();
    let rows: Vec<HashMap<String, String>> = reader
        .records()
        .map(|r| {
            headers
                .iter()
                .zip(r.unwrap().iter())
                .map(|(h, v)| (h.to_string(), v.to_string()))
                .collect()
        })
        .collect();
    let row = rows
        .iter()
        .find(|r| r["signal"] == "purchase_gap" && r["segment"] == "all")
        .unwrap();
    let f = |k: &str| row[k].parse::<f64>().unwrap();
    println!(
        "uplift {:.4} [{:.4}, {:.4}], treated {} holdout {}",
        f("uplift"),
        f("ci_low"),
        f("ci_high"),
        row["treated_members"],
        row["holdout_members"]
    );
    assert!(f("ci_low") <= 0.10 && 0.10 <= f("ci_high"), "{row:?}");
    assert!(
        f("ci_low") > 0.0,
        "an uplift of 10 points is detected: {row:?}"
    );
    assert_eq!(row["note"], "campaigns helped");
    assert_eq!(f("pending"), 0.0);
    // Segments split the same units.
    let per_segment: f64 = rows
        .iter()
        .filter(|r| r["signal"] == "purchase_gap" && r["segment"] != "all")
        .map(|r| r["treated_members"].parse::<f64>().unwrap())
        .sum();
    assert_eq!(per_segment, f("treated_members"));

    // A tiny holdout says so rather than claiming anything.
    let small = dir.path().join("small.ndjson");
    campaign_alerts(&small, 150, 0.20, 0.10);
    let table = churnwatch(&["report", "--alerts", small.to_str().unwrap()]);
    let table = String::from_utf8(table.stdout).unwrap();
    println!("{table}");
    assert!(table.contains("holdout too small to tell"), "{table}");
}

fn chromium() -> Option<&'static str> {
    ["chromium", "chromium-browser", "google-chrome"]
        .into_iter()
        .find(|b| {
            Command::new(b)
                .arg("--version")
                .output()
                .is_ok_and(|o| o.status.success())
        })
}

#[test]
fn html_report_renders_its_chart_in_headless_chromium() {
    let dir = tempfile::tempdir().unwrap();
    let alerts = dir.path().join("alerts.ndjson");
    campaign_alerts(&alerts, 2_000, 0.20, 0.10);
    let html = dir.path().join("report.html");
    churnwatch(&[
        "report",
        "--alerts",
        alerts.to_str().unwrap(),
        "--html",
        html.to_str().unwrap(),
    ]);
    let page = std::fs::read_to_string(&html).unwrap();
    assert!(page.contains("<svg") && page.contains("purchase_gap"));
    let Some(browser) = chromium() else {
        println!("SKIPPED: no chromium on PATH (scripts/ensure-deps.sh installs it); the page was written but not rendered");
        return;
    };
    let profile = tempfile::tempdir().unwrap();
    let shot = dir.path().join("report.png");
    let url = format!("file://{}", html.display());
    let common = [
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--no-first-run",
    ];
    let run = |extra: &[String]| {
        Command::new(browser)
            .args(common)
            .arg(format!("--user-data-dir={}", profile.path().display()))
            .args(extra)
            .arg(&url)
            .output()
            .unwrap()
    };
    let dom = run(&["--dump-dom".into()]);
    let dom = String::from_utf8_lossy(&dom.stdout);
    assert!(dom.contains("<svg"), "no SVG in the rendered DOM:\n{dom}");
    assert!(dom.matches("class=\"bar treated\"").count() >= 2, "{dom}");
    let out = run(&[
        format!("--screenshot={}", shot.display()),
        "--window-size=1000,700".into(),
    ]);
    let png = std::fs::read(&shot)
        .unwrap_or_else(|_| panic!("no screenshot: {}", String::from_utf8_lossy(&out.stderr)));
    assert!(
        png.starts_with(b"\x89PNG") && png.len() > 5_000,
        "{} bytes",
        png.len()
    );
    println!(
        "rendered by {browser}: {} ({} bytes)",
        shot.display(),
        png.len()
    );
}
