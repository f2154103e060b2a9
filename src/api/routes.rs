//! The one route table: every path template the server answers, the methods
//! it takes and the handler of each. Routing, the `Allow` header of a 405,
//! the metric labels and the `route` field of request logs all read
//! [`ROUTES`]; `tests` holds it to `openapi.json` both ways. Adding a route is
//! one entry here plus its handler.
//!
//! A path is matched segment by segment against each template in turn; a
//! `{name}` segment takes any one segment, and with [`Route::rest`] the last
//! one takes every segment left (the HLS ladder's `hls/720p/seg_00000.ts`).
//! A handler is either answered at once with the state borrowed
//! ([`Handler::Now`], for the status poll: nothing allocated or cloned per
//! request) or a warp filter built once at start ([`Handler::Filter`]). A
//! filter sees the path after the route's segments: nothing, or for a route
//! with [`Route::rest`], its parameters (`{token}/hls/720p/seg_00000.ts`).

use std::sync::{Arc, OnceLock};

use warp::filters::BoxedFilter;
use warp::http::{HeaderValue, Method, Request};
use warp::hyper::body::Incoming;
use warp::reply::Response;
use warp::Filter;

use super::error::{self, ApiError};
use super::{console, events, intake, lifecycle, me, media, ops, tus, uploads, AppState};

/// A method a route takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verb {
    /// `GET`
    Get,
    /// `HEAD`
    Head,
    /// `POST`
    Post,
    /// `DELETE`
    Delete,
    /// `PATCH`
    Patch,
    /// `OPTIONS`
    Options,
}

impl Verb {
    /// The method's name, as in `Allow` and OpenAPI (upper case).
    pub const fn name(self) -> &'static str {
        match self {
            Verb::Get => "GET",
            Verb::Head => "HEAD",
            Verb::Post => "POST",
            Verb::Delete => "DELETE",
            Verb::Patch => "PATCH",
            Verb::Options => "OPTIONS",
        }
    }

    fn is(self, method: &Method) -> bool {
        self.name() == method.as_str()
    }
}

