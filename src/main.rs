//! The `churnwatch` command line (SPEC §6).

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context;
use clap::{Parser, Subcommand};

use churnwatch::config::Config;
use churnwatch::event::parse_rfc3339_ms;
use churnwatch::replay::{self, ReplayOptions};
use churnwatch::simulate::{self, SimOptions};
use churnwatch::telemetry::{logging, Metrics};

#[derive(Parser)]
#[command(
    name = "churnwatch",
    version,
    about = "Churn early warning for retail membership programmes"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Replay newline-delimited JSON events through the engine offline.
    Replay {
        /// Input NDJSON file, `-` for stdin.
        #[arg(long)]
        input: String,
        /// Output NDJSON file for alerts, `-` for stdout.
        #[arg(long)]
        output: String,
        /// Dead-letter file for rejected lines [default: OUTPUT.dlq].
        #[arg(long)]
        dlq: Option<PathBuf>,
        /// At the end of input, advance the clock to this RFC 3339 time and
        /// fire every timer due by then.
        #[arg(long, value_parser = parse_time)]
        until: Option<i64>,
        /// Keep state in this directory (reused across runs) instead of a
        /// fresh temporary store.
        #[arg(long)]
        state: Option<PathBuf>,
        /// Config file (SPEC §8).
        #[arg(long)]
        config: Option<PathBuf>,
        /// No progress bar or summary on stderr.
        #[arg(long, short)]
        quiet: bool,
    },
    /// Generate synthetic member journeys as NDJSON.
    Simulate {
        /// Members to simulate.
        #[arg(long, default_value_t = 1000)]
        members: usize,
        /// Days of history per member, ending now (or at --end).
        #[arg(long, default_value_t = 180)]
        days: u32,
        /// End of the simulated period (RFC 3339) [default: now].
        #[arg(long, value_parser = parse_time)]
        end: Option<i64>,
        /// Random seed; the same seed gives the same journeys.
        #[arg(long, default_value_t = 42)]
        seed: u64,
        /// Share of invalid lines mixed in (0–1).
        #[arg(long, default_value_t = 0.0)]
        bad_ratio: f64,
        /// Share of events sent twice (0–1).
        #[arg(long, default_value_t = 0.0)]
        duplicate_ratio: f64,
        /// Write NDJSON here (`-` for stdout).
        #[arg(long)]
        output: String,
    },
}

fn parse_time(s: &str) -> Result<i64, String> {
    parse_rfc3339_ms(s).ok_or_else(|| format!("not an RFC 3339 time: {s:?}"))
}

fn load_config(path: Option<&PathBuf>) -> Result<Config, ExitCode> {
    let cfg = match path {
        Some(p) => Config::load(p),
        None => Config::from_env(),
    };
    cfg.map_err(|e| {
        eprintln!("churnwatch: {e}");
        ExitCode::from(2)
    })
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Replay {
            input,
            output,
            dlq,
            until,
            state,
            config,
            quiet,
        } => {
            let cfg = match load_config(config.as_ref()) {
                Ok(c) => c,
                Err(code) => return code,
            };
            logging::init(&cfg.log.level, cfg.log.json);
            let opts = ReplayOptions {
                input,
                output,
                dlq,
                until_ms: until,
                state,
                progress: !quiet,
            };
            match replay::run(&opts, &cfg, Arc::new(Metrics::new())) {
                Ok(summary) => {
                    if !quiet {
                        eprintln!("{summary}");
                    }
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("churnwatch replay: {e}");
                    ExitCode::FAILURE
                }
            }
        }
        Command::Simulate {
            members,
            days,
            end,
            seed,
            bad_ratio,
            duplicate_ratio,
            output,
        } => match run_simulate(
            members,
            days,
            end,
            seed,
            bad_ratio,
            duplicate_ratio,
            &output,
        ) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("churnwatch simulate: {e:#}");
                ExitCode::FAILURE
            }
        },
    }
}

fn run_simulate(
    members: usize,
    days: u32,
    end: Option<i64>,
    seed: u64,
    bad_ratio: f64,
    duplicate_ratio: f64,
    output: &str,
) -> anyhow::Result<()> {
    let opts = SimOptions {
        members,
        days,
        end_ms: end.unwrap_or_else(|| chrono::Utc::now().timestamp_millis()),
        seed,
        bad_ratio,
        duplicate_ratio,
    };
    let events = simulate::generate(&opts);
    if output == "-" {
        simulate::write_ndjson(&events, &mut std::io::stdout().lock())?;
    } else {
        let f = std::fs::File::create(output).with_context(|| format!("cannot create {output}"))?;
        let mut w = std::io::BufWriter::new(f);
        simulate::write_ndjson(&events, &mut w)?;
        std::io::Write::flush(&mut w)?;
    }
    eprintln!(
        "wrote {} events for {members} members to {output}",
        events.len()
    );
    Ok(())
}
