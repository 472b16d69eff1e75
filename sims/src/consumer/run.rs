//! One consumer run: build the world from the seed, drive it with the fault schedule,
//! check the history and the broker's final state.

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use idem_consumer::{Consumer, OnConflict};
use idem_core::{Policy, Redelivery};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::check::messages;
use crate::clock::SkewedClock;
use crate::consumer::broker::Broker;
use crate::consumer::broker_host::{self, BROKER_HOST, BrokerDisk};
use crate::consumer::faults::{Action, ConsumerMix, Peer, Scheduled};
use crate::consumer::handler::{Shared, SimHandler};
use crate::consumer::publisher::{self, PUBLISHER_HOST};
use crate::consumer::transport::{BrokerLink, SimTransport};
use crate::consumer::{Mode, Settings, coverage};
use crate::faults::{FaultMix, ms};
use crate::history::{Kind, Recorder, StoreOp};
use crate::host_state::{Disk, HostState};
use crate::hosts::Links;
use crate::remote::{Remote, RemoteStore};
use crate::report::{Coverage, RunReport, Trace};
use crate::store;
use crate::store_protocol::{STORE_HOST, SharedMailbox};
use crate::{Scenario, Variant};

/// turmoil's latency for every link.
const LATENCY_MAX: Duration = Duration::from_millis(10);
/// How many records a consumer handles at once.
const IN_FLIGHT_MAX: usize = 4;
/// Retention: far beyond a run, so a mismatch always meets the first payload's record.
const RETENTION: Duration = Duration::from_secs(3_600);

/// Everything the hosts share, for one run.
struct World {
    settings: Settings,
    variant: Variant,
    mix: ConsumerMix,
    recorder: Recorder,
    store_mailbox: SharedMailbox,
    broker_mailbox: broker_host::SharedMailbox,
    shared: Arc<Shared>,
    policy: Policy,
}

fn consumer_name(consumer: usize) -> String {
    format!("consumer-{consumer}")
}

/// Runs `seed` of the consumer `scenario` against `variant` and checks it.
pub(crate) fn run(seed: u64, scenario: Scenario, variant: Variant) -> RunReport {
    let settings = Settings::of(scenario);
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let skew_max = i64::try_from(settings.skew_max.as_millis()).unwrap_or(0);
    let mix = ConsumerMix::draw(&mut rng, settings.consumers, skew_max);
    let schedule = mix.schedule(&mut rng, settings.consumers, ms(settings.heal_at));
    let plan = publisher::plan(&mut rng, settings.ids, ms(settings.first_by), ms(settings.last_by));
    let recorder = Recorder::default();
    recorder.record_at(0, Kind::Fault(format!("seed {seed} scenario {scenario} variant {variant}")));
    recorder.record_at(0, Kind::Fault(format!("mix {mix}")));
    publisher::record_plan(&plan, &recorder);
    let policy = Policy::new(settings.lease, RETENTION).expect("a lease shorter than the retention");
    let shared = Arc::new(Shared {
        recorder: recorder.clone(),
        variant,
        heal_ms: ms(settings.heal_at),
        lease_ms: ms(settings.lease),
        slow_percent: mix.slow_handler_percent,
        failure_percent: mix.handler_failure_percent,
        executions: AtomicU64::new(0),
        in_handler: (0..settings.consumers).map(|_| AtomicU32::new(0)).collect(),
        rng: (0..settings.consumers)
            .map(|c| Mutex::new(ChaCha8Rng::seed_from_u64(rng.random::<u64>() ^ c as u64)))
            .collect(),
    });
    let world = Arc::new(World {
        settings,
        variant,
        mix: mix.clone(),
        recorder: recorder.clone(),
        store_mailbox: SharedMailbox::default(),
        broker_mailbox: broker_host::SharedMailbox::default(),
        shared,
        policy,
    });

    let mut sim = turmoil::Builder::new()
        .rng_seed(seed)
        .simulation_duration(settings.duration_max)
        .tick_duration(settings.tick)
        .min_message_latency(Duration::from_millis(1))
        .max_message_latency(LATENCY_MAX)
        .build();
    let store_disk: Disk = Arc::new(Mutex::new(HostState::new(0, scenario, variant)));
    {
        let world = Arc::clone(&world);
        sim.host(STORE_HOST, move || {
            store::host(
                Arc::clone(&store_disk),
                Arc::clone(&world.store_mailbox),
                world.variant,
                world.recorder.clone(),
            )
        });
    }
    let broker_disk: BrokerDisk =
        Arc::new(Mutex::new(Broker::new(settings.mode, ms(settings.ack_wait()), ms(settings.heartbeat_timeout))));
    let broker_at_end = Arc::clone(&broker_disk);
    {
        let world = Arc::clone(&world);
        let boots = Arc::new(AtomicU32::new(0));
        sim.host(BROKER_HOST, move || {
            let boot = boots.fetch_add(1, Ordering::SeqCst);
            broker_host::host(Arc::clone(&broker_disk), Arc::clone(&world.broker_mailbox), world.recorder.clone(), boot)
        });
    }
    for consumer in 0..settings.consumers {
        let world = Arc::clone(&world);
        sim.host(consumer_name(consumer), move || consumer_software(Arc::clone(&world), consumer));
    }
    let until_ms = ms(settings.run_for);
    sim.client(
        PUBLISHER_HOST,
        publisher::publisher(plan.clone(), Arc::clone(&world.broker_mailbox), recorder.clone(), until_ms),
    );

    let run_error = drive(&mut sim, &world, &schedule);
    let simulated = sim.elapsed();
    let events = recorder.take();
    let copies = broker_at_end.lock().unwrap_or_else(std::sync::PoisonError::into_inner).copies.clone();
    let checked = messages::check(&events, &plan, &copies, &settings, run_error.as_deref());
    let coverage = Coverage::of(&events, checked.expected.len(), None) + coverage::of(&events);
    let trace = Trace::new(events.iter().map(ToString::to_string).collect());
    RunReport {
        seed,
        scenario,
        variant,
        faults: FaultMix::of_consumers(mix),
        trace,
        violations: checked.violations,
        expected: checked.expected,
        coverage,
        simulated,
    }
}

