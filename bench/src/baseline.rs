//! The baseline: what a Rust programmer would write in production, an async server on tokio.
//!
//! It speaks the part of the protocol the bench uses (`HELLO` on connect, `ECHO`, `QUIT`, and
//! `ERR` for anything else) and runs as its own process (`bench serve-tokio`, the bench binary
//! started again by itself) so that its CPU time and memory are read from `/proc` exactly like the
//! labs' servers. Two runtimes:
//!
//! - `current`: tokio's current-thread runtime, one thread running every connection's task: the
//!   same shape as lab04's epoll loop (tokio uses epoll underneath), with tasks instead of a
//!   hand-written state machine;
//! - `multi`: the multi-thread runtime, one worker thread per core with work stealing.
//!
//! Each connection reads through a `BufReader` (8 KiB, allocated when the connection starts):
//! that buffer is most of what an idle connection costs here.

use std::net::SocketAddr;

use anyhow::{Context, Result};
use clap::{Args, ValueEnum};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};

/// The longest request line (the contract's 4,096 bytes, plus `\r\n`).
const MAX_LINE: u64 = 4096 + 2;

/// Which tokio runtime serves the connections.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Flavor {
    /// One thread for everything.
    Current,
    /// A worker thread per core.
    Multi,
}

/// `bench serve-tokio`: the baseline server's flags (a subset of the contract's).
#[derive(Args, Debug, Clone)]
pub struct ServeArgs {
    /// Which runtime.
    #[arg(long, value_enum, default_value = "current")]
    pub runtime: Flavor,
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1")]
    pub host: std::net::IpAddr,
    /// Port (0: the OS chooses; the `listening on` line tells which).
    #[arg(long, default_value_t = 0)]
    pub port: u16,
    /// listen() backlog.
    #[arg(long, default_value_t = 4096)]
    pub backlog: i32,
    /// Accepted for symmetry with the labs: this server never narrates.
    #[arg(long)]
    pub quiet: bool,
}

/// Runs the baseline server until SIGTERM or SIGINT; then returns (exit status 0).
pub fn serve(args: &ServeArgs) -> Result<()> {
    let runtime = match args.runtime {
        Flavor::Current => tokio::runtime::Builder::new_current_thread(),
        Flavor::Multi => tokio::runtime::Builder::new_multi_thread(),
    }
    .enable_all()
    .build()
    .context("cannot build the tokio runtime")?;
    let word = match args.runtime {
        Flavor::Current => "tokio-ct",
        Flavor::Multi => "tokio-mt",
    };
    runtime.block_on(accept_loop(args.clone(), word))
}

async fn accept_loop(args: ServeArgs, word: &'static str) -> Result<()> {
    use tokio::signal::unix::{signal, SignalKind};
    let listener = listen(SocketAddr::new(args.host, args.port), args.backlog)?;
    println!("listening on {}", listener.local_addr()?);
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                // EMFILE and friends: skip this one and keep serving the others.
                if let Ok((stream, _)) = accepted {
                    tokio::spawn(serve_client(stream, word));
                }
            }
            _ = term.recv() => break,
            _ = int.recv() => break,
        }
    }
    // Dropping the runtime (when `serve` returns) drops every task and so closes every socket.
    Ok(())
}

/// The listening socket, with our backlog (std's `bind` always asks for 128).
fn listen(addr: SocketAddr, backlog: i32) -> Result<TcpListener> {
    use socket2::{Domain, Socket, Type};
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, None)?;
    socket.set_reuse_address(true)?;
    socket.bind(&addr.into())?;
    socket.listen(backlog)?;
    socket.set_nonblocking(true)?;
    Ok(TcpListener::from_std(socket.into())?)
}

/// One client: `HELLO`, then a reply per line until `QUIT` or the end of the stream.
async fn serve_client(stream: TcpStream, word: &'static str) -> std::io::Result<()> {
    // TCP_NODELAY, like every lab's server (common::session::prepare_client_socket): a reply
    // leaves at once instead of waiting for the client's ACK of the previous one.
    stream.set_nodelay(true)?;
    let (read, mut write) = stream.into_split();
    let hello = format!(
        "HELLO {word} pid={} tid={}\n",
        std::process::id(),
        nix::unistd::gettid()
    );
    write.write_all(hello.as_bytes()).await?;
    let mut reader = BufReader::new(read);
    let mut line = Vec::with_capacity(128);
    let mut reply = Vec::with_capacity(128);
    loop {
        line.clear();
        // At most one line's worth: a client cannot make us hold more.
        let n = (&mut reader)
            .take(MAX_LINE)
            .read_until(b'\n', &mut line)
            .await?;
        if n == 0 {
            return Ok(());
        }
        if line.last() != Some(&b'\n') {
            if n as u64 == MAX_LINE {
                write.write_all(b"ERR line too long\n").await?;
                // Throw away the rest of that line.
                let mut rest = Vec::new();
                reader.read_until(b'\n', &mut rest).await?;
                continue;
            }
            return Ok(()); // closed in the middle of a line
        }
        let text = line.strip_suffix(b"\n").unwrap_or(&line);
        let text = text.strip_suffix(b"\r").unwrap_or(text);
        let (verb, rest) = match text.iter().position(|&b| b == b' ') {
            Some(space) => (&text[..space], &text[space + 1..]),
            None => (text, &b""[..]),
        };
        reply.clear();
        if verb.eq_ignore_ascii_case(b"ECHO") {
            reply.extend_from_slice(b"OK");
            if !rest.is_empty() {
                reply.push(b' ');
                reply.extend_from_slice(rest);
            }
            reply.push(b'\n');
        } else if verb.eq_ignore_ascii_case(b"QUIT") {
            write.write_all(b"OK bye\n").await?;
            return Ok(());
        } else {
            reply.extend_from_slice(b"ERR the tokio baseline only knows ECHO and QUIT\n");
        }
        write.write_all(&reply).await?;
    }
}
