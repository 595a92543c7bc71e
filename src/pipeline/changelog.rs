//! The state changelog: what lets a partition's state follow the partition
//! to another instance.
//!
//! Every commit that changes members of partition `p` also puts, in the same
//! RocksDB write batch, one outbox record per changed member (coalesced: the
//! member's state after the commit, not one record per event) and then a
//! *partition marker* holding the input offsets and event-time high mark of
//! `p` as of that commit. The publisher sends them to partition `p` of the
//! changelog topic, keyed by member id. A restore applies records only up to
//! the last marker it reads, so what it rebuilds is exactly the state of one
//! commit, and input is re-read from that commit's offsets.
//!
//! The topic is created with `cleanup.policy=compact`, but nothing here
//! relies on compaction (tansu never compacts): records are applied in
//! offset order, so the last value per key wins either way. The end of a
//! partition is found by partition EOF, never by the high watermark.
//!
//! Record value: a format byte, the member's timer due time (i64 LE, so the
//! timer index is rebuilt without decoding the state), then the member state
//! exactly as stored. A tombstone (no value) deletes the member.
//!
//! # Fencing
//!
//! Without broker transactions (tansu has none) an instance that stalled
//! past its session timeout (a zombie) can still publish changelog records
//! for a partition the group has given to another instance. Every owner
//! therefore writes under an *owner epoch*: one more than the highest epoch
//! it has seen for the partition, taken when its restore ends. Every member
//! record carries it in its value (format 2: `[2][epoch][due][state]`,
//! stamped by the sink at publication) and every marker in its body, with
//! the *basis*: the changelog offset the new owner restored to. Headers are
//! not relied on: tansu has served records without them (right after a
//! broker restart), so the `churnwatch.epoch` and marker headers are still
//! written, for tools and for older builds, but only format-1 values (from
//! before the epoch moved into the value) take their epoch from them. A
//! restore ignores a record of epoch `e` at an offset at or after the basis
//! of a marker with a higher epoch: those are a zombie's, written after the
//! new owner took over. Such a marker can come after the zombie's records it
//! fences (the zombie wrote between the new owner's restore and its first
//! marker); if they were applied already, the restore starts over, knowing
//! the fence from the start.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use rdkafka::config::RDKafkaLogLevel;
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext};
use rdkafka::error::KafkaError;
use rdkafka::message::{Header, Headers, Message, OwnedHeaders};
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::{ClientConfig, ClientContext};
use serde::{Deserialize, Serialize};

use crate::engine::{META_CLOCK, META_MAX_TS};
use crate::state::keys::{
    member_key, meta_key, partition_end, partition_prefix, timers_marker_key, GLOBAL_PARTITION,
};
use crate::state::quarantine::{Kind as QuarantineKind, Quarantined};
use crate::state::{scan_chunks, Batch, Store, StoreError, Table};
use crate::telemetry::events::KafkaClientLog;

/// The header that marks a partition marker record.
pub const MARKER_HEADER: &str = "churnwatch.changelog";
/// The header carrying the writer's owner epoch on every record.
pub const EPOCH_HEADER: &str = "churnwatch.epoch";

/// The key prefix of partition markers. Member records are keyed by member
/// id, which is valid UTF-8 (it comes from a JSON string); this prefix is
/// not, so no member can be taken for a marker or the other way round,
/// whatever the record's headers say. A published marker's key ends with
/// its owner epoch ([`marker_key`]), so that compaction, which keeps the
/// last record per key, keeps the last marker of every owner and with it
/// every fence.
pub const MARKER_KEY: &[u8] = b"\xffchurnwatch.partition";

/// The key of a marker published under owner `epoch`.
pub fn marker_key(epoch: Option<u64>) -> Vec<u8> {
    let mut k = MARKER_KEY.to_vec();
    if let Some(e) = epoch {
        k.push(b'/');
        k.extend_from_slice(e.to_string().as_bytes());
    }
    k
}
/// The marker key of builds before the marker key above: a marker only
/// with the marker header (a member may have this id).
pub const LEGACY_MARKER_KEY: &[u8] = b"__churnwatch_partition__";
/// Member record value, format 1: `[1][due: i64 LE][state]`; the writer's
/// epoch only in the `churnwatch.epoch` header.
const FORMAT_V1: u8 = 1;
/// Member record value, format 2: `[2][epoch: u64 LE][due: i64 LE][state]`.
/// The epoch travels in the value because a broker may serve a record
/// without its headers (tansu did, right after a restart): a restore must
/// not take an owner's record for a zombie's for want of a header. Epoch 0
/// means "not stamped": the sink stamps the epoch it publishes under.
const FORMAT_V2: u8 = 2;
/// The epoch of a record that says none (a tombstone without headers):
/// never fenced.
const UNKNOWN_EPOCH: u64 = u64::MAX;
/// Bytes before the member state in a format-2 value.
pub const MEMBER_HEADER_LEN: usize = 17;

/// The headers of a partition marker record (informational: restores know
/// a marker by its key).
pub fn marker_headers() -> OwnedHeaders {
    OwnedHeaders::new().insert(Header {
        key: MARKER_HEADER,
        value: Some("partition"),
    })
}

/// The input position and event-time high mark of one partition as of a
/// commit, carried by the marker that ends the commit's records.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PartitionMark {
    /// Highest event time seen on the partition (epoch ms), or `i64::MIN`.
    pub max_ts: i64,
    /// The partition's stream clock (epoch ms; `i64::MIN` before it
    /// started). Absent in markers of builds before per-partition clocks:
    /// the restore then derives it from `max_ts`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub clock_ms: Option<i64>,
    /// The owner epoch of the instance that published it (see "Fencing").
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub epoch: Option<u64>,
    /// The changelog offset that owner's state was restored to when it
    /// took the partition: records of older epochs from there on are a
    /// zombie's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub basis: Option<i64>,
    /// The owner's state at its basis holds no record that was still
    /// waiting for a marker there (it restored only whole commits, and an
    /// owner with unpublished records of its own rebuilds from the whole
    /// changelog): records of older epochs still open when this owner's
    /// first marker arrives are left out, whatever their offset. Markers of
    /// builds before this field applied such records before the basis.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub excludes_unmarked: bool,
    /// Next input offset to read, per input topic.
    pub offsets: BTreeMap<String, i64>,
}

