//! API keys. Each key is a tenant. Only the SHA-256 of a key is stored, in its
//! own small database (`keys.redb`) so the `vidpipe keys` commands work while
//! the server runs: the server opens it only briefly, to reload after a change.
//!
//! A key may also carry the tenant's webhook endpoint and its signing secret.
//! That secret is stored as it is (it signs every delivery), so the key file
//! is as sensitive as the config file.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use time::OffsetDateTime;

use super::StoreError;

/// Key id -> JSON [`ApiKey`].
const KEYS: TableDefinition<&str, &[u8]> = TableDefinition::new("api_keys");

/// How long to wait for the other process (server or CLI) to close the key file.
const OPEN_PATIENCE: Duration = Duration::from_secs(10);

/// A stored API key: everything but the secret.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ApiKey {
    /// Stable id; also the tenant id the key's uploads belong to.
    pub id: String,
    /// Human label given at creation.
    pub name: String,
    /// Hex SHA-256 of the full secret.
    pub hash: String,
    /// First characters of the secret, to recognise it in listings.
    pub prefix: String,
    /// When it was created.
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    /// When it was revoked; a revoked key authenticates nothing.
    #[serde(with = "time::serde::rfc3339::option")]
    pub revoked_at: Option<OffsetDateTime>,
    /// Where the tenant's webhook events go; none, no tenant events.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub webhook_url: Option<String>,
    /// Signs deliveries to `webhook_url` and to the tenant's uploads' `callback_url`s.
    /// Generated at creation; keys from before webhooks have none until one is set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub webhook_secret: Option<String>,
}

/// A tenant's webhook endpoint, as the server uses it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TenantWebhook {
    /// Endpoint for every upload of the tenant, if set.
    pub url: Option<String>,
    /// The signing secret, if the key has one.
    pub secret: Option<String>,
}

/// What `set_webhook` does to a key's signing secret.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SecretChange {
    /// Keep it; generate one if the key has none.
    Keep,
    /// Replace it with a new random one.
    Rotate,
    /// Replace it with this one.
    Set(String),
}

/// The key file of one data dir.
pub struct KeyFile {
    path: PathBuf,
}

impl KeyFile {
    /// The key file inside `data_dir`.
    pub fn new(data_dir: &Path) -> KeyFile {
        KeyFile {
            path: data_dir.join("keys.redb"),
        }
    }

