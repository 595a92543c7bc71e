//! What the broker benchmarks share with the integration tests: a tansu
//! broker of their own (`tests/common/broker.rs`), killed on drop.

#[allow(dead_code)]
#[path = "../../tests/common/broker.rs"]
mod broker;

pub use broker::Broker;

/// CPU seconds (user + system) of this process, whole (`""`: every
/// thread, the ended ones included) and by the name of each live thread
/// (`/proc/self/stat` and `/proc/self/task/*/stat`, Linux; empty elsewhere).
/// Short-lived threads (an engine group's per-batch threads) show only in
/// the whole.
#[allow(dead_code)]
pub fn cpu_by_thread() -> std::collections::BTreeMap<String, f64> {
    let mut by_name = std::collections::BTreeMap::new();
    if let Some((_, s)) = stat_cpu(std::path::Path::new("/proc/self/stat")) {
        by_name.insert(String::new(), s);
    }
    let Ok(tasks) = std::fs::read_dir("/proc/self/task") else {
        return by_name;
    };
    for task in tasks.flatten() {
        if let Some((name, s)) = stat_cpu(&task.path().join("stat")) {
            *by_name.entry(name).or_insert(0.0) += s;
        }
    }
    by_name
}

/// The name and CPU seconds of a `stat` file.
fn stat_cpu(path: &std::path::Path) -> Option<(String, f64)> {
    // USER_HZ: 100 on every Linux this runs on (what `getconf CLK_TCK` says).
    const HZ: f64 = 100.0;
    let stat = std::fs::read_to_string(path).ok()?;
    // `pid (comm) state ...`: comm may hold spaces and parentheses.
    let (open, close) = (stat.find('(')?, stat.rfind(')')?);
    let fields: Vec<&str> = stat.get(close + 2..)?.split(' ').collect();
    // utime and stime: fields 14 and 15 of stat, 12 and 13 after comm.
    let ticks: f64 = fields
        .get(11..13)?
        .iter()
        .filter_map(|v| v.parse::<f64>().ok())
        .sum();
    Some((stat[open + 1..close].to_string(), ticks / HZ))
}

/// What [`cpu_by_thread`] counted between two readings: the whole process,
/// and the live threads by name, largest first.
#[allow(dead_code)]
pub fn cpu_spent(
    before: &std::collections::BTreeMap<String, f64>,
    after: &std::collections::BTreeMap<String, f64>,
) -> (f64, Vec<(String, f64)>) {
    let spent =
        |n: &str| after.get(n).copied().unwrap_or(0.0) - before.get(n).copied().unwrap_or(0.0);
    let mut threads: Vec<(String, f64)> = after
        .keys()
        .filter(|n| !n.is_empty())
        .map(|n| (n.clone(), spent(n)))
        .filter(|(_, s)| *s > 0.0)
        .collect();
    threads.sort_by(|a, b| b.1.total_cmp(&a.1));
    (spent(""), threads)
}
