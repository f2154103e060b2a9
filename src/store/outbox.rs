//! The webhook outbox: one row per event and endpoint, written by
//! [`Store::apply_batch`] in the same transaction as the transition it
//! reports, so an event exists exactly when its transition does.
//!
//! Rows are keyed by a counter, so key order is event order. A row is a
//! candidate for delivery only while it is the oldest row of its upload and
//! endpoint (its chain), which keeps deliveries in order per upload. The
//! delivery actor settles each row once tried: deleted when delivered or
//! given up, else rescheduled. Those writes are durable too; a crash between
//! a delivery and its settlement means one more delivery (at least once).
//!
//! Two indexes, kept in the same transactions, make a poll cost what is due
//! rather than what is queued (an endpoint down for a day may hold many
//! thousands of rows): every row by chain, and the head of each chain by the
//! time of its next attempt.

use std::collections::HashSet;

use redb::{ReadableTable, ReadableTableMetadata, Table, TableDefinition, WriteTransaction};
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use uuid::Uuid;

use super::record::UploadRecord;
use super::{Store, StoreError};

/// Outbox sequence -> JSON [`Delivery`].
pub(super) const OUTBOX: TableDefinition<u64, &[u8]> = TableDefinition::new("webhook_outbox");
/// (chain, sequence) of every row: a chain's rows in order.
const CHAINS: TableDefinition<(&str, u64), ()> = TableDefinition::new("webhook_outbox_chains");
/// (next attempt in Unix milliseconds, sequence) of the head row of each chain.
const DUE: TableDefinition<(u64, u64), ()> = TableDefinition::new("webhook_outbox_due");

/// Key in the `meta` table of the next outbox sequence.
const NEXT_OUTBOX_SEQ: &str = "next_outbox_seq";

/// Where an event goes. URLs and secrets of the global and tenant endpoints are
/// looked up at delivery time, so a changed URL or secret applies to retries.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Endpoint {
    /// The server's endpoint, `[webhooks] url`.
    Global,
    /// The endpoint stored with the tenant's API key.
    Tenant,
    /// The `callback_url` given with the upload, signed with the tenant's secret.
    Callback {
        /// The URL.
        url: String,
    },
}

/// Decides which endpoints get the event of a committed record.
pub trait EndpointRouter: Send + Sync {
    /// The endpoints for the event of `record`'s latest transition.
    fn endpoints(&self, record: &UploadRecord) -> Vec<Endpoint>;
}

/// One event waiting for one endpoint.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Delivery {
    /// The event's id; the same for every endpoint and attempt.
    pub event_id: Uuid,
    /// Where it goes.
    pub endpoint: Endpoint,
    /// The record as the transition left it; its status is the event type and
    /// its `updated_at` the time of the event.
    pub record: UploadRecord,
    /// Attempts so far.
    pub attempts: u32,
    /// Not to be tried before this time.
    #[serde(with = "time::serde::rfc3339")]
    pub next_attempt_at: OffsetDateTime,
    /// Why the last attempt failed.
    pub last_error: Option<String>,
    /// The event is the upload's deletion (`upload.deleted`), not a transition.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub deleted: bool,
    /// The event is that the upload can be played while it is processed
    /// (`upload.previewable`), not a transition.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub previewable: bool,
}

/// What a write's event tells of the upload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventKind {
    /// Its creation or a transition: the record's status names it.
    Transition,
    /// Its ladder can be played while it is processed.
    Previewable,
    /// Its deletion.
    Deleted,
}

/// The outcome of one attempt, written back by the delivery actor.
#[derive(Debug, Clone)]
pub enum Settlement {
    /// The endpoint accepted it, or it is given up: the row goes.
    Done,
    /// It failed and will be tried again at `at`.
    Retry {
        /// Next attempt.
        at: OffsetDateTime,
        /// Why this one failed.
        error: String,
    },
}

