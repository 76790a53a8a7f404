//! # bench: every server model side by side, against tokio
//!
//! Stevens (UNP, chapter 30) compares server designs by running one client workload against each.
//! This binary does that for every netlabs server: it builds and starts each one itself (release
//! build, `--port 0 --quiet --backlog 4096`), drives it with an async load generator, reads what
//! it cost from `/proc`, stops it with SIGTERM and checks that it exited 0 and leaked nothing.
//!
//! ```text
//! cargo run --release -p bench -- --quick          # under a minute on 2 cores
//! cargo run --release -p bench                     # the full sweep: C = 1, 10, 100, 1000
//! cargo run --release -p bench -- --c10k --targets epoll,tokio-ct --workloads c10k
//! cargo run --release -p bench -- --workloads soak  # every target, 10,000 connections each
//! ```
//!
//! Workloads (`--workloads`): `echo` (C connections, one ECHO in flight on each: requests/s and
//! latency), `connect` (a new connection per request: connections/s, latency, and the server's
//! CPU time per connection), `idle` (C connections held open: memory, processes, threads and
//! descriptors per connection), `c10k` (10,000 connections at once, each answering an ECHO),
//! `soak` (10,000 short connections, 200 at a time: does the server's tree grow?).
//! Results: a markdown table on stdout, and CSV, JSON and SVG charts in `--out`.

mod baseline;
mod load;
mod procfs;
mod report;
mod server;
mod targets;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand, ValueEnum};
use indicatif::{ProgressBar, ProgressStyle};

use crate::procfs::Footprint;
use crate::report::{C10kRow, IdleRow, LeakRow, Results, Skipped, SoakRow, SoakSample, TimedRow};
use crate::server::ServerProcess;
use crate::targets::{Binaries, Target};

/// Measures every netlabs server model side by side, against a tokio baseline.
#[derive(Parser, Debug)]
#[command(version, about, long_about = None, args_conflicts_with_subcommands = true)]
struct Cli {
    #[command(subcommand)]
    command: Option<Sub>,
    #[command(flatten)]
    run: RunArgs,
}

#[derive(Subcommand, Debug)]
enum Sub {
    /// Run the tokio baseline server (the bench starts itself with this; not for users).
    #[command(hide = true)]
    ServeTokio(baseline::ServeArgs),
}

/// A workload (see the module docs).
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum Workload {
    /// C connections, one ECHO in flight on each, for --duration.
    Echo,
    /// A new connection per request, C clients at once, for --duration.
    Connect,
    /// C connections held open: what they cost the server.
    Idle,
    /// --c10k-connections connections at once, each answering one ECHO.
    C10k,
    /// --soak-connections short connections, --soak-batch at a time (HELLO, ECHO, QUIT): the
    /// server's memory, processes, threads and descriptors must not grow.
    Soak,
}

#[derive(clap::Args, Debug)]
struct RunArgs {
    /// A short preset (under a minute on 2 cores): C = 1, 10, 100; 0.5 s per point; the main
    /// targets (at least one server of every lab, and both baselines). Flags given explicitly
    /// still win.
    #[arg(long)]
    quick: bool,

    /// Targets to measure, comma-separated [default: all; with --quick: one or more servers of
    /// every lab and both baselines: iterative, fork, prefork, thread, pool, select, poll, epoll,
    /// ipc, tokio-ct, tokio-mt]. Names: iterative, fork, prefork, thread, pool, select, poll,
    /// epoll, epoll-edge, ipc, tokio-ct, tokio-mt.
    #[arg(long, value_delimiter = ',')]
    targets: Option<Vec<String>>,

    /// Workloads to run, comma-separated [default: echo,connect,idle].
    #[arg(long, value_delimiter = ',', value_enum)]
    workloads: Option<Vec<Workload>>,

    /// Concurrency levels of the sweep [default: 1,10,100,1000; with --quick: 1,10,100].
    #[arg(long, short = 'c', value_delimiter = ',')]
    concurrency: Option<Vec<usize>>,

    /// Seconds per echo or connect measurement [default: 3; with --quick: 0.5].
    #[arg(long, short = 'd')]
    duration: Option<f64>,

    /// ECHO payload in bytes.
    #[arg(long, short = 's', default_value_t = 64, value_parser = clap::value_parser!(u64).range(0..=4000))]
    size: u64,

    /// Children of the pre-forked fork server (`fork-server --prefork N`).
    #[arg(long, default_value_t = 8)]
    prefork: u32,

    /// Threads of the pooled thread server (`thread-server --pool N`).
    #[arg(long, default_value_t = 8)]
    pool: u32,

