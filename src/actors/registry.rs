//! The status registry: the only writer of the status database. Every
//! transition updates the record and is appended to the history; concurrent
//! writes share one durable commit (group commit on the registry's own
//! thread), and each caller is answered once its write is on disk. Readers
//! go to the database directly.

use std::sync::Arc;

use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort};
use tracing::{error, info, warn};
use uuid::Uuid;

use super::Services;
use crate::metrics::StorageStage;
use crate::store::record::{Status, TransitionPatch, UploadRecord};
use crate::store::{StoreError, WriteOp};

/// The registry actor.
pub struct Registry;

/// Messages to the registry.
pub enum RegistryMsg {
    /// Intake: persist a new `pending` record, remembered under its
    /// `Idempotency-Key` if it has one; the reply comes once it is durable.
    Create {
        /// The record.
        record: Box<UploadRecord>,
        /// The create's `Idempotency-Key`.
        idempotency_key: Option<String>,
        /// Receives the stored record.
        reply: RpcReplyPort<Result<UploadRecord, StoreError>>,
    },
    /// Workers: move an upload to a new status; the reply comes once it is durable.
    Transition {
        /// The upload.
        id: Uuid,
        /// The new status.
        to: Status,
        /// What else changes.
        patch: Box<TransitionPatch>,
        /// Receives the updated record.
        reply: RpcReplyPort<Result<UploadRecord, StoreError>>,
    },
    /// Workers: change fields without a status change (the source, once probed); the
    /// reply comes once it is durable. Not a transition: no history entry, no metric.
    Patch {
        /// The upload.
        id: Uuid,
        /// What changes.
        patch: Box<TransitionPatch>,
        /// Receives the updated record.
        reply: RpcReplyPort<Result<UploadRecord, StoreError>>,
    },
    /// The lifecycle: remove an upload and everything it owns; the reply
    /// (the record as it was) comes once the deletion is durable.
    Delete {
        /// The upload.
        id: Uuid,
        /// Receives the deleted record.
        reply: RpcReplyPort<Result<UploadRecord, StoreError>>,
    },
    /// Transcoder threads: progress of a running transcode, kept in memory only.
    Progress {
        /// The upload.
        id: Uuid,
        /// 0-100.
        percent: u8,
    },
}

/// Why a write through the registry did not happen.
#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    /// The registry is not running (it is being restarted, or the server is stopping).
    #[error("the status registry is not running")]
    NotRunning,
    /// The registry stopped before it answered.
    #[error("the status registry did not answer: {0}")]
    NoAnswer(String),
    /// The database refused or failed the write.
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl RegistryError {
    /// True when the upload moved on without the writer: it was deleted, or
    /// cancelled (a terminal status the write may not leave).
    pub fn is_moved_on(&self) -> bool {
        matches!(
            self,
            RegistryError::Store(StoreError::NotFound(_) | StoreError::Conflict(_))
        )
    }

    /// True when the write failed because the disk is full.
    pub fn is_disk_full(&self) -> bool {
        matches!(self, RegistryError::Store(e) if e.is_disk_full())
    }
}

/// Most writes folded into one commit.
const MAX_BATCH: usize = 512;

/// A write waiting for the committer, with the port its caller waits on.
struct PendingWrite {
    op: WriteOp,
    reply: RpcReplyPort<Result<UploadRecord, StoreError>>,
}

/// The registry's state: the queue to its committer thread.
pub struct RegistryState {
    /// Shared services.
    services: Arc<Services>,
    /// Writes to commit, in arrival order. Replacing it ends the committer.
    writes: crossbeam_channel::Sender<PendingWrite>,
    /// The committer thread, joined on stop so the database is closed after.
    committer: Option<std::thread::JoinHandle<()>>,
}

impl Actor for Registry {
    type Msg = RegistryMsg;
    type State = RegistryState;
    type Arguments = Arc<Services>;

