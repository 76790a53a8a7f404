//! Task markers: the parts of a lab's sources that a student writes.
//!
//! A task is marked in the reference like this (indentation free):
//!
//! ```text
//! // Task 2: close what each process does not use.
//! // (optional comment lines: the why and a hint; they stay in the handout)
//! ...the reference code a student writes...
//! // End of task 2.
//! ```
//!
//! [`parse`] finds the tasks of one file and refuses anything ambiguous (a task left open, one
//! inside another, an end that closes the wrong task, a line that looks like a marker but is not
//! exactly one) with the file and line, because a marker that is silently skipped would hand the
//! solution out. [`stub`] rewrites a file for the handout: each task keeps its begin line, its
//! hint and its end line, and its code becomes one `todo!()` that names the task.

use std::fmt;
use std::path::{Path, PathBuf};

/// One marked task in one file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Task {
    pub number: u32,
    /// The begin line's title, without a trailing period.
    pub title: String,
    pub file: PathBuf,
    /// 1-based line of `// Task N: ...`.
    pub begin_line: usize,
    /// 1-based line of `// End of task N.`.
    pub end_line: usize,
    /// The begin line's indentation, which the `todo!()` takes.
    pub indent: String,
    /// 1-based lines of the code a student writes: after the hint, before the end line.
    pub code_lines: std::ops::RangeInclusive<usize>,
}

/// A marker that cannot be read, with where it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MarkerError {
    pub file: PathBuf,
    pub line: usize,
    pub message: String,
}

impl fmt::Display for MarkerError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}: {}", self.file.display(), self.line, self.message)
    }
}

impl std::error::Error for MarkerError {}

enum Marker {
    Begin { number: u32, title: String },
    End { number: u32 },
}

/// Reads one line as a marker: `Ok(None)` for an ordinary line, an error message for a line that
/// starts like a marker but is not exactly one.
fn marker(line: &str) -> Result<Option<Marker>, String> {
    let text = line.trim();
    let Some(comment) = text.strip_prefix("//") else {
        return Ok(None);
    };
    // `///` and `//!` are documentation, never markers.
    if comment.starts_with('/') || comment.starts_with('!') {
        return Ok(None);
    }
    let words = comment.trim_start();
    let lower = words.to_ascii_lowercase();
    // `Task 2 ...`, `task 2: ...`, `Task two: ...`: meant as a marker, so it must be exact.
    let looks_like_begin = lower.strip_prefix("task").is_some_and(|rest| {
        rest.trim_start().starts_with(|c: char| c.is_ascii_digit())
            || (rest.starts_with(' ')
                && rest
                    .split_whitespace()
                    .next()
                    .is_some_and(|w| w.ends_with(':')))
    });
    let looks_like_end = lower.starts_with("end of task");
    if !looks_like_begin && !looks_like_end {
        return Ok(None);
    }
    if let Some(rest) = comment.strip_prefix(" Task ") {
        if let Some((number, title)) = rest.split_once(": ") {
            if let (Ok(value), false) = (number.parse::<u32>(), title.trim().is_empty()) {
                if value > 0 && !number.starts_with('0') {
                    let number = value;
                    let title = title.trim().trim_end_matches('.').to_string();
                    return Ok(Some(Marker::Begin { number, title }));
                }
            }
        }
        return Err(format!(
            "`{text}` looks like a task marker but is not one: write `// Task N: <title>` (N from 1)"
        ));
    }
    if let Some(number) = comment
        .strip_prefix(" End of task ")
        .and_then(|rest| rest.strip_suffix('.'))
        .and_then(|n| n.parse::<u32>().ok())
    {
        return Ok(Some(Marker::End { number }));
    }
    Err(format!(
        "`{text}` looks like a task marker but is not one: write `// Task N: <title>` or `// End of task N.`"
    ))
}

fn is_comment(line: &str) -> bool {
    line.trim_start().starts_with("//")
}

