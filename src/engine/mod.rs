//! The engine: validated events in, member state, timers and alerts out.
//!
//! `replay` and the Kafka pipeline drive the same engine, batch by batch:
//! [`Engine::process`] for every message, then [`Engine::commit`] once per
//! batch, which writes every changed member, timer and the stream clock in
//! one atomic store batch together with whatever the caller adds (consumed
//! offsets, outbox entries).
//!
//! Time is event time (SPEC §3), kept **per partition**, as Kafka Streams
//! keeps stream time per task: a partition's clock is its highest event time
//! minus the allowed lateness, never moves back, and is moved by nothing but
//! that partition's own events (and, on an idle partition, by the wall clock
//! when the caller says so). Absence signals live in a timer index (one entry
//! per member, at the earliest moment one of its conditions could become
//! true). Timers fire in due order *interleaved with the events*: before an
//! event is applied, every timer its partition's new clock has passed fires;
//! a member's own pending timer also fires before that member's event when
//! the event is past it. So the alerts depend only on each partition's
//! sequence of events, never on batch boundaries, commits or restarts.

mod clock;
#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use xxhash_rust::xxh3::xxh3_64;

use crate::alert::score::risk_score;
use crate::alert::{self, Alert, AlertConfig};
use crate::detect::{
    checkin_lapse, open_rate_drop, purchase_gap, spend_decline, stage_change, visit_decline,
    DetectConfig, Evidence, Finding, Severity, Signal, Verdict,
};
use crate::event::{EventKind, Rejection, Validator, DAY_MS};
use crate::state::keys::{
    member_key, meta_key, partition_end, partition_prefix, split_timer_key, timer_bound, timer_key,
};
use crate::state::member::{OpenAlert, Stage, NEVER};
use crate::state::quarantine::{Kind as QuarantineKind, Quarantined};
use crate::state::{Batch, MemberState, Store, StoreError, Table};
use crate::telemetry::events::{
    ClockReleased, DuplicateAbsorbed, EventConsumed, EventRejected, MemberAlerted, MemberCreated,
    MemberEvicted, MemberReactivated, StateCommitted, StateQuarantined, TimersFired,
};
use crate::telemetry::Metrics;

pub use clock::ClockConfig;

/// Everything the engine needs to know, built from the config file.
#[derive(Debug, Clone, Default)]
pub struct EngineConfig {
    /// Delete a member this long after their last activity (member events,
    /// not `email_send`) once no detector timer is pending; `None` keeps
    /// members forever.
    pub evict_after_ms: Option<i64>,
    pub detect: DetectConfig,
    pub lifecycle: stage_change::Config,
    pub alerts: AlertConfig,
    pub clock: ClockConfig,
    pub validator: Validator,
    pub risk: crate::risk::Config,
}

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

struct Cached {
    state: MemberState,
    dirty: bool,
    /// Deleted at the next commit; to the engine the member no longer exists.
    evicted: bool,
}

impl Cached {
    /// A member as stored (or new), unchanged so far.
    fn clean(state: MemberState) -> Self {
        Cached {
            state,
            dirty: false,
            evicted: false,
        }
    }
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
    /// Lower bound of the earliest pending timer.
    next_due: i64,
    /// Members touched since the last commit.
    members: HashMap<Box<str>, Cached>,
}

/// Meta key name of a partition's stream clock.
pub const META_CLOCK: &str = "clock";
/// Meta key name of a partition's event-time high mark.
pub const META_MAX_TS: &str = "max_ts";

