//! Bad state never stops the pipeline: a member value, timer key, outbox
//! entry or changelog record that cannot be decoded is moved to the
//! quarantine, dead-lettered with `churnwatch.error = corrupt_state: …`,
//! counted, and the instance goes on with the rest of its members intact.

mod common;

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

use rdkafka::message::{Headers, Message};
use rdkafka::producer::{BaseRecord, DefaultProducerContext, Producer, ThreadedProducer};
use rdkafka::ClientConfig;

use churnwatch::pipeline::changelog::{marker_headers, member_value, PartitionMark, MARKER_KEY};
use churnwatch::state::keys::member_key;
use churnwatch::state::{Batch, MemberState, RocksStore, Store, Table};
use common::broker::Broker;
use common::run::*;
use common::*;

const DAY: i64 = 86_400_000;

/// `n` purchases for each of `members` members, a week apart, ending
/// `end_days_ago` days before now.
fn purchases(members: usize, n: i64, end_days_ago: i64, tag: &str) -> Vec<String> {
    let now = chrono::Utc::now().timestamp_millis();
    let mut out = Vec::new();
    for i in 0..n {
        for m in 0..members {
            let ts = now - (end_days_ago + (n - 1 - i) * 7) * DAY + m as i64 * 1000;
            out.push(format!(
                r#"{{"event_id":"{tag}-{m}-{i}","member_id":"m-{m:02}","type":"purchase","ts":{ts},"amount":20.0}}"#
            ));
        }
    }
    out
}

fn produce(broker: &Broker, topic: &str, lines: &[String]) {
    let p: ThreadedProducer<DefaultProducerContext> = ClientConfig::new()
        .set("bootstrap.servers", &broker.addr)
        .set("enable.idempotence", "true")
        .create()
        .unwrap();
    for l in lines {
        let v: serde_json::Value = serde_json::from_str(l).unwrap();
        let key = v["member_id"].as_str().unwrap().to_string();
        p.send(BaseRecord::to(topic).key(&key).payload(l)).unwrap();
    }
    p.flush(Duration::from_secs(60)).unwrap();
}

/// Dead letters with a `corrupt_state` reason: (reason, source topic).
fn corrupt_state_letters(broker: &Broker, want: usize) -> Vec<(String, String)> {
    let c = broker.reader("member-events-dlq", [0]);
    let mut out = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    while out.len() < want && Instant::now() < deadline {
        if let Some(Ok(m)) = c.poll(Duration::from_millis(200)) {
            let h = |name: &str| {
                m.headers()
                    .and_then(|hs| hs.iter().find(|h| h.key == name))
                    .and_then(|h| h.value)
                    .map(|v| String::from_utf8_lossy(v).to_string())
                    .unwrap_or_default()
            };
            let reason = h("churnwatch.error");
            if reason.starts_with("corrupt_state: ") {
                out.push((reason, h("churnwatch.source.topic")));
            }
        }
    }
    out
}

fn wait_processed(port: u16, events: f64) {
    wait_for_metric_sum(port, "churnwatch_events_consumed_total", events);
}

