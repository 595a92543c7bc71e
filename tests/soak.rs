//! Chaos soak: a real broker, three instances, simulated traffic produced
//! at a fixed rate, and on a seeded random schedule: `kill -9` of an
//! instance (restarted after the session timeout), a broker restart, and a
//! SIGSTOP/SIGCONT pause longer than the session timeout (a zombie that
//! comes back). At the end: every alert a replay of the produced events
//! raises is on the alert topic, no `alert_id` has two contents, every bad
//! event is dead-lettered, and the survivors' member export equals the
//! replay's.
//!
//! `cargo test --test soak` runs two minutes; `scripts/soak.sh` runs longer
//! soaks for several seeds (CHURNWATCH_SOAK_SECS, CHURNWATCH_SOAK_SEED).

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rand::{Rng, SeedableRng};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Headers, Message};
use rdkafka::producer::{BaseRecord, DefaultProducerContext, Producer, ThreadedProducer};
use rdkafka::{ClientConfig, Offset, TopicPartitionList};

use churnwatch::event::partitioner::Partitioner;
use churnwatch::simulate::{generate, member_id, SimEvent, SimOptions};
use common::broker::{free_port, Broker};
use common::run::*;
use common::*;

const PARTITIONS: i32 = 3;
const SESSION_MS: u64 = 6000;

fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

struct Instance {
    cfg: PathBuf,
    port: u16,
    state: PathBuf,
    run: Option<Run>,
}

impl Instance {
    fn new(dir: &Path, name: &str, broker: &Broker) -> Instance {
        let d = dir.join(name);
        std::fs::create_dir_all(&d).unwrap();
        let port = free_port();
        let cfg = config_file(&d, broker, port, "");
        let text = std::fs::read_to_string(&cfg)
            .unwrap()
            .replace(
                "topic_partitions = 1",
                &format!("topic_partitions = {PARTITIONS}"),
            )
            .replace("batch_max_messages = 700", "batch_max_messages = 300")
            // tansu's coordinator is reliable with eager rebalancing
            // (BROKER.md); the product default is cooperative-sticky.
            .replace(
                "\"session.timeout.ms\" = \"6000\"",
                "\"session.timeout.ms\" = \"6000\"\n\"partition.assignment.strategy\" = \"range\"",
            );
        std::fs::write(&cfg, text).unwrap();
        Instance {
            cfg,
            port,
            state: d.join("state"),
            run: None,
        }
    }

    fn start(&mut self) {
        self.run = Some(start_run(&self.cfg));
    }

    fn pid(&self) -> String {
        self.run.as_ref().expect("running").id().to_string()
    }

    fn signal(&self, sig: &str) {
        Command::new("kill")
            .args([sig, &self.pid()])
            .status()
            .unwrap();
    }

    fn kill9(&mut self) {
        self.signal("-KILL");
        if let Some(mut r) = self.run.take() {
            let _ = r.0.wait();
        }
    }
}

#[derive(Debug)]
struct Fault {
    kind: &'static str,
    at_secs: f64,
    recovered_secs: Option<f64>,
}

/// Every record of every partition of `topic`, read to the end.
fn read_all(broker: &Broker, topic: &str) -> Vec<rdkafka::message::OwnedMessage> {
    let c = broker.reader_to_end(topic, 0..PARTITIONS);
    let mut out = Vec::new();
    let mut ended = BTreeSet::new();
    let deadline = Instant::now() + Duration::from_secs(120);
    while ended.len() < PARTITIONS as usize && Instant::now() < deadline {
        match c.poll(Duration::from_millis(200)) {
            Some(Ok(m)) => out.push(m.detach()),
            Some(Err(rdkafka::error::KafkaError::PartitionEOF(p))) => {
                ended.insert(p);
            }
            _ => {}
        }
    }
    out
}

/// The group's committed input offsets (churnwatch commits them for lag).
fn committed(broker: &Broker) -> BTreeMap<i32, i64> {
    let c: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", &broker.addr)
        .set("group.id", "test-group")
        .create()
        .unwrap();
    let mut tpl = TopicPartitionList::new();
    for p in 0..PARTITIONS {
        tpl.add_partition("member-events", p);
    }
    c.committed_offsets(tpl, Duration::from_secs(10))
        .map(|t| {
            t.elements()
                .iter()
                .filter_map(|e| match e.offset() {
                    Offset::Offset(o) => Some((e.partition(), o)),
                    _ => None,
                })
                .collect()
        })
        .unwrap_or_default()
}

