//! Request ids on every answer, and structured logs: one JSON object per
//! line, with the request id on the request's lines.

mod common;

use std::process::Stdio;
use std::time::Duration;

use common::*;
use serde_json::Value;
use tokio::io::{AsyncBufReadExt, BufReader, Lines};
use tokio::process::{Child, ChildStderr};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_ids_are_echoed_or_made() {
    let dir = tempfile::tempdir().unwrap();
    let key = create_key(dir.path(), "app");
    let t = TestServer::start(test_config(dir.path())).await;
    let id_of = |response: &reqwest::Response| {
        response.headers()["x-request-id"]
            .to_str()
            .unwrap()
            .to_string()
    };

    // A sane client id comes back as it was, on success and on errors alike.
    for (url, status) in [
        (t.url("/uploads"), 200),
        (t.url("/uploads/nope"), 404),
        (format!("http://{}/healthz", t.server.addr()), 200),
    ] {
        let response = t
            .client
            .get(&url)
            .bearer_auth(&key)
            .header("x-request-id", "client-42.a:b_c")
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), status, "{url}");
        assert_eq!(id_of(&response), "client-42.a:b_c");
    }
    let response = t.client.get(t.url("/uploads")).send().await.unwrap();
    assert_eq!(response.status(), 401);

    // Missing or unreasonable ids are replaced by fresh ones.
    let mut made = Vec::new();
    for sent in [None, Some("has space"), Some("x".repeat(200).as_str())] {
        let mut request = t.client.get(t.url("/uploads")).bearer_auth(&key);
        if let Some(sent) = sent {
            request = request.header("x-request-id", sent);
        }
        let id = id_of(&request.send().await.unwrap());
        assert!(uuid::Uuid::parse_str(&id).is_ok(), "{id}");
        made.push(id);
    }
    made.dedup();
    assert_eq!(made.len(), 3, "each request gets its own id");
    t.server.shutdown().await;
}

/// The next stderr line that is a JSON object with `pick` true, within a deadline.
async fn next_json(
    lines: &mut Lines<BufReader<ChildStderr>>,
    pick: impl Fn(&Value) -> bool,
) -> Value {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let line = tokio::time::timeout_at(deadline, lines.next_line())
            .await
            .expect("log line in time")
            .unwrap()
            .expect("server still running");
        let Ok(value) = serde_json::from_str::<Value>(&line) else {
            // The start-up banner and libav's own output are not JSON.
            continue;
        };
        if pick(&value) {
            return value;
        }
    }
}

fn spawn_server(data_dir: &std::path::Path) -> Child {
    let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_vidpipe"));
    for (name, _) in std::env::vars().filter(|(k, _)| k.starts_with("VIDPIPE_")) {
        command.env_remove(name);
    }
    command
        .args(["serve", "--listen", "127.0.0.1:0", "--transcoders", "1"])
        .arg("--data-dir")
        .arg(data_dir)
        .args(["--log-format", "json"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_logs_follow_one_upload_from_request_to_completion() {
    let dir = tempfile::tempdir().unwrap();
    let key = create_key(dir.path(), "app");
    let mut server = spawn_server(dir.path());
    let mut lines = BufReader::new(server.stderr.take().unwrap()).lines();
    let listening = next_json(&mut lines, |v| v["message"] == "listening").await;
    assert_eq!(listening["level"], "INFO");
    let addr = listening["addr"].as_str().unwrap().to_string();
    let base = format!("http://{addr}/api/client/v1");

    let client = reqwest::Client::new();
    let bytes = std::fs::read(fixture("sample.mp4")).unwrap();
    let response = client
        .post(format!("{base}/uploads"))
        .bearer_auth(&key)
        .header("x-request-id", "trace-me-1")
        .multipart(video_form(bytes, "sample.mp4", "root"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 202);
    let body: Value = response.json().await.unwrap();
    let upload = body["data"]["id"].as_str().unwrap().to_string();

    // Everything logged about this request or this upload, until it completes.
    let mut events = Vec::new();
    loop {
        let event = next_json(&mut lines, |v| {
            v["span"]["request_id"] == "trace-me-1" || v["upload"] == upload.as_str()
        })
        .await;
        let done = event["message"] == "transition" && event["to"] == "completed";
        events.push(event);
        if done {
            break;
        }
    }
    let find = |message: &str| {
        events
            .iter()
            .find(|v| v["message"] == message)
            .unwrap_or_else(|| panic!("no {message:?} event in {events:#?}"))
    };
    let accepted = find("upload accepted");
    assert_eq!(accepted["upload"], upload);
    assert_eq!(accepted["span"]["request_id"], "trace-me-1");
    let line = find("request");
    assert_eq!(line["status"], 202);
    assert_eq!(line["span"]["method"], "POST");
    assert_eq!(line["span"]["route"], "/api/client/v1/uploads");
    assert!(line["latency_ms"].as_f64().unwrap() > 0.0);
    assert!(line["timestamp"].is_string());

    // Every transition of the upload is one event.
    let transitions: Vec<&Value> = events
        .iter()
        .filter(|v| v["message"] == "transition")
        .collect();
    let statuses: Vec<&str> = transitions
        .iter()
        .map(|v| v["to"].as_str().unwrap())
        .collect();
    assert_eq!(
        statuses,
        ["pending", "processing", "uploading", "completed"]
    );
    assert!(transitions.iter().all(|v| v.get("error").is_none()));

    // libav's own complaints arrive as JSON events too (a GIF is not a
    // container the pipeline opens).
    let gif = b"GIF87a\x01\x00\x01\x00\x80\x00\x00\x00\x00\x00\xff\xff\xff,\x00\x00\x00\x00\x01\x00\x01\x00\x00\x02\x02D\x01\x00;";
    let response = client
        .post(format!("{base}/uploads"))
        .bearer_auth(&key)
        .multipart(video_form(gif.to_vec(), "tiny.gif", "root"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 202);
    let libav = next_json(&mut lines, |v| v["target"] == "libav").await;
    assert!(
        ["ERROR", "WARN"].contains(&libav["level"].as_str().unwrap()),
        "{libav}"
    );
    let failed = next_json(&mut lines, |v| {
        v["message"] == "transition" && v["to"] == "failed"
    })
    .await;
    assert_eq!(failed["error"], "unsupported_media");

    // A status poll is logged at debug, but one that fails is a line at info
    // inside its request span.
    for (request_id, id) in [
        ("poll-ok", upload.as_str()),
        ("poll-404", "9c1fa5c4-a8f1-4b2e-9d6e-1c8a0b9e2d7f"),
    ] {
        let response = client
            .get(format!("{base}/uploads/{id}"))
            .bearer_auth(&key)
            .header("x-request-id", request_id)
            .send()
            .await
            .unwrap();
        assert_eq!(response.headers()["x-request-id"], request_id);
    }
    let line = next_json(&mut lines, |v| {
        v["message"] == "request"
            && ["poll-ok", "poll-404"]
                .contains(&v["span"]["request_id"].as_str().unwrap_or_default())
    })
    .await;
    assert_eq!(line["span"]["request_id"], "poll-404", "{line}");
    assert_eq!(line["status"], 404);
    assert_eq!(line["level"], "INFO");
    assert_eq!(line["span"]["method"], "GET");
    assert_eq!(line["span"]["route"], "/api/client/v1/uploads/{id}");
    server.kill().await.unwrap();
}
