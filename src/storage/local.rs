//! The default backend: a folder on local disk, served by the API server at `/media/`.

use std::fs;
use std::path::{Path, PathBuf};

use super::{FinalStorage, OutputFile, StorageError};
use crate::layout::fsync_dir;

/// Final storage in a local folder. An upload's files appear together by one
/// directory rename, so a half-written output is never visible.
pub struct LocalStorage {
    root: PathBuf,
}

impl LocalStorage {
    /// Storage rooted at `root`, which must exist.
    pub fn new(root: &Path) -> LocalStorage {
        LocalStorage {
            root: root.to_path_buf(),
        }
    }

    fn incoming(&self, token: &str) -> PathBuf {
        self.root.join(format!(".incoming-{token}"))
    }
}

fn check_token(token: &str) -> Result<(), StorageError> {
    if token.is_empty() || !token.bytes().all(|b| b.is_ascii_alphanumeric()) {
        return Err(StorageError(format!("invalid storage token {token:?}")));
    }
    Ok(())
}

impl FinalStorage for LocalStorage {
    fn put(&self, token: &str, files: &[OutputFile]) -> Result<(), StorageError> {
        check_token(token)?;
        let dest = self.root.join(token);
        if dest.is_dir() {
            return Ok(());
        }
        let incoming = self.incoming(token);
        if incoming.exists() {
            fs::remove_dir_all(&incoming)?;
        }
        fs::create_dir(&incoming)?;
        for file in files {
            let target = incoming.join(&file.name);
            // Same filesystem: a rename moves without copying; otherwise copy.
            if fs::rename(&file.path, &target).is_err() {
                fs::copy(&file.path, &target)?;
            }
            fs::File::open(&target)?.sync_all()?;
        }
        fsync_dir(&incoming)?;
        fs::rename(&incoming, &dest)?;
        fsync_dir(&self.root)?;
        Ok(())
    }

    fn contains(&self, token: &str) -> Result<bool, StorageError> {
        check_token(token)?;
        Ok(self.root.join(token).is_dir())
    }

    fn remove(&self, token: &str) -> Result<(), StorageError> {
        check_token(token)?;
        let dest = self.root.join(token);
        if dest.exists() {
            fs::remove_dir_all(dest)?;
        }
        Ok(())
    }

    /// Removes folders of interrupted `put`s; they were never visible.
    fn clean_interrupted(&self) -> Result<usize, StorageError> {
        let mut removed = 0;
        for entry in fs::read_dir(&self.root)? {
            let entry = entry?;
            if entry
                .file_name()
                .to_string_lossy()
                .starts_with(".incoming-")
            {
                fs::remove_dir_all(entry.path())?;
                removed += 1;
            }
        }
        Ok(removed)
    }

    fn url(&self, base_url: &str, token: &str, name: &str) -> String {
        format!("{base_url}/media/{token}/{name}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn put_is_all_or_nothing_and_idempotent() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("media");
        fs::create_dir(&root).unwrap();
        let src = dir.path().join("a.mp4");
        fs::write(&src, b"mp4").unwrap();
        let storage = LocalStorage::new(&root);
        assert!(!storage.contains("tok1").unwrap());
        let files = [OutputFile {
            name: "video.mp4".into(),
            path: src.clone(),
        }];
        storage.put("tok1", &files).unwrap();
        assert!(storage.contains("tok1").unwrap());
        assert_eq!(fs::read(root.join("tok1/video.mp4")).unwrap(), b"mp4");
        storage.put("tok1", &files).unwrap();
        fs::create_dir(root.join(".incoming-tok2")).unwrap();
        assert_eq!(storage.clean_interrupted().unwrap(), 1);
        assert!(storage.put("../x", &files).is_err());
    }
}
