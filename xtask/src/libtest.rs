//! Running a lab's test file with a time limit, and reading libtest's results.
//!
//! We read libtest's plain output, whose per-test lines (`test name ... ok`) and `failures:`
//! section have been stable for years; `--format json` needs a nightly flag, and nextest's JUnit
//! needs a tool a student may not have. Every run is bounded: on timeout the whole process tree
//! is killed (the servers a test started sit in their own process groups, so we find them by
//! parentage in `/proc`), and the tests that did not report are failed with the reason.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::Context;
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

/// What became of one test.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Passed,
    /// Failed, with the first line of its panic message (or why it did not run).
    Failed(String),
}

/// The outcome of a command run with a time limit.
#[derive(Debug)]
pub struct Finished {
    pub success: bool,
    pub timed_out: bool,
    pub stdout: String,
    pub stderr: String,
    pub elapsed: Duration,
}

impl Finished {
    /// The last lines of stderr, for a reason a person can act on.
    pub fn stderr_tail(&self, lines: usize) -> String {
        let all: Vec<&str> = self
            .stderr
            .lines()
            .filter(|l| !l.trim().is_empty())
            .collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }

    /// The first `error` line cargo printed, or the tail of stderr.
    pub fn first_error(&self) -> String {
        let lines: Vec<&str> = self.stderr.lines().collect();
        match lines.iter().position(|l| l.starts_with("error")) {
            // With its place (` --> file:line:column`) when cargo gives one.
            Some(at) => match lines.get(at + 1).map(|l| l.trim_start()) {
                Some(place) if place.starts_with("-->") => format!("{} {place}", lines[at]),
                _ => lines[at].to_string(),
            },
            None => self.stderr_tail(3),
        }
    }
}

