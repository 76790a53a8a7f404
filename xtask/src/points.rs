//! The table of points, `tests/points.toml`, and GRADING.md's tables, which must agree with it.
//!
//! One machine-readable table drives the grader and the GitHub Classroom workflow; the
//! instructor's guide shows the same rows for people. [`grading_md_rows`] reads those tables back
//! and [`compare`] says exactly which row differs, so a renamed test or a changed weight cannot
//! leave the two apart.

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::{bail, Context};
use serde::Deserialize;

/// The points every lab's `rows` add up to.
pub const LAB_POINTS: u32 = 100;

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Row {
    pub points: u32,
    /// Test names as libtest lists them (`epoll::say_reaches_every_other_client`); the row's
    /// points are shared equally by them.
    pub tests: Vec<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct Lab {
    pub package: String,
    pub test_file: String,
    pub rows: Vec<Row>,
    #[serde(default)]
    pub bonus: Vec<Row>,
}

impl Lab {
    /// Every test this lab grades, rows then bonus, each once.
    pub fn tests(&self) -> impl Iterator<Item = &str> {
        self.rows
            .iter()
            .chain(&self.bonus)
            .flat_map(|r| r.tests.iter().map(String::as_str))
    }

    /// The points of the rows (not the bonus).
    pub fn max_points(&self) -> u32 {
        self.rows.iter().map(|r| r.points).sum()
    }

    /// The shell command that runs this lab's acceptance tests, as the grader and the GitHub
    /// Classroom workflow both run it.
    pub fn test_command(&self) -> String {
        format!("cargo test -p tests --test {}", self.test_file)
    }
}

/// `tests/points.toml`: lab name (`lab02`) → its table.
#[derive(Debug, Clone)]
pub struct Points {
    pub labs: BTreeMap<String, Lab>,
}

impl Points {
    pub fn parse(text: &str) -> anyhow::Result<Points> {
        let labs: BTreeMap<String, Lab> = toml::from_str(text)?;
        let points = Points { labs };
        points.check()?;
        Ok(points)
    }

    pub fn load(workspace: &Path) -> anyhow::Result<Points> {
        let path = workspace.join("tests/points.toml");
        let text = std::fs::read_to_string(&path)
            .with_context(|| format!("cannot read {}", path.display()))?;
        Points::parse(&text)
            .with_context(|| format!("{} is not a valid table of points", path.display()))
    }

    fn check(&self) -> anyhow::Result<()> {
        for (name, lab) in &self.labs {
            if lab.max_points() != LAB_POINTS {
                bail!(
                    "[{name}]'s rows add up to {} points, not {LAB_POINTS}",
                    lab.max_points()
                );
            }
            let mut seen = std::collections::BTreeSet::new();
            for row in lab.rows.iter().chain(&lab.bonus) {
                if row.tests.is_empty() {
                    bail!("[{name}] has a row of {} points with no test", row.points);
                }
                for test in &row.tests {
                    if !seen.insert(test) {
                        bail!("[{name}] grades `{test}` twice");
                    }
                }
            }
        }
        Ok(())
    }

    pub fn lab(&self, name: &str) -> anyhow::Result<&Lab> {
        self.labs.get(name).with_context(|| {
            format!(
                "no lab {name:?} in tests/points.toml (labs: {})",
                self.labs.keys().cloned().collect::<Vec<_>>().join(", ")
            )
        })
    }
}

/// One lab's rows as GRADING.md shows them.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct GradingLab {
    pub test_file: String,
    pub rows: Vec<Row>,
    pub bonus: Vec<Row>,
}

