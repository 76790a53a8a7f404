//! `cargo xtask`: the course's own tasks, run from anywhere in the workspace.
//!
//! The cargo-xtask convention: project automation is a normal Rust package of the workspace, so
//! it needs nothing but cargo, and `.cargo/config.toml` makes `cargo xtask <task>` an alias for
//! `cargo run --package xtask -- <task>`.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use clap::{Parser, Subcommand};

mod check_handout;
mod classroom;
mod grade;
mod handout;
mod libtest;
mod markers;
mod points;
mod tutorial;
mod workspace;

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
    /// Write the student handout into DIR: the workspace with each marked task's code replaced by
    /// a `todo!()` naming the task (in the chosen labs; the others stay whole), a README that says
    /// what to do, and the GitHub Classroom workflow.
    Handout {
        dir: PathBuf,
        /// The labs to hand out, e.g. lab02,lab05 (default: all).
        #[arg(long, value_delimiter = ',')]
        labs: Option<Vec<String>>,
        /// Write into DIR even if it is not empty (its files of the same names are replaced).
        #[arg(long)]
        force: bool,
    },
    /// Check that every task is graded: the reference passes each lab's tests, the handout fails
    /// them, and each task alone makes at least one named test fail (the map goes into GRADING.md).
    CheckHandout {
        /// The labs to check (default: all with marked tasks).
        #[arg(long, value_delimiter = ',')]
        labs: Option<Vec<String>>,
        /// The longest one build or test run may take.
        #[arg(long, default_value_t = 600)]
        timeout_secs: u64,
    },
    /// Run the acceptance tests of the chosen labs and print the points (tests/points.toml).
    Grade(grade::Options),
    /// Replay the tutorials' steps in real terminals (tmux), as a student types them, and compare
    /// each screen with the output the tutorial prints.
    Tutorial(tutorial::Options),
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
        Task::Handout { dir, labs, force } => handout::run(&dir, labs.as_deref(), force).map(drop),
        Task::CheckHandout { labs, timeout_secs } => {
            check_handout::run(labs.as_deref(), Duration::from_secs(timeout_secs))
        }
        Task::Grade(options) => grade::run(options),
        Task::Tutorial(options) => tutorial::run(options),
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
