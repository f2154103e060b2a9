//! `POST /uploads`: streams the `video` part straight to a staging file,
//! makes it durable, has the intake actor record it, then answers 202.

use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::Arc;

use bytes::Buf;
use futures_util::Stream;
use multer::{Constraints, Multipart, SizeLimit};
use tokio::io::AsyncWriteExt;
use tracing::Instrument;
use uuid::Uuid;
use warp::filters::BoxedFilter;
use warp::http::HeaderMap;
use warp::reply::Response;
use warp::{Filter, Rejection};

use super::auth::{self, Tenant};
use super::body::{guarded, BodyError, HeaderWatch, Tracked};
use super::error::ApiError;
use super::folder::checked_folder;
use super::idempotency;
use super::parts::{form_field, FormField, SentFilename};
use super::{with_state, AppState};
use crate::actors::intake::{IntakeError, IntakeMsg, StagedUpload};
use crate::actors::registry::RegistryError;
use crate::config::Config;
use crate::layout::rename_durably;
use crate::store::record::UploadRecord;

/// Largest value accepted for a text field such as `folder`.
const MAX_TEXT_FIELD: u64 = 4096;
/// Room for part headers and text fields on top of the video itself.
const ENVELOPE: u64 = 64 * 1024;

/// Deletes a staging file unless the upload was handed over; covers errors,
/// early returns and a client that disconnects mid-body.
struct StagingGuard {
    path: PathBuf,
    armed: bool,
}

