//! The results: rows, markdown tables, CSV, JSON and the SVG charts.

use std::fmt::Write as _;
use std::path::Path;

use anyhow::{Context, Result};
use plotters::prelude::*;
use serde::{Deserialize, Serialize};

use crate::procfs::Footprint;

/// One measurement of a timed workload (`echo` or `connect`) at one concurrency.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct TimedRow {
    /// The target's short name.
    pub target: String,
    /// `echo` or `connect`.
    pub workload: String,
    /// Concurrent connections (echo) or concurrent clients (connect).
    pub concurrency: usize,
    /// Connections greeted (echo: of `concurrency`; connect: in total).
    pub greeted: usize,
    /// Requests (echo) or connections (connect) completed in the window.
    pub completed: u64,
    /// The window, seconds.
    pub seconds: f64,
    /// `completed` per second.
    pub per_second: f64,
    /// Latency percentiles, microseconds.
    pub p50_us: f64,
    /// 99th percentile.
    pub p99_us: f64,
    /// 99.9th percentile.
    pub p999_us: f64,
    /// Server tree CPU, percent of one core, during the window.
    pub server_cpu_pct: f64,
    /// Server tree CPU microseconds per completed request/connection (UNP's metric).
    pub server_cpu_us_per_op: f64,
    /// Load generator CPU, percent of one core.
    pub bench_cpu_pct: f64,
    /// Failed connections or wrong replies.
    pub errors: u64,
    /// What the first error said.
    pub first_error: Option<String>,
    /// `per_second` over tokio current-thread's at the same concurrency, same run.
    pub vs_tokio_ct: Option<f64>,
    /// `per_second` over tokio multi-thread's.
    pub vs_tokio_mt: Option<f64>,
    /// Runs made of this point (`--repeat`); this row is the one of median throughput.
    pub runs: u32,
}

/// What holding `concurrency` idle connections cost a server.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct IdleRow {
    /// The target.
    pub target: String,
    /// Connections held open.
    pub concurrency: usize,
    /// Of which greeted.
    pub greeted: usize,
    /// The server tree before connecting.
    pub baseline: Footprint,
    /// The server tree while the connections were held.
    pub held: Footprint,
    /// (RSS held - RSS baseline) / greeted connections, KiB.
    pub rss_kib_per_conn: Option<f64>,
    /// The same with PSS (shared pages divided between processes).
    pub pss_kib_per_conn: Option<f64>,
    /// Failures.
    pub errors: u64,
    /// What the first error said.
    pub first_error: Option<String>,
}

/// The C10K check.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct C10kRow {
    /// The target.
    pub target: String,
    /// Connections opened at once.
    pub connections: usize,
    /// Greeted.
    pub greeted: usize,
    /// Answered one `ECHO` correctly while all were open.
    pub echoed: usize,
    /// Seconds to open, greet and echo them all.
    pub seconds: f64,
    /// The server tree while they were open.
    pub held: Footprint,
    /// (RSS held - RSS baseline) / echoed, KiB.
    pub rss_kib_per_conn: Option<f64>,
    /// Failures.
    pub errors: u64,
    /// What the first error said.
    pub first_error: Option<String>,
    /// All connections greeted and echoed.
    pub passed: bool,
}

/// The soak of one target: many short connections, a batch at a time, and whether the server's
/// tree grew.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct SoakRow {
    /// The target.
    pub target: String,
    /// Connections asked for (`--soak-connections`).
    pub connections: usize,
    /// Connections opened at once: `--soak-batch`, or less for a server whose client cap is lower.
    pub batch: usize,
    /// Why the batch is smaller than asked, if it is.
    pub batch_note: Option<String>,
    /// Connections that went through the whole exchange.
    pub completed: usize,
    /// Failed connections.
    pub errors: u64,
    /// What the first error said.
    pub first_error: Option<String>,
    /// Seconds spent in the batches (not in the samples between them).
    pub seconds: f64,
    /// `completed / seconds`.
    pub per_second: f64,
    /// Seconds from the first batch to the last reading, samples and settling included.
    pub wall_seconds: f64,
    /// The tree right after startup: what processes, zombies, threads and fds must come back to.
    pub baseline: Footprint,
    /// The tree after the warm-up batch, settled: where RSS and PSS start from.
    pub before: Footprint,
    /// The tree after the last batch, once settled (or after the wait for it ran out).
    pub after: Footprint,
    /// Processes, zombies, threads and fds were back at `baseline` at the end.
    pub back_to_baseline: bool,
    /// Readings after each tenth of the connections.
    pub samples: Vec<SoakSample>,
    /// RSS growth allowed before the verdict flags it, KiB (`--soak-rss-tolerance`).
    pub rss_tolerance_kib: u64,
    /// `no growth`, or what grew.
    pub verdict: String,
    /// No growth, and every connection completed without error.
    pub passed: bool,
}

