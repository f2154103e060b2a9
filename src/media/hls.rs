//! HLS: each rendition cut into MPEG-TS segments at its segment keyframes, a
//! media playlist per rendition, and the master playlist over them all.
//!
//! Our own segmenter rather than libavformat's `hls` muxer: it only ever opens
//! the files it names inside the rendition's folder, cuts exactly at the
//! keyframes the video stage forced (the same instants in every rendition),
//! and knows each segment's size and duration for `BANDWIDTH`.

use std::collections::VecDeque;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use ffmpeg_next::{codec, format, Packet, Rational};

use super::error::{internal, MediaError};
use super::input::file_url;

/// Folder of the ladder inside a job's output folder.
pub const HLS_DIR: &str = "hls";
/// File name of the master playlist inside [`HLS_DIR`].
pub const MASTER_PLAYLIST: &str = "master.m3u8";
/// File name of each rendition's media playlist inside its folder.
const MEDIA_PLAYLIST: &str = "index.m3u8";
/// MPEG-TS timestamps are in 90 kHz ticks; segment boundaries are on this grid too.
pub(crate) const TS_TIME_BASE: Rational = Rational(1, 90_000);
/// Added to every TS timestamp (1.4 s, as the ffmpeg CLI does) so the encoders'
/// slightly negative starts (B-frame delay, AAC priming) stay positive in every segment.
const TS_OFFSET_TICKS: i64 = 126_000;
/// How far (90 kHz ticks) one track may run ahead of a silent other before it is
/// written anyway, as libavformat's `max_interleave_delta` (10 s).
const MAX_INTERLEAVE_TICKS: i64 = 10 * 90_000;
/// A segment shorter than this fraction of the target does not set `BANDWIDTH`
/// (a short first or last segment with its keyframe would overstate the peak).
pub(crate) const PEAK_MIN_FRACTION: f64 = 0.75;

/// A target segment length in 90 kHz ticks (at least one second).
pub(crate) fn segment_ticks(segment_secs: f64) -> i64 {
    ((segment_secs * 90_000.0).round() as i64).max(90_000)
}

/// The first segment is at most this long (1 s in 90 kHz ticks): a player
/// starts sooner, and the ladder can be played while it is processed as soon
/// as every rendition has its first segment (on two cores, a full 1080p
/// ladder encodes at about 0.6 times real time: a 4 s first segment is
/// about 7 s of waiting).
const FIRST_CUT_TICKS: i64 = 90_000;

/// The segment boundary after output time `ticks`: the end of the short
/// first segment ([`FIRST_CUT_TICKS`]), then each next multiple of
/// `segment_ticks`. The video stage forces a keyframe on the first frame at
/// or after it, and the segmenter cuts at that keyframe: one grid, so every
/// rendition cuts alike.
pub(crate) fn next_cut(ticks: i64, segment_ticks: i64) -> i64 {
    let first = segment_ticks.min(FIRST_CUT_TICKS);
    if ticks < first {
        return first;
    }
    let cut = (ticks.div_euclid(segment_ticks) + 1) * segment_ticks;
    // No sliver of a second segment (a grid of 1.5 s would cut at 1.0 and 1.5).
    if cut - first < segment_ticks / 2 {
        cut + segment_ticks
    } else {
        cut
    }
}

/// Which track of a variant a packet belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Track {
    /// The rendition's H.264 stream (stream 0 of each segment).
    Video,
    /// The shared AAC stream (stream 1 of each segment).
    Audio,
}

/// One finished segment.
#[derive(Debug, Clone, PartialEq)]
pub struct HlsSegment {
    /// Path relative to the job's output folder, e.g. `hls/720p/seg_00000.ts`.
    pub file: String,
    /// Seconds of media.
    pub duration: f64,
    /// Size in bytes.
    pub bytes: u64,
}

