//! The client's idempotency key, parsed from an `Idempotency-Key` header value or taken
//! from a message id.

use std::fmt;
use std::sync::Arc;

/// The longest key accepted, in characters (SPEC: 1 to 255 visible ASCII characters).
pub const KEY_CHARS_MAX: usize = 255;

/// The longest header value `Key::parse` looks at: a quoted key where every character
/// is escaped (`\"` or `\\`) plus the two quotes. Anything longer is too long whatever it holds.
pub const KEY_HEADER_BYTES_MAX: usize = 2 * KEY_CHARS_MAX + 2;

const _: () = assert!(KEY_HEADER_BYTES_MAX > KEY_CHARS_MAX);

/// Why a header value is not a key. Each rejection has its own variant so that an HTTP
/// layer can say precisely what was wrong.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    /// The value (or the quoted string) is empty.
    #[error("idempotency key is empty")]
    Empty,
    /// The key has more than [`KEY_CHARS_MAX`] characters.
    #[error("idempotency key has {chars} characters, at most {KEY_CHARS_MAX} are allowed")]
    TooLong {
        /// Characters (for a quoted key: after unescaping) or, past [`KEY_HEADER_BYTES_MAX`], header bytes.
        chars: usize,
    },
    /// A byte outside visible ASCII (0x21..=0x7E), e.g. a space or a control character.
    #[error("idempotency key has byte 0x{byte:02x} at offset {offset}; only visible ASCII (0x21..=0x7E) is allowed")]
    ForbiddenByte {
        /// The offending byte.
        byte: u8,
        /// Its offset in the header value.
        offset: usize,
    },
    /// The value starts with `"` but is not exactly one structured-field string
    /// (unterminated, a bad escape, parameters or trailing text).
    #[error("idempotency key is not a valid structured-field string")]
    BadQuoting,
}

/// A valid idempotency key: 1..=255 visible ASCII characters.
///
/// Parse, don't validate: the only ways to get a `Key` are [`Key::parse`] (an
/// `Idempotency-Key` header value; [`Key::try_from`] on a `&str` is the same) and
/// [`Key::from_chars`] (a message id, taken as it is), so holding one means it is valid.
/// Cloning is cheap (the characters are shared).
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Key(Arc<str>);

impl Key {
    /// Parses an `Idempotency-Key` header value.
    ///
    /// Two spellings are accepted and give the same key: the IETF draft's structured-field
    /// string (`"abc"`, with sf-string escapes `\"` and `\\`) and a bare value (`abc`).
    /// A value that starts with `"` is always read as a structured-field string; any other
    /// value is the key verbatim. Either way the key is 1..=255 characters in 0x21..=0x7E.
    /// The value is taken as given: surrounding whitespace is not trimmed here (HTTP
    /// parsers already strip it), so a leading space is a forbidden byte.
    ///
    /// # Errors
    /// A [`KeyError`] variant per kind of rejection; never panics on any input.
    pub fn parse(value: &[u8]) -> Result<Key, KeyError> {
        if value.is_empty() {
            return Err(KeyError::Empty);
        }
        if value.len() > KEY_HEADER_BYTES_MAX {
            return Err(KeyError::TooLong { chars: value.len() });
        }
        if value[0] == b'"' {
            Self::parse_quoted(value)
        } else {
            check_visible(value)?;
            Self::from_visible(value)
        }
    }

