//! Real-world input shapes through the real pipeline (`media::transcode`), each
//! made on the fly by `synth` with libav, and every output checked with the
//! project's own probing: codec, pixel format, even size, orientation,
//! duration, audio layout, and the HLS ladder (playlists, aligned keyframe
//! segments). Clips are tiny and short so the file runs in well under a minute.

mod synth;

use std::path::{Path, PathBuf};

use ffmpeg_next::format::Pixel;
use synth::{AudioTrack, Clip, VideoTrack};
use vidpipe::media::{
    probe, probe_details, transcode, MediaError, MediaErrorCode, MediaLimits, OutputProfile,
    SourceInfo, TranscodeOutputs,
};

fn profile() -> OutputProfile {
    OutputProfile {
        threads: Some(2),
        preset: "ultrafast".into(),
        ..OutputProfile::default()
    }
}

/// Makes `clip` in a fresh temp dir as `name`.
fn make(clip: &Clip, name: &str) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(name);
    synth::write(&path, clip);
    (dir, path)
}

fn run(
    input: &Path,
    profile: &OutputProfile,
) -> (tempfile::TempDir, Result<TranscodeOutputs, MediaError>) {
    let dir = tempfile::tempdir().unwrap();
    let result = transcode(
        input,
        dir.path(),
        profile,
        &MediaLimits::default(),
        &mut |_| {},
    );
    (dir, result)
}

fn code<T: std::fmt::Debug>(result: Result<T, MediaError>) -> MediaErrorCode {
    match result {
        Ok(value) => panic!("expected an error, got {value:?}"),
        Err(err) => err.code,
    }
}

/// Transcodes `input` and checks the MP4 (expected displayed `size`, AAC stereo
/// 48 kHz if `audio`, else none) and the ladder; returns the source, the outputs
/// and their folder.
fn transcode_and_check(
    input: &Path,
    (size, audio): ((u32, u32), bool),
) -> (SourceInfo, TranscodeOutputs, tempfile::TempDir) {
    let source = probe(input, &MediaLimits::default()).expect("probe source");
    let (dir, result) = run(input, &profile());
    let outputs = result.expect("transcode");
    let out = probe(&outputs.mp4, &MediaLimits::default()).expect("probe mp4");
    let details = probe_details(&outputs.mp4).expect("mp4 details");
    assert_eq!(out.video_codec, "h264");
    assert_eq!(details.pixel_format, "yuv420p");
    assert_eq!((out.width, out.height), size);
    assert!(out.width % 2 == 0 && out.height % 2 == 0);
    if audio {
        assert_eq!(out.audio_codec.as_deref(), Some("aac"));
        assert_eq!(details.audio_channels, Some(2));
        assert_eq!(details.audio_sample_rate, Some(48_000));
    } else {
        assert_eq!(out.audio_codec, None);
    }
    let (a, b) = (out.duration.unwrap(), source.duration.unwrap());
    assert!((a - b).abs() <= 0.3, "duration {a} vs source {b}");
    check_ladder(dir.path(), &outputs, audio);
    (source, outputs, dir)
}

