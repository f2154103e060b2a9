//! The crash matrix: the real binary is killed at chosen points (crash points
//! abort the process as abruptly as kill -9) and at random moments while
//! uploads run, then started again on the same data dir. After each restart:
//! every upload that got a 202 completes, no record is stuck, no staging,
//! work or half-written storage file is left, and uploads cut off before
//! their 202 leave no trace.
//!
//! `cargo test` runs a bounded number of rounds. A long run:
//! `VIDPIPE_CRASH_ITERATIONS=300 cargo test --release --test crash_matrix -- --nocapture`
//! (`VIDPIPE_CRASH_SEED` repeats a run).

mod common;

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

use common::*;
use vidpipe::faults::CrashPoint;
use vidpipe::media::{probe, MediaLimits};

const UPLOADS_PER_ROUND: usize = 3;

/// A small xorshift generator: the harness needs no statistical quality, only repeatability.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

#[derive(Debug, Clone, Copy)]
enum Fault {
    At(CrashPoint),
    KillAfter(Duration),
}

async fn post_quietly(
    client: reqwest::Client,
    base: String,
    key: String,
    name: String,
) -> Option<String> {
    let bytes = std::fs::read(fixture("sample.mp4")).unwrap();
    let response = client
        .post(format!("{base}/uploads"))
        .bearer_auth(&key)
        .multipart(video_form(bytes, &name, "root/crash"))
        .send()
        .await
        .ok()?;
    if response.status() != 202 {
        return None;
    }
    let body: serde_json::Value = response.json().await.ok()?;
    body["data"]["id"].as_str().map(str::to_string)
}

