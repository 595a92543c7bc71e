//! Timers: every member's next due time, per partition, in due order, kept
//! as Flink's RocksDB timer service keeps them: all of them in the store,
//! the earliest in memory.
//!
//! The store's timer index (`state::keys::timer_key`) holds, for every
//! stored member with a due time, a key at or before it: written with the
//! member's record when a commit finds no key known at or before its new
//! due time (`Engine::stage_commit`), and taken when the clock reaches it.
//! A due time moved later keeps its key (most events do that), so most
//! commits write no key at all; the key, once reached, finds the later time
//! and the member is keyed again there (`Engine::fire_until`).
//!
//! This queue holds what the store holds up to a *horizon* (the last key
//! read from it), read a chunk at a time as the partition's clock gets
//! there, plus the entries of members changed since the last commit, let
//! go at the commit (their keys stand for them). Memory is therefore set by
//! the chunk and the commit size, not by the number of members. A commit
//! written behind (`Engine::write_behind`) cannot let them go before its
//! write lands, since a read of the store meanwhile would not find their
//! keys: they are kept aside, still due, until then.
//!
//! Entries and keys may be early or stale; when one comes due, the member's
//! own due time says whether it fires or waits. What must never happen is a
//! member with neither an entry at or before its due time in memory nor a
//! key at or before it in the store beyond the horizon.

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

/// The pending timers of one partition that are in memory: the stored keys
/// up to the horizon and the entries of members changed since the last
/// commit (a member may have an early or stale entry besides its own),
/// ordered by due time, then member id (so timers due together fire in a
/// fixed order).
#[derive(Debug, Default)]
pub struct TimerQueue {
    entries: BTreeSet<Entry>,
    /// Entries a commit written behind let go of while its write is in
    /// flight: their keys are in that write, so a read of the store does
    /// not find them yet, and they count as entries until it lands
    /// ([`TimerQueue::committed_behind`], [`TimerQueue::landed`]).
    covered: BTreeSet<Entry>,
    /// The last key read from the store; `None` before the first read.
    /// Every stored key up to it is in `entries` (or has fired).
    horizon: Option<Entry>,
    /// The last read reached the end of the stored timers: nothing is
    /// stored beyond the horizon until a commit writes there.
    read_all: bool,
}

/// What the queue can say about the timers due by a time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Next {
    /// The earliest timer is due: [`TimerQueue::pop_due`] takes it.
    Due,
    /// None is due.
    Idle,
    /// Stored timers beyond the horizon may be due: read the next chunk
    /// ([`TimerQueue::read_after`], [`TimerQueue::add_read`]) and ask again.
    Read,
}

impl TimerQueue {
    /// Moves `member`'s timer from `from_ms` to `to_ms` (`NEVER`: none),
    /// exactly: the entry at `from_ms` goes.
    pub fn reschedule(&mut self, member: &str, from_ms: i64, to_ms: i64) {
        if from_ms == to_ms {
            return;
        }
        if from_ms != NEVER && !self.entries.remove(&(from_ms, member) as &dyn Key) {
            self.covered.remove(&(from_ms, member) as &dyn Key);
        }
        if to_ms != NEVER {
            self.entries.insert(Entry {
                due_ms: to_ms,
                member: member.into(),
            });
        }
    }

    /// Whether `(due_ms, member)` is at or before the horizon.
    pub fn within(&self, due_ms: i64, member: &str) -> bool {
        self.horizon
            .as_ref()
            .is_some_and(|h| (due_ms, member) <= h.key())
    }

    /// Whether the timers due by `until_ms` are all in memory, and if so
    /// whether one is.
    pub fn next(&self, until_ms: i64) -> Next {
        let first = self
            .first()
            .filter(|e| self.read_all || self.within(e.due_ms, &e.member));
        match first {
            Some(e) if e.due_ms <= until_ms => Next::Due,
            Some(_) => Next::Idle,
            None if self.wants_read(until_ms) => Next::Read,
            // Anything beyond the horizon is due after it, after `until_ms`.
            None => Next::Idle,
        }
    }

    /// Whether stored timers not yet read may be due by `until_ms`.
    pub fn wants_read(&self, until_ms: i64) -> bool {
        !self.read_all && self.horizon.as_ref().is_none_or(|h| h.due_ms <= until_ms)
    }

    /// Where the next read starts: after this key (`None`: at the first).
    pub fn read_after(&self) -> Option<(i64, &str)> {
        self.horizon.as_ref().map(|h| (h.due_ms, &*h.member))
    }

