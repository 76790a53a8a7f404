//! `cargo xtask handout DIR`: the student's workspace, generated from the reference.
//!
//! Everything is copied as it is (git's tracked files), except the marked tasks of the chosen
//! labs: each task keeps its begin line, its hint and its end line, and its code becomes a
//! `todo!()` naming the task (see [`crate::markers`]). The README gets a "Handout" section that
//! lists the tasks, and the GitHub Classroom workflow is written from `tests/points.toml`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context};

use crate::markers::{self, Task};
use crate::points::Points;
use crate::workspace::{self, Lab};
use crate::{classroom, workspace_root};

/// The lints a stub sets off in the code around it, allowed crate-wide in a handed-out lab.
pub const STUB_ALLOW: &str = "\
// This lab is a handout: until you write its tasks (each a `todo!()` below its hint), the code
// around them declares things nothing uses yet. Remove these lines once every task is done.
#![allow(
    unused_variables,
    unused_mut,
    unused_imports,
    unused_assignments,
    unreachable_code,
    dead_code
)]
";

/// One stubbed task, where the handout has it.
#[derive(Debug, Clone)]
pub struct HandedOut {
    pub lab: Lab,
    pub task: Task,
    /// The begin line's number in the handout's file.
    pub handout_line: usize,
}

/// The files of `labs` with their tasks stubbed, and what was stubbed: (file → text), tasks.
pub fn stub_labs(
    root: &Path,
    labs: &[Lab],
) -> anyhow::Result<(BTreeMap<PathBuf, String>, Vec<HandedOut>)> {
    let mut files = BTreeMap::new();
    let mut handed_out = Vec::new();
    for lab in labs {
        let tasks = workspace::lab_tasks(root, lab)?;
        let mut by_file: BTreeMap<PathBuf, Vec<Task>> = BTreeMap::new();
        for task in tasks {
            by_file.entry(task.file.clone()).or_default().push(task);
        }
        for (file, mut tasks) in by_file.clone() {
            tasks.sort_by_key(|t| t.begin_line);
            let reference = std::fs::read_to_string(root.join(&file))?;
            let stubbed = markers::stub(&reference, &lab.name, &lab.dir, &tasks);
            let leaked = markers::leaked_lines(&reference, &tasks, &stubbed);
            if !leaked.is_empty() {
                bail!(
                    "the handout of {} would still contain solution lines: {:?}",
                    file.display(),
                    leaked
                );
            }
            for task in &tasks {
                handed_out.push(HandedOut {
                    lab: lab.clone(),
                    task: task.clone(),
                    handout_line: 0,
                });
            }
            files.insert(file, stubbed);
        }
        if !by_file.is_empty() {
            for root_file in crate_roots(root, lab, by_file.keys()) {
                let text = match files.get(&root_file) {
                    Some(text) => text.clone(),
                    None => std::fs::read_to_string(root.join(&root_file))?,
                };
                files.insert(root_file, with_stub_allow(&text));
            }
        }
    }
    // Where each task's begin line is in the handout's text (after every change to the file).
    for h in &mut handed_out {
        let text = &files[&h.task.file];
        let stubs = markers::parse(&h.task.file, text)?;
        h.handout_line = stubs
            .iter()
            .find(|t| t.number == h.task.number)
            .map(|t| t.begin_line)
            .expect("a stubbed task keeps its markers");
    }
    handed_out.sort_by_key(|h| (h.lab.name.clone(), h.task.number));
    Ok((files, handed_out))
}

/// The crate roots of a lab whose crates hold one of `task_files`: `src/main.rs` and `src/lib.rs`
/// hold every module under `src/` but `src/bin/`; a `src/bin/x.rs` is its own crate.
fn crate_roots<'a>(
    root: &Path,
    lab: &Lab,
    task_files: impl Iterator<Item = &'a PathBuf>,
) -> Vec<PathBuf> {
    let src = PathBuf::from(&lab.dir).join("src");
    let bin = src.join("bin");
    let mut roots = Vec::new();
    for file in task_files {
        if file.starts_with(&bin) {
            roots.push(file.clone());
        } else {
            for name in ["main.rs", "lib.rs"] {
                let candidate = src.join(name);
                if root.join(&candidate).is_file() {
                    roots.push(candidate);
                }
            }
        }
    }
    roots.sort();
    roots.dedup();
    roots
}