    /// Also run the C10K check (same as adding `c10k` to --workloads).
    #[arg(long)]
    c10k: bool,

    /// Connections of the C10K check.
    #[arg(long, default_value_t = 10_000)]
    c10k_connections: usize,

    /// Targets the C10K check runs on (of those measured).
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "epoll,epoll-edge,tokio-ct,tokio-mt"
    )]
    c10k_targets: Vec<String>,

    /// Connections of the soak (each: HELLO, ECHO, QUIT, close).
    #[arg(long, default_value_t = 10_000, value_parser = clap::value_parser!(u64).range(1..=10_000_000))]
    soak_connections: u64,

    /// Connections the soak opens at once (a batch); lowered to a server's client cap if that is
    /// lower (ipc-server: 128), and said so.
    #[arg(long, default_value_t = 200, value_parser = clap::value_parser!(u64).range(1..=10_000))]
    soak_batch: u64,

    /// RSS growth (KiB) over the soak above which its verdict flags a target. Allocator caches
    /// and lazily touched pages make RSS move by a few hundred KiB; 1 MiB over 10,000
    /// connections is ~100 bytes per connection.
    #[arg(long, default_value_t = 1024)]
    soak_rss_tolerance: u64,

    /// Listen backlog given to every server, so the accept queue is not what limits a sweep.
    #[arg(long, default_value_t = 4096)]
    backlog: u32,

    /// Folder for results.json, results.md, *.csv and *.svg [default: target/bench-results in
    /// the workspace].
    #[arg(long)]
    out: Option<PathBuf>,

    /// Take the server binaries from this folder instead of building them with cargo
    /// (e.g. target/debug).
    #[arg(long)]
    bin_dir: Option<PathBuf>,

    /// How long a server with fewer workers than connections (iterative, a pool) may take to
    /// greet the next connection before the bench stops waiting, in seconds [default: 1; with
    /// --quick: 0.3].
    #[arg(long)]
    stall: Option<f64>,

    /// Do not measure: read the results.json of an earlier run and write its tables, CSV and
    /// charts again into --out.
    #[arg(long, value_name = "RESULTS_JSON")]
    replot: Option<PathBuf>,

    /// Run each echo and connect point N times and keep the run of median throughput (a shared
    /// machine is noisy).
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=15))]
    repeat: u32,
}

/// The run's settings, with the presets applied.
struct Plan {
    targets: Vec<Target>,
    workloads: Vec<Workload>,
    levels: Vec<usize>,
    duration: Duration,
    size: usize,
    stall: Duration,
    settle: Duration,
    c10k_connections: usize,
    c10k_targets: Vec<String>,
    soak_connections: usize,
    soak_batch: usize,
    soak_rss_tolerance: u64,
    backlog: u32,
    repeat: u32,
    out: PathBuf,
    bin_dir: Option<PathBuf>,
}

impl Plan {
    fn from(args: RunArgs) -> Result<Plan> {
        let quick = args.quick;
        let names = targets::names();
        let wanted: Vec<String> = match args.targets {
            Some(t) => t,
            None if quick => [
                "iterative",
                "fork",
                "prefork",
                "thread",
                "pool",
                "select",
                "poll",
                "epoll",
                "ipc",
                "tokio-ct",
                "tokio-mt",
            ]
            .iter()
            .map(|s| s.to_string())
            .collect(),
            None => names.iter().map(|s| s.to_string()).collect(),
        };
        for name in wanted.iter().chain(&args.c10k_targets) {
            if !names.contains(&name.as_str()) {
                bail!(
                    "unknown target {name:?}; the targets are: {}",
                    names.join(", ")
                );
            }
        }
        let targets = targets::all(args.prefork, args.pool)
            .into_iter()
            .filter(|t| wanted.iter().any(|w| w == t.name))
            .collect();
        let mut workloads = args
            .workloads
            .unwrap_or_else(|| vec![Workload::Echo, Workload::Connect, Workload::Idle]);
        if args.c10k && !workloads.contains(&Workload::C10k) {
            workloads.push(Workload::C10k);
        }
        let levels = args.concurrency.unwrap_or_else(|| {
            if quick {
                vec![1, 10, 100]
            } else {
                vec![1, 10, 100, 1000]
            }
        });
        if levels.contains(&0) {
            bail!("--concurrency levels must be at least 1");
        }
        let duration = args.duration.unwrap_or(if quick { 0.5 } else { 3.0 });
        let stall = args.stall.unwrap_or(if quick { 0.3 } else { 1.0 });
        if !(duration > 0.0 && duration <= 3600.0 && stall > 0.0 && stall <= 60.0) {
            bail!("--duration must be in (0, 3600] seconds and --stall in (0, 60]");
        }
        Ok(Plan {
            targets,
            workloads,
            levels,
            duration: Duration::from_secs_f64(duration),
            size: args.size as usize,
            stall: Duration::from_secs_f64(stall),
            settle: Duration::from_secs(if quick { 5 } else { 10 }),
            c10k_connections: args.c10k_connections,
            c10k_targets: args.c10k_targets,
            soak_connections: args.soak_connections as usize,
            soak_batch: args.soak_batch.min(args.soak_connections) as usize,
            soak_rss_tolerance: args.soak_rss_tolerance,
            backlog: args.backlog,
            repeat: args.repeat,
            out: args.out.unwrap_or_else(|| {
                targets::workspace_root()
                    .join("target")
                    .join("bench-results")
            }),
            bin_dir: args.bin_dir,
        })
    }

