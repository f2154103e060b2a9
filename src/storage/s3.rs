//! Final storage in an S3-compatible bucket (AWS S3, SeaweedFS, MinIO, ...)
//! through `object_store`.
//!
//! An upload's files go to `{prefix}/{token}/{name}`; large ones as multipart
//! uploads, which the store shows only once complete. A small marker object,
//! `{prefix}/{token}/.complete`, is written last: [`FinalStorage::contains`]
//! and playback through the API server rely on it, so a set of objects is
//! visible only once every one of them is stored. A `put` that was cut off
//! (a crash, a restart) leaves no marker and is simply done again: objects
//! are overwritten, then the marker is written.
//!
//! Every request to the store is retried with exponential backoff
//! (`max_attempts`, `retry_initial_backoff_ms`, `retry_max_backoff_ms`); when
//! the attempts run out the error goes back to the uploader, which fails the
//! upload with `storage_error`. A refusal no retry fixes (401/403, a missing
//! bucket) fails at once, as [`StorageError::Refused`] naming the setting.
//! [`FinalStorage::check`] (at start, and behind `/readyz`) lists one key to
//! see the credentials, bucket and region work before any upload needs them.
//!
//! A crash in the middle of a multipart upload leaves its parts in the
//! bucket, invisible but stored (and billed). At the next start the
//! multipart uploads under the folders of the uploads that were being stored
//! are listed and aborted before those uploads are stored again.
//!
//! The trait is sync (callers are on blocking threads); each call drives the
//! async client on the server's Tokio runtime with `Handle::block_on`.

use std::future::Future;
use std::io::Read;
use std::sync::Arc;
use std::time::Duration;

use futures_util::{FutureExt, StreamExt};
use object_store::aws::{AmazonS3, AmazonS3Builder};
use object_store::multipart::MultipartStore;
use object_store::path::Path as ObjectPath;
use object_store::signer::{Method, SignedUrlOptions, Signer};
use object_store::{
    Attribute, AttributeValue, Attributes, ClientOptions, ObjectStore, ObjectStoreExt,
    PutMultipartOptions, PutOptions, PutPayload, RetryConfig, WriteMultipart,
};
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use super::{
    check_name, check_token, content_type, FinalStorage, MediaAccess, OutputFile, Refusal,
    StorageError,
};

/// Name of the marker object written after every other object of an upload.
pub const MARKER: &str = ".complete";

/// Smallest part S3 accepts in a multipart upload (every part but the last).
const MIN_PART_BYTES: u64 = 5 * 1024 * 1024;

/// Most multipart uploads one page of `ListMultipartUploads` holds (S3's limit).
const MAX_LISTING_PAGE: usize = 1000;

/// Most pages of one listing read before it is given up.
const MAX_LISTING_PAGES: usize = 10_000;

/// Longest the bucket check waits for its one small answer (less when
/// `request_timeout_secs` is less); slower, the store is not ready.
const CHECK_TIMEOUT: Duration = Duration::from_secs(10);

/// Longest lifetime SigV4 allows a presigned URL (7 days).
const MAX_PRESIGN_SECS: u64 = 7 * 24 * 3600;

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

/// Why one try failed: worth another try, or not.
enum TryError {
    /// The store failed or could not be reached.
    Store(object_store::Error),
    /// The local file could not be read; trying again will not help.
    Local(std::io::Error),
}

impl From<object_store::Error> for TryError {
    fn from(e: object_store::Error) -> Self {
        TryError::Store(e)
    }
}

impl From<std::io::Error> for TryError {
    fn from(e: std::io::Error) -> Self {
        TryError::Local(e)
    }
}

/// Final storage in an S3-compatible bucket.
pub struct S3Storage {
    /// The client.
    store: Arc<AmazonS3>,
    /// Validated settings.
    config: S3Config,
    /// The server's runtime, which drives the client for the sync trait calls.
    runtime: tokio::runtime::Handle,
    /// Cancelled when the server stops: requests and retries are abandoned.
    stop: CancellationToken,
    /// Multipart uploads asked for per page of a listing.
    listing_page: usize,
    /// Injected for tests: a wait after each file stored.
    put_delay: Option<Duration>,
}

