//! Lifecycle stages (SPEC §4) and the `stage_change` signal: the member moved
//! to `silent` or `churned`.
//!
//! Recency is measured from the last purchase. A member who never bought is
//! measured from their last activity instead: "no purchase for 90 days" says
//! nothing about someone who has only ever browsed, but three months without
//! any activity does.

use serde::{Deserialize, Serialize};

use super::{days, Evidence, Finding, Severity};
use crate::event::DAY_MS;
use crate::state::member::{Stage, NEVER};
use crate::state::MemberState;

/// `[lifecycle]`: stage thresholds in days.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// `active`: a purchase or other activity within this many days.
    pub active_days: f64,
    /// `silent`: no purchase for more than this many days.
    pub silent_days: f64,
    /// `churned`: no purchase for more than this many days.
    pub churned_days: f64,
    /// `new`: fewer than two purchases and joined within this many days.
    pub new_days: f64,
    /// Raise `stage_change` alerts (the stage itself is always tracked).
    pub alert_on_silent: bool,
    /// Raise `stage_change` alerts on the move to `churned`.
    pub alert_on_churned: bool,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            active_days: 30.0,
            silent_days: 90.0,
            churned_days: 180.0,
            new_days: 30.0,
            alert_on_silent: true,
            alert_on_churned: true,
        }
    }
}

fn anchor_ms(m: &MemberState) -> i64 {
    m.last_purchase_ms()
        .unwrap_or(if m.last_active_ms == NEVER {
            m.first_seen_ms
        } else {
            m.last_active_ms
        })
}

/// The member's stage at `now_ms`; `cooling` when an episode is open.
pub fn stage_at(m: &MemberState, now_ms: i64, cooling: bool, cfg: &Config) -> Stage {
    let since = days(now_ms - anchor_ms(m));
    if since > cfg.churned_days {
        return Stage::Churned;
    }
    if since > cfg.silent_days {
        return Stage::Silent;
    }
    if cooling {
        return Stage::Cooling;
    }
    if m.purchase_count < 2 && days(now_ms - m.first_seen_ms) <= cfg.new_days {
        return Stage::New;
    }
    let last_active = m.last_active_ms.max(m.last_purchase_ms().unwrap_or(NEVER));
    if last_active != NEVER && days(now_ms - last_active) <= cfg.active_days {
        Stage::Active
    } else {
        Stage::Cooling
    }
}

/// The next moment the stage would move to `silent` or `churned` by itself.
pub fn due_ms(m: &MemberState, now_ms: i64, cfg: &Config) -> Option<i64> {
    let anchor = anchor_ms(m);
    [cfg.silent_days, cfg.churned_days]
        .into_iter()
        // "More than N days": the first millisecond past the boundary.
        .map(|d| anchor + (d * DAY_MS as f64) as i64 + 1)
        .find(|due| *due > now_ms)
}

/// The finding for a move from `from` to `to`, if it is one to alert on.
pub fn finding(
    m: &MemberState,
    from: Stage,
    to: Stage,
    now_ms: i64,
    cfg: &Config,
) -> Option<Finding> {
    let (severity, threshold) = match to {
        Stage::Silent if cfg.alert_on_silent && from < Stage::Silent => {
            (Severity::Warning, cfg.silent_days)
        }
        Stage::Churned if cfg.alert_on_churned && from < Stage::Churned => {
            (Severity::Critical, cfg.churned_days)
        }
        _ => return None,
    };
    let anchor = anchor_ms(m);
    let evidence = Evidence::default()
        .text("from", from.as_str())
        .text("to", to.as_str());
    let evidence = if m.last_purchase_ms().is_some() {
        evidence.num("days_since_purchase", days(now_ms - anchor))
    } else {
        evidence.num("days_since_activity", days(now_ms - anchor))
    };
    Some(Finding {
        severity,
        evidence: evidence.num("threshold_days", threshold),
        since_ms: (anchor + (threshold * DAY_MS as f64) as i64 + 1).min(now_ms),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::detect::testkit::{day, member};
    use crate::event::EventKind::{Purchase, Visit};

    #[test]
    fn stages_follow_purchase_recency() {
        let cfg = Config::default();
        let m = member(&[(Purchase, 0.0, 10.0), (Purchase, 40.0, 10.0)]);
        assert_eq!(stage_at(&m, day(50.0), false, &cfg), Stage::Active);
        assert_eq!(stage_at(&m, day(50.0), true, &cfg), Stage::Cooling);
        assert_eq!(stage_at(&m, day(80.0), false, &cfg), Stage::Cooling);
        assert_eq!(stage_at(&m, day(131.0), false, &cfg), Stage::Silent);
        assert_eq!(stage_at(&m, day(221.0), false, &cfg), Stage::Churned);
        assert_eq!(due_ms(&m, day(50.0), &cfg), Some(day(130.0) + 1));
        assert_eq!(due_ms(&m, day(130.5), &cfg), Some(day(220.0) + 1));
    }

    #[test]
    fn a_first_time_buyer_is_new() {
        let m = member(&[(Purchase, 0.0, 10.0)]);
        assert_eq!(
            stage_at(&m, day(10.0), false, &Config::default()),
            Stage::New
        );
        assert_eq!(
            stage_at(&m, day(45.0), false, &Config::default()),
            Stage::Cooling
        );
    }

    #[test]
    fn browsers_are_measured_from_their_last_activity() {
        let m = member(&[(Visit, 0.0, 0.0), (Visit, 100.0, 0.0)]);
        assert_eq!(
            stage_at(&m, day(110.0), false, &Config::default()),
            Stage::Active
        );
        assert_eq!(
            stage_at(&m, day(191.0), false, &Config::default()),
            Stage::Silent
        );
    }

    #[test]
    fn only_moves_into_silent_or_churned_alert() {
        let m = member(&[(Purchase, 0.0, 10.0)]);
        let cfg = Config::default();
        let f = finding(&m, Stage::Cooling, Stage::Silent, day(91.0), &cfg).unwrap();
        assert_eq!(f.severity, Severity::Warning);
        assert_eq!(f.since_ms, day(90.0) + 1);
        assert!(finding(&m, Stage::Silent, Stage::Active, day(91.0), &cfg).is_none());
        assert!(finding(&m, Stage::Churned, Stage::Silent, day(91.0), &cfg).is_none());
        assert_eq!(
            finding(&m, Stage::Silent, Stage::Churned, day(181.0), &cfg)
                .unwrap()
                .severity,
            Severity::Critical
        );
    }
}
