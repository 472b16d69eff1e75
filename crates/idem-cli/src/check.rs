//! `idem check`: model-check the protocol and print a verdict per property.

use std::io::{IsTerminal as _, Write as _};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use idem_model::{Config, Mode, NetworkKind, Outcome, RunningChecker, Search, Strategy, Verdict};

use crate::model_options::ModelOptions;

/// How often the progress line on stderr is refreshed.
const PROGRESS_EVERY: Duration = Duration::from_millis(500);
/// How often to look whether the checker is done (small runs end in milliseconds).
const POLL_EVERY: Duration = Duration::from_millis(10);

/// Options of `idem check`.
#[derive(clap::Args, Debug)]
pub(crate) struct Args {
    #[command(flatten)]
    model: ModelOptions,
    /// Store crashes: the store loses the writes not yet on disk (claims, renewals and
    /// releases commit without waiting for it; a completion waits) and restarts at once.
    #[arg(long, default_value_t = Config::default().store_crashes)]
    store_crashes: u8,
    /// Search strategy: dfs (little memory, fastest here; allows --symmetry) or bfs (level by
    /// level). Either way each counterexample printed is a shortest one.
    #[arg(long, default_value = "dfs", value_parser = parse_strategy)]
    strategy: Strategy,
    /// Symmetry reduction over server replicas: on by default under DFS; with bfs it is refused.
    #[arg(long, conflicts_with = "no_symmetry")]
    symmetry: bool,
    /// Explore states that differ only by which server replica is which separately.
    #[arg(long)]
    no_symmetry: bool,
    /// Checker threads (default: one per core).
    #[arg(long)]
    threads: Option<usize>,
    /// Explore paths of at most this many steps (the check is then incomplete).
    #[arg(long)]
    depth: Option<usize>,
    /// Also print the example story of each reachability property (a shortest one: each
    /// costs a bounded breadth-first search, which takes long on large configurations).
    #[arg(long)]
    examples: bool,
}

impl Args {
    /// The configuration to check: the model options, and the store crashes.
    fn config(&self) -> Config {
        Config { store_crashes: self.store_crashes, ..self.model.config() }
    }
}

fn parse_strategy(given: &str) -> Result<Strategy, String> {
    match given {
        "bfs" => Ok(Strategy::Bfs),
        "dfs" => Ok(Strategy::Dfs),
        _ => Err(format!("unknown strategy {given:?}; expected bfs or dfs")),
    }
}

/// Runs the check; exit code 1 when a property is violated.
pub(crate) fn run(args: &Args) -> Result<ExitCode, Box<dyn std::error::Error>> {
    let config = args.config();
    let model = config.clone().into_model()?;
    let threads = args.threads.unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
    let symmetry = args.symmetry || (args.strategy == Strategy::Dfs && !args.no_symmetry);
    let search = Search { strategy: args.strategy, symmetry, threads, depth_max: args.depth };
    let started = Instant::now();
    let mut checker = idem_model::spawn(model, search)?;
    // On a terminal the progress line rewrites itself; in a log it appears every few seconds.
    let terminal = std::io::stderr().is_terminal();
    let every = if terminal { PROGRESS_EVERY } else { PROGRESS_EVERY * 10 };
    let mut shown = Instant::now();
    while !checker.is_done() {
        std::thread::sleep(POLL_EVERY);
        if shown.elapsed() >= every {
            let line = progress(&checker, started.elapsed());
            if terminal {
                eprint!("\r{line}   ")
            } else {
                eprintln!("{line}")
            }
            shown = Instant::now();
        }
    }
    idem_model::join(&mut checker);
    let elapsed = started.elapsed();
    if terminal {
        eprint!("\r{}\r", " ".repeat(100));
    }
    let verdicts = idem_model::verdicts(&checker, args.examples);
    let mut out = std::io::stdout().lock();
    writeln!(out, "{}", describe(&config, search))?;
    writeln!(out, "{}", summary(&checker, elapsed))?;
    writeln!(out)?;
    write_table(&mut out, &verdicts, &config, args.examples)?;
    if verdicts.iter().any(Verdict::is_violation) {
        writeln!(out, "\nA path ends at its first violation, so \"holds\" above covers the paths up to a violation.")?;
    }
    for verdict in &verdicts {
        match &verdict.outcome {
            Outcome::Violated(story) => {
                writeln!(out, "\nVIOLATED: {} ({})", verdict.property, verdict.guarantee)?;
                for line in story {
                    writeln!(out, "  {line}")?;
                }
            }
            Outcome::Reached(story) if args.examples => {
                writeln!(out, "\nExample: {}", verdict.property)?;
                for line in story {
                    writeln!(out, "  {line}")?;
                }
            }
            _ => {}
        }
    }
    let violated = verdicts.iter().any(Verdict::is_violation);
    Ok(if violated { ExitCode::FAILURE } else { ExitCode::SUCCESS })
}

fn progress(checker: &RunningChecker, elapsed: Duration) -> String {
    let total = checker.state_count();
    format!(
        "checking: {total} states, {} unique, {:.0} states/s, depth {}",
        checker.unique_state_count(),
        per_second(total, elapsed),
        checker.max_depth()
    )
}

