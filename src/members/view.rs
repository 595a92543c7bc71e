//! One member judged at a moment: stage, segment, risk, open episodes,
//! baselines in plain units, last events and the next timer.
//!
//! The stored state is what the engine left after its last event or timer
//! for the member. [`evaluate`] runs the engine's own judgement
//! ([`judge`]) on a copy at the requested time, so a member who crossed a
//! threshold since (say, 90 days without a purchase) shows the stage the
//! engine's next timer will give them; nothing is written back.

use serde_json::{json, Value};

use crate::alert::{self, Segment};
use crate::detect::{days, stats, Signal, EPISODE_SIGNALS};
use crate::engine::{judge, risk_of, timer_checks, EngineConfig, META_CLOCK};
use crate::event::{format_rfc3339_ms, DAY_MS};
use crate::state::keys::{member_key, meta_key, partition_end, split_member_key};
use crate::state::member::{Stage, NEVER};
use crate::state::window::{week_of, week_start_ms, WeeklyCounts, WEEKS};
use crate::state::{MemberState, Store, StoreError, Table};

#[derive(Debug, thiserror::Error)]
pub enum ViewError {
    #[error(transparent)]
    Store(#[from] StoreError),
    /// Deliberately without the member id: this error may be logged.
    #[error("a member's stored state in partition {partition} is unreadable: {reason}")]
    Corrupt { partition: u32, reason: String },
}

/// An open cooling episode and the alert that opened it.
#[derive(Debug, Clone, PartialEq)]
pub struct OpenEpisode {
    pub signal: Signal,
    pub alert_id: String,
    /// When the condition became true (the alert's `detected_at`).
    pub since_ms: i64,
}

/// The member's own baselines, in the units people use.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Baselines {
    /// Median gap between purchase days (as `purchase_gap` measures it).
    pub typical_gap_days: Option<f64>,
    /// Opens per send over the kept complete weeks (up to 16).
    pub open_rate: Option<f64>,
    /// Visits per week over the kept complete weeks (up to 16).
    pub visits_per_week: Option<f64>,
    /// Check-in days per week over the 28 days up to the last check-in.
    pub checkin_days_per_week: Option<f64>,
    /// Consecutive check-in days ending at the last check-in.
    pub checkin_streak_days: u32,
    /// Median order value of the kept purchases.
    pub typical_order_value: Option<f64>,
}

/// The last event time per type, as precise as the state keeps it:
/// purchases and `any`/`activity` to the millisecond, check-ins to the day
/// (00:00 UTC), visits and emails to the week (Monday 00:00 UTC, the state
/// counts them per week). `None`: none within the kept window (16 weeks of
/// weekly counts, 128 days of check-ins) or never.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct LastEvents {
    pub any: Option<i64>,
    pub activity: Option<i64>,
    pub purchase: Option<i64>,
    pub check_in: Option<i64>,
    pub visit: Option<i64>,
    pub email_send: Option<i64>,
    pub email_open: Option<i64>,
}

/// The member's next timer and the absence checks it runs.
#[derive(Debug, Clone, PartialEq)]
pub struct NextTimer {
    pub due_ms: i64,
    /// Signals whose condition is checked then (`stage_change` for the
    /// lifecycle thresholds), or `evict` for `state.evict_after_days`.
    pub checks: Vec<&'static str>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct MemberView {
    pub member_id: String,
    pub partition: u32,
    pub evaluated_ms: i64,
    pub stage: Stage,
    pub segment: Segment,
    pub risk_score: f64,
    pub p_alive: Option<f64>,
    pub expected_purchases_90d: Option<f64>,
    pub holdout: bool,
    pub baselines: Baselines,
    pub open_episodes: Vec<OpenEpisode>,
    /// The oldest alert still waiting for the member to come back (its
    /// `reactivated` alert will answer it).
    pub awaiting_return: Option<OpenEpisode>,
    pub last_event: LastEvents,
    pub next_timer: Option<NextTimer>,
    pub purchase_count: u32,
    pub total_spend: f64,
}

fn round(v: f64, places: i32) -> f64 {
    let f = 10f64.powi(places);
    (v * f).round() / f
}

