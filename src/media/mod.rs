//! Media: probing and the decode -> scale -> encode -> mux pipeline.
//!
//! Sync code on libav (ffmpeg-next); no tokio, no ractor, so it can be tested
//! and benchmarked alone. Callers run [`transcode`] on a dedicated OS thread:
//! the libav objects it creates (scalers especially) stay on that thread.
//!
//! - [`probe`]: what an upload is, checked against [`MediaLimits`].
//! - [`transcode`]: `video.mp4` (H.264 + AAC, faststart) and `poster.jpg`, per [`OutputProfile`].
//! - Inputs are only ever opened through a container allow-list (`input.rs`).

mod audio;
mod error;
mod input;
mod pipeline;
mod poster;
mod probe;
mod profile;
mod rotate;
mod video;

use std::sync::Once;

pub use error::{MediaError, MediaErrorCode};
pub use pipeline::{transcode, TranscodeOutputs, MP4_FILE_NAME, POSTER_FILE_NAME};
pub use probe::{probe, probe_pixel_format, SourceInfo};
pub use profile::{MediaLimits, OutputProfile};

/// Initialises libav once per process and turns its own logging down to errors.
/// Safe to call any number of times, from any thread.
pub fn init() {
    static INIT: Once = Once::new();
    INIT.call_once(|| {
        if let Err(err) = ffmpeg_next::init() {
            tracing::error!(%err, "libav initialisation failed");
        }
        ffmpeg_next::util::log::set_level(ffmpeg_next::util::log::Level::Error);
    });
}