/// One reading of the server's tree during the soak.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct SoakSample {
    /// Which tenth of the connections had been made (1 to 10).
    pub tenth: u32,
    /// Connections made so far.
    pub connections: usize,
    /// Seconds since the soak started.
    pub seconds: f64,
    /// The tree then.
    pub footprint: Footprint,
    /// Its counts were back at the baseline when read (the reading waits up to 2 s for that).
    pub at_baseline: bool,
}

impl SoakRow {
    /// RSS after minus RSS before, KiB (negative when it shrank).
    pub fn rss_growth_kib(&self) -> i64 {
        self.after.rss_kib as i64 - self.before.rss_kib as i64
    }
}

/// The soak's verdict: `no growth` when processes, zombies, threads and descriptors are back at
/// the baseline and RSS grew by at most `tolerance_kib`; otherwise what grew, in capitals.
pub fn soak_verdict(
    baseline: &Footprint,
    before: &Footprint,
    after: &Footprint,
    tolerance_kib: u64,
) -> String {
    let mut grew = counts_diff(baseline, after);
    let rss = after.rss_kib as i64 - before.rss_kib as i64;
    if rss > tolerance_kib as i64 {
        grew.push(format!("RSS +{rss} KiB (over {tolerance_kib})"));
    }
    if grew.is_empty() {
        "no growth".into()
    } else {
        format!("GROWTH: {}", grew.join("; "))
    }
}

/// The leak check and the stop of one target.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct LeakRow {
    /// The target.
    pub target: String,
    /// The server tree after startup.
    pub baseline: Footprint,
    /// The server tree after all its workloads (and the wait for it to settle).
    pub after: Footprint,
    /// Processes, zombies, threads and descriptors back to the baseline.
    pub back_to_baseline: bool,
    /// Points during the run where the tree did not come back in time.
    pub notes: Vec<String>,
    /// How the server ended after SIGTERM.
    pub stop: String,
    /// It exited with status 0.
    pub clean_exit: bool,
    /// Bytes it wrote on stderr despite `--quiet`.
    pub stderr_bytes: usize,
}

/// A target that was not measured.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Skipped {
    /// The target.
    pub target: String,
    /// Why.
    pub reason: String,
}

/// Everything one run measured.
#[derive(Clone, Debug, Serialize, Deserialize, Default)]
pub struct Results {
    /// The command line, the machine, notes.
    pub meta: Meta,
    /// Echo and connect rows.
    pub timed: Vec<TimedRow>,
    /// Idle rows.
    pub idle: Vec<IdleRow>,
    /// C10K rows.
    pub c10k: Vec<C10kRow>,
    /// Soak rows (absent from the results of bench versions before the soak).
    #[serde(default)]
    pub soak: Vec<SoakRow>,
    /// One per measured target.
    pub leaks: Vec<LeakRow>,
    /// Targets not measured.
    pub skipped: Vec<Skipped>,
    /// Target name to label.
    pub labels: Vec<(String, String)>,
}

