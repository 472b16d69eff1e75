//! [`IdempotencyLayer`]: configuration and store, applied to a service.

use std::sync::Arc;

use idem_core::Store;
use tower::Layer;

use crate::Idempotency;
use crate::builder::IdempotencyBuilder;
use crate::config::Config;
use crate::error::ConfigError;

/// A store as the layer holds it, shared: a store (`St`) or an `Arc<St>`.
///
/// (Not `Into<Arc<St>>`: for an `Arc<St>` argument that bound fits both `St` and
/// `Arc<St>`, and the compiler cannot choose; this trait fits only `St`, because no
/// `Arc` is a [`Store`].)
pub trait IntoStore<St> {
    /// The store, shared.
    fn into_store(self) -> Arc<St>;
}

impl<St: Store> IntoStore<St> for St {
    fn into_store(self) -> Arc<St> {
        Arc::new(self)
    }
}

impl<St: Store> IntoStore<St> for Arc<St> {
    fn into_store(self) -> Arc<St> {
        self
    }
}

/// Applies [`Idempotency`] to a service. It holds the configuration and the store only;
/// clones share both.
pub struct IdempotencyLayer<St> {
    config: Arc<Config>,
    store: Arc<St>,
}

impl<St> IdempotencyLayer<St> {
    /// The tracker every keyed request's work runs under, including work that goes on after
    /// its client went away ([`IdempotencyBuilder::task_tracker`]). At shutdown, once the
    /// server stops accepting requests: `tracker.close()`, then await `tracker.wait()`
    /// within the drain deadline.
    #[must_use]
    pub fn task_tracker(&self) -> &tokio_util::task::TaskTracker {
        &self.config.tracker
    }
}

impl<St: Store> IdempotencyLayer<St> {
    /// A layer with SPEC's defaults (see [`IdempotencyBuilder`]) over `store`: the store
    /// itself (`new(store)`, for stores that are cheap handles) or shared
    /// (`new(Arc::new(store))`, `new(Arc::clone(&store))`).
    #[must_use]
    pub fn new(store: impl IntoStore<St>) -> IdempotencyLayer<St> {
        IdempotencyBuilder::new(store.into_store()).build().expect("the default configuration is valid")
    }

    /// A builder starting from the defaults; takes the store as [`IdempotencyLayer::new`] does.
    pub fn builder(store: impl IntoStore<St>) -> IdempotencyBuilder<St> {
        IdempotencyBuilder::new(store.into_store())
    }

    #[cfg(test)]
    pub(crate) fn config(&self) -> &Config {
        &self.config
    }
}

impl<St: Store> IdempotencyBuilder<St> {
    /// The layer.
    ///
    /// # Errors
    /// [`ConfigError`] when lease and retention are invalid, a body limit is zero, a
    /// try-later status is not 4xx, the conflict wait is over [`crate::config::WAIT_MAX`],
    /// or the tombstone, execution ceiling or a route (here or in a
    /// [`crate::RoutePolicy`]) is invalid.
    pub fn build(self) -> Result<IdempotencyLayer<St>, ConfigError> {
        let (config, store) = self.validate()?;
        crate::observe::describe();
        Ok(IdempotencyLayer { config: Arc::new(config), store })
    }
}

impl<St> Clone for IdempotencyLayer<St> {
    fn clone(&self) -> Self {
        IdempotencyLayer { config: Arc::clone(&self.config), store: Arc::clone(&self.store) }
    }
}

impl<St> std::fmt::Debug for IdempotencyLayer<St> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IdempotencyLayer").field("config", &self.config).finish_non_exhaustive()
    }
}

impl<S, St> Layer<S> for IdempotencyLayer<St> {
    type Service = Idempotency<S, St>;

    fn layer(&self, inner: S) -> Self::Service {
        Idempotency::from_parts(inner, Arc::clone(&self.config), Arc::clone(&self.store))
    }
}
