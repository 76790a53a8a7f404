//! The book speaks of the labs, never of how they were made, and its Korean edition follows the
//! English one.
//!
//! - Student-facing text (README.md, GRADING.md, docs/*.md, every lab's tutorial, both books'
//!   chapters) holds no session number, commit hash, issue number, time of work, "earlier
//!   version" or capture artefact (a panic message quoting a source line, "started from a
//!   script"...). The patterns are narrow on purpose: a protocol "session", a hex socket address
//!   or the date in the bench's own results file are not history.
//! - Every Korean chapter starts with `<!-- 원문: PATH @ HASH -->`, naming its English source and
//!   the commit it was translated from; HASH must not be older than the last commit that changed
//!   PATH. When the English text changes, re-read the Korean chapter, bring it in step, and set
//!   HASH to a commit that holds the change (`git log -1 --format=%h -- PATH`).
//!
//! Run it alone with `cargo test -p tests --test book`.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use tests::workspace_root;

/// Every markdown file a student reads, relative to the workspace root.
fn student_files() -> Vec<PathBuf> {
    let root = workspace_root();
    let mut files = Vec::new();
    for top in ["README.md", "GRADING.md"] {
        if root.join(top).exists() {
            files.push(PathBuf::from(top));
        }
    }
    for dir in ["docs", "book/src", "book/ko/src"] {
        markdown_under(&root, Path::new(dir), &mut files);
    }
    let mut labs: Vec<PathBuf> = fs::read_dir(&root)
        .expect("the workspace root is readable")
        .filter_map(|e| e.ok())
        .map(|e| PathBuf::from(e.file_name()))
        .filter(|name| name.to_string_lossy().starts_with("lab"))
        .map(|name| name.join("README.md"))
        .filter(|readme| root.join(readme).exists())
        .collect();
    labs.sort();
    files.extend(labs);
    files
}

/// The markdown files under `dir` (recursively, not following symbolic links, so the Korean
/// book's links to shared folders are not read twice), except the bench's generated results:
/// their date and command are what a re-run replaces.
fn markdown_under(root: &Path, dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = fs::read_dir(root.join(dir)) else {
        return;
    };
    let mut paths: Vec<PathBuf> = entries.filter_map(|e| Some(e.ok()?.path())).collect();
    paths.sort();
    for path in paths {
        let relative = dir.join(path.file_name().expect("a directory entry has a name"));
        let Ok(meta) = fs::symlink_metadata(&path) else {
            continue;
        };
        if meta.is_dir() {
            if relative != Path::new("docs/bench") {
                markdown_under(root, &relative, out);
            }
        } else if meta.is_file() && path.extension().is_some_and(|x| x == "md") {
            out.push(relative);
        }
    }
}

/// The Korean chapter's header line, which names a commit on purpose.
fn is_source_header(line: &str) -> bool {
    line.trim_start().starts_with("<!-- 원문:")
}

/// Words of `line`: runs of ASCII letters and digits, with their byte offsets.
fn words(line: &str) -> Vec<(usize, &str)> {
    let mut out = Vec::new();
    let mut start = None;
    for (i, c) in line.char_indices() {
        match (c.is_ascii_alphanumeric(), start) {
            (true, None) => start = Some(i),
            (false, Some(s)) => {
                out.push((s, &line[s..i]));
                start = None;
            }
            _ => {}
        }
    }
    if let Some(s) = start {
        out.push((s, &line[s..]));
    }
    out
}

/// A git commit's name as people write it: 7 to 40 lowercase hex digits, with at least one
/// digit and at least one letter (so neither a number nor a word like "defaced").
fn looks_like_hash(word: &str) -> bool {
    (7..=40).contains(&word.len())
        && word.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
        && word.bytes().any(|b| b.is_ascii_digit())
        && word.bytes().any(|b| b.is_ascii_lowercase())
}