/// A consumer host's software: the real consumer over the simulated broker and store.
async fn consumer_software(world: Arc<World>, consumer: usize) -> turmoil::Result {
    let settings = &world.settings;
    let remote = Remote {
        replica: consumer,
        mailbox: Arc::clone(&world.store_mailbox),
        timeout: settings.store_call_timeout,
        recorder: world.recorder.clone(),
    };
    let store = RemoteStore(remote);
    let link = BrokerLink::new(consumer, settings.mode, Arc::clone(&world.broker_mailbox), world.recorder.clone());
    let transport = SimTransport::new(Arc::clone(&link), settings.ack_wait());
    let handler = SimHandler { consumer, shared: Arc::clone(&world.shared), store: store.clone(), link };
    let redelivery = Redelivery { conflict_after_max: settings.lease, ..Redelivery::DEFAULT };
    let on_conflict = match settings.mode {
        Mode::AckWait => OnConflict::Redeliver,
        Mode::ChannelClose => OnConflict::Wait { max: settings.lease },
    };
    let clock = SkewedClock { skew_ms: world.mix.skew_ms.get(consumer).copied().unwrap_or(0) };
    let builder = Consumer::builder(Arc::new(store), transport)
        .policy(world.policy)
        .in_flight_max(IN_FLIGHT_MAX)
        .redelivery(redelivery)
        .on_conflict(on_conflict)
        .clock(Arc::new(clock));
    if settings.separate {
        builder.handler(handler)?.run_until(std::future::pending()).await;
    } else {
        builder.atomic(handler)?.run_until(std::future::pending()).await;
    }
    Ok(())
}

/// Per consumer: an armed crash (until, downtime) and when a crashed one restarts.
#[derive(Default, Clone, Copy)]
struct Arms {
    in_handler: Option<(u64, u64)>,
    after_commit: Option<(u64, u64)>,
    down_until: Option<u64>,
}

