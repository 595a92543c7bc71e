//! The configuration tree (SPEC §8): one strict TOML file, every key but the
//! brokers defaulted, unknown keys rejected, environment overrides applied,
//! and the whole tree validated before anything starts. Every error names
//! the key it is about.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::alert::AlertConfig;
use crate::detect::{stage_change, DetectConfig};
use crate::engine::{ClockConfig, EngineConfig};
use crate::event::Validator;
use crate::state::member::MemberFormat;
use crate::state::RocksTuning;

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("config key `{key}`: {message}")]
    Parse { key: String, message: String },
    #[error("config key `{key}`: {reason}")]
    Invalid { key: String, reason: String },
}

impl ConfigError {
    fn invalid(key: &str, reason: impl Into<String>) -> Self {
        ConfigError::Invalid {
            key: key.to_string(),
            reason: reason.into(),
        }
    }
}

/// The whole configuration file.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Kafka connection and topics (`churnwatch run`; parsed but unused by `replay`).
    pub kafka: KafkaConfig,
    /// The RocksDB state store.
    pub state: StateConfig,
    /// The metrics and health endpoint.
    pub http: HttpConfig,
    /// Input validation limits.
    pub input: InputConfig,
    /// Event time and the stream clock.
    pub time: ClockConfig,
    /// Detector thresholds, one table per signal.
    pub detect: DetectConfig,
    /// Lifecycle stage thresholds.
    pub lifecycle: stage_change::Config,
    /// Holdout, reactivation, segments and playbook.
    pub alerts: AlertConfig,
    /// The Kafka pipeline's batching and shutdown behaviour.
    pub pipeline: PipelineConfig,
    /// BG/NBD purchase-model parameters (`churnwatch fit --output`).
    pub risk: crate::risk::Config,
    /// Logging.
    pub log: LogConfig,
    /// Engine threads and the member cache.
    pub engine: EngineSection,
}

/// `[engine]`: how the engine uses the machine.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct EngineSection {
    /// Engine threads, each owning a share of the partitions end to end
    /// (`run`, `replay --partitions N` and `bootstrap`; 0: one per core).
    pub threads: usize,
    /// Decoded member state kept in memory between commits, MiB, for all
    /// engine threads together (each takes an equal share): a member read
    /// once is served from memory while it stays, and written once per
    /// commit however many events it had.
    pub member_cache_mb: usize,
}

impl Default for EngineSection {
    fn default() -> Self {
        EngineSection {
            threads: 0,
            // 384 + 128 for the block cache: the same 512 MiB as 256 + 256,
            // 10% faster (docs/performance.md): a member the member cache
            // holds costs no read, decode or block lookup at all.
            member_cache_mb: 384,
        }
    }
}

