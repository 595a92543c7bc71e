//! A `churnwatch run` process under test and what it serves over HTTP.

use std::collections::BTreeSet;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use rdkafka::message::Message;

use super::bin;
use super::broker::Broker;

pub fn start_run(cfg: &Path) -> Run {
    Run(Command::new(bin())
        .args(["run", "--config", cfg.to_str().unwrap()])
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("start churnwatch run"))
}

/// A `churnwatch run` process that is killed when dropped, so a failing
/// assertion does not leave it running (holding the test's stderr open and
/// the broker busy) after the test has ended.
pub struct Run(pub Child);

impl std::ops::Deref for Run {
    type Target = Child;
    fn deref(&self) -> &Child {
        &self.0
    }
}

impl std::ops::DerefMut for Run {
    fn deref_mut(&mut self) -> &mut Child {
        &mut self.0
    }
}

impl Drop for Run {
    fn drop(&mut self) {
        if let Ok(None) = self.0.try_wait() {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

pub fn http_get(port: u16, path: &str) -> (u16, String) {
    http_get_with_token(port, path, None)
}

/// `GET path`, with `Authorization: Bearer token` when given. Returns the
/// status (0 if nothing answered) and the whole response text.
pub fn http_get_with_token(port: u16, path: &str, token: Option<&str>) -> (u16, String) {
    let Ok(mut s) = std::net::TcpStream::connect(("127.0.0.1", port)) else {
        return (0, String::new());
    };
    let auth = token.map_or(String::new(), |t| format!("Authorization: Bearer {t}\r\n"));
    let _ = write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: x\r\n{auth}Connection: close\r\n\r\n"
    );
    let mut text = String::new();
    let _ = s.read_to_string(&mut text);
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    (status, text)
}

pub fn wait_ready(port: u16) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while http_get(port, "/readyz").0 != 200 {
        assert!(Instant::now() < deadline, "churnwatch never became ready");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Waits until metric `name` on `port` reaches `at_least`; after `within`,
/// fails the test with `what`.
pub fn wait_for_metric(port: u16, name: &str, at_least: f64, within: Duration, what: &str) {
    let deadline = Instant::now() + within;
    while metric(port, name) < at_least {
        assert!(Instant::now() < deadline, "{what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Waits until the metric is exactly `value` (a gauge that must come back
/// down, too), failing with `what` after `within`.
pub fn wait_for_metric_eq(port: u16, name: &str, value: f64, within: Duration, what: &str) {
    let deadline = Instant::now() + within;
    while metric(port, name) != value {
        assert!(Instant::now() < deadline, "{what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

pub fn metric(port: u16, name: &str) -> f64 {
    let (_, m) = http_get(port, "/metrics");
    m.lines()
        .find_map(|l| l.strip_prefix(name).and_then(|r| r.strip_prefix(' ')))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0.0)
}

/// Sum of every series of a metric family (labels or not).
pub fn metric_sum(port: u16, family: &str) -> f64 {
    let (_, m) = http_get(port, "/metrics");
    m.lines()
        .filter(|l| {
            l.strip_prefix(family)
                .is_some_and(|r| r.starts_with(' ') || r.starts_with('{'))
        })
        .filter_map(|l| l.rsplit(' ').next()?.trim().parse::<f64>().ok())
        .sum()
}

/// SIGTERM: the graceful shutdown an orchestrator sends.
pub fn terminate(child: &Child) {
    Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
}

/// A `run` config for tests: idle advance off (the clock follows event
/// time only), short group timeouts for tansu, `extra` TOML appended.
pub fn config_file(dir: &Path, broker: &Broker, http_port: u16, extra: &str) -> PathBuf {
    let cfg = dir.join("churnwatch.toml");
    std::fs::write(
        &cfg,
        format!(
            r#"
[kafka]
brokers = "{brokers}"
group_id = "test-group"
[kafka.client]
"session.timeout.ms" = "6000"
"heartbeat.interval.ms" = "500"
[state]
dir = "{state}"
[http]
listen = "127.0.0.1:{http_port}"
[time]
idle_advance = false
[pipeline]
topic_partitions = 1
batch_max_messages = 700
shutdown_grace_ms = 5000
[log]
level = "warn"
{extra}
"#,
            brokers = broker.addr,
            state = dir.join("state").display(),
        ),
    )
    .unwrap();
    cfg
}

/// Every alert on the (one-partition) alert topic, once `want` distinct ids
/// arrived and nothing more came for a few seconds.
pub fn read_alerts(broker: &Broker, want: usize) -> Vec<serde_json::Value> {
    let c = broker.reader("churn-alerts", [0]);
    let mut out: Vec<serde_json::Value> = Vec::new();
    let mut ids = BTreeSet::new();
    let mut deadline = Instant::now() + Duration::from_secs(120);
    let mut settling = false;
    while Instant::now() < deadline {
        if let Some(Ok(m)) = c.poll(Duration::from_millis(200)) {
            let a: serde_json::Value = serde_json::from_slice(m.payload().unwrap()).unwrap();
            ids.insert(a["alert_id"].as_str().unwrap().to_string());
            out.push(a);
        }
        if !settling && ids.len() >= want {
            settling = true;
            deadline = Instant::now() + Duration::from_secs(3);
        }
    }
    out
}
