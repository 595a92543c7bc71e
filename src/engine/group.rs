//! Engines side by side: the pipeline's partitions spread over
//! `engine.threads` engines, each owning the partitions `p % threads` end to
//! end (members, clocks, timers, member cache), sharing one store.
//!
//! A batch of input messages is split by engine and each share is processed
//! on its own thread (scoped to the batch, so an engine is only ever touched
//! by one thread at a time and nothing on the per-event path is shared or
//! locked). A commit stages every engine's changes into **one** atomic store
//! batch with the caller's own writes (offsets, outbox): the pipeline's
//! guarantee that state, offsets and outbox move together is the same with
//! one engine or sixteen.
//!
//! With [`EngineGroup::write_behind`] that batch is written on a writer
//! thread while the engines go on with the next input batch, as a single
//! [`Engine`]'s can be (see [`Engine::write_behind`]); the caller learns
//! that it has landed from the next commit, [`EngineGroup::land`] or
//! [`EngineGroup::flush`].
//!
//! Detection depends only on each partition's own sequence of events, and
//! a partition's events always go to the same engine in order, so the
//! alerts do not depend on the number of engines (only their order across
//! partitions may differ).

use super::writer::CommitWriter;
use super::{retried, CacheStats, Change, Engine, EngineConfig, EngineError, Outcome, RaisedAlert};
use crate::state::quarantine::Quarantined;
use crate::state::{Batch, Store, StoreError};
use crate::telemetry::events::StateCommitted;
use crate::telemetry::Metrics;
use std::sync::Arc;

/// One input message for [`EngineGroup::process_batch`].
#[derive(Debug, Clone, Copy)]
pub struct Input<'a> {
    pub partition: u32,
    pub payload: &'a [u8],
}

pub struct EngineGroup<S: Store + Clone> {
    engines: Vec<Engine<S>>,
    metrics: Arc<Metrics>,
    /// Where the engines' commits are written, in one batch: at once or
    /// ([`EngineGroup::write_behind`]) behind them; and the last one the
    /// store refused.
    commits: CommitWriter,
}

impl<S: Store + Clone + 'static> EngineGroup<S> {
    /// From now on a commit hands its batch to a writer thread and returns;
    /// the write lands before the next commit's, and the caller must not
    /// treat a commit as durable until then ([`EngineGroup::in_flight`]).
    pub fn write_behind(&mut self) {
        let store = self.engines[0].store();
        self.commits.write_behind(store);
    }
}

impl<S: Store + Clone> EngineGroup<S> {
    /// `threads` engines (at least one) over one store, each with its own
    /// member cache, an equal share of `cfg.member_cache_bytes`.
    pub fn new(
        store: S,
        cfg: EngineConfig,
        metrics: Arc<Metrics>,
        threads: usize,
    ) -> Result<Self, EngineError> {
        let threads = threads.max(1);
        let cfg = cfg.cache_share(threads);
        let engines = (0..threads)
            .map(|_| Engine::new(store.clone(), cfg.clone(), metrics.clone()))
            .collect::<Result<_, _>>()?;
        Ok(EngineGroup {
            engines,
            metrics,
            commits: CommitWriter::default(),
        })
    }

    pub fn threads(&self) -> usize {
        self.engines.len()
    }

    fn of(&self, partition: u32) -> usize {
        partition as usize % self.engines.len()
    }

    fn engine_of(&mut self, partition: u32) -> &mut Engine<S> {
        let i = self.of(partition);
        &mut self.engines[i]
    }

    pub fn store(&self) -> &S {
        self.engines[0].store()
    }

    pub fn config(&self) -> &EngineConfig {
        self.engines[0].config()
    }

    /// See [`Engine::assign`].
    pub fn assign(&mut self, partition: u32) -> Result<(), EngineError> {
        self.engine_of(partition).assign(partition)
    }

    /// See [`Engine::revoke`]. Commits before, with nothing in flight: the
    /// partition's last changes must be in the store when it leaves.
    pub fn revoke(&mut self, partition: u32) {
        debug_assert!(!self.in_flight(), "flush before revoking");
        self.engine_of(partition).revoke(partition)
    }

    /// Whether the last commit's write is still in flight (write-behind):
    /// what it carries is not durable yet.
    pub fn in_flight(&self) -> bool {
        self.commits.in_flight()
    }

