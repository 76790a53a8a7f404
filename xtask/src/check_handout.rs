//! `cargo xtask check-handout`: every task of the handout is graded by some test.
//!
//! For each lab with marked tasks, in one scratch copy of the workspace (`target/check-handout/ws`):
//!
//! 1. the reference passes the lab's test file (a test that fails and then passes when run again
//!    alone is reported as depending on the machine's load, and the check goes on);
//! 2. for each task alone, the copy with only that task stubbed fails at least one test of the
//!    lab: the map task → failing tests is printed and written into GRADING.md; a task that no
//!    test notices is a defect of the tests (non-zero exit);
//! 3. the handout of the lab (every task stubbed) is formatted, passes `cargo clippy -D
//!    warnings`, and fails its test file (we rerun only the tests the tasks made fail).
//!
//! Why one copy, changed in place from variant to variant, with a target dir of its own: the
//! harness (`tests::binary`) builds a lab's binaries at test time and runs them from the target
//! dir's `debug/`, so two variants must never use one target dir *at the same time*; one after
//! another they can, and the copy's fixed path keeps every crate but the changed lab fresh, so a
//! variant costs one lab's rebuild and its test run. The reference's own `target/` is not shared:
//! cargo names a package's artifacts the same in every copy of the workspace, so a copy building
//! there would replace the reference's binaries, and the reference's tests would run a stubbed
//! server.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};

use crate::handout;
use crate::libtest::{self, LabRun};
use crate::markers::{self, Task};
use crate::points::{self, Points};
use crate::workspace::{self, Lab};

/// GRADING.md's generated section lies between these lines.
pub const BEGIN: &str =
    "<!-- begin: written by `cargo xtask check-handout`; edits here are replaced -->";
pub const END: &str = "<!-- end: written by `cargo xtask check-handout` -->";

/// One task's finding.
#[derive(Debug, Clone)]
pub struct TaskFinding {
    pub lab: String,
    pub number: u32,
    pub title: String,
    pub failing: Vec<String>,
    /// The tests that still pass without the task.
    pub passing: Vec<String>,
}

