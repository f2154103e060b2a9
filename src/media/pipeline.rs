//! `transcode`: one upload in; `video.mp4`, `poster.jpg`, the storyboard
//! (`storyboard.jpg`, `storyboard.vtt`) and the HLS ladder (`hls/master.m3u8`,
//! one folder of segments per rendition) out.
//!
//! Shaped like ffmpeg-next's `transcode-x264` example: a `Transcoder` whose
//! methods are the stages, driven by explicit `Packet::read` calls so read
//! errors are seen, with explicit flushing at the end. One decode feeds every
//! rendition; the MP4 reuses the top rendition's packets.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use ffmpeg_next::util::error::EAGAIN;
use ffmpeg_next::{format, Error, Packet};

use super::audio::{AudioCopy, AudioStage, AudioTrack};
use super::error::MediaError;
use super::hls::{master_playlist, write_replacing, HlsLadder, HLS_DIR, MASTER_PLAYLIST};
use super::input::open_input;
use super::ladder::RenditionLadder;
use super::mux::{LadderSetup, Muxers, StreamSetup};
use super::passthrough;
use super::poster::write_poster;
use super::probe::{Source, SourceInfo};
use super::profile::{fit_within, MediaLimits, OutputProfile};
use super::storyboard::{Storyboard, StoryboardPicker, STORYBOARD_IMAGE, STORYBOARD_VTT};
use super::video::VideoStage;

/// File name of the transcoded video inside `out_dir`.
pub const MP4_FILE_NAME: &str = "video.mp4";
/// File name of the poster inside `out_dir`.
pub const POSTER_FILE_NAME: &str = "poster.jpg";
/// Demuxer errors tolerated in a row before the rest of the file is given up.
const MAX_CONSECUTIVE_READ_ERRORS: u32 = 100;
/// Least wall time between two progress reports.
const PROGRESS_INTERVAL: Duration = Duration::from_secs(1);

/// What `transcode` wrote.
#[derive(Debug, Clone)]
pub struct TranscodeOutputs {
    /// The faststart MP4 (H.264 + AAC when the source has audio).
    pub mp4: PathBuf,
    /// The JPEG poster.
    pub poster: PathBuf,
    /// The storyboard for seek-bar previews: its sprite and its WebVTT.
    pub storyboard: Storyboard,
    /// The probed source.
    pub source: SourceInfo,
    /// Width of the output video.
    pub width: u32,
    /// Height of the output video.
    pub height: u32,
    /// Duration of the output in seconds.
    pub duration: f64,
    /// The HLS ladder under `out_dir/hls`, unless `OutputProfile::hls` is off.
    pub hls: Option<HlsLadder>,
    /// Whether the MP4's video (and the top rendition's) is the source's, copied.
    pub video_copied: bool,
    /// Whether the audio is the source's, copied.
    pub audio_copied: bool,
}

impl TranscodeOutputs {
    /// Every output file, relative to the output folder, `/`-separated: the MP4, the
    /// poster, the storyboard's sprite and WebVTT, then the ladder's playlists and segments.
    pub fn files(&self) -> Vec<String> {
        let mut files = [
            MP4_FILE_NAME,
            POSTER_FILE_NAME,
            STORYBOARD_IMAGE,
            STORYBOARD_VTT,
        ]
        .map(str::to_owned)
        .to_vec();
        if let Some(hls) = &self.hls {
            files.extend(hls.files());
        }
        files
    }
}

/// What a running transcode tells its caller, and asks it.
pub trait Progress {
    /// `fraction` (0..=1) of the source is done.
    fn report(&mut self, fraction: f64);
    /// True once the caller wants the job stopped; asked before each packet.
    fn cancelled(&self) -> bool {
        false
    }
    /// The ladder can be played while the rest is encoded: `hls/master.m3u8`
    /// lists every rendition, each with its first segment, and their media
    /// playlists grow segment by segment (EVENT playlists) until the end, when
    /// they become VOD ones. Called at most once, only with a ladder.
    fn previewable(&mut self) {}
}

/// A closure is a progress callback that never cancels.
impl<F: FnMut(f64)> Progress for F {
    fn report(&mut self, fraction: f64) {
        self(fraction)
    }
}

