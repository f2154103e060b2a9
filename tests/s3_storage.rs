//! Final storage in a real S3-compatible store (SeaweedFS on loopback, see
//! `common::seaweed`): outputs land in the bucket under the right keys with
//! the right content types, and play through the URLs the API returns
//! (presigned, HLS through the API server, or public); the store going down
//! mid-upload is retried and recovers, or ends in `storage_error`; a crash
//! mid-upload resumes at the next start.

mod common;
mod storyboard;

use std::collections::BTreeSet;
use std::path::Path;
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

use common::seaweed::{Seaweed, BUCKET};
use common::*;
use object_store::ObjectStoreExt;
use serde_json::Value;
use vidpipe::config::Config;
use vidpipe::storage::s3::{S3Config, S3Storage};
use vidpipe::storage::FinalStorage;
use vidpipe::store::record::Status;
use vidpipe::store::Store;

fn s3_server_config(data: &Path, s3: S3Config) -> Config {
    let mut config = test_config(data);
    config.s3 = Some(s3);
    config
}

/// A server with its own data dir and key, storing to `weed` under `prefix`
/// with at most `max_attempts` tries per request, MP4 only (no HLS ladder).
async fn mp4_server(
    weed: &Seaweed,
    prefix: &str,
    max_attempts: u32,
) -> (TestServer, String, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let key = create_key(dir.path(), "s3");
    let s3 = S3Config {
        max_attempts,
        ..weed.s3_config(prefix)
    };
    let mut config = s3_server_config(dir.path(), s3);
    config.profile.hls = false;
    (TestServer::start(config).await, key, dir)
}