    /// Reads an sf-string with the `sfv` crate, then applies the key's own rules to its content.
    fn parse_quoted(value: &[u8]) -> Result<Key, KeyError> {
        // sfv allows spaces inside strings and around the item; a key allows neither, so
        // forbidden bytes are reported by position before sfv sees the value, and anything
        // after the closing quote (parameters, spaces) is bad quoting.
        if let Some(offset) = value.iter().position(|&b| !(0x20..=0x7E).contains(&b)) {
            return Err(KeyError::ForbiddenByte { byte: value[offset], offset });
        }
        if value.len() < 2 || value[value.len() - 1] != b'"' {
            return Err(KeyError::BadQuoting);
        }
        let item: sfv::Item = sfv::Parser::new(value).parse().map_err(|_| KeyError::BadQuoting)?;
        let sfv::BareItem::String(content) = &item.bare_item else {
            return Err(KeyError::BadQuoting);
        };
        if !item.params.is_empty() {
            return Err(KeyError::BadQuoting);
        }
        let content = content.as_str().as_bytes();
        if content.is_empty() {
            return Err(KeyError::Empty);
        }
        if let Some(index) = content.iter().position(|&b| b == b' ') {
            // Report the offset in the header value: the content starts after the quote,
            // and escapes never precede a space, so counting escapes before it is exact.
            let escapes = content[..index].iter().filter(|&&b| b == b'"' || b == b'\\').count();
            return Err(KeyError::ForbiddenByte { byte: b' ', offset: 1 + index + escapes });
        }
        Self::from_visible(content)
    }

    /// A key from its raw characters, with no structured-field parsing: a message id
    /// (`Nats-Msg-Id`, AMQP `message_id`) is a plain string, so a leading `"` is a
    /// character of the key here, not a quote. The key's limits are the same as
    /// [`Key::parse`]'s: 1..=255 characters in 0x21..=0x7E.
    ///
    /// Every key `from_chars` gives can also be sent as an `Idempotency-Key` (in its
    /// [`Key::to_sf_string`] form), and names the same record there.
    ///
    /// # Errors
    /// [`KeyError::Empty`], [`KeyError::TooLong`] (counting bytes, so a non-ASCII
    /// character counts as more than one) or [`KeyError::ForbiddenByte`] (its offset in
    /// `chars`); never [`KeyError::BadQuoting`], and never panics.
    pub fn from_chars(chars: &str) -> Result<Key, KeyError> {
        let bytes = chars.as_bytes();
        if bytes.is_empty() {
            return Err(KeyError::Empty);
        }
        if bytes.len() > KEY_CHARS_MAX {
            return Err(KeyError::TooLong { chars: bytes.len() });
        }
        check_visible(bytes)?;
        Self::from_visible(bytes)
    }

    fn from_visible(chars: &[u8]) -> Result<Key, KeyError> {
        debug_assert!(chars.iter().all(|&b| is_visible(b)), "callers check bytes first");
        if chars.len() > KEY_CHARS_MAX {
            return Err(KeyError::TooLong { chars: chars.len() });
        }
        let text = std::str::from_utf8(chars).expect("visible ASCII is UTF-8");
        Ok(Key(Arc::from(text)))
    }

    /// The key's characters.
    #[must_use]
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The key as a structured-field string, the form the IETF draft sends and the form
    /// an HTTP layer echoes back (`abc` becomes `"abc"`, `a"b` becomes `"a\"b"`).
    #[must_use]
    pub fn to_sf_string(&self) -> String {
        let mut out = String::with_capacity(self.0.len() + 2);
        out.push('"');
        for c in self.0.chars() {
            if c == '"' || c == '\\' {
                out.push('\\');
            }
            out.push(c);
        }
        out.push('"');
        out
    }
}

impl TryFrom<&str> for Key {
    type Error = KeyError;

    /// Same as [`Key::parse`] on the string's bytes.
    fn try_from(value: &str) -> Result<Self, Self::Error> {
        Key::parse(value.as_bytes())
    }
}

impl fmt::Display for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Key({:?})", &*self.0)
    }
}

fn is_visible(byte: u8) -> bool {
    (0x21..=0x7E).contains(&byte)
}

