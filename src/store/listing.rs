//! The pages of `GET /uploads`: a tenant's uploads newest first, narrowed by
//! status, by folder or by both, continued after a cursor. Each narrowing
//! has an index of its own, keyed as the page is read (the tenant, the
//! filter's values, then the upload's creation sequence), so a page reads
//! `limit + 1` index entries and `limit` records whatever the tenant holds;
//! the plain listing uses the tenant index of `mod.rs`.
//!
//! The indexes are written in the transaction that writes the record: an
//! upload is added at its creation, moved at each change of status and
//! removed at its deletion. A database from before them is indexed once
//! when it is opened.

use redb::{ReadTransaction, ReadableTable, TableDefinition, WriteTransaction};

use super::record::{Status, UploadRecord};
use super::{StoreError, META, TENANT_UPLOADS, UPLOADS};

/// (tenant, status code, seq) -> upload id.
const BY_STATUS: TableDefinition<(&str, u8, u64), u128> =
    TableDefinition::new("tenant_uploads_by_status");
/// (tenant, folder, seq) -> upload id.
const BY_FOLDER: TableDefinition<(&str, &str, u64), u128> =
    TableDefinition::new("tenant_uploads_by_folder");
/// (tenant, folder, status code, seq) -> upload id.
const BY_FOLDER_STATUS: TableDefinition<(&str, &str, u8, u64), u128> =
    TableDefinition::new("tenant_uploads_by_folder_status");

/// Set in `meta` once every record is in the indexes.
const INDEXED: &str = "listing_indexed";

/// One page asked for.
#[derive(Debug, Clone)]
pub struct PageQuery<'a> {
    /// Whose uploads.
    pub tenant: &'a str,
    /// Only uploads in this status.
    pub status: Option<Status>,
    /// Only uploads in exactly this folder.
    pub folder: Option<&'a str>,
    /// Only uploads created before this sequence (the cursor of the page before).
    pub before: Option<u64>,
    /// At most this many.
    pub limit: usize,
}

/// One page: its records, newest first, and where the next one starts if
/// there is more.
#[derive(Debug)]
pub struct Page {
    /// The page's uploads.
    pub records: Vec<UploadRecord>,
    /// The sequence the next page starts before; none on the last page.
    pub next: Option<u64>,
}

/// Creates the indexes, and fills them from the records if the database
/// was written before they existed.
pub(super) fn open(txn: &WriteTransaction) -> Result<(), StoreError> {
    txn.open_table(BY_STATUS)?;
    txn.open_table(BY_FOLDER)?;
    txn.open_table(BY_FOLDER_STATUS)?;
    let mut meta = txn.open_table(META)?;
    if meta.get(INDEXED)?.is_some() {
        return Ok(());
    }
    let uploads = txn.open_table(UPLOADS)?;
    for entry in uploads.iter()? {
        let (_, bytes) = entry?;
        let record: UploadRecord = serde_json::from_slice(bytes.value())?;
        add(txn, &record)?;
    }
    meta.insert(INDEXED, 1)?;
    Ok(())
}

/// Indexes a record as it is now (its creation, or its new status).
pub(super) fn add(txn: &WriteTransaction, record: &UploadRecord) -> Result<(), StoreError> {
    let (tenant, folder, status, seq, id) = keys(record);
    txn.open_table(BY_STATUS)?
        .insert((tenant, status, seq), id)?;
    txn.open_table(BY_FOLDER)?
        .insert((tenant, folder, seq), id)?;
    txn.open_table(BY_FOLDER_STATUS)?
        .insert((tenant, folder, status, seq), id)?;
    Ok(())
}

/// Takes a record out of the indexes as it was (its old status, or its deletion).
pub(super) fn remove(txn: &WriteTransaction, record: &UploadRecord) -> Result<(), StoreError> {
    let (tenant, folder, status, seq, _) = keys(record);
    txn.open_table(BY_STATUS)?.remove((tenant, status, seq))?;
    txn.open_table(BY_FOLDER)?.remove((tenant, folder, seq))?;
    txn.open_table(BY_FOLDER_STATUS)?
        .remove((tenant, folder, status, seq))?;
    Ok(())
}

