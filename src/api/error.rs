//! Every API error, with its HTTP status and stable machine code, mapped to a
//! JSON response in one place.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::time::Duration;

use serde::Serialize;
use warp::http::StatusCode;
use warp::reply::Response;
use warp::{Rejection, Reply};

use crate::actors::intake::IntakeError;
use crate::actors::registry::RegistryError;
use crate::storage::StorageError;
use crate::store::record::Status;
use crate::store::StoreError;

/// An error answered to an API client.
#[derive(Debug)]
pub enum ApiError {
    /// 401: no key, a malformed header, or a key that is unknown or revoked.
    Unauthenticated,
    /// 404: unknown route, or an upload id that is malformed, unknown or another tenant's.
    NotFound,
    /// 405: a known path with a method it does not take.
    MethodNotAllowed,
    /// 400: the body is not well-formed multipart.
    MalformedBody(String),
    /// 413: the body is larger than the configured maximum.
    PayloadTooLarge {
        /// The limit in bytes.
        limit: u64,
    },
    /// 415: the body is not `multipart/form-data` with a boundary.
    UnsupportedMediaType,
    /// 422: fields missing or invalid, by field name.
    Validation(BTreeMap<&'static str, Vec<String>>),
    /// 408: the client stopped sending the body.
    RequestTimeout,
    /// 429: the tenant has too many uploads in flight.
    TooManyUploads {
        /// Value of the Retry-After header.
        retry_after: Duration,
    },
    /// 503: the processing queue is full; retry after the given time.
    QueueFull {
        /// Value of the Retry-After header.
        retry_after: Duration,
    },
    /// 503: too many requests that hold a file, a body or a buffer are in
    /// flight; retry after the given time.
    Busy {
        /// Value of the Retry-After header.
        retry_after: Duration,
    },
    /// 400: the request breaks HTTP's own rules (e.g. no `Host` in HTTP/1.1).
    BadRequest(&'static str),
    /// 501: a `Transfer-Encoding` other than `chunked`.
    UnsupportedTransferEncoding,
    /// 409: the upload cannot be cancelled in its status.
    NotCancellable {
        /// Its status.
        status: Status,
    },
    /// 409: the upload cannot be retried (why).
    NotRetryable(&'static str),
    /// 422: the `Idempotency-Key` was used for another request.
    IdempotencyKeyReused,
    /// 409: the first request with this `Idempotency-Key` is still being received or recorded.
    IdempotencyKeyInUse {
        /// Value of the Retry-After header.
        retry_after: Duration,
    },
    /// 429: the key has `max_event_streams_per_tenant` event streams open.
    TooManyEventStreams {
        /// The limit.
        limit: usize,
        /// Value of the Retry-After header.
        retry_after: Duration,
    },
    /// 412: a tus request of another version than 1.0.0 (or of none).
    TusVersion,
    /// 415: a tus `PATCH` whose body is not `application/offset+octet-stream`.
    TusContentType,
    /// 400: a header the request needs is missing or not valid.
    BadHeader(&'static str),
    /// 409: a tus `PATCH` at another offset than the upload's.
    OffsetMismatch {
        /// The upload's offset.
        offset: u64,
    },
    /// 460: a tus `PATCH` body without the digest its `Upload-Checksum` gave.
    ChecksumMismatch,
    /// 400: an `Upload-Checksum` algorithm not offered.
    ChecksumAlgorithm,
    /// 403: a `PATCH` to a final upload (made of its partial uploads).
    TusFinal,
    /// 400: an `Upload-Concat` that cannot be honoured (why).
    TusConcat(String),
    /// 429: the key has `max_unfinished_tus_uploads_per_tenant` tus uploads
    /// not yet in the pipeline.
    TooManyTusUploads {
        /// The limit.
        limit: usize,
        /// Value of the Retry-After header.
        retry_after: Duration,
    },
    /// 403: a browser's preflight from an origin not in `cors_origins`.
    OriginNotAllowed,
    /// 507: the data disk is full.
    InsufficientStorage,
    /// 502: the object store holding the media did not answer as it should.
    StorageUnavailable(String),
    /// 500: something failed on the server's side.
    Internal(String),
}

impl warp::reject::Reject for ApiError {}

#[derive(Serialize)]
struct ErrorBody<'a> {
    message: &'a str,
    code: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    errors: Option<&'a BTreeMap<&'static str, Vec<String>>>,
}

impl ApiError {
    /// One validation error on one field.
    pub fn invalid(field: &'static str, message: impl Into<String>) -> ApiError {
        ApiError::Validation(BTreeMap::from([(field, vec![message.into()])]))
    }

    /// The HTTP status.
    pub fn status(&self) -> StatusCode {
        match self {
            ApiError::Unauthenticated => StatusCode::UNAUTHORIZED,
            ApiError::NotFound => StatusCode::NOT_FOUND,
            ApiError::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            ApiError::MalformedBody(_) => StatusCode::BAD_REQUEST,
            ApiError::PayloadTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::UnsupportedMediaType => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ApiError::Validation(_) => StatusCode::UNPROCESSABLE_ENTITY,
            ApiError::RequestTimeout => StatusCode::REQUEST_TIMEOUT,
            ApiError::TooManyUploads { .. } => StatusCode::TOO_MANY_REQUESTS,
            ApiError::QueueFull { .. } => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::Busy { .. } => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::BadRequest(_) => StatusCode::BAD_REQUEST,
            ApiError::UnsupportedTransferEncoding => StatusCode::NOT_IMPLEMENTED,
            ApiError::NotCancellable { .. } | ApiError::NotRetryable(_) => StatusCode::CONFLICT,
            ApiError::IdempotencyKeyReused => StatusCode::UNPROCESSABLE_ENTITY,
            ApiError::IdempotencyKeyInUse { .. } => StatusCode::CONFLICT,
            ApiError::TooManyEventStreams { .. } => StatusCode::TOO_MANY_REQUESTS,
            ApiError::TusVersion => StatusCode::PRECONDITION_FAILED,
            ApiError::TusContentType => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ApiError::BadHeader(_) => StatusCode::BAD_REQUEST,
            ApiError::OffsetMismatch { .. } => StatusCode::CONFLICT,
            ApiError::ChecksumMismatch => {
                StatusCode::from_u16(460).expect("460 is a valid status code")
            }
            ApiError::ChecksumAlgorithm => StatusCode::BAD_REQUEST,
            ApiError::TusFinal => StatusCode::FORBIDDEN,
            ApiError::OriginNotAllowed => StatusCode::FORBIDDEN,
            ApiError::TusConcat(_) => StatusCode::BAD_REQUEST,
            ApiError::TooManyTusUploads { .. } => StatusCode::TOO_MANY_REQUESTS,
            ApiError::InsufficientStorage => StatusCode::INSUFFICIENT_STORAGE,
            ApiError::StorageUnavailable(_) => StatusCode::BAD_GATEWAY,
            ApiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// The stable machine code.
    pub fn code(&self) -> &'static str {
        match self {
            ApiError::Unauthenticated => "unauthenticated",
            ApiError::NotFound => "not_found",
            ApiError::MethodNotAllowed => "method_not_allowed",
            ApiError::MalformedBody(_) => "malformed_body",
            ApiError::PayloadTooLarge { .. } => "payload_too_large",
            ApiError::UnsupportedMediaType => "unsupported_media_type",
            ApiError::Validation(_) => "validation_failed",
            ApiError::RequestTimeout => "request_timeout",
            ApiError::TooManyUploads { .. } => "too_many_uploads",
            ApiError::QueueFull { .. } => "queue_full",
            ApiError::Busy { .. } => "server_busy",
            ApiError::BadRequest(_) => "bad_request",
            ApiError::UnsupportedTransferEncoding => "unsupported_transfer_encoding",
            ApiError::NotCancellable { .. } => "not_cancellable",
            ApiError::NotRetryable(_) => "not_retryable",
            ApiError::IdempotencyKeyReused => "idempotency_key_reused",
            ApiError::IdempotencyKeyInUse { .. } => "idempotency_key_in_use",
            ApiError::TooManyEventStreams { .. } => "too_many_event_streams",
            ApiError::TusVersion => "tus_version_unsupported",
            ApiError::TusContentType => "unsupported_media_type",
            ApiError::BadHeader(_) => "invalid_header",
            ApiError::OffsetMismatch { .. } => "offset_mismatch",
            ApiError::ChecksumMismatch => "checksum_mismatch",
            ApiError::ChecksumAlgorithm => "checksum_algorithm_unsupported",
            ApiError::TusFinal => "upload_is_final",
            ApiError::OriginNotAllowed => "origin_not_allowed",
            ApiError::TusConcat(_) => "invalid_concatenation",
            ApiError::TooManyTusUploads { .. } => "too_many_tus_uploads",
            ApiError::InsufficientStorage => "insufficient_storage",
            ApiError::StorageUnavailable(_) => "storage_unavailable",
            ApiError::Internal(_) => "internal_error",
        }
    }

    fn message(&self) -> String {
        match self {
            ApiError::Unauthenticated => "Unauthenticated.".into(),
            ApiError::NotFound => "Not found.".into(),
            ApiError::MethodNotAllowed => "Method not allowed.".into(),
            ApiError::MalformedBody(why) => {
                format!("The request body is not valid multipart form data: {why}.")
            }
            ApiError::PayloadTooLarge { limit } => {
                format!("The request body is larger than the maximum of {limit} bytes.")
            }
            ApiError::UnsupportedMediaType => {
                "The request body must be multipart/form-data with a boundary.".into()
            }
            ApiError::Validation(errors) => {
                let first = errors
                    .values()
                    .flatten()
                    .next()
                    .cloned()
                    .unwrap_or_default();
                match errors.values().map(Vec::len).sum::<usize>() {
                    0 | 1 => first,
                    n => format!(
                        "{first} (and {} more error{})",
                        n - 1,
                        if n > 2 { "s" } else { "" }
                    ),
                }
            }
            ApiError::RequestTimeout => "The request body stopped arriving.".into(),
            ApiError::TooManyUploads { .. } => {
                "Too many of your uploads are still being processed. Retry later.".into()
            }
            ApiError::QueueFull { .. } => "The processing queue is full. Retry later.".into(),
            ApiError::Busy { .. } => "The server is busy. Retry later.".into(),
            ApiError::BadRequest(why) => (*why).into(),
            ApiError::UnsupportedTransferEncoding => {
                "Only the chunked transfer coding is supported.".into()
            }
            ApiError::NotCancellable { status } => format!(
                "The upload is {} ({}): only a pending or processing upload can be cancelled.",
                status.text(),
                status.code()
            ),
            ApiError::NotRetryable(why) => format!("The upload cannot be retried: {why}."),
            ApiError::IdempotencyKeyReused => "This Idempotency-Key was used for another request \
                 (another folder, filename or size); use a new key for a new upload."
                .into(),
            ApiError::IdempotencyKeyInUse { .. } => {
                "The first request with this Idempotency-Key is still being received or recorded. Retry later."
                    .into()
            }
            ApiError::TooManyEventStreams { limit, .. } => {
                format!("This key already has {limit} event streams open; close one first.")
            }
            ApiError::TusVersion => "This server speaks tus 1.0.0: send Tus-Resumable: 1.0.0.".into(),
            ApiError::TusContentType => {
                "A tus body (a PATCH's, or a creation's first bytes) must be Content-Type: application/offset+octet-stream.".into()
            }
            ApiError::BadHeader(name) => {
                format!("The {name} header is missing or not valid.")
            }
            ApiError::OffsetMismatch { offset } => format!(
                "The upload is at offset {offset}: send the PATCH from there (HEAD tells where)."
            ),
            ApiError::ChecksumMismatch => {
                "The PATCH body does not have the Upload-Checksum digest: it was discarded; send it again."
                    .into()
            }
            ApiError::ChecksumAlgorithm => {
                "Upload-Checksum algorithms offered: md5, sha1, sha256.".into()
            }
            ApiError::TusFinal => {
                "A final upload is made of its partial uploads and takes no PATCH.".into()
            }
            ApiError::TusConcat(why) => why.clone(),
            ApiError::OriginNotAllowed => {
                "This origin may not call the API from a browser (see cors_origins).".into()
            }
            ApiError::TooManyTusUploads { limit, .. } => format!(
                "This key has {limit} tus uploads not yet in the pipeline; finish or delete one first."
            ),
            ApiError::InsufficientStorage => {
                "The server has no space left to store the upload.".into()
            }
            ApiError::StorageUnavailable(_) => {
                "The media storage is not available. Retry later.".into()
            }
            ApiError::Internal(_) => "Internal server error.".into(),
        }
    }

    /// Errors answered before the request body was read to its end.
    fn may_leave_body_unread(&self) -> bool {
        !matches!(
            self,
            ApiError::NotFound
                | ApiError::MethodNotAllowed
                | ApiError::NotCancellable { .. }
                | ApiError::NotRetryable(_)
                | ApiError::TooManyEventStreams { .. }
        )
    }

    /// The JSON response. What went wrong on the server's side rides along
    /// as a [`Failure`] for the request's log line; the client sees only
    /// the generic message.
    pub fn to_response(&self) -> Response {
        let failure = match self {
            ApiError::Internal(detail) => Some(Failure::internal(detail.clone())),
            ApiError::StorageUnavailable(detail) => Some(Failure::upstream(detail.clone())),
            _ => None,
        };
        let message = self.message();
        let errors = match self {
            ApiError::Validation(errors) => Some(errors),
            _ => None,
        };
        let body = ErrorBody {
            message: &message,
            code: self.code(),
            errors,
        };
        let mut response =
            warp::reply::with_status(warp::reply::json(&body), self.status()).into_response();
        if let ApiError::QueueFull { retry_after }
        | ApiError::TooManyUploads { retry_after }
        | ApiError::Busy { retry_after }
        | ApiError::IdempotencyKeyInUse { retry_after }
        | ApiError::TooManyEventStreams { retry_after, .. }
        | ApiError::TooManyTusUploads { retry_after, .. } = self
        {
            if let Ok(value) = retry_after.as_secs().max(1).to_string().parse() {
                response.headers_mut().insert("retry-after", value);
            }
        }
        if self.may_leave_body_unread() {
            // The body may be unread; tell the client not to reuse the connection.
            response
                .headers_mut()
                .insert("connection", warp::http::HeaderValue::from_static("close"));
        }
        if let ApiError::Unauthenticated = self {
            response.headers_mut().insert(
                "www-authenticate",
                warp::http::HeaderValue::from_static("Bearer"),
            );
        }
        if let Some(failure) = failure {
            response.extensions_mut().insert(failure);
        }
        response
    }
}

/// Why a request failed on the server's side, carried on its response to the
/// one `request` log line (which always has the request's span, even for a
/// read, whose span is otherwise made at debug).
#[derive(Debug, Clone)]
pub struct Failure {
    /// The cause, for operators.
    pub detail: String,
    /// A fault of the server itself (logged at error), not of something it
    /// depends on (logged at warn).
    pub internal: bool,
}

impl Failure {
    /// A fault of the server itself.
    pub fn internal(detail: String) -> Failure {
        Failure {
            detail,
            internal: true,
        }
    }

    /// Something the request depends on (storage, the database, the
    /// transcoders) failed or is not ready.
    pub fn upstream(detail: String) -> Failure {
        Failure {
            detail,
            internal: false,
        }
    }
}

// What the layers below answer, as API errors: the one place they are
// mapped. A full disk is a 507 wherever it was met; any other failure of the
// server's own is a 500 whose cause goes to the request's log line.

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        if e.is_disk_full() {
            ApiError::InsufficientStorage
        } else {
            ApiError::Internal(e.to_string())
        }
    }
}

impl From<RegistryError> for ApiError {
    fn from(e: RegistryError) -> Self {
        match e {
            RegistryError::Store(e) => e.into(),
            other => ApiError::Internal(other.to_string()),
        }
    }
}

impl From<std::io::Error> for ApiError {
    fn from(e: std::io::Error) -> Self {
        if crate::layout::is_disk_full(&e) {
            ApiError::InsufficientStorage
        } else {
            ApiError::Internal(e.to_string())
        }
    }
}

impl From<StorageError> for ApiError {
    /// Only reads reach the API (`/media`): a failing store is a 502.
    fn from(e: StorageError) -> Self {
        ApiError::StorageUnavailable(e.to_string())
    }
}

impl From<tokio::task::JoinError> for ApiError {
    fn from(e: tokio::task::JoinError) -> Self {
        ApiError::Internal(format!("a blocking task failed: {e}"))
    }
}

impl ApiError {
    /// Why intake refused an upload; `retry_after` goes in the answer to a full queue or a busy tenant.
    pub fn from_intake(e: IntakeError, retry_after: Duration) -> ApiError {
        match e {
            IntakeError::QueueFull => ApiError::QueueFull { retry_after },
            IntakeError::TenantBusy => ApiError::TooManyUploads { retry_after },
            IntakeError::Registry(RegistryError::Store(e)) => e.into(),
            other => ApiError::Internal(other.to_string()),
        }
    }
}

/// Maps every rejection, ours and warp's, to a JSON error.
pub async fn recover(rejection: Rejection) -> Result<Response, Infallible> {
    let error = if let Some(e) = rejection.find::<ApiError>() {
        return Ok(e.to_response());
    } else if rejection.is_not_found() {
        ApiError::NotFound
    } else if rejection.find::<warp::reject::MethodNotAllowed>().is_some() {
        ApiError::MethodNotAllowed
    } else {
        ApiError::Internal(format!("unhandled rejection: {rejection:?}"))
    };
    Ok(error.to_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_side_causes_ride_to_the_request_line_not_to_the_client() {
        let response = ApiError::Internal("disk on fire".into()).to_response();
        assert_eq!(response.status(), 500);
        let failure = response.extensions().get::<Failure>().unwrap();
        assert!(failure.internal);
        assert_eq!(failure.detail, "disk on fire");

        let response = ApiError::StorageUnavailable("bucket gone".into()).to_response();
        assert_eq!(response.status(), 502);
        let failure = response.extensions().get::<Failure>().unwrap();
        assert!(!failure.internal);

        let response = ApiError::NotFound.to_response();
        assert!(response.extensions().get::<Failure>().is_none());
    }
}
