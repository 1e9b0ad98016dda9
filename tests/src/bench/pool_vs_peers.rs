//! `pool-vs-peers`: moor-tokio against `deadpool` (managed) and `bb8` in one run, one key, one
//! loopback echo server.
//!
//! (a) get + drop of a warm connection, 1 and 64 tasks, pool size 4 and 16 (throughput);
//! (b) latency of `get()` with 64 tasks contending for 4 connections (p50 / p99 / max);
//! (c) a real loopback request/response per checkout, 16 tasks over 4 connections.
//!
//! The peers' health checks are no-ops (deadpool `recycle` returns `Ok`, bb8 runs no
//! `test_on_check_out`), which is their cheapest setting; moor keeps its health check
//! (a readiness-gated probe on checkin and an idle watch), so the comparison is not in moor's
//! favour. Each figure is the median of `REPS` runs, the three pools interleaved.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use moor_tokio::Target;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;

use super::median;
use crate::net::{Behavior, Server, exchange};

/// Repetitions of every measurement (the median is reported).
const REPS: usize = 5;
/// How long one throughput measurement runs.
const RUN: Duration = Duration::from_millis(400);

struct DpManager(SocketAddr);

impl deadpool::managed::Manager for DpManager {
    type Type = TcpStream;
    type Error = io::Error;
    async fn create(&self) -> Result<TcpStream, io::Error> {
        connect(self.0).await
    }
    async fn recycle(
        &self,
        _: &mut TcpStream,
        _: &deadpool::managed::Metrics,
    ) -> deadpool::managed::RecycleResult<io::Error> {
        Ok(())
    }
}

struct Bb8Manager(SocketAddr);

impl bb8::ManageConnection for Bb8Manager {
    type Connection = TcpStream;
    type Error = io::Error;
    async fn connect(&self) -> Result<TcpStream, io::Error> {
        connect(self.0).await
    }
    async fn is_valid(&self, _: &mut TcpStream) -> Result<(), io::Error> {
        Ok(())
    }
    fn has_broken(&self, _: &mut TcpStream) -> bool {
        false
    }
}

async fn connect(addr: SocketAddr) -> io::Result<TcpStream> {
    let s = TcpStream::connect(addr).await?;
    s.set_nodelay(true)?;
    Ok(s)
}

#[derive(Clone)]
enum Subject {
    Moor(moor_tokio::Pool, Target),
    Deadpool(deadpool::managed::Pool<DpManager>),
    Bb8(bb8::Pool<Bb8Manager>),
}

/// What a task does while it holds a connection.
#[derive(Clone, Copy, PartialEq)]
enum Work {
    Nothing,
    Yield,
    Exchange,
}

async fn work<S: AsyncRead + AsyncWrite + Unpin>(s: &mut S, w: Work) {
    match w {
        Work::Nothing => {}
        Work::Yield => tokio::task::yield_now().await,
        Work::Exchange => exchange(s, &[7u8; 32]).await.expect("echo"),
    }
}

impl Subject {
    fn name(&self) -> &'static str {
        match self {
            Subject::Moor(..) => "moor",
            Subject::Deadpool(_) => "deadpool",
            Subject::Bb8(_) => "bb8",
        }
    }

    /// One checkout: returns how long `get` took (when `timed`, else zero).
    async fn cycle(&self, w: Work, timed: bool) -> Duration {
        let start = timed.then(Instant::now);
        let elapsed = |s: Option<Instant>| s.map_or(Duration::ZERO, |s| s.elapsed());
        match self {
            Subject::Moor(pool, t) => {
                let mut c = pool.get(t).await.expect("moor get");
                let took = elapsed(start);
                work(&mut *c, w).await;
                took
            }
            Subject::Deadpool(pool) => {
                let mut c = pool.get().await.expect("deadpool get");
                let took = elapsed(start);
                work(&mut *c, w).await;
                took
            }
            Subject::Bb8(pool) => {
                let mut c = pool.get().await.expect("bb8 get");
                let took = elapsed(start);
                work(&mut *c, w).await;
                took
            }
        }
    }

    /// Fills the pool with `size` open connections.
    async fn warm(&self, size: usize) {
        match self {
            Subject::Moor(pool, t) => {
                let mut held = Vec::new();
                for _ in 0..size {
                    held.push(pool.get(t).await.expect("warm"));
                }
            }
            Subject::Deadpool(pool) => {
                let mut held = Vec::new();
                for _ in 0..size {
                    held.push(pool.get().await.expect("warm"));
                }
            }
            Subject::Bb8(pool) => {
                let mut held = Vec::new();
                for _ in 0..size {
                    held.push(pool.get().await.expect("warm"));
                }
            }
        }
    }
}

async fn subjects(addr: SocketAddr, size: usize) -> Vec<Subject> {
    let moor = moor_tokio::Pool::builder()
        .max_per_key(size)
        .max_open(size.max(128))
        .build()
        .expect("moor pool");
    let target = Target::new("tcp", "127.0.0.1", addr.port());
    let dp = deadpool::managed::Pool::builder(DpManager(addr))
        .max_size(size)
        .build()
        .expect("deadpool");
    let b = bb8::Pool::builder()
        .max_size(u32::try_from(size).expect("small"))
        .test_on_check_out(false)
        .build(Bb8Manager(addr))
        .await
        .expect("bb8");
    let all = vec![
        Subject::Moor(moor, target),
        Subject::Deadpool(dp),
        Subject::Bb8(b),
    ];
    for s in &all {
        s.warm(size).await;
    }
    all
}

