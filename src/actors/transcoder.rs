//! The transcoder pool: a ractor factory whose workers each own one named OS
//! thread holding every libav object. A worker hands its job to the thread
//! over a crossbeam channel and awaits the result, so the factory sees the
//! worker busy for the whole transcode and queues the rest.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::thread::JoinHandle;

use ractor::factory::{
    queues, routing, worker_builder, Factory, FactoryArguments, FactoryMessage, Job, Worker,
    WorkerId,
};
use ractor::{ActorProcessingErr, ActorRef};
use serde::{Deserialize, Serialize};
use tokio::sync::oneshot;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};
use uuid::Uuid;

use super::registry::{self, RegistryMsg};
use super::uploader::UploaderMsg;
use super::{recovery, PoolEntry, RunningJob, Services};
use crate::layout::fsync_dir;
use crate::media::{self, MediaError, MediaErrorCode, MediaLimits, OutputProfile, SourceInfo};
use crate::store::record::{MediaOutputs, RenditionOutput, Status, TransitionPatch, UploadRecord};

/// Name of the file beside the outputs that describes them to the uploader.
pub const MANIFEST: &str = "outputs.json";

/// One upload to transcode; everything else is read from its record.
#[derive(Debug, Clone)]
pub struct TranscodeJob {
    /// The upload.
    pub id: Uuid,
}

/// What a finished transcode leaves in its work folder for the uploader.
#[derive(Debug, Serialize, Deserialize)]
pub struct Manifest {
    /// Probed source metadata.
    pub source: SourceInfo,
    /// The files and their properties.
    pub outputs: MediaOutputs,
    /// Every file to store, relative to the work folder (`video.mp4`, `hls/720p/seg_00000.ts`, ...).
    /// Empty in manifests from before the ladder: then the MP4 and the poster.
    #[serde(default)]
    pub files: Vec<String>,
}

/// Routing of the pool: jobs wait in the factory's queue for a free worker.
type Routing = routing::QueuerRouting<Uuid, TranscodeJob>;
/// The factory's queue: first in, first out.
type JobQueue = queues::DefaultQueue<Uuid, TranscodeJob>;

/// The factory type of the pool.
pub type TranscoderFactory =
    Factory<Uuid, TranscodeJob, Arc<Services>, TranscoderWorker, Routing, JobQueue>;

/// Arguments to spawn the pool with `workers` workers.
pub fn pool_arguments(
    services: &Arc<Services>,
    workers: usize,
) -> FactoryArguments<Uuid, TranscodeJob, Arc<Services>, TranscoderWorker, Routing, JobQueue> {
    let services = services.clone();
    FactoryArguments::builder()
        .worker_builder(Box::new(worker_builder(move |_wid| {
            (TranscoderWorker, services.clone())
        })))
        .queue(Default::default())
        .router(Default::default())
        .num_initial_workers(workers)
        .build()
}

/// Queues a transcode. Returns false when the pool is not running; the job
/// stays `pending` in the database and recovery queues it again.
pub fn enqueue(services: &Services, id: Uuid) -> bool {
    services.queued.fetch_add(1, Ordering::Relaxed);
    dispatch_reserved(services, id)
}

/// Queues a transcode whose place in `queued` is already counted (by intake's
/// admission). Gives the place back when the upload is already in the pool,
/// or when the pool is not running (recovery queues it again then).
pub fn dispatch_reserved(services: &Services, id: Uuid) -> bool {
    if !services.in_pool.insert(id) {
        services.release_queued();
        return true;
    }
    let dispatched = match services.peers.transcoders.get() {
        Some(pool) => pool.dispatch(id, TranscodeJob { id }).is_ok(),
        None => false,
    };
    if !dispatched {
        warn!(upload = %id, "transcoder pool not running; job left for recovery");
        services.in_pool.remove(id);
        services.release_queued();
    }
    dispatched
}

/// The pool was replaced: the jobs queued in the old one are gone (the
/// database still has them, and recovery queues them again).
pub fn forget_pool(services: &Services) {
    services.queued.store(0, Ordering::Relaxed);
    services.in_pool.clear();
}

/// A worker of the pool.
pub struct TranscoderWorker;

