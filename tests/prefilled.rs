//! `churnwatch run` started on topics that already hold history, as every
//! first deployment (and every catch-up after an outage) is: per-partition
//! clocks must give the alerts a replay of each partition gives, and topic
//! set-up must work for any input partition count on brokers that create
//! topics when asked about them.

mod common;

use std::collections::BTreeSet;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use rdkafka::message::Message;
use rdkafka::producer::{BaseRecord, DefaultProducerContext, Producer, ThreadedProducer};
use rdkafka::ClientConfig;

use churnwatch::simulate::{generate, member_id, population_of, Population, SimOptions};
use common::broker::Broker;
use common::run::*;
use common::*;

/// Every payload of one partition, in offset order, read to partition EOF.
fn read_partition(broker: &Broker, topic: &str, partition: i32) -> Vec<Vec<u8>> {
    let c = broker.reader_to_end(topic, [partition]);
    let mut out = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        assert!(
            Instant::now() < deadline,
            "partition {partition} never ended"
        );
        match c.poll(Duration::from_millis(200)) {
            Some(Ok(m)) => out.push(m.payload().unwrap_or_default().to_vec()),
            Some(Err(rdkafka::error::KafkaError::PartitionEOF(_))) => return out,
            _ => {}
        }
    }
}

/// Members on the 4 partitions in the proportions 10 : 5 : 3 : 1, so
/// partition 0 holds ten times the events of partition 3.
fn partition_of(member: usize) -> i32 {
    match member % 19 {
        0..=9 => 0,
        10..=14 => 1,
        15..=17 => 2,
        _ => 3,
    }
}

const COOLING: [&str; 6] = [
    "purchase_gap",
    "open_rate_drop",
    "visit_decline",
    "checkin_lapse",
    "spend_decline",
    "stage_change",
];

/// Share of steady members (never cooling) with at least one cooling alert.
fn steady_false_alarm_rate(alerts: &[serde_json::Value], steady: &BTreeSet<String>) -> f64 {
    let alarmed: BTreeSet<&str> = alerts
        .iter()
        .filter(|a| COOLING.contains(&a["signal"].as_str().unwrap_or_default()))
        .filter_map(|a| a["member_id"].as_str())
        .filter(|m| steady.contains(*m))
        .collect();
    alarmed.len() as f64 / steady.len().max(1) as f64
}

fn replay_file(dir: &Path, name: &str, lines: &[Vec<u8>]) -> Vec<serde_json::Value> {
    let input = dir.join(format!("{name}.ndjson"));
    let mut text = Vec::new();
    for l in lines {
        text.extend_from_slice(l);
        text.push(b'\n');
    }
    std::fs::write(&input, text).unwrap();
    let out = dir.join(format!("{name}.alerts"));
    churnwatch(&[
        "replay",
        "--input",
        input.to_str().unwrap(),
        "--output",
        out.to_str().unwrap(),
        "-q",
    ]);
    read_json_lines(&out)
}

#[test]
fn run_on_a_prefilled_skewed_topic_equals_a_replay_of_each_partition() {
    let dir = tempfile::tempdir().unwrap();
    let broker = Broker::start();
    broker.create_topic("member-events", 4);

    // A year of journeys, produced before churnwatch starts.
    let end = chrono::DateTime::parse_from_rfc3339(SIM_END)
        .unwrap()
        .timestamp_millis();
    let members = 500;
    let events = generate(&SimOptions {
        members,
        days: 365,
        end_ms: end,
        seed: 14,
        bad_ratio: 0.005,
        duplicate_ratio: 0.01,
    });
    let producer: ThreadedProducer<DefaultProducerContext> = ClientConfig::new()
        .set("bootstrap.servers", &broker.addr)
        .set("enable.idempotence", "true")
        .set("linger.ms", "20")
        .set("message.timeout.ms", "120000")
        .create()
        .unwrap();
    for e in &events {
        let key = member_id(e.member as usize);
        let mut rec = Some(
            BaseRecord::to("member-events")
                .partition(partition_of(e.member as usize))
                .key(key.as_bytes())
                .payload(e.json.as_bytes()),
        );
        while let Some(r) = rec.take() {
            if let Err((_, r)) = producer.send(r) {
                rec = Some(r);
                std::thread::sleep(Duration::from_millis(5));
            }
        }
    }
    producer.flush(Duration::from_secs(120)).unwrap();

    // What each partition holds, replayed on its own: the expected alerts.
    let mut want = Vec::new();
    let mut sizes = Vec::new();
    for p in 0..4 {
        let lines = read_partition(&broker, "member-events", p);
        sizes.push(lines.len());
        want.extend(replay_file(dir.path(), &format!("p{p}"), &lines));
    }
    assert_eq!(sizes.iter().sum::<usize>(), events.len());
    assert!(sizes[0] >= 8 * sizes[3], "partition sizes {sizes:?}");

    let port = common::broker::free_port();
    // Four partitions on three engine threads (thread 0 has two of them):
    // the alerts must not depend on how partitions share threads.
    let cfg = config_file(dir.path(), &broker, port, "[engine]\nthreads = 3");
    // One instance, so no rebalance to wait for: a longer session keeps a
    // loaded machine's slow broker from expiring it mid catch-up (tansu then
    // fails to take the member back, BROKER.md).
    let text = std::fs::read_to_string(&cfg).unwrap().replace(
        "\"session.timeout.ms\" = \"6000\"",
        "\"session.timeout.ms\" = \"30000\"",
    );
    std::fs::write(&cfg, text).unwrap();
    let mut run = start_run(&cfg);
    // Caught up: every message consumed (accepted, rejected or duplicate)
    // and every alert acknowledged by the broker.
    let total = events.len() as f64;
    let deadline = Instant::now() + Duration::from_secs(600);
    loop {
        let seen = metric_sum(port, "churnwatch_events_consumed_total")
            + metric_sum(port, "churnwatch_events_rejected_total")
            + metric_sum(port, "churnwatch_events_duplicate_total");
        if seen >= total && metric(port, "churnwatch_outbox_depth") == 0.0 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "run did not catch up: {seen} of {total} messages ({} partitions assigned)",
            metric(port, "churnwatch_partitions_assigned")
        );
        std::thread::sleep(Duration::from_millis(250));
    }
    // Catching up, batches come full (700 messages here), and a commit
    // spans all the batches of its `pipeline.commit_interval_ms` (500 ms):
    // far fewer commits than batches.
    let commits = metric(port, "churnwatch_commits_total");
    let full_batches = total / 700.0;
    eprintln!("prefilled: {commits} commits for {total} messages ({full_batches:.0} full batches)");
    assert!(
        commits < full_batches,
        "{commits} commits for {full_batches:.0} full batches"
    );
    let ids: BTreeSet<String> = want
        .iter()
        .map(|a| a["alert_id"].as_str().unwrap().to_string())
        .collect();
    let got = read_alerts(&broker, ids.len());
    terminate(&run);
    assert!(run.wait().unwrap().success());

    eprintln!(
        "prefilled: partitions hold {sizes:?} events; {} alerts expected, {} on the topic",
        want.len(),
        got.len()
    );
    assert!(want.len() > 200, "{} alerts", want.len());
    assert_same_alerts(&comparable(&got), &comparable(&want));

    // Quiet members stay as quiet as in a single replay of the whole year.
    let whole: Vec<Vec<u8>> = events.iter().map(|e| e.json.clone().into_bytes()).collect();
    let single = replay_file(dir.path(), "whole", &whole);
    let steady: BTreeSet<String> = (0..members)
        .filter(|i| population_of(*i) == Population::Steady)
        .map(member_id)
        .collect();
    let (run_rate, replay_rate) = (
        steady_false_alarm_rate(&got, &steady),
        steady_false_alarm_rate(&single, &steady),
    );
    eprintln!(
        "prefilled: steady members with a cooling alert: run {:.2}%, single replay {:.2}% ({} steady members)",
        run_rate * 100.0,
        replay_rate * 100.0,
        steady.len()
    );
    assert!(
        (run_rate - replay_rate).abs() <= 0.005,
        "run {run_rate} vs replay {replay_rate}"
    );
}

