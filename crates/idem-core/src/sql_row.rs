//! A record as the SQL stores' columns: the one layout idem-sqlite and idem-postgres share.
//!
//! **For the SQL stores.** Public so both store crates use this one copy; it is not an
//! API for applications and changes with the stores' schemas. A record is one row of
//! `idem_records`: its fields as plain columns (times and counts as signed 64-bit
//! integers, the state by name, the response's headers in the versioned encoding of
//! [`encode_headers`]), read back through [`Columns`], which each store implements over its
//! driver's row type in a few lines. What stays in a store is its SQL: the column lists,
//! the binding, and its own column types.
//!
//! Nothing here panics on what a row holds: every value read back is checked, and a value
//! that does not fit is a [`StoreError::Corrupt`] naming its column.

use bytes::Bytes;

use crate::{
    Fence, Fingerprint, Holder, Key, Principal, Record, RecordId, RecordState, StoreError, StoredResponse, Timestamp,
};

/// `state` of an in-flight record.
pub const STATE_IN_FLIGHT: &str = "in_flight";
/// `state` of a completed record.
pub const STATE_COMPLETED: &str = "completed";
/// `state` of a tombstone.
pub const STATE_TOMBSTONE: &str = "tombstone";

/// First byte of the header encoding, so a future encoding can be told apart.
const HEADERS_VERSION: u8 = 1;

/// The column values of a record, ready to bind. The integers are signed 64-bit as both
/// stores keep them, except `renewals` and `status`, which keep their record types: a store
/// whose columns are narrower (PostgreSQL's `integer`) converts them as it binds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordRow {
    /// `fingerprint`: [`Fingerprint::to_stored`].
    pub fingerprint: Vec<u8>,
    /// `fence`.
    pub fence: i64,
    /// `created_at`, ms since the epoch.
    pub created_at: i64,
    /// `state`: one of [`STATE_IN_FLIGHT`], [`STATE_COMPLETED`], [`STATE_TOMBSTONE`].
    pub state: &'static str,
    /// `lease_expires_at`: in flight only.
    pub lease_expires_at: Option<i64>,
    /// `holder_request_id`: in flight only, when the claim named one.
    pub holder_request_id: Option<String>,
    /// `holder_trace_id`: in flight only, when the claim named one.
    pub holder_trace_id: Option<String>,
    /// `renewals`: in flight, the claim's renewals; otherwise 0.
    pub renewals: u32,
    /// `expires_at`.
    pub expires_at: i64,
    /// `due_at`: [`Record::due_at`], when purging next has work with the row.
    pub due_at: i64,
    /// `status`: completed only.
    pub status: Option<u16>,
    /// `headers`: completed only, in the encoding of [`encode_headers`].
    pub headers: Option<Vec<u8>>,
    /// `body`: completed only.
    pub body: Option<Vec<u8>>,
    /// `replays`: completed, the replays counted; otherwise 0.
    pub replays: i64,
    /// `tombstone_until`: completed only, when the policy keeps a tombstone.
    pub tombstone_until: Option<i64>,
}

/// A row's columns by name, over a store's own row type: what [`decode_record`] reads.
///
/// Each method returns `Ok(None)` for NULL, and an error (a [`StoreError::Corrupt`], as
/// the store maps its driver's decode errors) for a column that is missing or of another
/// type. An implementation may prefix the names (PostgreSQL's joins read a second record's
/// columns as `w_fence`, ...); errors here name the column as [`decode_record`] asked.
pub trait Columns {
    /// The integer in `column`, widened to 64 bits.
    ///
    /// # Errors
    /// The driver's error, as the store maps it.
    fn int(&self, column: &str) -> Result<Option<i64>, StoreError>;

    /// The text in `column`.
    ///
    /// # Errors
    /// The driver's error, as the store maps it.
    fn text(&self, column: &str) -> Result<Option<String>, StoreError>;

    /// The bytes in `column`.
    ///
    /// # Errors
    /// The driver's error, as the store maps it.
    fn bytes(&self, column: &str) -> Result<Option<Vec<u8>>, StoreError>;
}

fn corrupt(detail: impl Into<String>) -> StoreError {
    StoreError::Corrupt { detail: detail.into() }
}

