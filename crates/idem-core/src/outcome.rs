//! What any operation produced, recorded for replay: bytes and what they are.
//!
//! A message handler's result is no HTTP response, yet it is recorded through the same
//! store step, fences, leases and stores. So a [`StoredOutcome`] is stored *as* a
//! [`StoredResponse`] of a fixed shape: status [`OUTCOME_STATUS`] (0, which no HTTP
//! response has) and one header, [`OUTCOME_CONTENT_TYPE`], holding its [`ContentType`].
//! No store codec, row, script or model state changes, so nothing HTTP users store or
//! see changes either; this mapping is the one place that knows the shape.
//!
//! ```
//! use idem_core::outcome::{ContentType, StoredOutcome};
//! use idem_core::StoredResponse;
//!
//! let json = ContentType::new("application/json").unwrap();
//! let outcome = StoredOutcome::new(json, &b"{\"paid\":true}"[..]);
//! let stored = StoredResponse::from(outcome.clone());
//! assert_eq!(stored.status, 0);
//! assert_eq!(StoredOutcome::try_from(stored).unwrap(), outcome);
//! ```

use std::fmt;
use std::sync::Arc;

use bytes::Bytes;

use crate::StoredResponse;

/// The status an outcome is stored under. 0 is no HTTP status (RFC 9110 codes are
/// 100..=599), so an outcome is never mistaken for a response: idem-http answers a stored
/// status of 0 with `store-corrupt` instead of replaying it.
pub const OUTCOME_STATUS: u16 = 0;

/// The header name an outcome's content type is stored under (lower-case, as every stored
/// header name is).
pub const OUTCOME_CONTENT_TYPE: &str = "content-type";

/// The longest content type, in bytes (AMQP's `content_type` is a short string of at most 255).
pub const CONTENT_TYPE_BYTES_MAX: usize = 255;

/// Why a string is not a content type.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ContentTypeError {
    /// The string is empty.
    #[error("content type is empty")]
    Empty,
    /// Longer than [`CONTENT_TYPE_BYTES_MAX`] bytes.
    #[error("content type has {bytes} bytes, at most {CONTENT_TYPE_BYTES_MAX} are allowed")]
    TooLong {
        /// Its length in bytes.
        bytes: usize,
    },
    /// A byte outside visible ASCII (0x21..=0x7E); a space is allowed only between two
    /// visible characters (`text/plain; charset=utf-8`).
    #[error("content type has byte 0x{byte:02x} at offset {offset}; only visible ASCII and inner spaces are allowed")]
    ForbiddenByte {
        /// The offending byte.
        byte: u8,
        /// Its offset in the string.
        offset: usize,
    },
}

/// What an outcome's bytes are, as a media type such as `application/json`: 1..=255
/// bytes of visible ASCII (0x21..=0x7E), with spaces allowed inside but not at either end.
///
/// Parse, don't validate: the only way to get one is [`ContentType::new`], so every
/// `ContentType` is a valid stored header value on every store and transport (an HTTP
/// header value, a NATS header value, an AMQP short string). It is kept as given, byte
/// for byte (G2); no case folding or parameter parsing.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ContentType(Arc<str>);

impl ContentType {
    /// The content type of bytes with no more specific type.
    pub const OCTET_STREAM: &'static str = "application/octet-stream";

    /// Parses a content type.
    ///
    /// # Errors
    /// [`ContentTypeError`] when `value` is empty, longer than [`CONTENT_TYPE_BYTES_MAX`],
    /// or holds a byte outside visible ASCII (a space only inside); never panics.
    pub fn new(value: &str) -> Result<ContentType, ContentTypeError> {
        let bytes = value.as_bytes();
        if bytes.is_empty() {
            return Err(ContentTypeError::Empty);
        }
        if bytes.len() > CONTENT_TYPE_BYTES_MAX {
            return Err(ContentTypeError::TooLong { bytes: bytes.len() });
        }
        let last = bytes.len() - 1;
        let allowed =
            |offset: usize, byte: u8| (0x21..=0x7E).contains(&byte) || (byte == b' ' && offset != 0 && offset != last);
        if let Some(offset) = bytes.iter().enumerate().position(|(offset, &byte)| !allowed(offset, byte)) {
            return Err(ContentTypeError::ForbiddenByte { byte: bytes[offset], offset });
        }
        Ok(ContentType(Arc::from(value)))
    }