/// How a route answers.
#[derive(Clone, Copy)]
pub enum Handler {
    /// Answered at once, with the request and the state borrowed.
    Now(fn(&Request<Incoming>, &Params<'_>, &AppState) -> Response),
    /// A warp filter, built once at start with the state it needs.
    Filter(fn(&Arc<AppState>) -> BoxedFilter<(Response,)>),
}

/// What a route's requests hold while they run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Holds {
    /// Nothing past a small answer.
    Nothing,
    /// A file, a body or a buffer, for anyone (`/media` needs no key): one
    /// of the places of `max_requests_in_flight` outside the keyed reserve.
    Public,
    /// A file, a body or a buffer, for requests with an API key: any place
    /// of `max_requests_in_flight` when the key is valid.
    Keyed,
}

/// One path template and its methods.
pub struct Route {
    /// The template, e.g. `/api/client/v1/uploads/{id}`; also the metric
    /// label and the `route` field of the request's log line.
    pub path: &'static str,
    /// The last `{name}` takes every segment left, not one.
    pub rest: bool,
    /// What its requests hold while they run (see [`super::bounds`]).
    pub holds: Holds,
    /// Each method the route takes, with its handler. `HEAD` is taken
    /// wherever `GET` is, by the `GET` handler (its body is left out in
    /// [`super::observe`]).
    pub methods: &'static [(Verb, Handler)],
}

/// Every route of the server, the status poll first (it is most of the traffic).
pub const ROUTES: &[Route] = &[
    Route {
        path: "/api/client/v1/uploads/{id}",
        holds: Holds::Nothing,
        rest: false,
        methods: &[
            (Verb::Get, Handler::Now(uploads::show)),
            (Verb::Delete, Handler::Filter(lifecycle::delete)),
        ],
    },
    Route {
        path: "/api/client/v1/uploads/{id}/cancel",
        holds: Holds::Nothing,
        rest: false,
        methods: &[(Verb::Post, Handler::Filter(lifecycle::cancel))],
    },
    Route {
        path: "/api/client/v1/uploads/{id}/retry",
        holds: Holds::Nothing,
        rest: false,
        methods: &[(Verb::Post, Handler::Filter(lifecycle::retry))],
    },
    // Streams, bounded by `max_event_streams_per_tenant` rather than by the
    // places of requests in flight, which they would hold for hours.
    Route {
        path: "/api/client/v1/uploads/{id}/events",
        holds: Holds::Nothing,
        rest: false,
        methods: &[(Verb::Get, Handler::Filter(events::upload))],
    },
    Route {
        path: "/api/client/v1/events",
        holds: Holds::Nothing,
        rest: false,
        methods: &[(Verb::Get, Handler::Filter(events::tenant))],
    },
    Route {
        path: "/api/client/v1/uploads",
        holds: Holds::Keyed,
        rest: false,
        methods: &[
            (Verb::Get, Handler::Filter(uploads::list)),
            (Verb::Post, Handler::Filter(intake::create)),
        ],
    },
    // Resumable uploads (tus 1.0.0): bodies, like POST /uploads.
    Route {
        path: "/api/client/v1/tus",
        holds: Holds::Keyed,
        rest: false,
        methods: &[
            (Verb::Options, Handler::Filter(tus::options)),
            (Verb::Post, Handler::Filter(tus::create)),
        ],
    },
    Route {
        path: "/api/client/v1/tus/{id}",
        holds: Holds::Keyed,
        rest: false,
        methods: &[
            (Verb::Options, Handler::Filter(tus::options)),
            (Verb::Head, Handler::Filter(tus::head)),
            (Verb::Patch, Handler::Filter(tus::patch)),
            (Verb::Delete, Handler::Filter(tus::delete)),
        ],
    },
    Route {
        path: "/api/client/v1/me",
        holds: Holds::Nothing,
        rest: false,
        methods: &[(Verb::Get, Handler::Now(me::show))],
    },
    Route {
        path: "/api/client/v1/openapi.json",
        holds: Holds::Nothing,
        rest: false,
        methods: &[(Verb::Get, Handler::Filter(ops::openapi))],
    },
    Route {
        path: "/media/{token}/{file}",
        holds: Holds::Public,
        rest: true,
        methods: &[
            (Verb::Get, Handler::Filter(media::serve)),
            (Verb::Head, Handler::Filter(media::serve)),
        ],
    },
    // An upload's ladder while it is written: no key, like `/media`.
    Route {
        path: "/preview/{token}/{file}",
        holds: Holds::Public,
        rest: true,
        methods: &[
            (Verb::Get, Handler::Filter(media::preview::serve)),
            (Verb::Head, Handler::Filter(media::preview::serve)),
        ],
    },
    // The web console: embedded files, answered from memory.
    Route {
        path: "/console/{file}",
        holds: Holds::Nothing,
        rest: true,
        methods: &[(Verb::Get, Handler::Now(console::serve))],
    },
    // After `/console/{file}`, which takes `/console/`: this one takes only `/console`.
    Route {
        path: "/console",
        holds: Holds::Nothing,
        rest: false,
        methods: &[(Verb::Get, Handler::Now(console::root))],
    },
    Route {
        path: "/",
        holds: Holds::Nothing,
        rest: false,
        methods: &[(Verb::Get, Handler::Now(console::root))],
    },
    Route {
        path: "/healthz",
        holds: Holds::Nothing,
        rest: false,
        methods: &[(Verb::Get, Handler::Filter(ops::healthz))],
    },
    Route {
        path: "/readyz",
        holds: Holds::Nothing,
        rest: false,
        methods: &[(Verb::Get, Handler::Filter(ops::readyz))],
    },
    Route {
        path: "/metrics",
        holds: Holds::Nothing,
        rest: false,
        methods: &[(Verb::Get, Handler::Filter(ops::metrics))],
    },
];

/// The label of a path no route takes.
pub const UNMATCHED: &str = "unmatched";

/// Every route template, then [`UNMATCHED`]: every value [`route_template`] returns.
pub const ROUTE_TEMPLATES: [&str; ROUTES.len() + 1] = {
    let mut templates = [UNMATCHED; ROUTES.len() + 1];
    let mut i = 0;
    while i < ROUTES.len() {
        templates[i] = ROUTES[i].path;
        i += 1;
    }
    templates
};

/// The values of a matched path's `{name}` segments, in template order.
#[derive(Debug, Default)]
pub struct Params<'a> {
    values: [&'a str; 2],
    len: usize,
}

impl<'a> Params<'a> {
    /// The `n`th parameter (0 for the first).
    pub fn get(&self, n: usize) -> &'a str {
        if n < self.len {
            self.values[n]
        } else {
            ""
        }
    }

