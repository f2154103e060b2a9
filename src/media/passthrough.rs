//! Passthrough: when the source's video already is what the profile would
//! make, the MP4 and the top rendition are the source's own packets (stream
//! copy) and only the lower renditions are encoded, with their keyframes at
//! the source's keyframes so every rendition's segments start together. The
//! audio is copied too when it already is AAC-LC stereo at the profile's
//! sample rate.
//!
//! The rules, all of them checked before anything is written (a source just
//! outside one is re-encoded as before):
//! - H.264 with its parameter sets out of band (avcC, as MP4, MOV and MKV
//!   carry them), 8-bit 4:2:0, progressive, square pixels, upright;
//! - already the top rendition's size (within `max_long_side`, even sides);
//! - a video bit rate within the top rung's peak;
//! - a keyframe at least every `2 × hls_segment_secs`, the first packet one,
//!   closed GOPs (no frame after a keyframe is shown before it), and no
//!   packet the demuxer marks to be dropped (an edit list starting between
//!   keyframes) or corrupt.
//!
//! The last two need every video packet's size and flags: one read of the
//! file without decoding (about 0.1 s for 10 minutes of 1080p), which also
//! gives the cuts the segmenter will make, and so the longest segment (the
//! playlists' target duration, fixed from the first segment on).

use std::path::Path;

use ffmpeg_next::codec::{self, Id, Profile};
use ffmpeg_next::format::Pixel;
use ffmpeg_next::util::mathematics::Rescale;
use ffmpeg_next::{format, Stream};

use super::error::MediaError;
use super::hls::{extradata, next_cut, segment_ticks, TS_TIME_BASE};
use super::input::{open_audio_decoder, open_input, open_video_decoder};
use super::ladder::max_kbps;
use super::probe::Source;
use super::profile::{MediaLimits, OutputProfile};
use super::rotate::Rotation;

/// What is copied rather than encoded.
#[derive(Default)]
pub(crate) struct Plan {
    /// Set when the video is copied into the MP4 and the top rendition.
    pub(crate) video: Option<VideoCopy>,
    /// Whether the audio is copied (only ever with the video).
    pub(crate) audio: bool,
}

/// The copied video stream.
pub(crate) struct VideoCopy {
    /// The source stream's parameters, its codec tag cleared for the muxers.
    pub(crate) parameters: codec::Parameters,
    /// The longest segment the cuts at the source's keyframes make, in
    /// seconds rounded as a playlist's target duration counts them.
    pub(crate) longest_segment: u64,
}

/// What is copied for `source` (probed from `ictx`, opened from `input`)
/// with a top rendition of `top`.
pub(crate) fn plan(
    input: &Path,
    ictx: &format::context::Input,
    source: &Source,
    profile: &OutputProfile,
    limits: &MediaLimits,
    top: (u32, u32),
) -> Result<Plan, MediaError> {
    if !profile.passthrough {
        return Ok(Plan::default());
    }
    let stream = ictx
        .stream(source.video_index)
        .ok_or_else(|| MediaError::internal("planning", "video stream vanished"))?;
    if let Some(reason) = video_refusal(&stream, source, limits, top)? {
        tracing::info!(reason, "re-encoding the video");
        return Ok(Plan::default());
    }
    let peak = u64::from(max_kbps(top.0, top.1)) * 1000;
    // The demuxer's own figure (MP4 and MOV count it from the sample sizes)
    // spares the read of a file already known to be over.
    let stated = u64::try_from(stream.parameters().bit_rate()).unwrap_or(0);
    if stated > peak {
        tracing::info!(
            bit_rate = stated,
            "re-encoding the video: the bit rate is above the top rendition's peak"
        );
        return Ok(Plan::default());
    }
    let packets = scan_video_packets(input, source, limits)?;
    let refusal = if !packets.clean {
        Some("a packet is marked corrupt, to be dropped, or has no timestamp")
    } else if !packets.starts_with_keyframe {
        Some("the first packet is not a keyframe")
    } else if packets.open_gop {
        Some("frames shown before a keyframe follow it (open GOP)")
    } else if packets.bit_rate() > peak as f64 {
        Some("the bit rate is above the top rendition's peak")
    } else if packets.longest_keyframe_gap() > 2.0 * profile.hls_segment_secs {
        Some("keyframes are further apart than two segments")
    } else {
        None
    };
    if let Some(reason) = refusal {
        tracing::info!(
            reason,
            bit_rate = packets.bit_rate(),
            "re-encoding the video"
        );
        return Ok(Plan::default());
    }
    let mut parameters = stream.parameters();
    // SAFETY: `parameters` is our own copy of the stream's AVCodecParameters;
    // the muxers choose the tag of their container (`avc1`) when it is 0.
    unsafe { (*parameters.as_mut_ptr()).codec_tag = 0 };
    let longest_segment = packets.longest_segment(profile.hls_segment_secs);
    let audio = match source.audio_index.and_then(|index| ictx.stream(index)) {
        Some(stream) => is_aac_lc_stereo(&stream, profile.audio_sample_rate),
        None => false,
    };
    tracing::info!(audio, "copying the source's video");
    Ok(Plan {
        video: Some(VideoCopy {
            parameters,
            longest_segment,
        }),
        audio,
    })
}

