//! What every netlabs lab shares, so that each lab's own code is only its server model.
//!
//! - [`protocol`]: the line protocol (requests, replies, limits);
//! - [`framing`]: cutting a byte stream into lines, safely;
//! - [`session`]: answering requests, and the blocking read-answer loop;
//! - [`cli`]: the shared command-line flags;
//! - [`listener`]: the listening socket and the `listening on` line;
//! - [`narration`]: what the server tells the student on stderr (the [`narrate!`] macro);
//! - [`signals`]: stopping cleanly on SIGINT/SIGTERM;
//! - [`fork`]: a fork server's plumbing: race-free waits, its table of children, stopping them;
//! - [`client`]: the interactive client.

pub mod cli;
pub mod client;
pub mod fork;
pub mod framing;
pub mod listener;
pub mod narration;
pub mod protocol;
pub mod session;
pub mod signals;

pub use protocol::Model;

/// Prints `error: <message>` on stderr and exits with status 2, the contract's status for bad
/// usage and for an address that cannot be bound. No panic, no backtrace.
pub fn exit_with_usage_error(message: &str) -> ! {
    eprintln!("error: {message}");
    std::process::exit(2);
}

/// Prints `error: <message>` on stderr and exits with status 1: a failure while running.
pub fn exit_with_error(message: &str) -> ! {
    eprintln!("error: {message}");
    std::process::exit(1);
}
