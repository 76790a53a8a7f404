//! The load generator: async clients on tokio, so that thousands of connections cost the bench
//! little (it must not be the bottleneck; its own CPU is reported beside every figure).
//!
//! Every workload is bounded in time. A connection that is never greeted (the iterative server
//! serves one client at a time; a pool of N serves N) is not an error: it is counted as not
//! greeted, and that count is part of the result.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio::sync::{watch, Semaphore};
use tokio::time::{sleep, timeout_at};

use crate::procfs;

/// CPU used during a measurement window, by the server's process tree and by the bench itself.
#[derive(Clone, Copy, Debug, Default)]
pub struct Cpu {
    /// Server tree CPU seconds.
    pub server: f64,
    /// Load generator CPU seconds.
    pub bench: f64,
}

fn cpu_now(server_pid: i32) -> Cpu {
    Cpu {
        server: procfs::tree_cpu_seconds(server_pid),
        bench: procfs::self_cpu_seconds(),
    }
}

async fn cpu_now_async(server_pid: i32) -> Cpu {
    tokio::task::spawn_blocking(move || cpu_now(server_pid))
        .await
        .unwrap_or_default()
}

/// What a timed workload measured.
#[derive(Debug)]
pub struct Timed {
    /// Connections that received their `HELLO`.
    pub greeted: usize,
    /// Round trips (echo) or whole connections (connect) completed inside the window.
    pub completed: u64,
    /// Failures: a refused or reset connection, a wrong reply.
    pub errors: u64,
    /// Latency of each completed operation, in nanoseconds.
    pub latency: Histogram<u64>,
    /// The length of the measurement window.
    pub window: Duration,
    /// CPU used during the window.
    pub cpu: Cpu,
    /// The first error seen, to explain `errors`.
    pub first_error: Option<String>,
}

/// A latency histogram: 1 ns to 1 hour at 3 significant digits.
fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 3_600_000_000_000, 3).expect("valid bounds")
}

/// `ECHO <S bytes>\n` and the reply it must get.
fn request(size: usize) -> (Arc<Vec<u8>>, Arc<Vec<u8>>) {
    let text: Vec<u8> = (0..size).map(|i| b'a' + (i % 26) as u8).collect();
    let mut request = b"ECHO ".to_vec();
    request.extend_from_slice(&text);
    request.push(b'\n');
    let mut reply = b"OK".to_vec();
    if size > 0 {
        reply.push(b' ');
        reply.extend_from_slice(&text);
    }
    reply.push(b'\n');
    (Arc::new(request), Arc::new(reply))
}

/// A client connection: a buffered read half and a write half.
struct Conn {
    reader: BufReader<tokio::net::tcp::OwnedReadHalf>,
    writer: tokio::net::tcp::OwnedWriteHalf,
    line: Vec<u8>,
}

impl Conn {
    async fn open(addr: SocketAddr) -> std::io::Result<Conn> {
        let stream = TcpStream::connect(addr).await?;
        stream.set_nodelay(true)?;
        let (read, writer) = stream.into_split();
        Ok(Conn {
            reader: BufReader::with_capacity(8192, read),
            writer,
            line: Vec::with_capacity(256),
        })
    }

    /// Reads one line into `self.line`; an error at end of stream.
    async fn read_line(&mut self) -> std::io::Result<()> {
        self.line.clear();
        let n = self.reader.read_until(b'\n', &mut self.line).await?;
        if n == 0 || self.line.last() != Some(&b'\n') {
            return Err(std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                "the server closed the connection",
            ));
        }
        Ok(())
    }

    async fn read_hello(&mut self) -> std::io::Result<()> {
        self.read_line().await?;
        if !self.line.starts_with(b"HELLO ") {
            return Err(wrong("HELLO", &self.line));
        }
        Ok(())
    }

    /// Sends `request` and checks that the reply is `expected`.
    async fn round_trip(&mut self, request: &[u8], expected: &[u8]) -> std::io::Result<()> {
        self.writer.write_all(request).await?;
        self.read_line().await?;
        if self.line != expected {
            return Err(wrong("the echo", &self.line));
        }
        Ok(())
    }
}

fn wrong(what: &str, got: &[u8]) -> std::io::Error {
    let got = String::from_utf8_lossy(&got[..got.len().min(80)])
        .trim_end()
        .to_string();
    std::io::Error::other(format!("expected {what}, got {got:?}"))
}

