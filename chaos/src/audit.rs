//! After healing, the store is read twice: as a user reads it (each caller's payments over
//! HTTP, page by page, once per spelling of the auth scheme, as `sims/src/audit.rs` does)
//! and as it is (every payment row, straight from the database). Both go to the history.

use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use http::Request;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use idem_sim::external::{History, StoredRow};
use serde::Deserialize;
use serde_json::value::RawValue;
use sqlx::{Connection as _, Row as _};

use crate::{ChaosError, Plant};

/// Rows per page: small, so that every list pages.
const PAGE_LIMIT: usize = 3;
/// Tries per page, each under [`ATTEMPT_TIMEOUT`], then a pause and the next replica.
const ATTEMPTS_PER_PAGE: u32 = 10;
const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(2);
/// A list longer than this many pages is unreadable (a cursor that loops).
const PAGES_MAX: u32 = 100;

#[derive(Deserialize)]
struct ListPage<'a> {
    has_more: bool,
    #[serde(borrow)]
    data: Vec<&'a RawValue>,
}

#[derive(Deserialize)]
struct Item {
    payment_id: String,
}

/// Lists each token's payments, with the scheme spelled `Bearer` and `bearer`.
pub(crate) async fn lists(history: &History, replicas: &[SocketAddr], tokens: &[&str]) {
    let client: Client<HttpConnector, Full<Bytes>> = Client::builder(TokioExecutor::new()).build_http();
    let mut n = 0;
    for token in tokens {
        for scheme in ["Bearer", "bearer"] {
            let auth = format!("{scheme} {token}");
            let (pages, items) = list(&client, &auth, replicas, n).await;
            history.listed(&auth, pages, items);
            n += 1;
        }
    }
}

