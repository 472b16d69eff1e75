//! An orders service in atomic mode: the order row and the idempotency record commit in
//! one SQLite transaction, so an order is written at most once per key, even when a claim
//! lapses while its handler runs (SPEC G1), and every retry gets the first answer's bytes (G2).
//!
//! Run it with `cargo run -p idem-http --example axum_atomic_sqlite -- 3000` (or `PORT=3000`;
//! the database file is `ORDERS_DB`, default `orders.db`), then:
//!
//! ```text
//! curl -i localhost:3000/orders -H 'Idempotency-Key: k1' -H 'content-type: application/json' -d '{"item":"tea","quantity":2}'
//! curl -i localhost:3000/orders -H 'Idempotency-Key: k1' -H 'content-type: application/json' -d '{"item":"tea","quantity":2}'   # replayed
//! ```
//!
//! Ctrl-C stops it cleanly. The same handler without idem is 10 lines:
//!
//! ```text
//! async fn create_order(State(db): State<SqlitePool>, Json(new): Json<NewOrder>) -> Response {
//!     let order = Order { id: Uuid::new_v4().to_string(), item: new.item, quantity: new.quantity };
//!     let insert = sqlx::query("INSERT INTO orders (id, item, quantity) VALUES (?, ?, ?)");
//!     let insert = insert.bind(&order.id).bind(&order.item).bind(order.quantity);
//!     match insert.execute(&db).await {
//!         Ok(_) => (StatusCode::CREATED, Json(order)).into_response(),
//!         Err(_) => StatusCode::INTERNAL_SERVER_ERROR.into_response(),
//!     }
//! }
//! ```
//!
//! With idem it is 13 (`create_order` below): the claim replaces the pool, and the insert
//! moves into `claim.commit`, which also answers the 500 if the insert fails.

use axum::http::StatusCode;
use axum::response::Response;
use axum::routing::post;
use axum::{Json, Router};
use idem_http::{Claim, IdempotencyLayer};
use idem_sqlite::{ClaimSync, SqliteOptions, SqliteStore, sqlx};

#[derive(serde::Deserialize)]
struct NewOrder {
    item: String,
    quantity: i64,
}

#[derive(Clone, serde::Serialize)]
struct Order {
    id: String,
    item: String,
    quantity: i64,
}

async fn create_order(claim: Claim<SqliteStore>, Json(new): Json<NewOrder>) -> Response {
    let order = Order { id: uuid::Uuid::new_v4().to_string(), item: new.item, quantity: new.quantity };
    let row = order.clone();
    claim
        .commit((StatusCode::CREATED, Json(order)), move |tx| {
            Box::pin(async move {
                let insert = sqlx::query("INSERT INTO orders (id, item, quantity) VALUES (?, ?, ?)");
                insert.bind(row.id).bind(row.item).bind(row.quantity).execute(&mut *tx).await?;
                Ok(())
            })
        })
        .await
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let port = std::env::args().nth(1).or_else(|| std::env::var("PORT").ok());
    let port: u16 = port.as_deref().unwrap_or("3000").parse()?;
    let db = std::env::var("ORDERS_DB").unwrap_or_else(|_| "orders.db".to_owned());
    // Atomic mode: a claim reaches the disk with its completion's commit, not on its own.
    let store = SqliteStore::open(SqliteOptions::new(db).claim_sync(ClaimSync::Deferred)).await?;
    let schema =
        "CREATE TABLE IF NOT EXISTS orders (id TEXT PRIMARY KEY, item TEXT NOT NULL, quantity INTEGER NOT NULL)";
    sqlx::query(schema).execute(store.pool()).await?;

    let app = Router::new().route("/orders", post(create_order)).route_layer(IdempotencyLayer::new(store.clone()));
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port)).await?;
    eprintln!("orders service on http://{}", listener.local_addr()?);
    let ctrl_c =
        async { tokio::signal::ctrl_c().await.unwrap_or_else(|error| eprintln!("no Ctrl-C handler: {error}")) };
    axum::serve(listener, app).with_graceful_shutdown(ctrl_c).await?;
    store.close().await;
    Ok(())
}
