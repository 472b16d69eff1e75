//! An existing axum app that gains idempotency keys: the lines marked `idem` are all it takes.
//!
//! Run it with `cargo run -p idem-http --example axum_app`, then:
//!
//! ```text
//! curl -i -X POST localhost:3000/payments -H 'Idempotency-Key: k1' -d '{"amount":100}'
//! curl -i -X POST localhost:3000/payments -H 'Idempotency-Key: k1' -d '{"amount":100}'   # replayed
//! ```

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::{Json, Router};
use idem_core::MemoryStore; // idem
use idem_http::IdempotencyLayer; // idem

/// The app's own state: a payment counter standing in for a database.
#[derive(Clone, Default)]
struct App {
    payments: Arc<AtomicU64>,
}

async fn create_payment(
    State(app): State<App>,
    Json(request): Json<serde_json::Value>,
) -> (StatusCode, Json<serde_json::Value>) {
    let id = app.payments.fetch_add(1, Ordering::SeqCst) + 1;
    (StatusCode::CREATED, Json(serde_json::json!({ "payment_id": format!("pay_{id}"), "amount": request["amount"] })))
}

async fn health() -> &'static str {
    "ok"
}

#[tokio::main]
async fn main() -> std::io::Result<()> {
    let store = Arc::new(MemoryStore::default()); // idem
    let app = Router::new()
        .route("/payments", post(create_payment))
        .route("/health", get(health))
        .layer(IdempotencyLayer::new(store)) // idem: POST and PATCH now need an Idempotency-Key
        .with_state(App::default());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:3000").await?;
    axum::serve(listener, app).await
}
