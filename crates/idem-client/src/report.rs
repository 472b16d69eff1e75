//! What the caller learns about a request that went through the layer.

use std::time::SystemTime;

use http::HeaderMap;
use idem_core::Key;

use crate::IDEMPOTENCY_EXPIRES;

/// Put in the extensions of every response the layer returns: the key sent, how many
/// attempts it took, and whether the server replayed a recorded response.
///
/// A replayed response is the same answer the first execution gave (same status, body
/// and recorded headers), so callers handle it exactly like a first one; the flag is for
/// logs and for showing that a retry did not run the operation twice.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetryReport {
    /// The key sent on every attempt; `None` for a method that needs no key (passed through).
    pub key: Option<Key>,
    /// Attempts made, at least 1 (the one that produced this response included).
    pub attempts: u32,
    /// The response carries `Idempotent-Replayed: true`: the server answered from its record.
    pub replayed: bool,
    /// When the server's record of the key expires (its `Idempotency-Expires` header, an
    /// HTTP-date, so whole seconds): until then a resend with the same key is answered from
    /// the record, after it the key is forgotten (or, on a server that keeps tombstones,
    /// answered 410 until the tombstone ends). `None` when the response has no valid header
    /// (a server without idem-http, or a request that needs no key).
    pub expires_at: Option<SystemTime>,
}

/// The time in `headers`' `Idempotency-Expires`, when it is one valid HTTP-date (RFC 9110
/// section 5.6.7); `None` when it is absent, repeated or not a date.
pub(crate) fn expires_at(headers: &HeaderMap) -> Option<SystemTime> {
    let mut values = headers.get_all(IDEMPOTENCY_EXPIRES).iter();
    let (Some(value), None) = (values.next(), values.next()) else { return None };
    httpdate::parse_http_date(value.to_str().ok()?).ok()
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use http::HeaderValue;

    use super::*;

    #[test]
    fn expires_at_reads_one_http_date_and_nothing_else() {
        // Goal: the header's HTTP-date becomes a SystemTime; absent, repeated or malformed is None.
        let mut headers = HeaderMap::new();
        assert_eq!(expires_at(&headers), None);
        headers.insert(IDEMPOTENCY_EXPIRES, HeaderValue::from_static("Tue, 08 Dec 2026 02:00:00 GMT"));
        let expected = SystemTime::UNIX_EPOCH + Duration::from_secs(1_796_695_200);
        assert_eq!(expires_at(&headers), Some(expected));
        headers.append(IDEMPOTENCY_EXPIRES, HeaderValue::from_static("Tue, 08 Dec 2026 02:00:00 GMT"));
        assert_eq!(expires_at(&headers), None, "two headers name no one time");
        headers.insert(IDEMPOTENCY_EXPIRES, HeaderValue::from_static("tomorrow"));
        assert_eq!(expires_at(&headers), None);
    }
}
