//! The member cache's index: from a key's hash to its slot in the slab.
//!
//! One `u64` per bucket, open addressing with linear probing: the high 32
//! bits of the key's hash (its *tag*, which also picks its home bucket)
//! and the slot number plus one (0: empty). A lookup reads one cache line
//! of buckets and then, for a bucket whose tag matches, the slot to compare
//! keys; `hashbrown`'s table keeps its control bytes and its values apart,
//! two misses where this has one. And a bucket's address is known from the
//! hash alone, so the engine can ask for it a few events ahead
//! ([`SlotIndex::prefetch`]) and find it in the CPU cache when its turn
//! comes. Deleting shifts the run after the bucket back (no tombstones),
//! so a probe still ends at the first empty bucket.

use crate::state::hint::prefetch;

/// Buckets are at most 7/8 full: probes stay short.
const LOAD_NUM: usize = 7;
const LOAD_DEN: usize = 8;

pub struct SlotIndex {
    buckets: Vec<u64>,
    mask: usize,
    len: usize,
}

fn tag(hash: u64) -> u32 {
    (hash >> 32) as u32
}

fn entry(hash: u64, slot: u32) -> u64 {
    (u64::from(tag(hash)) << 32) | (u64::from(slot) + 1)
}

fn slot_of(e: u64) -> u32 {
    (e as u32) - 1
}

impl SlotIndex {
    /// Room for `n` entries before it grows.
    pub fn with_capacity(n: usize) -> Self {
        let buckets = (n * LOAD_DEN / LOAD_NUM + 1).next_power_of_two().max(8);
        SlotIndex {
            buckets: vec![0; buckets],
            mask: buckets - 1,
            len: 0,
        }
    }

    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.len
    }

    fn home(&self, tag: u32) -> usize {
        tag as usize & self.mask
    }

    /// Asks the processor for the bucket line a lookup of `hash` starts at:
    /// a hint, which changes nothing the program sees.
    #[inline(always)]
    pub fn prefetch(&self, hash: u64) {
        let at = self.home(tag(hash));
        prefetch(self.buckets.as_ptr().wrapping_add(at).cast(), 1);
    }

    /// The slot of the entry with this hash for which `eq` holds.
    #[inline]
    pub fn find(&self, hash: u64, mut eq: impl FnMut(u32) -> bool) -> Option<u32> {
        let t = tag(hash);
        let mut at = self.home(t);
        loop {
            let e = self.buckets[at];
            if e == 0 {
                return None;
            }
            if (e >> 32) as u32 == t && eq(slot_of(e)) {
                return Some(slot_of(e));
            }
            at = (at + 1) & self.mask;
        }
    }

    /// The first slot whose tag matches `hash`'s, without comparing keys:
    /// what a lookup will most likely compare first (for a hint).
    pub fn candidate(&self, hash: u64) -> Option<u32> {
        self.find(hash, |_| true)
    }

    /// Adds `slot` under `hash`; the caller knows no entry of its key is
    /// there yet.
    pub fn insert(&mut self, hash: u64, slot: u32) {
        if (self.len + 1) * LOAD_DEN > self.buckets.len() * LOAD_NUM {
            self.grow();
        }
        self.place(entry(hash, slot));
        self.len += 1;
    }

    fn place(&mut self, e: u64) {
        let mut at = self.home((e >> 32) as u32);
        while self.buckets[at] != 0 {
            at = (at + 1) & self.mask;
        }
        self.buckets[at] = e;
    }

    fn grow(&mut self) {
        let old = std::mem::replace(&mut self.buckets, vec![0; (self.mask + 1) * 2]);
        self.mask = self.buckets.len() - 1;
        for e in old.into_iter().filter(|&e| e != 0) {
            self.place(e);
        }
    }

    /// Removes the entry of `slot` under `hash`; `false` when there is none.
    pub fn remove(&mut self, hash: u64, slot: u32) -> bool {
        let want = entry(hash, slot);
        let mut at = self.home(tag(hash));
        loop {
            match self.buckets[at] {
                0 => return false,
                e if e == want => break,
                _ => at = (at + 1) & self.mask,
            }
        }
        // Backward shift: every later entry of the run that may live at the
        // hole (its home is not between the hole and it) moves into it, so
        // no probe meets an empty bucket before its entry.
        let mut hole = at;
        let mut next = at;
        loop {
            next = (next + 1) & self.mask;
            let e = self.buckets[next];
            if e == 0 {
                break;
            }
            let home = self.home((e >> 32) as u32);
            let stays = if hole <= next {
                hole < home && home <= next
            } else {
                hole < home || home <= next
            };
            if !stays {
                self.buckets[hole] = e;
                hole = next;
            }
        }
        self.buckets[hole] = 0;
        self.len -= 1;
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::HashMap;

    #[derive(Debug, Clone)]
    enum Op {
        Insert(u64),
        Remove(usize),
    }

    fn ops() -> impl Strategy<Value = Vec<Op>> {
        // Few distinct home bits, so runs are long, wrap around the end and
        // share tags.
        let hash = (0u64..64, 0u64..4).prop_map(|(h, low)| (h << 58) | (h << 32) | low);
        prop::collection::vec(
            prop_oneof![
                3 => hash.prop_map(Op::Insert),
                2 => any::<usize>().prop_map(Op::Remove),
            ],
            0..400,
        )
    }

    proptest! {
        #[test]
        fn finds_exactly_what_a_map_holds_through_inserts_removals_and_growth(ops in ops()) {
            let mut index = SlotIndex::with_capacity(4);
            // slot -> hash, as the cache's slab knows each slot's key.
            let mut model: HashMap<u32, u64> = HashMap::new();
            let mut next_slot = 0u32;
            for op in ops {
                match op {
                    Op::Insert(h) => {
                        index.insert(h, next_slot);
                        model.insert(next_slot, h);
                        next_slot += 1;
                    }
                    Op::Remove(k) => {
                        if model.is_empty() {
                            prop_assert!(!index.remove(1, 0));
                            continue;
                        }
                        let mut slots: Vec<_> = model.keys().copied().collect();
                        slots.sort_unstable();
                        let slot = slots[k % slots.len()];
                        let h = model.remove(&slot).unwrap();
                        prop_assert!(index.remove(h, slot));
                        prop_assert!(!index.remove(h, slot));
                    }
                }
                prop_assert_eq!(index.len(), model.len());
                for (&slot, &h) in &model {
                    prop_assert_eq!(index.find(h, |s| s == slot), Some(slot));
                }
            }
            for h in [0u64, 1 << 40, u64::MAX] {
                let found = index.find(h, |s| model.get(&s) == Some(&h));
                prop_assert_eq!(found.is_some(), model.values().any(|&v| v == h));
            }
        }
    }

    #[test]
    fn a_missing_hash_is_not_found_in_an_empty_or_a_full_index() {
        let mut index = SlotIndex::with_capacity(0);
        assert_eq!(index.find(7 << 32, |_| true), None);
        for s in 0..1000 {
            index.insert((s as u64) << 32, s);
        }
        assert_eq!(index.len(), 1000);
        assert_eq!(index.find(5000 << 32, |_| true), None);
        assert_eq!(index.find(999 << 32, |s| s == 999), Some(999));
    }
}
