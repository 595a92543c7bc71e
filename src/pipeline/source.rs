//! The Kafka source: one thread polls the consumer and hands the engine
//! batches, assignments and revocations as messages, in consumption order.
//!
//! Offsets come from RocksDB, not from Kafka: on assignment the engine
//! answers with the next offset it has state for, and the partition is
//! assigned at exactly that offset. A partition whose state must first be
//! restored from the changelog is assigned paused instead; the engine seeks
//! it to the restored offset and resumes it when the restore is done, so
//! the other partitions keep flowing meanwhile. On revocation the callback
//! blocks until the engine has committed everything consumed so far, so the
//! next owner starts where this one's state ends.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rdkafka::config::RDKafkaLogLevel;
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext, RebalanceProtocol};
use rdkafka::error::KafkaError;
use rdkafka::message::{Message, OwnedMessage};
use rdkafka::statistics::Statistics;
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};
use rdkafka::types::{RDKafkaErrorCode, RDKafkaRespErr};
use rdkafka::ClientContext;

use crate::telemetry::events::{ConsumerLag, KafkaClientLog};
use crate::telemetry::Metrics;

/// A topic partition of the input.
pub type TopicPartition = (String, i32);

/// What the source tells the engine.
pub enum SourceMsg {
    /// Messages in consumption order (per partition in offset order), and
    /// when the first of them was polled (latency is measured from there).
    Batch(Vec<OwnedMessage>, Instant),
    /// Newly assigned partitions; reply with where to start reading each.
    Assigned(Vec<TopicPartition>, SyncSender<Vec<Start>>),
    /// Partitions being taken away; reply once their state is committed.
    Revoked(Vec<TopicPartition>, SyncSender<()>),
    /// The consumer reached the end of a partition (after every message
    /// of it handed over before): that partition has no backlog.
    Eof(TopicPartition),
    /// The consumer reported an error (broker down, etc.); it keeps retrying.
    Error(KafkaError),
}

/// Where a newly assigned partition starts.
#[derive(Debug, Clone, Copy)]
pub struct Start {
    /// `None`: from the group's committed offset, else `auto.offset.reset`.
    pub offset: Option<Offset>,
    /// Assign it paused: nothing is fetched until the engine resumes it.
    pub paused: bool,
}

pub struct SourceContext {
    to_engine: SyncSender<SourceMsg>,
    shutdown: Arc<AtomicBool>,
    metrics: Arc<Metrics>,
    log: KafkaClientLog,
}

impl ClientContext for SourceContext {
    fn log(&self, level: RDKafkaLogLevel, fac: &str, message: &str) {
        self.log.line(level, fac, message);
    }

    fn error(&self, error: KafkaError, reason: &str) {
        // The end of a partition arrives through poll as well; not an error.
        let eof = matches!(
            error,
            KafkaError::PartitionEOF(_) | KafkaError::Global(RDKafkaErrorCode::PartitionEOF)
        );
        if !eof {
            self.log.emit(true, &error.to_string(), reason);
        }
    }

    /// librdkafka's periodic statistics carry each partition's lag without a
    /// blocking watermark request. (On tansu the high watermark, and so the
    /// lag, can be off by one batch; see BROKER.md.)
    fn stats(&self, stats: Statistics) {
        for (topic, t) in &stats.topics {
            for (id, p) in &t.partitions {
                if *id < 0 {
                    continue;
                }
                // A partition that moved to another instance stays in the
                // statistics without a fetcher; its series goes away here
                // instead of freezing at its last value.
                let owned = p.fetch_state != "none" && p.consumer_lag >= 0;
                ConsumerLag {
                    topic,
                    partition: *id,
                    lag: owned.then_some(p.consumer_lag),
                }
                .emit(&self.metrics);
            }
        }
    }
}

fn partitions(tpl: &TopicPartitionList) -> Vec<TopicPartition> {
    tpl.elements()
        .iter()
        .map(|e| (e.topic().to_string(), e.partition()))
        .collect()
}

impl SourceContext {
    /// Asks the engine and waits. If the engine is gone (shutting down),
    /// `None`: the caller falls back to a plain assignment.
    fn ask<T>(&self, make: impl FnOnce(SyncSender<T>) -> SourceMsg) -> Option<T> {
        let (tx, rx) = sync_channel(1);
        self.to_engine.send(make(tx)).ok()?;
        rx.recv().ok()
    }
}

