//! The poster: one representative frame, saved as a JPEG.

use std::path::Path;

use ffmpeg_next::frame;

use super::error::MediaError;
use super::jpeg::write_jpeg;
use super::profile::fit_within;

/// Longest side of the poster in pixels.
pub(crate) const POSTER_MAX_LONG_SIDE: u32 = 1280;
/// How far past the target to look for a frame that is not (nearly) black.
const DARK_SEARCH_SECS: f64 = 5.0;
/// Mean luma (limited range, black is 16) under which a frame counts as dark.
const DARK_LUMA: u64 = 40;

/// Watches the upright output frames go by and keeps the one the poster is made of.
pub(crate) struct PosterPicker {
    /// Output time (s) the poster should show.
    target: f64,
    /// Best frame so far.
    chosen: Option<frame::Video>,
    /// Output time of `chosen`.
    chosen_at: f64,
    /// True once `chosen` is final; later frames are ignored without copying.
    settled: bool,
}

impl PosterPicker {
    /// Aims at 10% into long videos, at 1 s (or half-way) into short ones.
    pub(crate) fn new(duration: Option<f64>) -> Self {
        Self {
            target: poster_time(duration),
            chosen: None,
            chosen_at: f64::NEG_INFINITY,
            settled: false,
        }
    }

    /// Offers the frame shown at `at` seconds; copies it only if it may become the poster.
    pub(crate) fn offer(&mut self, frame: &frame::Video, at: f64) {
        if self.settled {
            return;
        }
        if at < self.target {
            // A fallback in case the stream ends early; refreshed at most once a second.
            if self.chosen.is_none() || at - self.chosen_at >= 1.0 {
                self.keep(frame, at);
            }
            return;
        }
        let dark = is_dark(frame);
        let first_past_target = self.chosen_at < self.target;
        if first_past_target || !dark {
            self.keep(frame, at);
        }
        self.settled = !dark || at >= self.target + DARK_SEARCH_SECS;
    }

    fn keep(&mut self, frame: &frame::Video, at: f64) {
        self.chosen = Some(frame.clone());
        self.chosen_at = at;
    }

    /// The chosen frame, if any frame was offered.
    pub(crate) fn into_frame(self) -> Option<frame::Video> {
        self.chosen
    }
}

/// Output time the poster aims at.
fn poster_time(duration: Option<f64>) -> f64 {
    match duration {
        Some(d) if d >= 10.0 => d * 0.1,
        Some(d) if d > 0.0 => (d * 0.5).min(1.0),
        _ => 1.0,
    }
}

/// Whether a yuv420p frame is nearly black (sampled mean luma).
fn is_dark(frame: &frame::Video) -> bool {
    let (width, height, stride) = (
        frame.width() as usize,
        frame.height() as usize,
        frame.stride(0),
    );
    let luma = frame.data(0);
    let (mut sum, mut count) = (0u64, 0u64);
    for row in (0..height).step_by(8) {
        let line = &luma[row * stride..row * stride + width];
        for &value in line.iter().step_by(8) {
            sum += u64::from(value);
            count += 1;
        }
    }
    count > 0 && sum / count < DARK_LUMA
}

/// Writes `picture` (any size, yuv420p) as the poster JPEG at `path`, long side capped at 1280.
pub(crate) fn write_poster(picture: &frame::Video, path: &Path) -> Result<(), MediaError> {
    let size = fit_within(picture.width(), picture.height(), POSTER_MAX_LONG_SIDE);
    write_jpeg(picture, size, path)
}

#[cfg(test)]
mod tests {
    use ffmpeg_next::format::Pixel;

    use super::*;

    #[test]
    fn poster_time_stays_inside_the_video() {
        assert_eq!(poster_time(None), 1.0);
        assert_eq!(poster_time(Some(2.0)), 1.0);
        assert_eq!(poster_time(Some(1.0)), 0.5);
        assert_eq!(poster_time(Some(100.0)), 10.0);
    }

    fn flat_frame(luma: u8) -> frame::Video {
        let mut picture = frame::Video::new(Pixel::YUV420P, 64, 48);
        picture.data_mut(0).fill(luma);
        picture
    }

    #[test]
    fn skips_a_dark_frame_at_the_target() {
        let mut picker = PosterPicker::new(Some(2.0));
        picker.offer(&flat_frame(16), 0.0);
        picker.offer(&flat_frame(16), 1.0);
        picker.offer(&flat_frame(200), 1.5);
        picker.offer(&flat_frame(100), 1.9);
        let chosen = picker.into_frame().map(|f| f.data(0)[0]);
        assert_eq!(chosen, Some(200));
    }

    #[test]
    fn falls_back_to_an_early_frame_when_the_stream_ends_before_the_target() {
        let mut picker = PosterPicker::new(Some(60.0));
        picker.offer(&flat_frame(90), 0.0);
        assert_eq!(picker.into_frame().map(|f| f.data(0)[0]), Some(90));
    }
}
