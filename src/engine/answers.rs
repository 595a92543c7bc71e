//! Detector answers remembered per cached member.
//!
//! Every event and every timer asks all five detectors for a verdict and for
//! their due time, but an event changes what at most one or two of them read
//! (a visit changes nothing `open_rate_drop` or `spend_decline` look at),
//! and the weekly tests give the same answer all week. Each detector says
//! what its answers are functions of ([`Inputs`]); the engine keeps the last
//! answer of each beside the cached member and reuses it while none of that
//! changed. The answers are the ones the detector would give again, so no
//! alert depends on what is remembered, on the cache, or on restarts: they
//! are not stored, and a member read from the store starts with none.

use crate::detect::{Context, Detector, Inputs, NowUse, Verdict, DETECTORS};
use crate::event::EventKind;
use crate::state::window::week_of;
use crate::state::MemberState;

/// What a remembered verdict was; the finding itself is not kept (an open
/// episode ignores it, a closed one asks again).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
enum Kind {
    #[default]
    Unknown,
    Hold,
    Recover,
    Fire,
}

/// A remembered `due_ms`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
enum Due {
    #[default]
    Unknown,
    Never,
    /// At the slot's `due_ms`.
    At,
}

/// One detector's remembered answers. Its Week-dependent parts were worked
/// out in `week`. Sixteen bytes: it sits beside every cached member.
#[derive(Debug, Clone, Copy, Default)]
struct Slot {
    due_ms: i64,
    week: i32,
    verdict: Kind,
    due: Due,
    /// For `NowUse::UntilDue`: whether the verdict was worked out at or
    /// after the due time.
    reached: bool,
}

impl Slot {
    /// Forgets what depended on a week other than `week`.
    fn at_week(&mut self, inputs: Inputs, week: i32) {
        if self.week != week {
            if by_week(inputs.verdict) {
                self.verdict = Kind::Unknown;
            }
            if by_week(inputs.due) {
                self.due = Due::Unknown;
            }
            self.week = week;
        }
    }
}

fn by_week(now: NowUse) -> bool {
    matches!(now, NowUse::Week | NowUse::WeeksBefore)
}

/// Whether an event dated in `event_week` can change an answer that uses
/// the time as `now` says and was worked out in `week`.
fn changes(now: NowUse, event_week: i32, week: i32) -> bool {
    now != NowUse::WeeksBefore || event_week < week
}

/// The remembered answers of every detector in [`DETECTORS`] for one member.
#[derive(Debug, Clone, Copy, Default)]
pub struct Answers {
    slots: [Slot; DETECTORS.len()],
}

const _: () = assert!(std::mem::size_of::<Slot>() == 16);

/// What a detector's verdict asks of the episode logic.
pub enum Asked {
    /// Nothing to do: it holds, or it fires into an episode already open.
    Nothing,
    Verdict(Verdict),
}

impl Answers {
    /// An event of `kind` dated `ts_ms` was applied to the member: forget
    /// the answers it can change (all of them if it moved when the member
    /// was first seen). An event in the current week leaves the tests on
    /// complete weeks as they were, which is most events of a live stream.
    pub fn applied(&mut self, kind: EventKind, ts_ms: i64, first_seen_moved: bool) {
        let event_week = week_of(ts_ms);
        for (slot, d) in self.slots.iter_mut().zip(DETECTORS) {
            let inputs = d.inputs();
            if first_seen_moved {
                *slot = Slot::default();
            } else if inputs.events.contains(&kind) {
                if changes(inputs.verdict, event_week, slot.week) {
                    slot.verdict = Kind::Unknown;
                }
                if changes(inputs.due, event_week, slot.week) {
                    slot.due = Due::Unknown;
                }
            }
        }
    }

    /// Detector `i`'s verdict at `now`, from memory when it would say the
    /// same again. `open`: whether its episode is open.
    pub fn verdict(
        &mut self,
        i: usize,
        m: &MemberState,
        now: i64,
        ctx: &Context<'_>,
        open: bool,
    ) -> Asked {
        let d: &dyn Detector = DETECTORS[i];
        let inputs = d.inputs();
        if inputs.verdict == NowUse::Exact {
            return Asked::Verdict(d.evaluate(m, now, ctx));
        }
        let reached = inputs.verdict == NowUse::UntilDue
            && self.due_ms(i, m, now, ctx).is_some_and(|due| now >= due);
        let slot = &mut self.slots[i];
        slot.at_week(inputs, week_of(now));
        if slot.reached != reached {
            slot.verdict = Kind::Unknown;
            slot.reached = reached;
        }
        match slot.verdict {
            Kind::Hold => return Asked::Nothing,
            Kind::Fire if open => return Asked::Nothing,
            Kind::Recover => return Asked::Verdict(Verdict::Recover),
            Kind::Fire | Kind::Unknown => {}
        }
        let v = d.evaluate(m, now, ctx);
        slot.verdict = match v {
            Verdict::Fire(_) => Kind::Fire,
            Verdict::Recover => Kind::Recover,
            Verdict::Hold => Kind::Hold,
        };
        Asked::Verdict(v)
    }

