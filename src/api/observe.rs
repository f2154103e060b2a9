//! Wraps the routes for operators: a request id on every request (the
//! client's `x-request-id` when it is sane, else a new one) echoed in the
//! response, a span carrying it around the handler, one log line per request
//! (method, route, status, latency) and the HTTP metrics.

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;

use tracing::Instrument;
use warp::filters::BoxedFilter;
use warp::http::{HeaderValue, Request};
use warp::hyper::body::Incoming;
use warp::reply::Response;

use crate::actors::Services;

/// Header carrying the request id, both ways.
pub const REQUEST_ID: &str = "x-request-id";

/// Longest client-supplied request id kept; longer ones are replaced.
const MAX_REQUEST_ID_LEN: usize = 128;

/// The whole HTTP side as a tower service: the routes plus request ids, logs and metrics.
#[derive(Clone)]
pub struct HttpService {
    /// Every route, errors already mapped to JSON.
    routes: BoxedFilter<(Response,)>,
    /// Where the HTTP metrics go.
    services: Arc<Services>,
}

impl HttpService {
    /// Wraps `routes`.
    pub fn new(routes: BoxedFilter<(Response,)>, services: Arc<Services>) -> HttpService {
        HttpService { routes, services }
    }
}

impl tower_service::Service<Request<Incoming>> for HttpService {
    type Response = Response;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Response, Infallible>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: Request<Incoming>) -> Self::Future {
        let started = Instant::now();
        // The client's id is echoed as it came; a new one is made without allocating.
        let mut buffer = uuid::Uuid::encode_buffer();
        let id_header = match request.headers().get(REQUEST_ID) {
            Some(v) if v.to_str().is_ok_and(is_sane_request_id) => v.clone(),
            _ => HeaderValue::from_str(new_request_id(&mut buffer))
                .unwrap_or_else(|_| HeaderValue::from_static("-")),
        };
        let id = id_header.to_str().unwrap_or_default();
        let route = route_template(request.uri().path());
        let method = request.method().clone();
        let span = tracing::info_span!("request", request_id = %id, method = %method, route);
        let mut inner = warp::service(self.routes.clone());
        let response = tower_service::Service::call(&mut inner, request);
        let services = self.services.clone();
        Box::pin(
            async move {
                let mut response = match response.await {
                    Ok(response) => response,
                    Err(never) => match never {},
                };
                let status = response.status().as_u16();
                let latency = started.elapsed();
                services
                    .metrics
                    .http_request(route, method_label(&method), status, latency);
                let latency_ms = latency.as_secs_f64() * 1000.0;
                if status >= 500 {
                    tracing::warn!(status, latency_ms, "request");
                } else if is_probe(route) || (method == warp::http::Method::GET && status < 400) {
                    // Polls and probes are the bulk of the traffic: a line each
                    // at info would cost more than answering them.
                    tracing::debug!(status, latency_ms, "request");
                } else {
                    tracing::info!(status, latency_ms, "request");
                }
                response.headers_mut().insert(REQUEST_ID, id_header);
                if status == 405 {
                    if let Some(allow) = allowed_methods(route) {
                        // RFC 9110: a 405 lists the methods the resource takes.
                        let allow = HeaderValue::from_static(allow);
                        response
                            .headers_mut()
                            .insert(warp::http::header::ALLOW, allow);
                    }
                }
                Ok(response)
            }
            .instrument(span),
        )
    }
}

/// A request id unique to this process run, shaped as a UUID: 64 random bits
/// drawn once and a 64-bit counter, so making one costs no system call (a
/// random UUID per request did).
fn new_request_id(buffer: &mut [u8]) -> &str {
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::sync::OnceLock;
    static PREFIX: OnceLock<u64> = OnceLock::new();
    static NEXT: AtomicU64 = AtomicU64::new(1);
    let prefix = *PREFIX.get_or_init(|| uuid::Uuid::new_v4().as_u64_pair().0);
    uuid::Uuid::from_u64_pair(prefix, NEXT.fetch_add(1, Ordering::Relaxed))
        .hyphenated()
        .encode_lower(buffer)
}

