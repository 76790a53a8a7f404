//! Reading a tutorial: its steps, and in each step the terminal blocks a student plays.
//!
//! The tutorials follow a few conventions, and the parser follows them:
//!
//! - A step is a `## Step N: ...` section (Korean: `## N단계: ...`).
//! - A ` ```console ` block is typed: `$ ` lines are shell commands (a trailing `\` continues one
//!   on the next line), `> ` lines what the student types into the client running in that
//!   terminal, `^Z` or `^C` alone a key pressed, `...` (or a line starting with `...`) an elided
//!   part of the output, every other line output the screen must show (after a `←`, the
//!   tutorial's note on the line, not output).
//! - A ` ```text ` block is output only (a server's narration); it is compared when the prose just
//!   before it names the terminal it shows (`Terminal 1:`). A first line starting with `^C` means
//!   the student pressed Ctrl-C in that terminal.
//! - The terminal of a block is the last one the prose before it names, since the previous block
//!   (`Terminal 2`, `in terminal 3`, `Terminals 2, 3 and 4` for the same block typed in each,
//!   `터미널 2`, `another terminal` / `다른 터미널` for a new one, `the spare terminal` /
//!   `그 남는 터미널` for the last new one again); without one, the terminal of the previous
//!   console block.
//! - Small markup, hidden by the book: `<!-- replay: skip -->` before a block that cannot be
//!   compared (it depends on the machine or on timing), `<!-- replay: skip-step -->` for the rest
//!   of a step whose figures are all the machine's, `<!-- replay: terminal N -->` where the prose
//!   does not say which terminal, `<!-- replay: figures -->` before a block whose large numbers
//!   are the machine's (memory sizes): there a number not seen before matches any number.

use std::sync::OnceLock;

use regex::Regex;

/// One line of a block.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Line {
    /// `$ cargo run ...`: typed at the shell prompt (without the `$ `).
    Command(String),
    /// `> WHO`: typed into the program running in the terminal (without the `> `).
    Input(String),
    /// Output the screen must show.
    Output(String),
    /// `...`: output left out.
    Elided,
    /// `^Z` or `^C` alone on a line: the student presses Ctrl-Z or Ctrl-C (tmux's `C-z`, `C-c`).
    Key(String),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A ` ```console ` block: typed, then compared.
    Console,
    /// A ` ```text ` block naming its terminal: compared only.
    Output,
}

/// One block to play.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Block {
    /// The line of the opening fence in the file (1-based).
    pub line: usize,
    pub kind: Kind,
    /// Where it is played: the first terminal is compared; the others (`Terminals 2, 3 and 4`)
    /// only get the same typing.
    pub terminals: Vec<u32>,
    /// The student presses Ctrl-C in the terminal first (the block's first line starts with `^C`).
    pub interrupt: bool,
    /// Marked `<!-- replay: figures -->`: a masked number not bound before matches any number
    /// and is not remembered (one process's RSS says nothing about the next line's).
    pub figures: bool,
    pub lines: Vec<Line>,
}

/// A `## Step N` section.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Step {
    /// The heading without the `## `.
    pub title: String,
    /// The line of the heading (1-based).
    pub line: usize,
    pub blocks: Vec<Block>,
}

/// What the prose before a block says about it.
#[derive(Debug, Default)]
struct Prose {
    text: String,
    skip: bool,
    figures: bool,
    terminal: Option<u32>,
}

fn step_heading() -> &'static Regex {
    static RE: OnceLock<Regex> = OnceLock::new();
    RE.get_or_init(|| Regex::new(r"^## (Step \d+\b.*|\d+단계\b.*)$").unwrap())
}

fn terminal_mention() -> &'static Regex {
    static RE: OnceLock<Regex> = OnceLock::new();
    RE.get_or_init(|| {
        Regex::new(
            r"(?i)(?:terminals?\s+|터미널\s+)(\d(?:(?:,\s+and\s+|,\s+|\s+and\s+|과\s+|와\s+|,\s+터미널\s+|과\s+터미널\s+|와\s+터미널\s+)\d)*)|(another terminal|a spare terminal|다른 터미널|남는 터미널)|(the spare terminal|그 남는 터미널)",
        )
        .unwrap()
    })
}

fn annotation() -> &'static Regex {
    static RE: OnceLock<Regex> = OnceLock::new();
    RE.get_or_init(|| {
        Regex::new(
            r"<!--\s*replay:\s*(skip-step\b[^>]*|skip\b[^>]*|figures\b[^>]*|terminal (\d+))\s*-->",
        )
        .unwrap()
    })
}

/// In what `last_terminals` returns, "the spare terminal": the one "a spare terminal" opened last.
const THE_SPARE: u32 = 0;