/// Where and how the run was made.
#[derive(Clone, Debug, Serialize, Deserialize, Default)]
pub struct Meta {
    /// The bench's own command line.
    pub command: String,
    /// When (UTC, from `date`).
    pub date: String,
    /// CPUs available.
    pub cpus: usize,
    /// `uname -sr`.
    pub kernel: String,
    /// The CPU model and the memory, from `/proc/cpuinfo` and `/proc/meminfo`.
    #[serde(default)]
    pub machine: String,
    /// The git commit measured (kept in results.json only: the markdown is shown to students,
    /// and a re-run replaces it).
    pub commit: String,
    /// Payload bytes per ECHO.
    pub size: usize,
    /// Seconds per timed measurement.
    pub duration_s: f64,
    /// Remarks (descriptor limit, ...).
    pub notes: Vec<String>,
}

impl Results {
    /// Fills in the ratios against the tokio baselines.
    pub fn compute_ratios(&mut self) {
        let base = |rows: &[TimedRow], target: &str, workload: &str, c: usize| {
            rows.iter()
                .find(|r| r.target == target && r.workload == workload && r.concurrency == c)
                .map(|r| r.per_second)
                .filter(|&v| v > 0.0)
        };
        let copy = self.timed.clone();
        for row in &mut self.timed {
            row.vs_tokio_ct =
                base(&copy, "tokio-ct", &row.workload, row.concurrency).map(|b| row.per_second / b);
            row.vs_tokio_mt =
                base(&copy, "tokio-mt", &row.workload, row.concurrency).map(|b| row.per_second / b);
        }
    }

    /// The whole report as markdown.
    pub fn markdown(&self) -> String {
        let mut out = String::new();
        let m = &self.meta;
        // No title: docs/benchmarks.md includes this file under its own heading.
        let _ = writeln!(out, "- command: `{}`", m.command);
        let _ = writeln!(out, "- date: {}", m.date);
        let machine = if m.machine.is_empty() {
            String::new()
        } else {
            format!(", {}", m.machine)
        };
        let _ = writeln!(out, "- machine: {} CPUs{machine}; {}", m.cpus, m.kernel);
        let _ = writeln!(
            out,
            "- ECHO payload {} bytes; {} s per timed measurement",
            m.size, m.duration_s
        );
        for note in &m.notes {
            let _ = writeln!(out, "- {note}");
        }
        for s in &self.skipped {
            let _ = writeln!(out, "- skipped **{}**: {}", s.target, s.reason);
        }
        let _ = writeln!(
            out,
            "\nCPU columns are percent of one core (200% = both cores of a 2-core machine); \
            `server` is the server's whole process tree, `bench` the load generator."
        );
        for (workload, title, unit) in [
            (
                "echo",
                "echo: one request in flight per connection",
                "req/s",
            ),
            (
                "connect",
                "connect: a new connection per request (connect, HELLO, ECHO, QUIT, close)",
                "conn/s",
            ),
        ] {
            let rows: Vec<&TimedRow> = self
                .timed
                .iter()
                .filter(|r| r.workload == workload)
                .collect();
            if rows.is_empty() {
                continue;
            }
            let _ = writeln!(out, "\n## {title}\n");
            let _ = writeln!(
                out,
                "| target | C | greeted | {unit} | × tokio-ct | × tokio-mt | p50 µs | p99 µs | p99.9 µs | server CPU µs/op | server CPU | bench CPU | errors |"
            );
            let _ = writeln!(out, "|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|");
            for r in rows {
                let _ = writeln!(
                    out,
                    "| {} | {} | {} | {:.0} | {} | {} | {:.0} | {:.0} | {:.0} | {:.1} | {:.0}% | {:.0}% | {} |",
                    r.target,
                    r.concurrency,
                    r.greeted,
                    r.per_second,
                    ratio(r.vs_tokio_ct),
                    ratio(r.vs_tokio_mt),
                    r.p50_us,
                    r.p99_us,
                    r.p999_us,
                    r.server_cpu_us_per_op,
                    r.server_cpu_pct,
                    r.bench_cpu_pct,
                    error_cell(r.errors, &r.first_error),
                );
            }
        }
        if !self.idle.is_empty() {
            let _ = writeln!(out, "\n## idle: C connections held open, each greeted\n");
            let _ = writeln!(out, "| target | C | greeted | processes | threads | fds | RSS KiB | KiB/conn (RSS) | KiB/conn (PSS) | errors |");
            let _ = writeln!(out, "|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|");
            for r in &self.idle {
                let _ = writeln!(
                    out,
                    "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
                    r.target,
                    r.concurrency,
                    r.greeted,
                    r.held.processes,
                    r.held.threads,
                    r.held.fds,
                    r.held.rss_kib,
                    kib(r.rss_kib_per_conn),
                    kib(r.pss_kib_per_conn),
                    error_cell(r.errors, &r.first_error),
                );
            }
        }
        if !self.c10k.is_empty() {
            let _ = writeln!(
                out,
                "\n## C10K: connections open at once, each greeted and answering one ECHO\n"
            );
            let _ = writeln!(out, "| target | connections | greeted | echoed | seconds | processes | threads | fds | RSS KiB | KiB/conn | result |");
            let _ = writeln!(out, "|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|---|");
            for r in &self.c10k {
                let _ = writeln!(
                    out,
                    "| {} | {} | {} | {} | {:.2} | {} | {} | {} | {} | {} | {} |",
                    r.target,
                    r.connections,
                    r.greeted,
                    r.echoed,
                    r.seconds,
                    r.held.processes,
                    r.held.threads,
                    r.held.fds,
                    r.held.rss_kib,
                    kib(r.rss_kib_per_conn),
                    if r.passed {
                        "pass".to_string()
                    } else {
                        format!("FAIL {}", error_cell(r.errors, &r.first_error))
                    },
                );
            }
        }
        if !self.soak.is_empty() {
            self.soak_markdown(&mut out);
        }
        if !self.leaks.is_empty() {
            let _ = writeln!(out, "\n## leaks and shutdown: the server tree after its runs, against its baseline after startup\n");
            let _ = writeln!(out, "| target | processes | threads | fds | zombies | back to baseline | SIGTERM | stderr bytes |");
            let _ = writeln!(out, "|---|--:|--:|--:|--:|---|---|--:|");
            for r in &self.leaks {
                let pair = |a: u64, b: u64| {
                    if a == b {
                        a.to_string()
                    } else {
                        format!("{a} → {b}")
                    }
                };
                let _ = writeln!(
                    out,
                    "| {} | {} | {} | {} | {} | {} | {} | {} |",
                    r.target,
                    pair(r.baseline.processes, r.after.processes),
                    pair(r.baseline.threads, r.after.threads),
                    pair(r.baseline.fds, r.after.fds),
                    pair(r.baseline.zombies, r.after.zombies),
                    if r.back_to_baseline && r.notes.is_empty() {
                        "yes".to_string()
                    } else if r.back_to_baseline {
                        format!("yes (late: {})", r.notes.join("; "))
                    } else {
                        format!("**NO** {}", r.notes.join("; "))
                    },
                    r.stop,
                    r.stderr_bytes,
                );
            }
        }
        out
    }

