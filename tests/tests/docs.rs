//! Tutorials that cannot rot: every command the docs tell a student to type must still work.
//!
//! Reads the README, docs/, every lab's tutorial and the book (both editions), and checks that
//! - every `cargo run -p PACKAGE [--bin BINARY] [-- FLAGS]` names a real package and binary, and
//!   every `--flag` after `--` appears in that binary's `--help`;
//! - every fenced block marked `sh runnable` runs with bash and exits 0 (within a time limit);
//! - the English and Korean books have the same chapters, and each Korean chapter uses the same
//!   `cargo run` commands as its English twin.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use tests::{binary, run_with_timeout, workspace_root};

/// The packages and the binaries each ships (the contract's table).
const BINARIES: &[(&str, &[&str])] = &[
    ("lab01-iterative", &["iterative-server", "iterative-client"]),
    ("lab02-fork", &["fork-server", "fork-client"]),
    ("lab03-thread", &["thread-server", "thread-client"]),
    ("lab04-multiplex", &["multiplex-server", "multiplex-client"]),
    ("lab05-ipc", &["ipc-server", "ipc-client"]),
    ("bench", &["bench"]),
];

/// Every markdown file a student reads.
fn doc_files() -> Vec<PathBuf> {
    let root = workspace_root();
    let mut files = vec![root.join("README.md")];
    for dir in [
        "docs",
        "book/src",
        "book/src/labs",
        "book/ko/src",
        "book/ko/src/labs",
    ] {
        files.extend(markdown_in(&root.join(dir)));
    }
    for (package, _) in BINARIES {
        let readme = root.join(package).join("README.md");
        if readme.exists() {
            files.push(readme);
        }
    }
    if root.join("GRADING.md").exists() {
        files.push(root.join("GRADING.md"));
    }
    files
}

fn markdown_in(dir: &Path) -> Vec<PathBuf> {
    let Ok(entries) = fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut files: Vec<PathBuf> = entries
        .filter_map(|e| Some(e.ok()?.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "md"))
        .collect();
    files.sort();
    files
}

/// A `cargo run` command found in a doc.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct CargoRun {
    package: String,
    binary: Option<String>,
    flags: Vec<String>,
}

/// Finds every `cargo run ... -p PACKAGE ...` in a text (in code blocks and inline code alike).
fn cargo_runs(text: &str) -> Vec<CargoRun> {
    let mut found = Vec::new();
    for line in text.lines() {
        let mut rest = line;
        while let Some(start) = rest.find("cargo run") {
            let command = &rest[start..];
            // The command ends at a backtick, a shell separator or a comment.
            let end = command
                .find(['`', '|', ';', '#', '&', '<', '>', ')'])
                .unwrap_or(command.len());
            let words: Vec<&str> = command[..end].split_whitespace().collect();
            rest = &command["cargo run".len()..];
            if let Some(run) = parse_cargo_run(&words) {
                found.push(run);
            }
        }
    }
    found
}

fn parse_cargo_run(words: &[&str]) -> Option<CargoRun> {
    let mut package = None;
    let mut binary = None;
    let mut flags = Vec::new();
    let mut i = 2; // after "cargo run"
    let mut after_dashes = false;
    while i < words.len() {
        let word = words[i];
        if after_dashes {
            if let Some(flag) = word.strip_prefix("--") {
                let flag = flag.split('=').next().unwrap_or(flag);
                if !flag.is_empty() {
                    flags.push(format!("--{flag}"));
                }
            }
        } else if word == "--" {
            after_dashes = true;
        } else if word == "-p" || word == "--package" {
            package = words.get(i + 1).map(|s| s.to_string());
            i += 1;
        } else if word == "--bin" {
            binary = words.get(i + 1).map(|s| s.to_string());
            i += 1;
        }
        i += 1;
    }
    let package = package?;
    // `cargo run -p <package>` and `cargo run -p ...` in prose are placeholders, not commands.
    if package.starts_with('<') || package.starts_with("...") {
        return None;
    }
    Some(CargoRun {
        package,
        binary,
        flags,
    })
}

fn default_binary(package: &str) -> Option<&'static str> {
    BINARIES
        .iter()
        .find(|(p, _)| *p == package)
        .map(|(_, bins)| bins[0])
}

#[test]
fn the_parser_finds_cargo_run_commands() {
    let text = "run `cargo run -p lab02-fork -- --prefork 3 --port=0` then\n\
                cargo run --release -p bench -- --quick | tee x\n\
                cargo run -p lab01-iterative --bin iterative-client # comment --nope\n\
                the server: `cargo run -p <package>`, or `cargo run -p ...`";
    let runs = cargo_runs(text);
    assert_eq!(runs.len(), 3, "{runs:?}");
    assert_eq!(runs[0].package, "lab02-fork");
    assert_eq!(runs[0].flags, ["--prefork", "--port"]);
    assert_eq!(runs[1].flags, ["--quick"]);
    assert_eq!(runs[2].binary.as_deref(), Some("iterative-client"));
    assert!(runs[2].flags.is_empty());
}

