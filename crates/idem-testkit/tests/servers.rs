//! The servers idem-testkit names: they answer, the variables win over them, and the
//! throw-away ones die with the test process that started them.
//!
//! Two tests run this binary again as a child process with [`CHILD`] set: the child runs
//! the same test function, which sees the variable, asks for both URLs (which says them on
//! stderr) and ends; the parent reads the child's stderr.

use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use idem_testkit::{POSTGRES_URL_VAR, REDIS_URL_VAR, ROOT_FALLBACK_URL, postgres_url, redis_url};
use sqlx::Connection as _;

/// Set in a child process: it asks for both URLs and ends.
const CHILD: &str = "IDEM_TESTKIT_TEST_CHILD";

/// Longest a child may run: both servers' starts, with room.
const CHILD_MAX: Duration = Duration::from_secs(90);

/// Longest a server may take to be gone once its test process has exited (the kernel
/// delivers the parent-death signal at the exit; the server then has to be torn down).
const GONE_MAX: Duration = Duration::from_secs(10);

#[tokio::test]
async fn postgres_url_names_a_database_test_that_answers() {
    // Goal: the URL names a database `test` that takes queries; without the variable it is a
    // throw-away cluster on a port of its own, or, as root, the machine's default server.
    let url = postgres_url();
    assert_eq!(postgres_url(), url, "later calls answer the same URL");
    let mut connection = sqlx::PgConnection::connect(&url).await.unwrap_or_else(|error| panic!("{url}: {error}"));
    let (database,): (String,) =
        sqlx::query_as("SELECT current_database()").fetch_one(&mut connection).await.expect("a query answers");
    assert_eq!(database, "test");
    if std::env::var(POSTGRES_URL_VAR).is_err() {
        if is_root() {
            assert_eq!(url, ROOT_FALLBACK_URL, "PostgreSQL refuses root: the machine's server");
        } else {
            assert!(url.starts_with("postgres://postgres@127.0.0.1:"), "{url}");
            assert_ne!(url, ROOT_FALLBACK_URL, "a cluster of its own, not the default port");
        }
    }
}

#[tokio::test]
async fn redis_url_names_a_redis_that_answers() {
    // Goal: the URL names a Redis that takes commands; without the variable it is one of the
    // process's own, not the default port.
    let url = redis_url();
    assert_eq!(redis_url(), url, "later calls answer the same URL");
    let client = redis::Client::open(url.as_str()).expect("the URL parses");
    let mut connection = client.get_multiplexed_async_connection().await.unwrap_or_else(|e| panic!("{url}: {e}"));
    let key = format!("idem-testkit-{}", std::process::id());
    let _: () = redis::cmd("SET").arg(&key).arg("answered").query_async(&mut connection).await.expect("SET");
    let value: String = redis::cmd("GET").arg(&key).query_async(&mut connection).await.expect("GET");
    let _: u64 = redis::cmd("DEL").arg(&key).query_async(&mut connection).await.expect("DEL");
    assert_eq!(value, "answered");
    if std::env::var(REDIS_URL_VAR).is_err() {
        assert_ne!(url, "redis://127.0.0.1:6379", "a Redis of its own, not the default port");
    }
}

#[test]
fn the_variables_win_over_throw_away_servers() {
    // Goal: with both variables set, the URLs are theirs, as given, and nothing is started
    // (the URLs name port 1, where nothing listens: starting would not be needed to answer).
    if std::env::var_os(CHILD).is_some() {
        return ask_for_both();
    }
    let postgres = "postgres://someone@127.0.0.1:1/elsewhere";
    let redis = "redis://127.0.0.1:1/3";
    let output =
        run_child("the_variables_win_over_throw_away_servers", &[(POSTGRES_URL_VAR, postgres), (REDIS_URL_VAR, redis)]);
    let log = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "the child passed: {log}");
    assert_eq!(said(&log, "PostgreSQL"), format!("{postgres} (from {POSTGRES_URL_VAR})"), "{log}");
    assert_eq!(said(&log, "Redis"), format!("{redis} (from {REDIS_URL_VAR})"), "{log}");
    assert!(!log.contains("throw-away"), "nothing started: {log}");
}

