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
//!
//! The settings are in `config` ([`S3Config`]); how the store's answers
//! are read where `object_store` does not read them (refusals, the bucket
//! check, the multipart listing's XML) in `answers`.

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
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use super::{
    check_name, check_token, content_type, names_other_files, FinalStorage, MediaAccess,
    OutputFile, StorageError,
};

mod answers;
mod config;

use answers::{check_refusal, multipart_uploads, next_page, refusal, request_error, xml_field};
pub use config::S3Config;

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
        if names_other_files(name) {
            // Playlists and the storyboard's WebVTT come from the API server,
            // rewritten with a signature per reference.
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

#[cfg(test)]
mod tests {
    use super::config::test_config as config;
    use super::*;

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
        assert_eq!(
            storage.url("http://api.test", "tok", "storyboard.vtt"),
            "http://api.test/media/tok/storyboard.vtt"
        );
        let sprite = storage.url("http://api.test", "tok", "storyboard.jpg");
        assert!(sprite.contains("X-Amz-Signature="), "{sprite}");
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
    fn content_types_follow_extensions() {
        assert_eq!(content_type("video.mp4"), "video/mp4");
        assert_eq!(
            content_type("hls/master.m3u8"),
            "application/vnd.apple.mpegurl"
        );
        assert_eq!(content_type("hls/720p/seg_00000.ts"), "video/mp2t");
        assert_eq!(content_type("poster.jpg"), "image/jpeg");
        assert_eq!(content_type("storyboard.vtt"), "text/vtt");
    }
}
