//! What happens to a tus upload once its bytes are in or it is left: the
//! hand-over to intake, the keeper that retries refused hand-overs and frees
//! expired uploads, and the recovery at start.

use std::sync::Arc;

use uuid::Uuid;

use super::intake::{self, Recorded};
use super::{save, ApiError, AppState};
use crate::actors::intake::StagedUpload;
use crate::layout::{remove_if_exists, rename_durably};
use crate::store::tus::TusUpload;

/// The last byte is in: the file becomes the upload's staged source and
/// intake records it. Safe to call again: an upload intake has recorded
/// (its answer lost, or a crash before the flag) only gets its flag, and a
/// file already moved to staging is not moved again. Refused (the queue is
/// full), the file goes back, and [`keep`] tries again.
pub async fn hand_over(upload: &mut TusUpload, state: &AppState) -> Result<(), ApiError> {
    if state.services.store.get(upload.id)?.is_none() {
        let layout = &state.services.layout;
        let (file, staged) = (layout.tus_path(upload.id), layout.staged_path(upload.id));
        let (from, to) = (file.clone(), staged.clone());
        state
            .services
            .blocking(move || -> Result<(), ApiError> {
                if from.exists() {
                    rename_durably(&from, &to)?;
                } else if !to.exists() {
                    return Err(ApiError::Internal("the upload's bytes are gone".into()));
                }
                Ok(())
            })
            .await??;
        let staged_upload = StagedUpload {
            id: upload.id,
            tenant: upload.tenant.clone(),
            filename: upload.filename.clone(),
            folder: upload.folder.clone(),
            size_bytes: upload.offset,
            callback_url: upload.callback_url.clone(),
            idempotency_key: None,
        };
        match intake::record_staged(state, staged_upload).await {
            Recorded::Yes(_) => {}
            Recorded::Refused(e) => {
                let back = state
                    .services
                    .blocking(move || rename_durably(&staged, &file))
                    .await;
                if !matches!(back, Ok(Ok(()))) {
                    tracing::warn!(upload = %upload.id, "a refused tus upload stays staged");
                }
                return Err(e);
            }
            // The record may still be written: the source stays where it is.
            Recorded::Unknown(e) => return Err(e),
        }
        tracing::info!(upload = %upload.id, size_bytes = upload.offset, "tus upload complete");
    }
    upload.handed_over = true;
    // Kept for HEAD a whole expiry period from now.
    save(upload, state).await?;
    state.tus_writers.forget(upload.id);
    Ok(())
}

/// How often [`keep`] looks at the tus uploads.
const KEEP_EVERY: std::time::Duration = std::time::Duration::from_secs(5);

/// Runs until the server stops: every [`KEEP_EVERY`], hands over the
/// uploads whose last byte is in and that are not handed over yet (their
/// clients saw the whole offset and will not send again), and frees those
/// untouched for `tus_expiry_hours` (an unfinished one's bytes first, then
/// its row). Each under the upload's writer, and only when no `PATCH` is at
/// work on it.
pub async fn keep(state: Arc<AppState>) {
    loop {
        if let Err(e) = look(&state).await {
            tracing::warn!(error = ?e, "cannot look after the tus uploads now; trying again later");
        }
        tokio::select! {
            () = tokio::time::sleep(KEEP_EVERY) => {}
            () = state.services.stop.cancelled() => return,
        }
    }
}

async fn look(state: &AppState) -> Result<(), ApiError> {
    let store = state.services.store.clone();
    let all = state.services.blocking(move || store.tus_all()).await??;
    let before = crate::store::record::unix_ago(state.services.config.tus_expiry);
    for upload in all {
        let owed = is_owed(&upload);
        if !owed && upload.touched_at >= before {
            continue;
        }
        // One upload that cannot be looked after does not hold up the others.
        if let Err(e) = look_after(upload.id, before, state).await {
            tracing::warn!(upload = %upload.id, error = ?e, "cannot look after a tus upload now");
        }
    }
    Ok(())
}

/// Complete and to be handed over, but not yet.
fn is_owed(upload: &TusUpload) -> bool {
    !upload.handed_over && upload.is_complete() && upload.is_handed_over_when_complete()
}