/// A worker's link to its libav thread.
pub struct WorkerState {
    /// Shared services.
    services: Arc<Services>,
    /// Jobs to the thread.
    jobs: crossbeam_channel::Sender<ThreadJob>,
    /// The thread, joined when the worker stops.
    thread: Option<JoinHandle<()>>,
    /// Index of the worker, names the thread.
    wid: WorkerId,
}

/// A job as the libav thread sees it: plain paths and settings.
struct ThreadJob {
    input: PathBuf,
    out_dir: PathBuf,
    profile: OutputProfile,
    limits: MediaLimits,
    /// Where progress ticks go, and whether the job is to stop.
    progress: JobProgress,
    /// Test hook: panic instead of transcoding.
    panic: bool,
    /// Gets the probed source before transcoding starts (dropped if the probe fails).
    probed: oneshot::Sender<SourceInfo>,
    done: oneshot::Sender<Result<media::TranscodeOutputs, MediaError>>,
}

fn spawn_thread(
    wid: WorkerId,
) -> std::io::Result<(crossbeam_channel::Sender<ThreadJob>, JoinHandle<()>)> {
    let (tx, rx) = crossbeam_channel::bounded::<ThreadJob>(1);
    let handle = std::thread::Builder::new()
        .name(format!("vidpipe-transcode-{wid}"))
        .spawn(move || {
            lower_priority();
            media::init();
            for job in rx {
                run_job(job);
            }
        })?;
    Ok((tx, handle))
}

/// Encoding yields the CPU to the HTTP side: nice 10 for this thread and the
/// encoder threads it starts (Linux keeps the nice value per thread).
fn lower_priority() {
    // SAFETY: setpriority has no memory-safety preconditions; `who = 0` is the calling thread.
    let rc = unsafe { libc::setpriority(libc::PRIO_PROCESS, 0, 10) };
    if rc != 0 {
        warn!("could not lower transcoder thread priority");
    }
}

/// A running job's link back: progress ticks to the registry, and its stop.
struct JobProgress {
    id: Uuid,
    /// Where progress ticks go.
    registry: Option<ActorRef<RegistryMsg>>,
    /// The last percentage sent.
    last: u8,
    /// Cancelled when the server stops.
    cancel: CancellationToken,
    /// Told once the ladder can be played while it is written.
    preview: Option<oneshot::Sender<()>>,
}

impl media::Progress for JobProgress {
    fn report(&mut self, fraction: f64) {
        if fraction > 0.3 {
            crate::faults::crash_if(crate::faults::CrashPoint::MidTranscode);
        }
        let percent = (fraction.clamp(0.0, 1.0) * 100.0) as u8;
        if percent != self.last {
            self.last = percent;
            if let Some(registry) = &self.registry {
                let _ = registry.cast(RegistryMsg::Progress {
                    id: self.id,
                    percent,
                });
            }
        }
    }

    fn cancelled(&self) -> bool {
        self.cancel.is_cancelled()
    }

    fn previewable(&mut self) {
        if let Some(preview) = self.preview.take() {
            let _ = preview.send(());
        }
    }
}

fn run_job(job: ThreadJob) {
    let ThreadJob {
        input,
        out_dir,
        profile,
        limits,
        mut progress,
        panic,
        probed,
        done,
    } = job;
    let outcome = catch_unwind(AssertUnwindSafe(|| {
        if panic {
            panic!("injected transcoder panic");
        }
        // Probe first, so the record shows the source while the transcode runs.
        let source = media::probe(&input, &limits)?;
        let _ = probed.send(source);
        media::transcode(&input, &out_dir, &profile, &limits, &mut progress)
    }));
    let result = outcome.unwrap_or_else(|panic| {
        let what = panic
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| panic.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "unknown panic".into());
        Err(MediaError {
            code: MediaErrorCode::Internal,
            message: format!("the transcoder crashed: {what}"),
        })
    });
    let _ = done.send(result);
}

impl Worker for TranscoderWorker {
    type Key = Uuid;
    type Message = TranscodeJob;
    type State = WorkerState;
    type Arguments = Arc<Services>;