    /// `application/octet-stream`.
    #[must_use]
    pub fn octet_stream() -> ContentType {
        ContentType(Arc::from(Self::OCTET_STREAM))
    }

    /// The content type as given.
    #[must_use]
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<&str> for ContentType {
    type Error = ContentTypeError;

    /// Same as [`ContentType::new`].
    fn try_from(value: &str) -> Result<Self, Self::Error> {
        ContentType::new(value)
    }
}

impl fmt::Display for ContentType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for ContentType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ContentType({:?})", &*self.0)
    }
}

/// What an operation produced, as recorded for replay: its bytes and their content type.
/// Every replay hands back the same content type and the same bytes (G2).
///
/// A serde value is `StoredOutcome::new(json, serde_json::to_vec(&value)?)`; idem-core
/// itself has no serde dependency.
#[derive(Clone, PartialEq, Eq, Hash, Debug)]
pub struct StoredOutcome {
    /// What the bytes are.
    pub content_type: ContentType,
    /// The outcome, byte for byte (any bytes, any length the store admits).
    pub bytes: Bytes,
}

impl StoredOutcome {
    /// An outcome of `bytes` with this content type.
    #[must_use]
    pub fn new(content_type: ContentType, bytes: impl Into<Bytes>) -> StoredOutcome {
        StoredOutcome { content_type, bytes: bytes.into() }
    }

    /// An outcome of `bytes` as `application/octet-stream`.
    #[must_use]
    pub fn bytes(bytes: impl Into<Bytes>) -> StoredOutcome {
        StoredOutcome::new(ContentType::octet_stream(), bytes)
    }

    /// The outcome of a handler with nothing to say (an ack-only consumer): no bytes,
    /// `application/octet-stream`.
    #[must_use]
    pub fn empty() -> StoredOutcome {
        StoredOutcome::bytes(Bytes::new())
    }

    /// Bytes this outcome occupies in a store, for size limits: the same as the
    /// [`StoredResponse`] it is stored as (header name, content type and bytes).
    #[must_use]
    pub fn stored_bytes(&self) -> usize {
        OUTCOME_CONTENT_TYPE.len() + self.content_type.as_str().len() + self.bytes.len()
    }
}

impl From<StoredOutcome> for StoredResponse {
    /// Status [`OUTCOME_STATUS`], one header [`OUTCOME_CONTENT_TYPE`], the bytes as the body.
    fn from(outcome: StoredOutcome) -> StoredResponse {
        let content_type = Bytes::copy_from_slice(outcome.content_type.as_str().as_bytes());
        StoredResponse {
            status: OUTCOME_STATUS,
            headers: vec![(OUTCOME_CONTENT_TYPE.to_owned(), content_type)],
            body: outcome.bytes,
        }
    }
}

/// A recorded [`StoredResponse`] that is not the shape a [`StoredOutcome`] is stored as:
/// an HTTP response (any status but 0), or status 0 without exactly one valid
/// `content-type` header (written by something other than this mapping).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the record is not an outcome (status {status}; an outcome has status 0 and one content-type header)")]
pub struct NotAnOutcome {
    /// The recorded status (an HTTP status, or 0 when only the headers were wrong).
    pub status: u16,
}

impl TryFrom<StoredResponse> for StoredOutcome {
    type Error = NotAnOutcome;

