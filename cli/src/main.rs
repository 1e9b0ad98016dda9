//! `moor`: see connection pooling pay off on your own machine, with no setup.
//!
//! `moor demo` starts a small request/response server on loopback, runs a fixed number of
//! exchanges through a moor pool and the same number with a fresh connection each, and prints
//! both rates, the speedup, and the pool's own counters.

#![forbid(unsafe_code)]

use std::io::IsTerminal;
use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::builder::RangedU64ValueParser;
use clap::{Parser, Subcommand};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use moor_tokio::rustls;
use moor_tokio::rustls::pki_types::{PrivateKeyDer, ServerName};
use moor_tokio::tokio_rustls::{TlsAcceptor, TlsConnector};
use moor_tokio::{Pool, Target};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

#[derive(Parser)]
#[command(
    name = "moor",
    version,
    about = "Connection management you can watch work"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Pooled vs fresh connections against a loopback server started on the spot.
    Demo {
        /// Exchanges to run each way.
        #[arg(long, default_value_t = 20_000, value_parser = at_least_one(100_000_000))]
        exchanges: usize,
        /// Concurrent client tasks (each holds at most one connection at a time).
        #[arg(long, default_value_t = 8, value_parser = at_least_one(1_000))]
        tasks: usize,
        /// Pool size (connections per host).
        #[arg(long, default_value_t = 8, value_parser = at_least_one(1_000))]
        pool_size: usize,
        /// Also print the pool's events (resolves, connects, closes and why, failures) on
        /// stderr, in place of the progress bar.
        #[arg(short, long)]
        verbose: bool,
        /// Speak TLS, with a certificate made for this run and trusted only by its client: a
        /// fresh connection then also pays a TLS handshake.
        #[arg(long)]
        tls: bool,
    },
}

/// A count from 1 to `max`: zero would make an empty or stalled run, and the bound keeps the
/// demo within one process's file descriptors.
fn at_least_one(max: u64) -> RangedU64ValueParser<usize> {
    RangedU64ValueParser::new().range(1..=max)
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let rt = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("moor: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = match cli.command {
        Command::Demo {
            exchanges,
            tasks,
            pool_size,
            verbose,
            tls,
        } => {
            if verbose {
                tracing_subscriber::fmt()
                    .with_max_level(tracing::Level::DEBUG)
                    .with_writer(std::io::stderr)
                    .init();
            }
            rt.block_on(demo(exchanges, tasks, pool_size, verbose, tls))
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("moor: {e}");
            ExitCode::FAILURE
        }
    }
}

/// The demo's TLS: a self-signed certificate for 127.0.0.1 made on the spot (rcgen), the
/// server's acceptor, and a client configuration that trusts exactly that certificate.
struct Tls {
    acceptor: TlsAcceptor,
    client: Arc<rustls::ClientConfig>,
}

impl Tls {
    fn new() -> Result<Tls, Box<dyn std::error::Error>> {
        let certified = rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_owned()])?;
        let cert = certified.cert.der().clone();
        let key = PrivateKeyDer::Pkcs8(certified.signing_key.serialize_der().into());
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let server = rustls::ServerConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()?
            .with_no_client_auth()
            .with_single_cert(vec![cert.clone()], key)?;
        let mut roots = rustls::RootCertStore::empty();
        roots.add(cert)?;
        let client = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()?
            .with_root_certificates(roots)
            .with_no_client_auth();
        Ok(Tls {
            acceptor: TlsAcceptor::from(Arc::new(server)),
            client: Arc::new(client),
        })
    }
}

/// Echoes 16-byte requests until the client goes.
async fn echo<S: AsyncReadExt + AsyncWriteExt + Unpin>(mut s: S) {
    let mut buf = [0u8; 16];
    while s.read_exact(&mut buf).await.is_ok() {
        if s.write_all(&buf).await.is_err() {
            break;
        }
    }
}

/// A loopback server answering each 16-byte request with the same 16 bytes, on as many
/// requests per connection as the client sends (over TLS when given an acceptor). Listens
/// with a backlog of 4096, so bursts of fresh connections do not overflow the accept queue.
fn start_server(tls: Option<TlsAcceptor>) -> std::io::Result<SocketAddr> {
    use socket2::{Domain, Protocol, Socket, Type};
    let addr = SocketAddr::from(([127, 0, 0, 1], 0));
    let socket = Socket::new(Domain::IPV4, Type::STREAM, Some(Protocol::TCP))?;
    socket.bind(&addr.into())?;
    socket.listen(4096)?;
    socket.set_nonblocking(true)?;
    let listener = TcpListener::from_std(socket.into())?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move {
        while let Ok((s, _)) = listener.accept().await {
            let _ = s.set_nodelay(true);
            let tls = tls.clone();
            tokio::spawn(async move {
                match tls {
                    Some(acceptor) => {
                        if let Ok(s) = acceptor.accept(s).await {
                            echo(s).await;
                        }
                    }
                    None => echo(s).await,
                }
            });
        }
    });
    Ok(addr)
}

