//! Wraps the routes for operators: a request id on every request (the
//! client's `x-request-id` when it is sane, else a new one) echoed in the
//! response, a span carrying it around the handler, one log line per request
//! (method, route, status, latency) and the HTTP metrics.
//!
//! Each connection gets its own [`ConnectionService`], so answering a request
//! writes nothing that another connection (on another core) also writes: no
//! shared reference count is taken, and the span of a status poll costs
//! nothing unless debug logs are on.

use std::cell::RefCell;
use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Instant;

use tracing::{Instrument, Level, Span};
use warp::http::{HeaderValue, Method, Request};
use warp::hyper::body::Incoming;
use warp::reply::Response;
use warp::Filter;

use crate::actors::Services;

/// Header carrying the request id, both ways.
pub const REQUEST_ID: &str = "x-request-id";

/// Longest client-supplied request id kept; longer ones are replaced.
const MAX_REQUEST_ID_LEN: usize = 128;

/// The whole tree of routes, errors already mapped to JSON. Not boxed: a
/// boxed filter would cost an allocation and a copy of its future per request.
pub trait RouteFilter:
    Filter<Extract = (Response,), Error = Infallible> + Clone + Send + Sync + 'static
{
}

impl<F> RouteFilter for F where
    F: Filter<Extract = (Response,), Error = Infallible> + Clone + Send + Sync + 'static
{
}

/// The whole HTTP side: the routes plus request ids, logs and metrics.
/// Cloned once per connection, as [`HttpService::connection`].
#[derive(Clone)]
pub struct HttpService<F> {
    /// Every route.
    routes: F,
    /// Where the HTTP metrics go.
    services: Arc<Services>,
}

impl<F: RouteFilter> HttpService<F> {
    /// Wraps `routes`.
    pub fn new(routes: F, services: Arc<Services>) -> HttpService<F> {
        HttpService { routes, services }
    }

    /// The service of one connection.
    pub fn connection(&self) -> ConnectionService<impl Routes> {
        ConnectionService {
            routes: RefCell::new(warp::service(self.routes.clone())),
            services: Arc::new(ConnectionServices(self.services.clone())),
        }
    }
}

/// The routes as warp serves them (its service type has no public name).
pub trait Routes:
    tower_service::Service<
        Request<Incoming>,
        Response = Response,
        Error = Infallible,
        Future: Send + 'static,
    > + Send
{
}

impl<S> Routes for S where
    S: tower_service::Service<
            Request<Incoming>,
            Response = Response,
            Error = Infallible,
            Future: Send + 'static,
        > + Send
{
}

/// The service of one connection. hyper calls it by reference, one request
/// at a time; what a request clones belongs to this connection alone.
pub struct ConnectionService<R> {
    /// The routes; warp's service is called through `&mut`.
    routes: RefCell<R>,
    /// Cloned into every request's future.
    services: Arc<ConnectionServices>,
}

/// The services, behind a reference count of the connection's own: the
/// shared count would be written from every core for every request.
struct ConnectionServices(Arc<Services>);

impl<R: Routes> warp::hyper::service::Service<Request<Incoming>> for ConnectionService<R> {
    type Response = Response;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Response, Infallible>> + Send>>;

    fn call(&self, request: Request<Incoming>) -> Self::Future {
        let started = Instant::now();
        // The client's id is echoed as it came; a new one is made without allocating.
        let mut buffer = uuid::Uuid::encode_buffer();
        let id_header = match request.headers().get(REQUEST_ID) {
            Some(v) if v.to_str().is_ok_and(is_sane_request_id) => v.clone(),
            _ => HeaderValue::from_str(new_request_id(&mut buffer))
                .unwrap_or_else(|_| HeaderValue::from_static("-")),
        };
        let route = route_template(request.uri().path());
        let method = request.method().clone();
        let reads = method == Method::GET || method == Method::HEAD;
        // Reads (mostly status polls) get their span at debug: at info it
        // would cost a fifth of answering them. A read that ends in an error
        // gets its span when its line is written.
        let span = if reads {
            request_span(Level::DEBUG, &id_header, &method, route)
        } else {
            request_span(Level::INFO, &id_header, &method, route)
        };
        let response = tower_service::Service::call(&mut *self.routes.borrow_mut(), request);
        let services = self.services.clone();
        Box::pin(async move {
            let mut response = match response.instrument(span.clone()).await {
                Ok(response) => response,
                Err(never) => match never {},
            };
            let status = response.status().as_u16();
            let latency = started.elapsed();
            services
                .0
                .metrics
                .http_request(route, method_label(&method), status, latency);
            log_request(span, &id_header, &method, route, status, latency);
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
        })
    }
}

/// The span of one request, at `level`.
fn request_span(level: Level, id: &HeaderValue, method: &Method, route: &'static str) -> Span {
    let id = id.to_str().unwrap_or_default();
    if level == Level::DEBUG {
        tracing::debug_span!("request", request_id = %id, method = %method, route)
    } else {
        tracing::info_span!("request", request_id = %id, method = %method, route)
    }
}

/// The one `request` line of a request, inside its span (made now at info
/// if the handler ran without one).
fn log_request(
    span: Span,
    id: &HeaderValue,
    method: &Method,
    route: &'static str,
    status: u16,
    latency: std::time::Duration,
) {
    let latency_ms = latency.as_secs_f64() * 1000.0;
    let quiet = status < 500 && (is_probe(route) || (*method == Method::GET && status < 400));
    if quiet {
        // Polls and probes are the bulk of the traffic: a line each at info
        // would cost more than answering them.
        span.in_scope(|| tracing::debug!(status, latency_ms, "request"));
        return;
    }
    let span = if span.is_disabled() {
        request_span(Level::INFO, id, method, route)
    } else {
        span
    };
    let _entered = span.enter();
    if status >= 500 {
        tracing::warn!(status, latency_ms, "request");
    } else {
        tracing::info!(status, latency_ms, "request");
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
fn method_label(method: &Method) -> &'static str {
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
        let custom = Method::from_bytes(b"FROBNICATE").unwrap();
        assert_eq!(method_label(&custom), "OTHER");
        assert_eq!(method_label(&Method::POST), "POST");
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
