//! An upload's life after its 202, on a real server: `DELETE /uploads/{id}`
//! in every status (then nothing of it is left, on disk or in the bucket),
//! `POST /uploads/{id}/cancel` and `POST /uploads/{id}/retry`, the sweeper
//! that frees a failed upload's kept source, and each of them surviving a
//! `kill -9` right after its answer.

mod common;
mod synth;

use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::seaweed::Seaweed;
use common::*;
use serde_json::Value;
use synth::{Clip, VideoTrack};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;
use vidpipe::storage::s3::{S3Config, S3Storage};
use vidpipe::webhook::WebhookConfig;

/// `POST`s to `{base}/uploads/{id}/{action}` (cancel, retry) or `DELETE`s
/// the upload (`action` "delete"); returns the status and the JSON body (null
/// when there is none).
async fn act(
    client: &reqwest::Client,
    base: &str,
    key: &str,
    id: &str,
    action: &str,
) -> (u16, Value) {
    let request = match action {
        "delete" => client.delete(format!("{base}/uploads/{id}")),
        _ => client.post(format!("{base}/uploads/{id}/{action}")),
    };
    let response = request.bearer_auth(key).send().await.unwrap();
    let status = response.status().as_u16();
    let bytes = response.bytes().await.unwrap();
    let body = if bytes.is_empty() {
        Value::Null
    } else {
        serde_json::from_slice(&bytes).unwrap()
    };
    (status, body)
}

/// A clip whose transcode takes some seconds on two cores (720p, 15 s), so
/// that a test can act on it while it is processed.
fn long_clip(dir: &Path) -> Vec<u8> {
    let path = dir.join("long.mp4");
    synth::write(&path, &Clip::mp4(VideoTrack::h264(1280, 720, 20), 15.0));
    std::fs::read(path).unwrap()
}

