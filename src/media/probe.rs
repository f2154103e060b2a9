//! Probing: what an upload is, checked against the limits before any decoding.

use std::path::Path;

use ffmpeg_next::{format, Rational};
use serde::{Deserialize, Serialize};

use super::error::MediaError;
use super::input::{
    choose_streams, coded_size, open_audio_decoder, open_input, open_video_decoder, stream_rotation,
};
use super::profile::MediaLimits;
use super::rotate::Rotation;

/// Probed metadata of a source, as reported in an upload's `source` field.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SourceInfo {
    /// Seconds, when the container or stream says.
    pub duration: Option<f64>,
    /// Width as displayed (after rotation and pixel aspect ratio).
    pub width: u32,
    /// Height as displayed (after rotation and pixel aspect ratio).
    pub height: u32,
    /// Average frames per second, when known.
    pub frame_rate: Option<f64>,
    /// Video codec name, e.g. `h264`.
    pub video_codec: String,
    /// Audio codec name of the stream we would transcode, e.g. `aac`.
    pub audio_codec: Option<String>,
    /// Overall bit rate in bits per second, when known.
    pub bit_rate: Option<u64>,
    /// Size of the file in bytes.
    pub size_bytes: u64,
}

/// Probes `path` (opened through the container allow-list) and checks it against `limits`.
pub fn probe(path: &Path, limits: &MediaLimits) -> Result<SourceInfo, MediaError> {
    super::init();
    let ictx = open_input(path, limits)?;
    Ok(Source::inspect(&ictx, path, limits)?.info)
}

/// Pixel format name (e.g. `yuv420p`) of the video stream of `path`.
pub fn probe_pixel_format(path: &Path) -> Result<String, MediaError> {
    Ok(probe_details(path)?.pixel_format)
}

/// What a file holds beyond [`SourceInfo`], read packet by packet: for checking
/// outputs (pixel format, audio layout, where the keyframes are).
#[derive(Debug, Clone, PartialEq)]
pub struct StreamDetails {
    /// Pixel format of the video stream, e.g. `yuv420p`.
    pub pixel_format: String,
    /// Audio channels of the chosen audio stream, if any.
    pub audio_channels: Option<u16>,
    /// Audio sample rate in Hz of the chosen audio stream, if any.
    pub audio_sample_rate: Option<u32>,
    /// Video packets (frames) in the file.
    pub video_frames: u64,
    /// Presentation times (s, container clock) of the video keyframes, in file order.
    pub keyframes: Vec<f64>,
    /// Whether the first video packet is a keyframe (a segment that decodes alone).
    pub starts_with_keyframe: bool,
    /// Earliest video presentation time (s, container clock).
    pub video_start: Option<f64>,
    /// End of the last video frame (s, container clock).
    pub video_end: Option<f64>,
}

/// Reads every packet of `path` (through the container allow-list) for [`StreamDetails`].
pub fn probe_details(path: &Path) -> Result<StreamDetails, MediaError> {
    super::init();
    let mut ictx = open_input(path, &MediaLimits::default())?;
    let choice = choose_streams(&ictx)?;
    let (pixel_format, time_base) = {
        let stream = ictx
            .stream(choice.video)
            .ok_or_else(|| MediaError::internal("probing", "video stream vanished"))?;
        let decoder = open_video_decoder(&stream, 1, &MediaLimits::default())?;
        let name = decoder.format().descriptor().map_or("none", |d| d.name());
        (name.to_owned(), stream.time_base())
    };
    let (audio_channels, audio_sample_rate) = match choice.audio.and_then(|i| ictx.stream(i)) {
        Some(stream) => {
            let decoder = open_audio_decoder(&stream)?;
            (Some(decoder.channels()), Some(decoder.rate()))
        }
        None => (None, None),
    };
    let mut details = StreamDetails {
        pixel_format,
        audio_channels,
        audio_sample_rate,
        video_frames: 0,
        keyframes: Vec::new(),
        starts_with_keyframe: false,
        video_start: None,
        video_end: None,
    };
    for (stream, packet) in ictx.packets() {
        if stream.index() != choice.video {
            continue;
        }
        if details.video_frames == 0 {
            details.starts_with_keyframe = packet.is_key();
        }
        details.video_frames += 1;
        let Some(at) = packet.pts().and_then(|pts| seconds(pts, time_base)) else {
            continue;
        };
        if packet.is_key() {
            details.keyframes.push(at);
        }
        let end = at + seconds(packet.duration(), time_base).unwrap_or(0.0);
        details.video_start = Some(details.video_start.map_or(at, |s| s.min(at)));
        details.video_end = Some(details.video_end.map_or(end, |e| e.max(end)));
    }
    Ok(details)
}

/// Everything the pipeline needs to know about an opened input.
#[derive(Debug, Clone)]
pub(crate) struct Source {
    /// What `probe` reports.
    pub(crate) info: SourceInfo,
    /// Index of the video stream we transcode.
    pub(crate) video_index: usize,
    /// Index of the audio stream we transcode, if any.
    pub(crate) audio_index: Option<usize>,
    /// Turn applied so the output is upright.
    pub(crate) rotation: Rotation,
    /// Frame rate for the encoder (the stream's average, sanitised).
    pub(crate) frame_rate: Rational,
    /// Presentation time (s) that becomes 0 in the output: the earliest stream start.
    pub(crate) origin_secs: f64,
}

