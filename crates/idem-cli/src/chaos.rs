//! `idem chaos`: the harness of real processes (`idem-chaos`): this binary's own `serve`
//! as replicas on a real store, real faults per seed, the simulation's history checker.
//! Exit codes as `idem sim`: 0 when every run kept every guarantee, 1 when one broke a
//! guarantee, 2 for bad options or a harness that cannot run (a store that does not start).

use std::io::{IsTerminal as _, Write as _};
use std::ops::Range;
use std::process::ExitCode;
use std::time::Duration;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use idem_chaos::{Config, Harness, StoreKind, Summary};
use indicatif::{ProgressBar, ProgressStyle};
use tokio::signal::unix::{SignalKind, signal};

/// The most seeds one sweep takes: about two days at 15 s a run.
const SEEDS_MAX: u64 = 10_000;
/// How often the progress bar redraws.
const PROGRESS_TICK: Duration = Duration::from_millis(200);

/// Options of `idem chaos`.
#[derive(clap::Args, Debug)]
pub(crate) struct Args {
    /// The store the replicas share: sqlite (one file), postgres (a private PostgreSQL the
    /// harness starts, atomic mode) or redis (a private Redis, payments in a private
    /// PostgreSQL, separate mode).
    #[arg(long, value_parser = parse_store)]
    store: StoreKind,
    /// Seeds to run, as FIRST..END (END excluded), e.g. 0..100.
    #[arg(long, default_value = "0..10", value_parser = parse_seeds)]
    seeds: Range<u64>,
    /// `idem serve` replicas per run (1 to 8).
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u64).range(1..=8))]
    replicas: u64,
    /// Faults per run (1 to 20), one after another, one per 3 s slot (a longer fault pushes
    /// the next ones later).
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u64).range(1..=20))]
    faults: u64,
    /// Print each run's history (every attempt, answer, fault, row and list).
    #[arg(long)]
    trace: bool,
    /// For testing the harness itself: every replica runs its store with this rule planted
    /// wrong (`idem serve --plant-bug`; PostgreSQL only, e.g. completion-unguarded). The
    /// sweep should then fail.
    #[arg(long, value_name = "NAME")]
    plant_bug: Option<idem_server::PlantedBug>,
}

fn parse_store(given: &str) -> Result<StoreKind, String> {
    given.parse()
}

fn parse_seeds(given: &str) -> Result<Range<u64>, String> {
    let (first, end) = given.split_once("..").ok_or_else(|| format!("{given:?} is not FIRST..END, e.g. 0..100"))?;
    let number = |text: &str| text.trim().parse::<u64>().map_err(|error| format!("{text:?} in {given:?}: {error}"));
    let seeds = number(first)?..number(end)?;
    if seeds.is_empty() {
        return Err(format!("{given:?} holds no seed: END must be greater than FIRST"));
    }
    if seeds.end - seeds.start > SEEDS_MAX {
        return Err(format!("{given:?} holds more than {SEEDS_MAX} seeds; split the sweep"));
    }
    Ok(seeds)
}

/// Runs the sweep.
pub(crate) fn run(args: &Args) -> Result<ExitCode, Box<dyn std::error::Error>> {
    if let Some(bug) = args.plant_bug
        && args.store != StoreKind::Postgres
    {
        return Err(format!("--plant-bug {bug} plants a rule of PostgreSQL's SQL; use it with --store postgres").into());
    }
    let binary = std::env::current_exe()?;
    let config = Config {
        binary,
        store: args.store,
        replicas: usize::try_from(args.replicas)?,
        faults: usize::try_from(args.faults)?,
        plant: None,
        server_bug: args.plant_bug.map(|bug| bug.to_string()),
    };
    let mut harness = Harness::start(config)?;
    eprintln!("idem chaos: made {}", harness.describe());
    let interrupted = watch_interrupts();
    let bar = progress_bar(args.seeds.end - args.seeds.start);
    let mut summary = Summary::default();
    for seed in args.seeds.clone() {
        if interrupted.load(Ordering::SeqCst) {
            break;
        }
        let report = harness.run(seed)?;
        bar.suspend(|| {
            if args.trace {
                eprintln!("{}", report.trace.join("\n"));
            }
            if args.trace || !report.passed() || !report.failed_starts.is_empty() {
                eprint!("{report}");
            }
        });
        summary.add(&report);
        bar.inc(1);
    }
    bar.finish_and_clear();
    let mut out = format!(
        "idem chaos: store {}, seeds {}..{}, {} replicas, {} faults per run\n",
        args.store, args.seeds.start, args.seeds.end, args.replicas, args.faults
    );
    out.push_str(&summary.table(args.store));
    if let Some(first) = summary.failed_seeds.first() {
        let seeds: Vec<String> = summary.failed_seeds.iter().map(u64::to_string).collect();
        out.push_str(&format!("failing seeds: {}\n", seeds.join(", ")));
        out.push_str(&format!(
            "replay the first: idem chaos --store {} --seeds {first}..{} --replicas {} --faults {} --trace\n",
            args.store,
            first + 1,
            args.replicas,
            args.faults
        ));
        out.push_str("(a seed replays its workload and faults, not the timing of real processes)\n");
    }
    write_stdout(&out)?;
    drop(harness);
    Ok(if !summary.failed_seeds.is_empty() {
        ExitCode::from(1)
    } else if interrupted.load(Ordering::SeqCst) {
        ExitCode::from(INTERRUPTED)
    } else {
        ExitCode::SUCCESS
    })
}

/// The exit code of a sweep stopped by SIGINT or SIGTERM (128 + SIGINT, as shells report it).
const INTERRUPTED: u8 = 130;

/// SIGINT and SIGTERM stop the sweep after the run in progress, so the harness's drop
/// removes what it made (namespaces, bridges, its tmpfs, its private stores); a second
/// one exits at once, leaving them (docs/chaos.md says how to remove them).
fn watch_interrupts() -> Arc<AtomicBool> {
    let interrupted = Arc::new(AtomicBool::new(false));
    let seen = Arc::clone(&interrupted);
    std::thread::spawn(move || {
        let Ok(runtime) = tokio::runtime::Builder::new_current_thread().enable_all().build() else { return };
        runtime.block_on(async move {
            let Ok(mut terminate) = signal(SignalKind::terminate()) else { return };
            let Ok(mut interrupt) = signal(SignalKind::interrupt()) else { return };
            loop {
                tokio::select! {
                    _ = terminate.recv() => {}
                    _ = interrupt.recv() => {}
                }
                if seen.swap(true, Ordering::SeqCst) {
                    eprintln!("idem chaos: interrupted again; exiting without cleaning up");
                    std::process::exit(i32::from(INTERRUPTED));
                }
                eprintln!(
                    "idem chaos: interrupted; the run in progress finishes, then the harness removes what it made (interrupt again to exit at once)"
                );
            }
        });
    });
    interrupted
}

/// Writes to stdout; a reader that closed the pipe early (`| head`) is not an error.
fn write_stdout(text: &str) -> std::io::Result<()> {
    match std::io::stdout().lock().write_all(text.as_bytes()) {
        Err(error) if error.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        other => other,
    }
}

/// A bar on a terminal; nothing in a log (as `idem sim`).
fn progress_bar(seeds: u64) -> ProgressBar {
    if !std::io::stderr().is_terminal() {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::new(seeds);
    let style = ProgressStyle::with_template("{bar:40} {pos}/{len} seeds, {elapsed} elapsed, eta {eta}")
        .unwrap_or_else(|_| ProgressStyle::default_bar());
    bar.set_style(style);
    bar.enable_steady_tick(PROGRESS_TICK);
    bar
}
