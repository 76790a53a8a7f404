//! `cargo xtask grade`: the acceptance tests of the chosen labs, scored with `tests/points.toml`.
//!
//! - In a checkout (default `.`): each lab's `cargo test -p tests --test <file>`.
//! - `--submission DIR`: a student's copy, graded with the reference's own `tests/` (copied over
//!   theirs in a scratch copy under `target/grade/`, so a weakened test changes nothing).
//! - `--submissions DIR`: every checkout in a folder, one after another (progress bar), one CSV row
//!   per student. A submission that does not build, hangs or crashes scores what it scores, with
//!   the reason; it never stops the class.
//!
//! A row's points are shared equally by its tests. The exit status is non-zero only when grading
//! itself failed (a bad table, a test the table names that the test file does not have).

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context};
use serde::Serialize;

use crate::libtest::{self, Outcome};
use crate::points::{self, Points};
use crate::workspace;

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    Table,
    Json,
    Csv,
    Junit,
}

#[derive(Debug, Clone, clap::Args)]
pub struct Options {
    /// Grade a student's copy of the workspace, with this checkout's tests/.
    #[arg(long, conflicts_with = "submissions")]
    submission: Option<PathBuf>,
    /// Grade every checkout in this folder (one per student); writes one CSV row per student.
    #[arg(long)]
    submissions: Option<PathBuf>,
    /// Where --submissions writes its CSV (default: standard output).
    #[arg(long, requires = "submissions")]
    output: Option<PathBuf>,
    /// The labs to grade, e.g. lab02,lab05 (default: every lab in tests/points.toml).
    #[arg(long, value_delimiter = ',')]
    labs: Option<Vec<String>>,
    /// How to print the grades: a table for people; json, csv (one line per test) or junit for
    /// tools. (--submissions always writes its CSV, one row per student.)
    #[arg(long, value_enum, default_value_t = Format::Table)]
    format: Format,
    /// The longest a lab's build, or its test run, may take before it is stopped and its
    /// remaining tests failed.
    #[arg(long, default_value_t = 600)]
    timeout_secs: u64,
}

/// One test's result.
#[derive(Debug, Clone, Serialize)]
pub struct TestResult {
    pub test: String,
    pub passed: bool,
    /// What this test is worth (its share of its row).
    pub points: f64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    #[serde(skip)]
    pub bonus: bool,
}

/// One lab's grade.
#[derive(Debug, Clone, Serialize)]
pub struct LabGrade {
    pub lab: String,
    pub tests: usize,
    pub passed: usize,
    pub points: f64,
    pub max_points: u32,
    pub bonus: f64,
    /// Why the lab could not be tested as a whole (does not build, timed out), if so.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    pub results: Vec<TestResult>,
    pub seconds: f64,
}

/// Grades one lab from a run's outcomes. A test the table names that the run did not list is a
/// grading error (the table and the test file are out of step), unless the run failed as a whole.
pub fn score(name: &str, lab: &points::Lab, run: &libtest::LabRun) -> anyhow::Result<LabGrade> {
    if run.error.is_none() {
        let missing: Vec<&str> = lab
            .tests()
            .filter(|t| !run.listed.iter().any(|l| l == t))
            .collect();
        if !missing.is_empty() {
            bail!(
                "tests/points.toml grades tests that --test {} does not have: {}",
                lab.test_file,
                missing.join(", ")
            );
        }
    }
    let mut results = Vec::new();
    for (rows, bonus) in [(&lab.rows, false), (&lab.bonus, true)] {
        for row in rows.iter() {
            let share = f64::from(row.points) / row.tests.len() as f64;
            for test in &row.tests {
                let outcome = run.outcomes.get(test).cloned().unwrap_or_else(|| {
                    Outcome::Failed(
                        run.error
                            .clone()
                            .unwrap_or_else(|| "did not run".to_string()),
                    )
                });
                results.push(TestResult {
                    test: test.clone(),
                    passed: outcome == Outcome::Passed,
                    points: share,
                    reason: match outcome {
                        Outcome::Passed => None,
                        Outcome::Failed(reason) => Some(reason),
                    },
                    bonus,
                });
            }
        }
    }
    let earned = |bonus: bool| -> f64 {
        add(results
            .iter()
            .filter(|r| r.passed && r.bonus == bonus)
            .map(|r| r.points))
    };
    Ok(LabGrade {
        lab: name.to_string(),
        tests: results.len(),
        passed: results.iter().filter(|r| r.passed).count(),
        points: earned(false),
        max_points: lab.max_points(),
        bonus: earned(true),
        reason: run.error.clone(),
        seconds: run.elapsed.as_secs_f64(),
        results,
    })
}

