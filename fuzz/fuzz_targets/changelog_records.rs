//! The changelog's and outbox's record decoders on arbitrary bytes:
//! `PartitionMark::decode`, `OutboxRecord::decode`, and the member-record
//! value splitter (through a `Restorer` committing that one record).
//! Whatever decodes must encode back to something that decodes the same;
//! a member value that does not split is quarantined, never obeyed.
#![no_main]

use churnwatch::pipeline::changelog::{
    checkpoint_key, read_i64, split_member_value, PartitionMark, Restorer, MARKER_KEY,
};
use churnwatch::pipeline::outbox::OutboxRecord;
use churnwatch::state::keys::member_key;
use churnwatch::state::{quarantine, MemoryStore, Store, Table};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(mark) = PartitionMark::decode(data) {
        let again = PartitionMark::decode(&mark.encode()).expect("an encoded mark decodes");
        assert_eq!(again, mark);
    }

    if let Ok(rec) = OutboxRecord::decode(data) {
        let bytes = rec.encode();
        let again = OutboxRecord::decode(&bytes).expect("an encoded record decodes");
        assert_eq!(again, rec);
        assert_eq!(again.encode(), bytes);
        let _ = rec.changelog_partition();
    }

    // The member-record value: `Restorer::apply` splits it when the commit's
    // marker arrives.
    let store = MemoryStore::new();
    let topics = vec!["member-events".to_string()];
    let mut r = Restorer::new(&store, 7, &topics, 1);
    r.apply(0, false, b"m-1", Some(data)).unwrap();
    let mark = PartitionMark {
        max_ts: 1,
        clock_ms: Some(1),
        epoch: None,
        basis: None,
        excludes_unmarked: false,
        offsets: [("member-events".to_string(), 3)].into(),
    };
    r.apply(1, true, MARKER_KEY, Some(&mark.encode())).unwrap();
    r.flush().unwrap();
    let stored = store.get(Table::Members, &member_key(7, "m-1")).unwrap();
    if let Ok((_, _, state)) = split_member_value(data) {
        assert!(r.quarantined.is_empty());
        assert_eq!(stored.as_deref(), Some(state));
    } else {
        // Set aside, unchanged, and the commit goes on without it.
        assert_eq!(stored, None);
        assert_eq!(r.quarantined.len(), 1);
        assert_eq!(r.quarantined[0].value, data);
        assert_eq!(quarantine::list(&store).unwrap().len(), 1);
    }
    assert_eq!(read_i64(&store, &checkpoint_key(7)).unwrap(), Some(2));
});
