//! Signed webhooks against a local receiver that fails the first deliveries:
//! the global endpoint, a tenant's endpoint and an upload's `callback_url`
//! each get every event of their uploads, in order per upload, signed with
//! their own secret, even though the server restarts while deliveries are
//! still being retried.

mod common;
mod synth;

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::*;
use hmac::{Hmac, Mac};
use serde_json::Value;
use sha2::Sha256;
use uuid::Uuid;
use vidpipe::config::Config;
use vidpipe::store::keys::KeyFile;
use vidpipe::webhook::WebhookConfig;

const GLOBAL_SECRET: &str = "whsec_global-test-secret";

/// One request the receiver got.
#[derive(Debug, Clone)]
struct Hit {
    path: String,
    /// What the receiver answered.
    status: u16,
    headers: HashMap<String, String>,
    body: bytes::Bytes,
}

/// A webhook endpoint on loopback that answers 500 while `failing` is set.
struct Receiver {
    addr: SocketAddr,
    hits: Arc<Mutex<Vec<Hit>>>,
    failing: Arc<AtomicBool>,
}

impl Receiver {
    async fn start() -> Receiver {
        use warp::Filter;
        let hits = Arc::new(Mutex::new(Vec::new()));
        let failing = Arc::new(AtomicBool::new(true));
        let (log, fail) = (hits.clone(), failing.clone());
        let route = warp::post()
            .and(warp::path::full())
            .and(warp::header::headers_cloned())
            .and(warp::body::bytes())
            .map(
                move |path: warp::path::FullPath,
                      headers: warp::http::HeaderMap,
                      body: bytes::Bytes| {
                    let status = if fail.load(Ordering::SeqCst) {
                        500
                    } else {
                        204
                    };
                    let headers = headers
                        .iter()
                        .map(|(k, v)| (k.to_string(), v.to_str().unwrap_or("").to_string()))
                        .collect();
                    log.lock().unwrap().push(Hit {
                        path: path.as_str().to_string(),
                        status,
                        headers,
                        body,
                    });
                    warp::reply::with_status(
                        warp::reply(),
                        warp::http::StatusCode::from_u16(status).unwrap(),
                    )
                },
            );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(warp::serve(route).incoming(listener).run());
        Receiver {
            addr,
            hits,
            failing,
        }
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    fn hits(&self) -> Vec<Hit> {
        self.hits.lock().unwrap().clone()
    }
}

fn config(data: &std::path::Path, receiver: &Receiver) -> Config {
    let mut config = test_config(data);
    config.profile.hls = false;
    config.webhooks = WebhookConfig {
        url: Some(receiver.url("/global")),
        secret: Some(GLOBAL_SECRET.into()),
        initial_backoff_ms: 200,
        max_backoff_secs: 1,
        poll_interval_ms: 100,
        // The receiver listens on loopback.
        allow_private_callback_urls: true,
        ..WebhookConfig::default()
    };
    config
}

/// Checks `vidpipe-signature: t=...,v1=...` the way a receiver would.
fn signature_is_valid(hit: &Hit, secret: &str) -> bool {
    let Some(header) = hit.headers.get("vidpipe-signature") else {
        return false;
    };
    let parts: HashMap<&str, &str> = header
        .split(',')
        .filter_map(|p| p.split_once('='))
        .collect();
    let (Some(t), Some(v1)) = (parts.get("t"), parts.get("v1")) else {
        return false;
    };
    let age = time::OffsetDateTime::now_utc().unix_timestamp() - t.parse::<i64>().unwrap();
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).unwrap();
    mac.update(format!("{t}.").as_bytes());
    mac.update(&hit.body);
    let expected = hex::encode(mac.finalize().into_bytes());
    expected == *v1 && (0..300).contains(&age)
}

async fn post(
    t: &TestServer,
    key: &str,
    fixture_name: &str,
    callback: Option<&str>,
) -> (u16, Value) {
    let bytes = std::fs::read(fixture(fixture_name)).unwrap();
    let mut form = video_form(bytes, fixture_name, "root/hooks");
    if let Some(url) = callback {
        form = form.text("callback_url", url.to_string());
    }
    let response = t.post_form(key, form).await;
    let status = response.status().as_u16();
    (status, response.json().await.unwrap())
}

