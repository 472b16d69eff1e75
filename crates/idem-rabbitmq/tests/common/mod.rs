//! Helpers shared by the real-broker tests: the broker's address, queues each test
//! declares for itself (deleted by a drop guard, also when the test panics), publishing
//! with confirms, the queue's counts, a proxy to cut a connection through, and bounded
//! waits. None needs root: the tests pass as any user that reaches the broker.

#![allow(dead_code, unreachable_pub)] // each test binary uses its own subset

pub mod pg;

use std::future::Future;
use std::process::Command;
use std::sync::OnceLock;
use std::time::Duration;

use idem_rabbitmq::lapin::options::{
    BasicGetOptions, BasicPublishOptions, ConfirmSelectOptions, QueueDeclareOptions, QueueDeleteOptions,
};
use idem_rabbitmq::lapin::types::{AMQPValue, FieldTable, ShortString};
use idem_rabbitmq::lapin::{BasicProperties, Channel, Connection, ConnectionProperties, message::BasicGetMessage};
use idem_testkit::proxy::TcpProxy;

/// The broker the tests use, unless `IDEM_TEST_AMQP_URL` names another.
pub fn uri() -> String {
    std::env::var("IDEM_TEST_AMQP_URL").unwrap_or_else(|_| "amqp://guest:guest@127.0.0.1:5672/%2f".to_owned())
}

/// A name no other test or run uses: the test's name and the process id.
pub fn unique(test: &str) -> String {
    format!("idem_t_{test}_{}", std::process::id())
}

/// The test's own connection and confirm-mode channel, for declaring, publishing and
/// inspecting; queues it declared are deleted when it is dropped.
pub struct Broker {
    pub channel: Channel,
    _connection: Connection,
    queues: Vec<String>,
}

impl Broker {
    pub async fn connect() -> Broker {
        let connection = Connection::connect(&uri(), ConnectionProperties::default())
            .await
            .unwrap_or_else(|error| panic!("RabbitMQ at {} is needed for these tests: {error}", uri()));
        let channel = connection.create_channel().await.expect("a channel opens");
        channel.confirm_select(ConfirmSelectOptions::default()).await.expect("confirm mode");
        Broker { channel, _connection: connection, queues: Vec::new() }
    }

    /// Declares a classic queue `name` (purged of any leftover from an earlier run).
    pub async fn queue(&mut self, name: &str) -> String {
        self.queue_with(name, FieldTable::default()).await
    }

    /// Declares a queue with `arguments` (quorum type, dead-letter exchange, ...).
    pub async fn queue_with(&mut self, name: &str, arguments: FieldTable) -> String {
        let _ = self.channel.queue_delete(name.into(), QueueDeleteOptions::default()).await;
        let options = QueueDeclareOptions { durable: true, ..QueueDeclareOptions::default() };
        self.channel.queue_declare(name.into(), options, arguments).await.expect("the queue is declared");
        self.queues.push(name.to_owned());
        name.to_owned()
    }

    /// Publishes `payload` to `queue` through the default exchange, with `message_id` and
    /// string `headers`, and waits for the broker's confirm.
    pub async fn publish(&self, queue: &str, message_id: Option<&str>, payload: &[u8], headers: &[(&str, &str)]) {
        let mut table = FieldTable::default();
        for (name, value) in headers {
            table.insert(ShortString::from(*name), AMQPValue::LongString((*value).into()));
        }
        let mut properties = BasicProperties::default().with_headers(table);
        if let Some(id) = message_id {
            properties = properties.with_message_id(id.into());
        }
        self.publish_properties(queue, payload, properties).await;
    }

    pub async fn publish_properties(&self, queue: &str, payload: &[u8], properties: BasicProperties) {
        let confirm = self
            .channel
            .basic_publish(
                "".into(),
                queue.into(),
                BasicPublishOptions { mandatory: true, immediate: false },
                payload,
                properties,
            )
            .await
            .expect("publish is sent");
        let confirmation = confirm.await.expect("the broker confirms");
        assert!(
            confirmation.is_ack() && confirmation.take_message().is_none(),
            "the broker took the message for {queue}"
        );
    }

    /// Takes one message from `queue` (acked), if it has one.
    pub async fn get(&self, queue: &str) -> Option<BasicGetMessage> {
        self.channel.basic_get(queue.into(), BasicGetOptions { no_ack: true }).await.expect("basic.get is answered")
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        let names = std::mem::take(&mut self.queues);
        if names.is_empty() {
            return;
        }
        // Drop runs inside the test's runtime; a thread with its own runtime does the I/O.
        let deleted = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("a runtime starts");
            runtime.block_on(async move {
                let connection =
                    Connection::connect(&uri(), ConnectionProperties::default()).await.map_err(|e| e.to_string())?;
                let channel = connection.create_channel().await.map_err(|e| e.to_string())?;
                for name in names {
                    channel
                        .queue_delete(name.as_str().into(), QueueDeleteOptions::default())
                        .await
                        .map_err(|e| e.to_string())?;
                }
                Ok::<(), String>(())
            })
        })
        .join();
        if let Ok(Err(error)) = deleted {
            eprintln!("could not delete the test queues: {error}");
        }
    }
}

/// How the tests read a queue's counts, chosen once per process and said on stderr.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Counter {
    /// `rabbitmqctl list_queues`: ready and unacknowledged. It talks to the broker's node
    /// with the Erlang cookie, which only root (and the broker's own user) can read.
    Rabbitmqctl,
    /// A passive `queue.declare` over AMQP, open to any user: the broker answers the ready
    /// messages only (AMQP 0-9-1 has no count of the unacknowledged).
    Amqp,
}

