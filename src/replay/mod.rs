//! `churnwatch replay` (SPEC §6): the engine offline, over an NDJSON file.
//!
//! Lines are processed in batches exactly as the Kafka pipeline processes
//! messages: every line goes through [`Engine::process`], and each batch ends
//! with its alerts and dead letters written and flushed *before* the state
//! commit. A crash therefore never loses an alert; at worst a re-run with the
//! same `--state` repeats the last batch's alerts with the same `alert_id`s.
//!
//! By default the whole file is one partition with one clock. With
//! `--partitions N` each member goes to the partition the input topic's
//! producers would send its key to (`kafka.partitioner`), and each partition
//! keeps its own clock, exactly as `run` over an N-partition topic holding
//! the same lines: the file's order is each partition's order.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{self, BufRead, BufReader, BufWriter, IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::config::Config;
use crate::detect::Signal;
use crate::engine::{Engine, EngineError, Outcome};
use crate::event::partitioner::Partitioner;
use crate::state::{Batch, RocksStore, StoreError};
use crate::telemetry::events::{AlertPublished, DeadLetterWritten};
use crate::telemetry::Metrics;

/// Input lines per engine batch (one RocksDB write each).
pub const BATCH_LINES: usize = 4096;

#[derive(Debug, thiserror::Error)]
pub enum ReplayError {
    #[error("cannot open {what} {path}: {source}")]
    Open {
        what: &'static str,
        path: String,
        source: io::Error,
    },
    #[error("reading the input failed at line {line}: {source}")]
    Read { line: u64, source: io::Error },
    #[error("writing {what} failed: {source}")]
    Write {
        what: &'static str,
        source: io::Error,
    },
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Engine(#[from] EngineError),
}

#[derive(Debug, Clone)]
pub struct ReplayOptions {
    /// Input path or `-` for stdin.
    pub input: String,
    /// Output path or `-` for stdout.
    pub output: String,
    /// Dead-letter file; defaults to `OUTPUT.dlq` (`churnwatch-replay.dlq`
    /// when the output is stdout).
    pub dlq: Option<PathBuf>,
    /// Advance the clock to this time (epoch ms) at the end of the input.
    pub until_ms: Option<i64>,
    /// Persistent state directory; a fresh temporary store without it.
    pub state: Option<PathBuf>,
    /// Show a progress bar (only when stderr is a terminal).
    pub progress: bool,
    /// Logical partitions, members placed by `partitioner` (1: the whole
    /// file is one partition).
    pub partitions: u32,
    pub partitioner: Partitioner,
    /// Lines whose event time is after this (epoch ms) are skipped and
    /// counted, not applied (`bootstrap`: the topic delivers them).
    pub skip_after_ms: Option<i64>,
}

impl ReplayOptions {
    /// Replay `input` into `output` with the defaults of `churnwatch replay`.
    pub fn new(input: impl Into<String>, output: impl Into<String>) -> Self {
        ReplayOptions {
            input: input.into(),
            output: output.into(),
            dlq: None,
            until_ms: None,
            state: None,
            progress: false,
            partitions: 1,
            partitioner: Partitioner::default(),
            skip_after_ms: None,
        }
    }
}

#[derive(Debug, Clone, Default)]
pub struct ReplaySummary {
    pub lines: u64,
    pub events: u64,
    pub rejected: u64,
    pub duplicates: u64,
    pub alerts: u64,
    pub alerts_by_signal: BTreeMap<&'static str, u64>,
    pub timers_fired: u64,
    /// Lines after `skip_after_ms`, left out.
    pub skipped_after: u64,
    /// Accepted events per partition (with more than one partition).
    pub events_by_partition: BTreeMap<u32, u64>,
    pub elapsed: Duration,
}

impl std::fmt::Display for ReplaySummary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let secs = self.elapsed.as_secs_f64().max(1e-9);
        writeln!(
            f,
            "replayed {} lines in {:.2}s ({:.0} lines/s): {} events, {} rejected, {} duplicates, {} timers fired",
            self.lines,
            secs,
            self.lines as f64 / secs,
            self.events,
            self.rejected,
            self.duplicates,
            self.timers_fired
        )?;
        write!(f, "alerts: {}", self.alerts)?;
        for (s, n) in &self.alerts_by_signal {
            write!(f, " {s}={n}")?;
        }
        if self.skipped_after > 0 {
            write!(
                f,
                "\nskipped {} lines after the end time",
                self.skipped_after
            )?;
        }
        if self.events_by_partition.len() > 1 {
            write!(f, "\nevents by partition:")?;
            for (p, n) in &self.events_by_partition {
                write!(f, " {p}={n}")?;
            }
        }
        Ok(())
    }
}

