//! Passthrough: a source whose video already is what the profile makes is
//! copied into the MP4 and the top rendition, packet for packet, and only
//! the lower renditions are encoded, cut where the source has keyframes;
//! sources just outside a rule are encoded as before.

mod common;
mod synth;

use std::path::{Path, PathBuf};

use ffmpeg_next::format::Pixel;
use ffmpeg_next::media::Type;
use synth::{AudioTrack, Clip, VideoTrack};
use vidpipe::media::{probe_details, transcode, MediaLimits, OutputProfile, TranscodeOutputs};

fn profile() -> OutputProfile {
    OutputProfile {
        threads: Some(2),
        preset: "ultrafast".into(),
        ..OutputProfile::default()
    }
}

/// A phone-like clip: H.264 with B-frames and a keyframe every 2 s, closed
/// GOPs, AAC-LC stereo 48 kHz (unless `audio_rate` says otherwise), in a
/// faststart MP4.
fn camera_clip(width: u32, height: u32, seconds: f64, audio_rate: i32) -> Clip {
    Clip {
        audio: vec![AudioTrack::new("aac", 2, audio_rate)],
        ..Clip::mp4(
            VideoTrack {
                options: vec![
                    ("preset", "veryfast"),
                    ("crf", "30"),
                    ("g", "60"),
                    ("flags", "+cgop"),
                    ("x264-params", "scenecut=0"),
                ],
                ..VideoTrack::h264(width, height, 30)
            },
            seconds,
        )
    }
}

fn make(clip: &Clip, name: &str) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(name);
    synth::write(&path, clip);
    (dir, path)
}

fn run(input: &Path, profile: &OutputProfile) -> (tempfile::TempDir, TranscodeOutputs) {
    let dir = tempfile::tempdir().unwrap();
    let outputs = transcode(
        input,
        dir.path(),
        profile,
        &MediaLimits::default(),
        &mut |_| {},
    )
    .expect("transcode");
    (dir, outputs)
}

/// The packets of the first stream of `kind`, in file order: their bytes,
/// and their timestamps as seconds from the first one.
fn packets(path: &Path, kind: Type) -> (Vec<Vec<u8>>, Vec<f64>) {
    vidpipe::media::init();
    let mut ictx = ffmpeg_next::format::input(path).unwrap();
    let stream = ictx.streams().best(kind).expect("a stream of that kind");
    let (index, time_base) = (stream.index(), stream.time_base());
    let mut data = Vec::new();
    let mut times = Vec::new();
    for (stream, packet) in ictx.packets() {
        if stream.index() != index {
            continue;
        }
        data.push(packet.data().unwrap_or_default().to_vec());
        times.push(packet.pts().unwrap() as f64 * f64::from(time_base));
    }
    let first = times.iter().copied().fold(f64::MAX, f64::min);
    (data, times.into_iter().map(|t| t - first).collect())
}

fn has_b_frames(path: &Path) -> bool {
    vidpipe::media::init();
    let ictx = ffmpeg_next::format::input(path).unwrap();
    let stream = ictx.streams().best(Type::Video).unwrap();
    let context = ffmpeg_next::codec::Context::from_parameters(stream.parameters()).unwrap();
    context.decoder().video().unwrap().has_b_frames()
}

/// Each rendition's segments, as (start of the first video frame, whether it
/// is a keyframe) per segment.
fn segment_starts(dir: &Path, outputs: &TranscodeOutputs) -> Vec<Vec<(f64, bool)>> {
    let hls = outputs.hls.as_ref().expect("a ladder");
    hls.renditions
        .iter()
        .map(|rendition| {
            rendition
                .segments
                .iter()
                .map(|segment| {
                    let details = probe_details(&dir.join(&segment.file)).unwrap();
                    (details.video_start.unwrap(), details.starts_with_keyframe)
                })
                .collect()
        })
        .collect()
}

