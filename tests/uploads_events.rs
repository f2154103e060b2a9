//! The event streams on a real server: an upload's stream
//! (`GET /uploads/{id}/events`) followed by a third-party SSE client from
//! pending to completed, resumed with `Last-Event-ID`; the tenant's stream
//! (`GET /events`) with creations, progress and deletions; the cap on open
//! streams; the keep-alive comment; and streams ending with the server.

mod common;
mod synth;

use std::path::Path;
use std::time::{Duration, Instant};

use common::*;
use serde_json::Value;
use synth::{Clip, VideoTrack};

/// One server-sent event, or a comment line.
#[derive(Debug, Default, Clone)]
struct Event {
    event: String,
    id: Option<String>,
    data: Option<Value>,
    comment: Option<String>,
}

/// A stream of events read from a response.
struct Events {
    response: reqwest::Response,
    buffer: String,
}

impl Events {
    /// Opens `url` with `key`, sending `last_event_id` if given; panics unless 200.
    async fn open(t: &TestServer, url: &str, key: &str, last_event_id: Option<&str>) -> Events {
        let response = request(t, url, key, last_event_id).await;
        assert_eq!(response.status(), 200, "{url}");
        assert_eq!(response.headers()["content-type"], "text/event-stream");
        Events {
            response,
            buffer: String::new(),
        }
    }

    /// The next event or comment within `within`; `None` once the stream ended.
    async fn next(&mut self, within: Duration) -> Option<Event> {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            if let Some(end) = self.buffer.find("\n\n") {
                let block: String = self.buffer.drain(..end + 2).collect();
                return Some(parse(&block));
            }
            let chunk = tokio::time::timeout_at(deadline, self.response.chunk())
                .await
                .expect("an event in time")
                .unwrap();
            match chunk {
                Some(bytes) => self.buffer.push_str(std::str::from_utf8(&bytes).unwrap()),
                None => {
                    assert!(self.buffer.is_empty(), "cut mid-event: {:?}", self.buffer);
                    return None;
                }
            }
        }
    }

    /// The next event that is not a comment nor an id alone.
    async fn next_event(&mut self, within: Duration) -> Option<Event> {
        loop {
            let event = self.next(within).await?;
            if event.comment.is_none() && !event.event.is_empty() {
                return Some(event);
            }
        }
    }

    /// Every event until the stream ends.
    async fn rest(&mut self, within: Duration) -> Vec<Event> {
        let mut all = Vec::new();
        while let Some(event) = self.next_event(within).await {
            all.push(event);
        }
        all
    }
}

fn parse(block: &str) -> Event {
    let mut event = Event::default();
    for line in block.lines().filter(|l| !l.is_empty()) {
        if let Some(comment) = line.strip_prefix(':') {
            event.comment = Some(comment.trim().to_string());
        } else if let Some(name) = line.strip_prefix("event: ") {
            event.event = name.to_string();
        } else if let Some(id) = line.strip_prefix("id: ") {
            event.id = Some(id.to_string());
        } else if let Some(data) = line.strip_prefix("data: ") {
            event.data = Some(serde_json::from_str(data).unwrap());
        } else {
            panic!("unexpected line {line:?}");
        }
    }
    event
}

async fn request(
    t: &TestServer,
    url: &str,
    key: &str,
    last_event_id: Option<&str>,
) -> reqwest::Response {
    let mut request = t.client.get(url).bearer_auth(key);
    if let Some(id) = last_event_id {
        request = request.header("last-event-id", id);
    }
    request.send().await.unwrap()
}

fn events_url(t: &TestServer, id: &str) -> String {
    t.url(&format!("/uploads/{id}/events"))
}

/// A clip whose transcode takes some seconds on two cores.
fn long_clip(dir: &Path) -> Vec<u8> {
    let path = dir.join("long.mp4");
    synth::write(&path, &Clip::mp4(VideoTrack::h264(1280, 720, 20), 15.0));
    std::fs::read(path).unwrap()
}

/// Uploads `bytes` as `name`; returns the new upload's id.
async fn send(t: &TestServer, key: &str, bytes: &[u8], name: &str) -> String {
    let response = t
        .post_form(key, video_form(bytes.to_vec(), name, "root"))
        .await;
    assert_eq!(response.status(), 202);
    let body: Value = response.json().await.unwrap();
    body["data"]["id"].as_str().unwrap().to_string()
}

fn one_transcoder(dir: &Path) -> vidpipe::config::Config {
    test_config(dir).with_transcoders(1)
}

