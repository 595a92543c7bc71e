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

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::fs::File;
use std::io::{self, BufRead, BufReader, BufWriter, IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::config::Config;
use crate::detect::Signal;
use crate::engine::{CacheStats, Engine, EngineError, Outcome};
use crate::event::partitioner::Partitioner;
use crate::event::{Event, EventKind, Rejection};
use crate::state::{Batch, RocksStore, RocksTuning, StoreError};
use crate::telemetry::events::{AlertPublished, DeadLetterWritten};
use crate::telemetry::Metrics;

/// An engine batch (one RocksDB write) ends once it has changed this many
/// members: they wait in memory, beyond the member cache's budget, until
/// the commit writes them, so this bounds what a batch holds...
pub const BATCH_MEMBERS: usize = 32_768;
/// ...or once it has this many input lines, however few members they
/// touched. With the member cache a member is written once per batch, so a
/// history of busy members costs a write per member per batch, not per
/// event; the lines bound how much a re-run repeats after a crash.
pub const BATCH_LINES: usize = 262_144;

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
    /// An engine thread stopped early (its own error is the one reported).
    #[error("an engine thread stopped")]
    Stopped,
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
    /// Engine threads the partitions are spread over (0: `engine.threads`
    /// of the config). The alerts depend on `partitions`, never on this.
    pub threads: usize,
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
            threads: 0,
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
    /// The member caches at the end, over every engine thread: whether
    /// `engine.member_cache_mb` held the members.
    pub member_cache: CacheStats,
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
        let c = self.member_cache;
        write!(
            f,
            "\nmember cache: {} members ({} decoded, {} packed), {:.0} MiB",
            c.members(),
            c.decoded,
            c.packed,
            c.bytes as f64 / (1 << 20) as f64
        )?;
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

type Output = Box<dyn Write + Send>;

fn open_output(path: &str, what: &'static str) -> Result<Output, ReplayError> {
    if path == "-" {
        return Ok(Box::new(BufWriter::with_capacity(1 << 16, io::stdout())));
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
    let out = open_output(&opts.output, "output")?;
    let dlq_path = opts
        .dlq
        .clone()
        .unwrap_or_else(|| default_dlq_path(&opts.output));
    let dlq = open_output(&dlq_path.to_string_lossy(), "dead-letter file")?;
    let outputs = Mutex::new(Outputs { out, dlq });

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
    let tuning = RocksTuning {
        // A temporary store is deleted with the process: a write-ahead log
        // would protect nothing anyone could open again.
        wal: opts.state.is_some(),
        ..cfg.state.tuning()
    };
    let store = Arc::new(RocksStore::open(&dir, &tuning)?);
    let partitions = opts.partitions.max(1);
    let threads = match opts.threads {
        0 => cfg.engine.thread_count(),
        n => n,
    }
    .clamp(1, partitions as usize);
    let mut engine_cfg = cfg.engine().cache_share(threads);
    engine_cfg.clock.idle_advance = false;
    // Each thread's engine owns the partitions `p % threads == thread`.
    let mut workers = Vec::with_capacity(threads);
    for t in 0..threads {
        let mut engine = Engine::new(store.clone(), engine_cfg.clone(), metrics.clone())?;
        for p in (0..partitions).filter(|p| *p as usize % threads == t) {
            engine.assign(p)?;
        }
        // The alerts of a batch are written before its commit, so the
        // commit's store write can land while the next batch is processed.
        engine.write_behind();
        workers.push(Worker::new(engine, metrics.clone()));
    }
    let placement = Placement {
        validator: engine_cfg.validator.clone(),
        partitions,
        partitioner: opts.partitioner,
        skip_after_ms: opts.skip_after_ms,
    };
    let reader = Reader {
        input,
        placement,
        progress: progress_bar(opts.progress),
        lines: 0,
        skipped_after: 0,
    };

    // The reader (reading, parsing, placing) runs on a thread of its own
    // even for one engine: parsing is a fifth of the work per line.
    let (reader, done) = run_threads(reader, workers, opts.until_ms, &outputs)?;
    if let Some(p) = &reader.progress {
        p.finish_and_clear();
    }
    let mut summary = ReplaySummary {
        lines: reader.lines,
        skipped_after: reader.skipped_after,
        ..ReplaySummary::default()
    };
    for d in done {
        summary.absorb(d);
    }
    if partitions == 1 {
        summary.events_by_partition.clear();
    }
    summary.elapsed = started.elapsed();
    Ok(summary)
}

/// The reader hands each worker its lines in chunks, parsed, through a
/// bounded queue (so reading never runs far ahead of processing), and
/// collects what each did once the input ends.
fn run_threads(
    reader: Reader,
    workers: Vec<Worker>,
    until_ms: Option<i64>,
    outputs: &Mutex<Outputs>,
) -> Result<(Reader, Vec<WorkerDone>), ReplayError> {
    let threads = workers.len();
    std::thread::scope(|scope| {
        let mut queues = Vec::with_capacity(threads);
        let mut handles = Vec::with_capacity(threads);
        for (t, mut worker) in workers.into_iter().enumerate() {
            let (tx, rx) = std::sync::mpsc::sync_channel::<Chunk>(4);
            queues.push(tx);
            let handle = std::thread::Builder::new()
                .name(format!("engine-{t}"))
                .spawn_scoped(scope, move || -> Result<WorkerDone, ReplayError> {
                    for chunk in rx {
                        worker.chunk(&chunk, outputs)?;
                    }
                    worker.finish(until_ms, outputs)?;
                    Ok(worker.done())
                })
                .expect("spawn engine thread");
            handles.push(handle);
        }
        let mut chunks: Vec<Chunk> = (0..threads).map(|_| Chunk::default()).collect();
        let read = reader.each(|line, parsed| {
            let t = line.partition as usize % threads;
            chunks[t].push(&line, parsed);
            if chunks[t].len() >= CHUNK_LINES {
                let full = std::mem::take(&mut chunks[t]);
                // A worker that stopped has its error to report at the join.
                queues[t].send(full).map_err(|_| ReplayError::Stopped)?;
            }
            Ok(())
        });
        for (t, chunk) in chunks.into_iter().enumerate() {
            let _ = queues[t].send(chunk);
        }
        drop(queues);
        let mut done = Vec::with_capacity(threads);
        let mut first_error = None;
        for h in handles {
            match h.join().expect("engine thread panicked") {
                Ok(d) => done.push(d),
                Err(e) => {
                    first_error.get_or_insert(e);
                }
            }
        }
        match (first_error, read) {
            (Some(e), _) | (None, Err(e)) => Err(e),
            (None, Ok(reader)) => Ok((reader, done)),
        }
    })
}

/// Lines handed to an engine thread at once.
const CHUNK_LINES: usize = 1024;

/// One input line on its way to the engine that owns its partition.
struct Line<'a> {
    number: u64,
    partition: u32,
    payload: &'a [u8],
}

/// Lines for one engine thread, in input order, in one buffer, each with
/// what parsing it found (the reader parses, so the engine thread does not).
#[derive(Default)]
struct Chunk {
    bytes: Vec<u8>,
    lines: Vec<(u64, u32, usize, usize)>,
    parsed: Vec<Result<Parsed, Rejection>>,
}

/// A parsed event whose strings are places in its chunk's bytes (or owned,
/// where the JSON escaped them): it crosses to the engine thread with the
/// chunk and becomes an [`Event`] borrowing from it again.
struct Parsed {
    event_id: Text,
    member_id: Text,
    kind: EventKind,
    ts_ms: i64,
    amount: f64,
    categories: u16,
}

enum Text {
    At(usize, usize),
    Owned(Box<str>),
}

impl Chunk {
    fn push(&mut self, line: &Line<'_>, parsed: Result<Event<'_>, Rejection>) {
        let from = self.bytes.len();
        self.bytes.extend_from_slice(line.payload);
        self.lines
            .push((line.number, line.partition, from, self.bytes.len()));
        // A borrowed string lies in the payload just copied: the same place
        // in the chunk, shifted by where the payload starts.
        let base = line.payload.as_ptr() as usize;
        let text = |t: Cow<'_, str>| match t {
            Cow::Borrowed(s) => {
                let at = from + (s.as_ptr() as usize - base);
                Text::At(at, at + s.len())
            }
            Cow::Owned(s) => Text::Owned(s.into_boxed_str()),
        };
        self.parsed.push(parsed.map(|e| Parsed {
            event_id: text(e.event_id),
            member_id: text(e.member_id),
            kind: e.kind,
            ts_ms: e.ts_ms,
            amount: e.amount,
            categories: e.categories,
        }));
    }

    fn len(&self) -> usize {
        self.lines.len()
    }

    fn text<'a>(&'a self, t: &'a Text) -> &'a str {
        match t {
            Text::At(from, to) => {
                std::str::from_utf8(&self.bytes[*from..*to]).expect("parsed as utf-8")
            }
            Text::Owned(s) => s,
        }
    }

    /// Line `i`'s event as parsing found it.
    fn event(&self, i: usize) -> Result<Event<'_>, Rejection> {
        match &self.parsed[i] {
            Ok(p) => Ok(Event {
                event_id: Cow::Borrowed(self.text(&p.event_id)),
                member_id: Cow::Borrowed(self.text(&p.member_id)),
                kind: p.kind,
                ts_ms: p.ts_ms,
                amount: p.amount,
                categories: p.categories,
            }),
            Err(r) => Err(r.clone()),
        }
    }

    /// Line `i`'s partition and member, if there is such a line and it
    /// parsed.
    fn member(&self, i: usize) -> Option<(u32, &str)> {
        let p = self.parsed.get(i)?.as_ref().ok()?;
        Some((self.lines[i].1, self.text(&p.member_id)))
    }

    fn lines(&self) -> impl Iterator<Item = Line<'_>> {
        self.lines
            .iter()
            .map(|&(number, partition, from, to)| Line {
                number,
                partition,
                payload: &self.bytes[from..to],
            })
    }
}