fn export(state: &Path, out: &Path) -> Vec<serde_json::Value> {
    churnwatch(&[
        "members",
        "export",
        "--state",
        state.to_str().unwrap(),
        "--format",
        "ndjson",
        "--output",
        out.to_str().unwrap(),
        "-q",
    ]);
    read_json_lines(out)
}

/// Waits until every instance is ready and each partition is owned by
/// exactly one of them; `false` when `within` runs out first.
fn settled(instances: &[Instance], within: Duration) -> bool {
    let t = Instant::now();
    while t.elapsed() < within {
        let ready = instances
            .iter()
            .all(|i| http_get(i.port, "/readyz").0 == 200);
        let owned: Vec<BTreeSet<i64>> = instances.iter().map(|i| owned(i.port)).collect();
        let all: BTreeSet<i64> = owned.iter().flatten().copied().collect();
        let once = owned.iter().map(BTreeSet::len).sum::<usize>() == PARTITIONS as usize;
        if ready && once && all.len() == PARTITIONS as usize {
            return true;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    false
}

fn owned(port: u16) -> BTreeSet<i64> {
    let (_, m) = http_get(port, "/metrics");
    m.lines()
        .filter(|l| l.starts_with("churnwatch_partition_owned{") && l.ends_with(" 1"))
        .filter_map(|l| {
            l.split("partition=\"")
                .nth(1)?
                .split('"')
                .next()?
                .parse()
                .ok()
        })
        .collect()
}

/// Which partitions each instance owns and whether it is ready, for
/// failure messages.
fn ownership(instances: &[Instance]) -> String {
    instances
        .iter()
        .enumerate()
        .map(|(n, i)| {
            format!(
                "instance {n}: owns {:?}, readyz {}",
                owned(i.port),
                http_get(i.port, "/readyz").0
            )
        })
        .collect::<Vec<_>>()
        .join("; ")
}

/// Restarts an instance that owns nothing (else the next in turn) after the
/// session timeout, so that its join makes the coordinator rebalance.
fn nudge(instances: &mut [Instance], nudges: &mut usize) {
    assert!(
        *nudges < 4,
        "the group never settled with every partition owned once: {}",
        ownership(instances)
    );
    let idle = instances
        .iter()
        .position(|i| owned(i.port).is_empty())
        .unwrap_or(*nudges % instances.len());
    eprintln!(
        "soak: group not settled ({}); restarting instance {idle} to make it rebalance",
        ownership(instances)
    );
    if let Some(r) = &instances[idle].run {
        terminate(r);
    }
    if let Some(mut r) = instances[idle].run.take() {
        let _ = r.0.wait();
    }
    std::thread::sleep(Duration::from_millis(SESSION_MS + 1500));
    instances[idle].start();
    *nudges += 1;
}

#[test]
fn chaos_soak_loses_nothing_and_never_publishes_two_contents_for_one_alert() {
    let secs = env_u64("CHURNWATCH_SOAK_SECS", 120);
    let seed = env_u64("CHURNWATCH_SOAK_SEED", 1);
    // CHURNWATCH_SOAK_KEEP keeps the state directories for a post-mortem.
    let keep = std::env::var_os("CHURNWATCH_SOAK_KEEP").is_some();
    let dir = tempfile::Builder::new()
        .disable_cleanup(keep)
        .tempdir()
        .unwrap();
    if keep {
        eprintln!("soak: keeping {}", dir.path().display());
    }
    let mut broker = Broker::start();
    broker.create_topic("member-events", PARTITIONS);

    // The traffic: simulated journeys ending now, produced in time order at
    // a fixed rate over most of the soak.
    let events: Vec<SimEvent> = generate(&SimOptions {
        members: 300,
        days: 150,
        end_ms: chrono::Utc::now().timestamp_millis() - 3_600_000,
        seed,
        bad_ratio: 0.01,
        duplicate_ratio: 0.01,
    });
    let produce_secs = (secs as f64 * 0.7).max(10.0);
    let rate = events.len() as f64 / produce_secs;

    let mut instances: Vec<Instance> = ["a", "b", "c"]
        .iter()
        .map(|n| Instance::new(dir.path(), n, &broker))
        .collect();
    for i in instances.iter_mut() {
        i.start();
    }
    for i in &instances {
        wait_ready(i.port);
    }

    let started = Instant::now();
    let done = Arc::new(AtomicBool::new(false));
    let producer = {
        let addr = broker.addr.clone();
        let events = events.clone();
        let done = done.clone();
        std::thread::spawn(move || {
            let p: ThreadedProducer<DefaultProducerContext> = ClientConfig::new()
                .set("bootstrap.servers", &addr)
                .set("enable.idempotence", "true")
                .set("linger.ms", "10")
                .set("message.timeout.ms", "300000")
                .create()
                .unwrap();
            let t0 = Instant::now();
            for (n, e) in events.iter().enumerate() {
                let due = Duration::from_secs_f64(n as f64 / rate);
                if let Some(w) = due.checked_sub(t0.elapsed()) {
                    std::thread::sleep(w);
                }
                let key = member_id(e.member as usize);
                let mut rec = Some(
                    BaseRecord::to("member-events")
                        .key(key.as_bytes())
                        .payload(e.json.as_bytes()),
                );
                while let Some(r) = rec.take() {
                    if let Err((_, r)) = p.send(r) {
                        rec = Some(r);
                        std::thread::sleep(Duration::from_millis(5));
                    }
                }
            }
            p.flush(Duration::from_secs(300)).unwrap();
            assert_eq!(p.in_flight_count(), 0, "undelivered events");
            done.store(true, Ordering::SeqCst);
        })
    };

    // Faults on a seeded schedule.
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    let mut faults: Vec<Fault> = Vec::new();
    let kinds = ["kill9", "broker_restart", "pause"];
    let mut next_kind = rng.random_range(0..kinds.len());
    while started.elapsed() < Duration::from_secs(secs.saturating_sub(25)) {
        std::thread::sleep(Duration::from_secs(rng.random_range(6..12)));
        let kind = kinds[next_kind % kinds.len()];
        next_kind += 1;
        let at = started.elapsed().as_secs_f64();
        let victim = rng.random_range(0..instances.len());
        match kind {
            "kill9" => {
                instances[victim].kill9();
                // tansu rebalances on joins only: restart after the session
                // timeout (BROKER.md).
                std::thread::sleep(Duration::from_millis(SESSION_MS + 1500));
                instances[victim].start();
            }
            "broker_restart" => {
                broker.stop();
                std::thread::sleep(Duration::from_secs(3));
                broker.restart();
            }
            _ => {
                instances[victim].signal("-STOP");
                std::thread::sleep(Duration::from_millis(SESSION_MS + 4000));
                instances[victim].signal("-CONT");
            }
        }
        // Recovered: every instance ready and every partition owned by
        // exactly one of them.
        let t = Instant::now();
        let recovered =
            settled(&instances, Duration::from_secs(60)).then(|| t.elapsed().as_secs_f64());
        // Printed as it happens too: a failing assertion further down
        // should not hide the schedule that led to it.
        eprintln!(
            "soak: fault {kind} at {at:.1} s on instance {victim}, recovered {recovered:?} s later"
        );
        faults.push(Fault {
            kind,
            at_secs: at,
            recovered_secs: recovered,
        });
    }
    producer.join().unwrap();
    assert!(done.load(Ordering::SeqCst));

    // Caught up: the group's committed offsets reach each partition's end,
    // and every outbox is empty.
    let mut per_partition: BTreeMap<i32, i64> = BTreeMap::new();
    for e in &events {
        let key = member_id(e.member as usize);
        *per_partition
            .entry(
                Partitioner::ConsistentRandom.partition(key.as_bytes(), PARTITIONS as u32) as i32,
            )
            .or_default() += 1;
    }
    // Caught up: the group's committed offsets reach each partition's end.
    // (Outboxes may keep changelog records of partitions an instance lost:
    // they wait for it to own them again, by design.)
    // tansu's coordinator sometimes leaves a partition unassigned after a
    // member's session expired, until some member joins (BROKER.md): a
    // group that stops making progress without every partition owned once
    // is nudged by restarting an instance (a join).
    let mut nudges = 0;
    let deadline = Instant::now() + Duration::from_secs(240);
    let mut last = (committed(&broker), Instant::now());
    loop {
        let c = committed(&broker);
        if per_partition.iter().all(|(p, n)| c.get(p) == Some(n)) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "not caught up: committed {c:?}, produced {per_partition:?}; {}",
            ownership(&instances)
        );
        if c != last.0 {
            last = (c, Instant::now());
        } else if last.1.elapsed() > Duration::from_secs(20)
            && !settled(&instances, Duration::from_secs(5))
        {
            nudge(&mut instances, &mut nudges);
            last.1 = Instant::now();
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    while !settled(&instances, Duration::from_secs(30)) {
        nudge(&mut instances, &mut nudges);
    }
    let owners: Vec<BTreeSet<i64>> = instances.iter().map(|i| owned(i.port)).collect();

    // What a replay of the same events, on the same partitions, raises.
    let input = dir.path().join("events.ndjson");
    let mut text = String::new();
    for e in &events {
        text.push_str(&e.json);
        text.push('\n');
    }
    std::fs::write(&input, text).unwrap();
    let out = dir.path().join("replay.ndjson");
    let dlq = dir.path().join("replay.dlq");
    let replay_state = dir.path().join("replay-state");
    churnwatch(&[
        "replay",
        "--input",
        input.to_str().unwrap(),
        "--output",
        out.to_str().unwrap(),
        "--dlq",
        dlq.to_str().unwrap(),
        "--partitions",
        &PARTITIONS.to_string(),
        "--state",
        replay_state.to_str().unwrap(),
        "-q",
    ]);
    let want = comparable(&read_json_lines(&out));
    let bad = read_json_lines(&dlq).len();

    // Published: every expected alert id and every bad event's dead letter
    // (a slow machine waits rather than fails).
    let wanted: BTreeSet<String> = want
        .iter()
        .map(|a| a["alert_id"].as_str().unwrap().to_string())
        .collect();
    let deadline = Instant::now() + Duration::from_secs(120);
    let (alerts, letters) = loop {
        let alerts = read_all(&broker, "churn-alerts");
        let letters = read_all(&broker, "member-events-dlq");
        let ids: BTreeSet<String> = alerts
            .iter()
            .filter_map(|m| {
                serde_json::from_slice::<serde_json::Value>(m.payload()?).ok()?["alert_id"]
                    .as_str()
                    .map(str::to_string)
            })
            .collect();
        if (wanted.is_subset(&ids) && letters.len() >= bad) || Instant::now() > deadline {
            break (alerts, letters);
        }
        std::thread::sleep(Duration::from_secs(2));
    };
    for i in instances.iter_mut() {
        if let Some(r) = &i.run {
            terminate(r);
        }
    }
    for i in instances.iter_mut() {
        if let Some(mut r) = i.run.take() {
            assert!(r.0.wait().unwrap().success(), "an instance failed to stop");
        }
    }

    // No alert id with two contents; every replay alert published.
    let mut by_id: BTreeMap<String, serde_json::Value> = BTreeMap::new();
    let mut first_offset: BTreeMap<String, i64> = BTreeMap::new();
    let mut duplicated = 0;
    for m in &alerts {
        let mut a: serde_json::Value = serde_json::from_slice(m.payload().unwrap()).unwrap();
        a.as_object_mut().unwrap().remove("emitted_at");
        let id = a["alert_id"].as_str().unwrap().to_string();
        first_offset.entry(id.clone()).or_insert(m.offset());
        if let Some(prev) = by_id.insert(id.clone(), a.clone()) {
            let replayed = want.iter().find(|w| w["alert_id"] == a["alert_id"]);
            assert_eq!(
                prev,
                a,
                "alert {id} published with two contents (alert topic partition {}, offsets {} and {}); \
                 the replay's: {replayed:?}; rerun with CHURNWATCH_SOAK_SEED and \
                 CHURNWATCH_SOAK_KEEP=1 for the state",
                m.partition(),
                first_offset[&id],
                m.offset()
            );
            duplicated += 1;
        }
    }
    let got: Vec<serde_json::Value> = by_id.values().cloned().collect();
    // Dead letters: every bad event at least once, each with its reason.
    let mut origins = BTreeSet::new();
    for m in &letters {
        let h = |name: &str| {
            m.headers()
                .and_then(|hs| hs.iter().find(|h| h.key == name))
                .and_then(|h| h.value)
                .map(|v| String::from_utf8_lossy(v).to_string())
        };
        let reason = h("churnwatch.error").expect("a reason header");
        assert!(!reason.is_empty());
        if h("churnwatch.source.topic").as_deref() == Some("member-events") {
            origins.insert((
                h("churnwatch.source.partition"),
                h("churnwatch.source.offset"),
            ));
        }
    }

    let kinds_seen: BTreeMap<&str, usize> = faults.iter().fold(BTreeMap::new(), |mut m, f| {
        *m.entry(f.kind).or_default() += 1;
        m
    });
    eprintln!(
        "soak seed {seed}, {secs} s: {} events produced ({:.0}/s), faults {kinds_seen:?}; alerts expected {}, found {}, duplicated {duplicated}; dead letters for {} of {bad} bad events",
        events.len(),
        rate,
        want.len(),
        got.len(),
        origins.len()
    );
    for f in &faults {
        eprintln!(
            "  fault {:<15} at {:>6.1} s: recovered in {}",
            f.kind,
            f.at_secs,
            f.recovered_secs
                .map_or("(not within 60 s)".to_string(), |s| format!("{s:.1} s"))
        );
    }
    assert!(!faults.is_empty(), "no fault was injected");
    assert!(want.len() > 50, "{} alerts", want.len());
    let published: BTreeSet<&str> = got.iter().filter_map(|a| a["alert_id"].as_str()).collect();
    for a in want
        .iter()
        .filter(|a| !published.contains(a["alert_id"].as_str().unwrap_or_default()))
    {
        explain_missing(a, &instances, &owners, dir.path(), &broker);
    }
    assert_same_alerts(&got, &want);
    assert_eq!(origins.len(), bad, "bad events dead-lettered");

    // The survivors' state, partition by partition, equals the replay's.
    let replay_rows = export(&replay_state, &dir.path().join("replay-export.ndjson"));
    let key = |r: &serde_json::Value| r["member_id"].as_str().unwrap_or_default().to_string();
    let want_rows: BTreeMap<String, &serde_json::Value> =
        replay_rows.iter().map(|r| (key(r), r)).collect();
    let mut checked = 0;
    for (i, parts) in instances.iter().zip(&owners) {
        let rows = export(&i.state, &i.state.with_extension("export.ndjson"));
        for r in rows
            .iter()
            .filter(|r| parts.contains(&r["partition"].as_i64().unwrap_or(-1)))
        {
            let want = want_rows.get(&key(r)).copied();
            if Some(r) != want {
                explain_state(&key(r), &events, &broker, &instances);
            }
            assert_eq!(Some(r), want, "member {}", key(r));
            checked += 1;
        }
    }
    assert_eq!(checked, want_rows.len(), "members exported by the owners");
}

/// Why a survivor's state of `member` differs from the replay's: whether
/// the input topic holds exactly the events produced for the member (a
/// broker that lost or doubled a record, against our own loss), and the
/// member's changelog records with their epochs.
fn explain_state(member: &str, events: &[SimEvent], broker: &Broker, instances: &[Instance]) {
    let id = |json: &[u8]| {
        serde_json::from_slice::<serde_json::Value>(json)
            .ok()
            .and_then(|v| v["event_id"].as_str().map(str::to_string))
            .unwrap_or_else(|| format!("(undecodable: {})", String::from_utf8_lossy(json)))
    };
    let mut produced: BTreeMap<String, i64> = BTreeMap::new();
    for e in events
        .iter()
        .filter(|e| member_id(e.member as usize) == member)
    {
        *produced.entry(id(e.json.as_bytes())).or_default() += 1;
    }
    let mut stored: BTreeMap<String, i64> = BTreeMap::new();
    let mut offsets: Vec<(i32, i64)> = Vec::new();
    for m in read_all(broker, "member-events") {
        if m.key() == Some(member.as_bytes()) {
            *stored
                .entry(id(m.payload().unwrap_or_default()))
                .or_default() += 1;
            offsets.push((m.partition(), m.offset()));
        }
    }
    let diff: Vec<String> = produced
        .keys()
        .chain(stored.keys())
        .collect::<BTreeSet<_>>()
        .into_iter()
        .filter(|k| produced.get(*k) != stored.get(*k))
        .map(|k| {
            format!(
                "{k}: produced {}, on the topic {}",
                produced.get(k).unwrap_or(&0),
                stored.get(k).unwrap_or(&0)
            )
        })
        .collect();
    eprintln!(
        "state of {member} differs: {} events produced, {} on the input topic (offsets {:?}..{:?}); differing ids: {diff:?}",
        produced.values().sum::<i64>(),
        stored.values().sum::<i64>(),
        offsets.first(),
        offsets.last()
    );
    for m in read_all(broker, "test-group-state-changelog") {
        if m.key() == Some(member.as_bytes()) {
            let epoch = m
                .headers()
                .and_then(|hs| hs.iter().find(|h| h.key == "churnwatch.epoch"))
                .and_then(|h| h.value)
                .map(|v| String::from_utf8_lossy(v).to_string());
            eprintln!(
                "  changelog {}@{} epoch header {epoch:?} ({} bytes)",
                m.partition(),
                m.offset(),
                m.payload().map_or(0, <[u8]>::len)
            );
        }
    }
    for (n, i) in instances.iter().enumerate() {
        eprintln!("  instance {n} state in {}", i.state.display());
    }
}

/// What each instance's state says of the member of an alert nobody
/// published: whether some instance raised it (its episode is open there)
/// and which instance owned the member's partition at the end.
fn explain_missing(
    alert: &serde_json::Value,
    instances: &[Instance],
    owners: &[BTreeSet<i64>],
    dir: &Path,
    broker: &Broker,
) {
    let member = alert["member_id"].as_str().unwrap_or_default();
    let partition =
        Partitioner::ConsistentRandom.partition(member.as_bytes(), PARTITIONS as u32) as i64;
    // The member's changelog records and every marker of its partition,
    // with the epoch each was written under.
    let log: Vec<_> = read_all(broker, "test-group-state-changelog")
        .into_iter()
        .filter(|m| m.partition() as i64 == partition)
        .collect();
    if let Ok(path) = std::env::var("CHURNWATCH_SOAK_DUMP") {
        let mut text = String::new();
        for m in &log {
            let hs: Vec<String> = m
                .headers()
                .map(|hs| {
                    hs.iter()
                        .map(|h| {
                            format!(
                                "{}={}",
                                h.key,
                                h.value.map(String::from_utf8_lossy).unwrap_or_default()
                            )
                        })
                        .collect()
                })
                .unwrap_or_default();
            text.push_str(&format!(
                "{}\t{}\t{:?}\t{}\t{}\n",
                m.offset(),
                m.key().map(String::from_utf8_lossy).unwrap_or_default(),
                m.timestamp().to_millis(),
                hs.join(","),
                if hs.iter().any(|h| h.starts_with("churnwatch.changelog")) {
                    m.payload()
                        .map(String::from_utf8_lossy)
                        .unwrap_or_default()
                        .to_string()
                } else {
                    String::new()
                }
            ));
        }
        std::fs::write(format!("{path}-{partition}.tsv"), text).unwrap();
    }
    // Everything around the member's records: the commit each belongs to
    // ends at the next marker.
    let near: Vec<i64> = log
        .iter()
        .filter(|m| m.key() == Some(member.as_bytes()))
        .map(|m| m.offset())
        .collect();
    for m in &log {
        if near.iter().any(|o| (o - 3..o + 12).contains(&m.offset())) {
            eprintln!(
                "  near {}@{} key {:?} ts {:?} headers {:?}",
                partition,
                m.offset(),
                m.key().map(String::from_utf8_lossy),
                m.timestamp().to_millis(),
                m.headers().map(|hs| hs
                    .iter()
                    .map(|h| (h.key.to_string(), h.value.map(String::from_utf8_lossy)))
                    .collect::<Vec<_>>())
            );
        }
    }
    for m in &log {
        let header = |name: &str| {
            m.headers()
                .and_then(|hs| hs.iter().find(|h| h.key == name))
                .and_then(|h| h.value)
                .map(|v| String::from_utf8_lossy(v).to_string())
        };
        let key = m.key().map(String::from_utf8_lossy).unwrap_or_default();
        let marker = header("churnwatch.changelog").is_some();
        if marker || key == member {
            eprintln!(
                "  changelog {partition}@{} epoch {:?}: {}",
                m.offset(),
                header("churnwatch.epoch"),
                if marker {
                    m.payload()
                        .map(String::from_utf8_lossy)
                        .unwrap_or_default()
                        .to_string()
                } else {
                    format!("{member} ({} bytes)", m.payload().map_or(0, <[u8]>::len))
                }
            );
        }
    }
    eprintln!(
        "missing alert {} ({} of {member}, partition {partition})",
        alert["alert_id"], alert["signal"]
    );
    for (n, (i, parts)) in instances.iter().zip(owners).enumerate() {
        let out = dir.join(format!("explain-{n}.ndjson"));
        let row = export(&i.state, &out)
            .into_iter()
            .find(|r| r["member_id"] == member);
        eprintln!(
            "  instance {n} (owned {parts:?}): {}",
            row.map_or("no state".to_string(), |r| format!(
                "stage {} evaluated_at {} open {} next_timer {}",
                r["stage"], r["evaluated_at"], r["open_episodes"], r["next_timer"]
            ))
        );
    }
}
