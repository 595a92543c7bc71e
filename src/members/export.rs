//! `churnwatch members export`: one row per member of a state directory (of
//! a stopped `run`, `replay --state` or `bootstrap`), judged at `--at` or at
//! the stored clock of the member's partition.
//!
//! Rows stream: members are read from the store in chunks, judged and
//! written one by one (Parquet: in row groups of [`PARQUET_ROWS`]), so memory
//! stays flat whatever the member count.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::PathBuf;
use std::sync::Arc;

use arrow_array::builder::{
    BooleanBuilder, Float64Builder, StringBuilder, TimestampMillisecondBuilder, UInt32Builder,
};
use arrow_array::{ArrayRef, RecordBatch};
use arrow_schema::{DataType, Field, Schema, SchemaRef, TimeUnit};
use parquet::arrow::ArrowWriter;
use parquet::basic::Compression;
use parquet::file::properties::WriterProperties;

use super::view::{self, MemberScan, MemberView, ViewError};
use crate::engine::EngineConfig;
use crate::event::format_rfc3339_ms;
use crate::state::member::Stage;
use crate::state::{RocksStore, RocksTuning, Store, StoreError};

/// Rows per Parquet row group (and Arrow record batch).
pub const PARQUET_ROWS: usize = 65_536;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Csv,
    Ndjson,
    Parquet,
}

impl Format {
    pub fn parse(s: &str) -> Option<Format> {
        match s {
            "csv" => Some(Format::Csv),
            "ndjson" => Some(Format::Ndjson),
            "parquet" => Some(Format::Parquet),
            _ => None,
        }
    }
}

pub fn parse_stage(s: &str) -> Option<Stage> {
    [
        Stage::New,
        Stage::Active,
        Stage::Cooling,
        Stage::Silent,
        Stage::Churned,
    ]
    .into_iter()
    .find(|st| st.as_str() == s)
}

#[derive(Debug, Clone)]
pub struct ExportOptions {
    pub state: PathBuf,
    /// Judge every member at this time instead of their partition's clock.
    pub at_ms: Option<i64>,
    pub format: Format,
    pub output: PathBuf,
    /// Only members with `risk_score >= min_risk`.
    pub min_risk: Option<f64>,
    /// Only members in this stage.
    pub stage: Option<Stage>,
    pub progress: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    #[error("--state: {0} is not a state directory (no such directory)")]
    NoState(String),
    #[error("--state: cannot open {path} (is a `churnwatch run` still using it?): {source}")]
    Open { path: String, source: StoreError },
    #[error("--at {at} is before the stored clock of partition {partition} ({clock}): the state no longer holds the past")]
    AtBeforeClock {
        at: String,
        partition: u32,
        clock: String,
    },
    #[error(transparent)]
    View(#[from] ViewError),
    #[error("--output {path}: {source}")]
    Write {
        path: String,
        source: std::io::Error,
    },
    #[error("--output {path}: {source}")]
    Csv { path: String, source: csv::Error },
    #[error("--output {path}: {source}")]
    Parquet {
        path: String,
        source: parquet::errors::ParquetError,
    },
    #[error("building a record batch: {0}")]
    Arrow(#[from] arrow_schema::ArrowError),
}

#[derive(Debug, Clone, Copy, Default)]
pub struct ExportSummary {
    pub members: u64,
    pub written: u64,
    pub seconds: f64,
}

impl std::fmt::Display for ExportSummary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} members read, {} rows written in {:.1} s ({:.0} members/s)",
            self.members,
            self.written,
            self.seconds,
            self.members as f64 / self.seconds.max(1e-9)
        )
    }
}

