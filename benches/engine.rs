//! Engine benchmark: a generated stream with at least a million distinct
//! members through the real engine and the real RocksDB store, on one thread.
//!
//! ```text
//! cargo bench --bench engine -- [--members N] [--events N] [--batch N] [--cache-mb N] [--dir PATH]
//!     [--p-alive-below P] [--no-risk]
//! ```
//!
//! Reports parse-only throughput, end-to-end engine throughput (parse,
//! dedup, state, detect, alert encode, one RocksDB write batch per input
//! batch), encoded bytes per member, on-disk bytes per member and peak RSS.
//! Event generation happens outside the timed sections.

use std::io::Write;
use std::sync::Arc;
use std::time::{Duration, Instant};

use churnwatch::config::Config;
use churnwatch::engine::{Engine, Outcome};
use churnwatch::event::{Validator, DAY_MS};
use churnwatch::state::{Batch, RocksStore, RocksTuning, Store, Table};
use churnwatch::telemetry::Metrics;

struct Args {
    members: u64,
    events: u64,
    batch: usize,
    dir: Option<String>,
    cache_mb: Option<usize>,
    p_alive_below: Option<f64>,
    no_risk: bool,
}

fn args() -> Args {
    let mut a = Args {
        members: 1_000_000,
        events: 12_000_000,
        batch: 5_000,
        dir: None,
        cache_mb: None,
        p_alive_below: None,
        no_risk: false,
    };
    let argv: Vec<String> = std::env::args().collect();
    let mut i = 1;
    while i < argv.len() {
        let v = argv.get(i + 1).cloned().unwrap_or_default();
        match argv[i].as_str() {
            "--members" => a.members = v.parse().expect("--members N"),
            "--events" => a.events = v.parse().expect("--events N"),
            "--batch" => a.batch = v.parse().expect("--batch N"),
            "--dir" => a.dir = Some(v),
            "--cache-mb" => a.cache_mb = Some(v.parse().expect("--cache-mb N")),
            "--p-alive-below" => a.p_alive_below = Some(v.parse().expect("--p-alive-below P")),
            "--no-risk" => {
                a.no_risk = true;
                i += 1;
                continue;
            }
            _ => {
                i += 1;
                continue;
            }
        }
        i += 2;
    }
    a
}

/// A cheap deterministic generator (xorshift) so generation stays out of the way.
struct Gen(u64);

impl Gen {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

/// Fills `buf` with `n` NDJSON events starting at event number `first`,
/// returning the line boundaries. Mix: visits and email dominate, purchases
/// are rarer: visit 40%, email_send 25%, email_open 15%, check_in 12%,
/// purchase 8%. Members are spread so every one appears (about 12 events each).
/// The shape of the generated stream.
#[derive(Clone, Copy)]
struct Stream {
    members: u64,
    total: u64,
    t0: i64,
    span: i64,
}

fn fill(buf: &mut Vec<u8>, ends: &mut Vec<usize>, g: &mut Gen, first: u64, n: u64, st: &Stream) {
    let Stream {
        members,
        total,
        t0,
        span,
    } = *st;
    buf.clear();
    ends.clear();
    for i in first..first + n {
        // The first `members` events introduce every member once; after
        // that members are drawn at random.
        let member = if i < members {
            (i * 2_654_435_761) % members
        } else {
            g.next() % members
        };
        let ts = t0 + (span as i128 * i as i128 / total as i128) as i64;
        let r = g.next() % 100;
        let (kind, amount) = match r {
            0..=39 => ("visit", None),
            40..=64 => ("email_send", None),
            65..=79 => ("email_open", None),
            80..=91 => ("check_in", None),
            _ => ("purchase", Some(10 + g.next() % 150)),
        };
        let _ = write!(buf, "{{\"event_id\":\"e{i}\",\"member_id\":\"m{member:07}\",\"type\":\"{kind}\",\"ts\":{ts}");
        if let Some(a) = amount {
            let _ = write!(buf, ",\"amount\":{a}.5,\"currency\":\"EUR\"");
        }
        buf.extend_from_slice(b",\"channel\":\"app\"}");
        ends.push(buf.len());
    }
}

fn peak_rss_mb() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines().find(|l| l.starts_with("VmHWM:")).and_then(|l| {
                l.split_whitespace()
                    .nth(1)
                    .and_then(|v| v.parse::<f64>().ok())
            })
        })
        .map_or(0.0, |kb| kb / 1024.0)
}

