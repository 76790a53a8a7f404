//! Playing a tutorial's steps in the terminals, and comparing each block with the screen.

use std::collections::{HashMap, HashSet};
use std::fmt::Write as _;
use std::time::{Duration, Instant};

use anyhow::bail;

use super::parse::{Block, Line, Step};
use super::screen::{self, Bindings, Pattern};
use super::tmux::Terminals;

/// How long a command may take to show its output (a `cargo` command: `build_timeout`).
#[derive(Debug, Clone, Copy)]
pub struct Timeouts {
    pub output: Duration,
    pub build: Duration,
}

/// Why a step failed: what the tutorial prints and what the terminal shows.
#[derive(Debug)]
pub struct Mismatch {
    pub block_line: usize,
    pub terminal: u32,
    pub reason: String,
    /// The tutorial's lines, each with whether the screen showed it.
    pub expected: Vec<(String, bool)>,
    /// The terminal's lines from where the block's typing began.
    pub actual: Vec<String>,
}

impl Mismatch {
    pub fn report(&self, file: &str) -> String {
        let mut out = String::new();
        let _ = writeln!(
            out,
            "  {file}:{}: terminal {}: {}",
            self.block_line,
            terminal_name(self.terminal),
            self.reason
        );
        if !self.expected.is_empty() {
            let _ = writeln!(out, "  expected (the tutorial; ✗ = not on the screen):");
            for (line, seen) in &self.expected {
                let _ = writeln!(out, "    {} {line}", if *seen { " " } else { "✗" });
            }
        }
        let _ = writeln!(out, "  actual (the terminal):");
        let tail = self.actual.len().saturating_sub(60);
        if tail > 0 {
            let _ = writeln!(out, "    ({tail} earlier lines left out)");
        }
        for line in &self.actual[tail..] {
            let _ = writeln!(out, "    | {line}");
        }
        out
    }
}

fn terminal_name(n: u32) -> String {
    if n > 100 {
        format!("'another terminal' #{}", n - 100)
    } else {
        n.to_string()
    }
}

pub struct Player {
    terminals: Terminals,
    /// Per terminal: the first screen line the next output may be on (after the last thing
    /// typed there), and the lines already matched.
    cursor: HashMap<u32, usize>,
    used: HashMap<u32, HashSet<usize>>,
    bindings: Bindings,
    timeouts: Timeouts,
    pub verbose: bool,
}

enum Wait {
    Done,
    Failed(Mismatch),
}

impl Player {
    pub fn new(terminals: Terminals, timeouts: Timeouts) -> Player {
        Player {
            terminals,
            cursor: HashMap::new(),
            used: HashMap::new(),
            bindings: Bindings::new(),
            timeouts,
            verbose: false,
        }
    }

    /// Plays one step; `Ok(Some(mismatch))` when the screen did not show what the tutorial says.
    pub fn step(&mut self, step: &Step) -> anyhow::Result<Option<Mismatch>> {
        for block in &step.blocks {
            for (n, &terminal) in block.terminals.iter().enumerate() {
                if let Wait::Failed(mismatch) = self.block(block, terminal, n == 0)? {
                    return Ok(Some(mismatch));
                }
            }
        }
        Ok(None)
    }