/// The ladder on disk: the master playlist names every rendition with
/// BANDWIDTH, RESOLUTION and CODECS; each media playlist lists segments that
/// exist, start with a keyframe, have the rendition's size, last ~4 s (the last
/// one less), and are cut at the same instants in every rendition.
fn check_ladder(dir: &Path, outputs: &TranscodeOutputs, audio: bool) {
    let hls = outputs.hls.as_ref().expect("a ladder");
    assert_eq!(hls.master, "hls/master.m3u8");
    let master = std::fs::read_to_string(dir.join(&hls.master)).unwrap();
    let mut lines = master.lines();
    assert_eq!(lines.next(), Some("#EXTM3U"));
    let variants: Vec<(String, String)> = master
        .lines()
        .zip(master.lines().skip(1))
        .filter(|(info, _)| info.starts_with("#EXT-X-STREAM-INF:"))
        .map(|(info, uri)| (info.to_string(), uri.to_string()))
        .collect();
    assert_eq!(variants.len(), hls.renditions.len(), "{master}");
    let top = &hls.renditions[0];
    assert_eq!((top.width, top.height), (outputs.width, outputs.height));
    let mut cuts: Option<Vec<String>> = None;
    for ((info, uri), rendition) in variants.iter().zip(&hls.renditions) {
        let bandwidth: u64 = attribute(info, "BANDWIDTH").parse().unwrap();
        assert!(bandwidth > 0);
        assert_eq!(bandwidth, rendition.bandwidth);
        assert_eq!(
            attribute(info, "RESOLUTION"),
            format!("{}x{}", rendition.width, rendition.height)
        );
        let codecs = attribute(info, "CODECS");
        assert!(
            codecs.starts_with("\"avc1.") && codecs.len() >= 13,
            "{codecs}"
        );
        assert_eq!(codecs.contains("mp4a.40.2"), audio, "{codecs}");
        assert!(!uri.starts_with('/') && !uri.contains(".."), "{uri}");
        assert_eq!(format!("hls/{uri}"), rendition.playlist);
        let short = rendition.width.min(rendition.height);
        assert_eq!(rendition.name, format!("{short}p"));

        let playlist_path = dir.join(&rendition.playlist);
        let playlist = std::fs::read_to_string(&playlist_path).unwrap();
        assert!(playlist.starts_with("#EXTM3U\n"), "{playlist}");
        assert!(
            playlist.trim_end().ends_with("#EXT-X-ENDLIST"),
            "{playlist}"
        );
        let target: f64 = attribute(&playlist, "#EXT-X-TARGETDURATION")
            .parse()
            .unwrap();
        let extinf: Vec<String> = playlist
            .lines()
            .filter_map(|l| l.strip_prefix("#EXTINF:"))
            .map(str::to_string)
            .collect();
        let names: Vec<&str> = playlist
            .lines()
            .filter(|l| !l.starts_with('#') && !l.is_empty())
            .collect();
        assert_eq!(names.len(), extinf.len());
        assert_eq!(names.len(), rendition.segments.len());
        let durations: Vec<f64> = extinf
            .iter()
            .map(|d| d.trim_end_matches(',').parse().unwrap())
            .collect();
        for (index, (name, duration)) in names.iter().zip(&durations).enumerate() {
            assert!(
                !name.contains('/'),
                "segment URI {name} is not relative to its playlist"
            );
            assert!(duration.round() <= target);
            // A short first segment (1 s), the rest of the first 4 s, then 4
            // s each; a copied video is cut at its own keyframes instead.
            let expected = match index {
                0 => 0.9..=1.5,
                1 => 2.9..=6.0,
                _ => 3.9..=6.0,
            };
            if index + 1 < names.len() && !outputs.video_copied {
                assert!(expected.contains(duration), "segment {index}: {duration} s");
            }
            let segment = playlist_path.parent().unwrap().join(name);
            let details = probe_details(&segment).expect("segment details");
            assert!(
                details.starts_with_keyframe,
                "{segment:?} does not start with a keyframe"
            );
            let info = probe(&segment, &MediaLimits::default()).expect("probe segment");
            assert_eq!(
                (info.width, info.height),
                (rendition.width, rendition.height)
            );
            assert_eq!(info.video_codec, "h264");
            assert_eq!(info.audio_codec.is_some(), audio);
        }
        let total: f64 = durations.iter().sum();
        assert!(
            (total - outputs.duration).abs() <= 0.3,
            "{total} vs {}",
            outputs.duration
        );
        match &cuts {
            None => cuts = Some(extinf),
            Some(first) => assert_eq!(first, &extinf, "renditions are cut at different instants"),
        }
    }
}

/// `NAME=value` (up to the next comma outside quotes) or `#TAG:value` in playlist text.
fn attribute(text: &str, name: &str) -> String {
    if name.starts_with('#') {
        let line = text
            .lines()
            .find(|l| l.starts_with(name))
            .unwrap_or_else(|| panic!("{name} missing"));
        return line[name.len() + 1..].to_string();
    }
    let at = text
        .find(&format!("{name}="))
        .unwrap_or_else(|| panic!("{name} missing in {text}"))
        + name.len()
        + 1;
    let rest = &text[at..];
    let end = match rest.strip_prefix('"') {
        Some(quoted) => quoted.find('"').map_or(rest.len(), |i| i + 2),
        None => rest.find([',', '\n']).unwrap_or(rest.len()),
    };
    rest[..end].to_string()
}

