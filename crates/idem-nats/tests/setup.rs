//! A consumer idem cannot use is refused at construction, with the error that names why.

mod common;

use std::time::Duration;

use async_nats::jetstream::consumer::{AckPolicy, pull};
use async_nats::jetstream::stream::RetentionPolicy;
use common::Fixture;
use idem_consumer::Transport;
use idem_core::{Policy, RedeliveryTimer};
use idem_nats::{MAX_DELIVER_MIN, NatsOptions, NatsTransport, SetupError, recommended_consumer};

fn config(durable: &str) -> pull::Config {
    pull::Config {
        durable_name: Some(durable.to_owned()),
        ack_policy: AckPolicy::Explicit,
        ack_wait: Duration::from_secs(3),
        max_deliver: -1,
        ..pull::Config::default()
    }
}

async fn open(fixture: &Fixture, config: pull::Config, options: NatsOptions) -> Result<NatsTransport, SetupError> {
    let consumer = fixture.consumer_with(config).await;
    NatsTransport::new(&fixture.js, consumer, options).await
}

#[tokio::test]
async fn bad_consumer_configs_are_refused_by_name() {
    // Limits retention: a work queue allows one unfiltered consumer, this test makes several.
    let mut fixture = Fixture::with_retention("setup", RetentionPolicy::Limits).await;
    let default = NatsOptions::default;

    let none = pull::Config { ack_policy: AckPolicy::None, ..config("ack_none") };
    let error = open(&fixture, none, default()).await.expect_err("ack policy none");
    assert!(matches!(error, SetupError::AckPolicy { found: AckPolicy::None, .. }), "{error}");
    let all = pull::Config { ack_policy: AckPolicy::All, ..config("ack_all") };
    let error = open(&fixture, all, default()).await.expect_err("ack policy all");
    assert!(matches!(error, SetupError::AckPolicy { found: AckPolicy::All, .. }), "{error}");

    let low = pull::Config { max_deliver: MAX_DELIVER_MIN - 1, ..config("max_deliver_low") };
    let error = open(&fixture, low, default()).await.expect_err("max_deliver too low");
    assert!(matches!(error, SetupError::MaxDeliverTooLow { max_deliver: 9, min: 10, .. }), "{error}");
    assert!(error.to_string().contains("set -1"), "the error says what to set: {error}");
    let enough = pull::Config { max_deliver: MAX_DELIVER_MIN, ..config("max_deliver_enough") };
    open(&fixture, enough, default()).await.expect("max_deliver at the minimum is accepted");

    let ephemeral = pull::Config { durable_name: None, ..config("unused") };
    let error = open(&fixture, ephemeral, default()).await.expect_err("ephemeral");
    assert!(matches!(error, SetupError::NotDurable { .. }), "{error}");

    let error = open(&fixture, config("zero"), default().in_flight_max(0)).await.expect_err("in flight 0");
    assert!(matches!(error, SetupError::InFlightMaxZero), "{error}");

    let error = NatsTransport::open(&fixture.js, &fixture.stream, "missing", default()).await.expect_err("missing");
    assert!(matches!(error, SetupError::Lookup { .. }), "{error}");
    let error =
        NatsTransport::open(&fixture.js, "idem_t_no_such_stream", "app", default()).await.expect_err("no stream");
    assert!(matches!(error, SetupError::Lookup { .. }), "{error}");

    // Dead-letter subjects: a wildcard, one no stream captures, one the consumed stream captures.
    let wildcard = default().dead_letter_subject("dlq.>");
    let error = open(&fixture, config("dlq_wild"), wildcard).await.expect_err("wildcard");
    assert!(matches!(error, SetupError::DeadLetterInvalid { .. }), "{error}");
    let unbound = default().dead_letter_subject(format!("idem_t_nowhere_{}.dlq", std::process::id()));
    let error = open(&fixture, config("dlq_unbound"), unbound).await.expect_err("unbound");
    assert!(matches!(error, SetupError::DeadLetterUnbound { .. }), "{error}");
    let looped = default().dead_letter_subject(fixture.subject("dlq"));
    let error = open(&fixture, config("dlq_loop"), looped).await.expect_err("loop");
    assert!(matches!(&error, SetupError::DeadLetterLoop { stream, .. } if *stream == fixture.stream), "{error}");

    let dlq = format!("idem_t_setup_dlq_{}", std::process::id());
    fixture.add_stream(&dlq, RetentionPolicy::Limits).await;
    let good = default().dead_letter_subject(format!("{dlq}.x"));
    let transport = open(&fixture, config("good"), good).await.expect("a good consumer opens");
    assert_eq!(transport.redelivery_timer(), RedeliveryTimer::AckWait(Duration::from_secs(3)));
    assert_eq!(transport.source(), format!("nats:{}/good", fixture.stream));
}

#[tokio::test]
async fn the_recommended_consumer_opens_with_ack_wait_of_lease_plus_renewal() {
    let fixture = Fixture::new("recommended").await;
    let policy = Policy::default();
    let consumer = fixture.consumer_with(recommended_consumer("app", &policy, 16, 2)).await;
    let transport = NatsTransport::new(&fixture.js, consumer, NatsOptions::default().in_flight_max(16))
        .await
        .expect("the recommended consumer is accepted");
    let expected = policy.lease() + policy.renew_every();
    assert_eq!(transport.redelivery_timer(), RedeliveryTimer::AckWait(expected));
    let info = fixture.consumer_info("app").await;
    assert_eq!(info.config.max_deliver, -1);
    assert_eq!(info.config.max_ack_pending, 32);
    assert_eq!(info.config.ack_policy, AckPolicy::Explicit);
}

/// A handler that is never run: the consumer is refused before it starts.
struct Never;

impl idem_consumer::Handler for Never {
    type Error = std::convert::Infallible;

    async fn handle(
        &self,
        _message: &idem_consumer::Message<'_>,
        _claim: &idem_consumer::ClaimScope,
    ) -> Result<idem_core::StoredOutcome, Self::Error> {
        Ok(idem_core::StoredOutcome::empty())
    }
}

#[tokio::test]
async fn an_ack_wait_under_two_renewals_is_refused_by_the_consumer() {
    let fixture = Fixture::with_retention("timers", RetentionPolicy::Limits).await;
    let store = std::sync::Arc::new(idem_core::MemoryStore::default());
    // The default lease (10 s) renews every 3.3 s; an ack wait of 1 s would expire between renewals.
    let short = fixture.transport("short", Duration::from_secs(1)).await;
    let refused = idem_consumer::Consumer::builder(std::sync::Arc::clone(&store), short).handler(Never);
    let error = refused.err().expect("an ack wait of 1 s with a 10 s lease is refused");
    assert!(matches!(error, idem_consumer::ConfigError::Timers(_)), "{error}");

    let policy = Policy::DEFAULT;
    let fitting = fixture.consumer_with(recommended_consumer("fits", &policy, 64, 1)).await;
    let fitting = NatsTransport::new(&fixture.js, fitting, NatsOptions::default()).await.expect("transport");
    let built = idem_consumer::Consumer::builder(store, fitting).policy(policy).handler(Never);
    assert!(built.is_ok(), "the recommended ack wait fits the lease");
}