/// One rendition of the ladder, as written.
#[derive(Debug, Clone, PartialEq)]
pub struct HlsRendition {
    /// `720p` and the like (the short side).
    pub name: String,
    /// Displayed width.
    pub width: u32,
    /// Displayed height.
    pub height: u32,
    /// Peak segment bit rate (bits per second), as in the master playlist's `BANDWIDTH`.
    pub bandwidth: u64,
    /// Mean bit rate over the whole rendition (`AVERAGE-BANDWIDTH`).
    pub average_bandwidth: u64,
    /// RFC 6381 codecs, e.g. `avc1.64001f,mp4a.40.2`.
    pub codecs: String,
    /// Media playlist, relative to the job's output folder: `hls/720p/index.m3u8`.
    pub playlist: String,
    /// The segments, in order.
    pub segments: Vec<HlsSegment>,
    /// False when the rendition is the source's video, copied.
    pub encoded: bool,
}

/// The whole ladder, as written.
#[derive(Debug, Clone, PartialEq)]
pub struct HlsLadder {
    /// Master playlist, relative to the job's output folder: `hls/master.m3u8`.
    pub master: String,
    /// Renditions, top (the MP4's size) first.
    pub renditions: Vec<HlsRendition>,
}

impl HlsLadder {
    /// Every file of the ladder (playlists and segments), relative to the job's output folder.
    pub fn files(&self) -> Vec<String> {
        let mut files = vec![self.master.clone()];
        for rendition in &self.renditions {
            files.push(rendition.playlist.clone());
            files.extend(rendition.segments.iter().map(|s| s.file.clone()));
        }
        files
    }
}

/// Writes one rendition: interleaves its video and audio packets by decode
/// time, cuts a new segment at each segment keyframe, and writes its playlist.
pub(crate) struct VariantWriter {
    /// `720p` and the like.
    name: String,
    /// Displayed size.
    size: (u32, u32),
    /// `out_dir/hls/720p`.
    dir: PathBuf,
    /// Video stream parameters (with the SPS/PPS the CODECS string is read from).
    video: codec::Parameters,
    /// Audio stream parameters, when the output has audio.
    audio: Option<codec::Parameters>,
    /// Packets not yet written, per track, in 90 kHz ticks (offset applied).
    queue: Interleaver,
    /// The segment being written.
    current: Option<OpenSegment>,
    /// Segments already closed.
    segments: Vec<HlsSegment>,
    /// Target segment length; cuts happen at the first keyframe at or after each multiple.
    segment_ticks: i64,
    /// Output time (ticks, offset applied) at or after which the next keyframe starts a segment.
    next_cut: i64,
    /// Decode time of the last video packet taken, to keep them increasing after clamping.
    last_video_dts: Option<i64>,
    /// Least target duration (s) beyond the segment length; 0 for none.
    min_target: u64,
}

/// A segment file being written.
struct OpenSegment {
    /// Its own MPEG-TS muxer (PAT/PMT at its start, so it plays alone).
    octx: format::context::Output,
    /// Relative path, e.g. `hls/720p/seg_00003.ts`.
    file: String,
    /// Where it is on disk.
    path: PathBuf,
    /// Start time in ticks (offset applied).
    start: i64,
}

impl VariantWriter {
    /// A writer into `hls_dir/<name>/`, which it creates.
    pub(crate) fn new(
        hls_dir: &Path,
        name: &str,
        size: (u32, u32),
        video: codec::Parameters,
        audio: Option<codec::Parameters>,
        segment_secs: f64,
        min_target: u64,
    ) -> Result<Self, MediaError> {
        let dir = hls_dir.join(name);
        std::fs::create_dir_all(&dir).map_err(internal("creating an HLS folder"))?;
        let segment_ticks = segment_ticks(segment_secs);
        Ok(Self {
            name: name.to_owned(),
            size,
            dir,
            queue: Interleaver::new(audio.is_some()),
            video,
            audio,
            current: None,
            segments: Vec::new(),
            segment_ticks,
            next_cut: TS_OFFSET_TICKS + next_cut(0, segment_ticks),
            last_video_dts: None,
            min_target,
        })
    }