/// What in `line` tells how the labs were made, if anything (a short reason).
fn history_in(line: &str) -> Option<String> {
    if is_source_header(line) {
        return None;
    }
    let lower = line.to_lowercase();
    const PHRASES: &[&str] = &[
        "earlier version",
        "previous version",
        "an older version",
        "we tried",
        "took it back",
        "the engineers",
        "started from a script",
        "taken by the shell",
        "이전 버전",
        "스크립트에서 시작",
    ];
    for phrase in PHRASES {
        if lower.contains(phrase) {
            return Some(format!("{phrase:?}"));
        }
    }
    // The same in Korean: "세션 2", "이슈 7".
    for word in ["세션 ", "이슈 ", "이슈 #"] {
        let mut rest = lower.as_str();
        while let Some(at) = rest.find(word) {
            rest = &rest[at + word.len()..];
            if rest.starts_with(|c: char| c.is_ascii_digit()) {
                return Some(format!("{}N", word));
            }
        }
    }
    let ws = words(&lower);
    for (i, &(at, word)) in ws.iter().enumerate() {
        let next = ws.get(i + 1).map(|&(_, w)| w);
        let next_is_number = next.is_some_and(|w| w.bytes().all(|b| b.is_ascii_digit()));
        let adjacent = |gap: &str| {
            ws.get(i + 1)
                .is_some_and(|&(next_at, _)| &lower[at + word.len()..next_at] == gap)
        };
        // "session 2", "issue 7", "issue #7" (a protocol session is never numbered).
        if (word == "session" && adjacent(" ")
            || word == "issue" && (adjacent(" ") || adjacent(" #")))
            && next_is_number
        {
            return Some(format!("{word} {}", next.unwrap_or_default()));
        }
        // "commit e119ad4", or a hash in code font: `6671bf8`.
        if looks_like_hash(word) {
            let before = &lower[..at];
            let after = &lower[at + word.len()..];
            let in_code = before.ends_with('`') && after.starts_with('`');
            let named = i > 0 && ws[i - 1].1 == "commit";
            if in_code || named {
                return Some(format!("commit {word}"));
            }
        }
        // A time of day in UTC: "12:55 UTC".
        if word == "utc" && i >= 2 {
            let (m_at, minutes) = ws[i - 1];
            let (h_at, hours) = ws[i - 2];
            if minutes.len() == 2
                && minutes.bytes().all(|b| b.is_ascii_digit())
                && hours.len() <= 2
                && hours.bytes().all(|b| b.is_ascii_digit())
                && &lower[h_at + hours.len()..m_at] == ":"
            {
                return Some(format!("{hours}:{minutes} UTC"));
            }
        }
    }
    // A panic message that quotes a source line: "panicked at common/src/session.rs:88:13".
    if let Some(at) = lower.find("panicked at ") {
        let place = lower[at + "panicked at ".len()..]
            .split_whitespace()
            .next()
            .unwrap_or("");
        let quotes_a_line = place
            .split(".rs:")
            .nth(1)
            .is_some_and(|rest| rest.starts_with(|c: char| c.is_ascii_digit()));
        if quotes_a_line {
            return Some(format!("a panic quoting {place}"));
        }
    }
    // A date of work: 2026-11-28 (ISO, the form of every date the bench or git writes).
    let bytes = lower.as_bytes();
    for i in 0..bytes.len().saturating_sub(9) {
        let s = &bytes[i..i + 10];
        let digits = |r: std::ops::Range<usize>| s[r].iter().all(u8::is_ascii_digit);
        let starts_clean = i == 0 || !bytes[i - 1].is_ascii_alphanumeric();
        if starts_clean
            && s.starts_with(b"20")
            && digits(0..4)
            && s[4] == b'-'
            && digits(5..7)
            && s[7] == b'-'
            && digits(8..10)
        {
            return Some(format!("a date, {}", &lower[i..i + 10]));
        }
    }
    None
}

