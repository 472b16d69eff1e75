//! One run: build the simulated world from the seed, drive it with the fault schedule,
//! then check the history.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::extract::Request as AxumRequest;
use axum::middleware::{Next, from_fn};
use axum::response::{IntoResponse, Response as AxumResponse};
use bytes::Bytes;
use http::{HeaderMap, Request, Response, StatusCode, Uri};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use idem_client::{BoxError, IdempotentRetryLayer, OperationKey, RetryError};
use idem_core::{Clock, Key, Policy, Principal};
use idem_http::Outcome;
use idem_server::{AppBuilder, BeforeWriteHook, PurgeSchedule, SeededIds};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use tower::{Layer, Service, ServiceExt};

use crate::check::check;
use crate::clock::{SkewedClock, sim_ms};
use crate::faults::{Action, FaultMix, Node, ms};
use crate::history::{Answer, Kind, Recorder};
use crate::net::{SimConnector, SimListener};
use crate::report::{Coverage, RunReport, Trace};
use crate::scenario::Settings;
use crate::store::{self, Disk, HostState, Remote, RemoteLedger, RemoteStore, SharedMailbox, payment_body};
use crate::{Scenario, Variant};

/// The clients' bearer tokens, one principal each.
const TOKENS: [&str; 3] = ["alice", "bob", "carol"];
/// turmoil's latency for every link outside a spike.
const LATENCY_MAX: Duration = Duration::from_millis(10);

/// Everything the hosts share, for one run.
struct World {
    seed: u64,
    settings: Settings,
    variant: Variant,
    mix: FaultMix,
    recorder: Recorder,
    mailbox: SharedMailbox,
    /// Handlers running on each replica (the armed crashes strike when it is above zero).
    in_handler: Vec<AtomicU32>,
    replica_boots: Vec<AtomicU64>,
    /// Per replica: how long each handler takes.
    handler_rng: Vec<Mutex<ChaCha8Rng>>,
    /// Per replica: an armed isolation's length (0: none), taken by the next handler.
    isolation_armed: Vec<AtomicU64>,
    /// Per replica: an isolation a handler asked for (0: none), for the driver to start.
    isolation_due: Vec<AtomicU64>,
}

/// One logical operation of a client: the same key on every submission.
#[derive(Debug, Clone)]
struct Op {
    index: usize,
    start_ms: u64,
    token: &'static str,
    key: Key,
    body: Bytes,
}

/// Marks a request with its operation, for the recording transport.
#[derive(Debug, Clone, Copy)]
struct OpTag {
    client: usize,
    op: usize,
}

/// Runs `seed` of `scenario` against `variant` and checks the history.
pub(crate) fn run(seed: u64, scenario: Scenario, variant: Variant) -> RunReport {
    let settings = scenario.settings();
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mix = FaultMix::draw(&mut rng, &settings);
    let schedule = mix.schedule(&mut rng, &settings);
    let plans = plan(&mut rng, &settings);
    let world = Arc::new(World {
        seed,
        settings,
        variant,
        mix: mix.clone(),
        recorder: Recorder::default(),
        mailbox: SharedMailbox::default(),
        in_handler: (0..settings.replicas).map(|_| AtomicU32::new(0)).collect(),
        replica_boots: (0..settings.replicas).map(|_| AtomicU64::new(0)).collect(),
        isolation_armed: (0..settings.replicas).map(|_| AtomicU64::new(0)).collect(),
        isolation_due: (0..settings.replicas).map(|_| AtomicU64::new(0)).collect(),
        handler_rng: (0..settings.replicas)
            .map(|r| Mutex::new(ChaCha8Rng::seed_from_u64(rng.random::<u64>() ^ r as u64)))
            .collect(),
    });
    world.recorder.record_at(0, Kind::Fault(format!("seed {seed} scenario {scenario} variant {variant}")));
    world.recorder.record_at(0, Kind::Fault(format!("mix {mix}")));

    let mut sim = turmoil::Builder::new()
        .rng_seed(seed)
        .simulation_duration(settings.duration_max)
        .tick_duration(settings.tick)
        .min_message_latency(Duration::from_millis(1))
        .max_message_latency(LATENCY_MAX)
        .build();

    let disk: Disk = Arc::new(Mutex::new(HostState::new(0, world.variant)));
    let store_boots = Arc::new(AtomicU32::new(0));
    {
        let world = Arc::clone(&world);
        sim.host(store::STORE_HOST, move || {
            let boot = store_boots.fetch_add(1, Ordering::SeqCst);
            if !world.settings.durable_store && boot > 0 {
                // A volatile store starts empty: everything it held is lost.
                *disk.lock().unwrap_or_else(PoisonError::into_inner) = HostState::new(boot, world.variant);
            }
            store::host(Arc::clone(&disk), Arc::clone(&world.mailbox), world.variant, world.recorder.clone())
        });
    }
    for replica in 0..settings.replicas {
        let world = Arc::clone(&world);
        sim.host(Node::Replica(replica).name(), move || replica_software(Arc::clone(&world), replica));
    }
    for (client, streams) in plans.into_iter().enumerate() {
        sim.client(Node::Client(client).name(), client_software(Arc::clone(&world), client, streams));
    }

    let run_error = drive(&mut sim, &world, &schedule);
    let simulated = sim.elapsed();
    let events = world.recorder.take();
    let violations = check(&events, &settings, run_error.as_deref());
    let coverage = Coverage::of(&events);
    let trace = Trace::new(events.iter().map(ToString::to_string).collect());
    RunReport { seed, scenario, variant, faults: mix, trace, violations, coverage, simulated }
}

