//! The status database: redb tables and queries. Sync code.
//!
//! Durability contract: every write returns only after its commit is on disk
//! (redb `Durability::Immediate`), so a record the API acknowledged survives
//! a crash.
//!
//! The rule for calling it from async code: a read of a bounded size (one
//! record, one upload's history, one page of a listing, the outbox's due
//! rows) may run on the executor, since redb reads an MVCC snapshot from its
//! page cache without waiting for any writer; a scan of a whole table
//! ([`Store::unfinished`]) and every write go to a blocking thread (the
//! registry's committer, or `Services::blocking`). Nothing here sleeps or
//! waits on another process.
//!
//! redb gives up on its file after an I/O error (a full disk, say): every
//! later operation fails until it is opened again. The store opens it again
//! itself, at the first write that meets the failure (writes run on blocking
//! threads; reads never wait for an opening), so a disk that fills up and is
//! freed again costs the writes made while it was full and nothing else.

pub mod cleanup;
pub mod idempotency;
pub mod kept;
pub mod keys;
pub mod listing;
pub mod outbox;
pub mod record;
pub mod tus;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock, PoisonError, RwLock};

use redb::{
    Database, ReadTransaction, ReadableDatabase, ReadableTable, TableDefinition, WriteTransaction,
};
use uuid::Uuid;

use record::{Status, Transition, TransitionPatch, UploadRecord};

/// Upload id -> JSON record.
pub(crate) const UPLOADS: TableDefinition<u128, &[u8]> = TableDefinition::new("uploads");
/// (tenant, seq) -> upload id: a tenant's uploads in creation order.
pub(crate) const TENANT_UPLOADS: TableDefinition<(&str, u64), u128> =
    TableDefinition::new("tenant_uploads");
/// (upload id, n) -> JSON transition: the append-only history of each upload.
const TRANSITIONS: TableDefinition<(u128, u32), &[u8]> = TableDefinition::new("transitions");
/// Counters; `next_seq` orders uploads.
pub(crate) const META: TableDefinition<&str, u64> = TableDefinition::new("meta");

