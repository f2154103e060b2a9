//! The supervisor tree: registry (sole writer of uploads and their events),
//! intake, transcoder pool, uploader and webhook delivery, wired through
//! [`Peers`] so a restarted child is found by everyone that talks to it.

pub mod cleaner;
pub mod events;
pub mod intake;
pub mod lifecycle;
pub mod recovery;
pub mod registry;
pub mod supervisor;
pub mod sweeper;
pub mod transcoder;
pub mod uploader;
pub mod webhooks;

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock};

use ractor::factory::FactoryMessage;
use ractor::{ActorRef, Message};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use uuid::Uuid;

use crate::config::Config;
use crate::layout::DataLayout;
use crate::storage::FinalStorage;
use crate::store::Store;

/// A child actor's current reference; replaced when the supervisor restarts it.
pub struct Slot<M: Message>(RwLock<Option<ActorRef<M>>>);

impl<M: Message> Default for Slot<M> {
    fn default() -> Self {
        Slot(RwLock::new(None))
    }
}

impl<M: Message> Slot<M> {
    /// The live reference, if the child is running.
    pub fn get(&self) -> Option<ActorRef<M>> {
        self.0.read().ok().and_then(|r| r.clone())
    }

    fn set(&self, actor: Option<ActorRef<M>>) {
        if let Ok(mut slot) = self.0.write() {
            *slot = actor;
        }
    }
}

/// How the actors find each other.
#[derive(Default)]
pub struct Peers {
    /// The status registry.
    pub registry: Slot<registry::RegistryMsg>,
    /// The intake actor the HTTP handlers hand staged uploads to.
    pub intake: Slot<intake::IntakeMsg>,
    /// The transcoder pool.
    pub transcoders: Slot<FactoryMessage<Uuid, transcoder::TranscodeJob>>,
    /// The uploader to final storage.
    pub uploader: Slot<uploader::UploaderMsg>,
    /// Webhook delivery.
    pub webhooks: Slot<webhooks::WebhookMsg>,
}

/// Live progress (0-100) of running transcodes, kept in memory only: a tick
/// is not worth a durable commit.
#[derive(Default)]
pub struct ProgressBoard(RwLock<HashMap<Uuid, u8>>);

impl ProgressBoard {
    /// Progress of one upload, if it is being transcoded.
    pub fn get(&self, id: Uuid) -> Option<u8> {
        self.0.read().ok().and_then(|m| m.get(&id).copied())
    }

    fn set(&self, id: Uuid, percent: u8) {
        if let Ok(mut m) = self.0.write() {
            m.insert(id, percent);
        }
    }

    /// Records a tick of a running transcode; a late tick of a finished one is dropped.
    fn update(&self, id: Uuid, percent: u8) {
        if let Ok(mut m) = self.0.write() {
            if let Some(p) = m.get_mut(&id) {
                *p = percent;
            }
        }
    }

    /// Uploads being transcoded now.
    pub fn running(&self) -> Vec<Uuid> {
        self.0
            .read()
            .map(|m| m.keys().copied().collect())
            .unwrap_or_default()
    }

    fn clear(&self, id: Uuid) {
        if let Ok(mut m) = self.0.write() {
            m.remove(&id);
        }
    }
}

/// The uploads queued in the transcoder pool or being transcoded there, so
/// that none is queued twice (recovery after a pool restart and an intake
/// task may both queue the same upload).
#[derive(Default)]
pub struct InPool(Mutex<HashSet<Uuid>>);

impl InPool {
    /// Marks `id` as in the pool; false if it already was.
    fn insert(&self, id: Uuid) -> bool {
        self.0.lock().map(|mut set| set.insert(id)).unwrap_or(true)
    }

    /// `id` left the pool (its job ended, or it was never dispatched).
    pub(crate) fn remove(&self, id: Uuid) {
        if let Ok(mut set) = self.0.lock() {
            set.remove(&id);
        }
    }

    /// The pool was replaced: nothing is in it any more.
    fn clear(&self) {
        if let Ok(mut set) = self.0.lock() {
            set.clear();
        }
    }
}

/// A job's place in [`InPool`], given up when dropped (however the job
/// ends, a panic included) or earlier with [`PoolEntry::leave`].
pub(crate) struct PoolEntry<'a> {
    pool: &'a InPool,
    id: Uuid,
    left: bool,
}

