//! Timers in memory: every member's next due time, per partition, in due
//! order, as Flink keeps event-time timers in a heap per key group.
//!
//! Nothing here is durable: each member record holds its own due time
//! (`MemberState::timer_due_ms`), so the queue of a partition is rebuilt
//! from its member records when the partition is assigned (at start, after
//! a restore or a bootstrap). Scheduling is a change in memory only; the
//! member's record, written once per commit, carries the new due time.

use std::borrow::Borrow;
use std::cmp::Ordering;
use std::collections::BTreeSet;

use crate::state::member::NEVER;

/// One pending timer: `member` is due at `due_ms`.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Entry {
    due_ms: i64,
    member: Box<str>,
}

/// What an entry is compared by, so that one can be found with a borrowed
/// member id (no allocation to reschedule or cancel).
trait Key {
    fn key(&self) -> (i64, &str);
}

impl Key for Entry {
    fn key(&self) -> (i64, &str) {
        (self.due_ms, &self.member)
    }
}

impl Key for (i64, &str) {
    fn key(&self) -> (i64, &str) {
        *self
    }
}

impl<'a> Borrow<dyn Key + 'a> for Entry {
    fn borrow(&self) -> &(dyn Key + 'a) {
        self
    }
}

impl PartialEq for dyn Key + '_ {
    fn eq(&self, other: &Self) -> bool {
        self.key() == other.key()
    }
}

impl Eq for dyn Key + '_ {}

impl PartialOrd for dyn Key + '_ {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for dyn Key + '_ {
    fn cmp(&self, other: &Self) -> Ordering {
        self.key().cmp(&other.key())
    }
}

impl PartialOrd for Entry {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Entry {
    fn cmp(&self, other: &Self) -> Ordering {
        self.key().cmp(&other.key())
    }
}

/// The pending timers of one partition: at most one per member, ordered by
/// due time, then member id (so timers due together fire in a fixed order).
#[derive(Debug, Default)]
pub struct TimerQueue {
    entries: BTreeSet<Entry>,
}

impl TimerQueue {
    /// Moves `member`'s timer from `from_ms` to `to_ms` (`NEVER`: none),
    /// exactly: the entry at `from_ms` goes.
    pub fn reschedule(&mut self, member: &str, from_ms: i64, to_ms: i64) {
        if from_ms == to_ms {
            return;
        }
        if from_ms != NEVER {
            self.entries.remove(&(from_ms, member) as &dyn Key);
        }
        if to_ms != NEVER {
            self.entries.insert(Entry {
                due_ms: to_ms,
                member: member.into(),
            });
        }
    }

    /// The earliest due time, if any timer is pending.
    pub fn next_due(&self) -> Option<i64> {
        self.entries.first().map(|e| e.due_ms)
    }

    /// Takes the earliest timer if it is due at or before `until_ms`.
    pub fn pop_due(&mut self, until_ms: i64) -> Option<(i64, Box<str>)> {
        if self.next_due()? > until_ms {
            return None;
        }
        self.entries.pop_first().map(|e| (e.due_ms, e.member))
    }

    /// The timers due at or before `until_ms`, in due order.
    pub fn due_by(&self, until_ms: i64) -> impl Iterator<Item = (i64, &str)> {
        self.entries
            .iter()
            .take_while(move |e| e.due_ms <= until_ms)
            .map(|e| (e.due_ms, &*e.member))
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    #[cfg(test)]
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Every entry, in due order.
    #[cfg(test)]
    pub fn entries(&self) -> impl Iterator<Item = (i64, &str)> {
        self.entries.iter().map(|e| (e.due_ms, &*e.member))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timers_come_out_in_due_order_then_member_order() {
        let mut q = TimerQueue::default();
        q.reschedule("b", NEVER, 20);
        q.reschedule("a", NEVER, 20);
        q.reschedule("c", NEVER, 10);
        assert_eq!(q.next_due(), Some(10));
        assert_eq!(q.pop_due(5), None);
        assert_eq!(q.pop_due(20), Some((10, "c".into())));
        assert_eq!(q.pop_due(20), Some((20, "a".into())));
        assert_eq!(q.pop_due(20), Some((20, "b".into())));
        assert!(q.is_empty());
    }

    #[test]
    fn a_rescheduled_member_has_one_timer_at_its_new_time() {
        let mut q = TimerQueue::default();
        q.reschedule("m", NEVER, 10);
        q.reschedule("m", 10, 30);
        assert_eq!(q.len(), 1);
        assert_eq!(q.pop_due(20), None);
        assert_eq!(q.pop_due(30), Some((30, "m".into())));
        q.reschedule("n", NEVER, 5);
        q.reschedule("n", 5, NEVER);
        assert!(q.is_empty());
    }
}
