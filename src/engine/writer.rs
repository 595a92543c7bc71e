//! Write-behind: a commit's store write on a thread of its own, so that the
//! engine thread goes on with the next batch while RocksDB builds its
//! write batch, appends to the WAL and inserts into the memtable (a quarter
//! of the engine thread when it did that itself).
//!
//! At most one write is in flight: the next commit waits for it first, so
//! writes land in commit order and a refused one is known, with its batch,
//! before anything newer is written. What the engine must do while a write
//! is in flight (keep the members it writes in memory, keep aside the timer
//! entries whose keys only it carries) is the engine's business, not this
//! module's; see [`super::Engine::write_behind`] and
//! [`super::EngineGroup::write_behind`].

use std::sync::mpsc::{channel, Receiver, Sender, TryRecvError};
use std::thread::JoinHandle;

use crate::state::{Batch, Store, StoreError};

/// A write the store refused, with the batch (to be written again, before
/// anything newer).
pub(super) type Refused = (StoreError, Batch);

/// The writer thread and the one write it may have in flight.
pub(super) struct Writer {
    to_thread: Option<Sender<Batch>>,
    from_thread: Receiver<Result<(), Refused>>,
    in_flight: bool,
    thread: Option<JoinHandle<()>>,
}

impl Writer {
    /// A writer thread writing to `store`.
    pub fn spawn<S: Store + Clone + 'static>(store: S) -> Writer {
        let (to_thread, batches) = channel::<Batch>();
        let (results, from_thread) = channel();
        let thread = std::thread::Builder::new()
            .name("store-writer".into())
            .spawn(move || {
                for batch in batches {
                    let result = match store.write_ref(&batch) {
                        Ok(()) => Ok(()),
                        Err(e) => Err((e, batch)),
                    };
                    if results.send(result).is_err() {
                        break;
                    }
                }
            })
            .expect("spawn the store writer thread");
        Writer {
            to_thread: Some(to_thread),
            from_thread,
            in_flight: false,
            thread: Some(thread),
        }
    }

    /// Whether a write has been handed over and not yet waited for.
    pub fn in_flight(&self) -> bool {
        self.in_flight
    }

    /// Hands `batch` to the thread. Wait for the write in flight first.
    pub fn send(&mut self, batch: Batch) {
        assert!(!self.in_flight, "one store write in flight at a time");
        self.to_thread
            .as_ref()
            .expect("the writer thread runs until dropped")
            .send(batch)
            .expect("the store writer thread stopped");
        self.in_flight = true;
    }

    /// How the write in flight went, if it is done by now; `None` while it
    /// is still being written, or when none is in flight.
    pub fn try_wait(&mut self) -> Option<Result<(), Refused>> {
        if !self.in_flight {
            return None;
        }
        match self.from_thread.try_recv() {
            Ok(result) => {
                self.in_flight = false;
                Some(result)
            }
            Err(TryRecvError::Empty) => None,
            Err(TryRecvError::Disconnected) => {
                panic!("the store writer thread answers every write")
            }
        }
    }

    /// Waits for the write in flight, if any, and says how it went.
    pub fn wait(&mut self) -> Result<(), Refused> {
        if !std::mem::take(&mut self.in_flight) {
            return Ok(());
        }
        self.from_thread
            .recv()
            .expect("the store writer thread answers every write")
    }
}

impl Drop for Writer {
    /// Lets the write in flight finish (its result unread: a caller that
    /// cares waits first) and stops the thread.
    fn drop(&mut self) {
        drop(self.to_thread.take());
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::faulty::FaultyStore;
    use crate::state::{MemoryStore, Table};
    use std::sync::Arc;

    fn put(key: &[u8]) -> Batch {
        let mut b = Batch::default();
        b.put(Table::Members, key.to_vec(), b"v".to_vec());
        b
    }

    #[test]
    fn a_write_is_in_the_store_once_waited_for() {
        let store = Arc::new(MemoryStore::new());
        let mut w = Writer::spawn(store.clone());
        assert!(w.wait().is_ok(), "nothing in flight");
        w.send(put(b"a"));
        assert!(w.in_flight());
        assert!(w.wait().is_ok());
        assert!(!w.in_flight());
        assert_eq!(
            store.get(Table::Members, b"a").unwrap(),
            Some(b"v".to_vec())
        );
    }

    #[test]
    fn a_refused_write_comes_back_with_its_batch() {
        let store = Arc::new(FaultyStore::new(MemoryStore::new()));
        let mut w = Writer::spawn(store.clone());
        store.fail_writes(true);
        w.send(put(b"a"));
        let (_, batch) = w.wait().expect_err("the store refused it");
        assert_eq!(batch.ops[0].key, b"a");
        store.fail_writes(false);
        w.send(batch);
        assert!(w.wait().is_ok());
        assert_eq!(
            store.get(Table::Members, b"a").unwrap(),
            Some(b"v".to_vec())
        );
    }

    #[test]
    fn a_write_still_being_written_is_not_reported_until_it_lands() {
        let store = Arc::new(FaultyStore::new(MemoryStore::new()));
        let mut w = Writer::spawn(store.clone());
        assert!(w.try_wait().is_none(), "nothing in flight");
        store.hold_writes(true);
        w.send(put(b"a"));
        std::thread::sleep(std::time::Duration::from_millis(20));
        assert!(w.try_wait().is_none(), "held by the store");
        assert!(w.in_flight());
        store.hold_writes(false);
        let result = loop {
            if let Some(result) = w.try_wait() {
                break result;
            }
            std::thread::yield_now();
        };
        assert!(result.is_ok());
        assert!(!w.in_flight());
        assert!(w.try_wait().is_none(), "reported once");
        assert_eq!(
            store.get(Table::Members, b"a").unwrap(),
            Some(b"v".to_vec())
        );
    }

    #[test]
    fn dropping_the_writer_finishes_the_write_in_flight() {
        let store = Arc::new(MemoryStore::new());
        let mut w = Writer::spawn(store.clone());
        w.send(put(b"a"));
        drop(w);
        assert_eq!(
            store.get(Table::Members, b"a").unwrap(),
            Some(b"v".to_vec())
        );
    }
}
