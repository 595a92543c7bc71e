//! Creates the input, alert, dead-letter and changelog topics when they are
//! missing, so a fresh cluster (or the quickstart's local broker) needs no
//! manual step, and checks that the changelog has a partition for every
//! input partition.

use std::time::Duration;

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::types::RDKafkaErrorCode;

use crate::config::Config;

async fn create(
    admin: &AdminClient<DefaultClientContext>,
    topics: &[NewTopic<'_>],
) -> Result<(), String> {
    // request_timeout bounds the wait when no broker answers at all; without
    // it the call waits forever and start-up could not be interrupted.
    let opts = AdminOptions::new()
        .operation_timeout(Some(Duration::from_secs(20)))
        .request_timeout(Some(Duration::from_secs(10)));
    let results = admin
        .create_topics(topics, &opts)
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

/// Partitions of `topic`, `None` when it does not exist.
fn partitions(
    admin: &AdminClient<DefaultClientContext>,
    topic: &str,
) -> Result<Option<usize>, String> {
    let md = admin
        .inner()
        .fetch_metadata(Some(topic), Duration::from_secs(10))
        .map_err(|e| format!("metadata of {topic}: {e}"))?;
    Ok(md
        .topics()
        .iter()
        .find(|t| t.name() == topic && t.error().is_none())
        .map(|t| t.partitions().len())
        .filter(|n| *n > 0))
}

/// A changelog with fewer partitions than an input topic cannot hold the
/// state of the partitions beyond its count; more is harmless but unusual.
#[derive(Debug, thiserror::Error)]
#[error("changelog topic {changelog} has {changelog_partitions} partitions but input topic {input} has {input_partitions}; they must match (pipeline.changelog_topic)")]
pub struct PartitionMismatch {
    pub changelog: String,
    pub changelog_partitions: usize,
    pub input: String,
    pub input_partitions: usize,
}

/// Why the topics are not ready.
#[derive(Debug, thiserror::Error)]
pub enum TopicsError {
    /// The broker did not answer or refused for now: retry.
    #[error("{0}")]
    Retry(String),
    /// The topics are set up in a way churnwatch cannot work with.
    #[error("{0}")]
    Fatal(String),
}

impl From<String> for TopicsError {
    fn from(s: String) -> Self {
        TopicsError::Retry(s)
    }
}

pub async fn ensure(cfg: &Config) -> Result<(), TopicsError> {
    let admin: AdminClient<DefaultClientContext> = super::client_config(cfg)
        .create()
        .map_err(|e| TopicsError::Fatal(format!("admin client: {e}")))?;
    if cfg.pipeline.create_topics {
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
        create(&admin, &topics).await?;
    }
    if !cfg.pipeline.changelog {
        return Ok(());
    }
    let changelog = cfg.changelog_topic();
    let mut inputs = Vec::new();
    for t in &cfg.kafka.input_topics {
        match partitions(&admin, t)? {
            Some(n) => inputs.push((t.clone(), n)),
            None => return Err(format!("input topic {t} does not exist").into()),
        }
    }
    let want = inputs.iter().map(|(_, n)| *n).max().unwrap_or(1);
    if partitions(&admin, &changelog)?.is_none() {
        if !cfg.pipeline.create_topics {
            return Err(TopicsError::Fatal(format!(
                "changelog topic {changelog} does not exist: create it with {want} partitions and cleanup.policy=compact, or set pipeline.create_topics = true"
            )));
        }
        let topic = NewTopic::new(&changelog, want as i32, TopicReplication::Fixed(-1))
            .set("cleanup.policy", "compact");
        create(&admin, &[topic]).await?;
    }
    let have = partitions(&admin, &changelog)?
        .ok_or_else(|| format!("changelog topic {changelog} is not visible after creating it"))?;
    for (input, n) in inputs {
        if n != have {
            return Err(TopicsError::Fatal(
                PartitionMismatch {
                    changelog: changelog.clone(),
                    changelog_partitions: have,
                    input,
                    input_partitions: n,
                }
                .to_string(),
            ));
        }
    }
    Ok(())
}
