//! `Idempotency-Key` on `POST /uploads`, on a real server: a repeat of an
//! answered create gets the same answer marked `Idempotent-Replayed: true`
//! and creates nothing; the key with another request is a 422, while the
//! first body is still arriving a 409; refusals are not remembered; keys
//! are per tenant, survive a restart and are forgotten after their retention.

mod common;

use std::time::Duration;

use common::*;
use serde_json::Value;

/// `POST /uploads` of `bytes` as `filename` in `folder`, with `key` as its
/// `Idempotency-Key`: the status, the `Idempotent-Replayed` header and the body.
async fn post_with_key(
    t: &TestServer,
    api_key: &str,
    key: &str,
    bytes: &[u8],
    filename: &str,
    folder: &str,
) -> (u16, Option<String>, Value) {
    let form = video_form(bytes.to_vec(), filename, folder);
    post_form_with_key(&t.client, &t.url("/uploads"), api_key, key, form).await
}

/// As [`post_with_key`], to the `POST /uploads` at `url`.
async fn post_form_with_key(
    client: &reqwest::Client,
    url: &str,
    api_key: &str,
    key: &str,
    form: reqwest::multipart::Form,
) -> (u16, Option<String>, Value) {
    let response = client
        .post(url)
        .bearer_auth(api_key)
        .header("idempotency-key", key)
        .multipart(form)
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    let replayed = response
        .headers()
        .get("idempotent-replayed")
        .map(|v| v.to_str().unwrap().to_string());
    (status, replayed, response.json().await.unwrap())
}

