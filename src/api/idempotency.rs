//! The `Idempotency-Key` header of `POST /uploads`: the key's form, the
//! claim a request holds on it while its body is received, and the replay
//! of a create that was answered. The store remembers answered creates
//! ([`crate::store::idempotency`]).

use std::collections::HashSet;
use std::sync::{Arc, Mutex};

use serde_json::json;
use warp::http::{HeaderMap, HeaderValue, StatusCode};
use warp::reply::Response;
use warp::Reply;

use super::auth::Tenant;
use super::error::ApiError;
use super::AppState;
use crate::store::idempotency as remembered;
use crate::store::record::UploadRecord;
use crate::view::UploadView;

/// The header.
pub const HEADER: &str = "idempotency-key";

/// Longest key, in characters.
pub const MAX_KEY_LEN: usize = 255;

/// The request's key: absent, or 1 to [`MAX_KEY_LEN`] printable ASCII
/// characters, given once; anything else is a 422 naming the header.
pub fn key_of(headers: &HeaderMap) -> Result<Option<String>, ApiError> {
    let mut values = headers.get_all(HEADER).iter();
    let Some(value) = values.next() else {
        return Ok(None);
    };
    let refused = |message: &str| Err(ApiError::invalid("Idempotency-Key", message));
    if values.next().is_some() {
        return refused("Send the Idempotency-Key header once.");
    }
    let bytes = value.as_bytes();
    let printable = bytes.iter().all(|b| (0x20..=0x7e).contains(b));
    if bytes.is_empty() || bytes.len() > MAX_KEY_LEN || !printable {
        return refused("The Idempotency-Key must be 1 to 255 printable ASCII characters.");
    }
    Ok(Some(String::from_utf8_lossy(bytes).into_owned()))
}

/// The keys whose first request is being received or recorded now, per tenant.
#[derive(Default)]
pub struct Claims(Mutex<HashSet<(Arc<str>, String)>>);

impl Claims {
    /// Claims `key` of `tenant` for one request; `None` while another holds it.
    pub fn claim(self: &Arc<Self>, tenant: &Arc<str>, key: &str) -> Option<Claim> {
        let entry = (tenant.clone(), key.to_string());
        let mut held = self.0.lock().unwrap_or_else(|e| e.into_inner());
        if !held.insert(entry.clone()) {
            return None;
        }
        drop(held);
        Some(Claim {
            claims: self.clone(),
            entry,
        })
    }
}

/// A request's hold on its key, let go when dropped (after its create is
/// durable, or refused).
pub struct Claim {
    claims: Arc<Claims>,
    entry: (Arc<str>, String),
}

impl Drop for Claim {
    fn drop(&mut self) {
        let mut held = self.claims.0.lock().unwrap_or_else(|e| e.into_inner());
        held.remove(&self.entry);
    }
}

/// The record an answered create of `tenant` with `key` wrote, if it is
/// within `idempotency_key_retention_hours`.
pub fn answered(
    state: &AppState,
    tenant: &Tenant,
    key: &str,
) -> Result<Option<UploadRecord>, ApiError> {
    let since = remembered::kept_since(state.services.config.idempotency_key_retention);
    Ok(state.services.store.remembered(&tenant.0, key, since)?)
}

/// Whether a repeat with these fields is the request that created `first`.
pub fn same_request(first: &UploadRecord, filename: &str, folder: &str, size_bytes: u64) -> bool {
    first.filename == filename && first.folder == folder && first.size_bytes == size_bytes
}

/// The 202 of a create, from the record it wrote: what the first request
/// was answered, and what a repeat is answered again.
pub fn accepted(state: &AppState, record: &UploadRecord) -> Response {
    let view = UploadView::snapshot(
        record,
        state.services.storage.as_ref(),
        &state.services.base_url,
    );
    let body = json!({
        "message": "Upload accepted and is now being processed.",
        "data": view,
    });
    warp::reply::with_status(warp::reply::json(&body), StatusCode::ACCEPTED).into_response()
}

/// The answer to a repeat of an answered create: its first answer again,
/// marked `Idempotent-Replayed: true`.
pub fn replayed(state: &AppState, first: &UploadRecord) -> Response {
    let mut response = accepted(state, first);
    response
        .headers_mut()
        .insert("idempotent-replayed", HeaderValue::from_static("true"));
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(values: &[&[u8]]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for v in values {
            map.append(HEADER, HeaderValue::from_bytes(v).unwrap());
        }
        map
    }

    #[test]
    fn a_key_is_1_to_255_printable_ascii_characters_given_once() {
        assert_eq!(key_of(&headers(&[])).unwrap(), None);
        assert_eq!(
            key_of(&headers(&[b"order 42/a~"])).unwrap().as_deref(),
            Some("order 42/a~")
        );
        let longest = "k".repeat(255);
        assert!(key_of(&headers(&[longest.as_bytes()])).unwrap().is_some());
        let too_long = "k".repeat(256);
        for refused in [
            headers(&[too_long.as_bytes()]),
            headers(&[b""]),
            headers(&[b"caf\xc3\xa9"]),
            headers(&[b"tab\there"]),
            headers(&[b"a", b"b"]),
        ] {
            assert!(key_of(&refused).is_err(), "{refused:?}");
        }
    }

    #[test]
    fn a_claim_is_held_until_dropped_and_per_tenant() {
        let claims = Arc::new(Claims::default());
        let (a, b): (Arc<str>, Arc<str>) = ("a".into(), "b".into());
        let first = claims.claim(&a, "k").unwrap();
        assert!(claims.claim(&a, "k").is_none());
        assert!(claims.claim(&b, "k").is_some());
        drop(first);
        assert!(claims.claim(&a, "k").is_some());
    }
}
