//! `churnwatch replay` as a user runs it (SPEC §6).

mod common;

use std::io::Write;
use std::process::{Command, Stdio};

use common::*;

fn write(path: &std::path::Path, text: &str) {
    std::fs::write(path, text).unwrap();
}

#[test]
fn every_rejection_reason_goes_to_the_dead_letter_file_with_its_line() {
    let dir = tempfile::tempdir().unwrap();
    let future = chrono::Utc::now().timestamp_millis() + 3 * 86_400_000;
    let long_id = "x".repeat(129);
    let big = format!(
        r#"{{"event_id":"e","member_id":"m","type":"visit","ts":1,"pad":"{}"}}"#,
        "y".repeat(70_000)
    );
    let lines: Vec<(String, Option<&str>)> = vec![
        (r#"{"event_id":"ok1","member_id":"m1","type":"visit","ts":"2026-03-01T12:00:00Z"}"#.into(), None),
        (r#"{"event_id":"e1","#.into(), Some("invalid_json")),
        ("[1,2]".into(), Some("not_object")),
        (r#"{"member_id":"m1","type":"visit","ts":1}"#.into(), Some("missing_field")),
        (r#"{"event_id":"","member_id":"m1","type":"visit","ts":1}"#.into(), Some("empty_field")),
        (format!(r#"{{"event_id":"{long_id}","member_id":"m1","type":"visit","ts":1}}"#), Some("field_too_long")),
        (r#"{"event_id":7,"member_id":"m1","type":"visit","ts":1}"#.into(), Some("wrong_type")),
        (r#"{"event_id":"e2","member_id":"m1","type":"teleport","ts":1}"#.into(), Some("unknown_type")),
        (r#"{"event_id":"e3","member_id":"m1","type":"visit","ts":"last tuesday"}"#.into(), Some("bad_ts")),
        (format!(r#"{{"event_id":"e4","member_id":"m1","type":"visit","ts":{future}}}"#), Some("future_ts")),
        // After 2248: not a time churnwatch takes, whatever the skew.
        (r#"{"event_id":"e7","member_id":"m1","type":"visit","ts":"2300-01-01T00:00:00Z"}"#.into(), Some("bad_ts")),
        (r#"{"event_id":"e5","member_id":"m1","type":"purchase","ts":1}"#.into(), Some("missing_amount")),
        (r#"{"event_id":"e6","member_id":"m1","type":"purchase","ts":1,"amount":-3}"#.into(), Some("negative_amount")),
        (big, Some("oversize")),
        ("".into(), None),
        (r#"{"event_id":"ok2","member_id":"m1","type":"email_send","ts":"2026-03-01T20:00:00+08:00","extra":{"a":1}}"#.into(), None),
    ];
    let input = dir.path().join("in.ndjson");
    let text: String = lines.iter().map(|(l, _)| format!("{l}\n")).collect();
    write(&input, &text);
    let output = dir.path().join("alerts.ndjson");
    let out = churnwatch(&[
        "replay",
        "--input",
        input.to_str().unwrap(),
        "--output",
        output.to_str().unwrap(),
        "-q",
    ]);
    assert!(out.status.success());
    let dlq = dir.path().join("alerts.ndjson.dlq");
    check_alerts(&output, &dlq);
    let dead = read_json_lines(&dlq);
    let expected: Vec<(u64, &str)> = lines
        .iter()
        .enumerate()
        .filter_map(|(i, (_, r))| r.map(|r| (i as u64 + 1, r)))
        .collect();
    assert_eq!(dead.len(), expected.len());
    for (d, (line, reason)) in dead.iter().zip(&expected) {
        assert_eq!(d["line"], *line);
        let err = d["error"].as_str().unwrap();
        assert!(
            err.starts_with(reason),
            "line {line}: {err} should be {reason}"
        );
        assert_eq!(d["payload"].as_str().unwrap(), lines[*line as usize - 1].0);
    }
}

/// `churnwatch replay --input - --output -` with `extra`, nothing on its
/// standard input: it must stop with a usage error (exit 2); its message.
fn usage_error(extra: &[&str]) -> String {
    let out = Command::new(bin())
        .args(["replay", "--input", "-", "--output", "-"])
        .args(extra)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn an_until_after_2248_is_a_usage_error_naming_the_flag() {
    let err = usage_error(&["--until", "2300-01-01T00:00:00Z"]);
    assert!(
        err.contains("--until") && err.contains("2248-09-26"),
        "{err}"
    );
}

#[test]
fn reads_stdin_and_writes_stdout() {
    let dir = tempfile::tempdir().unwrap();
    let dlq = dir.path().join("dead.ndjson");
    let mut input = String::new();
    for i in 0..5 {
        input.push_str(&format!(
            "{{\"event_id\":\"p{i}\",\"member_id\":\"m1\",\"type\":\"purchase\",\"ts\":{},\"amount\":10}}\n",
            1_767_225_600_000i64 + i * 7 * 86_400_000
        ));
    }
    input.push_str("not json\n");
    let mut child = Command::new(bin())
        .args([
            "replay",
            "--input",
            "-",
            "--output",
            "-",
            "--until",
            "2026-03-01T00:00:00Z",
            "-q",
            "--dlq",
        ])
        .arg(&dlq)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(input.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success());
    let alerts: Vec<serde_json::Value> = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let signals: Vec<&str> = alerts
        .iter()
        .map(|a| a["signal"].as_str().unwrap())
        .collect();
    assert_eq!(signals, ["purchase_gap"]);
    assert_eq!(alerts[0]["member_id"], "m1");
    assert_eq!(alerts[0]["detected_at"], "2026-02-12T00:00:00.000Z");
    assert_eq!(read_json_lines(&dlq).len(), 1);
}

#[test]
fn a_bad_config_key_is_named_and_exits_2() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("c.toml");
    write(&cfg, "[detect.purchase_gap]\ngap_multiplyer = 2.0\n");
    let err = usage_error(&["--config", cfg.to_str().unwrap()]);
    assert!(
        err.contains("detect.purchase_gap") && err.contains("gap_multiplyer"),
        "{err}"
    );
}

fn simulate(path: &std::path::Path, members: &str, extra: &[&str]) {
    let mut args = vec![
        "simulate",
        "--members",
        members,
        "--end",
        SIM_END,
        "--output",
        path.to_str().unwrap(),
    ];
    args.extend_from_slice(extra);
    churnwatch(&args);
}

#[test]
fn replaying_twice_gives_the_same_alerts() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("in.ndjson");
    simulate(
        &input,
        "300",
        &["--bad-ratio", "0.01", "--duplicate-ratio", "0.01"],
    );
    let run = |name: &str| {
        let out = dir.path().join(name);
        churnwatch(&[
            "replay",
            "--input",
            input.to_str().unwrap(),
            "--output",
            out.to_str().unwrap(),
            "--until",
            SIM_END,
            "-q",
        ]);
        read_json_lines(&out)
    };
    let (a, b) = (run("a.ndjson"), run("b.ndjson"));
    assert!(a.len() > 20, "only {} alerts", a.len());
    assert_eq!(comparable(&a), comparable(&b));
}

#[test]
fn restart_on_the_same_state_gives_the_same_alerts_as_one_run() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("in.ndjson");
    simulate(&input, "400", &[]);
    let text = std::fs::read_to_string(&input).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    let (first, second) = lines.split_at(lines.len() / 2);
    let (h1, h2) = (dir.path().join("h1.ndjson"), dir.path().join("h2.ndjson"));
    write(&h1, &(first.join("\n") + "\n"));
    write(&h2, &(second.join("\n") + "\n"));

    let whole = dir.path().join("whole.ndjson");
    churnwatch(&[
        "replay",
        "--input",
        input.to_str().unwrap(),
        "--output",
        whole.to_str().unwrap(),
        "--until",
        SIM_END,
        "-q",
    ]);

    let state = dir.path().join("state");
    let (o1, o2) = (dir.path().join("o1.ndjson"), dir.path().join("o2.ndjson"));
    let s = state.to_str().unwrap();
    churnwatch(&[
        "replay",
        "--input",
        h1.to_str().unwrap(),
        "--output",
        o1.to_str().unwrap(),
        "--state",
        s,
        "-q",
    ]);
    churnwatch(&[
        "replay",
        "--input",
        h2.to_str().unwrap(),
        "--output",
        o2.to_str().unwrap(),
        "--state",
        s,
        "--until",
        SIM_END,
        "-q",
    ]);

    let mut resumed = read_json_lines(&o1);
    resumed.extend(read_json_lines(&o2));
    let whole = read_json_lines(&whole);
    assert!(whole.len() > 30, "only {} alerts", whole.len());
    assert_eq!(comparable(&resumed), comparable(&whole));
}

/// `replay --partitions N` puts each member on the partition the topic's
/// producers would use and gives every partition its own clock: the same
/// alerts as replaying each partition's lines on their own.
#[test]
fn replay_with_partitions_equals_a_replay_of_each_partition() {
    use churnwatch::event::partitioner::Partitioner;
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("events.ndjson");
    churnwatch(&[
        "simulate",
        "--members",
        "240",
        "--days",
        "300",
        "--end",
        SIM_END,
        "--seed",
        "5",
        "--output",
        input.to_str().unwrap(),
    ]);
    let text = std::fs::read_to_string(&input).unwrap();
    let mut parts = vec![String::new(); 3];
    for line in text.lines() {
        let v: serde_json::Value = serde_json::from_str(line).unwrap();
        let key = v["member_id"].as_str().unwrap();
        let p = Partitioner::ConsistentRandom.partition(key.as_bytes(), 3) as usize;
        parts[p].push_str(line);
        parts[p].push('\n');
    }
    let replay = |input: &std::path::Path, name: &str, extra: &[&str]| {
        let out = dir.path().join(name);
        let mut args = vec![
            "replay",
            "--input",
            input.to_str().unwrap(),
            "--output",
            out.to_str().unwrap(),
            "-q",
        ];
        args.extend_from_slice(extra);
        churnwatch(&args);
        read_json_lines(&out)
    };
    let mut want = Vec::new();
    for (p, lines) in parts.iter().enumerate() {
        assert!(!lines.is_empty(), "partition {p} got no member");
        let f = dir.path().join(format!("p{p}.ndjson"));
        std::fs::write(&f, lines).unwrap();
        want.extend(replay(&f, &format!("p{p}.alerts"), &[]));
    }
    let got = replay(&input, "all.alerts", &["--partitions", "3"]);
    assert!(want.len() > 50, "{} alerts", want.len());
    assert_same_alerts(&comparable(&got), &comparable(&want));
    // One partition is not the same thing: its clock is pushed by everyone.
    let single = replay(&input, "single.alerts", &[]);
    eprintln!(
        "partitions: {} alerts over 3 partitions, {} as one",
        got.len(),
        single.len()
    );
}

#[test]
fn the_alerts_depend_on_partitions_never_on_threads() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("events.ndjson");
    simulate(&input, "400", &["--days", "300", "--seed", "11"]);
    let replay = |threads: &str| {
        let out = dir.path().join(format!("t{threads}.alerts"));
        let dlq = dir.path().join(format!("t{threads}.dlq"));
        churnwatch(&[
            "replay",
            "--input",
            input.to_str().unwrap(),
            "--output",
            out.to_str().unwrap(),
            "--dlq",
            dlq.to_str().unwrap(),
            "--partitions",
            "4",
            "--threads",
            threads,
            "--until",
            SIM_END,
            "-q",
        ]);
        let mut dead = read_json_lines(&dlq);
        dead.sort_by_key(|d| d["line"].as_u64());
        (comparable(&read_json_lines(&out)), dead)
    };
    let (one, one_dead) = replay("1");
    assert!(one.len() > 100, "{} alerts", one.len());
    for threads in ["2", "4"] {
        let (got, dead) = replay(threads);
        assert_same_alerts(&got, &one);
        assert_eq!(dead, one_dead, "dead letters with {threads} threads");
    }
}
