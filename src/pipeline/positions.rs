//! Where this instance stands on each changelog partition it writes: the
//! owner epoch it writes under, which partitions need a commit marker, and
//! how far its own records have been acknowledged without anybody else's
//! in between (what may be checkpointed). The driver tells it what
//! happened; it answers what to write.

use std::collections::{BTreeMap, BTreeSet};

use super::changelog::PartitionMark;
use super::source::TopicPartition;

#[derive(Debug, Default)]
pub(super) struct ChangelogPositions {
    /// Partitions whose input offsets moved since their last marker.
    unmarked: BTreeSet<i32>,
    /// Acknowledged changelog positions (next offset) to checkpoint.
    checkpoints: BTreeMap<i32, i64>,
    /// Per changelog partition, the next offset if everything from the
    /// last restore on is this instance's own records.
    contiguous: BTreeMap<i32, i64>,
    /// The owner epoch and basis (changelog offset restored to) this
    /// instance writes each owned partition's changelog under.
    epochs: BTreeMap<i32, (u64, i64)>,
}

impl ChangelogPositions {
    /// This instance now owns `partition` under `epoch`, its state being
    /// the changelog's up to `basis`.
    pub fn own(&mut self, partition: i32, epoch: u64, basis: i64) {
        self.contiguous.insert(partition, basis);
        self.epochs.insert(partition, (epoch, basis));
        self.unmarked.insert(partition);
    }

    /// `partition` was revoked: no marker is owed for it any more.
    pub fn release(&mut self, partition: i32) {
        self.unmarked.remove(&partition);
    }

    /// The input offsets of `partition` moved: its next commit owes a
    /// marker even if no member changed.
    pub fn input_moved(&mut self, partition: i32) {
        self.unmarked.insert(partition);
    }

    /// The positions acknowledged since the last call, to checkpoint.
    pub fn take_checkpoints(&mut self) -> BTreeMap<i32, i64> {
        std::mem::take(&mut self.checkpoints)
    }

    /// The broker acknowledged this instance's changelog record at
    /// `offset` of `partition`. The local state is the changelog's up to a
    /// checkpoint only while the changelog holds nothing but this
    /// instance's own records after its restore: a record of anybody else
    /// in between (a zombie, or a new owner this instance does not know of
    /// yet) freezes the checkpoint before it, so the next restore reads it
    /// and can tell whether the local state is still good.
    pub fn acknowledged(&mut self, partition: i32, offset: i64) {
        match self.contiguous.get_mut(&partition) {
            Some(next) if *next == offset => {
                *next = offset + 1;
                self.checkpoints.insert(partition, offset + 1);
            }
            Some(next) if offset < *next => {}
            _ => {
                self.contiguous.remove(&partition);
            }
        }
    }

    /// The marker that ends `partition`'s part of a commit, if one is owed:
    /// members of it changed (`changed`) or its input offsets moved. It
    /// carries the partition's input offsets from `offsets`.
    pub fn mark(
        &mut self,
        partition: i32,
        changed: bool,
        max_ts: i64,
        clock_ms: i64,
        offsets: &BTreeMap<TopicPartition, i64>,
    ) -> Option<PartitionMark> {
        let moved = self.unmarked.remove(&partition);
        if !(changed || moved) {
            return None;
        }
        let owner = self.epochs.get(&partition);
        Some(PartitionMark {
            max_ts,
            clock_ms: Some(clock_ms),
            epoch: owner.map(|o| o.0),
            basis: owner.map(|o| o.1),
            excludes_unmarked: owner.is_some(),
            offsets: offsets
                .iter()
                .filter(|((_, q), _)| *q == partition)
                .map(|((t, _), n)| (t.clone(), *n))
                .collect(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checkpoints_follow_own_records_and_freeze_at_anybody_elses() {
        let mut pos = ChangelogPositions::default();
        pos.own(3, 7, 100);
        pos.acknowledged(3, 100);
        pos.acknowledged(3, 101);
        assert_eq!(pos.take_checkpoints(), BTreeMap::from([(3, 102)]));
        // A repeat of an acknowledged record changes nothing.
        pos.acknowledged(3, 100);
        assert!(pos.take_checkpoints().is_empty());
        // A gap: somebody else's record at 102. Nothing is checkpointed
        // past it, not even this instance's own later records.
        pos.acknowledged(3, 103);
        pos.acknowledged(3, 104);
        assert!(pos.take_checkpoints().is_empty());
        // Until it owns the partition again, from a new restore.
        pos.own(3, 8, 110);
        pos.acknowledged(3, 110);
        assert_eq!(pos.take_checkpoints(), BTreeMap::from([(3, 111)]));
    }

    #[test]
    fn a_marker_is_owed_when_members_changed_or_offsets_moved() {
        let mut pos = ChangelogPositions::default();
        let offsets = BTreeMap::from([
            (("in".to_string(), 1), 40),
            (("in".to_string(), 2), 50),
            (("other".to_string(), 1), 5),
        ]);
        // Not owned (no epoch): a legacy-style marker, nothing excluded.
        pos.input_moved(1);
        let m = pos.mark(1, false, 9, 8, &offsets).expect("offsets moved");
        assert_eq!((m.epoch, m.basis, m.excludes_unmarked), (None, None, false));
        assert_eq!(
            m.offsets,
            BTreeMap::from([("in".to_string(), 40), ("other".to_string(), 5)])
        );
        // Owed once: the next commit without changes owes nothing.
        assert!(pos.mark(1, false, 9, 8, &offsets).is_none());
        assert!(pos.mark(1, true, 9, 8, &offsets).is_some());

        pos.own(2, 4, 77);
        let m = pos
            .mark(2, false, 10, 9, &offsets)
            .expect("owning owes one");
        assert_eq!(
            (m.epoch, m.basis, m.excludes_unmarked),
            (Some(4), Some(77), true)
        );
        assert_eq!((m.max_ts, m.clock_ms), (10, Some(9)));
        pos.input_moved(2);
        pos.release(2);
        assert!(pos.mark(2, false, 10, 9, &offsets).is_none());
    }
}
