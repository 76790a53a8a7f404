//! The command-line flags every server shares, parsed with clap.
//!
//! A lab declares its own `Args` struct, puts `#[command(flatten)] server: ServerArgs` in it for the
//! shared flags, adds its own (`--prefork`, `--api`, ...) and calls [`parse`], which fills in the
//! lab's default port and backlog. Bad usage exits with status 2 and a clear message (clap's rule).

use std::net::{IpAddr, SocketAddr};

use clap::{Args, CommandFactory, FromArgMatches, Parser};

use crate::protocol::Model;

/// The flags of the contract that every server takes.
#[derive(Args, Clone, Debug)]
pub struct ServerArgs {
    /// Address to listen on. Keep 127.0.0.1 unless you mean to let other machines in.
    #[arg(long, default_value = "127.0.0.1")]
    pub host: IpAddr,

    /// Port to listen on; 0 lets the OS choose (the `listening on` line tells which).
    #[arg(long)]
    pub port: u16,

    /// Length of the accept queue (listen backlog) that listen() creates.
    #[arg(long)]
    pub backlog: i32,

    /// Enable the PANIC command, which crashes whatever serves the client.
    #[arg(long)]
    pub allow_panic: bool,

    /// No narration on stderr (the `listening on` line is still printed).
    #[arg(long)]
    pub quiet: bool,

    /// Close a client that sends nothing for SECS seconds, telling it `BYE idle` (off by default,
    /// so that lab01's lesson - one silent client blocks everyone - stays visible).
    #[arg(long, value_name = "SECS", value_parser = clap::value_parser!(u64).range(1..=86_400))]
    pub idle_timeout: Option<u64>,

    /// Instead of serving: start this server, run N scripted clients against it and print a
    /// timeline of who was greeted and served when.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..=20))]
    pub demo: Option<u32>,

    /// With --demo: also draw the timeline as an SVG picture into FILE (one row per client;
    /// Korean labels when the locale is Korean).
    #[arg(long, value_name = "FILE", requires = "demo")]
    pub svg: Option<std::path::PathBuf>,
}

impl ServerArgs {
    /// `--host` and `--port`: the address to listen on.
    pub fn address(&self) -> SocketAddr {
        SocketAddr::new(self.host, self.port)
    }
}

/// Parses the command line of a lab's server, with `model`'s default port and `backlog` as the
/// default listen backlog. Exits with status 2 on bad usage (status 0 for `--help`).
pub fn parse<A: Parser>(model: Model, backlog: i32) -> A {
    let mut matches = A::command()
        .mut_arg("port", |a| {
            a.default_value(model.default_port().to_string())
                .required(false)
        })
        .mut_arg("backlog", |a| {
            a.default_value(backlog.to_string())
                .required(false)
                .value_parser(clap::value_parser!(i32).range(1..=65535))
        })
        .get_matches();
    A::from_arg_matches_mut(&mut matches).unwrap_or_else(|e| e.exit())
}

/// The flags of every client.
#[derive(Parser, Clone, Debug)]
pub struct ClientArgs {
    /// Address of the server.
    #[arg(long, default_value = "127.0.0.1")]
    pub host: IpAddr,

    /// Port of the server.
    #[arg(long)]
    pub port: u16,
}

impl ClientArgs {
    /// Parses a client's command line with `model`'s default port.
    pub fn parse_for(model: Model) -> Self {
        let mut matches = Self::command()
            .mut_arg("port", |a| {
                a.default_value(model.default_port().to_string())
                    .required(false)
            })
            .get_matches();
        Self::from_arg_matches_mut(&mut matches).unwrap_or_else(|e| e.exit())
    }
}
