//! [`ResponseFuture`]: the future of one request through [`crate::IdempotentRetry`].

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use http::Response;

use crate::RetryError;

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send + 'static>>;

/// Resolves to the final response (with a [`crate::RetryReport`]) or a [`RetryError`].
///
/// It owns everything it needs (a clone of the inner service, the buffered request), so
/// the service may be dropped while it runs. Dropping it stops retrying at once.
pub struct ResponseFuture<B> {
    inner: BoxFuture<Result<Response<B>, RetryError>>,
}

impl<B> ResponseFuture<B> {
    pub(crate) fn new(inner: BoxFuture<Result<Response<B>, RetryError>>) -> ResponseFuture<B> {
        ResponseFuture { inner }
    }
}

impl<B> Future for ResponseFuture<B> {
    type Output = Result<Response<B>, RetryError>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        self.inner.as_mut().poll(cx)
    }
}

impl<B> std::fmt::Debug for ResponseFuture<B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ResponseFuture").finish_non_exhaustive()
    }
}