pub fn run(labs: Option<&[String]>, limit: Duration) -> anyhow::Result<()> {
    let root = crate::workspace_root();
    let started = Instant::now();
    let points = Points::load(&root)?;
    let grading = points::grading_md_rows(&std::fs::read_to_string(root.join("GRADING.md"))?)?;
    let differences = points::compare(&points, &grading);
    if !differences.is_empty() {
        bail!(
            "GRADING.md's tables and tests/points.toml differ (change both together):\n  {}",
            differences.join("\n  ")
        );
    }
    let chosen = workspace::chosen_labs(&root, labs)?;
    let mut marked: Vec<(Lab, Vec<Task>)> = Vec::new();
    for lab in chosen {
        let tasks = workspace::lab_tasks(&root, &lab)?;
        if tasks.is_empty() {
            println!("{}: no marked task: nothing to hand out", lab.name);
        } else {
            marked.push((lab, tasks));
        }
    }
    let scratch = root.join("target/check-handout");
    let ws = scratch.join("ws");
    let target = scratch.join("target");
    let mut findings = Vec::new();
    let mut defects = Vec::new();
    if !marked.is_empty() {
        if ws.exists() {
            std::fs::remove_dir_all(&ws)
                .with_context(|| format!("cannot clear {}", ws.display()))?;
        }
        workspace::copy_workspace(&root, &ws)?;
    }
    for (lab, tasks) in &marked {
        let table = points.lab(&lab.name)?;
        let test_file = table.test_file.as_str();
        let reference_files = task_files(&root, tasks)?;
        let run = |label: &str, only: Option<&[String]>| -> anyhow::Result<LabRun> {
            let run = libtest::run_lab(&ws, Some(&target), test_file, only, limit)?;
            println!(
                "{} {label}: {} run, {} failed ({:.0} s){}",
                lab.name,
                run.outcomes.len(),
                run.failed().len(),
                run.elapsed.as_secs_f64(),
                run.error
                    .as_deref()
                    .map(|e| format!(": {e}"))
                    .unwrap_or_default()
            );
            // The reasons, once each, so a surprising result can be read without a rerun.
            let mut reasons: Vec<&str> = run
                .outcomes
                .values()
                .filter_map(|o| match o {
                    libtest::Outcome::Failed(reason) => Some(reason.as_str()),
                    libtest::Outcome::Passed => None,
                })
                .collect();
            reasons.sort_unstable();
            reasons.dedup();
            for reason in reasons.iter().take(4) {
                let short: String = reason.chars().take(160).collect();
                println!("    {short}");
            }
            Ok(run)
        };

        // 1. The reference.
        let mut reference = run("reference", None)?;
        let failed: Vec<String> = reference.failed().into_iter().map(String::from).collect();
        if reference.error.is_none() && !failed.is_empty() {
            // `cargo test` has already held the reference to every test; a test that fails here
            // and passes when run again alone failed for the machine's load, not for the code.
            // Say so (it is worth a look), and go on checking the tasks.
            let again = run("reference, its failed tests again", Some(&failed))?;
            if again.error.is_none() && again.failed().is_empty() {
                println!(
                    "warning: {}: {} failed once and passed when run again: a test that depends on the machine's load?",
                    lab.name,
                    failed.join(", ")
                );
                for name in &failed {
                    reference
                        .outcomes
                        .insert(name.clone(), libtest::Outcome::Passed);
                }
            }
        }
        if reference.error.is_some() || !reference.failed().is_empty() {
            defects.push(format!(
                "{}: the reference fails --test {test_file}: {}",
                lab.name,
                reference
                    .error
                    .clone()
                    .unwrap_or_else(|| reference.failed().join(", "))
            ));
            continue;
        }

        // The table grades tests this file has (a renamed test would silently score nothing),
        // and every test this file has (a new test left out would count for nothing, and
        // GRADING.md would not say what it checks).
        if let Err(error) = crate::grade::score(&lab.name, table, &reference) {
            defects.push(format!("{}: {error}", lab.name));
        }
        let graded: Vec<&str> = table.tests().collect();
        let ungraded: Vec<&str> = reference
            .outcomes
            .keys()
            .map(String::as_str)
            .filter(|test| !graded.contains(test))
            .collect();
        if !ungraded.is_empty() {
            defects.push(format!(
                "{}: tests/points.toml (and GRADING.md) give no points to {}",
                lab.name,
                ungraded.join(", ")
            ));
        }

        // 2. Each task alone.
        let mut noticed: Vec<String> = Vec::new();
        for task in tasks {
            write_variant(&ws, lab, &reference_files, tasks, Some(task.number))?;
            // A variant that does not build would fail every test for the wrong reason.
            if let Some(error) = build(&ws, &target, &lab.dir, limit)? {
                defects.push(format!(
                    "{} task {} ({}): the lab does not build with this task stubbed (mark whole \
                     statements whose bindings nothing after the task uses): {error}",
                    lab.name, task.number, task.title
                ));
                continue;
            }
            let variant = run(&format!("without task {}", task.number), None)?;
            let failing: Vec<String> = variant.failed().into_iter().map(String::from).collect();
            if failing.is_empty() {
                defects.push(format!(
                    "{} task {} ({}): no test of --test {test_file} fails without it",
                    lab.name, task.number, task.title
                ));
            }
            for name in &failing {
                if !noticed.contains(name) {
                    noticed.push(name.clone());
                }
            }
            findings.push(TaskFinding {
                lab: lab.name.clone(),
                number: task.number,
                title: task.title.clone(),
                passing: variant
                    .outcomes
                    .iter()
                    .filter(|(_, o)| **o == libtest::Outcome::Passed)
                    .map(|(n, _)| n.clone())
                    .collect(),
                failing,
            });
        }

        // 3. The handout of the lab: clippy-clean, and failing.
        write_variant(&ws, lab, &reference_files, tasks, None)?;
        let clippy = clippy(&ws, &target, &lab.dir, limit)?;
        if let Some(problem) = clippy {
            defects.push(format!(
                "{}: the handout does not pass clippy: {problem}",
                lab.name
            ));
        }
        if let Some(problem) = fmt_check(&ws, &lab.dir, limit)? {
            defects.push(format!(
                "{}: the handout is not as cargo fmt writes it: {problem}",
                lab.name
            ));
        }
        if !noticed.is_empty() {
            let handout = run("handout", Some(&noticed))?;
            if handout.error.is_none() && handout.failed().is_empty() {
                defects.push(format!(
                    "{}: the handout passes --test {test_file}",
                    lab.name
                ));
            }
        }
        restore(&ws, &reference_files)?;
    }

    print!("{}", map_table(&findings));
    if !findings.is_empty() {
        let grading = root.join("GRADING.md");
        let text = std::fs::read_to_string(&grading)?;
        let checked: Vec<&str> = marked.iter().map(|(lab, _)| lab.name.as_str()).collect();
        let updated = with_map(&text, &merged_table(&text, &checked, &findings));
        if updated != text {
            std::fs::write(&grading, updated)?;
            println!("GRADING.md: the map of tasks to tests is updated");
        }
    }
    println!(
        "check-handout took {:.0} s",
        started.elapsed().as_secs_f64()
    );
    if !defects.is_empty() {
        bail!(
            "the handout is not fully graded:\n  {}",
            defects.join("\n  ")
        );
    }
    Ok(())
}

