//! The input partitions this instance processes and how far each has got:
//! the next offset of each (the one committed with the state is the truth;
//! this is its copy), which are read to their end with nothing new since,
//! and when each partition last delivered (for its idle clock advance).
//! Partitions still restoring are not here until they are handed over.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use rdkafka::message::{Message, OwnedMessage};

use super::source::TopicPartition;

#[derive(Debug, Default)]
pub(super) struct InputProgress {
    /// Next offset to apply per assigned input partition (absent until the
    /// state holds one: a partition read from its start).
    next: BTreeMap<TopicPartition, i64>,
    assigned: BTreeSet<TopicPartition>,
    /// Assigned partitions read to their end, with nothing new since.
    caught_up: BTreeSet<TopicPartition>,
    /// When each processing partition last delivered a message (or was
    /// handed to the engine).
    last_seen: BTreeMap<i32, Instant>,
}

impl InputProgress {
    /// `tp` is processed here from now on, from `next` (its offset in the
    /// state, if any).
    pub fn start(&mut self, tp: TopicPartition, next: Option<i64>) {
        self.last_seen.entry(tp.1).or_insert_with(Instant::now);
        if let Some(n) = next {
            self.next.insert(tp.clone(), n);
        }
        self.assigned.insert(tp);
    }

    /// `tp` is no longer processed here.
    pub fn stop(&mut self, tp: &TopicPartition) {
        self.assigned.remove(tp);
        self.caught_up.remove(tp);
        self.next.remove(tp);
    }

    /// Partition number `p` left the engine (on every input topic).
    pub fn forget(&mut self, p: i32) {
        self.last_seen.remove(&p);
    }

    /// The consumer read `tp` to its end.
    pub fn reached_end(&mut self, tp: TopicPartition) {
        if self.assigned.contains(&tp) {
            self.caught_up.insert(tp);
        }
    }

    /// The message at `offset` of `tp` is in the state (as of `at`).
    pub fn consumed(&mut self, tp: TopicPartition, offset: i64, at: Instant) {
        self.caught_up.remove(&tp);
        self.last_seen.insert(tp.1, at);
        self.next.insert(tp, offset + 1);
    }

    /// The indices of `messages` the state does not hold yet: of assigned
    /// partitions (not revoked meanwhile, not restoring), past the offsets
    /// already applied (a redelivery after a rebalance race, or a message
    /// seen twice in one batch).
    pub fn fresh(&self, messages: &[OwnedMessage]) -> Vec<usize> {
        let mut next: BTreeMap<TopicPartition, i64> = BTreeMap::new();
        let mut fresh = Vec::with_capacity(messages.len());
        for (i, m) in messages.iter().enumerate() {
            let tp = (m.topic().to_string(), m.partition());
            if !self.assigned.contains(&tp) {
                continue;
            }
            let applied = next.get(&tp).or_else(|| self.next.get(&tp));
            if applied.is_some_and(|n| m.offset() < *n) {
                continue;
            }
            next.insert(tp, m.offset() + 1);
            fresh.push(i);
        }
        fresh
    }

    /// Partition `p` has delivered nothing for `idle_after` and is read to
    /// its end on every input topic.
    pub fn quiet(&self, p: i32, idle_after: Duration) -> bool {
        let idle = self
            .last_seen
            .get(&p)
            .is_none_or(|t| t.elapsed() >= idle_after);
        idle && self
            .assigned
            .iter()
            .filter(|tp| tp.1 == p)
            .all(|tp| self.caught_up.contains(tp))
    }

    /// Next offset to apply per input partition, where the state holds one.
    pub fn offsets(&self) -> &BTreeMap<TopicPartition, i64> {
        &self.next
    }

    /// The input partitions processed here.
    pub fn assigned(&self) -> &BTreeSet<TopicPartition> {
        &self.assigned
    }

    /// Partition numbers the engine processes (one number can span several
    /// input topics).
    pub fn owned(&self) -> BTreeSet<i32> {
        self.assigned.iter().map(|tp| tp.1).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rdkafka::message::Timestamp;

    fn msg(topic: &str, partition: i32, offset: i64) -> OwnedMessage {
        OwnedMessage::new(
            Some(b"{}".to_vec()),
            None,
            topic.into(),
            Timestamp::NotAvailable,
            partition,
            offset,
            None,
        )
    }

    fn tp(topic: &str, p: i32) -> TopicPartition {
        (topic.to_string(), p)
    }

    #[test]
    fn only_messages_past_what_the_state_holds_of_assigned_partitions_are_fresh() {
        let mut input = InputProgress::default();
        input.start(tp("a", 0), Some(10));
        input.start(tp("a", 1), None);
        let batch = [
            msg("a", 0, 9),  // applied before a rebalance race
            msg("a", 0, 10), // next
            msg("a", 2, 0),  // not assigned (revoked, or restoring)
            msg("a", 1, 0),  // read from the start
            msg("a", 0, 10), // the same message twice in one batch
            msg("a", 0, 11),
        ];
        assert_eq!(input.fresh(&batch), [1, 3, 5]);
        input.consumed(tp("a", 0), 11, Instant::now());
        assert_eq!(input.offsets().get(&tp("a", 0)), Some(&12));
        input.stop(&tp("a", 0));
        assert_eq!(input.fresh(&batch), [3]);
        assert_eq!(input.owned(), BTreeSet::from([1]));
    }

    #[test]
    fn a_partition_is_quiet_once_idle_and_read_to_its_end_on_every_topic() {
        let mut input = InputProgress::default();
        input.start(tp("a", 0), None);
        input.start(tp("b", 0), None);
        assert!(!input.quiet(0, Duration::ZERO), "nothing read to its end");
        input.reached_end(tp("a", 0));
        assert!(!input.quiet(0, Duration::ZERO), "b not read to its end");
        input.reached_end(tp("b", 0));
        assert!(input.quiet(0, Duration::ZERO));
        assert!(!input.quiet(0, Duration::from_secs(3600)), "not idle yet");
        input.consumed(tp("b", 0), 0, Instant::now());
        assert!(!input.quiet(0, Duration::ZERO), "b delivered since");
        // The end of a partition not processed here is not remembered.
        input.reached_end(tp("c", 0));
        input.start(tp("c", 0), None);
        input.reached_end(tp("a", 0));
        input.reached_end(tp("b", 0));
        assert!(!input.quiet(0, Duration::ZERO));
    }
}
