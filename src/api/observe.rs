//! Routes each request through the table of [`super::routes`] and wraps it
//! for operators: a request id on every request (the client's
//! `x-request-id` when it is sane, else a new one) echoed in the response, a
//! span carrying it around the handler, one log line per request (method,
//! route, status, latency) and the HTTP metrics.
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
use warp::http::{header, HeaderName, HeaderValue, Method, Request, Version};
use warp::hyper::body::Body as _;
use warp::hyper::body::Incoming;
use warp::reply::Response;

use super::error::{ApiError, Failure};
use super::routes::{self, Dispatch, Holds, Table};
use super::{auth, bounds, cors, tus, AppState};

/// Header carrying the request id, both ways.
pub const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// Longest client-supplied request id kept; longer ones are replaced.
const MAX_REQUEST_ID_LEN: usize = 128;

/// The whole HTTP side: the route table plus request ids, logs and metrics.
/// Each connection gets its own [`HttpService::connection`].
pub struct HttpService<S> {
    /// The warp filters of the routes.
    table: Table<S>,
    /// What the handlers need; where the HTTP metrics go.
    state: Arc<AppState>,
}

impl<S: Routes + Clone> HttpService<S> {
    /// Wraps the routes of `table`.
    pub fn new(table: Table<S>, state: Arc<AppState>) -> HttpService<S> {
        HttpService { table, state }
    }

