//! The layer over real HTTP on loopback: requests that find their key's claim still held
//! (409 or waiting, a different body in flight) and executions that outlive their lease
//! (taken over, superseded, in separate and in atomic mode).

mod support;

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use idem_core::{ManualClock, Timestamp};
use idem_http::{ConflictPolicy, Outcome};
use support::{Harness, TestStore, serve};

#[tokio::test]
async fn concurrent_identical_requests_execute_once_and_the_others_conflict() {
    // Goal: 64 identical requests at once run the handler exactly once; while it runs,
    // the other 63 get 409 problem+json with Retry-After.
    let store = Arc::new(TestStore::default());
    let (server, counters, mut started) = serve(&store, |b| b).await;
    let server = Arc::new(server);
    let (replies_tx, mut replies) = tokio::sync::mpsc::unbounded_channel();
    for _ in 0..64 {
        let (server, replies_tx) = (Arc::clone(&server), replies_tx.clone());
        tokio::spawn(async move { replies_tx.send(server.post("/gated", "same", "{}").await) });
    }
    let mut conflicts = Vec::new();
    for _ in 0..63 {
        conflicts.push(replies.recv().await.expect("every request is answered"));
    }
    assert_eq!(started.recv().await, Some(1), "the one execution is held at the gate");
    counters.gate.add_permits(1);
    let executed = replies.recv().await.expect("the execution is answered");

    assert_eq!(executed.status, 201);
    assert_eq!(executed.text(), "run 1");
    for conflict in &conflicts {
        assert_eq!(conflict.status, 409);
        assert_eq!(conflict.problem()["type"], support::problem_type("in-progress"));
        let retry_after: u64 =
            conflict.header("retry-after").expect("409 carries Retry-After").parse().expect("seconds");
        assert_eq!(retry_after, 1, "the lease left (about 10 s), capped at the default 1 s");
        assert_eq!(conflict.header("idempotency-key"), Some("\"same\""));
    }
    assert_eq!(counters.runs(), 1);
}

#[tokio::test]
async fn conflict_retry_after_is_the_lease_left_capped_by_configuration() {
    // Goal: a 409's Retry-After is idem-core's rule: the time the claim still holds, never
    // more than the configured cap (so a retrying client is not told to wait out a whole
    // lease), rounded up to whole seconds.
    let store = Arc::new(TestStore::default());
    let clock = ManualClock::new(Timestamp::from_unix_ms(1_700_000_000_000));
    let layer_clock = clock.clone();
    let (server, counters, mut started) = serve(&store, move |b| {
        b.clock(layer_clock).lease(Duration::from_secs(20)).conflict_retry_after_max(Duration::from_secs(30))
    })
    .await;
    let server = Arc::new(server);
    let holder = {
        let server = Arc::clone(&server);
        tokio::spawn(async move { server.post("/gated", "held", "{}").await })
    };
    assert_eq!(started.recv().await, Some(1), "the first request holds the claim at the gate");
    let conflict = server.post("/gated", "held", "{}").await;
    assert_eq!(conflict.status, 409);
    assert_eq!(conflict.header("retry-after"), Some("20"), "the whole 20 s lease is left, under the 30 s cap");
    clock.advance(Duration::from_millis(12_500));
    let later = server.post("/gated", "held", "{}").await;
    assert_eq!(later.header("retry-after"), Some("8"), "7.5 s left, rounded up to whole seconds");
    let core_rule = |lease_left_ms, cap_s| {
        idem_core::reply::retry_after(Duration::from_millis(lease_left_ms), Duration::from_secs(cap_s)).as_secs()
    };
    assert_eq!(conflict.header("retry-after"), Some(core_rule(20_000, 30).to_string().as_str()));
    assert_eq!(later.header("retry-after"), Some(core_rule(7_500, 30).to_string().as_str()));
    counters.gate.add_permits(1);
    assert_eq!(holder.await.expect("the holder finishes").status, 201);
}

