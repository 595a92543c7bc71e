//! Everything churnwatch remembers about one member, in a bounded footprint
//! whatever the length of their history (at most 512 bytes encoded; packed,
//! 80 to 150 bytes for most members).

use super::codec::{DecodeError, Reader, Writer};
use super::window::{day_of, week_of, DayBitmap, WeeklyCounts};
use crate::event::{Event, EventKind, MAX_TS_MS};
use crate::signal::{Signal, EPISODE_SIGNALS};

/// Version byte leading every encoded member; bump on layout changes and
/// keep decoding the old ones. Version 2 appends the long-run totals
/// (`WeeklyCounts::older`, `older_log_spend`); a version 1 member decodes
/// with them at zero, so its long run starts at its 16-week window.
/// Version 3 is the same state packed ([`super::packed`]): a quarter to a
/// sixth of the bytes for most members, so less to write, flush, compact
/// and cache.
pub const FORMAT_VERSION: u8 = MemberFormat::Packed as u8;

/// The layouts a member can be written in (all of them are read).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
#[repr(u8)]
pub enum MemberFormat {
    /// Version 2, fixed width (about 480 bytes): what releases before
    /// version 3 read, for a rolling upgrade from them.
    Fixed = 2,
    /// Version 3, packed.
    #[default]
    Packed = 3,
}
/// Purchases kept individually (newest first out): enough for the median of
/// the recent gaps, a gap trend and an order-value baseline.
pub const PURCHASE_HISTORY: usize = 10;
/// Event-id hashes kept for deduplication. A redelivered event is recognised
/// while its original is among the member's last `DEDUP_SLOTS` events.
pub const DEDUP_SLOTS: usize = 24;
/// Marks "no such time" in the `*_ms` fields.
pub const NEVER: i64 = i64::MIN;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
#[repr(u8)]
pub enum Stage {
    #[default]
    New = 0,
    Active = 1,
    Cooling = 2,
    Silent = 3,
    Churned = 4,
}

impl Stage {
    pub fn as_str(self) -> &'static str {
        match self {
            Stage::New => "new",
            Stage::Active => "active",
            Stage::Cooling => "cooling",
            Stage::Silent => "silent",
            Stage::Churned => "churned",
        }
    }

    pub(crate) fn from_u8(v: u8) -> Result<Stage, DecodeError> {
        Ok(match v {
            0 => Stage::New,
            1 => Stage::Active,
            2 => Stage::Cooling,
            3 => Stage::Silent,
            4 => Stage::Churned,
            _ => {
                return Err(DecodeError::Invalid {
                    field: "stage",
                    value: v as u64,
                })
            }
        })
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Default)]
// Packed: the cached `MemberState` fits 512 bytes (see the note there).
#[repr(C, packed(4))]
pub struct Purchase {
    pub ts_ms: i64,
    pub amount: f32,
}

/// A cooling episode of one signal: at most one alert per episode.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
// Packed: the cached `MemberState` fits 512 bytes (see the note there).
#[repr(C, packed(1))]
pub struct Episode {
    pub open: bool,
    /// Alerts ever raised for this signal; part of the alert id.
    pub seq: u16,
    pub opened_ms: i64,
}

/// The oldest alert still waiting for the member to come back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
// Packed: the cached `MemberState` fits 512 bytes (see the note there).
#[repr(C, packed(4))]
pub struct OpenAlert {
    pub signal: Signal,
    pub seq: u16,
    pub detected_ms: i64,
}

