//! Removals owed to final storage: the media folders (local) or objects (S3)
//! of uploads that failed after some of their outputs were stored, when the
//! first try to remove them failed too. A removal is recorded in the
//! transaction that marks the upload failed
//! ([`TransitionPatch::clean_up`](super::record::TransitionPatch)), so it is
//! never forgotten: the cleaner ([`crate::actors::cleaner`]) tries it until
//! the store answers, also after a restart, and settles the row itself (the
//! second writer besides the registry, as webhook delivery is for its rows).

use redb::{ReadableTable, TableDefinition, WriteTransaction};

use super::{Store, StoreError};

/// Media token -> when the removal was recorded (Unix seconds).
pub(super) const CLEANUPS: TableDefinition<&str, u64> = TableDefinition::new("cleanups");

/// Records that what is stored under `token` must be removed.
pub(super) fn record(txn: &WriteTransaction, token: &str) -> Result<(), StoreError> {
    let mut table = txn.open_table(CLEANUPS)?;
    let now = u64::try_from(super::record::unix_now()).unwrap_or(0);
    table.insert(token, now)?;
    Ok(())
}

impl Store {
    /// The tokens whose stored outputs are still to be removed, oldest first.
    pub fn pending_cleanups(&self) -> Result<Vec<String>, StoreError> {
        self.read(|txn| {
            let table = txn.open_table(CLEANUPS)?;
            let mut pending = Vec::new();
            for entry in table.iter()? {
                let (token, at) = entry?;
                pending.push((at.value(), token.value().to_string()));
            }
            pending.sort();
            Ok(pending.into_iter().map(|(_, token)| token).collect())
        })
    }

    /// The outputs of `token` are gone from final storage. Durable on return.
    pub fn cleaned_up(&self, token: &str) -> Result<(), StoreError> {
        self.write(|txn| {
            txn.open_table(CLEANUPS)?.remove(token)?;
            Ok(())
        })
    }
}

#[cfg(test)]
mod tests {
    use crate::store::record::{Status, TransitionPatch, UploadError};
    use crate::store::Store;

    #[test]
    fn a_removal_is_recorded_with_the_failure_and_kept_until_settled() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("status.redb");
        let store = Store::open(&path).unwrap();
        let mut record = crate::store::tests::sample("tenant");
        store.insert(&mut record).unwrap();
        let failed = TransitionPatch {
            error: Some(UploadError {
                code: "storage_error".into(),
                message: "down".into(),
            }),
            clean_up: true,
            ..Default::default()
        };
        store.transition(record.id, Status::Failed, failed).unwrap();
        assert_eq!(
            store.pending_cleanups().unwrap(),
            [record.media_token.clone()]
        );
        drop(store);

        // Across a restart.
        let store = Store::open(&path).unwrap();
        assert_eq!(
            store.pending_cleanups().unwrap(),
            [record.media_token.clone()]
        );
        store.cleaned_up(&record.media_token).unwrap();
        assert!(store.pending_cleanups().unwrap().is_empty());
    }
}