/// Judges `stored` at `now_ms` as the engine would, without changing it.
pub fn evaluate(
    member_id: &str,
    partition: u32,
    stored: &MemberState,
    now_ms: i64,
    cfg: &EngineConfig,
) -> MemberView {
    let mut m = stored.clone();
    let mut findings = Vec::new();
    judge(&mut m, now_ms, cfg, &mut findings);
    let (risk, model) = risk_of(&m, now_ms, cfg);
    let segment = cfg
        .alerts
        .segments
        .classify(&m, now_ms, &cfg.detect.purchase_gap);
    let open_episodes = Signal::ALL[..EPISODE_SIGNALS]
        .iter()
        .filter(|s| m.episodes[**s as usize].open)
        .map(|s| {
            let ep = m.episodes[*s as usize];
            OpenEpisode {
                signal: *s,
                alert_id: alert::alert_id(member_id, *s, ep.seq),
                since_ms: ep.opened_ms,
            }
        })
        .collect();
    let awaiting_return = m.open_alert.map(|a| OpenEpisode {
        signal: a.signal,
        alert_id: alert::alert_id(member_id, a.signal, a.seq),
        since_ms: a.detected_ms,
    });
    MemberView {
        member_id: member_id.to_string(),
        partition,
        evaluated_ms: now_ms,
        stage: m.stage,
        segment,
        risk_score: risk,
        p_alive: model.map(|(alive, _)| round(alive, 4)),
        expected_purchases_90d: model.map(|(_, e)| round(e, 3)),
        holdout: cfg.alerts.is_holdout(member_id),
        baselines: baselines(&m, now_ms, cfg),
        open_episodes,
        awaiting_return,
        last_event: last_events(&m),
        next_timer: next_timer(&m, now_ms, cfg),
        purchase_count: m.purchase_count,
        total_spend: round(m.total_spend, 2),
    }
}

/// Days before the last check-in over which the check-in rate is taken.
const CHECKIN_WINDOW_DAYS: i32 = 28;

/// Descriptive baselines over what the state keeps: the complete weeks of
/// the weekly counts (up to 16, from the member's first full week) and the
/// check-in days of the last four weeks before the last check-in. They
/// describe the member; the detectors keep their own windows and tests.
fn baselines(m: &MemberState, now_ms: i64, cfg: &EngineConfig) -> Baselines {
    let cur = week_of(now_ms);
    let (first, last) = (
        (week_of(m.first_seen_ms) + 1).max(cur - (WEEKS as i32 - 1)),
        cur - 1,
    );
    let weeks = last - first + 1;
    let (open_rate, visits_per_week) = if weeks >= 1 {
        let sends = m.sends.sum(first, last);
        let opens = m.opens.sum(first, last).min(sends);
        (
            (sends > 0).then(|| round(opens as f64 / sends as f64, 3)),
            Some(round(m.visits.sum(first, last) as f64 / weeks as f64, 3)),
        )
    } else {
        (None, None)
    };
    let (checkin_days_per_week, checkin_streak_days) = if m.checkins.is_empty() {
        (None, 0)
    } else {
        let last = m.checkins.last_day;
        let window = CHECKIN_WINDOW_DAYS;
        let rate = m.checkins.count(last - window + 1, last) as f64 * 7.0 / window as f64;
        let streak = (0..).take_while(|i| m.checkins.is_set(last - i)).count() as u32;
        (Some(round(rate, 3)), streak)
    };
    let d = &cfg.detect;
    let amounts: Vec<f64> = m.purchases().iter().map(|p| p.amount as f64).collect();
    Baselines {
        typical_gap_days: crate::detect::purchase_gap::median_gap_days(m, &d.purchase_gap)
            .map(|g| round(g, 3)),
        open_rate,
        visits_per_week,
        checkin_days_per_week,
        checkin_streak_days,
        typical_order_value: (!amounts.is_empty()).then(|| round(stats::median(&amounts), 2)),
    }
}

/// Start of the newest week with a count.
fn newest_week(c: &WeeklyCounts) -> Option<i64> {
    (0..WEEKS)
        .find(|i| c.slots[*i] > 0)
        .map(|i| week_start_ms(c.newest_week - i as i32))
}

fn last_events(m: &MemberState) -> LastEvents {
    let known = |t: i64| (t != NEVER).then_some(t);
    LastEvents {
        any: known(m.last_event_ms),
        activity: known(m.last_active_ms),
        purchase: m.last_purchase_ms(),
        check_in: (!m.checkins.is_empty()).then(|| m.checkins.last_day as i64 * DAY_MS),
        visit: newest_week(&m.visits),
        email_send: newest_week(&m.sends),
        email_open: newest_week(&m.opens),
    }
}

fn next_timer(m: &MemberState, now_ms: i64, cfg: &EngineConfig) -> Option<NextTimer> {
    let checks: Vec<(Signal, i64)> = timer_checks(m, now_ms, cfg).collect();
    if let Some(due) = checks.iter().map(|(_, t)| *t).min() {
        return Some(NextTimer {
            due_ms: due,
            checks: checks
                .iter()
                .filter(|(_, t)| *t == due)
                .map(|(s, _)| s.as_str())
                .collect(),
        });
    }
    // No absence check left: the engine's timer waits for eviction, counted
    // from the last activity (as `Engine::reschedule` does).
    let ttl = cfg.evict_after_ms?;
    Some(NextTimer {
        due_ms: m.last_active_ms.max(m.first_seen_ms).saturating_add(ttl),
        checks: vec!["evict"],
    })
}