    fn runs_c10k(&self, target: &Target) -> bool {
        self.workloads.contains(&Workload::C10k)
            && self.c10k_targets.iter().any(|t| t == target.name)
    }

    /// Progress steps for one target: one per point, and one per batch of the soak.
    fn steps(&self, target: &Target) -> u64 {
        let per_level = self
            .workloads
            .iter()
            .filter(|w| !matches!(w, Workload::C10k | Workload::Soak))
            .count();
        (per_level * self.levels.len()) as u64
            + u64::from(self.runs_c10k(target))
            + self.soak_batches(self.soak_batch)
    }

    /// Batches of the soak with `batch` connections at a time (0 if the soak is not run).
    fn soak_batches(&self, batch: usize) -> u64 {
        if self.workloads.contains(&Workload::Soak) {
            self.soak_connections.div_ceil(batch.max(1)) as u64
        } else {
            0
        }
    }

    /// The most connections this plan holds at once against `target`: the highest level of
    /// the sweep (if a workload uses the levels), C10K's, and (with `soak`) a soak batch.
    fn needed(&self, target: &Target, with_soak: bool) -> usize {
        let mut needed = 1;
        if self
            .workloads
            .iter()
            .any(|w| matches!(w, Workload::Echo | Workload::Connect | Workload::Idle))
        {
            needed = self.levels.iter().max().copied().unwrap_or(1);
        }
        if self.runs_c10k(target) {
            needed = needed.max(self.c10k_connections);
        }
        if with_soak && self.workloads.contains(&Workload::Soak) {
            needed = needed.max(self.soak_batch);
        }
        needed
    }
}