impl PartitionMark {
    pub fn encode(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("serializable")
    }
    pub fn decode(b: &[u8]) -> Result<Self, RestoreError> {
        serde_json::from_slice(b)
            .map_err(|e| RestoreError::Corrupt(format!("partition marker: {e}")))
    }
}

/// The changelog value of a member, not yet stamped with an epoch.
pub fn member_value(timer_due_ms: i64, state: &[u8]) -> Vec<u8> {
    let mut v = Vec::with_capacity(MEMBER_HEADER_LEN + state.len());
    v.push(FORMAT_V2);
    v.extend_from_slice(&0u64.to_le_bytes());
    v.extend_from_slice(&timer_due_ms.to_le_bytes());
    v.extend_from_slice(state);
    v
}

/// Stamps a member value with the owner epoch it is published under (a
/// value of another format is left as it is).
pub fn stamp_epoch(value: &mut [u8], epoch: u64) {
    if value.len() >= MEMBER_HEADER_LEN && value[0] == FORMAT_V2 {
        value[1..9].copy_from_slice(&epoch.to_le_bytes());
    }
}

/// A member value's stamped epoch (`None`: format 1, or not stamped), timer
/// due time and state.
pub fn split_member_value(v: &[u8]) -> Result<(Option<u64>, i64, &[u8]), RestoreError> {
    match v.split_first() {
        Some((&FORMAT_V2, rest)) if rest.len() >= 16 => {
            let (epoch, rest) = rest.split_at(8);
            let (due, state) = rest.split_at(8);
            let epoch = u64::from_le_bytes(epoch.try_into().expect("8 bytes"));
            Ok((
                (epoch != 0).then_some(epoch),
                i64::from_le_bytes(due.try_into().expect("8 bytes")),
                state,
            ))
        }
        Some((&FORMAT_V1, rest)) if rest.len() >= 8 => {
            let (due, state) = rest.split_at(8);
            Ok((
                None,
                i64::from_le_bytes(due.try_into().expect("8 bytes")),
                state,
            ))
        }
        Some((&f, _)) if f != FORMAT_V1 && f != FORMAT_V2 => Err(RestoreError::Corrupt(format!(
            "changelog format {f} is not understood by this build ({FORMAT_V1}, {FORMAT_V2})"
        ))),
        _ => Err(RestoreError::Corrupt("truncated member record".into())),
    }
}

#[derive(Debug, thiserror::Error)]
pub enum RestoreError {
    #[error("kafka client: {0}")]
    Kafka(#[from] KafkaError),
    #[error("state store: {0}")]
    Store(#[from] StoreError),
    #[error("corrupt changelog record: {0}")]
    Corrupt(String),
    #[error("stopped before the restore finished")]
    Stopped,
    /// A marker fenced records already applied: start over from the
    /// beginning knowing these fences.
    #[error("a zombie's records were applied before the marker that fences them; restoring again")]
    Refenced(Vec<(i64, u64)>),
}

/// Meta key of the next changelog offset this instance's local state of a
/// partition reflects.
pub fn checkpoint_key(partition: u32) -> Vec<u8> {
    meta_key(partition, "changelog_next")
}

/// Meta key of the changelog offset a restore in progress started from; set
/// while a restore runs, so one cut short is redone from where it started.
pub fn restoring_key(partition: u32) -> Vec<u8> {
    meta_key(partition, "restoring_from")
}

/// Meta key of what the restores of a partition learned about its owners:
/// the highest owner epoch and the fences seen up to the checkpoint. Written
/// in the same batch as the checkpoint, so an incremental restore (from the
/// checkpoint) knows every owner before it, and a new owner's epoch is above
/// all of them even when the restore that saw them was not handed over.
pub fn owners_key(partition: u32) -> Vec<u8> {
    meta_key(partition, "changelog_owners")
}

/// The highest owner epoch and the fences `(basis, epoch)` a partition's
/// changelog held up to its local checkpoint.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct KnownOwners {
    pub max_epoch: u64,
    pub fences: Vec<(i64, u64)>,
}

impl KnownOwners {
    pub fn read<S: Store + ?Sized>(store: &S, partition: u32) -> Result<Self, StoreError> {
        Ok(store
            .get(Table::Meta, &owners_key(partition))?
            .and_then(|v| serde_json::from_slice(&v).ok())
            .unwrap_or_default())
    }
}

/// Meta key of when this instance last stopped owning a partition.
pub fn unowned_since_key(partition: u32) -> Vec<u8> {
    meta_key(partition, "unowned_since")
}

/// Meta key of an input partition's next offset (kept under the global
/// prefix: one partition number can span several input topics).
pub fn offset_key(topic: &str, partition: i32) -> Vec<u8> {
    meta_key(GLOBAL_PARTITION, &format!("offset/{topic}/{partition}"))
}

pub fn read_i64<S: Store + ?Sized>(store: &S, key: &[u8]) -> Result<Option<i64>, StoreError> {
    Ok(store
        .get(Table::Meta, key)?
        .and_then(|v| <[u8; 8]>::try_from(v.as_slice()).ok())
        .map(i64::from_le_bytes))
}

/// Applies changelog records of one partition to a store, commit by commit.
///
/// Records are buffered until the marker that ends their commit arrives;
/// records after the last marker belong to a commit whose marker was never
/// published (its producer crashed) and are left out, so the rebuilt state
/// always matches the offsets it is stored with.
type OpenRecord = (i64, u64, Vec<u8>, Option<Vec<u8>>);

pub struct Restorer<'a, S: Store + ?Sized> {
    store: &'a S,
    partition: u32,
    batch_records: usize,
    input_topics: &'a [String],
    /// Records of the commit in progress: (offset, epoch, member id, value
    /// or tombstone).
    open: Vec<OpenRecord>,
    /// Records moved to the quarantine so far (written with the batches).
    pub quarantined: Vec<Quarantined>,
    batch: Batch,
    batch_members: usize,
    /// Records read, and members written, so far.
    pub records: u64,
    pub members: u64,
    /// The last marker applied.
    pub mark: Option<PartitionMark>,
    /// Fences seen (or known from a previous pass): (basis, epoch).
    fences: Vec<(i64, u64)>,
    /// The highest epoch seen.
    pub max_epoch: u64,
    /// Per epoch, the highest offset of a record applied under it.
    applied: BTreeMap<u64, i64>,
    /// Records left out as a zombie's.
    pub fenced: u64,
    /// The first of them: offset and epoch.
    first_fenced: Option<(i64, u64)>,
    /// Where an incremental restore started (0 from the beginning): the
    /// local state already holds what came before.
    start: i64,
}