    fn open(&self) -> Result<Database, StoreError> {
        let deadline = Instant::now() + OPEN_PATIENCE;
        loop {
            match Database::create(&self.path) {
                Ok(db) => return Ok(db),
                Err(redb::DatabaseError::DatabaseAlreadyOpen) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(20));
                }
                Err(e) => return Err(e.into()),
            }
        }
    }

    /// Creates a key and returns it with its secret, which is shown once and never stored.
    pub fn create(&self, name: &str) -> Result<(ApiKey, String), StoreError> {
        self.create_with_webhook(name, None)
    }

    /// Creates a key, with a webhook endpoint if given, and a new webhook signing secret.
    pub fn create_with_webhook(
        &self,
        name: &str,
        webhook_url: Option<&str>,
    ) -> Result<(ApiKey, String), StoreError> {
        let webhook_secret = new_webhook_secret()?;
        let mut raw = [0u8; 32];
        getrandom::fill(&mut raw).map_err(|e| StoreError::Db(format!("no randomness: {e}")))?;
        let secret = format!("sk-{}", hex::encode(raw));
        let key = ApiKey {
            id: uuid::Uuid::new_v4().simple().to_string()[..16].to_string(),
            name: name.to_string(),
            hash: hash_secret(&secret),
            prefix: secret[..10].to_string(),
            created_at: super::record::now_utc(),
            revoked_at: None,
            webhook_url: webhook_url.map(str::to_string),
            webhook_secret: Some(webhook_secret),
        };
        let db = self.open()?;
        let txn = db.begin_write()?;
        txn.open_table(KEYS)?
            .insert(key.id.as_str(), serde_json::to_vec(&key)?.as_slice())?;
        txn.commit()?;
        self.bump_generation()?;
        Ok((key, secret))
    }

    /// Every key, revoked ones included, oldest first.
    pub fn list(&self) -> Result<Vec<ApiKey>, StoreError> {
        if !self.path.exists() {
            return Ok(Vec::new());
        }
        let db = self.open()?;
        let txn = db.begin_read()?;
        let table = match txn.open_table(KEYS) {
            Ok(table) => table,
            Err(redb::TableError::TableDoesNotExist(_)) => return Ok(Vec::new()),
            Err(e) => return Err(e.into()),
        };
        let mut keys = Vec::new();
        for entry in table.iter()? {
            let (_, bytes) = entry?;
            keys.push(serde_json::from_slice::<ApiKey>(bytes.value())?);
        }
        keys.sort_by_key(|k| k.created_at);
        Ok(keys)
    }

    /// Revokes a key by id. Returns false when there is no such key.
    pub fn revoke(&self, id: &str) -> Result<bool, StoreError> {
        let revoked = self.update(id, |key| {
            key.revoked_at.get_or_insert_with(super::record::now_utc);
            Ok(())
        })?;
        Ok(revoked.is_some())
    }

    /// Changes one key in one write transaction; `None` when there is no such key.
    fn update(
        &self,
        id: &str,
        change: impl FnOnce(&mut ApiKey) -> Result<(), StoreError>,
    ) -> Result<Option<ApiKey>, StoreError> {
        let db = self.open()?;
        let txn = db.begin_write()?;
        let updated = {
            let mut table = txn.open_table(KEYS)?;
            let existing = table
                .get(id)?
                .map(|bytes| serde_json::from_slice::<ApiKey>(bytes.value()))
                .transpose()?;
            match existing {
                Some(mut key) => {
                    change(&mut key)?;
                    table.insert(id, serde_json::to_vec(&key)?.as_slice())?;
                    Some(key)
                }
                None => None,
            }
        };
        txn.commit()?;
        if updated.is_some() {
            self.bump_generation()?;
        }
        Ok(updated)
    }

    /// Sets (`Some(Some(url))`), clears (`Some(None)`) or keeps (`None`) a key's
    /// webhook endpoint, and keeps, rotates or sets its signing secret. Returns the
    /// updated key, or `None` when there is no such key.
    pub fn set_webhook(
        &self,
        id: &str,
        webhook_url: Option<Option<&str>>,
        secret: SecretChange,
    ) -> Result<Option<ApiKey>, StoreError> {
        self.update(id, |key| {
            if let Some(url) = webhook_url {
                key.webhook_url = url.map(str::to_string);
            }
            key.webhook_secret = match (secret, key.webhook_secret.take()) {
                (SecretChange::Keep, Some(old)) => Some(old),
                (SecretChange::Keep, None) | (SecretChange::Rotate, _) => {
                    Some(new_webhook_secret()?)
                }
                (SecretChange::Set(new), _) => Some(new),
            };
            Ok(())
        })
    }

    /// Opens the change token file, creating it empty if missing.
    fn open_generation(&self) -> Result<std::fs::File, StoreError> {
        std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(self.path.with_extension("gen"))
            .map_err(|e| StoreError::Db(format!("key change token: {e}")))
    }

    /// Records that the keys changed, for servers watching this data dir:
    /// 16 new random bytes written in place, so a server that maps the file
    /// sees them with one memory read. (Opening the key database itself may
    /// touch its file, so the database's own timestamps cannot tell a change.)
    fn bump_generation(&self) -> Result<(), StoreError> {
        use std::os::unix::fs::FileExt;
        let mut token = [0u8; TOKEN_LEN];
        getrandom::fill(&mut token).map_err(|e| StoreError::Db(format!("no randomness: {e}")))?;
        self.open_generation()?
            .write_all_at(&token, 0)
            .map_err(|e| StoreError::Db(format!("key change token: {e}")))
    }
}

/// A new random webhook signing secret, `whsec_` and 64 hex digits.
fn new_webhook_secret() -> Result<String, StoreError> {
    let mut raw = [0u8; 32];
    getrandom::fill(&mut raw).map_err(|e| StoreError::Db(format!("no randomness: {e}")))?;
    Ok(format!("whsec_{}", hex::encode(raw)))
}

/// Hex SHA-256 of a secret: what is stored and compared.
pub fn hash_secret(secret: &str) -> String {
    hex::encode(Sha256::digest(secret.as_bytes()))
}

/// Length of the change token at the start of `keys.gen`.
const TOKEN_LEN: usize = 16;

/// The change token file mapped shared into memory: the page the `keys`
/// commands write with `pwrite` is the page this mapping reads, so a change
/// is seen by the next request without a system call.
struct TokenMap {
    ptr: *const u8,
}

// SAFETY: the mapping is read-only on this side, lives as long as the value
// and is only read with volatile byte loads; any thread may do that.
unsafe impl Send for TokenMap {}
// SAFETY: as above.
unsafe impl Sync for TokenMap {}

