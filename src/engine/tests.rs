use crate::detect::Severity;
use crate::event::DAY_MS;
use std::collections::BTreeSet;
use std::sync::Arc;

use super::*;
use crate::detect::testkit::day;
use crate::state::window::week_of;
use crate::state::MemoryStore;

fn engine(store: Arc<MemoryStore>) -> Engine<Arc<MemoryStore>> {
    let mut cfg = EngineConfig::default();
    cfg.alerts.holdout_share = 0.0;
    Engine::new(store, cfg, Arc::new(Metrics::new())).unwrap()
}

fn line(id: &str, member: &str, kind: &str, ts: i64, amount: Option<f64>) -> Vec<u8> {
    let amount = amount
        .map(|a| format!(",\"amount\":{a}"))
        .unwrap_or_default();
    format!("{{\"event_id\":\"{id}\",\"member_id\":\"{member}\",\"type\":\"{kind}\",\"ts\":{ts}{amount}}}").into_bytes()
}

const WALL: i64 = 4_000_000_000_000;

/// A weekly buyer: purchases on days 0, 7, ..., 7*(n-1).
fn weekly_buyer<S: Store>(e: &mut Engine<S>, member: &str, n: usize) {
    for i in 0..n {
        let l = line(
            &format!("{member}-p{i}"),
            member,
            "purchase",
            day(i as f64 * 7.0),
            Some(20.0),
        );
        assert_eq!(e.process(0, &l, WALL).unwrap(), Outcome::Accepted);
    }
}

/// Every record of partition 0 in `table`.
fn partition_0<S: Store>(store: &S, table: Table) -> Vec<(Vec<u8>, Vec<u8>)> {
    store
        .scan(table, &partition_prefix(0), &partition_end(0), usize::MAX)
        .unwrap()
}

/// Every key of partition 0's timer index (a restore leaves none of them).
fn timer_index_keys<S: Store>(store: &S) -> Vec<Vec<u8>> {
    partition_0(store, Table::Timers)
        .into_iter()
        .map(|(k, _)| k)
        .collect()
}

fn signals(alerts: &[RaisedAlert]) -> Vec<&'static str> {
    alerts.iter().map(|a| a.alert.signal.as_str()).collect()
}

#[test]
fn fires_purchase_gap_from_the_timer_index_with_no_new_event() {
    let store = Arc::new(MemoryStore::new());
    let mut e = engine(store.clone());
    weekly_buyer(&mut e, "m1", 5);
    e.commit(Batch::default()).unwrap();
    assert!(e.take_alerts().is_empty());
    // Usual gap 7 days, overdue after 14: due on day 28 + 14 = 42.
    assert!(e.advance_clock_to(day(41.9)).unwrap());
    assert!(e.take_alerts().is_empty());
    e.advance_clock_to(day(43.0)).unwrap();
    let alerts = e.take_alerts();
    assert_eq!(signals(&alerts), ["purchase_gap"]);
    let a = &alerts[0].alert;
    assert_eq!(a.detected_ms, day(42.0));
    assert_eq!(a.evidence.get_num("typical_gap_days"), Some(7.0));
    assert_eq!(a.stage, Stage::Cooling);
}

#[test]
fn timers_survive_a_restart() {
    let store = Arc::new(MemoryStore::new());
    {
        let mut e = engine(store.clone());
        weekly_buyer(&mut e, "m1", 5);
        e.commit(Batch::default()).unwrap();
    }
    let mut e = engine(store.clone());
    e.assign(0).unwrap();
    assert_eq!(e.clock_ms(0), Some(day(28.0) - 3_600_000));
    e.advance_clock_to(day(50.0)).unwrap();
    assert_eq!(signals(&e.take_alerts()), ["purchase_gap"]);
}

#[test]
fn one_alert_per_episode_and_rearms_after_recovery() {
    let store = Arc::new(MemoryStore::new());
    let mut e = engine(store);
    weekly_buyer(&mut e, "m1", 5);
    e.advance_clock_to(day(45.0)).unwrap();
    // Still silent: visits do not end the purchase gap, no repeat alert.
    for i in 0..5 {
        let l = line(&format!("v{i}"), "m1", "visit", day(45.0 + i as f64), None);
        e.process(0, &l, WALL).unwrap();
    }
    e.advance_clock_to(day(60.0)).unwrap();
    let first = e.take_alerts();
    assert_eq!(signals(&first), ["purchase_gap"]);
    // The member buys again: reactivated, and the episode re-arms.
    e.process(
        0,
        &line("p-back", "m1", "purchase", day(61.0), Some(20.0)),
        WALL,
    )
    .unwrap();
    let back = e.take_alerts();
    assert_eq!(signals(&back), ["reactivated"]);
    assert_eq!(back[0].alert.evidence.get_num("days_to_return"), Some(19.0));
    assert_eq!(
        back[0].alert.evidence.get("answers_alert_id"),
        Some(&crate::detect::EvidenceValue::Text(
            first[0].alert.alert_id.clone()
        ))
    );
    // Silent again: a second episode, with a different alert id.
    e.advance_clock_to(day(120.0)).unwrap();
    let second = e.take_alerts();
    assert_eq!(signals(&second)[0], "purchase_gap");
    assert_ne!(second[0].alert.alert_id, first[0].alert.alert_id);
}

#[test]
fn a_duplicate_event_leaves_state_unchanged() {
    let store = Arc::new(MemoryStore::new());
    let mut e = engine(store);
    weekly_buyer(&mut e, "m1", 3);
    let before = e.member(0, "m1").unwrap().unwrap();
    let again = line("m1-p1", "m1", "purchase", day(7.0), Some(20.0));
    assert_eq!(e.process(0, &again, WALL).unwrap(), Outcome::Duplicate);
    assert_eq!(e.member(0, "m1").unwrap().unwrap(), before);
    e.commit(Batch::default()).unwrap();
    assert_eq!(e.process(0, &again, WALL).unwrap(), Outcome::Duplicate);
    assert_eq!(e.member(0, "m1").unwrap().unwrap(), before);
    assert_eq!(e.stats().duplicates, 2);
}

#[test]
fn rejected_events_change_nothing() {
    let store = Arc::new(MemoryStore::new());
    let mut e = engine(store.clone());
    let out = e
        .process(
            0,
            br#"{"event_id":"x","member_id":"m1","type":"visit","ts":"soon"}"#,
            WALL,
        )
        .unwrap();
    assert!(matches!(out, Outcome::Rejected(r) if r.reason == crate::event::RejectReason::BadTs));
    e.commit(Batch::default()).unwrap();
    assert_eq!(store.len(Table::Members), 0);
    assert_eq!(e.clock_ms(0), None);
}

#[test]
fn late_events_land_in_their_own_week() {
    let store = Arc::new(MemoryStore::new());
    let mut e = engine(store);
    e.process(0, &line("v1", "m1", "visit", day(30.0), None), WALL)
        .unwrap();
    e.process(0, &line("v0", "m1", "visit", day(2.0), None), WALL)
        .unwrap();
    let m = e.member(0, "m1").unwrap().unwrap();
    assert_eq!(m.visits.count(week_of(day(2.0))), 1);
    assert_eq!(m.visits.count(week_of(day(30.0))), 1);
    assert_eq!(m.first_seen_ms, day(2.0));
    assert_eq!(m.last_event_ms, day(30.0));
}

