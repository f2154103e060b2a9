//! Where encoded packets go: the MP4 gets the top rendition and the audio; each
//! HLS variant gets its own rendition and the same audio. Every packet is
//! encoded once and muxed as many times as it is needed.

use std::path::Path;

use ffmpeg_next::{codec, format, Dictionary, Packet, Rational};

use super::error::{internal, MediaError};
use super::hls::{HlsRendition, Track, VariantWriter};
use super::input::file_url;

/// What the MP4 and the ladder are made of: the encoders' parameters and time bases.
pub(crate) struct StreamSetup {
    /// Parameters of each rendition's H.264 encoder, top first.
    pub(crate) video: Vec<codec::Parameters>,
    /// Time base of every video encoder (the source stream's).
    pub(crate) video_time_base: Rational,
    /// Nominal frame rate, for the MP4 stream header.
    pub(crate) frame_rate: Rational,
    /// AAC encoder parameters and time base, when the output has audio.
    pub(crate) audio: Option<(codec::Parameters, Rational)>,
}

/// Where the ladder goes, when there is one.
pub(crate) struct LadderSetup<'a> {
    /// `out_dir/hls`.
    pub(crate) dir: &'a Path,
    /// Name and displayed size of each rendition, top first (as `StreamSetup::video`).
    pub(crate) renditions: Vec<(String, (u32, u32))>,
    /// Target segment length in seconds.
    pub(crate) segment_secs: f64,
}

/// The MP4 and the HLS variants of one job.
pub(crate) struct Muxers {
    /// The faststart MP4: stream 0 the top rendition, stream 1 the audio.
    mp4: format::context::Output,
    /// Time base of the MP4's video stream; only known after `write_header`.
    mp4_video_time_base: Rational,
    /// Time base of the MP4's audio stream; only known after `write_header`.
    mp4_audio_time_base: Rational,
    /// One per rendition, top first; empty without a ladder.
    variants: Vec<VariantWriter>,
    /// Encoder time base of video packets.
    video_time_base: Rational,
    /// Encoder time base of audio packets.
    audio_time_base: Rational,
}

impl Muxers {
    pub(crate) fn new(
        mp4: &Path,
        setup: &StreamSetup,
        ladder: Option<LadderSetup<'_>>,
    ) -> Result<Self, MediaError> {
        let top = setup
            .video
            .first()
            .ok_or_else(|| MediaError::internal("creating video.mp4", "no video rendition"))?;
        let mut octx =
            format::output_as(&file_url(mp4)?, "mp4").map_err(internal("creating video.mp4"))?;
        let mut video = octx
            .add_stream(None::<ffmpeg_next::Codec>)
            .map_err(internal("adding the video stream"))?;
        video.set_parameters(top.clone());
        video.set_time_base(setup.video_time_base);
        video.set_avg_frame_rate(setup.frame_rate);
        let audio_time_base = match &setup.audio {
            Some((parameters, time_base)) => {
                let mut audio = octx
                    .add_stream(None::<ffmpeg_next::Codec>)
                    .map_err(internal("adding the audio stream"))?;
                audio.set_parameters(parameters.clone());
                audio.set_time_base(*time_base);
                *time_base
            }
            None => Rational(1, 1),
        };
        let mut variants = Vec::new();
        if let Some(ladder) = ladder {
            for ((name, size), parameters) in ladder.renditions.iter().zip(&setup.video) {
                variants.push(VariantWriter::new(
                    ladder.dir,
                    name,
                    *size,
                    parameters.clone(),
                    setup.audio.as_ref().map(|(p, _)| p.clone()),
                    ladder.segment_secs,
                )?);
            }
        }
        Ok(Self {
            mp4: octx,
            mp4_video_time_base: setup.video_time_base,
            mp4_audio_time_base: audio_time_base,
            variants,
            video_time_base: setup.video_time_base,
            audio_time_base,
        })
    }

    /// Writes the MP4 header (index at the front) and reads back the time bases the muxer chose.
    pub(crate) fn write_header(&mut self) -> Result<(), MediaError> {
        let mut options = Dictionary::new();
        options.set("movflags", "+faststart");
        self.mp4
            .write_header_with(options)
            .map_err(internal("writing the MP4 header"))?;
        let time_base = |index: usize| {
            self.mp4
                .stream(index)
                .map(|s| s.time_base())
                .ok_or_else(|| MediaError::internal("writing the MP4 header", "stream vanished"))
        };
        self.mp4_video_time_base = time_base(0)?;
        if self.mp4.nb_streams() > 1 {
            self.mp4_audio_time_base = time_base(1)?;
        }
        Ok(())
    }

    /// One encoded packet of rendition `rendition` (0 is the top, which the MP4 shares).
    pub(crate) fn write_video(
        &mut self,
        rendition: usize,
        packet: &Packet,
    ) -> Result<(), MediaError> {
        if rendition == 0 {
            let time_bases = (self.video_time_base, self.mp4_video_time_base);
            write_mp4(&mut self.mp4, 0, time_bases, packet)?;
        }
        match self.variants.get_mut(rendition) {
            Some(variant) => variant.push(Track::Video, packet, self.video_time_base),
            None => Ok(()),
        }
    }

    /// One encoded audio packet, for the MP4 and every variant.
    pub(crate) fn write_audio(&mut self, packet: &Packet) -> Result<(), MediaError> {
        let time_bases = (self.audio_time_base, self.mp4_audio_time_base);
        write_mp4(&mut self.mp4, 1, time_bases, packet)?;
        for variant in &mut self.variants {
            variant.push(Track::Audio, packet, self.audio_time_base)?;
        }
        Ok(())
    }

    /// Finishes the MP4 (the faststart pass) and every variant, whose media ends at `end_secs`.
    pub(crate) fn finish(mut self, end_secs: f64) -> Result<Vec<HlsRendition>, MediaError> {
        self.mp4
            .write_trailer()
            .map_err(internal("finishing video.mp4"))?;
        self.variants
            .into_iter()
            .map(|variant| variant.finish(end_secs))
            .collect()
    }
}

fn write_mp4(
    mp4: &mut format::context::Output,
    stream: usize,
    (encoder_time_base, stream_time_base): (Rational, Rational),
    packet: &Packet,
) -> Result<(), MediaError> {
    let mut packet = packet.clone();
    packet.set_stream(stream);
    packet.rescale_ts(encoder_time_base, stream_time_base);
    packet
        .write_interleaved(mp4)
        .map_err(internal("writing video.mp4"))
}
