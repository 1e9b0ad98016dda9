//! `connect-rate`: fresh connections per second through the moor-tokio pool (each checked
//! out, used for one exchange and discarded) against a plain `TcpStream::connect` loop doing
//! the same exchange, in the same run, against the same loopback server.
//!
//! The server answers one byte and closes first, and the client reads that EOF before it
//! drops the socket, so `TIME_WAIT` lands on the server side and the client's ephemeral ports
//! do not run out. Both sides set `TCP_NODELAY`. Figures are medians of `REPS` runs.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use moor_tokio::{FromCache, Target};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;

use super::median;
use crate::net::{Behavior, Server};

const REPS: usize = 5;
const TASKS: usize = 8;
const PER_TASK: usize = 500;

async fn use_once<S: AsyncRead + AsyncWrite + Unpin>(s: &mut S) {
    s.write_all(b"?").await.expect("write");
    let mut b = [0u8; 1];
    s.read_exact(&mut b).await.expect("read");
    // Wait for the server's close, so the server side keeps the TIME_WAIT.
    assert_eq!(s.read(&mut b).await.expect("eof"), 0);
}

async fn plain(addr: std::net::SocketAddr) -> f64 {
    let done = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    let mut set = tokio::task::JoinSet::new();
    for _ in 0..TASKS {
        let done = done.clone();
        set.spawn(async move {
            for _ in 0..PER_TASK {
                let mut s = TcpStream::connect(addr).await.expect("connect");
                s.set_nodelay(true).expect("nodelay");
                use_once(&mut s).await;
                done.fetch_add(1, Ordering::Relaxed);
            }
        });
    }
    while set.join_next().await.is_some() {}
    done.load(Ordering::Relaxed) as f64 / start.elapsed().as_secs_f64()
}

async fn pooled(pool: &moor_tokio::Pool, target: &Target) -> f64 {
    let done = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    let mut set = tokio::task::JoinSet::new();
    for _ in 0..TASKS {
        let (pool, target, done) = (pool.clone(), target.clone(), done.clone());
        set.spawn(async move {
            for _ in 0..PER_TASK {
                let mut c = pool.get(&target).await.expect("get");
                assert_eq!(c.from_cache(), FromCache::Fresh);
                use_once(&mut *c).await;
                c.discard();
                done.fetch_add(1, Ordering::Relaxed);
            }
        });
    }
    while set.join_next().await.is_some() {}
    done.load(Ordering::Relaxed) as f64 / start.elapsed().as_secs_f64()
}

/// Runs the scenario.
pub fn run() {
    let rt = super::runtime();
    rt.block_on(async {
        let server = Server::start(Behavior::OneShot);
        let pool = moor_tokio::Pool::builder()
            .max_per_key(TASKS)
            .connect_timeout(Duration::from_secs(5))
            .build()
            .expect("pool");
        let target = Target::new("tcp", "127.0.0.1", server.addr.port());
        let (mut p, mut m) = (Vec::new(), Vec::new());
        // Interleaved, so drift on a noisy machine hits both alike.
        for _ in 0..REPS {
            p.push(plain(server.addr).await);
            m.push(pooled(&pool, &target).await);
        }
        let (p, m) = (median(p), median(m));
        println!("connect-rate plain TcpStream::connect: {p:.0} conns/s");
        println!("connect-rate moor pool (fresh, used once, discarded): {m:.0} conns/s");
        println!("connect-rate: ratio moor/plain = {:.2}", m / p);
    });
}