/// Steps the simulation to its end, applying the schedule; returns turmoil's error, if any.
fn drive(sim: &mut turmoil::Sim<'_>, world: &World, schedule: &[Scheduled]) -> Option<String> {
    let settings = &world.settings;
    let mut hosts: Vec<String> = (0..settings.consumers).map(consumer_name).collect();
    hosts.extend([BROKER_HOST, STORE_HOST, PUBLISHER_HOST].map(str::to_owned));
    let mut links = Links::new(hosts);
    let mut arms = vec![Arms::default(); settings.consumers];
    let (mut broker_down, mut store_down) = (false, false);
    let mut next = 0;
    let mut scanned = 0;
    let record = |sim: &turmoil::Sim<'_>, text: String| world.recorder.record_at(ms(sim.elapsed()), Kind::Fault(text));
    let peer_name = |peer: Peer| match peer {
        Peer::Broker => BROKER_HOST,
        Peer::Store => STORE_HOST,
    };
    loop {
        let now = ms(sim.elapsed());
        while let Some(scheduled) = schedule.get(next).filter(|scheduled| scheduled.at_ms <= now) {
            next += 1;
            match scheduled.action {
                Action::Partition { consumer, peer } => {
                    links.partition(sim, &consumer_name(consumer), peer_name(peer));
                    record(sim, format!("partition consumer-{consumer} <-> {}", peer_name(peer)));
                }
                Action::Repair { consumer, peer } => {
                    links.repair(sim, &consumer_name(consumer), peer_name(peer));
                    record(sim, format!("repair consumer-{consumer} <-> {}", peer_name(peer)));
                }
                Action::ArmCrashInHandler { consumer, until_ms, downtime_ms } => {
                    arms[consumer].in_handler = Some((until_ms, downtime_ms));
                }
                Action::ArmCrashAfterCommit { consumer, until_ms, downtime_ms } => {
                    arms[consumer].after_commit = Some((until_ms, downtime_ms));
                }
                Action::Bounce { consumer } if arms[consumer].down_until.is_none() => {
                    links.bounce(sim, &consumer_name(consumer));
                    record(sim, format!("bounce consumer-{consumer}"));
                }
                Action::Bounce { .. } => {}
                Action::CrashBroker | Action::CrashStore => {
                    let (host, down) = if scheduled.action == Action::CrashBroker {
                        (BROKER_HOST, &mut broker_down)
                    } else {
                        (STORE_HOST, &mut store_down)
                    };
                    if !*down {
                        links.crash(sim, host);
                        *down = true;
                        record(sim, format!("crash {host}"));
                    }
                }
                Action::RestartBroker | Action::RestartStore => {
                    let (host, down) = if scheduled.action == Action::RestartBroker {
                        (BROKER_HOST, &mut broker_down)
                    } else {
                        (STORE_HOST, &mut store_down)
                    };
                    if *down {
                        links.bounce(sim, host);
                        *down = false;
                        record(sim, format!("restart {host}"));
                    }
                }
                Action::Heal => {
                    for (consumer, arm) in arms.iter_mut().enumerate() {
                        let name = consumer_name(consumer);
                        links.repair(sim, &name, BROKER_HOST);
                        links.repair(sim, &name, STORE_HOST);
                        arm.in_handler = None;
                        arm.after_commit = None;
                        if arm.down_until.take().is_some() {
                            links.bounce(sim, &name);
                        }
                    }
                    for (host, down) in [(BROKER_HOST, &mut broker_down), (STORE_HOST, &mut store_down)] {
                        if std::mem::take(down) {
                            links.bounce(sim, host);
                        }
                    }
                    record(sim, "heal: every link repaired, every host up".to_owned());
                }
            }
        }
        // The store's completions since the last step, by consumer: an armed crash after
        // commit strikes now, before the answer (and so the ack) can leave the store.
        let mut committed = vec![false; settings.consumers];
        scanned = world.recorder.scan_from(scanned, |event| {
            if let Kind::Store(store) = &event.kind
                && store.applied
                && matches!(store.op, StoreOp::Complete | StoreOp::CompleteInTransaction)
                && let Some(flag) = committed.get_mut(store.replica)
            {
                *flag = true;
            }
        });
        for consumer in 0..settings.consumers {
            let name = consumer_name(consumer);
            let arm = &mut arms[consumer];
            let in_handler = world.shared.in_handler[consumer].load(Ordering::SeqCst) > 0;
            let strike = [
                (&mut arm.in_handler, in_handler, "in a handler"),
                (&mut arm.after_commit, committed[consumer], "between commit and ack"),
            ];
            for (armed, now_true, what) in strike {
                let Some((until_ms, downtime_ms)) = *armed else { continue };
                if now > until_ms {
                    *armed = None;
                } else if now_true && arm.down_until.is_none() {
                    links.crash(sim, &name);
                    *armed = None;
                    arm.down_until = Some(now + downtime_ms);
                    record(sim, format!("crash {name} {what}"));
                }
            }
            if arm.down_until.is_some_and(|until| now >= until) {
                arm.down_until = None;
                links.bounce(sim, &name);
                record(sim, format!("restart {name}"));
            }
        }
        match sim.step() {
            Ok(true) => return None,
            Ok(false) => {}
            Err(error) => return Some(error.to_string()),
        }
    }
}
