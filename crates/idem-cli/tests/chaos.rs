//! The harness of real processes, short (issue 20, item 6): one seed per store, three
//! `idem serve` replicas of this build on hosts of their own (network namespaces), two
//! faults each, checked by the simulation's history checker; a payment lost and one
//! copied behind the server's back, and a wrong guard planted in PostgreSQL's own SQL,
//! which the checker must report. The seeds are fixed and chosen for their faults (asserted below, so a change
//! in how faults are drawn cannot quietly weaken the test); the timing of real processes
//! is not fixed, so a seed replays its faults, not its interleaving.
//!
//! Needs root (network namespaces, a tmpfs), iproute2's `ip` and `tc`, PostgreSQL's
//! server binaries under /usr/lib/postgresql/*/bin and redis-server: the harness starts
//! private instances on free ports (never the shared ones). The harness has no mode
//! without its namespaces, so without root each test checks what it can: that its seed
//! draws the faults it is about, and that the harness (and `idem chaos`, exit code 2)
//! refuses saying it needs root; it says so on stderr.

use idem_chaos::{ChaosError, Config, FaultKind, Harness, Plant, RunReport, StoreKind, faults_of};

fn config(store: StoreKind) -> Config {
    Config { binary: env!("CARGO_BIN_EXE_idem").into(), store, replicas: 3, faults: 2, plant: None, server_bug: None }
}

/// Runs `seed` on `config`'s store; asserts first that the seed draws the `kinds` wanted.
/// Not root: checks the harness refuses for want of root instead, and answers `None`.
fn run(config: Config, seed: u64, kinds: &[FaultKind]) -> Option<RunReport> {
    let drawn: Vec<FaultKind> = faults_of(&config, seed).iter().map(|scheduled| scheduled.fault.kind()).collect();
    assert_eq!(drawn, kinds, "seed {seed} on {} draws other faults now; pick another seed", config.store);
    if !idem_testkit::is_root() {
        refuses_without_root(config);
        return None;
    }
    let mut harness = Harness::start(config).unwrap_or_else(|error| panic!("the harness starts: {error}"));
    let report = harness.run(seed).unwrap_or_else(|error| panic!("the harness runs seed {seed}: {error}"));
    eprint!("{report}");
    Some(report)
}

/// Not root: the harness refuses to start, naming root, before it makes anything.
fn refuses_without_root(config: Config) {
    match Harness::start(config) {
        Err(ChaosError::Missing(what)) => assert!(what.contains("root"), "the refusal names root: {what}"),
        Err(other) => panic!("without root the harness refuses for want of root, not: {other}"),
        Ok(_) => panic!("the harness started without root"),
    }
    eprintln!(
        "not root: the chaos harness's fault injection (network namespaces, tc, a tmpfs) needs root; checked the \
         seed's faults and that the harness refuses naming root (CI runs the harness as root)"
    );
}

fn assert_passed(report: &RunReport) {
    assert!(report.passed(), "{report}\n--- trace ---\n{}", report.trace.join("\n"));
    let answered = report.trace.iter().filter(|line| line.contains("answer  ")).count();
    assert!(answered > 0, "the clients were answered nothing:\n{}", report.trace.join("\n"));
}

#[test]
fn sqlite_shared_by_three_replicas_keeps_every_guarantee_through_a_power_loss_and_a_full_disk() {
    // Goal: G1, G2, G4-G7 on one SQLite file shared by three processes through a power
    // loss (every replica killed, the writes not synced dropped) and a full disk (writes
    // fail with SQLITE_FULL, then room again): every answer a client saw survives.
    let Some(report) = run(config(StoreKind::Sqlite), SQLITE_SEED, &SQLITE_FAULTS) else { return };
    assert_passed(&report);
    // The faults really struck: the power loss found the replicas' journal (the database's
    // `-wal` had one: they wrote through the power-loss VFS), and the disk was filled.
    let fault_line = |text: &str| report.trace.iter().any(|line| line.contains(" fault ") && line.contains(text));
    assert!(fault_line("unsynced writes dropped") && fault_line("-wal"), "{}", report.trace.join("\n"));
    assert!(fault_line("SQLite's disk full ("), "{}", report.trace.join("\n"));
}

