//! Bearer tokens are opaque bytes: two tokens that differ only in letter case belong to two
//! callers (G4), over real HTTP on loopback to a real server on a real SQLite file.

mod support;

use http::Method;
use support::{PAYMENT, Server, Setup, post_as, send};

fn temp_db() -> (tempfile::TempDir, std::path::PathBuf) {
    let dir = tempfile::tempdir().expect("a temp dir can be made");
    let path = dir.path().join("idem.db");
    (dir, path)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_differing_only_in_case_are_separate_callers_while_the_scheme_is_case_blind() {
    // Goal: `Bearer Alice-Token` and `Bearer alice-token` are two principals: the same key
    // runs once for each, and neither can read the other's payment; `bearer` and `Bearer`
    // name the same caller (RFC 9110: the scheme is case-insensitive, the token is not).
    let (_dir, path) = temp_db();
    let server = Server::sqlite(&path, Setup::default()).await;

    let upper = post_as(server.addr, "Alice-Token", "/payments", "case-key", PAYMENT).await;
    let lower = post_as(server.addr, "alice-token", "/payments", "case-key", PAYMENT).await;
    assert_eq!((upper.status, lower.status), (201, 201));
    assert!(!lower.is_replay(), "another caller's key must not replay the first caller's answer");
    let (upper_id, lower_id) = (upper.json()["payment_id"].clone(), lower.json()["payment_id"].clone());
    assert_ne!(upper_id, lower_id);
    assert_eq!(server.payment_count().await, 2);

    let upper_path = format!("/payments/{}", upper_id.as_str().expect("an id"));
    assert_eq!(server.get(&upper_path, Some("alice-token")).await.status, 404);
    assert_eq!(server.get(&upper_path, Some("Alice-Token")).await.status, 200);
    let listed = server.get("/payments", Some("alice-token")).await.json();
    let listed: Vec<_> = listed["data"].as_array().expect("a list").iter().map(|p| p["payment_id"].clone()).collect();
    assert_eq!(listed, vec![lower_id]);

    let lower_scheme =
        send(server.addr, Method::GET, &upper_path, &[("authorization", b"bearer Alice-Token")], "").await;
    assert_eq!(lower_scheme.status, 200, "the scheme's case does not matter");
    server.stop().await;
}
