//! Creates the input, alert and dead-letter topics when they are missing, so
//! a fresh cluster (or the quickstart's local broker) needs no manual step.

use std::time::Duration;

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::types::RDKafkaErrorCode;

use crate::config::Config;

pub async fn ensure(cfg: &Config) -> Result<(), String> {
    let admin: AdminClient<DefaultClientContext> = super::client_config(cfg)
        .create()
        .map_err(|e| format!("admin client: {e}"))?;
    let mut names: Vec<&str> = cfg.kafka.input_topics.iter().map(String::as_str).collect();
    names.push(&cfg.kafka.alert_topic);
    names.push(&cfg.kafka.dlq_topic);
    names.sort_unstable();
    names.dedup();
    let topics: Vec<NewTopic<'_>> = names
        .iter()
        .map(|n| {
            NewTopic::new(
                n,
                cfg.pipeline.topic_partitions,
                TopicReplication::Fixed(-1),
            )
        })
        .collect();
    // request_timeout bounds the wait when no broker answers at all; without
    // it the call waits forever and start-up could not be interrupted.
    let opts = AdminOptions::new()
        .operation_timeout(Some(Duration::from_secs(20)))
        .request_timeout(Some(Duration::from_secs(10)));
    let results = admin
        .create_topics(&topics, &opts)
        .await
        .map_err(|e| format!("create topics request failed: {e}"))?;
    for r in results {
        match r {
            Ok(name) => tracing::info!(topic = %name, "created topic"),
            Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
            Err((name, code)) => return Err(format!("topic {name}: {code}")),
        }
    }
    Ok(())
}
