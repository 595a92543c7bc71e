//! A member packed small for memory: the member cache keeps the members it
//! has not used lately in this form (see the engine's cache), about a
//! sixth of the decoded state for a typical member, so several times as
//! many members stay in memory for the same budget and are not read from
//! RocksDB again.
//!
//! Only what differs from a new member is written, behind a flag word;
//! times are varint differences from the newest event, counts varints,
//! empty weekly slots and dedup slots a bit in a mask. Packing round-trips
//! every state exactly, as the store's encoding sees it (corrupt values
//! that still decode included: the differences wrap), so no alert depends on whether a member was packed.
//! It is not a storage format: nothing packed outlives the process, so it
//! carries no version and may change with any release.

use super::codec::{DecodeError, Reader, Writer};
use super::member::{
    purchases_len, Episode, MemberState, OpenAlert, Purchase, Stage, DEDUP_SLOTS, NEVER,
};
use super::window::{DayBitmap, WeeklyCounts, WEEKS};
use crate::signal::Signal;

const ACTIVE: u32 = 1;
const FIRST_PURCHASE: u32 = 1 << 1;
const PURCHASES: u32 = 1 << 2;
const VISITS: u32 = 1 << 3;
const SENDS: u32 = 1 << 4;
const OPENS: u32 = 1 << 5;
const CHECKINS: u32 = 1 << 6;
const STAGE: u32 = 1 << 7;
const EPISODES: u32 = 1 << 8;
const ALERT: u32 = 1 << 9;
const TIMER: u32 = 1 << 10;
const RECENT: u32 = 1 << 11;

/// Appends `m` packed to `out`.
pub fn pack(m: &MemberState, out: &mut Vec<u8>) {
    let mut w = Writer {
        buf: std::mem::take(out),
    };
    // What differs from a new member, compared field by field (building
    // a new member to compare with was a tenth of the packing).
    let flag = |set: bool, bit: u32| if set { bit } else { 0 };
    let counts = [m.visits, m.sends, m.opens];
    let flags = flag(m.last_active_ms != NEVER, ACTIVE)
        | flag(m.first_purchase_ms != NEVER, FIRST_PURCHASE)
        | flag(
            m.purchase_count != 0
                || m.purchase_days != 0
                || m.total_spend.to_bits() != 0
                || m.older_log_spend.to_bits() != 0
                || m.purchases_len != 0,
            PURCHASES,
        )
        | flag(counts[0] != WeeklyCounts::default(), VISITS)
        | flag(counts[1] != WeeklyCounts::default(), SENDS)
        | flag(counts[2] != WeeklyCounts::default(), OPENS)
        | flag(
            m.checkins != DayBitmap::default() || m.checkin_count != 0,
            CHECKINS,
        )
        | flag(m.stage != Stage::New, STAGE)
        | flag(
            m.episodes.iter().any(|e| *e != Episode::default()),
            EPISODES,
        )
        | flag(m.open_alert.is_some(), ALERT)
        | flag(m.timer_due_ms != NEVER, TIMER)
        | flag(
            m.recent_next != 0 || m.recent_ids.iter().any(|h| *h != 0),
            RECENT,
        );
    w.uvar(flags as u64);
    // Times as differences from the newest event: small for the times a
    // member's state holds, and exact for any value (they wrap).
    let base = m.last_event_ms;
    let time = |w: &mut Writer, t: i64| w.ivar(t.wrapping_sub(base));
    w.ivar(base);
    time(&mut w, m.first_seen_ms);
    if flags & ACTIVE != 0 {
        time(&mut w, m.last_active_ms);
    }
    if flags & FIRST_PURCHASE != 0 {
        time(&mut w, m.first_purchase_ms);
    }
    if flags & PURCHASES != 0 {
        w.uvar(m.purchase_count as u64);
        w.uvar(m.purchase_days as u64);
        w.f64(m.total_spend);
        w.f32(m.older_log_spend);
        w.u8(m.purchases_len);
        for p in m.purchases() {
            time(&mut w, p.ts_ms);
            w.f32(p.amount);
        }
    }
    for (c, bit) in counts.iter().zip([VISITS, SENDS, OPENS]) {
        if flags & bit != 0 {
            pack_counts(&mut w, c);
        }
    }
    if flags & CHECKINS != 0 {
        w.ivar(m.checkins.last_day as i64);
        w.uvar(m.checkin_count as u64);
        put_sparse(&mut w, &m.checkins.bits.to_le_bytes(), Writer::u8);
    }
    if flags & STAGE != 0 {
        w.u8(m.stage as u8);
    }
    if flags & EPISODES != 0 {
        put_sparse(&mut w, &m.episodes, |w, e| {
            w.u8(e.open as u8);
            w.uvar(e.seq as u64);
            time(w, e.opened_ms);
        });
    }
    if let Some(a) = m.open_alert {
        w.u8(a.signal as u8);
        w.uvar(a.seq as u64);
        time(&mut w, a.detected_ms);
    }
    if flags & TIMER != 0 {
        time(&mut w, m.timer_due_ms);
    }
    if flags & RECENT != 0 {
        w.u8(m.recent_next);
        // Event-id hashes: random bits, so raw.
        put_sparse(&mut w, &m.recent_ids, Writer::u32);
    }
    *out = w.buf;
}