/// Starts `run` on an input topic of `n` partitions with a fresh group and
/// checks it becomes ready with a changelog of `n` partitions.
fn starts_with_partitions(broker: &Broker, dir: &Path, n: i32) {
    let topic = format!("events-{n}");
    broker.create_topic(&topic, n);
    let d = dir.join(format!("p{n}"));
    std::fs::create_dir_all(&d).unwrap();
    let port = common::broker::free_port();
    let group = format!("fresh-{n}");
    let cfg = config_file(&d, broker, port, "");
    let text = std::fs::read_to_string(&cfg)
        .unwrap()
        .replace("group_id = \"test-group\"", &format!("group_id = \"{group}\"\ninput_topics = [\"{topic}\"]\nalert_topic = \"alerts-{n}\"\ndlq_topic = \"dlq-{n}\""));
    std::fs::write(&cfg, text).unwrap();
    let mut run = start_run(&cfg);
    let deadline = Instant::now() + Duration::from_secs(60);
    while http_get(port, "/readyz").0 != 200 {
        assert!(
            run.try_wait().unwrap().is_none(),
            "run with a {n}-partition input topic exited"
        );
        assert!(
            Instant::now() < deadline,
            "run never became ready ({n} partitions)"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(metric(port, "churnwatch_partitions_assigned"), n as f64);
    terminate(&run);
    assert!(run.wait().unwrap().success());
    let topics = broker.topic_partitions();
    assert_eq!(
        topics.get(&format!("{group}-state-changelog")),
        Some(&(n as usize)),
        "changelog of the {n}-partition input: {topics:?}"
    );
}

#[test]
fn any_input_partition_count_starts_on_a_broker_that_auto_creates_topics() {
    let dir = tempfile::tempdir().unwrap();
    let broker = Broker::start_memory();
    for n in [1, 2, 3, 6] {
        starts_with_partitions(&broker, dir.path(), n);
    }
    // Looking never created anything: no topic has the broker's default
    // count unless churnwatch or the test asked for it.
    let topics = broker.topic_partitions();
    for (name, count) in &topics {
        assert!(
            name.starts_with("events-")
                || name.starts_with("alerts-")
                || name.starts_with("dlq-")
                || name.ends_with("-state-changelog")
                || name.starts_with("__"),
            "unexpected topic {name} ({count} partitions)"
        );
    }
}

#[test]
fn any_input_partition_count_starts_on_a_sqlite_broker() {
    let dir = tempfile::tempdir().unwrap();
    let broker = Broker::start();
    for n in [3, 6] {
        starts_with_partitions(&broker, dir.path(), n);
    }
}

#[test]
fn an_existing_changelog_with_another_partition_count_stops_start_up_naming_both() {
    let dir = tempfile::tempdir().unwrap();
    let broker = Broker::start_memory();
    broker.create_topic("member-events", 3);
    broker.create_topic("test-group-state-changelog", 2);
    let port = common::broker::free_port();
    let cfg = config_file(dir.path(), &broker, port, "");
    let out = Command::new(bin())
        .args(["run", "--config", cfg.to_str().unwrap()])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "run started: {err}");
    assert!(
        err.contains("test-group-state-changelog has 2 partitions")
            && err.contains("member-events has 3"),
        "{err}"
    );
}
