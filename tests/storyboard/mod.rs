//! The storyboard as a player reads it: WebVTT cues whose payload names a
//! rectangle of an image (`storyboard.jpg#xywh=x,y,w,h`), and that image, a
//! JPEG sprite.
#![allow(dead_code)]

use std::path::Path;

/// One cue of a storyboard.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cue {
    pub start_ms: u64,
    pub end_ms: u64,
    /// The reference before `#xywh=`, as written.
    pub image: String,
    /// `x, y, w, h` in the image.
    pub rect: (u32, u32, u32, u32),
}

/// The cues of a storyboard's WebVTT; panics on anything a player would not read.
pub fn parse_cues(vtt: &str) -> Vec<Cue> {
    let vtt = vtt.replace("\r\n", "\n");
    let mut blocks = vtt.split("\n\n");
    let header = blocks.next().unwrap();
    assert!(header.starts_with("WEBVTT"), "{vtt}");
    let mut cues = Vec::new();
    for block in blocks.filter(|b| !b.trim().is_empty()) {
        let mut lines = block.lines();
        let timing = lines.next().unwrap();
        let (start, end) = timing
            .split_once(" --> ")
            .unwrap_or_else(|| panic!("not a cue timing: {timing:?}"));
        let payload = lines
            .next()
            .unwrap_or_else(|| panic!("no payload: {block:?}"));
        assert_eq!(lines.next(), None, "one line of payload: {block:?}");
        let (image, xywh) = payload
            .split_once("#xywh=")
            .unwrap_or_else(|| panic!("no #xywh=: {payload:?}"));
        let numbers: Vec<u32> = xywh.split(',').map(|n| n.parse().unwrap()).collect();
        assert_eq!(numbers.len(), 4, "{payload}");
        cues.push(Cue {
            start_ms: timestamp_ms(start),
            end_ms: timestamp_ms(end),
            image: image.to_string(),
            rect: (numbers[0], numbers[1], numbers[2], numbers[3]),
        });
    }
    cues
}

/// `HH:MM:SS.mmm` (two or more digits of hours) in milliseconds.
fn timestamp_ms(text: &str) -> u64 {
    let (clock, ms) = text.split_once('.').unwrap();
    assert_eq!(ms.len(), 3, "{text}");
    let parts: Vec<&str> = clock.split(':').collect();
    assert_eq!(parts.len(), 3, "{text}");
    assert!(
        parts[0].len() >= 2 && parts[1].len() == 2 && parts[2].len() == 2,
        "{text}"
    );
    let [h, m, s] = [parts[0], parts[1], parts[2]].map(|p| p.parse::<u64>().unwrap());
    assert!(m < 60 && s < 60, "{text}");
    ((h * 60 + m) * 60 + s) * 1000 + ms.parse::<u64>().unwrap()
}

/// Checks that the cues run back to back from 0 to `duration_ms` (within
/// `slack_ms`), each longer than nothing, and name one image; returns it.
pub fn check_timeline(cues: &[Cue], duration_ms: u64, slack_ms: u64) -> String {
    assert!(!cues.is_empty());
    assert_eq!(cues[0].start_ms, 0, "{cues:?}");
    for pair in cues.windows(2) {
        assert_eq!(pair[0].end_ms, pair[1].start_ms, "back to back: {pair:?}");
    }
    for cue in cues {
        assert!(cue.end_ms > cue.start_ms, "{cue:?}");
        assert_eq!(cue.image, cues[0].image, "one sprite");
    }
    let end = cues.last().unwrap().end_ms;
    assert!(
        end.abs_diff(duration_ms) <= slack_ms,
        "the last cue ends at {end} ms, the video at {duration_ms} ms"
    );
    cues[0].image.clone()
}

/// Checks that every rectangle lies inside a `width`x`height` image.
pub fn check_inside(cues: &[Cue], (width, height): (u32, u32)) {
    for cue in cues {
        let (x, y, w, h) = cue.rect;
        assert!(w > 0 && h > 0, "{cue:?}");
        assert!(
            x + w <= width && y + h <= height,
            "{cue:?} in {width}x{height}"
        );
    }
}

/// Width and height of a baseline or progressive JPEG, from its frame header.
pub fn jpeg_size(bytes: &[u8]) -> (u32, u32) {
    assert_eq!(&bytes[..2], &[0xFF, 0xD8], "a JPEG starts with SOI");
    let mut at = 2;
    while at + 9 < bytes.len() {
        assert_eq!(bytes[at], 0xFF, "a marker at {at}");
        let marker = bytes[at + 1];
        let length = usize::from(u16::from_be_bytes([bytes[at + 2], bytes[at + 3]]));
        // SOF0..SOF15, but not DHT (C4), JPG (C8) or DAC (CC).
        if (0xC0..=0xCF).contains(&marker) && !matches!(marker, 0xC4 | 0xC8 | 0xCC) {
            let height = u16::from_be_bytes([bytes[at + 5], bytes[at + 6]]);
            let width = u16::from_be_bytes([bytes[at + 7], bytes[at + 8]]);
            return (u32::from(width), u32::from(height));
        }
        at += 2 + length;
    }
    panic!("no frame header in the JPEG");
}

/// The luma plane of a JPEG, decoded with libav: width, height and the rows, packed.
pub fn jpeg_luma(bytes: &[u8], dir: &Path) -> (u32, u32, Vec<u8>) {
    let path = dir.join("decoded.jpg");
    std::fs::write(&path, bytes).unwrap();
    let mut input = ffmpeg_next::format::input(&path).unwrap();
    let stream = input
        .streams()
        .best(ffmpeg_next::media::Type::Video)
        .unwrap();
    let index = stream.index();
    let mut decoder = ffmpeg_next::codec::Context::from_parameters(stream.parameters())
        .unwrap()
        .decoder()
        .video()
        .unwrap();
    let mut frame = ffmpeg_next::frame::Video::empty();
    for (stream, packet) in input.packets() {
        if stream.index() == index {
            decoder.send_packet(&packet).unwrap();
        }
    }
    decoder.send_eof().unwrap();
    decoder.receive_frame(&mut frame).unwrap();
    let (width, height, stride) = (frame.width(), frame.height(), frame.stride(0));
    let data = frame.data(0);
    let rows = (0..height as usize)
        .flat_map(|row| &data[row * stride..row * stride + width as usize])
        .copied()
        .collect();
    (width, height, rows)
}

/// Mean absolute difference of the luma of two rectangles of the same size.
pub fn tile_difference(
    luma: &(u32, u32, Vec<u8>),
    a: (u32, u32, u32, u32),
    b: (u32, u32, u32, u32),
) -> f64 {
    let (width, _, rows) = luma;
    assert_eq!((a.2, a.3), (b.2, b.3));
    let mut total = 0u64;
    for dy in 0..a.3 {
        for dx in 0..a.2 {
            let at =
                |(x, y, _, _): (u32, u32, u32, u32)| rows[((y + dy) * width + x + dx) as usize];
            total += u64::from(at(a).abs_diff(at(b)));
        }
    }
    total as f64 / f64::from(a.2 * a.3)
}

/// Mean luma of a rectangle.
pub fn tile_mean(luma: &(u32, u32, Vec<u8>), (x, y, w, h): (u32, u32, u32, u32)) -> f64 {
    let (width, _, rows) = luma;
    let mut total = 0u64;
    for row in y..y + h {
        let start = (row * width + x) as usize;
        total += rows[start..start + w as usize]
            .iter()
            .map(|&v| u64::from(v))
            .sum::<u64>();
    }
    total as f64 / f64::from(w * h)
}