/// Reads the input, numbers and places every line.
struct Reader {
    input: Box<dyn BufRead>,
    placement: Placement,
    progress: Option<indicatif::ProgressBar>,
    lines: u64,
    skipped_after: u64,
}

impl Reader {
    /// Calls `f` with every non-blank line to apply, in input order, and
    /// what parsing it found.
    fn each(
        mut self,
        mut f: impl FnMut(Line<'_>, Result<Event<'_>, Rejection>) -> Result<(), ReplayError>,
    ) -> Result<Self, ReplayError> {
        let mut line = Vec::with_capacity(4096);
        let mut wall = chrono::Utc::now().timestamp_millis();
        loop {
            line.clear();
            let n =
                self.input
                    .read_until(b'\n', &mut line)
                    .map_err(|source| ReplayError::Read {
                        line: self.lines + 1,
                        source,
                    })?;
            if n == 0 {
                return Ok(self);
            }
            self.lines += 1;
            if self.lines % 1024 == 0 {
                // Placement bounds future event times by it (a day): read
                // now and then, not per line.
                wall = chrono::Utc::now().timestamp_millis();
            }
            if self.lines % 65_536 == 0 {
                if let Some(p) = &self.progress {
                    p.set_position(self.lines);
                }
            }
            let payload = trim_line_end(&line);
            if payload.iter().all(|b| b.is_ascii_whitespace()) {
                continue;
            }
            let parsed = self.placement.validator.parse(payload, wall);
            let Some(partition) = self.placement.place(&parsed) else {
                self.skipped_after += 1;
                continue;
            };
            f(
                Line {
                    number: self.lines,
                    partition,
                    payload,
                },
                parsed,
            )?;
        }
    }
}

