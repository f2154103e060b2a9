//! Rendered JSON of finished uploads. A `completed` or `failed` record
//! changes again only by a retry or a deletion, which forget it here, so
//! its `GET /uploads/{id}` body can be kept and served without a database
//! read or a render; records still in progress are always read fresh. Only
//! used where media URLs do not expire (local or public storage, not
//! presigned URLs).

use std::collections::HashMap;
use std::sync::RwLock;
use std::time::{Duration, Instant};

use bytes::Bytes;
use uuid::Uuid;

/// Most bodies kept; past it the cache starts over (it is only a shortcut).
const MAX_ENTRIES: usize = 10_000;

/// How long an upload that was deleted or retried is not kept again: a read
/// of it that began before the change must not put its old body back.
const FORGET_FOR: Duration = Duration::from_secs(5);

/// One kept body and the tenant allowed to see it.
#[derive(Clone)]
pub struct CachedView {
    /// Owner of the upload.
    pub tenant: String,
    /// The whole `{"data": ...}` response body.
    pub body: Bytes,
}

/// The cache: the kept bodies, and the uploads recently forgotten.
#[derive(Default)]
pub struct ViewCache(RwLock<Entries>);

/// What the lock guards.
#[derive(Default)]
struct Entries {
    kept: HashMap<Uuid, CachedView>,
    forgotten: HashMap<Uuid, Instant>,
}

/// What the cache holds for one id and tenant.
pub enum Kept {
    /// The body, for its owner.
    Body(Bytes),
    /// The upload is another tenant's.
    NotYours,
}

impl ViewCache {
    /// The kept body of a finished upload, if any, checked against `tenant`
    /// under the lock (nothing is copied for a caller who may not see it).
    pub fn get(&self, id: Uuid, tenant: &str) -> Option<Kept> {
        let entries = self.0.read().ok()?;
        let kept = entries.kept.get(&id)?;
        Some(if kept.tenant == tenant {
            Kept::Body(kept.body.clone())
        } else {
            Kept::NotYours
        })
    }

    /// Keeps the body of a finished upload.
    pub fn insert(&self, id: Uuid, view: CachedView) {
        if let Ok(mut entries) = self.0.write() {
            let recently = entries.forgotten.get(&id);
            if recently.is_some_and(|at| at.elapsed() < FORGET_FOR) {
                return;
            }
            if entries.kept.len() >= MAX_ENTRIES {
                entries.kept.clear();
            }
            entries.kept.insert(id, view);
        }
    }

    /// Drops the body of an upload that changed after all (retried) or is
    /// gone (deleted), and keeps none of it for [`FORGET_FOR`].
    pub fn forget(&self, id: Uuid) {
        if let Ok(mut entries) = self.0.write() {
            entries.kept.remove(&id);
            entries.forgotten.retain(|_, at| at.elapsed() < FORGET_FOR);
            entries.forgotten.insert(id, Instant::now());
        }
    }
}
