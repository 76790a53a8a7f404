//! lab02's command line: the flags every server takes, and the three ways its parent can run.

use clap::Parser;
use common::cli::ServerArgs;
use common::Model;

/// The fork server of lab02: a child process per client (다중 접속 서버, 포크 방식).
#[derive(Parser, Debug)]
#[command(version, about, long_about = None)]
pub struct Args {
    #[command(flatten)]
    pub server: ServerArgs,

    /// Pre-forked mode (UNP ch. 30): fork N children at startup, each blocking in accept() on the
    /// shared listening socket and serving clients one after another; a child that ends is
    /// replaced, so the pool stays at N (and at most N clients are served at once).
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..=64))]
    prefork: Option<u32>,

    /// Fork-per-client mode: at most N children at once. At the cap the server stops calling
    /// accept() until a child ends, so new clients wait in the accept queue instead of forking
    /// the machine to death.
    #[arg(long, value_name = "N", default_value_t = 256,
          value_parser = clap::value_parser!(u32).range(1..=10_000))]
    max_children: u32,

    /// For the tutorial only: never reap a child while running, so every child that ends stays
    /// a zombie (`<defunct>` in `ps`) until the server stops. Zombies still count for
    /// --max-children.
    #[arg(long, conflicts_with = "prefork")]
    no_reap: bool,
}

/// How the parent runs, as the flags ask.
pub enum Mode {
    /// The default: a child per client, at most `max_children` at once, reaped as each ends.
    ForkPerClient { max_children: usize },
    /// `--no-reap`: the same, except that the children that end stay zombies until we stop.
    NoReap { max_children: usize },
    /// `--prefork N`: `workers` children forked up front (see prefork.rs).
    Prefork { workers: u32 },
}

/// The usual `listen()` backlog: clients arrive only while the parent is between two
/// `accept()`s (or at --max-children), so the queue seldom holds anyone.
const DEFAULT_BACKLOG: i32 = 128;

/// Parses the command line (exits with status 2 on bad usage).
pub fn parse() -> Args {
    common::cli::parse(Model::Fork, DEFAULT_BACKLOG)
}

impl Args {
    /// Which of the three ways to run.
    pub fn mode(&self) -> Mode {
        let max_children = self.max_children as usize;
        match self.prefork {
            Some(workers) => Mode::Prefork { workers },
            None if self.no_reap => Mode::NoReap { max_children },
            None => Mode::ForkPerClient { max_children },
        }
    }
}
