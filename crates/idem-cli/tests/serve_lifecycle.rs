//! `idem serve`'s key lifecycle flags (SPEC "Key lifecycle"): `--admin-token-file` (the
//! key administration API at /admin), `--tombstone` and `--execution-max`, on the real
//! binary over real HTTP on loopback, with a SQLite store and the system clock.

mod support;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use http::Method;
use support::{Reply, ServerProcess, send};

const PAYMENT: &str = r#"{"amount": 12.50, "currency": "EUR", "destination": "merchant-7"}"#;
const OPERATOR_TOKEN: &str = "op-7f3a9c2e-admin";

fn token_file(dir: &Path, content: &str) -> PathBuf {
    let path = dir.join("admin-token");
    std::fs::write(&path, content).expect("the token file can be written");
    path
}

fn json(reply: &Reply) -> serde_json::Value {
    serde_json::from_slice(&reply.body).unwrap_or_else(|error| panic!("{error}: {:?}", reply.body))
}

async fn pay(server: &ServerProcess, key: &str) -> Reply {
    let headers = [("idempotency-key", key), ("content-type", "application/json"), ("authorization", "Bearer alice")];
    send(server.addr, Method::POST, "/payments", &headers, PAYMENT).await.expect("the server answers")
}

async fn admin(server: &ServerProcess, method: Method, path: &str, token: Option<&str>) -> Reply {
    let bearer = token.map(|token| format!("Bearer {token}"));
    let headers: Vec<(&str, &str)> = bearer.iter().map(|value| ("authorization", value.as_str())).collect();
    send(server.addr, method, path, &headers, "").await.expect("the server answers")
}

async fn payments_of_alice(server: &ServerProcess) -> usize {
    let listed = send(server.addr, Method::GET, "/payments", &[("authorization", "Bearer alice")], "")
        .await
        .expect("the server answers");
    json(&listed)["data"].as_array().map_or(0, Vec::len)
}

