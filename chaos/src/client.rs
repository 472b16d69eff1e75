//! The clients: each caller's streams of operations (the simulation's plan) through
//! idem-client's retrying layer over a recording transport on real TCP. Every attempt goes
//! to a replica a seeded RNG picks, and its answer or loss goes to the history.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response, Uri};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use idem_client::{BoxError, IdempotentRetryLayer, OperationKey, RetryError};
use idem_core::Key;
use idem_sim::external::{History, PlannedOp};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use tower::{Layer, Service, ServiceExt};

/// The pause before a submission that ended in an error or a 5xx is sent again.
const RESUBMIT_PAUSE: Duration = Duration::from_millis(200);

/// What every client shares.
#[derive(Clone)]
pub(crate) struct Clients {
    pub(crate) history: History,
    pub(crate) replicas: Arc<Vec<std::net::SocketAddr>>,
    pub(crate) in_flight: Arc<Vec<AtomicUsize>>,
    pub(crate) seed: u64,
    pub(crate) attempt_timeout: Duration,
    pub(crate) deadline: Duration,
    /// An operation is resubmitted until it is answered or this many ms of the run passed.
    pub(crate) give_up_after_heal_ms: u64,
    /// When healing ends, in ms of the run: the planned time until the fault thread says
    /// when it really ended (later, if a restart ran late), as the checker counts G6.
    pub(crate) heal_ms: Arc<AtomicU64>,
}

/// Runs every stream of caller `client` to its end.
pub(crate) async fn client(clients: Clients, client: usize, streams: Vec<Vec<PlannedOp>>) -> Result<(), BoxError> {
    let mut connector = HttpConnector::new();
    connector.set_connect_timeout(Some(Duration::from_secs(1)));
    connector.set_nodelay(true);
    // No pooled connections: each attempt has its own, as a fresh caller would.
    let inner = Client::builder(TokioExecutor::new()).pool_max_idle_per_host(0).build(connector);
    let transport = Recording {
        inner,
        clients: clients.clone(),
        rng: Arc::new(Mutex::new(ChaCha8Rng::seed_from_u64(clients.seed ^ (0xC1 << 40) ^ client as u64))),
    };
    let layer = IdempotentRetryLayer::builder()
        .seed(clients.seed.rotate_left(29) ^ client as u64)
        .attempt_timeout(clients.attempt_timeout)
        .deadline(clients.deadline)
        .backoff(Duration::from_millis(50), Duration::from_secs(1))
        .build()?;
    let service = layer.layer(transport);
    let streams = streams.into_iter().map(|ops| {
        let (service, clients) = (service.clone(), clients.clone());
        async move {
            for op in ops {
                let now = clients.history.elapsed_ms();
                let start = u64::try_from(op.start.as_millis()).unwrap_or(u64::MAX);
                if start > now {
                    tokio::time::sleep(Duration::from_millis(start - now)).await;
                }
                operation(&service, &clients, &op).await;
            }
        }
    });
    futures::future::join_all(streams).await;
    Ok(())
}

/// One operation to its end: resubmitted with the same key after an error or a 5xx,
/// until it gets an answer or the give-up time passed.
async fn operation<S>(service: &S, clients: &Clients, op: &PlannedOp)
where
    S: Service<Request<Full<Bytes>>, Response = Response<idem_client::ResponseBody<Full<Bytes>>>, Error = RetryError>
        + Clone,
{
    let history = &clients.history;
    let started_ms = history.elapsed_ms();
    let Ok(key) = Key::try_from(op.key.as_str()) else {
        history.end(op.client, op.index, None);
        return;
    };
    for submission in 1.. {
        history.invoke(op, submission);
        let request = Request::post(format!("http://replica{}", op.target))
            .header(http::header::AUTHORIZATION, op.auth.as_str())
            .header(http::header::CONTENT_TYPE, "application/json")
            .header(http::header::ACCEPT, "application/json")
            .header(http::header::ACCEPT, "application/problem+json")
            .extension(OpTag { client: op.client, op: op.index })
            .extension(OperationKey(key.clone()))
            .body(Full::new(op.body.clone()));
        let Ok(request) = request else {
            history.end(op.client, op.index, None);
            return;
        };
        let status = match service.clone().oneshot(request).await {
            Ok(response) => Some(response.status().as_u16()),
            Err(RetryError::KeyReused { .. }) => Some(422),
            Err(RetryError::KeyExpired { .. }) => Some(410),
            Err(error) => {
                history.failed(op.client, op.index, error.to_string());
                None
            }
        };
        // A 5xx is not an answer to the request: a caller tries again with the same key.
        let answered = status.filter(|status| *status < 500);
        let give_up_ms = started_ms.max(clients.heal_ms.load(Ordering::SeqCst)) + clients.give_up_after_heal_ms;
        if answered.is_some() || history.elapsed_ms() >= give_up_ms {
            history.end(op.client, op.index, status);
            return;
        }
        tokio::time::sleep(RESUBMIT_PAUSE).await;
    }
}

