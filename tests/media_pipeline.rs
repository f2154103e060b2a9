//! The media pipeline end to end, through `vidpipe::media`'s public API only,
//! on the clips in `fixtures/` (see fixtures/README.md for how each was made).

use std::path::{Path, PathBuf};

use vidpipe::media::{
    probe, probe_pixel_format, transcode, MediaError, MediaErrorCode, MediaLimits, OutputProfile,
    TranscodeOutputs,
};

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fixtures")
        .join(name)
}

/// The encoding pipeline: the fixtures are H.264 that passthrough would
/// copy (`tests/media_passthrough.rs` covers that).
fn profile() -> OutputProfile {
    OutputProfile {
        threads: Some(2),
        passthrough: false,
        ..OutputProfile::default()
    }
}

fn run(
    input: &Path,
    profile: &OutputProfile,
    limits: &MediaLimits,
) -> (tempfile::TempDir, Result<TranscodeOutputs, MediaError>) {
    let dir = tempfile::tempdir().expect("tempdir");
    let result = transcode(input, dir.path(), profile, limits, &mut |_| {});
    (dir, result)
}

fn error_code<T: std::fmt::Debug>(result: Result<T, MediaError>) -> MediaErrorCode {
    match result {
        Ok(value) => panic!("expected an error, got {value:?}"),
        Err(err) => err.code,
    }
}

/// The top-level MP4 boxes: (four-character type, offset, size).
fn top_level_boxes(bytes: &[u8]) -> Vec<(String, usize, usize)> {
    let mut boxes = Vec::new();
    let mut offset = 0usize;
    while offset + 8 <= bytes.len() {
        let size32 = u32::from_be_bytes(bytes[offset..offset + 4].try_into().unwrap()) as usize;
        let kind = String::from_utf8_lossy(&bytes[offset + 4..offset + 8]).into_owned();
        let size = match size32 {
            0 => bytes.len() - offset,
            1 => u64::from_be_bytes(bytes[offset + 8..offset + 16].try_into().unwrap()) as usize,
            n => n,
        };
        assert!(size >= 8, "malformed box {kind} at {offset}");
        boxes.push((kind, offset, size));
        offset += size;
    }
    boxes
}

/// (offset, size) of the first top-level box of type `kind`.
fn find_box(boxes: &[(String, usize, usize)], kind: &str) -> (usize, usize) {
    boxes
        .iter()
        .find(|(k, _, _)| k == kind)
        .map(|(_, offset, size)| (*offset, *size))
        .unwrap_or_else(|| panic!("no {kind} box in {boxes:?}"))
}

#[test]
fn sample_becomes_a_faststart_h264_aac_mp4_with_a_poster() {
    let source = probe(&fixture("sample.mp4"), &MediaLimits::default()).expect("probe source");
    assert_eq!((source.width, source.height), (320, 240));
    assert_eq!(source.video_codec, "h264");
    assert_eq!(source.audio_codec.as_deref(), Some("aac"));

    let dir = tempfile::tempdir().expect("tempdir");
    let mut reports = Vec::new();
    let outputs = transcode(
        &fixture("sample.mp4"),
        dir.path(),
        &profile(),
        &MediaLimits::default(),
        &mut |fraction| reports.push(fraction),
    )
    .expect("transcode sample.mp4");
    assert_eq!(outputs.mp4, dir.path().join("video.mp4"));
    assert_eq!(outputs.poster, dir.path().join("poster.jpg"));
    // 2 s: a storyboard tile a second, beside the poster.
    assert_eq!(outputs.storyboard.vtt, dir.path().join("storyboard.vtt"));
    assert_eq!(outputs.storyboard.image, dir.path().join("storyboard.jpg"));
    assert_eq!(outputs.storyboard.tiles, 2);
    assert_eq!(outputs.source, source);
    assert_eq!(reports.last(), Some(&1.0));
    assert!(
        reports.iter().all(|f| (0.0..=1.0).contains(f)),
        "{reports:?}"
    );

    let out = probe(&outputs.mp4, &MediaLimits::default()).expect("probe output");
    assert_eq!(out.video_codec, "h264");
    assert_eq!(out.audio_codec.as_deref(), Some("aac"));
    assert_eq!((out.width, out.height), (320, 240));
    assert_eq!((outputs.width, outputs.height), (320, 240));
    assert!(out.width % 2 == 0 && out.height % 2 == 0);
    let (src_duration, out_duration) = (source.duration.unwrap(), out.duration.unwrap());
    assert!(
        (src_duration - out_duration).abs() <= 0.3,
        "{src_duration} vs {out_duration}"
    );
    assert!(
        (outputs.duration - out_duration).abs() <= 0.3,
        "{} vs {out_duration}",
        outputs.duration
    );
    let fps = out.frame_rate.expect("output frame rate");
    assert!((fps - 25.0).abs() < 0.5, "{fps}");
    assert_eq!(
        probe_pixel_format(&outputs.mp4).expect("pixel format"),
        "yuv420p"
    );

    let bytes = std::fs::read(&outputs.mp4).expect("read mp4");
    let boxes = top_level_boxes(&bytes);
    assert!(
        find_box(&boxes, "moov").0 < find_box(&boxes, "mdat").0,
        "not faststart: {boxes:?}"
    );

    let jpeg = std::fs::read(&outputs.poster).expect("read poster");
    assert_eq!(&jpeg[..3], &[0xFF, 0xD8, 0xFF]);
    assert_eq!(&jpeg[jpeg.len() - 2..], &[0xFF, 0xD9]);
}