#[test]
fn the_patterns_find_history_and_nothing_else() {
    for line in [
        "in session 2's runs",
        "recorded in issue 7's note",
        "Issue 9 asks whether",
        "run in a clean export of commit `e119ad4`, so that",
        "at 04:40 UTC on `eae532a` and",
        "Measured on 2026-11-28 from 12:55 to 13:12 UTC",
        "An earlier version of this lab did",
        "We tried it and took it back",
        "so that the engineers' uncommitted edits",
        "(This run was started from a script, hence PPID 1",
        "fd 10 was taken by the shell that started the server",
        "thread 'main' (19291) panicked at common/src/session.rs:88:13:",
        "이 실습의 이전 버전이 그렇게",
        "세션 2에서 10:10에",
        "이슈 7의 노트",
    ] {
        assert!(history_in(line).is_some(), "not flagged: {line:?}");
    }
    for line in [
        "<!-- 원문: lab01-iterative/README.md @ 415b272 -->",
        "[  0.932s fork pid=19291 tid=19291] the session of client 2 panicked: this child exits",
        "`--max-session SECS` flag that limits a client's whole session",
        "lrwx------ 1 root root 64 3 -> socket:[2347847]",
        "7f3a2c000000-7f3a2c021000 rw-p 00000000 00:00 0",
        "a SIGTERM at 12:55 is not UTC-aware",
        "thread 'client-3' panicked at a test:",
        "thread 'main' (1) panicked at common/src/session.rs:<line>:<column>:",
        "a defaced 1234567 number",
        "the issue is that nothing reads the socket",
        "같은 `nc` 세션, 같은 테스트",
    ] {
        assert_eq!(history_in(line), None, "flagged: {line:?}");
    }
}

#[test]
fn student_facing_text_tells_no_project_history() {
    let root = workspace_root();
    let files = student_files();
    assert!(
        files.len() > 20,
        "found only {} student-facing files: {files:?}",
        files.len()
    );
    let mut found = Vec::new();
    for file in &files {
        let text = fs::read_to_string(root.join(file))
            .unwrap_or_else(|e| panic!("{}: {e}", file.display()));
        for (n, line) in text.lines().enumerate() {
            if let Some(what) = history_in(line) {
                found.push(format!(
                    "{}:{}: {what}: {}",
                    file.display(),
                    n + 1,
                    line.trim()
                ));
            }
        }
    }
    assert!(
        found.is_empty(),
        "student-facing text must speak of the labs, not of how they were made \
         (history goes in commit messages, measurement notes in bench/NOTES.md):\n{}",
        found.join("\n")
    );
}

/// Words the Korean edition does not use, each with the one it uses for the same idea (the
/// glossary's "한 가지 뜻에 한 가지 용어" and the notes' own spellings).
const KOREAN_VARIANTS: &[(&str, &str)] = &[
    ("충돌", "크래시"),
    ("거두", "회수"),
    ("대기 소켓", "리스닝 소켓"),
    ("진행 설명", "내레이션"),
    ("해설", "내레이션"),
    ("상태 코드", "종료 상태"),
    ("종료 코드", "종료 상태"),
    ("컨텍스트 스위치", "문맥 교환"),
    ("문맥 전환", "문맥 교환"),
    ("스레드", "쓰레드"),
    ("블로킹", "블록킹"),
    ("메시지 큐", "메시지큐"),
    ("백로그", "백 로그"),
    ("신호", "시그널"),
];

#[test]
fn the_korean_edition_uses_one_term_per_idea() {
    let root = workspace_root();
    let mut chapters = Vec::new();
    markdown_under(&root, Path::new("book/ko/src"), &mut chapters);
    // The glossary names the variants it rejects.
    chapters.retain(|c| c.file_name().is_some_and(|n| n != "glossary.md"));
    let mut found = Vec::new();
    for chapter in &chapters {
        let text = fs::read_to_string(root.join(chapter)).expect("a readable chapter");
        for (n, line) in text.lines().enumerate() {
            for (variant, term) in KOREAN_VARIANTS {
                // "쓰레드" contains "스레드" only after "쓰": look at what precedes it.
                let hits = line
                    .match_indices(variant)
                    .any(|(at, _)| !(*variant == "스레드" && line[..at].ends_with('쓰')));
                if hits {
                    found.push(format!(
                        "{}:{}: {variant:?}: the book says {term:?}",
                        chapter.display(),
                        n + 1
                    ));
                }
            }
        }
    }
    assert!(
        found.is_empty(),
        "the Korean edition uses one term per idea (book/ko/src/glossary.md):\n{}",
        found.join("\n")
    );
}

