//! Cooling detectors, one module per signal of SPEC §2.
//!
//! Every detector compares a member with *their own* history and refuses to
//! judge until that history is long enough (its `min_*` settings). A detector
//! is a pure function of the member state and the evaluation time returning a
//! [`Verdict`]; the engine owns episodes (one alert per signal per cooling
//! episode) and timers. Absence detectors also say when, with no further
//! event, their condition would become true (`due_ms`), so the engine can
//! fire them from the timer index on a silent stream.

pub mod checkin_lapse;
pub mod open_rate_drop;
pub mod purchase_gap;
pub mod spend_decline;
pub mod stage_change;
pub mod stats;
pub mod visit_decline;

use serde::{Deserialize, Serialize};

use crate::event::{EventKind, DAY_MS};
use crate::state::window::week_of;
use crate::state::MemberState;

pub use crate::signal::{Signal, EPISODE_SIGNALS};

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Severity {
    Info,
    Warning,
    Critical,
}

impl Severity {
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Info => "info",
            Severity::Warning => "warning",
            Severity::Critical => "critical",
        }
    }
}

/// One named number (or word) behind a detection.
#[derive(Debug, Clone, PartialEq)]
pub enum EvidenceValue {
    Num(f64),
    Text(String),
    Flag(bool),
}

/// The numbers that triggered a detection, in the order they are shown.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Evidence(pub Vec<(&'static str, EvidenceValue)>);

impl Evidence {
    pub fn num(mut self, name: &'static str, v: f64) -> Self {
        // Three decimals are plenty for people and keep alerts deterministic
        // across platforms' last-bit float differences.
        self.0
            .push((name, EvidenceValue::Num((v * 1000.0).round() / 1000.0)));
        self
    }
    pub fn text(mut self, name: &'static str, v: impl Into<String>) -> Self {
        self.0.push((name, EvidenceValue::Text(v.into())));
        self
    }
    pub fn flag(mut self, name: &'static str, v: bool) -> Self {
        self.0.push((name, EvidenceValue::Flag(v)));
        self
    }
    pub fn get(&self, name: &str) -> Option<&EvidenceValue> {
        self.0.iter().find(|(n, _)| *n == name).map(|(_, v)| v)
    }
    pub fn get_num(&self, name: &str) -> Option<f64> {
        match self.get(name)? {
            EvidenceValue::Num(n) => Some(*n),
            _ => None,
        }
    }
}

/// A condition that holds, with when it became true.
#[derive(Debug, Clone, PartialEq)]
pub struct Finding {
    pub severity: Severity,
    pub evidence: Evidence,
    /// Event time at which the condition became true (`detected_at`).
    pub since_ms: i64,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Verdict {
    /// The condition holds: open an episode (and alert) unless one is open.
    Fire(Finding),
    /// The member is back to normal for this signal: close an open episode.
    Recover,
    /// Not enough evidence either way: leave the episode as it is.
    Hold,
}

/// Thresholds of all detectors (`[detect.*]` in the config).
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct DetectConfig {
    /// Time since the last purchase against the member's usual gap.
    pub purchase_gap: purchase_gap::Config,
    /// Email open rate against the member's own baseline (binomial).
    pub open_rate_drop: open_rate_drop::Config,
    /// Visit frequency against the member's own baseline (Poisson).
    pub visit_decline: visit_decline::Config,
    /// Broken daily check-in habits.
    pub checkin_lapse: checkin_lapse::Config,
    /// Average order value against the member's own baseline.
    pub spend_decline: spend_decline::Config,
}

/// What every detector judges a member with.
#[derive(Clone, Copy)]
pub struct Context<'a> {
    pub detect: &'a DetectConfig,
    /// The purchase model (`purchase_gap` can open an episode on P(alive)).
    pub risk: &'a crate::risk::Config,
}

/// One cooling signal's detector. A pure function of the member's state and
/// the time: the engine owns episodes (one alert per signal per episode),
/// timers and alerts, and runs every detector in [`DETECTORS`] the same way.
pub trait Detector: Sync {
    fn signal(&self) -> Signal;

