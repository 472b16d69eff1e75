//! [`ResponseFuture`]: the answer of [`crate::Idempotency`], whichever path it took.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use bytes::Bytes;
use http::Response;
use http_body::Body as HttpBody;
use pin_project_lite::pin_project;
use tokio::time::Instant;
use tokio_util::task::TaskTracker;
use tokio_util::task::task_tracker::TrackedFuture;

use crate::Outcome;
use crate::body::{Body, BoxError, boxed};

pin_project! {
    /// The response future of [`crate::Idempotency`].
    ///
    /// A keyed request is processed inside this future while it is polled; dropping it
    /// before the end (the client went away) hands the rest of the work to a task of its
    /// own on the layer's task tracker, so it is never cancelled and a draining server can
    /// wait for it (see [`crate::Idempotency`] and [`crate::IdempotencyLayer::task_tracker`]).
    pub struct ResponseFuture<F, E> {
        #[pin]
        kind: Kind<F, E>,
    }
}

pin_project! {
    #[project = KindProj]
    enum Kind<F, E> {
        PassThrough { #[pin] future: F, started: Instant },
        Keyed { work: Detached<Result<Response<Body>, E>> },
        Ready { response: Option<Response<Body>> },
    }
}

impl<F, E> ResponseFuture<F, E> {
    pub(crate) fn pass_through(future: F, started: Instant) -> Self {
        ResponseFuture { kind: Kind::PassThrough { future, started } }
    }

    /// Keyed work, tracked by `tracker` from now until it ends, here or on a task of its own.
    pub(crate) fn keyed(
        work: impl Future<Output = Result<Response<Body>, E>> + Send + 'static,
        tracker: &TaskTracker,
    ) -> Self
    where
        E: Send + 'static,
    {
        let work: Work<Result<Response<Body>, E>> = Box::pin(work);
        ResponseFuture {
            kind: Kind::Keyed { work: Detached { work: Some(tracker.track_future(work)), hand_over: run_to_end } },
        }
    }

    pub(crate) fn ready(response: Response<Body>) -> Self {
        ResponseFuture { kind: Kind::Ready { response: Some(response) } }
    }
}

impl<F, E, B> Future for ResponseFuture<F, E>
where
    F: Future<Output = Result<Response<B>, E>>,
    B: HttpBody<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    type Output = Result<Response<Body>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project().kind.project() {
            KindProj::PassThrough { future, started } => {
                let response = ready!(future.poll(cx))?;
                let mut response = response.map(boxed);
                crate::answer::finish(&mut response, Outcome::PassedThrough, None, None, *started);
                Poll::Ready(Ok(response))
            }
            KindProj::Keyed { work } => work.poll(cx),
            KindProj::Ready { response } => {
                Poll::Ready(Ok(response.take().expect("a ready response future is not polled after completion")))
            }
        }
    }
}

/// Work that must run to its end: polled in place, and moved to a task of its own if it
/// is dropped unfinished. It is tracked by the layer's [`TaskTracker`] wherever it runs
/// (the tracking token moves with it), so a draining server can wait for it. Polling in place spares the common case a task spawn and a
/// cross-thread wake-up; the hand-over on drop keeps the guarantee that a client going
/// away never cuts a handler (or its completion) short.
struct Detached<T> {
    work: Option<TrackedFuture<Work<T>>>,
    /// What to do with unfinished work on drop; chosen where `T: Send + 'static` is known.
    hand_over: fn(TrackedFuture<Work<T>>),
}

type Work<T> = Pin<Box<dyn Future<Output = T> + Send>>;

impl<T> Detached<T> {
    fn poll(&mut self, cx: &mut Context<'_>) -> Poll<T> {
        let work = self.work.as_mut().expect("a response future is not polled after completion");
        let output = ready!(Pin::new(work).poll(cx));
        self.work = None;
        Poll::Ready(output)
    }
}

impl<T> Drop for Detached<T> {
    fn drop(&mut self) {
        if let Some(work) = self.work.take() {
            (self.hand_over)(work);
        }
    }
}

fn run_to_end<T: Send + 'static>(work: TrackedFuture<Work<T>>) {
    match tokio::runtime::Handle::try_current() {
        Ok(runtime) => {
            // Nobody waits for the answer any more; the work itself (the handler and the
            // record's completion) is what must not be lost. It stays tracked: the token
            // inside `work` is released when the task ends.
            tracing::debug!(target: "idem_http", "response future dropped unfinished; the request runs on in a task of its own");
            runtime.spawn(async move { drop(work.await) });
        }
        Err(_) => tracing::error!("idempotent request dropped outside a tokio runtime; its handler stops here"),
    }
}

impl<F, E> std::fmt::Debug for ResponseFuture<F, E> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ResponseFuture")
    }
}
