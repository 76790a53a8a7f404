//! `cargo xtask tutorial [labNN] [--lang en|ko]`: every step of the tutorials, typed in real
//! terminals the way a student types it, and each screen compared with the tutorial.
//!
//! The tutorials are the course's interface, and they break where no test looks: in an
//! interactive shell (a background job stopped by SIGTTIN, a server left running on a port the
//! next step needs). So each lab's tutorial, English (`labNN-*/README.md`) and Korean
//! (`book/ko/src/labs/labNN-*.md`), is played in tmux ([`tmux`]), in a scratch copy of the
//! workspace under `target/replay/` that shares the workspace's target dir (nothing is rebuilt
//! from scratch). [`parse`] says how blocks and terminals are read from the tutorial, [`screen`]
//! how a screen is compared with it. A lab whose ports are taken is skipped, with the port named.

mod parse;
mod play;
mod screen;
mod tmux;

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use regex::Regex;

use crate::workspace::{self, Lab};

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Lang {
    En,
    Ko,
}

#[derive(Debug, Clone, clap::Args)]
pub struct Options {
    /// The lab to replay (lab01 or lab01-iterative; default: every lab).
    lab: Option<String>,
    /// The language (default: both).
    #[arg(long, value_enum)]
    lang: Option<Lang>,
    /// The longest a command's output may take to appear.
    #[arg(long, default_value_t = 20)]
    timeout_secs: u64,
    /// The longest a `cargo` command may take (it may build).
    #[arg(long, default_value_t = 300)]
    build_timeout_secs: u64,
    /// Print each line as it is typed.
    #[arg(long, short)]
    verbose: bool,
}

static INTERRUPTED: AtomicBool = AtomicBool::new(false);

extern "C" fn on_signal(_: nix::libc::c_int) {
    INTERRUPTED.store(true, Ordering::SeqCst);
}

/// Fails once Ctrl-C (SIGINT), SIGTERM or SIGHUP has come: every wait calls it, so the replay
/// unwinds and the terminals' drop kills what they started.
pub fn check_interrupted() -> anyhow::Result<()> {
    if INTERRUPTED.load(Ordering::SeqCst) {
        bail!("interrupted");
    }
    Ok(())
}

fn catch_signals() -> anyhow::Result<()> {
    use nix::sys::signal::{sigaction, SaFlags, SigAction, SigHandler, SigSet, Signal};
    let action = SigAction::new(
        SigHandler::Handler(on_signal),
        SaFlags::SA_RESTART,
        SigSet::empty(),
    );
    for signal in [Signal::SIGINT, Signal::SIGTERM, Signal::SIGHUP] {
        // SAFETY: the handler only stores to an atomic, which is async-signal-safe.
        unsafe { sigaction(signal, &action) }.context("sigaction")?;
    }
    Ok(())
}

/// One tutorial: a lab in one language.
struct Tutorial {
    lab: Lab,
    lang: Lang,
    /// Relative to the workspace root.
    file: PathBuf,
}

impl Tutorial {
    fn name(&self) -> String {
        format!(
            "{} ({})",
            self.lab.name,
            match self.lang {
                Lang::En => "en",
                Lang::Ko => "ko",
            }
        )
    }
}

enum Outcome {
    Passed { steps: usize },
    Failed { step: String, report: String },
    Skipped(String),
}

pub fn run(options: Options) -> anyhow::Result<()> {
    catch_signals()?;
    let root = crate::workspace_root();
    let labs = workspace::chosen_labs(&root, options.lab.as_ref().map(std::slice::from_ref))?;
    let langs = match options.lang {
        Some(lang) => vec![lang],
        None => vec![Lang::En, Lang::Ko],
    };
    let mut tutorials = Vec::new();
    for lab in &labs {
        for &lang in &langs {
            let file = match lang {
                Lang::En => PathBuf::from(&lab.dir).join("README.md"),
                Lang::Ko => PathBuf::from("book/ko/src/labs").join(format!("{}.md", lab.dir)),
            };
            tutorials.push(Tutorial {
                lab: lab.clone(),
                lang,
                file,
            });
        }
    }

    let started = Instant::now();
    let scratch = prepare_scratch(&root)?;
    let packages: Vec<&str> = labs.iter().map(|l| l.dir.as_str()).collect();
    build(
        &scratch,
        &packages,
        Duration::from_secs(options.build_timeout_secs),
    )?;
    eprintln!(
        "scratch copy {} ready in {:.0?}",
        scratch.display(),
        started.elapsed()
    );

    let timeouts = play::Timeouts {
        output: Duration::from_secs(options.timeout_secs),
        build: Duration::from_secs(options.build_timeout_secs),
    };
    let mut results = Vec::new();
    for tutorial in &tutorials {
        check_interrupted()?;
        let started = Instant::now();
        let outcome = replay(&root, &scratch, tutorial, timeouts, options.verbose)?;
        let took = started.elapsed();
        match &outcome {
            Outcome::Passed { steps } => {
                eprintln!("{}: {steps} steps passed in {took:.1?}", tutorial.name())
            }
            Outcome::Failed { step, report } => eprintln!(
                "{}: FAILED at {step} ({took:.1?})\n{report}",
                tutorial.name()
            ),
            Outcome::Skipped(why) => eprintln!("{}: skipped: {why}", tutorial.name()),
        }
        results.push((tutorial.name(), outcome, took));
    }

    println!("\n== tutorial replay ({:.0?} in all)", started.elapsed());
    let mut failed = 0;
    for (name, outcome, took) in &results {
        let what = match outcome {
            Outcome::Passed { steps } => format!("passed ({steps} steps)"),
            Outcome::Failed { step, .. } => {
                failed += 1;
                format!("FAILED at {step}")
            }
            Outcome::Skipped(why) => format!("skipped: {why}"),
        };
        println!("{name:<10} {:>6.1}s  {what}", took.as_secs_f64());
    }
    if failed > 0 {
        bail!("{failed} tutorial(s) do not play as written (the reports above name the steps)");
    }
    Ok(())
}

