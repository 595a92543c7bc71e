//! The `churnwatch` command line (SPEC §6).

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context;
use clap::{Parser, Subcommand};

use churnwatch::config::Config;
use churnwatch::event::{not_after_latest, parse_rfc3339_ms};
use churnwatch::pipeline;
use churnwatch::replay::{self, ReplayOptions};
use churnwatch::simulate::{self, SimOptions};
use churnwatch::telemetry::{http, logging, Metrics};

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
    /// Run the Kafka pipeline: consume member events, keep state in RocksDB,
    /// publish alerts, serve /metrics, /healthz and /readyz.
    Run {
        /// Config file (SPEC §8); `kafka.brokers` is required here or in
        /// CHURNWATCH_KAFKA_BROKERS.
        #[arg(long)]
        config: Option<PathBuf>,
        /// Load and validate the config (with environment overrides), print
        /// it, and exit without connecting to anything.
        #[arg(long)]
        check_config: bool,
    },
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
        /// Spread members over this many partitions, as the input topic's
        /// producers would (`kafka.partitioner`), each with its own clock:
        /// the alerts of `run` over a topic of that many partitions.
        #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=100_000))]
        partitions: u32,
        /// Engine threads to spread the partitions over [default:
        /// `engine.threads`, one per core]. The alerts depend on
        /// --partitions, never on this (their order in the file may).
        #[arg(long, value_parser = clap::value_parser!(u16).range(1..=1024))]
        threads: Option<u16>,
        /// No progress bar or summary on stderr.
        #[arg(long, short)]
        quiet: bool,
    },
    /// Build `run`'s state directory (`state.dir`) from a history file, as
    /// `run` would have built it from the input topic, and record where
    /// `run` starts on each partition: the first record after --until.
    Bootstrap {
        /// Config file (SPEC §8): brokers, topics, `state.dir`,
        /// `kafka.partitioner`.
        #[arg(long)]
        config: Option<PathBuf>,
        /// History NDJSON file (SPEC §1 events), `-` for stdin.
        #[arg(long)]
        input: String,
        /// Where the history ends (RFC 3339): later history lines are
        /// skipped, the topic delivers them.
        #[arg(long, value_parser = parse_time)]
        until: i64,
        /// Alerts raised while bootstrapping (not published to Kafka).
        #[arg(long, default_value = "bootstrap-alerts.ndjson")]
        alerts: PathBuf,
        /// Rejected history lines [default: ALERTS.dlq].
        #[arg(long)]
        dlq: Option<PathBuf>,
        /// No progress bar or summary on stderr.
        #[arg(long, short)]
        quiet: bool,
    },
    /// Fit the BG/NBD population parameters (r, alpha, a, b; weeks) from the
    /// purchase events of an NDJSON file; other lines are ignored.
    Fit {
        /// Input NDJSON file, `-` for stdin.
        #[arg(long)]
        input: String,
        /// End of the calibration period (RFC 3339) [default: the last
        /// purchase day in the input]. Later purchases are ignored.
        #[arg(long, value_parser = parse_time)]
        calibration_end: Option<i64>,
        /// Write the parameters here as a `[risk]` config section.
        #[arg(long)]
        output: Option<PathBuf>,
        /// `pareto_nbd` (Schmittlein et al. 1987, drop-out at any time; the
        /// default model of `[risk]`), `mbgnbd` (Batislam et al. 2007,
        /// drop-out right after a purchase, the first included) or `bgnbd`
        /// (Fader, Hardie & Lee 2005, drop-out after a repeat purchase).
        #[arg(long, default_value = "pareto_nbd")]
        model: String,
    },
    /// Print the records of a topic as lines (alerts, dead letters), for a
    /// quick look without other Kafka tools.
    Peek {
        /// Bootstrap servers [default: the config's `kafka.brokers`].
        #[arg(long, env = "CHURNWATCH_KAFKA_BROKERS")]
        brokers: Option<String>,
        /// Config file whose `[kafka]` brokers and `[kafka.client]` settings
        /// (TLS, SASL) to connect with.
        #[arg(long)]
        config: Option<PathBuf>,
        /// Topic to read from the beginning.
        #[arg(long, default_value = "churn-alerts")]
        topic: String,
        /// Stop after this many records.
        #[arg(long, default_value_t = 10)]
        max: usize,
        /// Stop after this many seconds without a new record.
        #[arg(long, default_value_t = 5)]
        idle_secs: u64,
    },
    /// Campaign uplift from the alert stream: per signal and segment,
    /// treated vs holdout members who came back, with a 95% interval.
    Report(churnwatch::report::cli::ReportArgs),
    /// Look into a state directory: partitions, clocks, offsets and the
    /// records moved to the quarantine.
    State {
        #[command(subcommand)]
        command: churnwatch::inspect::StateCommand,
    },
    /// The member view: every member's stage, segment, risk and reasons.
    Members {
        #[command(subcommand)]
        command: churnwatch::members::cli::MembersCommand,
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
        #[arg(long, required_unless_present = "brokers")]
        output: Option<String>,
        /// Produce to Kafka at these bootstrap servers instead of a file.
        #[arg(long, conflicts_with = "output")]
        brokers: Option<String>,
        /// Topic to produce to (with --brokers).
        #[arg(long, default_value = "member-events")]
        topic: String,
        /// Events per second when producing (0: as fast as possible).
        #[arg(long, default_value_t = 0)]
        rate: u64,
    },
}

