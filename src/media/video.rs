//! The video stage: decode once, then for each rendition of the ladder scale
//! to yuv420p and encode with libx264. The top rendition is scaled from the
//! decoded frame and turned upright; the smaller ones are scaled from the top's
//! upright frame, so each rendition costs one scale and one encode.
//!
//! With the video copied (`passthrough.rs`), the top rendition is the
//! source's own packets, stamped from the same origin, and the decode feeds
//! only the lower renditions (each keyframed where the source has one), the
//! poster and the storyboard; with no lower rendition only keyframes are
//! decoded.

use std::collections::BTreeSet;

use ffmpeg_next::codec::{self, threading};
use ffmpeg_next::format::Pixel;
use ffmpeg_next::util::mathematics::Rescale;
use ffmpeg_next::{
    decoder, encoder, frame, picture, Dictionary, Discard, Error, Packet, Rational, Stream,
};

use super::codec_io::{drain_encoder, receive_frame, restamped, send_packet, Decoded};
use super::error::{internal, MediaError};
use super::hls::{next_cut, segment_ticks, TS_TIME_BASE};
use super::input::open_video_decoder;
use super::ladder::{RenditionLadder, Rung};
use super::mux::Muxers;
use super::passthrough::VideoCopy;
use super::poster::PosterPicker;
use super::probe::{seconds, ticks, Source};
use super::profile::{MediaLimits, OutputProfile};
use super::rotate::{rotate_frame, Rotation};
use super::scale::{scale, Scaler};
use super::storyboard::StoryboardPicker;

/// Decode errors tolerated in a row before a stream counts as unreadable.
const MAX_CONSECUTIVE_DECODE_ERRORS: u32 = 1000;

pub(crate) struct VideoStage {
    /// Index of the source video stream in the input.
    pub(crate) input_index: usize,
    /// Decoder of the source stream, threaded per the profile's budget.
    decoder: decoder::Video,
    /// One encoder per rendition, top (the MP4's) first.
    renditions: Vec<RenditionEncoder>,
    /// Set when the top rendition is the source's packets, copied.
    copy: Option<CopiedVideo>,
    /// Time base of decoded timestamps and of every encoder (the source stream's).
    time_base: Rational,
    /// Nominal frame rate given to the encoders and the MP4 header.
    frame_rate: Rational,
    /// Turn applied to the top rendition after scaling.
    rotation: Rotation,
    /// Source timestamp (in `time_base`) that becomes output pts 0.
    origin: i64,
    /// Nominal frame duration in `time_base`, for frames without a timestamp.
    frame_step: i64,
    /// Last pts sent to the encoders; pts must strictly increase.
    last_pts: Option<i64>,
    /// Segment length in 90 kHz ticks: each multiple starts a keyframe in every rendition.
    segment_ticks: i64,
    /// Output time (90 kHz ticks) at or after which the next frame is forced to be a keyframe.
    next_keyframe: i64,
    /// Frames decoded so far, checked against `MediaLimits::max_frames`.
    frames_decoded: u64,
    /// Frames handed to the encoders; zero at the end means corrupt input.
    frames_encoded: u64,
    /// Decode errors seen (salvaged around), for the log.
    decode_errors: u64,
    /// Errors since the last good frame; too many means the stream is garbage.
    consecutive_errors: u32,
    /// Limits re-checked on every decoded frame (headers can lie).
    limits: MediaLimits,
    /// Keeps the frame the poster will be made from (from the top rendition).
    pub(crate) poster: PosterPicker,
    /// Keeps a tile of the top rendition every few seconds for the storyboard.
    pub(crate) storyboard: StoryboardPicker,
}

/// One rendition's scaler and encoder.
struct RenditionEncoder {
    /// Displayed (upright) size.
    size: (u32, u32),
    /// Scaler for the current input geometry; rebuilt when it changes.
    scaler: Option<Scaler>,
    /// libx264, configured from the `OutputProfile` and the rung; `None`
    /// for a copied top rendition.
    encoder: Option<encoder::Video>,
}

/// The source's video packets, copied into the top rendition and the MP4.
struct CopiedVideo {
    /// The source stream's parameters (the muxers' video stream).
    parameters: codec::Parameters,
    /// Timestamps (the source's) of keyframes sent but not yet decoded: the
    /// frames the lower renditions make keyframes of.
    keyframes: BTreeSet<i64>,
    /// End (output time, in the stream's time base) of the last packet copied.
    end: Option<i64>,
}

