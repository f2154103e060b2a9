//! Crash points for the crash-matrix harness. When the environment variable
//! `VIDPIPE_CRASH_AT` names a point, the process aborts there, as abruptly as
//! `kill -9`: no destructor runs and nothing is flushed. Unset, each check is
//! one load of a cached flag.
//!
//! One pause point widens a race window for tests: with `VIDPIPE_PAUSE_AT`
//! set to `create_commit`, each commit that creates an upload waits
//! [`PAUSE`] first.

use std::sync::OnceLock;

/// The places a crash can be injected.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CrashPoint {
    /// The body is staged and fsynced; the record is not yet committed.
    AfterStaging,
    /// The transcoder is a third of the way through.
    MidTranscode,
    /// Final storage has received some files of an upload but not all.
    MidStoragePut,
    /// The `completed` transition is written but not committed.
    MidCommit,
    /// Object storage only: a multipart upload is started and its parts are
    /// being sent, not yet completed.
    MidMultipart,
}

impl CrashPoint {
    /// The name used in `VIDPIPE_CRASH_AT`.
    pub fn name(self) -> &'static str {
        match self {
            CrashPoint::AfterStaging => "after_staging",
            CrashPoint::MidTranscode => "mid_transcode",
            CrashPoint::MidStoragePut => "mid_storage_put",
            CrashPoint::MidCommit => "mid_commit",
            CrashPoint::MidMultipart => "mid_multipart",
        }
    }

    /// Every point of every backend (the local crash matrix draws from these).
    pub const ALL: [CrashPoint; 4] = [
        CrashPoint::AfterStaging,
        CrashPoint::MidTranscode,
        CrashPoint::MidStoragePut,
        CrashPoint::MidCommit,
    ];
}

fn armed() -> Option<CrashPoint> {
    static ARMED: OnceLock<Option<CrashPoint>> = OnceLock::new();
    *ARMED.get_or_init(|| {
        let wanted = std::env::var("VIDPIPE_CRASH_AT").ok()?;
        CrashPoint::ALL
            .into_iter()
            .chain([CrashPoint::MidMultipart])
            .find(|p| p.name() == wanted)
    })
}

/// Aborts the process if `point` is the armed crash point.
pub fn crash_if(point: CrashPoint) {
    if armed() == Some(point) {
        eprintln!("crash point {} reached: aborting", point.name());
        std::process::abort();
    }
}

/// How long a pause point waits.
pub const PAUSE: std::time::Duration = std::time::Duration::from_millis(1500);

/// Waits [`PAUSE`] (blocking the thread) before a commit that creates an
/// upload, if `VIDPIPE_PAUSE_AT` is `create_commit`.
pub fn pause_before_create_commit() {
    static ARMED: OnceLock<bool> = OnceLock::new();
    let armed = *ARMED
        .get_or_init(|| std::env::var("VIDPIPE_PAUSE_AT").is_ok_and(|p| p == "create_commit"));
    if armed {
        std::thread::sleep(PAUSE);
    }
}
