//! An in-memory store with the same semantics as the RocksDB one, for unit
//! tests of the engine.

use std::collections::BTreeMap;
use std::sync::RwLock;

use super::{Batch, KeyValues, Store, StoreError, Table};

type Tables = BTreeMap<(Table, Vec<u8>), Vec<u8>>;

#[derive(Debug, Default)]
pub struct MemoryStore {
    tables: RwLock<Tables>,
}

impl MemoryStore {
    pub fn new() -> Self {
        Self::default()
    }

    /// Number of keys in a table (tests inspect state through this).
    pub fn len(&self, table: Table) -> usize {
        self.tables
            .read()
            .expect("memory store lock poisoned")
            .keys()
            .filter(|(t, _)| *t == table)
            .count()
    }

    pub fn is_empty(&self) -> bool {
        self.tables
            .read()
            .expect("memory store lock poisoned")
            .is_empty()
    }
}

impl Store for MemoryStore {
    fn get(&self, table: Table, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        let t = self.tables.read().expect("memory store lock poisoned");
        Ok(t.get(&(table, key.to_vec())).cloned())
    }

    fn scan(
        &self,
        table: Table,
        from: &[u8],
        to: &[u8],
        limit: usize,
    ) -> Result<KeyValues, StoreError> {
        let t = self.tables.read().expect("memory store lock poisoned");
        Ok(t.range((table, from.to_vec())..(table, to.to_vec()))
            .take(limit)
            .map(|((_, k), v)| (k.clone(), v.clone()))
            .collect())
    }

    fn write(&self, batch: Batch) -> Result<(), StoreError> {
        self.write_ref(&batch)
    }

    fn write_ref(&self, batch: &Batch) -> Result<(), StoreError> {
        let mut t = self.tables.write().expect("memory store lock poisoned");
        for op in batch.iter() {
            match op.value {
                Some(v) => t.insert((op.table, op.key.to_vec()), v.to_vec()),
                None => t.remove(&(op.table, op.key.to_vec())),
            };
        }
        Ok(())
    }
}
