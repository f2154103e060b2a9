//! Starting and stopping the whole service: database, recovery, actor tree
//! and HTTP server.

use std::net::SocketAddr;
use std::sync::atomic::AtomicUsize;
use std::sync::Arc;
use std::time::Duration;

use hyper_util::rt::TokioIo;
use hyper_util::server::conn::auto::Builder as ConnBuilder;
use ractor::{Actor, ActorRef};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::{JoinHandle, JoinSet};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{error, info, warn};

use crate::actors::supervisor::{Child, Supervisor, SupervisorMsg};
use crate::actors::{recovery, Peers, ProgressBoard, Services, TenantLoad};
use crate::api::bounds::{Ended, Watched};
use crate::api::{self, AppState};
use crate::backoff::Backoff;
use crate::config::Config;
use crate::layout::DataLayout;
use crate::storage::check::{StorageCheck, CHECK_PERIOD};
use crate::storage::s3::S3Storage;
use crate::storage::{FinalStorage, LocalStorage};
use crate::store::keys::{KeyCache, KeyRefresher};
use crate::store::Store;

mod connection;

use connection::ConnectionTimer;

/// Why the server did not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The configuration is invalid.
    #[error("invalid configuration: {0}")]
    Config(String),
    /// The data dir could not be prepared.
    #[error("data dir {path}: {source}")]
    DataDir {
        /// The data dir.
        path: String,
        /// The cause.
        source: std::io::Error,
    },
    /// The database could not be opened (for example, another server holds it).
    #[error("{0}")]
    Store(#[from] crate::store::StoreError),
    /// The listen address could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// The cause.
        source: std::io::Error,
    },
    /// Start-up recovery or the actor tree failed.
    #[error("start-up failed: {0}")]
    Startup(String),
}

/// A running server.
pub struct Server {
    addr: SocketAddr,
    supervisor: ActorRef<SupervisorMsg>,
    supervisor_done: JoinHandle<()>,
    /// Tells the HTTP side to stop accepting and close its connections.
    stop: watch::Sender<bool>,
    /// The HTTP side; ends once every connection has closed.
    http_done: JoinHandle<()>,
    services: Arc<Services>,
    /// Keeps the API keys current.
    key_refresher: KeyRefresher,
    keys_active: usize,
}

/// Checks the final storage once, in the background, and logs a failure with
/// the setting to fix. The server serves on either way: fixing the bucket or
/// its policy recovers without a restart, and `/readyz` says not ready meanwhile.
fn report_storage_check(check: StorageCheck) {
    tokio::spawn(async move {
        match check.outcome().await {
            Ok(()) => info!("final storage answers"),
            Err(why) => error!(
                "final storage cannot take uploads: {why}; serving on, /readyz is not ready until it is fixed"
            ),
        }
    });
}

/// How often shutdown says it is still waiting for the database to close.
const CLOSE_WAIT_REPORT: Duration = Duration::from_secs(5);