impl VideoStage {
    pub(crate) fn new(
        stream: &Stream,
        source: &Source,
        ladder: &RenditionLadder,
        copy: Option<&VideoCopy>,
        decoder_threads: Option<usize>,
        profile: &OutputProfile,
        limits: &MediaLimits,
    ) -> Result<Self, MediaError> {
        let threads = decoder_threads.unwrap_or_else(|| profile.decoder_threads());
        let mut decoder = open_video_decoder(stream, threads, limits)?;
        if copy.is_some() && ladder.rungs.len() == 1 {
            // Nothing to encode: the poster and the storyboard need keyframes only.
            decoder.skip_frame(Discard::NonKey);
        }
        let time_base = stream.time_base();
        if time_base.numerator() <= 0 || time_base.denominator() <= 0 {
            return Err(MediaError::unsupported("the video stream has no time base"));
        }
        let renditions = ladder
            .rungs
            .iter()
            .enumerate()
            .map(|(index, rung)| {
                let copied = copy.is_some() && index == 0;
                let encoder = if copied {
                    None
                } else {
                    Some(open_h264_encoder(
                        rung,
                        time_base,
                        source.frame_rate,
                        profile,
                        copy.is_none(),
                    )?)
                };
                Ok(RenditionEncoder {
                    size: (rung.width, rung.height),
                    scaler: None,
                    encoder,
                })
            })
            .collect::<Result<Vec<_>, MediaError>>()?;

        Ok(Self {
            input_index: stream.index(),
            decoder,
            renditions,
            copy: copy.map(|copy| CopiedVideo {
                parameters: copy.parameters.clone(),
                keyframes: BTreeSet::new(),
                end: None,
            }),
            time_base,
            frame_rate: source.frame_rate,
            rotation: source.rotation,
            origin: ticks(source.origin_secs, time_base),
            frame_step: ticks(1.0 / f64::from(source.frame_rate), time_base).max(1),
            last_pts: None,
            segment_ticks: segment_ticks(profile.hls_segment_secs),
            next_keyframe: 0,
            frames_decoded: 0,
            frames_encoded: 0,
            decode_errors: 0,
            consecutive_errors: 0,
            limits: limits.clone(),
            poster: PosterPicker::new(source.info.duration),
            storyboard: StoryboardPicker::new(source.info.duration),
        })
    }

    /// Parameters of each rendition's H.264 stream (top first), the encoders' time base
    /// and the nominal frame rate, for the muxers.
    pub(crate) fn stream_setup(&self) -> (Vec<codec::Parameters>, Rational, Rational) {
        let parameters = self
            .renditions
            .iter()
            .map(|r| match (&r.encoder, &self.copy) {
                (Some(encoder), _) => codec::Parameters::from(encoder),
                (None, Some(copy)) => copy.parameters.clone(),
                (None, None) => codec::Parameters::new(),
            })
            .collect();
        (parameters, self.time_base, self.frame_rate)
    }

    /// Encoded (displayed) size of the top rendition, which is the MP4's.
    pub(crate) fn size(&self) -> (u32, u32) {
        self.renditions.first().map_or((0, 0), |r| r.size)
    }

    /// Frames that reached the encoders.
    pub(crate) fn frames_encoded(&self) -> u64 {
        self.frames_encoded
    }

    /// Decode errors salvaged around.
    pub(crate) fn decode_errors(&self) -> u64 {
        self.decode_errors
    }

    /// Whether the top rendition (and the MP4) is the source's video, copied.
    pub(crate) fn copied(&self) -> bool {
        self.copy.is_some()
    }

    /// Output time (s) reached so far: the end of the last frame sent (or
    /// copied, when only keyframes are decoded).
    pub(crate) fn end_secs(&self) -> f64 {
        let decoded = self.last_pts.map(|pts| pts + self.frame_step);
        let copied = self.copy.as_ref().and_then(|copy| copy.end);
        decoded
            .max(copied)
            .and_then(|end| seconds(end, self.time_base))
            .unwrap_or(0.0)
    }

    /// Whether the stream has produced nothing but errors for too long to be worth reading.
    pub(crate) fn is_hopeless(&self) -> bool {
        self.consecutive_errors >= MAX_CONSECUTIVE_DECODE_ERRORS
    }