async fn list(
    client: &Client<HttpConnector, Full<Bytes>>,
    auth: &str,
    replicas: &[SocketAddr],
    mut replica: usize,
) -> (u32, Option<Vec<Bytes>>) {
    let mut items = Vec::new();
    let mut cursor: Option<String> = None;
    for pages in 1..=PAGES_MAX {
        let mut page = None;
        for _ in 0..ATTEMPTS_PER_PAGE {
            let Some(addr) = replicas.get(replica % replicas.len().max(1)) else { return (pages, None) };
            page = fetch(client, auth, *addr, cursor.as_deref()).await;
            if page.is_some() {
                break;
            }
            replica += 1;
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
        let Some(body) = page else { return (pages, None) };
        let Ok(page) = serde_json::from_slice::<ListPage<'_>>(&body) else { return (pages, None) };
        items.extend(page.data.iter().map(|item| Bytes::copy_from_slice(item.get().as_bytes())));
        match page.data.last().and_then(|item| serde_json::from_str::<Item>(item.get()).ok()) {
            Some(last) if page.has_more => cursor = Some(last.payment_id),
            _ => return (pages, Some(items)),
        }
    }
    (PAGES_MAX, None)
}

async fn fetch(
    client: &Client<HttpConnector, Full<Bytes>>,
    auth: &str,
    addr: SocketAddr,
    cursor: Option<&str>,
) -> Option<Bytes> {
    let after = cursor.map(|id| format!("&starting_after={id}")).unwrap_or_default();
    let uri = format!("http://{addr}/payments?limit={PAGE_LIMIT}{after}");
    let request = Request::get(uri).header(http::header::AUTHORIZATION, auth).body(Full::new(Bytes::new())).ok()?;
    let exchange = async {
        let response = client.request(request).await.ok()?;
        if response.status() != http::StatusCode::OK {
            return None;
        }
        response.into_body().collect().await.ok().map(http_body_util::Collected::to_bytes)
    };
    tokio::time::timeout(ATTEMPT_TIMEOUT, exchange).await.ok().flatten()
}

/// Where the payment rows are.
#[derive(Debug, Clone)]
pub(crate) enum RowsAt {
    /// A SQLite file.
    Sqlite(std::path::PathBuf),
    /// A PostgreSQL database URL (without schema) and the schema.
    Postgres { url: String, schema: String },
}

const ROWS_TIMEOUT: Duration = Duration::from_secs(20);

fn select(table: &str) -> String {
    format!("SELECT principal, payment_id, amount_minor, currency, destination FROM {table} ORDER BY seq")
}

/// Every payment row, in the order written.
pub(crate) async fn rows(at: &RowsAt) -> Result<Vec<StoredRow>, ChaosError> {
    let read = async {
        match at {
            RowsAt::Sqlite(path) => {
                let url = format!("sqlite://{}?mode=ro", path.display());
                let mut connection = sqlx::SqliteConnection::connect(&url).await?;
                let rows = sqlx::query(sqlx::AssertSqlSafe(select("payments"))).fetch_all(&mut connection).await?;
                rows.iter()
                    .map(|row| {
                        stored(row.try_get(0)?, row.try_get(1)?, row.try_get(2)?, row.try_get(3)?, row.try_get(4)?)
                    })
                    .collect::<Result<Vec<_>, sqlx::Error>>()
            }
            RowsAt::Postgres { url, schema } => {
                let mut connection = sqlx::PgConnection::connect(url).await?;
                let statement = select(&format!("\"{schema}\".payments"));
                let rows = sqlx::query(sqlx::AssertSqlSafe(statement)).fetch_all(&mut connection).await?;
                rows.iter()
                    .map(|row| {
                        stored(row.try_get(0)?, row.try_get(1)?, row.try_get(2)?, row.try_get(3)?, row.try_get(4)?)
                    })
                    .collect::<Result<Vec<_>, sqlx::Error>>()
            }
        }
    };
    match tokio::time::timeout(ROWS_TIMEOUT, read).await {
        Ok(Ok(rows)) => Ok(rows),
        Ok(Err(error)) => Err(ChaosError::Rows(error.to_string())),
        Err(_) => Err(ChaosError::Rows(format!("not read within {ROWS_TIMEOUT:?}"))),
    }
}

fn stored(
    owner: String,
    payment_id: String,
    amount_minor: i64,
    currency: String,
    destination: String,
) -> Result<StoredRow, sqlx::Error> {
    let amount_minor = u64::try_from(amount_minor).map_err(|error| sqlx::Error::Decode(Box::new(error)))?;
    Ok(StoredRow { owner, payment_id, amount_minor, currency, destination })
}

/// Plants `plant` in the store behind the server's back, after healing and before the
/// audit, to show that the checker reports what such a store bug would leave.
pub(crate) async fn plant(at: &RowsAt, plant: Plant) -> Result<(), ChaosError> {
    let table = match at {
        RowsAt::Sqlite(_) => "payments".to_owned(),
        RowsAt::Postgres { schema, .. } => format!("\"{schema}\".payments"),
    };
    let first = format!("(SELECT MIN(seq) FROM {table})");
    let statement = match plant {
        // An acknowledged write lost.
        Plant::LoseOnePayment => format!("DELETE FROM {table} WHERE seq = {first}"),
        // A second payment for one key (an execution the guard let through twice).
        Plant::DuplicateOnePayment => format!(
            "INSERT INTO {table} (payment_id, principal, amount_minor, currency, destination, status, created_at) \
             SELECT payment_id || 'd', principal, amount_minor, currency, destination, status, created_at \
             FROM {table} WHERE seq = {first}"
        ),
    };
    let run = async {
        match at {
            RowsAt::Sqlite(path) => {
                let mut connection = sqlx::SqliteConnection::connect(&format!("sqlite://{}", path.display())).await?;
                sqlx::query(sqlx::AssertSqlSafe(statement)).execute(&mut connection).await.map(|_| ())
            }
            RowsAt::Postgres { url, .. } => {
                let mut connection = sqlx::PgConnection::connect(url).await?;
                sqlx::query(sqlx::AssertSqlSafe(statement)).execute(&mut connection).await.map(|_| ())
            }
        }
    };
    match tokio::time::timeout(ROWS_TIMEOUT, run).await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(error)) => Err(ChaosError::Rows(error.to_string())),
        Err(_) => Err(ChaosError::Rows(format!("not planted within {ROWS_TIMEOUT:?}"))),
    }
}
