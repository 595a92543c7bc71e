//! Durable state: the store trait the engine writes through, its RocksDB and
//! in-memory implementations, the key layout, and the per-member state with
//! its rolling windows and binary encoding.
//!
//! Everything the engine keeps is scoped by Kafka partition (the first four
//! bytes of every key), so one partition's state can be checkpointed, dropped
//! or rebuilt on its own.

pub mod codec;
pub mod faulty;
pub mod hint;
pub mod keys;
pub mod member;
pub mod memory;
pub mod packed;
pub mod quarantine;
pub mod rocks;
pub mod window;

pub use member::MemberState;
pub use memory::MemoryStore;
pub use rocks::{RocksStore, RocksTuning};

/// The tables of the store. RocksDB keeps each in its own column family so
/// they can be tuned and measured apart.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Table {
    /// Member state, keyed by partition + member id.
    Members,
    /// Timer index, keyed by partition + due time + member id.
    Timers,
    /// Alerts written but not yet acknowledged by the broker.
    Outbox,
    /// Checkpoints: per-partition offsets and watermarks, format version.
    Meta,
    /// Records that could not be decoded, moved aside with their reason
    /// (see [`quarantine`]).
    Quarantine,
}

impl Table {
    pub const ALL: [Table; 5] = [
        Table::Members,
        Table::Timers,
        Table::Outbox,
        Table::Meta,
        Table::Quarantine,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Table::Members => "members",
            Table::Timers => "timers",
            Table::Outbox => "outbox",
            Table::Meta => "meta",
            Table::Quarantine => "quarantine",
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("rocksdb error: {0}")]
    Rocks(#[from] rocksdb::Error),
    #[error("cannot open state directory {path}: {source}")]
    Open {
        path: String,
        #[source]
        source: rocksdb::Error,
    },
    #[error("state in {table} under key {key} is corrupt: {reason}")]
    Corrupt {
        table: &'static str,
        key: String,
        reason: String,
    },
    #[error("state format version {found} is newer than this build understands ({supported})")]
    Version { found: u8, supported: u8 },
    /// A write refused by a store that is not RocksDB (the fault-injecting
    /// test store).
    #[error("state store refused the write: {0}")]
    Refused(String),
}

/// One atomic group of writes. The engine builds one per input batch and
/// hands it to the store in a single call, so state, timers, outbox and
/// offsets always move together.
///
/// Keys and values live back to back in one buffer, not in two heap blocks
/// a write: a commit holds tens of thousands of writes, built on an engine
/// thread and read (then freed) on the store writer's, and separate blocks
/// cost an allocation each, a free across threads each, and a cache miss
/// each when the store copies them out in key order.
#[derive(Debug, Default, Clone)]
pub struct Batch {
    bytes: Vec<u8>,
    ops: Vec<OpAt>,
}

/// Where one write's key (and, right after it, its value) sits in `bytes`.
#[derive(Debug, Clone, Copy)]
struct OpAt {
    table: Table,
    start: usize,
    key_len: u32,
    /// `DELETE` for a deletion.
    value_len: u32,
}

const DELETE: u32 = u32::MAX;

/// One write of a [`Batch`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Op<'a> {
    pub table: Table,
    pub key: &'a [u8],
    /// `None` deletes the key.
    pub value: Option<&'a [u8]>,
}

impl Batch {
    /// An empty batch with room for `ops` writes of `bytes` key and value
    /// bytes in all.
    pub fn with_capacity(ops: usize, bytes: usize) -> Self {
        Batch {
            bytes: Vec::with_capacity(bytes),
            ops: Vec::with_capacity(ops),
        }
    }

    pub fn put(&mut self, table: Table, key: impl AsRef<[u8]>, value: impl AsRef<[u8]>) {
        let value = value.as_ref();
        let value_len = u32::try_from(value.len())
            .ok()
            .filter(|&n| n != DELETE)
            .expect("a value under 4 GiB");
        self.push(table, key.as_ref(), value_len);
        self.bytes.extend_from_slice(value);
    }

    pub fn delete(&mut self, table: Table, key: impl AsRef<[u8]>) {
        self.push(table, key.as_ref(), DELETE);
    }

    fn push(&mut self, table: Table, key: &[u8], value_len: u32) {
        self.ops.push(OpAt {
            table,
            start: self.bytes.len(),
            key_len: u32::try_from(key.len()).expect("a key under 4 GiB"),
            value_len,
        });
        self.bytes.extend_from_slice(key);
    }