impl ConsumerContext for SourceContext {
    fn rebalance(
        &self,
        consumer: &BaseConsumer<Self>,
        err: RDKafkaRespErr,
        tpl: &mut TopicPartitionList,
    ) {
        let cooperative = matches!(
            consumer.rebalance_protocol(),
            RebalanceProtocol::Cooperative
        );
        match err {
            RDKafkaRespErr::RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS => {
                let parts = partitions(tpl);
                let mut paused = TopicPartitionList::new();
                if !self.shutdown.load(Ordering::Relaxed) {
                    if let Some(starts) = self.ask(|tx| SourceMsg::Assigned(parts.clone(), tx)) {
                        for ((topic, partition), start) in parts.iter().zip(starts) {
                            if let Some(next) = start.offset {
                                let _ = tpl.set_partition_offset(topic, *partition, next);
                            }
                            if start.paused {
                                paused.add_partition(topic, *partition);
                            }
                        }
                    }
                }
                let r = if cooperative {
                    consumer.incremental_assign(tpl)
                } else {
                    consumer.assign(tpl)
                };
                if let Err(e) = r {
                    tracing::error!(error = %e, "assigning partitions failed");
                }
                // Paused before this poll returns: no message of a partition
                // being restored can reach the engine ahead of its state.
                if paused.count() > 0 {
                    if let Err(e) = consumer.pause(&paused) {
                        tracing::error!(error = %e, "pausing partitions to restore failed");
                    }
                }
            }
            RDKafkaRespErr::RD_KAFKA_RESP_ERR__REVOKE_PARTITIONS => {
                let parts = partitions(tpl);
                // Everything already handed over is ahead of this message in
                // the channel, so the engine commits it before acking.
                let _ = self.ask(|tx| SourceMsg::Revoked(parts, tx));
                let r = if cooperative {
                    consumer.incremental_unassign(tpl)
                } else {
                    consumer.unassign()
                };
                if let Err(e) = r {
                    tracing::error!(error = %e, "unassigning partitions failed");
                }
            }
            other => {
                tracing::error!(error = ?other, "rebalance error");
                let _ = consumer.unassign();
            }
        }
    }
}

/// The consumer and the thread polling it.
pub struct Source {
    pub consumer: Arc<BaseConsumer<SourceContext>>,
    pub thread: std::thread::JoinHandle<()>,
}

pub struct SourceOptions {
    pub batch_max_messages: usize,
    pub batch_max_wait: Duration,
}

/// Starts polling on a dedicated thread; messages go to the returned
/// receiver. Polling stops when `shutdown` is set (the channel then closes).
pub fn start(
    client: rdkafka::ClientConfig,
    topics: &[String],
    opts: SourceOptions,
    shutdown: Arc<AtomicBool>,
    metrics: Arc<Metrics>,
) -> Result<(Source, Receiver<SourceMsg>), KafkaError> {
    // A small bound: the source never runs more than a few batches ahead of
    // the engine, so memory stays bounded and revocations stay prompt.
    let (tx, rx) = sync_channel(4);
    let ctx = SourceContext {
        to_engine: tx.clone(),
        shutdown: shutdown.clone(),
        metrics,
        log: KafkaClientLog::default(),
    };
    let consumer: BaseConsumer<SourceContext> = client.create_with_context(ctx)?;
    let topic_refs: Vec<&str> = topics.iter().map(String::as_str).collect();
    consumer.subscribe(&topic_refs)?;
    let consumer = Arc::new(consumer);
    let polled = consumer.clone();
    let thread = std::thread::Builder::new()
        .name("kafka-source".into())
        .spawn(move || poll_loop(&polled, tx, opts, &shutdown))
        .expect("spawn source thread");
    Ok((Source { consumer, thread }, rx))
}

fn poll_loop(
    consumer: &BaseConsumer<SourceContext>,
    tx: SyncSender<SourceMsg>,
    opts: SourceOptions,
    shutdown: &AtomicBool,
) {
    let mut batch = Vec::with_capacity(opts.batch_max_messages);
    let mut started = Instant::now();
    while !shutdown.load(Ordering::Relaxed) {
        let wait = if batch.is_empty() {
            Duration::from_millis(100)
        } else {
            opts.batch_max_wait.saturating_sub(started.elapsed())
        };
        match consumer.poll(wait) {
            Some(Ok(m)) => {
                if batch.is_empty() {
                    started = Instant::now();
                }
                batch.push(m.detach());
            }
            Some(Err(KafkaError::PartitionEOF(partition))) => {
                // Whatever was polled before the end goes first, so the
                // engine never sees the end ahead of the last messages.
                if !batch.is_empty()
                    && tx
                        .send(SourceMsg::Batch(std::mem::take(&mut batch), started))
                        .is_err()
                {
                    return;
                }
                for tp in eof_partitions(consumer, partition) {
                    if tx.send(SourceMsg::Eof(tp)).is_err() {
                        return;
                    }
                }
            }
            Some(Err(e)) => {
                let sent = tx.send(SourceMsg::Error(e));
                if sent.is_err() {
                    return;
                }
            }
            None => {}
        }
        let full = batch.len() >= opts.batch_max_messages;
        let due = !batch.is_empty() && started.elapsed() >= opts.batch_max_wait;
        if (full || due)
            && tx
                .send(SourceMsg::Batch(std::mem::take(&mut batch), started))
                .is_err()
        {
            return;
        }
        if batch.capacity() == 0 {
            batch.reserve(opts.batch_max_messages);
        }
    }
    if !batch.is_empty() {
        let _ = tx.send(SourceMsg::Batch(batch, started));
    }
}

/// librdkafka's end-of-partition event names the partition but not the
/// topic; with several input topics, every assigned topic with that
/// partition number is reported (the engine partition is the number).
fn eof_partitions(consumer: &BaseConsumer<SourceContext>, partition: i32) -> Vec<TopicPartition> {
    consumer
        .assignment()
        .map(|tpl| {
            partitions(&tpl)
                .into_iter()
                .filter(|(_, p)| *p == partition)
                .collect()
        })
        .unwrap_or_default()
}

/// Topic, partition and offset of a message, for logs and dead letters.
pub fn origin(m: &OwnedMessage) -> (String, i32, i64) {
    (m.topic().to_string(), m.partition(), m.offset())
}
