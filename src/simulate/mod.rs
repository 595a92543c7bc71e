//! Synthetic member journeys for demos, benchmarks and the scenario tests.
//!
//! Every member belongs to one population. Quiet populations (steady,
//! low-frequency, new one-time buyers, daily check-in members) behave
//! normally up to the end of the simulated period, with realistic noise;
//! every cooling population shows exactly one pattern of SPEC §2 towards the
//! end. Member ids start with the population name, so a test can measure
//! per-signal recall and false alarms from the alerts alone. Generation is
//! deterministic for a given seed.

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, LogNormal, Poisson};

use crate::event::{format_rfc3339_ms, EventKind, DAY_MS};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Population {
    Steady,
    LowFrequency,
    NewOneTime,
    DailyCheckin,
    PurchaseGap,
    OpenRateDrop,
    VisitDecline,
    CheckinLapse,
    SpendDecline,
    GoneSilent,
    Reactivated,
}

impl Population {
    pub const ALL: [Population; 11] = [
        Population::Steady,
        Population::LowFrequency,
        Population::NewOneTime,
        Population::DailyCheckin,
        Population::PurchaseGap,
        Population::OpenRateDrop,
        Population::VisitDecline,
        Population::CheckinLapse,
        Population::SpendDecline,
        Population::GoneSilent,
        Population::Reactivated,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Population::Steady => "steady",
            Population::LowFrequency => "lowfreq",
            Population::NewOneTime => "new",
            Population::DailyCheckin => "daily",
            Population::PurchaseGap => "purchasegap",
            Population::OpenRateDrop => "openrate",
            Population::VisitDecline => "visits",
            Population::CheckinLapse => "checkinlapse",
            Population::SpendDecline => "spend",
            Population::GoneSilent => "silent",
            Population::Reactivated => "reactivated",
        }
    }

    pub fn from_member_id(id: &str) -> Option<Population> {
        let prefix = id.split('-').next()?;
        Population::ALL.into_iter().find(|p| p.name() == prefix)
    }

    /// The signal this population is built to show (`None` for quiet ones).
    pub fn expected_signal(self) -> Option<&'static str> {
        match self {
            Population::PurchaseGap => Some("purchase_gap"),
            Population::OpenRateDrop => Some("open_rate_drop"),
            Population::VisitDecline => Some("visit_decline"),
            Population::CheckinLapse => Some("checkin_lapse"),
            Population::SpendDecline => Some("spend_decline"),
            Population::GoneSilent => Some("stage_change"),
            Population::Reactivated => Some("reactivated"),
            _ => None,
        }
    }

    /// Share of members in the default mix (weights, not normalised).
    fn weight(self) -> u32 {
        match self {
            Population::Steady => 40,
            Population::LowFrequency => 12,
            Population::NewOneTime => 10,
            Population::DailyCheckin => 8,
            _ => 4,
        }
    }
}

#[derive(Debug, Clone)]
pub struct SimOptions {
    pub members: usize,
    /// Days of history per member, ending at `end_ms`.
    pub days: u32,
    pub end_ms: i64,
    pub seed: u64,
    /// Share of lines that are invalid (for dead-letter demos and tests).
    pub bad_ratio: f64,
    /// Share of events sent twice (at-least-once producers).
    pub duplicate_ratio: f64,
}

impl Default for SimOptions {
    fn default() -> Self {
        SimOptions {
            members: 1000,
            days: 180,
            end_ms: chrono::Utc::now().timestamp_millis(),
            seed: 42,
            bad_ratio: 0.0,
            duplicate_ratio: 0.0,
        }
    }
}

/// One simulated message: event time and the JSON line.
#[derive(Debug, Clone, PartialEq)]
pub struct SimEvent {
    pub ts_ms: i64,
    pub member: u32,
    pub json: String,
}

/// The population of the `i`-th member in the default mix.
pub fn population_of(i: usize) -> Population {
    let total: u32 = Population::ALL.iter().map(|p| p.weight()).sum();
    let mut slot = (i as u32 * 7919) % total;
    for p in Population::ALL {
        if slot < p.weight() {
            return p;
        }
        slot -= p.weight();
    }
    Population::Steady
}

pub fn member_id(i: usize) -> String {
    format!("{}-{i:07}", population_of(i).name())
}

