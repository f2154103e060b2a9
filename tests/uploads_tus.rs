//! Resumable uploads over tus on a real server: tuspy (a third-party tus
//! client) uploads in chunks and resumes after the server is killed with
//! `kill -9` mid-`PATCH`; the received bytes are the client's; the upload
//! then runs through the pipeline like any other. And the protocol's
//! answers: versions, content types, offsets, lengths, metadata, tenants,
//! termination, the method override, a `PATCH` that takes over from a
//! stalled one, and expiry.

mod common;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::tus::*;
use common::*;

fn tus_file(dir: &Path, url: &str) -> PathBuf {
    let id = id_of(url);
    dir.join("tus").join(format!("{id}.bin"))
}

/// tuspy sends half in 16 KiB chunks; a raw PATCH is cut off by `kill -9`
/// mid-body; after the restart the offset is at least what was
/// acknowledged and at most what was sent, the file is exactly the source
/// up to it, and tuspy resumes from there to the end; the upload completes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tuspy_resumes_after_a_kill_mid_patch_and_the_upload_completes() {
    if !tuspy_installed() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let key = create_key(dir.path(), "tus");
    let source = fixture("sample.mp4");
    let bytes = std::fs::read(&source).unwrap();
    let mut server = start(dir.path(), &[]);
    let endpoint = format!("{}/tus", server.base);

    let acknowledged = 16 * 1024;
    let (url, done) = tuspy(&endpoint, &key, &source, 16 * 1024, &["--stop-at", "16384"]);
    assert!(!done);
    let client = reqwest::Client::new();
    assert_eq!(head_offset(&client, &url, &key).await, acknowledged as u64);

    // A PATCH whose body stops half-way; the server dies while it waits.
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<Vec<u8>, std::io::Error>>(4);
    let sent = 20_000;
    tx.send(Ok(bytes[acknowledged..acknowledged + sent].to_vec()))
        .await
        .unwrap();
    let patch = client
        .patch(&url)
        .bearer_auth(&key)
        .header("tus-resumable", "1.0.0")
        .header("upload-offset", acknowledged.to_string())
        .header("content-type", "application/offset+octet-stream")
        .header("content-length", (bytes.len() - acknowledged).to_string())
        .body(reqwest::Body::wrap_stream(tokio_stream_from(rx)))
        .send();
    let patch = tokio::spawn(patch);
    let file = tus_file(dir.path(), &url);
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::fs::metadata(&file).map_or(0, |m| m.len()) < (acknowledged + sent) as u64 {
        assert!(
            Instant::now() < deadline,
            "the bytes never reached the file"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    server.kill9();
    drop(tx);
    let _ = patch.await;

    let mut server = start(dir.path(), &[]);
    let url = url.replace(
        url.split("/api/").next().unwrap(),
        server.base.split("/api/").next().unwrap(),
    );
    let offset = head_offset(&client, &url, &key).await as usize;
    assert!(
        (acknowledged..=acknowledged + sent).contains(&offset),
        "{offset}"
    );
    let kept = std::fs::read(&file).unwrap();
    assert_eq!(kept.len(), offset);
    assert!(kept == bytes[..offset], "the file is the client's bytes");

    let endpoint = format!("{}/tus", server.base);
    let (_, done) = tuspy(&endpoint, &key, &source, 16 * 1024, &["--url", &url]);
    assert!(done);
    let id = id_of(&url);
    let record = wait_terminal(&client, &server.base, &key, id).await;
    assert_eq!(record["status"], 6, "{record}");
    assert_eq!(record["size_bytes"], bytes.len());
    assert_eq!(record["filename"], "tus.mp4");
    assert_eq!(record["folder"], "root/tus");
    server.kill9();
}

/// Every refusal of the protocol, with the usual JSON body and `Tus-Resumable`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_protocol_answers_as_tus_1_0_0_says() {
    use reqwest::Method;
    let dir = tempfile::tempdir().unwrap();
    let key = create_key(dir.path(), "tus");
    let other = create_key(dir.path(), "other");
    let t = TestServer::start(test_config(dir.path())).await;
    let bytes = std::fs::read(fixture("sample.mp4")).unwrap();

    let options = t
        .client
        .request(Method::OPTIONS, t.url("/tus"))
        .bearer_auth(&key)
        .send()
        .await
        .unwrap();
    assert_eq!(options.status(), 204);
    assert_eq!(options.headers()["tus-version"], "1.0.0");
    assert!(options.headers()["tus-extension"]
        .to_str()
        .unwrap()
        .contains("creation"));
    assert_eq!(options.headers()["tus-max-size"], "4294967296");

    // Creation: a version, a length and the metadata are required.
    let no_version = t
        .client
        .post(t.url("/tus"))
        .bearer_auth(&key)
        .header("upload-length", "10")
        .send()
        .await
        .unwrap();
    assert_eq!(no_version.headers()["tus-version"], "1.0.0");
    assert_eq!(
        code_of(no_version).await,
        (412, "tus_version_unsupported".into())
    );
    let post = |length: &str, meta: String| {
        tus_request(&t, Method::POST, &t.url("/tus"), &key)
            .header("upload-length", length.to_string())
            .header("upload-metadata", meta)
            .send()
    };
    let good = metadata(&[("filename", "a.mp4"), ("folder", "root")]);
    assert_eq!(
        code_of(post("ten", good.clone()).await.unwrap()).await.0,
        400
    );
    assert_eq!(
        code_of(post("99999999999", good.clone()).await.unwrap()).await,
        (413, "payload_too_large".into())
    );
    assert_eq!(
        code_of(
            post("10", metadata(&[("filename", "a.mp4")]))
                .await
                .unwrap()
        )
        .await,
        (422, "validation_failed".into())
    );
    assert_eq!(
        code_of(post("10", "filename !!!".into()).await.unwrap())
            .await
            .0,
        400
    );

    let url = create(&t, &key, bytes.len()).await;
    let patch = |at: usize, body: Vec<u8>, content_type: &'static str| {
        tus_request(&t, Method::PATCH, &url, &key)
            .header("upload-offset", at.to_string())
            .header("content-type", content_type)
            .body(body)
            .send()
    };
    let octets = "application/offset+octet-stream";
    assert_eq!(
        code_of(patch(0, bytes[..10].to_vec(), "text/plain").await.unwrap()).await,
        (415, "unsupported_media_type".into())
    );
    assert_eq!(
        code_of(patch(5, bytes[..10].to_vec(), octets).await.unwrap()).await,
        (409, "offset_mismatch".into())
    );
    let first = patch(0, bytes[..1000].to_vec(), octets).await.unwrap();
    assert_eq!(first.status(), 204);
    assert_eq!(first.headers()["upload-offset"], "1000");
    // Expiration: an unfinished upload says when it is freed (24 h from now).
    let expires = first.headers()["upload-expires"].to_str().unwrap();
    let at = httpdate::parse_http_date(expires).unwrap();
    let left = at.duration_since(std::time::SystemTime::now()).unwrap();
    assert!(
        left > Duration::from_secs(23 * 3600) && left <= Duration::from_secs(24 * 3600),
        "{expires}"
    );
    // Past Upload-Length: refused, and nothing past it is kept.
    let mut too_long = bytes[1000..].to_vec();
    too_long.push(0);
    assert_eq!(
        code_of(patch(1000, too_long, octets).await.unwrap())
            .await
            .0,
        400
    );
    assert_eq!(head_offset(&t.client, &url, &key).await, 1000);

    // Another key's upload is not found; no key is a 401.
    let theirs = tus_request(&t, Method::HEAD, &url, &other)
        .send()
        .await
        .unwrap();
    assert_eq!(theirs.status(), 404);
    let keyless = t
        .client
        .head(&url)
        .header("tus-resumable", "1.0.0")
        .send()
        .await
        .unwrap();
    assert_eq!(keyless.status(), 401);

    // The method override: a POST that says PATCH.
    let overridden = tus_request(&t, Method::POST, &url, &key)
        .header("x-http-method-override", "PATCH")
        .header("upload-offset", "1000")
        .header("content-type", octets)
        .body(bytes[1000..].to_vec())
        .send()
        .await
        .unwrap();
    assert_eq!(overridden.status(), 204);
    let id = id_of(&url);
    let record = wait_terminal(&t.client, &t.base, &key, id).await;
    assert_eq!(record["status"], 6, "{record}");

    // Termination: 204, the bytes go, then 404.
    let doomed = create(&t, &key, 100).await;
    let gone = tus_request(&t, Method::DELETE, &doomed, &key)
        .send()
        .await
        .unwrap();
    assert_eq!(gone.status(), 204);
    assert!(!tus_file(dir.path(), &doomed).exists());
    let again = tus_request(&t, Method::HEAD, &doomed, &key)
        .send()
        .await
        .unwrap();
    assert_eq!(again.status(), 404);
    // An answer the router makes itself says the version too.
    let not_allowed = tus_request(&t, Method::PUT, &doomed, &key)
        .send()
        .await
        .unwrap();
    assert_eq!(
        code_of(not_allowed).await,
        (405, "method_not_allowed".into())
    );
}

