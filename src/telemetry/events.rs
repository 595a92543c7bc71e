//! One small type per thing worth telling an operator about. Each `emit`
//! counts it and, where a person would want to read it, logs it.

use super::Metrics;
use crate::detect::{Severity, Signal};
use crate::event::{EventKind, RejectReason};

pub struct EventRejected<'a> {
    pub reason: RejectReason,
    pub detail: &'a str,
    pub source: &'a str,
}

impl EventRejected<'_> {
    pub fn emit(&self, m: &Metrics) {
        m.rejected(self.reason).inc();
        tracing::debug!(
            reason = self.reason.as_str(),
            detail = self.detail,
            source = self.source,
            "event rejected"
        );
    }
}

/// What an engine counted since its last commit, added to the shared
/// counters once a commit: every engine thread adding to the same counters
/// once an event would make each add a cache miss (the line moves between
/// cores), on the per-event path the engines otherwise share nothing on.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct EngineTally {
    /// Events applied, by [`EventKind`] (its discriminant).
    pub consumed: [u64; EventKind::ALL.len()],
    pub duplicates: u64,
    pub members_created: u64,
    pub members_evicted: u64,
    pub timers_fired: u64,
}

impl EngineTally {
    /// Adds the counts to the metrics and starts again from zero.
    pub fn emit(&mut self, m: &Metrics) {
        let t = std::mem::take(self);
        for (kind, n) in EventKind::ALL.iter().zip(t.consumed) {
            if n > 0 {
                m.consumed(*kind).inc_by(n);
            }
        }
        m.events_duplicate.inc_by(t.duplicates);
        m.members_tracked
            .add(t.members_created as i64 - t.members_evicted as i64);
        m.members_evicted.inc_by(t.members_evicted);
        m.timers_fired.inc_by(t.timers_fired);
    }
}

pub struct AlertPublished {
    pub signal: Signal,
    pub severity: Severity,
}

impl AlertPublished {
    #[inline]
    pub fn emit(&self, m: &Metrics) {
        m.alert_published(self.signal, self.severity);
    }
}

/// A member's first alert of a cooling period: the denominator of the
/// recovery rate.
pub struct MemberAlerted {
    pub signal: Signal,
    pub holdout: bool,
}

impl MemberAlerted {
    pub fn emit(&self, m: &Metrics) {
        m.alerted_member(self.signal, self.holdout);
    }
}

pub struct MemberReactivated {
    pub signal: Signal,
    pub holdout: bool,
    pub days_to_return: f64,
    pub within_horizon: bool,
}

impl MemberReactivated {
    pub fn emit(&self, m: &Metrics) {
        if self.within_horizon {
            m.reactivation(self.signal, self.holdout);
        }
    }
}

pub struct StateCommitted<'a> {
    pub members: usize,
    pub seconds: f64,
    /// Every assigned partition whose clock has started, with its clock.
    pub clocks: &'a [(u32, i64)],
    pub wall_ms: i64,
}

impl StateCommitted<'_> {
    pub fn emit(&self, m: &Metrics) {
        m.commits.inc();
        m.commit_duration
            .with_label_values(&["rocksdb"])
            .observe(self.seconds);
        for (partition, clock_ms) in self.clocks {
            let p = partition.to_string();
            m.stream_clock_seconds
                .with_label_values(&[&p])
                .set(clock_ms / 1000);
            m.stream_clock_lag_seconds
                .with_label_values(&[&p])
                .set((self.wall_ms - clock_ms) / 1000);
        }
        tracing::trace!(
            members = self.members,
            seconds = self.seconds,
            "state committed"
        );
    }
}

/// A Kafka client error. The pipeline retries; `log` is false for repeats
/// inside the rate-limit window, since an outage reports the same error
/// many times a second.
pub struct BrokerError<'a> {
    pub context: &'static str,
    pub error: &'a dyn std::fmt::Display,
    pub log: bool,
}

impl BrokerError<'_> {
    pub fn emit(&self, m: &Metrics) {
        m.broker_errors.inc();
        if self.log {
            tracing::warn!(error = %self.error, context = self.context, "kafka error (retrying)");
        }
    }
}

/// The consumer group gave or took partitions.
pub struct PartitionsChanged<'a, P: std::fmt::Debug> {
    /// `assign` or `revoke`.
    pub kind: &'static str,
    pub partitions: &'a P,
    /// Input partitions owned after the change.
    pub owned: usize,
}

