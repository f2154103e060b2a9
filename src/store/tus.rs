//! Resumable uploads over tus (`/api/client/v1/tus`) while their bytes
//! arrive: each one's declared length, its metadata, and the offset up to
//! which its bytes are durable in its file (`tus/{id}.bin`). The offset is
//! written only after the bytes up to it are fsynced, so after a crash the
//! file is cut back to it and is exactly what the client sent. Once the last
//! byte is in, the upload is handed over to intake under the same id (then
//! `handed_over`); the row stays for `HEAD` until it expires.
//!
//! A creation's `Idempotency-Key` is kept beside its row, written and
//! removed in the same transaction, so a key names an upload as long as the
//! upload exists. Partial uploads (concatenation) are joined into a final
//! one by one transaction that writes the final row and removes theirs.
//!
//! The tus routes write these rows themselves: a writer of their own tables
//! only, like webhook delivery and the cleaner.

use redb::{ReadableTable, ReadableTableMetadata, TableDefinition, WriteTransaction};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::{Store, StoreError};

/// Upload id -> JSON [`TusUpload`].
const TUS_UPLOADS: TableDefinition<u128, &[u8]> = TableDefinition::new("tus_uploads");

/// (tenant, `Idempotency-Key`) -> the id of the upload its creation made.
const TUS_KEYS: TableDefinition<(&str, &str), u128> = TableDefinition::new("tus_idempotency_keys");

/// (tenant, upload id) of each upload not handed over yet: what a key's cap
/// on unfinished uploads counts.
const TUS_UNFINISHED: TableDefinition<(&str, u128), ()> = TableDefinition::new("tus_unfinished");

/// One tus upload.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TusUpload {
    /// Its id, which the upload keeps once handed over.
    pub id: Uuid,
    /// The API key that created it.
    pub tenant: String,
    /// `Upload-Length`; `None` while deferred (creation-defer-length) until
    /// a `PATCH` gives it.
    pub length: Option<u64>,
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
    /// Whether it is a part of another (concatenation).
    #[serde(default, skip_serializing_if = "Concat::is_single")]
    pub concat: Concat,
    /// The `Idempotency-Key` of its creation, if one was sent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idempotency_key: Option<String>,
}

/// The concatenation extension's kinds of upload.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Concat {
    /// An upload of its own.
    #[default]
    Single,
    /// `Upload-Concat: partial`: its bytes wait to be joined into a final
    /// upload; it is never handed over itself.
    Partial,
    /// `Upload-Concat: final`: made of these partial uploads, in order.
    Final(Vec<Uuid>),
}

impl Concat {
    fn is_single(&self) -> bool {
        matches!(self, Concat::Single)
    }
}

impl TusUpload {
    /// All its bytes are in.
    pub fn is_complete(&self) -> bool {
        self.length == Some(self.offset)
    }

    /// Its bytes go on to intake once complete (a partial upload's do not).
    pub fn is_handed_over_when_complete(&self) -> bool {
        self.concat != Concat::Partial
    }
}

/// Makes sure the table exists.
pub(super) fn open(txn: &WriteTransaction) -> Result<(), StoreError> {
    let uploads = txn.open_table(TUS_UPLOADS)?;
    txn.open_table(TUS_KEYS)?;
    let mut unfinished = txn.open_table(TUS_UNFINISHED)?;
    // Rows written before the index existed are indexed once.
    if unfinished.is_empty()? {
        for entry in uploads.iter()? {
            let (_, row) = entry?;
            let upload: TusUpload = serde_json::from_slice(row.value())?;
            if !upload.handed_over {
                unfinished.insert((upload.tenant.as_str(), upload.id.as_u128()), ())?;
            }
        }
    }
    Ok(())
}

fn put(txn: &WriteTransaction, upload: &TusUpload) -> Result<(), StoreError> {
    let row = serde_json::to_vec(upload)?;
    txn.open_table(TUS_UPLOADS)?
        .insert(upload.id.as_u128(), row.as_slice())?;
    if let Some(key) = &upload.idempotency_key {
        txn.open_table(TUS_KEYS)?
            .insert((upload.tenant.as_str(), key.as_str()), upload.id.as_u128())?;
    }
    let mut unfinished = txn.open_table(TUS_UNFINISHED)?;
    let entry = (upload.tenant.as_str(), upload.id.as_u128());
    if upload.handed_over {
        unfinished.remove(entry)?;
    } else {
        unfinished.insert(entry, ())?;
    }
    Ok(())
}

