//! [`IdempotentRetryLayer`]: the configuration, applied to a service.

use std::sync::Arc;

use tower::Layer;

use crate::IdempotentRetry;
use crate::config::{Config, IdempotentRetryBuilder};

/// Applies [`IdempotentRetry`] to a service. It holds configuration only (with the key
/// generator and the jitter source); clones share it.
#[derive(Clone)]
pub struct IdempotentRetryLayer {
    config: Arc<Config>,
}

impl IdempotentRetryLayer {
    /// A layer with the defaults (see [`IdempotentRetryBuilder`]).
    #[must_use]
    pub fn new() -> IdempotentRetryLayer {
        IdempotentRetryBuilder::default().build().expect("the default configuration is valid")
    }

    /// A builder starting from the defaults.
    pub fn builder() -> IdempotentRetryBuilder {
        IdempotentRetryBuilder::default()
    }

    pub(crate) fn from_config(config: Arc<Config>) -> IdempotentRetryLayer {
        IdempotentRetryLayer { config }
    }

    #[cfg(test)]
    pub(crate) fn config(&self) -> &Config {
        &self.config
    }
}

impl Default for IdempotentRetryLayer {
    fn default() -> Self {
        IdempotentRetryLayer::new()
    }
}

impl std::fmt::Debug for IdempotentRetryLayer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IdempotentRetryLayer").field("config", &self.config).finish()
    }
}

impl<S> Layer<S> for IdempotentRetryLayer {
    type Service = IdempotentRetry<S>;

    fn layer(&self, inner: S) -> Self::Service {
        IdempotentRetry::from_parts(inner, Arc::clone(&self.config))
    }
}
