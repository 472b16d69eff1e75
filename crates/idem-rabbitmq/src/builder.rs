//! [`RabbitTransportBuilder`]: a transport's settings, checked before anything connects.

use std::sync::Arc;
use std::time::Duration;

use lapin::types::ShortString;

use crate::dead_letter::DeadLetter;
use crate::error::RabbitError;
use crate::link::Link;
use crate::transport::{RabbitTransport, Settings};

/// RabbitMQ's default `consumer_timeout` (30 min). It cannot be read over AMQP: set
/// [`RabbitTransportBuilder::consumer_timeout`] to the broker's value if it differs.
pub const DEFAULT_CONSUMER_TIMEOUT: Duration = Duration::from_secs(30 * 60);
/// The default prefetch: the consumer's default in-flight bound
/// ([`idem_consumer::IN_FLIGHT_MAX_DEFAULT`]). Set both together.
pub const DEFAULT_PREFETCH: usize = idem_consumer::IN_FLIGHT_MAX_DEFAULT;

/// The conflict policy for a RabbitMQ consumer under `policy` (plan B6/B7): wait for the
/// holder rather than nack, for one lease and one renewal interval (capped at
/// [`idem_consumer::WAIT_MAX_LIMIT`]). A copy requeued by a dead consumer's closed connection
/// arrives at once, while the dead holder's lease still runs; this wait outlasts that lease,
/// so the copy is taken over without a requeue that a quorum queue would count.
#[must_use]
pub fn recommended_on_conflict(policy: &idem_core::Policy) -> idem_consumer::OnConflict {
    let max = policy.lease().saturating_add(policy.renew_every()).min(idem_consumer::WAIT_MAX_LIMIT);
    idem_consumer::OnConflict::Wait { max }
}

/// Settings for a [`RabbitTransport`]; [`RabbitTransportBuilder::connect`] checks them,
/// connects and starts consuming.
#[derive(Debug, Clone)]
#[must_use]
pub struct RabbitTransportBuilder {
    uri: String,
    queue: String,
    prefetch: usize,
    consumer_timeout: Duration,
    dead_letter: Option<(String, String)>,
    dead_letter_retry_after: Duration,
    connection_name: Option<String>,
    reopen_attempts: u32,
    reopen_backoff: Duration,
}

impl RabbitTransportBuilder {
    pub(crate) fn new(uri: String, queue: String) -> Self {
        RabbitTransportBuilder {
            uri,
            queue,
            prefetch: DEFAULT_PREFETCH,
            consumer_timeout: DEFAULT_CONSUMER_TIMEOUT,
            dead_letter: None,
            dead_letter_retry_after: Duration::from_secs(1),
            connection_name: None,
            reopen_attempts: 5,
            reopen_backoff: Duration::from_millis(100),
        }
    }

    /// `basic.qos` prefetch: how many unsettled deliveries the broker hands this consumer.
    /// Set it to the consumer's in-flight bound (default [`DEFAULT_PREFETCH`]); 1..=65535.
    pub fn prefetch(mut self, prefetch: usize) -> Self {
        self.prefetch = prefetch;
        self
    }

    /// The broker's `consumer_timeout` (default [`DEFAULT_CONSUMER_TIMEOUT`]): reported as
    /// the redelivery timer the consumer checks its execution ceiling and lease against.
    pub fn consumer_timeout(mut self, timeout: Duration) -> Self {
        self.consumer_timeout = timeout;
        self
    }

    /// Dead-letter by publishing a copy to `exchange` with `routing_key` (publisher
    /// confirms, `mandatory`), then acking the original. Without it, a dead-lettered
    /// delivery is rejected without requeue, for the queue's own dead-letter exchange.
    pub fn dead_letter_to(mut self, exchange: impl Into<String>, routing_key: impl Into<String>) -> Self {
        self.dead_letter = Some((exchange.into(), routing_key.into()));
        self
    }

    /// How long a delivery whose dead-letter copy failed is held before it is requeued
    /// (default 1 s).
    pub fn dead_letter_retry_after(mut self, after: Duration) -> Self {
        self.dead_letter_retry_after = after;
        self
    }