fn parse_time(s: &str) -> Result<i64, String> {
    let ms = parse_rfc3339_ms(s).ok_or_else(|| format!("not an RFC 3339 time: {s:?}"))?;
    not_after_latest(ms).map_err(|why| format!("{s:?} {why}"))
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
        Command::Fit {
            input,
            calibration_end,
            output,
            model,
        } => {
            let Some(kind) = churnwatch::risk::bgnbd::ModelKind::parse(&model) else {
                eprintln!(
                    "churnwatch fit: --model must be pareto_nbd, mbgnbd or bgnbd, not {model:?}"
                );
                return ExitCode::from(2);
            };
            match run_fit(&input, calibration_end, output.as_deref(), kind) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("churnwatch fit: {e:#}");
                    ExitCode::FAILURE
                }
            }
        }
        Command::Peek {
            brokers,
            config,
            topic,
            max,
            idle_secs,
        } => {
            let mut cfg = match load_config(config.as_ref()) {
                Ok(c) => c,
                Err(code) => return code,
            };
            if let Some(b) = brokers {
                cfg.kafka.brokers = b;
            }
            if let Err(e) = cfg.require_brokers() {
                eprintln!("churnwatch peek: {e} (or pass --brokers)");
                return ExitCode::from(2);
            }
            match peek(&cfg, &topic, max, idle_secs) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("churnwatch peek: {e:#}");
                    ExitCode::FAILURE
                }
            }
        }
        Command::Run {
            config,
            check_config,
        } => {
            let cfg = match load_config(config.as_ref()) {
                Ok(c) => c,
                Err(code) => return code,
            };
            if let Err(e) = cfg.require_brokers() {
                eprintln!("churnwatch: {e}");
                return ExitCode::from(2);
            }
            if check_config {
                println!(
                    "config ok: brokers {}, group {}, topics {:?} -> {}, state {}, http {}",
                    cfg.kafka.brokers,
                    cfg.kafka.group_id,
                    cfg.kafka.input_topics,
                    cfg.kafka.alert_topic,
                    cfg.state.dir.display(),
                    cfg.http.listen
                );
                return ExitCode::SUCCESS;
            }
            logging::init(&cfg.log.level, cfg.log.json);
            // An unreadable token file is a config error: caught before start.
            let member_token = match churnwatch::members::api::token_for(&cfg.http) {
                Ok(t) => t,
                Err(e) => {
                    eprintln!("churnwatch: {e}");
                    return ExitCode::from(2);
                }
            };
            match run_pipeline(&cfg, member_token) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    tracing::error!(error = %format!("{e:#}"), "churnwatch run failed");
                    eprintln!("churnwatch run: {e:#}");
                    ExitCode::FAILURE
                }
            }
        }
        Command::Replay {
            input,
            output,
            dlq,
            until,
            state,
            config,
            partitions,
            threads,
            quiet,
        } => {
            let cfg = match load_config(config.as_ref()) {
                Ok(c) => c,
                Err(code) => return code,
            };
            logging::init(&cfg.log.level, cfg.log.json);
            let opts = ReplayOptions {
                dlq,
                until_ms: until,
                state,
                progress: !quiet,
                partitions,
                partitioner: cfg.kafka.partitioner,
                threads: threads.map_or(0, usize::from),
                ..ReplayOptions::new(input, output)
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
        Command::Members { command } => command.run(),
        Command::State { command } => command.run(),
        Command::Report(args) => args.run(),
        Command::Bootstrap {
            config,
            input,
            until,
            alerts,
            dlq,
            quiet,
        } => {
            let cfg = match load_config(config.as_ref()) {
                Ok(c) => c,
                Err(code) => return code,
            };
            logging::init(&cfg.log.level, cfg.log.json);
            let opts = churnwatch::bootstrap::BootstrapOptions {
                input,
                until_ms: until,
                alerts,
                dlq,
                progress: !quiet,
            };
            let result = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(1)
                .enable_all()
                .build()
                .context("tokio runtime")
                .and_then(|rt| {
                    churnwatch::bootstrap::run(&opts, &cfg, Arc::new(Metrics::new()), rt.handle())
                        .map_err(anyhow::Error::from)
                });
            match result {
                Ok(summary) => {
                    if !quiet {
                        eprintln!("{summary}");
                    }
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("churnwatch bootstrap: {e:#}");
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
            brokers,
            topic,
            rate,
        } => match run_simulate(
            SimOptions {
                members,
                days,
                end_ms: end.unwrap_or_else(|| chrono::Utc::now().timestamp_millis()),
                seed,
                bad_ratio,
                duplicate_ratio,
            },
            output.as_deref(),
            brokers.as_deref().map(|b| (b, topic.as_str(), rate)),
        ) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("churnwatch simulate: {e:#}");
                ExitCode::FAILURE
            }
        },
    }
}

