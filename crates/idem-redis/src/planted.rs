//! The differential check has teeth: `store.lua` with one rule planted wrong (a fence
//! check dropped, a lease that lasts a millisecond too long, admission one record late)
//! is caught by `idem_core::differential` on the real Redis, while the script as shipped
//! passes the same cases.

use std::sync::atomic::{AtomicU64, Ordering};

use idem_core::differential::{self, LIMITS};
use proptest::test_runner::{Config, RngAlgorithm, TestError, TestRng, TestRunner};

use crate::script::{SCRIPT, planted};
use crate::{FenceSeed, RedisOptions, RedisStore};

/// Random operation sequences per check: the same, from a fixed seed, for every script.
const CASES: u32 = 256;

fn redis_url() -> String {
    std::env::var("IDEM_TEST_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".to_owned())
}

/// Runs the differential check on a store running `source`; `Err` names the first
/// sequence (shrunk a little) on which it answered unlike `MemoryStore`.
fn differential_check(source: &str) -> Result<(), TestError<Vec<differential::Op>>> {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("a runtime starts");
    let config = Config { cases: CASES, max_shrink_iters: 64, failure_persistence: None, ..Config::default() };
    let mut runner = TestRunner::new_with_rng(config, TestRng::deterministic_rng(RngAlgorithm::ChaCha));
    runner.run(&differential::ops(), |ops| {
        let memory = differential::reference();
        let prefix = format!("idem-planted-{}-{}", std::process::id(), NEXT.fetch_add(1, Ordering::Relaxed));
        let (expected, actual) = runtime.block_on(async {
            let options = RedisOptions::new(&redis_url())
                .expect("the test URL parses")
                .prefix(&prefix)
                .expect("a valid prefix")
                .records_max(LIMITS.records_max)
                .stored_bytes_max(LIMITS.stored_bytes_max)
                .fence_seed(FenceSeed::First);
            let redis = RedisStore::open(options).await.expect("these tests need Redis (see tests/common)");
            let redis = redis.with_script(source.to_owned()).await;
            let expected = differential::run(&memory, &ops).await;
            let actual = differential::run(&redis, &ops).await;
            redis.clear().await.expect("the case's keys are deleted");
            (expected, actual)
        });
        differential::assert_same(&ops, &expected, &actual)
    })
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
        "if lt(now, record.lease) then return { 'conflict', record.lease } end",
        "if not lt(record.lease, now) then return { 'conflict', record.lease } end",
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
