//! The engine: validated events in, member state, timers and alerts out.
//!
//! `replay` and the Kafka pipeline drive the same engine, batch by batch:
//! [`Engine::process`] for every message, then [`Engine::commit`] once per
//! batch, which writes every changed member and the stream clocks in one
//! atomic store batch together with whatever the caller adds (consumed
//! offsets, outbox entries).
//!
//! Members live in a bounded, decoded, write-back cache in front of the
//! store (`cache`): read (or read ahead, [`Engine::prefetch`]) once, changed
//! in memory by any number of events, written once per commit. One engine
//! owns its partitions alone (a thread of `replay --threads`, or the
//! pipeline's engine thread), so nothing on the per-event path is shared.
//!
//! Time is event time (SPEC §3), kept **per partition**, as Kafka Streams
//! keeps stream time per task: a partition's clock is its highest event time
//! minus the allowed lateness, never moves back, and is moved by nothing but
//! that partition's own events (and, on an idle partition, by the wall clock
//! when the caller says so). Absence signals wait for timers (`timers`: one
//! due time per member, at the earliest moment one of its conditions could
//! become true, kept in the member's record; a timer index in the store,
//! its earliest keys in memory per partition). Timers fire in due order
//! *interleaved with the events*: before an event is applied, every timer
//! its partition's new clock has passed fires; a member's own pending timer
//! also fires before that member's event when the event is past it. So the
//! alerts depend only on each partition's sequence of events, never on
//! batch boundaries, commits, restarts or the size of the cache.

mod answers;
mod cache;
mod clock;
mod group;
mod slot_index;
#[cfg(test)]
mod tests;
mod timers;
mod writer;

use std::borrow::{BorrowMut, Cow};
use std::cell::Cell;
use std::collections::BTreeMap;
use std::sync::Arc;

use xxhash_rust::xxh3::xxh3_64;

use crate::alert::score::risk_score;
use crate::alert::{Alert, AlertConfig, Subject};
use crate::detect::{stage_change, Context, DetectConfig, Finding, Signal, Verdict, DETECTORS};
use crate::event::{Event, EventKind, Rejection, Validator};
use crate::state::codec;
use crate::state::keys::{
    member_key, meta_key, partition_end, partition_prefix, split_member_key, split_timer_key,
    timer_key, timers_marker_key,
};
use crate::state::member::{MemberFormat, OpenAlert, Stage, NEVER};
use crate::state::quarantine::{Kind as QuarantineKind, Quarantined};
use crate::state::{scan_chunks, Batch, MemberState, Store, StoreError, Table};
use crate::telemetry::events::{
    ClockReleased, EngineTally, EventRejected, MemberAlerted, MemberReactivated, StateCommitted,
    StateQuarantined, StateWriteRetried,
};
use crate::telemetry::Metrics;

use answers::{Answers, Asked};
pub use cache::CacheStats;
use cache::{Cached, MemberCache, TimerMarks, Written};
pub use clock::ClockConfig;
pub use group::{EngineGroup, Input};
use timers::{Next, TimerQueue};
use writer::CommitWriter;

impl Default for EngineConfig {
    fn default() -> Self {
        EngineConfig {
            evict_after_ms: None,
            member_cache_bytes: 64 << 20,
            member_format: MemberFormat::default(),
            detect: DetectConfig::default(),
            lifecycle: stage_change::Config::default(),
            alerts: AlertConfig::default(),
            clock: ClockConfig::default(),
            validator: Validator::default(),
            risk: crate::risk::Config::default(),
            timer_read_chunk: TIMER_READ_CHUNK,
        }
    }
}

impl EngineConfig {
    /// The config of one of `engines` engines sharing this member cache
    /// budget: an equal part of it each (at least one member), so the
    /// member caches of a process take `engine.member_cache_mb` whatever
    /// the thread count.
    pub fn cache_share(&self, engines: usize) -> EngineConfig {
        EngineConfig {
            member_cache_bytes: (self.member_cache_bytes / engines.max(1)).max(1),
            ..self.clone()
        }
    }
}

/// Everything the engine needs to know, built from the config file.
#[derive(Debug, Clone)]
pub struct EngineConfig {
    /// Delete a member this long after their last activity (member events,
    /// not `email_send`) once no detector timer is pending; `None` keeps
    /// members forever.
    pub evict_after_ms: Option<i64>,
    /// Bytes of decoded member state this engine keeps in memory between
    /// commits. From the config it is `engine.member_cache_mb`, the budget
    /// of all engine threads together: engines sharing it take
    /// [`EngineConfig::cache_share`].
    pub member_cache_bytes: usize,
    /// How member records are written (`state.member_format`).
    pub member_format: MemberFormat,
    pub detect: DetectConfig,
    pub lifecycle: stage_change::Config,
    pub alerts: AlertConfig,
    pub clock: ClockConfig,
    pub validator: Validator,
    pub risk: crate::risk::Config,
    /// Stored timers read into memory at a time, as the clock comes to
    /// them ([`TIMER_READ_CHUNK`]; tests make it tiny).
    pub timer_read_chunk: usize,
}

/// Stored timers read into memory at a time: enough that reads are rare
/// (one range scan per 4,096 timers), few enough that memory stays flat.
pub const TIMER_READ_CHUNK: usize = 4096;

#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("stored state of member {member:?} in partition {partition} is unreadable: {reason}")]
    Corrupt {
        partition: u32,
        member: String,
        reason: String,
    },
}

/// What became of one input message.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    Accepted,
    /// The member already had this `event_id`: nothing changed.
    Duplicate,
    /// Invalid input: nothing changed; the caller dead-letters it.
    Rejected(Rejection),
    /// Not applied yet: the event moves its partition's clock past more
    /// timers than may fire before a commit (`time.max_timers_per_commit`).
    /// Some have fired; commit, then give the engine the same event again.
    Deferred,
}

#[derive(Debug, Default, Clone, Copy)]
pub struct EngineStats {
    pub events: u64,
    pub rejected: u64,
    pub duplicates: u64,
    pub alerts: u64,
    pub timers_fired: u64,
    pub commits: u64,
}

/// What a commit writes, reported to [`Engine::commit_with`]'s callback.
#[derive(Debug)]
pub enum Change<'a> {
    /// A member's state after the commit, exactly as stored.
    Member {
        partition: u32,
        member_id: &'a str,
        timer_due_ms: i64,
        state: &'a [u8],
    },
    /// A member evicted by `state.evict_after_days`: its state is deleted.
    MemberDeleted { partition: u32, member_id: &'a str },
    /// Every member change of `partition` in this commit has been reported
    /// (called for every assigned partition, changed or not).
    PartitionDone {
        partition: u32,
        max_ts: i64,
        clock_ms: i64,
    },
}

/// An alert raised since the last commit, with the partition it belongs to.
#[derive(Debug, Clone, PartialEq)]
pub struct RaisedAlert {
    pub partition: u32,
    pub alert: Alert,
}

#[derive(Default)]
struct Partition {
    /// Highest event time seen, or `NEVER`.
    max_ts: i64,
    max_ts_dirty: bool,
    /// The partition's stream clock: `max_ts` minus the allowed lateness, or
    /// later after an idle advance; `NEVER` before its first event.
    clock_ms: i64,
    clock_dirty: bool,
    /// The partition's timers in memory: the earliest stored ones and
    /// those of members changed since the last commit.
    timers: TimerQueue,
    /// Stored members with a timer (the timer index's keys), as of the
    /// last commit, and whether this commit changed the count.
    timers_stored: u64,
    timers_stored_dirty: bool,
}

/// Meta key name of a partition's stream clock.
pub const META_CLOCK: &str = "clock";
/// Meta key name of a partition's event-time high mark.
pub const META_MAX_TS: &str = "max_ts";

