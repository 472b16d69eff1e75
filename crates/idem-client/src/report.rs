//! What the caller learns about a request that went through the layer.

use idem_core::Key;

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
}