fn stereo_aac() -> AudioTrack {
    AudioTrack::new("aac", 2, 44_100)
}

#[test]
fn rotated_phone_video_gives_a_portrait_ladder() {
    let clip = Clip {
        audio: vec![stereo_aac()],
        ..Clip::mp4(
            VideoTrack {
                rotate: Some(90),
                ..VideoTrack::h264(1280, 720, 10)
            },
            9.0,
        )
    };
    let (_src, input) = make(&clip, "phone.mp4");
    let (source, outputs, _out) = transcode_and_check(&input, ((720, 1280), true));
    assert_eq!((source.width, source.height), (720, 1280));
    let ladder: Vec<(String, u32, u32)> = outputs
        .hls
        .unwrap()
        .renditions
        .iter()
        .map(|r| (r.name.clone(), r.width, r.height))
        .collect();
    assert_eq!(
        ladder,
        [("720p", 720, 1280), ("480p", 480, 854), ("360p", 360, 640)].map(|(n, w, h)| (
            n.to_string(),
            w,
            h
        ))
    );
}

#[test]
fn odd_sized_vp9_with_opus_in_webm() {
    let clip = Clip {
        container: "webm",
        video: Some(VideoTrack {
            codec: "libvpx-vp9",
            options: vec![("deadline", "realtime"), ("cpu-used", "8")],
            ..VideoTrack::h264(321, 241, 10)
        }),
        audio: vec![AudioTrack::new("libopus", 2, 48_000)],
        seconds: 2.0,
        faststart: false,
    };
    let (_src, input) = make(&clip, "odd.webm");
    let (source, _, _out) = transcode_and_check(&input, ((320, 240), true));
    assert_eq!(
        (source.video_codec.as_str(), source.audio_codec.as_deref()),
        ("vp9", Some("opus"))
    );
    assert_eq!((source.width, source.height), (321, 241));
}

#[test]
fn ten_bit_hevc_with_ac3_five_one() {
    let clip = Clip {
        container: "matroska",
        video: Some(VideoTrack {
            codec: "libx265",
            pixel: Pixel::YUV420P10LE,
            options: vec![("preset", "ultrafast"), ("x265-params", "log-level=error")],
            ..VideoTrack::h264(320, 240, 10)
        }),
        audio: vec![AudioTrack::new("ac3", 6, 48_000)],
        seconds: 2.0,
        faststart: false,
    };
    let (_src, input) = make(&clip, "hevc10.mkv");
    assert_eq!(
        vidpipe::media::probe_pixel_format(&input).unwrap(),
        "yuv420p10le"
    );
    let (source, _, _out) = transcode_and_check(&input, ((320, 240), true));
    assert_eq!(
        (source.video_codec.as_str(), source.audio_codec.as_deref()),
        ("hevc", Some("ac3"))
    );
    assert_eq!(probe_details(&input).unwrap().audio_channels, Some(6));
}

#[test]
fn h264_four_two_two_four_four_four_and_rgb_png() {
    for (pixel, name) in [(Pixel::YUV422P, "yuv422p"), (Pixel::YUV444P, "yuv444p")] {
        let clip = Clip::mp4(
            VideoTrack {
                pixel,
                ..VideoTrack::h264(320, 240, 10)
            },
            1.5,
        );
        let (_src, input) = make(&clip, "chroma.mp4");
        assert_eq!(vidpipe::media::probe_pixel_format(&input).unwrap(), name);
        transcode_and_check(&input, ((320, 240), false));
    }

    // A screen recorder's lossless RGB in QuickTime.
    let clip = Clip {
        container: "mov",
        ..Clip::mp4(
            VideoTrack {
                codec: "png",
                pixel: Pixel::RGB24,
                options: Vec::new(),
                ..VideoTrack::h264(160, 120, 5)
            },
            1.0,
        )
    };
    let (_src, input) = make(&clip, "screen.mov");
    assert_eq!(vidpipe::media::probe_pixel_format(&input).unwrap(), "rgb24");
    transcode_and_check(&input, ((160, 120), false));
}