fn main() {
    let a = args();
    let mut cfg = Config::default();
    if let Some(mb) = a.cache_mb {
        cfg.state.block_cache_mb = mb;
    }
    if let Some(p) = a.p_alive_below {
        cfg.detect.purchase_gap.p_alive_below = p;
    }
    cfg.risk.enabled = !a.no_risk;
    let t0 = 1_767_225_600_000i64; // 2026-01-01
    let span = 120 * DAY_MS;
    let wall = t0 + span + DAY_MS;
    let stream = Stream {
        members: a.members,
        total: a.events,
        t0,
        span,
    };
    let mut buf = Vec::with_capacity(a.batch * 160);
    let mut ends = Vec::with_capacity(a.batch);

    // 1. Parse and validate only.
    let v = Validator::default();
    let mut g = Gen(0x5eed);
    let mut parse_time = Duration::ZERO;
    let parse_events = a.events.min(2_000_000);
    let mut i = 0;
    while i < parse_events {
        let n = (a.batch as u64).min(parse_events - i);
        fill(&mut buf, &mut ends, &mut g, i, n, &stream);
        let start = Instant::now();
        let mut from = 0;
        for &end in &ends {
            std::hint::black_box(v.parse(&buf[from..end], wall).is_ok());
            from = end;
        }
        parse_time += start.elapsed();
        i += n;
    }

    // 2. End to end through the engine and RocksDB.
    let tmp = tempfile::tempdir().expect("temp dir");
    let dir = a
        .dir
        .clone()
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| tmp.path().join("state"));
    let tuning = RocksTuning {
        block_cache_bytes: cfg.state.block_cache_mb << 20,
        write_buffer_bytes: cfg.state.write_buffer_mb << 20,
        sync_wal: false,
    };
    let store = RocksStore::open(&dir, &tuning).expect("open RocksDB");
    let mut engine = Engine::new(store, cfg.engine(), Arc::new(Metrics::new())).expect("engine");
    engine.assign(0).expect("assign");
    let mut g = Gen(0xbeef);
    let mut engine_time = Duration::ZERO;
    let mut commit_time = Duration::ZERO;
    let mut alerts = 0u64;
    let mut accepted = 0u64;
    let mut alert_json = Vec::with_capacity(1 << 16);
    let mut i = 0;
    let mut next_report = 250_000;
    while i < a.events {
        let n = (a.batch as u64).min(a.events - i);
        fill(&mut buf, &mut ends, &mut g, i, n, &stream);
        let start = Instant::now();
        let mut from = 0;
        for &end in &ends {
            if engine.process(0, &buf[from..end], wall).expect("process") == Outcome::Accepted {
                accepted += 1;
            }
            from = end;
        }
        alert_json.clear();
        for raised in engine.take_alerts() {
            raised.alert.write_json(&mut alert_json, wall);
            alerts += 1;
        }
        let c = Instant::now();
        engine.commit(Batch::default()).expect("commit");
        commit_time += c.elapsed();
        engine_time += start.elapsed();
        i += n;
        if i >= next_report {
            let st = engine.store().stats();
            eprintln!(
                "  {i} events, {:.0} events/s so far (rss {:.0} MiB, memtables {} MiB, cache {} MiB, pending compaction {} MiB)",
                i as f64 / engine_time.as_secs_f64(),
                peak_rss_mb(),
                st.memtable_bytes >> 20,
                st.block_cache_usage_bytes >> 20,
                st.pending_compaction_bytes >> 20
            );
            next_report += 250_000;
        }
    }

    // 3. Footprint.
    let store = engine.store();
    let mut members = 0u64;
    let mut encoded = 0u64;
    let mut from = vec![0u8; 4];
    let end = vec![0u8, 0, 0, 1];
    loop {
        let chunk = store
            .scan(Table::Members, &from, &end, 100_000)
            .expect("scan");
        let Some((last, _)) = chunk.last() else { break };
        members += chunk.len() as u64;
        encoded += chunk
            .iter()
            .map(|(k, v)| (k.len() + v.len()) as u64)
            .sum::<u64>();
        from = last.clone();
        from.push(0);
    }
    store.flush().expect("flush");
    store.compact();
    let stats = store.stats();
    let eps = a.events as f64 / engine_time.as_secs_f64();
    println!("churnwatch engine benchmark");
    println!("  events                 {}", a.events);
    println!("  distinct members       {members}");
    println!(
        "  batch                  {} events per RocksDB write batch",
        a.batch
    );
    println!(
        "  parse only             {:.0} events/s",
        parse_events as f64 / parse_time.as_secs_f64()
    );
    println!(
        "  engine end to end      {eps:.0} events/s ({:.2} s, of which commits {:.2} s)",
        engine_time.as_secs_f64(),
        commit_time.as_secs_f64()
    );
    println!("  accepted / alerts      {accepted} / {alerts}");
    println!(
        "  purchase model         {} (p_alive_below {})",
        if cfg.risk.enabled {
            cfg.risk.model.as_str()
        } else {
            "off"
        },
        cfg.detect.purchase_gap.p_alive_below
    );
    println!(
        "  encoded state          {:.0} bytes/member (key + value)",
        encoded as f64 / members.max(1) as f64
    );
    println!(
        "  on disk (lz4, SST)     {:.0} bytes/member",
        stats.live_sst_bytes as f64 / members.max(1) as f64
    );
    println!(
        "  block cache / memtable budget {} MiB / {} MiB",
        cfg.state.block_cache_mb, cfg.state.write_buffer_mb
    );
    println!("  peak RSS               {:.0} MiB", peak_rss_mb());
}