impl TokenMap {
    /// Maps the first bytes of `file`, first growing it to hold a token.
    fn new(file: &std::fs::File) -> Result<TokenMap, StoreError> {
        use std::os::fd::AsRawFd;
        let err = |e: std::io::Error| StoreError::Db(format!("key change token: {e}"));
        if file.metadata().map_err(err)?.len() < TOKEN_LEN as u64 {
            file.set_len(TOKEN_LEN as u64).map_err(err)?;
        }
        // SAFETY: a fresh read-only shared mapping of an open file, of a
        // length the file now has; the kernel picks the address.
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                TOKEN_LEN,
                libc::PROT_READ,
                libc::MAP_SHARED,
                file.as_raw_fd(),
                0,
            )
        };
        if ptr == libc::MAP_FAILED {
            return Err(err(std::io::Error::last_os_error()));
        }
        Ok(TokenMap {
            ptr: ptr.cast_const().cast(),
        })
    }

    /// The token as it is now. A read racing a write may mix old and new
    /// bytes; that differs from the loaded token too, so it only causes a
    /// reload, which reads the token again.
    fn read(&self) -> [u8; TOKEN_LEN] {
        let mut token = [0u8; TOKEN_LEN];
        for (i, byte) in token.iter_mut().enumerate() {
            // SAFETY: `i` is within the mapped length; the bytes may change
            // under us (another process writes them), hence volatile reads.
            *byte = unsafe { std::ptr::read_volatile(self.ptr.add(i)) };
        }
        token
    }
}

impl Drop for TokenMap {
    fn drop(&mut self) {
        // SAFETY: unmaps exactly the mapping made in `new`, once.
        unsafe { libc::munmap(self.ptr.cast_mut().cast(), TOKEN_LEN) };
    }
}

/// The server's view of the keys: active key hashes mapped to tenant ids,
/// reloaded whenever the key file changes, so a new or revoked key takes
/// effect on the next request.
pub struct KeyCache {
    file: KeyFile,
    state: RwLock<CacheState>,
    /// Serialises reloads so concurrent requests do not contend for the file.
    reloading: Mutex<()>,
    /// The change token, mapped: one memory read per request tells a change.
    /// (The file must never be truncated while a server runs.)
    generation: TokenMap,
}

#[derive(Default)]
struct CacheState {
    /// False until the first load.
    loaded: bool,
    /// The change token the map was loaded at.
    generation: [u8; TOKEN_LEN],
    /// SHA-256 of an active secret -> tenant id (shared, so a request's copy costs no allocation).
    active: HashMap<[u8; 32], Arc<str>>,
    /// Tenant id of an active key -> its webhook endpoint and secret.
    webhooks: HashMap<String, TenantWebhook>,
}

impl CacheState {
    /// Loaded, and at the key file's change token `generation`.
    fn is_at(&self, generation: &[u8; TOKEN_LEN]) -> bool {
        self.loaded && self.generation == *generation
    }
}

impl KeyCache {
    /// A cache over the key file of `data_dir`, loaded now.
    pub fn new(data_dir: &Path) -> Result<KeyCache, StoreError> {
        let file = KeyFile::new(data_dir);
        let generation = TokenMap::new(&file.open_generation()?)?;
        let cache = KeyCache {
            file,
            state: RwLock::new(CacheState::default()),
            reloading: Mutex::new(()),
            generation,
        };
        cache.reload_if_changed()?;
        Ok(cache)
    }

    /// Number of active keys.
    pub fn active_count(&self) -> usize {
        self.state.read().map(|s| s.active.len()).unwrap_or(0)
    }

    /// The tenant a bearer secret belongs to, if it is an active key.
    /// Blocking only when the key file changed and is reloaded.
    pub fn tenant_for(&self, secret: &str) -> Result<Option<Arc<str>>, StoreError> {
        self.with_tenant(secret, Arc::clone)
    }

    /// `f` called with the tenant of a bearer secret, if it is an active key,
    /// under one read of the cache: nothing is cloned unless `f` clones it.
    /// Blocking only when the key file changed and is reloaded.
    pub fn with_tenant<T>(
        &self,
        secret: &str,
        f: impl FnOnce(&Arc<str>) -> T,
    ) -> Result<Option<T>, StoreError> {
        let hash: [u8; 32] = Sha256::digest(secret.as_bytes()).into();
        let generation = self.current_generation();
        {
            let state = self.read_state()?;
            if state.is_at(&generation) {
                return Ok(state.active.get(&hash).map(f));
            }
        }
        self.reload_if_changed()?;
        Ok(self.read_state()?.active.get(&hash).map(f))
    }

