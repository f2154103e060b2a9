//! Final storage: where finished outputs live for playback, behind one small trait.
//! [`local`] keeps them in a folder the API server serves; [`s3`] in any
//! S3-compatible bucket, with [`playlist`] rewriting HLS playlists for presigned URLs.
//! [`check`] keeps the outcome of [`FinalStorage::check`] for the start-up check and `/readyz`.

pub mod check;
pub mod local;
pub mod playlist;
pub mod s3;

use std::path::PathBuf;

pub use local::LocalStorage;

/// Errors of a storage backend. Each ends an upload with `storage_error`,
/// except [`StorageError::Interrupted`], after which the upload is stored
/// again at the next start.
#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    /// A local file or folder failed (the local backend, or reading an output to send).
    #[error("storage error: {0}")]
    Io(#[from] std::io::Error),
    /// The object store failed at every attempt.
    #[error("storage error: {what}: object store failed {tries} times; last error: {source}")]
    Store {
        /// What was being done.
        what: String,
        /// Attempts made.
        tries: u32,
        /// The last failure.
        source: object_store::Error,
    },
    /// A request `object_store` does not make itself (listing multipart uploads) failed.
    #[error("storage error: {what}: {detail}")]
    Request {
        /// What was being done.
        what: String,
        /// What went wrong.
        detail: String,
    },
    /// A name that cannot be a storage path.
    #[error("storage error: invalid {what} {name:?}")]
    InvalidName {
        /// `storage token` or `output name`.
        what: &'static str,
        /// The name.
        name: String,
    },
    /// A stored file is larger than the caller reads.
    #[error("storage error: {name} is {size} bytes, more than the limit of {limit}")]
    TooLarge {
        /// The file.
        name: String,
        /// Its size.
        size: u64,
        /// The limit.
        limit: u64,
    },
    /// The backend cannot do this (reading files of a backend served from disk).
    #[error("storage error: {0}")]
    Unsupported(&'static str),
    /// The settings cannot make a client.
    #[error("storage error: {0}")]
    Config(String),
    /// The object store refused the request for a reason no retry fixes: the
    /// settings (or the bucket, or its policy) must change. Not retried.
    #[error("storage error: {what}: {refusal}; the store answered: {answer}")]
    Refused {
        /// What was being done.
        what: String,
        /// What the refusal means for the settings.
        refusal: Refusal,
        /// The store's own words (status and error code).
        answer: String,
    },
    /// The server is stopping: the work was abandoned, to be done again at the next start.
    #[error("storage error: interrupted by the server stopping")]
    Interrupted,
}

/// Why an object store refuses every request until an operator acts; each names the setting to check.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    /// 401 or 403: a wrong key or secret, or a key the bucket's policy does not admit.
    #[error("the object store refused the credentials: check s3.access_key_id and s3.secret_access_key (or VIDPIPE_S3_ACCESS_KEY_ID/VIDPIPE_S3_SECRET_ACCESS_KEY), and that the bucket's policy lets this key list and write it")]
    Credentials,
    /// 404 `NoSuchBucket`.
    #[error("bucket {bucket} does not exist: check s3.bucket (and s3.endpoint / s3.region)")]
    NoBucket {
        /// The configured bucket.
        bucket: String,
    },
    /// The bucket lives in another region than the one requests are signed for.
    #[error("bucket {bucket} is not in region {region}: check s3.region (and s3.endpoint)")]
    WrongRegion {
        /// The configured bucket.
        bucket: String,
        /// The configured region.
        region: String,
    },
}

impl StorageError {
    /// True when the cause is a full local disk.
    pub fn is_disk_full(&self) -> bool {
        matches!(self, StorageError::Io(e) if crate::layout::is_disk_full(e))
    }
}

/// A storage token: the random name of one upload's folder, letters and digits only.
pub fn check_token(token: &str) -> Result<(), StorageError> {
    if token.is_empty() || !token.bytes().all(|b| b.is_ascii_alphanumeric()) {
        return Err(StorageError::InvalidName {
            what: "storage token",
            name: token.to_string(),
        });
    }
    Ok(())
}

/// A file name inside an upload's folder: `/`-separated segments of letters,
/// digits, `.`, `_` and `-`, none empty or starting with `.` (such names are
/// never served, and need no escaping in paths, URLs or signatures).
pub fn check_name(name: &str) -> Result<(), StorageError> {
    let valid = !name.is_empty()
        && name.split('/').all(|s| {
            !s.is_empty()
                && !s.starts_with('.')
                && s.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
        });
    if !valid {
        return Err(StorageError::InvalidName {
            what: "output name",
            name: name.to_string(),
        });
    }
    Ok(())
}

