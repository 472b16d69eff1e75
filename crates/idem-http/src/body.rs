//! The one body type the layer returns, and bounded reading of request and response bodies.

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::{Bytes, BytesMut};
use http_body::Body as HttpBody;
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Full};

/// An error from a body, boxed.
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// The body of every response the layer returns, and of every request it hands on.
///
/// A boxed body that is `Send` but not `Sync`: axum's own body is not `Sync`, so a `Sync`
/// box could not hold it, and hyper needs only `Send`. Axum turns it into its own body
/// through `IntoResponse`, plain hyper serves it as it is, and neither side has to depend
/// on the other's body type. It is a newtype (not an alias of `UnsyncBoxBody`) so that its
/// type names no lifetime, which keeps the compiler's `Send` checks for spawned tasks exact.
pub struct Body(UnsyncBoxBody<Bytes, BoxError>);

impl Body {
    /// A body holding `bytes`.
    #[must_use]
    pub fn full(bytes: impl Into<Bytes>) -> Body {
        Body(Full::new(bytes.into()).map_err(|never| match never {}).boxed_unsync())
    }

    /// Any body, boxed.
    pub fn new<B>(body: B) -> Body
    where
        B: HttpBody<Data = Bytes> + Send + 'static,
        B::Error: Into<BoxError>,
    {
        Body(body.map_err(Into::into).boxed_unsync())
    }
}

impl HttpBody for Body {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Bytes>, BoxError>>> {
        Pin::new(&mut self.0).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.0.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.0.size_hint()
    }
}

impl std::fmt::Debug for Body {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("Body").field(&self.size_hint()).finish()
    }
}

/// A body holding `bytes`.
pub(crate) fn full(bytes: impl Into<Bytes>) -> Body {
    Body::full(bytes)
}

/// Any body, boxed into [`Body`].
pub(crate) fn boxed<B>(body: B) -> Body
where
    B: HttpBody<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    Body::new(body)
}

/// Why a body could not be read whole.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ReadError {
    /// The body is longer than the limit (known from its size hint or found while reading).
    #[error("body is longer than {bytes_max} bytes")]
    TooLarge {
        /// The limit.
        bytes_max: usize,
    },
    /// The body failed while streaming (client gone, bad chunking, handler error).
    #[error("body could not be read: {0}")]
    Broken(BoxError),
}

/// Reads `body` to its end, at most `bytes_max` bytes, passing each data chunk to
/// `on_chunk` as it arrives. Stops at the first byte over the limit, so a large body
/// is never held in memory. Trailers are dropped.
pub(crate) async fn read_bounded<B>(
    body: B,
    bytes_max: usize,
    mut on_chunk: impl FnMut(&[u8]),
) -> Result<Bytes, ReadError>
where
    B: HttpBody<Data = Bytes>,
    B::Error: Into<BoxError>,
{
    if body.size_hint().lower() > bytes_max as u64 {
        return Err(ReadError::TooLarge { bytes_max });
    }
    let mut body = std::pin::pin!(body);
    let mut buffer = BytesMut::new();
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|error| ReadError::Broken(error.into()))?;
        let Ok(chunk) = frame.into_data() else { continue };
        if buffer.len() + chunk.len() > bytes_max {
            return Err(ReadError::TooLarge { bytes_max });
        }
        on_chunk(&chunk);
        buffer.extend_from_slice(&chunk);
    }
    Ok(buffer.freeze())
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::StreamBody;

    fn chunked(chunks: &[&'static [u8]]) -> impl HttpBody<Data = Bytes, Error = BoxError> {
        let frames = chunks.iter().map(|chunk| Ok::<_, BoxError>(http_body::Frame::data(Bytes::from_static(chunk))));
        StreamBody::new(futures::stream::iter(frames.collect::<Vec<_>>()))
    }

    #[test]
    fn reads_chunks_in_order_and_reports_each() {
        // Goal: the bytes come back whole and every chunk is seen once, in order.
        let mut seen = Vec::new();
        let read = futures::executor::block_on(read_bounded(chunked(&[b"ab", b"", b"cd"]), 4, |c| {
            seen.extend_from_slice(c);
        }));
        assert_eq!(read.expect("4 bytes fit a 4-byte limit"), Bytes::from_static(b"abcd"));
        assert_eq!(seen, b"abcd");
    }

    #[test]
    fn stops_at_the_first_byte_over_the_limit() {
        // Goal: a streamed body with no size hint is cut off while reading, before it is held.
        let mut seen = 0;
        let read = futures::executor::block_on(read_bounded(chunked(&[b"ab", b"cd", b"e"]), 4, |c| seen += c.len()));
        assert!(matches!(read, Err(ReadError::TooLarge { bytes_max: 4 })));
        assert_eq!(seen, 4, "the chunk that crosses the limit is not consumed");
    }

    #[test]
    fn a_declared_length_over_the_limit_is_refused_before_reading() {
        // Goal: a body whose size hint is already too large is refused without reading it.
        let read = futures::executor::block_on(read_bounded(Full::new(Bytes::from_static(b"12345")), 4, |_| {
            unreachable!("nothing is read from a body known to be too large")
        }));
        assert!(matches!(read, Err(ReadError::TooLarge { bytes_max: 4 })));
    }
}