/// Waits until `greeted` reaches `target`, or stops growing for `stall`, or `limit` passes.
async fn wait_for_greetings(
    greeted: &AtomicUsize,
    target: usize,
    stall: Duration,
    limit: Duration,
) {
    let started = Instant::now();
    let mut last = greeted.load(Ordering::SeqCst);
    let mut last_change = Instant::now();
    loop {
        let now = greeted.load(Ordering::SeqCst);
        if now >= target || started.elapsed() >= limit || last_change.elapsed() >= stall {
            return;
        }
        if now != last {
            last = now;
            last_change = Instant::now();
        }
        sleep(Duration::from_millis(5)).await;
    }
}

/// Collects the first error message and counts them.
#[derive(Default)]
struct Errors {
    count: u64,
    first: Option<String>,
}

impl Errors {
    fn add(&mut self, e: impl std::fmt::Display) {
        self.count += 1;
        if self.first.is_none() {
            self.first = Some(e.to_string());
        }
    }
}

/// `echo`: `conns` connections, one request in flight on each, for `duration`.
///
/// First every connection is opened and waits for its `HELLO` (until all are greeted, or no new
/// one has been for `stall`); then the window opens and each greeted connection does round trips
/// until it closes. A connection greeted later (during the window) joins in then.
pub async fn echo(
    addr: SocketAddr,
    server_pid: i32,
    conns: usize,
    size: usize,
    duration: Duration,
    stall: Duration,
) -> Timed {
    let (req, reply) = request(size);
    let greeted = Arc::new(AtomicUsize::new(0));
    // The window's end, once known.
    let (go_tx, go_rx) = watch::channel(None::<Instant>);
    let mut tasks = Vec::with_capacity(conns);
    for _ in 0..conns {
        let (req, reply, greeted, mut go) = (
            Arc::clone(&req),
            Arc::clone(&reply),
            Arc::clone(&greeted),
            go_rx.clone(),
        );
        tasks.push(tokio::spawn(async move {
            let mut latencies = Vec::new();
            let mut errors = Errors::default();
            let window = go.clone();
            let setup = async {
                let mut conn = Conn::open(addr).await?;
                conn.read_hello().await?;
                // Greeted in time to take part (not after the window closed).
                let in_time = match *window.borrow() {
                    Some(end) => Instant::now() < end,
                    None => true,
                };
                if in_time {
                    greeted.fetch_add(1, Ordering::SeqCst);
                }
                Ok::<_, std::io::Error>(conn)
            };
            let mut over = go.clone();
            let window_over = async move {
                let end = match over.wait_for(Option::is_some).await {
                    Ok(end) => (*end).expect("some"),
                    Err(_) => return,
                };
                tokio::time::sleep_until(end.into()).await;
            };
            let mut conn = tokio::select! {
                conn = setup => match conn {
                    Ok(conn) => conn,
                    Err(e) => { errors.add(e); return (latencies, errors); }
                },
                _ = window_over => return (latencies, errors),
            };
            let end = match go.wait_for(Option::is_some).await {
                Ok(end) => (*end).expect("some"),
                Err(_) => return (latencies, errors),
            };
            while Instant::now() < end {
                let start = Instant::now();
                match timeout_at(end.into(), conn.round_trip(&req, &reply)).await {
                    Ok(Ok(())) => latencies.push(start.elapsed().as_nanos() as u64),
                    Ok(Err(e)) => {
                        errors.add(e);
                        break;
                    }
                    Err(_) => break, // the window closed during this round trip
                }
            }
            (latencies, errors)
        }));
    }
    let limit = stall.max(Duration::from_secs(30));
    wait_for_greetings(&greeted, conns, stall, limit).await;
    let cpu_before = cpu_now_async(server_pid).await;
    let start = Instant::now();
    let _ = go_tx.send(Some(start + duration));
    tokio::time::sleep_until((start + duration).into()).await;
    let cpu_after = cpu_now_async(server_pid).await;
    let mut latency = histogram();
    let mut completed = 0;
    let mut errors = Errors::default();
    for task in tasks {
        if let Ok((latencies, errs)) = task.await {
            completed += latencies.len() as u64;
            for ns in latencies {
                let _ = latency.record(ns.max(1));
            }
            errors.count += errs.count;
            if errors.first.is_none() {
                errors.first = errs.first;
            }
        }
    }
    let window = duration;
    Timed {
        greeted: greeted.load(Ordering::SeqCst),
        completed,
        errors: errors.count,
        latency,
        window,
        cpu: Cpu {
            server: cpu_after.server - cpu_before.server,
            bench: cpu_after.bench - cpu_before.bench,
        },
        first_error: errors.first,
    }
}

