//! [`RabbitTransport`]: `basic.consume` on one queue, reopened after its channel closed.

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use idem_consumer::{Transport, TransportError};
use idem_core::consume::RedeliveryTimer;
use lapin::options::{BasicCancelOptions, BasicConsumeOptions, BasicNackOptions, BasicQosOptions};
use lapin::types::{FieldTable, ShortString};
use lapin::{Channel, Consumer};

use crate::dead_letter::DeadLetter;
use crate::delivery::RabbitDelivery;
use crate::error::transport_error;
use crate::link::Link;

/// How long [`Transport::stop`] waits for the broker to confirm the cancel while giving
/// back the deliveries lapin had already buffered.
const STOP_DRAIN_MAX: Duration = Duration::from_secs(5);
/// The longest pause between two reopen attempts.
const REOPEN_BACKOFF_MAX: Duration = Duration::from_secs(5);

/// What a transport was built with.
#[derive(Debug)]
pub(crate) struct Settings {
    pub(crate) queue: ShortString,
    pub(crate) prefetch: u16,
    pub(crate) consumer_timeout: Duration,
    pub(crate) reopen_attempts: u32,
    pub(crate) reopen_backoff: Duration,
}

/// An AMQP consumer on one queue (`basic.consume`, manual acks, `basic.qos` prefetch),
/// as an [`idem_consumer::Transport`]. Built by `RabbitTransport::builder` (in `builder.rs`).
///
/// When its channel closes (RabbitMQ's consumer timeout closes the whole channel; a lost
/// connection closes every channel), [`Transport::next`] reports
/// [`TransportError::Closed`] once, and the next call opens a new channel (and a new
/// connection if that one is gone too) and consumes again: at most `reopen_attempts`
/// tries with a doubling pause, then the error is reported and the next call tries again.
/// Deliveries from the closed channel can no longer be settled (their settles fail as
/// `Closed`): the broker has requeued them already.
pub struct RabbitTransport {
    link: Arc<Link>,
    settings: Settings,
    dead_letter: Arc<DeadLetter>,
    channel: Option<Channel>,
    consumer: Option<Consumer>,
    stopped: bool,
}

impl std::fmt::Debug for RabbitTransport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RabbitTransport")
            .field("source", &self.dead_letter.source)
            .field("settings", &self.settings)
            .field("consuming", &self.consumer.is_some())
            .field("stopped", &self.stopped)
            .finish_non_exhaustive()
    }
}

impl RabbitTransport {
    pub(crate) async fn start(
        link: Arc<Link>,
        settings: Settings,
        dead_letter: Arc<DeadLetter>,
    ) -> lapin::Result<Self> {
        let mut transport =
            RabbitTransport { link, settings, dead_letter, channel: None, consumer: None, stopped: false };
        transport.open().await?;
        Ok(transport)
    }

    /// Where deliveries come from: `amqp:<vhost>/<queue>`, every delivery's
    /// [`idem_consumer::DeliveryInfo::source`].
    #[must_use]
    pub fn source(&self) -> &str {
        &self.dead_letter.source
    }

    /// The channel the consumer currently runs on (`None` after it closed, until the next
    /// call to `next()` reopens one). Closing it, or failing it with a channel error, is
    /// what the broker's consumer timeout does; tests use it for that.
    #[must_use]
    pub fn channel(&self) -> Option<&Channel> {
        self.channel.as_ref()
    }

    async fn open(&mut self) -> lapin::Result<()> {
        let channel = self.link.channel().await?;
        channel.basic_qos(self.settings.prefetch, BasicQosOptions { global: false }).await?;
        let options = BasicConsumeOptions { no_ack: false, ..BasicConsumeOptions::default() };
        let consumer = channel
            .basic_consume(self.settings.queue.clone(), ShortString::default(), options, FieldTable::default())
            .await?;
        self.channel = Some(channel);
        self.consumer = Some(consumer);
        Ok(())
    }

