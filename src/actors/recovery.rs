//! Start-up recovery: remove what no acknowledged upload needs, and resume
//! every upload that is not terminal from the stage it was in.

use std::collections::HashSet;
use std::fs;

use ractor::ActorProcessingErr;
use tracing::{info, warn};
use uuid::Uuid;

use super::uploader::UploaderMsg;
use super::{registry, transcoder, Services};
use crate::layout::{remove_if_exists, DataLayout};
use crate::storage::FinalStorage;
use crate::store::record::{Status, UploadRecord};

/// Removes an upload's local working files: staged body, partial and finished work folders.
pub async fn discard_local(services: &Services, id: Uuid) -> Result<(), ActorProcessingErr> {
    let layout = services.layout.clone();
    services
        .blocking(move || discard_local_sync(&layout, id, true))
        .await??;
    Ok(())
}

/// Fails an upload (keeping its source for a retry) and removes the local
/// files it no longer needs; an upload that was cancelled or deleted
/// meanwhile is only tidied.
pub async fn fail(
    services: &Services,
    id: Uuid,
    code: &str,
    message: impl Into<String>,
) -> Result<(), ActorProcessingErr> {
    match registry::fail(services, id, code, message).await {
        Ok(_) => {}
        Err(e) if e.is_moved_on() => {}
        Err(e) => return Err(e.into()),
    }
    tidy(services, id).await
}

/// Removes the local files an upload no longer needs, as its record says
/// now: all of them once it is completed or deleted, all but its staged
/// body once it failed and keeps its source ([`crate::store::kept`]),
/// none while it is in flight. Workers call it when they stop working on an
/// upload, whatever happened to it meanwhile (cancelled, deleted).
pub async fn tidy(services: &Services, id: Uuid) -> Result<(), ActorProcessingErr> {
    let store = services.store.clone();
    let layout = services.layout.clone();
    services
        .blocking(move || {
            let source_too = match store.get(id)? {
                Some(record) if !record.status.is_terminal() => return Ok(()),
                Some(record) if record.status == Status::Failed => !store.source_kept(id)?,
                _ => true,
            };
            discard_local_sync(&layout, id, source_too)?;
            Ok::<_, ActorProcessingErr>(())
        })
        .await??;
    Ok(())
}

fn discard_local_sync(layout: &DataLayout, id: Uuid, source_too: bool) -> std::io::Result<()> {
    remove_if_exists(&layout.part_path(id))?;
    if source_too {
        remove_if_exists(&layout.staged_path(id))?;
    }
    for dir in [layout.work_tmp_dir(id), layout.work_dir(id)] {
        if dir.exists() {
            fs::remove_dir_all(dir)?;
        }
    }
    Ok(())
}

/// Before the actors start, given the records not yet terminal and the
/// failed uploads whose source is kept: deletes partial bodies, interrupted
/// work and storage folders, and the local files of uploads that are
/// terminal (but the kept sources) or unknown (deleted ones among them).
/// Returns how many entries were removed.
pub fn clean_orphans(
    layout: &DataLayout,
    unfinished: &[UploadRecord],
    kept: &HashSet<Uuid>,
    storage: &dyn FinalStorage,
) -> Result<usize, Box<dyn std::error::Error + Send + Sync>> {
    let storing: Vec<&str> = unfinished
        .iter()
        .filter(|r| r.status == Status::Uploading)
        .map(|r| r.media_token.as_str())
        .collect();
    let unfinished: HashSet<Uuid> = unfinished.iter().map(|r| r.id).collect();
    let id_of = |name: &str, suffix: &str| {
        name.strip_suffix(suffix)
            .and_then(|stem| Uuid::parse_str(stem).ok())
    };
    let live =
        |name: &str, suffix: &str| id_of(name, suffix).is_some_and(|id| unfinished.contains(&id));
    let mut removed = 0;
    for entry in fs::read_dir(layout.staging_dir())? {
        let entry = entry?;
        let name = entry.file_name().to_string_lossy().into_owned();
        let kept_source = id_of(&name, ".upload").is_some_and(|id| kept.contains(&id));
        if !live(&name, ".upload") && !kept_source {
            remove_if_exists(&entry.path())?;
            removed += 1;
        }
    }
    for entry in fs::read_dir(layout.work_root())? {
        let entry = entry?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if !live(&name, "") {
            fs::remove_dir_all(entry.path())?;
            removed += 1;
        }
    }
    removed += storage.clean_interrupted(&storing)?;
    Ok(removed)
}

/// Sends every unfinished upload back to the stage it was in. With
/// `transcodes_only`, only uploads waiting for or in a transcode (after the
/// transcoder pool was restarted).
pub async fn resume(
    services: &Services,
    transcodes_only: bool,
) -> Result<usize, ActorProcessingErr> {
    let store = services.store.clone();
    // A scan of every record: off the executor.
    let unfinished = services.blocking(move || store.unfinished()).await??;
    let mut resumed = 0;
    for record in unfinished {
        let id = record.id;
        match record.status {
            Status::Pending | Status::Processing => {
                // A preview it had went with the interrupted transcode (it
                // is not served, so not shown); the next one makes its own.
                transcoder::enqueue(services, id);
            }
            Status::Uploading if !transcodes_only => {
                if record.preview.is_some() {
                    // The transcode's folder stays until the outputs are
                    // stored: the preview is served from it meanwhile.
                    services.previews.add(&record.media_token, id);
                }
                store_again(services, id);
            }
            _ => continue,
        }
        resumed += 1;
        info!(upload = %id, status = record.status.text(), "resumed");
    }
    Ok(resumed)
}

/// Hands an upload whose outputs were being stored to the uploader again.
fn store_again(services: &Services, id: Uuid) {
    match services.peers.uploader.get() {
        Some(uploader) => {
            if uploader.cast(UploaderMsg::Store(id)).is_err() {
                warn!(upload = %id, "uploader gone; left for the next start");
            }
        }
        None => warn!(upload = %id, "uploader not running; left for the next start"),
    }
}