    fn block(&mut self, block: &Block, terminal: u32, compare: bool) -> anyhow::Result<Wait> {
        if self.terminals.open(terminal)? {
            self.wait_for_prompt(terminal)?;
        }
        let start = *self.cursor.get(&terminal).unwrap_or(&0);
        if block.interrupt {
            self.terminals.key(terminal, "C-c")?;
        }
        let mut expected: Vec<Pattern> = Vec::new();
        let mut typed: Option<&str> = None;
        for line in &block.lines {
            match line {
                Line::Output(text) => {
                    if compare && typed.is_some_and(is_tree) {
                        expected.extend(screen::tree_rows(text).iter().map(|r| Pattern::new(r)));
                    } else if compare && block.figures {
                        expected.push(Pattern::figure(text));
                    } else if compare {
                        expected.push(Pattern::new(text));
                    }
                }
                Line::Elided => {}
                Line::Key(key) => {
                    if let Wait::Failed(m) =
                        self.expect(block, terminal, &mut expected, typed, start)?
                    {
                        return Ok(Wait::Failed(m));
                    }
                    if self.verbose {
                        eprintln!("    [{}] {key}", terminal_name(terminal));
                    }
                    self.terminals.key(terminal, key)?;
                }
                Line::Command(command) | Line::Input(command) => {
                    if let Wait::Failed(m) =
                        self.expect(block, terminal, &mut expected, typed, start)?
                    {
                        return Ok(Wait::Failed(m));
                    }
                    let is_command = matches!(line, Line::Command(_));
                    if is_command {
                        self.shell_in_front(terminal)?;
                    }
                    if is_command && command.starts_with("ss ") {
                        wait_for_quiet_connections(self.timeouts.output.min(QUIET_WAIT));
                    }
                    let text = screen::substitute(command, &self.bindings);
                    if self.verbose {
                        eprintln!(
                            "    [{}] {}{text}",
                            terminal_name(terminal),
                            if is_command { "$ " } else { "> " }
                        );
                    }
                    self.terminals.type_line(terminal, &text)?;
                    let echo = if is_command {
                        format!("$ {text}")
                    } else {
                        text
                    };
                    if let Wait::Failed(m) = self.find_echo(block, terminal, &echo, start)? {
                        return Ok(Wait::Failed(m));
                    }
                    typed = Some(command);
                }
            }
        }
        self.expect(block, terminal, &mut expected, typed, start)
    }

    /// Waits until the expected lines are on the screen (or, with none, until the terminal is
    /// quiet: the shell back, or nothing new for a second).
    fn expect(
        &mut self,
        block: &Block,
        terminal: u32,
        expected: &mut Vec<Pattern>,
        typed: Option<&str>,
        start: usize,
    ) -> anyhow::Result<Wait> {
        let timeout = match typed {
            Some(command) if command.starts_with("cargo ") => self.timeouts.build,
            _ => self.timeouts.output,
        };
        let mut deadline = Instant::now() + timeout;
        let mut built = false;
        if expected.is_empty() {
            if typed.is_some() {
                self.settle(terminal, deadline)?;
            }
            return Ok(Wait::Done);
        }
        let mut cursor = *self.cursor.get(&terminal).unwrap_or(&0);
        let mut last_change = (Vec::new(), Instant::now());
        let mut retyped = 0;
        loop {
            super::check_interrupted()?;
            let screen = self.terminals.screen(terminal)?;
            // A command that has ended (the shell is back, and nothing new for 3 s) will not
            // show more: no need to wait for the whole timeout.
            let ended = if screen != last_change.0 {
                last_change = (screen.clone(), Instant::now());
                false
            } else {
                // (A pipeline's first process may be a subshell: `bash` in front is not enough,
                // the prompt must be back.)
                typed.is_some()
                    && last_change.1.elapsed() > Duration::from_secs(3)
                    && screen.last().is_some_and(|l| l == "$")
                    && self.terminals.foreground(terminal)? == "bash"
            };
            // Once cargo has built, what it runs gets the ordinary timeout.
            if !built
                && screen
                    .iter()
                    .skip(cursor)
                    .any(|l| l.trim_start().starts_with("Running `"))
            {
                built = true;
                deadline = deadline.min(Instant::now() + self.timeouts.output);
            }
            let used = self.used.entry(terminal).or_default();
            let candidates: Vec<usize> = (cursor..screen.len())
                .filter(|i| !used.contains(i))
                .collect();
            // The lines compared, and the screen line each comes from.
            let (lines, origin): (Vec<String>, Vec<usize>) = if typed.is_some_and(is_tree) {
                candidates
                    .iter()
                    .flat_map(|&i| {
                        screen::tree_rows(&screen[i])
                            .into_iter()
                            .map(move |r| (r, i))
                    })
                    .unzip()
            } else {
                candidates.iter().map(|&i| (screen[i].clone(), i)).unzip()
            };
            let all: Vec<usize> = (0..lines.len()).collect();
            let mut bindings = self.bindings.clone();
            match screen::find_all(expected, &lines, &all, &mut bindings) {
                Ok(found) => {
                    used.extend(found.iter().map(|&n| origin[n]));
                    self.bindings = bindings;
                    expected.clear();
                    return Ok(Wait::Done);
                }
                // What an observing command shows may not have settled yet (the replay types
                // the moment the last command ends; the 20 clients a loop started in the
                // background are still connecting): a student who sees less runs it again.
                Err(_) if ended && retyped < RETYPES && typed.is_some_and(observes) => {
                    retyped += 1;
                    std::thread::sleep(Duration::from_millis(500));
                    let command = screen::substitute(typed.unwrap_or_default(), &self.bindings);
                    if self.verbose {
                        eprintln!("    [{}] $ {command} (again)", terminal_name(terminal));
                    }
                    self.terminals.type_line(terminal, &command)?;
                    if let Wait::Failed(m) =
                        self.find_echo(block, terminal, &format!("$ {command}"), start)?
                    {
                        return Ok(Wait::Failed(m));
                    }
                    cursor = self.cursor[&terminal];
                    last_change = (Vec::new(), Instant::now());
                }
                Err(missing) if ended || Instant::now() > deadline => {
                    let reason = if ended {
                        format!(
                            "{} of {} lines not shown; the command has ended",
                            missing.len(),
                            expected.len()
                        )
                    } else {
                        format!(
                            "{} of {} lines not shown in time (--timeout-secs, --build-timeout-secs)",
                            missing.len(),
                            expected.len(),
                        )
                    };
                    return Ok(Wait::Failed(Mismatch {
                        block_line: block.line,
                        terminal,
                        reason,
                        expected: expected
                            .iter()
                            .enumerate()
                            .map(|(n, p)| (p.text.clone(), !missing.contains(&n)))
                            .collect(),
                        actual: screen[start.min(screen.len())..].to_vec(),
                    }));
                }
                Err(_) => std::thread::sleep(Duration::from_millis(200)),
            }
        }
    }

