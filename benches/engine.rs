//! Engine benchmark: a generated stream with at least a million distinct
//! members through the real engine and the real RocksDB store.
//!
//! ```text
//! cargo bench --bench engine -- [--members N] [--events N] [--dist uniform|zipf] [--zipf-s S]
//!     [--threads T] [--member-cache-mb N] [--batch N] [--cache-mb N] [--dir PATH]
//!     [--p-alive-below P] [--model pareto_nbd|mbgnbd|bgnbd] [--no-risk] [--no-prefetch] [--sync-commits]
//!     [--group] [--write FILE]
//! ```
//!
//! Reports parse-only throughput, end-to-end engine throughput (parse,
//! dedup, state, detect, alert encode, one RocksDB write batch per input
//! batch), encoded bytes per member, on-disk bytes per member and peak RSS.
//! Event generation happens outside the timed sections.
//!
//! `--threads T` splits the members over T partitions, one engine thread
//! each (one shared RocksDB, as `replay --partitions T --threads T`), and
//! reports the aggregate rate. `--member-cache-mb N` is each thread's
//! member cache (the config's `engine.member_cache_mb`, the budget of all
//! threads together, is set to N × T). `--write FILE` writes the stream as NDJSON
//! instead (one partition's order), for `churnwatch replay` and the floor
//! program (`benches/floor.rs`) to be measured on the same file.
//!
//! Commits write behind, as `replay`'s do (the store write on a thread of
//! its own, see `Engine::write_behind`); `--sync-commits` writes on the
//! engine thread, as `run`'s do. The engine time is wall time on the engine
//! thread, waits for a write in flight included.
//!
//! `--group` drives the engines as `run` does instead: one `EngineGroup` of
//! T engines over T partitions, each batch holding every partition's events
//! interleaved, processed on the engines' threads and committed as one
//! store write, written behind as `run`'s are (`--sync-commits`: by the
//! calling thread); no Kafka, no outbox.

use std::io::Write;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rand::{Rng, SeedableRng};
use rand_distr::{Distribution, Zipf};

use churnwatch::config::Config;
use churnwatch::engine::{Engine, EngineGroup, Input, Outcome};
use churnwatch::event::{Validator, DAY_MS};
use churnwatch::state::{Batch, RocksStore, RocksTuning, Store, Table};
use churnwatch::telemetry::Metrics;

const USAGE: &str = "usage: cargo bench --bench engine -- [--members N] [--events N] \
[--dist uniform|zipf] [--zipf-s S] [--threads T] [--member-cache-mb N] [--batch N] [--cache-mb N] \
[--dir PATH] [--p-alive-below P] [--model pareto_nbd|mbgnbd|bgnbd] [--no-risk] [--no-prefetch] \
[--sync-commits] [--group] [--write FILE]";

struct Args {
    members: u64,
    events: u64,
    batch: usize,
    dir: Option<String>,
    cache_mb: Option<usize>,
    member_cache_mb: Option<usize>,
    p_alive_below: Option<f64>,
    model: Option<String>,
    no_risk: bool,
    zipf_s: Option<f64>,
    threads: usize,
    write: Option<String>,
    no_prefetch: bool,
    sync_commits: bool,
    group: bool,
}