fn replay(
    root: &Path,
    scratch: &Path,
    tutorial: &Tutorial,
    timeouts: play::Timeouts,
    verbose: bool,
) -> anyhow::Result<Outcome> {
    let path = root.join(&tutorial.file);
    let markdown = std::fs::read_to_string(&path)
        .with_context(|| format!("cannot read {}", path.display()))?;
    for port in ports(&markdown) {
        if TcpListener::bind(("127.0.0.1", port)).is_err() {
            return Ok(Outcome::Skipped(format!(
                "port {port} is in use (the tutorial's servers listen on it); free it and run again"
            )));
        }
    }
    let steps = parse::parse(&markdown);
    if steps.is_empty() {
        bail!("{} has no `## Step N` sections", tutorial.file.display());
    }
    let terminals = tmux::Terminals::start(scratch, &tutorial.lab.name)?;
    let mut player = play::Player::new(terminals, timeouts);
    player.verbose = verbose;
    for step in &steps {
        if verbose {
            eprintln!("  {}", step.title);
        }
        if let Some(mismatch) = player.step(step)? {
            return Ok(Outcome::Failed {
                step: step.title.clone(),
                report: format!(
                    "  {}\n{}",
                    step.title,
                    mismatch.report(&tutorial.file.to_string_lossy())
                ),
            });
        }
    }
    Ok(Outcome::Passed { steps: steps.len() })
}

/// The tutorial's own ports: the ones its servers listen on (`127.0.0.1:7002`).
fn ports(markdown: &str) -> Vec<u16> {
    let re = Regex::new(r"listening on 127\.0\.0\.1:(\d+)").unwrap();
    let mut ports: Vec<u16> = re
        .captures_iter(markdown)
        .filter_map(|c| c[1].parse().ok())
        .filter(|&p| (7000..7100).contains(&p))
        .collect();
    ports.sort();
    ports.dedup();
    ports
}

/// `target/replay/ws`: the workspace's files, copied only where they changed (so cargo sees
/// unchanged sources as unchanged), with `target` linked to the workspace's target dir.
fn prepare_scratch(root: &Path) -> anyhow::Result<PathBuf> {
    let target = root.join("target");
    let scratch = target.join("replay/ws");
    std::fs::create_dir_all(&scratch)?;
    for file in workspace::source_files(root)? {
        let from = root.join(&file);
        let to = scratch.join(&file);
        if from.is_dir() {
            continue;
        }
        let content = std::fs::read(&from)?;
        if std::fs::read(&to).ok().as_ref() == Some(&content) {
            continue;
        }
        if let Some(parent) = to.parent() {
            std::fs::create_dir_all(parent)?;
        }
        let _ = std::fs::remove_file(&to);
        std::fs::write(&to, &content).with_context(|| format!("cannot write {}", to.display()))?;
        std::fs::set_permissions(&to, std::fs::metadata(&from)?.permissions())?;
    }
    let link = scratch.join("target");
    if std::fs::read_link(&link).is_err() {
        let _ = std::fs::remove_file(&link);
        std::os::unix::fs::symlink("../..", &link)
            .with_context(|| format!("cannot link {}", link.display()))?;
    }
    Ok(scratch)
}

/// The environment the terminals get: ours, without what `cargo run` set for xtask itself.
pub fn clean_env(command: &mut Command) {
    for (key, _) in std::env::vars_os() {
        let key = key.to_string_lossy();
        if (key.starts_with("CARGO_") && key != "CARGO_HOME") || key == "CARGO" || key == "TMUX" {
            command.env_remove(key.as_ref());
        }
    }
}

fn build(scratch: &Path, packages: &[&str], timeout: Duration) -> anyhow::Result<()> {
    let mut command = Command::new("cargo");
    command
        .current_dir(scratch)
        .args(["build", "--quiet", "--bins"]);
    for package in packages {
        command.args(["-p", package]);
    }
    clean_env(&mut command);
    let mut child = command.spawn().context("cannot run cargo")?;
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(status) = child.try_wait()? {
            anyhow::ensure!(
                status.success(),
                "cargo build in {} failed",
                scratch.display()
            );
            return Ok(());
        }
        if Instant::now() > deadline || INTERRUPTED.load(Ordering::SeqCst) {
            let _ = child.kill();
            let _ = child.wait();
            bail!("cargo build in {} did not finish", scratch.display());
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_ports_are_the_servers_listening_ports() {
        let md = "listening on 127.0.0.1:7002\n`nc 127.0.0.1 7002`\nlistening on 127.0.0.1:7003\nlistening on 127.0.0.1:42647";
        assert_eq!(super::ports(md), [7002, 7003]);
    }
}