    /// Takes one encoded packet of `track`, stamped in `time_base`.
    pub(crate) fn push(
        &mut self,
        track: Track,
        packet: &Packet,
        time_base: Rational,
    ) -> Result<(), MediaError> {
        let mut packet = packet.clone();
        packet.rescale_ts(time_base, TS_TIME_BASE);
        packet.set_pts(packet.pts().map(|t| t + TS_OFFSET_TICKS));
        let dts = packet.dts().map(|t| t + TS_OFFSET_TICKS);
        if track == Track::Video {
            let dts = dts.map(|dts| non_negative_dts(dts, self.last_video_dts));
            self.last_video_dts = dts.or(self.last_video_dts);
            packet.set_dts(dts);
        } else {
            packet.set_dts(dts);
        }
        self.queue.push(track, packet);
        while let Some((track, packet)) = self.queue.pop(false) {
            self.write(track, packet)?;
        }
        Ok(())
    }

    /// Writes every queued packet, closes the last segment (ending at `end_secs` of
    /// output time) and writes the media playlist, now a finished (VOD) one.
    pub(crate) fn finish(mut self, end_secs: f64) -> Result<HlsRendition, MediaError> {
        while let Some((track, packet)) = self.queue.pop(true) {
            self.write(track, packet)?;
        }
        let end = TS_OFFSET_TICKS + (end_secs * 90_000.0).round() as i64;
        if let Some(segment) = self.current.take() {
            self.close(segment, end)?;
        }
        if self.segments.is_empty() {
            return Err(MediaError::corrupt("no video frame could be decoded"));
        }
        write_replacing(
            &self.dir.join(MEDIA_PLAYLIST),
            &media_playlist(&self.segments, PlaylistType::Vod, self.min_target()),
        )?;
        Ok(self.rendition())
    }

    /// Whether at least one segment is written (and listed by the growing playlist).
    pub(crate) fn has_segment(&self) -> bool {
        !self.segments.is_empty()
    }

    /// The rendition as written so far: its segments, and bit rates from them.
    pub(crate) fn rendition(&self) -> HlsRendition {
        let (bandwidth, average_bandwidth) = bandwidths(&self.segments, self.segment_secs());
        let mut codecs = h264_codecs_tag(&extradata(&self.video));
        if self.audio.is_some() {
            codecs.push_str(",mp4a.40.2");
        }
        HlsRendition {
            playlist: format!("{HLS_DIR}/{}/{MEDIA_PLAYLIST}", self.name),
            name: self.name.clone(),
            width: self.size.0,
            height: self.size.1,
            bandwidth,
            average_bandwidth,
            codecs,
            segments: self.segments.clone(),
            encoded: true,
        }
    }

    fn segment_secs(&self) -> f64 {
        self.segment_ticks as f64 / 90_000.0
    }

    /// The least target duration of the rendition's playlist: the segment
    /// length, or the longest segment known in advance when that is longer.
    fn min_target(&self) -> u64 {
        (self.segment_secs().ceil() as u64).max(self.min_target)
    }

    /// Writes a packet in decode order, first starting a new segment if it is a segment keyframe.
    fn write(&mut self, track: Track, mut packet: Packet) -> Result<(), MediaError> {
        let pts = packet.pts().or(packet.dts()).unwrap_or(TS_OFFSET_TICKS);
        let cut_here = track == Track::Video && packet.is_key() && pts >= self.next_cut;
        if cut_here {
            if let Some(segment) = self.current.take() {
                self.close(segment, pts)?;
            }
            self.next_cut = TS_OFFSET_TICKS + next_cut(pts - TS_OFFSET_TICKS, self.segment_ticks);
        }
        if self.current.is_none() {
            let start = if self.segments.is_empty() {
                TS_OFFSET_TICKS
            } else {
                pts
            };
            self.current = Some(self.open(start)?);
        }
        let Some(segment) = self.current.as_mut() else {
            return Ok(());
        };
        packet.set_stream(match track {
            Track::Video => 0,
            Track::Audio => 1,
        });
        packet
            .write(&mut segment.octx)
            .map_err(internal("writing an HLS segment"))?;
        Ok(())
    }