/// The alert and dead-letter files, shared by the engine threads.
struct Outputs {
    out: Output,
    dlq: Output,
}

/// One engine thread's share of the replay: its engine (owning its
/// partitions), and what it has done.
struct Worker {
    engine: Engine<Arc<RocksStore>>,
    metrics: Arc<Metrics>,
    done: WorkerDone,
    /// Dead letters of the batch in progress: (line, reason, payload).
    dead: Vec<(u64, String, Vec<u8>)>,
    last_line: u64,
    in_batch: usize,
    json: Vec<u8>,
}

/// What one engine thread did.
#[derive(Default)]
struct WorkerDone {
    events: u64,
    rejected: u64,
    duplicates: u64,
    alerts: u64,
    alerts_by_signal: BTreeMap<&'static str, u64>,
    timers_fired: u64,
    events_by_partition: BTreeMap<u32, u64>,
    member_cache: CacheStats,
}

impl ReplaySummary {
    fn absorb(&mut self, d: WorkerDone) {
        self.events += d.events;
        self.rejected += d.rejected;
        self.duplicates += d.duplicates;
        self.alerts += d.alerts;
        self.timers_fired += d.timers_fired;
        self.member_cache = self.member_cache + d.member_cache;
        for (s, n) in d.alerts_by_signal {
            *self.alerts_by_signal.entry(s).or_default() += n;
        }
        for (p, n) in d.events_by_partition {
            *self.events_by_partition.entry(p).or_default() += n;
        }
    }
}

impl Worker {
    fn new(engine: Engine<Arc<RocksStore>>, metrics: Arc<Metrics>) -> Self {
        Worker {
            engine,
            metrics,
            done: WorkerDone::default(),
            dead: Vec::new(),
            last_line: 0,
            in_batch: 0,
            json: Vec::with_capacity(1 << 16),
        }
    }

