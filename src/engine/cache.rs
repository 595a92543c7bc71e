//! The member cache: every member the engine has read or changed, decoded,
//! in front of the store, as Kafka Streams keeps a record cache in front of
//! RocksDB. A member read once is not read (or decoded) again while it
//! stays cached, and a member with many events between two commits is
//! written once, by the commit.
//!
//! An entry is *dirty* from its first change until the next commit writes
//! it. Once a commit has written the dirty ones, clean entries not used
//! lately make room, down to a byte budget (`engine.member_cache_mb`), in
//! two steps: first *packed* ([`crate::state::packed`], a sixth of the
//! size for a typical member), then, still not used when their turn comes
//! again, evicted. A packed member costs an unpack to use, against a
//! RocksDB read (index, filter, block, decode) for one not cached: several
//! times as many members stay in memory for the same budget. States are
//! boxed: handing one to the engine and back moves a pointer, not the
//! state.

use hashbrown::DefaultHashBuilder;
use smallvec::SmallVec;
use std::borrow::Cow;
use std::hash::{BuildHasher, Hasher};

use super::answers::Answers;
use super::slot_index::SlotIndex;
use crate::state::hint::prefetch;
use crate::state::member::NEVER;
use crate::state::{packed, MemberState};

/// Bytes one cached member costs whatever its form: its slot (key inline,
/// see [`SlotKey`]) and its index entry (8 bytes, at a load factor of at
/// most 7/8: up to twice that just after the index doubled).
const SLOT_BYTES: usize = std::mem::size_of::<Option<Slot>>() + 16;

/// Bytes a decoded member costs beside its slot: its state (one allocation
/// of the 512-byte size class) and the detectors' remembered answers (one
/// of 80), which a packed member does without.
const DECODED_BYTES: usize = std::mem::size_of::<MemberState>() + std::mem::size_of::<Answers>();

/// Over budget, decoded members are packed down to this fraction of it
/// (a quarter): enough for the members in use now, while the rest of the
/// budget holds the most members packed.
const DECODED_SHARE: usize = 4;

/// Bytes a packed state of `len` bytes costs beside its slot: the
/// allocator rounds small sizes up to 16-byte classes.
fn packed_bytes(len: usize) -> usize {
    len.next_multiple_of(16)
}

/// Where a cached member's timer is, as far as the engine knows. A member
/// with due time `d` always has an entry at or before `d` in its
/// partition's queue in memory, or a key at or before `d` in the store's
/// timer index; entries and keys may be early or stale (the member's own
/// due time decides when one comes due), never missing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TimerMarks {
    /// Due time of the member's entry in the queue in memory (`NEVER`:
    /// none known).
    pub queued_ms: i64,
    /// The store's index has a key of the member at or before this time
    /// (`NEVER`: none known).
    pub key_ms: i64,
    /// Due time in the member's stored record (`NEVER`: none, or no
    /// record): what the partition's timer count counts.
    pub stored_due_ms: i64,
}

impl TimerMarks {
    /// A member as read from the store: its record's due time has a key
    /// at or before it in the index.
    pub fn stored(due_ms: i64) -> Self {
        TimerMarks {
            queued_ms: NEVER,
            key_ms: due_ms,
            stored_due_ms: due_ms,
        }
    }

    /// The entry at `due_ms` was taken from memory and its key, if one was
    /// there, from the store: what was known to be there is no more (a
    /// key known only to be at or before a later time may have been it).
    pub fn taken(&mut self, due_ms: i64) {
        if self.queued_ms == due_ms {
            self.queued_ms = NEVER;
        }
        if self.key_ms != NEVER && self.key_ms >= due_ms {
            self.key_ms = NEVER;
        }
    }

    /// Whether a member due at `due_ms` (not `NEVER`) needs a key written
    /// there: none is known at or before it.
    pub fn needs_key(&self, due_ms: i64) -> bool {
        due_ms != NEVER && (self.key_ms == NEVER || self.key_ms > due_ms)
    }

    /// Whether an entry or key at or before `due_ms` is known.
    pub fn covers(&self, due_ms: i64) -> bool {
        let at_or_before = |t: i64| t != NEVER && t <= due_ms;
        at_or_before(self.queued_ms) || at_or_before(self.key_ms)
    }
}

/// A member as the engine sees it between commits.
pub struct Cached {
    pub state: Box<MemberState>,
    /// The detectors' last answers for this state (never stored; boxed, so
    /// that the cache can hold them for decoded members only).
    pub answers: Box<Answers>,
    /// Changed since the last commit: the commit writes it.
    pub dirty: bool,
    /// Deleted at the next commit; to the engine the member no longer exists.
    pub evicted: bool,
    pub timer: TimerMarks,
}

