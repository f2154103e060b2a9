//! `GET /uploads` and `GET /uploads/{id}`: read the database directly, never
//! through the registry's mailbox.

use std::collections::BTreeMap;
use std::sync::Arc;

use serde_json::json;
use uuid::Uuid;
use warp::filters::BoxedFilter;
use warp::http::header::AUTHORIZATION;
use warp::http::{HeaderValue, Request};
use warp::hyper::body::Incoming;
use warp::reply::Response;
use warp::{Filter, Rejection, Reply};

use super::auth::{self, Tenant};
use super::error::ApiError;
use super::folder::checked_folder;
use super::routes::Params;
use super::view_cache::{CachedView, Kept};
use super::with_state;
use super::AppState;
use crate::storage::MediaAccess;
use crate::store::listing::{self, PageQuery};
use crate::store::record::Status;
use bytes::Bytes;

/// How many uploads `GET /uploads` lists when no `limit` is given.
pub const LIST_LIMIT: usize = 50;

/// The largest `limit` of `GET /uploads`.
pub const MAX_LIST_LIMIT: usize = 200;

/// `GET /uploads`: the route's filter.
pub fn list(state: &Arc<AppState>) -> BoxedFilter<(Response,)> {
    auth::tenant(state.clone())
        .and(warp::query::<Vec<(String, String)>>())
        .and(with_state(state.clone()))
        .and_then(list_page)
        .boxed()
}

/// The caller's uploads, newest first: `limit`, `status`, `folder` and
/// `cursor` narrow them; `next_cursor` is there when more follow.
async fn list_page(
    tenant: Tenant,
    params: Vec<(String, String)>,
    state: Arc<AppState>,
) -> Result<Response, Rejection> {
    let asked = ListParams::parse(&params)?;
    let query = PageQuery {
        tenant: &tenant.0,
        status: asked.status,
        folder: asked.folder.as_deref(),
        before: asked.cursor,
        limit: asked.limit,
    };
    let page = state.services.store.page(&query).map_err(ApiError::from)?;
    let views: Vec<_> = page.records.iter().map(|r| state.view(r)).collect();
    let body = match page.next {
        Some(next) => json!({ "data": views, "next_cursor": listing::cursor(next) }),
        None => json!({ "data": views }),
    };
    Ok(warp::reply::json(&body).into_response())
}

/// The query parameters of `GET /uploads`, checked. Others are ignored.
struct ListParams {
    limit: usize,
    status: Option<Status>,
    folder: Option<String>,
    cursor: Option<u64>,
}

impl ListParams {
    fn parse(params: &[(String, String)]) -> Result<ListParams, ApiError> {
        let mut errors: BTreeMap<&'static str, Vec<String>> = BTreeMap::new();
        let mut one = |name: &'static str| -> Option<&str> {
            let mut values = params.iter().filter(|(k, _)| k == name).map(|(_, v)| v);
            let first = values.next()?;
            if values.next().is_some() {
                errors
                    .entry(name)
                    .or_default()
                    .push(format!("The {name} parameter may be given once."));
                return None;
            }
            Some(first.as_str())
        };
        let (limit, status, folder, cursor) =
            (one("limit"), one("status"), one("folder"), one("cursor"));
        let mut asked = ListParams {
            limit: LIST_LIMIT,
            status: None,
            folder: None,
            cursor: None,
        };
        let mut invalid =
            |name: &'static str, message: String| errors.entry(name).or_default().push(message);
        if let Some(limit) = limit {
            match limit.parse::<usize>() {
                Ok(n) if (1..=MAX_LIST_LIMIT).contains(&n) => asked.limit = n,
                _ => invalid(
                    "limit",
                    format!("The limit must be a whole number from 1 to {MAX_LIST_LIMIT}."),
                ),
            }
        }
        if let Some(status) = status {
            match Status::ALL
                .into_iter()
                .find(|s| s.code().to_string() == status)
            {
                Some(s) => asked.status = Some(s),
                None => invalid(
                    "status",
                    "The status must be one of 1, 3, 5, 6 and 7.".into(),
                ),
            }
        }
        if let Some(folder) = folder {
            match checked_folder(folder) {
                Ok(folder) => asked.folder = Some(folder),
                Err(message) => invalid("folder", message),
            }
        }
        if let Some(cursor) = cursor {
            match listing::parse_cursor(cursor) {
                Some(seq) => asked.cursor = Some(seq),
                None => invalid(
                    "cursor",
                    "The cursor must be a next_cursor this server returned.".into(),
                ),
            }
        }
        if errors.is_empty() {
            Ok(asked)
        } else {
            Err(ApiError::Validation(errors))
        }
    }
}

