//! `idem check` as a user runs it: the real binary, its exit code, its output.

use std::process::{Command, Output};

/// A tiny configuration that checks in milliseconds.
const SMALL: &[&str] =
    &["--clients", "1", "--servers", "1", "--crashes", "0", "--lapses", "0", "--no-key-reuse", "--threads", "1"];

fn idem(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_idem")).args(args).output().expect("the idem binary runs")
}

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// The guarantee and verdict of `property`'s row in the table (columns are padded to the
/// longest property, so rows are split on whitespace, not matched by exact spacing).
fn verdict_of<'t>(table: &'t str, property: &str) -> Option<(&'t str, &'t str)> {
    table.lines().map(str::trim_start).find_map(|line| {
        let guarantee = line.split_whitespace().next()?;
        let rest = line[guarantee.len()..].trim();
        let verdict = rest.strip_prefix(property)?.trim();
        Some((guarantee, verdict))
    })
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

#[test]
fn correct_store_passes_with_exit_code_zero() {
    // Goal: every guarantee holds for the correct store, shown in the table, exit code 0.
    let output = idem(&[&["check"], SMALL].concat());
    assert_eq!(output.status.code(), Some(0), "{}{}", stdout(&output), stderr(&output));
    let table = stdout(&output);
    assert!(verdict_of(&table, "at most one execution per record id") == Some(("G1", "holds")), "{table}");
    assert!(!table.contains("VIOLATED"), "{table}");
}

#[test]
fn planted_bug_fails_with_a_numbered_story() {
    // Goal: a violation gives exit code 1 and a readable, numbered counterexample.
    let output = idem(&[&["check", "--variant", "no-claim"], SMALL].concat());
    assert_eq!(output.status.code(), Some(1), "{}{}", stdout(&output), stderr(&output));
    let text = stdout(&output);
    assert!(text.contains("VIOLATED: at most one execution per record id (G1)"), "{text}");
    assert!(
        text.contains(
            "  1. client 1 (alice) sends POST /payments key=k1 amount=100 (deadline t=30s): attempt 1 of 20 to server 1"
        ),
        "{text}"
    );
}

#[test]
fn unknown_variant_is_a_readable_error() {
    // Goal: a misspelt variant names the accepted ones instead of panicking.
    let output = idem(&["check", "--variant", "no-such-bug"]);
    assert_eq!(output.status.code(), Some(2));
    let message = stderr(&output);
    assert!(message.contains("unknown variant \"no-such-bug\""), "{message}");
    assert!(message.contains("no-fence-check"), "{message}");
    assert!(!message.contains("panicked"), "{message}");
}

#[test]
fn out_of_range_count_is_a_readable_error() {
    // Goal: counts beyond the model's bounds are refused with the bound named.
    let output = idem(&["check", "--clients", "9"]);
    assert_eq!(output.status.code(), Some(2));
    assert!(stderr(&output).contains("clients must be between 1 and 4, got 9"), "{}", stderr(&output));
}

#[test]
fn symmetry_under_bfs_is_refused() {
    // Goal: options stateright would silently ignore are refused instead.
    let output = idem(&["check", "--strategy", "bfs", "--symmetry"]);
    assert_eq!(output.status.code(), Some(2));
    assert!(stderr(&output).contains("symmetry reduction needs the DFS strategy"), "{}", stderr(&output));
}

#[test]
fn a_write_outside_the_claims_transaction_is_caught_after_a_5xx() {
    // Goal: the planted handler that writes outside the claim's transaction and then fails
    // (503) pays twice: exit code 1, G1 violated, the failure after the write in the story.
    let output = idem(&[&["check", "--variant", "write-outside-transaction", "--failures", "1"], SMALL].concat());
    assert_eq!(output.status.code(), Some(1), "{}{}", stdout(&output), stderr(&output));
    let text = stdout(&output);
    assert!(text.contains("VIOLATED: at most one execution per record id (G1)"), "{text}");
    assert!(text.contains("fails after its side effect committed (503)"), "{text}");
}

#[test]
fn purges_and_skewed_clocks_are_options_and_hold_on_the_correct_store() {
    // Goal: --purges and --skew reach the model, are described, and the correct store holds.
    // SMALL without its "--servers 1".
    let args = [&["check", "--clients", "1", "--servers", "2", "--purges", "1", "--skew", "2s"], &SMALL[4..]].concat();
    let output = idem(&args);
    assert_eq!(output.status.code(), Some(0), "{}{}", stdout(&output), stderr(&output));
    let text = stdout(&output);
    assert!(text.contains("1 purge(s), 0 forget(s), clock skew 2s"), "{text}");
    assert!(text.contains("a purge removes only expired records"), "{text}");
}
