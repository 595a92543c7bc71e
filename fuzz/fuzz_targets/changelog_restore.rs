//! A restore fed an arbitrary changelog: `Restorer::apply` over a sequence
//! of member records, tombstones and markers (well-formed or not) against a
//! `MemoryStore`. It must never panic nor fail; what does not decode is
//! quarantined and left out; and what it wrote is exactly the state as of a
//! whole commit: the members of every commit up to the checkpoint it stored,
//! none after it, whether the restore finished or was cut short.
//!
//! Input: a byte (batch size; bit 7: cut short, no final flush), then
//! records, each a flag byte and fields:
//! - bit 0 set: a marker; bit 1 picks a well-formed one (max_ts, input
//!   offset, clock if bit 2) over raw bytes.
//! - bit 0 clear: a member record keyed by a length-prefixed id; bit 1 a
//!   tombstone, else bit 2 a well-formed value (due time, state bytes) or
//!   raw bytes.
#![no_main]

use std::collections::BTreeMap;

use churnwatch::pipeline::changelog::{
    checkpoint_key, member_value, offset_key, read_i64, split_member_value, PartitionMark,
    Restorer, MARKER_KEY,
};
use churnwatch::state::keys::{member_key, partition_end, partition_prefix};
use churnwatch::state::{quarantine, MemoryStore, Store, Table};
use libfuzzer_sys::fuzz_target;

const P: u32 = 2;
const TOPIC: &str = "member-events";

struct Input<'a>(&'a [u8]);

impl<'a> Input<'a> {
    fn u8(&mut self) -> Option<u8> {
        let (&b, rest) = self.0.split_first()?;
        self.0 = rest;
        Some(b)
    }
    fn bytes(&mut self, n: usize) -> Option<&'a [u8]> {
        if self.0.len() < n {
            return None;
        }
        let (a, b) = self.0.split_at(n);
        self.0 = b;
        Some(a)
    }
    fn short(&mut self) -> Option<&'a [u8]> {
        let n = self.u8()? as usize;
        self.bytes(n.min(self.0.len()))
    }
    fn i64(&mut self) -> Option<i64> {
        Some(i64::from_le_bytes(self.bytes(8)?.try_into().unwrap()))
    }
}

type Members = BTreeMap<Vec<u8>, Vec<u8>>;

/// Whether the restore can use a member record (the splitter's rule).
fn usable(id: &[u8], value: Option<&[u8]>) -> bool {
    std::str::from_utf8(id).is_ok() && value.is_none_or(|v| split_member_value(v).is_ok())
}

fuzz_target!(|data: &[u8]| {
    let mut input = Input(data);
    let Some(head) = input.u8() else { return };
    let cut_short = head & 0x80 != 0;
    let store = MemoryStore::new();
    let topics = vec![TOPIC.to_string()];
    let mut r = Restorer::new(&store, P, &topics, 1 + (head % 4) as usize);

    // The members and input offset as of each commit, by the checkpoint it
    // stores (no checkpoint: nothing restored).
    let mut commits: BTreeMap<Option<i64>, (Members, Option<i64>)> = BTreeMap::new();
    commits.insert(None, (Members::new(), None));
    let mut model = Members::new();
    let mut input_offset = None;
    let mut pending: Vec<(Vec<u8>, Option<Vec<u8>>)> = Vec::new();
    let mut set_aside = 0;
    let mut offset = 0i64;

    while let Some(flags) = input.u8() {
        let (key, value): (Vec<u8>, Option<Vec<u8>>) = if flags & 1 == 1 {
            let value = if flags & 2 == 2 {
                let (Some(max_ts), Some(next)) = (input.i64(), input.i64()) else {
                    break;
                };
                PartitionMark {
                    max_ts,
                    clock_ms: (flags & 4 == 4).then_some(max_ts),
                    epoch: None,
                    basis: None,
                    excludes_unmarked: false,
                    offsets: [(TOPIC.to_string(), next)].into(),
                }
                .encode()
            } else {
                match input.short() {
                    Some(b) => b.to_vec(),
                    None => break,
                }
            };
            (MARKER_KEY.to_vec(), Some(value))
        } else {
            let Some(id) = input.short() else { break };
            let value = if flags & 2 == 2 {
                None
            } else if flags & 4 == 4 {
                let (Some(due), Some(state)) = (input.i64(), input.short()) else {
                    break;
                };
                Some(member_value(due, state))
            } else {
                match input.short() {
                    Some(b) => Some(b.to_vec()),
                    None => break,
                }
            };
            (id.to_vec(), value)
        };
        r.apply(offset, flags & 1 == 1, &key, value.as_deref())
            .expect("a restore goes on whatever it reads");
        offset += 1;
        // The key makes a marker, not the header flag: a "member" record
        // keyed like a marker is one (no member id can start that way).
        if !key.starts_with(MARKER_KEY) {
            pending.push((key, value));
            continue;
        }
        let Ok(mark) = PartitionMark::decode(value.as_deref().unwrap_or_default()) else {
            // Set aside; its records join the next commit.
            set_aside += 1;
            continue;
        };
        for (id, v) in pending.drain(..) {
            if !usable(&id, v.as_deref()) {
                set_aside += 1;
                continue;
            }
            let key = member_key(P, std::str::from_utf8(&id).unwrap());
            match v {
                // The state without the format header (whatever its
                // format's length).
                Some(v) => model.insert(key, split_member_value(&v).expect("usable").2.to_vec()),
                None => model.remove(&key),
            };
        }
        if let Some(next) = mark.offsets.get(TOPIC) {
            input_offset = Some(*next);
        }
        commits.insert(Some(offset), (model.clone(), input_offset));
    }
    assert_eq!(r.unfinished(), pending.len());
    assert_eq!(r.quarantined.len(), set_aside);
    if !cut_short {
        r.finish().unwrap();
        assert_eq!(quarantine::list(&store).unwrap().len(), set_aside);
    }

    // The store holds exactly one whole commit.
    let checkpoint = read_i64(&store, &checkpoint_key(P)).unwrap();
    let (members, input_offset) = commits
        .get(&checkpoint)
        .expect("the checkpoint is that of a commit");
    let stored: Members = store
        .scan(
            Table::Members,
            &partition_prefix(P),
            &partition_end(P),
            usize::MAX,
        )
        .unwrap()
        .into_iter()
        .collect();
    assert_eq!(&stored, members);
    assert_eq!(
        read_i64(&store, &offset_key(TOPIC, P as i32)).unwrap(),
        *input_offset
    );
    if !cut_short {
        assert_eq!(checkpoint, commits.keys().last().copied().flatten());
    }
});