fn args() -> Args {
    let mut a = Args {
        members: 1_000_000,
        events: 12_000_000,
        batch: 5_000,
        dir: None,
        cache_mb: None,
        member_cache_mb: None,
        p_alive_below: None,
        model: None,
        no_risk: false,
        zipf_s: None,
        threads: 1,
        write: None,
        no_prefetch: false,
        sync_commits: false,
        group: false,
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
            "--member-cache-mb" => {
                a.member_cache_mb = Some(v.parse().expect("--member-cache-mb N"))
            }
            "--p-alive-below" => a.p_alive_below = Some(v.parse().expect("--p-alive-below P")),
            // Each model takes its published CDNOW fit (r, alpha and its own pair).
            "--model" => a.model = Some(v),
            "--dist" => {
                a.zipf_s = match v.as_str() {
                    "uniform" => None,
                    "zipf" => Some(a.zipf_s.unwrap_or(0.7)),
                    other => panic!("--dist uniform|zipf, not {other}"),
                }
            }
            "--zipf-s" => a.zipf_s = Some(v.parse().expect("--zipf-s S")),
            "--threads" => a.threads = v.parse().expect("--threads T"),
            "--write" => a.write = Some(v),
            "--no-risk" => {
                a.no_risk = true;
                i += 1;
                continue;
            }
            "--no-prefetch" => {
                a.no_prefetch = true;
                i += 1;
                continue;
            }
            "--sync-commits" => {
                a.sync_commits = true;
                i += 1;
                continue;
            }
            "--group" => {
                a.group = true;
                i += 1;
                continue;
            }
            "--help" | "-h" => {
                eprintln!("{USAGE}");
                std::process::exit(0);
            }
            // `cargo bench` passes `--bench`; anything else unknown is skipped too.
            _ => {
                i += 1;
                continue;
            }
        }
        i += 2;
    }
    a.threads = a.threads.max(1);
    a
}

/// The shape of one engine thread's stream: members `t, t + T, t + 2T, …`
/// of `members` (T threads), `total` events over `span` from `t0`.
#[derive(Clone, Copy)]
struct Stream {
    members: u64,
    total: u64,
    t0: i64,
    span: i64,
    thread: u64,
    threads: u64,
    zipf_s: Option<f64>,
}

/// Draws the stream's members: every member once first, then uniformly
/// or by a Zipf law over a fixed random ranking (hot members are spread
/// over the key space, not clustered at its start).
struct Gen {
    rng: rand_chacha::ChaCha8Rng,
    zipf: Option<Zipf<f64>>,
    own: u64,
}

impl Gen {
    fn new(st: &Stream) -> Self {
        let own = st.members.div_ceil(st.threads).max(1);
        Gen {
            rng: rand_chacha::ChaCha8Rng::seed_from_u64(0xbeef + st.thread),
            zipf: st.zipf_s.map(|s| Zipf::new(own as f64, s).expect("zipf")),
            own,
        }
    }

    fn member(&mut self, i: u64, st: &Stream) -> u64 {
        let k = if i < self.own {
            i
        } else {
            match &self.zipf {
                Some(z) => (z.sample(&mut self.rng) as u64 - 1).min(self.own - 1),
                None => self.rng.random_range(0..self.own),
            }
        };
        // A fixed permutation of this thread's members.
        let k = (k.wrapping_mul(2_654_435_761)) % self.own;
        k * st.threads + st.thread
    }
}

