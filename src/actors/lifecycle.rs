//! An upload's life after its creation: cancel, retry and delete. Each is
//! one durable write through the registry, whose committer decides it
//! against the record as it is then (a cancel of an upload that has just
//! moved on to `uploading` is refused, not half done); then the running
//! transcode, if any, is stopped and what the upload no longer needs is
//! removed.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tracing::warn;
use uuid::Uuid;

use super::intake::{self, IntakeError};
use super::registry::{self, RegistryError};
use super::{cleaner, recovery, transcoder, Services};
use crate::store::record::{Status, TransitionPatch, UploadRecord};
use crate::store::StoreError;

/// The `error.code` of a cancelled upload.
pub const CANCELLED: &str = "cancelled";

/// How long a cancel or a deletion waits for the upload's transcode to stop
/// before it answers (cancellation is seen before the next packet is read).
const STOP_WAIT: Duration = Duration::from_secs(2);

/// Why a lifecycle request was refused.
#[derive(Debug, thiserror::Error)]
pub enum LifecycleError {
    /// No such upload of this tenant.
    #[error("no such upload")]
    NotFound,
    /// Only a pending or processing upload can be cancelled.
    #[error("the upload is {}", .0.text())]
    NotCancellable(Status),
    /// The upload cannot be retried (why).
    #[error("the upload cannot be retried: {0}")]
    NotRetryable(&'static str),
    /// A retry found no room in the queue or the tenant's count.
    #[error(transparent)]
    Admission(IntakeError),
    /// The write failed.
    #[error(transparent)]
    Registry(#[from] RegistryError),
    /// Reading the record failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// The record of `id` if `tenant` owns it.
fn owned(services: &Services, id: Uuid, tenant: &str) -> Result<UploadRecord, LifecycleError> {
    services
        .store
        .get(id)?
        .filter(|record| record.tenant == tenant)
        .ok_or(LifecycleError::NotFound)
}

/// Cancels a pending or processing upload: it fails with `cancelled` and
/// keeps its source for a retry; its transcode stops.
pub async fn cancel(
    services: &Arc<Services>,
    id: Uuid,
    tenant: &str,
) -> Result<UploadRecord, LifecycleError> {
    owned(services, id, tenant)?;
    let patch = TransitionPatch {
        only_from: &[Status::Pending, Status::Processing],
        ..registry::failure(
            services,
            CANCELLED,
            "The upload was cancelled by its owner.",
        )
    };
    let record = registry::transition(services, id, Status::Failed, patch)
        .await
        .map_err(|e| refused(e, LifecycleError::NotCancellable))?;
    stop_transcode(services, id).await;
    Ok(record)
}

/// What a write the registry refused means to a lifecycle action: the
/// upload gone, its source gone, or (a status it may not leave) `conflict`.
fn refused(e: RegistryError, conflict: fn(Status) -> LifecycleError) -> LifecycleError {
    match e {
        RegistryError::Store(StoreError::NotFound(_)) => LifecycleError::NotFound,
        RegistryError::Store(StoreError::Conflict(status)) => conflict(status),
        RegistryError::Store(StoreError::SourceGone(_)) => {
            LifecycleError::NotRetryable("its source is no longer kept")
        }
        e => e.into(),
    }
}

/// Runs a failed upload again from its kept source: back to `pending`, its
/// error and attempts cleared, queued like a new upload (the same limits).
pub async fn retry(
    services: &Arc<Services>,
    id: Uuid,
    tenant: &str,
) -> Result<UploadRecord, LifecycleError> {
    let record = owned(services, id, tenant)?;
    if record.status != Status::Failed {
        return Err(LifecycleError::NotRetryable(
            if record.status.is_terminal() {
                "it is completed"
            } else {
                "it is still in flight"
            },
        ));
    }
    // Its last job may still be stopping (a cancel waits only so long), and
    // the removal of outputs a failed store left may still be owed under the
    // same token: a retry now would race the one or lose its new outputs to
    // the other.
    if services.jobs.is_running(id) {
        return Err(LifecycleError::NotRetryable(
            "its last run is still stopping",
        ));
    }
    if services.removals.contains(&record.media_token) {
        return Err(LifecycleError::NotRetryable(
            "the outputs of its last run are still being removed",
        ));
    }
    let staged = services.layout.staged_path(id);
    if !services.store.source_kept(id)? || !staged.exists() {
        return Err(LifecycleError::NotRetryable("its source is no longer kept"));
    }
    intake::within_limits(services, tenant)
        .map_err(LifecycleError::Admission)?
        .reserve(services);
    let patch = TransitionPatch {
        only_from: &[Status::Failed],
        retry: true,
        ..Default::default()
    };
    match registry::transition(services, id, Status::Pending, patch).await {
        Ok(record) => {
            transcoder::dispatch_reserved(services, id);
            Ok(record)
        }
        Err(e) => {
            intake::release(services, tenant);
            Err(refused(e, |_| {
                LifecycleError::NotRetryable("it is no longer failed")
            }))
        }
    }
}

/// Deletes an upload in any status: the deletion is durable first (the
/// record, its history and its kept source go, the removal of its stored
/// outputs is recorded); then its transcode is stopped, its local files
/// removed and its stored outputs removed now if the store lets it, else
/// by the cleaner with backoff. Returns the record as it was.
pub async fn delete(
    services: &Arc<Services>,
    id: Uuid,
    tenant: &str,
) -> Result<UploadRecord, LifecycleError> {
    owned(services, id, tenant)?;
    let record = registry::delete(services, id).await.map_err(|e| {
        refused(e, |status| {
            RegistryError::from(StoreError::Conflict(status)).into()
        })
    })?;
    stop_transcode(services, id).await;
    // Whatever is left here is removed at the next start: the record is gone.
    if let Err(e) = recovery::discard_local(services, id).await {
        warn!(upload = %id, error = %e, "cannot remove a deleted upload's local files yet");
    }
    cleaner::remove_now(services, &record.media_token).await;
    Ok(record)
}

/// Stops the transcode of `id` if one runs, and waits a little for it to end.
async fn stop_transcode(services: &Services, id: Uuid) {
    if !services.jobs.stop(id) {
        return;
    }
    let deadline = Instant::now() + STOP_WAIT;
    while services.jobs.is_running(id) && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}