    /// Writes results.json, results.md, a CSV per table and an SVG per timed workload into `dir`.
    /// Returns the files written.
    pub fn write(&self, dir: &Path) -> Result<Vec<String>> {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
        let mut written = Vec::new();
        let mut put = |name: &str, text: String| -> Result<()> {
            let path = dir.join(name);
            std::fs::write(&path, text)
                .with_context(|| format!("cannot write {}", path.display()))?;
            written.push(path.display().to_string());
            Ok(())
        };
        put("results.json", serde_json::to_string_pretty(self)?)?;
        put("results.md", self.markdown())?;
        for workload in ["echo", "connect"] {
            let rows: Vec<&TimedRow> = self
                .timed
                .iter()
                .filter(|r| r.workload == workload)
                .collect();
            if rows.is_empty() {
                continue;
            }
            let mut csv = String::from("target,workload,concurrency,greeted,completed,seconds,per_second,vs_tokio_ct,vs_tokio_mt,p50_us,p99_us,p999_us,server_cpu_pct,server_cpu_us_per_op,bench_cpu_pct,errors\n");
            for r in rows {
                let _ = writeln!(
                    csv,
                    "{},{},{},{},{},{:.3},{:.1},{},{},{:.1},{:.1},{:.1},{:.1},{:.2},{:.1},{}",
                    r.target,
                    r.workload,
                    r.concurrency,
                    r.greeted,
                    r.completed,
                    r.seconds,
                    r.per_second,
                    r.vs_tokio_ct.map_or(String::new(), |v| format!("{v:.3}")),
                    r.vs_tokio_mt.map_or(String::new(), |v| format!("{v:.3}")),
                    r.p50_us,
                    r.p99_us,
                    r.p999_us,
                    r.server_cpu_pct,
                    r.server_cpu_us_per_op,
                    r.bench_cpu_pct,
                    r.errors
                );
            }
            put(&format!("{workload}.csv"), csv)?;
        }
        if !self.idle.is_empty() {
            let mut csv = String::from("target,concurrency,greeted,processes,threads,fds,rss_kib,pss_kib,baseline_rss_kib,baseline_pss_kib,rss_kib_per_conn,pss_kib_per_conn,errors\n");
            for r in &self.idle {
                let _ = writeln!(
                    csv,
                    "{},{},{},{},{},{},{},{},{},{},{},{},{}",
                    r.target,
                    r.concurrency,
                    r.greeted,
                    r.held.processes,
                    r.held.threads,
                    r.held.fds,
                    r.held.rss_kib,
                    r.held.pss_kib,
                    r.baseline.rss_kib,
                    r.baseline.pss_kib,
                    r.rss_kib_per_conn
                        .map_or(String::new(), |v| format!("{v:.2}")),
                    r.pss_kib_per_conn
                        .map_or(String::new(), |v| format!("{v:.2}")),
                    r.errors
                );
            }
            put("idle.csv", csv)?;
        }
        if !self.c10k.is_empty() {
            let mut csv = String::from("target,connections,greeted,echoed,seconds,processes,threads,fds,rss_kib,rss_kib_per_conn,errors,passed\n");
            for r in &self.c10k {
                let _ = writeln!(
                    csv,
                    "{},{},{},{},{:.3},{},{},{},{},{},{},{}",
                    r.target,
                    r.connections,
                    r.greeted,
                    r.echoed,
                    r.seconds,
                    r.held.processes,
                    r.held.threads,
                    r.held.fds,
                    r.held.rss_kib,
                    r.rss_kib_per_conn
                        .map_or(String::new(), |v| format!("{v:.2}")),
                    r.errors,
                    r.passed
                );
            }
            put("c10k.csv", csv)?;
        }
        if !self.soak.is_empty() {
            put("soak.csv", self.soak_csv())?;
            put("soak-samples.csv", self.soak_samples_csv())?;
        }
        if !self.leaks.is_empty() {
            let mut csv = String::from("target,baseline_processes,after_processes,baseline_threads,after_threads,baseline_fds,after_fds,after_zombies,back_to_baseline,stop,clean_exit,stderr_bytes\n");
            for r in &self.leaks {
                let _ = writeln!(
                    csv,
                    "{},{},{},{},{},{},{},{},{},{},{},{}",
                    r.target,
                    r.baseline.processes,
                    r.after.processes,
                    r.baseline.threads,
                    r.after.threads,
                    r.baseline.fds,
                    r.after.fds,
                    r.after.zombies,
                    r.back_to_baseline,
                    r.stop.replace(',', ";"),
                    r.clean_exit,
                    r.stderr_bytes
                );
            }
            put("leaks.csv", csv)?;
        }
        for (workload, unit) in [("echo", "requests/s"), ("connect", "connections/s")] {
            if self.timed.iter().any(|r| r.workload == workload) {
                let path = dir.join(format!("{workload}.svg"));
                self.chart(workload, unit, &path)
                    .with_context(|| format!("cannot draw {}", path.display()))?;
                written.push(path.display().to_string());
            }
        }
        Ok(written)
    }