impl S3Storage {
    /// A client for the configured bucket. Must be called inside a Tokio runtime,
    /// which then runs every request. Makes no request. Once `stop` is
    /// cancelled, every call in progress or to come ends with
    /// [`StorageError::Interrupted`].
    pub fn new(config: &S3Config, stop: CancellationToken) -> Result<S3Storage, StorageError> {
        config.validate().map_err(StorageError::Config)?;
        let runtime = tokio::runtime::Handle::try_current()
            .map_err(|e| StorageError::Config(format!("S3 storage needs a Tokio runtime: {e}")))?;
        let options = ClientOptions::new()
            .with_timeout(Duration::from_secs(config.request_timeout_secs))
            .with_connect_timeout(Duration::from_secs(config.connect_timeout_secs));
        // Retries are ours (bounded, logged, and including multipart uploads as a whole).
        let retry = RetryConfig {
            max_retries: 0,
            ..RetryConfig::default()
        };
        let mut builder = AmazonS3Builder::new()
            .with_region(&config.region)
            .with_bucket_name(&config.bucket)
            .with_access_key_id(config.access_key_id.clone().unwrap_or_default())
            .with_secret_access_key(config.secret_access_key.clone().unwrap_or_default())
            .with_virtual_hosted_style_request(!config.path_style)
            .with_client_options(options)
            .with_retry(retry);
        if let Some(endpoint) = &config.endpoint {
            builder = builder
                .with_endpoint(endpoint)
                .with_allow_http(endpoint.starts_with("http://"));
        }
        let store = builder
            .build()
            .map_err(|e| StorageError::Config(format!("S3 configuration: {e}")))?;
        Ok(S3Storage {
            store: Arc::new(store),
            config: config.clone(),
            runtime,
            stop,
            listing_page: MAX_LISTING_PAGE,
            put_delay: None,
        })
    }

    /// The key of `name` in the folder of `token`.
    fn key(&self, token: &str, name: &str) -> String {
        match self.config.prefix.trim_matches('/') {
            "" => format!("{token}/{name}"),
            prefix => format!("{prefix}/{token}/{name}"),
        }
    }

    /// Runs `attempt` until it succeeds, a local error or a refusal (see
    /// [`refusal`]) stops it, or the configured attempts are used up, waiting
    /// with exponential backoff. Timeouts, 5xx and dropped connections are retried.
    async fn retrying<T, F, Fut>(&self, what: &str, mut attempt: F) -> Result<T, StorageError>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, TryError>>,
    {
        let mut tries = 0;
        loop {
            tries += 1;
            let tried = tokio::select! {
                tried = attempt() => tried,
                () = self.stop.cancelled() => return Err(StorageError::Interrupted),
            };
            let source = match tried {
                Ok(value) => return Ok(value),
                Err(TryError::Local(e)) => return Err(StorageError::Io(e)),
                Err(TryError::Store(source)) => source,
            };
            // A refusal stays until an operator acts: waiting only delays the failure.
            if let Some(refusal) = refusal(&source, &self.config) {
                return Err(StorageError::Refused {
                    what: what.to_string(),
                    refusal,
                    answer: source.to_string(),
                });
            }
            if tries >= self.config.max_attempts {
                return Err(StorageError::Store {
                    what: what.to_string(),
                    tries,
                    source,
                });
            }
            let wait = self.config.backoff(tries);
            warn!(what, tries, wait_ms = wait.as_millis() as u64, error = %source, "object store request failed; retrying");
            tokio::select! {
                () = tokio::time::sleep(wait) => {}
                () = self.stop.cancelled() => return Err(StorageError::Interrupted),
            }
        }
    }

    async fn is_complete(&self, token: &str) -> Result<bool, StorageError> {
        let marker = ObjectPath::from(self.key(token, MARKER));
        self.retrying("check completion marker", || async {
            match self.store.head(&marker).await {
                Ok(_) => Ok(true),
                Err(object_store::Error::NotFound { .. }) => Ok(false),
                Err(e) => Err(e.into()),
            }
        })
        .await
    }

    /// Uploads one file: one request below the multipart threshold, else a
    /// multipart upload that is aborted if any part fails.
    async fn upload(&self, path: &ObjectPath, file: &OutputFile) -> Result<(), TryError> {
        let attributes = Attributes::from_iter([(
            Attribute::ContentType,
            AttributeValue::from(content_type(&file.name)),
        )]);
        let size = std::fs::metadata(&file.path)?.len();
        if size < self.config.multipart_threshold_bytes {
            let bytes = std::fs::read(&file.path)?;
            let options = PutOptions {
                attributes,
                ..PutOptions::default()
            };
            self.store
                .put_opts(path, PutPayload::from(bytes), options)
                .await?;
            return Ok(());
        }
        let options = PutMultipartOptions {
            attributes,
            ..PutMultipartOptions::default()
        };
        let upload = self.store.put_multipart_opts(path, options).await?;
        let part_size = usize::try_from(self.config.part_size_bytes).unwrap_or(usize::MAX);
        let mut writer = WriteMultipart::new_with_chunk_size(upload, part_size);
        let result = self.write_parts(&mut writer, file, part_size).await;
        crate::faults::crash_if(crate::faults::CrashPoint::MidMultipart);
        match result {
            Ok(()) => {
                writer.finish().await?;
                Ok(())
            }
            Err(e) => {
                // Parts already sent are discarded by the store; never visible.
                let _ = writer.abort().await;
                Err(e)
            }
        }
    }