impl EngineSection {
    /// The engine threads to run: `threads`, or one per core.
    pub fn thread_count(&self) -> usize {
        if self.threads > 0 {
            self.threads
        } else {
            std::thread::available_parallelism().map_or(1, |n| n.get())
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct KafkaConfig {
    /// Bootstrap servers, `host:port[,host:port]`. Required for `run`.
    pub brokers: String,
    /// Consumer group id.
    pub group_id: String,
    /// Topics carrying member events.
    pub input_topics: Vec<String>,
    /// Topic the alerts are published to (key = member id).
    pub alert_topic: String,
    /// Topic rejected events are written to, unchanged, with reason headers.
    pub dlq_topic: String,
    /// How the input topics' producers pick a partition for a member id
    /// (`bootstrap` and `replay --partitions` place members the same way).
    pub partitioner: crate::event::partitioner::Partitioner,
    /// Any librdkafka property, passed through to every client
    /// (`security.protocol`, `sasl.*`, `ssl.*`, ...).
    pub client: BTreeMap<String, String>,
}

impl Default for KafkaConfig {
    fn default() -> Self {
        KafkaConfig {
            brokers: String::new(),
            group_id: "churnwatch".into(),
            input_topics: vec!["member-events".into()],
            alert_topic: "churn-alerts".into(),
            dlq_topic: "member-events-dlq".into(),
            partitioner: Default::default(),
            client: BTreeMap::new(),
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct StateConfig {
    /// RocksDB directory.
    pub dir: PathBuf,
    /// Shared RocksDB block cache, MiB (bounds read memory for all
    /// partitions): index and filter blocks (about 2 bytes a member) and
    /// the blocks of members the member cache does not hold.
    pub block_cache_mb: usize,
    /// Budget for all RocksDB memtables together, MiB.
    pub write_buffer_mb: usize,
    /// fsync the write-ahead log on every commit. Off, a machine crash (not a
    /// process crash) can lose the last commits; offsets are in the same
    /// batches, so that input is consumed again, never skipped.
    pub sync_wal: bool,
    /// Delete a member's state this many days after their last activity
    /// (any event but `email_send`), once none of their detector timers is
    /// pending (so their last alerts, the move to `churned` included, have
    /// been raised). The changelog carries a tombstone. A member who comes
    /// back after that starts as a new member: their alert `seq` starts at 1
    /// again, so an `alert_id` can repeat one from before the eviction.
    /// 0 keeps every member forever.
    pub evict_after_days: f64,
    /// How member records are written (every format is read): `packed`
    /// (format version 3, a quarter to a sixth of the bytes), or `fixed`
    /// (version 2, about 480 bytes) while a rolling upgrade from a release
    /// that reads only version 2 is under way: those instances would set
    /// a packed record aside as undecodable when they restore it.
    pub member_format: MemberFormat,
}

impl Default for StateConfig {
    fn default() -> Self {
        StateConfig {
            dir: PathBuf::from("./data/churnwatch"),
            block_cache_mb: 128,
            write_buffer_mb: 128,
            sync_wal: false,
            evict_after_days: 0.0,
            member_format: MemberFormat::Packed,
        }
    }
}

impl StateConfig {
    pub fn tuning(&self) -> RocksTuning {
        RocksTuning {
            block_cache_bytes: self.block_cache_mb << 20,
            write_buffer_bytes: self.write_buffer_mb << 20,
            sync_wal: self.sync_wal,
            wal: true,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct HttpConfig {
    /// Address of `/metrics`, `/healthz` and `/readyz`.
    pub listen: String,
    /// Serve `GET /members/{member_id}` (personal data: off by default).
    pub member_api: bool,
    /// File holding the bearer token the member API requires (required when
    /// `member_api` is on; surrounding whitespace is ignored).
    pub member_api_token_file: Option<PathBuf>,
}

impl Default for HttpConfig {
    fn default() -> Self {
        HttpConfig {
            listen: "127.0.0.1:9464".into(),
            member_api: false,
            member_api_token_file: None,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct InputConfig {
    /// Larger messages are rejected (`oversize`).
    pub max_event_bytes: usize,
}

impl Default for InputConfig {
    fn default() -> Self {
        InputConfig {
            max_event_bytes: 64 * 1024,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct PipelineConfig {
    /// Messages per engine batch (one RocksDB write per batch).
    pub batch_max_messages: usize,
    /// A batch is committed after this long even if not full: the floor of
    /// the latency from an event's arrival to its state and alerts.
    pub batch_max_wait_ms: u64,
    /// While batches come full (`batch_max_messages`: a backlog, as when
    /// catching up), state is committed at most this often, so that a
    /// member busy in many batches is written, and published to the
    /// changelog, once per interval instead of once per batch. A batch cut
    /// by `batch_max_wait_ms` (live input) commits at once, as does a
    /// partition read to its end. 0: every batch. At most 30,000 (readiness
    /// wants a commit a minute). A crash re-reads at most this much input.
    pub commit_interval_ms: u64,
    /// On SIGTERM, finish the batch and drain the outbox within this time.
    pub shutdown_grace_ms: u64,
    /// librdkafka `max.poll.interval.ms`.
    pub max_poll_interval_ms: u64,
    /// Create the input, alert and dead-letter topics at start-up when they
    /// do not exist (needs the ACL to create topics).
    pub create_topics: bool,
    /// Partitions for topics churnwatch creates.
    pub topic_partitions: i32,
    /// Alerts and dead letters waiting for the broker before consumption
    /// pauses (a broker outage must not grow the outbox without bound).
    pub outbox_max: usize,
    /// Produce every committed member-state change to the changelog topic and
    /// rebuild a newly assigned partition from it, so state follows its
    /// partition between instances. Off, a partition that moves arrives with
    /// empty member state.
    pub changelog: bool,
    /// The changelog topic; empty means `<kafka.group_id>-state-changelog`.
    /// It must have as many partitions as the input topics.
    pub changelog_topic: String,
    /// Changelog records applied per RocksDB write batch while restoring.
    pub restore_batch_records: usize,
    /// Partitions restored at the same time, each on its own thread with
    /// its own changelog fetch; further ones wait (assigned, paused) for a
    /// free slot. Bounds the threads, connections and write load a large
    /// reassignment starts at once.
    pub max_concurrent_restores: usize,
    /// A partition this instance no longer owns keeps its local state this
    /// long (a partition that comes back then catches up from the changelog
    /// instead of restoring from scratch); after that the state is deleted.
    pub drop_unowned_after_ms: u64,
}

impl Default for PipelineConfig {
    fn default() -> Self {
        PipelineConfig {
            batch_max_messages: 5_000,
            batch_max_wait_ms: 20,
            // Half of ChurnwatchProcessingLatencyHigh's 1 s: a long catch-up
            // (latency = the interval plus a batch) must not page.
            commit_interval_ms: 500,
            shutdown_grace_ms: 20_000,
            max_poll_interval_ms: 300_000,
            create_topics: true,
            topic_partitions: 6,
            outbox_max: 100_000,
            changelog: true,
            changelog_topic: String::new(),
            restore_batch_records: 20_000,
            max_concurrent_restores: 4,
            drop_unowned_after_ms: 24 * 3_600_000,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct LogConfig {
    /// `error`, `warn`, `info`, `debug`, `trace` or a tracing filter; `RUST_LOG` wins.
    pub level: String,
    /// JSON lines instead of text.
    pub json: bool,
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            level: "info".into(),
            json: false,
        }
    }
}

impl Config {
    /// Reads, parses, applies environment overrides and validates.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.display().to_string(),
            source,
        })?;
        let mut cfg = Config::parse(&text)?;
        cfg.apply_env(|k| std::env::var(k).ok());
        cfg.validate()?;
        Ok(cfg)
    }

    /// Defaults plus environment overrides, validated (no file given).
    pub fn from_env() -> Result<Config, ConfigError> {
        let mut cfg = Config::default();
        cfg.apply_env(|k| std::env::var(k).ok());
        cfg.validate()?;
        Ok(cfg)
    }

    pub fn parse(text: &str) -> Result<Config, ConfigError> {
        let de = toml::Deserializer::new(text);
        serde_path_to_error::deserialize(de).map_err(|e| {
            let key = e.path().to_string();
            let message = e.into_inner().message().trim().to_string();
            ConfigError::Parse {
                key: if key == "." {
                    "(top level)".into()
                } else {
                    key
                },
                message,
            }
        })
    }

    pub fn apply_env(&mut self, get: impl Fn(&str) -> Option<String>) {
        if let Some(v) = get("CHURNWATCH_KAFKA_BROKERS") {
            self.kafka.brokers = v;
        }
        if let Some(v) = get("CHURNWATCH_STATE_DIR") {
            self.state.dir = v.into();
        }
        if let Some(v) = get("CHURNWATCH_HTTP_LISTEN") {
            self.http.listen = v;
        }
        if let Some(v) = get("CHURNWATCH_KAFKA_GROUP_ID") {
            self.kafka.group_id = v;
        }
        if let Some(v) = get("CHURNWATCH_LOG_LEVEL") {
            self.log.level = v;
        }
        // Static membership needs a name unique per instance, which a shared
        // config file cannot hold; orchestrators pass the pod name here.
        if let Some(v) = get("CHURNWATCH_KAFKA_GROUP_INSTANCE_ID") {
            self.kafka.client.insert("group.instance.id".to_string(), v);
        }
    }

    /// Checks what types alone cannot; the first problem found is reported.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let positive = |key: &str, v: f64| {
            if v.is_finite() && v > 0.0 {
                Ok(())
            } else {
                Err(ConfigError::invalid(
                    key,
                    format!("must be a positive number, got {v}"),
                ))
            }
        };
        let share = |key: &str, v: f64| {
            if (0.0..=1.0).contains(&v) {
                Ok(())
            } else {
                Err(ConfigError::invalid(
                    key,
                    format!("must be between 0 and 1, got {v}"),
                ))
            }
        };
        if self.kafka.input_topics.is_empty()
            || self.kafka.input_topics.iter().any(|t| t.trim().is_empty())
        {
            return Err(ConfigError::invalid(
                "kafka.input_topics",
                "needs at least one non-empty topic name",
            ));
        }
        for (key, v) in [
            ("kafka.group_id", &self.kafka.group_id),
            ("kafka.alert_topic", &self.kafka.alert_topic),
            ("kafka.dlq_topic", &self.kafka.dlq_topic),
        ] {
            if v.trim().is_empty() {
                return Err(ConfigError::invalid(key, "must not be empty"));
            }
        }
        for k in self.kafka.client.keys() {
            if matches!(
                k.as_str(),
                "enable.auto.commit"
                    | "group.id"
                    | "bootstrap.servers"
                    | "enable.idempotence"
                    | "max.in.flight.requests.per.connection"
                    | "max.in.flight"
            ) {
                return Err(ConfigError::invalid(
                    &format!("kafka.client.\"{k}\""),
                    "is managed by churnwatch (see the [kafka] keys and the delivery guarantee in the README)",
                ));
            }
        }
        if self.http.listen.parse::<std::net::SocketAddr>().is_err() {
            return Err(ConfigError::invalid(
                "http.listen",
                format!(
                    "must be an address like 127.0.0.1:9464, got {:?}",
                    self.http.listen
                ),
            ));
        }
        if self.http.member_api && self.http.member_api_token_file.is_none() {
            return Err(ConfigError::invalid(
                "http.member_api_token_file",
                "is required when http.member_api = true (the member API serves personal data)",
            ));
        }
        if self.state.dir.as_os_str().is_empty() {
            return Err(ConfigError::invalid("state.dir", "must not be empty"));
        }
        if self.time.max_timers_per_commit == 0 {
            return Err(ConfigError::invalid(
                "time.max_timers_per_commit",
                "must be at least 1",
            ));
        }
        if self.state.block_cache_mb == 0 {
            return Err(ConfigError::invalid(
                "state.block_cache_mb",
                "must be at least 1",
            ));
        }
        if self.engine.member_cache_mb == 0 {
            return Err(ConfigError::invalid(
                "engine.member_cache_mb",
                "must be at least 1",
            ));
        }
        if self.engine.threads > 1024 {
            return Err(ConfigError::invalid(
                "engine.threads",
                format!(
                    "must be at most 1024 (0: one per core), got {}",
                    self.engine.threads
                ),
            ));
        }
        if self.state.write_buffer_mb == 0 {
            return Err(ConfigError::invalid(
                "state.write_buffer_mb",
                "must be at least 1",
            ));
        }
        if self.input.max_event_bytes < 64 {
            return Err(ConfigError::invalid(
                "input.max_event_bytes",
                "must be at least 64",
            ));
        }
        if self.pipeline.restore_batch_records == 0 {
            return Err(ConfigError::invalid(
                "pipeline.restore_batch_records",
                "must be positive",
            ));
        }
        let evict = self.state.evict_after_days;
        if !evict.is_finite() || evict < 0.0 {
            return Err(ConfigError::invalid(
                "state.evict_after_days",
                "must be 0 (keep members) or a positive number of days",
            ));
        }
        if evict > 0.0 && evict < self.lifecycle.churned_days {
            return Err(ConfigError::invalid(
                "state.evict_after_days",
                "must not be below lifecycle.churned_days (members would be deleted before they count as churned)",
            ));
        }
        if self.pipeline.max_concurrent_restores == 0 {
            return Err(ConfigError::invalid(
                "pipeline.max_concurrent_restores",
                "must be positive",
            ));
        }
        if self.time.allowed_lateness_ms < 0 {
            return Err(ConfigError::invalid(
                "time.allowed_lateness_ms",
                "must not be negative",
            ));
        }
        if self.time.future_skew_ms < 0 {
            return Err(ConfigError::invalid(
                "time.future_skew_ms",
                "must not be negative",
            ));
        }
        if self.time.idle_after_ms <= 0 {
            return Err(ConfigError::invalid(
                "time.idle_after_ms",
                "must be positive",
            ));
        }
        let l = &self.lifecycle;
        positive("lifecycle.active_days", l.active_days)?;
        positive("lifecycle.new_days", l.new_days)?;
        positive("lifecycle.silent_days", l.silent_days)?;
        if l.churned_days <= l.silent_days {
            return Err(ConfigError::invalid(
                "lifecycle.churned_days",
                format!(
                    "must be greater than lifecycle.silent_days ({})",
                    l.silent_days
                ),
            ));
        }
        let d = &self.detect;
        positive(
            "detect.purchase_gap.gap_multiplier",
            d.purchase_gap.gap_multiplier,
        )?;
        if d.purchase_gap.gap_multiplier < 1.0 {
            return Err(ConfigError::invalid(
                "detect.purchase_gap.gap_multiplier",
                "must be at least 1",
            ));
        }
        if d.purchase_gap.min_gaps == 0 {
            return Err(ConfigError::invalid(
                "detect.purchase_gap.min_gaps",
                "must be at least 1",
            ));
        }
        let o = &d.open_rate_drop;
        if o.window_weeks > 16 || o.min_recent_weeks == 0 || o.min_recent_weeks > o.window_weeks {
            return Err(ConfigError::invalid(
                "detect.open_rate_drop.window_weeks",
                "must be at most 16 (the weeks kept per member) and at least min_recent_weeks (≥ 1)",
            ));
        }
        let v = &d.visit_decline;
        if v.window_weeks > 16 || v.min_recent_weeks == 0 || v.min_recent_weeks > v.window_weeks {
            return Err(ConfigError::invalid(
                "detect.visit_decline.window_weeks",
                "must be at most 16 (the weeks kept per member) and at least min_recent_weeks (≥ 1)",
            ));
        }
        let c = &d.checkin_lapse;
        if c.habit_window_days == 0 || c.habit_window_days > 127 {
            return Err(ConfigError::invalid(
                "detect.checkin_lapse.habit_window_days",
                "must be between 1 and 127",
            ));
        }
        if c.recent_days as u64 + c.baseline_days as u64 > 127
            || c.recent_days == 0
            || c.baseline_days == 0
        {
            return Err(ConfigError::invalid(
                "detect.checkin_lapse.baseline_days",
                "recent_days and baseline_days must be positive and add up to at most 127",
            ));
        }
        if d.spend_decline.min_recent_orders == 0
            || d.spend_decline.min_recent_orders as usize > crate::state::member::PURCHASE_HISTORY
        {
            return Err(ConfigError::invalid(
                "detect.spend_decline.min_recent_orders",
                "must be between 1 and 10 (the orders kept per member)",
            ));
        }
        for (key, v) in [
            (
                "detect.open_rate_drop.threshold",
                d.open_rate_drop.threshold,
            ),
            ("detect.spend_decline.threshold", d.spend_decline.threshold),
            ("detect.visit_decline.threshold", d.visit_decline.threshold),
        ] {
            if !(v.is_finite() && v > 0.0) {
                return Err(ConfigError::invalid(key, "must be a positive number"));
            }
        }
        for (key, v) in [
            ("detect.checkin_lapse.max_p_value", c.max_p_value),
            (
                "detect.open_rate_drop.drop_ratio",
                d.open_rate_drop.drop_ratio,
            ),
            (
                "detect.open_rate_drop.holiday_share",
                d.open_rate_drop.holiday_share,
            ),
            (
                "detect.visit_decline.holiday_share",
                d.visit_decline.holiday_share,
            ),
            (
                "detect.visit_decline.drop_ratio",
                d.visit_decline.drop_ratio,
            ),
            (
                "detect.spend_decline.drop_ratio",
                d.spend_decline.drop_ratio,
            ),
            ("alerts.holdout_share", self.alerts.holdout_share),
        ] {
            share(key, v)?;
        }
        positive(
            "alerts.reactivation_horizon_days",
            self.alerts.reactivation_horizon_days,
        )?;
        if let Some(key) = self.alerts.playbook.unknown_signal_key() {
            return Err(ConfigError::invalid(
                &key,
                "is not a signal name (see SPEC §2)",
            ));
        }
        if self.pipeline.batch_max_messages == 0 {
            return Err(ConfigError::invalid(
                "pipeline.batch_max_messages",
                "must be at least 1",
            ));
        }
        if self.pipeline.commit_interval_ms > 30_000 {
            return Err(ConfigError::invalid(
                "pipeline.commit_interval_ms",
                "must be at most 30000 (readiness wants a commit every minute)",
            ));
        }
        if self.pipeline.topic_partitions < 1 {
            return Err(ConfigError::invalid(
                "pipeline.topic_partitions",
                "must be at least 1",
            ));
        }
        if self.pipeline.outbox_max == 0 {
            return Err(ConfigError::invalid(
                "pipeline.outbox_max",
                "must be at least 1",
            ));
        }
        if self.risk.kind().is_none() {
            return Err(ConfigError::invalid(
                "risk.model",
                "must be \"pareto_nbd\", \"mbgnbd\" or \"bgnbd\"",
            ));
        }
        for (key, v) in [
            ("risk.r", self.risk.r),
            ("risk.alpha", self.risk.alpha),
            ("risk.a", self.risk.a),
            ("risk.b", self.risk.b),
            ("risk.s", self.risk.s),
            ("risk.beta", self.risk.beta),
        ] {
            if !(v.is_finite() && v > 0.0) {
                return Err(ConfigError::invalid(key, "must be a positive number"));
            }
        }
        for (key, v) in [
            ("risk.horizon_days", self.risk.horizon_days),
            ("risk.calibration_slope", self.risk.calibration_slope),
            ("risk.signal_odds_ratio", self.risk.signal_odds_ratio),
        ] {
            if !(v.is_finite() && v > 0.0) {
                return Err(ConfigError::invalid(key, "must be a positive number"));
            }
        }
        if !self.risk.calibration_intercept.is_finite() {
            return Err(ConfigError::invalid(
                "risk.calibration_intercept",
                "must be a finite number",
            ));
        }
        if self.kafka.input_topics.is_empty() {
            return Err(ConfigError::invalid(
                "kafka.input_topics",
                "must name at least one topic",
            ));
        }
        Ok(())
    }

    /// The changelog topic: `pipeline.changelog_topic`, or
    /// `<kafka.group_id>-state-changelog` when that is empty.
    pub fn changelog_topic(&self) -> String {
        if self.pipeline.changelog_topic.is_empty() {
            format!("{}-state-changelog", self.kafka.group_id)
        } else {
            self.pipeline.changelog_topic.clone()
        }
    }

    /// The brokers, required by `run` and `simulate --brokers`.
    pub fn require_brokers(&self) -> Result<&str, ConfigError> {
        if self.kafka.brokers.trim().is_empty() {
            return Err(ConfigError::invalid(
                "kafka.brokers",
                "is required (set it in the file or CHURNWATCH_KAFKA_BROKERS)",
            ));
        }
        Ok(&self.kafka.brokers)
    }

    pub fn engine(&self) -> EngineConfig {
        EngineConfig {
            evict_after_ms: (self.state.evict_after_days > 0.0)
                .then_some((self.state.evict_after_days * 86_400_000.0) as i64),
            member_cache_bytes: self.engine.member_cache_mb << 20,
            member_format: self.state.member_format,
            detect: self.detect.clone(),
            lifecycle: self.lifecycle.clone(),
            alerts: self.alerts.clone(),
            clock: self.time.clone(),
            risk: self.risk.clone(),
            timer_read_chunk: crate::engine::TIMER_READ_CHUNK,
            validator: Validator {
                max_event_bytes: self.input.max_event_bytes,
                future_skew_ms: self.time.future_skew_ms,
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loads_the_shipped_sample_config() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("config/churnwatch.toml");
        let text = std::fs::read_to_string(&path).unwrap();
        let cfg = Config::parse(&text).unwrap();
        cfg.validate().unwrap();
        assert_eq!(cfg.kafka.brokers, "127.0.0.1:9092");
        assert_eq!(cfg.kafka.input_topics, ["member-events"]);
        assert_eq!(cfg.state.dir, PathBuf::from("./data/churnwatch"));
        assert_eq!(cfg.http.listen, "127.0.0.1:9464");
        // The sample documents the defaults: it must agree with them.
        let defaults = Config {
            kafka: KafkaConfig {
                brokers: "127.0.0.1:9092".into(),
                ..KafkaConfig::default()
            },
            ..Config::default()
        };
        assert_eq!(cfg, defaults);
    }

    #[test]
    fn an_empty_file_gives_the_defaults() {
        assert_eq!(Config::parse("").unwrap(), Config::default());
    }

    #[test]
    fn unknown_keys_are_errors_naming_the_key() {
        let err = Config::parse("[kafka]\nbrokerz = \"x\"\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("kafka") && err.contains("brokerz"), "{err}");
        let err = Config::parse("[detect.purchase_gap]\nmin_gapz = 3\n")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("detect.purchase_gap") && err.contains("min_gapz"),
            "{err}"
        );
    }

    #[test]
    fn wrong_types_name_the_key() {
        let err = Config::parse("[state]\nblock_cache_mb = \"lots\"\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("state.block_cache_mb"), "{err}");
    }

    #[test]
    fn members_are_written_packed_unless_a_rolling_upgrade_asks_for_fixed() {
        assert_eq!(
            Config::default().engine().member_format,
            MemberFormat::Packed
        );
        let cfg = Config::parse("[state]\nmember_format = \"fixed\"\n").unwrap();
        assert_eq!(cfg.engine().member_format, MemberFormat::Fixed);
        let err = Config::parse("[state]\nmember_format = \"v2\"\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("state.member_format"), "{err}");
    }

    #[test]
    fn client_settings_the_delivery_guarantee_rests_on_are_refused_naming_the_key() {
        for key in [
            "enable.idempotence",
            "max.in.flight.requests.per.connection",
            "max.in.flight",
            "group.id",
        ] {
            let text = format!("[kafka.client]\n\"{key}\" = \"5\"\n");
            let err = Config::parse(&text)
                .and_then(|c| c.validate().map(|_| c))
                .unwrap_err()
                .to_string();
            assert!(err.contains(&format!("kafka.client.\"{key}\"")), "{err}");
        }
        let ok = Config::parse("[kafka.client]\n\"linger.ms\" = \"20\"\n").unwrap();
        assert!(ok.validate().is_ok());
    }

    #[test]
    fn validation_names_the_key() {
        let mut cfg = Config::default();
        cfg.lifecycle.churned_days = 60.0;
        assert!(cfg
            .validate()
            .unwrap_err()
            .to_string()
            .contains("lifecycle.churned_days"));
        for days in [-1.0, 90.0, f64::NAN] {
            let mut cfg = Config::default();
            cfg.state.evict_after_days = days;
            assert!(
                cfg.validate()
                    .unwrap_err()
                    .to_string()
                    .contains("state.evict_after_days"),
                "{days}"
            );
        }
        let mut cfg = Config::default();
        cfg.state.evict_after_days = 400.0;
        assert_eq!(cfg.engine().evict_after_ms, Some(400 * 86_400_000));
        assert!(cfg.validate().is_ok());
        cfg.http.listen = "nowhere".into();
        assert!(cfg
            .validate()
            .unwrap_err()
            .to_string()
            .contains("http.listen"));
        let mut cfg = Config::default();
        cfg.alerts
            .playbook
            .just_dormant
            .signals
            .insert("purchase_gapp".into(), "x".into());
        assert!(cfg
            .validate()
            .unwrap_err()
            .to_string()
            .contains("purchase_gapp"));
        assert!(Config::default()
            .require_brokers()
            .unwrap_err()
            .to_string()
            .contains("kafka.brokers"));
    }

    #[test]
    fn environment_overrides_the_file() {
        let mut cfg = Config::parse("[kafka]\nbrokers = \"a:1\"\n").unwrap();
        cfg.apply_env(|k| match k {
            "CHURNWATCH_KAFKA_BROKERS" => Some("b:2".into()),
            "CHURNWATCH_STATE_DIR" => Some("/tmp/x".into()),
            "CHURNWATCH_HTTP_LISTEN" => Some("0.0.0.0:1".into()),
            "CHURNWATCH_KAFKA_GROUP_INSTANCE_ID" => Some("churnwatch-2".into()),
            _ => None,
        });
        assert_eq!(cfg.kafka.client["group.instance.id"], "churnwatch-2");
        assert_eq!(cfg.kafka.brokers, "b:2");
        assert_eq!(cfg.state.dir, PathBuf::from("/tmp/x"));
        assert_eq!(cfg.http.listen, "0.0.0.0:1");
    }
}