fn remove(txn: &WriteTransaction, id: Uuid) -> Result<(), StoreError> {
    let mut uploads = txn.open_table(TUS_UPLOADS)?;
    let Some(row) = uploads.remove(id.as_u128())? else {
        return Ok(());
    };
    let upload: TusUpload = serde_json::from_slice(row.value())?;
    drop(row);
    if let Some(key) = &upload.idempotency_key {
        txn.open_table(TUS_KEYS)?
            .remove((upload.tenant.as_str(), key.as_str()))?;
    }
    txn.open_table(TUS_UNFINISHED)?
        .remove((upload.tenant.as_str(), upload.id.as_u128()))?;
    Ok(())
}

impl Store {
    /// Writes `upload` (new, or its new state). Durable on return.
    pub fn tus_put(&self, upload: &TusUpload) -> Result<(), StoreError> {
        self.write(|txn| put(txn, upload))
    }

    /// Writes the new upload `upload` unless its tenant already has `cap`
    /// uploads not handed over (then `false`, nothing written): the count
    /// and the write in one transaction, so concurrent creations cannot
    /// pass the cap together. Durable on return.
    pub fn tus_insert_within(&self, upload: &TusUpload, cap: usize) -> Result<bool, StoreError> {
        self.write(|txn| {
            let tenant = upload.tenant.as_str();
            let unfinished = txn.open_table(TUS_UNFINISHED)?;
            let mut held = unfinished.range((tenant, 0u128)..=(tenant, u128::MAX))?;
            if held.nth(cap.saturating_sub(1)).is_some() {
                return Ok(false);
            }
            drop(held);
            drop(unfinished);
            put(txn, upload)?;
            Ok(true)
        })
    }

    /// Writes the final upload `joined` and removes the partial uploads it
    /// is made of, in one transaction. Durable on return.
    pub fn tus_join(&self, joined: &TusUpload, parts: &[Uuid]) -> Result<(), StoreError> {
        self.write(|txn| {
            for &part in parts {
                remove(txn, part)?;
            }
            put(txn, joined)
        })
    }

    /// The upload whose creation `tenant` sent with the `Idempotency-Key`
    /// `key`, while it exists.
    pub fn tus_by_key(&self, tenant: &str, key: &str) -> Result<Option<TusUpload>, StoreError> {
        let id = self.read(|txn| {
            let keys = txn.open_table(TUS_KEYS)?;
            Ok(keys
                .get((tenant, key))?
                .map(|id| Uuid::from_u128(id.value())))
        })?;
        match id {
            Some(id) => self.tus_get(id),
            None => Ok(None),
        }
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
        self.write(|txn| remove(txn, id))
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
            length: Some(10),
            offset: 0,
            filename: "a.mp4".into(),
            folder: "root".into(),
            callback_url: None,
            touched_at: 1,
            handed_over: false,
            concat: Concat::Single,
            idempotency_key: Some("k".into()),
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
        assert_eq!(store.tus_by_key("t", "k").unwrap(), Some(upload.clone()));
        store.tus_remove(upload.id).unwrap();
        assert_eq!(store.tus_get(upload.id).unwrap(), None);
        assert_eq!(store.tus_by_key("t", "k").unwrap(), None);
    }

    #[test]
    fn a_row_written_before_deferred_lengths_and_concatenation_reads_as_single() {
        let id = Uuid::new_v4();
        let old = format!(
            r#"{{"id":"{id}","tenant":"t","length":10,"offset":3,"filename":"a.mp4","folder":"root","callback_url":null,"touched_at":1,"handed_over":false}}"#
        );
        let upload: TusUpload = serde_json::from_str(&old).unwrap();
        assert_eq!(upload.length, Some(10));
        assert_eq!(upload.concat, Concat::Single);
        assert_eq!(upload.idempotency_key, None);
    }

    #[test]
    fn joining_writes_the_final_upload_and_removes_its_parts() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("status.redb")).unwrap();
        let part = |key: &str| TusUpload {
            id: Uuid::new_v4(),
            tenant: "t".into(),
            length: Some(5),
            offset: 5,
            filename: String::new(),
            folder: String::new(),
            callback_url: None,
            touched_at: 1,
            handed_over: false,
            concat: Concat::Partial,
            idempotency_key: Some(key.into()),
        };
        let (a, b) = (part("a"), part("b"));
        store.tus_put(&a).unwrap();
        store.tus_put(&b).unwrap();
        let joined = TusUpload {
            id: Uuid::new_v4(),
            length: Some(10),
            offset: 10,
            concat: Concat::Final(vec![a.id, b.id]),
            idempotency_key: None,
            ..a.clone()
        };
        store.tus_join(&joined, &[a.id, b.id]).unwrap();
        assert_eq!(store.tus_all().unwrap(), vec![joined]);
        assert_eq!(store.tus_by_key("t", "a").unwrap(), None);
    }
}
