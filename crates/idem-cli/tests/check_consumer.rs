//! `idem check --consumer` as a user runs it: the real binary, its exit code, its output.

use std::process::{Command, Output};

/// A small consumer configuration that checks in milliseconds: one consumer, m1 published
/// twice, a crash and a lost ack.
const SMALL: &[&str] =
    &["check", "--consumer", "--consumers", "1", "--no-mismatch-publish", "--lapses", "0", "--threads", "1"];

fn idem(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_idem")).args(args).output().expect("the idem binary runs")
}

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

#[test]
fn correct_consumer_passes_with_exit_code_zero() {
    // Goal: every consumer guarantee holds on both brokers, shown in the table with the
    // configuration described; exit code 0.
    for broker in ["ack-wait", "channel-close"] {
        let output = idem(&[SMALL, &["--broker", broker]].concat());
        assert_eq!(output.status.code(), Some(0), "{}{}", stdout(&output), stderr(&output));
        let text = stdout(&output);
        assert!(text.contains(&format!("{broker} broker, 1 crash(es)")), "{text}");
        assert!(text.contains("G1         at most one side effect per message id              holds"), "{text}");
        assert!(text.contains("A1         no ack before the completion committed              holds"), "{text}");
        assert!(text.contains("reachable  a consumer crashes between commit and ack           reached"), "{text}");
        assert!(!text.contains("VIOLATED"), "{text}");
    }
}

#[test]
fn planted_consumer_bug_fails_with_a_numbered_story() {
    // Goal: the inbox bug (side effect apart from its dedup record) gives exit code 1, G1
    // violated, and a numbered story with the crash and the redelivery after the ack deadline.
    let output = idem(&[SMALL, &["--variant", "dedup-outside-transaction", "--no-duplicate-publish"]].concat());
    assert_eq!(output.status.code(), Some(1), "{}{}", stdout(&output), stderr(&output));
    let text = stdout(&output);
    assert!(text.contains("VIOLATED: at most one side effect per message id (G1)"), "{text}");
    assert!(text.contains("  3. consumer 1 crashes and restarts"), "{text}");
    assert!(
        text.contains("the ack deadline of copy 1 (m1 {\"amount\":100}) passes: the broker redelivers it"),
        "{text}"
    );
}

#[test]
fn bad_consumer_flags_are_readable_errors() {
    // Goal: an HTTP-only option with --consumer, a consumer option without it, an HTTP
    // variant for the consumer, and a count out of range each exit 2 with a readable message.
    let cases: [(&[&str], &str); 4] = [
        (&["check", "--consumer", "--clients", "2"], "'--consumer' cannot be used with '--clients <CLIENTS>'"),
        (&["check", "--broker", "ack-wait"], "--consumer"),
        (&["check", "--consumer", "--variant", "no-claim"], "unknown consumer variant \"no-claim\""),
        (&["check", "--consumer", "--consumers", "3"], "consumers must be between 1 and 2, got 3"),
    ];
    for (args, message) in cases {
        let output = idem(args);
        assert_eq!(output.status.code(), Some(2), "{args:?}: {}", stderr(&output));
        assert!(stderr(&output).contains(message), "{args:?}: {}", stderr(&output));
        assert!(!stderr(&output).contains("panicked"), "{args:?}: {}", stderr(&output));
    }
}