/// Transcodes `input` into `out_dir`: `video.mp4`, `poster.jpg`, `storyboard.jpg`,
/// `storyboard.vtt` and (with `profile.hls`) the ladder under `hls/`, which is
/// replaced if it exists.
///
/// Runs on the calling thread (which must own every libav object it creates:
/// call it from a dedicated OS thread). `progress` gets fractions in 0..=1 at
/// most about once a second, then 1.0 on success; once it says the job is
/// cancelled, the transcode stops before the next packet with
/// [`MediaErrorCode::Cancelled`]. On error, partial outputs are removed.
pub fn transcode(
    input: &Path,
    out_dir: &Path,
    profile: &OutputProfile,
    limits: &MediaLimits,
    progress: &mut dyn Progress,
) -> Result<TranscodeOutputs, MediaError> {
    super::init();
    let paths = OutputPaths {
        mp4: out_dir.join(MP4_FILE_NAME),
        poster: out_dir.join(POSTER_FILE_NAME),
        storyboard_image: out_dir.join(STORYBOARD_IMAGE),
        storyboard_vtt: out_dir.join(STORYBOARD_VTT),
        hls: out_dir.join(HLS_DIR),
    };
    let result = paths
        .clear_ladder()
        .and_then(|()| run(input, &paths, profile, limits, progress));
    if result.is_err() {
        // Best effort: a half-written file must not look like a result.
        for file in [
            &paths.mp4,
            &paths.poster,
            &paths.storyboard_image,
            &paths.storyboard_vtt,
        ] {
            let _ = std::fs::remove_file(file);
        }
        let _ = paths.clear_ladder();
    }
    let (source, finished, storyboard) = result?;
    progress.report(1.0);
    Ok(TranscodeOutputs {
        mp4: paths.mp4,
        poster: paths.poster,
        storyboard,
        source,
        width: finished.width,
        height: finished.height,
        duration: finished.duration,
        hls: finished.hls,
        video_copied: finished.video_copied,
        audio_copied: finished.audio_copied,
    })
}

/// Where the outputs of one job go.
struct OutputPaths {
    mp4: PathBuf,
    poster: PathBuf,
    storyboard_image: PathBuf,
    storyboard_vtt: PathBuf,
    /// The ladder's folder; ours alone.
    hls: PathBuf,
}

impl OutputPaths {
    fn clear_ladder(&self) -> Result<(), MediaError> {
        match std::fs::remove_dir_all(&self.hls) {
            Err(err) if err.kind() != std::io::ErrorKind::NotFound => {
                Err(MediaError::internal("clearing the HLS folder", err))
            }
            _ => Ok(()),
        }
    }
}

fn run(
    input: &Path,
    paths: &OutputPaths,
    profile: &OutputProfile,
    limits: &MediaLimits,
    progress: &mut dyn Progress,
) -> Result<(SourceInfo, Finished, Storyboard), MediaError> {
    let mut ictx = open_input(input, limits)?;
    let source = Source::inspect(&ictx, input, limits)?;
    let mut transcoder = Transcoder::new(&ictx, input, &source, paths, profile, limits)?;
    let mut reporter =
        ProgressReporter::new(source.info.duration, source.info.size_bytes, progress);
    transcoder.transcode_packets(&mut ictx, &mut reporter)?;
    let finished = transcoder.finish()?;
    write_poster(&finished.poster_frame, &paths.poster)?;
    let storyboard = finished.storyboard.write(
        finished.duration,
        &paths.storyboard_image,
        &paths.storyboard_vtt,
    )?;
    if let Some(hls) = &finished.hls {
        let master = paths.hls.join(MASTER_PLAYLIST);
        write_replacing(
            &master,
            &master_playlist(&hls.renditions, source.info.frame_rate),
        )?;
    }
    Ok((source.info, finished, storyboard))
}

/// Result of a completed transcode.
struct Finished {
    width: u32,
    height: u32,
    duration: f64,
    /// Frame the poster is made from.
    poster_frame: ffmpeg_next::frame::Video,
    /// Tiles the storyboard is made from.
    storyboard: StoryboardPicker,
    /// The ladder, when one was made.
    hls: Option<HlsLadder>,
    /// Whether the video was copied.
    video_copied: bool,
    /// Whether the audio was copied.
    audio_copied: bool,
}