impl Drop for StagingGuard {
    fn drop(&mut self) {
        if self.armed {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

/// What the form carried once the body has been read.
struct ParsedForm {
    filename: SentFilename,
    video_bytes: Option<u64>,
    folder: Option<String>,
    callback_url: Option<String>,
}

/// A form that passed [`validate`]: the values as they are stored.
struct ValidForm {
    /// In NFC, cleaned.
    filename: String,
    /// In NFC.
    folder: String,
    size_bytes: u64,
    callback_url: Option<String>,
}

/// `POST /uploads`: the route's filter.
pub fn create(state: &Arc<AppState>) -> BoxedFilter<(Response,)> {
    auth::tenant_or_refusal(state.clone())
        .and(warp::header::optional::<String>("content-type"))
        .and(warp::header::optional::<u64>("content-length"))
        .and(warp::header::optional::<String>("expect"))
        .and(warp::header::headers_cloned())
        .and(warp::body::stream())
        .and(with_state(state.clone()))
        .and_then(create_upload)
        .boxed()
}

/// The handler. A refused request's unread body is drained (within bounds)
/// before the error goes out, so that the client reads it.
async fn create_upload(
    tenant: Result<Tenant, Rejection>,
    content_type: Option<String>,
    content_length: Option<u64>,
    expect: Option<String>,
    headers: HeaderMap,
    body: impl Stream<Item = Result<impl Buf + Send, warp::Error>> + Send + Unpin + 'static,
    state: Arc<AppState>,
) -> Result<Response, Rejection> {
    let mut body = Tracked::new(body);
    let result = match tenant {
        Ok(tenant) => {
            let request = Request {
                tenant,
                content_type,
                content_length,
                idempotency_key: idempotency::key_of(&headers),
            };
            accept(request, &mut body, &state).await
        }
        // 401, after the body like any other refusal.
        Err(refused) => Err(refused),
    };
    // A client that stopped sending is not waited for again.
    let timed_out =
        matches!(&result, Err(r) if matches!(r.find::<ApiError>(), Some(ApiError::RequestTimeout)));
    if result.is_err() && !timed_out {
        let expects_continue = expect.is_some_and(|e| e.eq_ignore_ascii_case("100-continue"));
        body.drain(expects_continue, content_length).await;
    }
    result
}

/// Whether the server takes a new upload of `tenant` now: not with its
/// queue full (503) nor with the tenant's uploads in flight at their cap (429).
pub(super) fn admission(state: &AppState, tenant: &Tenant) -> Result<(), ApiError> {
    let config = &state.services.config;
    if state.services.queued.load(Ordering::Relaxed) >= config.max_queued_jobs {
        return Err(ApiError::QueueFull {
            retry_after: config.retry_after,
        });
    }
    if state.services.tenant_load.get(&tenant.0) >= config.max_in_flight_per_tenant {
        return Err(ApiError::TooManyUploads {
            retry_after: config.retry_after,
        });
    }
    Ok(())
}

/// A disk a new upload will touch that is already below its reserve (the
/// staging folder's, the work folder's) takes no new body (507); the
/// registry checks again before the record is written, as the body may be
/// what filled it.
pub(super) fn below_reserve(state: &AppState) -> Result<(), ApiError> {
    let reserve = state.services.config.reserved_disk_bytes;
    let layout = &state.services.layout;
    let below = reserve > 0
        && [layout.staging_dir(), layout.work_root()]
            .iter()
            .any(|dir| crate::layout::free_bytes(dir).is_ok_and(|free| free < reserve));
    if below {
        Err(ApiError::InsufficientStorage)
    } else {
        Ok(())
    }
}

/// What `POST /uploads` reads from its request before the body.
struct Request {
    tenant: Tenant,
    content_type: Option<String>,
    content_length: Option<u64>,
    /// The `Idempotency-Key`, if one was sent, or why it is refused.
    idempotency_key: Result<Option<String>, ApiError>,
}

async fn accept<S, B>(
    request: Request,
    body: &mut Tracked<S>,
    state: &Arc<AppState>,
) -> Result<Response, Rejection>
where
    S: Stream<Item = Result<B, warp::Error>> + Send + Unpin,
    B: Buf + Send,
{
    let config = &state.services.config;
    let Request {
        tenant,
        content_type,
        content_length,
        idempotency_key,
    } = request;
    let idempotency_key = idempotency_key?;
    // A key is held by one request at a time; a repeat of a create that
    // was answered reads its body, keeps none of it and is answered again.
    let claim = match &idempotency_key {
        None => None,
        Some(key) => {
            let claim = state.idempotency_claims.claim(&tenant.0, key).ok_or(
                ApiError::IdempotencyKeyInUse {
                    retry_after: config.retry_after,
                },
            )?;
            if let Some(first) = idempotency::answered(state, &tenant, key)? {
                // Repeats of an answered create do not hold the key from each other.
                drop(claim);
                return repeat(&first, content_type, content_length, body, state).await;
            }
            Some(claim)
        }
    };
    // Admission control answers before a byte of the body is read.
    admission(state, &tenant)?;
    let boundary = boundary_of(content_type.as_deref())?;
    below_reserve(state)?;
    refuse_too_large(content_length, config)?;
    let layout = &state.services.layout;

    let id = Uuid::new_v4();
    let part_path = layout.part_path(id);
    let guard = StagingGuard {
        path: part_path.clone(),
        armed: true,
    };
    let form = parse_form(body, boundary, config, Some(&part_path))
        .await
        .inspect_err(|e| count_storage_error(state, e))?;

    let form = validate(form, config)?;
    if form.callback_url.is_some() {
        signs_callbacks(state, &tenant)?;
    }

    let staged = StagedUpload {
        id,
        tenant: tenant.0.to_string(),
        filename: form.filename,
        folder: form.folder,
        size_bytes: form.size_bytes,
        callback_url: form.callback_url,
        idempotency_key,
    };
    // From here on the create is finished even if the client goes away: a
    // request dropped mid-commit would otherwise free its key before its
    // record is written and delete the source of an upload that was.
    // In the request's span: its log lines tie the request id to the upload id.
    let handover =
        hand_over(staged, guard, claim, state.clone()).instrument(tracing::Span::current());
    let record = state
        .services
        .tasks
        .spawn(handover)
        .await
        .map_err(ApiError::from)??;
    Ok(idempotency::accepted(state, &record))
}

/// Makes the staged body durable under its final name and has the intake
/// actor record it; the staging file goes unless it was recorded. The claim
/// on the request's key is let go once the record is committed or refused.
async fn hand_over(
    staged: StagedUpload,
    mut guard: StagingGuard,
    claim: Option<idempotency::Claim>,
    state: Arc<AppState>,
) -> Result<UploadRecord, ApiError> {
    let layout = &state.services.layout;
    let from = guard.path.clone();
    let to = layout.staged_path(staged.id);
    guard.path = to.clone();
    // rename + directory fsync: the body is durable under its final name.
    // The guard names it from here; a rename that fails removes the part.
    state
        .services
        .blocking(move || -> std::io::Result<()> {
            rename_durably(&from, &to).inspect_err(|_| {
                let _ = std::fs::remove_file(&from);
            })
        })
        .await
        .map_err(ApiError::from)?
        .map_err(ApiError::from)
        .inspect_err(|e| count_storage_error(&state, e))?;
    crate::faults::crash_if(crate::faults::CrashPoint::AfterStaging);

    let record = match record_staged(&state, staged).await {
        Recorded::Yes(record) => *record,
        Recorded::Refused(e) => return Err(e),
        Recorded::Unknown(e) => {
            // The commit may still come: the source stays (the next start
            // removes it if no record was written).
            guard.armed = false;
            return Err(e);
        }
    };
    guard.armed = false;
    drop(claim);
    tracing::info!(upload = %record.id, size_bytes = record.size_bytes, "upload accepted");
    Ok(record)
}

/// What intake made of a staged upload.
pub(super) enum Recorded {
    /// Its `pending` record is committed.
    Yes(Box<UploadRecord>),
    /// Refused, nothing written: the source may go.
    Refused(ApiError),
    /// The answer was lost, not necessarily the commit, which may still come.
    Unknown(ApiError),
}

/// Has the intake actor admit and record the upload staged as `staged`.
pub(super) async fn record_staged(state: &AppState, staged: StagedUpload) -> Recorded {
    let Some(intake) = state.services.peers.intake.get() else {
        return Recorded::Refused(ApiError::Internal("intake actor is not running".into()));
    };
    let id = staged.id;
    let reply = match intake
        .call(|reply| IntakeMsg::Accept(staged, reply), None)
        .await
    {
        Ok(reply) => reply,
        Err(e) => return Recorded::Refused(ApiError::Internal(e.to_string())),
    };
    match reply {
        ractor::rpc::CallResult::Success(Ok(record)) => Recorded::Yes(Box::new(record)),
        // The registry's answer was lost, not necessarily its commit.
        ractor::rpc::CallResult::Success(Err(IntakeError::Registry(RegistryError::NoAnswer(
            e,
        )))) => Recorded::Unknown(ApiError::Internal(e)),
        ractor::rpc::CallResult::Success(Err(e)) => {
            let retry_after = state.services.config.retry_after;
            Recorded::Refused(ApiError::from_intake(e, retry_after))
        }
        _ => match state.services.store.get(id) {
            Ok(Some(record)) => Recorded::Yes(Box::new(record)),
            _ => Recorded::Unknown(ApiError::Internal("intake actor did not answer".into())),
        },
    }
}

/// Callbacks are signed with the tenant's secret: a `callback_url` of a key
/// without one is refused (422).
pub(super) fn signs_callbacks(state: &AppState, tenant: &Tenant) -> Result<(), ApiError> {
    let signed = state
        .services
        .keys
        .tenant_webhook(&tenant.0)
        .is_some_and(|w| w.secret.is_some());
    if signed {
        Ok(())
    } else {
        Err(ApiError::invalid(
            "callback_url",
            "This API key has no webhook signing secret; set one with `vidpipe keys set-webhook`.",
        ))
    }
}

/// A repeat of the create that wrote `first`: its body is read and checked
/// like any other, none of it kept; the same request is answered as the
/// first was, another one is a 422.
async fn repeat<S, B>(
    first: &UploadRecord,
    content_type: Option<String>,
    content_length: Option<u64>,
    body: &mut Tracked<S>,
    state: &Arc<AppState>,
) -> Result<Response, Rejection>
where
    S: Stream<Item = Result<B, warp::Error>> + Send + Unpin,
    B: Buf + Send,
{
    let config = &state.services.config;
    let boundary = boundary_of(content_type.as_deref())?;
    refuse_too_large(content_length, config)?;
    let form = validate(parse_form(body, boundary, config, None).await?, config)?;
    if idempotency::same_request(first, &form.filename, &form.folder, form.size_bytes) {
        Ok(idempotency::replayed(state, first))
    } else {
        Err(ApiError::IdempotencyKeyReused.into())
    }
}

/// A body that says it is larger than any upload is a 413 before it is read.
fn refuse_too_large(content_length: Option<u64>, config: &Config) -> Result<(), ApiError> {
    let limit = config.max_upload_bytes;
    match content_length {
        Some(len) if len > limit + ENVELOPE => Err(ApiError::PayloadTooLarge { limit }),
        _ => Ok(()),
    }
}

/// The multipart boundary of the body; any other body is a 415.
fn boundary_of(content_type: Option<&str>) -> Result<String, ApiError> {
    content_type
        .and_then(|ct| multer::parse_boundary(ct).ok())
        .ok_or(ApiError::UnsupportedMediaType)
}

/// Staging writes fail only as these two (a full disk, or another I/O error).
fn count_storage_error(state: &AppState, e: &ApiError) {
    if matches!(e, ApiError::InsufficientStorage | ApiError::Internal(_)) {
        state
            .services
            .metrics
            .storage_error(crate::metrics::StorageStage::Staging);
    }
}

fn multipart_error(e: multer::Error, limit: u64) -> ApiError {
    match e {
        multer::Error::FieldSizeExceeded { field_name, .. }
            if field_name.as_deref() != Some("video") =>
        {
            let field = match field_name.as_deref() {
                Some("folder") => "folder",
                Some("callback_url") => "callback_url",
                _ => "form",
            };
            ApiError::invalid(field, format!("The {field} field is too long."))
        }
        multer::Error::FieldSizeExceeded { .. } | multer::Error::StreamSizeExceeded { .. } => {
            ApiError::PayloadTooLarge { limit }
        }
        multer::Error::StreamReadFailed(inner) => match inner.downcast_ref::<BodyError>() {
            Some(BodyError::IdleTimeout(_)) => ApiError::RequestTimeout,
            Some(e) => ApiError::MalformedBody(e.to_string()),
            None => ApiError::MalformedBody(inner.to_string()),
        },
        other => ApiError::MalformedBody(other.to_string()),
    }
}

/// Bounds on one form.
#[derive(Clone, Copy)]
struct FormLimits {
    /// Largest video in bytes.
    body_bytes: u64,
    /// Most parts.
    parts: usize,
}

/// The field rules: a `video` file with a usable name that is not empty, a
/// valid `folder`, and an optional `callback_url` that is an http or https
/// URL of bounded length.
fn validate(form: ParsedForm, config: &Config) -> Result<ValidForm, ApiError> {
    let folder = match form.folder.as_deref() {
        None => Err("The folder field is required.".to_string()),
        Some(raw) => checked_folder(raw),
    };
    let video = match form.video_bytes {
        None => Err("The video field is required.".to_string()),
        Some(size) => form.filename.checked().and_then(|name| match size {
            0 => Err("The video file is empty.".to_string()),
            _ => Ok((name, size)),
        }),
    };
    let callback_url = match &form.callback_url {
        None => Ok(()),
        Some(url) => check_callback_url(url, config),
    };
    match (folder, video, callback_url) {
        (Ok(folder), Ok((filename, size_bytes)), Ok(())) => Ok(ValidForm {
            filename,
            folder,
            size_bytes,
            callback_url: form.callback_url,
        }),
        (folder, video, callback_url) => {
            let mut errors = std::collections::BTreeMap::new();
            let refused = [
                ("folder", folder.err()),
                ("video", video.err()),
                ("callback_url", callback_url.err()),
            ];
            for (field, message) in refused {
                if let Some(message) = message {
                    errors.insert(field, vec![message]);
                }
            }
            Err(ApiError::Validation(errors))
        }
    }
}

/// A `callback_url`: an endpoint URL of bounded length that (unless allowed)
/// does not point into the server's own networks.
pub(super) fn check_callback_url(url: &str, config: &Config) -> Result<(), String> {
    let max = config.webhooks.max_callback_url_bytes;
    crate::webhook::check_endpoint_url(url, max)
        .and_then(|()| {
            if config.webhooks.allow_private_callback_urls {
                Ok(())
            } else {
                crate::webhook::guard::check_callback_host(url)
            }
        })
        .map_err(|e| format!("The callback url {e}."))
}

/// Parses a multipart body under the configured limits: the video to
/// `part_path` (fsynced; without one, only counted), text fields into memory.
async fn parse_form<S, B>(
    body: S,
    boundary: String,
    config: &Config,
    part_path: Option<&Path>,
) -> Result<ParsedForm, ApiError>
where
    S: Stream<Item = Result<B, warp::Error>> + Send,
    B: Buf + Send,
{
    let limit = config.max_upload_bytes;
    let watch = HeaderWatch::new(config.max_part_header_bytes);
    let stream = guarded(body, watch.clone(), config.body_idle_timeout);
    let constraints = Constraints::new().size_limit(
        SizeLimit::new()
            .whole_stream(limit + ENVELOPE)
            .per_field(MAX_TEXT_FIELD)
            .for_field("video", limit),
    );
    let multipart = Multipart::with_constraints(stream, boundary, constraints);
    let limits = FormLimits {
        body_bytes: limit,
        parts: config.max_form_parts,
    };
    read_form(multipart, &watch, part_path, limits).await
}

/// Fuzzing entry point: parses `body` as the handler would (limits from
/// `config`, the video written to `part_path`), then validates the fields.
#[doc(hidden)]
pub async fn parse_and_validate(
    body: bytes::Bytes,
    boundary: &str,
    config: &Config,
    part_path: &Path,
) -> Result<(), ApiError> {
    let chunks = futures_util::stream::iter([Ok::<_, warp::Error>(body)]);
    let form = parse_form(chunks, boundary.to_string(), config, Some(part_path)).await?;
    validate(form, config).map(drop)
}

/// Reads every part: the video to `part_path` (fsynced; without one, only
/// counted), text fields into memory.
async fn read_form(
    mut multipart: Multipart<'_>,
    watch: &HeaderWatch,
    part_path: Option<&Path>,
    limits: FormLimits,
) -> Result<ParsedForm, ApiError> {
    let limit = limits.body_bytes;
    let mut form = ParsedForm {
        filename: SentFilename::Missing,
        video_bytes: None,
        folder: None,
        callback_url: None,
    };
    let mut parts = 0;
    loop {
        watch.arm();
        let next = multipart.next_field().await;
        watch.disarm();
        let Some(mut field) = next.map_err(|e| multipart_error(e, limit))? else {
            break;
        };
        parts += 1;
        if parts > limits.parts {
            return Err(ApiError::MalformedBody(format!(
                "more than {} parts",
                limits.parts
            )));
        }
        match form_field(&field)? {
            FormField::Video => {
                if form.video_bytes.is_some() {
                    return Err(ApiError::invalid("video", "Send exactly one video file."));
                }
                form.filename = SentFilename::of(&field);
                let mut file = match part_path {
                    Some(path) => Some(
                        tokio::fs::File::create(path)
                            .await
                            .map_err(ApiError::from)?,
                    ),
                    None => None,
                };
                let mut written = 0u64;
                while let Some(chunk) =
                    field.chunk().await.map_err(|e| multipart_error(e, limit))?
                {
                    written += chunk.len() as u64;
                    if let Some(file) = &mut file {
                        file.write_all(&chunk).await.map_err(ApiError::from)?;
                    }
                }
                if let Some(file) = &mut file {
                    file.flush().await.map_err(ApiError::from)?;
                    file.sync_all().await.map_err(ApiError::from)?;
                }
                form.video_bytes = Some(written);
            }
            FormField::Folder => {
                if form.folder.is_some() {
                    return Err(ApiError::invalid("folder", "Send exactly one folder."));
                }
                let text = field.text().await.map_err(|e| multipart_error(e, limit))?;
                form.folder = Some(text);
            }
            FormField::CallbackUrl => {
                if form.callback_url.is_some() {
                    return Err(ApiError::invalid(
                        "callback_url",
                        "Send at most one callback_url.",
                    ));
                }
                let text = field.text().await.map_err(|e| multipart_error(e, limit))?;
                form.callback_url = Some(text.trim().to_string());
            }
            FormField::Other => {
                // Unknown fields are ignored, within the text-field size limit.
                while field
                    .chunk()
                    .await
                    .map_err(|e| multipart_error(e, limit))?
                    .is_some()
                {}
            }
        }
    }
    Ok(form)
}
