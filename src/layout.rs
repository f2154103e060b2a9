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
        for dir in [self.staging_dir(), self.work_root(), self.media_root()] {
            std::fs::create_dir_all(dir)?;
        }
        Ok(())
    }

    /// The data dir itself.
    pub fn root(&self) -> &Path {
        &self.root
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
