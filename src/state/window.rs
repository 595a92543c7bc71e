//! Rolling windows with a fixed footprint: weekly count buckets and a daily
//! check-in bitmap. Late events land in the bucket of their own event time as
//! long as it is still inside the window; older ones only count in lifetime
//! totals.

use crate::event::DAY_MS;

pub const WEEK_MS: i64 = 7 * DAY_MS;
/// Weekly buckets kept: the current week plus 16 complete weeks, enough for a
/// 4-week recent window against a 12-week baseline.
pub const WEEKS: usize = 17;

/// The epoch began on a Thursday; shifting by three days makes weeks run
/// Monday 00:00 UTC to Sunday, as retail reporting does.
const MONDAY_SHIFT_MS: i64 = 3 * DAY_MS;

/// The week number of an instant (weeks start Monday 00:00 UTC).
pub fn week_of(ts_ms: i64) -> i32 {
    (ts_ms + MONDAY_SHIFT_MS).div_euclid(WEEK_MS) as i32
}

/// The first millisecond of `week`.
pub fn week_start_ms(week: i32) -> i64 {
    week as i64 * WEEK_MS - MONDAY_SHIFT_MS
}

pub fn day_of(ts_ms: i64) -> i32 {
    ts_ms.div_euclid(DAY_MS) as i32
}

/// Per-week counts of one kind of event; slot 0 is `newest_week`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
// Packed: the cached `MemberState` fits 512 bytes (see the note there).
#[repr(C, packed(2))]
pub struct WeeklyCounts {
    pub newest_week: i32,
    pub slots: [u16; WEEKS],
    /// Events in the weeks before the oldest slot: the member's long-run
    /// history, which the sequential detectors use as their baseline so
    /// that a change cannot become its own baseline by sliding into it.
    pub older: u32,
}

impl WeeklyCounts {
    pub fn add(&mut self, week: i32) {
        // Differences in i64: a stored value (or a corrupt one that still
        // decodes) can be anywhere in the i32 range.
        if week > self.newest_week {
            let shift = (week as i64 - self.newest_week as i64) as usize;
            let kept = WEEKS.saturating_sub(shift);
            let rolled: u32 = self.slots[kept..].iter().map(|s| *s as u32).sum();
            self.older = self.older.saturating_add(rolled);
            if shift >= WEEKS {
                self.slots = [0; WEEKS];
            } else {
                self.slots.copy_within(0..WEEKS - shift, shift);
                self.slots[..shift].fill(0);
            }
            self.newest_week = week;
        }
        let idx = (self.newest_week as i64 - week as i64) as usize;
        match self.slots.get_mut(idx) {
            Some(s) => *s = s.saturating_add(1),
            // Too late for its week's slot: still part of the long run.
            None => self.older = self.older.saturating_add(1),
        }
    }

    /// Events in all weeks before `week` (slots and long-run total).
    pub fn before(&self, week: i32) -> u32 {
        let oldest = self.newest_week.saturating_sub(WEEKS as i32 - 1);
        self.older
            .saturating_add(self.sum(oldest, week.saturating_sub(1)))
    }

    pub fn count(&self, week: i32) -> u32 {
        let idx = self.newest_week as i64 - week as i64;
        if (0..WEEKS as i64).contains(&idx) {
            self.slots[idx as usize] as u32
        } else {
            0
        }
    }

    /// Sum over the weeks `from..=to` (only the kept weeks can count).
    pub fn sum(&self, from: i32, to: i32) -> u32 {
        // Slot `i` holds week `newest_week - i`.
        let lo = (self.newest_week as i64 - to as i64).max(0);
        let hi = (self.newest_week as i64 - from as i64).min(WEEKS as i64 - 1);
        if lo > hi {
            return 0;
        }
        self.slots[lo as usize..=hi as usize]
            .iter()
            .map(|s| *s as u32)
            .sum()
    }

    pub fn is_empty(&self) -> bool {
        self.slots.iter().all(|s| *s == 0)
    }
}

/// One bit per day for the last 128 days; bit 0 is `last_day`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
// Packed: the cached `MemberState` fits 512 bytes (see the note there).
#[repr(C, packed(4))]
pub struct DayBitmap {
    pub last_day: i32,
    pub bits: u128,
}

pub const BITMAP_DAYS: i32 = 128;

impl DayBitmap {
    pub fn set(&mut self, day: i32) {
        if self.bits == 0 || day > self.last_day {
            let shift = if self.bits == 0 {
                BITMAP_DAYS
            } else {
                (day as i64 - self.last_day as i64).min(BITMAP_DAYS as i64) as i32
            };
            self.bits = if shift >= BITMAP_DAYS {
                0
            } else {
                self.bits << shift
            };
            self.last_day = day;
        }
        let idx = self.last_day as i64 - day as i64;
        if idx < BITMAP_DAYS as i64 {
            self.bits |= 1u128 << idx;
        }
    }

    pub fn is_set(&self, day: i32) -> bool {
        let idx = self.last_day as i64 - day as i64;
        (0..BITMAP_DAYS as i64).contains(&idx) && self.bits & (1u128 << idx) != 0
    }

    /// The bits of the kept days in `from..=to` (bit `i` is `last_day - i`).
    fn range_mask(&self, from: i32, to: i32) -> u128 {
        let lo = (self.last_day as i64 - to as i64).max(0);
        let hi = (self.last_day as i64 - from as i64).min(BITMAP_DAYS as i64 - 1);
        if lo > hi {
            return 0;
        }
        let width = hi - lo + 1;
        let ones = if width >= 128 {
            u128::MAX
        } else {
            (1u128 << width) - 1
        };
        ones << lo
    }