/// What a batch will touch, per partition, gathered from its parsed events
/// before the engine sees them ([`Engine::read_ahead_plan`]): the latest
/// event time (the members whose timers come due by then are read ahead)
/// and, unless nearly every member is found cached, the members named.
pub struct ReadAhead<'a> {
    ids_too: bool,
    parts: BTreeMap<u32, (Vec<&'a str>, i64)>,
}

impl<'a> ReadAhead<'a> {
    /// An event of `partition`, as parsing found it.
    pub fn add(&mut self, partition: u32, member_id: &'a str, ts_ms: i64) {
        let (ids, latest) = self
            .parts
            .entry(partition)
            .or_insert((Vec::new(), i64::MIN));
        *latest = (*latest).max(ts_ms);
        if self.ids_too {
            ids.push(member_id);
        }
    }
}

pub struct Engine<S: Store> {
    store: S,
    cfg: EngineConfig,
    metrics: Arc<Metrics>,
    parts: BTreeMap<u32, Partition>,
    /// Members as stored, kept decoded between commits.
    cache: MemberCache,
    /// How often recent member lookups missed the cache: read-ahead is
    /// skipped while nearly none do.
    misses: MissRate,
    /// Member keys a read-ahead found absent from the store since the last
    /// commit: their first event creates them without asking the store
    /// again. Only this engine writes its partitions' members, and it
    /// drops a key as it creates the member, so the answer holds until
    /// the commit (where the set is cleared) or a revoke.
    known_absent: hashbrown::HashSet<Vec<u8>>,
    raised: Vec<RaisedAlert>,
    /// Counts for the shared metrics, added to them at each commit.
    tally: EngineTally,
    /// Undecodable records found since the last commit: moved to the
    /// quarantine table (and their originals deleted) by the commit, and
    /// reported to the caller through [`Engine::take_quarantined`].
    quarantine: Vec<Quarantined>,
    /// How many of `quarantine` the caller has taken.
    quarantine_taken: usize,
    /// Changes to the timer index made as timers came due (the keys taken,
    /// the keys of members queued again), in order, written first by the
    /// next commit.
    index_changes: Batch,
    /// Timers fired since the last commit (bounded by
    /// `time.max_timers_per_commit`).
    fired_since_commit: usize,
    findings: Vec<(Signal, Finding)>,
    stats: EngineStats,
    /// The member a commit is writing, encoded: one buffer reused for all
    /// of them (the batch copies each in).
    encoded: codec::Writer,
    /// The members the last [`Engine::prefetch_ahead`] hinted, 1 to 3
    /// events on, with their hashes.
    hinted: Cell<[Hinted; 3]>,
    /// Where commits are written: at once or ([`Engine::write_behind`]) on
    /// a thread of their own; and the last one the store refused.
    commits: CommitWriter,
}

impl<S: Store + Clone + 'static> Engine<S> {
    /// From now on, hands each commit's store write to a thread of its own
    /// and goes on (see [`writer`]); [`Engine::flush`] waits for it.
    ///
    /// Nothing the engine decides changes, only when the write happens: a
    /// member the write in flight holds is not evicted from the cache
    /// until it has landed (the store would give the version before it),
    /// and the timer queue keeps the entries whose keys it holds aside
    /// until then (a read of the timer index does not find them yet). A
    /// refused write is reported by the next commit or flush, and written
    /// again before anything newer.
    pub fn write_behind(&mut self) {
        self.commits.write_behind(&self.store);
    }
}

impl<S: Store> Engine<S> {
    pub fn new(store: S, cfg: EngineConfig, metrics: Arc<Metrics>) -> Result<Self, EngineError> {
        let cache = MemberCache::with_bytes(cfg.member_cache_bytes);
        Ok(Engine {
            store,
            cfg,
            metrics,
            parts: BTreeMap::new(),
            cache,
            misses: MissRate::default(),
            known_absent: hashbrown::HashSet::new(),
            raised: Vec::new(),
            tally: EngineTally::default(),
            quarantine: Vec::new(),
            quarantine_taken: 0,
            index_changes: Batch::default(),
            hinted: Cell::default(),
            encoded: codec::Writer::default(),
            fired_since_commit: 0,
            findings: Vec::new(),
            stats: EngineStats::default(),
            commits: CommitWriter::default(),
        })
    }

    pub fn store(&self) -> &S {
        &self.store
    }