/// Moves a record whose status changed from `from` to its new status.
pub(super) fn moved(
    txn: &WriteTransaction,
    record: &UploadRecord,
    from: Status,
) -> Result<(), StoreError> {
    if record.status == from {
        return Ok(());
    }
    let (tenant, folder, status, seq, id) = keys(record);
    let was = from.code();
    let mut by_status = txn.open_table(BY_STATUS)?;
    by_status.remove((tenant, was, seq))?;
    by_status.insert((tenant, status, seq), id)?;
    let mut by_both = txn.open_table(BY_FOLDER_STATUS)?;
    by_both.remove((tenant, folder, was, seq))?;
    by_both.insert((tenant, folder, status, seq), id)?;
    Ok(())
}

fn keys(record: &UploadRecord) -> (&str, &str, u8, u64, u128) {
    (
        record.tenant.as_str(),
        record.folder.as_str(),
        record.status.code(),
        record.seq,
        record.id.as_u128(),
    )
}

/// Reads one page in `txn`.
pub(super) fn page(txn: &ReadTransaction, query: &PageQuery<'_>) -> Result<Page, StoreError> {
    let tenant = query.tenant;
    // Sequences start at 1: "before 0" is an empty page.
    let Some(last) = query
        .before
        .map_or(Some(u64::MAX), |seq| seq.checked_sub(1))
    else {
        return Ok(Page {
            records: Vec::new(),
            next: None,
        });
    };
    let wanted = query.limit.saturating_add(1);
    let mut found: Vec<(u64, u128)> = Vec::with_capacity(wanted.min(256));
    macro_rules! newest_first {
        ($table:expr, $from:expr, $to:expr, $seq:expr) => {
            for entry in txn.open_table($table)?.range($from..=$to)?.rev() {
                if found.len() == wanted {
                    break;
                }
                let (key, id) = entry?;
                found.push(($seq(key.value()), id.value()));
            }
        };
    }
    match (query.status.map(Status::code), query.folder) {
        (None, None) => newest_first!(TENANT_UPLOADS, (tenant, 0), (tenant, last), |k: (
            &str,
            u64
        )| k.1),
        (Some(s), None) => newest_first!(BY_STATUS, (tenant, s, 0), (tenant, s, last), |k: (
            &str,
            u8,
            u64
        )| {
            k.2
        }),
        (None, Some(f)) => newest_first!(BY_FOLDER, (tenant, f, 0), (tenant, f, last), |k: (
            &str,
            &str,
            u64
        )| {
            k.2
        }),
        (Some(s), Some(f)) => newest_first!(
            BY_FOLDER_STATUS,
            (tenant, f, s, 0),
            (tenant, f, s, last),
            |k: (&str, &str, u8, u64)| k.3
        ),
    }
    let more = found.len() > query.limit;
    found.truncate(query.limit);
    let uploads = txn.open_table(UPLOADS)?;
    let mut records = Vec::with_capacity(found.len());
    for (_, id) in &found {
        if let Some(record) = super::stored_record(&uploads, *id)? {
            records.push(record);
        }
    }
    let next = more.then(|| found.last().map(|(seq, _)| *seq)).flatten();
    Ok(Page { records, next })
}

/// The cursor a client sends for the page after `next`: opaque to it.
pub fn cursor(next: u64) -> String {
    format!("{:016x}", next ^ CURSOR_MASK)
}

/// The sequence a cursor stands for; `None` for anything [`cursor`] did not make.
pub fn parse_cursor(text: &str) -> Option<u64> {
    if text.len() != 16 {
        return None;
    }
    u64::from_str_radix(text, 16).ok().map(|v| v ^ CURSOR_MASK)
}

