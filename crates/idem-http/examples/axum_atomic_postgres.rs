//! The orders service of `axum_atomic_sqlite.rs` on PostgreSQL: the order row and the
//! idempotency record commit in one PostgreSQL transaction, for any number of replicas on
//! one database (SPEC G1, G2). The store runs on the service's own pool
//! (`PostgresStore::with_pool`), with idem's tables beside the service's.
//!
//! Run it with `cargo run -p idem-http --example axum_atomic_postgres -- 3000` (or
//! `PORT=3000`; the database is `DATABASE_URL`, default
//! `postgres://postgres@127.0.0.1:5432/test`), then post the same order twice:
//!
//! ```text
//! curl -i localhost:3000/orders -H 'Idempotency-Key: k1' -H 'content-type: application/json' -d '{"item":"tea","quantity":2}'
//! ```
//!
//! The handler differs from the SQLite one only in its store type and `$n` placeholders.

use axum::http::StatusCode;
use axum::response::Response;
use axum::routing::post;
use axum::{Json, Router};
use idem_http::{Claim, IdempotencyLayer};
use idem_postgres::sqlx::{self, postgres::PgPoolOptions};
use idem_postgres::{PostgresOptions, PostgresStore};

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

async fn create_order(claim: Claim<PostgresStore>, Json(new): Json<NewOrder>) -> Response {
    let order = Order { id: uuid::Uuid::new_v4().to_string(), item: new.item, quantity: new.quantity };
    let row = order.clone();
    claim
        .commit((StatusCode::CREATED, Json(order)), move |tx| {
            Box::pin(async move {
                let insert = sqlx::query("INSERT INTO orders (id, item, quantity) VALUES ($1, $2, $3)");
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
    let url = std::env::var("DATABASE_URL").unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".to_owned());
    // The service's own pool; idem migrates its tables on it and keeps its own migration list.
    let pool = PgPoolOptions::new().max_connections(16).connect(&url).await?;
    let store = PostgresStore::with_pool(pool.clone(), PostgresOptions::new(&url)).await?;
    let schema =
        "CREATE TABLE IF NOT EXISTS orders (id TEXT PRIMARY KEY, item TEXT NOT NULL, quantity BIGINT NOT NULL)";
    sqlx::query(schema).execute(&pool).await?;

    let app = Router::new().route("/orders", post(create_order)).route_layer(IdempotencyLayer::new(store.clone()));
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port)).await?;
    eprintln!("orders service on http://{}", listener.local_addr()?);
    let ctrl_c =
        async { tokio::signal::ctrl_c().await.unwrap_or_else(|error| eprintln!("no Ctrl-C handler: {error}")) };
    axum::serve(listener, app).with_graceful_shutdown(ctrl_c).await?;
    store.close().await;
    Ok(())
}