    fn op(&self, at: &OpAt) -> Op<'_> {
        let key_end = at.start + at.key_len as usize;
        Op {
            table: at.table,
            key: &self.bytes[at.start..key_end],
            value: (at.value_len != DELETE)
                .then(|| &self.bytes[key_end..key_end + at.value_len as usize]),
        }
    }

    /// The writes in the order they were made.
    pub fn iter(&self) -> impl ExactSizeIterator<Item = Op<'_>> + '_ {
        self.ops.iter().map(|at| self.op(at))
    }

    /// The `i`th write.
    pub fn get(&self, i: usize) -> Option<Op<'_>> {
        self.ops.get(i).map(|at| self.op(at))
    }

    /// The write at `index` (of [`Batch::iter`]'s order).
    fn op_at(&self, index: u32) -> Op<'_> {
        self.op(&self.ops[index as usize])
    }

    /// Asks the processor for where the write at `index` sits (a hint).
    fn hint_entry(&self, index: u32) {
        hint::prefetch(self.ops.as_ptr().wrapping_add(index as usize).cast(), 1);
    }

    /// Asks the processor for the write's key and value, back to back in
    /// the buffer (a hint; its entry should be in the CPU cache by now).
    fn hint_bytes(&self, index: u32) {
        if let Some(at) = self.ops.get(index as usize) {
            let op = self.op(at);
            let len = op.key.len() + op.value.map_or(0, <[u8]>::len);
            hint::prefetch(op.key.as_ptr(), len.div_ceil(64) + 1);
        }
    }

    /// Moves every write of `other` after this batch's, leaving `other` empty.
    pub fn append(&mut self, other: &mut Batch) {
        if self.ops.is_empty() {
            std::mem::swap(self, other);
            other.clear();
            return;
        }
        let base = self.bytes.len();
        self.bytes.append(&mut other.bytes);
        self.ops.extend(other.ops.drain(..).map(|at| OpAt {
            start: at.start + base,
            ..at
        }));
    }

    /// Keeps only the writes `keep` says yes to, in their order.
    pub fn retain(&mut self, mut keep: impl FnMut(Op<'_>) -> bool) {
        let mut kept = Batch::with_capacity(self.ops.len(), self.bytes.len());
        for op in self.iter().filter(|op| keep(*op)) {
            match op.value {
                Some(v) => kept.put(op.table, op.key, v),
                None => kept.delete(op.table, op.key),
            }
        }
        *self = kept;
    }

    pub fn clear(&mut self) {
        self.bytes.clear();
        self.ops.clear();
    }

    pub fn len(&self) -> usize {
        self.ops.len()
    }

    pub fn is_empty(&self) -> bool {
        self.ops.is_empty()
    }

    /// The key and value bytes of all writes together.
    pub fn payload_bytes(&self) -> usize {
        self.bytes.len()
    }
}

/// Figures the telemetry module exports; zero where a store has no such thing.
#[derive(Debug, Default, Clone, Copy)]
pub struct StoreStats {
    pub live_sst_bytes: u64,
    pub block_cache_usage_bytes: u64,
    pub pending_compaction_bytes: u64,
    pub memtable_bytes: u64,
    pub estimated_members: u64,
    pub write_stalled: bool,
}

/// Key–value pairs returned by a scan, in key order.
pub type KeyValues = Vec<(Vec<u8>, Vec<u8>)>;

/// Visits every entry with `from <= key < to` in key order, at most `chunk`
/// entries at a time, so a pass over millions of keys holds one chunk in
/// memory and `visit` may write between chunks (the next chunk starts after
/// the last key seen, not at an iterator the write could invalidate).
pub fn scan_chunks<S: Store + ?Sized, E: From<StoreError>>(
    store: &S,
    table: Table,
    from: &[u8],
    to: &[u8],
    chunk: usize,
    mut visit: impl FnMut(KeyValues) -> Result<(), E>,
) -> Result<(), E> {
    let mut cursor = from.to_vec();
    loop {
        let entries = store.scan(table, &cursor, to, chunk)?;
        let Some((last, _)) = entries.last() else {
            return Ok(());
        };
        // The smallest key after `last`.
        cursor.clear();
        cursor.extend_from_slice(last);
        cursor.push(0);
        visit(entries)?;
    }
}