#[derive(Debug, Clone, PartialEq)]
pub struct MemberState {
    pub first_seen_ms: i64,
    /// Newest event time of any type.
    pub last_event_ms: i64,
    /// Newest event time of member activity (everything but `email_send`).
    pub last_active_ms: i64,
    pub first_purchase_ms: i64,
    pub purchase_count: u32,
    /// Distinct UTC days with a purchase (BG/NBD counts same-day orders once).
    pub purchase_days: u32,
    pub total_spend: f64,
    /// Sum of ln(amount) of the purchases no longer kept individually
    /// (`purchase_count − purchases_len` of them): the long-run spend level.
    pub older_log_spend: f32,
    /// The newest purchases, oldest first.
    pub purchases: [Purchase; PURCHASE_HISTORY],
    pub purchases_len: u8,
    pub visits: WeeklyCounts,
    pub sends: WeeklyCounts,
    pub opens: WeeklyCounts,
    pub checkins: DayBitmap,
    pub checkin_count: u32,
    pub stage: Stage,
    pub episodes: [Episode; EPISODE_SIGNALS],
    pub open_alert: Option<OpenAlert>,
    /// Due time of this member's entry in the timer index, or `NEVER`.
    pub timer_due_ms: i64,
    pub recent_ids: [u32; DEDUP_SLOTS],
    pub recent_next: u8,
}

// A cached member is one allocation of its state (plus its slot): at 512
// bytes or less it takes the allocator's 512-byte size class, where 608
// bytes took the 640 one. Hence the packed small structs above (a few
// bytes of padding each) and the packed weekly windows: unaligned loads
// cost nothing measurable on x86-64 and aarch64, and the compiler refuses
// references to their fields (copy them out: `{ w.older }`).
const _: () = assert!(std::mem::size_of::<MemberState>() <= 512);

impl MemberState {
    pub fn new(first_seen_ms: i64) -> Self {
        MemberState {
            first_seen_ms,
            last_event_ms: first_seen_ms,
            last_active_ms: NEVER,
            first_purchase_ms: NEVER,
            purchase_count: 0,
            purchase_days: 0,
            total_spend: 0.0,
            older_log_spend: 0.0,
            purchases: [Purchase::default(); PURCHASE_HISTORY],
            purchases_len: 0,
            visits: WeeklyCounts::default(),
            sends: WeeklyCounts::default(),
            opens: WeeklyCounts::default(),
            checkins: DayBitmap::default(),
            checkin_count: 0,
            stage: Stage::New,
            episodes: [Episode::default(); EPISODE_SIGNALS],
            open_alert: None,
            timer_due_ms: NEVER,
            recent_ids: [0; DEDUP_SLOTS],
            recent_next: 0,
        }
    }

    /// The kept purchases, oldest first.
    pub fn purchases(&self) -> &[Purchase] {
        &self.purchases[..self.purchases_len as usize]
    }

    /// Purchases counted only in the long-run totals.
    pub fn older_purchases(&self) -> u32 {
        self.purchase_count
            .saturating_sub(self.purchases_len as u32)
    }

    pub fn last_purchase_ms(&self) -> Option<i64> {
        self.purchases().last().map(|p| p.ts_ms)
    }

    /// Records an event-id hash; returns `false` if it was already there.
    /// Zero marks an empty slot, so a zero hash is nudged to one.
    pub fn remember_event(&mut self, id_hash: u32) -> bool {
        let h = id_hash.max(1);
        if self.recent_ids.contains(&h) {
            return false;
        }
        self.recent_ids[self.recent_next as usize] = h;
        self.recent_next = ((self.recent_next as usize + 1) % DEDUP_SLOTS) as u8;
        true
    }

    pub fn seen_event(&self, id_hash: u32) -> bool {
        self.recent_ids.contains(&id_hash.max(1))
    }

    /// Folds a validated event into the windows and totals.
    pub fn apply(&mut self, e: &Event<'_>) {
        self.first_seen_ms = self.first_seen_ms.min(e.ts_ms);
        self.last_event_ms = self.last_event_ms.max(e.ts_ms);
        if e.kind.is_member_activity() {
            self.last_active_ms = self.last_active_ms.max(e.ts_ms);
        }
        let week = week_of(e.ts_ms);
        match e.kind {
            EventKind::Visit => self.visits.add(week),
            EventKind::EmailSend => self.sends.add(week),
            EventKind::EmailOpen => self.opens.add(week),
            EventKind::CheckIn => {
                let day = day_of(e.ts_ms);
                if !self.checkins.is_set(day) {
                    self.checkin_count = self.checkin_count.saturating_add(1);
                }
                self.checkins.set(day);
            }
            EventKind::Purchase => self.add_purchase(e.ts_ms, e.amount),
        }
    }

