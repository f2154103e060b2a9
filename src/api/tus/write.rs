//! Writing a tus upload: one writer per upload ([`Writers`]), which appends
//! a `PATCH` body at the upload's offset (through [`super::append`]) and
//! moves the offset only once the bytes are fsynced.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use bytes::Buf;
use futures_util::{Stream, StreamExt};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use super::append::{Appender, GATHER_WAIT};
use super::checksum::Expected;
use super::keep::hand_over;
use super::{save, ApiError, AppState};
use crate::store::tus::{Concat, TusUpload};

/// Bytes a `PATCH` writes between two commits of its offset: what a crash
/// mid-`PATCH` can cost the client at most.
pub const COMMIT_EVERY: u64 = 8 * 1024 * 1024;

/// Longest a `PATCH` keeps bytes uncommitted, however slowly they come:
/// what a client whose connection stalled loses when its next `PATCH`
/// takes over (the new one goes on from the committed offset). On a fast
/// link [`COMMIT_EVERY`] comes first; on a slow one this costs one commit
/// a second.
pub const COMMIT_WITHIN: std::time::Duration = std::time::Duration::from_secs(1);

/// What a `PATCH` (or a creation with its first bytes) says of its body.
pub struct Patch {
    /// The offset the client says the upload is at.
    pub at: u64,
    /// Its `Content-Length`, if given.
    pub declared: Option<u64>,
    /// Its `Upload-Length`, for an upload whose length was deferred.
    pub length: Option<u64>,
    /// Its `Upload-Checksum`: the body is kept only if it has this digest.
    pub checksum: Option<Expected>,
}

/// What is left to write of `upload`: up to its length, or while the length
/// is deferred, up to `max` bytes in all.
pub fn room(upload: &TusUpload, max: u64) -> u64 {
    upload.length.unwrap_or(max).saturating_sub(upload.offset)
}

/// The checks a `PATCH` passes before and again once it holds the writer
/// (another writer may have moved the upload meanwhile); none changes
/// anything.
pub fn check(upload: &TusUpload, patch: &Patch, max: u64) -> Result<(), ApiError> {
    if matches!(upload.concat, Concat::Final(_)) {
        return Err(ApiError::TusFinal);
    }
    if patch.at != upload.offset {
        return Err(ApiError::OffsetMismatch {
            offset: upload.offset,
        });
    }
    let length = match (upload.length, patch.length) {
        (Some(known), Some(given)) if known != given => {
            return Err(ApiError::BadRequest(
                "The upload's Upload-Length is already set, to another value.",
            ))
        }
        (_, Some(given)) if given > max => return Err(ApiError::PayloadTooLarge { limit: max }),
        (_, Some(given)) if given < upload.offset => {
            return Err(ApiError::BadRequest(
                "The Upload-Length is less than the bytes already received.",
            ))
        }
        (_, Some(0)) if upload.concat != Concat::Partial => {
            return Err(ApiError::invalid(
                "Upload-Length",
                "The video must not be empty.",
            ))
        }
        (known, given) => known.or(given),
    };
    let room = length.unwrap_or(max).saturating_sub(upload.offset);
    match patch.declared {
        Some(n) if n > room && length.is_none() => Err(ApiError::PayloadTooLarge { limit: max }),
        Some(n) if n > room => Err(past_the_end()),
        _ => Ok(()),
    }
}

/// Takes over the upload's writing, appends `body` at `patch.at`, and
/// hands the upload over once complete (a partial upload waits to be
/// joined instead).
pub async fn receive<S, B>(
    id: Uuid,
    patch: Patch,
    body: S,
    state: Arc<AppState>,
) -> Result<TusUpload, ApiError>
where
    S: Stream<Item = Result<B, warp::Error>> + Send + Unpin + 'static,
    B: Buf + Send + 'static,
{
    let writer = state.tus_writers.take_over(id).await;
    // Read again: the writer it took over from may have moved the offset.
    let Some(mut upload) = state.services.store.tus_get(id)? else {
        // Gone meanwhile (deleted, expired or joined).
        state.tus_writers.forget(id);
        return Err(ApiError::NotFound);
    };
    let max = state.services.config.max_upload_bytes;
    check(&upload, &patch, max)?;
    if upload.handed_over {
        return Ok(upload);
    }
    // A deferred length given now is written with the first bytes kept (or
    // alone, if none come); a refused body leaves it unknown.
    let stored_length = upload.length;
    upload.length = upload.length.or(patch.length);
    let written = if room(&upload, max) > 0 {
        write(&mut upload, body, patch.checksum, &writer.stop, &state).await
    } else {
        Ok(())
    };
    match &written {
        Ok(()) if upload.length != stored_length && !writer.stop.is_cancelled() => {
            save(&mut upload, &state).await?;
        }
        Ok(()) => {}
        Err(_) => {
            if let Some(stored) = state.services.store.tus_get(id)? {
                upload = stored;
            }
        }
    }
    // However the body ended: with the last byte in, the upload goes on.
    if upload.is_complete() && upload.is_handed_over_when_complete() {
        hand_over(&mut upload, &state).await?;
    }
    written.map(|()| upload)
}

