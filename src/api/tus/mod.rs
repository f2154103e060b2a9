//! Resumable uploads over tus 1.0.0: `/api/client/v1/tus` (`OPTIONS`, and
//! `POST` to create one) and `/api/client/v1/tus/{id}` (`OPTIONS`, `HEAD`
//! for its offset, `PATCH` to append, `DELETE` to terminate). Extensions:
//! creation (with an `Idempotency-Key` as on `POST /uploads`),
//! creation-with-upload, creation-defer-length, termination, expiration
//! (`Upload-Expires`), checksum ([`checksum`]: md5, sha1, sha256; a body
//! without its digest is discarded, 460) and concatenation ([`concat`]).
//!
//! A `PATCH` appends to `tus/{id}.bin` and moves the upload's offset
//! ([`crate::store::tus`]) only once the bytes are fsynced ([`write`]):
//! every [`COMMIT_EVERY`] bytes and when its body ends, however it ends (a
//! checksummed body: only once it is whole and has its digest; a writer
//! taken over or failing to write: not its tail). Its body
//! is received by a task of its own, so a client that drops keeps what
//! arrived. One writer per upload: a new `PATCH` from the upload's offset
//! stops the one in flight (whose uncommitted bytes it writes again) and
//! takes over, so a client whose old connection stalled resumes at once.
//! When the last byte is in, the file becomes the upload's staged source and
//! intake records it under the same id, as after a multipart
//! `POST /uploads`; a hand-over intake refused (queue full) is done later by
//! [`keep`], which also frees uploads untouched for `tus_expiry_hours`. A
//! key may have `max_unfinished_tus_uploads_per_tenant` uploads not yet
//! handed over.
//!
//! Every answer but `OPTIONS`'s carries `Tus-Resumable: 1.0.0`; errors are
//! the API's usual JSON.

mod append;
mod checksum;
mod concat;
mod keep;
mod write;

use std::collections::HashMap;
use std::sync::Arc;

use base64::Engine as _;
use bytes::Buf;
use futures_util::Stream;
use tracing::Instrument;
use uuid::Uuid;
use warp::filters::BoxedFilter;
use warp::http::{header, HeaderMap, HeaderValue, StatusCode};
use warp::reply::Response;
use warp::{Filter, Rejection, Reply};

use super::auth::{self, Tenant};
use super::error::ApiError;
use super::folder::{checked_filename, checked_folder};
use super::idempotency;
use super::intake;
use super::routes::path_param;
use super::uploads::upload_id;
use super::{with_state, AppState};
use crate::layout::{fsync_dir, remove_if_exists};
use crate::store::record::unix_now;
use crate::store::tus::{Concat, TusUpload};
use checksum::Expected;
use write::Patch;

pub use keep::{hand_over, keep, recover_files};
pub use write::{Writers, COMMIT_EVERY};

/// The one version spoken.
pub const VERSION: &str = "1.0.0";

/// The extensions offered.
pub const EXTENSIONS: &str = "creation,creation-with-upload,creation-defer-length,\
termination,expiration,checksum,concatenation";

/// The body type of a `PATCH`.
const OFFSET_STREAM: &str = "application/offset+octet-stream";

/// The creation route; an upload's resource is below it.
pub const PATH: &str = "/api/client/v1/tus";

/// The header naming the version on every answer but `OPTIONS`'s.
pub const RESUMABLE: &str = "tus-resumable";

/// Writes `upload` as it is now, touched now (its expiry counts from here).
/// Durable on return.
async fn save(upload: &mut TusUpload, state: &AppState) -> Result<(), ApiError> {
    upload.touched_at = unix_now();
    let store = state.services.store.clone();
    let row = upload.clone();
    state
        .services
        .blocking(move || store.tus_put(&row))
        .await??;
    Ok(())
}

/// The path of upload `id`'s resource.
fn location(id: Uuid) -> String {
    format!("{PATH}/{id}")
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
            headers.insert(
                "tus-checksum-algorithm",
                HeaderValue::from_static(checksum::ALGORITHMS),
            );
            response
        })
        .boxed()
}

