//! The one body type the layer returns, and bounded reading of request and response bodies.

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::{Bytes, BytesMut};
use http::HeaderMap;
use http_body::{Body as HttpBody, Frame, SizeHint};
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

impl Default for Body {
    /// An empty body (what tower-http's `CorsLayer` answers a preflight with).
    fn default() -> Body {
        Body::full(Bytes::new())
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

/// What reading a handler's response body up to the recording limit found.
pub(crate) enum ResponseRead {
    /// The whole body, within the limit and without trailers: it can be recorded.
    Whole(Bytes),
    /// The body cannot be recorded, for `why`; `body` still yields all of it, the part
    /// already read first, then the rest as the handler streams it.
    NotKept { why: NotKept, body: Body },
    /// The body failed before the limit was reached.
    Broken(BoxError),
}

/// Why a response is not kept for replay.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum NotKept {
    /// Its body is longer than the recording limit.
    TooLarge {
        /// The limit.
        bytes_max: usize,
    },
    /// It carries trailers, which a record cannot hold.
    Trailers,
}

/// Reads `body` until its end, the first byte over `bytes_max`, or a trailers frame,
/// whichever comes first. Holds at most `bytes_max` bytes (plus the one chunk that crossed
/// the limit, which the handler had already allocated); what was not read stays in the
/// returned body, so nothing of the response is lost.
pub(crate) async fn read_to_keep(mut body: Body, bytes_max: usize) -> ResponseRead {
    if body.size_hint().lower() > bytes_max as u64 {
        let why = NotKept::TooLarge { bytes_max };
        return ResponseRead::NotKept { why, body: Body::new(Prefixed { read: None, pending: None, rest: body }) };
    }
    let mut buffer = BytesMut::new();
    while let Some(frame) = body.frame().await {
        let frame = match frame {
            Ok(frame) => frame,
            Err(error) => return ResponseRead::Broken(error),
        };
        let (why, pending) = match frame.into_data() {
            Ok(chunk) if buffer.len() + chunk.len() <= bytes_max => {
                buffer.extend_from_slice(&chunk);
                continue;
            }
            Ok(chunk) => (NotKept::TooLarge { bytes_max }, Frame::data(chunk)),
            Err(frame) if frame.trailers_ref().is_some_and(HeaderMap::is_empty) => continue,
            Err(frame) => (NotKept::Trailers, frame),
        };
        let read = Some(buffer.freeze()).filter(|read| !read.is_empty());
        return ResponseRead::NotKept { why, body: Body::new(Prefixed { read, pending: Some(pending), rest: body }) };
    }
    ResponseRead::Whole(buffer.freeze())
}

/// A body read in part: the bytes already read, the frame that stopped the reading, then
/// the rest of the original body.
struct Prefixed {
    read: Option<Bytes>,
    pending: Option<Frame<Bytes>>,
    rest: Body,
}

impl HttpBody for Prefixed {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        if let Some(read) = self.read.take() {
            return Poll::Ready(Some(Ok(Frame::data(read))));
        }
        if let Some(pending) = self.pending.take() {
            return Poll::Ready(Some(Ok(pending)));
        }
        Pin::new(&mut self.rest).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.read.is_none() && self.pending.is_none() && self.rest.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        let held = self.read.as_ref().map_or(0, Bytes::len)
            + self.pending.as_ref().and_then(Frame::data_ref).map_or(0, Bytes::len);
        let rest = self.rest.size_hint();
        let mut hint = SizeHint::new();
        hint.set_lower(rest.lower().saturating_add(held as u64));
        if let Some(upper) = rest.upper() {
            hint.set_upper(upper.saturating_add(held as u64));
        }
        hint
    }
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

    fn collect(body: Body) -> (Bytes, Option<HeaderMap>) {
        let collected = futures::executor::block_on(body.collect()).expect("test bodies do not fail");
        let trailers = collected.trailers().cloned();
        (collected.to_bytes(), trailers)
    }

    #[test]
    fn a_response_within_the_limit_is_kept_whole() {
        // Goal: a body that fits, without trailers, comes back whole to be recorded.
        let kept = futures::executor::block_on(read_to_keep(Body::new(chunked(&[b"ab", b"cd"])), 4));
        assert!(matches!(kept, ResponseRead::Whole(bytes) if bytes == "abcd"));
    }

    #[test]
    fn a_response_over_the_limit_is_not_kept_and_loses_no_byte() {
        // Goal: the body is read no further than the limit, and the body handed back yields
        // every byte, in order: the read part, the crossing chunk, the rest.
        let kept = futures::executor::block_on(read_to_keep(Body::new(chunked(&[b"ab", b"cd", b"ef", b"g"])), 5));
        let ResponseRead::NotKept { why, body } = kept else { panic!("7 bytes do not fit 5") };
        assert_eq!(why, NotKept::TooLarge { bytes_max: 5 });
        assert_eq!(collect(body).0, "abcdefg");

        let declared = futures::executor::block_on(read_to_keep(Body::full("123456"), 5));
        let ResponseRead::NotKept { why, body } = declared else { panic!("a declared 6 bytes do not fit 5") };
        assert_eq!(why, NotKept::TooLarge { bytes_max: 5 });
        assert_eq!(body.size_hint().exact(), Some(6), "the length is still known to the server");
        assert_eq!(collect(body).0, "123456");
    }

    #[test]
    fn a_response_with_trailers_is_not_kept_and_keeps_its_trailers() {
        // Goal: trailers stop the recording (a record has no place for them), and the body
        // handed back still carries the data and the trailers.
        let mut trailers = HeaderMap::new();
        trailers.insert("grpc-status", http::HeaderValue::from_static("0"));
        let frames =
            vec![Ok::<_, BoxError>(Frame::data(Bytes::from_static(b"ab"))), Ok(Frame::trailers(trailers.clone()))];
        let body = Body::new(StreamBody::new(futures::stream::iter(frames)));
        let ResponseRead::NotKept { why, body } = futures::executor::block_on(read_to_keep(body, 1024)) else {
            panic!("trailers are not kept")
        };
        assert_eq!(why, NotKept::Trailers);
        assert_eq!(collect(body), (Bytes::from_static(b"ab"), Some(trailers)));
    }
}