impl Cached {
    /// A member as stored (or new), unchanged so far.
    pub fn clean(state: MemberState) -> Self {
        Cached {
            timer: TimerMarks::stored(state.timer_due_ms),
            state: Box::new(state),
            answers: Box::default(),
            dirty: false,
            evicted: false,
        }
    }

    /// A member whose stored state did not decode: deleted at the commit.
    pub fn gone() -> Self {
        Cached {
            state: Box::new(MemberState::new(0)),
            answers: Box::default(),
            dirty: true,
            evicted: true,
            timer: TimerMarks::stored(NEVER),
        }
    }
}

/// A slot's key, inline up to 40 bytes: a partition and a member id of up
/// to 36 bytes (a UUID) sit in the slot itself, so comparing keys in a
/// lookup touches no memory beyond the slot (a key in a box of its own
/// cost one more cache miss a lookup: a tenth of the engine thread).
type SlotKey = SmallVec<[u8; 40]>;

/// One cached member.
struct Slot {
    /// Partition (big-endian) then member id: the store key, and how the
    /// slot is found.
    key: SlotKey,
    partition: u32,
    state: Body,
    /// The detectors' remembered answers while decoded or checked out;
    /// packing drops them (a memo: they are worked out again, as for a
    /// member read from the store), which keeps a packed member's slot 72
    /// bytes smaller.
    answers: Option<Box<Answers>>,
    dirty: bool,
    evicted: bool,
    timer: TimerMarks,
    /// Used since the eviction hand last passed (CLOCK: a second chance).
    referenced: bool,
    /// Written by a commit whose store write may not have landed yet: the
    /// slot stays (read from the store, the member would be found as it
    /// was before that write) until [`MemberCache::landed`].
    in_flight: bool,
}

/// A cached member's state, in the form it is in.
enum Body {
    /// Checked out: the engine holds it.
    Out,
    Decoded(Box<MemberState>),
    /// Not used lately, so packed small (see [`crate::state::packed`]).
    Packed(Box<[u8]>),
}

impl Body {
    /// Bytes it costs beside its slot (a checked-out state comes back
    /// decoded).
    fn bytes(&self) -> usize {
        match self {
            Body::Out | Body::Decoded(_) => DECODED_BYTES,
            Body::Packed(p) => packed_bytes(p.len()),
        }
    }

    /// The state, decoded.
    fn state(&self) -> Option<Cow<'_, MemberState>> {
        match self {
            Body::Out => None,
            Body::Decoded(m) => Some(Cow::Borrowed(m)),
            Body::Packed(p) => Some(Cow::Owned(unpack_member(p))),
        }
    }
}

/// How many members ahead [`MemberCache::commit`] fetches.
const AHEAD: usize = 8;

/// How far ahead of a lookup [`MemberCache::prefetch`] goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    Bucket,
    Slot,
    State,
}

/// Cache lines a slot may span.
const SLOT_LINES: usize = std::mem::size_of::<Option<Slot>>().div_ceil(64) + 1;

/// Cache lines of the remembered answers.
const ANSWERS_LINES: usize = std::mem::size_of::<Answers>().div_ceil(64);

/// Cache lines of a decoded member's state.
const DECODED_LINES: usize = std::mem::size_of::<MemberState>().div_ceil(64);

fn unpack_member(p: &[u8]) -> MemberState {
    // Packed by this process from a state in memory a moment ago: an
    // error is a bug in `packed`, never bad data (its round trip is
    // property-tested).
    packed::unpack(p).expect("a member packed by this process unpacks")
}

/// A member cache's fill.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct CacheStats {
    /// Members decoded (checked out included).
    pub decoded: usize,
    pub packed: usize,
    /// What they cost, as counted against the budget.
    pub bytes: usize,
}

impl CacheStats {
    pub fn members(&self) -> usize {
        self.decoded + self.packed
    }
}

impl std::ops::Add for CacheStats {
    type Output = CacheStats;
    fn add(self, o: CacheStats) -> CacheStats {
        CacheStats {
            decoded: self.decoded + o.decoded,
            packed: self.packed + o.packed,
            bytes: self.bytes + o.bytes,
        }
    }
}

/// A member whose entry was written by a commit, or deleted by it, with
/// where its timer is (which the commit brings up to date).
pub enum Written<'a> {
    Member {
        partition: u32,
        member_id: &'a str,
        state: &'a MemberState,
        timer: &'a mut TimerMarks,
    },
    Deleted {
        partition: u32,
        member_id: &'a str,
        timer: TimerMarks,
    },
}

impl Written<'_> {
    pub fn partition(&self) -> u32 {
        match self {
            Written::Member { partition, .. } | Written::Deleted { partition, .. } => *partition,
        }
    }
}

