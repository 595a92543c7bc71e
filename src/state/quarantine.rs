//! Records that cannot be decoded are moved aside, not obeyed and not
//! fatal: a corrupt member value, timer key, outbox entry or changelog
//! record would otherwise stop the instance, and stop it again at every
//! restart (a crash loop that holds every member of the partition hostage).
//!
//! A quarantined record keeps its original key and bytes and the reason, in
//! the `quarantine` table, keyed by partition, kind and original key (the
//! same record quarantined twice is kept once, with the latest reason).
//! `churnwatch state inspect` lists them. Whoever moves a record aside also
//! counts it (`churnwatch_state_quarantined_total{kind}`), logs it once with
//! its partition (never the member id), and the pipeline dead-letters it
//! with `churnwatch.error = corrupt_state: …`.

use serde::{Deserialize, Serialize};

use super::{Batch, Store, StoreError, Table};

/// What kind of record was moved aside.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    /// A member's stored state.
    Member,
    /// An entry of the timer index.
    Timer,
    /// An outbox entry (alert, dead letter or changelog record to publish).
    Outbox,
    /// A record read from the changelog topic during a restore.
    Changelog,
}

impl Kind {
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Member => "member",
            Kind::Timer => "timer",
            Kind::Outbox => "outbox",
            Kind::Changelog => "changelog",
        }
    }

    fn tag(self) -> u8 {
        match self {
            Kind::Member => 1,
            Kind::Timer => 2,
            Kind::Outbox => 3,
            Kind::Changelog => 4,
        }
    }
}

/// One record moved aside.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Quarantined {
    pub kind: Kind,
    pub partition: u32,
    /// The record's key where it was found (a store key, or for changelog
    /// records the member id, empty for markers).
    pub key: Vec<u8>,
    /// The undecodable bytes, unchanged.
    pub value: Vec<u8>,
    pub reason: String,
    /// Wall clock when it was moved aside (epoch ms).
    pub at_ms: i64,
    /// For changelog records: the changelog offset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub offset: Option<i64>,
}

impl Quarantined {
    pub fn new(kind: Kind, partition: u32, key: &[u8], value: &[u8], reason: String) -> Self {
        Quarantined {
            kind,
            partition,
            key: key.to_vec(),
            value: value.to_vec(),
            reason,
            at_ms: chrono::Utc::now().timestamp_millis(),
            offset: None,
        }
    }

    /// `partition | kind | original key (| offset for changelog records)`.
    pub fn store_key(&self) -> Vec<u8> {
        let mut k = Vec::with_capacity(13 + self.key.len());
        k.extend_from_slice(&self.partition.to_be_bytes());
        k.push(self.kind.tag());
        k.extend_from_slice(&self.key);
        if let Some(o) = self.offset {
            k.extend_from_slice(&o.to_be_bytes());
        }
        k
    }

    /// Adds the record to `batch`.
    pub fn write_to(&self, batch: &mut Batch) {
        batch.put(
            Table::Quarantine,
            self.store_key(),
            serde_json::to_vec(self).expect("serializable"),
        );
    }

    /// The `churnwatch.error` of the record's dead letter.
    pub fn dead_letter_error(&self) -> String {
        format!(
            "corrupt_state: {} record in partition {}: {}",
            self.kind.as_str(),
            self.partition,
            self.reason
        )
    }
}

/// Every quarantined record, in key order (partition, kind, key). Entries
/// that do not decode themselves are listed with what is known.
pub fn list<S: Store + ?Sized>(store: &S) -> Result<Vec<Quarantined>, StoreError> {
    let mut out = Vec::new();
    super::scan_chunks(store, Table::Quarantine, &[], &[0xff; 5], 10_000, |chunk| {
        for (k, v) in chunk {
            out.push(serde_json::from_slice(&v).unwrap_or_else(|e| {
                Quarantined {
                    kind: Kind::Member,
                    partition: k
                        .get(..4)
                        .map_or(0, |b| u32::from_be_bytes(b.try_into().expect("4 bytes"))),
                    key: k.clone(),
                    value: v.clone(),
                    reason: format!("quarantine entry itself unreadable: {e}"),
                    at_ms: 0,
                    offset: None,
                }
            }));
        }
        Ok::<_, StoreError>(())
    })?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::MemoryStore;

    #[test]
    fn quarantined_records_are_listed_with_their_reason_once_per_key() {
        let store = MemoryStore::new();
        let mut b = Batch::default();
        let q = Quarantined::new(
            Kind::Member,
            3,
            b"\0\0\0\x03m1",
            b"\xff\xfe",
            "truncated".into(),
        );
        q.write_to(&mut b);
        let mut again = q.clone();
        again.reason = "still truncated".into();
        again.write_to(&mut b);
        Quarantined::new(Kind::Outbox, 0, b"k", b"v", "bad tag".into()).write_to(&mut b);
        store.write(b).unwrap();
        let all = list(&store).unwrap();
        assert_eq!(all.len(), 2);
        assert_eq!(all[0].kind, Kind::Outbox);
        assert_eq!(all[1].reason, "still truncated");
        assert_eq!(all[1].value, b"\xff\xfe");
        assert!(all[1]
            .dead_letter_error()
            .starts_with("corrupt_state: member record in partition 3"));
    }
}
