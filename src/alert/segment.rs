//! Dormant-member segments (DOMAIN.md), in priority order: the first that
//! fits wins.
//!
//! | segment | rule (defaults) |
//! |---|---|
//! | `high_value_lapsing` | ≥ 5 purchase days and ≥ 500 total spend |
//! | `long_dormant` | no activity for ≥ 90 days |
//! | `low_frequency` | has bought, usual gap between purchases ≥ 45 days (or a single purchase over 45 days ago) |
//! | `just_dormant` | has bought, active within 90 days |
//! | `unclassified` | none of the above (e.g. never bought) |

use serde::{Deserialize, Serialize};

use crate::detect::{days, purchase_gap};
use crate::state::member::NEVER;
use crate::state::MemberState;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Segment {
    JustDormant,
    LongDormant,
    LowFrequency,
    HighValueLapsing,
    Unclassified,
}

impl Segment {
    pub const ALL: [Segment; 5] = [
        Segment::JustDormant,
        Segment::LongDormant,
        Segment::LowFrequency,
        Segment::HighValueLapsing,
        Segment::Unclassified,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Segment::JustDormant => "just_dormant",
            Segment::LongDormant => "long_dormant",
            Segment::LowFrequency => "low_frequency",
            Segment::HighValueLapsing => "high_value_lapsing",
            Segment::Unclassified => "unclassified",
        }
    }
}

/// `[alerts.segments]`
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct SegmentConfig {
    /// `high_value_lapsing`: at least this many distinct purchase days...
    pub high_value_min_purchase_days: u32,
    /// ...and at least this lifetime spend.
    pub high_value_min_spend: f64,
    /// `long_dormant`: no activity for at least this many days.
    pub long_dormant_days: f64,
    /// `low_frequency`: usual gap between purchases of at least this many days.
    pub low_frequency_gap_days: f64,
}

impl Default for SegmentConfig {
    fn default() -> Self {
        SegmentConfig {
            high_value_min_purchase_days: 5,
            high_value_min_spend: 500.0,
            long_dormant_days: 90.0,
            low_frequency_gap_days: 45.0,
        }
    }
}

impl SegmentConfig {
    pub fn classify(
        &self,
        m: &MemberState,
        now_ms: i64,
        gap_cfg: &purchase_gap::Config,
    ) -> Segment {
        if m.purchase_days >= self.high_value_min_purchase_days
            && m.total_spend >= self.high_value_min_spend
        {
            return Segment::HighValueLapsing;
        }
        let last_active = m.last_active_ms.max(m.last_purchase_ms().unwrap_or(NEVER));
        if last_active == NEVER || days(now_ms - last_active) >= self.long_dormant_days {
            return Segment::LongDormant;
        }
        let Some(last_purchase) = m.last_purchase_ms() else {
            return Segment::Unclassified;
        };
        let usual_gap = purchase_gap::median_gap_days(m, gap_cfg);
        let infrequent = match usual_gap {
            Some(g) => g >= self.low_frequency_gap_days,
            None => {
                m.purchase_days <= 1 && days(now_ms - last_purchase) >= self.low_frequency_gap_days
            }
        };
        if infrequent {
            Segment::LowFrequency
        } else {
            Segment::JustDormant
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::detect::testkit::{day, member};
    use crate::event::EventKind::{Purchase, Visit};

    fn classify(m: &MemberState, d: f64) -> Segment {
        SegmentConfig::default().classify(m, day(d), &purchase_gap::Config::default())
    }

    #[test]
    fn big_frequent_spenders_are_high_value_lapsing() {
        let m = member(
            &(0..6)
                .map(|i| (Purchase, i as f64 * 10.0, 150.0))
                .collect::<Vec<_>>(),
        );
        assert_eq!(classify(&m, 80.0), Segment::HighValueLapsing);
    }

    #[test]
    fn segments_follow_rhythm_and_recency() {
        let weekly = member(
            &(0..4)
                .map(|i| (Purchase, i as f64 * 7.0, 20.0))
                .collect::<Vec<_>>(),
        );
        assert_eq!(classify(&weekly, 40.0), Segment::JustDormant);
        assert_eq!(classify(&weekly, 130.0), Segment::LongDormant);
        let rare = member(&[
            (Purchase, 0.0, 20.0),
            (Purchase, 60.0, 20.0),
            (Purchase, 125.0, 20.0),
        ]);
        assert_eq!(classify(&rare, 150.0), Segment::LowFrequency);
        let browser = member(&[(Visit, 0.0, 0.0), (Visit, 10.0, 0.0)]);
        assert_eq!(classify(&browser, 20.0), Segment::Unclassified);
    }
}
