//! The time invariant (SPEC §3): a partition's alerts depend only on its
//! sequence of events, never on how they were batched, when commits fell or
//! where the process restarted.

use std::sync::Arc;

use churnwatch::config::Config;
use churnwatch::engine::{Engine, EngineConfig, Outcome, TIMER_READ_CHUNK};
use churnwatch::simulate::{generate, SimEvent, SimOptions};
use churnwatch::state::{Batch, RocksStore};
use churnwatch::telemetry::Metrics;
use proptest::prelude::*;
use rand::{Rng, SeedableRng};

/// A wall clock far after every simulated event: nothing is "in the future".
const WALL: i64 = 4_000_000_000_000;
const END_MS: i64 = 1_767_225_600_000; // 2026-01-01

fn events(seed: u64, members: usize, days: u32, shuffle: f64) -> Vec<SimEvent> {
    let mut ev = generate(&SimOptions {
        members,
        days,
        end_ms: END_MS,
        seed,
        bad_ratio: 0.01,
        duplicate_ratio: 0.02,
    });
    // Out of order, as producers deliver: swap some neighbours a little
    // apart (late events, by up to a few dozen positions).
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed ^ 0x5eed);
    for i in 0..ev.len() {
        if rng.random_bool(shuffle) {
            let j = (i + rng.random_range(1..40)).min(ev.len() - 1);
            ev.swap(i, j);
        }
    }
    ev
}

fn engine_config(evict: bool) -> EngineConfig {
    let mut cfg = Config::default().engine();
    cfg.clock.max_timers_per_commit = usize::MAX;
    if evict {
        cfg.evict_after_ms = Some(200 * 86_400_000);
    }
    cfg
}

/// How commits reach the store.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Commits {
    /// Written on the engine's thread (as `run`'s).
    Sync,
    /// Written behind, on a thread of their own (as `replay`'s).
    Behind,
}

/// Feeds `events` in batches of the given sizes (cycled), committing at the
/// end of each batch and reopening the store after the batches listed in
/// `restarts`; returns every alert, in the order raised.
fn run(
    events: &[SimEvent],
    batches: &[usize],
    restarts: &[usize],
    cfg: &EngineConfig,
    until: i64,
    commits: Commits,
) -> Vec<churnwatch::alert::Alert> {
    let dir = tempfile::tempdir().unwrap();
    let open = || {
        let store = RocksStore::open(dir.path(), &Config::default().state.tuning()).unwrap();
        let mut e = Engine::new(Arc::new(store), cfg.clone(), Arc::new(Metrics::new())).unwrap();
        e.assign(0).unwrap();
        if commits == Commits::Behind {
            e.write_behind();
        }
        e
    };
    let mut e = open();
    let mut alerts = Vec::new();
    let mut at = 0;
    let mut batch_no = 0;
    while at < events.len() {
        let n = batches[batch_no % batches.len()].max(1);
        for ev in &events[at..(at + n).min(events.len())] {
            // More timers due than may fire before a commit: commit, retry.
            while e.process(0, ev.json.as_bytes(), WALL).unwrap() == Outcome::Deferred {
                alerts.extend(e.take_alerts().into_iter().map(|a| a.alert));
                e.commit(Batch::default()).unwrap();
            }
        }
        at += n;
        alerts.extend(e.take_alerts().into_iter().map(|a| a.alert));
        e.commit(Batch::default()).unwrap();
        if restarts.contains(&batch_no) {
            e.flush().unwrap();
            drop(e);
            e = open();
        }
        batch_no += 1;
    }
    while !e.advance_clock_to(until).unwrap() {
        alerts.extend(e.take_alerts().into_iter().map(|a| a.alert));
        e.commit(Batch::default()).unwrap();
    }
    alerts.extend(e.take_alerts().into_iter().map(|a| a.alert));
    e.commit(Batch::default()).unwrap();
    alerts
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: std::env::var("PROPTEST_CASES").ok().and_then(|c| c.parse().ok()).unwrap_or(32),
        max_shrink_iters: 20,
        ..ProptestConfig::default()
    })]

    /// Random journeys, random batch sizes (1 to 10,000), random restart
    /// points over one RocksDB directory, timers fired in chunks of any size
    /// between commits, commits written on the engine thread or behind it:
    /// the same alerts, in the same order, as one event per batch.
    #[test]
    fn alerts_do_not_depend_on_batching_or_restarts(
        seed in any::<u64>(),
        members in 20usize..70,
        days in 120u32..400,
        shuffle in 0.0f64..0.05,
        evict in any::<bool>(),
        batches in prop::collection::vec(
            prop_oneof![1usize..10, 10usize..500, 500usize..10_000], 1..8),
        restarts in prop::collection::vec(0usize..40, 0..5),
        timers_per_commit in prop_oneof![Just(usize::MAX), 1usize..20],
        member_cache in prop_oneof![Just(None), Just(Some(1)), (2_000usize..40_000).prop_map(Some)],
        timer_read_chunk in prop_oneof![Just(TIMER_READ_CHUNK), 1usize..6],
        behind in any::<bool>(),
    ) {
        let ev = events(seed, members, days, shuffle);
        let cfg = engine_config(evict);
        let until = END_MS + 200 * 86_400_000;
        let reference = run(&ev, &[1], &[], &cfg, until, Commits::Sync);
        // Timers fired in bounded chunks, each committed, change nothing;
        // nor does a member cache that holds a single member (every member
        // read back from the store, decoded, at every event), or one that
        // holds a few members decoded and more packed (unpacked when they
        // come back), evicting the rest.
        let mut bounded = cfg.clone();
        bounded.clock.max_timers_per_commit = timers_per_commit;
        if let Some(bytes) = member_cache {
            bounded.member_cache_bytes = bytes;
        }
        // Nor does how many stored timers are read into memory at a time.
        bounded.timer_read_chunk = timer_read_chunk;
        let commits = if behind { Commits::Behind } else { Commits::Sync };
        let other = run(&ev, &batches, &restarts, &bounded, until, commits);
        prop_assert!(!reference.is_empty());
        prop_assert_eq!(reference.len(), other.len());
        for (a, b) in reference.iter().zip(&other) {
            prop_assert_eq!(a, b);
        }
    }
}

