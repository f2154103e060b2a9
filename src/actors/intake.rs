//! The intake actor: turns a staged body into a durable `pending` record and
//! queues its transcode. The HTTP handler answers 202 only after this replies.
//!
//! Admission (the queue and per-tenant limits) is decided in the actor, one
//! upload at a time, and a place is reserved before the record is written;
//! the write itself is awaited in a task of its own, so that uploads arriving
//! together share the registry's group commit instead of one fsync each.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort};
use uuid::Uuid;

use super::registry::{self, RegistryError};
use super::{transcoder, Services};
use crate::store::record::{now_utc, Status, UploadRecord};

/// The intake actor.
pub struct Intake;

/// A request body that is complete, fsynced and renamed into the staging folder.
#[derive(Debug, Clone)]
pub struct StagedUpload {
    /// Id chosen when the body started arriving; names the staging file.
    pub id: Uuid,
    /// Tenant (API key id) that sent it.
    pub tenant: String,
    /// Client file name, for display only.
    pub filename: String,
    /// Validated collection path.
    pub folder: String,
    /// Body size in bytes.
    pub size_bytes: u64,
    /// Validated `callback_url` form field: a webhook endpoint for this upload only.
    pub callback_url: Option<String>,
    /// The request's `Idempotency-Key`: the create is remembered under it.
    pub idempotency_key: Option<String>,
}

/// Why an upload was not accepted.
#[derive(Debug, thiserror::Error)]
pub enum IntakeError {
    /// Too many accepted uploads are waiting for a transcoder.
    #[error("the processing queue is full")]
    QueueFull,
    /// The tenant has too many uploads in flight.
    #[error("too many uploads in flight for this key")]
    TenantBusy,
    /// The record could not be made durable.
    #[error("could not record the upload: {0}")]
    Registry(#[from] RegistryError),
    /// No random storage token could be made.
    #[error("could not name the upload's storage: {0}")]
    Random(getrandom::Error),
}

/// Messages to the intake actor.
pub enum IntakeMsg {
    /// HTTP handler: record a staged upload and queue it; replies with the `pending` record.
    Accept(
        StagedUpload,
        RpcReplyPort<Result<UploadRecord, IntakeError>>,
    ),
}

impl Actor for Intake {
    type Msg = IntakeMsg;
    type State = Arc<Services>;
    type Arguments = Arc<Services>;

    async fn pre_start(
        &self,
        _myself: ActorRef<Self::Msg>,
        services: Arc<Services>,
    ) -> Result<Self::State, ActorProcessingErr> {
        Ok(services)
    }

    async fn handle(
        &self,
        _myself: ActorRef<Self::Msg>,
        msg: Self::Msg,
        services: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        let IntakeMsg::Accept(staged, reply) = msg;
        let idempotency_key = staged.idempotency_key.clone();
        let record = match admit(services, staged) {
            Ok(record) => record,
            Err(e) => {
                let _ = reply.send(Err(e));
                return Ok(());
            }
        };
        let services = services.clone();
        services.clone().tasks.spawn(async move {
            let _ = reply.send(record_admitted(&services, record, idempotency_key).await);
        });
        Ok(())
    }
}

/// Checks the limits and reserves a place in the queue and in the tenant's
/// count for one upload; returns its `pending` record, not yet written.
fn admit(services: &Services, staged: StagedUpload) -> Result<UploadRecord, IntakeError> {
    let limits_hold = within_limits(services, &staged.tenant)?;
    let now = now_utc();
    let record = UploadRecord {
        id: staged.id,
        seq: 0,
        tenant: staged.tenant,
        filename: staged.filename,
        folder: staged.folder,
        status: Status::Pending,
        created_at: now,
        updated_at: now,
        size_bytes: staged.size_bytes,
        source: None,
        media_token: random_token().map_err(IntakeError::Random)?,
        outputs: None,
        error: None,
        attempts: 0,
        callback_url: staged.callback_url,
        version: 0,
        preview: None,
    };
    limits_hold.reserve(services);
    Ok(record)
}

/// The queue and the tenant's count have room for one more upload of
/// `tenant` (a new one, or a failed one retried).
pub fn within_limits(services: &Services, tenant: &str) -> Result<Room, IntakeError> {
    if services.queued.load(Ordering::Relaxed) >= services.config.max_queued_jobs {
        return Err(IntakeError::QueueFull);
    }
    if services.tenant_load.get(tenant) >= services.config.max_in_flight_per_tenant {
        return Err(IntakeError::TenantBusy);
    }
    Ok(Room(tenant.to_string()))
}

/// Room for one upload, found by [`within_limits`].
#[must_use]
pub struct Room(String);

impl Room {
    /// Takes the place in the queue and in the tenant's count; given back
    /// by [`release`] if the upload's write fails, else by its transcode
    /// and its terminal status.
    pub fn reserve(self, services: &Services) {
        services.queued.fetch_add(1, Ordering::Relaxed);
        services.tenant_load.add(&self.0);
    }
}

/// Gives back the places [`Room::reserve`] took for an upload of `tenant`
/// whose write failed.
pub fn release(services: &Services, tenant: &str) {
    services.release_queued();
    services.tenant_load.finish(tenant);
}

/// Writes an admitted upload's record, then queues its transcode; a write
/// that fails gives its reserved places back.
async fn record_admitted(
    services: &Services,
    record: UploadRecord,
    idempotency_key: Option<String>,
) -> Result<UploadRecord, IntakeError> {
    let tenant = record.tenant.clone();
    match registry::create(services, record, idempotency_key).await {
        Ok(record) => {
            // Durable now: if the pool is down, recovery re-queues it from the database.
            transcoder::dispatch_reserved(services, record.id);
            Ok(record)
        }
        Err(e) => {
            release(services, &tenant);
            Err(e.into())
        }
    }
}

/// 128 random bits as hex: names an upload's final storage folder.
fn random_token() -> Result<String, getrandom::Error> {
    let mut raw = [0u8; 16];
    getrandom::fill(&mut raw)?;
    Ok(hex::encode(raw))
}