fn idem_serve(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_idem"))
        .args(["serve", "--listen", "127.0.0.1:0", "--store", "memory://"])
        .args(args)
        .output()
        .expect("the idem binary runs")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_admin_api_lists_and_forgets_keys_for_the_token_only() {
    // Goal: with --admin-token-file, /admin/keys refuses a request without the token (401
    // problem), lists the key a payment used for the operator, and a DELETE of the listed
    // id forgets it (fenced), so the same request then runs again: a second payment. The
    // token never reaches the log; the mount does.
    let dir = tempfile::tempdir().expect("a temp dir can be made");
    let token_path = token_file(dir.path(), &format!("{OPERATOR_TOKEN}\n"));
    let token_arg = token_path.to_str().expect("a UTF-8 temp path");
    let server = ServerProcess::sqlite(&dir.path().join("idem.db"), &["--admin-token-file", token_arg]);
    assert!(
        server.startup_log.iter().any(|line| line.contains("admin API mounted at /admin")),
        "{:#?}",
        server.startup_log
    );

    let first = pay(&server, "pay-1").await;
    assert_eq!(first.status, 201);

    let refused = admin(&server, Method::GET, "/admin/keys", None).await;
    assert_eq!(refused.status, 401);
    assert_eq!(refused.header("content-type"), Some("application/problem+json"));
    assert_eq!(refused.header("www-authenticate"), Some("Bearer"));
    assert!(json(&refused)["type"].as_str().is_some_and(|kind| kind.ends_with("unauthorized")), "{refused:?}");
    let guessed = admin(&server, Method::GET, "/admin/keys", Some("op-guess")).await;
    assert_eq!(guessed.status, 401);

    let listed = admin(&server, Method::GET, "/admin/keys", Some(OPERATOR_TOKEN)).await;
    assert_eq!(listed.status, 200, "{listed:?}");
    let listed = json(&listed);
    let records = listed["data"].as_array().expect("a list of records");
    assert_eq!(records.len(), 1, "{listed}");
    assert_eq!((&records[0]["key"], &records[0]["state"]), (&"pay-1".into(), &"completed".into()), "{listed}");
    let id = records[0]["id"].as_str().expect("each record has an id");

    let forgot = admin(&server, Method::DELETE, &format!("/admin/keys/{id}"), Some(OPERATOR_TOKEN)).await;
    assert_eq!(forgot.status, 200, "{forgot:?}");
    assert_eq!(json(&forgot)["key"], "pay-1");

    let again = pay(&server, "pay-1").await;
    assert_eq!(again.status, 201);
    assert!(!again.is_replay(), "a forgotten key runs again");
    assert_ne!(json(&first)["payment_id"], json(&again)["payment_id"]);
    assert_eq!(payments_of_alice(&server).await, 2);

    let startup = server.startup_log.clone();
    let log = server.kill_and_read_log();
    assert!(!startup.iter().chain(&log).any(|line| line.contains(OPERATOR_TOKEN)), "the token was logged");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_retention_a_tombstone_answers_410_key_expired() {
    // Goal: with --tombstone, the same request after its retention (1 s here, which needs a
    // lease under it: a policy's retention must outlast its lease) gets 410 `key-expired`
    // with Idempotency-Expires and runs no second payment; the admin API shows the
    // tombstone's end.
    let dir = tempfile::tempdir().expect("a temp dir can be made");
    let token_path = token_file(dir.path(), OPERATOR_TOKEN);
    let token_arg = token_path.to_str().expect("a UTF-8 temp path");
    let args = ["--lease", "300ms", "--retention", "1s", "--tombstone", "1h", "--admin-token-file", token_arg];
    let server = ServerProcess::sqlite(&dir.path().join("idem.db"), &args);

    assert_eq!(pay(&server, "pay-t").await.status, 201);
    // The binary reads the system clock: wait out the 1 s retention, with a margin.
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    let gone = pay(&server, "pay-t").await;

    assert_eq!(gone.status, 410, "{gone:?}");
    assert!(json(&gone)["type"].as_str().is_some_and(|kind| kind.ends_with("key-expired")), "{gone:?}");
    assert!(gone.header("idempotency-expires").is_some(), "{:?}", gone.headers);
    assert_eq!(payments_of_alice(&server).await, 1, "a tombstone never runs the request again");
    let listed = json(&admin(&server, Method::GET, "/admin/keys", Some(OPERATOR_TOKEN)).await);
    // Until a purge turns it into a tombstone, the record is stored completed, past its
    // expiry, with the tombstone's end.
    assert!(listed["data"][0]["tombstone_until"].is_string(), "{listed}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_execution_ceiling_frees_a_hung_handlers_key() {
    // Goal: --execution-max reaches the layer: a handler held 2 s (--handler-delay) stops
    // renewing its 300 ms lease after 200 ms, so a retry at 900 ms takes the key over (not
    // a 409), and the held handler's late completion is refused: one payment in all.
    let dir = tempfile::tempdir().expect("a temp dir can be made");
    let args = ["--lease", "300ms", "--execution-max", "200ms", "--handler-delay", "2s"];
    let server = ServerProcess::sqlite(&dir.path().join("idem.db"), &args);
    let addr = server.addr;
    let held = tokio::spawn(async move {
        let headers =
            [("idempotency-key", "pay-h"), ("content-type", "application/json"), ("authorization", "Bearer alice")];
        send(addr, Method::POST, "/payments", &headers, PAYMENT).await
    });
    tokio::time::sleep(Duration::from_millis(900)).await;
    let retry = pay(&server, "pay-h").await;
    let held = held.await.expect("the task does not panic").expect("the server answers");

    assert_eq!(retry.status, 201, "the retry took the key over: {retry:?}");
    assert!(!retry.is_replay());
    assert_ne!(held.status, 201, "the held handler's completion is refused: {held:?}");
    assert_eq!(payments_of_alice(&server).await, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_token_file_admin_is_the_ordinary_404() {
    // Goal: the admin API is opt-in: without --admin-token-file, /admin/keys is the app's
    // own 404, whatever token is sent.
    let server = ServerProcess::start("memory://", &[]);
    let answer = admin(&server, Method::GET, "/admin/keys", Some(OPERATOR_TOKEN)).await;
    assert_eq!(answer.status, 404);
    assert!(json(&answer)["detail"].as_str().is_some_and(|detail| detail.contains("no route")), "{answer:?}");
    assert!(!server.startup_log.iter().any(|line| line.contains("admin API")), "{:#?}", server.startup_log);
}

#[test]
fn refused_lifecycle_flags_exit_2_with_a_readable_message() {
    // Goal: an empty token file, an unreadable one, a zero or too long tombstone and an
    // execution ceiling under one renewal interval each stop `idem serve` with exit code 2
    // and a message naming the flag or file and the bound, never a panic.
    let dir = tempfile::tempdir().expect("a temp dir can be made");
    let empty = token_file(dir.path(), " \n");
    let empty = empty.to_str().expect("a UTF-8 temp path");
    let missing = dir.path().join("no-such-token");
    let missing = missing.to_str().expect("a UTF-8 temp path");
    let cases: [(&[&str], &[&str]); 5] = [
        (&["--admin-token-file", empty], &["admin token file", "is empty"]),
        (&["--admin-token-file", missing], &["cannot read the admin token file", "no-such-token"]),
        (&["--tombstone", "0s"], &["--tombstone 0s", "1ms to 366 days"]),
        (&["--tombstone", "367days"], &["--tombstone", "1ms to 366 days"]),
        (&["--execution-max", "1ms"], &["--execution-max 1ms", "a third of --lease", "24h"]),
    ];
    for (args, expected) in cases {
        let output = idem_serve(args);
        let message = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(2), "{args:?}: {message}");
        assert!(message.contains("idem: error:"), "{args:?}: {message}");
        for part in expected {
            assert!(message.contains(part), "{args:?}: {part:?} missing in {message}");
        }
        assert!(!message.contains("panicked"), "{message}");
    }
}
