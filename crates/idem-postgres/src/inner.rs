//! [`Inner`]: what every operation of one store shares besides the pool.

use idem_core::Limits;

use crate::options::TimeSource;
use crate::statements::Statements;

/// A store's limits, time source, retries and prebuilt statements, shared by its clones.
#[derive(Debug)]
pub(crate) struct Inner {
    pub(crate) limits: Limits,
    pub(crate) time: TimeSource,
    pub(crate) retries_max: u32,
    pub(crate) schema: String,
    pub(crate) sql: Statements,
    /// Whether the guarded completion checks what it wrote against the store step: always,
    /// but in a store with a bug planted for testing (`PostgresStore::with_planted_bug`).
    pub(crate) self_check: bool,
}
