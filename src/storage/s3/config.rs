//! The `[s3]` table: where the bucket is, how to reach it, how hard to try;
//! each setting documents its default and is checked at start.

use serde::{Deserialize, Serialize};
use std::time::Duration;

use super::{MAX_PRESIGN_SECS, MIN_PART_BYTES};
use crate::storage::check_name;

/// The `[s3]` table of the config file: where the bucket is and how to use it.
/// Present, it replaces the local media folder as final storage.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct S3Config {
    /// Endpoint URL, e.g. `http://127.0.0.1:8333` for SeaweedFS or MinIO. Default:
    /// none, which means AWS S3 in `region`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub endpoint: Option<String>,
    /// Region the requests are signed for. Default `us-east-1`.
    pub region: String,
    /// Bucket name; it must exist. Required.
    pub bucket: String,
    /// Access key id. Default: the environment variable `VIDPIPE_S3_ACCESS_KEY_ID`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub access_key_id: Option<String>,
    /// Secret access key. Default: the environment variable `VIDPIPE_S3_SECRET_ACCESS_KEY`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub secret_access_key: Option<String>,
    /// Path-style requests (`endpoint/bucket/key`) instead of virtual-hosted ones
    /// (`bucket.endpoint/key`); most self-hosted stores want `true`. Default false.
    pub path_style: bool,
    /// Folder inside the bucket for every key, e.g. `vidpipe/media`. Default: none (the bucket root).
    pub prefix: String,
    /// Lifetime of presigned playback URLs, in seconds, at most 604800 (7 days). Default 3600.
    pub presign_secs: u64,
    /// Base URL under which the bucket's keys are public (a CDN, or a public bucket),
    /// e.g. `https://media.example.com`; playback URLs are then `{public_base_url}/{key}`,
    /// unsigned. Default: none, playback URLs are presigned.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub public_base_url: Option<String>,
    /// Files at least this large go up as multipart uploads, in bytes. Default 16777216 (16 MiB).
    pub multipart_threshold_bytes: u64,
    /// Size of each multipart part in bytes, at least 5 MiB. Default 8388608 (8 MiB).
    pub part_size_bytes: u64,
    /// Parts of one file uploaded at once. Default 4.
    pub part_concurrency: usize,
    /// Times each request is tried before the upload fails with `storage_error`. Default 8.
    pub max_attempts: u32,
    /// Wait before the first retry, in milliseconds; it doubles with each retry. Default 500.
    pub retry_initial_backoff_ms: u64,
    /// Longest wait between two tries, in milliseconds. Default 30000.
    pub retry_max_backoff_ms: u64,
    /// Time one request (one part, at most) may take, in seconds. Default 300.
    pub request_timeout_secs: u64,
    /// Time to establish a connection, in seconds. Default 10.
    pub connect_timeout_secs: u64,
    /// Largest playlist the API server reads from the bucket to rewrite, in bytes. Default 1048576 (1 MiB).
    pub max_playlist_bytes: u64,
}

impl Default for S3Config {
    fn default() -> Self {
        S3Config {
            endpoint: None,
            region: "us-east-1".into(),
            bucket: String::new(),
            access_key_id: None,
            secret_access_key: None,
            path_style: false,
            prefix: String::new(),
            presign_secs: 3600,
            public_base_url: None,
            multipart_threshold_bytes: 16 * 1024 * 1024,
            part_size_bytes: 8 * 1024 * 1024,
            part_concurrency: 4,
            max_attempts: 8,
            retry_initial_backoff_ms: 500,
            retry_max_backoff_ms: 30_000,
            request_timeout_secs: 300,
            connect_timeout_secs: 10,
            max_playlist_bytes: 1024 * 1024,
        }
    }
}

impl S3Config {
    /// Fills missing credentials from `VIDPIPE_S3_ACCESS_KEY_ID` and `VIDPIPE_S3_SECRET_ACCESS_KEY`.
    pub fn with_env_credentials(mut self) -> S3Config {
        let env = |name: &str| std::env::var(name).ok().filter(|v| !v.is_empty());
        if self.access_key_id.is_none() {
            self.access_key_id = env("VIDPIPE_S3_ACCESS_KEY_ID");
        }
        if self.secret_access_key.is_none() {
            self.secret_access_key = env("VIDPIPE_S3_SECRET_ACCESS_KEY");
        }
        self
    }

    /// The same settings with the secret key hidden, for `config show`.
    pub fn redacted(&self) -> S3Config {
        S3Config {
            secret_access_key: self
                .secret_access_key
                .as_ref()
                .map(|_| "<redacted>".to_string()),
            ..self.clone()
        }
    }

    /// The wait before retry number `retry` (1 for the first).
    pub fn backoff(&self, retry: u32) -> Duration {
        crate::backoff::Backoff {
            first: Duration::from_millis(self.retry_initial_backoff_ms),
            max: Duration::from_millis(self.retry_max_backoff_ms),
        }
        .before_retry(retry)
    }