    async fn pre_start(
        &self,
        _myself: ActorRef<Self::Msg>,
        services: Arc<Services>,
    ) -> Result<Self::State, ActorProcessingErr> {
        let (writes, queue) = crossbeam_channel::unbounded();
        let committer = services.clone();
        // Commits fsync: they run on a dedicated thread, never on the executor.
        let committer = std::thread::Builder::new()
            .name("vidpipe-registry-commit".into())
            .spawn(move || commit_loop(&committer, &queue))?;
        Ok(RegistryState {
            services,
            writes,
            committer: Some(committer),
        })
    }

    async fn post_stop(
        &self,
        _myself: ActorRef<Self::Msg>,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        // Closing the queue lets the committer finish what it holds and exit.
        state.writes = crossbeam_channel::unbounded().0;
        if let Some(committer) = state.committer.take() {
            // Joining blocks until the last commit is done: off the executor.
            tokio::task::spawn_blocking(move || committer.join())
                .await?
                .ok();
        }
        Ok(())
    }

    async fn handle(
        &self,
        _myself: ActorRef<Self::Msg>,
        msg: Self::Msg,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        let (op, reply) = match msg {
            RegistryMsg::Create {
                record,
                idempotency_key,
                reply,
            } => (WriteOp::Insert(record, idempotency_key), reply),
            RegistryMsg::Transition {
                id,
                to,
                patch,
                reply,
            } => (WriteOp::Transition { id, to, patch }, reply),
            RegistryMsg::Patch { id, patch, reply } => (WriteOp::Patch { id, patch }, reply),
            RegistryMsg::Delete { id, reply } => (WriteOp::Delete { id }, reply),
            RegistryMsg::Progress { id, percent } => {
                let percent = percent.min(100);
                state.services.progress.update(id, percent);
                state
                    .services
                    .events
                    .progressed(&state.services, id, percent);
                return Ok(());
            }
        };
        state
            .writes
            .send(PendingWrite { op, reply })
            .map_err(|_| "the registry committer stopped")?;
        Ok(())
    }
}

/// Group commit: takes every write that is waiting (up to [`MAX_BATCH`]),
/// commits them in one transaction, then answers each caller. Under load
/// many transitions share one fsync; alone, a write commits at once.
fn commit_loop(services: &Services, queue: &crossbeam_channel::Receiver<PendingWrite>) {
    while let Ok(first) = queue.recv() {
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH {
            match queue.try_recv() {
                Ok(write) => batch.push(write),
                Err(_) => break,
            }
        }
        let batch = refuse_new_uploads_below_reserve(services, batch);
        if batch.is_empty() {
            continue;
        }
        let (ops, replies): (Vec<_>, Vec<_>) = batch.into_iter().map(|w| (w.op, w.reply)).unzip();
        let kinds: Vec<Written> = ops
            .iter()
            .map(|op| match op {
                WriteOp::Insert(record, _) => Written::Created(record.status),
                WriteOp::Transition { id, to, .. } => Written::Moved(*id, *to),
                WriteOp::Patch { patch, .. } => Written::Patched {
                    shown: patch.changes_view(),
                },
                WriteOp::Delete { id } => Written::Deleted(*id),
            })
            .collect();
        if kinds.iter().any(|k| matches!(k, Written::Created(_))) {
            crate::faults::pause_before_create_commit();
        }
        let events_before = services.store.events_written();
        match services.store.apply_batch(ops) {
            Ok(results) => {
                let mut heard = Vec::new();
                for ((result, reply), kind) in results.into_iter().zip(replies).zip(kinds) {
                    heard.extend(after_commit(services, &result, kind));
                    let _ = reply.send(result);
                }
                // Every caller is answered before a change is rendered for the streams.
                for change in heard {
                    match change {
                        Heard::Changed(record) => services.events.changed(services, &record),
                        Heard::Deleted(record) => services.events.deleted(&record),
                    }
                }
                if services.store.events_written() != events_before {
                    if let Some(webhooks) = services.peers.webhooks.get() {
                        let _ = webhooks.cast(super::webhooks::WebhookMsg::Poll);
                    }
                }
            }
            Err(e) => {
                error!(error = %e, writes = replies.len(), "status commit failed");
                services.metrics.storage_error(StorageStage::Database);
                let shared = Arc::new(e);
                for reply in replies {
                    let _ = reply.send(Err(StoreError::Batch(shared.clone())));
                }
            }
        }
    }
}