/// sseclient-py follows a queued upload from pending to completed: every
/// status in order, ids growing, the last event the record as `GET` shows it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_third_party_client_follows_an_upload_to_its_end() {
    if !sseclient_installed() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let key = create_key(dir.path(), "sse");
    let t = TestServer::start(one_transcoder(dir.path())).await;
    // The one transcoder is busy: the followed upload waits, pending.
    let busy = send(&t, &key, &long_clip(dir.path()), "long.mp4").await;
    let followed = send(
        &t,
        &key,
        &std::fs::read(fixture("sample.mp4")).unwrap(),
        "a.mp4",
    )
    .await;

    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/clients/follow_upload.py");
    let mut client = tokio::process::Command::new("python3")
        .arg(script)
        .arg(events_url(&t, &followed))
        .arg(&key)
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let stdout = client.stdout.take().unwrap();
    let mut lines = tokio::io::AsyncBufReadExt::lines(tokio::io::BufReader::new(stdout));
    let mut seen: Vec<Value> = Vec::new();
    let first = next_line(&mut lines).await.expect("a first event");
    seen.push(serde_json::from_str(&first).unwrap());
    assert_eq!(seen[0]["data"]["status"], 1, "{seen:?}");
    // Freed, the transcoder takes the followed upload.
    let (code, _) = post_json(&t, &key, &format!("/uploads/{busy}/cancel")).await;
    assert_eq!(code, 200);
    while let Some(line) = next_line(&mut lines).await {
        seen.push(serde_json::from_str(&line).unwrap());
    }
    assert!(client.wait().await.unwrap().success());

    let statuses: Vec<u64> = seen
        .iter()
        .map(|e| e["data"]["status"].as_u64().unwrap())
        .collect();
    let mut distinct = statuses.clone();
    distinct.dedup();
    assert_eq!(distinct, [1, 3, 5, 6], "{statuses:?}");
    let ids: Vec<u64> = seen
        .iter()
        .map(|e| e["id"].as_str().unwrap().parse().unwrap())
        .collect();
    assert!(ids.windows(2).all(|w| w[0] < w[1]), "{ids:?}");
    assert!(seen.iter().all(|e| e["event"] == "upload"), "{seen:?}");
    let (_, shown) = get_json(&t.client, &t.url(&format!("/uploads/{followed}")), &key).await;
    assert_eq!(seen.last().unwrap()["data"], shown["data"]);
}

/// The client's next line of output; `None` once it exits.
async fn next_line(
    lines: &mut tokio::io::Lines<tokio::io::BufReader<tokio::process::ChildStdout>>,
) -> Option<String> {
    tokio::time::timeout(Duration::from_secs(60), lines.next_line())
        .await
        .expect("events in time")
        .unwrap()
}

async fn post_json(t: &TestServer, key: &str, path: &str) -> (u16, Value) {
    let response = t
        .client
        .post(t.url(path))
        .bearer_auth(key)
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

/// `Last-Event-ID` on an upload's stream: what was seen is not sent again,
/// an upload seen to its end is a 204; unknown, foreign and keyless are refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upload_stream_resumes_after_the_last_event_seen() {
    let dir = tempfile::tempdir().unwrap();
    let key = create_key(dir.path(), "sse");
    let other = create_key(dir.path(), "other");
    let t = TestServer::start(test_config(dir.path())).await;
    let done = upload_to_end(&t, &key, "sample.mp4", "root").await;
    let id = done["id"].as_str().unwrap();
    let url = events_url(&t, id);

    // Finished: its one event is the record as it is, then the stream ends.
    let mut events = Events::open(&t, &url, &key, None).await;
    let all = events.rest(Duration::from_secs(10)).await;
    assert_eq!(all.len(), 1, "{all:?}");
    assert_eq!(all[0].event, "upload");
    assert_eq!(all[0].data.as_ref().unwrap(), &done);
    let last = all[0].id.clone().unwrap();

    // Seen to its end: 204, so that an EventSource stops reconnecting.
    let response = request(&t, &url, &key, Some(&last)).await;
    assert_eq!(response.status(), 204);
    // An older id: the current state again; a bad one counts as none.
    for sent in ["1000", "not-a-number"] {
        let mut events = Events::open(&t, &url, &key, Some(sent)).await;
        let all = events.rest(Duration::from_secs(10)).await;
        assert_eq!(all.len(), 1, "{all:?}");
        assert_eq!(all[0].id.as_deref(), Some(last.as_str()));
    }

    for (who, path) in [
        (other.as_str(), format!("/uploads/{id}/events")),
        (
            key.as_str(),
            "/uploads/00000000-0000-0000-0000-000000000000/events".into(),
        ),
        (key.as_str(), "/uploads/not-an-id/events".into()),
    ] {
        let response = request(&t, &t.url(&path), who, None).await;
        assert_eq!(response.status(), 404, "{path}");
        let body: Value = response.json().await.unwrap();
        assert_eq!(body["code"], "not_found");
    }
    let response = t.client.get(&url).send().await.unwrap();
    assert_eq!(response.status(), 401);
}

