//! Where a commit's store write goes: into the store at once, or
//! (write-behind) onto a thread of its own, so that the engine thread goes
//! on with the next batch while RocksDB builds its write batch, appends to
//! the WAL and inserts into the memtable (a quarter of the engine thread
//! when it did that itself).
//!
//! At most one write is in flight: the next commit waits for it first, so
//! writes land in commit order and a refused one is known, with its batch,
//! before anything newer is written. [`CommitWriter`] holds that batch and
//! writes it again, first, with the next one. What the engine must do while
//! a write is in flight (keep the members it writes in memory, keep aside
//! the timer entries whose keys only it carries) is the engine's business,
//! not this module's; see [`super::Engine::write_behind`] and
//! [`super::EngineGroup::write_behind`].

use std::sync::mpsc::{channel, Receiver, Sender, TryRecvError};
use std::thread::JoinHandle;

use crate::state::{Batch, Store, StoreError};

/// A write the store refused, with the batch (to be written again, before
/// anything newer).
type Refused = (StoreError, Batch);

/// The commits of one engine, or of an engine group (whose engines' changes
/// go in one batch): written synchronously, or behind on a [`Writer`]; and
/// the last one the store refused, written again before anything newer.
#[derive(Default)]
pub(super) struct CommitWriter {
    writer: Option<Writer>,
    /// A commit the store refused (disk full, read-only): written, before
    /// anything newer, by the next write that gets through.
    unwritten: Option<Batch>,
    /// The size of the last batch written (writes, bytes), so the next one
    /// is allocated once, not grown by doubling (each doubling copies it
    /// and touches fresh memory).
    last_size: (usize, usize),
}

impl CommitWriter {
    /// From now on writes go behind, on a thread writing to `store`.
    pub fn write_behind<S: Store + Clone + 'static>(&mut self, store: &S) {
        if self.writer.is_none() {
            self.writer = Some(Writer::spawn(store.clone()));
        }
    }

    /// An empty batch for the next commit, with room for one the size of
    /// the last.
    pub fn next_batch(&self) -> Batch {
        let (ops, bytes) = self.last_size;
        Batch::with_capacity(ops, bytes)
    }

    /// Whether writes go behind.
    pub fn is_behind(&self) -> bool {
        self.writer.is_some()
    }

    /// Whether the last write is still in flight: not durable yet.
    pub fn in_flight(&self) -> bool {
        self.writer.as_ref().is_some_and(Writer::in_flight)
    }

    /// Whether a commit the store refused is waiting to be written again.
    pub fn has_unwritten(&self) -> bool {
        self.unwritten.is_some()
    }

    /// Waits for the write in flight; `None` when none is. A refused one is
    /// kept, to be written again by the next [`CommitWriter::write`] or
    /// [`CommitWriter::write_unwritten`].
    pub fn wait(&mut self) -> Option<Result<(), StoreError>> {
        let writer = self.writer.as_mut().filter(|w| w.in_flight())?;
        let result = writer.wait();
        Some(self.keep_refused(result))
    }

    /// [`CommitWriter::wait`] without waiting: `None` while the write is
    /// still being written, or when none is in flight.
    pub fn try_wait(&mut self) -> Option<Result<(), StoreError>> {
        let result = self.writer.as_mut()?.try_wait()?;
        Some(self.keep_refused(result))
    }

    fn keep_refused(&mut self, result: Result<(), Refused>) -> Result<(), StoreError> {
        result.map_err(|(error, batch)| {
            // Only sent while nothing was left unwritten.
            debug_assert!(self.unwritten.is_none());
            self.unwritten = Some(batch);
            error
        })
    }

    /// Writes `batch`: behind when writing behind and nothing refused is
    /// left, otherwise at once, after the refused commit in the same atomic
    /// write (nothing is lost and the order is kept; refused again, both
    /// are kept). Wait for the write in flight first. Returns whether the
    /// write is in flight.
    pub fn write<S: Store>(&mut self, store: &S, batch: Batch) -> Result<bool, StoreError> {
        self.last_size = (batch.len(), batch.payload_bytes());
        match self.writer.as_mut() {
            Some(writer) if self.unwritten.is_none() => {
                writer.send(batch);
                Ok(true)
            }
            _ => self.write_now(store, batch).map(|()| false),
        }
    }

    /// Writes the refused commit again, at once, if there is one; returns
    /// whether there was.
    pub fn write_unwritten<S: Store>(&mut self, store: &S) -> Result<bool, StoreError> {
        debug_assert!(!self.in_flight(), "wait for the write in flight first");
        if self.unwritten.is_none() {
            return Ok(false);
        }
        self.write_now(store, Batch::default()).map(|()| true)
    }

    /// Writes `batch` at once, after the refused commit if there is one.
    fn write_now<S: Store>(&mut self, store: &S, mut batch: Batch) -> Result<(), StoreError> {
        let batch = match self.unwritten.take() {
            Some(mut older) => {
                older.append(&mut batch);
                older
            }
            None => batch,
        };
        if !batch.is_empty() {
            if let Err(e) = store.write_ref(&batch) {
                self.unwritten = Some(batch);
                return Err(e);
            }
        }
        Ok(())
    }
}

/// The writer thread and the one write it may have in flight.
struct Writer {
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
        b.put(Table::Members, key, b"v");
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
        assert_eq!(batch.get(0).map(|op| op.key), Some(&b"a"[..]));
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
    fn a_commit_refused_behind_is_written_first_with_the_next_one_at_once() {
        let store = Arc::new(FaultyStore::new(MemoryStore::new()));
        let mut c = CommitWriter::default();
        c.write_behind(&store);
        store.fail_writes(true);
        assert!(c.write(&store, put(b"a")).unwrap(), "in flight");
        assert!(c.wait().expect("one in flight").is_err());
        assert!(c.has_unwritten());
        // Still refused: both kept, in order.
        assert!(c.write(&store, put(b"b")).is_err());
        store.fail_writes(false);
        assert!(c.write_unwritten(&store).unwrap());
        assert!(!c.has_unwritten());
        assert!(!c.write_unwritten(&store).unwrap(), "nothing left");
        for k in [b"a", b"b"] {
            assert_eq!(store.get(Table::Members, k).unwrap(), Some(b"v".to_vec()));
        }
        // Nothing refused left: behind again.
        assert!(c.write(&store, put(b"c")).unwrap());
        assert!(c.wait().unwrap().is_ok());
        assert!(c.wait().is_none());
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
