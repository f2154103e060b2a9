//! The status registry: the only writer of the status database. Every
//! transition updates the record and is appended to the history in one
//! durable commit. Readers go to the database directly.

use std::sync::Arc;

use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort};
use tracing::info;
use uuid::Uuid;

use super::Services;
use crate::store::record::{Status, TransitionPatch, UploadRecord};
use crate::store::StoreError;

/// The registry actor.
pub struct Registry;

/// Messages to the registry.
pub enum RegistryMsg {
    /// Intake: persist a new `pending` record; the reply comes once it is durable.
    Create(
        Box<UploadRecord>,
        RpcReplyPort<Result<UploadRecord, StoreError>>,
    ),
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
    /// Transcoder threads: progress of a running transcode, kept in memory only.
    Progress {
        /// The upload.
        id: Uuid,
        /// 0-100.
        percent: u8,
    },
}

impl Actor for Registry {
    type Msg = RegistryMsg;
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
        match msg {
            RegistryMsg::Create(mut record, reply) => {
                let store = services.store.clone();
                // redb commits fsync: keep them off the executor.
                let result = tokio::task::spawn_blocking(move || {
                    store.insert(&mut record).map(|()| *record)
                })
                .await?;
                if let Ok(record) = &result {
                    info!(upload = %record.id, tenant = %record.tenant, to = "pending", "transition");
                }
                let _ = reply.send(result);
            }
            RegistryMsg::Transition {
                id,
                to,
                patch,
                reply,
            } => {
                let store = services.store.clone();
                // redb commits fsync: keep them off the executor.
                let result =
                    tokio::task::spawn_blocking(move || store.transition(id, to, *patch)).await?;
                match &result {
                    Ok(record) => {
                        if to != Status::Processing {
                            services.progress.clear(id);
                        }
                        if to.is_terminal() {
                            services.tenant_load.finish(&record.tenant);
                        }
                        let code = record.error.as_ref().map(|e| e.code.as_str());
                        info!(upload = %id, to = to.text(), error = ?code, "transition");
                    }
                    Err(e) => {
                        tracing::error!(upload = %id, to = to.text(), error = %e, "transition failed")
                    }
                }
                let _ = reply.send(result);
            }
            RegistryMsg::Progress { id, percent } => services.progress.set(id, percent.min(100)),
        }
        Ok(())
    }
}

/// Asks the registry to apply a transition and waits until it is durable.
pub async fn transition(
    services: &Services,
    id: Uuid,
    to: Status,
    patch: TransitionPatch,
) -> Result<UploadRecord, ActorProcessingErr> {
    let registry = services
        .peers
        .registry
        .get()
        .ok_or("status registry is not running")?;
    let result = registry
        .call(
            |reply| RegistryMsg::Transition {
                id,
                to,
                patch: Box::new(patch),
                reply,
            },
            None,
        )
        .await?;
    match result {
        ractor::rpc::CallResult::Success(r) => Ok(r?),
        _ => Err("status registry did not answer".into()),
    }
}

/// Marks an upload failed with a machine code and message.
pub async fn fail(
    services: &Services,
    id: Uuid,
    code: &str,
    message: impl Into<String>,
) -> Result<UploadRecord, ActorProcessingErr> {
    let patch = TransitionPatch {
        error: Some(crate::store::record::UploadError {
            code: code.to_string(),
            message: message.into(),
        }),
        ..Default::default()
    };
    transition(services, id, Status::Failed, patch).await
}