fn pack_counts(w: &mut Writer, c: &WeeklyCounts) {
    w.ivar(c.newest_week as i64);
    put_sparse(w, &{ c.slots }, |w, s| w.uvar(s as u64));
    w.uvar(c.older as u64);
}

/// Writes which of `items` differ from their default (a bit each in a
/// mask), then each of those through `put`: most weekly slots, check-in
/// bytes, episodes and dedup slots of a member are empty.
fn put_sparse<T: Copy + PartialEq + Default>(
    w: &mut Writer,
    items: &[T],
    mut put: impl FnMut(&mut Writer, T),
) {
    let mask = items.iter().enumerate().fold(0u64, |mask, (i, x)| {
        mask | ((*x != T::default()) as u64) << i
    });
    w.uvar(mask);
    for x in items.iter().filter(|x| **x != T::default()) {
        put(w, *x);
    }
}

/// Reads what [`put_sparse`] wrote into `items` (left as they are where
/// the mask has no bit).
fn get_sparse<'b, T>(
    r: &mut Reader<'b>,
    items: &mut [T],
    mut get: impl FnMut(&mut Reader<'b>) -> Result<T, DecodeError>,
) -> Result<(), DecodeError> {
    let mask = r.uvar()?;
    for (i, x) in items.iter_mut().enumerate() {
        if mask & (1 << i) != 0 {
            *x = get(r)?;
        }
    }
    Ok(())
}