    /// Takes the next chunk of stored timers read after
    /// [`TimerQueue::read_after`], up to and including `last` (the last key
    /// read, which moves the horizon); `complete` when the read reached the
    /// end.
    pub fn add_read(
        &mut self,
        read: Vec<(i64, Box<str>)>,
        last: Option<(i64, Box<str>)>,
        complete: bool,
    ) {
        for (due_ms, member) in read {
            let e = Entry { due_ms, member };
            if !self.covered.contains(&e) {
                self.entries.insert(e);
            }
        }
        if let Some((due_ms, member)) = last {
            self.horizon = Some(Entry { due_ms, member });
        }
        self.read_all = complete;
    }

    /// A commit has written the store: every member with an entry beyond
    /// the horizon has a key at or before its due time stored now, so
    /// memory lets those entries go, and a later read finds the keys.
    pub fn committed(&mut self) {
        drop(beyond(&mut self.entries, &self.horizon));
        // The commit may have stored keys beyond the horizon.
        self.read_all = false;
    }

    /// [`TimerQueue::committed`] for a commit whose write is in flight:
    /// the entries beyond the horizon are its keys' only stand-ins until
    /// it lands, so they are kept aside, still due as entries, instead of
    /// let go. Call [`TimerQueue::landed`] (or [`TimerQueue::refused`])
    /// before the next commit.
    pub fn committed_behind(&mut self) {
        debug_assert!(self.covered.is_empty(), "one write in flight");
        self.covered = beyond(&mut self.entries, &self.horizon);
        self.read_all = false;
    }

    /// The write in flight has landed: its keys are in the store. Entries
    /// kept aside that a read has since passed (it could not see their
    /// keys) go back to the queue; the rest are let go, as at a commit.
    pub fn landed(&mut self) {
        drop(beyond(&mut self.covered, &self.horizon));
        self.entries.append(&mut self.covered);
        // What was let go is stored beyond the horizon.
        self.read_all = false;
    }

    /// The write in flight was refused: its keys are not in the store, so
    /// the entries kept aside stay in the queue (they go at the commit that
    /// writes the refused batch again).
    pub fn refused(&mut self) {
        self.entries.append(&mut self.covered);
    }

    /// Whether the earliest entry is one kept aside.
    fn covered_first(&self) -> bool {
        match (self.entries.first(), self.covered.first()) {
            (Some(a), Some(b)) => b < a,
            (a, _) => a.is_none(),
        }
    }

    /// The earliest entry, kept aside or not.
    fn first(&self) -> Option<&Entry> {
        if self.covered_first() {
            self.covered.first()
        } else {
            self.entries.first()
        }
    }

    /// Takes the earliest timer if it is due at or before `until_ms`; call
    /// when [`TimerQueue::next`] says `Due`.
    pub fn pop_due(&mut self, until_ms: i64) -> Option<(i64, Box<str>)> {
        let set = if self.covered_first() {
            &mut self.covered
        } else {
            &mut self.entries
        };
        if set.first()?.due_ms > until_ms {
            return None;
        }
        set.pop_first().map(|e| (e.due_ms, e.member))
    }

    /// The timers in memory due at or before `until_ms`, in due order.
    pub fn due_by(&self, until_ms: i64) -> impl Iterator<Item = (i64, &str)> {
        let mut a = self.entries.iter().peekable();
        let mut b = self.covered.iter().peekable();
        std::iter::from_fn(move || match (a.peek(), b.peek()) {
            (Some(x), Some(y)) if y < x => b.next(),
            (Some(_), _) => a.next(),
            (None, _) => b.next(),
        })
        .take_while(move |e| e.due_ms <= until_ms)
        .map(|e| (e.due_ms, &*e.member))
    }

    /// Entries in memory.
    pub fn len(&self) -> usize {
        self.entries.len() + self.covered.len()
    }

    #[cfg(test)]
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Every entry in memory, in due order.
    #[cfg(test)]
    pub fn entries(&self) -> impl Iterator<Item = (i64, &str)> {
        self.due_by(i64::MAX)
    }
}