    fn push(&mut self, value: &'a str) -> Option<()> {
        *self.values.get_mut(self.len)? = value;
        self.len += 1;
        Some(())
    }
}

impl Route {
    /// The parameters of `path` (without its leading slash) if this route
    /// takes it. As warp matches paths: a `{name}` takes one segment that is
    /// not empty, and one trailing slash is allowed where the route ends.
    fn matches<'a>(&self, path: &'a str) -> Option<Params<'a>> {
        let mut params = Params::default();
        let mut rest = Some(path);
        let mut template = self.path.trim_start_matches('/').split('/').peekable();
        while let Some(part) = template.next() {
            let last = template.peek().is_none();
            if last && self.rest && part.starts_with('{') {
                // Every segment left, which may be none.
                params.push(rest?)?;
                return Some(params);
            }
            let (segment, after) = match rest?.split_once('/') {
                Some((segment, after)) => (segment, Some(after)),
                None => (rest?, None),
            };
            if part.starts_with('{') {
                if segment.is_empty() {
                    return None;
                }
                params.push(segment)?;
            } else if part != segment {
                return None;
            }
            rest = after;
        }
        // All of the path taken, or all but one trailing slash.
        matches!(rest, None | Some("")).then_some(params)
    }

    /// The handler of `method`, if the route takes it, and its place in `methods`.
    /// `HEAD` without a handler of its own is answered by `GET`'s.
    fn handler(&self, method: &Method) -> Option<(usize, Handler)> {
        let find = |wanted: &Method| self.methods.iter().position(|(verb, _)| verb.is(wanted));
        let at = find(method).or_else(|| {
            if *method == Method::HEAD {
                find(&Method::GET)
            } else {
                None
            }
        })?;
        Some((at, self.methods[at].1))
    }

    /// The methods the route answers: its own, and `HEAD` after `GET`.
    fn verbs(&self) -> Vec<Verb> {
        let own: Vec<Verb> = self.methods.iter().map(|(verb, _)| *verb).collect();
        let mut verbs = Vec::with_capacity(own.len() + 1);
        for verb in &own {
            verbs.push(*verb);
            if *verb == Verb::Get && !own.contains(&Verb::Head) {
                verbs.push(Verb::Head);
            }
        }
        verbs
    }

    /// The `Allow` header of this route: its methods, in table order.
    pub fn allow(&self) -> &'static str {
        static ALLOW: OnceLock<Vec<&'static str>> = OnceLock::new();
        let all = ALLOW.get_or_init(|| {
            ROUTES
                .iter()
                .map(|route| {
                    let names: Vec<&str> = route.verbs().iter().map(|v| v.name()).collect();
                    &*names.join(", ").leak()
                })
                .collect()
        });
        ROUTES
            .iter()
            .position(|r| std::ptr::eq(r, self))
            .map_or("", |at| all[at])
    }
}

/// The route that takes `path`, its index in [`ROUTES`] and the path's parameters.
pub fn find(path: &str) -> Option<(usize, Params<'_>)> {
    let path = path.strip_prefix('/').unwrap_or(path);
    ROUTES
        .iter()
        .enumerate()
        .find_map(|(at, route)| Some((at, route.matches(path)?)))
}

