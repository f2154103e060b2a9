//! `DELETE /uploads/{id}`, `POST /uploads/{id}/cancel` and
//! `POST /uploads/{id}/retry`: an upload's life after its creation. Each
//! answers as the contract says once its write is durable; the work is in
//! [`crate::actors::lifecycle`].

use std::sync::Arc;

use serde_json::json;
use warp::filters::BoxedFilter;
use warp::http::StatusCode;
use warp::reply::Response;
use warp::{Filter, Rejection, Reply};

use super::auth::{self, Tenant};
use super::error::ApiError;
use super::routes::path_param;
use super::uploads::upload_id;
use super::{with_state, AppState};
use crate::actors::lifecycle::{self, LifecycleError};

/// What a lifecycle route does.
#[derive(Clone, Copy)]
enum Action {
    Delete,
    Cancel,
    Retry,
}

/// `DELETE /uploads/{id}`: the route's filter.
pub fn delete(state: &Arc<AppState>) -> BoxedFilter<(Response,)> {
    filter(state, Action::Delete)
}

/// `POST /uploads/{id}/cancel`: the route's filter.
pub fn cancel(state: &Arc<AppState>) -> BoxedFilter<(Response,)> {
    filter(state, Action::Cancel)
}

/// `POST /uploads/{id}/retry`: the route's filter.
pub fn retry(state: &Arc<AppState>) -> BoxedFilter<(Response,)> {
    filter(state, Action::Retry)
}

fn filter(state: &Arc<AppState>, action: Action) -> BoxedFilter<(Response,)> {
    auth::tenant(state.clone())
        .and(path_param(0))
        .and(with_state(state.clone()))
        .and_then(move |tenant, id, state| act(action, tenant, id, state))
        .boxed()
}

/// 204 for a deletion, 200 with the record for a cancel, 202 with it for a retry.
async fn act(
    action: Action,
    tenant: Tenant,
    id: String,
    state: Arc<AppState>,
) -> Result<Response, Rejection> {
    let id = upload_id(&id).ok_or(ApiError::NotFound)?;
    let services = &state.services;
    let done = match action {
        Action::Delete => lifecycle::delete(services, id, &tenant.0).await,
        Action::Cancel => lifecycle::cancel(services, id, &tenant.0).await,
        Action::Retry => lifecycle::retry(services, id, &tenant.0).await,
    };
    // A finished upload's kept body is stale once it is retried or deleted.
    state.views.forget(id);
    let record = done.map_err(|e| refusal(e, &state))?;
    let status = match action {
        Action::Delete => return Ok(StatusCode::NO_CONTENT.into_response()),
        Action::Cancel => StatusCode::OK,
        Action::Retry => StatusCode::ACCEPTED,
    };
    let body = warp::reply::json(&json!({ "data": state.view(&record) }));
    Ok(warp::reply::with_status(body, status).into_response())
}

fn refusal(e: LifecycleError, state: &AppState) -> Rejection {
    let retry_after = state.services.config.retry_after;
    warp::reject::custom(match e {
        LifecycleError::NotFound => ApiError::NotFound,
        LifecycleError::NotCancellable(status) => ApiError::NotCancellable { status },
        LifecycleError::NotRetryable(why) => ApiError::NotRetryable(why),
        LifecycleError::Admission(e) => ApiError::from_intake(e, retry_after),
        LifecycleError::Registry(e) => e.into(),
        LifecycleError::Store(e) => e.into(),
    })
}
