//! `churnwatch run`: the Kafka pipeline around the engine.
//!
//! # Delivery guarantee
//!
//! **Effectively once for state, at least once for alerts and dead letters,
//! with stable ids.** Each batch of input messages ends in one RocksDB write
//! batch holding the changed member state, timers, the next input offset of
//! every partition in the batch, and the batch's alerts and dead letters in
//! an outbox. After a crash the engine resumes from the offsets in RocksDB,
//! so every event changes state exactly once, whatever Kafka's committed
//! offsets say (those are committed only for lag monitoring). Outbox records
//! are published in order (one request in flight, see `sink`) and deleted
//! only once the broker has acknowledged them; a crash between acknowledgement and deletion
//! publishes a record again, with the same `alert_id` (dead letters: same
//! source topic/partition/offset headers), so subscribers can deduplicate.
//!
//! **State follows its partition.** The same write batch also puts every
//! changed member's state and a commit marker (the partition's input
//! offsets) in the outbox for the changelog topic, published only after the
//! alerts written before them were acknowledged. A newly assigned partition
//! is assigned paused and restored from the changelog to partition EOF on a
//! thread of its own (see `changelog` and `restore`) while the other
//! partitions keep processing; then it is sought to the restored offset and
//! resumed. A moved partition thus keeps its members' history, timers and
//! open episodes, and its new owner neither misses an alert the old one
//! committed but never sent nor raises one with a different id.
//!
//! # Threads
//!
//! The driver (this module: polling, outbox, restores, rebalances and the
//! commit) runs on one thread; the engine work of each batch runs on
//! `engine.threads` engine threads, each owning the partitions `p % threads`
//! (see [`crate::engine::EngineGroup`]), and every commit is still one
//! atomic write of all of them. While a backlog comes in full batches that
//! write runs on the group's writer thread as the engines process the next
//! batch (`Driver::commit_behind`); nothing it carries is published before
//! it lands.
//!
//! # Limits
//!
//! - Engine partition = Kafka partition number. With several input topics
//!   a member's events must be co-partitioned (same key, same partition
//!   count), as the default partitioner does for topics of equal size.
//! - Alert order is guaranteed per member (key = member id, one producer),
//!   not across members.
//! - During a broker outage the outbox grows up to `pipeline.outbox_max`,
//!   then consumption pauses; nothing is dropped. If the pause outlasts
//!   `max.poll.interval.ms` the consumer leaves the group and rejoins later.
//! - A rebalance waits for the engine to commit what it has consumed; with
//!   the default 5,000-message batches that is well under a second.
//! - Kafka redelivery after a rebalance race is absorbed: messages below the
//!   offset stored with the state are skipped, and duplicate `event_id`s
//!   change nothing.
//! - No broker transactions (tansu has none): an instance the group has
//!   already replaced (stalled past its session timeout) can still publish
//!   changelog records for the partition it lost. Restores leave them out
//!   by owner epoch (`changelog`, "Fencing"), where Kafka Streams fences
//!   such writers with transactions.
//! - Each partition has its own stream clock (SPEC §3), restored with its
//!   state: a partition that restores, lags or has not delivered yet holds
//!   no other back and is pushed by none.

pub mod changelog;
mod inputs;
pub mod outbox;
mod positions;
pub mod restore;
pub mod sink;
pub mod source;
pub mod topics;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::RecvTimeoutError;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::message::Message;
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};
use rdkafka::ClientConfig;

use crate::config::Config;
use crate::engine::{Change, EngineError, EngineGroup, Input, Outcome};
use crate::state::keys::GLOBAL_PARTITION;
use crate::state::{Batch, RocksStore, Store, StoreError, Table};
use crate::telemetry::events::{
    AlertDelivered, AlertPublished, BatchProcessed, BrokerError, ChangelogWritten, ConsumerLag,
    DeadLetterWritten, LogThrottle, OutboxDepth, PartitionDropped, PartitionHeld, PartitionOwned,
    PartitionsChanged, Readiness, RestoreFinished, RestoreStarted, RestoreStopped,
    StateWriteFailed, StateWritesResumed,
};
use crate::telemetry::Metrics;
use changelog::RestoreError;
use inputs::InputProgress;
use outbox::{Outbox, OutboxRecord};
use positions::ChangelogPositions;
use restore::{RestoreTask, Restores};
use sink::Delivery;
use sink::Sink;
use source::{SourceContext, SourceMsg, SourceOptions, Start, TopicPartition};

/// The state store as the pipeline's threads share it (the engine thread,
/// restore threads, the member API).
pub(crate) type SharedStore = Arc<dyn Store>;

