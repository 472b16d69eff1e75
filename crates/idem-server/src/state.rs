//! [`AppState`]: everything the handlers and the layer use (ledger, clock, ids, policy,
//! limits, metrics, readiness), and its builder-style settings. Separate from the router
//! ([`mod@crate::app`]) so that the handlers, the health endpoints and the router all read
//! one state without depending on one another.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use axum::routing::MethodRouter;
use idem_core::{Clock, Policy};
use idem_http::ConflictPolicy;

use crate::bodies::{BodyBudget, RequestLimits};
use crate::fairness::{Fairness, FairnessLimits};
use crate::ids::IdGenerator;
use crate::ledger::Ledger;
use crate::metrics::Metrics;
use crate::readiness::Readiness;

/// The longest [`AppState::with_handler_delay`] (`idem serve --handler-delay`): a test knob
/// holds a claim for a test's fault to land in, never for minutes.
pub const HANDLER_DELAY_MAX: Duration = Duration::from_secs(60);

/// A hook that the payment and user handlers await after building their row and before
/// writing it. Test-only: see [`AppState::with_before_write_hook`].
pub type BeforeWriteHook = Arc<dyn Fn() -> Pin<Box<dyn Future<Output = ()> + Send>> + Send + Sync>;

/// A function applied to each keyed handler inside the idempotency layer (so its layers
/// see what the handler answers before the idempotency layer does). Test-only: see
/// [`crate::AppBuilder::wrap_handlers`].
pub type HandlerWrap<L> = Arc<dyn Fn(MethodRouter<AppState<L>>) -> MethodRouter<AppState<L>> + Send + Sync>;

/// Everything the handlers use. Cloning is cheap (shared pointers).
pub struct AppState<L> {
    pub(crate) ledger: Arc<L>,
    pub(crate) clock: Arc<dyn Clock>,
    pub(crate) ids: Arc<dyn IdGenerator>,
    pub(crate) metrics: Arc<Metrics>,
    pub(crate) policy: Policy,
    pub(crate) conflict: ConflictPolicy,
    pub(crate) before_write: Option<BeforeWriteHook>,
    /// How long the payment handler waits inside its claim before its write (test knob).
    pub(crate) handler_delay: Duration,
    pub(crate) bodies: BodyBudget,
    pub(crate) fairness: Option<Fairness>,
    /// Every keyed request's work, also after its client went away: awaited at shutdown.
    pub(crate) tracker: tokio_util::task::TaskTracker,
    /// The store-full 503's `Retry-After`: when the next purge may free room.
    pub(crate) store_full_retry_after: Duration,
    /// The layer's recording limit on handler responses (`None`: idem-http's default).
    pub(crate) response_body_bytes_max: Option<usize>,
    /// The layer's execution ceiling (`None`: renew for as long as the handler runs).
    pub(crate) execution_max: Option<Duration>,
    /// What the `metrics` facade recorded (idem-http's own metrics), if a Prometheus
    /// recorder is installed in this process.
    pub(crate) prometheus: Option<metrics_exporter_prometheus::PrometheusHandle>,
    /// Down from a failed store write until a real write succeeds ([`crate::readiness`]).
    pub(crate) readiness: Arc<Readiness>,
}

impl<L> Clone for AppState<L> {
    fn clone(&self) -> Self {
        AppState {
            ledger: Arc::clone(&self.ledger),
            clock: Arc::clone(&self.clock),
            ids: Arc::clone(&self.ids),
            metrics: Arc::clone(&self.metrics),
            policy: self.policy,
            conflict: self.conflict,
            before_write: self.before_write.clone(),
            handler_delay: self.handler_delay,
            bodies: self.bodies.clone(),
            fairness: self.fairness.clone(),
            tracker: self.tracker.clone(),
            store_full_retry_after: self.store_full_retry_after,
            response_body_bytes_max: self.response_body_bytes_max,
            execution_max: self.execution_max,
            prometheus: self.prometheus.clone(),
            readiness: Arc::clone(&self.readiness),
        }
    }
}

impl<L: Ledger> AppState<L> {
    /// State with SPEC's defaults ([`Policy::DEFAULT`]: a 10 s lease, renewed by the layer
    /// while a handler runs, and 24 h retention), 409 on conflicts, fresh metrics.
    /// Time comes from `clock` and ids from `ids`, for the layer and the handlers alike.
    #[must_use]
    pub fn new(ledger: Arc<L>, clock: Arc<dyn Clock>, ids: Arc<dyn IdGenerator>) -> AppState<L> {
        AppState {
            ledger,
            clock,
            ids,
            metrics: Arc::new(Metrics::default()),
            policy: Policy::DEFAULT,
            conflict: ConflictPolicy::Reject,
            before_write: None,
            handler_delay: Duration::ZERO,
            bodies: BodyBudget::new(RequestLimits::DEFAULT),
            fairness: None,
            tracker: tokio_util::task::TaskTracker::new(),
            store_full_retry_after: idem_http::config::STORE_FULL_RETRY_AFTER_DEFAULT,
            response_body_bytes_max: None,
            execution_max: None,
            prometheus: None,
            readiness: Arc::new(Readiness::new()),
        }
    }