    pub fn config(&self) -> &EngineConfig {
        &self.cfg
    }

    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }

    pub fn stats(&self) -> EngineStats {
        self.stats
    }

    /// The stream clock of `partition` (event time, epoch ms), `None` before
    /// its first event or when it is not assigned.
    pub fn clock_ms(&self, partition: u32) -> Option<i64> {
        self.parts
            .get(&partition)
            .map(|p| p.clock_ms)
            .filter(|c| *c != NEVER)
    }

    /// Every assigned partition with its stream clock (`None` before its
    /// first event).
    pub fn clocks(&self) -> impl Iterator<Item = (u32, Option<i64>)> + '_ {
        self.parts
            .iter()
            .map(|(p, part)| (*p, (part.clock_ms != NEVER).then_some(part.clock_ms)))
    }

    pub fn assigned(&self) -> impl Iterator<Item = u32> + '_ {
        self.parts.keys().copied()
    }

    /// Starts processing `partition`, picking up its stored clock, high mark
    /// and timer count. Its timers are read from the store's timer index as
    /// its clock comes to them. Where the index is not complete (a restore,
    /// a bootstrap or an older build wrote the members) it is rebuilt first
    /// from the member records (see [`Engine::rebuild_timer_index`]).
    pub fn assign(&mut self, partition: u32) -> Result<(), EngineError> {
        if self.parts.contains_key(&partition) {
            return Ok(());
        }
        self.flush()?;
        let max_ts = read_i64(&self.store, &meta_key(partition, META_MAX_TS))?.unwrap_or(NEVER);
        let stored = read_i64(&self.store, &meta_key(partition, META_CLOCK))?.unwrap_or(NEVER);
        let marker = self
            .store
            .get(Table::Timers, &timers_marker_key(partition))?
            .and_then(|v| <[u8; 8]>::try_from(v.as_slice()).ok())
            .map(u64::from_le_bytes);
        let timers_stored = match marker {
            Some(n) => n,
            None => {
                let quarantined = self.quarantine.len();
                match self.rebuild_timer_index(partition) {
                    Ok(n) => n,
                    Err(e) => {
                        // The store refused part of it (a full disk): what
                        // the rebuild took in goes, so that `assign` can be
                        // called again and rebuild in full. Kept, its
                        // records would be quarantined twice and its
                        // members cached for a partition not assigned.
                        self.cache.forget_partition(partition);
                        self.quarantine.truncate(quarantined);
                        return Err(e);
                    }
                }
            }
        };
        self.parts.insert(
            partition,
            Partition {
                max_ts,
                clock_ms: stored.max(self.watermark(max_ts)),
                timers_stored,
                ..Partition::default()
            },
        );
        Ok(())
    }

    /// Rebuilds `partition`'s timer index from its member records: every
    /// timer key goes (a key that does not split is quarantined, as are
    /// leftovers of builds that kept a different timer table), every member
    /// record is read once and its key written at its due time, and, while
    /// the cache has room, its state kept decoded. A record that does not
    /// decode is moved to the quarantine (the member starts afresh if it
    /// comes back). The marker, written last, makes the index count: a
    /// rebuild cut short is done again. Returns the number of timers.
    fn rebuild_timer_index(&mut self, partition: u32) -> Result<u64, EngineError> {
        let (from, end) = (
            partition_prefix(partition).to_vec(),
            partition_end(partition),
        );
        let mut unsplit = Vec::new();
        scan_chunks(&self.store, Table::Timers, &from, &end, 10_000, |chunk| {
            let mut batch = Batch::default();
            for (key, _) in chunk {
                if split_timer_key(&key).is_none() {
                    unsplit.push(key.clone());
                }
                batch.delete(Table::Timers, key);
            }
            self.store.write(batch)
        })?;
        for key in unsplit {
            self.quarantine_timer_key(partition, &key);
        }
        let mut timers = 0u64;
        let mut cursor = from;
        loop {
            let chunk = self.store.scan(Table::Members, &cursor, &end, 4096)?;
            let Some((last, _)) = chunk.last() else { break };
            cursor = last.clone();
            cursor.push(0);
            let mut batch = Batch::default();
            for (key, value) in chunk {
                let member = split_member_key(&key).map(|(_, id)| id);
                match (member, MemberState::decode(&value)) {
                    (Some(id), Ok(m)) => {
                        if m.timer_due_ms != NEVER {
                            batch.put(
                                Table::Timers,
                                timer_key(partition, m.timer_due_ms, id),
                                Vec::new(),
                            );
                            timers += 1;
                        }
                        if self.cache.has_room() {
                            self.cache.checkin(partition, id, Cached::clean(m));
                        }
                    }
                    (id, result) => {
                        let reason = match result {
                            Err(e) => e.to_string(),
                            Ok(_) => "member id is not utf-8".into(),
                        };
                        self.quarantine_record(Quarantined::new(
                            QuarantineKind::Member,
                            partition,
                            &key,
                            &value,
                            reason,
                        ));
                        if let Some(id) = id {
                            // Gone (deleted, with a changelog tombstone, at
                            // the commit); back as a new member if they come.
                            self.cache.checkin(partition, id, Cached::gone());
                        }
                    }
                }
            }
            self.store.write(batch)?;
        }
        let mut batch = Batch::default();
        batch.put(
            Table::Timers,
            timers_marker_key(partition),
            timers.to_le_bytes(),
        );
        self.store.write(batch)?;
        Ok(timers)
    }

    /// Reads the next chunk of `partition`'s stored timers into its queue.
    fn read_timers(&mut self, partition: u32) -> Result<(), EngineError> {
        let Some(part) = self.parts.get_mut(&partition) else {
            return Ok(());
        };
        let from = match part.timers.read_after() {
            None => partition_prefix(partition).to_vec(),
            Some((due, member)) => {
                let mut k = timer_key(partition, due, member).into_vec();
                k.push(0);
                k
            }
        };
        let chunk = self.cfg.timer_read_chunk.max(1);
        let keys = self
            .store
            .scan(Table::Timers, &from, &timers_marker_key(partition), chunk)?;
        let mut complete = keys.len() < chunk;
        let mut read = Vec::with_capacity(keys.len());
        let mut damaged = Vec::new();
        let mut last_read = None;
        for (key, _) in &keys {
            let Some((_, due, member)) = split_timer_key(key) else {
                damaged.push(key.clone());
                continue;
            };
            last_read = Some((due, member));
            read.push((due, member.into()));
        }
        if last_read.is_none() {
            // Nothing to move the horizon past: read again after a commit.
            complete = true;
        }
        part.timers
            .add_read(read, last_read.map(|(d, m)| (d, m.into())), complete);
        // Only this engine writes the index, after a rebuild that set such
        // keys aside: this is damage, set aside and deleted too.
        for key in damaged {
            self.quarantine_timer_key(partition, &key);
            self.index_changes.delete(Table::Timers, key);
        }
        Ok(())
    }

    /// The clock a high mark of `max_ts` allows.
    fn watermark(&self, max_ts: i64) -> i64 {
        if max_ts == NEVER {
            NEVER
        } else {
            max_ts.saturating_sub(self.cfg.clock.allowed_lateness_ms)
        }
    }

    /// Stops processing `partition`. Call [`Engine::commit`] (and, with
    /// write-behind, [`Engine::flush`]) first: uncommitted changes of the
    /// partition are dropped here, and so are its cached members (its next
    /// owner may change them).
    pub fn revoke(&mut self, partition: u32) {
        debug_assert!(!self.commits.in_flight(), "revoke after flush");
        self.parts.remove(&partition);
        self.cache.forget_partition(partition);
        let prefix = partition_prefix(partition);
        self.index_changes.retain(|op| !op.key.starts_with(&prefix));
        self.known_absent.clear();
        ClockReleased(partition).emit(&self.metrics);
        self.raised.retain(|a| a.partition != partition);
        let taken = self.quarantine[..self.quarantine_taken]
            .iter()
            .filter(|q| q.partition != partition)
            .count();
        self.quarantine.retain(|q| q.partition != partition);
        self.quarantine_taken = taken;
    }

    /// Members changed since the last commit: the commit writes them, and
    /// until then they stay in memory beyond the cache's capacity.
    pub fn uncommitted_members(&self) -> usize {
        self.cache.changed()
    }

    /// Timers pending over every assigned partition, as of the last commit.
    pub fn timers_pending(&self) -> usize {
        self.parts.values().map(|p| p.timers_stored as usize).sum()
    }

    /// The member cache's fill.
    pub fn member_cache(&self) -> CacheStats {
        self.cache.stats()
    }

    /// Timer entries held in memory over every assigned partition (the
    /// rest are in the store).
    pub fn timers_in_memory(&self) -> usize {
        self.parts.values().map(|p| p.timers.len()).sum()
    }

    /// Processes one input message of `partition`.
    pub fn process(
        &mut self,
        partition: u32,
        payload: &[u8],
        wall_now_ms: i64,
    ) -> Result<Outcome, EngineError> {
        let parsed = self.cfg.validator.parse(payload, wall_now_ms);
        self.process_parsed(partition, parsed)
    }

    /// [`Engine::process`] of a message already parsed and validated (by
    /// [`Validator::parse`] with this engine's limits), so a reader thread
    /// can take the parse off the engine's. A `Deferred` event is given
    /// again the same way.
    pub fn process_parsed(
        &mut self,
        partition: u32,
        parsed: Result<Event<'_>, Rejection>,
    ) -> Result<Outcome, EngineError> {
        let e = match parsed {
            Ok(e) => e,
            Err(r) => {
                self.stats.rejected += 1;
                EventRejected {
                    reason: r.reason,
                    detail: &r.detail,
                    source: "input",
                }
                .emit(&self.metrics);
                return Ok(Outcome::Rejected(r));
            }
        };
        self.assign(partition)?;
        let id_hash = xxh3_64(e.event_id.as_bytes()) as u32;
        let member = &*e.member_id;
        let (cached_at, cm) = self.checkout(partition, member, e.ts_ms)?;
        let duplicate = cm.state.seen_event(id_hash);
        let slot = match cached_at {
            Some(i) => {
                self.cache.checkin_at(i, cm);
                i
            }
            // Looked up by the checkout, not found, nothing added since.
            None => self.cache.checkin_new(partition, member, cm),
        };
        if duplicate {
            self.stats.duplicates += 1;
            self.tally.duplicates += 1;
            return Ok(Outcome::Duplicate);
        }
        // Every timer the event's clock passes fires before the event is
        // applied (the member's own timer too, if due by then).
        if !self.observe(partition, e.ts_ms)? {
            return Ok(Outcome::Deferred);
        }
        self.stats.events += 1;
        self.tally.consumed[e.kind as usize] += 1;

        // The member's slot holds until the next commit, whatever the
        // timers that fired meanwhile did.
        let mut cm = self.cache.checkout_at(slot);
        if cm.evicted {
            // Its own timer evicted it, just now: back as a new member.
            self.renew(&mut cm, e.ts_ms);
        }
        if cm.state.timer_due_ms != NEVER && cm.state.timer_due_ms <= e.ts_ms {
            let due = cm.state.timer_due_ms;
            if self.on_timer(partition, member, &mut cm, due) == Fired::Evicted {
                // Gone past `state.evict_after_days` and back: the event
                // starts a new member, exactly as if the eviction had been
                // committed before it arrived.
                self.evict(&mut cm);
                self.renew(&mut cm, e.ts_ms);
            }
        }
        let m = &mut cm.state;
        let returning = if self.cfg.alerts.reactivation_events.contains(&e.kind) {
            m.open_alert.filter(|a| e.ts_ms >= a.detected_ms)
        } else {
            None
        };
        if returning.is_some() {
            m.open_alert = None;
        }
        let first_seen = m.first_seen_ms;
        m.apply(&e);
        cm.answers
            .applied(e.kind, e.ts_ms, m.first_seen_ms != first_seen);
        m.remember_event(id_hash);
        let now = m.last_event_ms;
        let (answers, timer) = (&mut cm.answers, &mut cm.timer);
        self.evaluate(
            partition,
            member,
            m,
            answers,
            now,
            returning.map(|a| (a, e.ts_ms)),
        );
        if self.reschedule(partition, member, m, answers, timer, now) == Fired::Evicted {
            // Only `email_send` since long before the eviction time (state
            // kept from before eviction was configured).
            self.evict(&mut cm);
        }
        cm.dirty = true;
        self.cache.checkin_at(slot, cm);
        // A late event can leave its member with a timer the clock has
        // already passed: it fires now, not whenever the next event comes.
        self.fire_until(partition, NEVER, usize::MAX)?;
        Ok(Outcome::Accepted)
    }

    /// Moves the clock of every assigned partition forward to `to_ms`
    /// (`replay --until`), firing every timer due by then. `false` when the
    /// per-commit bound stopped it first: commit, then call again.
    pub fn advance_clock_to(&mut self, to_ms: i64) -> Result<bool, EngineError> {
        let parts: Vec<u32> = self.parts.keys().copied().collect();
        for p in parts {
            if !self.advance_partition_clock(p, to_ms)? {
                return Ok(false);
            }
        }
        Ok(true)
    }

    /// Moves the clock of `partition` forward to `to_ms` (wall-clock advance
    /// of an idle, caught-up partition), firing every timer due by then.
    /// A clock never moves back; an unassigned partition is left alone.
    /// `false` when `time.max_timers_per_commit` timers have fired since the
    /// last commit and more are due: commit, then call again.
    pub fn advance_partition_clock(
        &mut self,
        partition: u32,
        to_ms: i64,
    ) -> Result<bool, EngineError> {
        let limit = self.cfg.clock.max_timers_per_commit;
        self.fire_until(partition, to_ms, limit)
    }

    /// Alerts raised since the last call, in the order they were raised.
    pub fn take_alerts(&mut self) -> Vec<RaisedAlert> {
        std::mem::take(&mut self.raised)
    }

    /// Writes every change since the last commit, plus `extra`, in one atomic
    /// store batch. Take the alerts first: the caller decides whether they go
    /// out before the commit (replay) or into `extra` as an outbox (pipeline).
    ///
    /// Written behind ([`Engine::write_behind`]), a commit first waits for
    /// the write in flight; one the store refused is counted and written
    /// again at once, with this commit after it in the same atomic write,
    /// and only a refusal of that is this commit's error.
    pub fn commit(&mut self, extra: Batch) -> Result<(), EngineError> {
        self.commit_with(extra, |_, _| {})
    }

    /// [`Engine::commit`], reporting every member state it writes and the
    /// end of each partition's changes to `on_change`, which may add its own
    /// writes (the pipeline's changelog records) to the same atomic batch.
    pub fn commit_with(
        &mut self,
        mut extra: Batch,
        mut on_change: impl FnMut(Change<'_>, &mut Batch),
    ) -> Result<(), EngineError> {
        let started = std::time::Instant::now();
        // One write in flight at a time, so that they land in order.
        retried(self.land(), &self.metrics)?;
        let mut batch = self.commits.next_batch();
        let members = self.stage_commit(&mut batch, &mut on_change);
        batch.append(&mut extra);
        let in_flight = self.commits.write(&self.store, batch)?;
        self.committed_as(in_flight);
        StateCommitted {
            members,
            seconds: started.elapsed().as_secs_f64(),
            clocks: &self.parts_clocks(),
            wall_ms: chrono::Utc::now().timestamp_millis(),
        }
        .emit(&self.metrics);
        Ok(())
    }

    /// The first half of a commit, for a caller that writes the batch
    /// itself (an [`EngineGroup`] writes all its engines' changes in one
    /// atomic batch): adds every change since the last commit to `batch`,
    /// reporting each to `on_change` as [`Engine::commit_with`] does, and
    /// returns how many members it wrote. The cached states stay the
    /// engine's view of its members whether or not the write then goes
    /// through; call [`Engine::committed`] once it has.
    pub fn stage_commit(
        &mut self,
        batch: &mut Batch,
        on_change: &mut dyn FnMut(Change<'_>, &mut Batch),
    ) -> usize {
        self.tally.emit(&self.metrics);
        // First, so that a member who starts afresh after a quarantine is
        // written after (over) the deletion of the undecodable original.
        for q in self.quarantine.drain(..) {
            q.write_to(batch);
            if q.kind == QuarantineKind::Member {
                batch.delete(Table::Members, q.key);
            }
        }
        self.quarantine_taken = 0;
        // The index changes made as timers came due go first: a key the
        // members' writes below put again is put after it was taken.
        batch.append(&mut self.index_changes);
        let mut members = 0;
        // Changed members come grouped by partition, in partition order: each
        // partition's members, then the partition itself, in order.
        let mut parts = self.parts.iter_mut().peekable();
        let mut current: Option<(u32, &mut Partition)> = None;
        self.cache.commit(|w| {
            members += 1;
            let p = w.partition();
            if current.as_ref().map(|(cp, _)| *cp) != Some(p) {
                if let Some((cp, part)) = current.take() {
                    finish_partition(cp, part, batch, on_change);
                }
                while let Some((&q, part)) = parts.next_if(|(q, _)| **q < p) {
                    finish_partition(q, part, batch, on_change);
                }
                current = parts.next_if(|(q, _)| **q == p).map(|(q, part)| (*q, part));
            }
            let part = current.as_mut().map(|(_, part)| &mut **part);
            match w {
                Written::Member {
                    partition,
                    member_id,
                    state,
                    timer,
                } => {
                    let due = state.timer_due_ms;
                    if let Some(part) = part {
                        part.stage_timer(batch, partition, member_id, timer, due);
                    }
                    let encoded = &mut self.encoded;
                    encoded.buf.clear();
                    state.encode(self.cfg.member_format, encoded);
                    on_change(
                        Change::Member {
                            partition,
                            member_id,
                            timer_due_ms: due,
                            state: &encoded.buf,
                        },
                        batch,
                    );
                    batch.put(
                        Table::Members,
                        member_key(partition, member_id),
                        &encoded.buf,
                    );
                }
                Written::Deleted {
                    partition,
                    member_id,
                    timer,
                } => {
                    // Its keys go as they come due (the member is not found).
                    if let Some(part) = part {
                        part.count_stored_timer(timer.stored_due_ms, NEVER);
                    }
                    on_change(
                        Change::MemberDeleted {
                            partition,
                            member_id,
                        },
                        batch,
                    );
                    batch.delete(Table::Members, member_key(partition, member_id));
                }
            }
        });
        if let Some((cp, part)) = current.take() {
            finish_partition(cp, part, batch, on_change);
        }
        for (&q, part) in parts {
            finish_partition(q, part, batch, on_change);
        }
        self.known_absent.clear();
        // Whatever the store says, the cached states are the engine's view
        // of its members (a refused batch is written again, before
        // anything newer, by whoever holds it); they stay in the cache
        // until the write has landed.
        members
    }

    /// The second half of a commit: the staged batch is in the store, or
    /// (write-behind) on its way there.
    pub fn committed(&mut self) {
        self.committed_as(self.commits.in_flight());
    }

    /// [`Engine::committed`] for a commit whose write is still `in_flight`
    /// (on a writer thread, the engine's or its [`EngineGroup`]'s) or has
    /// landed.
    fn committed_as(&mut self, in_flight: bool) {
        self.stats.commits += 1;
        self.fired_since_commit = 0;
        // The timers beyond each horizon are in the store now, or in the
        // write in flight (kept aside until it lands).
        for part in self.parts.values_mut() {
            if in_flight {
                part.timers.committed_behind();
            } else {
                part.timers.committed();
            }
        }
        if !in_flight {
            self.cache.landed();
        }
        self.cache.trim();
    }

    /// Waits for the commit's write in flight (write-behind); a refused
    /// one is kept, to be written again before anything newer.
    fn land(&mut self) -> Result<(), EngineError> {
        let Some(result) = self.commits.wait() else {
            return Ok(());
        };
        self.write_settled(result.is_ok());
        Ok(result?)
    }

    /// How the write in flight went. Landed, the members and timer entries
    /// it carries may leave memory; refused, the timer entries it would
    /// have stored are the queue's again (its members stay flagged until a
    /// write carrying them lands).
    fn write_settled(&mut self, landed: bool) {
        if landed {
            self.cache.landed();
        }
        for part in self.parts.values_mut() {
            if landed {
                part.timers.landed();
            } else {
                part.timers.refused();
            }
        }
    }

    /// Makes every commit so far durable: with write-behind, waits for the
    /// write in flight and writes again one the store refused (the engine
    /// read the store as if it had them). Without, there is nothing to do:
    /// a refused commit is the caller's to retry.
    pub fn flush(&mut self) -> Result<(), EngineError> {
        if !self.commits.is_behind() {
            return Ok(());
        }
        retried(self.land(), &self.metrics)?;
        if self.commits.write_unwritten(&self.store)? {
            self.write_settled(true);
        }
        Ok(())
    }

    /// The member's state as the engine sees it now (committed or not).
    pub fn member(
        &self,
        partition: u32,
        member_id: &str,
    ) -> Result<Option<MemberState>, EngineError> {
        if let Some(m) = self.cache.peek(partition, member_id) {
            return Ok(m.map(Cow::into_owned));
        }
        self.load(partition, member_id)
    }

    /// Hints for the members of the events ahead of the one about to be
    /// processed (`ahead(d)`: the partition and member of the event `d`
    /// places further on, if any): the processor fetches what their
    /// lookups will read while this event is processed, in steps
    /// ([`cache::Step`]), so that each event finds its member's index
    /// bucket, slot and state in the CPU cache instead of waiting for
    /// memory three times in a row. Changes nothing the engine decides.
    ///
    /// A member's hash is computed once, three events ahead, and found
    /// again at the next two steps by the address of the id the caller
    /// gives (the same event gives the same string): building its key and
    /// hashing it at every step was a third of the hints' cost.
    pub fn prefetch_ahead<'a>(&self, ahead: impl Fn(usize) -> Option<(u32, &'a str)>) {
        use cache::Step;
        let last = self.hinted.get();
        let mut now = [Hinted::default(); 3];
        for (d, step) in [(3, Step::Bucket), (2, Step::Slot), (1, Step::State)] {
            let Some((p, id)) = ahead(d) else {
                continue;
            };
            // What the last call hinted `d + 1` on is `d` on now.
            let hash = match last.get(d) {
                Some(h) if h.names(p, id) => h.hash,
                _ => self.cache.hash_of(p, id),
            };
            now[d - 1] = Hinted::of(p, id, hash);
            self.cache.prefetch(step, hash);
        }
        self.hinted.set(now);
    }

    /// What a batch is about to touch, to be filled in with its events and
    /// read with [`Engine::read_ahead`] before the engine processes them.
    pub fn read_ahead_plan<'a>(&self) -> ReadAhead<'a> {
        ReadAhead {
            ids_too: self.reads_ahead(),
            parts: BTreeMap::new(),
        }
    }

    /// Reads what `plan` says a batch will touch, one store read per
    /// partition (see [`Engine::prefetch`]).
    pub fn read_ahead(&mut self, plan: ReadAhead<'_>) -> Result<(), EngineError> {
        for (partition, (ids, latest_ts_ms)) in plan.parts {
            self.prefetch(partition, &ids, Some(latest_ts_ms))?;
        }
        Ok(())
    }

    /// Reads the members of `partition` that a batch will need and that are
    /// neither changed since the last commit nor cached, in one batched
    /// store read, into the cache: the members `member_ids` names, and those
    /// whose timers come due by `latest_ts_ms` (the batch's latest event
    /// time; the clock follows it at most that far before a commit), as
    /// many as may fire before the next commit. The events and timers of
    /// the batch then find them in memory, and a member the store does not
    /// have is created without a second read.
    /// Only a hint: a member it cannot decode is left to the event that
    /// needs it (which quarantines it).
    fn prefetch(
        &mut self,
        partition: u32,
        member_ids: &[&str],
        latest_ts_ms: Option<i64>,
    ) -> Result<(), EngineError> {
        let Some(part) = self.parts.get(&partition) else {
            return Ok(());
        };
        let mut keys: Vec<Vec<u8>> = Vec::new();
        if let Some(ts) = latest_ts_ms {
            // The entries the clock will reach: at most the commit's limit
            // fire, but early entries (of members who moved their timer on
            // since) do not count towards it, and each needs its member to
            // find that out. Most due entries are of cached members, which
            // are skipped. Looked at: up to four times the limit. (Reading
            // stored entries only until the limit was due left the early
            // ones beyond it to single reads as they came due: 3,000 a
            // batch in the Zipf bench, a tenth of its time.)
            let until = self.watermark(ts.max(part.max_ts));
            let room = self
                .cfg
                .clock
                .max_timers_per_commit
                .saturating_sub(self.fired_since_commit);
            let look = room.saturating_mul(4);
            // Stored timers that far are read now, as they would be when
            // their time comes.
            let mut due = self.parts[&partition].timers.due_by(until).count();
            while due < look && self.parts[&partition].timers.wants_read(until) {
                self.read_timers(partition)?;
                due = self.parts[&partition].timers.due_by(until).count();
            }
            let part = &self.parts[&partition];
            let cache = &self.cache;
            keys.extend(
                part.timers
                    .due_by(until)
                    .take(look)
                    .filter(|(_, id)| !cache.contains(partition, id))
                    .map(|(_, id)| member_key(partition, id).into_vec()),
            );
        }
        let for_timers = keys.len();
        keys.extend(
            self.cache
                .absent(partition, member_ids)
                .into_iter()
                .map(|id| member_key(partition, id).into_vec()),
        );
        let mut for_events = keys.split_off(for_timers);
        for_events.sort_unstable();
        for_events.dedup();
        self.misses.read_ahead(for_events.len());
        // Two sorted runs: the stable sort finds them and merges them in
        // one pass rather than sorting the events' keys a second time.
        keys.sort_unstable();
        keys.append(&mut for_events);
        keys.sort();
        keys.dedup();
        keys.retain(|k| !self.known_absent.contains(k));
        if keys.is_empty() {
            return Ok(());
        }
        let values = self.store.multi_get(Table::Members, &keys)?;
        for (key, value) in keys.into_iter().zip(values) {
            match value {
                None => {
                    self.known_absent.insert(key);
                }
                Some(v) => {
                    if let Ok(m) = MemberState::decode(&v) {
                        // Read because it had no entry; the keys are
                        // distinct, so it still has none.
                        let (_, id) = split_member_key(&key).expect("built as a member key");
                        self.cache.checkin_new(partition, id, Cached::clean(m));
                    }
                }
            }
        }
        Ok(())
    }

    /// Whether a read-ahead includes the events' members: not while nearly
    /// every lookup finds its member cached ([`MissRate::reads_ahead`]), so
    /// a [`ReadAhead`] does not even collect them. (At 1 miss in 32,
    /// Zipf-skewed streams kept switching it off and paid 8% of the engine
    /// thread in single reads.)
    fn reads_ahead(&self) -> bool {
        self.misses.reads_ahead()
    }

    fn load(&self, partition: u32, member_id: &str) -> Result<Option<MemberState>, EngineError> {
        match self
            .store
            .get(Table::Members, &member_key(partition, member_id))?
        {
            None => Ok(None),
            Some(bytes) => {
                MemberState::decode(&bytes)
                    .map(Some)
                    .map_err(|e| EngineError::Corrupt {
                        partition,
                        member: member_id.to_string(),
                        reason: e.to_string(),
                    })
            }
        }
    }

    /// Takes a member to work on (from the cache, with its slot, else the
    /// store, else new); give it back to the cache.
    fn checkout(
        &mut self,
        partition: u32,
        member_id: &str,
        ts_ms: i64,
    ) -> Result<(Option<u32>, Cached), EngineError> {
        let found = self.cache.checkout_slot(partition, member_id);
        self.misses.looked_up(found.is_some());
        if let Some((slot, mut cm)) = found {
            if cm.evicted {
                // Deleted in this commit and back already.
                self.renew(&mut cm, ts_ms);
            }
            return Ok((Some(slot), cm));
        }
        let cm = match self.load_or_quarantine(partition, member_id)? {
            Loaded::Found(m) => Cached::clean(m),
            Loaded::Absent => {
                self.tally.members_created += 1;
                Cached::clean(MemberState::new(ts_ms))
            }
            // Starts afresh, written over the undecodable original.
            Loaded::Quarantined => {
                self.tally.members_created += 1;
                let mut cm = Cached::clean(MemberState::new(ts_ms));
                cm.dirty = true;
                cm
            }
        };
        Ok((None, cm))
    }

    /// Like [`Self::checkout`], but `None` for a member without state.
    fn checkout_existing(
        &mut self,
        partition: u32,
        member_id: &str,
    ) -> Result<Option<Cached>, EngineError> {
        if let Some(cm) = self.cache.checkout(partition, member_id) {
            if cm.evicted {
                self.cache.checkin(partition, member_id, cm);
                return Ok(None);
            }
            return Ok(Some(cm));
        }
        match self.load_or_quarantine(partition, member_id)? {
            Loaded::Found(state) => Ok(Some(Cached::clean(state))),
            Loaded::Absent => Ok(None),
            Loaded::Quarantined => {
                // Gone: deleted (with a changelog tombstone) at the commit,
                // and not loaded (and quarantined) again before it.
                self.cache.checkin(partition, member_id, Cached::gone());
                Ok(None)
            }
        }
    }

    /// A member's stored state; a value that does not decode is moved to
    /// the quarantine and the member starts afresh, rather than stopping
    /// the partition (and stopping it again after every restart).
    fn load_or_quarantine(
        &mut self,
        partition: u32,
        member_id: &str,
    ) -> Result<Loaded, EngineError> {
        let key = member_key(partition, member_id);
        if !self.known_absent.is_empty() && self.known_absent.remove(key.as_slice()) {
            return Ok(Loaded::Absent);
        }
        let Some(bytes) = self.store.get(Table::Members, &key)? else {
            return Ok(Loaded::Absent);
        };
        match MemberState::decode(&bytes) {
            Ok(m) => Ok(Loaded::Found(m)),
            Err(e) => {
                self.quarantine_record(Quarantined::new(
                    QuarantineKind::Member,
                    partition,
                    &key,
                    &bytes,
                    e.to_string(),
                ));
                Ok(Loaded::Quarantined)
            }
        }
    }

    /// Sets aside a key of the timer index that does not split.
    fn quarantine_timer_key(&mut self, partition: u32, key: &[u8]) {
        self.quarantine_record(Quarantined::new(
            QuarantineKind::Timer,
            partition,
            key,
            &[],
            "timer key does not split into due time and member id".into(),
        ));
    }

    fn quarantine_record(&mut self, q: Quarantined) {
        StateQuarantined(&q).emit(&self.metrics);
        self.quarantine.push(q);
    }

    /// Whether a commit the store refused is waiting to be written again.
    pub fn has_unwritten(&self) -> bool {
        self.commits.has_unwritten()
    }

    /// Records moved to the quarantine since the last call, for the caller
    /// to dead-letter. They are written by the next commit.
    pub fn take_quarantined(&mut self) -> Vec<Quarantined> {
        let new = self.quarantine[self.quarantine_taken..].to_vec();
        self.quarantine_taken = self.quarantine.len();
        new
    }

    /// Marks a member for deletion at the next commit.
    fn evict(&mut self, cm: &mut Cached) {
        self.tally.members_evicted += 1;
        cm.evicted = true;
        cm.dirty = true;
    }

    /// An evicted member is back: they start as a new member.
    fn renew(&mut self, cm: &mut Cached, ts_ms: i64) {
        self.tally.members_created += 1;
        *cm.state = MemberState::new(ts_ms);
        *cm.answers = Answers::default();
        cm.dirty = true;
        cm.evicted = false;
    }

    fn checkin(&mut self, partition: u32, member_id: &str, cm: Cached) {
        self.cache.checkin(partition, member_id, cm);
    }

    /// Assigned partitions whose clock has started, with their clocks.
    pub(crate) fn parts_clocks(&self) -> Vec<(u32, i64)> {
        self.parts
            .iter()
            .filter(|(_, p)| p.clock_ms != NEVER)
            .map(|(k, p)| (*k, p.clock_ms))
            .collect()
    }

    /// Takes an event time of `partition` into its high mark and clock,
    /// firing the timers the clock passes first. `false` (nothing taken)
    /// when the per-commit bound stopped the firing: commit and retry.
    fn observe(&mut self, partition: u32, ts_ms: i64) -> Result<bool, EngineError> {
        let lateness = self.cfg.clock.allowed_lateness_ms;
        let part = self
            .parts
            .get(&partition)
            .expect("partition assigned before use");
        if ts_ms <= part.max_ts {
            return Ok(true);
        }
        let limit = self.cfg.clock.max_timers_per_commit;
        if !self.fire_until(partition, ts_ms.saturating_sub(lateness), limit)? {
            return Ok(false);
        }
        let part = self.parts.get_mut(&partition).expect("assigned");
        part.max_ts = ts_ms;
        part.max_ts_dirty = true;
        Ok(true)
    }

    /// Moves the clock of `p` to `target` (never back), firing every timer
    /// due by then in due order (ties in member id order), but no more than
    /// `limit` since the last commit. When the limit stops it, the clock
    /// stays at the last timer fired and `false` says more are due.
    fn fire_until(&mut self, p: u32, target: i64, limit: usize) -> Result<bool, EngineError> {
        let Some(part) = self.parts.get(&p) else {
            return Ok(true);
        };
        let target = target.max(part.clock_ms);
        if target == NEVER {
            return Ok(true);
        }
        let mut fired = 0;
        let mut stopped = false;
        loop {
            let part = self.parts.get_mut(&p).expect("assigned");
            match part.timers.next(target) {
                Next::Idle => break,
                Next::Read => {
                    self.read_timers(p)?;
                    continue;
                }
                Next::Due => {}
            }
            if self.fired_since_commit >= limit {
                stopped = true;
                break;
            }
            let (due, member) = part.timers.pop_due(target).expect("due");
            // The entry is taken, and a stored key there with it (the
            // member, if any, is keyed again at its own due time).
            self.index_changes
                .delete(Table::Timers, timer_key(p, due, &member));
            let Some(mut cm) = self.checkout_existing(p, &member)? else {
                continue;
            };
            cm.timer.taken(due);
            if cm.state.timer_due_ms == due {
                // The clock reaches each timer as it fires.
                self.set_clock(p, due);
                if self.on_timer(p, &member, &mut cm, due) == Fired::Evicted {
                    self.evict(&mut cm);
                }
                cm.dirty = true;
                fired += 1;
                self.fired_since_commit += 1;
            } else {
                // Early: the member has moved its timer on since (see
                // `reschedule`); it waits for its own due time, keyed there
                // (so a commit may let the entry go) unless it has a key
                // at or before it.
                let own = cm.state.timer_due_ms;
                if own != NEVER {
                    if !cm.timer.covers(own) {
                        let part = self.parts.get_mut(&p).expect("assigned");
                        part.timers.reschedule(&member, NEVER, own);
                        cm.timer.queued_ms = own;
                    }
                    if cm.timer.needs_key(own) {
                        self.index_changes.put(
                            Table::Timers,
                            timer_key(p, own, &member),
                            Vec::new(),
                        );
                        cm.timer.key_ms = own;
                    }
                }
            }
            self.checkin(p, &member, cm);
        }
        if fired > 0 {
            self.stats.timers_fired += fired;
            self.tally.timers_fired += fired;
        }
        if stopped {
            return Ok(false);
        }
        self.set_clock(p, target);
        Ok(true)
    }

    fn set_clock(&mut self, p: u32, to: i64) {
        if let Some(part) = self.parts.get_mut(&p) {
            if to > part.clock_ms {
                part.clock_ms = to;
                part.clock_dirty = true;
            }
        }
    }

    fn on_timer(&mut self, partition: u32, member_id: &str, cm: &mut Cached, due: i64) -> Fired {
        let (m, answers, timer) = (&mut *cm.state, &mut cm.answers, &mut cm.timer);
        m.timer_due_ms = NEVER;
        self.evaluate(partition, member_id, m, answers, due, None);
        self.reschedule(partition, member_id, m, answers, timer, due)
    }

    /// Runs every detector at `now`, opens and closes episodes, moves the
    /// lifecycle stage, and raises the alerts that follow.
    fn evaluate(
        &mut self,
        partition: u32,
        member_id: &str,
        m: &mut MemberState,
        answers: &mut Answers,
        now: i64,
        returning: Option<(OpenAlert, i64)>,
    ) {
        judge_with(m, now, &self.cfg, answers, &mut self.findings);
        if self.findings.is_empty() && returning.is_none() {
            return;
        }

        let subject = Subject::of(
            member_id,
            m,
            now,
            &self.cfg.alerts,
            &self.cfg.detect.purchase_gap,
            &self.cfg.risk,
        );
        if let Some((answered, at)) = returning {
            let (alert, back) = subject.reactivation(answered, at, &self.cfg.alerts);
            MemberReactivated {
                signal: back.answered,
                holdout: subject.holdout,
                days_to_return: back.days_to_return,
                within_horizon: back.within_horizon,
            }
            .emit(&self.metrics);
            self.raise(partition, alert);
        }
        let findings = std::mem::take(&mut self.findings);
        for (signal, f) in &findings {
            let seq = m.episodes[*signal as usize].seq;
            if m.open_alert.is_none() {
                m.open_alert = Some(OpenAlert {
                    signal: *signal,
                    seq,
                    detected_ms: f.since_ms,
                });
                MemberAlerted {
                    signal: *signal,
                    holdout: subject.holdout,
                }
                .emit(&self.metrics);
            }
            let alert = subject.detection(*signal, seq, f, &self.cfg.alerts);
            self.raise(partition, alert);
        }
        self.findings = findings;
        self.findings.clear();
    }

    fn raise(&mut self, partition: u32, alert: Alert) {
        self.stats.alerts += 1;
        self.raised.push(RaisedAlert { partition, alert });
    }

    /// Sets the member's due time to the earliest moment after `now` that
    /// one of its absence conditions could become true or, once none can,
    /// to its eviction time, and keeps its one timer entry (at `queued`) at
    /// or before it. Says `Evicted` when the eviction time has come.
    fn reschedule(
        &mut self,
        partition: u32,
        member_id: &str,
        m: &mut MemberState,
        answers: &mut Answers,
        timer: &mut TimerMarks,
        now: i64,
    ) -> Fired {
        let mut due = checks(m, now, &self.cfg, answers)
            .map(|(_, t)| t)
            .min()
            .unwrap_or(i64::MAX);
        // Eviction waits for every detector timer, so it never takes an
        // alert (the churned stage change included) away.
        let mut fired = Fired::Evaluated;
        if let (i64::MAX, Some(ttl)) = (due, self.cfg.evict_after_ms) {
            let at = m.last_active_ms.max(m.first_seen_ms).saturating_add(ttl);
            if at <= now {
                fired = Fired::Evicted;
            } else {
                due = at;
            }
        }
        let due = if due == i64::MAX { NEVER } else { due };
        m.timer_due_ms = due;
        // A due time moved later keeps the earlier entry or key it has:
        // most events push the member's due time on (activity moves the
        // lifecycle deadline), and the entry, once due, finds the later
        // time and is queued and keyed there (`fire_until`), so most events
        // cost neither the queue nor the index anything.
        if due != NEVER && timer.covers(due) {
            return fired;
        }
        let Some(part) = self.parts.get_mut(&partition) else {
            return fired;
        };
        if timer.queued_ms != NEVER {
            // Out of memory, and out of the store if it was a key read in.
            part.timers.reschedule(member_id, timer.queued_ms, NEVER);
            let key = timer_key(partition, timer.queued_ms, member_id);
            self.index_changes.delete(Table::Timers, key);
            timer.taken(timer.queued_ms);
        }
        if due != NEVER {
            part.timers.reschedule(member_id, NEVER, due);
            timer.queued_ms = due;
        }
        fired
    }
}

