//! `idem sim`: run the deterministic simulation (`idem-sim`) over a range of seeds, or
//! replay one seed with its event log. Exit codes as `idem check`: 0 when every run kept
//! every guarantee and every coverage counter is above zero, 1 otherwise, 2 for bad options.

use std::fmt::Write as _;
use std::io::{IsTerminal as _, Write as _};
use std::ops::Range;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use idem_sim::{RunReport, Scenario, Sweep, Variant};
use indicatif::{ProgressBar, ProgressStyle};

/// The most seeds one sweep takes: about 14 hours of one core at the measured speed.
const SEEDS_MAX: u64 = 1_000_000;
/// At most this many failing seeds are listed, and replay commands printed, in the summary.
const FAILING_SEEDS_SHOWN: usize = 20;
/// How often the progress bar redraws.
const PROGRESS_TICK: Duration = Duration::from_millis(200);

/// Options of `idem sim`.
#[derive(clap::Args, Debug)]
pub(crate) struct Args {
    /// Seeds to run, as FIRST..END (END excluded), e.g. 0..1000.
    #[arg(long, default_value = "0..1000", value_parser = parse_seeds, conflicts_with = "seed")]
    seeds: Range<u64>,
    /// Run this one seed only (with --trace, print its event log).
    #[arg(long)]
    seed: Option<u64>,
    /// Print the event log of the seed given with --seed.
    #[arg(long, requires = "seed")]
    trace: bool,
    /// default (a durable store, atomic mode), volatile-store (a bounce loses the store's
    /// state), separate (rows written alone, the layer completes), short-retention,
    /// conflict-wait, client-defaults, handler-faults, oversized-responses (a small
    /// recording limit, some responses past it), oversized-responses-separate, redis-lua
    /// (the store host runs idem-redis's store.lua on a Redis-like keyspace, separate
    /// mode), redis-lua-atomic, sqlite-batch (the store host decides group commits with
    /// idem-sqlite's batch decision); message consumers: consumer (idem-consumer in atomic
    /// mode, a JetStream-like broker), consumer-channel-close (a RabbitMQ-like broker),
    /// consumer-separate (separate mode, its G1 window expected); key lifecycle: tombstones
    /// (records shrink to tombstones, late retries must get 410).
    #[arg(long, default_value_t = Scenario::Default)]
    scenario: Scenario,
    /// correct, or a planted bug: no-claim, no-fence-check, unscoped-keys, stale-answers-own,
    /// fence-reset (with --scenario volatile-store), double-write, row-outside-transaction,
    /// token-case-folded, rejects-query, replay-drops-header (with --scenario separate),
    /// keeps-oversized (with --scenario oversized-responses), lua-drops-fence-check (with
    /// --scenario redis-lua or redis-lua-atomic), ack-before-completion (with --scenario
    /// consumer or consumer-channel-close), dedup-outside-transaction (with --scenario consumer),
    /// purge-drops-tombstones (with --scenario tombstones).
    #[arg(long, default_value_t = Variant::Correct)]
    variant: Variant,
    /// Threads running seeds side by side (default: one per core).
    #[arg(long)]
    threads: Option<usize>,
}

fn parse_seeds(given: &str) -> Result<Range<u64>, String> {
    let (first, end) = given.split_once("..").ok_or_else(|| format!("{given:?} is not FIRST..END, e.g. 0..1000"))?;
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

/// Runs the sweep or the one seed.
pub(crate) fn run(args: &Args) -> Result<ExitCode, Box<dyn std::error::Error>> {
    if let Some(seed) = args.seed {
        return replay(seed, args);
    }
    let threads = args.threads.unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get())).max(1);
    let bar = progress_bar(args.seeds.end - args.seeds.start);
    // Wall-clock time measures the simulator's speed only; nothing simulated reads it.
    let started = Instant::now();
    let sweep = idem_sim::sweep(args.seeds.clone(), args.scenario, args.variant, threads, &|report: &RunReport| {
        if !report.passed() {
            bar.suspend(|| eprint!("{report}"));
        }
        bar.inc(1);
    });
    bar.finish_and_clear();
    write_stdout(&summary(args, threads, &sweep, started.elapsed()))?;
    let untested = sweep.coverage.zeros(args.scenario);
    Ok(if sweep.failures.is_empty() && untested.is_empty() { ExitCode::SUCCESS } else { ExitCode::from(1) })
}

