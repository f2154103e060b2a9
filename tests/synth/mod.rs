//! Test inputs made on the fly with libav (ffmpeg-next): any container,
//! codec, pixel format, size, rotation, frame timing and audio layout, a few
//! seconds long, so each real-world shape is a few lines in a test instead of
//! a committed file.
#![allow(dead_code)]

use std::path::Path;

use ffmpeg_next::codec;
use ffmpeg_next::format::{self, sample, Pixel, Sample};
use ffmpeg_next::software::scaling;
use ffmpeg_next::{encoder, frame, ChannelLayout, Dictionary, Packet, Rational};

/// One clip to write.
#[derive(Debug, Clone)]
pub struct Clip {
    /// libavformat muxer name: `mp4`, `mov`, `matroska`, `webm`, `avi`, `mpegts`.
    pub container: &'static str,
    pub video: Option<VideoTrack>,
    pub audio: Vec<AudioTrack>,
    pub seconds: f64,
    /// MP4/MOV: index at the front.
    pub faststart: bool,
}

#[derive(Debug, Clone)]
pub struct VideoTrack {
    /// Encoder name: `libx264`, `libx265`, `libvpx-vp9`, `libaom-av1`, `mpeg4`, `png`, ...
    pub codec: &'static str,
    pub pixel: Pixel,
    pub width: u32,
    pub height: u32,
    pub fps: i32,
    /// Sample (pixel) aspect ratio, for anamorphic video.
    pub sar: Option<(i32, i32)>,
    /// Clockwise display rotation, written as a display matrix (as phones do).
    pub rotate: Option<i32>,
    /// Irregular frame durations (a millisecond time base) instead of a constant rate.
    pub vfr: bool,
    /// Extra encoder options.
    pub options: Vec<(&'static str, &'static str)>,
}

#[derive(Debug, Clone)]
pub struct AudioTrack {
    /// Encoder name: `aac`, `libopus`, `ac3`, ...
    pub codec: &'static str,
    pub channels: i32,
    pub rate: i32,
    /// Mark the track as the default one.
    pub default: bool,
}

impl VideoTrack {
    /// An H.264 yuv420p track at `fps`.
    pub fn h264(width: u32, height: u32, fps: i32) -> Self {
        Self {
            codec: "libx264",
            pixel: Pixel::YUV420P,
            width,
            height,
            fps,
            sar: None,
            rotate: None,
            vfr: false,
            options: vec![("preset", "ultrafast"), ("crf", "30")],
        }
    }
}

impl AudioTrack {
    pub fn new(codec: &'static str, channels: i32, rate: i32) -> Self {
        Self {
            codec,
            channels,
            rate,
            default: false,
        }
    }
}

impl Clip {
    /// An MP4 of `video` for `seconds`, no audio.
    pub fn mp4(video: VideoTrack, seconds: f64) -> Self {
        Self {
            container: "mp4",
            video: Some(video),
            audio: Vec::new(),
            seconds,
            faststart: true,
        }
    }
}

/// Frame durations (ms) of the variable-rate pattern: 30, 15, 60 and 10 fps mixed.
const VFR_PATTERN_MS: [i64; 6] = [33, 33, 67, 17, 100, 50];

struct VideoOut {
    encoder: encoder::Video,
    stream: usize,
    time_base: Rational,
    /// Converts the yuv444p test pattern to the encoder's pixel format.
    scaler: scaling::Context,
    track: VideoTrack,
    /// Pts (encoder time base) of the next frame; None once past the end.
    next: Option<i64>,
    index: u64,
}

struct AudioOut {
    encoder: encoder::Audio,
    stream: usize,
    time_base: Rational,
    frame_size: usize,
    next: Option<i64>,
    format: Sample,
    layout: ChannelLayout,
    channels: usize,
    rate: i32,
}

