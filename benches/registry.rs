//! Status registry throughput: durable single commits, batched commits, and
//! group commit through the registry actor under concurrent load; and the
//! webhook outbox poll with a large backlog waiting for a failing endpoint;
//! and one page of `GET /uploads?status=6&limit=50` (the first, and one deep
//! behind a cursor) with 1,000 and with 1,000,000 uploads of the tenant.

use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use uuid::Uuid;
use vidpipe::store::listing::PageQuery;
use vidpipe::store::record::{now_utc, Status, TransitionPatch, UploadRecord};
use vidpipe::store::{Store, WriteOp};

fn record() -> UploadRecord {
    let now = now_utc();
    UploadRecord {
        id: Uuid::new_v4(),
        seq: 0,
        tenant: "bench".into(),
        filename: "a.mp4".into(),
        folder: "root".into(),
        status: Status::Pending,
        created_at: now,
        updated_at: now,
        size_bytes: 1,
        source: None,
        media_token: "t".into(),
        outputs: None,
        error: None,
        attempts: 0,
        callback_url: None,
        version: 0,
        preview: None,
    }
}

fn seeded(n: usize) -> (tempfile::TempDir, Store, Vec<Uuid>) {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&dir.path().join("bench.redb")).unwrap();
    let records: Vec<UploadRecord> = (0..n).map(|_| record()).collect();
    let ids = records.iter().map(|r| r.id).collect();
    let ops = records
        .into_iter()
        .map(|r| WriteOp::Insert(Box::new(r), None))
        .collect();
    store.apply_batch(ops).unwrap();
    (dir, store, ids)
}

fn flip(i: usize) -> Status {
    if i % 2 == 0 {
        Status::Processing
    } else {
        Status::Pending
    }
}

fn store_commits(c: &mut Criterion) {
    let (_dir, store, ids) = seeded(1000);
    let mut group = c.benchmark_group("store");
    group.sample_size(20);
    group.throughput(Throughput::Elements(1));
    let mut i = 0usize;
    group.bench_function("durable_single_transition", |b| {
        b.iter(|| {
            i += 1;
            store
                .transition(ids[i % ids.len()], flip(i), TransitionPatch::default())
                .unwrap()
        })
    });
    for batch in [10usize, 100] {
        group.throughput(Throughput::Elements(batch as u64));
        group.bench_with_input(
            BenchmarkId::new("durable_batched_transitions", batch),
            &batch,
            |b, &batch| {
                b.iter(|| {
                    let ops = (0..batch)
                        .map(|k| {
                            i += 1;
                            WriteOp::Transition {
                                id: ids[(i + k) % ids.len()],
                                to: flip(i),
                                patch: Box::default(),
                            }
                        })
                        .collect();
                    store.apply_batch(ops).unwrap()
                })
            },
        );
    }
    group.finish();
}

/// Concurrent callers of the registry in the group-commit bench.
const CALLERS: usize = 256;
/// Transitions each caller makes in a round.
const PER_CALLER: usize = 20;

/// One round of the group-commit bench: CALLERS concurrent callers, each
/// making PER_CALLER transitions of the upload `pick(ids, caller, n)`, one
/// after another; done when every one is acknowledged.
async fn round(
    services: &Arc<vidpipe::actors::Services>,
    ids: &Arc<Vec<Uuid>>,
    pick: fn(&[Uuid], usize, usize) -> Uuid,
) {
    let tasks: Vec<_> = (0..CALLERS)
        .map(|caller| {
            let services = services.clone();
            let ids = ids.clone();
            tokio::spawn(async move {
                for n in 0..PER_CALLER {
                    vidpipe::actors::registry::transition(
                        &services,
                        pick(&ids, caller, n),
                        flip(n),
                        TransitionPatch::default(),
                    )
                    .await
                    .unwrap();
                }
            })
        })
        .collect();
    for task in tasks {
        task.await.unwrap();
    }
}

/// Concurrent callers through the registry actor of a running server: each
/// call returns only once its transition is durable.
fn registry_group_commit(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let config = vidpipe::config::Config::new(([127, 0, 0, 1], 0).into(), dir.path().to_path_buf());
    let db_path = config.database_path();
    let server = runtime
        .block_on(vidpipe::server::Server::start(config))
        .unwrap();
    let services = server.services().clone();
    let records: Vec<UploadRecord> = (0..1000).map(|_| record()).collect();
    let ids: Arc<Vec<Uuid>> = Arc::new(records.iter().map(|r| r.id).collect());
    services
        .store
        .apply_batch(
            records
                .into_iter()
                .map(|r| WriteOp::Insert(Box::new(r), None))
                .collect(),
        )
        .unwrap();

    let mut group = c.benchmark_group("registry");
    group.sample_size(10);
    group.measurement_time(Duration::from_secs(10));
    group.throughput(Throughput::Elements((CALLERS * PER_CALLER) as u64));
    group.bench_function("group_commit_256_concurrent_callers", |b| {
        b.to_async(&runtime).iter_custom(|iters| {
            let services = services.clone();
            let ids = ids.clone();
            async move {
                let started = Instant::now();
                for _ in 0..iters {
                    // Callers share uploads: a round touches 1,000 of them.
                    round(&services, &ids, |ids, caller, n| {
                        ids[(caller * PER_CALLER + n) % ids.len()]
                    })
                    .await;
                }
                started.elapsed()
            }
        })
    });
    group.finish();

    // Every acknowledged transition is on disk: each caller moves its own
    // upload through PER_CALLER transitions; after the server stops, the
    // database reopened shows every last acknowledged status.
    runtime.block_on(round(&services, &ids, |ids, caller, _| ids[caller]));
    drop(services);
    runtime.block_on(server.shutdown());
    let store = Store::open(&db_path).unwrap();
    let last = flip(PER_CALLER - 1);
    for id in &ids[..CALLERS] {
        let status = store.get(*id).unwrap().map(|r| r.status);
        assert_eq!(
            status,
            Some(last),
            "upload {id}: acknowledged {last:?}, on disk {status:?}"
        );
    }
    println!(
        "registry: all {CALLERS} last acknowledged statuses are what the reopened database holds"
    );
}

