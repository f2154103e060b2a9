//! The baseline for the read-path comparison: a bare warp route answering a
//! constant JSON body, no auth, no database.
//! `cargo run --release --example bare_warp -- ADDR BODY_BYTES`

use warp::Filter;

#[tokio::main]
async fn main() {
    let mut args = std::env::args().skip(1);
    let addr: std::net::SocketAddr = args
        .next()
        .and_then(|a| a.parse().ok())
        .unwrap_or_else(|| ([127, 0, 0, 1], 8090).into());
    let size: usize = args.next().and_then(|s| s.parse().ok()).unwrap_or(400);
    let filler = "x".repeat(size.saturating_sub(12));
    let body = format!("{{\"data\":\"{filler}\"}}");
    let route = warp::any().map(move || {
        warp::http::Response::builder()
            .header("content-type", "application/json")
            .body(body.clone())
    });
    let listener = tokio::net::TcpListener::bind(addr).await.expect("bind");
    eprintln!(
        "bare warp listening on http://{}",
        listener.local_addr().expect("addr")
    );
    warp::serve(route).incoming(listener).run().await;
}
