//! Durable state: the store trait the engine writes through, its RocksDB and
//! in-memory implementations, the key layout, and the per-member state with
//! its rolling windows and binary encoding.
//!
//! Everything the engine keeps is scoped by Kafka partition (the first four
//! bytes of every key), so one partition's state can be checkpointed, dropped
//! or rebuilt on its own.

pub mod codec;
pub mod faulty;
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
#[derive(Debug, Default, Clone)]
pub struct Batch {
    pub ops: Vec<Op>,
}

#[derive(Debug, Clone)]
pub struct Op {
    pub table: Table,
    pub key: Vec<u8>,
    /// `None` deletes the key.
    pub value: Option<Vec<u8>>,
}

impl Batch {
    pub fn put(&mut self, table: Table, key: Vec<u8>, value: Vec<u8>) {
        self.ops.push(Op {
            table,
            key,
            value: Some(value),
        });
    }
    pub fn delete(&mut self, table: Table, key: Vec<u8>) {
        self.ops.push(Op {
            table,
            key,
            value: None,
        });
    }
    pub fn len(&self) -> usize {
        self.ops.len()
    }
    pub fn is_empty(&self) -> bool {
        self.ops.is_empty()
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
