//! `churnwatch bootstrap` (SPEC §6): build `run`'s state directory from a
//! history file, then let `run` go on from where the history ends.
//!
//! The history is replayed exactly as `run` would have consumed it from the
//! input topic: every member on the partition the topic's producers use for
//! its key (`kafka.partitioner`), one stream clock per partition, timers
//! firing in event order (`replay --partitions`). Alerts raised meanwhile go
//! to a file, not to Kafka: marketing does not want years of history as
//! fresh alerts.
//!
//! **The seam.** History lines with an event time after `--until` are
//! skipped (the topic delivers them). For every input partition the state
//! records the first offset whose record timestamp is after `--until`
//! (Kafka's offsets-for-times, checked against the records themselves), so
//! `run` starts there: nothing before the seam is counted twice and nothing
//! after it is skipped, provided the producers set each record's timestamp
//! to the event's time (CreateTime) and write a partition in time order. A
//! record at the seam that repeats an event of the history is also absorbed
//! by the member's duplicate check.
//!
//! **The changelog.** With `pipeline.changelog` on, the bootstrapped state
//! of every partition is published to the (empty) changelog topic, ending in
//! a commit marker with the start offsets, and the local checkpoint is set
//! after it: `run`'s restore then finds nothing newer and keeps the local
//! state, and any other instance that is given a partition restores it.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::message::Message;
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};

use crate::config::Config;
use crate::pipeline::changelog::{self, offset_key, PartitionMark, ReaderContext};
use crate::pipeline::outbox::OutboxRecord;
use crate::pipeline::sink::Sink;
use crate::pipeline::{client_config, topics};
use crate::replay::{self, ReplayError, ReplayOptions, ReplaySummary};
use crate::state::keys::{
    meta_key, partition_end, partition_prefix, split_member_key, GLOBAL_PARTITION,
};
use crate::state::member::NEVER;
use crate::state::{scan_chunks, Batch, MemberState, RocksStore, Store, StoreError, Table};
use crate::telemetry::Metrics;

/// Meta key (global) holding the partition count a state directory was
/// bootstrapped for; `run` refuses a topic with another count.
pub const META_BOOTSTRAP_PARTITIONS: &str = "bootstrap/partitions";

/// The owner epoch the bootstrapped state is published under.
const BOOTSTRAP_EPOCH: u64 = 1;

