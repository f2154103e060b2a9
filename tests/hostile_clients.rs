//! Hostile and unlucky clients: slow senders, endless part headers, too many
//! parts, full queues and busy tenants. Each gets a clear 4xx/5xx or a clean
//! close, and the server keeps serving everyone else.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use common::*;
use serde_json::Value;

/// Sends raw bytes and reads the response head (status code), or None when the server closed.
fn raw_exchange(
    addr: std::net::SocketAddr,
    chunks: &[&[u8]],
    pause: Duration,
) -> Option<(u16, String)> {
    let mut stream = TcpStream::connect(addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    for (i, chunk) in chunks.iter().enumerate() {
        if i > 0 {
            std::thread::sleep(pause);
        }
        if stream.write_all(chunk).is_err() {
            break;
        }
    }
    let mut response = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match stream.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                response.extend_from_slice(&buf[..n]);
                let text = String::from_utf8_lossy(&response);
                if let Some(end) = text.find("\r\n\r\n") {
                    let len = text[..end]
                        .lines()
                        .find_map(|l| {
                            l.to_ascii_lowercase()
                                .strip_prefix("content-length: ")
                                .map(|v| v.trim().parse::<usize>().unwrap())
                        })
                        .unwrap_or(0);
                    if response.len() >= end + 4 + len {
                        break;
                    }
                }
            }
        }
    }
    let text = String::from_utf8_lossy(&response).into_owned();
    let code = text.split_whitespace().nth(1)?.parse().ok()?;
    Some((code, text))
}