impl<P: std::fmt::Debug> PartitionsChanged<'_, P> {
    pub fn emit(&self, m: &Metrics) {
        m.rebalance(self.kind);
        m.partitions_assigned.set(self.owned as i64);
        tracing::info!(kind = self.kind, partitions = ?self.partitions, owned = self.owned, "partitions changed");
    }
}

/// Unacknowledged outbox records found at start-up; they are sent again.
pub struct OutboxRecovered {
    pub records: usize,
}

impl OutboxRecovered {
    pub fn emit(&self, m: &Metrics) {
        m.outbox_recovered.inc_by(self.records as u64);
        m.outbox_depth.set(self.records as i64);
        if self.records > 0 {
            tracing::info!(
                records = self.records,
                "re-sending unacknowledged outbox records"
            );
        }
    }
}

/// Outbox size after a commit or an acknowledgement.
pub struct OutboxDepth(pub usize);

impl OutboxDepth {
    #[inline]
    pub fn emit(&self, m: &Metrics) {
        m.outbox_depth.set(self.0 as i64);
    }
}

/// A rejected event handed to the dead-letter output (topic or file).
pub struct DeadLetterWritten;

impl DeadLetterWritten {
    #[inline]
    pub fn emit(&self, m: &Metrics) {
        m.dlq_published.inc();
    }
}

/// A batch of input is committed: time from its receipt.
pub struct BatchProcessed {
    pub seconds: f64,
}

impl BatchProcessed {
    #[inline]
    pub fn emit(&self, m: &Metrics) {
        m.processing_latency.observe(self.seconds);
    }
}

/// The broker acknowledged an alert: time from receipt of its triggering batch.
pub struct AlertDelivered {
    pub seconds: f64,
}

impl AlertDelivered {
    #[inline]
    pub fn emit(&self, m: &Metrics) {
        m.event_to_alert_latency.observe(self.seconds);
    }
}

/// Consumer lag of one partition, from librdkafka's statistics.
pub struct ConsumerLag<'a> {
    pub topic: &'a str,
    pub partition: i32,
    /// `None`: the partition is not consumed here (any more).
    pub lag: Option<i64>,
}

/// A partition's stream clock is no longer kept here (revoked): its series
/// go, as the lag series do.
pub struct ClockReleased(pub u32);

impl ClockReleased {
    pub fn emit(&self, m: &Metrics) {
        let p = self.0.to_string();
        let _ = m.stream_clock_seconds.remove_label_values(&[&p]);
        let _ = m.stream_clock_lag_seconds.remove_label_values(&[&p]);
    }
}

impl ConsumerLag<'_> {
    pub fn emit(&self, m: &Metrics) {
        let partition = self.partition.to_string();
        match self.lag {
            Some(lag) => m
                .consumer_lag
                .with_label_values(&[self.topic, &partition])
                .set(lag),
            None => {
                let _ = m
                    .consumer_lag
                    .remove_label_values(&[self.topic, &partition]);
            }
        }
    }
}

/// This instance started or stopped owning an input partition.
pub struct PartitionOwned<'a> {
    pub topic: &'a str,
    pub partition: i32,
    pub owned: bool,
}

impl PartitionOwned<'_> {
    pub fn emit(&self, m: &Metrics) {
        let partition = self.partition.to_string();
        if self.owned {
            m.partition_owned
                .with_label_values(&[self.topic, &partition])
                .set(1);
        } else {
            let _ = m
                .partition_owned
                .remove_label_values(&[self.topic, &partition]);
        }
    }
}

/// A record that could not be decoded was moved aside. Logged once per
/// record, with its partition and never its key (it holds a member id).
pub struct StateQuarantined<'a>(pub &'a crate::state::quarantine::Quarantined);

impl StateQuarantined<'_> {
    pub fn emit(&self, m: &Metrics) {
        let q = self.0;
        m.state_quarantined
            .with_label_values(&[q.kind.as_str()])
            .inc();
        tracing::warn!(
            kind = q.kind.as_str(),
            partition = q.partition,
            offset = q.offset,
            bytes = q.value.len(),
            reason = %q.reason,
            "undecodable record moved to quarantine; processing goes on (churnwatch state inspect lists it)"
        );
    }
}