/// `text` (a crate root) with [`STUB_ALLOW`] after its `//!` documentation and inner attributes.
pub fn with_stub_allow(text: &str) -> String {
    let lines: Vec<&str> = text.lines().collect();
    let mut insert_at = 0;
    for (index, line) in lines.iter().enumerate() {
        let trimmed = line.trim_start();
        if trimmed.starts_with("//!") || trimmed.starts_with("#![") {
            insert_at = index + 1;
        } else if !trimmed.is_empty() {
            break;
        }
    }
    let mut out = String::new();
    for line in &lines[..insert_at] {
        out.push_str(line);
        out.push('\n');
    }
    if insert_at > 0 {
        out.push('\n');
    }
    out.push_str(STUB_ALLOW);
    if lines.get(insert_at).is_some_and(|l| !l.trim().is_empty()) {
        out.push('\n');
    }
    for line in &lines[insert_at..] {
        out.push_str(line);
        out.push('\n');
    }
    out
}

/// The README's generated section, which tells the student what to do.
pub fn readme_section(points: &Points, handed_out: &[HandedOut]) -> String {
    let mut section = String::from(
        "## Handout: what you build\n\n\
         This copy of netlabs is a handout. In the labs below, the code of each task is missing: where\n\
         it was, the source keeps the task's first line (`// Task N: ...`), its hint and its last line\n\
         (`// End of task N.`), and between them a `todo!()` that names the task, so the lab builds but\n\
         its server stops with that message once it reaches the missing part. Everything else is whole:\n\
         the tutorials, the tests, the other labs.\n\n\
         | lab | task | where | graded by |\n|---|---|---|---|\n",
    );
    for h in handed_out {
        let test_file = points
            .labs
            .get(&h.lab.name)
            .map(|l| format!("`cargo test -p tests --test {}`", l.test_file))
            .unwrap_or_default();
        section.push_str(&format!(
            "| {} | {}: {} | `{}:{}` | {} |\n",
            h.lab.name,
            h.task.number,
            h.task.title,
            h.task.file.display(),
            h.handout_line,
            test_file
        ));
    }
    section.push_str(
        "\nFor each lab, in order:\n\n\
         1. Read its tutorial (`labNN-.../README.md`, or its chapter in the book): its section **Build\n   \
            it yourself** explains each task: what to write, which calls, the test that grades it, a hint.\n\
         2. Write the task where its `todo!()` is (keep the `// Task N:` and `// End of task N.` lines).\n\
         3. Run the lab's tests (the command in the table): each failing test says what it expected.\n\
         4. `cargo xtask grade` prints your points per lab, as your instructor's grader counts them\n   \
            (`cargo xtask grade --labs lab02` for one lab).\n\n\
         When every task of a lab is done, delete the `#![allow(...)]` lines the handout added at the top\n\
         of its `src/main.rs`, and `cargo clippy -p labNN-...` tells you what is left unused.\n\
         Each push to your GitHub Classroom repository is graded by the same tests\n\
         (`.github/workflows/classroom.yml`).\n\n",
    );
    section
}

/// `readme` with `section` as its first section: after the title and the opening paragraphs,
/// before the first `## ` heading (at the end if there is none).
pub fn with_readme_section(readme: &str, section: &str) -> String {
    let at = if readme.starts_with("## ") {
        Some(0)
    } else {
        readme.find("\n## ").map(|i| i + 1)
    };
    match at {
        Some(at) => format!("{}{section}{}", &readme[..at], &readme[at..]),
        None => format!("{}\n\n{}\n", readme.trim_end(), section.trim_end()),
    }
}

/// Writes the handout of `labs` (all labs when `None`) into `dest`.
pub fn run(dest: &Path, labs: Option<&[String]>, force: bool) -> anyhow::Result<Vec<HandedOut>> {
    let root = workspace_root();
    // A folder with files in it may be someone's work (a student's copy, an earlier handout
    // they changed): never write over it by mistake.
    let occupied = std::fs::read_dir(dest).is_ok_and(|mut entries| entries.next().is_some());
    if occupied && !force {
        bail!(
            "{} is not empty: choose a new folder, or pass --force to write the handout over it",
            dest.display()
        );
    }
    let handout = write(&root, dest, labs)?;
    println!("handout written to {}", dest.display());
    if handout.is_empty() {
        println!("no lab has marked tasks: the handout is the reference");
    }
    for h in &handout {
        println!(
            "  {} task {}: {}  ({}:{})",
            h.lab.name,
            h.task.number,
            h.task.title,
            h.task.file.display(),
            h.handout_line
        );
    }
    Ok(handout)
}