    async fn pre_start(
        &self,
        wid: WorkerId,
        _factory: &ActorRef<FactoryMessage<Uuid, TranscodeJob>>,
        services: Arc<Services>,
    ) -> Result<WorkerState, ActorProcessingErr> {
        let (jobs, thread) = spawn_thread(wid)?;
        Ok(WorkerState {
            services,
            jobs,
            thread: Some(thread),
            wid,
        })
    }

    async fn post_stop(
        &self,
        _wid: WorkerId,
        _factory: &ActorRef<FactoryMessage<Uuid, TranscodeJob>>,
        state: &mut WorkerState,
    ) -> Result<(), ActorProcessingErr> {
        // Closing the channel ends the thread after its current job, which
        // the server's stop has cancelled.
        let (closed, _) = crossbeam_channel::bounded(0);
        state.jobs = closed;
        if let Some(thread) = state.thread.take() {
            // Joining blocks until the job has returned: off the executor.
            let _ = state.services.blocking(move || thread.join()).await;
        }
        Ok(())
    }

    async fn handle(
        &self,
        _wid: WorkerId,
        _factory: &ActorRef<FactoryMessage<Uuid, TranscodeJob>>,
        job: Job<Uuid, TranscodeJob>,
        state: &mut WorkerState,
    ) -> Result<Uuid, ActorProcessingErr> {
        let services = state.services.clone();
        services.release_queued();
        let id = job.msg.id;
        // Registered first, so given up last: while `jobs` shows it running,
        // its place in the pool is not yet free (a retry waits for both).
        let running = services.jobs.start(id, &services.stop);
        let mut entry = PoolEntry::of(&services.in_pool, id);
        if let Err(e) = transcode(&services, state, id, &mut entry, &running).await {
            tracing::error!(upload = %id, error = %e, "transcode job aborted");
        }
        Ok(job.key)
    }
}

