//! HTTP/2 clients that ask for media on many streams and never open their
//! receive window: the files they can make the server hold are capped, the
//! requests past the cap get a quick 503, stalled streams are reset within
//! the stall time, and another client is answered within a second all along.

mod common;

use std::time::{Duration, Instant};

use common::*;
use h2::Reason;
use warp::http::Request;

/// Connections of the attack and streams each tries to open.
const CONNECTIONS: usize = 24;
const STREAMS: usize = 64;
/// The cap on requests holding a file, and the stall time, of this server.
const IN_FLIGHT: usize = 40;
const STALL: Duration = Duration::from_secs(5);

fn open_files() -> usize {
    std::fs::read_dir("/proc/self/fd").unwrap().count()
}

fn resident_mib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let kib: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap();
    kib / 1024
}

/// One attacking connection: a receive window of `window` bytes, never
/// opened further, then as many GETs of `path` as the server lets it have
/// open. Returns the connection's announced stream limit and, for each
/// stream, its status and its body (never read, so never given more window).
async fn attack(
    addr: std::net::SocketAddr,
    path: String,
    window: u32,
) -> (
    h2::client::SendRequest<bytes::Bytes>,
    usize,
    Vec<(u16, h2::RecvStream)>,
) {
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let (client, connection) = h2::client::Builder::new()
        .initial_window_size(window)
        .handshake::<_, bytes::Bytes>(tcp)
        .await
        .unwrap();
    tokio::spawn(connection);
    let get = || {
        Request::get(format!("http://{addr}{path}"))
            .body(())
            .unwrap()
    };
    // The server's SETTINGS have arrived once a first stream has its head.
    let mut client = client.ready().await.unwrap();
    let (first, _) = client.send_request(get(), true).unwrap();
    let first = first.await;
    let limit = client.current_max_send_streams();
    let mut pending = Vec::new();
    for _ in 1..STREAMS.min(limit) {
        client = client.ready().await.unwrap();
        pending.push(client.send_request(get(), true).unwrap().0);
    }
    let mut streams = Vec::new();
    for response in std::iter::once(Ok(first)).chain(pending.into_iter().map(Err)) {
        let response = match response {
            Ok(head) => head,
            Err(pending) => tokio::time::timeout(Duration::from_secs(10), pending)
                .await
                .expect("every stream gets its head"),
        }
        .unwrap();
        let status = response.status().as_u16();
        streams.push((status, response.into_body()));
    }
    (client, limit, streams)
}

