//! Reading what the store answers where `object_store` does not: which
//! failures are refusals no retry fixes, the bucket check's answer, failed
//! requests said without their presigned URL, and the XML of the
//! multipart-upload listing.

use super::S3Config;
use crate::storage::Refusal;

/// What a failed request says about the settings when no retry can fix it:
/// 401 and 403 always; 404 only when the store names the bucket
/// (`NoSuchBucket`), since an aborted multipart upload is worth another try
/// and a key's own not-found is handled where it is expected. `object_store`
/// keeps the store's error body in the error's text, not in a field.
pub(super) fn refusal(e: &object_store::Error, config: &S3Config) -> Option<Refusal> {
    match e {
        object_store::Error::Unauthenticated { .. }
        | object_store::Error::PermissionDenied { .. } => Some(Refusal::Credentials),
        object_store::Error::NotFound { .. } if e.to_string().contains("NoSuchBucket") => {
            Some(Refusal::NoBucket {
                bucket: config.bucket.clone(),
            })
        }
        _ => None,
    }
}

/// What the answer to the bucket check (`status`, the XML error `code`, the
/// `x-amz-bucket-region` header) says about the settings; `None` for a fault
/// that may pass (5xx, throttling).
pub(super) fn check_refusal(
    status: u16,
    code: &str,
    bucket_region: Option<&str>,
    config: &S3Config,
) -> Option<Refusal> {
    let wrong_region = || Refusal::WrongRegion {
        bucket: config.bucket.clone(),
        region: config.region.clone(),
    };
    let region_codes = [
        "PermanentRedirect",
        "AuthorizationHeaderMalformed",
        "AuthorizationQueryParametersError",
        "IllegalLocationConstraintException",
    ];
    match status {
        _ if region_codes.contains(&code) => Some(wrong_region()),
        _ if bucket_region.is_some_and(|r| r != config.region) => Some(wrong_region()),
        301 | 307 => Some(wrong_region()),
        401 | 403 => Some(Refusal::Credentials),
        404 => Some(Refusal::NoBucket {
            bucket: config.bucket.clone(),
        }),
        _ => None,
    }
}

