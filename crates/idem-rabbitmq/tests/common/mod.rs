//! Helpers shared by the real-broker tests: the broker's address, queues each test
//! declares for itself (deleted by a drop guard, also when the test panics), publishing
//! with confirms, the queue's counts, and bounded waits.

#![allow(dead_code, unreachable_pub)] // each test binary uses its own subset

pub mod pg;

use std::future::Future;
use std::process::Command;
use std::time::Duration;

use idem_rabbitmq::lapin::options::{
    BasicGetOptions, BasicPublishOptions, ConfirmSelectOptions, QueueDeclareOptions, QueueDeleteOptions,
};
use idem_rabbitmq::lapin::types::{AMQPValue, FieldTable, ShortString};
use idem_rabbitmq::lapin::{BasicProperties, Channel, Connection, ConnectionProperties, message::BasicGetMessage};

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

/// A queue's messages ready and unacknowledged, as the broker counts them.
pub fn counts(queue: &str) -> (u64, u64) {
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

/// Waits (at most `max`) until `queue` has `ready` messages ready and `unacked`
/// unacknowledged; fails saying what it saw last.
pub async fn until_counts(queue: &str, ready: u64, unacked: u64, max: Duration) {
    let deadline = tokio::time::Instant::now() + max;
    loop {
        let seen = tokio::task::spawn_blocking({
            let queue = queue.to_owned();
            move || counts(&queue)
        })
        .await
        .expect("rabbitmqctl task");
        if seen == (ready, unacked) {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "queue {queue}: waited {max:?} for {ready} ready / {unacked} unacked, last saw {} / {}",
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

/// Closes the broker connection whose client named itself `name`, as the broker does to
/// a peer that stopped answering heartbeats.
pub fn close_connection(name: &str) {
    let output = Command::new("rabbitmqctl")
        .args(["list_connections", "-q", "--no-table-headers", "pid", "client_properties"])
        .output()
        .expect("rabbitmqctl runs");
    let text = String::from_utf8_lossy(&output.stdout);
    let pid = text
        .lines()
        .find(|line| line.contains(&format!("\"{name}\"")))
        .and_then(|line| line.split_whitespace().next())
        .unwrap_or_else(|| panic!("no connection named {name}: {text}"));
    let status = Command::new("rabbitmqctl")
        .args(["close_connection", pid, "closed by the test"])
        .output()
        .expect("rabbitmqctl runs")
        .status;
    assert!(status.success(), "rabbitmqctl close_connection {pid}");
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
