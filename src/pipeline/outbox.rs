//! The outbox: alerts and dead letters are written to RocksDB in the same
//! batch as the state and input offsets that produced them, and deleted only
//! once the broker has acknowledged them. A crash between commit and
//! delivery therefore republishes (same `alert_id`) instead of losing.
//!
//! Changelog records are not stored a second time. The member records the
//! commit writes already hold the state, and no restart ever publishes a
//! changelog record it found stored: a partition with changelog records
//! committed but not acknowledged is rebuilt from the changelog when it is
//! next assigned (see `restore`). All that must survive a crash is that
//! fact, one flag per partition ([`unpublished_key`]), written in the same
//! batch as the records' state and cleared by the first commit after the
//! broker acknowledged them all. The records themselves are kept in memory
//! until then, for publishing and retries.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Instant;

use super::quarantine_dead_letter;
use crate::state::keys::{meta_key, outbox_key, split_outbox_key, GLOBAL_PARTITION};
use crate::state::quarantine::{Kind as QuarantineKind, Quarantined};
use crate::state::{scan_chunks, Batch, Store, StoreError, Table};
use crate::telemetry::events::{OutboxRecovered, StateQuarantined};
use crate::telemetry::Metrics;

/// What to publish, and where.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OutboxRecord {
    /// An alert for the alert topic, keyed by member id.
    Alert { member_id: String, json: Vec<u8> },
    /// A rejected input message for the dead-letter topic, unchanged, with
    /// the reason and its origin (sent as headers).
    DeadLetter {
        key: Option<Vec<u8>>,
        payload: Vec<u8>,
        error: String,
        topic: String,
        partition: i32,
        offset: i64,
    },
    /// A member's state after a commit, for partition `partition` of the
    /// changelog topic (`None`: a tombstone).
    Changelog {
        partition: i32,
        member_id: String,
        value: Option<Vec<u8>>,
    },
    /// The end of one commit's changelog records for `partition`.
    ChangelogMark { partition: i32, mark: Vec<u8> },
}

#[derive(Debug, thiserror::Error)]
#[error("corrupt outbox record: {0}")]
pub struct CorruptRecord(&'static str);

fn put_bytes(out: &mut Vec<u8>, b: &[u8]) {
    out.extend_from_slice(&(b.len() as u32).to_le_bytes());
    out.extend_from_slice(b);
}

struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], CorruptRecord> {
        if self.0.len() < n {
            return Err(CorruptRecord("truncated"));
        }
        let (a, b) = self.0.split_at(n);
        self.0 = b;
        Ok(a)
    }
    fn bytes(&mut self) -> Result<&'a [u8], CorruptRecord> {
        let n = u32::from_le_bytes(self.take(4)?.try_into().expect("4 bytes"));
        self.take(n as usize)
    }
    fn string(&mut self) -> Result<String, CorruptRecord> {
        String::from_utf8(self.bytes()?.to_vec()).map_err(|_| CorruptRecord("invalid utf-8"))
    }
}

const ALERT: u8 = 1;
const DEAD_LETTER: u8 = 2;
const CHANGELOG: u8 = 3;
const CHANGELOG_MARK: u8 = 4;