/// Runs every detector on `m` at `now`, opens and closes its episodes and
/// moves its lifecycle stage, exactly as an event or timer at `now` does;
/// the findings of newly opened episodes go to `findings` (cleared first).
/// Public so the member view (`members`) judges a member as the engine would.
pub fn judge(
    m: &mut MemberState,
    now: i64,
    cfg: &EngineConfig,
    findings: &mut Vec<(Signal, Finding)>,
) {
    judge_with(m, now, cfg, &mut Answers::default(), findings)
}

/// [`judge`], reusing the detectors' remembered answers where they would
/// say the same again (see [`answers`]).
fn judge_with(
    m: &mut MemberState,
    now: i64,
    cfg: &EngineConfig,
    answers: &mut Answers,
    findings: &mut Vec<(Signal, Finding)>,
) {
    let ctx = Context {
        detect: &cfg.detect,
        risk: &cfg.risk,
    };
    findings.clear();
    // Detectors read neither episodes nor each other, so judging each in
    // turn is judging all at once.
    for (i, d) in DETECTORS.iter().enumerate() {
        let signal = d.signal();
        let open = m.episodes[signal as usize].open;
        let Asked::Verdict(verdict) = answers.verdict(i, m, now, &ctx, open) else {
            continue;
        };
        let ep = &mut m.episodes[signal as usize];
        match verdict {
            Verdict::Fire(f) if !ep.open => {
                ep.open = true;
                ep.seq = ep.seq.wrapping_add(1);
                ep.opened_ms = f.since_ms;
                findings.push((signal, f));
            }
            Verdict::Recover if ep.open => ep.open = false,
            _ => {}
        }
    }
    let cooling = m.episodes[..Signal::StageChange as usize]
        .iter()
        .any(|e| e.open);
    let life = &cfg.lifecycle;
    let (old, new) = (m.stage, stage_change::stage_at(m, now, cooling, life));
    if new != old {
        let finding = stage_change::finding(m, old, new, now, life);
        let ep = &mut m.episodes[Signal::StageChange as usize];
        if let Some(f) = finding {
            ep.open = true;
            ep.seq = ep.seq.wrapping_add(1);
            ep.opened_ms = f.since_ms;
            findings.push((Signal::StageChange, f));
        } else if new < Stage::Silent {
            ep.open = false;
        }
        m.stage = new;
    }
}

