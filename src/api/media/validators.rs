//! What a stored file is compared by, its `ETag` and `Last-Modified`, and the
//! conditional requests they answer (RFC 9110 section 13): `If-Match`,
//! `If-Unmodified-Since`, `If-None-Match`, `If-Modified-Since` and `If-Range`.

use std::fs::Metadata;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use warp::http::header::{self, HeaderMap, HeaderName};
use warp::http::StatusCode;

use super::header_value;

/// What a file is compared by: its `ETag` and modification time.
pub(super) struct Validators {
    /// Strong: stored files are written once and renamed into place, so
    /// their size and modification time (to the nanosecond) name one content.
    etag: String,
    /// Seconds since the epoch, as `Last-Modified` has them.
    modified: Option<u64>,
}

impl Validators {
    pub(super) fn of(meta: &Metadata) -> Validators {
        let since_epoch = meta
            .modified()
            .ok()
            .and_then(|at| at.duration_since(UNIX_EPOCH).ok());
        let nanos = since_epoch.map_or(0, |d| d.as_nanos());
        Validators {
            etag: format!("\"{:x}-{nanos:x}\"", meta.len()),
            modified: since_epoch.map(|d| d.as_secs()),
        }
    }

    pub(super) fn insert_into(&self, headers: &mut HeaderMap) {
        headers.insert(header::ETAG, header_value(&self.etag));
        if let Some(secs) = self.modified {
            let at = UNIX_EPOCH + Duration::from_secs(secs);
            let date = httpdate::fmt_http_date(at);
            headers.insert(header::LAST_MODIFIED, header_value(&date));
        }
    }

    /// The answer without content that the request's preconditions call
    /// for, evaluated in the order of RFC 9110 13.2.2: `412` or `304`.
    pub(super) fn precondition(&self, request: &HeaderMap) -> Option<StatusCode> {
        if let Some(tags) = field(request, header::IF_MATCH) {
            if !self.matches(&tags, false) {
                return Some(StatusCode::PRECONDITION_FAILED);
            }
        } else if let Some(since) = date(request, header::IF_UNMODIFIED_SINCE) {
            if self.modified.is_none_or(|modified| modified > since) {
                return Some(StatusCode::PRECONDITION_FAILED);
            }
        }
        if let Some(tags) = field(request, header::IF_NONE_MATCH) {
            if self.matches(&tags, true) {
                return Some(StatusCode::NOT_MODIFIED);
            }
        } else if let Some(since) = date(request, header::IF_MODIFIED_SINCE) {
            if self.modified.is_some_and(|modified| modified <= since) {
                return Some(StatusCode::NOT_MODIFIED);
            }
        }
        None
    }

    /// False when an `If-Range` names another version than this one: then
    /// the whole file is sent instead of the ranges (RFC 9110 13.1.5).
    pub(super) fn range_applies(&self, request: &HeaderMap) -> bool {
        let Some(validator) = field(request, header::IF_RANGE) else {
            return true;
        };
        let validator = validator.trim();
        if validator.starts_with('"') || validator.starts_with("W/") {
            return validator == self.etag;
        }
        let since = httpdate::parse_http_date(validator).ok().map(seconds);
        since.is_some() && since == self.modified
    }

    /// An `If-Match` (strong comparison) or `If-None-Match` (weak) list.
    fn matches(&self, tags: &str, weak: bool) -> bool {
        tags.split(',').map(str::trim).any(|tag| {
            let tag = if weak {
                tag.strip_prefix("W/").unwrap_or(tag)
            } else {
                tag
            };
            tag == "*" || tag == self.etag
        })
    }
}

/// Every line of a request header as one list, if it has any that is text.
fn field(request: &HeaderMap, name: HeaderName) -> Option<String> {
    let values: Vec<&str> = request
        .get_all(name)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .collect();
    (!values.is_empty()).then(|| values.join(","))
}

/// A request header's HTTP-date (any of the three forms), in seconds since
/// the epoch; `None` when it is missing or not a date, which voids it.
fn date(request: &HeaderMap, name: HeaderName) -> Option<u64> {
    let text = request.get(name)?.to_str().ok()?;
    httpdate::parse_http_date(text.trim()).ok().map(seconds)
}

fn seconds(at: SystemTime) -> u64 {
    at.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

#[cfg(test)]
mod tests {
    use warp::http::HeaderValue;

    use super::*;

    fn validators() -> Validators {
        Validators {
            etag: "\"1f-2a\"".into(),
            modified: Some(784_111_777),
        }
    }

    fn request(fields: &[(&'static str, &str)]) -> HeaderMap {
        let mut headers = HeaderMap::new();
        for (name, value) in fields {
            headers.append(*name, HeaderValue::from_str(value).unwrap());
        }
        headers
    }

    #[test]
    fn preconditions_follow_the_order_of_rfc_9110() {
        let v = validators();
        // 784111777 is Sun, 06 Nov 1994 08:49:37 GMT; each HTTP-date form is read.
        for (fields, expected) in [
            (&[][..], None),
            (&[("if-none-match", "\"1f-2a\"")][..], Some(304)),
            (&[("if-none-match", "W/\"1f-2a\"")][..], Some(304)),
            (&[("if-none-match", "\"x\"")][..], None),
            (
                &[("if-none-match", "\"x\""), ("if-none-match", "\"1f-2a\"")][..],
                Some(304),
            ),
            (
                &[("if-modified-since", "Sun, 06 Nov 1994 08:49:37 GMT")][..],
                Some(304),
            ),
            (
                &[("if-modified-since", "Sunday, 06-Nov-94 08:49:37 GMT")][..],
                Some(304),
            ),
            (
                &[("if-modified-since", "Sun Nov  6 08:49:37 1994")][..],
                Some(304),
            ),
            (
                &[("if-modified-since", "Sun, 06 Nov 1994 08:49:36 GMT")][..],
                None,
            ),
            (&[("if-modified-since", "yesterday")][..], None),
            // If-None-Match decides alone when both are sent.
            (
                &[
                    ("if-none-match", "\"x\""),
                    ("if-modified-since", "Sun, 06 Nov 1994 08:49:37 GMT"),
                ][..],
                None,
            ),
            (&[("if-match", "W/\"1f-2a\"")][..], Some(412)),
            (&[("if-match", "\"1f-2a\"")][..], None),
            (&[("if-match", "*")][..], None),
            (
                &[("if-unmodified-since", "Sun, 06 Nov 1994 08:49:36 GMT")][..],
                Some(412),
            ),
            (&[("if-unmodified-since", "not a date")][..], None),
            // A failed If-Match is 412 even when If-None-Match would be 304.
            (
                &[("if-match", "\"x\""), ("if-none-match", "*")][..],
                Some(412),
            ),
        ] {
            assert_eq!(
                v.precondition(&request(fields)).map(|s| s.as_u16()),
                expected,
                "{fields:?}"
            );
        }
    }

    #[test]
    fn if_range_keeps_the_range_only_for_this_version() {
        let v = validators();
        for (validator, applies) in [
            ("\"1f-2a\"", true),
            ("Sun, 06 Nov 1994 08:49:37 GMT", true),
            ("W/\"1f-2a\"", false),
            ("\"1f-2b\"", false),
            ("Sun, 06 Nov 1994 08:49:38 GMT", false),
            ("garbage", false),
        ] {
            let applies_here = v.range_applies(&request(&[("if-range", validator)]));
            assert_eq!(applies_here, applies, "{validator}");
        }
        assert!(v.range_applies(&request(&[])));
    }
}