impl OutboxRecord {
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::new();
        match self {
            OutboxRecord::Alert { member_id, json } => {
                out.push(ALERT);
                put_bytes(&mut out, member_id.as_bytes());
                put_bytes(&mut out, json);
            }
            OutboxRecord::DeadLetter {
                key,
                payload,
                error,
                topic,
                partition,
                offset,
            } => {
                out.push(DEAD_LETTER);
                out.push(key.is_some() as u8);
                put_bytes(&mut out, key.as_deref().unwrap_or_default());
                put_bytes(&mut out, payload);
                put_bytes(&mut out, error.as_bytes());
                put_bytes(&mut out, topic.as_bytes());
                out.extend_from_slice(&partition.to_le_bytes());
                out.extend_from_slice(&offset.to_le_bytes());
            }
            OutboxRecord::Changelog {
                partition,
                member_id,
                value,
            } => {
                out.push(CHANGELOG);
                out.extend_from_slice(&partition.to_le_bytes());
                put_bytes(&mut out, member_id.as_bytes());
                out.push(value.is_some() as u8);
                put_bytes(&mut out, value.as_deref().unwrap_or_default());
            }
            OutboxRecord::ChangelogMark { partition, mark } => {
                out.push(CHANGELOG_MARK);
                out.extend_from_slice(&partition.to_le_bytes());
                put_bytes(&mut out, mark);
            }
        }
        out
    }

    /// The changelog partition of a changelog record, `None` for alerts and
    /// dead letters.
    pub fn changelog_partition(&self) -> Option<i32> {
        match self {
            OutboxRecord::Changelog { partition, .. }
            | OutboxRecord::ChangelogMark { partition, .. } => Some(*partition),
            _ => None,
        }
    }

    pub fn decode(bytes: &[u8]) -> Result<Self, CorruptRecord> {
        let mut r = Reader(bytes);
        match r.take(1)?[0] {
            ALERT => Ok(OutboxRecord::Alert {
                member_id: r.string()?,
                json: r.bytes()?.to_vec(),
            }),
            DEAD_LETTER => {
                let has_key = r.take(1)?[0] == 1;
                let key = r.bytes()?.to_vec();
                Ok(OutboxRecord::DeadLetter {
                    key: has_key.then_some(key),
                    payload: r.bytes()?.to_vec(),
                    error: r.string()?,
                    topic: r.string()?,
                    partition: i32::from_le_bytes(r.take(4)?.try_into().expect("4 bytes")),
                    offset: i64::from_le_bytes(r.take(8)?.try_into().expect("8 bytes")),
                })
            }
            CHANGELOG => {
                let partition = i32::from_le_bytes(r.take(4)?.try_into().expect("4 bytes"));
                let member_id = r.string()?;
                let has_value = r.take(1)?[0] == 1;
                let value = r.bytes()?.to_vec();
                Ok(OutboxRecord::Changelog {
                    partition,
                    member_id,
                    value: has_value.then_some(value),
                })
            }
            CHANGELOG_MARK => Ok(OutboxRecord::ChangelogMark {
                partition: i32::from_le_bytes(r.take(4)?.try_into().expect("4 bytes")),
                mark: r.bytes()?.to_vec(),
            }),
            _ => Err(CorruptRecord("unknown kind")),
        }
    }
}

/// Outbox keys sort by a process-wide sequence, so records are republished
/// in the order they were written.
pub fn key(seq: u64) -> Vec<u8> {
    outbox_key(0, seq)
}

/// Meta key flagging that `partition` has changelog records committed here
/// that the broker has not acknowledged (see the module comment).
pub fn unpublished_key(partition: u32) -> Vec<u8> {
    meta_key(partition, UNPUBLISHED)
}

const UNPUBLISHED: &str = "changelog_unpublished";

/// Meta key of the next outbox sequence number.
fn next_seq_key() -> Vec<u8> {
    meta_key(GLOBAL_PARTITION, "outbox_next_seq")
}

pub fn seq_of(key: &[u8]) -> Option<u64> {
    split_outbox_key(key).map(|(_, s)| s)
}

/// The records committed (or about to be) but not yet acknowledged by the
/// broker, in sequence order, and the store writes that keep the outbox
/// table in step with them: new records are put in the next commit,
/// acknowledged ones deleted in it.
pub struct Outbox {
    records: BTreeMap<u64, OutboxRecord>,
    /// Above this many records, idle clock advance waits (memory bound).
    max: usize,
    next_seq: u64,
    /// `next_seq` as last written to the store.
    stored_next_seq: u64,
    /// Records in `records` but not yet in a commit.
    pending_puts: Vec<u64>,
    /// Acknowledged records to delete in the next commit.
    delivered: Vec<u64>,
    /// When the batch that raised each unacknowledged alert was received,
    /// for the event-to-alert latency (not kept across restarts).
    received: BTreeMap<u64, Instant>,
    /// Unacknowledged changelog records (markers included) per changelog
    /// partition, placeholders for an earlier run's among them.
    changelog_pending: BTreeMap<i32, usize>,
    /// Partitions whose [`unpublished_key`] is set, as of the last commit
    /// built (written or waiting to be written again).
    flagged: BTreeSet<i32>,
    /// Changelog records an older release stored with their value: their
    /// entries are deleted like alerts' once acknowledged.
    stored_changelog: BTreeSet<u64>,
    /// One sequence number per partition an earlier run left flagged: it
    /// stands for that run's unacknowledged changelog records (never
    /// published; the partition's restore starts over, see `restore`).
    inherited: BTreeMap<u64, i32>,
}