/// The tasks marked in one file's text, in order.
pub fn parse(file: &Path, text: &str) -> Result<Vec<Task>, MarkerError> {
    let error = |line: usize, message: String| MarkerError {
        file: file.to_path_buf(),
        line,
        message,
    };
    let lines: Vec<&str> = text.lines().collect();
    let mut tasks = Vec::new();
    let mut open: Option<(u32, String, usize, String)> = None;
    for (index, line) in lines.iter().enumerate() {
        let number_of_line = index + 1;
        match marker(line).map_err(|m| error(number_of_line, m))? {
            None => {}
            Some(Marker::Begin { number, title }) => {
                if let Some((open_number, _, open_line, _)) = &open {
                    return Err(error(
                        number_of_line,
                        format!(
                            "task {number} begins inside task {open_number} (begun at line {open_line}): \
                             tasks cannot nest; end task {open_number} first"
                        ),
                    ));
                }
                let indent: String = line.chars().take_while(|c| c.is_whitespace()).collect();
                open = Some((number, title, number_of_line, indent));
            }
            Some(Marker::End { number }) => {
                let Some((open_number, title, begin_line, indent)) = open.take() else {
                    return Err(error(
                        number_of_line,
                        format!("`// End of task {number}.` without a `// Task {number}: ...` before it"),
                    ));
                };
                if open_number != number {
                    return Err(error(
                        number_of_line,
                        format!(
                            "`// End of task {number}.` ends task {open_number} (begun at line {begin_line}): \
                             write `// End of task {open_number}.`"
                        ),
                    ));
                }
                // The hint: the comment lines right after the begin line.
                let mut first_code = begin_line + 1;
                while first_code < number_of_line && is_comment(lines[first_code - 1]) {
                    first_code += 1;
                }
                let has_code = (first_code..number_of_line)
                    .any(|n| !lines[n - 1].trim().is_empty() && !is_comment(lines[n - 1]));
                if !has_code {
                    return Err(error(
                        begin_line,
                        format!("task {number} has no code between its hint and `// End of task {number}.`"),
                    ));
                }
                tasks.push(Task {
                    number,
                    title,
                    file: file.to_path_buf(),
                    begin_line,
                    end_line: number_of_line,
                    indent,
                    code_lines: first_code..=number_of_line - 1,
                });
            }
        }
    }
    if let Some((number, _, begin_line, _)) = open {
        return Err(error(
            begin_line,
            format!("task {number} is never closed: add `// End of task {number}.` after its code"),
        ));
    }
    Ok(tasks)
}

/// Checks the tasks of one lab (from all its files) together: each number once, and 1, 2, 3 ...
/// without a gap, so the handout and the tutorial's task sections line up.
pub fn check_numbering(lab: &str, tasks: &[Task]) -> Result<(), MarkerError> {
    let mut sorted: Vec<&Task> = tasks.iter().collect();
    sorted.sort_by_key(|t| (t.number, t.file.clone(), t.begin_line));
    for pair in sorted.windows(2) {
        if pair[0].number == pair[1].number {
            return Err(MarkerError {
                file: pair[1].file.clone(),
                line: pair[1].begin_line,
                message: format!(
                    "{lab} task {} is marked twice: here and at {}:{}",
                    pair[1].number,
                    pair[0].file.display(),
                    pair[0].begin_line
                ),
            });
        }
    }
    for (expected, task) in (1..).zip(&sorted) {
        if task.number != expected {
            return Err(MarkerError {
                file: task.file.clone(),
                line: task.begin_line,
                message: format!(
                    "{lab}'s tasks skip task {expected}: number them 1, 2, 3 ... in the order a student writes them"
                ),
            });
        }
    }
    Ok(())
}

/// What a task's code becomes in the handout.
pub fn todo_line(lab: &str, lab_dir: &str, task: &Task) -> String {
    let message = format!(
        "{lab} task {}: {} (see {lab_dir}/README.md, 'Task {}')",
        task.number, task.title, task.number
    );
    // A string literal that is also a format string: escape quotes, backslashes and braces.
    let literal = message
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('{', "{{")
        .replace('}', "}}");
    format!("{}todo!(\"{literal}\");", task.indent)
}

/// The file's text with the code of `tasks` (parsed from this `text`) replaced by `todo!()`s.
pub fn stub(text: &str, lab: &str, lab_dir: &str, tasks: &[Task]) -> String {
    let mut out = String::with_capacity(text.len());
    let mut tasks = tasks.iter().peekable();
    let mut lines = text.lines().enumerate().map(|(i, l)| (i + 1, l)).peekable();
    while let Some((number, line)) = lines.next() {
        out.push_str(line);
        out.push('\n');
        let Some(task) = tasks.next_if(|t| t.begin_line == number) else {
            continue;
        };
        // The hint stays.
        while let Some((_, hint)) = lines.next_if(|&(n, _)| n < *task.code_lines.start()) {
            out.push_str(hint);
            out.push('\n');
        }
        // The code goes, and the end line stays.
        while lines.next_if(|&(n, _)| n < task.end_line).is_some() {}
        out.push_str(&todo_line(lab, lab_dir, task));
        out.push('\n');
    }
    if !text.ends_with('\n') {
        out.pop();
    }
    out
}