/// Marks a request with its operation, for the recording transport.
#[derive(Debug, Clone, Copy)]
struct OpTag {
    client: usize,
    op: usize,
}

/// Sends each attempt to a replica of its choosing, reads the whole answer, and records
/// the attempt and its answer (or its loss).
#[derive(Clone)]
struct Recording {
    inner: Client<HttpConnector, Full<Bytes>>,
    clients: Clients,
    rng: Arc<Mutex<ChaCha8Rng>>,
}

/// Records an attempt as lost if it is dropped before its answer (the client's timeout),
/// and counts it in flight on its replica meanwhile.
struct Pending {
    clients: Clients,
    tag: OpTag,
    replica: usize,
    done: bool,
}

impl Pending {
    fn new(clients: Clients, tag: OpTag, replica: usize) -> Pending {
        if let Some(count) = clients.in_flight.get(replica) {
            count.fetch_add(1, Ordering::SeqCst);
        }
        Pending { clients, tag, replica, done: false }
    }

    fn lost(&mut self, why: String) {
        self.done = true;
        self.clients.history.lost(self.tag.client, self.tag.op, self.replica, why);
    }
}

impl Drop for Pending {
    fn drop(&mut self) {
        if let Some(count) = self.clients.in_flight.get(self.replica) {
            count.fetch_sub(1, Ordering::SeqCst);
        }
        if !self.done {
            self.lost("cut off by the client's attempt timeout".to_owned());
        }
    }
}

impl Service<Request<Full<Bytes>>> for Recording {
    type Response = Response<Full<Bytes>>;
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<Response<Full<Bytes>>, BoxError>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, mut request: Request<Full<Bytes>>) -> Self::Future {
        let tag = request.extensions().get::<OpTag>().copied().unwrap_or(OpTag { client: 0, op: usize::MAX });
        let replicas = self.clients.replicas.len().max(1);
        let replica = self.rng.lock().unwrap_or_else(PoisonError::into_inner).random_range(0..replicas);
        let path = request.uri().path_and_query().map_or("/", |path| path.as_str()).to_owned();
        let addr = self.clients.replicas.get(replica).copied();
        let uri = addr.map(|addr| format!("http://{addr}{path}")).and_then(|uri| Uri::try_from(uri).ok());
        let key = request.headers().get("idempotency-key").map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned());
        self.clients.history.send(tag.client, tag.op, replica, &key.unwrap_or_default());
        let mut pending = Pending::new(self.clients.clone(), tag, replica);
        let inner = self.inner.clone();
        Box::pin(async move {
            let Some(uri) = uri else {
                pending.lost("no such replica".to_owned());
                return Err("no such replica".into());
            };
            *request.uri_mut() = uri;
            let response = match inner.request(request).await {
                Ok(response) => response,
                Err(error) => {
                    pending.lost(format!("transport: {error}"));
                    return Err(error.into());
                }
            };
            let (parts, body) = response.into_parts();
            let body = match body.collect().await {
                Ok(collected) => collected.to_bytes(),
                Err(error) => {
                    pending.lost(format!("body: {error}"));
                    return Err(error.into());
                }
            };
            pending.done = true;
            pending.clients.history.answer(tag.client, tag.op, replica, &parts, body.clone());
            Ok(Response::from_parts(parts, Full::new(body)))
        })
    }
}
