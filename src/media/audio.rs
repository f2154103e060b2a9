//! The audio stage: decode -> swresample to 48 kHz stereo float -> FIFO of
//! 1024-sample frames -> native AAC-LC encoder; or, when the source already
//! is AAC-LC stereo beside a copied video (`passthrough.rs`), its packets
//! copied.

use ffmpeg_next::codec;
use ffmpeg_next::format::{sample, Sample};
use ffmpeg_next::software::resampling;
use ffmpeg_next::{decoder, encoder, frame, ChannelLayout, Error, Packet, Rational, Stream};

use super::codec_io::{drain_encoder, receive_frame, restamped, send_packet, Decoded};
use super::error::{internal, MediaError};
use super::input::open_audio_decoder;
use super::mux::Muxers;
use super::probe::{seconds, ticks};
use super::profile::{MediaLimits, OutputProfile};

/// Sample format of the native AAC encoder.
const AAC_FORMAT: Sample = Sample::F32(sample::Type::Planar);
/// Output channel count (stereo).
const CHANNELS: usize = 2;
/// Room the resampler may need beyond the rate-scaled input length.
const RESAMPLE_SLACK: usize = 1024;
/// Cap on flush calls, in case a resampler never reports empty.
const MAX_FLUSH_ROUNDS: usize = 64;

pub(crate) struct AudioStage {
    /// Index of the source audio stream in the input.
    pub(crate) input_index: usize,
    /// Decoder of the source stream (single-threaded; audio is cheap).
    decoder: decoder::Audio,
    /// Native AAC-LC encoder, stereo float planar at `rate`.
    encoder: encoder::Audio,
    /// Converter for the current decoded format; rebuilt if the source format changes.
    resampler: Option<resampling::Context>,
    /// Resampled audio waiting to fill whole encoder frames.
    fifo: SampleFifo,
    /// Output sample rate; the encoder time base is 1/rate.
    rate: u32,
    /// Samples per encoder frame (1024 for AAC).
    frame_size: usize,
    /// Time base of decoded timestamps (the source stream's).
    input_time_base: Rational,
    /// Source time (s) that becomes output time 0.
    origin_secs: f64,
    /// Pts (in 1/rate) of the next encoder frame; set by the first decoded frame.
    next_pts: Option<i64>,
    /// Decode errors seen (salvaged around), for the log.
    decode_errors: u64,
    /// Duration limit, re-checked as samples arrive (headers can lie).
    limits: MediaLimits,
}

impl AudioStage {
    pub(crate) fn new(
        stream: &Stream,
        origin_secs: f64,
        profile: &OutputProfile,
        limits: &MediaLimits,
    ) -> Result<Self, MediaError> {
        let decoder = open_audio_decoder(stream)?;
        let rate = profile.audio_sample_rate;
        let rate_i32 = i32::try_from(rate)
            .map_err(|_| MediaError::internal("setting up AAC", "sample rate out of range"))?;
        let codec = encoder::find_by_name("aac")
            .ok_or_else(|| MediaError::internal("opening the AAC encoder", "aac missing"))?;
        let mut setup = codec::Context::new_with_codec(codec)
            .encoder()
            .audio()
            .map_err(internal("setting up AAC"))?;
        setup.set_rate(rate_i32);
        setup.set_channel_layout(ChannelLayout::STEREO);
        setup.set_channels(CHANNELS as i32);
        setup.set_format(AAC_FORMAT);
        setup.set_bit_rate(profile.audio_bit_rate);
        setup.set_time_base(Rational(1, rate_i32));
        // Out-of-band AudioSpecificConfig: the MP4 needs it; MPEG-TS makes ADTS headers from it.
        setup.set_flags(codec::Flags::GLOBAL_HEADER);
        let encoder = setup.open_as(codec).map_err(internal("opening AAC"))?;
        let frame_size = match encoder.frame_size() {
            0 => 1024,
            n => n as usize,
        };
        Ok(Self {
            input_index: stream.index(),
            decoder,
            encoder,
            resampler: None,
            fifo: SampleFifo::default(),
            rate,
            frame_size,
            input_time_base: stream.time_base(),
            origin_secs,
            next_pts: None,
            decode_errors: 0,
            limits: limits.clone(),
        })
    }