/// Runs one seed; with `--trace`, prints its event log first.
fn replay(seed: u64, args: &Args) -> Result<ExitCode, Box<dyn std::error::Error>> {
    let report = idem_sim::run(seed, args.scenario, args.variant);
    let mut out = String::new();
    if args.trace {
        write!(out, "{}", report.trace)?;
    }
    write!(out, "{report}")?;
    write_stdout(&out)?;
    Ok(if report.passed() { ExitCode::SUCCESS } else { ExitCode::from(1) })
}

/// Writes to stdout; a reader that closed the pipe early (`| head`) is not an error.
fn write_stdout(text: &str) -> std::io::Result<()> {
    match std::io::stdout().lock().write_all(text.as_bytes()) {
        Err(error) if error.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        other => other,
    }
}

/// A bar on a terminal; nothing in a log (indicatif hides itself when stderr is not one).
fn progress_bar(seeds: u64) -> ProgressBar {
    if !std::io::stderr().is_terminal() {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::new(seeds);
    let style = ProgressStyle::with_template("{bar:40} {pos}/{len} seeds, {per_sec}, eta {eta}")
        .unwrap_or_else(|_| ProgressStyle::default_bar());
    bar.set_style(style);
    bar.enable_steady_tick(PROGRESS_TICK);
    bar
}

/// The summary table: runs, failures, simulated and wall time, speed, coverage counters.
fn summary(args: &Args, threads: usize, sweep: &Sweep, wall: Duration) -> String {
    let wall_s = wall.as_secs_f64().max(f64::EPSILON);
    let simulated_s = sweep.simulated.as_secs_f64();
    let mut out = String::new();
    let mut line = |text: String| {
        out.push_str(&text);
        out.push('\n');
    };
    line(format!(
        "scenario {} / variant {}, seeds {}..{}",
        args.scenario, args.variant, args.seeds.start, args.seeds.end
    ));
    line(format!("runs                          {}", sweep.runs));
    line(format!("failures                      {}", sweep.failures.len()));
    if sweep.expected > 0 {
        line(format!("expected counterexamples      {} (this mode does not exclude them)", sweep.expected));
    }
    line(format!("simulated seconds             {simulated_s:.0}"));
    line(format!("wall seconds                  {wall_s:.1} on {threads} thread(s)"));
    line(format!("seeds per wall second         {:.1}", sweep.runs as f64 / wall_s));
    line(format!("simulated s per wall second   {:.0}", simulated_s / wall_s));
    line(String::new());
    line("coverage (summed over the sweep)".to_owned());
    let relevant = idem_sim::Coverage::relevant(args.scenario);
    for (name, count) in sweep.coverage.iter().filter(|(name, _)| relevant.contains(name)) {
        let flag = if count == 0 { "   NOT REACHED" } else { "" };
        line(format!("  {name:34} {count:>8}{flag}"));
    }
    if !sweep.failures.is_empty() {
        let seeds = sweep.failing_seeds();
        let shown: Vec<String> = seeds.iter().take(FAILING_SEEDS_SHOWN).map(u64::to_string).collect();
        let more = seeds.len().saturating_sub(FAILING_SEEDS_SHOWN);
        let more = if more > 0 { format!(" and {more} more") } else { String::new() };
        line(String::new());
        line(format!("failing seeds: {}{more}", shown.join(", ")));
        line(format!("replay the first: {}", sweep.failures[0].replay_command()));
    }
    let untested = sweep.coverage.zeros(args.scenario);
    if !untested.is_empty() {
        line(String::new());
        line(format!("the faults did not reach: {} (a sweep needs every counter above zero)", untested.join(", ")));
    }
    out
}

#[cfg(test)]
mod help_tests {
    use clap::CommandFactory as _;

    /// `idem sim`'s options alone, as clap renders their help.
    #[derive(clap::Parser)]
    struct Sim {
        #[command(flatten)]
        args: super::Args,
    }

    /// Whether `text` has `name` as a whole word (not inside `consumer-separate`, say).
    fn names(text: &str, name: &str) -> bool {
        let part_of_name = |c: char| c.is_ascii_alphanumeric() || c == '-';
        text.match_indices(name).any(|(at, _)| {
            let before = text[..at].chars().next_back();
            let after = text[at + name.len()..].chars().next();
            !before.is_some_and(part_of_name) && !after.is_some_and(part_of_name)
        })
    }

    #[test]
    fn the_help_names_every_scenario_and_variant() {
        // Goal: the hand-written lists in --help keep up with the simulation's own names.
        let help = Sim::command().render_long_help().to_string();
        let missing: Vec<&str> = idem_sim::Scenario::NAMES
            .iter()
            .chain(idem_sim::Variant::NAMES.iter())
            .copied()
            .filter(|name| !names(&help, name))
            .collect();
        assert!(missing.is_empty(), "idem sim --help does not name {missing:?}");
    }
}