/// The tenant's stream: a creation, its changes with progress at most about
/// once a second, and its deletion, with ids that grow; another key's
/// uploads are not in it; a reconnect that missed changes gets a resync.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_tenant_stream_carries_every_change_of_the_keys_uploads() {
    let dir = tempfile::tempdir().unwrap();
    let key = create_key(dir.path(), "sse");
    let other = create_key(dir.path(), "other");
    let t = TestServer::start(test_config(dir.path())).await;
    let mut events = Events::open(&t, &t.url("/events"), &key, None).await;

    let _ = upload_to_end(&t, &other, "sample.mp4", "root").await;
    let started = Instant::now();
    let id = send(&t, &key, &long_clip(dir.path()), "long.mp4").await;
    let mut own = Events::open(&t, &events_url(&t, &id), &key, None).await;
    let mut seen = Vec::new();
    loop {
        let event = events.next_event(Duration::from_secs(120)).await.unwrap();
        let data = event.data.clone().unwrap();
        assert_eq!(data["id"], id.as_str(), "another key's upload: {data}");
        seen.push(event);
        if data["status"] == 6 {
            break;
        }
    }
    let took = started.elapsed();
    let ids: Vec<u64> = seen
        .iter()
        .map(|e| e.id.as_ref().unwrap().parse().unwrap())
        .collect();
    assert!(ids.windows(2).all(|w| w[0] < w[1]), "{ids:?}");
    let progress: Vec<u64> = seen
        .iter()
        .filter(|e| e.data.as_ref().unwrap()["status"] == 3)
        .map(|e| e.data.as_ref().unwrap()["progress"].as_u64().unwrap())
        .collect();
    assert!(progress.len() >= 3, "progress was shown: {progress:?}");
    assert!(progress.windows(2).all(|w| w[0] <= w[1]), "{progress:?}");
    assert!(
        progress.len() as u64 <= took.as_secs() + 4,
        "at most about one a second: {} in {took:?}",
        progress.len()
    );

    let response = t
        .client
        .delete(t.url(&format!("/uploads/{id}")))
        .bearer_auth(&key)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 204);
    let deleted = events.next_event(Duration::from_secs(10)).await.unwrap();
    assert_eq!(deleted.event, "deleted");
    assert_eq!(deleted.data.unwrap(), serde_json::json!({ "id": id }));
    let last = deleted.id.unwrap();
    drop(events);
    // The upload's own stream had every change of it (ids growing), then ends.
    let own = own.rest(Duration::from_secs(10)).await;
    assert!(own.iter().all(|e| e.event == "upload"), "{own:?}");
    assert_eq!(own.last().unwrap().data.as_ref().unwrap()["status"], 6);
    let own_ids: Vec<u64> = own
        .iter()
        .map(|e| e.id.as_ref().unwrap().parse().unwrap())
        .collect();
    assert!(own_ids.windows(2).all(|w| w[0] < w[1]), "{own_ids:?}");

    // Nothing happened since the last event seen: no resync.
    let mut events = Events::open(&t, &t.url("/events"), &key, Some(&last)).await;
    let next = send(
        &t,
        &key,
        &std::fs::read(fixture("not-a-video.txt")).unwrap(),
        "x.mp4",
    )
    .await;
    let event = events.next_event(Duration::from_secs(10)).await.unwrap();
    assert_eq!(event.event, "upload");
    assert_eq!(event.data.unwrap()["id"], next.as_str());
    drop(events);
    let _ = wait_terminal(&t.client, &t.base, &key, &next).await;
    // Changes since: the client is told to reload, and from where to go on.
    let mut events = Events::open(&t, &t.url("/events"), &key, Some(&last)).await;
    let event = events.next_event(Duration::from_secs(10)).await.unwrap();
    assert_eq!(event.event, "resync");
    let resume = event.id.unwrap();
    assert!(resume.parse::<u64>().unwrap() > last.parse::<u64>().unwrap());
    drop(events);
    // Resumed from there, nothing was missed.
    let mut events = Events::open(&t, &t.url("/events"), &key, Some(&resume)).await;
    let gone = t
        .client
        .delete(t.url(&format!("/uploads/{next}")))
        .bearer_auth(&key)
        .send()
        .await
        .unwrap();
    assert_eq!(gone.status(), 204);
    let event = events.next_event(Duration::from_secs(10)).await.unwrap();
    assert_eq!(event.event, "deleted", "{event:?}");
}