/// Reads GRADING.md's tables: under each `### labNN-name (`--test file`)` heading, the first table
/// is the lab's 100 points and any later one its bonus. A row is `| points | tests | checks |`
/// with every test in backquotes; a row with empty points continues the row above; a points cell
/// `(N per API)` under a header naming the modules (`per API: `select::`, `poll::``) is one row of
/// N points per module.
pub fn grading_md_rows(text: &str) -> anyhow::Result<BTreeMap<String, GradingLab>> {
    let mut labs = BTreeMap::new();
    let mut current: Option<(String, GradingLab)> = None;
    let mut table_index = 0;
    let mut in_table = false;
    let mut per_api_modules: Vec<String> = Vec::new();
    // Rows of the current table before the per-API expansion: (points, per API, tests).
    let mut raw: Vec<(u32, bool, Vec<String>)> = Vec::new();

    let finish_table = |lab: &mut GradingLab,
                        raw: &mut Vec<(u32, bool, Vec<String>)>,
                        modules: &[String],
                        index: usize| {
        let mut rows = Vec::new();
        for (points, per_api, tests) in raw.drain(..) {
            if per_api {
                for module in modules {
                    rows.push(Row {
                        points,
                        tests: tests.iter().map(|t| format!("{module}::{t}")).collect(),
                    });
                }
            } else {
                rows.push(Row { points, tests });
            }
        }
        if index == 0 {
            lab.rows = rows;
        } else {
            lab.bonus.extend(rows);
        }
    };

    for (number, line) in text.lines().enumerate().map(|(i, l)| (i + 1, l)) {
        let is_row = line.trim_start().starts_with('|');
        if in_table && !is_row {
            if let Some((_, lab)) = current.as_mut() {
                finish_table(lab, &mut raw, &per_api_modules, table_index);
            }
            table_index += 1;
            in_table = false;
        }
        if let Some(heading) = line.strip_prefix("### ") {
            if let Some((name, lab)) = current.take() {
                labs.insert(name, lab);
            }
            let lab_name = heading.split('-').next().unwrap_or_default();
            let test_file = heading
                .split_once("(`--test ")
                .and_then(|(_, rest)| rest.split_once("`)"))
                .map(|(file, _)| file.to_string());
            if let (true, Some(test_file)) = (is_lab_name(lab_name), test_file) {
                current = Some((
                    lab_name.to_string(),
                    GradingLab {
                        test_file,
                        ..GradingLab::default()
                    },
                ));
                table_index = 0;
            }
            continue;
        }
        if line.starts_with("## ") {
            if let Some((name, lab)) = current.take() {
                labs.insert(name, lab);
            }
            continue;
        }
        if current.is_none() || !is_row {
            continue;
        }
        let cells: Vec<&str> = line
            .trim()
            .trim_matches('|')
            .split('|')
            .map(str::trim)
            .collect();
        if !in_table {
            // The header row.
            in_table = true;
            per_api_modules = cells
                .get(1)
                .and_then(|c| c.split_once("per API:"))
                .map(|(_, list)| {
                    backquoted(list)
                        .map(|m| m.trim_end_matches("::").to_string())
                        .collect()
                })
                .unwrap_or_default();
            continue;
        }
        if cells
            .iter()
            .all(|c| c.chars().all(|ch| ch == '-' || ch == ':'))
        {
            continue;
        }
        let tests: Vec<String> = backquoted(cells.get(1).copied().unwrap_or_default())
            .map(str::to_string)
            .collect();
        let points_cell = cells[0];
        if points_cell.is_empty() {
            let Some(last) = raw.last_mut() else {
                bail!("GRADING.md:{number}: a row without points and no row above it to continue");
            };
            last.2.extend(tests);
            continue;
        }
        let per_api = points_cell.contains("per API");
        let digits: String = points_cell
            .trim_start_matches('(')
            .chars()
            .take_while(char::is_ascii_digit)
            .collect();
        let points: u32 = digits.parse().with_context(|| {
            format!("GRADING.md:{number}: the points cell {points_cell:?} is not a number")
        })?;
        if per_api && per_api_modules.is_empty() {
            bail!("GRADING.md:{number}: `(N per API)` under a header that names no module (`per API: `select::`, ...`)");
        }
        raw.push((points, per_api, tests));
    }
    if let Some((name, mut lab)) = current.take() {
        if in_table {
            finish_table(&mut lab, &mut raw, &per_api_modules, table_index);
        }
        labs.insert(name, lab);
    }
    Ok(labs)
}

fn is_lab_name(name: &str) -> bool {
    name.len() == 5 && name.starts_with("lab") && name[3..].chars().all(|c| c.is_ascii_digit())
}

/// The `code` spans of a Markdown cell.
fn backquoted(cell: &str) -> impl Iterator<Item = &str> {
    cell.split('`').skip(1).step_by(2).filter(|s| !s.is_empty())
}

