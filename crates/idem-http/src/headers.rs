//! Header names the layer speaks, and which response headers are recorded for replay.

use bytes::Bytes;
use http::{HeaderMap, HeaderName, header};
use idem_core::StoredResponse;
use idem_core::record::STORED_HEADERS_MAX;

/// The request header carrying the key, echoed on every response once validated.
pub const IDEMPOTENCY_KEY: HeaderName = HeaderName::from_static("idempotency-key");

/// The response header that marks a replay (value `true`); first executions never carry it.
pub const IDEMPOTENT_REPLAYED: HeaderName = HeaderName::from_static("idempotent-replayed");

/// The response header that says when the key's record expires (SPEC "Key lifecycle",
/// expiry on the wire), as an HTTP-date (RFC 9110 section 5.6.7, e.g.
/// `Tue, 08 Dec 2026 21:00:00 GMT`, rounded down to the second). Every answer to a keyed
/// request that found or made a record carries it: the first answer and every replay (the
/// end of the retention, counted from the completion), a 409 (the in-flight record's, which
/// its completion restarts), a 422 (the record that holds the key), and a 410 (the end of
/// the tombstone). After it, the key is free (or, with tombstones, answers 410 until the
/// tombstone's end).
pub const IDEMPOTENCY_EXPIRES: HeaderName = HeaderName::from_static("idempotency-expires");

/// The default request header whose value a claim keeps as its holder's request id.
pub const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// Headers that never reach the store: hop-by-hop headers (RFC 9110 section 7.6.1 and the
/// classic list), which describe one connection, not the response; `Date` and
/// `Set-Cookie`, which describe one moment and one session; `Content-Length`, which the
/// replayed body determines; and the three headers the layer itself adds to answers.
const NEVER_STORED: [HeaderName; 15] = [
    header::CONNECTION,
    HeaderName::from_static("keep-alive"),
    HeaderName::from_static("proxy-connection"),
    header::PROXY_AUTHENTICATE,
    header::PROXY_AUTHORIZATION,
    header::TE,
    header::TRAILER,
    header::TRANSFER_ENCODING,
    header::UPGRADE,
    header::DATE,
    header::SET_COOKIE,
    header::CONTENT_LENGTH,
    IDEMPOTENCY_KEY,
    IDEMPOTENT_REPLAYED,
    IDEMPOTENCY_EXPIRES,
];

/// CORS response headers (`Access-Control-Allow-Origin`, `-Expose-Headers`, ...) are
/// never stored either: they answer the origin of one request, so a replay must carry the
/// ones a CORS layer computes for the replaying request, not the first request's.
const CORS_PREFIX: &str = "access-control-";

/// Decides which response headers are stored: everything but [`NEVER_STORED`], CORS
/// headers ([`CORS_PREFIX`]), the
/// headers named in the response's own `Connection` header, and the deny list.
#[derive(Clone, Debug, Default)]
pub(crate) struct HeaderFilter {
    deny: Vec<HeaderName>,
}

impl HeaderFilter {
    pub(crate) fn new(deny: Vec<HeaderName>) -> HeaderFilter {
        HeaderFilter { deny }
    }

    /// The headers to record, in the order the response carries them, names lower-case,
    /// at most [`STORED_HEADERS_MAX`] (the rest are dropped with a warning).
    pub(crate) fn stored_headers(&self, headers: &HeaderMap) -> Vec<(String, Bytes)> {
        let connection_named = connection_tokens(headers);
        let mut stored = Vec::new();
        for (name, value) in headers {
            let named_by_connection = connection_named.iter().any(|token| token.eq_ignore_ascii_case(name.as_str()));
            let cors = name.as_str().starts_with(CORS_PREFIX);
            if NEVER_STORED.contains(name) || cors || self.deny.contains(name) || named_by_connection {
                continue;
            }
            if stored.len() == STORED_HEADERS_MAX {
                tracing::warn!(header = %name, "response has more than {STORED_HEADERS_MAX} storable headers; dropping the rest from the record");
                break;
            }
            stored.push((name.as_str().to_owned(), Bytes::copy_from_slice(value.as_bytes())));
        }
        stored
    }

    /// The stored form of a response.
    pub(crate) fn stored_response(&self, status: u16, headers: &HeaderMap, body: Bytes) -> StoredResponse {
        StoredResponse { status, headers: self.stored_headers(headers), body }
    }
}

/// The header names listed in `Connection` values (they are hop-by-hop for this response).
fn connection_tokens(headers: &HeaderMap) -> Vec<String> {
    headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .map(|token| token.trim().to_ascii_lowercase())
        .filter(|token| !token.is_empty())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.append(HeaderName::from_static(name), HeaderValue::from_static(value));
        }
        map
    }

    #[test]
    fn hop_by_hop_date_cookies_cors_and_denied_headers_are_not_stored() {
        // Goal: only end-to-end, replay-safe headers reach the record, in their order.
        let filter = HeaderFilter::new(vec![HeaderName::from_static("x-request-id")]);
        let stored = filter.stored_headers(&headers(&[
            ("content-type", "application/json"),
            ("connection", "keep-alive, x-hop"),
            ("x-hop", "1"),
            ("keep-alive", "timeout=5"),
            ("transfer-encoding", "chunked"),
            ("date", "Tue, 01 Jan 2030 00:00:00 GMT"),
            ("set-cookie", "session=1"),
            ("x-request-id", "abc"),
            ("location", "/payments/1"),
            ("idempotency-key", "\"k\""),
            ("content-length", "2"),
            ("access-control-allow-origin", "https://a.example"),
            ("access-control-expose-headers", "idempotent-replayed"),
        ]));
        let names: Vec<&str> = stored.iter().map(|(name, _)| name.as_str()).collect();
        assert_eq!(names, ["content-type", "location"]);
        assert_eq!(stored[1].1, Bytes::from_static(b"/payments/1"));
    }

    #[test]
    fn repeated_headers_keep_every_value_in_order() {
        // Goal: a header sent twice (e.g. `Link`) is replayed twice, in the same order.
        let stored =
            HeaderFilter::default().stored_headers(&headers(&[("link", "<a>"), ("vary", "x"), ("link", "<b>")]));
        let pairs: Vec<(&str, &[u8])> = stored.iter().map(|(n, v)| (n.as_str(), v.as_ref())).collect();
        assert_eq!(pairs, [("link", &b"<a>"[..]), ("link", &b"<b>"[..]), ("vary", &b"x"[..])]);
    }

    #[test]
    fn stored_headers_are_bounded() {
        // Goal: a response with very many headers is stored with at most STORED_HEADERS_MAX of them.
        let mut map = HeaderMap::new();
        for index in 0..(STORED_HEADERS_MAX + 10) {
            let name = HeaderName::try_from(format!("x-h{index}")).expect("x-h<n> is a valid name");
            map.insert(name, HeaderValue::from_static("v"));
        }
        assert_eq!(HeaderFilter::default().stored_headers(&map).len(), STORED_HEADERS_MAX);
    }
}
