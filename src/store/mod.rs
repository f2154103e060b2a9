//! The status database: redb tables and queries. Sync code; callers keep it
//! off the async executor.
//!
//! Durability contract: every `write_*` call returns only after its commit is
//! on disk (redb `Durability::Immediate`), so a record the API acknowledged
//! survives a crash.

pub mod keys;
pub mod outbox;
pub mod record;

use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};

use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};
use uuid::Uuid;

use record::{Status, Transition, TransitionPatch, UploadRecord};

/// Upload id -> JSON record.
const UPLOADS: TableDefinition<u128, &[u8]> = TableDefinition::new("uploads");
/// (tenant, seq) -> upload id: a tenant's uploads in creation order.
const TENANT_UPLOADS: TableDefinition<(&str, u64), u128> = TableDefinition::new("tenant_uploads");
/// (upload id, n) -> JSON transition: the append-only history of each upload.
const TRANSITIONS: TableDefinition<(u128, u32), &[u8]> = TableDefinition::new("transitions");
/// Counters; `next_seq` orders uploads.
const META: TableDefinition<&str, u64> = TableDefinition::new("meta");

/// Errors of the status database.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The database file could not be opened or created.
    #[error("cannot open database: {0}")]
    Open(#[from] redb::DatabaseError),
    /// A transaction, table or storage operation failed.
    #[error("database error: {0}")]
    Db(String),
    /// A stored record did not decode.
    #[error("corrupt record: {0}")]
    Corrupt(#[from] serde_json::Error),
    /// The upload does not exist.
    #[error("no such upload: {0}")]
    NotFound(Uuid),
}

macro_rules! db_err {
    ($($t:ty),*) => {$(
        impl From<$t> for StoreError {
            fn from(e: $t) -> Self {
                StoreError::Db(e.to_string())
            }
        }
    )*};
}
db_err!(
    redb::TransactionError,
    redb::TableError,
    redb::StorageError,
    redb::CommitError
);

/// The stored record under `key` in an open uploads table, decoded.
fn stored_record(
    uploads: &impl ReadableTable<u128, &'static [u8]>,
    key: u128,
) -> Result<Option<UploadRecord>, StoreError> {
    match uploads.get(key)? {
        Some(bytes) => Ok(Some(serde_json::from_slice(bytes.value())?)),
        None => Ok(None),
    }
}

/// One write for [`Store::apply_batch`].
#[derive(Debug)]
pub enum WriteOp {
    /// A new record; its `seq` is assigned here.
    Insert(Box<UploadRecord>),
    /// A status change.
    Transition {
        /// The upload.
        id: Uuid,
        /// The new status.
        to: Status,
        /// What else changes.
        patch: Box<TransitionPatch>,
    },
    /// Fields change (the source, once probed); the status and the history do not.
    Patch {
        /// The upload.
        id: Uuid,
        /// What changes.
        patch: Box<TransitionPatch>,
    },
}

/// The open status database. Reads may run from any thread at any time
/// (MVCC); writes come only from the registry actor, except the webhook
/// delivery actor settling outbox rows ([`outbox`]).
pub struct Store {
    db: Database,
    /// Picks the webhook endpoints of each transition's event; none, no events.
    router: OnceLock<Arc<dyn outbox::EndpointRouter>>,
    /// Outbox rows committed since open: tells the registry when to wake delivery.
    events_written: AtomicU64,
}

impl Store {
    /// Opens (or creates) the database and makes sure every table exists.
    pub fn open(path: &Path) -> Result<Store, StoreError> {
        let db = Database::create(path)?;
        let txn = db.begin_write()?;
        txn.open_table(UPLOADS)?;
        txn.open_table(TENANT_UPLOADS)?;
        txn.open_table(TRANSITIONS)?;
        txn.open_table(META)?;
        outbox::OutboxTables::open(&txn)?.reindex()?;
        txn.commit()?;
        Ok(Store {
            db,
            router: OnceLock::new(),
            events_written: AtomicU64::new(0),
        })
    }

    /// Inserts a new record, assigning its `seq`, and logs its creation. Durable on return.
    pub fn insert(&self, record: &mut UploadRecord) -> Result<(), StoreError> {
        let op = WriteOp::Insert(Box::new(record.clone()));
        *record = self.apply_batch(vec![op])?.remove(0)?;
        Ok(())
    }

    /// Applies one status transition to a stored record and appends it to the history.
    /// Durable on return; returns the updated record.
    pub fn transition(
        &self,
        id: Uuid,
        to: Status,
        patch: TransitionPatch,
    ) -> Result<UploadRecord, StoreError> {
        let op = WriteOp::Transition {
            id,
            to,
            patch: Box::new(patch),
        };
        self.apply_batch(vec![op])?.remove(0)
    }

    /// Group commit: applies every operation in one write transaction and one
    /// fsync. An operation on an unknown upload fails alone; a failure of the
    /// transaction itself fails them all (the outer error). Results are in
    /// the order of `ops`. Each insert and transition also writes its webhook
    /// event to the outbox, in the same transaction.
    pub fn apply_batch(
        &self,
        ops: Vec<WriteOp>,
    ) -> Result<Vec<Result<UploadRecord, StoreError>>, StoreError> {
        let txn = self.db.begin_write()?;
        let mut results = Vec::with_capacity(ops.len());
        let mut events = 0;
        {
            let mut uploads = txn.open_table(UPLOADS)?;
            let mut index = txn.open_table(TENANT_UPLOADS)?;
            let mut history = txn.open_table(TRANSITIONS)?;
            let mut meta = txn.open_table(META)?;
            let mut outbox_rows = outbox::OutboxTables::open(&txn)?;
            for op in ops {
                let reported = !matches!(op, WriteOp::Patch { .. });
                let result = match op {
                    WriteOp::Insert(mut record) => {
                        let seq = meta.get("next_seq")?.map(|v| v.value()).unwrap_or(1);
                        meta.insert("next_seq", seq + 1)?;
                        record.seq = seq;
                        let id = record.id.as_u128();
                        uploads.insert(id, serde_json::to_vec(&record)?.as_slice())?;
                        index.insert((record.tenant.as_str(), seq), id)?;
                        let created = Transition {
                            from: None,
                            to: record.status,
                            at: record.created_at,
                            error_code: None,
                        };
                        history.insert((id, 0), serde_json::to_vec(&created)?.as_slice())?;
                        Ok(*record)
                    }
                    WriteOp::Patch { id, patch } => {
                        let key = id.as_u128();
                        let stored = stored_record(&uploads, key)?;
                        match stored {
                            None => Err(StoreError::NotFound(id)),
                            Some(mut record) => {
                                record.patch(*patch);
                                uploads.insert(key, serde_json::to_vec(&record)?.as_slice())?;
                                Ok(record)
                            }
                        }
                    }
                    WriteOp::Transition { id, to, patch } => {
                        let key = id.as_u128();
                        let stored = stored_record(&uploads, key)?;
                        match stored {
                            None => Err(StoreError::NotFound(id)),
                            Some(mut record) => {
                                let change = record.apply(to, *patch, record::now_utc());
                                uploads.insert(key, serde_json::to_vec(&record)?.as_slice())?;
                                let next = history
                                    .range((key, 0)..=(key, u32::MAX))?
                                    .next_back()
                                    .transpose()?
                                    .map(|(k, _)| k.value().1 + 1)
                                    .unwrap_or(0);
                                history
                                    .insert((key, next), serde_json::to_vec(&change)?.as_slice())?;
                                if to == Status::Completed {
                                    crate::faults::crash_if(crate::faults::CrashPoint::MidCommit);
                                }
                                Ok(record)
                            }
                        }
                    }
                };
                if let (true, Ok(record), Some(router)) = (reported, &result, self.router.get()) {
                    let endpoints = router.endpoints(record);
                    events += outbox::enqueue(&mut outbox_rows, &mut meta, endpoints, record)?;
                }
                results.push(result);
            }
        }
        txn.commit()?;
        self.events_written.fetch_add(events, Ordering::Relaxed);
        Ok(results)
    }

    /// One record, whoever owns it.
    pub fn get(&self, id: Uuid) -> Result<Option<UploadRecord>, StoreError> {
        let txn = self.db.begin_read()?;
        stored_record(&txn.open_table(UPLOADS)?, id.as_u128())
    }

    /// A tenant's most recent uploads, newest first.
    pub fn list_recent(&self, tenant: &str, limit: usize) -> Result<Vec<UploadRecord>, StoreError> {
        let txn = self.db.begin_read()?;
        let index = txn.open_table(TENANT_UPLOADS)?;
        let uploads = txn.open_table(UPLOADS)?;
        let mut out = Vec::with_capacity(limit.min(64));
        for entry in index.range((tenant, 0)..=(tenant, u64::MAX))?.rev() {
            if out.len() == limit {
                break;
            }
            let (_, id) = entry?;
            if let Some(bytes) = uploads.get(id.value())? {
                out.push(serde_json::from_slice(bytes.value())?);
            }
        }
        Ok(out)
    }

    /// Every record not yet completed or failed, oldest first: the work to resume at start.
    pub fn unfinished(&self) -> Result<Vec<UploadRecord>, StoreError> {
        let txn = self.db.begin_read()?;
        let uploads = txn.open_table(UPLOADS)?;
        let mut out = Vec::new();
        for entry in uploads.iter()? {
            let (_, bytes) = entry?;
            let record: UploadRecord = serde_json::from_slice(bytes.value())?;
            if !record.status.is_terminal() {
                out.push(record);
            }
        }
        out.sort_by_key(|r| r.seq);
        Ok(out)
    }

    /// The recorded history of one upload, oldest first.
    pub fn transitions(&self, id: Uuid) -> Result<Vec<Transition>, StoreError> {
        let txn = self.db.begin_read()?;
        let history = txn.open_table(TRANSITIONS)?;
        let mut out = Vec::new();
        for entry in history.range((id.as_u128(), 0)..=(id.as_u128(), u32::MAX))? {
            let (_, bytes) = entry?;
            out.push(serde_json::from_slice(bytes.value())?);
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use record::UploadError;

    pub(super) fn sample(tenant: &str) -> UploadRecord {
        let now = record::now_utc();
        UploadRecord {
            id: Uuid::new_v4(),
            seq: 0,
            tenant: tenant.into(),
            filename: "a.mp4".into(),
            folder: "root".into(),
            status: Status::Pending,
            created_at: now,
            updated_at: now,
            size_bytes: 10,
            source: None,
            media_token: "t".into(),
            outputs: None,
            error: None,
            attempts: 0,
            callback_url: None,
        }
    }

    #[test]
    fn records_survive_reopen_with_history() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("db.redb");
        let mut rec = sample("k1");
        {
            let store = Store::open(&path).unwrap();
            store.insert(&mut rec).unwrap();
            let patch = TransitionPatch {
                error: Some(UploadError {
                    code: "unsupported_media".into(),
                    message: "no".into(),
                }),
                ..Default::default()
            };
            store.transition(rec.id, Status::Failed, patch).unwrap();
        }
        let store = Store::open(&path).unwrap();
        let got = store.get(rec.id).unwrap().unwrap();
        assert_eq!(got.status, Status::Failed);
        assert_eq!(got.error.unwrap().code, "unsupported_media");
        let history = store.transitions(rec.id).unwrap();
        assert_eq!(history.len(), 2);
        assert_eq!(history[0].to, Status::Pending);
        assert_eq!(history[1].from, Some(Status::Pending));
        assert_eq!(history[1].error_code.as_deref(), Some("unsupported_media"));
        assert!(store.unfinished().unwrap().is_empty());
    }

    #[test]
    fn listing_is_per_tenant_newest_first_and_limited() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("db.redb")).unwrap();
        let mut ids = Vec::new();
        for i in 0..5 {
            let mut rec = sample(if i % 2 == 0 { "a" } else { "b" });
            store.insert(&mut rec).unwrap();
            ids.push(rec.id);
        }
        let a = store.list_recent("a", 2).unwrap();
        assert_eq!(
            a.iter().map(|r| r.id).collect::<Vec<_>>(),
            vec![ids[4], ids[2]]
        );
        assert_eq!(store.list_recent("b", 50).unwrap().len(), 2);
        assert!(store.list_recent("c", 50).unwrap().is_empty());
        assert_eq!(store.unfinished().unwrap().len(), 5);
    }

    #[test]
    fn a_batch_commits_together_and_an_unknown_id_fails_alone() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("db.redb");
        let (a, b) = (sample("t"), sample("t"));
        {
            let store = Store::open(&path).unwrap();
            let ops = vec![
                WriteOp::Insert(Box::new(a.clone())),
                WriteOp::Insert(Box::new(b.clone())),
                WriteOp::Transition {
                    id: Uuid::new_v4(),
                    to: Status::Processing,
                    patch: Box::default(),
                },
                WriteOp::Transition {
                    id: a.id,
                    to: Status::Processing,
                    patch: Box::new(TransitionPatch {
                        count_attempt: true,
                        ..Default::default()
                    }),
                },
            ];
            let results = store.apply_batch(ops).unwrap();
            assert!(results[0].is_ok() && results[1].is_ok() && results[3].is_ok());
            assert!(matches!(results[2], Err(StoreError::NotFound(_))));
            assert_eq!(
                results[1].as_ref().unwrap().seq,
                results[0].as_ref().unwrap().seq + 1
            );
        }
        let store = Store::open(&path).unwrap();
        let a = store.get(a.id).unwrap().unwrap();
        assert_eq!((a.status, a.attempts), (Status::Processing, 1));
        assert_eq!(store.transitions(a.id).unwrap().len(), 2);
        assert_eq!(store.get(b.id).unwrap().unwrap().status, Status::Pending);
    }

    #[test]
    fn transition_of_unknown_id_is_not_found() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("db.redb")).unwrap();
        let err = store
            .transition(
                Uuid::new_v4(),
                Status::Processing,
                TransitionPatch::default(),
            )
            .unwrap_err();
        assert!(matches!(err, StoreError::NotFound(_)));
    }
}
