//! Property tests of every decoder that reads bytes from outside the process
//! or from disk (the fuzz targets in `fuzz/` run the same decoders for
//! millions of inputs; see docs/fuzzing.md): what an encoder writes decodes
//! to the same value, and arbitrary or damaged bytes are an error, never a
//! panic.

use std::borrow::Cow;
use std::collections::BTreeMap;

use churnwatch::config::Config;
use churnwatch::detect::Signal;
use churnwatch::event::{Event, EventKind, Validator};
use churnwatch::pipeline::changelog::{
    checkpoint_key, member_value, read_i64, split_member_value, PartitionMark, Restorer,
    MARKER_KEY, MEMBER_HEADER_LEN,
};
use churnwatch::pipeline::outbox::OutboxRecord;
use churnwatch::state::keys::member_key;
use churnwatch::state::member::MemberFormat;
use churnwatch::state::member::{Episode, OpenAlert, Stage, NEVER};
use churnwatch::state::{MemberState, MemoryStore, Store, Table};
use proptest::prelude::*;

#[path = "common/store_damage.rs"]
mod store_damage;

/// 2020-01-01 .. 2030-01-01, epoch ms.
const TS: std::ops::Range<i64> = 1_577_836_800_000..1_893_456_000_000;

fn kind() -> impl Strategy<Value = EventKind> {
    prop::sample::select(EventKind::ALL.to_vec())
}

fn event() -> impl Strategy<Value = (EventKind, i64, f64, u32)> {
    (kind(), TS, 0.0..5_000.0f64, any::<u32>())
}

/// A member as the engine builds one: events folded in, alerts raised.
fn member() -> impl Strategy<Value = MemberState> {
    (
        TS,
        prop::collection::vec(event(), 0..60),
        0u8..5,
        prop::collection::vec((any::<bool>(), any::<u16>(), TS), 0..6),
        prop::option::of((prop::sample::select(Signal::ALL.to_vec()), any::<u16>(), TS)),
        prop::option::of(TS),
    )
        .prop_map(|(t0, events, stage, episodes, alert, due)| {
            let mut m = MemberState::new(t0);
            for (kind, ts_ms, amount, id) in events {
                if m.remember_event(id) {
                    m.apply(&Event {
                        event_id: Cow::Borrowed("e"),
                        member_id: Cow::Borrowed("m"),
                        kind,
                        ts_ms,
                        amount,
                        categories: 0,
                    });
                }
            }
            m.stage = [
                Stage::New,
                Stage::Active,
                Stage::Cooling,
                Stage::Silent,
                Stage::Churned,
            ][stage as usize];
            for (slot, (open, seq, opened_ms)) in m.episodes.iter_mut().zip(episodes) {
                *slot = Episode {
                    open,
                    seq,
                    opened_ms,
                };
            }
            m.open_alert = alert.map(|(signal, seq, detected_ms)| OpenAlert {
                signal,
                seq,
                detected_ms,
            });
            m.timer_due_ms = due.unwrap_or(NEVER);
            m
        })
}

/// Bytes an encoder wrote, then damaged: truncated and a few bytes changed.
fn damaged(bytes: Vec<u8>) -> impl Strategy<Value = Vec<u8>> {
    let n = bytes.len();
    (
        0..=n,
        prop::collection::vec((0..n.max(1), any::<u8>()), 0..4),
    )
        .prop_map(move |(keep, flips)| {
            let mut b = bytes.clone();
            for (at, v) in flips {
                if let Some(x) = b.get_mut(at) {
                    *x = v;
                }
            }
            b.truncate(keep);
            b
        })
}

fn outbox_record() -> impl Strategy<Value = OutboxRecord> {
    let bytes = || prop::collection::vec(any::<u8>(), 0..40);
    prop_oneof![
        (".{0,20}", bytes()).prop_map(|(member_id, json)| OutboxRecord::Alert { member_id, json }),
        (
            prop::option::of(bytes()),
            bytes(),
            ".{0,30}",
            ".{0,20}",
            any::<i32>(),
            any::<i64>()
        )
            .prop_map(|(key, payload, error, topic, partition, offset)| {
                OutboxRecord::DeadLetter {
                    key,
                    payload,
                    error,
                    topic,
                    partition,
                    offset,
                }
            }),
        (any::<i32>(), ".{0,20}", prop::option::of(bytes())).prop_map(
            |(partition, member_id, value)| OutboxRecord::Changelog {
                partition,
                member_id,
                value,
            }
        ),
        (any::<i32>(), bytes())
            .prop_map(|(partition, mark)| OutboxRecord::ChangelogMark { partition, mark }),
    ]
}

fn partition_mark() -> impl Strategy<Value = PartitionMark> {
    (
        any::<i64>(),
        prop::option::of(any::<i64>()),
        prop::option::of(any::<u64>()),
        prop::option::of(any::<i64>()),
        prop::collection::btree_map(".{0,12}", any::<i64>(), 0..4),
        any::<bool>(),
    )
        .prop_map(
            |(max_ts, clock_ms, epoch, basis, offsets, excludes_unmarked)| PartitionMark {
                max_ts,
                clock_ms,
                epoch,
                basis,
                excludes_unmarked,
                offsets,
            },
        )
}