#[test]
fn results_do_not_depend_on_batch_boundaries() {
    let mut lines = Vec::new();
    for m in 0..20 {
        let gap = 3.0 + m as f64;
        let stop = 40.0 + (m % 5) as f64 * 10.0;
        let mut d = m as f64 * 0.1;
        let mut i = 0;
        while d < stop {
            lines.push((
                day(d),
                line(
                    &format!("e{m}-{i}"),
                    &format!("m{m}"),
                    "purchase",
                    day(d),
                    Some(10.0 + m as f64),
                ),
            ));
            lines.push((
                day(d + 0.5),
                line(
                    &format!("v{m}-{i}"),
                    &format!("m{m}"),
                    "visit",
                    day(d + 0.5),
                    None,
                ),
            ));
            d += gap;
            i += 1;
        }
    }
    lines.sort_by_key(|l| l.0);
    let run = |batch: usize| {
        let mut e = engine(Arc::new(MemoryStore::new()));
        let mut ids = Vec::new();
        for (i, (_, l)) in lines.iter().enumerate() {
            e.process(0, l, WALL).unwrap();
            if (i + 1) % batch == 0 {
                ids.extend(
                    e.take_alerts()
                        .into_iter()
                        .map(|a| (a.alert.alert_id, a.alert.detected_ms)),
                );
                e.commit(Batch::default()).unwrap();
            }
        }
        e.advance_clock_to(day(200.0)).unwrap();
        ids.extend(
            e.take_alerts()
                .into_iter()
                .map(|a| (a.alert.alert_id, a.alert.detected_ms)),
        );
        ids
    };
    // Timers fire interleaved with the events, so not even the order
    // depends on the batch size.
    let one = run(1);
    assert!(one.len() >= 20, "expected alerts, got {}", one.len());
    assert_eq!(one, run(7));
    assert_eq!(one, run(100_000));
}

/// Twelve members buying (every third event) and visiting, member `m`
/// every `2 + m·gap_step` days from day `0.3·m` until day
/// `until + (m mod 4)·until_step`, in time order: (time, member, line).
fn paced_members(gap_step: f64, until: f64, until_step: f64) -> Vec<(i64, String, Vec<u8>)> {
    paced(12, gap_step, until, until_step)
}

/// [`paced_members`] with `members` members.
fn paced(
    members: usize,
    gap_step: f64,
    until: f64,
    until_step: f64,
) -> Vec<(i64, String, Vec<u8>)> {
    let mut lines = Vec::new();
    for m in 0..members {
        let gap = 2.0 + m as f64 * gap_step;
        let mut d = m as f64 * 0.3;
        let mut i = 0;
        while d < until + (m % 4) as f64 * until_step {
            let (kind, amount) = if i % 3 == 0 {
                ("purchase", Some(25.0))
            } else {
                ("visit", None)
            };
            let member = format!("m{m}");
            let l = line(&format!("e{m}-{i}"), &member, kind, day(d), amount);
            lines.push((day(d), member, l));
            d += gap;
            i += 1;
        }
    }
    lines.sort_by_key(|l| l.0);
    lines
}

/// Checks, after a commit, that no timer of partition 0 can be missed: every
/// stored member with a due time has a key in the store's timer index at or
/// before it, and either that key is beyond the horizon (to be read) or an
/// entry at or before it is in memory; no key is left at or before the
/// clock (each was taken when the clock got there); and the index's marker
/// counts the members with a timer. Returns that count.
fn assert_no_timer_can_be_missed(e: &Engine<Arc<MemoryStore>>, store: &MemoryStore) -> usize {
    let members = partition_0(store, Table::Members);
    let keys: Vec<(i64, String)> = store
        .scan(
            Table::Timers,
            &partition_prefix(0),
            &timers_marker_key(0),
            usize::MAX,
        )
        .unwrap()
        .iter()
        .map(|(k, _)| {
            let (_, due, id) = split_timer_key(k).unwrap();
            (due, id.to_string())
        })
        .collect();
    let part = &e.parts[&0];
    let horizon = part.timers.read_after();
    let beyond = |due: i64, id: &str| horizon.is_none_or(|h| (due, id) > h);
    let mut with_timer = 0;
    for (k, v) in &members {
        let (_, id) = split_member_key(k).unwrap();
        let due = MemberState::decode(v).unwrap().timer_due_ms;
        if due == NEVER {
            continue;
        }
        with_timer += 1;
        let key = keys.iter().find(|(k, m)| m == id && *k <= due);
        assert!(key.is_some(), "{id} due at {due} has no key: {keys:?}");
        let found = keys
            .iter()
            .any(|(k, m)| m == id && *k <= due && beyond(*k, m))
            || part.timers.entries().any(|(q, m)| m == id && q <= due);
        assert!(found, "{id} due at {due}: key {key:?} read, no entry");
    }
    if let Some(clock) = e.clock_ms(0) {
        let passed: Vec<_> = keys.iter().filter(|(k, _)| *k <= clock).collect();
        assert!(passed.is_empty(), "keys the clock passed: {passed:?}");
    }
    let marker = store.get(Table::Timers, &timers_marker_key(0)).unwrap();
    let count = u64::from_le_bytes(marker.unwrap().try_into().unwrap());
    assert_eq!(count, with_timer as u64);
    assert_eq!(e.timers_pending(), with_timer);
    with_timer
}

/// Most events move a member's due time later and keep the timer entry
/// or key it had (it finds the later time when it comes due). With a cache
/// of one member (each read back from the store) and stored timers read
/// two at a time, no timer can be missed after any commit, and the alerts
/// are those of a cache that holds everyone; so are those of a cache that
/// holds most members packed and unpacks them as they come back.
#[test]
fn a_member_read_again_finds_its_timer_in_the_store() {
    let lines = paced_members(0.7, 60.0, 15.0);
    let run = |cache_bytes: usize, chunk: usize, check: bool| {
        let store = Arc::new(MemoryStore::new());
        let mut cfg = EngineConfig::default();
        cfg.alerts.holdout_share = 0.0;
        cfg.member_cache_bytes = cache_bytes;
        cfg.timer_read_chunk = chunk;
        let mut e = Engine::new(store.clone(), cfg, Arc::new(Metrics::new())).unwrap();
        let (mut ids, mut packed) = (Vec::new(), 0);
        for (i, (_, _, l)) in lines.iter().enumerate() {
            e.process(0, l, WALL).unwrap();
            if (i + 1) % 7 == 0 {
                ids.extend(e.take_alerts().into_iter().map(|a| a.alert.alert_id));
                e.commit(Batch::default()).unwrap();
                packed = packed.max(e.member_cache().packed);
                if check {
                    assert_no_timer_can_be_missed(&e, &store);
                }
            }
        }
        e.advance_clock_to(day(300.0)).unwrap();
        ids.extend(e.take_alerts().into_iter().map(|a| a.alert.alert_id));
        (ids, packed)
    };
    let (one, _) = run(1, TIMER_READ_CHUNK, true);
    assert!(one.len() >= 12, "expected alerts, got {}", one.len());
    assert_eq!(one, run(64 << 20, TIMER_READ_CHUNK, false).0);
    assert_eq!(one, run(1, 2, true).0);
    let (mixed, packed) = run(4 << 10, TIMER_READ_CHUNK, true);
    assert!(packed > 0, "nothing was packed");
    assert_eq!(one, mixed);
}

