//! `--demo N --svg FILE`: the demo's timeline drawn as an SVG picture, one row per client.
//!
//! Run these alone with `cargo test -p tests --test demo_svg`.

use std::process::Command;

use tests::{binary, run_binary, run_with_timeout, DEMO_TIMEOUT};

/// The servers of the five labs (the contract's table).
const SERVERS: &[&str] = &[
    "iterative-server",
    "fork-server",
    "thread-server",
    "multiplex-server",
    "ipc-server",
];

#[test]
fn the_demo_draws_its_timeline_with_a_row_per_client() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let path = dir.path().join("timeline.svg");
    let mut command = Command::new(binary("iterative-server"));
    command.args(["--demo", "3", "--svg"]).arg(&path);
    let (status, stdout, stderr) = run_with_timeout(command, DEMO_TIMEOUT);
    assert!(status.success(), "{status}\n{stdout}\n{stderr}");

    let svg = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("no picture at {}: {e}\n{stdout}", path.display()));
    let doc = roxmltree::Document::parse(&svg).unwrap_or_else(|e| panic!("not XML: {e}\n{svg}"));
    let root = doc.root_element();
    assert_eq!(root.tag_name().name(), "svg", "{svg}");
    assert_eq!(
        root.tag_name().namespace(),
        Some("http://www.w3.org/2000/svg"),
        "{svg}"
    );
    let rows = doc
        .descendants()
        .filter(|n| n.has_tag_name("g") && n.attribute("class") == Some("client"))
        .count();
    assert_eq!(rows, 3, "{svg}");
}

#[test]
fn every_server_takes_svg_and_only_with_demo() {
    for server in SERVERS {
        let (status, help, stderr) = run_binary(server, &["--help"]);
        assert!(status.success(), "{server} --help: {status}\n{stderr}");
        assert!(
            help.contains("--svg"),
            "{server} --help lacks --svg:\n{help}"
        );
    }
    // Without --demo there is no timeline to draw: bad usage, status 2, and no file.
    let dir = tempfile::tempdir().expect("a temporary directory");
    let path = dir.path().join("timeline.svg");
    let path = path.to_str().expect("a UTF-8 temporary path");
    let (status, _, stderr) = run_binary("iterative-server", &["--svg", path]);
    assert_eq!(status.code(), Some(2), "{stderr}");
    assert!(!std::path::Path::new(path).exists());
}

#[test]
fn a_picture_that_cannot_be_written_is_an_error_before_the_demo_runs() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let path = dir.path().join("no such folder").join("timeline.svg");
    let mut command = Command::new(binary("iterative-server"));
    command.args(["--demo", "2", "--svg"]).arg(&path);
    let (status, stdout, stderr) = run_with_timeout(command, DEMO_TIMEOUT);
    assert_eq!(status.code(), Some(1), "{stdout}\n{stderr}");
    assert!(stderr.contains("error:"), "{stderr}");
    assert!(
        !stdout.contains("== demo"),
        "the demo ran anyway:\n{stdout}"
    );
}