/// Opens the state directory and writes the export.
pub fn run(opts: &ExportOptions, cfg: &EngineConfig) -> Result<ExportSummary, ExportError> {
    if !opts.state.is_dir() {
        return Err(ExportError::NoState(opts.state.display().to_string()));
    }
    // The export reads every block once: a block cache the size of `run`'s
    // would only grow with the state (memory would follow the member count),
    // so a small one keeps the export's memory flat.
    let tuning = RocksTuning {
        block_cache_bytes: 8 << 20,
        write_buffer_bytes: 8 << 20,
        ..RocksTuning::default()
    };
    let store = RocksStore::open(&opts.state, &tuning).map_err(|source| ExportError::Open {
        path: opts.state.display().to_string(),
        source,
    })?;
    export(&store, opts, cfg)
}

/// Writes one row per member of `store` (see [`run`]).
pub fn export<S: Store + ?Sized>(
    store: &S,
    opts: &ExportOptions,
    cfg: &EngineConfig,
) -> Result<ExportSummary, ExportError> {
    let started = std::time::Instant::now();
    let mut clocks = std::collections::BTreeMap::new();
    for p in view::member_partitions(store)? {
        let clock = view::stored_clock(store, p)?;
        if let (Some(at), Some(c)) = (opts.at_ms, clock) {
            if at < c {
                return Err(ExportError::AtBeforeClock {
                    at: format_rfc3339_ms(at),
                    partition: p,
                    clock: format_rfc3339_ms(c),
                });
            }
        }
        clocks.insert(p, clock);
    }
    let bar = if opts.progress {
        let bar = indicatif::ProgressBar::new(store.stats().estimated_members);
        bar.set_style(
            indicatif::ProgressStyle::with_template(
                "{spinner} members {human_pos}/~{human_len} {per_sec} eta {eta}",
            )
            .expect("valid template"),
        );
        bar
    } else {
        indicatif::ProgressBar::hidden()
    };
    let path = opts.output.display().to_string();
    let file = File::create(&opts.output).map_err(|source| ExportError::Write {
        path: path.clone(),
        source,
    })?;
    let mut sink: Box<dyn RowSink> = match opts.format {
        Format::Csv => Box::new(CsvSink::new(file, &path)?),
        Format::Ndjson => Box::new(NdjsonSink {
            out: BufWriter::with_capacity(1 << 20, file),
            path: path.clone(),
        }),
        Format::Parquet => Box::new(ParquetSink::new(file, &path)?),
    };
    let mut summary = ExportSummary::default();
    for item in MemberScan::new(store) {
        let (p, id, m) = item?;
        summary.members += 1;
        if summary.members % 4096 == 0 {
            bar.set_position(summary.members);
        }
        let now = opts
            .at_ms
            .or(clocks.get(&p).copied().flatten())
            .unwrap_or(m.last_event_ms);
        let v = view::evaluate(&id, p, &m, now, cfg);
        if opts.min_risk.is_some_and(|r| v.risk_score < r)
            || opts.stage.is_some_and(|s| v.stage != s)
        {
            continue;
        }
        sink.row(&v)?;
        summary.written += 1;
    }
    sink.finish()?;
    bar.finish_and_clear();
    summary.seconds = started.elapsed().as_secs_f64();
    Ok(summary)
}

trait RowSink {
    fn row(&mut self, v: &MemberView) -> Result<(), ExportError>;
    fn finish(self: Box<Self>) -> Result<(), ExportError>;
}

/// The flat columns of CSV and Parquet, in order. Lists (open episodes,
/// timer checks) are `;`-joined, in the same order across columns.
pub const COLUMNS: [&str; 30] = [
    "member_id",
    "partition",
    "evaluated_at",
    "stage",
    "segment",
    "risk_score",
    "p_alive",
    "expected_purchases_90d",
    "holdout",
    "typical_gap_days",
    "open_rate",
    "visits_per_week",
    "checkin_days_per_week",
    "checkin_streak_days",
    "typical_order_value",
    "open_signals",
    "open_alert_ids",
    "open_since",
    "awaiting_return_alert_id",
    "last_event_at",
    "last_activity_at",
    "last_purchase_at",
    "last_check_in_at",
    "last_visit_at",
    "last_email_send_at",
    "last_email_open_at",
    "next_timer_at",
    "next_timer_checks",
    "purchase_count",
    "total_spend",
];