struct Transcoder {
    /// The MP4 and the HLS variants.
    muxers: Muxers,
    video: VideoStage,
    /// Present when the source has a decodable (or copied) audio stream.
    audio: Option<AudioTrack>,
    /// Whether a ladder is being written.
    hls: bool,
}

impl Transcoder {
    fn new(
        ictx: &format::context::Input,
        input: &Path,
        source: &Source,
        paths: &OutputPaths,
        profile: &OutputProfile,
        limits: &MediaLimits,
    ) -> Result<Self, MediaError> {
        let video_stream = ictx
            .stream(source.video_index)
            .ok_or_else(|| MediaError::internal("transcoding", "video stream vanished"))?;
        let top = fit_within(source.info.width, source.info.height, profile.max_long_side);
        let budget = profile.thread_budget();
        let mut ladder = RenditionLadder::plan(top, profile.hls, budget);
        let copy = passthrough::plan(input, ictx, source, profile, limits, top)?;
        let mut decoder_threads = None;
        if copy.video.is_some() {
            let (copying, threads) = ladder.copying_top(budget);
            (ladder, decoder_threads) = (copying, Some(threads));
        }
        let video = VideoStage::new(
            &video_stream,
            source,
            &ladder,
            copy.video.as_ref(),
            decoder_threads,
            profile,
            limits,
        )?;
        let audio = match source.audio_index.and_then(|index| ictx.stream(index)) {
            Some(stream) if copy.audio => Some(AudioTrack::Copied(AudioCopy::new(
                &stream,
                source.origin_secs,
            ))),
            Some(stream) => match AudioStage::new(&stream, source.origin_secs, profile, limits) {
                Ok(stage) => Some(AudioTrack::Encoded(stage)),
                Err(err) if err.code == super::MediaErrorCode::UnsupportedMedia => {
                    // An undecodable soundtrack should not cost the whole video.
                    tracing::warn!(%err, "dropping the audio stream");
                    None
                }
                Err(err) => return Err(err),
            },
            None => None,
        };
        let (video_parameters, video_time_base, frame_rate) = video.stream_setup();
        let setup = StreamSetup {
            video: video_parameters,
            video_time_base,
            frame_rate,
            audio: audio.as_ref().map(AudioTrack::stream_setup),
        };
        let ladder_setup = profile.hls.then(|| LadderSetup {
            dir: &paths.hls,
            renditions: ladder
                .rungs
                .iter()
                .map(|r| (r.name.clone(), (r.width, r.height)))
                .collect(),
            segment_secs: profile.hls_segment_secs,
            frame_rate: source.info.frame_rate,
            // Each rung's cap, a copied top's own peak if that is higher, plus the audio.
            peaks: ladder
                .rungs
                .iter()
                .enumerate()
                .map(|(index, r)| {
                    let audio = audio.as_ref().map_or(0, |a| a.bit_rate(profile));
                    let cap = u64::from(r.max_kbps) * 1000;
                    let video = match &copy.video {
                        Some(copied) if index == 0 => cap.max(copied.peak_bit_rate),
                        _ => cap,
                    };
                    video + audio
                })
                .collect(),
            min_target: copy.video.as_ref().map_or(0, |c| c.longest_segment),
        });
        let mut muxers = Muxers::new(&paths.mp4, &setup, ladder_setup)?;
        muxers.write_header()?;
        Ok(Self {
            muxers,
            video,
            audio,
            hls: profile.hls,
        })
    }

    /// Reads every packet of the input and feeds it to its stage.
    fn transcode_packets(
        &mut self,
        ictx: &mut format::context::Input,
        reporter: &mut ProgressReporter<'_>,
    ) -> Result<(), MediaError> {
        let mut consecutive_errors = 0;
        loop {
            if reporter.callback.cancelled() {
                return Err(MediaError::cancelled());
            }
            let mut packet = Packet::empty();
            match packet.read(ictx) {
                Ok(()) => {
                    consecutive_errors = 0;
                    self.send_packet(&packet)?;
                    if self.muxers.take_preview() {
                        reporter.callback.previewable();
                    }
                    reporter.report(self.video.end_secs(), packet.position());
                }
                Err(Error::Eof) => return Ok(()),
                Err(err) => {
                    consecutive_errors += 1;
                    tracing::debug!(%err, "demuxer error");
                    // I/O errors stick to the reader (each retry fails the same way); a corrupt
                    // packet does not, and the demuxer may resync past it.
                    let retry = matches!(err, Error::InvalidData | Error::Other { errno: EAGAIN });
                    if !retry || consecutive_errors >= MAX_CONSECUTIVE_READ_ERRORS {
                        tracing::warn!(%err, "input unreadable from here on; keeping what decoded");
                        return Ok(());
                    }
                }
            }
            if self.video.is_hopeless() {
                tracing::warn!("video stream stopped decoding; keeping what decoded");
                return Ok(());
            }
        }
    }

