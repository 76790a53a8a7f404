//! The bench, on a tiny setting, so that it cannot rot: it starts real servers, drives them,
//! prints its tables and writes its CSV, JSON and SVG files. The figures themselves are not
//! asserted (they depend on the machine); what each model *can* do is (the iterative server
//! greets one connection at a time, the epoll server all of them).
//!
//! Run it alone with `cargo test -p tests --test bench_smoke`.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use tests::{binary, run_with_timeout};

/// The whole run is bounded: a bench that hangs fails the test instead of blocking it.
const LIMIT: Duration = Duration::from_secs(120);

/// Runs the debug bench binary with `args`; returns (success, stdout, stderr).
fn bench(args: &[&str]) -> (bool, String, String) {
    let mut command = Command::new(binary("bench"));
    command.args(args);
    let (status, out, err) = run_with_timeout(command, LIMIT);
    (status.success(), out, err)
}

/// The folder of the debug server binaries the harness built.
fn debug_bin_dir() -> String {
    // Build the two labs the smoke run uses (once per test process), so they are up to date.
    let iterative = binary("iterative-server");
    binary("multiplex-server");
    iterative.parent().expect("a folder").display().to_string()
}

fn json(path: &Path) -> serde_json::Value {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{} is not JSON: {e}", path.display()))
}

#[test]
fn a_tiny_sweep_prints_the_table_and_writes_csv_json_and_svg() {
    let out = tempfile::tempdir().expect("temp dir");
    let bin_dir = debug_bin_dir();
    let out_dir = out.path().display().to_string();
    let (ok, stdout, stderr) = bench(&[
        "--targets",
        "iterative,epoll,tokio-ct",
        "--workloads",
        "echo,connect,idle",
        "--concurrency",
        "1,4",
        "--duration",
        "0.3",
        "--stall",
        "0.3",
        "--bin-dir",
        &bin_dir,
        "--out",
        &out_dir,
    ]);
    assert!(ok, "the bench failed; stderr:\n{stderr}\nstdout:\n{stdout}");

    // The markdown tables: every workload, every target at every level.
    for heading in ["## echo", "## connect", "## idle", "## leaks and shutdown"] {
        assert!(stdout.contains(heading), "no {heading:?} in:\n{stdout}");
    }
    let section = |heading: &str| {
        let start = stdout.find(heading).expect("checked above");
        let rest = &stdout[start + heading.len()..];
        rest[..rest.find("\n## ").unwrap_or(rest.len())].to_string()
    };
    for heading in ["## echo", "## connect", "## idle"] {
        let table = section(heading);
        for target in ["iterative", "epoll", "tokio-ct"] {
            for c in [1, 4] {
                let row = format!("| {target} | {c} |");
                assert!(
                    table.contains(&row),
                    "no {row:?} under {heading:?}:\n{stdout}"
                );
            }
        }
    }
    assert!(
        !stdout.contains("skipped"),
        "a target was skipped:\n{stdout}"
    );

    // The files.
    let dir = out.path();
    for name in [
        "results.json",
        "results.md",
        "echo.csv",
        "connect.csv",
        "idle.csv",
        "leaks.csv",
        "echo.svg",
        "connect.svg",
    ] {
        assert!(dir.join(name).is_file(), "{name} was not written");
    }
    let echo_csv = std::fs::read_to_string(dir.join("echo.csv")).unwrap();
    let mut lines = echo_csv.lines();
    assert!(lines
        .next()
        .unwrap()
        .starts_with("target,workload,concurrency,"));
    assert_eq!(lines.count(), 6, "3 targets × 2 levels:\n{echo_csv}");
    let svg = std::fs::read_to_string(dir.join("echo.svg")).unwrap();
    assert!(svg.contains("<svg"), "not an SVG");
    for target in ["iterative", "epoll", "tokio-ct"] {
        assert!(svg.contains(target), "the chart has no line for {target}");
    }

    // What the models can do shows in the results: the iterative server greets one connection
    // of four (the rest wait in the accept queue); epoll and tokio greet all four.
    let results = json(&dir.join("results.json"));
    let timed = results["timed"].as_array().expect("timed rows");
    assert_eq!(timed.len(), 12, "3 targets × 2 workloads × 2 levels");
    let greeted = |target: &str, workload: &str, c: u64| {
        timed
            .iter()
            .find(|r| r["target"] == target && r["workload"] == workload && r["concurrency"] == c)
            .and_then(|r| r["greeted"].as_u64())
            .unwrap_or_else(|| panic!("no {workload} row for {target} at C={c}"))
    };
    assert_eq!(
        greeted("iterative", "echo", 4),
        1,
        "the iterative server serves one at a time"
    );
    assert_eq!(greeted("epoll", "echo", 4), 4);
    assert_eq!(greeted("tokio-ct", "echo", 4), 4);
    for row in timed.iter().filter(|r| r["workload"] == "echo") {
        assert!(
            row["completed"].as_u64().unwrap() > 0,
            "no request completed: {row}"
        );
        assert!(row["p99_us"].as_f64().unwrap() > 0.0, "no latency: {row}");
    }
    // The ratios against the tokio baseline of the same run.
    let tokio_row = timed
        .iter()
        .find(|r| r["target"] == "tokio-ct" && r["workload"] == "echo")
        .unwrap();
    assert_eq!(tokio_row["vs_tokio_ct"].as_f64(), Some(1.0));
    // Every server was stopped with SIGTERM and exited 0, as the contract says.
    let leaks = results["leaks"].as_array().expect("leak rows");
    assert_eq!(leaks.len(), 3);
    for row in leaks {
        assert_eq!(row["stop"], "exit 0", "{row}");
    }
}