/// The member's `risk_score` at `now` and the purchase model's
/// `(p_alive, expected_purchases_90d)`, as alerts carry them.
pub fn risk_of(m: &MemberState, now: i64, cfg: &EngineConfig) -> (f64, Option<(f64, f64)>) {
    let model = crate::risk::assess(m, now, &cfg.risk);
    let risk = risk_score(m, now, &cfg.risk);
    (risk, model)
}

/// The absence checks a member's timer waits for, with the moment after
/// `now` each could become true (the timer is due at the earliest). Named
/// by the signal they check (`stage_change` for the lifecycle thresholds).
pub fn timer_checks<'a>(
    m: &'a MemberState,
    now: i64,
    cfg: &'a EngineConfig,
) -> impl Iterator<Item = (Signal, i64)> + 'a {
    checks(m, now, cfg, Answers::default())
}

/// [`timer_checks`], reusing the detectors' remembered due times where they
/// would say the same again.
fn checks<'a>(
    m: &'a MemberState,
    now: i64,
    cfg: &'a EngineConfig,
    mut answers: impl BorrowMut<Answers> + 'a,
) -> impl Iterator<Item = (Signal, i64)> + 'a {
    let ctx = Context {
        detect: &cfg.detect,
        risk: &cfg.risk,
    };
    // A detector whose episode is open has nothing left to wait for.
    let detectors = DETECTORS.into_iter().enumerate().filter_map(move |(i, d)| {
        let closed = !m.episodes[d.signal() as usize].open;
        closed
            .then(|| answers.borrow_mut().due_ms(i, m, now, &ctx))
            .flatten()
            .map(|t| (d.signal(), t))
    });
    let lifecycle = stage_change::due_ms(m, now, &cfg.lifecycle).map(|t| (Signal::StageChange, t));
    detectors.chain(lifecycle).filter(move |(_, t)| *t > now)
}