/// All events of all members, sorted by event time.
pub fn generate(opts: &SimOptions) -> Vec<SimEvent> {
    let mut out = Vec::new();
    for i in 0..opts.members {
        member_events(i, opts, &mut out);
    }
    out.sort_by_key(|e| (e.ts_ms, e.member));
    out
}

struct Journey<'a> {
    id: String,
    member: u32,
    rng: ChaCha8Rng,
    n: u32,
    opts: &'a SimOptions,
    out: &'a mut Vec<SimEvent>,
}

impl Journey<'_> {
    fn emit(&mut self, kind: EventKind, ts_ms: i64, amount: Option<f64>) {
        if ts_ms > self.opts.end_ms {
            return;
        }
        self.n += 1;
        let ts = if self.n % 3 == 0 {
            format!("\"{}\"", format_rfc3339_ms(ts_ms))
        } else {
            ts_ms.to_string()
        };
        let extra = match kind {
            EventKind::Purchase => format!(
                ",\"amount\":{:.2},\"currency\":\"EUR\",\"order_id\":\"o-{}-{}\",\"categories\":[\"grocery\"]",
                amount.unwrap_or(0.0),
                self.id,
                self.n
            ),
            EventKind::Visit => ",\"channel\":\"app\"".to_string(),
            EventKind::EmailSend | EventKind::EmailOpen => ",\"campaign_id\":\"weekly\"".to_string(),
            EventKind::CheckIn => ",\"points\":5".to_string(),
        };
        let json = format!(
            "{{\"event_id\":\"{}-e{}\",\"member_id\":\"{}\",\"type\":\"{}\",\"ts\":{ts}{extra}}}",
            self.id,
            self.n,
            self.id,
            kind.as_str()
        );
        let r: f64 = self.rng.random();
        if r < self.opts.bad_ratio {
            let bad = match self.rng.random_range(0..4) {
                0 => json.replace("\"type\":\"", "\"type\":\"x"),
                1 => json[..json.len() / 2].to_string(),
                2 => json.replace("\"member_id\"", "\"memberid\""),
                _ => json.replace("\"ts\":", "\"ts\":\"yesterday\",\"t\":"),
            };
            // Bad lines come in addition to the real event, so invalid input
            // does not also change the members' journeys.
            self.out.push(SimEvent {
                ts_ms,
                member: self.member,
                json: bad,
            });
        }
        if r < self.opts.bad_ratio + self.opts.duplicate_ratio {
            self.out.push(SimEvent {
                ts_ms: ts_ms + 1,
                member: self.member,
                json: json.clone(),
            });
        }
        self.out.push(SimEvent {
            ts_ms,
            member: self.member,
            json,
        });
    }

    fn day(&self, d: f64) -> i64 {
        self.opts.end_ms - ((self.opts.days as f64 - d) * DAY_MS as f64) as i64
    }

    /// Poisson arrivals at `per_week` between days `from` and `to`.
    fn stream(&mut self, kind: EventKind, per_week: f64, from: f64, to: f64) {
        if per_week <= 0.0 || to <= from {
            return;
        }
        let weeks = ((to - from) / 7.0).ceil() as usize;
        let pois = Poisson::new(per_week).expect("positive rate");
        for w in 0..weeks {
            let n = pois.sample(&mut self.rng) as usize;
            for _ in 0..n {
                let d = from + w as f64 * 7.0 + self.rng.random::<f64>() * 7.0;
                if d < to {
                    let ts = self.day(d);
                    self.emit(kind, ts, None);
                }
            }
        }
    }

    /// Weekly email sends with opens at `rate(day)`.
    fn emails(&mut self, sends_per_week: u32, from: f64, to: f64, rate: impl Fn(f64) -> f64) {
        let mut d = from + self.rng.random::<f64>() * 2.0;
        let step = 7.0 / sends_per_week as f64;
        while d < to {
            let ts = self.day(d);
            self.emit(EventKind::EmailSend, ts, None);
            if self.rng.random::<f64>() < rate(d) {
                let delay = self.rng.random::<f64>() * 1.5;
                let open = self.day(d + delay);
                self.emit(EventKind::EmailOpen, open, None);
            }
            d += step;
        }
    }

    /// Purchases every `gap` days ±20% from `from` until `to`, amounts around `mean`.
    fn purchases(&mut self, gap: f64, from: f64, to: f64, mean: impl Fn(f64) -> f64) -> f64 {
        let spend = LogNormal::new(0.0, 0.3).expect("valid");
        let mut d = from;
        let mut last = from;
        while d < to {
            let ts = self.day(d);
            let amount = mean(d) * spend.sample(&mut self.rng);
            self.emit(EventKind::Purchase, ts, Some(amount));
            last = d;
            d += gap * self.rng.random_range(0.8..1.2);
        }
        last
    }

    fn check_ins(&mut self, from: f64, to: f64, miss: f64) {
        let mut d = from.floor();
        while d < to {
            if self.rng.random::<f64>() >= miss {
                let at = d + 0.3 + self.rng.random::<f64>() * 0.4;
                let ts = self.day(at);
                self.emit(EventKind::CheckIn, ts, None);
            }
            d += 1.0;
        }
    }
}

