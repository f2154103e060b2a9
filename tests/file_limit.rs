//! The open file limit: raised to the hard limit at start, and when it is
//! reached anyway, accepting backs off (one log line, not one per failed
//! accept) while the connections already open are still served.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use common::*;

/// `GET /healthz` on an open keep-alive connection; true on a 200 within a second.
fn healthz_on(stream: &mut TcpStream) -> bool {
    stream
        .set_read_timeout(Some(Duration::from_secs(1)))
        .unwrap();
    stream
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: vidpipe\r\n\r\n")
        .unwrap();
    let mut answer = Vec::new();
    let mut buffer = [0u8; 1024];
    while !answer.ends_with(b"}") {
        match stream.read(&mut buffer) {
            Ok(0) | Err(_) => return false,
            Ok(n) => answer.extend_from_slice(&buffer[..n]),
        }
    }
    answer.starts_with(b"HTTP/1.1 200")
}

fn lines_with(server: &Running, text: &str) -> usize {
    server
        .log
        .lock()
        .unwrap()
        .iter()
        .filter(|l| l.contains(text))
        .count()
}

#[test]
fn at_the_file_limit_accepting_backs_off_and_open_connections_are_served() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = spawn_server_with_file_limit(dir.path(), 64, 256);
    assert!(server.wait_listening(), "{:?}", server.log.lock().unwrap());
    assert_eq!(
        lines_with(&server, "open_files=256 was=64"),
        1,
        "the soft limit is raised to the hard one: {:?}",
        server.log.lock().unwrap()
    );
    let addr = server
        .base
        .trim_start_matches("http://")
        .split('/')
        .next()
        .unwrap()
        .to_string();
    let mut kept = TcpStream::connect(&addr).unwrap();
    assert!(healthz_on(&mut kept));

    // More idle connections than the server has files: it runs out.
    // (Once the listen backlog is full too, a connect waits: give up on it.)
    let socket: std::net::SocketAddr = addr.parse().unwrap();
    let flood: Vec<TcpStream> = (0..400)
        .filter_map(|_| TcpStream::connect_timeout(&socket, Duration::from_millis(200)).ok())
        .collect();
    let deadline = Instant::now() + Duration::from_secs(10);
    while lines_with(&server, "out of file descriptors") == 0 {
        assert!(
            Instant::now() < deadline,
            "never ran out: {:?}",
            server.log.lock().unwrap()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    // Out of files for a while: the connection it has is still served,
    // and the failed accepts are not logged one by one.
    for _ in 0..10 {
        assert!(healthz_on(&mut kept), "an open connection is served");
        std::thread::sleep(Duration::from_millis(200));
    }
    assert_eq!(lines_with(&server, "out of file descriptors"), 1);
    assert_eq!(lines_with(&server, "accept failed"), 0);

    // Once the flood leaves, new connections are accepted again.
    drop(flood);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let served = TcpStream::connect_timeout(&socket, Duration::from_secs(1))
            .ok()
            .is_some_and(|mut fresh| healthz_on(&mut fresh));
        if served {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "new connections are not served again"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    server.kill9();
}