/// With less free space on the database's disk than `reserved_disk_bytes`,
/// answers the batch's new uploads with [`StoreError::BelowReserve`] (a 507)
/// before anything is written, and returns the rest: the reserve is kept for
/// the uploads already accepted, whose transitions always go ahead.
fn refuse_new_uploads_below_reserve(
    services: &Services,
    batch: Vec<PendingWrite>,
) -> Vec<PendingWrite> {
    let reserve = services.config.reserved_disk_bytes;
    if reserve == 0 || !batch.iter().any(|w| matches!(w.op, WriteOp::Insert(..))) {
        return batch;
    }
    let free = match services.store.free_bytes() {
        Ok(free) if free < reserve => free,
        Ok(_) => return batch,
        Err(e) => {
            warn!(error = %e, "cannot read the free space; new uploads are written anyway");
            return batch;
        }
    };
    warn!(free, reserve, "disk below its reserve: new uploads refused");
    batch
        .into_iter()
        .filter_map(|write| match write.op {
            WriteOp::Insert(..) => {
                let _ = write
                    .reply
                    .send(Err(StoreError::BelowReserve { free, reserve }));
                None
            }
            _ => Some(write),
        })
        .collect()
}

/// What one write of a batch was, for its bookkeeping.
#[derive(Clone, Copy)]
enum Written {
    /// A new upload, in its first status.
    Created(Status),
    /// A transition of an upload to a status.
    Moved(Uuid, Status),
    /// Fields of a record changed: not a transition, no bookkeeping;
    /// `shown` if clients see the change.
    Patched { shown: bool },
    /// An upload was deleted.
    Deleted(Uuid),
}

/// What the event streams hear of a durable write.
enum Heard {
    Changed(UploadRecord),
    Deleted(UploadRecord),
}

/// In-memory bookkeeping and the log line of one durable write; what the
/// event streams are to hear of it.
fn after_commit(
    services: &Services,
    result: &Result<UploadRecord, StoreError>,
    written: Written,
) -> Option<Heard> {
    let (id, to) = match written {
        Written::Patched { shown } => {
            let record = result.as_ref().ok().filter(|_| shown)?;
            return Some(Heard::Changed(record.clone()));
        }
        Written::Created(to) => (None, to),
        Written::Moved(id, to) => (Some(id), to),
        Written::Deleted(id) => {
            return match result {
                Ok(record) => {
                    after_deletion(services, record);
                    Some(Heard::Deleted(record.clone()))
                }
                Err(e) => {
                    info!(upload = %id, error = %e, "deletion not done");
                    None
                }
            };
        }
    };
    let record = match result {
        Ok(record) => record,
        Err(e @ StoreError::Conflict(_)) => {
            // A worker meeting an upload cancelled under it: not a fault.
            info!(upload = ?id, to = to.text(), error = %e, "transition not applied");
            return None;
        }
        Err(e) => {
            error!(upload = ?id, to = to.text(), error = %e, "transition failed");
            return None;
        }
    };
    if id.is_none() {
        services.metrics.ingested(record.size_bytes);
    }
    if to == Status::Processing {
        services.progress.set(record.id, 0);
    } else {
        services.progress.clear(record.id);
    }
    if to == Status::Completed {
        services.previews.completed(record.id);
    } else if record.preview.is_none() {
        services.previews.end(record.id);
    }
    if to.is_terminal() {
        services.tenant_load.finish(&record.tenant);
    }
    services.metrics.transition(to);
    let code = record.error.as_ref().map(|e| e.code.as_str());
    info!(upload = %record.id, tenant = %record.tenant, to = to.text(), error = code, "transition");
    Some(Heard::Changed(record.clone()))
}