/// Hands over or expires the upload `id`, if no `PATCH` is at work on it.
async fn look_after(id: Uuid, before: i64, state: &AppState) -> Result<(), ApiError> {
    let Some(_writer) = state.tus_writers.try_hold(id) else {
        return Ok(());
    };
    let Some(mut upload) = state.services.store.tus_get(id)? else {
        state.tus_writers.forget(id);
        return Ok(());
    };
    if is_owed(&upload) {
        let layout = &state.services.layout;
        let bytes_kept = layout.tus_path(id).exists() || layout.staged_path(id).exists();
        if !bytes_kept && state.services.store.get(id)?.is_none() {
            // Nothing left to hand over (its record was deleted, or its file lost).
            tracing::warn!(upload = %id, "a complete tus upload has no bytes left; forgotten");
            return expire(&upload, state).await;
        }
        if let Err(e) = hand_over(&mut upload, state).await {
            tracing::debug!(upload = %id, error = ?e, "tus upload not handed over yet");
        }
    } else if upload.touched_at < before {
        expire(&upload, state).await?;
        tracing::info!(upload = %id, "tus upload expired");
    }
    Ok(())
}

/// Frees an expired upload: its bytes (if unfinished), then its row; a
/// crash between the two only means the file is removed again.
pub(super) async fn expire(upload: &TusUpload, state: &AppState) -> Result<(), ApiError> {
    let path = state.services.layout.tus_path(upload.id);
    let store = state.services.store.clone();
    let (id, finished) = (upload.id, upload.handed_over);
    state
        .services
        .blocking(move || -> Result<(), ApiError> {
            if !finished {
                remove_if_exists(&path)?;
            }
            store.tus_remove(id)?;
            Ok(())
        })
        .await??;
    state.tus_writers.forget(id);
    Ok(())
}

/// At start, before the staging folder is tidied: each unfinished tus
/// upload's file is cut back to its durable offset; one whose hand-over a
/// crash interrupted is marked handed over if intake recorded it, or gets
/// its file back from staging (for [`keep`] to hand it over again); files
/// of no upload go. A failure is logged and leaves the rest to do. Blocking.
pub fn recover_files(
    layout: &crate::layout::DataLayout,
    store: &crate::store::Store,
) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    let all = store.tus_all()?;
    let known: std::collections::HashSet<Uuid> = all.iter().map(|u| u.id).collect();
    for mut upload in all {
        if upload.handed_over {
            continue;
        }
        if let Err(e) = recover_one(layout, store, &mut upload) {
            tracing::error!(upload = %upload.id, error = %e, "cannot recover a tus upload");
        }
    }
    for entry in std::fs::read_dir(layout.tus_dir())? {
        let path = entry?.path();
        let ours = path
            .file_stem()
            .and_then(|stem| Uuid::parse_str(&stem.to_string_lossy()).ok())
            .is_some_and(|id| known.contains(&id));
        if !ours {
            let _ = std::fs::remove_file(&path);
        }
    }
    Ok(())
}

fn recover_one(
    layout: &crate::layout::DataLayout,
    store: &crate::store::Store,
    upload: &mut TusUpload,
) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    let (file, staged) = (layout.tus_path(upload.id), layout.staged_path(upload.id));
    if upload.is_complete() && store.get(upload.id)?.is_some() {
        upload.handed_over = true;
        store.tus_put(upload)?;
        return Ok(());
    }
    if !file.exists() && staged.exists() {
        rename_durably(&staged, &file)?;
    }
    let open = std::fs::OpenOptions::new().write(true).open(&file)?;
    let len = open.metadata()?.len();
    if len < upload.offset {
        // Bytes acknowledged are missing (the disk lost them): the offset
        // comes back to what is there, rather than zeros nobody sent.
        tracing::error!(upload = %upload.id, offset = upload.offset, len, "a tus upload's file is short");
        upload.offset = len;
        store.tus_put(upload)?;
    }
    open.set_len(upload.offset)?;
    open.sync_all()?;
    Ok(())
}