/// Steps the simulation to its end, applying the schedule; returns turmoil's error, if any.
fn drive(sim: &mut turmoil::Sim<'_>, world: &World, schedule: &[crate::faults::Scheduled]) -> Option<String> {
    let settings = &world.settings;
    let mut next = 0;
    let mut armed: Vec<Option<(u64, u64)>> = vec![None; settings.replicas];
    let mut down_until: Vec<Option<u64>> = vec![None; settings.replicas];
    let mut store_down = false;
    let mut isolated_until: Vec<Option<u64>> = vec![None; settings.replicas];
    let mut isolation_expires: Vec<u64> = vec![0; settings.replicas];
    let record = |sim: &turmoil::Sim<'_>, text: String| world.recorder.record_at(ms(sim.elapsed()), Kind::Fault(text));
    loop {
        let now = ms(sim.elapsed());
        while let Some(scheduled) = schedule.get(next).filter(|scheduled| scheduled.at_ms <= now) {
            next += 1;
            match &scheduled.action {
                Action::Partition { a, b, one_way: None } => {
                    sim.partition(a.name(), b.name());
                    record(sim, format!("partition {} <-> {}", a.name(), b.name()));
                }
                Action::Partition { one_way: Some((from, to)), .. } => {
                    sim.partition_oneway(from.name(), to.name());
                    record(sim, format!("partition {} -> {}", from.name(), to.name()));
                }
                Action::Repair { a, b, one_way: None } => {
                    sim.repair(a.name(), b.name());
                    record(sim, format!("repair {} <-> {}", a.name(), b.name()));
                }
                Action::Repair { one_way: Some((from, to)), .. } => {
                    sim.repair_oneway(from.name(), to.name());
                    record(sim, format!("repair {} -> {}", from.name(), to.name()));
                }
                Action::Hold { a, b } => {
                    sim.hold(a.name(), b.name());
                    record(sim, format!("hold {} <-> {}", a.name(), b.name()));
                }
                Action::Release { a, b } => {
                    sim.release(a.name(), b.name());
                    record(sim, format!("release {} <-> {}", a.name(), b.name()));
                }
                Action::Spike { a, b, max_ms } => {
                    sim.set_link_max_message_latency(a.name(), b.name(), Duration::from_millis(*max_ms));
                    record(sim, format!("latency {} <-> {} up to {max_ms} ms", a.name(), b.name()));
                }
                Action::Unspike { a, b } => {
                    sim.set_link_max_message_latency(a.name(), b.name(), LATENCY_MAX);
                    record(sim, format!("latency {} <-> {} normal", a.name(), b.name()));
                }
                Action::ArmCrash { replica, until_ms, downtime_ms } => {
                    if down_until[*replica].is_none() {
                        armed[*replica] = Some((*until_ms, *downtime_ms));
                    }
                }
                Action::ArmIsolation { replica, until_ms, length_ms } => {
                    world.isolation_armed[*replica].store(*length_ms, Ordering::SeqCst);
                    isolation_expires[*replica] = *until_ms;
                }
                Action::Bounce { replica } => {
                    if down_until[*replica].is_none() {
                        sim.bounce(Node::Replica(*replica).name());
                        record(sim, format!("bounce replica-{replica}"));
                    }
                }
                Action::CrashStore => {
                    if !store_down {
                        sim.crash(store::STORE_HOST);
                        store_down = true;
                        record(sim, "crash store".to_owned());
                    }
                }
                Action::RestartStore => {
                    if store_down {
                        sim.bounce(store::STORE_HOST);
                        store_down = false;
                        record(sim, "restart store".to_owned());
                    }
                }
                Action::Heal => {
                    for replica in 0..settings.replicas {
                        let r = Node::Replica(replica).name();
                        for peer in (0..settings.clients).map(Node::Client).chain([Node::Store]) {
                            sim.release(&*r, peer.name());
                            sim.repair(&*r, peer.name());
                            sim.set_link_max_message_latency(&*r, peer.name(), LATENCY_MAX);
                        }
                        armed[replica] = None;
                        world.isolation_armed[replica].store(0, Ordering::SeqCst);
                        world.isolation_due[replica].store(0, Ordering::SeqCst);
                        isolated_until[replica] = None;
                        if down_until[replica].take().is_some() {
                            sim.bounce(&*r);
                        }
                    }
                    if store_down {
                        sim.bounce(store::STORE_HOST);
                        store_down = false;
                    }
                    record(sim, "heal: every link repaired, every host up".to_owned());
                }
            }
        }
        for replica in 0..settings.replicas {
            let name = Node::Replica(replica).name();
            if now > isolation_expires[replica] {
                world.isolation_armed[replica].store(0, Ordering::SeqCst);
            }
            let due = world.isolation_due[replica].swap(0, Ordering::SeqCst);
            if due > 0 && isolated_until[replica].is_none() {
                sim.partition(&*name, store::STORE_HOST);
                isolated_until[replica] = Some(now + due);
                record(sim, format!("partition {name} <-> store for {due} ms, from a handler's start"));
            }
            if isolated_until[replica].is_some_and(|until| now >= until) {
                isolated_until[replica] = None;
                sim.repair(&*name, store::STORE_HOST);
                record(sim, format!("repair {name} <-> store"));
            }
            if let Some((until_ms, downtime_ms)) = armed[replica] {
                if now > until_ms {
                    armed[replica] = None;
                } else if world.in_handler[replica].load(Ordering::SeqCst) > 0 {
                    sim.crash(Node::Replica(replica).name());
                    armed[replica] = None;
                    down_until[replica] = Some(now + downtime_ms);
                    record(sim, format!("crash replica-{replica} in a handler"));
                }
            }
            if down_until[replica].is_some_and(|until| now >= until) {
                down_until[replica] = None;
                sim.bounce(Node::Replica(replica).name());
                record(sim, format!("restart replica-{replica}"));
            }
        }
        match sim.step() {
            Ok(true) => return None,
            Ok(false) => {}
            Err(error) => return Some(error.to_string()),
        }
    }
}