impl Server {
    /// Opens the data dir, resumes unfinished uploads and starts serving.
    pub async fn start(config: Config) -> Result<Server, StartError> {
        config.validate().map_err(StartError::Config)?;
        raise_file_limit();
        crate::media::init();
        let layout = DataLayout::new(&config.data_dir);
        layout.ensure().map_err(|source| StartError::DataDir {
            path: config.data_dir.display().to_string(),
            source,
        })?;
        let db_path = config.database_path();
        let store = tokio::task::spawn_blocking(move || Store::open(&db_path))
            .await
            .map_err(|e| StartError::Startup(e.to_string()))??;
        let store = Arc::new(store);
        let stop = CancellationToken::new();
        let storage: Arc<dyn FinalStorage> = match &config.s3 {
            Some(s3) => Arc::new(
                S3Storage::new(s3, stop.clone())
                    .map_err(|e| StartError::Startup(e.to_string()))?
                    .with_put_delay(config.faults.storage_put_delay),
            ),
            None => Arc::new(LocalStorage::new(&layout.media_root())),
        };
        // One scan of the records serves the clean-up and the per-tenant counts.
        let (unfinished, removals) = {
            let (layout, store, storage) = (layout.clone(), store.clone(), storage.clone());
            let (unfinished, removals, removed) = tokio::task::spawn_blocking(move || {
                let unfinished = store.unfinished()?;
                let kept = store.kept_sources()?;
                let removals = store.pending_cleanups()?;
                // Before the tidy: a tus upload mid-hand-over keeps its file.
                api::tus::recover_files(&layout, &store)?;
                let removed =
                    recovery::clean_orphans(&layout, &unfinished, &kept, storage.as_ref())?;
                Ok::<_, Box<dyn std::error::Error + Send + Sync>>((unfinished, removals, removed))
            })
            .await
            .map_err(|e| StartError::Startup(e.to_string()))?
            .map_err(|e| StartError::Startup(e.to_string()))?;
            if removed > 0 {
                info!(removed, "removed leftovers of interrupted work");
            }
            (unfinished, removals)
        };
        let tenant_load = TenantLoad::default();
        for record in &unfinished {
            tenant_load.add(&record.tenant);
        }
        let data_dir = config.data_dir.clone();
        // Reading the key file may wait for a `keys` command that has it open.
        let keys = tokio::task::spawn_blocking(move || KeyCache::load(&data_dir))
            .await
            .map_err(|e| StartError::Startup(e.to_string()))??;
        let keys = Arc::new(keys);
        let keys_active = keys.active_count();
        // Claiming the data dir may wait a moment for a `keys` command.
        let refreshed = keys.clone();
        let key_refresher = tokio::task::spawn_blocking(move || KeyRefresher::start(refreshed))
            .await
            .map_err(|e| StartError::Startup(e.to_string()))?
            .map_err(|e| StartError::Startup(format!("key refresher: {e}")))?;
        // Before any transition: each one writes its webhook events from now on.
        store.route_webhooks(Arc::new(crate::webhook::Routing::new(
            &config.webhooks,
            keys.clone(),
        )));

        let listener =
            TcpListener::bind(config.listen)
                .await
                .map_err(|source| StartError::Bind {
                    addr: config.listen,
                    source,
                })?;
        let addr = listener.local_addr().map_err(|source| StartError::Bind {
            addr: config.listen,
            source,
        })?;
        let base_url = config
            .public_url
            .clone()
            .unwrap_or_else(|| format!("http://{addr}"));
        let config = Arc::new(config);
        let services = Arc::new(Services {
            config: config.clone(),
            layout,
            store,
            storage,
            progress: ProgressBoard::default(),
            queued: AtomicUsize::new(0),
            in_pool: Default::default(),
            tenant_load,
            peers: Peers::default(),
            metrics: crate::metrics::Metrics::new(&api::observe::ROUTE_TEMPLATES)
                .map_err(|e| StartError::Startup(format!("metrics: {e}")))?,
            keys: keys.clone(),
            base_url: base_url.clone(),
            stop,
            tasks: TaskTracker::new(),
            cleanups: tokio::sync::Notify::new(),
            jobs: Default::default(),
            removals: Default::default(),
            storing: Default::default(),
            previews: Default::default(),
            events: Default::default(),
        });
        for token in &removals {
            services.removals.add(token);
        }
        let (supervisor, supervisor_done) = Actor::spawn(None, Supervisor, services.clone())
            .await
            .map_err(|e| StartError::Startup(e.to_string()))?;
        // Removals owed to final storage, from before the restart too.
        crate::actors::cleaner::start(&services);
        // Kept sources of failed uploads, freed once their time has passed.
        crate::actors::sweeper::start(&services);

        let storage_check = StorageCheck::new(services.storage.clone(), CHECK_PERIOD);
        report_storage_check(storage_check.clone());
        let state = Arc::new(AppState {
            services: services.clone(),
            views: Default::default(),
            in_flight: api::bounds::InFlight::new(config.max_requests_in_flight),
            storage_check,
            idempotency_claims: Default::default(),
            tus_writers: Default::default(),
        });
        services.tasks.spawn(api::tus::keep(state.clone()));
        let (stop, stopped) = watch::channel(false);
        let http_done = tokio::spawn(serve(
            listener,
            api::service(state),
            services.clone(),
            stopped,
        ));
        info!(%addr, "listening");
        Ok(Server {
            addr,
            supervisor,
            supervisor_done,
            stop,
            http_done,
            services,
            key_refresher,
            keys_active,
        })
    }