/// The method as a metrics label: a client can send any token as a method,
/// and each distinct label value would be a new series.
fn method_label(method: &warp::http::Method) -> &'static str {
    use warp::http::Method;
    match *method {
        Method::GET => "GET",
        Method::HEAD => "HEAD",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::DELETE => "DELETE",
        Method::PATCH => "PATCH",
        Method::OPTIONS => "OPTIONS",
        Method::TRACE => "TRACE",
        Method::CONNECT => "CONNECT",
        _ => "OTHER",
    }
}

/// A client's id is kept when it is 1 to 128 characters of letters, digits and `-_.:`.
pub fn is_sane_request_id(id: &str) -> bool {
    (1..=MAX_REQUEST_ID_LEN).contains(&id.len())
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.:".contains(&b))
}

/// Scraped or probed often; logged at debug so they do not drown the rest.
fn is_probe(route: &str) -> bool {
    matches!(route, "/healthz" | "/readyz" | "/metrics")
}

/// The methods a route template takes, as an `Allow` header value.
pub fn allowed_methods(route: &str) -> Option<&'static str> {
    match route {
        "/api/client/v1/uploads" => Some("GET, POST"),
        "/media/{token}/{file}" => Some("GET, HEAD"),
        "unmatched" => None,
        _ => Some("GET"),
    }
}

/// Every value [`route_template`] returns.
pub const ROUTE_TEMPLATES: [&str; 8] = [
    "/api/client/v1/uploads",
    "/api/client/v1/uploads/{id}",
    "/api/client/v1/openapi.json",
    "/media/{token}/{file}",
    "/healthz",
    "/readyz",
    "/metrics",
    "unmatched",
];

/// The route template of a path: a label that never holds an id or token.
pub fn route_template(path: &str) -> &'static str {
    // Matched on the first segments as they come: nothing is allocated.
    let mut segments = path.trim_start_matches('/').split('/');
    let mut next = || segments.next();
    match (next(), next(), next(), next(), next(), next()) {
        (Some("api"), Some("client"), Some("v1"), Some("uploads"), None, _) => {
            "/api/client/v1/uploads"
        }
        (Some("api"), Some("client"), Some("v1"), Some("uploads"), Some(_), None) => {
            "/api/client/v1/uploads/{id}"
        }
        (Some("api"), Some("client"), Some("v1"), Some("openapi.json"), None, _) => {
            "/api/client/v1/openapi.json"
        }
        (Some("media"), Some(_), Some(_), ..) => "/media/{token}/{file}",
        (Some("healthz"), None, ..) => "/healthz",
        (Some("readyz"), None, ..) => "/readyz",
        (Some("metrics"), None, ..) => "/metrics",
        _ => "unmatched",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_ids() {
        assert!(is_sane_request_id("abc-123_x.y:z"));
        assert!(is_sane_request_id(&"a".repeat(128)));
        assert!(!is_sane_request_id(&"a".repeat(129)));
        assert!(!is_sane_request_id(""));
        assert!(!is_sane_request_id("a b"));
        assert!(!is_sane_request_id("a\"b"));
    }

    #[test]
    fn methods_outside_the_standard_set_share_one_label() {
        let custom = warp::http::Method::from_bytes(b"FROBNICATE").unwrap();
        assert_eq!(method_label(&custom), "OTHER");
        assert_eq!(method_label(&warp::http::Method::POST), "POST");
    }

    #[test]
    fn routes_hide_ids() {
        assert_eq!(
            route_template("/api/client/v1/uploads/9c1fa5c4"),
            "/api/client/v1/uploads/{id}"
        );
        assert_eq!(
            route_template("/media/abc/video.mp4"),
            "/media/{token}/{file}"
        );
        assert_eq!(
            route_template("/api/client/v1/uploads"),
            "/api/client/v1/uploads"
        );
        assert_eq!(
            route_template("/media/abc/hls/720p/index.m3u8"),
            "/media/{token}/{file}"
        );
        assert_eq!(route_template("/etc/passwd"), "unmatched");
        assert_eq!(route_template("/healthz/x"), "unmatched");
        assert_eq!(route_template("/api/client/v1/uploads/a/b"), "unmatched");
        assert_eq!(
            route_template("/api/client/v1/uploads/"),
            "/api/client/v1/uploads/{id}"
        );
        assert_eq!(route_template("/media/abc"), "unmatched");
    }
}
