//! What a server does with each request, whatever its model.
//!
//! Most commands behave the same in every lab: `ECHO`, `WHO`, `SLEEP`, `QUIT`, `PANIC`. Two of
//! them are the lesson, because they need memory that several clients *share*:
//!
//! - `INCR` adds one to a counter. Where does the counter live? In lab01 there is one, in the one
//!   process; in lab02 every forked child has its own copy; in lab03 the threads share one; in
//!   lab05 it lives in shared memory.
//! - `SAY` sends a line to every other client. That needs to know who the others are, and a way to
//!   reach them.
//!
//! So a lab implements [`Shared`] (its answer to "where is the shared state?") and [`respond`]
//! does the rest. [`serve_blocking`] is the read-respond loop of the labs that give each client
//! its own process or thread ([`serve_client`] on a `TcpStream`); lab04's event loop calls
//! [`respond`] itself.

use std::io::{self, Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use crate::framing::{Frame, LineReader, ReadFrame};
use crate::narration::{pid, tid};
use crate::protocol::{self, Model, Request};
use crate::{narrate, signals};

/// The state a model shares (or does not share) between its clients.
pub trait Shared {
    /// `INCR`: add one to the counter and return the new value.
    fn incr(&mut self) -> u64;
    /// `SAY`: deliver `text` from client `from` to every other client as `MSG <from> <text>`.
    /// `Err(reason)` is answered as `ERR <reason>`.
    fn say(&mut self, from: u64, text: &str) -> Result<(), String>;
}

/// A `&mut` to shared state is shared state too, so a lab can lend its own to [`serve_blocking`].
impl<T: Shared + ?Sized> Shared for &mut T {
    fn incr(&mut self) -> u64 {
        (**self).incr()
    }

    fn say(&mut self, from: u64, text: &str) -> Result<(), String> {
        (**self).say(from, text)
    }
}

/// A counter in this process's memory, and no way to reach another client: the state of lab01
/// and lab02. The code is the same; *where* a lab makes its counter is the lesson (lab01: once,
/// for every client in turn; lab02: in each forked child, a copy nobody else sees).
#[derive(Debug)]
pub struct Counter {
    value: u64,
    /// Why `SAY` cannot reach anyone, answered as `ERR <why>`.
    alone: &'static str,
}

impl Counter {
    /// A counter at 0; `SAY` will be answered `ERR <alone>`.
    pub fn new(alone: &'static str) -> Counter {
        Counter { value: 0, alone }
    }
}

impl Shared for Counter {
    fn incr(&mut self) -> u64 {
        self.value += 1;
        self.value
    }

    fn say(&mut self, _from: u64, _text: &str) -> Result<(), String> {
        Err(self.alone.into())
    }
}

/// Who is being served, for the `HELLO` and `WHO` replies.
#[derive(Clone, Copy, Debug)]
pub struct Client {
    /// The lab's model.
    pub model: Model,
    /// The client's id, unique among the server's live clients.
    pub id: u64,
    /// Whether `PANIC` is enabled (`--allow-panic`).
    pub allow_panic: bool,
}

/// What to do after a reply.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Next {
    /// Read the next request.
    Continue,
    /// Close the connection (the client sent `QUIT`).
    Close,
}

/// The greeting for a client about to be served: `HELLO <model> pid=.. tid=..`.
pub fn hello(model: Model) -> String {
    protocol::hello(model, pid(), tid())
}

/// Answers one frame. The reply has no `\n`. `SLEEP` blocks the caller; `PANIC` panics.
pub fn respond(frame: Frame, client: &Client, shared: &mut impl Shared) -> (String, Next) {
    let line = match frame {
        Frame::Line(line) => line,
        Frame::TooLong => {
            return (
                protocol::err(protocol::RequestError::LineTooLong),
                Next::Continue,
            )
        }
    };
    let request = match protocol::parse_line(&line) {
        Ok(request) => request,
        Err(reason) => return (protocol::err(reason), Next::Continue),
    };
    let reply = match request {
        Request::Echo(text) => protocol::ok(&text),
        Request::Who => protocol::who(client.model, pid(), tid(), client.id),
        Request::Incr => protocol::ok(&shared.incr().to_string()),
        Request::Sleep(ms) => {
            sleep_unless_stopping(ms);
            protocol::ok(&format!("slept {ms}"))
        }
        Request::Say(text) => match shared.say(client.id, &text) {
            Ok(()) => protocol::ok(""),
            Err(reason) => protocol::err(reason),
        },
        Request::Quit => return (protocol::ok("bye"), Next::Close),
        Request::Panic if client.allow_panic => {
            narrate!("client {} asked for PANIC: panicking now", client.id);
            panic!("PANIC requested by client {}", client.id);
        }
        Request::Panic => protocol::err("PANIC is disabled; start the server with --allow-panic"),
    };
    (reply, Next::Continue)
}