/// The reference text of each file that holds a task.
fn task_files(root: &Path, tasks: &[Task]) -> anyhow::Result<BTreeMap<PathBuf, String>> {
    let mut files = BTreeMap::new();
    for task in tasks {
        if !files.contains_key(&task.file) {
            files.insert(
                task.file.clone(),
                std::fs::read_to_string(root.join(&task.file))?,
            );
        }
    }
    Ok(files)
}

/// Writes into `ws` the lab with one task stubbed (`Some(n)`) or all of them (`None`, with the
/// handout's crate-level allow), from the reference's text.
fn write_variant(
    ws: &Path,
    lab: &Lab,
    reference: &BTreeMap<PathBuf, String>,
    tasks: &[Task],
    only: Option<u32>,
) -> anyhow::Result<()> {
    restore(ws, reference)?;
    if only.is_none() {
        let (files, _) = handout::stub_labs(ws, std::slice::from_ref(lab))?;
        for (file, text) in files {
            std::fs::write(ws.join(&file), text)?;
        }
        return Ok(());
    }
    for (file, text) in reference {
        let mut stubbed: Vec<Task> = tasks
            .iter()
            .filter(|t| &t.file == file && Some(t.number) == only)
            .cloned()
            .collect();
        if stubbed.is_empty() {
            continue;
        }
        stubbed.sort_by_key(|t| t.begin_line);
        std::fs::write(
            ws.join(file),
            markers::stub(text, &lab.name, &lab.dir, &stubbed),
        )?;
    }
    Ok(())
}

fn restore(ws: &Path, reference: &BTreeMap<PathBuf, String>) -> anyhow::Result<()> {
    for (file, text) in reference {
        let path = ws.join(file);
        if std::fs::read_to_string(&path).ok().as_deref() != Some(text.as_str()) {
            std::fs::write(&path, text)?;
        }
    }
    Ok(())
}

/// `cargo build -p <lab> --bins` in `ws`: `None` when it builds, else the first error.
fn build(
    ws: &Path,
    target: &Path,
    package: &str,
    limit: Duration,
) -> anyhow::Result<Option<String>> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut command = std::process::Command::new(cargo);
    command
        .current_dir(ws)
        .args(["build", "-p", package, "--bins"])
        .env("CARGO_TARGET_DIR", target)
        .env("CARGO_TERM_COLOR", "never");
    let finished = libtest::run_bounded(command, limit)?;
    Ok((!finished.success).then(|| finished.first_error()))
}

/// `cargo fmt -p <lab> -- --check` in `ws`: `None` when the handout's files are formatted.
fn fmt_check(ws: &Path, package: &str, limit: Duration) -> anyhow::Result<Option<String>> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut command = std::process::Command::new(cargo);
    command
        .current_dir(ws)
        .args(["fmt", "-p", package, "--", "--check"])
        .env("CARGO_TERM_COLOR", "never");
    let finished = libtest::run_bounded(command, limit)?;
    Ok((!finished.success).then(|| {
        finished
            .stdout
            .lines()
            .find(|l| l.starts_with("Diff in"))
            .unwrap_or("cargo fmt --check failed")
            .to_string()
    }))
}

/// `cargo clippy -p <lab> --all-targets -- -D warnings` in `ws`: `None` when clean.
fn clippy(
    ws: &Path,
    target: &Path,
    package: &str,
    limit: Duration,
) -> anyhow::Result<Option<String>> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut command = std::process::Command::new(cargo);
    command
        .current_dir(ws)
        .args([
            "clippy",
            "-p",
            package,
            "--all-targets",
            "--",
            "-D",
            "warnings",
        ])
        .env("CARGO_TARGET_DIR", target)
        .env("CARGO_TERM_COLOR", "never");
    let finished = libtest::run_bounded(command, limit)?;
    Ok((!finished.success).then(|| finished.first_error()))
}

