//! Where payments and users are kept, and how their writes meet the idempotency record.
//!
//! [`Ledger`] is the one store-specific piece of the app. Its implementations:
//!
//! | ledger | idempotency store | mode | what holds |
//! |---|---|---|---|
//! | [`SqliteLedger`](crate::SqliteLedger) | [`idem_sqlite::SqliteStore`], same file | atomic: the payment row and the completion commit in one transaction | G1-G8 |
//! | [`PostgresLedger`](crate::PostgresLedger) | [`idem_postgres::PostgresStore`], same database and schema | atomic: the payment row and the completion commit in one PostgreSQL transaction | G1-G8, for any number of replicas |
//! | [`SeparateLedger`](crate::SeparateLedger) | any store (Redis) beside a SQLite or PostgreSQL ledger | separate: the layer completes after the handler | all but G1 across lease lapses and crashes after the side effect; G7 as the store keeps its records |
//! | [`MemoryLedger`](crate::MemoryLedger) | [`idem_core::MemoryStore`] | separate: the layer completes after the handler | all but G1 across lease lapses, and nothing survives a restart (no G7) |

use std::future::Future;
use std::sync::Arc;

use idem_core::{Fenced, Principal, Store, StoredResponse};
use idem_http::ClaimContext;

use crate::domain::{Payment, User};
pub use crate::ledger_error::LedgerError;
pub use crate::page::{LIST_LIMIT_MAX, Page, PageRequest};

/// What a handler running under a claim hands to the ledger, so that a ledger in atomic
/// mode completes the record in the same transaction as its write.
#[derive(Debug, Clone, Copy)]
pub struct Completion<'a> {
    /// The claim the handler runs under.
    pub claim: &'a ClaimContext,
    /// The response to record, as the layer would store it.
    pub response: &'a StoredResponse,
}

/// A write and, in atomic mode, the completion that went with it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Written {
    /// Written; the ledger did not touch the idempotency record (separate mode, or no claim).
    Alone,
    /// The completion was applied and the write committed with it.
    Completed,
    /// The claim is no longer this execution's: nothing was written (atomic mode, G1).
    Superseded(Fenced),
}

/// Where payments and users live; see the module docs for the two implementations.
pub trait Ledger: Send + Sync + 'static {
    /// The idempotency store the layer uses with this ledger.
    type Store: Store + 'static;

    /// The idempotency store, shared with the layer.
    fn idempotency_store(&self) -> Arc<Self::Store>;

    /// Whether writes complete the claim in their own transaction (atomic mode). When
    /// false, handlers need not build the stored response: the layer records it.
    fn completes_in_transaction(&self) -> bool;

    /// Records `payment`; with a `completion`, an atomic-mode ledger completes the claim in
    /// the same transaction and writes nothing if the completion is refused.
    fn insert_payment(
        &self,
        payment: &Payment,
        completion: Option<Completion<'_>>,
    ) -> impl Future<Output = Result<Written, LedgerError>> + Send;

    /// The payment `payment_id` if it belongs to `principal`.
    fn payment(
        &self,
        principal: &Principal,
        payment_id: &str,
    ) -> impl Future<Output = Result<Option<Payment>, LedgerError>> + Send;

    /// A page of `principal`'s payments (see [`Page`]), or `None` when
    /// `page.starting_after` names no payment of theirs.
    fn payments(
        &self,
        principal: &Principal,
        page: &PageRequest,
    ) -> impl Future<Output = Result<Option<Page<Payment>>, LedgerError>> + Send;

    /// Records `user`, like [`Ledger::insert_payment`].
    fn insert_user(
        &self,
        user: &User,
        completion: Option<Completion<'_>>,
    ) -> impl Future<Output = Result<Written, LedgerError>> + Send;

    /// The user `user_id` if `principal` created it.
    fn user(
        &self,
        principal: &Principal,
        user_id: &str,
    ) -> impl Future<Output = Result<Option<User>, LedgerError>> + Send;

    /// A page of the users `principal` created, like [`Ledger::payments`].
    fn users(
        &self,
        principal: &Principal,
        page: &PageRequest,
    ) -> impl Future<Output = Result<Option<Page<User>>, LedgerError>> + Send;

    /// Whether the ledger can take a write now: `Ok` after a write transaction committed
    /// (for `/healthz`), the failure otherwise. A cheap probe that may rewrite a row in
    /// place, so its success does not prove that new rows fit: it never makes a server
    /// ready again ([`crate::readiness`]).
    fn check_writable(&self) -> impl Future<Output = Result<(), LedgerError>> + Send;

    /// Whether the ledger has room for new rows now: `Ok` after a write that needs what a
    /// new payment needs (fresh storage, under the ledger's bounds) committed. `/healthz`
    /// runs it while the readiness latch is down; its success makes the server ready again
    /// ([`crate::readiness`]). By default, [`Ledger::check_writable`], for a ledger whose
    /// every write takes the same room.
    fn check_room(&self) -> impl Future<Output = Result<(), LedgerError>> + Send {
        self.check_writable()
    }
}

/// The recovery probe's row ([`Ledger::check_room`]): 64 KiB, sixteen 4 KiB pages, more
/// than a payment and its record take. A row over a page goes to overflow pages, taken from
/// the free list or by growing the file, so the probe fails where a payment's new pages
/// would not fit. Random bytes, so no layer compresses them away.
pub(crate) const ROOM_PROBE_BYTES: i64 = 64 * 1024;
