//! The intake actor: turns a staged body into a durable `pending` record and
//! queues its transcode. The HTTP handler answers 202 only after this replies.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort};
use uuid::Uuid;

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
    Store(String),
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
        let _ = reply.send(accept(services, staged).await);
        Ok(())
    }
}

async fn accept(services: &Services, staged: StagedUpload) -> Result<UploadRecord, IntakeError> {
    if services.queued.load(Ordering::Relaxed) >= services.config.max_queued_jobs {
        return Err(IntakeError::QueueFull);
    }
    if services.tenant_load.get(&staged.tenant) >= services.config.max_in_flight_per_tenant {
        return Err(IntakeError::TenantBusy);
    }
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
        media_token: random_token().map_err(IntakeError::Store)?,
        outputs: None,
        error: None,
        attempts: 0,
        callback_url: staged.callback_url,
    };
    let registry = services
        .peers
        .registry
        .get()
        .ok_or_else(|| IntakeError::Store("status registry is not running".into()))?;
    let created = registry
        .call(
            |reply| super::registry::RegistryMsg::Create(Box::new(record), reply),
            None,
        )
        .await
        .map_err(|e| IntakeError::Store(e.to_string()))?;
    let record = match created {
        ractor::rpc::CallResult::Success(result) => {
            result.map_err(|e| IntakeError::Store(e.to_string()))?
        }
        _ => return Err(IntakeError::Store("status registry did not answer".into())),
    };
    services.tenant_load.add(&record.tenant);
    // Durable now: if the pool is down, recovery re-queues it from the database.
    transcoder::enqueue(services, record.id);
    Ok(record)
}

/// 128 random bits as hex: names an upload's final storage folder.
fn random_token() -> Result<String, String> {
    let mut raw = [0u8; 16];
    getrandom::fill(&mut raw).map_err(|e| format!("no randomness: {e}"))?;
    Ok(hex::encode(raw))
}
