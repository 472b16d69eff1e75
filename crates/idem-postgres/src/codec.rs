//! Records to and from rows: checked integer conversions and the header encoding.
//!
//! Nothing here panics on what a row holds: every value read back is checked and a
//! value that does not fit is a [`StoreError::Corrupt`].

use bytes::Bytes;
use idem_core::{
    Fence, Fingerprint, Holder, Key, Principal, Record, RecordId, RecordState, StoreError, StoredResponse, Timestamp,
};
use sqlx::Row;
use sqlx::postgres::PgRow;

use crate::error::{corrupt, store_error};

/// `state` of an in-flight record.
pub(crate) const STATE_IN_FLIGHT: &str = "in_flight";
/// `state` of a completed record.
pub(crate) const STATE_COMPLETED: &str = "completed";
/// `state` of a tombstone.
pub(crate) const STATE_TOMBSTONE: &str = "tombstone";

/// First byte of the header encoding, so a future encoding can be told apart.
const HEADERS_VERSION: u8 = 1;

/// The columns of a record in `idem_records` (the record id and `stored_bytes` aside), in
/// the order [`RecordRow`] binds them.
pub(crate) const COLUMNS: [&str; 15] = [
    "fingerprint",
    "fence",
    "created_at",
    "state",
    "lease_expires_at",
    "holder_request_id",
    "holder_trace_id",
    "renewals",
    "expires_at",
    "due_at",
    "status",
    "headers",
    "body",
    "replays",
    "tombstone_until",
];

/// `table`'s record columns, each named as its column after `prefix`: what
/// [`decode_record_named`] reads (with `prefix` empty, [`decode_record`]). Naming each
/// column lets the list work in a join with tables that share column names.
pub(crate) fn columns_of(table: &str, prefix: &str) -> String {
    COLUMNS.map(|column| format!("{table}.{column} AS {prefix}{column}")).join(", ")
}

/// How many shards the usage totals are kept in (`idem_usage`, migration 0001).
pub(crate) const USAGE_SHARDS: u32 = 64;

/// The usage shard of `id`: FNV-1a (64 bit) over the principal's bytes, a zero byte (which
/// neither a principal nor a key holds) and the key's bytes, modulo [`USAGE_SHARDS`]. Every
/// step on one record id adds to the same shard, so no shard's totals go below zero.
pub(crate) fn usage_shard(id: &RecordId) -> i32 {
    const OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
    const PRIME: u64 = 0x0100_0000_01b3;
    let bytes = id.principal.as_str().bytes().chain([0]).chain(id.key.as_str().bytes());
    let hash = bytes.fold(OFFSET, |hash, byte| (hash ^ u64::from(byte)).wrapping_mul(PRIME));
    i32::try_from(hash % u64::from(USAGE_SHARDS)).expect("a shard number is below 64")
}

/// The column values of a record, ready to bind, in the order of [`COLUMNS`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct RecordRow {
    pub(crate) fingerprint: Vec<u8>,
    pub(crate) fence: i64,
    pub(crate) created_at: i64,
    pub(crate) state: &'static str,
    pub(crate) lease_expires_at: Option<i64>,
    pub(crate) holder_request_id: Option<String>,
    pub(crate) holder_trace_id: Option<String>,
    pub(crate) renewals: i32,
    pub(crate) expires_at: i64,
    pub(crate) due_at: i64,
    pub(crate) status: Option<i32>,
    pub(crate) headers: Option<Vec<u8>>,
    pub(crate) body: Option<Vec<u8>>,
    pub(crate) replays: i64,
    pub(crate) tombstone_until: Option<i64>,
}

