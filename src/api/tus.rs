//! Resumable uploads over tus 1.0.0: `/api/client/v1/tus` (`OPTIONS`, and
//! `POST` to create one) and `/api/client/v1/tus/{id}` (`OPTIONS`, `HEAD`
//! for its offset, `PATCH` to append, `DELETE` to terminate). Extensions:
//! creation, termination and expiration (`Upload-Expires`).
//!
//! A `PATCH` appends to `tus/{id}.bin` and moves the upload's offset
//! ([`crate::store::tus`]) only once the bytes are fsynced: every
//! [`COMMIT_EVERY`] bytes and when its body ends, however it ends. Its body
//! is received by a task of its own, so a client that drops keeps what
//! arrived. One writer per upload: a new `PATCH` from the upload's offset
//! stops the one in flight (whose uncommitted bytes it writes again) and
//! takes over, so a client whose old connection stalled resumes at once.
//! When the last byte is in, the file becomes the upload's staged source and
//! intake records it under the same id, as after a multipart
//! `POST /uploads`; a hand-over intake refused (queue full) is done later by
//! [`keep`], which also frees uploads untouched for `tus_expiry_hours`.
//!
//! Every answer but `OPTIONS`'s carries `Tus-Resumable: 1.0.0`; errors are
//! the API's usual JSON.

use std::collections::HashMap;
use std::io::SeekFrom;
use std::sync::{Arc, Mutex};

use base64::Engine as _;
use bytes::Buf;
use futures_util::{Stream, StreamExt};
use tokio::io::{AsyncSeekExt, AsyncWriteExt};
use tokio_util::sync::CancellationToken;
use tracing::Instrument;
use uuid::Uuid;
use warp::filters::BoxedFilter;
use warp::http::{header, HeaderMap, HeaderValue, StatusCode};
use warp::reply::Response;
use warp::{Filter, Rejection, Reply};

use super::auth::{self, Tenant};
use super::error::ApiError;
use super::folder::{checked_filename, checked_folder};
use super::intake::{self, Recorded};
use super::routes::path_param;
use super::uploads::upload_id;
use super::{with_state, AppState};
use crate::actors::intake::StagedUpload;
use crate::layout::{fsync_dir, remove_if_exists, rename_durably};
use crate::store::record::unix_now;
use crate::store::tus::TusUpload;

/// The one version spoken.
pub const VERSION: &str = "1.0.0";

/// The extensions offered.
pub const EXTENSIONS: &str = "creation,termination,expiration";

/// The body type of a `PATCH`.
const OFFSET_STREAM: &str = "application/offset+octet-stream";

/// Bytes a `PATCH` writes between two commits of its offset: what a crash
/// mid-`PATCH` can cost the client at most.
pub const COMMIT_EVERY: u64 = 8 * 1024 * 1024;

/// The path of upload `id`'s resource.
fn location(id: Uuid) -> String {
    format!("/api/client/v1/tus/{id}")
}

/// `OPTIONS` on either route: what the server speaks.
pub fn options(state: &Arc<AppState>) -> BoxedFilter<(Response,)> {
    let max = state.services.config.max_upload_bytes;
    auth::tenant(state.clone())
        .map(move |_: Tenant| {
            let mut response = StatusCode::NO_CONTENT.into_response();
            let headers = response.headers_mut();
            headers.insert("tus-version", HeaderValue::from_static(VERSION));
            headers.insert("tus-extension", HeaderValue::from_static(EXTENSIONS));
            headers.insert("tus-max-size", HeaderValue::from(max));
            response
        })
        .boxed()
}

/// `POST /tus`: creates an upload.
pub fn create(state: &Arc<AppState>) -> BoxedFilter<(Response,)> {
    auth::tenant_or_refusal(state.clone())
        .and(warp::header::headers_cloned())
        .and(with_state(state.clone()))
        .then(|tenant, headers, state| async move {
            tus_answer(created(tenant, &headers, &state).await)
        })
        .boxed()
}

