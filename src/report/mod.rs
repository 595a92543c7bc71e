//! `churnwatch report`: did the win-back campaigns work? From the alert
//! stream alone (SPEC §5): per signal and per segment, alerted members
//! treated vs holdout, how many came back within the horizon, and the uplift
//! (treated rate − holdout rate) with a 95% confidence interval.
//!
//! # Method
//!
//! - A unit is a member's first alert of a signal in the stream (`reactivated`
//!   alerts are returns, not units); its segment and holdout flag are the
//!   alert's. A member thus counts once per signal, in the segment they were
//!   in when first alerted for it.
//! - The unit came back when the member has a `reactivated` alert detected
//!   after it and at most `horizon` days later (default: the alerts'
//!   `horizon_days` evidence, else 30 days, SPEC §5).
//! - Units alerted less than `horizon` days before the stream's last
//!   `detected_at` cannot be judged yet and are left out (counted as
//!   `pending`).
//! - The interval is Newcombe's hybrid score interval for a difference of
//!   two proportions (Wilson intervals per group, combined): unlike the
//!   textbook Wald interval it keeps its coverage with small groups and rates
//!   near 0 or 1.
//! - "too small to tell": fewer than 30 holdout units, or fewer than 5
//!   returns or 5 non-returns in either group (the normal approximation
//!   behind any such interval does not hold).

pub mod cli;
pub mod html;
pub mod source;

use std::collections::{BTreeMap, HashMap};
use std::io::BufRead;

use serde::Deserialize;

use crate::event::{parse_rfc3339_ms, DAY_MS};

/// 97.5% quantile of the standard normal.
const Z95: f64 = 1.959_963_984_540_054;
/// Holdout units below which no uplift is claimed.
pub const MIN_HOLDOUT: u64 = 30;

#[derive(Debug, thiserror::Error)]
pub enum ReportError {
    #[error("{source_name} line {line}: not an alert: {reason}")]
    BadAlert {
        source_name: String,
        line: usize,
        reason: String,
    },
    #[error("reading {source_name}: {source}")]
    Read {
        source_name: String,
        source: std::io::Error,
    },
}

#[derive(Debug, Deserialize)]
struct RawAlert {
    member_id: String,
    signal: String,
    #[serde(default)]
    segment: String,
    #[serde(default)]
    holdout: bool,
    detected_at: String,
}

/// One group's tally.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Tally {
    pub members: u64,
    pub returned: u64,
}

impl Tally {
    pub fn rate(&self) -> Option<f64> {
        (self.members > 0).then(|| self.returned as f64 / self.members as f64)
    }
}

/// One row of the report: a signal (or `all`) within a segment (or `all`).
#[derive(Debug, Clone, PartialEq)]
pub struct Row {
    pub signal: String,
    pub segment: String,
    pub treated: Tally,
    pub holdout: Tally,
    /// Units too recent to judge.
    pub pending: u64,
}

/// Uplift with its interval, or why there is none.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Uplift {
    pub uplift: f64,
    pub low: f64,
    pub high: f64,
}

impl Row {
    pub fn uplift(&self) -> Option<Uplift> {
        let (p1, p2) = (self.treated.rate()?, self.holdout.rate()?);
        let (l1, u1) = wilson(self.treated.returned, self.treated.members);
        let (l2, u2) = wilson(self.holdout.returned, self.holdout.members);
        let d = p1 - p2;
        Some(Uplift {
            uplift: d,
            low: d - ((p1 - l1).powi(2) + (u2 - p2).powi(2)).sqrt(),
            high: d + ((u1 - p1).powi(2) + (p2 - l2).powi(2)).sqrt(),
        })
    }

    /// Whether the groups are large enough for the interval to mean much.
    pub fn too_small(&self) -> bool {
        let thin = |t: &Tally| t.returned < 5 || t.members - t.returned < 5;
        self.holdout.members < MIN_HOLDOUT || thin(&self.holdout) || thin(&self.treated)
    }

