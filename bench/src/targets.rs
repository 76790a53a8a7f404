//! The servers the bench can measure, and how to find their binaries.
//!
//! Each target is one server binary with one set of flags. The labs' binaries are found by asking
//! cargo to build their package (`cargo build --release -p <package> --bins
//! --message-format=json-render-diagnostics`, reading each artifact's `executable` field), or in
//! `--bin-dir`. A lab that does not build yet, or has no server binary yet, is skipped with a
//! reason: the bench measures whatever exists.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// One server configuration to measure.
#[derive(Clone, Debug)]
pub struct Target {
    /// Short name, used by `--targets` and in the tables.
    pub name: &'static str,
    /// The package that ships the binary (`None` for the tokio baseline, which is the bench).
    pub package: Option<&'static str>,
    /// The binary's name.
    pub binary: &'static str,
    /// Flags beyond the shared `--port 0 --quiet --backlog N`.
    pub args: Vec<String>,
    /// What the row means, in a few words.
    pub label: String,
}

/// Every target, in the order of the tables.
pub fn all(prefork: u32, pool: u32) -> Vec<Target> {
    let lab = |name, package, binary, args: &[&str], label: &str| Target {
        name,
        package: Some(package),
        binary,
        args: args.iter().map(|s| s.to_string()).collect(),
        label: label.to_string(),
    };
    let prefork_s = prefork.to_string();
    let pool_s = pool.to_string();
    vec![
        lab(
            "iterative",
            "lab01-iterative",
            "iterative-server",
            &[],
            "lab01 iterative-server",
        ),
        lab(
            "fork",
            "lab02-fork",
            "fork-server",
            &[],
            "lab02 fork-server (fork per client)",
        ),
        lab(
            "prefork",
            "lab02-fork",
            "fork-server",
            &["--prefork", &prefork_s],
            &format!("lab02 fork-server --prefork {prefork}"),
        ),
        lab(
            "thread",
            "lab03-thread",
            "thread-server",
            &[],
            "lab03 thread-server (thread per client)",
        ),
        lab(
            "pool",
            "lab03-thread",
            "thread-server",
            &["--pool", &pool_s],
            &format!("lab03 thread-server --pool {pool}"),
        ),
        lab(
            "select",
            "lab04-multiplex",
            "multiplex-server",
            &["--api", "select"],
            "lab04 multiplex-server --api select",
        ),
        lab(
            "poll",
            "lab04-multiplex",
            "multiplex-server",
            &["--api", "poll"],
            "lab04 multiplex-server --api poll",
        ),
        lab(
            "epoll",
            "lab04-multiplex",
            "multiplex-server",
            &["--api", "epoll"],
            "lab04 multiplex-server --api epoll",
        ),
        lab(
            "epoll-edge",
            "lab04-multiplex",
            "multiplex-server",
            &["--api", "epoll", "--edge"],
            "lab04 multiplex-server --api epoll --edge",
        ),
        lab("ipc", "lab05-ipc", "ipc-server", &[], "lab05 ipc-server"),
        Target {
            name: "tokio-ct",
            package: None,
            binary: "bench",
            args: vec!["serve-tokio".into(), "--runtime".into(), "current".into()],
            label: "tokio current-thread (baseline)".into(),
        },
        Target {
            name: "tokio-mt",
            package: None,
            binary: "bench",
            args: vec!["serve-tokio".into(), "--runtime".into(), "multi".into()],
            label: "tokio multi-thread (baseline)".into(),
        },
    ]
}

/// The names `--targets` accepts.
pub fn names() -> Vec<&'static str> {
    all(1, 1).iter().map(|t| t.name).collect()
}

/// The workspace root (the folder above this crate), where `cargo build` runs.
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("bench/ sits in the workspace")
        .to_path_buf()
}

/// Where each binary is, or why it is not there.
pub struct Binaries {
    found: HashMap<&'static str, Result<PathBuf, String>>,
}

