//! The alert contract (SPEC §2): building, identifying and encoding alerts,
//! with the member's segment, risk score, holdout flag and playbook action.

pub mod build;
pub mod playbook;
pub mod score;
pub mod segment;

use std::io::Write;

use serde::{Deserialize, Serialize};
use xxhash_rust::xxh3::{xxh3_128, xxh3_64};

use crate::detect::{Evidence, EvidenceValue, Severity, Signal};
use crate::event::format_rfc3339_ms;
use crate::state::member::Stage;
pub use build::Subject;
pub use playbook::Playbook;
pub use segment::{Segment, SegmentConfig};

pub const SCHEMA: &str = "churnwatch.alert.v1";

/// `[alerts]`: holdout, reactivation tracking and the playbook.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct AlertConfig {
    /// Share of members (0–1) in the control group (SPEC §5).
    pub holdout_share: f64,
    /// Salt of the holdout hash; change it to draw a new control group.
    pub holdout_salt: String,
    /// Event types that count as a member coming back (`reactivated`).
    pub reactivation_events: Vec<crate::event::EventKind>,
    /// A return within this many days of the alert counts as a reactivation
    /// in the recovery-rate metrics.
    pub reactivation_horizon_days: f64,
    /// Dormant-member segments (DOMAIN.md).
    pub segments: SegmentConfig,
    /// `recommended_action` per segment and signal.
    pub playbook: Playbook,
}

impl Default for AlertConfig {
    fn default() -> Self {
        AlertConfig {
            holdout_share: 0.10,
            holdout_salt: "churnwatch-holdout-v1".into(),
            reactivation_events: vec![crate::event::EventKind::Purchase],
            reactivation_horizon_days: 30.0,
            segments: SegmentConfig::default(),
            playbook: Playbook::default(),
        }
    }
}

impl AlertConfig {
    /// Stable control-group membership: the same member is always in or out.
    pub fn is_holdout(&self, member_id: &str) -> bool {
        if self.holdout_share <= 0.0 {
            return false;
        }
        let mut buf = [0u8; 256];
        let salt = self.holdout_salt.as_bytes();
        let h = if salt.len() + member_id.len() <= buf.len() {
            buf[..salt.len()].copy_from_slice(salt);
            buf[salt.len()..salt.len() + member_id.len()].copy_from_slice(member_id.as_bytes());
            xxh3_64(&buf[..salt.len() + member_id.len()])
        } else {
            xxh3_64(format!("{}{member_id}", self.holdout_salt).as_bytes())
        };
        ((h % 10_000) as f64) < self.holdout_share * 10_000.0
    }
}

/// Deterministic id of a detection: the member, the signal and the number of
/// that signal's episode. A redelivered alert carries the same id.
pub fn alert_id(member_id: &str, signal: Signal, seq: u16) -> String {
    let mut buf = Vec::with_capacity(member_id.len() + 24);
    buf.extend_from_slice(member_id.as_bytes());
    buf.push(0);
    buf.extend_from_slice(signal.as_str().as_bytes());
    buf.push(0);
    buf.extend_from_slice(&seq.to_le_bytes());
    format!("{:032x}", xxh3_128(&buf))
}

/// Id of the `reactivated` alert answering the alert `(signal, seq)`.
pub fn reactivation_id(member_id: &str, answered: Signal, seq: u16) -> String {
    let mut buf = Vec::with_capacity(member_id.len() + 40);
    buf.extend_from_slice(member_id.as_bytes());
    buf.extend_from_slice(b"\0reactivated\0");
    buf.extend_from_slice(answered.as_str().as_bytes());
    buf.push(0);
    buf.extend_from_slice(&seq.to_le_bytes());
    format!("{:032x}", xxh3_128(&buf))
}

#[derive(Debug, Clone, PartialEq)]
pub struct Alert {
    pub alert_id: String,
    pub member_id: String,
    pub signal: Signal,
    pub severity: Severity,
    pub risk_score: f64,
    pub stage: Stage,
    pub segment: Segment,
    pub evidence: Evidence,
    pub recommended_action: String,
    pub holdout: bool,
    pub detected_ms: i64,
}

impl Alert {
    /// The alert as one JSON object (SPEC §2), `emitted_at` = `emitted_ms`.
    pub fn to_json(&self, emitted_ms: i64) -> Vec<u8> {
        let mut out = Vec::with_capacity(512);
        self.write_json(&mut out, emitted_ms);
        out
    }

