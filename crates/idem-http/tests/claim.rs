//! `Claim::commit` over real HTTP on loopback, against a real SQLite file in a temporary
//! directory: the order row and the idempotency record commit together or not at all.

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use http::StatusCode;
use idem_core::{ManualClock, RecordState, Store, Timestamp};
use idem_http::{Claim, IdempotencyBuilder, IdempotencyLayer, MemoryStore, MissingKey, Outcome};
use idem_sqlite::{SqliteOptions, SqliteStore};
use support::{Harness, Reply, anonymous};
use tokio::sync::{Semaphore, mpsc};

/// Where the layer's manual clock starts.
const T0: Timestamp = Timestamp::from_unix_ms(1_700_000_000_000);

/// The orders app's state: a run counter, a gate the first run of the gated routes waits
/// at, and a channel that says when a gated run started.
#[derive(Clone)]
struct Orders {
    runs: Arc<AtomicU64>,
    gate: Arc<Semaphore>,
    started: mpsc::UnboundedSender<u64>,
}

impl Orders {
    fn run(&self) -> u64 {
        self.runs.fetch_add(1, Ordering::SeqCst) + 1
    }

    /// The first run announces itself and waits at the gate; later runs go on.
    async fn first_run_waits(&self, run: u64) {
        let _ = self.started.send(run);
        if run == 1 {
            self.gate.acquire().await.expect("the gate is never closed").forget();
        }
    }
}

#[derive(serde::Deserialize)]
struct NewOrder {
    item: String,
    quantity: i64,
}

/// The order a run writes and answers.
fn order(run: u64, new: &NewOrder) -> serde_json::Value {
    serde_json::json!({ "id": format!("order-{run}"), "item": new.item, "quantity": new.quantity })
}

/// The example's handler: one order row, committed with the record.
async fn create(claim: Claim<SqliteStore>, State(orders): State<Orders>, Json(new): Json<NewOrder>) -> Response {
    let run = orders.run();
    commit_order(claim, run, &new, false).await
}

/// As `create`; the first run waits at the gate before it commits.
async fn gated(claim: Claim<SqliteStore>, State(orders): State<Orders>, Json(new): Json<NewOrder>) -> Response {
    let run = orders.run();
    orders.first_run_waits(run).await;
    commit_order(claim, run, &new, false).await
}

/// As `create`; the first run's writes fail after inserting the order.
async fn failing_first(claim: Claim<SqliteStore>, State(orders): State<Orders>, Json(new): Json<NewOrder>) -> Response {
    let run = orders.run();
    commit_order(claim, run, &new, run == 1).await
}

/// Commits, then answers another response instead of the commit's.
async fn bypass(claim: Claim<SqliteStore>, State(orders): State<Orders>, Json(new): Json<NewOrder>) -> Response {
    let run = orders.run();
    let committed = commit_order(claim, run, &new, false).await;
    assert_eq!(committed.status(), StatusCode::CREATED, "the commit itself succeeds");
    (StatusCode::OK, "the bypassing response").into_response()
}

/// Commits writes that fail, then answers a 201 of its own instead of the commit's 500.
async fn bypass_failed(claim: Claim<SqliteStore>, State(orders): State<Orders>, Json(new): Json<NewOrder>) -> Response {
    let run = orders.run();
    let failed = commit_order(claim, run, &new, true).await;
    assert_eq!(failed.status(), StatusCode::INTERNAL_SERVER_ERROR, "the writes fail");
    (StatusCode::CREATED, "ordered (not really)").into_response()
}

/// Refuses a bad quantity with a 422 without committing; commits otherwise.
async fn validated(claim: Claim<SqliteStore>, State(orders): State<Orders>, Json(new): Json<NewOrder>) -> Response {
    if new.quantity <= 0 {
        return (StatusCode::UNPROCESSABLE_ENTITY, "quantity must be positive").into_response();
    }
    let run = orders.run();
    commit_order(claim, run, &new, false).await
}

/// Commits an order with a response longer than the test layer's 64-byte recording limit.
async fn large(claim: Claim<SqliteStore>, State(orders): State<Orders>, Json(new): Json<NewOrder>) -> Response {
    let run = orders.run();
    let id = format!("order-{run}");
    claim
        .commit((StatusCode::CREATED, "x".repeat(1024)), move |tx| {
            Box::pin(async move {
                insert(tx, id, new).await?;
                Ok(())
            })
        })
        .await
}

/// Asks for a claim in another store than the layer's.
async fn wrong_store(_claim: Claim<MemoryStore>) -> &'static str {
    unreachable!("the layer's store is SQLite, so there is no MemoryStore claim")
}

