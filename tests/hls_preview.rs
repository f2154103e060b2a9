//! Play while processing: once every rendition has its first segment, the
//! upload's record carries `preview.hls_url`, a master playlist over EVENT
//! media playlists that grow segment by segment. ffprobe plays it while the
//! upload is still processing; at the end `preview` goes, `playback` comes,
//! and the finished playlists are VOD. A cancelled or deleted upload's
//! preview answers 404.

mod common;
mod synth;

use std::process::Command;
use std::time::{Duration, Instant};

use common::*;
use serde_json::Value;
use synth::{AudioTrack, Clip, VideoTrack};

/// Half a minute of 480p with sound: a ladder of two renditions (480p,
/// 360p), whose transcode takes several seconds on two cores, in 2 s segments.
fn long_clip(dir: &std::path::Path) -> Vec<u8> {
    let path = dir.join("long.mp4");
    let clip = Clip {
        audio: vec![AudioTrack::new("aac", 2, 48_000)],
        ..Clip::mp4(VideoTrack::h264(854, 480, 25), 30.0)
    };
    synth::write(&path, &clip);
    std::fs::read(path).unwrap()
}

fn config(dir: &std::path::Path) -> vidpipe::config::Config {
    let mut config = test_config(dir);
    config.profile.hls_segment_secs = 2.0;
    config
}

async fn send(t: &TestServer, key: &str, bytes: Vec<u8>) -> String {
    let response = t
        .post_form(key, video_form(bytes, "long.mp4", "root"))
        .await;
    assert_eq!(response.status(), 202);
    let body: Value = response.json().await.unwrap();
    body["data"]["id"].as_str().unwrap().to_string()
}

/// Polls the upload until its record shows a preview; returns the record.
async fn wait_preview(t: &TestServer, key: &str, id: &str) -> Value {
    wait_preview_at(&t.client, &t.base, key, id).await
}

