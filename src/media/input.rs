//! Opening an upload safely and finding the streams we transcode.
//!
//! Every input goes through [`open_input`]: a container allow-list and the
//! `file` protocol only, so a "video" that is really an HLS or concat playlist
//! (or an image sequence) is refused before any demuxer can open the files it
//! lists. Frame sizes are checked on the container headers before any frame is
//! decoded, and every decoder (the probing ones included) is held to
//! `MediaLimits::max_pixels`, so a frame claiming 16000x16000 is never allocated.
//! A file that is clearly an allowed container yet does not open (an MP4 cut
//! off before its index) is `corrupt_media`; anything else is `unsupported_media`.

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

/// Opens `path` with the container allow-list, refuses frame sizes over `limits`
/// that the container headers already show, then probes the streams with
/// decoders held to `limits.max_pixels` (probing decodes a few frames, and a
/// frame's own header may claim any size).
pub(crate) fn open_input(
    path: &Path,
    limits: &MediaLimits,
) -> Result<format::context::Input, MediaError> {
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
    let unreadable = |err: ffmpeg_next::Error| match allowed_container_by_content(path) {
        // An MP4 cut off before its index (a phone recording interrupted) and the like.
        Some(name) => MediaError::corrupt(format!(
            "the file is a {name} container but cannot be read ({err}); it may be truncated"
        )),
        None => MediaError::unsupported(format!("not a supported video file ({err})")),
    };
    let mut input = open_container(&url, options).map_err(unreadable)?;
    for stream in input.streams() {
        let is_picture = stream.parameters().medium() == media::Type::Video
            && !stream.disposition().contains(Disposition::ATTACHED_PIC);
        let (width, height) = coded_size(&stream);
        if is_picture && width > 0 && height > 0 {
            limits.check_frame_size(width, height)?;
        }
    }
    find_stream_info(&mut input, limits).map_err(unreadable)?;
    Ok(input)
}

/// `avformat_open_input` alone: the container header, no decoding yet.
fn open_container(
    url: &str,
    options: Dictionary,
) -> Result<format::context::Input, ffmpeg_next::Error> {
    let url = std::ffi::CString::new(url).map_err(|_| ffmpeg_next::Error::InvalidData)?;
    // SAFETY: `url` is a valid C string; `opts` is an owned dictionary whose
    // leftovers we take back and free; on success libavformat hands us a context
    // that `Input::wrap` owns (and closes on drop); on failure it frees it itself.
    unsafe {
        let mut context = std::ptr::null_mut();
        let mut opts = options.disown();
        let result = ffmpeg_next::ffi::avformat_open_input(
            &mut context,
            url.as_ptr(),
            std::ptr::null(),
            &mut opts,
        );
        Dictionary::own(opts);
        if result < 0 {
            return Err(ffmpeg_next::Error::from(result));
        }
        Ok(format::context::Input::wrap(context))
    }
}

/// `avformat_find_stream_info` with every probing decoder's `max_pixels` set from `limits`.
fn find_stream_info(
    input: &mut format::context::Input,
    limits: &MediaLimits,
) -> Result<(), ffmpeg_next::Error> {
    let max_pixels = limits.max_pixels.min(i32::MAX as u64).to_string();
    let max_pixels =
        std::ffi::CString::new(max_pixels).map_err(|_| ffmpeg_next::Error::InvalidData)?;
    // SAFETY: the context is open and owned by `input`; libavformat reads one
    // options dictionary per stream present now, each of which we free afterwards.
    unsafe {
        let context = input.as_mut_ptr();
        let streams = (*context).nb_streams as usize;
        let mut per_stream = vec![std::ptr::null_mut(); streams];
        for options in per_stream.iter_mut() {
            ffmpeg_next::ffi::av_dict_set(options, c"max_pixels".as_ptr(), max_pixels.as_ptr(), 0);
        }
        let options = if streams == 0 {
            std::ptr::null_mut()
        } else {
            per_stream.as_mut_ptr()
        };
        let result = ffmpeg_next::ffi::avformat_find_stream_info(context, options);
        for options in per_stream.iter_mut() {
            ffmpeg_next::ffi::av_dict_free(options);
        }
        if result < 0 {
            return Err(ffmpeg_next::Error::from(result));
        }
    }
    Ok(())
}

/// Bytes of the file's start that content sniffing looks at.
const SNIFF_BYTES: usize = 64 * 1024;

/// The allow-listed container the first bytes of `path` clearly are (a score above
/// what a file extension alone gives), if any. Reads only; opens no demuxer.
fn allowed_container_by_content(path: &Path) -> Option<String> {
    use std::io::Read;
    let padding = ffmpeg_next::ffi::AVPROBE_PADDING_SIZE as usize;
    let mut head = vec![0u8; SNIFF_BYTES + padding];
    let mut file = std::fs::File::open(path).ok()?;
    let mut filled = 0;
    while filled < SNIFF_BYTES {
        match file.read(&mut head[filled..SNIFF_BYTES]) {
            Ok(0) | Err(_) => break,
            Ok(n) => filled += n,
        }
    }
    let probe = ffmpeg_next::ffi::AVProbeData {
        filename: c"".as_ptr(),
        buf: head.as_mut_ptr(),
        buf_size: i32::try_from(filled).ok()?,
        mime_type: std::ptr::null(),
    };
    let mut score = ffmpeg_next::ffi::AVPROBE_SCORE_EXTENSION;
    // SAFETY: `probe.buf` points to `filled` bytes followed by AVPROBE_PADDING_SIZE
    // zeroes, all owned by `head`, which outlives the call; the returned format is
    // a static libavformat table entry (or null).
    let name = unsafe {
        let format = ffmpeg_next::ffi::av_probe_input_format2(&probe, 1, &mut score);
        if format.is_null() || (*format).name.is_null() {
            return None;
        }
        std::ffi::CStr::from_ptr((*format).name)
            .to_string_lossy()
            .into_owned()
    };
    let allowed = name
        .split(',')
        .any(|n| FORMAT_WHITELIST.split(',').any(|w| w == n));
    allowed.then_some(name)
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

/// Coded width and height from the stream's header, read before any decoder is opened.
pub(crate) fn coded_size(stream: &Stream) -> (u32, u32) {
    let parameters = stream.parameters();
    // SAFETY: `parameters` wraps the stream's live AVCodecParameters, owned by
    // the open input context `stream` borrows; we only read two ints.
    let (width, height) = unsafe { ((*parameters.as_ptr()).width, (*parameters.as_ptr()).height) };
    (
        u32::try_from(width).unwrap_or(0),
        u32::try_from(height).unwrap_or(0),
    )
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
