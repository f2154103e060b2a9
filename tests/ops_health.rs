//! `/healthz` and `/readyz`: liveness, and readiness that follows the
//! database, the storage folders and the transcoder pool.

mod common;

use std::time::{Duration, Instant};

use common::*;
use serde_json::Value;

async fn get(t: &TestServer, path: &str) -> (u16, Value) {
    let response = t
        .client
        .get(format!("http://{}{path}", t.server.addr()))
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    assert_eq!(response.headers()["content-type"], "application/json");
    (status, response.json().await.unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_and_readiness_need_no_key() {
    let dir = tempfile::tempdir().unwrap();
    let t = TestServer::start(test_config(dir.path())).await;
    let (code, body) = get(&t, "/healthz").await;
    assert_eq!((code, body), (200, serde_json::json!({ "status": "ok" })));
    let (code, body) = get(&t, "/readyz").await;
    assert_eq!(code, 200, "{body}");
    assert_eq!(body["status"], "ready");
    for check in ["database", "storage", "transcoders"] {
        assert_eq!(body["checks"][check], "ok", "{body}");
    }
    assert!(body.get("reason").is_none());
    t.server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readiness_turns_503_when_storage_is_unwritable_and_recovers() {
    let dir = tempfile::tempdir().unwrap();
    let t = TestServer::start(test_config(dir.path())).await;

    // Tests run as root, so permissions would not stop the writes: replace
    // the media folder with a file instead.
    let media = dir.path().join("media");
    std::fs::remove_dir_all(&media).unwrap();
    std::fs::write(&media, b"not a folder").unwrap();
    let (code, body) = get(&t, "/readyz").await;
    assert_eq!(code, 503, "{body}");
    assert_eq!(body["status"], "not_ready");
    let reason = body["reason"].as_str().unwrap();
    assert!(reason.starts_with("storage: media folder"), "{reason}");
    assert_ne!(body["checks"]["storage"], "ok");
    assert_eq!(body["checks"]["database"], "ok");
    assert_eq!(body["checks"]["transcoders"], "ok");
    // Liveness does not depend on it.
    assert_eq!(get(&t, "/healthz").await.0, 200);

    std::fs::remove_file(&media).unwrap();
    std::fs::create_dir(&media).unwrap();
    let (code, body) = get(&t, "/readyz").await;
    assert_eq!(code, 200, "{body}");
    // The probe leaves nothing behind.
    assert!(files_in(&media).is_empty());
    assert!(files_in(&dir.path().join("staging")).is_empty());
    t.server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readiness_follows_the_transcoder_pool() {
    let dir = tempfile::tempdir().unwrap();
    let t = TestServer::start(test_config(dir.path())).await;
    // Stop the pool without its supervisor knowing: it is not restarted.
    let pool = t
        .server
        .services()
        .peers
        .transcoders
        .get()
        .unwrap()
        .get_cell();
    let supervisor = pool.try_get_supervisor().unwrap();
    pool.unlink(supervisor);
    pool.stop(None);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (code, body) = get(&t, "/readyz").await;
        if code == 503 {
            assert_eq!(
                body["checks"]["transcoders"],
                "transcoder pool is not running"
            );
            assert!(body["reason"].as_str().unwrap().starts_with("transcoders:"));
            break;
        }
        assert!(Instant::now() < deadline, "still ready: {body}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    t.server.shutdown().await;
}
