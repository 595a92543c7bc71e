//! Restores run on threads of their own, one per partition being restored,
//! so the partitions an instance already owns keep processing while a moved
//! one is rebuilt from the changelog.
//!
//! A restore writes only keys of its own partition (members, timers, the
//! partition's meta keys and input offsets), which the engine does not touch
//! until the restore has finished and the partition is handed to it; the
//! shared RocksDB handles concurrent writers. The engine thread keeps the
//! in-memory outbox: a restore that deletes stale outbox records from the
//! store reports their sequence numbers back (see [`RestoreDone::dropped`]),
//! and none of them can be published meanwhile, because changelog records
//! are only published for partitions the engine processes.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{channel, Receiver, Sender};
use std::sync::Arc;
use std::thread::JoinHandle;

use rdkafka::ClientConfig;

use super::changelog::{self, restoring_key, RestoreError, Restored};
use super::outbox;
use super::source::TopicPartition;
use crate::state::{Batch, Store, Table};
use crate::telemetry::events::{BrokerError, LogThrottle, RestoreProgress, StateQuarantined};
use crate::telemetry::Metrics;

/// Everything a restore thread needs; built on the engine thread.
pub struct RestoreTask {
    pub partition: u32,
    /// Changelog offset to read from.
    pub from: i64,
    pub store: super::SharedStore,
    pub client: ClientConfig,
    pub topic: String,
    pub input_topics: Vec<String>,
    pub batch_records: usize,
    /// Outbox records of this partition's changelog never published: local
    /// changes that are stale if anybody else wrote to the changelog since.
    pub pending: Vec<u64>,
    /// Those of `pending` with an entry in the outbox table (an older
    /// release stored changelog records; see `outbox`).
    pub stored: Vec<u64>,
    pub metrics: Arc<Metrics>,
}

/// What a restore thread reports when it ends.
pub struct RestoreDone {
    pub partition: u32,
    pub result: Result<Restored, RestoreError>,
    /// Local state was discarded and rebuilt from the whole changelog.
    pub from_scratch: bool,
    /// Outbox records deleted from the store: the engine thread drops them
    /// from its in-memory outbox, whether or not the restore finished.
    pub dropped: Vec<u64>,
}