/// `statement` with `row` bound as its next 15 parameters, in the order of [`COLUMNS`].
pub(crate) fn bind_record<'q>(
    statement: sqlx::query::Query<'q, sqlx::Postgres, sqlx::postgres::PgArguments>,
    row: RecordRow,
) -> sqlx::query::Query<'q, sqlx::Postgres, sqlx::postgres::PgArguments> {
    statement
        .bind(row.fingerprint)
        .bind(row.fence)
        .bind(row.created_at)
        .bind(row.state)
        .bind(row.lease_expires_at)
        .bind(row.holder_request_id)
        .bind(row.holder_trace_id)
        .bind(row.renewals)
        .bind(row.expires_at)
        .bind(row.due_at)
        .bind(row.status)
        .bind(row.headers)
        .bind(row.body)
        .bind(row.replays)
        .bind(row.tombstone_until)
}

/// A time as stored. Times past `i64::MAX` ms (292 million years) are stored as
/// `i64::MAX`, the store's end of time, as [`Timestamp`]'s own arithmetic saturates.
pub(crate) fn time_to_sql(time: Timestamp) -> i64 {
    i64::try_from(time.unix_ms()).unwrap_or(i64::MAX)
}

/// A time read back; a negative value is corrupt.
pub(crate) fn time_from_sql(column: &str, value: i64) -> Result<Timestamp, StoreError> {
    u64::try_from(value)
        .map(Timestamp::from_unix_ms)
        .map_err(|_| corrupt(format!("{column} is {value}, a time before 1970")))
}

/// A fence as stored; fences past `i64::MAX` cannot be, and no store issues them.
pub(crate) fn fence_to_sql(fence: Fence) -> Result<i64, StoreError> {
    i64::try_from(fence.get()).map_err(|_| corrupt(format!("fence {fence:?} does not fit a PostgreSQL bigint")))
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
    i64::try_from(count).map_err(|_| corrupt(format!("{column} of {count} does not fit a PostgreSQL bigint")))
}

/// A count read back; a negative value is corrupt.
pub(crate) fn count_from_sql(column: &str, value: i64) -> Result<u64, StoreError> {
    u64::try_from(value).map_err(|_| corrupt(format!("{column} is {value}, a negative count")))
}

/// The column values of `record`. Columns a state does not use hold NULL (0 for the
/// counts).
pub(crate) fn encode_record(record: &Record) -> Result<RecordRow, StoreError> {
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
            // 2^31 renewals, one every third of a lease, take centuries; refused, not wrapped.
            row.renewals = i32::try_from(*renewals)
                .map_err(|_| corrupt(format!("renewals of {renewals} do not fit a PostgreSQL integer")))?;
        }
        RecordState::Completed { response, replays, tombstone_until } => {
            row.state = STATE_COMPLETED;
            row.status = Some(i32::from(response.status));
            row.headers = Some(encode_headers(&response.headers)?);
            row.body = Some(response.body.to_vec());
            row.replays = count_to_sql("replays", *replays)?;
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

/// Reads a record from a row that holds the columns of `columns_of(_, "")`.
pub(crate) fn decode_record(row: &PgRow) -> Result<Record, StoreError> {
    decode_record_named(row, "")
}

/// Reads a record from a row that holds the columns of `columns_of(_, prefix)`.
pub(crate) fn decode_record_named(row: &PgRow, prefix: &str) -> Result<Record, StoreError> {
    let get = Columns { row, prefix };
    let stored: Vec<u8> = get.value("fingerprint")?;
    let fingerprint = Fingerprint::from_stored(&stored).map_err(|error| corrupt(format!("fingerprint: {error}")))?;
    let fence = fence_from_sql("fence", get.value("fence")?)?;
    let created_at = time_from_sql("created_at", get.value("created_at")?)?;
    let state: String = get.value("state")?;
    let expires_at = time_from_sql("expires_at", get.value("expires_at")?)?;
    let due_at: i64 = get.value("due_at")?;

    let state = match state.as_str() {
        STATE_IN_FLIGHT => {
            let lease: Option<i64> = get.value("lease_expires_at")?;
            let lease = lease.ok_or_else(|| corrupt("an in-flight record has no lease_expires_at"))?;
            let renewals: i32 = get.value("renewals")?;
            RecordState::InFlight {
                lease_expires_at: time_from_sql("lease_expires_at", lease)?,
                holder: decode_holder(&get)?,
                renewals: u32::try_from(renewals).map_err(|_| corrupt(format!("renewals is {renewals}")))?,
            }
        }
        STATE_COMPLETED => {
            let tombstone_until: Option<i64> = get.value("tombstone_until")?;
            RecordState::Completed {
                response: decode_response(&get)?,
                replays: count_from_sql("replays", get.value("replays")?)?,
                tombstone_until: tombstone_until.map(|until| time_from_sql("tombstone_until", until)).transpose()?,
            }
        }
        STATE_TOMBSTONE => RecordState::Tombstone,
        other => return Err(corrupt(format!("state is {other:?}, not one of idem's three"))),
    };
    let record = Record { fingerprint, fence, created_at, expires_at, state };
    // Purging trusts the column to say when the record is due; a row where it disagrees
    // with the record would be purged early or late.
    if time_to_sql(record.due_at()) != due_at {
        return Err(corrupt(format!("due_at is {due_at}, but the record is due at {}", record.due_at().unix_ms())));
    }
    Ok(record)
}

/// The columns of one row, named after a prefix.
struct Columns<'a> {
    row: &'a PgRow,
    prefix: &'a str,
}