    /// A plain-words reading of the row.
    pub fn note(&self) -> &'static str {
        match self.uplift() {
            None => "no holdout or no treated members",
            Some(_) if self.too_small() => "holdout too small to tell",
            Some(u) if u.low > 0.0 => "campaigns helped",
            Some(u) if u.high < 0.0 => "campaigns hurt",
            Some(_) => "no detectable uplift",
        }
    }
}

/// Wilson score interval of `k` successes out of `n` (95%).
fn wilson(k: u64, n: u64) -> (f64, f64) {
    if n == 0 {
        return (0.0, 1.0);
    }
    let (n, p, z2) = (n as f64, k as f64 / n as f64, Z95 * Z95);
    let centre = (p + z2 / (2.0 * n)) / (1.0 + z2 / n);
    let half = Z95 / (1.0 + z2 / n) * (p * (1.0 - p) / n + z2 / (4.0 * n * n)).sqrt();
    ((centre - half).max(0.0), (centre + half).min(1.0))
}

#[derive(Debug, Clone, Default)]
pub struct Report {
    /// Rows by signal then segment; `all` rows for each signal and overall.
    pub rows: Vec<Row>,
    pub horizon_days: f64,
    /// Alerts read (all signals).
    pub alerts: u64,
    /// The stream's last `detected_at`.
    pub end_ms: Option<i64>,
}

struct Unit {
    segment: String,
    holdout: bool,
    detected_ms: i64,
}

/// Collects alerts, then [`Builder::finish`] judges every unit.
#[derive(Default)]
pub struct Builder {
    /// First alert per (member, signal).
    units: HashMap<(String, String), Unit>,
    /// Each member's return times.
    returns: HashMap<String, Vec<i64>>,
    horizon_from_alerts: Option<f64>,
    alerts: u64,
    end_ms: Option<i64>,
}

impl Builder {
    /// Takes one alert line (SPEC §2 JSON); blank lines are skipped.
    pub fn line(&mut self, text: &str, source_name: &str, line: usize) -> Result<(), ReportError> {
        if text.trim().is_empty() {
            return Ok(());
        }
        let bad = |reason: String| ReportError::BadAlert {
            source_name: source_name.to_string(),
            line,
            reason,
        };
        let value: serde_json::Value =
            serde_json::from_str(text).map_err(|e| bad(e.to_string()))?;
        let a: RawAlert = serde_json::from_value(value.clone()).map_err(|e| bad(e.to_string()))?;
        let ts = parse_rfc3339_ms(&a.detected_at)
            .ok_or_else(|| bad(format!("detected_at {:?} is not RFC 3339", a.detected_at)))?;
        self.alerts += 1;
        self.end_ms = Some(self.end_ms.map_or(ts, |e| e.max(ts)));
        if a.signal == "reactivated" {
            if let Some(h) = value["evidence"]["horizon_days"].as_f64() {
                self.horizon_from_alerts = Some(h);
            }
            self.returns.entry(a.member_id).or_default().push(ts);
            return Ok(());
        }
        let unit = Unit {
            segment: a.segment,
            holdout: a.holdout,
            detected_ms: ts,
        };
        // Redelivered or out-of-order alerts: the earliest alert is the unit.
        self.units
            .entry((a.member_id, a.signal))
            .and_modify(|u| {
                if ts < u.detected_ms {
                    *u = Unit {
                        segment: unit.segment.clone(),
                        holdout: unit.holdout,
                        detected_ms: ts,
                    };
                }
            })
            .or_insert(unit);
        Ok(())
    }

    /// Reads NDJSON alerts.
    pub fn read(&mut self, r: impl BufRead, source_name: &str) -> Result<(), ReportError> {
        for (i, line) in r.lines().enumerate() {
            let line = line.map_err(|source| ReportError::Read {
                source_name: source_name.to_string(),
                source,
            })?;
            self.line(&line, source_name, i + 1)?;
        }
        Ok(())
    }

