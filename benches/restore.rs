//! Restore benchmark: how fast a partition's state is rebuilt from its
//! changelog records into the real RocksDB store.
//!
//! ```text
//! cargo bench --bench restore -- [--members N] [--commit N] [--batch-records N]
//! ```
//!
//! Member states are real: template members are built by running purchase,
//! visit, email and check-in events through the engine, and each of the N
//! changelog records carries one of those states under its own member id.
//! A commit marker follows every `--commit` records, as the pipeline writes
//! them. The timed part is what `churnwatch run` does per record on
//! assignment after fetching it: buffer to the marker, split the value,
//! write member and timer entries in large RocksDB write batches. Fetching
//! from the broker is not included (see docs/scaling.md for that bound).
//! Also reports how much resident memory the restore adds.
//!
//! With `--from-broker`, the records are then produced to the changelog
//! topic of a tansu broker started here, and restored end to end as a newly
//! assigned partition is (`changelog::restore`: fetch to partition EOF,
//! apply, persist) into a second store.

mod common;

use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::{Duration, Instant};

use churnwatch::config::Config;
use churnwatch::engine::Engine;
use churnwatch::event::DAY_MS;
use churnwatch::pipeline::changelog::{
    self, marker_headers, member_value, PartitionMark, Restorer, MARKER_KEY,
};
use churnwatch::pipeline::{client_config, topics};
use churnwatch::state::{Batch, MemberState, MemoryStore, RocksStore, RocksTuning, Store, Table};
use churnwatch::telemetry::Metrics;
use rdkafka::producer::{BaseRecord, DefaultProducerContext, Producer, ThreadedProducer};
use rdkafka::ClientConfig;

