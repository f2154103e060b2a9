//! Prometheus metrics at `/metrics`: counters move with real uploads, and the
//! optional bearer token guards the endpoint.

mod common;

use common::*;

/// The value of the sample whose name and labels are exactly `series`.
fn sample(text: &str, series: &str) -> f64 {
    text.lines()
        .find_map(|line| line.strip_prefix(series)?.strip_prefix(' '))
        .unwrap_or_else(|| panic!("no sample {series} in\n{text}"))
        .parse()
        .unwrap()
}

async fn scrape(t: &TestServer) -> String {
    let response = t
        .client
        .get(format!("http://{}/metrics", t.server.addr()))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let content_type = response.headers()["content-type"].to_str().unwrap();
    assert!(
        content_type.starts_with("text/plain; version=0.0.4"),
        "{content_type}"
    );
    response.text().await.unwrap()
}

fn transitions(text: &str, status: &str) -> f64 {
    sample(
        text,
        &format!("vidpipe_upload_transitions_total{{status=\"{status}\"}}"),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn counters_move_with_uploads() {
    let dir = tempfile::tempdir().unwrap();
    let key = create_key(dir.path(), "app");
    let t = TestServer::start(test_config(dir.path())).await;

    let before = scrape(&t).await;
    for status in ["pending", "processing", "uploading", "completed", "failed"] {
        assert_eq!(transitions(&before, status), 0.0, "{status}");
    }
    assert_eq!(sample(&before, "vidpipe_ingested_bytes_total"), 0.0);
    assert_eq!(sample(&before, "vidpipe_queue_depth"), 0.0);
    assert_eq!(sample(&before, "vidpipe_transcode_jobs_running"), 0.0);

    let done = upload_to_end(&t, &key, "sample.mp4", "root").await;
    assert_eq!(done["status"], 6, "{done}");
    let failed = upload_to_end(&t, &key, "not-a-video.txt", "root").await;
    assert_eq!(failed["status"], 7, "{failed}");

    let after = scrape(&t).await;
    assert_eq!(transitions(&after, "pending"), 2.0);
    assert_eq!(transitions(&after, "processing"), 2.0);
    assert_eq!(transitions(&after, "uploading"), 1.0);
    assert_eq!(transitions(&after, "completed"), 1.0);
    assert_eq!(transitions(&after, "failed"), 1.0);
    let sent = std::fs::metadata(fixture("sample.mp4")).unwrap().len()
        + std::fs::metadata(fixture("not-a-video.txt")).unwrap().len();
    assert_eq!(sample(&after, "vidpipe_ingested_bytes_total"), sent as f64);
    assert_eq!(
        sample(&after, "vidpipe_transcode_duration_seconds_count"),
        1.0
    );
    assert!(sample(&after, "vidpipe_transcode_duration_seconds_sum") > 0.0);
    assert_eq!(
        sample(&after, "vidpipe_transcode_realtime_factor_count"),
        1.0
    );
    assert!(sample(&after, "vidpipe_transcode_realtime_factor_sum") > 0.0);
    assert_eq!(sample(&after, "vidpipe_transcode_jobs_running"), 0.0);
    assert_eq!(sample(&after, "vidpipe_queue_depth"), 0.0);
    let posts = "vidpipe_http_requests_total{method=\"POST\",route=\"/api/client/v1/uploads\",status=\"202\"}";
    assert_eq!(sample(&after, posts), 2.0);
    let polls = "vidpipe_http_request_duration_seconds_count{method=\"GET\",route=\"/api/client/v1/uploads/{id}\"}";
    assert!(sample(&after, polls) >= 2.0);
    // Ids never become labels.
    assert!(!after.contains(done["id"].as_str().unwrap()));
    assert_eq!(
        sample(&after, "vidpipe_storage_errors_total{stage=\"final\"}"),
        0.0
    );
    t.server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_write_to_final_storage_is_counted() {
    let dir = tempfile::tempdir().unwrap();
    let key = create_key(dir.path(), "app");
    let t = TestServer::start(test_config(dir.path())).await;

    // Final storage becomes a file: the uploader cannot put the outputs.
    let media = dir.path().join("media");
    std::fs::remove_dir_all(&media).unwrap();
    std::fs::write(&media, b"not a folder").unwrap();
    let failed = upload_to_end(&t, &key, "sample.mp4", "root").await;
    assert_eq!(failed["status"], 7, "{failed}");
    assert_eq!(failed["error"]["code"], "storage_error");

    // Staging becomes a file: the body cannot be written.
    let staging = dir.path().join("staging");
    std::fs::remove_dir_all(&staging).unwrap();
    std::fs::write(&staging, b"not a folder").unwrap();
    let (code, body) = upload(&t.client, &t.base, &key, "sample.mp4", "root").await;
    assert_eq!(code, 500, "{body}");

    let text = scrape(&t).await;
    assert_eq!(
        sample(&text, "vidpipe_storage_errors_total{stage=\"final\"}"),
        1.0
    );
    assert_eq!(
        sample(&text, "vidpipe_storage_errors_total{stage=\"staging\"}"),
        1.0
    );
    assert_eq!(transitions(&text, "failed"), 1.0);
    assert_eq!(transitions(&text, "pending"), 1.0);
    t.server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_metrics_token_guards_the_endpoint() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = test_config(dir.path());
    config.metrics_token = Some("scrape-secret".into());
    let t = TestServer::start(config).await;
    let url = format!("http://{}/metrics", t.server.addr());

    let response = t.client.get(&url).send().await.unwrap();
    assert_eq!(response.status(), 401);
    let body: serde_json::Value = response.json().await.unwrap();
    assert_eq!(body["code"], "unauthenticated");
    let response = t
        .client
        .get(&url)
        .bearer_auth("wrong")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 401);
    let response = t
        .client
        .get(&url)
        .bearer_auth("scrape-secret")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert!(response
        .text()
        .await
        .unwrap()
        .contains("vidpipe_build_info"));
    t.server.shutdown().await;
}
