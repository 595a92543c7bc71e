//! churnwatch: a Kafka-native churn early-warning pipeline for retail
//! membership programmes.
//!
//! - [`event`]: the input contract and its validation
//! - [`signal`]: the alert signals (below `state` and `detect`)
//! - [`state`]: the store trait, RocksDB and in-memory stores, member state and windows
//! - [`detect`]: one module per cooling signal
//! - [`alert`]: the alert contract, segments, risk score, playbook
//! - [`engine`]: events in, state, timers and alerts out (shared by replay and run)
//! - [`replay`]: the offline entry point
//! - [`members`]: the member view: `GET /members/{id}` and `members export`
//! - [`report`]: the campaign uplift report from the alert stream
//! - [`bootstrap`]: `run`'s state built from a history file
//! - [`inspect`]: `churnwatch state inspect`, a state directory for operators
//! - [`pipeline`]: the Kafka source, sink and rebalance handling
//! - [`simulate`]: synthetic member journeys
//! - [`config`]: the strict configuration tree
//! - [`telemetry`]: metrics and logs

/// mimalloc instead of glibc's malloc for every Rust allocation of every
/// binary linking the crate (churnwatch, the benches, the tests): the
/// engine allocates and frees per commit and per decoded member, and
/// glibc's bins (`_int_malloc`, `unlink_chunk`, `malloc_consolidate`) took
/// about 14% of the engine bench's time. Build with
/// `--no-default-features` to go back to the system allocator.
#[cfg(feature = "mimalloc")]
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

pub mod alert;
pub mod bootstrap;
pub mod config;
pub mod detect;
pub mod engine;
pub mod event;
pub mod inspect;
pub mod members;
pub mod pipeline;
pub mod replay;
pub mod report;
pub mod risk;
pub mod signal;
pub mod simulate;
pub mod state;
pub mod telemetry;
