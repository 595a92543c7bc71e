//! Reading the alert topic for `report --brokers … --topic …`: every
//! partition from the beginning up to its end as of the start.

use std::time::Duration;

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::{Offset, TopicPartitionList};

use super::{Builder, ReportError};
use crate::config::Config;

#[derive(Debug, thiserror::Error)]
pub enum TopicError {
    #[error("kafka: {0}")]
    Kafka(#[from] rdkafka::error::KafkaError),
    #[error("topic {0} does not exist")]
    NoTopic(String),
    #[error(transparent)]
    Report(#[from] ReportError),
}

const TIMEOUT: Duration = Duration::from_secs(10);

/// Feeds every record of `topic` present now into `b`.
pub fn read_topic(cfg: &Config, topic: &str, b: &mut Builder) -> Result<(), TopicError> {
    let consumer: BaseConsumer = crate::pipeline::client_config(cfg)
        .set("group.id", "churnwatch-report")
        .set("enable.auto.commit", "false")
        .create()?;
    let md = consumer.fetch_metadata(Some(topic), TIMEOUT)?;
    let parts: Vec<i32> = md
        .topics()
        .iter()
        .filter(|t| t.name() == topic && t.error().is_none())
        .flat_map(|t| t.partitions().iter().map(|p| p.id()))
        .collect();
    if parts.is_empty() {
        return Err(TopicError::NoTopic(topic.to_string()));
    }
    let mut ends = std::collections::BTreeMap::new();
    let mut tpl = TopicPartitionList::new();
    for p in parts {
        let (low, high) = consumer.fetch_watermarks(topic, p, TIMEOUT)?;
        if high > low {
            ends.insert(p, high);
            tpl.add_partition_offset(topic, p, Offset::Beginning)?;
        }
    }
    consumer.assign(&tpl)?;
    let name = format!("topic {topic}");
    let mut n = 0;
    while !ends.is_empty() {
        let Some(m) = consumer.poll(TIMEOUT) else {
            continue;
        };
        let m = m?;
        n += 1;
        if let Some(payload) = m.payload() {
            b.line(&String::from_utf8_lossy(payload), &name, n)?;
        }
        if ends
            .get(&m.partition())
            .is_some_and(|end| m.offset() + 1 >= *end)
        {
            ends.remove(&m.partition());
        }
    }
    Ok(())
}