/// A time as stored. Times past `i64::MAX` ms (292 million years) are stored as
/// `i64::MAX`, the store's end of time, as [`Timestamp`]'s own arithmetic saturates.
#[must_use]
pub fn time_to_sql(time: Timestamp) -> i64 {
    i64::try_from(time.unix_ms()).unwrap_or(i64::MAX)
}

/// A time read back from `column`.
///
/// # Errors
/// [`StoreError::Corrupt`] for a negative value.
pub fn time_from_sql(column: &str, value: i64) -> Result<Timestamp, StoreError> {
    u64::try_from(value)
        .map(Timestamp::from_unix_ms)
        .map_err(|_| corrupt(format!("{column} is {value}, a time before 1970")))
}

/// A fence as stored.
///
/// # Errors
/// [`StoreError::Corrupt`] for a fence past `i64::MAX`, which no store issues.
pub fn fence_to_sql(fence: Fence) -> Result<i64, StoreError> {
    i64::try_from(fence.get()).map_err(|_| corrupt(format!("fence {fence:?} does not fit a 64-bit SQL integer")))
}

/// A fence read back from `column`.
///
/// # Errors
/// [`StoreError::Corrupt`] for anything below 1.
pub fn fence_from_sql(column: &str, value: i64) -> Result<Fence, StoreError> {
    match u64::try_from(value) {
        Ok(number) if number >= Fence::FIRST.get() => Ok(Fence::new(number)),
        _ => Err(corrupt(format!("{column} is {value}, not a fence"))),
    }
}

/// A count (of records, of bytes) as stored in `column`.
///
/// # Errors
/// [`StoreError::Corrupt`] for a count past `i64::MAX`.
pub fn count_to_sql(column: &str, count: u64) -> Result<i64, StoreError> {
    i64::try_from(count).map_err(|_| corrupt(format!("{column} of {count} does not fit a 64-bit SQL integer")))
}

/// A count read back from `column`.
///
/// # Errors
/// [`StoreError::Corrupt`] for a negative value.
pub fn count_from_sql(column: &str, value: i64) -> Result<u64, StoreError> {
    u64::try_from(value).map_err(|_| corrupt(format!("{column} is {value}, a negative count")))
}

/// The column values of `record`. Columns a state does not use hold NULL (0 for the
/// counts).
///
/// # Errors
/// [`StoreError::Corrupt`] for a fence past `i64::MAX` or headers too long to encode.
pub fn encode_record(record: &Record) -> Result<RecordRow, StoreError> {
    let mut row = RecordRow {
        fingerprint: record.fingerprint.to_stored(),
        fence: fence_to_sql(record.fence)?,
        created_at: time_to_sql(record.created_at),
        state: STATE_TOMBSTONE,
        lease_expires_at: None,
        holder_request_id: None,
        holder_trace_id: None,
        renewals: 0,
        expires_at: time_to_sql(record.expires_at),
        due_at: time_to_sql(record.due_at()),
        status: None,
        headers: None,
        body: None,
        replays: 0,
        tombstone_until: None,
    };
    match &record.state {
        RecordState::InFlight { lease_expires_at, holder, renewals } => {
            row.state = STATE_IN_FLIGHT;
            row.lease_expires_at = Some(time_to_sql(*lease_expires_at));
            row.holder_request_id = holder.request_id().map(str::to_owned);
            row.holder_trace_id = holder.trace_id().map(str::to_owned);
            row.renewals = *renewals;
        }
        RecordState::Completed { response, replays, tombstone_until } => {
            row.state = STATE_COMPLETED;
            row.status = Some(response.status);
            row.headers = Some(encode_headers(&response.headers)?);
            row.body = Some(response.body.to_vec());
            // A best-effort count past 2^63 (never reached: it is read back from the column)
            // stays at the largest integer rather than failing the write it rides on.
            row.replays = i64::try_from(*replays).unwrap_or(i64::MAX);
            row.tombstone_until = tombstone_until.map(time_to_sql);
        }
        RecordState::Tombstone => {}
    }
    Ok(row)
}

