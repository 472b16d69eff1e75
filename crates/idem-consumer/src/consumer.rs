//! The consumer: a builder, and the loop that takes deliveries, bounded, and drains at shutdown.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use idem_core::consume::Redelivery;
use idem_core::{AtomicStore, Clock, Policy, Store};
use idem_once::Once;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinSet;

use crate::config::{ConfigError, OnConflict, Settings};
use crate::handler::{AtomicHandler, Handler};
use crate::message::{KeyFrom, PrincipalFrom};
use crate::mode::{Atomic, Mode, Separate};
use crate::observe;
use crate::process::{Shared, process};
use crate::transport::Transport;

/// First pause after the transport failed to deliver; doubled up to [`INTAKE_RETRY_MAX`].
const INTAKE_RETRY_FIRST: Duration = Duration::from_millis(100);
/// Longest pause after the transport failed to deliver.
const INTAKE_RETRY_MAX: Duration = Duration::from_secs(5);

/// An idempotent message consumer: every delivery's side effect runs once per key, its
/// outcome is recorded, and the delivery is acked only after that (SPEC "Message consumers").
pub struct Consumer<T, S, M> {
    transport: T,
    shared: Arc<Shared<S, M>>,
}

/// Settings for a [`Consumer`]; [`ConsumerBuilder::handler`] or [`ConsumerBuilder::atomic`]
/// checks them and builds it.
pub struct ConsumerBuilder<T, S> {
    store: Arc<S>,
    transport: T,
    settings: Settings,
}

/// What a consumer did by the time [`Consumer::run_until`] returned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Drained {
    /// Deliveries taken and settled (acked, naked or dead-lettered, or left to the
    /// broker after a failed settle).
    pub settled: u64,
    /// Deliveries still running when the drain time ran out: left as a crash would leave
    /// them (their claims lapse, the broker redelivers them).
    pub abandoned: u64,
}

impl<T: Transport, S: Store + 'static> Consumer<T, S, ()> {
    /// Starts building a consumer of `transport`'s deliveries guarded by `store`.
    pub fn builder(store: Arc<S>, transport: T) -> ConsumerBuilder<T, S> {
        ConsumerBuilder { store, transport, settings: Settings::default() }
    }
}

impl<T: Transport, S: Store + 'static> ConsumerBuilder<T, S> {
    /// Lease and retention (default: `Policy::DEFAULT`, a 10 s lease, 24 h retention).
    #[must_use]
    pub fn policy(mut self, policy: Policy) -> Self {
        self.settings.policy = policy;
        self
    }

    /// Most deliveries handled at once (default 64, at most 4096). Size the broker's side
    /// to match: JetStream `max_ack_pending`, AMQP prefetch.
    #[must_use]
    pub fn in_flight_max(mut self, in_flight_max: usize) -> Self {
        self.settings.in_flight_max = in_flight_max;
        self
    }

    /// The execution ceiling (default 5 min): past it a handler's claim is no longer
    /// renewed, so a hung handler frees its key one lease later.
    #[must_use]
    pub fn execution_max(mut self, execution_max: Duration) -> Self {
        self.settings.execution_max = execution_max;
        self
    }

    /// How long running handlers get to finish at shutdown (default 30 s).
    #[must_use]
    pub fn drain_max(mut self, drain_max: Duration) -> Self {
        self.settings.drain_max = drain_max;
        self
    }

    /// What a delivery does when another claim holds its record (default: nak).
    #[must_use]
    pub fn on_conflict(mut self, on_conflict: OnConflict) -> Self {
        self.settings.on_conflict = on_conflict;
        self
    }

    /// Redelivery delays and the bound on handler failures.
    #[must_use]
    pub fn redelivery(mut self, redelivery: Redelivery) -> Self {
        self.settings.redelivery = redelivery;
        self
    }

    /// Where the key comes from (default: the transport's message id).
    #[must_use]
    pub fn key_from(mut self, key_from: KeyFrom) -> Self {
        self.settings.key_from = key_from;
        self
    }

    /// Where the principal comes from (default: the stream and consumer, or the queue).
    #[must_use]
    pub fn principal_from(mut self, principal_from: PrincipalFrom) -> Self {
        self.settings.principal_from = principal_from;
        self
    }

    /// The clock the store is told the time by (default: the system clock).
    #[must_use]
    pub fn clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.settings.clock = clock;
        self
    }

    /// A consumer in separate mode: `handler` does its side effect and returns the outcome.
    ///
    /// # Errors
    /// [`ConfigError`]: a setting out of range, or a broker timer that does not fit the lease.
    pub fn handler<H: Handler>(self, handler: H) -> Result<Consumer<T, S, Separate<H>>, ConfigError> {
        self.build(Separate(handler))
    }

    fn build<M: Mode<S>>(self, mode: M) -> Result<Consumer<T, S, M>, ConfigError> {
        let ConsumerBuilder { store, transport, settings } = self;
        settings.check(transport.redelivery_timer(), transport.source())?;
        let once = Once::new(store, settings.policy)
            .with_clock(Arc::clone(&settings.clock))
            .with_execution_max(settings.execution_max);
        observe::describe();
        Ok(Consumer { transport, shared: Arc::new(Shared { once, mode, settings }) })
    }
}