    fn send_packet(&mut self, packet: &Packet) -> Result<(), MediaError> {
        let index = packet.stream();
        if index == self.video.input_index {
            self.video.transcode_packet(packet, &mut self.muxers)
        } else if let Some(audio) = self.audio.as_mut().filter(|a| a.input_index() == index) {
            audio.transcode_packet(packet, &mut self.muxers)
        } else {
            Ok(())
        }
    }

    /// Flushes decoders and encoders, then finishes the MP4 (the faststart pass) and the ladder.
    fn finish(mut self) -> Result<Finished, MediaError> {
        self.video.send_eof_to_decoder();
        self.video
            .receive_and_process_decoded_frames(&mut self.muxers)?;
        if self.video.frames_encoded() == 0 {
            return Err(MediaError::corrupt("no video frame could be decoded"));
        }
        self.video.flush_encoders(&mut self.muxers)?;
        let mut duration = self.video.end_secs();
        if let Some(audio) = self.audio.as_mut() {
            audio.flush(&mut self.muxers)?;
            duration = duration.max(audio.end_secs());
        }
        let mut renditions = self.muxers.finish(duration)?;
        let video_copied = self.video.copied();
        if let Some(top) = renditions.first_mut().filter(|_| video_copied) {
            top.encoded = false;
        }
        let hls = self.hls.then(|| HlsLadder {
            master: format!("{HLS_DIR}/{MASTER_PLAYLIST}"),
            renditions,
        });

        let audio_errors = self.audio.as_ref().map_or(0, AudioTrack::decode_errors);
        if self.video.decode_errors() + audio_errors > 0 {
            tracing::warn!(
                video_errors = self.video.decode_errors(),
                audio_errors,
                "salvaged a partly corrupt input"
            );
        }
        let (width, height) = self.video.size();
        let poster_frame = self
            .video
            .poster
            .into_frame()
            .ok_or_else(|| MediaError::corrupt("no video frame could be decoded"))?;
        Ok(Finished {
            width,
            height,
            duration,
            poster_frame,
            storyboard: self.video.storyboard,
            hls,
            video_copied,
            audio_copied: matches!(self.audio, Some(AudioTrack::Copied(_))),
        })
    }
}

/// Turns decoding progress into throttled fractions for the caller.
struct ProgressReporter<'a> {
    /// The caller's callback.
    callback: &'a mut dyn Progress,
    /// Source duration; progress is by time when known...
    duration: Option<f64>,
    /// ...else by bytes read.
    size_bytes: u64,
    /// When the callback last ran.
    last: Instant,
}

impl<'a> ProgressReporter<'a> {
    fn new(duration: Option<f64>, size_bytes: u64, callback: &'a mut dyn Progress) -> Self {
        Self {
            callback,
            duration: duration.filter(|d| *d > 0.0),
            size_bytes,
            last: Instant::now(),
        }
    }

    /// Reports `decoded_secs` (or `byte_position` when the duration is unknown) if a second has passed.
    fn report(&mut self, decoded_secs: f64, byte_position: isize) {
        if self.last.elapsed() < PROGRESS_INTERVAL {
            return;
        }
        self.last = Instant::now();
        let fraction = match self.duration {
            Some(duration) => decoded_secs / duration,
            None if self.size_bytes > 0 && byte_position >= 0 => {
                byte_position as f64 / self.size_bytes as f64
            }
            None => return,
        };
        // 1.0 is reserved for "done", after the trailer and poster are written.
        self.callback.report(fraction.clamp(0.0, 0.99));
    }
}
