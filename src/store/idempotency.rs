//! `Idempotency-Key`s of `POST /uploads`: a create that was answered 202 is
//! remembered under its tenant and key, in the transaction that writes its
//! record, so that a repeat finds it after any crash. What is kept is the
//! record as it was created, from which the first answer is made again.
//! A key is forgotten `idempotency_key_retention_hours` after its create:
//! a lookup ignores it from then on and the sweeper removes its rows.

use redb::{ReadableTable, TableDefinition, WriteTransaction};
use serde::{Deserialize, Serialize};

use super::record::UploadRecord;
use super::{Store, StoreError};

/// (tenant, key) -> JSON [`Remembered`].
const BY_KEY: TableDefinition<(&str, &str), &[u8]> = TableDefinition::new("idempotency_keys");
/// (Unix time of the create, tenant, key): the keys in the order they expire.
const BY_AGE: TableDefinition<(i64, &str, &str), ()> =
    TableDefinition::new("idempotency_keys_by_age");

/// A create that was answered, as kept under its key.
#[derive(Serialize, Deserialize)]
struct Remembered {
    /// Unix time of the create.
    at: i64,
    /// The record as the create wrote it.
    record: UploadRecord,
}

/// The Unix time from which creates are remembered now, for keys kept for
/// `retention`: an older create's key is forgotten.
pub fn kept_since(retention: std::time::Duration) -> i64 {
    super::record::unix_ago(retention)
}

/// Makes sure both tables exist.
pub(super) fn open(txn: &WriteTransaction) -> Result<(), StoreError> {
    txn.open_table(BY_KEY)?;
    txn.open_table(BY_AGE)?;
    Ok(())
}

/// Remembers the create of `record` under its tenant and `key`, replacing
/// an older create of the same key (one past its retention).
pub(super) fn remember(
    txn: &WriteTransaction,
    key: &str,
    record: &UploadRecord,
) -> Result<(), StoreError> {
    let tenant = record.tenant.as_str();
    let at = record.created_at.unix_timestamp();
    let row = serde_json::to_vec(&Remembered {
        at,
        record: record.clone(),
    })?;
    let mut by_key = txn.open_table(BY_KEY)?;
    let mut by_age = txn.open_table(BY_AGE)?;
    let replaced = by_key.insert((tenant, key), row.as_slice())?;
    if let Some(old) = replaced {
        let old: Remembered = serde_json::from_slice(old.value())?;
        by_age.remove((old.at, tenant, key))?;
    }
    by_age.insert((at, tenant, key), ())?;
    Ok(())
}

impl Store {
    /// The record a create of `tenant` with `key` wrote, if it was made at
    /// the Unix time `since` or later.
    pub fn remembered(
        &self,
        tenant: &str,
        key: &str,
        since: i64,
    ) -> Result<Option<UploadRecord>, StoreError> {
        self.read(|txn| {
            let table = txn.open_table(BY_KEY)?;
            let Some(row) = table.get((tenant, key))? else {
                return Ok(None);
            };
            let row: Remembered = serde_json::from_slice(row.value())?;
            Ok((row.at >= since).then_some(row.record))
        })
    }

    /// Forgets up to `max` keys whose create was before the Unix time
    /// `before`; returns how many went. A write: call it from a blocking thread.
    pub fn forget_idempotency_keys(&self, before: i64, max: usize) -> Result<usize, StoreError> {
        // A read first: most looks find nothing due and need no commit.
        let any_due = self.read(|txn| {
            let by_age = txn.open_table(BY_AGE)?;
            let mut due = by_age.range((i64::MIN, "", "")..(before, "", ""))?;
            Ok(due.next().is_some())
        })?;
        if !any_due {
            return Ok(0);
        }
        self.write(|txn| {
            let mut by_key = txn.open_table(BY_KEY)?;
            let mut by_age = txn.open_table(BY_AGE)?;
            let due: Vec<(i64, String, String)> = by_age
                .range((i64::MIN, "", "")..(before, "", ""))?
                .take(max)
                .map(|entry| {
                    let (key, _) = entry?;
                    let (at, tenant, key) = key.value();
                    Ok((at, tenant.to_string(), key.to_string()))
                })
                .collect::<Result<_, StoreError>>()?;
            for (at, tenant, key) in &due {
                by_age.remove((*at, tenant.as_str(), key.as_str()))?;
                by_key.remove((tenant.as_str(), key.as_str()))?;
            }
            Ok(due.len())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::sample;
    use super::super::{Store, WriteOp};

    #[test]
    fn a_create_is_remembered_with_its_record_until_forgotten() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("db.redb");
        let record = sample("t");
        let at = record.created_at.unix_timestamp();
        {
            let store = Store::open(&path).unwrap();
            let op = WriteOp::Insert(Box::new(record.clone()), Some("k-1".into()));
            store.apply_batch(vec![op]).unwrap().remove(0).unwrap();
        }
        let store = Store::open(&path).unwrap();
        let found = store.remembered("t", "k-1", at).unwrap().unwrap();
        assert_eq!((found.id, found.seq), (record.id, 1));
        assert!(store.remembered("other", "k-1", at).unwrap().is_none());
        assert!(store.remembered("t", "k-2", at).unwrap().is_none());
        // Past its retention it is not found, then it is forgotten.
        assert!(store.remembered("t", "k-1", at + 1).unwrap().is_none());
        assert_eq!(store.forget_idempotency_keys(at, 10).unwrap(), 0);
        assert_eq!(store.forget_idempotency_keys(at + 1, 10).unwrap(), 1);
        assert!(store.remembered("t", "k-1", at).unwrap().is_none());
    }

    #[test]
    fn a_key_used_again_after_its_retention_keeps_only_its_new_create() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("db.redb")).unwrap();
        let old = sample("t");
        let mut new = sample("t");
        new.created_at = old.created_at + time::Duration::seconds(100);
        for record in [&old, &new] {
            let op = WriteOp::Insert(Box::new(record.clone()), Some("k".into()));
            store.apply_batch(vec![op]).unwrap().remove(0).unwrap();
        }
        let since = old.created_at.unix_timestamp();
        assert_eq!(
            store.remembered("t", "k", since).unwrap().unwrap().id,
            new.id
        );
        // The old create's expiry does not take the new one with it.
        assert_eq!(store.forget_idempotency_keys(since + 1, 10).unwrap(), 0);
        assert_eq!(
            store.remembered("t", "k", since).unwrap().unwrap().id,
            new.id
        );
    }
}
