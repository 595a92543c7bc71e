//! Arbitrary damage to a real engine's state, then a restart on it: see
//! `tests/common/store_damage.rs`, which the `store_damage` property test
//! in `tests/decoders.rs` runs too.
#![no_main]

#[path = "../../tests/common/store_damage.rs"]
mod store_damage;

libfuzzer_sys::fuzz_target!(|data: &[u8]| store_damage::damage_then_restart(data));