async fn transcode(
    services: &Arc<Services>,
    state: &mut WorkerState,
    id: Uuid,
    entry: &mut PoolEntry<'_>,
    job: &RunningJob<'_>,
) -> Result<(), ActorProcessingErr> {
    let Some(record) = services.store.get(id)? else {
        return Ok(());
    };
    // Stopping: the job stays `pending` for the next start.
    if record.status.is_terminal() || services.stop.is_cancelled() {
        return Ok(());
    }
    let layout = &services.layout;
    let input = layout.staged_path(id);
    if record.attempts >= services.config.max_attempts {
        let message = format!("gave up after {} attempts", record.attempts);
        return recovery::fail(services, id, "internal_error", message).await;
    }
    if !input.exists() {
        let missing = "the staged upload is missing";
        return recovery::fail(services, id, "internal_error", missing).await;
    }
    // A full work disk: the upload waits, `pending`, for space.
    if work_disk_full(services) {
        retry_when_space(services, id);
        return Ok(());
    }
    // (`job` is registered before the upload is `processing`: a cancel that
    // commits after that transition finds the job to stop.)
    let patch = TransitionPatch {
        count_attempt: true,
        ..Default::default()
    };
    match registry::transition(services, id, Status::Processing, patch).await {
        Ok(_) => {}
        Err(e) if e.is_disk_full() => {
            retry_when_space(services, id);
            return Ok(());
        }
        Err(e) if e.is_moved_on() => return recovery::tidy(services, id).await,
        Err(e) => return Err(e.into()),
    }
    if let Some(delay) = services.config.faults.transcode_delay {
        tokio::select! {
            () = tokio::time::sleep(delay) => {}
            () = job.stop.cancelled() => {}
        }
    }

    let out_dir = layout.work_tmp_dir(id);
    let prepare = out_dir.clone();
    let prepared = services
        .blocking(move || {
            if prepare.exists() {
                std::fs::remove_dir_all(&prepare)?;
            }
            std::fs::create_dir_all(&prepare)
        })
        .await?;
    if let Err(e) = prepared {
        return put_back_if_disk_full(services, id, e.to_string()).await;
    }

    let panic = services
        .config
        .faults
        .panic_on_filename
        .as_deref()
        .is_some_and(|needle| record.filename.contains(needle));
    let (done, result) = oneshot::channel();
    let (probed, source) = oneshot::channel();
    let (previewable, preview) = oneshot::channel();
    let job = ThreadJob {
        input,
        out_dir: out_dir.clone(),
        profile: services.config.profile.clone(),
        limits: services.config.media_limits.clone(),
        progress: JobProgress {
            id,
            registry: services.peers.registry.get(),
            last: 0,
            cancel: job.stop.clone(),
            preview: Some(previewable),
        },
        panic,
        probed,
        done,
    };
    if state.jobs.send(job).is_err() {
        restart_thread(state)?;
        let gone = "the transcoder thread was gone";
        return recovery::fail(services, id, "internal_error", gone).await;
    }
    let started = std::time::Instant::now();
    let _running = services.metrics.job_running();
    if let Ok(source) = source.await {
        let patch = TransitionPatch {
            source: Some(source),
            ..Default::default()
        };
        match registry::patch(services, id, patch).await {
            // Deleted meanwhile: its job is being stopped; the result is awaited all the same.
            Err(e) if !e.is_moved_on() => return Err(e.into()),
            _ => {}
        }
    }
    let (result, ()) = tokio::join!(result, announce_preview(services, &record, preview));
    match result {
        Ok(Ok(outputs)) => {
            let elapsed = started.elapsed();
            services.metrics.transcoded(elapsed, Some(outputs.duration));
            let manifest = manifest(outputs);
            info!(upload = %id, seconds = elapsed.as_secs_f64(), "transcoded");
            let work_dir = layout.work_dir(id);
            let root = layout.work_root();
            let published = services
                .blocking(move || publish_work(&out_dir, &work_dir, &root, &manifest))
                .await?;
            if let Err(e) = published {
                return put_back_if_disk_full(services, id, e.to_string()).await;
            }
            entry.leave();
            match services.peers.uploader.get() {
                Some(uploader) => uploader.cast(UploaderMsg::Store(id))?,
                None => warn!(upload = %id, "uploader not running; left for recovery"),
            }
        }
        Ok(Err(e)) if e.code == MediaErrorCode::Cancelled && services.stop.is_cancelled() => {
            // The server is stopping: the job starts over at the next start.
            back_to_pending(services, id).await?;
            info!(upload = %id, "transcode stopped; it starts over at the next start");
        }
        Ok(Err(e)) if e.code == MediaErrorCode::Cancelled => {
            // Stopped alone: the upload was cancelled or deleted.
            info!(upload = %id, "transcode stopped");
            recovery::tidy(services, id).await?;
        }
        Ok(Err(e)) if e.code == MediaErrorCode::Internal && work_disk_full(services) => {
            return put_back_if_disk_full(services, id, e.message).await;
        }
        Ok(Err(e)) => recovery::fail(services, id, e.code.as_str(), e.message).await?,
        Err(_) => {
            restart_thread(state)?;
            let died = "the transcoder thread died";
            recovery::fail(services, id, "internal_error", died).await?;
        }
    }
    Ok(())
}

/// Once the transcode says its ladder can be played (or ends without), makes
/// the preview served and records it, `upload.previewable`: while the upload
/// is still processing, else not at all.
async fn announce_preview(
    services: &Services,
    record: &UploadRecord,
    preview: oneshot::Receiver<()>,
) {
    if preview.await.is_err() {
        return;
    }
    let id = record.id;
    // Served from before the record shows it.
    services.previews.add(&record.media_token, id);
    let patch = TransitionPatch {
        preview: Some(format!("{}/{}", media::HLS_DIR, media::MASTER_PLAYLIST)),
        only_from: &[Status::Processing],
        ..Default::default()
    };
    match registry::patch(services, id, patch).await {
        Ok(_) => info!(upload = %id, "previewable"),
        Err(e) => {
            services.previews.end(id);
            if !e.is_moved_on() {
                warn!(upload = %id, error = %e, "the preview could not be recorded");
            }
        }
    }
}

/// Below this much free space the work dir's disk counts as full.
const FULL_BELOW_BYTES: u64 = 64 * 1024;

/// How long a job waits for disk space before it is tried again.
const DISK_FULL_RETRY: std::time::Duration = std::time::Duration::from_secs(5);