/// Times an answer of the other client, which must come within a second.
async fn answered_within_a_second(what: &str, request: reqwest::RequestBuilder) -> u16 {
    let started = Instant::now();
    let response = tokio::time::timeout(Duration::from_secs(1), request.send())
        .await
        .unwrap_or_else(|_| panic!("{what}: no answer within a second"))
        .unwrap();
    let status = response.status().as_u16();
    let _ = response.bytes().await;
    assert!(started.elapsed() < Duration::from_secs(1), "{what}");
    status
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn zero_window_clients_hold_a_bounded_number_of_files_and_are_reset() {
    let dir = tempfile::tempdir().unwrap();
    let key = create_key(dir.path(), "bounds");
    let mut config = test_config(dir.path());
    config.max_requests_in_flight = IN_FLIGHT;
    config.response_stall_timeout = STALL;
    let t = TestServer::start(config).await;
    let addr = t.server.addr();
    let done = upload_to_end(&t, &key, "sample.mp4", "root").await;
    let mp4_url = done["playback"]["mp4_url"].as_str().unwrap().to_string();
    let status_url = t.url(&format!("/uploads/{}", done["id"].as_str().unwrap()));
    let path = mp4_url
        .strip_prefix(&format!("http://{addr}"))
        .unwrap()
        .to_string();
    let fixture = std::fs::read(fixture("sample.mp4")).unwrap();
    let (_, _, mp4) = fetch_media(&t.client, &mp4_url).await;
    assert!(mp4.len() > 2 * 16 * 1024, "a file of several slices");
    let (files_before, mib_before) = (open_files(), resident_mib());

    let started = Instant::now();
    // Half never open their window; half open it by one byte, which HTTP/2
    // answers with a whole slice of the file queued for them.
    let attackers: Vec<_> = (0..CONNECTIONS)
        .map(|n| tokio::spawn(attack(addr, path.clone(), (n % 2) as u32)))
        .collect();
    let mut connections = Vec::new();
    for attacker in attackers {
        connections.push(attacker.await.unwrap());
    }
    let attacked_in = started.elapsed();
    let files_during = open_files();
    let mib_during = resident_mib();

    // The stream limit is the server's own default, well under hyper's 200.
    for (_, limit, _) in &connections {
        assert_eq!(*limit, 32, "announced concurrent streams");
    }
    let statuses: Vec<u16> = connections
        .iter()
        .flat_map(|(_, _, streams)| streams.iter().map(|(status, _)| *status))
        .collect();
    let served = statuses.iter().filter(|&&s| s == 200).count();
    let busy = statuses.iter().filter(|&&s| s == 503).count();
    assert_eq!(
        served + busy,
        statuses.len(),
        "only 200 or 503: {statuses:?}"
    );
    // Media needs no key: it may take the places outside the keyed reserve.
    assert!(
        served <= IN_FLIGHT - IN_FLIGHT / 4,
        "{served} files held, cap {IN_FLIGHT}"
    );
    assert!(busy > 0, "the requests past the cap are refused");
    // Files: the served streams' plus a socket per connection on each side.
    let held = files_during.saturating_sub(files_before);
    assert!(
        held <= IN_FLIGHT + 2 * CONNECTIONS + 16,
        "{held} more files open during the attack"
    );

    // Another client is answered within a second while the attack holds.
    let other = reqwest::Client::new();
    let healthz = format!("http://{addr}/healthz");
    assert_eq!(
        answered_within_a_second("healthz", other.get(&healthz)).await,
        200
    );
    assert_eq!(
        answered_within_a_second("status poll", other.get(&status_url).bearer_auth(&key)).await,
        200
    );
    let media = answered_within_a_second("media GET", other.get(&mp4_url)).await;
    assert!(media == 200 || media == 503, "{media}");
    let upload = answered_within_a_second(
        "upload",
        other
            .post(t.url("/uploads"))
            .bearer_auth(&key)
            .multipart(video_form(fixture.clone(), "other.mp4", "root")),
    )
    .await;
    // Uploads have places of their own that media requests cannot take.
    assert_eq!(upload, 202);

    // Every stream that held a file is reset within the stall time.
    let mut reset = 0;
    for (_, _, streams) in &mut connections {
        for (status, body) in streams.iter_mut().filter(|(s, _)| *s == 200) {
            let ended = tokio::time::timeout(STALL + Duration::from_secs(3), body.data())
                .await
                .unwrap_or_else(|_| panic!("a stalled {status} stream was never reset"));
            // A one-byte window may have let one byte through first.
            let mut ended = ended;
            while let Some(Ok(_)) = ended {
                ended = tokio::time::timeout(STALL + Duration::from_secs(3), body.data())
                    .await
                    .unwrap_or_else(|_| panic!("a stalled {status} stream was never reset"));
            }
            let error = ended
                .expect("the stream ends with a reset, not cleanly")
                .unwrap_err();
            assert_eq!(error.reason(), Some(Reason::CANCEL), "{error}");
            reset += 1;
        }
    }
    assert_eq!(reset, served);
    let reset_after = started.elapsed();
    // With the files given back, the other client is served again.
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let (status, _, bytes) = fetch_media(&other, &mp4_url).await;
        if status == 200 {
            assert!(!bytes.is_empty());
            break;
        }
        assert!(Instant::now() < deadline, "media still refused: {status}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let metrics = t.get_ops("/metrics").await.text().await.unwrap();
    let stalled: u64 = metrics
        .lines()
        .find_map(|l| l.strip_prefix("vidpipe_http_stalled_responses_total "))
        .unwrap()
        .parse()
        .unwrap();
    assert!(stalled >= served as u64, "{stalled} of {served} counted");

    // The client leaves: files and memory come back.
    drop(connections);
    let deadline = Instant::now() + Duration::from_secs(5);
    while open_files() > files_before + 8 {
        assert!(
            Instant::now() < deadline,
            "{} files open, {files_before} before",
            open_files()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Memory stays under a bound. (That it returns to the system once the
    // attackers leave is measured on the release binary alone, with
    // `benches/h2_flood.rs`: here the test's own clients share the process.)
    let mib_after = resident_mib();
    assert!(
        mib_during.max(mib_after) < mib_before + 48,
        "resident {mib_before} MiB before, {mib_during} during, {mib_after} after"
    );
    eprintln!(
        "attack: {CONNECTIONS} connections, {} streams in {attacked_in:?}: {served} served, \
         {busy} refused; files +{held}; resident {mib_before} -> {mib_during} -> {mib_after} MiB; \
         all reset after {reset_after:?}",
        statuses.len()
    );
    t.server.shutdown().await;
}