/// A failed request to the store, said without its URL (a presigned one
/// would hand out a working signature) and with its causes.
pub(super) fn request_error(e: reqwest::Error) -> String {
    let e = e.without_url();
    let mut text = e.to_string();
    let mut source = std::error::Error::source(&e);
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

/// `(Key, UploadId)` of each `<Upload>` in a `ListMultipartUploadsResult`.
pub(super) fn multipart_uploads(xml: &str) -> Vec<(String, String)> {
    xml.split("<Upload>")
        .skip(1)
        .filter_map(|block| {
            let block = &block[..block.find("</Upload>")?];
            Some((xml_field(block, "Key")?, xml_field(block, "UploadId")?))
        })
        .collect()
}

/// The text of the first `<tag>` element in `xml`, unescaped.
pub(super) fn xml_field(xml: &str, tag: &str) -> Option<String> {
    let open = format!("<{tag}>");
    let start = xml.find(&open)? + open.len();
    let end = start + xml[start..].find(&format!("</{tag}>"))?;
    Some(xml_unescape(&xml[start..end]))
}

/// Where the next page of a `ListMultipartUploadsResult` starts (its
/// `NextKeyMarker` and `NextUploadIdMarker`), when `IsTruncated` says there is one.
pub(super) fn next_page(xml: &str) -> Option<(String, String)> {
    if xml_field(xml, "IsTruncated")?.trim() != "true" {
        return None;
    }
    Some((
        xml_field(xml, "NextKeyMarker").unwrap_or_default(),
        xml_field(xml, "NextUploadIdMarker").unwrap_or_default(),
    ))
}

/// The five predefined XML entities.
pub(super) fn xml_unescape(text: &str) -> String {
    text.replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&quot;", "\"")
        .replace("&apos;", "'")
        .replace("&amp;", "&")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::s3::config::test_config as config;

    #[test]
    fn multipart_listings_are_read() {
        let xml = r#"<?xml version="1.0" encoding="UTF-8"?>
<ListMultipartUploadsResult><Bucket>b</Bucket><KeyMarker></KeyMarker>
<Upload><Key>media/t1/video.mp4</Key><UploadId>abc&amp;1</UploadId><Initiated>2026-01-01T00:00:00Z</Initiated></Upload>
<Upload><Key>media/t1/hls/720p/seg.ts</Key><UploadId>def</UploadId></Upload>
<IsTruncated>false</IsTruncated></ListMultipartUploadsResult>"#;
        assert_eq!(
            multipart_uploads(xml),
            [
                ("media/t1/video.mp4".to_string(), "abc&1".to_string()),
                ("media/t1/hls/720p/seg.ts".to_string(), "def".to_string()),
            ]
        );
        assert!(multipart_uploads("<ListMultipartUploadsResult/>").is_empty());
        assert_eq!(next_page(xml), None);
        let truncated = "<ListMultipartUploadsResult><IsTruncated>true</IsTruncated><NextKeyMarker>a/b&amp;c</NextKeyMarker><NextUploadIdMarker>u1</NextUploadIdMarker></ListMultipartUploadsResult>";
        assert_eq!(next_page(truncated), Some(("a/b&c".into(), "u1".into())));
    }

    #[test]
    fn check_answers_name_the_setting_to_fix() {
        let c = config();
        let refused = |status, code, region| check_refusal(status, code, region, &c);
        assert_eq!(
            refused(403, "SignatureDoesNotMatch", None),
            Some(Refusal::Credentials)
        );
        assert_eq!(
            refused(403, "InvalidAccessKeyId", Some("us-east-1")),
            Some(Refusal::Credentials)
        );
        let no_bucket = Refusal::NoBucket {
            bucket: "videos".into(),
        };
        assert_eq!(refused(404, "NoSuchBucket", None), Some(no_bucket.clone()));
        let wrong_region = Refusal::WrongRegion {
            bucket: "videos".into(),
            region: "us-east-1".into(),
        };
        assert_eq!(
            refused(301, "PermanentRedirect", Some("eu-west-1")),
            Some(wrong_region.clone())
        );
        assert_eq!(
            refused(400, "AuthorizationQueryParametersError", None),
            Some(wrong_region.clone())
        );
        assert_eq!(
            refused(403, "AccessDenied", Some("eu-west-1")),
            Some(wrong_region.clone())
        );
        assert_eq!(refused(503, "SlowDown", None), None);
        assert_eq!(refused(500, "InternalError", None), None);
        assert!(Refusal::Credentials
            .to_string()
            .contains("s3.secret_access_key"));
        assert!(no_bucket.to_string().contains("s3.bucket"));
        assert!(wrong_region.to_string().contains("s3.region"));
    }

    #[test]
    fn refusals_are_told_from_passing_faults() {
        let answer = |text: &str| -> Box<dyn std::error::Error + Send + Sync> { text.into() };
        let c = config();
        let denied = object_store::Error::PermissionDenied {
            path: "k".into(),
            source: answer("403 Forbidden"),
        };
        assert_eq!(refusal(&denied, &c), Some(Refusal::Credentials));
        let no_bucket = object_store::Error::NotFound {
            path: "k".into(),
            source: answer("404 Not Found: <Error><Code>NoSuchBucket</Code></Error>"),
        };
        assert_eq!(
            refusal(&no_bucket, &c),
            Some(Refusal::NoBucket {
                bucket: "videos".into()
            })
        );
        let no_upload = object_store::Error::NotFound {
            path: "k".into(),
            source: answer("404 Not Found: <Error><Code>NoSuchUpload</Code></Error>"),
        };
        assert_eq!(refusal(&no_upload, &c), None);
        let unavailable = object_store::Error::Generic {
            store: "S3",
            source: answer("503 Service Unavailable"),
        };
        assert_eq!(refusal(&unavailable, &c), None);
    }

    #[tokio::test]
    async fn a_failed_request_is_told_without_its_signed_url() {
        let failed =
            reqwest::get("http://127.0.0.1:1/b?X-Amz-Credential=AKID&X-Amz-Signature=ab12")
                .await
                .unwrap_err();
        let text = super::request_error(failed);
        assert!(!text.contains("AKID") && !text.contains("ab12"), "{text}");
        assert!(text.contains("onnect"), "the cause is kept: {text}");
    }
}