/// Uploads `bytes`; returns the new upload's id.
async fn send(client: &reqwest::Client, base: &str, key: &str, bytes: &[u8]) -> String {
    let response = client
        .post(format!("{base}/uploads"))
        .bearer_auth(key)
        .multipart(video_form(bytes.to_vec(), "long.mp4", "root"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 202);
    let body: Value = response.json().await.unwrap();
    body["data"]["id"].as_str().unwrap().to_string()
}

/// Polls the upload until `done(record)` holds (at most 60 s).
async fn wait_for(t: &TestServer, key: &str, id: &str, done: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let (code, body) = get_json(&t.client, &t.url(&format!("/uploads/{id}")), key).await;
        assert_eq!(code, 200, "{body}");
        if done(&body["data"]) {
            return body["data"].clone();
        }
        assert!(Instant::now() < deadline, "never reached: {body}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

fn media_urls(record: &Value) -> Vec<String> {
    let playback = &record["playback"];
    let mut urls: Vec<String> = ["mp4_url", "poster_url", "hls_url", "storyboard_url"]
        .iter()
        .filter_map(|field| playback[field].as_str().map(str::to_string))
        .collect();
    for rendition in record["renditions"].as_array().into_iter().flatten() {
        urls.extend(rendition["playlist_url"].as_str().map(str::to_string));
    }
    urls
}

async fn listed(t: &TestServer, key: &str) -> Vec<String> {
    let (code, list) = get_json(&t.client, &t.url("/uploads"), key).await;
    assert_eq!(code, 200, "{list}");
    list["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|u| u["id"].as_str().unwrap().to_string())
        .collect()
}

/// Deletes the upload (204, no body), then checks it is 404 everywhere, a
/// second DELETE is too, the list leaves it out, and no file of it is left
/// in the data dir; returns how long the DELETE took to answer.
async fn delete_and_check(t: &TestServer, key: &str, id: &str, data: &Path) -> Duration {
    let (_, record) = get_json(&t.client, &t.url(&format!("/uploads/{id}")), key).await;
    let media = media_urls(&record["data"]);
    let token = token_of(t, id);
    let asked = Instant::now();
    let (code, body) = act(&t.client, &t.base, key, id, "delete").await;
    let took = asked.elapsed();
    assert_eq!((code, &body), (204, &Value::Null));

    let (code, body) = get_json(&t.client, &t.url(&format!("/uploads/{id}")), key).await;
    assert_eq!(
        (code, body["code"].as_str()),
        (404, Some("not_found")),
        "{body}"
    );
    for url in &media {
        let (code, _, _) = fetch_media(&t.client, url).await;
        assert_eq!(code, 404, "{url}");
    }
    assert!(!listed(t, key).await.contains(&id.to_string()));
    let (code, _) = act(&t.client, &t.base, key, id, "delete").await;
    assert_eq!(code, 404);
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let left: Vec<String> = ["staging", "work", "media"]
            .iter()
            .flat_map(|folder| files_in(&data.join(folder)))
            .filter(|name| name.contains(id) || name.contains(&token))
            .collect();
        if left.is_empty() {
            break;
        }
        assert!(Instant::now() < deadline, "still left: {left:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    took
}

/// A webhook endpoint on loopback that records the `type` of every event.
async fn event_receiver() -> (String, Arc<Mutex<Vec<(String, String)>>>) {
    use warp::Filter;
    let events = Arc::new(Mutex::new(Vec::new()));
    let log = events.clone();
    let route = warp::post()
        .and(warp::body::json())
        .map(move |event: Value| {
            let id = event["data"]["id"].as_str().unwrap_or("").to_string();
            let kind = event["type"].as_str().unwrap_or("").to_string();
            log.lock().unwrap().push((id, kind));
            warp::reply()
        });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr: SocketAddr = listener.local_addr().unwrap();
    tokio::spawn(warp::serve(route).incoming(listener).run());
    (format!("http://{addr}/hook"), events)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deleted_upload_is_gone_whatever_its_status() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path();
    let key = create_key(data, "delete");
    let (hook, events) = event_receiver().await;
    let mut config = test_config(data).with_transcoders(1);
    config.webhooks = WebhookConfig {
        url: Some(hook),
        secret: Some("whsec_lifecycle".into()),
        ..WebhookConfig::default()
    };
    let t = TestServer::start(config).await;

    // Completed: its media answered before, and 404 after.
    let done = upload_to_end(&t, &key, "sample.mp4", "root").await;
    assert_eq!(done["status"], 6, "{done}");
    let media = media_urls(&done);
    assert!(media.len() >= 4, "{done}");
    for url in &media {
        let (code, _, body) = fetch_media(&t.client, url).await;
        assert_eq!(code, 200, "{url}: {body:?}");
    }
    let completed = done["id"].as_str().unwrap().to_string();
    delete_and_check(&t, &key, &completed, data).await;
    assert!(files_in(&data.join("media")).is_empty());

    // Failed: its kept source goes too.
    let failed = upload_to_end(&t, &key, "not-a-video.txt", "root").await;
    let failed = failed["id"].as_str().unwrap().to_string();
    assert!(files_in(&data.join("staging")).contains(&kept_source(&failed)));
    delete_and_check(&t, &key, &failed, data).await;

    // Processing (mid-transcode) and pending (queued behind it, one transcoder).
    let long = long_clip(data);
    let processing = send(&t.client, &t.base, &key, &long).await;
    let pending = send(&t.client, &t.base, &key, &long).await;
    wait_for(&t, &key, &processing, |u| {
        u["status"] == 3 && u["progress"].as_f64() > Some(0.0)
    })
    .await;
    let (_, record) = get_json(&t.client, &t.url(&format!("/uploads/{pending}")), &key).await;
    assert_eq!(record["data"]["status"], 1, "{record}");
    // The answer waits for the transcode to stop: within a second.
    let took = delete_and_check(&t, &key, &processing, data).await;
    assert!(took < Duration::from_secs(1), "answered after {took:?}");
    let jobs = &t.server.services().jobs;
    assert!(!jobs.is_running(Uuid::parse_str(&processing).unwrap()));
    // The freed transcoder takes the pending one at once; delete that mid-way too.
    wait_for(&t, &key, &pending, |u| u["status"] == 3).await;
    delete_and_check(&t, &key, &pending, data).await;
    // Deleted before it even started, while another runs.
    let running = send(&t.client, &t.base, &key, &long).await;
    let (_, fourth) = upload(&t.client, &t.base, &key, "sample.mp4", "root").await;
    let queued = fourth["data"]["id"].as_str().unwrap().to_string();
    let (_, record) = get_json(&t.client, &t.url(&format!("/uploads/{queued}")), &key).await;
    assert_eq!(record["data"]["status"], 1, "{record}");
    delete_and_check(&t, &key, &queued, data).await;
    delete_and_check(&t, &key, &running, data).await;
    let kept = upload_to_end(&t, &key, "sample.mp4", "root").await;
    assert_eq!(kept["status"], 6, "{kept}");
    let third = kept["id"].as_str().unwrap();

    // Another tenant's upload is not found, and stays.
    let other = create_key(data, "other");
    assert_eq!(
        act(&t.client, &t.base, &other, third, "delete").await.0,
        404
    );
    assert!(listed(&t, &key).await.contains(&third.to_string()));

    // Each deleted upload got its `upload.deleted` event, after its others.
    let deleted = [
        &completed,
        &failed,
        &processing,
        &pending,
        &queued,
        &running,
    ];
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let seen = events.lock().unwrap().clone();
        let done = deleted.iter().all(|id| {
            let of_it: Vec<&str> = seen
                .iter()
                .filter(|(of, _)| of == *id)
                .map(|(_, kind)| kind.as_str())
                .collect();
            of_it.last() == Some(&"upload.deleted")
        });
        if done {
            break;
        }
        assert!(Instant::now() < deadline, "events: {seen:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    t.server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancelled_upload_keeps_its_source_and_a_retry_completes_it() {
    let dir = tempfile::tempdir().unwrap();
    let key = create_key(dir.path(), "cancel");
    let t = TestServer::start(test_config(dir.path()).with_transcoders(1)).await;
    let long = long_clip(dir.path());
    let processing = send(&t.client, &t.base, &key, &long).await;
    let pending = send(&t.client, &t.base, &key, &long).await;

    // A pending upload cannot be retried; a processing one is cancelled mid-transcode.
    let (code, body) = act(&t.client, &t.base, &key, &pending, "retry").await;
    assert_eq!(
        (code, body["code"].as_str()),
        (409, Some("not_retryable")),
        "{body}"
    );
    // The pending one is cancelled before it starts (before the processing one
    // is, which would free the one transcoder for it).
    let (code, body) = act(&t.client, &t.base, &key, &pending, "cancel").await;
    assert_eq!(
        (code, &body["data"]["error"]["code"]),
        (200, &Value::from("cancelled")),
        "{body}"
    );
    wait_for(&t, &key, &processing, |u| {
        u["status"] == 3 && u["progress"].as_f64() > Some(0.0)
    })
    .await;
    let asked = Instant::now();
    let (code, body) = act(&t.client, &t.base, &key, &processing, "cancel").await;
    let answered = asked.elapsed();
    assert_eq!(code, 200, "{body}");
    assert_eq!(body["data"]["status"], 7, "{body}");
    assert_eq!(body["data"]["error"]["code"], "cancelled", "{body}");
    assert!(
        answered < Duration::from_secs(1),
        "answered after {answered:?}"
    );
    let jobs = &t.server.services().jobs;
    assert!(!jobs.is_running(Uuid::parse_str(&processing).unwrap()));
    // Its work files go; its source stays for a retry.
    let data = dir.path();
    let work = left_in(&data.join("work")).await;
    assert!(!work.iter().any(|f| f.contains(&processing)), "{work:?}");
    assert!(files_in(&data.join("staging")).contains(&kept_source(&processing)));

    for id in [&processing, &pending] {
        let (code, body) = act(&t.client, &t.base, &key, id, "cancel").await;
        assert_eq!(
            (code, body["code"].as_str()),
            (409, Some("not_cancellable")),
            "{body}"
        );
    }

    // A retry runs it again from its source, as a new upload would.
    let (code, body) = act(&t.client, &t.base, &key, &processing, "retry").await;
    assert_eq!(code, 202, "{body}");
    assert_eq!(body["data"]["status"], 1, "{body}");
    assert!(body["data"]["error"].is_null(), "{body}");
    assert_eq!(body["data"]["progress"], 0, "{body}");
    let (code, body) = act(&t.client, &t.base, &key, &processing, "retry").await;
    assert_eq!(
        (code, body["code"].as_str()),
        (409, Some("not_retryable")),
        "{body}"
    );
    let done = wait_terminal(&t.client, &t.base, &key, &processing).await;
    assert_eq!(done["status"], 6, "{done}");
    assert!(done["error"].is_null(), "{done}");
    for url in media_urls(&done) {
        assert_eq!(fetch_media(&t.client, &url).await.0, 200, "{url}");
    }
    // Completed: neither cancelled nor retried; and its source is gone.
    for action in ["cancel", "retry"] {
        let (code, _) = act(&t.client, &t.base, &key, &processing, action).await;
        assert_eq!(code, 409, "{action}");
    }
    let staging = settled_in(&data.join("staging"), &[kept_source(&pending)]).await;
    assert_eq!(staging, vec![kept_source(&pending)]);
    // Unknown and malformed ids are not found.
    for id in [Uuid::new_v4().to_string(), "nope".to_string()] {
        for action in ["cancel", "retry", "delete"] {
            let (code, body) = act(&t.client, &t.base, &key, &id, action).await;
            assert_eq!(
                (code, body["code"].as_str()),
                (404, Some("not_found")),
                "{action} {id}"
            );
        }
    }
    t.server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sweeper_frees_a_failed_uploads_source_when_its_time_is_up() {
    let dir = tempfile::tempdir().unwrap();
    let key = create_key(dir.path(), "sweep");
    let mut config = test_config(dir.path());
    config.failed_source_retention = Duration::from_secs(2);
    let t = TestServer::start(config.clone()).await;
    let failed = upload_to_end(&t, &key, "not-a-video.txt", "root").await;
    let id = failed["id"].as_str().unwrap().to_string();
    let staging = dir.path().join("staging");
    assert_eq!(files_in(&staging), vec![kept_source(&id)]);
    // Freed within its time and one look of the sweeper.
    let deadline = Instant::now() + Duration::from_secs(10);
    while !files_in(&staging).is_empty() {
        assert!(
            Instant::now() < deadline,
            "still kept: {:?}",
            files_in(&staging)
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (code, body) = act(&t.client, &t.base, &key, &id, "retry").await;
    assert_eq!(
        (code, body["code"].as_str()),
        (409, Some("not_retryable")),
        "{body}"
    );
    let (_, record) = get_json(&t.client, &t.url(&format!("/uploads/{id}")), &key).await;
    assert_eq!(record["data"]["status"], 7, "{record}");
    assert_eq!(record["data"]["error"]["code"], "unsupported_media");
    t.server.shutdown().await;

    // A source that fell due while the server was down is freed at start.
    let t = TestServer::start(config).await;
    let failed = upload_to_end(&t, &key, "not-a-video.txt", "root").await;
    let id = failed["id"].as_str().unwrap().to_string();
    t.server.shutdown().await;
    assert_eq!(files_in(&staging), vec![kept_source(&id)]);
    tokio::time::sleep(Duration::from_secs(3)).await;
    let t = TestServer::start(test_config(dir.path())).await;
    let deadline = Instant::now() + Duration::from_secs(10);
    while !files_in(&staging).is_empty() {
        assert!(Instant::now() < deadline, "still kept after a restart");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(t.server.services().store.kept_sources().unwrap().is_empty());
    t.server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deletion_and_a_cancel_hold_across_a_kill_right_after_their_answer() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path();
    let key = keys_create(data);
    let client = reqwest::Client::new();
    let mut server = start(data, &[]);
    // One transcoder: the first runs, the others wait.
    let mut ids = Vec::new();
    for _ in 0..3 {
        let (code, body) = upload(&client, &server.base, &key, "sample.mp4", "root").await;
        assert_eq!(code, 202, "{body}");
        ids.push(body["data"]["id"].as_str().unwrap().to_string());
    }
    let (running, deleted, cancelled) = (&ids[0], &ids[1], &ids[2]);
    let (code, _) = act(&client, &server.base, &key, deleted, "delete").await;
    assert_eq!(code, 204);
    let (code, body) = act(&client, &server.base, &key, cancelled, "cancel").await;
    assert_eq!(code, 200, "{body}");
    server.kill9();

    let server = start(data, &[]);
    let (code, _) = get_json(&client, &format!("{}/uploads/{deleted}", server.base), &key).await;
    assert_eq!(code, 404);
    let (code, body) = get_json(
        &client,
        &format!("{}/uploads/{cancelled}", server.base),
        &key,
    )
    .await;
    assert_eq!(code, 200);
    assert_eq!(body["data"]["status"], 7, "{body}");
    assert_eq!(body["data"]["error"]["code"], "cancelled", "{body}");
    let done = wait_terminal(&client, &server.base, &key, running).await;
    assert_eq!(done["status"], 6, "{done}");
    // Only the cancelled upload's source is left, kept for a retry; the
    // deleted one's files are gone.
    let staging = settled_in(&data.join("staging"), &[kept_source(cancelled)]).await;
    assert_eq!(staging, vec![kept_source(cancelled)]);
    for folder in ["work", "media"] {
        let left = files_in(&data.join(folder));
        assert!(
            !left.iter().any(|f| f.contains(deleted.as_str())),
            "{left:?}"
        );
    }
    let (code, body) = act(&client, &server.base, &key, cancelled, "retry").await;
    assert_eq!(code, 202, "{body}");
    let done = wait_terminal(&client, &server.base, &key, cancelled).await;
    assert_eq!(done["status"], 6, "{done}");
    let mut server = server;
    server.kill9();
}

/// A server storing to `weed` under `prefix`, pausing after each file stored
/// so an upload can be caught at status 5 with part of it in the bucket.
async fn s3_server(weed: &Seaweed, prefix: &str, data: &Path) -> TestServer {
    let mut config = test_config(data);
    config.s3 = Some(S3Config {
        max_attempts: 3,
        retry_initial_backoff_ms: 50,
        retry_max_backoff_ms: 200,
        ..weed.s3_config(prefix)
    });
    config.faults.storage_put_delay = Some(Duration::from_millis(400));
    TestServer::start(config).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleting_an_upload_mid_store_leaves_nothing_in_the_bucket() {
    let Some(weed) = Seaweed::start().await else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let key = create_key(dir.path(), "s3-delete");
    let t = s3_server(&weed, "gone", dir.path()).await;
    let (code, body) = upload(&t.client, &t.base, &key, "sample.mp4", "root").await;
    assert_eq!(code, 202, "{body}");
    let id = body["data"]["id"].as_str().unwrap().to_string();
    let deadline = Instant::now() + Duration::from_secs(120);
    while weed.keys("gone").await.is_empty() {
        assert!(Instant::now() < deadline, "nothing was ever stored");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let (_, record) = get_json(&t.client, &t.url(&format!("/uploads/{id}")), &key).await;
    assert_eq!(record["data"]["status"], 5, "{record}");
    let token = token_of(&t, &id);
    assert_eq!(act(&t.client, &t.base, &key, &id, "delete").await.0, 204);
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let keys = weed.keys("gone").await;
        if keys.is_empty() {
            break;
        }
        assert!(Instant::now() < deadline, "still in the bucket: {keys:?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // Nor an unfinished multipart upload, nor anything stored after the delete.
    let storage = S3Storage::new(&weed.s3_config("gone"), CancellationToken::new()).unwrap();
    let open: Vec<_> = storage.interrupted_uploads(&token).await.unwrap().concat();
    assert!(open.is_empty(), "{open:?}");
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(weed.keys("gone").await.is_empty());
    let (code, _) = get_json(&t.client, &t.url(&format!("/uploads/{id}")), &key).await;
    assert_eq!(code, 404);
    assert!(t
        .server
        .services()
        .store
        .pending_cleanups()
        .unwrap()
        .is_empty());
    t.server.shutdown().await;
}
