//! `transcode`: one upload in, `video.mp4` and `poster.jpg` out.
//!
//! Shaped like ffmpeg-next's `transcode-x264` example: a `Transcoder` whose
//! methods are the stages, driven by explicit `Packet::read` calls so read
//! errors are seen, with explicit flushing at the end.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use ffmpeg_next::util::error::EAGAIN;
use ffmpeg_next::{format, Dictionary, Error, Packet};

use super::audio::AudioStage;
use super::error::{internal, MediaError};
use super::input::{file_url, open_input};
use super::poster::write_jpeg;
use super::probe::{Source, SourceInfo};
use super::profile::{MediaLimits, OutputProfile};
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
    /// The probed source.
    pub source: SourceInfo,
    /// Width of the output video.
    pub width: u32,
    /// Height of the output video.
    pub height: u32,
    /// Duration of the output in seconds.
    pub duration: f64,
}

/// Transcodes `input` into `out_dir/video.mp4` and `out_dir/poster.jpg`.
///
/// Runs on the calling thread (which must own every libav object it creates:
/// call it from a dedicated OS thread). `progress` gets fractions in 0..=1 at
/// most about once a second, then 1.0 on success. On error, partial outputs are removed.
pub fn transcode(
    input: &Path,
    out_dir: &Path,
    profile: &OutputProfile,
    limits: &MediaLimits,
    progress: &mut dyn FnMut(f64),
) -> Result<TranscodeOutputs, MediaError> {
    super::init();
    let mp4 = out_dir.join(MP4_FILE_NAME);
    let poster = out_dir.join(POSTER_FILE_NAME);
    let result = run(input, &mp4, &poster, profile, limits, progress);
    if result.is_err() {
        // Best effort: a half-written file must not look like a result.
        let _ = std::fs::remove_file(&mp4);
        let _ = std::fs::remove_file(&poster);
    }
    let (source, finished) = result?;
    progress(1.0);
    Ok(TranscodeOutputs {
        mp4,
        poster,
        source,
        width: finished.width,
        height: finished.height,
        duration: finished.duration,
    })
}

fn run(
    input: &Path,
    mp4: &Path,
    poster: &Path,
    profile: &OutputProfile,
    limits: &MediaLimits,
    progress: &mut dyn FnMut(f64),
) -> Result<(SourceInfo, Finished), MediaError> {
    let mut ictx = open_input(input)?;
    let source = Source::inspect(&ictx, input, limits)?;
    let mut transcoder = Transcoder::new(&ictx, &source, mp4, profile, limits)?;
    transcoder.write_header()?;
    let mut reporter =
        ProgressReporter::new(source.info.duration, source.info.size_bytes, progress);
    transcoder.transcode_packets(&mut ictx, &mut reporter)?;
    let finished = transcoder.finish()?;
    write_jpeg(&finished.poster_frame, poster)?;
    Ok((source.info, finished))
}

/// Result of a completed MP4.
struct Finished {
    width: u32,
    height: u32,
    duration: f64,
    /// Frame the poster is made from.
    poster_frame: ffmpeg_next::frame::Video,
}

struct Transcoder {
    /// The MP4 being written.
    octx: format::context::Output,
    video: VideoStage,
    /// Present when the source has a decodable audio stream.
    audio: Option<AudioStage>,
}

impl Transcoder {
    fn new(
        ictx: &format::context::Input,
        source: &Source,
        mp4: &Path,
        profile: &OutputProfile,
        limits: &MediaLimits,
    ) -> Result<Self, MediaError> {
        let mut octx =
            format::output_as(&file_url(mp4)?, "mp4").map_err(internal("creating video.mp4"))?;
        let video_stream = ictx
            .stream(source.video_index)
            .ok_or_else(|| MediaError::internal("transcoding", "video stream vanished"))?;
        let video = VideoStage::new(&video_stream, source, &mut octx, profile, limits)?;
        let audio = match source.audio_index.and_then(|index| ictx.stream(index)) {
            Some(stream) => {
                match AudioStage::new(&stream, source.origin_secs, &mut octx, profile, limits) {
                    Ok(stage) => Some(stage),
                    Err(err) if err.code == super::MediaErrorCode::UnsupportedMedia => {
                        // An undecodable soundtrack should not cost the whole video.
                        tracing::warn!(%err, "dropping the audio stream");
                        None
                    }
                    Err(err) => return Err(err),
                }
            }
            None => None,
        };
        Ok(Self { octx, video, audio })
    }

    /// Writes the MP4 header (index at the front) and reads back the time bases the muxer chose.
    fn write_header(&mut self) -> Result<(), MediaError> {
        let mut options = Dictionary::new();
        options.set("movflags", "+faststart");
        self.octx
            .write_header_with(options)
            .map_err(internal("writing the MP4 header"))?;
        let time_base = |octx: &format::context::Output, index: usize| {
            octx.stream(index)
                .map(|s| s.time_base())
                .ok_or_else(|| MediaError::internal("writing the MP4 header", "stream vanished"))
        };
        self.video.set_output_time_base(time_base(&self.octx, 0)?);
        if let Some(audio) = self.audio.as_mut() {
            audio.set_output_time_base(time_base(&self.octx, 1)?);
        }
        Ok(())
    }

    /// Reads every packet of the input and feeds it to its stage.
    fn transcode_packets(
        &mut self,
        ictx: &mut format::context::Input,
        reporter: &mut ProgressReporter<'_>,
    ) -> Result<(), MediaError> {
        let mut consecutive_errors = 0;
        loop {
            let mut packet = Packet::empty();
            match packet.read(ictx) {
                Ok(()) => {
                    consecutive_errors = 0;
                    self.send_packet(&packet)?;
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
            self.video.send_packet_to_decoder(packet, &mut self.octx)?;
            self.video
                .receive_and_process_decoded_frames(&mut self.octx)
        } else if let Some(audio) = self.audio.as_mut().filter(|a| a.input_index == index) {
            audio.send_packet_to_decoder(packet, &mut self.octx)?;
            audio.receive_and_process_decoded_frames(&mut self.octx)
        } else {
            Ok(())
        }
    }

    /// Flushes decoders and encoders, then writes the MP4 trailer (the faststart pass).
    fn finish(mut self) -> Result<Finished, MediaError> {
        self.video.send_eof_to_decoder();
        self.video
            .receive_and_process_decoded_frames(&mut self.octx)?;
        if self.video.frames_encoded() == 0 {
            return Err(MediaError::corrupt("no video frame could be decoded"));
        }
        self.video.send_eof_to_encoder()?;
        self.video
            .receive_and_write_encoded_packets(&mut self.octx)?;
        let mut duration = self.video.end_secs();
        if let Some(audio) = self.audio.as_mut() {
            audio.flush(&mut self.octx)?;
            duration = duration.max(audio.end_secs());
        }
        self.octx
            .write_trailer()
            .map_err(internal("finishing video.mp4"))?;

        let audio_errors = self.audio.as_ref().map_or(0, AudioStage::decode_errors);
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
        })
    }
}

/// Turns decoding progress into throttled fractions for the caller.
struct ProgressReporter<'a> {
    /// The caller's callback.
    callback: &'a mut dyn FnMut(f64),
    /// Source duration; progress is by time when known...
    duration: Option<f64>,
    /// ...else by bytes read.
    size_bytes: u64,
    /// When the callback last ran.
    last: Instant,
}

impl<'a> ProgressReporter<'a> {
    fn new(duration: Option<f64>, size_bytes: u64, callback: &'a mut dyn FnMut(f64)) -> Self {
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
        (self.callback)(fraction.clamp(0.0, 0.99));
    }
}