/// The small interface between the engine and its storage.
pub trait Store: Send + Sync {
    fn get(&self, table: Table, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError>;

    /// [`Store::get`] of several keys (faster when sorted), in their order.
    fn multi_get(
        &self,
        table: Table,
        keys: &[Vec<u8>],
    ) -> Result<Vec<Option<Vec<u8>>>, StoreError> {
        keys.iter().map(|k| self.get(table, k)).collect()
    }

    /// Up to `limit` entries with `from <= key < to`, in key order.
    fn scan(
        &self,
        table: Table,
        from: &[u8],
        to: &[u8],
        limit: usize,
    ) -> Result<KeyValues, StoreError>;

    /// Applies the batch atomically and durably (to the write-ahead log).
    fn write(&self, batch: Batch) -> Result<(), StoreError>;

    /// [`Store::write`] of a batch the caller keeps, to write it again if
    /// the store refuses it (a full disk, a read-only file system).
    fn write_ref(&self, batch: &Batch) -> Result<(), StoreError> {
        self.write(batch.clone())
    }

    /// Applies the batch atomically but without the write-ahead log: for
    /// bulk loads that can be redone (a restore), made durable afterwards by
    /// [`Store::persist`]. Until then a crash may lose it.
    fn write_bulk(&self, batch: Batch) -> Result<(), StoreError> {
        self.write(batch)
    }

    /// Makes every earlier [`Store::write_bulk`] durable.
    fn persist(&self) -> Result<(), StoreError> {
        Ok(())
    }

    fn stats(&self) -> StoreStats {
        StoreStats::default()
    }
}

impl<S: Store + ?Sized> Store for Box<S> {
    fn get(&self, table: Table, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        (**self).get(table, key)
    }
    fn multi_get(
        &self,
        table: Table,
        keys: &[Vec<u8>],
    ) -> Result<Vec<Option<Vec<u8>>>, StoreError> {
        (**self).multi_get(table, keys)
    }
    fn scan(
        &self,
        table: Table,
        from: &[u8],
        to: &[u8],
        limit: usize,
    ) -> Result<KeyValues, StoreError> {
        (**self).scan(table, from, to, limit)
    }
    fn write(&self, batch: Batch) -> Result<(), StoreError> {
        (**self).write(batch)
    }
    fn write_ref(&self, batch: &Batch) -> Result<(), StoreError> {
        (**self).write_ref(batch)
    }
    fn write_bulk(&self, batch: Batch) -> Result<(), StoreError> {
        (**self).write_bulk(batch)
    }
    fn persist(&self) -> Result<(), StoreError> {
        (**self).persist()
    }
    fn stats(&self) -> StoreStats {
        (**self).stats()
    }
}

impl<S: Store + ?Sized> Store for std::sync::Arc<S> {
    fn get(&self, table: Table, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        (**self).get(table, key)
    }
    fn multi_get(
        &self,
        table: Table,
        keys: &[Vec<u8>],
    ) -> Result<Vec<Option<Vec<u8>>>, StoreError> {
        (**self).multi_get(table, keys)
    }
    fn scan(
        &self,
        table: Table,
        from: &[u8],
        to: &[u8],
        limit: usize,
    ) -> Result<KeyValues, StoreError> {
        (**self).scan(table, from, to, limit)
    }
    fn write(&self, batch: Batch) -> Result<(), StoreError> {
        (**self).write(batch)
    }
    fn write_ref(&self, batch: &Batch) -> Result<(), StoreError> {
        (**self).write_ref(batch)
    }
    fn write_bulk(&self, batch: Batch) -> Result<(), StoreError> {
        (**self).write_bulk(batch)
    }
    fn persist(&self) -> Result<(), StoreError> {
        (**self).persist()
    }
    fn stats(&self) -> StoreStats {
        (**self).stats()
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    type Model = Vec<(Table, Vec<u8>, Option<Vec<u8>>)>;

    fn op() -> impl Strategy<Value = (Table, Vec<u8>, Option<Vec<u8>>)> {
        (
            prop::sample::select(Table::ALL.to_vec()),
            prop::collection::vec(any::<u8>(), 0..6),
            prop::option::of(prop::collection::vec(any::<u8>(), 0..6)),
        )
    }

    fn build(ops: &Model) -> Batch {
        let mut b = Batch::default();
        for (table, key, value) in ops {
            match value {
                Some(v) => b.put(*table, key, v),
                None => b.delete(*table, key),
            }
        }
        b
    }

    fn seen(b: &Batch) -> Model {
        b.iter()
            .map(|op| (op.table, op.key.to_vec(), op.value.map(<[u8]>::to_vec)))
            .collect()
    }

    proptest! {
        #[test]
        fn a_batch_gives_back_its_writes_in_order_through_append_and_retain(
            first in prop::collection::vec(op(), 0..20),
            second in prop::collection::vec(op(), 0..20),
            keep_table in prop::sample::select(Table::ALL.to_vec()),
        ) {
            let mut b = build(&first);
            prop_assert_eq!(seen(&b), first.clone());
            prop_assert_eq!(b.len(), first.len());
            prop_assert_eq!(
                b.payload_bytes(),
                first.iter().map(|(_, k, v)| k.len() + v.as_ref().map_or(0, Vec::len)).sum::<usize>()
            );

            let mut other = build(&second);
            b.append(&mut other);
            prop_assert!(other.is_empty());
            let mut both = first.clone();
            both.extend(second.iter().cloned());
            prop_assert_eq!(seen(&b), both.clone());
            for (i, expected) in both.iter().enumerate() {
                prop_assert_eq!(b.get(i).map(|op| op.key.to_vec()), Some(expected.1.clone()));
            }

            b.retain(|op| op.table == keep_table);
            both.retain(|(t, _, _)| *t == keep_table);
            prop_assert_eq!(seen(&b), both);
        }
    }
}
