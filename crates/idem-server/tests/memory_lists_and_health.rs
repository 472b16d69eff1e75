//! The memory ledger keeps every row it is given (each its own place in the caller's
//! list), and `/healthz` stops answering ok once the ledger cannot take a write.

mod support;

use support::{Server, Setup, post_as};

#[tokio::test]
async fn the_memory_ledger_lists_every_payment_of_a_caller_newest_first() {
    // Goal: three payments by one caller on the memory ledger are three rows in its list,
    // newest first (each row has its own sequence number; none replaces another).
    let server = Server::memory(Setup::default()).await;
    let mut ids = Vec::new();
    for index in 1..=3 {
        let body = format!(r#"{{"amount": {index}.50, "currency": "EUR", "destination": "d{index}"}}"#);
        let reply = post_as(server.addr, "carol", "/payments", &format!("list-{index}"), &body).await;
        assert_eq!(reply.status, 201);
        ids.push(reply.json()["payment_id"].clone());
    }
    let listed = server.get("/payments", Some("carol")).await.json();
    let listed: Vec<_> =
        listed["data"].as_array().expect("a list").iter().map(|row| row["payment_id"].clone()).collect();
    ids.reverse();
    assert_eq!(listed, ids, "every payment, newest first");
    server.stop().await;
}

#[tokio::test]
async fn healthz_answers_503_once_the_ledger_cannot_write() {
    // Goal: readiness commits a write; a store that can no longer write (here closed, as
    // a dead database or a full disk would be) makes `/healthz` answer 503, not ok.
    let dir = tempfile::tempdir().expect("a temp dir can be made");
    let server = Server::sqlite(&dir.path().join("idem.db"), Setup::default()).await;
    let ready = server.get("/healthz", None).await;
    assert_eq!((ready.status, ready.json()["status"].as_str()), (200, Some("ok")));

    server.store.as_ref().expect("a SQLite server has its store").close().await;
    let closed = server.get("/healthz", None).await;

    assert_eq!(closed.status, 503, "{closed:?}");
    assert_eq!(closed.header("content-type"), Some("application/problem+json"));
    assert_eq!(closed.json()["type"], "/problems#not-ready");
}