    /// Detector `i`'s `due_ms` at `now`, from memory when it would say the
    /// same again.
    pub fn due_ms(
        &mut self,
        i: usize,
        m: &MemberState,
        now: i64,
        ctx: &Context<'_>,
    ) -> Option<i64> {
        let d: &dyn Detector = DETECTORS[i];
        let inputs = d.inputs();
        if inputs.due == NowUse::Exact {
            return d.due_ms(m, now, ctx);
        }
        let slot = &mut self.slots[i];
        slot.at_week(inputs, week_of(now));
        match slot.due {
            Due::Never => None,
            Due::At => Some(slot.due_ms),
            Due::Unknown => {
                let due = d.due_ms(m, now, ctx);
                (slot.due, slot.due_ms) = match due {
                    Some(t) => (Due::At, t),
                    None => (Due::Never, 0),
                };
                due
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::detect::testkit::{event, Lcg, T0};
    use crate::detect::{Finding, Signal};
    use crate::engine::{checks, judge, judge_with, timer_checks, EngineConfig};
    use crate::event::{EventKind, DAY_MS};

    /// What happens to a member next: an event (kind, time, amount) or a
    /// timer-like evaluation at a time.
    enum Step {
        Event(EventKind, i64, f64),
        Timer(i64),
    }

    /// A member's events over `weeks1` weeks at one set of weekly rates per
    /// kind, then `weeks2` weeks at another (a drop, a rise, a stop), then
    /// `weeks3` back at the first (a recovery), with a few events arriving
    /// late (some before the member was first seen), purchase amounts that
    /// change with the rates, and a timer-like evaluation every few days
    /// between events.
    fn journey(rng: &mut Lcg) -> Vec<Step> {
        let weeks1 = 8 + (rng.next() * 30.0) as usize;
        let weeks2 = 1 + (rng.next() * 14.0) as usize;
        let weeks3 = (rng.next() * 10.0) as usize;
        let rates = |rng: &mut Lcg| EventKind::ALL.map(|_| (rng.next() * 6.0).floor() / 1.5);
        let (before, after) = (rates(rng), rates(rng));
        let spend = (10.0 + rng.next() * 90.0, 5.0 + rng.next() * 60.0);
        let timer_every = 1 + (rng.next() * 9.0) as i64;
        let mut steps = Vec::new();
        for w in 0..weeks1 + weeks2 + weeks3 {
            let (r, amount) = if (weeks1..weeks1 + weeks2).contains(&w) {
                (after, spend.1)
            } else {
                (before, spend.0)
            };
            for (kind, rate) in EventKind::ALL.iter().zip(r) {
                for _ in 0..rng.poisson(rate) {
                    let mut ts = T0 + ((w as f64 + rng.next()) * 7.0 * DAY_MS as f64) as i64;
                    if rng.next() < 0.03 {
                        ts -= (rng.next() * 30.0 * DAY_MS as f64) as i64;
                    }
                    let amount = amount * (0.5 + rng.next());
                    steps.push((ts, Step::Event(*kind, ts, amount)));
                }
            }
            for d in (0..7).step_by(timer_every as usize) {
                let ts = T0 + (w as i64 * 7 + d) * DAY_MS + DAY_MS / 2;
                steps.push((ts, Step::Timer(ts)));
            }
        }
        // Late events are late in arrival too: they keep their place in
        // the stream, not in time.
        steps.sort_by_key(|(ts, s)| match s {
            Step::Event(..) => *ts - ((*ts - T0).rem_euclid(7 * DAY_MS)) / 2,
            Step::Timer(_) => *ts,
        });
        steps.into_iter().map(|(_, s)| s).collect()
    }

    #[test]
    fn remembered_answers_are_the_answers_the_detectors_give_again() {
        let cfg = EngineConfig::default();
        let mut fired = [0usize; DETECTORS.len()];
        let mut recovered = [0usize; DETECTORS.len()];
        let mut rng = Lcg(7);
        for member in 0..300 {
            let steps = journey(&mut rng);
            let first = steps.iter().find_map(|s| match s {
                Step::Event(_, ts, _) => Some(*ts),
                Step::Timer(_) => None,
            });
            let Some(first) = first else { continue };
            let (mut a, mut b) = (MemberState::new(first), MemberState::new(first));
            let mut answers = Answers::default();
            let (mut fa, mut fb): (Vec<(Signal, Finding)>, _) = (Vec::new(), Vec::new());
            for (n, step) in steps.iter().enumerate() {
                let now = match *step {
                    Step::Event(kind, ts, amount) => {
                        let e = event(kind, ts, amount);
                        let first_seen = a.first_seen_ms;
                        a.apply(&e);
                        answers.applied(kind, ts, a.first_seen_ms != first_seen);
                        b.apply(&e);
                        a.last_event_ms
                    }
                    Step::Timer(ts) => ts.max(a.last_event_ms),
                };
                let open_before = b.episodes.map(|e| e.open);
                judge_with(&mut a, now, &cfg, &mut answers, &mut fa);
                judge(&mut b, now, &cfg, &mut fb);
                assert_eq!(fa, fb, "member {member}, step {n}: findings");
                assert_eq!(a, b, "member {member}, step {n}: state");
                let due_a: Vec<_> = checks(&a, now, &cfg, &mut answers).collect();
                let due_b: Vec<_> = timer_checks(&b, now, &cfg).collect();
                assert_eq!(due_a, due_b, "member {member}, step {n}: timer checks");
                for (i, d) in DETECTORS.iter().enumerate() {
                    let s = d.signal() as usize;
                    fired[i] += fb.iter().filter(|(sig, _)| *sig as usize == s).count();
                    recovered[i] += usize::from(open_before[s] && !b.episodes[s].open);
                }
            }
        }
        println!("episodes opened per detector: {fired:?}, closed: {recovered:?}");
        // Every detector whose answers are remembered was seen to open and
        // close episodes, so the comparison covered the interesting paths.
        for (i, d) in DETECTORS.iter().enumerate() {
            if d.inputs().verdict != NowUse::Exact {
                assert!(fired[i] > 0 && recovered[i] > 0, "{:?}", d.signal());
            }
        }
    }
}
