//! `idem serve --plant-bug NAME`: the flag's help and refusals, and, on the real
//! PostgreSQL, what a fault-injection harness is meant to catch with it: two real server
//! processes running the store with its completion unguarded (`completion-unguarded`),
//! where a holder paused inside its handler (`--handler-delay`, SIGSTOP) past its lease
//! resumes after another replica took the key over and completed it, and commits a second
//! payment for the one key (G1 broken); the same history on the store as shipped makes
//! one payment, and the resumed holder answers the other's.

mod replicas;
mod support;

use std::process::{Command, Output};
use std::time::{Duration, Instant};

use http::Method;
use idem_server::PlantedBug;
use replicas::{Schema, payments_listed, postgres_url};
use sqlx::{AssertSqlSafe, Connection as _};
use support::{Reply, ServerProcess, send};

fn idem_serve(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_idem"))
        .arg("serve")
        .args(args)
        .env_remove("IDEM_STORE")
        .env_remove("IDEM_PLANT_BUG")
        .output()
        .expect("the idem binary runs")
}

/// `idem serve args` exits 2 before listening, saying every one of `expected`.
fn refused(args: &[&str], expected: &[&str]) {
    let output = idem_serve(&[&["--listen", "127.0.0.1:0"], args].concat());
    let message = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "{args:?}: {message}");
    for expected in expected {
        assert!(message.contains(expected), "{args:?}: missing {expected:?} in {message}");
    }
    assert!(!message.contains("panicked"), "{args:?}: {message}");
}

#[test]
fn the_help_says_what_the_flag_is_for_and_names_every_bug() {
    // Goal: `--help` shows --plant-bug as a test-harness facility and lists every name it takes.
    let output = idem_serve(&["--help"]);
    assert_eq!(output.status.code(), Some(0));
    let help = String::from_utf8_lossy(&output.stdout).split_whitespace().collect::<Vec<_>>().join(" ");
    assert!(help.contains("--plant-bug <NAME>"), "{help}");
    assert!(help.contains("For testing the test harness: runs the store with this rule planted wrong"), "{help}");
    for bug in PlantedBug::ALL {
        assert!(help.contains(bug.name()), "{bug} missing from: {help}");
    }
}

#[test]
fn an_unknown_name_or_a_store_without_sql_is_refused_with_exit_2() {
    // Goal: a typo lists the known names; SQLite, memory and Redis stores have no
    // PostgreSQL SQL to plant in, and are refused before anything is opened.
    refused(&["--store", "memory://", "--plant-bug", "no-such-bug"], &["unknown planted bug", "completion-unguarded"]);
    refused(
        &["--store", "memory://", "--plant-bug", "completion-unguarded"],
        &["--plant-bug", "memory://", "postgres://"],
    );
    refused(&["--store", "sqlite://./never.db", "--plant-bug", "purge-one-ms-late"], &["sqlite://", "postgres://"]);
    refused(
        &["--store", "redis://127.0.0.1:1", "--db", "sqlite://./never.db", "--plant-bug", "completion-without-fence"],
        &["redis://", "postgres://"],
    );
    assert!(!std::path::Path::new("./never.db").exists(), "nothing was opened");
}

const BODY: &str = r#"{"amount": 30.00, "currency": "EUR", "destination": "merchant-planted"}"#;
const TOKEN: &str = "Bearer planted";

async fn pay(addr: std::net::SocketAddr) -> Result<Reply, String> {
    let headers = [("idempotency-key", "planted-1"), ("authorization", TOKEN), ("content-type", "application/json")];
    send(addr, Method::POST, "/payments", &headers, BODY).await
}

/// Sends SIGSTOP or SIGCONT to the server.
fn signal(server: &mut ServerProcess, signal: &str) {
    let pid = server.child().id().to_string();
    let status = Command::new("kill").args([signal, &pid]).status().expect("kill runs");
    assert!(status.success(), "kill {signal} {pid}");
}

/// Whether the key's record in `schema` is in flight.
async fn in_flight(db: &mut sqlx::PgConnection, schema: &str) -> bool {
    let sql = format!("SELECT state FROM \"{schema}\".idem_records WHERE idem_key = 'planted-1'");
    let state: Option<String> = sqlx::query_scalar(AssertSqlSafe(sql)).fetch_optional(db).await.expect("reads");
    state.as_deref() == Some("in_flight")
}