impl<T: Transport, S> ConsumerBuilder<T, S>
where
    S: AtomicStore + 'static,
    S::Connection: 'static,
{
    /// A consumer in atomic mode: `handler` hands back its writes, which commit with the
    /// completion in one transaction of the store.
    ///
    /// # Errors
    /// [`ConfigError`]: a setting out of range, or a broker timer that does not fit the lease.
    pub fn atomic<H: AtomicHandler<S>>(self, handler: H) -> Result<Consumer<T, S, Atomic<H>>, ConfigError> {
        self.build(Atomic(handler))
    }
}

impl<T: Transport, S: Store + 'static, M: Mode<S>> Consumer<T, S, M> {
    /// Takes deliveries and handles up to `in_flight_max` at once until `shutdown`
    /// completes or the transport stops. Then it stops the transport and gives running
    /// handlers `drain_max` to finish and settle; those still running are aborted, as a
    /// crash would end them: in atomic mode their writes roll back; in separate mode a side
    /// effect already made runs again once the message is redelivered after the lease.
    pub async fn run_until(mut self, shutdown: impl Future<Output = ()> + Send) -> Drained {
        let settings = &self.shared.settings;
        let permits = Arc::new(Semaphore::new(settings.in_flight_max));
        // Every delivery's task, reaped as they end, so it holds at most `in_flight_max`.
        let mut running = JoinSet::new();
        let settled = Arc::new(AtomicU64::new(0));
        let mut retry = INTAKE_RETRY_FIRST;
        tokio::pin!(shutdown);
        loop {
            while running.try_join_next().is_some() {}
            let permit = tokio::select! {
                biased;
                () = &mut shutdown => break,
                permit = Arc::clone(&permits).acquire_owned() => permit.expect("the semaphore is never closed"),
            };
            let delivery = tokio::select! {
                biased;
                () = &mut shutdown => break,
                next = self.transport.next() => match next {
                    None => break,
                    Some(Ok(delivery)) => delivery,
                    Some(Err(error)) => {
                        observe::transport_failed("next", &error);
                        tokio::select! { () = &mut shutdown => break, () = tokio::time::sleep(retry) => {} }
                        retry = (retry * 2).min(INTAKE_RETRY_MAX);
                        continue;
                    }
                },
            };
            retry = INTAKE_RETRY_FIRST;
            let (shared, settled) = (Arc::clone(&self.shared), Arc::clone(&settled));
            let in_flight = InFlight::start(permit);
            running.spawn(async move {
                process(&shared, delivery).await;
                settled.fetch_add(1, Ordering::Relaxed);
                drop(in_flight);
            });
        }
        self.transport.stop().await;
        let drain = async { while running.join_next().await.is_some() {} };
        let abandoned = match tokio::time::timeout(self.shared.settings.drain_max, drain).await {
            Ok(()) => 0,
            Err(_) => running.len() as u64,
        };
        if abandoned > 0 {
            // Aborted, as a crash would end them: in atomic mode their transactions roll
            // back; their claims lapse and the broker redelivers their messages.
            tracing::warn!(abandoned, "shutdown: handlers still running after the drain time are aborted");
            running.abort_all();
            while running.join_next().await.is_some() {}
        }
        Drained { settled: settled.load(Ordering::Relaxed), abandoned }
    }
}

/// One delivery in flight: its permit and its place in the gauge, given back when its task
/// ends, however it ends (settled, panicked, aborted).
struct InFlight(#[allow(dead_code, reason = "held for its drop")] OwnedSemaphorePermit);

impl InFlight {
    fn start(permit: OwnedSemaphorePermit) -> InFlight {
        metrics::gauge!(observe::MESSAGES_IN_FLIGHT).increment(1.0);
        InFlight(permit)
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        metrics::gauge!(observe::MESSAGES_IN_FLIGHT).decrement(1.0);
    }
}
