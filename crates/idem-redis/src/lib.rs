//! An idempotency store on Redis (placeholder docs, rewritten below).

mod codec;
mod options;
mod store;

pub use idem_core::Usage;
pub use options::{FenceSeed, OptionsError, PREFIX_BYTES_MAX, PREFIX_DEFAULT, RedisOptions};
pub use store::{FENCE_SEED_SHIFT, NEAR_FULL_BYTES, NEAR_FULL_RECORDS, OpenError, RedisStore};
