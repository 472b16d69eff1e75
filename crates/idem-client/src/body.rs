//! Bounded reading of bodies: the request body (buffered once, resent on every attempt)
//! and the start of a failed attempt's response (kept for the error).

use bytes::{Buf, Bytes, BytesMut};
use http_body::Body as HttpBody;
use http_body_util::BodyExt;

use crate::BoxError;

/// The most bytes of a failed attempt's response body kept in [`crate::Failure::Status`]
/// and [`crate::RetryError::KeyReused`]: enough for a problem+json, bounded for a hostile server.
pub const FAILURE_BODY_BYTES_MAX: usize = 16 * 1024;

/// What reading a body to a limit gave.
pub(crate) enum Read {
    /// The whole body.
    Whole(Bytes),
    /// The body is longer than the limit; these are its first `limit` bytes.
    Truncated(Bytes),
}

/// Reads `body` up to `bytes_max` bytes. Stops reading (does not drain) once the limit is passed.
pub(crate) async fn read_up_to<B>(body: B, bytes_max: usize) -> Result<Read, BoxError>
where
    B: HttpBody,
    B::Error: Into<BoxError>,
{
    if body.size_hint().lower() > bytes_max as u64 {
        return Ok(Read::Truncated(Bytes::new()));
    }
    let mut body = std::pin::pin!(body);
    let mut buffer = BytesMut::new();
    while let Some(frame) = body.frame().await {
        let Ok(mut data) = frame.map_err(Into::into)?.into_data() else {
            continue; // trailers carry no body bytes
        };
        let room = bytes_max - buffer.len();
        if data.remaining() > room {
            buffer.extend_from_slice(&data.copy_to_bytes(room));
            return Ok(Read::Truncated(buffer.freeze()));
        }
        buffer.extend_from_slice(&data.copy_to_bytes(data.remaining()));
    }
    Ok(Read::Whole(buffer.freeze()))
}

/// The start of a response body, for an error report; a body that fails midway gives what arrived.
pub(crate) async fn read_prefix<B>(body: B) -> Bytes
where
    B: HttpBody,
    B::Error: Into<BoxError>,
{
    match read_up_to(body, FAILURE_BODY_BYTES_MAX).await {
        Ok(Read::Whole(bytes) | Read::Truncated(bytes)) => bytes,
        Err(_) => Bytes::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::VecDeque;
    use std::pin::Pin;
    use std::task::{Context, Poll};

    use http_body_util::Full;

    /// A body that arrives in the given frames, each polled separately.
    struct Chunks(VecDeque<Bytes>);

    impl HttpBody for Chunks {
        type Data = Bytes;
        type Error = std::convert::Infallible;

        fn poll_frame(
            mut self: Pin<&mut Self>,
            _: &mut Context<'_>,
        ) -> Poll<Option<Result<http_body::Frame<Bytes>, Self::Error>>> {
            Poll::Ready(self.0.pop_front().map(|chunk| Ok(http_body::Frame::data(chunk))))
        }
    }

    fn chunks(parts: &[&'static [u8]]) -> Chunks {
        Chunks(parts.iter().map(|part| Bytes::from_static(part)).collect())
    }

    #[tokio::test]
    async fn bodies_are_read_whole_up_to_the_limit_and_truncated_past_it() {
        // Goal: a body at the limit is whole; one byte more is reported as too long, split frames included.
        let read = |parts, max| async move { read_up_to(chunks(parts), max).await.expect("static bodies never fail") };
        assert!(matches!(read(&[b"ab", b"cd"], 4).await, Read::Whole(bytes) if bytes == "abcd"));
        assert!(matches!(read(&[b"ab", b"cde"], 4).await, Read::Truncated(bytes) if bytes == "abcd"));
        let sized = read_up_to(Full::new(Bytes::from_static(b"12345")), 4).await.expect("a full body never fails");
        assert!(matches!(sized, Read::Truncated(_)), "a body whose size is known to be over is not read");
    }
}
