//! JPEG files (the poster, the storyboard's sprite): one yuv420p picture in,
//! scaled to the size asked for and expanded to full range, out through
//! libavcodec's mjpeg.

use std::path::Path;

use ffmpeg_next::codec::{self, Id};
use ffmpeg_next::format::Pixel;
use ffmpeg_next::util::error::EAGAIN;
use ffmpeg_next::{color, encoder, frame, Error, Packet};

use super::error::{internal, MediaError};
use super::scale::scale;

/// JPEG quantiser scale (2 best .. 31 worst), as `ffmpeg -q:v`.
const JPEG_QSCALE: i32 = 3;
/// libavcodec's FF_QP2LAMBDA: lambda per quantiser step.
const QP2LAMBDA: i32 = 118;

/// Encodes `picture` (any size, limited-range yuv420p) as a `width`x`height` JPEG at `path`.
pub(crate) fn write_jpeg(
    picture: &frame::Video,
    (width, height): (u32, u32),
    path: &Path,
) -> Result<(), MediaError> {
    // Built for this call: scaling contexts are not Send and live on the calling thread.
    let mut full_range = scale(&mut None, (width, height), picture)?;
    // JPEG is full range. Expanded here rather than by libswscale, which
    // leaves the range alone when it only copies (the size is already right),
    // and warns on every picture when asked through the deprecated yuvj420p.
    let (luma, chroma) = range_tables();
    for (plane, table) in [(0, &luma), (1, &chroma), (2, &chroma)] {
        for value in full_range.data_mut(plane) {
            *value = table[usize::from(*value)];
        }
    }
    full_range.set_color_range(color::Range::JPEG);
    full_range.set_pts(Some(0));
    // SAFETY: `full_range` owns a valid AVFrame; `quality` is a plain int field
    // the mjpeg encoder reads as the frame's lambda when QSCALE is set.
    unsafe {
        (*full_range.as_mut_ptr()).quality = JPEG_QSCALE * QP2LAMBDA;
    }

    let codec = encoder::find(Id::MJPEG)
        .ok_or_else(|| MediaError::internal("opening the JPEG encoder", "mjpeg missing"))?;
    let mut setup = codec::Context::new_with_codec(codec)
        .encoder()
        .video()
        .map_err(internal("setting up the JPEG encoder"))?;
    setup.set_width(width);
    setup.set_height(height);
    setup.set_format(Pixel::YUV420P);
    setup.set_color_range(color::Range::JPEG);
    setup.set_time_base((1, 25));
    setup.set_flags(codec::Flags::QSCALE);
    setup.set_global_quality(JPEG_QSCALE * QP2LAMBDA);
    let mut jpeg_encoder = setup
        .open_as(codec)
        .map_err(internal("opening the JPEG encoder"))?;
    jpeg_encoder
        .send_frame(&full_range)
        .map_err(internal("encoding a JPEG"))?;
    jpeg_encoder
        .send_eof()
        .map_err(internal("flushing the JPEG encoder"))?;

    let mut bytes = Vec::new();
    let mut packet = Packet::empty();
    loop {
        match jpeg_encoder.receive_packet(&mut packet) {
            Ok(()) => bytes.extend_from_slice(packet.data().unwrap_or_default()),
            Err(Error::Eof) | Err(Error::Other { errno: EAGAIN }) => break,
            Err(err) => return Err(MediaError::internal("encoding a JPEG", err)),
        }
    }
    if bytes.is_empty() {
        return Err(MediaError::internal("encoding a JPEG", "no JPEG data"));
    }
    let name = path
        .file_name()
        .map_or_else(String::new, |n| n.to_string_lossy().into_owned());
    std::fs::write(path, bytes).map_err(|err| MediaError::internal(&format!("writing {name}"), err))
}

/// Limited (studio, BT.601) to full range, per sample: luma 16..=235 to
/// 0..=255, chroma 16..=240 around 128 to 0..=255 around 128.
fn range_tables() -> ([u8; 256], [u8; 256]) {
    let table = |offset: f64, span: f64, centre: f64| {
        let mut table = [0u8; 256];
        for (value, out) in table.iter_mut().enumerate() {
            let expanded = (value as f64 - offset) * 255.0 / span + centre;
            // In range after the clamp.
            *out = expanded.round().clamp(0.0, 255.0) as u8;
        }
        table
    };
    (table(16.0, 219.0, 0.0), table(128.0, 224.0, 128.0))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The first luma sample of the JPEG at `path`, decoded by libav.
    fn first_luma(path: &Path) -> u8 {
        let mut input = ffmpeg_next::format::input(&path).unwrap();
        let stream = input
            .streams()
            .best(ffmpeg_next::media::Type::Video)
            .unwrap();
        let mut decoder = codec::Context::from_parameters(stream.parameters())
            .unwrap()
            .decoder()
            .video()
            .unwrap();
        for (_, packet) in input.packets() {
            decoder.send_packet(&packet).unwrap();
        }
        decoder.send_eof().unwrap();
        let mut picture = frame::Video::empty();
        decoder.receive_frame(&mut picture).unwrap();
        picture.data(0)[0]
    }

    #[test]
    fn limited_range_black_and_white_become_full_range_at_any_size() {
        crate::media::init();
        let dir = tempfile::tempdir().unwrap();
        for (luma, expected) in [(16u8, 0u8), (235, 255)] {
            let mut picture = frame::Video::new(Pixel::YUV420P, 64, 48);
            picture.data_mut(0).fill(luma);
            picture.data_mut(1).fill(128);
            picture.data_mut(2).fill(128);
            for size in [(32, 24), (64, 48)] {
                let path = dir.path().join("x.jpg");
                write_jpeg(&picture, size, &path).unwrap();
                let decoded = first_luma(&path);
                assert!(
                    decoded.abs_diff(expected) <= 2,
                    "{luma} at {size:?} decoded as {decoded}"
                );
            }
        }
    }
}
