//! `cargo xtask`: the course's own tasks, run from anywhere in the workspace.
//!
//! The cargo-xtask convention: project automation is a normal Rust package of the workspace, so
//! it needs nothing but cargo, and `.cargo/config.toml` makes `cargo xtask <task>` an alias for
//! `cargo run --package xtask -- <task>`.

use std::path::PathBuf;

use anyhow::Context;
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "cargo xtask", about = "The netlabs course's own tasks")]
struct Cli {
    #[command(subcommand)]
    task: Task,
}

#[derive(Subcommand)]
enum Task {
    /// Install the system tools the course uses (ss, strace, nc, tmux, python3) if they are
    /// missing, with the distribution's packages: runs .ci/install-tools, as CI does.
    InstallTools,
}

/// The workspace root: the folder above this package.
pub fn workspace_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask/ sits in the workspace")
        .to_path_buf()
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.task {
        Task::InstallTools => install_tools(),
    }
}

fn install_tools() -> anyhow::Result<()> {
    let script = workspace_root().join(".ci/install-tools");
    let status = std::process::Command::new("bash")
        .arg(&script)
        .status()
        .with_context(|| format!("cannot run bash {}", script.display()))?;
    anyhow::ensure!(status.success(), "{} failed ({status})", script.display());
    Ok(())
}