fn member_events(i: usize, opts: &SimOptions, out: &mut Vec<SimEvent>) {
    let pop = population_of(i);
    let mut j = Journey {
        id: member_id(i),
        member: i as u32,
        rng: ChaCha8Rng::seed_from_u64(opts.seed ^ (i as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15)),
        n: 0,
        opts,
        out,
    };
    let end = opts.days as f64;
    let start: f64 = j.rng.random_range(0.0..7.0);
    let gap: f64 = j.rng.random_range(7.0..21.0);
    let mean: f64 = j.rng.random_range(20.0..120.0);
    let visits: f64 = j.rng.random_range(1.0..4.0);
    let open_rate: f64 = j.rng.random_range(0.3..0.8);
    match pop {
        Population::Steady => {
            j.purchases(gap, start, end, |_| mean);
            j.stream(EventKind::Visit, visits, start, end);
            j.emails(2, start, end, |_| open_rate);
        }
        Population::LowFrequency => {
            let g = j.rng.random_range(50.0..70.0);
            j.purchases(g, start, end, |_| mean * 2.0);
            j.stream(EventKind::Visit, 0.3, start, end);
            j.emails(1, start, end, |_| open_rate * 0.5);
        }
        Population::NewOneTime => {
            let joined = end - j.rng.random_range(2.0..25.0);
            j.purchases(1000.0, joined, end, |_| mean);
            j.stream(EventKind::Visit, 1.0, joined, end);
        }
        Population::DailyCheckin => {
            j.check_ins(start, end, 0.04);
            j.purchases(gap, start, end, |_| mean);
            j.emails(2, start, end, |_| open_rate);
        }
        Population::PurchaseGap => {
            // Buys on rhythm, then stops buying 3–4 gaps before the end
            // (within 90 days, so not yet silent); keeps browsing.
            let stop = end - (gap * j.rng.random_range(3.0..4.0)).min(80.0);
            j.purchases(gap, start, stop, |_| mean);
            j.stream(EventKind::Visit, visits, start, end);
            j.emails(2, start, end, |_| open_rate);
        }
        Population::OpenRateDrop => {
            j.purchases(gap, start, end, |_| mean);
            j.stream(EventKind::Visit, visits, start, end);
            // Issue 15's shape: opened 50–80% of three mails a week, then
            // none for the last seven weeks.
            let cut = end - 49.0;
            let engaged = j.rng.random_range(0.5..0.8);
            j.emails(3, start, end, |d| if d < cut { engaged } else { 0.0 });
        }
        Population::VisitDecline => {
            j.purchases(gap, start, end, |_| mean);
            let cut = end - 49.0;
            let before = j.rng.random_range(3.0..6.0);
            j.stream(EventKind::Visit, before, start, cut);
            j.stream(EventKind::Visit, 0.2, cut, end);
            j.emails(2, start, end, |_| open_rate);
        }
        Population::CheckinLapse => {
            let stop = end - j.rng.random_range(8.0..20.0);
            j.check_ins(start, stop, 0.04);
            j.purchases(gap, start, end, |_| mean);
        }
        Population::SpendDecline => {
            let cut = end - gap * 4.2;
            j.purchases(gap, start, end, |d| {
                if d < cut {
                    mean * 2.0
                } else {
                    mean * 0.35
                }
            });
            j.stream(EventKind::Visit, visits, start, end);
        }
        Population::GoneSilent => {
            // A few purchases, then nothing at all for 100–160 days.
            let stop = end - j.rng.random_range(100.0..160.0);
            let from = (stop - 60.0).max(0.0);
            j.purchases(20.0, from, stop, |_| mean);
            j.stream(EventKind::Visit, 1.0, from, stop);
        }
        Population::Reactivated => {
            // Buys on rhythm, lapses for 3+ gaps, then comes back.
            let back = end - j.rng.random_range(2.0..10.0);
            let stop = back - (gap * j.rng.random_range(3.0..4.0)).min(75.0);
            j.purchases(gap, start, stop, |_| mean);
            let ts = j.day(back);
            j.emit(EventKind::Purchase, ts, Some(mean));
            j.stream(EventKind::Visit, visits, start, end);
        }
    }
}