/// Takes keyless requests too: commits under a claim, writes directly without one.
async fn optional(claim: Option<Claim<SqliteStore>>, State(orders): State<Orders>) -> Response {
    let run = orders.run();
    match claim {
        Some(claim) => {
            claim.commit((StatusCode::CREATED, format!("claimed {run}")), |_| Box::pin(async { Ok(()) })).await
        }
        None => (StatusCode::CREATED, format!("keyless {run}")).into_response(),
    }
}

async fn commit_order(claim: Claim<SqliteStore>, run: u64, new: &NewOrder, fail_writes: bool) -> Response {
    let answer = order(run, new);
    let row = NewOrder { item: new.item.clone(), quantity: new.quantity };
    claim
        .commit((StatusCode::CREATED, Json(answer)), move |tx| {
            Box::pin(async move {
                insert(tx, format!("order-{run}"), row).await?;
                if fail_writes {
                    sqlx::query("INSERT INTO no_such_table VALUES (1)").execute(&mut *tx).await?;
                }
                Ok(())
            })
        })
        .await
}

async fn insert(tx: &mut sqlx::SqliteConnection, id: String, new: NewOrder) -> Result<(), sqlx::Error> {
    sqlx::query("INSERT INTO orders (id, item, quantity) VALUES (?, ?, ?)")
        .bind(id)
        .bind(new.item)
        .bind(new.quantity)
        .execute(&mut *tx)
        .await
        .map(drop)
}

/// A server for the orders app over a SQLite file in a fresh directory, behind a layer
/// built from `configure(builder)`; `/unlayered` is outside the layer.
struct App {
    server: Harness,
    store: SqliteStore,
    orders: Orders,
    _dir: tempfile::TempDir,
}

impl App {
    async fn start(
        configure: impl FnOnce(IdempotencyBuilder<SqliteStore>) -> IdempotencyBuilder<SqliteStore>,
    ) -> (App, mpsc::UnboundedReceiver<u64>) {
        let dir = tempfile::tempdir().expect("a temporary directory can be made");
        let store = SqliteStore::open(SqliteOptions::new(dir.path().join("orders.db")))
            .await
            .expect("a fresh SQLite file opens");
        sqlx::query("CREATE TABLE orders (id TEXT PRIMARY KEY, item TEXT NOT NULL, quantity INTEGER NOT NULL)")
            .execute(store.pool())
            .await
            .expect("the orders table can be made");
        let layer = configure(IdempotencyLayer::builder(store.clone())).build().expect("test configurations are valid");
        let (tx, started) = mpsc::unbounded_channel();
        let orders = Orders { runs: Arc::default(), gate: Arc::new(Semaphore::new(0)), started: tx };
        let router = Router::new()
            .route("/orders", post(create))
            .route("/gated", post(gated))
            .route("/failing-first", post(failing_first))
            .route("/bypass", post(bypass))
            .route("/bypass-failed", post(bypass_failed))
            .route("/validated", post(validated))
            .route("/large", post(large))
            .route("/wrong-store", post(wrong_store))
            .route("/optional", post(optional))
            .layer(layer)
            .route("/unlayered", post(create))
            .with_state(orders.clone());
        let service = tower::ServiceBuilder::new()
            .map_response(|response: Response| response.map(idem_http::Body::new))
            .service(router);
        (App { server: Harness::start(service).await, store, orders, _dir: dir }, started)
    }

    async fn post(&self, path: &str, key: &str, body: &str) -> Reply {
        self.server
            .send(self.server.request("POST", path, &[key.as_bytes()]).header("content-type", "application/json"), body)
            .await
    }

    async fn order_ids(&self) -> Vec<String> {
        sqlx::query_scalar("SELECT id FROM orders ORDER BY id")
            .fetch_all(self.store.pool())
            .await
            .expect("the orders table can be read")
    }

    async fn record_state(&self, key: &str) -> Option<RecordState> {
        self.store.get(&anonymous(key)).await.expect("the store can be read").map(|record| record.state)
    }
}

const TEA: &str = r#"{"item":"tea","quantity":2}"#;