/// A rolling upgrade: a store written in the fixed format (version 2) and
/// taken over by an engine that writes packed records reads as before,
/// and the alerts are those of one run.
#[test]
fn a_store_written_fixed_then_packed_gives_the_alerts_of_one_run() {
    let lines = paced_members(0.7, 60.0, 15.0);
    let with = |format: MemberFormat, store: &Arc<MemoryStore>| {
        let mut cfg = EngineConfig::default();
        cfg.alerts.holdout_share = 0.0;
        cfg.member_format = format;
        let mut e = Engine::new(store.clone(), cfg, Arc::new(Metrics::new())).unwrap();
        e.assign(0).unwrap();
        e
    };
    let versions = |store: &MemoryStore| -> BTreeSet<u8> {
        partition_0(store, Table::Members)
            .iter()
            .map(|(_, v)| v[0])
            .collect()
    };
    let finish = |mut e: Engine<Arc<MemoryStore>>, mut ids: Vec<String>| {
        e.advance_clock_to(day(300.0)).unwrap();
        ids.extend(e.take_alerts().into_iter().map(|a| a.alert.alert_id));
        ids
    };
    let one_store = Arc::new(MemoryStore::new());
    let mut one = with(MemberFormat::Packed, &one_store);
    let mut want = Vec::new();
    for (_, _, l) in &lines {
        one.process(0, l, WALL).unwrap();
        want.extend(one.take_alerts().into_iter().map(|a| a.alert.alert_id));
    }
    let want = finish(one, want);
    assert!(want.len() >= 12, "expected alerts, got {}", want.len());

    let store = Arc::new(MemoryStore::new());
    let (first, rest) = lines.split_at(lines.len() / 2);
    let mut old = with(MemberFormat::Fixed, &store);
    let mut got = Vec::new();
    for (_, _, l) in first {
        old.process(0, l, WALL).unwrap();
        got.extend(old.take_alerts().into_iter().map(|a| a.alert.alert_id));
    }
    old.commit(Batch::default()).unwrap();
    drop(old);
    assert_eq!(versions(&store), BTreeSet::from([2]));
    let mut new = with(MemberFormat::Packed, &store);
    for (_, _, l) in rest {
        new.process(0, l, WALL).unwrap();
        got.extend(new.take_alerts().into_iter().map(|a| a.alert.alert_id));
    }
    new.commit(Batch::default()).unwrap();
    assert!(versions(&store).contains(&3));
    assert_eq!(finish(new, got), want);
}

/// The store's timer index over months of members who come, change their
/// due times (later and earlier), are evicted and come back: after every
/// commit no timer can be missed, the marker counts the timers, and memory
/// holds no more than a read and a commit's worth of entries.
#[test]
fn the_timer_index_keeps_every_timer_findable_in_bounded_memory() {
    let mut lines = paced_members(0.9, 80.0, 25.0);
    // Back after the eviction time, as new members.
    for (i, m) in ["m0", "m5", "m9"].into_iter().enumerate() {
        let ts = day(560.0 + i as f64);
        lines.push((
            ts,
            m.into(),
            line(&format!("back-{m}"), m, "purchase", ts, Some(5.0)),
        ));
    }
    let store = Arc::new(MemoryStore::new());
    let mut cfg = EngineConfig::default();
    cfg.alerts.holdout_share = 0.0;
    cfg.evict_after_ms = Some(365 * DAY_MS);
    cfg.member_cache_bytes = 1;
    cfg.timer_read_chunk = 2;
    let mut e = Engine::new(store.clone(), cfg, Arc::new(Metrics::new())).unwrap();
    let (mut most, mut evicted) = (0, 0);
    for (i, (_, _, l)) in lines.iter().enumerate() {
        while e.process(0, l, WALL).unwrap() == Outcome::Deferred {
            e.commit(Batch::default()).unwrap();
        }
        if (i + 1) % 5 == 0 {
            evicted += commit_changes(&mut e)
                .iter()
                .filter(|c| c.starts_with('-'))
                .count();
            most = most.max(assert_no_timer_can_be_missed(&e, &store));
            // A read's worth and the members this commit wrote, at most.
            assert!(e.timers_in_memory() <= 2 + 5, "{}", e.timers_in_memory());
        }
    }
    e.commit(Batch::default()).unwrap();
    assert_no_timer_can_be_missed(&e, &store);
    assert_eq!(most, 12, "every member had a timer at some point");
    assert!(evicted >= 3, "{evicted} evicted");
}

/// A partition whose members were written by something else (a restore, a
/// bootstrap, an older build) has no index marker: taking it rebuilds the
/// index from the member records, and its timers fire.
#[test]
fn taking_a_partition_without_its_timer_index_rebuilds_it_from_the_members() {
    let store = Arc::new(MemoryStore::new());
    let want = {
        let mut e = engine(store.clone());
        for m in 0..6 {
            weekly_buyer(&mut e, &format!("m{m}"), 5);
        }
        e.commit(Batch::default()).unwrap();
        let want = e.timers_pending();
        e.advance_clock_to(day(80.0)).unwrap();
        (want, signals(&e.take_alerts()).len())
    };
    assert_eq!(want.0, 6);
    assert!(want.1 >= 6, "{want:?}");
    // What a restore leaves: members, no index (and a stray key of it).
    let mut b = Batch::default();
    for k in timer_index_keys(&store).into_iter().skip(1) {
        b.delete(Table::Timers, k);
    }
    store.write(b).unwrap();
    let mut e = engine(store.clone());
    e.assign(0).unwrap();
    assert_eq!(e.timers_pending(), want.0);
    e.advance_clock_to(day(80.0)).unwrap();
    assert_eq!(signals(&e.take_alerts()).len(), want.1);
}

#[test]
fn a_timer_index_rebuild_the_store_refuses_leaves_nothing_behind_and_can_be_done_again() {
    use crate::state::faulty::FaultyStore;
    let store = Arc::new(FaultyStore::new(MemoryStore::new()));
    let mut cfg = EngineConfig::default();
    cfg.alerts.holdout_share = 0.0;
    let fresh = || Engine::new(store.clone(), cfg.clone(), Arc::new(Metrics::new())).unwrap();
    let want = {
        let mut e = fresh();
        for m in 0..6 {
            weekly_buyer(&mut e, &format!("m{m}"), 5);
        }
        e.commit(Batch::default()).unwrap();
        let mut probe = fresh();
        probe.assign(0).unwrap();
        probe.advance_clock_to(day(80.0)).unwrap();
        signals(&probe.take_alerts()).len()
    };
    assert!(want >= 6, "{want}");
    // What a restore leaves: members and no index; and one record that
    // does not decode.
    let mut b = Batch::default();
    for k in timer_index_keys(&store) {
        b.delete(Table::Timers, k);
    }
    b.put(
        Table::Members,
        crate::state::keys::member_key(0, "bad"),
        b"not a member",
    );
    store.write(b).unwrap();

    // The disk is full while the partition is taken: its rebuild fails.
    store.fail_writes(true);
    let mut e = fresh();
    assert!(matches!(e.assign(0), Err(EngineError::Store(_))));
    assert!(e.take_quarantined().is_empty());
    assert_eq!(e.timers_pending(), 0);
    // Space again: taken again, rebuilt in full, the bad record set aside
    // once, and every timer fires as if nothing had happened.
    store.fail_writes(false);
    e.commit(Batch::default()).unwrap();
    e.assign(0).unwrap();
    assert_eq!(e.take_quarantined().len(), 1);
    assert_eq!(e.timers_pending(), 6);
    e.advance_clock_to(day(80.0)).unwrap();
    assert_eq!(signals(&e.take_alerts()).len(), want);
}