async fn exchange<S: AsyncReadExt + AsyncWriteExt + Unpin>(s: &mut S) -> std::io::Result<()> {
    let msg = *b"moor demo ping!\n";
    s.write_all(&msg).await?;
    let mut back = [0u8; 16];
    s.read_exact(&mut back).await?;
    if back != msg {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            "the server's answer is not the echo of the request",
        ));
    }
    Ok(())
}

/// A progress bar on a terminal; none when the output is piped or stderr carries the log.
fn bar(total: usize, label: &str, verbose: bool) -> ProgressBar {
    let pb = ProgressBar::new(total as u64);
    if std::io::stdout().is_terminal() && !verbose {
        pb.set_style(
            ProgressStyle::with_template("{prefix:>8} [{bar:30}] {pos}/{len} {per_sec}")
                .expect("valid template")
                .progress_chars("=> "),
        );
        pb.set_prefix(label.to_owned());
    } else {
        pb.set_draw_target(ProgressDrawTarget::hidden());
    }
    pb
}

/// Runs `total` exchanges over `tasks` tasks, through the pool or, without one, each on a
/// fresh connection (a TLS one with `tls`).
async fn run(
    total: usize,
    tasks: usize,
    pool: Option<(&Pool, &Target)>,
    addr: SocketAddr,
    tls: Option<&Arc<rustls::ClientConfig>>,
    pb: &ProgressBar,
) -> Result<Duration, Box<dyn std::error::Error>> {
    let start = Instant::now();
    let mut set = tokio::task::JoinSet::new();
    for i in 0..tasks {
        let n = total / tasks + usize::from(i < total % tasks);
        let pool = pool.map(|(p, t)| (p.clone(), t.clone()));
        let tls = tls.map(|config| TlsConnector::from(config.clone()));
        let pb = pb.clone();
        set.spawn(async move {
            for _ in 0..n {
                match &pool {
                    Some((p, t)) => exchange(&mut p.get(t).await?).await?,
                    None => {
                        let mut s = TcpStream::connect(addr).await?;
                        s.set_nodelay(true)?;
                        // Close with a reset: thousands of closes in a row would otherwise
                        // leave as many client ports in TIME_WAIT and make a second run fail.
                        socket2::SockRef::from(&s).set_linger(Some(Duration::ZERO))?;
                        match &tls {
                            Some(connector) => {
                                let name = ServerName::IpAddress(addr.ip().into());
                                exchange(&mut connector.connect(name, s).await?).await?;
                            }
                            None => exchange(&mut s).await?,
                        }
                    }
                }
                pb.inc(1);
            }
            Ok::<(), Box<dyn std::error::Error + Send + Sync>>(())
        });
    }
    while let Some(r) = set.join_next().await {
        r?.map_err(|e| e.to_string())?;
    }
    pb.finish_and_clear();
    Ok(start.elapsed())
}

async fn demo(
    exchanges: usize,
    tasks: usize,
    pool_size: usize,
    verbose: bool,
    tls: bool,
) -> Result<(), Box<dyn std::error::Error>> {
    let tls = tls.then(Tls::new).transpose()?;
    let addr = start_server(tls.as_ref().map(|t| t.acceptor.clone()))?;
    let scheme = if tls.is_some() { "tls" } else { "tcp" };
    let target = Target::new(scheme, "127.0.0.1", addr.port());
    println!(
        "moor demo: {exchanges} request/response exchanges over {}, {tasks} tasks, server {addr}",
        scheme.to_ascii_uppercase()
    );
    let mut builder = Pool::builder()
        .max_per_key(pool_size)
        .max_open(pool_size.max(128));
    if let Some(tls) = &tls {
        builder = builder.tls_config(tls.client.clone());
    }
    let pool = builder.build()?;
    let client_tls = tls.as_ref().map(|t| &t.client);
    let pooled = run(
        exchanges,
        tasks,
        Some((&pool, &target)),
        addr,
        client_tls,
        &bar(exchanges, "pooled", verbose),
    )
    .await?;
    let fresh = run(
        exchanges,
        tasks,
        None,
        addr,
        client_tls,
        &bar(exchanges, "fresh", verbose),
    )
    .await?;
    let rate = |d: Duration| exchanges as f64 / d.as_secs_f64();
    let s = pool.stats();
    println!(
        "pooled: {:.0} exchanges/s ({:.2} s)",
        rate(pooled),
        pooled.as_secs_f64()
    );
    println!(
        "fresh connection each: {:.0} exchanges/s ({:.2} s)",
        rate(fresh),
        fresh.as_secs_f64()
    );
    println!("speedup: {:.1}x", rate(pooled) / rate(fresh));
    println!(
        "pool: {} hits ({} immediate, {} deferred), {} fresh connects, {} open, {} idle",
        s.counters.immediate + s.counters.deferred,
        s.counters.immediate,
        s.counters.deferred,
        s.counters.fresh,
        s.total.open,
        s.total.idle
    );
    pool.shutdown().await;
    Ok(())
}
