//! Where payment and user ids come from: an injectable generator, so that simulations and
//! tests replay the same ids from the same seed.

use std::sync::Mutex;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha12Rng;

/// Bits of randomness in an id: 96, shown as 24 hex digits. Ids are never reused after a
/// restart only because they are random; at 96 bits a collision needs ~2^48 ids.
const ID_BITS: u32 = 96;

/// A source of fresh ids.
pub trait IdGenerator: Send + Sync {
    /// A fresh 96-bit number (the top 32 bits of the result are ignored).
    fn next_u96(&self) -> u128;
}

/// Ids from a ChaCha stream: the same seed gives the same ids.
///
/// `idem serve` seeds it once at start-up from the operating system; tests and simulations
/// pass a seed of their own.
#[derive(Debug)]
pub struct SeededIds {
    rng: Mutex<ChaCha12Rng>,
}

impl SeededIds {
    /// A generator whose ids follow from `seed`.
    #[must_use]
    pub fn new(seed: u64) -> SeededIds {
        SeededIds { rng: Mutex::new(ChaCha12Rng::seed_from_u64(seed)) }
    }
}

impl IdGenerator for SeededIds {
    fn next_u96(&self) -> u128 {
        // A panic while the lock was held cannot leave a ChaCha state half-updated in a way
        // that matters for ids, so a poisoned lock is used as it is.
        let mut rng = self.rng.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        rng.random::<u128>()
    }
}

/// The kinds of ids the API hands out, each with its prefix.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IdKind {
    /// `pay_…`
    Payment,
    /// `usr_…`
    User,
}

/// A fresh id of `kind`: its prefix and 24 lower-case hex digits.
#[must_use]
pub fn fresh_id(ids: &dyn IdGenerator, kind: IdKind) -> String {
    let prefix = match kind {
        IdKind::Payment => "pay",
        IdKind::User => "usr",
    };
    let bits = ids.next_u96() & ((1u128 << ID_BITS) - 1);
    format!("{prefix}_{bits:024x}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_seed_same_ids_and_ids_have_their_prefix() {
        // Goal: ids are reproducible from a seed, distinct within a stream, and well formed.
        let (a, b) = (SeededIds::new(7), SeededIds::new(7));
        let first: Vec<String> = (0..4).map(|_| fresh_id(&a, IdKind::Payment)).collect();
        let again: Vec<String> = (0..4).map(|_| fresh_id(&b, IdKind::Payment)).collect();
        assert_eq!(first, again);
        assert_ne!(first[0], first[1]);
        assert!(first.iter().all(|id| id.len() == 4 + 24 && id.starts_with("pay_")));
        assert!(fresh_id(&SeededIds::new(8), IdKind::User).starts_with("usr_"));
        assert_ne!(fresh_id(&SeededIds::new(8), IdKind::Payment), first[0]);
    }
}
