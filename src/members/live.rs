//! What the running pipeline owns, as the member API needs to know it.
//!
//! The engine runs on its own thread and owns the store; the HTTP handlers
//! run on the async runtime. The pipeline publishes the store (once open)
//! and a small snapshot of its partitions (processing with their clocks,
//! restoring) here; handlers read the snapshot and the store, never the
//! engine. Reads of committed state need no lock on the engine: RocksDB
//! reads are thread-safe.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, OnceLock, RwLock};

use crate::state::Store;

/// The partitions this instance works on, as last published.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Partitions {
    /// Partitions the engine processes, with their stream clocks (`None`
    /// before the partition's first event).
    pub processing: BTreeMap<u32, Option<i64>>,
    /// Partitions assigned here but still restoring from the changelog.
    pub restoring: BTreeSet<u32>,
}

/// Shared between the pipeline (writer) and the member API (reader).
#[derive(Default)]
pub struct Live {
    store: OnceLock<Arc<dyn Store>>,
    partitions: RwLock<Partitions>,
}

impl Live {
    /// Called once the store is open.
    pub fn set_store(&self, store: Arc<dyn Store>) {
        let _ = self.store.set(store);
    }

    pub fn store(&self) -> Option<&Arc<dyn Store>> {
        self.store.get()
    }

    /// Replaces the snapshot (cheap when nothing changed: no write lock).
    pub fn publish(
        &self,
        processing: impl IntoIterator<Item = (u32, Option<i64>)>,
        restoring: impl IntoIterator<Item = u32>,
    ) {
        let next = Partitions {
            processing: processing.into_iter().collect(),
            restoring: restoring.into_iter().collect(),
        };
        let same = self.partitions.read().is_ok_and(|p| *p == next);
        if !same {
            if let Ok(mut p) = self.partitions.write() {
                *p = next;
            }
        }
    }

    pub fn partitions(&self) -> Partitions {
        self.partitions
            .read()
            .map(|p| p.clone())
            .unwrap_or_default()
    }
}