/// Builds the lab's binaries, then runs its tests: a lab that does not build scores nothing, with
/// the compiler's first error as the reason.
fn grade_lab(
    workspace: &Path,
    target_dir: Option<&PathBuf>,
    name: &str,
    lab: &points::Lab,
    limit: Duration,
) -> anyhow::Result<LabGrade> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut build = std::process::Command::new(cargo);
    build
        .current_dir(workspace)
        .args(["build", "-p", &lab.package, "--bins"])
        .env("CARGO_TERM_COLOR", "never");
    if let Some(dir) = target_dir {
        build.env("CARGO_TARGET_DIR", dir);
    }
    let built = libtest::run_bounded(build, limit)?;
    let run = if built.success {
        libtest::run_lab(workspace, target_dir, &lab.test_file, None, limit)?
    } else {
        libtest::LabRun {
            error: Some(if built.timed_out {
                format!("the build took longer than {} s", limit.as_secs())
            } else {
                format!("{} does not build: {}", lab.package, built.first_error())
            }),
            elapsed: built.elapsed,
            ..Default::default()
        }
    };
    score(name, lab, &run)
}

/// The labs to grade: `--labs`, or every lab of the table.
fn chosen<'a>(
    points: &'a Points,
    labs: Option<&[String]>,
) -> anyhow::Result<Vec<(&'a str, &'a points::Lab)>> {
    match labs {
        None => Ok(points.labs.iter().map(|(n, l)| (n.as_str(), l)).collect()),
        Some(names) => names
            .iter()
            .map(|n| {
                let name = n.split('-').next().unwrap_or(n);
                points
                    .labs
                    .get_key_value(name)
                    .map(|(k, l)| (k.as_str(), l))
                    .with_context(|| {
                        format!(
                            "no lab {n:?} in tests/points.toml (labs: {})",
                            points.labs.keys().cloned().collect::<Vec<_>>().join(", ")
                        )
                    })
            })
            .collect(),
    }
}

/// Grades `labs` in `workspace`; `Err` only when grading itself failed.
pub fn grade_workspace(
    workspace: &Path,
    target_dir: Option<&PathBuf>,
    points: &Points,
    labs: Option<&[String]>,
    limit: Duration,
    mut progress: impl FnMut(&str),
) -> anyhow::Result<Vec<LabGrade>> {
    let mut grades = Vec::new();
    for (name, lab) in chosen(points, labs)? {
        progress(name);
        grades.push(grade_lab(workspace, target_dir, name, lab, limit)?);
    }
    Ok(grades)
}

/// A scratch copy of `submission` with the reference's `tests/` in place of its own.
fn prepare_submission(reference: &Path, submission: &Path, scratch: &Path) -> anyhow::Result<()> {
    if !submission.join("Cargo.toml").is_file() {
        bail!(
            "{} is not a cargo workspace (no Cargo.toml)",
            submission.display()
        );
    }
    if scratch.exists() {
        std::fs::remove_dir_all(scratch)
            .with_context(|| format!("cannot clear {}", scratch.display()))?;
    }
    std::fs::create_dir_all(scratch)?;
    workspace::copy_workspace(submission, scratch)?;
    let tests = scratch.join("tests");
    if tests.exists() {
        std::fs::remove_dir_all(&tests)?;
    }
    for file in workspace::source_files(reference)? {
        if file.starts_with("tests") {
            let to = scratch.join(&file);
            std::fs::create_dir_all(to.parent().expect("under tests/"))?;
            std::fs::copy(reference.join(&file), &to)?;
        }
    }
    Ok(())
}