impl Endpoint {
    /// The endpoint's part of a chain name.
    fn chain_part(&self) -> String {
        match self {
            Endpoint::Global => "global".into(),
            Endpoint::Tenant => "tenant".into(),
            Endpoint::Callback { url } => format!("callback {url}"),
        }
    }
}

impl Delivery {
    /// The name of the chain (upload and endpoint) this row belongs to.
    fn chain(&self) -> String {
        format!("{} {}", self.record.id, self.endpoint.chain_part())
    }
}

/// A time as the due index keys it.
fn due_key(at: OffsetDateTime) -> u64 {
    u64::try_from(at.unix_timestamp_nanos() / 1_000_000).unwrap_or(0)
}

/// The outbox tables, open in one write transaction.
pub(super) struct OutboxTables<'txn> {
    rows: Table<'txn, u64, &'static [u8]>,
    chains: Table<'txn, (&'static str, u64), ()>,
    due: Table<'txn, (u64, u64), ()>,
}

impl<'txn> OutboxTables<'txn> {
    /// Opens (creating) the tables in `txn`.
    pub(super) fn open(txn: &'txn WriteTransaction) -> Result<OutboxTables<'txn>, StoreError> {
        Ok(OutboxTables {
            rows: txn.open_table(OUTBOX)?,
            chains: txn.open_table(CHAINS)?,
            due: txn.open_table(DUE)?,
        })
    }

    /// Adds row `seq` to its chain's index; a row that heads its chain becomes due.
    fn index(&mut self, seq: u64, row: &Delivery) -> Result<(), StoreError> {
        let chain = row.chain();
        let heads = self
            .chains
            .range((chain.as_str(), 0)..(chain.as_str(), seq))?
            .next()
            .is_none();
        self.chains.insert((chain.as_str(), seq), ())?;
        if heads {
            self.due.insert((due_key(row.next_attempt_at), seq), ())?;
        }
        Ok(())
    }

    /// Builds the indexes of an outbox written before they existed.
    pub(super) fn reindex(&mut self) -> Result<(), StoreError> {
        if self.rows.is_empty()? || !self.chains.is_empty()? {
            return Ok(());
        }
        let mut rows = Vec::new();
        for entry in self.rows.iter()? {
            let (key, bytes) = entry?;
            let row: Delivery = serde_json::from_slice(bytes.value())?;
            rows.push((key.value(), row));
        }
        for (seq, row) in rows {
            self.index(seq, &row)?;
        }
        Ok(())
    }
}

/// Writes the event rows of one committed record, inside its write
/// transaction. Returns how many.
pub(super) fn enqueue(
    outbox: &mut OutboxTables,
    meta: &mut Table<&str, u64>,
    endpoints: Vec<Endpoint>,
    record: &UploadRecord,
    kind: EventKind,
) -> Result<u64, StoreError> {
    if endpoints.is_empty() {
        return Ok(0);
    }
    let count = endpoints.len() as u64;
    let event_id = Uuid::new_v4();
    let mut seq = meta.get(NEXT_OUTBOX_SEQ)?.map(|v| v.value()).unwrap_or(1);
    for endpoint in endpoints {
        let row = Delivery {
            event_id,
            endpoint,
            record: record.clone(),
            attempts: 0,
            next_attempt_at: record.updated_at,
            last_error: None,
            deleted: kind == EventKind::Deleted,
            previewable: kind == EventKind::Previewable,
        };
        outbox
            .rows
            .insert(seq, serde_json::to_vec(&row)?.as_slice())?;
        outbox.index(seq, &row)?;
        seq += 1;
    }
    meta.insert(NEXT_OUTBOX_SEQ, seq)?;
    Ok(count)
}

impl Store {
    /// Has every later transition write its webhook events, to the endpoints `router` picks.
    /// Without a router (tools, benches) no event is written. Set once; later calls are ignored.
    pub fn route_webhooks(&self, router: std::sync::Arc<dyn EndpointRouter>) {
        let _ = self.router.set(router);
    }

