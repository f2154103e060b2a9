//! Where encoded packets go: the MP4 gets the top rendition and the audio; each
//! HLS variant gets its own rendition and the same audio. Every packet is
//! encoded once and muxed as many times as it is needed.

use std::path::Path;

use ffmpeg_next::{codec, format, Dictionary, Packet, Rational};

use super::error::{internal, MediaError};
use super::hls::{
    master_playlist, write_replacing, HlsRendition, Track, VariantWriter, MASTER_PLAYLIST,
};
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
    /// The source's frame rate, for the master playlist.
    pub(crate) frame_rate: Option<f64>,
    /// Each rendition's peak bit rate as encoded to (its cap, and the
    /// audio's): the preview's `BANDWIDTH`, before any segment is measured.
    pub(crate) peaks: Vec<u64>,
    /// Least target duration of the media playlists beyond the segment
    /// length (s): the longest segment a copied rendition's keyframes make.
    pub(crate) min_target: u64,
}

/// The ladder's preview: a master playlist written as soon as every rendition
/// has a segment, over media playlists that grow until the end.
enum Preview {
    /// Not every rendition has its first segment yet; the master goes here then.
    Waiting {
        master: std::path::PathBuf,
        frame_rate: Option<f64>,
        peaks: Vec<u64>,
    },
    /// Written; the caller has not been told yet.
    Ready,
    /// Written and told, or no ladder.
    Told,
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
    /// Whether the preview is written yet.
    preview: Preview,
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
        let mut preview = Preview::Told;
        if let Some(ladder) = ladder {
            preview = Preview::Waiting {
                master: ladder.dir.join(MASTER_PLAYLIST),
                frame_rate: ladder.frame_rate,
                peaks: ladder.peaks.clone(),
            };
            for ((name, size), parameters) in ladder.renditions.iter().zip(&setup.video) {
                variants.push(VariantWriter::new(
                    ladder.dir,
                    name,
                    *size,
                    parameters.clone(),
                    setup.audio.as_ref().map(|(p, _)| p.clone()),
                    ladder.segment_secs,
                    ladder.min_target,
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
            preview,
        })
    }

    /// True once, when the preview has just been written: the master playlist
    /// lists every rendition, each with at least one segment.
    pub(crate) fn take_preview(&mut self) -> bool {
        if matches!(self.preview, Preview::Ready) {
            self.preview = Preview::Told;
            return true;
        }
        false
    }

    /// Writes the preview's master playlist once every rendition has a
    /// segment. Players read it once, so its `BANDWIDTH` is each rendition's
    /// cap, not the rate of a first short segment that starts with a
    /// keyframe (the finished master, written over it at the end, has the
    /// peak of every segment).
    fn write_preview_when_ready(&mut self) -> Result<(), MediaError> {
        let Preview::Waiting {
            master,
            frame_rate,
            peaks,
        } = &self.preview
        else {
            return Ok(());
        };
        if !self.variants.iter().all(VariantWriter::has_segment) {
            return Ok(());
        }
        let renditions: Vec<HlsRendition> = self
            .variants
            .iter()
            .zip(peaks)
            .map(|(variant, &peak)| {
                let mut rendition = variant.rendition();
                rendition.bandwidth = peak;
                rendition.average_bandwidth = rendition.average_bandwidth.min(peak);
                rendition
            })
            .collect();
        write_replacing(master, &master_playlist(&renditions, *frame_rate))?;
        self.preview = Preview::Ready;
        Ok(())
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
        if let Some(variant) = self.variants.get_mut(rendition) {
            variant.push(Track::Video, packet, self.video_time_base)?;
        }
        self.write_preview_when_ready()
    }

    /// One encoded audio packet, for the MP4 and every variant.
    pub(crate) fn write_audio(&mut self, packet: &Packet) -> Result<(), MediaError> {
        let time_bases = (self.audio_time_base, self.mp4_audio_time_base);
        write_mp4(&mut self.mp4, 1, time_bases, packet)?;
        for variant in &mut self.variants {
            variant.push(Track::Audio, packet, self.audio_time_base)?;
        }
        self.write_preview_when_ready()
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
