//! Bounded reading of bodies: the request body (buffered once, resent on every attempt),
//! the start of a failed attempt's response (kept for the error), and [`ResponseBody`], the
//! body of every response the layer returns (the inner body, after any bytes the layer read
//! to classify a 422).

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::{Buf, Bytes, BytesMut};
use http::{HeaderMap, HeaderValue};
use http_body::{Body as HttpBody, Frame, SizeHint};
use http_body_util::BodyExt;

use crate::BoxError;

/// The most bytes of a failed attempt's response body kept in [`crate::Failure::Status`]:
/// enough for a problem+json, bounded for a hostile server.
pub const FAILURE_BODY_BYTES_MAX: usize = 16 * 1024;

/// The most bytes of a 422's body the layer reads to tell the server's key-reused problem
/// from other 422s (plus at most the rest of the frame that crossed it). A longer body is an
/// ordinary 422, returned to the caller whole. [`crate::RetryError::KeyReused`] carries
/// at most this much.
pub const PROBLEM_BODY_BYTES_MAX: usize = 64 * 1024;

/// The last part of the problem type URI the idempotency layer (`idem-http`) answers when a
/// key is reused for a different request (`…/docs/problems.md#key-reused`).
pub const KEY_REUSED_SLUG: &str = "key-reused";

/// The last part of the problem type URI the idempotency layer answers (410 Gone) when a
/// key's record has expired and only its tombstone is left (`…/problems#key-expired`).
pub const KEY_EXPIRED_SLUG: &str = "key-expired";

const _: () = assert!(FAILURE_BODY_BYTES_MAX <= PROBLEM_BODY_BYTES_MAX);

/// What reading a body to a limit gave.
pub(crate) enum Read {
    /// The whole body.
    Whole(Bytes),
    /// The body is longer than the limit; these are its first `limit` bytes.
    Truncated(Bytes),
}

/// Reads `body` up to `bytes_max` bytes. Stops reading (does not drain) once the limit is
/// passed. A caller that only needs to know whether a body is too long checks its
/// declared length first ([`declared_over`]), so it reads nothing.
pub(crate) async fn read_up_to<B>(body: B, bytes_max: usize) -> Result<Read, BoxError>
where
    B: HttpBody,
    B::Error: Into<BoxError>,
{
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

/// Whether `body` declares (by its size hint's lower bound, e.g. a `Content-Length`) more
/// than `bytes_max` bytes: it is too long without reading a byte of it.
pub(crate) fn declared_over<B: HttpBody>(body: &B, bytes_max: usize) -> bool {
    body.size_hint().lower() > bytes_max as u64
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

/// The body of every response the layer returns: the inner service's body, unchanged.
///
/// For a 422 with an `application/problem+json` body the layer first reads up to
/// [`PROBLEM_BODY_BYTES_MAX`] bytes to see whether it is the key-reused problem; when it is
/// not, those bytes come first here, then the rest of the inner body (its trailers and its
/// error, if any, included), so the caller reads exactly what the server sent.
pub struct ResponseBody<B: HttpBody> {
    /// Bytes read ahead and not yet handed out.
    buffered: Bytes,
    /// Trailers read ahead and not yet handed out.
    trailers: Option<HeaderMap>,
    /// An error read ahead: the body ends with it once the bytes before it are out.
    error: Option<B::Error>,
    /// The rest of the inner body; `None` once it has ended (or failed).
    inner: Option<Pin<Box<B>>>,
}

/// How reading ahead in a [`ResponseBody`] ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Ahead {
    /// The whole body is buffered (it ended within the limit, without trailers or error).
    Whole,
    /// Not the whole body: longer than the limit, or trailers or an error came.
    Partial,
}

impl<B: HttpBody> ResponseBody<B> {
    /// `inner`, with nothing read ahead.
    pub(crate) fn new(inner: B) -> ResponseBody<B> {
        ResponseBody { buffered: Bytes::new(), trailers: None, error: None, inner: Some(Box::pin(inner)) }
    }

    /// Reads ahead until the body ends or more than `bytes_max` bytes are buffered. Cancel
    /// safe: a frame is buffered in the poll that receives it, so cancelling (a timeout)
    /// loses nothing.
    pub(crate) async fn read_ahead(&mut self, bytes_max: usize) -> Ahead {
        let Some(inner) = self.inner.as_mut() else {
            return if self.trailers.is_none() && self.error.is_none() { Ahead::Whole } else { Ahead::Partial };
        };
        if inner.size_hint().lower() > bytes_max as u64 {
            return Ahead::Partial;
        }
        let mut buffer = BytesMut::from(std::mem::take(&mut self.buffered));
        // Bounded: each turn buffers one more frame and ends once `bytes_max` is passed.
        let ahead = loop {
            if buffer.len() > bytes_max {
                break Ahead::Partial;
            }
            match inner.frame().await {
                None => {
                    self.inner = None;
                    // Trailers read by an earlier call end the data, but cannot be replayed.
                    break if self.trailers.is_none() { Ahead::Whole } else { Ahead::Partial };
                }
                Some(Err(error)) => {
                    (self.error, self.inner) = (Some(error), None);
                    break Ahead::Partial;
                }
                Some(Ok(frame)) => match frame.into_data() {
                    Ok(mut data) => buffer.extend_from_slice(&data.copy_to_bytes(data.remaining())),
                    Err(frame) => {
                        // Trailers end the data; whatever follows them still comes from `inner`.
                        self.trailers = frame.into_trailers().ok();
                        break Ahead::Partial;
                    }
                },
            }
        };
        self.buffered = buffer.freeze();
        ahead
    }

    /// The bytes read ahead and not yet handed out.
    pub(crate) fn buffered(&self) -> &Bytes {
        &self.buffered
    }
}

// The inner body is pinned in its box and nothing else is ever pinned, so moving a
// `ResponseBody` is fine whatever `B::Error` is.
impl<B: HttpBody> Unpin for ResponseBody<B> {}

impl<B: HttpBody> HttpBody for ResponseBody<B> {
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, B::Error>>> {
        let this = &mut *self;
        if !this.buffered.is_empty() {
            return Poll::Ready(Some(Ok(Frame::data(std::mem::take(&mut this.buffered)))));
        }
        if let Some(trailers) = this.trailers.take() {
            return Poll::Ready(Some(Ok(Frame::trailers(trailers))));
        }
        if let Some(error) = this.error.take() {
            return Poll::Ready(Some(Err(error)));
        }
        let Some(inner) = this.inner.as_mut() else { return Poll::Ready(None) };
        match inner.as_mut().poll_frame(cx) {
            Poll::Ready(None) => {
                this.inner = None;
                Poll::Ready(None)
            }
            Poll::Ready(Some(frame)) => {
                Poll::Ready(Some(frame.map(|frame| frame.map_data(|mut data| data.copy_to_bytes(data.remaining())))))
            }
            Poll::Pending => Poll::Pending,
        }
    }

    fn is_end_stream(&self) -> bool {
        self.buffered.is_empty()
            && self.trailers.is_none()
            && self.error.is_none()
            && self.inner.as_ref().is_none_or(|inner| inner.is_end_stream())
    }

    fn size_hint(&self) -> SizeHint {
        let buffered = self.buffered.len() as u64;
        let mut hint = self.inner.as_ref().map_or_else(|| SizeHint::with_exact(0), |inner| inner.size_hint());
        let upper = hint.upper().map(|upper| upper.saturating_add(buffered));
        hint.set_lower(hint.lower().saturating_add(buffered));
        if let Some(upper) = upper {
            hint.set_upper(upper);
        }
        hint
    }
}

impl<B: HttpBody> std::fmt::Debug for ResponseBody<B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ResponseBody")
            .field("buffered_bytes", &self.buffered.len())
            .field("trailers", &self.trailers.is_some())
            .field("ended", &self.inner.is_none())
            .finish_non_exhaustive()
    }
}

