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
//!   each an IDR picture, closed GOPs (no frame after a keyframe is shown
//!   before it), every packet readable, none the demuxer marks to be
//!   dropped (an edit list starting between keyframes) or corrupt, and no
//!   two shown at the same time (the decode would drop one, and the lower
//!   renditions could miss a keyframe the copy has).
//!
//! The last two need every video packet's size and flags: one read of the
//! file without decoding, which also gives the cuts the segmenter will
//! make, and so the longest segment (the playlists' target duration, fixed
//! from the first segment on) and the peak bit rate (the preview's
//! `BANDWIDTH`).

use std::collections::HashSet;
use std::path::Path;

use ffmpeg_next::codec::{self, Id, Profile};
use ffmpeg_next::format::Pixel;
use ffmpeg_next::util::mathematics::Rescale;
use ffmpeg_next::{format, Packet, Stream};

use super::error::MediaError;
use super::hls::{extradata, next_cut, segment_ticks, PEAK_MIN_FRACTION, TS_TIME_BASE};
use super::input::{open_audio_decoder, open_input, open_video_decoder};
use super::ladder::max_kbps;
use super::probe::{ticks, Source};
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
    /// The video's peak bit rate over those segments (bit/s), as the
    /// finished playlist's `BANDWIDTH` will count it.
    pub(crate) peak_bit_rate: u64,
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
    let packets = scan_video_packets(input, source, profile.hls_segment_secs, limits)?;
    let refusal = if !packets.clean {
        Some("a packet is unreadable, corrupt, to be dropped, or without a timestamp of its own")
    } else if !packets.starts_with_keyframe {
        Some("the first packet is not a keyframe")
    } else if packets.open_gop {
        Some("frames shown before a keyframe follow it (open GOP)")
    } else if !packets.idr_keyframes {
        Some("a keyframe is not an IDR picture")
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
    // A copy: setting the tag on the stream's own parameters would change
    // the input under the demuxer.
    let mut parameters = stream.parameters().clone();
    // SAFETY: `parameters` owns its AVCodecParameters (a deep copy); the
    // muxers choose the tag of their container (`avc1`) when it is 0.
    unsafe { (*parameters.as_mut_ptr()).codec_tag = 0 };
    let audio = match source.audio_index.and_then(|index| ictx.stream(index)) {
        Some(stream) => is_aac_lc_stereo(&stream, profile.audio_sample_rate),
        None => false,
    };
    tracing::info!(audio, "copying the source's video");
    Ok(Plan {
        video: Some(VideoCopy {
            parameters,
            longest_segment: packets.longest_segment(),
            peak_bit_rate: packets.peak_bit_rate(profile.hls_segment_secs),
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
    if !avcc_has_parameter_sets(&extradata(&parameters)) {
        return Ok(Some(
            "parameter sets in band (no avcC with an SPS and a PPS)",
        ));
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

/// Whether H.264 extradata is an avcC record holding at least one SPS and
/// one PPS (ISO/IEC 14496-15: version 1, then profile, compatibility and
/// level, the NAL length size, the SPS count and each SPS, then the PPS count).
fn avcc_has_parameter_sets(avcc: &[u8]) -> bool {
    if avcc.len() < 7 || avcc[0] != 1 {
        return false;
    }
    let sps_count = usize::from(avcc[5] & 0x1f);
    let mut at = 6;
    for _ in 0..sps_count {
        let Some(length) = avcc.get(at..at + 2) else {
            return false;
        };
        at += 2 + usize::from(u16::from_be_bytes([length[0], length[1]]));
    }
    sps_count > 0 && avcc.get(at).is_some_and(|&pps_count| pps_count > 0)
}

/// Whether an avcC-framed packet (NAL units each after a `length_size`-byte
/// length) holds an IDR slice (NAL type 5).
fn has_idr_slice(packet: &[u8], length_size: usize) -> bool {
    let mut at = 0;
    while at + length_size < packet.len() {
        let length = packet[at..at + length_size]
            .iter()
            .fold(0usize, |n, &b| n << 8 | usize::from(b));
        let nal = at + length_size;
        if packet[nal] & 0x1f == 5 {
            return true;
        }
        at = nal + length;
    }
    false
}

/// What one read of the video stream's packets tells, in the output's
/// time: 90 kHz ticks from its origin, stamped as the video stage and the
/// segmenter stamp them.
struct VideoPackets {
    /// Keyframe times, in order.
    keyframes: Vec<i64>,
    /// The segments the segmenter will cut, in order: each one's start and
    /// the bytes of its video packets; the last runs to `end`.
    segments: Vec<(i64, u64)>,
    /// End of the media: the last frame's, or the container's duration.
    end: i64,
    /// Start of the first frame.
    start: i64,
    /// Bytes of every video packet.
    bytes: u64,
    /// Whether the first packet is a keyframe.
    starts_with_keyframe: bool,
    /// Every packet was read, none is corrupt or to be dropped, and each
    /// has a presentation time no other has.
    clean: bool,
    /// A packet after a keyframe (in decode order) is shown before it: a
    /// segment starting at that keyframe would not decode alone.
    open_gop: bool,
    /// Every keyframe holds an IDR slice (a flagged I-frame that is not one
    /// may be followed by frames that refer to frames before it).
    idr_keyframes: bool,
    /// The segment length (ticks), and where the next cut may be.
    grid: i64,
    next: i64,
}

impl VideoPackets {
    fn new(segment_secs: f64) -> Self {
        let grid = segment_ticks(segment_secs);
        Self {
            keyframes: Vec::new(),
            segments: vec![(0, 0)],
            end: 0,
            start: i64::MAX,
            bytes: 0,
            starts_with_keyframe: false,
            clean: true,
            open_gop: false,
            idr_keyframes: true,
            grid,
            next: next_cut(0, grid),
        }
    }

    /// A keyframe at `at`, in decode order: it starts a segment if the grid says so.
    fn keyframe(&mut self, at: i64) {
        self.keyframes.push(at);
        if at >= self.next {
            self.segments.push((at, 0));
            self.next = next_cut(at, self.grid);
        }
    }

    /// A packet of `size` bytes, after the keyframes before it: its segment's.
    fn bytes_of(&mut self, size: u64) {
        self.bytes += size;
        if let Some((_, bytes)) = self.segments.last_mut() {
            *bytes += size;
        }
    }

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

    /// Each segment's length (ticks) and bytes.
    fn segment_spans(&self) -> impl Iterator<Item = (i64, u64)> + '_ {
        let ends = self.segments.iter().skip(1).map(|&(start, _)| start);
        self.segments
            .iter()
            .zip(ends.chain([self.end]))
            .map(|(&(start, bytes), end)| (end - start, bytes))
    }

    /// The longest segment, rounded as a playlist's target duration counts it.
    fn longest_segment(&self) -> u64 {
        let longest = self.segment_spans().map(|(span, _)| span).max();
        (longest.unwrap_or(0) as f64 / 90_000.0).round() as u64
    }

    /// The video's peak bit rate over its segments, those shorter than
    /// [`PEAK_MIN_FRACTION`] of the target left out as the finished
    /// playlist leaves them (all of them if none is that long).
    fn peak_bit_rate(&self, segment_secs: f64) -> u64 {
        let rate = |(span, bytes): (i64, u64)| bytes as f64 * 8.0 * 90_000.0 / span.max(1) as f64;
        let least = (segment_secs * PEAK_MIN_FRACTION * 90_000.0) as i64;
        let full = self
            .segment_spans()
            .filter(|&(span, _)| span >= least)
            .map(rate);
        let peak = full.fold(0.0, f64::max);
        let peak = if peak > 0.0 {
            peak
        } else {
            self.segment_spans().map(rate).fold(0.0, f64::max)
        };
        peak.ceil() as u64
    }
}

/// Reads every packet of the video stream, without decoding, and cuts it
/// as the segmenter will (the first keyframe at or after each [`next_cut`]).
fn scan_video_packets(
    input: &Path,
    source: &Source,
    segment_secs: f64,
    limits: &MediaLimits,
) -> Result<VideoPackets, MediaError> {
    let mut ictx = open_input(input, limits)?;
    let (time_base, length_size) = {
        let stream = ictx
            .stream(source.video_index)
            .ok_or_else(|| MediaError::internal("planning", "video stream vanished"))?;
        let avcc = extradata(&stream.parameters());
        (
            stream.time_base(),
            usize::from(avcc.get(4).map_or(3, |b| b & 3)) + 1,
        )
    };
    // As `VideoStage` stamps frames: the origin in the stream's time base first.
    let origin = ticks(source.origin_secs, time_base);
    let frame_step = ticks(1.0 / f64::from(source.frame_rate), time_base).max(1);
    let to_ticks = |ts: i64| (ts - origin).rescale(time_base, TS_TIME_BASE);
    let unwanted = ffmpeg_next::ffi::AV_PKT_FLAG_DISCARD | ffmpeg_next::ffi::AV_PKT_FLAG_CORRUPT;
    let mut packets = VideoPackets::new(segment_secs);
    let mut count = 0u64;
    let mut last_keyframe = None;
    let mut shown = HashSet::new();
    loop {
        let mut packet = Packet::empty();
        match packet.read(&mut ictx) {
            Ok(()) => {}
            Err(ffmpeg_next::Error::Eof) => break,
            Err(_) => {
                // The copy would lack what could not be read.
                packets.clean = false;
                break;
            }
        }
        if packet.stream() != source.video_index {
            continue;
        }
        if count == 0 {
            packets.starts_with_keyframe = packet.is_key();
        }
        count += 1;
        limits.check_frame_count(count)?;
        let size = packet.size() as u64;
        let Some(pts) = packet.pts().filter(|&pts| shown.insert(pts)) else {
            packets.clean = false;
            continue;
        };
        if packet.flags().bits() & unwanted != 0 {
            packets.clean = false;
        }
        let at = to_ticks(pts);
        if packet.is_key() {
            packets.keyframe(at);
            last_keyframe = Some(at);
            if !has_idr_slice(packet.data().unwrap_or_default(), length_size) {
                packets.idr_keyframes = false;
            }
        } else if last_keyframe.is_some_and(|key| at < key) {
            packets.open_gop = true;
        }
        packets.bytes_of(size);
        packets.start = packets.start.min(at);
        let duration = match packet.duration() {
            0 => frame_step,
            duration => duration,
        };
        packets.end = packets.end.max(to_ticks(pts + duration));
    }
    if count == 0 {
        return Err(MediaError::corrupt("the video stream has no packet"));
    }
    // The segmenter ends the last segment at the end of the longer track.
    if let Some(duration) = source.info.duration {
        packets.end = packets.end.max((duration * 90_000.0).round() as i64);
    }
    packets.keyframes.sort_unstable();
    packets.start = packets.start.min(packets.end);
    Ok(packets)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Keyframes at `keyframes_secs` on a 4 s grid, each with 1000 bytes
    /// after it, the media ending at `end_secs`.
    fn packets(keyframes_secs: &[f64], end_secs: f64) -> VideoPackets {
        let mut packets = VideoPackets::new(4.0);
        packets.start = 0;
        for &secs in keyframes_secs {
            packets.keyframe((secs * 90_000.0) as i64);
            packets.bytes_of(1000);
        }
        packets.end = (end_secs * 90_000.0) as i64;
        packets
    }

    #[test]
    fn segments_cut_at_the_first_keyframe_after_each_grid_point() {
        // Keyframes every 2 s, a 4 s grid: cuts at 2 (the first segment's
        // 1 s is not a keyframe), 4, 8, 12; the last segment runs to 13.
        let every_two = packets(&[0.0, 2.0, 4.0, 6.0, 8.0, 10.0, 12.0], 13.0);
        let starts: Vec<i64> = every_two.segments.iter().map(|s| s.0 / 90_000).collect();
        assert_eq!(starts, [0, 2, 4, 8, 12]);
        assert_eq!(every_two.longest_segment(), 4);
        assert_eq!(every_two.longest_keyframe_gap(), 2.0);
        // 2000 bytes in each 4 s segment, 1000 in the 2 s ones (left out).
        assert_eq!(every_two.peak_bit_rate(4.0), 4000);
        // Keyframes every 3.9 s: cuts at 3.9 then 7.8 (the grid point 4 s
        // falls just after 3.9), 11.7 and 15.6: 3.9 s each, rounded to 4.
        let sparse = packets(&[0.0, 3.9, 7.8, 11.7, 15.6], 16.0);
        assert_eq!(sparse.longest_segment(), 4);
        // The grid point 8 lies just after 7.9: that segment runs to 11.8.
        let late = packets(&[0.0, 4.0, 7.9, 11.8], 12.0);
        assert_eq!(late.longest_segment(), 8);
        assert!((late.longest_keyframe_gap() - 4.0).abs() < 1e-6);
    }

    #[test]
    fn the_end_counts_as_a_gap() {
        let tail = packets(&[0.0, 2.0], 11.0);
        assert_eq!(tail.longest_keyframe_gap(), 9.0);
        assert_eq!(tail.longest_segment(), 9);
    }

    #[test]
    fn avcc_needs_its_parameter_sets_and_keyframes_an_idr_slice() {
        // Version, profile, compatibility, level, 4-byte lengths, one SPS of 2 bytes, one PPS.
        let avcc = [
            1, 0x64, 0, 0x28, 0xff, 0xe1, 0, 2, 0x67, 0x64, 1, 0, 1, 0x68,
        ];
        assert!(avcc_has_parameter_sets(&avcc));
        let no_pps = [1, 0x64, 0, 0x28, 0xff, 0xe1, 0, 2, 0x67, 0x64, 0];
        assert!(!avcc_has_parameter_sets(&no_pps));
        assert!(!avcc_has_parameter_sets(&[1, 0x64, 0, 0x28, 0xff, 0xe0, 0]));
        assert!(!avcc_has_parameter_sets(&[0, 0, 0, 1, 0x67]));
        // An SEI (6) then an IDR slice (5); a non-IDR slice (1) alone.
        let idr = [0, 0, 0, 2, 6, 0, 0, 0, 0, 2, 0x65, 0x88];
        assert!(has_idr_slice(&idr, 4));
        assert!(!has_idr_slice(&[0, 0, 0, 2, 0x41, 0x9a], 4));
    }
}