/// A store that counts the member reads made one key at a time.
struct CountingStore {
    inner: MemoryStore,
    gets: std::sync::atomic::AtomicUsize,
}

impl crate::state::Store for CountingStore {
    fn get(&self, table: Table, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        if table == Table::Members {
            self.gets.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        }
        self.inner.get(table, key)
    }
    fn multi_get(
        &self,
        table: Table,
        keys: &[Vec<u8>],
    ) -> Result<Vec<Option<Vec<u8>>>, StoreError> {
        self.inner.multi_get(table, keys)
    }
    fn scan(
        &self,
        table: Table,
        from: &[u8],
        to: &[u8],
        limit: usize,
    ) -> Result<crate::state::KeyValues, StoreError> {
        self.inner.scan(table, from, to, limit)
    }
    fn write(&self, batch: Batch) -> Result<(), StoreError> {
        self.inner.write(batch)
    }
}

/// Runs `lines` through an engine with a one-byte member cache (every
/// member leaves it at every commit and comes back from the store), in
/// batches of `batch` events, each read ahead first if `read_ahead`; returns
/// the alert ids and how many members were read one key at a time.
fn run_counting_reads(
    lines: &[(i64, String, Vec<u8>)],
    batch: usize,
    mut cfg: EngineConfig,
    read_ahead: bool,
) -> (Vec<String>, usize) {
    let store = Arc::new(CountingStore {
        inner: MemoryStore::new(),
        gets: Default::default(),
    });
    cfg.alerts.holdout_share = 0.0;
    cfg.member_cache_bytes = 1;
    let mut e = Engine::new(store.clone(), cfg, Arc::new(Metrics::new())).unwrap();
    e.assign(0).unwrap();
    let mut ids = Vec::new();
    for batch in lines.chunks(batch) {
        if read_ahead {
            let mut plan = e.read_ahead_plan();
            for (ts, member, _) in batch {
                plan.add(0, member, *ts);
            }
            e.read_ahead(plan).unwrap();
        }
        for (_, _, l) in batch {
            while e.process(0, l, WALL).unwrap() == Outcome::Deferred {
                e.commit(Batch::default()).unwrap();
            }
        }
        ids.extend(e.take_alerts().into_iter().map(|a| a.alert.alert_id));
        e.commit(Batch::default()).unwrap();
    }
    (ids, store.gets.load(std::sync::atomic::Ordering::SeqCst))
}

/// Runs `lines` with and without read-ahead ([`run_counting_reads`]): the
/// same alerts (at least `min_alerts`), more than `min_plain_reads` single
/// reads without it, none with it.
fn assert_read_ahead_reads_no_member_alone(
    lines: &[(i64, String, Vec<u8>)],
    batch: usize,
    cfg: EngineConfig,
    min_alerts: usize,
    min_plain_reads: usize,
) {
    let (ahead, single_reads) = run_counting_reads(lines, batch, cfg.clone(), true);
    let (plain, plain_reads) = run_counting_reads(lines, batch, cfg, false);
    assert!(
        ahead.len() >= min_alerts,
        "expected alerts, got {}",
        ahead.len()
    );
    assert_eq!(ahead, plain);
    assert!(
        plain_reads > min_plain_reads,
        "{plain_reads} reads without read-ahead"
    );
    assert_eq!(
        single_reads, 0,
        "members read one at a time despite the read-ahead"
    );
}

#[test]
fn a_batch_read_ahead_finds_its_members_and_its_due_timers_without_single_reads() {
    // Twelve members buying and visiting at their own pace for months, in
    // batches of seven events; a one-byte cache, so every member leaves it
    // at every commit and comes back from the store.
    let mut lines = paced_members(0.9, 50.0, 20.0);
    // Late on, one more member: the clock jumps, and every timer left fires.
    let z = line("z-0", "z", "visit", day(300.0), None);
    lines.push((day(300.0), "z".to_string(), z));
    assert_read_ahead_reads_no_member_alone(&lines, 7, EngineConfig::default(), 12, 100);
}

#[test]
fn read_ahead_stays_on_while_the_members_it_reads_would_miss() {
    // Thousands of lookups, every one of a member the one-byte cache let
    // go at the last commit: read ahead, each lookup hits, yet every
    // member read counts as a miss, so no batch goes without a read-ahead
    // (counted as hits, they switched it off after a few thousand lookups,
    // and the next batch read its members one at a time: 10 reads here).
    // And with a commit's timer limit of 2, more entries come due than may
    // fire, early ones among them (members who moved their timer on since,
    // which do not count towards the limit): the read-ahead reads those
    // members too (reading only up to the limit left 79 single reads).
    let lines = paced(20, 0.02, 400.0, 10.0);
    assert!(lines.len() > 3000, "{} events", lines.len());
    let mut cfg = EngineConfig::default();
    cfg.clock.max_timers_per_commit = 2;
    assert_read_ahead_reads_no_member_alone(&lines, 5, cfg, 10, 3000);
}

#[test]
fn a_read_ahead_counts_its_members_as_misses() {
    let mut rate = MissRate::default();
    for _ in 0..100_000 {
        rate.looked_up(true);
    }
    assert!(!rate.reads_ahead(), "every lookup hit: no read-ahead");
    // From now on a tenth of the members would miss, and a read-ahead
    // reads them first: every lookup hits, yet once the estimate has
    // followed the change, the read-ahead stays on.
    for batch in 0..100 {
        rate.read_ahead(100);
        for _ in 0..1000 {
            rate.looked_up(true);
        }
        assert!(rate.reads_ahead() || batch < 10, "off after batch {batch}");
    }
    // Lookups missing on their own count too.
    let mut rate = MissRate::default();
    for i in 0..100_000 {
        rate.looked_up(i % 50 != 0);
    }
    assert!(rate.reads_ahead(), "1 miss in 50");
}

#[test]
fn stage_change_fires_on_a_quiet_stream() {
    let store = Arc::new(MemoryStore::new());
    let mut e = engine(store);
    e.process(0, &line("p1", "m1", "purchase", day(0.0), Some(5.0)), WALL)
        .unwrap();
    e.advance_clock_to(day(200.0)).unwrap();
    let alerts = e.take_alerts();
    assert_eq!(signals(&alerts), ["stage_change", "stage_change"]);
    let to = |a: &RaisedAlert| match a.alert.evidence.get("to") {
        Some(crate::detect::EvidenceValue::Text(t)) => t.clone(),
        _ => String::new(),
    };
    assert_eq!(
        (to(&alerts[0]).as_str(), to(&alerts[1]).as_str()),
        ("silent", "churned")
    );
    assert_eq!(alerts[1].alert.severity, Severity::Critical);
    assert!(alerts[1].alert.risk_score >= 85.0);
}

