//! Comparing what a terminal shows with what the tutorial prints.
//!
//! A tutorial line becomes a pattern: what differs from run to run is masked (times and
//! durations, hex addresses, every number of three digits or more: pids, tids, ports, sizes,
//! inodes; any number after `pid=`/`tid=`; a string strace cut short). Whitespace is ignored
//! (columns move with the numbers' widths and the terminal's), a ` ... ` inside a line matches
//! anything, and a line may start with the `^C` the terminal echoes or the `$ ` prompt a
//! background job printed after. Small numbers (`OK 2`, `client=1`, `fd=3`, a queue's length)
//! are compared as they are: they are the lesson.
//!
//! The masked numbers are remembered: the first time the tutorial's pid 6613 matches the screen's
//! 48213, 6613 means 48213 for the rest of the lab, in later output (a child's `PPID` must be the
//! server's pid) and in later commands (`kill -TERM 6613` is typed as `kill -TERM 48213`).

use std::collections::{HashMap, HashSet};
use std::sync::OnceLock;

use regex::Regex;

/// One expected line, as a pattern.
#[derive(Debug)]
pub struct Pattern {
    /// The tutorial's line.
    pub text: String,
    regex: Regex,
    /// The tutorial's number behind each capture group, in order.
    numbers: Vec<String>,
    /// Whether the numbers matched are remembered (not for a machine's figures: `figure`).
    remember: bool,
}

fn token() -> &'static Regex {
    static RE: OnceLock<Regex> = OnceLock::new();
    RE.get_or_init(|| {
        Regex::new(concat!(
            r#"(?P<cut>"[^"]*"\.\.\.)"#,
            r"|(?P<clock>\b\d{2}:\d{2}:\d{2}(?:\.\d+)?\b)",
            r"|(?P<duration>\b\d+(?:\.\d+)?\s?(?:ms|µs|us|ns|sec|min|s)\b)",
            r"|(?P<decimal>\b\d+\.\d+\b)",
            r"|(?P<hex>\b0x[0-9a-fA-F]+\b)",
            r"|(?P<idkey>\b[pt]id[= ])(?P<id>\d+)",
            r"|(?P<number>\b\d{3,}\b)",
            r"|(?P<small>\b\d{1,2}\b)",
            r"|(?P<placeholder><(?:line|column)>)",
            r"|(?P<space>\s+)",
            r"|(?P<elided> ?\.\.\.(?:$| ))",
        ))
        .unwrap()
    })
}

