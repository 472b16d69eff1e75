//! The consumer's settings and their checks.

use std::sync::Arc;
use std::time::Duration;

use idem_core::consume::{self, Redelivery, RedeliveryTimer, TimerError};
use idem_core::{Clock, Policy, SystemClock};

use crate::message::{KeyFrom, PrincipalFrom};

/// Default bound on deliveries handled at once.
pub const IN_FLIGHT_MAX_DEFAULT: usize = 64;
/// Largest bound on deliveries handled at once.
pub const IN_FLIGHT_MAX_LIMIT: usize = 4096;
/// Default execution ceiling: past it a handler's claim is no longer renewed (SPEC "Leases").
pub const EXECUTION_MAX_DEFAULT: Duration = Duration::from_secs(5 * 60);
/// Default time running handlers get to finish at shutdown.
pub const DRAIN_MAX_DEFAULT: Duration = Duration::from_secs(30);
/// Longest a delivery may wait for another claim's holder ([`OnConflict::Wait`]).
pub const WAIT_MAX_LIMIT: Duration = Duration::from_secs(5 * 60);

/// What a delivery does when another claim holds its record (SPEC row "in flight elsewhere").
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum OnConflict {
    /// Nak it, to come back after the holder's lease left
    /// ([`Redelivery::conflict_after`]). Every nak costs a delivery where the broker counts
    /// them (JetStream `max_deliver`, a quorum queue's delivery limit).
    #[default]
    Redeliver,
    /// Hold the delivery up to `max`, looking at the record with backoff; run it if the
    /// holder's claim lapses (a crash), ack it if the holder completes, nak only if still
    /// held at the end. Costs no delivery; holds an in-flight slot while waiting. The
    /// choice for RabbitMQ, whose requeues are immediate.
    Wait {
        /// Longest wait (at most [`WAIT_MAX_LIMIT`]).
        max: Duration,
    },
}

/// Why a consumer's settings were refused.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The broker's redelivery timer does not fit the lease ([`consume::check_timers`]).
    #[error(transparent)]
    Timers(#[from] TimerError),
    /// `in_flight_max` is outside 1..=[`IN_FLIGHT_MAX_LIMIT`].
    #[error("in_flight_max is {0}; it must be 1..={IN_FLIGHT_MAX_LIMIT}")]
    InFlightMax(usize),
    /// A wait longer than [`WAIT_MAX_LIMIT`].
    #[error("on_conflict wait of {0:?} is longer than {WAIT_MAX_LIMIT:?}")]
    WaitTooLong(Duration),
    /// A zero execution ceiling or drain time.
    #[error("{0} must be longer than zero")]
    Zero(&'static str),
    /// The transport's source, the default principal, is not a principal (too long, or a
    /// control character): every message would be dead-lettered.
    #[error("the transport's source {name:?} is not a principal ({error}); pick PrincipalFrom::Fixed")]
    Source {
        /// The source.
        name: String,
        /// Why it is not a principal.
        error: idem_core::PrincipalError,
    },
}

/// Every setting of a consumer, with its default.
#[derive(Clone)]
pub(crate) struct Settings {
    pub(crate) policy: Policy,
    pub(crate) in_flight_max: usize,
    pub(crate) execution_max: Duration,
    pub(crate) drain_max: Duration,
    pub(crate) on_conflict: OnConflict,
    pub(crate) redelivery: Redelivery,
    pub(crate) key_from: KeyFrom,
    pub(crate) principal_from: PrincipalFrom,
    pub(crate) clock: Arc<dyn Clock>,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            policy: Policy::DEFAULT,
            in_flight_max: IN_FLIGHT_MAX_DEFAULT,
            execution_max: EXECUTION_MAX_DEFAULT,
            drain_max: DRAIN_MAX_DEFAULT,
            on_conflict: OnConflict::Redeliver,
            redelivery: Redelivery::DEFAULT,
            key_from: KeyFrom::MessageId,
            principal_from: PrincipalFrom::Source,
            clock: Arc::new(SystemClock),
        }
    }
}

impl Settings {
    /// Checks the settings against each other, the broker's timer and the transport's source.
    pub(crate) fn check(&self, timer: RedeliveryTimer, source: Option<&str>) -> Result<(), ConfigError> {
        if let (PrincipalFrom::Source, Some(source)) = (&self.principal_from, source)
            && let Err(error) = idem_core::Principal::new(source)
        {
            return Err(ConfigError::Source { name: source.to_owned(), error });
        }
        if !(1..=IN_FLIGHT_MAX_LIMIT).contains(&self.in_flight_max) {
            return Err(ConfigError::InFlightMax(self.in_flight_max));
        }
        if let OnConflict::Wait { max } = self.on_conflict
            && max > WAIT_MAX_LIMIT
        {
            return Err(ConfigError::WaitTooLong(max));
        }
        if self.execution_max.is_zero() {
            return Err(ConfigError::Zero("execution_max"));
        }
        if self.drain_max.is_zero() {
            return Err(ConfigError::Zero("drain_max"));
        }
        consume::check_timers(&self.policy, timer, self.execution_max)?;
        Ok(())
    }
}
