//! Wraps the routes for operators: a request id on every request (the
//! client's `x-request-id` when it is sane, else a new one) echoed in the
//! response, a span carrying it around the handler, one log line per request
//! (method, route, status, latency) and the HTTP metrics.
//!
//! Each connection gets its own [`ConnectionService`]: the wrapper takes no
//! reference count shared with other connections per request (written from
//! both cores, such a count costs more than the work around it), and the span
//! of a status poll costs nothing unless debug logs are on.

use std::cell::RefCell;
use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;

use tracing::{Level, Span};
use warp::http::{HeaderName, HeaderValue, Method, Request};
use warp::hyper::body::Incoming;
use warp::reply::Response;
use warp::Filter;

use super::error::Failure;
use crate::actors::Services;

/// Header carrying the request id, both ways.
pub const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

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
    type Future = Observed<R::Future>;

    fn call(&self, request: Request<Incoming>) -> Self::Future {
        let started = Instant::now();
        // The client's id is echoed as it came; a new one is made without allocating.
        let mut buffer = uuid::Uuid::encode_buffer();
        let id_header = match request.headers().get(&REQUEST_ID) {
            Some(v) if v.to_str().is_ok_and(is_sane_request_id) => v.clone(),
            _ => HeaderValue::from_str(new_request_id(&mut buffer))
                .unwrap_or_else(|_| HeaderValue::from_static("-")),
        };
        let route = route_template(request.uri().path());
        let method = request.method().clone();
        // Reads (mostly status polls) get their span at debug: at info it
        // would cost a fifth of answering them. A read that ends in an error
        // gets its span when its line is written.
        let level = if method == Method::GET || method == Method::HEAD {
            Level::DEBUG
        } else {
            Level::INFO
        };
        let span = request_span(level, &id_header, &method, route);
        let response = tower_service::Service::call(&mut *self.routes.borrow_mut(), request);
        Observed {
            response,
            span,
            facts: Some(RequestFacts {
                started,
                id_header,
                route,
                method,
                services: self.services.clone(),
            }),
        }
    }
}

pin_project_lite::pin_project! {
    /// One request's response on its way: the routes' future, polled inside
    /// the request's span, then the request id, the metrics and the log line.
    /// A plain struct, not a boxed `async` block, so hyper keeps it in place.
    pub struct Observed<F> {
        #[pin]
        response: F,
        span: Span,
        // Taken when the response is ready.
        facts: Option<RequestFacts>,
    }
}

/// What the request's line and metrics need once it is answered.
struct RequestFacts {
    started: Instant,
    id_header: HeaderValue,
    route: &'static str,
    method: Method,
    services: Arc<ConnectionServices>,
}

impl<F> Future for Observed<F>
where
    F: Future<Output = Result<Response, Infallible>>,
{
    type Output = Result<Response, Infallible>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let polled = {
            let _entered = this.span.enter();
            this.response.poll(cx)
        };
        let mut response = match polled {
            Poll::Ready(Ok(response)) => response,
            Poll::Ready(Err(never)) => match never {},
            Poll::Pending => return Poll::Pending,
        };
        let Some(facts) = this.facts.take() else {
            return Poll::Ready(Ok(response));
        };
        let status = response.status().as_u16();
        let latency = facts.started.elapsed();
        let route = facts.route;
        facts
            .services
            .0
            .metrics
            .http_request(route, method_label(&facts.method), status, latency);
        let span = std::mem::replace(this.span, Span::none());
        let failure = response.extensions_mut().remove::<Failure>();
        log_request(span, &facts, status, latency, failure);
        response.headers_mut().insert(REQUEST_ID, facts.id_header);
        if status == 405 {
            if let Some(allow) = allowed_methods(route) {
                // RFC 9110: a 405 lists the methods the resource takes.
                let allow = HeaderValue::from_static(allow);
                response
                    .headers_mut()
                    .insert(warp::http::header::ALLOW, allow);
            }
        }
        Poll::Ready(Ok(response))
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
/// if the handler ran without one), with the cause of a server-side failure.
fn log_request(
    span: Span,
    facts: &RequestFacts,
    status: u16,
    latency: std::time::Duration,
    failure: Option<Failure>,
) {
    let (method, route) = (&facts.method, facts.route);
    let latency_ms = latency.as_secs_f64() * 1000.0;
    let quiet = status < 500 && (is_probe(route) || (*method == Method::GET && status < 400));
    if quiet && failure.is_none() {
        // Polls and probes are the bulk of the traffic: a line each at info
        // would cost more than answering them.
        span.in_scope(|| tracing::debug!(status, latency_ms, "request"));
        return;
    }
    let span = if span.is_disabled() {
        request_span(Level::INFO, &facts.id_header, method, route)
    } else {
        span
    };
    let _entered = span.enter();
    match failure {
        Some(Failure {
            detail,
            internal: true,
        }) => tracing::error!(status, latency_ms, error = %detail, "request"),
        Some(Failure { detail, .. }) => {
            tracing::warn!(status, latency_ms, error = %detail, "request")
        }
        None if status >= 500 => tracing::warn!(status, latency_ms, "request"),
        None => tracing::info!(status, latency_ms, "request"),
    }
}

/// A request id unique to this process run, shaped as a UUID: 64 random bits
/// drawn once per thread and that thread's counter, so making one costs no
/// system call (a random UUID per request did) and writes nothing shared.
fn new_request_id(buffer: &mut [u8]) -> &str {
    use std::cell::Cell;
    thread_local! {
        static NEXT: Cell<(u64, u64)> = Cell::new((uuid::Uuid::new_v4().as_u64_pair().0, 1));
    }
    let (prefix, n) = NEXT.with(|next| {
        let (prefix, n) = next.get();
        next.set((prefix, n.wrapping_add(1)));
        (prefix, n)
    });
    uuid::Uuid::from_u64_pair(prefix, n)
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
    // Prefixes compared in place: nothing is allocated or split.
    let path = path.trim_start_matches('/');
    let one_segment = |s: &str| !s.contains('/');
    if let Some(rest) = path.strip_prefix("api/client/v1/") {
        return match rest {
            "uploads" => "/api/client/v1/uploads",
            "openapi.json" => "/api/client/v1/openapi.json",
            _ => match rest.strip_prefix("uploads/") {
                Some(id) if one_segment(id) => "/api/client/v1/uploads/{id}",
                _ => "unmatched",
            },
        };
    }
    if let Some(rest) = path.strip_prefix("media/") {
        // `{token}/{file}`, or deeper for the HLS ladder.
        return if one_segment(rest) {
            "unmatched"
        } else {
            "/media/{token}/{file}"
        };
    }
    match path {
        "healthz" => "/healthz",
        "readyz" => "/readyz",
        "metrics" => "/metrics",
        _ => "unmatched",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn made_request_ids_are_unique_across_threads() {
        let make = || {
            (0..1000)
                .map(|_| new_request_id(&mut uuid::Uuid::encode_buffer()).to_string())
                .collect::<Vec<_>>()
        };
        let others = std::thread::spawn(make);
        let mut ids: std::collections::HashSet<String> = make().into_iter().collect();
        ids.extend(others.join().unwrap());
        assert_eq!(ids.len(), 2000);
        assert!(ids
            .iter()
            .all(|id| is_sane_request_id(id) && id.len() == 36));
    }

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
        assert_eq!(route_template("/"), "unmatched");
        assert_eq!(route_template("//healthz"), "/healthz");
        assert_eq!(route_template("/api/client/v1"), "unmatched");
        assert_eq!(route_template("/api/client/v1/openapi.json/x"), "unmatched");
    }
}