    /// Up to `limit` deliveries due at `now`, oldest first, each the oldest of its
    /// chain (upload and endpoint); rows in `in_flight` are left out, and so are
    /// the chains they head.
    pub fn outbox_due(
        &self,
        now: OffsetDateTime,
        in_flight: &HashSet<u64>,
        limit: usize,
    ) -> Result<Vec<(u64, Delivery)>, StoreError> {
        self.read(|txn| {
            let rows = txn.open_table(OUTBOX)?;
            let heads = txn.open_table(DUE)?;
            let mut due = Vec::new();
            for entry in heads.range((0, 0)..=(due_key(now), u64::MAX))? {
                if due.len() >= limit {
                    break;
                }
                let (_, seq) = entry?.0.value();
                if in_flight.contains(&seq) {
                    continue;
                }
                if let Some(bytes) = rows.get(seq)? {
                    due.push((seq, serde_json::from_slice(bytes.value())?));
                }
            }
            // Oldest event first, as the rows are numbered.
            due.sort_by_key(|(seq, _)| *seq);
            Ok(due)
        })
    }

    /// Records the outcome of one delivery attempt. Durable on return.
    pub fn outbox_settle(&self, seq: u64, settlement: Settlement) -> Result<(), StoreError> {
        self.write(|txn| {
            let mut outbox = OutboxTables::open(txn)?;
            let row: Option<Delivery> = match outbox.rows.get(seq)? {
                Some(bytes) => Some(serde_json::from_slice(bytes.value())?),
                None => None,
            };
            let Some(mut row) = row else {
                return Ok(());
            };
            outbox.due.remove((due_key(row.next_attempt_at), seq))?;
            match settlement {
                Settlement::Done => {
                    outbox.rows.remove(seq)?;
                    let chain = row.chain();
                    outbox.chains.remove((chain.as_str(), seq))?;
                    // The next row of the chain now heads it.
                    let next = outbox
                        .chains
                        .range((chain.as_str(), seq)..=(chain.as_str(), u64::MAX))?
                        .next()
                        .transpose()?
                        .map(|(key, _)| key.value().1);
                    if let Some(next) = next {
                        let bytes = outbox.rows.get(next)?.map(|b| b.value().to_vec());
                        if let Some(bytes) = bytes {
                            let next_row: Delivery = serde_json::from_slice(&bytes)?;
                            outbox
                                .due
                                .insert((due_key(next_row.next_attempt_at), next), ())?;
                        }
                    }
                }
                Settlement::Retry { at, error } => {
                    row.attempts += 1;
                    row.next_attempt_at = at;
                    row.last_error = Some(error);
                    outbox
                        .rows
                        .insert(seq, serde_json::to_vec(&row)?.as_slice())?;
                    outbox.due.insert((due_key(at), seq), ())?;
                }
            }
            Ok(())
        })
    }

