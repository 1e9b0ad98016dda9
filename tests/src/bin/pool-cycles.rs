//! A fixed number of checkout cycles of one pool, on a current-thread runtime, for counting
//! instructions: `pool-cycles <moor|deadpool> <hit|wait> <cycles>`.
//!
//! On this 2-core VM wall-clock figures of the pool benchmarks swing by tens of percent from
//! run to run, and even with the code of *another* pool in the same binary. An instruction
//! count does not: run it under callgrind at two cycle counts and take the difference per
//! cycle (start-up, connects and the server drop out):
//!
//! ```text
//! valgrind --tool=callgrind --callgrind-out-file=/dev/null target/release/pool-cycles moor hit 64000
//! valgrind --tool=callgrind --callgrind-out-file=/dev/null target/release/pool-cycles moor hit 128000
//! ```
//!
//! (`Collected` of the second minus the first, over 64,000.) `hit`: one task, get and drop of a
//! warm connection (pool of 4). `wait`: 64 tasks on 4 connections, each holding its connection
//! across a yield, so nearly every checkout waits and every return is a hand-over. Without
//! valgrind it prints the wall-clock time per cycle.

use std::process::ExitCode;
use std::time::Instant;

use moor_tests::bench::pool_vs_peers::DeadpoolManager;
use moor_tests::net::{Behavior, Server};

/// The pool size.
const SIZE: usize = 4;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (Some(subject), Some(shape), Some(Ok(cycles))) = (
        args.first().map(String::as_str),
        args.get(1).map(String::as_str),
        args.get(2).map(|n| n.parse::<usize>()),
    ) else {
        eprintln!("usage: pool-cycles <moor|deadpool> <hit|wait> <cycles>");
        return ExitCode::FAILURE;
    };
    let tasks = match shape {
        "hit" => 1,
        "wait" => 64,
        _ => {
            eprintln!("pool-cycles: unknown shape `{shape}` (hit or wait)");
            return ExitCode::FAILURE;
        }
    };
    if !matches!(subject, "moor" | "deadpool") {
        eprintln!("pool-cycles: unknown pool `{subject}` (moor or deadpool)");
        return ExitCode::FAILURE;
    }
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let took = rt.block_on(async move {
        let server = Server::start(Behavior::Echo);
        let per_task = cycles / tasks;
        let mut set = tokio::task::JoinSet::new();
        let start;
        if subject == "moor" {
            let pool = moor_tokio::Pool::builder()
                .max_per_key(SIZE)
                .build()
                .expect("moor pool");
            let target = moor_tokio::Target::new("tcp", "127.0.0.1", server.addr.port());
            let held: Vec<_> = warm(SIZE, || pool.get(&target)).await;
            drop(held);
            start = Instant::now();
            for _ in 0..tasks {
                let (pool, target) = (pool.clone(), target.clone());
                set.spawn(async move {
                    for _ in 0..per_task {
                        let c = pool.get(&target).await.expect("moor get");
                        if tasks > 1 {
                            tokio::task::yield_now().await;
                        }
                        drop(c);
                    }
                });
            }
        } else {
            let pool: deadpool::managed::Pool<DeadpoolManager> =
                deadpool::managed::Pool::builder(DeadpoolManager(server.addr))
                    .max_size(SIZE)
                    .build()
                    .expect("deadpool");
            let held: Vec<_> = warm(SIZE, || pool.get()).await;
            drop(held);
            start = Instant::now();
            for _ in 0..tasks {
                let pool = pool.clone();
                set.spawn(async move {
                    for _ in 0..per_task {
                        let c = pool.get().await.expect("deadpool get");
                        if tasks > 1 {
                            tokio::task::yield_now().await;
                        }
                        drop(c);
                    }
                });
            }
        }
        while let Some(done) = set.join_next().await {
            done.expect("cycle task");
        }
        start.elapsed()
    });
    println!(
        "pool-cycles {subject} {shape}: {cycles} cycles, {:.1} ns/cycle",
        took.as_nanos() as f64 / cycles as f64
    );
    ExitCode::SUCCESS
}

/// Checks out `n` connections one after another (so the pool opens `n`) and holds them.
async fn warm<T, E: std::fmt::Debug, F: Future<Output = Result<T, E>>>(
    n: usize,
    mut get: impl FnMut() -> F,
) -> Vec<T> {
    let mut held = Vec::with_capacity(n);
    for _ in 0..n {
        held.push(get().await.expect("warm-up checkout"));
    }
    held
}