    fn add_purchase(&mut self, ts_ms: i64, amount: f64) {
        let day = day_of(ts_ms);
        let same_day = self.purchases().iter().any(|p| day_of(p.ts_ms) == day);
        if !same_day {
            self.purchase_days = self.purchase_days.saturating_add(1);
        }
        self.purchase_count = self.purchase_count.saturating_add(1);
        self.total_spend += amount;
        self.first_purchase_ms = if self.first_purchase_ms == NEVER {
            ts_ms
        } else {
            self.first_purchase_ms.min(ts_ms)
        };
        let p = Purchase {
            ts_ms,
            amount: amount as f32,
        };
        let len = self.purchases_len as usize;
        // Insert in time order; a late purchase older than everything kept
        // in a full history only counts in the totals.
        let pos = self.purchases[..len].partition_point(|q| q.ts_ms <= ts_ms);
        if len < PURCHASE_HISTORY {
            self.purchases.copy_within(pos..len, pos + 1);
            self.purchases[pos] = p;
            self.purchases_len += 1;
        } else if pos > 0 {
            self.older_log_spend += log_amount(self.purchases[0].amount) as f32;
            self.purchases.copy_within(1..pos, 0);
            self.purchases[pos - 1] = p;
        } else {
            self.older_log_spend += log_amount(p.amount) as f32;
        }
    }

    /// Appends the state in `format`.
    pub fn encode(&self, format: MemberFormat, w: &mut Writer) {
        match format {
            MemberFormat::Fixed => self.encode_fixed(w),
            MemberFormat::Packed => {
                w.u8(MemberFormat::Packed as u8);
                super::packed::pack(self, &mut w.buf);
            }
        }
    }

    fn encode_fixed(&self, w: &mut Writer) {
        w.u8(MemberFormat::Fixed as u8);
        w.i64(self.first_seen_ms);
        w.i64(self.last_event_ms);
        w.i64(self.last_active_ms);
        w.i64(self.first_purchase_ms);
        w.u32(self.purchase_count);
        w.u32(self.purchase_days);
        w.f64(self.total_spend);
        w.u8(self.purchases_len);
        for p in self.purchases() {
            w.i64(p.ts_ms);
            w.f32(p.amount);
        }
        for c in [&self.visits, &self.sends, &self.opens] {
            w.i32(c.newest_week);
            for s in c.slots {
                w.u16(s);
            }
        }
        w.i32(self.checkins.last_day);
        w.u128(self.checkins.bits);
        w.u32(self.checkin_count);
        w.u8(self.stage as u8);
        for e in &self.episodes {
            w.u8(e.open as u8);
            w.u16(e.seq);
            w.i64(e.opened_ms);
        }
        match self.open_alert {
            None => w.u8(u8::MAX),
            Some(a) => {
                w.u8(a.signal as u8);
                w.u16(a.seq);
                w.i64(a.detected_ms);
            }
        }
        w.i64(self.timer_due_ms);
        w.u8(self.recent_next);
        for h in self.recent_ids {
            w.u32(h);
        }
        // Version 2: long-run totals.
        for c in [&self.visits, &self.sends, &self.opens] {
            w.u32(c.older);
        }
        w.f32(self.older_log_spend);
    }

    /// The state in the current format ([`FORMAT_VERSION`]).
    pub fn to_bytes(&self) -> Vec<u8> {
        self.to_bytes_as(MemberFormat::default())
    }