#[test]
fn a_camera_like_clip_is_copied_packet_for_packet_and_the_ladder_cuts_together() {
    let (_src, input) = make(&camera_clip(854, 480, 9.0, 48_000), "phone.mp4");
    assert!(has_b_frames(&input), "the source has B-frames");
    let (dir, outputs) = run(&input, &profile());
    assert!(outputs.video_copied && outputs.audio_copied);
    let hls = outputs.hls.as_ref().unwrap();
    let encoded: Vec<(&str, bool)> = hls
        .renditions
        .iter()
        .map(|r| (r.name.as_str(), r.encoded))
        .collect();
    assert_eq!(encoded, [("480p", false), ("360p", true)]);

    // The MP4's video and audio are the source's, byte for byte and at the same times.
    for kind in [Type::Video, Type::Audio] {
        let (source, source_times) = packets(&input, kind);
        let (copied, copied_times) = packets(&outputs.mp4, kind);
        assert_eq!(source.len(), copied.len(), "{kind:?} packets");
        assert!(source == copied, "{kind:?} packets differ");
        for (a, b) in source_times.iter().zip(&copied_times) {
            assert!((a - b).abs() < 0.001, "{kind:?} at {a} vs {b}");
        }
    }
    let boxes = {
        let bytes = std::fs::read(&outputs.mp4).unwrap();
        let mut names = Vec::new();
        let mut at = 0;
        while at + 8 <= bytes.len() {
            let size = u32::from_be_bytes(bytes[at..at + 4].try_into().unwrap()) as usize;
            names.push(String::from_utf8_lossy(&bytes[at + 4..at + 8]).into_owned());
            at += size.max(8);
        }
        names
    };
    let position = |name: &str| boxes.iter().position(|b| b == name).unwrap();
    assert!(position("moov") < position("mdat"), "{boxes:?}");
    assert!((outputs.duration - 9.0).abs() < 0.1, "{}", outputs.duration);

    // Keyframes every 2 s, a 4 s grid after a first segment ending at the
    // first keyframe from 1 s on: cuts at 2, 4 and 8 in every rendition,
    // each segment starting with a keyframe.
    let starts = segment_starts(dir.path(), &outputs);
    for rendition in &starts {
        assert!(rendition.iter().all(|(_, key)| *key), "{starts:?}");
        let times: Vec<f64> = rendition
            .iter()
            .map(|(at, _)| at - rendition[0].0)
            .collect();
        assert_eq!(times.len(), 4, "{starts:?}");
        for (at, want) in times.iter().zip([0.0, 2.0, 4.0, 8.0]) {
            assert!((at - want).abs() < 0.001, "{starts:?}");
        }
    }
    assert_eq!(
        starts[0], starts[1],
        "the renditions cut at the same frames"
    );
    let durations: Vec<Vec<String>> = hls
        .renditions
        .iter()
        .map(|r| {
            r.segments
                .iter()
                .map(|s| format!("{:.3}", s.duration))
                .collect()
        })
        .collect();
    assert_eq!(durations[0], durations[1]);
    // The copied segments play: the top rendition decodes from its playlist
    // without an error.
    let decoded = std::process::Command::new("ffmpeg")
        .args(["-v", "error", "-i"])
        .arg(dir.path().join(&hls.renditions[0].playlist))
        .args(["-f", "null", "-"])
        .output()
        .unwrap();
    let errors = String::from_utf8_lossy(&decoded.stderr);
    assert!(decoded.status.success() && errors.is_empty(), "{errors}");
}

#[test]
fn sources_just_outside_the_rules_are_encoded() {
    let base = camera_clip(640, 360, 5.0, 48_000);
    let video = base.video.clone().unwrap();
    let cases = [
        (
            "10-bit",
            VideoTrack {
                pixel: Pixel::YUV420P10LE,
                ..video.clone()
            },
        ),
        (
            "rotated",
            VideoTrack {
                rotate: Some(90),
                ..video.clone()
            },
        ),
        (
            // 3 Mb/s at constant rate, over 360p's 1.15 Mb/s cap.
            "over the bit-rate cap",
            VideoTrack {
                options: vec![
                    ("preset", "veryfast"),
                    ("g", "60"),
                    ("b", "3M"),
                    ("minrate", "3M"),
                    ("maxrate", "3M"),
                    ("bufsize", "3M"),
                    ("flags", "+cgop"),
                    ("x264-params", "nal-hrd=cbr:scenecut=0"),
                ],
                ..video.clone()
            },
        ),
        (
            // B-frames after a keyframe shown before it.
            "open GOP",
            VideoTrack {
                options: vec![
                    ("preset", "veryfast"),
                    ("crf", "30"),
                    ("g", "60"),
                    ("x264-params", "scenecut=0:open-gop=1"),
                ],
                ..video.clone()
            },
        ),
        (
            // One keyframe in 10 s: more than two 4 s segments apart.
            "sparse keyframes",
            VideoTrack {
                options: vec![
                    ("preset", "veryfast"),
                    ("crf", "30"),
                    ("g", "600"),
                    ("flags", "+cgop"),
                    ("x264-params", "scenecut=0"),
                ],
                ..video.clone()
            },
        ),
    ];
    for (name, video) in cases {
        let clip = Clip {
            video: Some(video),
            seconds: if name == "sparse keyframes" {
                10.0
            } else {
                5.0
            },
            ..base.clone()
        };
        let (_src, input) = make(&clip, "outside.mp4");
        let (_dir, outputs) = run(&input, &profile());
        assert!(!outputs.video_copied, "{name}: copied");
        assert!(
            !outputs.audio_copied,
            "{name}: audio copied without the video"
        );
        let top = &outputs.hls.as_ref().unwrap().renditions[0];
        assert!(top.encoded, "{name}");
        let details = probe_details(&outputs.mp4).unwrap();
        assert_eq!(details.pixel_format, "yuv420p", "{name}");
    }
}

