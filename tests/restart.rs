//! Restart loses nothing: the real binary is killed with SIGKILL and started
//! again on the same data dir; every upload that got a 202 finishes.

mod common;

use std::time::{Duration, Instant};

use common::*;
use vidpipe::store::Store;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_and_restart_finishes_every_accepted_upload() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let client = reqwest::Client::new();

    let mut server = start(&data, &[]);
    let hint = server.log.lock().unwrap().join("\n");
    assert!(
        hint.contains("vidpipe keys create"),
        "first start explains keys: {hint}"
    );
    // Keys can be made while the server runs.
    let key = keys_create(&data);
    assert!(key.starts_with("sk-"));

    let (code, body) = upload(&client, &server.base, &key, "sample.mp4", "root").await;
    assert_eq!(code, 202, "{body}");
    let done_id = body["data"]["id"].as_str().unwrap().to_string();
    assert_eq!(
        wait_terminal(&client, &server.base, &key, &done_id).await["status"],
        6
    );

    let mut accepted = Vec::new();
    for _ in 0..4 {
        let (code, body) = upload(&client, &server.base, &key, "sample.mp4", "root/again").await;
        assert_eq!(code, 202, "{body}");
        accepted.push(body["data"]["id"].as_str().unwrap().to_string());
    }
    server.child.kill().unwrap();
    server.child.wait().unwrap();

    {
        let store = Store::open(&data.join("vidpipe.redb")).unwrap();
        let unfinished = store.unfinished().unwrap();
        assert!(
            !unfinished.is_empty(),
            "the kill should interrupt at least one job"
        );
    }

    let mut server = start(&data, &[]);
    for id in &accepted {
        let record = wait_terminal(&client, &server.base, &key, id).await;
        assert_eq!(record["status"], 6, "{record}");
    }
    let (_, done) = get_json(&client, &format!("{}/uploads/{done_id}", server.base), &key).await;
    assert_eq!(done["data"]["status"], 6, "completed stays completed");
    assert!(left_in(&data.join("staging")).await.is_empty());
    assert!(left_in(&data.join("work")).await.is_empty());
    server.child.kill().unwrap();
    server.child.wait().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_cut_off_by_a_crash_leaves_no_trace() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let key = keys_create(&data);
    let mut server = start(&data, &[]);

    // Send half a body, then kill the server while it waits for the rest.
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<Vec<u8>, std::io::Error>>(4);
    let head = b"--B\r\nContent-Disposition: form-data; name=\"folder\"\r\n\r\nroot\r\n--B\r\nContent-Disposition: form-data; name=\"video\"; filename=\"a.mp4\"\r\n\r\n".to_vec();
    tx.send(Ok(head)).await.unwrap();
    tx.send(Ok(vec![7u8; 200_000])).await.unwrap();
    let body = reqwest::Body::wrap_stream(tokio_stream_from(rx));
    let request = reqwest::Client::new()
        .post(format!("{}/uploads", server.base))
        .bearer_auth(&key)
        .header("content-type", "multipart/form-data; boundary=B")
        .body(body)
        .send();
    let pending = tokio::spawn(request);
    let part_seen = Instant::now() + Duration::from_secs(10);
    while !files_in(&data.join("staging"))
        .iter()
        .any(|f| f.ends_with(".part"))
    {
        assert!(
            Instant::now() < part_seen,
            "the body never reached the staging folder"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    server.child.kill().unwrap();
    server.child.wait().unwrap();
    drop(tx);
    assert!(
        pending.await.unwrap().is_err(),
        "the cut-off request got no answer"
    );

    let mut server = start(&data, &[]);
    let (_, list) = get_json(
        &reqwest::Client::new(),
        &format!("{}/uploads", server.base),
        &key,
    )
    .await;
    assert_eq!(list["data"].as_array().unwrap().len(), 0);
    assert!(
        files_in(&data.join("staging")).is_empty(),
        "partial body removed at start"
    );
    server.child.kill().unwrap();
    server.child.wait().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_lets_in_flight_requests_finish_and_exits_zero() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let key = keys_create(&data);
    let mut server = start(&data, &[]);

    // A request whose body is still arriving when SIGTERM comes.
    let sample = std::fs::read(fixture("sample.mp4")).unwrap();
    let head = b"--B\r\nContent-Disposition: form-data; name=\"folder\"\r\n\r\nroot\r\n--B\r\nContent-Disposition: form-data; name=\"video\"; filename=\"late.mp4\"\r\n\r\n".to_vec();
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<Vec<u8>, std::io::Error>>(4);
    tx.send(Ok(head)).await.unwrap();
    tx.send(Ok(sample[..sample.len() / 2].to_vec()))
        .await
        .unwrap();
    let request = reqwest::Client::new()
        .post(format!("{}/uploads", server.base))
        .bearer_auth(&key)
        .header("content-type", "multipart/form-data; boundary=B")
        .body(reqwest::Body::wrap_stream(tokio_stream_from(rx)))
        .send();
    let pending = tokio::spawn(request);
    tokio::time::sleep(Duration::from_millis(300)).await;
    // SAFETY: kill(2) on our own child's pid has no memory-safety preconditions.
    unsafe { libc::kill(server.child.id() as i32, libc::SIGTERM) };
    tokio::time::sleep(Duration::from_millis(300)).await;
    tx.send(Ok(sample[sample.len() / 2..].to_vec()))
        .await
        .unwrap();
    tx.send(Ok(b"\r\n--B--\r\n".to_vec())).await.unwrap();
    drop(tx);
    let response = pending.await.unwrap().unwrap();
    assert_eq!(response.status(), 202, "the in-flight upload is accepted");
    let body: serde_json::Value = response.json().await.unwrap();
    let id = body["data"]["id"].as_str().unwrap().to_string();

    let deadline = Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(status) = server.child.try_wait().unwrap() {
            break status;
        }
        assert!(
            Instant::now() < deadline,
            "server did not exit after SIGTERM"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert!(status.success(), "exit status {status:?}");

    let server = start(&data, &[]);
    let record = wait_terminal(&reqwest::Client::new(), &server.base, &key, &id).await;
    assert_eq!(record["status"], 6, "{record}");
    let mut server = server;
    server.kill9();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stop_closes_idle_keep_alive_connections_at_once() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    let dir = tempfile::tempdir().unwrap();
    let t = TestServer::start(test_config(dir.path())).await;
    // Two idle keep-alive connections, each after one answered request.
    let mut idle = Vec::new();
    for _ in 0..2 {
        let mut conn = tokio::net::TcpStream::connect(t.server.addr())
            .await
            .unwrap();
        conn.write_all(b"GET /healthz HTTP/1.1\r\nhost: x\r\n\r\n")
            .await
            .unwrap();
        let mut head = vec![0u8; 1024];
        let n = conn.read(&mut head).await.unwrap();
        assert!(head[..n].starts_with(b"HTTP/1.1 200"), "{:?}", &head[..n]);
        idle.push(conn);
    }

    // The grace period is 30 s; idle connections must not use it up.
    let started = Instant::now();
    tokio::time::timeout(Duration::from_secs(10), t.server.shutdown())
        .await
        .expect("shutdown waited for idle connections");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    for mut conn in idle {
        let mut rest = Vec::new();
        let read = tokio::time::timeout(Duration::from_secs(2), conn.read_to_end(&mut rest)).await;
        assert!(
            matches!(read, Ok(Ok(0))) || matches!(read, Ok(Err(_))),
            "the connection is closed: {read:?} {rest:?}"
        );
    }
}