/// The lines of `tasks`' code in `text` that a handout must not contain: every non-blank,
/// non-comment line of a task (trimmed), less those the file also has outside every task (a lone
/// `}` or `Ok(())`), which the handout keeps for their other use.
pub fn solution_lines(text: &str, tasks: &[Task]) -> Vec<(usize, String)> {
    let lines: Vec<&str> = text.lines().collect();
    let inside = |n: usize| tasks.iter().any(|t| t.code_lines.contains(&n));
    let mut outside = std::collections::HashMap::<&str, usize>::new();
    for (i, line) in lines.iter().enumerate() {
        if !inside(i + 1) {
            *outside.entry(line.trim()).or_default() += 1;
        }
    }
    let mut solution = Vec::new();
    for task in tasks {
        for n in task.code_lines.clone() {
            let line = lines[n - 1].trim();
            if line.is_empty() || line.starts_with("//") {
                continue;
            }
            solution.push((n, line.to_string()));
        }
    }
    solution
        .into_iter()
        .filter(|(_, line)| !outside.contains_key(line.as_str()))
        .collect()
}

/// The solution lines (from [`solution_lines`]) that `handout` still contains, with the
/// reference's line numbers: empty when the handout gives nothing away.
pub fn leaked_lines(reference: &str, tasks: &[Task], handout: &str) -> Vec<(usize, String)> {
    let present: std::collections::HashSet<&str> = handout.lines().map(str::trim).collect();
    solution_lines(reference, tasks)
        .into_iter()
        .filter(|(_, line)| present.contains(line.as_str()))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const SERVE: &str = "\
fn serve(listener: TcpListener) -> io::Result<()> {
    let mut served = 0;
    // Task 1: accept a client and serve it until it leaves.
    // `accept()` blocks until the kernel has a connection queued.
    loop {
        let (stream, peer) = listener.accept()?;
        session::serve(stream, peer)?;
        served += 1;
    }
    // End of task 1.
}