/// One output to store: its name in storage and the file holding it now.
#[derive(Debug, Clone)]
pub struct OutputFile {
    /// Name under the upload's folder, e.g. `video.mp4`.
    pub name: String,
    /// Where the finished file is on local disk.
    pub path: PathBuf,
}

/// A final storage backend. Calls block; run them off the async executor.
pub trait FinalStorage: Send + Sync {
    /// Stores every file under `token`. All become visible together, or none do.
    /// Idempotent: storing a token that is already complete succeeds.
    fn put(&self, token: &str, files: &[OutputFile]) -> Result<(), StorageError>;
    /// True when the outputs of `token` are complete in storage.
    fn contains(&self, token: &str) -> Result<bool, StorageError>;
    /// Removes what is stored under `token`, if anything.
    fn remove(&self, token: &str) -> Result<(), StorageError>;
    /// Removes what interrupted `put`s left behind; called at start with the
    /// tokens of the uploads that were being stored. Returns how many.
    fn clean_interrupted(&self, _storing: &[&str]) -> Result<usize, StorageError> {
        Ok(0)
    }
    /// Whether the backend can take work now: for a bucket, one cheap
    /// authenticated request, refused ([`StorageError::Refused`]) with the
    /// setting to fix. A local folder has nothing to check beyond what
    /// `/readyz` already writes to.
    fn check(&self) -> Result<(), StorageError> {
        Ok(())
    }
    /// Public URL of one stored file, given the server's base URL.
    fn url(&self, base_url: &str, token: &str, name: &str) -> String;
    /// What the API server's `/media/{token}/...` route does for this backend.
    fn media_access(&self) -> MediaAccess {
        MediaAccess::ServedLocally
    }
    /// The bytes of one stored file of at most `max_bytes` (a playlist), `None` when
    /// there is no such file. Only backends the API server does not serve from disk have it.
    fn read_small(
        &self,
        _token: &str,
        _name: &str,
        _max_bytes: u64,
    ) -> Result<Option<Vec<u8>>, StorageError> {
        Err(StorageError::Unsupported(
            "this backend is served from disk",
        ))
    }
}

/// How players reach stored files, and so what `/media/{token}/...` on the API server does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MediaAccess {
    /// The API server serves the files from a local folder.
    ServedLocally,
    /// Each file has its own presigned URL. Relative references inside a playlist
    /// would carry no signature, so the API server serves playlists rewritten with
    /// a presigned URL per reference, and redirects any other file to its presigned URL.
    Presigned,
    /// Files are public under a base URL, where playlists work as they are; the API
    /// server redirects there.
    Public,
}

/// Whether a stored file names other files of its upload by relative references:
/// HLS playlists and the storyboard's WebVTT. With presigned URLs the API server
/// serves such a file with every reference rewritten ([`playlist`]).
pub fn names_other_files(name: &str) -> bool {
    name.ends_with(".m3u8") || name.ends_with(".vtt")
}

/// The `Content-Type` a stored file is served with, from its extension.
pub fn content_type(name: &str) -> &'static str {
    let extension = name.rsplit_once('.').map(|(_, ext)| ext).unwrap_or("");
    match extension.to_ascii_lowercase().as_str() {
        "mp4" => "video/mp4",
        "m4a" => "audio/mp4",
        "jpg" | "jpeg" => "image/jpeg",
        "png" => "image/png",
        "m3u8" => "application/vnd.apple.mpegurl",
        "vtt" => "text/vtt",
        "ts" => "video/mp2t",
        "m4s" => "video/iso.segment",
        "json" => "application/json",
        _ => "application/octet-stream",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_tokens_are_checked() {
        for name in [
            "../x",
            "hls//x",
            ".complete",
            "a b",
            "hls/.x",
            "",
            "/abs",
            "a\\b",
        ] {
            assert!(check_name(name).is_err(), "{name}");
        }
        check_name("hls/720p/seg_00000.ts").unwrap();
        check_name("video.mp4").unwrap();
        assert!(check_token("a/b").is_err());
        assert!(check_token("").is_err());
        check_token("0f3a").unwrap();
    }
}