/// `HEAD /tus/{id}`: where the upload is.
pub fn head(state: &Arc<AppState>) -> BoxedFilter<(Response,)> {
    auth::tenant_or_refusal(state.clone())
        .and(path_param(0))
        .and(warp::header::headers_cloned())
        .and(with_state(state.clone()))
        .map(|tenant, id: String, headers, state: Arc<AppState>| {
            tus_answer(offset_of(tenant, &id, &headers, &state))
        })
        .boxed()
}

/// `PATCH /tus/{id}`: appends the body at `Upload-Offset`.
pub fn patch(state: &Arc<AppState>) -> BoxedFilter<(Response,)> {
    auth::tenant_or_refusal(state.clone())
        .and(path_param(0))
        .and(warp::header::headers_cloned())
        .and(warp::body::stream())
        .and(with_state(state.clone()))
        .then(|tenant, id: String, headers, body, state| async move {
            tus_answer(appended(tenant, &id, &headers, body, state).await)
        })
        .boxed()
}

/// `DELETE /tus/{id}`: terminates the upload.
pub fn delete(state: &Arc<AppState>) -> BoxedFilter<(Response,)> {
    auth::tenant_or_refusal(state.clone())
        .and(path_param(0))
        .and(warp::header::headers_cloned())
        .and(with_state(state.clone()))
        .then(
            |tenant, id: String, headers, state: Arc<AppState>| async move {
                tus_answer(terminated(tenant, &id, &headers, &state).await)
            },
        )
        .boxed()
}

/// The answer with `Tus-Resumable`, an error as the usual JSON (a 412 with
/// the versions spoken).
fn tus_answer(result: Result<Response, ApiError>) -> Response {
    let mut response = result.unwrap_or_else(|e| {
        let mut response = e.to_response();
        if matches!(e, ApiError::TusVersion) {
            let headers = response.headers_mut();
            headers.insert("tus-version", HeaderValue::from_static(VERSION));
        }
        response
    });
    let headers = response.headers_mut();
    headers.insert("tus-resumable", HeaderValue::from_static(VERSION));
    response
}

/// The request's `Tus-Resumable` is the version spoken (else 412).
fn speaks_tus(headers: &HeaderMap) -> Result<(), ApiError> {
    match headers.get("tus-resumable") {
        Some(v) if v.as_bytes() == VERSION.as_bytes() => Ok(()),
        _ => Err(ApiError::TusVersion),
    }
}

/// A header holding a non-negative integer; `None` if absent.
fn number(headers: &HeaderMap, name: &'static str) -> Result<Option<u64>, ApiError> {
    let Some(value) = headers.get(name) else {
        return Ok(None);
    };
    value
        .to_str()
        .ok()
        .filter(|v| !v.is_empty() && v.bytes().all(|b| b.is_ascii_digit()))
        .and_then(|v| v.parse().ok())
        .map(Some)
        .ok_or(ApiError::BadHeader(name))
}

/// `Upload-Metadata`: comma-separated `key base64value` pairs (a key alone
/// has an empty value).
fn metadata(headers: &HeaderMap) -> Result<HashMap<String, String>, ApiError> {
    let mut pairs = HashMap::new();
    let Some(value) = headers.get("upload-metadata") else {
        return Ok(pairs);
    };
    let value = value
        .to_str()
        .map_err(|_| ApiError::BadHeader("Upload-Metadata"))?;
    for pair in value.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let (key, encoded) = pair.split_once(' ').unwrap_or((pair, ""));
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(encoded.trim())
            .ok()
            .and_then(|bytes| String::from_utf8(bytes).ok())
            .ok_or(ApiError::BadHeader("Upload-Metadata"))?;
        if pairs.insert(key.to_string(), decoded).is_some() {
            return Err(ApiError::BadHeader("Upload-Metadata"));
        }
    }
    Ok(pairs)
}

/// The upload `id` of `tenant`, if there is one (another tenant's is not).
fn owned(state: &AppState, tenant: &Tenant, id: &str) -> Result<TusUpload, ApiError> {
    let id = upload_id(id).ok_or(ApiError::NotFound)?;
    state
        .services
        .store
        .tus_get(id)?
        .filter(|u| *u.tenant == *tenant.0)
        .ok_or(ApiError::NotFound)
}