#[test]
fn variable_frame_rate_keeps_its_timing() {
    let clip = Clip {
        container: "matroska",
        audio: vec![stereo_aac()],
        ..Clip::mp4(
            VideoTrack {
                vfr: true,
                ..VideoTrack::h264(320, 240, 30)
            },
            9.0,
        )
    };
    let (_src, input) = make(&clip, "vfr.mkv");
    let (_, outputs, _out) = transcode_and_check(&input, ((320, 240), true));
    let source = probe_details(&input).unwrap();
    let out = probe_details(&outputs.mp4).unwrap();
    assert_eq!(
        out.video_frames, source.video_frames,
        "frames dropped or duplicated"
    );
    let (a, b) = (
        out.video_end.unwrap(),
        source.video_end.unwrap() - source.video_start.unwrap(),
    );
    assert!(
        (a - b).abs() <= 0.3,
        "video ends at {a} s, source lasts {b} s"
    );
}

#[test]
fn anamorphic_pixels_are_made_square() {
    let clip = Clip::mp4(
        VideoTrack {
            sar: Some((4, 3)),
            ..VideoTrack::h264(480, 360, 10)
        },
        1.0,
    );
    let (_src, input) = make(&clip, "anamorphic.mp4");
    let (source, _, _out) = transcode_and_check(&input, ((640, 360), false));
    assert_eq!((source.width, source.height), (640, 360));
}

#[test]
fn mpeg4_in_avi_and_av1_in_mp4() {
    let clip = Clip {
        container: "avi",
        video: Some(VideoTrack {
            codec: "mpeg4",
            options: Vec::new(),
            ..VideoTrack::h264(320, 240, 10)
        }),
        audio: vec![AudioTrack::new("ac3", 6, 48_000)],
        seconds: 1.5,
        faststart: false,
    };
    let (_src, input) = make(&clip, "old.avi");
    let (source, _, _out) = transcode_and_check(&input, ((320, 240), true));
    assert_eq!(source.video_codec, "mpeg4");

    let clip = Clip::mp4(
        VideoTrack {
            codec: "libaom-av1",
            options: vec![("cpu-used", "8"), ("usage", "realtime")],
            ..VideoTrack::h264(160, 96, 10)
        },
        1.0,
    );
    let (_src, input) = make(&clip, "av1.mp4");
    let (source, _, _out) = transcode_and_check(&input, ((160, 96), false));
    assert_eq!(source.video_codec, "av1");
}

#[test]
fn of_two_audio_tracks_the_default_one_else_the_first() {
    let two_tracks = |second_is_default: bool| Clip {
        container: "matroska",
        audio: vec![
            AudioTrack::new("aac", 1, 44_100),
            AudioTrack {
                default: second_is_default,
                ..AudioTrack::new("ac3", 6, 48_000)
            },
        ],
        ..Clip::mp4(VideoTrack::h264(320, 240, 10), 1.5)
    };
    let (_src, input) = make(&two_tracks(true), "default-second.mkv");
    let (source, _, _out) = transcode_and_check(&input, ((320, 240), true));
    assert_eq!(source.audio_codec.as_deref(), Some("ac3"));

    let (_src, input) = make(&two_tracks(false), "no-default.mkv");
    let (source, _, _out) = transcode_and_check(&input, ((320, 240), true));
    assert_eq!(source.audio_codec.as_deref(), Some("aac"));
}

#[test]
fn truncated_uploads_are_salvaged_or_corrupt() {
    let clip = Clip {
        audio: vec![stereo_aac()],
        faststart: false,
        ..Clip::mp4(VideoTrack::h264(320, 240, 10), 3.0)
    };
    // Index at the end, cut off: a phone recording interrupted.
    let (dir, input) = make(&clip, "whole.mp4");
    let cut = dir.path().join("cut.mp4");
    synth::truncate(&input, &cut, 0.6);
    let (out, result) = run(&cut, &profile());
    assert_eq!(code(result), MediaErrorCode::CorruptMedia);
    assert_eq!(
        std::fs::read_dir(out.path()).unwrap().count(),
        0,
        "left files behind"
    );

    // Matroska cut in the middle: what decodes is kept.
    let clip = Clip {
        container: "matroska",
        ..clip
    };
    let (dir, input) = make(&clip, "whole.mkv");
    let cut = dir.path().join("cut.mkv");
    synth::truncate(&input, &cut, 0.5);
    let (_out, result) = run(&cut, &profile());
    let outputs = result.expect("salvage");
    let duration = probe(&outputs.mp4, &MediaLimits::default())
        .unwrap()
        .duration
        .unwrap();
    assert!(duration > 0.5 && duration < 2.5, "{duration}");
    assert!(outputs.hls.is_some());
}