fn joined<'a>(items: impl Iterator<Item = &'a str>) -> String {
    items.collect::<Vec<_>>().join(";")
}

fn open_lists(v: &MemberView) -> [String; 3] {
    let since: Vec<String> = v
        .open_episodes
        .iter()
        .map(|e| format_rfc3339_ms(e.since_ms))
        .collect();
    [
        joined(v.open_episodes.iter().map(|e| e.signal.as_str())),
        joined(v.open_episodes.iter().map(|e| e.alert_id.as_str())),
        since.join(";"),
    ]
}

fn times(v: &MemberView) -> [Option<i64>; 8] {
    let l = &v.last_event;
    [
        l.any,
        l.activity,
        l.purchase,
        l.check_in,
        l.visit,
        l.email_send,
        l.email_open,
        v.next_timer.as_ref().map(|t| t.due_ms),
    ]
}

fn timer_checks(v: &MemberView) -> String {
    v.next_timer
        .as_ref()
        .map_or(String::new(), |t| t.checks.join(";"))
}

struct NdjsonSink {
    out: BufWriter<File>,
    path: String,
}

impl RowSink for NdjsonSink {
    fn row(&mut self, v: &MemberView) -> Result<(), ExportError> {
        let err = |source| ExportError::Write {
            path: self.path.clone(),
            source,
        };
        serde_json::to_writer(&mut self.out, &v.to_json()).map_err(|e| err(e.into()))?;
        self.out.write_all(b"\n").map_err(err)
    }
    fn finish(mut self: Box<Self>) -> Result<(), ExportError> {
        self.out.flush().map_err(|source| ExportError::Write {
            path: self.path.clone(),
            source,
        })
    }
}

struct CsvSink {
    out: csv::Writer<File>,
    path: String,
}

impl CsvSink {
    fn new(file: File, path: &str) -> Result<Self, ExportError> {
        let mut out = csv::WriterBuilder::new()
            .buffer_capacity(1 << 20)
            .from_writer(file);
        out.write_record(COLUMNS)
            .map_err(|source| ExportError::Csv {
                path: path.to_string(),
                source,
            })?;
        Ok(CsvSink {
            out,
            path: path.to_string(),
        })
    }
}

fn num(v: Option<f64>) -> String {
    v.map_or(String::new(), |x| x.to_string())
}

fn time(v: Option<i64>) -> String {
    v.map_or(String::new(), format_rfc3339_ms)
}

impl RowSink for CsvSink {
    fn row(&mut self, v: &MemberView) -> Result<(), ExportError> {
        let b = &v.baselines;
        let [signals, ids, since] = open_lists(v);
        let t = times(v);
        let record: [String; 30] = [
            v.member_id.clone(),
            v.partition.to_string(),
            format_rfc3339_ms(v.evaluated_ms),
            v.stage.as_str().into(),
            v.segment.as_str().into(),
            v.risk_score.to_string(),
            num(v.p_alive),
            num(v.expected_purchases_90d),
            v.holdout.to_string(),
            num(b.typical_gap_days),
            num(b.open_rate),
            num(b.visits_per_week),
            num(b.checkin_days_per_week),
            b.checkin_streak_days.to_string(),
            num(b.typical_order_value),
            signals,
            ids,
            since,
            v.awaiting_return
                .as_ref()
                .map_or(String::new(), |a| a.alert_id.clone()),
            time(t[0]),
            time(t[1]),
            time(t[2]),
            time(t[3]),
            time(t[4]),
            time(t[5]),
            time(t[6]),
            time(t[7]),
            timer_checks(v),
            v.purchase_count.to_string(),
            v.total_spend.to_string(),
        ];
        self.out
            .write_record(&record)
            .map_err(|source| ExportError::Csv {
                path: self.path.clone(),
                source,
            })
    }
    fn finish(mut self: Box<Self>) -> Result<(), ExportError> {
        self.out.flush().map_err(|source| ExportError::Write {
            path: self.path.clone(),
            source,
        })
    }
}

