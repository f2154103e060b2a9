//! A failed upload leaves nothing in the bucket, even when the store is down
//! at the moment it fails: the removal is recorded with the failure, tried
//! again with backoff until the store answers, and taken up again at the
//! next start (SeaweedFS on loopback, see `common::seaweed`).

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use common::seaweed::Seaweed;
use common::*;
use tokio_util::sync::CancellationToken;
use vidpipe::storage::s3::{S3Config, S3Storage};

/// A server storing to `weed` under `prefix`: the HLS ladder (many files),
/// three tries a request with short waits, and a pause after each file
/// stored so that the store can be killed halfway through.
async fn server(weed: &Seaweed, prefix: &str, data: &Path) -> TestServer {
    let s3 = S3Config {
        max_attempts: 3,
        retry_initial_backoff_ms: 50,
        retry_max_backoff_ms: 200,
        ..weed.s3_config(prefix)
    };
    let mut config = test_config(data);
    config.s3 = Some(s3);
    config.faults.storage_put_delay = Some(Duration::from_millis(400));
    TestServer::start(config).await
}

/// Uploads a clip, kills the store once some of its files are in the
/// bucket, and waits for the upload to fail; returns the keys it left.
async fn fail_with_the_store_down(
    weed: &mut Seaweed,
    t: &TestServer,
    key: &str,
    prefix: &str,
) -> (Vec<String>, String) {
    let (code, body) = upload(&t.client, &t.base, key, "sample.mp4", "root").await;
    assert_eq!(code, 202, "{body}");
    let id = body["data"]["id"].as_str().unwrap().to_string();
    let deadline = Instant::now() + TERMINAL_DEADLINE;
    let left = loop {
        let keys = weed.keys(prefix).await;
        if !keys.is_empty() {
            break keys;
        }
        assert!(Instant::now() < deadline, "nothing was ever stored");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    weed.stop();
    let failed = wait_terminal(&t.client, &t.base, key, &id).await;
    assert_eq!(failed["status"], 7, "{failed}");
    assert_eq!(failed["error"]["code"], "storage_error", "{failed}");
    let id = uuid::Uuid::parse_str(&id).unwrap();
    let token = t
        .server
        .services()
        .store
        .get(id)
        .unwrap()
        .unwrap()
        .media_token;
    (left, token)
}

/// Waits until nothing is left under `prefix`.
async fn wait_empty(weed: &Seaweed, prefix: &str) {
    let deadline = Instant::now() + Duration::from_secs(45);
    loop {
        let keys = weed.keys(prefix).await;
        if keys.is_empty() {
            return;
        }
        assert!(Instant::now() < deadline, "still in the bucket: {keys:?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

fn metric(text: &str, name: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' '))
        .unwrap_or_else(|| panic!("{name} missing"))
        .parse()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_objects_of_an_upload_failed_with_the_store_down_go_once_it_answers() {
    let Some(mut weed) = Seaweed::start().await else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let key = create_key(dir.path(), "cleanup");
    let t = server(&weed, "down", dir.path()).await;
    let (left, token) = fail_with_the_store_down(&mut weed, &t, &key, "down").await;
    assert!(!left.is_empty());
    // The removal is owed and has failed at least once while the store was down.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let metrics = t.get_ops("/metrics").await.text().await.unwrap();
        let failures = metric(&metrics, "vidpipe_storage_cleanup_failures_total");
        if failures >= 1.0 {
            assert_eq!(metric(&metrics, "vidpipe_storage_cleanups_pending"), 1.0);
            break;
        }
        assert!(Instant::now() < deadline, "no removal was tried: {metrics}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    weed.start_again().await;
    wait_empty(&weed, "down").await;
    // And the removal is settled.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let metrics = t.get_ops("/metrics").await.text().await.unwrap();
        if metric(&metrics, "vidpipe_storage_cleanups_pending") == 0.0 {
            break;
        }
        assert!(Instant::now() < deadline, "the removal is still owed");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(t
        .server
        .services()
        .store
        .pending_cleanups()
        .unwrap()
        .is_empty());
    // No multipart upload of it is left open either (files above 64 KiB go up in parts).
    let storage = S3Storage::new(&weed.s3_config("down"), CancellationToken::new()).unwrap();
    let open: Vec<_> = storage.interrupted_uploads(&token).await.unwrap().concat();
    assert!(open.is_empty(), "{open:?}");
    t.server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_removal_owed_at_shutdown_is_done_after_the_next_start() {
    let Some(mut weed) = Seaweed::start().await else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let key = create_key(dir.path(), "cleanup");
    let t = server(&weed, "restart", dir.path()).await;
    let _ = fail_with_the_store_down(&mut weed, &t, &key, "restart").await;
    t.server.shutdown().await;
    // The store answers again while no server runs: the objects are still there.
    weed.start_again().await;
    assert!(!weed.keys("restart").await.is_empty());
    let again = server(&weed, "restart", dir.path()).await;
    wait_empty(&weed, "restart").await;
    let deadline = Instant::now() + Duration::from_secs(10);
    while !again
        .server
        .services()
        .store
        .pending_cleanups()
        .unwrap()
        .is_empty()
    {
        assert!(Instant::now() < deadline, "the removal is still owed");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    again.server.shutdown().await;
}