/// Members in a slab, found through an index of slab numbers
/// ([`SlotIndex`]); packed, then evicted, by CLOCK (second chance), which
/// needs no list to keep in recency order: a hit costs one lookup and a
/// flag.
pub struct MemberCache {
    slots: Vec<Option<Slot>>,
    index: SlotIndex,
    hasher: DefaultHashBuilder,
    free: Vec<u32>,
    live: usize,
    /// Members held packed.
    packed: usize,
    /// What the entries cost, by the constants above.
    bytes: usize,
    budget: usize,
    /// Slots changed since the last commit.
    dirty: Vec<u32>,
    /// Slots the last commit wrote, until its write has landed.
    in_flight: Vec<u32>,
    /// Reused by [`MemberCache::commit`] to put the changed slots in order.
    commit_order: Vec<(u32, u32)>,
    /// Slots of members the last commits deleted: they leave at a trim
    /// once the write has landed (unless back already).
    leaving: Vec<u32>,
    pack_hand: usize,
    evict_hand: usize,
    /// Reused to pack members.
    pack_buf: Vec<u8>,
}

/// A member's cache key, on the stack for a UUID-sized id.
fn member_key_bytes(partition: u32, member_id: &str) -> SlotKey {
    let mut key = SlotKey::new();
    key.extend_from_slice(&partition.to_be_bytes());
    key.extend_from_slice(member_id.as_bytes());
    key
}

fn split(key: &[u8]) -> (u32, &str) {
    let (p, id) = key.split_at(4);
    (
        u32::from_be_bytes(p.try_into().expect("4 bytes")),
        std::str::from_utf8(id).expect("cached under a member id"),
    )
}

impl MemberCache {
    /// A cache of about `bytes` of clean members (at least one).
    pub fn with_bytes(bytes: usize) -> Self {
        // Sized up front for the members the budget holds decoded (pages
        // are only touched as slots fill): grown by doubling, the slab and
        // the index copied themselves into fresh memory over and over
        // while the cache filled, a page fault every 4 KiB. Bounded, so a
        // huge budget does not reserve gigabytes of address space at once.
        let presize = (bytes / (SLOT_BYTES + DECODED_BYTES)).clamp(1, 1 << 22);
        MemberCache {
            slots: Vec::with_capacity(presize),
            index: SlotIndex::with_capacity(presize),
            hasher: DefaultHashBuilder::default(),
            free: Vec::new(),
            live: 0,
            packed: 0,
            bytes: 0,
            budget: bytes,
            dirty: Vec::new(),
            in_flight: Vec::new(),
            commit_order: Vec::new(),
            leaving: Vec::new(),
            pack_hand: 0,
            evict_hand: 0,
            pack_buf: Vec::with_capacity(DECODED_BYTES),
        }
    }

    /// Members by form and what they cost.
    pub fn stats(&self) -> CacheStats {
        CacheStats {
            decoded: self.live - self.packed,
            packed: self.packed,
            bytes: self.bytes,
        }
    }

    /// Whether one more member fits the budget, decoded.
    pub fn has_room(&self) -> bool {
        self.bytes + SLOT_BYTES + DECODED_BYTES <= self.budget
    }

    /// Members changed since the last commit (kept until it writes them,
    /// whatever the capacity).
    pub fn changed(&self) -> usize {
        self.dirty.len()
    }

    /// The hash a member is indexed under: of its partition and id as
    /// they are, so that a lookup builds no key (copying the id into one
    /// was 1.4% of the engine thread).
    fn hash(&self, partition: u32, member_id: &[u8]) -> u64 {
        let mut h = self.hasher.build_hasher();
        h.write_u32(partition);
        h.write(member_id);
        h.finish()
    }

    /// The slot of the member, its hash known.
    fn find(&self, hash: u64, partition: u32, member_id: &[u8]) -> Option<u32> {
        let slots = &self.slots;
        self.index.find(hash, |i| {
            slots[i as usize]
                .as_ref()
                .is_some_and(|s| s.partition == partition && s.key[4..] == *member_id)
        })
    }

    /// Asks the processor for the slot a lookup of `hash` will most likely
    /// compare (its index bucket should be in the CPU cache by now).
    fn prefetch_slot(&self, hash: u64) {
        if let Some(i) = self.index.candidate(hash) {
            prefetch(
                self.slots.as_ptr().wrapping_add(i as usize).cast(),
                SLOT_LINES,
            );
        }
    }

    /// The hash a member's lookups use, for [`MemberCache::prefetch`].
    pub fn hash_of(&self, partition: u32, member_id: &str) -> u64 {
        self.hash(partition, member_id.as_bytes())
    }