fn main() {
    let cli = Cli::parse();
    let result = match cli.command {
        Some(Sub::ServeTokio(args)) => baseline::serve(&args),
        None => run(cli.run),
    };
    if let Err(e) = result {
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
}

fn run(args: RunArgs) -> Result<()> {
    if let Some(json) = &args.replot {
        let text = std::fs::read_to_string(json)
            .with_context(|| format!("cannot read {}", json.display()))?;
        let results: Results = serde_json::from_str(&text)
            .with_context(|| format!("{} is not a bench results.json", json.display()))?;
        let out = args.out.clone().unwrap_or_else(|| {
            targets::workspace_root()
                .join("target")
                .join("bench-results")
        });
        print!("{}", results.markdown());
        let written = results.write(&out)?;
        eprintln!("bench: wrote {}", written.join(", "));
        return Ok(());
    }
    let command = std::env::args().collect::<Vec<_>>().join(" ");
    let plan = Plan::from(args)?;
    let meta = report::Meta {
        command: command.replace(&std::env::args().next().unwrap_or_default(), "bench"),
        date: shell(&["date", "-u", "+%Y-%m-%d %H:%M UTC"]),
        cpus: std::thread::available_parallelism().map_or(1, |n| n.get()),
        kernel: shell(&["uname", "-sr"]),
        machine: machine(),
        commit: shell(&[
            "git",
            "-C",
            &targets::workspace_root().display().to_string(),
            "rev-parse",
            "--short",
            "HEAD",
        ]),
        size: plan.size,
        duration_s: plan.duration.as_secs_f64(),
        notes: Vec::new(),
    };
    let mut results = Results {
        meta,
        ..Results::default()
    };
    let needed = plan
        .targets
        .iter()
        .map(|t| plan.needed(t, true))
        .max()
        .unwrap_or(1);
    let load_before = loadavg();
    let note = raise_fd_limit(needed);
    eprintln!("{note}");
    results.meta.notes.push(note);

    // Find (build) the binaries first, so that a missing one is reported before any measurement.
    let mut packages: Vec<(&'static str, &'static str)> = Vec::new();
    for t in &plan.targets {
        if let Some(p) = t.package {
            if !packages.contains(&(p, t.binary)) {
                packages.push((p, t.binary));
            }
        }
    }
    let binaries = Binaries::find(&packages, plan.bin_dir.as_deref(), |what| {
        eprintln!("bench: {what}")
    });
    let myself = std::env::current_exe().context("cannot find the bench's own executable")?;
    let mut runnable = Vec::new();
    for t in &plan.targets {
        let path = if t.package.is_none() {
            Ok(myself.clone())
        } else {
            binaries.get(t.binary)
        };
        match path {
            Ok(path) => runnable.push((t.clone(), path)),
            Err(reason) => {
                eprintln!("bench: skipping {}: {reason}", t.name);
                results.skipped.push(Skipped {
                    target: t.name.into(),
                    reason,
                });
            }
        }
    }
    for (t, _) in &runnable {
        results.labels.push((t.name.to_string(), t.label.clone()));
    }

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot build the load generator's runtime")?;
    // Ctrl-C (or SIGTERM) stops the servers too: they are in their own process groups.
    runtime.spawn(async {
        use tokio::signal::unix::{signal, SignalKind};
        let (Ok(mut int), Ok(mut term)) = (
            signal(SignalKind::interrupt()),
            signal(SignalKind::terminate()),
        ) else {
            return;
        };
        tokio::select! {
            _ = int.recv() => {}
            _ = term.recv() => {}
        }
        server::kill_all();
        eprintln!("\nbench: interrupted; the servers were killed, no results written");
        std::process::exit(130);
    });
    let total: u64 = runnable.iter().map(|(t, _)| plan.steps(t)).sum();
    let bar = ProgressBar::new(total);
    bar.set_style(
        ProgressStyle::with_template("{elapsed_precise} [{bar:30}] {pos}/{len} {msg}")
            .expect("valid template")
            .progress_chars("=> "),
    );
    let started = Instant::now();
    // Every server runs for the whole sweep (an idle server costs nothing), taking turns.
    let mut running = Vec::new();
    for (target, path) in &runnable {
        bar.set_message(format!("{}: starting", target.name));
        match start(&plan, target, path) {
            Ok(r) => running.push(r),
            Err(e) => {
                bar.println(format!("bench: skipping {}: {e:#}", target.name));
                bar.inc(plan.steps(target));
                results.skipped.push(Skipped {
                    target: target.name.into(),
                    reason: format!("{e:#}"),
                });
            }
        }
    }
    sweep(&plan, &mut running, &runtime, &bar, &mut results);
    for r in running {
        finish(&plan, r, &bar, &mut results);
    }
    bar.finish_and_clear();
    // Tables by target (in the order of the target list), then concurrency.
    let order = |name: &str| {
        plan.targets
            .iter()
            .position(|t| t.name == name)
            .unwrap_or(usize::MAX)
    };
    results
        .timed
        .sort_by_key(|r| (r.workload != "echo", order(&r.target), r.concurrency));
    results
        .idle
        .sort_by_key(|r| (order(&r.target), r.concurrency));
    eprintln!(
        "bench: measured in {:.1} s",
        started.elapsed().as_secs_f64()
    );

    results.meta.notes.push(format!(
        "load average (1, 5, 15 min) before the run: {load_before}; after: {} (other work on the machine skews the figures)",
        loadavg()
    ));
    results.compute_ratios();
    print!("{}", results.markdown());
    let written = results.write(&plan.out)?;
    eprintln!("bench: wrote {}", written.join(", "));
    Ok(())
}

/// A server being measured.
struct Running {
    target: Target,
    server: ServerProcess,
    /// Its process tree right after startup: the leak check's reference.
    baseline: Footprint,
    /// Points where the tree did not come back to the baseline in time.
    notes: Vec<String>,
    /// Why it stopped being measured (it crashed), if it did.
    failed: Option<String>,
    /// Something the reader of the results must know about how it was run.
    remark: Option<String>,
    /// The client cap it was started with (`--max-children` and the like), if it has one.
    cap: Option<usize>,
}

impl Running {
    /// Waits for the tree to come back to the baseline; notes it if it does not.
    fn back_to_baseline(&mut self, plan: &Plan, when: &str) {
        let pid = self.server.pid;
        if !wait_for_baseline(pid, &self.baseline, plan.settle) {
            let now = procfs::footprint(pid, false);
            self.notes
                .push(format!("after {when}: {}", diff(&self.baseline, &now)));
        }
    }

    /// After a workload: is it still alive? A crash takes it out of the rest of the sweep.
    fn check(&mut self, plan: &Plan, when: &str, bar: &ProgressBar) {
        match self.server.check_alive() {
            Ok(()) => self.back_to_baseline(plan, when),
            Err(e) => {
                bar.println(format!(
                    "bench: {} crashed during {when}: {e:#}",
                    self.target.name
                ));
                self.failed = Some(format!("crashed during {when}: {e:#}"));
            }
        }
    }
}

/// Starts one target with the shared flags (and its client cap set above the sweep's needs),
/// and waits for its tree to settle.
fn start(plan: &Plan, target: &Target, path: &std::path::Path) -> Result<Running> {
    // A safety cap on clients (e.g. fork-server --max-children) must not be what we measure.
    let needed = plan.needed(target, true);
    let help = if target.package.is_some() {
        targets::help_text(path)
    } else {
        String::new()
    };
    let mut cap = needed + 64;
    loop {
        let mut args = target.args.clone();
        args.extend(["--port", "0", "--quiet", "--backlog"].map(String::from));
        args.push(plan.backlog.to_string());
        let cap_args = targets::cap_args(&help, cap);
        let has_cap = !cap_args.is_empty();
        args.extend(cap_args);
        match ServerProcess::start(path, &args) {
            Ok(server) => {
                let baseline = settle(server.pid, plan.settle);
                let mut running = Running {
                    target: target.clone(),
                    server,
                    baseline,
                    notes: Vec::new(),
                    failed: None,
                    remark: None,
                    cap: has_cap.then_some(cap),
                };
                // (A soak batch above the cap is lowered to it, and the soak's table says so.)
                let needed = plan.needed(target, false);
                if cap < needed {
                    running.remark = Some(format!(
                        "{} was started with its client cap at {cap}, the highest it accepts: fewer than the {needed} connections of the sweep",
                        target.name
                    ));
                }
                return Ok(running);
            }
            // The server refuses so high a cap (clap: "invalid value '1064' for '--max-children
            // <N>': 1064 is not in 1..=128"): use the highest it accepts, and say so.
            Err(e) => match targets::highest_accepted(&format!("{e:#}")) {
                Some(highest) if highest < cap => cap = highest,
                _ => return Err(e),
            },
        }
    }
}

/// Runs every workload at every level against every running server. The targets take turns at
/// each point (and each repeat), so that a burst of load from elsewhere on the machine hits
/// them alike instead of spoiling one target's whole sweep.
fn sweep(
    plan: &Plan,
    running: &mut [Running],
    runtime: &tokio::runtime::Runtime,
    bar: &ProgressBar,
    results: &mut Results,
) {
    // Idle first, while the servers are fresh: memory per connection is then not blurred by what
    // earlier workloads left allocated.
    if plan.workloads.contains(&Workload::Idle) {
        for &c in &plan.levels {
            for r in running.iter_mut().filter(|r| r.failed.is_none()) {
                let name = r.target.name;
                bar.set_message(format!("{name}: idle C={c}"));
                let pid = r.server.pid;
                let before = procfs::footprint(pid, true);
                let held = runtime.block_on(load::hold(r.server.addr, pid, c, None, plan.stall));
                let greeted = held.greeted;
                let per =
                    |h: u64, b: u64| (greeted > 0).then(|| (h as f64 - b as f64) / greeted as f64);
                results.idle.push(IdleRow {
                    target: name.into(),
                    concurrency: c,
                    greeted,
                    baseline: before,
                    held: held.footprint,
                    rss_kib_per_conn: per(held.footprint.rss_kib, before.rss_kib),
                    pss_kib_per_conn: per(held.footprint.pss_kib, before.pss_kib),
                    errors: held.errors,
                    first_error: held.first_error.clone(),
                });
                bar.inc(1);
                r.check(plan, &format!("idle C={c}"), bar);
            }
        }
    }
    for workload in [Workload::Echo, Workload::Connect] {
        if !plan.workloads.contains(&workload) {
            continue;
        }
        let word = if workload == Workload::Echo {
            "echo"
        } else {
            "connect"
        };
        for &c in &plan.levels {
            // On a shared machine one run can be hit by someone else's build: with --repeat N,
            // each target runs N times (in turns) and keeps its run of median throughput.
            let mut runs: Vec<Vec<TimedRow>> = vec![Vec::new(); running.len()];
            for _round in 0..plan.repeat {
                for (i, r) in running.iter_mut().enumerate() {
                    if r.failed.is_some() {
                        continue;
                    }
                    let (name, addr, pid) = (r.target.name, r.server.addr, r.server.pid);
                    bar.set_message(format!("{name}: {word} C={c}"));
                    let timed = runtime.block_on(async {
                        match workload {
                            Workload::Echo => {
                                load::echo(addr, pid, c, plan.size, plan.duration, plan.stall).await
                            }
                            _ => load::connect(addr, pid, c, plan.size, plan.duration).await,
                        }
                    });
                    runs[i].push(timed_row(name, word, c, &timed));
                    r.check(plan, &format!("{word} C={c}"), bar);
                }
            }
            for mut target_runs in runs {
                if target_runs.is_empty() {
                    continue;
                }
                target_runs.sort_by(|a, b| a.per_second.total_cmp(&b.per_second));
                let n = target_runs.len() as u32;
                let mut row = target_runs.swap_remove(target_runs.len() / 2);
                row.runs = n;
                results.timed.push(row);
                bar.inc(1);
            }
        }
    }
    if plan.workloads.contains(&Workload::C10k) {
        for r in running
            .iter_mut()
            .filter(|r| r.failed.is_none() && plan.runs_c10k(&r.target))
        {
            let (name, n, pid) = (r.target.name, plan.c10k_connections, r.server.pid);
            bar.set_message(format!("{name}: C10K ({n} connections)"));
            let before = procfs::footprint(pid, true);
            let held = runtime.block_on(load::hold(
                r.server.addr,
                pid,
                n,
                Some(plan.size),
                plan.stall.max(Duration::from_secs(2)),
            ));
            results.c10k.push(C10kRow {
                target: name.into(),
                connections: n,
                greeted: held.greeted,
                echoed: held.echoed,
                seconds: held.elapsed.as_secs_f64(),
                held: held.footprint,
                rss_kib_per_conn: (held.echoed > 0).then(|| {
                    (held.footprint.rss_kib as f64 - before.rss_kib as f64) / held.echoed as f64
                }),
                errors: held.errors,
                first_error: held.first_error.clone(),
                passed: held.echoed == n && held.errors == 0,
            });
            bar.inc(1);
            r.check(plan, "C10K", bar);
        }
    }
    // The soak last: it is about what is left after many connections, whatever ran before.
    if plan.workloads.contains(&Workload::Soak) {
        for r in running.iter_mut().filter(|r| r.failed.is_none()) {
            results.soak.push(soak(plan, r, runtime, bar));
            r.check(plan, "the soak", bar);
        }
    }
}

/// How long a reading during the soak waits for the counts to come back to the baseline.
const SOAK_SAMPLE_WAIT: Duration = Duration::from_secs(2);
/// How long each connection of a soak batch may take, HELLO to close (a batch waiting in the
/// accept queue of the iterative server included).
const SOAK_CONNECTION_LIMIT: Duration = Duration::from_secs(60);

/// The soak of one target: a warm-up batch, then `--soak-connections` connections in batches of
/// `--soak-batch` (each connection HELLO, a unique ECHO, QUIT, `OK bye`, close), the tree read
/// after each tenth, and at the end, once settled, compared with what it was before.
fn soak(
    plan: &Plan,
    r: &mut Running,
    runtime: &tokio::runtime::Runtime,
    bar: &ProgressBar,
) -> SoakRow {
    let (name, addr, pid) = (r.target.name, r.server.addr, r.server.pid);
    let total = plan.soak_connections;
    // A server with a client cap below the batch would keep the rest waiting in its accept
    // queue: the batch would not be "N at a time" for it. Use its cap, and say so.
    let (batch, batch_note) = match r.cap {
        Some(cap) if cap < plan.soak_batch => {
            bar.inc_length(plan.soak_batches(cap) - plan.soak_batches(plan.soak_batch));
            (
                cap,
                Some(format!(
                    "soak batch lowered from {} to {cap}: the server's client cap (the highest it accepts), so that every connection of a batch is served at once",
                    plan.soak_batch
                )),
            )
        }
        _ => (plan.soak_batch, None),
    };
    // One uncounted batch first, so that what a server grows once and keeps (thread stacks in
    // the allocator's cache, malloc arenas, a pre-forked child's first pages) is in "before".
    bar.set_message(format!("{name}: soak warm-up ({batch} connections)"));
    let warm = runtime.block_on(load::soak_batch(addr, 0, batch, SOAK_CONNECTION_LIMIT));
    wait_for_baseline(pid, &r.baseline, plan.settle);
    let before = procfs::footprint(pid, true);

    let started = Instant::now();
    let mut in_batches = Duration::ZERO;
    let mut samples = Vec::new();
    let (mut completed, mut errors, mut first_error) = (0, 0, warm.first_error);
    errors += warm.errors;
    let mut made = 0;
    let mut number = 0;
    while made < total {
        number += 1;
        let n = batch.min(total - made);
        bar.set_message(format!("{name}: soak {made}/{total} ({batch} at a time)"));
        let t0 = Instant::now();
        let done = runtime.block_on(load::soak_batch(addr, number, n, SOAK_CONNECTION_LIMIT));
        in_batches += t0.elapsed();
        let tenth_before = (made * 10 / total) as u32;
        made += n;
        completed += done.completed;
        errors += done.errors;
        if first_error.is_none() {
            first_error = done.first_error;
        }
        bar.inc(1);
        // A whole batch without one success: the server is stuck or gone; stop here.
        if done.completed == 0 {
            bar.inc(plan.soak_batches(batch).saturating_sub(number as u64));
            break;
        }
        let tenth = (made * 10 / total) as u32;
        if tenth > tenth_before {
            let at_baseline = wait_for_baseline(pid, &r.baseline, SOAK_SAMPLE_WAIT);
            samples.push(SoakSample {
                tenth,
                connections: made,
                seconds: started.elapsed().as_secs_f64(),
                footprint: procfs::footprint(pid, true),
                at_baseline,
            });
        }
    }
    bar.set_message(format!("{name}: soak done, settling"));
    let back_to_baseline = wait_for_baseline(pid, &r.baseline, plan.settle);
    let after = procfs::footprint(pid, true);
    let wall_seconds = started.elapsed().as_secs_f64();
    let mut verdict = report::soak_verdict(&r.baseline, &before, &after, plan.soak_rss_tolerance);
    if completed < total {
        verdict.push_str(&format!(
            "; only {completed} of {total} connections completed"
        ));
    }
    let seconds = in_batches.as_secs_f64().max(1e-9);
    SoakRow {
        target: name.into(),
        connections: total,
        batch,
        batch_note,
        completed,
        errors,
        first_error,
        seconds,
        per_second: completed as f64 / seconds,
        wall_seconds,
        baseline: r.baseline,
        before,
        after,
        back_to_baseline,
        passed: verdict == "no growth" && errors == 0,
        verdict,
        samples,
        rss_tolerance_kib: plan.soak_rss_tolerance,
    }
}

/// The leak check (everything back to what the server held right after startup), then SIGTERM
/// and its exit status.
fn finish(plan: &Plan, r: Running, bar: &ProgressBar, results: &mut Results) {
    let name = r.target.name.to_string();
    if let Some(remark) = r.remark {
        results.meta.notes.push(remark);
    }
    if let Some(reason) = r.failed {
        results.skipped.push(Skipped {
            target: name,
            reason,
        });
        return;
    }
    let pid = r.server.pid;
    let back_to_baseline = wait_for_baseline(pid, &r.baseline, plan.settle);
    let after = procfs::footprint(pid, false);
    let stderr_bytes = r.server.stderr_bytes();
    bar.set_message(format!("{name}: stopping (SIGTERM)"));
    let (stop, clean_exit) = r.server.stop(Duration::from_secs(10));
    if !back_to_baseline || !clean_exit {
        bar.println(format!(
            "bench: {name}: back to baseline: {back_to_baseline}; {stop}"
        ));
    }
    results.leaks.push(LeakRow {
        target: name,
        baseline: r.baseline,
        after,
        back_to_baseline,
        notes: r.notes,
        stop,
        clean_exit,
        stderr_bytes,
    });
}

fn timed_row(target: &str, workload: &str, c: usize, t: &load::Timed) -> TimedRow {
    let seconds = t.window.as_secs_f64().max(1e-9);
    let us = |q: f64| {
        if t.completed > 0 {
            t.latency.value_at_quantile(q) as f64 / 1000.0
        } else {
            0.0
        }
    };
    TimedRow {
        target: target.into(),
        workload: workload.into(),
        concurrency: c,
        greeted: t.greeted,
        completed: t.completed,
        seconds,
        per_second: t.completed as f64 / seconds,
        p50_us: us(0.50),
        p99_us: us(0.99),
        p999_us: us(0.999),
        server_cpu_pct: 100.0 * t.cpu.server / seconds,
        server_cpu_us_per_op: if t.completed > 0 {
            t.cpu.server * 1e6 / t.completed as f64
        } else {
            0.0
        },
        bench_cpu_pct: 100.0 * t.cpu.bench / seconds,
        errors: t.errors,
        first_error: t.first_error.clone(),
        vs_tokio_ct: None,
        vs_tokio_mt: None,
        runs: 1,
    }
}

/// Waits until the server's tree stops changing (pre-forked children and pool threads started)
/// and returns that footprint: the baseline of the leak check.
fn settle(pid: i32, limit: Duration) -> Footprint {
    let deadline = Instant::now() + limit.min(Duration::from_secs(3));
    let mut last = procfs::footprint(pid, false);
    loop {
        std::thread::sleep(Duration::from_millis(100));
        let now = procfs::footprint(pid, false);
        if now.counts() == last.counts() || Instant::now() >= deadline {
            return now;
        }
        last = now;
    }
}

/// Waits (at most `limit`) until processes, zombies, threads and descriptors are back to `base`.
fn wait_for_baseline(pid: i32, base: &Footprint, limit: Duration) -> bool {
    let deadline = Instant::now() + limit;
    loop {
        if procfs::footprint(pid, false).counts() == base.counts() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn diff(base: &Footprint, now: &Footprint) -> String {
    format!(
        "processes {}→{}, zombies {}→{}, threads {}→{}, fds {}→{}",
        base.processes,
        now.processes,
        base.zombies,
        now.zombies,
        base.threads,
        now.threads,
        base.fds,
        now.fds
    )
}

/// Raises the soft RLIMIT_NOFILE to the hard limit: C10K needs more than the usual 1,024
/// descriptors, in the bench and in the servers (which inherit the limit). Says what it did.
fn raise_fd_limit(needed: usize) -> String {
    use nix::sys::resource::{getrlimit, setrlimit, Resource};
    let Ok((soft, hard)) = getrlimit(Resource::RLIMIT_NOFILE) else {
        return "bench: cannot read RLIMIT_NOFILE".into();
    };
    let mut note = if soft < hard {
        match setrlimit(Resource::RLIMIT_NOFILE, hard, hard) {
            Ok(()) => format!("bench: raised the descriptor limit (RLIMIT_NOFILE) from {soft} to the hard limit {hard}"),
            Err(e) => format!("bench: could not raise the descriptor limit from {soft} to {hard}: {e}"),
        }
    } else {
        format!("bench: descriptor limit (RLIMIT_NOFILE) {soft}, already the hard limit")
    };
    let (soft, _) = getrlimit(Resource::RLIMIT_NOFILE).unwrap_or((soft, hard));
    if (soft as usize) < needed + 100 {
        note.push_str(&format!(
            "; WARNING: {needed} connections need more descriptors than that (raise the hard limit: ulimit -Hn)"
        ));
    }
    note
}

/// The first three fields of /proc/loadavg.
fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|l| l.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "?".into())
}

/// The trimmed stdout of a command, or "?".
/// The CPU model and the memory size, for the results' header ("" if /proc does not say).
fn machine() -> String {
    let field = |file: &str, key: &str| {
        std::fs::read_to_string(file).ok().and_then(|text| {
            text.lines()
                .find(|l| l.starts_with(key))
                .and_then(|l| l.split_once(':'))
                .map(|(_, v)| v.trim().to_string())
        })
    };
    let cpu = field("/proc/cpuinfo", "model name");
    let memory = field("/proc/meminfo", "MemTotal").and_then(|v| {
        let kib: f64 = v.trim_end_matches("kB").trim().parse().ok()?;
        Some(format!("{:.1} GiB of memory", kib / 1024.0 / 1024.0))
    });
    [cpu, memory]
        .into_iter()
        .flatten()
        .collect::<Vec<_>>()
        .join(", ")
}

fn shell(argv: &[&str]) -> String {
    std::process::Command::new(argv[0])
        .args(&argv[1..])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_else(|| "?".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quick_measures_a_server_of_every_lab_and_both_baselines() {
        let args = Cli::parse_from(["bench", "--quick"]).run;
        let plan = Plan::from(args).expect("--quick is a valid plan");
        let packages: Vec<Option<&str>> = plan.targets.iter().map(|t| t.package).collect();
        for lab in [
            "lab01-iterative",
            "lab02-fork",
            "lab03-thread",
            "lab04-multiplex",
            "lab05-ipc",
        ] {
            assert!(
                packages.contains(&Some(lab)),
                "--quick measures no server of {lab}"
            );
        }
        let names: Vec<&str> = plan.targets.iter().map(|t| t.name).collect();
        for name in ["select", "poll", "epoll", "tokio-ct", "tokio-mt"] {
            assert!(names.contains(&name), "--quick leaves out {name}");
        }
    }
}