    pub fn to_bytes_as(&self, format: MemberFormat) -> Vec<u8> {
        let mut w = Writer::with_capacity(match format {
            MemberFormat::Fixed => 512,
            MemberFormat::Packed => 192,
        });
        self.encode(format, &mut w);
        w.buf
    }

    /// A member in any format version written so far.
    pub fn decode(buf: &[u8]) -> Result<Self, DecodeError> {
        let mut m = match buf.first() {
            Some(1 | 2) => Self::decode_fixed(buf)?,
            Some(3) => super::packed::unpack(&buf[1..])?,
            Some(v) => return Err(DecodeError::Version(*v)),
            None => return Err(DecodeError::Truncated { at: 0, wanted: 1 }),
        };
        m.recent_next %= DEDUP_SLOTS as u8;
        m.check_times()?;
        Ok(m)
    }

    fn decode_fixed(buf: &[u8]) -> Result<Self, DecodeError> {
        let mut r = Reader::new(buf);
        let v = r.u8()?;
        let mut m = MemberState::new(r.i64()?);
        m.last_event_ms = r.i64()?;
        m.last_active_ms = r.i64()?;
        m.first_purchase_ms = r.i64()?;
        m.purchase_count = r.u32()?;
        m.purchase_days = r.u32()?;
        m.total_spend = r.f64()?;
        let n = purchases_len(r.u8()?)?;
        m.purchases_len = n;
        for i in 0..n as usize {
            m.purchases[i] = Purchase {
                ts_ms: r.i64()?,
                amount: r.f32()?,
            };
        }
        for c in [&mut m.visits, &mut m.sends, &mut m.opens] {
            c.newest_week = r.i32()?;
            for s in c.slots.iter_mut() {
                *s = r.u16()?;
            }
        }
        m.checkins.last_day = r.i32()?;
        m.checkins.bits = r.u128()?;
        m.checkin_count = r.u32()?;
        m.stage = Stage::from_u8(r.u8()?)?;
        for e in m.episodes.iter_mut() {
            e.open = r.u8()? != 0;
            e.seq = r.u16()?;
            e.opened_ms = r.i64()?;
        }
        let sig = r.u8()?;
        if sig != u8::MAX {
            let signal = Signal::from_u8(sig).ok_or(DecodeError::Invalid {
                field: "open_alert.signal",
                value: sig as u64,
            })?;
            m.open_alert = Some(OpenAlert {
                signal,
                seq: r.u16()?,
                detected_ms: r.i64()?,
            });
        }
        m.timer_due_ms = r.i64()?;
        m.recent_next = r.u8()?;
        for h in m.recent_ids.iter_mut() {
            *h = r.u32()?;
        }
        if v >= 2 {
            for c in [&mut m.visits, &mut m.sends, &mut m.opens] {
                c.older = r.u32()?;
            }
            m.older_log_spend = r.f32()?;
        }
        Ok(m)
    }
}

impl MemberState {
    /// Event times, weeks and days are never before 1970 nor after
    /// [`MAX_TS_MS`] (the validator refuses such events; detections are at
    /// clock times, which may run past the latest event by a timer's wait,
    /// so they get twice that room), and the kept purchases are in time
    /// order: a value that says otherwise is damage, and the detectors'
    /// arithmetic on it would overflow.
    fn check_times(&self) -> Result<(), DecodeError> {
        let within = |field: &'static str, v: i64, never_ok: bool, latest: i64| {
            if (0..=latest).contains(&v) || (never_ok && v == NEVER) {
                Ok(())
            } else {
                Err(DecodeError::Invalid {
                    field,
                    value: v as u64,
                })
            }
        };
        let time = |field, v, never_ok| within(field, v, never_ok, MAX_TS_MS);
        let clock_time = |field, v, never_ok| within(field, v, never_ok, 2 * MAX_TS_MS);
        for c in [&self.visits, &self.sends, &self.opens] {
            number_within("newest_week", c.newest_week, week_of(MAX_TS_MS))?;
        }
        number_within(
            "checkins.last_day",
            self.checkins.last_day,
            day_of(MAX_TS_MS),
        )?;
        time("first_seen_ms", self.first_seen_ms, false)?;
        time("last_event_ms", self.last_event_ms, false)?;
        time("last_active_ms", self.last_active_ms, true)?;
        time("first_purchase_ms", self.first_purchase_ms, true)?;
        let mut prev = 0;
        for p in self.purchases() {
            time("purchases.ts_ms", p.ts_ms, false)?;
            if p.ts_ms < prev {
                return Err(DecodeError::Invalid {
                    field: "purchases (out of time order)",
                    value: p.ts_ms as u64,
                });
            }
            prev = p.ts_ms;
        }
        for e in &self.episodes {
            clock_time("episodes.opened_ms", e.opened_ms, true)?;
        }
        if let Some(a) = &self.open_alert {
            clock_time("open_alert.detected_ms", a.detected_ms, true)?;
        }
        Ok(())
    }
}

