//! The video stage: decode -> scale to yuv420p -> rotate upright -> libx264.

use ffmpeg_next::codec::{self, threading};
use ffmpeg_next::format::{self, Pixel};
use ffmpeg_next::software::scaling;
use ffmpeg_next::util::error::EAGAIN;
use ffmpeg_next::{decoder, encoder, frame, Dictionary, Error, Packet, Rational, Stream};

use super::error::{internal, MediaError};
use super::input::open_video_decoder;
use super::poster::PosterPicker;
use super::probe::{seconds, Source};
use super::profile::{fit_within, MediaLimits, OutputProfile};
use super::rotate::{rotate_frame, Rotation};

/// Decode errors tolerated in a row before a stream counts as unreadable.
const MAX_CONSECUTIVE_DECODE_ERRORS: u32 = 1000;

pub(crate) struct VideoStage {
    /// Index of the source video stream in the input.
    pub(crate) input_index: usize,
    /// Index of the H.264 stream in the output.
    output_index: usize,
    decoder: decoder::Video,
    encoder: encoder::Video,
    /// Time base of decoded timestamps and of the encoder (the source stream's).
    time_base: Rational,
    /// Output stream time base; only known after `write_header`.
    output_time_base: Rational,
    /// Encoded (displayed) size.
    size: (u32, u32),
    /// Turn applied after scaling.
    rotation: Rotation,
    /// Scaler for the current source frame geometry; rebuilt when it changes.
    scaler: Option<Scaler>,
    /// Source timestamp (in `time_base`) that becomes output pts 0.
    origin: i64,
    /// Nominal frame duration in `time_base`, for frames without a timestamp.
    frame_step: i64,
    /// Last pts sent to the encoder; pts must strictly increase.
    last_pts: Option<i64>,
    /// Frames decoded so far, checked against `MediaLimits::max_frames`.
    frames_decoded: u64,
    /// Frames handed to the encoder; zero at the end means corrupt input.
    frames_encoded: u64,
    /// Decode errors seen (salvaged around), for the log.
    decode_errors: u64,
    /// Errors since the last good frame; too many means the stream is garbage.
    consecutive_errors: u32,
    limits: MediaLimits,
    /// Keeps the frame the poster will be made from.
    pub(crate) poster: PosterPicker,
}

/// A scaler and the source geometry it was built for.
struct Scaler {
    context: scaling::Context,
    source: (Pixel, u32, u32),
}

impl VideoStage {
    pub(crate) fn new(
        stream: &Stream,
        source: &Source,
        octx: &mut format::context::Output,
        profile: &OutputProfile,
        limits: &MediaLimits,
    ) -> Result<Self, MediaError> {
        let (decoder_threads, encoder_threads) = profile.thread_split();
        let decoder = open_video_decoder(stream, decoder_threads, limits)?;
        let time_base = stream.time_base();
        if time_base.numerator() <= 0 || time_base.denominator() <= 0 {
            return Err(MediaError::unsupported("the video stream has no time base"));
        }
        let size = fit_within(source.info.width, source.info.height, profile.max_long_side);

        let codec = encoder::find_by_name("libx264")
            .ok_or_else(|| MediaError::internal("opening the H.264 encoder", "libx264 missing"))?;
        let global_header = octx.format().flags().contains(format::Flags::GLOBAL_HEADER);
        let output_index = octx
            .add_stream(codec)
            .map_err(internal("adding the video stream"))?
            .index();
        let mut context = codec::Context::new_with_codec(codec);
        context.set_threading(threading::Config {
            kind: threading::Type::Frame,
            count: encoder_threads,
            ..Default::default()
        });
        let mut setup = context
            .encoder()
            .video()
            .map_err(internal("setting up libx264"))?;
        setup.set_width(size.0);
        setup.set_height(size.1);
        setup.set_format(Pixel::YUV420P);
        setup.set_aspect_ratio(Rational(1, 1));
        setup.set_frame_rate(Some(source.frame_rate));
        setup.set_time_base(time_base);
        if global_header {
            setup.set_flags(codec::Flags::GLOBAL_HEADER);
        }
        let mut options = Dictionary::new();
        options.set("preset", &profile.preset);
        options.set("crf", &profile.crf.to_string());
        let encoder = setup
            .open_with(options)
            .map_err(internal("opening libx264"))?;
        let mut ost = octx
            .stream_mut(output_index)
            .ok_or_else(|| MediaError::internal("adding the video stream", "stream vanished"))?;
        ost.set_parameters(&encoder);
        ost.set_time_base(time_base);
        ost.set_avg_frame_rate(source.frame_rate);

        let to_ticks = |secs: f64| {
            (secs * f64::from(time_base.denominator()) / f64::from(time_base.numerator())).round()
                as i64
        };
        Ok(Self {
            input_index: stream.index(),
            output_index,
            decoder,
            encoder,
            time_base,
            output_time_base: time_base,
            size,
            rotation: source.rotation,
            scaler: None,
            origin: to_ticks(source.origin_secs),
            frame_step: to_ticks(1.0 / f64::from(source.frame_rate)).max(1),
            last_pts: None,
            frames_decoded: 0,
            frames_encoded: 0,
            decode_errors: 0,
            consecutive_errors: 0,
            limits: limits.clone(),
            poster: PosterPicker::new(source.info.duration),
        })
    }