    /// A chunk of lines: the members it names read ahead in one store read
    /// per partition, then every line in order.
    fn chunk(&mut self, chunk: &Chunk, outputs: &Mutex<Outputs>) -> Result<(), ReplayError> {
        let mut plan = self.engine.read_ahead_plan();
        for (line, parsed) in chunk.lines().zip(&chunk.parsed) {
            if let Ok(p) = parsed {
                plan.add(line.partition, chunk.text(&p.member_id), p.ts_ms);
            }
        }
        self.engine.read_ahead(plan)?;
        for (i, line) in chunk.lines().enumerate() {
            self.engine.prefetch_ahead(|d| chunk.member(i + d));
            self.line(line, || chunk.event(i), outputs)?;
        }
        Ok(())
    }

    /// One line, `event` giving what parsing it found (again, if the engine
    /// defers it).
    fn line<'c>(
        &mut self,
        line: Line<'c>,
        event: impl Fn() -> Result<Event<'c>, Rejection>,
        outputs: &Mutex<Outputs>,
    ) -> Result<(), ReplayError> {
        self.last_line = line.number;
        let outcome = loop {
            match self.engine.process_parsed(line.partition, event())? {
                // Too many timers due at once: commit what fired, go on.
                Outcome::Deferred => self.finish_batch(outputs)?,
                outcome => break outcome,
            }
        };
        match outcome {
            Outcome::Deferred => unreachable!("retried above"),
            Outcome::Accepted => {
                self.done.events += 1;
                *self
                    .done
                    .events_by_partition
                    .entry(line.partition)
                    .or_default() += 1;
            }
            Outcome::Duplicate => self.done.duplicates += 1,
            Outcome::Rejected(r) => {
                self.done.rejected += 1;
                self.dead
                    .push((line.number, r.to_string(), line.payload.to_vec()));
            }
        }
        self.in_batch += 1;
        if self.in_batch >= BATCH_LINES || self.engine.uncommitted_members() >= BATCH_MEMBERS {
            self.finish_batch(outputs)?;
        }
        Ok(())
    }

    /// The end of the input: the clock to `until_ms`, and the last commit.
    fn finish(
        &mut self,
        until_ms: Option<i64>,
        outputs: &Mutex<Outputs>,
    ) -> Result<(), ReplayError> {
        if let Some(until) = until_ms {
            while !self.engine.advance_clock_to(until)? {
                self.finish_batch(outputs)?;
            }
        }
        self.finish_batch(outputs)?;
        self.engine.flush()?;
        Ok(())
    }

    fn done(mut self) -> WorkerDone {
        self.done.timers_fired = self.engine.stats().timers_fired;
        self.done.member_cache = self.engine.member_cache();
        self.done
    }

    /// Writes the batch's alerts and dead letters durably, then commits the
    /// state they came from.
    fn finish_batch(&mut self, outputs: &Mutex<Outputs>) -> Result<(), ReplayError> {
        self.in_batch = 0;
        // Records of a reused `--state` that no longer decode were moved to
        // its quarantine table; they are dead letters too.
        for q in self.engine.take_quarantined() {
            self.dead
                .push((self.last_line, q.dead_letter_error(), q.value.clone()));
        }
        let emitted = chrono::Utc::now().timestamp_millis();
        self.json.clear();
        for raised in self.engine.take_alerts() {
            let a = &raised.alert;
            a.write_json(&mut self.json, emitted);
            self.json.push(b'\n');
            self.done.alerts += 1;
            *self
                .done
                .alerts_by_signal
                .entry(a.signal.as_str())
                .or_default() += 1;
            AlertPublished {
                signal: a.signal,
                severity: a.severity,
            }
            .emit(&self.metrics);
        }
        {
            let mut o = outputs.lock().expect("an engine thread panicked");
            let werr = |what| move |source| ReplayError::Write { what, source };
            for (line, error, payload) in self.dead.drain(..) {
                write_dead_letter(&mut o.dlq, line, &error, &payload)?;
                DeadLetterWritten.emit(&self.metrics);
            }
            o.out.write_all(&self.json).map_err(werr("alerts"))?;
            o.out.flush().map_err(werr("alerts"))?;
            o.dlq.flush().map_err(werr("dead letters"))?;
        }
        self.engine.commit(Batch::default())?;
        Ok(())
    }
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
    fn place(&self, parsed: &Result<Event<'_>, Rejection>) -> Option<u32> {
        let Ok(e) = parsed else {
            return Some(0);
        };
        if self.skip_after_ms.is_some_and(|t| e.ts_ms > t) {
            return None;
        }
        if self.partitions == 1 {
            return Some(0);
        }
        Some(
            self.partitioner
                .partition(e.member_id.as_bytes(), self.partitions),
        )
    }
}

fn write_dead_letter(
    dlq: &mut Output,
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