impl Outbox {
    /// The outbox a previous run left in `store`. Entries that do not decode
    /// are moved to the quarantine and replaced by a dead letter saying so,
    /// in one write before anything else happens: a crash loop on one bad
    /// entry would hold every alert behind it hostage.
    pub fn load(store: &dyn Store, max: usize, metrics: &Metrics) -> Result<Self, StoreError> {
        let mut records = BTreeMap::new();
        let mut stored_changelog = BTreeSet::new();
        let mut changelog_pending: BTreeMap<i32, usize> = BTreeMap::new();
        let mut corrupt = Vec::new();
        scan_chunks(
            store,
            Table::Outbox,
            &key(0),
            &key(u64::MAX),
            10_000,
            |chunk| {
                for (k, v) in chunk {
                    let decoded = match seq_of(&k) {
                        None => Err("outbox key is not a sequence number".to_string()),
                        Some(seq) => OutboxRecord::decode(&v)
                            .map(|rec| (seq, rec))
                            .map_err(|e| e.to_string()),
                    };
                    match decoded {
                        Ok((seq, rec)) => {
                            if let Some(p) = rec.changelog_partition() {
                                stored_changelog.insert(seq);
                                *changelog_pending.entry(p).or_default() += 1;
                            }
                            records.insert(seq, rec);
                        }
                        Err(reason) => corrupt.push(Quarantined::new(
                            QuarantineKind::Outbox,
                            GLOBAL_PARTITION,
                            &k,
                            &v,
                            reason,
                        )),
                    }
                }
                Ok::<_, StoreError>(())
            },
        )?;
        OutboxRecovered {
            records: records.len(),
        }
        .emit(metrics);
        // Sequences never repeat, even after every record was acknowledged
        // and deleted: a delivery report or a log line naming a sequence
        // names one record for good.
        let stored_next_seq =
            super::changelog::read_i64(store, &next_seq_key())?.map_or(0, |n| n as u64);
        let next_seq = records
            .keys()
            .next_back()
            .map_or(0, |s| s + 1)
            .max(stored_next_seq);
        let mut outbox = Outbox {
            next_seq,
            stored_next_seq,
            records,
            max,
            pending_puts: Vec::new(),
            delivered: Vec::new(),
            received: BTreeMap::new(),
            changelog_pending,
            flagged: BTreeSet::new(),
            stored_changelog,
            inherited: BTreeMap::new(),
        };
        for p in flagged_partitions(store)? {
            outbox.flagged.insert(p);
            outbox.inherited.insert(outbox.next_seq, p);
            outbox.next_seq += 1;
            *outbox.changelog_pending.entry(p).or_default() += 1;
        }
        if !corrupt.is_empty() {
            let mut batch = Batch::default();
            for q in &corrupt {
                StateQuarantined(q).emit(metrics);
                q.write_to(&mut batch);
                batch.delete(Table::Outbox, q.key.clone());
                outbox.push_into(quarantine_dead_letter(q), &mut batch);
            }
            store.write(batch)?;
        }
        Ok(outbox)
    }

    /// Adds a record, to be written by the next commit (see [`Outbox::stage`]).
    /// `received`: when the input that raised it arrived, for the latency.
    pub fn push(&mut self, rec: OutboxRecord, received: Option<Instant>) {
        let seq = self.next_seq;
        self.next_seq += 1;
        if let Some(t) = received {
            self.received.insert(seq, t);
        }
        self.records.insert(seq, rec);
        self.pending_puts.push(seq);
    }

    /// Adds a record and its write to `batch` (a commit being built).
    /// Changelog records go through [`Outbox::push_changelog`].
    pub fn push_into(&mut self, rec: OutboxRecord, batch: &mut Batch) {
        debug_assert!(rec.changelog_partition().is_none(), "changelog record");
        batch.put(Table::Outbox, key(self.next_seq), rec.encode());
        self.records.insert(self.next_seq, rec);
        self.next_seq += 1;
        self.stage_next_seq(batch);
    }

    /// Adds a changelog record (or marker) of the commit being built, kept in
    /// memory only: call [`Outbox::settle_changelog`] for its partition once
    /// the commit's records for it are all pushed.
    pub fn push_changelog(&mut self, rec: OutboxRecord) {
        let p = rec.changelog_partition().expect("a changelog record");
        *self.changelog_pending.entry(p).or_default() += 1;
        self.records.insert(self.next_seq, rec);
        self.next_seq += 1;
    }

