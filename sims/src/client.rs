//! The client hosts: each runs its streams of operations through idem-client's retrying
//! layer over a recording transport (every attempt, answer and loss goes to the history).

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response, Uri};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use idem_client::{BoxError, IdempotentRetryLayer, OperationKey, RetryError};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use tower::{Layer, Service, ServiceExt};

use crate::Scenario;
use crate::clock::sim_ms;
use crate::faults::ms;
use crate::history::{Answer, Kind, Recorder};
use crate::net::SimConnector;
use crate::plan::Op;
use crate::world::World;

/// Marks a request with its operation, for the recording transport.
#[derive(Debug, Clone, Copy)]
struct OpTag {
    client: usize,
    op: usize,
}

/// A client host: its streams of operations, concurrently, through the shipped retrying
/// client over the recording transport.
pub(crate) async fn client_software(world: Arc<World>, client: usize, streams: Vec<Vec<Op>>) -> turmoil::Result {
    let settings = world.settings;
    let transport = Recording {
        inner: Client::builder(TokioExecutor::new()).build(SimConnector),
        client,
        replicas: settings.replicas,
        rng: Arc::new(Mutex::new(ChaCha8Rng::seed_from_u64(world.seed ^ (0xC1 << 40) ^ client as u64))),
        recorder: world.recorder.clone(),
    };
    // Seeded keys and jitter: the client's own generators, deterministic.
    let builder = IdempotentRetryLayer::builder().seed(world.seed.rotate_left(29) ^ client as u64);
    let layer = if settings.scenario == Scenario::ClientDefaults {
        builder.build()?
    } else {
        builder
            .attempt_timeout(Duration::from_millis(world.mix.attempt_timeout_ms))
            .deadline(settings.client_deadline)
            .backoff(Duration::from_millis(50), Duration::from_secs(1))
            .build()?
    };
    let service = layer.layer(transport);
    let streams = streams.into_iter().map(|ops| {
        let (service, world) = (service.clone(), Arc::clone(&world));
        async move {
            for op in ops {
                let now = sim_ms();
                if op.start_ms > now {
                    tokio::time::sleep(Duration::from_millis(op.start_ms - now)).await;
                }
                operation(&service, &world, client, op).await;
            }
        }
    });
    futures::future::join_all(streams).await;
    let (now, run_for) = (sim_ms(), ms(settings.run_for));
    if run_for > now {
        tokio::time::sleep(Duration::from_millis(run_for - now)).await;
    }
    Ok(())
}

