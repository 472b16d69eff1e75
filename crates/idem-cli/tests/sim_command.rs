//! `idem sim` as a user runs it: the real binary, its exit code, its output.

use std::process::{Command, Output};

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
fn a_sweep_of_the_shipped_code_passes_and_reaches_every_targeted_path() {
    // Goal: exit code 0 needs no failure and every coverage counter above zero; the
    // summary table names runs, failures, simulated time and each counter.
    let output = idem(&["sim", "--seeds", "0..40", "--threads", "2"]);
    let table = stdout(&output);
    assert_eq!(output.status.code(), Some(0), "{table}{}", stderr(&output));
    for row in ["runs                          40", "failures                      0", "simulated seconds", "take-over"]
    {
        assert!(table.contains(row), "{row:?} missing from:\n{table}");
    }
    assert!(!table.contains("NOT REACHED"), "{table}");
}

#[test]
fn separate_mode_passes_and_reports_its_window_as_expected_counterexamples() {
    // Goal: in separate mode the second payments of SPEC's window are counted apart and do
    // not fail the sweep; the table shows the scenario's own counters, not the others'.
    let output = idem(&["sim", "--seeds", "0..40", "--scenario", "separate", "--threads", "2"]);
    let table = stdout(&output);
    assert_eq!(output.status.code(), Some(0), "{table}{}", stderr(&output));
    for row in ["expected counterexamples", "separate-mode window (expected)", "replay with repeated headers"] {
        assert!(table.contains(row), "{row:?} missing from:\n{table}");
    }
    assert!(!table.contains("records purged"), "another scenario's counter is shown:\n{table}");
}

#[test]
fn a_planted_bug_fails_the_sweep_and_prints_the_command_that_replays_it() {
    // Goal: a violation gives exit code 1, its story on stderr, and the replay command.
    let output = idem(&["sim", "--seeds", "0..3", "--variant", "unscoped-keys", "--threads", "1"]);
    assert_eq!(output.status.code(), Some(1), "{}{}", stdout(&output), stderr(&output));
    assert!(stdout(&output).contains("failing seeds: 0, 1, 2"), "{}", stdout(&output));
    let replay = "idem sim --seed 0 --scenario default --variant unscoped-keys --trace";
    assert!(stderr(&output).contains(replay), "{}", stderr(&output));
    assert!(stderr(&output).contains("G4"), "{}", stderr(&output));
}

#[test]
fn replaying_a_seed_prints_the_same_trace_every_time() {
    // Goal: `--seed N --trace` is byte-for-byte repeatable, so a failing seed can be studied.
    let args = ["sim", "--seed", "183", "--variant", "stale-answers-own", "--trace"];
    let first = idem(&args);
    let second = idem(&args);
    assert_eq!(first.status.code(), Some(1), "seed 183 catches stale-answers-own: {}", stdout(&first));
    assert_eq!(stdout(&first), stdout(&second));
    assert!(stdout(&first).contains("invoke"), "the trace lists the client invocations: {}", stdout(&first));
    assert!(stdout(&first).contains("FAILED"), "{}", stdout(&first));
}

#[test]
fn bad_seed_ranges_and_names_are_readable_errors() {
    // Goal: bad options exit with code 2 and say what is accepted, never panic.
    for (args, message) in [
        (&["sim", "--seeds", "5..3"][..], "END must be greater than FIRST"),
        (&["sim", "--seeds", "ten"][..], "is not FIRST..END"),
        (&["sim", "--scenario", "nope"][..], "expected one of: default, volatile-store"),
        (&["sim", "--variant", "nope"][..], "no-fence-check"),
        (&["sim", "--trace"][..], "--seed"),
    ] {
        let output = idem(args);
        assert_eq!(output.status.code(), Some(2), "{args:?}: {}", stderr(&output));
        assert!(stderr(&output).contains(message), "{args:?}: {}", stderr(&output));
        assert!(!stderr(&output).contains("panicked"), "{args:?}: {}", stderr(&output));
    }
}

#[test]
fn the_consumer_scenarios_pass_and_a_planted_inbox_is_caught() {
    // Goal: `idem sim --scenario consumer*` runs the real consumer over the simulated broker
    // as a user runs it: the shipped code passes with its counters reached; the hand-rolled
    // inbox (dedup record written after the side effect, outside its transaction) fails
    // with exit code 1 and the command that replays it.
    for scenario in ["consumer", "consumer-channel-close"] {
        let output = idem(&["sim", "--seeds", "0..20", "--scenario", scenario, "--threads", "2"]);
        let table = stdout(&output);
        assert_eq!(output.status.code(), Some(0), "{scenario}: {table}{}", stderr(&output));
        assert!(table.contains("failures                      0"), "{scenario}: {table}");
        assert!(table.contains("replay acked"), "{scenario}: {table}");
    }
    let output = idem(&["sim", "--seeds", "0..20", "--scenario", "consumer", "--variant", "dedup-outside-transaction"]);
    assert_eq!(output.status.code(), Some(1), "{}{}", stdout(&output), stderr(&output));
    let replay = "--scenario consumer --variant dedup-outside-transaction --trace";
    assert!(stderr(&output).contains(replay), "{}", stderr(&output));
    assert!(stderr(&output).contains("G1"), "{}", stderr(&output));
}