/// The operations of each client, per stream: fresh keys, a key reused with another body,
/// an operation submitted twice at once, and one key string that two principals share
/// (same body).
fn plan(rng: &mut ChaCha8Rng, settings: &Settings) -> Vec<Vec<Vec<Op>>> {
    let span_ms = ms(settings.last_start);
    let shared_key = format!("shared-{:08x}", rng.random::<u32>());
    let shared_body = payment_body(rng.random_range(100..=99_999), "USD", "merchant-shared");
    let mut plans = Vec::new();
    let mut index = 0;
    for client in 0..settings.clients {
        let token = TOKENS[client % TOKENS.len()];
        let mut streams = Vec::new();
        for stream in 0..settings.streams_per_client {
            let mut ops: Vec<Op> = Vec::new();
            for k in 0..settings.ops_per_stream {
                let slot = span_ms / settings.ops_per_stream as u64;
                let start_ms = slot * k as u64 + rng.random_range(0..slot);
                let amount = rng.random_range(100..=99_999);
                let destination = format!("merchant-{client}");
                let duplicate =
                    streams.first().and_then(|first: &Vec<Op>| first.get(k)).filter(|_| rng.random_bool(0.3));
                let (key, body, start_ms) = if client < 2 && stream == 0 && k == 1 {
                    (shared_key.clone(), shared_body.clone(), start_ms)
                } else if let Some(original) = duplicate {
                    // The same operation sent twice at once (a double submit): two requests
                    // with one key in flight together, so one can take over from the other.
                    let start_ms = original.start_ms + rng.random_range(0..1_500);
                    (original.key.as_str().to_owned(), original.body.clone(), start_ms)
                } else if let Some(previous) = ops.last().filter(|_| rng.random_bool(0.25)) {
                    // Reused key, another body: a 422, or an execution if the first was released.
                    (previous.key.as_str().to_owned(), payment_body(amount + 1, "USD", &destination), start_ms)
                } else {
                    let key = format!("c{client}s{stream}k{k}-{:08x}", rng.random::<u32>());
                    (key, payment_body(amount, "USD", &destination), start_ms)
                };
                let key = Key::try_from(key.as_str()).expect("generated keys are visible ASCII");
                ops.push(Op { index, start_ms, token, key, body });
                index += 1;
            }
            streams.push(ops);
        }
        plans.push(streams);
    }
    plans
}

