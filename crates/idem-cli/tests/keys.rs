//! `idem keys list|show|forget` as a user runs it, against a real SQLite file, PostgreSQL
//! (a fresh schema) and Redis (a fresh prefix): records put in through the store API, then
//! listed, shown and forgotten through the binary, and the store checked afterwards.

mod replicas;
mod support;

use std::process::{Command, Output};
use std::time::Duration;

use idem_core::{
    ClaimRequest, Decision, Fence, Fenced, Fingerprint, Holder, Key, Policy, Principal, RecordId, Store,
    StoredResponse, Timestamp,
};
use replicas::{RedisPrefix, Schema};

fn idem(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_idem")).arg("keys").args(args).output().expect("the idem binary runs")
}

fn json_of(output: &Output) -> serde_json::Value {
    let stdout = String::from_utf8_lossy(&output.stdout);
    serde_json::from_str(stdout.trim()).unwrap_or_else(|error| panic!("not JSON ({error}): {stdout}"))
}

fn id(caller: &str, key: &str) -> RecordId {
    let principal = if caller.is_empty() { Principal::anonymous() } else { Principal::new(caller).expect("valid") };
    RecordId::new(principal, Key::from_chars(key).expect("valid"))
}

fn now() -> Timestamp {
    idem_admin::params::system_now()
}

fn policy() -> Policy {
    Policy::new(Duration::from_secs(60), Duration::from_secs(3600)).expect("valid")
}

/// alice/k1 in flight (holder req-1), alice/k2 completed, the anonymous caller's k3
/// completed; answers k1's fence.
async fn populate(store: &impl Store) -> Fence {
    let fingerprint = Fingerprint::of("POST", "/payments", b"{}");
    let request = ClaimRequest { fingerprint, earlier: None, holder: Holder::new(Some("req-1"), Some("trace-1")) };
    let Decision::Execute(k1) = store.claim(&id("alice", "k1"), request, now(), &policy()).await.expect("claim") else {
        panic!("a fresh key executes")
    };
    for (caller, key) in [("alice", "k2"), ("", "k3")] {
        let Decision::Execute(claim) =
            store.claim(&id(caller, key), &fingerprint, now(), &policy()).await.expect("claim")
        else {
            panic!("a fresh key executes")
        };
        let response = StoredResponse::new(201, &b"{\"ok\":true}"[..]);
        let done = store.complete(&id(caller, key), claim.fence, response, now(), &policy()).await.expect("complete");
        assert_eq!(done, Fenced::Applied);
    }
    k1.fence
}

/// Lists, shows and forgets through the binary; answers whether k1 is gone.
fn drive_cli(store_url: &str, fence: Fence) {
    let listed = idem(&["list", "--store", store_url]);
    assert!(listed.status.success(), "{}", String::from_utf8_lossy(&listed.stderr));
    let page = json_of(&listed);
    assert_eq!(page["object"], "list");
    let keys: Vec<_> = page["data"].as_array().expect("data").iter().map(|view| view["key"].clone()).collect();
    assert_eq!(keys, ["k3", "k1", "k2"], "anonymous first, then alice's keys in order");
    assert!(page["data"][0]["caller"].is_null());

    let filtered = json_of(&idem(&["list", "--store", store_url, "--caller", "alice", "--state", "in_flight"]));
    assert_eq!(filtered["data"].as_array().map(Vec::len), Some(1));
    assert_eq!(filtered["data"][0]["key"], "k1");

    let first = json_of(&idem(&["list", "--store", store_url, "--limit", "2"]));
    assert_eq!(first["has_more"], true);
    let cursor = first["next_cursor"].as_str().expect("a cursor");
    let rest = json_of(&idem(&["list", "--store", store_url, "--limit", "2", "--starting-after", cursor]));
    assert_eq!((rest["data"][0]["key"].as_str(), rest["has_more"].as_bool()), (Some("k2"), Some(false)));

    let shown = json_of(&idem(&["show", "--store", store_url, "--caller", "alice", "k1"]));
    assert_eq!((shown["state"].as_str(), shown["fence"].as_u64()), (Some("in_flight"), Some(fence.get())));
    assert_eq!(shown["holder"]["request_id"], "req-1");
    assert_eq!(shown["holder"]["trace_id"], "trace-1");

    let dry = idem(&["forget", "--store", store_url, "--caller", "alice", "k1"]);
    assert_eq!(dry.status.code(), Some(1), "without --yes nothing is forgotten");
    assert!(String::from_utf8_lossy(&dry.stderr).contains("--yes"));
    assert!(idem(&["show", "--store", store_url, "--caller", "alice", "k1"]).status.success(), "still there");

    let forgot = idem(&["forget", "--store", store_url, "--caller", "alice", "k1", "--yes"]);
    assert!(forgot.status.success(), "{}", String::from_utf8_lossy(&forgot.stderr));
    assert_eq!(json_of(&forgot)["key"], "k1");
    let gone = idem(&["show", "--store", store_url, "--caller", "alice", "k1"]);
    assert_eq!(gone.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&gone.stderr).contains("no record"), "{}", String::from_utf8_lossy(&gone.stderr));
}