/// The record id of a row's `principal` and `idem_key` (`''` is the anonymous principal).
///
/// # Errors
/// [`StoreError::Corrupt`] for a principal or key idem would not accept.
pub fn id_from_sql(principal: &str, key: &str) -> Result<RecordId, StoreError> {
    let principal = if principal.is_empty() {
        Principal::anonymous()
    } else {
        Principal::new(principal).map_err(|error| corrupt(format!("principal {principal:?}: {error}")))?
    };
    // The column holds the key's characters; as a structured-field string they parse back
    // to exactly that key (a bare value starting with `"` would be read as quoted).
    let mut quoted = String::with_capacity(key.len() + 2);
    quoted.push('"');
    for c in key.chars() {
        if c == '"' || c == '\\' {
            quoted.push('\\');
        }
        quoted.push(c);
    }
    quoted.push('"');
    let parsed = Key::parse(quoted.as_bytes()).map_err(|error| corrupt(format!("idem_key {key:?}: {error}")))?;
    debug_assert_eq!(parsed.as_str(), key, "a quoted key parses back to its characters");
    Ok(RecordId::new(principal, parsed))
}

/// A column that the schema declares `NOT NULL`, read back.
fn required<T>(column: &str, value: Option<T>) -> Result<T, StoreError> {
    value.ok_or_else(|| corrupt(format!("{column} is NULL")))
}

/// Reads a record from the columns [`encode_record`] writes.
///
/// # Errors
/// [`StoreError::Corrupt`] for a row that is not a record idem wrote (a value out of range,
/// an unknown state, a column its state needs that is NULL, a `due_at` that disagrees with
/// the record), or the driver's error from `row`.
pub fn decode_record<C: Columns + ?Sized>(row: &C) -> Result<Record, StoreError> {
    let stored = required("fingerprint", row.bytes("fingerprint")?)?;
    let fingerprint = Fingerprint::from_stored(&stored).map_err(|error| corrupt(format!("fingerprint: {error}")))?;
    let fence = fence_from_sql("fence", required("fence", row.int("fence")?)?)?;
    let created_at = time_from_sql("created_at", required("created_at", row.int("created_at")?)?)?;
    let state = required("state", row.text("state")?)?;
    let expires_at = time_from_sql("expires_at", required("expires_at", row.int("expires_at")?)?)?;
    let due_at = required("due_at", row.int("due_at")?)?;

    let state = match state.as_str() {
        STATE_IN_FLIGHT => decode_in_flight(row)?,
        STATE_COMPLETED => {
            let tombstone_until = row.int("tombstone_until")?;
            RecordState::Completed {
                response: decode_response(row)?,
                replays: count_from_sql("replays", required("replays", row.int("replays")?)?)?,
                tombstone_until: tombstone_until.map(|until| time_from_sql("tombstone_until", until)).transpose()?,
            }
        }
        STATE_TOMBSTONE => RecordState::Tombstone,
        other => {
            return Err(corrupt(format!(
                "state is {other:?}, not {STATE_IN_FLIGHT:?}, {STATE_COMPLETED:?} or {STATE_TOMBSTONE:?}"
            )));
        }
    };
    let record = Record { fingerprint, fence, created_at, expires_at, state };
    // Purging trusts the column to say when the record is due; a row where it disagrees
    // with the record would be purged (or shrunk to its tombstone) early or late.
    if time_to_sql(record.due_at()) != due_at {
        return Err(corrupt(format!("due_at is {due_at}, but the record is due at {}", record.due_at().unix_ms())));
    }
    Ok(record)
}

/// The in-flight state of a row: its lease, holder and renewals.
fn decode_in_flight<C: Columns + ?Sized>(row: &C) -> Result<RecordState, StoreError> {
    let lease = row.int("lease_expires_at")?.ok_or_else(|| corrupt("an in-flight record has no lease_expires_at"))?;
    let renewals = required("renewals", row.int("renewals")?)?;
    let renewals = u32::try_from(renewals).map_err(|_| corrupt(format!("renewals is {renewals}, not a u32")))?;
    let request_id = row.text("holder_request_id")?;
    let trace_id = row.text("holder_trace_id")?;
    let holder = Holder::new(request_id.as_deref(), trace_id.as_deref());
    // Holder::new drops ids it would not keep; a stored one it drops was not written by idem.
    if holder.request_id() != request_id.as_deref() || holder.trace_id() != trace_id.as_deref() {
        return Err(corrupt(format!("holder ids {request_id:?}, {trace_id:?} are not ids a claim keeps")));
    }
    Ok(RecordState::InFlight { lease_expires_at: time_from_sql("lease_expires_at", lease)?, holder, renewals })
}