/// Every event goes to the global endpoint.
struct GlobalOnly;

impl vidpipe::store::outbox::EndpointRouter for GlobalOnly {
    fn endpoints(&self, _record: &UploadRecord) -> Vec<vidpipe::store::outbox::Endpoint> {
        vec![vidpipe::store::outbox::Endpoint::Global]
    }
}

/// One poll of the delivery actor when 200 uploads have 100 events each
/// waiting (20,000 rows; every chain's head rescheduled an hour ahead, as
/// when an endpoint has been down) and one event is due now.
fn outbox_poll_with_backlog(c: &mut Criterion) {
    use std::collections::HashSet;
    use vidpipe::store::outbox::Settlement;
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&dir.path().join("bench.redb")).unwrap();
    store.route_webhooks(Arc::new(GlobalOnly));
    let records: Vec<UploadRecord> = (0..200).map(|_| record()).collect();
    let ids: Vec<Uuid> = records.iter().map(|r| r.id).collect();
    let ops = records
        .into_iter()
        .map(|r| WriteOp::Insert(Box::new(r), None))
        .collect();
    store.apply_batch(ops).unwrap();
    let ops = (0..99)
        .flat_map(|i| {
            ids.iter().map(move |&id| WriteOp::Transition {
                id,
                to: flip(i),
                patch: Box::default(),
            })
        })
        .collect();
    store.apply_batch(ops).unwrap();
    let later = now_utc() + time::Duration::hours(1);
    for (seq, _) in store.outbox_due(later, &HashSet::new(), 1000).unwrap() {
        let retry = Settlement::Retry {
            at: later,
            error: "HTTP 503".into(),
        };
        store.outbox_settle(seq, retry).unwrap();
    }
    store.insert(&mut record()).unwrap();
    assert_eq!(store.outbox_len().unwrap(), 20_001);
    let mut group = c.benchmark_group("outbox");
    group.sample_size(20);
    group.bench_function("poll_20000_waiting_1_due", |b| {
        b.iter(|| {
            let due = store.outbox_due(now_utc(), &HashSet::new(), 8).unwrap();
            assert_eq!(due.len(), 1);
        })
    });
    group.finish();
}

/// A store holding `n` uploads of "bench" in ten folders, one in four of
/// them completed, written in batches.
fn seeded_for_listing(n: usize) -> (tempfile::TempDir, Store) {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&dir.path().join("bench.redb")).unwrap();
    let mut written = 0;
    while written < n {
        let batch = (n - written).min(20_000);
        let ops = (written..written + batch)
            .map(|i| {
                let mut r = record();
                r.folder = format!("root/f{}", i % 10);
                if i % 4 == 0 {
                    r.status = Status::Completed;
                }
                WriteOp::Insert(Box::new(r), None)
            })
            .collect();
        store.apply_batch(ops).unwrap();
        written += batch;
    }
    (dir, store)
}

fn list_page(c: &mut Criterion) {
    let mut group = c.benchmark_group("list");
    group.sample_size(50);
    for n in [1_000usize, 1_000_000] {
        let (_dir, store) = seeded_for_listing(n);
        let first = PageQuery {
            tenant: "bench",
            status: Some(Status::Completed),
            folder: None,
            before: None,
            limit: 50,
        };
        // A cursor halfway down the list.
        let deep = PageQuery {
            before: Some(n as u64 / 2),
            ..first.clone()
        };
        assert_eq!(store.page(&first).unwrap().records.len(), 50);
        assert_eq!(store.page(&deep).unwrap().records.len(), 50);
        group.bench_with_input(
            BenchmarkId::new("status_6_limit_50_first", n),
            &n,
            |b, _| b.iter(|| store.page(&first).unwrap()),
        );
        group.bench_with_input(BenchmarkId::new("status_6_limit_50_deep", n), &n, |b, _| {
            b.iter(|| store.page(&deep).unwrap())
        });
    }
    group.finish();
}

criterion_group!(
    benches,
    store_commits,
    registry_group_commit,
    outbox_poll_with_backlog,
    list_page
);
criterion_main!(benches);