impl<'a, S: Store + ?Sized> Restorer<'a, S> {
    pub fn new(
        store: &'a S,
        partition: u32,
        input_topics: &'a [String],
        batch_records: usize,
    ) -> Self {
        // The restored members come without their timer index: without
        // its marker, the engine rebuilds it when it takes the partition.
        let mut batch = Batch::default();
        batch.delete(Table::Timers, timers_marker_key(partition));
        Restorer {
            store,
            partition,
            batch_records,
            input_topics,
            open: Vec::new(),
            batch,
            batch_members: 0,
            quarantined: Vec::new(),
            records: 0,
            members: 0,
            mark: None,
            fences: Vec::new(),
            max_epoch: 0,
            applied: BTreeMap::new(),
            fenced: 0,
            first_fenced: None,
            start: 0,
        }
    }

    /// Starts knowing `fences` (a restore started over, see "Fencing").
    pub fn with_fences(mut self, fences: Vec<(i64, u64)>) -> Self {
        self.fences = fences;
        self
    }

    /// An incremental restore from `start` onto local state that already
    /// holds everything before it, knowing the owners an earlier restore
    /// saw there. If what follows shows that the local state is not the
    /// changelog's up to `start` (a new owner took over before `start`, so
    /// some of the local changes are a zombie's to it; or records after
    /// `start` are fenced, and the local state may hold them), applying
    /// fails with [`RestoreError::Refenced`]: restore from the beginning.
    pub fn incremental(mut self, start: i64, known: KnownOwners) -> Self {
        self.start = start;
        for f in known.fences {
            if !self.fences.contains(&f) {
                self.fences.push(f);
            }
        }
        self.max_epoch = self.max_epoch.max(known.max_epoch);
        self
    }

    /// Whether a record of `epoch` at `offset` is a zombie's.
    fn is_fenced(&self, offset: i64, epoch: u64) -> bool {
        self.fences
            .iter()
            .any(|(basis, e)| offset >= *basis && epoch < *e)
    }

    /// One changelog record at `offset`. A record that cannot be decoded
    /// is moved to the quarantine (see [`Restorer::quarantined`]) and left
    /// out: a member record is skipped; a marker is skipped and the records
    /// before it join the next commit, so the state still never runs ahead
    /// of a marker's offsets.
    pub fn apply(
        &mut self,
        offset: i64,
        marker: bool,
        key: &[u8],
        value: Option<&[u8]>,
    ) -> Result<(), RestoreError> {
        self.apply_with_epoch(offset, marker, key, value, None)
    }

    /// [`Restorer::apply`] for a record whose `churnwatch.epoch` header said
    /// `header_epoch`. Restores rely on the header only for records of
    /// builds that kept the epoch nowhere else: a marker is known by its
    /// key and carries its epoch in its body, and a member value (format 2)
    /// carries its own. A header-less tombstone is never taken for a
    /// zombie's (it has nowhere else to say its epoch).
    pub fn apply_with_epoch(
        &mut self,
        offset: i64,
        marker: bool,
        key: &[u8],
        value: Option<&[u8]>,
        header_epoch: Option<u64>,
    ) -> Result<(), RestoreError> {
        self.records += 1;
        let marker = key.starts_with(MARKER_KEY) || (marker && key == LEGACY_MARKER_KEY);
        let mark = if marker {
            match PartitionMark::decode(value.unwrap_or_default()) {
                Ok(m) => Some(m),
                Err(e) => {
                    self.set_aside(offset, key, value.unwrap_or_default(), e.to_string());
                    return Ok(());
                }
            }
        } else {
            None
        };
        let epoch = match (&mark, value) {
            (Some(m), _) => m.epoch.or(header_epoch),
            (None, Some(v)) => split_member_value(v)
                .ok()
                .and_then(|(e, _, _)| e)
                .or(header_epoch),
            (None, None) => header_epoch.or(Some(UNKNOWN_EPOCH)),
        }
        .unwrap_or(0);
        if self.is_fenced(offset, epoch) {
            self.fenced += 1;
            self.first_fenced.get_or_insert((offset, epoch));
            if mark.is_some() {
                // The zombie's commit this marker would have completed is
                // left out whole, its records before the new owner's basis
                // too: that owner restored to the basis without them (their
                // marker was missing) and read the same input again, so
                // applying them with its next marker would put the members
                // ahead of that marker's offsets and count the events in
                // between twice. (Its own records from before a restart, by
                // contrast, meet no fenced marker of their epoch: their
                // marker is republished under the new epoch.)
                let before = self.open.len();
                self.open.retain(|(_, e, _, _)| *e != epoch);
                self.fenced += (before - self.open.len()) as u64;
            }
            if self.start > 0 {
                // The local state may be the zombie's (this instance's,
                // before it knew it had lost the partition).
                return Err(RestoreError::Refenced(self.fences.clone()));
            }
            return Ok(());
        }
        let Some(mark) = mark else {
            if epoch != UNKNOWN_EPOCH {
                self.max_epoch = self.max_epoch.max(epoch);
            }
            self.open
                .push((offset, epoch, key.to_vec(), value.map(<[u8]>::to_vec)));
            return Ok(());
        };
        let mark_epoch = epoch;
        if let Some(basis) = mark.basis {
            if !self.fences.contains(&(basis, mark_epoch)) {
                // A new owner took over at `basis`: what older epochs wrote
                // from there on is a zombie's.
                let stale_applied = basis < self.start
                    || self
                        .applied
                        .range(..mark_epoch)
                        .any(|(_, last)| *last >= basis);
                self.fences.push((basis, mark_epoch));
                if stale_applied {
                    return Err(RestoreError::Refenced(self.fences.clone()));
                }
                // Older epochs' records still open here were not in the new
                // owner's state: those from the basis on are a zombie's,
                // those before it a commit whose marker never came (its
                // writer died or lost the partition mid-publish). Applied
                // with this marker, they would put members ahead of its
                // input offsets and count the events in between twice.
                let stale =
                    |at: i64, e: u64| e < mark_epoch && (mark.excludes_unmarked || at >= basis);
                let before = self.open.len();
                if let Some((at, e, _, _)) = self.open.iter().find(|(at, e, _, _)| stale(*at, *e)) {
                    self.first_fenced.get_or_insert((*at, *e));
                }
                self.open.retain(|(at, e, _, _)| !stale(*at, *e));
                self.fenced += (before - self.open.len()) as u64;
            }
        }
        self.max_epoch = self.max_epoch.max(mark_epoch);
        let p = self.partition;
        for (at, e, id, value) in std::mem::take(&mut self.open) {
            let last = self.applied.entry(e).or_insert(at);
            *last = (*last).max(at);
            let Ok(member) = std::str::from_utf8(&id) else {
                self.set_aside(
                    at,
                    &id,
                    value.as_deref().unwrap_or_default(),
                    "member id is not utf-8".into(),
                );
                continue;
            };
            let mkey = member_key(p, member);
            match value {
                Some(mut v) => {
                    let header = match split_member_value(&v) {
                        Ok((_, _, state)) => v.len() - state.len(),
                        Err(e) => {
                            self.set_aside(at, &id, &v, e.to_string());
                            continue;
                        }
                    };
                    // The state is the value after its header: shift it in
                    // place rather than copy it into a new buffer. The
                    // state holds its own due time: the engine queues the
                    // member's timer from it when the partition is handed
                    // over.
                    v.drain(..header);
                    self.batch.put(Table::Members, mkey, v);
                }
                None => self.batch.delete(Table::Members, mkey),
            }
            self.batch_members += 1;
        }
        self.batch.put(
            Table::Meta,
            meta_key(p, META_MAX_TS),
            mark.max_ts.to_le_bytes(),
        );
        match mark.clock_ms {
            Some(clock) => {
                self.batch
                    .put(Table::Meta, meta_key(p, META_CLOCK), clock.to_le_bytes())
            }
            // A local clock of older state must not outrun the restored one.
            None => self.batch.delete(Table::Meta, meta_key(p, META_CLOCK)),
        }
        for topic in self.input_topics {
            if let Some(next) = mark.offsets.get(topic) {
                self.batch
                    .put(Table::Meta, offset_key(topic, p as i32), next.to_le_bytes());
            }
        }
        self.batch
            .put(Table::Meta, checkpoint_key(p), (offset + 1).to_le_bytes());
        let known = KnownOwners {
            max_epoch: self.max_epoch,
            fences: self.fences.clone(),
        };
        self.batch.put(
            Table::Meta,
            owners_key(p),
            serde_json::to_vec(&known).expect("serializable"),
        );
        self.mark = Some(mark);
        if self.batch_members >= self.batch_records {
            self.flush()?;
        }
        Ok(())
    }

