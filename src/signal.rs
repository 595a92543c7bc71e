//! The alert signals (SPEC §2) and which of them have cooling episodes.
//!
//! Below `state` and `detect` both: a member's stored episode table is
//! indexed by signal, and the detectors name the signal they judge, so the
//! list lives in neither.

/// The alert signals. The first [`EPISODE_SIGNALS`] have cooling episodes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[repr(u8)]
pub enum Signal {
    PurchaseGap = 0,
    OpenRateDrop = 1,
    VisitDecline = 2,
    CheckinLapse = 3,
    SpendDecline = 4,
    StageChange = 5,
    Reactivated = 6,
}

pub const EPISODE_SIGNALS: usize = 6;

impl Signal {
    pub const ALL: [Signal; 7] = [
        Signal::PurchaseGap,
        Signal::OpenRateDrop,
        Signal::VisitDecline,
        Signal::CheckinLapse,
        Signal::SpendDecline,
        Signal::StageChange,
        Signal::Reactivated,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Signal::PurchaseGap => "purchase_gap",
            Signal::OpenRateDrop => "open_rate_drop",
            Signal::VisitDecline => "visit_decline",
            Signal::CheckinLapse => "checkin_lapse",
            Signal::SpendDecline => "spend_decline",
            Signal::StageChange => "stage_change",
            Signal::Reactivated => "reactivated",
        }
    }

    pub fn from_u8(v: u8) -> Option<Signal> {
        Signal::ALL.get(v as usize).copied()
    }

    pub fn parse(s: &str) -> Option<Signal> {
        Signal::ALL.into_iter().find(|x| x.as_str() == s)
    }
}