/// Decodes a member; whatever decodes must encode to bytes that decode to
/// the same state (compared as bytes: a NaN never equals itself).
fn decode_member(b: &[u8]) {
    if let Ok(m) = MemberState::decode(b) {
        let bytes = m.to_bytes();
        let again = MemberState::decode(&bytes).expect("an encoded member decodes");
        assert_eq!(again.to_bytes(), bytes);
    }
}

/// Commits one member record and returns what the restore stored for it
/// (state and due time), or `None` when the record was quarantined.
fn restore_one(value: &[u8]) -> Option<(Vec<u8>, i64)> {
    let store = MemoryStore::new();
    let topics = vec!["member-events".to_string()];
    let mut r = Restorer::new(&store, 1, &topics, 1);
    r.apply(0, false, b"m-1", Some(value)).unwrap();
    let mark = PartitionMark {
        max_ts: 5,
        clock_ms: None,
        epoch: None,
        basis: None,
        excludes_unmarked: false,
        offsets: [("member-events".to_string(), 9)].into(),
    };
    r.apply(1, true, MARKER_KEY, Some(&mark.encode())).unwrap();
    r.flush().unwrap();
    assert_eq!(read_i64(&store, &checkpoint_key(1)).unwrap(), Some(2));
    if !r.quarantined.is_empty() {
        // Set aside unchanged, and nothing stored for the member.
        assert_eq!(r.quarantined[0].value, value);
        assert_eq!(
            store.get(Table::Members, &member_key(1, "m-1")).unwrap(),
            None
        );
        return None;
    }
    let state = store
        .get(Table::Members, &member_key(1, "m-1"))
        .unwrap()
        .expect("the member was stored");
    let (_, due, _) = split_member_value(value).expect("stored, so it split");
    Some((state, due))
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn member_state_round_trips_in_every_format(m in member()) {
        for format in [MemberFormat::Packed, MemberFormat::Fixed] {
            let bytes = m.to_bytes_as(format);
            prop_assert!(bytes.len() <= 512, "{} bytes", bytes.len());
            prop_assert_eq!(&MemberState::decode(&bytes).unwrap(), &m);
        }
    }

    #[test]
    fn member_state_decoder_never_panics(b in prop::collection::vec(any::<u8>(), 0..600)) {
        decode_member(&b);
    }

    #[test]
    fn damaged_member_states_never_panic(
        b in member().prop_flat_map(|m| damaged(m.to_bytes()))
    ) {
        decode_member(&b);
    }

    #[test]
    fn damaged_fixed_member_states_never_panic(
        b in member().prop_flat_map(|m| damaged(m.to_bytes_as(MemberFormat::Fixed)))
    ) {
        decode_member(&b);
    }

    /// Random bytes behind the packed format's version byte: the packed
    /// decoder reads whatever a changelog record holds.
    #[test]
    fn packed_member_decoder_never_panics(b in prop::collection::vec(any::<u8>(), 0..300)) {
        let mut v = vec![MemberFormat::Packed as u8];
        v.extend_from_slice(&b);
        decode_member(&v);
    }

    #[test]
    fn partition_marks_round_trip(mark in partition_mark()) {
        prop_assert_eq!(PartitionMark::decode(&mark.encode()).unwrap(), mark);
    }

    #[test]
    fn partition_mark_decoder_never_panics(b in prop::collection::vec(any::<u8>(), 0..200)) {
        if let Ok(mark) = PartitionMark::decode(&b) {
            prop_assert_eq!(PartitionMark::decode(&mark.encode()).unwrap(), mark);
        }
    }

    #[test]
    fn outbox_records_round_trip(rec in outbox_record()) {
        prop_assert_eq!(OutboxRecord::decode(&rec.encode()).unwrap(), rec);
    }

    #[test]
    fn outbox_decoder_never_panics(
        b in prop_oneof![
            prop::collection::vec(any::<u8>(), 0..200),
            outbox_record().prop_flat_map(|r| damaged(r.encode())),
        ]
    ) {
        if let Ok(rec) = OutboxRecord::decode(&b) {
            prop_assert_eq!(OutboxRecord::decode(&rec.encode()).unwrap(), rec);
        }
    }

    #[test]
    fn changelog_member_values_round_trip(
        due in prop_oneof![Just(NEVER), any::<i64>()],
        state in prop::collection::vec(any::<u8>(), 0..600),
    ) {
        let (stored, read_due) = restore_one(&member_value(due, &state))
            .expect("a well-formed member value restores");
        prop_assert_eq!(stored, state);
        prop_assert_eq!(read_due, due);
    }

    #[test]
    fn changelog_member_value_splitter_never_panics(
        b in prop_oneof![
            prop::collection::vec(any::<u8>(), 0..40),
            (any::<i64>(), prop::collection::vec(any::<u8>(), 0..40))
                .prop_flat_map(|(due, s)| damaged(member_value(due, &s))),
        ]
    ) {
        let ok = restore_one(&b).is_some();
        // Format 2 (what this build writes) has a 17-byte header, format 1
        // (earlier builds) a 9-byte one.
        let well_formed = match b.first() {
            Some(2) => b.len() >= MEMBER_HEADER_LEN,
            Some(1) => b.len() >= 9,
            _ => false,
        };
        prop_assert_eq!(ok, well_formed);
    }

    #[test]
    fn a_restore_goes_on_whatever_records_it_reads(
        records in prop::collection::vec(
            (any::<bool>(), prop::collection::vec(any::<u8>(), 0..12),
             prop::option::of(prop::collection::vec(any::<u8>(), 0..40))),
            0..12,
        )
    ) {
        let store = MemoryStore::new();
        let topics = vec!["member-events".to_string()];
        let mut r = Restorer::new(&store, 0, &topics, 2);
        for (offset, (marker, key, value)) in records.iter().enumerate() {
            let key = if *marker { MARKER_KEY } else { key.as_slice() };
            r.apply(offset as i64, *marker, key, value.as_deref()).unwrap();
        }
        r.finish().unwrap();
    }

    #[test]
    fn event_parser_never_panics(b in prop::collection::vec(any::<u8>(), 0..200)) {
        let _ = Validator::default().parse(&b, 1_772_000_000_000);
    }

    #[test]
    fn well_formed_events_parse_to_their_fields(
        event_id in "[a-z0-9-]{1,40}",
        member_id in "\\PC{1,20}",
        kind in kind(),
        ts_ms in TS,
        amount in 0.0..1e6f64,
        extra in prop::collection::btree_map("[a-z]{1,8}", any::<i32>(), 0..3),
    ) {
        let mut obj: BTreeMap<String, serde_json::Value> = extra
            .into_iter()
            .map(|(k, v)| (format!("x_{k}"), v.into()))
            .collect();
        obj.insert("event_id".into(), event_id.clone().into());
        obj.insert("member_id".into(), member_id.clone().into());
        obj.insert("type".into(), kind.as_str().into());
        obj.insert("ts".into(), ts_ms.into());
        obj.insert("amount".into(), amount.into());
        let payload = serde_json::to_vec(&obj).unwrap();
        let e = Validator::default()
            .parse(&payload, TS.end)
            .expect("a well-formed event is accepted");
        prop_assert_eq!(e.event_id.as_ref(), event_id.as_str());
        prop_assert_eq!(e.member_id.as_ref(), member_id.as_str());
        prop_assert_eq!(e.kind, kind);
        prop_assert_eq!(e.ts_ms, ts_ms);
        // serde_json reads decimals to within one ulp, not always exactly
        // (no `float_roundtrip`): amounts are money, kept as f32 anyway.
        let want = if kind == EventKind::Purchase { amount } else { 0.0 };
        prop_assert!((e.amount - want).abs() <= want * 1e-15, "{} vs {want}", e.amount);
    }

    #[test]
    fn config_loader_never_panics(text in "(\\[[a-z._]{0,20}\\]\n|[a-z_]{1,20} = [-0-9a-z\"'.\\[\\]{}, ]{0,20}\n){0,8}") {
        if let Ok(cfg) = Config::parse(&text) {
            let _ = cfg.validate();
        }
    }
}

