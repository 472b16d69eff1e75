//! [`ResponseFuture`]: the answer of [`crate::Idempotency`], whichever path it took.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use bytes::Bytes;
use http::Response;
use http_body::Body as HttpBody;
use pin_project_lite::pin_project;
use tokio::task::JoinHandle;

use crate::body::{Body, BoxError, boxed};
use crate::problem::kinds;
use crate::{Outcome, service};

pin_project! {
    /// The response future of [`crate::Idempotency`].
    ///
    /// A keyed request runs in a task of its own (see [`crate::Idempotency`]); dropping
    /// this future (the client went away) detaches that task, it does not cancel it.
    pub struct ResponseFuture<F, E> {
        #[pin]
        kind: Kind<F, E>,
    }
}

pin_project! {
    #[project = KindProj]
    enum Kind<F, E> {
        PassThrough { #[pin] future: F },
        Spawned { handle: JoinHandle<Result<Response<Body>, E>> },
        Ready { response: Option<Response<Body>> },
    }
}

impl<F, E> ResponseFuture<F, E> {
    pub(crate) fn pass_through(future: F) -> Self {
        ResponseFuture { kind: Kind::PassThrough { future } }
    }

    pub(crate) fn spawned(handle: JoinHandle<Result<Response<Body>, E>>) -> Self {
        ResponseFuture { kind: Kind::Spawned { handle } }
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
            KindProj::PassThrough { future } => {
                let response = ready!(future.poll(cx))?;
                let mut response = response.map(boxed);
                service::finish(&mut response, Outcome::PassedThrough, None);
                Poll::Ready(Ok(response))
            }
            KindProj::Spawned { handle } => match ready!(Pin::new(handle).poll(cx)) {
                Ok(result) => Poll::Ready(result),
                Err(join_error) => {
                    // Handler panics are caught inside the task, so this is the runtime
                    // shutting down (or a bug in the layer): nothing useful was answered.
                    tracing::error!(error = %join_error, "idempotency task did not finish");
                    let mut response =
                        kinds::handler_failed("the request was interrupted by the server").into_response();
                    service::finish(&mut response, Outcome::Released, None);
                    Poll::Ready(Ok(response))
                }
            },
            KindProj::Ready { response } => {
                Poll::Ready(Ok(response.take().expect("a ready response future is not polled after completion")))
            }
        }
    }
}

impl<F, E> std::fmt::Debug for ResponseFuture<F, E> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ResponseFuture")
    }
}