/// At most `max_event_streams_per_tenant` streams of a key at once, of
/// either kind: then 429 with `Retry-After`; a closed one gives its place back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn open_streams_are_capped_per_key() {
    let dir = tempfile::tempdir().unwrap();
    let key = create_key(dir.path(), "sse");
    let other = create_key(dir.path(), "other");
    let mut config = test_config(dir.path());
    config.max_event_streams_per_tenant = 2;
    let t = TestServer::start(config).await;
    let id = send(&t, &key, &long_clip(dir.path()), "long.mp4").await;

    let tenant_stream = Events::open(&t, &t.url("/events"), &key, None).await;
    let _upload_stream = Events::open(&t, &events_url(&t, &id), &key, None).await;
    for url in [t.url("/events"), events_url(&t, &id)] {
        let response = request(&t, &url, &key, None).await;
        assert_eq!(response.status(), 429, "{url}");
        assert!(response.headers().contains_key("retry-after"));
        let body: Value = response.json().await.unwrap();
        assert_eq!(body["code"], "too_many_event_streams", "{body}");
    }
    // An unknown upload is still a 404, not a 429.
    let unknown = events_url(&t, "00000000-0000-0000-0000-000000000000");
    assert_eq!(request(&t, &unknown, &key, None).await.status(), 404);
    // Another key has places of its own.
    let _theirs = Events::open(&t, &t.url("/events"), &other, None).await;
    let metrics = t.get_ops("/metrics").await.text().await.unwrap();
    assert!(
        metrics.contains("vidpipe_event_streams_open 3"),
        "{metrics}"
    );
    // HEAD takes no place: the headers of a stream, or the 404 of one.
    for (url, status) in [
        (t.url("/events"), 200),
        (events_url(&t, &id), 200),
        (events_url(&t, "00000000-0000-0000-0000-000000000000"), 404),
    ] {
        let response = t.client.head(&url).bearer_auth(&key).send().await.unwrap();
        assert_eq!(response.status(), status, "{url}");
        if status == 200 {
            assert_eq!(response.headers()["content-type"], "text/event-stream");
        }
    }

    drop(tenant_stream);
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let response = request(&t, &t.url("/events"), &key, None).await;
        if response.status() == 200 {
            break;
        }
        assert_eq!(response.status(), 429);
        assert!(
            Instant::now() < deadline,
            "the closed stream kept its place"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A stream with nothing to say sends a comment line after 15 s; the
/// stream of a key revoked meanwhile ends instead; a server that stops ends
/// its streams and does not wait for them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_stream_is_kept_alive_and_ends_with_its_key_or_the_server() {
    let dir = tempfile::tempdir().unwrap();
    let key = create_key(dir.path(), "sse");
    let doomed = create_key(dir.path(), "doomed");
    let t = TestServer::start(test_config(dir.path())).await;
    let mut events = Events::open(&t, &t.url("/events"), &key, None).await;
    let mut revoked = Events::open(&t, &t.url("/events"), &doomed, None).await;
    revoke_key(dir.path(), "doomed");
    let opened = Instant::now();
    // A stream opens with its id alone, so that a client has one to come back with.
    let opening = events.next(Duration::from_secs(5)).await.unwrap();
    assert!(
        opening.event.is_empty() && opening.data.is_none(),
        "{opening:?}"
    );
    assert!(opening.id.unwrap().parse::<u64>().is_ok());
    let first = events.next(Duration::from_secs(20)).await.unwrap();
    assert_eq!(first.comment.as_deref(), Some("keep-alive"), "{first:?}");
    let after = opened.elapsed();
    assert!(after >= Duration::from_secs(14), "{after:?}");
    let _opening = revoked.next(Duration::from_secs(5)).await.unwrap();
    assert!(
        revoked.next(Duration::from_secs(5)).await.is_none(),
        "the revoked key's stream ended"
    );

    let stopping = Instant::now();
    tokio::time::timeout(Duration::from_secs(10), t.server.shutdown())
        .await
        .expect("the server stops with a stream open");
    assert!(events.next(Duration::from_secs(5)).await.is_none());
    assert!(
        stopping.elapsed() < Duration::from_secs(5),
        "{:?}",
        stopping.elapsed()
    );
}
