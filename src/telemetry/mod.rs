//! Telemetry: every metric churnwatch exports, in one place.
//!
//! Business code does not touch counters directly: it emits the small event
//! types of [`events`], each of which logs (where useful) and counts, as
//! vector's `internal_events` do. Label values come from closed sets (event
//! types, reject reasons, signals, severities, partitions), never member ids,
//! so every label set is bounded. Hot-path counters are resolved once here so
//! an event costs an atomic add, not a label lookup.

pub mod events;
pub mod http;
pub mod logging;

use prometheus::{
    Encoder, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge,
    IntGaugeVec, Opts, Registry, TextEncoder,
};

use crate::detect::{Severity, Signal};
use crate::event::{EventKind, RejectReason};

pub struct Metrics {
    pub registry: Registry,
    events_consumed: Vec<IntCounter>,
    events_rejected: Vec<IntCounter>,
    pub events_duplicate: IntCounter,
    alerts_published: IntCounterVec,
    alerted_members: IntCounterVec,
    reactivations: IntCounterVec,
    pub processing_latency: Histogram,
    pub event_to_alert_latency: Histogram,
    pub consumer_lag: IntGaugeVec,
    pub partition_owned: IntGaugeVec,
    pub stream_clock_seconds: IntGaugeVec,
    pub stream_clock_lag_seconds: IntGaugeVec,
    pub timers_pending: IntGauge,
    member_cache_members: IntGaugeVec,
    pub member_cache_bytes: IntGauge,
    pub timers_fired: IntCounter,
    pub outbox_depth: IntGauge,
    pub members_tracked: IntGauge,
    pub members_evicted: IntCounter,
    pub state_quarantined: IntCounterVec,
    pub state_write_errors: IntCounter,
    pub state_write_failing: IntGauge,
    pub state_live_sst_bytes: IntGauge,
    pub state_block_cache_usage_bytes: IntGauge,
    pub state_pending_compaction_bytes: IntGauge,
    pub state_memtable_bytes: IntGauge,
    pub state_write_stalls: IntCounter,
    pub commits: IntCounter,
    pub commit_duration: HistogramVec,
    rebalances: IntCounterVec,
    pub partitions_assigned: IntGauge,
    pub partitions_held: IntGauge,
    pub ready: IntGauge,
    pub broker_errors: IntCounter,
    pub restore_records: IntCounter,
    pub restoring_partitions: IntGauge,
    pub restores: IntCounter,
    pub changelog_records: IntCounter,
    pub outbox_recovered: IntCounter,
    pub partitions_dropped: IntCounter,
    pub dlq_published: IntCounter,
}

fn counter(r: &Registry, name: &str, help: &str) -> IntCounter {
    let c = IntCounter::new(name, help).expect("valid metric");
    r.register(Box::new(c.clone())).expect("unique metric");
    c
}

fn gauge(r: &Registry, name: &str, help: &str) -> IntGauge {
    let g = IntGauge::new(name, help).expect("valid metric");
    r.register(Box::new(g.clone())).expect("unique metric");
    g
}

fn counter_vec(r: &Registry, name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
    let c = IntCounterVec::new(Opts::new(name, help), labels).expect("valid metric");
    r.register(Box::new(c.clone())).expect("unique metric");
    c
}