#[test]
fn portrait_phone_video_comes_out_portrait() {
    let source = probe(&fixture("portrait.mp4"), &MediaLimits::default()).expect("probe");
    assert_eq!((source.width, source.height), (180, 320));

    let (_dir, result) = run(
        &fixture("portrait.mp4"),
        &profile(),
        &MediaLimits::default(),
    );
    let outputs = result.expect("transcode portrait.mp4");
    let out = probe(&outputs.mp4, &MediaLimits::default()).expect("probe output");
    assert_eq!((out.width, out.height), (180, 320));
    assert_eq!((outputs.width, outputs.height), (180, 320));
}

#[test]
fn source_without_audio_gives_output_without_audio() {
    let (_dir, result) = run(
        &fixture("no-audio.mp4"),
        &profile(),
        &MediaLimits::default(),
    );
    let outputs = result.expect("transcode no-audio.mp4");
    let out = probe(&outputs.mp4, &MediaLimits::default()).expect("probe output");
    assert_eq!(out.video_codec, "h264");
    assert_eq!(out.audio_codec, None);
    assert!(outputs.poster.exists());
}

#[test]
fn long_side_is_capped_and_never_upscaled() {
    let small = OutputProfile {
        max_long_side: 160,
        ..profile()
    };
    let (_dir, result) = run(&fixture("sample.mp4"), &small, &MediaLimits::default());
    let out = probe(
        &result.expect("transcode at 160").mp4,
        &MediaLimits::default(),
    )
    .expect("probe");
    assert_eq!((out.width, out.height), (160, 120));

    let large = OutputProfile {
        max_long_side: 4000,
        ..profile()
    };
    let (_dir, result) = run(&fixture("sample.mp4"), &large, &MediaLimits::default());
    let out = probe(
        &result.expect("transcode at 4000").mp4,
        &MediaLimits::default(),
    )
    .expect("probe");
    assert_eq!((out.width, out.height), (320, 240));
}

#[test]
fn audio_only_file_has_no_video_stream() {
    let path = fixture("audio-only.m4a");
    assert_eq!(
        error_code(probe(&path, &MediaLimits::default())),
        MediaErrorCode::NoVideoStream
    );
    let (dir, result) = run(&path, &profile(), &MediaLimits::default());
    assert_eq!(error_code(result), MediaErrorCode::NoVideoStream);
    assert_eq!(
        std::fs::read_dir(dir.path()).unwrap().count(),
        0,
        "left files behind"
    );
}

#[test]
fn text_empty_and_random_files_are_unsupported() {
    let dir = tempfile::tempdir().expect("tempdir");
    let empty = dir.path().join("empty.mp4");
    std::fs::write(&empty, b"").unwrap();
    let random = dir.path().join("random.mp4");
    // A fixed xorshift stream: "random" bytes that are the same on every run.
    let mut state = 0x2545_f491_4f6c_dd1d_u64;
    let noise: Vec<u8> = (0..64 * 1024)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state as u8
        })
        .collect();
    std::fs::write(&random, noise).unwrap();

    for path in [fixture("not-a-video.txt"), empty, random] {
        assert_eq!(
            error_code(probe(&path, &MediaLimits::default())),
            MediaErrorCode::UnsupportedMedia,
            "{path:?}"
        );
        let (_out, result) = run(&path, &profile(), &MediaLimits::default());
        assert_eq!(
            error_code(result),
            MediaErrorCode::UnsupportedMedia,
            "{path:?}"
        );
    }
}

