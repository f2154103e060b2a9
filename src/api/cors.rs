//! Cross-origin requests, for pages on the origins in `cors_origins` (none
//! by default): a browser's preflight (`OPTIONS` with `Origin` and
//! `Access-Control-Request-Method`) is answered before routing, with no key
//! (browsers send none on a preflight); the answers to such an origin's
//! requests say it may read them, and which headers (the tus ones and
//! `Location` among them).

use warp::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use warp::reply::Response;
use warp::Reply;

use super::error::ApiError;
use crate::config::Config;

/// The methods a page may use.
const METHODS: &str = "GET, HEAD, POST, PATCH, DELETE, OPTIONS";

/// The request headers a page may send.
const REQUEST_HEADERS: &str = "Authorization, Content-Type, Idempotency-Key, Last-Event-ID, \
Range, If-None-Match, If-Modified-Since, Tus-Resumable, Upload-Checksum, Upload-Concat, Upload-Defer-Length, Upload-Length, \
Upload-Metadata, Upload-Offset, X-HTTP-Method-Override, X-Request-Id";

/// The answer headers a page may read (beyond the few every page may).
const EXPOSED_HEADERS: &str = "Location, Retry-After, Idempotent-Replayed, Content-Range, \
Accept-Ranges, Content-Length, ETag, Tus-Resumable, \
Tus-Version, Tus-Extension, Tus-Max-Size, Tus-Checksum-Algorithm, Upload-Concat, \
Upload-Defer-Length, Upload-Expires, Upload-Length, Upload-Offset, X-Request-Id";

/// How long a browser may keep a preflight's answer, in seconds.
const MAX_AGE: &str = "86400";

/// The request's `Origin`, if `cors_origins` allows it.
pub fn allowed(headers: &HeaderMap, config: &Config) -> Option<HeaderValue> {
    if config.cors_origins.is_empty() {
        return None;
    }
    let origin = headers.get(header::ORIGIN)?;
    let listed = config
        .cors_origins
        .iter()
        .any(|o| o == "*" || o.as_bytes().eq_ignore_ascii_case(origin.as_bytes()));
    listed.then(|| origin.clone())
}

/// Whether the request is a browser's preflight.
pub fn is_preflight(method: &Method, headers: &HeaderMap) -> bool {
    method == Method::OPTIONS
        && headers.contains_key(header::ORIGIN)
        && headers.contains_key(header::ACCESS_CONTROL_REQUEST_METHOD)
}

/// The answer to a preflight: 204 with what the origin may do, or 403 for
/// an origin not allowed.
pub fn preflight(origin: Option<HeaderValue>) -> Response {
    let Some(origin) = origin else {
        return ApiError::OriginNotAllowed.to_response();
    };
    let mut response = StatusCode::NO_CONTENT.into_response();
    let headers = response.headers_mut();
    headers.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, origin);
    headers.insert(
        header::ACCESS_CONTROL_ALLOW_METHODS,
        HeaderValue::from_static(METHODS),
    );
    headers.insert(
        header::ACCESS_CONTROL_ALLOW_HEADERS,
        HeaderValue::from_static(REQUEST_HEADERS),
    );
    headers.insert(
        header::ACCESS_CONTROL_MAX_AGE,
        HeaderValue::from_static(MAX_AGE),
    );
    headers.insert(header::VARY, HeaderValue::from_static("Origin"));
    response
}

/// Lets a page of `origin`, if any, read `response`. With any origin
/// listed, every answer varies by `Origin`, so that one cached for a request
/// without it (a `<video src>`, a CDN) is not served to a page that needs
/// the CORS headers (`/media` is cached for a year).
pub fn mark(response: &mut Response, origin: Option<HeaderValue>, config: &Config) {
    if config.cors_origins.is_empty() {
        return;
    }
    let headers = response.headers_mut();
    headers.append(header::VARY, HeaderValue::from_static("Origin"));
    if let Some(origin) = origin {
        headers.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, origin);
        headers.insert(
            header::ACCESS_CONTROL_EXPOSE_HEADERS,
            HeaderValue::from_static(EXPOSED_HEADERS),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(origins: &[&str]) -> Config {
        let mut config = Config::new(
            crate::config::DEFAULT_LISTEN,
            std::path::PathBuf::from("data"),
        );
        config.cors_origins = origins.iter().map(|o| o.to_string()).collect();
        config
    }

    fn from(origin: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(header::ORIGIN, HeaderValue::from_str(origin).unwrap());
        headers
    }

    #[test]
    fn only_listed_origins_are_allowed() {
        let listed = config(&["https://app.example", "http://localhost:3000"]);
        assert!(allowed(&from("https://app.example"), &listed).is_some());
        assert!(allowed(&from("http://localhost:3000"), &listed).is_some());
        assert!(allowed(&from("https://evil.example"), &listed).is_none());
        assert!(allowed(&HeaderMap::new(), &listed).is_none());
        assert!(allowed(&from("https://app.example"), &config(&[])).is_none());
        assert!(allowed(&from("https://any.example"), &config(&["*"])).is_some());
    }

    #[test]
    fn a_preflight_says_what_the_origin_may_do() {
        let answer = preflight(Some(HeaderValue::from_static("https://app.example")));
        assert_eq!(answer.status(), 204);
        let headers = answer.headers();
        assert_eq!(
            headers["access-control-allow-origin"],
            "https://app.example"
        );
        let allowed_headers = headers["access-control-allow-headers"].to_str().unwrap();
        for name in [
            "Authorization",
            "Tus-Resumable",
            "Upload-Offset",
            "Upload-Metadata",
        ] {
            assert!(allowed_headers.contains(name), "{name}");
        }
        assert!(headers["access-control-allow-methods"]
            .to_str()
            .unwrap()
            .contains("PATCH"));
        assert_eq!(preflight(None).status(), 403);
    }
}