fn run_fit(
    input: &str,
    calibration_end: Option<i64>,
    output: Option<&std::path::Path>,
    kind: churnwatch::risk::bgnbd::ModelKind,
) -> anyhow::Result<()> {
    use churnwatch::risk::fit;
    let (customers, summary) = if input == "-" {
        fit::summarise(std::io::stdin().lock(), calibration_end)?
    } else {
        let f = std::fs::File::open(input).with_context(|| format!("cannot open {input}"))?;
        fit::summarise(std::io::BufReader::new(f), calibration_end)?
    };
    let report = fit::fit(kind, &customers)?;
    let p = report.params;
    let end = churnwatch::event::format_rfc3339_ms(
        summary.calibration_end_day * churnwatch::event::DAY_MS,
    );
    println!("model = {kind}");
    println!(
        "members = {} ({} repeat buyers, {} purchases; {} other lines ignored); calibration end {end}",
        summary.members, summary.repeat_buyers, summary.purchases, summary.ignored_lines
    );
    let se = |i: usize| {
        report
            .std_errors
            .map_or(String::new(), |s| format!("  (se {:.4})", s[i]))
    };
    // Pareto/NBD's drop-out rate Gamma(s, beta) travels in `a`, `b`.
    let (a_name, b_name) = match kind {
        churnwatch::risk::bgnbd::ModelKind::ParetoNbd => ("s", "beta"),
        _ => ("a", "b"),
    };
    println!("r = {:.4}{}", p.r, se(0));
    println!("alpha = {:.4}{}", p.alpha, se(1));
    println!("{a_name} = {:.4}{}", p.a, se(2));
    println!("{b_name} = {:.4}{}", p.b, se(3));
    println!("log-likelihood = {:.4}", report.log_likelihood);
    println!("iterations = {}", report.iterations);
    if let Some(path) = output {
        let text = format!(
            "# Fitted by `churnwatch fit` ({} members, calibration end {end},\n# log-likelihood {:.4}); time unit weeks.\n[risk]\nmodel = \"{kind}\"\nr = {}\nalpha = {}\n{a_name} = {}\n{b_name} = {}\n",
            summary.members, report.log_likelihood, p.r, p.alpha, p.a, p.b
        );
        std::fs::write(path, text).with_context(|| format!("cannot write {}", path.display()))?;
    }
    Ok(())
}