pub struct Engine<S: Store> {
    store: S,
    cfg: EngineConfig,
    metrics: Arc<Metrics>,
    parts: BTreeMap<u32, Partition>,
    /// Timer index changes since the last commit: `true` put, `false` delete.
    overlay: BTreeMap<Vec<u8>, bool>,
    /// The smallest timer key scheduled at or before the clock while a firing
    /// pass runs: the pass may already have moved past it.
    refire: Option<Vec<u8>>,
    /// The due time a firing pass runs up to (`NEVER` outside a pass): a
    /// timer scheduled up to it during the pass must be fired by the pass,
    /// even if its chunk of keys was already read.
    firing_until: i64,
    raised: Vec<RaisedAlert>,
    /// Undecodable records found since the last commit: moved to the
    /// quarantine table (and their originals deleted) by the commit, and
    /// reported to the caller through [`Engine::take_quarantined`].
    quarantine: Vec<Quarantined>,
    /// How many of `quarantine` the caller has taken.
    quarantine_taken: usize,
    /// A commit the store refused (disk full, read-only): written, before
    /// anything newer, by the next commit that gets through.
    unwritten: Option<Batch>,
    /// Timers fired since the last commit (bounded by
    /// `time.max_timers_per_commit`).
    fired_since_commit: usize,
    findings: Vec<(Signal, Finding)>,
    stats: EngineStats,
}

