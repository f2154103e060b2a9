//! Where things live under the data dir. Client-supplied names never reach
//! a path: every path here is built from server-made ids and tokens.

use std::io;
use std::path::{Path, PathBuf};

use uuid::Uuid;

/// The folders of one data dir.
#[derive(Debug, Clone)]
pub struct DataLayout {
    root: PathBuf,
}

impl DataLayout {
    /// The layout rooted at `root`.
    pub fn new(root: &Path) -> DataLayout {
        DataLayout {
            root: root.to_path_buf(),
        }
    }

    /// Creates every folder that does not exist yet.
    pub fn ensure(&self) -> io::Result<()> {
        for dir in [
            self.staging_dir(),
            self.tus_dir(),
            self.work_root(),
            self.media_root(),
        ] {
            std::fs::create_dir_all(dir)?;
        }
        Ok(())
    }

    /// The data dir itself.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The bytes of tus uploads still arriving.
    pub fn tus_dir(&self) -> PathBuf {
        self.root.join("tus")
    }

    /// The bytes of tus upload `id` received so far.
    pub fn tus_path(&self, id: Uuid) -> PathBuf {
        self.tus_dir().join(format!("{id}.bin"))
    }

    /// Accepted request bodies, until their upload is terminal.
    pub fn staging_dir(&self) -> PathBuf {
        self.root.join("staging")
    }

    /// A body still being received; never acknowledged, removed on start.
    pub fn part_path(&self, id: Uuid) -> PathBuf {
        self.staging_dir().join(format!("{id}.part"))
    }

    /// A body that is complete and fsynced.
    pub fn staged_path(&self, id: Uuid) -> PathBuf {
        self.staging_dir().join(format!("{id}.upload"))
    }

    /// Transcoder outputs waiting for the uploader.
    pub fn work_root(&self) -> PathBuf {
        self.root.join("work")
    }

    /// Complete outputs of one upload, renamed into place when the transcode finished.
    pub fn work_dir(&self, id: Uuid) -> PathBuf {
        self.work_root().join(id.to_string())
    }

    /// Outputs of one upload while the transcode writes them.
    pub fn work_tmp_dir(&self, id: Uuid) -> PathBuf {
        self.work_root().join(format!("{id}.tmp"))
    }

    /// Final storage of the local backend.
    pub fn media_root(&self) -> PathBuf {
        self.root.join("media")
    }
}

/// Makes a rename or a new file in `dir` durable.
pub fn fsync_dir(dir: &Path) -> io::Result<()> {
    std::fs::File::open(dir)?.sync_all()
}

/// Renames `from` to `to` and makes the new name durable (fsyncs `to`'s folder).
pub fn rename_durably(from: &Path, to: &Path) -> io::Result<()> {
    std::fs::rename(from, to)?;
    fsync_dir(to.parent().unwrap_or(Path::new(".")))
}

/// Removes the file at `path`; one that is not there is not an error.
pub fn remove_if_exists(path: &Path) -> io::Result<()> {
    match std::fs::remove_file(path) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

/// True when `e` says the disk (or the user's quota) is full.
pub fn is_disk_full(e: &io::Error) -> bool {
    matches!(e.raw_os_error(), Some(libc::ENOSPC) | Some(libc::EDQUOT))
        || e.kind() == io::ErrorKind::StorageFull
}

/// Bytes free for this process on the filesystem holding `path`.
pub fn free_bytes(path: &Path) -> io::Result<u64> {
    use std::os::unix::ffi::OsStrExt;
    let c_path = std::ffi::CString::new(path.as_os_str().as_bytes())
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
    let mut stat = std::mem::MaybeUninit::<libc::statvfs>::uninit();
    // SAFETY: `c_path` is a valid NUL-terminated string and `stat` points to
    // writable memory of the right size; statvfs fills it on success.
    let rc = unsafe { libc::statvfs(c_path.as_ptr(), stat.as_mut_ptr()) };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: statvfs returned 0, so it initialised `stat`.
    let stat = unsafe { stat.assume_init() };
    Ok(stat.f_bavail.saturating_mul(stat.f_frsize))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn free_space_is_read_and_full_disks_are_recognised() {
        let dir = tempfile::tempdir().unwrap();
        assert!(free_bytes(dir.path()).unwrap() > 0);
        assert!(free_bytes(&dir.path().join("missing")).is_err());
        assert!(is_disk_full(&io::Error::from_raw_os_error(libc::ENOSPC)));
        assert!(!is_disk_full(&io::Error::from_raw_os_error(libc::EIO)));
    }
}
