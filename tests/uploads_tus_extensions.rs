//! The tus extensions beyond creation, termination and expiration, on a
//! real server: checksum (460, the chunk discarded), creation-with-upload,
//! creation-defer-length, concatenation (partial uploads joined by a final
//! one that then runs through the pipeline), `Idempotency-Key` on creation,
//! and the cap on a key's unfinished uploads.

mod common;

use base64::Engine as _;
use common::tus::*;
use common::*;
use reqwest::Method;
use sha2::Digest;

fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

/// `HEAD` on `url`: its status and headers.
async fn head(t: &TestServer, url: &str, key: &str) -> (u16, reqwest::header::HeaderMap) {
    let response = tus_request(t, Method::HEAD, url, key).send().await.unwrap();
    (response.status().as_u16(), response.headers().clone())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_patch_is_kept_only_with_the_digest_its_checksum_gives() {
    let dir = tempfile::tempdir().unwrap();
    let key = create_key(dir.path(), "tus");
    let t = TestServer::start(test_config(dir.path())).await;
    let bytes = std::fs::read(fixture("sample.mp4")).unwrap();
    let (first, rest) = bytes.split_at(bytes.len() / 2);

    let options = tus_request(&t, Method::OPTIONS, &t.url("/tus"), &key)
        .send()
        .await
        .unwrap();
    let extensions = options.headers()["tus-extension"].to_str().unwrap();
    for extension in [
        "creation",
        "creation-with-upload",
        "creation-defer-length",
        "termination",
        "expiration",
        "checksum",
        "concatenation",
    ] {
        assert!(
            extensions.split(',').any(|e| e == extension),
            "{extensions}"
        );
    }
    assert_eq!(
        options.headers()["tus-checksum-algorithm"],
        "md5,sha1,sha256"
    );

    let url = create(&t, &key, bytes.len()).await;
    // The wrong digest: 460, and nothing of the chunk is kept.
    let wrong = b64(&sha2::Sha256::digest(b"something else"));
    let refused = patch_at(&t, &url, &key, 0)
        .header("upload-checksum", format!("sha256 {wrong}"))
        .body(first.to_vec())
        .send()
        .await
        .unwrap();
    assert_eq!(code_of(refused).await, (460, "checksum_mismatch".into()));
    assert_eq!(head_offset(&t.client, &url, &key).await, 0);
    let on_disk = dir.path().join("tus").join(format!("{}.bin", id_of(&url)));
    assert_eq!(std::fs::metadata(&on_disk).unwrap().len(), 0);

    // An algorithm not offered, or a digest that is not base64: 400.
    for (value, code) in [
        ("crc32 AAAAAA==", "checksum_algorithm_unsupported"),
        ("sha1 not-base64!", "invalid_header"),
    ] {
        let response = patch_at(&t, &url, &key, 0)
            .header("upload-checksum", value)
            .body(first.to_vec())
            .send()
            .await
            .unwrap();
        assert_eq!(code_of(response).await, (400, code.into()), "{value}");
    }
    assert_eq!(head_offset(&t.client, &url, &key).await, 0);

    // The right digests, sha1 for one half and md5 for the other.
    let sha1 = b64(&sha1::Sha1::digest(first));
    let kept = patch_at(&t, &url, &key, 0)
        .header("upload-checksum", format!("sha1 {sha1}"))
        .body(first.to_vec())
        .send()
        .await
        .unwrap();
    assert_eq!(kept.status(), 204);
    assert_eq!(kept.headers()["upload-offset"], first.len().to_string());
    let md5 = b64(&md5::Md5::digest(rest));
    let kept = patch_at(&t, &url, &key, first.len())
        .header("upload-checksum", format!("md5 {md5}"))
        .body(rest.to_vec())
        .send()
        .await
        .unwrap();
    assert_eq!(kept.status(), 204);
    let done = wait_terminal(&t.client, &t.base, &key, id_of(&url)).await;
    assert_eq!(done["status"], 6, "{done}");
    assert_eq!(done["size_bytes"], bytes.len() as u64);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_creation_may_carry_the_first_bytes_or_leave_the_length_for_later() {
    let dir = tempfile::tempdir().unwrap();
    let key = create_key(dir.path(), "tus");
    let t = TestServer::start(test_config(dir.path())).await;
    let bytes = std::fs::read(fixture("sample.mp4")).unwrap();
    let (first, rest) = bytes.split_at(bytes.len() / 3);
    let meta = metadata(&[("filename", "a.mp4"), ("folder", "root/tus")]);

    // creation-with-upload: the body is written as a first PATCH.
    let created = tus_request(&t, Method::POST, &t.url("/tus"), &key)
        .header("upload-length", bytes.len().to_string())
        .header("upload-metadata", &meta)
        .header("content-type", "application/offset+octet-stream")
        .body(first.to_vec())
        .send()
        .await
        .unwrap();
    assert_eq!(created.status(), 201);
    assert_eq!(created.headers()["upload-offset"], first.len().to_string());
    let url = format!(
        "{}{}",
        t.base.trim_end_matches("/api/client/v1"),
        created.headers()["location"].to_str().unwrap()
    );
    assert_eq!(head_offset(&t.client, &url, &key).await, first.len() as u64);
    let response = patch_at(&t, &url, &key, first.len())
        .body(rest.to_vec())
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 204);
    let done = wait_terminal(&t.client, &t.base, &key, id_of(&url)).await;
    assert_eq!(done["status"], 6, "{done}");

    // First bytes past the length are refused before anything is made.
    let past = tus_request(&t, Method::POST, &t.url("/tus"), &key)
        .header("upload-length", "10")
        .header("upload-metadata", &meta)
        .header("content-type", "application/offset+octet-stream")
        .body(vec![0u8; 20])
        .send()
        .await
        .unwrap();
    assert_eq!(code_of(past).await, (400, "bad_request".into()));
    assert_eq!(files_in(&dir.path().join("tus")).len(), 0);

    // A body of another type on creation is a 415.
    let other_type = tus_request(&t, Method::POST, &t.url("/tus"), &key)
        .header("upload-length", "10")
        .header("upload-metadata", &meta)
        .header("content-type", "text/plain")
        .body("0123456789")
        .send()
        .await
        .unwrap();
    assert_eq!(code_of(other_type).await.0, 415);

    // Another type on a creation without a body is no body.
    let typed = tus_request(&t, Method::POST, &t.url("/tus"), &key)
        .header("upload-length", "10")
        .header("upload-metadata", &meta)
        .header("content-type", "application/x-www-form-urlencoded")
        .send()
        .await
        .unwrap();
    assert_eq!(typed.status(), 201);

    // creation-defer-length: no length at first, given by a later PATCH.
    let post_deferred = |value: &'static str| {
        tus_request(&t, Method::POST, &t.url("/tus"), &key)
            .header("upload-defer-length", value)
            .header("upload-metadata", &meta)
            .send()
    };
    assert_eq!(
        code_of(post_deferred("2").await.unwrap()).await,
        (400, "invalid_header".into())
    );
    let both = tus_request(&t, Method::POST, &t.url("/tus"), &key)
        .header("upload-defer-length", "1")
        .header("upload-length", "10")
        .header("upload-metadata", &meta)
        .send()
        .await
        .unwrap();
    assert_eq!(code_of(both).await.0, 400);
    let deferred = post_deferred("1").await.unwrap();
    assert_eq!(deferred.status(), 201);
    let url = format!(
        "{}{}",
        t.base.trim_end_matches("/api/client/v1"),
        deferred.headers()["location"].to_str().unwrap()
    );
    let (status, headers) = head(&t, &url, &key).await;
    assert_eq!(status, 200);
    assert_eq!(headers["upload-defer-length"], "1");
    assert!(headers.get("upload-length").is_none());
    // A length that comes with a refused body is not kept either.
    let refused = patch_at(&t, &url, &key, 0)
        .header("upload-length", "5")
        .header(
            "upload-checksum",
            format!("sha1 {}", b64(&sha1::Sha1::digest(b"other"))),
        )
        .body(b"12345".to_vec())
        .send()
        .await
        .unwrap();
    assert_eq!(code_of(refused).await.0, 460);
    let (_, headers) = head(&t, &url, &key).await;
    assert_eq!(headers["upload-defer-length"], "1");
    let response = patch_at(&t, &url, &key, 0)
        .body(first.to_vec())
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 204);
    // A length below what is in, or past the maximum, is refused.
    let below = patch_at(&t, &url, &key, first.len())
        .header("upload-length", "10")
        .body(rest.to_vec())
        .send()
        .await
        .unwrap();
    assert_eq!(code_of(below).await.0, 400);
    let too_large = patch_at(&t, &url, &key, first.len())
        .header("upload-length", "99999999999")
        .body(rest.to_vec())
        .send()
        .await
        .unwrap();
    assert_eq!(code_of(too_large).await, (413, "payload_too_large".into()));
    let last = patch_at(&t, &url, &key, first.len())
        .header("upload-length", bytes.len().to_string())
        .body(rest.to_vec())
        .send()
        .await
        .unwrap();
    assert_eq!(last.status(), 204);
    let (_, headers) = head(&t, &url, &key).await;
    assert_eq!(headers["upload-length"], bytes.len().to_string());
    assert!(headers.get("upload-defer-length").is_none());
    let done = wait_terminal(&t.client, &t.base, &key, id_of(&url)).await;
    assert_eq!(done["status"], 6, "{done}");
    assert_eq!(done["size_bytes"], bytes.len() as u64);
    assert_eq!(done["folder"], "root/tus");
}

