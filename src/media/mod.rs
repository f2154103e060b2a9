//! Media: probing and the decode -> scale -> encode -> mux pipeline.
//!
//! Sync code on libav (ffmpeg-next); no tokio, no ractor, so it can be tested
//! and benchmarked alone. Callers run [`transcode`] on a dedicated OS thread:
//! the libav objects it creates (scalers especially) stay on that thread.
//!
//! - [`probe`]: what an upload is, checked against [`MediaLimits`].
//! - [`transcode`]: `video.mp4` (H.264 + AAC, faststart), `poster.jpg`, the storyboard
//!   (`storyboard.jpg` and `storyboard.vtt`, seek-bar previews) and the HLS ladder
//!   (`hls/master.m3u8` over one folder of MPEG-TS segments per rendition), per [`OutputProfile`].
//! - Inputs are only ever opened through a container allow-list (`input.rs`).
//! - `ladder.rs` decides the renditions and their threads; `video.rs` decodes once and
//!   encodes each rendition once; `mux.rs` sends the top rendition's packets to both the
//!   MP4 and its HLS variant; `hls.rs` cuts segments and writes the playlists.
//! - `poster.rs` and `storyboard.rs` watch the top rendition's upright frames go by and keep
//!   what they need; `jpeg.rs` writes both their JPEGs; `scale.rs` scales frames (renditions,
//!   tiles) with a scaler kept per target.

mod audio;
mod codec_io;
mod error;
mod hls;
mod input;
mod jpeg;
mod ladder;
mod mux;
mod passthrough;
mod pipeline;
mod poster;
mod probe;
mod profile;
mod rotate;
mod scale;
mod storyboard;
mod video;

use std::sync::Once;

pub use error::{MediaError, MediaErrorCode};
pub use hls::{HlsLadder, HlsRendition, HlsSegment, HLS_DIR, MASTER_PLAYLIST};
pub use pipeline::{transcode, Progress, TranscodeOutputs, MP4_FILE_NAME, POSTER_FILE_NAME};
pub use probe::{probe, probe_details, probe_pixel_format, SourceInfo, StreamDetails};
pub use profile::{MediaLimits, OutputProfile};
pub use storyboard::{Storyboard, STORYBOARD_IMAGE, STORYBOARD_VTT};

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