async fn created(
    tenant: Result<Tenant, Rejection>,
    headers: &HeaderMap,
    state: &Arc<AppState>,
) -> Result<Response, ApiError> {
    let tenant = tenant.map_err(|_| ApiError::Unauthenticated)?;
    speaks_tus(headers)?;
    let config = &state.services.config;
    let Some(length) = number(headers, "upload-length")? else {
        return Err(ApiError::BadHeader("Upload-Length"));
    };
    let limit = config.max_upload_bytes;
    if length > limit {
        return Err(ApiError::PayloadTooLarge { limit });
    }
    let meta = metadata(headers)?;
    let mut errors = std::collections::BTreeMap::new();
    let filename = match meta.get("filename") {
        None => Err("The filename metadata is required.".to_string()),
        Some(raw) => checked_filename(raw),
    };
    let folder = match meta.get("folder") {
        None => Err("The folder metadata is required.".to_string()),
        Some(raw) => checked_folder(raw),
    };
    let callback_url = meta.get("callback_url").map(|u| u.trim().to_string());
    let callback = match &callback_url {
        None => Ok(()),
        Some(url) => intake::check_callback_url(url, config),
    };
    let size = if length == 0 {
        Err("The video must not be empty.".to_string())
    } else {
        Ok(())
    };
    for (field, refused) in [
        ("filename", filename.as_ref().err()),
        ("folder", folder.as_ref().err()),
        ("callback_url", callback.as_ref().err()),
        ("Upload-Length", size.as_ref().err()),
    ] {
        if let Some(message) = refused {
            errors.insert(field, vec![message.clone()]);
        }
    }
    let (Ok(filename), Ok(folder), true) = (filename, folder, errors.is_empty()) else {
        return Err(ApiError::Validation(errors));
    };
    if callback_url.is_some() {
        intake::signs_callbacks(state, &tenant)?;
    }
    intake::admission(state, &tenant)?;
    intake::below_reserve(state)?;

    let upload = TusUpload {
        id: Uuid::new_v4(),
        tenant: tenant.0.to_string(),
        length,
        offset: 0,
        filename,
        folder,
        callback_url,
        touched_at: unix_now(),
        handed_over: false,
    };
    let path = state.services.layout.tus_path(upload.id);
    let dir = state.services.layout.tus_dir();
    let store = state.services.store.clone();
    let row = upload.clone();
    // The empty file, then its row: a row always has its file.
    state
        .services
        .blocking(move || -> Result<(), ApiError> {
            std::fs::File::create(&path)?.sync_all()?;
            fsync_dir(&dir)?;
            store.tus_put(&row)?;
            Ok(())
        })
        .await??;
    tracing::info!(upload = %upload.id, length, "tus upload created");
    let mut response = StatusCode::CREATED.into_response();
    let headers = response.headers_mut();
    let location = HeaderValue::from_str(&location(upload.id))
        .map_err(|e| ApiError::Internal(e.to_string()))?;
    headers.insert(header::LOCATION, location);
    headers.insert("upload-offset", HeaderValue::from(0u64));
    expires(headers, &upload, state);
    Ok(response)
}

fn offset_of(
    tenant: Result<Tenant, Rejection>,
    id: &str,
    headers: &HeaderMap,
    state: &AppState,
) -> Result<Response, ApiError> {
    let tenant = tenant.map_err(|_| ApiError::Unauthenticated)?;
    speaks_tus(headers)?;
    let upload = owned(state, &tenant, id)?;
    let mut response = StatusCode::OK.into_response();
    let headers = response.headers_mut();
    headers.insert("upload-offset", HeaderValue::from(upload.offset));
    headers.insert("upload-length", HeaderValue::from(upload.length));
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    expires(headers, &upload, state);
    Ok(response)
}

