//! Key layout. Every key starts with the partition number (big-endian) so a
//! partition's state is one contiguous range in each table.
//!
//! - members: `partition | member_id`
//! - timers:  `partition | due (order-preserving i64) | member_id`, one per
//!   stored member with a timer, at its stored due time; the partition's
//!   marker (`timers_marker_key`) sorts after them all
//! - outbox:  `partition | sequence`
//! - meta:    `partition | name` (partition `u32::MAX` holds global entries)

pub const GLOBAL_PARTITION: u32 = u32::MAX;

/// A member or timer key, on the stack for ids up to a UUID's 36 bytes:
/// the engine builds one for every member a commit writes and every timer
/// that fires, and a heap block each was an allocation and a cold free.
pub type Key = smallvec::SmallVec<[u8; 48]>;

pub fn member_key(partition: u32, member_id: &str) -> Key {
    let mut k = Key::with_capacity(4 + member_id.len());
    k.extend_from_slice(&partition.to_be_bytes());
    k.extend_from_slice(member_id.as_bytes());
    k
}

/// Splits a member key into partition and member id.
pub fn split_member_key(key: &[u8]) -> Option<(u32, &str)> {
    let (p, id) = key.split_at_checked(4)?;
    Some((
        u32::from_be_bytes(p.try_into().ok()?),
        std::str::from_utf8(id).ok()?,
    ))
}

/// Maps an i64 to bytes that sort like the number (sign bit flipped).
pub fn ordered_i64(v: i64) -> [u8; 8] {
    ((v as u64) ^ (1 << 63)).to_be_bytes()
}

fn from_ordered_i64(b: [u8; 8]) -> i64 {
    (u64::from_be_bytes(b) ^ (1 << 63)) as i64
}

pub fn timer_key(partition: u32, due_ms: i64, member_id: &str) -> Key {
    let mut k = Key::with_capacity(12 + member_id.len());
    k.extend_from_slice(&partition.to_be_bytes());
    k.extend_from_slice(&ordered_i64(due_ms));
    k.extend_from_slice(member_id.as_bytes());
    k
}

/// The exclusive upper bound of timers of `partition` due at or before `due_ms`.
pub fn timer_bound(partition: u32, due_ms: i64) -> Vec<u8> {
    let mut k = Vec::with_capacity(12);
    k.extend_from_slice(&partition.to_be_bytes());
    k.extend_from_slice(&ordered_i64(due_ms.saturating_add(1)));
    k
}

/// The key after every timer of `partition`: present when the partition's
/// timer index is complete (its value holds the number of timers), absent
/// while anything else wrote its members (a restore, a build that kept no
/// index), so the engine rebuilds the index from the member records. It is a
/// timer key itself (due `i64::MAX`, no member), so a build that dropped the
/// timer table dropped the marker with it.
pub fn timers_marker_key(partition: u32) -> Vec<u8> {
    timer_key(partition, i64::MAX, "").into_vec()
}

pub fn split_timer_key(key: &[u8]) -> Option<(u32, i64, &str)> {
    let (p, rest) = key.split_at_checked(4)?;
    let (due, id) = rest.split_at_checked(8)?;
    Some((
        u32::from_be_bytes(p.try_into().ok()?),
        from_ordered_i64(due.try_into().ok()?),
        std::str::from_utf8(id).ok()?,
    ))
}

pub fn partition_prefix(partition: u32) -> [u8; 4] {
    partition.to_be_bytes()
}

/// The first key after every key of `partition`.
pub fn partition_end(partition: u32) -> Vec<u8> {
    match partition.checked_add(1) {
        Some(p) => p.to_be_bytes().to_vec(),
        None => vec![0xff; 5],
    }
}

pub fn outbox_key(partition: u32, seq: u64) -> Vec<u8> {
    let mut k = Vec::with_capacity(12);
    k.extend_from_slice(&partition.to_be_bytes());
    k.extend_from_slice(&seq.to_be_bytes());
    k
}

pub fn split_outbox_key(key: &[u8]) -> Option<(u32, u64)> {
    let (p, s) = key.split_at_checked(4)?;
    Some((
        u32::from_be_bytes(p.try_into().ok()?),
        u64::from_be_bytes(s.try_into().ok()?),
    ))
}

pub fn meta_key(partition: u32, name: &str) -> Vec<u8> {
    let mut k = Vec::with_capacity(4 + name.len());
    k.extend_from_slice(&partition.to_be_bytes());
    k.extend_from_slice(name.as_bytes());
    k
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timer_keys_sort_by_partition_then_due_time() {
        let mut keys = [
            timer_key(1, 5, "a"),
            timer_key(0, 10, "b"),
            timer_key(0, -3, "z"),
            timer_key(0, 10, "a"),
        ];
        keys.sort();
        let parsed: Vec<_> = keys.iter().map(|k| split_timer_key(k).unwrap()).collect();
        assert_eq!(
            parsed,
            [(0, -3, "z"), (0, 10, "a"), (0, 10, "b"), (1, 5, "a")]
        );
    }

    #[test]
    fn timer_bound_includes_timers_due_exactly_then() {
        assert!(timer_key(0, 10, "m").as_slice() < timer_bound(0, 10).as_slice());
        assert!(timer_key(0, 11, "").as_slice() >= timer_bound(0, 10).as_slice());
    }

    #[test]
    fn the_timer_marker_sorts_after_every_timer_of_its_partition() {
        let marker = timers_marker_key(3);
        assert!(timer_key(3, i64::MAX - 1, "zzzz").as_slice() < marker.as_slice());
        assert!(marker.as_slice() < timer_key(4, i64::MIN, "").as_slice());
        assert!(marker < partition_end(3));
    }

    #[test]
    fn member_keys_round_trip() {
        assert_eq!(split_member_key(&member_key(7, "m-1")), Some((7, "m-1")));
    }
}