    /// The soak's section: one row per target, then RSS after each tenth.
    fn soak_markdown(&self, out: &mut String) {
        let first = &self.soak[0];
        let batch = self
            .soak
            .iter()
            .map(|r| r.batch)
            .max()
            .unwrap_or(first.batch);
        let _ = writeln!(
            out,
            "\n## soak: {} connections per target, {batch} at a time, each HELLO, ECHO, QUIT, close\n",
            first.connections
        );
        let _ = writeln!(
            out,
            "Before: after one warm-up batch, settled. After: once processes, zombies, threads and fds \
            are back at the server's baseline after startup (or the wait ran out). \
            `no growth`: those four are back, and RSS grew by at most {} KiB.\n",
            first.rss_tolerance_kib
        );
        let _ = writeln!(out, "| target | connections | at a time | errors | seconds | conn/s | RSS KiB before → after | Δ RSS KiB | PSS KiB before → after | processes | threads | fds | zombies | verdict |");
        let _ = writeln!(
            out,
            "|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|---|"
        );
        let pair = |a: u64, b: u64| {
            if a == b {
                a.to_string()
            } else {
                format!("**{a} → {b}**")
            }
        };
        for r in &self.soak {
            let _ = writeln!(
                out,
                "| {} | {} | {} | {} | {:.1} | {:.0} | {} → {} | {:+} | {} → {} | {} | {} | {} | {} | {} |",
                r.target,
                r.completed,
                r.batch,
                error_cell(r.errors, &r.first_error),
                r.seconds,
                r.per_second,
                r.before.rss_kib,
                r.after.rss_kib,
                r.rss_growth_kib(),
                r.before.pss_kib,
                r.after.pss_kib,
                pair(r.baseline.processes, r.after.processes),
                pair(r.baseline.threads, r.after.threads),
                pair(r.baseline.fds, r.after.fds),
                pair(r.baseline.zombies, r.after.zombies),
                if r.verdict == "no growth" {
                    r.verdict.clone()
                } else {
                    format!("**{}**", r.verdict)
                },
            );
        }
        for r in self.soak.iter().filter(|r| r.batch_note.is_some()) {
            let _ = writeln!(
                out,
                "\n{}: {}",
                r.target,
                r.batch_note.as_deref().unwrap_or_default()
            );
        }
        let _ = writeln!(
            out,
            "\nRSS KiB of the server tree after each tenth of the connections (read once the \
            counts are back at the baseline, or after 2 s; what was not back is named):\n"
        );
        let _ = writeln!(
            out,
            "| target | before | 10% | 20% | 30% | 40% | 50% | 60% | 70% | 80% | 90% | 100% | after |"
        );
        let _ = writeln!(out, "|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|");
        for r in &self.soak {
            let mut cells = vec![r.before.rss_kib.to_string()];
            for tenth in 1..=10 {
                cells.push(match r.samples.iter().find(|s| s.tenth == tenth) {
                    Some(s) if s.at_baseline => s.footprint.rss_kib.to_string(),
                    Some(s) => format!(
                        "{} ({})",
                        s.footprint.rss_kib,
                        counts_diff(&r.baseline, &s.footprint).join(", ")
                    ),
                    None => "–".into(),
                });
            }
            cells.push(r.after.rss_kib.to_string());
            let _ = writeln!(out, "| {} | {} |", r.target, cells.join(" | "));
        }
    }