    /// Sets or clears `partition`'s [`unpublished_key`] in `batch` (the
    /// commit being built) to say whether it has changelog records not yet
    /// acknowledged. Called once per partition the commit reports on, after
    /// its records: a flag is never both set and cleared in one batch.
    pub fn settle_changelog(&mut self, partition: i32, batch: &mut Batch) {
        let pending = self.changelog_pending.contains_key(&partition);
        if pending && self.flagged.insert(partition) {
            batch.put(Table::Meta, unpublished_key(partition as u32), Vec::new());
        } else if !pending && self.flagged.remove(&partition) {
            batch.delete(Table::Meta, unpublished_key(partition as u32));
        }
        self.stage_next_seq(batch);
    }

    /// Writes the next sequence number with a commit that used new ones.
    fn stage_next_seq(&mut self, batch: &mut Batch) {
        if self.next_seq != self.stored_next_seq {
            batch.put(Table::Meta, next_seq_key(), self.next_seq.to_le_bytes());
            self.stored_next_seq = self.next_seq;
        }
    }

    /// Puts the records pushed since the last commit into `batch`, deletes
    /// the acknowledged ones, and clears the flags of partitions outside
    /// `settled` that have nothing left unacknowledged. `settled`: the
    /// partitions the commit settles itself ([`Outbox::settle_changelog`]);
    /// only those can gain records in it.
    pub fn stage(&mut self, batch: &mut Batch, settled: &BTreeSet<i32>) {
        let pending = &self.changelog_pending;
        self.flagged.retain(|&p| {
            let done = !settled.contains(&p) && !pending.contains_key(&p);
            if done {
                batch.delete(Table::Meta, unpublished_key(p as u32));
            }
            !done
        });
        for seq in self.pending_puts.drain(..) {
            if let Some(rec) = self.records.get(&seq) {
                batch.put(Table::Outbox, key(seq), rec.encode());
            }
        }
        for seq in self.delivered.drain(..) {
            batch.delete(Table::Outbox, key(seq));
        }
        self.stage_next_seq(batch);
    }

    /// The broker acknowledged `seq`: it leaves the outbox, and its table
    /// entry goes with the next commit. Returns when its input arrived.
    pub fn acknowledge(&mut self, seq: u64) -> Option<Instant> {
        if self.remove(seq) {
            self.delivered.push(seq);
        }
        self.received.remove(&seq)
    }

    /// Forgets `seq` without a delete of its own (its table entry, if it
    /// has one, is gone already or goes in a write of the caller's).
    pub fn forget(&mut self, seq: u64) {
        self.remove(seq);
        self.received.remove(&seq);
    }

    /// Takes `seq` out of memory; whether it has an entry in the table.
    fn remove(&mut self, seq: u64) -> bool {
        let (partition, stored) = match (self.records.remove(&seq), self.inherited.remove(&seq)) {
            (Some(rec), _) => match rec.changelog_partition() {
                Some(p) => (Some(p), self.stored_changelog.remove(&seq)),
                None => (None, true),
            },
            (None, Some(p)) => (Some(p), false),
            // Answered twice, or forgotten before its answer came.
            (None, None) => (None, false),
        };
        if let Some(p) = partition {
            if let Some(n) = self.changelog_pending.get_mut(&p) {
                *n -= 1;
                if *n == 0 {
                    self.changelog_pending.remove(&p);
                }
            }
        }
        stored
    }

    /// Sequence numbers of the records for changelog partition `p`, an
    /// earlier run's placeholder among them.
    pub fn changelog_of(&self, p: i32) -> Vec<u64> {
        let mut seqs: Vec<u64> = self
            .records
            .iter()
            .filter(|(_, r)| r.changelog_partition() == Some(p))
            .map(|(seq, _)| *seq)
            .chain(
                self.inherited
                    .iter()
                    .filter(|(_, q)| **q == p)
                    .map(|(seq, _)| *seq),
            )
            .collect();
        seqs.sort_unstable();
        seqs
    }

    /// Those of the changelog records `seqs` (from [`Outbox::changelog_of`])
    /// that have an entry in the outbox table: only what an older release
    /// stored.
    pub fn stored_of(&self, seqs: &[u64]) -> Vec<u64> {
        seqs.iter()
            .copied()
            .filter(|seq| self.stored_changelog.contains(seq))
            .collect()
    }

