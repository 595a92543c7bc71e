//! A full disk under the state store, for real: `run` with its state on a
//! small tmpfs that is filled up mid-stream. Consumption pauses, /readyz
//! says why, write errors are counted; once space is freed it resumes by
//! itself and nothing consumed is lost or published with other content.
//! Needs root (to mount a tmpfs); skipped with a note otherwise.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use common::broker::Broker;
use common::run::*;
use common::*;

/// A tmpfs of `mb` MiB mounted at a fresh directory, unmounted on drop.
struct Tmpfs(PathBuf);

impl Tmpfs {
    fn mount(mb: u32) -> Option<Tmpfs> {
        let dir = tempfile::tempdir().ok()?.keep();
        let ok = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={mb}m"), "tmpfs"])
            .arg(&dir)
            .status()
            .is_ok_and(|s| s.success());
        ok.then_some(Tmpfs(dir))
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).status();
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Fills the file system of `dir` with one file, until no space is left.
fn fill(dir: &Path) -> PathBuf {
    use std::io::Write;
    let path = dir.join("filler");
    let mut f = std::fs::File::create(&path).unwrap();
    let chunk = vec![0u8; 1 << 20];
    while f.write_all(&chunk).is_ok() {}
    let _ = f.flush();
    path
}

fn simulate(dir: &Path, name: &str, seed: &str) -> PathBuf {
    let out = dir.join(name);
    churnwatch(&[
        "simulate",
        "--members",
        "200",
        "--end",
        SIM_END,
        "--seed",
        seed,
        "--output",
        out.to_str().unwrap(),
    ]);
    out
}

/// Members enough that no space RocksDB frees can absorb their writes. A
/// full disk fails a write only if the write needs space, and RocksDB
/// frees some now and then, deleting files it no longer needs (a log once
/// its memtables are flushed, an old info log): a few hundred KB here,
/// where a 200-member stream is ~170 KB of write-ahead log in one commit,
/// half that a partition. Whether its writes failed depended on what was
/// deleted around the fill (CI once waited 60 s for a failure that never
/// came). Each new member with one visit is ~75 bytes of log: 100,000 of
/// them are ~3.7 MB a partition even over two partitions and in one
/// commit, more than the whole state directory holds when the disk fills.
fn flood(dir: &Path, name: &str) -> PathBuf {
    use std::io::Write;
    let out = dir.join(name);
    let mut w = std::io::BufWriter::new(std::fs::File::create(&out).unwrap());
    for i in 0..100_000 {
        writeln!(
            w,
            r#"{{"event_id":"flood-{i}","member_id":"flood-{i:06}","type":"visit","ts":"{SIM_END}"}}"#
        )
        .unwrap();
    }
    w.flush().unwrap();
    out
}

fn produce_file(broker: &Broker, path: &Path) -> usize {
    use rdkafka::producer::{BaseRecord, DefaultProducerContext, Producer, ThreadedProducer};
    let p: ThreadedProducer<DefaultProducerContext> = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", &broker.addr)
        .set("enable.idempotence", "true")
        .set("linger.ms", "20")
        .create()
        .unwrap();
    let text = std::fs::read_to_string(path).unwrap();
    let mut n = 0;
    for l in text.lines() {
        let mut rec = Some(BaseRecord::<str, str>::to("member-events").payload(l));
        while let Some(r) = rec.take() {
            if let Err((_, r)) = p.send(r) {
                rec = Some(r);
                std::thread::sleep(Duration::from_millis(5));
            }
        }
        n += 1;
    }
    p.flush(Duration::from_secs(60)).unwrap();
    n
}

fn consumed(port: u16) -> f64 {
    metric_sum(port, "churnwatch_events_consumed_total")
        + metric_sum(port, "churnwatch_events_duplicate_total")
        + metric_sum(port, "churnwatch_events_rejected_total")
}

#[test]
fn a_full_disk_pauses_consumption_and_it_resumes_by_itself_once_space_is_freed() {
    let Some(disk) = Tmpfs::mount(128) else {
        eprintln!("skipped: cannot mount a tmpfs here (needs root)");
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let broker = Broker::start();
    broker.create_topic("member-events", 1);
    let port = common::broker::free_port();
    let cfg = config_file(dir.path(), &broker, port, "");
    let state = disk.0.join("state");
    let text = std::fs::read_to_string(&cfg).unwrap().replace(
        &format!("dir = \"{}\"", dir.path().join("state").display()),
        &format!(
            "dir = \"{}\"\nwrite_buffer_mb = 2\nblock_cache_mb = 8",
            state.display()
        ),
    );
    std::fs::write(&cfg, text).unwrap();
    let first = simulate(dir.path(), "first.ndjson", "3");
    let second = simulate(dir.path(), "second.ndjson", "4");
    let flooding = flood(dir.path(), "flood.ndjson");

    let mut run = start_run(&cfg);
    wait_ready(port);
    let n1 = produce_file(&broker, &first);
    let deadline = Instant::now() + Duration::from_secs(120);
    while consumed(port) < n1 as f64 {
        assert!(Instant::now() < deadline, "first part not consumed");
        std::thread::sleep(Duration::from_millis(200));
    }

    // The disk fills up; the rest of the stream arrives.
    let filler = fill(&disk.0);
    let n2 = produce_file(&broker, &second) + produce_file(&broker, &flooding);
    let deadline = Instant::now() + Duration::from_secs(60);
    while metric(port, "churnwatch_state_write_failing") != 1.0 {
        assert!(
            Instant::now() < deadline,
            "writes never failed on a full disk ({} consumed)",
            consumed(port)
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let (status, body) = http_get(port, "/readyz");
    assert_eq!(status, 503);
    assert!(body.contains("refuses writes"), "{body}");
    assert!(metric(port, "churnwatch_state_write_errors_total") >= 1.0);
    std::thread::sleep(Duration::from_secs(3));
    assert!(
        run.try_wait().unwrap().is_none(),
        "run stopped on a full disk"
    );
    let paused_at = consumed(port);
    assert!(paused_at < (n1 + n2) as f64, "consumed everything anyway");

    // Space is freed: it resumes by itself and catches up.
    std::fs::remove_file(filler).unwrap();
    let deadline = Instant::now() + Duration::from_secs(120);
    while consumed(port) < (n1 + n2) as f64 || metric(port, "churnwatch_outbox_depth") > 0.0 {
        assert!(
            Instant::now() < deadline,
            "did not resume: {} of {} consumed",
            consumed(port),
            n1 + n2
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    assert_eq!(metric(port, "churnwatch_state_write_failing"), 0.0);
    assert_eq!(http_get(port, "/readyz").0, 200);
    assert_eq!(
        consumed(port),
        (n1 + n2) as f64,
        "every message exactly once"
    );

    // The alerts are exactly those of a replay of the same stream.
    let both = dir.path().join("both.ndjson");
    let mut all = std::fs::read_to_string(&first).unwrap();
    all.push_str(&std::fs::read_to_string(&second).unwrap());
    all.push_str(&std::fs::read_to_string(&flooding).unwrap());
    std::fs::write(&both, all).unwrap();
    let out = dir.path().join("replay.ndjson");
    churnwatch(&[
        "replay",
        "--input",
        both.to_str().unwrap(),
        "--output",
        out.to_str().unwrap(),
        "-q",
    ]);
    let want = read_json_lines(&out);
    let ids: std::collections::BTreeSet<String> = want
        .iter()
        .map(|a| a["alert_id"].as_str().unwrap().to_string())
        .collect();
    let got = read_alerts(&broker, ids.len());
    terminate(&run);
    assert!(run.wait().unwrap().success());
    eprintln!(
        "disk full: paused after {paused_at} of {} messages; {} alerts on the topic, {} from replay",
        n1 + n2,
        got.len(),
        want.len()
    );
    // Redelivered copies are allowed, but only identical ones.
    let mut by_id = std::collections::BTreeMap::new();
    for a in comparable(&got) {
        let id = a["alert_id"].as_str().unwrap().to_string();
        if let Some(prev) = by_id.insert(id.clone(), a.clone()) {
            assert_eq!(prev, a, "alert {id} published with two contents");
        }
    }
    let unique: Vec<serde_json::Value> = by_id.into_values().collect();
    assert_same_alerts(&unique, &comparable(&want));
}

/// A `run` config whose state is on `disk`, sharing `broker`'s group, for
/// a topic of `partitions` partitions, without a changelog (a partition
/// taken over then starts with no state, from the group's offset).
fn config_on(
    dir: &Path,
    state: Option<&Path>,
    broker: &Broker,
    port: u16,
    partitions: u32,
) -> PathBuf {
    let cfg = config_file(dir, broker, port, "");
    let mut text = std::fs::read_to_string(&cfg).unwrap().replace(
        "topic_partitions = 1",
        &format!("topic_partitions = {partitions}\nchangelog = false"),
    );
    if let Some(state) = state {
        text = text.replace(
            &format!("dir = \"{}\"", dir.join("state").display()),
            &format!(
                "dir = \"{}\"\nwrite_buffer_mb = 2\nblock_cache_mb = 8",
                state.display()
            ),
        );
    }
    std::fs::write(&cfg, text).unwrap();
    cfg
}

#[test]
fn a_partition_taken_over_while_the_disk_is_full_waits_for_space_instead_of_stopping_run() {
    let Some(disk) = Tmpfs::mount(128) else {
        eprintln!("skipped: cannot mount a tmpfs here (needs root)");
        return;
    };
    let broker = Broker::start();
    broker.create_topic("member-events", 2);
    let (dir_a, dir_b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let (port_a, port_b) = (common::broker::free_port(), common::broker::free_port());
    let state = disk.0.join("state");
    let cfg_a = config_on(dir_a.path(), Some(&state), &broker, port_a, 2);
    let cfg_b = config_on(dir_b.path(), None, &broker, port_b, 2);
    let first = simulate(dir_a.path(), "first.ndjson", "5");
    let second = simulate(dir_a.path(), "second.ndjson", "6");
    let third = simulate(dir_a.path(), "third.ndjson", "7");
    let flooding = flood(dir_a.path(), "flood.ndjson");

    // Two instances, a partition each; B first, so that A never had the
    // partition it takes over later (it has no state of it at all).
    let mut b = start_run(&cfg_b);
    wait_ready(port_b);
    wait_for_metric(
        port_b,
        "churnwatch_partitions_assigned",
        2.0,
        Duration::from_secs(60),
        "both partitions on B",
    );
    let mut a = start_run(&cfg_a);
    wait_ready(port_a);
    let deadline = Instant::now() + Duration::from_secs(60);
    while metric(port_a, "churnwatch_partitions_assigned") != 1.0
        || metric(port_b, "churnwatch_partitions_assigned") != 1.0
    {
        assert!(
            Instant::now() < deadline,
            "the two never split the partitions"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let n1 = produce_file(&broker, &first);
    let deadline = Instant::now() + Duration::from_secs(120);
    while consumed(port_a) + consumed(port_b) < n1 as f64 {
        assert!(Instant::now() < deadline, "first part not consumed");
        std::thread::sleep(Duration::from_millis(200));
    }

    // A's disk fills up and its writes fail.
    let filler = fill(&disk.0);
    produce_file(&broker, &second);
    produce_file(&broker, &flooding);
    wait_for_metric_eq(
        port_a,
        "churnwatch_state_write_failing",
        1.0,
        Duration::from_secs(60),
        "writes never failed on a full disk",
    );

    // B leaves: A takes its partition over, with nowhere to write the
    // partition's timer index. It waits instead of stopping. (RocksDB
    // frees a little space now and then, deleting files it no longer
    // needs: a second filler takes every byte of it back.)
    let topping = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(true));
    let topper = {
        let (topping, path) = (topping.clone(), disk.0.join("filler-2"));
        std::thread::spawn(move || {
            use std::io::Write;
            let mut f = std::fs::File::create(&path).unwrap();
            let chunk = vec![0u8; 4096];
            while topping.load(std::sync::atomic::Ordering::SeqCst) {
                while f.write_all(&chunk).is_ok() {}
                std::thread::sleep(Duration::from_millis(5));
            }
            path
        })
    };
    std::thread::sleep(Duration::from_millis(200));
    terminate(&b);
    assert!(b.wait().unwrap().success());
    let deadline = Instant::now() + Duration::from_secs(60);
    while metric(port_a, "churnwatch_partitions_assigned") != 2.0 {
        assert!(
            a.try_wait().unwrap().is_none(),
            "run stopped taking a partition on a full disk"
        );
        assert!(Instant::now() < deadline, "A never took B's partition");
        std::thread::sleep(Duration::from_millis(200));
    }
    // Held back, paused, and shown as such.
    wait_for_metric(
        port_a,
        "churnwatch_partitions_held",
        1.0,
        Duration::from_secs(30),
        "B's partition held on A",
    );
    std::thread::sleep(Duration::from_secs(3));
    assert!(
        a.try_wait().unwrap().is_none(),
        "run stopped taking a partition on a full disk"
    );
    assert_eq!(http_get(port_a, "/readyz").0, 503);

    // Space is freed: both partitions are processed, what waited and what
    // comes next.
    topping.store(false, std::sync::atomic::Ordering::SeqCst);
    std::fs::remove_file(topper.join().unwrap()).unwrap();
    std::fs::remove_file(filler).unwrap();
    let deadline = Instant::now() + Duration::from_secs(120);
    while metric(port_a, "churnwatch_state_write_failing") != 0.0
        || http_get(port_a, "/readyz").0 != 200
    {
        assert!(Instant::now() < deadline, "did not recover");
        std::thread::sleep(Duration::from_millis(200));
    }
    wait_for_metric_eq(
        port_a,
        "churnwatch_partitions_held",
        0.0,
        Duration::from_secs(30),
        "the held partition never started",
    );
    let before = consumed(port_a);
    let n3 = produce_file(&broker, &third);
    let deadline = Instant::now() + Duration::from_secs(120);
    while consumed(port_a) < before + n3 as f64 {
        assert!(
            Instant::now() < deadline,
            "{} of the last {n3} messages consumed",
            consumed(port_a) - before
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    // Nothing left behind on either partition, both processed here.
    let deadline = Instant::now() + Duration::from_secs(60);
    while metric_sum(port_a, "churnwatch_consumer_lag") > 0.0
        || metric_sum(port_a, "churnwatch_partition_owned") != 2.0
    {
        assert!(
            Instant::now() < deadline,
            "lag {} on {} partitions owned",
            metric_sum(port_a, "churnwatch_consumer_lag"),
            metric_sum(port_a, "churnwatch_partition_owned")
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    terminate(&a);
    assert!(a.wait().unwrap().success());
}
