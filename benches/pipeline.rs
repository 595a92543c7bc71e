//! End-to-end pipeline benchmark against a real broker (tansu, started here).
//!
//! ```text
//! cargo bench --bench pipeline -- [--events N] [--rate N] [--steady-secs S] [--no-changelog]
//!                                   [--threads T (engine threads; default one per core)]
//!                                   [--phase-timeout-secs S (default 600)]
//!                                   [--range (range assignment instead of cooperative-sticky)]
//!                                   [--rdkafka-debug CONTEXTS (librdkafka `debug`, e.g. fetch,cgrp)]
//!                                   [--session-timeout-ms MS (default 30000)]
//!                                   [--batch-wait-ms MS (pipeline.batch_max_wait_ms; default the config's)]
//!
//! With `RUST_LOG` set (e.g. `RUST_LOG=info,librdkafka=debug`) the
//! pipeline's and librdkafka's logs go to stderr.
//! ```
//!
//! 1. Produces N simulated events to a fresh input topic.
//! 2. Raw consume: a plain rdkafka consumer with the pipeline's settings
//!    reads all N; that rate is the ceiling.
//! 3. Catch-up: `churnwatch::pipeline::run` (the code `churnwatch run` runs)
//!    consumes the same N, from the first assignment until every event is
//!    in committed state and every alert acknowledged by the broker.
//!    Both phases also report the CPU time this process spent in them
//!    (tansu is another process), the catch-up's by thread: the work,
//!    where the broker bounds the rate.
//! 4. Steady: events produced at `--rate` per second for `--steady-secs`;
//!    reports p50/p99 of processing latency (first message of a batch
//!    polled → state committed) and event-to-alert latency (→ alert
//!    acknowledged by the broker), from the histograms' buckets.
//!
//! Every phase reports what it is doing as it starts and gives up, naming
//! the phase and how far it got, after `--phase-timeout-secs`: on a broker
//! that stops answering (tansu has: produce requests unanswered for over a
//! minute, a consumer group left forming around a leader that had gone;
//! docs/performance.md) the bench says so instead of waiting for ever.
//!
//! Needs the tansu binary (`bash scripts/ensure-tansu.sh`).

mod common;

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use churnwatch::config::Config;
use churnwatch::pipeline::{self, Control};
use churnwatch::simulate::{self, SimOptions};
use churnwatch::telemetry::Metrics;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::{ClientConfig, Offset, TopicPartitionList};

/// The value after `name` on the command line, if both are there.
fn arg_text(name: &str) -> Option<String> {
    std::env::args().skip_while(|a| a != name).nth(1)
}

fn arg(name: &str, default: u64) -> u64 {
    arg_text(name).map_or(default, |v| v.parse().expect("a number"))
}

fn flag(name: &str) -> bool {
    std::env::args().any(|a| a == name)
}

/// Cumulative bucket counts of a histogram: (upper bound, count).
fn buckets(metrics: &Metrics, name: &str) -> Vec<(f64, f64)> {
    metrics
        .registry
        .gather()
        .into_iter()
        .find(|f| f.name() == name)
        .and_then(|f| f.get_metric().first().map(|m| m.get_histogram().clone()))
        .map(|h| {
            h.get_bucket()
                .iter()
                .map(|b| (b.upper_bound(), b.cumulative_count() as f64))
                .collect()
        })
        .unwrap_or_default()
}

/// `q` quantile of the observations between two bucket snapshots,
/// interpolating linearly inside a bucket (as PromQL's histogram_quantile).
fn quantile(before: &[(f64, f64)], after: &[(f64, f64)], q: f64) -> Option<f64> {
    let counts: Vec<(f64, f64)> = after
        .iter()
        .enumerate()
        .map(|(i, (b, c))| (*b, c - before.get(i).map_or(0.0, |x| x.1)))
        .collect();
    let total = counts.last()?.1;
    if total == 0.0 {
        return None;
    }
    let rank = q * total;
    let (mut prev_bound, mut prev_count) = (0.0, 0.0);
    for (bound, count) in counts {
        if count >= rank {
            let within = if count > prev_count {
                (rank - prev_count) / (count - prev_count)
            } else {
                0.0
            };
            return Some(prev_bound + (bound - prev_bound) * within);
        }
        (prev_bound, prev_count) = (bound, count);
    }
    Some(prev_bound)
}

/// Gives up on a phase that has run past its timeout, saying how far it got.
fn gave_up(phase: &str, done: u64, want: u64, started: Instant) -> ! {
    panic!(
        "{phase}: {done} of {want} after {} s: the broker stopped delivering \
         (see docs/performance.md, pipeline bench on tansu)",
        started.elapsed().as_secs()
    )
}

