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

use std::future::Future;
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

/// deadpool's manager of loopback TCP connections to this address, with a no-op `recycle` (its
/// cheapest setting).
pub struct DeadpoolManager(pub SocketAddr);

impl deadpool::managed::Manager for DeadpoolManager {
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

/// A pool under test. Each pool is its own type, so each gets its own monomorphic loop: with
/// one `async fn` matching over all three, the loop's state machine was the union of theirs,
/// and a change to one pool's guard moved another pool's figure (deadpool's get+drop by 20 %
/// when only moor's guard grew by 16 bytes).
trait Subject: Clone + Send + Sync + 'static {
    /// Its name in the report.
    const NAME: &'static str;

    /// One checkout: returns how long `get` took (when `timed`, else zero).
    fn cycle(&self, w: Work, timed: bool) -> impl Future<Output = Duration> + Send;

    /// Fills the pool with `size` open connections.
    fn warm(&self, size: usize) -> impl Future<Output = ()> + Send;
}

#[derive(Clone)]
struct Moor(moor_tokio::Pool, Target);

#[derive(Clone)]
struct Deadpool(deadpool::managed::Pool<DeadpoolManager>);

#[derive(Clone)]
struct Bb8(bb8::Pool<Bb8Manager>);

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

fn elapsed(start: Option<Instant>) -> Duration {
    start.map_or(Duration::ZERO, |s| s.elapsed())
}

/// The [`Subject`] impl of a pool whose checkout is `$get`, with `$s` the subject (each a type
/// of its own, so each gets its own loop).
macro_rules! subject {
    ($ty:ty, $name:literal, |$s:ident| $get:expr) => {
        impl Subject for $ty {
            const NAME: &'static str = $name;

            async fn cycle(&self, w: Work, timed: bool) -> Duration {
                let $s = self;
                let start = timed.then(Instant::now);
                let mut c = $get.await.expect(concat!($name, " get"));
                let took = elapsed(start);
                work(&mut *c, w).await;
                took
            }

            async fn warm(&self, size: usize) {
                let $s = self;
                let mut held = Vec::new();
                for _ in 0..size {
                    held.push($get.await.expect("warm"));
                }
            }
        }
    };
}

subject!(Moor, "moor", |s| s.0.get(&s.1));
subject!(Deadpool, "deadpool", |s| s.0.get());
subject!(Bb8, "bb8", |s| s.0.get());

/// The three pools, each of `size` warm connections to `addr`.
struct Subjects {
    moor: Moor,
    deadpool: Deadpool,
    bb8: Bb8,
}

const NAMES: [&str; 3] = [Moor::NAME, Deadpool::NAME, Bb8::NAME];

impl Subjects {
    async fn new(addr: SocketAddr, size: usize) -> Subjects {
        let moor = moor_tokio::Pool::builder()
            .max_per_key(size)
            .max_open(size.max(128))
            .build()
            .expect("moor pool");
        let target = Target::new("tcp", "127.0.0.1", addr.port());
        let dp = deadpool::managed::Pool::builder(DeadpoolManager(addr))
            .max_size(size)
            .build()
            .expect("deadpool");
        let b = bb8::Pool::builder()
            .max_size(u32::try_from(size).expect("small"))
            .test_on_check_out(false)
            .build(Bb8Manager(addr))
            .await
            .expect("bb8");
        let all = Subjects {
            moor: Moor(moor, target),
            deadpool: Deadpool(dp),
            bb8: Bb8(b),
        };
        all.moor.warm(size).await;
        all.deadpool.warm(size).await;
        all.bb8.warm(size).await;
        all
    }
}

/// Checkouts per second with `tasks` tasks looping for [`RUN`].
///
/// Each loop also spends one unit of tokio's cooperative budget per checkout, so a task whose
/// checkouts never wait still yields now and then (as a task doing real I/O would), and the
/// tasks really interleave.
async fn throughput<S: Subject>(s: &S, tasks: usize, w: Work) -> f64 {
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
async fn latencies<S: Subject>(s: &S, per_task: usize) -> Vec<u64> {
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
async fn medians(subjects: &Subjects, tasks: usize, w: Work) -> Vec<f64> {
    let mut runs = vec![Vec::new(); NAMES.len()];
    for rep in 0..REPS {
        for k in 0..NAMES.len() {
            let i = (k + rep) % NAMES.len();
            let v = match i {
                0 => throughput(&subjects.moor, tasks, w).await,
                1 => throughput(&subjects.deadpool, tasks, w).await,
                _ => throughput(&subjects.bb8, tasks, w).await,
            };
            runs[i].push(v);
        }
    }
    runs.into_iter().map(median).collect()
}

/// `(p50, p99, max)` of one latency run of subject `i`.
async fn latency_run(subjects: &Subjects, i: usize) -> (u64, u64, u64) {
    let lat = match i {
        0 => latencies(&subjects.moor, 300).await,
        1 => latencies(&subjects.deadpool, 300).await,
        _ => latencies(&subjects.bb8, 300).await,
    };
    (
        pct(&lat, 0.5),
        pct(&lat, 0.99),
        *lat.last().expect("samples"),
    )
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
            let subjects = Subjects::new(server.addr, size).await;
            for tasks in [1, 64] {
                let v = medians(&subjects, tasks, Work::Nothing).await;
                let label = format!("(a) get+drop tasks={tasks} size={size}");
                ratios.push(report(&label, &NAMES, &v, "gets/s"));
            }
        }
        let subjects = Subjects::new(server.addr, 4).await;
        let mut p99 = vec![Vec::new(); NAMES.len()];
        for rep in 0..REPS {
            for k in 0..NAMES.len() {
                let i = (k + rep) % NAMES.len();
                p99[i].push(latency_run(&subjects, i).await);
            }
        }
        let mut p99_median = Vec::new();
        for (n, runs) in NAMES.iter().zip(&p99) {
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
            &NAMES,
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
