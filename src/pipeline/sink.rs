//! The Kafka sink: publishes outbox records and reports which ones the
//! broker acknowledged, so the engine can delete them from the outbox in
//! its next commit.
//!
//! One request in flight per broker connection, not librdkafka's
//! idempotent producer: an idempotent producer allows five requests in
//! flight per partition, and librdkafka 2.12's broker thread spins while a
//! partition's next batch is past `linger.ms` and has to wait for one of
//! them. Against a broker slower than five requests per linger (tansu in
//! a catch-up; any broker a few milliseconds away from a 5 ms linger) that
//! was a whole core doing nothing, 6 s of a 7 s catch-up
//! (docs/performance.md, 2026-12-07). With one request in flight, records
//! reach each partition in the order they were sent, retries included;
//! what idempotence added on top, no duplicate when a retried request had
//! in fact been written, the outbox does not rely on: it republishes
//! after a crash anyway, alerts carry their `alert_id` and a changelog
//! record written twice in a row restores the same.
//!
//! Two producers, so two connections: alerts and dead letters on one,
//! changelog records on the other. With one request in flight, an alert
//! would otherwise wait behind a commit's changelog batch (event-to-alert
//! p99 1.6–1.8 s against 0.7 s in two of three steady runs on tansu).

use std::collections::BTreeMap;
use std::sync::mpsc::{channel, Receiver, Sender};
use std::time::{Duration, Instant};

use rdkafka::config::RDKafkaLogLevel;
use rdkafka::error::KafkaError;
use rdkafka::message::{Header, Message, OwnedHeaders};
use rdkafka::producer::{BaseRecord, DeliveryResult, Producer, ProducerContext, ThreadedProducer};
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::ClientContext;

use super::changelog;
use super::outbox::OutboxRecord;
use crate::telemetry::events::KafkaClientLog;

/// The broker's answer for one outbox record.
pub struct Delivery {
    pub seq: u64,
    pub ok: bool,
    /// Partition and offset, for records acknowledged on the changelog.
    pub changelog: Option<(i32, i64)>,
}

pub struct SinkContext {
    acks: Sender<Delivery>,
    log: KafkaClientLog,
    changelog_topic: String,
}

impl ClientContext for SinkContext {
    fn log(&self, level: RDKafkaLogLevel, fac: &str, message: &str) {
        self.log.line(level, fac, message);
    }

    fn error(&self, error: KafkaError, reason: &str) {
        self.log.emit(true, &error.to_string(), reason);
    }
}

impl ProducerContext for SinkContext {
    type DeliveryOpaque = Box<u64>;

    fn delivery(&self, result: &DeliveryResult<'_>, seq: Box<u64>) {
        if let Err((e, _)) = result {
            // Purged at shutdown: the stop log counts what stays behind.
            // Otherwise (an outage fails every record in flight) one line
            // per 10 s, not one per record.
            let purged = matches!(
                e,
                KafkaError::MessageProduction(RDKafkaErrorCode::PurgeQueue)
                    | KafkaError::MessageProduction(RDKafkaErrorCode::PurgeInflight)
            );
            if !purged {
                self.log.emit(
                    true,
                    "delivery",
                    &format!("record not delivered, kept in the outbox for a retry: {e}"),
                );
            }
        }
        let changelog = match result {
            Ok(m) if m.topic() == self.changelog_topic => Some((m.partition(), m.offset())),
            _ => None,
        };
        let _ = self.acks.send(Delivery {
            seq: *seq,
            ok: result.is_ok(),
            changelog,
        });
    }
}

pub struct Sink {
    /// Alerts and dead letters.
    producer: ThreadedProducer<SinkContext>,
    /// Changelog records and markers.
    changelog: ThreadedProducer<SinkContext>,
    pub acks: Receiver<Delivery>,
    alert_topic: String,
    dlq_topic: String,
    changelog_topic: String,
    /// Records handed to the producer and not yet answered, with when.
    in_flight: BTreeMap<u64, Instant>,
    /// The owner epoch and basis this instance publishes each changelog
    /// partition under.
    epochs: BTreeMap<i32, (u64, i64)>,
}

impl Sink {
    pub fn new(
        mut client: rdkafka::ClientConfig,
        alert_topic: &str,
        dlq_topic: &str,
        changelog_topic: &str,
    ) -> Result<Self, KafkaError> {
        let (tx, rx) = channel();
        client
            .set("enable.idempotence", "false")
            // Order, retries included (see the module comment).
            .set("max.in.flight.requests.per.connection", "1")
            .set("acks", "all")
            // Alerts are few and latency-bound: a short linger.
            .set("linger.ms", "5")
            .set("compression.type", "lz4");
        let context = || SinkContext {
            acks: tx.clone(),
            log: KafkaClientLog::default(),
            changelog_topic: changelog_topic.to_string(),
        };
        let producer = client.create_with_context(context())?;
        let changelog = client.create_with_context(context())?;
        Ok(Sink {
            producer,
            changelog,
            acks: rx,
            alert_topic: alert_topic.to_string(),
            dlq_topic: dlq_topic.to_string(),
            changelog_topic: changelog_topic.to_string(),
            in_flight: BTreeMap::new(),
            epochs: BTreeMap::new(),
        })
    }

