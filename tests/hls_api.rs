//! The HLS ladder through the HTTP API, as a new user meets it: upload a
//! phone-style portrait clip, watch `source` appear and `progress` climb while
//! it is processed, then fetch the master playlist, each variant and its
//! segments from the media URLs and check them with the project's own probing.

mod common;
mod synth;

use std::time::{Duration, Instant};

use common::*;
use serde_json::Value;
use synth::{AudioTrack, Clip, VideoTrack};
use vidpipe::media::{probe, probe_details, MediaLimits};

async fn upload_bytes(t: &TestServer, key: &str, bytes: Vec<u8>, name: &str) -> String {
    let response = t
        .post_form(key, video_form(bytes, name, "root/phone"))
        .await;
    assert_eq!(response.status(), 202);
    let body: Value = response.json().await.unwrap();
    body["data"]["id"].as_str().unwrap().to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_portrait_phone_clip_plays_as_an_hls_ladder() {
    let dir = tempfile::tempdir().unwrap();
    let key = create_key(dir.path(), "phone");
    let t = TestServer::start(test_config(dir.path())).await;

    // Shot sideways with a rotation flag, as phones record portrait video.
    let clip = Clip {
        audio: vec![AudioTrack::new("aac", 2, 44_100)],
        ..Clip::mp4(
            VideoTrack {
                rotate: Some(90),
                ..VideoTrack::h264(1280, 720, 20)
            },
            10.0,
        )
    };
    let input = dir.path().join("phone.mp4");
    synth::write(&input, &clip);
    let id = upload_bytes(&t, &key, std::fs::read(&input).unwrap(), "phone.mp4").await;

    // While it is processed: the probed source is there, and progress climbs.
    let deadline = Instant::now() + TERMINAL_DEADLINE;
    let mut progress_seen = Vec::new();
    let mut source_while_processing = None;
    let record = loop {
        let (code, body) = get_json(&t.client, &t.url(&format!("/uploads/{id}")), &key).await;
        assert_eq!(code, 200, "{body}");
        let record = body["data"].clone();
        let status = record["status"].as_u64().unwrap();
        if status == 3 {
            let progress = record["progress"].as_u64().unwrap();
            assert!(progress <= 100);
            if progress_seen.last() != Some(&progress) {
                progress_seen.push(progress);
            }
            if !record["source"].is_null() {
                source_while_processing = Some(record["source"].clone());
            }
            assert!(record["playback"].is_null() && record["renditions"].is_null());
        }
        if status == 6 || status == 7 {
            break record;
        }
        assert!(Instant::now() < deadline, "stuck: {record}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(record["status"], 6, "{record}");
    let source = source_while_processing.expect("source shown while processing");
    assert_eq!(
        (source["width"].as_u64(), source["height"].as_u64()),
        (Some(720), Some(1280))
    );
    assert_eq!(source["video_codec"], "h264");
    assert_eq!(source["audio_codec"], "aac");
    assert!(
        (source["duration"].as_f64().unwrap() - 10.0).abs() < 0.2,
        "{source}"
    );
    assert_eq!(record["source"], source);
    assert!(
        progress_seen.windows(2).all(|w| w[0] <= w[1]),
        "{progress_seen:?}"
    );
    let climbing = progress_seen.iter().filter(|&&p| p > 0 && p < 100).count();
    assert!(climbing >= 2, "progress did not climb: {progress_seen:?}");

    // The record: the MP4 and the ladder, portrait, named by the short side.
    let hls_url = record["playback"]["hls_url"].as_str().unwrap().to_string();
    assert!(hls_url.ends_with("/hls/master.m3u8"), "{hls_url}");
    let renditions = record["renditions"].as_array().unwrap();
    let ladder: Vec<(&str, u64, u64)> = renditions
        .iter()
        .map(|r| {
            (
                r["name"].as_str().unwrap(),
                r["width"].as_u64().unwrap(),
                r["height"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        ladder,
        [("720p", 720, 1280), ("480p", 480, 854), ("360p", 360, 640)]
    );
    // Turned by its display matrix: encoded upright, not copied.
    assert!(
        renditions.iter().all(|r| r["encoded"] == true),
        "{renditions:?}"
    );

    // The master playlist, from the media URL, names every variant relative to itself.
    let (code, content_type, master) = fetch_media(&t.client, &hls_url).await;
    assert_eq!(code, 200);
    assert_eq!(content_type, "application/vnd.apple.mpegurl");
    let master = String::from_utf8(master.to_vec()).unwrap();
    assert!(master.starts_with("#EXTM3U\n"), "{master}");
    let variants = playlist_uris(&master);
    assert_eq!(variants.len(), 3, "{master}");
    for (variant, rendition) in variants.iter().zip(renditions) {
        let url = resolve(&hls_url, variant);
        assert_eq!(url, rendition["playlist_url"].as_str().unwrap());
        let bandwidth = rendition["bandwidth"].as_u64().unwrap();
        assert!(
            master.contains(&format!("BANDWIDTH={bandwidth},")),
            "{master}"
        );
        let (code, content_type, playlist) = fetch_media(&t.client, &url).await;
        assert_eq!(
            (code, content_type.as_str()),
            (200, "application/vnd.apple.mpegurl")
        );
        let playlist = String::from_utf8(playlist.to_vec()).unwrap();
        assert!(playlist.contains("#EXT-X-ENDLIST"), "{playlist}");
        let segments = playlist_uris(&playlist);
        // 10 s cut at 1 s (a short first segment), then every 4 s.
        assert_eq!(segments.len(), 4, "10 s in 4 s segments: {playlist}");
        for segment in [&segments[0], &segments[segments.len() - 1]] {
            let (code, content_type, bytes) = fetch_media(&t.client, &resolve(&url, segment)).await;
            assert_eq!((code, content_type.as_str()), (200, "video/mp2t"));
            let local = dir.path().join("segment.ts");
            std::fs::write(&local, &bytes).unwrap();
            let info = probe(&local, &MediaLimits::default()).unwrap();
            assert_eq!(
                (info.width, info.height),
                (
                    rendition["width"].as_u64().unwrap() as u32,
                    rendition["height"].as_u64().unwrap() as u32
                )
            );
            assert_eq!(info.audio_codec.as_deref(), Some("aac"));
            assert!(probe_details(&local).unwrap().starts_with_keyframe);
        }
        // Segments seek like the MP4 does.
        let response = t
            .client
            .get(resolve(&url, &segments[0]))
            .header("range", "bytes=0-187")
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 206);
        assert_eq!(
            response.bytes().await.unwrap()[0],
            0x47,
            "a TS packet starts with 0x47"
        );
    }

    // The MP4 is still there, portrait.
    let (code, content_type, mp4) =
        fetch_media(&t.client, record["playback"]["mp4_url"].as_str().unwrap()).await;
    assert_eq!((code, content_type.as_str()), (200, "video/mp4"));
    let local = dir.path().join("video.mp4");
    std::fs::write(&local, &mp4).unwrap();
    let out = probe(&local, &MediaLimits::default()).unwrap();
    assert_eq!((out.width, out.height), (720, 1280));

    // Hidden and malformed media paths stay hidden.
    let token_url = &hls_url[..hls_url.len() - "hls/master.m3u8".len()];
    for path in ["hls/.hidden", ".incoming-x/video.mp4", "hls/720p/.x.ts"] {
        let (code, _, _) = fetch_media(&t.client, &format!("{token_url}{path}")).await;
        assert_eq!(code, 404, "{path}");
    }
    t.server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_giant_frame_fails_with_input_too_large_and_the_server_stays_up() {
    let dir = tempfile::tempdir().unwrap();
    let key = create_key(dir.path(), "huge");
    let t = TestServer::start(test_config(dir.path())).await;
    let huge = dir.path().join("huge.mkv");
    synth::huge_frame(&huge, 16_000);
    let id = upload_bytes(&t, &key, std::fs::read(&huge).unwrap(), "huge.mp4").await;
    let record = wait_terminal(&t.client, &t.base, &key, &id).await;
    assert_eq!(record["status"], 7, "{record}");
    assert_eq!(record["error"]["code"], "input_too_large", "{record}");

    // Still serving, and still transcoding.
    let (code, _) = upload(&t.client, &t.base, &key, "sample.mp4", "root").await;
    assert_eq!(code, 202);
    let (code, list) = get_json(&t.client, &t.url("/uploads"), &key).await;
    assert_eq!(code, 200);
    let id = list["data"][0]["id"].as_str().unwrap().to_string();
    let record = wait_terminal(&t.client, &t.base, &key, &id).await;
    assert_eq!(record["status"], 6, "{record}");
    t.server.shutdown().await;
}