/// The state store refused a commit (disk full, read-only file system):
/// consumption is paused and the commit retried with back-off.
pub struct StateWriteFailed<'a> {
    pub error: &'a crate::state::StoreError,
    /// `false` for repeats inside the rate-limit window.
    pub log: bool,
}

impl StateWriteFailed<'_> {
    pub fn emit(&self, m: &Metrics) {
        m.state_write_errors.inc();
        m.state_write_failing.set(1);
        if self.log {
            tracing::error!(
                error = %self.error,
                "state store refused a write: consumption paused, retrying with back-off; nothing consumed is lost"
            );
        }
    }
}

/// The store refused a write made behind the engines; it is written again
/// at once, with the next commit's changes after it (a refusal of that is
/// a [`StateWriteFailed`]).
pub struct StateWriteRetried<'a> {
    pub error: &'a crate::state::StoreError,
}

impl StateWriteRetried<'_> {
    pub fn emit(&self, m: &Metrics) {
        m.state_write_errors.inc();
        tracing::warn!(
            error = %self.error,
            "state store refused a write made behind the engines: writing it again with the next commit"
        );
    }
}

/// The state store took a write again after refusing some.
pub struct StateWritesResumed {
    pub after: std::time::Duration,
}

impl StateWritesResumed {
    pub fn emit(&self, m: &Metrics) {
        m.state_write_failing.set(0);
        tracing::warn!(
            seconds = self.after.as_secs_f64(),
            "state store accepts writes again: consumption resumed"
        );
    }
}

/// An assigned partition could not be started because the store refused
/// the writes that make its state ready (its timer index); it waits,
/// paused, until the store takes writes again.
pub struct PartitionHeld<'a> {
    pub topic: &'a str,
    pub partition: i32,
}

impl PartitionHeld<'_> {
    pub fn emit(&self, _m: &Metrics) {
        tracing::warn!(
            topic = self.topic,
            partition = self.partition,
            "partition held until the state store takes writes again"
        );
    }
}

/// A partition's restore from the changelog started.
pub struct RestoreStarted {
    pub partition: u32,
    pub from: i64,
    pub pending_local: usize,
}

impl RestoreStarted {
    pub fn emit(&self, m: &Metrics) {
        m.restoring_partitions.inc();
        tracing::info!(
            partition = self.partition,
            from_offset = self.from,
            pending_local = self.pending_local,
            "restoring partition from the changelog"
        );
    }
}

/// Progress of a running restore: records read since the last report.
pub struct RestoreProgress {
    pub partition: u32,
    pub records: u64,
    pub total: u64,
}

impl RestoreProgress {
    pub fn emit(&self, m: &Metrics) {
        m.restore_records.inc_by(self.records);
        tracing::debug!(
            partition = self.partition,
            records = self.total,
            "restoring"
        );
    }
}

/// A restore was stopped before it finished: its partition was revoked, or
/// the process is shutting down. The next restore of the partition starts
/// where this one started.
pub struct RestoreStopped {
    pub partition: u32,
}

impl RestoreStopped {
    pub fn emit(&self, m: &Metrics) {
        m.restoring_partitions.dec();
        tracing::info!(
            partition = self.partition,
            "restore stopped before the end of the changelog"
        );
    }
}

/// A partition's restore ended.
pub struct RestoreFinished {
    pub partition: u32,
    pub records: u64,
    pub members: u64,
    pub next: i64,
    pub seconds: f64,
    /// Local state was discarded first: it held changes never published to
    /// the changelog while another instance wrote to it.
    pub from_scratch: bool,
}

impl RestoreFinished {
    pub fn emit(&self, m: &Metrics) {
        m.restoring_partitions.dec();
        m.restores.inc();
        tracing::info!(
            partition = self.partition,
            records = self.records,
            members = self.members,
            changelog_next = self.next,
            seconds = self.seconds,
            from_scratch = self.from_scratch,
            "partition restored"
        );
    }
}

/// Changelog records put into the outbox by one commit.
pub struct ChangelogWritten(pub usize);

impl ChangelogWritten {
    #[inline]
    pub fn emit(&self, m: &Metrics) {
        m.changelog_records.inc_by(self.0 as u64);
    }
}

/// Local state of a partition not owned for too long was deleted.
pub struct PartitionDropped {
    pub partition: u32,
    pub keys: u64,
}

impl PartitionDropped {
    pub fn emit(&self, m: &Metrics) {
        m.partitions_dropped.inc();
        tracing::info!(
            partition = self.partition,
            keys = self.keys,
            "deleted local state of a partition owned elsewhere"
        );
    }
}