#[test]
fn low_p_alive_opens_a_purchase_gap_episode_from_the_timer_before_the_gap_rule() {
    let mut cfg = EngineConfig::default();
    cfg.alerts.holdout_share = 0.0;
    // For this weekly buyer P(alive) (Pareto/NBD) is 1 on the day of a
    // purchase and reaches 0.907 when the gap rule fires (day 42): a
    // threshold of 0.93 lets P(alive) speak first, on day 39.
    cfg.detect.purchase_gap.p_alive_below = 0.93;
    let model = cfg.risk.clone();
    let mut e = Engine::new(Arc::new(MemoryStore::new()), cfg, Arc::new(Metrics::new())).unwrap();
    weekly_buyer(&mut e, "m1", 5);
    e.commit(Batch::default()).unwrap();
    let bytes = e
        .store()
        .get(Table::Members, &crate::state::keys::member_key(0, "m1"))
        .unwrap()
        .unwrap();
    let m = MemberState::decode(&bytes).unwrap();
    let due = crate::risk::p_alive_falls_to_ms(&m, &model, 0.93).unwrap();
    assert!(
        due > day(28.0) && due < day(42.0),
        "due day {}",
        due / DAY_MS
    );
    assert!(e.advance_clock_to(due - 1).unwrap());
    assert!(e.take_alerts().is_empty());
    e.advance_clock_to(due + 1).unwrap();
    let alerts = e.take_alerts();
    assert_eq!(signals(&alerts), ["purchase_gap"]);
    let ev = &alerts[0].alert.evidence;
    assert_eq!(
        ev.get("trigger"),
        Some(&crate::detect::EvidenceValue::Text("p_alive".into()))
    );
    assert!(ev.get_num("p_alive").unwrap() <= 0.93, "{ev:?}");
    assert_eq!(ev.get_num("p_alive_threshold"), Some(0.93));
    // The gap rule later finds the episode already open: no second alert.
    e.advance_clock_to(day(60.0)).unwrap();
    assert!(e.take_alerts().is_empty());
}

#[test]
fn a_partition_s_timers_follow_its_own_clock_and_no_other() {
    let store = Arc::new(MemoryStore::new());
    {
        // Partition 1's state, as another instance left it on day 28.
        let mut e = engine(store.clone());
        e.assign(1).unwrap();
        for i in 0..5 {
            let l = line(
                &format!("p{i}"),
                "m1",
                "purchase",
                day(i as f64 * 7.0),
                Some(20.0),
            );
            e.process(1, &l, WALL).unwrap();
        }
        e.commit(Batch::default()).unwrap();
    }
    let mut e = engine(store.clone());
    e.assign(0).unwrap();
    e.assign(1).unwrap();
    // Partition 0 races ahead to day 60: partition 1's purchase gap (due
    // day 42) waits for partition 1's own backlog.
    let l = line("x0", "other", "visit", day(60.0), None);
    e.process(0, &l, WALL).unwrap();
    assert_eq!(e.clock_ms(0), Some(day(60.0) - 3_600_000));
    assert_eq!(e.clock_ms(1), Some(day(28.0) - 3_600_000));
    assert!(e.take_alerts().is_empty());
    let l = line("p5", "m1", "purchase", day(35.0), Some(20.0));
    e.process(1, &l, WALL).unwrap();
    assert!(e.take_alerts().is_empty(), "the backlog cancelled the gap");
    // Partition 1's own clock passing the new due time (day 49) fires it.
    let l = line("y0", "other1", "visit", day(50.0), None);
    e.process(1, &l, WALL).unwrap();
    assert_eq!(signals(&e.take_alerts()), ["purchase_gap"]);
}

#[test]
fn a_partition_that_has_not_delivered_holds_nothing_back() {
    let mut e = engine(Arc::new(MemoryStore::new()));
    e.assign(0).unwrap();
    e.assign(1).unwrap();
    weekly_buyer(&mut e, "m1", 5);
    assert_eq!(e.clock_ms(1), None);
    let l = line("v", "m1", "visit", day(43.0), None);
    e.process(0, &l, WALL).unwrap();
    assert_eq!(signals(&e.take_alerts()), ["purchase_gap"]);
}

#[test]
fn a_due_timer_fires_before_the_event_that_moves_the_clock_past_it() {
    let mut e = engine(Arc::new(MemoryStore::new()));
    weekly_buyer(&mut e, "m1", 5);
    // Another member's event on day 50 passes m1's gap (due day 42): the gap
    // alert comes first and is raised with the clock of day 42.
    let l = line("o", "m2", "purchase", day(50.0), Some(5.0));
    e.process(0, &l, WALL).unwrap();
    let alerts = e.take_alerts();
    assert_eq!(signals(&alerts), ["purchase_gap"]);
    assert_eq!(alerts[0].alert.detected_ms, day(42.0));
}

#[test]
fn a_partition_restored_without_a_clock_starts_from_its_high_mark() {
    let store = Arc::new(MemoryStore::new());
    {
        let mut e = engine(store.clone());
        weekly_buyer(&mut e, "m1", 5);
        e.commit(Batch::default()).unwrap();
    }
    // State as an older build's restore left it: a high mark, no clock.
    store
        .write({
            let mut b = Batch::default();
            b.delete(Table::Meta, meta_key(0, META_CLOCK));
            b
        })
        .unwrap();
    let mut e = engine(store);
    e.assign(0).unwrap();
    assert_eq!(e.clock_ms(0), Some(day(28.0) - 3_600_000));
}

fn evicting_engine(store: Arc<MemoryStore>) -> Engine<Arc<MemoryStore>> {
    let mut cfg = EngineConfig::default();
    cfg.alerts.holdout_share = 0.0;
    cfg.evict_after_ms = Some(365 * 86_400_000);
    Engine::new(store, cfg, Arc::new(Metrics::new())).unwrap()
}

/// Commits, returning what the commit reported: `+id` written, `-id` deleted.
fn commit_changes(e: &mut Engine<Arc<MemoryStore>>) -> Vec<String> {
    let mut changes = Vec::new();
    e.commit_with(Batch::default(), |c, _| match c {
        Change::Member { member_id, .. } => changes.push(format!("+{member_id}")),
        Change::MemberDeleted { member_id, .. } => changes.push(format!("-{member_id}")),
        Change::PartitionDone { .. } => {}
    })
    .unwrap();
    changes
}