fn arg(name: &str, default: u64) -> u64 {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Encoded states of `n` members with a few months of mixed history.
fn templates(n: usize) -> Vec<(i64, Vec<u8>)> {
    let store = Arc::new(MemoryStore::new());
    let cfg = Config::default().engine();
    let mut e = Engine::new(store.clone(), cfg, Arc::new(Metrics::new())).expect("engine");
    let start = 1_750_000_000_000_i64;
    let kinds = ["visit", "email_send", "email_open", "check_in", "purchase"];
    for m in 0..n {
        for i in 0..40 {
            let kind = kinds[(i + m) % kinds.len()];
            let ts = start + (i as i64) * 3 * DAY_MS + (m as i64) * 60_000;
            let amount = if kind == "purchase" {
                ",\"amount\":42.5"
            } else {
                ""
            };
            let line = format!(
                "{{\"event_id\":\"{m}-{i}\",\"member_id\":\"t-{m}\",\"type\":\"{kind}\",\"ts\":{ts}{amount}}}"
            );
            e.process(0, line.as_bytes(), start + 400 * DAY_MS)
                .expect("process");
        }
    }
    e.commit(Batch::default()).expect("commit");
    store
        .scan(Table::Members, &[], &[0xff; 8], usize::MAX >> 1)
        .expect("scan")
        .into_iter()
        .map(|(_, v)| {
            let s = MemberState::decode(&v).expect("state");
            (s.timer_due_ms, v)
        })
        .collect()
}

fn main() {
    let members = arg("--members", 1_000_000);
    let commit = arg("--commit", 5_000);
    let batch_records = arg("--batch-records", 20_000) as usize;
    let t = templates(500);
    let avg = t.iter().map(|(_, v)| v.len()).sum::<usize>() / t.len();

    // The records as the restore consumer would hand them over.
    let mut records: Vec<(Vec<u8>, Vec<u8>, bool)> = Vec::with_capacity(members as usize + 1000);
    let mark = PartitionMark {
        clock_ms: None,
        epoch: None,
        basis: None,
        excludes_unmarked: false,
        max_ts: 1_760_000_000_000,
        offsets: [("member-events".to_string(), 1)].into(),
    }
    .encode();
    for i in 0..members {
        let (due, state) = &t[i as usize % t.len()];
        records.push((
            format!("member-{i:08}").into_bytes(),
            member_value(*due, state),
            false,
        ));
        if (i + 1) % commit == 0 || i + 1 == members {
            records.push((MARKER_KEY.to_vec(), mark.clone(), true));
        }
    }

    let dir = tempfile::tempdir().expect("temp dir");
    let store = RocksStore::open(dir.path(), &RocksTuning::default()).expect("open");
    let topics = vec!["member-events".to_string()];
    let rss_before = status_kib("VmRSS:");
    reset_peak_rss();
    let started = Instant::now();
    let mut r = Restorer::new(&store, 0, &topics, batch_records);
    for (offset, (key, value, marker)) in records.iter().enumerate() {
        r.apply(offset as i64, *marker, key, Some(value))
            .expect("apply");
    }
    r.finish().expect("finish");
    let secs = started.elapsed().as_secs_f64();
    println!("restore (changelog records -> RocksDB, one partition)");
    println!("  members            {members}");
    println!("  avg state bytes    {avg}");
    println!("  records            {}", r.records);
    println!("  seconds            {secs:.2}");
    println!("  members/s          {:.0}", members as f64 / secs);
    // The prepared records sit in this process's memory before the timed
    // part; what the restore itself adds is the peak after it minus that.
    let peak = status_kib("VmHWM:");
    println!(
        "  RSS added by the restore  {} MiB (block cache 256 MiB + memtables 128 MiB budget)",
        peak.saturating_sub(rss_before) / 1024
    );
    drop(store);
    if std::env::args().any(|a| a == "--from-broker") {
        from_broker(&records, members, batch_records);
    }
}

/// Produces `records` to partition 0 of a changelog topic on tansu, then
/// times the pipeline's restore of that partition into an empty store.
fn from_broker(records: &[(Vec<u8>, Vec<u8>, bool)], members: u64, batch_records: usize) {
    let dir = tempfile::tempdir().expect("temp dir");
    let broker = common::Broker::start();
    let mut cfg = Config::default();
    cfg.kafka.brokers = broker.addr.clone();
    cfg.pipeline.topic_partitions = 1;
    tokio::runtime::Runtime::new()
        .unwrap()
        .block_on(topics::ensure(&cfg))
        .map_err(|e| e.to_string())
        .expect("create topics");
    let topic = cfg.changelog_topic();

    let producer: ThreadedProducer<DefaultProducerContext> = ClientConfig::new()
        .set("bootstrap.servers", &broker.addr)
        .set("linger.ms", "50")
        .set("batch.size", "1000000")
        .set("message.timeout.ms", "600000")
        .create()
        .expect("producer");
    let started = Instant::now();
    for (key, value, marker) in records {
        let mut rec = BaseRecord::to(&topic)
            .partition(0)
            .key(key.as_slice())
            .payload(value.as_slice());
        if *marker {
            rec = rec.headers(marker_headers());
        }
        let mut rec = Some(rec);
        while let Some(r) = rec.take() {
            if let Err((_, r)) = producer.send(r) {
                rec = Some(r);
                std::thread::sleep(Duration::from_millis(1));
            }
        }
    }
    producer.flush(Duration::from_secs(600)).expect("flush");
    let produced = started.elapsed().as_secs_f64();

    let store = RocksStore::open(&dir.path().join("state"), &RocksTuning::default()).expect("open");
    let mut client = client_config(&cfg);
    client.set("group.id", "bench-restore");
    // `--set key=value`: librdkafka settings to try on the restore consumer.
    let argv: Vec<String> = std::env::args().collect();
    for w in argv.windows(2).filter(|w| w[0] == "--set") {
        if let Some((k, v)) = w[1].split_once('=') {
            client.set(k, v);
        }
    }
    let stop = AtomicBool::new(false);
    let r = changelog::restore(
        client,
        &topic,
        0,
        0,
        &store,
        &cfg.kafka.input_topics,
        batch_records,
        Vec::new(),
        &stop,
        |_, _| {},
    )
    .expect("restore");
    println!("restore end to end (tansu changelog -> RocksDB, one partition)");
    println!(
        "  records            {} (produced in {produced:.1} s)",
        r.records
    );
    println!("  members            {}", r.members);
    println!("  seconds            {:.2}", r.seconds);
    println!("  members/s          {:.0}", members as f64 / r.seconds);
}

fn status_kib(field: &str) -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.trim().trim_end_matches(" kB").trim().parse().ok())
        .unwrap_or(0)
}

/// Resets VmHWM to the current RSS (Linux `clear_refs` mode 5).
fn reset_peak_rss() {
    let _ = std::fs::write("/proc/self/clear_refs", "5");
}