    /// Records the output stream time base the muxer settled on in `write_header`.
    pub(crate) fn set_output_time_base(&mut self, time_base: Rational) {
        self.output_time_base = time_base;
    }

    /// Encoded width and height.
    pub(crate) fn size(&self) -> (u32, u32) {
        self.size
    }

    /// Frames that reached the encoder.
    pub(crate) fn frames_encoded(&self) -> u64 {
        self.frames_encoded
    }

    /// Decode errors salvaged around.
    pub(crate) fn decode_errors(&self) -> u64 {
        self.decode_errors
    }

    /// Output time (s) reached so far: the end of the last frame sent.
    pub(crate) fn end_secs(&self) -> f64 {
        self.last_pts
            .and_then(|pts| seconds(pts + self.frame_step, self.time_base))
            .unwrap_or(0.0)
    }

    /// Whether the stream has produced nothing but errors for too long to be worth reading.
    pub(crate) fn is_hopeless(&self) -> bool {
        self.consecutive_errors >= MAX_CONSECUTIVE_DECODE_ERRORS
    }

    pub(crate) fn send_packet_to_decoder(
        &mut self,
        packet: &Packet,
        octx: &mut format::context::Output,
    ) -> Result<(), MediaError> {
        let mut result = self.decoder.send_packet(packet);
        if matches!(result, Err(Error::Other { errno: EAGAIN })) {
            // The decoder is full: drain it, then the packet fits.
            self.receive_and_process_decoded_frames(octx)?;
            result = self.decoder.send_packet(packet);
        }
        match result {
            Ok(()) | Err(Error::Eof) => Ok(()),
            Err(err) => {
                self.note_decode_error(err);
                Ok(())
            }
        }
    }

    pub(crate) fn send_eof_to_decoder(&mut self) {
        // Only fails if already flushed; draining afterwards is what matters.
        let _ = self.decoder.send_eof();
    }

    pub(crate) fn receive_and_process_decoded_frames(
        &mut self,
        octx: &mut format::context::Output,
    ) -> Result<(), MediaError> {
        let mut decoded = frame::Video::empty();
        loop {
            match self.decoder.receive_frame(&mut decoded) {
                Ok(()) => {
                    self.consecutive_errors = 0;
                    self.process_decoded_frame(&decoded, octx)?;
                }
                Err(Error::Eof) => return Ok(()),
                Err(Error::Other { errno: EAGAIN }) => return Ok(()),
                Err(err) => {
                    // One bad frame; the next packet may decode again.
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
        octx: &mut format::context::Output,
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

        let mut upright = self.scale_and_rotate(decoded)?;
        upright.set_pts(Some(pts));
        self.last_pts = Some(pts);
        self.poster
            .offer(&upright, seconds(pts, self.time_base).unwrap_or(0.0));
        self.encoder
            .send_frame(&upright)
            .map_err(internal("encoding a video frame"))?;
        self.frames_encoded += 1;
        self.receive_and_write_encoded_packets(octx)
    }

    /// Converts a decoded frame to an upright yuv420p frame of the output size.
    fn scale_and_rotate(&mut self, decoded: &frame::Video) -> Result<frame::Video, MediaError> {
        let geometry = (decoded.format(), decoded.width(), decoded.height());
        let (width, height) = if self.rotation.swaps_axes() {
            (self.size.1, self.size.0)
        } else {
            self.size
        };
        let scaler = match &mut self.scaler {
            Some(scaler) if scaler.source == geometry => scaler,
            slot => {
                let context = scaling::Context::get(
                    geometry.0,
                    geometry.1,
                    geometry.2,
                    Pixel::YUV420P,
                    width,
                    height,
                    scaling::Flags::BICUBIC,
                )
                .map_err(|err| {
                    MediaError::unsupported(format!(
                        "cannot convert {:?} video frames ({err})",
                        geometry.0
                    ))
                })?;
                slot.insert(Scaler {
                    context,
                    source: geometry,
                })
            }
        };
        // A fresh frame each time: the encoder may keep a reference to it.
        let mut scaled = frame::Video::new(Pixel::YUV420P, width, height);
        scaler
            .context
            .run(decoded, &mut scaled)
            .map_err(internal("scaling a video frame"))?;
        Ok(match self.rotation {
            Rotation::None => scaled,
            rotation => rotate_frame(&scaled, rotation),
        })
    }

    pub(crate) fn send_eof_to_encoder(&mut self) -> Result<(), MediaError> {
        self.encoder
            .send_eof()
            .map_err(internal("flushing the video encoder"))
    }

    pub(crate) fn receive_and_write_encoded_packets(
        &mut self,
        octx: &mut format::context::Output,
    ) -> Result<(), MediaError> {
        let mut encoded = Packet::empty();
        loop {
            match self.encoder.receive_packet(&mut encoded) {
                Ok(()) => {
                    encoded.set_stream(self.output_index);
                    encoded.rescale_ts(self.time_base, self.output_time_base);
                    encoded
                        .write_interleaved(octx)
                        .map_err(internal("writing a video packet"))?;
                }
                Err(Error::Eof) => return Ok(()),
                Err(Error::Other { errno: EAGAIN }) => return Ok(()),
                Err(err) => return Err(MediaError::internal("encoding video", err)),
            }
        }
    }
}
