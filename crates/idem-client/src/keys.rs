//! Where keys come from: one fresh key per logical operation, from an injectable generator.

use std::sync::{Mutex, PoisonError};

use idem_core::Key;
use rand::{RngCore, SeedableRng};
use rand_chacha::ChaCha8Rng;
use uuid::Uuid;

/// Makes a fresh [`Key`] for each new logical operation.
///
/// The layer calls it once per request that needs a key and carries none; every retry of
/// that request reuses the key it got. Implementations must be cheap and must not block.
pub trait KeyGenerator: Send + Sync {
    /// The key for the next operation.
    fn next_key(&self) -> Key;
}

/// The default generator: a random UUID v4 from the operating system's randomness
/// (122 random bits, so two operations never share a key in practice).
#[derive(Debug, Clone, Copy, Default)]
pub struct UuidV4Keys;

impl KeyGenerator for UuidV4Keys {
    fn next_key(&self) -> Key {
        uuid_key(Uuid::new_v4())
    }
}

/// UUID-v4-shaped keys from a ChaCha8 generator seeded with a `u64`: the same seed gives the
/// same sequence of keys, for deterministic tests and simulations. Not for production: keys
/// are predictable from the seed, and two clients with the same seed collide.
///
/// ```
/// use idem_client::{KeyGenerator, SeededKeys};
///
/// let (a, b) = (SeededKeys::new(7), SeededKeys::new(7));
/// assert_eq!(a.next_key(), b.next_key());
/// assert_eq!(a.next_key().as_str().len(), 36);
/// ```
#[derive(Debug)]
pub struct SeededKeys {
    rng: Mutex<ChaCha8Rng>,
}

impl SeededKeys {
    /// A generator whose sequence is fixed by `seed`.
    #[must_use]
    pub fn new(seed: u64) -> SeededKeys {
        SeededKeys { rng: Mutex::new(ChaCha8Rng::seed_from_u64(seed)) }
    }
}

impl KeyGenerator for SeededKeys {
    fn next_key(&self) -> Key {
        let mut bytes = [0_u8; 16];
        // A panic elsewhere cannot leave a ChaCha state half-written: fill_bytes is its only use.
        self.rng.lock().unwrap_or_else(PoisonError::into_inner).fill_bytes(&mut bytes);
        uuid_key(uuid::Builder::from_random_bytes(bytes).into_uuid())
    }
}

fn uuid_key(uuid: Uuid) -> Key {
    let text = uuid.hyphenated().to_string();
    Key::try_from(text.as_str()).expect("a hyphenated UUID is 36 visible ASCII characters, a valid key")
}

/// The key of a logical operation that spans several calls, chosen by the caller: put it
/// in the request's extensions and the layer sends it instead of generating one.
///
/// Use it when the operation outlives one call of the service, e.g. a payment that a
/// user may resubmit after the program restarts: store the key with the operation and
/// pass it on every submission.
///
/// ```
/// use idem_client::OperationKey;
/// use idem_core::Key;
///
/// let key = Key::try_from("order-42-payment").unwrap();
/// let request = http::Request::post("http://127.0.0.1:8080/payments")
///     .extension(OperationKey(key))
///     .body(String::new())
///     .unwrap();
/// assert!(request.extensions().get::<OperationKey>().is_some());
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OperationKey(pub Key);

#[cfg(test)]
mod tests {
    use super::*;

    fn is_uuid_v4(key: &Key) -> bool {
        Uuid::parse_str(key.as_str()).is_ok_and(|uuid| uuid.get_version_num() == 4)
    }

    #[test]
    fn seeded_keys_repeat_for_the_same_seed_and_differ_across_seeds() {
        // Goal: a seed fixes the whole key sequence; another seed gives another sequence.
        let sequence = |seed| {
            let keys = SeededKeys::new(seed);
            (0..5).map(|_| keys.next_key()).collect::<Vec<_>>()
        };
        let first = sequence(42);
        assert_eq!(first, sequence(42));
        assert_ne!(first, sequence(43));
        let distinct: std::collections::BTreeSet<_> = first.iter().collect();
        assert_eq!(distinct.len(), first.len(), "one seed never repeats a key within a run");
    }

    #[test]
    fn generated_keys_are_uuid_v4() {
        // Goal: both generators produce canonical UUID v4 strings (36 characters, version 4).
        let seeded = SeededKeys::new(1).next_key();
        let random = UuidV4Keys.next_key();
        assert!(is_uuid_v4(&seeded), "{seeded:?}");
        assert!(is_uuid_v4(&random), "{random:?}");
        assert_ne!(UuidV4Keys.next_key(), random);
    }
}
