//! Records to and from rows: checked integer conversions and the header encoding.
//!
//! Nothing here panics on what a row holds: every value read back is checked and a
//! value that does not fit is a [`StoreError::Corrupt`].

use bytes::Bytes;
use idem_core::{
    Fence, Fingerprint, Holder, Key, Principal, Record, RecordId, RecordState, StoreError, StoredResponse, Timestamp,
};
use sqlx::Row;
use sqlx::sqlite::SqliteRow;

use crate::error::{corrupt, store_error};

/// `state` of an in-flight record.
pub(crate) const STATE_IN_FLIGHT: &str = "in_flight";
/// `state` of a completed record.
pub(crate) const STATE_COMPLETED: &str = "completed";
/// `state` of a tombstone.
pub(crate) const STATE_TOMBSTONE: &str = "tombstone";

/// First byte of the header encoding, so a future encoding can be told apart.
const HEADERS_VERSION: u8 = 1;

/// The columns [`decode_record`] reads, from `idem_records AS r`, as a literal for
/// `concat!` (statements stay `&'static str`). Each is named as its column, so the list
/// works in a join with tables that share column names (`idem_usage.stored_bytes`).
macro_rules! record_columns {
    () => {
        "r.fingerprint AS fingerprint, r.fence AS fence, r.state AS state, \
         r.lease_expires_at AS lease_expires_at, r.expires_at AS expires_at, \
         r.due_at AS due_at, r.status AS status, r.headers AS headers, r.body AS body, \
         r.created_at AS created_at, r.holder_request_id AS holder_request_id, \
         r.holder_trace_id AS holder_trace_id, r.renewals AS renewals, r.replays AS replays, \
         r.tombstone_until AS tombstone_until"
    };
}
pub(crate) use record_columns;

/// The column values of a record, ready to bind.
#[derive(Debug)]
pub(crate) struct RecordRow {
    pub(crate) fingerprint: Vec<u8>,
    pub(crate) fence: i64,
    pub(crate) state: &'static str,
    pub(crate) lease_expires_at: Option<i64>,
    pub(crate) expires_at: i64,
    pub(crate) due_at: i64,
    pub(crate) status: Option<i64>,
    pub(crate) headers: Option<Vec<u8>>,
    pub(crate) body: Option<Vec<u8>>,
    pub(crate) created_at: i64,
    pub(crate) holder_request_id: Option<String>,
    pub(crate) holder_trace_id: Option<String>,
    pub(crate) renewals: i64,
    pub(crate) replays: i64,
    pub(crate) tombstone_until: Option<i64>,
}

/// A time as stored. Times past `i64::MAX` ms (292 million years) are stored as
/// `i64::MAX`, the store's end of time, as [`Timestamp`]'s own arithmetic saturates.
pub(crate) fn time_to_sql(time: Timestamp) -> i64 {
    i64::try_from(time.unix_ms()).unwrap_or(i64::MAX)
}

/// A time read back; a negative value is corrupt.
fn time_from_sql(column: &str, value: i64) -> Result<Timestamp, StoreError> {
    u64::try_from(value)
        .map(Timestamp::from_unix_ms)
        .map_err(|_| corrupt(format!("{column} is {value}, a time before 1970")))
}

/// A fence as stored; fences past `i64::MAX` cannot be, and no store issues them.
pub(crate) fn fence_to_sql(fence: Fence) -> Result<i64, StoreError> {
    i64::try_from(fence.get()).map_err(|_| corrupt(format!("fence {fence:?} does not fit an SQLite integer")))
}

/// A fence read back; anything below 1 is corrupt.
pub(crate) fn fence_from_sql(column: &str, value: i64) -> Result<Fence, StoreError> {
    match u64::try_from(value) {
        Ok(number) if number >= Fence::FIRST.get() => Ok(Fence::new(number)),
        _ => Err(corrupt(format!("{column} is {value}, not a fence"))),
    }
}

/// A byte count as stored.
pub(crate) fn count_to_sql(column: &str, count: u64) -> Result<i64, StoreError> {
    i64::try_from(count).map_err(|_| corrupt(format!("{column} of {count} does not fit an SQLite integer")))
}

/// A count read back; a negative value is corrupt.
pub(crate) fn count_from_sql(column: &str, value: i64) -> Result<u64, StoreError> {
    u64::try_from(value).map_err(|_| corrupt(format!("{column} is {value}, a negative count")))
}