/// The response of a completed row.
fn decode_response<C: Columns + ?Sized>(row: &C) -> Result<StoredResponse, StoreError> {
    let status = row.int("status")?.ok_or_else(|| corrupt("a completed record has no status"))?;
    let status = u16::try_from(status).map_err(|_| corrupt(format!("status is {status}, not an HTTP status")))?;
    let headers = row.bytes("headers")?.ok_or_else(|| corrupt("a completed record has no headers"))?;
    let headers = decode_headers(&headers)?;
    let body = row.bytes("body")?.ok_or_else(|| corrupt("a completed record has no body"))?;
    Ok(StoredResponse { status, headers, body: Bytes::from(body) })
}

/// Encodes stored headers: a version byte (1), the number of headers as a big-endian
/// `u32`, then per header its name's length (`u32`, big-endian) and UTF-8 bytes and its
/// value's length (`u32`, big-endian) and bytes.
///
/// # Errors
/// [`StoreError::Corrupt`] for a list, name or value longer than a `u32` counts.
pub fn encode_headers(headers: &[(String, Bytes)]) -> Result<Vec<u8>, StoreError> {
    let too_big = |what: &str| corrupt(format!("{what} is too long for the header encoding"));
    let capacity: usize = headers.iter().map(|(name, value)| 8 + name.len() + value.len()).sum();
    let mut out = Vec::with_capacity(5 + capacity);
    out.push(HEADERS_VERSION);
    out.extend_from_slice(&u32::try_from(headers.len()).map_err(|_| too_big("the header list"))?.to_be_bytes());
    for (name, value) in headers {
        out.extend_from_slice(&u32::try_from(name.len()).map_err(|_| too_big("a header name"))?.to_be_bytes());
        out.extend_from_slice(name.as_bytes());
        out.extend_from_slice(&u32::try_from(value.len()).map_err(|_| too_big("a header value"))?.to_be_bytes());
        out.extend_from_slice(value);
    }
    Ok(out)
}

/// Decodes [`encode_headers`]' output.
///
/// # Errors
/// [`StoreError::Corrupt`] for anything else: another version, a truncated or padded
/// encoding, a count or length that lies, a name that is not UTF-8.
pub fn decode_headers(encoded: &[u8]) -> Result<Vec<(String, Bytes)>, StoreError> {
    let mut reader = Reader { rest: encoded };
    let version = reader.take(1)?[0];
    if version != HEADERS_VERSION {
        return Err(corrupt(format!("headers use encoding version {version}, this idem reads {HEADERS_VERSION}")));
    }
    let count = reader.length()?;
    // Each header takes at least 8 bytes, so a count beyond that is a lie, not a reason to allocate.
    if count > reader.rest.len() / 8 {
        return Err(corrupt(format!("headers claim {count} entries in {} bytes", reader.rest.len())));
    }
    let mut headers = Vec::with_capacity(count);
    for _ in 0..count {
        let name_bytes = reader.length()?;
        let name = std::str::from_utf8(reader.take(name_bytes)?)
            .map_err(|_| corrupt("a stored header name is not UTF-8"))?
            .to_owned();
        let value_bytes = reader.length()?;
        let value = Bytes::copy_from_slice(reader.take(value_bytes)?);
        headers.push((name, value));
    }
    if !reader.rest.is_empty() {
        return Err(corrupt(format!("headers have {} bytes after the last entry", reader.rest.len())));
    }
    Ok(headers)
}

/// The unread rest of an encoding.
struct Reader<'a> {
    rest: &'a [u8],
}

impl<'a> Reader<'a> {
    fn take(&mut self, bytes: usize) -> Result<&'a [u8], StoreError> {
        if bytes > self.rest.len() {
            return Err(corrupt(format!("headers end {} bytes early", bytes - self.rest.len())));
        }
        let (taken, rest) = self.rest.split_at(bytes);
        self.rest = rest;
        Ok(taken)
    }

    fn length(&mut self) -> Result<usize, StoreError> {
        let bytes: [u8; 4] = self.take(4)?.try_into().expect("take(4) returns 4 bytes");
        usize::try_from(u32::from_be_bytes(bytes)).map_err(|_| corrupt("a header length does not fit in memory"))
    }
}

#[cfg(test)]
mod tests;