fn backlog() -> i32 {
    // Task 2: the backlog given to listen.
    5
    // End of task 2.
}
";

    fn path() -> &'static Path {
        Path::new("lab01-iterative/src/main.rs")
    }

    #[test]
    fn finds_each_task_with_its_hint_code_and_end() {
        let tasks = parse(path(), SERVE).unwrap();
        assert_eq!(tasks.len(), 2);
        let first = &tasks[0];
        assert_eq!(first.number, 1);
        assert_eq!(first.title, "accept a client and serve it until it leaves");
        assert_eq!((first.begin_line, first.end_line), (3, 10));
        assert_eq!(first.code_lines, 5..=9);
        assert_eq!(first.indent, "    ");
        assert_eq!(tasks[1].code_lines, 15..=15);
        check_numbering("lab01", &tasks).unwrap();
    }

    #[test]
    fn the_stub_keeps_begin_hint_and_end_and_names_the_task() {
        let tasks = parse(path(), SERVE).unwrap();
        let stubbed = stub(SERVE, "lab01", "lab01-iterative", &tasks);
        let expected = "\
fn serve(listener: TcpListener) -> io::Result<()> {
    let mut served = 0;
    // Task 1: accept a client and serve it until it leaves.
    // `accept()` blocks until the kernel has a connection queued.
    todo!(\"lab01 task 1: accept a client and serve it until it leaves (see lab01-iterative/README.md, 'Task 1')\");
    // End of task 1.
}

fn backlog() -> i32 {
    // Task 2: the backlog given to listen.
    todo!(\"lab01 task 2: the backlog given to listen (see lab01-iterative/README.md, 'Task 2')\");
    // End of task 2.
}
";
        assert_eq!(stubbed, expected);
        // The handout's markers still parse: a student's copy can be checked the same way.
        assert_eq!(parse(path(), &stubbed).unwrap().len(), 2);
        assert!(leaked_lines(SERVE, &tasks, &stubbed).is_empty());
    }

    #[test]
    fn leaked_lines_compares_only_the_distinctive_lines() {
        let tasks = parse(path(), SERVE).unwrap();
        let distinctive: Vec<String> = solution_lines(SERVE, &tasks)
            .into_iter()
            .map(|(_, l)| l)
            .collect();
        // `}` closes blocks outside the tasks too; the rest is the solution.
        assert_eq!(
            distinctive,
            [
                "loop {",
                "let (stream, peer) = listener.accept()?;",
                "session::serve(stream, peer)?;",
                "served += 1;",
                "5"
            ]
        );
        let leaky = stub(SERVE, "lab01", "lab01-iterative", &tasks).replace(
            "    // End of task 1.",
            "    served += 1;\n    // End of task 1.",
        );
        assert_eq!(
            leaked_lines(SERVE, &tasks, &leaky),
            [(8, "served += 1;".to_string())]
        );
    }

    #[test]
    fn braces_and_quotes_in_a_title_stay_a_valid_todo() {
        let text =
            "fn f() {\n    // Task 1: write \"{x}\" \\ back.\n    x();\n    // End of task 1.\n}\n";
        let tasks = parse(path(), text).unwrap();
        assert_eq!(tasks[0].title, "write \"{x}\" \\ back");
        assert_eq!(
            todo_line("lab01", "lab01-iterative", &tasks[0]),
            "    todo!(\"lab01 task 1: write \\\"{{x}}\\\" \\\\ back (see lab01-iterative/README.md, 'Task 1')\");"
        );
    }

    fn error_of(text: &str) -> String {
        parse(path(), text).unwrap_err().to_string()
    }

    #[test]
    fn an_unclosed_task_is_an_error_at_its_begin_line() {
        let message = error_of("fn f() {\n    // Task 1: f.\n    x();\n}\n");
        assert_eq!(
            message,
            "lab01-iterative/src/main.rs:2: task 1 is never closed: add `// End of task 1.` after its code"
        );
    }

    #[test]
    fn a_nested_task_is_an_error_naming_both() {
        let message = error_of(
            "// Task 1: a.\nx();\n    // Task 2: b.\ny();\n// End of task 2.\n// End of task 1.\n",
        );
        assert!(
            message.starts_with(
                "lab01-iterative/src/main.rs:3: task 2 begins inside task 1 (begun at line 1)"
            ),
            "{message}"
        );
    }

    #[test]
    fn an_end_without_begin_or_for_another_task_is_an_error() {
        assert!(error_of("x();\n// End of task 1.\n")
            .starts_with("lab01-iterative/src/main.rs:2: `// End of task 1.` without"));
        assert!(
            error_of("// Task 1: a.\nx();\n// End of task 2.\n").starts_with(
                "lab01-iterative/src/main.rs:3: `// End of task 2.` ends task 1 (begun at line 1)"
            )
        );
    }

    #[test]
    fn a_near_miss_marker_is_an_error_not_ordinary_comment() {
        for bad in [
            "// task 1: lower case.",
            "// Task 1 no colon",
            "// Task one: words.",
            "// Task 0: from one.",
            "// End of task 1",
            "//Task 1: no space.",
        ] {
            let message = error_of(&format!("fn f() {{}}\n    {bad}\n"));
            assert!(
                message.starts_with("lab01-iterative/src/main.rs:2: `")
                    && message.contains("looks like a task marker"),
                "{bad}: {message}"
            );
        }
        // Prose that merely mentions a task, and documentation, are not markers.
        for fine in [
            "// The tasks below are numbered.",
            "/// Task 1: in a doc comment.",
            "//! Task 1: in a module doc.",
            "let task = 1; // Task 1: trailing comments are code lines",
        ] {
            assert_eq!(parse(path(), fine).unwrap(), [], "{fine}");
        }
    }

    #[test]
    fn a_task_without_code_is_an_error() {
        assert!(
            error_of("// Task 1: a.\n// only a hint\n\n// End of task 1.\n")
                .starts_with("lab01-iterative/src/main.rs:1: task 1 has no code")
        );
    }

    #[test]
    fn duplicated_and_missing_numbers_are_errors_across_files() {
        let a = parse(
            Path::new("lab03-thread/src/main.rs"),
            "// Task 1: a.\nx();\n// End of task 1.\n",
        )
        .unwrap();
        let b = parse(
            Path::new("lab03-thread/src/room.rs"),
            "\n\n// Task 1: b.\ny();\n// End of task 1.\n",
        )
        .unwrap();
        let both: Vec<Task> = a.iter().chain(&b).cloned().collect();
        assert_eq!(
            check_numbering("lab03", &both).unwrap_err().to_string(),
            "lab03-thread/src/room.rs:3: lab03 task 1 is marked twice: here and at lab03-thread/src/main.rs:1"
        );
        let three = parse(
            path(),
            "// Task 1: a.\nx();\n// End of task 1.\n// Task 3: c.\nz();\n// End of task 3.\n",
        )
        .unwrap();
        assert_eq!(
            check_numbering("lab01", &three).unwrap_err().to_string(),
            "lab01-iterative/src/main.rs:4: lab01's tasks skip task 2: number them 1, 2, 3 ... in the order a student writes them"
        );
    }
}