/// Every difference between points.toml and GRADING.md, one line each, naming the lab and the
/// row (a row is known by its tests, so one inserted row does not shift every row after it).
pub fn compare(points: &Points, grading: &BTreeMap<String, GradingLab>) -> Vec<String> {
    let mut differences = Vec::new();
    for (name, lab) in &points.labs {
        let Some(shown) = grading.get(name) else {
            differences.push(format!(
                "{name}: points.toml grades it, GRADING.md has no `### {}` table",
                lab.package
            ));
            continue;
        };
        if shown.test_file != lab.test_file {
            differences.push(format!(
                "{name}: GRADING.md says `--test {}`, points.toml says test-file = {:?}",
                shown.test_file, lab.test_file
            ));
        }
        for (kind, ours, theirs) in [
            ("row", &lab.rows, &shown.rows),
            ("bonus row", &lab.bonus, &shown.bonus),
        ] {
            let tests = |row: &Row| row.tests.join(", ");
            for (index, row) in theirs.iter().enumerate() {
                match ours.iter().find(|r| r.tests == row.tests) {
                    Some(r) if r.points == row.points => {}
                    Some(r) => differences.push(format!(
                        "{name} {kind} `{}`: GRADING.md gives {} points, points.toml {}",
                        tests(row),
                        row.points,
                        r.points
                    )),
                    None => differences.push(format!(
                        "{name} {kind} {} of GRADING.md ({} points for `{}`): not in points.toml",
                        index + 1,
                        row.points,
                        tests(row)
                    )),
                }
            }
            for (index, row) in ours.iter().enumerate() {
                if !theirs.iter().any(|r| r.tests == row.tests) {
                    differences.push(format!(
                        "{name} {kind} {} of points.toml ({} points for `{}`): not in GRADING.md",
                        index + 1,
                        row.points,
                        tests(row)
                    ));
                }
            }
            let same_rows = ours.len() == theirs.len()
                && ours
                    .iter()
                    .zip(theirs.iter())
                    .all(|(a, b)| a.tests == b.tests);
            let same_set = ours
                .iter()
                .all(|r| theirs.iter().any(|t| t.tests == r.tests))
                && theirs
                    .iter()
                    .all(|t| ours.iter().any(|r| r.tests == t.tests));
            if same_set && !same_rows {
                differences.push(format!(
                    "{name}: the {kind}s are the same but in another order: keep GRADING.md's order in points.toml"
                ));
            }
        }
    }
    for name in grading.keys() {
        if !points.labs.contains_key(name) {
            differences.push(format!(
                "{name}: GRADING.md has a table, points.toml has no [{name}]"
            ));
        }
    }
    differences
}

#[cfg(test)]
mod tests {
    use super::*;

    const TOML: &str = r#"
[lab09]
package = "lab09-demo"
test-file = "lab09_demo"
rows = [
  { points = 60, tests = ["serves_two"] },
  { points = 20, tests = ["a::x", "a::y"] },
  { points = 20, tests = ["b::x", "b::y"] },
]
bonus = [{ points = 2, tests = ["extra"] }]
"#;

    const MD: &str = "\
# Guide

### lab09-demo (`--test lab09_demo`)

| points | test (per API: `a::`, `b::`) | checks |
|---|---|---|
| 60 | `serves_two` | two at once |
| (20 per API) | `x` | x |
| | `y` | y |

Bonus:

| points | test | checks |
|---|---|---|
| 2 | `extra` | more |

## Where the labs run

| system | labs |
|---|---|
| Linux | all |
";

    #[test]
    fn the_same_rows_compare_equal() {
        let points = Points::parse(TOML).unwrap();
        let grading = grading_md_rows(MD).unwrap();
        assert_eq!(grading["lab09"].rows, points.labs["lab09"].rows);
        assert_eq!(grading["lab09"].bonus, points.labs["lab09"].bonus);
        assert_eq!(compare(&points, &grading), Vec::<String>::new());
    }

    #[test]
    fn a_differing_row_is_named_with_both_sides() {
        let points = Points::parse(TOML).unwrap();
        let renamed = grading_md_rows(&MD.replace("`serves_two`", "`serves_three`")).unwrap();
        assert_eq!(
            compare(&points, &renamed),
            [
                "lab09 row 1 of GRADING.md (60 points for `serves_three`): not in points.toml",
                "lab09 row 1 of points.toml (60 points for `serves_two`): not in GRADING.md"
            ]
        );
        let reweighted = grading_md_rows(&MD.replace("| 60 |", "| 50 |")).unwrap();
        assert_eq!(
            compare(&points, &reweighted),
            ["lab09 row `serves_two`: GRADING.md gives 50 points, points.toml 60"]
        );
        let missing = grading_md_rows(&MD.replace("| 2 | `extra` | more |\n", "")).unwrap();
        assert_eq!(
            compare(&points, &missing),
            ["lab09 bonus row 1 of points.toml (2 points for `extra`): not in GRADING.md"]
        );
    }

    #[test]
    fn a_table_that_does_not_add_up_or_repeats_a_test_is_refused() {
        let short = TOML.replace("points = 60", "points = 50");
        assert!(Points::parse(&short)
            .unwrap_err()
            .to_string()
            .contains("add up to 90 points"));
        let twice = TOML.replace("\"a::y\"", "\"serves_two\"");
        assert!(Points::parse(&twice)
            .unwrap_err()
            .to_string()
            .contains("grades `serves_two` twice"));
    }

    /// The real files: GRADING.md must show exactly the rows of tests/points.toml.
    #[test]
    fn grading_md_shows_the_rows_of_points_toml() {
        let root = crate::workspace_root();
        let points = Points::load(&root).unwrap();
        let grading =
            grading_md_rows(&std::fs::read_to_string(root.join("GRADING.md")).unwrap()).unwrap();
        let differences = compare(&points, &grading);
        assert!(
            differences.is_empty(),
            "GRADING.md's tables and tests/points.toml differ (change both together):\n  {}",
            differences.join("\n  ")
        );
    }
}
