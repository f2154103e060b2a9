//! A stop that has really stopped: `Server::shutdown` returns only once
//! everything that held the database (actors, the committer thread, webhook
//! deliveries, the key refresher, blocking tasks, open connections) has ended
//! and its files are closed, so the same data dir opens again at once, even
//! on a machine whose cores are all busy.

mod common;

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;
use vidpipe::store::keys::KeyFile;
use vidpipe::store::Store;
use vidpipe::webhook::WebhookConfig;

/// Threads that keep every core busy until dropped.
struct Burners {
    running: Arc<AtomicBool>,
    threads: Vec<std::thread::JoinHandle<()>>,
}

impl Burners {
    fn start() -> Burners {
        let running = Arc::new(AtomicBool::new(true));
        let threads = (0..num_cpus::get().max(2))
            .map(|_| {
                let running = running.clone();
                std::thread::spawn(move || {
                    let mut x = 0u64;
                    while running.load(Ordering::Relaxed) {
                        x = std::hint::black_box(
                            x.wrapping_mul(6364136223846793005).wrapping_add(1),
                        );
                    }
                })
            })
            .collect();
        Burners { running, threads }
    }
}

impl Drop for Burners {
    fn drop(&mut self) {
        self.running.store(false, Ordering::Relaxed);
        for thread in self.threads.drain(..) {
            let _ = thread.join();
        }
    }
}

/// A webhook endpoint that always fails, after a moment, so that deliveries
/// are always on their way or being settled.
async fn failing_receiver() -> (String, Arc<AtomicUsize>) {
    use warp::Filter;
    let hits = Arc::new(AtomicUsize::new(0));
    let counted = hits.clone();
    let route = warp::post()
        .and(warp::body::bytes())
        .then(move |_: bytes::Bytes| {
            let n = counted.fetch_add(1, Ordering::SeqCst);
            async move {
                tokio::time::sleep(Duration::from_millis((n % 7) as u64 * 3)).await;
                warp::reply::with_status(warp::reply(), warp::http::StatusCode::SERVICE_UNAVAILABLE)
            }
        });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    tokio::spawn(warp::serve(route).incoming(listener).run());
    (url, hits)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_restarted_in_process_again_and_again_opens_every_time() {
    let burners = Burners::start();
    let (hook, hits) = failing_receiver().await;
    let dir = tempfile::tempdir().unwrap();
    let (_, key) = KeyFile::new(dir.path())
        .create_with_webhook("app", Some(&hook))
        .unwrap();
    let config = || {
        let mut config = test_config(dir.path());
        config.profile.hls = false;
        config.webhooks = WebhookConfig {
            url: Some(hook.clone()),
            secret: Some("whsec_test".into()),
            initial_backoff_ms: 1,
            max_backoff_secs: 1,
            poll_interval_ms: 10,
            allow_private_callback_urls: true,
            ..WebhookConfig::default()
        };
        config
    };
    let bytes = std::fs::read(fixture("sample.mp4")).unwrap();
    let mut accepted = Vec::new();
    const ROUNDS: usize = 20;
    for round in 0..ROUNDS {
        let t = TestServer::start(config()).await;
        // Several uploads: several webhook chains in flight at once.
        for _ in 0..3 {
            let response = t
                .post_form(&key, video_form(bytes.clone(), "sample.mp4", "root"))
                .await;
            assert_eq!(response.status(), 202, "round {round}");
            let body: serde_json::Value = response.json().await.unwrap();
            accepted.push(body["data"]["id"].as_str().unwrap().to_string());
        }
        // Stop at a different moment each round: at once, once the transcode
        // runs, or a little later.
        match round % 3 {
            0 => {}
            1 => {
                let deadline = Instant::now() + Duration::from_secs(10);
                while t.server.services().progress.running().is_empty() {
                    assert!(Instant::now() < deadline, "no transcode started");
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
            }
            _ => tokio::time::sleep(Duration::from_millis(150)).await,
        }
        // A request on its way while the server stops, and the client's idle
        // keep-alive connection held open.
        let probe = t
            .client
            .get(format!("http://{}/readyz", t.server.addr()))
            .send();
        let probe = tokio::spawn(probe);
        let stopping = Instant::now();
        t.server.shutdown().await;
        eprintln!("round {round}: stopped in {:?}", stopping.elapsed());
        let _ = probe.await;
        // Every file is closed: the database opens again here at once.
        drop(Store::open(&dir.path().join("vidpipe.redb")).expect("database released"));
    }
    assert!(hits.load(Ordering::SeqCst) > 0, "deliveries were in flight");
    drop(burners);

    // Nothing was lost or used up by the stops: every upload completes.
    let t = TestServer::start(config()).await;
    for id in &accepted {
        let done = wait_terminal(&t.client, &t.base, &key, id).await;
        assert_eq!(done["status"], 6, "{done}");
    }
    t.server.shutdown().await;
}