impl Source {
    pub(crate) fn inspect(
        ictx: &format::context::Input,
        path: &Path,
        limits: &MediaLimits,
    ) -> Result<Self, MediaError> {
        let choice = choose_streams(ictx)?;
        let stream = ictx
            .stream(choice.video)
            .ok_or_else(|| MediaError::internal("probing", "video stream vanished"))?;
        let (coded_width, coded_height) = coded_size(&stream);
        if coded_width == 0 || coded_height == 0 {
            return Err(MediaError::unsupported(
                "the video stream has no frame size",
            ));
        }
        limits.check_frame_size(coded_width, coded_height)?;
        // Opening the decoder proves we can decode the codec at all.
        let decoder = open_video_decoder(&stream, 1, limits)?;

        let duration =
            container_duration(ictx).or_else(|| seconds(stream.duration(), stream.time_base()));
        if let Some(duration) = duration {
            limits.check_duration(duration)?;
        }
        let rotation = stream_rotation(&stream);
        let (width, height) =
            display_size(coded_width, coded_height, decoder.aspect_ratio(), rotation);
        let frame_rate = sane_rate(stream.avg_frame_rate()).or_else(|| sane_rate(stream.rate()));
        let audio = choice.audio.and_then(|index| ictx.stream(index));
        let origin_secs = [Some(&stream), audio.as_ref()]
            .into_iter()
            .flatten()
            .filter_map(|s| seconds(s.start_time(), s.time_base()))
            .fold(None, |min: Option<f64>, t| {
                Some(min.map_or(t, |m| m.min(t)))
            })
            .unwrap_or(0.0);

        let size_bytes = std::fs::metadata(path)
            .map_err(|err| MediaError::internal("reading the upload", err))?
            .len();
        let info = SourceInfo {
            duration,
            width,
            height,
            frame_rate: frame_rate.map(f64::from),
            video_codec: stream.parameters().id().name().to_owned(),
            audio_codec: audio.map(|a| a.parameters().id().name().to_owned()),
            bit_rate: u64::try_from(ictx.bit_rate()).ok().filter(|&b| b > 0),
            size_bytes,
        };
        Ok(Self {
            info,
            video_index: choice.video,
            audio_index: choice.audio,
            rotation,
            frame_rate: frame_rate.unwrap_or(Rational(30, 1)),
            origin_secs,
        })
    }
}

/// Container duration in seconds, if set.
fn container_duration(ictx: &format::context::Input) -> Option<f64> {
    let duration = ictx.duration();
    (duration > 0).then(|| duration as f64 / f64::from(ffmpeg_next::ffi::AV_TIME_BASE))
}

/// `ts` in `time_base` as seconds; `None` for AV_NOPTS_VALUE or a broken time base.
pub(crate) fn seconds(ts: i64, time_base: Rational) -> Option<f64> {
    if ts == ffmpeg_next::ffi::AV_NOPTS_VALUE || time_base.denominator() <= 0 {
        return None;
    }
    Some(ts as f64 * f64::from(time_base.numerator()) / f64::from(time_base.denominator()))
}

/// `secs` as a timestamp in `time_base`, rounded: the inverse of [`seconds`].
pub(crate) fn ticks(secs: f64, time_base: Rational) -> i64 {
    (secs * f64::from(time_base.denominator()) / f64::from(time_base.numerator().max(1))).round()
        as i64
}

/// A frame rate between 1 and 240 fps, else `None` (libx264 picks absurd levels otherwise).
fn sane_rate(rate: Rational) -> Option<Rational> {
    let fps = (rate.denominator() > 0).then(|| f64::from(rate));
    fps.filter(|fps| (1.0..=240.0).contains(fps)).map(|_| rate)
}

/// Displayed size: square pixels (sample aspect ratio applied to the width), then rotated.
pub(crate) fn display_size(
    width: u32,
    height: u32,
    sample_aspect: Rational,
    rotation: Rotation,
) -> (u32, u32) {
    let mut display_width = f64::from(width);
    if sample_aspect.numerator() > 0 && sample_aspect.denominator() > 0 {
        let sar = f64::from(sample_aspect);
        if (0.25..=4.0).contains(&sar) {
            display_width *= sar;
        }
    }
    let display_width = (display_width.round() as u32).max(1);
    if rotation.swaps_axes() {
        (height, display_width)
    } else {
        (display_width, height)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn display_size_applies_aspect_then_rotation() {
        assert_eq!(
            display_size(320, 180, Rational(1, 1), Rotation::None),
            (320, 180)
        );
        assert_eq!(
            display_size(320, 180, Rational(0, 1), Rotation::Clockwise90),
            (180, 320)
        );
        assert_eq!(
            display_size(720, 576, Rational(16, 15), Rotation::None),
            (768, 576)
        );
        assert_eq!(
            display_size(720, 576, Rational(64, 1), Rotation::Half),
            (720, 576)
        );
    }

    #[test]
    fn rates_outside_sane_bounds_are_dropped() {
        assert_eq!(sane_rate(Rational(25, 1)), Some(Rational(25, 1)));
        assert_eq!(
            sane_rate(Rational(30000, 1001)),
            Some(Rational(30000, 1001))
        );
        assert_eq!(sane_rate(Rational(0, 0)), None);
        assert_eq!(sane_rate(Rational(90000, 1)), None);
    }

    #[test]
    fn seconds_ignores_missing_timestamps() {
        assert_eq!(seconds(25, Rational(1, 25)), Some(1.0));
        assert_eq!(
            seconds(ffmpeg_next::ffi::AV_NOPTS_VALUE, Rational(1, 25)),
            None
        );
        assert_eq!(seconds(1, Rational(1, 0)), None);
    }
}