async fn listed(t: &TestServer, api_key: &str) -> Vec<String> {
    let (code, page) = get_json(&t.client, &t.url("/uploads"), api_key).await;
    assert_eq!(code, 200, "{page}");
    page_ids(&page)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_repeat_is_answered_again_and_creates_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let api_key = create_key(dir.path(), "idem");
    let t = TestServer::start(test_config(dir.path())).await;
    let bytes = std::fs::read(fixture("not-a-video.txt")).unwrap();

    let (code, replayed, first) =
        post_with_key(&t, &api_key, "order-42", &bytes, "a.mp4", "root").await;
    assert_eq!((code, replayed), (202, None), "{first}");
    let id = first["data"]["id"].as_str().unwrap().to_string();
    // It fails (not a video) and keeps its source for a retry.
    let done = wait_terminal(&t.client, &t.base, &api_key, &id).await;
    assert_eq!(done["status"], 7, "{done}");
    let staging = dir.path().join("staging");
    let staged = settled_in(&staging, &[format!("{id}.upload")]).await;

    let (code, replayed, again) =
        post_with_key(&t, &api_key, "order-42", &bytes, "a.mp4", "root").await;
    assert_eq!((code, replayed.as_deref()), (202, Some("true")));
    assert_eq!(again, first, "the first answer, as it was");
    assert_eq!(listed(&t, &api_key).await, std::slice::from_ref(&id));
    assert_eq!(files_in(&staging), staged, "nothing of the repeat is kept");

    // The same key with another request.
    for (filename, folder, body) in [
        ("b.mp4", "root", bytes.clone()),
        ("a.mp4", "root/other", bytes.clone()),
        ("a.mp4", "root", [bytes.as_slice(), b"x"].concat()),
    ] {
        let (code, _, refused) =
            post_with_key(&t, &api_key, "order-42", &body, filename, folder).await;
        assert_eq!(code, 422, "{refused}");
        assert_eq!(refused["code"], "idempotency_key_reused", "{refused}");
        assert!(refused["message"]
            .as_str()
            .unwrap()
            .contains("Idempotency-Key"));
    }
    // A repeat is checked like any request: a bad form is still a 422 of its own.
    let no_video = reqwest::multipart::Form::new().text("folder", "root");
    let response = t
        .client
        .post(t.url("/uploads"))
        .bearer_auth(&api_key)
        .header("idempotency-key", "order-42")
        .multipart(no_video)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 422);
    assert_eq!(
        response.json::<Value>().await.unwrap()["code"],
        "validation_failed"
    );

    // Keys are per tenant: another key's same Idempotency-Key is a new upload.
    let other = create_key(dir.path(), "other");
    let (code, replayed, theirs) =
        post_with_key(&t, &other, "order-42", &bytes, "a.mp4", "root").await;
    assert_eq!((code, replayed), (202, None), "{theirs}");
    assert_ne!(theirs["data"]["id"], first["data"]["id"]);
    assert_eq!(listed(&t, &api_key).await, [id]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_key_and_a_refused_create_are_not_remembered() {
    let dir = tempfile::tempdir().unwrap();
    let api_key = create_key(dir.path(), "idem");
    let t = TestServer::start(test_config(dir.path())).await;
    let bytes = std::fs::read(fixture("not-a-video.txt")).unwrap();

    for bad in ["k".repeat(256), "caf\u{e9}".to_string(), String::new()] {
        let form = video_form(bytes.clone(), "a.mp4", "root");
        let response = t
            .client
            .post(t.url("/uploads"))
            .bearer_auth(&api_key)
            .header("idempotency-key", bad.as_bytes())
            .multipart(form)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 422, "{bad:?}");
        let body: Value = response.json().await.unwrap();
        assert_eq!(body["code"], "validation_failed", "{body}");
        assert!(body["errors"]["Idempotency-Key"].is_array(), "{body}");
    }
    let longest = "k".repeat(255);
    let (code, _, body) = post_with_key(&t, &api_key, &longest, &bytes, "a.mp4", "root").await;
    assert_eq!(code, 202, "{body}");

    // Refused (an invalid folder): not remembered, so the key is free for a good request.
    let (code, _, refused) =
        post_with_key(&t, &api_key, "retry-me", &bytes, "a.mp4", "../up").await;
    assert_eq!(code, 422, "{refused}");
    let (code, replayed, created) =
        post_with_key(&t, &api_key, "retry-me", &bytes, "a.mp4", "root").await;
    assert_eq!((code, replayed), (202, None), "{created}");
    assert_eq!(listed(&t, &api_key).await.len(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_key_is_in_use_while_its_first_body_arrives() {
    let dir = tempfile::tempdir().unwrap();
    let api_key = create_key(dir.path(), "idem");
    let t = TestServer::start(test_config(dir.path())).await;
    let bytes = std::fs::read(fixture("not-a-video.txt")).unwrap();

    // The first request sends its head and half its body, then waits.
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<Vec<u8>, std::io::Error>>(4);
    let head = b"--B\r\nContent-Disposition: form-data; name=\"folder\"\r\n\r\nroot\r\n--B\r\nContent-Disposition: form-data; name=\"video\"; filename=\"a.mp4\"\r\n\r\n".to_vec();
    tx.send(Ok(head)).await.unwrap();
    tx.send(Ok(bytes.clone())).await.unwrap();
    let first = t
        .client
        .post(t.url("/uploads"))
        .bearer_auth(&api_key)
        .header("idempotency-key", "slow")
        .header("content-type", "multipart/form-data; boundary=B")
        .body(reqwest::Body::wrap_stream(tokio_stream_from(rx)))
        .send();
    let first = tokio::spawn(first);
    let staging = dir.path().join("staging");
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while !files_in(&staging).iter().any(|f| f.ends_with(".part")) {
        assert!(!first.is_finished(), "the first request was answered early");
        assert!(
            std::time::Instant::now() < deadline,
            "its body never reached staging"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }

    let response = t
        .client
        .post(t.url("/uploads"))
        .bearer_auth(&api_key)
        .header("idempotency-key", "slow")
        .multipart(video_form(bytes.clone(), "a.mp4", "root"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 409);
    let retry_after: u64 = response.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(retry_after >= 1);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["code"], "idempotency_key_in_use", "{body}");

    // The first finishes and is created; now the repeat is replayed.
    tx.send(Ok(b"\r\n--B--\r\n".to_vec())).await.unwrap();
    drop(tx);
    let first = first.await.unwrap().unwrap();
    assert_eq!(first.status(), 202);
    let first: Value = first.json().await.unwrap();
    let (code, replayed, again) =
        post_with_key(&t, &api_key, "slow", &bytes, "a.mp4", "root").await;
    assert_eq!((code, replayed.as_deref()), (202, Some("true")), "{again}");
    assert_eq!(again, first);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn parallel_creates_with_one_key_make_one_upload() {
    let dir = tempfile::tempdir().unwrap();
    let api_key = create_key(dir.path(), "idem");
    let t = TestServer::start(test_config(dir.path())).await;
    let bytes = std::fs::read(fixture("not-a-video.txt")).unwrap();

    let posts = (0..16).map(|_| post_with_key(&t, &api_key, "once", &bytes, "a.mp4", "root"));
    let answers = futures_util::future::join_all(posts).await;
    let mut ids = std::collections::BTreeSet::new();
    let mut created = 0;
    for (code, replayed, body) in &answers {
        match code {
            202 => {
                ids.insert(body["data"]["id"].as_str().unwrap().to_string());
                created += usize::from(replayed.is_none());
            }
            409 => assert_eq!(body["code"], "idempotency_key_in_use", "{body}"),
            other => panic!("{other}: {body}"),
        }
    }
    assert_eq!(created, 1, "{answers:?}");
    assert_eq!(ids.len(), 1, "{answers:?}");
    assert_eq!(
        listed(&t, &api_key).await,
        ids.into_iter().collect::<Vec<_>>()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_survive_a_restart_and_expire_after_their_retention() {
    let dir = tempfile::tempdir().unwrap();
    let api_key = create_key(dir.path(), "idem");
    let bytes = std::fs::read(fixture("not-a-video.txt")).unwrap();
    let t = TestServer::start(test_config(dir.path())).await;
    let (code, _, first) = post_with_key(&t, &api_key, "kept", &bytes, "a.mp4", "root").await;
    assert_eq!(code, 202, "{first}");
    tokio::time::timeout(Duration::from_secs(30), t.server.shutdown())
        .await
        .unwrap();

    let t = TestServer::start(test_config(dir.path())).await;
    let (code, replayed, again) =
        post_with_key(&t, &api_key, "kept", &bytes, "a.mp4", "root").await;
    assert_eq!((code, replayed.as_deref()), (202, Some("true")), "{again}");
    assert_eq!(again, first);
    tokio::time::timeout(Duration::from_secs(30), t.server.shutdown())
        .await
        .unwrap();

    // With a retention of a second, the key is forgotten and makes a new upload.
    let mut config = test_config(dir.path());
    config.idempotency_key_retention = Duration::from_secs(1);
    let t = TestServer::start(config).await;
    tokio::time::sleep(Duration::from_millis(2100)).await;
    let (code, replayed, new) = post_with_key(&t, &api_key, "kept", &bytes, "a.mp4", "root").await;
    assert_eq!((code, replayed), (202, None), "{new}");
    assert_ne!(new["data"]["id"], first["data"]["id"]);
    assert_eq!(listed(&t, &api_key).await.len(), 2);
}

/// A client that goes away while its create is being committed: the create
/// still finishes whole (its source is transcoded) and holds its key until
/// then, so the client's retry gets its answer instead of a second upload.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_gone_mid_commit_leaves_one_whole_upload() {
    use tokio::io::AsyncWriteExt;

    let dir = tempfile::tempdir().unwrap();
    let api_key = create_key(dir.path(), "idem");
    let mut server = start(dir.path(), &[("VIDPIPE_PAUSE_AT", "create_commit")]);
    let bytes = std::fs::read(fixture("sample.mp4")).unwrap();
    let uploads = format!("{}/uploads", server.base);

    let mut body = b"--B\r\nContent-Disposition: form-data; name=\"folder\"\r\n\r\nroot\r\n--B\r\nContent-Disposition: form-data; name=\"video\"; filename=\"a.mp4\"\r\n\r\n".to_vec();
    body.extend_from_slice(&bytes);
    body.extend_from_slice(b"\r\n--B--\r\n");
    let authority = uploads.split('/').nth(2).unwrap().to_string();
    let head = format!(
        "POST /api/client/v1/uploads HTTP/1.1\r\nHost: {authority}\r\n\
         Authorization: Bearer {api_key}\r\nIdempotency-Key: gone\r\n\
         Content-Type: multipart/form-data; boundary=B\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    let mut socket = tokio::net::TcpStream::connect(&authority).await.unwrap();
    socket.write_all(head.as_bytes()).await.unwrap();
    socket.write_all(&body).await.unwrap();
    // The body is staged under its final name: the commit is under way (and paused).
    let staging = dir.path().join("staging");
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while !files_in(&staging).iter().any(|f| f.ends_with(".upload")) {
        assert!(std::time::Instant::now() < deadline, "never staged");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    drop(socket);

    // The retry is told to wait while the first create commits, then gets its answer.
    let client = reqwest::Client::new();
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    let (replayed, answer) = loop {
        let form = video_form(bytes.clone(), "a.mp4", "root");
        let (code, replayed, answer) =
            post_form_with_key(&client, &uploads, &api_key, "gone", form).await;
        match code {
            409 => assert_eq!(answer["code"], "idempotency_key_in_use", "{answer}"),
            202 => break (replayed, answer),
            other => panic!("{other}: {answer}"),
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the key stayed in use"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(replayed.as_deref(), Some("true"), "{answer}");
    let id = answer["data"]["id"].as_str().unwrap();
    let (code, page) = get_json(&client, &uploads, &api_key).await;
    assert_eq!(code, 200, "{page}");
    assert_eq!(page_ids(&page), [id.to_string()]);
    let done = wait_terminal(&client, &server.base, &api_key, id).await;
    assert_eq!(done["status"], 6, "the source was kept: {done}");
    server.kill9();
}
