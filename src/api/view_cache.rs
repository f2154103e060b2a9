//! Rendered JSON of finished uploads. A `completed` or `failed` record never
//! changes again, so its `GET /uploads/{id}` body can be kept and served
//! without a database read or a render; records still in progress are
//! always read fresh. Only used where media URLs do not expire (local or
//! public storage, not presigned URLs).

use std::collections::HashMap;
use std::sync::RwLock;

use bytes::Bytes;
use uuid::Uuid;

/// Most bodies kept; past it the cache starts over (it is only a shortcut).
const MAX_ENTRIES: usize = 10_000;

/// One kept body and the tenant allowed to see it.
#[derive(Clone)]
pub struct CachedView {
    /// Owner of the upload.
    pub tenant: String,
    /// The whole `{"data": ...}` response body.
    pub body: Bytes,
}

/// The cache.
#[derive(Default)]
pub struct ViewCache(RwLock<HashMap<Uuid, CachedView>>);

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
        let map = self.0.read().ok()?;
        let kept = map.get(&id)?;
        Some(if kept.tenant == tenant {
            Kept::Body(kept.body.clone())
        } else {
            Kept::NotYours
        })
    }

    /// Keeps the body of a finished upload.
    pub fn insert(&self, id: Uuid, view: CachedView) {
        if let Ok(mut map) = self.0.write() {
            if map.len() >= MAX_ENTRIES {
                map.clear();
            }
            map.insert(id, view);
        }
    }
}