/// Keeps cursors from reading as the sequence numbers they are, so that no
/// client comes to rely on their form.
const CURSOR_MASK: u64 = 0x5a17_c3e9_0b4d_86f1;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::record::TransitionPatch;
    use crate::store::{Store, WriteOp};
    use uuid::Uuid;

    /// Every page of `query`, following the cursors: the ids, newest first.
    fn all_pages(store: &Store, mut query: PageQuery<'_>) -> Vec<Vec<Uuid>> {
        let mut pages = Vec::new();
        loop {
            let page = store.page(&query).unwrap();
            pages.push(page.records.iter().map(|r| r.id).collect());
            match page.next {
                Some(next) => query.before = Some(parse_cursor(&cursor(next)).unwrap()),
                None => return pages,
            }
        }
    }

    #[test]
    fn pages_follow_status_and_folder_through_changes_deletions_and_a_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("status.redb");
        let store = Store::open(&path).unwrap();
        // Seven uploads of "t" in two folders, and one of another tenant.
        let mut ids = Vec::new();
        for i in 0..7 {
            let mut record = crate::store::tests::sample("t");
            record.folder = if i % 2 == 0 { "root/a" } else { "root/b" }.into();
            ids.push(record.id);
            store.insert(&mut record).unwrap();
        }
        store
            .insert(&mut crate::store::tests::sample("other"))
            .unwrap();
        let query = |status, folder, limit| PageQuery {
            tenant: "t",
            status,
            folder,
            before: None,
            limit,
        };
        let newest_first: Vec<Uuid> = ids.iter().rev().copied().collect();
        let pages = all_pages(&store, query(None, None, 3));
        assert_eq!(pages.concat(), newest_first);
        assert_eq!(pages.iter().map(Vec::len).collect::<Vec<_>>(), [3, 3, 1]);
        // A page that ends exactly at the last upload has no cursor.
        assert_eq!(all_pages(&store, query(None, None, 7)).len(), 1);

        // Three go on to processing, one of them fails; one is deleted.
        for id in [ids[0], ids[3], ids[4]] {
            store
                .transition(id, Status::Processing, TransitionPatch::default())
                .unwrap();
        }
        store
            .transition(ids[4], Status::Failed, TransitionPatch::default())
            .unwrap();
        store
            .apply_batch(vec![WriteOp::Delete { id: ids[6] }])
            .unwrap()
            .remove(0)
            .unwrap();
        drop(store);
        let store = Store::open(&path).unwrap();

        let processing = all_pages(&store, query(Some(Status::Processing), None, 1));
        assert_eq!(processing.concat(), [ids[3], ids[0]]);
        let pending = all_pages(&store, query(Some(Status::Pending), None, 50));
        assert_eq!(pending.concat(), [ids[5], ids[2], ids[1]]);
        let in_a = all_pages(&store, query(None, Some("root/a"), 2));
        assert_eq!(in_a.concat(), [ids[4], ids[2], ids[0]]);
        let both = all_pages(&store, query(Some(Status::Processing), Some("root/b"), 5));
        assert_eq!(both.concat(), [ids[3]]);
        let failed = all_pages(&store, query(Some(Status::Failed), Some("root/a"), 5));
        assert_eq!(failed.concat(), [ids[4]]);
        assert!(all_pages(&store, query(Some(Status::Completed), None, 5))
            .concat()
            .is_empty());
        // A folder is exact: no prefix match.
        assert!(all_pages(&store, query(None, Some("root"), 5))
            .concat()
            .is_empty());
    }

    #[test]
    fn a_database_from_before_the_indexes_is_indexed_at_open() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("status.redb");
        let store = Store::open(&path).unwrap();
        let mut record = crate::store::tests::sample("t");
        store.insert(&mut record).unwrap();
        drop(store);
        // As an older version left it: no index rows, no mark.
        {
            let db = redb::Database::create(&path).unwrap();
            let txn = db.begin_write().unwrap();
            txn.delete_table(BY_STATUS).unwrap();
            txn.delete_table(BY_FOLDER).unwrap();
            txn.delete_table(BY_FOLDER_STATUS).unwrap();
            txn.open_table(META).unwrap().remove(INDEXED).unwrap();
            txn.commit().unwrap();
        }
        let store = Store::open(&path).unwrap();
        let page = store
            .page(&PageQuery {
                tenant: "t",
                status: Some(Status::Pending),
                folder: Some("root"),
                before: None,
                limit: 5,
            })
            .unwrap();
        assert_eq!(page.records.len(), 1);
        assert_eq!(page.records[0].id, record.id);
    }

    #[test]
    fn only_cursors_made_here_are_read() {
        for seq in [1, 2, 1_000_000, u64::MAX] {
            assert_eq!(parse_cursor(&cursor(seq)), Some(seq));
        }
        for text in ["", "12", "zzzzzzzzzzzzzzzz", "00000000000000001"] {
            assert_eq!(parse_cursor(text), None, "{text}");
        }
    }
}