impl Pattern {
    pub fn new(text: &str) -> Pattern {
        // `... = 1    ← the listener is ready`: what follows the arrow is the tutorial's note.
        let text = text.split('←').next().unwrap_or_default().trim();
        // A string strace cut short (`"HELLO iterative pid=17409 tid=17"..., 36`): its length
        // counts the pid's digits, so every number of two digits or more is masked.
        let truncated = text.contains("\"...");
        // Atoms joined by optional whitespace.
        let mut atoms: Vec<String> = Vec::new();
        let mut numbers = Vec::new();
        let mut at = 0;
        for found in token().captures_iter(text) {
            let whole = found.get(0).unwrap();
            literal(&text[at..whole.start()], &mut atoms);
            at = whole.end();
            if let Some(cut) = found.name("cut") {
                // A string strace cut at 32 bytes: where it is cut depends on the numbers in it,
                // so only what comes before its first digit is compared (and with short numbers it
                // may fit whole: no `...`).
                let text = cut.as_str();
                let before = &text[..text.find(|c: char| c.is_ascii_digit()).unwrap_or(1)];
                literal(before, &mut atoms);
                atoms.push(r#"[^"]*"(?:\.\.\.)?"#.into());
            } else if found.name("clock").is_some() {
                atoms.push(r"\d{2}:\d{2}:\d{2}(?:\.\d+)?".into());
            } else if found.name("duration").is_some() || found.name("decimal").is_some() {
                // A duration's unit may change with its size (`950ms`, `1.2s`).
                atoms.push(r"\d+(?:\.\d+)?\s?(?:ms|µs|us|ns|sec|min|s)?".into());
            } else if found.name("hex").is_some() {
                atoms.push("0x[0-9a-fA-F]+".into());
            } else if let Some(key) = found.name("idkey") {
                literal(key.as_str(), &mut atoms);
                atoms.push(r"(\d+)".into());
                numbers.push(found["id"].to_string());
            } else if let Some(number) = found.name("number") {
                atoms.push(r"(\d+)".into());
                numbers.push(number.as_str().to_string());
            } else if let Some(number) = found.name("small") {
                if truncated && number.as_str().len() >= 2 {
                    atoms.push(r"\d+".into());
                } else {
                    literal(number.as_str(), &mut atoms);
                }
            } else if found.name("placeholder").is_some() {
                // `panicked at common/src/session.rs:<line>:<column>:`
                atoms.push(r"\d+".into());
            } else if found.name("elided").is_some() {
                atoms.push(".*".into());
            }
        }
        literal(&text[at..], &mut atoms);
        let regex = format!(r"^(?:\^C|\$ )?\s*{}\s*$", atoms.join(r"\s*"));
        Pattern {
            text: text.to_string(),
            regex: Regex::new(&regex).expect("an escaped pattern is a regex"),
            numbers,
            remember: true,
        }
    }

    /// A line of the machine's figures (`ps`'s RSS and VSZ): a masked number already known must
    /// still match (a pid), any other matches any number and is not remembered.
    pub fn figure(text: &str) -> Pattern {
        Pattern {
            remember: false,
            ..Pattern::new(text)
        }
    }

    /// Whether `line` matches, consistently with the numbers already known; the new bindings.
    fn matches(&self, line: &str, known: &Bindings) -> Option<Vec<(String, String)>> {
        let line = ascii_tree(line);
        let found = self.regex.captures(line.trim())?;
        let mut new = Vec::new();
        for (expected, group) in self.numbers.iter().zip(found.iter().skip(1)) {
            let actual = group?.as_str();
            match known.get(expected) {
                Some(bound) if bound != actual => return None,
                Some(_) => {}
                None => {
                    if new
                        .iter()
                        .any(|(e, a): &(String, String)| e == expected && a != actual)
                    {
                        return None;
                    }
                    new.push((expected.clone(), actual.to_string()));
                }
            }
        }
        Some(new)
    }
}

/// Literal text, one atom per character: whitespace may be anywhere between two atoms, as
/// columns move with the numbers' widths and `ss` fits its columns to the terminal's width.
fn literal(text: &str, atoms: &mut Vec<String>) {
    atoms.extend(
        text.chars()
            .filter(|c| !c.is_whitespace())
            .map(|c| regex::escape(c.encode_utf8(&mut [0; 4]))),
    );
}

/// `pstree` draws with box characters in a UTF-8 terminal, with ASCII in others (as the
/// tutorials show it): the same tree.
fn ascii_tree(line: &str) -> String {
    line.chars()
        .map(|c| match c {
            '─' => '-',
            '┬' => '+',
            '├' | '│' => '|',
            '└' => '`',
            c => c,
        })
        .collect()
}

/// `pstree` puts a process's first child on the process's own line (`a(1)-+-b(2)`) and the other
/// children below it (`|-c(3)`, `` `-d(4) ``), in pid order, and pids wrap around (at
/// `/proc/sys/kernel/pid_max`): the same tree can come out in another order. One row per process,
/// the parent as it is and each child as `-name(pid)`, compares the tree in any order.
pub fn tree_rows(line: &str) -> Vec<String> {
    static RE: OnceLock<Regex> = OnceLock::new();
    let branch = RE.get_or_init(|| Regex::new(r"-[+-]-").unwrap());
    let line = ascii_tree(line);
    let line = line.trim();
    // A row below the first starts with the branch that leads to its process.
    let (below, line) = match line.strip_prefix(['|', '`']) {
        Some(rest) => (true, rest),
        None => (false, line),
    };
    branch
        .split(line)
        .enumerate()
        .map(|(n, part)| {
            let part = part.trim_start_matches('-');
            if n == 0 && !below {
                part.to_string()
            } else {
                format!("-{part}")
            }
        })
        .collect()
}

/// The tutorial's numbers and what they were on this run.
pub type Bindings = HashMap<String, String>;

/// Where each expected line was found: `Ok(screen line indexes)`, or `Err(the lines not found)`.
///
/// Every expected line must match a distinct screen line among `candidates` (indexes into
/// `screen`, in order), in any order: concurrent processes print in any order, and `ss` lists
/// sockets in its own. A line matched binds its masked numbers.
pub fn find_all(
    expected: &[Pattern],
    screen: &[String],
    candidates: &[usize],
    bindings: &mut Bindings,
) -> Result<Vec<usize>, Vec<usize>> {
    let mut used = HashSet::new();
    let mut found = Vec::new();
    let mut missing = Vec::new();
    for (n, pattern) in expected.iter().enumerate() {
        let hit = candidates.iter().find_map(|&i| {
            if used.contains(&i) {
                return None;
            }
            pattern.matches(&screen[i], bindings).map(|new| (i, new))
        });
        match hit {
            Some((i, new)) => {
                used.insert(i);
                found.push(i);
                if pattern.remember {
                    bindings.extend(new);
                }
            }
            None => missing.push(n),
        }
    }
    if missing.is_empty() {
        Ok(found)
    } else {
        Err(missing)
    }
}

/// A command from the tutorial with its numbers replaced by this run's (`kill -TERM 6613`).
pub fn substitute(command: &str, bindings: &Bindings) -> String {
    static RE: OnceLock<Regex> = OnceLock::new();
    let re = RE.get_or_init(|| Regex::new(r"\b\d{3,}\b").unwrap());
    re.replace_all(command, |found: &regex::Captures| {
        bindings
            .get(&found[0])
            .cloned()
            .unwrap_or_else(|| found[0].to_string())
    })
    .into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lines(text: &str) -> Vec<String> {
        text.lines().map(str::to_string).collect()
    }

    fn all(screen: &[String]) -> Vec<usize> {
        (0..screen.len()).collect()
    }

    #[test]
    fn pids_ports_times_and_columns_are_masked_small_numbers_are_not() {
        let mut known = Bindings::new();
        let narration = Pattern::new(
            "[  4.538s iterative pid=15003 tid=15003] accepted client 1 from 127.0.0.1:46846",
        );
        assert!(narration
            .matches(
                "[118.102s iterative pid=7 tid=7] accepted client 1 from 127.0.0.1:51000",
                &known
            )
            .is_some());
        // The client's number is the lesson.
        assert!(narration
            .matches(
                "[118.102s iterative pid=7 tid=7] accepted client 2 from 127.0.0.1:51000",
                &known
            )
            .is_none());
        let ss = Pattern::new("LISTEN 0      5          127.0.0.1:7001      0.0.0.0:*");
        assert!(ss
            .matches("LISTEN 0 5 127.0.0.1:7001 0.0.0.0:*", &known)
            .is_some());
        assert!(ss
            .matches("LISTEN 1 5 127.0.0.1:7001 0.0.0.0:*", &known)
            .is_none());
        let strace = Pattern::new(
            "08:25:42.506001 accept4(3, 0x7ffe098d2728, [128], SOCK_CLOEXEC) = ? ERESTARTSYS",
        );
        assert!(strace
            .matches(
                "19:01:02.000001 accept4(3, 0x7ffc00000001, [128], SOCK_CLOEXEC) = ? ERESTARTSYS",
                &known
            )
            .is_some());
        let noted = Pattern::new("accept4(8, NULL, NULL, SOCK_CLOEXEC) = 10    ← a client");
        assert!(noted
            .matches("accept4(8, NULL, NULL, SOCK_CLOEXEC) = 10", &known)
            .is_some());
        let tree = Pattern::new("fork-server(6613)-+-fork-server(6798)");
        assert!(tree
            .matches("fork-server(26784)─┬─fork-server(26819)", &known)
            .is_some());
        let cut = Pattern::new(
            r#"sendto(4, "HELLO iterative pid=17409 tid=17"..., 36, MSG_NOSIGNAL, NULL, 0) = 36"#,
        );
        assert!(cut
            .matches(
                r#"sendto(4, "HELLO iterative pid=9409 tid=940"..., 34, MSG_NOSIGNAL, NULL, 0) = 34"#,
                &known
            )
            .is_some());
        let cut_early = Pattern::new(
            r#"sendto(4, "OK model=iterative pid=17409 tid"..., 48, MSG_NOSIGNAL, NULL, 0) = 48"#,
        );
        assert!(cut_early
            .matches(
                r#"sendto(4, "OK model=iterative pid=997 tid=9"..., 44, MSG_NOSIGNAL, NULL, 0) = 44"#,
                &known
            )
            .is_some());
        assert!(cut_early
            .matches(
                r#"sendto(4, "HELLO iterative pid=997 tid=997"..., 34, MSG_NOSIGNAL, NULL, 0) = 34"#,
                &known
            )
            .is_none());
        let hello = Pattern::new(
            r#"sendto(4, "HELLO iterative pid=17409 tid=17"..., 36, MSG_NOSIGNAL, NULL, 0) = 36"#,
        );
        assert!(hello
            .matches(
                r#"sendto(4, "HELLO iterative pid=997 tid=997\n", 32, MSG_NOSIGNAL, NULL, 0) = 32"#,
                &known
            )
            .is_some());
        assert!(cut_early
            .matches(
                r#"sendto(4, "OK model=iterative pid=9409 tid="..., 47, MSG_NOSIGNAL, NULL, 0) = 47"#,
                &known
            )
            .is_some());
        let elided = Pattern::new("lrwx------ 1 root root 64 ... 3 -> socket:[2347847]");
        assert!(elided
            .matches(
                "lrwx------ 1 root root 64 Dec  5 19:40 3 -> socket:[99]",
                &known
            )
            .is_some());
        let interrupted = Pattern::new("[  2.036s fork pid=4127 tid=4127] stop signal");
        known.insert("4127".into(), "555".into());
        assert!(interrupted
            .matches("^C[  2.036s fork pid=555 tid=555] stop signal", &known)
            .is_some());
        // Once 4127 is 555, it is 555 everywhere.
        assert!(interrupted
            .matches("[  2.036s fork pid=556 tid=556] stop signal", &known)
            .is_none());
    }

    #[test]
    fn expected_lines_are_found_in_any_order_and_bind_the_numbers() {
        let expected = [
            Pattern::new(
                "ESTAB 0 0 127.0.0.1:7002 127.0.0.1:40822 users:((\"fork-server\",pid=6798,fd=4))",
            ),
            Pattern::new(
                "ESTAB 0 0 127.0.0.1:7002 127.0.0.1:40836 users:((\"fork-server\",pid=6821,fd=4))",
            ),
        ];
        let screen = lines(
            "$ ss -tnp\nESTAB 0 0 127.0.0.1:7002 127.0.0.1:5001 users:((\"fork-server\",pid=901,fd=4))\nESTAB 0 0 127.0.0.1:7002 127.0.0.1:5000 users:((\"fork-server\",pid=900,fd=4))",
        );
        let mut known = Bindings::new();
        known.insert("6821".into(), "900".into());
        assert_eq!(
            find_all(&expected, &screen, &all(&screen), &mut known),
            Ok(vec![1, 2])
        );
        assert_eq!(known["6798"], "901");
        assert_eq!(known["40836"], "5000");
        assert_eq!(
            substitute("kill -TERM 6798 6821 7", &known),
            "kill -TERM 901 900 7"
        );
    }

    #[test]
    fn a_tree_is_compared_row_by_row_in_any_order() {
        let rows = |text: &str| text.lines().flat_map(tree_rows).collect::<Vec<_>>();
        assert_eq!(
            rows("fork-server(6613)-+-fork-server(6798)\n                  |-fork-server(6803)\n                  `-fork-server(6821)"),
            ["fork-server(6613)", "-fork-server(6798)", "-fork-server(6803)", "-fork-server(6821)"]
        );
        assert_eq!(rows("a(1)---b(2)"), ["a(1)", "-b(2)"]);
        // The pids wrapped around: the child forked last comes first.
        let screen = rows("fork-server(32700)─┬─fork-server(300)\n                   ├─fork-server(32710)\n                   └─fork-server(32750)");
        let expected: Vec<Pattern> = rows(
            "fork-server(6613)-+-fork-server(6798)\n |-fork-server(6803)\n `-fork-server(6821)",
        )
        .iter()
        .map(|row| Pattern::new(row))
        .collect();
        let mut known = Bindings::new();
        for (tutorial, run) in [
            ("6613", "32700"),
            ("6798", "32710"),
            ("6803", "32750"),
            ("6821", "300"),
        ] {
            known.insert(tutorial.into(), run.into());
        }
        assert!(find_all(&expected, &screen, &all(&screen), &mut known).is_ok());
        // A parent is not a child.
        let mut known = Bindings::new();
        known.insert("6613".into(), "300".into());
        assert!(find_all(&expected[..1], &screen, &all(&screen), &mut known).is_err());
    }

    #[test]
    fn a_machines_figures_match_any_number_but_a_known_pid_must_match() {
        let expected = [
            Pattern::figure("31938    1  3924   5132 fork-server"),
            Pattern::figure("32197    1  2132   5132 fork-server"),
            Pattern::figure("32198    1  2132   5132 fork-server"),
        ];
        let screen = lines(
            "500 1 4000 6000 fork-server\n501 1 2200 6000 fork-server\n502 1 2300 6000 fork-server",
        );
        let mut known = Bindings::new();
        known.insert("31938".into(), "500".into());
        assert!(find_all(&expected, &screen, &all(&screen), &mut known).is_ok());
        assert_eq!(known.len(), 1);
        // Small numbers are still compared: one thread per process.
        let screen = lines(
            "500 2 4000 6000 fork-server\n501 1 2200 6000 fork-server\n502 1 2300 6000 fork-server",
        );
        assert_eq!(
            find_all(&expected, &screen, &all(&screen), &mut known),
            Err(vec![0])
        );
    }

    #[test]
    fn one_changed_word_is_a_missing_line() {
        let screen = lines("HELLO iterative pid=1 tid=1\nOK model=iterative pid=1 tid=1 client=1");
        let expected = [
            Pattern::new("HELLO iterative pid=15003 tid=15003"),
            Pattern::new("OK model=forked pid=15003 tid=15003 client=1"),
        ];
        let mut known = Bindings::new();
        assert_eq!(
            find_all(&expected, &screen, &all(&screen), &mut known),
            Err(vec![1])
        );
    }
}