/// As [`wait_preview`], for the API at `base`.
async fn wait_preview_at(client: &reqwest::Client, base: &str, key: &str, id: &str) -> Value {
    let deadline = Instant::now() + TERMINAL_DEADLINE;
    loop {
        let (code, body) = get_json(client, &format!("{base}/uploads/{id}"), key).await;
        assert_eq!(code, 200, "{body}");
        let record = body["data"].clone();
        if !record["preview"].is_null() {
            return record;
        }
        let status = record["status"].as_u64().unwrap();
        assert!(status < 5, "no preview before the end: {record}");
        assert!(Instant::now() < deadline, "no preview: {record}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn get_text(t: &TestServer, url: &str) -> (u16, String) {
    let response = t.client.get(url).send().await.unwrap();
    let status = response.status().as_u16();
    (status, response.text().await.unwrap())
}

/// The media playlists a master playlist names, as URLs.
fn variants(master_url: &str, master: &str) -> Vec<String> {
    playlist_uris(master)
        .iter()
        .map(|uri| resolve(master_url, uri))
        .collect()
}

/// sseclient-py (a third-party SSE client) following the upload's event
/// stream to its end, one JSON line per event; `None` where it is not
/// installed (outside CI).
fn follow(t: &TestServer, key: &str, id: &str) -> Option<tokio::process::Child> {
    if !sseclient_installed() {
        return None;
    }
    let script =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/clients/follow_upload.py");
    let child = tokio::process::Command::new("python3")
        .arg(script)
        .arg(t.url(&format!("/uploads/{id}/events")))
        .arg(key)
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    Some(child)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_ladder_plays_while_it_is_processed_then_becomes_vod() {
    let dir = tempfile::tempdir().unwrap();
    let key = create_key(dir.path(), "preview");
    let t = TestServer::start(config(dir.path())).await;
    let id = send(&t, &key, long_clip(dir.path())).await;
    let sent = Instant::now();
    let follower = follow(&t, &key, &id);

    let record = wait_preview(&t, &key, &id).await;
    eprintln!("previewable {:?} after the 202", sent.elapsed());
    assert_eq!(record["status"], 3, "{record}");
    assert!(record["playback"].is_null(), "{record}");
    let master_url = record["preview"]["hls_url"].as_str().unwrap().to_string();
    assert!(master_url.contains("/preview/"), "{master_url}");

    // Every rendition is there, each with its first segment at least.
    let (code, master) = get_text(&t, &master_url).await;
    assert_eq!(code, 200, "{master}");
    assert_eq!(master.matches("#EXT-X-STREAM-INF:").count(), 2, "{master}");
    let variant_urls = variants(&master_url, &master);
    for url in &variant_urls {
        let (code, playlist) = get_text(&t, url).await;
        assert_eq!(code, 200);
        assert!(
            playlist.contains("#EXT-X-PLAYLIST-TYPE:EVENT\n"),
            "{playlist}"
        );
        assert!(!playlist.contains("#EXT-X-ENDLIST"), "{playlist}");
        let segments = playlist_uris(&playlist);
        assert!(!segments.is_empty(), "{playlist}");
        let response = t
            .client
            .get(resolve(url, &segments[0]))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
        assert_eq!(response.headers()["content-type"], "video/mp2t");
        assert!(!response.bytes().await.unwrap().is_empty());
    }

    // The playlist grows while the upload is processed (no end marked yet).
    let first = playlist_uris(&get_text(&t, &variant_urls[0]).await.1).len();
    let deadline = Instant::now() + TERMINAL_DEADLINE;
    loop {
        let (_, playlist) = get_text(&t, &variant_urls[0]).await;
        if playlist_uris(&playlist).len() > first {
            assert!(!playlist.contains("#EXT-X-ENDLIST"), "{playlist}");
            break;
        }
        assert!(Instant::now() < deadline, "the playlist did not grow");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // A player reads it now, while the rest is encoded.
    let probe = Command::new("ffprobe")
        .args(["-v", "error", "-show_entries", "stream=codec_type,width"])
        .args(["-of", "json", &master_url])
        .output()
        .expect("ffprobe runs (.ci/setup installs ffmpeg)");
    assert!(
        probe.status.success(),
        "{}",
        String::from_utf8_lossy(&probe.stderr)
    );
    let streams: Value = serde_json::from_slice(&probe.stdout).unwrap();
    let kinds: Vec<&str> = streams["streams"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["codec_type"].as_str().unwrap())
        .collect();
    assert!(
        kinds.contains(&"video") && kinds.contains(&"audio"),
        "{streams}"
    );

    let (_, body) = get_json(&t.client, &t.url(&format!("/uploads/{id}")), &key).await;
    assert_ne!(
        body["data"]["status"], 6,
        "probed before the upload completed"
    );

    // Completed: no preview, the playback, and VOD playlists.
    let done = wait_terminal(&t.client, &t.base, &key, &id).await;
    assert_eq!(done["status"], 6, "{done}");
    eprintln!("completed {:?} after the 202", sent.elapsed());
    assert!(done.get("preview").is_none(), "{done}");
    // A player still on the preview is sent on to the finished files.
    let hls_url = done["playback"]["hls_url"].as_str().unwrap();
    let no_redirects = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let moved = no_redirects.get(&master_url).send().await.unwrap();
    assert_eq!(moved.status(), 303);
    assert_eq!(moved.headers()["location"], hls_url);
    let (code, playlist) = get_text(&t, &variant_urls[0]).await;
    assert_eq!(code, 200);
    assert!(playlist.ends_with("#EXT-X-ENDLIST\n"), "{playlist}");

    // A third-party SSE client following the upload saw the preview come and go.
    if let Some(follower) = follower {
        let out = follower.wait_with_output().await.unwrap();
        assert!(out.status.success());
        let events: Vec<Value> = String::from_utf8(out.stdout)
            .unwrap()
            .lines()
            .map(|line| serde_json::from_str(line).unwrap())
            .collect();
        let first = events
            .iter()
            .position(|e| !e["data"]["preview"].is_null())
            .expect("an event with the preview");
        assert_eq!(events[first]["data"]["status"], 3);
        assert_eq!(
            events[first]["data"]["preview"]["hls_url"],
            master_url.as_str()
        );
        assert!(events[..first]
            .iter()
            .all(|e| e["data"].get("preview").is_none()));
        let last = &events.last().unwrap()["data"];
        assert_eq!(last["status"], 6, "{last}");
        assert!(last.get("preview").is_none(), "{last}");
    }
    let (_, master) = get_text(&t, hls_url).await;
    for url in variants(hls_url, &master) {
        let (code, playlist) = get_text(&t, &url).await;
        assert_eq!(code, 200);
        assert!(
            playlist.contains("#EXT-X-PLAYLIST-TYPE:VOD\n"),
            "{playlist}"
        );
        assert!(playlist.ends_with("#EXT-X-ENDLIST\n"), "{playlist}");
        // Half a minute: a first segment of 1 s, then 2 s ones.
        assert_eq!(playlist_uris(&playlist).len(), 16, "{playlist}");
    }
    t.server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancelled_or_deleted_uploads_preview_is_gone() {
    let dir = tempfile::tempdir().unwrap();
    let key = create_key(dir.path(), "preview-gone");
    let t = TestServer::start(config(dir.path())).await;
    let clip = long_clip(dir.path());

    for action in ["cancel", "delete"] {
        let id = send(&t, &key, clip.clone()).await;
        let record = wait_preview(&t, &key, &id).await;
        let master_url = record["preview"]["hls_url"].as_str().unwrap().to_string();
        let (_, master) = get_text(&t, &master_url).await;
        let variant = variants(&master_url, &master).remove(0);
        let (_, playlist) = get_text(&t, &variant).await;
        let segment = resolve(&variant, &playlist_uris(&playlist)[0]);
        assert_eq!(get_text(&t, &segment).await.0, 200);

        let url = t.url(&format!("/uploads/{id}"));
        let answer = match action {
            "cancel" => {
                let cancel = format!("{url}/cancel");
                t.client.post(cancel).bearer_auth(&key).send().await
            }
            _ => t.client.delete(&url).bearer_auth(&key).send().await,
        };
        let code = answer.unwrap().status().as_u16();
        assert!(code == 200 || code == 204, "{action}: {code}");
        for file in [&master_url, &variant, &segment] {
            assert_eq!(get_text(&t, file).await.0, 404, "{action}: {file}");
        }
        let (code, body) = get_json(&t.client, &url, &key).await;
        if action == "cancel" {
            assert_eq!(body["data"]["status"], 7, "{body}");
            assert!(body["data"].get("preview").is_none(), "{body}");
        } else {
            assert_eq!(code, 404, "{body}");
        }
    }
    t.server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_a_crash_a_preview_shown_is_one_that_plays() {
    let dir = tempfile::tempdir().unwrap();
    let key = keys_create(dir.path());
    let client = reqwest::Client::new();
    let mut server = start(dir.path(), &[]);
    let form = video_form(long_clip(dir.path()), "long.mp4", "root");
    let response = client
        .post(format!("{}/uploads", server.base))
        .bearer_auth(&key)
        .multipart(form)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 202);
    let body: Value = response.json().await.unwrap();
    let id = body["data"]["id"].as_str().unwrap().to_string();
    let before = wait_preview_at(&client, &server.base, &key, &id).await;
    server.kill9();

    // Started again, the upload is transcoded again: whenever its record
    // shows a preview, that preview plays (the old one went with the crash).
    let server = start(dir.path(), &[]);
    let url = format!("{}/uploads/{id}", server.base);
    let deadline = Instant::now() + TERMINAL_DEADLINE;
    let mut previews_seen = 0;
    loop {
        let (_, body) = get_json(&client, &url, &key).await;
        let record = &body["data"];
        if record["status"] == 6 {
            assert!(record.get("preview").is_none(), "{record}");
            break;
        }
        if let Some(master) = record["preview"]["hls_url"].as_str() {
            let code = client.get(master).send().await.unwrap().status();
            if code != 200 {
                // Only when it has just been completed.
                let (_, now) = get_json(&client, &url, &key).await;
                assert_eq!(now["data"]["status"], 6, "{code} for {record}");
            }
            previews_seen += 1;
        }
        assert!(Instant::now() < deadline, "not completed: {record}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(previews_seen > 0, "no new preview after {before}");
    let mut server = server;
    server.kill9();
}