fn counter() -> Counter {
    static COUNTER: OnceLock<Counter> = OnceLock::new();
    *COUNTER.get_or_init(|| {
        if idem_testkit::is_root() {
            Counter::Rabbitmqctl
        } else {
            eprintln!(
                "not root: queue counts come over AMQP (passive queue.declare), which gives the ready \
                 messages only; the unacknowledged counts are checked as root (rabbitmqctl needs the Erlang cookie)"
            );
            Counter::Amqp
        }
    })
}

/// A queue's messages ready and unacknowledged, as the broker counts them; the
/// unacknowledged are `None` where only AMQP can ask (not root, see [`Counter`]).
pub async fn counts(queue: &str) -> (u64, Option<u64>) {
    match counter() {
        Counter::Rabbitmqctl => {
            let queue = queue.to_owned();
            let (ready, unacked) =
                tokio::task::spawn_blocking(move || rabbitmqctl_counts(&queue)).await.expect("rabbitmqctl task");
            (ready, Some(unacked))
        }
        Counter::Amqp => (ready_over_amqp(queue).await, None),
    }
}

/// `(ready, unacknowledged)` of `queue` from `rabbitmqctl list_queues`.
fn rabbitmqctl_counts(queue: &str) -> (u64, u64) {
    let output = Command::new("rabbitmqctl")
        .args(["list_queues", "-q", "--no-table-headers", "name", "messages_ready", "messages_unacknowledged"])
        .output()
        .expect("rabbitmqctl runs");
    let text = String::from_utf8_lossy(&output.stdout);
    for line in text.lines() {
        let fields: Vec<&str> = line.split_whitespace().collect();
        if let [name, ready, unacked] = fields[..]
            && name == queue
        {
            return (ready.parse().expect("a count"), unacked.parse().expect("a count"));
        }
    }
    panic!("rabbitmqctl does not list queue {queue}: {text}");
}

/// The ready messages of `queue`, from a passive `queue.declare` on a connection of its own.
async fn ready_over_amqp(queue: &str) -> u64 {
    let connection = Connection::connect(&uri(), ConnectionProperties::default())
        .await
        .unwrap_or_else(|error| panic!("RabbitMQ at {} is needed for these tests: {error}", uri()));
    let channel = connection.create_channel().await.expect("a channel opens");
    let options = QueueDeclareOptions { passive: true, ..QueueDeclareOptions::default() };
    let declared = channel.queue_declare(queue.into(), options, FieldTable::default()).await;
    let ready = declared.unwrap_or_else(|error| panic!("queue {queue} is there: {error}")).message_count();
    let _ = connection.close(200, "counted".into()).await;
    u64::from(ready)
}

/// Asserts `queue` holds `ready` messages ready and `unacked` unacknowledged (the latter
/// where it can be counted, see [`counts`]).
pub async fn assert_counts(queue: &str, ready: u64, unacked: u64, what: &str) {
    let seen = counts(queue).await;
    assert_eq!(seen.0, ready, "{what}: ready in {queue}");
    if let Some(seen) = seen.1 {
        assert_eq!(seen, unacked, "{what}: unacknowledged in {queue}");
    }
}

/// Waits (at most `max`) until `queue` has `ready` messages ready and `unacked`
/// unacknowledged (the latter where it can be counted, see [`counts`]); fails saying what
/// it saw last.
pub async fn until_counts(queue: &str, ready: u64, unacked: u64, max: Duration) {
    let deadline = tokio::time::Instant::now() + max;
    loop {
        let seen = counts(queue).await;
        if seen.0 == ready && seen.1.is_none_or(|seen| seen == unacked) {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "queue {queue}: waited {max:?} for {ready} ready / {unacked} unacked, last saw {} / {:?}",
            seen.0,
            seen.1
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// `future`'s output, or a failure naming `what` it waited for.
pub async fn within<T>(max: Duration, what: &str, future: impl Future<Output = T>) -> T {
    tokio::time::timeout(max, future).await.unwrap_or_else(|_| panic!("waited {max:?} for {what}"))
}

/// A [`TcpProxy`] to the broker of [`uri`], and that URI with the proxy in the broker's
/// place: a connection made with it can be cut ([`TcpProxy::cut`]) as a network that drops
/// it would, which no broker command and no privilege is needed for.
pub fn proxied_uri() -> (TcpProxy, String) {
    let uri = uri();
    let (scheme, rest) = uri.split_once("://").expect("the AMQP URI has a scheme");
    let authority_end = rest.find('/').unwrap_or(rest.len());
    let (authority, path) = rest.split_at(authority_end);
    let (user, host_port) = authority.rsplit_once('@').map_or(("", authority), |(user, host)| (user, host));
    let upstream = if host_port.contains(':') { host_port.to_owned() } else { format!("{host_port}:5672") };
    let proxy = TcpProxy::start(upstream.as_str()).unwrap_or_else(|error| panic!("a proxy to {upstream}: {error}"));
    let at = if user.is_empty() { String::new() } else { format!("{user}@") };
    let proxied = format!("{scheme}://{at}{}{path}", proxy.local_addr());
    (proxy, proxied)
}

/// Waits (at most `max`, checking every 100 ms) until `check` answers `Ok`; fails with
/// `what` and the last `Err` it answered.
pub async fn until<F, Fut>(max: Duration, what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<(), String>>,
{
    let deadline = tokio::time::Instant::now() + max;
    loop {
        let last = match check().await {
            Ok(()) => return,
            Err(last) => last,
        };
        assert!(tokio::time::Instant::now() < deadline, "waited {max:?} for {what}; last saw {last}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