#[test]
fn every_cargo_run_in_the_docs_names_a_real_binary_and_real_flags() {
    let mut commands: BTreeMap<CargoRun, BTreeSet<String>> = BTreeMap::new();
    for file in doc_files() {
        let text = fs::read_to_string(&file).unwrap();
        for run in cargo_runs(&text) {
            let name = file
                .strip_prefix(workspace_root())
                .unwrap_or(&file)
                .display()
                .to_string();
            commands.entry(run).or_default().insert(name);
        }
    }
    assert!(
        commands.len() >= 5,
        "expected the docs to show cargo run commands, found {commands:?}"
    );
    let mut help_of: BTreeMap<String, String> = BTreeMap::new();
    let mut problems = Vec::new();
    for (run, files) in &commands {
        let Some((_, binaries)) = BINARIES.iter().find(|(p, _)| *p == run.package) else {
            problems.push(format!(
                "{files:?}: no package {:?} in the workspace",
                run.package
            ));
            continue;
        };
        let bin = run
            .binary
            .clone()
            .unwrap_or_else(|| default_binary(&run.package).unwrap().to_string());
        if !binaries.contains(&bin.as_str()) {
            problems.push(format!(
                "{files:?}: package {} has no binary {bin:?}",
                run.package
            ));
            continue;
        }
        let help = help_of.entry(bin.clone()).or_insert_with(|| {
            let mut command = Command::new(binary(&bin));
            command.arg("--help");
            let (status, stdout, stderr) = run_with_timeout(command, Duration::from_secs(30));
            assert!(status.success(), "{bin} --help failed: {stderr}");
            stdout
        });
        for flag in &run.flags {
            let known = help
                .split(|c: char| !(c.is_alphanumeric() || c == '-'))
                .any(|word| word == flag);
            if !known && flag != "--help" && flag != "--version" {
                problems.push(format!(
                    "{files:?}: `{bin}` has no flag {flag} (cargo run -p {} ...)",
                    run.package
                ));
            }
        }
    }
    assert!(
        problems.is_empty(),
        "the docs are out of date:\n{}",
        problems.join("\n")
    );
}

/// The fenced code blocks whose info string is `sh runnable`.
fn runnable_blocks(text: &str) -> Vec<String> {
    let mut blocks = Vec::new();
    let mut current: Option<String> = None;
    for line in text.lines() {
        let trimmed = line.trim_start();
        match &mut current {
            None if trimmed.starts_with("```") => {
                let info: Vec<&str> = trimmed.trim_start_matches('`').split([' ', ',']).collect();
                if info.contains(&"runnable") {
                    current = Some(String::new());
                }
            }
            Some(block) if trimmed.starts_with("```") => {
                blocks.push(std::mem::take(block));
                current = None;
            }
            Some(block) => {
                block.push_str(line);
                block.push('\n');
            }
            None => {}
        }
    }
    blocks
}

#[test]
fn the_runnable_examples_run() {
    let mut ran = 0;
    for file in doc_files() {
        let text = fs::read_to_string(&file).unwrap();
        for block in runnable_blocks(&text) {
            let mut command = Command::new("bash");
            command
                .args(["-euo", "pipefail", "-c", &block])
                .current_dir(workspace_root());
            let (status, stdout, stderr) = run_with_timeout(command, Duration::from_secs(120));
            assert!(
                status.success(),
                "a runnable example of {} failed ({status}):\n{block}\n--- stdout\n{stdout}\n--- stderr\n{stderr}",
                file.display()
            );
            ran += 1;
        }
    }
    assert!(
        ran >= 1,
        "no runnable example found: mark at least the quick start `sh runnable`"
    );
}

/// The chapter files of a book, from its SUMMARY.md, in order.
fn chapters(summary: &Path) -> Vec<String> {
    let text = fs::read_to_string(summary).unwrap_or_default();
    text.lines()
        .filter_map(|l| Some(l.split("](").nth(1)?.split(')').next()?.to_string()))
        .collect()
}

#[test]
fn the_korean_book_has_the_same_chapters_and_commands() {
    let root = workspace_root();
    let english = chapters(&root.join("book/src/SUMMARY.md"));
    assert!(
        english.len() >= 8,
        "the English book has its chapters: {english:?}"
    );
    let korean = chapters(&root.join("book/ko/src/SUMMARY.md"));
    assert_eq!(
        english, korean,
        "book/ko/src/SUMMARY.md must list the same chapter files"
    );
    for chapter in &english {
        let en = expand(&root.join("book/src").join(chapter));
        let ko = expand(&root.join("book/ko/src").join(chapter));
        let en_runs: BTreeSet<CargoRun> = cargo_runs(&en).into_iter().collect();
        let ko_runs: BTreeSet<CargoRun> = cargo_runs(&ko).into_iter().collect();
        assert_eq!(
            en_runs, ko_runs,
            "chapter {chapter}: the Korean edition must use the same cargo run commands"
        );
    }
}

/// A chapter's text with its `{{#include path}}` lines replaced by the file they include.
fn expand(chapter: &Path) -> String {
    let text = fs::read_to_string(chapter).unwrap_or_else(|e| panic!("{}: {e}", chapter.display()));
    text.lines()
        .map(|line| {
            match line
                .trim()
                .strip_prefix("{{#include ")
                .and_then(|l| l.strip_suffix("}}"))
            {
                Some(path) => {
                    let included = chapter.parent().unwrap().join(path.trim());
                    fs::read_to_string(&included)
                        .unwrap_or_else(|e| panic!("{}: {e}", included.display()))
                }
                None => line.to_string(),
            }
        })
        .collect::<Vec<_>>()
        .join("\n")
}
