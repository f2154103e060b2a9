//! The web console: a page to upload, watch and play, served by the binary
//! itself under `/console/` (by `api::console`). Every file is embedded at
//! build time (no other server, no CDN, nothing fetched from the internet);
//! the browser libraries in `vendor/` are the published builds of their npm
//! packages (see vendor-notes.md). The page talks only to the public API,
//! with the key the user pastes in.

use std::sync::OnceLock;

use sha2::{Digest, Sha256};

/// Where the console lives; `/` sends browsers here.
pub const PREFIX: &str = "/console/";

/// One embedded file.
pub struct Asset {
    /// Its path under [`PREFIX`] (empty for the page).
    pub path: &'static str,
    /// Its `Content-Type`.
    pub content_type: &'static str,
    /// Its bytes.
    pub bytes: &'static [u8],
}

const JS: &str = "text/javascript; charset=utf-8";

/// Every file the console is made of.
const ASSETS: &[Asset] = &[
    Asset {
        path: "",
        content_type: "text/html; charset=utf-8",
        bytes: include_bytes!("assets/index.html"),
    },
    Asset {
        path: "console.js",
        content_type: JS,
        bytes: include_bytes!("assets/console.js"),
    },
    Asset {
        path: "console.css",
        content_type: "text/css; charset=utf-8",
        bytes: include_bytes!("assets/console.css"),
    },
    Asset {
        path: "icon.svg",
        content_type: "image/svg+xml",
        bytes: include_bytes!("assets/icon.svg"),
    },
    Asset {
        path: "vendor/hls.light.min.js",
        content_type: JS,
        bytes: include_bytes!("vendor/hls.light.min.js"),
    },
    Asset {
        path: "vendor/tus.min.js",
        content_type: JS,
        bytes: include_bytes!("vendor/tus.min.js"),
    },
];

/// The file at `path` under [`PREFIX`], and its strong `ETag` (the start of
/// its SHA-256, quoted).
pub fn asset(path: &str) -> Option<(&'static Asset, &'static str)> {
    static ETAGS: OnceLock<Vec<String>> = OnceLock::new();
    let etags = ETAGS.get_or_init(|| {
        ASSETS
            .iter()
            .map(|asset| format!("\"{}\"", &hex::encode(Sha256::digest(asset.bytes))[..20]))
            .collect()
    });
    let at = ASSETS.iter().position(|asset| asset.path == path)?;
    Some((&ASSETS[at], &etags[at]))
}

/// The policy the console is served with: the page's own origin for
/// everything, and for media (posters, video, playlists, the storyboard)
/// also the origins of `media_urls`, URLs final storage gives, where they
/// are other ones (a bucket's presigned or public URLs; the configured
/// `base_url`, which serves playlists, when the page was opened at another
/// address). Inline scripts and styles, workers, plugins, frames and
/// `<base>` are refused.
pub fn content_security_policy(media_urls: &[&str]) -> String {
    let mut media = String::from("'self'");
    for origin in media_urls.iter().filter_map(|url| origin(url)) {
        if !media.split(' ').any(|known| known == origin) {
            media.push(' ');
            media.push_str(origin);
        }
    }
    format!(
        "default-src 'self'; script-src 'self'; style-src 'self'; img-src {media} data:; \
         media-src {media} blob:; connect-src {media}; worker-src 'none'; \
         object-src 'none'; base-uri 'none'; frame-ancestors 'none'; form-action 'none'"
    )
}

/// The policy when media origins cannot be put in a header: the page's own only.
pub const SELF_ONLY_POLICY: &str = "default-src 'self'; script-src 'self'; style-src 'self'; \
     img-src 'self' data:; media-src 'self' blob:; connect-src 'self'; worker-src 'none'; \
     object-src 'none'; base-uri 'none'; frame-ancestors 'none'; form-action 'none'";

/// `scheme://host[:port]` of an absolute http(s) URL.
fn origin(url: &str) -> Option<&str> {
    let after_scheme = url
        .strip_prefix("https://")
        .or_else(|| url.strip_prefix("http://"))?;
    let host_len = after_scheme
        .find(['/', '?', '#'])
        .unwrap_or(after_scheme.len());
    let end = url.len() - after_scheme.len() + host_len;
    (host_len > 0).then(|| &url[..end])
}

#[cfg(test)]
mod tests {
    use super::{content_security_policy, origin};

    #[test]
    fn the_policy_adds_each_other_media_origin_once() {
        let policy = content_security_policy(&[
            "https://bucket.example.com/t/poster.jpg?X-Amz-Signature=1",
            "http://127.0.0.1:8080/media/t/hls/master.m3u8",
            "https://bucket.example.com/t/other.jpg",
        ]);
        assert!(
            policy.contains("connect-src 'self' https://bucket.example.com http://127.0.0.1:8080;")
        );
        assert!(policy.contains("script-src 'self';"));
        assert!(policy.contains("worker-src 'none'"));
        assert_eq!(
            content_security_policy(&["/media/t/poster.jpg"]),
            content_security_policy(&[])
        );
    }

    #[test]
    fn the_origin_of_a_media_url() {
        assert_eq!(
            origin("http://127.0.0.1:8080/media/t/poster.jpg"),
            Some("http://127.0.0.1:8080")
        );
        assert_eq!(
            origin("https://bucket.example.com/a/b.jpg?X-Amz-Signature=1"),
            Some("https://bucket.example.com")
        );
        assert_eq!(origin("https://example.com"), Some("https://example.com"));
        assert_eq!(origin("/media/t/poster.jpg"), None);
        assert_eq!(origin("http:///x"), None);
    }
}