    async fn write_parts(
        &self,
        writer: &mut WriteMultipart,
        file: &OutputFile,
        part_size: usize,
    ) -> Result<(), TryError> {
        let mut source = std::fs::File::open(&file.path)?;
        let mut buffer = vec![0u8; part_size];
        loop {
            let mut filled = 0;
            while filled < part_size {
                let n = source.read(&mut buffer[filled..])?;
                if n == 0 {
                    break;
                }
                filled += n;
            }
            if filled == 0 {
                return Ok(());
            }
            writer
                .wait_for_capacity(self.config.part_concurrency)
                .await?;
            writer.write(&buffer[..filled]);
        }
    }

    async fn put_async(&self, token: &str, files: &[OutputFile]) -> Result<(), StorageError> {
        if self.is_complete(token).await? {
            return Ok(());
        }
        for file in files {
            let path = ObjectPath::from(self.key(token, &file.name));
            let what = format!("upload {path}");
            self.retrying(&what, || self.upload(&path, file)).await?;
            crate::faults::crash_if(crate::faults::CrashPoint::MidStoragePut);
            if let Some(delay) = self.put_delay {
                tokio::time::sleep(delay).await;
            }
        }
        let marker = ObjectPath::from(self.key(token, MARKER));
        let listing = serde_json::json!({
            "files": files.iter().map(|f| f.name.as_str()).collect::<Vec<_>>(),
        });
        let body = PutPayload::from(listing.to_string().into_bytes());
        self.retrying("write completion marker", || async {
            self.store.put(&marker, body.clone()).await?;
            Ok(())
        })
        .await?;
        info!(token, files = files.len(), bucket = %self.config.bucket, "stored in object storage");
        Ok(())
    }

