//! `idem pay` against `idem serve`: both the real binary, as separate processes, over loopback.

mod support;

use std::process::Output;

use support::ServerProcess;

fn idem_pay(args: &[&str]) -> Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_idem"))
        .arg("pay")
        .args(args)
        .env_remove("IDEM_TOKEN")
        .output()
        .expect("the idem binary runs")
}

fn stdout(output: &Output) -> String {
    String::from_utf8(output.stdout.clone()).expect("idem prints UTF-8")
}

fn stderr(output: &Output) -> String {
    String::from_utf8(output.stderr.clone()).expect("idem prints UTF-8")
}

/// The value of a `name: value` line of `idem pay`'s output.
fn field<'a>(out: &'a str, name: &str) -> Option<&'a str> {
    out.lines().find_map(|line| line.strip_prefix(name)?.strip_prefix(": "))
}

/// The last line: the server's answer.
fn answer(out: &str) -> serde_json::Value {
    serde_json::from_str(out.lines().last().expect("idem pay prints the answer last")).expect("the answer is JSON")
}

fn pay_args<'a>(server: &'a str, amount: &'a str, extra: &[&'a str]) -> Vec<&'a str> {
    let mut args =
        vec!["--server", server, "--amount", amount, "--currency", "USD", "--destination", "merchant-id-xyz"];
    args.extend_from_slice(extra);
    args
}

#[test]
fn paying_twice_with_one_key_replays_the_first_payment() {
    // Goal: the issue's demo: the same --key twice gives one payment, the second answer a replay of the first.
    let dir = tempfile::tempdir().expect("a temporary directory can be made");
    let server = ServerProcess::sqlite(&dir.path().join("idem.db"), &[]);
    let url = format!("http://{}", server.addr);
    let args = pay_args(&url, "100.00", &["--key", "demo-key-1", "--token", "alice"]);

    let first = idem_pay(&args);
    assert!(first.status.success(), "{}", stderr(&first));
    let first_out = stdout(&first);
    assert_eq!(field(&first_out, "status"), Some("201 Created"), "{first_out}");
    assert_eq!(field(&first_out, "key"), Some("demo-key-1"));
    assert_eq!(field(&first_out, "attempts"), Some("1"));
    assert_eq!(field(&first_out, "replayed"), Some("false"));

    let again = idem_pay(&args);
    assert!(again.status.success(), "{}", stderr(&again));
    let again_out = stdout(&again);
    assert_eq!(field(&again_out, "replayed"), Some("true"), "{again_out}");
    assert_eq!(answer(&again_out), answer(&first_out), "the replay is the first payment");
    assert!(first_out.contains(r#""amount":100.00"#), "the amount travels as exact decimal text: {first_out}");
}

#[test]
fn fresh_keys_reused_keys_and_refused_payments_are_reported() {
    // Goal: without --key a fresh UUID is printed; a reused key with another amount is a
    // readable error (exit 2); a payment the server refuses exits 1 with its problem.
    let dir = tempfile::tempdir().expect("a temporary directory can be made");
    let server = ServerProcess::sqlite(&dir.path().join("idem.db"), &[]);
    let url = format!("http://{}", server.addr);

    let fresh = idem_pay(&pay_args(&url, "5", &[]));
    assert!(fresh.status.success(), "{}", stderr(&fresh));
    let key = field(&stdout(&fresh), "key").expect("the key is printed").to_owned();
    assert_eq!(key.len(), 36, "a UUID: {key}");

    let reused = idem_pay(&pay_args(&url, "6", &["--key", &key]));
    assert_eq!(reused.status.code(), Some(2));
    assert!(stderr(&reused).contains("already used for a different request"), "{}", stderr(&reused));
    assert!(stderr(&reused).contains("key-reused"), "the server's problem is shown: {}", stderr(&reused));

    let refused = idem_pay(&pay_args(&url, "1.001", &[]));
    assert_eq!(refused.status.code(), Some(1));
    assert_eq!(field(&stdout(&refused), "status"), Some("400 Bad Request"));
    assert_eq!(answer(&stdout(&refused))["detail"], "amount must have at most 2 decimal places");
}

#[test]
fn bad_flags_and_an_unreachable_server_are_readable_errors() {
    // Goal: bad values name the flag and what is expected; no server means a bounded retry
    // and an error that gives the key to resend with; all exit non-zero.
    for (bad, expected) in [
        (pay_args("http://127.0.0.1:9", "1,00", &[]), "decimal number"),
        (pay_args("https://127.0.0.1:9", "1.00", &[]), "https is not supported"),
        (pay_args("http://127.0.0.1:9", "1.00", &["--key", "has space"]), "0x20"),
        (pay_args("http://127.0.0.1:9", "1.00", &["--attempts", "0"]), "attempts_max must be 1 to 100"),
    ] {
        let output = idem_pay(&bad);
        assert_eq!(output.status.code(), Some(2), "{bad:?}");
        assert!(stderr(&output).contains(expected), "{bad:?}: {}", stderr(&output));
    }

    let vacant = std::net::TcpListener::bind("127.0.0.1:0").expect("loopback port 0 can be bound");
    let url = format!("http://{}", vacant.local_addr().expect("a bound listener has an address"));
    drop(vacant); // nothing listens there now
    let output = idem_pay(&pay_args(&url, "1.00", &["--attempts", "2", "--key", "k-unreachable"]));
    assert_eq!(output.status.code(), Some(2));
    let message = stderr(&output);
    assert!(message.contains("gave up after 2 attempts"), "{message}");
    assert!(message.contains("resend with --key k-unreachable"), "{message}");
}