/// Checks every invariant on a restarted server; returns (completed, unacknowledged records).
async fn check_after_restart(data: &Path, key: &str, accepted: &[String]) -> (usize, usize) {
    let mut server = start(data, &[]);
    let client = reqwest::Client::new();
    for id in accepted {
        let record = wait_terminal(&client, &server.base, key, id).await;
        assert_eq!(
            record["status"], 6,
            "accepted upload must complete: {record}"
        );
    }
    let (_, list) = get_json(&client, &format!("{}/uploads", server.base), key).await;
    let listed = list["data"].as_array().unwrap().clone();
    let mut unacknowledged = 0;
    let mut completed = 0;
    for record in &listed {
        let id = record["id"].as_str().unwrap();
        let record = wait_terminal(&client, &server.base, key, id).await;
        if !accepted.iter().any(|a| a == id) {
            // Committed, but the process died before the 202 went out.
            unacknowledged += 1;
        }
        assert_eq!(record["status"], 6, "{record}");
        completed += 1;
        let mp4 = client
            .get(record["playback"]["mp4_url"].as_str().unwrap())
            .send()
            .await
            .unwrap()
            .bytes()
            .await
            .unwrap();
        let local = data.join("check.mp4");
        std::fs::write(&local, &mp4).unwrap();
        let out = probe(&local, &MediaLimits::default()).expect("stored MP4 is whole");
        assert_eq!(out.video_codec, "h264");
        std::fs::remove_file(&local).unwrap();
    }
    let staging = left_in(&data.join("staging")).await;
    assert!(staging.is_empty(), "staging left: {staging:?}");
    let work = left_in(&data.join("work")).await;
    assert!(work.is_empty(), "work left: {work:?}");
    let media = files_in(&data.join("media"));
    assert!(
        media.iter().all(|m| !m.starts_with('.')),
        "half-written storage: {media:?}"
    );
    assert_eq!(
        media.len(),
        completed,
        "one storage folder per completed upload"
    );
    server.kill9();
    (completed, unacknowledged)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crash_matrix() {
    let rounds: usize = std::env::var("VIDPIPE_CRASH_ITERATIONS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(8);
    let seed: u64 = std::env::var("VIDPIPE_CRASH_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos() as u64
                | 1
        });
    eprintln!("crash matrix: {rounds} rounds, VIDPIPE_CRASH_SEED={seed}");
    let mut rng = Rng(seed);
    let mut tally: BTreeMap<String, usize> = BTreeMap::new();
    let (mut accepted_total, mut completed_total, mut unacked_total) = (0, 0, 0);

    for round in 0..rounds {
        let fault = match round {
            r if r < CrashPoint::ALL.len() => Fault::At(CrashPoint::ALL[r]),
            r if r % 2 == 0 => Fault::At(CrashPoint::ALL[(rng.next() % 4) as usize]),
            _ => Fault::KillAfter(Duration::from_millis(rng.next() % 1500)),
        };
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        let key = keys_create(&data);
        let env: Vec<(&str, &str)> = match fault {
            Fault::At(point) => vec![("VIDPIPE_CRASH_AT", point.name())],
            Fault::KillAfter(_) => vec![],
        };
        let mut server = start(&data, &env);
        let client = reqwest::Client::new();
        let posts: Vec<_> = (0..UPLOADS_PER_ROUND)
            .map(|i| {
                tokio::spawn(post_quietly(
                    client.clone(),
                    server.base.clone(),
                    key.clone(),
                    format!("r{round}-{i}.mp4"),
                ))
            })
            .collect();
        match fault {
            Fault::At(point) => {
                let deadline = Instant::now() + Duration::from_secs(60);
                while server.child.try_wait().unwrap().is_none() {
                    assert!(
                        Instant::now() < deadline,
                        "crash point {} never reached",
                        point.name()
                    );
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
            }
            Fault::KillAfter(delay) => {
                tokio::time::sleep(delay).await;
                server.kill9();
            }
        }
        server.kill9();
        let mut accepted = Vec::new();
        for post in posts {
            if let Some(id) = post.await.unwrap() {
                accepted.push(id);
            }
        }
        let (completed, unacked) = check_after_restart(&data, &key, &accepted).await;
        let label = match fault {
            Fault::At(point) => point.name().to_string(),
            Fault::KillAfter(_) => "kill -9 at a random moment".to_string(),
        };
        eprintln!("round {round}: {label}: {} accepted, {completed} completed, {unacked} committed without a 202", accepted.len());
        *tally.entry(label).or_default() += 1;
        accepted_total += accepted.len();
        completed_total += completed;
        unacked_total += unacked;
    }
    eprintln!("crash matrix summary: {tally:?}");
    eprintln!(
        "{rounds} rounds: {accepted_total} uploads got a 202 and all completed; \
         {completed_total} completed in all; {unacked_total} committed but unacknowledged (kill between commit and response); \
         0 stuck, 0 leftovers"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_that_keeps_crashing_fails_after_the_attempt_limit() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let key = keys_create(&data);
    let crash = [("VIDPIPE_CRASH_AT", CrashPoint::MidTranscode.name())];
    let mut server = start(&data, &crash);
    let client = reqwest::Client::new();
    let (code, body) = upload(&client, &server.base, &key, "sample.mp4", "root").await;
    assert_eq!(code, 202, "{body}");
    let id = body["data"]["id"].as_str().unwrap().to_string();

    let mut crashes = 0;
    loop {
        let deadline = Instant::now() + Duration::from_secs(60);
        let mut exited = false;
        while Instant::now() < deadline {
            if server.child.try_wait().unwrap().is_some() {
                exited = true;
                break;
            }
            // The process may die mid-request: a failed poll just polls again.
            let url = format!("{}/uploads/{id}", server.base);
            if let Ok(response) = client.get(url).bearer_auth(&key).send().await {
                let record: serde_json::Value = response.json().await.unwrap_or_default();
                if record["data"]["status"] == 7 {
                    break;
                }
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        if !exited {
            break;
        }
        crashes += 1;
        assert!(crashes <= 3, "the job was retried past the limit");
        server = spawn_server(&data, &crash);
        server.wait_listening();
    }
    assert_eq!(crashes, 3, "each of the 3 attempts crashed the process");
    let record = wait_terminal(&client, &server.base, &key, &id).await;
    assert_eq!(record["status"], 7);
    assert_eq!(record["error"]["code"], "internal_error");
    assert!(
        record["error"]["message"]
            .as_str()
            .unwrap()
            .contains("3 attempts"),
        "{record}"
    );
    server.kill9();
}