/// Writes `clip` to `path`. Panics on any libav error: test inputs must be made.
pub fn write(path: &Path, clip: &Clip) {
    vidpipe::media::init();
    let mut octx = format::output_as(path, clip.container).expect("output context");
    let global = octx.format().flags().contains(format::Flags::GLOBAL_HEADER);
    let mut video = clip
        .video
        .as_ref()
        .map(|track| open_video(&mut octx, track, global));
    let mut audio: Vec<AudioOut> = clip
        .audio
        .iter()
        .map(|track| open_audio(&mut octx, track, global))
        .collect();
    let mut options = Dictionary::new();
    if clip.faststart {
        options.set("movflags", "+faststart");
    }
    octx.write_header_with(options).expect("write header");
    if let Some(v) = video.as_mut() {
        v.time_base = octx.stream(v.stream).unwrap().time_base();
    }
    for a in audio.iter_mut() {
        a.time_base = octx.stream(a.stream).unwrap().time_base();
    }

    loop {
        // The track whose next frame starts first goes next.
        let video_at = video
            .as_ref()
            .and_then(|v| v.next.map(|p| seconds(p, encoder_tb_video(&v.track))));
        let audio_at = audio
            .iter()
            .enumerate()
            .filter_map(|(i, a)| a.next.map(|p| (i, p as f64 / f64::from(a.rate))))
            .min_by(|x, y| x.1.total_cmp(&y.1));
        match (video_at, audio_at) {
            (None, None) => break,
            (Some(v), Some((_, a))) if v <= a => {
                push_video(video.as_mut().unwrap(), clip, &mut octx)
            }
            (Some(_), None) => push_video(video.as_mut().unwrap(), clip, &mut octx),
            (_, Some((i, _))) => push_audio(&mut audio[i], clip, &mut octx),
        }
    }
    if let Some(v) = video.as_mut() {
        v.encoder.send_eof().unwrap();
        drain(
            &mut v.encoder,
            v.stream,
            encoder_tb_video(&v.track),
            v.time_base,
            &mut octx,
        );
    }
    for a in audio.iter_mut() {
        a.encoder.send_eof().unwrap();
        drain(
            &mut a.encoder,
            a.stream,
            Rational(1, a.rate),
            a.time_base,
            &mut octx,
        );
    }
    octx.write_trailer().expect("write trailer");
}

fn encoder_tb_video(track: &VideoTrack) -> Rational {
    if track.vfr {
        Rational(1, 1000)
    } else {
        Rational(1, track.fps)
    }
}

fn seconds(pts: i64, tb: Rational) -> f64 {
    pts as f64 * f64::from(tb.numerator()) / f64::from(tb.denominator())
}

fn open_video(octx: &mut format::context::Output, track: &VideoTrack, global: bool) -> VideoOut {
    let codec = encoder::find_by_name(track.codec).expect("video encoder");
    let stream = octx.add_stream(codec).expect("video stream").index();
    let mut setup = codec::Context::new_with_codec(codec)
        .encoder()
        .video()
        .expect("video encoder context");
    let tb = encoder_tb_video(track);
    setup.set_width(track.width);
    setup.set_height(track.height);
    setup.set_format(track.pixel);
    setup.set_time_base(tb);
    setup.set_frame_rate(Some(Rational(track.fps, 1)));
    setup.set_gop(track.fps as u32);
    if let Some((n, d)) = track.sar {
        setup.set_aspect_ratio(Rational(n, d));
    }
    if global {
        setup.set_flags(codec::Flags::GLOBAL_HEADER);
    }
    let mut options = Dictionary::new();
    for (k, v) in &track.options {
        options.set(k, v);
    }
    let encoder = setup.open_with(options).expect("open video encoder");
    let mut ost = octx.stream_mut(stream).unwrap();
    ost.set_parameters(&encoder);
    ost.set_time_base(tb);
    ost.set_avg_frame_rate(Rational(track.fps, 1));
    if let Some(sar) = track.sar {
        // SAFETY: the stream is live in `octx`; a plain field write.
        unsafe {
            (*ost.as_mut_ptr()).sample_aspect_ratio = Rational(sar.0, sar.1).into();
        }
    }
    if let Some(degrees) = track.rotate {
        // SAFETY: the stream is live in `octx`; libavformat allocates the 36-byte
        // display matrix it returns, which we fill before the header is written.
        unsafe {
            let matrix = ffmpeg_next::ffi::av_stream_new_side_data(
                ost.as_mut_ptr(),
                ffmpeg_next::ffi::AVPacketSideDataType::AV_PKT_DATA_DISPLAYMATRIX,
                36,
            );
            assert!(!matrix.is_null());
            // The matrix holds the counter-clockwise angle.
            ffmpeg_next::ffi::av_display_rotation_set(matrix.cast(), -f64::from(degrees));
        }
    }
    let scaler = scaling::Context::get(
        Pixel::YUV444P,
        track.width,
        track.height,
        track.pixel,
        track.width,
        track.height,
        scaling::Flags::BILINEAR,
    )
    .expect("pattern scaler");
    VideoOut {
        encoder,
        stream,
        time_base: tb,
        scaler,
        track: track.clone(),
        next: Some(0),
        index: 0,
    }
}

