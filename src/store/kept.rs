//! Sources kept after a failure: a failed upload keeps its staged body for
//! `failed_source_retention_hours`, so that `POST /uploads/{id}/retry` can
//! run it again. The row is written in the transaction that fails the
//! upload ([`TransitionPatch::keep_source_until`]) and removed by the one
//! that retries or deletes it, or, once its time has passed, by the
//! sweeper ([`crate::actors::sweeper`]) after it has removed the file, so a
//! crash between the two only means the file is removed again.
//!
//! [`TransitionPatch::keep_source_until`]: super::record::TransitionPatch

use std::collections::HashSet;

use redb::{ReadableTable, TableDefinition, WriteTransaction};
use uuid::Uuid;

use super::{Store, StoreError};

/// (until, upload id): the kept sources in the order they are due.
pub(super) const KEPT_BY_TIME: TableDefinition<(i64, u128), ()> =
    TableDefinition::new("kept_sources");
/// Upload id -> until: whether an upload's source is kept.
pub(super) const KEPT_BY_ID: TableDefinition<u128, i64> =
    TableDefinition::new("kept_sources_by_id");

/// Makes sure both tables exist.
pub(super) fn open(txn: &WriteTransaction) -> Result<(), StoreError> {
    txn.open_table(KEPT_BY_TIME)?;
    txn.open_table(KEPT_BY_ID)?;
    Ok(())
}

/// Keeps the source of `id` until the Unix time `until`.
pub(super) fn keep(txn: &WriteTransaction, id: Uuid, until: i64) -> Result<(), StoreError> {
    release(txn, id)?;
    txn.open_table(KEPT_BY_TIME)?
        .insert((until, id.as_u128()), ())?;
    txn.open_table(KEPT_BY_ID)?.insert(id.as_u128(), until)?;
    Ok(())
}

/// Whether the source of `id` is kept at the Unix time `now`: it is, from
/// the failure until its time has passed (the sweeper may be freeing it then).
pub(super) fn kept_at(txn: &WriteTransaction, id: Uuid, now: i64) -> Result<bool, StoreError> {
    let table = txn.open_table(KEPT_BY_ID)?;
    let until = table.get(id.as_u128())?.map(|until| until.value());
    Ok(until.is_some_and(|until| until > now))
}

/// The source of `id` is no longer kept (retried, deleted or freed); true if it was.
pub(super) fn release(txn: &WriteTransaction, id: Uuid) -> Result<bool, StoreError> {
    let until = {
        let mut by_id = txn.open_table(KEPT_BY_ID)?;
        let removed = by_id.remove(id.as_u128())?;
        removed.map(|until| until.value())
    };
    match until {
        Some(until) => {
            txn.open_table(KEPT_BY_TIME)?
                .remove((until, id.as_u128()))?;
            Ok(true)
        }
        None => Ok(false),
    }
}

impl Store {
    /// Whether the failed upload `id` still has its source.
    pub fn source_kept(&self, id: Uuid) -> Result<bool, StoreError> {
        self.read(|txn| Ok(txn.open_table(KEPT_BY_ID)?.get(id.as_u128())?.is_some()))
    }

    /// Every upload whose source is kept: their staged bodies stay at start.
    pub fn kept_sources(&self) -> Result<HashSet<Uuid>, StoreError> {
        self.read(|txn| {
            let mut kept = HashSet::new();
            for entry in txn.open_table(KEPT_BY_ID)?.iter()? {
                kept.insert(Uuid::from_u128(entry?.0.value()));
            }
            Ok(kept)
        })
    }

    /// The kept sources due at the Unix time `now` (at most `limit`, the
    /// earliest first), and when the next one after them is due.
    pub fn sources_due(
        &self,
        now: i64,
        limit: usize,
    ) -> Result<(Vec<Uuid>, Option<i64>), StoreError> {
        self.read(|txn| {
            let table = txn.open_table(KEPT_BY_TIME)?;
            let mut due = Vec::new();
            for entry in table.iter()? {
                let (until, id) = entry?.0.value();
                if until > now || due.len() == limit {
                    return Ok((due, Some(until)));
                }
                due.push(Uuid::from_u128(id));
            }
            Ok((due, None))
        })
    }
}

#[cfg(test)]
mod tests {
    use crate::store::record::{Status, TransitionPatch, UploadError};
    use crate::store::{Store, StoreError};

    fn failed(until: i64) -> TransitionPatch {
        TransitionPatch {
            error: Some(UploadError {
                code: "cancelled".into(),
                message: "stopped".into(),
            }),
            keep_source_until: Some(until),
            ..Default::default()
        }
    }

    #[test]
    fn a_failure_keeps_the_source_until_retried_or_due() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("status.redb");
        let store = Store::open(&path).unwrap();
        let (mut a, mut b) = (
            crate::store::tests::sample("t"),
            crate::store::tests::sample("t"),
        );
        store.insert(&mut a).unwrap();
        store.insert(&mut b).unwrap();
        // Kept for 100 and 200 s from now (a retry needs a source still kept).
        let now = crate::store::record::unix_now();
        let (until_a, until_b) = (now + 100, now + 200);
        store
            .transition(a.id, Status::Failed, failed(until_a))
            .unwrap();
        store
            .transition(b.id, Status::Failed, failed(until_b))
            .unwrap();
        drop(store);

        let store = Store::open(&path).unwrap();
        assert!(store.source_kept(a.id).unwrap());
        assert_eq!(store.kept_sources().unwrap().len(), 2);
        let due = |at, limit| store.sources_due(at, limit).unwrap();
        assert_eq!(due(until_a - 1, 10), (vec![], Some(until_a)));
        assert_eq!(due(until_a + 50, 10), (vec![a.id], Some(until_b)));
        assert_eq!(due(until_a + 50, 0), (vec![], Some(until_a)));

        // A terminal upload changes only by a transition that names it.
        let again = store.transition(a.id, Status::Processing, TransitionPatch::default());
        assert!(matches!(again, Err(StoreError::Conflict(Status::Failed))));
        let retry = TransitionPatch {
            only_from: &[Status::Failed],
            retry: true,
            ..Default::default()
        };
        let retried = store.transition(a.id, Status::Pending, retry).unwrap();
        assert_eq!((retried.error, retried.attempts), (None, 0));
        assert!(!store.source_kept(a.id).unwrap());
        assert_eq!(store.sources_due(i64::MAX, 10).unwrap(), (vec![b.id], None));

        let freed = TransitionPatch {
            source_freed: true,
            ..Default::default()
        };
        store
            .apply_batch(vec![crate::store::WriteOp::Patch {
                id: b.id,
                patch: Box::new(freed),
            }])
            .unwrap()
            .remove(0)
            .unwrap();
        assert!(store.kept_sources().unwrap().is_empty());
        assert_eq!(store.get(b.id).unwrap().unwrap().status, Status::Failed);
    }
}