/// Sleeps `ms` milliseconds like a slow task would block, but wakes early if the server is
/// asked to stop, so Ctrl-C is never held up by a 10-second SLEEP.
pub fn sleep_unless_stopping(ms: u64) {
    let until = Instant::now() + Duration::from_millis(ms);
    while !signals::requested() {
        let now = Instant::now();
        if now >= until {
            break;
        }
        std::thread::sleep((until - now).min(Duration::from_millis(50)));
    }
}

/// How a blocking session ended, for the narration.
#[derive(Debug, PartialEq, Eq)]
pub enum Ending {
    /// The client sent `QUIT`.
    Quit,
    /// The client closed the connection; `partial` if in the middle of a line.
    ClientClosed {
        /// An unfinished line was thrown away.
        partial: bool,
    },
    /// The server is shutting down; the client was sent `BYE`.
    Shutdown,
    /// The client sent nothing for the `--idle-timeout`; it was sent `BYE idle`.
    Idle,
    /// Reading or writing failed (for example, the client reset the connection).
    Error(io::ErrorKind),
}

impl std::fmt::Display for Ending {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Ending::Quit => write!(f, "sent QUIT"),
            Ending::ClientClosed { partial: false } => write!(f, "closed the connection"),
            Ending::ClientClosed { partial: true } => {
                write!(
                    f,
                    "closed the connection in the middle of a line (discarded)"
                )
            }
            Ending::Shutdown => write!(f, "was sent BYE: the server is shutting down"),
            Ending::Idle => write!(f, "was silent too long (--idle-timeout): sent BYE idle"),
            Ending::Error(kind) => write!(f, "connection failed: {kind}"),
        }
    }
}

/// Serves one client from `HELLO` to the end, blocking: read a line, answer it, repeat. This is
/// the whole life of a client in the iterative, fork and thread servers.
///
/// `reader` and `writer` are usually the same socket (`&stream` for both: std implements `Read`
/// and `Write` for `&TcpStream`); lab03 passes a writer that other threads can also send `MSG`
/// lines through. `shared` is the lab's [`Shared`] state, or a `&mut` to it.
pub fn serve_blocking(
    reader: impl Read,
    mut writer: impl Write,
    client: &Client,
    mut shared: impl Shared,
) -> Ending {
    let writer = &mut writer;
    let mut lines = LineReader::new(reader);
    if let Err(e) = send_line(writer, &hello(client.model)) {
        return Ending::Error(e.kind());
    }
    loop {
        if signals::requested() {
            let _ = send_line(writer, &protocol::bye(""));
            return Ending::Shutdown;
        }
        let frame = match lines.read_frame() {
            Ok(ReadFrame::Frame(frame)) => frame,
            // A stop signal shuts down our read side (EOF) or interrupts the read (EINTR).
            Ok(ReadFrame::Closed { .. }) | Err(_) if signals::requested() => continue,
            Ok(ReadFrame::Closed { partial }) => return Ending::ClientClosed { partial },
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            // The socket's read timeout (see `prepare_client_socket`) ran out: the client is idle.
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) =>
            {
                let _ = send_line(writer, &protocol::bye("idle"));
                return Ending::Idle;
            }
            Err(e) => return Ending::Error(e.kind()),
        };
        let (reply, next) = respond(frame, client, &mut shared);
        if let Err(e) = send_line(writer, &reply) {
            return Ending::Error(e.kind());
        }
        if next == Next::Close {
            return Ending::Quit;
        }
    }
}

/// Serves the client connected on `stream` in this process or thread, as the iterative and fork
/// servers do: prepares the socket ([`prepare_client_socket`]; a failure is narrated, not fatal),
/// lets a stop signal wake a blocked read ([`signals::wake_on_shutdown`]), then
/// [`serve_blocking`].
pub fn serve_client(
    stream: &TcpStream,
    client: &Client,
    idle_timeout: Option<u64>,
    shared: impl Shared,
) -> Ending {
    if let Err(e) = prepare_client_socket(stream, idle_timeout) {
        narrate!("cannot set the socket options of client {}: {e}", client.id);
    }
    let _watch = signals::wake_on_shutdown(stream);
    serve_blocking(stream, stream, client, shared)
}