fn wait_for_metric_sum(port: u16, family: &str, at_least: f64) {
    let deadline = Instant::now() + Duration::from_secs(90);
    while metric_sum(port, family) < at_least {
        assert!(
            Instant::now() < deadline,
            "{family} stayed at {} (want {at_least})",
            metric_sum(port, family)
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn members(dir: &Path) -> BTreeMap<String, MemberState> {
    let store =
        RocksStore::open(dir, &churnwatch::config::Config::default().state.tuning()).unwrap();
    store
        .scan(Table::Members, &[], &[0xff; 5], 1_000_000)
        .unwrap()
        .into_iter()
        .filter_map(|(k, v)| {
            let id = String::from_utf8(k[4..].to_vec()).ok()?;
            Some((id, MemberState::decode(&v).ok()?))
        })
        .collect()
}

#[test]
fn a_corrupt_member_value_timer_key_and_outbox_entry_leave_the_instance_running() {
    let dir = tempfile::tempdir().unwrap();
    let broker = Broker::start();
    let port = common::broker::free_port();
    let cfg = config_file(dir.path(), &broker, port, "");
    let state = dir.path().join("state");

    let first = purchases(20, 5, 40, "a");
    let mut run = start_run(&cfg);
    wait_ready(port);
    produce(&broker, "member-events", &first);
    wait_processed(port, first.len() as f64);
    wait_for_metric_sum(port, "churnwatch_commits_total", 1.0);
    std::thread::sleep(Duration::from_millis(500));
    terminate(&run);
    assert!(run.wait().unwrap().success());

    // Disk trouble while it was stopped: three undecodable records.
    {
        let store = RocksStore::open(
            &state,
            &churnwatch::config::Config::default().state.tuning(),
        )
        .unwrap();
        let mut b = Batch::default();
        b.put(
            Table::Members,
            member_key(0, "m-03"),
            vec![0xff, 0x00, 0x13],
        );
        b.put(Table::Timers, vec![0, 0, 0, 0, 0x80], Vec::new());
        b.put(
            Table::Outbox,
            churnwatch::pipeline::outbox::key(1_000_000),
            vec![0xee; 7],
        );
        store.write(b).unwrap();
    }

    let mut run = start_run(&cfg);
    wait_ready(port);
    let second = purchases(20, 2, 0, "b");
    produce(&broker, "member-events", &second);
    wait_processed(port, second.len() as f64);
    let letters = corrupt_state_letters(&broker, 3);
    assert!(run.try_wait().unwrap().is_none(), "the instance stopped");
    for kind in ["member", "timer", "outbox"] {
        assert!(
            metric(
                port,
                &format!("churnwatch_state_quarantined_total{{kind=\"{kind}\"}}")
            ) >= 1.0,
            "{kind} not counted"
        );
    }
    terminate(&run);
    assert!(run.wait().unwrap().success());

    let sources: Vec<&str> = letters.iter().map(|(_, s)| s.as_str()).collect();
    for kind in ["member", "timer", "outbox"] {
        assert!(
            sources.contains(&format!("churnwatch-state/{kind}").as_str()),
            "no {kind} dead letter in {letters:?}"
        );
    }
    // The rest intact: every other member has all 7 purchases; the corrupt
    // one starts afresh with the events after the corruption.
    let m = members(&state);
    assert_eq!(m.len(), 20);
    for (id, s) in &m {
        let want = if id == "m-03" { 2 } else { 7 };
        assert_eq!(s.purchase_count, want, "{id}");
    }
    let out = churnwatch(&["state", "inspect", "--state", state.to_str().unwrap()]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("quarantined records: 3"), "{text}");
    assert!(
        !text.contains("m-03"),
        "a member id without --show-keys: {text}"
    );
}

#[test]
fn a_garbage_changelog_record_before_a_valid_marker_does_not_stop_a_restore() {
    let dir = tempfile::tempdir().unwrap();
    let broker = Broker::start();
    broker.create_topic("member-events", 1);
    broker.create_topic("test-group-state-changelog", 1);
    // The changelog as another instance left it, plus one garbage value.
    let now = chrono::Utc::now().timestamp_millis();
    let good = {
        let store = std::sync::Arc::new(churnwatch::state::MemoryStore::new());
        let cfg = churnwatch::config::Config::default().engine();
        let mut e = churnwatch::engine::Engine::new(
            store.clone(),
            cfg,
            std::sync::Arc::new(churnwatch::telemetry::Metrics::new()),
        )
        .unwrap();
        for l in purchases(1, 3, 10, "g") {
            e.process(0, l.as_bytes(), now).unwrap();
        }
        e.commit(Batch::default()).unwrap();
        store
            .get(Table::Members, &member_key(0, "m-00"))
            .unwrap()
            .unwrap()
    };
    {
        let p: ThreadedProducer<DefaultProducerContext> = ClientConfig::new()
            .set("bootstrap.servers", &broker.addr)
            .create()
            .unwrap();
        let topic = "test-group-state-changelog";
        let mut bad = member_value(i64::MIN, b"x");
        bad[0] = 255;
        p.send(BaseRecord::to(topic).partition(0).key("m-99").payload(&bad))
            .unwrap();
        p.send(
            BaseRecord::to(topic)
                .partition(0)
                .key("m-00")
                .payload(&member_value(i64::MIN, &good)),
        )
        .unwrap();
        let mark = PartitionMark {
            max_ts: now - 10 * DAY,
            clock_ms: None,
            epoch: None,
            basis: None,
            excludes_unmarked: false,
            offsets: [("member-events".to_string(), 0)].into(),
        }
        .encode();
        p.send(
            BaseRecord::to(topic)
                .partition(0)
                .key(MARKER_KEY)
                .payload(&mark)
                .headers(marker_headers()),
        )
        .unwrap();
        p.flush(Duration::from_secs(30)).unwrap();
    }
    let port = common::broker::free_port();
    let cfg = config_file(dir.path(), &broker, port, "");
    let mut run = start_run(&cfg);
    wait_ready(port);
    let more = purchases(1, 1, 0, "h");
    produce(&broker, "member-events", &more);
    wait_processed(port, 1.0);
    let letters = corrupt_state_letters(&broker, 1);
    assert!(run.try_wait().unwrap().is_none(), "the instance stopped");
    assert_eq!(
        metric(
            port,
            "churnwatch_state_quarantined_total{kind=\"changelog\"}"
        ),
        1.0
    );
    terminate(&run);
    assert!(run.wait().unwrap().success());
    assert_eq!(letters.len(), 1, "{letters:?}");
    assert!(letters[0].0.contains("format 255"), "{letters:?}");
    // The valid member was restored and went on: 3 restored + 1 new.
    let m = members(&dir.path().join("state"));
    assert_eq!(m["m-00"].purchase_count, 4);
}