    fn set_aside(&mut self, offset: i64, key: &[u8], value: &[u8], reason: String) {
        let mut q = Quarantined::new(
            QuarantineKind::Changelog,
            self.partition,
            key,
            value,
            reason,
        );
        q.offset = Some(offset);
        q.write_to(&mut self.batch);
        self.quarantined.push(q);
    }

    /// Writes what was applied so far (whole commits only).
    pub fn flush(&mut self) -> Result<(), RestoreError> {
        if !self.batch.is_empty() {
            self.members += self.batch_members as u64;
            // No write-ahead log: a restore cut short is redone from the
            // checkpoint, which travels in the same batches; `finish` makes
            // it durable before any regular (logged) write builds on it.
            self.store.write_bulk(std::mem::take(&mut self.batch))?;
            self.batch_members = 0;
        }
        Ok(())
    }

    /// Writes the rest and makes the whole restore durable.
    pub fn finish(&mut self) -> Result<(), RestoreError> {
        self.flush()?;
        self.store.persist()?;
        Ok(())
    }

    /// Records after the last marker, left out.
    pub fn unfinished(&self) -> usize {
        self.open.len()
    }
}

/// Deletes everything this instance keeps for `partition`: members, timers,
/// watermark, changelog checkpoint and the stored input offsets.
pub fn drop_partition<S: Store + ?Sized>(
    store: &S,
    partition: u32,
    input_topics: &[String],
) -> Result<u64, StoreError> {
    let (from, to) = (
        partition_prefix(partition).to_vec(),
        partition_end(partition),
    );
    let mut deleted = 0;
    for table in [Table::Members, Table::Timers, Table::Meta] {
        scan_chunks(store, table, &from, &to, 50_000, |chunk| {
            let mut batch = Batch::default();
            for (k, _) in chunk {
                batch.delete(table, k);
                deleted += 1;
            }
            store.write(batch)
        })?;
    }
    let mut batch = Batch::default();
    for topic in input_topics {
        batch.delete(Table::Meta, offset_key(topic, partition as i32));
    }
    store.write(batch)?;
    Ok(deleted)
}

/// Whether a changelog message is a marker, and its writer's epoch.
fn record_headers(m: &rdkafka::message::BorrowedMessage<'_>) -> (bool, Option<u64>) {
    let Some(h) = m.headers() else {
        return (false, None);
    };
    let mut marker = false;
    let mut epoch = None;
    for h in h.iter() {
        if h.key == MARKER_HEADER {
            marker = true;
        } else if h.key == EPOCH_HEADER {
            epoch = h
                .value
                .and_then(|v| std::str::from_utf8(v).ok())
                .and_then(|v| v.parse().ok());
        }
    }
    (marker, epoch)
}

/// The client context of consumers that read a partition to its end (the
/// restore, `bootstrap`'s seam search): partition EOF is how they end, not
/// an error worth logging; the rest goes through the same rate-limited log
/// as the pipeline's clients.
#[derive(Default)]
pub struct ReaderContext {
    log: KafkaClientLog,
}

impl ClientContext for ReaderContext {
    fn log(&self, level: RDKafkaLogLevel, fac: &str, message: &str) {
        self.log.line(level, fac, message);
    }

    fn error(&self, error: KafkaError, reason: &str) {
        let eof = matches!(
            error,
            KafkaError::PartitionEOF(_) | KafkaError::Global(RDKafkaErrorCode::PartitionEOF)
        );
        if !eof {
            self.log.emit(true, &error.to_string(), reason);
        }
    }
}

impl ConsumerContext for ReaderContext {}