fn ts(ms: Option<i64>) -> Value {
    ms.map_or(Value::Null, |t| Value::String(format_rfc3339_ms(t)))
}

impl OpenEpisode {
    fn to_json(&self) -> Value {
        json!({
            "signal": self.signal.as_str(),
            "alert_id": self.alert_id,
            "since": format_rfc3339_ms(self.since_ms),
        })
    }
}

impl MemberView {
    /// The JSON document of `GET /members/{member_id}` and of each line of
    /// `members export --format ndjson`.
    pub fn to_json(&self) -> Value {
        let b = &self.baselines;
        let l = &self.last_event;
        json!({
            "member_id": self.member_id,
            "partition": self.partition,
            "evaluated_at": format_rfc3339_ms(self.evaluated_ms),
            "stage": self.stage.as_str(),
            "segment": self.segment.as_str(),
            "risk_score": self.risk_score,
            "p_alive": self.p_alive,
            "expected_purchases_90d": self.expected_purchases_90d,
            "holdout": self.holdout,
            "baselines": {
                "typical_gap_days": b.typical_gap_days,
                "open_rate": b.open_rate,
                "visits_per_week": b.visits_per_week,
                "checkin_days_per_week": b.checkin_days_per_week,
                "checkin_streak_days": b.checkin_streak_days,
                "typical_order_value": b.typical_order_value,
            },
            "open_episodes": self.open_episodes.iter().map(OpenEpisode::to_json).collect::<Vec<_>>(),
            "awaiting_return": self.awaiting_return.as_ref().map(OpenEpisode::to_json),
            "last_event": {
                "any": ts(l.any),
                "activity": ts(l.activity),
                "purchase": ts(l.purchase),
                "check_in": ts(l.check_in),
                "visit": ts(l.visit),
                "email_send": ts(l.email_send),
                "email_open": ts(l.email_open),
            },
            "next_timer": self.next_timer.as_ref().map(|t| json!({
                "due": format_rfc3339_ms(t.due_ms),
                "checks": t.checks,
            })),
            "purchase_count": self.purchase_count,
            "total_spend": self.total_spend,
        })
    }

    /// Days since the last purchase at the evaluation time, if any.
    pub fn days_since_purchase(&self) -> Option<f64> {
        self.last_event
            .purchase
            .map(|t| round(days(self.evaluated_ms - t), 3))
    }
}

/// The stored stream clock of `partition` (as the engine committed it).
pub fn stored_clock<S: Store + ?Sized>(
    store: &S,
    partition: u32,
) -> Result<Option<i64>, ViewError> {
    Ok(store
        .get(Table::Meta, &meta_key(partition, META_CLOCK))?
        .and_then(|v| <[u8; 8]>::try_from(v.as_slice()).ok())
        .map(i64::from_le_bytes)
        .filter(|c| *c != NEVER))
}

/// A member's stored state in `partition`, if it has any.
pub fn load<S: Store + ?Sized>(
    store: &S,
    partition: u32,
    member_id: &str,
) -> Result<Option<MemberState>, ViewError> {
    let Some(bytes) = store.get(Table::Members, &member_key(partition, member_id))? else {
        return Ok(None);
    };
    MemberState::decode(&bytes)
        .map(Some)
        .map_err(|e| ViewError::Corrupt {
            partition,
            reason: e.to_string(),
        })
}

/// Partitions that hold at least one member, in order (one seek each).
pub fn member_partitions<S: Store + ?Sized>(store: &S) -> Result<Vec<u32>, ViewError> {
    let mut out = Vec::new();
    let mut from = Vec::new();
    let end = vec![0xff; 5];
    while let Some((k, _)) = store.scan(Table::Members, &from, &end, 1)?.pop() {
        let Some((p, _)) = split_member_key(&k) else {
            break;
        };
        out.push(p);
        if p == u32::MAX {
            break;
        }
        from = partition_end(p);
    }
    Ok(out)
}

/// Every stored member in key order (partition, then member id), read in
/// chunks so memory stays flat whatever the member count.
pub struct MemberScan<'a, S: Store + ?Sized> {
    store: &'a S,
    from: Vec<u8>,
    chunk: std::vec::IntoIter<(Vec<u8>, Vec<u8>)>,
    done: bool,
}

const SCAN_CHUNK: usize = 4096;