/// A client that does not take the bytes sent to it for this long is given up on: a server that
/// writes to it from a poll loop or a shared writer sets it as the socket's write timeout.
pub const WRITE_TIMEOUT: Duration = Duration::from_secs(10);

/// Prepares a client socket for [`serve_blocking`], right after `accept()`:
///
/// - `TCP_NODELAY`: each reply leaves at once. A request/reply protocol gains nothing from
///   Nagle's algorithm (it holds a small write back until the client acknowledges the previous
///   one), and a `BYE` held back that way could be lost: closing a socket with unread input
///   (a client still sending) resets the connection, and what was not sent yet is thrown away.
/// - `--idle-timeout` (`None`: off) as the socket's read timeout: a `read()` that waits longer
///   fails with `EAGAIN`, and [`serve_blocking`] then says `BYE idle` and ends the session.
pub fn prepare_client_socket(stream: &TcpStream, idle_timeout: Option<u64>) -> io::Result<()> {
    stream.set_nodelay(true)?;
    stream.set_read_timeout(idle_timeout.map(Duration::from_secs))
}

/// Sends one line and its `\n` in a single write, so it cannot interleave with another writer's.
pub fn send_line<W: Write>(writer: &mut W, line: &str) -> io::Result<()> {
    let mut bytes = Vec::with_capacity(line.len() + 1);
    bytes.extend_from_slice(line.as_bytes());
    bytes.push(b'\n');
    writer.write_all(&bytes)?;
    writer.flush()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn counter_at(value: u64) -> Counter {
        Counter {
            value,
            alone: "nobody else is here",
        }
    }

    fn client() -> Client {
        Client {
            model: Model::Iterative,
            id: 7,
            allow_panic: false,
        }
    }

    fn answer(line: &[u8], counter: &mut Counter) -> (String, Next) {
        respond(Frame::Line(line.to_vec()), &client(), counter)
    }

    #[test]
    fn commands_get_their_replies() {
        let mut c = counter_at(0);
        assert_eq!(answer(b"ECHO hi", &mut c), ("OK hi".into(), Next::Continue));
        assert_eq!(answer(b"INCR", &mut c).0, "OK 1");
        assert_eq!(answer(b"incr\r", &mut c).0, "OK 2");
        assert_eq!(answer(b"SLEEP 1", &mut c).0, "OK slept 1");
        assert_eq!(answer(b"SAY hi", &mut c).0, "ERR nobody else is here");
        assert_eq!(answer(b"QUIT", &mut c), ("OK bye".into(), Next::Close));
        assert!(answer(b"WHO", &mut c).0.ends_with(" client=7"));
        assert!(answer(b"PANIC", &mut c)
            .0
            .starts_with("ERR PANIC is disabled"));
        assert_eq!(answer(b"\xff", &mut c).0, "ERR invalid utf-8");
        let too_long = respond(Frame::TooLong, &client(), &mut c);
        assert_eq!(too_long, ("ERR line too long".into(), Next::Continue));
    }

    #[test]
    #[should_panic(expected = "PANIC requested by client 7")]
    fn panic_panics_when_allowed() {
        let allowed = Client {
            allow_panic: true,
            ..client()
        };
        respond(Frame::Line(b"PANIC".to_vec()), &allowed, &mut counter_at(0));
    }

    #[test]
    fn a_blocking_session_from_hello_to_quit() {
        let input = b"ECHO a\nINCR\nBOGUS\nQUIT\nECHO never\n";
        let mut output = Vec::new();
        let ending = serve_blocking(&input[..], &mut output, &client(), counter_at(41));
        assert_eq!(ending, Ending::Quit);
        let text = String::from_utf8(output).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert!(lines[0].starts_with("HELLO iterative pid="));
        assert_eq!(
            lines[1..4],
            [
                "OK a",
                "OK 42",
                "ERR unknown command \"BOGUS\"; try ECHO, WHO, INCR, SLEEP, SAY or QUIT"
            ]
        );
        assert_eq!(lines[4], "OK bye");
        assert_eq!(lines.len(), 5);
    }

    #[test]
    fn a_session_that_ends_mid_line() {
        let mut output = Vec::new();
        let ending = serve_blocking(&b"ECHO a\nECH"[..], &mut output, &client(), counter_at(0));
        assert_eq!(ending, Ending::ClientClosed { partial: true });
    }
}