#[derive(Debug, thiserror::Error)]
pub enum PipelineError {
    #[error("kafka client: {0}")]
    Kafka(#[from] rdkafka::error::KafkaError),
    #[error("state store: {0}")]
    Store(#[from] StoreError),
    #[error("engine: {0}")]
    Engine(#[from] EngineError),
    #[error("cannot create state directory {path}: {source}")]
    StateDir {
        path: String,
        source: std::io::Error,
    },
    #[error("creating topics: {0}")]
    Topics(String),
    #[error("restoring partition {partition} from the changelog: {source}")]
    Restore {
        partition: u32,
        source: RestoreError,
    },
}

/// Shared flags between the pipeline, the HTTP endpoints and signal handling.
#[derive(Clone, Default)]
pub struct Control {
    /// Set to stop: the pipeline finishes its batch, drains the outbox
    /// (up to `pipeline.shutdown_grace_ms`) and returns.
    pub shutdown: Arc<AtomicBool>,
    /// Partitions assigned, store open, and the last batch committed recently.
    pub ready: Arc<AtomicBool>,
    /// The store and the partitions processed or restoring here, for the
    /// member API (`GET /members/{member_id}`).
    pub members: Arc<crate::members::live::Live>,
}

/// librdkafka settings common to every client, then the pass-through ones.
/// Consumer-only properties are left out of the producer and admin clients,
/// where librdkafka would warn about each one.
pub fn client_config(cfg: &Config) -> ClientConfig {
    let mut c = ClientConfig::new();
    c.set("bootstrap.servers", &cfg.kafka.brokers);
    for (k, v) in &cfg.kafka.client {
        if !is_consumer_only(k) {
            c.set(k, v);
        }
    }
    forbid_auto_create(&mut c);
    c
}

/// Nothing churnwatch merely looks at may be created by looking: brokers
/// with `auto.create.topics.enable` (Apache Kafka's default, tansu with
/// `memory://` storage) create a topic a metadata request names, with the
/// broker's default partition count, and librdkafka allows that by default
/// for producer-type handles (producers and admin clients). Topics are
/// created only by `topics::ensure`, with the partition count they need.
fn forbid_auto_create(c: &mut ClientConfig) {
    c.set("allow.auto.create.topics", "false");
}

fn is_consumer_only(key: &str) -> bool {
    const PREFIXES: [&str; 8] = [
        "group.",
        "session.timeout.ms",
        "heartbeat.interval.ms",
        "partition.assignment.strategy",
        "auto.offset.reset",
        "fetch.",
        "isolation.level",
        "max.poll.interval.ms",
    ];
    PREFIXES.iter().any(|p| key.starts_with(p))
}

use changelog::offset_key;

fn read_offset(store: &dyn Store, tp: &TopicPartition) -> Result<Option<i64>, StoreError> {
    changelog::read_i64(store, &offset_key(&tp.0, tp.1))
}

/// Runs until `control.shutdown` is set. Blocks the calling thread; `rt`
/// serves the admin calls made at start-up.
pub fn run(
    cfg: &Config,
    metrics: Arc<Metrics>,
    control: Control,
    rt: &tokio::runtime::Handle,
) -> Result<(), PipelineError> {
    cfg.require_brokers()
        .map_err(|e| PipelineError::Topics(e.to_string()))?;
    if cfg.pipeline.create_topics || cfg.pipeline.changelog {
        // Brokers down at start-up are an outage like any other: keep
        // retrying (readyz stays false) until they answer or we are stopped.
        let mut backoff = Duration::from_millis(500);
        loop {
            let shutdown = control.shutdown.clone();
            let attempt = rt.block_on(async {
                tokio::select! {
                    r = topics::ensure(cfg) => Some(r),
                    () = async {
                        while !shutdown.load(Ordering::Relaxed) {
                            tokio::time::sleep(Duration::from_millis(100)).await;
                        }
                    } => None,
                }
            });
            match attempt {
                None => return Ok(()),
                Some(Ok(())) => break,
                Some(Err(topics::TopicsError::Fatal(e))) => return Err(PipelineError::Topics(e)),
                Some(Err(error)) => BrokerError {
                    context: "ensuring topics",
                    error: &error,
                    log: true,
                }
                .emit(&metrics),
            }
            let until = Instant::now() + backoff;
            while Instant::now() < until {
                if control.shutdown.load(Ordering::Relaxed) {
                    return Ok(());
                }
                std::thread::sleep(Duration::from_millis(100));
            }
            backoff = (backoff * 2).min(Duration::from_secs(10));
        }
    }
    std::fs::create_dir_all(&cfg.state.dir).map_err(|source| PipelineError::StateDir {
        path: cfg.state.dir.display().to_string(),
        source,
    })?;
    // Shared with restore threads, which write only partitions the engine
    // is not processing.
    // The one place the pipeline names RocksDB: everything past here sees
    // the `Store` trait, so another store (a fault-injecting one in tests)
    // drops in.
    let store: SharedStore = Arc::new(RocksStore::open(&cfg.state.dir, &cfg.state.tuning())?);
    control.members.set_store(store.clone());
    check_bootstrapped_partitions(cfg, &store, rt)?;
    let mut engine = EngineGroup::new(
        store,
        cfg.engine(),
        metrics.clone(),
        cfg.engine.thread_count(),
    )?;
    // Commits of a backlog are written while the engines process the next
    // batch (see `Driver::commit_behind`).
    engine.write_behind();

    let sink = Sink::new(
        client_config(cfg),
        &cfg.kafka.alert_topic,
        &cfg.kafka.dlq_topic,
        &cfg.changelog_topic(),
    )?;
    let mut consumer_cfg = client_config(cfg);
    consumer_cfg
        .set("group.id", &cfg.kafka.group_id)
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .set("auto.offset.reset", "earliest")
        // The end of a partition is what tells idle input (the clock may
        // follow the wall clock) from a backlog not fetched yet.
        .set("enable.partition.eof", "true")
        .set("statistics.interval.ms", "5000")
        // A fetch answers as soon as data exists on Kafka; brokers that hold
        // it for the full wait (tansu does) would add up to 500 ms of
        // latency with librdkafka's default.
        .set("fetch.wait.max.ms", "50")
        // Incremental rebalancing: a joining or leaving instance moves only
        // the partitions that change owner; the others keep processing.
        .set("partition.assignment.strategy", "cooperative-sticky")
        .set(
            "max.poll.interval.ms",
            cfg.pipeline.max_poll_interval_ms.to_string(),
        );
    // Pass-through settings win over the defaults above.
    for (k, v) in &cfg.kafka.client {
        consumer_cfg.set(k, v);
    }
    forbid_auto_create(&mut consumer_cfg);
    let (source, rx) = source::start(
        consumer_cfg,
        &cfg.kafka.input_topics,
        SourceOptions {
            batch_max_messages: cfg.pipeline.batch_max_messages,
            batch_max_wait: Duration::from_millis(cfg.pipeline.batch_max_wait_ms),
        },
        control.shutdown.clone(),
        metrics.clone(),
    )?;

    let mut driver = Driver::new(
        cfg,
        engine,
        sink,
        source.consumer.clone(),
        metrics,
        control.clone(),
    )?;
    tracing::info!(
        brokers = %cfg.kafka.brokers,
        topics = ?cfg.kafka.input_topics,
        state = %cfg.state.dir.display(),
        outbox = driver.outbox.len(),
        "pipeline started"
    );
    let tick = Duration::from_millis(200);
    let result = loop {
        if control.shutdown.load(Ordering::Relaxed) {
            break Ok(());
        }
        if driver.outbox.is_full() {
            // Backpressure: let the broker catch up before reading more.
            if let Err(e) = driver.tick() {
                break Err(e);
            }
            std::thread::sleep(tick);
            continue;
        }
        let step = match rx.recv_timeout(tick) {
            Ok(msg) => driver.handle(msg),
            Err(RecvTimeoutError::Timeout) => Ok(()),
            Err(RecvTimeoutError::Disconnected) => break Ok(()),
        };
        if let Err(e) = step.and_then(|()| driver.tick()) {
            break Err(e);
        }
        driver.publish_partitions();
    };
    // Drain what the source already handed over, then finish publishing.
    while let Ok(msg) = rx.try_recv() {
        driver.handle(msg)?;
    }
    driver.shutdown(Duration::from_millis(cfg.pipeline.shutdown_grace_ms))?;
    control.ready.store(false, Ordering::Relaxed);
    drop(rx);
    let _ = source.thread.join();
    result
}

/// A state directory built by `churnwatch bootstrap` holds members on the
/// partitions of a topic with a given partition count; on a topic with
/// another count they would sit on the wrong partitions.
fn check_bootstrapped_partitions(
    cfg: &Config,
    store: &dyn Store,
    rt: &tokio::runtime::Handle,
) -> Result<(), PipelineError> {
    let key = crate::state::keys::meta_key(
        GLOBAL_PARTITION,
        crate::bootstrap::META_BOOTSTRAP_PARTITIONS,
    );
    let Some(want) = changelog::read_i64(store, &key)? else {
        return Ok(());
    };
    let counts = rt
        .block_on(topics::input_partitions(cfg))
        .map_err(|e| PipelineError::Topics(e.to_string()))?;
    for (topic, n) in counts {
        if n as i64 != want {
            return Err(PipelineError::Topics(format!(
                "state.dir {} was bootstrapped for {want} partitions, but input topic {topic} has {n}: bootstrap again for this topic",
                cfg.state.dir.display()
            )));
        }
    }
    Ok(())
}

/// The dead letter of a record moved to the quarantine: its bytes, its key,
/// `churnwatch.error = corrupt_state: …`, and as source the pseudo-topic
/// `churnwatch-state/<kind>` with the record's partition (and changelog
/// offset, else -1), so it never looks like an input message.
fn quarantine_dead_letter(q: &crate::state::quarantine::Quarantined) -> OutboxRecord {
    OutboxRecord::DeadLetter {
        key: Some(q.key.clone()),
        payload: q.value.clone(),
        error: q.dead_letter_error(),
        topic: format!("churnwatch-state/{}", q.kind.as_str()),
        partition: q.partition as i32,
        offset: q.offset.unwrap_or(-1),
    }
}

/// The state store refusing writes, and when to try again.
struct StoreDown {
    since: Instant,
    backoff: Duration,
    next_try: Instant,
}

/// How long a revocation waits for the revoked partitions' changelog.
const REVOKE_FLUSH: Duration = Duration::from_secs(2);

/// Changelog settings the driver needs at run time.
struct ChangelogSettings {
    topic: String,
    /// Base config of the consumer that reads the changelog on restore.
    client: ClientConfig,
    input_topics: Vec<String>,
    batch_records: usize,
    max_concurrent_restores: usize,
    drop_unowned_after_ms: i64,
}

/// The engine side of the pipeline: owns the engine, the outbox and the
/// offsets, and is the only writer of the store.
struct Driver {
    engine: EngineGroup<SharedStore>,
    sink: Sink,
    /// To seek and resume partitions once restored.
    consumer: Arc<BaseConsumer<SourceContext>>,
    metrics: Arc<Metrics>,
    control: Control,
    outbox: Outbox,
    /// Outbox records below this sequence number are in the store and may
    /// be published; those above wait for the write that carries them.
    durable_below: u64,
    /// The outbox's next sequence number when the last commit was staged:
    /// durable once that commit's write has landed.
    staged_below: u64,
    /// The first batch processed since the last commit was received at
    /// this moment (latency is measured from there).
    batch_received: Option<Instant>,
    /// Next input offset of every partition with messages processed since
    /// the last commit: every commit writes them with the state they led to.
    uncommitted: BTreeMap<TopicPartition, i64>,
    /// While batches come full (a backlog), commit at most this often
    /// (`pipeline.commit_interval_ms`).
    commit_interval: Duration,
    /// `pipeline.batch_max_messages`: a batch this long was cut by count,
    /// so more input is waiting.
    batch_full: usize,
    input: InputProgress,
    /// Partitions assigned (paused) and being restored.
    restores: Restores,
    changelog: Option<ChangelogSettings>,
    positions: ChangelogPositions,
    last_message: Instant,
    /// Set while the state store refuses writes (disk full, read-only):
    /// consumption is paused and the refused commit retried with back-off.
    store_down: Option<StoreDown>,
    /// Input batches received while the store refused writes, processed in
    /// order once it accepts them again.
    held: std::collections::VecDeque<(Vec<rdkafka::message::OwnedMessage>, Instant)>,
    /// Assigned partitions whose state the store refused to make ready (a
    /// timer index rebuilt on a full disk): held paused, and started once
    /// the store takes writes again, where their state says.
    unstarted: Vec<TopicPartition>,
    last_commit: Instant,
    last_stats: Instant,
    last_sweep: Instant,
    error_log: LogThrottle,
    last_error: Option<Instant>,
    json: Vec<u8>,
}

impl Driver {
    fn new(
        cfg: &Config,
        engine: EngineGroup<SharedStore>,
        sink: Sink,
        consumer: Arc<BaseConsumer<SourceContext>>,
        metrics: Arc<Metrics>,
        control: Control,
    ) -> Result<Self, PipelineError> {
        // Whatever a previous run committed but never got acknowledged is
        // published again first (changelog records once their partition is
        // assigned again, see `restore`).
        let outbox = Outbox::load(engine.store(), cfg.pipeline.outbox_max, &metrics)?;
        let durable_below = outbox.next_seq();
        let changelog = cfg.pipeline.changelog.then(|| {
            let mut client = client_config(cfg);
            client.set(
                "group.id",
                format!("{}-changelog-restore", cfg.kafka.group_id),
            );
            ChangelogSettings {
                topic: cfg.changelog_topic(),
                client,
                input_topics: cfg.kafka.input_topics.clone(),
                batch_records: cfg.pipeline.restore_batch_records,
                max_concurrent_restores: cfg.pipeline.max_concurrent_restores,
                drop_unowned_after_ms: cfg.pipeline.drop_unowned_after_ms as i64,
            }
        });
        Ok(Driver {
            engine,
            sink,
            consumer,
            metrics,
            control,
            outbox,
            durable_below,
            staged_below: durable_below,
            batch_received: None,
            uncommitted: BTreeMap::new(),
            commit_interval: Duration::from_millis(cfg.pipeline.commit_interval_ms),
            batch_full: cfg.pipeline.batch_max_messages,
            input: InputProgress::default(),
            restores: Restores::default(),
            changelog,
            positions: ChangelogPositions::default(),
            last_message: Instant::now(),
            store_down: None,
            unstarted: Vec::new(),
            held: std::collections::VecDeque::new(),
            last_commit: Instant::now(),
            last_stats: Instant::now() - Duration::from_secs(60),
            last_sweep: Instant::now(),
            error_log: LogThrottle::default(),
            last_error: None,
            json: Vec::with_capacity(4096),
        })
    }

    /// Partition numbers the engine processes (one number can span several
    /// input topics); partitions still restoring are not among them.
    fn owned(&self) -> BTreeSet<i32> {
        self.input.owned()
    }

    /// Tells the member API which partitions are processed here (with their
    /// clocks) and which are restoring.
    fn publish_partitions(&self) {
        self.control.members.publish(
            self.engine.clocks(),
            self.restores.partitions().map(|p| p as u32),
        );
    }

    /// Input partitions assigned by the group, restoring or not.
    fn assigned_count(&self) -> usize {
        self.input.assigned().len() + self.restores.input_partitions() + self.unstarted.len()
    }

    fn handle(&mut self, msg: SourceMsg) -> Result<(), PipelineError> {
        match msg {
            SourceMsg::Batch(messages, received) => {
                if self.store_down.is_some() || !self.held.is_empty() {
                    self.held.push_back((messages, received));
                    return Ok(());
                }
                self.batch(messages, received)
            }
            SourceMsg::Assigned(parts, reply) => {
                // Rebalances see the store as the engines do.
                self.landed_behind(true)?;
                let owned = self.owned();
                let mut starts = Vec::with_capacity(parts.len());
                for tp in parts {
                    PartitionOwned {
                        topic: &tp.0,
                        partition: tp.1,
                        owned: true,
                    }
                    .emit(&self.metrics);
                    if self.changelog.is_some() && !owned.contains(&tp.1) {
                        // Not read until restored: assigned paused, at a
                        // placeholder the seek after the restore replaces.
                        // A concrete offset, not a logical one: librdkafka
                        // would look a logical one up, and a seek during
                        // that lookup fails.
                        let hint = read_offset(self.engine.store(), &tp)?.unwrap_or(0);
                        starts.push(Start {
                            offset: Some(Offset::Offset(hint)),
                            paused: true,
                        });
                        self.start_restore(tp)?;
                        continue;
                    }
                    let start = match self.start_or_hold(tp.clone())? {
                        Some(offset) => Start {
                            offset,
                            paused: false,
                        },
                        // Disk trouble is waited out here too: assigned
                        // paused where its state says, started later.
                        None => Start {
                            offset: self.start_offset(&tp)?.1,
                            paused: true,
                        },
                    };
                    starts.push(start);
                }
                // Cooperative rebalances in which this instance gains
                // nothing still call back, with no partitions: not a change.
                if !starts.is_empty() {
                    self.assignment_changed();
                }
                let _ = reply.send(starts);
                Ok(())
            }
            SourceMsg::Revoked(parts, ack) => {
                // Everything consumed is committed at the end of each batch;
                // commit once more for pending outbox deletions, publish the
                // revoked partitions' changelog so the next owner finds it,
                // then let go.
                tracing::debug!(partitions = ?parts, "revoking");
                self.commit(Batch::default())?;
                let owned = self.owned();
                let revoked: BTreeSet<i32> = parts.iter().map(|tp| tp.1).collect();
                // Bounded, and short: the flush only spares the next owner
                // some reprocessing (what is not published stays in this
                // outbox and is never sent while the partition is elsewhere),
                // while a slow revocation holds up the whole group.
                let processing = revoked.intersection(&owned).copied().collect();
                self.flush_changelog(&processing, REVOKE_FLUSH)?;
                self.unstarted.retain(|u| !parts.contains(u));
                self.held_changed();
                for tp in &parts {
                    self.input.stop(tp);
                    if self.restores.leave(tp) {
                        self.stop_restore(tp.1)?;
                    }
                    ConsumerLag {
                        topic: &tp.0,
                        partition: tp.1,
                        lag: None,
                    }
                    .emit(&self.metrics);
                    PartitionOwned {
                        topic: &tp.0,
                        partition: tp.1,
                        owned: false,
                    }
                    .emit(&self.metrics);
                }
                let still = self.owned();
                let now = chrono::Utc::now().timestamp_millis();
                let mut since = Batch::default();
                for p in &revoked {
                    if !still.contains(p) && !self.restores.contains(*p) {
                        self.engine.revoke(*p as u32);
                        self.input.forget(*p);
                        self.positions.release(*p);
                        since.put(
                            Table::Meta,
                            changelog::unowned_since_key(*p as u32),
                            now.to_le_bytes(),
                        );
                    }
                }
                self.commit(since)?;
                PartitionsChanged {
                    kind: "revoke",
                    partitions: &parts,
                    owned: self.assigned_count(),
                }
                .emit(&self.metrics);
                let _ = ack.send(());
                Ok(())
            }
            SourceMsg::Eof(tp) => {
                // Read to its end: nothing more to gather into this commit.
                let waiting = self.uncommitted.contains_key(&tp);
                self.input.reached_end(tp);
                if waiting && self.store_down.is_none() && self.held.is_empty() {
                    self.commit(Batch::default())?;
                    self.publish();
                }
                Ok(())
            }
            SourceMsg::Error(e) => {
                self.last_error = Some(Instant::now());
                // A broker outage reports the same error many times a second.
                BrokerError {
                    context: "consuming",
                    error: &e,
                    log: self.error_log.due(),
                }
                .emit(&self.metrics);
                Ok(())
            }
        }
    }

    /// Hands an assigned partition whose state is in place to the engine;
    /// returns where its input starts.
    fn start_partition(&mut self, tp: TopicPartition) -> Result<Option<Offset>, PipelineError> {
        let (next, offset) = self.start_offset(&tp)?;
        self.engine.assign(tp.1 as u32)?;
        self.input.start(tp, next);
        Ok(offset)
    }

    /// [`Self::start_partition`], or, when the store refuses the writes
    /// that takes (a full disk), holds `tp` back until it takes them again
    /// (see `unstarted`): `None`, and the caller leaves it paused. The one
    /// way a partition starts: at assign, after a restore, after a hold.
    fn start_or_hold(
        &mut self,
        tp: TopicPartition,
    ) -> Result<Option<Option<Offset>>, PipelineError> {
        match self.start_partition(tp.clone()) {
            Ok(offset) => Ok(Some(offset)),
            Err(PipelineError::Engine(EngineError::Store(e))) => {
                self.store_refused(&e)?;
                self.hold(tp);
                Ok(None)
            }
            Err(e) => Err(e),
        }
    }

    /// The next offset of `tp` its state holds, and where its input starts.
    fn start_offset(
        &self,
        tp: &TopicPartition,
    ) -> Result<(Option<i64>, Option<Offset>), PipelineError> {
        let next = read_offset(self.engine.store(), tp)?;
        let offset = match next {
            Some(n) => Some(Offset::Offset(n)),
            // With a changelog, state without offsets is state from
            // nothing: the input must be read from its start, not from
            // where the group last committed.
            None if self.changelog.is_some() => Some(Offset::Beginning),
            None => None,
        };
        Ok((next, offset))
    }

    /// Reports the input partitions now started, after an assignment or
    /// after held ones were started.
    fn assignment_changed(&self) {
        PartitionsChanged {
            kind: "assign",
            partitions: self.input.assigned(),
            owned: self.assigned_count(),
        }
        .emit(&self.metrics);
    }

    /// Holds `tp` back until the store takes writes (see `unstarted`).
    fn hold(&mut self, tp: TopicPartition) {
        PartitionHeld {
            topic: &tp.0,
            partition: tp.1,
        }
        .emit(&self.metrics);
        self.unstarted.push(tp);
        self.held_changed();
    }

    fn held_changed(&self) {
        self.metrics
            .partitions_held
            .set(self.unstarted.len() as i64);
    }

    /// Starts the partitions held back while the store refused writes (see
    /// `unstarted`), once it takes them: seeks each where its state says
    /// (a restored one waits at a placeholder) and resumes it.
    fn start_unstarted(&mut self) -> Result<(), PipelineError> {
        if self.unstarted.is_empty() || self.store_down.is_some() {
            return Ok(());
        }
        let held = std::mem::take(&mut self.unstarted);
        let started = self.start_paused(held)?;
        self.held_changed();
        if started > 0 {
            self.assignment_changed();
        }
        Ok(())
    }

    /// Starts partitions assigned paused (restored, or held back): each is
    /// sought where its state says (replacing a restore's placeholder:
    /// with a changelog that is always a concrete place) and resumed; one
    /// the store still refuses is held again. Returns how many resumed.
    fn start_paused(&mut self, parts: Vec<TopicPartition>) -> Result<usize, PipelineError> {
        let mut resume = TopicPartitionList::new();
        for tp in parts {
            if let Some(offset) = self.start_or_hold(tp.clone())? {
                if let Some(offset) = offset {
                    self.seek(&tp, offset)?;
                }
                resume.add_partition(&tp.0, tp.1);
            }
        }
        if resume.count() > 0 {
            self.consumer.resume(&resume)?;
        }
        Ok(resume.count())
    }

    /// Starts restoring the partition of `tp` from the changelog (or adds
    /// `tp` to a restore of its partition number already running).
    fn start_restore(&mut self, tp: TopicPartition) -> Result<(), PipelineError> {
        let Some(cl) = &self.changelog else {
            return Ok(());
        };
        if self.restores.join_existing(&tp) {
            return Ok(());
        }
        let p = tp.1 as u32;
        let store = self.engine.store().clone();
        let from = restore::start_offset(&store, p)?;
        let pending = self.outbox.changelog_of(tp.1);
        let stored = self.outbox.stored_of(&pending);
        RestoreStarted {
            partition: p,
            from,
            pending_local: pending.len(),
        }
        .emit(&self.metrics);
        let task = RestoreTask {
            partition: p,
            from,
            store,
            client: cl.client.clone(),
            topic: cl.topic.clone(),
            input_topics: cl.input_topics.clone(),
            batch_records: cl.batch_records,
            pending,
            stored,
            metrics: self.metrics.clone(),
        };
        self.restores.add(task, tp);
        self.control.ready.store(false, Ordering::Relaxed);
        Readiness { ready: false }.emit(&self.metrics);
        self.launch_restores();
        Ok(())
    }

    /// Launches waiting restores, lowest partition first, while fewer than
    /// `pipeline.max_concurrent_restores` run.
    fn launch_restores(&mut self) {
        let Some(cl) = &self.changelog else {
            return;
        };
        if self.store_down.is_some() {
            return; // launched again once the store takes writes
        }
        if self.control.shutdown.load(Ordering::Relaxed) {
            return;
        }
        self.restores.launch_waiting(cl.max_concurrent_restores);
    }

    /// Takes the reports of restore threads that ended. Outbox records a
    /// restore deleted from the store leave the in-memory outbox at once,
    /// even if the restore itself is no longer wanted.
    fn collect_restores(&mut self) {
        for seq in self.restores.collect() {
            self.outbox.forget(seq);
        }
    }

    /// Stops the restore of partition `p` (revoked, or shutting down).
    fn stop_restore(&mut self, p: i32) -> Result<(), PipelineError> {
        let Some(dropped) = self.restores.stop(p) else {
            return Ok(());
        };
        for seq in dropped {
            self.outbox.forget(seq);
        }
        RestoreStopped {
            partition: p as u32,
        }
        .emit(&self.metrics);
        self.launch_restores();
        Ok(())
    }

    /// Takes partition `p` under a new owner epoch, one above any seen (see
    /// `changelog`, "Fencing"): every changelog record from now on carries
    /// it, and the next commit writes a marker with it and its basis.
    fn take_ownership(&mut self, p: u32, seen: u64, basis: i64) -> Result<(), PipelineError> {
        let key = crate::state::keys::meta_key(p, "owner_epoch");
        let store = self.engine.store();
        let local = changelog::read_i64(store, &key)?.unwrap_or(0) as u64;
        let mut known = changelog::KnownOwners::read(store, p)?;
        let epoch = local.max(seen).max(known.max_epoch) + 1;
        // This owner's own fence is known too: an incremental restore that
        // meets this instance's markers again does not take them for news.
        known.max_epoch = epoch;
        known.fences.push((basis, epoch));
        let mut b = Batch::default();
        b.put(Table::Meta, key, (epoch as i64).to_le_bytes());
        b.put(
            Table::Meta,
            changelog::owners_key(p),
            serde_json::to_vec(&known).expect("serializable"),
        );
        store.write(b)?;
        self.positions.own(p as i32, epoch, basis);
        self.sink.set_epoch(p as i32, epoch, basis);
        tracing::info!(partition = p, epoch, basis, "owning partition");
        Ok(())
    }

    /// Moves a paused partition's fetch position. librdkafka drops whatever
    /// it fetched before the seek, so the first message of the partition
    /// the engine sees after it is at `offset`. A seek can be refused while
    /// the partition is between fetch states; it is retried briefly, and a
    /// partition that cannot be positioned stops the pipeline rather than
    /// be read from the wrong place (a restart assigns it afresh).
    fn seek(&self, tp: &TopicPartition, offset: Offset) -> Result<(), PipelineError> {
        let mut attempt = 0;
        loop {
            match self
                .consumer
                .seek(&tp.0, tp.1, offset, Duration::from_secs(10))
            {
                Ok(()) => return Ok(()),
                Err(e) if attempt < 50 => {
                    attempt += 1;
                    tracing::debug!(topic = %tp.0, partition = tp.1, error = %e, "seek refused; retrying");
                    std::thread::sleep(Duration::from_millis(100));
                }
                Err(e) => return Err(e.into()),
            }
        }
    }

    /// Hands every partition whose restore finished to the engine, sought to
    /// the offset its restored state ends at, and resumes its input.
    fn finish_restores(&mut self) -> Result<(), PipelineError> {
        self.collect_restores();
        for (done, job) in self.restores.take_ended() {
            let p = done.partition;
            let Some(mut job) = job else {
                continue; // revoked meanwhile
            };
            self.launch_restores();
            let r = match done.result {
                Ok(r) => r,
                Err(source) => {
                    RestoreStopped { partition: p }.emit(&self.metrics);
                    match source {
                        RestoreError::Stopped => continue,
                        // Disk trouble: wait it out like a refused commit,
                        // then restore again (from where it started).
                        RestoreError::Store(e) => {
                            self.store_refused(&e)?;
                            for tp in std::mem::take(&mut job.parts) {
                                self.start_restore(tp)?;
                            }
                            continue;
                        }
                        source => {
                            return Err(PipelineError::Restore {
                                partition: p,
                                source,
                            })
                        }
                    }
                }
            };
            for q in &r.quarantined {
                self.outbox.push(quarantine_dead_letter(q), None);
            }
            self.take_ownership(p, r.max_epoch, r.next)?;
            RestoreFinished {
                partition: p,
                records: r.records,
                members: r.members,
                next: r.next,
                seconds: r.seconds,
                from_scratch: done.from_scratch,
            }
            .emit(&self.metrics);
            // Restored, but if its timer index cannot be written it
            // waits, paused, for the store.
            self.start_paused(std::mem::take(&mut job.parts))?;
        }
        Ok(())
    }

    /// Publishes until no outbox record of `parts` is left on the changelog
    /// (alerts before them included), or `within` passes; then commits the
    /// deletions and checkpoints.
    fn flush_changelog(
        &mut self,
        parts: &BTreeSet<i32>,
        within: Duration,
    ) -> Result<(), PipelineError> {
        if self.changelog.is_none() {
            return Ok(());
        }
        let deadline = Instant::now() + within;
        loop {
            let (ok, _) = self.sink.drain_acks();
            self.acknowledged(ok);
            self.publish();
            let waiting = self
                .outbox
                .iter()
                .map(|(_, r)| r)
                .any(|r| r.changelog_partition().is_some_and(|p| parts.contains(&p)));
            if !waiting || Instant::now() >= deadline {
                break;
            }
            self.sink.flush(Duration::from_millis(100));
        }
        self.commit(Batch::default())
    }

    /// Deletes the local state of partitions owned elsewhere for longer than
    /// `pipeline.drop_unowned_after_ms`, with their unpublished changelog
    /// records (the current owner's changelog supersedes them).
    fn sweep_unowned(&mut self) -> Result<(), PipelineError> {
        let Some(cl) = &self.changelog else {
            return Ok(());
        };
        let owned = self.owned();
        let now = chrono::Utc::now().timestamp_millis();
        let store = self.engine.store();
        // Every partition with local state has its high mark in `meta`.
        let metas = store.scan(Table::Meta, &[], &GLOBAL_PARTITION.to_be_bytes(), 1_000_000)?;
        let local: BTreeSet<u32> = metas
            .iter()
            .filter(|(k, _)| k.get(4..) == Some(crate::engine::META_MAX_TS.as_bytes()))
            .filter_map(|(k, _)| {
                k.get(..4)
                    .map(|b| u32::from_be_bytes(b.try_into().expect("4 bytes")))
            })
            .collect();
        let mut drop = Vec::new();
        let mut batch = Batch::default();
        for p in local {
            if owned.contains(&(p as i32)) || self.restores.contains(p as i32) {
                continue;
            }
            match changelog::read_i64(store, &changelog::unowned_since_key(p))? {
                None => batch.put(
                    Table::Meta,
                    changelog::unowned_since_key(p),
                    now.to_le_bytes(),
                ),
                Some(since) if now - since >= cl.drop_unowned_after_ms => drop.push(p),
                Some(_) => {}
            }
        }
        store.write(batch)?;
        for p in drop {
            let mut batch = Batch::default();
            self.outbox.discard_changelog(p as i32, &mut batch);
            store.write(batch)?;
            let keys = changelog::drop_partition(store, p, &cl.input_topics)?;
            PartitionDropped { partition: p, keys }.emit(&self.metrics);
        }
        Ok(())
    }

    fn batch(
        &mut self,
        messages: Vec<rdkafka::message::OwnedMessage>,
        received: Instant,
    ) -> Result<(), PipelineError> {
        let started = received;
        self.batch_received.get_or_insert(started);
        self.last_message = Instant::now();
        let wall = chrono::Utc::now().timestamp_millis();
        let mut pending = self.input.fresh(&messages);
        while !pending.is_empty() {
            let inputs: Vec<Input<'_>> = pending
                .iter()
                .map(|&i| Input {
                    partition: messages[i].partition() as u32,
                    payload: messages[i].payload().unwrap_or_default(),
                })
                .collect();
            let outcomes = self.engine.process_batch(&inputs, wall)?;
            let mut left = Vec::new();
            for (&i, outcome) in pending.iter().zip(outcomes) {
                match outcome {
                    Some(outcome) => self.consumed(&messages[i], outcome),
                    None => left.push(i),
                }
            }
            if left.is_empty() {
                break;
            }
            // More timers due than may fire before a commit: commit what
            // fired (with each partition's offsets up to the message its
            // engine stopped at), then give the engines the rest again.
            self.commit_behind(Batch::default())?;
            if self.store_down.is_some() {
                // Nothing more until the store takes writes: the rest wait,
                // in order (those of other partitions already processed are
                // skipped when they come back, by their offsets).
                self.held
                    .push_front((messages[left[0]..].to_vec(), received));
                self.batch_received = None;
                return Ok(());
            }
            pending = left;
            self.batch_received.get_or_insert(started);
        }
        // A full batch means more input is waiting (a backlog): commits then
        // span batches, and a member busy in all of them is written (and
        // published to the changelog) once. A batch cut by time is live
        // input: it commits at once, so live latency stays what it was.
        let live = messages.len() < self.batch_full;
        if live {
            self.commit(Batch::default())?;
            self.publish();
        } else if self.last_commit.elapsed() >= self.commit_interval {
            self.commit_behind(Batch::default())?;
            self.publish();
        }
        Ok(())
    }

    /// Books a message the engine has processed: its dead letter if it was
    /// rejected, and its partition's progress.
    fn consumed(&mut self, m: &rdkafka::message::OwnedMessage, outcome: Outcome) {
        let tp = (m.topic().to_string(), m.partition());
        if let Outcome::Rejected(r) = outcome {
            self.outbox.push(
                OutboxRecord::DeadLetter {
                    key: m.key().map(<[u8]>::to_vec),
                    payload: m.payload().unwrap_or_default().to_vec(),
                    error: r.to_string(),
                    topic: tp.0.clone(),
                    partition: tp.1,
                    offset: m.offset(),
                },
                None,
            );
        }
        self.uncommitted.insert(tp.clone(), m.offset() + 1);
        self.input.consumed(tp, m.offset(), self.last_message);
    }

    /// Moves the engine's alerts, and dead letters for the records it
    /// moved to the quarantine, into the outbox.
    fn collect_alerts(&mut self) -> Result<(), PipelineError> {
        for q in self.engine.take_quarantined() {
            self.outbox.push(quarantine_dead_letter(&q), None);
        }
        let emitted = chrono::Utc::now().timestamp_millis();
        for raised in self.engine.take_alerts() {
            let a = raised.alert;
            self.json.clear();
            a.write_json(&mut self.json, emitted);
            AlertPublished {
                signal: a.signal,
                severity: a.severity,
            }
            .emit(&self.metrics);
            let rec = OutboxRecord::Alert {
                member_id: a.member_id.to_string(),
                json: self.json.clone(),
            };
            self.outbox.push(rec, self.batch_received);
        }
        Ok(())
    }

    /// One atomic write: engine state, the input offsets it was built
    /// from, `extra`, new outbox records (alerts, dead letters, and the
    /// changelog of what this commit changes), deletions of delivered ones,
    /// and changelog checkpoints. Every commit takes the offsets of all the
    /// input processed since the last one, and its alerts, whatever called
    /// it: state is never written without the offsets it stands for.
    fn commit(&mut self, extra: Batch) -> Result<(), PipelineError> {
        self.commit_as(extra, false)
    }

    /// [`Driver::commit`], written behind: the engines go on with the next
    /// batch while the store write runs on a thread of its own (a backlog's
    /// commits then cost the engines little more than staging). What the
    /// write carries (state, offsets, outbox records) is durable once it
    /// lands, which the next commit waits for, or a tick finds
    /// ([`Driver::landed_behind`]); its outbox records are published only
    /// then ([`Driver::publish`]). A refusal is found there too, and the
    /// refused write is written again, synchronously, before anything newer.
    /// Every other commit (live batches, rebalances, timers, shutdown) is
    /// durable when it returns.
    fn commit_behind(&mut self, extra: Batch) -> Result<(), PipelineError> {
        self.commit_as(extra, true)
    }

    fn commit_as(&mut self, mut extra: Batch, behind: bool) -> Result<(), PipelineError> {
        let offsets = std::mem::take(&mut self.uncommitted);
        for (tp, next) in &offsets {
            extra.put(Table::Meta, offset_key(&tp.0, tp.1), next.to_le_bytes());
            self.positions.input_moved(tp.1);
        }
        self.collect_alerts()?;
        if self.store_down.is_some() {
            // A real write, so that recovery is only declared when the
            // store takes one.
            extra.put(
                Table::Meta,
                crate::state::keys::meta_key(GLOBAL_PARTITION, "store_probe"),
                chrono::Utc::now().timestamp_millis().to_le_bytes(),
            );
        }
        // The partitions whose changelog flag the commit settles itself (it
        // reports on every partition the engine holds).
        let settled: BTreeSet<i32> = if self.changelog.is_some() {
            self.engine.clocks().map(|(p, _)| p as i32).collect()
        } else {
            BTreeSet::new()
        };
        self.outbox.stage(&mut extra, &settled);
        for (p, next) in self.positions.take_checkpoints() {
            extra.put(
                Table::Meta,
                changelog::checkpoint_key(p as u32),
                next.to_le_bytes(),
            );
        }
        let result = if self.changelog.is_some() {
            let (outbox, positions, offsets) =
                (&mut self.outbox, &mut self.positions, self.input.offsets());
            let mut changed = false;
            let mut written = 0;
            let result = self.engine.commit_with(extra, |change, b| {
                let (partition, member_id, value) = match change {
                    Change::Member {
                        partition,
                        member_id,
                        timer_due_ms,
                        state,
                    } => (
                        partition,
                        member_id,
                        Some(changelog::member_value(timer_due_ms, state)),
                    ),
                    // Evicted: a tombstone.
                    Change::MemberDeleted {
                        partition,
                        member_id,
                    } => (partition, member_id, None),
                    Change::PartitionDone {
                        partition,
                        max_ts,
                        clock_ms,
                    } => {
                        let p = partition as i32;
                        let changed = std::mem::take(&mut changed);
                        if let Some(mark) = positions.mark(p, changed, max_ts, clock_ms, offsets) {
                            outbox.push_changelog(OutboxRecord::ChangelogMark {
                                partition: p,
                                mark: mark.encode(),
                            });
                            written += 1;
                        }
                        outbox.settle_changelog(p, b);
                        return;
                    }
                };
                changed = true;
                outbox.push_changelog(OutboxRecord::Changelog {
                    partition: partition as i32,
                    member_id: member_id.to_string(),
                    value,
                });
                written += 1;
            });
            if result.is_ok() {
                ChangelogWritten(written).emit(&self.metrics);
            }
            result
        } else {
            self.engine.commit(extra)
        };
        // Made durable before returning unless written behind (a refusal of
        // the write is then found here, as a refused commit is).
        let result = result.and_then(|()| if behind { Ok(()) } else { self.engine.flush() });
        match result {
            Ok(()) => {
                if let Some(down) = self.store_down.take() {
                    self.store_recovered(down)?;
                }
            }
            // Disk trouble is waited out, not fatal: the engine keeps the
            // refused batch and writes it first next time.
            Err(EngineError::Store(e)) => {
                self.store_refused(&e)?;
                return Ok(());
            }
            Err(e) => return Err(e.into()),
        }
        // What this commit carries is durable now, or once its write lands;
        // the write before it has landed either way (a commit waits for it).
        self.durable_below = if self.engine.in_flight() {
            self.staged_below
        } else {
            self.outbox.next_seq()
        };
        self.staged_below = self.outbox.next_seq();
        self.last_commit = Instant::now();
        OutboxDepth(self.outbox.len()).emit(&self.metrics);
        if let Some(received) = self.batch_received.take() {
            BatchProcessed {
                seconds: received.elapsed().as_secs_f64(),
            }
            .emit(&self.metrics);
        }
        // Kafka's committed offsets only feed lag monitoring: the truth is in
        // RocksDB, so an async commit that fails costs nothing.
        if !offsets.is_empty() {
            let mut tpl = TopicPartitionList::new();
            for (tp, next) in &offsets {
                let _ = tpl.add_partition_offset(&tp.0, tp.1, Offset::Offset(*next));
            }
            let _ = self.consumer.commit(&tpl, CommitMode::Async);
        }
        Ok(())
    }

    /// Catches up with a commit written behind ([`Driver::commit_behind`]):
    /// once its write has landed, what it carries is durable and its outbox
    /// records may go; a refusal is a refused commit. `wait`: until it lands.
    fn landed_behind(&mut self, wait: bool) -> Result<(), PipelineError> {
        let landed = if wait {
            self.engine.land().map(|()| true)
        } else {
            self.engine.land_if_done()
        };
        match landed {
            Ok(true) => self.durable_below = self.staged_below,
            Ok(false) => {}
            Err(EngineError::Store(e)) => self.store_refused(&e)?,
            Err(e) => return Err(e.into()),
        }
        Ok(())
    }

    /// The store refused a commit: pause consumption (first time), count,
    /// log (rate-limited) and schedule a retry with back-off.
    fn store_refused(&mut self, error: &StoreError) -> Result<(), PipelineError> {
        let now = Instant::now();
        let down = self.store_down.get_or_insert_with(|| StoreDown {
            since: now,
            backoff: Duration::from_millis(250),
            next_try: now,
        });
        down.backoff = (down.backoff * 2).min(Duration::from_secs(30));
        down.next_try = now + down.backoff;
        StateWriteFailed {
            error,
            log: self.error_log.due(),
        }
        .emit(&self.metrics);
        self.control.ready.store(false, Ordering::Relaxed);
        let tpl = self.assigned_list();
        if tpl.count() > 0 {
            self.consumer.pause(&tpl)?;
        }
        Ok(())
    }

    /// The store took a write again: resume consumption.
    fn store_recovered(&mut self, down: StoreDown) -> Result<(), PipelineError> {
        StateWritesResumed {
            after: down.since.elapsed(),
        }
        .emit(&self.metrics);
        self.launch_restores();
        let tpl = self.assigned_list();
        if tpl.count() > 0 {
            self.consumer.resume(&tpl)?;
        }
        Ok(())
    }

    /// Every input partition the engine processes, as a list for librdkafka.
    fn assigned_list(&self) -> TopicPartitionList {
        let mut tpl = TopicPartitionList::new();
        for tp in self.input.assigned() {
            tpl.add_partition(&tp.0, tp.1);
        }
        tpl
    }

    /// Hands committed, not yet in-flight outbox records to the producer, in
    /// sequence order. A changelog record waits until every alert and dead
    /// letter written before it is acknowledged: state published to the
    /// changelog never runs ahead of the alerts it raised, so a new owner
    /// that restores it cannot miss an alert the crashed one never sent. It
    /// also waits while its partition is not assigned here: another
    /// instance may own it now (see `restore`).
    fn publish(&mut self) {
        if self.store_down.is_some() {
            // Records of a refused commit are not durable yet: published
            // only once they are, so a crash cannot publish what a restart
            // would not raise again.
            return;
        }
        let owned = self.owned();
        let mut alerts_unacknowledged = false;
        for (seq, rec) in self.outbox.iter() {
            if *seq >= self.durable_below {
                // In a write still in flight, or in no commit yet.
                break;
            }
            if let Some(p) = rec.changelog_partition() {
                if alerts_unacknowledged || !owned.contains(&p) {
                    continue;
                }
            } else {
                alerts_unacknowledged = true;
            }
            if self.sink.is_in_flight(*seq) {
                continue;
            }
            if !self.sink.send(*seq, rec) {
                break;
            }
            if matches!(rec, OutboxRecord::DeadLetter { .. }) {
                DeadLetterWritten.emit(&self.metrics);
            }
        }
    }

    fn acknowledged(&mut self, deliveries: Vec<Delivery>) {
        for d in deliveries {
            let received = self.outbox.acknowledge(d.seq);
            if let Some((p, offset)) = d.changelog {
                self.positions.acknowledged(p, offset);
            }
            if let Some(t) = received {
                AlertDelivered {
                    seconds: t.elapsed().as_secs_f64(),
                }
                .emit(&self.metrics);
            }
        }
    }

    /// Periodic work: acknowledgements, retries, idle clock, gauges.
    fn tick(&mut self) -> Result<(), PipelineError> {
        self.landed_behind(false)?;
        if let Some(down) = &self.store_down {
            if Instant::now() >= down.next_try {
                self.commit(Batch::default())?;
            }
            if self.store_down.is_some() {
                let (ok, _) = self.sink.drain_acks();
                self.acknowledged(ok);
                self.control.ready.store(false, Ordering::Relaxed);
                Readiness { ready: false }.emit(&self.metrics);
                return Ok(());
            }
        }
        // Input held while the store refused writes goes first, in order.
        while self.store_down.is_none() {
            let Some((messages, received)) = self.held.pop_front() else {
                break;
            };
            self.batch(messages, received)?;
        }
        self.start_unstarted()?;
        self.finish_restores()?;
        let (ok, failed) = self.sink.drain_acks();
        self.acknowledged(ok);
        self.advance_idle_clocks()?;
        self.collect_alerts()?;
        // Input processed but not committed yet waits for its interval;
        // alerts and deliveries then go with it.
        let due = if self.uncommitted.is_empty() {
            self.outbox.has_pending_puts()
                || (self.outbox.has_deliveries()
                    && self.last_commit.elapsed() > Duration::from_secs(1))
        } else {
            self.last_commit.elapsed() >= self.commit_interval
        };
        if due {
            self.commit(Batch::default())?;
        }
        if !failed.is_empty() || self.sink.in_flight() < self.outbox.len() {
            self.publish();
        }
        if self.last_stats.elapsed() > Duration::from_secs(5) {
            self.last_stats = Instant::now();
            self.metrics.update_store(&self.engine.store().stats());
            self.metrics
                .timers_pending
                .set(self.engine.timers_pending() as i64);
            let cache = self.engine.member_cache();
            self.metrics
                .update_member_cache(cache.decoded, cache.packed, cache.bytes);
        }
        if self.last_sweep.elapsed() > Duration::from_secs(60) {
            self.last_sweep = Instant::now();
            self.sweep_unowned()?;
        }
        // Not ready while the broker is failing and nothing has arrived
        // since: the process is alive, but not doing its job.
        let broker_down = self
            .last_error
            .is_some_and(|e| e.elapsed() < Duration::from_secs(10) && e > self.last_message);
        let ready = !self.input.assigned().is_empty()
            && self.restores.is_empty()
            && !broker_down
            && self.last_commit.elapsed() < Duration::from_secs(60);
        self.control.ready.store(ready, Ordering::Relaxed);
        Readiness { ready }.emit(&self.metrics);
        Ok(())
    }

    /// A quiet stream still has a clock (absence is the signal): each
    /// partition read to its end (on every input topic) and idle for
    /// `time.idle_after_ms` follows the wall clock minus the lateness. Only
    /// once read to its end: a partition just assigned or restored may still
    /// have a backlog whose events must come before the timers they would
    /// cancel.
    fn advance_idle_clocks(&mut self) -> Result<(), PipelineError> {
        let clock = self.engine.config().clock.clone();
        if !clock.idle_advance {
            return Ok(());
        }
        let to = chrono::Utc::now().timestamp_millis() - clock.allowed_lateness_ms;
        let idle_after = Duration::from_millis(clock.idle_after_ms.max(0) as u64);
        for p in self.owned() {
            let quiet = self.input.quiet(p, idle_after);
            // A partition whose clock never started (nothing delivered yet)
            // is not started by the wall clock: its first events may be a
            // backlog of history, which would all be late.
            let behind = self.engine.clock_ms(p as u32).is_some_and(|c| c < to);
            if quiet && behind {
                // One chunk of at most `time.max_timers_per_commit` timers
                // per tick, each committed, and none while the outbox is
                // full: memory stays bounded however many are due.
                if self.outbox.is_full() {
                    return Ok(());
                }
                if !self.engine.advance_partition_clock(p as u32, to)? {
                    self.collect_alerts()?;
                    self.commit(Batch::default())?;
                    return Ok(());
                }
            }
        }
        Ok(())
    }

    fn shutdown(&mut self, grace: Duration) -> Result<(), PipelineError> {
        self.restores.cancel_all();
        for p in self.restores.partitions().collect::<Vec<_>>() {
            self.stop_restore(p)?;
        }
        self.collect_alerts()?;
        self.commit(Batch::default())?;
        self.publish();
        let deadline = Instant::now() + grace;
        while !self.outbox.is_empty() && Instant::now() < deadline {
            self.sink.flush(Duration::from_millis(200));
            let (ok, _) = self.sink.drain_acks();
            self.acknowledged(ok);
            self.publish();
        }
        self.commit(Batch::default())?;
        tracing::info!(
            undelivered = self.outbox.len(),
            "pipeline stopped; undelivered records stay in the outbox for the next start"
        );
        Ok(())
    }
}