#[test]
fn a_tiny_soak_prints_its_verdicts_and_writes_its_csv() {
    let out = tempfile::tempdir().expect("temp dir");
    let bin_dir = debug_bin_dir();
    binary("thread-server");
    let out_dir = out.path().display().to_string();
    let targets = ["iterative", "thread", "epoll"];
    let (ok, stdout, stderr) = bench(&[
        "--targets",
        &targets.join(","),
        "--workloads",
        "soak",
        "--soak-connections",
        "400",
        "--soak-batch",
        "50",
        // Debug builds and 400 connections are no place to judge a few hundred KiB of RSS: the
        // counts (processes, threads, descriptors, zombies) are what this test holds to.
        "--soak-rss-tolerance",
        "8192",
        "--bin-dir",
        &bin_dir,
        "--out",
        &out_dir,
    ]);
    assert!(ok, "the bench failed; stderr:\n{stderr}\nstdout:\n{stdout}");

    // The table: every target made its 400 connections, 50 at a time, and did not grow. The
    // iterative server served each batch one connection after the other without a deadlock.
    let start = stdout
        .find("## soak")
        .unwrap_or_else(|| panic!("no soak section:\n{stdout}"));
    let section = &stdout[start..];
    let section = &section[..section[3..].find("\n## ").map_or(section.len(), |i| i + 3)];
    assert!(
        section.contains("| verdict |"),
        "no verdict column:\n{section}"
    );
    for target in targets {
        let row = section
            .lines()
            .find(|l| l.starts_with(&format!("| {target} | ")))
            .unwrap_or_else(|| panic!("no soak row for {target}:\n{section}"));
        assert!(
            row.starts_with(&format!("| {target} | 400 | 50 | 0 |")),
            "{target}: 400 connections, 50 at a time, no error: {row}"
        );
        assert!(row.ends_with("| no growth |"), "{target}: {row}");
    }

    // The CSV files.
    let dir = out.path();
    let soak_csv = std::fs::read_to_string(dir.join("soak.csv")).expect("soak.csv");
    let mut lines = soak_csv.lines();
    let header: Vec<&str> = lines.next().unwrap().split(',').collect();
    let column = |name: &str| {
        header
            .iter()
            .position(|h| *h == name)
            .unwrap_or_else(|| panic!("no {name} column in soak.csv: {header:?}"))
    };
    let (verdict, passed, completed) = (column("verdict"), column("passed"), column("completed"));
    let rows: Vec<Vec<&str>> = lines.map(|l| l.split(',').collect()).collect();
    assert_eq!(rows.len(), targets.len(), "{soak_csv}");
    for row in &rows {
        assert_eq!(row[verdict], "no growth", "{soak_csv}");
        assert_eq!(row[passed], "true", "{soak_csv}");
        assert_eq!(row[completed], "400", "{soak_csv}");
    }
    let samples = std::fs::read_to_string(dir.join("soak-samples.csv")).expect("soak-samples.csv");
    for target in targets {
        for point in ["before", "100%", "after"] {
            assert!(
                samples.contains(&format!("{target},{point},")),
                "no {point} reading of {target}:\n{samples}"
            );
        }
    }

    // The JSON: a reading after each tenth reached (8 batches of 50 reach 8 different tenths).
    let results = json(&dir.join("results.json"));
    let soak = results["soak"].as_array().expect("soak rows");
    assert_eq!(soak.len(), targets.len());
    for row in soak {
        let tenths: Vec<u64> = row["samples"]
            .as_array()
            .expect("samples")
            .iter()
            .map(|s| s["tenth"].as_u64().unwrap())
            .collect();
        assert_eq!(tenths, [1, 2, 3, 5, 6, 7, 8, 10], "{row}");
        assert_eq!(row["errors"], 0, "{row}");
    }
}

#[test]
fn a_missing_server_is_skipped_with_a_reason_and_the_rest_is_measured() {
    let out = tempfile::tempdir().expect("temp dir");
    let empty = tempfile::tempdir().expect("temp dir");
    let (ok, stdout, stderr) = bench(&[
        "--targets",
        "iterative,tokio-ct",
        "--workloads",
        "echo",
        "--concurrency",
        "2",
        "--duration",
        "0.2",
        "--bin-dir",
        &empty.path().display().to_string(),
        "--out",
        &out.path().display().to_string(),
    ]);
    assert!(
        ok,
        "a missing binary must not fail the run; stderr:\n{stderr}"
    );
    assert!(
        stderr.contains("skipping iterative") && stderr.contains("iterative-server does not exist"),
        "{stderr}"
    );
    assert!(stdout.contains("skipped **iterative**"), "{stdout}");
    assert!(stdout.contains("| tokio-ct | 2 |"), "{stdout}");
}

#[test]
fn an_unknown_target_is_a_clear_error() {
    let (ok, _, stderr) = bench(&["--targets", "nginx", "--out", "/nonexistent/never-written"]);
    assert!(!ok);
    assert!(stderr.contains("unknown target \"nginx\""), "{stderr}");
    assert!(stderr.contains("epoll"), "it lists the targets: {stderr}");
}