/// `/readyz` changed (or was re-evaluated).
pub struct Readiness {
    pub ready: bool,
}

impl Readiness {
    #[inline]
    pub fn emit(&self, m: &Metrics) {
        m.ready.set(self.ready as i64);
    }
}

/// librdkafka's own log lines and global errors. During a broker outage the
/// client logs every failed connection attempt at error level, several a
/// second; the pipeline already counts and reports the outage, so these are
/// logged at `warn` at most once per 10 s per client, and the rest at
/// `debug`.
#[derive(Default)]
pub struct KafkaClientLog {
    warn: LogThrottle,
}

impl KafkaClientLog {
    /// A librdkafka log line. Its warnings count as severe: they are how it
    /// reports a consumer group session timed out (the assignment is
    /// revoked), the poll interval exceeded, or requests left unanswered,
    /// which an operator must see without turning on debug logs; notices
    /// and below go to `debug`.
    pub fn line(&self, level: rdkafka::config::RDKafkaLogLevel, facility: &str, message: &str) {
        let warning = rdkafka::config::RDKafkaLogLevel::Warning as i32;
        self.emit((level as i32) <= warning, facility, message);
    }

    pub fn emit(&self, severe: bool, facility: &str, message: &str) {
        if severe && self.warn.due() {
            tracing::warn!(
                facility,
                message,
                "kafka client (repeats within 10 s at debug)"
            );
        } else {
            tracing::debug!(facility, message, "kafka client");
        }
    }
}

/// At most one warning per 10 s from something that can fail many times a
/// second (a broker outage): `due` says whether this one is logged.
#[derive(Default)]
pub struct LogThrottle {
    last_secs: std::sync::atomic::AtomicU64,
}

impl LogThrottle {
    pub fn due(&self) -> bool {
        use std::sync::atomic::Ordering;
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let last = self.last_secs.load(Ordering::Relaxed);
        if now >= last + 10 {
            self.last_secs.store(now, Ordering::Relaxed);
            true
        } else {
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{KafkaClientLog, LogThrottle};
    use rdkafka::config::RDKafkaLogLevel;
    use std::sync::{Arc, Mutex};

    /// The lines `f` logs, at every level, without colours.
    fn logged(f: impl FnOnce()) -> Vec<String> {
        #[derive(Clone)]
        struct Buf(Arc<Mutex<Vec<u8>>>);
        impl std::io::Write for Buf {
            fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
                self.0.lock().unwrap().extend_from_slice(b);
                Ok(b.len())
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
        let buf = Buf(Arc::new(Mutex::new(Vec::new())));
        let sink = buf.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_max_level(tracing::Level::TRACE)
            .with_ansi(false)
            .with_writer(move || sink.clone())
            .finish();
        tracing::subscriber::with_default(subscriber, f);
        let text = String::from_utf8(buf.0.lock().unwrap().clone()).unwrap();
        text.lines().map(str::to_string).collect()
    }

    #[test]
    fn a_librdkafka_warning_such_as_a_session_timeout_is_logged_as_a_warning() {
        let log = KafkaClientLog::default();
        let lines = logged(|| {
            log.line(
                RDKafkaLogLevel::Warning,
                "SESSTMOUT",
                "Consumer group session timed out: revoking assignment and rejoining group",
            );
            log.line(
                RDKafkaLogLevel::Notice,
                "CGRPOP",
                "group coordinator changed",
            );
            // A second warning within 10 s: throttled to debug.
            log.line(
                RDKafkaLogLevel::Warning,
                "REQTMOUT",
                "Timed out 1 in-flight",
            );
        });
        assert_eq!(lines.len(), 3, "{lines:#?}");
        assert!(
            lines[0].contains(" WARN ") && lines[0].contains("SESSTMOUT"),
            "{}",
            lines[0]
        );
        assert!(
            lines[1].contains("DEBUG") && lines[1].contains("CGRPOP"),
            "{}",
            lines[1]
        );
        assert!(
            lines[2].contains("DEBUG") && lines[2].contains("REQTMOUT"),
            "{}",
            lines[2]
        );
    }

    #[test]
    fn a_log_throttle_lets_the_first_through_and_holds_the_repeats() {
        let t = LogThrottle::default();
        assert!(t.due());
        assert!(!t.due());
        assert!(!t.due());
    }
}