    pub fn write_json(&self, out: &mut Vec<u8>, emitted_ms: i64) {
        let s = |v: &str| serde_json::to_string(v).expect("strings always encode");
        let _ = write!(
            out,
            "{{\"schema\":\"{SCHEMA}\",\"alert_id\":\"{}\",\"member_id\":{},\"signal\":\"{}\",\"severity\":\"{}\",\"risk_score\":{},\"stage\":\"{}\",\"segment\":\"{}\",\"evidence\":{{",
            self.alert_id,
            s(&self.member_id),
            self.signal.as_str(),
            self.severity.as_str(),
            json_num(self.risk_score),
            self.stage.as_str(),
            self.segment.as_str(),
        );
        for (i, (name, v)) in self.evidence.0.iter().enumerate() {
            if i > 0 {
                out.push(b',');
            }
            let _ = write!(out, "\"{name}\":");
            match v {
                EvidenceValue::Num(n) => {
                    let _ = write!(out, "{}", json_num(*n));
                }
                EvidenceValue::Text(t) => {
                    let _ = write!(out, "{}", s(t));
                }
                EvidenceValue::Flag(b) => {
                    let _ = write!(out, "{b}");
                }
            }
        }
        let _ = write!(
            out,
            "}},\"recommended_action\":{},\"holdout\":{},\"detected_at\":\"{}\",\"emitted_at\":\"{}\"}}",
            s(&self.recommended_action),
            self.holdout,
            format_rfc3339_ms(self.detected_ms),
            format_rfc3339_ms(emitted_ms),
        );
    }
}

/// Numbers as JSON: always with a decimal point, never NaN or infinite.
fn json_num(v: f64) -> String {
    if !v.is_finite() {
        return "0.0".into();
    }
    if v.fract() == 0.0 && v.abs() < 1e15 {
        format!("{v:.1}")
    } else {
        format!("{v}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Alert {
        Alert {
            alert_id: alert_id("m-1", Signal::PurchaseGap, 1),
            member_id: "m-\"1\"".into(),
            signal: Signal::PurchaseGap,
            severity: Severity::Warning,
            risk_score: 71.5,
            stage: Stage::Cooling,
            segment: Segment::JustDormant,
            evidence: Evidence::default()
                .num("days_since_purchase", 64.0)
                .text("from", "a"),
            recommended_action: "replenishment_reminder".into(),
            holdout: false,
            detected_ms: 1_772_366_400_000,
        }
    }

    #[test]
    fn encodes_every_contract_field() {
        let v: serde_json::Value =
            serde_json::from_slice(&sample().to_json(1_772_366_400_123)).unwrap();
        assert_eq!(v["schema"], SCHEMA);
        assert_eq!(v["member_id"], "m-\"1\"");
        assert_eq!(v["evidence"]["days_since_purchase"], 64.0);
        assert_eq!(v["detected_at"], "2026-03-01T12:00:00.000Z");
        assert_eq!(v["emitted_at"], "2026-03-01T12:00:00.123Z");
        assert_eq!(v.as_object().unwrap().len(), 13);
    }

    #[test]
    fn alert_ids_are_stable_and_distinct() {
        assert_eq!(
            alert_id("m", Signal::PurchaseGap, 1),
            alert_id("m", Signal::PurchaseGap, 1)
        );
        assert_ne!(
            alert_id("m", Signal::PurchaseGap, 1),
            alert_id("m", Signal::PurchaseGap, 2)
        );
        assert_ne!(
            alert_id("m", Signal::PurchaseGap, 1),
            alert_id("m", Signal::VisitDecline, 1)
        );
        assert_eq!(alert_id("m", Signal::PurchaseGap, 1).len(), 32);
    }

    #[test]
    fn holdout_is_stable_and_about_the_configured_share() {
        let cfg = AlertConfig::default();
        let n = (0..20_000)
            .filter(|i| cfg.is_holdout(&format!("member-{i}")))
            .count();
        assert!((1_800..2_200).contains(&n), "{n}");
        assert_eq!(cfg.is_holdout("member-7"), cfg.is_holdout("member-7"));
        let none = AlertConfig {
            holdout_share: 0.0,
            ..AlertConfig::default()
        };
        assert!(!none.is_holdout("member-7"));
    }
}