/// The route template of a path: a label that never holds an id or token.
pub fn route_template(path: &str) -> &'static str {
    find(path).map_or(UNMATCHED, |(at, _)| ROUTES[at].path)
}

/// The methods a route template takes, as an `Allow` header value.
pub fn allowed_methods(template: &str) -> Option<&'static str> {
    ROUTES
        .iter()
        .find(|route| route.path == template)
        .map(Route::allow)
}

/// The warp filters of the routes, built once; a connection takes its own
/// copy ([`Table::clone`]) and calls them by reference.
pub struct Table<S> {
    /// By route, then by method: the filter of each `Handler::Filter`.
    services: Vec<Vec<Option<S>>>,
}

impl<S: Clone> Clone for Table<S> {
    fn clone(&self) -> Self {
        Table {
            services: self.services.clone(),
        }
    }
}

/// Builds the filter of every `Handler::Filter` route.
pub fn table(state: &Arc<AppState>) -> Table<impl super::observe::Routes + Clone> {
    let services = ROUTES
        .iter()
        .map(|route| {
            route
                .methods
                .iter()
                .map(|(_, handler)| match handler {
                    Handler::Now(_) => None,
                    Handler::Filter(make) => {
                        let filter = segments(route)
                            .and(make(state))
                            .recover(error::recover)
                            .unify()
                            .boxed();
                        Some(warp::service(filter))
                    }
                })
                .collect()
        })
        .collect();
    Table { services }
}

/// A filter that takes the route's segments off the path: all of them, or,
/// for a route that takes the rest of the path, its fixed segments, so that
/// the handler's filter sees the parameters (`{token}/hls/720p/seg_00000.ts`).
fn segments(route: &Route) -> BoxedFilter<()> {
    let parts = route.path.trim_start_matches('/').split('/');
    let parts: Vec<&'static str> = if route.rest {
        parts.take_while(|part| !part.starts_with('{')).collect()
    } else {
        parts.collect()
    };
    let mut filter = warp::any().boxed();
    for part in parts {
        filter = if part.starts_with('{') {
            filter
                .and(warp::path::param::<String>())
                .map(|_| ())
                .untuple_one()
                .boxed()
        } else {
            filter.and(warp::path(part)).boxed()
        };
    }
    if !route.rest {
        filter = filter.and(warp::path::end()).boxed();
    }
    filter
}

/// The `n`th `{name}` segment of the request's path, for a filter (which
/// sees the path after its route's segments): `/uploads/{id}/cancel` gives
/// the id as 0.
pub fn path_param(n: usize) -> BoxedFilter<(String,)> {
    warp::path::full()
        .map(move |path: warp::path::FullPath| {
            find(path.as_str()).map_or_else(String::new, |(_, params)| params.get(n).to_string())
        })
        .boxed()
}

/// Where a request goes, decided from the table alone.
pub enum Dispatch<'a> {
    /// No route takes the path: 404.
    NotFound,
    /// The route does not take the method: 405 with its `Allow`.
    MethodNotAllowed(&'static Route),
    /// Answer now.
    Now(
        fn(&Request<Incoming>, &Params<'_>, &AppState) -> Response,
        Params<'a>,
    ),
    /// Run the filter at this place of the [`Table`].
    Filter(usize, usize),
}

/// The route of `request`'s path and method, and its index in [`ROUTES`].
pub fn dispatch<'a>(path: &'a str, method: &Method) -> (Option<usize>, Dispatch<'a>) {
    let Some((at, params)) = find(path) else {
        return (None, Dispatch::NotFound);
    };
    let route = &ROUTES[at];
    let dispatch = match route.handler(method) {
        None => Dispatch::MethodNotAllowed(route),
        Some((_, Handler::Now(handler))) => Dispatch::Now(handler, params),
        Some((method_at, Handler::Filter(_))) => Dispatch::Filter(at, method_at),
    };
    (Some(at), dispatch)
}