#[test]
fn hostile_inputs_are_refused_with_a_code() {
    let dir = tempfile::tempdir().unwrap();
    let sample = Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/sample.mp4");
    // A concat list naming a real video: an unguarded demuxer would read it.
    let concat = dir.path().join("concat.mp4");
    std::fs::write(
        &concat,
        format!("ffconcat version 1.0\nfile '{}'\n", sample.display()),
    )
    .unwrap();
    // An image "sequence": a PNG named .mp4.
    let (_png_dir, png) = make(
        &Clip {
            container: "image2",
            ..Clip::mp4(
                VideoTrack {
                    codec: "png",
                    pixel: Pixel::RGB24,
                    options: Vec::new(),
                    ..VideoTrack::h264(64, 64, 1)
                },
                1.0,
            )
        },
        "frame.png",
    );
    let image = dir.path().join("image.mp4");
    std::fs::copy(&png, &image).unwrap();
    for path in [concat, image] {
        assert_eq!(
            code(probe(&path, &MediaLimits::default())),
            MediaErrorCode::UnsupportedMedia,
            "{path:?}"
        );
        let (_out, result) = run(&path, &profile());
        assert_eq!(code(result), MediaErrorCode::UnsupportedMedia, "{path:?}");
    }

    // Frames claiming 16000x16000: refused before anything that size is allocated.
    let huge = dir.path().join("huge.mkv");
    synth::huge_frame(&huge, 16_000);
    assert_eq!(
        code(probe(&huge, &MediaLimits::default())),
        MediaErrorCode::InputTooLarge
    );
    let (out, result) = run(&huge, &profile());
    assert_eq!(code(result), MediaErrorCode::InputTooLarge);
    assert_eq!(
        std::fs::read_dir(out.path()).unwrap().count(),
        0,
        "left files behind"
    );
}

#[test]
fn the_mp4_is_the_top_rendition_and_no_hls_means_mp4_only() {
    let clip = Clip {
        audio: vec![stereo_aac()],
        ..Clip::mp4(VideoTrack::h264(854, 480, 10), 9.0)
    };
    let (_src, input) = make(&clip, "480p.mp4");
    // One thread, so the MP4-only run encodes the top rendition exactly as the ladder run does.
    let single = OutputProfile {
        threads: Some(1),
        ..profile()
    };
    let (with_dir, with_ladder) = run(&input, &single);
    let with_ladder = with_ladder.expect("ladder");
    let hls = with_ladder.hls.as_ref().unwrap();
    let names: Vec<&str> = hls.renditions.iter().map(|r| r.name.as_str()).collect();
    assert_eq!(names, ["480p", "360p"]);
    check_ladder(with_dir.path(), &with_ladder, true);

    // The MP4's video is the top variant's: same frames, same keyframes (the segment starts).
    let mp4 = probe_details(&with_ladder.mp4).unwrap();
    let top = &hls.renditions[0];
    let mut frames = 0;
    let mut starts = Vec::new();
    for segment in &top.segments {
        let details = probe_details(&with_dir.path().join(&segment.file)).unwrap();
        frames += details.video_frames;
        // Segment timestamps carry the 1.4 s MPEG-TS offset; the MP4's start at 0.
        starts.push(details.keyframes[0] - 1.4);
    }
    assert_eq!(mp4.video_frames, frames);
    for start in &starts {
        assert!(
            mp4.keyframes.iter().any(|k| (k - start).abs() < 0.01),
            "no MP4 keyframe at {start}: {:?}",
            mp4.keyframes
        );
    }

    let mp4_only = OutputProfile {
        hls: false,
        ..single
    };
    let (only_dir, only) = run(&input, &mp4_only);
    let only = only.expect("mp4 only");
    assert!(only.hls.is_none());
    assert!(!only_dir.path().join("hls").exists());
    assert_eq!(
        std::fs::read(&only.mp4).unwrap(),
        std::fs::read(&with_ladder.mp4).unwrap(),
        "the MP4 differs when the ladder is made"
    );
}