    /// Changelog records of `partition` are published under owner `epoch`,
    /// which took the partition at changelog offset `basis`, from now on
    /// (see `changelog`, "Fencing"). Records committed earlier and
    /// published from now on are this owner's too: the epoch is stamped at
    /// publication, into the member value and the marker body.
    pub fn set_epoch(&mut self, partition: i32, epoch: u64, basis: i64) {
        self.epochs.insert(partition, (epoch, basis));
    }

    /// The epoch header (informational: restores read the epoch from the
    /// value, which a broker cannot serve without).
    fn epoch_headers(&self, partition: i32, marker: bool) -> Option<OwnedHeaders> {
        let epoch = self.epochs.get(&partition).map(|(e, _)| e.to_string());
        if !marker && epoch.is_none() {
            return None;
        }
        let mut h = if marker {
            changelog::marker_headers()
        } else {
            OwnedHeaders::new()
        };
        if let Some(e) = &epoch {
            h = h.insert(Header {
                key: changelog::EPOCH_HEADER,
                value: Some(e.as_str()),
            });
        }
        Some(h)
    }

    pub fn is_in_flight(&self, seq: u64) -> bool {
        self.in_flight.contains_key(&seq)
    }

    pub fn in_flight(&self) -> usize {
        self.in_flight.len()
    }

    /// Hands one record to the producer. `false` when its local queue is
    /// full: try again after acknowledgements come back.
    pub fn send(&mut self, seq: u64, record: &OutboxRecord) -> bool {
        let r = match record {
            OutboxRecord::Alert { member_id, json } => self
                .producer
                .send(
                    BaseRecord::with_opaque_to(&self.alert_topic, Box::new(seq))
                        .key(member_id.as_bytes())
                        .payload(json.as_slice()),
                )
                .map_err(|(e, _)| e),
            OutboxRecord::DeadLetter {
                key,
                payload,
                error,
                topic,
                partition,
                offset,
            } => {
                let partition = partition.to_string();
                let offset = offset.to_string();
                let headers = OwnedHeaders::new()
                    .insert(Header {
                        key: "churnwatch.error",
                        value: Some(error.as_bytes()),
                    })
                    .insert(Header {
                        key: "churnwatch.source.topic",
                        value: Some(topic.as_bytes()),
                    })
                    .insert(Header {
                        key: "churnwatch.source.partition",
                        value: Some(partition.as_bytes()),
                    })
                    .insert(Header {
                        key: "churnwatch.source.offset",
                        value: Some(offset.as_bytes()),
                    });
                let mut rec = BaseRecord::with_opaque_to(&self.dlq_topic, Box::new(seq))
                    .payload(payload.as_slice())
                    .headers(headers);
                if let Some(k) = key {
                    rec = rec.key(k.as_slice());
                }
                self.producer.send(rec).map_err(|(e, _)| e)
            }
            OutboxRecord::Changelog {
                partition,
                member_id,
                value,
            } => {
                let stamped = value.as_ref().map(|v| {
                    let mut v = v.clone();
                    if let Some((epoch, _)) = self.epochs.get(partition) {
                        changelog::stamp_epoch(&mut v, *epoch);
                    }
                    v
                });
                let mut rec = BaseRecord::with_opaque_to(&self.changelog_topic, Box::new(seq))
                    .partition(*partition)
                    .key(member_id.as_bytes());
                if let Some(v) = &stamped {
                    rec = rec.payload(v.as_slice());
                }
                if let Some(h) = self.epoch_headers(*partition, false) {
                    rec = rec.headers(h);
                }
                self.changelog.send(rec).map_err(|(e, _)| e)
            }
            OutboxRecord::ChangelogMark { partition, mark } => {
                let headers = self
                    .epoch_headers(*partition, true)
                    .unwrap_or_else(changelog::marker_headers);
                let key = changelog::marker_key(self.epochs.get(partition).map(|(e, _)| *e));
                let body = match (
                    self.epochs.get(partition),
                    changelog::PartitionMark::decode(mark),
                ) {
                    (Some((epoch, basis)), Ok(mut m)) => {
                        m.epoch = Some(*epoch);
                        m.basis = Some(*basis);
                        m.excludes_unmarked = true;
                        m.encode()
                    }
                    _ => mark.clone(),
                };
                self.changelog
                    .send(
                        BaseRecord::with_opaque_to(&self.changelog_topic, Box::new(seq))
                            .partition(*partition)
                            .key(key.as_slice())
                            .payload(body.as_slice())
                            .headers(headers),
                    )
                    .map_err(|(e, _)| e)
            }
        };
        match r {
            Ok(()) => {
                self.in_flight.insert(seq, Instant::now());
                true
            }
            Err(e) => {
                tracing::debug!(error = %e, "producer queue full; retrying later");
                false
            }
        }
    }

    /// Collects the broker's answers so far: acknowledged sequence numbers
    /// (to delete) and failed ones (to send again).
    pub fn drain_acks(&mut self) -> (Vec<Delivery>, Vec<u64>) {
        let (mut ok, mut failed) = (Vec::new(), Vec::new());
        while let Ok(d) = self.acks.try_recv() {
            self.in_flight.remove(&d.seq);
            if d.ok {
                ok.push(d);
            } else {
                failed.push(d.seq);
            }
        }
        (ok, failed)
    }

    /// Waits up to `timeout` for everything in flight to be answered.
    pub fn flush(&self, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        let _ = self.producer.flush(timeout);
        let _ = self
            .changelog
            .flush(deadline.saturating_duration_since(Instant::now()));
    }
}
