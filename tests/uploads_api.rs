//! The documented Uploads API end to end: a real server on an ephemeral port,
//! real transcodes, real database on disk.

mod common;

use common::*;
use serde_json::Value;
use vidpipe::media::{probe, MediaLimits};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upload_transcode_and_play() {
    let dir = tempfile::tempdir().unwrap();
    let key = create_key(dir.path(), "app");
    let t = TestServer::start(test_config(dir.path())).await;

    let (code, body) = upload(&t.client, &t.base, &key, "sample.mp4", "root/my-folder").await;
    assert_eq!(code, 202, "{body}");
    assert_eq!(
        body["message"],
        "Upload accepted and is now being processed."
    );
    assert_eq!(body["data"]["status"], 1);
    assert_eq!(body["data"]["status_text"], "pending");
    let id = body["data"]["id"].as_str().unwrap().to_string();
    assert!(uuid::Uuid::parse_str(&id).is_ok());

    let record = wait_terminal(&t.client, &t.base, &key, &id).await;
    assert_eq!(record["status"], 6, "{record}");
    assert_eq!(record["status_text"], "completed");
    assert_eq!(record["filename"], "sample.mp4");
    assert_eq!(record["folder"], "root/my-folder");
    for field in ["created_at", "updated_at"] {
        let text = record[field].as_str().unwrap();
        assert!(text.ends_with('Z'), "{field} = {text}");
        time::OffsetDateTime::parse(text, &time::format_description::well_known::Rfc3339).unwrap();
    }
    assert_eq!(record["source"]["video_codec"], "h264");
    assert!(record.get("error").is_none());

    // The MP4: right content type, whole file, probed by our own code.
    let mp4_url = record["playback"]["mp4_url"].as_str().unwrap();
    let response = t.client.get(mp4_url).send().await.unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["content-type"], "video/mp4");
    let mp4 = response.bytes().await.unwrap();
    let local = dir.path().join("downloaded.mp4");
    std::fs::write(&local, &mp4).unwrap();
    let out = probe(&local, &MediaLimits::default()).unwrap();
    let src = probe(&fixture("sample.mp4"), &MediaLimits::default()).unwrap();
    assert_eq!(out.video_codec, "h264");
    assert_eq!(out.audio_codec.as_deref(), Some("aac"));
    assert_eq!((out.width, out.height), (src.width, src.height));
    let (a, b) = (out.duration.unwrap(), src.duration.unwrap());
    assert!((a - b).abs() <= 0.3, "duration {a} vs source {b}");
    let boxes = mp4_top_level_boxes(&mp4);
    let moov = boxes.iter().position(|b| b == "moov").unwrap();
    let mdat = boxes.iter().position(|b| b == "mdat").unwrap();
    assert!(moov < mdat, "faststart: moov before mdat, got {boxes:?}");

    // Range requests, so a <video> element can seek.
    let response = t
        .client
        .get(mp4_url)
        .header("range", "bytes=100-199")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 206);
    let range = response.headers()["content-range"]
        .to_str()
        .unwrap()
        .to_string();
    assert_eq!(range, format!("bytes 100-199/{}", mp4.len()));
    assert_eq!(response.bytes().await.unwrap(), mp4.slice(100..200));

    let poster_url = record["playback"]["poster_url"].as_str().unwrap();
    let response = t.client.get(poster_url).send().await.unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["content-type"], "image/jpeg");
    assert_eq!(&response.bytes().await.unwrap()[..3], &[0xFF, 0xD8, 0xFF]);

    // Terminal: staging and work files are gone.
    assert!(left_in(&dir.path().join("staging")).await.is_empty());
    assert!(left_in(&dir.path().join("work")).await.is_empty());

    // The history has every transition, in order.
    let id = uuid::Uuid::parse_str(&id).unwrap();
    let history = t.server.services().store.transitions(id).unwrap();
    let codes: Vec<u8> = history.iter().map(|h| h.to.code()).collect();
    assert_eq!(codes, vec![1, 3, 5, 6]);
    t.server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn authentication_and_tenant_isolation() {
    let dir = tempfile::tempdir().unwrap();
    let alice = create_key(dir.path(), "alice");
    let bob = create_key(dir.path(), "bob");
    let t = TestServer::start(test_config(dir.path())).await;

    for auth in [
        None,
        Some("Bearer sk-nope"),
        Some("Basic abc"),
        Some("Bearer "),
    ] {
        let mut request = t.client.get(t.url("/uploads"));
        if let Some(auth) = auth {
            request = request.header("authorization", auth);
        }
        let response = request.send().await.unwrap();
        assert_eq!(response.status(), 401);
        let body: Value = response.json().await.unwrap();
        assert_eq!(body["message"], "Unauthenticated.");
    }
    let (code, _) = upload(&t.client, &t.base, "sk-wrong", "sample.mp4", "root").await;
    assert_eq!(code, 401);

    let (code, body) = upload(&t.client, &t.base, &alice, "not-a-video.txt", "root").await;
    assert_eq!(code, 202);
    let id = body["data"]["id"].as_str().unwrap();
    // Finished and read by its owner, so its rendered body is kept: still 404 for others.
    let failed = wait_terminal(&t.client, &t.base, &alice, id).await;
    assert_eq!(failed["status"], 7);
    let (code, body) = get_json(&t.client, &t.url(&format!("/uploads/{id}")), &bob).await;
    assert_eq!(code, 404, "{body}");
    assert_eq!(body["message"], "Not found.");
    let (_, list) = get_json(&t.client, &t.url("/uploads"), &bob).await;
    assert_eq!(list["data"].as_array().unwrap().len(), 0);
    let (_, list) = get_json(&t.client, &t.url("/uploads"), &alice).await;
    assert_eq!(list["data"][0]["id"], id);

    // Revocation takes effect on the next request.
    revoke_key(dir.path(), "alice");
    let (code, _) = get_json(&t.client, &t.url("/uploads"), &alice).await;
    assert_eq!(code, 401);
    let (code, _) = get_json(&t.client, &t.url("/uploads"), &bob).await;
    assert_eq!(code, 200);
    t.server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn validation_errors() {
    let dir = tempfile::tempdir().unwrap();
    let key = create_key(dir.path(), "app");
    let mut config = test_config(dir.path());
    config.max_upload_bytes = 100_000;
    let t = TestServer::start(config).await;
    let post = |form: reqwest::multipart::Form| {
        t.client
            .post(t.url("/uploads"))
            .bearer_auth(&key)
            .multipart(form)
            .send()
    };
    let sample = std::fs::read(fixture("sample.mp4")).unwrap();
    assert!(sample.len() < 100_000);

    let form = reqwest::multipart::Form::new().text("folder", "root");
    let response = post(form).await.unwrap();
    assert_eq!(response.status(), 422);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["errors"]["video"][0], "The video field is required.");
    assert!(body["message"].is_string());

    let part = reqwest::multipart::Part::bytes(sample.clone()).file_name("a.mp4");
    let response = post(reqwest::multipart::Form::new().part("video", part))
        .await
        .unwrap();
    assert_eq!(response.status(), 422);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["errors"]["folder"][0], "The folder field is required.");

    for folder in [
        "root/../etc",
        "root//a",
        "",
        "home/x",
        "root/a\\b",
        "root/.",
    ] {
        let response = post(video_form(sample.clone(), "a.mp4", folder))
            .await
            .unwrap();
        assert_eq!(response.status(), 422, "folder {folder:?}");
        let body: Value = response.json().await.unwrap();
        assert!(body["errors"]["folder"][0].is_string(), "{body}");
    }

    // A video part that is not a file.
    let form = reqwest::multipart::Form::new()
        .text("video", "just text")
        .text("folder", "root");
    let response = post(form).await.unwrap();
    assert_eq!(response.status(), 422);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["errors"]["video"][0], "The video must be a file.");

    // Two video parts.
    let form = video_form(sample.clone(), "a.mp4", "root").part(
        "video",
        reqwest::multipart::Part::bytes(sample.clone()).file_name("b.mp4"),
    );
    assert_eq!(post(form).await.unwrap().status(), 422);

    // Not multipart.
    let response = t
        .client
        .post(t.url("/uploads"))
        .bearer_auth(&key)
        .json(&serde_json::json!({"folder": "root"}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 415);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["code"], "unsupported_media_type");

    // Too large, with and without a declared length.
    let big = vec![0u8; 150_000];
    let response = post(video_form(big.clone(), "big.mp4", "root"))
        .await
        .unwrap();
    assert_eq!(response.status(), 413);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["code"], "payload_too_large");
    let boundary = "XyZ";
    let mut raw = format!(
        "--{boundary}\r\nContent-Disposition: form-data; name=\"folder\"\r\n\r\nroot\r\n--{boundary}\r\nContent-Disposition: form-data; name=\"video\"; filename=\"big.mp4\"\r\n\r\n"
    )
    .into_bytes();
    raw.extend_from_slice(&big);
    raw.extend_from_slice(format!("\r\n--{boundary}--\r\n").as_bytes());
    let chunks: Vec<Result<Vec<u8>, std::io::Error>> =
        raw.chunks(8192).map(|c| Ok(c.to_vec())).collect();
    let response = t
        .client
        .post(t.url("/uploads"))
        .bearer_auth(&key)
        .header(
            "content-type",
            format!("multipart/form-data; boundary={boundary}"),
        )
        .body(reqwest::Body::wrap_stream(futures_util::stream::iter(
            chunks,
        )))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 413);

    // Unknown and malformed ids.
    for id in [
        "9c1fa5c4-a8f1-4b2e-9d6e-1c8a0b9e2d7f",
        "not-a-uuid",
        "..%2F..%2Fetc",
    ] {
        let (code, body) = get_json(&t.client, &t.url(&format!("/uploads/{id}")), &key).await;
        assert_eq!(code, 404, "{id}");
        assert_eq!(body["code"], "not_found");
    }

    // Nothing was accepted, and nothing was left on disk.
    let (_, list) = get_json(&t.client, &t.url("/uploads"), &key).await;
    assert_eq!(list["data"].as_array().unwrap().len(), 0);
    assert!(files_in(&dir.path().join("staging")).is_empty());
    t.server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failures_are_explained_and_list_is_the_latest_fifty() {
    let dir = tempfile::tempdir().unwrap();
    let key = create_key(dir.path(), "app");
    let t = TestServer::start(test_config(dir.path())).await;

    let mut ids = Vec::new();
    for i in 0..55 {
        let name = if i == 0 {
            "audio-only.m4a"
        } else {
            "not-a-video.txt"
        };
        let (code, body) = upload(&t.client, &t.base, &key, name, "root/bulk").await;
        assert_eq!(code, 202, "{body}");
        ids.push(body["data"]["id"].as_str().unwrap().to_string());
    }
    let (code, list) = get_json(&t.client, &t.url("/uploads"), &key).await;
    assert_eq!(code, 200);
    let listed: Vec<&str> = list["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["id"].as_str().unwrap())
        .collect();
    let expected: Vec<&str> = ids.iter().rev().take(50).map(String::as_str).collect();
    assert_eq!(listed, expected, "the 50 most recent, newest first");
    assert!(list["next_cursor"].is_string(), "five more follow");

    let audio = wait_terminal(&t.client, &t.base, &key, &ids[0]).await;
    assert_eq!(audio["status"], 7);
    assert_eq!(audio["status_text"], "failed");
    assert_eq!(audio["error"]["code"], "no_video_stream");
    let text = wait_terminal(&t.client, &t.base, &key, &ids[54]).await;
    assert_eq!(text["error"]["code"], "unsupported_media");
    assert!(text["error"]["message"].as_str().unwrap().len() > 3);
    for id in &ids {
        wait_terminal(&t.client, &t.base, &key, id).await;
    }
    // Each failed upload keeps its source for a retry, and nothing else.
    let mut kept: Vec<String> = ids.iter().map(|id| kept_source(id)).collect();
    kept.sort();
    assert_eq!(settled_in(&dir.path().join("staging"), &kept).await, kept);
    t.server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_transcoder_panic_fails_one_upload_and_the_service_survives() {
    let dir = tempfile::tempdir().unwrap();
    let key = create_key(dir.path(), "app");
    let mut config = test_config(dir.path());
    config.faults.panic_on_filename = Some("boom".into());
    let t = TestServer::start(config).await;

    let bytes = std::fs::read(fixture("sample.mp4")).unwrap();
    let response = t
        .post_form(&key, video_form(bytes, "boom.mp4", "root"))
        .await;
    assert_eq!(response.status(), 202);
    let body: Value = response.json().await.unwrap();
    let failed = wait_terminal(
        &t.client,
        &t.base,
        &key,
        body["data"]["id"].as_str().unwrap(),
    )
    .await;
    assert_eq!(failed["status"], 7);
    assert_eq!(failed["error"]["code"], "internal_error");

    // The same workers go on to complete the next upload.
    let (_, body) = upload(&t.client, &t.base, &key, "sample.mp4", "root").await;
    let ok = wait_terminal(
        &t.client,
        &t.base,
        &key,
        body["data"]["id"].as_str().unwrap(),
    )
    .await;
    assert_eq!(ok["status"], 6, "{ok}");
    t.server.shutdown().await;
}

fn child_id(t: &TestServer, child: vidpipe::actors::supervisor::Child) -> Option<ractor::ActorId> {
    use vidpipe::actors::supervisor::Child;
    let peers = &t.server.services().peers;
    match child {
        Child::Uploader => peers.uploader.get().map(|a| a.get_id()),
        Child::Registry => peers.registry.get().map(|a| a.get_id()),
        Child::Intake => peers.intake.get().map(|a| a.get_id()),
        Child::Transcoders => peers.transcoders.get().map(|a| a.get_id()),
        Child::Webhooks => peers.webhooks.get().map(|a| a.get_id()),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_supervisor_restarts_killed_children() {
    use vidpipe::actors::supervisor::Child;
    let dir = tempfile::tempdir().unwrap();
    let key = create_key(dir.path(), "app");
    let t = TestServer::start(test_config(dir.path())).await;
    for child in [
        Child::Uploader,
        Child::Registry,
        Child::Intake,
        Child::Transcoders,
        Child::Webhooks,
    ] {
        let before = child_id(&t, child);
        t.server.kill_child(child);
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        loop {
            let now = child_id(&t, child);
            if now.is_some() && now != before {
                break;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "{child:?} not restarted"
            );
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    }
    let done = upload_to_end(&t, &key, "sample.mp4", "root").await;
    assert_eq!(done["status"], 6, "{done}");
    t.server.shutdown().await;
}