    /// Judges every unit; `horizon_days` overrides the alerts' own.
    pub fn finish(mut self, horizon_days: Option<f64>) -> Report {
        let horizon = horizon_days.or(self.horizon_from_alerts).unwrap_or(30.0);
        let horizon_ms = (horizon * DAY_MS as f64) as i64;
        for r in self.returns.values_mut() {
            r.sort_unstable();
        }
        let end = self.end_ms.unwrap_or(i64::MIN);
        let mut rows: BTreeMap<(String, String), Row> = BTreeMap::new();
        for ((member, signal), u) in &self.units {
            let returned = self.returns.get(member).is_some_and(|r| {
                let i = r.partition_point(|t| *t <= u.detected_ms);
                r.get(i).is_some_and(|t| *t <= u.detected_ms + horizon_ms)
            });
            let judged = returned || u.detected_ms + horizon_ms <= end;
            for key in [
                (signal.clone(), u.segment.clone()),
                (signal.clone(), "all".to_string()),
                ("all".to_string(), u.segment.clone()),
                ("all".to_string(), "all".to_string()),
            ] {
                let row = rows.entry(key.clone()).or_insert_with(|| Row {
                    signal: key.0,
                    segment: key.1,
                    treated: Tally::default(),
                    holdout: Tally::default(),
                    pending: 0,
                });
                if !judged {
                    row.pending += 1;
                    continue;
                }
                let t = if u.holdout {
                    &mut row.holdout
                } else {
                    &mut row.treated
                };
                t.members += 1;
                t.returned += returned as u64;
            }
        }
        // `all` sorts after the named signals and segments.
        let mut rows: Vec<Row> = rows.into_values().collect();
        rows.sort_by(|a, b| {
            (a.signal == "all", &a.signal, a.segment == "all", &a.segment).cmp(&(
                b.signal == "all",
                &b.signal,
                b.segment == "all",
                &b.segment,
            ))
        });
        Report {
            rows,
            horizon_days: horizon,
            alerts: self.alerts,
            end_ms: self.end_ms,
        }
    }
}

fn pct(v: Option<f64>) -> String {
    v.map_or("-".into(), |v| format!("{:.1}%", v * 100.0))
}

impl Report {
    /// Rows by signal (segment `all`), then by segment (signal `all`).
    pub fn summary_rows(&self) -> impl Iterator<Item = &Row> {
        self.rows.iter().filter(|r| r.segment == "all").chain(
            self.rows
                .iter()
                .filter(|r| r.signal == "all" && r.segment != "all"),
        )
    }

    /// The terminal table: per signal, then per segment.
    pub fn table(&self) -> String {
        let header = [
            "signal", "segment", "treated", "returned", "rate", "holdout", "returned", "rate",
            "uplift", "95% CI", "pending", "note",
        ];
        let mut lines: Vec<[String; 12]> = vec![header.map(String::from)];
        for r in self.summary_rows() {
            let u = r.uplift();
            lines.push([
                r.signal.clone(),
                r.segment.clone(),
                r.treated.members.to_string(),
                r.treated.returned.to_string(),
                pct(r.treated.rate()),
                r.holdout.members.to_string(),
                r.holdout.returned.to_string(),
                pct(r.holdout.rate()),
                u.map_or("-".into(), |u| format!("{:+.1} pp", u.uplift * 100.0)),
                u.map_or("-".into(), |u| {
                    format!("[{:+.1}, {:+.1}]", u.low * 100.0, u.high * 100.0)
                }),
                r.pending.to_string(),
                r.note().to_string(),
            ]);
        }
        let mut widths = [0usize; 12];
        for l in &lines {
            for (w, c) in widths.iter_mut().zip(l) {
                *w = (*w).max(c.chars().count());
            }
        }
        let mut out = format!(
            "Reactivation within {} days of the first alert per member and signal ({} alerts read)\n",
            self.horizon_days, self.alerts
        );
        for l in &lines {
            let cells: Vec<String> = l
                .iter()
                .zip(widths)
                .enumerate()
                .map(|(i, (c, w))| {
                    if i < 2 || i == 11 {
                        format!("{c:<w$}")
                    } else {
                        format!("{c:>w$}")
                    }
                })
                .collect();
            out.push_str(cells.join("  ").trim_end());
            out.push('\n');
        }
        out
    }