    /// Checks the values types cannot.
    pub fn validate(&self) -> Result<(), String> {
        let b = &self.bucket;
        let bucket_ok = (3..=63).contains(&b.len())
            && b.bytes()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == b'.' || c == b'-');
        if !bucket_ok {
            return Err(format!(
                "s3.bucket {b:?} must be 3 to 63 lowercase letters, digits, '.' or '-'"
            ));
        }
        if self.region.is_empty() {
            return Err("s3.region must not be empty".into());
        }
        for (name, url) in [
            ("s3.endpoint", &self.endpoint),
            ("s3.public_base_url", &self.public_base_url),
        ] {
            if let Some(url) = url {
                let scheme_ok = url.starts_with("http://") || url.starts_with("https://");
                if !scheme_ok || url.ends_with('/') || reqwest::Url::parse(url).is_err() {
                    return Err(format!(
                        "{name} {url:?} must be an http:// or https:// URL without a trailing slash"
                    ));
                }
            }
        }
        if self.access_key_id.is_none() || self.secret_access_key.is_none() {
            return Err("s3.access_key_id and s3.secret_access_key are required (or VIDPIPE_S3_ACCESS_KEY_ID and VIDPIPE_S3_SECRET_ACCESS_KEY)".into());
        }
        if !self.prefix.is_empty() && check_name(&self.prefix).is_err() {
            return Err(format!(
                "s3.prefix {:?} must be '/'-separated segments of letters, digits, '.', '_' or '-', none starting with '.'",
                self.prefix
            ));
        }
        if !(1..=MAX_PRESIGN_SECS).contains(&self.presign_secs) {
            return Err(format!("s3.presign_secs must be 1 to {MAX_PRESIGN_SECS}"));
        }
        if self.part_size_bytes < MIN_PART_BYTES {
            return Err(format!(
                "s3.part_size_bytes must be at least {MIN_PART_BYTES}"
            ));
        }
        let at_least_one = [
            (
                "s3.multipart_threshold_bytes",
                self.multipart_threshold_bytes,
            ),
            ("s3.part_concurrency", self.part_concurrency as u64),
            ("s3.max_attempts", u64::from(self.max_attempts)),
            ("s3.retry_initial_backoff_ms", self.retry_initial_backoff_ms),
            ("s3.request_timeout_secs", self.request_timeout_secs),
            ("s3.connect_timeout_secs", self.connect_timeout_secs),
            ("s3.max_playlist_bytes", self.max_playlist_bytes),
        ];
        if let Some((name, _)) = at_least_one.iter().find(|(_, v)| *v == 0) {
            return Err(format!("{name} must be at least 1"));
        }
        if self.retry_max_backoff_ms < self.retry_initial_backoff_ms {
            return Err(
                "s3.retry_max_backoff_ms must be at least s3.retry_initial_backoff_ms".into(),
            );
        }
        Ok(())
    }
}

/// Settings of a bucket on a local endpoint, for the unit tests of the `[s3]` code.
#[cfg(test)]
pub(super) fn test_config() -> S3Config {
    S3Config {
        endpoint: Some("http://127.0.0.1:9".into()),
        bucket: "videos".into(),
        access_key_id: Some("AKIDEXAMPLE".into()),
        secret_access_key: Some("secret".into()),
        path_style: true,
        prefix: "media/v1".into(),
        ..S3Config::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use test_config as config;

    #[test]
    fn validation_names_the_bad_setting() {
        assert_eq!(config().validate(), Ok(()));
        let bad = |c: S3Config| c.validate().unwrap_err();
        assert!(bad(S3Config {
            bucket: "A".into(),
            ..config()
        })
        .contains("s3.bucket"));
        assert!(bad(S3Config {
            prefix: "../x".into(),
            ..config()
        })
        .contains("s3.prefix"));
        assert!(bad(S3Config {
            presign_secs: 0,
            ..config()
        })
        .contains("presign_secs"));
        assert!(bad(S3Config {
            part_size_bytes: 1024,
            ..config()
        })
        .contains("part_size"));
        assert!(bad(S3Config {
            secret_access_key: None,
            ..config()
        })
        .contains("secret"));
        let slash = S3Config {
            public_base_url: Some("https://cdn.test/".into()),
            ..config()
        };
        assert!(bad(slash).contains("public_base_url"));
    }

    #[test]
    fn backoff_doubles_up_to_the_cap() {
        let c = S3Config {
            retry_initial_backoff_ms: 100,
            retry_max_backoff_ms: 500,
            ..config()
        };
        let waits: Vec<u64> = (1..=5).map(|n| c.backoff(n).as_millis() as u64).collect();
        assert_eq!(waits, [100, 200, 400, 500, 500]);
    }

    #[test]
    fn the_example_file_documents_every_setting_at_its_default() {
        let example = include_str!("../../../vidpipe.example.toml");
        let block = example.split("# [s3]\n").nth(1).unwrap();
        let settings: String = block
            .lines()
            .filter_map(|line| line.strip_prefix("#   "))
            .filter(|line| line.contains(" = "))
            .map(|line| format!("{line}\n"))
            .collect();
        let documented: S3Config = toml::from_str(&settings).unwrap();
        let expected = S3Config {
            endpoint: documented.endpoint.clone(),
            bucket: documented.bucket.clone(),
            access_key_id: documented.access_key_id.clone(),
            secret_access_key: documented.secret_access_key.clone(),
            prefix: documented.prefix.clone(),
            public_base_url: documented.public_base_url.clone(),
            ..S3Config::default()
        };
        assert_eq!(documented, expected);
        assert!(documented.public_base_url.is_some() && documented.endpoint.is_some());
    }
}