#[test]
fn passthrough_can_be_turned_off_and_copies_into_an_mp4_alone() {
    let (_src, input) = make(&camera_clip(640, 360, 6.0, 48_000), "phone.mp4");
    let off = OutputProfile {
        passthrough: false,
        ..profile()
    };
    let (_dir, outputs) = run(&input, &off);
    assert!(!outputs.video_copied && !outputs.audio_copied);
    assert!(outputs.hls.unwrap().renditions[0].encoded);

    // MP4 only: nothing is encoded, only keyframes are decoded (poster and
    // storyboard), and the duration is still the whole clip's.
    let mp4_only = OutputProfile {
        hls: false,
        ..profile()
    };
    let (_dir, outputs) = run(&input, &mp4_only);
    assert!(outputs.video_copied && outputs.audio_copied);
    assert!((outputs.duration - 6.0).abs() < 0.1, "{}", outputs.duration);
    assert_eq!(
        packets(&input, Type::Video).0,
        packets(&outputs.mp4, Type::Video).0
    );
    assert!(outputs.poster.exists() && outputs.storyboard.vtt.exists());
    // A tile per second from the keyframes (every 2 s), the last cue to the end.
    let cues = std::fs::read_to_string(&outputs.storyboard.vtt).unwrap();
    assert!(cues.matches("-->").count() >= 3, "{cues}");
    assert!(cues.contains("--> 00:00:06."), "{cues}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_record_tells_a_copied_rendition_and_its_mp4_is_the_source_video() {
    let dir = tempfile::tempdir().unwrap();
    let key = common::create_key(dir.path(), "phone");
    let t = common::TestServer::start(common::test_config(dir.path())).await;
    let input = dir.path().join("phone.mp4");
    synth::write(&input, &camera_clip(854, 480, 5.0, 48_000));
    let form = common::video_form(std::fs::read(&input).unwrap(), "phone.mp4", "root");
    let response = t.post_form(&key, form).await;
    assert_eq!(response.status(), 202);
    let body: serde_json::Value = response.json().await.unwrap();
    let id = body["data"]["id"].as_str().unwrap();
    let record = common::wait_terminal(&t.client, &t.base, &key, id).await;
    assert_eq!(record["status"], 6, "{record}");
    let encoded: Vec<(&str, bool)> = record["renditions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| (r["name"].as_str().unwrap(), r["encoded"].as_bool().unwrap()))
        .collect();
    assert_eq!(encoded, [("480p", false), ("360p", true)]);
    let mp4_url = record["playback"]["mp4_url"].as_str().unwrap();
    let (code, _, bytes) = common::fetch_media(&t.client, mp4_url).await;
    assert_eq!(code, 200);
    let served = dir.path().join("served.mp4");
    std::fs::write(&served, &bytes).unwrap();
    assert!(packets(&input, Type::Video).0 == packets(&served, Type::Video).0);
}

#[test]
fn audio_at_another_rate_is_encoded_beside_the_copied_video() {
    let (_src, input) = make(&camera_clip(640, 360, 4.0, 44_100), "phone.mp4");
    let (_dir, outputs) = run(&input, &profile());
    assert!(outputs.video_copied);
    assert!(!outputs.audio_copied);
    let details = probe_details(&outputs.mp4).unwrap();
    assert_eq!(details.audio_sample_rate, Some(48_000));
    assert_eq!(details.audio_channels, Some(2));
}
