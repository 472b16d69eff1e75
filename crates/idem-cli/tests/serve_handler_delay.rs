//! `idem serve --handler-delay`: the payment handler waits inside its claim, so a duplicate
//! sent while the first request is in the handler meets the claim in flight and gets the
//! in-flight answer (409, SPEC "HTTP behaviour"); and the flag is bounded.
//!
//! The server runs on the real PostgreSQL (a schema of its own, dropped at the end), which
//! lets the test see the claim in flight in the database instead of guessing from the
//! clock: it sends the duplicate only once the record is `in_flight`, and the first request
//! still answers afterwards. Without the delay inside the claim the first request would
//! complete before the duplicate (or before the record is ever seen in flight).

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

/// The state of `key`'s record in `schema`, if there is one.
async fn record_state(db: &mut sqlx::PgConnection, schema: &str, key: &str) -> Option<String> {
    let sql = format!("SELECT state FROM \"{schema}\".idem_records WHERE idem_key = $1");
    sqlx::query_scalar(AssertSqlSafe(sql)).bind(key).fetch_optional(db).await.expect("the records table reads")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_duplicate_sent_while_the_first_is_in_the_delayed_handler_gets_409() {
    // Goal: the delay is inside the claim: after the first request's record is seen in
    // flight, a duplicate with the same key gets 409, the first then answers 201 (executed,
    // not replayed) and a later retry replays it.
    let schema = Schema::fresh();
    let server = ServerProcess::start(&schema.url(), &["--handler-delay", "500ms"]);
    let log = server.startup_log.join("\n");
    assert!(log.contains("test knob") && log.contains("500ms"), "the start says the knob is on: {log}");
    let addr = server.addr;
    let mut db = sqlx::PgConnection::connect(&postgres_url()).await.expect("PostgreSQL answers");

    let first = tokio::spawn(pay(addr, "delay-1"));
    loop {
        assert!(!first.is_finished(), "the first request finished before its claim was seen in flight");
        if record_state(&mut db, &schema.name, "delay-1").await.as_deref() == Some("in_flight") {
            break;
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
    assert_eq!(record_state(&mut db, &schema.name, "delay-1").await.as_deref(), Some("completed"));
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
