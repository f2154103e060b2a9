//! An object store that refuses the settings (SeaweedFS on loopback, see
//! `common::seaweed`): a wrong secret or a missing bucket is reported at
//! start with the setting to fix and `/readyz` is not ready while it lasts;
//! an upload under a wrong secret fails without retrying the refusal; making
//! the bucket recovers without a restart; and `/readyz` costs the store one
//! request per check period however many probes come.

mod common;

use std::time::{Duration, Instant};

use common::seaweed::Seaweed;
use common::*;
use serde_json::Value;
use vidpipe::storage::check::CHECK_PERIOD;

/// The line the S3 backend logs before each retry.
const RETRY_LINE: &str = "object store request failed; retrying";

/// The real binary, killed on drop (also when an assertion fails).
struct Binary(Running);

impl Drop for Binary {
    fn drop(&mut self) {
        self.0.kill9();
    }
}

impl Binary {
    /// Starts the binary storing to `weed` in `bucket` with the credentials
    /// `secret`, MP4 only, five tries per request; returns it with an API key.
    fn start(
        weed: &Seaweed,
        dir: &std::path::Path,
        bucket: &str,
        secret: &str,
    ) -> (Binary, String) {
        let data = dir.join("data");
        std::fs::create_dir(&data).unwrap();
        let s3 = weed.s3_config("faults");
        let config = dir.join("vidpipe.toml");
        let toml = format!(
            "[profile]\nhls = false\n\n[s3]\nendpoint = \"{}\"\nbucket = \"{bucket}\"\npath_style = true\nprefix = \"faults\"\nmax_attempts = {}\nretry_initial_backoff_ms = {}\nretry_max_backoff_ms = {}\n",
            weed.endpoint(),
            s3.max_attempts,
            s3.retry_initial_backoff_ms,
            s3.retry_max_backoff_ms,
        );
        std::fs::write(&config, toml).unwrap();
        let key = keys_create(&data);
        let env = [
            ("VIDPIPE_CONFIG", config.to_str().unwrap()),
            (
                "VIDPIPE_S3_ACCESS_KEY_ID",
                s3.access_key_id.as_deref().unwrap(),
            ),
            ("VIDPIPE_S3_SECRET_ACCESS_KEY", secret),
        ];
        (Binary(start(&data, &env)), key)
    }

    fn ops_url(&self, path: &str) -> String {
        self.0.base.replace("/api/client/v1", path)
    }

    fn log(&self) -> Vec<String> {
        self.0.log.lock().unwrap().clone()
    }

