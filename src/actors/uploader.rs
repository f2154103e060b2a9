//! The uploader: moves a finished transcode's outputs to final storage
//! (status 5), then completes the upload (status 6).

use std::sync::Arc;

use ractor::{Actor, ActorProcessingErr, ActorRef};
use tracing::error;
use uuid::Uuid;

use super::transcoder::{Manifest, MANIFEST};
use super::{cleaner, recovery, registry, transcoder, Services};
use crate::metrics::StorageStage;
use crate::storage::{OutputFile, StorageError};
use crate::store::record::{Status, TransitionPatch};

/// The uploader actor.
pub struct Uploader;

/// Messages to the uploader.
pub enum UploaderMsg {
    /// Transcoder workers and recovery: the outputs of this upload are complete in its work folder.
    Store(Uuid),
}

impl Actor for Uploader {
    type Msg = UploaderMsg;
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
        let UploaderMsg::Store(id) = msg;
        if let Err(e) = store(services, id).await {
            error!(upload = %id, error = %e, "upload to final storage aborted");
        }
        Ok(())
    }
}

async fn store(services: &Arc<Services>, id: Uuid) -> Result<(), ActorProcessingErr> {
    let Some(record) = services.store.get(id)? else {
        // Deleted while it was transcoded: its work files go.
        return recovery::tidy(services, id).await;
    };
    // Stopping: left for the next start.
    if record.status.is_terminal() || services.stop.is_cancelled() {
        return Ok(());
    }
    let work_dir = services.layout.work_dir(id);
    let manifest_path = work_dir.join(MANIFEST);
    let manifest = services
        .blocking(move || -> Option<Manifest> {
            let bytes = std::fs::read(manifest_path).ok()?;
            serde_json::from_slice(&bytes).ok()
        })
        .await?;
    let Some(manifest) = manifest else {
        // The work folder is incomplete: transcode again from the staged body.
        transcoder::enqueue(services, id);
        return Ok(());
    };
    let patch = TransitionPatch {
        source: Some(manifest.source),
        ..Default::default()
    };
    // From before the transition: a deletion that commits right after it
    // leaves the removal of what is stored to the cleaner, which waits
    // until the put is over.
    services.storing.add(&record.media_token);
    match registry::transition(services, id, Status::Uploading, patch).await {
        Ok(_) => {}
        Err(e) => {
            services.storing.remove(&record.media_token);
            return if e.is_moved_on() {
                recovery::tidy(services, id).await
            } else {
                Err(e.into())
            };
        }
    }

    let names = if manifest.files.is_empty() {
        vec![
            manifest.outputs.mp4.clone(),
            manifest.outputs.poster.clone(),
        ]
    } else {
        manifest.files
    };
    let files: Vec<OutputFile> = names
        .into_iter()
        .map(|name| OutputFile {
            path: work_dir.join(&name),
            name,
        })
        .collect();
    let storage = services.storage.clone();
    let token = record.media_token.clone();
    let put = services.blocking(move || storage.put(&token, &files)).await;
    services.storing.remove(&record.media_token);
    let completed = match put? {
        Ok(()) => {
            let patch = TransitionPatch {
                outputs: Some(manifest.outputs),
                ..Default::default()
            };
            registry::transition(services, id, Status::Completed, patch).await
        }
        // The server is stopping: the upload stays `uploading` and is stored
        // again at the next start.
        Err(StorageError::Interrupted) => return Ok(()),
        Err(e) => {
            services.metrics.storage_error(StorageStage::Final);
            // What was stored is removed now if the store lets it, else by
            // the cleaner: recorded with the failure, so it is never lost.
            let storage = services.storage.clone();
            let token = record.media_token.clone();
            let removed = services.blocking(move || storage.remove(&token)).await?;
            let patch = TransitionPatch {
                clean_up: removed.is_err(),
                ..registry::failure(services, "storage_error", e.to_string())
            };
            if removed.is_err() {
                services.removals.add(&record.media_token);
            }
            let failed = registry::transition(services, id, Status::Failed, patch).await;
            if removed.is_err() {
                cleaner::wake(services);
            }
            failed
        }
    };
    match completed {
        Ok(_) => {}
        // Deleted while it was stored: the deletion recorded the removal.
        Err(e) if e.is_moved_on() => cleaner::wake(services),
        Err(e) => return Err(e.into()),
    }
    recovery::tidy(services, id).await
}
