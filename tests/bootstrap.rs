//! `churnwatch bootstrap` then `run`: state built from a history file, on
//! the partitions the topic's producers use, continued from the topic at
//! the seam as if `run` had always been running.

mod common;

use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use rdkafka::message::Message;
use rdkafka::producer::{BaseRecord, DefaultProducerContext, Producer, ThreadedProducer};
use rdkafka::ClientConfig;

use churnwatch::event::partitioner::Partitioner;
use churnwatch::simulate::{generate, member_id, SimEvent, SimOptions};
use churnwatch::state::keys::split_member_key;
use churnwatch::state::{MemberState, RocksStore, Store, Table};
use common::broker::Broker;
use common::run::*;
use common::*;

const DAY: i64 = 86_400_000;

fn rfc3339(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .unwrap()
        .to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

/// Produces events keyed by member id with the producer's own partitioner
/// (`partitioner` property; librdkafka's default when `None`), each record
/// stamped with its event time, as a warehouse-fed producer would.
fn produce(broker: &Broker, topic: &str, events: &[&SimEvent], partitioner: Option<&str>) {
    let mut cfg = ClientConfig::new();
    cfg.set("bootstrap.servers", &broker.addr)
        .set("enable.idempotence", "true")
        .set("linger.ms", "20")
        .set("message.timeout.ms", "120000");
    if let Some(p) = partitioner {
        cfg.set("partitioner", p);
    }
    let producer: ThreadedProducer<DefaultProducerContext> = cfg.create().unwrap();
    for e in events {
        let key = member_id(e.member as usize);
        let mut rec = Some(
            BaseRecord::to(topic)
                .key(key.as_bytes())
                .payload(e.json.as_bytes())
                .timestamp(e.ts_ms),
        );
        while let Some(r) = rec.take() {
            if let Err((_, r)) = producer.send(r) {
                rec = Some(r);
                std::thread::sleep(Duration::from_millis(5));
            }
        }
    }
    producer.flush(Duration::from_secs(120)).unwrap();
}

fn write_lines(path: &Path, events: &[&SimEvent]) {
    let mut text = String::new();
    for e in events {
        text.push_str(&e.json);
        text.push('\n');
    }
    std::fs::write(path, text).unwrap();
}

/// Every member's state in a state directory, by member id.
fn member_states(dir: &Path) -> BTreeMap<String, MemberState> {
    let store =
        RocksStore::open(dir, &churnwatch::config::Config::default().state.tuning()).unwrap();
    store
        .scan(Table::Members, &[], &[0xff; 5], 10_000_000)
        .unwrap()
        .into_iter()
        .map(|(k, v)| {
            let (_, id) = split_member_key(&k).unwrap();
            (id.to_string(), MemberState::decode(&v).unwrap())
        })
        .collect()
}

#[test]
fn bootstrap_then_run_continues_a_year_as_one_replay_of_it() {
    let dir = tempfile::tempdir().unwrap();
    let broker = Broker::start();
    broker.create_topic("member-events", 4);
    let end = chrono::DateTime::parse_from_rfc3339(SIM_END)
        .unwrap()
        .timestamp_millis();
    let events = generate(&SimOptions {
        members: 500,
        days: 365,
        end_ms: end,
        seed: 19,
        bad_ratio: 0.0,
        duplicate_ratio: 0.0,
    });
    // The seam: history up to T in a file; the topic keeps the last 60 days
    // and a day of overlap before T.
    let t = end - 60 * DAY;
    let history: Vec<&SimEvent> = events.iter().filter(|e| e.ts_ms <= t).collect();
    let topic: Vec<&SimEvent> = events.iter().filter(|e| e.ts_ms > t - DAY).collect();
    let after_seam = events.iter().filter(|e| e.ts_ms > t).count();
    assert!(topic.len() > after_seam, "no overlap");
    produce(&broker, "member-events", &topic, None);
    let history_file = dir.path().join("history.ndjson");
    write_lines(&history_file, &history);

    let port = common::broker::free_port();
    let cfg = config_file(dir.path(), &broker, port, "");
    let boot_alerts = dir.path().join("bootstrap-alerts.ndjson");
    let out = Command::new(bin())
        .args([
            "bootstrap",
            "--config",
            cfg.to_str().unwrap(),
            "--input",
            history_file.to_str().unwrap(),
            "--until",
            &rfc3339(t),
            "--alerts",
            boot_alerts.to_str().unwrap(),
        ])
        .stderr(Stdio::piped())
        .output()
        .unwrap();
    let summary = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "bootstrap failed: {summary}");
    eprintln!("bootstrap: {summary}");
    assert!(summary.contains("members by partition: 0="), "{summary}");

    let mut run = start_run(&cfg);
    let deadline = Instant::now() + Duration::from_secs(180);
    loop {
        let seen = metric_sum(port, "churnwatch_events_consumed_total")
            + metric_sum(port, "churnwatch_events_duplicate_total");
        if seen >= after_seam as f64 && metric(port, "churnwatch_outbox_depth") == 0.0 {
            // Exactly the records after the seam: the overlap was skipped.
            assert_eq!(seen, after_seam as f64, "records consumed");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "run did not catch up: {seen} of {after_seam}"
        );
        std::thread::sleep(Duration::from_millis(250));
    }

    // The whole year replayed in one run, and with the topic's partitions.
    let whole = dir.path().join("year.ndjson");
    let all: Vec<&SimEvent> = events.iter().collect();
    write_lines(&whole, &all);
    let replay = |name: &str, extra: &[&str]| {
        let out = dir.path().join(format!("{name}.ndjson"));
        let mut args = vec![
            "replay",
            "--input",
            whole.to_str().unwrap(),
            "--output",
            out.to_str().unwrap(),
            "-q",
        ];
        args.extend_from_slice(extra);
        churnwatch(&args);
        read_json_lines(&out)
    };
    let seam = rfc3339(t);
    let after = |alerts: Vec<serde_json::Value>| -> Vec<serde_json::Value> {
        comparable(&alerts)
            .into_iter()
            .filter(|a| a["detected_at"].as_str().unwrap() > seam.as_str())
            .collect()
    };
    let single = after(replay("single", &[]));
    let replay_state = dir.path().join("replay-state");
    let partitioned = after(replay(
        "partitioned",
        &[
            "--partitions",
            "4",
            "--state",
            replay_state.to_str().unwrap(),
        ],
    ));
    let ids: std::collections::BTreeSet<String> = single
        .iter()
        .map(|a| a["alert_id"].as_str().unwrap().to_string())
        .collect();
    let got = after(read_alerts(&broker, ids.len()));
    terminate(&run);
    assert!(run.wait().unwrap().success());
    assert!(single.len() > 30, "{} alerts after the seam", single.len());
    eprintln!(
        "bootstrap: {} alerts after the seam from run, {} from a single replay",
        got.len(),
        single.len()
    );
    assert_same_alerts(&got, &single);
    assert_same_alerts(&got, &partitioned);

    // Not double counted: every member's state equals the partitioned
    // replay's (its event counts, spend, dedup ring, timers, episodes).
    let ours = member_states(&dir.path().join("state"));
    let theirs = member_states(&replay_state);
    assert_eq!(ours.len(), theirs.len(), "members");
    for (id, m) in &theirs {
        let o = &ours[id];
        assert_eq!(
            (o.purchase_count, o.checkin_count, o.total_spend),
            (m.purchase_count, m.checkin_count, m.total_spend),
            "event counts of {id}"
        );
        assert_eq!(o, m, "state of {id}");
    }
}