    /// The multipart uploads in progress under `token`'s folder, page by
    /// page as the store answers `ListMultipartUploads` (which `object_store`
    /// does not offer; sent as a presigned request), following `IsTruncated`.
    #[doc(hidden)]
    pub async fn interrupted_uploads(
        &self,
        token: &str,
    ) -> Result<Vec<Vec<(String, String)>>, StorageError> {
        let err = |e: &dyn std::fmt::Display| StorageError::Request {
            what: format!("listing the multipart uploads of {token}"),
            detail: e.to_string(),
        };
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(self.config.request_timeout_secs))
            .build()
            .map_err(|e| err(&e))?;
        let prefix = self.key(token, "");
        let page_size = self.listing_page.to_string();
        let mut pages = Vec::new();
        let mut after: Option<(String, String)> = None;
        loop {
            let mut query = vec![
                ("uploads", ""),
                ("prefix", prefix.as_str()),
                ("max-uploads", page_size.as_str()),
            ];
            if let Some((key, upload_id)) = &after {
                query.push(("key-marker", key));
                query.push(("upload-id-marker", upload_id));
            }
            let url = self.bucket_url(query).await.map_err(|e| err(&e))?;
            let response = client
                .get(url)
                .send()
                .await
                .map_err(|e| err(&request_error(e)))?;
            let status = response.status();
            let body = response.text().await.map_err(|e| err(&request_error(e)))?;
            if !status.is_success() {
                return Err(err(&format!("HTTP {status}: {body}")));
            }
            let page: Vec<(String, String)> = multipart_uploads(&body)
                .into_iter()
                .filter(|(key, _)| key.starts_with(&prefix))
                .collect();
            pages.push(page);
            match next_page(&body) {
                None => return Ok(pages),
                // A store that says there is more but not where would be listed forever.
                Some(next) if Some(&next) == after.as_ref() || pages.len() >= MAX_LISTING_PAGES => {
                    return Err(err(&"the listing does not advance"));
                }
                Some(next) => after = Some(next),
            }
        }
    }

    /// Aborts every multipart upload in progress under `token`'s folder. Returns how many.
    async fn abort_interrupted(&self, token: &str) -> Result<usize, StorageError> {
        let mut aborted = 0;
        for (key, upload_id) in self.interrupted_uploads(token).await?.into_iter().flatten() {
            let path = ObjectPath::from(key.as_str());
            match self.store.abort_multipart(&path, &upload_id).await {
                Ok(()) | Err(object_store::Error::NotFound { .. }) => {
                    info!(key, "aborted an interrupted multipart upload");
                    aborted += 1;
                }
                Err(source) => {
                    return Err(StorageError::Store {
                        what: format!("aborting the multipart upload of {key}"),
                        tries: 1,
                        source,
                    })
                }
            }
        }
        Ok(aborted)
    }

    /// A presigned GET of the bucket itself with `query`: the requests
    /// `object_store` does not offer (a bounded listing, the multipart
    /// uploads in progress), sent as they are so that the answer is read whole.
    async fn bucket_url<'a>(
        &self,
        query: impl IntoIterator<Item = (&'a str, &'a str)>,
    ) -> Result<reqwest::Url, object_store::Error> {
        let options = SignedUrlOptions::default().with_query(query);
        self.store
            .signed_url_opts(
                Method::GET,
                &ObjectPath::from(""),
                Duration::from_secs(300),
                &options,
            )
            .await
    }

    /// Waits `delay` after each file stored, for tests of faults mid-upload.
    #[doc(hidden)]
    pub fn with_put_delay(mut self, delay: Option<Duration>) -> S3Storage {
        self.put_delay = delay;
        self
    }

    /// Lists at most one key under the prefix: a cheap authenticated request
    /// that a wrong key or secret gets 403 for, a missing bucket 404
    /// `NoSuchBucket`, a wrong region a redirect or 400 (a HEAD of a key cannot
    /// tell a missing bucket from a missing key). Sent presigned, so that the
    /// status and the store's error code are read as they are.
    async fn check_async(&self) -> Result<(), StorageError> {
        let what = format!("checking bucket {}", self.config.bucket);
        let failed = |detail: String| StorageError::Request {
            what: what.clone(),
            detail,
        };
        let timeout = CHECK_TIMEOUT.min(Duration::from_secs(self.config.request_timeout_secs));
        let client = reqwest::Client::builder()
            .timeout(timeout)
            .connect_timeout(Duration::from_secs(self.config.connect_timeout_secs))
            // A redirect to another region's endpoint is an answer, not a way on.
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|e| failed(e.to_string()))?;
        let prefix = match self.config.prefix.trim_matches('/') {
            "" => String::new(),
            prefix => format!("{prefix}/"),
        };
        let query = [
            ("list-type", "2"),
            ("max-keys", "1"),
            ("prefix", prefix.as_str()),
        ];
        let url = self
            .bucket_url(query)
            .await
            .map_err(|e| failed(e.to_string()))?;
        let response = client
            .get(url)
            .send()
            .await
            .map_err(|e| failed(request_error(e)))?;
        let status = response.status();
        let bucket_region = response
            .headers()
            .get("x-amz-bucket-region")
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        let body = response
            .text()
            .await
            .map_err(|e| failed(request_error(e)))?;
        if status.is_success() {
            return Ok(());
        }
        let code = xml_field(&body, "Code").unwrap_or_default();
        let mut answer = format!("HTTP {status} {code}");
        if let Some(region) = &bucket_region {
            answer.push_str(&format!(", bucket region {region}"));
        }
        match check_refusal(
            status.as_u16(),
            &code,
            bucket_region.as_deref(),
            &self.config,
        ) {
            Some(refusal) => Err(StorageError::Refused {
                what,
                refusal,
                answer,
            }),
            None => Err(failed(answer)),
        }
    }

    /// Lists multipart uploads `n` to a page (S3's own limit is 1000), for tests of the paging.
    #[doc(hidden)]
    pub fn with_listing_page(mut self, n: usize) -> S3Storage {
        self.listing_page = n.max(1);
        self
    }

    /// Removes every object of `token` and aborts its multipart uploads in
    /// progress. One try: the cleaner tries again. Ends at once when the
    /// server stops.
    async fn remove_async(&self, token: &str) -> Result<(), StorageError> {
        tokio::select! {
            removed = self.remove_objects(token) => removed?,
            () = self.stop.cancelled() => return Err(StorageError::Interrupted),
        }
        // Stray parts are not objects: a store that will not list them (a key
        // without that permission) leaves them to the bucket's lifecycle rule.
        tokio::select! {
            aborted = self.abort_interrupted(token) => {
                if let Err(e) = aborted {
                    warn!(token, error = %e, "cannot clear the multipart uploads of a removed upload");
                }
                Ok(())
            }
            () = self.stop.cancelled() => Err(StorageError::Interrupted),
        }
    }

    async fn remove_objects(&self, token: &str) -> Result<(), StorageError> {
        let err = |source| StorageError::Store {
            what: format!("removing {token}"),
            tries: 1,
            source,
        };
        // The marker first: the set stops being visible before any file goes.
        match self
            .store
            .delete(&ObjectPath::from(self.key(token, MARKER)))
            .await
        {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => {}
            Err(e) => return Err(err(e)),
        }
        let folder = ObjectPath::from(self.key(token, "").trim_end_matches('/'));
        let mut listing = self.store.list(Some(&folder));
        while let Some(meta) = listing.next().await {
            let meta = meta.map_err(err)?;
            match self.store.delete(&meta.location).await {
                Ok(()) | Err(object_store::Error::NotFound { .. }) => {}
                Err(e) => return Err(err(e)),
            }
        }
        Ok(())
    }

    async fn read_async(&self, key: &str, max_bytes: u64) -> Result<Option<Vec<u8>>, StorageError> {
        let path = ObjectPath::from(key);
        let read_failed = |source| StorageError::Store {
            what: format!("reading {key}"),
            tries: 1,
            source,
        };
        let result = match self.store.get(&path).await {
            Ok(result) => result,
            Err(object_store::Error::NotFound { .. }) => return Ok(None),
            Err(source) => return Err(read_failed(source)),
        };
        if result.meta.size > max_bytes {
            return Err(StorageError::TooLarge {
                name: key.to_string(),
                size: result.meta.size,
                limit: max_bytes,
            });
        }
        let bytes = result.bytes().await.map_err(read_failed)?;
        Ok(Some(bytes.to_vec()))
    }

    /// A presigned GET URL for `key`, valid for the configured lifetime.
    fn presign(&self, key: &str) -> Result<String, StorageError> {
        let lifetime = Duration::from_secs(self.config.presign_secs);
        // Signing with static credentials is pure computation: the future is ready at once.
        match self
            .store
            .signed_url(Method::GET, &ObjectPath::from(key), lifetime)
            .now_or_never()
        {
            Some(Ok(url)) => Ok(url.to_string()),
            Some(Err(e)) => Err(StorageError::Request {
                what: format!("presigning {key}"),
                detail: e.to_string(),
            }),
            None => Err(StorageError::Request {
                what: format!("presigning {key}"),
                detail: "credentials not ready".into(),
            }),
        }
    }
}