#[test]
fn postgres_keeps_every_guarantee_through_a_crash_and_a_vanished_host() {
    // Goal: atomic mode on a private PostgreSQL stopped -m immediate (crash recovery)
    // and a replica's host that vanishes mid-request (frozen, cut off without a FIN,
    // killed): every answer survives (G7), one payment per key, and every key ends (G6):
    // the dead host's session and locks are freed by the store's own timeouts.
    let Some(report) = run(config(StoreKind::Postgres), POSTGRES_SEED, &POSTGRES_FAULTS) else { return };
    assert_passed(&report);
}

#[test]
fn redis_separate_mode_keeps_every_guarantee_but_its_window() {
    // Goal: separate mode on a private Redis, a replica cut off from its stores, then
    // Redis killed with its data deleted (the payments in the private PostgreSQL): every
    // guarantee but separate mode's G1 window, which is reported apart.
    let Some(report) = run(config(StoreKind::Redis), REDIS_SEED, &REDIS_FAULTS) else { return };
    assert_passed(&report);
}

#[test]
fn a_wrong_guard_in_postgres_own_sql_is_caught() {
    // Goal: the harness catches a bug in a store's real code. Every replica runs
    // PostgreSQL's completion with its guard planted away (`idem serve --plant-bug
    // completion-unguarded`); three pauses past the lease land inside handlers, another
    // replica takes each key over and completes it, and the paused holder wakes and
    // commits a second payment: G1. (`serve_plant_bug.rs` shows the shipped SQL keeps one.)
    let config = Config { faults: 3, server_bug: Some("completion-unguarded".into()), ..config(StoreKind::Postgres) };
    let Some(report) = run(config, PLANTED_SEED, &PLANTED_FAULTS) else { return };
    // Without a pause inside a handler the bug has nothing to show: say so, rather than
    // report a miss.
    assert!(report.struck_busy > 0, "no pause found a request in flight:\n{}", report.trace.join("\n"));
    assert!(!report.passed(), "a completion with no guard went unnoticed:\n{}", report.trace.join("\n"));
    assert!(report.violations.iter().any(|v| v.guarantee == "G1"), "{report}");
}

#[test]
fn a_payment_lost_behind_the_servers_back_is_reported() {
    // Goal: the harness would see a store that loses an acknowledged write: one payment
    // row deleted after healing is reported (G7: not in its caller's list; or G2: answered
    // but never stored), with its story and the replay command.
    let config = Config { plant: Some(Plant::LoseOnePayment), ..config(StoreKind::Sqlite) };
    let Some(report) = run(config, SQLITE_SEED, &SQLITE_FAULTS) else { return };
    assert!(!report.passed(), "a lost payment went unnoticed:\n{}", report.trace.join("\n"));
    assert!(report.violations.iter().all(|v| matches!(v.guarantee, "G7" | "G2")), "{report}");
    assert!(report.violations.iter().any(|v| !v.story.is_empty()), "{report}");
    assert!(report.to_string().contains("replay: idem chaos --store sqlite"), "{report}");
}

#[test]
fn a_second_payment_for_one_key_on_postgres_is_reported_as_g1() {
    // Goal: the harness would see a PostgreSQL store that runs a key twice: a copy of one
    // payment row under another id, written behind the server's back after healing, is
    // reported as G1 (two payments for one caller and key), with its story.
    let config = Config { plant: Some(Plant::DuplicateOnePayment), ..config(StoreKind::Postgres) };
    let Some(report) = run(config, POSTGRES_SEED, &POSTGRES_FAULTS) else { return };
    assert!(!report.passed(), "a second payment went unnoticed:\n{}", report.trace.join("\n"));
    assert!(report.violations.iter().all(|v| v.guarantee == "G1"), "{report}");
    assert!(report.violations.iter().all(|v| v.detail.contains("two payments")), "{report}");
}

const SQLITE_SEED: u64 = 31;
const SQLITE_FAULTS: [FaultKind; 2] = [FaultKind::PowerLoss, FaultKind::DiskFull];
const POSTGRES_SEED: u64 = 38;
const POSTGRES_FAULTS: [FaultKind; 2] = [FaultKind::PostgresImmediate, FaultKind::VanishReplica];
const REDIS_SEED: u64 = 19;
const REDIS_FAULTS: [FaultKind; 2] = [FaultKind::PartitionStore, FaultKind::RedisLoseData];
const PLANTED_SEED: u64 = 61;
const PLANTED_FAULTS: [FaultKind; 3] = [FaultKind::PauseReplica; 3];