fn check_visible(value: &[u8]) -> Result<(), KeyError> {
    match value.iter().position(|&b| !is_visible(b)) {
        Some(offset) => Err(KeyError::ForbiddenByte { byte: value[offset], offset }),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quoted_and_bare_spellings_are_the_same_key() {
        // Goal: `"k"` and `k` name one key (SPEC vocabulary).
        assert_eq!(Key::parse(b"\"k\"").unwrap(), Key::parse(b"k").unwrap());
        let uuid = "123e4567-e89b-12d3-a456-426614174000";
        assert_eq!(Key::parse(format!("\"{uuid}\"").as_bytes()).unwrap().as_str(), uuid);
        assert_eq!(Key::parse(uuid.as_bytes()).unwrap().as_str(), uuid);
    }

    #[test]
    fn escapes_are_unescaped_and_round_trip() {
        // Goal: sf-string escapes decode, and `to_sf_string` re-encodes to the same key.
        let key = Key::parse(br#""a\"b\\c""#).unwrap();
        assert_eq!(key.as_str(), r#"a"b\c"#);
        assert_eq!(Key::parse(key.to_sf_string().as_bytes()).unwrap(), key);
    }

    #[test]
    fn each_rejection_has_its_own_error() {
        // Goal: every class of bad value maps to a distinct, documented variant.
        assert_eq!(Key::parse(b""), Err(KeyError::Empty));
        assert_eq!(Key::parse(b"\"\""), Err(KeyError::Empty));
        assert_eq!(Key::parse(&[b'a'; 256]), Err(KeyError::TooLong { chars: 256 }));
        assert!(Key::parse(&[b'a'; 255]).is_ok());
        assert_eq!(Key::parse(b"a b"), Err(KeyError::ForbiddenByte { byte: b' ', offset: 1 }));
        assert_eq!(Key::parse(b"a\x01"), Err(KeyError::ForbiddenByte { byte: 1, offset: 1 }));
        assert_eq!(Key::parse(b"\"a b\""), Err(KeyError::ForbiddenByte { byte: b' ', offset: 2 }));
        assert_eq!(Key::parse(b"\"a\\\"b c\""), Err(KeyError::ForbiddenByte { byte: b' ', offset: 5 }));
        assert_eq!(Key::parse(b"\"abc"), Err(KeyError::BadQuoting));
        assert_eq!(Key::parse(b"\"abc\";p=1"), Err(KeyError::BadQuoting));
        assert_eq!(Key::parse(b"\"a\\b\""), Err(KeyError::BadQuoting));
        assert_eq!(Key::parse(b"\"abc\" "), Err(KeyError::BadQuoting));
        assert_eq!(Key::parse(b"\""), Err(KeyError::BadQuoting));
    }

    #[test]
    fn from_chars_takes_the_characters_as_they_are() {
        // Goal: a message id is never read as a structured-field string: quotes and
        // backslashes are characters of the key, and the key's limits still hold.
        assert_eq!(Key::from_chars("\"abc\"").unwrap().as_str(), "\"abc\"");
        assert_eq!(Key::from_chars("a\\b").unwrap().as_str(), "a\\b");
        assert_eq!(Key::from_chars("\"").unwrap().as_str(), "\"");
        assert_eq!(Key::from_chars("k").unwrap(), Key::parse(b"k").unwrap());
        let raw = Key::from_chars("a\"b").unwrap();
        assert_eq!(Key::parse(raw.to_sf_string().as_bytes()).unwrap(), raw, "the same record over HTTP");
        assert!(Key::from_chars(&"a".repeat(255)).is_ok());
        assert_eq!(Key::from_chars(&"a".repeat(256)), Err(KeyError::TooLong { chars: 256 }));
        assert_eq!(Key::from_chars(&"a".repeat(10_000)), Err(KeyError::TooLong { chars: 10_000 }));
        assert_eq!(Key::from_chars(""), Err(KeyError::Empty));
        assert_eq!(Key::from_chars("a b"), Err(KeyError::ForbiddenByte { byte: b' ', offset: 1 }));
        assert_eq!(Key::from_chars("ab\x7f"), Err(KeyError::ForbiddenByte { byte: 0x7f, offset: 2 }));
        assert_eq!(Key::from_chars("é"), Err(KeyError::ForbiddenByte { byte: 0xc3, offset: 0 }));
    }
}