    fn soak_csv(&self) -> String {
        let mut csv = String::from("target,connections,batch,completed,errors,seconds,per_second,wall_seconds,before_rss_kib,after_rss_kib,rss_growth_kib,rss_tolerance_kib,before_pss_kib,after_pss_kib,baseline_processes,after_processes,baseline_threads,after_threads,baseline_fds,after_fds,after_zombies,back_to_baseline,verdict,passed\n");
        for r in &self.soak {
            let _ = writeln!(
                csv,
                "{},{},{},{},{},{:.3},{:.1},{:.3},{},{},{},{},{},{},{},{},{},{},{},{},{},{},{},{}",
                r.target,
                r.connections,
                r.batch,
                r.completed,
                r.errors,
                r.seconds,
                r.per_second,
                r.wall_seconds,
                r.before.rss_kib,
                r.after.rss_kib,
                r.rss_growth_kib(),
                r.rss_tolerance_kib,
                r.before.pss_kib,
                r.after.pss_kib,
                r.baseline.processes,
                r.after.processes,
                r.baseline.threads,
                r.after.threads,
                r.baseline.fds,
                r.after.fds,
                r.after.zombies,
                r.back_to_baseline,
                r.verdict.replace(',', ";"),
                r.passed
            );
        }
        csv
    }

