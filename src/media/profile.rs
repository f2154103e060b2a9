//! What we produce (`OutputProfile`), what we accept (`MediaLimits`), and the
//! output-size arithmetic both depend on.

use super::error::MediaError;

/// The default output: H.264 + AAC-LC in a faststart MP4 (see DESIGN.md).
/// Also the `[profile]` table of the config file: every field is a key, and
/// a key left out keeps its default.
#[derive(Debug, Clone, PartialEq, serde::Deserialize, serde::Serialize)]
#[serde(default, deny_unknown_fields)]
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
    /// CPU threads this job may keep busy (decoder + encoders); 0 means every core.
    /// Default: not set, which here means every core; the server sets it to the
    /// number of CPUs divided by transcoders, at least 1. Split across the
    /// renditions of the ladder, never multiplied by them (see `RenditionLadder`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub threads: Option<usize>,
    /// Write the HLS ladder beside the MP4. Default true.
    pub hls: bool,
    /// Target length of an HLS segment in seconds; every rendition has a keyframe at each
    /// multiple of it, and segments start there (the first one ends at 1 s when that is
    /// shorter, so playback and a preview start sooner). Default 4.
    pub hls_segment_secs: f64,
    /// Copy a source's video (and its AAC-LC stereo audio) into the MP4 and
    /// the top rendition when it already is what this profile would make,
    /// encoding only the lower renditions (see `media/passthrough.rs` for
    /// the rules). Default true.
    pub passthrough: bool,
}

impl Default for OutputProfile {
    fn default() -> Self {
        Self {
            max_long_side: 1920,
            crf: 23,
            preset: "veryfast".to_owned(),
            audio_bit_rate: 128_000,
            audio_sample_rate: 48_000,
            threads: None,
            hls: true,
            hls_segment_secs: 4.0,
            passthrough: true,
        }
    }
}

impl OutputProfile {
    /// The thread budget of one job: `threads`, or every core when it is 0 or unset.
    pub(crate) fn thread_budget(&self) -> usize {
        match self.threads {
            None | Some(0) => num_cpus::get().max(1),
            Some(n) => n,
        }
    }

    /// Checks the values types cannot, naming the setting.
    pub fn validate(&self) -> Result<(), String> {
        if self.crf > 51 {
            return Err(format!("profile.crf must be 0 to 51, not {}", self.crf));
        }
        if !X264_PRESETS.contains(&self.preset.as_str()) {
            return Err(format!(
                "profile.preset {:?} is not one of {}",
                self.preset,
                X264_PRESETS.join(", ")
            ));
        }
        if self.max_long_side < 16 {
            return Err("profile.max_long_side must be at least 16".into());
        }
        if !(8_000..=512_000).contains(&self.audio_bit_rate) {
            return Err("profile.audio_bit_rate must be 8000 to 512000".into());
        }
        if !AAC_SAMPLE_RATES.contains(&self.audio_sample_rate) {
            return Err(format!(
                "profile.audio_sample_rate must be one of {AAC_SAMPLE_RATES:?}"
            ));
        }
        if !(self.hls_segment_secs > 0.0 && self.hls_segment_secs <= 60.0) {
            return Err("profile.hls_segment_secs must be above 0 and at most 60".into());
        }
        Ok(())
    }

    /// Decoder threads: a quarter of the budget, at least one ("on the calling thread").
    /// The encoders share the whole budget (see `RenditionLadder`): x264 is where the time goes.
    pub(crate) fn decoder_threads(&self) -> usize {
        (self.thread_budget() / 4).max(1)
    }
}

/// The x264 speed presets, fastest first.
pub const X264_PRESETS: [&str; 10] = [
    "ultrafast",
    "superfast",
    "veryfast",
    "faster",
    "fast",
    "medium",
    "slow",
    "slower",
    "veryslow",
    "placebo",
];

/// Sample rates FFmpeg's AAC encoder takes.
const AAC_SAMPLE_RATES: [u32; 12] = [
    8_000, 11_025, 12_000, 16_000, 22_050, 24_000, 32_000, 44_100, 48_000, 64_000, 88_200, 96_000,
];

/// What an upload may be before we refuse it with `input_too_large`. Also
/// the `[media_limits]` table of the config file.
#[derive(Debug, Clone, PartialEq, serde::Deserialize, serde::Serialize)]
#[serde(default, deny_unknown_fields)]
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
    /// Checks the values types cannot, naming the setting.
    pub fn validate(&self) -> Result<(), String> {
        if self.max_width == 0
            || self.max_height == 0
            || self.max_pixels == 0
            || self.max_frames == 0
        {
            return Err("media_limits values must be above 0".into());
        }
        if !(self.max_duration_secs.is_finite() && self.max_duration_secs > 0.0) {
            return Err("media_limits.max_duration_secs must be above 0".into());
        }
        Ok(())
    }

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
        profile.threads = Some(2);
        assert_eq!((profile.thread_budget(), profile.decoder_threads()), (2, 1));
        profile.threads = Some(8);
        assert_eq!((profile.thread_budget(), profile.decoder_threads()), (8, 2));
    }
}