    /// Waits for the write in flight, if any. A refused one is kept, to be
    /// written again, synchronously, by the next commit or
    /// [`EngineGroup::flush`], before anything newer; the error says so.
    pub fn land(&mut self) -> Result<(), EngineError> {
        match self.commits.wait() {
            Some(result) => self.settle(result),
            None => Ok(()),
        }
    }

    /// [`EngineGroup::land`] if the write in flight is done by now, without
    /// waiting: `Ok(true)` once it has landed, `Ok(false)` while it is still
    /// being written (or none is in flight).
    pub fn land_if_done(&mut self) -> Result<bool, EngineError> {
        match self.commits.try_wait() {
            Some(result) => self.settle(result).map(|()| true),
            None => Ok(false),
        }
    }

    /// Brings the engines up to date with how the write in flight went.
    fn settle(&mut self, result: Result<(), StoreError>) -> Result<(), EngineError> {
        for e in &mut self.engines {
            e.write_settled(result.is_ok());
        }
        Ok(result?)
    }

    /// Makes every commit so far durable: waits for the write in flight and
    /// writes again one the store refused. Without write-behind there is
    /// nothing to do (a refused commit is the caller's to retry).
    pub fn flush(&mut self) -> Result<(), EngineError> {
        if !self.commits.is_behind() {
            return Ok(());
        }
        retried(self.land(), &self.metrics)?;
        if self.commits.write_unwritten(self.engines[0].store())? {
            self.settle(Ok(()))?;
        }
        Ok(())
    }

    /// The stream clock of `partition` (see [`Engine::clock_ms`]).
    pub fn clock_ms(&self, partition: u32) -> Option<i64> {
        self.engines[self.of(partition)].clock_ms(partition)
    }