/// A landing of the write in flight, a refusal only counted: the caller
/// writes the refused batch again at once, and reports a refusal of that.
fn retried(landed: Result<(), EngineError>, metrics: &Metrics) -> Result<(), EngineError> {
    match landed {
        Err(EngineError::Store(error)) => {
            StateWriteRetried { error: &error }.emit(metrics);
            Ok(())
        }
        other => other,
    }
}

/// Ends a partition's part of a commit: its clock and high mark, if they
/// moved, and the report that every member change of it has been made.
fn finish_partition(
    p: u32,
    part: &mut Partition,
    batch: &mut Batch,
    on_change: &mut dyn FnMut(Change<'_>, &mut Batch),
) {
    if part.max_ts_dirty {
        batch.put(
            Table::Meta,
            meta_key(p, META_MAX_TS),
            part.max_ts.to_le_bytes(),
        );
        part.max_ts_dirty = false;
    }
    if part.clock_dirty {
        batch.put(
            Table::Meta,
            meta_key(p, META_CLOCK),
            part.clock_ms.to_le_bytes(),
        );
        part.clock_dirty = false;
    }
    if part.timers_stored_dirty {
        batch.put(
            Table::Timers,
            timers_marker_key(p),
            part.timers_stored.to_le_bytes(),
        );
        part.timers_stored_dirty = false;
    }
    on_change(
        Change::PartitionDone {
            partition: p,
            max_ts: part.max_ts,
            clock_ms: part.clock_ms,
        },
        batch,
    );
}

impl Partition {
    /// Stages what the index needs of a member whose record the commit
    /// writes with due time `due`: a key at or before it, unless one is
    /// known (most events move a due time later, and keep the key they
    /// had: it finds the later time when it comes due, see `fire_until`).
    /// Its entry in memory, if beyond the horizon, is let go at the commit
    /// (the key stands for it).
    fn stage_timer(
        &mut self,
        batch: &mut Batch,
        partition: u32,
        member_id: &str,
        timer: &mut TimerMarks,
        due: i64,
    ) {
        if timer.needs_key(due) {
            batch.put(
                Table::Timers,
                timer_key(partition, due, member_id),
                Vec::new(),
            );
            timer.key_ms = due;
        }
        if timer.queued_ms != NEVER && !self.timers.within(timer.queued_ms, member_id) {
            timer.queued_ms = NEVER;
        }
        self.count_stored_timer(std::mem::replace(&mut timer.stored_due_ms, due), due);
    }

    /// A stored record's due time goes from `from` to `to`.
    fn count_stored_timer(&mut self, from: i64, to: i64) {
        if (from == NEVER) != (to == NEVER) {
            self.timers_stored = if to == NEVER {
                self.timers_stored.saturating_sub(1)
            } else {
                self.timers_stored + 1
            };
            self.timers_stored_dirty = true;
        }
    }
}

/// A member hinted by [`Engine::prefetch_ahead`]: its partition, the
/// address and length of the id it was given as, and its hash.
#[derive(Debug, Clone, Copy, Default)]
struct Hinted {
    partition: u32,
    id: (usize, usize),
    hash: u64,
}

impl Hinted {
    fn of(partition: u32, id: &str, hash: u64) -> Self {
        Hinted {
            partition,
            id: (id.as_ptr() as usize, id.len()),
            hash,
        }
    }

    /// Whether `id` of `partition` is the id this was given as, given
    /// again (a hint only: an id at an address reused for another member
    /// of that length costs a wasted hint, never a wrong answer).
    fn names(&self, partition: u32, id: &str) -> bool {
        self.partition == partition && self.id == (id.as_ptr() as usize, id.len())
    }
}

/// A member's stored state, as found.
#[allow(clippy::large_enum_variant)] // moved once per load, never stored
enum Loaded {
    Found(MemberState),
    Absent,
    /// It did not decode and was moved to the quarantine.
    Quarantined,
}

/// What a member's timer did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fired {
    /// Detectors ran and the next timer is set.
    Evaluated,
    /// The member is past `state.evict_after_days`: delete it.
    Evicted,
}

