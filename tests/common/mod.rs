//! Helpers shared by the integration tests: the built binary, the simulator,
//! and the contract checker.
#![allow(dead_code)]

pub mod broker;

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
