//! API keys. Each key is a tenant. Only the SHA-256 of a key is stored, in its
//! own small database (`keys.redb`) so the `vidpipe keys` commands work while
//! the server runs: the server opens it only briefly, to reload after a change.
//!
//! Every change also writes a new random token to `keys.gen`. The server's
//! [`KeyRefresher`] thread reads that token every [`REFRESH_INTERVAL`] and
//! reloads the keys when it changed, then writes the token it loaded to
//! `keys.loaded`, a file it holds locked while it runs. A change made with
//! [`KeyFile`] (the `keys` commands) waits for that before it returns, so a
//! key created, changed or revoked is in force from the next request on; a
//! change the server cannot read at once (a `keys` command holding the file)
//! is loaded at a later tick. Requests only ever read the loaded map: no
//! request waits for the key file.
//!
//! A key may also carry the tenant's webhook endpoint and its signing secret.
//! That secret is stored as it is (it signs every delivery), so the key file
//! is as sensitive as the config file.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, PoisonError, RwLock};
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
        self.open_within(OPEN_PATIENCE)
    }

    /// Opens the key database, waiting up to `patience` for another process
    /// that has it open.
    fn open_within(&self, patience: Duration) -> Result<Database, StoreError> {
        let deadline = Instant::now() + patience;
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
        getrandom::fill(&mut raw).map_err(StoreError::Random)?;
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
        self.write(|txn| {
            txn.open_table(KEYS)?
                .insert(key.id.as_str(), serde_json::to_vec(&key)?.as_slice())?;
            Ok(())
        })?;
        self.announce_change()?;
        Ok((key, secret))
    }

    /// Every key, revoked ones included, oldest first.
    pub fn list(&self) -> Result<Vec<ApiKey>, StoreError> {
        self.list_within(OPEN_PATIENCE)
    }

    /// [`KeyFile::list`], waiting up to `patience` for another process that
    /// has the key database open.
    fn list_within(&self, patience: Duration) -> Result<Vec<ApiKey>, StoreError> {
        if !self.path.exists() {
            return Ok(Vec::new());
        }
        let db = self.open_within(patience)?;
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
        let updated = self.write(|txn| {
            let mut table = txn.open_table(KEYS)?;
            let existing = table
                .get(id)?
                .map(|bytes| serde_json::from_slice::<ApiKey>(bytes.value()))
                .transpose()?;
            Ok(match existing {
                Some(mut key) => {
                    change(&mut key)?;
                    table.insert(id, serde_json::to_vec(&key)?.as_slice())?;
                    Some(key)
                }
                None => None,
            })
        })?;
        if updated.is_some() {
            self.announce_change()?;
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

    /// Runs `f` in a write transaction of the key database, commits it and
    /// closes the file (so that a server can read it at once).
    fn write<T>(
        &self,
        f: impl FnOnce(&redb::WriteTransaction) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        let db = self.open()?;
        let txn = db.begin_write()?;
        let value = f(&txn)?;
        txn.commit()?;
        Ok(value)
    }

    /// The change token file.
    fn token_path(&self) -> PathBuf {
        self.path.with_extension("gen")
    }

    /// The file where a running server says which change token it has loaded.
    fn loaded_path(&self) -> PathBuf {
        self.path.with_extension("loaded")
    }

    /// Tells a server running on this data dir that the keys changed, and
    /// waits (up to [`ANNOUNCE_PATIENCE`]) until it has loaded them: when a
    /// change returns, the next request is judged by it.
    fn announce_change(&self) -> Result<(), StoreError> {
        let token = self.bump_generation()?;
        let Some(server) = RunningServer::find(&self.loaded_path())? else {
            return Ok(());
        };
        let deadline = Instant::now() + ANNOUNCE_PATIENCE;
        while server.loaded()? != token {
            if Instant::now() >= deadline {
                tracing::warn!(
                    "the running server has not loaded the key change yet; it will when it can read the key file"
                );
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        Ok(())
    }

    /// Writes a new random change token (opening the key database itself may
    /// touch its file, so its own timestamps cannot tell a change) and returns it.
    fn bump_generation(&self) -> Result<[u8; TOKEN_LEN], StoreError> {
        let mut token = [0u8; TOKEN_LEN];
        getrandom::fill(&mut token).map_err(StoreError::Random)?;
        std::fs::write(self.token_path(), token).map_err(|source| StoreError::Io {
            what: "writing the key change token",
            source,
        })?;
        Ok(token)
    }

    /// The change token as it is now; `None` while there is none.
    fn read_generation(&self) -> Result<Option<Vec<u8>>, StoreError> {
        match std::fs::read(self.token_path()) {
            Ok(token) => Ok(Some(token)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(source) => Err(StoreError::Io {
                what: "reading the key change token",
                source,
            }),
        }
    }
}

/// A new random webhook signing secret, `whsec_` and 64 hex digits.
fn new_webhook_secret() -> Result<String, StoreError> {
    let mut raw = [0u8; 32];
    getrandom::fill(&mut raw).map_err(StoreError::Random)?;
    Ok(format!("whsec_{}", hex::encode(raw)))
}

/// Hex SHA-256 of a secret: what is stored and compared.
pub fn hash_secret(secret: &str) -> String {
    hex::encode(Sha256::digest(secret.as_bytes()))
}

/// Length of the change token the `keys` commands write.
const TOKEN_LEN: usize = 16;

/// How often the refresher reads the change token.
pub const REFRESH_INTERVAL: Duration = Duration::from_millis(100);

/// How long a starting server waits for a `keys` command's look at `keys.loaded`.
const CLAIM_PATIENCE: Duration = Duration::from_secs(1);

/// How long a change waits for a running server to load it.
const ANNOUNCE_PATIENCE: Duration = Duration::from_secs(5);

/// The `keys.loaded` file of a running server: it holds the change token the
/// server has loaded, and the server keeps an exclusive `flock` on it for as
/// long as it runs (the kernel drops the lock if the process dies).
struct RunningServer(std::fs::File);

impl RunningServer {
    /// Claims the file for this server. Fails if another server holds it.
    fn claim(path: &Path) -> Result<RunningServer, StoreError> {
        let io = |source| StoreError::Io {
            what: "claiming the key change file",
            source,
        };
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(path)
            .map_err(io)?;
        // A `keys` command looking for a server holds a shared lock for a
        // moment; another server holds the exclusive one for good.
        let deadline = Instant::now() + CLAIM_PATIENCE;
        while !flock(&file, libc::LOCK_EX | libc::LOCK_NB).map_err(io)? {
            if Instant::now() >= deadline {
                return Err(io(std::io::Error::new(
                    std::io::ErrorKind::WouldBlock,
                    "another server runs on this data dir",
                )));
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        Ok(RunningServer(file))
    }

    /// The file of a server running on this data dir, if one is.
    fn find(path: &Path) -> Result<Option<RunningServer>, StoreError> {
        let io = |source| StoreError::Io {
            what: "looking for a running server",
            source,
        };
        let file = match std::fs::File::open(path) {
            Ok(file) => file,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(io(e)),
        };
        // A shared lock is free exactly when no server holds its exclusive one.
        if flock(&file, libc::LOCK_SH | libc::LOCK_NB).map_err(io)? {
            return Ok(None);
        }
        Ok(Some(RunningServer(file)))
    }

    /// The change token the server has loaded.
    fn loaded(&self) -> Result<Vec<u8>, StoreError> {
        use std::os::unix::fs::FileExt;
        let mut token = vec![0u8; TOKEN_LEN + 1];
        let n = self
            .0
            .read_at(&mut token, 0)
            .map_err(|source| StoreError::Io {
                what: "reading the loaded key change token",
                source,
            })?;
        token.truncate(n);
        Ok(token)
    }

    /// Records that the server has loaded change token `token`.
    fn set_loaded(&self, token: Option<&[u8]>) -> Result<(), StoreError> {
        use std::os::unix::fs::FileExt;
        let token = token.unwrap_or_default();
        let io = |source| StoreError::Io {
            what: "writing the loaded key change token",
            source,
        };
        self.0.write_all_at(token, 0).map_err(io)?;
        self.0.set_len(token.len() as u64).map_err(io)
    }
}

/// `flock(2)`; `Ok(false)` when a non-blocking lock is held by someone else.
fn flock(file: &std::fs::File, operation: libc::c_int) -> std::io::Result<bool> {
    use std::os::fd::AsRawFd;
    // SAFETY: flock has no memory-safety preconditions; the descriptor is open.
    if unsafe { libc::flock(file.as_raw_fd(), operation) } == 0 {
        return Ok(true);
    }
    let e = std::io::Error::last_os_error();
    if e.raw_os_error() == Some(libc::EWOULDBLOCK) {
        Ok(false)
    } else {
        Err(e)
    }
}

/// The server's view of the keys: active key hashes mapped to tenant ids,
/// and the tenants' webhook endpoints. Reading it never touches a file;
/// [`KeyCache::refresh`] (from the [`KeyRefresher`] thread) swaps in a new
/// view when the key file changed.
pub struct KeyCache {
    file: KeyFile,
    state: RwLock<CacheState>,
}

#[derive(Default)]
struct CacheState {
    /// The change token the keys were loaded at (`None`: no token file yet).
    generation: Option<Vec<u8>>,
    /// SHA-256 of an active secret -> tenant id (shared, so a request's copy costs no allocation).
    active: HashMap<[u8; 32], Arc<str>>,
    /// Tenant id of an active key -> its webhook endpoint and secret.
    webhooks: HashMap<String, TenantWebhook>,
    /// Tenant id of an active key -> the name it was created with.
    names: HashMap<String, String>,
}

impl KeyCache {
    /// A cache over the key file of `data_dir`, loaded now (blocking: it
    /// waits for a `keys` command that has the file open).
    pub fn load(data_dir: &Path) -> Result<KeyCache, StoreError> {
        let file = KeyFile::new(data_dir);
        let generation = file.read_generation()?;
        let keys = file.list()?;
        let cache = KeyCache {
            file,
            state: RwLock::default(),
        };
        cache.install(generation, keys);
        Ok(cache)
    }

    fn read_state(&self) -> std::sync::RwLockReadGuard<'_, CacheState> {
        self.state.read().unwrap_or_else(PoisonError::into_inner)
    }

    /// Number of active keys.
    pub fn active_count(&self) -> usize {
        self.read_state().active.len()
    }

    /// The tenant a bearer secret belongs to, if it is an active key.
    pub fn tenant_for(&self, secret: &str) -> Option<Arc<str>> {
        self.with_tenant(secret, Arc::clone)
    }

    /// `f` called with the tenant of a bearer secret, if it is an active key,
    /// under one read of the cache: nothing is cloned unless `f` clones it.
    pub fn with_tenant<T>(&self, secret: &str, f: impl FnOnce(&Arc<str>) -> T) -> Option<T> {
        let hash: [u8; 32] = Sha256::digest(secret.as_bytes()).into();
        self.read_state().active.get(&hash).map(f)
    }

    /// Whether `tenant` is the id of an active key.
    pub fn is_active(&self, tenant: &str) -> bool {
        self.read_state().webhooks.contains_key(tenant)
    }

    /// The name an active tenant's key was created with.
    pub fn key_name(&self, tenant: &str) -> Option<String> {
        self.read_state().names.get(tenant).cloned()
    }

    /// The webhook endpoint and secret of an active tenant.
    pub fn tenant_webhook(&self, tenant: &str) -> Option<TenantWebhook> {
        self.read_state().webhooks.get(tenant).cloned()
    }

    /// Reloads the keys if the change token differs from the one they were
    /// loaded at. Blocking, but never for long: a key file that a `keys`
    /// command holds open is left for the next call. Returns whether the
    /// keys were reloaded.
    pub fn refresh(&self) -> Result<bool, StoreError> {
        // Read before the keys: a change during the load makes the next call reload again.
        let generation = self.file.read_generation()?;
        if self.read_state().generation == generation {
            return Ok(false);
        }
        let keys = match self.file.list_within(Duration::ZERO) {
            Ok(keys) => keys,
            Err(StoreError::Open(redb::DatabaseError::DatabaseAlreadyOpen)) => return Ok(false),
            Err(e) => return Err(e),
        };
        self.install(generation, keys);
        Ok(true)
    }

    /// The change token the keys in force were loaded at.
    fn generation(&self) -> Option<Vec<u8>> {
        self.read_state().generation.clone()
    }

    /// Makes `keys`, read at change token `generation`, the ones in force.
    fn install(&self, generation: Option<Vec<u8>>, keys: Vec<ApiKey>) {
        let keys: Vec<ApiKey> = keys
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
        let names = keys
            .iter()
            .map(|k| (k.id.clone(), k.name.clone()))
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
        *self.state.write().unwrap_or_else(PoisonError::into_inner) = CacheState {
            generation,
            active,
            webhooks,
            names,
        };
    }
}

/// The thread that keeps a [`KeyCache`] current: it calls
/// [`KeyCache::refresh`] every [`REFRESH_INTERVAL`] until stopped.
pub struct KeyRefresher {
    /// Dropping it wakes and ends the thread.
    stop: Option<crossbeam_channel::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl KeyRefresher {
    /// Starts refreshing `cache`, as the one server of its data dir: the
    /// `keys` commands wait for this thread to load each change they make.
    pub fn start(cache: Arc<KeyCache>) -> Result<KeyRefresher, StoreError> {
        let server = RunningServer::claim(&cache.file.loaded_path())?;
        server.set_loaded(cache.generation().as_deref())?;
        let (stop, stopped) = crossbeam_channel::bounded::<()>(0);
        let spawned = std::thread::Builder::new()
            .name("vidpipe-keys".into())
            .spawn(move || {
                // A failure is logged when it starts and when it ends, not at every tick.
                let mut failing = false;
                while let Err(crossbeam_channel::RecvTimeoutError::Timeout) =
                    stopped.recv_timeout(REFRESH_INTERVAL)
                {
                    let refreshed = cache.refresh().and_then(|reloaded| {
                        if reloaded {
                            server.set_loaded(cache.generation().as_deref())?;
                        }
                        Ok(reloaded)
                    });
                    match refreshed {
                        Ok(reloaded) => {
                            if reloaded || failing {
                                tracing::info!(active = cache.active_count(), "API keys reloaded");
                            }
                            failing &= !reloaded;
                        }
                        Err(e) if !failing => {
                            failing = true;
                            tracing::warn!(error = %e, "cannot reload the API keys; the keys loaded before stay in force");
                        }
                        Err(_) => {}
                    }
                }
            });
        let thread = spawned.map_err(|source| StoreError::Io {
            what: "starting the key refresher",
            source,
        })?;
        Ok(KeyRefresher {
            stop: Some(stop),
            thread: Some(thread),
        })
    }

    /// Stops the thread and waits for it (at most one refresh, which never waits for the file).
    pub fn stop(mut self) {
        self.stop_now();
    }

    fn stop_now(&mut self) {
        drop(self.stop.take());
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl Drop for KeyRefresher {
    fn drop(&mut self) {
        self.stop_now();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn create_authenticate_revoke() {
        let dir = tempfile::tempdir().unwrap();
        let file = KeyFile::new(dir.path());
        let cache = KeyCache::load(dir.path()).unwrap();
        assert_eq!(cache.active_count(), 0);
        let (key, secret) = file.create("ci").unwrap();
        assert!(cache.refresh().unwrap());
        assert!(!cache.refresh().unwrap(), "nothing changed since");
        assert!(secret.starts_with("sk-") && secret.len() == 67);
        assert_eq!(cache.tenant_for(&secret).as_deref(), Some(key.id.as_str()));
        assert_eq!(cache.tenant_for("sk-wrong"), None);
        let listed = file.list().unwrap();
        assert_eq!(listed.len(), 1);
        assert_ne!(listed[0].hash, secret, "only the hash is stored");
        assert!(file.revoke(&key.id).unwrap());
        assert!(!file.revoke("nope").unwrap());
        cache.refresh().unwrap();
        assert_eq!(cache.tenant_for(&secret), None);
    }

    #[test]
    fn webhook_endpoint_and_secret_live_with_the_key() {
        let dir = tempfile::tempdir().unwrap();
        let file = KeyFile::new(dir.path());
        let cache = KeyCache::load(dir.path()).unwrap();
        let (key, _) = file
            .create_with_webhook("hooks", Some("https://hooks.test/a"))
            .unwrap();
        cache.refresh().unwrap();
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
        cache.refresh().unwrap();
        let now = cache.tenant_webhook(&key.id).unwrap();
        assert_eq!((now.url, now.secret.as_deref()), (None, Some("whsec_mine")));
        file.revoke(&key.id).unwrap();
        cache.refresh().unwrap();
        assert_eq!(cache.tenant_webhook(&key.id), None);
    }

    #[test]
    fn a_key_file_held_open_is_left_for_the_next_refresh() {
        let dir = tempfile::tempdir().unwrap();
        let file = KeyFile::new(dir.path());
        let cache = KeyCache::load(dir.path()).unwrap();
        let (_, secret) = file.create("a").unwrap();
        let held = file.open().unwrap();
        assert!(!cache.refresh().unwrap(), "waited for the file");
        assert_eq!(cache.tenant_for(&secret), None);
        drop(held);
        assert!(cache.refresh().unwrap());
        assert!(cache.tenant_for(&secret).is_some());
    }

    #[test]
    fn a_truncated_or_replaced_token_only_causes_a_reload() {
        let dir = tempfile::tempdir().unwrap();
        let file = KeyFile::new(dir.path());
        let (_, secret) = file.create("a").unwrap();
        let cache = KeyCache::load(dir.path()).unwrap();
        std::fs::write(file.token_path(), b"").unwrap();
        assert!(cache.refresh().unwrap());
        std::fs::remove_file(file.token_path()).unwrap();
        assert!(cache.refresh().unwrap());
        std::fs::write(dir.path().join("other"), b"x".repeat(4096)).unwrap();
        std::fs::rename(dir.path().join("other"), file.token_path()).unwrap();
        assert!(cache.refresh().unwrap());
        assert!(!cache.refresh().unwrap());
        assert!(cache.tenant_for(&secret).is_some());
    }

    #[test]
    fn the_refresher_sees_a_revocation_and_stops_at_once() {
        let dir = tempfile::tempdir().unwrap();
        let file = KeyFile::new(dir.path());
        let (key, secret) = file.create("a").unwrap();
        let cache = Arc::new(KeyCache::load(dir.path()).unwrap());
        let refresher = KeyRefresher::start(cache.clone()).unwrap();
        assert!(
            KeyRefresher::start(cache.clone()).is_err(),
            "one server per data dir"
        );
        // The revocation returns once the running server has loaded it.
        let revoking = Instant::now();
        file.revoke(&key.id).unwrap();
        assert!(revoking.elapsed() < ANNOUNCE_PATIENCE);
        assert_eq!(cache.tenant_for(&secret), None);
        let stopping = Instant::now();
        refresher.stop();
        assert!(
            stopping.elapsed() < REFRESH_INTERVAL,
            "{:?}",
            stopping.elapsed()
        );
        // With no server running, a change does not wait.
        let alone = Instant::now();
        file.create("b").unwrap();
        assert!(
            alone.elapsed() < ANNOUNCE_PATIENCE / 2,
            "{:?}",
            alone.elapsed()
        );
    }
}