impl<'a> PoolEntry<'a> {
    /// The place of `id`, which is in `pool`.
    pub(crate) fn of(pool: &'a InPool, id: Uuid) -> PoolEntry<'a> {
        PoolEntry {
            pool,
            id,
            left: false,
        }
    }

    /// Leaves the pool now, before the job hands the upload on (whoever gets
    /// it may queue it again).
    pub(crate) fn leave(&mut self) {
        if !self.left {
            self.left = true;
            self.pool.remove(self.id);
        }
    }
}

impl Drop for PoolEntry<'_> {
    fn drop(&mut self) {
        self.leave();
    }
}

/// The transcodes running now, each with its own stop: a cancel or a
/// deletion stops one job; the server's stop (their parent) stops them all.
#[derive(Default)]
pub struct RunningJobs(Mutex<HashMap<Uuid, CancellationToken>>);

impl RunningJobs {
    /// Registers the job of `id`, stopped with the server or by
    /// [`RunningJobs::stop`], until the returned place is dropped.
    pub(crate) fn start<'a>(&'a self, id: Uuid, server_stop: &CancellationToken) -> RunningJob<'a> {
        let stop = server_stop.child_token();
        if let Ok(mut jobs) = self.0.lock() {
            jobs.insert(id, stop.clone());
        }
        RunningJob {
            jobs: self,
            id,
            stop,
        }
    }

    /// Stops the transcode of `id`, if one runs; true if one did.
    pub fn stop(&self, id: Uuid) -> bool {
        let token = self.0.lock().ok().and_then(|jobs| jobs.get(&id).cloned());
        token.inspect(CancellationToken::cancel).is_some()
    }

    /// Whether a transcode of `id` is running.
    pub fn is_running(&self, id: Uuid) -> bool {
        self.0.lock().is_ok_and(|jobs| jobs.contains_key(&id))
    }
}

/// A job's place in [`RunningJobs`], given up when dropped.
pub(crate) struct RunningJob<'a> {
    jobs: &'a RunningJobs,
    id: Uuid,
    /// Cancelled when the job is to stop.
    pub(crate) stop: CancellationToken,
}

impl Drop for RunningJob<'_> {
    fn drop(&mut self) {
        if let Ok(mut jobs) = self.jobs.0.lock() {
            jobs.remove(&self.id);
        }
    }
}

/// A set of media tokens, shared between actors and handlers.
#[derive(Default)]
pub struct TokenSet(RwLock<HashSet<String>>);

impl TokenSet {
    /// Adds `token`.
    pub fn add(&self, token: &str) {
        if let Ok(mut set) = self.0.write() {
            set.insert(token.to_string());
        }
    }

    /// Removes `token`.
    pub fn remove(&self, token: &str) {
        if let Ok(mut set) = self.0.write() {
            set.remove(token);
        }
    }

    /// Whether `token` is in the set.
    pub fn contains(&self, token: &str) -> bool {
        self.0.read().is_ok_and(|set| set.contains(token))
    }
}

/// The uploads whose ladder can be played while it is written, by media
/// token: what `/preview/` serves. An entry is added by the transcode that
/// wrote the preview and goes when the upload leaves processing and
/// uploading, or is deleted; the entry of a completed upload stays for
/// [`PREVIEW_AFTER_COMPLETION`], so that a player still on the preview is
/// sent on to the finished files. Nothing of it is durable (a restart
/// transcodes again, and a new preview comes with it).
#[derive(Default)]
pub struct Previews(RwLock<HashMap<String, PreviewEntry>>);

/// How long a completed upload's preview URLs lead to its finished files.
pub const PREVIEW_AFTER_COMPLETION: std::time::Duration = std::time::Duration::from_secs(600);

/// One upload's preview.
struct PreviewEntry {
    id: Uuid,
    /// When the upload was completed, if it was.
    completed: Option<std::time::Instant>,
}

impl Previews {
    /// `id`'s preview, under its media `token`, can be served.
    pub fn add(&self, token: &str, id: Uuid) {
        if let Ok(mut map) = self.0.write() {
            map.retain(|_, entry| {
                entry
                    .completed
                    .is_none_or(|at| at.elapsed() < PREVIEW_AFTER_COMPLETION)
            });
            map.insert(
                token.to_string(),
                PreviewEntry {
                    id,
                    completed: None,
                },
            );
        }
    }

    /// The upload whose preview is, or was until its completion, under `token`.
    pub fn upload_of(&self, token: &str) -> Option<Uuid> {
        let map = self.0.read().ok()?;
        let entry = map.get(token)?;
        let recent = entry
            .completed
            .is_none_or(|at| at.elapsed() < PREVIEW_AFTER_COMPLETION);
        recent.then_some(entry.id)
    }

