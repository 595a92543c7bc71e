//! A real Kafka-protocol broker for tests: a tansu process with SQLite
//! storage in a temporary directory (or in memory, where tansu creates a
//! topic that a metadata request names, as Apache Kafka does by default),
//! on a free port, killed on drop.

use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub struct Broker {
    pub addr: String,
    port: u16,
    child: Child,
    dir: tempfile::TempDir,
    storage: &'static str,
}

fn spawn(dir: &std::path::Path, port: u16, storage: &str) -> Child {
    let url = format!("tcp://127.0.0.1:{port}");
    Command::new(tansu())
        .args([
            "broker",
            "--listener-url",
            &url,
            "--advertised-listener-url",
            &url,
            "--storage-engine",
            storage,
        ])
        .current_dir(dir)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start tansu")
}

fn wait_listening(addr: &str) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while TcpStream::connect(addr).is_err() {
        assert!(Instant::now() < deadline, "tansu did not listen on {addr}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The tansu binary: `$TANSU`, then `PATH`, then `~/.cargo/bin`.
/// `scripts/test.sh` installs it when missing.
pub fn tansu() -> PathBuf {
    if let Ok(p) = std::env::var("TANSU") {
        return p.into();
    }
    for dir in std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default()) {
        let p = dir.join("tansu");
        if p.exists() {
            return p;
        }
    }
    let home = std::env::var("CARGO_HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|_| PathBuf::from(std::env::var("HOME").unwrap()).join(".cargo"));
    let p = home.join("bin/tansu");
    assert!(
        p.exists(),
        "tansu not found: run `bash scripts/ensure-tansu.sh` (or scripts/test.sh)"
    );
    p
}

/// A port nothing listens on, for a process a test starts to listen on.
/// Taken below the kernel's ephemeral range (32768 and up on Linux): a port
/// `bind(0)` hands out returns to that range once its listener is dropped,
/// and an outgoing connection (a Kafka client's) could take it before the
/// process meant to listen on it did (CI saw `run` fail with "Address
/// already in use"). Within a test binary each call moves on to another
/// port; the process id spreads test binaries apart.
pub fn free_port() -> u16 {
    use std::sync::atomic::{AtomicU32, Ordering};
    const LOW: u32 = 20_000;
    const SPAN: u32 = 12_000; // up to 32,000
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let start = std::process::id().wrapping_mul(2_654_435_761);
    for _ in 0..SPAN {
        // 7,919 is prime to SPAN: every port comes round before any again.
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let port = (LOW + start.wrapping_add(n.wrapping_mul(7_919)) % SPAN) as u16;
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    panic!("no free port between {LOW} and {}", LOW + SPAN);
}

impl Broker {
    /// tansu with SQLite storage: what survives a broker restart.
    pub fn start() -> Broker {
        Broker::start_with("sqlite://tansu.db")
    }

    /// tansu with `memory://` storage: auto-creates topics on metadata
    /// requests (with 4 partitions), like Apache Kafka's defaults.
    pub fn start_memory() -> Broker {
        Broker::start_with("memory://tansu/")
    }

    fn start_with(storage: &'static str) -> Broker {
        let dir = tempfile::tempdir().unwrap();
        let port = free_port();
        let child = spawn(dir.path(), port, storage);
        let addr = format!("127.0.0.1:{port}");
        wait_listening(&addr);
        Broker {
            addr,
            port,
            child,
            dir,
            storage,
        }
    }

    /// Kills the broker (an outage); its data stays on disk.
    pub fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Starts it again on the same port and storage.
    pub fn restart(&mut self) {
        self.child = spawn(self.dir.path(), self.port, self.storage);
        wait_listening(&self.addr);
    }
}

impl Broker {
    /// Creates `topic` with `partitions` partitions (test set-up, not
    /// churnwatch's own topic creation).
    pub fn create_topic(&self, topic: &str, partitions: i32) {
        use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
        use rdkafka::client::DefaultClientContext;
        let admin: AdminClient<DefaultClientContext> = rdkafka::ClientConfig::new()
            .set("bootstrap.servers", &self.addr)
            .create()
            .unwrap();
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let res = rt
            .block_on(admin.create_topics(
                &[NewTopic::new(
                    topic,
                    partitions,
                    TopicReplication::Fixed(-1),
                )],
                &AdminOptions::new().operation_timeout(Some(Duration::from_secs(20))),
            ))
            .unwrap();
        for r in res {
            r.unwrap();
        }
    }

    /// A consumer of `partitions` of `topic` from the beginning, assigned
    /// (outside any group's assignment; it commits nothing).
    pub fn reader(
        &self,
        topic: &str,
        partitions: impl IntoIterator<Item = i32>,
    ) -> rdkafka::consumer::BaseConsumer {
        self.reader_with(topic, partitions, &[])
    }

    /// [`Broker::reader`] that reports the end of each partition
    /// (`KafkaError::PartitionEOF`) and waits at most 20 ms a fetch: for
    /// reading a topic to its end.
    pub fn reader_to_end(
        &self,
        topic: &str,
        partitions: impl IntoIterator<Item = i32>,
    ) -> rdkafka::consumer::BaseConsumer {
        self.reader_with(
            topic,
            partitions,
            &[
                ("enable.partition.eof", "true"),
                ("fetch.wait.max.ms", "20"),
            ],
        )
    }

    fn reader_with(
        &self,
        topic: &str,
        partitions: impl IntoIterator<Item = i32>,
        settings: &[(&str, &str)],
    ) -> rdkafka::consumer::BaseConsumer {
        use rdkafka::consumer::Consumer;
        let mut cfg = rdkafka::ClientConfig::new();
        cfg.set("bootstrap.servers", &self.addr)
            .set("group.id", "test-reader")
            .set("enable.auto.commit", "false");
        for (k, v) in settings {
            cfg.set(*k, *v);
        }
        let consumer: rdkafka::consumer::BaseConsumer = cfg.create().unwrap();
        let mut tpl = rdkafka::TopicPartitionList::new();
        for p in partitions {
            tpl.add_partition_offset(topic, p, rdkafka::Offset::Beginning)
                .unwrap();
        }
        consumer.assign(&tpl).unwrap();
        consumer
    }

    /// Partition counts of every topic (a request naming no topic creates
    /// none).
    pub fn topic_partitions(&self) -> std::collections::BTreeMap<String, usize> {
        use rdkafka::consumer::Consumer;
        let c: rdkafka::consumer::BaseConsumer = rdkafka::ClientConfig::new()
            .set("bootstrap.servers", &self.addr)
            .create()
            .unwrap();
        let md = c.fetch_metadata(None, Duration::from_secs(10)).unwrap();
        md.topics()
            .iter()
            .filter(|t| t.error().is_none())
            .map(|t| (t.name().to_string(), t.partitions().len()))
            .collect()
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
