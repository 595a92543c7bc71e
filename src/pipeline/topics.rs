//! Creates the input, alert, dead-letter and changelog topics when they are
//! missing, so a fresh cluster (or the quickstart's local broker) needs no
//! manual step, and checks that the changelog has a partition for every
//! input partition.
//!
//! Create, then verify: a topic is never "checked" by asking for its
//! metadata by name, which brokers that auto-create topics answer by
//! creating it with their default partition count. Topic metadata is read
//! for the whole cluster (a request that names no topic creates none), and
//! every client has `allow.auto.create.topics=false` besides.

use std::collections::HashMap;
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

/// Partition counts of every topic in the cluster. Asks for all topics
/// rather than naming one: a request that names a topic can create it.
fn all_partitions(
    admin: &AdminClient<DefaultClientContext>,
) -> Result<HashMap<String, usize>, String> {
    let md = admin
        .inner()
        .fetch_metadata(None, Duration::from_secs(10))
        .map_err(|e| format!("cluster metadata: {e}"))?;
    Ok(md
        .topics()
        .iter()
        .filter(|t| t.error().is_none() && !t.partitions().is_empty())
        .map(|t| (t.name().to_string(), t.partitions().len()))
        .collect())
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
    let known = all_partitions(&admin)?;
    let mut inputs = Vec::new();
    for t in &cfg.kafka.input_topics {
        match known.get(t) {
            Some(n) => inputs.push((t.clone(), *n)),
            None => return Err(format!("input topic {t} does not exist").into()),
        }
    }
    let want = inputs.iter().map(|(_, n)| *n).max().unwrap_or(1);
    if !known.contains_key(&changelog) {
        if !cfg.pipeline.create_topics {
            return Err(TopicsError::Fatal(format!(
                "changelog topic {changelog} does not exist: create it with {want} partitions and cleanup.policy=compact, or set pipeline.create_topics = true"
            )));
        }
        // Already there (another instance won the race) is fine: the
        // verification below judges whatever exists.
        let topic = NewTopic::new(&changelog, want as i32, TopicReplication::Fixed(-1))
            .set("cleanup.policy", "compact");
        create(&admin, &[topic]).await?;
    }
    let have = *all_partitions(&admin)?
        .get(&changelog)
        .ok_or_else(|| format!("changelog topic {changelog} is not visible after creating it"))?;
    check_counts(&changelog, have, &inputs)
}

/// The changelog must have exactly the input topics' partition count.
fn check_counts(
    changelog: &str,
    have: usize,
    inputs: &[(String, usize)],
) -> Result<(), TopicsError> {
    for (input, n) in inputs {
        if *n != have {
            return Err(TopicsError::Fatal(
                PartitionMismatch {
                    changelog: changelog.to_string(),
                    changelog_partitions: have,
                    input: input.clone(),
                    input_partitions: *n,
                }
                .to_string(),
            ));
        }
    }
    Ok(())
}

/// The partition count of every input topic, in config order.
pub async fn input_partitions(cfg: &Config) -> Result<Vec<(String, usize)>, TopicsError> {
    let admin: AdminClient<DefaultClientContext> = super::client_config(cfg)
        .create()
        .map_err(|e| TopicsError::Fatal(format!("admin client: {e}")))?;
    let known = all_partitions(&admin)?;
    cfg.kafka
        .input_topics
        .iter()
        .map(|t| match known.get(t) {
            Some(n) => Ok((t.clone(), *n)),
            None => Err(TopicsError::Retry(format!(
                "input topic {t} does not exist"
            ))),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_client_may_create_a_topic_by_asking_for_it() {
        let mut cfg = Config::default();
        cfg.kafka
            .client
            .insert("allow.auto.create.topics".into(), "true".into());
        assert_eq!(
            crate::pipeline::client_config(&cfg).get("allow.auto.create.topics"),
            Some("false")
        );
    }

    #[test]
    fn a_changelog_of_another_size_is_a_fatal_mismatch_naming_both_topics() {
        let inputs = [("member-events".to_string(), 6)];
        let err = check_counts("g-state-changelog", 4, &inputs).unwrap_err();
        assert!(matches!(err, TopicsError::Fatal(_)));
        let text = err.to_string();
        assert!(text.contains("g-state-changelog has 4") && text.contains("member-events has 6"));
        assert!(check_counts("g-state-changelog", 6, &inputs).is_ok());
    }
}