/// The member [`pack`] packed into `buf`.
pub fn unpack(buf: &[u8]) -> Result<MemberState, DecodeError> {
    let mut r = Reader::new(buf);
    let flags = r.uvar()? as u32;
    let base = r.ivar()?;
    let time = |r: &mut Reader| -> Result<i64, DecodeError> { Ok(r.ivar()?.wrapping_add(base)) };
    let mut m = MemberState::new(time(&mut r)?);
    m.last_event_ms = base;
    if flags & ACTIVE != 0 {
        m.last_active_ms = time(&mut r)?;
    }
    if flags & FIRST_PURCHASE != 0 {
        m.first_purchase_ms = time(&mut r)?;
    }
    if flags & PURCHASES != 0 {
        m.purchase_count = small(r.uvar()?, "purchase_count")?;
        m.purchase_days = small(r.uvar()?, "purchase_days")?;
        m.total_spend = r.f64()?;
        m.older_log_spend = r.f32()?;
        let n = purchases_len(r.u8()?)?;
        m.purchases_len = n;
        for p in &mut m.purchases[..n as usize] {
            *p = Purchase {
                ts_ms: time(&mut r)?,
                amount: r.f32()?,
            };
        }
    }
    for (c, bit) in [
        (&mut m.visits, VISITS),
        (&mut m.sends, SENDS),
        (&mut m.opens, OPENS),
    ] {
        if flags & bit != 0 {
            *c = unpack_counts(&mut r)?;
        }
    }
    if flags & CHECKINS != 0 {
        let last_day = small(r.ivar()?, "checkins.last_day")?;
        m.checkin_count = small(r.uvar()?, "checkin_count")?;
        let mut bytes = [0u8; 16];
        get_sparse(&mut r, &mut bytes, Reader::u8)?;
        m.checkins = DayBitmap {
            last_day,
            bits: u128::from_le_bytes(bytes),
        };
    }
    if flags & STAGE != 0 {
        m.stage = Stage::from_u8(r.u8()?)?;
    }
    if flags & EPISODES != 0 {
        get_sparse(&mut r, &mut m.episodes, |r| {
            Ok(Episode {
                open: r.u8()? != 0,
                seq: small(r.uvar()?, "episodes.seq")?,
                opened_ms: time(r)?,
            })
        })?;
    }
    if flags & ALERT != 0 {
        let sig = r.u8()?;
        m.open_alert = Some(OpenAlert {
            signal: Signal::from_u8(sig).ok_or(DecodeError::Invalid {
                field: "open_alert.signal",
                value: sig as u64,
            })?,
            seq: small(r.uvar()?, "open_alert.seq")?,
            detected_ms: time(&mut r)?,
        });
    }
    if flags & TIMER != 0 {
        m.timer_due_ms = time(&mut r)?;
    }
    if flags & RECENT != 0 {
        m.recent_next = r.u8()?;
        get_sparse(&mut r, &mut m.recent_ids, Reader::u32)?;
    }
    if !r.is_done() {
        return Err(DecodeError::Invalid {
            field: "packed member (trailing bytes)",
            value: buf.len() as u64,
        });
    }
    Ok(m)
}

fn unpack_counts(r: &mut Reader) -> Result<WeeklyCounts, DecodeError> {
    let newest_week = small(r.ivar()?, "newest_week")?;
    let mut slots = [0u16; WEEKS];
    get_sparse(r, &mut slots, |r| small(r.uvar()?, "weekly slot"))?;
    Ok(WeeklyCounts {
        newest_week,
        slots,
        older: small(r.uvar()?, "older")?,
    })
}

/// A varint that must fit a narrower integer.
fn small<T: TryFrom<i128>>(v: impl Into<i128>, field: &'static str) -> Result<T, DecodeError> {
    let v = v.into();
    T::try_from(v).map_err(|_| DecodeError::Invalid {
        field,
        value: v as u64,
    })
}

