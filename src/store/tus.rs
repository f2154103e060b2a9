//! Resumable uploads over tus (`/api/client/v1/tus`) while their bytes
//! arrive: each one's declared length, its metadata, and the offset up to
//! which its bytes are durable in its file (`tus/{id}.bin`). The offset is
//! written only after the bytes up to it are fsynced, so after a crash the
//! file is cut back to it and is exactly what the client sent. Once the last
//! byte is in, the upload is handed over to intake under the same id (then
//! `handed_over`); the row stays for `HEAD` until it expires.
//!
//! The tus routes write these rows themselves: a writer of their own table
//! only, like webhook delivery and the cleaner.

use redb::{ReadableTable, TableDefinition, WriteTransaction};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::{Store, StoreError};

/// Upload id -> JSON [`TusUpload`].
const TUS_UPLOADS: TableDefinition<u128, &[u8]> = TableDefinition::new("tus_uploads");

/// One tus upload.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TusUpload {
    /// Its id, which the upload keeps once handed over.
    pub id: Uuid,
    /// The API key that created it.
    pub tenant: String,
    /// `Upload-Length`.
    pub length: u64,
    /// Bytes durable in its file.
    pub offset: u64,
    /// From `Upload-Metadata`, checked as the form's fields are.
    pub filename: String,
    /// From `Upload-Metadata`, checked.
    pub folder: String,
    /// From `Upload-Metadata`, if given.
    pub callback_url: Option<String>,
    /// Unix time of its last write.
    pub touched_at: i64,
    /// Its last byte is in and intake has its record.
    pub handed_over: bool,
}

/// Makes sure the table exists.
pub(super) fn open(txn: &WriteTransaction) -> Result<(), StoreError> {
    txn.open_table(TUS_UPLOADS)?;
    Ok(())
}

impl Store {
    /// Writes `upload` (new, or its new state). Durable on return.
    pub fn tus_put(&self, upload: &TusUpload) -> Result<(), StoreError> {
        let row = serde_json::to_vec(upload)?;
        self.write(|txn| {
            txn.open_table(TUS_UPLOADS)?
                .insert(upload.id.as_u128(), row.as_slice())?;
            Ok(())
        })
    }

    /// The tus upload `id`, if there is one.
    pub fn tus_get(&self, id: Uuid) -> Result<Option<TusUpload>, StoreError> {
        self.read(|txn| {
            let table = txn.open_table(TUS_UPLOADS)?;
            match table.get(id.as_u128())? {
                Some(row) => Ok(Some(serde_json::from_slice(row.value())?)),
                None => Ok(None),
            }
        })
    }

    /// Forgets the tus upload `id`. Durable on return.
    pub fn tus_remove(&self, id: Uuid) -> Result<(), StoreError> {
        self.write(|txn| {
            txn.open_table(TUS_UPLOADS)?.remove(id.as_u128())?;
            Ok(())
        })
    }

    /// Every tus upload (a scan: for the start).
    pub fn tus_all(&self) -> Result<Vec<TusUpload>, StoreError> {
        self.read(|txn| {
            let table = txn.open_table(TUS_UPLOADS)?;
            let mut all = Vec::new();
            for entry in table.iter()? {
                let (_, row) = entry?;
                all.push(serde_json::from_slice(row.value())?);
            }
            Ok(all)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_upload_is_kept_across_a_reopen_until_removed() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("status.redb");
        let mut upload = TusUpload {
            id: Uuid::new_v4(),
            tenant: "t".into(),
            length: 10,
            offset: 0,
            filename: "a.mp4".into(),
            folder: "root".into(),
            callback_url: None,
            touched_at: 1,
            handed_over: false,
        };
        {
            let store = Store::open(&path).unwrap();
            store.tus_put(&upload).unwrap();
            upload.offset = 4;
            store.tus_put(&upload).unwrap();
        }
        let store = Store::open(&path).unwrap();
        assert_eq!(store.tus_get(upload.id).unwrap(), Some(upload.clone()));
        assert_eq!(store.tus_all().unwrap(), vec![upload.clone()]);
        store.tus_remove(upload.id).unwrap();
        assert_eq!(store.tus_get(upload.id).unwrap(), None);
    }
}