    fn soak_samples_csv(&self) -> String {
        let mut csv = String::from(
            "target,point,connections,seconds,processes,zombies,threads,fds,rss_kib,pss_kib,at_baseline\n",
        );
        for r in &self.soak {
            let mut line = |point: String, conns: usize, secs: String, f: &Footprint, at: bool| {
                let _ = writeln!(
                    csv,
                    "{},{point},{conns},{secs},{},{},{},{},{},{},{at}",
                    r.target, f.processes, f.zombies, f.threads, f.fds, f.rss_kib, f.pss_kib
                );
            };
            line("before".into(), 0, "0".into(), &r.before, true);
            for s in &r.samples {
                line(
                    format!("{}%", s.tenth * 10),
                    s.connections,
                    format!("{:.3}", s.seconds),
                    &s.footprint,
                    s.at_baseline,
                );
            }
            line(
                "after".into(),
                r.completed + r.errors as usize,
                format!("{:.3}", r.wall_seconds),
                &r.after,
                r.back_to_baseline,
            );
        }
        csv
    }

    /// Throughput and p99 latency against concurrency, one line per target, log-log.
    fn chart(&self, workload: &str, unit: &str, path: &Path) -> Result<()> {
        let rows: Vec<&TimedRow> = self
            .timed
            .iter()
            .filter(|r| r.workload == workload)
            .collect();
        let mut targets: Vec<&str> = Vec::new();
        for r in &rows {
            if !targets.contains(&r.target.as_str()) {
                targets.push(&r.target);
            }
        }
        let cs = rows.iter().map(|r| r.concurrency as f64);
        let (c_min, c_max) = cs.fold((f64::MAX, 1.0f64), |(lo, hi), c| (lo.min(c), hi.max(c)));
        let x_range = (c_min.max(1.0) * 0.8)..(c_max * 1.25);

        let root = SVGBackend::new(path, (1280, 560)).into_drawing_area();
        root.fill(&WHITE).map_err(|e| anyhow::anyhow!("{e:?}"))?;
        let (title, body) = root.split_vertically(40);
        title
            .titled(
                &format!(
                    "netlabs bench, {workload} workload ({} CPUs, payload {} B, {} s per point)",
                    self.meta.cpus, self.meta.size, self.meta.duration_s
                ),
                ("sans-serif", 20),
            )
            .map_err(|e| anyhow::anyhow!("{e:?}"))?;
        // Two panels, and a legend strip on the right that names every line once.
        let (plots, legend) = body.split_horizontally(1120);
        let panels = plots.split_evenly((1, 2));
        for (i, target) in targets.iter().enumerate() {
            let color = Palette99::pick(i).to_rgba();
            let y = 90 + 24 * i as i32;
            legend
                .draw(&PathElement::new(
                    vec![(5, y), (35, y)],
                    color.stroke_width(3),
                ))
                .map_err(|e| anyhow::anyhow!("{e:?}"))?;
            legend
                .draw(&Text::new(
                    target.to_string(),
                    (42, y - 7),
                    ("sans-serif", 15),
                ))
                .map_err(|e| anyhow::anyhow!("{e:?}"))?;
        }
        let metrics: [Metric; 2] = [
            (unit, &|r: &TimedRow| r.per_second),
            ("p99 latency, µs", &|r: &TimedRow| r.p99_us),
        ];
        for (panel, (name, value)) in panels.iter().zip(metrics) {
            let values: Vec<f64> = rows.iter().map(|r| value(r)).filter(|v| *v > 0.0).collect();
            let lo = values.iter().cloned().fold(f64::MAX, f64::min).min(1e9);
            let hi = values.iter().cloned().fold(1.0f64, f64::max);
            // From the power of ten below the lowest point, so the axis has labels to read.
            let floor = 10f64.powf((lo.max(0.1) * 0.7).log10().floor());
            let y_range = floor..(hi * 1.5);
            let mut chart = ChartBuilder::on(panel)
                .margin(15)
                .caption(name, ("sans-serif", 18))
                .x_label_area_size(40)
                .y_label_area_size(70)
                .build_cartesian_2d(x_range.clone().log_scale(), y_range.log_scale())
                .map_err(|e| anyhow::anyhow!("{e:?}"))?;
            chart
                .configure_mesh()
                .x_desc("concurrent connections (log)")
                .y_desc(format!("{name} (log)"))
                .x_labels(12)
                .y_labels(12)
                .x_label_formatter(&|x| format!("{x:.0}"))
                .y_label_formatter(&|y| format!("{y:.0}"))
                .draw()
                .map_err(|e| anyhow::anyhow!("{e:?}"))?;
            for (i, target) in targets.iter().enumerate() {
                let color = Palette99::pick(i).to_rgba();
                let points: Vec<(f64, f64)> = rows
                    .iter()
                    .filter(|r| r.target == *target)
                    .map(|r| (r.concurrency as f64, value(r)))
                    .filter(|(_, v)| *v > 0.0)
                    .collect();
                chart
                    .draw_series(LineSeries::new(points.clone(), color.stroke_width(2)))
                    .map_err(|e| anyhow::anyhow!("{e:?}"))?;
                chart
                    .draw_series(points.iter().map(|&p| Circle::new(p, 3, color.filled())))
                    .map_err(|e| anyhow::anyhow!("{e:?}"))?;
            }
        }
        root.present().map_err(|e| anyhow::anyhow!("{e:?}"))?;
        Ok(())
    }
}