#[derive(Debug, thiserror::Error)]
pub enum BootstrapError {
    #[error("{0}")]
    Config(#[from] crate::config::ConfigError),
    #[error("topics: {0}")]
    Topics(String),
    #[error("state.dir {0} already holds member state: bootstrap builds a new state directory (move the old one away)")]
    NotEmpty(String),
    #[error("changelog topic {topic} partition {partition} is not empty: bootstrap into a new group_id (or pipeline.changelog_topic), so restores cannot mix old state into the bootstrapped one")]
    ChangelogNotEmpty { topic: String, partition: i32 },
    #[error("input topics have different partition counts: {0}")]
    UnevenInputs(String),
    #[error("kafka: {0}")]
    Kafka(#[from] KafkaError),
    #[error("could not find the first offset after the end time on {topic} partition {partition}: {reason}")]
    Seam {
        topic: String,
        partition: i32,
        reason: String,
    },
    #[error("publishing the state to the changelog: {0}")]
    Publish(String),
    #[error(transparent)]
    Replay(#[from] ReplayError),
    #[error("state store: {0}")]
    Store(#[from] StoreError),
}

#[derive(Debug, Clone)]
pub struct BootstrapOptions {
    /// History NDJSON file, `-` for stdin.
    pub input: String,
    /// Event time (epoch ms) where the history ends and the topic takes over.
    pub until_ms: i64,
    /// Alerts raised while bootstrapping.
    pub alerts: PathBuf,
    /// Rejected history lines [default: ALERTS.dlq].
    pub dlq: Option<PathBuf>,
    pub progress: bool,
}

#[derive(Debug, Default)]
pub struct BootstrapSummary {
    pub replay: ReplaySummary,
    pub partitions: u32,
    pub members_by_partition: BTreeMap<u32, u64>,
    /// Where `run` starts, per input topic and partition.
    pub start_offsets: BTreeMap<(String, i32), i64>,
    pub changelog_records: u64,
}

impl std::fmt::Display for BootstrapSummary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(f, "{}", self.replay)?;
        write!(f, "members by partition:")?;
        for (p, n) in &self.members_by_partition {
            write!(f, " {p}={n}")?;
        }
        write!(f, "\nrun starts at:")?;
        for ((t, p), o) in &self.start_offsets {
            write!(f, " {t}/{p}@{o}")?;
        }
        if self.changelog_records > 0 {
            write!(
                f,
                "\npublished {} changelog records",
                self.changelog_records
            )?;
        }
        Ok(())
    }
}

pub fn run(
    opts: &BootstrapOptions,
    cfg: &Config,
    metrics: Arc<Metrics>,
    rt: &tokio::runtime::Handle,
) -> Result<BootstrapSummary, BootstrapError> {
    cfg.require_brokers()?;
    rt.block_on(topics::ensure(cfg))
        .map_err(|e| BootstrapError::Topics(e.to_string()))?;
    let counts = rt
        .block_on(topics::input_partitions(cfg))
        .map_err(|e| BootstrapError::Topics(e.to_string()))?;
    let partitions = uniform_count(&counts)?;

    std::fs::create_dir_all(&cfg.state.dir).map_err(|source| ReplayError::Open {
        what: "state directory",
        path: cfg.state.dir.display().to_string(),
        source,
    })?;
    {
        let store = RocksStore::open(&cfg.state.dir, &cfg.state.tuning())?;
        let any = store.scan(Table::Members, &[], &[0xff; 5], 1)?;
        if !any.is_empty() {
            return Err(BootstrapError::NotEmpty(
                cfg.state.dir.display().to_string(),
            ));
        }
    }
    if cfg.pipeline.changelog {
        require_empty_changelog(cfg, partitions)?;
    }

    let replay_opts = ReplayOptions {
        dlq: opts.dlq.clone(),
        state: Some(cfg.state.dir.clone()),
        progress: opts.progress,
        partitions,
        partitioner: cfg.kafka.partitioner,
        skip_after_ms: Some(opts.until_ms),
        ..ReplayOptions::new(opts.input.clone(), opts.alerts.display().to_string())
    };
    let replayed = replay::run(&replay_opts, cfg, metrics)?;

    let store = RocksStore::open(&cfg.state.dir, &cfg.state.tuning())?;
    let mut summary = BootstrapSummary {
        replay: replayed,
        partitions,
        ..BootstrapSummary::default()
    };
    let mut batch = Batch::default();
    for (topic, _) in &counts {
        for p in 0..partitions as i32 {
            let next = first_offset_after(cfg, topic, p, opts.until_ms)?;
            batch.put(Table::Meta, offset_key(topic, p), next.to_le_bytes());
            summary.start_offsets.insert((topic.clone(), p), next);
        }
    }
    batch.put(
        Table::Meta,
        meta_key(GLOBAL_PARTITION, META_BOOTSTRAP_PARTITIONS),
        i64::from(partitions).to_le_bytes(),
    );
    store.write(batch)?;

    for p in 0..partitions {
        summary
            .members_by_partition
            .insert(p, count_members(&store, p)?);
    }
    if cfg.pipeline.changelog {
        summary.changelog_records = publish(cfg, &store, partitions, &summary.start_offsets)?;
    }
    store.persist()?;
    Ok(summary)
}

/// Every input topic must have the same count (members are co-partitioned).
fn uniform_count(counts: &[(String, usize)]) -> Result<u32, BootstrapError> {
    let first = counts.first().map_or(1, |(_, n)| *n);
    if counts.iter().any(|(_, n)| *n != first) {
        let list: Vec<String> = counts.iter().map(|(t, n)| format!("{t}={n}")).collect();
        return Err(BootstrapError::UnevenInputs(list.join(", ")));
    }
    Ok(first as u32)
}

fn count_members(store: &dyn Store, p: u32) -> Result<u64, StoreError> {
    let mut n = 0;
    scan_chunks(
        store,
        Table::Members,
        &partition_prefix(p),
        &partition_end(p),
        50_000,
        |chunk| {
            n += chunk.len() as u64;
            Ok::<_, StoreError>(())
        },
    )?;
    Ok(n)
}

type Reader = BaseConsumer<ReaderContext>;

/// A consumer for one-off reads (no group, no commits).
fn reader(cfg: &Config) -> Result<Reader, KafkaError> {
    let mut c = client_config(cfg);
    c.set("group.id", format!("{}-bootstrap", cfg.kafka.group_id))
        .set("enable.auto.commit", "false")
        .set("enable.partition.eof", "true")
        .set("fetch.wait.max.ms", "10");
    c.create_with_context(ReaderContext::default())
}

fn require_empty_changelog(cfg: &Config, partitions: u32) -> Result<(), BootstrapError> {
    let topic = cfg.changelog_topic();
    let consumer = reader(cfg)?;
    for p in 0..partitions as i32 {
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition_offset(&topic, p, Offset::Beginning)?;
        consumer.assign(&tpl)?;
        if read_one(&consumer, Duration::from_secs(30))?.is_some() {
            return Err(BootstrapError::ChangelogNotEmpty {
                topic: topic.clone(),
                partition: p,
            });
        }
    }
    Ok(())
}

/// The next record of the assigned partition as (offset, timestamp ms), or
/// `None` at partition EOF.
fn read_one(consumer: &Reader, within: Duration) -> Result<Option<(i64, Option<i64>)>, KafkaError> {
    let deadline = Instant::now() + within;
    loop {
        match consumer.poll(Duration::from_millis(200)) {
            Some(Ok(m)) => return Ok(Some((m.offset(), m.timestamp().to_millis()))),
            Some(Err(KafkaError::PartitionEOF(_))) => return Ok(None),
            Some(Err(e)) if Instant::now() >= deadline => return Err(e),
            _ if Instant::now() >= deadline => {
                return Err(KafkaError::Global(
                    rdkafka::types::RDKafkaErrorCode::OperationTimedOut,
                ))
            }
            _ => {}
        }
    }
}

/// The first offset of `topic`/`partition` whose record timestamp is after
/// `until_ms`, or the end of the partition when there is none.
///
/// Kafka's offsets-for-times gives the candidate; brokers differ in how
/// exactly they answer (some per batch, some not at all), so the records
/// around it are read to confirm it, and the partition is scanned from the
/// start when the answer does not hold.
fn first_offset_after(
    cfg: &Config,
    topic: &str,
    partition: i32,
    until_ms: i64,
) -> Result<i64, BootstrapError> {
    let seam = |reason: String| BootstrapError::Seam {
        topic: topic.to_string(),
        partition,
        reason,
    };
    let consumer = reader(cfg)?;
    let mut q = TopicPartitionList::new();
    q.add_partition_offset(topic, partition, Offset::Offset(until_ms + 1))?;
    let hint = consumer
        .offsets_for_times(q, Duration::from_secs(20))
        .ok()
        .and_then(|r| r.find_partition(topic, partition).map(|e| e.offset()));
    let candidate = match hint {
        Some(Offset::Offset(o)) if o >= 0 => o,
        // No record after the seam: the end of the partition. The high
        // watermark is a lower bound of it on every broker seen (tansu
        // answers the last batch's base offset + 1), and the scan below
        // reads on to the real end.
        _ => consumer
            .fetch_watermarks(topic, partition, Duration::from_secs(20))
            .map_or(0, |(_, high)| high.max(0)),
    };
    // Scan from one record before the candidate: it must be at or before
    // the seam, and the first record after the seam is then found exactly.
    let scan_from = |from: i64| -> Result<(i64, bool), BootstrapError> {
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition_offset(topic, partition, Offset::Offset(from))?;
        consumer.assign(&tpl)?;
        let mut next = from;
        let mut first = true;
        loop {
            match read_one(&consumer, Duration::from_secs(60)).map_err(|e| seam(e.to_string()))? {
                None => return Ok((next, true)),
                Some((offset, ts)) => {
                    let ts = ts.ok_or_else(|| seam(format!("record {offset} has no timestamp")))?;
                    if ts > until_ms {
                        // The record before the start of the scan was
                        // already after the seam: the candidate was late.
                        return Ok((offset, !(first && from > 0)));
                    }
                    first = false;
                    next = offset + 1;
                }
            }
        }
    };
    let (offset, confirmed) = scan_from((candidate - 1).max(0))?;
    if confirmed {
        return Ok(offset);
    }
    Ok(scan_from(0)?.0)
}

/// The sink with the changelog offsets of the records acknowledged so far.
struct Publisher {
    sink: Sink,
    acked: BTreeMap<u64, i64>,
}

impl Publisher {
    fn send(&mut self, seq: u64, rec: &OutboxRecord) -> Result<(), BootstrapError> {
        let deadline = Instant::now() + Duration::from_secs(120);
        while !self.sink.send(seq, rec) {
            if Instant::now() > deadline {
                return Err(BootstrapError::Publish(
                    "the producer queue stayed full for 2 minutes".into(),
                ));
            }
            self.sink.flush(Duration::from_millis(100));
            self.collect()?;
        }
        self.collect()
    }

    fn collect(&mut self) -> Result<(), BootstrapError> {
        let (ok, failed) = self.sink.drain_acks();
        if let Some(seq) = failed.first() {
            return Err(BootstrapError::Publish(format!(
                "record {seq} was not delivered"
            )));
        }
        for d in ok {
            if let Some((_, offset)) = d.changelog {
                self.acked.insert(d.seq, offset);
            }
        }
        Ok(())
    }

    /// Waits for the acknowledgement of record `seq`; its changelog offset.
    fn wait_for(&mut self, seq: u64) -> Result<i64, BootstrapError> {
        let deadline = Instant::now() + Duration::from_secs(300);
        loop {
            self.collect()?;
            if let Some(o) = self.acked.get(&seq) {
                return Ok(*o);
            }
            if Instant::now() > deadline {
                return Err(BootstrapError::Publish(
                    "the changelog marker was not acknowledged within 5 minutes".into(),
                ));
            }
            self.sink.flush(Duration::from_millis(200));
        }
    }
}

/// Publishes every member of every partition, then a commit marker with
/// the start offsets, to the changelog; records the checkpoint after the
/// marker. Returns the records published.
fn publish(
    cfg: &Config,
    store: &dyn Store,
    partitions: u32,
    offsets: &BTreeMap<(String, i32), i64>,
) -> Result<u64, BootstrapError> {
    let mut out = Publisher {
        sink: Sink::new(
            client_config(cfg),
            &cfg.kafka.alert_topic,
            &cfg.kafka.dlq_topic,
            &cfg.changelog_topic(),
        )?,
        acked: BTreeMap::new(),
    };
    let mut seq = 0u64;
    let mut checkpoints = Batch::default();
    for p in 0..partitions {
        out.sink.set_epoch(p as i32, BOOTSTRAP_EPOCH, 0);
        checkpoints.put(
            Table::Meta,
            meta_key(p, "owner_epoch"),
            (BOOTSTRAP_EPOCH as i64).to_le_bytes(),
        );
        let (from, end) = (partition_prefix(p), partition_end(p));
        scan_chunks(store, Table::Members, &from, &end, 10_000, |chunk| {
            for (k, v) in chunk {
                let Some((_, member)) = split_member_key(&k) else {
                    continue;
                };
                let due = MemberState::decode(&v).map_or(NEVER, |m| m.timer_due_ms);
                let rec = OutboxRecord::Changelog {
                    partition: p as i32,
                    member_id: member.to_string(),
                    value: Some(changelog::member_value(due, &v)),
                };
                out.send(seq, &rec)?;
                seq += 1;
            }
            // Only markers' offsets are needed.
            out.acked.clear();
            Ok::<_, BootstrapError>(())
        })?;
        let read = |name: &str| -> Result<i64, StoreError> {
            Ok(changelog::read_i64(store, &meta_key(p, name))?.unwrap_or(NEVER))
        };
        let mark = PartitionMark {
            max_ts: read(crate::engine::META_MAX_TS)?,
            clock_ms: Some(read(crate::engine::META_CLOCK)?),
            // The first owner: `run` takes over with the next epoch.
            epoch: Some(BOOTSTRAP_EPOCH),
            basis: Some(0),
            excludes_unmarked: true,
            offsets: offsets
                .iter()
                .filter(|((_, q), _)| *q == p as i32)
                .map(|((t, _), o)| (t.clone(), *o))
                .collect(),
        };
        let marker = seq;
        out.send(
            marker,
            &OutboxRecord::ChangelogMark {
                partition: p as i32,
                mark: mark.encode(),
            },
        )?;
        seq += 1;
        let offset = out.wait_for(marker)?;
        checkpoints.put(
            Table::Meta,
            changelog::checkpoint_key(p),
            (offset + 1).to_le_bytes(),
        );
    }
    store.write(checkpoints)?;
    Ok(seq)
}
