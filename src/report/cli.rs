//! `churnwatch report` command line.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Args;

use super::Builder;
use crate::config::Config;

#[derive(Debug, Args)]
pub struct ReportArgs {
    /// Alerts NDJSON file (SPEC §2; `replay --output`, `bootstrap --alerts`,
    /// or `peek` of the alert topic), `-` for stdin.
    #[arg(long, required_unless_present = "brokers", conflicts_with = "brokers")]
    alerts: Option<String>,
    /// Read the alert topic at these bootstrap servers instead of a file.
    #[arg(long)]
    brokers: Option<String>,
    /// Alert topic (with --brokers).
    #[arg(long, default_value = "churn-alerts")]
    topic: String,
    /// Config file for the Kafka client settings (TLS, SASL) with --brokers.
    #[arg(long)]
    config: Option<PathBuf>,
    /// A return counts within this many days of the alert [default: the
    /// alerts' `horizon_days`, else 30].
    #[arg(long)]
    horizon_days: Option<f64>,
    /// Write every row (each signal × segment too) as CSV to stdout instead
    /// of the table.
    #[arg(long)]
    csv: bool,
    /// Also write a static HTML page with a chart here.
    #[arg(long)]
    html: Option<PathBuf>,
}

impl ReportArgs {
    pub fn run(self) -> ExitCode {
        match self.report() {
            Ok(()) => ExitCode::SUCCESS,
            Err((code, e)) => {
                eprintln!("churnwatch report: {e}");
                ExitCode::from(code)
            }
        }
    }

    fn report(self) -> Result<(), (u8, String)> {
        let fail = |e: &dyn std::fmt::Display| (1, e.to_string());
        if self.horizon_days.is_some_and(|h| h.is_nan() || h <= 0.0) {
            return Err((2, "--horizon-days must be positive".into()));
        }
        let mut b = Builder::default();
        if let Some(path) = &self.alerts {
            if path == "-" {
                b.read(std::io::stdin().lock(), "stdin")
                    .map_err(|e| fail(&e))?;
            } else {
                let f = std::fs::File::open(path)
                    .map_err(|e| fail(&format!("--alerts {path}: {e}")))?;
                b.read(std::io::BufReader::new(f), path)
                    .map_err(|e| fail(&e))?;
            }
        } else {
            let mut cfg = match &self.config {
                Some(p) => Config::load(p),
                None => Config::from_env(),
            }
            .map_err(|e| (2, e.to_string()))?;
            if let Some(brokers) = &self.brokers {
                cfg.kafka.brokers = brokers.clone();
            }
            super::source::read_topic(&cfg, &self.topic, &mut b).map_err(|e| fail(&e))?;
        }
        let report = b.finish(self.horizon_days);
        if self.csv {
            report
                .write_csv(std::io::stdout().lock())
                .map_err(|e| fail(&e))?;
        } else {
            print!("{}", report.table());
        }
        if let Some(path) = &self.html {
            std::fs::write(path, super::html::render(&report))
                .map_err(|e| fail(&format!("--html {}: {e}", path.display())))?;
        }
        Ok(())
    }
}
