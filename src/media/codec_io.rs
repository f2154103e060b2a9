//! The libav calls both stages make the same way: feeding decoders, pulling
//! frames and packets, and telling "nothing yet" (EAGAIN, EOF) from errors.

use ffmpeg_next::util::error::EAGAIN;
use ffmpeg_next::{decoder, encoder, Error, Frame, Packet};

use super::error::MediaError;

/// A source packet to copy: its timestamps moved back by `origin` (the
/// output's 0, in its own time base), its position in the file dropped;
/// `end` moves to where it ends (a packet without a duration lasting
/// `default_duration`).
pub(crate) fn restamped(
    packet: &Packet,
    origin: i64,
    default_duration: i64,
    end: &mut Option<i64>,
) -> Packet {
    let mut copied = packet.clone();
    copied.set_pts(packet.pts().map(|ts| ts - origin));
    copied.set_dts(packet.dts().map(|ts| ts - origin));
    copied.set_position(-1);
    if let Some(pts) = copied.pts() {
        let duration = match packet.duration() {
            d if d > 0 => d,
            _ => default_duration,
        };
        *end = Some(end.map_or(pts + duration, |e| e.max(pts + duration)));
    }
    copied
}

/// Feeds one packet. An `Err` is a decode error on this packet: count it and
/// go on (salvage). The stages drain after every packet, so EAGAIN cannot
/// happen; were it to, the packet would be counted as lost the same way.
pub(crate) fn send_packet(decoder: &mut decoder::Opened, packet: &Packet) -> Result<(), Error> {
    match decoder.send_packet(packet) {
        Ok(()) | Err(Error::Eof) => Ok(()),
        Err(err) => Err(err),
    }
}

/// The outcome of one `receive_frame` call.
pub(crate) enum Decoded {
    /// `frame` holds a new frame.
    Frame,
    /// Nothing more until the next packet (or ever, after EOF).
    Drained,
    /// A frame failed to decode; later packets may still decode.
    Failed(Error),
}

pub(crate) fn receive_frame(decoder: &mut decoder::Opened, frame: &mut Frame) -> Decoded {
    match decoder.receive_frame(frame) {
        Ok(()) => Decoded::Frame,
        Err(Error::Eof) | Err(Error::Other { errno: EAGAIN }) => Decoded::Drained,
        Err(err) => Decoded::Failed(err),
    }
}

/// Hands every packet the encoder has ready to `write`, in the encoder's time base.
pub(crate) fn drain_encoder(
    encoder: &mut encoder::Encoder,
    mut write: impl FnMut(&Packet) -> Result<(), MediaError>,
) -> Result<(), MediaError> {
    let mut encoded = Packet::empty();
    loop {
        match encoder.receive_packet(&mut encoded) {
            Ok(()) => write(&encoded)?,
            Err(Error::Eof) | Err(Error::Other { errno: EAGAIN }) => return Ok(()),
            Err(err) => return Err(MediaError::internal("encoding", err)),
        }
    }
}