fn peek(cfg: &Config, topic: &str, max: usize, idle_secs: u64) -> anyhow::Result<()> {
    use rdkafka::consumer::{BaseConsumer, Consumer};
    use rdkafka::message::{Headers, Message};
    use std::io::Write;
    let consumer: BaseConsumer = churnwatch::pipeline::client_config(cfg)
        .set("group.id", "churnwatch-peek")
        .set("enable.auto.commit", "false")
        .create()?;
    let md = consumer.fetch_metadata(Some(topic), std::time::Duration::from_secs(10))?;
    let mut tpl = rdkafka::TopicPartitionList::new();
    for t in md.topics() {
        for p in t.partitions() {
            tpl.add_partition_offset(topic, p.id(), rdkafka::Offset::Beginning)?;
        }
    }
    consumer.assign(&tpl)?;
    let mut out = std::io::stdout().lock();
    let mut seen = 0;
    let mut last = std::time::Instant::now();
    while seen < max && last.elapsed().as_secs() < idle_secs {
        let Some(m) = consumer.poll(std::time::Duration::from_millis(200)) else {
            continue;
        };
        let m = m?;
        last = std::time::Instant::now();
        seen += 1;
        if let Some(h) = m.headers() {
            for h in h.iter().filter(|h| h.key.starts_with("churnwatch.")) {
                let v = h.value.map(String::from_utf8_lossy).unwrap_or_default();
                write!(out, "[{}={}] ", h.key, v)?;
            }
        }
        out.write_all(m.payload().unwrap_or_default())?;
        out.write_all(b"\n")?;
    }
    Ok(())
}

fn run_pipeline(cfg: &Config, member_token: Option<String>) -> anyhow::Result<()> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    let metrics = Arc::new(Metrics::new());
    let control = pipeline::Control::default();
    let member_api = match member_token {
        Some(token) => {
            churnwatch::members::api::router(control.members.clone(), cfg.engine(), token)
        }
        None => axum::Router::new(),
    };
    rt.block_on(http::serve(
        &cfg.http.listen,
        metrics.clone(),
        control.ready.clone(),
        member_api,
    ))
    .with_context(|| format!("http.listen: cannot listen on {}", cfg.http.listen))?;
    let shutdown = control.shutdown.clone();
    rt.spawn(async move {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .expect("SIGTERM handler");
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
        tracing::info!("shutting down: finishing the batch and draining the outbox");
        shutdown.store(true, std::sync::atomic::Ordering::Relaxed);
    });
    pipeline::run(cfg, metrics, control, rt.handle())?;
    Ok(())
}

fn run_simulate(
    opts: SimOptions,
    output: Option<&str>,
    kafka: Option<(&str, &str, u64)>,
) -> anyhow::Result<()> {
    let events = simulate::generate(&opts);
    let members = opts.members;
    if let Some((brokers, topic, rate)) = kafka {
        simulate::produce(&events, brokers, topic, rate)?;
        eprintln!(
            "produced {} events for {members} members to {topic} at {brokers}",
            events.len()
        );
        return Ok(());
    }
    let output = output.unwrap_or("-");
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