/// `POST /tus`: creates an upload (with its first bytes, if the body is
/// `application/offset+octet-stream`).
pub fn create(state: &Arc<AppState>) -> BoxedFilter<(Response,)> {
    auth::tenant_or_refusal(state.clone())
        .and(warp::header::headers_cloned())
        .and(warp::body::stream())
        .and(with_state(state.clone()))
        .then(|tenant, headers, body, state| async move {
            tus_answer(created(tenant, &headers, body, state).await)
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

/// The answer, an error as the usual JSON (a 412 with the versions
/// spoken). `Tus-Resumable` is added to every tus answer in
/// [`super::observe`], which makes some of them itself.
fn tus_answer(result: Result<Response, ApiError>) -> Response {
    result.unwrap_or_else(|e| {
        let mut response = e.to_response();
        if matches!(e, ApiError::TusVersion) {
            let headers = response.headers_mut();
            headers.insert("tus-version", HeaderValue::from_static(VERSION));
        }
        response
    })
}

/// The request's `Tus-Resumable` is the version spoken (else 412).
fn speaks_tus(headers: &HeaderMap) -> Result<(), ApiError> {
    match headers.get(RESUMABLE) {
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

/// Whether the request's body is of the tus type (a `PATCH`'s, or a
/// creation's first bytes). A body of another type is a 415; another type
/// on a request without a body is no body.
fn is_offset_stream(headers: &HeaderMap) -> Result<bool, ApiError> {
    match headers.get(header::CONTENT_TYPE) {
        Some(v) if v.as_bytes().eq_ignore_ascii_case(OFFSET_STREAM.as_bytes()) => Ok(true),
        Some(_) if has_body(headers) => Err(ApiError::TusContentType),
        _ => Ok(false),
    }
}

/// A body is coming: a `Content-Length` above 0, or a chunked one.
fn has_body(headers: &HeaderMap) -> bool {
    let length = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    length.is_some_and(|n| n > 0) || headers.contains_key(header::TRANSFER_ENCODING)
}

/// A creation's `Upload-Length`, or `None` with `Upload-Defer-Length: 1`.
fn declared_length(headers: &HeaderMap, concat: &Concat) -> Result<Option<u64>, ApiError> {
    let length = number(headers, "upload-length")?;
    let deferred = headers.get("upload-defer-length");
    if matches!(concat, Concat::Final(_)) {
        if length.is_some() || deferred.is_some() {
            return Err(ApiError::TusConcat(
                "A final upload's length is its partial uploads': send no Upload-Length.".into(),
            ));
        }
        return Ok(None);
    }
    match (length, deferred) {
        (Some(_), Some(_)) => Err(ApiError::BadRequest(
            "Send Upload-Length or Upload-Defer-Length, not both.",
        )),
        (Some(length), None) => Ok(Some(length)),
        (None, Some(v)) if v.as_bytes() == b"1" => Ok(None),
        (None, Some(_)) => Err(ApiError::BadHeader("Upload-Defer-Length")),
        (None, None) => Err(ApiError::BadHeader("Upload-Length")),
    }
}

/// The new upload's row, from the creation's headers, each checked: the
/// metadata as the form's fields (a partial upload's is not needed), the
/// length against `max_upload_bytes`.
fn new_upload(
    tenant: &Tenant,
    headers: &HeaderMap,
    concat: Concat,
    idempotency_key: Option<String>,
    state: &AppState,
) -> Result<TusUpload, ApiError> {
    let config = &state.services.config;
    let length = declared_length(headers, &concat)?;
    let limit = config.max_upload_bytes;
    if length.is_some_and(|n| n > limit) {
        return Err(ApiError::PayloadTooLarge { limit });
    }
    let meta = metadata(headers)?;
    let partial = concat == Concat::Partial;
    let required = |name: &str, check: fn(&str) -> Result<String, String>| match meta.get(name) {
        None if partial => Ok(String::new()),
        None => Err(format!("The {name} metadata is required.")),
        Some(raw) => check(raw),
    };
    let filename = required("filename", checked_filename);
    let folder = required("folder", checked_folder);
    let callback_url = meta.get("callback_url").map(|u| u.trim().to_string());
    let callback = match &callback_url {
        None => Ok(()),
        Some(url) => intake::check_callback_url(url, config),
    };
    // A partial upload may be empty (a file smaller than its parts' count).
    let size = match length {
        Some(0) if !partial => Err("The video must not be empty.".to_string()),
        _ => Ok(()),
    };
    let mut errors = std::collections::BTreeMap::new();
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
    Ok(TusUpload {
        id: Uuid::new_v4(),
        tenant: tenant.0.to_string(),
        length,
        offset: 0,
        filename,
        folder,
        callback_url,
        touched_at: unix_now(),
        handed_over: false,
        concat,
        idempotency_key,
    })
}

/// A repeat of a creation with the same `Idempotency-Key`: the same
/// request again, or another one. A final upload's repeat may name other
/// partial uploads: a client whose answer was lost found the first parts
/// gone (joined) and sent them again.
fn same_creation(first: &TusUpload, again: &TusUpload) -> bool {
    let same_kind = match (&first.concat, &again.concat) {
        (Concat::Final(_), Concat::Final(_)) => true,
        (Concat::Single, Concat::Single) => {
            // A deferred length may have been given since.
            again.length.is_none() || first.length == again.length
        }
        _ => false,
    };
    same_kind
        && first.filename == again.filename
        && first.folder == again.folder
        && first.callback_url == again.callback_url
}

async fn created<S, B>(
    tenant: Result<Tenant, Rejection>,
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
    let concat = concat::of(headers)?;
    // tus-js-client sends its headers, a key among them, with each partial
    // upload of a file too: a key names the single or final upload only.
    let key = idempotency::key_of(headers)?.filter(|_| concat != Concat::Partial);
    let with_bytes = is_offset_stream(headers)?;
    if with_bytes && matches!(concat, Concat::Final(_)) {
        return Err(ApiError::TusFinal);
    }
    let checksum = Expected::of(headers)?;
    let upload = new_upload(&tenant, headers, concat, key.clone(), &state)?;
    let declared = number(headers, "content-length")?;
    if with_bytes {
        let first = Patch {
            at: 0,
            declared,
            length: None,
            checksum: None,
        };
        // First bytes past the length are refused before anything is made.
        write::check(&upload, &first, state.services.config.max_upload_bytes)?;
    }
    // A key is held by one creation at a time; a repeat is answered with
    // the upload the first made, and writes nothing.
    let claim = match &key {
        None => None,
        Some(key) => {
            let claim = state
                .idempotency_claims
                .claim(&tenant.0, &format!("\ttus {key}"))
                .ok_or(ApiError::IdempotencyKeyInUse {
                    retry_after: state.services.config.retry_after,
                })?;
            if let Some(first) = state.services.store.tus_by_key(&tenant.0, key)? {
                if !same_creation(&first, &upload) {
                    return Err(ApiError::IdempotencyKeyReused);
                }
                let mut response = creation_answer(&first, &state)?;
                response
                    .headers_mut()
                    .insert("idempotent-replayed", HeaderValue::from_static("true"));
                return Ok(response);
            }
            Some(claim)
        }
    };
    if upload.callback_url.is_some() {
        intake::signs_callbacks(&state, &tenant)?;
    }
    intake::admission(&state, &tenant)?;
    intake::below_reserve(&state)?;
    let mut upload = match &upload.concat {
        Concat::Final(parts) => {
            // In a task of its own: a client that leaves mid-copy does not
            // let go of the parts while their bytes are read.
            // The key stays claimed until the final upload's row is written.
            let (parts, task_state) = (parts.clone(), state.clone());
            let joined = async move {
                let state = task_state;
                let mut joined = concat::join(upload, &parts, &state).await?;
                drop(claim);
                // Complete from the start: handed over now, or by the keeper.
                let _writer = state.tus_writers.take_over(joined.id).await;
                if let Err(e) = hand_over(&mut joined, &state).await {
                    tracing::info!(upload = %joined.id, error = ?e, "a final tus upload is handed over later");
                }
                Ok::<_, ApiError>(joined)
            };
            let joined = joined.instrument(tracing::Span::current());
            state.services.tasks.spawn(joined).await??
        }
        _ => {
            let path = state.services.layout.tus_path(upload.id);
            let dir = state.services.layout.tus_dir();
            let store = state.services.store.clone();
            let row = upload.clone();
            let cap = state.services.config.max_unfinished_tus_uploads_per_tenant;
            // The empty file, then its row: a row always has its file. The
            // key's cap is counted in the row's own transaction.
            let within = state
                .services
                .blocking(move || -> Result<bool, ApiError> {
                    std::fs::File::create(&path)?.sync_all()?;
                    fsync_dir(&dir)?;
                    let within = store.tus_insert_within(&row, cap)?;
                    if !within {
                        remove_if_exists(&path)?;
                    }
                    Ok(within)
                })
                .await??;
            drop(claim);
            if !within {
                return Err(ApiError::TooManyTusUploads {
                    limit: cap,
                    retry_after: state.services.config.retry_after,
                });
            }
            upload
        }
    };
    tracing::info!(upload = %upload.id, length = ?upload.length, "tus upload created");
    if with_bytes {
        // creation-with-upload: the body is a first PATCH. The upload exists
        // whatever became of it; the answer's offset tells the client.
        let patch = Patch {
            at: 0,
            declared,
            length: None,
            checksum,
        };
        let id = upload.id;
        let received =
            write::receive(id, patch, body, state.clone()).instrument(tracing::Span::current());
        let written = state.services.tasks.spawn(received).await;
        match written.map_err(ApiError::from).and_then(|w| w) {
            Ok(written) => upload = written,
            Err(e) => {
                tracing::info!(upload = %id, error = ?e, "a creation's first bytes: the answer's offset says what was kept");
                upload = state.services.store.tus_get(id)?.unwrap_or(upload);
            }
        }
    }
    creation_answer(&upload, &state)
}

/// 201 with the upload's `Location`, offset and expiry.
fn creation_answer(upload: &TusUpload, state: &AppState) -> Result<Response, ApiError> {
    let mut response = StatusCode::CREATED.into_response();
    let headers = response.headers_mut();
    let location = HeaderValue::from_str(&location(upload.id))
        .map_err(|e| ApiError::Internal(e.to_string()))?;
    headers.insert(header::LOCATION, location);
    headers.insert("upload-offset", HeaderValue::from(upload.offset));
    expires(headers, upload, state);
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
    match upload.length {
        Some(length) => headers.insert("upload-length", HeaderValue::from(length)),
        None => headers.insert("upload-defer-length", HeaderValue::from_static("1")),
    };
    if let Some(value) = concat::header_value(&upload.concat) {
        let value = HeaderValue::from_str(&value).map_err(|e| ApiError::Internal(e.to_string()))?;
        headers.insert("upload-concat", value);
    }
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
    if !is_offset_stream(headers)? {
        return Err(ApiError::TusContentType);
    }
    let Some(at) = number(headers, "upload-offset")? else {
        return Err(ApiError::BadHeader("Upload-Offset"));
    };
    let patch = Patch {
        at,
        declared: number(headers, "content-length")?,
        length: number(headers, "upload-length")?,
        checksum: Expected::of(headers)?,
    };
    let upload = owned(&state, &tenant, id)?;
    // A PATCH refused here (from elsewhere than the upload's offset, say)
    // leaves its writer alone.
    write::check(&upload, &patch, state.services.config.max_upload_bytes)?;
    intake::below_reserve(&state)?;
    // Received in a task of its own: a client that drops keeps what arrived.
    let received =
        write::receive(upload.id, patch, body, state.clone()).instrument(tracing::Span::current());
    let upload = state.services.tasks.spawn(received).await??;
    let mut response = StatusCode::NO_CONTENT.into_response();
    let headers = response.headers_mut();
    headers.insert("upload-offset", HeaderValue::from(upload.offset));
    expires(headers, &upload, &state);
    Ok(response)
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
        state.tus_writers.forget(upload.id);
        return Err(ApiError::NotFound);
    };
    keep::expire(&upload, state).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}