/// Why the video stream's header rules out a copy, if it does.
fn video_refusal(
    stream: &Stream,
    source: &Source,
    limits: &MediaLimits,
    top: (u32, u32),
) -> Result<Option<&'static str>, MediaError> {
    let parameters = stream.parameters();
    if parameters.id() != Id::H264 {
        return Ok(Some("not H.264"));
    }
    if extradata(&parameters).first() != Some(&1) {
        return Ok(Some("parameter sets in band (no avcC)"));
    }
    // SAFETY: `parameters` wraps the stream's live AVCodecParameters, owned by
    // the open input context `stream` borrows; we only read an int.
    let field_order = unsafe { (*parameters.as_ptr()).field_order };
    if !matches!(
        field_order,
        ffmpeg_next::ffi::AVFieldOrder::AV_FIELD_PROGRESSIVE
            | ffmpeg_next::ffi::AVFieldOrder::AV_FIELD_UNKNOWN
    ) {
        return Ok(Some("interlaced"));
    }
    if source.rotation != Rotation::None {
        return Ok(Some("turned by its display matrix"));
    }
    let decoder = open_video_decoder(stream, 1, limits)?;
    if !matches!(decoder.format(), Pixel::YUV420P | Pixel::YUVJ420P) {
        return Ok(Some("not 8-bit 4:2:0"));
    }
    let aspect = decoder.aspect_ratio();
    if aspect.numerator() != 0 && aspect.numerator() != aspect.denominator() {
        return Ok(Some("pixels not square"));
    }
    if (decoder.width(), decoder.height()) != top {
        return Ok(Some("not the top rendition's size"));
    }
    Ok(None)
}

/// Whether an audio stream is AAC-LC in two channels at `rate` Hz (the
/// profile's), with its AudioSpecificConfig out of band (the MP4 needs it;
/// the TS muxer makes ADTS headers from it).
fn is_aac_lc_stereo(stream: &Stream, rate: u32) -> bool {
    let parameters = stream.parameters();
    if parameters.id() != Id::AAC || extradata(&parameters).is_empty() {
        return false;
    }
    open_audio_decoder(stream).is_ok_and(|decoder| {
        decoder.profile() == Profile::AAC(codec::profile::AAC::Low)
            && decoder.channels() == 2
            && decoder.rate() == rate
    })
}

/// What one read of the video stream's packets tells.
struct VideoPackets {
    /// Keyframe times (90 kHz ticks from the output's origin), in order.
    keyframes: Vec<i64>,
    /// End of the last frame (90 kHz ticks from the output's origin).
    end: i64,
    /// Start of the first frame (90 kHz ticks from the output's origin).
    start: i64,
    /// Bytes of every video packet.
    bytes: u64,
    /// Whether the first packet is a keyframe.
    starts_with_keyframe: bool,
    /// No packet is corrupt, to be dropped, or without a timestamp.
    clean: bool,
    /// A packet after a keyframe (in decode order) is shown before it: a
    /// segment starting at that keyframe would not decode alone.
    open_gop: bool,
}

impl VideoPackets {
    /// Mean bit rate of the video stream (bit/s).
    fn bit_rate(&self) -> f64 {
        let secs = (self.end - self.start) as f64 / 90_000.0;
        self.bytes as f64 * 8.0 / secs.max(0.001)
    }

    /// Longest stretch (s) without a keyframe, the end counted.
    fn longest_keyframe_gap(&self) -> f64 {
        let mut gap = 0;
        let mut last = self.start;
        for &keyframe in self.keyframes.iter().chain([&self.end]) {
            gap = gap.max(keyframe - last);
            last = keyframe;
        }
        gap as f64 / 90_000.0
    }