/// True when the disk holding the work folder is full.
fn work_disk_full(services: &Services) -> bool {
    crate::layout::free_bytes(&services.layout.work_root())
        .is_ok_and(|free| free < FULL_BELOW_BYTES)
}

/// A job whose work folder could not be written: on a full disk it goes back
/// to `pending` without using up an attempt and is tried again once
/// [`DISK_FULL_RETRY`] has passed (an accepted upload is never failed for
/// lack of space); otherwise it fails with `internal_error`.
async fn put_back_if_disk_full(
    services: &Arc<Services>,
    id: Uuid,
    why: String,
) -> Result<(), ActorProcessingErr> {
    if !work_disk_full(services) {
        return recovery::fail(services, id, "internal_error", why).await;
    }
    warn!(upload = %id, error = why, "work disk full; the transcode waits for space");
    if let Err(e) = back_to_pending(services, id).await {
        // Still `processing` in the database; the retry starts it again all the same.
        warn!(upload = %id, error = %e, "could not put the upload back to pending");
    }
    retry_when_space(services, id);
    Ok(())
}

/// Puts a job that was stopped before its end back to `pending`, giving its attempt back.
async fn back_to_pending(services: &Services, id: Uuid) -> Result<(), registry::RegistryError> {
    let patch = TransitionPatch {
        release_attempt: true,
        ..Default::default()
    };
    registry::transition(services, id, Status::Pending, patch).await?;
    Ok(())
}

/// Queues the job again once [`DISK_FULL_RETRY`] has passed (unless the
/// server stops first: it is still `pending` then, and resumed at the next start).
fn retry_when_space(services: &Arc<Services>, id: Uuid) {
    let services = services.clone();
    services.clone().tasks.spawn(async move {
        tokio::select! {
            () = tokio::time::sleep(DISK_FULL_RETRY) => {
                enqueue(&services, id);
            }
            () = services.stop.cancelled() => {}
        }
    });
}

fn restart_thread(state: &mut WorkerState) -> std::io::Result<()> {
    let (jobs, thread) = spawn_thread(state.wid)?;
    state.jobs = jobs;
    state.thread = Some(thread);
    Ok(())
}

fn file_name(path: &std::path::Path) -> String {
    path.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}

/// What the uploader needs to know about a finished transcode.
fn manifest(outputs: media::TranscodeOutputs) -> Manifest {
    let files = outputs.files();
    let (hls_master, renditions) = match &outputs.hls {
        Some(hls) => (
            Some(hls.master.clone()),
            hls.renditions
                .iter()
                .map(|r| RenditionOutput {
                    name: r.name.clone(),
                    width: r.width,
                    height: r.height,
                    bandwidth: r.bandwidth,
                    playlist: r.playlist.clone(),
                    encoded: r.encoded,
                })
                .collect(),
        ),
        None => (None, Vec::new()),
    };
    Manifest {
        outputs: MediaOutputs {
            mp4: file_name(&outputs.mp4),
            poster: file_name(&outputs.poster),
            width: outputs.width,
            height: outputs.height,
            hls_master,
            renditions,
            storyboard: Some(file_name(&outputs.storyboard.vtt)),
        },
        source: outputs.source,
        files,
    }
}

/// Writes the manifest and renames the finished folder into place, durably.
fn publish_work(
    out_dir: &std::path::Path,
    work_dir: &std::path::Path,
    root: &std::path::Path,
    manifest: &Manifest,
) -> std::io::Result<()> {
    let manifest_path = out_dir.join(MANIFEST);
    std::fs::write(&manifest_path, serde_json::to_vec(manifest)?)?;
    fsync_tree(out_dir)?;
    if work_dir.exists() {
        std::fs::remove_dir_all(work_dir)?;
    }
    std::fs::rename(out_dir, work_dir)?;
    fsync_dir(root)
}

/// Fsyncs every file under `dir` (the ladder has subfolders), then each folder, deepest first.
fn fsync_tree(dir: &std::path::Path) -> std::io::Result<()> {
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        if entry.file_type()?.is_dir() {
            fsync_tree(&entry.path())?;
        } else {
            std::fs::File::open(entry.path())?.sync_all()?;
        }
    }
    fsync_dir(dir)
}