    /// Opens a channel and consumes again: bounded attempts, doubling pauses.
    async fn reopen(&mut self) -> Result<(), TransportError> {
        let mut pause = self.settings.reopen_backoff;
        let mut attempt = 1;
        loop {
            match self.open().await {
                Ok(()) => {
                    tracing::info!(target: "idem_rabbitmq", source = %self.source(), attempt, "consuming again on a new channel");
                    return Ok(());
                }
                Err(error) if attempt >= self.settings.reopen_attempts => {
                    tracing::warn!(target: "idem_rabbitmq", source = %self.source(), attempt, %error, "could not consume again; will retry on the next call");
                    return Err(transport_error(error));
                }
                Err(error) => {
                    tracing::debug!(target: "idem_rabbitmq", source = %self.source(), attempt, %error, "reopen failed; retrying");
                }
            }
            tokio::time::sleep(pause).await;
            pause = pause.saturating_mul(2).min(REOPEN_BACKOFF_MAX);
            attempt += 1;
        }
    }

    /// Forgets a consumer whose channel is gone; the next call reopens.
    fn lost(&mut self) {
        self.consumer = None;
        self.channel = None;
    }
}

impl Transport for RabbitTransport {
    type Delivery = RabbitDelivery;

    async fn next(&mut self) -> Option<Result<RabbitDelivery, TransportError>> {
        if self.stopped {
            return None;
        }
        if self.consumer.is_none()
            && let Err(error) = self.reopen().await
        {
            return Some(Err(error));
        }
        let consumer = self.consumer.as_mut()?;
        let mut next = consumer.next().await;
        // Deliveries lapin buffered before their channel closed come out before the error;
        // they can no longer be settled and the broker has requeued them: skip them.
        while let Some(Ok(delivery)) = &next
            && !delivery.acker.usable()
        {
            next = consumer.next().await;
        }
        match next {
            Some(Ok(delivery)) => {
                Some(Ok(RabbitDelivery::new(delivery, self.dead_letter.source.clone(), self.dead_letter.clone())))
            }
            Some(Err(error)) => {
                tracing::warn!(target: "idem_rabbitmq", source = %self.source(), %error, "the consumer's channel closed; the broker requeued its unsettled deliveries");
                self.lost();
                Some(Err(transport_error(error)))
            }
            None if self.stopped => None,
            None => {
                // The broker cancelled the consumer (the queue was deleted, or the node
                // holding it went away): consume again on the next call.
                tracing::warn!(target: "idem_rabbitmq", source = %self.source(), "the broker cancelled the consumer");
                self.lost();
                Some(Err(TransportError::other("the broker cancelled the consumer")))
            }
        }
    }

    async fn stop(&mut self) {
        self.stopped = true;
        let (Some(channel), Some(consumer)) = (self.channel.as_ref(), self.consumer.as_mut()) else {
            return;
        };
        if let Err(error) = channel.basic_cancel(consumer.tag(), BasicCancelOptions { nowait: false }).await {
            tracing::debug!(target: "idem_rabbitmq", %error, "basic.cancel failed; the channel is gone and its deliveries requeued");
            return;
        }
        // Deliveries lapin buffered but never handed out: nothing ran them, so they go back
        // to the queue now rather than when the channel closes. The stream ends once the
        // broker confirmed the cancel. The channel stays open: deliveries already handed
        // out are still settled on it.
        let drain = async {
            while let Some(Ok(delivery)) = consumer.next().await {
                let _ = delivery.acker.nack(BasicNackOptions { multiple: false, requeue: true }).await;
            }
        };
        if tokio::time::timeout(STOP_DRAIN_MAX, drain).await.is_err() {
            tracing::debug!(target: "idem_rabbitmq", "the cancel was not confirmed in time; buffered deliveries return when the channel closes");
        }
    }

    fn redelivery_timer(&self) -> RedeliveryTimer {
        RedeliveryTimer::ChannelTimeout(self.settings.consumer_timeout)
    }

    fn source(&self) -> Option<&str> {
        Some(RabbitTransport::source(self))
    }
}