#[tokio::test]
async fn twenty_concurrent_requests_with_one_key_make_one_order() {
    // Goal: 20 requests with one key at once run the business write once: one order row;
    // every other answer is a 409 or a replay of the one execution's answer.
    let app = Arc::new(App::start(|b| b).await.0);
    let mut requests = Vec::new();
    for _ in 0..20 {
        let app = Arc::clone(&app);
        requests.push(tokio::spawn(async move { app.post("/orders", "same", TEA).await }));
    }
    let mut replies = Vec::new();
    for request in requests {
        replies.push(request.await.expect("request tasks do not panic"));
    }

    let executed: Vec<&Reply> = replies.iter().filter(|r| r.status == StatusCode::CREATED && !r.is_replay()).collect();
    assert_eq!(executed.len(), 1, "{replies:?}");
    for reply in &replies {
        match reply.status {
            StatusCode::CONFLICT => assert_eq!(reply.problem()["type"], support::problem_type("in-progress")),
            StatusCode::CREATED if reply.is_replay() => assert_eq!(reply.body, executed[0].body),
            StatusCode::CREATED => {}
            other => panic!("unexpected {other}: {reply:?}"),
        }
    }
    let id = serde_json::from_slice::<serde_json::Value>(&executed[0].body).expect("orders are JSON")["id"].clone();
    assert_eq!(app.order_ids().await, [id.as_str().expect("ids are strings")]);
    assert_eq!(app.orders.runs.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn the_replay_is_the_first_answer_byte_for_byte() {
    // Goal: G2 with Claim::commit: the record is built from the very response answered, so
    // a retry gets the same status, stored headers and body bytes, marked as a replay.
    let app = App::start(|b| b).await.0;

    let first = app.post("/orders", "k1", TEA).await;
    let retry = app.post("/orders", "k1", TEA).await;

    assert_eq!((first.status, first.is_replay()), (StatusCode::CREATED, false));
    assert_eq!(first.text(), r#"{"id":"order-1","item":"tea","quantity":2}"#);
    assert!(retry.is_replay(), "{retry:?}");
    assert_eq!((retry.status, &retry.body), (first.status, &first.body));
    assert_eq!(retry.header("content-type"), Some("application/json"));
    assert_eq!(retry.header("content-type"), first.header("content-type"));
    assert_eq!(app.order_ids().await, ["order-1"]);
    assert!(matches!(app.record_state("k1").await, Some(RecordState::Completed { .. })));
    assert_eq!(app.server.outcomes(), [Outcome::Executed, Outcome::Replayed]);
}

#[tokio::test]
async fn a_handler_whose_claim_was_taken_over_writes_no_order() {
    // Goal: G1 across a lease lapse: request A's handler is held; the clock passes A's
    // lease; request B takes the claim over and commits its order; then A commits: its
    // completion is refused, its order rolls back with it, and A answers B's response.
    let clock = ManualClock::new(T0);
    let layer_clock = clock.clone();
    let (app, mut started) =
        App::start(move |b| b.lease(Duration::from_secs(10)).retention(Duration::from_secs(3600)).clock(layer_clock))
            .await;
    let app = Arc::new(app);
    let stale = {
        let app = Arc::clone(&app);
        tokio::spawn(async move { app.post("/gated", "k", TEA).await })
    };
    assert_eq!(started.recv().await, Some(1), "A's handler holds the claim at the gate");
    clock.advance(Duration::from_secs(11));
    let take_over = app.post("/gated", "k", TEA).await;
    app.orders.gate.add_permits(1);
    let stale = stale.await.expect("request tasks do not panic");

    assert_eq!((take_over.status, take_over.is_replay()), (StatusCode::CREATED, false));
    assert_eq!(take_over.text(), r#"{"id":"order-2","item":"tea","quantity":2}"#);
    assert!(stale.is_replay(), "the stale execution answers what the store holds: {stale:?}");
    assert_eq!((stale.status, &stale.body), (take_over.status, &take_over.body));
    assert_eq!(app.order_ids().await, ["order-2"], "A's order rolled back with its refused completion");
    assert_eq!(app.orders.runs.load(Ordering::SeqCst), 2);
    assert_eq!(app.server.outcomes(), [Outcome::Executed, Outcome::Superseded]);
}

#[tokio::test]
async fn a_failed_write_rolls_back_and_a_retry_runs_again() {
    // Goal: the first run's writes fail after inserting its order: nothing is committed
    // (no order, no completion), the client gets a 500 problem, the layer gives the claim
    // back (5xx), and the retry runs the handler again and commits.
    let (app, _) = App::start(|b| b).await;

    let failed = app.post("/failing-first", "k", TEA).await;
    assert_eq!(failed.status, StatusCode::INTERNAL_SERVER_ERROR);
    assert_eq!(failed.problem()["type"], support::problem_type("handler-failed"));
    assert!(!failed.text().contains("no_such_table"), "the driver's text stays in the log: {}", failed.text());
    assert!(app.order_ids().await.is_empty(), "the order rolled back with the failed writes");
    assert_eq!(app.record_state("k").await, None, "the claim was given back");

    let retry = app.post("/failing-first", "k", TEA).await;
    assert_eq!((retry.status, retry.is_replay()), (StatusCode::CREATED, false));
    assert_eq!(retry.text(), r#"{"id":"order-2","item":"tea","quantity":2}"#);
    assert_eq!(app.order_ids().await, ["order-2"]);
    assert_eq!(app.server.outcomes(), [Outcome::Released, Outcome::Executed]);
}

#[tokio::test]
async fn failed_writes_release_the_claim_even_when_server_errors_are_recorded() {
    // Goal: a commit that committed nothing gives the claim back whatever the status rules
    // say: recording its 500 would answer every retry for writes that never landed.
    let (app, _) = App::start(|b| b.store_server_errors(true)).await;

    assert_eq!(app.post("/failing-first", "k", TEA).await.status, StatusCode::INTERNAL_SERVER_ERROR);
    assert_eq!(app.record_state("k").await, None);
    assert_eq!(app.post("/failing-first", "k", TEA).await.status, StatusCode::CREATED);
    assert_eq!(app.order_ids().await, ["order-2"]);
}

#[tokio::test]
async fn a_store_failure_in_commit_answers_503_and_commits_nothing() {
    // Goal: when the store fails at commit time, the writes do not land and the client
    // gets the layer's store-unavailable problem with Retry-After (never the driver's text).
    let (app, mut started) = App::start(|b| b).await;
    let app = Arc::new(app);
    let held = {
        let app = Arc::clone(&app);
        tokio::spawn(async move { app.post("/gated", "k", TEA).await })
    };
    assert_eq!(started.recv().await, Some(1), "the handler waits at the gate, claim taken");
    app.store.close().await;
    app.orders.gate.add_permits(1);
    let reply = held.await.expect("request tasks do not panic");

    assert_eq!(reply.status, StatusCode::SERVICE_UNAVAILABLE, "{reply:?}");
    assert_eq!(reply.problem()["type"], support::problem_type("store-unavailable"));
    assert!(reply.header("retry-after").is_some());
    let reopened = SqliteStore::open(SqliteOptions::new(app._dir.path().join("orders.db"))).await.expect("reopens");
    let orders: i64 =
        sqlx::query_scalar("SELECT count(*) FROM orders").fetch_one(reopened.pool()).await.expect("readable");
    assert_eq!(orders, 0);
    assert_eq!(app.server.outcomes(), [Outcome::Released]);
}

#[tokio::test]
async fn a_response_over_the_recording_limit_commits_and_retries_get_response_not_kept() {
    // Goal: a response longer than the layer's recording limit cannot be replayed, so the
    // commit records the response-not-kept problem in its place with the writes (SPEC "HTTP
    // behaviour", as the layer does in separate mode): the first client gets every byte,
    // the order is written once, and the retry gets the problem as a replay, status kept.
    let (app, _) = App::start(|b| b.response_body_bytes_max(64)).await;

    let first = app.post("/large", "k", TEA).await;
    let retry = app.post("/large", "k", TEA).await;

    assert_eq!((first.status, first.text()), (StatusCode::CREATED, "x".repeat(1024).as_str()));
    assert!(!first.is_replay());
    assert_eq!(retry.status, StatusCode::CREATED, "the operation's own status: it succeeded, do not retry");
    assert!(retry.is_replay());
    assert_eq!(retry.problem()["type"], support::problem_type("response-not-kept"));
    assert_eq!(app.order_ids().await, ["order-1"], "written once, by the first request");
    assert!(matches!(app.record_state("k").await, Some(RecordState::Completed { .. })));
}

#[tokio::test]
async fn a_response_that_bypasses_the_commit_is_not_answered() {
    // Goal: a handler that committed and then returned another response gets what the
    // store holds (the committed response, as a replay), not its own; the layer does not
    // record a second time, and retries replay the committed response.
    let (app, _) = App::start(|b| b).await;

    let first = app.post("/bypass", "k", TEA).await;
    let retry = app.post("/bypass", "k", TEA).await;

    assert_eq!(first.status, StatusCode::CREATED, "{first:?}");
    assert_eq!(first.text(), r#"{"id":"order-1","item":"tea","quantity":2}"#);
    assert!(first.is_replay(), "answered from the store");
    assert_eq!((retry.status, &retry.body), (first.status, &first.body));
    assert_eq!(app.order_ids().await, ["order-1"]);
    assert_eq!(app.server.outcomes(), [Outcome::Superseded, Outcome::Replayed]);
}

#[tokio::test]
async fn a_response_that_bypasses_a_failed_commit_is_not_answered() {
    // Goal: a handler whose commit committed nothing and that then answers a success of its
    // own gets a 500 problem instead (nothing was written), and the claim is given back,
    // so the retry runs the handler again.
    let (app, _) = App::start(|b| b).await;

    let first = app.post("/bypass-failed", "k", TEA).await;

    assert_eq!(first.status, StatusCode::INTERNAL_SERVER_ERROR, "{first:?}");
    assert_eq!(first.problem()["type"], support::problem_type("handler-failed"));
    assert!(app.order_ids().await.is_empty());
    assert_eq!(app.record_state("k").await, None, "the claim was given back");
    assert_eq!(app.server.outcomes(), [Outcome::Released]);
}

#[tokio::test]
async fn a_claim_extracted_but_not_committed_is_recorded_by_the_layer() {
    // Goal: a handler that takes the claim but answers without committing (a validation
    // error) is recorded by the layer as in separate mode, and replayed.
    let (app, _) = App::start(|b| b).await;

    let refused = app.post("/validated", "k", r#"{"item":"tea","quantity":0}"#).await;
    let retry = app.post("/validated", "k", r#"{"item":"tea","quantity":0}"#).await;

    assert_eq!((refused.status, refused.text()), (StatusCode::UNPROCESSABLE_ENTITY, "quantity must be positive"));
    assert!(retry.is_replay());
    assert_eq!((retry.status, &retry.body), (refused.status, &refused.body));
    assert!(app.order_ids().await.is_empty());
    assert_eq!(app.server.outcomes(), [Outcome::Executed, Outcome::Replayed]);
}

#[tokio::test]
async fn a_missing_claim_is_a_problem_not_a_panic() {
    // Goal: extracting a claim where there is none is answered as problem+json: a keyed
    // request on a route outside the layer, or one asking for another store's claim, is a
    // 500 (the claim, if any, given back); a keyless request is a 400 key-missing, or
    // `None` for `Option<Claim>`.
    let (app, _) = App::start(|b| b.missing_key(MissingKey::PassThrough)).await;

    let unlayered = app.post("/unlayered", "k1", TEA).await;
    assert_eq!(unlayered.status, StatusCode::INTERNAL_SERVER_ERROR);
    assert_eq!(unlayered.problem()["type"], support::problem_type("handler-failed"));

    let wrong = app.post("/wrong-store", "k2", TEA).await;
    assert_eq!(wrong.status, StatusCode::INTERNAL_SERVER_ERROR);
    assert_eq!(wrong.problem()["type"], support::problem_type("handler-failed"));
    assert_eq!(app.record_state("k2").await, None, "the 500 gave the claim back");

    let keyless = |path: &str| app.server.request("POST", path, &[]).header("content-type", "application/json");
    let missing = app.server.send(keyless("/orders"), TEA).await;
    assert_eq!(missing.status, StatusCode::BAD_REQUEST);
    assert_eq!(missing.problem()["type"], support::problem_type("key-missing"));

    let without = app.server.send(keyless("/optional"), "").await;
    let with = app.post("/optional", "k3", "").await;
    assert_eq!((without.status, without.text()), (StatusCode::CREATED, "keyless 1"));
    assert_eq!((with.status, with.text()), (StatusCode::CREATED, "claimed 2"));
    assert!(app.post("/optional", "k3", "").await.is_replay());
    assert!(app.order_ids().await.is_empty());
}

#[test]
fn the_layer_takes_a_store_or_a_shared_store() {
    // Goal: `new` and `builder` take the store by value or in an Arc, without annotations.
    let _by_value = IdempotencyLayer::new(MemoryStore::default());
    let _shared = IdempotencyLayer::new(Arc::new(MemoryStore::default()));
    let store = Arc::new(MemoryStore::default());
    let _cloned = IdempotencyLayer::builder(Arc::clone(&store)).build().expect("defaults are valid");
    generic_layer(&store);
}

/// The store type is inferred in generic code too (as idem-server's ledgers hand theirs over).
fn generic_layer<H: HasStore>(owner: &H) {
    let layer = IdempotencyLayer::builder(owner.store()).no_purge().build().expect("defaults are valid");
    let _service = tower::Layer::layer(&layer, Router::<()>::new());
}

trait HasStore {
    type Store: Store + 'static;
    fn store(&self) -> Arc<Self::Store>;
}

impl HasStore for Arc<MemoryStore> {
    type Store = MemoryStore;
    fn store(&self) -> Arc<MemoryStore> {
        Arc::clone(self)
    }
}
