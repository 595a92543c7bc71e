//! The outbox: alerts, dead letters and changelog records are written to
//! RocksDB in the same batch as the state and input offsets that produced
//! them, and deleted only once the broker has acknowledged them. A crash between commit and
//! delivery therefore republishes (same `alert_id`) instead of losing.

use crate::state::keys::{outbox_key, split_outbox_key};

/// What to publish, and where.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OutboxRecord {
    /// An alert for the alert topic, keyed by member id.
    Alert { member_id: String, json: Vec<u8> },
    /// A rejected input message for the dead-letter topic, unchanged, with
    /// the reason and its origin (sent as headers).
    DeadLetter {
        key: Option<Vec<u8>>,
        payload: Vec<u8>,
        error: String,
        topic: String,
        partition: i32,
        offset: i64,
    },
    /// A member's state after a commit, for partition `partition` of the
    /// changelog topic (`None`: a tombstone).
    Changelog {
        partition: i32,
        member_id: String,
        value: Option<Vec<u8>>,
    },
    /// The end of one commit's changelog records for `partition`.
    ChangelogMark { partition: i32, mark: Vec<u8> },
}

#[derive(Debug, thiserror::Error)]
#[error("corrupt outbox record: {0}")]
pub struct CorruptRecord(&'static str);

fn put_bytes(out: &mut Vec<u8>, b: &[u8]) {
    out.extend_from_slice(&(b.len() as u32).to_le_bytes());
    out.extend_from_slice(b);
}

struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], CorruptRecord> {
        if self.0.len() < n {
            return Err(CorruptRecord("truncated"));
        }
        let (a, b) = self.0.split_at(n);
        self.0 = b;
        Ok(a)
    }
    fn bytes(&mut self) -> Result<&'a [u8], CorruptRecord> {
        let n = u32::from_le_bytes(self.take(4)?.try_into().expect("4 bytes"));
        self.take(n as usize)
    }
    fn string(&mut self) -> Result<String, CorruptRecord> {
        String::from_utf8(self.bytes()?.to_vec()).map_err(|_| CorruptRecord("invalid utf-8"))
    }
}

const ALERT: u8 = 1;
const DEAD_LETTER: u8 = 2;
const CHANGELOG: u8 = 3;
const CHANGELOG_MARK: u8 = 4;

impl OutboxRecord {
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::new();
        match self {
            OutboxRecord::Alert { member_id, json } => {
                out.push(ALERT);
                put_bytes(&mut out, member_id.as_bytes());
                put_bytes(&mut out, json);
            }
            OutboxRecord::DeadLetter {
                key,
                payload,
                error,
                topic,
                partition,
                offset,
            } => {
                out.push(DEAD_LETTER);
                out.push(key.is_some() as u8);
                put_bytes(&mut out, key.as_deref().unwrap_or_default());
                put_bytes(&mut out, payload);
                put_bytes(&mut out, error.as_bytes());
                put_bytes(&mut out, topic.as_bytes());
                out.extend_from_slice(&partition.to_le_bytes());
                out.extend_from_slice(&offset.to_le_bytes());
            }
            OutboxRecord::Changelog {
                partition,
                member_id,
                value,
            } => {
                out.push(CHANGELOG);
                out.extend_from_slice(&partition.to_le_bytes());
                put_bytes(&mut out, member_id.as_bytes());
                out.push(value.is_some() as u8);
                put_bytes(&mut out, value.as_deref().unwrap_or_default());
            }
            OutboxRecord::ChangelogMark { partition, mark } => {
                out.push(CHANGELOG_MARK);
                out.extend_from_slice(&partition.to_le_bytes());
                put_bytes(&mut out, mark);
            }
        }
        out
    }

    /// The changelog partition of a changelog record, `None` for alerts and
    /// dead letters.
    pub fn changelog_partition(&self) -> Option<i32> {
        match self {
            OutboxRecord::Changelog { partition, .. }
            | OutboxRecord::ChangelogMark { partition, .. } => Some(*partition),
            _ => None,
        }
    }

    pub fn decode(bytes: &[u8]) -> Result<Self, CorruptRecord> {
        let mut r = Reader(bytes);
        match r.take(1)?[0] {
            ALERT => Ok(OutboxRecord::Alert {
                member_id: r.string()?,
                json: r.bytes()?.to_vec(),
            }),
            DEAD_LETTER => {
                let has_key = r.take(1)?[0] == 1;
                let key = r.bytes()?.to_vec();
                Ok(OutboxRecord::DeadLetter {
                    key: has_key.then_some(key),
                    payload: r.bytes()?.to_vec(),
                    error: r.string()?,
                    topic: r.string()?,
                    partition: i32::from_le_bytes(r.take(4)?.try_into().expect("4 bytes")),
                    offset: i64::from_le_bytes(r.take(8)?.try_into().expect("8 bytes")),
                })
            }
            CHANGELOG => {
                let partition = i32::from_le_bytes(r.take(4)?.try_into().expect("4 bytes"));
                let member_id = r.string()?;
                let has_value = r.take(1)?[0] == 1;
                let value = r.bytes()?.to_vec();
                Ok(OutboxRecord::Changelog {
                    partition,
                    member_id,
                    value: has_value.then_some(value),
                })
            }
            CHANGELOG_MARK => Ok(OutboxRecord::ChangelogMark {
                partition: i32::from_le_bytes(r.take(4)?.try_into().expect("4 bytes")),
                mark: r.bytes()?.to_vec(),
            }),
            _ => Err(CorruptRecord("unknown kind")),
        }
    }
}

/// Outbox keys sort by a process-wide sequence, so records are republished
/// in the order they were written.
pub fn key(seq: u64) -> Vec<u8> {
    outbox_key(0, seq)
}

pub fn seq_of(key: &[u8]) -> Option<u64> {
    split_outbox_key(key).map(|(_, s)| s)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_round_trip() {
        let records = [
            OutboxRecord::Alert {
                member_id: "m-1".into(),
                json: br#"{"a":1}"#.to_vec(),
            },
            OutboxRecord::DeadLetter {
                key: None,
                payload: vec![0xff, 0, b'{'],
                error: "invalid_json: expected value".into(),
                topic: "member-events".into(),
                partition: 3,
                offset: 42,
            },
            OutboxRecord::Changelog {
                partition: 2,
                member_id: "m-2".into(),
                value: Some(vec![1, 2, 3]),
            },
            OutboxRecord::Changelog {
                partition: 2,
                member_id: "m-3".into(),
                value: None,
            },
            OutboxRecord::ChangelogMark {
                partition: 5,
                mark: br#"{"max_ts":1}"#.to_vec(),
            },
        ];
        for r in records {
            assert_eq!(OutboxRecord::decode(&r.encode()).unwrap(), r);
        }
    }

    #[test]
    fn truncated_records_are_errors_not_panics() {
        let bytes = OutboxRecord::Alert {
            member_id: "m".into(),
            json: b"{}".to_vec(),
        }
        .encode();
        for n in 0..bytes.len() {
            assert!(OutboxRecord::decode(&bytes[..n]).is_err());
        }
    }

    #[test]
    fn keys_sort_by_sequence() {
        assert!(key(9) < key(10));
        assert_eq!(seq_of(&key(77)), Some(77));
    }
}