/// Checkouts per second with `tasks` tasks looping for [`RUN`].
///
/// Each loop also spends one unit of tokio's cooperative budget per checkout, so a task whose
/// checkouts never wait still yields now and then (as a task doing real I/O would), and the
/// tasks really interleave.
async fn throughput(s: &Subject, tasks: usize, w: Work) -> f64 {
    let count = Arc::new(AtomicU64::new(0));
    let mut set = tokio::task::JoinSet::new();
    let start = Instant::now();
    let end = start + RUN;
    for _ in 0..tasks {
        let (s, count) = (s.clone(), count.clone());
        set.spawn(async move {
            let mut n = 0u64;
            // The clock is read once per 16 checkouts, so it weighs little in any pool's figure.
            while Instant::now() < end {
                for _ in 0..16 {
                    s.cycle(w, false).await;
                    tokio::task::consume_budget().await;
                }
                n += 16;
            }
            count.fetch_add(n, Ordering::Relaxed);
        });
    }
    while set.join_next().await.is_some() {}
    count.load(Ordering::Relaxed) as f64 / start.elapsed().as_secs_f64()
}

/// `get()` latencies (ns) of 64 tasks × `per_task` checkouts, each holding across a yield.
async fn latencies(s: &Subject, per_task: usize) -> Vec<u64> {
    let mut set = tokio::task::JoinSet::new();
    for _ in 0..64 {
        let s = s.clone();
        set.spawn(async move {
            let mut v = Vec::with_capacity(per_task);
            for _ in 0..per_task {
                let took = s.cycle(Work::Yield, true).await;
                v.push(u64::try_from(took.as_nanos()).unwrap_or(u64::MAX));
            }
            v
        });
    }
    let mut all = Vec::new();
    while let Some(v) = set.join_next().await {
        all.extend(v.expect("latency task"));
    }
    all.sort_unstable();
    all
}

fn pct(sorted: &[u64], p: f64) -> u64 {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i]
}

/// Runs each subject `REPS` times (rotating the order) and returns the median per subject.
async fn medians(subjects: &[Subject], tasks: usize, w: Work) -> Vec<f64> {
    let mut runs = vec![Vec::new(); subjects.len()];
    for rep in 0..REPS {
        for k in 0..subjects.len() {
            let i = (k + rep) % subjects.len();
            runs[i].push(throughput(&subjects[i], tasks, w).await);
        }
    }
    runs.into_iter().map(median).collect()
}

/// Prints the three figures and returns moor / best peer.
fn report(label: &str, names: &[&str], values: &[f64], unit: &str) -> f64 {
    for (n, v) in names.iter().zip(values) {
        println!("pool-vs-peers {label} {n}: {v:.0} {unit}");
    }
    let best_peer = values[1].max(values[2]);
    let ratio = values[0] / best_peer;
    println!("pool-vs-peers {label} ratio moor/best-peer: {ratio:.2}");
    ratio
}

/// Runs the scenario.
pub fn run() {
    let rt = super::runtime();
    rt.block_on(async {
        let server = Server::start(Behavior::Echo);
        let mut ratios = Vec::new();
        for size in [4, 16] {
            let subjects = subjects(server.addr, size).await;
            let names: Vec<&str> = subjects.iter().map(Subject::name).collect();
            for tasks in [1, 64] {
                let v = medians(&subjects, tasks, Work::Nothing).await;
                let label = format!("(a) get+drop tasks={tasks} size={size}");
                ratios.push(report(&label, &names, &v, "gets/s"));
            }
        }
        let subjects = subjects(server.addr, 4).await;
        let names: Vec<&str> = subjects.iter().map(Subject::name).collect();
        let mut p99 = vec![Vec::new(); subjects.len()];
        for rep in 0..REPS {
            for k in 0..subjects.len() {
                let i = (k + rep) % subjects.len();
                let lat = latencies(&subjects[i], 300).await;
                p99[i].push((pct(&lat, 0.5), pct(&lat, 0.99), *lat.last().expect("samples")));
            }
        }
        let mut p99_median = Vec::new();
        for (n, runs) in names.iter().zip(&p99) {
            let mut r = runs.clone();
            r.sort_by_key(|x| x.1);
            let (p50, p99, max) = r[r.len() / 2];
            println!(
                "pool-vs-peers (b) get latency 64 tasks/4 conns {n}: p50 {:.1} us, p99 {:.1} us, max {:.1} us",
                p50 as f64 / 1e3,
                p99 as f64 / 1e3,
                max as f64 / 1e3
            );
            p99_median.push(p99 as f64);
        }
        let v = medians(&subjects, 16, Work::Exchange).await;
        ratios.push(report(
            "(c) request/response tasks=16 size=4",
            &names,
            &v,
            "exchanges/s",
        ));
        let geo = ratios.iter().map(|r| r.ln()).sum::<f64>() / ratios.len() as f64;
        let x = geo.exp();
        let y = p99_median[0] / p99_median[1];
        println!(
            "pool-vs-peers: throughput ratio moor/best-peer = {x:.2}, p99 ratio moor/deadpool = {y:.2}"
        );
    });
}