    /// The bound address (useful with port 0).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// How many API keys were active at start.
    pub fn active_keys(&self) -> usize {
        self.keys_active
    }

    /// Shared services, for tests and tools.
    pub fn services(&self) -> &Arc<Services> {
        &self.services
    }

    /// Abruptly stops one child actor; the supervisor must restart it.
    #[doc(hidden)]
    pub fn kill_child(&self, child: Child) {
        let _ = self.supervisor.cast(SupervisorMsg::Kill(child));
    }

    /// Stops accepting connections, lets in-flight requests finish within the
    /// grace period (then closes the rest), stops running transcodes (they
    /// go back to `pending` without using up an attempt) and the actors, and
    /// returns once every task and thread that held the database has ended
    /// and its file is closed: the data dir can be opened again at once.
    /// Unfinished uploads resume at the next start. (Each actor gets 10 s to
    /// stop; a transcode that has not stopped by then, which cancellation
    /// before the next packet makes unlikely, keeps the attempt it used.)
    pub async fn shutdown(self) {
        let Server {
            supervisor,
            supervisor_done,
            stop,
            http_done,
            services,
            key_refresher,
            ..
        } = self;
        // Event streams never end by themselves: they end first.
        services.events.close();
        let _ = stop.send(true);
        let _ = http_done.await;
        // Running transcodes are cancelled and go back to `pending`, queued
        // ones are not started, object-store retries give up.
        services.stop.cancel();
        let _ = supervisor
            .call(SupervisorMsg::Shutdown, Some(Duration::from_secs(60)))
            .await;
        supervisor.stop(None);
        let _ = supervisor_done.await;
        // Joining waits for at most one refresh, which never waits for the file.
        let _ = tokio::task::spawn_blocking(move || key_refresher.stop()).await;
        services.tasks.close();
        services.tasks.wait().await;
        let mut closed = services.store.on_close();
        drop(services);
        // Every holder has ended; dropping the last reference closes the file.
        loop {
            match tokio::time::timeout(CLOSE_WAIT_REPORT, closed.changed()).await {
                Ok(Err(_)) => break,
                Ok(Ok(())) => {}
                Err(_) => warn!("still waiting for the database to close"),
            }
        }
        info!("stopped");
    }
}

/// Largest read buffer of one HTTP/1 connection (it also bounds the request head).
const MAX_READ_BUFFER: usize = 64 * 1024;