#[test]
fn bad_options_exit_2_with_a_readable_message() {
    // Goal: an unknown store, an empty seed range or a replica count out of range is refused
    // before anything starts, with exit code 2 and a message naming the problem.
    let cases: [(&[&str], &str); 6] = [
        (&["--store", "mysql"], "unknown store \"mysql\""),
        (&["--store", "postgres", "--plant-bug", "no-such-bug"], "no-such-bug"),
        (&["--store", "sqlite", "--plant-bug", "completion-unguarded"], "use it with --store postgres"),
        (&["--store", "sqlite", "--seeds", "5..5"], "holds no seed"),
        (&["--store", "sqlite", "--replicas", "0"], "--replicas"),
        (&["--store", "sqlite", "--faults", "21"], "--faults"),
    ];
    for (args, expected) in cases {
        let output = std::process::Command::new(env!("CARGO_BIN_EXE_idem"))
            .arg("chaos")
            .args(args)
            .output()
            .expect("the idem binary runs");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(2), "{args:?}: {stderr}");
        assert!(stderr.contains(expected), "{args:?}: {stderr}");
    }
}

#[test]
fn an_interrupted_sweep_stops_after_its_run_and_removes_what_it_made() {
    // Goal: SIGINT stops a sweep after the run in progress, with exit code 130, and the
    // harness removes what it made on this machine: its namespaces, bridges, tmpfs and
    // directory (a sweep killed outright would leave them).
    use std::io::{BufRead as _, BufReader};
    use std::process::{Command, Stdio};
    use std::time::{Duration, Instant};

    if !idem_testkit::is_root() {
        the_cli_refuses_without_root();
        return;
    }
    let mut sweep = Command::new(env!("CARGO_BIN_EXE_idem"))
        .args(["chaos", "--store", "sqlite", "--seeds", "0..50", "--faults", "1", "--replicas", "1"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the idem binary runs");
    let stderr = sweep.stderr.take().expect("stderr is piped");
    let (lines, made) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            let _ = lines.send(line);
        }
    });
    let line = made.recv_timeout(Duration::from_secs(60)).expect("the harness says what it made within a minute");
    let subnet: String = line
        .split("bridges idemf")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .unwrap_or_else(|| panic!("no bridge named in {line:?}"))
        .to_owned();
    let directory = line.rsplit("directory ").next().unwrap_or_default().trim().to_owned();
    assert!(std::path::Path::new(&directory).is_dir(), "{line}");

    let interrupt = Command::new("kill").args(["-INT", &sweep.id().to_string()]).status().expect("kill runs");
    assert!(interrupt.success());
    let deadline = Instant::now() + Duration::from_secs(120);
    let status = loop {
        if let Some(status) = sweep.try_wait().expect("the sweep can be waited for") {
            break status;
        }
        assert!(Instant::now() < deadline, "the sweep did not stop within two minutes of SIGINT");
        std::thread::sleep(Duration::from_millis(100));
    };
    let said: Vec<String> = made.try_iter().collect();
    assert_eq!(status.code(), Some(130), "{said:?}");
    assert!(said.iter().any(|line| line.contains("interrupted; the run in progress finishes")), "{said:?}");

    let namespaces = Command::new("ip").args(["netns", "list"]).output().expect("ip runs");
    let prefix = format!("idem{subnet}r");
    assert!(!String::from_utf8_lossy(&namespaces.stdout).lines().any(|ns| ns.starts_with(&prefix)), "{prefix}* left");
    let bridge = Command::new("ip").args(["link", "show", &format!("idemf{subnet}")]).output().expect("ip runs");
    assert!(!bridge.status.success(), "bridge idemf{subnet} left");
    assert!(!std::path::Path::new(&directory).exists(), "{directory} left");
}

/// Not root: `idem chaos` refuses before it starts anything, with exit code 2 and a message
/// naming root.
fn the_cli_refuses_without_root() {
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_idem"))
        .args(["chaos", "--store", "sqlite", "--seeds", "0..50", "--faults", "1", "--replicas", "1"])
        .output()
        .expect("the idem binary runs");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("root") && stderr.contains("namespaces"), "a readable refusal naming root: {stderr}");
    eprintln!("not root: `idem chaos` refused as it should ({}); the sweep itself runs as root", stderr.trim());
}