fn per_second(count: usize, elapsed: Duration) -> f64 {
    // State counts stay far below 2^52, where f64 stops being exact.
    #[allow(clippy::cast_precision_loss)]
    let count = count as f64;
    count / elapsed.as_secs_f64().max(1e-3)
}

fn describe(config: &Config, search: Search) -> String {
    let strategy = match search.strategy {
        Strategy::Bfs => "BFS",
        Strategy::Dfs => "DFS",
    };
    let symmetry = if search.symmetry { " with symmetry reduction" } else { "" };
    let depth = search.depth_max.map_or(String::new(), |depth| format!(", depth at most {depth} (incomplete)"));
    let client = config.client;
    format!(
        "model: {} clients, {} servers, {} operation(s) each{}, {} network{}, {} crash(es), {} stall(s), \
         {} slow handler(s), {} failure(s), {} delay(s), {} outage(s), {} store crash(es), {} purge(s), clock skew {}, renewals {}, handlers take up to {} (slow ones {}), \
         {} mode, variant {}\n\
         client: {} attempts, deadline {}, attempt timeout {}; G6 judged for operations that met at most {} fault(s)\n\
         search: {strategy}{symmetry}, {} thread(s){depth}",
        config.clients,
        config.servers,
        config.ops_per_client,
        if config.key_reuse { " + a reused key" } else { "" },
        config.network,
        match config.network {
            NetworkKind::Ordered => String::new(),
            NetworkKind::Duplicating => format!(" ({} duplicate(s))", config.network_faults),
            NetworkKind::Lossy => format!(" ({} loss(es))", config.network_faults),
        },
        config.crashes,
        config.lapses,
        config.slow,
        config.failures,
        config.delays,
        config.outages,
        config.store_crashes,
        config.purges,
        humantime::format_duration(config.skew),
        if config.renewals { "on" } else { "off" },
        humantime::format_duration(config.handler_time),
        humantime::format_duration(config.slow_handler_time),
        config.mode,
        config.variant,
        client.attempts_max,
        humantime::format_duration(client.deadline),
        humantime::format_duration(client.attempt_timeout),
        config.progress_faults,
        search.threads,
    )
}

fn summary(checker: &RunningChecker, elapsed: Duration) -> String {
    let total = checker.state_count();
    let memory = peak_memory_mib().map_or(String::new(), |mib| format!(", peak memory {mib} MiB"));
    format!(
        "states: {total} total, {} unique, depth {}, {:.1} s, {:.0} states/s{memory}",
        checker.unique_state_count(),
        checker.max_depth(),
        elapsed.as_secs_f64(),
        per_second(total, elapsed)
    )
}

/// The process's peak resident memory, where the OS reports it (Linux).
fn peak_memory_mib() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|line| line.starts_with("VmHWM:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib / 1024)
}

fn write_table(
    out: &mut impl std::io::Write,
    verdicts: &[Verdict],
    config: &Config,
    examples: bool,
) -> std::io::Result<()> {
    let width = verdicts.iter().map(|v| v.property.len()).max().unwrap_or(0);
    writeln!(out, "{:<10} {:<width$}  verdict", "guarantee", "property")?;
    for verdict in verdicts {
        let outcome = match &verdict.outcome {
            Outcome::Holds => "holds".to_owned(),
            Outcome::Violated(story) => format!("VIOLATED ({} steps, below)", story.len()),
            Outcome::Reached(story) if examples => format!("reached ({} steps, below)", story.len()),
            Outcome::Reached(_) => "reached".to_owned(),
            Outcome::NotReached => match not_reached_because(verdict.property, config) {
                Some(why) => format!("not reached ({why})"),
                None => "not reached".to_owned(),
            },
        };
        writeln!(out, "{:<10} {:<width$}  {outcome}", verdict.guarantee, verdict.property)?;
    }
    Ok(())
}

/// Why a reachability property cannot be reached in `config`, when the configuration says so.
fn not_reached_because(property: &str, config: &Config) -> Option<&'static str> {
    use idem_model::properties::{
        MISMATCH_ANSWERED, OUTAGE_ANSWERED, RENEWAL_HAPPENS, STORE_CRASH_LOSES_WRITES, UNRECORDED_ANSWERED,
    };
    if property == MISMATCH_ANSWERED && !config.key_reuse {
        Some("no request reuses a key; try --key-reuse")
    } else if property == OUTAGE_ANSWERED && config.outages == 0 {
        Some("no store outage; try --outages 1")
    } else if property == UNRECORDED_ANSWERED && (config.outages == 0 || config.mode != Mode::Separate) {
        Some("only separate mode answers unrecorded, during an outage")
    } else if property == RENEWAL_HAPPENS && !config.renewals {
        Some("renewals are off")
    } else if property == STORE_CRASH_LOSES_WRITES && config.store_crashes == 0 {
        Some("no store crash; try --store-crashes 1")
    } else {
        None
    }
}