    /// Feeds one packet of the video stream, then encodes whatever it decoded to.
    pub(crate) fn transcode_packet(
        &mut self,
        packet: &Packet,
        muxers: &mut Muxers,
    ) -> Result<(), MediaError> {
        if let Some(copy) = &mut self.copy {
            copy.write(packet, (self.origin, self.frame_step), muxers)?;
        }
        if let Err(err) = send_packet(&mut self.decoder, packet) {
            self.note_decode_error(err);
        }
        self.receive_and_process_decoded_frames(muxers)
    }

    pub(crate) fn send_eof_to_decoder(&mut self) {
        // Only fails if already flushed; draining afterwards is what matters.
        let _ = self.decoder.send_eof();
    }

    pub(crate) fn receive_and_process_decoded_frames(
        &mut self,
        muxers: &mut Muxers,
    ) -> Result<(), MediaError> {
        let mut decoded = frame::Video::empty();
        loop {
            match receive_frame(&mut self.decoder, &mut decoded) {
                Decoded::Frame => {
                    self.consecutive_errors = 0;
                    self.process_decoded_frame(&decoded, muxers)?;
                }
                Decoded::Drained => return Ok(()),
                Decoded::Failed(err) => {
                    self.note_decode_error(err);
                    return Ok(());
                }
            }
        }
    }

    fn note_decode_error(&mut self, err: Error) {
        self.decode_errors += 1;
        self.consecutive_errors += 1;
        tracing::debug!(%err, errors = self.decode_errors, "video decode error");
    }

    fn process_decoded_frame(
        &mut self,
        decoded: &frame::Video,
        muxers: &mut Muxers,
    ) -> Result<(), MediaError> {
        self.limits
            .check_frame_size(decoded.width(), decoded.height())?;
        self.frames_decoded += 1;
        self.limits.check_frame_count(self.frames_decoded)?;

        let pts = match decoded.timestamp() {
            Some(ts) => ts.saturating_sub(self.origin),
            None => self.last_pts.map_or(0, |last| last + self.frame_step),
        };
        if self.last_pts.is_some_and(|last| pts <= last) {
            // Duplicate or backwards timestamp: drop, as a CFR muxer would.
            return Ok(());
        }
        if let Some(at) = seconds(pts, self.time_base) {
            // Headers can lie about duration; timestamps are checked as they come.
            self.limits.check_duration(at - 1.0)?;
        }
        self.last_pts = Some(pts);
        let keyframe = match &mut self.copy {
            // Where the copied rendition has one, so the segmenter cuts every
            // rendition at the same of them.
            Some(copy) => decoded
                .timestamp()
                .is_some_and(|ts| copy.keyframe_decoded(ts)),
            // The same frames start a segment in every rendition, on the HLS segmenter's grid.
            None => {
                let output_ticks = pts.rescale(self.time_base, TS_TIME_BASE);
                let keyframe = output_ticks >= self.next_keyframe;
                if keyframe {
                    self.next_keyframe = next_cut(output_ticks, self.segment_ticks);
                }
                keyframe
            }
        };

        // The top rendition's picture, which the others are scaled from. A
        // copied top needs none beyond the decoded frame when that already is
        // yuv420p at its size (the passthrough rules make it upright): a
        // same-size scale would copy every 1080p frame for nothing.
        let top_size = self.size();
        let as_decoded = self.copy.is_some()
            && decoded.format() == Pixel::YUV420P
            && (decoded.width(), decoded.height()) == top_size;
        let scaled_top;
        let upright = if as_decoded {
            decoded
        } else {
            let mut picture = self.scale_top(decoded)?;
            picture.set_pts(Some(pts));
            if keyframe {
                picture.set_kind(picture::Type::I);
            }
            self.encode(0, &picture, muxers)?;
            scaled_top = picture;
            &scaled_top
        };
        let at = seconds(pts, self.time_base).unwrap_or(0.0);
        self.poster.offer(upright, at);
        self.storyboard.offer(upright, at)?;
        for index in 1..self.renditions.len() {
            let rendition = &mut self.renditions[index];
            let mut picture = scale(&mut rendition.scaler, rendition.size, upright)?;
            picture.set_pts(Some(pts));
            if keyframe {
                picture.set_kind(picture::Type::I);
            }
            self.encode(index, &picture, muxers)?;
        }
        self.frames_encoded += 1;
        Ok(())
    }

    /// Encodes `picture` for rendition `index`, if that one is encoded.
    fn encode(
        &mut self,
        index: usize,
        picture: &frame::Video,
        muxers: &mut Muxers,
    ) -> Result<(), MediaError> {
        let Some(encoder) = &mut self.renditions[index].encoder else {
            return Ok(());
        };
        encoder
            .send_frame(picture)
            .map_err(internal("encoding a video frame"))?;
        drain_encoder(encoder, |packet| muxers.write_video(index, packet))
    }

