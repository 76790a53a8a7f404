//! The workspace as the course tasks see it: its labs, their marked tasks, and copies of it.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context};

use crate::markers::{self, Task};

/// One lab: `lab02` in `lab02-fork/`.
#[derive(Debug, Clone)]
pub struct Lab {
    /// `lab02`
    pub name: String,
    /// `lab02-fork`, the folder and the package.
    pub dir: String,
}

/// The labs of the workspace at `root`, in order: the folders named `labNN-...`.
pub fn labs(root: &Path) -> anyhow::Result<Vec<Lab>> {
    let mut labs = Vec::new();
    for entry in
        std::fs::read_dir(root).with_context(|| format!("cannot list {}", root.display()))?
    {
        let dir = entry?.file_name().to_string_lossy().into_owned();
        let Some((name, _)) = dir.split_once('-') else {
            continue;
        };
        if name.len() == 5
            && name.starts_with("lab")
            && name[3..].chars().all(|c| c.is_ascii_digit())
        {
            labs.push(Lab {
                name: name.to_string(),
                dir,
            });
        }
    }
    labs.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(labs)
}

/// The labs named in `--labs lab02,lab05` (all when `None`), checked against the workspace.
pub fn chosen_labs(root: &Path, names: Option<&[String]>) -> anyhow::Result<Vec<Lab>> {
    let all = labs(root)?;
    let Some(names) = names else {
        return Ok(all);
    };
    names
        .iter()
        .map(|name| {
            all.iter()
                .find(|lab| &lab.name == name || &lab.dir == name)
                .cloned()
                .with_context(|| {
                    format!(
                        "no lab {name:?} here (labs: {})",
                        all.iter()
                            .map(|l| l.name.as_str())
                            .collect::<Vec<_>>()
                            .join(", ")
                    )
                })
        })
        .collect()
}

/// The Rust sources of a lab (`src/**/*.rs`), relative to the workspace root, sorted.
pub fn lab_sources(root: &Path, lab: &Lab) -> anyhow::Result<Vec<PathBuf>> {
    let mut files = Vec::new();
    let mut folders = vec![PathBuf::from(&lab.dir).join("src")];
    while let Some(folder) = folders.pop() {
        let Ok(entries) = std::fs::read_dir(root.join(&folder)) else {
            continue;
        };
        for entry in entries {
            let entry = entry?;
            let relative = folder.join(entry.file_name());
            if entry.file_type()?.is_dir() {
                folders.push(relative);
            } else if relative.extension().is_some_and(|e| e == "rs") {
                files.push(relative);
            }
        }
    }
    files.sort();
    Ok(files)
}

/// The marked tasks of a lab, by file, checked (parse errors name file and line; numbers 1, 2,
/// 3 ... each once across the lab's files).
pub fn lab_tasks(root: &Path, lab: &Lab) -> anyhow::Result<Vec<Task>> {
    let mut tasks = Vec::new();
    for file in lab_sources(root, lab)? {
        let text = std::fs::read_to_string(root.join(&file))
            .with_context(|| format!("cannot read {}", file.display()))?;
        tasks.extend(markers::parse(&file, &text)?);
    }
    markers::check_numbering(&lab.name, &tasks)?;
    tasks.sort_by_key(|t| t.number);
    Ok(tasks)
}

/// The files to copy: git's tracked files (as they are on disk), or, outside a git checkout, every
/// file but `target/` and `.git/`.
pub fn source_files(root: &Path) -> anyhow::Result<Vec<PathBuf>> {
    let git = Command::new("git")
        .arg("-C")
        .arg(root)
        .args(["ls-files", "-z", "--cached"])
        .output();
    if let Ok(output) = git {
        if output.status.success() {
            return Ok(output
                .stdout
                .split(|&b| b == 0)
                .filter(|name| !name.is_empty())
                .map(|name| PathBuf::from(String::from_utf8_lossy(name).into_owned()))
                .filter(|path| root.join(path).symlink_metadata().is_ok())
                .collect());
        }
    }
    let mut files = Vec::new();
    let mut folders = vec![PathBuf::new()];
    while let Some(folder) = folders.pop() {
        for entry in std::fs::read_dir(root.join(&folder))? {
            let entry = entry?;
            let relative = folder.join(entry.file_name());
            if entry.file_type()?.is_dir() && !entry.file_type()?.is_symlink() {
                if relative != Path::new("target") && relative != Path::new(".git") {
                    folders.push(relative);
                }
            } else {
                files.push(relative);
            }
        }
    }
    files.sort();
    Ok(files)
}

/// Copies the workspace's source files from `root` into `dest` (created; files already there with
/// the same name are replaced, nothing else is removed). Refuses a `dest` inside a copied folder
/// other than `target/`, which would copy itself.
pub fn copy_workspace(root: &Path, dest: &Path) -> anyhow::Result<Vec<PathBuf>> {
    let files = source_files(root)?;
    std::fs::create_dir_all(dest).with_context(|| format!("cannot create {}", dest.display()))?;
    let root_real = root.canonicalize()?;
    let dest_real = dest.canonicalize()?;
    if dest_real == root_real {
        bail!(
            "{} is the workspace itself: choose another folder",
            dest.display()
        );
    }
    if let Ok(inside) = dest_real.strip_prefix(&root_real) {
        if !inside.starts_with("target") {
            bail!(
                "{} is inside the workspace: choose a folder outside it (or under target/)",
                dest.display()
            );
        }
    }
    for file in &files {
        let from = root.join(file);
        let to = dest.join(file);
        if let Some(parent) = to.parent() {
            std::fs::create_dir_all(parent)?;
        }
        if from.symlink_metadata()?.file_type().is_symlink() {
            // A link (the book links docs/bench): the same link, relative as it was.
            let _ = std::fs::remove_file(&to);
            std::os::unix::fs::symlink(std::fs::read_link(&from)?, &to)
                .with_context(|| format!("cannot link {}", to.display()))?;
            continue;
        }
        std::fs::copy(&from, &to)
            .with_context(|| format!("cannot copy {} to {}", file.display(), to.display()))?;
    }
    Ok(files)
}
