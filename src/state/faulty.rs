//! A store that refuses writes on demand: disk trouble (a full disk, a
//! file system remounted read-only) for tests of what the engine and the
//! pipeline do when a write fails. It can also hold writes back (a slow
//! disk), for tests of what happens while a write is in flight.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Condvar, Mutex};

use super::{Batch, KeyValues, Store, StoreError, StoreStats, Table};

pub struct FaultyStore<S> {
    inner: S,
    failing: AtomicBool,
    refused: AtomicU64,
    /// While true, writes wait.
    held: Mutex<bool>,
    released: Condvar,
}

impl<S: Store> FaultyStore<S> {
    pub fn new(inner: S) -> Self {
        FaultyStore {
            inner,
            failing: AtomicBool::new(false),
            refused: AtomicU64::new(0),
            held: Mutex::new(false),
            released: Condvar::new(),
        }
    }

    /// From now on every write fails (`true`) or goes through (`false`).
    pub fn fail_writes(&self, failing: bool) {
        self.failing.store(failing, Ordering::SeqCst);
    }

    /// Writes refused so far.
    pub fn refused(&self) -> u64 {
        self.refused.load(Ordering::SeqCst)
    }

    pub fn inner(&self) -> &S {
        &self.inner
    }

    /// From now on writes wait (`true`) until called with `false`.
    pub fn hold_writes(&self, hold: bool) {
        *self.held.lock().expect("not poisoned") = hold;
        self.released.notify_all();
    }

    fn check(&self) -> Result<(), StoreError> {
        let held = self.held.lock().expect("not poisoned");
        drop(
            self.released
                .wait_while(held, |held| *held)
                .expect("not poisoned"),
        );
        if self.failing.load(Ordering::SeqCst) {
            self.refused.fetch_add(1, Ordering::SeqCst);
            return Err(StoreError::Refused(
                "no space left on device (injected)".into(),
            ));
        }
        Ok(())
    }
}

impl<S: Store> Store for FaultyStore<S> {
    fn get(&self, table: Table, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        self.inner.get(table, key)
    }
    fn scan(
        &self,
        table: Table,
        from: &[u8],
        to: &[u8],
        limit: usize,
    ) -> Result<KeyValues, StoreError> {
        self.inner.scan(table, from, to, limit)
    }
    fn write(&self, batch: Batch) -> Result<(), StoreError> {
        self.check()?;
        self.inner.write(batch)
    }
    fn write_ref(&self, batch: &Batch) -> Result<(), StoreError> {
        self.check()?;
        self.inner.write_ref(batch)
    }
    fn write_bulk(&self, batch: Batch) -> Result<(), StoreError> {
        self.check()?;
        self.inner.write_bulk(batch)
    }
    fn persist(&self) -> Result<(), StoreError> {
        self.inner.persist()
    }
    fn stats(&self) -> StoreStats {
        self.inner.stats()
    }
}
