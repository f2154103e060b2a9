//! What we produce (`OutputProfile`), what we accept (`MediaLimits`), and the
//! output-size arithmetic both depend on.

use super::error::MediaError;

/// The default output: H.264 + AAC-LC in a faststart MP4 (see DESIGN.md).
#[derive(Debug, Clone)]
pub struct OutputProfile {
    /// Longest side of the output in pixels; smaller sources are never upscaled. Default 1920.
    pub max_long_side: u32,
    /// libx264 constant rate factor (lower is better and bigger). Default 23.
    pub crf: u8,
    /// libx264 speed preset. Default `"veryfast"`.
    pub preset: String,
    /// AAC bit rate in bits per second. Default 128 000.
    pub audio_bit_rate: usize,
    /// AAC sample rate in Hz. Default 48 000.
    pub audio_sample_rate: u32,
    /// CPU threads this job may keep busy (decoder + encoders); 0 means every core. Default 0.
    /// Split across the renditions of the ladder, never multiplied by them (see `RenditionLadder`).
    pub threads: usize,
    /// Write the HLS ladder beside the MP4. Default true.
    pub hls: bool,
    /// Target length of an HLS segment in seconds; every rendition has a keyframe at each
    /// multiple of it, and segments start there. Default 4.
    pub hls_segment_secs: f64,
}

impl Default for OutputProfile {
    fn default() -> Self {
        Self {
            max_long_side: 1920,
            crf: 23,
            preset: "veryfast".to_owned(),
            audio_bit_rate: 128_000,
            audio_sample_rate: 48_000,
            threads: 0,
            hls: true,
            hls_segment_secs: 4.0,
        }
    }
}

impl OutputProfile {
    /// The thread budget of one job: `threads`, or every core when it is 0.
    pub(crate) fn thread_budget(&self) -> usize {
        match self.threads {
            0 => num_cpus::get().max(1),
            n => n,
        }
    }

    /// Decoder threads: a quarter of the budget, at least one ("on the calling thread").
    /// The encoders share the whole budget (see `RenditionLadder`): x264 is where the time goes.
    pub(crate) fn decoder_threads(&self) -> usize {
        (self.thread_budget() / 4).max(1)
    }
}

/// What an upload may be before we refuse it with `input_too_large`.
#[derive(Debug, Clone)]
pub struct MediaLimits {
    /// Widest coded frame accepted. Default 3840.
    pub max_width: u32,
    /// Tallest coded frame accepted (3840 so portrait 2160x3840 passes). Default 3840.
    pub max_height: u32,
    /// Most pixels per frame (3840x2160 in either orientation). Default 8 294 400.
    pub max_pixels: u64,
    /// Longest duration in seconds. Default 21 600 (6 h).
    pub max_duration_secs: f64,
    /// Most video frames decoded per job (6 h at 120 fps). Default 2 592 000.
    pub max_frames: u64,
}

impl Default for MediaLimits {
    fn default() -> Self {
        Self {
            max_width: 3840,
            max_height: 3840,
            max_pixels: 3840 * 2160,
            max_duration_secs: 6.0 * 3600.0,
            max_frames: 6 * 3600 * 120,
        }
    }
}

impl MediaLimits {
    /// Refuses a coded frame size over the limits (checked on headers and on every decoded frame).
    pub(crate) fn check_frame_size(&self, width: u32, height: u32) -> Result<(), MediaError> {
        let pixels = u64::from(width) * u64::from(height);
        if width > self.max_width || height > self.max_height || pixels > self.max_pixels {
            return Err(MediaError::too_large(format!(
                "video is {width}x{height}; the limit is {}x{} and {} pixels per frame",
                self.max_width, self.max_height, self.max_pixels
            )));
        }
        Ok(())
    }

    /// Refuses a duration (seconds) over the limit.
    pub(crate) fn check_duration(&self, seconds: f64) -> Result<(), MediaError> {
        if seconds > self.max_duration_secs {
            return Err(MediaError::too_large(format!(
                "video lasts {seconds:.0} s; the limit is {:.0} s",
                self.max_duration_secs
            )));
        }
        Ok(())
    }

    /// Refuses a decoded frame count over the limit.
    pub(crate) fn check_frame_count(&self, frames: u64) -> Result<(), MediaError> {
        if frames > self.max_frames {
            return Err(MediaError::too_large(format!(
                "video has more than {} frames",
                self.max_frames
            )));
        }
        Ok(())
    }
}

/// Output size for a source displayed at `width`x`height`: aspect ratio kept,
/// longest side at most `max_long_side`, never upscaled, both sides even (yuv420p).
pub(crate) fn fit_within(width: u32, height: u32, max_long_side: u32) -> (u32, u32) {
    let long_side = width.max(height).max(1);
    let scale = if long_side > max_long_side {
        f64::from(max_long_side) / f64::from(long_side)
    } else {
        1.0
    };
    (
        round_to_even(f64::from(width) * scale, width.min(max_long_side)),
        round_to_even(f64::from(height) * scale, height.min(max_long_side)),
    )
}

/// Nearest even integer to `value`, at least 2 and at most `ceiling` rounded down to even.
pub(crate) fn round_to_even(value: f64, ceiling: u32) -> u32 {
    let ceiling = (ceiling & !1).max(2);
    // `as` saturates on overflow and NaN; the clamp bounds the rest.
    let even = ((value / 2.0).round() as u32).saturating_mul(2);
    even.clamp(2, ceiling)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn caps_the_long_side_and_keeps_aspect() {
        assert_eq!(fit_within(3840, 2160, 1920), (1920, 1080));
        assert_eq!(fit_within(2160, 3840, 1920), (1080, 1920));
        assert_eq!(fit_within(320, 240, 160), (160, 120));
    }

    #[test]
    fn never_upscales() {
        assert_eq!(fit_within(320, 240, 1920), (320, 240));
        assert_eq!(fit_within(640, 360, 640), (640, 360));
    }

    #[test]
    fn rounds_to_even_without_growing() {
        assert_eq!(fit_within(321, 241, 1920), (320, 240));
        // 1280x536 scaled by 0.75 is 960x402; 1000x563 by 0.5 is 500x281.5.
        assert_eq!(fit_within(1000, 563, 500), (500, 282));
        assert_eq!(fit_within(1, 1, 1920), (2, 2));
        // An odd cap is never exceeded.
        assert_eq!(fit_within(4000, 3000, 1919), (1918, 1440));
    }

    #[test]
    fn limits_accept_4k_both_ways_and_refuse_more() {
        let limits = MediaLimits::default();
        assert!(limits.check_frame_size(3840, 2160).is_ok());
        assert!(limits.check_frame_size(2160, 3840).is_ok());
        assert!(limits.check_frame_size(3840, 3840).is_err());
        assert!(limits.check_frame_size(4096, 2160).is_err());
        assert!(limits.check_duration(6.0 * 3600.0).is_ok());
        assert!(limits.check_duration(6.0 * 3600.0 + 1.0).is_err());
        assert!(limits.check_frame_count(limits.max_frames + 1).is_err());
    }

    #[test]
    fn thread_budget_split() {
        let mut profile = OutputProfile::default();
        assert_eq!(profile.thread_budget(), num_cpus::get().max(1));
        profile.threads = 2;
        assert_eq!((profile.thread_budget(), profile.decoder_threads()), (2, 1));
        profile.threads = 8;
        assert_eq!((profile.thread_budget(), profile.decoder_threads()), (8, 2));
    }
}