    /// Renders what the process's Prometheus recorder holds (idem-http's
    /// `idem_requests_total`, `idem_request_duration_seconds`, `idem_store_errors_total`)
    /// on `/metrics`, after the app's own counters.
    #[must_use]
    pub fn with_prometheus(mut self, handle: metrics_exporter_prometheus::PrometheusHandle) -> AppState<L> {
        self.prometheus = Some(handle);
        self
    }

    /// Sets the store-full 503's `Retry-After` (the purge's interval).
    #[must_use]
    pub fn with_store_full_retry_after(mut self, retry_after: Duration) -> AppState<L> {
        self.store_full_retry_after = retry_after;
        self
    }

    /// The tracker of the layer's work: after the server stopped accepting, `close()` it and
    /// await `wait()` within the drain deadline, so work whose client went away finishes.
    #[must_use]
    pub fn task_tracker(&self) -> &tokio_util::task::TaskTracker {
        &self.tracker
    }

    /// Limits how fast each principal may create new keys ([`crate::fairness`]); off unless set.
    #[must_use]
    pub fn with_fairness(mut self, limits: FairnessLimits) -> AppState<L> {
        self.fairness = Some(Fairness::new(limits));
        self
    }

    /// Sets the idempotency layer's recording limit: the longest handler response body
    /// kept for replay ([`idem_http::IdempotencyBuilder::response_body_bytes_max`], 1 MiB by
    /// default). A longer response reaches its first client whole, the key never runs
    /// again, and retries get a `response-not-kept` problem with the original status and
    /// `Location` (SPEC "HTTP behaviour"), in atomic and separate mode alike.
    #[must_use]
    pub fn with_response_body_bytes_max(mut self, bytes_max: usize) -> AppState<L> {
        self.response_body_bytes_max = Some(bytes_max);
        self
    }

    /// Sets the idempotency layer's execution ceiling
    /// ([`idem_http::IdempotencyBuilder::execution_max`], SPEC "Key lifecycle"): a hung
    /// handler frees its key within the ceiling plus one lease.
    #[must_use]
    pub fn with_execution_max(mut self, ceiling: Duration) -> AppState<L> {
        self.execution_max = Some(ceiling);
        self
    }

    /// Sets the limits on request bodies (a fresh budget of buffered bytes).
    #[must_use]
    pub fn with_request_limits(mut self, limits: RequestLimits) -> AppState<L> {
        self.bodies = BodyBudget::new(limits);
        self
    }

    /// Sets the lease and retention of idempotency records.
    #[must_use]
    pub fn with_policy(mut self, policy: Policy) -> AppState<L> {
        self.policy = policy;
        self
    }

    /// Sets what a request gets while the same key is in flight.
    #[must_use]
    pub fn with_conflict(mut self, conflict: ConflictPolicy) -> AppState<L> {
        self.conflict = conflict;
        self
    }

    /// **Test hook.** Makes the payment and user handlers await `hook` after they built
    /// their row and before they write it, which lets a test hold an execution past its
    /// lease. `idem serve` never sets it, and no request can: it exists only for callers
    /// of this library, like the clock and the id generator.
    #[must_use]
    pub fn with_before_write_hook(mut self, hook: BeforeWriteHook) -> AppState<L> {
        self.before_write = Some(hook);
        self
    }

    /// **Test knob** (`idem serve --handler-delay`). Makes the payment handler wait `delay`
    /// after the layer claimed the key and the handler built its row, and before it writes
    /// the row (with the completion, in atomic mode): a window for a test harness to kill
    /// or pause the process inside the handler, or to send a duplicate that meets the claim
    /// in flight. The wait is on the runtime's timer (simulated time under turmoil); zero,
    /// the default, awaits nothing. At most [`HANDLER_DELAY_MAX`]; longer is cut to it.
    #[must_use]
    pub fn with_handler_delay(mut self, delay: Duration) -> AppState<L> {
        self.handler_delay = delay.min(HANDLER_DELAY_MAX);
        self
    }

    /// The ledger.
    #[must_use]
    pub fn ledger(&self) -> &Arc<L> {
        &self.ledger
    }

    /// The metrics the app counts into.
    #[must_use]
    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }

    /// The clock the layer and the handlers read.
    #[must_use]
    pub fn clock(&self) -> &Arc<dyn Clock> {
        &self.clock
    }

    /// The lease and retention of idempotency records.
    #[must_use]
    pub fn policy(&self) -> Policy {
        self.policy
    }

    /// The readiness latch `/healthz` answers from ([`crate::readiness`]).
    #[must_use]
    pub fn readiness(&self) -> &Arc<Readiness> {
        &self.readiness
    }
}