    /// Waits for a log line at `ERROR` that contains every one of `parts`.
    async fn wait_error_line(&self, parts: &[&str]) -> String {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let found = self
                .log()
                .into_iter()
                .find(|l| l.contains("ERROR") && parts.iter().all(|p| l.contains(p)));
            if let Some(line) = found {
                return line;
            }
            assert!(
                Instant::now() < deadline,
                "no error line with {parts:?}: {:#?}",
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

async fn readyz(client: &reqwest::Client, url: &str) -> (u16, Value) {
    let response = client.get(url).send().await.unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap())
}

/// `/readyz` is 503 with storage as the failed check, its reason containing `why`.
async fn assert_not_ready_for_storage(client: &reqwest::Client, url: &str, why: &str) {
    let (status, body) = readyz(client, url).await;
    assert_eq!(status, 503, "{body}");
    assert_eq!(body["status"], "not_ready", "{body}");
    let reason = body["reason"].as_str().unwrap();
    assert!(
        reason.starts_with("storage: ") && reason.contains(why),
        "{body}"
    );
    assert_eq!(body["checks"]["database"], "ok", "{body}");
}

/// Uploads `sample.mp4` and waits for its end: it must fail with
/// `storage_error` naming `why`, and the refusal must not have been retried.
async fn assert_upload_fails_unretried(server: &Binary, key: &str, why: &str) {
    let client = reqwest::Client::new();
    let (code, body) = upload(&client, &server.0.base, key, "sample.mp4", "root").await;
    assert_eq!(code, 202, "{body}");
    let id = body["data"]["id"].as_str().unwrap();
    let started = Instant::now();
    let done = wait_terminal(&client, &server.0.base, key, id).await;
    eprintln!(
        "upload failed {:.1} s after it was accepted",
        started.elapsed().as_secs_f64()
    );
    assert_eq!(done["status"], 7, "{done}");
    assert_eq!(done["error"]["code"], "storage_error", "{done}");
    let message = done["error"]["message"].as_str().unwrap_or_default();
    assert!(message.contains(why), "{done}");
    let retries = server
        .log()
        .iter()
        .filter(|l| l.contains(RETRY_LINE))
        .count();
    assert_eq!(retries, 0, "{:#?}", server.log());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_secret_is_reported_at_start_and_not_retried() {
    let Some(weed) = Seaweed::start().await else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let bucket = weed.s3_config("").bucket;
    let (server, key) = Binary::start(&weed, dir.path(), &bucket, "not-the-secret");
    let line = server
        .wait_error_line(&["refused the credentials", "s3.secret_access_key"])
        .await;
    assert!(line.contains("/readyz is not ready"), "{line}");
    let client = reqwest::Client::new();
    let url = server.ops_url("/readyz");
    assert_not_ready_for_storage(&client, &url, "s3.secret_access_key").await;
    assert_upload_fails_unretried(&server, &key, "s3.secret_access_key").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_bucket_is_reported_at_start_and_creating_it_recovers() {
    let Some(weed) = Seaweed::start().await else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let secret = weed.s3_config("").secret_access_key.unwrap();
    let (server, _key) = Binary::start(&weed, dir.path(), "vidpipe-missing", &secret);
    server
        .wait_error_line(&["bucket vidpipe-missing does not exist", "s3.bucket"])
        .await;
    let client = reqwest::Client::new();
    let url = server.ops_url("/readyz");
    assert_not_ready_for_storage(&client, &url, "vidpipe-missing does not exist").await;
    // No upload here: SeaweedFS creates a missing bucket on the first PutObject
    // (AWS S3 answers 404 NoSuchBucket, which `storage::s3` does not retry).

    // The bucket made: ready again once the last outcome has had its period, without a restart.
    weed.create_bucket("vidpipe-missing").await;
    let deadline = Instant::now() + CHECK_PERIOD + Duration::from_secs(10);
    loop {
        let (status, body) = readyz(&client, &url).await;
        if status == 200 {
            assert_eq!(body["checks"]["storage"], "ok", "{body}");
            break;
        }
        assert!(Instant::now() < deadline, "still not ready: {body}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Sends `n` probes at once; each must answer `expected`.
async fn probe_storm(client: &reqwest::Client, url: &str, n: usize, expected: u16) {
    let probes = (0..n).map(|_| readyz(client, url));
    for (status, body) in futures_util::future::join_all(probes).await {
        assert_eq!(status, expected, "{body}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readyz_costs_the_store_one_request_per_period() {
    let Some(mut weed) = Seaweed::start().await else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let s3 = weed.s3_config("");
    let (server, _key) = Binary::start(
        &weed,
        dir.path(),
        &s3.bucket,
        s3.secret_access_key.as_deref().unwrap(),
    );
    let client = reqwest::Client::new();
    let url = server.ops_url("/readyz");
    let (status, body) = readyz(&client, &url).await;
    assert_eq!(status, 200, "{body}");

    // Past the period, a storm of probes: exactly one request to the store.
    tokio::time::sleep(CHECK_PERIOD + Duration::from_millis(500)).await;
    let before = weed.s3_requests().await;
    probe_storm(&client, &url, 50, 200).await;
    let storm = weed.s3_requests().await - before;
    assert_eq!(storm, 1, "store requests for 50 probes");
    // Within the period: none.
    probe_storm(&client, &url, 50, 200).await;
    assert_eq!(weed.s3_requests().await - before, 1);

    // The store gone: not ready, naming storage, once the last outcome has had its period.
    weed.stop();
    let stopped = Instant::now();
    let deadline = stopped + CHECK_PERIOD + Duration::from_secs(10);
    loop {
        let (status, body) = readyz(&client, &url).await;
        if status == 503 {
            assert!(
                body["reason"].as_str().unwrap().starts_with("storage: "),
                "{body}"
            );
            break;
        }
        assert!(Instant::now() < deadline, "still ready: {body}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    eprintln!(
        "storm: {storm} request(s) for 50 probes; not ready {:.1} s after the store stopped",
        stopped.elapsed().as_secs_f64()
    );
}