/// One operation to its end: resubmitted with the same key after an error, until it gets
/// an answer or the progress bound has passed.
async fn operation<S>(service: &S, world: &World, client: usize, op: Op)
where
    S: Service<Request<Full<Bytes>>, Response = Response<idem_client::ResponseBody<Full<Bytes>>>, Error = RetryError>
        + Clone,
{
    let settings = &world.settings;
    let recorder = &world.recorder;
    let give_up_ms = sim_ms().max(ms(settings.heal_at)) + ms(settings.progress_bound);
    // With the client's defaults, it chooses the key and the harness never resubmits.
    let own_keys = settings.scenario == Scenario::ClientDefaults;
    for submission in 1.. {
        recorder.record(Kind::Invoke {
            client,
            op: op.index,
            submission,
            auth: op.auth.clone(),
            key: if own_keys { String::new() } else { op.key.as_str().to_owned() },
            target: op.target.clone(),
            body: op.body.clone(),
        });
        let mut request = Request::post(format!("http://replica-0{}", op.target))
            .header(http::header::AUTHORIZATION, op.auth.as_str())
            .header(http::header::CONTENT_TYPE, "application/json")
            // Repeated headers, as real callers send them.
            .header(http::header::ACCEPT, "application/json")
            .header(http::header::ACCEPT, "application/problem+json")
            .extension(OpTag { client, op: op.index })
            .body(Full::new(op.body.clone()))
            .expect("a valid request");
        if !own_keys {
            request.extensions_mut().insert(OperationKey(op.key.clone()));
        }
        let status = match service.clone().oneshot(request).await {
            Ok(response) => Some(response.status().as_u16()),
            Err(RetryError::KeyReused { .. }) => Some(422),
            Err(RetryError::KeyExpired { .. }) => Some(410),
            Err(error) => {
                recorder.record(Kind::Failed { client, op: op.index, why: error.to_string() });
                None
            }
        };
        // A 5xx is not an answer to the request: a caller tries again with the same key.
        let answered = status.filter(|status| *status < 500);
        if answered.is_some() || own_keys || sim_ms() >= give_up_ms {
            recorder.record(Kind::End { client, op: op.index, status });
            world.ops_left.fetch_sub(1, Ordering::SeqCst);
            return;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// The clients' transport: sends each attempt to a replica of its choosing over hyper,
/// reads the whole answer, and records the attempt and its answer (or its loss).
#[derive(Clone)]
struct Recording {
    inner: Client<SimConnector, Full<Bytes>>,
    client: usize,
    replicas: usize,
    rng: Arc<Mutex<ChaCha8Rng>>,
    recorder: Recorder,
}

/// Records an attempt as lost if it is dropped before its answer (the client's timeout).
struct Pending {
    recorder: Recorder,
    client: usize,
    op: usize,
    replica: usize,
    done: bool,
}

impl Pending {
    fn finish(&mut self, kind: Kind) {
        self.done = true;
        self.recorder.record(kind);
    }
}

impl Drop for Pending {
    fn drop(&mut self) {
        if !self.done && turmoil::sim_elapsed().is_some() {
            let why = "cut off by the client's attempt timeout".to_owned();
            self.recorder.record(Kind::Lost { client: self.client, op: self.op, replica: self.replica, why });
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
        let tag = request.extensions().get::<OpTag>().copied().unwrap_or(OpTag { client: self.client, op: usize::MAX });
        let replica = self.rng.lock().unwrap_or_else(PoisonError::into_inner).random_range(0..self.replicas);
        let path = request.uri().path_and_query().map_or("/", |path| path.as_str()).to_owned();
        *request.uri_mut() = Uri::try_from(format!("http://replica-{replica}{path}")).expect("a valid URI");
        let key =
            request.headers().get(idem_http::IDEMPOTENCY_KEY).map(|value| String::from_utf8_lossy(value.as_bytes()));
        // The key as sent: a structured-field string (`"abc"`) or a bare token mean the same key.
        let key = key.map(|key| key.trim_matches('"').to_owned()).unwrap_or_default();
        self.recorder.record(Kind::Send { client: tag.client, op: tag.op, replica, key });
        let mut pending =
            Pending { recorder: self.recorder.clone(), client: tag.client, op: tag.op, replica, done: false };
        let inner = self.inner.clone();
        Box::pin(async move {
            let response = match inner.request(request).await {
                Ok(response) => response,
                Err(error) => {
                    let why = format!("transport: {error}");
                    pending.finish(Kind::Lost { client: tag.client, op: tag.op, replica, why });
                    return Err(error.into());
                }
            };
            let (parts, body) = response.into_parts();
            let body = match body.collect().await {
                Ok(collected) => collected.to_bytes(),
                Err(error) => {
                    let why = format!("body: {error}");
                    pending.finish(Kind::Lost { client: tag.client, op: tag.op, replica, why });
                    return Err(error.into());
                }
            };
            let replayed = parts.headers.get(idem_http::IDEMPOTENT_REPLAYED).is_some_and(|value| value == "true");
            let headers = parts
                .headers
                .iter()
                .filter(|(name, _)| {
                    !matches!(name.as_str(), "date" | "content-length" | "idempotency-key" | "idempotent-replayed")
                })
                .map(|(name, value)| (name.as_str().to_owned(), Bytes::copy_from_slice(value.as_bytes())))
                .collect();
            let answer = Answer { status: parts.status.as_u16(), replayed, headers, body: body.clone() };
            pending.finish(Kind::Answer { client: tag.client, op: tag.op, replica, answer });
            Ok(Response::from_parts(parts, Full::new(body)))
        })
    }
}
