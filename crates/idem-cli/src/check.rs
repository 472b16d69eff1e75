//! `idem check`: model-check the protocol and print a verdict per property; with
//! `--consumer`, the consumer configuration (message consumers on a broker) instead.

use std::io::{IsTerminal as _, Write as _};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use idem_model::{BrokerKind, Config, ConsumerConfig, Mode, NetworkKind, Outcome, Search, Strategy, Verdict};
use stateright::{Checker, Model};

use crate::model_options::{ConsumerOptions, ModelOptions};

/// How often the progress line on stderr is refreshed.
const PROGRESS_EVERY: Duration = Duration::from_millis(500);
/// How often to look whether the checker is done (small runs end in milliseconds).
const POLL_EVERY: Duration = Duration::from_millis(10);

/// The HTTP model's options that mean nothing to the consumer model.
const HTTP_ONLY: [&str; 22] = [
    "clients",
    "servers",
    "ops_per_client",
    "key_reuse",
    "no_key_reuse",
    "slow",
    "handler_time",
    "slow_time",
    "network",
    "network_faults",
    "delays",
    "purges",
    "skew",
    "no_renewals",
    "progress_faults",
    "attempts",
    "deadline",
    "attempt_timeout",
    "store_crashes",
    "forgets",
    "tombstone",
    "ceiling",
];

/// Options of `idem check`.
#[derive(clap::Args, Debug)]
pub(crate) struct Args {
    #[command(flatten)]
    model: ModelOptions,
    /// Check the consumer configuration instead: message consumers on a broker, guarded by
    /// idem-core's consume rules (takes --consumers, --messages, --broker, ... and the shared
    /// --crashes, --lapses, --outages, --failures, --mode, --variant).
    #[arg(long, conflicts_with_all = HTTP_ONLY)]
    consumer: bool,
    #[command(flatten)]
    consumer_options: ConsumerOptions,
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
    fn config(&self) -> Result<Config, idem_model::ConfigError> {
        Ok(Config { store_crashes: self.store_crashes, ..self.model.config()? })
    }