/// A restore, waiting for a slot or running, and the input partitions
/// waiting for it (one partition number can span several input topics).
pub struct RestoreJob {
    pub parts: Vec<TopicPartition>,
    /// The task while it waits for a slot (`pipeline.max_concurrent_restores`).
    waiting: Option<RestoreTask>,
    cancel: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl RestoreJob {
    /// A restore waiting to be launched.
    pub fn new(task: RestoreTask, parts: Vec<TopicPartition>) -> Self {
        RestoreJob {
            parts,
            waiting: Some(task),
            cancel: Arc::new(AtomicBool::new(false)),
            thread: None,
        }
    }

    pub fn is_waiting(&self) -> bool {
        self.waiting.is_some()
    }

    /// Starts the restore thread; it reports to `done` when it ends.
    pub fn launch(&mut self, done: Sender<RestoreDone>) {
        let Some(task) = self.waiting.take() else {
            return;
        };
        let stop = self.cancel.clone();
        let thread = std::thread::Builder::new()
            .name(format!("restore-{}", task.partition))
            .spawn(move || {
                let _ = done.send(run(task, &stop));
            })
            .expect("spawn restore thread");
        self.thread = Some(thread);
    }

    /// Asks the thread to stop; it does within one poll (200 ms).
    pub fn cancel(&self) {
        self.cancel.store(true, Ordering::Relaxed);
    }

    /// Waits for the thread to end (after it reported, or was cancelled).
    pub fn join(&mut self) {
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for RestoreJob {
    fn drop(&mut self) {
        self.cancel();
        self.join();
    }
}

/// This instance's restores: a job per partition number (waiting for a
/// slot or running) and the reports of those that ended, not yet handed to
/// the engine. Only the engine thread touches it; restore threads report
/// over the channel.
pub struct Restores {
    jobs: BTreeMap<i32, RestoreJob>,
    tx: Sender<RestoreDone>,
    rx: Receiver<RestoreDone>,
    ended: Vec<RestoreDone>,
}

impl Default for Restores {
    fn default() -> Self {
        let (tx, rx) = channel();
        Restores {
            jobs: BTreeMap::new(),
            tx,
            rx,
            ended: Vec::new(),
        }
    }
}

impl Restores {
    /// Partition numbers being restored.
    pub fn partitions(&self) -> impl Iterator<Item = i32> + '_ {
        self.jobs.keys().copied()
    }

    /// Input partitions waiting for a restore (one number can span topics).
    pub fn input_partitions(&self) -> usize {
        self.jobs.values().map(|j| j.parts.len()).sum()
    }

    pub fn contains(&self, p: i32) -> bool {
        self.jobs.contains_key(&p)
    }

    pub fn is_empty(&self) -> bool {
        self.jobs.is_empty()
    }

    /// Adds `tp` to the restore of its partition number, if one exists.
    pub fn join_existing(&mut self, tp: &TopicPartition) -> bool {
        match self.jobs.get_mut(&tp.1) {
            Some(job) => {
                job.parts.push(tp.clone());
                true
            }
            None => false,
        }
    }

    pub fn add(&mut self, task: RestoreTask, tp: TopicPartition) {
        self.jobs.insert(tp.1, RestoreJob::new(task, vec![tp]));
    }

    /// Takes `tp` out of its restore. True when that restore now waits for
    /// no input partition at all (the caller stops it).
    pub fn leave(&mut self, tp: &TopicPartition) -> bool {
        match self.jobs.get_mut(&tp.1) {
            Some(job) => {
                job.parts.retain(|t| t != tp);
                job.parts.is_empty()
            }
            None => false,
        }
    }

    /// Launches waiting restores, lowest partition first, while fewer than
    /// `max_running` run.
    pub fn launch_waiting(&mut self, max_running: usize) {
        let mut running = self.jobs.values().filter(|j| !j.is_waiting()).count();
        for job in self.jobs.values_mut() {
            if running >= max_running {
                break;
            }
            if job.is_waiting() {
                job.launch(self.tx.clone());
                running += 1;
            }
        }
    }

    /// Takes the reports of restore threads that ended. Returns the outbox
    /// records those restores deleted from the store, which must leave the
    /// in-memory outbox at once, even if the restore is no longer wanted.
    pub fn collect(&mut self) -> Vec<u64> {
        let mut dropped = Vec::new();
        while let Ok(done) = self.rx.try_recv() {
            dropped.extend_from_slice(&done.dropped);
            self.ended.push(done);
        }
        dropped
    }

    /// Cancels and joins the restore of `p` and forgets any report of it.
    /// `None` if there was none; else the outbox records deleted meanwhile
    /// (see [`Restores::collect`]).
    pub fn stop(&mut self, p: i32) -> Option<Vec<u64>> {
        let mut job = self.jobs.remove(&p)?;
        job.cancel();
        job.join();
        let dropped = self.collect();
        self.ended.retain(|d| d.partition as i32 != p);
        Some(dropped)
    }

    /// Asks every restore thread to stop (they do within one poll).
    pub fn cancel_all(&self) {
        for job in self.jobs.values() {
            job.cancel();
        }
    }

    /// The reports collected so far, each with its job (joined), or `None`
    /// for the job when the partition was revoked meanwhile.
    pub fn take_ended(&mut self) -> Vec<(RestoreDone, Option<RestoreJob>)> {
        std::mem::take(&mut self.ended)
            .into_iter()
            .map(|done| {
                let job = self.jobs.remove(&(done.partition as i32)).map(|mut j| {
                    j.join();
                    j
                });
                (done, job)
            })
            .collect()
    }
}

/// The changelog offset a restore of `partition` starts from: where an
/// interrupted restore started (it wrote without the write-ahead log, so
/// after a crash some of its writes may be lost while later ones survived),
/// else the local checkpoint, else the beginning.
pub fn start_offset<S: Store + ?Sized>(
    store: &S,
    partition: u32,
) -> Result<i64, crate::state::StoreError> {
    let interrupted = changelog::read_i64(store, &restoring_key(partition))?;
    let checkpoint = changelog::read_i64(store, &changelog::checkpoint_key(partition))?;
    Ok(interrupted.or(checkpoint).unwrap_or(0))
}

fn run(task: RestoreTask, cancel: &AtomicBool) -> RestoreDone {
    let mut done = RestoreDone {
        partition: task.partition,
        result: Err(RestoreError::Stopped),
        from_scratch: false,
        dropped: Vec::new(),
    };
    done.result = restore(&task, cancel, &mut done);
    done
}

/// Brings the local state of the partition up to the end of its changelog.
///
/// Local state that already reflects the changelog up to its checkpoint
/// only reads what was written after it (a partition that comes back
/// catches up instead of starting over). Local changes never published
/// (this instance crashed or lost the partition before its outbox drained)
/// are discarded with the local state and the partition is rebuilt from
/// the whole changelog: the input since its last marker is read again.
fn restore(
    task: &RestoreTask,
    cancel: &AtomicBool,
    done: &mut RestoreDone,
) -> Result<Restored, RestoreError> {
    let store = &*task.store;
    let p = task.partition;
    mark_restoring(store, p, task.from)?;
    let read = |from: i64, fences: Vec<(i64, u64)>| {
        let mut seen = 0;
        let error_log = LogThrottle::default();
        changelog::restore(
            task.client.clone(),
            &task.topic,
            p,
            from,
            store,
            &task.input_topics,
            task.batch_records,
            fences,
            cancel,
            |records, error| {
                RestoreProgress {
                    partition: p,
                    records: records - seen,
                    total: records,
                }
                .emit(&task.metrics);
                seen = records;
                if let Some(error) = error {
                    BrokerError {
                        context: "restoring",
                        error,
                        log: error_log.due(),
                    }
                    .emit(&task.metrics);
                }
            },
        )
    };
    // The local state is kept only if it is the changelog's state up to
    // where the restore starts: nothing of it left unpublished, and no
    // zombie's records in it. Else the partition is rebuilt from the whole
    // changelog. Unpublished records of its own are never kept, even when
    // nobody wrote since: every owner's first marker leaves out records
    // still waiting for a marker (`PartitionMark::excludes_unmarked`), so a
    // commit of this state that was cut off mid-publish cannot be completed
    // by republishing its marker. (Kafka Streams under exactly-once wipes
    // the state after an unclean shutdown for the same reason.)
    // `Err(fences)`: rebuild from the beginning, knowing these fences.
    let kept = if task.pending.is_empty() {
        match read(task.from, Vec::new()) {
            Ok(restored) => Ok(restored),
            Err(RestoreError::Refenced(fences)) => Err(fences),
            Err(e) => return Err(e),
        }
    } else {
        Err(Vec::new())
    };
    let mut restored = match kept {
        Ok(restored) => restored,
        Err(fences) => {
            // Unpublished changes first: once they are gone, nothing stale
            // can reach the changelog, whatever happens next.
            let mut stale = Batch::default();
            for seq in &task.stored {
                stale.delete(Table::Outbox, outbox::key(*seq));
            }
            store.write(stale)?;
            done.dropped.clone_from(&task.pending);
            changelog::drop_partition(store, p, &task.input_topics)?;
            mark_restoring(store, p, 0)?;
            done.from_scratch = true;
            read(0, fences)?
        }
    };
    let quarantined = std::mem::take(&mut restored.quarantined);
    for q in &quarantined {
        StateQuarantined(q).emit(&task.metrics);
    }
    restored.quarantined = quarantined;
    // `changelog::restore` made its writes durable; the partition is owned
    // here again, so it is no longer a candidate for dropping.
    let mut finished = Batch::default();
    finished.delete(Table::Meta, restoring_key(p));
    finished.delete(Table::Meta, changelog::unowned_since_key(p));
    store.write(finished)?;
    Ok(restored)
}

fn mark_restoring(store: &dyn Store, partition: u32, from: i64) -> Result<(), RestoreError> {
    let mut b = Batch::default();
    b.put(Table::Meta, restoring_key(partition), from.to_le_bytes());
    store.write(b)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::MemoryStore;

    fn put(store: &MemoryStore, key: Vec<u8>, v: i64) {
        let mut b = Batch::default();
        b.put(Table::Meta, key, v.to_le_bytes());
        store.write(b).unwrap();
    }

    #[test]
    fn a_partition_never_restored_starts_at_the_beginning() {
        assert_eq!(start_offset(&MemoryStore::default(), 2).unwrap(), 0);
    }

    #[test]
    fn a_restored_partition_resumes_from_its_checkpoint() {
        let store = MemoryStore::default();
        put(&store, changelog::checkpoint_key(2), 25);
        assert_eq!(start_offset(&store, 2).unwrap(), 25);
    }

    #[test]
    fn an_interrupted_restore_starts_over_from_where_it_started() {
        // The checkpoint it reached may have survived a crash without the
        // member writes before it (no write-ahead log during a restore).
        let store = MemoryStore::default();
        put(&store, restoring_key(2), 10);
        put(&store, changelog::checkpoint_key(2), 25);
        assert_eq!(start_offset(&store, 2).unwrap(), 10);
    }
}