/// Writes events as NDJSON.
pub fn write_ndjson(events: &[SimEvent], w: &mut impl std::io::Write) -> std::io::Result<()> {
    for e in events {
        w.write_all(e.json.as_bytes())?;
        w.write_all(b"\n")?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generation_is_deterministic_and_time_ordered() {
        let opts = SimOptions {
            members: 50,
            end_ms: 1_780_000_000_000,
            ..SimOptions::default()
        };
        let a = generate(&opts);
        assert_eq!(a, generate(&opts));
        assert!(a.windows(2).all(|w| w[0].ts_ms <= w[1].ts_ms));
        assert!(a.iter().all(|e| e.ts_ms <= opts.end_ms));
        assert!(Population::ALL
            .iter()
            .all(|p| (0..50).any(|i| population_of(i) == *p)));
    }

    #[test]
    fn bad_lines_and_duplicates_are_mixed_in_on_request() {
        let opts = SimOptions {
            members: 20,
            end_ms: 1_780_000_000_000,
            bad_ratio: 0.05,
            duplicate_ratio: 0.05,
            ..SimOptions::default()
        };
        let v = crate::event::Validator::default();
        let evs = generate(&opts);
        let bad = evs
            .iter()
            .filter(|e| v.parse(e.json.as_bytes(), opts.end_ms).is_err())
            .count();
        assert!(bad > 0 && bad < evs.len() / 5, "{bad}");
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ProduceError {
    #[error("kafka producer: {0}")]
    Kafka(#[from] rdkafka::error::KafkaError),
    #[error("{undelivered} of {total} events were not acknowledged by the broker")]
    Undelivered { undelivered: u64, total: u64 },
}

/// Produces the events to `topic`, keyed by member id (invalid lines keep
/// their member's key), at `rate` events per second (0: unthrottled), and
/// waits until the broker has acknowledged every one.
pub fn produce(
    events: &[SimEvent],
    brokers: &str,
    topic: &str,
    rate: u64,
) -> Result<(), ProduceError> {
    use rdkafka::producer::{BaseRecord, Producer, ThreadedProducer};
    use rdkafka::producer::{DeliveryResult, ProducerContext};
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::sync::Arc;

    struct Count(Arc<AtomicU64>);
    impl rdkafka::ClientContext for Count {}
    impl ProducerContext for Count {
        type DeliveryOpaque = ();
        fn delivery(&self, r: &DeliveryResult<'_>, _: ()) {
            if r.is_err() {
                self.0.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    let failed = Arc::new(AtomicU64::new(0));
    let producer: ThreadedProducer<Count> = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("enable.idempotence", "true")
        .set("linger.ms", "20")
        .set("queue.buffering.max.messages", "200000")
        .create_with_context(Count(failed.clone()))?;
    let started = std::time::Instant::now();
    for (i, e) in events.iter().enumerate() {
        if rate > 0 {
            let due = std::time::Duration::from_secs_f64(i as f64 / rate as f64);
            if let Some(wait) = due.checked_sub(started.elapsed()) {
                std::thread::sleep(wait);
            }
        }
        let key = member_id(e.member as usize);
        let mut rec = BaseRecord::to(topic)
            .key(key.as_bytes())
            .payload(e.json.as_bytes());
        loop {
            match producer.send(rec) {
                Ok(()) => break,
                Err((
                    rdkafka::error::KafkaError::MessageProduction(
                        rdkafka::types::RDKafkaErrorCode::QueueFull,
                    ),
                    r,
                )) => {
                    rec = r;
                    std::thread::sleep(std::time::Duration::from_millis(5));
                }
                Err((e, _)) => return Err(e.into()),
            }
        }
    }
    producer.flush(std::time::Duration::from_secs(120))?;
    let undelivered = failed.load(Ordering::Relaxed) + producer.in_flight_count() as u64;
    if undelivered > 0 {
        return Err(ProduceError::Undelivered {
            undelivered,
            total: events.len() as u64,
        });
    }
    Ok(())
}