/// G3 after the CLI's forget: the old claim's completion is refused and nothing is written.
async fn old_fence_is_refused(store: &impl Store, fence: Fence) {
    let late = store.complete(&id("alice", "k1"), fence, StoredResponse::new(201, "late"), now(), &policy()).await;
    assert!(matches!(late, Ok(Fenced::Refused(_))), "{late:?}");
    assert!(store.get(&id("alice", "k1")).await.expect("get").is_none());
    assert!(store.get(&id("alice", "k2")).await.expect("get").is_some(), "only k1 was forgotten");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_on_a_real_sqlite_file() {
    // Goal: list, filters, paging, show and a fenced forget through the binary on SQLite.
    let dir = tempfile::tempdir().expect("a temporary directory");
    let path = dir.path().join("idem.db");
    let store = idem_sqlite::SqliteStore::open(idem_sqlite::SqliteOptions::new(&path)).await.expect("opens");
    let fence = populate(&store).await;
    store.close().await;
    drive_cli(&format!("sqlite://{}", path.display()), fence);
    let store = idem_sqlite::SqliteStore::open(idem_sqlite::SqliteOptions::new(&path)).await.expect("reopens");
    old_fence_is_refused(&store, fence).await;
    store.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_never_creates_a_sqlite_store() {
    // Goal: a missing file is an error (exit 2) and stays missing.
    let dir = tempfile::tempdir().expect("a temporary directory");
    let path = dir.path().join("absent.db");
    let output = idem(&["list", "--store", &format!("sqlite://{}", path.display())]);
    assert_eq!(output.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&output.stderr).contains("no SQLite file"));
    assert!(!path.exists(), "keys created {}", path.display());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_on_postgres_in_a_fresh_schema() {
    // Goal: the same on PostgreSQL; a schema that does not exist is refused, not created.
    let schema = Schema::fresh();
    let missing = idem(&["list", "--store", &schema.url()]);
    assert_eq!(missing.status.code(), Some(2), "{}", String::from_utf8_lossy(&missing.stderr));
    let options =
        idem_server::PostgresUrl { url: replicas::postgres_url(), schema: Some(schema.name.clone()) }.options();
    let store = idem_postgres::PostgresStore::open(options.clone()).await.expect("opens");
    let fence = populate(&store).await;
    drive_cli(&schema.url(), fence);
    old_fence_is_refused(&store, fence).await;
    store.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_on_redis_under_a_fresh_prefix() {
    // Goal: the same on Redis.
    let prefix = RedisPrefix::fresh();
    let unused = idem(&["list", "--store", &prefix.url()]);
    assert_eq!(unused.status.code(), Some(2), "a prefix with no store is refused");
    let store = idem_redis::RedisStore::open(idem_redis::RedisOptions::new(&prefix.url()).expect("valid"))
        .await
        .expect("opens");
    let fence = populate(&store).await;
    drive_cli(&prefix.url(), fence);
    old_fence_is_refused(&store, fence).await;
    store.close();
}