#[test]
fn members_land_where_librdkafka_and_java_style_producers_put_them() {
    let broker = Broker::start();
    let keys: Vec<String> = (0..200).map(|i| format!("member-{i:05}")).collect();
    for (topic, partitioner, ours) in [
        ("by-crc32", None, Partitioner::ConsistentRandom),
        (
            "by-murmur2",
            Some("murmur2_random"),
            Partitioner::Murmur2Random,
        ),
    ] {
        broker.create_topic(topic, 6);
        // Produce with each key, through rdkafka's own partitioner.
        let mut cfg = ClientConfig::new();
        cfg.set("bootstrap.servers", &broker.addr);
        if let Some(p) = partitioner {
            cfg.set("partitioner", p);
        }
        let producer: ThreadedProducer<DefaultProducerContext> = cfg.create().unwrap();
        for k in &keys {
            producer
                .send(
                    BaseRecord::to(topic)
                        .key(k.as_bytes())
                        .payload(k.as_bytes()),
                )
                .unwrap();
        }
        producer.flush(Duration::from_secs(60)).unwrap();
        // Read back where each key went.
        let c = broker.reader_to_end(topic, 0..6);
        let mut seen = BTreeMap::new();
        let deadline = Instant::now() + Duration::from_secs(60);
        while seen.len() < keys.len() {
            assert!(
                Instant::now() < deadline,
                "read {} of {}",
                seen.len(),
                keys.len()
            );
            if let Some(Ok(m)) = c.poll(Duration::from_millis(200)) {
                let k = String::from_utf8(m.key().unwrap().to_vec()).unwrap();
                seen.insert(k, m.partition() as u32);
            }
        }
        let spread: std::collections::BTreeSet<u32> = seen.values().copied().collect();
        assert!(spread.len() > 3, "{topic}: keys on {spread:?} only");
        for (k, p) in &seen {
            assert_eq!(
                ours.partition(k.as_bytes(), 6),
                *p,
                "{topic}: key {k} went to partition {p}"
            );
        }
    }
}

#[test]
fn a_bootstrapped_directory_on_a_topic_with_another_partition_count_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let broker = Broker::start();
    broker.create_topic("member-events", 3);
    let history = dir.path().join("history.ndjson");
    std::fs::write(
        &history,
        r#"{"event_id":"e1","member_id":"m1","type":"purchase","ts":"2026-01-01T00:00:00Z","amount":5}
"#,
    )
    .unwrap();
    let port = common::broker::free_port();
    let cfg = config_file(dir.path(), &broker, port, "");
    churnwatch(&[
        "bootstrap",
        "--config",
        cfg.to_str().unwrap(),
        "--input",
        history.to_str().unwrap(),
        "--until",
        "2026-02-01T00:00:00Z",
        "--alerts",
        dir.path().join("a.ndjson").to_str().unwrap(),
        "-q",
    ]);
    // Same state directory, another topic of another size.
    broker.create_topic("events-5", 5);
    let text = std::fs::read_to_string(&cfg).unwrap().replace(
        "group_id = \"test-group\"",
        "group_id = \"other\"\ninput_topics = [\"events-5\"]",
    );
    std::fs::write(&cfg, text).unwrap();
    let out = Command::new(bin())
        .args(["run", "--config", cfg.to_str().unwrap()])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "run accepted it: {err}");
    assert!(
        err.contains("bootstrapped for 3 partitions") && err.contains("events-5 has 5"),
        "{err}"
    );
}