#[test]
fn evicts_a_silent_member_after_its_last_alert_and_reports_the_deletion() {
    let store = Arc::new(MemoryStore::new());
    let mut e = evicting_engine(store.clone());
    e.process(0, &line("p1", "m1", "purchase", day(0.0), Some(5.0)), WALL)
        .unwrap();
    assert_eq!(commit_changes(&mut e), ["+m1"]);

    // The stage changes (silent at 90 days, churned at 180) still fire.
    e.advance_clock_to(day(364.0)).unwrap();
    assert_eq!(signals(&e.take_alerts()), ["stage_change", "stage_change"]);
    assert_eq!(commit_changes(&mut e), ["+m1"]);
    assert!(e.member(0, "m1").unwrap().is_some());

    e.advance_clock_to(day(366.0)).unwrap();
    assert!(e.take_alerts().is_empty());
    assert_eq!(e.member(0, "m1").unwrap(), None);
    assert_eq!(commit_changes(&mut e), ["-m1"]);
    assert_eq!(
        store.get(Table::Members, &member_key(0, "m1")).unwrap(),
        None
    );
    assert_eq!(e.metrics().members_evicted.get(), 1);

    // Nothing is left to fire for the member.
    let fired = e.stats().timers_fired;
    assert!(e.advance_clock_to(day(2000.0)).unwrap());
    assert_eq!(e.stats().timers_fired, fired);
    assert!(commit_changes(&mut e).is_empty());
}

#[test]
fn a_member_back_after_the_eviction_time_starts_as_a_new_member() {
    let store = Arc::new(MemoryStore::new());
    let mut e = evicting_engine(store.clone());
    for m in ["early", "late"] {
        e.process(
            0,
            &line(&format!("{m}-1"), m, "purchase", day(0.0), Some(5.0)),
            WALL,
        )
        .unwrap();
    }
    e.advance_clock_to(day(200.0)).unwrap();
    e.take_alerts();
    commit_changes(&mut e);

    // `early` returns before its eviction timer has been fired by the clock:
    // the timer fires first, as for any timer due before the member's event.
    e.process(
        0,
        &line("early-2", "early", "purchase", day(400.0), Some(9.0)),
        WALL,
    )
    .unwrap();
    // `late` is evicted by the clock and returns within the same commit.
    e.advance_clock_to(day(366.0)).unwrap();
    e.process(0, &line("late-2", "late", "visit", day(401.0), None), WALL)
        .unwrap();
    assert!(e.take_alerts().is_empty(), "a new member has no history");
    let mut changes = commit_changes(&mut e);
    changes.sort();
    assert_eq!(changes, ["+early", "+late"]);
    for (m, at) in [("early", 400.0), ("late", 401.0)] {
        let s = e.member(0, m).unwrap().unwrap();
        assert_eq!(s.first_seen_ms, day(at), "{m}");
        assert_eq!(s.purchase_count, u32::from(m == "early"), "{m}");
    }
    assert_eq!(e.metrics().members_evicted.get(), 2);
}

#[test]
fn members_are_kept_forever_without_an_eviction_time() {
    let store = Arc::new(MemoryStore::new());
    let mut e = engine(store);
    e.process(0, &line("p1", "m1", "purchase", day(0.0), Some(5.0)), WALL)
        .unwrap();
    e.advance_clock_to(day(5000.0)).unwrap();
    commit_changes(&mut e);
    assert!(e.member(0, "m1").unwrap().is_some());
    assert_eq!(e.metrics().members_evicted.get(), 0);
}

#[test]
fn a_member_active_in_every_way_is_still_evicted_once_silent() {
    let store = Arc::new(MemoryStore::new());
    let mut e = evicting_engine(store);
    for d in 0..120 {
        let ts = day(d as f64);
        let mut ev = |kind: &str, amount: Option<f64>| {
            e.process(
                0,
                &line(&format!("{kind}-{d}"), "busy", kind, ts, amount),
                WALL,
            )
            .unwrap();
        };
        ev("check_in", None);
        if d % 3 == 0 {
            ev("visit", None);
            ev("email_send", None);
            ev("email_open", None);
        }
        if d % 7 == 0 {
            ev("purchase", Some(30.0));
        }
    }
    commit_changes(&mut e);
    // Every detector gets its say first (the member cools in every way).
    e.advance_clock_to(day(119.0 + 364.0)).unwrap();
    assert!(e.take_alerts().len() >= 4);
    assert!(e.member(0, "busy").unwrap().is_some());
    e.advance_clock_to(day(119.0 + 366.0)).unwrap();
    assert_eq!(e.member(0, "busy").unwrap(), None);
    assert_eq!(commit_changes(&mut e), ["-busy"]);
}

#[test]
fn an_undecodable_member_value_is_quarantined_and_the_member_starts_afresh() {
    let store = Arc::new(MemoryStore::new());
    {
        let mut e = engine(store.clone());
        weekly_buyer(&mut e, "m1", 5);
        weekly_buyer(&mut e, "m2", 5);
        e.commit(Batch::default()).unwrap();
    }
    let key = crate::state::keys::member_key(0, "m1");
    let mut b = Batch::default();
    b.put(Table::Members, key.clone(), vec![0xff, 1, 2, 3]);
    store.write(b).unwrap();

    let mut e = engine(store.clone());
    let l = line("late", "m1", "visit", day(30.0), None);
    assert_eq!(e.process(0, &l, WALL).unwrap(), Outcome::Accepted);
    let q = e.take_quarantined();
    assert_eq!(q.len(), 1);
    assert_eq!(q[0].kind, crate::state::quarantine::Kind::Member);
    assert_eq!(q[0].value, vec![0xff, 1, 2, 3]);
    assert!(e.take_quarantined().is_empty(), "reported once");
    e.commit(Batch::default()).unwrap();
    // Set aside with its reason; the member is new; m2 is untouched.
    let listed = crate::state::quarantine::list(&*store).unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].key, key.as_slice());
    let m1 = e.member(0, "m1").unwrap().unwrap();
    assert_eq!(m1.purchase_count, 0);
    assert_eq!(e.member(0, "m2").unwrap().unwrap().purchase_count, 5);
    // m2's timers still fire.
    e.advance_clock_to(day(50.0)).unwrap();
    assert!(signals(&e.take_alerts()).contains(&"purchase_gap"));
}

#[test]
fn a_corrupt_member_reached_by_its_timer_is_quarantined_and_deleted() {
    let store = Arc::new(MemoryStore::new());
    {
        let mut e = engine(store.clone());
        weekly_buyer(&mut e, "m1", 5);
        weekly_buyer(&mut e, "m2", 5);
        e.commit(Batch::default()).unwrap();
    }
    let mut b = Batch::default();
    b.put(
        Table::Members,
        crate::state::keys::member_key(0, "m1"),
        b"garbage",
    );
    // And a timer key that does not even split.
    b.put(Table::Timers, vec![0, 0, 0, 0, 1, 2], Vec::new());
    store.write(b).unwrap();
    let mut e = engine(store.clone());
    e.assign(0).unwrap();
    e.advance_clock_to(day(50.0)).unwrap();
    // m2's gap fires; m1 is set aside, not fired, not fatal.
    let alerts = e.take_alerts();
    assert_eq!(alerts.len(), 1);
    assert_eq!(alerts[0].alert.member_id, "m2");
    let kinds: Vec<_> = e.take_quarantined().iter().map(|q| q.kind).collect();
    assert!(
        kinds.contains(&crate::state::quarantine::Kind::Member),
        "{kinds:?}"
    );
    assert!(
        kinds.contains(&crate::state::quarantine::Kind::Timer),
        "{kinds:?}"
    );
    e.commit(Batch::default()).unwrap();
    assert!(e.member(0, "m1").unwrap().is_none());
    assert_eq!(crate::state::quarantine::list(&*store).unwrap().len(), 2);
}