    /// The search the options ask for.
    fn search(&self) -> Search {
        let threads = self.threads.unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
        let symmetry = self.symmetry || (self.strategy == Strategy::Dfs && !self.no_symmetry);
        Search { strategy: self.strategy, symmetry, threads, depth_max: self.depth }
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
    if args.consumer {
        return run_consumer(args);
    }
    let config = args.config()?;
    let model = config.clone().into_model()?;
    let search = args.search();
    let started = Instant::now();
    let mut checker = idem_model::spawn(model, search)?;
    let elapsed = wait(&*checker, started);
    idem_model::join(&mut checker);
    let verdicts = idem_model::verdicts(&checker, args.examples);
    let summary = summary(&*checker, elapsed);
    report(&describe(&config, search), &summary, &verdicts, args.examples, |p| not_reached_because(p, &config))
}

/// Runs the consumer configuration's check; exit code 1 when a property is violated.
fn run_consumer(args: &Args) -> Result<ExitCode, Box<dyn std::error::Error>> {
    let config = args.model.consumer_config(&args.consumer_options)?;
    let model = config.clone().into_model()?;
    let search = args.search();
    let started = Instant::now();
    let mut checker = idem_model::spawn_consumer(model, search)?;
    let elapsed = wait(&*checker, started);
    for handle in checker.handles() {
        if let Err(panic) = handle.join() {
            std::panic::resume_unwind(panic);
        }
    }
    let verdicts = idem_model::consumer_verdicts(&checker, args.examples);
    let summary = summary(&*checker, elapsed);
    let describe = describe_consumer(&config, search);
    report(&describe, &summary, &verdicts, args.examples, |p| consumer_not_reached_because(p, &config))
}

/// Waits for the checker, showing its progress on stderr; returns the time it took.
fn wait<M: Model>(checker: &dyn Checker<M>, started: Instant) -> Duration {
    // On a terminal the progress line rewrites itself; in a log it appears every few seconds.
    let terminal = std::io::stderr().is_terminal();
    let every = if terminal { PROGRESS_EVERY } else { PROGRESS_EVERY * 10 };
    let mut shown = Instant::now();
    while !checker.is_done() {
        std::thread::sleep(POLL_EVERY);
        if shown.elapsed() >= every {
            let line = progress(checker, started.elapsed());
            if terminal {
                eprint!("\r{line}   ")
            } else {
                eprintln!("{line}")
            }
            shown = Instant::now();
        }
    }
    let elapsed = started.elapsed();
    if terminal {
        eprint!("\r{}\r", " ".repeat(100));
    }
    elapsed
}

/// Prints the configuration, the summary, the verdicts and every story; exit code 1 when a
/// property is violated.
fn report(
    describe: &str,
    summary: &str,
    verdicts: &[Verdict],
    examples: bool,
    not_reached: impl Fn(&str) -> Option<&'static str>,
) -> Result<ExitCode, Box<dyn std::error::Error>> {
    let mut out = std::io::stdout().lock();
    writeln!(out, "{describe}")?;
    writeln!(out, "{summary}")?;
    writeln!(out)?;
    write_table(&mut out, verdicts, examples, not_reached)?;
    if verdicts.iter().any(Verdict::is_violation) {
        writeln!(out, "\nA path ends at its first violation, so \"holds\" above covers the paths up to a violation.")?;
    }
    for verdict in verdicts {
        match &verdict.outcome {
            Outcome::Violated(story) => {
                writeln!(out, "\nVIOLATED: {} ({})", verdict.property, verdict.guarantee)?;
                for line in story {
                    writeln!(out, "  {line}")?;
                }
            }
            Outcome::Reached(story) if examples => {
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

fn progress<M: Model>(checker: &dyn Checker<M>, elapsed: Duration) -> String {
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
         {} slow handler(s), {} failure(s), {} delay(s), {} outage(s), {} store crash(es), {} purge(s), {} forget(s), clock skew {}, renewals {}, handlers take up to {} (slow ones {}), \
         tombstone {}, execution ceiling {}, {} mode, variant {}\n\
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
        config.forgets,
        humantime::format_duration(config.skew),
        if config.renewals { "on" } else { "off" },
        humantime::format_duration(config.handler_time),
        humantime::format_duration(config.slow_handler_time),
        config.tombstone.map_or("none".to_owned(), |period| humantime::format_duration(period).to_string()),
        config.ceiling.map_or("none".to_owned(), |ceiling| humantime::format_duration(ceiling).to_string()),
        config.mode,
        config.variant,
        client.attempts_max,
        humantime::format_duration(client.deadline),
        humantime::format_duration(client.attempt_timeout),
        config.progress_faults,
        search.threads,
    )
}

fn summary<M: Model>(checker: &dyn Checker<M>, elapsed: Duration) -> String {
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
    examples: bool,
    not_reached: impl Fn(&str) -> Option<&'static str>,
) -> std::io::Result<()> {
    let width = verdicts.iter().map(|v| v.property.len()).max().unwrap_or(0);
    writeln!(out, "{:<10} {:<width$}  verdict", "guarantee", "property")?;
    for verdict in verdicts {
        let outcome = match &verdict.outcome {
            Outcome::Holds => "holds".to_owned(),
            Outcome::Violated(story) => format!("VIOLATED ({} steps, below)", story.len()),
            Outcome::Reached(story) if examples => format!("reached ({} steps, below)", story.len()),
            Outcome::Reached(_) => "reached".to_owned(),
            Outcome::NotReached => match not_reached(verdict.property) {
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
        CEILING_LAPSE_HAPPENS, FORGET_UNDER_A_HANDLER, MISMATCH_ANSWERED, OUTAGE_ANSWERED, RENEWAL_HAPPENS,
        STORE_CRASH_LOSES_WRITES, TOMBSTONE_LEFT, UNRECORDED_ANSWERED,
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
    } else if property == FORGET_UNDER_A_HANDLER && config.forgets == 0 {
        Some("no forget; try --forgets 1")
    } else if property == TOMBSTONE_LEFT && config.tombstone.is_none() {
        Some("no tombstones; try --tombstone 1h --delays 1")
    } else if property == CEILING_LAPSE_HAPPENS && config.ceiling.is_none() {
        Some("no execution ceiling; try --ceiling 5s --slow 1")
    } else {
        None
    }
}

fn describe_consumer(config: &ConsumerConfig, search: Search) -> String {
    let faults = config.faults;
    let attempts = config.handler_attempts_max.map_or("unbounded".to_owned(), |n| format!("at most {n}"));
    format!(
        "consumer model: {} consumer(s) taking {} delivery(ies) at once, {} message id(s){}{}, {} broker, \
         {} crash(es), {} stall(s), {} lost ack(s), {} timeout(s) under a live handler, {} outage(s), \
         {} failure(s) (handler attempts {attempts}), {} mode, variant {}\n\
         search: {}{}, {} thread(s){}",
        config.consumers,
        config.in_flight_max,
        config.messages,
        if config.duplicate_publish { " + m1 published twice" } else { "" },
        if config.mismatch_publish { " + m1 with another payload" } else { "" },
        config.broker,
        faults.crashes,
        faults.stalls,
        faults.lost_acks,
        faults.timeouts,
        faults.outages,
        faults.failures,
        config.mode,
        config.variant,
        match search.strategy {
            Strategy::Bfs => "BFS",
            Strategy::Dfs => "DFS",
        },
        if search.symmetry { " with symmetry reduction" } else { "" },
        search.threads,
        search.depth_max.map_or(String::new(), |depth| format!(", depth at most {depth} (incomplete)")),
    )
}

/// Why a consumer reachability property cannot be reached in `config`, when it says so.
fn consumer_not_reached_because(property: &str, config: &ConsumerConfig) -> Option<&'static str> {
    use idem_model::consumer::properties::{
        ACK_LOST, CHANNEL_REQUEUES, CRASH_AFTER_COMMIT, PROGRESS_EXTENDS_DEADLINE, REDELIVERED_AFTER_ACK_TIMEOUT,
    };
    let ack_wait = config.broker == BrokerKind::AckWait;
    if property == ACK_LOST && config.faults.lost_acks == 0 {
        Some("no lost ack; try --lost-acks 1")
    } else if property == CRASH_AFTER_COMMIT && config.faults.crashes == 0 {
        Some("no crash; try --crashes 1")
    } else if (property == REDELIVERED_AFTER_ACK_TIMEOUT || property == PROGRESS_EXTENDS_DEADLINE) && !ack_wait {
        Some("only the ack-wait broker has an ack deadline")
    } else if property == CHANNEL_REQUEUES && ack_wait {
        Some("only the channel-close broker requeues on a closed channel")
    } else {
        None
    }
}