/// Runs `command` (its own process group, output to files so no pipe can fill), killing it and
/// everything it started if it runs longer than `limit`.
pub fn run_bounded(mut command: Command, limit: Duration) -> anyhow::Result<Finished> {
    use std::os::unix::process::CommandExt;
    let scratch = tempfile_pair()?;
    command
        .stdin(Stdio::null())
        .stdout(scratch.0.try_clone()?)
        .stderr(scratch.1.try_clone()?)
        .process_group(0);
    let start = Instant::now();
    let mut child = command
        .spawn()
        .with_context(|| format!("cannot run {command:?}"))?;
    let mut timed_out = false;
    let status = loop {
        if let Some(status) = child.try_wait()? {
            break status;
        }
        if start.elapsed() > limit {
            timed_out = true;
            kill_tree(child.id() as i32);
            break child.wait()?;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    // Anything the run left behind (a server of a test killed mid-way) goes too.
    kill_tree(child.id() as i32);
    Ok(Finished {
        success: status.success() && !timed_out,
        timed_out,
        stdout: read_back(&scratch.0)?,
        stderr: read_back(&scratch.1)?,
        elapsed: start.elapsed(),
    })
}

fn tempfile_pair() -> anyhow::Result<(std::fs::File, std::fs::File)> {
    Ok((tempfile::tempfile()?, tempfile::tempfile()?))
}

fn read_back(file: &std::fs::File) -> anyhow::Result<String> {
    use std::io::{Read, Seek};
    let mut file = file.try_clone()?;
    file.seek(std::io::SeekFrom::Start(0))?;
    let mut bytes = Vec::new();
    file.read_to_end(&mut bytes)?;
    Ok(String::from_utf8_lossy(&bytes).into_owned())
}

/// Kills `root`'s process group and every process descended from it (found by parentage in
/// `/proc`, since a test's servers run in process groups of their own), leaves first.
fn kill_tree(root: i32) {
    let mut parents: BTreeMap<i32, i32> = BTreeMap::new();
    if let Ok(entries) = std::fs::read_dir("/proc") {
        for entry in entries.flatten() {
            let Ok(pid) = entry.file_name().to_string_lossy().parse::<i32>() else {
                continue;
            };
            let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
                continue;
            };
            // The fields after the command name, which is in parentheses and may hold spaces.
            let Some((_, rest)) = stat.rsplit_once(')') else {
                continue;
            };
            if let Some(ppid) = rest.split_whitespace().nth(1).and_then(|p| p.parse().ok()) {
                parents.insert(pid, ppid);
            }
        }
    }
    let mut tree = vec![root];
    let mut index = 0;
    while index < tree.len() {
        let parent = tree[index];
        tree.extend(
            parents
                .iter()
                .filter(|(_, &p)| p == parent)
                .map(|(&c, _)| c),
        );
        index += 1;
    }
    for &pid in tree.iter().rev() {
        let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
    }
    let _ = nix::sys::signal::killpg(Pid::from_raw(root), Signal::SIGKILL);
}

/// `cargo test -p tests --test <file>` in `workspace`, with `args` after `--`.
pub fn cargo_test(
    workspace: &Path,
    target_dir: Option<&PathBuf>,
    test_file: &str,
    args: &[&str],
) -> Command {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut command = Command::new(cargo);
    command
        .current_dir(workspace)
        .args(["test", "-p", "tests", "--test", test_file, "--"])
        .args(args)
        .env("CARGO_TERM_COLOR", "never");
    if let Some(dir) = target_dir {
        command.env("CARGO_TARGET_DIR", dir);
    }
    command
}

/// One run of a lab's test file: what it lists, what became of each test, and what went wrong
/// with the run as a whole (it did not build, it timed out).
#[derive(Debug, Default)]
pub struct LabRun {
    pub listed: Vec<String>,
    /// An outcome for every test that was run (listed and not filtered out).
    pub outcomes: BTreeMap<String, Outcome>,
    /// Why the run as a whole failed, if it did.
    pub error: Option<String>,
    pub elapsed: Duration,
}

impl LabRun {
    pub fn failed(&self) -> Vec<&str> {
        self.outcomes
            .iter()
            .filter(|(_, o)| matches!(o, Outcome::Failed(_)))
            .map(|(n, _)| n.as_str())
            .collect()
    }
}

/// Lists then runs `test_file` in `workspace` (only `only` when given, by exact name), each step
/// bounded by `limit`. A test with no result gets the run's failure as its reason.
pub fn run_lab(
    workspace: &Path,
    target_dir: Option<&PathBuf>,
    test_file: &str,
    only: Option<&[String]>,
    limit: Duration,
) -> anyhow::Result<LabRun> {
    let start = Instant::now();
    let mut run = LabRun::default();
    let list = run_bounded(
        cargo_test(workspace, target_dir, test_file, &["--list"]),
        limit,
    )?;
    if !list.success {
        run.error = Some(if list.timed_out {
            format!("building the tests took longer than {} s", limit.as_secs())
        } else {
            format!("the tests do not build: {}", list.first_error())
        });
        run.elapsed = start.elapsed();
        return Ok(run);
    }
    run.listed = parse_list(&list.stdout);
    let mut args: Vec<&str> = Vec::new();
    if let Some(only) = only {
        args.push("--exact");
        args.extend(only.iter().map(String::as_str));
    }
    let finished = run_bounded(cargo_test(workspace, target_dir, test_file, &args), limit)?;
    run.outcomes = parse_results(&finished.stdout);
    let expected: Vec<&String> = run
        .listed
        .iter()
        .filter(|name| only.is_none_or(|only| only.contains(name)))
        .collect();
    let missing_reason = if finished.timed_out {
        format!(
            "no result: the test run was stopped after {} s",
            limit.as_secs()
        )
    } else {
        format!(
            "no result: the test run ended early ({})",
            finished.first_error()
        )
    };
    for name in expected {
        run.outcomes
            .entry(name.clone())
            .or_insert_with(|| Outcome::Failed(missing_reason.clone()));
    }
    if finished.timed_out {
        run.error = Some(missing_reason);
    }
    run.elapsed = start.elapsed();
    Ok(run)
}

/// The test names of `--list`'s output (`name: test`).
pub fn parse_list(stdout: &str) -> Vec<String> {
    stdout
        .lines()
        .filter_map(|l| l.strip_suffix(": test"))
        .map(str::to_string)
        .collect()
}

/// Each test's outcome from libtest's plain output. A test that reported nothing (the run was
/// killed, or crashed) is absent: the caller knows which tests it expected.
pub fn parse_results(stdout: &str) -> BTreeMap<String, Outcome> {
    let mut outcomes = BTreeMap::new();
    for line in stdout.lines() {
        // `test name ... ok` (the result may follow other text on the same line when a test
        // printed to the real stdout, so take the word before ` ... `, after `test `).
        let Some((left, result)) = line.split_once(" ... ") else {
            continue;
        };
        let Some((before, name)) = left.trim_end().rsplit_once(' ') else {
            continue;
        };
        if !(before == "test" || before.ends_with(" test")) {
            continue;
        }
        let result = result.trim();
        if result.starts_with("ok") {
            outcomes.insert(name.to_string(), Outcome::Passed);
        } else if result.starts_with("FAILED") {
            outcomes.insert(name.to_string(), Outcome::Failed("failed".to_string()));
        }
    }
    // The reasons: `---- name stdout ----` then the captured output, with the panic message.
    let mut current: Option<String> = None;
    for line in stdout.lines() {
        if let Some(name) = line
            .strip_prefix("---- ")
            .and_then(|l| l.strip_suffix(" stdout ----"))
        {
            current = Some(name.to_string());
            continue;
        }
        if line == "failures:" || line.starts_with("test result:") {
            current = None;
            continue;
        }
        let Some(name) = &current else { continue };
        let Some(Outcome::Failed(reason)) = outcomes.get_mut(name) else {
            continue;
        };
        if reason != "failed" {
            continue;
        }
        if line.contains("panicked at") {
            // The message is on the next line since Rust 1.73; older versions keep it after `'`.
            if let Some((_, message)) = line.split_once("panicked at '") {
                *reason = message.trim_end_matches("',").to_string();
            }
            continue;
        }
        if !line.trim().is_empty() && !line.starts_with("note:") {
            *reason = line.trim().to_string();
        }
    }
    for outcome in outcomes.values_mut() {
        if let Outcome::Failed(reason) = outcome {
            if reason.chars().count() > 300 {
                *reason = reason.chars().take(300).collect::<String>() + "…";
            }
        }
    }
    outcomes
}

#[cfg(test)]
mod tests {
    use super::*;

    const OUTPUT: &str = "
running 4 tests
test epoll::say_reaches_every_other_client ... ok
test a_panic_kills_one_child ... FAILED
test help_lists_the_shared_flags ... ignored
some output a test printed test three_clients ... ok

failures:

---- a_panic_kills_one_child stdout ----

thread 'a_panic_kills_one_child' panicked at tests/tests/lab02_fork.rs:90:5:
assertion `left == right` failed: the others are still served
  left: 1
 right: 2
note: run with `RUST_BACKTRACE=1` environment variable to display a backtrace


failures:
    a_panic_kills_one_child

test result: FAILED. 2 passed; 1 failed; 1 ignored; 0 measured; 0 filtered out; finished in 3.01s
";

    #[test]
    fn results_and_reasons_are_read_from_libtest_output() {
        let outcomes = parse_results(OUTPUT);
        assert_eq!(
            outcomes["epoll::say_reaches_every_other_client"],
            Outcome::Passed
        );
        assert_eq!(outcomes["three_clients"], Outcome::Passed);
        assert_eq!(
            outcomes["a_panic_kills_one_child"],
            Outcome::Failed("assertion `left == right` failed: the others are still served".into())
        );
        assert!(!outcomes.contains_key("help_lists_the_shared_flags"));
        assert_eq!(outcomes.len(), 3);
    }

    #[test]
    fn the_list_is_read_from_list_output() {
        let listed = "a_test: test\nmodule::b: test\n\n2 tests, 0 benchmarks\n";
        assert_eq!(parse_list(listed), ["a_test", "module::b"]);
    }

    #[test]
    fn a_run_past_its_limit_is_killed_with_its_children() {
        let mut command = Command::new("sh");
        // A grandchild in a process group of its own, as a test's server is.
        command.args(["-c", "setsid sleep 30 & echo $!; sleep 30"]);
        let start = Instant::now();
        let finished = run_bounded(command, Duration::from_millis(500)).unwrap();
        assert!(finished.timed_out && !finished.success);
        assert!(start.elapsed() < Duration::from_secs(10));
        let grandchild: i32 = finished.stdout.trim().parse().unwrap();
        // Gone, or a zombie waiting for whoever adopted it: not running.
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let state = std::fs::read_to_string(format!("/proc/{grandchild}/stat"))
                .map(|s| {
                    s.rsplit_once(')')
                        .map(|(_, r)| r.trim().chars().next())
                        .unwrap_or(None)
                })
                .unwrap_or(None);
            if matches!(state, None | Some('Z') | Some('X')) {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "the grandchild {grandchild} still runs: {state:?}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}