/// The map as a Markdown table.
pub fn map_table(findings: &[TaskFinding]) -> String {
    let mut table = String::from("| lab | task | tests that fail without it |\n|---|---|---|\n");
    for f in findings {
        let list = |tests: &[String]| {
            tests
                .iter()
                .map(|t| format!("`{t}`"))
                .collect::<Vec<_>>()
                .join(", ")
        };
        let tests = if f.failing.is_empty() {
            "**none: no test grades this task**".to_string()
        } else if f.passing.is_empty() {
            format!("all {}", f.failing.len())
        } else if f.failing.len() > f.passing.len() {
            // A task the lab cannot run without fails most tests: name the few that pass.
            format!(
                "{} of {}, all but {}",
                f.failing.len(),
                f.failing.len() + f.passing.len(),
                list(&f.passing)
            )
        } else {
            list(&f.failing)
        };
        table.push_str(&format!(
            "| {} | {}: {} | {} |\n",
            f.lab, f.number, f.title, tests
        ));
    }
    table
}

/// The map for GRADING.md: the rows of the labs checked now, and the rows already there of the
/// labs not checked this time (`--labs`), in lab order.
pub fn merged_table(text: &str, checked: &[&str], findings: &[TaskFinding]) -> String {
    let fresh = map_table(findings);
    let (header, _) = fresh.split_at(fresh.find("|---|---|---|\n").map_or(0, |i| i + 14));
    let mut rows: Vec<String> = fresh[header.len()..].lines().map(String::from).collect();
    if let (Some(begin), Some(end)) = (text.find(BEGIN), text.find(END)) {
        if begin < end {
            for line in text[begin..end].lines() {
                let lab = line
                    .trim_start_matches('|')
                    .split('|')
                    .next()
                    .unwrap_or("")
                    .trim();
                if lab.starts_with("lab") && lab.len() == 5 && !checked.contains(&lab) {
                    rows.push(line.to_string());
                }
            }
        }
    }
    // Stable: within a lab, the rows keep their task order.
    rows.sort_by_key(|row| {
        row.trim_start_matches('|')
            .split('|')
            .next()
            .unwrap_or("")
            .trim()
            .to_string()
    });
    let mut table = header.to_string();
    for row in rows {
        table.push_str(&row);
        table.push('\n');
    }
    table
}

/// GRADING.md with `table` between [`BEGIN`] and [`END`] (the section is added at the end the
/// first time).
pub fn with_map(text: &str, table: &str) -> String {
    if let (Some(begin), Some(end)) = (text.find(BEGIN), text.find(END)) {
        if begin < end {
            return format!("{}{BEGIN}\n{table}{}", &text[..begin], &text[end..]);
        }
    }
    format!(
        "{}\n\n## Which tests grade which task\n\n\
         Each task of the handout, and the tests that fail when only that task is missing (the rest of\n\
         the lab whole), as `cargo xtask check-handout` measures it:\n\n{BEGIN}\n{table}{END}\n",
        text.trim_end()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_map_replaces_its_own_section_only() {
        let findings = vec![TaskFinding {
            lab: "lab02".into(),
            number: 1,
            title: "fork a child per client".into(),
            failing: vec!["three_clients".into()],
            passing: vec![],
        }];
        let first = with_map("# Guide\n\nText.\n", &map_table(&findings));
        assert!(first.starts_with("# Guide\n\nText.\n\n## Which tests grade which task\n"));
        assert!(first.contains("| lab02 | 1: fork a child per client | all 1 |\n"));
        let mut again = findings.clone();
        again[0].failing.push("reaps".into());
        again[0].passing = vec!["help".into(), "demo".into()];
        let second = with_map(&(first.clone() + "\n## Later\n"), &map_table(&again));
        assert!(
            second.contains("| `three_clients`, `reaps` |\n<!-- end"),
            "{second}"
        );
        let mut most = again.clone();
        most[0].passing.truncate(1);
        assert!(map_table(&most).contains("| 2 of 3, all but `help` |"));
        assert!(second.ends_with("\n## Later\n"));
        assert_eq!(second.matches("## Which tests grade which task").count(), 1);
        // Checking lab03 alone keeps lab02's rows.
        let lab03 = TaskFinding {
            lab: "lab03".into(),
            number: 1,
            title: "a thread per client".into(),
            failing: vec!["threads".into()],
            passing: vec![],
        };
        let merged = merged_table(&second, &["lab03"], &[lab03]);
        assert_eq!(
            merged.lines().skip(2).map(|l| &l[..9]).collect::<Vec<_>>(),
            ["| lab02 |", "| lab03 |"]
        );
    }
}