impl FinalStorage for S3Storage {
    fn put(&self, token: &str, files: &[OutputFile]) -> Result<(), StorageError> {
        check_token(token)?;
        for file in files {
            check_name(&file.name)?;
        }
        self.runtime.block_on(self.put_async(token, files))
    }

    fn contains(&self, token: &str) -> Result<bool, StorageError> {
        check_token(token)?;
        self.runtime.block_on(self.is_complete(token))
    }

    fn remove(&self, token: &str) -> Result<(), StorageError> {
        check_token(token)?;
        self.runtime.block_on(self.remove_async(token))
    }

    fn check(&self) -> Result<(), StorageError> {
        self.runtime.block_on(async {
            tokio::select! {
                checked = self.check_async() => checked,
                () = self.stop.cancelled() => Err(StorageError::Interrupted),
            }
        })
    }

    /// Aborts the multipart uploads a crash left under these tokens' folders.
    /// A store that cannot be reached now is not an error: the parts stay
    /// until the next start (or the bucket's lifecycle rule).
    fn clean_interrupted(&self, storing: &[&str]) -> Result<usize, StorageError> {
        let mut aborted = 0;
        for token in storing {
            check_token(token)?;
            match self.runtime.block_on(self.abort_interrupted(token)) {
                Ok(n) => aborted += n,
                Err(e) => {
                    warn!(token, error = %e, "cannot clear interrupted multipart uploads")
                }
            }
        }
        Ok(aborted)
    }

    fn url(&self, base_url: &str, token: &str, name: &str) -> String {
        let key = self.key(token, name);
        if let Some(public) = &self.config.public_base_url {
            return format!("{public}/{key}");
        }
        let api_url = format!("{base_url}/media/{token}/{name}");
        if name.ends_with(".m3u8") {
            // Playlists come from the API server, rewritten with a signature per reference.
            return api_url;
        }
        self.presign(&key).unwrap_or_else(|e| {
            warn!(error = %e, "cannot presign; pointing at the API server");
            api_url
        })
    }