/// A file replayed in two halves over one state directory equals one run
/// (the case issue 14 reported: a half boundary used to shift timers).
#[test]
fn two_halves_over_one_state_equal_one_run() {
    let ev = events(7, 200, 365, 0.02);
    let cfg = engine_config(false);
    let until = END_MS + 60 * 86_400_000;
    let whole = run(&ev, &[ev.len()], &[], &cfg, until, Commits::Sync);
    let halves = run(&ev, &[ev.len() / 2 + 1], &[0], &cfg, until, Commits::Behind);
    assert!(whole.len() > 50, "{} alerts", whole.len());
    assert_eq!(whole, halves);
}

/// The member cache and the timers in memory are memory, never state: a
/// cache that holds a single member and one stored timer read at a time
/// give the alerts of a cache that holds them all, so does one that holds
/// most members packed, and so does a restart after every batch (a cold
/// cache each time); with commits written behind as with commits written
/// on the engine thread.
#[test]
fn a_one_member_cache_and_cold_restarts_give_the_alerts_of_a_large_cache() {
    let ev = events(3, 150, 300, 0.02);
    let until = END_MS + 90 * 86_400_000;
    let mut large = engine_config(false);
    large.member_cache_bytes = 256 << 20;
    let mut tiny = large.clone();
    tiny.member_cache_bytes = 1;
    // And one stored timer in memory at a time.
    tiny.timer_read_chunk = 1;
    let want = run(&ev, &[500], &[], &large, until, Commits::Sync);
    assert!(want.len() > 50, "{} alerts", want.len());
    // 150 members: about 20 decoded, or 60 packed, or a mix.
    let mut packed = large.clone();
    packed.member_cache_bytes = 16 << 10;
    let every: Vec<usize> = (0..ev.len() / 500 + 1).collect();
    for commits in [Commits::Sync, Commits::Behind] {
        assert_eq!(
            run(&ev, &[500], &[], &tiny, until, commits),
            want,
            "{commits:?}"
        );
        assert_eq!(
            run(&ev, &[500], &[], &packed, until, commits),
            want,
            "{commits:?}"
        );
        assert_eq!(
            run(&ev, &[500], &every, &large, until, commits),
            want,
            "{commits:?}"
        );
    }
}