/// Runs git in the workspace; `None` if it cannot run or fails.
fn git(args: &[&str]) -> Option<String> {
    let out = Command::new("git")
        .arg("-C")
        .arg(workspace_root())
        .args(args)
        .output()
        .ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
}

/// Whether `git merge-base --is-ancestor a b` says yes.
fn is_ancestor(a: &str, b: &str) -> bool {
    Command::new("git")
        .arg("-C")
        .arg(workspace_root())
        .args(["merge-base", "--is-ancestor", a, b])
        .status()
        .is_ok_and(|s| s.success())
}

/// The (source path, commit) a Korean chapter's first line names.
fn source_header(text: &str) -> Option<(String, String)> {
    let line = text.lines().next()?.trim();
    let inner = line.strip_prefix("<!-- 원문:")?.strip_suffix("-->")?;
    let (path, hash) = inner.split_once(" @ ")?;
    Some((path.trim().to_string(), hash.trim().to_string()))
}

#[test]
fn every_korean_chapter_names_the_current_version_of_its_english_source() {
    let root = workspace_root();
    let mut chapters = Vec::new();
    markdown_under(&root, Path::new("book/ko/src"), &mut chapters);
    chapters.retain(|c| c.file_name().is_some_and(|n| n != "SUMMARY.md"));
    assert!(
        chapters.len() >= 10,
        "found only {} Korean chapters",
        chapters.len()
    );

    // Every chapter has its header, git or not.
    let mut headers = Vec::new();
    let mut problems = Vec::new();
    for chapter in &chapters {
        let text = fs::read_to_string(root.join(chapter)).expect("a readable chapter");
        match source_header(&text) {
            Some((source, hash)) if root.join(&source).is_file() => {
                headers.push((chapter.clone(), source, hash))
            }
            Some((source, _)) => problems.push(format!(
                "{}: its source {source} does not exist",
                chapter.display()
            )),
            None => problems.push(format!(
                "{}: the first line must be `<!-- 원문: PATH @ COMMIT -->`",
                chapter.display()
            )),
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));

    if git(&["rev-parse", "--git-dir"]).is_none() {
        eprintln!(
            "book: not a git checkout (a source archive?): the Korean chapters' source commits \
             cannot be checked here; skipped"
        );
        return;
    }
    if git(&["rev-parse", "--is-shallow-repository"]).as_deref() == Some("true") {
        eprintln!(
            "book: a shallow clone lacks the history the Korean chapters' source commits name; \
             skipped (fetch with --unshallow to check them)"
        );
        return;
    }
    for (chapter, source, hash) in headers {
        let Some(named) = git(&[
            "rev-parse",
            "--verify",
            "--quiet",
            &format!("{hash}^{{commit}}"),
        ]) else {
            problems.push(format!(
                "{}: {hash} is not a commit of this repository",
                chapter.display()
            ));
            continue;
        };
        let Some(last) = git(&["log", "-1", "--format=%H", "--", &source]) else {
            continue;
        };
        if last.is_empty() {
            continue; // the source is not committed yet: nothing to compare with
        }
        if !is_ancestor(&last, &named) {
            let short = git(&["log", "-1", "--format=%h", &last]).unwrap_or(last);
            problems.push(format!(
                "{}: translated from {source} @ {hash}, but {source} changed since, in {short}: \
                 bring the chapter in step and name that commit",
                chapter.display()
            ));
        }
    }
    assert!(
        problems.is_empty(),
        "Korean chapters behind their English source:\n{}",
        problems.join("\n")
    );
}
