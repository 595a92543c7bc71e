//! `churnwatch state inspect --state DIR`: what a stopped instance's state
//! directory holds, for an operator: per partition its stream clock, event
//! time high mark, input offsets and member count, and every record moved
//! to the quarantine (kind, partition, reason, size; `--show-keys` adds the
//! keys, which hold member ids).

use std::collections::BTreeMap;
use std::io::Write;
use std::path::PathBuf;

use clap::{Args, Subcommand};

use crate::engine::{META_CLOCK, META_MAX_TS};
use crate::state::keys::{meta_key, GLOBAL_PARTITION};
use crate::state::{quarantine, scan_chunks, RocksStore, RocksTuning, Store, StoreError, Table};

#[derive(Debug, Subcommand)]
pub enum StateCommand {
    /// Partitions, clocks, offsets and quarantined records of a state
    /// directory (of a stopped `run`, or of `replay --state`).
    Inspect(InspectArgs),
}

#[derive(Debug, Args)]
pub struct InspectArgs {
    /// The state directory (`state.dir`).
    #[arg(long)]
    pub state: PathBuf,
    /// Print quarantined keys too (they hold member ids).
    #[arg(long)]
    pub show_keys: bool,
    /// One JSON object per quarantined record instead of the table.
    #[arg(long)]
    pub json: bool,
}

impl StateCommand {
    pub fn run(&self) -> std::process::ExitCode {
        let StateCommand::Inspect(args) = self;
        match inspect(args, &mut std::io::stdout().lock()) {
            Ok(()) => std::process::ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("churnwatch state inspect: {e}");
                std::process::ExitCode::FAILURE
            }
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum InspectError {
    #[error("{0} is not a state directory")]
    Missing(String),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("writing: {0}")]
    Io(#[from] std::io::Error),
}

fn read_i64<S: Store + ?Sized>(store: &S, key: &[u8]) -> Result<Option<i64>, StoreError> {
    Ok(store
        .get(Table::Meta, key)?
        .and_then(|v| <[u8; 8]>::try_from(v.as_slice()).ok())
        .map(i64::from_le_bytes))
}

fn time(ms: Option<i64>) -> String {
    ms.filter(|m| *m > i64::MIN)
        .and_then(chrono::DateTime::from_timestamp_millis)
        .map_or("-".into(), |t| {
            t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
        })
}

pub fn inspect(args: &InspectArgs, out: &mut impl Write) -> Result<(), InspectError> {
    if !args.state.join("CURRENT").exists() {
        return Err(InspectError::Missing(args.state.display().to_string()));
    }
    let store = RocksStore::open(
        &args.state,
        &RocksTuning {
            block_cache_bytes: 8 << 20,
            write_buffer_bytes: 8 << 20,
            sync_wal: false,
            wal: true,
        },
    )?;
    writeln!(out, "state directory {}", args.state.display())?;
    report(&store, args.show_keys, args.json, out)
}

/// What `store` holds, as [`inspect`] prints it after the directory's name.
/// Whatever the store holds (it may be damaged: that is when an operator
/// looks), this prints what it can and fails only if the store or `out`
/// does.
pub fn report<S: Store + ?Sized>(
    store: &S,
    show_keys: bool,
    json: bool,
    out: &mut impl Write,
) -> Result<(), InspectError> {
    // Partitions: every partition with a high mark or members.
    let mut parts: BTreeMap<u32, u64> = BTreeMap::new();
    let metas = store.scan(Table::Meta, &[], &GLOBAL_PARTITION.to_be_bytes(), 1_000_000)?;
    for (k, _) in &metas {
        if k.get(4..) == Some(META_MAX_TS.as_bytes()) {
            let p = u32::from_be_bytes(k[..4].try_into().expect("4 bytes"));
            parts.entry(p).or_default();
        }
    }
    scan_chunks(store, Table::Members, &[], &[0xff; 5], 100_000, |chunk| {
        for (k, _) in &chunk {
            if let Some(p) = k.get(..4) {
                *parts
                    .entry(u32::from_be_bytes(p.try_into().expect("4 bytes")))
                    .or_default() += 1;
            }
        }
        Ok::<_, StoreError>(())
    })?;
    let offsets = store.scan(
        Table::Meta,
        &meta_key(GLOBAL_PARTITION, "offset/"),
        &meta_key(GLOBAL_PARTITION, "offset0"),
        1_000_000,
    )?;
    writeln!(
        out,
        "{:>9}  {:>9}  {:<20}  {:<20}",
        "partition", "members", "stream clock", "high mark"
    )?;
    for (p, members) in &parts {
        writeln!(
            out,
            "{:>9}  {:>9}  {:<20}  {:<20}",
            p,
            members,
            time(read_i64(store, &meta_key(*p, META_CLOCK))?),
            time(read_i64(store, &meta_key(*p, META_MAX_TS))?),
        )?;
    }
    for (k, v) in &offsets {
        let name = String::from_utf8_lossy(&k[4..]);
        let next = <[u8; 8]>::try_from(v.as_slice()).map_or(-1, i64::from_le_bytes);
        writeln!(
            out,
            "next input offset {}: {next}",
            &name["offset/".len()..]
        )?;
    }
    let q = quarantine::list(store)?;
    writeln!(out, "quarantined records: {}", q.len())?;
    for r in &q {
        if json {
            let mut v = serde_json::to_value(r).expect("serializable");
            if !show_keys {
                v["key"] = serde_json::Value::Null;
            }
            writeln!(out, "{v}")?;
            continue;
        }
        write!(
            out,
            "  {:<9} partition {:<4} {:>6} bytes  at {}  {}",
            r.kind.as_str(),
            r.partition,
            r.value.len(),
            time(Some(r.at_ms)),
            r.reason
        )?;
        if let Some(o) = r.offset {
            write!(out, "  (changelog offset {o})")?;
        }
        if show_keys {
            write!(out, "  key {:?}", String::from_utf8_lossy(&r.key))?;
        }
        writeln!(out)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::{Batch, MemoryStore};

    #[test]
    fn a_damaged_store_is_reported_as_far_as_it_reads_not_refused() {
        let store = MemoryStore::new();
        let mut b = Batch::default();
        // A clock of the wrong width, a member key shorter than a
        // partition, a quarantine entry that is not one, an offset key
        // with nothing after its prefix.
        b.put(Table::Meta, meta_key(2, META_MAX_TS), vec![1, 2, 3]);
        b.put(Table::Meta, meta_key(2, META_CLOCK), i64::MAX.to_le_bytes());
        b.put(Table::Members, vec![0, 0], b"x");
        b.put(Table::Members, vec![0, 0, 0, 2, b'm'], b"x");
        b.put(Table::Quarantine, vec![0xff, 0xfe], b"\x00not json");
        b.put(Table::Meta, meta_key(GLOBAL_PARTITION, "offset/"), vec![9]);
        store.write(b).unwrap();
        for (show_keys, json) in [(false, false), (true, false), (false, true)] {
            let mut out = Vec::new();
            report(&store, show_keys, json, &mut out).unwrap();
            let text = String::from_utf8(out).unwrap();
            assert!(text.contains("quarantined records: 1"), "{text}");
            let partition_2 = text
                .lines()
                .find(|l| l.trim_start().starts_with("2 "))
                .unwrap_or_else(|| panic!("{text}"));
            assert!(partition_2.contains('1'), "one member: {partition_2}");
            assert!(text.contains("next input offset : -1"), "{text}");
        }
    }
}