impl<S> Table<S> {
    /// The filter at `(route, method)`, as `dispatch` named it.
    pub fn service(&mut self, route: usize, method: usize) -> Option<&mut S> {
        self.services.get_mut(route)?.get_mut(method)?.as_mut()
    }
}

/// The answer to a method a route does not take: 405 with the methods it does.
pub fn method_not_allowed(route: &Route) -> Response {
    let mut response = ApiError::MethodNotAllowed.to_response();
    // RFC 9110: a 405 lists the methods the resource takes.
    response.headers_mut().insert(
        warp::http::header::ALLOW,
        HeaderValue::from_static(route.allow()),
    );
    response
}

#[cfg(test)]
mod tests {
    use super::*;

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
        // As warp routed before the table: one trailing slash is the same
        // path, a `{name}` is never empty, a second leading slash is another path.
        assert_eq!(
            route_template("/api/client/v1/uploads/"),
            "/api/client/v1/uploads"
        );
        assert_eq!(route_template("/api/client/v1/uploads//"), "unmatched");
        assert_eq!(route_template("/healthz/"), "/healthz");
        assert_eq!(
            route_template("/api/client/v1/uploads/9c1f/"),
            "/api/client/v1/uploads/{id}"
        );
        assert_eq!(route_template("/media/abc"), "unmatched");
        assert_eq!(route_template("/media/abc/"), "/media/{token}/{file}");
        assert_eq!(route_template("/"), "/");
        assert_eq!(route_template("/console"), "/console");
        assert_eq!(route_template("/console/"), "/console/{file}");
        assert_eq!(
            route_template("/console/vendor/tus.min.js"),
            "/console/{file}"
        );
        assert_eq!(route_template("/consolex"), "unmatched");
        assert_eq!(route_template("//healthz"), "unmatched");
        assert_eq!(route_template("/api/client/v1"), "unmatched");
        assert_eq!(route_template("/api/client/v1/openapi.json/x"), "unmatched");
    }

    #[test]
    fn parameters_are_the_matched_segments() {
        let (at, params) = find("/api/client/v1/uploads/abc").unwrap();
        assert_eq!(
            (ROUTES[at].path, params.get(0)),
            ("/api/client/v1/uploads/{id}", "abc")
        );
        let (_, params) = find("/media/tok/hls/720p/seg_00000.ts").unwrap();
        assert_eq!(
            (params.get(0), params.get(1)),
            ("tok", "hls/720p/seg_00000.ts")
        );
    }

    #[test]
    fn allow_lists_each_routes_methods() {
        assert_eq!(
            allowed_methods("/api/client/v1/uploads"),
            Some("GET, HEAD, POST")
        );
        assert_eq!(allowed_methods("/media/{token}/{file}"), Some("GET, HEAD"));
        assert_eq!(allowed_methods("/healthz"), Some("GET, HEAD"));
        assert_eq!(allowed_methods(UNMATCHED), None);
        assert_eq!(ROUTE_TEMPLATES.last(), Some(&UNMATCHED));
    }

    /// The table and `openapi.json` describe the same paths and methods.
    #[test]
    fn the_table_and_the_openapi_document_agree_both_ways() {
        let doc: serde_json::Value = serde_json::from_str(super::ops::OPENAPI).unwrap();
        let documented: std::collections::BTreeSet<String> = doc["paths"]
            .as_object()
            .unwrap()
            .iter()
            .flat_map(|(path, item)| {
                let path = path.replace("{videoId}", "{id}");
                item.as_object()
                    .unwrap()
                    .keys()
                    .filter(|k| k.as_str() != "parameters")
                    .map(move |method| format!("{} {path}", method.to_uppercase()))
                    .collect::<Vec<_>>()
            })
            .collect();
        let routed: std::collections::BTreeSet<String> = ROUTES
            .iter()
            .flat_map(|route| {
                route
                    .methods
                    .iter()
                    .map(|(verb, _)| format!("{} {}", verb.name(), route.path))
            })
            .collect();
        assert_eq!(routed, documented);
    }
}
