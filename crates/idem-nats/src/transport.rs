//! [`NatsTransport`]: a durable JetStream pull consumer as an [`idem_consumer::Transport`].

use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::AckKind;
use async_nats::jetstream::consumer::PullConsumer;
use async_nats::jetstream::consumer::pull::{MessagesErrorKind, Stream};
use async_nats::jetstream::context::Context;
use futures::{FutureExt, StreamExt};
use idem_consumer::{Transport, TransportError};
use idem_core::RedeliveryTimer;

use crate::delivery::{NatsDelivery, Origin};
use crate::error::client_closed;
use crate::setup::{self, NatsOptions, SetupError};

/// How often the server sends an idle heartbeat on an open pull request, so a connection
/// that died silently is noticed (the client reports a missed heartbeat) within two of them.
const IDLE_HEARTBEAT: Duration = Duration::from_secs(5);

/// A durable JetStream pull consumer, pulled `in_flight_max` messages at a time.
///
/// The client buffers what one pull brought until the consumer asks for it, and each
/// buffered message's `ack_wait` runs meanwhile, so the batch is sized to the consumer's
/// in-flight bound ([`NatsOptions::in_flight_max`]); the consumer config's
/// `max_ack_pending` bounds it on the server's side ([`crate::recommended_consumer`]).
pub struct NatsTransport {
    consumer: PullConsumer,
    messages: Option<Stream>,
    origin: Arc<Origin>,
    batch: usize,
    ack_wait: Duration,
    stopped: bool,
}

impl std::fmt::Debug for NatsTransport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NatsTransport")
            .field("source", &self.origin.source)
            .field("batch", &self.batch)
            .field("ack_wait", &self.ack_wait)
            .field("stopped", &self.stopped)
            .finish_non_exhaustive()
    }
}

impl NatsTransport {
    /// Looks up `consumer` on `stream` and opens it ([`NatsTransport::new`]).
    ///
    /// # Errors
    /// [`SetupError::Lookup`] if the stream or consumer cannot be read, else as [`NatsTransport::new`].
    pub async fn open(js: &Context, stream: &str, consumer: &str, options: NatsOptions) -> Result<Self, SetupError> {
        let lookup = |source: async_nats::Error| SetupError::Lookup {
            stream: stream.to_owned(),
            consumer: consumer.to_owned(),
            source,
        };
        let pull: PullConsumer =
            js.get_stream(stream).await.map_err(|e| lookup(e.into()))?.get_consumer(consumer).await.map_err(lookup)?;
        NatsTransport::new(js, pull, options).await
    }

    /// Checks `consumer`'s configuration as the server now reports it
    /// ([`setup::check_consumer`]) and the dead-letter subject, reads its `ack_wait`, and
    /// starts pulling.
    ///
    /// # Errors
    /// Every [`SetupError`] but `Lookup` for a consumer idem cannot use, or one the server
    /// could not be asked about.
    pub async fn new(js: &Context, mut consumer: PullConsumer, options: NatsOptions) -> Result<Self, SetupError> {
        if options.batch() == 0 {
            return Err(SetupError::InFlightMaxZero);
        }
        let info = match consumer.info().await {
            Ok(info) => info.clone(),
            Err(error) => {
                let cached = consumer.cached_info();
                let (stream, consumer) = (cached.stream_name.clone(), cached.name.clone());
                return Err(SetupError::Lookup { stream, consumer, source: error.into() });
            }
        };
        setup::check_consumer(&info)?;
        if let Some(subject) = options.dead_letter() {
            setup::check_dead_letter(js, subject, &info.stream_name).await?;
        }
        let origin = Arc::new(Origin {
            source: format!("nats:{}/{}", info.stream_name, info.name),
            dead_letter_subject: options.dead_letter().map(str::to_owned),
        });
        let mut transport = NatsTransport {
            consumer,
            messages: None,
            origin,
            batch: options.batch(),
            ack_wait: setup::ack_wait(&info.config),
            stopped: false,
        };
        transport.messages =
            Some(transport.pull().await.map_err(|source| SetupError::Pull { consumer: info.name, source })?);
        Ok(transport)
    }

    /// The default principal of this consumer's messages: `nats:<stream>/<durable>`.
    #[must_use]
    pub fn source(&self) -> &str {
        &self.origin.source
    }

    /// The consumer's `ack_wait`, as read at construction.
    #[must_use]
    pub fn ack_wait(&self) -> Duration {
        self.ack_wait
    }

    async fn pull(&self) -> Result<Stream, async_nats::Error> {
        let stream = self.consumer.stream().max_messages_per_batch(self.batch).heartbeat(IDLE_HEARTBEAT);
        Ok(stream.messages().await?)
    }
}

impl Transport for NatsTransport {
    type Delivery = NatsDelivery;

    async fn next(&mut self) -> Option<Result<NatsDelivery, TransportError>> {
        if self.stopped {
            return None;
        }
        // The pull stream ends itself on some errors (consumer deleted, request limits):
        // reopen it on the next call, after the consumer's pause, rather than stop for good.
        let messages = match &mut self.messages {
            Some(messages) => messages,
            None => match self.pull().await {
                Ok(messages) => self.messages.insert(messages),
                Err(error) if client_closed(&*error) => return Some(Err(TransportError::Closed)),
                Err(error) => return Some(Err(TransportError::other(error))),
            },
        };
        match messages.next().await {
            Some(Ok(message)) => Some(Ok(NatsDelivery::new(message, Arc::clone(&self.origin)))),
            Some(Err(error)) => {
                let kind = error.kind();
                let ended = matches!(
                    kind,
                    MessagesErrorKind::ConsumerDeleted
                        | MessagesErrorKind::PushBasedConsumer
                        | MessagesErrorKind::RequestLimitExceeded
                );
                if ended {
                    self.messages = None;
                }
                Some(Err(match kind {
                    MessagesErrorKind::MissingHeartbeat | MessagesErrorKind::NoResponders => TransportError::Closed,
                    _ => TransportError::other(error),
                }))
            }
            None => {
                self.messages = None;
                Some(Err(TransportError::Closed))
            }
        }
    }

    async fn stop(&mut self) {
        // Dropping the pull stream unsubscribes its inbox, which ends its pull requests on
        // the server. Messages already in the client's buffer were delivered to nobody:
        // give them back at once (nothing ran) rather than leave them to their `ack_wait`.
        self.stopped = true;
        let Some(mut messages) = self.messages.take() else { return };
        let mut given_back = 0_usize;
        while let Some(Some(Ok(message))) = messages.next().now_or_never() {
            if let Err(error) = message.ack_with(AckKind::Nak(None)).await {
                tracing::debug!(target: "idem_nats", %error, "a buffered message was not given back; it returns after ack_wait");
            }
            given_back += 1;
        }
        tracing::debug!(target: "idem_nats", given_back, "stopped pulling");
    }

    fn redelivery_timer(&self) -> RedeliveryTimer {
        RedeliveryTimer::AckWait(self.ack_wait)
    }

    fn source(&self) -> Option<&str> {
        Some(NatsTransport::source(self))
    }
}
