//! Which input partition a producer sends a member's events to.
//!
//! `bootstrap` and `replay --partitions` must put every member on the
//! partition the input topic's producers use for that member's key, or the
//! state they build would sit on the wrong partition for `run`. The two
//! partitioners in use for string keys:
//!
//! - `consistent_random`, librdkafka's default (every librdkafka-based
//!   client: rdkafka, confluent-kafka-python, -go, -dotnet): CRC-32 (IEEE)
//!   of the key, modulo the partition count.
//! - `murmur2_random`, the Java client's default partitioner for keyed
//!   records (and librdkafka's `partitioner=murmur2_random`): Kafka's
//!   murmur2 (seed `0x9747b28c`), made positive, modulo the count.
//!
//! Records without a key are spread at random by both; members always have
//! a key (the member id), so that case does not arise here.

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Partitioner {
    /// librdkafka's default: `crc32(key) % partitions`.
    #[default]
    ConsistentRandom,
    /// The Java client's default: `(murmur2(key) & 0x7fffffff) % partitions`.
    Murmur2Random,
}

impl Partitioner {
    /// The partition (0-based) of `key` on a topic with `partitions`
    /// partitions. `partitions` must be at least 1.
    pub fn partition(self, key: &[u8], partitions: u32) -> u32 {
        assert!(partitions > 0, "a topic has at least one partition");
        let hash = match self {
            Partitioner::ConsistentRandom => crc32fast::hash(key),
            Partitioner::Murmur2Random => murmur2::murmur2(key, murmur2::KAFKA_SEED) & 0x7fff_ffff,
        };
        hash % partitions
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Partitioner::ConsistentRandom => "consistent_random",
            Partitioner::Murmur2Random => "murmur2_random",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn consistent_random_is_crc32_of_the_key() {
        // crc32("123456789") = 0xCBF43926, the CRC-32/ISO-HDLC check value.
        assert_eq!(
            Partitioner::ConsistentRandom.partition(b"123456789", u32::MAX),
            0xCBF4_3926
        );
    }

    #[test]
    fn murmur2_matches_the_java_client() {
        // Values from Kafka's own partitioner tests (`Utils.murmur2`):
        // murmur2("21") = -973932308, murmur2("foobar") = -790332482.
        let positive = |h: i32| (h as u32) & 0x7fff_ffff;
        assert_eq!(
            Partitioner::Murmur2Random.partition(b"21", u32::MAX),
            positive(-973_932_308) % u32::MAX
        );
        assert_eq!(
            Partitioner::Murmur2Random.partition(b"foobar", u32::MAX),
            positive(-790_332_482) % u32::MAX
        );
    }

    #[test]
    fn every_key_lands_within_the_partition_count() {
        for p in [Partitioner::ConsistentRandom, Partitioner::Murmur2Random] {
            for n in 1..8 {
                for k in 0..100 {
                    assert!(p.partition(format!("m-{k}").as_bytes(), n) < n);
                }
            }
        }
    }
}