/// Takes the entries beyond `horizon` out of `set` (all of them before the
/// first read).
fn beyond(set: &mut BTreeSet<Entry>, horizon: &Option<Entry>) -> BTreeSet<Entry> {
    match horizon {
        None => std::mem::take(set),
        Some(h) => {
            // Everything from the smallest key after the horizon's.
            let mut after = String::with_capacity(h.member.len() + 1);
            after.push_str(&h.member);
            after.push('\0');
            set.split_off(&(h.due_ms, after.as_str()) as &dyn Key)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A queue whose store holds nothing.
    fn all_read() -> TimerQueue {
        let mut q = TimerQueue::default();
        q.add_read(Vec::new(), None, true);
        q
    }

    #[test]
    fn timers_come_out_in_due_order_then_member_order() {
        let mut q = all_read();
        q.reschedule("b", NEVER, 20);
        q.reschedule("a", NEVER, 20);
        q.reschedule("c", NEVER, 10);
        assert_eq!(q.next(5), Next::Idle);
        assert_eq!(q.next(10), Next::Due);
        assert_eq!(q.pop_due(5), None);
        assert_eq!(q.pop_due(20), Some((10, "c".into())));
        assert_eq!(q.pop_due(20), Some((20, "a".into())));
        assert_eq!(q.pop_due(20), Some((20, "b".into())));
        assert!(q.is_empty());
    }

    #[test]
    fn a_rescheduled_member_has_one_timer_at_its_new_time() {
        let mut q = all_read();
        q.reschedule("m", NEVER, 10);
        q.reschedule("m", 10, 30);
        assert_eq!(q.len(), 1);
        assert_eq!(q.pop_due(20), None);
        assert_eq!(q.pop_due(30), Some((30, "m".into())));
        q.reschedule("n", NEVER, 5);
        q.reschedule("n", 5, NEVER);
        assert!(q.is_empty());
    }

    #[test]
    fn timers_beyond_the_horizon_wait_for_the_store_to_be_read_that_far() {
        let mut q = TimerQueue::default();
        // Nothing read yet: whatever is due must come from the store.
        q.reschedule("new", NEVER, 50);
        assert_eq!(q.next(10), Next::Read);
        assert_eq!(q.read_after(), None);
        q.add_read(
            vec![(20, "a".into()), (30, "b".into())],
            Some((30, "b".into())),
            false,
        );
        assert_eq!(q.read_after(), Some((30, "b")));
        assert_eq!(q.next(25), Next::Due);
        assert_eq!(q.pop_due(25), Some((20, "a".into())));
        assert_eq!(q.next(25), Next::Idle);
        assert_eq!(q.pop_due(40), Some((30, "b".into())));
        // "new" at 50 is beyond the horizon: the store may hold earlier.
        assert_eq!(q.next(60), Next::Read);
        q.add_read(vec![(40, "c".into())], Some((40, "c".into())), true);
        assert_eq!(q.pop_due(60), Some((40, "c".into())));
        assert_eq!(q.next(60), Next::Due);
        // A commit stores what is beyond the horizon: memory lets it go,
        // and the next read finds it.
        q.committed();
        assert!(q.is_empty());
        assert_eq!(q.next(60), Next::Read);
        assert_eq!(q.read_after(), Some((40, "c")));
    }

    #[test]
    fn entries_a_commit_in_flight_covers_stay_due_until_it_lands() {
        let mut q = TimerQueue::default();
        q.add_read(vec![(20, "a".into())], Some((20, "a".into())), false);
        q.reschedule("b", NEVER, 30);
        q.reschedule("c", NEVER, 50);
        // Written behind: "b" and "c" are beyond the horizon, their keys in
        // the write in flight.
        q.committed_behind();
        assert_eq!(q.len(), 3);
        assert_eq!(q.next(25), Next::Due);
        assert_eq!(q.pop_due(25), Some((20, "a".into())));
        // A read meanwhile finds nothing of theirs in the store, reaches
        // its end, and moves the horizon past "b".
        assert_eq!(q.next(40), Next::Read);
        q.add_read(vec![(35, "d".into())], Some((35, "d".into())), true);
        let due: Vec<_> = q.due_by(40).collect();
        assert_eq!(due, [(30, "b"), (35, "d")]);
        // Landed: "b" (passed by the read) stays, "c" goes (its key is in
        // the store now, and the store is to be read again beyond the
        // horizon).
        q.landed();
        let left: Vec<_> = q.entries().collect();
        assert_eq!(left, [(30, "b"), (35, "d")]);
        assert_eq!(q.next(60), Next::Due);
        q.pop_due(60);
        q.pop_due(60);
        assert_eq!(q.next(60), Next::Read);
    }

    #[test]
    fn entries_of_a_refused_commit_stay_in_the_queue() {
        let mut q = all_read();
        q.add_read(Vec::new(), Some((10, "h".into())), true);
        q.reschedule("b", NEVER, 30);
        q.committed_behind();
        q.refused();
        assert_eq!(q.entries().collect::<Vec<_>>(), [(30, "b")]);
        // Rescheduled, an entry kept aside moves like any other.
        q.committed_behind();
        q.reschedule("b", 30, 40);
        assert_eq!(q.entries().collect::<Vec<_>>(), [(40, "b")]);
    }

    #[test]
    fn a_commit_keeps_what_is_within_the_horizon() {
        let mut q = TimerQueue::default();
        let read = vec![(20, "a".into()), (30, "b".into())];
        q.add_read(read, Some((30, "b".into())), false);
        q.reschedule("c", NEVER, 30);
        q.reschedule("a", 20, 25);
        q.reschedule("d", NEVER, 31);
        q.committed();
        let left: Vec<_> = q.entries().collect();
        assert_eq!(left, [(25, "a"), (30, "b")]);
    }
}
