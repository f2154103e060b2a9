//! Final storage: where finished outputs live for playback, behind one small trait.
//! [`local`] keeps them in a folder the API server serves; [`s3`] in any
//! S3-compatible bucket, with [`playlist`] rewriting HLS playlists for presigned URLs.

pub mod local;
pub mod playlist;
pub mod s3;

use std::path::PathBuf;

pub use local::LocalStorage;

/// Errors of a storage backend; every one ends an upload with `storage_error`.
#[derive(Debug, thiserror::Error)]
#[error("storage error: {0}")]
pub struct StorageError(pub String);

impl From<std::io::Error> for StorageError {
    fn from(e: std::io::Error) -> Self {
        StorageError(e.to_string())
    }
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
        Err(StorageError("this backend is served from disk".into()))
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

/// The `Content-Type` a stored file is served with, from its extension.
pub fn content_type(name: &str) -> &'static str {
    let extension = name.rsplit_once('.').map(|(_, ext)| ext).unwrap_or("");
    match extension.to_ascii_lowercase().as_str() {
        "mp4" => "video/mp4",
        "m4a" => "audio/mp4",
        "jpg" | "jpeg" => "image/jpeg",
        "png" => "image/png",
        "m3u8" => "application/vnd.apple.mpegurl",
        "ts" => "video/mp2t",
        "m4s" => "video/iso.segment",
        "json" => "application/json",
        _ => "application/octet-stream",
    }
}
