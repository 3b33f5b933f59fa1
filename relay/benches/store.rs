//! Store delivery with group commit: N deliveries in flight at once, each one durable (a 4 KB body
//! is a row in the same commit; larger ones are fsync'd files) before it resolves. Throughput is deliveries per second; the
//! larger N, the more deliveries share one WAL fsync.

mod common;

use std::time::{Duration, Instant};

use bytes::Bytes;
use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use relay::store::{Delivery, Store};

fn store(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("runtime");
    let dir = tempfile::tempdir().expect("tempdir");
    let store = Store::open(dir.path()).expect("open store");
    let msg = Bytes::from(common::message("4k").expect("4 KB message"));
    const SENDERS: usize = 64;
    let accounts: Vec<_> = rt.block_on(async {
        let mut v = Vec::new();
        for i in 0..SENDERS {
            let addr = format!("bench{i:04}@relay.test");
            let out = store.create_account(&addr, "x".into(), addr.clone().into_bytes()).await.expect("create");
            match out {
                relay::store::CreateOutcome::Created(a) | relay::store::CreateOutcome::AlreadyExists(a) => v.push(a.id),
                relay::store::CreateOutcome::Tombstoned => panic!("tombstoned"),
            }
        }
        v
    });
    let shared_blob = rt.block_on(store.put_blob(msg.clone())).expect("blob");

    let mut g = c.benchmark_group("store_deliver");
    g.measurement_time(Duration::from_secs(4)).warm_up_time(Duration::from_millis(500)).sample_size(20);
    for n in [1usize, 8, 64] {
        g.throughput(Throughput::Elements(n as u64));
        // The commit alone: rows for an existing blob (what group commit batches).
        g.bench_with_input(BenchmarkId::new("commit_only", n), &n, |b, &n| {
            b.iter_custom(|iters| {
                rt.block_on(async {
                    let t0 = Instant::now();
                    for _ in 0..iters {
                        let jobs = (0..n).map(|i| {
                            store.deliver(Delivery {
                                sender: "bench0000@relay.test".into(),
                                sender_account: Some(accounts[0]),
                                local: vec![accounts[i % SENDERS]],
                                local_blob: Some(shared_blob.clone()),
                                ..Default::default()
                            })
                        });
                        for r in futures::future::join_all(jobs).await {
                            r.expect("deliver");
                        }
                    }
                    t0.elapsed()
                })
            })
        });
        // What a submission costs the store: stage the body, then the delivery commit that writes it.
        g.bench_with_input(BenchmarkId::new("blob_and_commit", n), &n, |b, &n| {
            b.iter_custom(|iters| {
                rt.block_on(async {
                    let t0 = Instant::now();
                    for _ in 0..iters {
                        let jobs = (0..n).map(|i| {
                            let (store, msg) = (store.clone(), msg.clone());
                            let (from, to) = (accounts[0], accounts[i % SENDERS]);
                            async move {
                                let blob = store.put_blob(msg.clone()).await?;
                                store
                                    .deliver(Delivery {
                                        sender: "bench0000@relay.test".into(),
                                        sender_account: Some(from),
                                        local: vec![to],
                                        local_blob: Some(blob),
                                        ..Default::default()
                                    })
                                    .await
                            }
                        });
                        for r in futures::future::join_all(jobs).await {
                            r.expect("deliver");
                        }
                    }
                    t0.elapsed()
                })
            })
        });
    }
    g.finish();
}

criterion_group!(benches, store);
criterion_main!(benches);