fn read_i64<S: Store>(store: &S, key: &[u8]) -> Result<Option<i64>, StoreError> {
    Ok(store
        .get(Table::Meta, key)?
        .and_then(|v| <[u8; 8]>::try_from(v.as_slice()).ok())
        .map(i64::from_le_bytes))
}

/// The kinds of event that count as member activity for reactivation.
pub fn default_reactivation_events() -> Vec<EventKind> {
    vec![EventKind::Purchase]
}

/// The share of recent member lookups that missed the cache, counting the
/// members a read-ahead brought in (their lookups then hit, but without it
/// they would have missed; counting them as hits made the estimate
/// near zero after every read-ahead, so every other batch or so went
/// without one and read its misses one at a time: 180k single reads in the
/// 6M-event Zipf bench). Halved now and then, so it follows the stream.
#[derive(Debug, Default)]
struct MissRate {
    lookups: u32,
    misses: u32,
}

impl MissRate {
    const WINDOW: u32 = 1 << 16;

    fn looked_up(&mut self, hit: bool) {
        if self.lookups >= Self::WINDOW {
            self.lookups /= 2;
            self.misses /= 2;
        }
        self.lookups += 1;
        if !hit {
            self.misses += 1;
        }
    }

    /// A read-ahead read `members` that the batch's events would have
    /// missed.
    fn read_ahead(&mut self, members: usize) {
        self.misses = self.misses.saturating_add(members as u32);
    }

    /// Read ahead unless nearly every lookup hits (it would only look
    /// members up twice). "Nearly" is 1 miss in 128: a miss read alone
    /// costs ~20 µs at a million members, a cache lookup ahead ~0.15 µs, so
    /// read-ahead pays from well under 1% misses.
    fn reads_ahead(&self) -> bool {
        self.lookups < 1024 || self.misses.min(self.lookups) * 128 >= self.lookups
    }
}
