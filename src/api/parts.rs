//! Which field of the upload form a part is, and the video's file name as
//! sent, read from the part's `Content-Disposition` header. multer reads a
//! name or file name it cannot take (missing, not UTF-8, `filename*=`) as
//! none at all; these look at the raw header to say which it was.

use multer::Field;
use warp::http::header::CONTENT_DISPOSITION;

use super::error::ApiError;
use super::folder::checked_filename;

/// The fields of the upload form.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FormField {
    /// The video file.
    Video,
    /// The collection path.
    Folder,
    /// The upload's own webhook endpoint.
    CallbackUrl,
    /// Any other name: read and ignored, within the text-field limit.
    Other,
}

/// Every field by its name; field names are case-sensitive.
const FIELDS: [(&str, FormField); 3] = [
    ("video", FormField::Video),
    ("folder", FormField::Folder),
    ("callback_url", FormField::CallbackUrl),
];

/// The field `part` is. A part without a name is malformed (RFC 7578 gives
/// every part one); one whose name is a field's in another case is refused,
/// as ignoring it would answer that the field is missing.
pub fn form_field(part: &Field<'_>) -> Result<FormField, ApiError> {
    let Some(name) = part.name() else {
        return Err(ApiError::MalformedBody(unnamed(part).into()));
    };
    for (field, kind) in FIELDS {
        if name == field {
            return Ok(kind);
        }
        if name.eq_ignore_ascii_case(field) {
            // `name` matches `field` but for ASCII case: safe to repeat.
            return Err(ApiError::invalid(
                field,
                format!(
                    "The form has a part named {name}; field names are case-sensitive: use {field}."
                ),
            ));
        }
    }
    Ok(FormField::Other)
}

/// Why multer found no name on `part`.
fn unnamed(part: &Field<'_>) -> &'static str {
    match part.headers().get(CONTENT_DISPOSITION) {
        None => "a part has no Content-Disposition header",
        Some(value) if std::str::from_utf8(value.as_bytes()).is_err() => {
            "a part's Content-Disposition header is not UTF-8"
        }
        Some(_) => "a part's Content-Disposition header has no name",
    }
}

/// The file name of the video part, as sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SentFilename {
    /// No `filename` parameter: the part is not a file.
    Missing,
    /// A `filename` parameter that is not UTF-8.
    NotUtf8,
    /// Only the RFC 5987 `filename*=` form, which RFC 7578 forbids in forms.
    Extended,
    /// The name as sent.
    Given(String),
}

impl SentFilename {
    /// The file name of `part`.
    pub fn of(part: &Field<'_>) -> SentFilename {
        if let Some(name) = part.file_name() {
            return SentFilename::Given(name.to_string());
        }
        let Some(value) = part.headers().get(CONTENT_DISPOSITION) else {
            return SentFilename::Missing;
        };
        let value = value.as_bytes();
        // The part's name was read, so bytes that are not UTF-8 are the file name's.
        if std::str::from_utf8(value).is_err() && contains(value, b"filename") {
            SentFilename::NotUtf8
        } else if contains(value, b"filename*") {
            SentFilename::Extended
        } else {
            SentFilename::Missing
        }
    }