/// Polls the upload until its status is `status` (a number), or panics.
async fn wait_status(client: &reqwest::Client, base: &str, key: &str, id: &str, status: u64) {
    let deadline = Instant::now() + TERMINAL_DEADLINE;
    loop {
        let (_, body) = get_json(client, &format!("{base}/uploads/{id}"), key).await;
        if body["data"]["status"] == status {
            return;
        }
        assert!(Instant::now() < deadline, "never reached {status}: {body}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Plays an HLS ladder the way a player does, from the master playlist URL
/// alone: every variant, and the first two segments of each. Returns how many
/// segments were fetched.
async fn play_hls(client: &reqwest::Client, master_url: &str) -> usize {
    let (status, content_type, master) = fetch_media(client, master_url).await;
    assert_eq!(status, 200, "{master_url}");
    assert_eq!(content_type, "application/vnd.apple.mpegurl");
    let master = String::from_utf8(master.to_vec()).unwrap();
    assert!(master.starts_with("#EXTM3U"), "{master}");
    let variants = playlist_uris(&master);
    assert!(!variants.is_empty(), "{master}");
    let mut segments = 0;
    for variant in variants {
        let url = reqwest::Url::parse(master_url)
            .unwrap()
            .join(&variant)
            .unwrap();
        let (status, _, playlist) = fetch_media(client, url.as_str()).await;
        assert_eq!(status, 200, "{url}");
        let playlist = String::from_utf8(playlist.to_vec()).unwrap();
        assert!(playlist.contains("#EXT-X-ENDLIST"), "{playlist}");
        for segment in playlist_uris(&playlist).iter().take(2) {
            let segment_url = url.join(segment).unwrap();
            let (status, content_type, bytes) = fetch_media(client, segment_url.as_str()).await;
            assert_eq!(status, 200, "{segment_url}");
            assert_eq!(content_type, "video/mp2t", "{segment_url}");
            assert_eq!(
                bytes.first(),
                Some(&0x47),
                "an MPEG-TS packet starts a segment"
            );
            segments += 1;
        }
    }
    segments
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outputs_land_in_the_bucket_and_play_through_the_returned_urls() {
    let Some(weed) = Seaweed::start().await else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let key = create_key(dir.path(), "s3");
    let s3 = weed.s3_config("media/v1");
    let t = TestServer::start(s3_server_config(dir.path(), s3.clone())).await;
    let done = upload_to_end(&t, &key, "sample.mp4", "root/s3").await;
    assert_eq!(done["status"], 6, "{done}");
    let id = done["id"].as_str().unwrap();
    let token = token_of(&t, id);

    // Keys: every output under prefix/token, the marker last of all.
    let folder = format!("media/v1/{token}");
    let keys: BTreeSet<String> = weed.keys(&folder).await.into_iter().collect();
    let marker = format!("{folder}/.complete");
    for name in [
        "video.mp4",
        "poster.jpg",
        "storyboard.jpg",
        "storyboard.vtt",
        "hls/master.m3u8",
    ] {
        assert!(
            keys.contains(&format!("{folder}/{name}")),
            "{name}: {keys:?}"
        );
    }
    assert!(keys.contains(&marker), "{keys:?}");
    let listing: Value = serde_json::from_slice(
        &object_store::ObjectStoreExt::get(&*weed.client(), &marker.as_str().into())
            .await
            .unwrap()
            .bytes()
            .await
            .unwrap(),
    )
    .unwrap();
    let listed: BTreeSet<String> = listing["files"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| format!("{folder}/{}", f.as_str().unwrap()))
        .chain([marker.clone()])
        .collect();
    assert_eq!(listed, keys, "exactly the outputs, and the marker");
    assert!(keys.iter().any(|k| k.ends_with(".ts")), "{keys:?}");

    // Presigned playback: the MP4 (stored as a multipart upload: it is above
    // the 64 KiB threshold) and the poster, with their content types.
    let client = reqwest::Client::new();
    let playback = &done["playback"];
    let mp4_url = playback["mp4_url"].as_str().unwrap();
    assert!(mp4_url.starts_with(&weed.endpoint()), "{mp4_url}");
    assert!(mp4_url.contains("X-Amz-Signature="), "{mp4_url}");
    let (status, content_type, mp4) = fetch_media(&client, mp4_url).await;
    assert_eq!((status, content_type.as_str()), (200, "video/mp4"));
    assert!(mp4.len() > 64 * 1024, "{} bytes", mp4.len());
    let boxes = mp4_top_level_boxes(&mp4);
    let (moov, mdat) = (
        boxes.iter().position(|b| b == "moov").unwrap(),
        boxes.iter().position(|b| b == "mdat").unwrap(),
    );
    assert!(moov < mdat, "faststart: {boxes:?}");
    let (status, content_type, poster) =
        fetch_media(&client, playback["poster_url"].as_str().unwrap()).await;
    assert_eq!((status, content_type.as_str()), (200, "image/jpeg"));
    assert_eq!(&poster[..2], &[0xFF, 0xD8]);
    // The signature is checked: a forged one is refused.
    let forged = mp4_url.replace("X-Amz-Signature=", "X-Amz-Signature=0");
    assert_eq!(fetch_media(&client, &forged).await.0, 403);

    // The storyboard through the API server: its cues name the sprite by its
    // presigned URL (the test bucket also lets anonymous reads through, so the
    // signature is checked by its presence, not by a refusal).
    let vtt_url = playback["storyboard_url"].as_str().unwrap();
    assert_eq!(
        vtt_url,
        format!("http://{}/media/{token}/storyboard.vtt", t.server.addr())
    );
    let duration_ms = (done["source"]["duration"].as_f64().unwrap() * 1000.0) as u64;
    let response = client.get(vtt_url).send().await.unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["content-type"], "text/vtt");
    assert_eq!(response.headers()["cache-control"], "private, no-cache");
    let cues = storyboard::parse_cues(&response.text().await.unwrap());
    let image = storyboard::check_timeline(&cues, duration_ms, 150);
    assert!(image.starts_with(&weed.endpoint()), "{image}");
    assert!(image.contains("X-Amz-Signature="), "{image}");
    let sprite_url = reqwest::Url::parse(vtt_url).unwrap().join(&image).unwrap();
    let (status, content_type, sprite) = fetch_media(&client, sprite_url.as_str()).await;
    assert_eq!((status, content_type.as_str()), (200, "image/jpeg"));
    storyboard::check_inside(&cues, storyboard::jpeg_size(&sprite));

    // HLS through the API server: master -> variants -> presigned segments.
    let hls_url = playback["hls_url"].as_str().unwrap();
    assert!(
        hls_url.starts_with(&format!("http://{}/media/", t.server.addr())),
        "{hls_url}"
    );
    assert!(play_hls(&client, hls_url).await >= 1);
    for rendition in done["renditions"].as_array().unwrap() {
        let url = rendition["playlist_url"].as_str().unwrap();
        assert_eq!(fetch_media(&client, url).await.0, 200, "{url}");
    }
    // The API redirects any other file to its presigned URL, and hides the marker.
    let media = format!("http://{}/media/{token}", t.server.addr());
    let (status, content_type, _) = fetch_media(&client, &format!("{media}/poster.jpg")).await;
    assert_eq!((status, content_type.as_str()), (200, "image/jpeg"));
    assert_eq!(
        fetch_media(&client, &format!("{media}/.complete")).await.0,
        404
    );
    assert_eq!(
        fetch_media(
            &client,
            &format!("http://{}/media/nosuchtoken/video.mp4", t.server.addr())
        )
        .await
        .0,
        404
    );

    // Public mode: unsigned URLs under a public base; the playlists play as stored.
    let public = S3Storage::new(
        &S3Config {
            public_base_url: Some(format!("{}/{BUCKET}", weed.endpoint())),
            ..s3
        },
        CancellationToken::new(),
    )
    .unwrap();
    let master = public.url("http://unused", &token, "hls/master.m3u8");
    assert_eq!(
        master,
        format!("{}/{BUCKET}/{folder}/hls/master.m3u8", weed.endpoint())
    );
    assert!(play_hls(&client, &master).await >= 1);
    // The storyboard too, its relative reference resolving in the bucket.
    let vtt_url = public.url("http://unused", &token, "storyboard.vtt");
    let (status, content_type, vtt) = fetch_media(&client, &vtt_url).await;
    assert_eq!((status, content_type.as_str()), (200, "text/vtt"));
    let cues = storyboard::parse_cues(std::str::from_utf8(&vtt).unwrap());
    assert_eq!(
        storyboard::check_timeline(&cues, duration_ms, 150),
        "storyboard.jpg"
    );
    let sprite_url = reqwest::Url::parse(&vtt_url)
        .unwrap()
        .join("storyboard.jpg")
        .unwrap();
    let (status, content_type, public_sprite) = fetch_media(&client, sprite_url.as_str()).await;
    assert_eq!((status, content_type.as_str()), (200, "image/jpeg"));
    assert_eq!(public_sprite, sprite);
    t.server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_store_going_down_mid_upload_is_retried_then_recovers_or_fails() {
    let Some(mut weed) = Seaweed::start().await else {
        return;
    };
    // Enough tries to outlast a restart of SeaweedFS (60 x at most 500 ms).
    let (t, key, _dir) = mp4_server(&weed, "patient", 60).await;

    weed.stop();
    let (code, body) = upload(&t.client, &t.base, &key, "sample.mp4", "root").await;
    assert_eq!(code, 202, "{body}");
    let id = body["data"]["id"].as_str().unwrap().to_string();
    // Status 5 covers the upload, and stays while the store is down.
    wait_status(&t.client, &t.base, &key, &id, 5).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let (_, still) = get_json(&t.client, &t.url(&format!("/uploads/{id}")), &key).await;
    assert_eq!(still["data"]["status"], 5, "{still}");
    weed.start_again().await;
    let done = wait_terminal(&t.client, &t.base, &key, &id).await;
    assert_eq!(done["status"], 6, "{done}");
    let (status, _, _) =
        fetch_media(&t.client, done["playback"]["mp4_url"].as_str().unwrap()).await;
    assert_eq!(status, 200);

    // With few tries, a store that stays down fails the upload with storage_error.
    let (t2, key2, _dir2) = mp4_server(&weed, "impatient", 3).await;
    weed.stop();
    let failed = upload_to_end(&t2, &key2, "sample.mp4", "root").await;
    assert_eq!(failed["status"], 7, "{failed}");
    assert_eq!(failed["error"]["code"], "storage_error", "{failed}");
    assert!(failed["playback"].is_null(), "{failed}");
    t2.server.shutdown().await;
    t.server.shutdown().await;
}

/// A data dir, key and config file for the real binary storing to `weed`
/// under `prefix`, MP4 only; files of `multipart_threshold` bytes or more go
/// up as multipart uploads.
struct BinarySetup {
    _dir: tempfile::TempDir,
    data: std::path::PathBuf,
    config: String,
    s3: S3Config,
    key: String,
}

impl BinarySetup {
    fn new(weed: &Seaweed, prefix: &str, multipart_threshold: u64) -> BinarySetup {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        std::fs::create_dir(&data).unwrap();
        let s3 = weed.s3_config(prefix);
        let config_file = dir.path().join("vidpipe.toml");
        let toml = format!(
            "[profile]\nhls = false\n\n[s3]\nendpoint = \"{}\"\nbucket = \"{}\"\npath_style = true\nprefix = \"{prefix}\"\nmultipart_threshold_bytes = {multipart_threshold}\n",
            weed.endpoint(),
            s3.bucket
        );
        std::fs::write(&config_file, toml).unwrap();
        let key = keys_create(&data);
        BinarySetup {
            config: config_file.to_str().unwrap().to_string(),
            _dir: dir,
            data,
            s3,
            key,
        }
    }

    /// The server's environment: the config file and the credentials, plus `extra`.
    fn env<'a>(&'a self, extra: &[(&'a str, &'a str)]) -> Vec<(&'a str, &'a str)> {
        let mut env = vec![
            ("VIDPIPE_CONFIG", self.config.as_str()),
            (
                "VIDPIPE_S3_ACCESS_KEY_ID",
                self.s3.access_key_id.as_deref().unwrap(),
            ),
            (
                "VIDPIPE_S3_SECRET_ACCESS_KEY",
                self.s3.secret_access_key.as_deref().unwrap(),
            ),
        ];
        env.extend_from_slice(extra);
        env
    }

    /// Starts the binary armed to crash at `point`, uploads `sample.mp4` and
    /// waits for the crash. Returns the upload id and the record as the crash left it.
    async fn upload_until_crash(
        &self,
        point: &str,
    ) -> (String, vidpipe::store::record::UploadRecord) {
        let mut server = start(&self.data, &self.env(&[("VIDPIPE_CRASH_AT", point)]));
        let client = reqwest::Client::new();
        let (code, body) = upload(&client, &server.base, &self.key, "sample.mp4", "root").await;
        assert_eq!(code, 202, "{body}");
        let id = body["data"]["id"].as_str().unwrap().to_string();
        let deadline = Instant::now() + TERMINAL_DEADLINE;
        while server.child.try_wait().unwrap().is_none() {
            assert!(
                Instant::now() < deadline,
                "the crash point was never reached"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        server.kill9();
        let store = Store::open(&self.data.join("vidpipe.redb")).unwrap();
        let record = store
            .get(uuid::Uuid::parse_str(&id).unwrap())
            .unwrap()
            .unwrap();
        (id, record)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_mid_upload_resumes_at_the_next_start() {
    let Some(weed) = Seaweed::start().await else {
        return;
    };
    let setup = BinarySetup::new(&weed, "crash", 65536);

    // The first start aborts once the first object is in the bucket.
    let (id, record) = setup.upload_until_crash("mid_storage_put").await;
    assert_eq!(record.status, Status::Uploading);
    let folder = format!("crash/{}", record.media_token);
    let partial = weed.keys(&folder).await;
    assert_eq!(partial.len(), 1, "one object, no marker: {partial:?}");

    // The next start resumes the upload: every object, then the marker.
    let mut server = start(&setup.data, &setup.env(&[]));
    let client = reqwest::Client::new();
    let done = wait_terminal(&client, &server.base, &setup.key, &id).await;
    assert_eq!(done["status"], 6, "{done}");
    let keys = weed.keys(&folder).await;
    for name in ["video.mp4", "poster.jpg", ".complete"] {
        assert!(
            keys.contains(&format!("{folder}/{name}")),
            "{name}: {keys:?}"
        );
    }
    let (status, content_type, _) =
        fetch_media(&client, done["playback"]["mp4_url"].as_str().unwrap()).await;
    assert_eq!((status, content_type.as_str()), (200, "video/mp4"));
    server.kill9();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_mid_multipart_upload_leaves_no_parts_behind() {
    let Some(weed) = Seaweed::start().await else {
        return;
    };
    // Every file above 1 KiB goes up as a multipart upload.
    let setup = BinarySetup::new(&weed, "parts", 1024);
    let storage = S3Storage::new(&setup.s3, CancellationToken::new()).unwrap();
    // Someone else's multipart upload in the same bucket, under another folder.
    let other = object_store::path::Path::from("parts/someoneelse/video.mp4");
    let mut foreign = weed.client().put_multipart(&other).await.unwrap();
    foreign
        .put_part(object_store::PutPayload::from(vec![7u8; 5 * 1024 * 1024]))
        .await
        .unwrap();

    // The first start dies with the video's multipart upload started, not completed.
    let (id, record) = setup.upload_until_crash("mid_multipart").await;
    assert_eq!(record.status, Status::Uploading);
    let token = record.media_token;
    assert!(weed.keys(&format!("parts/{token}")).await.is_empty());

    // The next start aborts the interrupted multipart upload, then stores the upload again.
    let mut server = start(&setup.data, &setup.env(&[]));
    let client = reqwest::Client::new();
    let done = wait_terminal(&client, &server.base, &setup.key, &id).await;
    assert_eq!(done["status"], 6, "{done}");
    let (status, content_type, _) =
        fetch_media(&client, done["playback"]["mp4_url"].as_str().unwrap()).await;
    assert_eq!((status, content_type.as_str()), (200, "video/mp4"));
    let aborted = server
        .log
        .lock()
        .unwrap()
        .iter()
        .filter(|l| l.contains("aborted an interrupted multipart upload"))
        .count();
    assert_eq!(aborted, 1, "{:?}", server.log.lock().unwrap());
    server.kill9();

    // Nothing is left in progress under the upload's folder; the foreign upload was not touched.
    let (ours, theirs) = tokio::task::spawn_blocking(move || {
        (
            storage.clean_interrupted(&[token.as_str()]).unwrap(),
            storage.clean_interrupted(&["someoneelse"]).unwrap(),
        )
    })
    .await
    .unwrap();
    assert_eq!((ours, theirs), (0, 1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn interrupted_multipart_uploads_are_all_aborted_across_listing_pages() {
    let Some(weed) = Seaweed::start().await else {
        return;
    };
    let s3 = weed.s3_config("pages");
    // Two to a page, five in progress: three pages.
    let storage = S3Storage::new(&s3, CancellationToken::new())
        .unwrap()
        .with_listing_page(2);
    let token = "0123456789abcdef";
    for n in 0..5 {
        let path = object_store::path::Path::from(format!("pages/{token}/hls/seg_{n}.ts"));
        let mut upload = weed.client().put_multipart(&path).await.unwrap();
        upload
            .put_part(object_store::PutPayload::from(vec![1u8; 1024]))
            .await
            .unwrap();
    }
    let pages = storage.interrupted_uploads(token).await.unwrap();
    let counts: Vec<usize> = pages.iter().map(Vec::len).collect();
    assert_eq!(counts, [2, 2, 1], "{pages:?}");
    let (aborted, left) = tokio::task::spawn_blocking(move || {
        (
            storage.clean_interrupted(&[token]).unwrap(),
            storage.clean_interrupted(&[token]).unwrap(),
        )
    })
    .await
    .unwrap();
    assert_eq!((aborted, left), (5, 0));
}