    fn settle(&self, terminal: u32, deadline: Instant) -> anyhow::Result<()> {
        let mut last = self.terminals.screen(terminal)?;
        let mut since = Instant::now();
        while Instant::now() < deadline {
            super::check_interrupted()?;
            std::thread::sleep(Duration::from_millis(150));
            let now = self.terminals.screen(terminal)?;
            if self.terminals.foreground(terminal)? == "bash"
                && now.last().is_some_and(|l| l == "$")
            {
                return Ok(());
            }
            if now != last {
                last = now;
                since = Instant::now();
            } else if since.elapsed() > Duration::from_millis(1000) {
                return Ok(());
            }
        }
        Ok(())
    }

    fn find_echo(
        &mut self,
        block: &Block,
        terminal: u32,
        echo: &str,
        start: usize,
    ) -> anyhow::Result<Wait> {
        let cursor = *self.cursor.get(&terminal).unwrap_or(&0);
        let deadline = Instant::now() + self.timeouts.output;
        loop {
            super::check_interrupted()?;
            let screen = self.terminals.screen(terminal)?;
            // The echo may share its line with the prompt, a `^C`, or what a background job
            // printed after the prompt.
            let typed = echo.trim_start_matches("$ ").trim();
            if let Some(at) = (cursor..screen.len()).find(|&i| screen[i].trim().ends_with(typed)) {
                self.cursor.insert(terminal, at + 1);
                return Ok(Wait::Done);
            }
            if Instant::now() > deadline {
                return Ok(Wait::Failed(Mismatch {
                    block_line: block.line,
                    terminal,
                    reason: format!("typed {echo:?}, but the terminal does not show it"),
                    expected: Vec::new(),
                    actual: screen[start.min(screen.len())..].to_vec(),
                }));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn wait_for_prompt(&self, terminal: u32) -> anyhow::Result<()> {
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            super::check_interrupted()?;
            if self
                .terminals
                .screen(terminal)?
                .last()
                .is_some_and(|l| l == "$")
            {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        bail!("terminal {terminal}'s shell did not start within 10 s")
    }

    /// Before a `$ ` command: the shell must be in front. A program still running there is what
    /// the tutorial tells the student to stop first (Ctrl-C).
    fn shell_in_front(&self, terminal: u32) -> anyhow::Result<()> {
        let deadline = Instant::now() + Duration::from_secs(10);
        let mut pressed = false;
        loop {
            super::check_interrupted()?;
            if self.terminals.foreground(terminal)? == "bash" {
                return Ok(());
            }
            if !pressed {
                if self.verbose {
                    eprintln!("    [{}] Ctrl-C", terminal_name(terminal));
                }
                self.terminals.key(terminal, "C-c")?;
                pressed = true;
            }
            if Instant::now() > deadline {
                bail!(
                    "terminal {}: {} still runs 10 s after Ctrl-C",
                    terminal_name(terminal),
                    self.terminals.foreground(terminal)?
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

/// How many times an observing command is typed again when its output does not match.
const RETYPES: u32 = 3;

/// A command that only looks (`ss`, `ps`, `ls /proc/...`): typing it again changes nothing.
fn observes(command: &str) -> bool {
    const LOOKING: [&str; 9] = [
        "ss", "ps", "pstree", "ls", "cat", "grep", "ipcs", "findmnt", "pgrep",
    ];
    let first = command.split_whitespace().next().unwrap_or_default();
    LOOKING.contains(&first) && !command.contains('>') && !command.contains('&')
}

/// A `pstree` command: its output is compared process by process (`screen::tree_rows`).
fn is_tree(command: &str) -> bool {
    command.starts_with("pstree ")
}

/// How long `ss` may wait for the loopback's connections to be quiet.
const QUIET_WAIT: Duration = Duration::from_secs(3);

/// Before an `ss`: waits (at most `limit`) until no established loopback connection has bytes
/// sent and not yet acknowledged. A reply just read by a client is acknowledged a few
/// milliseconds later (a delayed ACK), and until then `ss` shows it in Send-Q; a student typing
/// `ss` never sees that, the replay typing at once would. Bytes waiting to be *read* (Recv-Q,
/// lab01's queued client) are left as they are: they are the lesson.
fn wait_for_quiet_connections(limit: Duration) {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline && unacknowledged_bytes_on_loopback() {
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Whether an established IPv4 connection on 127.0.0.1 has bytes in its send queue, as
/// `/proc/net/tcp` shows them (`local_address rem_address st tx_queue:rx_queue`, in hex).
fn unacknowledged_bytes_on_loopback() -> bool {
    let Ok(table) = std::fs::read_to_string("/proc/net/tcp") else {
        return false;
    };
    table.lines().skip(1).any(|row| {
        let fields: Vec<&str> = row.split_whitespace().collect();
        let [_, local, _, state, queues, ..] = fields[..] else {
            return false;
        };
        const ESTABLISHED: &str = "01";
        const LOOPBACK: &str = "0100007F:";
        let send_queue = queues.split(':').next().unwrap_or("0");
        local.starts_with(LOOPBACK)
            && state == ESTABLISHED
            && u64::from_str_radix(send_queue, 16).is_ok_and(|n| n > 0)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_mismatch_names_the_block_the_terminal_and_the_missing_line() {
        let mismatch = Mismatch {
            block_line: 57,
            terminal: 2,
            reason: "1 of 2 lines not shown; the command has ended".into(),
            expected: vec![
                ("HELLO iterative pid=15003 tid=15003".into(), true),
                (
                    "OK model=iterativ pid=15003 tid=15003 client=1".into(),
                    false,
                ),
            ],
            actual: vec![
                "HELLO iterative pid=4 tid=4".into(),
                "OK model=iterative pid=4 tid=4 client=1".into(),
            ],
        };
        let report = mismatch.report("lab01-iterative/README.md");
        assert!(report.contains("lab01-iterative/README.md:57: terminal 2: 1 of 2 lines"));
        assert!(report.contains("✗ OK model=iterativ pid=15003"));
        assert!(report.contains("    HELLO iterative pid=15003"));
        assert!(report.contains("| OK model=iterative pid=4 tid=4 client=1"));
    }

    #[test]
    fn a_reply_not_yet_acknowledged_is_waited_for() {
        use std::io::Write;
        use std::net::{TcpListener, TcpStream};
        // A peer that never reads, with a small receive buffer: what we send past it stays in
        // our send queue, unacknowledged.
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let mut sender = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (_peer, _) = listener.accept().unwrap();
        sender.set_nonblocking(true).unwrap();
        let chunk = [0u8; 65536];
        while sender.write(&chunk).is_ok() {}
        assert!(unacknowledged_bytes_on_loopback());
        let started = Instant::now();
        wait_for_quiet_connections(Duration::from_millis(300));
        assert!(started.elapsed() >= Duration::from_millis(300));
    }
}
