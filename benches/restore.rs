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

use std::sync::Arc;
use std::time::Instant;

use churnwatch::config::Config;
use churnwatch::engine::Engine;
use churnwatch::event::DAY_MS;
use churnwatch::pipeline::changelog::{member_value, PartitionMark, Restorer, MARKER_KEY};
use churnwatch::state::{Batch, MemberState, MemoryStore, RocksStore, RocksTuning, Store, Table};
use churnwatch::telemetry::Metrics;

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