    fn open(&self, start: i64) -> Result<OpenSegment, MediaError> {
        let file_name = format!("seg_{:05}.ts", self.segments.len());
        let path = self.dir.join(&file_name);
        let mut octx = format::output_as(&file_url(&path)?, "mpegts")
            .map_err(internal("creating an HLS segment"))?;
        for parameters in std::iter::once(&self.video).chain(self.audio.as_ref()) {
            let mut stream = octx
                .add_stream(None::<ffmpeg_next::Codec>)
                .map_err(internal("adding an HLS stream"))?;
            stream.set_parameters(parameters.clone());
            stream.set_time_base(TS_TIME_BASE);
        }
        octx.write_header()
            .map_err(internal("writing an HLS segment header"))?;
        // Every packet is already in 90 kHz ticks; the muxer must not have chosen otherwise.
        for stream in octx.streams() {
            if stream.time_base() != TS_TIME_BASE {
                return Err(MediaError::internal(
                    "writing an HLS segment header",
                    "MPEG-TS stream time base is not 1/90000",
                ));
            }
        }
        Ok(OpenSegment {
            octx,
            file: format!("{HLS_DIR}/{}/{file_name}", self.name),
            path,
            start,
        })
    }

    fn close(&mut self, mut segment: OpenSegment, end: i64) -> Result<(), MediaError> {
        segment
            .octx
            .write_trailer()
            .map_err(internal("finishing an HLS segment"))?;
        drop(segment.octx);
        let bytes = std::fs::metadata(&segment.path)
            .map_err(internal("reading an HLS segment"))?
            .len();
        self.segments.push(HlsSegment {
            file: segment.file,
            duration: (end - segment.start).max(0) as f64 / 90_000.0,
            bytes,
        });
        // While the transcode runs the playlist grows by each segment, so
        // that players can start before the end (an EVENT playlist).
        write_replacing(
            &self.dir.join(MEDIA_PLAYLIST),
            &media_playlist(&self.segments, PlaylistType::Event, self.min_target()),
        )
    }
}

/// Orders the packets of a variant's two tracks by decode time, as
/// `av_interleaved_write_frame` would, so a segment holds the audio of its span.
struct Interleaver {
    /// Video packets not yet written, in decode order.
    video: VecDeque<Packet>,
    /// Audio packets not yet written, in decode order.
    audio: VecDeque<Packet>,
    /// Without audio, video passes straight through.
    has_audio: bool,
}

impl Interleaver {
    fn new(has_audio: bool) -> Self {
        Self {
            video: VecDeque::new(),
            audio: VecDeque::new(),
            has_audio,
        }
    }

    fn push(&mut self, track: Track, packet: Packet) {
        match track {
            Track::Video => self.video.push_back(packet),
            Track::Audio => self.audio.push_back(packet),
        }
    }

    /// The next packet to write, if it is known to be next (or `flushing`).
    fn pop(&mut self, flushing: bool) -> Option<(Track, Packet)> {
        if !self.has_audio {
            return self.video.pop_front().map(|p| (Track::Video, p));
        }
        let track = match (self.video.front(), self.audio.front()) {
            (Some(video), Some(audio)) => {
                // On a tie video goes first, so audio at a cut lands in the new segment.
                if decode_time(video) <= decode_time(audio) {
                    Track::Video
                } else {
                    Track::Audio
                }
            }
            (Some(_), None) if flushing || span(&self.video) > MAX_INTERLEAVE_TICKS => Track::Video,
            (None, Some(_)) if flushing || span(&self.audio) > MAX_INTERLEAVE_TICKS => Track::Audio,
            _ => return None,
        };
        match track {
            Track::Video => self.video.pop_front().map(|p| (Track::Video, p)),
            Track::Audio => self.audio.pop_front().map(|p| (Track::Audio, p)),
        }
    }
}

/// A video decode time that stays at or above zero and increasing: a very slow
/// source (a slideshow) can delay x264's first decode times by more than the
/// offset, and MPEG-TS timestamps cannot be negative.
fn non_negative_dts(dts: i64, last: Option<i64>) -> i64 {
    match last {
        Some(last) => dts.max(last + 1),
        None => dts.max(0),
    }
}

