//! One small type per thing worth telling an operator about. Each `emit`
//! counts it and, where a person would want to read it, logs it.

use super::Metrics;
use crate::detect::{Severity, Signal};
use crate::event::{EventKind, RejectReason};

pub struct EventConsumed {
    pub kind: EventKind,
}

impl EventConsumed {
    #[inline]
    pub fn emit(&self, m: &Metrics) {
        m.consumed(self.kind).inc();
    }
}

pub struct EventRejected<'a> {
    pub reason: RejectReason,
    pub detail: &'a str,
    pub source: &'a str,
}

impl EventRejected<'_> {
    pub fn emit(&self, m: &Metrics) {
        m.rejected(self.reason).inc();
        tracing::debug!(
            reason = self.reason.as_str(),
            detail = self.detail,
            source = self.source,
            "event rejected"
        );
    }
}

pub struct DuplicateAbsorbed;

impl DuplicateAbsorbed {
    #[inline]
    pub fn emit(&self, m: &Metrics) {
        m.events_duplicate.inc();
    }
}

pub struct AlertPublished {
    pub signal: Signal,
    pub severity: Severity,
}

impl AlertPublished {
    #[inline]
    pub fn emit(&self, m: &Metrics) {
        m.alert_published(self.signal, self.severity);
    }
}

/// A member's first alert of a cooling period: the denominator of the
/// recovery rate.
pub struct MemberAlerted {
    pub signal: Signal,
    pub holdout: bool,
}

impl MemberAlerted {
    pub fn emit(&self, m: &Metrics) {
        m.alerted_member(self.signal, self.holdout);
    }
}

pub struct MemberReactivated {
    pub signal: Signal,
    pub holdout: bool,
    pub days_to_return: f64,
    pub within_horizon: bool,
}

impl MemberReactivated {
    pub fn emit(&self, m: &Metrics) {
        if self.within_horizon {
            m.reactivation(self.signal, self.holdout);
        }
    }
}

pub struct TimersFired {
    pub count: u64,
}

impl TimersFired {
    pub fn emit(&self, m: &Metrics) {
        m.timers_fired.inc_by(self.count);
    }
}

pub struct StateCommitted {
    pub members: usize,
    pub seconds: f64,
    pub clock_ms: i64,
    pub wall_ms: i64,
}

impl StateCommitted {
    pub fn emit(&self, m: &Metrics) {
        m.commits.inc();
        m.commit_duration
            .with_label_values(&["rocksdb"])
            .observe(self.seconds);
        if self.clock_ms > 0 {
            m.stream_clock_seconds.set(self.clock_ms / 1000);
            m.stream_clock_lag_seconds
                .set((self.wall_ms - self.clock_ms) / 1000);
        }
        tracing::trace!(
            members = self.members,
            seconds = self.seconds,
            "state committed"
        );
    }
}
