//! A runnable tour of moor-tokio: a loopback echo server, a pool in front of it, and what the
//! pool reports. `cargo run -p moor-tokio --example echo`
//!
//! Shows the three ways a checkout is answered (an idle connection at once, a connection
//! released while it waited, a new connection) and a connection closed instead of reused.

use std::error::Error;
use std::time::Duration;

use moor_tokio::{Pool, Target};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

#[tokio::main]
async fn main() -> Result<(), Box<dyn Error>> {
    // The server: echoes every byte back, one task per connection, loopback only.
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let port = listener.local_addr()?.port();
    let server = tokio::spawn(async move {
        while let Ok((mut socket, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut buf = [0u8; 1024];
                while let Ok(n @ 1..) = socket.read(&mut buf).await {
                    if socket.write_all(&buf[..n]).await.is_err() {
                        break;
                    }
                }
            });
        }
    });

    let pool = Pool::builder()
        .max_per_key(1)
        .request_timeout(Duration::from_secs(5))
        .build()?;
    let target: Target = format!("tcp://127.0.0.1:{port}").parse()?;

    // A new connection (Fresh), used and returned; the next checkout reuses it (Immediate).
    for _ in 0..2 {
        let mut conn = pool.get(&target).await?;
        conn.write_all(b"ping").await?;
        let mut reply = [0u8; 4];
        conn.read_exact(&mut reply).await?;
        println!(
            "{:?}: echoed {:?}",
            conn.from_cache(),
            std::str::from_utf8(&reply)?
        );
    }

    // With one connection per key, a second checkout waits until the first lets go (Deferred).
    let held = pool.get(&target).await?;
    let waiter = {
        let pool = pool.clone();
        let target = target.clone();
        tokio::spawn(async move { pool.get(&target).await.map(|c| c.from_cache()) })
    };
    // Let the waiter queue (bounded: it is a local task, it queues within a few polls).
    for _ in 0..1000 {
        if pool.stats().total.waiters == 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    drop(held);
    println!("{:?}: handed over on release", waiter.await??);

    // A connection the caller no longer trusts is closed instead of returned.
    pool.get(&target).await?.discard();

    let stats = pool.stats();
    println!(
        "stats: {} immediate, {} deferred, {} fresh; {} open, {} idle",
        stats.counters.immediate,
        stats.counters.deferred,
        stats.counters.fresh,
        stats.total.open,
        stats.total.idle
    );
    pool.shutdown().await;
    server.abort();
    Ok(())
}