    /// Days set in `from..=to` (only the kept days can be).
    pub fn count(&self, from: i32, to: i32) -> u32 {
        (self.bits & self.range_mask(from, to)).count_ones()
    }

    pub fn is_empty(&self) -> bool {
        self.bits == 0
    }

    /// Longest run of unset days strictly between set days in `from..=to`:
    /// the widest gap between consecutive set bits of the range.
    pub fn longest_break(&self, from: i32, to: i32) -> u32 {
        let mut x = self.bits & self.range_mask(from, to);
        if x == 0 {
            return 0;
        }
        let mut prev = x.trailing_zeros();
        x &= x - 1;
        let mut longest = 0;
        while x != 0 {
            let next = x.trailing_zeros();
            longest = longest.max(next - prev - 1);
            prev = next;
            x &= x - 1;
        }
        longest
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// xorshift64: plenty to draw test cases from, with no RNG crate.
    fn draws(mut seed: u64) -> impl FnMut() -> u64 {
        move || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        }
    }

    /// `sum` adds a slice of slots; it must say what adding the weeks one
    /// by one says, for any range.
    #[test]
    fn weekly_sums_are_what_the_weeks_one_by_one_say() {
        let mut next = draws(0x2545_f491_4f6c_dd1du64);
        for _ in 0..20_000 {
            let mut w = WeeklyCounts::default();
            for _ in 0..(next() % 60) {
                w.add(2_800 + (next() % 40) as i32);
            }
            let from = 2_780 + (next() % 70) as i32;
            let to = from - 5 + (next() % 40) as i32;
            let by_week: u32 = (from..=to).map(|k| w.count(k)).sum();
            assert_eq!(w.sum(from, to), by_week, "{w:?} {from}..={to}");
            let oldest = w.newest_week - (WEEKS as i32 - 1);
            let before: u32 = (oldest..to).map(|k| w.count(k)).sum();
            assert_eq!(w.before(to), w.older + before, "{w:?} before {to}");
        }
    }

    /// `count` and `longest_break` work on masks of bits; they must say
    /// what walking the days one by one says, for any range.
    #[test]
    fn day_bitmap_ranges_are_what_the_days_one_by_one_say() {
        let mut next = draws(0x9e37_79b9_7f4a_7c15u64);
        for _ in 0..20_000 {
            let last_day = 20_000 + (next() % 50) as i32;
            let density = next() % 4;
            let mut bits = 0u128;
            for i in 0..128 {
                if next() % 4 < density {
                    bits |= 1 << i;
                }
            }
            let b = DayBitmap { last_day, bits };
            let from = last_day - 200 + (next() % 260) as i32;
            let to = from - 10 + (next() % 150) as i32;
            let days = from..=to;
            let count = days.clone().filter(|d| b.is_set(*d)).count() as u32;
            let (mut longest, mut run, mut seen) = (0, 0, false);
            for d in days {
                if b.is_set(d) {
                    if seen {
                        longest = longest.max(run);
                    }
                    seen = true;
                    run = 0;
                } else {
                    run += 1;
                }
            }
            assert_eq!(b.count(from, to), count, "{b:?} {from}..={to}");
            assert_eq!(b.longest_break(from, to), longest, "{b:?} {from}..={to}");
        }
        let b = DayBitmap {
            last_day: 0,
            bits: u128::MAX,
        };
        assert_eq!(b.count(i32::MIN, i32::MAX), 128);
        assert_eq!(b.longest_break(i32::MIN, i32::MAX), 0);
    }

    #[test]
    fn stored_extremes_neither_overflow_nor_loop() {
        // What a value that decodes can hold, however it got there.
        let mut w = WeeklyCounts {
            newest_week: i32::MIN,
            ..WeeklyCounts::default()
        };
        w.add(2_900);
        assert_eq!(w.count(2_900), 1);
        assert_eq!(w.sum(i32::MIN, i32::MAX), 1);
        assert_eq!(w.before(i32::MIN), { w.older });
        let mut b = DayBitmap {
            last_day: i32::MIN,
            bits: 1,
        };
        b.set(20_000);
        assert!(b.is_set(20_000));
        assert_eq!(b.count(i32::MIN, i32::MAX), 1);
    }

    #[test]
    fn weekly_counts_slide_and_keep_late_events_in_their_week() {
        let mut w = WeeklyCounts::default();
        w.add(100);
        w.add(100);
        w.add(103);
        w.add(101); // late, still inside the window
        assert_eq!((w.count(100), w.count(101), w.count(103)), (2, 1, 1));
        assert_eq!(w.sum(100, 103), 4);
        w.add(103 + WEEKS as i32 - 1);
        assert_eq!(w.count(100), 0, "slid out of the window");
        assert_eq!(w.count(103), 1);
        w.add(90); // too old for a slot: long run only
        assert_eq!(w.sum(0, 200), 2);
        assert_eq!(
            { w.older },
            4,
            "slid-out and too-late events stay in the long run"
        );
        assert_eq!(w.before(103 + WEEKS as i32), 6);
    }

    #[test]
    fn day_bitmap_tracks_check_in_days_and_breaks() {
        let mut b = DayBitmap::default();
        for d in [10, 11, 12, 15, 16] {
            b.set(d);
        }
        b.set(13); // late
        assert!(b.is_set(13) && !b.is_set(14));
        assert_eq!(b.count(10, 16), 6);
        assert_eq!(b.longest_break(10, 16), 1);
        b.set(10 + 200);
        assert_eq!(b.count(0, 100), 0);
        assert!(b.is_set(210));
    }
}