fn decode_time(packet: &Packet) -> i64 {
    packet.dts().or(packet.pts()).unwrap_or(0)
}

/// Decode-time span of the queued packets of one track.
fn span(queue: &VecDeque<Packet>) -> i64 {
    match (queue.front(), queue.back()) {
        (Some(first), Some(last)) => decode_time(last) - decode_time(first),
        _ => 0,
    }
}

/// What a media playlist is (RFC 8216, 4.3.3.5).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum PlaylistType {
    /// Still being written: segments are only ever added, and no end is marked.
    Event,
    /// Finished: every segment listed, and `#EXT-X-ENDLIST`.
    Vod,
}

/// A rendition's media playlist (relative URIs), with a target duration of at
/// least `min_target` seconds (the segment length). A growing playlist's
/// target may not change (RFC 8216, 6.2.1), nor between it and the finished
/// one: it is the segment length from the first segment on, and segments
/// count rounded (the rule's own measure, 4.3.3.1), so that one a frame
/// longer than the grid (4.004 s at 29.97 fps) does not raise it.
fn media_playlist(segments: &[HlsSegment], kind: PlaylistType, min_target: u64) -> String {
    let target = segments
        .iter()
        .map(|s| s.duration.round() as u64)
        .max()
        .unwrap_or(1)
        .max(min_target)
        .max(1);
    let kind_name = match kind {
        PlaylistType::Event => "EVENT",
        PlaylistType::Vod => "VOD",
    };
    let mut text = format!(
        "#EXTM3U\n#EXT-X-VERSION:3\n#EXT-X-TARGETDURATION:{target}\n#EXT-X-MEDIA-SEQUENCE:0\n#EXT-X-PLAYLIST-TYPE:{kind_name}\n#EXT-X-INDEPENDENT-SEGMENTS\n"
    );
    if kind == PlaylistType::Event {
        // From the start, not near the end as a live stream (hls.js would).
        text.push_str("#EXT-X-START:TIME-OFFSET=0\n");
    }
    for segment in segments {
        let name = segment.file.rsplit('/').next().unwrap_or(&segment.file);
        let _ = write!(text, "#EXTINF:{:.6},\n{name}\n", segment.duration);
    }
    if kind == PlaylistType::Vod {
        text.push_str("#EXT-X-ENDLIST\n");
    }
    text
}

/// Writes `text` to `path` by a rename over it, so that a player reading the
/// playlist while it is replaced gets the old one or the new one, whole.
pub(crate) fn write_replacing(path: &Path, text: &str) -> Result<(), MediaError> {
    let name = path.file_name().unwrap_or_default().to_string_lossy();
    let temporary = path.with_file_name(format!(".{name}.tmp"));
    std::fs::write(&temporary, text).map_err(internal("writing an HLS playlist"))?;
    std::fs::rename(&temporary, path).map_err(internal("writing an HLS playlist"))
}

/// The master playlist over `renditions` (URIs relative to the master's folder).
pub(crate) fn master_playlist(renditions: &[HlsRendition], frame_rate: Option<f64>) -> String {
    let mut text = String::from("#EXTM3U\n#EXT-X-VERSION:3\n#EXT-X-INDEPENDENT-SEGMENTS\n");
    for rendition in renditions {
        let _ = write!(
            text,
            "#EXT-X-STREAM-INF:BANDWIDTH={},AVERAGE-BANDWIDTH={},RESOLUTION={}x{},",
            rendition.bandwidth, rendition.average_bandwidth, rendition.width, rendition.height
        );
        if let Some(fps) = frame_rate.filter(|f| f.is_finite() && *f > 0.0) {
            let _ = write!(text, "FRAME-RATE={fps:.3},");
        }
        let uri = rendition
            .playlist
            .strip_prefix(&format!("{HLS_DIR}/"))
            .unwrap_or(&rendition.playlist);
        let _ = write!(text, "CODECS=\"{}\"\n{uri}\n", rendition.codecs);
    }
    text
}