/// Errors of the status database and the key file. Each keeps its cause,
/// so that a full disk is still recognisable where it is answered
/// ([`StoreError::is_disk_full`]).
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The database file could not be opened or created.
    #[error("cannot open database: {0}")]
    Open(#[from] redb::DatabaseError),
    /// A transaction could not begin.
    #[error("database transaction: {0}")]
    Transaction(#[from] redb::TransactionError),
    /// A table could not be opened.
    #[error("database table: {0}")]
    Table(#[from] redb::TableError),
    /// Reading or writing the database file failed.
    #[error("database storage: {0}")]
    Storage(#[from] redb::StorageError),
    /// A commit failed; nothing of its transaction was written.
    #[error("database commit: {0}")]
    Commit(#[from] redb::CommitError),
    /// A stored record did not decode.
    #[error("corrupt record: {0}")]
    Corrupt(#[from] serde_json::Error),
    /// A file beside the database (the key change token) failed.
    #[error("{what}: {source}")]
    Io {
        /// What was being done.
        what: &'static str,
        /// The cause.
        source: std::io::Error,
    },
    /// The system's random number source failed.
    #[error("no randomness: {0}")]
    Random(getrandom::Error),
    /// The write was one of a batch whose commit failed; the cause is shared by all of them.
    #[error("{0}")]
    Batch(Arc<StoreError>),
    /// New uploads are refused: the disk holding the database has less free space than the reserve.
    #[error("the disk holding the database has {free} bytes free, less than the {reserve} kept in reserve")]
    BelowReserve {
        /// Bytes free now.
        free: u64,
        /// Bytes kept for the accepted uploads' own work.
        reserve: u64,
    },
    /// The upload does not exist.
    #[error("no such upload: {0}")]
    NotFound(Uuid),
    /// The transition does not apply to the upload in its status (it was
    /// cancelled, say, while a worker was about to move it on); nothing was written.
    #[error("the upload is {}", .0.text())]
    Conflict(Status),
    /// A retry of a failed upload whose source is no longer kept.
    #[error("the source of upload {0} is no longer kept")]
    SourceGone(Uuid),
    /// The database could not be opened again after an I/O error (the
    /// cause); the next write tries again.
    #[error("the database is not open: opening it again failed: {0}")]
    NotOpen(Arc<StoreError>),
}

impl StoreError {
    /// True when the cause is a full disk, at any depth.
    pub fn is_disk_full(&self) -> bool {
        match self {
            StoreError::Io { source, .. } => crate::layout::is_disk_full(source),
            StoreError::Batch(inner) | StoreError::NotOpen(inner) => inner.is_disk_full(),
            StoreError::BelowReserve { .. } => true,
            other => matches!(
                other.storage_cause(),
                Some(redb::StorageError::Io(io)) if crate::layout::is_disk_full(io)
            ),
        }
    }

    /// True when redb has given up on its file after an I/O error: every
    /// later operation fails until the database is opened again.
    fn needs_reopen(&self) -> bool {
        matches!(
            self.storage_cause(),
            Some(redb::StorageError::Io(_) | redb::StorageError::PreviousIo)
        ) || matches!(self, StoreError::NotOpen(_))
    }

    /// The storage error inside redb's error, if that is what it is.
    fn storage_cause(&self) -> Option<&redb::StorageError> {
        match self {
            StoreError::Storage(e)
            | StoreError::Commit(redb::CommitError::Storage(e))
            | StoreError::Transaction(redb::TransactionError::Storage(e))
            | StoreError::Table(redb::TableError::Storage(e))
            | StoreError::Open(redb::DatabaseError::Storage(e)) => Some(e),
            _ => None,
        }
    }
}

/// Opens (or creates) the database file and makes sure every table exists.
fn open_database(path: &Path) -> Result<Database, StoreError> {
    let db = Database::create(path)?;
    let txn = db.begin_write()?;
    txn.open_table(UPLOADS)?;
    txn.open_table(TENANT_UPLOADS)?;
    txn.open_table(TRANSITIONS)?;
    txn.open_table(META)?;
    txn.open_table(cleanup::CLEANUPS)?;
    kept::open(&txn)?;
    idempotency::open(&txn)?;
    tus::open(&txn)?;
    listing::open(&txn)?;
    outbox::OutboxTables::open(&txn)?.reindex()?;
    txn.commit()?;
    Ok(db)
}

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
    /// A new record; its `seq` is assigned here. With an `Idempotency-Key`,
    /// the create is remembered under it ([`idempotency`]).
    Insert(Box<UploadRecord>, Option<String>),
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
    /// The upload goes: its record, its history and its kept source; the
    /// removal of its stored outputs is recorded ([`cleanup`]) and an
    /// `upload.deleted` event written. The result is the record as it was.
    Delete {
        /// The upload.
        id: Uuid,
    },
}

/// The open status database. Reads may run from any thread at any time
/// (MVCC); writes come only from the registry actor, except the webhook
/// delivery actor settling outbox rows ([`outbox`]) and the cleaner
/// settling removals ([`cleanup`]).
pub struct Store {
    /// The database, and how many times it was opened (so that two threads
    /// that saw the same failure open it again only once); why it is not
    /// open, after an opening failed, until one succeeds.
    db: RwLock<(u64, Result<Database, Arc<StoreError>>)>,
    /// The database file.
    path: PathBuf,
    /// Picks the webhook endpoints of each transition's event; none, no events.
    router: OnceLock<Arc<dyn outbox::EndpointRouter>>,
    /// Outbox rows committed since open: tells the registry when to wake delivery.
    events_written: AtomicU64,
    /// Dropped after `db`, once the file is closed: wakes [`Store::on_close`]'s receivers.
    closed: tokio::sync::watch::Sender<()>,
}

impl Store {
    /// Opens (or creates) the database and makes sure every table exists.
    pub fn open(path: &Path) -> Result<Store, StoreError> {
        Ok(Store {
            db: RwLock::new((1, Ok(open_database(path)?))),
            path: path.to_path_buf(),
            router: OnceLock::new(),
            events_written: AtomicU64::new(0),
            closed: tokio::sync::watch::channel(()).0,
        })
    }

    /// A receiver whose `changed()` fails once this store is dropped and its file closed.
    pub fn on_close(&self) -> tokio::sync::watch::Receiver<()> {
        self.closed.subscribe()
    }

    /// Bytes free on the disk holding the database.
    pub fn free_bytes(&self) -> Result<u64, StoreError> {
        let dir = self.path.parent().unwrap_or(Path::new("."));
        crate::layout::free_bytes(dir).map_err(|source| StoreError::Io {
            what: "reading the free space of the database's disk",
            source,
        })
    }

    /// Runs `f` in a read transaction. Reads never open the file again
    /// (they may run on the executor); the next write does.
    fn read<T>(
        &self,
        f: impl FnOnce(&ReadTransaction) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        self.with_database(false, |db| f(&db.begin_read()?)).1
    }

    /// Runs `f` in a write transaction and commits it durably; if `f` fails,
    /// nothing is written. After an I/O error that leaves redb unusable, the
    /// file is opened again before the error is returned (writes run on
    /// blocking threads).
    fn write<T>(
        &self,
        f: impl FnOnce(&WriteTransaction) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        let (opened, result) = self.with_database(true, |db| {
            let txn = db.begin_write()?;
            let value = f(&txn)?;
            txn.commit()?;
            Ok(value)
        });
        if let Err(e) = &result {
            if e.needs_reopen() {
                self.reopen(opened, e);
            }
        }
        result
    }

    /// Checks that the database answers a read, and opens it again first if
    /// an I/O error or a failed opening left it unusable (so that an idle
    /// server recovers once the disk is freed). Blocking: call it from a
    /// blocking thread.
    pub fn probe(&self) -> Result<(), StoreError> {
        let read = |db: &Database| {
            let txn = db.begin_read()?;
            txn.open_table(UPLOADS)?;
            Ok(())
        };
        let (opened, result) = self.with_database(true, read);
        match result {
            Err(e) if e.needs_reopen() => {
                self.reopen(opened, &e);
                self.with_database(true, read).1
            }
            other => other,
        }
    }

    /// Runs `f` on the open database; returns which opening it ran on too.
    /// Without `wait`, a database being opened again is not waited for: it
    /// is `NotOpen` until it is open.
    fn with_database<T>(
        &self,
        wait: bool,
        f: impl FnOnce(&Database) -> Result<T, StoreError>,
    ) -> (u64, Result<T, StoreError>) {
        let guard = match self.db.try_read() {
            Ok(guard) => guard,
            Err(std::sync::TryLockError::Poisoned(poisoned)) => poisoned.into_inner(),
            Err(std::sync::TryLockError::WouldBlock) if !wait => {
                let reopening = StoreError::Storage(redb::StorageError::DatabaseClosed);
                return (0, Err(StoreError::NotOpen(Arc::new(reopening))));
            }
            Err(std::sync::TryLockError::WouldBlock) => {
                self.db.read().unwrap_or_else(PoisonError::into_inner)
            }
        };
        let result = match &guard.1 {
            Ok(db) => f(db),
            Err(cause) => Err(StoreError::NotOpen(cause.clone())),
        };
        (guard.0, result)
    }

    /// Closes and opens the database file again, unless another thread has
    /// done so since open number `seen`.
    fn reopen(&self, seen: u64, cause: &StoreError) {
        let mut guard = self.db.write().unwrap_or_else(PoisonError::into_inner);
        if guard.0 != seen {
            return;
        }
        // The old handle must be closed before the file can be opened again.
        guard.1 = Err(Arc::new(StoreError::Storage(
            redb::StorageError::DatabaseClosed,
        )));
        guard.0 += 1;
        guard.1 = match open_database(&self.path) {
            Ok(db) => {
                tracing::warn!(error = %cause, "database opened again after an I/O error");
                Ok(db)
            }
            Err(e) => {
                tracing::error!(error = %e, cause = %cause, "cannot open the database again");
                Err(Arc::new(e))
            }
        };
    }

    /// Inserts a new record, assigning its `seq`, and logs its creation. Durable on return.
    pub fn insert(&self, record: &mut UploadRecord) -> Result<(), StoreError> {
        let op = WriteOp::Insert(Box::new(record.clone()), None);
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
        let (results, events) = self.write(|txn| self.write_ops(txn, ops))?;
        self.events_written.fetch_add(events, Ordering::Relaxed);
        Ok(results)
    }

    /// The operations of [`Store::apply_batch`] in `txn`, and how many
    /// outbox rows they wrote.
    fn write_ops(
        &self,
        txn: &WriteTransaction,
        ops: Vec<WriteOp>,
    ) -> Result<(Vec<Result<UploadRecord, StoreError>>, u64), StoreError> {
        let mut results = Vec::with_capacity(ops.len());
        let mut events = 0;
        {
            let mut uploads = txn.open_table(UPLOADS)?;
            let mut index = txn.open_table(TENANT_UPLOADS)?;
            let mut history = txn.open_table(TRANSITIONS)?;
            let mut meta = txn.open_table(META)?;
            let mut outbox_rows = outbox::OutboxTables::open(txn)?;
            for op in ops {
                let event = match &op {
                    WriteOp::Patch { patch, .. } if patch.preview.is_some() => {
                        Some(outbox::EventKind::Previewable)
                    }
                    WriteOp::Patch { .. } => None,
                    WriteOp::Delete { .. } => Some(outbox::EventKind::Deleted),
                    WriteOp::Insert(..) | WriteOp::Transition { .. } => {
                        Some(outbox::EventKind::Transition)
                    }
                };
                let result = match op {
                    WriteOp::Insert(mut record, idempotency_key) => {
                        let seq = meta.get("next_seq")?.map(|v| v.value()).unwrap_or(1);
                        meta.insert("next_seq", seq + 1)?;
                        record.seq = seq;
                        record.version = 1;
                        let id = record.id.as_u128();
                        uploads.insert(id, serde_json::to_vec(&record)?.as_slice())?;
                        index.insert((record.tenant.as_str(), seq), id)?;
                        listing::add(txn, &record)?;
                        let created = Transition {
                            from: None,
                            to: record.status,
                            at: record.created_at,
                            error_code: None,
                        };
                        history.insert((id, 0), serde_json::to_vec(&created)?.as_slice())?;
                        if let Some(key) = idempotency_key {
                            idempotency::remember(txn, &key, &record)?;
                        }
                        Ok(*record)
                    }
                    WriteOp::Patch { id, patch } => {
                        let key = id.as_u128();
                        let stored = stored_record(&uploads, key)?;
                        match stored {
                            None => Err(StoreError::NotFound(id)),
                            Some(record)
                                if !patch.only_from.is_empty()
                                    && !patch.allows_from(record.status) =>
                            {
                                Err(StoreError::Conflict(record.status))
                            }
                            Some(mut record) => {
                                if patch.source_freed {
                                    kept::release(txn, id)?;
                                }
                                if patch.changes_view() {
                                    record.version += 1;
                                }
                                record.patch(*patch);
                                uploads.insert(key, serde_json::to_vec(&record)?.as_slice())?;
                                Ok(record)
                            }
                        }
                    }
                    WriteOp::Delete { id } => {
                        let key = id.as_u128();
                        match uploads.remove(key)? {
                            None => Err(StoreError::NotFound(id)),
                            Some(bytes) => {
                                let mut record: UploadRecord =
                                    serde_json::from_slice(bytes.value())?;
                                drop(bytes);
                                index.remove((record.tenant.as_str(), record.seq))?;
                                listing::remove(txn, &record)?;
                                history.retain_in((key, 0)..=(key, u32::MAX), |_, _| false)?;
                                kept::release(txn, id)?;
                                cleanup::record(txn, &record.media_token)?;
                                // The event's time is the deletion's.
                                record.updated_at = record::now_utc();
                                Ok(record)
                            }
                        }
                    }
                    WriteOp::Transition { id, to, patch } => {
                        let key = id.as_u128();
                        let stored = stored_record(&uploads, key)?;
                        match stored {
                            None => Err(StoreError::NotFound(id)),
                            Some(record) if !patch.allows_from(record.status) => {
                                Err(StoreError::Conflict(record.status))
                            }
                            Some(_)
                                if patch.retry && !kept::kept_at(txn, id, record::unix_now())? =>
                            {
                                Err(StoreError::SourceGone(id))
                            }
                            Some(mut record) => {
                                if patch.clean_up {
                                    cleanup::record(txn, &record.media_token)?;
                                }
                                if patch.retry {
                                    kept::release(txn, id)?;
                                }
                                if let (Status::Failed, Some(until)) = (to, patch.keep_source_until)
                                {
                                    kept::keep(txn, id, until)?;
                                }
                                let from = record.status;
                                let change = record.apply(to, *patch, record::now_utc());
                                uploads.insert(key, serde_json::to_vec(&record)?.as_slice())?;
                                listing::moved(txn, &record, from)?;
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
                if let (Some(event), Ok(record), Some(router)) = (event, &result, self.router.get())
                {
                    let endpoints = router.endpoints(record);
                    events +=
                        outbox::enqueue(&mut outbox_rows, &mut meta, endpoints, record, event)?;
                }
                results.push(result);
            }
        }
        Ok((results, events))
    }

    /// One record, whoever owns it.
    pub fn get(&self, id: Uuid) -> Result<Option<UploadRecord>, StoreError> {
        self.read(|txn| stored_record(&txn.open_table(UPLOADS)?, id.as_u128()))
    }

    /// A tenant's most recent uploads, newest first.
    pub fn list_recent(&self, tenant: &str, limit: usize) -> Result<Vec<UploadRecord>, StoreError> {
        let query = listing::PageQuery {
            tenant,
            status: None,
            folder: None,
            before: None,
            limit,
        };
        Ok(self.page(&query)?.records)
    }

    /// One page of a tenant's uploads, newest first ([`listing`]).
    pub fn page(&self, query: &listing::PageQuery<'_>) -> Result<listing::Page, StoreError> {
        self.read(|txn| listing::page(txn, query))
    }

    /// Every record not yet completed or failed, oldest first: the work to resume at start.
    pub fn unfinished(&self) -> Result<Vec<UploadRecord>, StoreError> {
        self.read(|txn| {
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
        })
    }

    /// The recorded history of one upload, oldest first.
    pub fn transitions(&self, id: Uuid) -> Result<Vec<Transition>, StoreError> {
        self.read(|txn| {
            let history = txn.open_table(TRANSITIONS)?;
            let mut out = Vec::new();
            for entry in history.range((id.as_u128(), 0)..=(id.as_u128(), u32::MAX))? {
                let (_, bytes) = entry?;
                out.push(serde_json::from_slice(bytes.value())?);
            }
            Ok(out)
        })
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use record::UploadError;

    pub(crate) fn sample(tenant: &str) -> UploadRecord {
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
            version: 0,
            preview: None,
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
                WriteOp::Insert(Box::new(a.clone()), None),
                WriteOp::Insert(Box::new(b.clone()), None),
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