/// `connect`: `workers` clients, each in a loop for `duration`: connect, `HELLO`, one `ECHO`,
/// `QUIT`, `OK bye`, and the server's close. Latency is that whole connection's.
pub async fn connect(
    addr: SocketAddr,
    server_pid: i32,
    workers: usize,
    size: usize,
    duration: Duration,
) -> Timed {
    let (req, reply) = request(size);
    let greeted = Arc::new(AtomicUsize::new(0));
    let cpu_before = cpu_now_async(server_pid).await;
    let start = Instant::now();
    let end = start + duration;
    let mut tasks = Vec::with_capacity(workers);
    for _ in 0..workers {
        let (req, reply, greeted) = (Arc::clone(&req), Arc::clone(&reply), Arc::clone(&greeted));
        tasks.push(tokio::spawn(async move {
            let mut latencies = Vec::new();
            let mut errors = Errors::default();
            while Instant::now() < end {
                let t0 = Instant::now();
                let one = async {
                    let mut conn = Conn::open(addr).await?;
                    conn.read_hello().await?;
                    greeted.fetch_add(1, Ordering::SeqCst);
                    conn.round_trip(&req, &reply).await?;
                    conn.round_trip(b"QUIT\n", b"OK bye\n").await?;
                    // Wait for the server's close, so that it (not us) holds the TIME_WAIT.
                    conn.line.clear();
                    let _ = conn.reader.read_until(b'\n', &mut conn.line).await;
                    Ok::<_, std::io::Error>(())
                };
                match timeout_at(end.into(), one).await {
                    Ok(Ok(())) => latencies.push(t0.elapsed().as_nanos() as u64),
                    Ok(Err(e)) => {
                        errors.add(e);
                        // Do not spin on a refusing server.
                        sleep(Duration::from_millis(1)).await;
                    }
                    Err(_) => break,
                }
            }
            (latencies, errors)
        }));
    }
    tokio::time::sleep_until(end.into()).await;
    let cpu_after = cpu_now_async(server_pid).await;
    let mut latency = histogram();
    let mut completed = 0;
    let mut errors = Errors::default();
    for task in tasks {
        if let Ok((latencies, errs)) = task.await {
            completed += latencies.len() as u64;
            for ns in latencies {
                let _ = latency.record(ns.max(1));
            }
            errors.count += errs.count;
            if errors.first.is_none() {
                errors.first = errs.first;
            }
        }
    }
    let window = duration;
    Timed {
        greeted: greeted.load(Ordering::SeqCst),
        completed,
        errors: errors.count,
        latency,
        window,
        cpu: Cpu {
            server: cpu_after.server - cpu_before.server,
            bench: cpu_after.bench - cpu_before.bench,
        },
        first_error: errors.first,
    }
}

/// What holding connections open measured.
#[derive(Debug)]
pub struct Held {
    /// Connections that received their `HELLO`.
    pub greeted: usize,
    /// Greeted connections that then answered one `ECHO` correctly (C10K only).
    pub echoed: usize,
    /// The server's tree while the connections were held.
    pub footprint: procfs::Footprint,
    /// How long it took to open (and greet, and echo) them all.
    pub elapsed: Duration,
    /// Failures.
    pub errors: u64,
    /// The first error seen.
    pub first_error: Option<String>,
}