async fn serve(
    listener: TcpListener,
    http: api::observe::HttpService<impl api::observe::Routes + Clone>,
    services: Arc<Services>,
    mut stopped: watch::Receiver<bool>,
) {
    let config = services.config.clone();
    // At the cap, accepting pauses: new connections wait in the kernel's
    // backlog instead of each costing the server buffers and a task.
    let slot_count = u32::try_from(config.max_connections).unwrap_or(u32::MAX);
    let slots = Arc::new(tokio::sync::Semaphore::new(slot_count as usize));
    let mut builder = ConnBuilder::new(WatchedExecutor {
        services: services.clone(),
    });
    builder
        .http1()
        // hyper's read buffer may grow to 400 KiB per connection by default;
        // 64 KiB bounds a connection's buffers and still reads bodies at
        // full speed.
        .max_buf_size(MAX_READ_BUFFER)
        .header_read_timeout(config.header_read_timeout);
    builder
        .http2()
        .max_concurrent_streams(config.http2_max_streams);
    let mut refusals = AcceptRefusals::default();
    // A slow head is cut off at most a quarter of the timeout late (and never
    // checked more often than every 50 ms, nor less than every second).
    let check_every =
        (config.header_read_timeout / 4).clamp(Duration::from_millis(50), Duration::from_secs(1));
    let mut connections = JoinSet::new();
    let mut memory = MemoryReturn::default();
    let mut looks = tokio::time::interval(MemoryReturn::EVERY);
    looks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let permit = tokio::select! {
            permit = slots.clone().acquire_owned() => match permit {
                Ok(permit) => permit,
                Err(_) => break,
            },
            _ = looks.tick() => {
                while connections.try_join_next().is_some() {}
                memory.look(connections.len(), &services);
                continue;
            }
            _ = stopped.changed() => break,
        };
        // Reap finished connections, so the set holds only open ones.
        while connections.try_join_next().is_some() {}
        memory.look(connections.len(), &services);
        tokio::select! {
            accepted = listener.accept() => {
                let (stream, _) = match accepted {
                    Ok(conn) => {
                        refusals.accepted();
                        conn
                    }
                    Err(e) => {
                        // Out of files (or memory): wait for some to close,
                        // serving the connections already open meanwhile.
                        let pause = refusals.failed(&e);
                        tokio::select! {
                            _ = tokio::time::sleep(pause) => {}
                            _ = stopped.changed() => break,
                        }
                        continue;
                    }
                };
                let _ = stream.set_nodelay(true);
                let (timer, watchdog) = ConnectionTimer::new(check_every, stopped.clone());
                let mut builder = builder.clone();
                builder.http1().timer(timer.clone());
                let conn = builder
                    .serve_connection_with_upgrades(TokioIo::new(stream), http.connection())
                    .into_owned();
                let conn = timer.stoppable(conn);
                let services = services.clone();
                connections.spawn(async move {
                    // Aborted with the connection's task, however that ends.
                    let _watchdog = AbortOnDrop(tokio::spawn(watchdog));
                    // An HTTP/1 response that stalls closes the connection.
                    until_stalled(conn, &services).await;
                    drop(permit);
                });
            }
            _ = stopped.changed() => break,
        }
    }
    drop(listener);
    let all_closed = async { while connections.join_next().await.is_some() {} };
    if tokio::time::timeout(config.shutdown_grace, all_closed)
        .await
        .is_err()
    {
        warn!(
            open = connections.len(),
            "grace period over; closing remaining connections"
        );
        connections.abort_all();
        while connections.join_next().await.is_some() {}
    }
}

/// Runs the tasks hyper spawns (one per HTTP/2 stream) as tracked tasks,
/// so that shutdown waits for them too, each dropped (its stream reset) if
/// its response stalls.
#[derive(Clone)]
struct WatchedExecutor {
    services: Arc<Services>,
}

impl<F> hyper::rt::Executor<F> for WatchedExecutor
where
    F: std::future::Future + Send + 'static,
    F::Output: Send + 'static,
{
    fn execute(&self, future: F) {
        let services = self.services.clone();
        self.services
            .tasks
            .spawn(async move { until_stalled(future, &services).await });
    }
}

/// Runs `task` (a connection, or an HTTP/2 stream) until it ends, or until
/// a response of it stalls: then it is dropped, and the stall counted.
async fn until_stalled<F: std::future::Future>(task: F, services: &Services) {
    let stall = services.config.response_stall_timeout;
    if Watched::new(task, stall).await == Ended::Stalled {
        services.metrics.stalled_response();
    }
}

