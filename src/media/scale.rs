//! Scaling to yuv420p with swscale, one context kept per target and rebuilt
//! only when the input geometry changes.

use ffmpeg_next::format::Pixel;
use ffmpeg_next::frame;
use ffmpeg_next::software::scaling;

use super::error::{internal, MediaError};

/// A scaler and the input geometry it was built for.
pub(crate) struct Scaler {
    /// Built on this thread (not Send), for `source` -> yuv420p at the target size.
    context: scaling::Context,
    /// Pixel format, width and height of the frames `context` expects.
    source: (Pixel, u32, u32),
}

/// Scales `input` to a new yuv420p frame of `width`x`height`, with the scaler in `slot`
/// (rebuilt if the input geometry changed).
pub(crate) fn scale(
    slot: &mut Option<Scaler>,
    (width, height): (u32, u32),
    input: &frame::Video,
) -> Result<frame::Video, MediaError> {
    let geometry = (input.format(), input.width(), input.height());
    let scaler = match slot {
        Some(scaler) if scaler.source == geometry => scaler,
        slot => {
            let context = scaling::Context::get(
                geometry.0,
                geometry.1,
                geometry.2,
                Pixel::YUV420P,
                width,
                height,
                scaling::Flags::BICUBIC,
            )
            .map_err(|err| {
                MediaError::unsupported(format!(
                    "cannot convert {:?} video frames ({err})",
                    geometry.0
                ))
            })?;
            slot.insert(Scaler {
                context,
                source: geometry,
            })
        }
    };
    // A fresh frame each time: the encoder may keep a reference to it.
    let mut scaled = frame::Video::new(Pixel::YUV420P, width, height);
    scaler
        .context
        .run(input, &mut scaled)
        .map_err(internal("scaling a video frame"))?;
    Ok(scaled)
}