/// `Upload-Expires` of an unfinished upload: `tus_expiry_hours` after its
/// last write, when it is freed.
fn expires(headers: &mut HeaderMap, upload: &TusUpload, state: &AppState) {
    if upload.handed_over {
        return;
    }
    let expiry = state.services.config.tus_expiry;
    let last = u64::try_from(upload.touched_at).unwrap_or(0);
    let at = std::time::UNIX_EPOCH + std::time::Duration::from_secs(last) + expiry;
    if let Ok(value) = HeaderValue::from_str(&httpdate::fmt_http_date(at)) {
        headers.insert("upload-expires", value);
    }
}

async fn appended<S, B>(
    tenant: Result<Tenant, Rejection>,
    id: &str,
    headers: &HeaderMap,
    body: S,
    state: Arc<AppState>,
) -> Result<Response, ApiError>
where
    S: Stream<Item = Result<B, warp::Error>> + Send + Unpin + 'static,
    B: Buf + Send + 'static,
{
    let tenant = tenant.map_err(|_| ApiError::Unauthenticated)?;
    speaks_tus(headers)?;
    let is_offset_stream = headers
        .get(header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(OFFSET_STREAM.as_bytes()));
    if !is_offset_stream {
        return Err(ApiError::TusContentType);
    }
    let Some(at) = number(headers, "upload-offset")? else {
        return Err(ApiError::BadHeader("Upload-Offset"));
    };
    let upload = owned(&state, &tenant, id)?;
    // A PATCH from elsewhere than the upload's offset leaves its writer alone.
    if at != upload.offset {
        return Err(ApiError::OffsetMismatch {
            offset: upload.offset,
        });
    }
    intake::below_reserve(&state)?;
    let declared = number(headers, "content-length")?;
    if declared.is_some_and(|n| n > upload.length - upload.offset) {
        return Err(past_the_end());
    }
    // Received in a task of its own: a client that drops keeps what arrived.
    let received =
        receive(upload.id, at, declared, body, state.clone()).instrument(tracing::Span::current());
    let upload = state.services.tasks.spawn(received).await??;
    let mut response = StatusCode::NO_CONTENT.into_response();
    let headers = response.headers_mut();
    headers.insert("upload-offset", HeaderValue::from(upload.offset));
    expires(headers, &upload, &state);
    Ok(response)
}

/// Takes over the upload's writing, appends `body` at `at` (the offset the
/// client says it is at), and hands the upload over once complete.
async fn receive<S, B>(
    id: Uuid,
    at: u64,
    declared: Option<u64>,
    body: S,
    state: Arc<AppState>,
) -> Result<TusUpload, ApiError>
where
    S: Stream<Item = Result<B, warp::Error>> + Send + Unpin + 'static,
    B: Buf + Send + 'static,
{
    let writer = state.tus_writers.take_over(id).await;
    // Read again: the writer it took over from may have moved the offset.
    let mut upload = state
        .services
        .store
        .tus_get(id)?
        .ok_or(ApiError::NotFound)?;
    if at != upload.offset {
        return Err(ApiError::OffsetMismatch {
            offset: upload.offset,
        });
    }
    if declared.is_some_and(|n| n > upload.length - upload.offset) {
        return Err(past_the_end());
    }
    if upload.handed_over {
        return Ok(upload);
    }
    let written = if upload.offset < upload.length {
        write(&mut upload, body, &writer.stop, &state).await
    } else {
        Ok(())
    };
    // However the body ended: with the last byte in, the upload goes on.
    if upload.offset == upload.length {
        hand_over(&mut upload, &state).await?;
    }
    written.map(|()| upload)
}

