//! `idem serve` as a user runs it: flags, environment variables, errors, signals.

mod support;

use std::process::{Command, Output};
use std::time::Duration;

use http::Method;
use support::{ServerProcess, send};

fn idem_serve(args: &[&str], env: &[(&str, &str)]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_idem"))
        .arg("serve")
        .args(args)
        .envs(env.iter().copied())
        .output()
        .expect("the idem binary runs")
}

/// Flags, environment variables, and what the error message must mention.
type BadCase<'a> = (&'a [&'a str], &'a [(&'a str, &'a str)], &'a str);

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

#[test]
fn bad_flags_and_values_are_readable_errors() {
    // Goal: each bad setting exits non-zero with a message that names the problem, never a panic.
    let cases: [BadCase<'_>; 10] = [
        (&["--store", "mysql://localhost/db"], &[], "sqlite://PATH"),
        (&["--store", "sqlite://"], &[], "needs a file path"),
        (&["--lease", "soon"], &[], "--lease"),
        (&["--lease", "10s", "--retention", "5s"], &[], "must be longer than the lease"),
        (&["--listen", "localhost"], &[], "--listen"),
        (&[], &[("IDEM_STORE", "mysql://x")], "unknown store"),
        (&["--connections-max", "0"], &[], "--connections-max"),
        (&["--body-buffer-max", "1000"], &[], "one full body"),
        (&["--header-read-timeout", "0s"], &[], "longer than zero"),
        (&[], &[("IDEM_NEW_KEYS_BURST", "0")], "--new-keys-burst"),
    ];
    for (args, env, expected) in cases {
        let output = idem_serve(args, env);
        let message = stderr(&output);
        assert!(!output.status.success(), "{args:?} {env:?} was accepted");
        assert!(message.contains(expected), "{args:?} {env:?}: {message}");
        assert!(!message.contains("panicked"), "{message}");
    }
}

#[test]
fn an_unopenable_store_is_a_readable_error() {
    // Goal: a SQLite path that cannot be created fails at start with the file named.
    let dir = tempfile::tempdir().expect("a temp dir can be made");
    let path = dir.path().join("missing-dir").join("idem.db");
    let store = format!("sqlite://{}", path.display());
    let output = idem_serve(&["--listen", "127.0.0.1:0", "--store", &store], &[]);
    assert_eq!(output.status.code(), Some(2));
    let message = stderr(&output);
    assert!(message.contains("idem: error:") && message.contains("missing-dir"), "{message}");
}

#[test]
fn help_names_the_store_schemes_and_environment_variables() {
    // Goal: --help tells a newcomer which stores exist, which variables set each flag, and
    // that the (10 s) lease is renewed while a request runs.
    let output = idem_serve(&["--help"], &[]);
    let help = String::from_utf8_lossy(&output.stdout);
    for expected in [
        "sqlite://PATH",
        "memory://",
        "IDEM_LISTEN",
        "IDEM_STORE",
        "IDEM_RETENTION",
        "IDEM_LEASE",
        "24h",
        "10s",
        "renewed",
        "IDEM_CONNECTIONS_MAX",
        "IDEM_HEADER_READ_TIMEOUT",
        "IDEM_BODY_READ_TIMEOUT",
        "IDEM_BODY_BUFFER_MAX",
        "IDEM_DRAIN_TIMEOUT",
        "IDEM_NEW_KEYS_PER_SECOND",
    ] {
        assert!(help.contains(expected), "missing {expected:?} in\n{help}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serves_the_article_request_and_stops_on_sigterm() {
    // Goal: the binary answers the seed article's request, replays it, logs outcomes, and exits 0 on SIGTERM.
    let dir = tempfile::tempdir().expect("a temp dir can be made");
    let mut server = ServerProcess::sqlite(&dir.path().join("idem.db"), &[]);
    let payment = r#"{"amount": 100.00, "currency": "USD", "destination": "merchant-id-xyz"}"#;
    let headers = [("idempotency-key", "article"), ("content-type", "application/json")];
    let first = send(server.addr, Method::POST, "/payments", &headers, payment).await.expect("the server answers");
    let retry = send(server.addr, Method::POST, "/payments", &headers, payment).await.expect("the server answers");
    assert_eq!((first.status, retry.status), (201, 201));
    assert_eq!(first.body, retry.body);
    assert!(!first.is_replay() && retry.is_replay());

    let pid = server.child().id().to_string();
    let signalled = Command::new("kill").args(["-TERM", &pid]).status().expect("kill(1) runs");
    assert!(signalled.success());
    let mut exit = None;
    for _ in 0..200 {
        if let Some(status) = server.child().try_wait().expect("the child can be polled") {
            exit = Some(status);
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(exit.and_then(|status| status.code()), Some(0), "exit after SIGTERM: {exit:?}");
    // The process has exited, so its stderr reaches end of file and the channel closes.
    let mut log = Vec::new();
    while let Ok(line) = server.log.recv_timeout(Duration::from_secs(5)) {
        log.push(line);
    }
    let outcomes: Vec<&String> = log.iter().filter(|line| line.contains("outcome=")).collect();
    assert!(
        outcomes.iter().any(|line| line.contains("outcome=\"executed\"") || line.contains("outcome=executed")),
        "{log:#?}"
    );
    assert!(outcomes.iter().any(|line| line.contains("replayed")), "{log:#?}");
    assert!(log.iter().any(|line| line.contains("SIGTERM")), "{log:#?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_store_serves_and_warns_that_it_forgets() {
    // Goal: `--store memory://` runs the same API and says plainly that nothing survives.
    let server = ServerProcess::start("memory://", &["--lease", "5s", "--retention", "1h"]);
    let user = r#"{"name": "Alice", "email": "alice@example.com"}"#;
    let headers = [("idempotency-key", "u1"), ("authorization", "Bearer alice")];
    let first = send(server.addr, Method::POST, "/users", &headers, user).await.expect("the server answers");
    let retry = send(server.addr, Method::POST, "/users", &headers, user).await.expect("the server answers");
    assert_eq!((first.status, retry.status), (201, 201));
    assert!(retry.is_replay() && first.body == retry.body);
    let health = send(server.addr, Method::GET, "/healthz", &[], "").await.expect("the server answers");
    assert_eq!(health.status, 200);
    assert!(server.startup_log.iter().any(|line| line.contains("lost on exit")), "{:#?}", server.startup_log);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_show_the_layers_own_numbers() {
    // Goal: /metrics carries idem-http's `metrics`-facade counters and histogram (the same
    // numbers a library user's recorder sees), beside the app's own.
    let server = ServerProcess::start("memory://", &[]);
    let payment = r#"{"amount": 1.00, "currency": "USD", "destination": "m"}"#;
    let headers = [("idempotency-key", "metrics-1"), ("content-type", "application/json")];
    for _ in 0..2 {
        send(server.addr, Method::POST, "/payments", &headers, payment).await.expect("the server answers");
    }
    let metrics = send(server.addr, Method::GET, "/metrics", &[], "").await.expect("the server answers");
    let text = String::from_utf8_lossy(&metrics.body);
    assert!(text.contains("idem_requests_total{outcome=\"executed\"} 1"), "{text}");
    assert!(text.contains("idem_requests_total{outcome=\"replayed\"} 1"), "{text}");
    assert!(text.contains("idem_request_duration_seconds"), "{text}");
    assert!(text.contains("idem_executions_total 1"), "the app's own counters stay: {text}");
}