fn post_head(key: &str, boundary: &str, content_length: Option<u64>) -> String {
    let length = content_length
        .map(|n| format!("Content-Length: {n}\r\n"))
        .unwrap_or_else(|| "Transfer-Encoding: chunked\r\n".into());
    format!(
        "POST /api/client/v1/uploads HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {key}\r\nContent-Type: multipart/form-data; boundary={boundary}\r\n{length}\r\n"
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_and_malformed_bodies_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let key = create_key(dir.path(), "app");
    let mut config = test_config(dir.path());
    config.header_read_timeout = Duration::from_millis(500);
    config.body_idle_timeout = Duration::from_millis(500);
    let t = TestServer::start(config).await;
    let addr = t.server.addr();

    // Slowloris: headers never finish; the server closes the connection.
    let started = Instant::now();
    let closed = tokio::task::spawn_blocking(move || {
        raw_exchange(
            addr,
            &[
                b"GET /api/client/v1/uploads HTTP/1.1\r\nHost: x\r\n",
                b"X-Slow: 1\r\n",
            ],
            Duration::from_millis(2000),
        )
    })
    .await
    .unwrap();
    assert!(
        closed.is_none() || closed.as_ref().unwrap().0 == 408,
        "{closed:?}"
    );
    assert!(started.elapsed() < Duration::from_secs(10));

    // A body that stops arriving: 408 with JSON.
    let head = post_head(&key, "B", Some(1_000_000));
    let part = "--B\r\nContent-Disposition: form-data; name=\"video\"; filename=\"a.mp4\"\r\n\r\nsome bytes";
    let (code, text) = tokio::task::spawn_blocking(move || {
        raw_exchange(
            addr,
            &[head.as_bytes(), part.as_bytes()],
            Duration::from_millis(10),
        )
    })
    .await
    .unwrap()
    .unwrap();
    assert_eq!(code, 408, "{text}");
    assert!(text.contains("\"code\":\"request_timeout\""), "{text}");

    // A part header block that never ends: refused once it passes the cap, memory stays flat.
    let head = post_head(&key, "B", None);
    let flood_line = format!("X-Flood: {}\r\n", "a".repeat(1000));
    let mut flood = String::from(
        "--B\r\nContent-Disposition: form-data; name=\"video\"; filename=\"a.mp4\"\r\n",
    );
    for _ in 0..200 {
        flood.push_str(&flood_line);
    }
    let chunked = format!("{:x}\r\n{}\r\n", flood.len(), flood);
    let (code, text) = tokio::task::spawn_blocking(move || {
        raw_exchange(
            addr,
            &[head.as_bytes(), chunked.as_bytes()],
            Duration::from_millis(1),
        )
    })
    .await
    .unwrap()
    .unwrap();
    assert_eq!(code, 400, "{text}");
    assert!(text.contains("headers are larger"), "{text}");

    // Too large by its declared length, and the client waits for `100 Continue`:
    // the answer is 413 at once, no invitation to send the body.
    let head = post_head(&key, "B", Some(10_000_000_000))
        .replace("\r\n\r\n", "\r\nExpect: 100-continue\r\n\r\n");
    let (code, text) = tokio::task::spawn_blocking(move || {
        raw_exchange(addr, &[head.as_bytes()], Duration::from_millis(1))
    })
    .await
    .unwrap()
    .unwrap();
    assert_eq!(code, 413, "{text}");
    assert!(!text.contains("100 Continue"), "{text}");
    assert!(text.contains("\"code\":\"payload_too_large\""), "{text}");

    // Too many parts.
    let mut form = reqwest::multipart::Form::new().text("folder", "root");
    for i in 0..40 {
        form = form.text(format!("extra{i}"), "x");
    }
    let response = t.post_form(&key, form).await;
    assert_eq!(response.status(), 400);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["code"], "malformed_body");

    // A content type with no boundary, and a body that is not multipart at all.
    let response = t
        .client
        .post(t.url("/uploads"))
        .bearer_auth(&key)
        .header("content-type", "multipart/form-data")
        .body("x")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 415);
    let response = t
        .client
        .post(t.url("/uploads"))
        .bearer_auth(&key)
        .header("content-type", "multipart/form-data; boundary=B")
        .body("this is not multipart")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 400);

    // Unknown extra fields are ignored; the upload is accepted.
    let sample = std::fs::read(fixture("sample.mp4")).unwrap();
    let form = video_form(sample, "a.mp4", "root").text("title", "ignored");
    let response = t.post_form(&key, form).await;
    assert_eq!(response.status(), 202);

    // The server still serves, and nothing refused was left in staging.
    let (code, list) = get_json(&t.client, &t.url("/uploads"), &key).await;
    assert_eq!(code, 200);
    assert_eq!(list["data"].as_array().unwrap().len(), 1);
    let staging = files_in(&dir.path().join("staging"));
    assert!(
        staging.iter().all(|f| f.ends_with(".upload")),
        "{staging:?}"
    );
    t.server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn full_queue_and_busy_tenant_are_told_to_retry() {
    let dir = tempfile::tempdir().unwrap();
    let alice = create_key(dir.path(), "alice");
    let bob = create_key(dir.path(), "bob");
    let mut config = test_config(dir.path()).with_transcoders(1);
    config.max_in_flight_per_tenant = 1;
    config.max_queued_jobs = 1;
    config.faults.transcode_delay = Some(Duration::from_secs(3));
    let t = TestServer::start(config).await;

    let (code, first) = upload(&t.client, &t.base, &alice, "sample.mp4", "root").await;
    assert_eq!(code, 202, "{first}");
    // Alice has one in flight: 429 with Retry-After.
    let bytes = std::fs::read(fixture("sample.mp4")).unwrap();
    let response = t
        .post_form(&alice, video_form(bytes.clone(), "b.mp4", "root"))
        .await;
    assert_eq!(response.status(), 429);
    assert!(response.headers().contains_key("retry-after"));
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["code"], "too_many_uploads");

    // Bob fills the one queue slot once the worker has picked up Alice's job...
    let deadline = Instant::now() + Duration::from_secs(10);
    while t
        .server
        .services()
        .queued
        .load(std::sync::atomic::Ordering::Relaxed)
        > 0
    {
        assert!(Instant::now() < deadline);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let (code, queued) = upload(&t.client, &t.base, &bob, "sample.mp4", "root").await;
    assert_eq!(code, 202, "{queued}");
    // ...and the next POST is refused before its body is read: a huge declared
    // length with no body still gets an immediate 503.
    let addr = t.server.addr();
    let head = post_head(&bob, "B", Some(10_000_000_000));
    let (code, text) =
        tokio::task::spawn_blocking(move || raw_exchange(addr, &[head.as_bytes()], Duration::ZERO))
            .await
            .unwrap()
            .unwrap();
    assert_eq!(code, 503, "{text}");
    assert!(
        text.to_ascii_lowercase().contains("retry-after: "),
        "{text}"
    );
    assert!(text.contains("\"code\":\"queue_full\""), "{text}");

    // Nothing accepted is dropped.
    for id in [&first["data"]["id"], &queued["data"]["id"]] {
        let id = id.as_str().unwrap();
        let key = if id == first["data"]["id"].as_str().unwrap() {
            &alice
        } else {
            &bob
        };
        let done = wait_terminal(&t.client, &t.base, key, id).await;
        assert_eq!(done["status"], 6, "{done}");
    }
    // Once Alice's upload is done she may upload again.
    let (code, body) = upload(&t.client, &t.base, &alice, "sample.mp4", "root").await;
    assert_eq!(code, 202, "{body}");
    t.server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_past_the_cap_wait_until_one_closes() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = test_config(dir.path());
    config.max_connections = 2;
    config.header_read_timeout = Duration::from_secs(30);
    let t = TestServer::start(config).await;
    let addr = t.server.addr();

    // Two connections hold both slots with requests whose headers never end.
    let mut holders = Vec::new();
    for _ in 0..2 {
        let mut stream = TcpStream::connect(addr).unwrap();
        stream
            .write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
            .unwrap();
        holders.push(stream);
    }
    // A third client connects (the kernel's backlog takes it) but is not served.
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(0)
        .build()
        .unwrap();
    let url = format!("http://{addr}/healthz");
    let waited = client
        .get(&url)
        .timeout(Duration::from_secs(2))
        .send()
        .await;
    assert!(waited.as_ref().is_err_and(|e| e.is_timeout()), "{waited:?}");

    // One holder goes away: its slot serves the next client.
    holders.pop();
    let response = client
        .get(&url)
        .timeout(Duration::from_secs(10))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    drop(holders);
    t.server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upload_without_a_valid_key_is_told_401_not_cut_off() {
    let dir = tempfile::tempdir().unwrap();
    let key = create_key(dir.path(), "app");
    let t = TestServer::start(test_config(dir.path())).await;
    // Refused on its headers; the body is still on its way and is read
    // (up to a bound) so that the client reads the answer.
    let big = vec![0u8; 2 * 1024 * 1024];
    for bearer in ["sk-not-a-key", ""] {
        for _ in 0..5 {
            let mut request = t.client.post(t.url("/uploads")).multipart(video_form(
                big.clone(),
                "big.mp4",
                "root",
            ));
            if !bearer.is_empty() {
                request = request.bearer_auth(bearer);
            }
            let response = request.send().await.unwrap();
            assert_eq!(response.status(), 401);
            let body: Value = response.json().await.unwrap();
            assert_eq!(body["message"], "Unauthenticated.");
        }
    }
    // The right key still gets in.
    let (code, _) = get_json(&t.client, &t.url("/uploads"), &key).await;
    assert_eq!(code, 200);
    t.server.shutdown().await;
}