impl<S: Store> Engine<S> {
    pub fn new(store: S, cfg: EngineConfig, metrics: Arc<Metrics>) -> Result<Self, EngineError> {
        Ok(Engine {
            store,
            cfg,
            metrics,
            parts: BTreeMap::new(),
            overlay: BTreeMap::new(),
            refire: None,
            firing_until: NEVER,
            raised: Vec::new(),
            quarantine: Vec::new(),
            quarantine_taken: 0,
            unwritten: None,
            fired_since_commit: 0,
            findings: Vec::new(),
            stats: EngineStats::default(),
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
    /// and timers (as left by this instance, a restore or a bootstrap).
    pub fn assign(&mut self, partition: u32) -> Result<(), EngineError> {
        if self.parts.contains_key(&partition) {
            return Ok(());
        }
        let max_ts = read_i64(&self.store, &meta_key(partition, META_MAX_TS))?.unwrap_or(NEVER);
        let stored = read_i64(&self.store, &meta_key(partition, META_CLOCK))?.unwrap_or(NEVER);
        let mut part = Partition {
            max_ts,
            clock_ms: stored.max(self.watermark(max_ts)),
            ..Partition::default()
        };
        part.next_due = self.peek_next_due(partition, NEVER)?;
        self.parts.insert(partition, part);
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

    /// Stops processing `partition`. Call [`Engine::commit`] first: uncommitted
    /// changes of the partition are dropped here.
    pub fn revoke(&mut self, partition: u32) {
        self.parts.remove(&partition);
        ClockReleased(partition).emit(&self.metrics);
        let (from, to) = (
            partition_prefix(partition).to_vec(),
            partition_end(partition),
        );
        let keys: Vec<_> = self
            .overlay
            .range(from..to)
            .map(|(k, _)| k.clone())
            .collect();
        for k in keys {
            self.overlay.remove(&k);
        }
        self.raised.retain(|a| a.partition != partition);
        let taken = self.quarantine[..self.quarantine_taken]
            .iter()
            .filter(|q| q.partition != partition)
            .count();
        self.quarantine.retain(|q| q.partition != partition);
        self.quarantine_taken = taken;
    }

    /// Processes one input message of `partition`.
    pub fn process(
        &mut self,
        partition: u32,
        payload: &[u8],
        wall_now_ms: i64,
    ) -> Result<Outcome, EngineError> {
        let e = match self.cfg.validator.parse(payload, wall_now_ms) {
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
        let (key, cm) = self.checkout(partition, &e.member_id, e.ts_ms)?;
        let duplicate = cm.state.seen_event(id_hash);
        self.checkin(partition, key, cm);
        if duplicate {
            self.stats.duplicates += 1;
            DuplicateAbsorbed.emit(&self.metrics);
            return Ok(Outcome::Duplicate);
        }
        // Every timer the event's clock passes fires before the event is
        // applied (the member's own timer too, if due by then).
        if !self.observe(partition, e.ts_ms)? {
            return Ok(Outcome::Deferred);
        }
        self.stats.events += 1;
        EventConsumed { kind: e.kind }.emit(&self.metrics);

        let (key, mut cm) = self.checkout(partition, &e.member_id, e.ts_ms)?;
        if cm.state.timer_due_ms != NEVER && cm.state.timer_due_ms <= e.ts_ms {
            let due = cm.state.timer_due_ms;
            if self.on_timer(partition, &key, &mut cm.state, due) == Fired::Evicted {
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
        m.apply(&e);
        m.remember_event(id_hash);
        let now = m.last_event_ms;
        self.evaluate(partition, &key, m, now, returning.map(|a| (a, e.ts_ms)));
        if self.reschedule(partition, &key, m, now) == Fired::Evicted {
            // Only `email_send` since long before the eviction time (state
            // kept from before eviction was configured).
            self.evict(&mut cm);
        }
        cm.dirty = true;
        self.checkin(partition, key, cm);
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
    pub fn commit(&mut self, extra: Batch) -> Result<(), EngineError> {
        self.commit_with(extra, |_, _| {})
    }

    /// [`Engine::commit`], reporting every member state it writes and the
    /// end of each partition's changes to `on_change`, which may add its own
    /// writes (the pipeline's changelog records) to the same atomic batch.
    pub fn commit_with(
        &mut self,
        extra: Batch,
        mut on_change: impl FnMut(Change<'_>, &mut Batch),
    ) -> Result<(), EngineError> {
        let started = std::time::Instant::now();
        let mut batch = Batch::default();
        // First, so that a member who starts afresh after a quarantine is
        // written after (over) the deletion of the undecodable original.
        for q in self.quarantine.drain(..) {
            q.write_to(&mut batch);
            if q.kind == QuarantineKind::Member {
                batch.delete(Table::Members, q.key);
            }
        }
        self.quarantine_taken = 0;
        let mut members = 0;
        for (&p, part) in self.parts.iter_mut() {
            for (id, cm) in part.members.drain() {
                if cm.evicted {
                    members += 1;
                    on_change(
                        Change::MemberDeleted {
                            partition: p,
                            member_id: &id,
                        },
                        &mut batch,
                    );
                    batch.delete(Table::Members, member_key(p, &id));
                } else if cm.dirty {
                    members += 1;
                    let state = cm.state.to_bytes();
                    on_change(
                        Change::Member {
                            partition: p,
                            member_id: &id,
                            timer_due_ms: cm.state.timer_due_ms,
                            state: &state,
                        },
                        &mut batch,
                    );
                    batch.put(Table::Members, member_key(p, &id), state);
                }
            }
            if part.max_ts_dirty {
                batch.put(
                    Table::Meta,
                    meta_key(p, META_MAX_TS),
                    part.max_ts.to_le_bytes().to_vec(),
                );
                part.max_ts_dirty = false;
            }
            if part.clock_dirty {
                batch.put(
                    Table::Meta,
                    meta_key(p, META_CLOCK),
                    part.clock_ms.to_le_bytes().to_vec(),
                );
                part.clock_dirty = false;
            }
            on_change(
                Change::PartitionDone {
                    partition: p,
                    max_ts: part.max_ts,
                    clock_ms: part.clock_ms,
                },
                &mut batch,
            );
        }
        for (k, put) in std::mem::take(&mut self.overlay) {
            if put {
                batch.put(Table::Timers, k, Vec::new());
            } else {
                batch.delete(Table::Timers, k);
            }
        }
        batch.ops.extend(extra.ops);
        // A batch the store refused before is written first, with this one,
        // in one atomic write: nothing is lost and the order is kept.
        let batch = match self.unwritten.take() {
            Some(mut older) => {
                older.ops.extend(batch.ops);
                older
            }
            None => batch,
        };
        if !batch.is_empty() {
            if let Err(e) = self.store.write_ref(&batch) {
                self.unwritten = Some(batch);
                return Err(e.into());
            }
        }
        self.stats.commits += 1;
        self.fired_since_commit = 0;
        StateCommitted {
            members,
            seconds: started.elapsed().as_secs_f64(),
            clocks: &self.parts_clocks(),
            wall_ms: chrono::Utc::now().timestamp_millis(),
        }
        .emit(&self.metrics);
        Ok(())
    }

    /// The member's state as the engine sees it now (committed or not).
    pub fn member(
        &self,
        partition: u32,
        member_id: &str,
    ) -> Result<Option<MemberState>, EngineError> {
        if let Some(cm) = self
            .parts
            .get(&partition)
            .and_then(|p| p.members.get(member_id))
        {
            return Ok((!cm.evicted).then(|| cm.state.clone()));
        }
        self.load(partition, member_id)
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

    /// Takes a member out of the batch cache (loading or creating it); give
    /// it back with [`Self::checkin`].
    fn checkout(
        &mut self,
        partition: u32,
        member_id: &str,
        ts_ms: i64,
    ) -> Result<(Box<str>, Cached), EngineError> {
        let part = self
            .parts
            .get_mut(&partition)
            .expect("partition assigned before use");
        if let Some((key, mut cm)) = part.members.remove_entry(member_id) {
            if cm.evicted {
                // Evicted in this batch and back already.
                self.renew(&mut cm, ts_ms);
            }
            return Ok((key, cm));
        }
        Ok(match self.load_or_quarantine(partition, member_id)? {
            Loaded::Found(m) => (member_id.into(), Cached::clean(*m)),
            Loaded::Absent => {
                MemberCreated.emit(&self.metrics);
                (member_id.into(), Cached::clean(MemberState::new(ts_ms)))
            }
            // Starts afresh, written over the undecodable original.
            Loaded::Quarantined => {
                MemberCreated.emit(&self.metrics);
                let mut cm = Cached::clean(MemberState::new(ts_ms));
                cm.dirty = true;
                (member_id.into(), cm)
            }
        })
    }

    /// Like [`Self::checkout`], but `None` for a member without state.
    fn checkout_existing(
        &mut self,
        partition: u32,
        member_id: &str,
    ) -> Result<Option<(Box<str>, Cached)>, EngineError> {
        let part = self
            .parts
            .get_mut(&partition)
            .expect("partition assigned before use");
        if part.members.get(member_id).is_some_and(|cm| cm.evicted) {
            return Ok(None);
        }
        if let Some(entry) = part.members.remove_entry(member_id) {
            return Ok(Some(entry));
        }
        match self.load_or_quarantine(partition, member_id)? {
            Loaded::Found(state) => Ok(Some((member_id.into(), Cached::clean(*state)))),
            Loaded::Absent => Ok(None),
            Loaded::Quarantined => {
                // Gone: deleted (with a changelog tombstone) at the commit,
                // and not loaded (and quarantined) again before it.
                let gone = Cached {
                    state: MemberState::new(0),
                    dirty: true,
                    evicted: true,
                };
                if let Some(part) = self.parts.get_mut(&partition) {
                    part.members.insert(member_id.into(), gone);
                }
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
        let Some(bytes) = self.store.get(Table::Members, &key)? else {
            return Ok(Loaded::Absent);
        };
        match MemberState::decode(&bytes) {
            Ok(m) => Ok(Loaded::Found(Box::new(m))),
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

    fn quarantine_record(&mut self, q: Quarantined) {
        StateQuarantined(&q).emit(&self.metrics);
        self.quarantine.push(q);
    }

    /// Whether a commit the store refused is waiting to be written again.
    pub fn has_unwritten(&self) -> bool {
        self.unwritten.is_some()
    }

    /// Records moved to the quarantine since the last call, for the caller
    /// to dead-letter. They are written by the next commit.
    pub fn take_quarantined(&mut self) -> Vec<Quarantined> {
        let new = self.quarantine[self.quarantine_taken..].to_vec();
        self.quarantine_taken = self.quarantine.len();
        new
    }

    /// Marks a member for deletion at the next commit.
    fn evict(&self, cm: &mut Cached) {
        MemberEvicted.emit(&self.metrics);
        cm.evicted = true;
        cm.dirty = true;
    }

    /// An evicted member is back: they start as a new member.
    fn renew(&self, cm: &mut Cached, ts_ms: i64) {
        MemberCreated.emit(&self.metrics);
        *cm = Cached {
            state: MemberState::new(ts_ms),
            dirty: true,
            evicted: false,
        };
    }

    fn checkin(&mut self, partition: u32, key: Box<str>, cm: Cached) {
        if let Some(part) = self.parts.get_mut(&partition) {
            part.members.insert(key, cm);
        }
    }

    /// Assigned partitions whose clock has started, with their clocks.
    fn parts_clocks(&self) -> Vec<(u32, i64)> {
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
        if part.next_due > target {
            self.set_clock(p, target);
            return Ok(true);
        }
        // Everything before the partition's lower bound has fired and is
        // only tombstones now: seeking past them keeps this pass cheap.
        let from_due = part.next_due;
        let mut cursor = if from_due == NEVER {
            partition_prefix(p).to_vec()
        } else {
            timer_bound(p, from_due.saturating_sub(1))
        };
        let end = timer_bound(p, target);
        self.refire = None;
        self.firing_until = target;
        let mut fired = 0;
        let mut stopped_at: Option<i64> = None;
        'pass: loop {
            let keys = self.due_timer_keys(&cursor, &end, 512)?;
            let Some(last) = keys.last().cloned() else {
                break;
            };
            for key in keys {
                let Some((_, due, member)) = split_timer_key(&key) else {
                    self.quarantine_record(Quarantined::new(
                        QuarantineKind::Timer,
                        p,
                        &key,
                        &[],
                        "timer key does not split into due time and member id".into(),
                    ));
                    self.overlay.insert(key, false);
                    continue;
                };
                if self.fired_since_commit >= limit {
                    stopped_at = Some(due);
                    break 'pass;
                }
                cursor.clear();
                cursor.extend_from_slice(&key);
                cursor.push(0);
                let Some((mkey, mut cm)) = self.checkout_existing(p, member)? else {
                    self.overlay.insert(key, false);
                    continue;
                };
                if cm.state.timer_due_ms == due {
                    // The clock reaches each timer as it fires.
                    self.set_clock(p, due);
                    if self.on_timer(p, &mkey, &mut cm.state, due) == Fired::Evicted {
                        self.evict(&mut cm);
                    }
                    cm.dirty = true;
                    fired += 1;
                    self.fired_since_commit += 1;
                } else {
                    // A stale entry (rescheduled without cleaning up).
                    self.overlay.insert(key, false);
                }
                self.checkin(p, mkey, cm);
                // A fired timer can reschedule its member to a moment this
                // pass still reaches, among keys already read: read again
                // from here, so that every timer fires in due order.
                if let Some(r) = self.refire.take() {
                    if r < cursor {
                        cursor = r;
                        continue 'pass;
                    }
                    if r < last {
                        continue 'pass;
                    }
                }
            }
        }
        self.firing_until = NEVER;
        if fired > 0 {
            self.stats.timers_fired += fired;
            TimersFired { count: fired }.emit(&self.metrics);
        }
        if stopped_at.is_some() {
            // `next_due` stays what it was at the start of the pass, lowered
            // by every timer scheduled since: still a lower bound of what is
            // pending, so the next pass picks up where this one stopped.
            return Ok(false);
        }
        self.set_clock(p, target);
        let next = self.peek_next_due(p, target)?;
        if let Some(part) = self.parts.get_mut(&p) {
            part.next_due = next;
        }
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

    /// Timer keys in `[from, to)`, merging the store with uncommitted changes.
    fn due_timer_keys(
        &self,
        from: &[u8],
        to: &[u8],
        limit: usize,
    ) -> Result<Vec<Vec<u8>>, EngineError> {
        let stored = self.store.scan(Table::Timers, from, to, limit)?;
        let full = stored.len() == limit;
        let upper: Option<Vec<u8>> = if full {
            stored.last().map(|(k, _)| k.clone())
        } else {
            None
        };
        let mut keys: Vec<Vec<u8>> = stored
            .into_iter()
            .map(|(k, _)| k)
            .filter(|k| self.overlay.get(k) != Some(&false))
            .collect();
        for (k, put) in self.overlay.range(from.to_vec()..to.to_vec()) {
            if upper.as_ref().is_some_and(|u| k > u) {
                break;
            }
            if *put {
                keys.push(k.clone());
            }
        }
        keys.sort();
        keys.dedup();
        if keys.is_empty() && full {
            // Everything in this chunk was deleted in the overlay: move on.
            let mut next = upper.expect("full scan has a last key");
            next.push(0);
            return self.due_timer_keys(&next, to, limit);
        }
        Ok(keys)
    }

    /// A lower bound of the earliest pending timer of `partition` after `after_ms`.
    fn peek_next_due(&self, partition: u32, after_ms: i64) -> Result<i64, EngineError> {
        let mut from = if after_ms == NEVER {
            partition_prefix(partition).to_vec()
        } else {
            timer_bound(partition, after_ms)
        };
        let end = partition_end(partition);
        let mut best = i64::MAX;
        if let Some((k, _)) = self
            .overlay
            .range(from.clone()..end.clone())
            .find(|(_, put)| **put)
        {
            // An unsplittable key is due at once: the firing pass moves it
            // to the quarantine instead of it hiding every timer after it.
            best = split_timer_key(k).map_or(NEVER, |t| t.1);
        }
        for _ in 0..8 {
            let chunk = self.store.scan(Table::Timers, &from, &end, 64)?;
            let Some((last, _)) = chunk.last() else {
                return Ok(best);
            };
            if let Some((k, _)) = chunk
                .iter()
                .find(|(k, _)| self.overlay.get(k) != Some(&false))
            {
                let due = split_timer_key(k).map_or(NEVER, |t| t.1);
                return Ok(best.min(due));
            }
            from = last.clone();
            from.push(0);
        }
        // Many deleted entries in a row: a conservative bound is fine, the
        // next firing pass skips them.
        Ok(best.min(split_timer_key(&from).map_or(i64::MIN, |t| t.1)))
    }

    fn on_timer(
        &mut self,
        partition: u32,
        member_id: &str,
        m: &mut MemberState,
        due: i64,
    ) -> Fired {
        self.overlay
            .insert(timer_key(partition, due, member_id), false);
        m.timer_due_ms = NEVER;
        self.evaluate(partition, member_id, m, due, None);
        self.reschedule(partition, member_id, m, due)
    }

    /// Runs every detector at `now`, opens and closes episodes, moves the
    /// lifecycle stage, and raises the alerts that follow.
    fn evaluate(
        &mut self,
        partition: u32,
        member_id: &str,
        m: &mut MemberState,
        now: i64,
        returning: Option<(OpenAlert, i64)>,
    ) {
        judge(m, now, &self.cfg, &mut self.findings);
        if self.findings.is_empty() && returning.is_none() {
            return;
        }

        let holdout = self.cfg.alerts.is_holdout(member_id);
        let segment = self
            .cfg
            .alerts
            .segments
            .classify(m, now, &self.cfg.detect.purchase_gap);
        let (risk, model) = risk_of(m, now, &self.cfg);
        let with_model = |e: Evidence| match model {
            Some((alive, expected)) => e
                .num("p_alive", (alive * 1e4).round() / 1e4)
                .num("expected_purchases_90d", (expected * 1e3).round() / 1e3),
            None => e,
        };
        if let Some((answered, ts)) = returning {
            let days_to_return = (ts - answered.detected_ms) as f64 / DAY_MS as f64;
            let within = days_to_return <= self.cfg.alerts.reactivation_horizon_days;
            MemberReactivated {
                signal: answered.signal,
                holdout,
                days_to_return,
                within_horizon: within,
            }
            .emit(&self.metrics);
            let alert = Alert {
                alert_id: alert::reactivation_id(member_id, answered.signal, answered.seq),
                member_id: member_id.to_string(),
                signal: Signal::Reactivated,
                severity: Severity::Info,
                risk_score: risk,
                stage: m.stage,
                segment,
                evidence: with_model(Evidence::default())
                    .text(
                        "answers_alert_id",
                        alert::alert_id(member_id, answered.signal, answered.seq),
                    )
                    .text("answers_signal", answered.signal.as_str())
                    .num("days_to_return", days_to_return)
                    .flag("within_horizon", within)
                    .num("horizon_days", self.cfg.alerts.reactivation_horizon_days),
                recommended_action: self
                    .cfg
                    .alerts
                    .playbook
                    .action(segment, Signal::Reactivated)
                    .to_string(),
                holdout,
                detected_ms: ts,
            };
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
                    holdout,
                }
                .emit(&self.metrics);
            }
            let alert = Alert {
                alert_id: alert::alert_id(member_id, *signal, seq),
                member_id: member_id.to_string(),
                signal: *signal,
                severity: f.severity,
                risk_score: risk,
                stage: m.stage,
                segment,
                evidence: with_model(f.evidence.clone()),
                recommended_action: self
                    .cfg
                    .alerts
                    .playbook
                    .action(segment, *signal)
                    .to_string(),
                holdout,
                detected_ms: f.since_ms,
            };
            self.raise(partition, alert);
        }
        self.findings = findings;
        self.findings.clear();
    }

    fn raise(&mut self, partition: u32, alert: Alert) {
        self.stats.alerts += 1;
        self.raised.push(RaisedAlert { partition, alert });
    }

    /// Keeps one timer entry per member, at the earliest moment after `now`
    /// that one of its absence conditions could become true or, once none
    /// can, at its eviction time. Says `Evicted` when that time has come.
    fn reschedule(
        &mut self,
        partition: u32,
        member_id: &str,
        m: &mut MemberState,
        now: i64,
    ) -> Fired {
        let mut due = timer_checks(m, now, &self.cfg)
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
        if due == m.timer_due_ms {
            return fired;
        }
        if m.timer_due_ms != NEVER {
            self.overlay
                .insert(timer_key(partition, m.timer_due_ms, member_id), false);
        }
        if due != NEVER {
            let key = timer_key(partition, due, member_id);
            let clock = self.parts.get(&partition).map_or(NEVER, |p| p.clock_ms);
            if due <= clock.max(self.firing_until) && self.refire.as_ref().is_none_or(|r| key < *r)
            {
                self.refire = Some(key.clone());
            }
            self.overlay.insert(key, true);
            if let Some(part) = self.parts.get_mut(&partition) {
                part.next_due = part.next_due.min(due);
            }
        }
        m.timer_due_ms = due;
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
    let d = &cfg.detect;
    let verdicts = [
        (
            Signal::PurchaseGap,
            purchase_gap::evaluate(m, now, &d.purchase_gap, &cfg.risk),
        ),
        (
            Signal::OpenRateDrop,
            open_rate_drop::evaluate(m, now, &d.open_rate_drop),
        ),
        (
            Signal::VisitDecline,
            visit_decline::evaluate(m, now, &d.visit_decline),
        ),
        (
            Signal::CheckinLapse,
            checkin_lapse::evaluate(m, now, &d.checkin_lapse),
        ),
        (
            Signal::SpendDecline,
            spend_decline::evaluate(m, now, &d.spend_decline),
        ),
    ];
    findings.clear();
    for (signal, verdict) in verdicts {
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
pub fn timer_checks(
    m: &MemberState,
    now: i64,
    cfg: &EngineConfig,
) -> impl Iterator<Item = (Signal, i64)> {
    let d = &cfg.detect;
    let closed = |s: Signal| !m.episodes[s as usize].open;
    [
        (
            Signal::PurchaseGap,
            closed(Signal::PurchaseGap)
                .then(|| purchase_gap::due_ms(m, &d.purchase_gap, &cfg.risk))
                .flatten(),
        ),
        (
            Signal::CheckinLapse,
            closed(Signal::CheckinLapse)
                .then(|| checkin_lapse::due_ms(m, &d.checkin_lapse))
                .flatten(),
        ),
        (
            Signal::StageChange,
            stage_change::due_ms(m, now, &cfg.lifecycle),
        ),
        (
            Signal::VisitDecline,
            closed(Signal::VisitDecline)
                .then(|| visit_decline::due_ms(m, now, &d.visit_decline))
                .flatten(),
        ),
    ]
    .into_iter()
    .filter_map(move |(s, t)| t.filter(|t| *t > now).map(|t| (s, t)))
}

/// A member's stored state, as found.
enum Loaded {
    Found(Box<MemberState>),
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