pub fn run(options: Options) -> anyhow::Result<()> {
    let reference = crate::workspace_root();
    let points = Points::load(&reference)?;
    let limit = Duration::from_secs(options.timeout_secs);
    let labs = options.labs.as_deref();
    // A submission is copied under the reference's target/ and built in a target dir of its own
    // (cargo names a package's artifacts the same in every copy of a workspace, so sharing the
    // reference's would replace its binaries), reused from one submission to the next: the
    // dependencies are built once per class.
    let scratch_root = reference.join("target/grade");
    let scratch = scratch_root.join("submission");
    let target_dir = scratch_root.join("target");

    if let Some(folder) = &options.submissions {
        return grade_class(
            &reference,
            folder,
            &points,
            labs,
            limit,
            &scratch,
            &target_dir,
            options.output.as_deref(),
        );
    }
    let (workspace, target) = match &options.submission {
        Some(submission) => {
            prepare_submission(&reference, submission, &scratch)?;
            (scratch.clone(), Some(&target_dir))
        }
        None => (std::env::current_dir()?, None),
    };
    let grades = grade_workspace(&workspace, target, &points, labs, limit, |lab| {
        eprintln!("grading {lab} ...");
    })?;
    print!("{}", render(&grades, options.format)?);
    Ok(())
}

/// Grades every folder of `folder` (sorted by name), writing a CSV row per student as it goes.
#[allow(clippy::too_many_arguments)]
fn grade_class(
    reference: &Path,
    folder: &Path,
    points: &Points,
    labs: Option<&[String]>,
    limit: Duration,
    scratch: &Path,
    target_dir: &PathBuf,
    output: Option<&Path>,
) -> anyhow::Result<()> {
    let mut students: Vec<PathBuf> = std::fs::read_dir(folder)
        .with_context(|| format!("cannot list {}", folder.display()))?
        .filter_map(Result::ok)
        .map(|e| e.path())
        // One folder per student; hidden ones (`.git` of a folder kept in git) are not students.
        .filter(|p| {
            p.is_dir()
                && !p
                    .file_name()
                    .is_some_and(|n| n.to_string_lossy().starts_with('.'))
        })
        .collect();
    students.sort();
    let chosen = chosen(points, labs)?;
    let mut out: Box<dyn std::io::Write> = match output {
        Some(path) => Box::new(
            std::fs::File::create(path)
                .with_context(|| format!("cannot create {}", path.display()))?,
        ),
        None => Box::new(std::io::stdout()),
    };
    let mut header = vec!["student".to_string()];
    header.extend(chosen.iter().map(|(n, _)| n.to_string()));
    header.extend(["bonus", "total", "max", "reason"].map(String::from));
    writeln!(out, "{}", csv_line(&header))?;
    let bar = indicatif::ProgressBar::new(students.len() as u64).with_style(
        indicatif::ProgressStyle::with_template("{bar:30} {pos}/{len} {elapsed_precise} {msg}")
            .expect("a valid template"),
    );
    for student in &students {
        let name = student
            .file_name()
            .unwrap_or_default()
            .to_string_lossy()
            .into_owned();
        bar.set_message(name.clone());
        let mut row = vec![name.clone()];
        let graded = prepare_submission(reference, student, scratch).and_then(|()| {
            grade_workspace(scratch, Some(target_dir), points, labs, limit, |lab| {
                bar.set_message(format!("{name}: {lab}"));
            })
        });
        match graded {
            Ok(grades) => {
                row.extend(grades.iter().map(|g| format!("{}", g.points)));
                let bonus = add(grades.iter().map(|g| g.bonus));
                let total = add(grades.iter().map(|g| g.points));
                let max: u32 = grades.iter().map(|g| g.max_points).sum();
                let reasons: Vec<String> = grades
                    .iter()
                    .filter_map(|g| g.reason.as_ref().map(|r| format!("{}: {r}", g.lab)))
                    .collect();
                row.extend([
                    format!("{bonus}"),
                    format!("{total}"),
                    max.to_string(),
                    reasons.join("; "),
                ]);
            }
            Err(error) => {
                // A submission we could not even set up scores zero, with the reason; a fault of
                // the grader itself (the table) stops the class.
                if error.to_string().contains("tests/points.toml") {
                    bar.abandon();
                    return Err(error);
                }
                row.extend(chosen.iter().map(|_| "0".to_string()));
                let max: u32 = chosen.iter().map(|(_, l)| l.max_points()).sum();
                row.extend([
                    "0".to_string(),
                    "0".to_string(),
                    max.to_string(),
                    format!("{error:#}"),
                ]);
            }
        }
        bar.suspend(|| writeln!(out, "{}", csv_line(&row)).and_then(|()| out.flush()))?;
        bar.inc(1);
    }
    bar.finish_with_message("done");
    Ok(())
}