/// (peak, average) bit rate of a rendition's segments, in bits per second.
fn bandwidths(segments: &[HlsSegment], target_secs: f64) -> (u64, u64) {
    let rate = |s: &HlsSegment| s.bytes as f64 * 8.0 / s.duration.max(0.001);
    let long_enough = |s: &&HlsSegment| s.duration >= target_secs * PEAK_MIN_FRACTION;
    let peak = if segments.iter().any(|s| long_enough(&s)) {
        segments
            .iter()
            .filter(long_enough)
            .map(rate)
            .fold(0.0, f64::max)
    } else {
        segments.iter().map(rate).fold(0.0, f64::max)
    };
    let bytes: u64 = segments.iter().map(|s| s.bytes).sum();
    let seconds: f64 = segments.iter().map(|s| s.duration).sum();
    let average = bytes as f64 * 8.0 / seconds.max(0.001);
    (peak.ceil() as u64, average.ceil() as u64)
}

/// The extradata (SPS/PPS for H.264) of a stream's parameters.
pub(crate) fn extradata(parameters: &codec::Parameters) -> Vec<u8> {
    // SAFETY: `parameters` owns a valid AVCodecParameters; `extradata` is either
    // null or points to `extradata_size` bytes that live as long as it does.
    unsafe {
        let raw = parameters.as_ptr();
        let (data, size) = ((*raw).extradata, (*raw).extradata_size);
        match usize::try_from(size) {
            Ok(size) if !data.is_null() && size > 0 => {
                std::slice::from_raw_parts(data, size).to_vec()
            }
            _ => Vec::new(),
        }
    }
}

/// `avc1.PPCCLL` from H.264 extradata (Annex B or avcC): profile, constraint flags, level.
/// Falls back to High 4.0, which libx264's default profile and our sizes stay within.
pub(crate) fn h264_codecs_tag(extradata: &[u8]) -> String {
    let sps = if extradata.first() == Some(&1) && extradata.len() >= 4 {
        // avcC: version, profile, compatibility, level.
        Some([extradata[1], extradata[2], extradata[3]])
    } else {
        annex_b_sps(extradata)
    };
    let [profile, flags, level] = sps.unwrap_or([0x64, 0x00, 0x28]);
    format!("avc1.{profile:02x}{flags:02x}{level:02x}")
}