    /// The service of one connection.
    pub fn connection(&self) -> ConnectionService<S> {
        ConnectionService {
            table: RefCell::new(self.table.clone()),
            state: Arc::new(ConnectionState(self.state.clone())),
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
    + Sync
    + 'static
{
}

impl<S> Routes for S where
    S: tower_service::Service<
            Request<Incoming>,
            Response = Response,
            Error = Infallible,
            Future: Send + 'static,
        > + Send
        + Sync
        + 'static
{
}

/// The service of one connection. hyper calls it by reference, one request
/// at a time; what a request clones belongs to this connection alone.
pub struct ConnectionService<S> {
    /// The connection's copy of the routes' filters; warp's service is called through `&mut`.
    table: RefCell<Table<S>>,
    /// Cloned into every request's future.
    state: Arc<ConnectionState>,
}

/// The state, behind a reference count of the connection's own: the
/// shared count would be written from every core for every request.
struct ConnectionState(Arc<AppState>);

impl<S: Routes> warp::hyper::service::Service<Request<Incoming>> for ConnectionService<S> {
    type Response = Response;
    type Error = Infallible;
    type Future = Observed<S::Future>;

    fn call(&self, mut request: Request<Incoming>) -> Self::Future {
        let started = Instant::now();
        if let Some(method) = method_override(&request) {
            *request.method_mut() = method;
        }
        // The client's id is echoed as it came; a new one is made without allocating.
        let mut buffer = uuid::Uuid::encode_buffer();
        let id_header = match request.headers().get(&REQUEST_ID) {
            Some(v) if v.to_str().is_ok_and(is_sane_request_id) => v.clone(),
            _ => HeaderValue::from_str(new_request_id(&mut buffer))
                .unwrap_or_else(|_| HeaderValue::from_static("-")),
        };
        let method = request.method().clone();
        let (route, dispatch) = routes::dispatch(request.uri().path(), &method);
        let route_label = route.map_or(routes::UNMATCHED, |at| routes::ROUTES[at].path);
        // Reads (mostly status polls) get their span at debug: at info it
        // would cost a fifth of answering them. A read that ends in an error
        // gets its span when its line is written.
        let level = if method == Method::GET || method == Method::HEAD {
            Level::DEBUG
        } else {
            Level::INFO
        };
        let span = request_span(level, &id_header, &method, route_label);
        let cors = cors::allowed(request.headers(), &self.state.0.services.config);
        let preflight = cors::is_preflight(&method, request.headers());
        // A request that would hold a file, a body or a buffer takes a place first.
        let mut place = None;
        let refused = framing_error(&request).or_else(|| {
            if preflight {
                return None;
            }
            let holds = route.map_or(Holds::Nothing, |at| routes::ROUTES[at].holds);
            if holds == Holds::Nothing || matches!(dispatch, Dispatch::MethodNotAllowed(_)) {
                return None;
            }
            let state = &self.state.0;
            // Only a valid key reaches the places kept for keyed requests.
            let keyed = holds == Holds::Keyed
                && auth::with_tenant(state, request.headers().get(header::AUTHORIZATION), |_| ())
                    .is_ok();
            place = state.in_flight.try_take(keyed);
            place.is_none().then_some(ApiError::Busy {
                retry_after: state.services.config.retry_after,
            })
        });
        let response = if let Some(error) = refused {
            Answer::ready(error.to_response())
        } else if preflight {
            // Answered whole here: it is not the route's to answer.
            Answer::ready(cors::preflight(cors.clone()))
        } else {
            match dispatch {
                Dispatch::NotFound => Answer::ready(ApiError::NotFound.to_response()),
                Dispatch::MethodNotAllowed(route) => {
                    Answer::ready(routes::method_not_allowed(route))
                }
                Dispatch::Now(handler, params) => {
                    let _entered = span.enter();
                    Answer::ready(handler(&request, &params, &self.state.0))
                }
                Dispatch::Filter(route, method) => {
                    match self.table.borrow_mut().service(route, method) {
                        Some(service) => Answer::Filter {
                            future: tower_service::Service::call(service, request),
                        },
                        None => Answer::ready(
                            ApiError::Internal("a route without its filter".into()).to_response(),
                        ),
                    }
                }
            }
        };
        Observed {
            response,
            span,
            facts: Some(RequestFacts {
                started,
                id_header,
                route: route_label,
                method,
                state: self.state.clone(),
                place,
                cors,
                preflight,
            }),
        }
    }
}

/// The method a tus request names in `X-HTTP-Method-Override`, which the
/// tus protocol has servers honour for clients behind proxies that pass only
/// `GET` and `POST`; other routes ignore it.
fn method_override(request: &Request<Incoming>) -> Option<Method> {
    if !request.uri().path().starts_with(tus::PATH) {
        return None;
    }
    let value = request.headers().get("x-http-method-override")?;
    Method::from_bytes(value.as_bytes()).ok()
}

pin_project_lite::pin_project! {
    /// The response of a route: ready, or a warp filter's future.
    #[project = AnswerProjection]
    enum Answer<F> {
        /// Answered when the request was routed (taken when polled).
        Now { response: Option<Response> },
        /// A warp filter at work.
        Filter { #[pin] future: F },
    }
}

impl<F> Answer<F> {
    /// Answered at once.
    fn ready(response: Response) -> Answer<F> {
        Answer::Now {
            response: Some(response),
        }
    }
}

impl<F> Future for Answer<F>
where
    F: Future<Output = Result<Response, Infallible>>,
{
    type Output = Result<Response, Infallible>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project() {
            AnswerProjection::Now { response } => match response.take() {
                Some(response) => Poll::Ready(Ok(response)),
                None => Poll::Pending,
            },
            AnswerProjection::Filter { future } => future.poll(cx),
        }
    }
}

pin_project_lite::pin_project! {
    /// One request's response on its way: the routes' future, polled inside
    /// the request's span, then the request id, the metrics and the log line.
    /// A plain struct, not a boxed `async` block, so hyper keeps it in place.
    pub struct Observed<F> {
        #[pin]
        response: Answer<F>,
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
    state: Arc<ConnectionState>,
    /// The request's place among those in flight; its body keeps it.
    place: Option<bounds::Place>,
    /// The page's origin, when it may read the answer.
    cors: Option<HeaderValue>,
    /// A CORS preflight, answered whole by [`cors::preflight`].
    preflight: bool,
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
        facts.state.0.services.metrics.http_request(
            route,
            method_label(&facts.method),
            status,
            latency,
        );
        let span = std::mem::replace(this.span, Span::none());
        let failure = response.extensions_mut().remove::<Failure>();
        log_request(span, &facts, status, latency, failure);
        response.headers_mut().insert(REQUEST_ID, facts.id_header);
        if !facts.preflight {
            cors::mark(&mut response, facts.cors, &facts.state.0.services.config);
        }
        // The tus routes' answers say the version, also those made here (a
        // busy server's 503, a 405, a framing 400).
        if route.starts_with(tus::PATH) && facts.method != Method::OPTIONS {
            let version = HeaderValue::from_static(tus::VERSION);
            response.headers_mut().insert(tus::RESUMABLE, version);
        }
        // hyper leaves out the body of a HEAD answer over HTTP/1 only.
        if facts.method == Method::HEAD {
            let (mut parts, body) = response.into_parts();
            bounds::set_length(&mut parts, body.size_hint().exact());
            response = Response::from_parts(parts, Default::default());
        }
        if let Some(place) = facts.place {
            response = bounds::hold(response, place);
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

/// Why a request is refused before it is routed, if it is: what HTTP/1.1
/// requires of every request (RFC 9112 3.2: exactly one `Host`) and a body
/// framing hyper would pass through undecoded (RFC 9112 6.1: only `chunked`
/// is understood here; `gzip, chunked` would be stored as raw gzip).
fn framing_error(request: &Request<Incoming>) -> Option<ApiError> {
    let headers = request.headers();
    if request.version() == Version::HTTP_11 {
        let hosts = headers.get_all(header::HOST).iter().count();
        if hosts != 1 {
            return Some(ApiError::BadRequest(if hosts == 0 {
                "An HTTP/1.1 request needs a Host header."
            } else {
                "A request may have only one Host header."
            }));
        }
    }
    let mut codings = headers
        .get_all(header::TRANSFER_ENCODING)
        .iter()
        .flat_map(|value| value.as_bytes().split(|&b| b == b','))
        .map(<[u8]>::trim_ascii)
        .filter(|coding| !coding.is_empty());
    let only_chunked = match codings.next() {
        None => true,
        Some(first) => first.eq_ignore_ascii_case(b"chunked") && codings.next().is_none(),
    };
    (!only_chunked).then_some(ApiError::UnsupportedTransferEncoding)
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

pub use super::routes::{allowed_methods, route_template, ROUTE_TEMPLATES};

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
}