    /// The longest segment the segmenter will cut, rounded: it cuts at the
    /// first keyframe at or after each point of the grid ([`next_cut`]).
    fn longest_segment(&self, segment_secs: f64) -> u64 {
        let grid = segment_ticks(segment_secs);
        let mut longest = 0;
        let mut start = 0;
        let mut cut = next_cut(0, grid);
        for &keyframe in &self.keyframes {
            if keyframe >= cut {
                longest = longest.max(keyframe - start);
                start = keyframe;
                cut = next_cut(keyframe, grid);
            }
        }
        longest = longest.max(self.end - start);
        (longest as f64 / 90_000.0).round() as u64
    }
}

/// Reads every packet of the video stream, without decoding.
fn scan_video_packets(
    input: &Path,
    source: &Source,
    limits: &MediaLimits,
) -> Result<VideoPackets, MediaError> {
    let mut ictx = open_input(input, limits)?;
    let time_base = ictx
        .stream(source.video_index)
        .map(|s| s.time_base())
        .ok_or_else(|| MediaError::internal("planning", "video stream vanished"))?;
    let origin = (source.origin_secs * 90_000.0).round() as i64;
    let to_ticks = |ts: i64| ts.rescale(time_base, TS_TIME_BASE) - origin;
    let unwanted = ffmpeg_next::ffi::AV_PKT_FLAG_DISCARD | ffmpeg_next::ffi::AV_PKT_FLAG_CORRUPT;
    let mut packets = VideoPackets {
        keyframes: Vec::new(),
        end: 0,
        start: i64::MAX,
        bytes: 0,
        starts_with_keyframe: false,
        clean: true,
        open_gop: false,
    };
    let mut count = 0u64;
    let mut last_keyframe = None;
    for (stream, packet) in ictx.packets() {
        if stream.index() != source.video_index {
            continue;
        }
        if count == 0 {
            packets.starts_with_keyframe = packet.is_key();
        }
        count += 1;
        limits.check_frame_count(count)?;
        packets.bytes += packet.size() as u64;
        let Some(pts) = packet.pts() else {
            packets.clean = false;
            continue;
        };
        if packet.flags().bits() & unwanted != 0 {
            packets.clean = false;
        }
        let at = to_ticks(pts);
        if packet.is_key() {
            packets.keyframes.push(at);
            last_keyframe = Some(at);
        } else if last_keyframe.is_some_and(|key| at < key) {
            packets.open_gop = true;
        }
        packets.start = packets.start.min(at);
        packets.end = packets
            .end
            .max(at + packet.duration().rescale(time_base, TS_TIME_BASE));
    }
    if count == 0 {
        return Err(MediaError::corrupt("the video stream has no packet"));
    }
    packets.keyframes.sort_unstable();
    packets.start = packets.start.min(packets.end);
    Ok(packets)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn packets(keyframes_secs: &[f64], end_secs: f64) -> VideoPackets {
        VideoPackets {
            keyframes: keyframes_secs
                .iter()
                .map(|s| (s * 90_000.0) as i64)
                .collect(),
            end: (end_secs * 90_000.0) as i64,
            start: 0,
            bytes: 0,
            starts_with_keyframe: true,
            clean: true,
            open_gop: false,
        }
    }

    #[test]
    fn segments_cut_at_the_first_keyframe_after_each_grid_point() {
        // Keyframes every 2 s, a 4 s grid: cuts at 2 (the first segment's
        // 1 s is not a keyframe), 4, 8, 12; the last segment runs to 13.
        let every_two = packets(&[0.0, 2.0, 4.0, 6.0, 8.0, 10.0, 12.0], 13.0);
        assert_eq!(every_two.longest_segment(4.0), 4);
        assert_eq!(every_two.longest_keyframe_gap(), 2.0);
        // Keyframes every 3.9 s: cuts at 3.9 then 7.8 (the grid point 4 s
        // falls just after 3.9), 11.7 and 15.6: 3.9 s each, rounded to 4.
        let sparse = packets(&[0.0, 3.9, 7.8, 11.7, 15.6], 16.0);
        assert_eq!(sparse.longest_segment(4.0), 4);
        // The grid point 8 lies just after 7.9: that segment runs to 11.8.
        let late = packets(&[0.0, 4.0, 7.9, 11.8], 12.0);
        assert_eq!(late.longest_segment(4.0), 8);
        assert!((late.longest_keyframe_gap() - 4.0).abs() < 1e-6);
    }

    #[test]
    fn the_end_counts_as_a_gap() {
        let tail = packets(&[0.0, 2.0], 11.0);
        assert_eq!(tail.longest_keyframe_gap(), 9.0);
    }
}
