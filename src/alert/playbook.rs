//! `recommended_action`: a configurable playbook keyed by segment and signal.
//! Each segment has a default action and optional per-signal overrides; the
//! defaults follow the reactivation playbook in DOMAIN.md.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::Segment;
use crate::detect::Signal;

/// Actions for one segment.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct SegmentActions {
    /// Action for any signal without an override.
    pub default: String,
    /// Overrides by signal name (`purchase_gap`, `checkin_lapse`, ...).
    #[serde(default)]
    pub signals: BTreeMap<String, String>,
}

impl SegmentActions {
    fn new(default: &str, overrides: &[(Signal, &str)]) -> Self {
        SegmentActions {
            default: default.into(),
            signals: overrides
                .iter()
                .map(|(s, a)| (s.as_str().to_string(), a.to_string()))
                .collect(),
        }
    }
}

/// `[alerts.playbook]`
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct Playbook {
    /// Activity dropped recently: personalised nudges and short-lived coupons.
    pub just_dormant: SegmentActions,
    /// Inactive for a long time: deep recommendations and returning-member offers.
    pub long_dormant: SegmentActions,
    /// Always infrequent buyers: frequency rewards and new-product news.
    pub low_frequency: SegmentActions,
    /// Used to buy often and a lot: VIP invitation and 1:1 contact.
    pub high_value_lapsing: SegmentActions,
    /// No clear type: survey and a small "we miss you" reward.
    pub unclassified: SegmentActions,
    /// Action for `reactivated` alerts, whatever the segment.
    pub reactivated: String,
}

impl Default for Playbook {
    fn default() -> Self {
        use Signal::*;
        Playbook {
            just_dormant: SegmentActions::new(
                "personalised_recommendations_short_coupon",
                &[
                    (OpenRateDrop, "switch_channel_push_related_items"),
                    (CheckinLapse, "streak_rescue_bonus_points"),
                    (PurchaseGap, "replenishment_reminder_short_coupon"),
                ],
            ),
            long_dormant: SegmentActions::new(
                "returning_member_offer",
                &[(StageChange, "seasonal_winback_campaign")],
            ),
            low_frequency: SegmentActions::new(
                "frequency_reward_points",
                &[(OpenRateDrop, "new_product_news")],
            ),
            high_value_lapsing: SegmentActions::new(
                "vip_personal_outreach",
                &[(SpendDecline, "vip_tailored_offer")],
            ),
            unclassified: SegmentActions::new("we_miss_you_survey_small_reward", &[]),
            reactivated: "welcome_back_thank_you".into(),
        }
    }
}

impl Playbook {
    pub fn action(&self, segment: Segment, signal: Signal) -> &str {
        if signal == Signal::Reactivated {
            return &self.reactivated;
        }
        let s = match segment {
            Segment::JustDormant => &self.just_dormant,
            Segment::LongDormant => &self.long_dormant,
            Segment::LowFrequency => &self.low_frequency,
            Segment::HighValueLapsing => &self.high_value_lapsing,
            Segment::Unclassified => &self.unclassified,
        };
        s.signals.get(signal.as_str()).unwrap_or(&s.default)
    }

    /// Names the first override keyed by something that is not a signal.
    pub fn unknown_signal_key(&self) -> Option<String> {
        let segs = [
            ("just_dormant", &self.just_dormant),
            ("long_dormant", &self.long_dormant),
            ("low_frequency", &self.low_frequency),
            ("high_value_lapsing", &self.high_value_lapsing),
            ("unclassified", &self.unclassified),
        ];
        segs.iter().find_map(|(name, s)| {
            s.signals
                .keys()
                .find(|k| Signal::parse(k).is_none())
                .map(|k| format!("alerts.playbook.{name}.signals.{k}"))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn overrides_win_over_the_segment_default() {
        let p = Playbook::default();
        assert_eq!(
            p.action(Segment::JustDormant, Signal::CheckinLapse),
            "streak_rescue_bonus_points"
        );
        assert_eq!(
            p.action(Segment::JustDormant, Signal::VisitDecline),
            "personalised_recommendations_short_coupon"
        );
        assert_eq!(
            p.action(Segment::HighValueLapsing, Signal::Reactivated),
            "welcome_back_thank_you"
        );
    }
}