    /// Forgets every record of changelog partition `p` (its local state is
    /// being dropped), deleting in `batch` those that have a table entry.
    pub fn discard_changelog(&mut self, p: i32, batch: &mut Batch) {
        let seqs = self.changelog_of(p);
        for seq in self.stored_of(&seqs) {
            batch.delete(Table::Outbox, key(seq));
        }
        for seq in seqs {
            self.forget(seq);
        }
    }

    /// Unacknowledged records in sequence order.
    pub fn iter(&self) -> impl Iterator<Item = (&u64, &OutboxRecord)> {
        self.records.iter()
    }

    pub fn len(&self) -> usize {
        self.records.len()
    }

    /// The sequence number the next record gets: every record so far is
    /// below it.
    pub fn next_seq(&self) -> u64 {
        self.next_seq
    }

    pub fn is_empty(&self) -> bool {
        self.records.is_empty()
    }

    pub fn is_full(&self) -> bool {
        self.records.len() >= self.max
    }

    /// Something pushed is waiting for a commit.
    pub fn has_pending_puts(&self) -> bool {
        !self.pending_puts.is_empty()
    }

    /// Acknowledged records wait for a commit to delete them, or to clear
    /// their partition's flag.
    pub fn has_deliveries(&self) -> bool {
        !self.delivered.is_empty()
            || self
                .flagged
                .iter()
                .any(|p| !self.changelog_pending.contains_key(p))
    }
}

