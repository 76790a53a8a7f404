//! The command line: the flags every lab shares, and this lab's own.

use clap::Parser;
use common::cli::ServerArgs;
use common::Model;

use crate::readiness::Api;

/// The multiplexing server of lab04: one process, one thread, every client (Multiplexing 방식).
#[derive(Parser, Debug)]
#[command(version, about, long_about = None)]
pub struct Args {
    #[command(flatten)]
    pub server: ServerArgs,

    /// The readiness API the event loop waits with: select (FD_SETSIZE = 1024 limit), poll, or
    /// epoll.
    #[arg(long, value_enum, default_value_t = Api::Epoll)]
    pub api: Api,

    /// Edge-triggered epoll (only with --api epoll): told once per change, so every read,
    /// accept and write must go on until WouldBlock.
    #[arg(long)]
    pub edge: bool,

    /// Narrate every wake-up of the event loop (how many descriptors were ready, and which).
    #[arg(long)]
    pub trace: bool,

    /// Set each client socket's kernel send buffer (SO_SNDBUF) to BYTES instead of letting
    /// Linux size it (up to megabytes): makes partial writes easy to see with a client that
    /// reads slowly.
    #[arg(long, value_name = "BYTES", value_parser = clap::value_parser!(u32).range(1024..=16_777_216))]
    pub send_buffer: Option<u32>,
}

/// An event loop accepts fast, but a burst of a thousand connects should not overflow the queue.
const DEFAULT_BACKLOG: i32 = 1024;

impl Args {
    /// Parses the command line, and exits with status 2 on a bad one (`--edge` without epoll).
    pub fn parse_checked() -> Args {
        let args: Args = common::cli::parse(Model::Multiplex, DEFAULT_BACKLOG);
        if args.edge && args.api != Api::Epoll {
            common::exit_with_usage_error(
                "--edge is a mode of epoll only: use it with --api epoll (select and poll are always level-triggered)",
            );
        }
        args
    }
}