/// Whether `content_type` is `application/problem+json` (parameters and case aside).
pub(crate) fn is_problem_json(content_type: Option<&HeaderValue>) -> bool {
    let Some(value) = content_type.and_then(|value| value.to_str().ok()) else { return false };
    let essence = value.split(';').next().unwrap_or_default().trim();
    essence.eq_ignore_ascii_case("application/problem+json")
}

/// Whether `body` is a problem+json whose `type` names the problem `slug` (such as
/// [`KEY_REUSED_SLUG`]): the type URI's fragment, or else its last path segment, is `slug`.
/// So the check holds whatever base a server configured (`…/problems.md#key-reused`,
/// `…/problems/key-reused`).
pub(crate) fn is_problem_type(body: &[u8], slug: &str) -> bool {
    let Ok(problem) = serde_json::from_slice::<serde_json::Value>(body) else { return false };
    let Some(type_uri) = problem.get("type").and_then(serde_json::Value::as_str) else { return false };
    let (before_fragment, fragment) = match type_uri.split_once('#') {
        Some((before, fragment)) => (before, Some(fragment)),
        None => (type_uri, None),
    };
    let path = before_fragment.split('?').next().unwrap_or_default();
    let last_segment = path.rsplit('/').next().unwrap_or_default();
    match fragment {
        Some(fragment) if !fragment.is_empty() => fragment == slug,
        _ => last_segment == slug,
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
        let sized = Full::new(Bytes::from_static(b"12345"));
        assert!(
            declared_over(&sized, 4) && !declared_over(&sized, 5),
            "a declared length over the limit is seen unread"
        );
        let sized = read_up_to(sized, 4).await.expect("a full body never fails");
        assert!(matches!(sized, Read::Truncated(bytes) if bytes == "1234"), "a sized body keeps its first bytes too");
    }

    #[tokio::test]
    async fn a_body_read_ahead_is_handed_out_whole_and_in_order() {
        // Goal: whether reading ahead stops within or past the limit, the caller gets every byte once.
        for (limit, ahead) in [(100, Ahead::Whole), (3, Ahead::Partial), (0, Ahead::Partial)] {
            let mut body = ResponseBody::new(chunks(&[b"ab", b"cd", b"ef"]));
            assert_eq!(body.read_ahead(limit).await, ahead, "limit {limit}");
            let whole = body.collect().await.expect("static bodies never fail").to_bytes();
            assert_eq!(whole, "abcdef", "limit {limit}");
        }
        let mut sized = ResponseBody::new(Full::new(Bytes::from_static(b"12345")));
        assert_eq!(sized.read_ahead(4).await, Ahead::Partial);
        assert!(sized.buffered().is_empty(), "a body whose size is known to be over is not read");
        assert_eq!(sized.size_hint().exact(), Some(5));
    }

    /// A body that arrives as the given frames (data, trailers or an error), each polled separately.
    struct Frames(VecDeque<Result<http_body::Frame<Bytes>, BoxError>>);

    impl HttpBody for Frames {
        type Data = Bytes;
        type Error = BoxError;

        fn poll_frame(
            mut self: Pin<&mut Self>,
            _: &mut Context<'_>,
        ) -> Poll<Option<Result<http_body::Frame<Bytes>, Self::Error>>> {
            Poll::Ready(self.0.pop_front())
        }
    }

    #[tokio::test]
    async fn a_body_with_trailers_or_an_error_is_never_whole_however_often_it_is_read_ahead() {
        // Goal: trailers cannot be replayed as a body and a failed body is not all there, so
        // reading ahead never calls such a body whole, the first time or again later.
        let mut trailers = http::HeaderMap::new();
        trailers.insert("grpc-status", HeaderValue::from_static("0"));
        let with_trailers =
            [Ok(http_body::Frame::data(Bytes::from_static(b"ab"))), Ok(http_body::Frame::trailers(trailers))];
        let failing = [Ok(http_body::Frame::data(Bytes::from_static(b"ab"))), Err(BoxError::from("reset"))];
        for frames in [with_trailers.into_iter().collect(), failing.into_iter().collect()] {
            let mut body = ResponseBody::new(Frames(frames));
            assert_eq!(body.read_ahead(100).await, Ahead::Partial);
            assert_eq!(body.read_ahead(100).await, Ahead::Partial, "read ahead again");
        }
    }

    fn is_key_reused_problem(body: &[u8]) -> bool {
        is_problem_type(body, KEY_REUSED_SLUG)
    }

    #[test]
    fn only_the_key_reused_problem_type_is_key_reused() {
        // Goal: the slug is matched as the type URI's fragment or last path segment, under any
        // base; other problems, other JSON and non-JSON are not key-reused.
        let problem = |type_uri: &str| serde_json::json!({ "type": type_uri, "status": 422 }).to_string();
        for yes in [
            "https://github.com/example/idem/blob/main/docs/problems.md#key-reused",
            "https://docs.example/errors#key-reused",
            "https://docs.example/problems/key-reused",
            "/problems/key-reused?lang=en",
            // An empty fragment names nothing: the last path segment decides.
            "https://docs.example/problems/key-reused#",
        ] {
            assert!(is_key_reused_problem(problem(yes).as_bytes()), "{yes}");
        }
        for no in [
            "https://docs.example/problems.md#in-progress",
            "https://docs.example/key-reused#other",
            "https://docs.example/problems/key-reused-not",
            "about:blank",
            "key-reusedx",
        ] {
            assert!(!is_key_reused_problem(problem(no).as_bytes()), "{no}");
        }
        assert!(!is_key_reused_problem(br#"{"detail":"no type"}"#));
        assert!(!is_key_reused_problem(br#"{"type":422}"#));
        assert!(!is_key_reused_problem(b"key-reused"));
        let content_type = |value| Some(HeaderValue::from_static(value));
        assert!(is_problem_json(content_type("application/problem+json").as_ref()));
        assert!(is_problem_json(content_type("Application/Problem+JSON; charset=utf-8").as_ref()));
        assert!(!is_problem_json(content_type("application/json").as_ref()));
        assert!(!is_problem_json(None));
    }

    #[test]
    fn the_key_expired_slug_is_matched_like_key_reused() {
        // Goal: the 410's problem is told by its own slug, not by key-reused's.
        let problem = |type_uri: &str| serde_json::json!({ "type": type_uri, "status": 410 }).to_string();
        assert!(is_problem_type(problem("/problems#key-expired").as_bytes(), KEY_EXPIRED_SLUG));
        assert!(is_problem_type(problem("https://docs.example/problems/key-expired").as_bytes(), KEY_EXPIRED_SLUG));
        assert!(!is_problem_type(problem("/problems#key-reused").as_bytes(), KEY_EXPIRED_SLUG));
        assert!(!is_problem_type(problem("/problems#key-expired").as_bytes(), KEY_REUSED_SLUG));
    }
}
