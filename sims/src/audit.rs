//! After the run, a user reads the store as users do: each caller's payments over HTTP,
//! page by page (`GET /payments?limit=3&starting_after=…`), through the replicas. The
//! checker compares these lists with what the clients were answered and with the rows the
//! ledger host wrote (`check::rows`).

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http::Request;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use serde::Deserialize;
use serde_json::value::RawValue;

use crate::clock::sim_ms;
use crate::history::{Kind, Recorder};
use crate::net::SimConnector;

/// Rows per page: small, so that every list pages.
const PAGE_LIMIT: usize = 3;
/// Tries per page (each under [`ATTEMPT_TIMEOUT`], then a pause); the network is healed by
/// then, so a page fails only if the server cannot answer it.
const ATTEMPTS_PER_PAGE: u32 = 10;
const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(2);
/// A list longer than this many pages is reported unreadable (a cursor that loops).
const PAGES_MAX: u32 = 100;

/// One page of a list, as the API writes it (Stripe's shape); other fields are ignored.
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

/// What the auditor needs: who to list, when to start, where to record.
pub(crate) struct Audit {
    pub(crate) auths: Vec<String>,
    pub(crate) replicas: usize,
    /// Operations not yet ended; the audit starts when none is left and `not_before_ms` passed.
    pub(crate) ops_left: Arc<AtomicUsize>,
    pub(crate) not_before_ms: u64,
    pub(crate) recorder: Recorder,
}

/// The auditor host's software.
pub(crate) async fn auditor(audit: Audit) -> turmoil::Result {
    // Bounded by the simulation's own duration, which cuts a run off (and fails G6).
    while audit.ops_left.load(Ordering::SeqCst) > 0 || sim_ms() < audit.not_before_ms {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let client: Client<SimConnector, Full<Bytes>> = Client::builder(TokioExecutor::new()).build(SimConnector);
    for (n, auth) in audit.auths.iter().enumerate() {
        let (pages, items) = list(&client, auth, n % audit.replicas.max(1), audit.replicas.max(1)).await;
        audit.recorder.record(Kind::Listed { auth: auth.clone(), pages, items });
    }
    Ok(())
}

/// Every page of `auth`'s payments, starting on `replica`; `None` if a page could not be read.
async fn list(
    client: &Client<SimConnector, Full<Bytes>>,
    auth: &str,
    mut replica: usize,
    replicas: usize,
) -> (u32, Option<Vec<Bytes>>) {
    let mut items = Vec::new();
    let mut cursor: Option<String> = None;
    for pages in 1..=PAGES_MAX {
        let mut page = None;
        for _ in 0..ATTEMPTS_PER_PAGE {
            page = fetch(client, auth, replica, cursor.as_deref()).await;
            if page.is_some() {
                break;
            }
            replica = (replica + 1) % replicas;
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
        let Some(body) = page else { return (pages, None) };
        let Ok(page) = serde_json::from_slice::<ListPage<'_>>(&body) else { return (pages, None) };
        for item in &page.data {
            items.push(Bytes::copy_from_slice(item.get().as_bytes()));
        }
        let last = page.data.last().and_then(|item| serde_json::from_str::<Item>(item.get()).ok());
        match last {
            Some(last) if page.has_more => cursor = Some(last.payment_id),
            _ => return (pages, Some(items)),
        }
    }
    (PAGES_MAX, None)
}

/// One page's body, if the server answered 200 in time.
async fn fetch(
    client: &Client<SimConnector, Full<Bytes>>,
    auth: &str,
    replica: usize,
    cursor: Option<&str>,
) -> Option<Bytes> {
    let after = cursor.map(|id| format!("&starting_after={id}")).unwrap_or_default();
    let uri = format!("http://replica-{replica}/payments?limit={PAGE_LIMIT}{after}");
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
