//! Restart loses nothing: the real binary is killed with SIGKILL and started
//! again on the same data dir; every upload that got a 202 finishes.

mod common;

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::*;
use vidpipe::store::Store;

const BIN: &str = env!("CARGO_BIN_EXE_vidpipe");

struct Running {
    child: Child,
    base: String,
    log: Arc<Mutex<Vec<String>>>,
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn start(data_dir: &Path) -> Running {
    let port = free_port();
    let mut child = Command::new(BIN)
        .args([
            "serve",
            "--listen",
            &format!("127.0.0.1:{port}"),
            "--transcoders",
            "1",
        ])
        .arg("--data-dir")
        .arg(data_dir)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let log = Arc::new(Mutex::new(Vec::new()));
    let stderr = child.stderr.take().unwrap();
    let sink = log.clone();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            sink.lock().unwrap().push(line);
        }
    });
    let deadline = Instant::now() + Duration::from_secs(30);
    while !log
        .lock()
        .unwrap()
        .iter()
        .any(|l| l.contains("vidpipe listening on"))
    {
        assert!(
            Instant::now() < deadline,
            "server did not start: {:?}",
            log.lock().unwrap()
        );
        assert!(
            child.try_wait().unwrap().is_none(),
            "server exited: {:?}",
            log.lock().unwrap()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    Running {
        child,
        base: format!("http://127.0.0.1:{port}/api/client/v1"),
        log,
    }
}

fn keys_create(data_dir: &Path) -> String {
    let out = Command::new(BIN)
        .args(["keys", "create", "--name", "restart-test"])
        .arg("--data-dir")
        .arg(data_dir)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8(out.stdout).unwrap();
    stdout.lines().last().unwrap().trim().to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_and_restart_finishes_every_accepted_upload() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let client = reqwest::Client::new();

    let mut server = start(&data);
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

    let mut server = start(&data);
    for id in &accepted {
        let record = wait_terminal(&client, &server.base, &key, id).await;
        assert_eq!(record["status"], 6, "{record}");
    }
    let (_, done) = get_json(&client, &format!("{}/uploads/{done_id}", server.base), &key).await;
    assert_eq!(done["data"]["status"], 6, "completed stays completed");
    assert!(files_in(&data.join("staging")).is_empty());
    assert!(files_in(&data.join("work")).is_empty());
    server.child.kill().unwrap();
    server.child.wait().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_cut_off_by_a_crash_leaves_no_trace() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let key = keys_create(&data);
    let mut server = start(&data);

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

    let mut server = start(&data);
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

fn tokio_stream_from<T: Send + 'static>(
    mut rx: tokio::sync::mpsc::Receiver<T>,
) -> impl futures_util::Stream<Item = T> {
    futures_util::stream::poll_fn(move |cx| rx.poll_recv(cx))
}