/// Creates a partial upload of `bytes` and sends them; its URL.
async fn partial(t: &TestServer, key: &str, bytes: &[u8]) -> String {
    let created = tus_request(t, Method::POST, &t.url("/tus"), key)
        .header("upload-length", bytes.len().to_string())
        .header("upload-concat", "partial")
        .send()
        .await
        .unwrap();
    assert_eq!(created.status(), 201);
    let url = format!(
        "http://{}{}",
        t.server.addr(),
        created.headers()["location"].to_str().unwrap()
    );
    let response = patch_at(t, &url, key, 0)
        .body(bytes.to_vec())
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 204);
    url
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn partial_uploads_are_joined_by_a_final_one_into_the_pipeline() {
    let dir = tempfile::tempdir().unwrap();
    let key = create_key(dir.path(), "tus");
    let other = create_key(dir.path(), "other");
    let t = TestServer::start(test_config(dir.path())).await;
    let bytes = std::fs::read(fixture("sample.mp4")).unwrap();
    let third = bytes.len() / 3;
    let pieces = [
        &bytes[..third],
        &bytes[third..2 * third],
        &bytes[2 * third..],
    ];
    let meta = metadata(&[("filename", "joined.mp4"), ("folder", "root/parts")]);
    let post_final = |key: &str, parts: &[&str], meta: &str| {
        let mut request = tus_request(&t, Method::POST, &t.url("/tus"), key)
            .header("upload-concat", format!("final;{}", parts.join(" ")));
        if !meta.is_empty() {
            request = request.header("upload-metadata", meta.to_string());
        }
        request.send()
    };

    let a = partial(&t, &key, pieces[0]).await;
    let b = partial(&t, &key, pieces[1]).await;
    let (_, headers) = head(&t, &a, &key).await;
    assert_eq!(headers["upload-concat"], "partial");
    // A partial upload is never handed over by itself.
    let (status, _) = get_json(&t.client, &t.url(&format!("/uploads/{}", id_of(&a))), &key).await;
    assert_eq!(status, 404);

    // The third part not complete yet: refused, and nothing is joined.
    let c_created = tus_request(&t, Method::POST, &t.url("/tus"), &key)
        .header("upload-length", pieces[2].len().to_string())
        .header("upload-concat", "partial")
        .send()
        .await
        .unwrap();
    let c = format!(
        "http://{}{}",
        t.server.addr(),
        c_created.headers()["location"].to_str().unwrap()
    );
    let unfinished = post_final(&key, &[&a, &b, &c], &meta).await.unwrap();
    assert_eq!(
        code_of(unfinished).await,
        (400, "invalid_concatenation".into())
    );
    // Another key's parts, and a final upload without its metadata.
    let foreign = post_final(&other, &[&a, &b], &meta).await.unwrap();
    assert_eq!(
        code_of(foreign).await,
        (400, "invalid_concatenation".into())
    );
    let no_meta = post_final(&key, &[&a, &b], "").await.unwrap();
    assert_eq!(code_of(no_meta).await, (422, "validation_failed".into()));
    // A part that is not partial.
    let single = create(&t, &key, 10).await;
    let not_partial = post_final(&key, &[&a, &single], &meta).await.unwrap();
    assert_eq!(
        code_of(not_partial).await,
        (400, "invalid_concatenation".into())
    );

    let response = patch_at(&t, &c, &key, 0)
        .body(pieces[2].to_vec())
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 204);

    // A part whose bytes the disk lost: refused, and the final's file goes.
    let lost = partial(&t, &key, b"0123456789").await;
    let lost_file = dir.path().join("tus").join(format!("{}.bin", id_of(&lost)));
    std::fs::OpenOptions::new()
        .write(true)
        .open(&lost_file)
        .unwrap()
        .set_len(4)
        .unwrap();
    let files_before = files_in(&dir.path().join("tus"));
    let short = post_final(&key, &[&a, &lost], &meta).await.unwrap();
    assert_eq!(code_of(short).await.0, 500);
    assert_eq!(files_in(&dir.path().join("tus")), files_before);

    // A key sent with each partial upload (as tus-js-client sends its
    // headers) names none of them; an empty part is a part.
    let keyed = |length: usize| {
        tus_request(&t, Method::POST, &t.url("/tus"), &key)
            .header("upload-length", length.to_string())
            .header("upload-concat", "partial")
            .header("idempotency-key", "file-1")
            .send()
    };
    let (one, two) = (keyed(10).await.unwrap(), keyed(10).await.unwrap());
    assert_eq!((one.status().as_u16(), two.status().as_u16()), (201, 201));
    assert_ne!(one.headers()["location"], two.headers()["location"]);
    assert!(two.headers().get("idempotent-replayed").is_none());
    assert_eq!(keyed(0).await.unwrap().status(), 201);
    let deferred = tus_request(&t, Method::POST, &t.url("/tus"), &key)
        .header("upload-defer-length", "1")
        .header("upload-concat", "partial")
        .send()
        .await
        .unwrap();
    assert_eq!(deferred.status(), 201);
    let deferred = format!(
        "http://{}{}",
        t.server.addr(),
        deferred.headers()["location"].to_str().unwrap()
    );
    let emptied = patch_at(&t, &deferred, &key, 0)
        .header("upload-length", "0")
        .body(Vec::new())
        .send()
        .await
        .unwrap();
    assert_eq!(emptied.status(), 204);

    // Parts named by path as well as by URL.
    let c_path = c.trim_start_matches(&format!("http://{}", t.server.addr()));
    let joined = post_final(&key, &[&a, &b, c_path], &meta).await.unwrap();
    assert_eq!(joined.status(), 201);
    assert_eq!(joined.headers()["upload-offset"], bytes.len().to_string());
    let url = format!(
        "http://{}{}",
        t.server.addr(),
        joined.headers()["location"].to_str().unwrap()
    );
    let (status, headers) = head(&t, &url, &key).await;
    assert_eq!(status, 200);
    assert_eq!(headers["upload-length"], bytes.len().to_string());
    assert_eq!(headers["upload-offset"], bytes.len().to_string());
    let concat = headers["upload-concat"].to_str().unwrap();
    assert!(concat.starts_with("final;/api/client/v1/tus/"), "{concat}");
    assert_eq!(concat.split(' ').count(), 3);
    // A final upload takes no PATCH; its parts are gone.
    let forbidden = patch_at(&t, &url, &key, bytes.len())
        .body(Vec::new())
        .send()
        .await
        .unwrap();
    assert_eq!(code_of(forbidden).await, (403, "upload_is_final".into()));
    for part in [&a, &b, &c] {
        assert_eq!(head(&t, part, &key).await.0, 404);
    }
    let parts_left: Vec<String> = files_in(&dir.path().join("tus"))
        .into_iter()
        .filter(|f| [&a, &b, &c].iter().any(|p| f.starts_with(id_of(p))))
        .collect();
    assert!(parts_left.is_empty(), "{parts_left:?}");

    let done = wait_terminal(&t.client, &t.base, &key, id_of(&url)).await;
    assert_eq!(done["status"], 6, "{done}");
    assert_eq!(done["size_bytes"], bytes.len() as u64);
    assert_eq!(done["filename"], "joined.mp4");
    assert_eq!(done["folder"], "root/parts");
    // A final creation whose answer was lost, sent again with its key after
    // the parts were sent again (the first ones are gone, joined): the same
    // upload, not a second one.
    let keyed_final = |parts: [String; 2]| {
        tus_request(&t, Method::POST, &t.url("/tus"), &key)
            .header("upload-concat", format!("final;{} {}", parts[0], parts[1]))
            .header("upload-metadata", &meta)
            .header("idempotency-key", "video-1")
            .send()
    };
    let first_parts = [
        partial(&t, &key, pieces[0]).await,
        partial(&t, &key, pieces[1]).await,
    ];
    let first = keyed_final(first_parts).await.unwrap();
    assert_eq!(first.status(), 201);
    let again_parts = [
        partial(&t, &key, pieces[0]).await,
        partial(&t, &key, pieces[1]).await,
    ];
    let again = keyed_final(again_parts).await.unwrap();
    assert_eq!(again.status(), 201);
    assert_eq!(again.headers()["location"], first.headers()["location"]);
    assert_eq!(again.headers()["idempotent-replayed"], "true");

    // It plays: the MP4 it became is served whole.
    let mp4_url = done["playback"]["mp4_url"].as_str().unwrap();
    let (status, _, mp4) = fetch_media(&t.client, mp4_url).await;
    assert_eq!(status, 200);
    assert!(mp4_top_level_boxes(&mp4).contains(&"moov".to_string()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_creation_repeated_with_its_idempotency_key_gets_the_same_upload() {
    let dir = tempfile::tempdir().unwrap();
    let key = create_key(dir.path(), "tus");
    let mut config = test_config(dir.path());
    config.max_unfinished_tus_uploads_per_tenant = 2;
    let t = TestServer::start(config).await;
    let post = |filename: &str, idempotency_key: Option<&str>| {
        let mut request = tus_request(&t, Method::POST, &t.url("/tus"), &key)
            .header("upload-length", "1000")
            .header(
                "upload-metadata",
                metadata(&[("filename", filename), ("folder", "root")]),
            );
        if let Some(k) = idempotency_key {
            request = request.header("idempotency-key", k);
        }
        request.send()
    };

    let first = post("a.mp4", Some("create-1")).await.unwrap();
    assert_eq!(first.status(), 201);
    assert!(first.headers().get("idempotent-replayed").is_none());
    let location = first.headers()["location"].clone();
    let url = format!("http://{}{}", t.server.addr(), location.to_str().unwrap());
    let sent = patch_at(&t, &url, &key, 0)
        .body(vec![7u8; 100])
        .send()
        .await
        .unwrap();
    assert_eq!(sent.status(), 204);

    let again = post("a.mp4", Some("create-1")).await.unwrap();
    assert_eq!(again.status(), 201);
    assert_eq!(again.headers()["location"], location);
    assert_eq!(again.headers()["idempotent-replayed"], "true");
    assert_eq!(again.headers()["upload-offset"], "100");
    let reused = post("b.mp4", Some("create-1")).await.unwrap();
    assert_eq!(
        code_of(reused).await,
        (422, "idempotency_key_reused".into())
    );
    let bad_key = post("a.mp4", Some("")).await.unwrap();
    assert_eq!(code_of(bad_key).await, (422, "validation_failed".into()));

    // The key's cap on unfinished uploads (2 here): of 20 creations at
    // once only one gets the place left; a replay is not refused, and
    // deleting one makes room.
    let racing: Vec<_> = (0..20).map(|_| post("b.mp4", None)).collect();
    let answers = futures_util::future::join_all(racing).await;
    let created = answers
        .iter()
        .filter(|a| a.as_ref().unwrap().status() == 201)
        .count();
    assert_eq!(created, 1);
    let third = post("c.mp4", None).await.unwrap();
    assert!(third.headers().contains_key("retry-after"));
    assert_eq!(code_of(third).await, (429, "too_many_tus_uploads".into()));
    assert_eq!(post("a.mp4", Some("create-1")).await.unwrap().status(), 201);
    let deleted = tus_request(&t, Method::DELETE, &url, &key)
        .send()
        .await
        .unwrap();
    assert_eq!(deleted.status(), 204);
    // Deleted with its upload, the key names a new one.
    let fresh = post("a.mp4", Some("create-1")).await.unwrap();
    assert_eq!(fresh.status(), 201);
    assert_ne!(fresh.headers()["location"], location);
    assert!(fresh.headers().get("idempotent-replayed").is_none());
}

/// tuspy with its checksums on (sha1 on every chunk): bytes that are not a
/// video go through in 64 KiB chunks, the pipeline refuses them, and the
/// source a failed upload keeps is exactly what tuspy read.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tuspy_with_checksums_sends_bytes_the_server_keeps_exactly() {
    if !tuspy_installed() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let key = create_key(dir.path(), "tus");
    let t = TestServer::start(test_config(dir.path())).await;
    let source = dir.path().join("noise.bin");
    let noise: Vec<u8> = (0..1_000_000u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    std::fs::write(&source, &noise).unwrap();
    let (url, done) = tuspy(&t.url("/tus"), &key, &source, 64 * 1024, &["--checksum"]);
    assert!(done);
    let failed = wait_terminal(&t.client, &t.base, &key, id_of(&url)).await;
    assert_eq!(failed["status"], 7, "{failed}");
    let kept = std::fs::read(dir.path().join("staging").join(kept_source(id_of(&url)))).unwrap();
    assert_eq!(sha2::Sha256::digest(&kept), sha2::Sha256::digest(&noise));
}

/// A `PATCH` whose client stops sending mid-body gets the multipart path's
/// idle timeout: a 408 once `body_idle_timeout_secs` pass, with what came
/// before kept (the offset moved to it), so the client resumes from there.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_patch_that_stops_sending_times_out_and_keeps_what_came() {
    use std::time::{Duration, Instant};
    let dir = tempfile::tempdir().unwrap();
    let key = create_key(dir.path(), "tus");
    let mut config = test_config(dir.path());
    config.body_idle_timeout = Duration::from_secs(1);
    let t = TestServer::start(config).await;
    let bytes = std::fs::read(fixture("sample.mp4")).unwrap();
    let url = create(&t, &key, bytes.len()).await;

    let (tx, rx) = tokio::sync::mpsc::channel::<Result<Vec<u8>, std::io::Error>>(4);
    tx.send(Ok(bytes[..7000].to_vec())).await.unwrap();
    let started = Instant::now();
    let stalled = patch_at(&t, &url, &key, 0)
        .header("content-length", bytes.len().to_string())
        .body(reqwest::Body::wrap_stream(tokio_stream_from(rx)))
        .send()
        .await
        .unwrap();
    assert_eq!(code_of(stalled).await, (408, "request_timeout".into()));
    assert!(started.elapsed() < Duration::from_secs(10));
    drop(tx);
    assert_eq!(head_offset(&t.client, &url, &key).await, 7000);
    let rest = patch_at(&t, &url, &key, 7000)
        .body(bytes[7000..].to_vec())
        .send()
        .await
        .unwrap();
    assert_eq!(rest.status(), 204);
    let done = wait_terminal(&t.client, &t.base, &key, id_of(&url)).await;
    assert_eq!(done["status"], 6, "{done}");
}