#[test]
fn throw_away_servers_die_with_the_test_process() {
    // Goal: without the variables, the child's servers are its own and are gone once it has
    // exited (parent-death signal), although nothing in it stopped them. As root only Redis
    // is the child's own (PostgreSQL falls back to the machine's server, which must live on).
    if std::env::var_os(CHILD).is_some() {
        return ask_for_both();
    }
    let output = run_child("throw_away_servers_die_with_the_test_process", &[]);
    let log = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "the child passed: {log}");
    let redis = said(&log, "Redis");
    let mut servers = vec![("Redis", pid_in(&redis, &log))];
    let postgres = said(&log, "PostgreSQL");
    if is_root() {
        assert!(postgres.starts_with(&format!("{ROOT_FALLBACK_URL} (running as root")), "{log}");
    } else {
        assert!(postgres.contains("(a throw-away cluster in "), "{log}");
        servers.push(("PostgreSQL", pid_in(&postgres, &log)));
    }
    for (server, pid) in servers {
        let started = Instant::now();
        while is_alive(pid) {
            assert!(started.elapsed() < GONE_MAX, "{server} (pid {pid}) outlived its test process by {GONE_MAX:?}");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

/// The child's part: asks for both URLs, which says them on stderr.
fn ask_for_both() {
    let _ = postgres_url();
    let _ = redis_url();
}

/// Runs `test` of this binary in a child process with [`CHILD`] and `vars` set and the URL
/// variables otherwise unset; its output, within [`CHILD_MAX`].
fn run_child(test: &str, vars: &[(&str, &str)]) -> Output {
    let exe = std::env::current_exe().expect("the test binary's path");
    let mut command = Command::new(exe);
    command
        .args(["--exact", test, "--nocapture", "--test-threads=1"])
        .env(CHILD, "1")
        .env_remove(POSTGRES_URL_VAR)
        .env_remove(REDIS_URL_VAR)
        .envs(vars.iter().copied())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    let child = command.spawn().expect("the child starts");
    let (done, finished) = std::sync::mpsc::channel();
    std::thread::spawn(move || done.send(child.wait_with_output()));
    finished.recv_timeout(CHILD_MAX).expect("the child ends in time").expect("the child's output is read")
}

/// What the log said about `server`: the rest of `idem-testkit: <server> for this test
/// process: `.
fn said(log: &str, server: &str) -> String {
    let start = format!("idem-testkit: {server} for this test process: ");
    log.lines()
        .find_map(|line| line.strip_prefix(&start))
        .unwrap_or_else(|| panic!("the log names the {server} chosen: {log}"))
        .to_owned()
}

/// The number after the last `pid ` in `line`.
fn pid_in(line: &str, log: &str) -> u32 {
    let (_, after) = line.rsplit_once("pid ").unwrap_or_else(|| panic!("a pid in {line:?}: {log}"));
    after.trim_end_matches(')').parse().unwrap_or_else(|_| panic!("a pid in {line:?}"))
}

/// Whether process `pid` exists and is not a zombie waiting to be reaped.
fn is_alive(pid: u32) -> bool {
    // /proc/<pid>/stat: `pid (comm) state ...`; comm may hold spaces, so the state follows the last ')'.
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|stat| stat.rsplit_once(')').map(|(_, rest)| rest.trim_start().starts_with('Z')))
        .is_some_and(|zombie| !zombie)
}

/// Whether this process runs as root (the `Uid:` line's effective id).
fn is_root() -> bool {
    let status = std::fs::read_to_string("/proc/self/status").expect("Linux has /proc/self/status");
    let uids = status.lines().find_map(|line| line.strip_prefix("Uid:")).expect("a Uid: line");
    uids.split_whitespace().nth(1) == Some("0")
}