/// Appends `body` to the upload's file, committing its offset after each
/// [`COMMIT_EVERY`] bytes or [`COMMIT_WITHIN`], and at the end, also when the body fails (not when
/// the writer is stopped: its successor writes the tail again; nor when a
/// write fails: the offset stays at the last commit). With a checksum nothing is committed until the whole
/// body is in and has the digest; otherwise it is cut off again.
async fn write<S, B>(
    upload: &mut TusUpload,
    body: S,
    mut checksum: Option<Expected>,
    stop: &CancellationToken,
    state: &Arc<AppState>,
) -> Result<(), ApiError>
where
    S: Stream<Item = Result<B, warp::Error>> + Send + Unpin,
    B: Buf + Send,
{
    let path = state.services.layout.tus_path(upload.id);
    let mut file = Appender::open(&path, upload.offset).await?;
    let max = state.services.config.max_upload_bytes;
    let idle = state.services.config.body_idle_timeout;
    let mut body = body;
    let mut unsynced = 0u64;
    let mut committed_at = tokio::time::Instant::now();
    let ended = loop {
        // Gathered bytes wait a moment for more, then are written.
        let ready = if file.is_gathering() {
            match tokio::time::timeout(GATHER_WAIT, body.next()).await {
                Ok(next) => Some(next),
                Err(_) => {
                    file.write_out().await?;
                    None
                }
            }
        } else {
            None
        };
        let next = tokio::select! {
            biased;
            // Taken over: what is not committed is the new writer's to
            // write again (it cuts the file back), so that it goes on from
            // the offset its client was told.
            () = stop.cancelled() => return Ok(()),
            next = async {
                match ready {
                    Some(next) => Ok(next),
                    None => tokio::time::timeout(idle, body.next()).await,
                }
            } => next,
            // After the body's arm, so a piece already taken is never dropped
            // here; the body's next piece is still to come (`next` of a
            // stream is cancel-safe).
            () = tokio::time::sleep_until(committed_at + COMMIT_WITHIN),
                if unsynced > 0 && checksum.is_none() =>
            {
                commit(&mut file, upload, unsynced, state).await?;
                unsynced = 0;
                committed_at = tokio::time::Instant::now();
                continue;
            }
        };
        let mut chunk = match next {
            Err(_) => break Err(ApiError::RequestTimeout),
            Ok(None) => break Ok(()),
            Ok(Some(Err(e))) => break Err(ApiError::MalformedBody(e.to_string())),
            Ok(Some(Ok(chunk))) => chunk,
        };
        if chunk.remaining() as u64 > room(upload, max) - unsynced {
            break Err(match upload.length {
                Some(_) => past_the_end(),
                None => ApiError::PayloadTooLarge { limit: max },
            });
        }
        while chunk.has_remaining() {
            let part = chunk.chunk();
            let n = part.len();
            file.take(part).await?;
            if let Some(expected) = &mut checksum {
                expected.update(part);
            }
            chunk.advance(n);
            unsynced += n as u64;
        }
        if checksum.is_none() && unsynced >= COMMIT_EVERY {
            commit(&mut file, upload, unsynced, state).await?;
            unsynced = 0;
            committed_at = tokio::time::Instant::now();
        }
    };
    if let Some(expected) = checksum {
        if !(ended.is_ok() && expected.matches()) {
            // A checksummed body that did not come whole, or had another digest.
            file.cut_back(upload.offset).await?;
            return ended.and(Err(ApiError::ChecksumMismatch));
        }
    }
    if unsynced > 0 {
        commit(&mut file, upload, unsynced, state).await?;
    }
    ended
}

fn past_the_end() -> ApiError {
    ApiError::BadRequest("The body goes past the upload's Upload-Length.")
}

/// Makes `bytes` more of the upload durable, then its offset.
async fn commit(
    file: &mut Appender,
    upload: &mut TusUpload,
    bytes: u64,
    state: &AppState,
) -> Result<(), ApiError> {
    file.sync().await?;
    // The offset moves in memory only once its row is written.
    let mut row = upload.clone();
    row.offset += bytes;
    save(&mut row, state).await?;
    *upload = row;
    Ok(())
}

/// The one writer of each upload. A new one stops the one in flight (which
/// lets go, its uncommitted tail left to the new one) and waits for it.
#[derive(Default)]
pub struct Writers(Mutex<HashMap<Uuid, Slot>>);

/// One upload's writing: held by its writer; `stop` is that writer's.
#[derive(Default)]
struct Slot {
    held: Arc<tokio::sync::Mutex<()>>,
    stop: CancellationToken,
}

/// The right to write one upload, until dropped.
pub struct Writer {
    _held: tokio::sync::OwnedMutexGuard<()>,
    /// Cancelled when a newer writer takes over.
    pub stop: CancellationToken,
}

impl Writers {
    /// Stops the writer of `id` in flight, if any, and becomes the writer.
    pub async fn take_over(&self, id: Uuid) -> Writer {
        let (lock, stop) = {
            let mut map = self.0.lock().unwrap_or_else(|e| e.into_inner());
            let slot = map.entry(id).or_default();
            slot.stop.cancel();
            slot.stop = CancellationToken::new();
            (slot.held.clone(), slot.stop.clone())
        };
        Writer {
            _held: lock.lock_owned().await,
            stop,
        }
    }

    /// The writer of `id`, unless one is at work (or waiting) on it.
    pub fn try_hold(&self, id: Uuid) -> Option<Writer> {
        let (lock, stop) = {
            let mut map = self.0.lock().unwrap_or_else(|e| e.into_inner());
            let slot = map.entry(id).or_default();
            (slot.held.clone(), slot.stop.clone())
        };
        Some(Writer {
            _held: lock.try_lock_owned().ok()?,
            stop,
        })
    }

    /// The upload is gone: its entry goes.
    pub fn forget(&self, id: Uuid) {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).remove(&id);
    }
}