/// Fills `buf` with `n` NDJSON events starting at event number `first`,
/// returning the line boundaries. Mix: visits and email dominate, purchases
/// are rarer: visit 40%, email_send 25%, email_open 15%, check_in 12%,
/// purchase 8%.
fn fill(buf: &mut Vec<u8>, ends: &mut Vec<usize>, g: &mut Gen, first: u64, n: u64, st: &Stream) {
    buf.clear();
    ends.clear();
    for i in first..first + n {
        let member = g.member(i, st);
        let ts = st.t0 + (st.span as i128 * i as i128 / st.total as i128) as i64;
        let r = g.rng.random_range(0..100u32);
        let (kind, amount) = match r {
            0..=39 => ("visit", None),
            40..=64 => ("email_send", None),
            65..=79 => ("email_open", None),
            80..=91 => ("check_in", None),
            _ => ("purchase", Some(10 + g.rng.random_range(0..150u32))),
        };
        let _ = write!(
            buf,
            "{{\"event_id\":\"e{}-{i}\",\"member_id\":\"m{member:07}\",\"type\":\"{kind}\",\"ts\":{ts}",
            st.thread
        );
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

/// What one engine thread did.
struct ThreadRun {
    events: u64,
    accepted: u64,
    alerts: u64,
    /// Events given again after a commit (`Outcome::Deferred`).
    deferred: u64,
    /// Timers pending at the end (one per member with a timer).
    timers: usize,
    timers_in_memory: usize,
    engine: Duration,
    commits: Duration,
}

impl ThreadRun {
    /// A run of `events` events, nothing done yet.
    fn of(events: u64) -> Self {
        ThreadRun {
            events,
            accepted: 0,
            alerts: 0,
            deferred: 0,
            timers: 0,
            timers_in_memory: 0,
            engine: Duration::ZERO,
            commits: Duration::ZERO,
        }
    }
}

/// One engine thread: its partition's events, generated batch by batch
/// outside the timed sections, through its own engine on the shared store.
fn run_thread(
    st: Stream,
    a: &Args,
    store: Arc<RocksStore>,
    cfg: &Config,
    wall: i64,
    report: bool,
) -> ThreadRun {
    let (batch, prefetch, sync_commits) = (a.batch, !a.no_prefetch, a.sync_commits);
    let threads = st.threads as usize;
    let engine_cfg = cfg.engine().cache_share(threads);
    let mut engine = Engine::new(store, engine_cfg, Arc::new(Metrics::new())).expect("engine");
    let p = st.thread as u32;
    engine.assign(p).expect("assign");
    if !sync_commits {
        engine.write_behind();
    }
    let mut g = Gen::new(&st);
    let mut buf = Vec::with_capacity(batch * 160);
    let mut ends = Vec::with_capacity(batch);
    let mut run = ThreadRun::of(st.total);
    let mut alert_json = Vec::with_capacity(1 << 16);
    let mut i = 0;
    let mut next_report = 1_000_000;
    while i < st.total {
        let n = (batch as u64).min(st.total - i);
        fill(&mut buf, &mut ends, &mut g, i, n, &st);
        let start = Instant::now();
        // As `run` does: the batch parsed, its members and due timers read
        // ahead in one store read, then every event in order.
        let mut from = 0;
        let lines: Vec<&[u8]> = ends
            .iter()
            .map(|&end| {
                let line = &buf[from..end];
                from = end;
                line
            })
            .collect();
        let validator = &engine.config().validator;
        let parsed: Vec<_> = lines.iter().map(|l| validator.parse(l, wall)).collect();
        if prefetch {
            let mut plan = engine.read_ahead_plan();
            for e in parsed.iter().flatten() {
                plan.add(p, &e.member_id, e.ts_ms);
            }
            engine.read_ahead(plan).expect("read ahead");
        }
        // As `run` and `replay` do: each event's member asked for from
        // memory a few events ahead.
        let mut parsed: Vec<_> = parsed.into_iter().map(Some).collect();
        for (k, line) in lines.iter().enumerate() {
            let event = parsed[k].take().expect("each event once");
            engine.prefetch_ahead(|d| {
                let e = parsed.get(k + d)?.as_ref()?.as_ref().ok()?;
                Some((p, &*e.member_id))
            });
            let mut outcome = engine.process_parsed(p, event).expect("process");
            // More timers came due than may fire before a commit: commit,
            // then the same event again, as `run` and `replay` do.
            while outcome == Outcome::Deferred {
                let c = Instant::now();
                engine.commit(Batch::default()).expect("commit");
                run.commits += c.elapsed();
                run.deferred += 1;
                outcome = engine.process(p, line, wall).expect("process");
            }
            if outcome == Outcome::Accepted {
                run.accepted += 1;
            }
        }
        alert_json.clear();
        for raised in engine.take_alerts() {
            raised.alert.write_json(&mut alert_json, wall);
            run.alerts += 1;
        }
        let c = Instant::now();
        engine.commit(Batch::default()).expect("commit");
        run.commits += c.elapsed();
        run.engine += start.elapsed();
        i += n;
        if report && i >= next_report {
            let stats = engine.store().stats();
            eprintln!(
                "  {i} events, {:.0} events/s so far on this thread (rss {:.0} MiB, timers in memory {}, memtables {} MiB, block cache {} MiB)",
                i as f64 / run.engine.as_secs_f64(),
                peak_rss_mb(),
                engine.timers_in_memory(),
                stats.memtable_bytes >> 20,
                stats.block_cache_usage_bytes >> 20,
            );
            next_report += 1_000_000;
        }
    }
    // The last write landed, counted as engine time.
    let c = Instant::now();
    engine.flush().expect("flush");
    run.commits += c.elapsed();
    run.engine += c.elapsed();
    run.timers = engine.timers_pending();
    run.timers_in_memory = engine.timers_in_memory();
    run
}

/// Every partition's stream through one [`EngineGroup`], as `run` drives
/// it: batches of `--batch` events, a share of each partition's interleaved,
/// processed on the engines' threads (messages an engine deferred given
/// again after a commit), then one commit of every engine's
/// changes.
fn run_group(
    streams: Vec<Stream>,
    a: &Args,
    store: Arc<RocksStore>,
    cfg: &Config,
    wall: i64,
) -> ThreadRun {
    let threads = streams.len();
    let mut group = EngineGroup::new(store, cfg.engine(), Arc::new(Metrics::new()), threads)
        .expect("engine group");
    for st in &streams {
        group.assign(st.thread as u32).expect("assign");
    }
    if !a.sync_commits {
        group.write_behind();
    }
    let mut gens: Vec<Gen> = streams.iter().map(Gen::new).collect();
    let share = (a.batch / threads).max(1) as u64;
    let total = streams[0].total;
    let mut bufs: Vec<(Vec<u8>, Vec<usize>)> = (0..threads)
        .map(|_| (Vec::with_capacity(a.batch * 160), Vec::new()))
        .collect();
    let mut run = ThreadRun::of(total * threads as u64);
    let mut alert_json = Vec::with_capacity(1 << 16);
    let mut i = 0;
    while i < total {
        let n = share.min(total - i);
        for ((buf, ends), (g, st)) in bufs.iter_mut().zip(gens.iter_mut().zip(&streams)) {
            fill(buf, ends, g, i, n, st);
        }
        // Round robin over the partitions, as a consumer fetching from all
        // of them delivers.
        let mut lines: Vec<Input<'_>> = Vec::with_capacity(n as usize * threads);
        for k in 0..n as usize {
            for (t, (buf, ends)) in bufs.iter().enumerate() {
                let from = if k == 0 { 0 } else { ends[k - 1] };
                lines.push(Input {
                    partition: t as u32,
                    payload: &buf[from..ends[k]],
                });
            }
        }
        let start = Instant::now();
        let mut pending = lines;
        loop {
            let outcomes = group.process_batch(&pending, wall).expect("process");
            let mut left = Vec::new();
            for (input, outcome) in pending.iter().zip(outcomes) {
                match outcome {
                    Some(Outcome::Accepted) => run.accepted += 1,
                    Some(_) => {}
                    None => left.push(*input),
                }
            }
            if left.is_empty() {
                break;
            }
            // An engine stopped for its timers: commit, then its rest.
            run.deferred += 1;
            let c = Instant::now();
            group.commit(Batch::default()).expect("commit");
            run.commits += c.elapsed();
            pending = left;
        }
        alert_json.clear();
        for raised in group.take_alerts() {
            raised.alert.write_json(&mut alert_json, wall);
            run.alerts += 1;
        }
        let c = Instant::now();
        group.commit(Batch::default()).expect("commit");
        run.commits += c.elapsed();
        run.engine += start.elapsed();
        i += n;
    }
    let c = Instant::now();
    group.flush().expect("flush");
    run.commits += c.elapsed();
    run.engine += c.elapsed();
    run.timers = group.timers_pending();
    run
}

fn main() {
    let a = args();
    let mut cfg = Config::default();
    if let Some(mb) = a.cache_mb {
        cfg.state.block_cache_mb = mb;
    }
    if let Some(mb) = a.member_cache_mb {
        cfg.engine.member_cache_mb = mb * a.threads;
    }
    if let Some(p) = a.p_alive_below {
        cfg.detect.purchase_gap.p_alive_below = p;
    }
    cfg.risk.enabled = !a.no_risk;
    if let Some(model) = &a.model {
        let p = match model.as_str() {
            "mbgnbd" => churnwatch::risk::bgnbd::ModelParams::CDNOW_MBGNBD,
            "bgnbd" => churnwatch::risk::bgnbd::ModelParams::CDNOW_BGNBD,
            "pareto_nbd" => churnwatch::risk::bgnbd::ModelParams::CDNOW_PARETO_NBD,
            other => panic!("--model pareto_nbd|mbgnbd|bgnbd, not {other}"),
        };
        cfg.risk.model = model.clone();
        (cfg.risk.r, cfg.risk.alpha) = (p.r, p.alpha);
        if model == "pareto_nbd" {
            (cfg.risk.s, cfg.risk.beta) = (p.a, p.b);
        } else {
            (cfg.risk.a, cfg.risk.b) = (p.a, p.b);
        }
    }
    let t0 = 1_767_225_600_000i64; // 2026-01-01
    let span = 120 * DAY_MS;
    let wall = t0 + span + DAY_MS;
    let stream = |thread: u64, threads: u64| Stream {
        members: a.members,
        total: a.events / threads,
        t0,
        span,
        thread,
        threads,
        zipf_s: a.zipf_s,
    };

    if let Some(path) = &a.write {
        let st = stream(0, 1);
        let mut g = Gen::new(&st);
        let mut out = std::io::BufWriter::new(std::fs::File::create(path).expect("create"));
        let (mut buf, mut ends) = (Vec::new(), Vec::new());
        let mut i = 0;
        while i < st.total {
            let n = (a.batch as u64).min(st.total - i);
            fill(&mut buf, &mut ends, &mut g, i, n, &st);
            let mut from = 0;
            for &end in &ends {
                out.write_all(&buf[from..end]).unwrap();
                out.write_all(b"\n").unwrap();
                from = end;
            }
            i += n;
        }
        out.flush().unwrap();
        println!(
            "wrote {} events for {} members to {path}",
            st.total, a.members
        );
        return;
    }

    // 1. Parse and validate only.
    let v = Validator::default();
    let (mut buf, mut ends) = (
        Vec::with_capacity(a.batch * 160),
        Vec::with_capacity(a.batch),
    );
    let parse_stream = stream(0, 1);
    let mut g = Gen::new(&parse_stream);
    let mut parse_time = Duration::ZERO;
    let parse_events = a.events.min(2_000_000);
    let mut i = 0;
    while i < parse_events {
        let n = (a.batch as u64).min(parse_events - i);
        fill(&mut buf, &mut ends, &mut g, i, n, &parse_stream);
        let start = Instant::now();
        let mut from = 0;
        for &end in &ends {
            std::hint::black_box(v.parse(&buf[from..end], wall).is_ok());
            from = end;
        }
        parse_time += start.elapsed();
        i += n;
    }

    // 2. End to end through the engines and one shared RocksDB.
    let tmp = tempfile::tempdir().expect("temp dir");
    let dir = a
        .dir
        .clone()
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| tmp.path().join("state"));
    let tuning = RocksTuning {
        block_cache_bytes: cfg.state.block_cache_mb << 20,
        write_buffer_bytes: cfg.state.write_buffer_mb << 20,
        // As `run` keeps it: a log, not fsynced.
        sync_wal: false,
        wal: true,
    };
    let store = Arc::new(RocksStore::open(&dir, &tuning).expect("open RocksDB"));
    let threads = a.threads as u64;
    let runs: Vec<ThreadRun> = if a.group {
        let streams = (0..threads).map(|t| stream(t, threads)).collect();
        vec![run_group(streams, &a, store.clone(), &cfg, wall)]
    } else {
        std::thread::scope(|scope| {
            let handles: Vec<_> = (0..threads)
                .map(|t| {
                    let (store, cfg, a) = (store.clone(), &cfg, &a);
                    let st = stream(t, threads);
                    scope.spawn(move || run_thread(st, a, store, cfg, wall, t == 0))
                })
                .collect();
            handles
                .into_iter()
                .map(|h| h.join().expect("engine thread"))
                .collect()
        })
    };
    let events: u64 = runs.iter().map(|r| r.events).sum();
    let accepted: u64 = runs.iter().map(|r| r.accepted).sum();
    let alerts: u64 = runs.iter().map(|r| r.alerts).sum();
    let deferred: u64 = runs.iter().map(|r| r.deferred).sum();
    let timers: usize = runs.iter().map(|r| r.timers).sum();
    let in_memory: usize = runs.iter().map(|r| r.timers_in_memory).sum();
    let slowest = runs.iter().map(|r| r.engine).max().unwrap_or_default();
    let commits = runs.iter().map(|r| r.commits).max().unwrap_or_default();

    // Read before the footprint's scan, flush and full compaction, which
    // take memory of their own (at 5M members they raised the peak by
    // ~80 MiB): this is what the engine needs to run.
    let run_peak_rss = peak_rss_mb();

    // 3. Footprint.
    let mut members = 0u64;
    let mut encoded = 0u64;
    for t in 0..threads as u32 {
        let mut from = t.to_be_bytes().to_vec();
        let end = (t + 1).to_be_bytes().to_vec();
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
    }
    store.flush().expect("flush");
    store.compact();
    let stats = store.stats();
    let eps = events as f64 / slowest.as_secs_f64();
    println!("churnwatch engine benchmark");
    println!("  events                 {events}");
    println!("  distinct members       {members}");
    println!(
        "  activity               {}",
        match a.zipf_s {
            Some(s) => format!("Zipf, exponent {s}"),
            None => "uniform".to_string(),
        }
    );
    println!(
        "  engine threads         {threads} (one partition each{})",
        if a.group {
            ", one EngineGroup driven as `run` drives it (--group)"
        } else {
            ""
        }
    );
    println!(
        "  batch                  {} events per RocksDB write batch",
        a.batch
    );
    println!(
        "  parse only             {:.0} events/s",
        parse_events as f64 / parse_time.as_secs_f64()
    );
    println!(
        "  engine end to end      {eps:.0} events/s ({:.2} s on the slowest thread, of which commits {:.2} s)",
        slowest.as_secs_f64(),
        commits.as_secs_f64()
    );
    println!(
        "  commits                {}",
        if a.group && a.sync_commits {
            "one write of every engine's changes per batch, by the driving thread (--sync-commits)"
        } else if a.group {
            "one write of every engine's changes per batch, written behind"
        } else if a.sync_commits {
            "written on the engine thread (--sync-commits)"
        } else {
            "written behind (the store write on a thread of its own)"
        }
    );
    println!("  accepted / alerts      {accepted} / {alerts}");
    println!("  deferred (extra commits) {deferred}");
    println!("  timers pending at end  {timers} ({in_memory} of them in memory)");
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
        "  member cache           {} MiB per engine thread",
        cfg.engine.member_cache_mb / a.threads
    );
    println!(
        "  block cache / memtable budget {} MiB / {} MiB",
        cfg.state.block_cache_mb, cfg.state.write_buffer_mb
    );
    println!("  peak RSS               {run_peak_rss:.0} MiB while running, {:.0} MiB with the footprint's compaction", peak_rss_mb());
}
