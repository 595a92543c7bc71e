//! Alerts built from what the engine found: every alert of one evaluation
//! shares the member's segment, risk score, purchase-model figures and
//! holdout flag at the moment of detection.

use super::{alert_id, reactivation_id, score::risk_score, Alert, AlertConfig, Segment};
use crate::detect::{purchase_gap, Evidence, Finding, Severity, Signal};
use crate::event::DAY_MS;
use crate::state::member::{OpenAlert, Stage};
use crate::state::MemberState;

/// The member an evaluation's alerts are about, as of that evaluation.
pub struct Subject<'a> {
    pub member_id: &'a str,
    pub stage: Stage,
    pub segment: Segment,
    pub risk_score: f64,
    /// `(p_alive, expected_purchases_90d)` when the purchase model is on.
    pub model: Option<(f64, f64)>,
    pub holdout: bool,
}

/// A member's return after an alert, as `reactivated` reports it.
pub struct Return {
    pub answered: Signal,
    pub days_to_return: f64,
    pub within_horizon: bool,
}

impl<'a> Subject<'a> {
    /// The member `m` (stage already moved by the evaluation) at `now_ms`.
    pub fn of(
        member_id: &'a str,
        m: &MemberState,
        now_ms: i64,
        cfg: &AlertConfig,
        gap: &purchase_gap::Config,
        risk: &crate::risk::Config,
    ) -> Self {
        Subject {
            member_id,
            stage: m.stage,
            segment: cfg.segments.classify(m, now_ms, gap),
            risk_score: risk_score(m, now_ms, risk),
            model: crate::risk::assess(m, now_ms, risk),
            holdout: cfg.is_holdout(member_id),
        }
    }

    /// The purchase model's figures, named as alerts carry them.
    fn with_model(&self, e: Evidence) -> Evidence {
        match self.model {
            Some((alive, expected)) => e
                .num("p_alive", (alive * 1e4).round() / 1e4)
                .num("expected_purchases_90d", (expected * 1e3).round() / 1e3),
            None => e,
        }
    }

    /// The alert of a newly opened episode (`seq`) of `signal`.
    pub fn detection(&self, signal: Signal, seq: u16, f: &Finding, cfg: &AlertConfig) -> Alert {
        Alert {
            alert_id: alert_id(self.member_id, signal, seq),
            member_id: self.member_id.to_string(),
            signal,
            severity: f.severity,
            risk_score: self.risk_score,
            stage: self.stage,
            segment: self.segment,
            evidence: self.with_model(f.evidence.clone()),
            recommended_action: cfg.playbook.action(self.segment, signal).to_string(),
            holdout: self.holdout,
            detected_ms: f.since_ms,
        }
    }

    /// The `reactivated` alert of a member back at `at_ms` after the alert
    /// `answered` was waiting for them.
    pub fn reactivation(
        &self,
        answered: OpenAlert,
        at_ms: i64,
        cfg: &AlertConfig,
    ) -> (Alert, Return) {
        let days_to_return = (at_ms - answered.detected_ms) as f64 / DAY_MS as f64;
        let within = days_to_return <= cfg.reactivation_horizon_days;
        let alert = Alert {
            alert_id: reactivation_id(self.member_id, answered.signal, answered.seq),
            member_id: self.member_id.to_string(),
            signal: Signal::Reactivated,
            severity: Severity::Info,
            risk_score: self.risk_score,
            stage: self.stage,
            segment: self.segment,
            evidence: self
                .with_model(Evidence::default())
                .text(
                    "answers_alert_id",
                    alert_id(self.member_id, answered.signal, answered.seq),
                )
                .text("answers_signal", answered.signal.as_str())
                .num("days_to_return", days_to_return)
                .flag("within_horizon", within)
                .num("horizon_days", cfg.reactivation_horizon_days),
            recommended_action: cfg
                .playbook
                .action(self.segment, Signal::Reactivated)
                .to_string(),
            holdout: self.holdout,
            detected_ms: at_ms,
        };
        (
            alert,
            Return {
                answered: answered.signal,
                days_to_return,
                within_horizon: within,
            },
        )
    }
}
