//! A record's opaque id: the `id` of a [`crate::KeyView`], the `next_cursor` of a page, the
//! `starting_after` of the next request, and the one-segment address `/keys/{id}`.
//!
//! It is the lower-case hex of the principal's bytes, one zero byte, and the key's bytes.
//! A principal holds no control character ([`idem_core::Principal::new`]), so the first
//! zero byte always ends it, and the anonymous principal (empty) is written like any other.
//! Callers should treat it as opaque; it is hex (not base64) because idem already pins
//! the `hex` crate and an id must survive a URL, a shell and a log without escaping.

use idem_core::record::PRINCIPAL_BYTES_MAX;
use idem_core::{KEY_CHARS_MAX, Key, Principal, RecordId};

/// The longest id, in characters: a longest principal, the separator, a longest key, as hex.
pub const ID_CHARS_MAX: usize = 2 * (PRINCIPAL_BYTES_MAX + 1 + KEY_CHARS_MAX);

/// Why a text is not a record id.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CursorError {
    /// Longer than [`ID_CHARS_MAX`].
    #[error("a record id has at most {ID_CHARS_MAX} characters, this one has {0}")]
    TooLong(usize),
    /// Not lower- or upper-case hex of whole bytes.
    #[error("a record id is hex of whole bytes")]
    NotHex,
    /// The bytes hold no zero byte between principal and key.
    #[error("a record id holds a principal, a zero byte and a key; the zero byte is missing")]
    NoSeparator,
    /// The principal part is not a principal.
    #[error("the record id's principal is invalid: {0}")]
    Principal(String),
    /// The key part is not a key.
    #[error("the record id's key is invalid: {0}")]
    Key(String),
}

/// The opaque id of `id`.
#[must_use]
pub fn encode(id: &RecordId) -> String {
    let mut bytes = Vec::with_capacity(id.stored_bytes() + 1);
    bytes.extend_from_slice(id.principal.as_str().as_bytes());
    bytes.push(0);
    bytes.extend_from_slice(id.key.as_str().as_bytes());
    hex::encode(bytes)
}

/// The record id that `text` names.
///
/// # Errors
/// A [`CursorError`] for anything [`encode`] does not make; never panics.
pub fn decode(text: &str) -> Result<RecordId, CursorError> {
    if text.len() > ID_CHARS_MAX {
        return Err(CursorError::TooLong(text.len()));
    }
    let bytes = hex::decode(text).map_err(|_| CursorError::NotHex)?;
    let split = bytes.iter().position(|&byte| byte == 0).ok_or(CursorError::NoSeparator)?;
    let principal = std::str::from_utf8(&bytes[..split]).map_err(|error| CursorError::Principal(error.to_string()))?;
    let principal = if principal.is_empty() {
        Principal::anonymous()
    } else {
        Principal::new(principal).map_err(|error| CursorError::Principal(error.to_string()))?
    };
    let key = std::str::from_utf8(&bytes[split + 1..]).map_err(|error| CursorError::Key(error.to_string()))?;
    let key = Key::from_chars(key).map_err(|error| CursorError::Key(error.to_string()))?;
    Ok(RecordId::new(principal, key))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(principal: Principal, key: &str) -> RecordId {
        RecordId::new(principal, Key::from_chars(key).expect("test keys are valid"))
    }

    #[test]
    fn ids_round_trip_including_the_anonymous_caller_and_odd_characters() {
        // Goal: every record id comes back from its text, whatever its characters.
        let longest = "k".repeat(KEY_CHARS_MAX);
        let cases = [
            id(Principal::anonymous(), "k1"),
            id(Principal::new("alice").expect("valid"), "a/b?c=%20\"\\"),
            id(Principal::new("é/ü \u{1F600}").expect("valid"), &longest),
            id(Principal::new(&"p".repeat(PRINCIPAL_BYTES_MAX)).expect("valid"), &longest),
        ];
        for case in cases {
            let text = encode(&case);
            assert!(text.len() <= ID_CHARS_MAX);
            assert_eq!(decode(&text), Ok(case));
        }
    }

    #[test]
    fn the_separator_keeps_principal_and_key_apart() {
        // Goal: the separator keeps ("ab", "c") and ("a", "bc") apart.
        let one = encode(&id(Principal::new("ab").expect("valid"), "c"));
        let other = encode(&id(Principal::new("a").expect("valid"), "bc"));
        assert_ne!(one, other);
    }

    #[test]
    fn bad_ids_are_errors_not_panics() {
        // Goal: every malformed text is refused with its reason.
        assert_eq!(decode("zz"), Err(CursorError::NotHex));
        assert_eq!(decode("abc"), Err(CursorError::NotHex));
        assert_eq!(decode(&hex::encode("alicek1")), Err(CursorError::NoSeparator));
        assert!(matches!(decode(&hex::encode("alice\0")), Err(CursorError::Key(_))));
        assert!(matches!(decode(&hex::encode("alice\0k 1")), Err(CursorError::Key(_))));
        assert!(matches!(decode(&hex::encode(b"\xff\0k1")), Err(CursorError::Principal(_))));
        assert!(matches!(decode(&hex::encode("a\tb\0k1")), Err(CursorError::Principal(_))));
        assert_eq!(decode(&"0".repeat(ID_CHARS_MAX + 2)), Err(CursorError::TooLong(ID_CHARS_MAX + 2)));
        assert_eq!(decode(""), Err(CursorError::NoSeparator));
    }
}
