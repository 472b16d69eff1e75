//! The transport's connection: reconnected when it is found closed, and the source of
//! every channel the transport uses (the consumer's, and one confirm-mode channel for
//! dead-letter copies).

use lapin::options::ConfirmSelectOptions;
use lapin::{Channel, Connection, ConnectionProperties};
use tokio::sync::Mutex;

/// Longest wait for the broker to confirm a published copy (a dead letter, a reply). A
/// broker under a memory or disk alarm blocks publishing connections; past this the
/// publish counts as failed and the delivery is naked, rather than holding its slot.
pub(crate) const CONFIRM_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// Waits for a publisher confirm, at most [`CONFIRM_TIMEOUT`].
pub(crate) async fn confirmed<T>(
    confirm: impl std::future::IntoFuture<Output = lapin::Result<T>>,
) -> Result<T, idem_consumer::TransportError> {
    match tokio::time::timeout(CONFIRM_TIMEOUT, confirm.into_future()).await {
        Ok(confirmation) => confirmation.map_err(crate::error::transport_error),
        Err(_) => Err(idem_consumer::TransportError::other(format!(
            "the broker did not confirm the publish within {CONFIRM_TIMEOUT:?} (a blocked connection?)"
        ))),
    }
}

/// One AMQP connection, reopened on demand.
pub(crate) struct Link {
    uri: String,
    connection_name: Option<String>,
    connection: Mutex<Option<Connection>>,
    confirm: Mutex<Option<Channel>>,
}

impl Link {
    /// Connects now, so a wrong address or login fails the build, not the first `next()`.
    pub(crate) async fn connect(uri: String, connection_name: Option<String>) -> lapin::Result<(Link, String)> {
        let connection = open(&uri, connection_name.as_deref()).await?;
        let vhost = connection.status().vhost().to_string();
        let link = Link { uri, connection_name, connection: Mutex::new(Some(connection)), confirm: Mutex::new(None) };
        Ok((link, vhost))
    }

    /// A new channel, on the current connection if it is open, else on a new one.
    pub(crate) async fn channel(&self) -> lapin::Result<Channel> {
        let mut slot = self.connection.lock().await;
        if let Some(connection) = slot.as_ref().filter(|c| c.status().connected()) {
            return connection.create_channel().await;
        }
        let connection = open(&self.uri, self.connection_name.as_deref()).await?;
        let channel = connection.create_channel().await;
        *slot = Some(connection);
        channel
    }

    /// The confirm-mode channel for publishing (dead-letter copies), opened on first use
    /// and again after it closed. Shared: lapin channels are safe to use from many tasks.
    pub(crate) async fn confirm_channel(&self) -> lapin::Result<Channel> {
        let mut slot = self.confirm.lock().await;
        if let Some(channel) = slot.as_ref().filter(|c| c.status().connected()) {
            return Ok(channel.clone());
        }
        let channel = self.channel().await?;
        channel.confirm_select(ConfirmSelectOptions::default()).await?;
        *slot = Some(channel.clone());
        Ok(channel)
    }
}

async fn open(uri: &str, connection_name: Option<&str>) -> lapin::Result<Connection> {
    let mut properties = ConnectionProperties::default();
    if let Some(name) = connection_name {
        properties = properties.with_connection_name(name.into());
    }
    Connection::connect(uri, properties).await
}