impl Binaries {
    /// Finds the binaries of `packages`: in `bin_dir` if given, else by building each package
    /// (release profile) with cargo. `progress` is told what is being built.
    pub fn find(
        packages: &[(&'static str, &'static str)],
        bin_dir: Option<&Path>,
        progress: impl Fn(&str),
    ) -> Binaries {
        let mut found = HashMap::new();
        let mut built: HashMap<&'static str, Result<HashMap<String, PathBuf>, String>> =
            HashMap::new();
        for &(package, binary) in packages {
            let result = match bin_dir {
                Some(dir) => {
                    let path = dir.join(binary);
                    if path.is_file() {
                        Ok(path)
                    } else {
                        Err(format!("{} does not exist", path.display()))
                    }
                }
                None => {
                    let artifacts = built.entry(package).or_insert_with(|| {
                        progress(&format!("cargo build --release -p {package}"));
                        build(package)
                    });
                    match artifacts {
                        Ok(map) => map.get(binary).cloned().ok_or_else(|| {
                            format!("package {package} has no binary {binary} yet (not landed?)")
                        }),
                        Err(e) => Err(e.clone()),
                    }
                }
            };
            found.insert(binary, result);
        }
        Binaries { found }
    }

    /// The path of `binary`, or why it is missing.
    pub fn get(&self, binary: &str) -> Result<PathBuf, String> {
        self.found
            .get(binary)
            .cloned()
            .unwrap_or_else(|| Err(format!("{binary} was not looked for")))
    }
}

/// `cargo build --release -p <package> --bins`, returning each binary's path.
fn build(package: &str) -> Result<HashMap<String, PathBuf>, String> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let output = Command::new(cargo)
        .current_dir(workspace_root())
        .args([
            "build",
            "--quiet",
            "--release",
            "-p",
            package,
            "--bins",
            "--message-format=json-render-diagnostics",
        ])
        .stdin(Stdio::null())
        .stderr(Stdio::piped())
        .output()
        .map_err(|e| format!("cannot run cargo to build {package}: {e}"))?;
    if !output.status.success() {
        let stderr = String::from_utf8_lossy(&output.stderr);
        let first = stderr
            .lines()
            .find(|l| l.contains("error"))
            .unwrap_or("")
            .trim();
        return Err(format!(
            "`cargo build --release -p {package}` failed: {first}"
        ));
    }
    let mut binaries = HashMap::new();
    for line in String::from_utf8_lossy(&output.stdout).lines() {
        let Ok(message) = serde_json::from_str::<serde_json::Value>(line) else {
            continue;
        };
        if message["reason"] != "compiler-artifact" {
            continue;
        }
        if let (Some(exe), Some(name)) = (
            message["executable"].as_str(),
            message["target"]["name"].as_str(),
        ) {
            binaries.insert(name.to_string(), PathBuf::from(exe));
        }
    }
    Ok(binaries)
}

/// The server's `--help` text (to see which optional flags it takes), or empty.
pub fn help_text(program: &Path) -> String {
    Command::new(program)
        .arg("--help")
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default()
}

/// Flags that cap how many clients a server holds at once. A server that has one gets it set
/// above what the sweep needs, so that the cap (a safety limit) is not what we measure.
pub const CAP_FLAGS: &[&str] = &[
    "--max-children",
    "--max-clients",
    "--max-threads",
    "--max-connections",
];

/// The flags `help` shows among [`CAP_FLAGS`], each with `value`.
pub fn cap_args(help: &str, value: usize) -> Vec<String> {
    let mut args = Vec::new();
    for flag in CAP_FLAGS {
        let shown = help
            .split(|c: char| c.is_whitespace() || c == ',' || c == '=' || c == '[' || c == '<')
            .any(|word| word == *flag);
        if shown {
            args.push(flag.to_string());
            args.push(value.to_string());
        }
    }
    args
}

/// From clap's complaint about a value out of range ("... 1064 is not in 1..=128"), the highest
/// value it accepts.
pub fn highest_accepted(message: &str) -> Option<usize> {
    let range = message.split("is not in ").nth(1)?;
    let high = range.split("..=").nth(1)?;
    let digits: String = high.chars().take_while(|c| c.is_ascii_digit()).collect();
    digits.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cap_flags_are_found_in_help() {
        let help = "Options:\n      --max-children <N>  most children\n      --quiet\n";
        assert_eq!(cap_args(help, 1100), vec!["--max-children", "1100"]);
        assert!(cap_args("--max-childrenx", 5).is_empty());
    }

    #[test]
    fn the_highest_accepted_value_is_read_from_clap() {
        let e = "error: invalid value '1064' for '--max-children <N>': 1064 is not in 1..=128\n";
        assert_eq!(highest_accepted(e), Some(128));
        assert_eq!(highest_accepted("cannot listen"), None);
    }

    #[test]
    fn names_are_unique() {
        let mut names = names();
        let count = names.len();
        names.sort();
        names.dedup();
        assert_eq!(names.len(), count);
    }
}
