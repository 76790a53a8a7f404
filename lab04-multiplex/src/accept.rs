//! The listening socket's side of the event loop: accepting without ever blocking, and what to
//! do when a client cannot be served.

use std::fs::File;
use std::io::{self, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::fd::{AsRawFd, RawFd};

use common::narrate;
use nix::sys::socket::{setsockopt, sockopt};

/// The listening socket, non-blocking, and a descriptor kept in reserve for when we run out.
pub struct Acceptor {
    listener: TcpListener,
    spare: Option<File>,
}

impl Acceptor {
    /// Makes `listener` non-blocking: `accept()` then returns WouldBlock instead of waiting when
    /// no client is queued, so the loop can never get stuck in it.
    pub fn new(listener: TcpListener) -> io::Result<Self> {
        listener.set_nonblocking(true)?;
        let spare = File::open("/dev/null").ok();
        Ok(Acceptor { listener, spare })
    }

    pub fn fd(&self) -> RawFd {
        self.listener.as_raw_fd()
    }

    /// The next client in the accept queue, or `None` once there is nobody we can take now.
    /// (Edge-triggered, the loop *must* go on until `None`: a client left in the queue would
    /// never be announced again.)
    pub fn next(&mut self) -> Option<(TcpStream, SocketAddr)> {
        loop {
            let e = match self.listener.accept() {
                Ok(accepted) => return Some(accepted),
                Err(e) => e,
            };
            match e.raw_os_error() {
                _ if e.kind() == io::ErrorKind::WouldBlock => return None, // the queue is empty
                _ if e.kind() == io::ErrorKind::Interrupted => {}
                // It gave up while it was queued: say so, and take the next one.
                Some(nix::libc::ECONNABORTED) => narrate!("accept() failed: {e}"),
                Some(nix::libc::EMFILE | nix::libc::ENFILE) => {
                    // Out of descriptors (ulimit -n). The client stays queued, so a
                    // level-triggered loop would be woken for it again at once, forever. The
                    // classic way out: close the descriptor kept in reserve, accept the client
                    // with it, refuse it, and take the reserve back.
                    self.spare = None;
                    let refused = self.listener.accept().map(|(stream, peer)| {
                        narrate!("accept() failed: {e}; refused {peer} with ERR server full, using the spare descriptor");
                        refuse(stream); // and close it, so the spare can be taken back
                    });
                    self.spare = File::open("/dev/null").ok();
                    if refused.is_err() || self.spare.is_none() {
                        return None; // nobody queued after all (Linux checks EMFILE first)
                    }
                }
                // ENOBUFS, ENOMEM...: try again at the next wake-up rather than spin here.
                _ => {
                    narrate!("accept() failed: {e}");
                    return None;
                }
            }
        }
    }
}

/// Makes an accepted socket non-blocking, with `TCP_NODELAY` (each reply leaves at once:
/// `common::session::prepare_client_socket` says why) and `--send-buffer`'s send buffer.
pub fn prepare(stream: &TcpStream, send_buffer: Option<u32>) -> io::Result<()> {
    stream.set_nonblocking(true)?;
    stream.set_nodelay(true)?;
    if let Some(bytes) = send_buffer {
        // setsockopt(SO_SNDBUF): the kernel doubles the value for its bookkeeping.
        setsockopt(stream, sockopt::SndBuf, &(bytes as usize))?;
    }
    Ok(())
}

/// Says `ERR server full` to a client we cannot serve, and closes it.
pub fn refuse(stream: TcpStream) {
    // A fresh socket has an empty send buffer: this short write does not block.
    let _ = (&stream).write_all(b"ERR server full\n");
}
