//! The HTTP path through a real server on loopback: the read endpoints
//! (`GET /uploads/{id}`, `GET /uploads`), upload ingest in MB/s and
//! concurrent creates of tiny uploads.
//! Concurrent load (64 connections) and the comparison with a bare warp
//! route are in `benches/compare.sh`.

use std::time::Duration;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use vidpipe::config::Config;
use vidpipe::server::Server;
use vidpipe::store::keys::KeyFile;

struct Running {
    _dir: tempfile::TempDir,
    server: Server,
    key: String,
    base: String,
}

async fn running(max_upload_bytes: u64) -> Running {
    let dir = tempfile::tempdir().unwrap();
    let key = KeyFile::new(dir.path()).create("bench").unwrap().1;
    let mut config = Config::new(([127, 0, 0, 1], 0).into(), dir.path().to_path_buf());
    config.max_upload_bytes = max_upload_bytes;
    config.max_in_flight_per_tenant = usize::MAX;
    config.max_queued_jobs = usize::MAX;
    let server = Server::start(config).await.unwrap();
    let base = format!("http://{}/api/client/v1", server.addr());
    Running {
        _dir: dir,
        server,
        key,
        base,
    }
}

/// The runtime the server and the client share, two workers as on the machines measured.
fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

fn upload_body(bytes: Vec<u8>) -> reqwest::multipart::Form {
    let part = reqwest::multipart::Part::bytes(bytes).file_name("bench.mp4");
    reqwest::multipart::Form::new()
        .part("video", part)
        .text("folder", "root/bench")
}

fn read_path(c: &mut Criterion) {
    let runtime = runtime();
    let r = runtime.block_on(running(1 << 20));
    let client = reqwest::Client::new();
    // 60 records (non-video bodies that fail fast), so the list is full.
    let mut last_id = String::new();
    runtime.block_on(async {
        for _ in 0..60 {
            let response = client
                .post(format!("{}/uploads", r.base))
                .bearer_auth(&r.key)
                .multipart(upload_body(b"not a video".to_vec()))
                .send()
                .await
                .unwrap();
            let body: serde_json::Value = response.json().await.unwrap();
            last_id = body["data"]["id"].as_str().unwrap().to_string();
        }
    });
    let one = format!("{}/uploads/{last_id}", r.base);
    let list = format!("{}/uploads", r.base);
    let mut group = c.benchmark_group("http_read");
    group.throughput(Throughput::Elements(1));
    group.bench_function("get_upload_by_id", |b| {
        b.to_async(&runtime).iter(|| async {
            let response = client.get(&one).bearer_auth(&r.key).send().await.unwrap();
            assert_eq!(response.status(), 200);
            response.bytes().await.unwrap()
        })
    });
    group.bench_function("list_50_uploads", |b| {
        b.to_async(&runtime).iter(|| async {
            let response = client.get(&list).bearer_auth(&r.key).send().await.unwrap();
            assert_eq!(response.status(), 200);
            response.bytes().await.unwrap()
        })
    });
    group.finish();
    runtime.block_on(r.server.shutdown());
}

fn ingest(c: &mut Criterion) {
    const SIZE: usize = 64 * 1024 * 1024;
    let runtime = runtime();
    let r = runtime.block_on(running(SIZE as u64 * 2));
    let client = reqwest::Client::new();
    let payload: Vec<u8> = (0..SIZE)
        .map(|i| (i.wrapping_mul(2654435761) >> 11) as u8)
        .collect();
    let mut group = c.benchmark_group("ingest");
    group.sample_size(10);
    group.measurement_time(Duration::from_secs(20));
    group.throughput(Throughput::Bytes(SIZE as u64));
    group.bench_function("upload_64_mib", |b| {
        b.to_async(&runtime).iter(|| async {
            let response = client
                .post(format!("{}/uploads", r.base))
                .bearer_auth(&r.key)
                .multipart(upload_body(payload.clone()))
                .send()
                .await
                .unwrap();
            assert_eq!(response.status(), 202);
        })
    });
    group.finish();
    runtime.block_on(r.server.shutdown());
}

/// Concurrent creates of tiny uploads: what the staging fsyncs and the
/// registry's group commit allow (every create is acknowledged only when its
/// record is durable).
fn create_path(c: &mut Criterion) {
    const CONCURRENT: usize = 64;
    let runtime = runtime();
    let r = runtime.block_on(running(1 << 20));
    let client = reqwest::Client::new();
    let url = format!("{}/uploads", r.base);
    let mut group = c.benchmark_group("http_write");
    group.throughput(Throughput::Elements(CONCURRENT as u64));
    group.sample_size(20);
    group.bench_function("post_tiny_upload_64_concurrent", |b| {
        b.to_async(&runtime).iter(|| async {
            let posts = (0..CONCURRENT).map(|_| async {
                let response = client
                    .post(&url)
                    .bearer_auth(&r.key)
                    .multipart(upload_body(b"not a video".to_vec()))
                    .send()
                    .await
                    .unwrap();
                assert_eq!(response.status(), 202);
                response.bytes().await.unwrap()
            });
            futures_util::future::join_all(posts).await
        })
    });
    group.finish();
    runtime.block_on(r.server.shutdown());
}

criterion_group!(benches, read_path, ingest, create_path);
criterion_main!(benches);
