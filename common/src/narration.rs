//! Narration: what a server tells the student on stderr while it works.
//!
//! Every line says *when* (seconds since the server started), *who* (model, process id and OS
//! thread id) and *what*:
//!
//! ```text
//! [  0.000s fork pid=4242 tid=4242] listening on 127.0.0.1:7002 (backlog 128)
//! [  1.532s fork pid=4242 tid=4242] accepted client 1 from 127.0.0.1:51234
//! [  1.533s fork pid=4250 tid=4250] child serving client 1
//! ```
//!
//! Narration is for connection events (accepted, forked, reaped, closed), never for every request,
//! so that it does not cost anything a benchmark would notice; `--quiet` turns it off. Only the
//! `listening on` line goes to stdout, because tests and scripts read it.

use std::fmt;
use std::io::Write;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::OnceLock;
use std::time::Instant;

use crate::protocol::Model;

static MODEL: OnceLock<Model> = OnceLock::new();
static STARTED: OnceLock<Instant> = OnceLock::new();
static QUIET: AtomicBool = AtomicBool::new(false);

/// Sets the model word shown in every line and starts the clock. Called once, at startup.
pub fn init(model: Model, quiet: bool) {
    let _ = MODEL.set(model);
    let _ = STARTED.set(Instant::now());
    QUIET.store(quiet, Ordering::Relaxed);
}

/// The id of the calling process.
pub fn pid() -> u32 {
    std::process::id()
}

/// The kernel's id of the calling thread (`gettid(2)`). In a single-threaded process it equals
/// the pid; every thread of a process has its own. `ps -eLf` shows it in the LWP column.
pub fn tid() -> u32 {
    nix::unistd::gettid().as_raw() as u32
}

/// Writes one narration line to stderr. Use the [`narrate!`](crate::narrate!) macro.
pub fn emit(args: fmt::Arguments<'_>) {
    if QUIET.load(Ordering::Relaxed) {
        return;
    }
    write_line(args);
}

/// Writes a warning line to stderr, formatted like narration but shown even with `--quiet`:
/// `--quiet` is for measurements, and must not hide that the server is exposed, for example.
pub fn warn(args: fmt::Arguments<'_>) {
    write_line(format_args!("WARNING: {args}"));
}

fn write_line(args: fmt::Arguments<'_>) {
    let elapsed = STARTED
        .get()
        .map(|t| t.elapsed().as_secs_f64())
        .unwrap_or(0.0);
    let model = MODEL.get().map(|m| m.word()).unwrap_or("server");
    // One write_all of one formatted line, so lines from several threads or processes do not
    // interleave in the middle (stderr is unbuffered, and small writes to a pipe are atomic).
    let line = format!(
        "[{elapsed:7.3}s {model} pid={} tid={}] {args}\n",
        pid(),
        tid()
    );
    let _ = std::io::stderr().lock().write_all(line.as_bytes());
}

/// Prints a narration line to stderr, like `eprintln!`, prefixed with time, model, pid and tid.
#[macro_export]
macro_rules! narrate {
    ($($arg:tt)*) => {
        $crate::narration::emit(format_args!($($arg)*))
    };
}
