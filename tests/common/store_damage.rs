//! What `fuzz/fuzz_targets/store_contents.rs` and the `store_damage`
//! property test in `tests/decoders.rs` run: whatever a state directory
//! holds (a bad disk, an older build's bug, a record cut short), an engine
//! must start on it, fire its timers and commit, quarantining what it
//! cannot read; and the quarantine listing and `state inspect` must print
//! it. Never a panic, never an error: a store that reads and writes is all
//! they may need.
//!
//! Input: entries written over a real engine's state. The state comes from
//! a dozen members buying, visiting and opening emails on partitions 0 and
//! 1, committed (members, timer index, partition meta, the lot). Then each
//! entry `[tag][key length][key][value length, 2 bytes LE][value]` puts
//! (or, with value length 0xffff, deletes) a key in table `tag % 5`; unless
//! `tag & 0x80`, the key is prefixed with partition `(tag >> 3) & 1`, so
//! that most entries land where the engine reads. Then a second engine,
//! cold as after a restart, takes both partitions, moves their clocks a
//! year on (firing what comes due), takes one event per partition, and
//! commits.

use std::sync::{Arc, LazyLock};

use churnwatch::config::Config;
use churnwatch::engine::{Engine, EngineConfig, Outcome};
use churnwatch::state::{quarantine, Batch, MemoryStore, Store, Table};
use churnwatch::telemetry::Metrics;

const DAY: i64 = 86_400_000;
const START: i64 = 1_767_225_600_000; // 2026-01-01
const WALL: i64 = START + 2 * 365 * DAY;

static CFG: LazyLock<EngineConfig> = LazyLock::new(|| {
    let mut cfg = Config::default().engine();
    // Few timers a commit, so that a year's firing commits in between.
    cfg.clock.max_timers_per_commit = 4;
    cfg
});

/// Every entry of a store: table, key, value.
type Entries = Vec<(Table, Vec<u8>, Vec<u8>)>;

/// The state the entries damage: what a real engine committed.
static BASE: LazyLock<Entries> = LazyLock::new(|| {
    let store = Arc::new(MemoryStore::new());
    let mut e = engine(&store);
    for m in 0..12u32 {
        let p = m % 2;
        for i in 0..6i64 {
            let ts = START + i * (3 + m as i64) * DAY;
            let kind = ["purchase", "visit", "email_open"][(i as usize + m as usize) % 3];
            let line = format!(
                r#"{{"event_id":"e{m}-{i}","member_id":"m{m}","type":"{kind}","ts":{ts},"amount":{}}}"#,
                10 + m
            );
            feed(&mut e, p, &line);
        }
    }
    e.commit(Batch::default()).expect("commit");
    let mut all = Vec::new();
    for t in Table::ALL {
        for (k, v) in store.scan(t, &[], &[0xff; 9], usize::MAX).expect("scan") {
            all.push((t, k, v));
        }
    }
    all
});

fn engine(store: &Arc<MemoryStore>) -> Engine<Arc<MemoryStore>> {
    let mut e = Engine::new(store.clone(), CFG.clone(), Arc::new(Metrics::new())).expect("engine");
    for p in [0, 1] {
        e.assign(p).expect("assign");
    }
    e
}

/// One event, committing when the engine asks to.
fn feed(e: &mut Engine<Arc<MemoryStore>>, partition: u32, line: &str) {
    loop {
        match e
            .process(partition, line.as_bytes(), WALL)
            .expect("process")
        {
            Outcome::Deferred => e.commit(Batch::default()).expect("commit"),
            _ => return,
        }
    }
}

/// Writes the entries `data` holds over the base state, then lists,
/// reports and restarts on it (see the module doc). Panics where the code
/// under test fails.
pub fn damage_then_restart(data: &[u8]) {
    let store = Arc::new(MemoryStore::new());
    let mut batch = Batch::default();
    for (t, k, v) in BASE.iter() {
        batch.put(*t, k.clone(), v.clone());
    }
    let mut rest = data;
    while let Some((&tag, r)) = rest.split_first() {
        let Some((&klen, r)) = r.split_first() else {
            break;
        };
        let Some((key, r)) = r.split_at_checked(klen as usize) else {
            break;
        };
        let Some((vlen, r)) = r.split_at_checked(2) else {
            break;
        };
        let vlen = u16::from_le_bytes([vlen[0], vlen[1]]);
        let table = Table::ALL[tag as usize % Table::ALL.len()];
        let mut k = Vec::with_capacity(key.len() + 4);
        if tag & 0x80 == 0 {
            k.extend_from_slice(&(((tag >> 3) & 1) as u32).to_be_bytes());
        }
        k.extend_from_slice(key);
        if vlen == u16::MAX {
            batch.delete(table, k);
            rest = r;
            continue;
        }
        let Some((value, r)) = r.split_at_checked(vlen as usize) else {
            break;
        };
        batch.put(table, k, value);
        rest = r;
    }
    store.write(batch).expect("write");

    quarantine::list(&*store).expect("list");
    for (show_keys, json) in [(true, false), (false, true)] {
        churnwatch::inspect::report(&*store, show_keys, json, &mut Vec::new()).expect("report");
    }

    let mut e = engine(&store);
    for p in [0, 1] {
        while !e
            .advance_partition_clock(p, WALL - 30 * DAY)
            .expect("advance")
        {
            e.commit(Batch::default()).expect("commit");
        }
        let line = format!(
            r#"{{"event_id":"late{p}","member_id":"m{p}","type":"purchase","ts":{},"amount":5}}"#,
            WALL - 29 * DAY
        );
        feed(&mut e, p, &line);
    }
    e.commit(Batch::default()).expect("commit");
    let _ = e.take_alerts();
    let _ = e.take_quarantined();
}