#[tokio::test]
async fn with_the_wait_policy_concurrent_requests_all_get_the_one_response() {
    // Goal: under ConflictPolicy::Wait, the 63 requests that find the claim taken wait for
    // it and replay the one execution's response.
    let store = Arc::new(TestStore::default());
    let (server, counters, mut started) =
        serve(&store, |b| b.conflict(ConflictPolicy::Wait(Duration::from_secs(60)))).await;
    let server = Arc::new(server);
    let mut requests = Vec::new();
    for _ in 0..64 {
        let server = Arc::clone(&server);
        requests.push(tokio::spawn(async move { server.post("/gated", "same", "{}").await }));
    }
    assert_eq!(started.recv().await, Some(1));
    // Every request has asked for the claim (63 found it taken) before the handler may finish.
    while store.claims.load(Ordering::SeqCst) < 64 {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    counters.gate.add_permits(1);
    let mut replies = Vec::new();
    for request in requests {
        replies.push(request.await.expect("request tasks do not panic"));
    }

    assert!(replies.iter().all(|reply| reply.status == 201 && reply.text() == "run 1"));
    assert_eq!(replies.iter().filter(|reply| reply.is_replay()).count(), 63);
    assert_eq!(counters.runs(), 1);
}

#[tokio::test]
async fn a_waiting_request_runs_the_handler_itself_when_the_holder_fails() {
    // Goal: under ConflictPolicy::Wait, when the request holding the claim fails (5xx,
    // claim released), the waiting request claims and runs the handler instead of
    // answering 409 or the failure.
    let store = Arc::new(TestStore::default());
    let (server, counters, mut started) =
        serve(&store, |b| b.conflict(ConflictPolicy::Wait(Duration::from_secs(60)))).await;
    let server = Arc::new(server);
    let holder = {
        let server = Arc::clone(&server);
        tokio::spawn(async move { server.post("/first-run-fails-gated", "k", "{}").await })
    };
    assert_eq!(started.recv().await, Some(1));
    let waiter = {
        let server = Arc::clone(&server);
        tokio::spawn(async move { server.post("/first-run-fails-gated", "k", "{}").await })
    };
    while store.claims.load(Ordering::SeqCst) < 2 {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    counters.gate.add_permits(1);
    let (holder, waiter) = (holder.await.expect("no panic"), waiter.await.expect("no panic"));

    assert_eq!(holder.status, 500);
    assert_eq!((waiter.status, waiter.text(), waiter.is_replay()), (http::StatusCode::CREATED, "run 2", false));
    assert_eq!(counters.runs(), 2);
}

#[tokio::test]
async fn a_different_body_while_in_flight_is_422_under_both_conflict_policies() {
    // Goal: SPEC: the same key with another body while the first request is still in
    // flight is a mismatch (422 at once, the handler does not run), not a 409, whether
    // conflicts are rejected or waited for.
    for conflict in [ConflictPolicy::Reject, ConflictPolicy::Wait(Duration::from_secs(5))] {
        let store = Arc::new(TestStore::default());
        let (server, counters, mut started) = serve(&store, |b| b.conflict(conflict)).await;
        let server = Arc::new(server);
        let holder = {
            let server = Arc::clone(&server);
            tokio::spawn(async move { server.post("/gated", "k", "{\"amount\":1}").await })
        };
        assert_eq!(started.recv().await, Some(1), "{conflict:?}");

        let other_body = server.post("/gated", "k", "{\"amount\":2}").await;
        assert_eq!(other_body.status, 422, "{conflict:?}: {other_body:?}");
        assert_eq!(other_body.problem()["type"], support::problem_type("key-reused"));
        assert_eq!(counters.finished.load(Ordering::SeqCst), 0, "{conflict:?}: answered while the holder is held");

        counters.gate.add_permits(1);
        assert_eq!(holder.await.expect("no panic").status, 201);
        assert_eq!(counters.runs(), 1, "{conflict:?}");
        assert_eq!(server.outcomes(), [Outcome::Mismatch, Outcome::Executed], "{conflict:?}");
    }
}

#[tokio::test]
async fn a_superseded_execution_whose_key_now_holds_another_request_answers_422() {
    // Goal: an execution whose claim lapsed and whose record then expired, while the key
    // was used for another body, answers per the core's rule: 422 (the key now belongs to
    // a different request), neither its own response nor a 409.
    let store = Arc::new(TestStore::default());
    let clock = ManualClock::new(Timestamp::from_unix_ms(1_700_000_000_000));
    let layer_clock = clock.clone();
    let (server, counters, mut started) =
        serve(&store, move |b| b.lease(Duration::from_secs(10)).retention(Duration::from_secs(11)).clock(layer_clock))
            .await;
    let server = Arc::new(server);
    let stale = {
        let server = Arc::clone(&server);
        tokio::spawn(async move { server.post("/first-run-gated", "k", "{\"amount\":1}").await })
    };
    assert_eq!(started.recv().await, Some(1));
    clock.advance(Duration::from_secs(12));
    let other = server.post("/first-run-gated", "k", "{\"amount\":2}").await;
    assert_eq!((other.status, other.text()), (http::StatusCode::CREATED, "run 2"), "the expired key is free");
    counters.gate.add_permits(1);
    let stale = stale.await.expect("request tasks do not panic");

    assert_eq!(stale.status, 422, "{stale:?}");
    assert_eq!(stale.problem()["type"], support::problem_type("key-reused"));
    assert_eq!(server.outcomes(), [Outcome::Executed, Outcome::Superseded]);
    let replay = server.post("/first-run-gated", "k", "{\"amount\":2}").await;
    assert!(replay.is_replay());
    assert_eq!(replay.text(), "run 2", "the record is the second request's");
}

/// Runs the lapsed-lease scenario on `path` and returns (stale reply, take-over reply).
///
/// Request A's handler is held; the clock passes A's lease; request B takes the claim
/// over, runs and completes; then A's handler finishes and its completion is refused.
async fn lapsed_lease_scenario(path: &str) -> (support::Reply, support::Reply, support::Counters, Harness) {
    let store = Arc::new(TestStore::default());
    let clock = ManualClock::new(Timestamp::from_unix_ms(1_700_000_000_000));
    let (server, counters, mut started) =
        serve(&store, |b| b.lease(Duration::from_secs(10)).retention(Duration::from_secs(3600)).clock(clock.clone()))
            .await;
    let server = Arc::new(server);

    let stale = {
        let server = Arc::clone(&server);
        let path = path.to_owned();
        tokio::spawn(async move { server.post(&path, "k", "{}").await })
    };
    assert_eq!(started.recv().await, Some(1));
    clock.advance(Duration::from_secs(11));
    let take_over = server.post(path, "k", "{}").await;
    counters.gate.add_permits(1);
    let stale = stale.await.expect("request tasks do not panic");
    let server = Arc::try_unwrap(server).unwrap_or_else(|_| unreachable!("the request task has finished"));
    (stale, take_over, counters, server)
}

#[tokio::test]
async fn a_handler_slower_than_its_lease_never_answers_its_own_response() {
    // Goal: separate mode: after the lease lapses, a retry takes over and runs the handler
    // (the documented separate-mode gap); the stale execution's completion is refused and
    // it answers the recorded response, never its own (G2, G3).
    let (stale, take_over, counters, server) = lapsed_lease_scenario("/first-run-gated").await;

    assert_eq!(
        (take_over.status, take_over.text(), take_over.is_replay()),
        (http::StatusCode::CREATED, "run 2", false)
    );
    assert_eq!(stale.text(), "run 2", "the stale request answers the recorded response");
    assert!(stale.is_replay());
    assert_eq!(counters.runs(), 2);
    assert_eq!(server.outcomes(), [Outcome::Executed, Outcome::Superseded]);
}

#[tokio::test]
async fn atomic_mode_stale_completion_is_refused_and_the_replay_answered() {
    // Goal: atomic mode: the stale handler's own completion is refused (its transaction
    // would roll back) and the layer answers the recorded response instead of its own.
    let (stale, take_over, counters, server) = lapsed_lease_scenario("/atomic-first-run-gated").await;

    assert_eq!(take_over.text(), "run 2");
    assert!(stale.is_replay());
    assert_eq!(stale.text(), "run 2");
    assert_eq!(counters.runs(), 2);
    assert_eq!(server.outcomes(), [Outcome::Executed, Outcome::Superseded]);
}

#[tokio::test]
async fn atomic_mode_handler_completion_is_not_repeated_by_the_layer() {
    // Goal: when the handler completed the record itself, the layer does not complete
    // again, and retries replay what the handler recorded.
    let store = Arc::new(TestStore::default());
    let (server, counters, _) = serve(&store, |b| b).await;

    let first = server.post("/atomic", "k", "{}").await;
    let retry = server.post("/atomic", "k", "{}").await;

    assert_eq!((first.status, first.text()), (http::StatusCode::CREATED, "run 1"));
    assert_eq!(store.completes.load(Ordering::SeqCst), 1, "only the handler's completion");
    assert!(retry.is_replay());
    assert_eq!(retry.body, first.body);
    assert_eq!(counters.runs(), 1);
}