    /// The top rendition's frame: the decoded frame scaled to yuv420p, then turned upright.
    fn scale_top(&mut self, decoded: &frame::Video) -> Result<frame::Video, MediaError> {
        let rotation = self.rotation;
        let Some(top) = self.renditions.first_mut() else {
            return Err(MediaError::internal("scaling", "no video rendition"));
        };
        let (width, height) = top.size;
        let coded = if rotation.swaps_axes() {
            (height, width)
        } else {
            (width, height)
        };
        let scaled = scale(&mut top.scaler, coded, decoded)?;
        Ok(match rotation {
            Rotation::None => scaled,
            rotation => rotate_frame(&scaled, rotation),
        })
    }

    /// Drains every encoder at the end of input.
    pub(crate) fn flush_encoders(&mut self, muxers: &mut Muxers) -> Result<(), MediaError> {
        for (index, rendition) in self.renditions.iter_mut().enumerate() {
            let Some(encoder) = &mut rendition.encoder else {
                continue;
            };
            encoder
                .send_eof()
                .map_err(internal("flushing the video encoder"))?;
            drain_encoder(encoder, |packet| muxers.write_video(index, packet))?;
        }
        Ok(())
    }
}

impl CopiedVideo {
    /// Copies one source packet into the top rendition and the MP4, its
    /// timestamps moved by `origin` as the decoded frames' are.
    fn write(
        &mut self,
        packet: &Packet,
        (origin, frame_step): (i64, i64),
        muxers: &mut Muxers,
    ) -> Result<(), MediaError> {
        if let Some(pts) = packet.pts().filter(|_| packet.is_key()) {
            self.keyframes.insert(pts);
        }
        let copied = restamped(packet, origin, frame_step, &mut self.end);
        muxers.write_video(0, &copied)
    }

    /// Whether the frame decoded at source time `ts` is one of the copied
    /// keyframes; those before it are forgotten (their frames were dropped).
    fn keyframe_decoded(&mut self, ts: i64) -> bool {
        let keyframe = self.keyframes.remove(&ts);
        self.keyframes = self.keyframes.split_off(&ts);
        keyframe
    }
}

/// Opens libx264 for one rung: CRF with the rung's VBV cap, its share of the threads,
/// out-of-band SPS/PPS (the MP4 needs them; the TS segmenter puts them before each keyframe).
/// Without `own_keyframes` its keyframes are only the forced ones (beside a
/// copied rendition, whose segments they must match).
fn open_h264_encoder(
    rung: &Rung,
    time_base: Rational,
    frame_rate: Rational,
    profile: &OutputProfile,
    own_keyframes: bool,
) -> Result<encoder::Video, MediaError> {
    let codec = encoder::find_by_name("libx264")
        .ok_or_else(|| MediaError::internal("opening the H.264 encoder", "libx264 missing"))?;
    let mut context = codec::Context::new_with_codec(codec);
    context.set_threading(threading::Config {
        kind: threading::Type::Frame,
        count: rung.threads,
        ..Default::default()
    });
    let mut setup = context
        .encoder()
        .video()
        .map_err(internal("setting up libx264"))?;
    setup.set_width(rung.width);
    setup.set_height(rung.height);
    setup.set_format(Pixel::YUV420P);
    setup.set_aspect_ratio(Rational(1, 1));
    // The stream's average rate, never the decoder's (often unset): libx264 derives its level from it.
    setup.set_frame_rate(Some(frame_rate));
    // Decoded timestamps pass through unchanged, so variable frame rates survive.
    setup.set_time_base(time_base);
    setup.set_flags(codec::Flags::GLOBAL_HEADER);
    let mut options = Dictionary::new();
    options.set("preset", &profile.preset);
    options.set("crf", &profile.crf.to_string());
    // Frames marked I become IDR frames: segment starts that decode alone.
    options.set("forced-idr", "1");
    let mut params = format!(
        "vbv-maxrate={}:vbv-bufsize={}",
        rung.max_kbps,
        rung.max_kbps * 2
    );
    if !own_keyframes {
        params.push_str(":keyint=infinite:scenecut=0");
    }
    options.set("x264-params", &params);
    setup
        .open_with(options)
        .map_err(internal("opening libx264"))
}