/// Counts a handler as running until dropped (also when its replica crashes).
struct InHandler<'a>(&'a AtomicU32);

impl Drop for InHandler<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

impl World {
    /// How long the next handler on `replica` takes: short, or (a share of them, before
    /// healing) longer than the lease.
    fn handler_delay(&self, replica: usize) -> Duration {
        let mut rng = self.handler_rng[replica].lock().unwrap_or_else(PoisonError::into_inner);
        let before_heal = sim_ms() < ms(self.settings.heal_at);
        let isolation_ms = self.isolation_armed[replica].swap(0, Ordering::SeqCst);
        if isolation_ms > 0 && before_heal {
            // This handler outlives its isolation: its claim is taken over while it runs.
            self.isolation_due[replica].store(isolation_ms, Ordering::SeqCst);
            return Duration::from_millis(isolation_ms + rng.random_range(300..=1_500));
        }
        let slow = before_heal && rng.random_range(0..100) < self.mix.slow_handler_percent;
        let delay_ms = if slow {
            rng.random_range(ms(self.settings.lease) / 2..=self.mix.slow_handler_ms_max)
        } else {
            rng.random_range(5..=50)
        };
        Duration::from_millis(delay_ms)
    }
}

/// A replica: the shipped app, built by the composition root from simulated parts.
async fn replica_software(world: Arc<World>, replica: usize) -> turmoil::Result {
    let boot = world.replica_boots[replica].fetch_add(1, Ordering::SeqCst);
    let settings = world.settings;
    let remote = Remote {
        replica,
        mailbox: Arc::clone(&world.mailbox),
        timeout: settings.store_call_timeout,
        recorder: world.recorder.clone(),
    };
    let ledger = Arc::new(RemoteLedger { store: Arc::new(RemoteStore(remote)) });
    let clock: Arc<dyn Clock> = Arc::new(SkewedClock { skew_ms: world.mix.skew_ms[replica] });
    // Ids differ per replica and per boot, as an OS-seeded generator's would.
    let ids = Arc::new(SeededIds::new(world.seed.rotate_left(17) ^ ((replica as u64) << 48) ^ boot));
    let hook: BeforeWriteHook = {
        let world = Arc::clone(&world);
        Arc::new(move || {
            let world = Arc::clone(&world);
            Box::pin(async move {
                world.in_handler[replica].fetch_add(1, Ordering::SeqCst);
                let _inside = InHandler(&world.in_handler[replica]);
                tokio::time::sleep(world.handler_delay(replica)).await;
            })
        })
    };
    let policy = Policy::new(settings.lease, settings.retention)?;
    let purge = PurgeSchedule { every: Duration::from_secs(5), batch_max: 64, batches_per_round_max: 4 };
    let mut builder = AppBuilder::new(ledger, clock, ids).policy(policy).purge(purge).before_write(hook);
    match world.variant {
        Variant::UnscopedKeys => builder = builder.principal(Arc::new(|_| Ok(Principal::anonymous()))),
        Variant::StaleAnswersOwn => {
            builder = builder.wrap_handlers(Arc::new(|routes| routes.route_layer(from_fn(capture_own))))
        }
        Variant::Correct | Variant::NoClaim | Variant::NoFenceCheck | Variant::FenceReset => {}
    }
    let app = builder.build()?;
    tokio::spawn(app.purge_forever());
    let mut router = app.router();
    if world.variant == Variant::StaleAnswersOwn {
        router = router.layer(from_fn(answer_own));
    }
    let listener = turmoil::net::TcpListener::bind(("0.0.0.0", 80)).await?;
    idem_server::serve(SimListener(listener), router, std::future::pending()).await?;
    Ok(())
}