/// Failed accepts: logged at most once a minute (with how many failed since
/// the last line), and each one in a row waits longer, up to a second.
#[derive(Default)]
struct AcceptRefusals {
    /// Failures in a row, which set the pause.
    in_a_row: u32,
    /// Failures not yet logged.
    unlogged: u64,
    logged_at: Option<std::time::Instant>,
}

/// Least time between two log lines about failed accepts.
const ACCEPT_LOG_EVERY: Duration = Duration::from_secs(60);

/// The pause after each failed accept in a row.
const ACCEPT_BACKOFF: Backoff = Backoff {
    first: Duration::from_millis(10),
    max: Duration::from_secs(1),
};

impl AcceptRefusals {
    /// How long to wait after `error`.
    fn failed(&mut self, error: &std::io::Error) -> Duration {
        self.in_a_row = self.in_a_row.saturating_add(1);
        self.unlogged += 1;
        if self
            .logged_at
            .is_none_or(|at| at.elapsed() >= ACCEPT_LOG_EVERY)
        {
            let failed = std::mem::take(&mut self.unlogged);
            if matches!(error.raw_os_error(), Some(libc::EMFILE | libc::ENFILE)) {
                warn!(error = %error, failed, "out of file descriptors: accepting paused until some close");
            } else {
                warn!(error = %error, failed, "accept failed");
            }
            self.logged_at = Some(std::time::Instant::now());
        }
        ACCEPT_BACKOFF.before_retry(self.in_a_row)
    }

    /// An accept worked again.
    fn accepted(&mut self) {
        self.in_a_row = 0;
    }
}

/// Gives the allocator's free memory back to the system once many
/// connections have closed. glibc keeps what a burst of connections freed
/// (measured: 110 HTTP/2 clients left a release build 41 MiB larger than
/// before them, and `malloc_trim` took it back to where it started), so
/// without this the memory of an attack stays after the attackers leave.
#[derive(Default)]
struct MemoryReturn {
    /// Most connections open since the last trim.
    peak: usize,
    trimmed_at: Option<std::time::Instant>,
}

impl MemoryReturn {
    /// How often the accept loop looks when nothing else wakes it, and the
    /// least time between two trims.
    const EVERY: Duration = Duration::from_secs(2);
    /// Connections that must have closed since the peak.
    const AFTER_CLOSED: usize = 16;

    fn look(&mut self, open: usize, services: &Arc<Services>) {
        self.peak = self.peak.max(open);
        let recent = self.trimmed_at.is_some_and(|at| at.elapsed() < Self::EVERY);
        if self.peak - open < Self::AFTER_CLOSED || recent {
            return;
        }
        self.peak = open;
        self.trimmed_at = Some(std::time::Instant::now());
        // Trimming walks the heap: off the executor.
        services.tasks.spawn_blocking(|| {
            #[cfg(all(target_os = "linux", target_env = "gnu"))]
            // SAFETY: malloc_trim only returns free pages of glibc's own heap.
            unsafe {
                libc::malloc_trim(0);
            }
        });
    }
}

/// Raises the soft limit on open files to the hard limit (a common soft
/// limit, 1,024, is a few HTTP/2 clients' worth) and says what it is.
fn raise_file_limit() {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: `limit` is a valid rlimit for the call to fill in.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } != 0 {
        warn!(error = %std::io::Error::last_os_error(), "cannot read the open file limit");
        return;
    }
    let was = limit.rlim_cur;
    if limit.rlim_cur < limit.rlim_max {
        limit.rlim_cur = limit.rlim_max;
        // SAFETY: `limit` is a valid rlimit, read above, with the soft limit raised to the hard one.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &limit) } != 0 {
            warn!(error = %std::io::Error::last_os_error(), soft = was, "cannot raise the open file limit");
            return;
        }
    }
    info!(open_files = limit.rlim_cur, was, "open file limit");
}

/// Aborts a task when dropped.
struct AbortOnDrop(JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}