#[test]
fn a_long_clock_jump_fires_its_timers_in_bounded_chunks_with_the_same_alerts() {
    let run = |limit: usize| {
        let mut cfg = EngineConfig::default();
        cfg.alerts.holdout_share = 0.0;
        cfg.clock.max_timers_per_commit = limit;
        let mut e =
            Engine::new(Arc::new(MemoryStore::new()), cfg, Arc::new(Metrics::new())).unwrap();
        for m in 0..30 {
            weekly_buyer(&mut e, &format!("m{m:02}"), 5);
        }
        e.commit(Batch::default()).unwrap();
        let mut alerts = Vec::new();
        let mut commits = 0;
        // An idle advance far past everyone's purchase gap and stage changes.
        while !e.advance_clock_to(day(400.0)).unwrap() {
            alerts.extend(e.take_alerts());
            e.commit(Batch::default()).unwrap();
            commits += 1;
        }
        // And an event whose clock passes a new round of due timers.
        let l = line("late", "m00", "purchase", day(401.0), Some(9.0));
        loop {
            match e.process(0, &l, WALL).unwrap() {
                Outcome::Deferred => {
                    alerts.extend(e.take_alerts());
                    e.commit(Batch::default()).unwrap();
                    commits += 1;
                }
                o => {
                    assert_eq!(o, Outcome::Accepted);
                    break;
                }
            }
        }
        alerts.extend(e.take_alerts());
        (alerts, commits)
    };
    let (all, none) = run(usize::MAX);
    let (chunked, commits) = run(7);
    assert_eq!(none, 0);
    assert!(all.len() >= 90, "{} alerts", all.len());
    // 30 members x 3 timers (gap, silent, churned) in chunks of 7.
    assert!(commits >= 12, "{commits} commits");
    assert_eq!(chunked, all);
}

#[test]
fn a_refused_commit_is_kept_and_written_first_once_the_store_takes_writes() {
    use crate::state::faulty::FaultyStore;
    let lines: Vec<Vec<u8>> = (0..40)
        .map(|i| {
            line(
                &format!("p{i}"),
                &format!("m{}", i % 4),
                "purchase",
                day(i as f64 * 2.0),
                Some(10.0),
            )
        })
        .collect();
    let run = || {
        let store = Arc::new(MemoryStore::new());
        let mut e = engine_on(store.clone());
        let mut alerts = Vec::new();
        for l in &lines {
            e.process(0, l, WALL).unwrap();
            alerts.extend(e.take_alerts());
            e.commit(Batch::default()).unwrap();
        }
        e.advance_clock_to(day(200.0)).unwrap();
        alerts.extend(e.take_alerts());
        e.commit(Batch::default()).unwrap();
        let m0 = store.get(Table::Members, &member_key(0, "m0")).unwrap();
        (alerts, m0)
    };
    let (want, want_m0) = run();
    // Commits refused for events 10 to 13: the events they carried must
    // not be lost, nor their order changed.
    let store = Arc::new(FaultyStore::new(MemoryStore::new()));
    let mut e = engine_on(store.clone());
    let mut alerts = Vec::new();
    for (i, l) in lines.iter().enumerate() {
        e.process(0, l, WALL).unwrap();
        alerts.extend(e.take_alerts());
        store.fail_writes((10..14).contains(&i));
        if e.commit(Batch::default()).is_err() {
            // The pipeline holds its input here and retries with back-off.
            for _ in 0..3 {
                assert!(e.commit(Batch::default()).is_err());
            }
            store.fail_writes(false);
            e.commit(Batch::default()).unwrap();
        }
    }
    e.advance_clock_to(day(200.0)).unwrap();
    alerts.extend(e.take_alerts());
    e.commit(Batch::default()).unwrap();
    assert!(store.refused() >= 4);
    assert_eq!(alerts, want);
    assert_eq!(
        store
            .inner()
            .get(Table::Members, &member_key(0, "m0"))
            .unwrap(),
        want_m0
    );
}

fn engine_on<S: Store>(store: S) -> Engine<S> {
    let mut cfg = EngineConfig::default();
    cfg.alerts.holdout_share = 0.0;
    Engine::new(store, cfg, Arc::new(Metrics::new())).unwrap()
}

/// An engine writing behind over a store whose writes can be held back.
fn behind(
    store: &Arc<crate::state::faulty::FaultyStore<MemoryStore>>,
    cache_bytes: usize,
) -> Engine<Arc<crate::state::faulty::FaultyStore<MemoryStore>>> {
    let mut cfg = EngineConfig::default();
    cfg.alerts.holdout_share = 0.0;
    cfg.member_cache_bytes = cache_bytes;
    let mut e = Engine::new(store.clone(), cfg, Arc::new(Metrics::new())).unwrap();
    e.assign(0).unwrap();
    e.write_behind();
    e
}

/// Releases held writes after `ms`, from another thread (the engine may
/// wait for them meanwhile).
fn release_after(store: &Arc<crate::state::faulty::FaultyStore<MemoryStore>>, ms: u64) {
    let store = store.clone();
    std::thread::spawn(move || {
        std::thread::sleep(std::time::Duration::from_millis(ms));
        store.hold_writes(false);
    });
}

#[test]
fn a_member_whose_write_is_in_flight_stays_cached_even_over_budget() {
    let store = Arc::new(crate::state::faulty::FaultyStore::new(MemoryStore::new()));
    // A cache that holds nothing clean: every member leaves at the trim
    // once its write has landed.
    let mut e = behind(&store, 1);
    let purchase = |i: usize, d: f64| line(&format!("m-p{i}"), "m", "purchase", day(d), Some(20.0));
    weekly_buyer(&mut e, "m", 3);
    e.commit(Batch::default()).unwrap();
    e.flush().unwrap();
    // Reads the member's timer key (due after day 16): the clock of the
    // events below stays short of it, so nothing reads the index again.
    assert_eq!(
        e.process(0, &purchase(3, 15.0), WALL).unwrap(),
        Outcome::Accepted
    );
    store.hold_writes(true);
    // Had the engine waited for the held write, the test fails below
    // rather than hanging.
    release_after(&store, 10_000);
    e.commit(Batch::default()).unwrap();
    let stored = |store: &crate::state::faulty::FaultyStore<MemoryStore>| {
        let v = store
            .inner()
            .get(Table::Members, &member_key(0, "m"))
            .unwrap();
        MemberState::decode(&v.unwrap()).unwrap().purchase_count
    };
    // The write has not landed: the store has the member as it was before.
    assert_eq!(stored(&store), 3);
    // Its next event finds it as the commit wrote it, not as the store has it.
    assert_eq!(
        e.process(0, &purchase(4, 16.0), WALL).unwrap(),
        Outcome::Accepted
    );
    assert_eq!(e.member(0, "m").unwrap().unwrap().purchase_count, 5);
    assert_eq!(stored(&store), 3, "the write is still held");
    store.hold_writes(false);
    e.commit(Batch::default()).unwrap();
    e.flush().unwrap();
    assert_eq!(stored(&store), 5);
}

