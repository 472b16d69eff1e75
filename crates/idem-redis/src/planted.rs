//! The differential check has teeth: `store.lua` with one rule planted wrong (a fence
//! check dropped, a lease that lasts a millisecond too long, admission one record late, a
//! forget that leaves the fence counter, a purge that deletes instead of leaving a
//! tombstone, a claim that ignores the earlier fingerprint, a tombstone's usage counted
//! wrong) is caught by `idem_core::differential` on the real Redis, while the script as shipped
//! passes the same cases.

use std::sync::atomic::{AtomicU64, Ordering};

use idem_core::differential::{self, LIMITS};
use idem_core::{Fence, KeyAdmin, LIST_LIMIT_MAX, ListQuery, Page};
use proptest::prop_assert_eq;
use proptest::test_runner::{Config, RngAlgorithm, TestCaseError, TestError, TestRng, TestRunner};

use crate::script::{SCRIPT, planted};
use crate::{FenceSeed, RedisOptions, RedisStore};

/// Random operation sequences per check: the same, from a fixed seed, for every script.
const CASES: u32 = 256;

/// `IDEM_TEST_REDIS_URL`, else a throw-away `redis-server` of this test process.
fn redis_url() -> String {
    idem_testkit::redis_url()
}

/// Runs the differential check on a store running `source`; `Err` names the first
/// sequence (shrunk a little) on which it answered unlike `MemoryStore`.
fn differential_check(source: &str) -> Result<(), TestError<Vec<differential::Op>>> {
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("a runtime starts");
    let config = Config { cases: CASES, max_shrink_iters: 64, failure_persistence: None, ..Config::default() };
    let mut runner = TestRunner::new_with_rng(config, TestRng::deterministic_rng(RngAlgorithm::ChaCha));
    runner.run(&differential::ops(), |ops| one_case(&runtime, source, &ops))
}

/// One sequence on a store running `source` and on `MemoryStore`: the same answers, and
/// the same usage, fence counter and listing at the end.
fn one_case(runtime: &tokio::runtime::Runtime, source: &str, ops: &[differential::Op]) -> Result<(), TestCaseError> {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let memory = differential::reference();
    let prefix = format!("idem-planted-{}-{}", std::process::id(), NEXT.fetch_add(1, Ordering::Relaxed));
    let (expected, actual, ends) = runtime.block_on(async {
        let options = RedisOptions::new(&redis_url())
            .expect("the test URL parses")
            .prefix(&prefix)
            .expect("a valid prefix")
            .records_max(LIMITS.records_max)
            .stored_bytes_max(LIMITS.stored_bytes_max)
            .fence_seed(FenceSeed::First);
        let redis = RedisStore::open(options).await.expect("these tests need Redis (see tests/common)");
        let redis = redis.with_script(source.to_owned()).await;
        let expected = differential::run(&memory, ops).await;
        let actual = differential::run(&redis, ops).await;
        let memory_end = (memory.usage(), memory.snapshot().counters().next_fence, listing(&memory).await);
        let redis_usage = redis.usage().await.expect("usage is readable");
        // A run without any claim never created the counter; memory's is then at its start.
        let redis_fence = redis.next_fence().await.expect("the counter is readable").unwrap_or(Fence::FIRST);
        let ends = (memory_end, (redis_usage, redis_fence, listing(&redis).await));
        redis.clear().await.expect("the case's keys are deleted");
        (expected, actual, ends)
    });
    differential::assert_same(ops, &expected, &actual)?;
    prop_assert_eq!(&ends.0, &ends.1, "usage, fence counter and listing after the case");
    Ok(())
}

/// A completed record whose retention ended, purged inside its tombstone period, then
/// read: the sequence that reaches a purge's shrink, which random sequences reach rarely.
fn tombstone_sequence() -> Vec<differential::Op> {
    use differential::Op;
    vec![
        Op::Claim { id: 0, fingerprint: 0 },
        Op::Complete { id: 0, fence: 1, body_bytes: 10 },
        Op::Advance { ms: 4_000 },
        Op::Purge { batch_max: 2 },
        Op::Get { id: 0 },
        Op::Claim { id: 0, fingerprint: 0 },
    ]
}