/// `idle` (and C10K): opens `conns` connections, waits for their `HELLO`s (until all are greeted
/// or none has been for `stall`), optionally sends one `ECHO` on each greeted connection, then
/// reads the server's footprint from `/proc` while all of them are still open, then closes them.
pub async fn hold(
    addr: SocketAddr,
    server_pid: i32,
    conns: usize,
    echo_size: Option<usize>,
    stall: Duration,
) -> Held {
    let (req, reply) = request(echo_size.unwrap_or(0));
    let greeted = Arc::new(AtomicUsize::new(0));
    let echoed = Arc::new(AtomicUsize::new(0));
    let done = Arc::new(AtomicUsize::new(0));
    // Opening thousands of connections at once overflows the SYN queue: a few hundred at a time.
    let opening = Arc::new(Semaphore::new(256));
    let (release_tx, release_rx) = watch::channel(false);
    let started = Instant::now();
    let mut tasks = Vec::with_capacity(conns);
    for _ in 0..conns {
        let (req, reply, greeted, echoed, done, opening, mut release) = (
            Arc::clone(&req),
            Arc::clone(&reply),
            Arc::clone(&greeted),
            Arc::clone(&echoed),
            Arc::clone(&done),
            Arc::clone(&opening),
            release_rx.clone(),
        );
        tasks.push(tokio::spawn(async move {
            let work = async {
                let permit = opening.acquire().await.expect("never closed");
                let mut conn = Conn::open(addr).await?;
                drop(permit);
                conn.read_hello().await?;
                greeted.fetch_add(1, Ordering::SeqCst);
                if echo_size.is_some() {
                    conn.round_trip(&req, &reply).await?;
                    echoed.fetch_add(1, Ordering::SeqCst);
                }
                Ok::<_, std::io::Error>(conn)
            };
            let result = tokio::select! {
                result = work => Some(result),
                _ = release.wait_for(|r| *r) => None,
            };
            done.fetch_add(1, Ordering::SeqCst);
            match result {
                Some(Ok(conn)) => {
                    // Hold it open until the measurement is taken.
                    let _ = release.wait_for(|r| *r).await;
                    drop(conn);
                    None
                }
                Some(Err(e)) => Some(e.to_string()),
                None => None,
            }
        }));
    }
    // "Greeted" is progress for idle; for C10K a connection is finished once it has echoed.
    let progress = if echo_size.is_some() { &done } else { &greeted };
    wait_for_greetings(progress, conns, stall, Duration::from_secs(120)).await;
    let elapsed = started.elapsed();
    let footprint = tokio::task::spawn_blocking(move || procfs::footprint(server_pid, true))
        .await
        .unwrap_or_default();
    let (greeted_held, echoed_held) = (
        greeted.load(Ordering::SeqCst),
        echoed.load(Ordering::SeqCst),
    );
    let _ = release_tx.send(true);
    let mut errors = Errors::default();
    for task in tasks {
        if let Ok(Some(e)) = task.await {
            errors.add(e);
        }
    }
    Held {
        greeted: greeted_held,
        echoed: echoed_held,
        footprint,
        elapsed,
        errors: errors.count,
        first_error: errors.first,
    }
}

/// What one batch of the soak did.
#[derive(Debug, Default)]
pub struct Batch {
    /// Connections that went through the whole exchange (HELLO, ECHO, QUIT, `OK bye`, close).
    pub completed: usize,
    /// Connections that failed: refused, reset, a wrong reply, or no answer within the limit.
    pub errors: u64,
    /// The first error seen.
    pub first_error: Option<String>,
}

/// How long the soak waits for the server to close a connection after its `OK bye`.
const CLOSE_LIMIT: Duration = Duration::from_secs(5);

/// One batch of the soak: `n` connections opened at once, each doing the whole life of a short
/// client: read `HELLO`, `ECHO soak <batch>.<i>` (a text no other connection sends, so a reply
/// meant for someone else would show), `QUIT`, read `OK bye`, then wait for the server's close
/// (so that the server, not us, holds the TIME_WAIT) and close. Each connection gets `limit` for
/// all of it: a server that serves one client at a time (lab01) greets the batch one by one, the
/// others waiting in its accept queue, so `limit` must cover a whole batch, not one connection.
pub async fn soak_batch(addr: SocketAddr, batch: usize, n: usize, limit: Duration) -> Batch {
    let mut tasks = Vec::with_capacity(n);
    for i in 0..n {
        tasks.push(tokio::spawn(async move {
            let one = async {
                let mut conn = Conn::open(addr).await?;
                conn.read_hello().await?;
                let text = format!("soak {batch}.{i}");
                let request = format!("ECHO {text}\n");
                let reply = format!("OK {text}\n");
                conn.round_trip(request.as_bytes(), reply.as_bytes())
                    .await?;
                conn.round_trip(b"QUIT\n", b"OK bye\n").await?;
                conn.line.clear();
                let close = conn.reader.read_until(b'\n', &mut conn.line);
                match tokio::time::timeout(CLOSE_LIMIT, close).await {
                    Ok(Ok(0)) => Ok(()),
                    Ok(Ok(_)) => Err(wrong("the server's close after OK bye", &conn.line)),
                    Ok(Err(e)) => Err(e),
                    // The server answered but keeps the connection open: a descriptor of it is
                    // still open somewhere in the server (a leak, or a child that inherited it).
                    Err(_) => Err(std::io::Error::new(
                        std::io::ErrorKind::TimedOut,
                        format!("the server did not close the connection within {CLOSE_LIMIT:?} of OK bye"),
                    )),
                }
            };
            match tokio::time::timeout(limit, one).await {
                Ok(result) => result,
                Err(_) => Err(std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    format!("the exchange did not finish within {limit:?}"),
                )),
            }
        }));
    }
    let mut result = Batch::default();
    let mut errors = Errors::default();
    for task in tasks {
        match task.await {
            Ok(Ok(())) => result.completed += 1,
            Ok(Err(e)) => errors.add(e),
            Err(e) => errors.add(e),
        }
    }
    result.errors = errors.count;
    result.first_error = errors.first;
    result
}
