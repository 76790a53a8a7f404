//! The book's pictures: every picture a tutorial or chapter shows exists, on a repository browser
//! and in both books, and every picture is well-formed SVG, with Korean labels in the Korean book.
//!
//! Run these alone with `cargo test -p tests --test pictures`.

use std::fs;
use std::path::{Component, Path, PathBuf};

use tests::workspace_root;

/// The lab tutorials: included unchanged in the English book, translated in the Korean one.
const LAB_READMES: &[&str] = &[
    "lab01-iterative/README.md",
    "lab02-fork/README.md",
    "lab03-thread/README.md",
    "lab04-multiplex/README.md",
    "lab05-ipc/README.md",
];

/// `(alt text, target)` of every markdown image `![alt](target)` in `text`.
fn images(text: &str) -> Vec<(String, String)> {
    let mut found = Vec::new();
    let mut rest = text;
    while let Some(start) = rest.find("![") {
        rest = &rest[start + 2..];
        let Some(alt_end) = rest.find("](") else {
            break;
        };
        let alt = rest[..alt_end].to_string();
        let after = &rest[alt_end + 2..];
        let Some(target_end) = after.find(')') else {
            break;
        };
        found.push((alt, after[..target_end].to_string()));
        rest = &after[target_end..];
    }
    found
}

/// `base` joined with a relative `target`, `..` resolved without touching the file system.
fn resolve(base: &Path, target: &str) -> PathBuf {
    let mut path = PathBuf::new();
    for component in base.join(target).components() {
        match component {
            Component::ParentDir => {
                path.pop();
            }
            Component::CurDir => {}
            other => path.push(other),
        }
    }
    path
}

/// The markdown files of a folder (not recursive).
fn markdown_in(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .filter_map(|entry| entry.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "md"))
        .collect();
    files.sort();
    files
}

#[test]
fn every_picture_shown_exists_on_a_repository_browser_and_in_both_books() {
    let root = workspace_root();
    let mut files: Vec<PathBuf> = LAB_READMES.iter().map(|f| root.join(f)).collect();
    for dir in [
        "book/src",
        "book/src/labs",
        "book/ko/src",
        "book/ko/src/labs",
    ] {
        files.extend(markdown_in(&root.join(dir)));
    }
    let mut problems = Vec::new();
    let mut shown = 0;
    for file in &files {
        let text = fs::read_to_string(file).unwrap();
        for (alt, target) in images(&text) {
            shown += 1;
            let name = file.strip_prefix(&root).unwrap().display().to_string();
            if alt.trim().is_empty() {
                problems.push(format!("{name}: the picture {target} has no alt text"));
            }
            let on_browser = resolve(file.parent().unwrap(), &target);
            if !on_browser.is_file() {
                problems.push(format!("{name}: {target} does not exist"));
                continue;
            }
            // A lab README's picture from book/src is shown by both books (book/links.py points
            // each edition at its own img/ folder): the Korean book needs its twin.
            if let Ok(in_book) = on_browser.strip_prefix(root.join("book/src")) {
                let korean = root.join("book/ko/src").join(in_book);
                if LAB_READMES.iter().any(|r| root.join(r) == *file) && !korean.is_file() {
                    problems.push(format!(
                        "{name}: {target} has no Korean twin at {}",
                        korean.strip_prefix(&root).unwrap().display()
                    ));
                }
            }
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
    assert!(
        shown >= 20,
        "only {shown} pictures found: is the parser right?"
    );
}

#[test]
fn each_lab_chapter_shows_a_picture_and_its_demo_timeline_in_both_editions() {
    let root = workspace_root();
    for (n, readme) in LAB_READMES.iter().enumerate() {
        let lab = readme.split('/').next().unwrap();
        let timeline = format!("lab0{}-timeline.svg", n + 1);
        for chapter in [readme.to_string(), format!("book/ko/src/labs/{lab}.md")] {
            let text = fs::read_to_string(root.join(&chapter)).unwrap();
            let shown = images(&text);
            assert!(
                shown.iter().any(|(_, target)| target.ends_with(&timeline)),
                "{chapter} does not show its demo timeline {timeline}"
            );
            assert!(
                shown
                    .iter()
                    .any(|(_, target)| !target.ends_with("-timeline.svg")),
                "{chapter} shows no picture besides its timeline"
            );
        }
    }
}

#[test]
fn every_picture_is_svg_and_the_korean_ones_speak_korean() {
    let root = workspace_root();
    let svgs = |dir: &str| -> Vec<PathBuf> {
        let mut files: Vec<PathBuf> = fs::read_dir(root.join(dir))
            .unwrap_or_else(|e| panic!("{dir}: {e}"))
            .filter_map(|entry| entry.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|e| e == "svg"))
            .collect();
        files.sort();
        files
    };
    let english = svgs("book/src/img");
    let korean = svgs("book/ko/src/img");
    assert!(!english.is_empty());
    let names = |files: &[PathBuf]| -> Vec<String> {
        files
            .iter()
            .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
            .collect()
    };
    assert_eq!(
        names(&english),
        names(&korean),
        "each edition has the same pictures, under the same names"
    );
    for file in english.iter().chain(&korean) {
        let svg = fs::read_to_string(file).unwrap();
        let doc = roxmltree::Document::parse(&svg)
            .unwrap_or_else(|e| panic!("{}: not XML: {e}", file.display()));
        let root_element = doc.root_element();
        assert_eq!(
            root_element.tag_name().namespace(),
            Some("http://www.w3.org/2000/svg"),
            "{}: not an SVG document",
            file.display()
        );
        let fonts = root_element.attribute("font-family").unwrap_or_default();
        assert!(
            fonts.ends_with("sans-serif") && fonts.contains("Noto Sans CJK KR"),
            "{}: the fonts must name a Hangul font and fall back to sans-serif: {fonts:?}",
            file.display()
        );
        let hangul = doc
            .descendants()
            .filter(|n| n.has_tag_name("text"))
            .filter_map(|n| n.text())
            .any(|t| t.chars().any(|c| ('가'..='힣').contains(&c)));
        if file.starts_with(root.join("book/ko")) {
            assert!(
                hangul,
                "{}: a Korean picture with no Korean",
                file.display()
            );
        }
    }
}

#[test]
fn the_image_parser_reads_alt_and_target() {
    assert_eq!(
        images("a ![The queue](../book/src/img/q.svg) b ![x](y.svg)"),
        vec![
            ("The queue".to_string(), "../book/src/img/q.svg".to_string()),
            ("x".to_string(), "y.svg".to_string())
        ]
    );
    assert_eq!(
        resolve(Path::new("/r/lab01"), "../book/src/img/q.svg"),
        PathBuf::from("/r/book/src/img/q.svg")
    );
}
