//! `churnwatch members …` command line.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Subcommand;

use super::export::{self, ExportOptions, Format};
use crate::config::Config;
use crate::event::parse_rfc3339_ms;

#[derive(Debug, Subcommand)]
pub enum MembersCommand {
    /// One row per member of a state directory (of a stopped `run`, of
    /// `replay --state` or `bootstrap`): stage, segment, risk_score,
    /// p_alive, holdout, baselines, open episodes, last events, next timer.
    Export {
        /// The state directory (`state.dir`); nothing may be using it.
        #[arg(long)]
        state: PathBuf,
        /// Judge every member at this RFC 3339 time [default: the stored
        /// clock of the member's partition]. Not before that clock.
        #[arg(long, value_parser = parse_time)]
        at: Option<i64>,
        /// Output format [default: from the --output extension, else csv].
        #[arg(long, value_parser = ["csv", "ndjson", "parquet"])]
        format: Option<String>,
        /// Output file.
        #[arg(long)]
        output: PathBuf,
        /// Only members with a risk_score of at least this (0–100).
        #[arg(long)]
        min_risk: Option<f64>,
        /// Only members in this stage.
        #[arg(long, value_parser = ["new", "active", "cooling", "silent", "churned"])]
        stage: Option<String>,
        /// Config file (SPEC §8) whose thresholds judge the members: use the
        /// one the state was built with.
        #[arg(long)]
        config: Option<PathBuf>,
        /// No progress bar or summary on stderr.
        #[arg(long, short)]
        quiet: bool,
    },
}

fn parse_time(s: &str) -> Result<i64, String> {
    parse_rfc3339_ms(s).ok_or_else(|| format!("not an RFC 3339 time: {s:?}"))
}

fn format_of(format: Option<&str>, output: &std::path::Path) -> Format {
    format
        .or_else(|| output.extension().and_then(|e| e.to_str()))
        .and_then(|f| match f {
            "jsonl" | "json" => Some(Format::Ndjson),
            f => Format::parse(f),
        })
        .unwrap_or(Format::Csv)
}

impl MembersCommand {
    pub fn run(self) -> ExitCode {
        match self {
            MembersCommand::Export {
                state,
                at,
                format,
                output,
                min_risk,
                stage,
                config,
                quiet,
            } => {
                let cfg = match config
                    .as_ref()
                    .map_or_else(Config::from_env, |p| Config::load(p))
                {
                    Ok(c) => c,
                    Err(e) => {
                        eprintln!("churnwatch members export: {e}");
                        return ExitCode::from(2);
                    }
                };
                let opts = ExportOptions {
                    state,
                    at_ms: at,
                    format: format_of(format.as_deref(), &output),
                    output,
                    min_risk,
                    stage: stage.as_deref().and_then(export::parse_stage),
                    progress: !quiet,
                };
                match export::run(&opts, &cfg.engine()) {
                    Ok(summary) => {
                        if !quiet {
                            eprintln!("{summary}");
                        }
                        ExitCode::SUCCESS
                    }
                    Err(e @ export::ExportError::AtBeforeClock { .. }) => {
                        eprintln!("churnwatch members export: {e}");
                        ExitCode::from(2)
                    }
                    Err(e) => {
                        eprintln!("churnwatch members export: {e}");
                        ExitCode::FAILURE
                    }
                }
            }
        }
    }
}