/// The planted bug `stale-answers-own`: a slot for the handler's own response.
#[derive(Clone, Default)]
struct OwnResponse(Arc<Mutex<Option<(StatusCode, HeaderMap, Bytes)>>>);

/// Inside the idempotency layer: keeps a copy of what the handler answered.
async fn capture_own(request: AxumRequest, next: Next) -> AxumResponse {
    let slot = request.extensions().get::<OwnResponse>().cloned();
    let response = next.run(request).await;
    let Some(slot) = slot else { return response };
    let (parts, body) = response.into_parts();
    let bytes = body.collect().await.map(http_body_util::Collected::to_bytes).unwrap_or_default();
    *slot.0.lock().unwrap_or_else(PoisonError::into_inner) = Some((parts.status, parts.headers.clone(), bytes.clone()));
    AxumResponse::from_parts(parts, axum::body::Body::from(bytes))
}

/// Outside the idempotency layer: when the layer answers for a superseded execution,
/// answers the execution's own response instead (the bug).
async fn answer_own(mut request: AxumRequest, next: Next) -> AxumResponse {
    let slot = OwnResponse::default();
    request.extensions_mut().insert(slot.clone());
    let response = next.run(request).await;
    if response.extensions().get::<Outcome>() != Some(&Outcome::Superseded) {
        return response;
    }
    match slot.0.lock().unwrap_or_else(PoisonError::into_inner).take() {
        Some((status, headers, body)) => (status, headers, body).into_response(),
        None => response,
    }
}

/// A client host: its streams of operations, concurrently, through the shipped retrying
/// client over the recording transport.
async fn client_software(world: Arc<World>, client: usize, streams: Vec<Vec<Op>>) -> turmoil::Result {
    let settings = world.settings;
    let transport = Recording {
        inner: Client::builder(TokioExecutor::new()).build(SimConnector),
        client,
        replicas: settings.replicas,
        rng: Arc::new(Mutex::new(ChaCha8Rng::seed_from_u64(world.seed ^ (0xC1 << 40) ^ client as u64))),
        recorder: world.recorder.clone(),
    };
    let layer = IdempotentRetryLayer::builder()
        .seed(world.seed.rotate_left(29) ^ client as u64)
        .attempt_timeout(Duration::from_millis(world.mix.attempt_timeout_ms))
        .deadline(settings.client_deadline)
        .backoff(Duration::from_millis(50), Duration::from_secs(1))
        .build()?;
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
    for submission in 1.. {
        recorder.record(Kind::Invoke {
            client,
            op: op.index,
            submission,
            token: op.token,
            key: op.key.as_str().to_owned(),
            body: op.body.clone(),
        });
        let request = Request::post("http://replica-0/payments")
            .header(http::header::AUTHORIZATION, format!("Bearer {}", op.token))
            .header(http::header::CONTENT_TYPE, "application/json")
            .extension(OperationKey(op.key.clone()))
            .extension(OpTag { client, op: op.index })
            .body(Full::new(op.body.clone()))
            .expect("a valid request");
        let status = match service.clone().oneshot(request).await {
            Ok(response) => Some(response.status().as_u16()),
            Err(RetryError::KeyReused { .. }) => Some(422),
            Err(error) => {
                recorder.record(Kind::Failed { client, op: op.index, why: error.to_string() });
                None
            }
        };
        if status.is_some() || sim_ms() >= give_up_ms {
            recorder.record(Kind::End { client, op: op.index, status });
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
        self.recorder.record(Kind::Send { client: tag.client, op: tag.op, replica });
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
