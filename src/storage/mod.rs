//! Final storage: where finished outputs live for playback, behind one small trait.

pub mod local;

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
    /// Removes what interrupted `put`s left behind; called at start. Returns how many.
    fn clean_interrupted(&self) -> Result<usize, StorageError> {
        Ok(0)
    }
    /// Public URL of one stored file, given the server's base URL.
    fn url(&self, base_url: &str, token: &str, name: &str) -> String;
}