#[test]
fn a_timer_whose_key_only_the_write_in_flight_holds_fires_without_waiting_for_it() {
    let store = Arc::new(crate::state::faulty::FaultyStore::new(MemoryStore::new()));
    let mut e = behind(&store, 1 << 20);
    weekly_buyer(&mut e, "m1", 5);
    let keys = |store: &crate::state::faulty::FaultyStore<MemoryStore>| {
        timer_index_keys(store.inner())
            .iter()
            .filter(|k| **k != timers_marker_key(0))
            .count()
    };
    store.hold_writes(true);
    // Had the engine waited for the held write, the test fails below
    // rather than hanging.
    release_after(&store, 10_000);
    // A commit lets go of the timer in memory (its key is in the write);
    // written behind, the queue keeps it aside until the write lands.
    e.commit(Batch::default()).unwrap();
    // Usual gap 7 days, overdue after 14: due on day 42. The index does
    // not have the key yet.
    assert_eq!(keys(&store), 0);
    e.advance_clock_to(day(43.0)).unwrap();
    assert_eq!(signals(&e.take_alerts()), ["purchase_gap"]);
    assert_eq!(keys(&store), 0, "the write is still held");
    store.hold_writes(false);
    e.commit(Batch::default()).unwrap();
    e.flush().unwrap();
    // Nothing fires twice once the key is in the store (the firing took it).
    e.advance_clock_to(day(80.0)).unwrap();
    assert!(!signals(&e.take_alerts()).contains(&"purchase_gap"));
}

#[test]
fn a_write_refused_behind_is_reported_by_the_next_commit_and_written_again() {
    let store = Arc::new(crate::state::faulty::FaultyStore::new(MemoryStore::new()));
    let mut e = behind(&store, 1);
    weekly_buyer(&mut e, "m1", 5);
    store.fail_writes(true);
    // Handed over: the refusal is not known yet.
    e.commit(Batch::default()).unwrap();
    assert!(matches!(
        e.commit(Batch::default()),
        Err(EngineError::Store(_))
    ));
    assert!(matches!(e.flush(), Err(EngineError::Store(_))));
    store.fail_writes(false);
    // Space again: the refused batch goes first, then what came since.
    weekly_buyer(&mut e, "m2", 5);
    e.commit(Batch::default()).unwrap();
    e.flush().unwrap();
    assert_eq!(stored_purchases(store.inner(), &["m1", "m2"]), [5, 5]);
    // And the timers of both fire from the index.
    e.advance_clock_to(day(43.0)).unwrap();
    assert_eq!(signals(&e.take_alerts()), ["purchase_gap", "purchase_gap"]);
}

/// How many purchases the store holds for each of `members` (partition 0).
fn stored_purchases(store: &MemoryStore, members: &[&str]) -> Vec<u32> {
    members
        .iter()
        .map(|m| {
            let stored = store.get(Table::Members, &member_key(0, m)).unwrap();
            MemberState::decode(&stored.expect("stored"))
                .unwrap()
                .purchase_count
        })
        .collect()
}

#[test]
fn a_write_refused_behind_is_written_again_with_the_next_commit_and_its_own_writes() {
    let store = Arc::new(crate::state::faulty::FaultyStore::new(MemoryStore::new()));
    let mut e = behind(&store, 1);
    weekly_buyer(&mut e, "m1", 5);
    store.fail_writes(true);
    e.commit(Batch::default()).unwrap();
    // Let the writer meet the refusal before the store takes writes again.
    while store.refused() == 0 {
        std::thread::yield_now();
    }
    store.fail_writes(false);
    // The next commit finds the refusal, counts it, and writes the refused
    // batch, then its own changes and the caller's writes, at once.
    weekly_buyer(&mut e, "m2", 5);
    let mut extra = Batch::default();
    extra.put(Table::Meta, b"caller", b"kept");
    e.commit(extra).unwrap();
    assert_eq!(e.metrics().state_write_errors.get(), 1);
    assert!(!e.has_unwritten());
    e.flush().unwrap();
    assert_eq!(
        store.inner().get(Table::Meta, b"caller").unwrap(),
        Some(b"kept".to_vec())
    );
    assert_eq!(stored_purchases(store.inner(), &["m1", "m2"]), [5, 5]);
}

#[test]
fn the_shared_counters_get_an_engines_counts_once_a_commit() {
    let store = Arc::new(MemoryStore::new());
    let mut e = engine(store);
    let m = e.metrics().clone();
    for (id, member, kind) in [
        ("e1", "m1", "purchase"),
        ("e2", "m1", "visit"),
        ("e2", "m1", "visit"),
        ("e3", "m2", "visit"),
    ] {
        e.process(0, &line(id, member, kind, day(1.0), Some(5.0)), WALL)
            .unwrap();
    }
    // Nothing on the shared counters between commits: every engine thread
    // adding there once an event would contend for them.
    assert_eq!(m.consumed_total(), 0);
    e.commit(Batch::default()).unwrap();
    assert_eq!(m.consumed(EventKind::Visit).get(), 2);
    assert_eq!(m.consumed(EventKind::Purchase).get(), 1);
    assert_eq!(m.events_duplicate.get(), 1);
    assert_eq!(m.members_tracked.get(), 2);
    // Counted once: a commit with nothing new adds nothing.
    e.commit(Batch::default()).unwrap();
    assert_eq!(m.consumed_total(), 3);
}

#[test]
fn hints_for_members_ahead_change_nothing_even_when_they_name_the_wrong_members() {
    // The same events through two engines, one given hints: the right
    // member one event on, and at the other steps other members, one of
    // them always at the same address (a reused buffer holding a different
    // member each time), which the hints' remembered hashes must not trust.
    let members: Vec<String> = (0..40).map(|i| format!("m{i}")).collect();
    let mut events = Vec::new();
    for week in 0..12 {
        for (i, m) in members.iter().enumerate() {
            if week < 8 || i % 2 == 0 {
                events.push((m.as_str(), week));
            }
        }
    }
    let run = |hints: bool| {
        let mut e = engine(Arc::new(MemoryStore::new()));
        let mut reused = String::with_capacity(8);
        for (k, (m, week)) in events.iter().enumerate() {
            if hints {
                reused.clear();
                reused.push_str(&members[(k * 7) % members.len()]);
                let next = events.get(k + 1).map(|(m, _)| *m);
                let reused = reused.as_str();
                e.prefetch_ahead(|d| match d {
                    1 => next.map(|id| (0, id)),
                    2 => Some((0, reused)),
                    _ => Some((d as u32, "nobody")),
                });
            }
            let l = line(
                &format!("{m}-{week}"),
                m,
                "purchase",
                day(*week as f64 * 7.0),
                Some(20.0),
            );
            assert_eq!(e.process(0, &l, WALL).unwrap(), Outcome::Accepted);
        }
        e.advance_clock_to(day(200.0)).unwrap();
        e.commit(Batch::default()).unwrap();
        e.take_alerts()
            .into_iter()
            .map(|a| a.alert)
            .collect::<Vec<_>>()
    };
    let plain = run(false);
    assert!(plain.len() >= 20, "{} alerts", plain.len());
    assert_eq!(run(true), plain);
}