impl<'a, S: Store + ?Sized> MemberScan<'a, S> {
    pub fn new(store: &'a S) -> Self {
        MemberScan {
            store,
            from: Vec::new(),
            chunk: Vec::new().into_iter(),
            done: false,
        }
    }
}

impl<S: Store + ?Sized> Iterator for MemberScan<'_, S> {
    type Item = Result<(u32, String, MemberState), ViewError>;

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            if let Some((k, v)) = self.chunk.next() {
                let Some((p, id)) = split_member_key(&k) else {
                    continue;
                };
                return Some(match MemberState::decode(&v) {
                    Ok(m) => Ok((p, id.to_string(), m)),
                    Err(e) => Err(ViewError::Corrupt {
                        partition: p,
                        reason: e.to_string(),
                    }),
                });
            }
            if self.done {
                return None;
            }
            let chunk = match self
                .store
                .scan(Table::Members, &self.from, &[0xff; 5], SCAN_CHUNK)
            {
                Ok(c) => c,
                Err(e) => {
                    self.done = true;
                    return Some(Err(e.into()));
                }
            };
            if chunk.len() < SCAN_CHUNK {
                self.done = true;
            }
            if let Some((last, _)) = chunk.last() {
                self.from = last.clone();
                self.from.push(0);
            }
            self.chunk = chunk.into_iter();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::Event;
    use crate::event::EventKind::{self, CheckIn, Purchase, Visit};
    use std::borrow::Cow;

    fn member(events: &[(EventKind, f64, f64)]) -> MemberState {
        let day = |d: f64| (d * DAY_MS as f64) as i64 + 1_700_000_000_000;
        let mut m = MemberState::new(day(events[0].1));
        for (k, d, amount) in events {
            m.apply(&Event {
                event_id: Cow::Borrowed("e"),
                member_id: Cow::Borrowed("m"),
                kind: *k,
                ts_ms: day(*d),
                amount: *amount,
                categories: 0,
            });
        }
        m
    }

    #[test]
    fn a_member_past_the_silent_threshold_is_silent_with_a_stage_change_episode() {
        let m = member(&[
            (Purchase, 0.0, 10.0),
            (Purchase, 10.0, 30.0),
            (Purchase, 20.0, 20.0),
        ]);
        let cfg = EngineConfig::default();
        let now = m.last_event_ms + 100 * DAY_MS;
        let v = evaluate("m-1", 3, &m, now, &cfg);
        assert_eq!(v.stage, Stage::Silent);
        assert!(v
            .open_episodes
            .iter()
            .any(|e| e.signal == Signal::StageChange
                && e.alert_id == alert::alert_id("m-1", Signal::StageChange, 1)));
        assert!(v.risk_score >= 60.0);
        assert_eq!(v.baselines.typical_gap_days, Some(10.0));
        assert_eq!(v.baselines.typical_order_value, Some(20.0));
        assert_eq!(v.next_timer.as_ref().unwrap().checks, ["stage_change"]);
        assert_eq!(v.partition, 3);
        // Judging is a read: the stored state is untouched.
        assert_eq!(m.stage, Stage::New);
    }

    #[test]
    fn last_events_are_as_precise_as_the_state_keeps_them() {
        let m = member(&[(Visit, 0.0, 0.0), (CheckIn, 1.0, 0.0), (CheckIn, 2.0, 0.0)]);
        let v = evaluate("m", 0, &m, m.last_event_ms, &EngineConfig::default());
        let l = &v.last_event;
        assert_eq!(l.any, Some(m.last_event_ms));
        assert_eq!(
            l.check_in,
            Some(m.last_event_ms.div_euclid(DAY_MS) * DAY_MS)
        );
        assert!(l.visit.unwrap() <= m.first_seen_ms);
        assert_eq!(l.purchase, None);
        assert_eq!(v.baselines.checkin_streak_days, 2);
        let json = v.to_json();
        assert_eq!(json["last_event"]["purchase"], Value::Null);
        assert_eq!(json["stage"], "new");
    }

    #[test]
    fn scans_every_member_across_chunks_and_lists_their_partitions() {
        let store = crate::state::MemoryStore::default();
        let mut batch = crate::state::Batch::default();
        let m = member(&[(Purchase, 0.0, 1.0)]).to_bytes();
        for i in 0..(SCAN_CHUNK + 10) {
            let p = (i % 3) as u32 * 2;
            batch.put(Table::Members, member_key(p, &format!("m{i}")), m.clone());
        }
        store.write(batch).unwrap();
        assert_eq!(MemberScan::new(&store).count(), SCAN_CHUNK + 10);
        assert_eq!(member_partitions(&store).unwrap(), [0, 2, 4]);
        assert!(load(&store, 2, "m1").unwrap().is_some());
        assert!(load(&store, 0, "m1").unwrap().is_none());
    }
}