/// The three bytes after the NAL header of the first SPS in an Annex B byte stream.
fn annex_b_sps(bytes: &[u8]) -> Option<[u8; 3]> {
    let mut at = 0;
    while at + 3 < bytes.len() {
        if bytes[at..at + 3] == [0, 0, 1] {
            let nal = at + 3;
            if bytes[nal] & 0x1f == 7 && nal + 3 < bytes.len() {
                return Some([bytes[nal + 1], bytes[nal + 2], bytes[nal + 3]]);
            }
            at = nal;
        } else {
            at += 1;
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn segment(index: usize, duration: f64, bytes: u64) -> HlsSegment {
        HlsSegment {
            file: format!("hls/720p/seg_{index:05}.ts"),
            duration,
            bytes,
        }
    }

    #[test]
    fn the_first_segment_is_short_then_the_grid_is_the_segment_length() {
        let four = segment_ticks(4.0);
        assert_eq!(next_cut(0, four), 90_000);
        assert_eq!(next_cut(89_999, four), 90_000);
        // The keyframe forced at 1 s (or a frame later) ends the first one.
        assert_eq!(next_cut(90_000, four), four);
        assert_eq!(next_cut(93_600, four), four);
        assert_eq!(next_cut(four, four), 2 * four);
        let one = segment_ticks(1.0);
        assert_eq!(next_cut(0, one), one);
        assert_eq!(next_cut(one, one), 2 * one);
        // A grid point less than half a segment after the first cut is skipped.
        let odd = segment_ticks(1.5);
        assert_eq!(next_cut(0, odd), 90_000);
        assert_eq!(next_cut(90_000, odd), 2 * odd);
        assert_eq!(next_cut(2 * odd, odd), 3 * odd);
    }

    #[test]
    fn codecs_tag_from_annex_b_and_avcc() {
        let annex_b = [
            0, 0, 0, 1, 0x67, 0x64, 0x00, 0x1f, 0xac, 0, 0, 0, 1, 0x68, 0xeb,
        ];
        assert_eq!(h264_codecs_tag(&annex_b), "avc1.64001f");
        let avcc = [1, 0x4d, 0x40, 0x1e, 0xff, 0xe1];
        assert_eq!(h264_codecs_tag(&avcc), "avc1.4d401e");
        assert_eq!(h264_codecs_tag(&[]), "avc1.640028");
    }

    #[test]
    fn decode_times_never_go_negative_or_backwards() {
        let mut last = None;
        let clamped: Vec<i64> = [-180_000, -90_000, 0, 45_000, 90_000]
            .into_iter()
            .map(|dts| {
                let dts = non_negative_dts(dts, last);
                last = Some(dts);
                dts
            })
            .collect();
        assert_eq!(clamped, [0, 1, 2, 45_000, 90_000]);
        assert_eq!(non_negative_dts(126_000, None), 126_000);
    }

    #[test]
    fn media_playlist_lists_relative_segments_and_ends() {
        let segments = [segment(0, 4.0, 1000), segment(1, 1.52, 400)];
        let growing = media_playlist(&segments[..1], PlaylistType::Event, 6);
        assert!(growing.contains("#EXT-X-TARGETDURATION:6\n"), "{growing}");
        assert!(growing.contains("#EXT-X-PLAYLIST-TYPE:EVENT\n"));
        assert!(growing.contains("#EXT-X-START:TIME-OFFSET=0\n"));
        assert!(growing.ends_with("#EXTINF:4.000000,\nseg_00000.ts\n"));
        let text = media_playlist(&segments, PlaylistType::Vod, 1);
        assert!(text.starts_with("#EXTM3U\n"));
        assert!(text.contains("#EXT-X-TARGETDURATION:4\n"));
        assert!(text.contains("#EXT-X-PLAYLIST-TYPE:VOD\n"));
        assert!(text.contains("#EXTINF:4.000000,\nseg_00000.ts\n"));
        assert!(text.contains("#EXTINF:1.520000,\nseg_00001.ts\n"));
        assert!(text.ends_with("#EXT-X-ENDLIST\n"));
    }

    #[test]
    fn bandwidth_is_the_peak_of_full_segments() {
        let segments = [
            segment(0, 4.0, 100_000),
            segment(1, 4.0, 200_000),
            segment(2, 0.5, 90_000),
        ];
        let (peak, average) = bandwidths(&segments, 4.0);
        assert_eq!(peak, 400_000);
        assert_eq!(average, (390_000.0 * 8.0 / 8.5_f64).ceil() as u64);
        let (peak, _) = bandwidths(&[segment(0, 1.0, 1000)], 4.0);
        assert_eq!(peak, 8000);
    }

    #[test]
    fn master_playlist_has_every_attribute() {
        let rendition = HlsRendition {
            name: "720p".into(),
            width: 1280,
            height: 720,
            bandwidth: 2_000_000,
            average_bandwidth: 1_500_000,
            codecs: "avc1.64001f,mp4a.40.2".into(),
            playlist: "hls/720p/index.m3u8".into(),
            segments: vec![segment(0, 4.0, 1)],
            encoded: true,
        };
        let text = master_playlist(&[rendition], Some(25.0));
        assert_eq!(
            text,
            "#EXTM3U\n#EXT-X-VERSION:3\n#EXT-X-INDEPENDENT-SEGMENTS\n\
             #EXT-X-STREAM-INF:BANDWIDTH=2000000,AVERAGE-BANDWIDTH=1500000,RESOLUTION=1280x720,\
             FRAME-RATE=25.000,CODECS=\"avc1.64001f,mp4a.40.2\"\n720p/index.m3u8\n"
        );
    }
}