pub fn default_dlq_path(output: &str) -> PathBuf {
    if output == "-" {
        PathBuf::from("churnwatch-replay.dlq")
    } else {
        PathBuf::from(format!("{output}.dlq"))
    }
}

fn open_output(path: &str, what: &'static str) -> Result<Box<dyn Write>, ReplayError> {
    if path == "-" {
        return Ok(Box::new(BufWriter::with_capacity(
            1 << 16,
            io::stdout().lock(),
        )));
    }
    let f = File::create(path).map_err(|source| ReplayError::Open {
        what,
        path: path.to_string(),
        source,
    })?;
    Ok(Box::new(BufWriter::with_capacity(1 << 16, f)))
}

pub fn run(
    opts: &ReplayOptions,
    cfg: &Config,
    metrics: Arc<Metrics>,
) -> Result<ReplaySummary, ReplayError> {
    let started = Instant::now();
    let input: Box<dyn BufRead> = if opts.input == "-" {
        Box::new(BufReader::with_capacity(1 << 20, io::stdin().lock()))
    } else {
        let f = File::open(&opts.input).map_err(|source| ReplayError::Open {
            what: "input",
            path: opts.input.clone(),
            source,
        })?;
        Box::new(BufReader::with_capacity(1 << 20, f))
    };
    let mut out = open_output(&opts.output, "output")?;
    let dlq_path = opts
        .dlq
        .clone()
        .unwrap_or_else(|| default_dlq_path(&opts.output));
    let mut dlq = open_output(&dlq_path.to_string_lossy(), "dead-letter file")?;

    // Keep the temporary directory alive until the end of the run.
    let (_tmp, dir): (Option<tempfile::TempDir>, PathBuf) = match &opts.state {
        Some(d) => (None, d.clone()),
        None => {
            let t = tempfile::Builder::new()
                .prefix("churnwatch-replay-")
                .tempdir()
                .map_err(|source| ReplayError::Open {
                    what: "temporary state directory",
                    path: std::env::temp_dir().display().to_string(),
                    source,
                })?;
            let p = t.path().to_path_buf();
            (Some(t), p)
        }
    };
    let store = RocksStore::open(&dir, &cfg.state.tuning())?;
    let mut engine_cfg = cfg.engine();
    engine_cfg.clock.idle_advance = false;
    let mut engine = Engine::new(store, engine_cfg, metrics.clone())?;
    let partitions = opts.partitions.max(1);
    for p in 0..partitions {
        engine.assign(p)?;
    }
    let placement = Placement {
        validator: cfg.engine().validator,
        partitions,
        partitioner: opts.partitioner,
        skip_after_ms: opts.skip_after_ms,
    };

    let progress = progress_bar(opts.progress);
    let mut summary = ReplaySummary::default();
    let mut line = Vec::with_capacity(4096);
    let mut input = input;
    let mut in_batch = 0usize;
    let mut json = Vec::with_capacity(1 << 16);
    loop {
        line.clear();
        let n = input
            .read_until(b'\n', &mut line)
            .map_err(|source| ReplayError::Read {
                line: summary.lines + 1,
                source,
            })?;
        if n == 0 {
            break;
        }
        summary.lines += 1;
        let payload = trim_line_end(&line);
        if payload.iter().all(|b| b.is_ascii_whitespace()) {
            continue;
        }
        let wall = chrono::Utc::now().timestamp_millis();
        let Some(partition) = placement.place(payload, wall) else {
            summary.skipped_after += 1;
            continue;
        };
        let outcome = loop {
            match engine.process(partition, payload, wall)? {
                // Too many timers due at once: commit what fired, go on.
                Outcome::Deferred => finish_batch(
                    &mut engine,
                    &mut out,
                    &mut dlq,
                    &mut json,
                    &mut summary,
                    &metrics,
                )?,
                outcome => break outcome,
            }
        };
        match outcome {
            Outcome::Deferred => unreachable!("retried above"),
            Outcome::Accepted => {
                summary.events += 1;
                if partitions > 1 {
                    *summary.events_by_partition.entry(partition).or_default() += 1;
                }
            }
            Outcome::Duplicate => summary.duplicates += 1,
            Outcome::Rejected(r) => {
                summary.rejected += 1;
                write_dead_letter(&mut dlq, summary.lines, &r.to_string(), payload)?;
                DeadLetterWritten.emit(&metrics);
            }
        }
        in_batch += 1;
        if in_batch >= BATCH_LINES {
            finish_batch(
                &mut engine,
                &mut out,
                &mut dlq,
                &mut json,
                &mut summary,
                &metrics,
            )?;
            in_batch = 0;
            if let Some(p) = &progress {
                p.set_position(summary.lines);
                p.set_message(format!(
                    "{} rejected, {} alerts",
                    summary.rejected, summary.alerts
                ));
            }
        }
    }
    if let Some(until) = opts.until_ms {
        while !engine.advance_clock_to(until)? {
            finish_batch(
                &mut engine,
                &mut out,
                &mut dlq,
                &mut json,
                &mut summary,
                &metrics,
            )?;
        }
    }
    finish_batch(
        &mut engine,
        &mut out,
        &mut dlq,
        &mut json,
        &mut summary,
        &metrics,
    )?;
    if let Some(p) = progress {
        p.finish_and_clear();
    }
    summary.timers_fired = engine.stats().timers_fired;
    summary.elapsed = started.elapsed();
    Ok(summary)
}