    /// Hints for a member the engine will look up a few events from now
    /// (`hash`: [`MemberCache::hash_of`] it), each a step further along
    /// what the lookup reads, given in turn as the member comes nearer:
    /// `Step::Bucket` its index bucket, `Step::Slot` (the bucket in the CPU
    /// cache by then) its slot, `Step::State` (the slot too) its decoded
    /// state and remembered answers. The slot is the first whose tag
    /// matches the hash, not compared by key: another member's, rarely, and
    /// then a hint wasted. Only hints: nothing the program sees changes.
    pub fn prefetch(&self, step: Step, hash: u64) {
        match step {
            Step::Bucket => self.index.prefetch(hash),
            Step::Slot => self.prefetch_slot(hash),
            Step::State => {
                let Some(i) = self.index.candidate(hash) else {
                    return;
                };
                let Some(s) = self.slots[i as usize].as_ref() else {
                    return;
                };
                if let Body::Decoded(m) = &s.state {
                    prefetch((&**m as *const MemberState).cast(), DECODED_LINES);
                }
                if let Some(a) = &s.answers {
                    prefetch((&**a as *const Answers).cast(), ANSWERS_LINES);
                }
            }
        }
    }

    /// The members of `member_ids` without an entry, in their order. The
    /// lookups of a batch are independent, so each one's index bucket is
    /// asked for 16 members ahead and its slot 8 ahead: the processor
    /// waits for memory once for many lookups instead of twice for each.
    pub fn absent<'a>(&self, partition: u32, member_ids: &[&'a str]) -> Vec<&'a str> {
        const BUCKET_AHEAD: usize = 16;
        const SLOT_AHEAD: usize = 8;
        let hashes: Vec<u64> = member_ids
            .iter()
            .map(|id| self.hash_of(partition, id))
            .collect();
        let mut absent = Vec::new();
        for (j, id) in member_ids.iter().enumerate() {
            if let Some(&h) = hashes.get(j + BUCKET_AHEAD) {
                self.index.prefetch(h);
            }
            if let Some(&h) = hashes.get(j + SLOT_AHEAD) {
                self.prefetch_slot(h);
            }
            if self.find(hashes[j], partition, id.as_bytes()).is_none() {
                absent.push(*id);
            }
        }
        absent
    }

    fn lookup(&self, partition: u32, member_id: &str) -> Option<u32> {
        self.find(
            self.hash_of(partition, member_id),
            partition,
            member_id.as_bytes(),
        )
    }

    /// Whether the member has an entry (clean, dirty or deleted).
    pub fn contains(&self, partition: u32, member_id: &str) -> bool {
        self.lookup(partition, member_id).is_some()
    }

    /// Takes a member's state to work on; give it back with
    /// [`MemberCache::checkin`]. `None` when the member has no entry.
    pub fn checkout(&mut self, partition: u32, member_id: &str) -> Option<Cached> {
        self.checkout_slot(partition, member_id).map(|(_, cm)| cm)
    }

    /// [`MemberCache::checkout`], with the member's slot for
    /// [`MemberCache::checkin_at`] (no second lookup).
    pub fn checkout_slot(&mut self, partition: u32, member_id: &str) -> Option<(u32, Cached)> {
        let i = self.lookup(partition, member_id)?;
        Some((i, self.checkout_at(i)))
    }

    /// [`MemberCache::checkout`] of the member in slot `i`. Slots stay put
    /// until the next commit, so the engine can come back to a member
    /// without looking it up again.
    pub fn checkout_at(&mut self, i: u32) -> Cached {
        let s = self.slots[i as usize]
            .as_mut()
            .expect("indexed slot is live");
        s.referenced = true;
        let (body, answers, dirty, evicted, timer) = (
            std::mem::replace(&mut s.state, Body::Out),
            s.answers.take().unwrap_or_default(),
            s.dirty,
            s.evicted,
            s.timer,
        );
        let state = match body {
            Body::Decoded(m) => m,
            Body::Packed(p) => {
                self.unpacked(p.len());
                Box::new(unpack_member(&p))
            }
            Body::Out => panic!("a member is checked out once at a time"),
        };
        Cached {
            state,
            answers,
            dirty,
            evicted,
            timer,
        }
    }

    /// Gives a member's state back (or adds it, if it has no entry);
    /// returns its slot.
    pub fn checkin(&mut self, partition: u32, member_id: &str, cm: Cached) -> u32 {
        let hash = self.hash_of(partition, member_id);
        let i = match self.find(hash, partition, member_id.as_bytes()) {
            Some(i) => i,
            None => self.insert(hash, partition, member_id),
        };
        self.checkin_at(i, cm);
        i
    }

    /// [`MemberCache::checkin`] of a member the caller knows has no entry
    /// (it just looked, and added none since): one lookup fewer, which is
    /// a cache miss on a large table.
    pub fn checkin_new(&mut self, partition: u32, member_id: &str, cm: Cached) -> u32 {
        debug_assert!(
            self.lookup(partition, member_id).is_none(),
            "checkin_new of a cached member"
        );
        let i = self.insert(self.hash_of(partition, member_id), partition, member_id);
        self.checkin_at(i, cm);
        i
    }

    /// [`MemberCache::checkin`] into the slot it came from.
    pub fn checkin_at(&mut self, i: u32, cm: Cached) {
        let s = self.slots[i as usize]
            .as_mut()
            .expect("indexed slot is live");
        let became_dirty = cm.dirty && !s.dirty;
        let old = std::mem::replace(&mut s.state, Body::Decoded(cm.state));
        s.answers = Some(cm.answers);
        s.dirty = cm.dirty;
        s.evicted = cm.evicted;
        s.timer = cm.timer;
        s.referenced = true;
        // Usually checked out (`Out`); a `checkin` over a cached member
        // replaces it, and one held packed stops counting as packed.
        if let Body::Packed(p) = old {
            self.unpacked(p.len());
        }
        if became_dirty {
            self.dirty.push(i);
        }
    }

    /// Counts a member held packed in `len` bytes as decoded again.
    fn unpacked(&mut self, len: usize) {
        self.packed -= 1;
        self.bytes = self.bytes + DECODED_BYTES - packed_bytes(len);
    }

    /// A new slot for the member, indexed under `hash` (its
    /// [`Self::hash_of`]).
    fn insert(&mut self, hash: u64, partition: u32, member_id: &str) -> u32 {
        let slot = Slot {
            partition,
            key: member_key_bytes(partition, member_id),
            state: Body::Out,
            answers: None,
            dirty: false,
            evicted: false,
            timer: TimerMarks::stored(NEVER),
            referenced: true,
            in_flight: false,
        };
        let i = match self.free.pop() {
            Some(i) => {
                self.slots[i as usize] = Some(slot);
                i
            }
            None => {
                self.slots.push(Some(slot));
                (self.slots.len() - 1) as u32
            }
        };
        self.index.insert(hash, i);
        self.live += 1;
        self.bytes += SLOT_BYTES + DECODED_BYTES;
        i
    }

    fn remove(&mut self, i: u32) {
        let Some(slot) = self.slots[i as usize].take() else {
            return;
        };
        self.index
            .remove(self.hash(slot.partition, &slot.key[4..]), i);
        self.free.push(i);
        self.live -= 1;
        self.bytes -= SLOT_BYTES + slot.state.bytes();
        if matches!(slot.state, Body::Packed(_)) {
            self.packed -= 1;
        }
    }

    /// A member's state as the engine sees it (deleted members have none);
    /// `None` when it has no entry.
    pub fn peek(&self, partition: u32, member_id: &str) -> Option<Option<Cow<'_, MemberState>>> {
        let i = self.lookup(partition, member_id)?;
        let s = self.slots[i as usize].as_ref().expect("live");
        Some(if s.evicted { None } else { s.state.state() })
    }

    /// Reports every member changed since the last commit to `write`,
    /// partition by partition, and marks them clean and in flight until
    /// [`MemberCache::landed`] (deleted ones leave the cache at a trim
    /// after that). A refused write keeps its members in flight until one
    /// that carries it again lands.
    pub fn commit(&mut self, mut write: impl FnMut(Written<'_>)) {
        let mut dirty = std::mem::take(&mut self.dirty);
        // By partition (stable: otherwise in the order they changed), each
        // slot's partition read once: a sort that read it from the slot at
        // every comparison went to memory n·log n times (a third of the
        // staging of a large commit).
        let slots = &self.slots;
        let mut order = std::mem::take(&mut self.commit_order);
        order.extend(
            dirty
                .iter()
                .map(|&i| (slots[i as usize].as_ref().expect("live").partition, i)),
        );
        order.sort_by_key(|&(partition, _)| partition);
        for (k, &(_, i)) in order.iter().enumerate() {
            // Slots and states are all over memory, and each is a cache
            // miss: the slot AHEAD·2 on is fetched towards the CPU, and the
            // state AHEAD on (its slot fetched earlier), while this one is
            // written.
            if let Some(&(_, j)) = order.get(k + 2 * AHEAD) {
                prefetch(
                    &self.slots[j as usize] as *const Option<Slot> as *const u8,
                    2,
                );
            }
            if let Some(&(_, j)) = order.get(k + AHEAD) {
                if let Some(Slot {
                    state: Body::Decoded(m),
                    ..
                }) = &self.slots[j as usize]
                {
                    prefetch(&**m as *const MemberState as *const u8, DECODED_LINES);
                }
            }
            let s = self.slots[i as usize]
                .as_mut()
                .expect("indexed slot is live");
            if !s.dirty {
                continue;
            }
            s.dirty = false;
            s.in_flight = true;
            self.in_flight.push(i);
            let (partition, member_id) = split(&s.key);
            if s.evicted {
                write(Written::Deleted {
                    partition,
                    member_id,
                    timer: s.timer,
                });
                self.leaving.push(i);
            } else {
                let Body::Decoded(state) = &s.state else {
                    // Only clean members are packed.
                    panic!("a changed member is decoded and in the cache at a commit");
                };
                write(Written::Member {
                    partition,
                    member_id,
                    state,
                    timer: &mut s.timer,
                });
            }
        }
        dirty.clear();
        self.dirty = dirty;
        order.clear();
        self.commit_order = order;
    }

    /// The last commit's write is in the store: its members may be evicted
    /// (read again, the store has them as written).
    pub fn landed(&mut self) {
        for i in self.in_flight.drain(..) {
            if let Some(s) = self.slots[i as usize].as_mut() {
                s.in_flight = false;
            }
        }
    }

    /// Packs and evicts clean members down to the budget (call after a
    /// commit: changed ones stay as they are, and so do those whose write
    /// has not landed). Members deleted by a landed commit leave first.
    /// While the members are over budget, those decoded are packed down to
    /// [`DECODED_SHARE`] of it, then packed ones are evicted. Each hand
    /// gives a member a second
    /// chance: the packing hand if it was used since the hand last passed,
    /// the evicting one if it was packed since. A member leaving keeps
    /// whatever entries it has in memory; read again, it finds its timer
    /// key in the store.
    pub fn trim(&mut self) {
        let mut leaving = std::mem::take(&mut self.leaving);
        leaving.retain(|&i| {
            let Some(s) = &self.slots[i as usize] else {
                return false;
            };
            if !s.evicted || s.dirty {
                // Back since: changed again, it is the engine's to write.
                return false;
            }
            if s.in_flight {
                return true;
            }
            self.remove(i);
            false
        });
        self.leaving = leaving;
        let decoded_budget = self.budget / DECODED_SHARE;
        let mut steps = 2 * self.slots.len();
        while self.bytes > self.budget
            && (self.live - self.packed) * DECODED_BYTES > decoded_budget
            && steps > 0
        {
            steps -= 1;
            self.pack_hand = (self.pack_hand + 1) % self.slots.len();
            // The hand walks the slab in order, but the states it packs are
            // all over memory: the state of the slot AHEAD on is fetched
            // now if that slot's turn will pack it.
            if let Some(Some(Slot {
                state: Body::Decoded(m),
                dirty: false,
                referenced: false,
                ..
            })) = self.slots.get(self.pack_hand + AHEAD)
            {
                prefetch(&**m as *const MemberState as *const u8, DECODED_LINES);
            }
            let Some(s) = self.slots[self.pack_hand].as_mut() else {
                continue;
            };
            let Body::Decoded(m) = &s.state else { continue };
            if s.dirty || std::mem::take(&mut s.referenced) {
                continue;
            }
            self.pack_buf.clear();
            packed::pack(m, &mut self.pack_buf);
            let p: Box<[u8]> = self.pack_buf.as_slice().into();
            self.bytes = self.bytes - DECODED_BYTES + packed_bytes(p.len());
            self.packed += 1;
            s.state = Body::Packed(p);
            s.answers = None;
            // Its second chance against the evicting hand.
            s.referenced = true;
        }
        let mut steps = 2 * self.slots.len();
        while self.bytes > self.budget && self.packed > 0 && steps > 0 {
            steps -= 1;
            self.evict_hand = (self.evict_hand + 1) % self.slots.len();
            let Some(s) = self.slots[self.evict_hand].as_mut() else {
                continue;
            };
            if matches!(s.state, Body::Packed(_))
                && !s.in_flight
                && !std::mem::take(&mut s.referenced)
            {
                self.remove(self.evict_hand as u32);
            }
        }
    }

    /// Forgets every member of `partition`, changes not committed included
    /// (revoked: another instance owns it now, and its state here may go
    /// stale).
    pub fn forget_partition(&mut self, partition: u32) {
        let prefix = partition.to_be_bytes();
        let doomed: Vec<u32> = self
            .slots
            .iter()
            .enumerate()
            .filter(|(_, s)| s.as_ref().is_some_and(|s| s.key.starts_with(&prefix)))
            .map(|(i, _)| i as u32)
            .collect();
        for i in doomed {
            self.remove(i);
        }
        let slots = &self.slots;
        self.dirty.retain(|i| slots[*i as usize].is_some());
        self.in_flight.retain(|i| slots[*i as usize].is_some());
        self.leaving.retain(|i| slots[*i as usize].is_some());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What one decoded member costs.
    fn per() -> usize {
        SLOT_BYTES + DECODED_BYTES
    }

    fn busy(t: i64) -> MemberState {
        let mut m = MemberState::new(t);
        m.purchase_count = t as u32;
        m.remember_event(t as u32);
        m
    }

    fn change(c: &mut MemberCache, id: &str) {
        let mut cm = c.checkout(0, id).unwrap();
        cm.state.purchase_count += 1;
        cm.dirty = true;
        c.checkin(0, id, cm);
    }

    #[test]
    fn a_commit_writes_each_changed_member_once() {
        let mut c = MemberCache::with_bytes(1 << 20);
        for (id, t) in [("a", 1), ("b", 2), ("c", 3)] {
            c.checkin(0, id, Cached::clean(busy(t)));
        }
        for _ in 0..3 {
            change(&mut c, "a");
        }
        change(&mut c, "c");
        let mut written = Vec::new();
        c.commit(|w| {
            if let Written::Member {
                member_id, state, ..
            } = w
            {
                written.push((member_id.to_string(), state.purchase_count));
            }
        });
        written.sort();
        assert_eq!(written, [("a".to_string(), 4), ("c".to_string(), 4)]);
        let mut again = 0;
        c.commit(|_| again += 1);
        assert_eq!(again, 0, "nothing changed since");
    }

    #[test]
    fn a_commit_writes_members_grouped_by_partition_in_the_order_they_changed() {
        let mut c = MemberCache::with_bytes(1 << 20);
        let changes = [(2, "z"), (0, "b"), (2, "a"), (1, "q"), (0, "a"), (2, "m")];
        for (t, &(p, id)) in changes.iter().enumerate() {
            let mut cm = Cached::clean(busy(t as i64));
            cm.dirty = true;
            c.checkin(p, id, cm);
        }
        let mut written = Vec::new();
        c.commit(|w| {
            if let Written::Member {
                partition,
                member_id,
                ..
            } = w
            {
                written.push((partition, member_id.to_string()));
            }
        });
        let want = [(0, "b"), (0, "a"), (1, "q"), (2, "z"), (2, "a"), (2, "m")];
        assert_eq!(written, want.map(|(p, id)| (p, id.to_string())));
    }

    #[test]
    fn members_not_used_lately_are_packed_then_evicted_down_to_the_budget() {
        let mut c = MemberCache::with_bytes(2 * per());
        for (id, t) in [("a", 1), ("b", 2), ("c", 3)] {
            c.checkin(0, id, Cached::clean(busy(t)));
        }
        c.trim();
        // Everything was just used: one pass takes the second chances, the
        // next packs the first two members it meets, which makes room.
        assert_eq!((c.stats().members(), c.stats().packed), (3, 2));
        assert!(c.stats().bytes <= 2 * per());
        // A packed member comes back as it was.
        for (id, t) in [("a", 1), ("b", 2), ("c", 3)] {
            assert_eq!(c.checkout(0, id).map(|cm| *cm.state), Some(busy(t)));
            c.checkin(0, id, Cached::clean(busy(t)));
        }
        assert_eq!(c.stats().packed, 0);
        // Many more members than fit even packed: those not used lately
        // go, the budget holds, more members stay than would decoded, and
        // one used all along stays.
        let mut c = MemberCache::with_bytes(20 * per());
        for t in 10..1000 {
            c.checkin(0, &t.to_string(), Cached::clean(busy(t)));
            let _ = c.checkout(0, "10").map(|cm| c.checkin(0, "10", cm));
            c.trim();
        }
        assert!(c.stats().bytes <= 20 * per(), "{} bytes", c.stats().bytes);
        assert!(
            c.stats().members() > 40 && c.stats().packed > 20,
            "{} members",
            c.stats().members()
        );
        assert!(c.contains(0, "10"));
        assert!(!c.contains(0, "11"));
        assert_eq!(c.checkout(0, "500").map(|cm| *cm.state), None);
        let last = c.checkout(0, "999").map(|cm| *cm.state);
        assert_eq!(last, Some(busy(999)));
    }

    /// A cache that holds nothing clean, with "a" and "b" changed.
    fn two_changed_over_budget() -> MemberCache {
        let mut c = MemberCache::with_bytes(1);
        for (id, t) in [("a", 1), ("b", 2)] {
            c.checkin(0, id, Cached::clean(busy(t)));
            change(&mut c, id);
        }
        c
    }

    #[test]
    fn changed_members_are_neither_packed_nor_evicted_before_the_commit() {
        let mut c = two_changed_over_budget();
        c.trim();
        c.trim();
        assert_eq!((c.stats().members(), c.stats().packed), (2, 0));
        let mut written = 0;
        c.commit(|_| written += 1);
        assert_eq!(written, 2);
        c.landed();
        c.trim();
        c.trim();
        assert_eq!(c.stats().members(), 0);
    }

    #[test]
    fn members_whose_write_has_not_landed_are_packed_but_not_evicted() {
        let mut c = two_changed_over_budget();
        c.commit(|_| {});
        c.trim();
        c.trim();
        assert_eq!((c.stats().members(), c.stats().packed), (2, 2));
        let cm = c.checkout(0, "a").unwrap();
        assert_eq!(cm.state.purchase_count, 2);
        c.checkin(0, "a", cm);
        c.landed();
        c.trim();
        c.trim();
        assert_eq!(c.stats().members(), 0);
    }

    /// A cache with room for one decoded member and one packed, holding
    /// `busy(1)` as "a" and `busy(2)` as "b", one of them packed.
    fn one_of_two_packed() -> MemberCache {
        let mut c = MemberCache::with_bytes(per() + SLOT_BYTES + 64);
        c.checkin(0, "a", Cached::clean(busy(1)));
        c.checkin(0, "b", Cached::clean(busy(2)));
        c.trim();
        assert_eq!(c.stats().packed, 1);
        c
    }

    #[test]
    fn a_checkin_over_a_packed_member_replaces_it_and_keeps_the_count() {
        let mut c = one_of_two_packed();
        for (id, t) in [("a", 3), ("b", 4)] {
            c.checkin(0, id, Cached::clean(busy(t)));
        }
        let s = c.stats();
        assert_eq!((s.decoded, s.packed), (2, 0));
        assert_eq!(s.bytes, 2 * per());
        assert_eq!(c.checkout(0, "a").map(|cm| *cm.state), Some(busy(3)));
    }

    #[test]
    fn peek_sees_a_packed_member_as_it_was() {
        let c = one_of_two_packed();
        for (id, t) in [("a", 1), ("b", 2)] {
            assert_eq!(c.peek(0, id).flatten().map(Cow::into_owned), Some(busy(t)));
        }
    }

    #[test]
    fn absent_names_the_members_without_an_entry_in_order_whatever_their_partition() {
        let mut c = MemberCache::with_bytes(1 << 20);
        // More members than the lookups run ahead, some evicted again, and
        // one id cached in another partition only.
        for i in 0..100 {
            c.checkin(i % 3, &format!("m{i}"), Cached::clean(busy(i as i64)));
        }
        for i in (0..100).step_by(7) {
            let slot = c.lookup(i % 3, &format!("m{i}")).unwrap();
            c.remove(slot);
        }
        let ids: Vec<String> = (0..130).map(|i| format!("m{i}")).collect();
        let ids: Vec<&str> = ids.iter().map(String::as_str).collect();
        for p in 0..3 {
            let want: Vec<&str> = ids
                .iter()
                .copied()
                .filter(|id| !c.contains(p, id))
                .collect();
            assert!(want.len() > 30 && want.len() < 130);
            assert_eq!(c.absent(p, &ids), want);
        }
        // Hints for members there or not change nothing.
        for step in [Step::Bucket, Step::Slot, Step::State] {
            for id in ["m1", "m7", "m200"] {
                c.prefetch(step, c.hash_of(1, id));
            }
        }
        assert!(c.contains(1, "m1") && !c.contains(1, "m7") && !c.contains(1, "m200"));
    }

    #[test]
    fn a_deleted_member_is_reported_and_leaves_the_cache_once_the_write_has_landed() {
        let mut c = MemberCache::with_bytes(1 << 20);
        c.checkin(0, "a", Cached::gone());
        assert_eq!(c.peek(0, "a").map(|s| s.is_none()), Some(true));
        let mut deleted = 0;
        c.commit(|w| {
            if let Written::Deleted { member_id, .. } = w {
                assert_eq!(member_id, "a");
                deleted += 1;
            }
        });
        assert_eq!(deleted, 1);
        c.trim();
        // Still there, as deleted: read from the store before the write
        // lands, the member would come back.
        assert_eq!(c.peek(0, "a").map(|s| s.is_none()), Some(true));
        c.landed();
        c.trim();
        assert!(!c.contains(0, "a"));
    }

    #[test]
    fn forgetting_a_partition_keeps_the_others() {
        let mut c = MemberCache::with_bytes(1 << 20);
        c.checkin(0, "a", Cached::clean(MemberState::new(1)));
        c.checkin(1, "a", Cached::clean(MemberState::new(2)));
        c.forget_partition(0);
        assert!(!c.contains(0, "a"));
        assert!(c.contains(1, "a"));
    }
}