/// The partitions whose [`unpublished_key`] is set in `store`.
fn flagged_partitions(store: &dyn Store) -> Result<Vec<i32>, StoreError> {
    let mut flagged = Vec::new();
    scan_chunks(
        store,
        Table::Meta,
        &[],
        &GLOBAL_PARTITION.to_be_bytes(),
        10_000,
        |chunk| {
            for (k, _) in chunk {
                if k.get(4..) == Some(UNPUBLISHED.as_bytes()) {
                    let p = u32::from_be_bytes(k[..4].try_into().expect("4 bytes"));
                    flagged.push(p as i32);
                }
            }
            Ok::<_, StoreError>(())
        },
    )?;
    Ok(flagged)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::MemoryStore;

    fn alert(n: u8) -> OutboxRecord {
        OutboxRecord::Alert {
            member_id: format!("m{n}"),
            json: vec![n],
        }
    }

    fn stored(store: &MemoryStore) -> Vec<(u64, Vec<u8>)> {
        store
            .scan(Table::Outbox, &key(0), &key(u64::MAX), usize::MAX)
            .unwrap()
            .into_iter()
            .map(|(k, v)| (seq_of(&k).unwrap(), v))
            .collect()
    }

    #[test]
    fn pushed_records_reach_the_store_with_the_next_commit_and_leave_it_once_acknowledged() {
        let store = MemoryStore::new();
        let metrics = Metrics::new();
        let mut outbox = Outbox::load(&store, 10, &metrics).unwrap();
        outbox.push(alert(1), None);
        outbox.push(alert(2), Some(Instant::now()));
        assert!(stored(&store).is_empty(), "nothing written before a commit");
        let mut batch = Batch::default();
        outbox.stage(&mut batch, &BTreeSet::new());
        store.write(batch).unwrap();
        assert_eq!(stored(&store).len(), 2);
        assert!(!outbox.has_pending_puts());

        assert!(outbox.acknowledge(1).is_some(), "latency start kept");
        assert_eq!(outbox.len(), 1);
        let mut batch = Batch::default();
        outbox.stage(&mut batch, &BTreeSet::new());
        store.write(batch).unwrap();
        assert_eq!(stored(&store), vec![(0, alert(1).encode())]);

        // A restart finds what was never acknowledged, and numbers on after
        // the highest sequence ever used, not the highest left.
        let mut again = Outbox::load(&store, 10, &metrics).unwrap();
        assert_eq!(
            again
                .iter()
                .map(|(s, r)| (*s, r.clone()))
                .collect::<Vec<_>>(),
            vec![(0, alert(1))]
        );
        again.push(alert(3), None);
        assert_eq!(
            again.iter().map(|(s, _)| *s).collect::<Vec<_>>(),
            vec![0, 2]
        );
    }

    fn member(p: i32, id: &str) -> OutboxRecord {
        OutboxRecord::Changelog {
            partition: p,
            member_id: id.into(),
            value: Some(vec![3, 1, 2]),
        }
    }

    fn flagged(store: &MemoryStore) -> Vec<i32> {
        flagged_partitions(store).unwrap()
    }

    /// One commit as the pipeline builds it: `records` pushed for their
    /// partitions, then every partition in `held` settled.
    fn commit(store: &MemoryStore, outbox: &mut Outbox, held: &[i32], records: Vec<OutboxRecord>) {
        let settled: BTreeSet<i32> = held.iter().copied().collect();
        let mut batch = Batch::default();
        outbox.stage(&mut batch, &settled);
        for r in records {
            outbox.push_changelog(r);
        }
        for p in held {
            outbox.settle_changelog(*p, &mut batch);
        }
        store.write(batch).unwrap();
    }

    #[test]
    fn changelog_records_are_not_stored_twice_only_their_partitions_flag() {
        let store = MemoryStore::new();
        let metrics = Metrics::new();
        let mut outbox = Outbox::load(&store, 100, &metrics).unwrap();
        commit(
            &store,
            &mut outbox,
            &[0, 1, 2],
            vec![member(0, "a"), member(2, "b"), member(2, "c")],
        );
        assert!(
            stored(&store).is_empty(),
            "no outbox entry for changelog records"
        );
        assert_eq!(
            flagged(&store),
            vec![0, 2],
            "flagged in the commit that wrote them"
        );
        assert_eq!(outbox.len(), 3, "kept in memory for publishing");
        assert_eq!(outbox.changelog_of(2).len(), 2);

        // Partition 0 acknowledged: its flag goes with the next commit,
        // partition 2's stays while one of its records is unanswered.
        let seqs: Vec<u64> = outbox.iter().map(|(s, _)| *s).collect();
        outbox.acknowledge(seqs[0]);
        outbox.acknowledge(seqs[1]);
        assert!(outbox.has_deliveries(), "a flag to clear asks for a commit");
        commit(&store, &mut outbox, &[0, 1, 2], vec![]);
        assert_eq!(flagged(&store), vec![2]);
        assert!(!outbox.has_deliveries());
        assert!(
            stored(&store).is_empty(),
            "no deletes of entries never written"
        );

        // A partition that gains records in the commit that would have
        // cleared its flag keeps it.
        outbox.acknowledge(seqs[2]);
        commit(&store, &mut outbox, &[0, 1, 2], vec![member(2, "d")]);
        assert_eq!(flagged(&store), vec![2]);
    }

    #[test]
    fn a_restart_finds_a_flagged_partitions_records_pending_but_never_publishes_them() {
        let store = MemoryStore::new();
        let metrics = Metrics::new();
        let mut outbox = Outbox::load(&store, 100, &metrics).unwrap();
        outbox.push(alert(1), None);
        commit(
            &store,
            &mut outbox,
            &[4, 5],
            vec![member(4, "a"), member(5, "b")],
        );
        let delivered = outbox.changelog_of(5)[0];
        outbox.acknowledge(delivered);
        commit(&store, &mut outbox, &[4, 5], vec![]);

        let mut again = Outbox::load(&store, 100, &metrics).unwrap();
        let pending = again.changelog_of(4);
        assert_eq!(
            pending.len(),
            1,
            "one placeholder for partition 4's records"
        );
        assert!(
            again.stored_of(&pending).is_empty(),
            "nothing in the table to delete"
        );
        assert!(
            again.changelog_of(5).is_empty(),
            "partition 5 had all its answers"
        );
        assert_eq!(
            again.iter().map(|(_, r)| r.clone()).collect::<Vec<_>>(),
            vec![alert(1)],
            "only the alert is published again"
        );
        // Its restore drops it (rebuilding the partition from the
        // changelog); the flag then goes with the next commit, also when
        // the partition is held elsewhere by then.
        again.forget(pending[0]);
        assert!(again.has_deliveries());
        commit(&store, &mut again, &[], vec![]);
        assert!(flagged(&store).is_empty());
        assert!(Outbox::load(&store, 100, &metrics)
            .unwrap()
            .changelog_of(4)
            .is_empty());
    }

    #[test]
    fn changelog_entries_an_older_release_stored_are_pending_and_deleted_once_acknowledged() {
        let store = MemoryStore::new();
        let mut batch = Batch::default();
        batch.put(Table::Outbox, key(0), member(3, "a").encode());
        batch.put(Table::Outbox, key(1), alert(1).encode());
        store.write(batch).unwrap();
        let mut outbox = Outbox::load(&store, 100, &Metrics::new()).unwrap();
        assert_eq!(outbox.changelog_of(3), vec![0]);
        assert_eq!(
            outbox.stored_of(&[0]),
            vec![0],
            "stored by the older release"
        );
        assert_eq!(outbox.len(), 2, "both published again");
        outbox.acknowledge(0);
        let mut batch = Batch::default();
        outbox.stage(&mut batch, &BTreeSet::new());
        store.write(batch).unwrap();
        assert_eq!(stored(&store), vec![(1, alert(1).encode())]);

        // Discarding a partition deletes the entries it had, and only those.
        let mut batch = Batch::default();
        batch.put(Table::Outbox, key(7), member(6, "b").encode());
        store.write(batch).unwrap();
        let mut outbox = Outbox::load(&store, 100, &Metrics::new()).unwrap();
        commit(&store, &mut outbox, &[6], vec![member(6, "c")]);
        let mut batch = Batch::default();
        outbox.discard_changelog(6, &mut batch);
        assert_eq!(batch.len(), 1);
        store.write(batch).unwrap();
        assert!(outbox.changelog_of(6).is_empty());
        assert_eq!(stored(&store), vec![(1, alert(1).encode())]);
    }

    #[test]
    fn a_corrupt_entry_is_quarantined_and_dead_lettered_instead_of_stopping_the_load() {
        let store = MemoryStore::new();
        let mut batch = Batch::default();
        batch.put(Table::Outbox, key(0), alert(1).encode());
        batch.put(Table::Outbox, key(1), vec![0xff, 0x00]);
        store.write(batch).unwrap();

        let outbox = Outbox::load(&store, 10, &Metrics::new()).unwrap();
        let records: Vec<_> = outbox.iter().map(|(_, r)| r.clone()).collect();
        assert_eq!(records.len(), 2, "the good record and a dead letter");
        assert_eq!(records[0], alert(1));
        let errors: Vec<_> = records[1..]
            .iter()
            .map(|r| match r {
                OutboxRecord::DeadLetter { error, topic, .. } => {
                    assert_eq!(topic, "churnwatch-state/outbox");
                    error.clone()
                }
                other => panic!("expected a dead letter, got {other:?}"),
            })
            .collect();
        assert!(
            errors.iter().all(|e| e.starts_with("corrupt_state")),
            "{errors:?}"
        );
        // The dead letter is durable and the bad entry gone from the table
        // (the dead letter may take its sequence number: the delete comes
        // first in the same write).
        let table: Vec<OutboxRecord> = stored(&store)
            .into_iter()
            .map(|(_, v)| OutboxRecord::decode(&v).unwrap())
            .collect();
        assert_eq!(table, records);
        assert!(!outbox.is_full() && !outbox.has_pending_puts());
    }

    #[test]
    fn records_round_trip() {
        let records = [
            OutboxRecord::Alert {
                member_id: "m-1".into(),
                json: br#"{"a":1}"#.to_vec(),
            },
            OutboxRecord::DeadLetter {
                key: None,
                payload: vec![0xff, 0, b'{'],
                error: "invalid_json: expected value".into(),
                topic: "member-events".into(),
                partition: 3,
                offset: 42,
            },
            OutboxRecord::Changelog {
                partition: 2,
                member_id: "m-2".into(),
                value: Some(vec![1, 2, 3]),
            },
            OutboxRecord::Changelog {
                partition: 2,
                member_id: "m-3".into(),
                value: None,
            },
            OutboxRecord::ChangelogMark {
                partition: 5,
                mark: br#"{"max_ts":1}"#.to_vec(),
            },
        ];
        for r in records {
            assert_eq!(OutboxRecord::decode(&r.encode()).unwrap(), r);
        }
    }

    #[test]
    fn truncated_records_are_errors_not_panics() {
        let bytes = OutboxRecord::Alert {
            member_id: "m".into(),
            json: b"{}".to_vec(),
        }
        .encode();
        for n in 0..bytes.len() {
            assert!(OutboxRecord::decode(&bytes[..n]).is_err());
        }
    }

    #[test]
    fn keys_sort_by_sequence() {
        assert!(key(9) < key(10));
        assert_eq!(seq_of(&key(77)), Some(77));
    }
}
