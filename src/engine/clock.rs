//! `[time]`: how event time becomes the stream clock (SPEC §3).

use serde::{Deserialize, Serialize};

/// Stream clock settings.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct ClockConfig {
    /// The clock trails the highest event time by this much, so late events
    /// still land before the timers they could affect fire.
    pub allowed_lateness_ms: i64,
    /// Events more than this far ahead of the wall clock are rejected.
    pub future_skew_ms: i64,
    /// On an idle input, advance the clock with the wall clock (`run` only;
    /// `replay` never does).
    pub idle_advance: bool,
    /// A partition with no new events for this long counts as idle.
    pub idle_after_ms: i64,
    /// At most this many timers fire between two commits: a clock that
    /// jumps far (an idle advance after a long outage, the first event of a
    /// partition after months) fires in chunks, each committed before the
    /// next, so memory is set by this bound, not by how many timers are due.
    pub max_timers_per_commit: usize,
}

impl Default for ClockConfig {
    fn default() -> Self {
        ClockConfig {
            allowed_lateness_ms: 3_600_000,
            future_skew_ms: crate::event::DAY_MS,
            idle_advance: true,
            idle_after_ms: 30_000,
            max_timers_per_commit: 20_000,
        }
    }
}
