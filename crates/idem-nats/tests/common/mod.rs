//! What every real-broker test shares: a connection to the test server (127.0.0.1:4222,
//! or `IDEM_NATS_URL`), a stream of its own named after the test and the process, deleted
//! when the test ends (a drop guard, so also when it fails), and bounded waits.
#![allow(dead_code, unreachable_pub, missing_docs)]

use std::future::Future;
use std::time::Duration;

use async_nats::HeaderMap;
use async_nats::jetstream::consumer::{self, AckPolicy, PullConsumer, pull};
use async_nats::jetstream::context::Context;
use async_nats::jetstream::stream::{self, RetentionPolicy};
use idem_consumer::Transport;
use idem_nats::NatsTransport;

pub fn url() -> String {
    std::env::var("IDEM_NATS_URL").unwrap_or_else(|_| "127.0.0.1:4222".to_owned())
}

pub async fn connect() -> Context {
    let client = async_nats::connect(url()).await.unwrap_or_else(|e| panic!("NATS at {} is needed: {e}", url()));
    async_nats::jetstream::new(client)
}

/// Deletes its streams when dropped, from a thread of its own (a client lives on the
/// runtime that made it, and the test's runtime may be going away).
pub struct Cleanup(Vec<String>);

impl Drop for Cleanup {
    fn drop(&mut self) {
        let streams = std::mem::take(&mut self.0);
        let deleting = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
            runtime.block_on(async move {
                let js = connect().await;
                for stream in streams {
                    if let Err(error) = js.delete_stream(&stream).await {
                        eprintln!("could not delete test stream {stream}: {error}");
                    }
                }
            });
        });
        if deleting.join().is_err() {
            eprintln!("deleting the test streams panicked");
        }
    }
}

/// A test's own stream `idem_t_<test>_<pid>` capturing `<stream>.>`.
pub struct Fixture {
    pub js: Context,
    pub stream: String,
    cleanup: Cleanup,
}

impl Fixture {
    /// A work-queue stream (acked messages are removed, as the plan's tests use).
    pub async fn new(test: &str) -> Fixture {
        Fixture::with_retention(test, RetentionPolicy::WorkQueue).await
    }

    pub async fn with_retention(test: &str, retention: RetentionPolicy) -> Fixture {
        let js = connect().await;
        let stream = format!("idem_t_{test}_{}", std::process::id());
        // A stream left by a killed earlier run of the same pid would carry old messages.
        let _ = js.delete_stream(&stream).await;
        let mut fixture = Fixture { js, stream: stream.clone(), cleanup: Cleanup(Vec::new()) };
        fixture.add_stream(&stream, retention).await;
        fixture
    }

    /// Another stream of this test (a dead-letter stream), deleted with the fixture.
    pub async fn add_stream(&mut self, name: &str, retention: RetentionPolicy) -> String {
        let _ = self.js.delete_stream(name).await;
        let config = stream::Config {
            name: name.to_owned(),
            subjects: vec![format!("{name}.>")],
            retention,
            ..stream::Config::default()
        };
        self.js.create_stream(config).await.unwrap_or_else(|e| panic!("create stream {name}: {e}"));
        self.cleanup.0.push(name.to_owned());
        name.to_owned()
    }

    /// A subject of this test's stream.
    pub fn subject(&self, tail: &str) -> String {
        format!("{}.{tail}", self.stream)
    }

    /// A durable pull consumer as idem wants it, with this `ack_wait`.
    pub async fn consumer(&self, durable: &str, ack_wait: Duration) -> PullConsumer {
        self.consumer_with(pull::Config {
            durable_name: Some(durable.to_owned()),
            ack_policy: AckPolicy::Explicit,
            ack_wait,
            max_deliver: -1,
            ..pull::Config::default()
        })
        .await
    }

    pub async fn consumer_with(&self, config: pull::Config) -> PullConsumer {
        let stream = self.js.get_stream(&self.stream).await.expect("get test stream");
        stream.create_consumer(config).await.expect("create consumer")
    }

    pub async fn transport(&self, durable: &str, ack_wait: Duration) -> NatsTransport {
        let consumer = self.consumer(durable, ack_wait).await;
        NatsTransport::new(&self.js, consumer, idem_nats::NatsOptions::default()).await.expect("transport")
    }

    /// Publishes and waits for the stream's ack; says whether the stream kept it (not a duplicate).
    pub async fn publish(&self, subject: &str, payload: &[u8], msg_id: Option<&str>) -> bool {
        let mut headers = HeaderMap::new();
        if let Some(id) = msg_id {
            headers.insert(async_nats::header::NATS_MESSAGE_ID, id);
        }
        let ack = self.js.publish_with_headers(subject.to_owned(), headers, payload.to_vec().into()).await;
        let ack = ack.expect("publish").await.expect("publish ack");
        !ack.duplicate
    }

    pub async fn consumer_info(&self, durable: &str) -> consumer::Info {
        let stream = self.js.get_stream(&self.stream).await.expect("get test stream");
        let consumer: PullConsumer = stream.get_consumer(durable).await.expect("get consumer");
        consumer.get_info().await.expect("consumer info")
    }

    /// Waits (at most `within`) until the consumer has nothing pending and nothing unacked.
    pub async fn until_settled(&self, durable: &str, within: Duration) {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            let info = self.consumer_info(durable).await;
            if info.num_ack_pending == 0 && info.num_pending == 0 {
                return;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "consumer {durable} not settled within {within:?}: {} unacked, {} pending",
                info.num_ack_pending,
                info.num_pending
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// Polls `check` every 50 ms until it is true or `within` passed; says which.
pub async fn poll_until<F, Fut>(within: Duration, mut check: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + within;
    loop {
        if check().await {
            return true;
        }
        if tokio::time::Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The next delivery, waited for at most `within`; `what` says what was awaited.
pub async fn next_within<T: Transport>(transport: &mut T, within: Duration, what: &str) -> T::Delivery {
    match tokio::time::timeout(within, transport.next()).await {
        Ok(Some(Ok(delivery))) => delivery,
        Ok(Some(Err(error))) => panic!("waiting for {what}: transport error {error}"),
        Ok(None) => panic!("waiting for {what}: the transport stopped"),
        Err(_) => panic!("waiting for {what}: nothing delivered within {within:?}"),
    }
}

/// Asserts nothing is delivered before `until` (an instant the broker cannot have reached its
/// own timer by, measured from before the settle that started it; past already: nothing to check).
pub async fn nothing_until<T: Transport>(transport: &mut T, until: tokio::time::Instant, why: &str) {
    if let Ok(Some(delivery)) = tokio::time::timeout_at(until, transport.next()).await {
        panic!("{why}: got a delivery ({:?})", delivery.map(|_| ()));
    }
}
