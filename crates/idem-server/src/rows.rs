//! What the SQL ledgers share: payments and users bound to their insert statements and
//! decoded from rows, the columns' encodings of times and principals, and paging by cursor.
//! SQLite and PostgreSQL rows are both `sqlx::Row`s with text and 64-bit integer columns,
//! so each decoder is written once for both.

use std::future::Future;

use idem_core::{Principal, Timestamp};
use sqlx::query::Query;
use sqlx::{ColumnIndex, Database, Decode, Encode, Row, Type};

use crate::domain::{Amount, NewPayment, NewUser, Payment, PaymentStatus, User};
use crate::ledger_error::LedgerError;
use crate::page::{Page, PageRequest};

/// `insert` (the `payments` insert of either ledger: payment_id, principal, amount_minor,
/// currency, destination, status, created_at) with `payment`'s values bound in that order.
pub(crate) fn bind_payment<'q, DB>(
    insert: Query<'q, DB, DB::Arguments>,
    payment: &Payment,
) -> Query<'q, DB, DB::Arguments>
where
    DB: Database,
    String: for<'e> Encode<'e, DB> + Type<DB>,
    &'static str: for<'e> Encode<'e, DB> + Type<DB>,
    i64: for<'e> Encode<'e, DB> + Type<DB>,
{
    let amount_minor = i64::try_from(payment.request.amount.minor()).expect("amounts are bounded far below i64::MAX");
    insert
        .bind(payment.payment_id.clone())
        .bind(payment.principal.as_str().to_owned())
        .bind(amount_minor)
        .bind(payment.request.currency.clone())
        .bind(payment.request.destination.clone())
        .bind(payment.status.as_str())
        .bind(sql_time(payment.created_at))
}

/// `insert` (the `users` insert of either ledger: user_id, principal, name, email,
/// created_at) with `user`'s values bound in that order.
pub(crate) fn bind_user<'q, DB>(insert: Query<'q, DB, DB::Arguments>, user: &User) -> Query<'q, DB, DB::Arguments>
where
    DB: Database,
    String: for<'e> Encode<'e, DB> + Type<DB>,
    i64: for<'e> Encode<'e, DB> + Type<DB>,
{
    insert
        .bind(user.user_id.clone())
        .bind(user.principal.as_str().to_owned())
        .bind(user.request.name.clone())
        .bind(user.request.email.clone())
        .bind(sql_time(user.created_at))
}

/// A column of `row`, or `Corrupt` naming why it cannot be read.
fn column<R, T>(row: &R, name: &'static str) -> Result<T, LedgerError>
where
    R: Row,
    &'static str: ColumnIndex<R>,
    T: for<'r> Decode<'r, R::Database> + Type<R::Database>,
{
    row.try_get(name).map_err(|error| LedgerError::Corrupt(error.to_string()))
}

/// A `payments` row.
pub(crate) fn payment_of_row<R>(row: &R) -> Result<Payment, LedgerError>
where
    R: Row,
    &'static str: ColumnIndex<R>,
    String: for<'r> Decode<'r, R::Database> + Type<R::Database>,
    i64: for<'r> Decode<'r, R::Database> + Type<R::Database>,
{
    let amount_minor: i64 = column(row, "amount_minor")?;
    let amount = u64::try_from(amount_minor)
        .ok()
        .and_then(Amount::from_minor)
        .ok_or_else(|| LedgerError::Corrupt(format!("amount_minor {amount_minor}")))?;
    let status: String = column(row, "status")?;
    let principal: String = column(row, "principal")?;
    Ok(Payment {
        payment_id: column(row, "payment_id")?,
        principal: principal_of_row(&principal)?,
        request: NewPayment { amount, currency: column(row, "currency")?, destination: column(row, "destination")? },
        status: PaymentStatus::from_name(&status).ok_or_else(|| LedgerError::Corrupt(format!("status {status:?}")))?,
        created_at: time_of_row(column(row, "created_at")?)?,
    })
}

/// A `users` row.
pub(crate) fn user_of_row<R>(row: &R) -> Result<User, LedgerError>
where
    R: Row,
    &'static str: ColumnIndex<R>,
    String: for<'r> Decode<'r, R::Database> + Type<R::Database>,
    i64: for<'r> Decode<'r, R::Database> + Type<R::Database>,
{
    let principal: String = column(row, "principal")?;
    Ok(User {
        user_id: column(row, "user_id")?,
        principal: principal_of_row(&principal)?,
        request: NewUser { name: column(row, "name")?, email: column(row, "email")? },
        created_at: time_of_row(column(row, "created_at")?)?,
    })
}

/// A page after `request.starting_after`: `cursor_seq` finds the cursor row's sequence
/// number (`None`: not this caller's row, so no page), `rows_before(seq, probe)` reads up to
/// `probe` rows written before it, newest first.
pub(crate) async fn page_after_cursor<T, C, CF, B, BF>(
    request: &PageRequest,
    cursor_seq: C,
    rows_before: B,
) -> Result<Option<Page<T>>, LedgerError>
where
    C: FnOnce(String) -> CF,
    CF: Future<Output = Result<Option<i64>, LedgerError>>,
    B: FnOnce(i64, i64) -> BF,
    BF: Future<Output = Result<Vec<T>, LedgerError>>,
{
    let before = match &request.starting_after {
        None => i64::MAX,
        Some(cursor) => match cursor_seq(cursor.clone()).await? {
            Some(seq) => seq,
            None => return Ok(None),
        },
    };
    let rows = rows_before(before, request.probe()).await?;
    Ok(Some(Page::from_probe(rows, request)))
}

/// A timestamp as its column holds it: milliseconds since the Unix epoch.
pub(crate) fn sql_time(t: Timestamp) -> i64 {
    i64::try_from(t.unix_ms()).unwrap_or(i64::MAX)
}

/// A `principal` column: the empty text is the anonymous caller.
pub(crate) fn principal_of_row(text: &str) -> Result<Principal, LedgerError> {
    if text.is_empty() {
        return Ok(Principal::anonymous());
    }
    Principal::new(text).map_err(|error| LedgerError::Corrupt(format!("principal {text:?}: {error}")))
}

/// A `created_at` column, or `Corrupt` if it is negative.
pub(crate) fn time_of_row(ms: i64) -> Result<Timestamp, LedgerError> {
    u64::try_from(ms).map(Timestamp::from_unix_ms).map_err(|_| LedgerError::Corrupt(format!("created_at {ms}")))
}