/// The event types an upload's history calls for, from the database.
fn expected_events(t: &TestServer, id: &str) -> Vec<String> {
    let id = Uuid::parse_str(id).unwrap();
    t.server
        .services()
        .store
        .transitions(id)
        .unwrap()
        .iter()
        .map(|tr| format!("upload.{}", tr.to.text()))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_event_arrives_signed_and_in_order_across_a_restart() {
    let receiver = Receiver::start().await;
    let dir = tempfile::tempdir().unwrap();
    let keys = KeyFile::new(dir.path());
    let (with_hook, key_a) = keys
        .create_with_webhook("with-hook", Some(&receiver.url("/tenant")))
        .unwrap();
    let (without_hook, key_b) = keys.create("callbacks-only").unwrap();
    let secret_a = with_hook.webhook_secret.clone().unwrap();
    let secret_b = without_hook.webhook_secret.clone().unwrap();

    let t = TestServer::start(config(dir.path(), &receiver)).await;
    // A callback_url must be an http(s) URL.
    let (code, body) = post(&t, &key_b, "sample.mp4", Some("ftp://example.com/x")).await;
    assert_eq!(code, 422, "{body}");
    assert!(body["errors"]["callback_url"].is_array(), "{body}");

    let (code, a) = post(&t, &key_a, "sample.mp4", None).await;
    assert_eq!(code, 202, "{a}");
    let callback = receiver.url("/callback?upload=b");
    let (code, b) = post(&t, &key_b, "no-audio.mp4", Some(&callback)).await;
    assert_eq!(code, 202, "{b}");
    let (code, c) = post(&t, &key_a, "not-a-video.txt", None).await;
    assert_eq!(code, 202, "{c}");
    let ids: Vec<String> = [&a, &b, &c]
        .iter()
        .map(|v| v["data"]["id"].as_str().unwrap().to_string())
        .collect();
    let keys_of = [&key_a, &key_b, &key_a];
    for (id, key) in ids.iter().zip(keys_of) {
        wait_terminal(&t.client, &t.base, key, id).await;
    }
    let expected: Vec<Vec<String>> = ids.iter().map(|id| expected_events(&t, id)).collect();
    assert_eq!(expected[0].last().unwrap(), "upload.completed");
    assert_eq!(expected[2].last().unwrap(), "upload.failed");

    // Every endpoint has been failing: deliveries are being retried. Restart now.
    let deadline = Instant::now() + Duration::from_secs(30);
    while receiver.hits().iter().filter(|h| h.status == 500).count() < 6 {
        assert!(
            Instant::now() < deadline,
            "no retries: {:?}",
            receiver.hits()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(t.server.services().store.outbox_len().unwrap() > 0);
    t.server.shutdown().await;
    let t = TestServer::start(config(dir.path(), &receiver)).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    receiver.failing.store(false, Ordering::SeqCst);
    let deadline = Instant::now() + Duration::from_secs(60);
    while t.server.services().store.outbox_len().unwrap() > 0 {
        assert!(Instant::now() < deadline, "outbox never drained");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // What each endpoint accepted, de-duplicated by event id, in arrival order.
    let mut accepted: BTreeMap<(String, String), Vec<String>> = BTreeMap::new();
    let mut seen = std::collections::HashSet::new();
    for hit in receiver.hits().into_iter() {
        let endpoint = hit.path.clone();
        let secret = match endpoint.as_str() {
            "/global" => GLOBAL_SECRET,
            "/tenant" => &secret_a,
            "/callback" => &secret_b,
            other => panic!("unexpected path {other}"),
        };
        assert!(signature_is_valid(&hit, secret), "bad signature on {hit:?}");
        let event: Value = serde_json::from_slice(&hit.body).unwrap();
        let event_id = hit.headers["vidpipe-event-id"].clone();
        assert_eq!(event["id"], event_id.as_str());
        assert_eq!(event["type"], hit.headers["vidpipe-event-type"].as_str());
        assert_eq!(hit.headers["content-type"], "application/json");
        let data = &event["data"];
        assert_eq!(
            event["type"].as_str().unwrap(),
            format!("upload.{}", data["status_text"].as_str().unwrap())
        );
        if event["type"] == "upload.completed" {
            assert!(data["playback"]["mp4_url"].is_string(), "{event}");
        }
        if hit.status != 204 || !seen.insert((endpoint.clone(), event_id)) {
            continue;
        }
        let upload = data["id"].as_str().unwrap().to_string();
        accepted
            .entry((endpoint, upload))
            .or_default()
            .push(event["type"].as_str().unwrap().to_string());
    }
    let want =
        |endpoint: &str, n: usize| ((endpoint.to_string(), ids[n].clone()), expected[n].clone());
    let expected_map: BTreeMap<(String, String), Vec<String>> = [
        want("/global", 0),
        want("/global", 1),
        want("/global", 2),
        want("/tenant", 0),
        want("/tenant", 2),
        want("/callback", 1),
    ]
    .into_iter()
    .collect();
    assert_eq!(accepted, expected_map);
    t.server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn callback_urls_into_the_servers_own_network_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let (_, key) = KeyFile::new(dir.path()).create("app").unwrap();
    let t = TestServer::start(test_config(dir.path())).await;
    for url in [
        "http://127.0.0.1:9/hook",
        "http://localhost:8080/hook",
        "http://169.254.169.254/latest/meta-data/",
        "http://[::1]/hook",
        "http://10.0.0.7/hook",
        "http://2130706433/hook",
    ] {
        let (code, body) = post(&t, &key, "sample.mp4", Some(url)).await;
        assert_eq!(code, 422, "{url}: {body}");
        let message = body["errors"]["callback_url"][0].as_str().unwrap();
        assert!(message.contains("loopback, private"), "{message}");
    }
    // Nothing was accepted.
    let (_, list) = get_json(&t.client, &t.url("/uploads"), &key).await;
    assert_eq!(list["data"].as_array().unwrap().len(), 0);
    t.server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_ladder_playable_while_processing_is_told_as_upload_previewable() {
    let receiver = Receiver::start().await;
    receiver.failing.store(false, Ordering::SeqCst);
    let dir = tempfile::tempdir().unwrap();
    let (_, key) = KeyFile::new(dir.path()).create("app").unwrap();
    let mut config = config(dir.path(), &receiver);
    config.profile.hls = true;
    config.profile.hls_segment_secs = 2.0;
    let t = TestServer::start(config).await;
    // Long enough that its first segments are written well before the end.
    let clip = dir.path().join("clip.mp4");
    synth::write(
        &clip,
        &synth::Clip::mp4(synth::VideoTrack::h264(854, 480, 25), 12.0),
    );
    let form = video_form(std::fs::read(&clip).unwrap(), "clip.mp4", "root");
    let response = t.post_form(&key, form).await;
    assert_eq!(response.status(), 202);
    let body: Value = response.json().await.unwrap();
    let id = body["data"]["id"].as_str().unwrap().to_string();
    let done = wait_terminal(&t.client, &t.base, &key, &id).await;
    assert_eq!(done["status"], 6, "{done}");
    let deadline = Instant::now() + Duration::from_secs(30);
    while t.server.services().store.outbox_len().unwrap() > 0 {
        assert!(Instant::now() < deadline, "outbox never drained");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    let events: Vec<Value> = receiver
        .hits()
        .iter()
        .filter(|hit| hit.status == 204)
        .inspect(|hit| assert!(signature_is_valid(hit, GLOBAL_SECRET)))
        .map(|hit| serde_json::from_slice(&hit.body).unwrap())
        .collect();
    let types: Vec<&str> = events.iter().map(|e| e["type"].as_str().unwrap()).collect();
    assert_eq!(
        types,
        [
            "upload.pending",
            "upload.processing",
            "upload.previewable",
            "upload.uploading",
            "upload.completed"
        ]
    );
    let previewable = &events[2]["data"];
    assert_eq!(previewable["status"], 3, "{previewable}");
    assert!(previewable["playback"].is_null(), "{previewable}");
    let url = previewable["preview"]["hls_url"].as_str().unwrap();
    assert!(url.ends_with("/hls/master.m3u8"), "{url}");
    // Before it, no preview; after the transcode, the same one while the
    // outputs are stored; once completed, none.
    assert!(events[1]["data"].get("preview").is_none());
    assert_eq!(events[3]["data"]["preview"]["hls_url"], url);
    assert!(events[4]["data"].get("preview").is_none());
    t.server.shutdown().await;
}
