//! `idem serve --handler-delay`: the payment handler waits inside its claim, so a duplicate
//! sent while the first request is in the handler meets the claim in flight and gets the
//! in-flight answer (409, SPEC "HTTP behaviour"); and the flag is bounded.
//!
//! The server runs on the real PostgreSQL (a schema of its own, dropped at the end), which
//! lets the test see the handler waiting in the database instead of guessing from the
//! clock: with a 1 s lease the layer renews the claim every third of a second while the
//! handler runs, so the test waits until it sees the record still in flight with its lease
//! renewed, and only then sends the duplicate. Without a delay inside the claim the first
//! request completes long before any renewal, and the test fails saying so.

mod replicas;
mod support;

use std::process::Command;
use std::time::Duration;

use http::Method;
use replicas::{Schema, postgres_url};
use sqlx::{AssertSqlSafe, Connection as _};
use support::{Reply, ServerProcess, send};

const BODY: &str = r#"{"amount": 12.00, "currency": "EUR", "destination": "merchant-delay"}"#;

async fn pay(addr: std::net::SocketAddr, key: &str) -> Result<Reply, String> {
    let headers = [("idempotency-key", key), ("authorization", "Bearer delayed"), ("content-type", "application/json")];
    send(addr, Method::POST, "/payments", &headers, BODY).await
}

/// The state of `key`'s record in `schema` and its lease's end (unix ms, while in flight),
/// if there is a record.
async fn record(db: &mut sqlx::PgConnection, schema: &str, key: &str) -> Option<(String, Option<i64>)> {
    let sql = format!("SELECT state, lease_expires_at FROM \"{schema}\".idem_records WHERE idem_key = $1");
    sqlx::query_as(AssertSqlSafe(sql)).bind(key).fetch_optional(db).await.expect("the records table reads")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_duplicate_sent_while_the_first_is_in_the_delayed_handler_gets_409() {
    // Goal: the delay is inside the claim: while the first request's handler waits (its
    // record seen in flight, and still in flight after a renewal of its lease), a duplicate
    // with the same key gets 409; the first then answers 201 (executed, not replayed) and a
    // later retry replays it.
    let schema = Schema::fresh();
    let server = ServerProcess::start(&schema.url(), &["--lease", "1s", "--handler-delay", "1s"]);
    let log = server.startup_log.join("\n");
    assert!(log.contains("test knob") && log.contains("1s"), "the start says the knob is on: {log}");
    let addr = server.addr;
    let mut db = sqlx::PgConnection::connect(&postgres_url()).await.expect("PostgreSQL answers");

    let first = tokio::spawn(pay(addr, "delay-1"));
    let mut claimed_until = None;
    loop {
        assert!(!first.is_finished(), "the first request finished before its claim was seen renewed in flight");
        if let Some((state, Some(lease_end))) = record(&mut db, &schema.name, "delay-1").await {
            assert_eq!(state, "in_flight");
            match claimed_until {
                None => claimed_until = Some(lease_end),
                Some(claimed) if lease_end > claimed => break,
                Some(_) => {}
            }
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let duplicate = pay(addr, "delay-1").await.expect("the duplicate is answered");
    let first = first.await.expect("the first request's task ends").expect("the first request is answered");
    let retry = pay(addr, "delay-1").await.expect("the retry is answered");

    assert_eq!(duplicate.status, 409, "in flight: {:?}", String::from_utf8_lossy(&duplicate.body));
    assert_eq!((first.status, first.is_replay()), (201, false), "the first executed");
    assert_eq!((retry.status, retry.is_replay()), (201, true), "the retry replays");
    assert_eq!(retry.header("location"), first.header("location"));
    assert_eq!(record(&mut db, &schema.name, "delay-1").await.map(|(state, _)| state).as_deref(), Some("completed"));
}

#[test]
fn a_delay_past_a_minute_or_not_a_duration_is_refused_with_exit_2() {
    // Goal: the knob is bounded: more than 60 s, or text that is not a duration, stops the
    // start with exit code 2 and says why, before anything is opened.
    for (given, expected) in [("61s", "at most 1m"), ("soon", "--handler-delay")] {
        let output = Command::new(env!("CARGO_BIN_EXE_idem"))
            .args(["serve", "--listen", "127.0.0.1:0", "--store", "memory://", "--handler-delay", given])
            .env_remove("IDEM_HANDLER_DELAY")
            .output()
            .expect("the idem binary runs");
        let message = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(2), "{given}: {message}");
        assert!(message.contains(expected), "{given}: {message}");
    }
}