/// The Parquet schema: timestamps as UTC milliseconds, absent values null.
pub fn parquet_schema() -> SchemaRef {
    let ts = || DataType::Timestamp(TimeUnit::Millisecond, Some("UTC".into()));
    let types: [DataType; 30] = [
        DataType::Utf8,
        DataType::UInt32,
        ts(),
        DataType::Utf8,
        DataType::Utf8,
        DataType::Float64,
        DataType::Float64,
        DataType::Float64,
        DataType::Boolean,
        DataType::Float64,
        DataType::Float64,
        DataType::Float64,
        DataType::Float64,
        DataType::UInt32,
        DataType::Float64,
        DataType::Utf8,
        DataType::Utf8,
        DataType::Utf8,
        DataType::Utf8,
        ts(),
        ts(),
        ts(),
        ts(),
        ts(),
        ts(),
        ts(),
        ts(),
        DataType::Utf8,
        DataType::UInt32,
        DataType::Float64,
    ];
    let required = [0, 1, 2, 3, 4, 5, 8, 13, 28, 29];
    Arc::new(Schema::new(
        COLUMNS
            .iter()
            .zip(types)
            .enumerate()
            .map(|(i, (name, t))| Field::new(*name, t, !required.contains(&i)))
            .collect::<Vec<_>>(),
    ))
}

/// Column builders of one record batch.
struct Columns {
    strings: Vec<StringBuilder>,
    floats: Vec<Float64Builder>,
    uints: Vec<UInt32Builder>,
    times: Vec<TimestampMillisecondBuilder>,
    holdout: BooleanBuilder,
    rows: usize,
}

impl Columns {
    fn new() -> Self {
        let n = PARQUET_ROWS;
        Columns {
            // member_id, stage, segment, open_signals, open_alert_ids,
            // open_since, awaiting_return_alert_id, next_timer_checks
            strings: (0..8)
                .map(|_| StringBuilder::with_capacity(n, n * 16))
                .collect(),
            // risk_score, p_alive, expected_purchases_90d, 5 baselines, total_spend
            floats: (0..9).map(|_| Float64Builder::with_capacity(n)).collect(),
            // partition, checkin_streak_days, purchase_count
            uints: (0..3).map(|_| UInt32Builder::with_capacity(n)).collect(),
            // evaluated_at, 7 last events, next_timer_at
            times: (0..9)
                .map(|_| TimestampMillisecondBuilder::with_capacity(n).with_timezone("UTC"))
                .collect(),
            holdout: BooleanBuilder::with_capacity(n),
            rows: 0,
        }
    }

    fn push(&mut self, v: &MemberView) {
        let b = &v.baselines;
        let [signals, ids, since] = open_lists(v);
        let s = &mut self.strings;
        s[0].append_value(&v.member_id);
        s[1].append_value(v.stage.as_str());
        s[2].append_value(v.segment.as_str());
        s[3].append_option((!signals.is_empty()).then_some(signals));
        s[4].append_option((!ids.is_empty()).then_some(ids));
        s[5].append_option((!since.is_empty()).then_some(since));
        s[6].append_option(v.awaiting_return.as_ref().map(|a| &a.alert_id));
        s[7].append_option(v.next_timer.as_ref().map(|_| timer_checks(v)));
        let f = &mut self.floats;
        f[0].append_value(v.risk_score);
        f[1].append_option(v.p_alive);
        f[2].append_option(v.expected_purchases_90d);
        f[3].append_option(b.typical_gap_days);
        f[4].append_option(b.open_rate);
        f[5].append_option(b.visits_per_week);
        f[6].append_option(b.checkin_days_per_week);
        f[7].append_option(b.typical_order_value);
        f[8].append_value(v.total_spend);
        self.uints[0].append_value(v.partition);
        self.uints[1].append_value(b.checkin_streak_days);
        self.uints[2].append_value(v.purchase_count);
        self.times[0].append_value(v.evaluated_ms);
        for (i, t) in times(v).into_iter().enumerate() {
            self.times[i + 1].append_option(t);
        }
        self.holdout.append_value(v.holdout);
        self.rows += 1;
    }