    /// Every row (each signal × segment too) as CSV.
    pub fn write_csv(&self, w: impl std::io::Write) -> Result<(), csv::Error> {
        let mut out = csv::Writer::from_writer(w);
        out.write_record([
            "signal",
            "segment",
            "treated_members",
            "treated_returned",
            "treated_rate",
            "holdout_members",
            "holdout_returned",
            "holdout_rate",
            "uplift",
            "ci_low",
            "ci_high",
            "pending",
            "horizon_days",
            "note",
        ])?;
        let num = |v: Option<f64>| v.map_or(String::new(), |v| format!("{v:.6}"));
        for r in &self.rows {
            let u = r.uplift();
            out.write_record([
                r.signal.clone(),
                r.segment.clone(),
                r.treated.members.to_string(),
                r.treated.returned.to_string(),
                num(r.treated.rate()),
                r.holdout.members.to_string(),
                r.holdout.returned.to_string(),
                num(r.holdout.rate()),
                num(u.map(|u| u.uplift)),
                num(u.map(|u| u.low)),
                num(u.map(|u| u.high)),
                r.pending.to_string(),
                self.horizon_days.to_string(),
                r.note().to_string(),
            ])?;
        }
        out.flush()?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn alert(member: &str, signal: &str, holdout: bool, day: i64) -> String {
        format!(
            r#"{{"member_id":"{member}","signal":"{signal}","segment":"just_dormant","holdout":{holdout},"detected_at":"{}"}}"#,
            crate::event::format_rfc3339_ms(day * DAY_MS)
        )
    }

    #[test]
    fn a_return_within_the_horizon_counts_and_one_after_it_does_not() {
        let mut b = Builder::default();
        for l in [
            alert("a", "purchase_gap", false, 0),
            alert("a", "reactivated", false, 10),
            alert("b", "purchase_gap", false, 0),
            alert("b", "reactivated", false, 40),
            alert("c", "purchase_gap", true, 0),
            alert("d", "purchase_gap", true, 100), // too recent to judge
        ] {
            b.line(&l, "t", 1).unwrap();
        }
        let r = b.finish(Some(30.0));
        let row = r
            .rows
            .iter()
            .find(|r| r.signal == "purchase_gap" && r.segment == "all")
            .unwrap();
        assert_eq!(
            row.treated,
            Tally {
                members: 2,
                returned: 1
            }
        );
        assert_eq!(
            row.holdout,
            Tally {
                members: 1,
                returned: 0
            }
        );
        assert_eq!(row.pending, 1);
        assert_eq!(row.note(), "holdout too small to tell");
    }

    #[test]
    fn newcombe_interval_matches_the_published_example() {
        // Newcombe (1998), example (a): 56/70 vs 48/80 → [0.0524, 0.3339].
        let row = Row {
            signal: "x".into(),
            segment: "all".into(),
            treated: Tally {
                members: 70,
                returned: 56,
            },
            holdout: Tally {
                members: 80,
                returned: 48,
            },
            pending: 0,
        };
        let u = row.uplift().unwrap();
        assert!((u.uplift - 0.2).abs() < 1e-9);
        assert!((u.low - 0.0524).abs() < 5e-4, "{u:?}");
        assert!((u.high - 0.3339).abs() < 5e-4, "{u:?}");
        assert_eq!(row.note(), "campaigns helped");
    }
}
