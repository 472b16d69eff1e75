//! Business rows in one database, idempotency records in another store (separate mode):
//! [`SeparateLedger`], what `idem serve --store redis://… --db …` runs.

use std::sync::Arc;

use idem_core::{Principal, Store};

use crate::domain::{Payment, User};
use crate::ledger::{Completion, Ledger, Written};
use crate::ledger_error::LedgerError;
use crate::page::{Page, PageRequest};

/// A ledger `rows` (SQLite or PostgreSQL) that keeps the payments and users, beside an
/// idempotency store `store` it cannot share a transaction with (Redis): separate mode.
///
/// Writes go to `rows` without a completion, so they commit alone and the idempotency layer
/// completes the record afterwards, fenced (G3). G1 then holds only while each holder keeps
/// its lease and does not crash between its write and the completion (SPEC "Modes";
/// docs/guarantees.md). The idempotency tables that `rows`' own store may hold are not used.
pub struct SeparateLedger<L, St> {
    rows: Arc<L>,
    store: Arc<St>,
}

impl<L, St> std::fmt::Debug for SeparateLedger<L, St> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SeparateLedger").finish_non_exhaustive()
    }
}

impl<L: Ledger, St: Store + 'static> SeparateLedger<L, St> {
    /// Payments and users in `rows`, idempotency records in `store`.
    #[must_use]
    pub fn new(rows: Arc<L>, store: Arc<St>) -> SeparateLedger<L, St> {
        SeparateLedger { rows, store }
    }

    /// The ledger that holds the rows.
    #[must_use]
    pub fn rows(&self) -> &Arc<L> {
        &self.rows
    }
}

impl<L: Ledger, St: Store + 'static> Ledger for SeparateLedger<L, St> {
    type Store = St;

    fn idempotency_store(&self) -> Arc<St> {
        Arc::clone(&self.store)
    }

    fn completes_in_transaction(&self) -> bool {
        false
    }

    async fn insert_payment(
        &self,
        payment: &Payment,
        _completion: Option<Completion<'_>>,
    ) -> Result<Written, LedgerError> {
        self.rows.insert_payment(payment, None).await
    }

    async fn payment(&self, principal: &Principal, payment_id: &str) -> Result<Option<Payment>, LedgerError> {
        self.rows.payment(principal, payment_id).await
    }

    async fn payments(&self, principal: &Principal, page: &PageRequest) -> Result<Option<Page<Payment>>, LedgerError> {
        self.rows.payments(principal, page).await
    }

    async fn insert_user(&self, user: &User, _completion: Option<Completion<'_>>) -> Result<Written, LedgerError> {
        self.rows.insert_user(user, None).await
    }

    async fn user(&self, principal: &Principal, user_id: &str) -> Result<Option<User>, LedgerError> {
        self.rows.user(principal, user_id).await
    }

    async fn users(&self, principal: &Principal, page: &PageRequest) -> Result<Option<Page<User>>, LedgerError> {
        self.rows.users(principal, page).await
    }

    /// The rows' database takes a write, and the idempotency store answers a read (a store
    /// such as Redis has no write to try that would not disturb its records).
    async fn check_writable(&self) -> Result<(), LedgerError> {
        self.rows.check_writable().await?;
        let key = idem_core::Key::parse(b"idem-healthz-probe").expect("a constant, valid key");
        let probe = idem_core::RecordId::new(Principal::anonymous(), key);
        self.store.get(&probe).await.map(drop).map_err(LedgerError::Unavailable)
    }

    /// The rows' database has room; `/healthz` claims in the idempotency store itself
    /// ([`crate::readiness`]).
    async fn check_room(&self) -> Result<(), LedgerError> {
        self.rows.check_room().await
    }
}
