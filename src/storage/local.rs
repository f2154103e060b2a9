//! The default backend: a folder on local disk, served by the API server at `/media/`.

use std::collections::BTreeSet;
use std::fs;
use std::path::{Path, PathBuf};

use super::{check_name, check_token, FinalStorage, OutputFile, StorageError};
use crate::layout::fsync_dir;

/// Final storage in a local folder. An upload's files (in subfolders too, such
/// as the HLS ladder's `hls/720p/seg_00000.ts`) appear together by one
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

    /// Fills `incoming` with the files, then renames it to `dest`.
    fn put_via(
        &self,
        incoming: &Path,
        dest: &Path,
        files: &[OutputFile],
    ) -> Result<(), StorageError> {
        if incoming.exists() {
            fs::remove_dir_all(incoming)?;
        }
        fs::create_dir(incoming)?;
        let mut folders = BTreeSet::new();
        for file in files {
            check_name(&file.name)?;
            let target = incoming.join(&file.name);
            for folder in target.ancestors().skip(1) {
                if folder == incoming || !folders.insert(folder.to_path_buf()) {
                    break;
                }
            }
            if let Some(parent) = target.parent() {
                fs::create_dir_all(parent)?;
            }
            // The source stays until the upload is completed, so a crash here
            // can always start over: hard link on the same filesystem, else copy.
            if fs::hard_link(&file.path, &target).is_err() {
                fs::copy(&file.path, &target)?;
            }
            fs::File::open(&target)?.sync_all()?;
            crate::faults::crash_if(crate::faults::CrashPoint::MidStoragePut);
        }
        // Every entry, in every subfolder, is durable before the one rename publishes them.
        for folder in folders.iter().rev() {
            fsync_dir(folder)?;
        }
        fsync_dir(incoming)?;
        fs::rename(incoming, dest)?;
        fsync_dir(&self.root)?;
        Ok(())
    }
}

impl FinalStorage for LocalStorage {
    fn put(&self, token: &str, files: &[OutputFile]) -> Result<(), StorageError> {
        check_token(token)?;
        let dest = self.root.join(token);
        if dest.is_dir() {
            return Ok(());
        }
        let incoming = self.incoming(token);
        let result = self.put_via(&incoming, &dest, files);
        if result.is_err() {
            // Nothing of a failed put stays behind, even on a full disk.
            let _ = fs::remove_dir_all(&incoming);
        }
        result
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
    fn clean_interrupted(&self, _storing: &[&str]) -> Result<usize, StorageError> {
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
        assert_eq!(storage.clean_interrupted(&[]).unwrap(), 1);
        assert!(storage.put("../x", &files).is_err());
    }

    #[test]
    fn put_creates_subfolders_and_refuses_escaping_names() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("media");
        fs::create_dir(&root).unwrap();
        let src = dir.path().join("seg.ts");
        fs::write(&src, b"ts").unwrap();
        let storage = LocalStorage::new(&root);
        let file = |name: &str| OutputFile {
            name: name.into(),
            path: src.clone(),
        };
        let ladder = [
            file("hls/master.m3u8"),
            file("hls/720p/index.m3u8"),
            file("hls/720p/seg_00000.ts"),
            file("video.mp4"),
        ];
        storage.put("tok", &ladder).unwrap();
        assert_eq!(
            fs::read(root.join("tok/hls/720p/seg_00000.ts")).unwrap(),
            b"ts"
        );
        assert!(root.join("tok/hls/master.m3u8").is_file());
        for name in [
            "../x",
            "hls/../../x",
            "/abs",
            "hls//x",
            ".hidden/x",
            "hls/.x",
            "",
        ] {
            assert!(storage.put("bad", &[file(name)]).is_err(), "{name}");
            assert!(!storage.contains("bad").unwrap());
        }
        assert!(
            fs::read_dir(&root).unwrap().count() == 1,
            "a failed put left files"
        );
    }
}