/// The terminals the prose names last: `Some(vec![])` for "another terminal",
/// `Some(vec![THE_SPARE])` for "the spare terminal".
fn last_terminals(prose: &str) -> Option<Vec<u32>> {
    let captures = terminal_mention().captures_iter(prose).last()?;
    if captures.get(2).is_some() {
        return Some(Vec::new());
    }
    if captures.get(3).is_some() {
        return Some(vec![THE_SPARE]);
    }
    Some(
        captures[1]
            .chars()
            .filter(|c| c.is_ascii_digit())
            .map(|c| c.to_digit(10).unwrap())
            .collect(),
    )
}

/// The steps of a tutorial and their blocks.
pub fn parse(markdown: &str) -> Vec<Step> {
    let mut steps: Vec<Step> = Vec::new();
    let mut in_step = false;
    let mut prose = Prose::default();
    let mut last_console_terminal: Option<u32> = None;
    let mut next_new_terminal = 0;
    let mut skip_step = false;
    let lines: Vec<&str> = markdown.lines().collect();
    let mut i = 0;
    while i < lines.len() {
        let line = lines[i];
        if let Some(heading) = line.strip_prefix("## ") {
            in_step = step_heading().is_match(line);
            skip_step = false;
            if in_step {
                steps.push(Step {
                    title: heading.to_string(),
                    line: i + 1,
                    blocks: Vec::new(),
                });
            }
            prose = Prose::default();
            i += 1;
            continue;
        }
        let trimmed = line.trim_start();
        if let Some(info) = trimmed.strip_prefix("```") {
            let indent = line.len() - trimmed.len();
            let fence_line = i;
            let mut body = Vec::new();
            i += 1;
            while i < lines.len() && !lines[i].trim_start().starts_with("```") {
                let raw = lines[i];
                body.push(raw.get(indent..).unwrap_or(raw.trim_start()));
                i += 1;
            }
            i += 1; // the closing fence
            let info = info.trim();
            let kind = match info {
                "console" => Some(Kind::Console),
                "text" => Some(Kind::Output),
                _ => None,
            };
            let mentioned = last_terminals(&prose.text);
            let skip = prose.skip || skip_step;
            let annotated = prose.terminal;
            let figures = prose.figures;
            prose = Prose::default();
            let (Some(kind), true) = (kind, in_step) else {
                continue;
            };
            // A skipped console block still says where the next one without a terminal goes.
            if skip {
                if let (Kind::Console, Some(named)) = (kind, &mentioned) {
                    if let Some(&n) = named.first() {
                        last_console_terminal = Some(n);
                    }
                }
                continue;
            }
            let mut terminals = match (annotated, mentioned) {
                (Some(n), _) => vec![n],
                // "Another terminal" opens one to type in; output shown there is an example.
                (None, Some(named)) if named.is_empty() && kind == Kind::Output => continue,
                (None, Some(named)) if named.is_empty() => {
                    next_new_terminal += 1;
                    vec![100 + next_new_terminal]
                }
                (None, Some(named)) if named == [THE_SPARE] => vec![100 + next_new_terminal.max(1)],
                (None, Some(named)) => named,
                (None, None) => match (kind, last_console_terminal) {
                    (Kind::Console, Some(n)) => vec![n],
                    // Output no prose ties to a terminal: not compared.
                    (Kind::Output, _) => continue,
                    (Kind::Console, None) => vec![1],
                },
            };
            terminals.dedup();
            let (interrupt, lines) = block_lines(&body, kind);
            if kind == Kind::Console {
                last_console_terminal = Some(terminals[0]);
            }
            steps.last_mut().unwrap().blocks.push(Block {
                line: fence_line + 1,
                kind,
                terminals,
                interrupt,
                figures,
                lines,
            });
            continue;
        }
        for found in annotation().captures_iter(line) {
            match found.get(2) {
                Some(n) => prose.terminal = n.as_str().parse().ok(),
                None if found[1].starts_with("skip-step") => skip_step = true,
                None if found[1].starts_with("figures") => prose.figures = true,
                None => prose.skip = true,
            }
        }
        prose.text.push_str(line);
        prose.text.push('\n');
        i += 1;
    }
    steps
}