/// The bookkeeping of a deletion: the upload no longer counts against its
/// tenant nor shows progress; what it stored is being removed.
fn after_deletion(services: &Services, record: &UploadRecord) {
    services.progress.clear(record.id);
    services.previews.end(record.id);
    if !record.status.is_terminal() {
        services.tenant_load.finish(&record.tenant);
    }
    services.removals.add(&record.media_token);
    info!(upload = %record.id, tenant = %record.tenant, status = record.status.text(), "deleted");
}

/// Asks the registry to delete an upload and waits until the deletion is
/// durable; returns the record as it was.
pub async fn delete(services: &Services, id: Uuid) -> Result<UploadRecord, RegistryError> {
    write(services, |reply| RegistryMsg::Delete { id, reply }).await
}

/// Asks the registry to apply a transition and waits until it is durable.
pub async fn transition(
    services: &Services,
    id: Uuid,
    to: Status,
    patch: TransitionPatch,
) -> Result<UploadRecord, RegistryError> {
    let patch = Box::new(patch);
    write(services, |reply| RegistryMsg::Transition {
        id,
        to,
        patch,
        reply,
    })
    .await
}

/// Asks the registry to change fields of a record without a status change, and
/// waits until it is durable.
pub async fn patch(
    services: &Services,
    id: Uuid,
    patch: TransitionPatch,
) -> Result<UploadRecord, RegistryError> {
    let patch = Box::new(patch);
    write(services, |reply| RegistryMsg::Patch { id, patch, reply }).await
}

/// Asks the registry to record a new upload (remembered under its
/// `Idempotency-Key`, if it has one) and waits until it is durable.
pub async fn create(
    services: &Services,
    record: UploadRecord,
    idempotency_key: Option<String>,
) -> Result<UploadRecord, RegistryError> {
    write(services, |reply| RegistryMsg::Create {
        record: Box::new(record),
        idempotency_key,
        reply,
    })
    .await
}

/// Sends one durable write to the registry and waits for the updated record.
async fn write(
    services: &Services,
    message: impl FnOnce(RpcReplyPort<Result<UploadRecord, StoreError>>) -> RegistryMsg,
) -> Result<UploadRecord, RegistryError> {
    let registry = services
        .peers
        .registry
        .get()
        .ok_or(RegistryError::NotRunning)?;
    match registry.call(message, None).await {
        Ok(ractor::rpc::CallResult::Success(result)) => Ok(result?),
        Ok(_) => Err(RegistryError::NoAnswer("the reply was dropped".into())),
        Err(e) => Err(RegistryError::NoAnswer(e.to_string())),
    }
}

/// Marks an upload failed with a machine code and message; its staged
/// source is kept for `failed_source_retention_hours`, for a retry.
pub async fn fail(
    services: &Services,
    id: Uuid,
    code: &str,
    message: impl Into<String>,
) -> Result<UploadRecord, RegistryError> {
    transition(
        services,
        id,
        Status::Failed,
        failure(services, code, message),
    )
    .await
}

/// The patch of a transition to `failed`: the error, and how long the
/// source is kept (not at all with a retention of 0).
pub fn failure(services: &Services, code: &str, message: impl Into<String>) -> TransitionPatch {
    let retention = services.config.failed_source_retention;
    let until = (!retention.is_zero()).then(|| crate::store::record::unix_in(retention));
    TransitionPatch {
        error: Some(crate::store::record::UploadError {
            code: code.to_string(),
            message: message.into(),
        }),
        keep_source_until: until,
        ..Default::default()
    }
}