    /// Every assigned partition with its stream clock, in partition order.
    pub fn clocks(&self) -> impl Iterator<Item = (u32, Option<i64>)> + '_ {
        let mut all: Vec<_> = self.engines.iter().flat_map(|e| e.clocks()).collect();
        all.sort_unstable_by_key(|(p, _)| *p);
        all.into_iter()
    }

    /// The member caches' fill, over every engine.
    pub fn member_cache(&self) -> CacheStats {
        self.engines
            .iter()
            .map(|e| e.member_cache())
            .fold(CacheStats::default(), |a, b| a + b)
    }

    /// Timers pending over every assigned partition.
    pub fn timers_pending(&self) -> usize {
        self.engines.iter().map(|e| e.timers_pending()).sum()
    }

    /// See [`Engine::advance_partition_clock`].
    pub fn advance_partition_clock(
        &mut self,
        partition: u32,
        to_ms: i64,
    ) -> Result<bool, EngineError> {
        self.engine_of(partition)
            .advance_partition_clock(partition, to_ms)
    }

    /// Alerts raised since the last call, each partition's in the order
    /// they were raised.
    pub fn take_alerts(&mut self) -> Vec<RaisedAlert> {
        let mut all = Vec::new();
        for e in &mut self.engines {
            all.append(&mut e.take_alerts());
        }
        all
    }

    /// See [`Engine::take_quarantined`].
    pub fn take_quarantined(&mut self) -> Vec<Quarantined> {
        self.engines
            .iter_mut()
            .flat_map(|e| e.take_quarantined())
            .collect()
    }

    /// Processes `inputs`, each partition's in order, the engines' shares on
    /// threads of their own (on the caller's thread when one engine has all
    /// of them). An engine stops at its first [`Outcome::Deferred`]: that
    /// message and the rest of its share come back `None`, to be given
    /// again after a commit; the other engines go on.
    pub fn process_batch(
        &mut self,
        inputs: &[Input<'_>],
        wall_now_ms: i64,
    ) -> Result<Vec<Option<Outcome>>, EngineError> {
        let n = self.engines.len();
        let mut shares: Vec<Vec<usize>> = vec![Vec::new(); n];
        for (i, input) in inputs.iter().enumerate() {
            shares[input.partition as usize % n].push(i);
        }
        let busy = shares.iter().filter(|s| !s.is_empty()).count();
        let mut outcomes: Vec<Option<Outcome>> = inputs.iter().map(|_| None).collect();
        if busy <= 1 {
            for (engine, share) in self.engines.iter_mut().zip(&shares) {
                for (i, o) in process_share(engine, inputs, share, wall_now_ms)? {
                    outcomes[i] = Some(o);
                }
            }
            return Ok(outcomes);
        }
        let results: Vec<_> = std::thread::scope(|scope| {
            let handles: Vec<_> = self
                .engines
                .iter_mut()
                .zip(&shares)
                .filter(|(_, share)| !share.is_empty())
                .map(|(engine, share)| {
                    scope.spawn(move || process_share(engine, inputs, share, wall_now_ms))
                })
                .collect();
            handles
                .into_iter()
                .map(|h| h.join().expect("an engine thread panicked"))
                .collect()
        });
        for result in results {
            for (i, o) in result? {
                outcomes[i] = Some(o);
            }
        }
        Ok(outcomes)
    }

    /// See [`Engine::commit`].
    pub fn commit(&mut self, extra: Batch) -> Result<(), EngineError> {
        self.commit_with(extra, |_, _| {})
    }

    /// Every engine's changes since the last commit, reported to
    /// `on_change` partition by partition (see [`Engine::commit_with`]),
    /// then `extra`, in one atomic store batch.
    pub fn commit_with(
        &mut self,
        mut extra: Batch,
        mut on_change: impl FnMut(Change<'_>, &mut Batch),
    ) -> Result<(), EngineError> {
        let started = std::time::Instant::now();
        // One write in flight at a time, so that they land in order. One the
        // store refused is written again below, with this commit after it,
        // and only a refusal of that is this commit's error.
        retried(self.land(), &self.metrics)?;
        let mut batch = self.commits.next_batch();
        let mut members = 0;
        for e in &mut self.engines {
            members += e.stage_commit(&mut batch, &mut on_change);
        }
        batch.append(&mut extra);
        let behind = self.commits.write(self.engines[0].store(), batch)?;
        let mut clocks = Vec::new();
        for e in &mut self.engines {
            e.committed_as(behind);
            clocks.extend(e.parts_clocks());
        }
        StateCommitted {
            members,
            seconds: started.elapsed().as_secs_f64(),
            clocks: &clocks,
            wall_ms: chrono::Utc::now().timestamp_millis(),
        }
        .emit(&self.metrics);
        Ok(())
    }
}

/// One engine's share of a batch: the members it names read ahead (one
/// store read per partition), then every message in order, up to the
/// first deferral.
fn process_share<S: Store>(
    engine: &mut Engine<S>,
    inputs: &[Input<'_>],
    share: &[usize],
    wall_now_ms: i64,
) -> Result<Vec<(usize, Outcome)>, EngineError> {
    // Parsed first (with the wall clock of the batch, as processing would):
    // the members named and the latest event time of each partition let
    // the members the share will touch, its events' and its due timers',
    // be read in one store read per partition.
    let validator = &engine.config().validator;
    let parsed: Vec<_> = share
        .iter()
        .map(|&i| validator.parse(inputs[i].payload, wall_now_ms))
        .collect();
    let mut plan = engine.read_ahead_plan();
    for (&i, event) in share.iter().zip(&parsed) {
        if let Ok(e) = event {
            plan.add(inputs[i].partition, &e.member_id, e.ts_ms);
        }
    }
    engine.read_ahead(plan)?;
    let mut done = Vec::with_capacity(share.len());
    let mut parsed: Vec<_> = parsed.into_iter().map(Some).collect();
    for (k, &i) in share.iter().enumerate() {
        let event = parsed[k].take().expect("each message once");
        engine.prefetch_ahead(|d| {
            let e = parsed.get(k + d)?.as_ref()?.as_ref().ok()?;
            Some((inputs[share[k + d]].partition, &*e.member_id))
        });
        match engine.process_parsed(inputs[i].partition, event)? {
            Outcome::Deferred => break,
            o => done.push((i, o)),
        }
    }
    Ok(done)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::detect::testkit::day;
    use crate::state::faulty::FaultyStore;
    use crate::state::{MemoryStore, Table};

    const WALL: i64 = 4_000_000_000_000;
    const PARTITIONS: u32 = 5;

    /// 30 members over five partitions, buying every 3–8 days until they
    /// stop (days 40–80): purchase gaps and stage changes, interleaved
    /// across partitions as a consumer would see them.
    fn inputs() -> Vec<(u32, Vec<u8>)> {
        let mut lines = Vec::new();
        for m in 0..30u32 {
            let (gap, stop) = (3.0 + (m % 6) as f64, 40.0 + (m % 5) as f64 * 10.0);
            let mut d = m as f64 * 0.1;
            let mut i = 0;
            while d < stop {
                let l = format!(
                    "{{\"event_id\":\"e{m}-{i}\",\"member_id\":\"m{m}\",\"type\":\"purchase\",\"ts\":{},\"amount\":{}}}",
                    day(d),
                    10 + m
                );
                lines.push((day(d), m % PARTITIONS, l.into_bytes()));
                d += gap;
                i += 1;
            }
        }
        // Then one late event per partition, whose clock passes everyone's
        // pending timers at once: more than may fire before a commit.
        for p in 0..PARTITIONS {
            let l = format!(
                "{{\"event_id\":\"late{p}\",\"member_id\":\"late{p}\",\"type\":\"visit\",\"ts\":{}}}",
                day(200.0 + p as f64 * 0.01)
            );
            lines.push((day(200.0), p, l.into_bytes()));
        }
        lines.sort_by_key(|l| l.0);
        lines.into_iter().map(|(_, p, l)| (p, l)).collect()
    }

    fn group<S: Store + Clone + 'static>(store: S, threads: usize, behind: bool) -> EngineGroup<S> {
        let mut cfg = EngineConfig::default();
        cfg.alerts.holdout_share = 0.0;
        // Small, so that events defer and engines stop mid-batch.
        cfg.clock.max_timers_per_commit = 3;
        // Small too, so that members leave the cache at every commit (and
        // must not while a write carrying them is in flight).
        cfg.member_cache_bytes = 1;
        let mut g = EngineGroup::new(store, cfg, Arc::new(Metrics::new()), threads).unwrap();
        if behind {
            g.write_behind();
        }
        g
    }

    type Row = (String, i64, String);

    /// Feeds `lines` in batches of `batch` as the pipeline does (deferred
    /// messages again after a commit), committing after every batch but
    /// the last, whose changes are left staged; the alerts raised go to
    /// `alerts`. Returns how many times an engine stopped to commit.
    fn feed<S: Store + Clone>(
        g: &mut EngineGroup<S>,
        lines: &[(u32, Vec<u8>)],
        batch: usize,
        alerts: &mut Vec<Row>,
    ) -> usize {
        let mut deferrals = 0;
        for (n, chunk) in lines.chunks(batch).enumerate() {
            if n > 0 {
                g.commit(Batch::default()).unwrap();
            }
            let mut pending: Vec<usize> = (0..chunk.len()).collect();
            loop {
                let inputs: Vec<Input<'_>> = pending
                    .iter()
                    .map(|&i| Input {
                        partition: chunk[i].0,
                        payload: &chunk[i].1,
                    })
                    .collect();
                let outcomes = g.process_batch(&inputs, WALL).unwrap();
                pending.retain({
                    let mut o = outcomes.iter();
                    move |_| o.next().unwrap().is_none()
                });
                take(g, alerts);
                if pending.is_empty() {
                    break;
                }
                deferrals += 1;
                g.commit(Batch::default()).unwrap();
            }
        }
        deferrals
    }

    /// Every partition's clock far ahead, then the last commit, landed.
    fn finish<S: Store + Clone>(g: &mut EngineGroup<S>, alerts: &mut Vec<Row>) {
        g.commit(Batch::default()).unwrap();
        for p in 0..PARTITIONS {
            while !g.advance_partition_clock(p, day(300.0)).unwrap() {
                take(g, alerts);
                g.commit(Batch::default()).unwrap();
            }
        }
        take(g, alerts);
        g.commit(Batch::default()).unwrap();
        g.flush().unwrap();
        assert!(!g.in_flight());
        alerts.sort();
    }

    fn take<S: Store + Clone>(g: &mut EngineGroup<S>, alerts: &mut Vec<Row>) {
        for a in g.take_alerts() {
            let mut json = Vec::new();
            a.alert.write_json(&mut json, 0);
            let json = String::from_utf8(json).unwrap();
            alerts.push((a.alert.alert_id.to_string(), a.alert.detected_ms, json));
        }
    }

    /// Stored members, key and value, in key order.
    type Stored = Vec<(Vec<u8>, Vec<u8>)>;

    fn members(store: &MemoryStore) -> Stored {
        store
            .scan(Table::Members, &[], &[0xff; 8], usize::MAX)
            .unwrap()
    }

    #[test]
    fn the_member_cache_budget_is_shared_by_the_engine_threads() {
        let cfg = EngineConfig {
            member_cache_bytes: 300 << 20,
            ..EngineConfig::default()
        };
        for threads in [1, 2, 3] {
            let g = EngineGroup::new(
                Arc::new(MemoryStore::default()),
                cfg.clone(),
                Arc::new(Metrics::new()),
                threads,
            )
            .unwrap();
            let total: usize = g
                .engines
                .iter()
                .map(|e| e.config().member_cache_bytes)
                .sum();
            assert_eq!(total, 300 << 20, "{threads} threads");
            assert!(g
                .engines
                .iter()
                .all(|e| e.config().member_cache_bytes == (300 << 20) / threads));
        }
    }

    #[test]
    fn alerts_and_state_do_not_depend_on_the_number_of_engine_threads_or_on_writing_behind() {
        let lines = inputs();
        let run = |threads: usize, batch: usize, behind: bool| {
            let store = Arc::new(MemoryStore::new());
            let (mut g, mut alerts) = (group(store.clone(), threads, behind), Vec::new());
            let deferrals = feed(&mut g, &lines, batch, &mut alerts);
            finish(&mut g, &mut alerts);
            (alerts, members(&store), deferrals)
        };
        let (one, state, _) = run(1, 64, false);
        assert!(one.len() >= 30, "expected alerts, got {}", one.len());
        for (threads, batch) in [(2, 64), (3, 17), (4, 1), (5, 1000), (1, 64)] {
            for behind in [false, true] {
                let (alerts, s, deferrals) = run(threads, batch, behind);
                let what = format!("{threads} threads, batches of {batch}, behind {behind}");
                // Engines stopped mid-batch for their timers, the others went on.
                assert!(batch == 1 || deferrals > 0, "{what}: no deferral");
                assert_eq!(alerts, one, "{what}");
                assert_eq!(s, state, "{what}");
            }
        }
    }

    /// What `lines` give on a store that takes every write: the alerts
    /// and the members stored.
    fn without_refusals(lines: &[(u32, Vec<u8>)]) -> (Vec<Row>, Stored) {
        let clean = Arc::new(MemoryStore::new());
        let (mut g, mut want) = (group(clean.clone(), 3, false), Vec::new());
        feed(&mut g, lines, 50, &mut want);
        finish(&mut g, &mut want);
        (want, members(&clean))
    }

    #[test]
    fn a_refused_group_commit_is_written_whole_once_the_store_takes_writes() {
        let lines = inputs();
        let (want, want_members) = without_refusals(&lines);

        let store = Arc::new(FaultyStore::new(MemoryStore::new()));
        let (mut g, mut alerts) = (group(store.clone(), 3, false), Vec::new());
        let (head, tail) = lines.split_at(lines.len() / 2);
        feed(&mut g, head, 50, &mut alerts);
        store.fail_writes(true);
        assert!(g.commit(Batch::default()).is_err());
        assert!(g.commit(Batch::default()).is_err());
        store.fail_writes(false);
        feed(&mut g, tail, 50, &mut alerts);
        finish(&mut g, &mut alerts);
        assert!(store.refused() >= 2);
        assert_eq!(alerts, want);
        assert_eq!(members(store.inner()), want_members);
    }

    #[test]
    fn a_group_write_refused_behind_is_written_again_before_anything_newer() {
        let lines = inputs();
        let (want, want_members) = without_refusals(&lines);

        let store = Arc::new(FaultyStore::new(MemoryStore::new()));
        let (mut g, mut alerts) = (group(store.clone(), 3, true), Vec::new());
        let (head, tail) = lines.split_at(lines.len() / 2);
        feed(&mut g, head, 50, &mut alerts);
        g.flush().unwrap();
        store.fail_writes(true);
        // Handed to the writer, which the store refuses: the commit cannot
        // know yet; the next one finds out, writes both at once, and is
        // refused too; so is a flush.
        g.commit(Batch::default()).unwrap();
        assert!(g.commit(Batch::default()).is_err());
        // The refusal behind is counted (the caller counts its own).
        assert_eq!(g.metrics.state_write_errors.get(), 1);
        assert!(g.flush().is_err());
        assert!(!g.in_flight());
        store.fail_writes(false);
        // The next commit writes what was refused, then goes on behind.
        feed(&mut g, tail, 50, &mut alerts);
        finish(&mut g, &mut alerts);
        assert!(store.refused() >= 3, "{} refused", store.refused());
        assert_eq!(alerts, want);
        assert_eq!(members(store.inner()), want_members);
    }
}
