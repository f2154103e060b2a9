//! A child actor that keeps stopping is restarted with backoff and a limit,
//! not in a tight loop: the first restart is at once, the next ones wait
//! longer each time, and after the limit the child is left stopped and
//! `/readyz` says so.

mod common;

use std::time::{Duration, Instant};

use common::*;
use vidpipe::actors::supervisor::{Child, MAX_RESTARTS, RESTART_BACKOFF};

fn intake_id(t: &TestServer) -> Option<ractor::ActorId> {
    t.server
        .services()
        .peers
        .intake
        .get()
        .filter(|a| a.get_status() == ractor::ActorStatus::Running)
        .map(|a| a.get_id())
}

/// Kills the intake actor and waits up to `patience` for a new one; returns how long that took.
async fn kill_and_wait(t: &TestServer, patience: Duration) -> Option<Duration> {
    let before = intake_id(t);
    t.server.kill_child(Child::Intake);
    let killed = Instant::now();
    while killed.elapsed() < patience {
        let now = intake_id(t);
        if now.is_some() && now != before {
            return Some(killed.elapsed());
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    None
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_child_that_keeps_stopping_is_restarted_with_backoff_then_left_stopped() {
    let dir = tempfile::tempdir().unwrap();
    let t = TestServer::start(test_config(dir.path())).await;
    let mut waits = Vec::new();
    for n in 0..MAX_RESTARTS {
        let took = kill_and_wait(&t, Duration::from_secs(10)).await;
        let took = took.unwrap_or_else(|| panic!("restart {n} did not happen"));
        waits.push(took);
    }
    // At once the first time, then at least each backoff.
    assert!(waits[0] < Duration::from_secs(1), "{waits:?}");
    for (n, took) in waits.iter().enumerate().skip(1) {
        let backoff = RESTART_BACKOFF.before_retry(n as u32);
        assert!(
            *took >= backoff,
            "restart {n} after {took:?}, before its {backoff:?}: {waits:?}"
        );
    }
    // Past the limit: left stopped, and not ready.
    assert_eq!(kill_and_wait(&t, Duration::from_secs(3)).await, None);
    let response = t.get_ops("/readyz").await;
    assert_eq!(response.status(), 503);
    let body: serde_json::Value = response.json().await.unwrap();
    assert!(
        body["reason"].as_str().unwrap().contains("intake"),
        "{body}"
    );
    t.server.shutdown().await;
}