    fn read_state(&self) -> Result<std::sync::RwLockReadGuard<'_, CacheState>, StoreError> {
        self.state
            .read()
            .map_err(|_| StoreError::Db("key cache poisoned".into()))
    }

    /// The webhook endpoint and secret of an active tenant. Blocking: may reload
    /// the key file; if that fails, answers from what was loaded before.
    pub fn tenant_webhook(&self, tenant: &str) -> Option<TenantWebhook> {
        if let Err(e) = self.reload_if_changed() {
            tracing::warn!(error = %e, "cannot reload the key file; using the keys loaded before");
        }
        let state = self.state.read().ok()?;
        state.webhooks.get(tenant).cloned()
    }

    fn current_generation(&self) -> [u8; TOKEN_LEN] {
        self.generation.read()
    }

    fn is_fresh(&self, generation: &[u8; TOKEN_LEN]) -> Result<bool, StoreError> {
        Ok(self.read_state()?.is_at(generation))
    }

    fn reload_if_changed(&self) -> Result<(), StoreError> {
        if self.is_fresh(&self.current_generation())? {
            return Ok(());
        }
        let _one_at_a_time = self
            .reloading
            .lock()
            .map_err(|_| StoreError::Db("key cache poisoned".into()))?;
        // Read before the keys: a change during the load triggers another.
        let generation = self.current_generation();
        if self.is_fresh(&generation)? {
            return Ok(());
        }
        let keys: Vec<ApiKey> = self
            .file
            .list()?
            .into_iter()
            .filter(|k| k.revoked_at.is_none())
            .collect();
        let webhooks = keys
            .iter()
            .map(|k| {
                let webhook = TenantWebhook {
                    url: k.webhook_url.clone(),
                    secret: k.webhook_secret.clone(),
                };
                (k.id.clone(), webhook)
            })
            .collect();
        // Stored hashes are hex; one that does not decode matches no secret.
        let active = keys
            .into_iter()
            .filter_map(|k| {
                let mut raw = [0u8; 32];
                hex::decode_to_slice(&k.hash, &mut raw).ok()?;
                Some((raw, Arc::from(k.id)))
            })
            .collect();
        let mut state = self
            .state
            .write()
            .map_err(|_| StoreError::Db("key cache poisoned".into()))?;
        state.loaded = true;
        state.generation = generation;
        state.active = active;
        state.webhooks = webhooks;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn create_authenticate_revoke() {
        let dir = tempfile::tempdir().unwrap();
        let file = KeyFile::new(dir.path());
        let cache = KeyCache::new(dir.path()).unwrap();
        assert_eq!(cache.active_count(), 0);
        let (key, secret) = file.create("ci").unwrap();
        assert!(secret.starts_with("sk-") && secret.len() == 67);
        assert_eq!(
            cache.tenant_for(&secret).unwrap().as_deref(),
            Some(key.id.as_str())
        );
        assert_eq!(cache.tenant_for("sk-wrong").unwrap(), None);
        let listed = file.list().unwrap();
        assert_eq!(listed.len(), 1);
        assert_ne!(listed[0].hash, secret, "only the hash is stored");
        assert!(file.revoke(&key.id).unwrap());
        assert!(!file.revoke("nope").unwrap());
        assert_eq!(cache.tenant_for(&secret).unwrap(), None);
    }

    #[test]
    fn webhook_endpoint_and_secret_live_with_the_key() {
        let dir = tempfile::tempdir().unwrap();
        let file = KeyFile::new(dir.path());
        let cache = KeyCache::new(dir.path()).unwrap();
        let (key, _) = file
            .create_with_webhook("hooks", Some("https://hooks.test/a"))
            .unwrap();
        let first = cache.tenant_webhook(&key.id).unwrap();
        assert_eq!(first.url.as_deref(), Some("https://hooks.test/a"));
        assert!(first.secret.as_deref().unwrap().starts_with("whsec_"));

        let kept = file
            .set_webhook(
                &key.id,
                Some(Some("https://hooks.test/b")),
                SecretChange::Keep,
            )
            .unwrap()
            .unwrap();
        assert_eq!(kept.webhook_secret, first.secret);
        let rotated = file
            .set_webhook(&key.id, None, SecretChange::Rotate)
            .unwrap()
            .unwrap();
        assert_ne!(rotated.webhook_secret, first.secret);
        assert_eq!(rotated.webhook_url.as_deref(), Some("https://hooks.test/b"));
        let set = file
            .set_webhook(&key.id, Some(None), SecretChange::Set("whsec_mine".into()))
            .unwrap()
            .unwrap();
        assert_eq!(set.webhook_secret.as_deref(), Some("whsec_mine"));
        assert!(file
            .set_webhook("nope", None, SecretChange::Keep)
            .unwrap()
            .is_none());
        let now = cache.tenant_webhook(&key.id).unwrap();
        assert_eq!((now.url, now.secret.as_deref()), (None, Some("whsec_mine")));
        file.revoke(&key.id).unwrap();
        assert_eq!(cache.tenant_webhook(&key.id), None);
    }
}