    fn media_access(&self) -> MediaAccess {
        if self.config.public_base_url.is_some() {
            MediaAccess::Public
        } else {
            MediaAccess::Presigned
        }
    }

    fn read_small(
        &self,
        token: &str,
        name: &str,
        max_bytes: u64,
    ) -> Result<Option<Vec<u8>>, StorageError> {
        check_token(token)?;
        check_name(name)?;
        let key = self.key(token, name);
        self.runtime.block_on(self.read_async(&key, max_bytes))
    }
}

/// What a failed request says about the settings when no retry can fix it:
/// 401 and 403 always; 404 only when the store names the bucket
/// (`NoSuchBucket`), since an aborted multipart upload is worth another try
/// and a key's own not-found is handled where it is expected. `object_store`
/// keeps the store's error body in the error's text, not in a field.
fn refusal(e: &object_store::Error, config: &S3Config) -> Option<Refusal> {
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
fn check_refusal(
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
fn request_error(e: reqwest::Error) -> String {
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
fn multipart_uploads(xml: &str) -> Vec<(String, String)> {
    xml.split("<Upload>")
        .skip(1)
        .filter_map(|block| {
            let block = &block[..block.find("</Upload>")?];
            Some((xml_field(block, "Key")?, xml_field(block, "UploadId")?))
        })
        .collect()
}

/// The text of the first `<tag>` element in `xml`, unescaped.
fn xml_field(xml: &str, tag: &str) -> Option<String> {
    let open = format!("<{tag}>");
    let start = xml.find(&open)? + open.len();
    let end = start + xml[start..].find(&format!("</{tag}>"))?;
    Some(xml_unescape(&xml[start..end]))
}

/// Where the next page of a `ListMultipartUploadsResult` starts (its
/// `NextKeyMarker` and `NextUploadIdMarker`), when `IsTruncated` says there is one.
fn next_page(xml: &str) -> Option<(String, String)> {
    if xml_field(xml, "IsTruncated")?.trim() != "true" {
        return None;
    }
    Some((
        xml_field(xml, "NextKeyMarker").unwrap_or_default(),
        xml_field(xml, "NextUploadIdMarker").unwrap_or_default(),
    ))
}

/// The five predefined XML entities.
fn xml_unescape(text: &str) -> String {
    text.replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&quot;", "\"")
        .replace("&apos;", "'")
        .replace("&amp;", "&")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> S3Config {
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

    #[tokio::test]
    async fn urls_are_presigned_public_or_through_the_api_for_playlists() {
        let storage = S3Storage::new(&config(), CancellationToken::new()).unwrap();
        assert_eq!(storage.media_access(), MediaAccess::Presigned);
        let url = storage.url("http://api.test", "tok", "video.mp4");
        assert!(
            url.starts_with("http://127.0.0.1:9/videos/media/v1/tok/video.mp4?"),
            "{url}"
        );
        for part in [
            "X-Amz-Signature=",
            "X-Amz-Expires=3600",
            "X-Amz-Credential=AKIDEXAMPLE",
        ] {
            assert!(url.contains(part), "{url}");
        }
        assert_eq!(
            storage.url("http://api.test", "tok", "hls/master.m3u8"),
            "http://api.test/media/tok/hls/master.m3u8"
        );
        let public = S3Storage::new(
            &S3Config {
                public_base_url: Some("https://cdn.test".into()),
                ..config()
            },
            CancellationToken::new(),
        )
        .unwrap();
        assert_eq!(public.media_access(), MediaAccess::Public);
        assert_eq!(
            public.url("http://api.test", "tok", "hls/master.m3u8"),
            "https://cdn.test/media/v1/tok/hls/master.m3u8"
        );
    }

    #[test]
    fn the_example_file_documents_every_setting_at_its_default() {
        let example = include_str!("../../vidpipe.example.toml");
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

    #[test]
    fn content_types_follow_extensions() {
        assert_eq!(content_type("video.mp4"), "video/mp4");
        assert_eq!(
            content_type("hls/master.m3u8"),
            "application/vnd.apple.mpegurl"
        );
        assert_eq!(content_type("hls/720p/seg_00000.ts"), "video/mp2t");
        assert_eq!(content_type("poster.jpg"), "image/jpeg");
    }
}