/// Week and day numbers count from the epoch, and event times are never
/// before it nor after [`MAX_TS_MS`] (whose number is `latest`): one outside
/// is damage, and the detectors' arithmetic on it would overflow.
fn number_within(field: &'static str, v: i32, latest: i32) -> Result<(), DecodeError> {
    if !(0..=latest).contains(&v) {
        return Err(DecodeError::Invalid {
            field,
            value: v as u32 as u64,
        });
    }
    Ok(())
}

/// A stored count of kept purchases, which must fit the history.
pub(super) fn purchases_len(n: u8) -> Result<u8, DecodeError> {
    if n as usize > PURCHASE_HISTORY {
        return Err(DecodeError::Invalid {
            field: "purchases_len",
            value: n as u64,
        });
    }
    Ok(n)
}

/// The log order value the spend detector works on (a zero order counts as
/// one cent, so it stays finite).
pub fn log_amount(amount: f32) -> f64 {
    (amount as f64).max(0.01).ln()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::DAY_MS;
    use std::borrow::Cow;

    fn ev(kind: EventKind, ts_ms: i64, amount: f64) -> Event<'static> {
        Event {
            event_id: Cow::Borrowed("e"),
            member_id: Cow::Borrowed("m"),
            kind,
            ts_ms,
            amount,
            categories: 0,
        }
    }

    fn busy_member() -> MemberState {
        let t0 = 1_750_000_000_000;
        let mut m = MemberState::new(t0);
        for d in 0..200 {
            let t = t0 + d * DAY_MS;
            for k in EventKind::ALL {
                m.apply(&ev(k, t, 10.0 + d as f64));
            }
            m.remember_event(d as u32 * 7919);
        }
        m.open_alert = Some(OpenAlert {
            signal: Signal::PurchaseGap,
            seq: 3,
            detected_ms: t0,
        });
        m.episodes[2] = Episode {
            open: true,
            seq: 2,
            opened_ms: t0,
        };
        m
    }

    #[test]
    fn encoding_round_trips_a_full_member_in_every_format() {
        let m = busy_member();
        for f in [MemberFormat::Fixed, MemberFormat::Packed] {
            let bytes = m.to_bytes_as(f);
            assert_eq!(bytes[0], f as u8);
            assert_eq!(MemberState::decode(&bytes).unwrap(), m);
        }
    }

    #[test]
    fn a_member_reads_the_same_whichever_format_wrote_it() {
        let m = busy_member();
        let fixed = MemberState::decode(&m.to_bytes_as(MemberFormat::Fixed)).unwrap();
        assert_eq!(fixed.to_bytes(), m.to_bytes());
        assert!(m.to_bytes().len() < m.to_bytes_as(MemberFormat::Fixed).len());
    }

    #[test]
    fn a_packed_member_before_1970_is_refused_like_a_fixed_one() {
        let mut m = busy_member();
        m.visits.newest_week = -1;
        for f in [MemberFormat::Fixed, MemberFormat::Packed] {
            let err = MemberState::decode(&m.to_bytes_as(f)).unwrap_err();
            assert!(matches!(
                err,
                DecodeError::Invalid {
                    field: "newest_week",
                    ..
                }
            ));
        }
    }

    #[test]
    fn a_member_holding_a_time_after_2248_is_refused_in_every_format() {
        type Damage = fn(&mut MemberState);
        let damages: [(&str, Damage); 4] = [
            ("last_event_ms", |m| m.last_event_ms = MAX_TS_MS + 1),
            ("newest_week", |m| {
                m.opens.newest_week = week_of(MAX_TS_MS) + 1
            }),
            ("checkins.last_day", |m| {
                m.checkins.last_day = day_of(MAX_TS_MS) + 1
            }),
            ("first_seen_ms", |m| m.first_seen_ms = i64::MAX),
        ];
        for (field, damage) in damages {
            let mut m = busy_member();
            damage(&mut m);
            for f in [MemberFormat::Fixed, MemberFormat::Packed] {
                match MemberState::decode(&m.to_bytes_as(f)) {
                    Err(DecodeError::Invalid { field: got, .. }) => assert_eq!(got, field),
                    other => panic!("{field} {f:?}: {other:?}"),
                }
            }
        }
        // The latest time itself is fine.
        let mut m = busy_member();
        m.last_event_ms = MAX_TS_MS;
        assert!(MemberState::decode(&m.to_bytes()).is_ok());
    }

    #[test]
    fn encoded_member_stays_within_512_bytes_whatever_the_history() {
        let n = busy_member().to_bytes().len();
        assert!(n <= 512, "encoded member is {n} bytes");
    }

    #[test]
    fn decodes_version_1_members_with_empty_long_run_totals() {
        let m = busy_member();
        let mut v1 = m.to_bytes_as(MemberFormat::Fixed);
        // Version 1 is version 2 without the 16 trailing long-run bytes.
        v1.truncate(v1.len() - 16);
        v1[0] = 1;
        let old = MemberState::decode(&v1).unwrap();
        assert_eq!({ old.visits.older }, 0);
        assert_eq!(old.older_log_spend, 0.0);
        assert_eq!(old.visits.slots, m.visits.slots);
        assert_eq!(old.recent_ids, m.recent_ids);
        assert!(m.visits.older > 0 && m.older_log_spend > 0.0);
    }

    #[test]
    fn rejects_unknown_format_versions_and_truncation() {
        let mut b = busy_member().to_bytes();
        assert!(MemberState::decode(&b[..b.len() - 1]).is_err());
        b[0] = 99;
        assert_eq!(MemberState::decode(&b), Err(DecodeError::Version(99)));
    }

    #[test]
    fn keeps_the_newest_purchases_in_time_order_including_late_ones() {
        let mut m = MemberState::new(0);
        for i in 0..12 {
            m.apply(&ev(EventKind::Purchase, (i * 2 + 2) * DAY_MS, 1.0));
        }
        m.apply(&ev(EventKind::Purchase, 19 * DAY_MS, 5.0)); // late, lands inside
        m.apply(&ev(EventKind::Purchase, DAY_MS, 5.0)); // too old for the history
        let ts: Vec<i64> = m.purchases().iter().map(|p| p.ts_ms / DAY_MS).collect();
        assert_eq!(ts, [8, 10, 12, 14, 16, 18, 19, 20, 22, 24]);
        assert_eq!(m.purchase_count, 14);
        assert_eq!(m.first_purchase_ms, DAY_MS);
    }

    #[test]
    fn dedup_ring_remembers_recent_event_ids() {
        let mut m = MemberState::new(0);
        assert!(m.remember_event(42));
        assert!(!m.remember_event(42));
        for i in 0..DEDUP_SLOTS as u32 {
            m.remember_event(1000 + i);
        }
        assert!(!m.seen_event(42), "beyond the dedup horizon");
    }
}
