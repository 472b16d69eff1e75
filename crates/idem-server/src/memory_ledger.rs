//! [`MemoryLedger`]: payments and users in process memory, beside a [`MemoryStore`], for
//! benches, simulations and trying the API out. Separate from the SQL ledgers: it shares
//! no rows, no SQL and no transactions with them, only the [`Ledger`] trait.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use idem_core::{MemoryStore, Principal};

use crate::domain::{Payment, User};
use crate::ledger::{Completion, Ledger, Written};
use crate::ledger_error::LedgerError;
use crate::page::{Page, PageRequest};

/// Payments and users in memory, beside a [`MemoryStore`] (separate mode). For benches,
/// simulations and trying the API out; nothing survives a restart.
#[derive(Debug)]
pub struct MemoryLedger {
    store: Arc<MemoryStore>,
    rows_max: usize,
    tables: Mutex<MemoryTables>,
}

#[derive(Debug, Default)]
struct MemoryTables {
    rows: usize,
    payments: MemoryTable<Payment>,
    users: MemoryTable<User>,
}

/// Rows by id, and each principal's ids by write order (a sequence number), so that a
/// page is a range scan like the SQL ledgers' `seq < cursor ORDER BY seq DESC`.
#[derive(Debug)]
struct MemoryTable<T> {
    next_seq: u64,
    rows: BTreeMap<String, (u64, T)>,
    by_principal: BTreeMap<Principal, BTreeMap<u64, String>>,
}

impl<T> Default for MemoryTable<T> {
    fn default() -> Self {
        MemoryTable { next_seq: 0, rows: BTreeMap::new(), by_principal: BTreeMap::new() }
    }
}

impl<T: Clone> MemoryTable<T> {
    fn insert(&mut self, principal: &Principal, id: &str, row: T) {
        let seq = self.next_seq;
        self.next_seq += 1;
        self.by_principal.entry(principal.clone()).or_default().insert(seq, id.to_owned());
        self.rows.insert(id.to_owned(), (seq, row));
    }

    /// The row `id` if `principal` wrote it.
    fn get(&self, principal: &Principal, id: &str) -> Option<T> {
        let (seq, row) = self.rows.get(id)?;
        self.by_principal.get(principal)?.contains_key(seq).then(|| row.clone())
    }

    fn page(&self, principal: &Principal, request: &PageRequest) -> Option<Page<T>> {
        let Some(ids) = self.by_principal.get(principal) else {
            return request.starting_after.is_none().then(|| Page { items: Vec::new(), has_more: false });
        };
        let before = match &request.starting_after {
            None => u64::MAX,
            Some(cursor) => *self.rows.get(cursor).map(|(seq, _)| seq).filter(|seq| ids.contains_key(seq))?,
        };
        let newest_first = ids.range(..before).rev().take(request.limit() + 1);
        let rows = newest_first.filter_map(|(_, id)| self.rows.get(id).map(|(_, row)| row.clone())).collect();
        Some(Page::from_probe(rows, request))
    }
}

impl MemoryLedger {
    /// Default bound on payments plus users held.
    pub const ROWS_MAX_DEFAULT: usize = 1_000_000;

    /// An empty ledger over `store`, holding at most `rows_max` payments and users.
    #[must_use]
    pub fn new(store: Arc<MemoryStore>, rows_max: usize) -> MemoryLedger {
        MemoryLedger { store, rows_max, tables: Mutex::new(MemoryTables::default()) }
    }

    fn tables(&self) -> std::sync::MutexGuard<'_, MemoryTables> {
        // Every update below is a single insert after its checks, so a panic elsewhere
        // cannot leave the tables half-written: a poisoned lock is safe to use.
        self.tables.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn take_row(&self, tables: &mut MemoryTables) -> Result<(), LedgerError> {
        if tables.rows >= self.rows_max {
            return Err(LedgerError::Full { what: format!("{} rows", self.rows_max) });
        }
        tables.rows += 1;
        Ok(())
    }
}

impl Ledger for MemoryLedger {
    type Store = MemoryStore;

    fn idempotency_store(&self) -> Arc<MemoryStore> {
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
        let mut tables = self.tables();
        self.take_row(&mut tables)?;
        tables.payments.insert(&payment.principal, &payment.payment_id, payment.clone());
        Ok(Written::Alone)
    }

    async fn payment(&self, principal: &Principal, payment_id: &str) -> Result<Option<Payment>, LedgerError> {
        Ok(self.tables().payments.get(principal, payment_id))
    }

    async fn payments(&self, principal: &Principal, page: &PageRequest) -> Result<Option<Page<Payment>>, LedgerError> {
        Ok(self.tables().payments.page(principal, page))
    }

    async fn insert_user(&self, user: &User, _completion: Option<Completion<'_>>) -> Result<Written, LedgerError> {
        let mut tables = self.tables();
        self.take_row(&mut tables)?;
        tables.users.insert(&user.principal, &user.user_id, user.clone());
        Ok(Written::Alone)
    }

    async fn user(&self, principal: &Principal, user_id: &str) -> Result<Option<User>, LedgerError> {
        Ok(self.tables().users.get(principal, user_id))
    }

    async fn users(&self, principal: &Principal, page: &PageRequest) -> Result<Option<Page<User>>, LedgerError> {
        Ok(self.tables().users.page(principal, page))
    }

    async fn check_writable(&self) -> Result<(), LedgerError> {
        // Memory always takes a write; a full ledger still serves replays and reads.
        Ok(())
    }

    /// Room for one more row under `rows_max`.
    async fn check_room(&self) -> Result<(), LedgerError> {
        if self.tables().rows >= self.rows_max {
            return Err(LedgerError::Full { what: format!("{} rows", self.rows_max) });
        }
        Ok(())
    }
}