/// A PATCH whose client stalled mid-body is stopped by the next one from
/// the offset HEAD gives, at once (not after an idle timeout), and the new
/// one goes on from there. The stalled one's bytes are committed within a
/// second of their coming, so HEAD has them and they are not sent twice. A PATCH from another offset leaves the writer alone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_patch_takes_over_from_a_stalled_one() {
    let dir = tempfile::tempdir().unwrap();
    let key = create_key(dir.path(), "tus");
    let t = TestServer::start(test_config(dir.path())).await;
    let bytes = std::fs::read(fixture("sample.mp4")).unwrap();
    let url = create(&t, &key, bytes.len()).await;

    let (tx, rx) = tokio::sync::mpsc::channel::<Result<Vec<u8>, std::io::Error>>(4);
    tx.send(Ok(bytes[..5000].to_vec())).await.unwrap();
    let stalled = patch_at(&t, &url, &key, 0)
        .header("content-length", bytes.len().to_string())
        .body(reqwest::Body::wrap_stream(tokio_stream_from(rx)))
        .send();
    let stalled = tokio::spawn(stalled);
    let file = tus_file(dir.path(), &url);
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::fs::metadata(&file).map_or(0, |m| m.len()) < 5000 {
        assert!(Instant::now() < deadline);
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // Not from the upload's offset: refused, the stalled writer untouched.
    let stray = patch_at(&t, &url, &key, 77)
        .body(bytes[77..100].to_vec())
        .send()
        .await
        .unwrap();
    assert_eq!(code_of(stray).await, (409, "offset_mismatch".into()));
    assert!(!stalled.is_finished());

    // Within a second the stalled writer has committed what came, and HEAD
    // says so: a client that lost its connection sends those bytes once.
    let committed = loop {
        let head = tus_request(&t, reqwest::Method::HEAD, &url, &key)
            .send()
            .await
            .unwrap();
        let offset: usize = head.headers()["upload-offset"]
            .to_str()
            .unwrap()
            .parse()
            .unwrap();
        if offset > 0 {
            break offset;
        }
        assert!(
            Instant::now() < deadline,
            "the stalled bytes were not committed"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(committed, 5000);
    assert!(!stalled.is_finished());

    let asked = Instant::now();
    let retry = patch_at(&t, &url, &key, committed)
        .body(bytes[committed..].to_vec())
        .send()
        .await
        .unwrap();
    assert!(
        asked.elapsed() < Duration::from_secs(5),
        "{:?}",
        asked.elapsed()
    );
    assert_eq!(retry.status(), 204);
    assert_eq!(
        retry.headers()["upload-offset"],
        bytes.len().to_string().as_str()
    );
    drop(tx);
    let _ = stalled.await;
    let id = id_of(&url);
    let record = wait_terminal(&t.client, &t.base, &key, id).await;
    assert_eq!(record["status"], 6, "{record}");
    assert_eq!(record["size_bytes"], bytes.len());
}

/// An unfinished upload untouched for `tus_expiry_hours` is freed by the
/// sweeper: its bytes go, then it is 404.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unfinished_upload_expires() {
    use reqwest::Method;
    let dir = tempfile::tempdir().unwrap();
    let key = create_key(dir.path(), "tus");
    let mut config = test_config(dir.path());
    config.tus_expiry = Duration::from_secs(1);
    let t = TestServer::start(config).await;
    let url = create(&t, &key, 100).await;
    let sent = patch_at(&t, &url, &key, 0)
        .body(vec![7u8; 10])
        .send()
        .await
        .unwrap();
    assert_eq!(sent.status(), 204);
    let file = tus_file(dir.path(), &url);
    assert!(file.exists());
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let head = tus_request(&t, Method::HEAD, &url, &key)
            .send()
            .await
            .unwrap();
        if head.status() == 404 {
            break;
        }
        assert!(Instant::now() < deadline, "never expired");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(!file.exists());
}

/// The last byte arrives while the key is at its cap of uploads in flight:
/// the PATCH says so (429) and keeps the bytes; once a place is free the
/// server hands the upload over by itself (its client, which saw the whole
/// offset, sends nothing more) and it completes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hand_over_refused_at_the_last_byte_is_done_later_by_the_server() {
    let dir = tempfile::tempdir().unwrap();
    let key = create_key(dir.path(), "tus");
    let mut config = test_config(dir.path());
    config.max_in_flight_per_tenant = 1;
    let t = TestServer::start(config).await;
    let bytes = std::fs::read(fixture("sample.mp4")).unwrap();
    let url = create(&t, &key, bytes.len()).await;
    // The key's one place, taken by an upload that is not a video and fails.
    let (code, busy) = upload(&t.client, &t.base, &key, "not-a-video.txt", "root").await;
    assert_eq!(code, 202, "{busy}");

    let last = patch_at(&t, &url, &key, 0)
        .body(bytes.clone())
        .send()
        .await
        .unwrap();
    let refused = last.status().as_u16();
    assert_eq!(head_offset(&t.client, &url, &key).await, bytes.len() as u64);
    let id = id_of(&url);
    if refused == 429 {
        let (status, _) = get_json(&t.client, &t.url(&format!("/uploads/{id}")), &key).await;
        assert_eq!(status, 404, "not handed over yet");
    } else {
        // The busy upload failed before the last byte came: handed over at once.
        assert_eq!(refused, 204);
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (status, _) = get_json(&t.client, &t.url(&format!("/uploads/{id}")), &key).await;
        if status == 200 {
            break;
        }
        assert!(Instant::now() < deadline, "never handed over");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let record = wait_terminal(&t.client, &t.base, &key, id).await;
    assert_eq!(record["status"], 6, "{record}");
}