fn histogram(r: &Registry, name: &str, help: &str, buckets: Vec<f64>) -> Histogram {
    let h = Histogram::with_opts(HistogramOpts::new(name, help).buckets(buckets))
        .expect("valid metric");
    r.register(Box::new(h.clone())).expect("unique metric");
    h
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let r = Registry::new();
        let consumed = counter_vec(
            &r,
            "churnwatch_events_consumed_total",
            "Valid events processed, by event type.",
            &["type"],
        );
        let rejected = counter_vec(
            &r,
            "churnwatch_events_rejected_total",
            "Events rejected to the dead-letter output, by reason.",
            &["reason"],
        );
        let alerts_published = counter_vec(
            &r,
            "churnwatch_alerts_published_total",
            "Alerts published, by signal and severity.",
            &["signal", "severity"],
        );
        let alerted_members = counter_vec(
            &r,
            "churnwatch_alerted_members_total",
            "Members who got a first alert of a cooling period (the recovery-rate denominator), by signal and holdout.",
            &["signal", "holdout"],
        );
        let reactivations = counter_vec(
            &r,
            "churnwatch_reactivations_total",
            "Alerted members who came back within the reactivation horizon, by the signal of their first alert and holdout.",
            &["signal", "holdout"],
        );
        let lat_buckets = vec![
            0.0005, 0.001, 0.0025, 0.005, 0.01, 0.02, 0.03, 0.04, 0.05, 0.06, 0.08, 0.1, 0.125,
            0.15, 0.2, 0.25, 0.3, 0.4, 0.5, 0.75, 1.0, 2.5, 5.0, 10.0,
        ];
        let consumer_lag = IntGaugeVec::new(
            Opts::new(
                "churnwatch_consumer_lag",
                "Messages between the committed position and the partition's high watermark.",
            ),
            &["topic", "partition"],
        )
        .expect("valid metric");
        r.register(Box::new(consumer_lag.clone()))
            .expect("unique metric");
        let partition_owned = IntGaugeVec::new(
            Opts::new(
                "churnwatch_partition_owned",
                "1 for each input partition this instance owns (state restored, being consumed).",
            ),
            &["topic", "partition"],
        )
        .expect("valid metric");
        r.register(Box::new(partition_owned.clone()))
            .expect("unique metric");
        // Per engine partition (the input partition number): each partition
        // has its own event-time clock (SPEC §3).
        let stream_clock_seconds = IntGaugeVec::new(
            Opts::new(
                "churnwatch_stream_clock_seconds",
                "The partition's event-time stream clock (its highest event time minus the allowed lateness, or the idle wall-clock advance), epoch seconds.",
            ),
            &["partition"],
        )
        .expect("valid metric");
        r.register(Box::new(stream_clock_seconds.clone()))
            .expect("unique metric");
        let stream_clock_lag_seconds = IntGaugeVec::new(
            Opts::new(
                "churnwatch_stream_clock_lag_seconds",
                "Wall clock minus the partition's stream clock, seconds.",
            ),
            &["partition"],
        )
        .expect("valid metric");
        r.register(Box::new(stream_clock_lag_seconds.clone()))
            .expect("unique metric");
        let member_cache_members = IntGaugeVec::new(
            Opts::new(
                "churnwatch_member_cache_members",
                "Members in the engines' member caches, by form: decoded (in use lately) or packed (small, unpacked when used again).",
            ),
            &["form"],
        )
        .expect("valid metric");
        r.register(Box::new(member_cache_members.clone()))
            .expect("unique metric");
        // Both forms from the start, so a scrape before the first update
        // shows the series (at zero) rather than none.
        for form in ["decoded", "packed"] {
            member_cache_members.with_label_values(&[form]).set(0);
        }
        let commit_duration = HistogramVec::new(
            HistogramOpts::new(
                "churnwatch_commit_duration_seconds",
                "Time to write one state batch to RocksDB.",
            )
            .buckets(lat_buckets.clone()),
            &["store"],
        )
        .expect("valid metric");
        r.register(Box::new(commit_duration.clone()))
            .expect("unique metric");
        // The only store `run` commits to; touching the child makes the
        // family visible from the first scrape, before any commit.
        commit_duration.with_label_values(&["rocksdb"]);
        let rebalances = counter_vec(
            &r,
            "churnwatch_rebalances_total",
            "Partition assignment changes, by kind.",
            &["kind"],
        );
        let build = IntGaugeVec::new(
            Opts::new("churnwatch_build_info", "Build information; always 1."),
            &["version"],
        )
        .expect("valid metric");
        r.register(Box::new(build.clone())).expect("unique metric");
        build.with_label_values(&[env!("CARGO_PKG_VERSION")]).set(1);

        let m = Metrics {
            events_consumed: EventKind::ALL
                .iter()
                .map(|k| consumed.with_label_values(&[k.as_str()]))
                .collect(),
            events_rejected: RejectReason::ALL
                .iter()
                .map(|k| rejected.with_label_values(&[k.as_str()]))
                .collect(),
            events_duplicate: counter(
                &r,
                "churnwatch_events_duplicate_total",
                "Events whose event_id the member had already sent; absorbed without effect.",
            ),
            alerts_published,
            alerted_members,
            reactivations,
            processing_latency: histogram(
                &r,
                "churnwatch_processing_latency_seconds",
                "From an event's receipt to its state being committed.",
                lat_buckets.clone(),
            ),
            event_to_alert_latency: histogram(
                &r,
                "churnwatch_event_to_alert_latency_seconds",
                "From receipt of the event that triggered an alert to the alert's publication.",
                lat_buckets,
            ),
            consumer_lag,
            partition_owned,
            stream_clock_seconds,
            stream_clock_lag_seconds,
            timers_pending: gauge(
                &r,
                "churnwatch_timers_pending",
                "Member timers waiting in the engine's in-memory timer queues (every assigned partition).",
            ),
            member_cache_members,
            member_cache_bytes: gauge(
                &r,
                "churnwatch_member_cache_bytes",
                "What the members in the engines' member caches cost, as counted against engine.member_cache_mb.",
            ),
            timers_fired: counter(
                &r,
                "churnwatch_timers_fired_total",
                "Member timers fired by the stream clock.",
            ),
            outbox_depth: gauge(
                &r,
                "churnwatch_outbox_depth",
                "Outbox records (alerts, dead letters, changelog records) committed but not yet acknowledged by the broker.",
            ),
            members_tracked: gauge(
                &r,
                "churnwatch_members_tracked",
                "Members with state in the store (estimate).",
            ),
            members_evicted: counter(
                &r,
                "churnwatch_members_evicted_total",
                "Members deleted after state.evict_after_days without activity.",
            ),
            state_write_errors: counter(
                &r,
                "churnwatch_state_write_errors_total",
                "State store writes (commits) refused, e.g. disk full or read-only; each is retried with back-off while consumption is paused.",
            ),
            state_write_failing: gauge(
                &r,
                "churnwatch_state_write_failing",
                "1 while the state store refuses writes and consumption is paused, else 0.",
            ),
            state_quarantined: {
                let c = counter_vec(
                    &r,
                    "churnwatch_state_quarantined_total",
                    "Stored or changelog records that could not be decoded, moved aside to the quarantine table and dead-lettered, by kind (member, timer, outbox, changelog).",
                    &["kind"],
                );
                for k in ["member", "timer", "outbox", "changelog"] {
                    c.with_label_values(&[k]);
                }
                c
            },
            state_live_sst_bytes: gauge(
                &r,
                "churnwatch_state_live_sst_bytes",
                "RocksDB live SST file bytes.",
            ),
            state_block_cache_usage_bytes: gauge(
                &r,
                "churnwatch_state_block_cache_usage_bytes",
                "RocksDB shared block cache usage.",
            ),
            state_pending_compaction_bytes: gauge(
                &r,
                "churnwatch_state_pending_compaction_bytes",
                "RocksDB estimated pending compaction bytes.",
            ),
            state_memtable_bytes: gauge(
                &r,
                "churnwatch_state_memtable_bytes",
                "RocksDB memtable bytes.",
            ),
            state_write_stalls: counter(
                &r,
                "churnwatch_state_write_stalls_total",
                "Commits that found RocksDB stalling writes.",
            ),
            commits: counter(
                &r,
                "churnwatch_commits_total",
                "State batches committed (state, timers, offsets and outbox in one write).",
            ),
            commit_duration,
            rebalances,
            partitions_held: gauge(
                &r,
                "churnwatch_partitions_held",
                "Assigned input partitions held back, paused, because the state store refused the writes that start them; they start once it takes writes.",
            ),
            partitions_assigned: gauge(
                &r,
                "churnwatch_partitions_assigned",
                "Input partitions currently assigned.",
            ),
            ready: gauge(&r, "churnwatch_ready", "1 when /readyz answers ready."),
            broker_errors: counter(
                &r,
                "churnwatch_broker_errors_total",
                "Kafka client errors: consume and produce errors, and librdkafka global errors such as all brokers down.",
            ),
            restore_records: counter(
                &r,
                "churnwatch_restore_records_total",
                "Changelog records read while restoring assigned partitions.",
            ),
            restoring_partitions: gauge(
                &r,
                "churnwatch_restoring_partitions",
                "Partitions being restored from the changelog right now (/readyz is 503 meanwhile).",
            ),
            restores: counter(
                &r,
                "churnwatch_restores_total",
                "Partition restores from the changelog completed.",
            ),
            changelog_records: counter(
                &r,
                "churnwatch_changelog_records_total",
                "Member-state changes and partition markers written to the changelog outbox.",
            ),
            outbox_recovered: counter(
                &r,
                "churnwatch_outbox_recovered_records_total",
                "Outbox records found unacknowledged at start-up and sent again.",
            ),
            partitions_dropped: counter(
                &r,
                "churnwatch_partitions_dropped_total",
                "Partitions whose local state was deleted after drop_unowned_after_ms without ownership.",
            ),
            dlq_published: counter(
                &r,
                "churnwatch_dlq_published_total",
                "Rejected events written to the dead-letter output.",
            ),
            registry: r,
        };
        // Make every closed label set visible from the start, so dashboards
        // and rate() see zeros rather than gaps.
        for s in Signal::ALL {
            for h in ["true", "false"] {
                m.alerted_members.with_label_values(&[s.as_str(), h]);
                m.reactivations.with_label_values(&[s.as_str(), h]);
            }
            for sev in [Severity::Info, Severity::Warning, Severity::Critical] {
                m.alerts_published
                    .with_label_values(&[s.as_str(), sev.as_str()]);
            }
        }
        for k in ["assign", "revoke"] {
            m.rebalances.with_label_values(&[k]);
        }
        m
    }

    pub fn consumed(&self, kind: EventKind) -> &IntCounter {
        &self.events_consumed[kind as usize]
    }

    pub fn rejected(&self, reason: RejectReason) -> &IntCounter {
        &self.events_rejected[RejectReason::ALL
            .iter()
            .position(|r| *r == reason)
            .unwrap_or(0)]
    }

    pub fn rejected_total(&self) -> u64 {
        self.events_rejected.iter().map(|c| c.get()).sum()
    }

    pub fn consumed_total(&self) -> u64 {
        self.events_consumed.iter().map(|c| c.get()).sum()
    }

    pub fn alert_published(&self, signal: Signal, severity: Severity) {
        self.alerts_published
            .with_label_values(&[signal.as_str(), severity.as_str()])
            .inc();
    }

    pub fn alerts_published_by_signal(&self, signal: Signal) -> u64 {
        [Severity::Info, Severity::Warning, Severity::Critical]
            .iter()
            .map(|s| {
                self.alerts_published
                    .with_label_values(&[signal.as_str(), s.as_str()])
                    .get()
            })
            .sum()
    }

    pub fn alerted_member(&self, signal: Signal, holdout: bool) {
        self.alerted_members
            .with_label_values(&[signal.as_str(), bool_label(holdout)])
            .inc();
    }

    pub fn reactivation(&self, signal: Signal, holdout: bool) {
        self.reactivations
            .with_label_values(&[signal.as_str(), bool_label(holdout)])
            .inc();
    }

    pub fn rebalance(&self, kind: &'static str) {
        self.rebalances.with_label_values(&[kind]).inc();
    }

    /// The Prometheus text exposition of every metric.
    pub fn render(&self) -> String {
        let mut buf = Vec::new();
        TextEncoder::new()
            .encode(&self.registry.gather(), &mut buf)
            .expect("text encoding never fails");
        String::from_utf8(buf).expect("text format is UTF-8")
    }

    /// The member caches' fill (see `EngineGroup::member_cache`).
    pub fn update_member_cache(&self, decoded: usize, packed: usize, bytes: usize) {
        for (form, n) in [("decoded", decoded), ("packed", packed)] {
            self.member_cache_members
                .with_label_values(&[form])
                .set(n as i64);
        }
        self.member_cache_bytes.set(bytes as i64);
    }

    pub fn update_store(&self, s: &crate::state::StoreStats) {
        self.state_live_sst_bytes.set(s.live_sst_bytes as i64);
        self.state_block_cache_usage_bytes
            .set(s.block_cache_usage_bytes as i64);
        self.state_pending_compaction_bytes
            .set(s.pending_compaction_bytes as i64);
        self.state_memtable_bytes.set(s.memtable_bytes as i64);
        // RocksDB's key estimates: one member entry and at most one timer each.
        self.members_tracked.set(s.estimated_members as i64);
        if s.write_stalled {
            self.state_write_stalls.inc();
        }
    }
}

fn bool_label(b: bool) -> &'static str {
    if b {
        "true"
    } else {
        "false"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_metric_is_named_churnwatch_and_renders() {
        let m = Metrics::new();
        m.consumed(EventKind::Visit).inc();
        m.rejected(RejectReason::BadTs).inc();
        let text = m.render();
        for line in text.lines().filter(|l| !l.starts_with('#')) {
            assert!(line.starts_with("churnwatch_"), "{line}");
        }
        assert!(text.contains("churnwatch_events_consumed_total{type=\"visit\"} 1"));
        assert!(text.contains("churnwatch_events_rejected_total{reason=\"bad_ts\"} 1"));
        assert!(text.contains("churnwatch_build_info{version="));
    }
}