/// A panel of a chart: its title and what it plots of a row.
type Metric<'a> = (&'a str, &'a dyn Fn(&TimedRow) -> f64);

fn ratio(v: Option<f64>) -> String {
    v.map_or("–".into(), |v| format!("{v:.2}×"))
}

fn kib(v: Option<f64>) -> String {
    v.map_or("–".into(), |v| format!("{v:.1}"))
}

/// What is not back at the baseline, e.g. `fds 6 → 8`, one item per count.
fn counts_diff(base: &Footprint, now: &Footprint) -> Vec<String> {
    let mut parts = Vec::new();
    for (what, a, b) in [
        ("processes", base.processes, now.processes),
        ("zombies", base.zombies, now.zombies),
        ("threads", base.threads, now.threads),
        ("fds", base.fds, now.fds),
    ] {
        if a != b {
            parts.push(format!("{what} {a} → {b}"));
        }
    }
    parts
}

fn error_cell(count: u64, first: &Option<String>) -> String {
    match (count, first) {
        (0, _) => "0".into(),
        (n, Some(e)) => format!("{n} ({})", e.replace('|', "/")),
        (n, None) => n.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tree(fds: u64, rss_kib: u64) -> Footprint {
        Footprint {
            processes: 1,
            zombies: 0,
            threads: 1,
            fds,
            rss_kib,
            pss_kib: 0,
        }
    }

    #[test]
    fn the_soak_verdict_flags_what_grew() {
        let base = tree(6, 2000);
        assert_eq!(
            soak_verdict(&base, &base, &tree(6, 3024), 1024),
            "no growth"
        );
        // RSS may shrink; the tolerance is inclusive.
        assert_eq!(
            soak_verdict(&base, &base, &tree(6, 1500), 1024),
            "no growth"
        );
        assert_eq!(
            soak_verdict(&base, &base, &tree(6, 3025), 1024),
            "GROWTH: RSS +1025 KiB (over 1024)"
        );
        assert_eq!(
            soak_verdict(&base, &base, &tree(406, 2000), 1024),
            "GROWTH: fds 6 → 406"
        );
        let mut zombie = tree(6, 2000);
        zombie.zombies = 3;
        assert_eq!(
            soak_verdict(&base, &base, &zombie, 1024),
            "GROWTH: zombies 0 → 3"
        );
        // RSS is measured from `before` (after the warm-up), the counts from the baseline.
        assert_eq!(
            soak_verdict(&base, &tree(6, 5000), &tree(6, 5500), 1024),
            "no growth"
        );
    }
}
