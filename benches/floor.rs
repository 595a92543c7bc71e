//! The floor the engine is measured against: the least any consumer of the
//! same NDJSON file has to do, on one core, without durability.
//!
//! ```text
//! cargo bench --bench floor -- FILE
//! ```
//!
//! Reads the file (already in the page cache after a first pass), parses
//! every line with serde_json into borrowed fields and folds it into an
//! in-memory `HashMap` per member (event count, last time, spend). Nothing
//! is validated, deduplicated, detected or written. Prints events/s; the
//! engine's figures in `docs/performance.md` are ratios to this, measured
//! on the same file in the same session.

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::time::Instant;

#[derive(serde::Deserialize)]
struct Event<'a> {
    #[serde(borrow)]
    member_id: std::borrow::Cow<'a, str>,
    #[serde(borrow, rename = "type")]
    kind: std::borrow::Cow<'a, str>,
    ts: serde_json::Value,
    #[serde(default)]
    amount: Option<f64>,
}

#[derive(Default)]
struct Fold {
    events: u32,
    purchases: u32,
    last_ms: i64,
    spend: f64,
}

fn main() {
    let path = std::env::args()
        .skip(1)
        .find(|a| !a.starts_with('-'))
        .expect("usage: cargo bench --bench floor -- FILE");
    // A first pass brings the file into the page cache, as it is for the
    // engine run measured right before or after.
    let lines: Vec<Vec<u8>> =
        BufReader::with_capacity(1 << 20, std::fs::File::open(&path).unwrap())
            .split(b'\n')
            .map(|l| l.unwrap())
            .filter(|l| !l.is_empty())
            .collect();
    let started = Instant::now();
    let mut members: HashMap<String, Fold> = HashMap::new();
    let mut events = 0u64;
    for line in &lines {
        let Ok(e) = serde_json::from_slice::<Event<'_>>(line) else {
            continue;
        };
        let ts = e.ts.as_i64().unwrap_or(0);
        let f = match members.get_mut(e.member_id.as_ref()) {
            Some(f) => f,
            None => members.entry(e.member_id.into_owned()).or_default(),
        };
        f.events += 1;
        f.last_ms = f.last_ms.max(ts);
        if e.kind == "purchase" {
            f.purchases += 1;
            f.spend += e.amount.unwrap_or(0.0);
        }
        events += 1;
    }
    let secs = started.elapsed().as_secs_f64();
    println!("floor (serde_json parse + HashMap fold, one core, no durability)");
    println!("  file          {path}");
    println!("  events        {events}");
    println!("  members       {}", members.len());
    println!(
        "  floor         {:.0} events/s ({secs:.2} s)",
        events as f64 / secs
    );
}