/// The history: replica A claims the key and waits in its handler; A is paused (SIGSTOP)
/// until its 1 s lease lapses; replica B takes the key over and completes it; A resumes.
/// Returns A's answer, B's answer and the payments listed afterwards.
async fn paused_holder_resumes_after_a_takeover(plant: &[&str]) -> (Reply, Reply, Vec<serde_json::Value>) {
    let schema = Schema::fresh();
    let store = schema.url();
    let mut a = ServerProcess::start(&store, &[&["--lease", "1s", "--handler-delay", "1s"], plant].concat());
    let b = ServerProcess::start(&store, &[&["--lease", "1s"], plant].concat());
    if !plant.is_empty() {
        let log = a.startup_log.join("\n");
        assert!(log.contains("WARNING") && log.contains("planted wrong") && log.contains("PLANTED BUG"), "{log}");
    }
    let mut db = sqlx::PgConnection::connect(&postgres_url()).await.expect("PostgreSQL answers");

    let first = tokio::spawn(pay(a.addr));
    while !in_flight(&mut db, &schema.name).await {
        assert!(!first.is_finished(), "A answered before its claim was seen in flight");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    signal(&mut a, "-STOP");
    // B answers 409 while A's lease holds, then takes the key over.
    let deadline = Instant::now() + Duration::from_secs(10);
    let taken_over = loop {
        let reply = pay(b.addr).await.expect("B answers");
        if reply.status != 409 {
            break reply;
        }
        assert!(Instant::now() < deadline, "B never took the key over");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    signal(&mut a, "-CONT");
    let resumed = first.await.expect("A's request task ends").expect("A answers once resumed");
    let listed = payments_listed(b.addr, TOKEN).await;
    (resumed, taken_over, listed)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_planted_unguarded_completion_lets_a_paused_holder_pay_twice_and_the_shipped_store_does_not() {
    // Goal: the knobs give a harness a G1 violation to catch with the bug planted, and
    // none without: planted, the resumed holder commits its own payment beside the one B
    // made (two payments, two different answers for one key); shipped, its completion is
    // refused, its payment rolled back, and it answers B's payment.
    let (resumed, taken_over, listed) = paused_holder_resumes_after_a_takeover(&[]).await;
    assert_eq!((taken_over.status, resumed.status), (201, 201));
    assert_eq!(listed.len(), 1, "shipped: one payment: {listed:?}");
    assert_eq!(resumed.header("location"), taken_over.header("location"), "shipped: A answers B's payment");

    let (resumed, taken_over, listed) =
        paused_holder_resumes_after_a_takeover(&["--plant-bug", "completion-unguarded"]).await;
    assert_eq!((taken_over.status, resumed.status), (201, 201));
    assert_eq!(listed.len(), 2, "planted: the stale holder paid too: {listed:?}");
    assert_ne!(resumed.header("location"), taken_over.header("location"), "planted: two answers for one key");
}

#[test]
fn store_specific_options_with_another_store_are_refused_with_exit_2() {
    // Goal: a test knob or a SQLite setting given with a store it does not apply to is
    // refused before anything opens, naming the option and the store, never ignored.
    let dir = tempfile::tempdir().expect("a temporary directory");
    let db = format!("sqlite://{}", dir.path().join("idem.db").display());
    refused(&["--store", &db, "--commit-delay", "100ms"], &["--commit-delay", "postgres://", "sqlite://"]);
    refused(&["--store", "memory://", "--sqlite-claim-sync", "deferred"], &["--sqlite-claim-sync", "memory://"]);
    refused(&["--store", "memory://", "--commit-delay", "61s"], &["--commit-delay"]);
}

#[test]
fn the_test_knobs_are_not_read_from_the_environment() {
    // Goal: nothing inherited turns a test knob on: with the variables a user might guess
    // set, a plain memory store starts and warns of nothing.
    let mut server = Command::new(env!("CARGO_BIN_EXE_idem"));
    server
        .args(["serve", "--listen", "127.0.0.1:0", "--store", "memory://", "--help"])
        .env("IDEM_PLANT_BUG", "completion-unguarded")
        .env("IDEM_HANDLER_DELAY", "1s")
        .env("IDEM_COMMIT_DELAY", "1s");
    let output = server.output().expect("the idem binary runs");
    let help = String::from_utf8_lossy(&output.stdout);
    assert_eq!(output.status.code(), Some(0), "{help}");
    // Each flag's entry: its line and the description lines under it, up to the next flag.
    let entry = |flag: &str| -> String {
        let mut lines = help.lines().skip_while(|line| !line.trim_start().starts_with(flag));
        let first = lines.next().unwrap_or_default().to_owned();
        let rest: Vec<&str> = lines.take_while(|line| !line.trim_start().starts_with('-')).collect();
        format!("{first}\n{}", rest.join("\n"))
    };
    // The check can see an environment variable where there is one.
    assert!(entry("--new-keys-per-second").contains("[env: IDEM_NEW_KEYS_PER_SECOND"), "{help}");
    for knob in ["--plant-bug", "--handler-delay", "--commit-delay", "--sqlite-power-loss-journal"] {
        let entry = entry(knob);
        assert!(entry.contains(knob), "{knob} missing from --help: {help}");
        assert!(!entry.contains("[env:"), "{knob} reads the environment: {entry}");
    }
}