#[test]
fn hls_playlists_named_mp4_are_refused() {
    let path = fixture("playlist.mp4");
    assert_eq!(
        error_code(probe(&path, &MediaLimits::default())),
        MediaErrorCode::UnsupportedMedia
    );
    let (_dir, result) = run(&path, &profile(), &MediaLimits::default());
    assert_eq!(error_code(result), MediaErrorCode::UnsupportedMedia);

    // A playlist whose segment is a real video: an unguarded demuxer would open
    // it and report a valid source, so only the allow-list makes this fail.
    let dir = tempfile::tempdir().expect("tempdir");
    let playlist = dir.path().join("upload.mp4");
    let segment = fixture("sample.mp4");
    std::fs::write(
        &playlist,
        format!(
            "#EXTM3U\n#EXT-X-VERSION:3\n#EXT-X-TARGETDURATION:2\n#EXT-X-MEDIA-SEQUENCE:0\n#EXTINF:2.0,\n{}\n#EXT-X-ENDLIST\n",
            segment.display()
        ),
    )
    .unwrap();
    assert_eq!(
        error_code(probe(&playlist, &MediaLimits::default())),
        MediaErrorCode::UnsupportedMedia
    );
}

#[test]
fn inputs_over_the_limits_are_too_large() {
    let path = fixture("sample.mp4");
    let few_pixels = MediaLimits {
        max_pixels: 320 * 240 - 1,
        ..MediaLimits::default()
    };
    assert_eq!(
        error_code(probe(&path, &few_pixels)),
        MediaErrorCode::InputTooLarge
    );
    let (dir, result) = run(&path, &profile(), &few_pixels);
    assert_eq!(error_code(result), MediaErrorCode::InputTooLarge);
    assert_eq!(
        std::fs::read_dir(dir.path()).unwrap().count(),
        0,
        "left files behind"
    );

    let narrow = MediaLimits {
        max_width: 300,
        ..MediaLimits::default()
    };
    assert_eq!(
        error_code(probe(&path, &narrow)),
        MediaErrorCode::InputTooLarge
    );

    let short = MediaLimits {
        max_duration_secs: 1.0,
        ..MediaLimits::default()
    };
    assert_eq!(
        error_code(probe(&path, &short)),
        MediaErrorCode::InputTooLarge
    );

    // Headers pass; the frame count is only known while decoding.
    let few_frames = MediaLimits {
        max_frames: 10,
        ..MediaLimits::default()
    };
    assert!(probe(&path, &few_frames).is_ok());
    let (_dir, result) = run(&path, &profile(), &few_frames);
    assert_eq!(error_code(result), MediaErrorCode::InputTooLarge);
}

#[test]
fn truncated_upload_keeps_what_decodes() {
    let bytes = std::fs::read(fixture("sample.mp4")).unwrap();
    let dir = tempfile::tempdir().expect("tempdir");
    let truncated = dir.path().join("truncated.mp4");
    // sample.mp4 is faststart: the index survives, the second half of the media does not.
    std::fs::write(&truncated, &bytes[..bytes.len() / 2]).unwrap();
    let (_out, result) = run(&truncated, &profile(), &MediaLimits::default());
    let outputs = result.expect("salvage a truncated upload");
    let out = probe(&outputs.mp4, &MediaLimits::default()).expect("probe output");
    let duration = out.duration.unwrap();
    assert!(duration > 0.2 && duration < 1.9, "{duration}");
}

#[test]
fn upload_whose_media_is_garbage_is_corrupt() {
    let mut bytes = std::fs::read(fixture("no-audio.mp4")).unwrap();
    let boxes = top_level_boxes(&bytes);
    let (mdat, size) = find_box(&boxes, "mdat");
    // Keep the index, zero every media byte.
    for byte in &mut bytes[mdat + 8..mdat + size] {
        *byte = 0;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let garbage = dir.path().join("garbage.mp4");
    std::fs::write(&garbage, &bytes).unwrap();
    let (out, result) = run(&garbage, &profile(), &MediaLimits::default());
    assert_eq!(error_code(result), MediaErrorCode::CorruptMedia);
    assert_eq!(
        std::fs::read_dir(out.path()).unwrap().count(),
        0,
        "left files behind"
    );
}

#[test]
fn error_codes_have_stable_names() {
    assert_eq!(
        MediaErrorCode::UnsupportedMedia.as_str(),
        "unsupported_media"
    );
    assert_eq!(MediaErrorCode::Internal.as_str(), "internal_error");
}