    /// `id` was completed: its preview leads to its finished files for a while.
    pub fn completed(&self, id: Uuid) {
        if let Ok(mut map) = self.0.write() {
            for entry in map.values_mut().filter(|entry| entry.id == id) {
                entry.completed = Some(std::time::Instant::now());
            }
        }
    }

    /// Whether `record`'s preview is served now.
    pub fn serves(&self, record: &crate::store::record::UploadRecord) -> bool {
        record.preview.is_some() && self.upload_of(&record.media_token) == Some(record.id)
    }

    /// `id`'s preview is over.
    pub fn end(&self, id: Uuid) {
        if let Ok(mut map) = self.0.write() {
            map.retain(|_, entry| entry.id != id);
        }
    }
}

/// Uploads accepted and not yet terminal, per tenant: the per-tenant limit.
#[derive(Default)]
pub struct TenantLoad(Mutex<HashMap<String, usize>>);

impl TenantLoad {
    /// Uploads of `tenant` in flight.
    pub fn get(&self, tenant: &str) -> usize {
        self.0
            .lock()
            .map(|m| m.get(tenant).copied().unwrap_or(0))
            .unwrap_or(0)
    }

    /// Counts one more upload of `tenant`.
    pub fn add(&self, tenant: &str) {
        if let Ok(mut m) = self.0.lock() {
            *m.entry(tenant.to_string()).or_default() += 1;
        }
    }

    /// Counts one upload of `tenant` as finished.
    pub fn finish(&self, tenant: &str) {
        if let Ok(mut m) = self.0.lock() {
            if let Some(n) = m.get_mut(tenant) {
                *n = n.saturating_sub(1);
                if *n == 0 {
                    m.remove(tenant);
                }
            }
        }
    }
}

/// What every actor shares: configuration, storage and the way to its peers.
pub struct Services {
    /// Validated configuration.
    pub config: Arc<Config>,
    /// Folders under the data dir.
    pub layout: DataLayout,
    /// The status database; actors other than the registry only read it.
    pub store: Arc<Store>,
    /// Final storage backend.
    pub storage: Arc<dyn FinalStorage>,
    /// In-memory progress of running transcodes.
    pub progress: ProgressBoard,
    /// Accepted uploads not yet picked up by a transcoder (admission control).
    pub queued: AtomicUsize,
    /// The uploads in the transcoder pool now.
    pub in_pool: InPool,
    /// Uploads in flight per tenant (admission control).
    pub tenant_load: TenantLoad,
    /// References to the live children.
    pub peers: Peers,
    /// The server's Prometheus metrics.
    pub metrics: crate::metrics::Metrics,
    /// API keys, with the tenants' webhook endpoints.
    pub keys: Arc<crate::store::keys::KeyCache>,
    /// Base URL in front of media paths (`public_url`, or `http://` + the bound address).
    pub base_url: String,
    /// Cancelled when the server stops: running transcodes and storage retries
    /// end early, and no new job starts.
    pub stop: CancellationToken,
    /// The tasks that may hold the database besides the actors themselves;
    /// the server's shutdown waits for every one.
    pub tasks: TaskTracker,
    /// Wakes the cleaner: a removal from final storage was recorded.
    pub cleanups: tokio::sync::Notify,
    /// The transcodes running now, each stoppable alone.
    pub jobs: RunningJobs,
    /// Tokens whose outputs are being removed from final storage (deleted
    /// uploads, failed ones): their media answers 404 from the deletion on.
    pub removals: TokenSet,
    /// Tokens the uploader is storing now: the cleaner leaves them until it is done.
    pub storing: TokenSet,
    /// Committed changes and progress, for the event streams open now.
    pub events: events::EventFeed,
    /// Ladders playable while they are written, served at `/preview/`.
    pub previews: Previews,
}

impl Services {
    /// Gives back one place in `queued` (never below zero: a pool restart
    /// starts the count again while reservations may still be out).
    pub fn release_queued(&self) {
        let _ = self
            .queued
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1));
    }

    /// Runs blocking work (file I/O, a database scan or commit, a request to
    /// the object store) on tokio's blocking pool, tracked so that shutdown
    /// waits for it.
    pub fn blocking<T, F>(&self, work: F) -> tokio::task::JoinHandle<T>
    where
        F: FnOnce() -> T + Send + 'static,
        T: Send + 'static,
    {
        self.tasks.spawn_blocking(work)
    }
}