fn open_audio(octx: &mut format::context::Output, track: &AudioTrack, global: bool) -> AudioOut {
    let codec = encoder::find_by_name(track.codec).expect("audio encoder");
    let format = codec
        .audio()
        .ok()
        .and_then(|a| a.formats())
        .and_then(|mut f| f.next())
        .unwrap_or(Sample::F32(sample::Type::Planar));
    let stream = octx.add_stream(codec).expect("audio stream").index();
    let mut setup = codec::Context::new_with_codec(codec)
        .encoder()
        .audio()
        .expect("audio encoder context");
    let layout = ChannelLayout::default(track.channels);
    setup.set_rate(track.rate);
    setup.set_channel_layout(layout);
    setup.set_channels(track.channels);
    setup.set_format(format);
    setup.set_bit_rate(96_000);
    setup.set_time_base(Rational(1, track.rate));
    if global {
        setup.set_flags(codec::Flags::GLOBAL_HEADER);
    }
    let encoder = setup.open_as(codec).expect("open audio encoder");
    let mut ost = octx.stream_mut(stream).unwrap();
    ost.set_parameters(&encoder);
    ost.set_time_base(Rational(1, track.rate));
    // SAFETY: the stream is live in `octx`; a plain field write.
    unsafe {
        (*ost.as_mut_ptr()).disposition = if track.default {
            ffmpeg_next::ffi::AV_DISPOSITION_DEFAULT
        } else {
            0
        };
    }
    let frame_size = match encoder.frame_size() {
        0 => 1024,
        n => n as usize,
    };
    AudioOut {
        encoder,
        stream,
        time_base: Rational(1, track.rate),
        frame_size,
        next: Some(0),
        format,
        layout,
        channels: track.channels as usize,
        rate: track.rate,
    }
}

fn push_video(v: &mut VideoOut, clip: &Clip, octx: &mut format::context::Output) {
    let Some(pts) = v.next else { return };
    let (w, h) = (v.track.width, v.track.height);
    let mut pattern = frame::Video::new(Pixel::YUV444P, w, h);
    let step = v.index as usize;
    for plane in 0..3 {
        let stride = pattern.stride(plane);
        let data = pattern.data_mut(plane);
        for y in 0..h as usize {
            for x in 0..w as usize {
                let inside_box =
                    (x + 3 * step) % (w as usize) < w as usize / 4 && y * 4 / h as usize == 1;
                data[y * stride + x] = match plane {
                    0 if inside_box => 235,
                    0 => (40 + (x * 150 / w as usize) + (y * 40 / h as usize)) as u8,
                    1 => (64 + (x + step) % 128) as u8,
                    _ => (64 + (y + step) % 128) as u8,
                };
            }
        }
    }
    let mut picture = frame::Video::new(v.track.pixel, w, h);
    v.scaler
        .run(&pattern, &mut picture)
        .expect("convert pattern");
    picture.set_pts(Some(pts));
    v.encoder.send_frame(&picture).expect("encode video frame");
    drain(
        &mut v.encoder,
        v.stream,
        encoder_tb_video(&v.track),
        v.time_base,
        octx,
    );
    v.index += 1;
    let next = if v.track.vfr {
        pts + VFR_PATTERN_MS[v.index as usize % VFR_PATTERN_MS.len()]
    } else {
        pts + 1
    };
    let end = (clip.seconds / seconds(1, encoder_tb_video(&v.track))).round() as i64;
    v.next = (next < end).then_some(next);
}

