//! What a request asks for, as a digest: same key with another fingerprint is misuse.

use std::fmt;

use sha2::{Digest, Sha256};

/// Domain tag hashed first, so a fingerprint can never equal a SHA-256 of anything else,
/// and so a future change of what is hashed gets a new tag instead of silent collisions.
const DOMAIN_TAG: &[u8] = b"idem-fingerprint-v1\0";

/// A SHA-256 digest of what a request asks for.
///
/// Exactly what goes in, in this order:
///
/// 1. the bytes `idem-fingerprint-v1` and one zero byte (a domain tag);
/// 2. the method's length as a big-endian `u64`, then the method's bytes (`POST`), as sent;
/// 3. the path-and-query's length as a big-endian `u64`, then its bytes (`/payments?x=1`),
///    as sent: no normalisation, so `/a?x=1&y=2` and `/a?y=2&x=1` differ;
/// 4. the body bytes, in order, as they stream in.
///
/// Every field but the last is length-prefixed, so no two requests share an input.
/// Headers are not included: they carry transport details (tracing ids, dates) that a
/// retry may legitimately change.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Fingerprint([u8; 32]);

impl Fingerprint {
    /// Starts a fingerprint; feed the body with [`FingerprintBuilder::update`] as it arrives.
    #[must_use]
    pub fn builder(method: &str, path_and_query: &str) -> FingerprintBuilder {
        let mut hasher = Sha256::new();
        hasher.update(DOMAIN_TAG);
        for field in [method.as_bytes(), path_and_query.as_bytes()] {
            hasher.update((field.len() as u64).to_be_bytes());
            hasher.update(field);
        }
        FingerprintBuilder { hasher }
    }

    /// The fingerprint of a request whose body is already in memory.
    #[must_use]
    pub fn of(method: &str, path_and_query: &str, body: &[u8]) -> Fingerprint {
        let mut builder = Self::builder(method, path_and_query);
        builder.update(body);
        builder.finish()
    }

    /// Rebuilds a fingerprint from the 32 bytes a store kept.
    #[must_use]
    pub const fn from_bytes(bytes: [u8; 32]) -> Fingerprint {
        Fingerprint(bytes)
    }

    /// The digest's 32 bytes.
    #[must_use]
    pub const fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }
}

impl fmt::Debug for Fingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Eight bytes identify a fingerprint in logs and model traces well enough.
        f.write_str("Fingerprint(")?;
        for byte in &self.0[..8] {
            write!(f, "{byte:02x}")?;
        }
        f.write_str("…)")
    }
}

/// A fingerprint being computed over a streaming body.
#[derive(Clone)]
pub struct FingerprintBuilder {
    hasher: Sha256,
}

impl FingerprintBuilder {
    /// Feeds the next chunk of the body.
    pub fn update(&mut self, body_chunk: &[u8]) {
        self.hasher.update(body_chunk);
    }

    /// Finishes the digest.
    #[must_use]
    pub fn finish(self) -> Fingerprint {
        Fingerprint(self.hasher.finalize().into())
    }
}

impl fmt::Debug for FingerprintBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("FingerprintBuilder")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn streaming_equals_one_shot() {
        // Goal: hashing the body in chunks gives the same digest as hashing it whole.
        let mut builder = Fingerprint::builder("POST", "/payments");
        builder.update(b"{\"amount\":");
        builder.update(b"");
        builder.update(b"100}");
        assert_eq!(builder.finish(), Fingerprint::of("POST", "/payments", b"{\"amount\":100}"));
    }

    #[test]
    fn every_field_changes_the_digest() {
        // Goal: method, path, query and body each take part, and field boundaries are fixed.
        let base = Fingerprint::of("POST", "/payments?a=1", b"{}");
        assert_ne!(base, Fingerprint::of("PATCH", "/payments?a=1", b"{}"));
        assert_ne!(base, Fingerprint::of("POST", "/payments?a=2", b"{}"));
        assert_ne!(base, Fingerprint::of("POST", "/users?a=1", b"{}"));
        assert_ne!(base, Fingerprint::of("POST", "/payments?a=1", b"{ }"));
        assert_ne!(Fingerprint::of("POS", "T/x", b""), Fingerprint::of("POST", "/x", b""));
        assert_ne!(Fingerprint::of("POST", "/x", b"y"), Fingerprint::of("POST", "/xy", b""));
    }
}