    /// The file name to store, or why it is refused.
    pub fn checked(&self) -> Result<String, String> {
        match self {
            SentFilename::Missing => Err("The video must be a file.".into()),
            SentFilename::NotUtf8 => Err("The video's filename must be UTF-8.".into()),
            SentFilename::Extended => Err(
                "The video's filename must be sent as filename=\"...\" in UTF-8; filename* is not supported."
                    .into(),
            ),
            SentFilename::Given(raw) => checked_filename(raw),
        }
    }
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The first part of a form with `headers` (each ending in CRLF), read by multer.
    async fn with_part<T>(headers: &[u8], read: impl FnOnce(&Field<'_>) -> T) -> T {
        let body = [
            b"--B\r\n".as_slice(),
            headers,
            b"\r\ndata\r\n--B--\r\n".as_slice(),
        ]
        .concat();
        let stream =
            futures_util::stream::iter([Ok::<_, std::io::Error>(bytes::Bytes::from(body))]);
        let mut multipart = multer::Multipart::new(stream, "B");
        let part = multipart.next_field().await.unwrap().unwrap();
        read(&part)
    }

    fn disposition(name: &str) -> Vec<u8> {
        format!("Content-Disposition: form-data; name=\"{name}\"\r\n").into_bytes()
    }

    #[tokio::test]
    async fn parts_are_placed_by_their_exact_name() {
        let field = |name: &str| {
            let headers = disposition(name);
            async move { with_part(&headers, |part| form_field(part).ok()).await }
        };
        assert_eq!(field("video").await, Some(FormField::Video));
        assert_eq!(field("folder").await, Some(FormField::Folder));
        assert_eq!(field("callback_url").await, Some(FormField::CallbackUrl));
        assert_eq!(field("title").await, Some(FormField::Other));
    }

    #[tokio::test]
    async fn names_in_another_case_are_refused_on_their_field() {
        for (sent, name) in [
            ("VIDEO", "video"),
            ("Folder", "folder"),
            ("Callback_URL", "callback_url"),
        ] {
            let refused = with_part(&disposition(sent), form_field).await;
            let Err(ApiError::Validation(errors)) = refused else {
                panic!("{sent}: {refused:?}");
            };
            assert_eq!(
                errors[name],
                [format!(
                    "The form has a part named {sent}; field names are case-sensitive: use {name}."
                )]
            );
        }
    }

    #[tokio::test]
    async fn unnamed_parts_are_told_why() {
        let why = |headers: &'static [u8]| {
            with_part(headers, |part| match form_field(part) {
                Err(ApiError::MalformedBody(why)) => why,
                other => panic!("{other:?}"),
            })
        };
        assert_eq!(
            why(b"Content-Type: text/plain\r\n").await,
            "a part has no Content-Disposition header"
        );
        assert_eq!(
            why(b"Content-Disposition: form-data; filename=\"a.mp4\"\r\n").await,
            "a part's Content-Disposition header has no name"
        );
        assert_eq!(
            why(b"Content-Disposition: form-data; name=\"vid\xe9o\"\r\n").await,
            "a part's Content-Disposition header is not UTF-8"
        );
    }

    #[tokio::test]
    async fn file_names_are_read_as_sent() {
        let name = |headers: &'static [u8]| with_part(headers, SentFilename::of);
        assert_eq!(
            name(b"Content-Disposition: form-data; name=\"video\"; filename=\"a.mp4\"\r\n").await,
            SentFilename::Given("a.mp4".into())
        );
        assert_eq!(
            name(b"Content-Disposition: form-data; name=\"video\"\r\n").await,
            SentFilename::Missing
        );
        assert_eq!(
            name(b"Content-Disposition: form-data; name=\"video\"; filename=\"\xe9.mp4\"\r\n")
                .await,
            SentFilename::NotUtf8
        );
        assert_eq!(
            name(
                b"Content-Disposition: form-data; name=\"video\"; filename*=utf-8''%C3%A9.mp4\r\n"
            )
            .await,
            SentFilename::Extended
        );
        assert_eq!(
            name(b"Content-Type: video/mp4\r\n").await,
            SentFilename::Missing
        );
    }

    #[test]
    fn each_sent_file_name_has_its_message() {
        let message = |sent: SentFilename| sent.checked().unwrap_err();
        assert!(message(SentFilename::Missing).contains("must be a file"));
        assert!(message(SentFilename::NotUtf8).contains("UTF-8"));
        assert!(message(SentFilename::Extended).contains("filename*"));
        assert!(message(SentFilename::Given("a\tb".into())).contains("control characters"));
        assert_eq!(
            SentFilename::Given("a.mp4".into()).checked(),
            Ok("a.mp4".into())
        );
    }
}
