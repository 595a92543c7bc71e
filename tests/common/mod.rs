//! Helpers shared by the integration tests: the built binary, the simulator,
//! and the contract checker.
#![allow(dead_code)]

pub mod broker;
pub mod cdnow;
pub mod run;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

pub fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_churnwatch")
}

pub fn churnwatch(args: &[&str]) -> Output {
    let out = Command::new(bin())
        .args(args)
        .output()
        .expect("run churnwatch");
    if !out.status.success() {
        panic!(
            "churnwatch {args:?} failed: {}\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
    }
    out
}

/// The contract checker: `../shared/tools/check_alerts.py` when the repo sits
/// beside it, else the copy in `tests/contract/` (taken from there).
pub fn check_alerts_script() -> PathBuf {
    if let Ok(p) = std::env::var("CHURNWATCH_CHECK_ALERTS") {
        return p.into();
    }
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let shared = root.join("../shared/tools/check_alerts.py");
    if shared.exists() {
        return shared;
    }
    root.join("tests/contract/check_alerts.py")
}

/// Runs the contract checker on an alerts file and its dead-letter file.
pub fn check_alerts(alerts: &Path, dlq: &Path) -> String {
    let out = Command::new("python3")
        .arg(check_alerts_script())
        .arg(alerts)
        .arg("--dlq")
        .arg(dlq)
        .output()
        .expect("python3 runs");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success(),
        "check_alerts.py found contract problems:\n{text}"
    );
    text
}

pub fn read_json_lines(path: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).expect("valid JSON line"))
        .collect()
}

/// Alerts without `emitted_at`, the one field allowed to differ between runs.
/// Alerts without `emitted_at`, ordered by `alert_id`: timers of different
/// members fire at batch ends, so only each member's own alerts keep a fixed
/// order across runs with different batch boundaries.
pub fn comparable(alerts: &[serde_json::Value]) -> Vec<serde_json::Value> {
    let mut out: Vec<serde_json::Value> = alerts
        .iter()
        .map(|a| {
            let mut a = a.clone();
            a.as_object_mut().unwrap().remove("emitted_at");
            a
        })
        .collect();
    out.sort_by(|a, b| a["alert_id"].as_str().cmp(&b["alert_id"].as_str()));
    out
}

/// 2026-11-01T00:00:00Z: a fixed end for simulated histories.
pub const SIM_END: &str = "2026-11-01T00:00:00Z";

/// Asserts two alert lists (as from [`comparable`]) are equal, and when they
/// are not, says which `alert_id`s are missing, extra or different (the full
/// lists are too long to read in a CI log).
pub fn assert_same_alerts(got: &[serde_json::Value], want: &[serde_json::Value]) {
    let index = |v: &[serde_json::Value]| -> std::collections::BTreeMap<String, serde_json::Value> {
        v.iter()
            .map(|a| {
                (
                    a["alert_id"].as_str().unwrap_or_default().to_string(),
                    a.clone(),
                )
            })
            .collect()
    };
    let (g, w) = (index(got), index(want));
    let missing: Vec<&serde_json::Value> = w
        .iter()
        .filter(|(k, _)| !g.contains_key(*k))
        .map(|(_, v)| v)
        .collect();
    let extra: Vec<&serde_json::Value> = g
        .iter()
        .filter(|(k, _)| !w.contains_key(*k))
        .map(|(_, v)| v)
        .collect();
    let differ: Vec<(&serde_json::Value, &serde_json::Value)> = w
        .iter()
        .filter_map(|(k, a)| g.get(k).filter(|b| *b != a).map(|b| (a, b)))
        .collect();
    if missing.is_empty() && extra.is_empty() && differ.is_empty() && got.len() == want.len() {
        return;
    }
    let show = |v: &[&serde_json::Value]| -> String {
        v.iter()
            .take(5)
            .map(|a| a.to_string())
            .collect::<Vec<_>>()
            .join("\n    ")
    };
    let differ_shown: Vec<String> = differ
        .iter()
        .take(3)
        .map(|(w, g)| format!("want {w}\n    got  {g}"))
        .collect();
    panic!(
        "alerts differ: {} got, {} wanted; {} missing, {} extra, {} different\n  missing (first 5):\n    {}\n  extra (first 5):\n    {}\n  different (first 3):\n    {}",
        got.len(),
        want.len(),
        missing.len(),
        extra.len(),
        differ.len(),
        show(&missing),
        show(&extra),
        differ_shown.join("\n    ")
    );
}
