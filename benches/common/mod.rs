//! What the broker benchmarks share with the integration tests: a tansu
//! broker of their own (`tests/common/broker.rs`), killed on drop.

#[allow(dead_code)]
#[path = "../../tests/common/broker.rs"]
mod broker;

pub use broker::Broker;