    /// The AAC stream's parameters and time base, for the muxers.
    pub(crate) fn stream_setup(&self) -> (codec::Parameters, Rational) {
        (codec::Parameters::from(&self.encoder), self.time_base())
    }

    /// Time base of encoded packets: one tick per sample.
    fn time_base(&self) -> Rational {
        Rational(1, self.rate as i32)
    }

    /// Decode errors salvaged around.
    pub(crate) fn decode_errors(&self) -> u64 {
        self.decode_errors
    }

    /// Output time (s) reached so far.
    pub(crate) fn end_secs(&self) -> f64 {
        self.next_pts.map_or(0.0, |pts| {
            (pts as f64 + self.fifo.len() as f64) / f64::from(self.rate)
        })
    }

    /// Feeds one packet of the audio stream, then encodes every whole frame it yields.
    pub(crate) fn transcode_packet(
        &mut self,
        packet: &Packet,
        muxers: &mut Muxers,
    ) -> Result<(), MediaError> {
        if let Err(err) = send_packet(&mut self.decoder, packet) {
            self.note_decode_error(err);
        }
        self.receive_and_process_decoded_frames(muxers)
    }

    fn receive_and_process_decoded_frames(
        &mut self,
        muxers: &mut Muxers,
    ) -> Result<(), MediaError> {
        let mut decoded = frame::Audio::empty();
        loop {
            match receive_frame(&mut self.decoder, &mut decoded) {
                Decoded::Frame => {
                    self.resample_into_fifo(&mut decoded)?;
                    self.encode_whole_frames(muxers)?;
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
        tracing::debug!(%err, errors = self.decode_errors, "audio decode error");
    }

    fn resample_into_fifo(&mut self, decoded: &mut frame::Audio) -> Result<(), MediaError> {
        if decoded.samples() == 0 || decoded.rate() == 0 {
            return Ok(());
        }
        if decoded.channel_layout().is_empty() {
            // Streams without a declared layout (e.g. plain WAV) get the usual one.
            decoded.set_channel_layout(ChannelLayout::default(i32::from(decoded.channels())));
        }
        if self.next_pts.is_none() {
            let start = decoded
                .timestamp()
                .and_then(|ts| seconds(ts, self.input_time_base))
                .map_or(0.0, |secs| (secs - self.origin_secs).max(0.0));
            self.next_pts = Some((start * f64::from(self.rate)).round() as i64);
        }
        let input = resampling::context::Definition {
            format: decoded.format(),
            channel_layout: decoded.channel_layout(),
            rate: decoded.rate(),
        };
        if self.resampler.as_ref().is_some_and(|r| *r.input() != input) {
            self.flush_resampler()?;
            self.resampler = None;
        }
        let rate = self.rate;
        let resampler = match &mut self.resampler {
            Some(resampler) => resampler,
            slot => match resampling::Context::get(
                input.format,
                input.channel_layout,
                input.rate,
                AAC_FORMAT,
                ChannelLayout::STEREO,
                rate,
            ) {
                Ok(resampler) => slot.insert(resampler),
                Err(err) => {
                    // Audio libswresample cannot read is skipped, not fatal to the video.
                    self.note_decode_error(err);
                    return Ok(());
                }
            },
        };
        let capacity = decoded.samples() * rate as usize / input.rate as usize + RESAMPLE_SLACK;
        let mut resampled = output_frame(capacity, rate);
        if let Err(err) = resampler.run(decoded, &mut resampled) {
            self.note_decode_error(err);
            return Ok(());
        }
        self.fifo.push(&resampled);
        self.limits.check_duration(self.end_secs() - 1.0)
    }

    /// Drains what the resampler still holds into the FIFO.
    fn flush_resampler(&mut self) -> Result<(), MediaError> {
        let Some(resampler) = self.resampler.as_mut() else {
            return Ok(());
        };
        for _ in 0..MAX_FLUSH_ROUNDS {
            let mut rest = output_frame(RESAMPLE_SLACK * 4, self.rate);
            resampler
                .flush(&mut rest)
                .map_err(internal("flushing the resampler"))?;
            if rest.samples() == 0 {
                break;
            }
            self.fifo.push(&rest);
        }
        Ok(())
    }

    /// Encodes every whole `frame_size` block in the FIFO.
    fn encode_whole_frames(&mut self, muxers: &mut Muxers) -> Result<(), MediaError> {
        while self.fifo.len() >= self.frame_size {
            self.encode_from_fifo(self.frame_size, muxers)?;
        }
        Ok(())
    }

    fn encode_from_fifo(&mut self, samples: usize, muxers: &mut Muxers) -> Result<(), MediaError> {
        let mut block = output_frame(samples, self.rate);
        self.fifo.pop_into(&mut block, samples);
        let pts = self.next_pts.unwrap_or(0);
        block.set_pts(Some(pts));
        self.next_pts = Some(pts + samples as i64);
        self.encoder
            .send_frame(&block)
            .map_err(internal("encoding audio"))?;
        self.receive_and_write_encoded_packets(muxers)
    }

    /// End of input: empties decoder, resampler and FIFO (the last frame may be short), then the encoder.
    pub(crate) fn flush(&mut self, muxers: &mut Muxers) -> Result<(), MediaError> {
        // Only fails if already flushed; draining afterwards is what matters.
        let _ = self.decoder.send_eof();
        self.receive_and_process_decoded_frames(muxers)?;
        self.flush_resampler()?;
        self.encode_whole_frames(muxers)?;
        if self.fifo.len() > 0 {
            self.encode_from_fifo(self.fifo.len(), muxers)?;
        }
        self.encoder
            .send_eof()
            .map_err(internal("flushing the AAC encoder"))?;
        self.receive_and_write_encoded_packets(muxers)
    }

    fn receive_and_write_encoded_packets(&mut self, muxers: &mut Muxers) -> Result<(), MediaError> {
        drain_encoder(&mut self.encoder, |packet| muxers.write_audio(packet))
    }
}

/// The output's audio: encoded, or copied from the source.
pub(crate) enum AudioTrack {
    Encoded(AudioStage),
    Copied(AudioCopy),
}

impl AudioTrack {
    /// Index of the source audio stream in the input.
    pub(crate) fn input_index(&self) -> usize {
        match self {
            Self::Encoded(stage) => stage.input_index,
            Self::Copied(copy) => copy.input_index,
        }
    }

    /// The output stream's parameters and time base, for the muxers.
    pub(crate) fn stream_setup(&self) -> (codec::Parameters, Rational) {
        match self {
            Self::Encoded(stage) => stage.stream_setup(),
            Self::Copied(copy) => (copy.parameters.clone(), copy.time_base),
        }
    }

    /// The bit rate (bit/s): the profile's when encoded, the stream's own
    /// (or else the profile's) when copied.
    pub(crate) fn bit_rate(&self, profile: &OutputProfile) -> u64 {
        let stated = match self {
            Self::Encoded(_) => 0,
            Self::Copied(copy) => u64::try_from(copy.parameters.bit_rate()).unwrap_or(0),
        };
        match stated {
            0 => profile.audio_bit_rate as u64,
            stated => stated,
        }
    }

    /// Takes one packet of the source audio stream.
    pub(crate) fn transcode_packet(
        &mut self,
        packet: &Packet,
        muxers: &mut Muxers,
    ) -> Result<(), MediaError> {
        match self {
            Self::Encoded(stage) => stage.transcode_packet(packet, muxers),
            Self::Copied(copy) => copy.write(packet, muxers),
        }
    }

    /// End of input.
    pub(crate) fn flush(&mut self, muxers: &mut Muxers) -> Result<(), MediaError> {
        match self {
            Self::Encoded(stage) => stage.flush(muxers),
            Self::Copied(_) => Ok(()),
        }
    }

    /// Output time (s) reached so far.
    pub(crate) fn end_secs(&self) -> f64 {
        match self {
            Self::Encoded(stage) => stage.end_secs(),
            Self::Copied(copy) => copy
                .end
                .and_then(|end| seconds(end, copy.time_base))
                .unwrap_or(0.0),
        }
    }

    /// Decode errors salvaged around.
    pub(crate) fn decode_errors(&self) -> u64 {
        match self {
            Self::Encoded(stage) => stage.decode_errors(),
            Self::Copied(_) => 0,
        }
    }
}

/// The source's AAC-LC stereo packets, copied.
pub(crate) struct AudioCopy {
    /// Index of the source audio stream in the input.
    input_index: usize,
    /// The source stream's parameters, its codec tag cleared for the muxers.
    parameters: codec::Parameters,
    /// The source stream's time base, which the copied packets keep.
    time_base: Rational,
    /// Source time (in `time_base`) that becomes output time 0.
    origin: i64,
    /// End (output time, in `time_base`) of the last packet copied.
    end: Option<i64>,
}

impl AudioCopy {
    pub(crate) fn new(stream: &Stream, origin_secs: f64) -> Self {
        let time_base = stream.time_base();
        // A copy: setting the tag on the stream's own parameters would change
        // the input under the demuxer.
        let mut parameters = stream.parameters().clone();
        // SAFETY: `parameters` owns its AVCodecParameters (a deep copy); the
        // muxers choose the tag of their container when it is 0.
        unsafe { (*parameters.as_mut_ptr()).codec_tag = 0 };
        Self {
            input_index: stream.index(),
            parameters,
            time_base,
            origin: ticks(origin_secs, time_base),
            end: None,
        }
    }

    fn write(&mut self, packet: &Packet, muxers: &mut Muxers) -> Result<(), MediaError> {
        let copied = restamped(packet, self.origin, 0, &mut self.end);
        muxers.write_audio(&copied)
    }
}

/// An empty stereo float-planar frame with room for `samples` samples.
fn output_frame(samples: usize, rate: u32) -> frame::Audio {
    let mut out = frame::Audio::new(AAC_FORMAT, samples, ChannelLayout::STEREO);
    out.set_rate(rate);
    out
}

/// Stereo planar float samples between the resampler and the encoder.
#[derive(Debug, Default)]
pub(crate) struct SampleFifo {
    /// One buffer per output channel, always the same length.
    channels: [Vec<f32>; CHANNELS],
}

impl SampleFifo {
    pub(crate) fn len(&self) -> usize {
        self.channels[0].len()
    }

    /// Appends the valid samples of a stereo float-planar frame.
    fn push(&mut self, frame: &frame::Audio) {
        let samples = frame.samples();
        for (index, channel) in self.channels.iter_mut().enumerate() {
            channel.extend_from_slice(&frame.plane::<f32>(index)[..samples]);
        }
    }

    /// Moves the oldest `samples` samples into a frame allocated for exactly that many.
    fn pop_into(&mut self, frame: &mut frame::Audio, samples: usize) {
        for (index, channel) in self.channels.iter_mut().enumerate() {
            frame.plane_mut::<f32>(index)[..samples].copy_from_slice(&channel[..samples]);
            channel.drain(..samples);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fifo_hands_out_fixed_blocks_in_order() {
        let mut input = output_frame(1500, 48_000);
        for (index, value) in input.plane_mut::<f32>(0).iter_mut().enumerate() {
            *value = index as f32;
        }
        input.plane_mut::<f32>(1).fill(-1.0);
        let mut fifo = SampleFifo::default();
        fifo.push(&input);
        fifo.push(&input);
        assert_eq!(fifo.len(), 3000);

        let mut block = output_frame(1024, 48_000);
        fifo.pop_into(&mut block, 1024);
        assert_eq!(block.plane::<f32>(0)[1023], 1023.0);
        assert_eq!(block.plane::<f32>(1)[0], -1.0);
        fifo.pop_into(&mut block, 1024);
        // The second block is samples 1024..1500 of the first input, then 0.. of the second.
        assert_eq!(block.plane::<f32>(0)[0], 1024.0);
        assert_eq!(block.plane::<f32>(0)[476], 0.0);
        assert_eq!(fifo.len(), 952);
    }
}