/// `GET /uploads/{id}`: one upload of the caller; anything else is 404.
/// Authenticates by itself and runs synchronously (one database read at
/// most), answered with the request and the state borrowed.
pub fn show(request: &Request<Incoming>, params: &Params<'_>, state: &AppState) -> Response {
    let authorization = request.headers().get(AUTHORIZATION);
    find(params.get(0), authorization, state).unwrap_or_else(|e| e.to_response())
}

/// The body of [`show`]. A finished upload's kept body is found while the
/// caller's tenant id is still borrowed from the key cache.
fn find(
    id: &str,
    authorization: Option<&HeaderValue>,
    state: &AppState,
) -> Result<Response, ApiError> {
    let looked_up = auth::with_tenant(state, authorization, |tenant| {
        let id = upload_id(id).ok_or(ApiError::NotFound)?;
        Ok(match state.views.get(id, tenant) {
            Some(Kept::Body(body)) => Shown::Kept(body),
            Some(Kept::NotYours) => return Err(ApiError::NotFound),
            None => Shown::Read(id, tenant.clone()),
        })
    })?;
    let (id, tenant) = match looked_up? {
        Shown::Kept(body) => return Ok(json_body(body)),
        Shown::Read(id, tenant) => (id, tenant),
    };
    let record = state
        .services
        .store
        .get(id)
        .map_err(ApiError::from)?
        .filter(|r| *r.tenant == *tenant)
        .ok_or(ApiError::NotFound)?;
    let view = state.view(&record);
    let body = Bytes::from(
        serde_json::to_vec(&json!({ "data": view }))
            .map_err(|e| ApiError::Internal(e.to_string()))?,
    );
    let stable_urls = !matches!(
        state.services.storage.media_access(),
        MediaAccess::Presigned
    );
    if record.status.is_terminal() && stable_urls {
        let kept = CachedView {
            tenant: record.tenant.clone(),
            body: body.clone(),
        };
        state.views.insert(id, kept);
    }
    Ok(json_body(body))
}

/// An upload id as a client writes it: only the hyphenated 8-4-4-4-12 form
/// the API gives out, in either case. `Uuid::parse_str` also takes the
/// simple, braced and `urn:uuid:` forms, which would give one upload many URLs.
pub fn upload_id(text: &str) -> Option<Uuid> {
    let hyphenated = text.len() == 36
        && text.bytes().enumerate().all(|(i, b)| match i {
            8 | 13 | 18 | 23 => b == b'-',
            _ => b.is_ascii_hexdigit(),
        });
    if !hyphenated {
        return None;
    }
    Uuid::try_parse(text).ok()
}

/// What [`find`] found before reading the database.
enum Shown {
    /// The kept body of a finished upload.
    Kept(Bytes),
    /// Not kept: the record is read for this id and tenant.
    Read(Uuid, Arc<str>),
}

fn json_body(body: Bytes) -> Response {
    let mut response = Response::new(body.into());
    response.headers_mut().insert(
        warp::http::header::CONTENT_TYPE,
        warp::http::HeaderValue::from_static("application/json"),
    );
    response
}

#[cfg(test)]
mod tests {
    use super::upload_id;

    #[test]
    fn only_the_hyphenated_form_is_an_upload_id() {
        let id = "9c1fa5c4-a8f1-4b2e-9d6e-1c8a0b9e2d7f";
        let parsed = upload_id(id).unwrap();
        assert_eq!(parsed.to_string(), id);
        assert_eq!(upload_id(&id.to_uppercase()), Some(parsed));
        assert_eq!(
            upload_id("9C1FA5C4-a8f1-4B2E-9d6e-1c8a0b9e2d7f"),
            Some(parsed)
        );
        for other in [
            "9c1fa5c4a8f14b2e9d6e1c8a0b9e2d7f",
            "{9c1fa5c4-a8f1-4b2e-9d6e-1c8a0b9e2d7f}",
            "urn:uuid:9c1fa5c4-a8f1-4b2e-9d6e-1c8a0b9e2d7f",
            "9c1fa5c4-a8f1-4b2e-9d6e-1c8a0b9e2d7",
            "9c1fa5c4-a8f1-4b2e-9d6e-1c8a0b9e2d7f0",
            "9c1fa5c4a-8f1-4b2e-9d6e-1c8a0b9e2d7f",
            "9c1fa5c4-a8f1-4b2e-9d6e-1c8a0b9e2d7g",
            " 9c1fa5c4-a8f1-4b2e-9d6e-1c8a0b9e2d7",
            "",
        ] {
            assert_eq!(upload_id(other), None, "{other}");
        }
    }
}