    /// Outbox rows committed since the database was opened.
    pub fn events_written(&self) -> u64 {
        self.events_written
            .load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Deliveries not yet settled.
    pub fn outbox_len(&self) -> Result<u64, StoreError> {
        self.read(|txn| Ok(txn.open_table(OUTBOX)?.len()?))
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::store::record::{Status, TransitionPatch};
    use crate::store::tests::sample;

    struct Everyone;

    impl EndpointRouter for Everyone {
        fn endpoints(&self, record: &UploadRecord) -> Vec<Endpoint> {
            let mut endpoints = vec![Endpoint::Global];
            if let Some(url) = &record.callback_url {
                endpoints.push(Endpoint::Callback { url: url.clone() });
            }
            endpoints
        }
    }

    #[test]
    fn transitions_write_events_in_order_per_chain_and_settle() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("db.redb");
        let mut a = sample("t");
        a.callback_url = Some("http://127.0.0.1:1/cb".into());
        {
            let store = Store::open(&path).unwrap();
            store.route_webhooks(Arc::new(Everyone));
            store.insert(&mut a).unwrap();
            store
                .transition(a.id, Status::Processing, TransitionPatch::default())
                .unwrap();
            let mut b = sample("t");
            store.insert(&mut b).unwrap();
            // A patch is no transition: no event.
            store
                .apply_batch(vec![crate::store::WriteOp::Patch {
                    id: b.id,
                    patch: Box::default(),
                }])
                .unwrap();
            assert_eq!(store.outbox_len().unwrap(), 5);
        }
        // The rows are durable with their transitions.
        let store = Store::open(&path).unwrap();
        let later = OffsetDateTime::now_utc() + time::Duration::minutes(1);
        let due = store.outbox_due(later, &HashSet::new(), 10).unwrap();
        let heads: Vec<(Status, &Endpoint)> = due
            .iter()
            .map(|(_, d)| (d.record.status, &d.endpoint))
            .collect();
        // Only the head of each chain: a's pending event to both endpoints, b's to one.
        assert_eq!(heads.len(), 3, "{heads:?}");
        assert!(heads.iter().all(|(s, _)| *s == Status::Pending));
        assert_eq!(due[0].1.event_id, due[1].1.event_id);

        let first = due[0].0;
        let retry_at = later + time::Duration::hours(1);
        store
            .outbox_settle(
                first,
                Settlement::Retry {
                    at: retry_at,
                    error: "503".into(),
                },
            )
            .unwrap();
        let due = store.outbox_due(later, &HashSet::new(), 10).unwrap();
        assert_eq!(due.len(), 2, "the rescheduled head blocks its chain");
        let again = store.outbox_due(retry_at, &HashSet::new(), 10).unwrap();
        assert_eq!(again[0].1.attempts, 1);
        store.outbox_settle(first, Settlement::Done).unwrap();
        let due = store.outbox_due(later, &HashSet::new(), 10).unwrap();
        let next = due
            .iter()
            .find(|(_, d)| d.endpoint == Endpoint::Global && d.record.id == a.id);
        assert_eq!(next.unwrap().1.record.status, Status::Processing);
        let in_flight: HashSet<u64> = due.iter().map(|(seq, _)| *seq).collect();
        assert!(store.outbox_due(later, &in_flight, 10).unwrap().is_empty());
    }

    #[test]
    fn an_outbox_written_before_the_indexes_is_indexed_at_open() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("db.redb");
        let a = sample("t");
        let row = |status, endpoint| {
            let mut record = a.clone();
            record.status = status;
            Delivery {
                event_id: Uuid::new_v4(),
                endpoint,
                record,
                attempts: 0,
                next_attempt_at: a.updated_at,
                last_error: None,
                deleted: false,
                previewable: false,
            }
        };
        {
            // Rows only, as the outbox was kept before it had indexes.
            let db = redb::Database::create(&path).unwrap();
            let txn = db.begin_write().unwrap();
            {
                let mut rows = txn.open_table(OUTBOX).unwrap();
                for (seq, delivery) in [
                    (1, row(Status::Pending, Endpoint::Global)),
                    (2, row(Status::Pending, Endpoint::Tenant)),
                    (3, row(Status::Processing, Endpoint::Global)),
                ] {
                    let bytes = serde_json::to_vec(&delivery).unwrap();
                    rows.insert(seq, bytes.as_slice()).unwrap();
                }
            }
            txn.commit().unwrap();
        }
        let store = Store::open(&path).unwrap();
        let later = OffsetDateTime::now_utc() + time::Duration::minutes(1);
        let due = store.outbox_due(later, &HashSet::new(), 10).unwrap();
        let seqs: Vec<u64> = due.iter().map(|(seq, _)| *seq).collect();
        assert_eq!(seqs, [1, 2]);
        store.outbox_settle(1, Settlement::Done).unwrap();
        let due = store.outbox_due(later, &HashSet::new(), 10).unwrap();
        let seqs: Vec<u64> = due.iter().map(|(seq, _)| *seq).collect();
        assert_eq!(seqs, [2, 3]);
    }
}