/// The column values of `record`. Columns of another state are NULL (or 0 for the counts).
pub(crate) fn encode_record(record: &Record) -> Result<RecordRow, StoreError> {
    let mut row = RecordRow {
        fingerprint: record.fingerprint.to_stored(),
        fence: fence_to_sql(record.fence)?,
        state: STATE_TOMBSTONE,
        lease_expires_at: None,
        expires_at: time_to_sql(record.expires_at),
        due_at: time_to_sql(record.due_at()),
        status: None,
        headers: None,
        body: None,
        created_at: time_to_sql(record.created_at),
        holder_request_id: None,
        holder_trace_id: None,
        renewals: 0,
        replays: 0,
        tombstone_until: None,
    };
    match &record.state {
        RecordState::InFlight { lease_expires_at, holder, renewals } => {
            row.state = STATE_IN_FLIGHT;
            row.lease_expires_at = Some(time_to_sql(*lease_expires_at));
            row.holder_request_id = holder.request_id().map(str::to_owned);
            row.holder_trace_id = holder.trace_id().map(str::to_owned);
            row.renewals = i64::from(*renewals);
        }
        RecordState::Completed { response, replays, tombstone_until } => {
            row.state = STATE_COMPLETED;
            row.status = Some(i64::from(response.status));
            row.headers = Some(encode_headers(&response.headers)?);
            row.body = Some(response.body.to_vec());
            // A best-effort count past 2^63 (never reached) stays at the largest integer.
            row.replays = i64::try_from(*replays).unwrap_or(i64::MAX);
            row.tombstone_until = tombstone_until.map(time_to_sql);
        }
        RecordState::Tombstone => {}
    }
    Ok(row)
}