/// Appends `body` to the upload's file, committing its offset after each
/// [`COMMIT_EVERY`] bytes and at the end (also when the body fails or the
/// writer is stopped).
async fn write<S, B>(
    upload: &mut TusUpload,
    body: S,
    stop: &CancellationToken,
    state: &Arc<AppState>,
) -> Result<(), ApiError>
where
    S: Stream<Item = Result<B, warp::Error>> + Send + Unpin,
    B: Buf + Send,
{
    let path = state.services.layout.tus_path(upload.id);
    let mut file = tokio::fs::OpenOptions::new()
        .write(true)
        .open(&path)
        .await?;
    // Bytes past the durable offset are a crashed or stopped writer's.
    file.set_len(upload.offset).await?;
    file.seek(SeekFrom::Start(upload.offset)).await?;
    let idle = state.services.config.body_idle_timeout;
    let mut body = body;
    let mut unsynced = 0u64;
    let ended = loop {
        let next = tokio::select! {
            biased;
            // Taken over: what is not committed is the new writer's to
            // write again (it cuts the file back), so that it goes on from
            // the offset its client was told.
            () = stop.cancelled() => {
                let _ = file.flush().await;
                return Ok(());
            }
            next = tokio::time::timeout(idle, body.next()) => next,
        };
        let mut chunk = match next {
            Err(_) => break Err(ApiError::RequestTimeout),
            Ok(None) => break Ok(()),
            Ok(Some(Err(e))) => break Err(ApiError::MalformedBody(e.to_string())),
            Ok(Some(Ok(chunk))) => chunk,
        };
        let room = upload.length - upload.offset - unsynced;
        if chunk.remaining() as u64 > room {
            break Err(past_the_end());
        }
        while chunk.has_remaining() {
            let part = chunk.chunk();
            let n = part.len();
            file.write_all(part).await?;
            chunk.advance(n);
            unsynced += n as u64;
        }
        if unsynced >= COMMIT_EVERY {
            commit(&mut file, upload, unsynced, state).await?;
            unsynced = 0;
        }
    };
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
    file: &mut tokio::fs::File,
    upload: &mut TusUpload,
    bytes: u64,
    state: &AppState,
) -> Result<(), ApiError> {
    file.flush().await?;
    file.sync_data().await?;
    let mut row = upload.clone();
    row.offset += bytes;
    row.touched_at = unix_now();
    let store = state.services.store.clone();
    let put = row.clone();
    state
        .services
        .blocking(move || store.tus_put(&put))
        .await??;
    *upload = row;
    Ok(())
}

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
            size_bytes: upload.length,
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
        tracing::info!(upload = %upload.id, size_bytes = upload.length, "tus upload complete");
    }
    upload.handed_over = true;
    // Kept for HEAD a whole expiry period from now.
    upload.touched_at = unix_now();
    let store = state.services.store.clone();
    let row = upload.clone();
    state
        .services
        .blocking(move || store.tus_put(&row))
        .await??;
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
        let owed = !upload.handed_over && upload.offset == upload.length;
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

/// Hands over or expires the upload `id`, if no `PATCH` is at work on it.
async fn look_after(id: Uuid, before: i64, state: &AppState) -> Result<(), ApiError> {
    let Some(_writer) = state.tus_writers.try_hold(id) else {
        return Ok(());
    };
    let Some(mut upload) = state.services.store.tus_get(id)? else {
        state.tus_writers.forget(id);
        return Ok(());
    };
    if !upload.handed_over && upload.offset == upload.length {
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
async fn expire(upload: &TusUpload, state: &AppState) -> Result<(), ApiError> {
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

async fn terminated(
    tenant: Result<Tenant, Rejection>,
    id: &str,
    headers: &HeaderMap,
    state: &Arc<AppState>,
) -> Result<Response, ApiError> {
    let tenant = tenant.map_err(|_| ApiError::Unauthenticated)?;
    speaks_tus(headers)?;
    let upload = owned(state, &tenant, id)?;
    // Stops a writer in flight and keeps others out while the bytes go.
    let _writer = state.tus_writers.take_over(upload.id).await;
    let Some(upload) = state.services.store.tus_get(upload.id)? else {
        return Err(ApiError::NotFound);
    };
    expire(&upload, state).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// The one writer of each upload. A new one stops the one in flight (which
/// commits what it wrote and lets go) and waits for it.
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
    if upload.offset == upload.length && store.get(upload.id)?.is_some() {
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