impl Columns<'_> {
    fn value<'r, T>(&'r self, column: &str) -> Result<T, StoreError>
    where
        T: sqlx::Decode<'r, sqlx::Postgres> + sqlx::Type<sqlx::Postgres>,
    {
        let name = format!("{}{column}", self.prefix);
        self.row.try_get(name.as_str()).map_err(store_error)
    }
}

/// The holder's ids as stored; one that `Holder` would not keep was not written by idem.
fn decode_holder(get: &Columns<'_>) -> Result<Holder, StoreError> {
    let request_id: Option<String> = get.value("holder_request_id")?;
    let trace_id: Option<String> = get.value("holder_trace_id")?;
    let holder = Holder::new(request_id.as_deref(), trace_id.as_deref());
    if holder.request_id() != request_id.as_deref() || holder.trace_id() != trace_id.as_deref() {
        return Err(corrupt(format!("holder ids {request_id:?}, {trace_id:?} are not ids a claim keeps")));
    }
    Ok(holder)
}

fn decode_response(get: &Columns<'_>) -> Result<StoredResponse, StoreError> {
    let status: Option<i32> = get.value("status")?;
    let status = status.ok_or_else(|| corrupt("a completed record has no status"))?;
    let status = u16::try_from(status).map_err(|_| corrupt(format!("status is {status}, not an HTTP status")))?;
    let headers: Option<Vec<u8>> = get.value("headers")?;
    let headers = decode_headers(&headers.ok_or_else(|| corrupt("a completed record has no headers"))?)?;
    let body: Option<Vec<u8>> = get.value("body")?;
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
    fn shards_are_stable_and_in_range() {
        // Goal: the shard of an id never changes between versions (stored totals depend on
        // it) and every id lands in 0..USAGE_SHARDS.
        assert_eq!(
            usage_shard(&id_from_sql("alice", "k1").unwrap()),
            usage_shard(&id_from_sql("alice", "k1").unwrap())
        );
        assert_eq!(usage_shard(&id_from_sql("", "k").unwrap()), 28, "pinned: FNV-1a of \"\\0k\" modulo 64");
        let mut seen = std::collections::BTreeSet::new();
        for n in 0..1000 {
            let shard = usage_shard(&id_from_sql("alice", &format!("k{n}")).unwrap());
            assert!((0..64).contains(&shard));
            seen.insert(shard);
        }
        assert_eq!(seen.len(), 64, "1000 keys reach every shard");
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