    /// The connection's name in the broker's management views (`rabbitmqctl list_connections`).
    pub fn connection_name(mut self, name: impl Into<String>) -> Self {
        self.connection_name = Some(name.into());
        self
    }

    /// How many times one `next()` tries to consume again after the channel closed
    /// (default 5), pausing `backoff` then doubling it (at most 5 s) between tries.
    pub fn reopen(mut self, attempts: u32, backoff: Duration) -> Self {
        self.reopen_attempts = attempts;
        self.reopen_backoff = backoff;
        self
    }

    /// Checks the settings, connects, sets the prefetch and starts consuming.
    ///
    /// # Errors
    /// [`RabbitError`]: a setting out of range, the broker unreachable or refusing the
    /// login, or the consumer refused (no such queue).
    pub async fn connect(self) -> Result<RabbitTransport, RabbitError> {
        let queue = short_name("queue", &self.queue, false)?;
        let prefetch =
            u16::try_from(self.prefetch).ok().filter(|&p| p > 0).ok_or(RabbitError::InvalidPrefetch(self.prefetch))?;
        if self.consumer_timeout.is_zero() {
            return Err(RabbitError::InvalidConsumerTimeout);
        }
        if self.reopen_attempts == 0 {
            return Err(RabbitError::InvalidReopenAttempts);
        }
        let target = match &self.dead_letter {
            // The default exchange is the empty name, so an empty exchange is allowed.
            Some((exchange, key)) => Some((
                short_name("dead-letter exchange", exchange, true)?,
                short_name("dead-letter routing key", key, true)?,
            )),
            None => None,
        };
        let (link, vhost) = Link::connect(self.uri, self.connection_name).await.map_err(RabbitError::Connect)?;
        let link = Arc::new(link);
        let source: Arc<str> = format!("amqp:{vhost}/{}", self.queue).into();
        if let Err(error) = idem_core::Principal::new(&source) {
            // Not refused: a consumer with a fixed principal or a principal function never
            // uses it. With the default principal every message would be dead-lettered.
            tracing::warn!(target: "idem_rabbitmq", %source, %error,
                "the source is not a valid principal; give the consumer PrincipalFrom::Fixed or Fn");
        }
        let dead_letter =
            Arc::new(DeadLetter { target, link: link.clone(), source, retry_after: self.dead_letter_retry_after });
        let settings = Settings {
            queue,
            prefetch,
            consumer_timeout: self.consumer_timeout,
            reopen_attempts: self.reopen_attempts,
            reopen_backoff: self.reopen_backoff,
        };
        RabbitTransport::start(link, settings, dead_letter)
            .await
            .map_err(|source| RabbitError::Consume { queue: self.queue, source })
    }
}

impl RabbitTransport {
    /// A builder for a transport consuming `queue` on the broker at `uri`
    /// (`amqp://user:password@host:port/vhost`, the vhost URL-encoded: `%2f` for `/`).
    pub fn builder(uri: impl Into<String>, queue: impl Into<String>) -> RabbitTransportBuilder {
        RabbitTransportBuilder::new(uri.into(), queue.into())
    }
}

fn short_name(what: &'static str, name: &str, empty_ok: bool) -> Result<ShortString, RabbitError> {
    let invalid = || RabbitError::InvalidName { what, name: name.to_owned() };
    if name.is_empty() && !empty_ok {
        return Err(invalid());
    }
    ShortString::try_new(name).map_err(|_| invalid())
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use idem_consumer::{OnConflict, WAIT_MAX_LIMIT};
    use idem_core::Policy;

    use super::recommended_on_conflict;

    #[test]
    fn the_recommended_wait_outlasts_a_lease_within_the_limit() {
        let policy = Policy::new(Duration::from_secs(9), Duration::from_secs(3600)).expect("a policy");
        let OnConflict::Wait { max } = recommended_on_conflict(&policy) else { panic!("waits") };
        assert_eq!(max, policy.lease() + policy.renew_every());
        let long = Policy::new(Duration::from_secs(600), Duration::from_secs(3600)).expect("a policy");
        assert_eq!(recommended_on_conflict(&long), OnConflict::Wait { max: WAIT_MAX_LIMIT });
    }
}
