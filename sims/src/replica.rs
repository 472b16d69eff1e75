//! A replica host: the shipped payments app, built by idem-server's composition root from
//! simulated parts (the store and ledger over the network, a skewed clock, seeded ids), with
//! the scenario's and the planted bugs' layers, serving on turmoil's TCP.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::middleware::from_fn;
use idem_core::{Clock, Policy, Principal};
use idem_http::ConflictPolicy;
use idem_server::{AppBuilder, BeforeWriteHook, HandlerWrap, PurgeSchedule, SeededIds};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

use crate::clock::SkewedClock;
use crate::faults::ms;
use crate::glue::{self, HandlerFaults};
use crate::net::SimListener;
use crate::remote::{LedgerBug, Remote, RemoteLedger, RemoteStore};
use crate::world::World;
use crate::{Scenario, Variant};

/// How long a request for a key in flight waits in the scenario `conflict-wait`.
const CONFLICT_WAIT: Duration = Duration::from_secs(3);

/// Counts a handler as running until dropped (also when its replica crashes).
struct InHandler<'a>(&'a AtomicU32);

impl Drop for InHandler<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

/// A replica: the shipped app, built by the composition root from simulated parts.
pub(crate) async fn replica_software(world: Arc<World>, replica: usize) -> turmoil::Result {
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