/// The record id of a row's `principal` and `idem_key` (`''` is the anonymous principal).
pub(crate) fn id_from_sql(principal: &str, key: &str) -> Result<RecordId, StoreError> {
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

/// Reads a record from a row that holds the columns of `record_columns!`.
pub(crate) fn decode_record(row: &SqliteRow) -> Result<Record, StoreError> {
    let fingerprint: Vec<u8> = row.try_get("fingerprint").map_err(store_error)?;
    let fingerprint =
        Fingerprint::from_stored(&fingerprint).map_err(|error| corrupt(format!("fingerprint: {error}")))?;
    let fence = fence_from_sql("fence", row.try_get("fence").map_err(store_error)?)?;
    let state: String = row.try_get("state").map_err(store_error)?;
    let expires_at = time_from_sql("expires_at", row.try_get("expires_at").map_err(store_error)?)?;
    let created_at = time_from_sql("created_at", row.try_get("created_at").map_err(store_error)?)?;
    let due_at: i64 = row.try_get("due_at").map_err(store_error)?;

    let state = match state.as_str() {
        STATE_IN_FLIGHT => decode_in_flight(row)?,
        STATE_COMPLETED => {
            let replays = count_from_sql("replays", row.try_get("replays").map_err(store_error)?)?;
            let tombstone_until: Option<i64> = row.try_get("tombstone_until").map_err(store_error)?;
            let tombstone_until = tombstone_until.map(|until| time_from_sql("tombstone_until", until)).transpose()?;
            RecordState::Completed { response: decode_response(row)?, replays, tombstone_until }
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
fn decode_in_flight(row: &SqliteRow) -> Result<RecordState, StoreError> {
    let lease: Option<i64> = row.try_get("lease_expires_at").map_err(store_error)?;
    let lease = lease.ok_or_else(|| corrupt("an in-flight record has no lease_expires_at"))?;
    let renewals: i64 = row.try_get("renewals").map_err(store_error)?;
    let renewals = u32::try_from(renewals).map_err(|_| corrupt(format!("renewals is {renewals}, not a u32")))?;
    let request_id: Option<String> = row.try_get("holder_request_id").map_err(store_error)?;
    let trace_id: Option<String> = row.try_get("holder_trace_id").map_err(store_error)?;
    let holder = Holder::new(request_id.as_deref(), trace_id.as_deref());
    // Holder::new drops ids it would not keep; a stored one it drops was not written by idem.
    if holder.request_id() != request_id.as_deref() || holder.trace_id() != trace_id.as_deref() {
        return Err(corrupt(format!("holder ids {request_id:?}, {trace_id:?} are not ids a claim keeps")));
    }
    Ok(RecordState::InFlight { lease_expires_at: time_from_sql("lease_expires_at", lease)?, holder, renewals })
}

fn decode_response(row: &SqliteRow) -> Result<StoredResponse, StoreError> {
    let status: Option<i64> = row.try_get("status").map_err(store_error)?;
    let status = status.ok_or_else(|| corrupt("a completed record has no status"))?;
    let status = u16::try_from(status).map_err(|_| corrupt(format!("status is {status}, not an HTTP status")))?;
    let headers: Option<Vec<u8>> = row.try_get("headers").map_err(store_error)?;
    let headers = decode_headers(&headers.ok_or_else(|| corrupt("a completed record has no headers"))?)?;
    let body: Option<Vec<u8>> = row.try_get("body").map_err(store_error)?;
    let body = body.ok_or_else(|| corrupt("a completed record has no body"))?;
    Ok(StoredResponse { status, headers, body: Bytes::from(body) })
}

/// Encodes stored headers: a version byte (1), the number of headers as a big-endian
/// `u32`, then per header its name's length (`u32`, big-endian) and UTF-8 bytes and its
/// value's length (`u32`, big-endian) and bytes.
pub(crate) fn encode_headers(headers: &[(String, Bytes)]) -> Result<Vec<u8>, StoreError> {
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

/// Decodes [`encode_headers`]' output; anything else is corrupt.
pub(crate) fn decode_headers(encoded: &[u8]) -> Result<Vec<(String, Bytes)>, StoreError> {
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
mod tests {
    use super::*;

    #[test]
    fn headers_round_trip() {
        // Goal: any header list, including empty names and values and binary values, decodes to itself.
        let headers = vec![
            ("content-type".to_owned(), Bytes::from_static(b"application/json")),
            (String::new(), Bytes::new()),
            ("x-binary".to_owned(), Bytes::from_static(&[0, 255, 10, 13])),
        ];
        assert_eq!(decode_headers(&encode_headers(&headers).unwrap()).unwrap(), headers);
        assert_eq!(decode_headers(&encode_headers(&[]).unwrap()).unwrap(), Vec::new());
    }

    #[test]
    fn damaged_headers_are_corrupt() {
        // Goal: truncated, padded, mis-versioned or lying encodings are errors, never panics.
        let encoded = encode_headers(&[("a".to_owned(), Bytes::from_static(b"b"))]).unwrap();
        for cut in 0..encoded.len() {
            assert!(matches!(decode_headers(&encoded[..cut]), Err(StoreError::Corrupt { .. })), "cut at {cut}");
        }
        let mut padded = encoded.clone();
        padded.push(0);
        assert!(matches!(decode_headers(&padded), Err(StoreError::Corrupt { .. })));
        let mut versioned = encoded.clone();
        versioned[0] = 2;
        assert!(matches!(decode_headers(&versioned), Err(StoreError::Corrupt { .. })));
        let huge_count = [HEADERS_VERSION, 0xff, 0xff, 0xff, 0xff];
        assert!(matches!(decode_headers(&huge_count), Err(StoreError::Corrupt { .. })));
        let bad_utf8 = [HEADERS_VERSION, 0, 0, 0, 1, 0, 0, 0, 1, 0xff, 0, 0, 0, 0];
        assert!(matches!(decode_headers(&bad_utf8), Err(StoreError::Corrupt { .. })));
    }

    #[test]
    fn ids_read_back_as_stored() {
        // Goal: every key's characters, including quotes and backslashes in any place, and
        // the anonymous principal read back to the id they were stored from.
        for key in ["k1", "\"", "\"abc\"", "a\\b", "\\\"", "\"".repeat(255).as_str()] {
            let id = id_from_sql("", key).unwrap();
            assert_eq!((id.principal.is_anonymous(), id.key.as_str()), (true, key));
            assert_eq!(id_from_sql("alice", key).unwrap().principal.as_str(), "alice");
        }
    }

    #[test]
    fn damaged_ids_are_corrupt() {
        // Goal: a principal or key that idem-core would not accept is Corrupt, never a panic.
        for (principal, key) in
            [("alice", ""), ("alice", "a b"), ("alice", "é"), ("a\u{7}", "k"), ("alice", "k".repeat(256).as_str())]
        {
            assert!(matches!(id_from_sql(principal, key), Err(StoreError::Corrupt { .. })), "{principal:?} {key:?}");
        }
    }

    #[test]
    fn conversions_are_checked() {
        // Goal: negative or oversized integers are refused instead of wrapping.
        assert!(matches!(time_from_sql("t", -1), Err(StoreError::Corrupt { .. })));
        assert_eq!(time_from_sql("t", i64::MAX).unwrap(), Timestamp::from_unix_ms(i64::MAX.unsigned_abs()));
        assert_eq!(time_to_sql(Timestamp::from_unix_ms(u64::MAX)), i64::MAX);
        assert!(matches!(fence_from_sql("f", 0), Err(StoreError::Corrupt { .. })));
        assert!(matches!(fence_from_sql("f", -3), Err(StoreError::Corrupt { .. })));
        assert_eq!(fence_from_sql("f", 7).unwrap(), Fence::new(7));
        assert!(matches!(fence_to_sql(Fence::new(u64::MAX)), Err(StoreError::Corrupt { .. })));
        assert!(matches!(count_from_sql("c", -1), Err(StoreError::Corrupt { .. })));
        assert!(matches!(count_to_sql("c", u64::MAX), Err(StoreError::Corrupt { .. })));
    }
}
