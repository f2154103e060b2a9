//! Key changes while the server is busy: requests never wait for the key
//! file, and a key revoked with `vidpipe keys revoke` is refused from the
//! next request on (within 1 s of the command starting), while 64
//! connections keep polling.

mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::*;
use vidpipe::store::keys::KeyFile;

/// The bound on seeing a key change, and on any one poll.
const BOUND: Duration = Duration::from_secs(1);

/// 64 tasks polling one upload as fast as they can; each poll's latency is kept.
struct Pollers {
    running: Arc<AtomicBool>,
    slowest: Arc<Mutex<Duration>>,
    polls: Arc<Mutex<u64>>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Pollers {
    fn start(url: String, key: String) -> Pollers {
        let running = Arc::new(AtomicBool::new(true));
        let slowest = Arc::new(Mutex::new(Duration::ZERO));
        let polls = Arc::new(Mutex::new(0));
        let client = reqwest::Client::builder()
            .pool_max_idle_per_host(64)
            .build()
            .unwrap();
        let tasks = (0..64)
            .map(|_| {
                let (running, slowest, polls) = (running.clone(), slowest.clone(), polls.clone());
                let (client, url, key) = (client.clone(), url.clone(), key.clone());
                tokio::spawn(async move {
                    while running.load(Ordering::Relaxed) {
                        let started = Instant::now();
                        let response = client.get(&url).bearer_auth(&key).send().await.unwrap();
                        assert_eq!(response.status(), 200);
                        let _ = response.bytes().await.unwrap();
                        let took = started.elapsed();
                        let mut worst = slowest.lock().unwrap();
                        *worst = (*worst).max(took);
                        *polls.lock().unwrap() += 1;
                    }
                })
            })
            .collect();
        Pollers {
            running,
            slowest,
            polls,
            tasks,
        }
    }

    async fn stop(self) -> (Duration, u64) {
        self.running.store(false, Ordering::Relaxed);
        for task in self.tasks {
            task.await.unwrap();
        }
        let slowest = *self.slowest.lock().unwrap();
        let polls = *self.polls.lock().unwrap();
        (slowest, polls)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revoked_key_is_refused_at_once_while_64_connections_poll() {
    let dir = tempfile::tempdir().unwrap();
    let keys = KeyFile::new(dir.path());
    let (_, polling) = keys.create("polling").unwrap();
    let (revoked, doomed) = keys.create("doomed").unwrap();
    let t = TestServer::start(test_config(dir.path())).await;
    let done = upload_to_end(&t, &polling, "not-a-video.txt", "root").await;
    let url = t.url(&format!("/uploads/{}", done["id"].as_str().unwrap()));
    let pollers = Pollers::start(url, polling.clone());
    tokio::time::sleep(Duration::from_millis(300)).await;

    // A `keys` command in the middle of a change: the key file is held open
    // and the change token is new. Requests do not wait for the file.
    let token = dir.path().join("keys.gen");
    let held = redb::Database::create(dir.path().join("keys.redb")).unwrap();
    std::fs::write(&token, b"a change in progress").unwrap();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    drop(held);

    // The real command, while the polls go on.
    let (code, _) = get_json(&t.client, &t.url("/uploads"), &doomed).await;
    assert_eq!(code, 200);
    let started = Instant::now();
    let out = tokio::process::Command::new(BIN)
        .args(["keys", "revoke", &revoked.id, "--data-dir"])
        .arg(dir.path())
        .output()
        .await
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // In force from the next request on.
    let (code, _) = get_json(&t.client, &t.url("/uploads"), &doomed).await;
    let seen_after = started.elapsed();
    assert_eq!(code, 401, "the revoked key still works");
    assert!(seen_after < BOUND, "the revocation took {seen_after:?}");

    tokio::time::sleep(Duration::from_millis(300)).await;
    let (slowest, polls) = pollers.stop().await;
    assert!(polls > 64 * 10, "only {polls} polls");
    assert!(slowest < BOUND, "a poll stalled for {slowest:?}");
    eprintln!("{polls} polls, slowest {slowest:?}, revocation seen after {seen_after:?}");
    t.server.shutdown().await;
}