/// Writes the batch's alerts and dead letters durably, then commits the state
/// they came from.
fn finish_batch(
    engine: &mut Engine<RocksStore>,
    out: &mut Box<dyn Write>,
    dlq: &mut Box<dyn Write>,
    json: &mut Vec<u8>,
    summary: &mut ReplaySummary,
    metrics: &Metrics,
) -> Result<(), ReplayError> {
    // Records of a reused `--state` that no longer decode were moved to
    // its quarantine table; they are dead letters too.
    for q in engine.take_quarantined() {
        write_dead_letter(dlq, summary.lines, &q.dead_letter_error(), &q.value)?;
        DeadLetterWritten.emit(metrics);
    }
    let emitted = chrono::Utc::now().timestamp_millis();
    json.clear();
    for raised in engine.take_alerts() {
        let a = &raised.alert;
        a.write_json(json, emitted);
        json.push(b'\n');
        summary.alerts += 1;
        *summary
            .alerts_by_signal
            .entry(a.signal.as_str())
            .or_default() += 1;
        AlertPublished {
            signal: a.signal,
            severity: a.severity,
        }
        .emit(metrics);
    }
    let werr = |what| move |source| ReplayError::Write { what, source };
    out.write_all(json).map_err(werr("alerts"))?;
    out.flush().map_err(werr("alerts"))?;
    dlq.flush().map_err(werr("dead letters"))?;
    engine.commit(Batch::default())?;
    Ok(())
}

/// Where a line goes.
struct Placement {
    validator: crate::event::Validator,
    partitions: u32,
    partitioner: Partitioner,
    skip_after_ms: Option<i64>,
}

impl Placement {
    /// The partition of the line's member, or `None` for a line after
    /// `skip_after_ms`. A line that does not parse goes to partition 0,
    /// where the engine rejects it with its reason.
    fn place(&self, payload: &[u8], wall_ms: i64) -> Option<u32> {
        if self.partitions == 1 && self.skip_after_ms.is_none() {
            return Some(0);
        }
        let Ok(e) = self.validator.parse(payload, wall_ms) else {
            return Some(0);
        };
        if self.skip_after_ms.is_some_and(|t| e.ts_ms > t) {
            return None;
        }
        Some(
            self.partitioner
                .partition(e.member_id.as_bytes(), self.partitions),
        )
    }
}

fn write_dead_letter(
    dlq: &mut Box<dyn Write>,
    line: u64,
    error: &str,
    payload: &[u8],
) -> Result<(), ReplayError> {
    let rec = serde_json::json!({
        "line": line,
        "error": error,
        "payload": String::from_utf8_lossy(payload),
    });
    serde_json::to_writer(&mut *dlq, &rec).map_err(|e| ReplayError::Write {
        what: "dead letters",
        source: io::Error::other(e),
    })?;
    dlq.write_all(b"\n").map_err(|source| ReplayError::Write {
        what: "dead letters",
        source,
    })
}

fn trim_line_end(line: &[u8]) -> &[u8] {
    let mut end = line.len();
    while end > 0 && (line[end - 1] == b'\n' || line[end - 1] == b'\r') {
        end -= 1;
    }
    &line[..end]
}

fn progress_bar(wanted: bool) -> Option<indicatif::ProgressBar> {
    if !wanted || !io::stderr().is_terminal() {
        return None;
    }
    let p = indicatif::ProgressBar::new_spinner();
    p.set_style(
        indicatif::ProgressStyle::with_template(
            "{spinner} {pos} lines ({per_sec}) {msg} [{elapsed}]",
        )
        .expect("valid template"),
    );
    p.enable_steady_tick(Duration::from_millis(200));
    Some(p)
}

/// Every signal name, for summaries that list zeros too.
pub fn signal_names() -> impl Iterator<Item = &'static str> {
    Signal::ALL.into_iter().map(|s| s.as_str())
}

/// Whether `path` looks like stdin/stdout.
pub fn is_stdio(path: &Path) -> bool {
    path.as_os_str() == "-"
}