    /// The outcome a [`StoredResponse`] holds, if it has the shape `From<StoredOutcome>`
    /// gives: status 0 and exactly one header, `content-type`, with a valid content type.
    fn try_from(response: StoredResponse) -> Result<StoredOutcome, NotAnOutcome> {
        let not_an_outcome = NotAnOutcome { status: response.status };
        let [(name, value)] = response.headers.as_slice() else {
            return Err(not_an_outcome);
        };
        if response.status != OUTCOME_STATUS || name != OUTCOME_CONTENT_TYPE {
            return Err(not_an_outcome);
        }
        let content_type = std::str::from_utf8(value).ok().and_then(|value| ContentType::new(value).ok());
        let content_type = content_type.ok_or(not_an_outcome)?;
        Ok(StoredOutcome { content_type, bytes: response.body })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn content_types_are_parsed_with_their_limits() {
        // Goal: each class of bad content type has its own error; the edges are where the docs say.
        assert_eq!(ContentType::new(""), Err(ContentTypeError::Empty));
        assert_eq!(ContentType::new(&"a".repeat(256)), Err(ContentTypeError::TooLong { bytes: 256 }));
        assert!(ContentType::new(&"a".repeat(255)).is_ok());
        assert_eq!(ContentType::new(" a"), Err(ContentTypeError::ForbiddenByte { byte: b' ', offset: 0 }));
        assert_eq!(ContentType::new("a "), Err(ContentTypeError::ForbiddenByte { byte: b' ', offset: 1 }));
        assert_eq!(ContentType::new("a\tb"), Err(ContentTypeError::ForbiddenByte { byte: b'\t', offset: 1 }));
        assert_eq!(ContentType::new("a\x7fb"), Err(ContentTypeError::ForbiddenByte { byte: 0x7f, offset: 1 }));
        assert_eq!(ContentType::new("é"), Err(ContentTypeError::ForbiddenByte { byte: 0xc3, offset: 0 }));
        let with_parameter = ContentType::new("text/plain; charset=utf-8").unwrap();
        assert_eq!(with_parameter.as_str(), "text/plain; charset=utf-8");
        assert_eq!(ContentType::new("a").unwrap().as_str(), "a");
    }

    #[test]
    fn an_outcome_is_stored_as_status_zero_with_one_header() {
        // Goal: the stored shape is exactly status 0, one `content-type` header, the bytes as
        // the body, and its size is what the store counts for it.
        let outcome = StoredOutcome::new(ContentType::new("application/json").unwrap(), &b"{}"[..]);
        let stored = StoredResponse::from(outcome.clone());
        assert_eq!(stored.status, OUTCOME_STATUS);
        assert_eq!(stored.headers, vec![("content-type".to_owned(), Bytes::from_static(b"application/json"))]);
        assert_eq!(stored.body, Bytes::from_static(b"{}"));
        assert_eq!(outcome.stored_bytes(), stored.stored_bytes());
        assert_eq!(StoredOutcome::empty().stored_bytes(), StoredResponse::from(StoredOutcome::empty()).stored_bytes());
    }

    #[test]
    fn outcomes_round_trip_byte_for_byte() {
        // Goal: every byte value, the empty outcome and the default content type survive the mapping.
        let every_byte: Vec<u8> = (0..=255).collect();
        for outcome in [
            StoredOutcome::empty(),
            StoredOutcome::bytes(every_byte),
            StoredOutcome::new(ContentType::new("text/plain; charset=utf-8").unwrap(), "héllo"),
        ] {
            assert_eq!(StoredOutcome::try_from(StoredResponse::from(outcome.clone())), Ok(outcome));
        }
        assert_eq!(StoredOutcome::empty().content_type.as_str(), ContentType::OCTET_STREAM);
    }

    #[test]
    fn an_http_response_is_not_an_outcome() {
        // Goal: only the exact stored shape maps back; any HTTP response or altered shape is refused.
        let outcome = StoredResponse::from(StoredOutcome::bytes(&b"x"[..]));
        let http = StoredResponse { status: 200, ..outcome.clone() };
        assert_eq!(StoredOutcome::try_from(http), Err(NotAnOutcome { status: 200 }));
        assert_eq!(StoredOutcome::try_from(StoredResponse::new(0, "x")), Err(NotAnOutcome { status: 0 }));
        let mut two_headers = outcome.clone();
        two_headers.headers.push(("x-trace".to_owned(), Bytes::from_static(b"t")));
        assert_eq!(StoredOutcome::try_from(two_headers), Err(NotAnOutcome { status: 0 }));
        let mut other_name = outcome.clone();
        other_name.headers[0].0 = "Content-Type".to_owned();
        assert_eq!(StoredOutcome::try_from(other_name), Err(NotAnOutcome { status: 0 }));
        let mut bad_value = outcome;
        bad_value.headers[0].1 = Bytes::from_static(b"a\nb");
        assert_eq!(StoredOutcome::try_from(bad_value), Err(NotAnOutcome { status: 0 }));
    }
}