/// A sum of points that is 0, not -0, when there is nothing to add (f64's `Sum` starts at -0.0),
/// rounded to a tenth.
fn add(points: impl Iterator<Item = f64>) -> f64 {
    (points.fold(0.0, |a, b| a + b) * 10.0).round() / 10.0
}

fn csv_field(field: &str) -> String {
    if field.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", field.replace('"', "\"\""))
    } else {
        field.to_string()
    }
}

fn csv_line(fields: &[String]) -> String {
    fields
        .iter()
        .map(|f| csv_field(f))
        .collect::<Vec<_>>()
        .join(",")
}

fn xml_escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// The grades in one of the output formats.
pub fn render(grades: &[LabGrade], format: Format) -> anyhow::Result<String> {
    let mut out = String::new();
    let total = add(grades.iter().map(|g| g.points));
    let max: u32 = grades.iter().map(|g| g.max_points).sum();
    let bonus = add(grades.iter().map(|g| g.bonus));
    match format {
        Format::Table => {
            for g in grades {
                writeln!(
                    out,
                    "{:<6} {:>3}/{:<3} tests passed  {:>5}/{} points{}",
                    g.lab,
                    g.passed,
                    g.tests,
                    g.points,
                    g.max_points,
                    if g.bonus > 0.0 {
                        format!("  (+{} bonus)", g.bonus)
                    } else {
                        String::new()
                    }
                )?;
                if let Some(reason) = &g.reason {
                    writeln!(out, "       {reason}")?;
                }
                // A lab that failed as a whole has said why once, above.
                let failed_alone =
                    |r: &&TestResult| !r.passed && (g.reason.is_none() || r.reason != g.reason);
                for r in g.results.iter().filter(failed_alone) {
                    writeln!(
                        out,
                        "       FAILED {}{} (-{:.1}): {}",
                        r.test,
                        if r.bonus { " [bonus]" } else { "" },
                        r.points,
                        r.reason.as_deref().unwrap_or("")
                    )?;
                }
            }
            writeln!(
                out,
                "total  {total}/{max} points{}",
                if bonus > 0.0 {
                    format!(" (+{bonus} bonus)")
                } else {
                    String::new()
                }
            )?;
        }
        Format::Json => {
            let value = serde_json::json!({
                "labs": grades,
                "points": total,
                "max_points": max,
                "bonus": bonus,
            });
            out = serde_json::to_string_pretty(&value)? + "\n";
        }
        Format::Csv => {
            writeln!(out, "lab,test,bonus,passed,points,reason")?;
            for g in grades {
                for r in &g.results {
                    let earned = if r.passed { r.points } else { 0.0 };
                    writeln!(
                        out,
                        "{}",
                        csv_line(&[
                            g.lab.clone(),
                            r.test.clone(),
                            r.bonus.to_string(),
                            r.passed.to_string(),
                            format!("{:.2}", earned),
                            r.reason.clone().unwrap_or_default(),
                        ])
                    )?;
                }
            }
        }
        Format::Junit => {
            let tests: usize = grades.iter().map(|g| g.tests).sum();
            let failures: usize = grades.iter().map(|g| g.tests - g.passed).sum();
            writeln!(out, r#"<?xml version="1.0" encoding="UTF-8"?>"#)?;
            writeln!(
                out,
                r#"<testsuites name="netlabs" tests="{tests}" failures="{failures}">"#
            )?;
            for g in grades {
                writeln!(
                    out,
                    r#"  <testsuite name="{}" tests="{}" failures="{}" time="{:.1}">"#,
                    g.lab,
                    g.tests,
                    g.tests - g.passed,
                    g.seconds
                )?;
                for r in &g.results {
                    let name = xml_escape(&r.test);
                    if r.passed {
                        writeln!(
                            out,
                            r#"    <testcase classname="{}" name="{name}"/>"#,
                            g.lab
                        )?;
                    } else {
                        let reason = xml_escape(r.reason.as_deref().unwrap_or("failed"));
                        writeln!(out, r#"    <testcase classname="{}" name="{name}">"#, g.lab)?;
                        writeln!(out, r#"      <failure message="{reason}"/>"#)?;
                        writeln!(out, "    </testcase>")?;
                    }
                }
                writeln!(out, "  </testsuite>")?;
            }
            writeln!(out, "</testsuites>")?;
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table() -> Points {
        Points::parse(
            r#"
[lab09]
package = "lab09-demo"
test-file = "lab09_demo"
rows = [
  { points = 60, tests = ["serves"] },
  { points = 40, tests = ["a::x", "b::x"] },
]
bonus = [{ points = 2, tests = ["extra"] }]
"#,
        )
        .unwrap()
    }

    fn run_of(results: &[(&str, bool)]) -> libtest::LabRun {
        libtest::LabRun {
            listed: ["serves", "a::x", "b::x", "extra", "ungraded"]
                .map(String::from)
                .to_vec(),
            outcomes: results
                .iter()
                .map(|&(n, ok)| {
                    (
                        n.to_string(),
                        if ok {
                            Outcome::Passed
                        } else {
                            Outcome::Failed("boom".into())
                        },
                    )
                })
                .collect(),
            ..Default::default()
        }
    }

    #[test]
    fn a_rows_points_are_shared_by_its_tests() {
        let points = table();
        let run = run_of(&[
            ("serves", true),
            ("a::x", true),
            ("b::x", false),
            ("extra", true),
        ]);
        let grade = score("lab09", &points.labs["lab09"], &run).unwrap();
        assert_eq!(
            (grade.points, grade.bonus, grade.passed, grade.tests),
            (80.0, 2.0, 3, 4)
        );
        let failed: Vec<_> = grade.results.iter().filter(|r| !r.passed).collect();
        assert_eq!(failed.len(), 1);
        assert_eq!(failed[0].reason.as_deref(), Some("boom"));
        let text = render(std::slice::from_ref(&grade), Format::Table).unwrap();
        assert!(
            text.starts_with("lab09    3/4   tests passed     80/100 points  (+2 bonus)\n"),
            "{text}"
        );
        let json: serde_json::Value =
            serde_json::from_str(&render(std::slice::from_ref(&grade), Format::Json).unwrap())
                .unwrap();
        assert_eq!(json["labs"][0]["points"], 80.0);
        let junit = render(std::slice::from_ref(&grade), Format::Junit).unwrap();
        assert!(
            junit.contains(r#"<testcase classname="lab09" name="b::x">"#)
                && junit.contains(r#"failures="1""#)
        );
        let csv = render(&[grade], Format::Csv).unwrap();
        assert!(
            csv.contains("\nlab09,b::x,false,false,0.00,boom\n"),
            "{csv}"
        );
    }

    #[test]
    fn a_run_that_failed_as_a_whole_scores_zero_with_its_reason() {
        let points = table();
        let run = libtest::LabRun {
            error: Some("lab09-demo does not build: error[E0425]".into()),
            ..Default::default()
        };
        let grade = score("lab09", &points.labs["lab09"], &run).unwrap();
        assert_eq!(grade.points, 0.0);
        assert!(grade
            .results
            .iter()
            .all(|r| r.reason.as_deref() == Some("lab09-demo does not build: error[E0425]")));
    }

    #[test]
    fn a_graded_test_the_file_does_not_have_is_a_grading_error() {
        let points = table();
        let mut run = run_of(&[("serves", true)]);
        run.listed.retain(|n| n != "b::x");
        let error = score("lab09", &points.labs["lab09"], &run)
            .unwrap_err()
            .to_string();
        assert_eq!(
            error,
            "tests/points.toml grades tests that --test lab09_demo does not have: b::x"
        );
    }

    #[test]
    fn csv_fields_are_quoted_when_needed() {
        assert_eq!(
            csv_line(&["a".into(), "b, c".into(), "say \"hi\"".into()]),
            "a,\"b, c\",\"say \"\"hi\"\"\""
        );
    }
}