fn push_audio(a: &mut AudioOut, clip: &Clip, octx: &mut format::context::Output) {
    let Some(pts) = a.next else { return };
    let n = a.frame_size;
    let mut samples = frame::Audio::new(a.format, n, a.layout);
    samples.set_rate(a.rate as u32);
    let value = |c: usize, i: usize| {
        let t = (pts as f64 + i as f64) / f64::from(a.rate);
        (0.3 * (2.0 * std::f64::consts::PI * 220.0 * (c + 1) as f64 * t).sin()) as f32
    };
    match a.format {
        Sample::F32(sample::Type::Planar) => {
            for c in 0..a.channels {
                for (i, s) in samples.plane_mut::<f32>(c)[..n].iter_mut().enumerate() {
                    *s = value(c, i);
                }
            }
        }
        Sample::F32(sample::Type::Packed) => {
            let data = samples.data_mut(0);
            for i in 0..n {
                for c in 0..a.channels {
                    let at = (i * a.channels + c) * 4;
                    data[at..at + 4].copy_from_slice(&value(c, i).to_ne_bytes());
                }
            }
        }
        Sample::I16(sample::Type::Packed) => {
            let data = samples.data_mut(0);
            for i in 0..n {
                for c in 0..a.channels {
                    let at = (i * a.channels + c) * 2;
                    let s = (value(c, i) * 32767.0) as i16;
                    data[at..at + 2].copy_from_slice(&s.to_ne_bytes());
                }
            }
        }
        other => panic!("no test signal for sample format {other:?}"),
    }
    samples.set_pts(Some(pts));
    a.encoder.send_frame(&samples).expect("encode audio frame");
    drain(
        &mut a.encoder,
        a.stream,
        Rational(1, a.rate),
        a.time_base,
        octx,
    );
    let next = pts + n as i64;
    a.next = ((next as f64) < clip.seconds * f64::from(a.rate)).then_some(next);
}

fn drain(
    encoder: &mut encoder::Encoder,
    stream: usize,
    from: Rational,
    to: Rational,
    octx: &mut format::context::Output,
) {
    let mut packet = Packet::empty();
    while encoder.receive_packet(&mut packet).is_ok() {
        packet.set_stream(stream);
        packet.rescale_ts(from, to);
        packet.write_interleaved(octx).expect("write packet");
    }
}

/// A real-looking clip whose frames declare `size`x`size` pixels (headers and
/// bitstream), made cheaply: a 256x256 Motion JPEG frame in Matroska with its
/// JPEG SOF and the Matroska PixelWidth/PixelHeight patched.
pub fn huge_frame(path: &Path, size: u16) {
    let track = VideoTrack {
        codec: "mjpeg",
        pixel: Pixel::YUVJ420P,
        options: Vec::new(),
        ..VideoTrack::h264(256, 256, 10)
    };
    let clip = Clip {
        container: "matroska",
        video: Some(track),
        audio: Vec::new(),
        seconds: 0.3,
        faststart: false,
    };
    write(path, &clip);
    let mut bytes = std::fs::read(path).unwrap();
    let big = size.to_be_bytes();
    let patches = [
        // JPEG start of frame: length 17, 8 bits, height 256, width 256.
        (
            vec![0xFF, 0xC0, 0x00, 0x11, 0x08, 0x01, 0x00, 0x01, 0x00],
            5,
            2,
        ),
        // Matroska PixelWidth (0xB0) and PixelHeight (0xBA), two-byte values.
        (vec![0xB0, 0x82, 0x01, 0x00], 2, 0),
        (vec![0xBA, 0x82, 0x01, 0x00], 2, 0),
    ];
    for (pattern, at, second_at) in patches {
        let mut found = 0;
        let mut i = 0;
        while i + pattern.len() <= bytes.len() {
            if bytes[i..i + pattern.len()] == pattern[..] {
                bytes[i + at..i + at + 2].copy_from_slice(&big);
                if second_at > 0 {
                    let j = i + at + second_at;
                    bytes[j..j + 2].copy_from_slice(&big);
                }
                found += 1;
                i += pattern.len();
            } else {
                i += 1;
            }
        }
        assert!(found > 0, "pattern {pattern:x?} not found");
    }
    std::fs::write(path, bytes).unwrap();
}

/// Keeps the first `fraction` of the file at `from`, written to `to`.
pub fn truncate(from: &Path, to: &Path, fraction: f64) {
    let bytes = std::fs::read(from).unwrap();
    let keep = (bytes.len() as f64 * fraction) as usize;
    std::fs::write(to, &bytes[..keep]).unwrap();
}
