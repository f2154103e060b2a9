//! Restart time with a large database: 100k upload records on disk (all
//! terminal but a few hundred unfinished), from `Server::start` to the first
//! answered `GET /uploads`.

use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion};
use uuid::Uuid;
use vidpipe::config::Config;
use vidpipe::server::Server;
use vidpipe::store::keys::KeyFile;
use vidpipe::store::record::{now_utc, Status, UploadRecord};
use vidpipe::store::{Store, WriteOp};

const RECORDS: usize = 100_000;
const UNFINISHED: usize = 200;

fn seed(dir: &std::path::Path, tenant: &str) {
    let store = Store::open(&dir.join("vidpipe.redb")).unwrap();
    let now = now_utc();
    for chunk in 0..RECORDS / 1000 {
        let ops = (0..1000)
            .map(|i| {
                let n = chunk * 1000 + i;
                WriteOp::Insert(
                    Box::new(UploadRecord {
                        id: Uuid::new_v4(),
                        seq: 0,
                        tenant: tenant.to_string(),
                        filename: format!("clip-{n}.mp4"),
                        folder: "root/bench".into(),
                        // Unfinished ones have no staged body: recovery fails them fast.
                        status: if n < UNFINISHED {
                            Status::Pending
                        } else {
                            Status::Completed
                        },
                        created_at: now,
                        updated_at: now,
                        size_bytes: 1000,
                        source: None,
                        media_token: "0123456789abcdef".into(),
                        outputs: None,
                        error: None,
                        attempts: 0,
                        callback_url: None,
                        version: 0,
                        preview: None,
                    }),
                    None,
                )
            })
            .collect();
        store.apply_batch(ops).unwrap();
    }
}

fn restart(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (key, secret) = KeyFile::new(dir.path()).create("bench").unwrap();
    let seeding = Instant::now();
    seed(dir.path(), &key.id);
    eprintln!(
        "seeded {RECORDS} records in {:.1} s",
        seeding.elapsed().as_secs_f64()
    );
    let client = reqwest::Client::new();
    let mut group = c.benchmark_group("restart");
    group.sample_size(10);
    group.measurement_time(Duration::from_secs(20));
    group.bench_function("start_to_first_get_with_100k_records", |b| {
        b.to_async(&runtime).iter_custom(|iters| {
            let client = client.clone();
            let secret = secret.clone();
            let data = dir.path().to_path_buf();
            async move {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    let started = Instant::now();
                    let config = Config::new(([127, 0, 0, 1], 0).into(), data.clone());
                    let server = Server::start(config).await.unwrap();
                    let response = client
                        .get(format!("http://{}/api/client/v1/uploads", server.addr()))
                        .bearer_auth(&secret)
                        .send()
                        .await
                        .unwrap();
                    assert_eq!(response.status(), 200);
                    total += started.elapsed();
                    server.shutdown().await;
                }
                total
            }
        })
    });
    group.finish();
}

criterion_group!(benches, restart);
criterion_main!(benches);
