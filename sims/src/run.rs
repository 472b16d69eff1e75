//! One run: build the simulated world from the seed, drive it with the fault schedule,
//! then check the history.

use std::sync::atomic::{AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use axum::middleware::from_fn;
use idem_core::{Clock, Policy, Principal};
use idem_http::ConflictPolicy;
use idem_server::{AppBuilder, BeforeWriteHook, HandlerWrap, PurgeSchedule, SeededIds};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::audit::{Audit, auditor};
use crate::check::check;
use crate::client::client_software;
use crate::clock::{SkewedClock, sim_ms};
use crate::faults::{Action, FaultMix, Node, ms};
use crate::glue::{self, HandlerFaults};
use crate::history::{Kind, Recorder};
use crate::hosts::Links;
use crate::net::SimListener;
use crate::plan::{TOKENS, plan};
use crate::remote::{LedgerBug, Remote, RemoteLedger, RemoteStore};
use crate::report::{Coverage, RunReport, Trace};
use crate::scenario::Settings;
use crate::store::{self, Disk, HostState, SharedMailbox};
use crate::{Scenario, Variant};

/// How long a request for a key in flight waits in the scenario `conflict-wait`.
const CONFLICT_WAIT: Duration = Duration::from_secs(3);
/// The host that reads the store as a user would, after healing.
const AUDITOR_HOST: &str = "auditor";
/// turmoil's latency for every link outside a spike.
const LATENCY_MAX: Duration = Duration::from_millis(10);

/// Everything the hosts share, for one run.
pub(crate) struct World {
    pub(crate) seed: u64,
    pub(crate) settings: Settings,
    variant: Variant,
    pub(crate) mix: FaultMix,
    pub(crate) recorder: Recorder,
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
    /// Operations that have not ended yet (the audit waits for none).
    pub(crate) ops_left: Arc<AtomicUsize>,
}

/// Runs `seed` of `scenario` against `variant` and checks the history.
pub(crate) fn run(seed: u64, scenario: Scenario, variant: Variant) -> RunReport {
    let settings = scenario.settings();
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mix = FaultMix::draw(&mut rng, &settings);
    let schedule = mix.schedule(&mut rng, &settings);
    let plans = plan(&mut rng, &settings, scenario == Scenario::ClientDefaults);
    let ops_total = plans.iter().flatten().map(Vec::len).sum();
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
        ops_left: Arc::new(AtomicUsize::new(ops_total)),
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

    let disk: Disk = Arc::new(Mutex::new(HostState::new(0, scenario, world.variant)));
    let disk_at_end = Arc::clone(&disk);
    let store_boots = Arc::new(AtomicU32::new(0));
    {
        let world = Arc::clone(&world);
        sim.host(store::STORE_HOST, move || {
            let boot = store_boots.fetch_add(1, Ordering::SeqCst);
            if !world.settings.durable_store && boot > 0 {
                // A volatile store starts empty: everything it held is lost.
                *disk.lock().unwrap_or_else(PoisonError::into_inner) =
                    HostState::new(boot, world.settings.scenario, world.variant);
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
    let audit = Audit {
        // Each caller twice, its scheme spelled two ways: one caller, so one list.
        auths: TOKENS[..settings.clients.min(TOKENS.len())]
            .iter()
            .flat_map(|token| [format!("Bearer {token}"), format!("bearer {token}")])
            .collect(),
        replicas: settings.replicas,
        ops_left: Arc::clone(&world.ops_left),
        not_before_ms: ms(settings.run_for),
        recorder: world.recorder.clone(),
    };
    sim.client(AUDITOR_HOST, auditor(audit));

    let run_error = drive(&mut sim, &world, &schedule);
    let simulated = sim.elapsed();
    let events = world.recorder.take();
    let final_epoch = disk_at_end.lock().unwrap_or_else(PoisonError::into_inner).epoch();
    let checked = check(&events, &settings, final_epoch, run_error.as_deref());
    let coverage = Coverage::of(&events, checked.expected.len(), settings.response_body_bytes_max);
    let trace = Trace::new(events.iter().map(ToString::to_string).collect());
    let (violations, expected) = (checked.violations, checked.expected);
    RunReport { seed, scenario, variant, faults: mix, trace, violations, expected, coverage, simulated }
}

/// Steps the simulation to its end, applying the schedule; returns turmoil's error, if any.
fn drive(sim: &mut turmoil::Sim<'_>, world: &World, schedule: &[crate::faults::Scheduled]) -> Option<String> {
    let settings = &world.settings;
    let mut links = Links::new(hosts(settings));
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
                    links.partition(sim, &a.name(), &b.name());
                    record(sim, format!("partition {} <-> {}", a.name(), b.name()));
                }
                Action::Partition { one_way: Some((from, to)), .. } => {
                    links.partition_oneway(sim, &from.name(), &to.name());
                    record(sim, format!("partition {} -> {}", from.name(), to.name()));
                }
                Action::Repair { a, b, one_way: None } => {
                    links.repair(sim, &a.name(), &b.name());
                    record(sim, format!("repair {} <-> {}", a.name(), b.name()));
                }
                Action::Repair { one_way: Some((from, to)), .. } => {
                    links.repair_oneway(sim, &from.name(), &to.name());
                    record(sim, format!("repair {} -> {}", from.name(), to.name()));
                }
                Action::Hold { a, b } => {
                    links.hold(sim, &a.name(), &b.name());
                    record(sim, format!("hold {} <-> {}", a.name(), b.name()));
                }
                Action::Release { a, b } => {
                    links.release(sim, &a.name(), &b.name());
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
                        links.bounce(sim, &Node::Replica(*replica).name());
                        record(sim, format!("bounce replica-{replica}"));
                    }
                }
                Action::CrashStore => {
                    if !store_down {
                        links.crash(sim, store::STORE_HOST);
                        store_down = true;
                        record(sim, "crash store".to_owned());
                    }
                }
                Action::RestartStore => {
                    if store_down {
                        links.bounce(sim, store::STORE_HOST);
                        store_down = false;
                        record(sim, "restart store".to_owned());
                    }
                }
                Action::Heal => {
                    for replica in 0..settings.replicas {
                        let r = Node::Replica(replica).name();
                        for peer in (0..settings.clients).map(Node::Client).chain([Node::Store]) {
                            links.release(sim, &r, &peer.name());
                            links.repair(sim, &r, &peer.name());
                            sim.set_link_max_message_latency(&*r, peer.name(), LATENCY_MAX);
                        }
                        armed[replica] = None;
                        world.isolation_armed[replica].store(0, Ordering::SeqCst);
                        world.isolation_due[replica].store(0, Ordering::SeqCst);
                        isolated_until[replica] = None;
                        if down_until[replica].take().is_some() {
                            links.bounce(sim, &r);
                        }
                    }
                    if store_down {
                        links.bounce(sim, store::STORE_HOST);
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
                links.partition(sim, &name, store::STORE_HOST);
                isolated_until[replica] = Some(now + due);
                record(sim, format!("partition {name} <-> store for {due} ms, from a handler's start"));
            }
            if isolated_until[replica].is_some_and(|until| now >= until) {
                isolated_until[replica] = None;
                links.repair(sim, &name, store::STORE_HOST);
                record(sim, format!("repair {name} <-> store"));
            }
            if let Some((until_ms, downtime_ms)) = armed[replica] {
                if now > until_ms {
                    armed[replica] = None;
                } else if world.in_handler[replica].load(Ordering::SeqCst) > 0 {
                    links.crash(sim, &Node::Replica(replica).name());
                    armed[replica] = None;
                    down_until[replica] = Some(now + downtime_ms);
                    record(sim, format!("crash replica-{replica} in a handler"));
                }
            }
            if down_until[replica].is_some_and(|until| now >= until) {
                down_until[replica] = None;
                links.bounce(sim, &Node::Replica(replica).name());
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

/// Every host of a run, by name.
fn hosts(settings: &Settings) -> Vec<String> {
    let replicas = (0..settings.replicas).map(Node::Replica);
    let clients = (0..settings.clients).map(Node::Client);
    let mut hosts: Vec<String> = replicas.chain(clients).chain([Node::Store]).map(Node::name).collect();
    hosts.push(AUDITOR_HOST.to_owned());
    hosts
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
    let bug = match world.variant {
        Variant::DoubleWrite => LedgerBug::DoubleWrite,
        Variant::RowOutsideTransaction => LedgerBug::RowOutsideTransaction,
        Variant::KeepsOversized => LedgerBug::KeepsOversized,
        _ => LedgerBug::None,
    };
    let ledger = Arc::new(RemoteLedger { store: Arc::new(RemoteStore(remote)), bug, separate: settings.separate });
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
    let mut policy = Policy::new(settings.lease, settings.retention)?;
    if let Some(period) = settings.tombstone {
        policy = policy.with_tombstone(period)?;
    }
    let purge = PurgeSchedule { every: settings.purge_every, batch_max: 64, batches_per_round_max: 4 };
    let mut builder = AppBuilder::new(ledger, clock, ids).policy(policy).purge(purge).before_write(hook);
    if let Some(bytes_max) = settings.response_body_bytes_max {
        builder = builder.response_body_bytes_max(bytes_max);
    }
    if settings.scenario == Scenario::ConflictWait {
        builder = builder.conflict(ConflictPolicy::Wait(CONFLICT_WAIT));
    }
    match world.variant {
        Variant::UnscopedKeys => builder = builder.principal(Arc::new(|_| Ok(Principal::anonymous()))),
        Variant::TokenCaseFolded => builder = builder.principal(Arc::new(glue::folded_principal)),
        _ => {}
    }
    builder = builder.wrap_handlers(handler_wrap(&world, replica));
    let app = builder.build()?;
    tokio::spawn(app.purge_forever());
    let mut router = app.router();
    match world.variant {
        Variant::StaleAnswersOwn => router = router.layer(from_fn(glue::answer_own)),
        Variant::RejectsQuery => router = router.layer(from_fn(glue::reject_query)),
        Variant::ReplayDropsHeader => router = router.layer(from_fn(glue::drop_repeated_on_replay)),
        _ => {}
    }
    let listener = turmoil::net::TcpListener::bind(("0.0.0.0", 80)).await?;
    idem_server::serve(SimListener(listener), router, std::future::pending()).await?;
    Ok(())
}

/// What wraps each keyed handler inside the idempotency layer, by scenario and variant.
fn handler_wrap(world: &World, replica: usize) -> HandlerWrap<RemoteLedger> {
    let faults = (world.settings.scenario == Scenario::HandlerFaults).then(|| {
        Arc::new(HandlerFaults {
            rng: Mutex::new(ChaCha8Rng::seed_from_u64(world.seed ^ (0xFA << 40) ^ replica as u64)),
            heal_ms: ms(world.settings.heal_at),
            recorder: world.recorder.clone(),
        })
    });
    let headers = world.settings.separate;
    let stale_answers_own = world.variant == Variant::StaleAnswersOwn;
    Arc::new(move |mut routes| {
        if let Some(faults) = &faults {
            let faults = Arc::clone(faults);
            routes = routes
                .route_layer(from_fn(move |request, next| glue::handler_fault(Arc::clone(&faults), request, next)));
        }
        if headers {
            routes = routes.route_layer(from_fn(glue::repeated_headers));
        }
        if stale_answers_own {
            routes = routes.route_layer(from_fn(glue::capture_own));
        }
        routes
    })
}