/// What a restore read.
#[derive(Debug, Default)]
pub struct Restored {
    pub records: u64,
    pub members: u64,
    /// The next changelog offset now reflected in local state.
    pub next: i64,
    pub seconds: f64,
    /// Records that could not be decoded, moved to the quarantine table.
    pub quarantined: Vec<Quarantined>,
    /// The highest owner epoch seen (0 without any).
    pub max_epoch: u64,
}

/// Reads partition `partition` of the changelog from `from` to partition EOF
/// and applies it to `store`. Broker errors are retried until `shutdown`.
/// `progress` is called with the records read so far, about once a second.
#[allow(clippy::too_many_arguments)]
pub fn restore<S: Store + ?Sized>(
    mut client: ClientConfig,
    topic: &str,
    partition: u32,
    from: i64,
    store: &S,
    input_topics: &[String],
    batch_records: usize,
    fences: Vec<(i64, u64)>,
    shutdown: &AtomicBool,
    mut progress: impl FnMut(u64, Option<&KafkaError>),
) -> Result<Restored, RestoreError> {
    let started = Instant::now();
    client
        .set("enable.partition.eof", "true")
        .set("enable.auto.commit", "false")
        .set("auto.offset.reset", "earliest")
        // A restore reads a backlog: a broker that holds a fetch for the
        // full wait when it has little to return (tansu does) should not
        // set the pace. 1.8x faster from tansu (`benches/restore.rs`).
        .set("fetch.wait.max.ms", "10");
    let consumer: BaseConsumer<ReaderContext> =
        client.create_with_context(ReaderContext::default())?;
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset(topic, partition as i32, Offset::Offset(from))?;
    consumer.assign(&tpl)?;
    // From the start, everything is read again; from a checkpoint, what
    // came before it is known from the restore (or ownership) that left it.
    let mut r = Restorer::new(store, partition, input_topics, batch_records).with_fences(fences);
    if from > 0 {
        r = r.incremental(from, KnownOwners::read(store, partition)?);
    }
    let mut next = from;
    let mut passes = 0;
    let mut last_progress = Instant::now();
    loop {
        if shutdown.load(Ordering::Relaxed) {
            return Err(RestoreError::Stopped);
        }
        match consumer.poll(Duration::from_millis(200)) {
            Some(Ok(m)) => {
                let (marker, epoch) = record_headers(&m);
                match r.apply_with_epoch(
                    m.offset(),
                    marker,
                    m.key().unwrap_or_default(),
                    m.payload(),
                    epoch,
                ) {
                    Ok(()) => next = m.offset() + 1,
                    // A zombie's records were applied before the marker
                    // that fences them: start over, fences known. (An
                    // incremental restore hands this to its caller, which
                    // must also discard local changes never published.)
                    Err(RestoreError::Refenced(fences)) if from == 0 && passes < 3 => {
                        passes += 1;
                        drop_partition(store, partition, input_topics)?;
                        // Still a restore in progress: cut short, it is redone
                        // from the start.
                        let mut b = Batch::default();
                        b.put(Table::Meta, restoring_key(partition), 0i64.to_le_bytes());
                        store.write(b)?;
                        r = Restorer::new(store, partition, input_topics, batch_records)
                            .with_fences(fences);
                        next = 0;
                        let mut tpl = TopicPartitionList::new();
                        tpl.add_partition_offset(topic, partition as i32, Offset::Offset(0))?;
                        consumer.assign(&tpl)?;
                    }
                    Err(e) => return Err(e),
                }
            }
            Some(Err(KafkaError::PartitionEOF(_))) => break,
            Some(Err(e)) => progress(r.records, Some(&e)),
            None => {}
        }
        if last_progress.elapsed() > Duration::from_secs(1) {
            last_progress = Instant::now();
            progress(r.records, None);
        }
    }
    r.finish()?;
    let unfinished = r.unfinished();
    if unfinished > 0 {
        tracing::info!(
            partition,
            records = unfinished,
            "changelog ends with records of a commit whose marker was never published; left out"
        );
    }
    progress(r.records, None);
    if r.fenced > 0 {
        tracing::warn!(
            partition,
            records = r.fenced,
            first = ?r.first_fenced,
            fences = ?r.fences,
            "changelog records of a replaced owner (a zombie) left out"
        );
    }
    Ok(Restored {
        max_epoch: r.max_epoch,
        records: r.records,
        members: r.members,
        next,
        seconds: started.elapsed().as_secs_f64(),
        quarantined: std::mem::take(&mut r.quarantined),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::member::NEVER;
    use crate::state::MemoryStore;

    fn mark(max_ts: i64, offset: i64) -> Vec<u8> {
        PartitionMark {
            clock_ms: None,
            epoch: None,
            basis: None,
            excludes_unmarked: false,
            max_ts,
            offsets: [("member-events".to_string(), offset)].into(),
        }
        .encode()
    }

    fn topics() -> Vec<String> {
        vec!["member-events".to_string()]
    }

    #[test]
    fn the_last_value_per_member_wins_without_compaction() {
        let store = MemoryStore::default();
        let t = topics();
        let mut r = Restorer::new(&store, 3, &t, 10);
        r.apply(0, false, b"m-1", Some(&member_value(NEVER, b"old")))
            .unwrap();
        r.apply(1, true, MARKER_KEY, Some(&mark(100, 10))).unwrap();
        r.apply(2, false, b"m-1", Some(&member_value(5_000, b"new")))
            .unwrap();
        r.apply(3, false, b"m-2", Some(&member_value(NEVER, b"two")))
            .unwrap();
        r.apply(4, true, MARKER_KEY, Some(&mark(200, 20))).unwrap();
        r.flush().unwrap();
        assert_eq!(
            store.get(Table::Members, &member_key(3, "m-1")).unwrap(),
            Some(b"new".to_vec())
        );
        assert_eq!(
            read_i64(&store, &offset_key("member-events", 3)).unwrap(),
            Some(20)
        );
        assert_eq!(read_i64(&store, &checkpoint_key(3)).unwrap(), Some(5));
        assert_eq!(
            read_i64(&store, &meta_key(3, META_MAX_TS)).unwrap(),
            Some(200)
        );
    }

    #[test]
    fn records_after_the_last_marker_are_left_out() {
        let store = MemoryStore::default();
        let t = topics();
        let mut r = Restorer::new(&store, 0, &t, 10);
        r.apply(0, false, b"m-1", Some(&member_value(NEVER, b"a")))
            .unwrap();
        r.apply(1, true, MARKER_KEY, Some(&mark(100, 7))).unwrap();
        r.apply(2, false, b"m-1", Some(&member_value(NEVER, b"b")))
            .unwrap();
        r.flush().unwrap();
        assert_eq!(r.unfinished(), 1);
        assert_eq!(
            store.get(Table::Members, &member_key(0, "m-1")).unwrap(),
            Some(b"a".to_vec())
        );
        assert_eq!(
            read_i64(&store, &offset_key("member-events", 0)).unwrap(),
            Some(7)
        );
    }

    #[test]
    fn a_tombstone_deletes_the_member() {
        let store = MemoryStore::default();
        let t = topics();
        let mut r = Restorer::new(&store, 0, &t, 1);
        r.apply(0, false, b"m-1", Some(&member_value(NEVER, b"a")))
            .unwrap();
        r.apply(1, true, MARKER_KEY, Some(&mark(1, 1))).unwrap();
        r.apply(2, false, b"m-1", None).unwrap();
        r.apply(3, true, MARKER_KEY, Some(&mark(2, 2))).unwrap();
        r.flush().unwrap();
        assert_eq!(
            store.get(Table::Members, &member_key(0, "m-1")).unwrap(),
            None
        );
    }

    #[test]
    fn undecodable_records_are_quarantined_and_the_rest_restored() {
        let store = MemoryStore::default();
        let t = topics();
        let mut r = Restorer::new(&store, 0, &t, 10);
        // What was seen in the field: a value of an unknown format, then a
        // valid marker. It used to stop the instance at every restart.
        let mut v = member_value(NEVER, b"a");
        v[0] = 255;
        r.apply(0, false, b"m-1", Some(&v)).unwrap();
        r.apply(1, false, b"m-2", Some(&member_value(NEVER, b"b")))
            .unwrap();
        r.apply(2, false, &[0xff, 0xfe], Some(&member_value(NEVER, b"c")))
            .unwrap();
        r.apply(3, true, MARKER_KEY, Some(&mark(1, 1))).unwrap();
        // A marker that does not decode: its records join the next commit.
        r.apply(4, false, b"m-3", Some(&member_value(NEVER, b"d")))
            .unwrap();
        r.apply(5, true, MARKER_KEY, Some(b"{not json")).unwrap();
        r.apply(6, true, MARKER_KEY, Some(&mark(2, 9))).unwrap();
        r.finish().unwrap();
        let reasons: Vec<(Option<i64>, &str)> = r
            .quarantined
            .iter()
            .map(|q| (q.offset, q.reason.as_str()))
            .collect();
        assert_eq!(reasons.len(), 3, "{reasons:?}");
        assert!(reasons[0].1.contains("format 255"), "{reasons:?}");
        assert_eq!(reasons[1].1, "member id is not utf-8");
        assert_eq!(reasons[2].0, Some(5));
        assert_eq!(
            store.get(Table::Members, &member_key(0, "m-2")).unwrap(),
            Some(b"b".to_vec())
        );
        assert_eq!(
            store.get(Table::Members, &member_key(0, "m-3")).unwrap(),
            Some(b"d".to_vec())
        );
        assert_eq!(
            store.get(Table::Members, &member_key(0, "m-1")).unwrap(),
            None
        );
        assert_eq!(
            read_i64(&store, &offset_key("member-events", 0)).unwrap(),
            Some(9)
        );
        assert_eq!(crate::state::quarantine::list(&store).unwrap().len(), 3);
    }

    fn owner_mark(max_ts: i64, offset: i64, epoch: u64, basis: i64) -> Vec<u8> {
        PartitionMark {
            clock_ms: None,
            epoch: Some(epoch),
            basis: Some(basis),
            excludes_unmarked: true,
            max_ts,
            offsets: [("member-events".to_string(), offset)].into(),
        }
        .encode()
    }

    /// A marker of a build before `excludes_unmarked`.
    fn legacy_owner_mark(max_ts: i64, offset: i64, epoch: u64, basis: i64) -> Vec<u8> {
        let mut m = PartitionMark::decode(&owner_mark(max_ts, offset, epoch, basis)).unwrap();
        m.excludes_unmarked = false;
        m.encode()
    }

    #[test]
    fn a_zombies_records_after_the_new_owners_basis_are_left_out() {
        let store = MemoryStore::default();
        let t = topics();
        let mut r = Restorer::new(&store, 0, &t, 10);
        let v = |s: &[u8]| member_value(NEVER, s);
        // Owner 1, then owner 2 takes over having restored to offset 2.
        r.apply_with_epoch(0, false, b"m-1", Some(&v(b"one")), Some(1))
            .unwrap();
        r.apply_with_epoch(1, true, MARKER_KEY, Some(&owner_mark(1, 5, 1, 0)), Some(1))
            .unwrap();
        r.apply_with_epoch(2, true, MARKER_KEY, Some(&owner_mark(1, 5, 2, 2)), Some(2))
            .unwrap();
        // The zombie (epoch 1) still writes; owner 2 writes too.
        r.apply_with_epoch(3, false, b"m-1", Some(&v(b"zombie")), Some(1))
            .unwrap();
        r.apply_with_epoch(4, false, b"m-2", Some(&v(b"two")), Some(2))
            .unwrap();
        r.apply_with_epoch(5, true, MARKER_KEY, Some(&owner_mark(1, 9, 1, 0)), Some(1))
            .unwrap();
        r.apply_with_epoch(6, true, MARKER_KEY, Some(&owner_mark(2, 7, 2, 2)), Some(2))
            .unwrap();
        r.finish().unwrap();
        assert_eq!(r.fenced, 2);
        assert_eq!(r.max_epoch, 2);
        assert_eq!(
            store.get(Table::Members, &member_key(0, "m-1")).unwrap(),
            Some(b"one".to_vec())
        );
        assert_eq!(
            store.get(Table::Members, &member_key(0, "m-2")).unwrap(),
            Some(b"two".to_vec())
        );
        // The zombie's offsets (9) never win over the owner's (7).
        assert_eq!(
            read_i64(&store, &offset_key("member-events", 0)).unwrap(),
            Some(7)
        );
    }

    /// The soak's divergence: a zombie's commit straddles the new owner's
    /// basis, its records before the basis and its marker after it. The
    /// new owner never saw that commit (its restore ended at the basis, the
    /// marker missing) and processed the same input again; a later restore
    /// must not apply the zombie's part before the basis with the new
    /// owner's marker, or the events in it would count twice.
    #[test]
    fn a_zombie_commit_straddling_the_new_owners_basis_is_left_out_whole() {
        let store = MemoryStore::default();
        let t = topics();
        let v = |s: &[u8]| member_value(NEVER, s);
        // (offset, marker, key, value, epoch)
        type Logged<'k> = (i64, bool, &'k [u8], Vec<u8>, u64);
        let log: Vec<Logged<'_>> = vec![
            (0, false, b"m-1", v(b"one"), 1),
            (1, true, MARKER_KEY, owner_mark(1, 5, 1, 0), 1),
            // The zombie's next commit: m-1 before owner 2's basis (3) ...
            (2, false, b"m-1", v(b"zombie"), 1),
            // ... its marker after it.
            (3, true, MARKER_KEY, owner_mark(1, 9, 1, 0), 1),
            (4, false, b"m-2", v(b"two"), 2),
            (5, true, MARKER_KEY, owner_mark(2, 6, 2, 3), 2),
        ];
        let mut r = Restorer::new(&store, 0, &t, 10).with_fences(vec![(0, 1), (3, 2)]);
        for (o, m, k, val, e) in &log {
            r.apply_with_epoch(*o, *m, k, Some(val), Some(*e)).unwrap();
        }
        r.finish().unwrap();
        assert_eq!(
            store.get(Table::Members, &member_key(0, "m-1")).unwrap(),
            Some(b"one".to_vec())
        );
        assert_eq!(
            store.get(Table::Members, &member_key(0, "m-2")).unwrap(),
            Some(b"two".to_vec())
        );
        assert_eq!(
            read_i64(&store, &offset_key("member-events", 0)).unwrap(),
            Some(6)
        );
        assert_eq!(r.fenced, 2, "the zombie's record and its marker");
    }

    /// A log where the owner of epoch 1 published a member record (offset
    /// 2) and then died or lost the partition before the commit's marker;
    /// the next owner (epoch 2) restored to offset 3 without that record
    /// and committed at offset 4 with its input offset 8.
    fn replay_unmarked_then(next_marker: Vec<u8>) -> (MemoryStore, u64) {
        let store = MemoryStore::default();
        let t = topics();
        let v = |s: &[u8]| member_value(NEVER, s);
        let fenced = {
            let mut r = Restorer::new(&store, 0, &t, 10);
            r.apply_with_epoch(0, false, b"m-1", Some(&v(b"one")), Some(1))
                .unwrap();
            r.apply_with_epoch(1, true, MARKER_KEY, Some(&owner_mark(1, 5, 1, 0)), Some(1))
                .unwrap();
            r.apply_with_epoch(2, false, b"m-1", Some(&v(b"unmarked")), Some(1))
                .unwrap();
            r.apply_with_epoch(3, true, MARKER_KEY, Some(&next_marker), Some(2))
                .unwrap();
            r.finish().unwrap();
            r.fenced
        };
        assert_eq!(
            read_i64(&store, &offset_key("member-events", 0)).unwrap(),
            Some(8)
        );
        (store, fenced)
    }

    /// The soak's "two contents": a commit cut off before its marker was
    /// applied with the next owner's marker, which had re-read the same
    /// input, so the member ran ahead of the marker's offsets.
    #[test]
    fn records_of_a_commit_whose_marker_never_came_are_left_out_by_the_next_owners_marker() {
        let (store, fenced) = replay_unmarked_then(owner_mark(2, 8, 2, 3));
        assert_eq!(fenced, 1);
        assert_eq!(
            store.get(Table::Members, &member_key(0, "m-1")).unwrap(),
            Some(b"one".to_vec()),
            "the member as of the last whole commit"
        );
    }

    /// Markers of builds before `excludes_unmarked` came from owners that
    /// kept their own unpublished records across a restart and republished
    /// the marker under their next epoch: those records stay applied.
    #[test]
    fn a_legacy_marker_still_applies_the_unmarked_records_before_its_basis() {
        let (store, fenced) = replay_unmarked_then(legacy_owner_mark(2, 8, 2, 3));
        assert_eq!(fenced, 0);
        assert_eq!(
            store.get(Table::Members, &member_key(0, "m-1")).unwrap(),
            Some(b"unmarked".to_vec())
        );
    }

    #[test]
    fn a_zombie_commit_applied_before_the_marker_that_fences_it_restarts_the_restore() {
        let store = MemoryStore::default();
        let t = topics();
        let v = |s: &[u8]| member_value(NEVER, s);
        // The zombie wrote a whole commit between owner 2's restore (to
        // offset 2) and owner 2's first marker.
        // (offset, marker, key, value, epoch)
        type Logged<'k> = (i64, bool, &'k [u8], Vec<u8>, u64);
        let log: Vec<Logged<'_>> = vec![
            (0, false, b"m-1", v(b"one"), 1),
            (1, true, MARKER_KEY, owner_mark(1, 5, 1, 0), 1),
            (2, false, b"m-1", v(b"zombie"), 1),
            (3, true, MARKER_KEY, owner_mark(1, 9, 1, 0), 1),
            (4, true, MARKER_KEY, owner_mark(1, 5, 2, 2), 2),
        ];
        let mut r = Restorer::new(&store, 0, &t, 10);
        let mut fences = None;
        for (o, m, k, val, e) in &log {
            match r.apply_with_epoch(*o, *m, k, Some(val), Some(*e)) {
                Err(RestoreError::Refenced(f)) => {
                    fences = Some(f);
                    break;
                }
                other => other.unwrap(),
            }
        }
        let fences = fences.expect("the fence was noticed");
        assert_eq!(fences, vec![(0, 1), (2, 2)]);
        // The second pass knows the fence from the start.
        r.flush().unwrap();
        drop_partition(&store, 0, &t).unwrap();
        let mut r = Restorer::new(&store, 0, &t, 10).with_fences(fences);
        for (o, m, k, val, e) in &log {
            r.apply_with_epoch(*o, *m, k, Some(val), Some(*e)).unwrap();
        }
        r.finish().unwrap();
        assert_eq!(
            store.get(Table::Members, &member_key(0, "m-1")).unwrap(),
            Some(b"one".to_vec())
        );
        assert_eq!(
            read_i64(&store, &offset_key("member-events", 0)).unwrap(),
            Some(5)
        );
    }

    #[test]
    fn an_incremental_restore_knows_the_owners_seen_before_its_checkpoint() {
        let store = MemoryStore::default();
        let t = topics();
        let v = |s: &[u8]| member_value(NEVER, s);
        // A full restore sees owners 1 and 3 (3 took over at offset 2).
        let mut r = Restorer::new(&store, 0, &t, 10);
        r.apply_with_epoch(0, false, b"m-1", Some(&v(b"one")), Some(1))
            .unwrap();
        r.apply_with_epoch(1, true, MARKER_KEY, Some(&owner_mark(1, 5, 1, 0)), Some(1))
            .unwrap();
        r.apply_with_epoch(2, true, MARKER_KEY, Some(&owner_mark(1, 5, 3, 2)), Some(3))
            .unwrap();
        r.finish().unwrap();
        // The next restore reads nothing new, yet knows epoch 3: a new owner
        // takes 4, not 1 (its records would be taken for a zombie's).
        let known = KnownOwners::read(&store, 0).unwrap();
        assert_eq!(known.max_epoch, 3);
        assert_eq!(known.fences, vec![(0, 1), (2, 3)]);
        let r = Restorer::new(&store, 0, &t, 10).incremental(3, known);
        assert_eq!(r.max_epoch, 3);
        // A zombie record of epoch 1 after the checkpoint is fenced.
        assert!(r.is_fenced(3, 1));
    }

    #[test]
    fn an_owner_that_took_over_before_the_local_checkpoint_makes_the_restore_start_over() {
        // This instance (epoch 1) published up to offset 5 and checkpointed
        // 6; unknown to it, owner 2 had restored to offset 3 and took over:
        // the local records 3..5 are a zombie's to owner 2.
        let store = MemoryStore::default();
        let t = topics();
        let known = KnownOwners {
            max_epoch: 1,
            fences: vec![(0, 1)],
        };
        let mut r = Restorer::new(&store, 0, &t, 10).incremental(6, known);
        r.apply_with_epoch(6, false, b"m-1", Some(&member_value(NEVER, b"x")), Some(2))
            .unwrap();
        let e = r
            .apply_with_epoch(7, true, MARKER_KEY, Some(&owner_mark(1, 5, 2, 3)), Some(2))
            .unwrap_err();
        assert!(
            matches!(e, RestoreError::Refenced(ref f) if f.contains(&(3, 2))),
            "{e}"
        );
    }

    #[test]
    fn a_fenced_record_after_the_local_checkpoint_makes_the_restore_start_over() {
        // The local state may hold the fenced record: it was this
        // instance's own, published while it no longer owned the partition.
        let store = MemoryStore::default();
        let t = topics();
        let known = KnownOwners {
            max_epoch: 2,
            fences: vec![(0, 1), (4, 2)],
        };
        let mut r = Restorer::new(&store, 0, &t, 10).incremental(6, known);
        let e = r
            .apply_with_epoch(6, false, b"m-1", Some(&member_value(NEVER, b"z")), Some(1))
            .unwrap_err();
        assert!(matches!(e, RestoreError::Refenced(_)), "{e}");
    }

    #[test]
    fn records_served_without_their_headers_keep_their_epoch_and_markers_their_meaning() {
        // tansu served records without headers right after a restart: the
        // restore then took an owner's records for a zombie's (epoch 0) and
        // lost members whose only record they were.
        let store = MemoryStore::default();
        let t = topics();
        let mut r = Restorer::new(&store, 0, &t, 10);
        let mut owner_one = member_value(NEVER, b"one");
        stamp_epoch(&mut owner_one, 1);
        // No header at all: not a marker flag, no epoch.
        r.apply_with_epoch(0, false, MARKER_KEY, Some(&owner_mark(1, 5, 1, 0)), None)
            .unwrap();
        r.apply_with_epoch(1, false, b"m-1", Some(&owner_one), None)
            .unwrap();
        r.apply_with_epoch(2, false, MARKER_KEY, Some(&owner_mark(1, 6, 1, 0)), None)
            .unwrap();
        r.finish().unwrap();
        assert_eq!(r.fenced, 0);
        assert_eq!(
            store.get(Table::Members, &member_key(0, "m-1")).unwrap(),
            Some(b"one".to_vec())
        );
        assert_eq!(
            read_i64(&store, &offset_key("member-events", 0)).unwrap(),
            Some(6)
        );
    }

    #[test]
    fn a_member_named_like_the_old_marker_key_is_a_member() {
        let store = MemoryStore::default();
        let t = topics();
        let mut r = Restorer::new(&store, 0, &t, 10);
        r.apply(
            0,
            false,
            LEGACY_MARKER_KEY,
            Some(&member_value(NEVER, b"m")),
        )
        .unwrap();
        r.apply(1, true, MARKER_KEY, Some(&mark(1, 2))).unwrap();
        r.finish().unwrap();
        let id = std::str::from_utf8(LEGACY_MARKER_KEY).unwrap();
        assert_eq!(
            store.get(Table::Members, &member_key(0, id)).unwrap(),
            Some(b"m".to_vec())
        );
    }

    #[test]
    fn dropping_a_partition_leaves_the_others() {
        let store = MemoryStore::default();
        let t = topics();
        for p in [1, 2] {
            let mut r = Restorer::new(&store, p, &t, 10);
            r.apply(0, false, b"m", Some(&member_value(9, b"s")))
                .unwrap();
            r.apply(1, true, MARKER_KEY, Some(&mark(1, 4))).unwrap();
            r.flush().unwrap();
        }
        drop_partition(&store, 1, &t).unwrap();
        assert_eq!(
            store.get(Table::Members, &member_key(1, "m")).unwrap(),
            None
        );
        assert_eq!(
            read_i64(&store, &offset_key("member-events", 1)).unwrap(),
            None
        );
        assert_eq!(read_i64(&store, &checkpoint_key(1)).unwrap(), None);
        assert!(store
            .get(Table::Members, &member_key(2, "m"))
            .unwrap()
            .is_some());
        assert_eq!(
            read_i64(&store, &offset_key("member-events", 2)).unwrap(),
            Some(4)
        );
    }
}