/// Waits until `progress` reports `done >= want`, or gives up after
/// `timeout`.
fn wait_for(phase: &str, timeout: Duration, mut progress: impl FnMut() -> (u64, u64)) {
    let started = Instant::now();
    loop {
        let (done, want) = progress();
        if done >= want {
            return;
        }
        if started.elapsed() > timeout {
            gave_up(phase, done, want, started);
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

fn main() {
    let events_wanted = arg("--events", 500_000);
    let phase_timeout = Duration::from_secs(arg("--phase-timeout-secs", 600));
    let rate = arg("--rate", 10_000);
    let steady_secs = arg("--steady-secs", 20);

    if std::env::var_os("RUST_LOG").is_some() {
        tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
            .with_writer(std::io::stderr)
            .init();
    }
    let dir = tempfile::tempdir().unwrap();
    let broker = common::Broker::start();
    let addr = broker.addr.clone();

    let mut cfg = Config::default();
    cfg.kafka.brokers = addr.clone();
    cfg.kafka.input_topics = vec!["bench-events".into()];
    // tansu completes a join after about half the session timeout, so a
    // short one starts the bench sooner; but under a concurrent produce
    // load tansu has left heartbeats unanswered for over 10 s, which
    // revoked every partition and never gave them back (the 200,000-event
    // runs of 2026-12-04). 30 s by default.
    let session_ms = arg("--session-timeout-ms", 30_000);
    cfg.kafka
        .client
        .insert("session.timeout.ms".into(), session_ms.to_string());
    cfg.state.dir = dir.path().join("state");
    cfg.time.idle_advance = false;
    // The state changelog (on by default) costs a produce per changed member
    // per commit; `--no-changelog` measures the pipeline without it.
    cfg.pipeline.changelog = !flag("--no-changelog");
    cfg.engine.threads = arg("--threads", 0) as usize;
    cfg.pipeline.batch_max_wait_ms = arg("--batch-wait-ms", cfg.pipeline.batch_max_wait_ms);
    if flag("--rdkafka-debug") {
        let contexts = arg_text("--rdkafka-debug").expect("--rdkafka-debug CONTEXTS");
        cfg.kafka.client.insert("debug".into(), contexts);
    }
    if flag("--range") {
        cfg.kafka
            .client
            .insert("partition.assignment.strategy".into(), "range".into());
    }
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(pipeline::topics::ensure(&cfg))
        .map_err(|e| e.to_string())
        .unwrap();

    // 1. Produce.
    let per_member = 130;
    let members = (events_wanted as usize / per_member).max(1);
    let sim = |members, skip| {
        let mut ev = simulate::generate(&SimOptions {
            members,
            days: 180,
            end_ms: chrono::Utc::now().timestamp_millis(),
            seed: 7,
            bad_ratio: 0.0,
            duplicate_ratio: 0.0,
        });
        ev.retain(|e| e.member as usize >= skip);
        ev
    };
    let events = sim(members, 0);
    let n = events.len() as u64;
    eprintln!("pipeline bench: producing {n} events");
    let t = Instant::now();
    simulate::produce(&events, &addr, "bench-events", 0)
        .unwrap_or_else(|e| panic!("produce: {e} (the broker did not take the events)"));
    let produce_rate = n as f64 / t.elapsed().as_secs_f64();
    drop(events);

    // 2. Raw consume with the pipeline's client settings.
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", &addr)
        .set("group.id", "bench-raw")
        .set("enable.auto.commit", "false")
        .create()
        .unwrap();
    let mut tpl = TopicPartitionList::new();
    for p in 0..cfg.pipeline.topic_partitions {
        tpl.add_partition_offset("bench-events", p, Offset::Beginning)
            .unwrap();
    }
    consumer.assign(&tpl).unwrap();
    eprintln!("pipeline bench: raw consume");
    let mut got = 0u64;
    let t = Instant::now();
    let cpu_before = common::cpu_by_thread();
    while got < n {
        if let Some(Ok(_)) = consumer.poll(Duration::from_millis(100)) {
            got += 1;
        }
        if t.elapsed() > phase_timeout {
            gave_up("raw consume", got, n, t);
        }
    }
    let raw_rate = n as f64 / t.elapsed().as_secs_f64();
    let (raw_cpu, _) = common::cpu_spent(&cpu_before, &common::cpu_by_thread());
    drop(consumer);

    // 3. Catch-up through the pipeline.
    let metrics = Arc::new(Metrics::new());
    let control = Control::default();
    let handle = rt.handle().clone();
    let (m2, c2, cfg2) = (metrics.clone(), control.clone(), cfg.clone());
    let runner = std::thread::Builder::new()
        .name("driver".into())
        .spawn(move || pipeline::run(&cfg2, m2, c2, &handle))
        .unwrap();
    eprintln!("pipeline bench: catch-up through the pipeline");
    wait_for("joining the group", phase_timeout, || {
        (metrics.partitions_assigned.get().max(0) as u64, 1)
    });
    let t = Instant::now();
    let cpu_before = common::cpu_by_thread();
    let seen = |m: &Metrics| m.consumed_total() + m.rejected_total() + m.events_duplicate.get();
    // Every event in state, then every alert acknowledged (outbox empty).
    let done = |m: &Metrics, want: u64| {
        let s = seen(m);
        (
            if m.outbox_depth.get() > 0 {
                s.min(want - 1)
            } else {
                s
            },
            want,
        )
    };
    wait_for("catch-up", phase_timeout, || done(&metrics, n));
    let pipe_rate = n as f64 / t.elapsed().as_secs_f64();
    let (cpu_total, cpu_threads) = common::cpu_spent(&cpu_before, &common::cpu_by_thread());
    let changelog_catch_up = metrics.changelog_records.get();
    let commits_catch_up = metrics.processing_latency.get_sample_count();
    let alerts: u64 = metrics
        .registry
        .gather()
        .iter()
        .filter(|f| f.name() == "churnwatch_alerts_published_total")
        .flat_map(|f| {
            f.get_metric()
                .iter()
                .map(|m| m.get_counter().get_value() as u64)
                .collect::<Vec<_>>()
        })
        .sum();

    // 4. Steady rate: fresh members, so every event does real work.
    let fresh = sim(
        members + (rate * steady_secs) as usize / per_member + 1,
        members,
    );
    let fresh = &fresh[..fresh.len().min((rate * steady_secs) as usize)];
    const PROC: &str = "churnwatch_processing_latency_seconds";
    const ALERT: &str = "churnwatch_event_to_alert_latency_seconds";
    let (proc_before, alert_before) = (buckets(&metrics, PROC), buckets(&metrics, ALERT));
    let lat_metrics = metrics.clone();
    let p_before = lat_metrics.processing_latency.get_sample_count();
    eprintln!(
        "pipeline bench: steady phase, {} events at {rate}/s",
        fresh.len()
    );
    simulate::produce(fresh, &addr, "bench-events", rate)
        .unwrap_or_else(|e| panic!("steady produce: {e} (the broker did not take the events)"));
    let want = n + fresh.len() as u64;
    wait_for("steady phase", phase_timeout, || done(&metrics, want));
    std::thread::sleep(Duration::from_millis(500));
    control.shutdown.store(true, Ordering::Relaxed);
    runner.join().unwrap().unwrap();
    drop(broker);

    println!("churnwatch pipeline benchmark (tansu on this machine, rdkafka)");
    println!(
        "  events                       {n} ({members} members, {} alerts)",
        alerts
    );
    println!(
        "  engine threads               {}",
        cfg.engine.thread_count()
    );
    println!(
        "  batch_max_wait_ms            {}",
        cfg.pipeline.batch_max_wait_ms
    );
    println!(
        "  assignment                   {}",
        cfg.kafka
            .client
            .get("partition.assignment.strategy")
            .map_or("cooperative-sticky", String::as_str)
    );
    println!("  produce (simulate --brokers) {produce_rate:.0} events/s");
    println!(
        "  raw consume                  {raw_rate:.0} events/s, CPU {raw_cpu:.2} s = {:.1} us/event",
        raw_cpu * 1e6 / n as f64
    );
    println!(
        "  pipeline catch-up            {pipe_rate:.0} events/s = {:.2} of raw consume",
        pipe_rate / raw_rate
    );
    println!(
        "  catch-up commits, changelog  {commits_catch_up} batches, {changelog_catch_up} changelog records"
    );
    // The work, not the broker-bound wall time: CPU of this process (tansu
    // is another) while it caught up, by thread.
    let threads: Vec<String> = cpu_threads
        .iter()
        .take(5)
        .map(|(name, s)| format!("{name} {s:.2}"))
        .collect();
    println!(
        "  catch-up CPU (this process)  {cpu_total:.2} s = {:.1} us/event ({})",
        cpu_total * 1e6 / n as f64,
        threads.join(", ")
    );
    println!(
        "  steady phase                 {} events at {rate}/s ({} batches)",
        fresh.len(),
        lat_metrics.processing_latency.get_sample_count() - p_before
    );
    let (proc_after, alert_after) = (buckets(&metrics, PROC), buckets(&metrics, ALERT));
    let ms = |b: &[(f64, f64)], a: &[(f64, f64)], q| {
        quantile(b, a, q).map_or("n/a".into(), |s| format!("{:.1} ms", s * 1000.0))
    };
    println!(
        "  processing latency (steady)  p50 {}  p99 {}",
        ms(&proc_before, &proc_after, 0.5),
        ms(&proc_before, &proc_after, 0.99)
    );
    println!(
        "  event-to-alert (steady)      p50 {}  p99 {}",
        ms(&alert_before, &alert_after, 0.5),
        ms(&alert_before, &alert_after, 0.99)
    );
}