/// The work of [`run`], from any reference `root` (tests use a copy).
pub fn write(root: &Path, dest: &Path, labs: Option<&[String]>) -> anyhow::Result<Vec<HandedOut>> {
    let chosen = workspace::chosen_labs(root, labs)?;
    let points = Points::load(root)?;
    let (files, handed_out) = stub_labs(root, &chosen)?;
    workspace::copy_workspace(root, dest)?;
    for (file, text) in &files {
        std::fs::write(dest.join(file), text)
            .with_context(|| format!("cannot write {}", file.display()))?;
    }
    let readme = std::fs::read_to_string(root.join("README.md"))?;
    std::fs::write(
        dest.join("README.md"),
        with_readme_section(&readme, &readme_section(&points, &handed_out)),
    )?;
    let graded: Vec<String> = chosen
        .iter()
        .map(|l| l.name.clone())
        .filter(|name| points.labs.contains_key(name))
        .collect();
    let workflow = dest.join(classroom::PATH);
    std::fs::create_dir_all(workflow.parent().expect("a folder"))?;
    std::fs::write(&workflow, classroom::workflow(&points, &graded)?)?;
    Ok(handed_out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_allow_goes_after_the_crate_docs() {
        let text = "//! # lab02\n//!\n//! The fork server.\n\nuse std::net::TcpListener;\n";
        let allowed = with_stub_allow(text);
        assert!(allowed
            .starts_with("//! # lab02\n//!\n//! The fork server.\n\n// This lab is a handout"));
        assert!(allowed.ends_with("    dead_code\n)]\n\nuse std::net::TcpListener;\n"));
        assert!(with_stub_allow("fn main() {}\n").starts_with("// This lab is a handout"));
    }

    #[test]
    fn the_readme_section_goes_under_the_title() {
        let readme = "# netlabs\n\nTeaching labs.\n\n## The five models\n\nOne.\n";
        assert_eq!(
            with_readme_section(readme, "## Handout\n\nDo it.\n\n"),
            "# netlabs\n\nTeaching labs.\n\n## Handout\n\nDo it.\n\n## The five models\n\nOne.\n"
        );
        assert_eq!(
            with_readme_section("# netlabs\n\nTeaching labs.\n", "## Handout\n\nDo it.\n"),
            "# netlabs\n\nTeaching labs.\n\n## Handout\n\nDo it.\n"
        );
    }

    const MAIN: &str = "\
//! # lab09: a demo.

use std::net::TcpListener;

fn main() {
    let listener = TcpListener::bind(\"127.0.0.1:0\").unwrap();
    // Task 1: accept one client.
    // accept() blocks until a client is queued.
    let (stream, _) = listener.accept().unwrap();
    drop(stream);
    // End of task 1.
}

fn helper() -> u32 {
    // Task 2: the answer.
    42
    // End of task 2.
}
";

    /// A small workspace with two labs, one of them marked.
    fn fixture() -> tempfile::TempDir {
        let root = tempfile::tempdir().unwrap();
        let write = |path: &str, text: &str| {
            let path = root.path().join(path);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(path, text).unwrap();
        };
        write("README.md", "# demo\n\nTeaching labs.\n");
        write(
            "tests/points.toml",
            "[lab09]\npackage = \"lab09-demo\"\ntest-file = \"lab09_demo\"\nrows = [{ points = 100, tests = [\"serves\"] }]\n",
        );
        write("lab09-demo/src/main.rs", MAIN);
        write("lab09-demo/src/bin/client.rs", "fn main() {}\n");
        write(
            "lab08-whole/src/main.rs",
            "fn main() {\n    // Task 1: kept.\n    x();\n    // End of task 1.\n}\n",
        );
        write("target/debug/junk", "not copied");
        root
    }

    #[test]
    fn a_handout_stubs_the_chosen_labs_only_and_says_what_to_do() {
        let reference = fixture();
        let dest = tempfile::tempdir().unwrap();
        let handed_out =
            write(reference.path(), dest.path(), Some(&["lab09".to_string()])).unwrap();
        assert_eq!(handed_out.len(), 2);
        let main = std::fs::read_to_string(dest.path().join("lab09-demo/src/main.rs")).unwrap();
        assert!(
            main.starts_with("//! # lab09: a demo.\n\n// This lab is a handout"),
            "{main}"
        );
        assert!(main.contains(
            "    // accept() blocks until a client is queued.\n    todo!(\"lab09 task 1: accept one client (see lab09-demo/README.md, 'Task 1')\");\n    // End of task 1.\n"
        ));
        let tasks = markers::parse(Path::new("main.rs"), MAIN).unwrap();
        assert_eq!(markers::leaked_lines(MAIN, &tasks, &main), []);
        // The README's table points at the begin lines as they are in the handout.
        let readme = std::fs::read_to_string(dest.path().join("README.md")).unwrap();
        let line_of_task_2 = main.lines().position(|l| l.contains("// Task 2:")).unwrap() + 1;
        assert!(readme.starts_with("# demo\n\nTeaching labs.\n\n## Handout: what you build\n"));
        assert!(readme.contains(&format!(
            "| lab09 | 2: the answer | `lab09-demo/src/main.rs:{line_of_task_2}` |"
        )));
        assert!(
            readme.ends_with("graded by the same tests\n(`.github/workflows/classroom.yml`).\n"),
            "{readme}"
        );
        // The other lab and the client are whole; target/ is not copied.
        let whole = std::fs::read_to_string(dest.path().join("lab08-whole/src/main.rs")).unwrap();
        assert!(whole.contains("    x();\n"));
        assert_eq!(
            std::fs::read_to_string(dest.path().join("lab09-demo/src/bin/client.rs")).unwrap(),
            "fn main() {}\n"
        );
        assert!(!dest.path().join("target").exists());
        let workflow = std::fs::read_to_string(dest.path().join(classroom::PATH)).unwrap();
        assert!(workflow.contains("command: cargo test -p tests --test lab09_demo\n"));
    }

    #[test]
    fn a_bad_marker_stops_the_handout_with_file_and_line() {
        let reference = fixture();
        let main = reference.path().join("lab09-demo/src/main.rs");
        std::fs::write(&main, MAIN.replace("    // End of task 2.\n", "")).unwrap();
        let dest = tempfile::tempdir().unwrap();
        let error = write(reference.path(), dest.path(), None)
            .unwrap_err()
            .to_string();
        assert_eq!(
            error,
            "lab09-demo/src/main.rs:15: task 2 is never closed: add `// End of task 2.` after its code"
        );
    }

    /// The real workspace's handout gives no task's solution away, file by file.
    #[test]
    fn the_real_handout_leaves_no_line_of_a_solution() {
        let root = workspace_root();
        let dest = tempfile::tempdir().unwrap();
        let handed_out = write(&root, dest.path(), None).unwrap();
        for lab in workspace::labs(&root).unwrap() {
            let tasks = workspace::lab_tasks(&root, &lab).unwrap();
            let mut files: Vec<&PathBuf> = tasks.iter().map(|t| &t.file).collect();
            files.dedup();
            for file in files {
                let reference = std::fs::read_to_string(root.join(file)).unwrap();
                let handout = std::fs::read_to_string(dest.path().join(file)).unwrap();
                let in_file: Vec<Task> =
                    tasks.iter().filter(|t| &t.file == file).cloned().collect();
                let leaked = markers::leaked_lines(&reference, &in_file, &handout);
                assert!(
                    leaked.is_empty(),
                    "{} keeps solution lines: {leaked:?}",
                    file.display()
                );
            }
        }
        assert_eq!(
            handed_out.len(),
            workspace::labs(&root)
                .unwrap()
                .iter()
                .map(|lab| workspace::lab_tasks(&root, lab).unwrap().len())
                .sum::<usize>()
        );
        assert!(dest.path().join(classroom::PATH).is_file());
        assert!(dest
            .path()
            .join(".devcontainer/devcontainer.json")
            .is_file());
        // Its tests are the reference's own files.
        for file in workspace::source_files(&root).unwrap() {
            if file.starts_with("tests") {
                assert_eq!(
                    std::fs::read(root.join(&file)).unwrap(),
                    std::fs::read(dest.path().join(&file)).unwrap(),
                    "{} differs in the handout",
                    file.display()
                );
            }
        }
    }

    /// The dev container (in the reference and, copied, in the handout) sets up with the script
    /// CI runs, on the official Rust image.
    #[test]
    fn the_dev_container_installs_the_tools_with_the_ci_script() {
        let text =
            std::fs::read_to_string(workspace_root().join(".devcontainer/devcontainer.json"))
                .unwrap();
        // JSON with comments, as dev containers allow: drop the comment lines.
        let json: Vec<&str> = text
            .lines()
            .filter(|l| !l.trim_start().starts_with("//"))
            .collect();
        let value: serde_json::Value = serde_json::from_str(&json.join("\n")).unwrap();
        assert_eq!(value["postCreateCommand"], "bash .ci/install-tools");
        assert!(value["image"]
            .as_str()
            .unwrap()
            .starts_with("mcr.microsoft.com/devcontainers/rust:"));
        let ci = std::fs::read_to_string(workspace_root().join(".ci/run")).unwrap();
        assert!(
            ci.contains("bash .ci/install-tools"),
            ".ci/run runs the same script"
        );
    }

    /// The section of `text` under `heading` (`## ...`), up to the next `## `.
    fn section<'a>(text: &'a str, heading: &str) -> Option<&'a str> {
        let start = text.find(&format!("\n{heading}\n"))? + 1;
        let rest = &text[start + heading.len()..];
        let end = rest.find("\n## ").map_or(rest.len(), |i| i + 1);
        Some(&rest[..end])
    }

    /// A title as a marker and a heading both write it: no backquotes, no final period, any case.
    fn plain(title: &str) -> String {
        title
            .replace('`', "")
            .trim()
            .trim_end_matches('.')
            .to_lowercase()
    }

    /// Each lab tutorial's "Build it yourself" section, and its Korean chapter's, follow the lab's
    /// markers: one `### Task N: <title>` per task, in order, with the marker's title (in English),
    /// and every `cargo test -p tests --test <file> <name>` in it names a graded test of that lab.
    /// A lab whose tasks are marked but whose tutorials have no such section yet is let through
    /// (`cargo xtask handout` still works); one language without the other is not.
    #[test]
    fn the_tutorials_task_sections_follow_the_markers() {
        let root = workspace_root();
        let points = Points::load(&root).unwrap();
        let mut problems = Vec::new();
        for lab in workspace::labs(&root).unwrap() {
            let tasks = workspace::lab_tasks(&root, &lab).unwrap();
            let korean = std::fs::read_dir(root.join("book/ko/src/labs"))
                .unwrap()
                .filter_map(Result::ok)
                .map(|e| e.path())
                .find(|p| {
                    p.file_name()
                        .unwrap()
                        .to_string_lossy()
                        .starts_with(&lab.name)
                });
            let english = std::fs::read_to_string(root.join(&lab.dir).join("README.md")).unwrap();
            let korean_text = korean
                .as_ref()
                .map(|p| std::fs::read_to_string(p).unwrap())
                .unwrap_or_default();
            let sections = [
                (
                    format!("{}/README.md", lab.dir),
                    section(&english, "## Build it yourself"),
                ),
                (
                    korean
                        .as_ref()
                        .map(|p| p.display().to_string())
                        .unwrap_or_default(),
                    section(&korean_text, "## 직접 만들어 보기"),
                ),
            ];
            if sections[0].1.is_some() != sections[1].1.is_some() {
                problems.push(format!(
                    "{}: the task sections are in one language only (\"## Build it yourself\" in the README, \"## 직접 만들어 보기\" in the Korean chapter)",
                    lab.name
                ));
            }
            for (file, body) in sections {
                let Some(body) = body else { continue };
                let headings: Vec<&str> = body
                    .lines()
                    .filter_map(|l| l.strip_prefix("### "))
                    .collect();
                let expected: Vec<String> = tasks
                    .iter()
                    .map(|t| format!("Task {}: {}", t.number, t.title))
                    .collect();
                let numbers_match = headings.len() == expected.len()
                    && headings.iter().zip(&expected).all(|(h, e)| {
                        let (h_number, h_title) = h.split_once(':').unwrap_or((h, ""));
                        let (e_number, e_title) = e.split_once(':').unwrap();
                        h_number == e_number
                            && (file.contains("/ko/") || plain(h_title) == plain(e_title))
                    });
                if !numbers_match {
                    problems.push(format!(
                        "{file}: its task headings {headings:?} are not the lab's markers {expected:?}"
                    ));
                }
                let graded: Vec<&str> = points
                    .labs
                    .get(&lab.name)
                    .map(|l| l.tests().collect())
                    .unwrap_or_default();
                let test_file = points
                    .labs
                    .get(&lab.name)
                    .map(|l| l.test_file.as_str())
                    .unwrap_or("?");
                for command in body.split("cargo test -p tests --test ").skip(1) {
                    // Up to the end of the code span: the file, then maybe a test's name.
                    let span = command.split('`').next().unwrap_or("");
                    let mut words = span.split_whitespace();
                    let file_named = words.next().unwrap_or("");
                    let name = words.next();
                    if file_named != test_file || name.is_some_and(|n| !graded.contains(&n)) {
                        problems.push(format!(
                            "{file}: `cargo test -p tests --test {span}` does not name {} or a graded test of it (tests/points.toml)",
                            lab.name
                        ));
                    }
                }
            }
        }
        assert!(problems.is_empty(), "{}", problems.join("\n"));
    }
}