/// Runs the fixed `ops` against the store running `source`: whether it answered like
/// MemoryStore.
fn fixed_case(source: &str, ops: &[differential::Op]) -> Result<(), TestCaseError> {
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("a runtime starts");
    one_case(&runtime, source, ops)
}

/// Every record a store lists after a case (six ids at most, so one page).
async fn listing<S: KeyAdmin>(store: &S) -> Page {
    let everything = ListQuery::new(LIST_LIMIT_MAX).expect("a valid limit");
    store.list(&everything).await.expect("the store lists")
}

fn assert_caught(source: &str) {
    match differential_check(source) {
        Err(TestError::Fail(reason, ops)) => {
            assert!(!ops.is_empty(), "a failing sequence has operations: {reason}");
        }
        Err(TestError::Abort(reason)) => panic!("the check aborted instead of finding the bug: {reason}"),
        Ok(()) => panic!("the differential check missed the planted bug in {CASES} cases"),
    }
}

#[test]
fn shipped_script_passes_the_same_cases() {
    // Goal: the control for the planted bugs below: on the very cases that catch them,
    // the script as shipped answers like MemoryStore.
    if let Err(error) = differential_check(SCRIPT) {
        panic!("the shipped script differs from idem-core: {error}");
    }
}

#[test]
fn dropped_fence_check_is_caught() {
    // Goal: a script that takes any fence as the current claim's (G3 broken: a stale or
    // made-up fence completes, renews or releases) answers unlike idem-core.
    assert_caught(&planted("if record.fence == fence then return nil end", "if true then return nil end"));
}

#[test]
fn lease_one_millisecond_too_long_is_caught() {
    // Goal: a script that still counts a claim in flight at the very millisecond its
    // lease ends (now <= lease instead of now < lease) answers Conflict where idem-core
    // takes over.
    assert_caught(&planted(
        "if lt(now, record.lease) then return { 'conflict',",
        "if not lt(record.lease, now) then return { 'conflict',",
    ));
}

#[test]
fn admission_one_record_late_is_caught() {
    // Goal: a script that admits a claim at records_max records (> instead of >=) grows
    // past the limit where idem-core answers Full.
    assert_caught(&planted(
        "if not record and records >= records_max then",
        "if not record and records > records_max then",
    ));
}

#[test]
fn forget_without_moving_the_fence_is_caught() {
    // Goal: a forget that removes the record but leaves the fence counter where it was
    // (issue 22: "forget is fenced") answers later claims with fences unlike idem-core's.
    assert_caught(&planted("write_counters(c, true, -1, -gone.bytes)", "write_counters(c, false, -1, -gone.bytes)"));
}

#[test]
fn purge_that_deletes_instead_of_leaving_a_tombstone_is_caught() {
    // Goal (on a fixed sequence: random ones rarely purge inside a tombstone period): a
    // purge that forgets a completed record at its retention's end although its
    // policy keeps a tombstone (so a late retry would run again) answers unlike idem-core.
    let source = planted("if record.state == 'c' and record.tomb ~= '' and lt(now, record.tomb) then", "if false then");
    assert!(fixed_case(&source, &tombstone_sequence()).is_err(), "the shrink to a tombstone is checked");
    assert!(fixed_case(SCRIPT, &tombstone_sequence()).is_ok(), "the shipped script passes the same sequence");
}

#[test]
fn claim_ignoring_the_earlier_fingerprint_is_caught() {
    // Goal: a claim that compares only the request's own fingerprint (a record written
    // under the byte fingerprint turns into a mismatch after a route's upgrade to
    // semantic fingerprints) answers unlike idem-core.
    assert_caught(&planted("(earlier == '' or record.fp ~= earlier)", "true"));
}

#[test]
fn tombstone_usage_counted_wrong_is_caught() {
    // Goal: a tombstone whose bytes are counted one byte off drifts the usage totals
    // (and admission) away from idem_core::usage::stored_bytes.
    let source =
        planted("bytes = #id_field - digits_len - 1 + tomb_fixed", "bytes = #id_field - digits_len + tomb_fixed");
    assert!(fixed_case(&source, &tombstone_sequence()).is_err(), "a tombstone's usage is checked");
}