    /// The batch in [`COLUMNS`] order; the builders start over.
    fn finish(&mut self, schema: &SchemaRef) -> Result<RecordBatch, arrow_schema::ArrowError> {
        let s: Vec<ArrayRef> = self
            .strings
            .iter_mut()
            .map(|b| Arc::new(b.finish()) as ArrayRef)
            .collect();
        let f: Vec<ArrayRef> = self
            .floats
            .iter_mut()
            .map(|b| Arc::new(b.finish()) as ArrayRef)
            .collect();
        let u: Vec<ArrayRef> = self
            .uints
            .iter_mut()
            .map(|b| Arc::new(b.finish()) as ArrayRef)
            .collect();
        let t: Vec<ArrayRef> = self
            .times
            .iter_mut()
            .map(|b| Arc::new(b.finish()) as ArrayRef)
            .collect();
        let holdout: ArrayRef = Arc::new(self.holdout.finish());
        self.rows = 0;
        let columns = vec![
            s[0].clone(),
            u[0].clone(),
            t[0].clone(),
            s[1].clone(),
            s[2].clone(),
            f[0].clone(),
            f[1].clone(),
            f[2].clone(),
            holdout,
            f[3].clone(),
            f[4].clone(),
            f[5].clone(),
            f[6].clone(),
            u[1].clone(),
            f[7].clone(),
            s[3].clone(),
            s[4].clone(),
            s[5].clone(),
            s[6].clone(),
            t[1].clone(),
            t[2].clone(),
            t[3].clone(),
            t[4].clone(),
            t[5].clone(),
            t[6].clone(),
            t[7].clone(),
            t[8].clone(),
            s[7].clone(),
            u[2].clone(),
            f[8].clone(),
        ];
        RecordBatch::try_new(schema.clone(), columns)
    }
}

struct ParquetSink {
    writer: ArrowWriter<File>,
    schema: SchemaRef,
    columns: Columns,
    path: String,
}

impl ParquetSink {
    fn new(file: File, path: &str) -> Result<Self, ExportError> {
        let schema = parquet_schema();
        let props = WriterProperties::builder()
            .set_compression(Compression::SNAPPY)
            .set_max_row_group_row_count(Some(PARQUET_ROWS))
            .build();
        let writer = ArrowWriter::try_new(file, schema.clone(), Some(props)).map_err(|source| {
            ExportError::Parquet {
                path: path.to_string(),
                source,
            }
        })?;
        Ok(ParquetSink {
            writer,
            schema,
            columns: Columns::new(),
            path: path.to_string(),
        })
    }

    fn flush(&mut self) -> Result<(), ExportError> {
        if self.columns.rows == 0 {
            return Ok(());
        }
        let batch = self.columns.finish(&self.schema)?;
        self.writer
            .write(&batch)
            .map_err(|source| ExportError::Parquet {
                path: self.path.clone(),
                source,
            })
    }
}

impl RowSink for ParquetSink {
    fn row(&mut self, v: &MemberView) -> Result<(), ExportError> {
        self.columns.push(v);
        if self.columns.rows >= PARQUET_ROWS {
            self.flush()?;
        }
        Ok(())
    }
    fn finish(mut self: Box<Self>) -> Result<(), ExportError> {
        self.flush()?;
        self.writer
            .close()
            .map(|_| ())
            .map_err(|source| ExportError::Parquet {
                path: self.path.clone(),
                source,
            })
    }
}
