//! The storyboard (seek-bar previews) as a player meets it:
//! `playback.storyboard_url` is a WebVTT whose cues cover the video back to
//! back, each naming a tile of one JPEG sprite by a reference that resolves
//! against the VTT's own URL; the tiles show the video as it moves. And the
//! interval rule on a long video, through `vidpipe::media::transcode` alone.

mod common;
mod storyboard;
mod synth;

use common::*;
use serde_json::Value;
use storyboard::*;
use synth::{AudioTrack, Clip, VideoTrack};
use vidpipe::media::{self, MediaLimits, OutputProfile};

/// Uploads `bytes` as `name` and waits until it is completed; returns the record.
async fn completed(t: &TestServer, key: &str, bytes: Vec<u8>, name: &str) -> Value {
    let response = t
        .post_form(key, video_form(bytes, name, "root/previews"))
        .await;
    assert_eq!(response.status(), 202);
    let body: Value = response.json().await.unwrap();
    let id = body["data"]["id"].as_str().unwrap();
    let record = wait_terminal(&t.client, &t.base, key, id).await;
    assert_eq!(record["status"], 6, "{record}");
    record
}

/// The storyboard of a completed upload, fetched as a player does: the VTT from
/// `storyboard_url`, then the sprite its cues name, resolved against the VTT's URL.
/// Returns the cues, the sprite's URL and its bytes.
async fn fetch_storyboard(
    client: &reqwest::Client,
    record: &Value,
) -> (Vec<Cue>, String, bytes::Bytes) {
    let vtt_url = record["playback"]["storyboard_url"].as_str().unwrap();
    assert!(vtt_url.ends_with("/storyboard.vtt"), "{vtt_url}");
    let (code, content_type, vtt) = fetch_media(client, vtt_url).await;
    assert_eq!(
        (code, content_type.as_str()),
        (200, "text/vtt"),
        "{vtt_url}"
    );
    let cues = parse_cues(std::str::from_utf8(&vtt).unwrap());
    let duration_ms = (record["source"]["duration"].as_f64().unwrap() * 1000.0) as u64;
    let image = check_timeline(&cues, duration_ms, 150);
    let mut sprite_url = reqwest::Url::parse(vtt_url).unwrap().join(&image).unwrap();
    sprite_url.set_fragment(None);
    let (code, content_type, sprite) = fetch_media(client, sprite_url.as_str()).await;
    assert_eq!(
        (code, content_type.as_str()),
        (200, "image/jpeg"),
        "{sprite_url}"
    );
    (cues, sprite_url.to_string(), sprite)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_storyboard_url_previews_the_whole_video_from_one_sprite() {
    media::init();
    let dir = tempfile::tempdir().unwrap();
    let key = create_key(dir.path(), "previews");
    let t = TestServer::start(test_config(dir.path())).await;
    // 12 s of a pattern whose box and colours move every frame.
    let clip = Clip {
        audio: vec![AudioTrack::new("aac", 2, 48_000)],
        ..Clip::mp4(VideoTrack::h264(320, 180, 10), 12.0)
    };
    let input = dir.path().join("moving.mp4");
    synth::write(&input, &clip);
    let record = completed(&t, &key, std::fs::read(&input).unwrap(), "moving.mp4").await;

    // A tile a second: 12 cues, on a grid of 10 tiles of 160x90 a row.
    let (cues, sprite_url, sprite) = fetch_storyboard(&t.client, &record).await;
    assert_eq!(cues.len(), 12, "{cues:?}");
    assert_eq!(cues[0].image, "storyboard.jpg");
    let mp4_url = record["playback"]["mp4_url"].as_str().unwrap();
    assert_eq!(sprite_url, mp4_url.replace("/video.mp4", "/storyboard.jpg"));
    for (index, cue) in cues.iter().enumerate() {
        assert_eq!(cue.start_ms, index as u64 * 1000, "{cue:?}");
        let (column, row) = (index as u32 % 10, index as u32 / 10);
        assert_eq!(cue.rect, (column * 160, row * 90, 160, 90), "{cue:?}");
    }
    assert_eq!(jpeg_size(&sprite), (1600, 180));
    check_inside(&cues, (1600, 180));

    // The tiles show the video at their times: the pattern's box moves 30 px
    // a second (around the 320 px picture in 10.7 s), and the cells after the
    // last tile are black.
    let luma = jpeg_luma(&sprite, dir.path());
    assert_eq!((luma.0, luma.1), (1600, 180));
    for later in [1, 3, 5] {
        let difference = tile_difference(&luma, cues[0].rect, cues[later].rect);
        assert!(
            difference > 4.0,
            "tile {later} looks like tile 0: {difference}"
        );
    }
    assert!(tile_mean(&luma, cues[0].rect) > 40.0);
    let empty = tile_mean(&luma, (1440, 90, 160, 90));
    assert!(empty < 4.0, "an empty cell is black: {empty}");
    t.server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_portrait_clip_shorter_than_one_interval_gets_one_upright_tile() {
    media::init();
    let dir = tempfile::tempdir().unwrap();
    let key = create_key(dir.path(), "short");
    let t = TestServer::start(test_config(dir.path())).await;
    let bytes = std::fs::read(fixture("portrait.mp4")).unwrap();
    let record = completed(&t, &key, bytes, "portrait.mp4").await;

    let (cues, _, sprite) = fetch_storyboard(&t.client, &record).await;
    assert_eq!(cues.len(), 1, "{cues:?}");
    // Shown 180x320: the tile is upright, its long side 160.
    assert_eq!(cues[0].rect, (0, 0, 90, 160));
    assert_eq!(jpeg_size(&sprite), (90, 160));
    t.server.shutdown().await;
}

#[test]
fn a_long_video_spaces_its_tiles_to_keep_at_most_a_hundred() {
    media::init();
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("long.mp4");
    // 150 s: a tile every ceil(150 / 100) = 2 s. 64x36: tiles are never upscaled.
    synth::write(&input, &Clip::mp4(VideoTrack::h264(64, 36, 2), 150.0));
    let out = dir.path().join("out");
    std::fs::create_dir(&out).unwrap();
    let profile = OutputProfile {
        hls: false,
        threads: Some(2),
        ..OutputProfile::default()
    };
    let outputs =
        media::transcode(&input, &out, &profile, &MediaLimits::default(), &mut |_| {}).unwrap();
    let board = &outputs.storyboard;
    assert_eq!(board.vtt, out.join(media::STORYBOARD_VTT));
    assert_eq!(board.image, out.join(media::STORYBOARD_IMAGE));
    assert_eq!(
        (
            board.interval_secs,
            board.tiles,
            board.tile_width,
            board.tile_height
        ),
        (2, 75, 64, 36)
    );
    let files = outputs.files();
    assert!(files.contains(&"storyboard.jpg".to_string()), "{files:?}");
    assert!(files.contains(&"storyboard.vtt".to_string()), "{files:?}");

    let cues = parse_cues(&std::fs::read_to_string(&board.vtt).unwrap());
    assert_eq!(cues.len(), 75);
    let duration_ms = (outputs.duration * 1000.0).round() as u64;
    check_timeline(&cues, duration_ms, 0);
    assert_eq!(cues[74].start_ms, 148_000);
    // 10 a row, 8 rows.
    let sprite = std::fs::read(&board.image).unwrap();
    assert_eq!(jpeg_size(&sprite), (640, 288));
    check_inside(&cues, (640, 288));
    assert_eq!(cues[74].rect, (256, 252, 64, 36));
}