    /// Whether the condition holds at `now_ms` (with its evidence), the
    /// member is back to normal, or there is not enough evidence either way.
    fn evaluate(&self, m: &MemberState, now_ms: i64, ctx: &Context<'_>) -> Verdict;

    /// For an absence signal: the first moment after `now_ms` at which, with
    /// no further event, the condition could become true (the engine's timer
    /// for the member waits for it). `None` for signals only events trip.
    fn due_ms(&self, _m: &MemberState, _now_ms: i64, _ctx: &Context<'_>) -> Option<i64> {
        None
    }

    /// What `evaluate` and `due_ms` read, so the engine can reuse an answer
    /// while none of it changed (see [`Inputs`]). The default says "anything":
    /// asked every time.
    fn inputs(&self) -> Inputs {
        Inputs::ANYTHING
    }
}

/// How the evaluation time enters a detector's answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NowUse {
    /// Not at all.
    Ignored,
    /// Only through the week it falls in (`week_of`).
    Week,
    /// Only through the week it falls in, and only the complete weeks
    /// before that week are read: an event dated in that week or later
    /// cannot change the answer (the tests on complete weeks).
    WeeksBefore,
    /// Only through whether it has reached the detector's own `due_ms`,
    /// which must not depend on the time itself (`due: Ignored`): the
    /// verdict of an absence test that holds from its due time on, and
    /// before it says what the events alone say.
    UntilDue,
    /// To the millisecond: the answer is worked out every time.
    Exact,
}

/// What a detector's answers are functions of, besides the config: the
/// member's events of the kinds in `events` (whatever fields of the state
/// they feed), when the member was first seen, and the evaluation time as
/// `verdict` and `due` say. The engine reuses an answer for as long as none
/// of that changed, which makes an event of another kind cost the detector
/// nothing; the answer is the same, so no alert depends on the reuse. A
/// detector that reads anything else (other events, episodes, the stage,
/// the last event time) must say so here or keep [`Inputs::ANYTHING`].
#[derive(Debug, Clone, Copy)]
pub struct Inputs {
    pub events: &'static [EventKind],
    pub verdict: NowUse,
    pub due: NowUse,
}

impl Inputs {
    pub const ANYTHING: Inputs = Inputs {
        events: &EventKind::ALL,
        verdict: NowUse::Exact,
        due: NowUse::Exact,
    };
}

/// Every episode detector, in the order their alerts are raised when
/// several fire at once. (The lifecycle, `stage_change`, is judged after
/// them: it depends on whether any of them is cooling.)
pub static DETECTORS: [&dyn Detector; 5] = [
    &purchase_gap::PurchaseGap,
    &open_rate_drop::OpenRateDrop,
    &visit_decline::VisitDecline,
    &checkin_lapse::CheckinLapse,
    &spend_decline::SpendDecline,
];

/// Complete weeks before the evaluation time, split into a recent window and
/// the baseline before it, clipped to the weeks the member has been known.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WeekWindows {
    pub recent: (i32, i32),
    pub baseline: (i32, i32),
    pub baseline_weeks: u32,
}

impl WeekWindows {
    /// `None` while the member is too new to have a full recent window and
    /// `min_baseline_weeks` of baseline.
    pub fn at(
        m: &MemberState,
        now_ms: i64,
        recent_weeks: u32,
        baseline_weeks: u32,
        min_baseline_weeks: u32,
    ) -> Option<WeekWindows> {
        let cur = week_of(now_ms);
        // The week the member was first seen is partial: it starts the count.
        let first_full = week_of(m.first_seen_ms) + 1;
        let recent = (cur - recent_weeks as i32, cur - 1);
        let base_to = recent.0 - 1;
        let base_from = (base_to - baseline_weeks as i32 + 1).max(first_full);
        let weeks = base_to - base_from + 1;
        if weeks < min_baseline_weeks.max(1) as i32 {
            return None;
        }
        Some(WeekWindows {
            recent,
            baseline: (base_from, base_to),
            baseline_weeks: weeks as u32,
        })
    }
}

pub fn days(ms: i64) -> f64 {
    ms as f64 / DAY_MS as f64
}

#[cfg(test)]
pub(crate) mod testkit;