const _: () = assert!(WEEKS <= 64 && DEDUP_SLOTS <= 64);

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::{Event, EventKind, DAY_MS};
    use crate::state::member::PURCHASE_HISTORY;
    use proptest::prelude::*;
    use std::borrow::Cow;

    fn round_trip(m: &MemberState) -> (MemberState, usize) {
        let mut buf = Vec::new();
        pack(m, &mut buf);
        (unpack(&buf).expect("unpacks what it packed"), buf.len())
    }

    fn any_time() -> impl Strategy<Value = i64> {
        prop_oneof![
            Just(NEVER),
            Just(i64::MAX),
            Just(0i64),
            1_500_000_000_000i64..1_900_000_000_000,
            any::<i64>(),
        ]
    }

    fn any_counts() -> impl Strategy<Value = WeeklyCounts> {
        (
            any::<i32>(),
            any::<[u16; WEEKS]>(),
            any::<u32>(),
            any::<bool>(),
        )
            .prop_map(|(newest_week, slots, older, sparse)| WeeklyCounts {
                newest_week,
                // Mostly-empty windows as well as full ones.
                slots: if sparse {
                    slots.map(|s| if s % 5 == 0 { s } else { 0 })
                } else {
                    slots
                },
                older,
            })
    }

    prop_compose! {
        fn any_member()(
            times in prop::array::uniform8(any_time()),
            counts in (any::<u32>(), any::<u32>(), any::<f64>(), any::<f32>(), 0u8..=PURCHASE_HISTORY as u8, any::<u32>()),
            purchases in prop::array::uniform10((any_time(), any::<f32>())),
            windows in (any_counts(), any_counts(), any_counts()),
            checkins in (any::<i32>(), any::<u128>()),
            stage in 0u8..5,
            episodes in prop::array::uniform6((any::<bool>(), any::<u16>(), any_time(), any::<bool>())),
            alert in prop::option::of((0u8..6, any::<u16>(), any_time())),
            recent in (any::<[u32; DEDUP_SLOTS]>(), 0u8..DEDUP_SLOTS as u8, any::<bool>()),
        ) -> MemberState {
            let mut m = MemberState::new(times[0]);
            m.last_event_ms = times[1];
            m.last_active_ms = times[2];
            m.first_purchase_ms = times[3];
            m.timer_due_ms = times[4];
            (m.purchase_count, m.purchase_days, m.total_spend, m.older_log_spend, m.purchases_len, m.checkin_count) = counts;
            m.purchases = purchases.map(|(ts_ms, amount)| Purchase { ts_ms, amount });
            (m.visits, m.sends, m.opens) = windows;
            m.checkins = DayBitmap { last_day: checkins.0, bits: checkins.1 };
            m.stage = Stage::from_u8(stage).unwrap();
            m.episodes = episodes.map(|(open, seq, opened_ms, default)| {
                if default { Episode::default() } else { Episode { open, seq, opened_ms } }
            });
            m.open_alert = alert.map(|(s, seq, detected_ms)| OpenAlert {
                signal: Signal::from_u8(s).unwrap(),
                seq,
                detected_ms,
            });
            let (ids, next, empty) = recent;
            if !empty {
                m.recent_ids = ids;
                m.recent_next = next;
            }
            m
        }
    }

    proptest! {
        #[test]
        fn packing_round_trips_any_state_exactly(m in any_member()) {
            let (back, _) = round_trip(&m);
            // Bit for bit, through the store's encoding (a NaN spend
            // compares unequal to itself as a value); slots past
            // `purchases_len` hold nothing, there as here.
            prop_assert_eq!(back.to_bytes(), m.to_bytes());
        }

        #[test]
        fn packed_bytes_that_are_cut_short_fail_to_unpack(m in any_member(), cut in 1usize..8) {
            let mut buf = Vec::new();
            pack(&m, &mut buf);
            buf.truncate(buf.len().saturating_sub(cut));
            prop_assert!(unpack(&buf).is_err());
        }
    }

    fn ev(kind: EventKind, ts_ms: i64) -> Event<'static> {
        Event {
            event_id: Cow::Borrowed("e"),
            member_id: Cow::Borrowed("m"),
            kind,
            ts_ms,
            amount: 24.5,
            categories: 0,
        }
    }

    #[test]
    fn a_new_member_packs_into_a_few_bytes() {
        let m = MemberState::new(1_750_000_000_000);
        let (back, len) = round_trip(&m);
        assert_eq!(back, m);
        assert!(len <= 8, "{len} bytes");
    }

    #[test]
    fn a_typical_member_packs_into_a_fraction_of_its_decoded_size() {
        // Six events over two months, as the median member of a programme:
        // two sends, an open, two visits and a purchase, with their ids.
        let t0 = 1_750_000_000_000;
        let mut m = MemberState::new(t0);
        let kinds = [
            EventKind::EmailSend,
            EventKind::EmailOpen,
            EventKind::Visit,
            EventKind::Purchase,
            EventKind::EmailSend,
            EventKind::Visit,
        ];
        for (i, k) in kinds.into_iter().enumerate() {
            m.apply(&ev(k, t0 + i as i64 * 10 * DAY_MS));
            m.remember_event(0x9e37_79b9u32.wrapping_mul(i as u32 + 1));
        }
        m.timer_due_ms = m.last_event_ms + 30 * DAY_MS;
        let (back, len) = round_trip(&m);
        assert_eq!(back, m);
        let decoded = std::mem::size_of::<MemberState>();
        assert!(len * 5 <= decoded, "{len} bytes against {decoded} decoded");
    }
}