fn block_lines(body: &[&str], kind: Kind) -> (bool, Vec<Line>) {
    let mut interrupt = false;
    let mut lines = Vec::new();
    for (n, raw) in body.iter().enumerate() {
        let mut text = raw.trim_end();
        if n == 0 {
            if let Some(rest) = text.strip_prefix("^C") {
                interrupt = true;
                text = rest;
                if text.is_empty() {
                    continue;
                }
            }
        }
        // A command continued on the next line (`strace -e ... \` then the program): one line.
        if let Some(Line::Command(command)) = lines.last_mut() {
            if let Some(start) = command.strip_suffix('\\') {
                *command = format!("{} {}", start.trim_end(), text.trim());
                continue;
            }
        }
        let line = if text.starts_with("...") {
            Line::Elided
        } else if kind == Kind::Console && (text == "^Z" || text == "^C") {
            Line::Key(format!("C-{}", text[1..].to_ascii_lowercase()))
        } else if kind == Kind::Console && (text == "$" || text.starts_with("$ ")) {
            Line::Command(text[1..].trim().to_string())
        } else if kind == Kind::Console && (text == ">" || text.starts_with("> ")) {
            Line::Input(text[1..].trim().to_string())
        } else if text.is_empty() {
            continue;
        } else {
            Line::Output(text.to_string())
        };
        lines.push(line);
    }
    (interrupt, lines)
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAMPLE: &str = r#"# Lab 9: a sample

## What you need

```console
$ apt-get install nothing
```

## Step 1: start the server

Terminal 1:

```console
$ cargo run -p lab09-sample
listening on 127.0.0.1:7009
```

## Step 2: two clients

Terminals 2
and 3, then type `WHO`:

```console
$ cargo run -p lab09-sample --bin sample-client
HELLO sample pid=15003
> WHO
OK pid=15003
^Z
...
```

Terminal 1 narrates:

```text
^C[  4.538s sample pid=15003] accepted client 1
```

Some output no terminal is named for:

```text
not compared
```

<!-- replay: skip -->
In terminal 4, a figure of this machine:

```console
$ nproc
2
```

<!-- replay: skip -->
In terminal 5:

```console
$ ss -s
```

Then, in another terminal:

```console
$ ss -ltn
```

```console
$ ss -tn
```

<!-- replay: terminal 3 -->
```console
> QUIT
```

Back in the spare terminal, the machine's figures:

```console
$ strace -e trace=read \
    ps -o rss= -p 15003
```

<!-- replay: figures (sizes) -->
```console
$ ps -o rss= -p 15003
3924
```

## Step 3: figures of this machine

<!-- replay: skip-step (memory figures) -->
Terminal 1:

```console
$ free
```

## 2단계: 한국어

터미널 2, 3, 4에서 각각:

```console
$ true
```

## Exercises

Terminal 1:

```console
$ not played
```
"#;

    #[test]
    fn finds_the_steps_blocks_terminals_and_lines() {
        let steps = parse(SAMPLE);
        let titles: Vec<_> = steps.iter().map(|s| s.title.as_str()).collect();
        assert_eq!(
            titles,
            [
                "Step 1: start the server",
                "Step 2: two clients",
                "Step 3: figures of this machine",
                "2단계: 한국어"
            ]
        );
        assert!(steps[2].blocks.is_empty());
        assert_eq!(steps[0].blocks.len(), 1);
        assert_eq!(
            steps[0].blocks[0].lines,
            [
                Line::Command("cargo run -p lab09-sample".into()),
                Line::Output("listening on 127.0.0.1:7009".into()),
            ]
        );
        let step2 = &steps[1].blocks;
        let terminals: Vec<_> = step2.iter().map(|b| b.terminals.clone()).collect();
        // The skipped block and the untied text block are left out; "another terminal" is a
        // new one, and the block after it stays there.
        assert_eq!(
            terminals,
            [
                vec![2, 3],
                vec![1],
                vec![101],
                vec![101],
                vec![3],
                vec![101],
                vec![101]
            ]
        );
        let figures: Vec<_> = step2.iter().map(|b| b.figures).collect();
        assert_eq!(figures, [false, false, false, false, false, false, true]);
        assert_eq!(
            step2[5].lines,
            [Line::Command(
                "strace -e trace=read ps -o rss= -p 15003".into()
            )]
        );
        assert_eq!(
            step2[0].lines,
            [
                Line::Command("cargo run -p lab09-sample --bin sample-client".into()),
                Line::Output("HELLO sample pid=15003".into()),
                Line::Input("WHO".into()),
                Line::Output("OK pid=15003".into()),
                Line::Key("C-z".into()),
                Line::Elided,
            ]
        );
        assert_eq!(step2[1].kind, Kind::Output);
        assert!(step2[1].interrupt);
        assert_eq!(
            step2[1].lines,
            [Line::Output(
                "[  4.538s sample pid=15003] accepted client 1".into()
            )]
        );
        assert_eq!(step2[0].line, 23);
        assert_eq!(steps[3].blocks[0].terminals, [2, 3, 4]);
    }
}