#[test]
fn the_default_config_round_trips_through_toml() {
    let cfg = Config::default();
    let text = toml::to_string(&cfg).unwrap();
    assert_eq!(Config::parse(&text).unwrap(), cfg);
}

/// A key `store_damage` writes: mostly ones the engine reads (member ids of
/// the base state, timer keys of them, partition meta names), some random.
fn damaged_key() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        (0u32..13).prop_map(|m| format!("m{m}").into_bytes()),
        (any::<[u8; 8]>(), 0u32..13).prop_map(|(due, m)| {
            let mut k = due.to_vec();
            k.extend_from_slice(format!("m{m}").as_bytes());
            k
        }),
        prop::sample::select(vec!["clock", "max_ts", "timers", "store_probe"])
            .prop_map(|n| n.as_bytes().to_vec()),
        prop::collection::vec(any::<u8>(), 0..24),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// Damage written over a real engine's state (puts of arbitrary values,
    /// deletes, in every table): the listing, the report and an engine
    /// restarted on it go on, quarantining what they cannot read.
    #[test]
    fn an_engine_restarts_on_damaged_state_and_goes_on(
        entries in prop::collection::vec(
            (any::<u8>(), damaged_key(), prop::option::of(prop::collection::vec(any::<u8>(), 0..200))),
            0..40,
        )
    ) {
        let mut data = Vec::new();
        for (tag, key, value) in entries {
            data.push(tag);
            data.push(key.len() as u8);
            data.extend_from_slice(&key);
            match value {
                Some(v) => {
                    data.extend_from_slice(&(v.len() as u16).to_le_bytes());
                    data.extend_from_slice(&v);
                }
                None => data.extend_from_slice(&u16::MAX.to_le_bytes()),
            }
        }
        store_damage::damage_then_restart(&data);
    }
}
