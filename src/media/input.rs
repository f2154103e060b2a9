//! Opening an upload safely and finding the streams we transcode.
//!
//! Every input goes through [`open_input`]: a container allow-list and the
//! `file` protocol only, so a "video" that is really an HLS or concat playlist
//! is refused before any demuxer can open the files it lists.

use std::path::Path;

use ffmpeg_next::codec::{self, threading};
use ffmpeg_next::format::{self, stream::Disposition};
use ffmpeg_next::{decoder, media, Dictionary, Stream};

use super::error::MediaError;
use super::profile::MediaLimits;
use super::rotate::Rotation;

/// Demuxers an upload may be read by: real containers only. Never `hls`,
/// `concat`, `image2` or any other playlist or multi-file demuxer.
const FORMAT_WHITELIST: &str =
    "mov,mp4,m4a,3gp,3g2,mj2,matroska,webm,avi,mpegts,mpeg,flv,ogg,asf,mxf,dv,ivf,wav,mp3,aac,flac";

/// Opens `path` with the container allow-list and probes its streams.
pub(crate) fn open_input(path: &Path) -> Result<format::context::Input, MediaError> {
    let url = file_url(path)?;
    let metadata =
        std::fs::metadata(path).map_err(|err| MediaError::internal("reading the upload", err))?;
    if !metadata.is_file() {
        // A FIFO or device could block the demuxer forever.
        return Err(MediaError::internal(
            "reading the upload",
            "not a regular file",
        ));
    }
    let mut options = Dictionary::new();
    options.set("format_whitelist", FORMAT_WHITELIST);
    options.set("protocol_whitelist", "file");
    format::input_with_dictionary(&url, options)
        .map_err(|err| MediaError::unsupported(format!("not a supported video file ({err})")))
}

/// `file:` + the path, so a colon in a file name is never read as a protocol;
/// refuses paths that ffmpeg-next would panic on (non-UTF-8, interior NUL).
pub(crate) fn file_url(path: &Path) -> Result<String, MediaError> {
    match path.to_str() {
        Some(text) if !text.contains('\0') => Ok(format!("file:{text}")),
        _ => Err(MediaError::internal(
            "opening a media file",
            "path is not valid UTF-8",
        )),
    }
}

/// The streams of an input we decode.
#[derive(Debug, Clone, Copy)]
pub(crate) struct StreamChoice {
    /// The video stream (never a cover picture).
    pub(crate) video: usize,
    /// The default (else first) audio stream, if any.
    pub(crate) audio: Option<usize>,
}

/// Picks the default (else first) video and audio streams.
pub(crate) fn choose_streams(ictx: &format::context::Input) -> Result<StreamChoice, MediaError> {
    let pick = |kind: media::Type| {
        let candidates = || {
            ictx.streams().filter(move |s| {
                s.parameters().medium() == kind
                    && !s.disposition().contains(Disposition::ATTACHED_PIC)
            })
        };
        candidates()
            .find(|s| s.disposition().contains(Disposition::DEFAULT))
            .or_else(|| candidates().next())
            .map(|s| s.index())
    };
    let video = pick(media::Type::Video).ok_or_else(|| {
        MediaError::new(
            super::MediaErrorCode::NoVideoStream,
            "the file has no video stream",
        )
    })?;
    Ok(StreamChoice {
        video,
        audio: pick(media::Type::Audio),
    })
}

/// The clockwise turn that shows this stream upright (display matrix, else `rotate` tag).
pub(crate) fn stream_rotation(stream: &Stream) -> Rotation {
    for side_data in stream.side_data() {
        if side_data.kind() == codec::packet::side_data::Type::DisplayMatrix {
            return Rotation::from_display_matrix(side_data.data());
        }
    }
    stream
        .metadata()
        .get("rotate")
        .and_then(|value| value.parse::<f64>().ok())
        .map_or(Rotation::None, Rotation::from_clockwise_degrees)
}

/// Opens the decoder for a video stream; `threads` 0 means libav's auto.
/// The decoder's own `max_pixels` guard is set from the limits, so a stream
/// whose headers lie cannot make it allocate giant frames.
pub(crate) fn open_video_decoder(
    stream: &Stream,
    threads: usize,
    limits: &MediaLimits,
) -> Result<decoder::Video, MediaError> {
    let (context, codec) = decoder_context(stream, threads)?;
    let mut options = Dictionary::new();
    options.set("max_pixels", &limits.max_pixels.to_string());
    context
        .decoder()
        .open_as_with(codec, options)
        .and_then(|opened| opened.video())
        .map_err(|err| MediaError::unsupported(format!("cannot decode the video stream ({err})")))
}

/// Opens the decoder for an audio stream (single-threaded: audio is cheap).
pub(crate) fn open_audio_decoder(stream: &Stream) -> Result<decoder::Audio, MediaError> {
    let (context, codec) = decoder_context(stream, 1)?;
    context
        .decoder()
        .open_as(codec)
        .and_then(|opened| opened.audio())
        .map_err(|err| MediaError::unsupported(format!("cannot decode the audio stream ({err})")))
}

fn decoder_context(
    stream: &Stream,
    threads: usize,
) -> Result<(codec::Context, codec::codec::Codec), MediaError> {
    let parameters = stream.parameters();
    let id = parameters.id();
    let codec = decoder::find(id)
        .ok_or_else(|| MediaError::unsupported(format!("no decoder for codec {}", id.name())))?;
    let mut context = codec::Context::from_parameters(parameters)
        .map_err(|err| MediaError::unsupported(format!("unreadable stream parameters ({err})")))?;
    context.set_threading(threading::Config {
        kind: threading::Type::Frame,
        count: threads,
        ..Default::default()
    });
    let mut decoder = context.decoder();
    decoder.set_packet_time_base(stream.time_base());
    Ok((decoder.0, codec))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn playlist_demuxers_are_not_allowed() {
        for name in FORMAT_WHITELIST.split(',') {
            assert!(
                !matches!(
                    name,
                    "hls" | "applehttp" | "concat" | "image2" | "dash" | "tee"
                ),
                "{name} must not be allow-listed"
            );
        }
    }

    #[test]
    fn urls_are_always_file_urls() {
        assert_eq!(
            file_url(Path::new("/tmp/a:b.mp4")).ok().as_deref(),
            Some("file:/tmp/a:b.mp4")
        );
    }
}
