//! Criterion benchmarks of the pool's hot paths: `cargo bench -p moor-core`.

use std::hint::black_box;
use std::net::{IpAddr, Ipv4Addr};
use std::time::Duration;

use criterion::{BatchSize, Criterion, criterion_group, criterion_main};
use moor_core::pool::{Config, Endpoint, Output, Pool};
use moor_core::{ConnId, Instant};

const LOOPBACK: [IpAddr; 1] = [IpAddr::V4(Ipv4Addr::LOCALHOST)];

/// Opens one connection for `key` and leaves it idle; returns its id.
fn warm(pool: &mut Pool<Endpoint>, now: Instant, key: &Endpoint) -> ConnId {
    pool.handle_checkout(now, key, None).unwrap();
    let mut conn = None;
    for _ in 0..4 {
        while let Some(out) = pool.poll_output() {
            match out {
                Output::Resolve { host } => {
                    pool.handle_resolved(now, &host, Ok(&LOOPBACK)).unwrap()
                }
                Output::Connect { conn, attempt, .. } => {
                    pool.handle_connected(now, conn, attempt).unwrap()
                }
                Output::Acquired { conn: c, .. } => conn = Some(c),
                other => panic!("unexpected {other:?}"),
            }
        }
    }
    let conn = conn.expect("acquired");
    pool.handle_checkin(now, conn, true).unwrap();
    conn
}

fn cache_hit(c: &mut Criterion) {
    let mut pool = Pool::new(Config::default()).unwrap();
    let key = Endpoint::new("http", "bench.test", 80);
    let now = Instant::from_secs(1);
    warm(&mut pool, now, &key);
    c.bench_function("pool/checkout+checkin (cache hit)", |b| {
        b.iter(|| {
            pool.handle_checkout(now, black_box(&key), None).unwrap();
            let Some(Output::Acquired { conn, .. }) = pool.poll_output() else {
                unreachable!()
            };
            pool.handle_checkin(now, black_box(conn), true).unwrap();
        })
    });
}

fn checkout_cancel(c: &mut Criterion) {
    // One key at its cap with a leased connection: every checkout queues, then is cancelled.
    let config = Config {
        max_per_key: 1,
        ..Config::default()
    };
    let mut pool = Pool::new(config).unwrap();
    let key = Endpoint::new("http", "bench.test", 80);
    let now = Instant::from_secs(1);
    let conn = warm(&mut pool, now, &key);
    pool.handle_checkout(now, &key, None).unwrap();
    assert!(matches!(pool.poll_output(), Some(Output::Acquired { conn: c, .. }) if c == conn));
    c.bench_function("pool/checkout+cancel (queued)", |b| {
        b.iter(|| {
            let checkout = pool.handle_checkout(now, black_box(&key), None).unwrap();
            pool.handle_cancel(now, checkout).unwrap();
        })
    });
}

fn sweep_idle(c: &mut Criterion) {
    const N: u64 = 100_000;
    let config = Config {
        max_per_key: 1,
        max_open: N as usize,
        ..Config::default()
    };
    let keys: Vec<Endpoint> = (0..N)
        .map(|i| Endpoint::new("http", "127.0.0.1", (i % 60_000) as u16 + 1))
        .collect();
    let keys: Vec<Endpoint> = keys
        .into_iter()
        .enumerate()
        .map(|(i, mut k)| {
            k.scheme = format!("s{}", i / 60_000);
            k
        })
        .collect();
    let mut group = c.benchmark_group("pool/handle_timeout");
    group
        .sample_size(10)
        .measurement_time(Duration::from_secs(10));
    group.bench_function("sweep 100k expiring idle connections", |b| {
        b.iter_batched(
            || {
                let mut pool = Pool::new(config.clone()).unwrap();
                let now = Instant::from_secs(1);
                for key in &keys {
                    warm(&mut pool, now, key);
                }
                pool
            },
            |mut pool| {
                pool.handle_timeout(Instant::from_secs(100));
                let mut closed = 0;
                while let Some(out) = pool.poll_output() {
                    closed += usize::from(matches!(out, Output::Close { .. }));
                }
                assert_eq!(closed, N as usize);
                pool
            },
            BatchSize::PerIteration,
        )
    });
    group.finish();
}

criterion_group!(benches, cache_hit, checkout_cancel, sweep_idle);
criterion_main!(benches);
